/*
 * cmd_ingest.c - `h5stream ingest frames SRC -o OUT.h5 [options]` (docs/cli.md): reads
 * frames from a source and streams them into a new SWMR file through the writer engine.
 */
#include <errno.h>
#include <getopt.h>
#include <hdf5.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "frame_source.h"
#include "h5s_codec.h"
#include "h5stream.h"
#include "shard_run.h"

#define DEFAULT_DATA_PATH "/entry/instrument/detector/data"
#define MB 1e6

static const char ingest_usage[] =
    "usage: h5stream ingest frames SRC -o OUT.h5 [options]\n"
    "\n"
    "SRC: sim | sim:poisson | sim:ramp | raw:PATH | raw:- | FILE.h5:/dataset\n"
    "\n"
    "options:\n"
    "  -o, --output OUT.h5       file to create (replaced if it exists); required\n"
    "      --shape HxW           frame shape, 1 to 3 axes (sim: 512x512; raw: required)\n"
    "      --dtype T             int8 ... uint64, float16, float32, float64 (sim: uint16;\n"
    "                            raw: required)\n"
    "  -n, --count N             frames to write (sim: 1000; raw: to the end of the input;\n"
    "                            h5: frames x repeat)\n"
    "      --rate HZ             frames per second (default: as fast as possible)\n"
    "      --seed S              seed of sim and --poisson (default 1)\n"
    "      --repeat N            h5 source: replay the dataset N times (default 1)\n"
    "      --poisson             h5 source: write Poisson(pixel value) frames; negative\n"
    "                            (masked) pixels are kept as they are\n"
    "      --path /DATASET       destination (default /entry/instrument/detector/data)\n"
    "      --tile HxW            chunk shape inside a frame (default: the whole frame)\n"
    "      --frames-per-chunk K  frames stored per chunk (default 1)\n"
    "      --fill V              fill value (default 0)\n"
    "      --compress SPEC       none | deflate[:LEVEL[:shuffle|noshuffle]] |\n"
    "                            blosc[:CODEC[:LEVEL[:shuffle|bitshuffle|noshuffle]]]\n"
    "      --threads N           encoder threads (default: number of cores)\n"
    "      --queue-mb M          queue byte budget in MiB (default 256)\n"
    "      --flush-every N       commit every N frames (default 0: off)\n"
    "      --flush-ms T          commit at least every T ms (default 1000)\n"
    "      --locking MODE        on | off | best-effort (default: HDF5_USE_FILE_LOCKING)\n"
    "      --append              add the frames to the dataset of an existing h5stream file\n"
    "                            (closed cleanly, or repaired by `h5stream recover`)\n"
    "  -q, --quiet               no summary on stdout\n"
    "  -h, --help                this help\n"
    "\n"
    "sharded writers (docs/shards.md): under mpirun, or with --rank/--ranks, rank R writes\n"
    "OUT_R.h5 with the frames f where (f / B) mod N = R; rank 0 also writes OUT.h5, a\n"
    "master of virtual datasets over every shard\n"
    "      --rank R --ranks N    this process's rank and the rank count (default: Open\n"
    "                            MPI's OMPI_COMM_WORLD_RANK/SIZE under mpirun)\n"
    "      --block B             frames per round-robin block (default: frames per chunk)\n"
    "      --shard-timeout MS    rank 0 gives up on a shard silent for MS ms (default "
    "60000)\n"
    "\n"
    "Reference: docs/cli.md\n";

static int usage_hint(void)
{
    fprintf(stderr, "usage: h5stream ingest frames SRC -o OUT.h5 [options]\n"
                    "(h5stream ingest frames --help lists the options; docs/cli.md)\n");
    return CLI_EUSAGE;
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cli_errorf("%s", msg);
    return usage_hint();
}

typedef struct {
    const char *src;
    const char *output;
    const char *path;
    int quiet;
    int append;             /* --append: continue an existing file's dataset */
    const char *layout_opt; /* the first layout option given, refused with --append */
    int has_tile;
    unsigned tile_rank;
    uint64_t tile[3];
    uint32_t frames_per_chunk;
    double fill;
    h5s_codec codec;
    h5s_file_options file;
    frame_source_options source;
    shard_args shard;
    const char *master; /* sharded: the master's path (the -o value) */
} ingest_args;

/* HDF5 names: absolute, no empty, "." or ".." parts, no trailing slash. */
static int valid_h5_path(const char *p)
{
    if (p[0] != '/' || p[1] == '\0')
        return 0;
    for (const char *part = p + 1; part;) {
        const char *slash = strchr(part, '/');
        size_t n = slash ? (size_t)(slash - part) : strlen(part);
        if (n == 0 || (n == 1 && part[0] == '.') || (n == 2 && part[0] == '.' && part[1] == '.'))
            return 0;
        part = slash ? slash + 1 : NULL;
    }
    return 1;
}

static int parse_args(ingest_args *a, int argc, char **argv)
{
    enum {
        OPT_SHAPE = 256,
        OPT_DTYPE,
        OPT_RATE,
        OPT_SEED,
        OPT_REPEAT,
        OPT_POISSON,
        OPT_PATH,
        OPT_TILE,
        OPT_FPC,
        OPT_FILL,
        OPT_COMPRESS,
        OPT_THREADS,
        OPT_QUEUE_MB,
        OPT_FLUSH_EVERY,
        OPT_FLUSH_MS,
        OPT_LOCKING,
        OPT_APPEND,
        OPT_RANK,
        OPT_RANKS,
        OPT_BLOCK,
        OPT_SHARD_TIMEOUT
    };
    static const struct option longopts[] = {
        {"output", required_argument, NULL, 'o'},
        {"shape", required_argument, NULL, OPT_SHAPE},
        {"dtype", required_argument, NULL, OPT_DTYPE},
        {"count", required_argument, NULL, 'n'},
        {"rate", required_argument, NULL, OPT_RATE},
        {"seed", required_argument, NULL, OPT_SEED},
        {"repeat", required_argument, NULL, OPT_REPEAT},
        {"poisson", no_argument, NULL, OPT_POISSON},
        {"path", required_argument, NULL, OPT_PATH},
        {"tile", required_argument, NULL, OPT_TILE},
        {"frames-per-chunk", required_argument, NULL, OPT_FPC},
        {"fill", required_argument, NULL, OPT_FILL},
        {"compress", required_argument, NULL, OPT_COMPRESS},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"queue-mb", required_argument, NULL, OPT_QUEUE_MB},
        {"flush-every", required_argument, NULL, OPT_FLUSH_EVERY},
        {"flush-ms", required_argument, NULL, OPT_FLUSH_MS},
        {"locking", required_argument, NULL, OPT_LOCKING},
        {"append", no_argument, NULL, OPT_APPEND},
        {"rank", required_argument, NULL, OPT_RANK},
        {"ranks", required_argument, NULL, OPT_RANKS},
        {"block", required_argument, NULL, OPT_BLOCK},
        {"shard-timeout", required_argument, NULL, OPT_SHARD_TIMEOUT},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    uint64_t u = 0;
    double d = 0.0;
    int c;
    optind = 1;
    opterr = 0;
    /* The leading ':' makes a missing argument come back as ':' rather than '?'. */
    while ((c = getopt_long(argc, argv, ":o:n:qh", longopts, NULL)) != -1) {
        switch (c) {
        case 'o':
            a->output = optarg;
            break;
        case OPT_SHAPE:
            if (cli_parse_shape(optarg, &a->source.rank, a->source.dims) != 0)
                return usage_hint();
            break;
        case OPT_DTYPE:
            if (h5s_dtype_parse(&a->source.dtype, optarg) != 0)
                return usage_error("--dtype: %s", h5s_error_message());
            break;
        case 'n':
            if (cli_parse_u64(optarg, &a->source.count) != 0)
                return usage_error("--count: expected a whole number of frames, got '%s'", optarg);
            a->source.has_count = 1;
            break;
        case OPT_RATE:
            if (cli_parse_double(optarg, &d) != 0 || d <= 0.0)
                return usage_error("--rate: expected frames per second > 0, got '%s'", optarg);
            a->source.rate = d;
            break;
        case OPT_SEED:
            if (cli_parse_u64(optarg, &a->source.seed) != 0)
                return usage_error("--seed: expected a whole number, got '%s'", optarg);
            break;
        case OPT_REPEAT:
            if (cli_parse_u64(optarg, &u) != 0 || u == 0)
                return usage_error("--repeat: expected a whole number >= 1, got '%s'", optarg);
            a->source.repeat = u;
            break;
        case OPT_POISSON:
            a->source.poisson = 1;
            break;
        case OPT_PATH:
            if (!valid_h5_path(optarg))
                return usage_error("--path: expected an absolute HDF5 path such as "
                                   "/entry/instrument/detector/data, got '%s'",
                                   optarg);
            a->path = optarg;
            break;
        case OPT_TILE:
            a->layout_opt = a->layout_opt ? a->layout_opt : "--tile";
            if (cli_parse_shape(optarg, &a->tile_rank, a->tile) != 0)
                return usage_hint();
            a->has_tile = 1;
            break;
        case OPT_FPC:
            a->layout_opt = a->layout_opt ? a->layout_opt : "--frames-per-chunk";
            if (cli_parse_u64(optarg, &u) != 0 || u == 0 || u > UINT32_MAX)
                return usage_error("--frames-per-chunk: expected a whole number >= 1, got "
                                   "'%s'",
                                   optarg);
            a->frames_per_chunk = (uint32_t)u;
            break;
        case OPT_FILL:
            a->layout_opt = a->layout_opt ? a->layout_opt : "--fill";
            if (cli_parse_double(optarg, &a->fill) != 0)
                return usage_error("--fill: expected a number, got '%s'", optarg);
            break;
        case OPT_COMPRESS:
            a->layout_opt = a->layout_opt ? a->layout_opt : "--compress";
            if (h5s_codec_parse(&a->codec, optarg) != 0)
                return usage_error("--compress: %s", h5s_error_message());
            break;
        case OPT_THREADS:
        case OPT_QUEUE_MB:
        case OPT_FLUSH_EVERY:
        case OPT_FLUSH_MS:
            if (cli_engine_option(c == OPT_THREADS       ? "--threads"
                                  : c == OPT_QUEUE_MB    ? "--queue-mb"
                                  : c == OPT_FLUSH_EVERY ? "--flush-every"
                                                         : "--flush-ms",
                                  optarg, &a->file) != 0)
                return usage_hint();
            break;
        case OPT_LOCKING:
            if (strcmp(optarg, "on") == 0)
                a->file.locking = H5S_LOCKING_ON;
            else if (strcmp(optarg, "off") == 0)
                a->file.locking = H5S_LOCKING_OFF;
            else if (strcmp(optarg, "best-effort") == 0)
                a->file.locking = H5S_LOCKING_BEST_EFFORT;
            else
                return usage_error("--locking: expected on, off or best-effort, got '%s'", optarg);
            break;
        case OPT_APPEND:
            a->append = 1;
            break;
        case OPT_RANK:
            if (cli_parse_u64(optarg, &u) != 0 || u >= H5S_MASTER_MAX_RANKS)
                return usage_error("--rank: expected a whole number below %d, got '%s'",
                                   H5S_MASTER_MAX_RANKS, optarg);
            a->shard.rank = (uint32_t)u;
            a->shard.rank_given = 1;
            break;
        case OPT_RANKS:
            if (cli_parse_u64(optarg, &u) != 0 || u == 0 || u > H5S_MASTER_MAX_RANKS)
                return usage_error("--ranks: expected a whole number from 1 to %d, got '%s'",
                                   H5S_MASTER_MAX_RANKS, optarg);
            a->shard.ranks = (uint32_t)u;
            a->shard.ranks_given = 1;
            break;
        case OPT_BLOCK:
            if (cli_parse_u64(optarg, &u) != 0 || u == 0 || u > ((uint64_t)1 << 40))
                return usage_error("--block: expected a whole number of frames >= 1, got '%s'",
                                   optarg);
            a->shard.block = u;
            break;
        case OPT_SHARD_TIMEOUT:
            if (cli_parse_u64(optarg, &u) != 0 || u == 0 || u > UINT_MAX)
                return usage_error("--shard-timeout: expected a whole number of milliseconds "
                                   ">= 1, got '%s'",
                                   optarg);
            a->shard.timeout_ms = (unsigned)u;
            break;
        case 'q':
            a->quiet = 1;
            break;
        case 'h':
            fputs(ingest_usage, stdout);
            return -1;
        case ':':
            return usage_error("option '%s' needs a value", argv[optind - 1]);
        default:
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return usage_error("ingest frames: no source given");
    if (argc - optind > 1)
        return usage_error("ingest frames: one source only; '%s' is extra", argv[optind + 1]);
    a->src = argv[optind];
    if (!a->output)
        return usage_error("ingest frames: no output file given (-o OUT.h5)");
    if (a->append && a->layout_opt)
        return usage_error("%s cannot be used with --append: the dataset keeps the layout it "
                           "was created with",
                           a->layout_opt);
    if (shard_resolve(&a->shard, a->output) != 0)
        return usage_hint();
    if (a->shard.sharded) {
        if (a->append)
            return usage_error("--append cannot be used by sharded writers (mpirun or --ranks)");
        if (!a->shard.block)
            a->shard.block = a->frames_per_chunk ? a->frames_per_chunk : 1;
        a->master = a->output;
        a->output = a->shard.shard_path;
        a->source.shard_rank = a->shard.rank;
        a->source.shard_ranks = a->shard.ranks;
        a->source.shard_block = a->shard.block;
    }
    return 0;
}

/* Checks what depends on the frame shape: before the source opens when --shape gives it
 * (so a shape far too big is refused before a simulator precomputes it), and again with
 * the source's own shape and dtype. A dtype not known yet counts as 1 byte. */
static int check_layout(const ingest_args *a, h5s_dtype dtype, unsigned rank, const uint64_t *dims)
{
    size_t esize = h5s_dtype_size(dtype) ? h5s_dtype_size(dtype) : 1;
    uint64_t chunk_bytes = (uint64_t)esize * (a->frames_per_chunk ? a->frames_per_chunk : 1);
    if (a->has_tile && a->tile_rank != rank) {
        cli_errorf("--tile has %u axes but the frames have %u", a->tile_rank, rank);
        return CLI_EUSAGE;
    }
    for (unsigned i = 0; i < rank; i++) {
        uint64_t t = a->has_tile ? a->tile[i] : dims[i];
        if (t > dims[i]) {
            cli_errorf("--tile: axis %u is %" PRIu64 " but the frames are only %" PRIu64, i, t,
                       dims[i]);
            return CLI_EUSAGE;
        }
        chunk_bytes = t > (UINT64_MAX >> 1) / chunk_bytes ? UINT64_MAX : chunk_bytes * t;
    }
    /* HDF5 1.10 stores a chunk's size in 32 bits. */
    if (chunk_bytes >= ((uint64_t)1 << 32)) {
        cli_errorf("a chunk of %" PRIu64 " bytes is over HDF5's 4 GiB limit; use --tile or "
                   "fewer --frames-per-chunk",
                   chunk_bytes);
        return CLI_EUSAGE;
    }
    return 0;
}

/* Whether out names the same file as in (an existing output is replaced). */
static int same_file(const char *in, const char *out)
{
    struct stat a, b;
    return in && stat(in, &a) == 0 && stat(out, &b) == 0 && a.st_dev == b.st_dev &&
           a.st_ino == b.st_ino;
}

/* Prints s as a Python string literal. */
static void print_py_string(FILE *f, const char *s)
{
    fputc('\'', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '\\' || *p == '\'')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(f, "\\x%02x", *p);
        else
            fputc(*p, f);
    }
    fputc('\'', f);
}

static void print_progress(h5s_file *file, uint64_t frames, size_t frame_bytes, double t0)
{
    h5s_file_stats st;
    double dt = cli_now() - t0;
    if (dt <= 0.0 || h5s_file_stats_get(file, &st) != 0)
        return;
    fprintf(stderr, "\r%" PRIu64 " frames  %.1f frames/s  %.1f MB/s  %" PRIu64 " committed\033[K",
            frames, (double)frames / dt, (double)frames * (double)frame_bytes / MB / dt,
            st.committed);
    fflush(stderr);
}

/* Bytes the dataset occupies on disk, read back from the closed file (the engine's
 * counters die with its handle). Returns -1 when unknown. */
static double stored_bytes(const char *output, const char *path)
{
    double bytes = -1.0;
    hid_t f = H5Fopen(output, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0)
        return bytes;
    hid_t d = H5Dopen2(f, path, H5P_DEFAULT);
    if (d >= 0) {
        bytes = (double)H5Dget_storage_size(d);
        H5Dclose(d);
    }
    H5Fclose(f);
    return bytes;
}

/* frames: written by this run; total: now in the dataset (more with --append). */
static void print_summary(const ingest_args *a, const frame_source *src, uint64_t frames,
                          uint64_t total, int blosc, double seconds)
{
    const char *path = a->path ? a->path : DEFAULT_DATA_PATH;
    size_t fb = frame_source_frame_bytes(src);
    double stored = stored_bytes(a->output, path);
    double raw = (double)frames * (double)fb;
    printf("wrote %" PRIu64 " frames (", frames);
    if (stored >= 0.0)
        printf("%.1f MB stored", stored / MB);
    else
        printf("? MB stored");
    printf(", %.1f MB raw) to %s:%s in %.2f s\n", raw / MB, a->output, path, seconds);
    if (a->append)
        printf("appended: the dataset now holds %" PRIu64 " frames\n", total);

    unsigned rank = frame_source_rank(src);
    const uint64_t *dims = frame_source_dims(src);
    printf("\nopen it with h5py:\n    import h5py\n");
    if (blosc)
        printf("    import hdf5plugin  # Blosc filter (32001)\n");
    printf("    f = h5py.File(");
    print_py_string(stdout, a->output);
    printf(", 'r', swmr=True)\n    data = f[");
    print_py_string(stdout, path);
    printf("]  # shape (%" PRIu64, total);
    for (unsigned i = 0; i < rank; i++)
        printf(", %" PRIu64, dims[i]);
    printf("), %s\n", h5s_dtype_name(frame_source_dtype(src)));
}

/* Prints a frame shape as "uint16 512x512" into buf. */
static const char *describe_frames(char *buf, size_t n, h5s_dtype dtype, unsigned rank,
                                   const uint64_t *dims)
{
    size_t len = (size_t)snprintf(buf, n, "%s ", h5s_dtype_name(dtype));
    for (unsigned i = 0; i < rank && len < n; i++)
        len += (size_t)snprintf(buf + len, n - len, "%s%" PRIu64, i ? "x" : "", dims[i]);
    return buf;
}

/* --append: opens the file, finds the dataset, checks the source's frames fit it. */
static int open_for_append(const ingest_args *a, const h5s_frames_options *want, h5s_file **file,
                           h5s_frames **frames)
{
    const char *path = a->path ? a->path : DEFAULT_DATA_PATH;
    int rc = h5s_file_open_append(file, a->output, &a->file);
    if (rc != 0) {
        cli_error_h5s(a->output, rc);
        return rc;
    }
    h5s_frames_options have;
    rc = h5s_frames_get(frames, *file, a->path);
    if (rc == 0)
        rc = h5s_frames_info(*frames, &have);
    if (rc != 0) {
        cli_error_h5s(path, rc);
        return rc;
    }
    int same = have.dtype == want->dtype && have.rank == want->rank;
    for (unsigned i = 0; same && i < have.rank; i++)
        same = have.dims[i] == want->dims[i];
    if (!same) {
        *frames = NULL; /* nothing was written: no "kept N frames" note */
        char s1[96], s2[96];
        cli_errorf("--append: the source's frames are %s but %s:%s holds %s frames",
                   describe_frames(s1, sizeof s1, want->dtype, want->rank, want->dims), a->output,
                   path, describe_frames(s2, sizeof s2, have.dtype, have.rank, have.dims));
        return H5S_EINVAL;
    }
    rc = h5s_file_start_swmr(*file);
    if (rc != 0)
        cli_error_h5s(a->output, rc);
    return rc;
}

/* Creates the file and declares the dataset. On failure the message is printed and the
 * file (if created) is left for the caller to close. */
static int create_output(const ingest_args *a, const frame_source *src, h5s_file **file,
                         h5s_frames **frames)
{
    h5s_frames_options fo = H5S_FRAMES_OPTIONS_INIT;
    fo.dtype = frame_source_dtype(src);
    fo.rank = frame_source_rank(src);
    memcpy(fo.dims, frame_source_dims(src), sizeof fo.dims);
    if (a->has_tile)
        memcpy(fo.tile, a->tile, sizeof fo.tile);
    fo.frames_per_chunk = a->frames_per_chunk ? a->frames_per_chunk : 1;
    fo.codec = a->codec;
    fo.fill_value = a->fill;

    if (a->append)
        return open_for_append(a, &fo, file, frames);
    int rc = h5s_file_create(file, a->output, &a->file);
    if (rc != 0) {
        cli_error_h5s(a->output, rc);
        return rc;
    }
    rc = h5s_frames_create(frames, *file, a->path, &fo);
    if (rc != 0) {
        cli_error_h5s(a->path ? a->path : DEFAULT_DATA_PATH, rc);
        return rc;
    }
    rc = h5s_file_start_swmr(*file);
    if (rc != 0)
        cli_error_h5s(a->output, rc);
    return rc;
}

static int ingest_frames(int argc, char **argv)
{
    ingest_args a;
    memset(&a, 0, sizeof a);
    h5s_file_options fdefaults = H5S_FILE_OPTIONS_INIT;
    frame_source_options sdefaults = FRAME_SOURCE_OPTIONS_INIT;
    h5s_codec cdefaults = H5S_CODEC_INIT;
    a.file = fdefaults;
    a.source = sdefaults;
    a.codec = cdefaults;
    a.frames_per_chunk = 1;
    a.source.stop = &cli_stop_flag;
    a.shard.timeout_ms = SHARD_DEFAULT_TIMEOUT_MS;

    int rc = parse_args(&a, argc, argv);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;

    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (a.source.rank > 0 && check_layout(&a, a.source.dtype, a.source.rank, a.source.dims) != 0)
        return usage_hint();
    frame_source *src = NULL;
    rc = frame_source_open(&src, a.src, &a.source);
    if (rc != 0)
        return rc == FRAME_SOURCE_EUSAGE ? usage_hint() : CLI_EDATA;
    if ((rc = check_layout(&a, frame_source_dtype(src), frame_source_rank(src),
                           frame_source_dims(src))) != 0) {
        frame_source_close(src);
        return usage_hint();
    }
    if (same_file(frame_source_file(src), a.output)) {
        cli_errorf("the output %s is the source's own file%s", a.output,
                   a.append ? "" : "; it would be replaced");
        frame_source_close(src);
        return CLI_EUSAGE;
    }
    size_t fb = frame_source_frame_bytes(src);
    void *buf = malloc(fb);
    if (!buf) {
        cli_errorf("out of memory for a frame of %zu bytes", fb);
        frame_source_close(src);
        return CLI_EDATA;
    }

    /* The engine's threads inherit the signal mask of the thread that starts them; with
     * SIGINT and SIGTERM blocked there, only this thread sees them, between frames.
     * No SA_RESTART: a read or a rate sleep that a signal interrupts returns early. */
    cli_signals_catch();
    sigset_t old;
    cli_signals_block(&old);
    h5s_file *file = NULL;
    h5s_frames *frames = NULL;
    double started_wall = shard_wall_now();
    rc = create_output(&a, src, &file, &frames);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    h5s_master_options mo = H5S_MASTER_OPTIONS_INIT;
    if (a.shard.sharded) {
        mo.data_path = a.path;
        mo.dtype = frame_source_dtype(src);
        mo.rank = frame_source_rank(src);
        memcpy(mo.dims, frame_source_dims(src), sizeof mo.dims);
        mo.fill_value = a.fill;
        mo.ranks = a.shard.ranks;
        mo.block = a.shard.block;
    }
    /* The live master exists from the start, so readers can follow it at once. */
    if (rc == 0 && a.shard.sharded && a.shard.rank == 0 &&
        shard_master_begin(&a.shard, a.master, &mo) != 0)
        rc = H5S_EIO;

    int status = rc == 0 ? CLI_OK : CLI_EDATA;
    uint64_t n = 0;
    int progress = cli_stderr_is_tty();
    double t0 = cli_now(), next_progress = t0 + 0.25;
    while (status == CLI_OK && !cli_stop_flag) {
        int got = frame_source_next(src, buf);
        if (got == 0)
            break;
        if (got < 0) {
            status = CLI_EDATA;
            break;
        }
        /* A shard's frame_id is the frame's global number, so the master's frame_id
         * reads 0, 1, 2, ... across shards. */
        h5s_frame_meta meta = {a.shard.sharded, frame_source_index(src), 0, 0.0, NULL};
        rc = h5s_frames_append(frames, buf, fb, &meta);
        if (rc != 0) {
            char what[64];
            snprintf(what, sizeof what, "appending frame %" PRIu64, n);
            cli_error_h5s(what, rc);
            status = CLI_EDATA;
            break;
        }
        n++;
        if (progress) {
            double now = cli_now();
            if (now >= next_progress) {
                print_progress(file, n, fb, t0);
                next_progress = now + 0.25;
            }
        }
    }
    if (progress) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }

    uint64_t total = frames ? h5s_frames_count(frames) : n;
    h5s_frames_options layout;
    int blosc = frames && h5s_frames_info(frames, &layout) == 0
                    ? layout.codec.kind == H5S_CODEC_BLOSC
                    : a.codec.kind == H5S_CODEC_BLOSC;
    /* After a writer error nothing more is committed, so this count is the final one. */
    h5s_file_stats before_close;
    memset(&before_close, 0, sizeof before_close);
    if (file)
        h5s_file_stats_get(file, &before_close);
    int close_rc = h5s_file_close(file);
    double seconds = cli_now() - t0;
    if (close_rc != 0 && status == CLI_OK) {
        cli_error_h5s(a.output, close_rc);
        status = CLI_EDATA;
    }
    free(buf);

    /* Rank 0 turns the master final once every shard has closed. It also does so after
     * an error or a signal, as long as its own shard was created: the master then holds
     * what every shard committed. */
    uint64_t master_frames = 0;
    int master_rc = CLI_OK;
    if (a.shard.sharded && a.shard.rank == 0 && frames) {
        master_rc = shard_master_end(&a.shard, a.master, &mo, frame_source_count(src), started_wall,
                                     cli_stop_flag != 0, &master_frames);
        if (master_rc != CLI_OK)
            status = CLI_EDATA;
    }

    const char *path = a.path ? a.path : DEFAULT_DATA_PATH;
    if (cli_stop_flag) {
        cli_errorf("interrupted by %s: wrote %" PRIu64 " frames to %s:%s%s",
                   cli_stop_signal == SIGTERM ? "SIGTERM" : "SIGINT", n, a.output, path,
                   close_rc == 0 ? " (committed, file closed)" : "");
        status = CLI_EDATA;
    } else if (status != CLI_OK && frames && close_rc == 0) {
        /* The source failed, not the writer: close committed every frame appended. */
        cli_errorf("kept the %" PRIu64 " frames written before the error in %s:%s", n, a.output,
                   path);
    } else if (status != CLI_OK && frames) {
        cli_errorf("the writer stopped at the error above: %" PRIu64 " of the %" PRIu64
                   " frames appended were committed before it and are kept in %s:%s (if "
                   "h5py or h5dump cannot open it, run `h5stream recover %s` once there is "
                   "room)",
                   before_close.committed, n, a.output, path, a.output);
    } else if (status == CLI_OK && !a.quiet) {
        print_summary(&a, src, n, total, blosc, seconds);
    }
    if (a.shard.sharded && a.shard.rank == 0 && master_rc == CLI_OK && frames && !a.quiet)
        printf("master %s:%s: %" PRIu64 " frames from %" PRIu32 " shards (blocks of %" PRIu64
               " frames)\n",
               a.master, path, master_frames, a.shard.ranks, a.shard.block);
    frame_source_close(src);
    return status;
}

int cli_ingest(int argc, char **argv)
{
    const char *model = argc > 0 ? argv[0] : "";
    if (strcmp(model, "frames") == 0)
        return ingest_frames(argc, argv);
    if (strcmp(model, "tracts") == 0)
        return cli_ingest_tracts(argc, argv);
    if (strcmp(model, "volumes") == 0)
        return cli_ingest_volumes(argc, argv);
    if (strcmp(model, "marc") == 0)
        return cli_ingest_marc(argc, argv);
    cli_errorf("ingest: unknown model '%s' (expected frames, tracts, volumes or marc)", model);
    fprintf(stderr, "usage: h5stream ingest frames|tracts|volumes|marc SRC... -o OUT.h5 "
                    "[options]\n(docs/cli.md)\n");
    return CLI_EUSAGE;
}
