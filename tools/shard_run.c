/* shard_run.c - one of N sharded frame writers (shard_run.h, docs/shards.md). */
#include "shard_run.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "h5s_format.h"

double shard_wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A whole decimal from the environment: 1 set and valid, 0 unset, -1 malformed. */
static int env_u32(const char *name, uint32_t *out)
{
    const char *v = getenv(name);
    uint64_t u;
    if (!v || !v[0])
        return 0;
    if (cli_parse_u64(v, &u) != 0 || u > UINT32_MAX) {
        cli_errorf("%s='%s' is not a whole number", name, v);
        return -1;
    }
    *out = (uint32_t)u;
    return 1;
}

int shard_resolve(shard_args *s, const char *output)
{
    if (s->rank_given != s->ranks_given) {
        cli_errorf("--rank and --ranks go together");
        return CLI_EUSAGE;
    }
    if (s->ranks_given) {
        s->sharded = 1;
        s->from = "--rank";
    } else {
        /* Open MPI exports these to every process mpirun starts, so no MPI library is
         * needed to know where we are. */
        uint32_t r = 0, n = 0;
        int hr = env_u32("OMPI_COMM_WORLD_RANK", &r);
        int hn = env_u32("OMPI_COMM_WORLD_SIZE", &n);
        if (hr < 0 || hn < 0)
            return CLI_EUSAGE;
        if (hr == 0 && hn == 0) {
            if (s->block) {
                cli_errorf("--block needs --rank/--ranks or mpirun");
                return CLI_EUSAGE;
            }
            return 0;
        }
        if (hr != hn) {
            cli_errorf("OMPI_COMM_WORLD_RANK and OMPI_COMM_WORLD_SIZE must both be set");
            return CLI_EUSAGE;
        }
        s->sharded = 1;
        s->rank = r;
        s->ranks = n;
        s->from = "mpirun";
    }
    if (s->ranks < 1 || s->ranks > H5S_MASTER_MAX_RANKS || s->rank >= s->ranks) {
        cli_errorf("%s: rank %" PRIu32 " of %" PRIu32 ": expected 1 to %d ranks and a rank "
                   "below their count",
                   s->from, s->rank, s->ranks, H5S_MASTER_MAX_RANKS);
        return CLI_EUSAGE;
    }
    if (h5s_master_shard_path(s->shard_path, sizeof s->shard_path, output, s->rank) != 0) {
        cli_errorf("%s: path too long for a shard name", output);
        return CLI_EUSAGE;
    }
    return 0;
}

int shard_master_begin(const shard_args *s, const char *master, const h5s_master_options *mo)
{
    (void)s;
    int rc = h5s_master_create(master, mo);
    if (rc != 0) {
        cli_error_h5s(master, rc);
        return CLI_EDATA;
    }
    return 0;
}

typedef struct {
    h5s_shard_status last;
    double changed; /* cli_now() of the last change seen */
    int done;
} shard_watch;

static int status_changed(const h5s_shard_status *a, const h5s_shard_status *b)
{
    return a->exists != b->exists || a->readable != b->readable || a->state != b->state ||
           a->heartbeat != b->heartbeat || a->frames != b->frames;
}

int shard_master_end(const shard_args *s, const char *master, const h5s_master_options *mo,
                     uint64_t total, double started_wall, int interrupted, uint64_t *out_frames)
{
    unsigned timeout = s->timeout_ms;
    if (interrupted && timeout > SHARD_INTERRUPTED_TIMEOUT_MS)
        timeout = SHARD_INTERRUPTED_TIMEOUT_MS;
    shard_watch *w = calloc(s->ranks, sizeof *w);
    uint64_t *counts = calloc(s->ranks, sizeof *counts);
    char path[sizeof s->shard_path];
    if (!w || !counts) {
        free(w);
        free(counts);
        cli_errorf("out of memory");
        return CLI_EDATA;
    }
    double t0 = cli_now();
    for (uint32_t r = 0; r < s->ranks; r++) {
        w[r].changed = t0;
        w[r].last.state = -2;
    }
    uint32_t left = s->ranks, lost = UINT32_MAX;
    int failed = 0;
    while (left > 0 && lost == UINT32_MAX) {
        for (uint32_t r = 0; r < s->ranks; r++) {
            if (w[r].done)
                continue;
            h5s_master_shard_path(path, sizeof path, master, r);
            h5s_shard_status st;
            h5s_master_shard_poll(&st, path, mo->data_path);
            double now = cli_now();
            int fresh = status_changed(&st, &w[r].last);
            if (fresh) {
                w[r].last = st;
                w[r].changed = now;
            }
            int closed = st.state == H5S_STATE_CLOSED || st.state == H5S_STATE_FAILED;
            uint64_t want =
                total == UINT64_MAX ? UINT64_MAX : h5s_shard_count(total, r, s->ranks, mo->block);
            /* A closed shard with another count is either this run's, cut short (its
             * last commit is recent), or an earlier run's left in place (keep waiting).
             * Cut short is believed only when the next poll, a fresh open, says the same. */
            if (closed && (want == UINT64_MAX || st.frames == want ||
                           (st.heartbeat >= started_wall - 1.0 && !fresh))) {
                w[r].done = 1;
                counts[r] = st.frames;
                failed |= st.state == H5S_STATE_FAILED || (want != UINT64_MAX && st.frames != want);
                left--;
            } else if ((now - w[r].changed) * 1000.0 >= (double)timeout) {
                lost = r;
                break;
            }
        }
        if (left > 0 && lost == UINT32_MAX) {
            struct timespec ts = {0, 50 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    int status = CLI_OK;
    if (lost != UINT32_MAX) {
        h5s_master_shard_path(path, sizeof path, master, lost);
        const h5s_shard_status *st = &w[lost].last;
        cli_errorf("%s: rank %" PRIu32 "'s shard %s %s for %u ms (%" PRIu64 " frames "
                   "committed); the master stays live: readers see the frames every shard "
                   "holds. If that writer was killed, run `h5stream recover %s`",
                   master, lost, path,
                   !st->exists     ? "did not appear"
                   : !st->readable ? "was not readable"
                                   : "did not close",
                   timeout, st->frames, path);
        status = CLI_EDATA;
    } else {
        int rc = h5s_master_finalize(master, mo, counts,
                                     failed ? H5S_STATE_FAILED : H5S_STATE_CLOSED, out_frames);
        if (rc != 0) {
            cli_error_h5s(master, rc);
            status = CLI_EDATA;
        }
    }
    free(w);
    free(counts);
    return status;
}
