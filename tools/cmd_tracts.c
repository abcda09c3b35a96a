/*
 * cmd_tracts.c - the tracts model's commands (docs/tracts.md):
 *   h5stream ingest tracts SRC... -o OUT.h5 [options]   TCK, TRK or TRX into /tracts, streaming
 *   h5stream export FILE.h5... --to trx|trx-dir|tck|trk -o OUT [options]   (shards merged)
 *   h5stream tail FILE.h5 /tracts [-f] [--json]          one line per committed streamline
 * The benchmark (`bench tracts`) lives in tracts_bench.c.
 */
#include <errno.h>
#include <getopt.h>
#include <hdf5.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "h5s_codec.h"
#include "h5s_tractio.h"
#include "h5s_tracts.h"
#include "h5s_tracts_reader.h"
#include "h5stream.h"

#define MAX_EXPORTS 8

/* "trx", "trx-dir", "tck", "trk" -> export options; -1 for anything else. */
static int parse_export_format(const char *fmt, h5s_tracts_export_options *o)
{
    if (strcmp(fmt, "trx") == 0) {
        o->format = H5S_TRACT_TRX;
        o->trx_mode = H5S_TRX_ZIP_STORE;
    } else if (strcmp(fmt, "trx-dir") == 0) {
        o->format = H5S_TRACT_TRX;
        o->trx_mode = H5S_TRX_DIR_CLEAN;
    } else if (strcmp(fmt, "tck") == 0) {
        o->format = H5S_TRACT_TCK;
    } else if (strcmp(fmt, "trk") == 0) {
        o->format = H5S_TRACT_TRK;
    } else {
        return -1;
    }
    return 0;
}

/* --compression stored|deflate[:LEVEL] */
static int parse_compression(const char *s, h5s_tracts_export_options *o)
{
    if (strcmp(s, "stored") == 0 || strcmp(s, "store") == 0) {
        o->trx_mode = H5S_TRX_ZIP_STORE;
        return 0;
    }
    if (strncmp(s, "deflate", 7) != 0 || (s[7] != '\0' && s[7] != ':'))
        return -1;
    o->trx_mode = H5S_TRX_ZIP_DEFLATE;
    o->deflate_level = 0;
    if (s[7] == ':') {
        uint64_t v;
        if (cli_parse_u64(s + 8, &v) != 0 || v < 1 || v > 9)
            return -1;
        o->deflate_level = (int)v;
    }
    return 0;
}

static void print_export(const char *out, const h5s_tracts_export_report *rep, double secs)
{
    printf("exported %" PRIu64 " streamlines (%" PRIu64 " points) from %" PRIu64
           " file(s) to %s in %.2f s\n",
           rep->streamlines, rep->vertices, rep->shards, out, secs);
}

/* ------------------------------------------------------------------------- ingest */

static const char ingest_usage[] =
    "usage: h5stream ingest tracts SRC... -o OUT.h5 [options]\n"
    "\n"
    "SRC: .tck (MRtrix), .trk (TrackVis), .trx (zip archive or folder); several are\n"
    "concatenated and must share the affine, dimensions and dps/dpv fields.\n"
    "\n"
    "options:\n"
    "  -o, --output OUT.h5       file to create (replaced if it exists); required\n"
    "      --dtype T             positions float16 | float32 | float64 (default: the\n"
    "                            source's, float32 for TCK and TRK)\n"
    "      --compress SPEC       none | deflate[:LEVEL[:shuffle|noshuffle]] |\n"
    "                            blosc[:CODEC[:LEVEL[:shuffle|bitshuffle|noshuffle]]]\n"
    "      --threads N           encoder threads (default: number of cores)\n"
    "      --queue-mb M          queue byte budget in MiB (default 256)\n"
    "      --flush-every N       commit every N streamlines (default 0: off)\n"
    "      --flush-ms T          commit at least every T ms (default 1000)\n"
    "      --rate N              streamlines per second (replays a file as a live stream)\n"
    "      --repeat N            push the sources N times (default 1)\n"
    "      --export FORMAT:PATH  export at close; FORMAT trx | trx-dir | tck | trk\n"
    "                            (may be given up to 8 times)\n"
    "  -q, --quiet               no summary on stdout\n"
    "  -h, --help                this help\n"
    "\n"
    "Reference: docs/tracts.md\n";

typedef struct {
    const char **srcs;
    int n_srcs;
    const char *output;
    h5s_dtype dtype; /* INVALID = the source's */
    h5s_codec codec;
    h5s_file_options file;
    double rate;
    uint64_t repeat;
    int quiet;
    int n_exports;
    const char *export_path[MAX_EXPORTS];
    h5s_tracts_export_options export_opts[MAX_EXPORTS];
} ingest_args;

static int ingest_parse(ingest_args *a, int argc, char **argv)
{
    enum {
        OPT_DTYPE = 256,
        OPT_COMPRESS,
        OPT_THREADS,
        OPT_QUEUE_MB,
        OPT_FLUSH_EVERY,
        OPT_FLUSH_MS,
        OPT_RATE,
        OPT_REPEAT,
        OPT_EXPORT
    };
    static const struct option longopts[] = {
        {"output", required_argument, NULL, 'o'},
        {"dtype", required_argument, NULL, OPT_DTYPE},
        {"compress", required_argument, NULL, OPT_COMPRESS},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"queue-mb", required_argument, NULL, OPT_QUEUE_MB},
        {"flush-every", required_argument, NULL, OPT_FLUSH_EVERY},
        {"flush-ms", required_argument, NULL, OPT_FLUSH_MS},
        {"rate", required_argument, NULL, OPT_RATE},
        {"repeat", required_argument, NULL, OPT_REPEAT},
        {"export", required_argument, NULL, OPT_EXPORT},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *u = ingest_usage;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:qh", longopts, NULL)) != -1) {
        switch (c) {
        case 'o':
            a->output = optarg;
            break;
        case OPT_DTYPE:
            if (strcmp(optarg, "float16") == 0)
                a->dtype = H5S_FLOAT16;
            else if (strcmp(optarg, "float32") == 0)
                a->dtype = H5S_FLOAT32;
            else if (strcmp(optarg, "float64") == 0)
                a->dtype = H5S_FLOAT64;
            else
                return cli_usage_error(u, "--dtype: expected float16, float32 or float64, got '%s'",
                                       optarg);
            break;
        case OPT_COMPRESS:
            if (h5s_codec_parse(&a->codec, optarg) != 0)
                return cli_usage_error(u, "--compress: %s", h5s_error_message());
            break;
        case OPT_THREADS:
        case OPT_QUEUE_MB:
        case OPT_FLUSH_EVERY:
        case OPT_FLUSH_MS:
            if (cli_engine_option(c == OPT_THREADS       ? "--threads"
                                  : c == OPT_QUEUE_MB    ? "--queue-mb"
                                  : c == OPT_FLUSH_EVERY ? "--flush-every"
                                                         : "--flush-ms",
                                  optarg, &a->file) != 0) {
                fputs(u, stderr);
                return CLI_EUSAGE;
            }
            break;
        case OPT_RATE:
            if (cli_parse_double(optarg, &a->rate) != 0 || a->rate <= 0)
                return cli_usage_error(u, "--rate: expected streamlines per second > 0, got '%s'",
                                       optarg);
            break;
        case OPT_REPEAT:
            if (cli_parse_u64(optarg, &a->repeat) != 0 || a->repeat == 0)
                return cli_usage_error(u, "--repeat: expected a whole number >= 1, got '%s'",
                                       optarg);
            break;
        case OPT_EXPORT: {
            const char *colon = strchr(optarg, ':');
            char fmt[16];
            if (a->n_exports == MAX_EXPORTS)
                return cli_usage_error(u, "--export: at most %d", MAX_EXPORTS);
            h5s_tracts_export_options eo = H5S_TRACTS_EXPORT_OPTIONS_INIT;
            if (!colon || colon == optarg || (size_t)(colon - optarg) >= sizeof fmt || !colon[1])
                return cli_usage_error(u, "--export: expected FORMAT:PATH, got '%s'", optarg);
            snprintf(fmt, sizeof fmt, "%.*s", (int)(colon - optarg), optarg);
            if (parse_export_format(fmt, &eo) != 0)
                return cli_usage_error(u, "--export: format '%s' (trx, trx-dir, tck or trk)", fmt);
            a->export_opts[a->n_exports] = eo;
            a->export_path[a->n_exports++] = colon + 1;
            break;
        }
        case 'q':
            a->quiet = 1;
            break;
        case 'h':
            fputs(ingest_usage, stdout);
            return -1;
        case ':':
            return cli_usage_error(u, "option '%s' needs a value", argv[optind - 1]);
        default:
            return cli_usage_error(u, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return cli_usage_error(u, "ingest tracts: no source given");
    if (!a->output)
        return cli_usage_error(u, "ingest tracts: no output file given (-o OUT.h5)");
    a->srcs = (const char **)(argv + optind);
    a->n_srcs = argc - optind;
    return 0;
}

static int near(double a, double b)
{
    return fabs(a - b) <= 1e-5 * (1.0 + fabs(a) + fabs(b));
}

/* What the sources together declare: the first header, plus groups and dpg of all. */
typedef struct {
    h5s_tract_header h; /* copy of the first source's scalars and fields */
    h5s_tract_field dps[H5S_TRACTS_MAX_FIELDS], dpv[H5S_TRACTS_MAX_FIELDS];
    char groups[H5S_TRACTS_MAX_GROUPS][H5S_TRACT_NAME_MAX];
    size_t n_groups;
    h5s_tract_dpg *dpg; /* values copied (raw only), owned */
    int *dpg_set;       /* 1 when taken from a source where the group is non-empty */
    size_t n_dpg;
} ingest_plan;

static void plan_free(ingest_plan *p)
{
    for (size_t i = 0; i < p->n_dpg; i++)
        free(p->dpg[i].raw);
    free(p->dpg);
    free(p->dpg_set);
}

static int fields_equal(const h5s_tract_field *a, size_t na, const h5s_tract_field *b, size_t nb)
{
    if (na != nb)
        return 0;
    for (size_t i = 0; i < na; i++)
        if (strcmp(a[i].name, b[i].name) || a[i].dtype != b[i].dtype || a[i].ncols != b[i].ncols)
            return 0;
    return 1;
}

static int group_count(const h5s_tract_header *h, const char *name)
{
    for (size_t i = 0; i < h->n_groups; i++)
        if (strcmp(h->groups[i].name, name) == 0)
            return h->groups[i].count != 0;
    return 0;
}

/* Adds one source's header to the plan; the first one sets it. 0, or CLI_EDATA (printed). */
static int plan_add(ingest_plan *p, const h5s_tract_header *h, const char *src, const char *first)
{
    if (p->h.format == H5S_TRACT_UNKNOWN) {
        p->h = *h;
        if (h->n_dps > H5S_TRACTS_MAX_FIELDS || h->n_dpv > H5S_TRACTS_MAX_FIELDS) {
            cli_errorf("%s: more than %d dps or dpv fields", src, H5S_TRACTS_MAX_FIELDS);
            return CLI_EDATA;
        }
        if (h->n_dps)
            memcpy(p->dps, h->dps, h->n_dps * sizeof *h->dps);
        if (h->n_dpv)
            memcpy(p->dpv, h->dpv, h->n_dpv * sizeof *h->dpv);
        p->h.dps = p->dps;
        p->h.dpv = p->dpv;
        p->h.groups = NULL;
        p->h.dpg = NULL;
    } else {
        int same = 1;
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++)
                same &= near(p->h.voxel_to_rasmm[i][j], h->voxel_to_rasmm[i][j]);
        if (!same || memcmp(p->h.dimensions, h->dimensions, sizeof h->dimensions) != 0) {
            cli_errorf("%s: its VOXEL_TO_RASMM or DIMENSIONS differ from %s's; concatenated "
                       "sources must share the reference space",
                       src, first);
            return CLI_EDATA;
        }
        if (!fields_equal(p->dps, p->h.n_dps, h->dps, h->n_dps) ||
            !fields_equal(p->dpv, p->h.n_dpv, h->dpv, h->n_dpv)) {
            cli_errorf("%s: its dps/dpv fields (names, types, widths) differ from %s's", src,
                       first);
            return CLI_EDATA;
        }
    }
    for (size_t g = 0; g < h->n_groups; g++) {
        size_t i = 0;
        while (i < p->n_groups && strcmp(p->groups[i], h->groups[g].name) != 0)
            i++;
        if (i == p->n_groups) {
            if (p->n_groups == H5S_TRACTS_MAX_GROUPS) {
                cli_errorf("%s: more than %d groups in all", src, H5S_TRACTS_MAX_GROUPS);
                return CLI_EDATA;
            }
            snprintf(p->groups[p->n_groups++], H5S_TRACT_NAME_MAX, "%s", h->groups[g].name);
        }
    }
    for (size_t d = 0; d < h->n_dpg; d++) {
        const h5s_tract_dpg *src_d = &h->dpg[d];
        size_t bytes = src_d->n_values * h5s_dtype_size(src_d->dtype);
        int nonempty = group_count(h, src_d->group);
        size_t i = 0;
        while (i < p->n_dpg &&
               (strcmp(p->dpg[i].group, src_d->group) || strcmp(p->dpg[i].name, src_d->name)))
            i++;
        if (i < p->n_dpg) {
            h5s_tract_dpg *have = &p->dpg[i];
            if (!nonempty)
                continue;
            int equal = have->dtype == src_d->dtype && have->n_values == src_d->n_values &&
                        memcmp(have->raw, src_d->raw, bytes) == 0;
            if (p->dpg_set[i] && !equal) {
                cli_errorf("%s: dpg %s/%s differs from an earlier source's (sources must agree "
                           "on the dpg of a group both have streamlines in)",
                           src, src_d->group, src_d->name);
                return CLI_EDATA;
            }
            if (p->dpg_set[i])
                continue;
            free(have->raw);
            have->raw = NULL;
        } else {
            void *a = realloc(p->dpg, (p->n_dpg + 1) * sizeof *p->dpg);
            if (a)
                p->dpg = a;
            void *b = a ? realloc(p->dpg_set, (p->n_dpg + 1) * sizeof *p->dpg_set) : NULL;
            if (b)
                p->dpg_set = b;
            if (!a || !b) {
                cli_errorf("out of memory");
                return CLI_EDATA;
            }
            i = p->n_dpg++;
        }
        p->dpg[i] = *src_d;
        p->dpg[i].values = NULL;
        p->dpg[i].raw = malloc(bytes ? bytes : 1);
        if (!p->dpg[i].raw) {
            cli_errorf("out of memory");
            return CLI_EDATA;
        }
        memcpy(p->dpg[i].raw, src_d->raw, bytes);
        p->dpg_set[i] = nonempty;
    }
    return 0;
}

/* float64 values -> n values of dtype at dst (native little-endian), element i taken at
 * src[i / k * stride + i % k]. */
static void from_f64(void *dst, h5s_dtype dtype, const double *src, size_t rows, size_t k,
                     size_t stride)
{
#define FROM_F64(T)                                                                                \
    do {                                                                                           \
        T *d = dst;                                                                                \
        for (size_t r = 0; r < rows; r++)                                                          \
            for (size_t c = 0; c < k; c++)                                                         \
                d[r * k + c] = (T)src[r * stride + c];                                             \
    } while (0)
    switch (dtype) {
    case H5S_INT8:
        FROM_F64(int8_t);
        break;
    case H5S_UINT8:
        FROM_F64(uint8_t);
        break;
    case H5S_INT16:
        FROM_F64(int16_t);
        break;
    case H5S_UINT16:
        FROM_F64(uint16_t);
        break;
    case H5S_INT32:
        FROM_F64(int32_t);
        break;
    case H5S_UINT32:
        FROM_F64(uint32_t);
        break;
    case H5S_INT64:
        FROM_F64(int64_t);
        break;
    case H5S_UINT64:
        FROM_F64(uint64_t);
        break;
    case H5S_FLOAT32:
        FROM_F64(float);
        break;
    case H5S_FLOAT64:
        FROM_F64(double);
        break;
    case H5S_FLOAT16: {
        uint16_t *d = dst;
        for (size_t r = 0; r < rows; r++)
            for (size_t c = 0; c < k; c++)
                d[r * k + c] = h5s_half_from_float((float)src[r * stride + c]);
        break;
    }
    default:
        break;
    }
#undef FROM_F64
}

/* Per-streamline conversion buffers of the declared fields. */
typedef struct {
    const ingest_plan *plan;
    void *dps_buf[H5S_TRACTS_MAX_FIELDS], *dpv_buf[H5S_TRACTS_MAX_FIELDS];
    size_t dpv_cap; /* points dpv_buf can hold */
    const void *dps_ptr[H5S_TRACTS_MAX_FIELDS], *dpv_ptr[H5S_TRACTS_MAX_FIELDS];
} field_bufs;

static int bufs_init(field_bufs *b, const ingest_plan *p)
{
    memset(b, 0, sizeof *b);
    b->plan = p;
    for (size_t i = 0; i < p->h.n_dps; i++) {
        b->dps_buf[i] = calloc(p->dps[i].ncols, h5s_dtype_size(p->dps[i].dtype));
        if (!b->dps_buf[i])
            return -1;
        b->dps_ptr[i] = b->dps_buf[i];
    }
    return 0;
}

static void bufs_free(field_bufs *b)
{
    for (size_t i = 0; i < H5S_TRACTS_MAX_FIELDS; i++) {
        free(b->dps_buf[i]);
        free(b->dpv_buf[i]);
    }
}

static int bufs_fill(field_bufs *b, const h5s_tract_streamline *s)
{
    const ingest_plan *p = b->plan;
    for (size_t i = 0; i < p->h.n_dps && s->dps; i++)
        from_f64(b->dps_buf[i], p->dps[i].dtype, s->dps + p->dps[i].col, 1, p->dps[i].ncols,
                 p->h.dps_width);
    if (p->h.n_dpv && s->n_points > b->dpv_cap) {
        size_t cap = s->n_points * 2;
        for (size_t i = 0; i < p->h.n_dpv; i++) {
            void *q =
                realloc(b->dpv_buf[i], cap * p->dpv[i].ncols * h5s_dtype_size(p->dpv[i].dtype));
            if (!q)
                return -1;
            b->dpv_buf[i] = q;
            b->dpv_ptr[i] = q;
        }
        b->dpv_cap = cap;
    }
    for (size_t i = 0; i < p->h.n_dpv && s->dpv; i++)
        from_f64(b->dpv_buf[i], p->dpv[i].dtype, s->dpv + p->dpv[i].col, s->n_points,
                 p->dpv[i].ncols, p->h.dpv_width);
    return 0;
}

typedef struct {
    h5s_tracts *t;
    unsigned group_index[H5S_TRACTS_MAX_GROUPS]; /* source group -> declared group */
    uint64_t base;
    uint32_t *tmp;
    int err;
} group_push;

static int push_group_chunk(size_t group, const uint32_t *indices, size_t n, void *payload)
{
    group_push *g = payload;
    for (size_t i = 0; i < n; i++)
        g->tmp[i] = (uint32_t)(indices[i] + g->base);
    int rc = h5s_tracts_group_add(g->t, g->group_index[group], g->tmp, n);
    if (rc)
        g->err = rc;
    return rc;
}

static void sleep_until(double t)
{
    double dt = t - cli_now();
    if (dt <= 0)
        return;
    struct timespec req = {(time_t)dt, (long)((dt - floor(dt)) * 1e9)};
    nanosleep(&req, NULL);
}

/* Streams one source into t. Returns 0 or CLI_EDATA (printed). */
static int push_source(const char *src, const ingest_plan *plan, h5s_tracts *t, field_bufs *fb,
                       uint64_t *count, uint64_t *points, const ingest_args *a, double t0,
                       h5s_file *file)
{
    h5s_tract_reader *r = NULL;
    int rc = h5s_tract_open(&r, src);
    if (rc) {
        cli_error_h5s("ingest tracts", rc);
        return CLI_EDATA;
    }
    uint64_t base = *count;
    h5s_tract_streamline s;
    int progress = cli_stderr_is_tty();
    double next_progress = cli_now() + 0.25;
    int status = CLI_OK;
    while (!cli_stop_flag && (rc = h5s_tract_next(r, &s)) == 1) {
        if (a->rate > 0)
            sleep_until(t0 + (double)*count / a->rate);
        if (bufs_fill(fb, &s) != 0) {
            cli_errorf("out of memory for streamline %" PRIu64 " of %s", s.index, src);
            status = CLI_EDATA;
            break;
        }
        rc = h5s_tracts_push(t, s.points, s.n_points, plan->h.n_dps ? fb->dps_ptr : NULL,
                             plan->h.n_dpv ? fb->dpv_ptr : NULL, NULL);
        if (rc) {
            char what[1200];
            snprintf(what, sizeof what, "%s: streamline %" PRIu64, src, s.index);
            cli_error_h5s(what, rc);
            status = CLI_EDATA;
            break;
        }
        (*count)++;
        *points += s.n_points;
        if (progress && (*count & 1023) == 0 && cli_now() >= next_progress) {
            h5s_file_stats st;
            double dt = cli_now() - t0;
            if (h5s_file_stats_get(file, &st) == 0 && dt > 0)
                fprintf(stderr, "\r%" PRIu64 " streamlines  %.0f/s  %" PRIu64 " committed\033[K",
                        *count, (double)*count / dt, st.committed);
            next_progress = cli_now() + 0.25;
        }
    }
    if (status == CLI_OK && rc < 0) {
        cli_error_h5s("ingest tracts", rc);
        status = CLI_EDATA;
    }
    if (status == CLI_OK && !cli_stop_flag) {
        const h5s_tract_header *h = h5s_tract_reader_header(r);
        group_push g;
        memset(&g, 0, sizeof g);
        g.t = t;
        g.base = base;
        for (size_t i = 0; i < h->n_groups; i++)
            for (size_t j = 0; j < plan->n_groups; j++)
                if (strcmp(h->groups[i].name, plan->groups[j]) == 0)
                    g.group_index[i] = (unsigned)j;
        g.tmp = malloc(65536 * sizeof *g.tmp);
        if (!g.tmp) {
            cli_errorf("out of memory");
            status = CLI_EDATA;
        } else if (h->n_groups && base + *count > UINT32_MAX) {
            cli_errorf("%s: groups cannot name more than 2^32 streamlines", src);
            status = CLI_EDATA;
        } else if ((rc = h5s_tract_read_groups(r, push_group_chunk, &g)) != 0) {
            cli_error_h5s(src, rc);
            status = CLI_EDATA;
        }
        free(g.tmp);
    }
    h5s_tract_close(r);
    return status;
}

static int declare(h5s_tracts **out, h5s_file *file, const ingest_plan *p, const ingest_args *a)
{
    h5s_tracts_options o = H5S_TRACTS_OPTIONS_INIT;
    o.positions_dtype = a->dtype != H5S_DTYPE_INVALID ? a->dtype : p->h.positions_dtype;
    if (o.positions_dtype != H5S_FLOAT16 && o.positions_dtype != H5S_FLOAT64)
        o.positions_dtype = H5S_FLOAT32;
    for (int i = 0; i < 16; i++)
        o.voxel_to_rasmm[i] = p->h.voxel_to_rasmm[i / 4][i % 4];
    memcpy(o.dimensions, p->h.dimensions, sizeof o.dimensions);
    o.codec = a->codec;
    int rc = h5s_tracts_create(out, file, &o);
    for (size_t i = 0; rc == 0 && i < p->h.n_dps; i++)
        rc = h5s_tracts_add_dps(*out, p->dps[i].name, p->dps[i].dtype, p->dps[i].ncols, NULL);
    for (size_t i = 0; rc == 0 && i < p->h.n_dpv; i++)
        rc = h5s_tracts_add_dpv(*out, p->dpv[i].name, p->dpv[i].dtype, p->dpv[i].ncols, NULL);
    for (size_t i = 0; rc == 0 && i < p->n_groups; i++)
        rc = h5s_tracts_add_group(*out, p->groups[i], NULL);
    for (size_t i = 0; rc == 0 && i < p->n_dpg; i++)
        rc = h5s_tracts_add_dpg(*out, p->dpg[i].group, p->dpg[i].name, p->dpg[i].dtype,
                                (uint32_t)p->dpg[i].n_values);
    return rc;
}

int cli_ingest_tracts(int argc, char **argv)
{
    ingest_args a;
    memset(&a, 0, sizeof a);
    h5s_file_options fdef = H5S_FILE_OPTIONS_INIT;
    h5s_codec cdef = H5S_CODEC_INIT;
    a.file = fdef;
    a.codec = cdef;
    a.repeat = 1;
    int rc = ingest_parse(&a, argc, argv);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);

    /* Pass 1: every header, so the whole schema is declared before SWMR starts. */
    ingest_plan plan;
    memset(&plan, 0, sizeof plan);
    for (int i = 0; i < a.n_srcs; i++) {
        h5s_tract_reader *r = NULL;
        rc = h5s_tract_open(&r, a.srcs[i]);
        if (rc) {
            cli_error_h5s("ingest tracts", rc);
            plan_free(&plan);
            return CLI_EDATA;
        }
        rc = plan_add(&plan, h5s_tract_reader_header(r), a.srcs[i], a.srcs[0]);
        h5s_tract_close(r);
        if (rc) {
            plan_free(&plan);
            return CLI_EDATA;
        }
    }
    field_bufs fb;
    if (bufs_init(&fb, &plan) != 0) {
        cli_errorf("out of memory");
        bufs_free(&fb);
        plan_free(&plan);
        return CLI_EDATA;
    }

    cli_signals_catch();
    sigset_t old;
    cli_signals_block(&old);
    h5s_file *file = NULL;
    h5s_tracts *t = NULL;
    rc = h5s_file_create(&file, a.output, &a.file);
    if (rc == 0)
        rc = declare(&t, file, &plan, &a);
    if (rc == 0)
        rc = h5s_file_start_swmr(file);
    /* dpg values go through the writer thread, so after the start. */
    for (size_t i = 0; rc == 0 && i < plan.n_dpg; i++)
        rc = h5s_tracts_set_dpg(t, plan.dpg[i].group, plan.dpg[i].name, plan.dpg[i].raw);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    int status = CLI_OK;
    if (rc) {
        cli_error_h5s(a.output, rc);
        status = CLI_EDATA;
    }

    double t0 = cli_now();
    uint64_t count = 0, points = 0;
    for (uint64_t rep = 0; status == CLI_OK && rep < a.repeat && !cli_stop_flag; rep++)
        for (int i = 0; status == CLI_OK && i < a.n_srcs && !cli_stop_flag; i++)
            status = push_source(a.srcs[i], &plan, t, &fb, &count, &points, &a, t0, file);
    if (cli_stderr_is_tty()) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }
    /* After a writer error nothing more is committed, so this count is the final one. */
    h5s_file_stats before_close;
    memset(&before_close, 0, sizeof before_close);
    if (file)
        h5s_file_stats_get(file, &before_close);
    int close_rc = h5s_file_close(file);
    double secs = cli_now() - t0;
    if (close_rc != 0 && status == CLI_OK) {
        cli_error_h5s(a.output, close_rc);
        status = CLI_EDATA;
    }
    bufs_free(&fb);
    plan_free(&plan);
    if (cli_stop_flag) {
        cli_errorf("interrupted by %s: wrote %" PRIu64 " streamlines to %s:/tracts%s",
                   cli_stop_signal == SIGTERM ? "SIGTERM" : "SIGINT", count, a.output,
                   close_rc == 0 ? " (committed, file closed)" : "");
        return CLI_EDATA;
    }
    if (status != CLI_OK) {
        if (file && count && close_rc == 0)
            cli_errorf("kept the %" PRIu64 " streamlines pushed before the error in %s:/tracts",
                       count, a.output);
        else if (file && count)
            cli_errorf("the writer stopped at the error above: %" PRIu64 " of the %" PRIu64
                       " streamlines pushed were committed before it and are kept in %s:/tracts "
                       "(if h5py or h5dump cannot open it, run `h5stream recover %s` once there "
                       "is room)",
                       before_close.committed, count, a.output, a.output);
        return status;
    }
    if (!a.quiet)
        printf("wrote %" PRIu64 " streamlines (%" PRIu64 " points) from %d source(s) to "
               "%s:/tracts in %.2f s\n",
               count, points, a.n_srcs, a.output, secs);
    for (int i = 0; i < a.n_exports; i++) {
        const char *in[1] = {a.output};
        h5s_tracts_export_report rep;
        double e0 = cli_now();
        rc = h5s_tracts_export(in, 1, a.export_path[i], &a.export_opts[i], &rep);
        if (rc) {
            cli_error_h5s(a.export_path[i], rc);
            return CLI_EDATA;
        }
        if (!a.quiet)
            print_export(a.export_path[i], &rep, cli_now() - e0);
    }
    return CLI_OK;
}

/* ------------------------------------------------------------------------- export */

static const char export_usage[] =
    "usage: h5stream export FILE.h5... --to trx|trx-dir|tck|trk -o OUT [options]\n"
    "\n"
    "Exports the committed streamlines of /tracts; several files are shards of one\n"
    "tractogram, merged in the order given (docs/tracts.md, \"Shards\").\n"
    "options:\n"
    "  -o, --output OUT              file (trx, tck, trk) or folder (trx-dir) to write\n"
    "      --compression C           trx: stored (default) | deflate[:LEVEL]\n"
    "      --persistent              trx-dir: write into an existing folder, keeping\n"
    "                                what else it holds (default: replace the folder)\n"
    "      --block-mb M              bytes read from HDF5 per block (default 1)\n"
    "  -q, --quiet                   no summary on stdout\n"
    "  -h, --help                    this help\n";

int cli_export_tracts(int argc, char **argv, const char *fmt)
{
    enum { OPT_TO = 256, OPT_COMPRESSION, OPT_PERSISTENT, OPT_BLOCK };
    static const struct option longopts[] = {
        {"output", required_argument, NULL, 'o'},
        {"to", required_argument, NULL, OPT_TO},
        {"compression", required_argument, NULL, OPT_COMPRESSION},
        {"persistent", no_argument, NULL, OPT_PERSISTENT},
        {"block-mb", required_argument, NULL, OPT_BLOCK},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    h5s_tracts_export_options o = H5S_TRACTS_EXPORT_OPTIONS_INIT;
    const char *u = export_usage, *out = NULL, *compression = NULL;
    int persistent = 0, quiet = 0, c;
    uint64_t v;
    if (parse_export_format(fmt, &o) != 0)
        return cli_usage_error(u, "export: unknown tracts format '%s'", fmt);
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:qh", longopts, NULL)) != -1) {
        switch (c) {
        case 'o':
            out = optarg;
            break;
        case OPT_TO:
            break;
        case OPT_COMPRESSION:
            compression = optarg;
            break;
        case OPT_PERSISTENT:
            persistent = 1;
            break;
        case OPT_BLOCK:
            if (cli_parse_u64(optarg, &v) != 0 || v == 0 || v > 4096)
                return cli_usage_error(u, "--block-mb: expected 1 to 4096, got '%s'", optarg);
            o.block_bytes = (size_t)v << 20;
            break;
        case 'q':
            quiet = 1;
            break;
        case 'h':
            fputs(export_usage, stdout);
            return CLI_OK;
        case ':':
            return cli_usage_error(u, "option '%s' needs a value", argv[optind - 1]);
        default:
            return cli_usage_error(u, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (!out)
        return cli_usage_error(u, "export: no output given (-o OUT)");
    if (optind >= argc)
        return cli_usage_error(u, "export: no input file given");
    if (compression && strcmp(fmt, "trx") != 0)
        return cli_usage_error(u, "--compression applies to --to trx only");
    if (compression && parse_compression(compression, &o) != 0)
        return cli_usage_error(u, "--compression: expected stored or deflate[:1-9], got '%s'",
                               compression);
    if (persistent && strcmp(fmt, "trx-dir") != 0)
        return cli_usage_error(u, "--persistent applies to --to trx-dir only");
    if (persistent)
        o.trx_mode = H5S_TRX_DIR_PERSISTENT;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    h5s_tracts_export_report rep;
    double t0 = cli_now();
    int rc = h5s_tracts_export((const char *const *)(argv + optind), (size_t)(argc - optind), out,
                               &o, &rep);
    if (rc) {
        cli_error_h5s("export", rc);
        return rc == H5S_EINVAL ? CLI_EUSAGE : CLI_EDATA;
    }
    if (!quiet)
        print_export(out, &rep, cli_now() - t0);
    return CLI_OK;
}

/* --------------------------------------------------------------------------- tail */

static const char tail_usage[] =
    "usage: h5stream tail FILE.h5 /tracts [-f] [--interval MS] [--timeout MS] [--json]\n"
    "\n"
    "Prints one line per committed streamline: INDEX points=N length_mm=L\n"
    "  -f, --follow     wait for the file and its writer, then print new streamlines until\n"
    "                   the writer closes the file\n"
    "  --interval MS    poll interval (default 100)\n"
    "  --timeout MS     how long to wait for the file to become readable (default 60000\n"
    "                   with -f, 0 without)\n"
    "  --json           one JSON object per line: index, points, length_mm\n";

#define TAIL_BATCH 4096

int cli_tail_tracts(int argc, char **argv, const char *path)
{
    const char *file = NULL;
    int follow = 0, json = 0, timeout = -2;
    uint64_t interval = 100, v;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *val = NULL;
        if (strncmp(arg, "--interval", 10) == 0 || strncmp(arg, "--timeout", 9) == 0) {
            const char *eq = strchr(arg, '=');
            val = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
            if (!val || cli_parse_u64(val, &v) != 0 || v > INT_MAX)
                return cli_usage_error(tail_usage, "tail: %s needs milliseconds", arg);
            if (arg[2] == 'i')
                interval = v ? v : 1;
            else
                timeout = (int)v;
        } else if (strcmp(arg, "-f") == 0 || strcmp(arg, "--follow") == 0) {
            follow = 1;
        } else if (strcmp(arg, "--json") == 0) {
            json = 1;
        } else if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            fputs(tail_usage, stdout);
            return CLI_OK;
        } else if (arg[0] == '-') {
            return cli_usage_error(tail_usage, "tail: unknown option '%s'", arg);
        } else if (!file) {
            file = arg;
        }
    }
    if (!file)
        return cli_usage_error(tail_usage, "tail: no file given");
    if (strcmp(path, "/tracts") != 0 && strcmp(path, "/tracts/") != 0 &&
        strcmp(path, "/tracts/offsets") != 0 && strcmp(path, "/tracts/positions") != 0)
        return cli_usage_error(tail_usage, "tail: %s: the tracts model is shown as /tracts", path);
    h5s_tracts_reader_options o = H5S_TRACTS_READER_OPTIONS_INIT;
    o.open_timeout_ms = timeout != -2 ? timeout : follow ? 60000 : 0;
    o.poll_ms = (unsigned)interval;
    h5s_tracts_reader *r = NULL;
    int rc = h5s_tracts_reader_open(&r, file, &o);
    if (rc) {
        cli_error_h5s("tail", rc);
        return CLI_EDATA;
    }
    uint64_t next = 0, count = h5s_tracts_reader_count(r);
    int status = CLI_OK;
    for (;;) {
        while (next < count && status == CLI_OK) {
            uint64_t n = count - next < TAIL_BATCH ? count - next : TAIL_BATCH;
            h5s_tracts_batch b;
            rc = h5s_tracts_reader_read(r, next, n, H5S_TRACTS_READ_POINTS, &b);
            if (rc) {
                cli_error_h5s("tail", rc);
                status = CLI_EDATA;
                break;
            }
            for (uint64_t i = 0; i < n; i++) {
                uint64_t p0 = b.offsets[i], p1 = b.offsets[i + 1];
                double len = 0;
                for (uint64_t p = p0 + 1; p < p1; p++) {
                    const float *a = b.points + (p - 1) * 3, *c = b.points + p * 3;
                    double dx = c[0] - a[0], dy = c[1] - a[1], dz = c[2] - a[2];
                    len += sqrt(dx * dx + dy * dy + dz * dz);
                }
                if (json)
                    printf("{\"index\":%" PRIu64 ",\"points\":%" PRIu64 ",\"length_mm\":%.6g}\n",
                           next + i, p1 - p0, len);
                else
                    printf("%" PRIu64 " points=%" PRIu64 " length_mm=%.3f\n", next + i, p1 - p0,
                           len);
            }
            next += n;
            if (fflush(stdout) != 0 || ferror(stdout)) {
                cli_errorf("tail: cannot write to standard output: %s", strerror(errno));
                status = CLI_EDATA;
            }
        }
        if (status != CLI_OK || !follow)
            break;
        h5s_writer_state st = h5s_tracts_reader_writer_state(r);
        if (st == H5S_WRITER_CLOSED)
            break;
        if (st == H5S_WRITER_FAILED) {
            cli_errorf("tail: the writer of %s stopped after an error; its %" PRIu64
                       " committed streamlines are whole",
                       file, next);
            status = CLI_EDATA;
            break;
        }
        int limit = st == H5S_WRITER_UNKNOWN ? (timeout >= 0 ? timeout : 60000) : -1;
        rc = h5s_tracts_reader_wait(r, next, limit, &count);
        if (rc == H5S_ETIMEDOUT && st == H5S_WRITER_UNKNOWN)
            break;
        if (rc != 0 && rc != H5S_ETIMEDOUT) {
            cli_error_h5s("tail", rc);
            status = CLI_EDATA;
            break;
        }
    }
    h5s_tracts_reader_close(r);
    return status;
}
