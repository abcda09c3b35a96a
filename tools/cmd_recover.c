/*
 * cmd_recover.c - `h5stream recover FILE.h5` (docs/cli.md): runs h5s_recover and says
 * what it found, on one line:
 *
 *   FILE: was open for SWMR write; 1 frames dataset; 1234 committed frames kept;
 *   7 uncommitted frames dropped; all committed frames decode
 *
 * Exit status 0 when every committed frame reads back, 1 on a data error (no file, not
 * HDF5, not h5stream, a frame that does not decode: the reason is on stderr), 2 on a
 * usage error.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "h5stream.h"

static const char recover_usage[] =
    "usage: h5stream recover FILE.h5\n"
    "\n"
    "Makes the file of a killed writer readable without losing a committed frame: clears\n"
    "the superblock's open-for-write flags while moving its end-of-allocation to the real\n"
    "end of file, trims uncommitted frames, checks that every committed frame decodes, and\n"
    "marks the writer status closed. Never use `h5clear -s` alone on such a file.\n";

static const char *plural(uint64_t n, const char *one, const char *many)
{
    return n == 1 ? one : many;
}

int cli_recover(int argc, char **argv)
{
    static const struct option longopts[] = {{"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (c == 'h') {
            fputs(recover_usage, stdout);
            return CLI_OK;
        }
        cli_errorf("recover: unknown option '%s'", argv[optind - 1]);
        fputs(recover_usage, stderr);
        return CLI_EUSAGE;
    }
    if (argc - optind != 1) {
        cli_errorf("recover: expected one FILE.h5");
        fputs(recover_usage, stderr);
        return CLI_EUSAGE;
    }
    const char *path = argv[optind];
    h5s_recover_report r;
    int rc = h5s_recover(path, &r);
    /* A file that was checked (even with bad frames) gets its summary; one that could
     * not be read at all gets only the error. */
    if (rc == 0 || rc == H5S_ECODEC) {
        char decode[160];
        if (r.unreadable == 0)
            snprintf(decode, sizeof decode, "all committed frames decode");
        else
            snprintf(decode, sizeof decode,
                     "%" PRIu64 " committed %s (first: frame %" PRIu64 "), kept as they are",
                     r.unreadable,
                     plural(r.unreadable, "frame does not decode", "frames do not decode"),
                     r.first_unreadable);
        printf("%s: %s; %" PRIu64 " frames %s; %" PRIu64 " committed %s kept; %" PRIu64
               " uncommitted %s dropped; %s\n",
               path, r.was_open ? "was open for SWMR write" : "was closed cleanly", r.datasets,
               plural(r.datasets, "dataset", "datasets"), r.committed,
               plural(r.committed, "frame", "frames"), r.dropped,
               plural(r.dropped, "frame", "frames"), decode);
        if (r.markers)
            printf("%s: %" PRIu64 " other %s (tracts, volumes, MARC); %" PRIu64
                   " committed %s kept\n",
                   path, r.markers, plural(r.markers, "commit marker", "commit markers"), r.items,
                   plural(r.items, "item", "items"));
        fflush(stdout);
    }
    if (rc != 0) {
        cli_error_h5s("recover", rc);
        return CLI_EDATA;
    }
    return CLI_OK;
}
