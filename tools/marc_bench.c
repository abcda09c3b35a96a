/* marc_bench.c - `h5stream bench marc` (placeholder while being written). */
#include "cli.h"

int cli_bench_marc(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    cli_errorf("bench marc is not available yet");
    return CLI_EUSAGE;
}
