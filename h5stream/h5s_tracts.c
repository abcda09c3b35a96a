/*
 * h5s_tracts.c - the tracts model (h5s_tracts.h): streamlines as one group of columns,
 * positions and dpv per point, dps and offsets (the marker) per streamline, groups'
 * indices beside them, dpg as small fixed datasets written in place.
 *
 * A push converts its points outside the lock (so producers convert in parallel), then
 * appends the streamline's rows to every column under the group lock, so all columns
 * agree on streamline order.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5s_codec.h"
#include "h5s_column.h"
#include "h5s_engine.h"
#include "h5s_error.h"
#include "h5s_format.h"
#include "h5s_tracts.h"

#define NAME_MAX_LEN 64
/* Points converted on the stack up to this many bytes; longer streamlines use the heap. */
#define STACK_POINT_BYTES 24576

typedef struct {
    char name[NAME_MAX_LEN + 1];
    h5s_dtype dtype;
    uint32_t ncols;
    size_t row_bytes;
    h5s_column *col;
} tr_field;

typedef struct {
    char name[NAME_MAX_LEN + 1];
    h5s_column *col;
} tr_group;

typedef struct {
    char path[3 * (NAME_MAX_LEN + 1) + 16];
    char group[NAME_MAX_LEN + 1], name[NAME_MAX_LEN + 1];
    h5s_dtype dtype;
    uint32_t ncols;
} tr_dpg;

struct h5s_tracts {
    h5s_file *file;
    h5s_group *g;
    h5s_dtype pdtype;
    h5s_codec codec;
    h5s_column *positions, *offsets;
    tr_field dps[H5S_TRACTS_MAX_FIELDS], dpv[H5S_TRACTS_MAX_FIELDS];
    unsigned ndps, ndpv;
    tr_group groups[H5S_TRACTS_MAX_GROUPS];
    unsigned ngroups;
    tr_dpg *dpg;
    size_t ndpg;
    uint64_t nv; /* points so far, under the group lock */
    atomic_uint_fast64_t count;
};

static void tracts_free(void *obj)
{
    h5s_tracts *t = obj;
    free(t->dpg);
    free(t);
}

static int write_attr(hid_t obj, const char *name, hid_t ftype, hid_t mtype, int rank,
                      const hsize_t *dims, const void *value)
{
    hid_t space = H5Screate_simple(rank, dims, NULL);
    hid_t a = H5Acreate2(obj, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t st = a >= 0 ? H5Awrite(a, mtype, value) : -1;
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(space);
    return st < 0 ? -1 : 0;
}

static int check_options(const h5s_tracts_options *o, const char *path)
{
    if (o->version != H5S_TRACTS_OPTIONS_VERSION)
        return h5s_error_set(H5S_EINVAL, "%s: tracts options version %u, expected %u", path,
                             o->version, H5S_TRACTS_OPTIONS_VERSION);
    if (o->positions_dtype != H5S_FLOAT16 && o->positions_dtype != H5S_FLOAT32 &&
        o->positions_dtype != H5S_FLOAT64)
        return h5s_error_set(H5S_EINVAL,
                             "%s: positions dtype %s (expected float16, float32 or float64)", path,
                             h5s_dtype_name(o->positions_dtype));
    for (int i = 0; i < 3; i++)
        if (o->dimensions[i] < 1)
            return h5s_error_set(H5S_EINVAL, "%s: DIMENSIONS[%d] = %d (expected >= 1)", path, i,
                                 (int)o->dimensions[i]);
    for (int i = 0; i < 16; i++)
        if (!isfinite(o->voxel_to_rasmm[i]))
            return h5s_error_set(H5S_EINVAL, "%s: VOXEL_TO_RASMM[%d][%d] is not finite", path,
                                 i / 4, i % 4);
    return h5s_codec_validate(&o->codec);
}

static h5s_column *add_column(h5s_tracts *t, const char *path, hid_t type, uint64_t ncols,
                              uint64_t chunk_rows, int marker, int *rc)
{
    h5s_column_options o = H5S_COLUMN_OPTIONS_INIT;
    o.type = type;
    o.ncols = ncols;
    o.chunk_rows = chunk_rows;
    o.codec = t->codec;
    o.marker = marker;
    h5s_column *c = NULL;
    *rc = h5s_column_create(&c, t->g, path, &o);
    return c;
}

int h5s_tracts_create(h5s_tracts **out, h5s_file *file, const h5s_tracts_options *opts)
{
    h5s_error_clear();
    if (!out || !file || !opts)
        return h5s_error_set(H5S_EINVAL, "h5s_tracts_create: NULL argument");
    *out = NULL;
    const char *fpath = h5s_file_path(file);
    hid_t fid = h5s_file_hid(file);
    if (fid < 0)
        return h5s_error_set(H5S_ESTATE, "%s: tracts declared after SWMR started", fpath);
    int rc = check_options(opts, fpath);
    if (rc)
        return rc;
    if (h5s_format_path_exists(fid, H5S_TRACTS_PATH))
        return h5s_error_set(H5S_EINVAL, "%s: %s already exists", fpath, H5S_TRACTS_PATH);
    hid_t grp = H5Gcreate2(fid, H5S_TRACTS_PATH, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (grp < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: cannot create %s", fpath, H5S_TRACTS_PATH);
    hsize_t d44[2] = {4, 4}, d3 = 3;
    int st = write_attr(grp, "VOXEL_TO_RASMM", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, d44,
                        opts->voxel_to_rasmm);
    if (st == 0)
        st = write_attr(grp, "DIMENSIONS", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &d3,
                        opts->dimensions);
    if (st == 0)
        st = h5s_attr_string(grp, "h5stream_model", "tracts");
    H5Gclose(grp);
    if (st < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: cannot write the tracts header", fpath);

    h5s_tracts *t = calloc(1, sizeof *t);
    if (!t)
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", fpath);
    rc = h5s_file_attach(file, t, tracts_free);
    if (rc)
        return rc;
    t->file = file;
    t->pdtype = opts->positions_dtype;
    t->codec = opts->codec;
    rc = h5s_group_create(&t->g, file, H5S_TRACTS_PATH);
    if (rc == 0)
        t->positions = add_column(t, H5S_TRACTS_PATH "/positions", h5s_format_h5type(t->pdtype), 3,
                                  opts->chunk_points, 0, &rc);
    if (rc == 0)
        t->offsets = add_column(t, H5S_TRACTS_PATH "/offsets", H5T_STD_U64LE, 0, 0, 1, &rc);
    uint64_t zero = 0;
    if (rc == 0)
        rc = h5s_column_preset(t->offsets, &zero, 1);
    if (rc == 0)
        rc = h5s_file_add_model(file, "tracts");
    if (rc)
        return rc;
    *out = t;
    return 0;
}

static int check_name(const h5s_tracts *t, const char *name, const char *what)
{
    const char *fpath = h5s_file_path(t->file);
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > NAME_MAX_LEN || strchr(name, '/') || strchr(name, '.'))
        return h5s_error_set(H5S_EINVAL,
                             "%s: %s name '%s' must be 1 to %d characters without '/' or '.'",
                             fpath, what, name ? name : "", NAME_MAX_LEN);
    if (h5s_file_hid(t->file) < 0)
        return h5s_error_set(H5S_ESTATE, "%s: %s '%s' declared after SWMR started", fpath, what,
                             name);
    return 0;
}

static int add_field(h5s_tracts *t, tr_field *fields, unsigned *n, const char *kind,
                     const char *name, h5s_dtype dtype, uint32_t ncols, unsigned *out_index)
{
    if (!t)
        return h5s_error_set(H5S_EINVAL, "h5s_tracts_add_%s: NULL argument", kind);
    h5s_error_clear();
    int rc = check_name(t, name, kind);
    if (rc)
        return rc;
    const char *fpath = h5s_file_path(t->file);
    if (h5s_dtype_size(dtype) == 0 || ncols == 0)
        return h5s_error_set(H5S_EINVAL, "%s: %s '%s': bad dtype or 0 columns", fpath, kind, name);
    for (unsigned i = 0; i < *n; i++)
        if (strcmp(fields[i].name, name) == 0)
            return h5s_error_set(H5S_EINVAL, "%s: %s '%s' declared twice", fpath, kind, name);
    if (*n == H5S_TRACTS_MAX_FIELDS)
        return h5s_error_set(H5S_EINVAL, "%s: more than %d %s fields", fpath, H5S_TRACTS_MAX_FIELDS,
                             kind);
    char path[H5S_NAME_MAX];
    snprintf(path, sizeof path, "%s/%s/%s", H5S_TRACTS_PATH, kind, name);
    tr_field *f = &fields[*n];
    /* dpv rows follow the positions' chunking, so a streamline's points and values sit in
     * chunks of the same rows. */
    uint64_t chunk = fields == t->dpv ? h5s_column_chunk_rows(t->positions) : 0;
    f->col = add_column(t, path, h5s_format_h5type(dtype), ncols, chunk, 0, &rc);
    if (rc)
        return rc;
    snprintf(f->name, sizeof f->name, "%s", name);
    f->dtype = dtype;
    f->ncols = ncols;
    f->row_bytes = h5s_dtype_size(dtype) * ncols;
    if (out_index)
        *out_index = *n;
    (*n)++;
    return 0;
}

int h5s_tracts_add_dps(h5s_tracts *t, const char *name, h5s_dtype dtype, uint32_t ncols,
                       unsigned *out_index)
{
    return add_field(t, t ? t->dps : NULL, t ? &t->ndps : NULL, "dps", name, dtype, ncols,
                     out_index);
}

int h5s_tracts_add_dpv(h5s_tracts *t, const char *name, h5s_dtype dtype, uint32_t ncols,
                       unsigned *out_index)
{
    return add_field(t, t ? t->dpv : NULL, t ? &t->ndpv : NULL, "dpv", name, dtype, ncols,
                     out_index);
}

int h5s_tracts_add_group(h5s_tracts *t, const char *name, unsigned *out_index)
{
    if (!t)
        return h5s_error_set(H5S_EINVAL, "h5s_tracts_add_group: NULL argument");
    h5s_error_clear();
    int rc = check_name(t, name, "group");
    if (rc)
        return rc;
    const char *fpath = h5s_file_path(t->file);
    for (unsigned i = 0; i < t->ngroups; i++)
        if (strcmp(t->groups[i].name, name) == 0)
            return h5s_error_set(H5S_EINVAL, "%s: group '%s' declared twice", fpath, name);
    if (t->ngroups == H5S_TRACTS_MAX_GROUPS)
        return h5s_error_set(H5S_EINVAL, "%s: more than %d groups", fpath, H5S_TRACTS_MAX_GROUPS);
    char path[H5S_NAME_MAX];
    snprintf(path, sizeof path, "%s/groups/%s", H5S_TRACTS_PATH, name);
    tr_group *g = &t->groups[t->ngroups];
    g->col = add_column(t, path, H5T_STD_U32LE, 0, 0, 0, &rc);
    if (rc)
        return rc;
    snprintf(g->name, sizeof g->name, "%s", name);
    if (out_index)
        *out_index = t->ngroups;
    t->ngroups++;
    return 0;
}

int h5s_tracts_add_dpg(h5s_tracts *t, const char *group, const char *name, h5s_dtype dtype,
                       uint32_t ncols)
{
    if (!t || !group)
        return h5s_error_set(H5S_EINVAL, "h5s_tracts_add_dpg: NULL argument");
    h5s_error_clear();
    int rc = check_name(t, name, "dpg");
    if (rc)
        return rc;
    const char *fpath = h5s_file_path(t->file);
    unsigned gi = 0;
    while (gi < t->ngroups && strcmp(t->groups[gi].name, group) != 0)
        gi++;
    if (gi == t->ngroups)
        return h5s_error_set(H5S_ENOTFOUND, "%s: dpg '%s' of unknown group '%s'", fpath, name,
                             group);
    if (h5s_dtype_size(dtype) == 0 || ncols == 0)
        return h5s_error_set(H5S_EINVAL, "%s: dpg '%s/%s': bad dtype or 0 columns", fpath, group,
                             name);
    for (size_t i = 0; i < t->ndpg; i++)
        if (strcmp(t->dpg[i].group, group) == 0 && strcmp(t->dpg[i].name, name) == 0)
            return h5s_error_set(H5S_EINVAL, "%s: dpg '%s/%s' declared twice", fpath, group, name);
    tr_dpg *grown = realloc(t->dpg, (t->ndpg + 1) * sizeof *grown);
    if (!grown)
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", fpath);
    t->dpg = grown;
    tr_dpg *d = &t->dpg[t->ndpg];
    memset(d, 0, sizeof *d);
    snprintf(d->path, sizeof d->path, "%s/dpg/%s/%s", H5S_TRACTS_PATH, group, name);
    snprintf(d->group, sizeof d->group, "%s", group);
    snprintf(d->name, sizeof d->name, "%s", name);
    d->dtype = dtype;
    d->ncols = ncols;
    hid_t fid = h5s_file_hid(t->file);
    hsize_t dims = ncols;
    hid_t space = H5Screate_simple(1, &dims, NULL);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    /* Contiguous and allocated now: written in place later, with no new space. */
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY);
    hid_t ds = H5Dcreate2(fid, d->path, h5s_format_h5type(dtype), space, lcpl, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Pclose(lcpl);
    H5Sclose(space);
    if (ds < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: cannot create %s", fpath, d->path);
    H5Dclose(ds);
    t->ndpg++;
    return 0;
}

uint64_t h5s_tracts_count(const h5s_tracts *t)
{
    return t ? atomic_load(&t->count) : 0;
}

/* ---- streaming -------------------------------------------------------------------- */

/* Converts n x 3 float32 points into the positions dtype. */
static void convert_points(void *dst, h5s_dtype dtype, const float *src, uint64_t n)
{
    size_t v = (size_t)n * 3;
    if (dtype == H5S_FLOAT16) {
        h5s_half_from_float_n(dst, src, v);
    } else if (dtype == H5S_FLOAT64) {
        double *d = dst;
        for (size_t i = 0; i < v; i++)
            d[i] = src[i];
    } else {
        memcpy(dst, src, v * sizeof(float));
    }
}

static int all_finite(const float *p, size_t n)
{
    /* x - x is 0 for finite x and NaN for inf or NaN; one branch for the whole array. */
    float acc = 0.0f;
    for (size_t i = 0; i < n; i++)
        acc += p[i] - p[i];
    return acc == 0.0f;
}

/* Appends one streamline's rows to every column. Group locked. */
static int append_locked(h5s_tracts *t, const void *pos, uint64_t npoints, const void *const *dps,
                         const void *const *dpv, uint64_t *index)
{
    int rc = h5s_column_append(t->positions, pos, npoints);
    for (unsigned i = 0; rc == 0 && i < t->ndpv; i++) {
        const void *vals = dpv ? dpv[i] : NULL;
        if (vals) {
            rc = h5s_column_append(t->dpv[i].col, vals, npoints);
        } else {
            /* Zeros, a chunk's worth at a time. */
            static const unsigned char zeros[4096];
            uint64_t per = sizeof zeros / t->dpv[i].row_bytes, left = npoints;
            while (rc == 0 && left) {
                uint64_t n = left < per ? left : per;
                rc = h5s_column_append(t->dpv[i].col, zeros, n);
                left -= n;
            }
        }
    }
    static const unsigned char zero_row[8 * 64];
    for (unsigned i = 0; rc == 0 && i < t->ndps; i++) {
        const void *vals = dps ? dps[i] : NULL;
        if (!vals && t->dps[i].row_bytes > sizeof zero_row)
            return h5s_error_set(H5S_EINVAL, "%s: dps '%s' has no values", h5s_file_path(t->file),
                                 t->dps[i].name);
        rc = h5s_column_append(t->dps[i].col, vals ? vals : zero_row, 1);
    }
    if (rc)
        return rc;
    t->nv += npoints;
    rc = h5s_column_append(t->offsets, &t->nv, 1);
    if (rc == 0) {
        *index = atomic_fetch_add(&t->count, 1);
        rc = h5s_group_item_done(t->g, 1);
    }
    return rc;
}

int h5s_tracts_push(h5s_tracts *t, const float *points, uint64_t npoints, const void *const *dps,
                    const void *const *dpv, uint64_t *out_index)
{
    if (!t || (!points && npoints))
        return h5s_error_set(H5S_EINVAL, "h5s_tracts_push: NULL argument");
    if (npoints > ((uint64_t)1 << 40))
        return h5s_error_set(H5S_EINVAL, "%s: streamline of %llu points", h5s_file_path(t->file),
                             (unsigned long long)npoints);
    if (!all_finite(points, (size_t)npoints * 3))
        return h5s_error_set(H5S_EINVAL, "%s: streamline %llu has a non-finite coordinate",
                             h5s_file_path(t->file), (unsigned long long)atomic_load(&t->count));
    size_t bytes = (size_t)npoints * 3 * h5s_dtype_size(t->pdtype);
    unsigned char stack[STACK_POINT_BYTES];
    const void *pos = points;
    unsigned char *heap = NULL;
    if (t->pdtype != H5S_FLOAT32) {
        unsigned char *buf = stack;
        if (bytes > sizeof stack && !(buf = heap = malloc(bytes)))
            return h5s_error_set(H5S_ENOMEM, "%s: out of memory", h5s_file_path(t->file));
        convert_points(buf, t->pdtype, points, npoints);
        pos = buf;
    }
    uint64_t index = 0;
    h5s_group_lock(t->g);
    int rc = append_locked(t, pos, npoints, dps, dpv, &index);
    h5s_group_unlock(t->g);
    free(heap);
    if (rc == 0 && out_index)
        *out_index = index;
    return rc;
}

int h5s_tracts_group_add(h5s_tracts *t, unsigned group, const uint32_t *indices, uint64_t n)
{
    if (!t || (!indices && n))
        return h5s_error_set(H5S_EINVAL, "h5s_tracts_group_add: NULL argument");
    if (group >= t->ngroups)
        return h5s_error_set(H5S_EINVAL, "%s: no group %u", h5s_file_path(t->file), group);
    h5s_group_lock(t->g);
    int rc = h5s_column_append(t->groups[group].col, indices, n);
    h5s_group_unlock(t->g);
    return rc;
}

typedef struct {
    char path[sizeof((tr_dpg *)0)->path];
    h5s_dtype dtype;
    char file[1024];
    unsigned char values[];
} dpg_write;

static int write_dpg(hid_t fid, void *payload)
{
    const dpg_write *w = payload;
    hid_t d = H5Dopen2(fid, w->path, H5P_DEFAULT);
    herr_t st =
        d >= 0 ? H5Dwrite(d, h5s_format_h5type(w->dtype), H5S_ALL, H5S_ALL, H5P_DEFAULT, w->values)
               : -1;
    if (st >= 0)
        st = H5Dflush(d);
    if (d >= 0)
        H5Dclose(d);
    if (st < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: cannot write %s", w->file, w->path);
    return 0;
}

int h5s_tracts_set_dpg(h5s_tracts *t, const char *group, const char *name, const void *values)
{
    if (!t || !group || !name || !values)
        return h5s_error_set(H5S_EINVAL, "h5s_tracts_set_dpg: NULL argument");
    const tr_dpg *d = NULL;
    for (size_t i = 0; i < t->ndpg && !d; i++)
        if (strcmp(t->dpg[i].group, group) == 0 && strcmp(t->dpg[i].name, name) == 0)
            d = &t->dpg[i];
    if (!d)
        return h5s_error_set(H5S_ENOTFOUND, "%s: no dpg '%s/%s'", h5s_file_path(t->file), group,
                             name);
    size_t n = h5s_dtype_size(d->dtype) * d->ncols;
    dpg_write *w = malloc(sizeof *w + n);
    if (!w)
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", h5s_file_path(t->file));
    snprintf(w->path, sizeof w->path, "%s", d->path);
    snprintf(w->file, sizeof w->file, "%s", h5s_file_path(t->file));
    w->dtype = d->dtype;
    memcpy(w->values, values, n);
    return h5s_file_call(t->file, write_dpg, w, free, 0);
}
