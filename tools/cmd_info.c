/*
 * cmd_info.c - `h5stream info FILE.h5 [--json]` (docs/cli.md): the format, creator and
 * writer state of a file, and for each frames dataset its dtype, frame shape, chunk
 * shape, codec, committed frames and fill value.
 *
 * It reads HDF5 directly rather than through h5s_reader, because it describes every
 * frames dataset of the file (the reader opens one) and reports storage details (chunk
 * shape, filter pipeline) that the reader does not expose. The layout rules it relies on
 * (frame_id beside the data, /h5stream/writer) are those of docs/format.md.
 */
#include <getopt.h>
#include <hdf5.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"
#include "h5s_codec.h"
#include "h5s_format.h"
#include "info_models.h"

#define INFO_PATH_MAX 1024
#define INFO_MAX_RANK 4
#define INFO_MAX_FILTERS 16

typedef struct {
    int id;
    char name[64];
    unsigned flags;
    size_t ncd;
    unsigned cd[16];
} info_filter;

/* One frames dataset, as found and measured. */
typedef struct {
    char path[INFO_PATH_MAX];
    char marker[INFO_PATH_MAX];
    h5s_dtype dtype;
    char type_desc[64]; /* for types h5stream does not write */
    int rank;           /* dataset rank = frame rank + 1 */
    hsize_t dims[INFO_MAX_RANK];
    hsize_t chunk[INFO_MAX_RANK];
    int chunked;
    size_t virtual_sources; /* a virtual dataset (a shard master): its mappings, else 0 */
    char first_source[256]; /* the first mapping's source file */
    uint64_t committed;
    char codec[128];
    info_filter filters[INFO_MAX_FILTERS];
    int nfilters;
    double fill;
    int has_fill;
    uint64_t storage_bytes;
    /* names of frame_id and of the per-frame datasets h5stream_per_frame lists */
    char per_frame[H5S_FORMAT_PER_FRAME_MAX + 1][256];
    int nper_frame;
} info_frames;

typedef struct {
    hid_t fid;
    info_frames *sets;
    size_t nsets;
    int oom;
} info_scan;

/* ---- Small HDF5 readers ---- */

/* Reads a string attribute of the root group (fixed or variable length). */
static int read_str_attr(hid_t fid, const char *name, char *out, size_t outsize)
{
    out[0] = '\0';
    if (H5Aexists(fid, name) <= 0)
        return -1;
    hid_t a = H5Aopen(fid, name, H5P_DEFAULT);
    hid_t t = a >= 0 ? H5Aget_type(a) : -1;
    int rc = -1;
    if (t >= 0 && H5Tget_class(t) == H5T_STRING) {
        hid_t mt = H5Tcopy(H5T_C_S1);
        if (H5Tis_variable_str(t) > 0) {
            char *s = NULL;
            H5Tset_size(mt, H5T_VARIABLE);
            if (H5Aread(a, mt, &s) >= 0 && s) {
                snprintf(out, outsize, "%s", s);
                rc = 0;
            }
            if (s) {
                hid_t sp = H5Screate(H5S_SCALAR);
                H5Dvlen_reclaim(mt, sp, H5P_DEFAULT, &s);
                H5Sclose(sp);
            }
        } else {
            size_t n = H5Tget_size(t);
            char *buf = calloc(n + 1, 1);
            H5Tset_size(mt, n + 1);
            if (buf && H5Aread(a, mt, buf) >= 0) {
                snprintf(out, outsize, "%s", buf);
                rc = 0;
            }
            free(buf);
        }
        H5Tclose(mt);
    }
    if (t >= 0)
        H5Tclose(t);
    if (a >= 0)
        H5Aclose(a);
    return rc;
}

static int read_int_attr(hid_t fid, const char *name, long long *out)
{
    if (H5Aexists(fid, name) <= 0)
        return -1;
    hid_t a = H5Aopen(fid, name, H5P_DEFAULT);
    int rc = a >= 0 && H5Aread(a, H5T_NATIVE_LLONG, out) >= 0 ? 0 : -1;
    if (a >= 0)
        H5Aclose(a);
    return rc;
}

static int read_status(hid_t fid, h5s_status_row *st)
{
    if (H5Lexists(fid, H5S_STATUS_GROUP, H5P_DEFAULT) <= 0 ||
        H5Lexists(fid, H5S_STATUS_DATASET, H5P_DEFAULT) <= 0)
        return -1;
    hid_t t = h5s_format_status_type();
    hid_t d = H5Dopen2(fid, H5S_STATUS_DATASET, H5P_DEFAULT);
    int rc = d >= 0 && H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, st) >= 0 ? 0 : -1;
    if (d >= 0)
        H5Dclose(d);
    H5Tclose(t);
    return rc;
}

/* Rank and extent of a dataset at name, or -1 if it is not a dataset. */
static int dataset_extent(hid_t loc, const char *name, hsize_t dims[INFO_MAX_RANK], hsize_t *max0)
{
    H5O_info_t oi;
    if (H5Lexists(loc, name, H5P_DEFAULT) <= 0 ||
        H5Oget_info_by_name2(loc, name, &oi, H5O_INFO_BASIC, H5P_DEFAULT) < 0 ||
        oi.type != H5O_TYPE_DATASET)
        return -1;
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0)
        return -1;
    hid_t s = H5Dget_space(d);
    hsize_t maxd[INFO_MAX_RANK] = {0};
    int r = s >= 0 ? H5Sget_simple_extent_ndims(s) : -1;
    if (r < 0 || r > INFO_MAX_RANK || H5Sget_simple_extent_dims(s, dims, maxd) < 0)
        r = -1;
    if (max0)
        *max0 = maxd[0];
    if (s >= 0)
        H5Sclose(s);
    H5Dclose(d);
    return r;
}

/* ---- Codec from the filter pipeline ---- */

/* Describes the pipeline as an --compress spec when it is one h5stream writes (none,
 * [shuffle] deflate, Blosc), else as the list of filter names and ids. */
static void describe_codec(info_frames *fr, hid_t dcpl)
{
    h5s_codec c;
    int known = h5s_codec_from_dcpl(&c, dcpl) == 0;
    if (known && h5s_codec_format(&c, fr->codec, sizeof fr->codec) == 0)
        return;
    size_t len = 0;
    fr->codec[0] = '\0';
    for (int i = 0; i < fr->nfilters && len < sizeof fr->codec; i++) {
        int n =
            snprintf(fr->codec + len, sizeof fr->codec - len, "%s%s(%d)", i ? "," : "",
                     fr->filters[i].name[0] ? fr->filters[i].name : "filter", fr->filters[i].id);
        if (n < 0)
            break;
        len += (size_t)n;
    }
}

static void read_pipeline(hid_t dcpl, info_frames *fr)
{
    int n = H5Pget_nfilters(dcpl);
    fr->nfilters = 0;
    for (int i = 0; i < n && i < INFO_MAX_FILTERS; i++) {
        info_filter *f = &fr->filters[fr->nfilters];
        unsigned cfg = 0;
        f->ncd = sizeof f->cd / sizeof f->cd[0];
        H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)i, &f->flags, &f->ncd, f->cd,
                                         sizeof f->name, f->name, &cfg);
        if (id < 0)
            continue;
        f->id = (int)id;
        if (f->ncd > sizeof f->cd / sizeof f->cd[0])
            f->ncd = sizeof f->cd / sizeof f->cd[0];
        fr->nfilters++;
    }
    describe_codec(fr, dcpl);
}

/* ---- Finding and measuring frames datasets ---- */

static void measure(hid_t fid, info_frames *fr)
{
    hid_t d = H5Dopen2(fid, fr->path, H5P_DEFAULT);
    if (d < 0)
        return;
    hid_t t = H5Dget_type(d), s = H5Dget_space(d), dcpl = H5Dget_create_plist(d);
    fr->dtype = h5s_format_dtype_of(t);
    if (fr->dtype == H5S_DTYPE_INVALID)
        snprintf(fr->type_desc, sizeof fr->type_desc, "class %d, %zu bytes", (int)H5Tget_class(t),
                 H5Tget_size(t));
    fr->rank = H5Sget_simple_extent_dims(s, fr->dims, NULL);
    fr->chunked = H5Pget_layout(dcpl) == H5D_CHUNKED;
    if (H5Pget_layout(dcpl) == H5D_VIRTUAL &&
        H5Pget_virtual_count(dcpl, &fr->virtual_sources) >= 0 && fr->virtual_sources > 0)
        H5Pget_virtual_filename(dcpl, 0, fr->first_source, sizeof fr->first_source);
    else
        fr->virtual_sources = 0;
    if (fr->chunked)
        H5Pget_chunk(dcpl, INFO_MAX_RANK, fr->chunk);
    read_pipeline(dcpl, fr);
    if (fr->virtual_sources) /* the master stores nothing itself: its shards do */
        snprintf(fr->codec, sizeof fr->codec, "the shards' own (a virtual dataset)");
    H5D_fill_value_t fv = H5D_FILL_VALUE_UNDEFINED;
    if (H5Pfill_value_defined(dcpl, &fv) >= 0 && fv != H5D_FILL_VALUE_UNDEFINED &&
        fr->dtype != H5S_DTYPE_INVALID)
        fr->has_fill = H5Pget_fill_value(dcpl, H5T_NATIVE_DOUBLE, &fr->fill) >= 0;
    fr->storage_bytes = H5Dget_storage_size(d);
    H5Pclose(dcpl);
    H5Sclose(s);
    H5Tclose(t);
    H5Dclose(d);
}

/* Keeps one frames dataset that h5s_format_find_frames found, measured. */
static int add_found(const h5s_format_frames *found, void *payload)
{
    info_scan *sc = payload;
    hsize_t mdims[INFO_MAX_RANK];
    info_frames *grown = realloc(sc->sets, (sc->nsets + 1) * sizeof *grown);
    if (!grown) {
        sc->oom = 1;
        return -1;
    }
    sc->sets = grown;
    info_frames *fr = &sc->sets[sc->nsets];
    memset(fr, 0, sizeof *fr);
    snprintf(fr->path, sizeof fr->path, "%s", found->data);
    snprintf(fr->marker, sizeof fr->marker, "%s", found->marker);
    if (dataset_extent(sc->fid, fr->marker, mdims, NULL) != 1)
        return 0;
    /* Marker first, as every reader of a live file must: the payload is never shorter. */
    fr->committed = mdims[0];
    measure(sc->fid, fr);
    snprintf(fr->per_frame[fr->nper_frame++], sizeof fr->per_frame[0], "%s",
             strrchr(fr->marker, '/') + 1);
    for (unsigned i = 0; i < found->nper_frame; i++)
        snprintf(fr->per_frame[fr->nper_frame++], sizeof fr->per_frame[0], "%s",
                 strrchr(found->per_frame[i], '/') + 1);
    sc->nsets++;
    return 0;
}

static int scan(info_scan *sc, const char *file)
{
    return h5s_format_find_frames(sc->fid, file, add_found, sc) == 0 ? 0 : -1;
}

/* ---- Output ---- */

static const char *state_name(int has_status, const h5s_status_row *st)
{
    if (!has_status)
        return "unknown";
    return st->state == 1   ? "closed"
           : st->state == 2 ? "closed after a writer error"
           : st->state == 0 ? "writing"
                            : "invalid";
}

static void iso_time(double t, char *out, size_t outsize)
{
    time_t s = (time_t)floor(t);
    struct tm tm;
    if (t <= 0 || !gmtime_r(&s, &tm) || !strftime(out, outsize, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(out, outsize, "never");
}

static void shape_str(const hsize_t *d, int n, char *out, size_t outsize)
{
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < n && len < outsize; i++) {
        int w =
            snprintf(out + len, outsize - len, "%s%llu", i ? "x" : "", (unsigned long long)d[i]);
        if (w < 0)
            break;
        len += (size_t)w;
    }
}

static uint64_t raw_bytes(const info_frames *fr)
{
    uint64_t n = fr->dtype != H5S_DTYPE_INVALID ? h5s_dtype_size(fr->dtype) : 0;
    for (int i = 0; i < fr->rank; i++)
        n *= fr->dims[i];
    return n;
}

typedef struct {
    const char *path;
    int swmr;
    char format[64], creator[256], models[128];
    long long version;
    int has_format, has_version, has_status;
    h5s_status_row status;
} info_file;

static void print_text(const info_file *f, const info_scan *sc, const info_columns *cols)
{
    char when[64];
    printf("file: %s\n", f->path);
    if (f->has_format)
        printf("format: %s %lld\n", f->format, f->has_version ? f->version : 0LL);
    else
        printf("format: not an h5stream file (no root attribute h5stream_format)\n");
    if (f->creator[0])
        printf("creator: %s\n", f->creator);
    if (f->models[0])
        printf("models: %s\n", f->models);
    printf("opened: %s\n",
           f->swmr ? "SWMR read (the file is marked open for SWMR write)" : "read-only");
    iso_time(f->has_status ? f->status.heartbeat : 0, when, sizeof when);
    if (f->has_status)
        printf("writer: %s; %" PRIu64 " items committed; last commit %s\n",
               state_name(1, &f->status), f->status.committed, when);
    else
        printf("writer: unknown (no %s)\n", H5S_STATUS_DATASET);
    if (f->swmr && f->has_status && f->status.state == 0)
        printf("note: if the writer is no longer running, run `h5stream recover %s`\n", f->path);
    printf("frames datasets: %zu\n", sc->nsets);
    for (size_t i = 0; i < sc->nsets; i++) {
        const info_frames *fr = &sc->sets[i];
        char frame[96], chunk[400];
        shape_str(fr->dims + 1, fr->rank - 1, frame, sizeof frame);
        if (fr->chunked)
            shape_str(fr->chunk, fr->rank, chunk, sizeof chunk);
        else if (fr->virtual_sources)
            snprintf(chunk, sizeof chunk,
                     "virtual: %zu mappings of shard files (%s, ...; docs/shards.md)",
                     fr->virtual_sources, fr->first_source);
        else
            snprintf(chunk, sizeof chunk, "not chunked");
        printf("\nframes dataset %s\n", fr->path);
        printf("  dtype: %s\n",
               fr->dtype != H5S_DTYPE_INVALID ? h5s_dtype_name(fr->dtype) : fr->type_desc);
        printf("  frame shape: %s\n", frame);
        printf("  chunk shape: %s\n", chunk);
        printf("  codec: %s\n", fr->codec);
        printf("  committed frames: %" PRIu64 "\n", fr->committed);
        printf("  stored frames: %llu\n", (unsigned long long)fr->dims[0]);
        if (fr->has_fill)
            printf("  fill value: %.17g\n", fr->fill);
        else
            printf("  fill value: undefined\n");
        printf("  per-frame datasets:");
        for (int j = 0; j < fr->nper_frame; j++)
            printf("%s %s", j ? "," : "", fr->per_frame[j]);
        printf("\n");
        uint64_t raw = raw_bytes(fr);
        if (fr->storage_bytes && raw)
            printf("  stored bytes: %" PRIu64 " (raw / stored = %.2f)\n", fr->storage_bytes,
                   (double)raw / (double)fr->storage_bytes);
        else
            printf("  stored bytes: %" PRIu64 "\n", fr->storage_bytes);
    }
    info_columns_print(cols);
}

static json_t *json_dims(const hsize_t *d, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_integer((json_int_t)d[i]));
    return a;
}

static int print_json(const info_file *f, const info_scan *sc, const info_columns *cols)
{
    json_t *root = json_object();
    json_object_set_new(root, "file", json_string(f->path));
    json_object_set_new(root, "format", f->has_format ? json_string(f->format) : json_null());
    json_object_set_new(root, "format_version",
                        f->has_version ? json_integer(f->version) : json_null());
    json_object_set_new(root, "creator", f->creator[0] ? json_string(f->creator) : json_null());
    json_object_set_new(root, "models", f->models[0] ? json_string(f->models) : json_null());
    json_object_set_new(root, "opened", json_string(f->swmr ? "swmr-read" : "read-only"));
    json_t *w = json_object();
    json_object_set_new(w, "state", json_string(state_name(f->has_status, &f->status)));
    if (f->has_status) {
        json_object_set_new(w, "heartbeat", json_real(f->status.heartbeat));
        json_object_set_new(w, "committed", json_integer((json_int_t)f->status.committed));
    }
    json_object_set_new(root, "writer", w);
    json_t *arr = json_array();
    for (size_t i = 0; i < sc->nsets; i++) {
        const info_frames *fr = &sc->sets[i];
        json_t *o = json_object();
        json_object_set_new(o, "path", json_string(fr->path));
        json_object_set_new(o, "dtype",
                            json_string(fr->dtype != H5S_DTYPE_INVALID ? h5s_dtype_name(fr->dtype)
                                                                       : fr->type_desc));
        json_object_set_new(o, "frame_shape", json_dims(fr->dims + 1, fr->rank - 1));
        json_object_set_new(o, "chunk_shape",
                            fr->chunked ? json_dims(fr->chunk, fr->rank) : json_null());
        json_object_set_new(o, "virtual_mappings", json_integer((json_int_t)fr->virtual_sources));
        json_object_set_new(o, "codec", json_string(fr->codec));
        json_t *filters = json_array();
        for (int j = 0; j < fr->nfilters; j++) {
            json_t *fo = json_object();
            json_t *cd = json_array();
            for (size_t k = 0; k < fr->filters[j].ncd; k++)
                json_array_append_new(cd, json_integer(fr->filters[j].cd[k]));
            json_object_set_new(fo, "id", json_integer(fr->filters[j].id));
            json_object_set_new(fo, "name", json_string(fr->filters[j].name));
            json_object_set_new(fo, "cd_values", cd);
            json_array_append_new(filters, fo);
        }
        json_object_set_new(o, "filters", filters);
        json_object_set_new(o, "committed", json_integer((json_int_t)fr->committed));
        json_object_set_new(o, "stored_frames", json_integer((json_int_t)fr->dims[0]));
        json_object_set_new(o, "fill_value", fr->has_fill ? json_real(fr->fill) : json_null());
        json_t *pf = json_array();
        for (int j = 0; j < fr->nper_frame; j++)
            json_array_append_new(pf, json_string(fr->per_frame[j]));
        json_object_set_new(o, "per_frame", pf);
        json_object_set_new(o, "storage_bytes", json_integer((json_int_t)fr->storage_bytes));
        json_object_set_new(o, "raw_bytes", json_integer((json_int_t)raw_bytes(fr)));
        json_array_append_new(arr, o);
    }
    json_object_set_new(root, "frames", arr);
    json_object_set_new(root, "model_datasets", info_columns_json(cols));
    int rc = json_dumpf(root, stdout, JSON_INDENT(2));
    json_decref(root);
    fputc('\n', stdout);
    return rc;
}

/* ---- Command ---- */

static const char info_usage[] = "usage: h5stream info FILE.h5 [--json]\n";

/* Innermost HDF5 error description, for a message when the open fails. */
static hid_t open_file(const char *path, int *swmr, char *why, size_t whysize)
{
    /* A plain read-only open fails while the superblock says "open for SWMR write", the
     * sign of a live writer (or a dead one): then read the way live readers must. */
    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    *swmr = 0;
    if (fid >= 0)
        return fid;
    char first[256];
    cli_hdf5_reason(first, sizeof first);
    hid_t fapl = h5s_format_swmr_read_fapl();
    fid = H5Fopen(path, H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, fapl);
    if (fapl >= 0)
        H5Pclose(fapl);
    if (fid >= 0) {
        *swmr = 1;
        return fid;
    }
    H5Eclear2(H5E_DEFAULT);
    snprintf(why, whysize, "%s", first[0] ? first : "HDF5 cannot open it");
    return H5I_INVALID_HID;
}

int cli_info(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    int json = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (c == 'j') {
            json = 1;
        } else if (c == 'h') {
            fputs(info_usage, stdout);
            return CLI_OK;
        } else {
            cli_errorf("info: unknown option '%s'", argv[optind - 1]);
            fputs(info_usage, stderr);
            return CLI_EUSAGE;
        }
    }
    if (argc - optind != 1) {
        cli_errorf("info: expected one FILE.h5");
        fputs(info_usage, stderr);
        return CLI_EUSAGE;
    }
    info_file f;
    memset(&f, 0, sizeof f);
    f.path = argv[optind];
    struct stat st;
    if (stat(f.path, &st) != 0) {
        cli_errorf("info: %s: no such file", f.path);
        return CLI_EDATA;
    }
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    /* Blosc is not needed to describe a pipeline, but registering it lets HDF5 name it. */
    h5s_filters_init();
    char why[256];
    hid_t fid = open_file(f.path, &f.swmr, why, sizeof why);
    if (fid < 0) {
        cli_errorf("info: %s: cannot open as HDF5: %s", f.path, why);
        return CLI_EDATA;
    }
    f.has_format = read_str_attr(fid, "h5stream_format", f.format, sizeof f.format) == 0;
    f.has_version = read_int_attr(fid, "h5stream_format_version", &f.version) == 0;
    read_str_attr(fid, "creator", f.creator, sizeof f.creator);
    read_str_attr(fid, "h5stream_models", f.models, sizeof f.models);
    f.has_status = read_status(fid, &f.status) == 0;

    info_scan sc = {fid, NULL, 0, 0};
    int rc = scan(&sc, f.path);
    if (rc != 0 || sc.oom) {
        cli_errorf("info: %s: cannot list its datasets%s", f.path, sc.oom ? ": out of memory" : "");
        free(sc.sets);
        H5Fclose(fid);
        return CLI_EDATA;
    }
    info_columns cols;
    if (info_columns_scan(fid, &cols) != 0) {
        cli_errorf("info: %s: out of memory listing its datasets", f.path);
        info_columns_free(&cols);
        free(sc.sets);
        H5Fclose(fid);
        return CLI_EDATA;
    }
    if (json)
        rc = print_json(&f, &sc, &cols);
    else
        print_text(&f, &sc, &cols);
    /* Described as far as it goes; then what it lacks, and exit 1 (a data error). */
    info_problems problems;
    info_layout_check(fid, &problems);
    info_columns_free(&cols);
    free(sc.sets);
    H5Fclose(fid);
    if (fflush(stdout) != 0 || rc != 0) {
        cli_errorf("info: cannot write the output");
        return CLI_EDATA;
    }
    for (int i = 0; i < problems.n; i++)
        cli_errorf("info: %s: %s", f.path, problems.text[i]);
    return problems.n ? CLI_EDATA : CLI_OK;
}
