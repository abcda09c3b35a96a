/*
 * tracts_bench.c - `h5stream bench tracts [--quick] [--streamlines N] [--dir DIR]
 * [--producers P]`: a benchmark program (not a timed test) for the tracts model
 * (docs/tracts.md, "Benchmark").
 *
 * Workload: N synthetic streamlines of 100 points (seeded random walks with 2 mm steps),
 * stored as float16. A pool of distinct streamlines is generated before any timing and
 * cycled through, so producing a streamline costs nothing but the push itself.
 * Runs, each in a forked child (so wait4's ru_maxrss is that run's own peak RSS):
 *   ingest N with 1 and with P producer threads: streamlines/s of the push phase and end to
 *   end (create to close + fsync); export of the N file to a stored TRX (+ fsync), beside
 *   dd writing the same number of bytes with conv=fsync on the same file system; ingest and
 *   export of 10 N, for the peak RSS ratio.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <hdf5.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"
#include "cli.h"
#include "h5s_tracts.h"
#include "h5s_tracts_reader.h"
#include "h5stream.h"

#define TB_POINTS 100
#define TB_POOL 4096
#define TB_REPEATS 7 /* export and dd runs, alternating; medians compared */
#define TB_STEP_MM 2.0
#define TB_FULL 200000u
#define TB_QUICK 20000u
#define TB_QUEUE_MB_DEFAULT 4
#define TB_FLUSH_MS 100u
#define TB_MAX_PRODUCERS 16

static const char bench_usage[] =
    "usage: h5stream bench tracts [--quick] [--streamlines N] [--dir DIR] [--producers P]\n"
    "\n"
    "Pushes N synthetic streamlines of 100 points (float16) through the tracts model,\n"
    "exports them to a stored TRX and compares with dd on the same file system; runs 10 N\n"
    "for the peak-RSS check. Default N = 200000 (--quick: 20000), P = 2 producer threads,\n"
    "queue budget 4 MiB (--queue-mb M).\n"
    "  --dir DIR   where to write (default: the current directory if writable, else /tmp)\n";

/* ---- workload ---- */

static uint64_t rng_next(uint64_t *s)
{
    /* splitmix64: small, seeded, the same numbers on every machine. */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double rng_unit(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

/* TB_POOL random walks in a 180 mm box: each step 2 mm, the direction turning a little. */
static float *make_pool(void)
{
    float *pool = malloc((size_t)TB_POOL * TB_POINTS * 3 * sizeof(float));
    if (!pool)
        return NULL;
    uint64_t seed = 20240601;
    for (size_t s = 0; s < TB_POOL; s++) {
        float *p = pool + s * TB_POINTS * 3;
        double x = rng_unit(&seed) * 120 - 60, y = rng_unit(&seed) * 140 - 80,
               z = rng_unit(&seed) * 100 - 40;
        double dx = rng_unit(&seed) - 0.5, dy = rng_unit(&seed) - 0.5, dz = rng_unit(&seed) - 0.5;
        for (int i = 0; i < TB_POINTS; i++) {
            double n = sqrt(dx * dx + dy * dy + dz * dz);
            n = n > 0 ? n : 1;
            dx /= n;
            dy /= n;
            dz /= n;
            p[i * 3] = (float)x;
            p[i * 3 + 1] = (float)y;
            p[i * 3 + 2] = (float)z;
            x += TB_STEP_MM * dx;
            y += TB_STEP_MM * dy;
            z += TB_STEP_MM * dz;
            dx += 0.3 * (rng_unit(&seed) - 0.5);
            dy += 0.3 * (rng_unit(&seed) - 0.5);
            dz += 0.3 * (rng_unit(&seed) - 0.5);
        }
    }
    return pool;
}

/* ---- runs ---- */

/* Queue budget of the ingest runs (--queue-mb). */
static size_t tb_queue_bytes = (size_t)TB_QUEUE_MB_DEFAULT << 20;

typedef struct {
    int status;
    double push_s;  /* push phase */
    double total_s; /* create to close + fsync (export: open to close + fsync) */
    uint64_t bytes; /* file written */
    char msg[512];
} tb_result;

typedef struct {
    tb_result res;
    long maxrss_kib;
    int ran;
} tb_sample;

typedef struct {
    h5s_tracts *t;
    const float *pool;
    uint64_t first, n;
    int rc;
    char msg[256];
} producer;

static void *produce(void *arg)
{
    producer *p = arg;
    for (uint64_t i = p->first; i < p->first + p->n; i++) {
        const float *pts = p->pool + (size_t)(i % TB_POOL) * TB_POINTS * 3;
        int rc = h5s_tracts_push(p->t, pts, TB_POINTS, NULL, NULL, NULL);
        if (rc) {
            p->rc = rc;
            snprintf(p->msg, sizeof p->msg, "push of streamline %" PRIu64 ": %s", i,
                     h5s_error_message());
            break;
        }
    }
    return NULL;
}

static void run_ingest(const float *pool, uint64_t n, int producers, const char *path, tb_result *r)
{
    h5s_file_options fo = H5S_FILE_OPTIONS_INIT;
    fo.queue_bytes = tb_queue_bytes;
    /* The offsets (commit marker) chunks wait in memory for the next commit, outside the queue
     * budget: commit every 100 ms so they stay small whatever the rate. */
    fo.flush_ms = TB_FLUSH_MS;
    fo.encode_threads = 2;
    h5s_tracts_options to = H5S_TRACTS_OPTIONS_INIT;
    to.positions_dtype = H5S_FLOAT16;
    double t0 = bench_now();
    h5s_file *f = NULL;
    h5s_tracts *t = NULL;
    int rc = h5s_file_create(&f, path, &fo);
    if (rc == 0)
        rc = h5s_tracts_create(&t, f, &to);
    if (rc == 0)
        rc = h5s_file_start_swmr(f);
    if (rc) {
        snprintf(r->msg, sizeof r->msg, "setup: %s", h5s_error_message());
        r->status = -1;
        h5s_file_close(f);
        return;
    }
    producer pr[TB_MAX_PRODUCERS];
    pthread_t th[TB_MAX_PRODUCERS];
    memset(pr, 0, sizeof pr);
    double tp = bench_now();
    for (int k = 0; k < producers; k++) {
        pr[k].t = t;
        pr[k].pool = pool;
        pr[k].first = n * (uint64_t)k / (uint64_t)producers;
        pr[k].n = n * (uint64_t)(k + 1) / (uint64_t)producers - pr[k].first;
        if (producers == 1)
            produce(&pr[k]);
        else
            pthread_create(&th[k], NULL, produce, &pr[k]);
    }
    for (int k = 0; k < producers && producers > 1; k++)
        pthread_join(th[k], NULL);
    r->push_s = bench_now() - tp;
    for (int k = 0; k < producers; k++)
        if (pr[k].rc && r->status == 0) {
            r->status = -1;
            snprintf(r->msg, sizeof r->msg, "%s", pr[k].msg);
        }
    rc = h5s_file_close(f);
    if (rc && r->status == 0) {
        r->status = -1;
        snprintf(r->msg, sizeof r->msg, "close: %s", h5s_error_message());
    }
    if (r->status == 0 && bench_fsync_path(path) != 0) {
        r->status = -1;
        snprintf(r->msg, sizeof r->msg, "fsync: %s", strerror(errno));
    }
    r->total_s = bench_now() - t0;
    r->bytes = bench_file_size(path);
}

static void run_export(const char *h5, const char *trx, tb_result *r)
{
    h5s_tracts_export_options o = H5S_TRACTS_EXPORT_OPTIONS_INIT;
    const char *in[1] = {h5};
    double t0 = bench_now();
    int rc = h5s_tracts_export(in, 1, trx, &o, NULL);
    if (rc == 0 && bench_fsync_path(trx) != 0)
        rc = -1;
    r->total_s = bench_now() - t0;
    r->bytes = bench_file_size(trx);
    if (rc) {
        r->status = -1;
        snprintf(r->msg, sizeof r->msg, "export: %s", h5s_error_message());
    }
}

typedef enum { TB_INGEST, TB_EXPORT } tb_kind;

typedef struct {
    tb_kind kind;
    const float *pool;
    uint64_t n;
    int producers;
    const char *h5, *trx;
} tb_job;

static void child_main(void *arg, void *res)
{
    const tb_job *job = arg;
    tb_result *r = res;
    memset(r, 0, sizeof *r);
    if (job->kind == TB_INGEST)
        run_ingest(job->pool, job->n, job->producers, job->h5, r);
    else
        run_export(job->h5, job->trx, r);
}

static void run_child(tb_kind kind, const float *pool, uint64_t n, int producers, const char *h5,
                      const char *trx, tb_sample *smp)
{
    memset(smp, 0, sizeof *smp);
    tb_job job = {kind, pool, n, producers, h5, trx};
    struct rusage ru;
    char why[256];
    if (bench_fork_run(child_main, &job, &smp->res, sizeof smp->res, &ru, why, sizeof why)) {
        memset(&smp->res, 0, sizeof smp->res);
        smp->res.status = -1;
        snprintf(smp->res.msg, sizeof smp->res.msg, "%s", why);
    }
    smp->maxrss_kib = ru.ru_maxrss;
    smp->ran = 1;
}

/* The baseline of the export: the TRX's own bytes written again with write() + fsync (read
 * back in 1 MiB blocks, so from the page cache), since a disk may store dd's zeros faster
 * than any real data. Seconds, or -1. */
static double run_copy(const char *src, const char *dst)
{
    enum { BLOCK = 1 << 20 };
    char *buf = malloc(BLOCK);
    int in = open(src, O_RDONLY | O_CLOEXEC);
    double t0 = bench_now();
    int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int ok = buf && in >= 0 && out >= 0;
    while (ok) {
        ssize_t n = read(in, buf, BLOCK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            ok = n == 0;
            break;
        }
        for (ssize_t done = 0; ok && done < n;) {
            ssize_t w = write(out, buf + done, (size_t)(n - done));
            if (w < 0 && errno == EINTR)
                continue;
            ok = w > 0;
            done += w > 0 ? w : 0;
        }
    }
    ok = ok && fsync(out) == 0;
    double secs = bench_now() - t0;
    if (in >= 0)
        close(in);
    if (out >= 0)
        close(out);
    free(buf);
    unlink(dst);
    return ok ? secs : -1;
}

static int verdict(const char *what, double value, const char *cmp, double target, const char *unit)
{
    int met = value > 0 && (cmp[0] == '>' ? value >= target : value <= target);
    printf("%-50s %12.2f %s   target %s %.2f   %s\n", what, value, unit, cmp, target,
           value > 0 ? (met ? "met" : "missed") : "n/a");
    return met;
}

static void print_sample(const char *label, uint64_t n, const tb_sample *s, int ingest)
{
    if (!s->ran || s->res.status != 0) {
        printf("%-28s FAILED: %s\n", label, s->res.msg);
        return;
    }
    if (ingest)
        printf("%-28s %9" PRIu64 " %10.3f %10.3f %12.0f %12.0f %9.1f %8.1f\n", label, n,
               s->res.push_s, s->res.total_s, (double)n / s->res.push_s, (double)n / s->res.total_s,
               (double)s->res.bytes / 1e6, (double)s->maxrss_kib / 1024.0);
    else
        printf("%-28s %9" PRIu64 " %10s %10.3f %12s %12.1f %9.1f %8.1f\n", label, n, "-",
               s->res.total_s, "-", (double)s->res.bytes / 1e6 / s->res.total_s,
               (double)s->res.bytes / 1e6, (double)s->maxrss_kib / 1024.0);
}

/* Index of the sample with the median total time (failed runs count as slowest). */
static int median_index(const tb_sample *v, int n)
{
    int best = 0;
    for (int i = 0; i < n; i++) {
        int below = 0, above = 0;
        double ti = v[i].res.status == 0 ? v[i].res.total_s : 1e300;
        for (int k = 0; k < n; k++) {
            double tk = v[k].res.status == 0 ? v[k].res.total_s : 1e300;
            below += k != i && tk < ti;
            above += k != i && tk > ti;
        }
        if (below <= n / 2 && above <= n / 2)
            best = i;
    }
    return best;
}

int cli_bench_tracts(int argc, char **argv)
{
    static const struct option longopts[] = {{"dir", required_argument, NULL, 'd'},
                                             {"streamlines", required_argument, NULL, 'n'},
                                             {"producers", required_argument, NULL, 'p'},
                                             {"quick", no_argument, NULL, 'q'},
                                             {"queue-mb", required_argument, NULL, 'm'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    const char *dir_opt = NULL;
    uint64_t n = 0, v = 0;
    int quick = 0, producers = 2, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case 'd':
            dir_opt = optarg;
            break;
        case 'n':
            if (cli_parse_u64(optarg, &n) != 0 || n == 0) {
                cli_errorf("bench tracts: --streamlines: expected a whole number >= 1");
                return CLI_EUSAGE;
            }
            break;
        case 'p':
            if (cli_parse_u64(optarg, &v) != 0 || v < 1 || v > TB_MAX_PRODUCERS) {
                cli_errorf("bench tracts: --producers: expected 1 to %d", TB_MAX_PRODUCERS);
                return CLI_EUSAGE;
            }
            producers = (int)v;
            break;
        case 'q':
            quick = 1;
            break;
        case 'm':
            if (cli_parse_u64(optarg, &v) != 0 || v < 1 || v > 65536) {
                cli_errorf("bench tracts: --queue-mb: expected 1 to 65536");
                return CLI_EUSAGE;
            }
            tb_queue_bytes = (size_t)v << 20;
            break;
        case 'h':
            fputs(bench_usage, stdout);
            return CLI_OK;
        default:
            cli_errorf("bench tracts: bad option '%s'", argv[optind - 1]);
            fputs(bench_usage, stderr);
            return CLI_EUSAGE;
        }
    }
    if (optind < argc) {
        cli_errorf("bench tracts: unexpected argument '%s'", argv[optind]);
        return CLI_EUSAGE;
    }
    if (n == 0)
        n = quick ? TB_QUICK : TB_FULL;
    char cwd[1024];
    const char *base = dir_opt;
    if (!base)
        base = getcwd(cwd, sizeof cwd) && access(cwd, W_OK | X_OK) == 0 ? cwd : "/tmp";
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/h5stream-bench-tracts-XXXXXX", base);
    if (!mkdtemp(dir)) {
        cli_errorf("bench tracts: cannot create a folder in %s: %s", base, strerror(errno));
        return CLI_EDATA;
    }
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    float *pool = make_pool();
    if (!pool) {
        cli_errorf("bench tracts: out of memory for the pool");
        bench_remove_dir(dir);
        return CLI_EDATA;
    }
    char h5[1200], h5big[1200], trx[1200], trxbig[1200];
    snprintf(h5, sizeof h5, "%s/n.h5", dir);
    snprintf(h5big, sizeof h5big, "%s/10n.h5", dir);
    snprintf(trx, sizeof trx, "%s/n.trx", dir);
    snprintf(trxbig, sizeof trxbig, "%s/10n.trx", dir);
    printf("h5stream bench tracts%s\n", quick ? " --quick (smoke run)" : "");
    printf("workload: N = %" PRIu64 " streamlines x %d points (random walks, %.0f mm steps), "
           "positions float16, pool of %d made before timing; %ld cores; queue %zu MiB\n",
           n, TB_POINTS, TB_STEP_MM, TB_POOL, sysconf(_SC_NPROCESSORS_ONLN), tb_queue_bytes >> 20);
    printf("folder:   %s; every run in a forked child; times include close + fsync; export\n"
           "          and dd: medians of %d runs, alternating\n\n",
           dir, TB_REPEATS);
    fflush(stdout);

    tb_sample ing1, ingp, exp1 = {0}, ing10, exp10;
    run_child(TB_INGEST, pool, n, 1, h5, NULL, &ing1);
    unlink(h5);
    run_child(TB_INGEST, pool, n, producers, h5, NULL, &ingp);
    /* Export and dd alternate TB_REPEATS times and the medians are compared: the disk's
     * rate drifts between runs on a virtual machine, and each pair sees the same drift. */
    tb_sample exps[TB_REPEATS];
    double dds[TB_REPEATS];
    uint64_t trx_bytes = 0;
    for (int k = 0; k < TB_REPEATS; k++) {
        if (k)
            unlink(trx);
        run_child(TB_EXPORT, pool, n, 0, h5, trx, &exps[k]);
        trx_bytes = exps[k].res.bytes;
        dds[k] = bench_dd(dir, (trx_bytes + (1u << 20) - 1) >> 20, 1, NULL);
    }
    exp1 = exps[median_index(exps, TB_REPEATS)];
    double dd_s = bench_median(dds, TB_REPEATS);
    double dd_rate =
        dd_s > 0 ? (double)(((trx_bytes + (1u << 20) - 1) >> 20) << 20) / 1e6 / dd_s : 0;
    char copy[1200];
    snprintf(copy, sizeof copy, "%s/copy.bin", dir);
    double copy_s = run_copy(trx, copy);
    double copy_rate = copy_s > 0 ? (double)trx_bytes / 1e6 / copy_s : 0;
    unlink(trx);
    unlink(h5);
    run_child(TB_INGEST, pool, 10 * n, producers, h5big, NULL, &ing10);
    run_child(TB_EXPORT, pool, 10 * n, 0, h5big, trxbig, &exp10);
    bench_remove_dir(dir);
    free(pool);

    char label[64];
    printf("%-28s %9s %10s %10s %12s %12s %9s %8s\n", "run", "lines", "push s", "total s", "push/s",
           "total/s|MB/s", "MB", "RSS MB");
    print_sample("ingest, 1 producer", n, &ing1, 1);
    snprintf(label, sizeof label, "ingest, %d producers", producers);
    print_sample(label, n, &ingp, 1);
    print_sample("export to TRX (stored)", n, &exp1, 0);
    if (dd_s > 0)
        printf("%-28s %9s %10s %10.3f %12s %12.1f %9.1f %8s\n", "dd conv=fsync (same bytes)", "-",
               "-", dd_s, "-", dd_rate, dd_rate * dd_s, "-");
    if (copy_s > 0)
        printf("%-28s %9s %10s %10.3f %12s %12.1f %9.1f %8s\n", "write()+fsync (TRX bytes)", "-",
               "-", copy_s, "-", copy_rate, (double)trx_bytes / 1e6, "-");
    snprintf(label, sizeof label, "ingest 10 N, %d producers", producers);
    print_sample(label, 10 * n, &ing10, 1);
    print_sample("export 10 N to TRX", 10 * n, &exp10, 0);
    printf("\n");
    int ok = ing1.res.status == 0 && ingp.res.status == 0 && exp1.res.status == 0 &&
             ing10.res.status == 0 && exp10.res.status == 0;
    double best_push = 0;
    if (ok) {
        best_push = (double)n / ingp.res.push_s;
        if ((double)n / ing1.res.push_s > best_push)
            best_push = (double)n / ing1.res.push_s;
    }
    verdict("push rate (best of 1 and P producers)", ok ? best_push / 1e6 : 0, ">=", 1.0, "M/s");
    printf("%-50s %12.2f M/s   (for reference)\n", "end-to-end rate incl. close + fsync",
           ok ? (double)n / ingp.res.total_s / 1e6 : 0);
    double exp_rate = ok ? (double)exp1.res.bytes / 1e6 / exp1.res.total_s : 0;
    /* The criterion is dd's rate for the same number of bytes; writing the TRX's
     * own bytes again is printed beside it, as a second view of the same disk. */
    verdict("export MB/s / dd MB/s", ok && dd_rate > 0 ? exp_rate / dd_rate : 0, ">=", 0.5, "x  ");
    printf("%-50s %12.2f x     (for reference: the TRX's own bytes)\n",
           "export MB/s / write()+fsync of the same bytes",
           ok && copy_rate > 0 ? exp_rate / copy_rate : 0);
    verdict("ingest peak RSS 10 N / N", ok ? (double)ing10.maxrss_kib / (double)ingp.maxrss_kib : 0,
            "<=", 1.10, "x  ");
    verdict("export peak RSS 10 N / N", ok ? (double)exp10.maxrss_kib / (double)exp1.maxrss_kib : 0,
            "<=", 1.10, "x  ");
    fflush(stdout);
    return ok ? CLI_OK : CLI_EDATA;
}
