/* cmd_marc.c - the marc model's commands: ingest, export, tail and bench (docs/cli.md). */
#include "cli.h"

int cli_ingest_marc(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    cli_errorf("ingest marc is not available yet");
    return CLI_EUSAGE;
}

int cli_export_marc(int argc, char **argv, const char *fmt)
{
    (void)argc;
    (void)argv;
    cli_errorf("export --to %s is not available yet", fmt);
    return CLI_EUSAGE;
}

int cli_tail_marc(int argc, char **argv, const char *path)
{
    (void)argc;
    (void)argv;
    cli_errorf("tail %s is not available yet", path);
    return CLI_EUSAGE;
}

int cli_bench_marc(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    cli_errorf("bench marc is not available yet");
    return CLI_EUSAGE;
}
