/*
 * cmd_bench.c - `h5stream bench frames [--dir DIR] [--frames N] [--quick]`: a benchmark
 * program (not a timed test) that measures, in one run and on one file system, the write
 * rate of dd, of plain libhdf5 and of h5stream, and prints ratios against those
 * baselines next to the project's targets (docs/performance.md).
 *
 * Every measured run happens in a forked child, so that wait4's ru_maxrss is that run's
 * own peak RSS and no run inherits another's heap, threads or page-cache pressure in its
 * address space. The child times its own work (create to fsync) and sends the result back
 * through a pipe. dd is timed from outside: fork, exec, wait.
 *
 * Frames are Poisson resamples of a real Pilatus frame (shared/data/frames/
 * AgBehenate_228.hdf5, /entry/data/data, 195 x 487 int32), or of a synthetic powder
 * pattern when that file is absent. A pool of distinct frames is made before any timing,
 * in the parent, and every run cycles through it, so producing a frame costs nothing
 * but the copy that h5s_frames_append (or H5Dwrite) makes anyway.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <hdf5.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"
#include "cli.h"
#include "frame_source.h"
#include "h5s_codec.h"
#include "h5stream.h"

#define BENCH_POOL 32                        /* distinct frames cycled through */
#define BENCH_QUEUE_BYTES ((size_t)64 << 20) /* h5stream queue budget in every run */
#define BENCH_FLUSH_MS 1000u                 /* commit cadence, h5stream's default */
/* N of a full run: 1.9 GB of raw frames, so that the fixed costs of a run (creating the
 * file, the last commit, the final fsync: a few tenths of a second) stay small. */
#define BENCH_FRAMES_FULL 5000u
#define BENCH_FRAMES_QUICK 40u /* N of --quick */
#define BENCH_META_CHUNK 1024  /* frame_id/timestamp chunk, as the engine uses */
/* Repetitions of every run, interleaved; the table shows the median. Shared and virtual
 * disks vary by 2-5x from one run to the next, so one sample per row misleads. */
#define BENCH_REPS_FULL 3
#define BENCH_REPS_QUICK 1
#define BENCH_MAX_REPS 9

static const char bench_usage[] =
    "usage: h5stream bench frames [--dir DIR] [--frames N] [--quick] [--no-sync]\n"
    "\n"
    "Measures, on one file system, dd's write rate, plain libhdf5 and h5stream, for raw\n"
    "and for Blosc lz4 frames, and prints ratios against the project's targets.\n"
    "  --dir DIR     where to write (default: the current directory if writable, else\n"
    "                $TMPDIR, else /tmp); the files are deleted at the end\n"
    "  --frames N    frames per run (default 5000; the memory check also runs 10 N)\n"
    "  --quick       a smoke run with few frames (the ratios then mean little)\n"
    "  --no-sync     end every run at close, without fsync (dd without conv=fsync): the\n"
    "                pipeline's own rate, apart from the disk's\n";

/* ---- The frame workload ---- */

typedef struct {
    unsigned h, w;
    size_t frame_bytes;
    int32_t *pool[BENCH_POOL];
    char source[1400];
} bench_frames;

/* The real frame, from H5S_SHARED_DATA (set by the tests) or ../shared/data beside the
 * checkout (where README's commands run), if either has it. */
static const char *template_path(char *buf, size_t bufsize)
{
    const char *rel = "frames/AgBehenate_228.hdf5";
    const char *env = getenv("H5S_SHARED_DATA");
    snprintf(buf, bufsize, "%s/%s", env && env[0] ? env : "../shared/data", rel);
    return access(buf, R_OK) == 0 ? buf : NULL;
}

/* Fills the pool with Poisson resamples of the real frame through the ingest sources
 * (FILE.h5:/dataset with --poisson), or with the simulator's powder rings at the same
 * shape and type when the frame is not there. */
static int make_frames(bench_frames *fr)
{
    char path[1024], spec[1100];
    const char *tmpl = template_path(path, sizeof path);
    frame_source_options o = FRAME_SOURCE_OPTIONS_INIT;
    o.has_count = 1;
    o.count = BENCH_POOL;
    o.seed = 228;
    if (tmpl) {
        snprintf(spec, sizeof spec, "%s:/entry/data/data", tmpl);
        o.poisson = 1;
        o.repeat = BENCH_POOL;
        snprintf(fr->source, sizeof fr->source, "Poisson resamples of %s (pool of %d)", spec,
                 BENCH_POOL);
    } else {
        snprintf(spec, sizeof spec, "sim:poisson");
        o.dtype = H5S_INT32;
        o.rank = 2;
        o.dims[0] = 195;
        o.dims[1] = 487;
        snprintf(fr->source, sizeof fr->source,
                 "simulated photon-counting frames, 195x487 int32 (%s/frames/AgBehenate_228.hdf5 "
                 "not found; pool of %d)",
                 getenv("H5S_SHARED_DATA") ? getenv("H5S_SHARED_DATA") : "../shared/data",
                 BENCH_POOL);
    }
    frame_source *src;
    if (frame_source_open(&src, spec, &o) != 0)
        return -1;
    int rc = 0;
    if (frame_source_dtype(src) != H5S_INT32 || frame_source_rank(src) != 2) {
        cli_errorf("bench: %s is not 2-D int32 frames", spec);
        rc = -1;
    }
    fr->h = (unsigned)frame_source_dims(src)[0];
    fr->w = (unsigned)frame_source_dims(src)[1];
    fr->frame_bytes = frame_source_frame_bytes(src);
    for (int i = 0; rc == 0 && i < BENCH_POOL; i++) {
        fr->pool[i] = malloc(fr->frame_bytes);
        if (!fr->pool[i] || frame_source_next(src, fr->pool[i]) != 1)
            rc = -1;
    }
    frame_source_close(src);
    return rc;
}

/* ---- Runs ---- */

typedef enum { RUN_DD, RUN_PLAIN, RUN_H5S } run_kind;

typedef struct {
    run_kind kind;
    int blosc;   /* 0: raw frames, 1: Blosc lz4 level 5 byte shuffle, 2: lz4hc level 5 */
    int threads; /* h5stream encode threads */
    uint64_t frames;
    const char *label;
} run_spec;

/* What a child sends back through its pipe (well under PIPE_BUF, so one atomic write). */
typedef struct {
    int status; /* 0 ok */
    double seconds;
    uint64_t bytes_stored; /* file size after the run */
    uint64_t queue_peak;
    char msg[768];
} run_result;

/* One measured run. */
typedef struct {
    run_result res;
    long maxrss_kib; /* wait4's ru_maxrss */
    long minflt;     /* minor page faults: the cost of touching fresh memory */
    int ran;
} run_sample;

/* A configuration and its repetitions. */
typedef struct {
    run_spec spec;
    run_sample s[BENCH_MAX_REPS];
    int n;
} run_row;

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* 0 with --no-sync: runs end at close, their data possibly still in the page cache. */
static int bench_sync = 1;

static int fsync_path(const char *path)
{
    return bench_sync ? bench_fsync_path(path) : 0;
}

static h5s_codec bench_codec(int blosc)
{
    h5s_codec c = H5S_CODEC_INIT;
    if (blosc) {
        c.kind = H5S_CODEC_BLOSC;
        c.level = 5;
        c.shuffle = H5S_SHUFFLE_BYTE;
        c.blosc_compressor = blosc == 2 ? H5S_BLOSC_LZ4HC : H5S_BLOSC_LZ4;
    }
    return c;
}

static const char *bench_codec_name(int blosc)
{
    return blosc == 2 ? "blosc:lz4hc:5:shuffle" : blosc ? "blosc:lz4:5:shuffle" : "none";
}

/* Ends a run whose file is closed: fsync (unless --no-sync), then time and size. */
static int end_run(run_result *r, const char *path, double t0)
{
    if (fsync_path(path) != 0) {
        snprintf(r->msg, sizeof r->msg, "fsync of the run's file: %s", strerror(errno));
        r->status = -1;
        return -1;
    }
    r->seconds = bench_now() - t0;
    r->bytes_stored = bench_file_size(path);
    return 0;
}

static int fail_h5(run_result *r, const char *what, uint64_t frame)
{
    char inner[256];
    cli_hdf5_reason(inner, sizeof inner);
    snprintf(r->msg, sizeof r->msg, "plain libhdf5: %s (frame %" PRIu64 "): %s", what, frame,
             inner);
    r->status = -1;
    return -1;
}

/* 1-D unlimited chunked per-frame dataset, as the engine declares frame_id/timestamp. */
static hid_t plain_meta_dataset(hid_t fid, const char *path, hid_t type, hid_t lcpl)
{
    hsize_t zero = 0, unlimited = H5S_UNLIMITED, chunk = BENCH_META_CHUNK;
    hid_t space = H5Screate_simple(1, &zero, &unlimited);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, &chunk);
    hid_t d = H5Dcreate2(fid, path, type, space, lcpl, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Sclose(space);
    return d;
}

/* Appends one value to a 1-D per-frame dataset now holding n values. */
static herr_t plain_append1(hid_t d, uint64_t n, hid_t memtype, const void *value)
{
    hsize_t ext = n + 1, start = n, one = 1;
    if (H5Dset_extent(d, &ext) < 0)
        return -1;
    hid_t fs = H5Dget_space(d), ms = H5Screate_simple(1, &one, NULL);
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &one, NULL);
    herr_t st = H5Dwrite(d, memtype, ms, fs, H5P_DEFAULT, value);
    H5Sclose(ms);
    H5Sclose(fs);
    return st;
}

/*
 * Plain libhdf5, the way a careful single-threaded SWMR writer does it: the same layout
 * as h5stream (libver latest, data [N, H, W] chunked one frame per chunk, frame_id and
 * timestamp beside it), then per frame H5Dset_extent + H5Dwrite through the filter
 * pipeline, flushing payload then marker then the file about once a second.
 */
static int run_plain(const bench_frames *fr, const run_spec *sp, const char *path, run_result *r)
{
    h5s_codec codec = bench_codec(sp->blosc);
    double t0 = bench_now();
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
    hid_t fid = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (fid < 0)
        return fail_h5(r, "cannot create the file", 0);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hsize_t dims[3] = {0, fr->h, fr->w}, maxd[3] = {H5S_UNLIMITED, fr->h, fr->w},
            chunk[3] = {1, fr->h, fr->w};
    hid_t space = H5Screate_simple(3, dims, maxd);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 3, chunk);
    if (h5s_codec_set_dcpl(dcpl, &codec) != 0) {
        snprintf(r->msg, sizeof r->msg, "plain libhdf5: %s", h5s_error_message());
        r->status = -1;
        return -1;
    }
    hid_t data = H5Dcreate2(fid, "/entry/instrument/detector/data", H5T_STD_I32LE, space, lcpl,
                            dcpl, H5P_DEFAULT);
    hid_t ids = plain_meta_dataset(fid, "/entry/instrument/detector/frame_id", H5T_STD_U64LE, lcpl);
    hid_t stamps =
        plain_meta_dataset(fid, "/entry/instrument/detector/timestamp", H5T_IEEE_F64LE, lcpl);
    H5Pclose(dcpl);
    H5Sclose(space);
    H5Pclose(lcpl);
    if (data < 0 || ids < 0 || stamps < 0)
        return fail_h5(r, "cannot create the datasets", 0);
    if (H5Fstart_swmr_write(fid) < 0)
        return fail_h5(r, "cannot start SWMR", 0);

    hsize_t one[3] = {1, fr->h, fr->w}, start[3] = {0, 0, 0};
    hid_t ms = H5Screate_simple(3, one, NULL);
    double last_flush = bench_now();
    for (uint64_t i = 0; i < sp->frames; i++) {
        hsize_t ext[3] = {i + 1, fr->h, fr->w};
        if (H5Dset_extent(data, ext) < 0)
            return fail_h5(r, "H5Dset_extent", i);
        hid_t fs = H5Dget_space(data);
        start[0] = i;
        H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, one, NULL);
        herr_t st = H5Dwrite(data, H5T_NATIVE_INT32, ms, fs, H5P_DEFAULT, fr->pool[i % BENCH_POOL]);
        H5Sclose(fs);
        double stamp = wall_now();
        if (st < 0 || plain_append1(stamps, i, H5T_NATIVE_DOUBLE, &stamp) < 0 ||
            plain_append1(ids, i, H5T_NATIVE_UINT64, &i) < 0)
            return fail_h5(r, "H5Dwrite", i);
        double now = bench_now();
        if (now - last_flush >= BENCH_FLUSH_MS / 1000.0) {
            if (H5Dflush(data) < 0 || H5Dflush(stamps) < 0 || H5Dflush(ids) < 0 ||
                H5Fflush(fid, H5F_SCOPE_LOCAL) < 0)
                return fail_h5(r, "flush", i);
            last_flush = now;
        }
    }
    H5Sclose(ms);
    H5Dclose(data);
    H5Dclose(ids);
    H5Dclose(stamps);
    if (H5Fclose(fid) < 0)
        return fail_h5(r, "H5Fclose", sp->frames);
    return end_run(r, path, t0);
}

static int fail_h5s(run_result *r, const char *what, int rc)
{
    snprintf(r->msg, sizeof r->msg, "h5stream: %s: %s: %s", what, h5s_strerror(rc),
             h5s_error_message());
    r->status = rc ? rc : -1;
    return -1;
}

/* h5stream through its public API, one frames dataset in the NeXus default layout. */
static int run_h5s(const bench_frames *fr, const run_spec *sp, const char *path, run_result *r)
{
    h5s_file_options fo = H5S_FILE_OPTIONS_INIT;
    fo.queue_bytes = BENCH_QUEUE_BYTES;
    fo.encode_threads = sp->threads;
    fo.flush_ms = BENCH_FLUSH_MS;
    h5s_frames_options o = H5S_FRAMES_OPTIONS_INIT;
    o.dtype = H5S_INT32;
    o.rank = 2;
    o.dims[0] = fr->h;
    o.dims[1] = fr->w;
    o.codec = bench_codec(sp->blosc);

    double t0 = bench_now();
    h5s_file *f = NULL;
    h5s_frames *frames = NULL;
    int rc = h5s_file_create(&f, path, &fo);
    if (rc)
        return fail_h5s(r, "h5s_file_create", rc);
    if ((rc = h5s_frames_create(&frames, f, NULL, &o)) != 0 || (rc = h5s_file_start_swmr(f)) != 0) {
        fail_h5s(r, "declaring the dataset", rc);
        h5s_file_close(f);
        return -1;
    }
    for (uint64_t i = 0; i < sp->frames; i++) {
        rc = h5s_frames_append(frames, fr->pool[i % BENCH_POOL], fr->frame_bytes, NULL);
        if (rc) {
            char what[64];
            snprintf(what, sizeof what, "append of frame %" PRIu64, i);
            fail_h5s(r, what, rc);
            h5s_file_close(f);
            return -1;
        }
    }
    h5s_file_stats stats;
    if (h5s_file_stats_get(f, &stats) == 0)
        r->queue_peak = stats.queue_peak_bytes;
    rc = h5s_file_close(f);
    if (rc)
        return fail_h5s(r, "h5s_file_close", rc);
    return end_run(r, path, t0);
}

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    interrupted = sig;
}

/* dd if=/dev/zero of=DIR/dd.bin bs=1M count=MIB [conv=fsync], timed from fork to exit. */
static void run_dd(const char *dir, uint64_t mib, run_sample *row)
{
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    double secs = bench_dd(dir, mib, bench_sync, &ru);
    row->ran = 1;
    row->maxrss_kib = ru.ru_maxrss;
    row->minflt = ru.ru_minflt;
    if (secs < 0) {
        snprintf(row->res.msg, sizeof row->res.msg, "/bin/dd could not run or failed");
        row->res.status = -1;
        return;
    }
    row->res.seconds = secs;
    row->res.bytes_stored = mib << 20;
}

typedef struct {
    const bench_frames *fr;
    const run_spec *spec;
    const char *path;
} child_job;

static void child_main(void *arg, void *res)
{
    const child_job *job = arg;
    run_result *r = res;
    memset(r, 0, sizeof *r);
    if (job->spec->kind == RUN_PLAIN)
        run_plain(job->fr, job->spec, job->path, r);
    else
        run_h5s(job->fr, job->spec, job->path, r);
}

/* Runs one HDF5 workload in a forked child and collects its result and peak RSS. */
static void run_child(const bench_frames *fr, const char *dir, const run_spec *spec,
                      run_sample *row, int index)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/run%d.h5", dir, index);
    child_job job = {fr, spec, path};
    struct rusage ru;
    char why[256];
    if (bench_fork_run(child_main, &job, &row->res, sizeof row->res, &ru, why, sizeof why)) {
        memset(&row->res, 0, sizeof row->res);
        row->res.status = -1;
        snprintf(row->res.msg, sizeof row->res.msg, "%s", why);
    }
    row->maxrss_kib = ru.ru_maxrss;
    row->minflt = ru.ru_minflt;
    row->ran = 1;
    unlink(path);
}

/* ---- Where to write ---- */

static const char *fs_name(long type)
{
    switch ((unsigned long)type) {
    case 0xEF53:
        return "ext2/3/4";
    case 0x58465342:
        return "xfs";
    case 0x9123683E:
        return "btrfs";
    case 0x01021994:
        return "tmpfs";
    case 0x6969:
        return "nfs";
    case 0xFF534D42:
    case 0xFE534D42:
        return "cifs/smb";
    case 0x794C7630:
        return "overlayfs";
    case 0x2FC12FC1:
        return "zfs";
    case 0x65735546:
        return "fuse";
    default:
        return "other";
    }
}

/*
 * Default folder: the current directory when it is writable, because that is the file
 * system the user is standing on and most likely means to measure (a data disk, a
 * scratch area); /tmp is often tmpfs, which measures memory, not storage. Then $TMPDIR,
 * then /tmp.
 */
static const char *default_dir(char *buf, size_t bufsize, const char **why)
{
    if (getcwd(buf, bufsize) && access(buf, W_OK | X_OK) == 0) {
        *why = "the current directory";
        return buf;
    }
    const char *t = getenv("TMPDIR");
    if (t && t[0] && access(t, W_OK | X_OK) == 0) {
        *why = "$TMPDIR (the current directory is not writable)";
        return t;
    }
    *why = "/tmp (the current directory is not writable, $TMPDIR unset)";
    return "/tmp";
}

/* ---- Report ---- */

static double mb_per_s(uint64_t bytes, double s)
{
    return s > 0 ? (double)bytes / 1e6 / s : 0;
}

/* Median of the successful samples of a field; 0 when none succeeded. */
static double row_median(const run_row *r, double (*get)(const run_sample *))
{
    double v[BENCH_MAX_REPS];
    int n = 0;
    for (int i = 0; i < r->n; i++)
        if (r->s[i].ran && r->s[i].res.status == 0)
            v[n++] = get(&r->s[i]);
    if (n == 0)
        return 0;
    qsort(v, (size_t)n, sizeof v[0], bench_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double get_seconds(const run_sample *s)
{
    return s->res.seconds;
}

static double get_rss_mb(const run_sample *s)
{
    return (double)s->maxrss_kib / 1024.0;
}

static double get_minflt(const run_sample *s)
{
    return (double)s->minflt;
}

static double get_queue_mb(const run_sample *s)
{
    return (double)s->res.queue_peak / 1e6;
}

/* The first failed sample, or NULL. */
static const run_sample *row_failure(const run_row *r)
{
    for (int i = 0; i < r->n; i++)
        if (!r->s[i].ran || r->s[i].res.status != 0)
            return &r->s[i];
    return r->n == 0 ? &r->s[0] : NULL;
}

/* Raw MB/s of a row's median time, or 0 if it failed. */
static double row_rate(const run_row *r, uint64_t raw_bytes)
{
    return row_failure(r) ? 0 : mb_per_s(raw_bytes, row_median(r, get_seconds));
}

static void print_row(const run_row *r, const bench_frames *fr, uint64_t dd_bytes)
{
    const run_spec *s = &r->spec;
    char threads[8] = "-", codec[32] = "-", frames[24] = "-";
    if (s->kind == RUN_H5S)
        snprintf(threads, sizeof threads, "%d", s->threads);
    else if (s->kind == RUN_PLAIN)
        snprintf(threads, sizeof threads, "1");
    if (s->kind != RUN_DD) {
        snprintf(codec, sizeof codec, "%s", bench_codec_name(s->blosc));
        snprintf(frames, sizeof frames, "%" PRIu64, s->frames);
    }
    printf("%-16s %-21s %3s %6s", s->label, codec, threads, frames);
    const run_sample *bad = row_failure(r);
    if (bad) {
        printf("  FAILED: %s\n", bad->ran ? bad->res.msg : "not run");
        return;
    }
    uint64_t raw = s->kind == RUN_DD ? dd_bytes : s->frames * fr->frame_bytes;
    double secs = row_median(r, get_seconds), lo = secs, hi = secs;
    for (int i = 0; i < r->n; i++) {
        lo = r->s[i].res.seconds < lo ? r->s[i].res.seconds : lo;
        hi = r->s[i].res.seconds > hi ? r->s[i].res.seconds : hi;
    }
    char fps[24] = "-", faults[24];
    if (s->kind != RUN_DD)
        snprintf(fps, sizeof fps, "%.0f", (double)s->frames / secs);
    snprintf(faults, sizeof faults, "%.0f",
             row_median(r, get_minflt) / (double)(s->kind == RUN_DD ? 1 : s->frames));
    printf(" %8.3f %5.0f%% %8s %8.1f %9.1f %8.1f %8s\n", secs,
           secs > 0 ? 100.0 * (hi - lo) / secs : 0.0, fps, mb_per_s(raw, secs),
           (double)r->s[r->n - 1].res.bytes_stored / 1e6, row_median(r, get_rss_mb),
           s->kind == RUN_DD ? "-" : faults);
}

static int print_ratio(const char *what, double num, double den, const char *cmp, double target)
{
    if (num <= 0 || den <= 0) {
        printf("%-52s %8s   %s %.2f   n/a\n", what, "-", cmp, target);
        return 0;
    }
    double v = num / den;
    int pass = cmp[0] == '>' ? v >= target : v <= target;
    printf("%-52s %8.2f   %s %.2f   %s\n", what, v, cmp, target, pass ? "PASS" : "MISS");
    return pass;
}

int cli_bench(int argc, char **argv)
{
    /* argv[0] is "bench"; the model comes next. */
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(bench_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EUSAGE : CLI_OK;
    }
    if (strcmp(argv[1], "tracts") == 0)
        return cli_bench_tracts(argc - 1, argv + 1);
    if (strcmp(argv[1], "volumes") == 0)
        return cli_bench_volumes(argc - 1, argv + 1);
    if (strcmp(argv[1], "marc") == 0)
        return cli_bench_marc(argc - 1, argv + 1);
    if (strcmp(argv[1], "frames") != 0) {
        cli_errorf("bench: unknown model '%s' (expected frames, tracts, volumes or marc)", argv[1]);
        return CLI_EUSAGE;
    }
    /* Sharded writers have their own runs (tools/shard_bench.c). */
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], "--ranks") == 0 || strncmp(argv[i], "--ranks=", 8) == 0)
            return cli_bench_frames_ranks(argc - 1, argv + 1);
    static const struct option longopts[] = {
        {"dir", required_argument, NULL, 'd'}, {"frames", required_argument, NULL, 'n'},
        {"quick", no_argument, NULL, 'q'},     {"no-sync", no_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},      {NULL, 0, NULL, 0}};
    const char *dir_opt = NULL;
    uint64_t nframes = 0;
    int quick = 0, c;
    /* Options follow the model name, which plays getopt's argv[0]. */
    int ac = argc - 1;
    char **av = argv + 1;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(ac, av, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case 'd':
            dir_opt = optarg;
            break;
        case 'n':
            if (cli_parse_u64(optarg, &nframes) != 0 || nframes == 0) {
                cli_errorf("bench: --frames: expected a whole number >= 1, got '%s'", optarg);
                return CLI_EUSAGE;
            }
            break;
        case 'q':
            quick = 1;
            break;
        case 's':
            bench_sync = 0;
            break;
        case 'h':
            fputs(bench_usage, stdout);
            return CLI_OK;
        case ':':
            cli_errorf("bench: option '%s' needs a value", av[optind - 1]);
            return CLI_EUSAGE;
        default:
            cli_errorf("bench: unknown option '%s'", av[optind - 1]);
            fputs(bench_usage, stderr);
            return CLI_EUSAGE;
        }
    }
    if (optind < ac) {
        cli_errorf("bench: unexpected argument '%s'", av[optind]);
        return CLI_EUSAGE;
    }
    if (nframes == 0)
        nframes = quick ? BENCH_FRAMES_QUICK : BENCH_FRAMES_FULL;
    int reps = quick ? BENCH_REPS_QUICK : BENCH_REPS_FULL;

    char cwd[1024];
    const char *why = "--dir";
    const char *base = dir_opt ? dir_opt : default_dir(cwd, sizeof cwd, &why);
    struct stat st;
    if (stat(base, &st) != 0 || !S_ISDIR(st.st_mode) || access(base, W_OK | X_OK) != 0) {
        cli_errorf("bench: %s: not a writable folder", base);
        return CLI_EDATA;
    }
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/h5stream-bench-XXXXXX", base);
    if (!mkdtemp(dir)) {
        cli_errorf("bench: cannot create a folder in %s: %s", base, strerror(errno));
        return CLI_EDATA;
    }

    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (h5s_filters_init() != 0) {
        cli_error_h5s("bench", H5S_ECODEC);
        bench_remove_dir(dir);
        return CLI_EDATA;
    }
    bench_frames fr;
    memset(&fr, 0, sizeof fr);
    if (make_frames(&fr) != 0) {
        cli_errorf("bench: cannot make the frame pool");
        for (int i = 0; i < BENCH_POOL; i++)
            free(fr.pool[i]);
        bench_remove_dir(dir);
        return CLI_EDATA;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    uint64_t raw_bytes = nframes * fr.frame_bytes;
    uint64_t dd_mib = (raw_bytes + (1u << 20) - 1) >> 20;
    uint64_t dd_bytes = dd_mib << 20;
    enum {
        DD,
        PLAIN_RAW,
        H5S_RAW1,
        H5S_RAW2,
        PLAIN_BLOSC,
        H5S_BLOSC1,
        H5S_BLOSC2,
        H5S_BLOSC2_10N,
        H5S_HC1,
        H5S_HC2,
        NRUNS
    };
    run_row rows[NRUNS];
    memset(rows, 0, sizeof rows);
    rows[DD].spec = (run_spec){RUN_DD, 0, 0, nframes, bench_sync ? "dd conv=fsync" : "dd"};
    rows[PLAIN_RAW].spec = (run_spec){RUN_PLAIN, 0, 1, nframes, "plain libhdf5"};
    rows[H5S_RAW1].spec = (run_spec){RUN_H5S, 0, 1, nframes, "h5stream"};
    rows[H5S_RAW2].spec = (run_spec){RUN_H5S, 0, 2, nframes, "h5stream"};
    rows[PLAIN_BLOSC].spec = (run_spec){RUN_PLAIN, 1, 1, nframes, "plain libhdf5"};
    rows[H5S_BLOSC1].spec = (run_spec){RUN_H5S, 1, 1, nframes, "h5stream"};
    rows[H5S_BLOSC2].spec = (run_spec){RUN_H5S, 1, 2, nframes, "h5stream"};
    rows[H5S_BLOSC2_10N].spec = (run_spec){RUN_H5S, 1, 2, 10 * nframes, "h5stream (10 N)"};
    /* A heavier codec, where compression rather than copies and I/O takes the cores: it
     * shows how the encoder pool itself scales. lz4hc is ~15x slower, so N / 4 frames. */
    uint64_t hc_frames = nframes / 4 ? nframes / 4 : 1;
    rows[H5S_HC1].spec = (run_spec){RUN_H5S, 2, 1, hc_frames, "h5stream (N/4)"};
    rows[H5S_HC2].spec = (run_spec){RUN_H5S, 2, 2, hc_frames, "h5stream (N/4)"};

    struct statfs sfs;
    struct statvfs svfs;
    const char *fstype = statfs(dir, &sfs) == 0 ? fs_name((long)sfs.f_type) : "unknown";
    unsigned maj = 0, min = 0, rel = 0;
    H5get_libversion(&maj, &min, &rel);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    printf("h5stream bench frames%s\n", quick ? " --quick (smoke run: too few frames for the "
                                                "ratios to mean much)"
                                              : "");
    printf("frames:   N = %" PRIu64 " per run, %ux%u int32 (%zu bytes each, %.1f MB raw per "
           "run); %s\n",
           nframes, fr.h, fr.w, fr.frame_bytes, (double)raw_bytes / 1e6, fr.source);
    printf("folder:   %s (%s; chosen as %s)\n", dir, fstype, why);
    if (strcmp(fstype, "tmpfs") == 0)
        printf("warning:  tmpfs keeps files in memory: these rates are not a disk's\n");
    if (strcmp(fstype, "nfs") == 0 || strcmp(fstype, "cifs/smb") == 0)
        printf("warning:  SWMR is not supported on network file systems (NFS, SMB)\n");
    if (statvfs(dir, &svfs) == 0 &&
        (double)svfs.f_bavail * (double)svfs.f_frsize < (double)raw_bytes * 1.2)
        printf("warning:  less free space than one run needs (%.1f MB)\n",
               (double)raw_bytes * 1.2 / 1e6);
    const char *bt = getenv("BLOSC_NTHREADS");
    printf("setup:    HDF5 %u.%u.%u, %ld cores; h5stream queue %zu MiB, commit every %u ms; "
           "plain libhdf5 Blosc runs hdf5-blosc in the writing thread (BLOSC_NTHREADS=%s)\n",
           maj, min, rel, cores, BENCH_QUEUE_BYTES >> 20, BENCH_FLUSH_MS, bt ? bt : "unset");
    printf("each run: a forked child, timed from file creation to close%s; runs of "
           "each: %d, interleaved; median seconds, spread = (max - min) / median; MB/s = 10^6 raw "
           "bytes (dd: zeros) per second; RSS = peak RSS (wait4); faults/f = minor page "
           "faults per frame\n\n",
           bench_sync ? " + fsync" : " (no fsync: page cache)", reps);
    fflush(stdout);

    int failed = 0, total = reps * NRUNS, done = 0;
    int progress = cli_stderr_is_tty();
    for (int rep = 0; rep < reps && !interrupted; rep++) {
        /* Interleaved (every configuration once, then again) so that a disk slowing down
         * or speeding up mid-benchmark touches every row alike. */
        for (int i = 0; i < NRUNS && !interrupted; i++) {
            run_row *row = &rows[i];
            if (progress)
                fprintf(stderr, "\r  run %d of %d: %s %s   ", ++done, total, row->spec.label,
                        row->spec.kind == RUN_DD ? ""
                        : row->spec.blosc        ? bench_codec_name(row->spec.blosc)
                                                 : "raw");
            run_sample *smp = &row->s[row->n++];
            if (row->spec.kind == RUN_DD)
                run_dd(dir, dd_mib, smp);
            else
                run_child(&fr, dir, &row->spec, smp, i);
            failed |= !smp->ran || smp->res.status != 0;
        }
    }
    if (progress)
        fprintf(stderr, "\r%60s\r", "");
    bench_remove_dir(dir);
    for (int i = 0; i < BENCH_POOL; i++)
        free(fr.pool[i]);
    if (interrupted) {
        cli_errorf("bench: interrupted; removed %s", dir);
        return CLI_EDATA;
    }

    printf("%-16s %-21s %3s %6s %8s %6s %8s %8s %9s %8s %8s\n", "run", "codec", "thr", "frames",
           "seconds", "spread", "frames/s", "MB/s", "stored MB", "RSS MB", "faults/f");
    for (int i = 0; i < NRUNS; i++)
        print_row(&rows[i], &fr, dd_bytes);

    double dd = row_rate(&rows[DD], dd_bytes);
    printf("\n%-52s %8s   %-7s  %s\n", "ratio (of median MB/s)", "measured", "target", "");
    print_ratio("raw: h5stream (1 thread) / dd", row_rate(&rows[H5S_RAW1], raw_bytes), dd,
                ">=", 0.9);
    print_ratio("raw: h5stream (2 threads) / dd", row_rate(&rows[H5S_RAW2], raw_bytes), dd,
                ">=", 0.9);
    printf("%-52s %8.2f   (for reference)\n", "raw: plain libhdf5 / dd",
           dd > 0 ? row_rate(&rows[PLAIN_RAW], raw_bytes) / dd : 0.0);
    print_ratio("Blosc: h5stream 2 threads / 1 thread", row_rate(&rows[H5S_BLOSC2], raw_bytes),
                row_rate(&rows[H5S_BLOSC1], raw_bytes), ">=", 1.7);
    print_ratio("Blosc: h5stream (2 threads) / plain libhdf5",
                row_rate(&rows[H5S_BLOSC2], raw_bytes), row_rate(&rows[PLAIN_BLOSC], raw_bytes),
                ">=", 3.0);
    printf("%-52s %8.2f   (for reference)\n", "Blosc: h5stream (1 thread) / plain libhdf5",
           row_rate(&rows[PLAIN_BLOSC], raw_bytes) > 0
               ? row_rate(&rows[H5S_BLOSC1], raw_bytes) / row_rate(&rows[PLAIN_BLOSC], raw_bytes)
               : 0.0);
    double hc1 = row_rate(&rows[H5S_HC1], hc_frames * fr.frame_bytes);
    printf("%-52s %8.2f   (for reference: compression-bound)\n",
           "Blosc lz4hc: h5stream 2 threads / 1 thread",
           hc1 > 0 ? row_rate(&rows[H5S_HC2], hc_frames * fr.frame_bytes) / hc1 : 0.0);
    double rss_n = row_failure(&rows[H5S_BLOSC2]) ? 0 : row_median(&rows[H5S_BLOSC2], get_rss_mb);
    double rss_10n =
        row_failure(&rows[H5S_BLOSC2_10N]) ? 0 : row_median(&rows[H5S_BLOSC2_10N], get_rss_mb);
    printf("memory: h5stream Blosc, 2 threads: peak RSS %.1f MB at N = %" PRIu64
           ", %.1f MB at 10 N = %" PRIu64 " (queue peaks %.1f and %.1f MB of a %zu MiB budget)\n",
           rss_n, nframes, rss_10n, 10 * nframes, row_median(&rows[H5S_BLOSC2], get_queue_mb),
           row_median(&rows[H5S_BLOSC2_10N], get_queue_mb), BENCH_QUEUE_BYTES >> 20);
    print_ratio("memory: peak RSS (10 N) / peak RSS (N)", rss_10n, rss_n, "<=", 1.10);
    fflush(stdout);
    return failed ? CLI_EDATA : CLI_OK;
}
