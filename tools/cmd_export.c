/*
 * cmd_export.c - `h5stream export FILE.h5... --to FORMAT -o OUT [options]`: picks the
 * model from the format and hands the whole command line to that model's exporter
 * (docs/cli.md).
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char export_usage[] =
    "usage: h5stream export FILE.h5... --to FORMAT -o OUT [options]\n"
    "formats: trx, trx-dir, tck, trk (tracts); nifti (volumes);\n"
    "         iso2709, marcxml, marc-json, line (marc)\n"
    "`h5stream export --to FORMAT --help` lists that format's options (docs/cli.md).\n";

/* The value of --to (as "--to F" or "--to=F"), or NULL. */
static const char *find_format(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--to") == 0 && i + 1 < argc)
            return argv[i + 1];
        if (strncmp(argv[i], "--to=", 5) == 0)
            return argv[i] + 5;
    }
    return NULL;
}

int cli_export(int argc, char **argv)
{
    const char *fmt = find_format(argc, argv);
    if (!fmt) {
        for (int i = 1; i < argc; i++) {
            if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
                fputs(export_usage, stdout);
                return CLI_OK;
            }
        }
        cli_errorf("export: --to FORMAT is required");
        fputs(export_usage, stderr);
        return CLI_EUSAGE;
    }
    if (strcmp(fmt, "trx") == 0 || strcmp(fmt, "trx-dir") == 0 || strcmp(fmt, "tck") == 0 ||
        strcmp(fmt, "trk") == 0)
        return cli_export_tracts(argc, argv, fmt);
    if (strcmp(fmt, "nifti") == 0)
        return cli_export_volumes(argc, argv, fmt);
    if (strcmp(fmt, "iso2709") == 0 || strcmp(fmt, "marcxml") == 0 ||
        strcmp(fmt, "marc-json") == 0 || strcmp(fmt, "line") == 0)
        return cli_export_marc(argc, argv, fmt);
    cli_errorf("export: unknown format '%s'", fmt);
    fputs(export_usage, stderr);
    return CLI_EUSAGE;
}
