/*
 * info_models.c - the part of `h5stream info` that lists the datasets of the tracts,
 * volumes and MARC models (docs/cli.md, "info"): each dataset under /tracts, /volumes,
 * /marc and /obs_meta with its shape, element type, codec and stored bytes. Their layouts
 * are groups of columns (docs/format.md, "Models"): the first axis of every one grows.
 * Also the layout check that `info` and `recover` share (info_layout_check).
 */
#include <hdf5.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5s_codec.h"
#include "h5s_format.h"
#include "h5s_volumes_layout.h"
#include "info_models.h"

static const char *const model_roots[] = {"/tracts", "/volumes", "/marc", "/obs_meta"};

static void describe_type(hid_t t, char *out, size_t n)
{
    h5s_dtype d = h5s_format_dtype_of(t);
    H5T_class_t cls = H5Tget_class(t);
    if (d != H5S_DTYPE_INVALID && (cls == H5T_INTEGER || cls == H5T_FLOAT))
        snprintf(out, n, "%s", h5s_dtype_name(d));
    else if (cls == H5T_COMPOUND)
        snprintf(out, n, "compound of %d fields, %zu bytes", H5Tget_nmembers(t), H5Tget_size(t));
    else if (cls == H5T_STRING)
        snprintf(out, n, "string of %zu bytes", H5Tget_size(t));
    else
        snprintf(out, n, "class %d, %zu bytes", (int)cls, H5Tget_size(t));
}

static int add_dataset(info_columns *out, hid_t fid, const char *path)
{
    hid_t d = H5Dopen2(fid, path, H5P_DEFAULT);
    if (d < 0)
        return 0;
    info_column *grown = realloc(out->cols, (out->n + 1) * sizeof *grown);
    if (!grown) {
        H5Dclose(d);
        return -1;
    }
    out->cols = grown;
    info_column *c = &out->cols[out->n++];
    memset(c, 0, sizeof *c);
    snprintf(c->path, sizeof c->path, "%s", path);
    hid_t t = H5Dget_type(d), s = H5Dget_space(d), dcpl = H5Dget_create_plist(d);
    int rank = H5Sget_simple_extent_ndims(s);
    c->rank = rank > 0 && rank <= INFO_COLUMN_RANK ? rank : 0;
    if (c->rank)
        H5Sget_simple_extent_dims(s, c->dims, NULL);
    describe_type(t, c->type, sizeof c->type);
    h5s_codec codec;
    if (H5Pget_layout(dcpl) != H5D_CHUNKED)
        snprintf(c->codec, sizeof c->codec, "not chunked");
    else if (h5s_codec_from_dcpl(&codec, dcpl) != 0 ||
             h5s_codec_format(&codec, c->codec, sizeof c->codec) != 0)
        snprintf(c->codec, sizeof c->codec, "%d filters", H5Pget_nfilters(dcpl));
    c->storage = H5Dget_storage_size(d);
    H5Pclose(dcpl);
    H5Sclose(s);
    H5Tclose(t);
    H5Dclose(d);
    return 0;
}

typedef struct {
    info_columns *out;
    hid_t fid;
    const char *root;
    int failed;
} visit_state;

static herr_t visit(hid_t obj, const char *name, const H5O_info_t *info, void *payload)
{
    (void)obj;
    visit_state *v = payload;
    if (info->type != H5O_TYPE_DATASET || strcmp(name, ".") == 0)
        return 0;
    char path[INFO_COLUMN_PATH];
    snprintf(path, sizeof path, "%s/%s", v->root, name);
    if (add_dataset(v->out, v->fid, path) != 0) {
        v->failed = 1;
        return -1;
    }
    return 0;
}

int info_columns_scan(hid_t fid, info_columns *out)
{
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < sizeof model_roots / sizeof model_roots[0]; i++) {
        const char *root = model_roots[i];
        if (!h5s_format_path_exists(fid, root))
            continue;
        H5O_info_t oi;
        if (H5Oget_info_by_name2(fid, root, &oi, H5O_INFO_BASIC, H5P_DEFAULT) < 0)
            continue;
        if (oi.type == H5O_TYPE_DATASET) {
            if (add_dataset(out, fid, root) != 0)
                return -1;
            continue;
        }
        hid_t g = H5Gopen2(fid, root, H5P_DEFAULT);
        if (g < 0)
            continue;
        visit_state v = {out, fid, root, 0};
        H5Ovisit2(g, H5_INDEX_NAME, H5_ITER_INC, visit, &v, H5O_INFO_BASIC);
        H5Gclose(g);
        if (v.failed)
            return -1;
    }
    return 0;
}

static void shape(const info_column *c, char *out, size_t n)
{
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < c->rank && len < n; i++) {
        int k =
            snprintf(out + len, n - len, "%s%llu", i ? " x " : "", (unsigned long long)c->dims[i]);
        if (k < 0)
            break;
        len += (size_t)k;
    }
    if (c->rank == 0)
        snprintf(out, n, "scalar");
}

void info_columns_print(const info_columns *c)
{
    if (c->n == 0)
        return;
    printf("\nmodel datasets: %zu (the first axis grows; each model's marker says what is "
           "committed)\n",
           c->n);
    for (size_t i = 0; i < c->n; i++) {
        char s[160];
        shape(&c->cols[i], s, sizeof s);
        printf("  %s: %s, %s, %s, %" PRIu64 " bytes stored\n", c->cols[i].path, s, c->cols[i].type,
               c->cols[i].codec, c->cols[i].storage);
    }
}

json_t *info_columns_json(const info_columns *c)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < c->n; i++) {
        const info_column *col = &c->cols[i];
        json_t *o = json_object(), *dims = json_array();
        for (int k = 0; k < col->rank; k++)
            json_array_append_new(dims, json_integer((json_int_t)col->dims[k]));
        json_object_set_new(o, "path", json_string(col->path));
        json_object_set_new(o, "shape", dims);
        json_object_set_new(o, "type", json_string(col->type));
        json_object_set_new(o, "codec", json_string(col->codec));
        json_object_set_new(o, "storage_bytes", json_integer((json_int_t)col->storage));
        json_array_append_new(arr, o);
    }
    return arr;
}

void info_columns_free(info_columns *c)
{
    free(c->cols);
    c->cols = NULL;
    c->n = 0;
}

/* ---- Layout check: what a damaged or foreign file lacks ---- */

static void problem(info_problems *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void problem(info_problems *p, const char *fmt, ...)
{
    if (p->n >= INFO_MAX_PROBLEMS)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->text[p->n++], sizeof p->text[0], fmt, ap);
    va_end(ap);
}

/* Each path in list must be there: the writer declares them all before SWMR starts. */
static void require(hid_t fid, info_problems *p, const char *model, const char *const *list,
                    size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (h5s_format_path_exists(fid, list[i]) <= 0)
            problem(p, "%s is missing (part of the %s model's layout, docs/format.md)", list[i],
                    model);
}

static herr_t check_collection(hid_t g, const char *name, const H5L_info_t *info, void *payload)
{
    (void)info;
    info_problems *p = payload;
    static const char *const parts[] = {"obs", "voxels"};
    for (size_t i = 0; i < 2; i++) {
        char rel[INFO_COLUMN_PATH];
        snprintf(rel, sizeof rel, "%s/%s", name, parts[i]);
        if (H5Lexists(g, rel, H5P_DEFAULT) <= 0)
            problem(p, "%s/%s is missing (a volumes collection has obs and voxels)",
                    H5S_VOLUMES_GROUP, rel);
    }
    H5Eclear2(H5E_DEFAULT);
    return 0;
}

/* 1 when the comma-separated list holds word. */
static int has_word(const char *list, const char *word)
{
    size_t n = strlen(word);
    for (const char *at = list; (at = strstr(at, word)) != NULL; at += n)
        if ((at == list || at[-1] == ',') && (at[n] == '\0' || at[n] == ','))
            return 1;
    return 0;
}

/* A fixed-length string attribute of the root group; "" when absent or of another kind. */
static void root_string(hid_t fid, const char *name, char *out, size_t size)
{
    out[0] = '\0';
    hid_t a = H5Aexists(fid, name) > 0 ? H5Aopen(fid, name, H5P_DEFAULT) : H5I_INVALID_HID;
    hid_t t = a >= 0 ? H5Aget_type(a) : H5I_INVALID_HID;
    if (t >= 0 && H5Tget_class(t) == H5T_STRING && !H5Tis_variable_str(t) &&
        H5Tget_size(t) < size && H5Aread(a, t, out) >= 0)
        out[H5Tget_size(t)] = '\0';
    else
        out[0] = '\0';
    if (t >= 0)
        H5Tclose(t);
    if (a >= 0)
        H5Aclose(a);
}

static int count_frames(const h5s_format_frames *frames, void *payload)
{
    (void)frames;
    ++*(size_t *)payload;
    return 0;
}

void info_layout_check(hid_t fid, info_problems *p)
{
    p->n = 0;
    char format[64], models[256];
    root_string(fid, "h5stream_format", format, sizeof format);
    root_string(fid, "h5stream_models", models, sizeof models);
    if (strcmp(format, H5S_FORMAT_NAME) != 0) {
        problem(p, "not an h5stream file (no root attribute h5stream_format = \"%s\")",
                H5S_FORMAT_NAME);
        H5Eclear2(H5E_DEFAULT);
        return;
    }
    if (h5s_format_path_exists(fid, H5S_STATUS_DATASET) <= 0)
        problem(p, "%s is missing (every h5stream file has its writer status)", H5S_STATUS_DATASET);
    size_t nframes = 0;
    if (has_word(models, "frames") &&
        h5s_format_find_frames(fid, "", count_frames, &nframes) == 0 && nframes == 0) {
        char marker[H5S_FORMAT_PATH_MAX];
        h5s_format_sidecar(marker, sizeof marker, H5S_FRAMES_DEFAULT_PATH, H5S_SIDECAR_FRAME_ID);
        int data = h5s_format_path_exists(fid, H5S_FRAMES_DEFAULT_PATH) > 0;
        int mark = h5s_format_path_exists(fid, marker) > 0;
        if (data && !mark)
            problem(p, "%s is missing (the commit marker of %s)", marker, H5S_FRAMES_DEFAULT_PATH);
        else if (mark && !data)
            problem(p, "%s is missing (its commit marker %s is there)", H5S_FRAMES_DEFAULT_PATH,
                    marker);
        else
            problem(p, "it lists the frames model but has no frames dataset (a dataset with a "
                       "frame_id beside it)");
    }
    if (has_word(models, "tracts")) {
        static const char *const t[] = {"/tracts/positions", "/tracts/offsets"};
        require(fid, p, "tracts", t, 2);
    }
    if (has_word(models, "volumes")) {
        static const char *const v[] = {H5S_VOLUMES_GROUP, H5S_OBS_META_PATH};
        require(fid, p, "volumes", v, 2);
        hid_t g = h5s_format_path_exists(fid, H5S_VOLUMES_GROUP) > 0
                      ? H5Gopen2(fid, H5S_VOLUMES_GROUP, H5P_DEFAULT)
                      : H5I_INVALID_HID;
        if (g >= 0) {
            H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, check_collection, p);
            H5Gclose(g);
        }
    }
    if (has_word(models, "marc")) {
        static const char *const m[] = {
            "/marc/records",          "/marc/offsets",          "/marc/index",
            "/marc/rejected/records", "/marc/rejected/offsets", "/marc/rejected/index",
            "/marc/rejected/errors"};
        require(fid, p, "marc", m, sizeof m / sizeof m[0]);
    }
    H5Eclear2(H5E_DEFAULT);
}
