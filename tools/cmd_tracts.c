/* cmd_tracts.c - the tracts model's commands: ingest, export, tail and bench (docs/cli.md). */
#include "cli.h"

int cli_ingest_tracts(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    cli_errorf("ingest tracts is not available yet");
    return CLI_EUSAGE;
}

int cli_export_tracts(int argc, char **argv, const char *fmt)
{
    (void)argc;
    (void)argv;
    cli_errorf("export --to %s is not available yet", fmt);
    return CLI_EUSAGE;
}

int cli_tail_tracts(int argc, char **argv, const char *path)
{
    (void)argc;
    (void)argv;
    cli_errorf("tail %s is not available yet", path);
    return CLI_EUSAGE;
}

int cli_bench_tracts(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    cli_errorf("bench tracts is not available yet");
    return CLI_EUSAGE;
}
