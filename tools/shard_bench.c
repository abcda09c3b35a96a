/*
 * shard_bench.c - `h5stream bench frames --ranks N` (docs/shards.md, "Benchmark"): the
 * aggregate throughput of 1, 2, 4 ... N sharded writers (independent processes of this
 * binary with --rank/--ranks, as mpirun would start them) against one ordinary writer,
 * all writing the same frames to the same file system in the same run.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "h5s_master.h"

#define SB_FRAMES_FULL 4000
#define SB_FRAMES_QUICK 600
#define SB_REPS_FULL 3
#define SB_REPS_QUICK 1
#define SB_TARGET_N2 0.90

static const char shard_bench_usage[] =
    "usage: h5stream bench frames --ranks N [--dir DIR] [--frames F] [--quick] [--no-sync]\n"
    "\n"
    "Writes F sim:ramp frames (512x512 uint16) with one ordinary writer, then with 1, 2,\n"
    "4 ... N sharded writers (processes with --rank/--ranks; rank 0 also writes the\n"
    "master), and prints each run's aggregate throughput against the single writer.\n"
    "--no-sync: no fsync of the files at the end of each run.\n";

typedef struct {
    const char *dir;
    uint64_t frames;
    int reps;
    int sync;
} sb_opts;

static int sb_fsync_file(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return errno == ENOENT ? 0 : -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* Starts this binary with args; returns the child's pid or -1. */
static pid_t sb_spawn(char *const args[])
{
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0)
            dup2(null, STDOUT_FILENO);
        execv("/proc/self/exe", args);
        _exit(127);
    }
    return pid;
}

/*
 * One run: ranks == 0 is the ordinary single writer; else `ranks` sharded processes.
 * Returns the seconds from the first start to the last exit (and the fsyncs), or a
 * negative value when a writer failed.
 */
static double sb_run(const sb_opts *o, uint32_t ranks)
{
    char out[1200], count[32], rank_s[16], ranks_s[16], shard[1300];
    snprintf(out, sizeof out, "%s/run.h5", o->dir);
    snprintf(count, sizeof count, "%" PRIu64, o->frames);
    snprintf(ranks_s, sizeof ranks_s, "%" PRIu32, ranks);
    uint32_t procs = ranks ? ranks : 1;
    pid_t *pids = calloc(procs, sizeof *pids);
    if (!pids)
        return -1.0;
    double t0 = cli_now();
    int ok = 1;
    for (uint32_t r = 0; r < procs; r++) {
        snprintf(rank_s, sizeof rank_s, "%" PRIu32, r);
        char *args[] = {"h5stream", "ingest", "frames", "sim:ramp", "--shape", "512x512",
                        "-n",       count,    "-o",     out,        "-q",      NULL,
                        NULL,       NULL,     NULL,     NULL};
        if (ranks) {
            args[11] = "--rank";
            args[12] = rank_s;
            args[13] = "--ranks";
            args[14] = ranks_s;
        }
        pids[r] = sb_spawn(args);
        ok &= pids[r] > 0;
    }
    for (uint32_t r = 0; r < procs; r++) {
        int st = 0;
        if (pids[r] > 0 && (waitpid(pids[r], &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st)))
            ok = 0;
    }
    if (o->sync) {
        ok &= sb_fsync_file(out) == 0;
        for (uint32_t r = 0; r < ranks; r++) {
            h5s_master_shard_path(shard, sizeof shard, out, r);
            ok &= sb_fsync_file(shard) == 0;
        }
    }
    double dt = cli_now() - t0;
    unlink(out);
    for (uint32_t r = 0; r < ranks; r++) {
        h5s_master_shard_path(shard, sizeof shard, out, r);
        unlink(shard);
    }
    free(pids);
    return ok ? dt : -1.0;
}

static int sb_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median seconds of o->reps runs, or a negative value if one failed. */
static double sb_median(const sb_opts *o, uint32_t ranks)
{
    double t[SB_REPS_FULL] = {0.0, 0.0, 0.0};
    for (int i = 0; i < o->reps; i++) {
        t[i] = sb_run(o, ranks);
        if (t[i] < 0.0)
            return t[i];
    }
    qsort(t, (size_t)o->reps, sizeof *t, sb_cmp);
    return t[o->reps / 2];
}

int cli_bench_frames_ranks(int argc, char **argv)
{
    static const struct option longopts[] = {{"ranks", required_argument, NULL, 'r'},
                                             {"dir", required_argument, NULL, 'd'},
                                             {"frames", required_argument, NULL, 'n'},
                                             {"quick", no_argument, NULL, 'q'},
                                             {"no-sync", no_argument, NULL, 's'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    sb_opts o = {NULL, 0, SB_REPS_FULL, 1};
    uint64_t max_ranks = 0;
    int quick = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case 'r':
            if (cli_parse_u64(optarg, &max_ranks) != 0 || max_ranks == 0 || max_ranks > 256) {
                cli_errorf("bench: --ranks: expected 1 to 256, got '%s'", optarg);
                return CLI_EUSAGE;
            }
            break;
        case 'd':
            o.dir = optarg;
            break;
        case 'n':
            if (cli_parse_u64(optarg, &o.frames) != 0 || o.frames == 0) {
                cli_errorf("bench: --frames: expected a whole number >= 1, got '%s'", optarg);
                return CLI_EUSAGE;
            }
            break;
        case 'q':
            quick = 1;
            break;
        case 's':
            o.sync = 0;
            break;
        case 'h':
            fputs(shard_bench_usage, stdout);
            return CLI_OK;
        default:
            cli_errorf("bench: unknown option or missing value '%s'", argv[optind - 1]);
            fputs(shard_bench_usage, stderr);
            return CLI_EUSAGE;
        }
    }
    if (optind < argc) {
        cli_errorf("bench: unexpected argument '%s'", argv[optind]);
        return CLI_EUSAGE;
    }
    if (!o.frames)
        o.frames = quick ? SB_FRAMES_QUICK : SB_FRAMES_FULL;
    o.reps = quick ? SB_REPS_QUICK : SB_REPS_FULL;
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/h5stream-shards-XXXXXX", o.dir ? o.dir : ".");
    if (!mkdtemp(dir)) {
        cli_errorf("bench: cannot create a folder in %s: %s", o.dir ? o.dir : ".", strerror(errno));
        return CLI_EDATA;
    }
    o.dir = dir;
    double mb = (double)o.frames * 512.0 * 512.0 * 2.0 / 1e6;
    printf("bench frames --ranks %" PRIu64 ": %" PRIu64 " sim:ramp frames of 512x512 uint16 "
           "(%.0f MB), median of %d run(s), %s, in %s\n\n",
           max_ranks, o.frames, mb, o.reps, o.sync ? "fsync at the end" : "no fsync", dir);
    printf("%-30s %10s %10s %12s\n", "writers", "seconds", "MB/s", "x single");
    double base = sb_median(&o, 0);
    int status = CLI_OK;
    if (base <= 0.0) {
        cli_errorf("bench: the single writer failed");
        rmdir(dir);
        return CLI_EDATA;
    }
    printf("%-30s %10.2f %10.1f %12.2f\n", "1 ordinary writer (baseline)", base, mb / base, 1.0);
    double at2 = -1.0;
    for (uint64_t n = 1; n <= max_ranks;
         n = n < max_ranks && n * 2 > max_ranks ? max_ranks : n * 2) {
        double t = sb_median(&o, (uint32_t)n);
        char what[64];
        snprintf(what, sizeof what, "%" PRIu64 " sharded writer%s + master", n, n > 1 ? "s" : "");
        if (t <= 0.0) {
            printf("%-30s %10s\n", what, "failed");
            status = CLI_EDATA;
        } else {
            printf("%-30s %10.2f %10.1f %12.2f\n", what, t, mb / t, base / t);
            if (n == 2)
                at2 = base / t;
        }
        if (n == max_ranks)
            break;
    }
    if (at2 > 0.0)
        printf("\n2 sharded writers vs 1 ordinary writer: %.2f x (target >= %.2f on any "
               "machine: the sharding bookkeeping costs little) %s\n",
               at2, SB_TARGET_N2, at2 >= SB_TARGET_N2 ? "PASS" : "MISS");
    rmdir(dir);
    return status;
}
