/* h5stream_main.c - the `h5stream` command: dispatches to the subcommands (docs/cli.md). */
#include <hdf5.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char usage_text[] =
    "usage: h5stream COMMAND [ARGS...]\n"
    "\n"
    "commands:\n"
    "  ingest frames SRC -o OUT.h5 [options]   stream frames into a new SWMR file\n"
    "                                          SRC: sim[:poisson|:ramp] | raw:PATH|- |\n"
    "                                          FILE.h5:/dataset\n"
    "  ingest tracts SRC... -o OUT.h5          streamlines from .tck, .trk, .trx\n"
    "  ingest volumes SRC... -o OUT.h5 --collection NAME\n"
    "                                          NIfTI volumes (.nii, .nii.gz, folders)\n"
    "  ingest marc SRC... -o OUT.h5 [--mode strict|lenient|permissive]\n"
    "                                          ISO 2709 records (files or -)\n"
    "  export FILE.h5... --to FORMAT -o OUT    trx, trx-dir, tck, trk, nifti, iso2709,\n"
    "                                          marcxml, marc-json, line\n"
    "  tail FILE.h5 [PATH] [-f] [--json]       print committed items, following the writer\n"
    "                                          PATH: a frames dataset, /tracts, /volumes,\n"
    "                                          /marc\n"
    "  info FILE.h5 [--json]                   describe the file and its datasets\n"
    "  recover FILE.h5                         make a killed writer's file readable\n"
    "  bench frames|tracts|volumes|marc        compare with dd, plain HDF5 and the\n"
    "                                          fields' own tools\n"
    "  help, --help                            this text\n"
    "  --version                               versions of h5stream and HDF5\n"
    "\n"
    "`h5stream COMMAND --help` lists a command's options; docs/cli.md is the reference.\n"
    "Exit status: 0 success, 1 data error, 2 usage error.\n";

static int usage(FILE *f, int status)
{
    fputs(usage_text, f);
    return status;
}

int main(int argc, char **argv)
{
    /*
     * No HDF5 clean-up at exit. In HDF5 before 1.14.1 an H5Fclose that fails (a full disk
     * while the metadata cache is flushed at close) frees the file yet leaves its ID
     * registered, and the clean-up at exit closes that ID again and crashes
     * (HDFFV-11052, CVE-2020-10812; fixed by HDFGroup/hdf5 pull request 2496). Every
     * command closes its own files, so skipping the clean-up loses nothing. It must come
     * before any other HDF5 call.
     */
    H5dont_atexit();
    if (argc < 2)
        return usage(stderr, CLI_EUSAGE);
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0)
        return usage(stdout, CLI_OK);
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        unsigned maj = 0, min = 0, rel = 0;
        H5get_libversion(&maj, &min, &rel);
        printf("h5stream %s (HDF5 %u.%u.%u)\n", H5S_VERSION_STRING, maj, min, rel);
        return CLI_OK;
    }
    /* Each subcommand sees its own name as argv[0], as getopt expects; ingest's is the
     * model name. */
    if (strcmp(cmd, "ingest") == 0) {
        if (argc < 3) {
            cli_errorf("ingest: which model? (frames, tracts, volumes or marc)");
            return usage(stderr, CLI_EUSAGE);
        }
        return cli_ingest(argc - 2, argv + 2);
    }
    if (strcmp(cmd, "tail") == 0)
        return cli_tail(argc - 1, argv + 1);
    if (strcmp(cmd, "info") == 0)
        return cli_info(argc - 1, argv + 1);
    if (strcmp(cmd, "recover") == 0)
        return cli_recover(argc - 1, argv + 1);
    if (strcmp(cmd, "bench") == 0)
        return cli_bench(argc - 1, argv + 1);
    if (strcmp(cmd, "export") == 0)
        return cli_export(argc - 1, argv + 1);
    cli_errorf("unknown command '%s'", cmd);
    return usage(stderr, CLI_EUSAGE);
}
