/*
 * cmd_recover.c - `h5stream recover FILE.h5` (docs/cli.md): runs h5s_recover and says
 * what it found, on one line:
 *
 *   FILE: was open for SWMR write; 1 frames dataset; 1234 committed frames kept;
 *   7 uncommitted frames dropped; all committed frames decode
 *
 * For a shard master (docs/shards.md) it recovers every shard, one line each, then
 * rewrites the master final with the gap-free prefix the shards hold.
 *
 * Exit status 0 when every committed frame reads back, 1 on a data error (no file, not
 * HDF5, not h5stream, a frame that does not decode: the reason is on stderr), 2 on a
 * usage error.
 */
#include <getopt.h>
#include <hdf5.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "h5s_format.h"
#include "h5s_master.h"
#include "h5stream.h"
#include "info_models.h"

static const char recover_usage[] =
    "usage: h5stream recover FILE.h5\n"
    "\n"
    "Makes the file of a killed writer readable without losing a committed frame: clears\n"
    "the superblock's open-for-write flags while moving its end-of-allocation to the real\n"
    "end of file, trims uncommitted frames, checks that every committed frame decodes, and\n"
    "marks the writer status closed. Never use `h5clear -s` alone on such a file.\n"
    "For a shard master (run.h5 of `mpirun ... -o run.h5`), recovers every shard, then\n"
    "rewrites the master with the frames all of them hold.\n";

static const char *plural(uint64_t n, const char *one, const char *many)
{
    return n == 1 ? one : many;
}

/* One file's summary line(s): for a file that was checked (even with bad frames); one that
 * could not be read at all gets only the error, printed by the caller. */
static void print_report(const char *path, int rc, const h5s_recover_report *r)
{
    if (rc == 0 || rc == H5S_ECODEC) {
        char decode[160];
        if (r->unreadable == 0)
            snprintf(decode, sizeof decode, "all committed frames decode");
        else
            snprintf(decode, sizeof decode,
                     "%" PRIu64 " committed %s (first: frame %" PRIu64 "), kept as they are",
                     r->unreadable,
                     plural(r->unreadable, "frame does not decode", "frames do not decode"),
                     r->first_unreadable);
        printf("%s: %s; %" PRIu64 " frames %s; %" PRIu64 " committed %s kept; %" PRIu64
               " uncommitted %s dropped; %s\n",
               path, r->was_open ? "was open for SWMR write" : "was closed cleanly", r->datasets,
               plural(r->datasets, "dataset", "datasets"), r->committed,
               plural(r->committed, "frame", "frames"), r->dropped,
               plural(r->dropped, "frame", "frames"), decode);
        if (r->markers)
            printf("%s: %" PRIu64 " other %s (tracts, volumes, MARC); %" PRIu64
                   " committed %s kept\n",
                   path, r->markers, plural(r->markers, "commit marker", "commit markers"),
                   r->items, plural(r->items, "item", "items"));
        fflush(stdout);
    }
}

/* h5s_master_recover's callback: each shard's line, or its error. */
static void print_shard(const char *shard, uint32_t rank, int rc, const h5s_recover_report *r,
                        void *payload)
{
    (void)rank;
    print_report(shard, rc, r);
    if (rc != 0) {
        cli_error_h5s("recover", rc);
        *(int *)payload = 1;
    }
}

/*
 * Recover repairs what a killed writer leaves (flags, end of allocation, payload past the
 * markers); a dataset that is gone it cannot bring back. Says so, as `info` would, and
 * exits 1 rather than leave a damaged file looking recovered.
 */
static int check_layout(const char *path)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (fid < 0) {
        char why[256];
        cli_hdf5_reason(why, sizeof why);
        cli_errorf("recover: %s: cannot open it after recovery: %s", path, why);
        return CLI_EDATA;
    }
    info_problems problems;
    info_layout_check(fid, &problems);
    H5Fclose(fid);
    for (int i = 0; i < problems.n; i++)
        cli_errorf("recover: %s: %s; recover cannot rebuild it", path, problems.text[i]);
    return problems.n ? CLI_EDATA : CLI_OK;
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
    h5s_master_options mo;
    char data_path[1024], creator[256];
    if (h5s_master_read_options(path, &mo, data_path, sizeof data_path, creator, sizeof creator) ==
        0) {
        /* A shard master: recover every shard, then write the master final. */
        uint64_t frames = 0;
        int32_t state = 0;
        int bad = 0;
        int rc = h5s_master_recover(path, print_shard, &bad, &frames, &state);
        if (rc != 0) {
            cli_error_h5s("recover", rc);
            return CLI_EDATA;
        }
        printf("%s: master rewritten final: %" PRIu64 " %s (the gap-free prefix of %u %s)%s\n",
               path, frames, plural(frames, "frame", "frames"), (unsigned)mo.ranks,
               plural(mo.ranks, "shard", "shards"),
               state == H5S_STATE_CLOSED ? "" : "; a shard had died, failed or is missing");
        return bad ? CLI_EDATA : CLI_OK;
    }
    h5s_recover_report r;
    int rc = h5s_recover(path, &r);
    print_report(path, rc, &r);
    if (rc != 0) {
        cli_error_h5s("recover", rc);
        return CLI_EDATA;
    }
    return check_layout(path);
}
