/*
 * h5s_volumes.c - the volumes model (h5s_volumes.h): collections of NIfTI-like volumes
 * with an obs table each and one /obs_meta subject table.
 *
 * Uniform collections store their voxels in an N-D dataset that columns do not cover:
 * each chunk (an axial slice or a block) is encoded on the producer thread and a batch of
 * encoded chunks is stored by an h5s_file_call on the writer thread, which H5Dflush-es
 * the voxels before the volume's obs row is appended to its group; the obs row is the
 * marker, so the group's commit comes after the voxels are on disk. Heterogeneous
 * collections put the voxels in a pool column of the same group as obs.
 */
#include "h5s_volumes.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5s_codec.h"
#include "h5s_column.h"
#include "h5s_engine.h"
#include "h5s_error.h"
#include "h5s_format.h"
#include "h5s_nifti.h"

#define VOL_PATH_MAX 256
/* Encoded bytes gathered before they go to the writer in one call. */
#define VOL_CALL_BYTES ((size_t)4 << 20)
/* Slices read from a NIfTI file at once when importing. */
#define VOL_IMPORT_BYTES ((size_t)4 << 20)

/* ---- obs_id set (file-wide) -------------------------------------------------------- */

typedef struct {
    pthread_mutex_t mu;
    char **slots;
    size_t cap, n;
} id_set;

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int set_grow(id_set *s)
{
    size_t cap = s->cap ? s->cap * 2 : 1024;
    char **slots = calloc(cap, sizeof *slots);
    if (!slots)
        return -1;
    for (size_t i = 0; i < s->cap; i++) {
        if (!s->slots[i])
            continue;
        size_t k = hash_str(s->slots[i]) & (cap - 1);
        while (slots[k])
            k = (k + 1) & (cap - 1);
        slots[k] = s->slots[i];
    }
    free(s->slots);
    s->slots = slots;
    s->cap = cap;
    return 0;
}

/* 1 added, 0 already there, -1 out of memory. */
static int set_add(id_set *s, const char *id)
{
    pthread_mutex_lock(&s->mu);
    int rc = 1;
    if ((s->n + 1) * 2 > s->cap && set_grow(s) != 0) {
        rc = -1;
    } else {
        size_t k = hash_str(id) & (s->cap - 1);
        while (s->slots[k] && strcmp(s->slots[k], id) != 0)
            k = (k + 1) & (s->cap - 1);
        if (s->slots[k]) {
            rc = 0;
        } else if (!(s->slots[k] = strdup(id))) {
            rc = -1;
        } else {
            s->n++;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* Removes id (linear probing: re-inserts the run after it). */
static void set_remove(id_set *s, const char *id)
{
    pthread_mutex_lock(&s->mu);
    if (s->cap) {
        size_t k = hash_str(id) & (s->cap - 1);
        while (s->slots[k] && strcmp(s->slots[k], id) != 0)
            k = (k + 1) & (s->cap - 1);
        if (s->slots[k]) {
            free(s->slots[k]);
            s->slots[k] = NULL;
            s->n--;
            for (size_t j = (k + 1) & (s->cap - 1); s->slots[j]; j = (j + 1) & (s->cap - 1)) {
                char *moved = s->slots[j];
                s->slots[j] = NULL;
                size_t t = hash_str(moved) & (s->cap - 1);
                while (s->slots[t])
                    t = (t + 1) & (s->cap - 1);
                s->slots[t] = moved;
            }
        }
    }
    pthread_mutex_unlock(&s->mu);
}

/* Packs one row's cells; 0 or H5S_EINVAL (a string too long). */
static int pack_cells(unsigned char *dst, const h5s_meta_column *cols, size_t n,
                      const h5s_meta_value *v, const char *what)
{
    for (size_t i = 0; i < n; i++) {
        size_t size = h5s_meta_cell_size(&cols[i]);
        if (cols[i].type == H5S_META_STRING) {
            memset(dst, 0, size);
            const char *s = v ? v[i].s : NULL;
            if (s) {
                size_t len = strlen(s);
                if (len >= size)
                    return h5s_error_set(H5S_EINVAL,
                                         "%s: column '%s': value of %zu bytes (at most %zu)", what,
                                         cols[i].name, len, size - 1);
                memcpy(dst, s, len);
            }
        } else if (cols[i].type == H5S_META_INT) {
            int64_t x = v ? v[i].i : H5S_META_MISSING_INT;
            memcpy(dst, &x, 8);
        } else {
            double x = v ? v[i].f : NAN;
            memcpy(dst, &x, 8);
        }
        dst += size;
    }
    return 0;
}

static int copy_id(char *dst, size_t size, const char *src, const char *field, int required)
{
    if (!src)
        src = "";
    size_t len = strlen(src);
    if (required && len == 0)
        return h5s_error_set(H5S_EINVAL, "%s is empty", field);
    if (len >= size)
        return h5s_error_set(H5S_EINVAL, "%s '%.40s...': %zu bytes (at most %zu)", field, src, len,
                             size - 1);
    memset(dst, 0, size);
    memcpy(dst, src, len);
    return 0;
}

/* ---- obs rows from NIfTI headers ------------------------------------------------------ */

static void copy_text(char *dst, size_t size, const char *src)
{
    memset(dst, 0, size);
    size_t len = strnlen(src, size);
    memcpy(dst, src, len < size ? len : size);
}

static void obs_from_nifti(h5s_volume_obs *o, const h5s_nifti_header *h)
{
    o->ndim = h->ndim;
    o->nifti_version = h->version;
    for (int i = 0; i < H5S_VOLUMES_MAX_DIMS; i++)
        o->shape[i] = i < h->ndim ? h->dim[i + 1] : 1;
    for (int i = 0; i < 8; i++)
        o->pixdim[i] = h->pixdim[i];
    h5s_nifti_header_affine(h, o->affine);
    o->qform_code = h->qform_code;
    o->sform_code = h->sform_code;
    o->quatern[0] = h->quatern_b;
    o->quatern[1] = h->quatern_c;
    o->quatern[2] = h->quatern_d;
    o->qoffset[0] = h->qoffset_x;
    o->qoffset[1] = h->qoffset_y;
    o->qoffset[2] = h->qoffset_z;
    o->qfac = h->qfac;
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 4; c++)
            o->srow[r][c] = h->sto_xyz[r][c];
    o->xyzt_units = h->xyzt_units;
    o->nifti_datatype = h->nifti_datatype;
    o->scl_slope = h->scl_slope;
    o->scl_inter = h->scl_inter;
    o->cal_min = h->cal_min;
    o->cal_max = h->cal_max;
    o->intent_code = h->intent_code;
    o->intent_p[0] = h->intent_p1;
    o->intent_p[1] = h->intent_p2;
    o->intent_p[2] = h->intent_p3;
    copy_text(o->intent_name, sizeof o->intent_name, h->intent_name);
    copy_text(o->descrip, sizeof o->descrip, h->descrip);
    copy_text(o->aux_file, sizeof o->aux_file, h->aux_file);
    o->dim_info = h->dim_info;
    o->slice_code = h->slice_code;
    o->slice_start = h->slice_start;
    o->slice_end = h->slice_end;
    o->slice_duration = h->slice_duration;
    o->toffset = h->toffset;
}

int h5s_volume_obs_init(h5s_volume_obs *obs, const char *obs_id, const char *obs_subject_id,
                        const char *series_type, int ndim, const int64_t *shape,
                        const double *spacing, const double affine[4][4])
{
    if (!obs || !obs_id || !obs_subject_id || !shape)
        return h5s_error_set(H5S_EINVAL, "h5s_volume_obs_init: NULL argument");
    memset(obs, 0, sizeof *obs);
    h5s_nifti_header h;
    int rc = h5s_nifti_header_init(&h, H5S_UINT8, ndim, shape);
    if (rc)
        return rc;
    for (int i = 0; spacing && i < ndim; i++) {
        if (!isfinite(spacing[i]) || spacing[i] <= 0)
            return h5s_error_set(H5S_EINVAL, "obs %s: spacing[%d] = %g is not a positive number",
                                 obs_id, i, spacing[i]);
        h.pixdim[i + 1] = spacing[i];
    }
    if (affine && (rc = h5s_nifti_header_set_affine(&h, affine, 1, 1)) != 0)
        return rc;
    obs_from_nifti(obs, &h);
    obs->nifti_version = 0;
    obs->nifti_datatype = 0;
    if ((rc = copy_id(obs->obs_id, sizeof obs->obs_id, obs_id, "obs_id", 1)) != 0 ||
        (rc = copy_id(obs->obs_subject_id, sizeof obs->obs_subject_id, obs_subject_id,
                      "obs_subject_id", 0)) != 0 ||
        (rc = copy_id(obs->series_type, sizeof obs->series_type, series_type, "series_type", 0)) !=
            0)
        return rc;
    return 0;
}

/* ---- the model's handles ------------------------------------------------------------ */

struct h5s_collection {
    h5s_volumes *volumes;
    char name[H5S_VOLUMES_NAME_MAX];
    char voxels_path[VOL_PATH_MAX];
    h5s_collection_options opts;
    h5s_meta_column extra[H5S_VOLUMES_MAX_COLUMNS];
    char extra_names[H5S_VOLUMES_MAX_COLUMNS][64];
    size_t row_bytes;
    size_t elem;
    int rank;         /* uniform voxels rank: 4 or 5 */
    hsize_t chunk[5]; /* uniform chunk dims */
    size_t chunk_bytes;
    h5s_group *group;
    h5s_column *obs;
    h5s_column *pool;                /* heterogeneous */
    atomic_uint_fast64_t next_index; /* uniform: next voxel position */
    atomic_uint_fast64_t count;      /* volumes committed to the queue */
    uint64_t w_extent;               /* writer thread only: voxels extent along N */
};

struct h5s_volumes {
    h5s_file *file;
    id_set ids;
    h5s_group *meta_group;
    h5s_column *meta;
    h5s_meta_column cols[H5S_VOLUMES_MAX_COLUMNS];
    char col_names[H5S_VOLUMES_MAX_COLUMNS][64];
    size_t ncols;
    size_t meta_row_bytes;
    h5s_collection *colls[H5S_VOLUMES_MAX_COLUMNS];
    size_t ncolls;
};

static void copy_columns(h5s_meta_column *dst, char (*names)[64], const h5s_meta_column *src,
                         size_t n)
{
    for (size_t i = 0; i < n; i++) {
        dst[i] = src[i];
        snprintf(names[i], 64, "%s", src[i].name);
        dst[i].name = names[i];
        if (dst[i].type == H5S_META_STRING && dst[i].strsize == 0)
            dst[i].strsize = H5S_META_DEFAULT_STRSIZE;
    }
}

static int write_attr_u64(hid_t obj, const char *name, const uint64_t *v, hsize_t n)
{
    hid_t s = H5Screate_simple(1, &n, NULL);
    hid_t a = s >= 0 ? H5Acreate2(obj, name, H5T_STD_U64LE, s, H5P_DEFAULT, H5P_DEFAULT) : -1;
    herr_t e = a >= 0 ? H5Awrite(a, H5T_NATIVE_UINT64, v) : -1;
    if (a >= 0)
        H5Aclose(a);
    if (s >= 0)
        H5Sclose(s);
    return e < 0 ? -1 : 0;
}

int h5s_volumes_create(h5s_volumes **out, h5s_file *file, const h5s_meta_column *cols, size_t ncols)
{
    if (!out || !file)
        return h5s_error_set(H5S_EINVAL, "h5s_volumes_create: NULL argument");
    *out = NULL;
    hid_t fid = h5s_file_hid(file);
    if (fid < 0)
        return h5s_error_set(H5S_ESTATE, "%s: volumes declared after SWMR started",
                             h5s_file_path(file));
    size_t row = 0;
    hid_t t = h5s_volumes_meta_type(cols, ncols, &row);
    if (t < 0)
        return h5s_error_prefix(H5S_EINVAL, "%s", h5s_file_path(file));
    h5s_volumes *v = calloc(1, sizeof *v);
    if (!v) {
        H5Tclose(t);
        return h5s_error_set(H5S_ENOMEM, "out of memory");
    }
    pthread_mutex_init(&v->ids.mu, NULL);
    v->file = file;
    v->ncols = ncols;
    v->meta_row_bytes = row;
    copy_columns(v->cols, v->col_names, cols, ncols);
    int rc = h5s_file_add_model(file, H5S_VOLUMES_MODEL);
    if (rc == 0 && !h5s_format_path_exists(fid, H5S_VOLUMES_GROUP)) {
        hid_t g = H5Gcreate2(fid, H5S_VOLUMES_GROUP, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (g < 0)
            rc = h5s_error_set_h5(H5S_EIO, "%s: cannot create %s", h5s_file_path(file),
                                  H5S_VOLUMES_GROUP);
        else
            H5Gclose(g);
    }
    if (rc == 0)
        rc = h5s_group_create(&v->meta_group, file, H5S_OBS_META_PATH);
    if (rc == 0) {
        h5s_column_options o = H5S_COLUMN_OPTIONS_INIT;
        o.type = t;
        o.marker = 1;
        o.chunk_rows = 256;
        rc = h5s_column_create(&v->meta, v->meta_group, H5S_OBS_META_PATH, &o);
    }
    H5Tclose(t);
    if (rc) {
        h5s_volumes_free(v);
        return rc;
    }
    *out = v;
    return 0;
}

static int check_collection(const h5s_collection_options *o, const char *name)
{
    if (!o || o->version != H5S_COLLECTION_OPTIONS_VERSION)
        return h5s_error_set(H5S_EINVAL, "collection %s: options missing or of another version",
                             name);
    if (h5s_nifti_code_from_dtype(o->dtype) == 0)
        return h5s_error_set(H5S_EINVAL, "collection %s: dtype %s has no NIfTI code", name,
                             h5s_dtype_name(o->dtype));
    if (h5s_codec_validate(&o->codec) != 0)
        return h5s_error_prefix(H5S_EINVAL, "collection %s", name);
    if (o->heterogeneous)
        return 0;
    if (o->ndim != 3 && o->ndim != 4)
        return h5s_error_set(H5S_EINVAL,
                             "collection %s: uniform collections are 3-D or 4-D "
                             "(ndim %d)",
                             name, o->ndim);
    for (int i = 0; i < o->ndim; i++)
        if (o->shape[i] < 1 || o->shape[i] > ((uint64_t)1 << 31))
            return h5s_error_set(H5S_EINVAL, "collection %s: shape[%d] = %llu", name, i,
                                 (unsigned long long)o->shape[i]);
    int blocks = (o->block[0] != 0) + (o->block[1] != 0) + (o->block[2] != 0);
    if (blocks != 0 && blocks != 3)
        return h5s_error_set(H5S_EINVAL, "collection %s: a block needs all three sizes", name);
    return 0;
}

static int valid_name(const char *name)
{
    if (!name || !*name || strlen(name) >= H5S_VOLUMES_NAME_MAX || name[0] == '.')
        return 0;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-' || *p == '.'))
            return 0;
    return 1;
}

static int create_uniform(h5s_collection *c, hid_t fid, const char *fpath)
{
    const h5s_collection_options *o = &c->opts;
    int rank = o->ndim + 1;
    hsize_t dims[5], maxd[5];
    /* [N, (T,) Z, Y, X] */
    dims[0] = 0;
    maxd[0] = H5S_UNLIMITED;
    for (int i = 1; i < rank; i++) {
        dims[i] = o->shape[rank - 1 - i];
        maxd[i] = dims[i];
    }
    c->rank = rank;
    c->chunk[0] = 1;
    if (o->ndim == 4)
        c->chunk[1] = 1;
    int zax = rank - 3;
    if (o->block[0]) {
        c->chunk[zax] = o->block[2] < dims[zax] ? o->block[2] : dims[zax];
        c->chunk[zax + 1] = o->block[1] < dims[zax + 1] ? o->block[1] : dims[zax + 1];
        c->chunk[zax + 2] = o->block[0] < dims[zax + 2] ? o->block[0] : dims[zax + 2];
    } else {
        c->chunk[zax] = 1;
        c->chunk[zax + 1] = dims[zax + 1];
        c->chunk[zax + 2] = dims[zax + 2];
    }
    c->chunk_bytes = c->elem;
    for (int i = 0; i < rank; i++)
        c->chunk_bytes *= c->chunk[i];
    if (c->chunk_bytes >= ((uint64_t)4 << 30))
        return h5s_error_set(H5S_EINVAL,
                             "%s: collection %s: chunks of %zu bytes (HDF5's limit "
                             "is 4 GiB)",
                             fpath, c->name, c->chunk_bytes);
    hid_t space = H5Screate_simple(rank, dims, maxd);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    int rc = 0;
    if (space < 0 || dcpl < 0 || H5Pset_chunk(dcpl, rank, c->chunk) < 0)
        rc = h5s_error_set_h5(H5S_EIO, "%s: %s: cannot set up the dataset", fpath, c->voxels_path);
    unsigned char zero[8] = {0};
    if (rc == 0 && H5Pset_fill_value(dcpl, h5s_format_h5type(o->dtype), zero) < 0)
        rc = h5s_error_set_h5(H5S_EIO, "%s: %s: fill value", fpath, c->voxels_path);
    if (rc == 0 && (rc = h5s_codec_set_dcpl(dcpl, &o->codec)) != 0)
        h5s_error_prefix(rc, "%s: %s", fpath, c->voxels_path);
    if (rc == 0) {
        hid_t d = H5Dcreate2(fid, c->voxels_path, h5s_format_h5type(o->dtype), space, H5P_DEFAULT,
                             dcpl, H5P_DEFAULT);
        if (d < 0)
            rc = h5s_error_set_h5(H5S_EIO, "%s: cannot create %s", fpath, c->voxels_path);
        else
            H5Dclose(d);
    }
    if (dcpl >= 0)
        H5Pclose(dcpl);
    if (space >= 0)
        H5Sclose(space);
    return rc;
}

int h5s_volumes_add_collection(h5s_collection **out, h5s_volumes *v, const char *name,
                               const h5s_collection_options *opts)
{
    if (!out || !v || !name)
        return h5s_error_set(H5S_EINVAL, "h5s_volumes_add_collection: NULL argument");
    *out = NULL;
    const char *fpath = h5s_file_path(v->file);
    hid_t fid = h5s_file_hid(v->file);
    if (fid < 0)
        return h5s_error_set(H5S_ESTATE, "%s: collection %s declared after SWMR started", fpath,
                             name);
    if (!valid_name(name))
        return h5s_error_set(H5S_EINVAL,
                             "%s: collection name '%s': 1 to %d letters, digits, '_', '-', '.'",
                             fpath, name, H5S_VOLUMES_NAME_MAX - 1);
    int rc = check_collection(opts, name);
    if (rc)
        return h5s_error_prefix(rc, "%s", fpath);
    if (v->ncolls == H5S_VOLUMES_MAX_COLUMNS)
        return h5s_error_set(H5S_EINVAL, "%s: at most %d collections", fpath,
                             H5S_VOLUMES_MAX_COLUMNS);
    for (size_t i = 0; i < v->ncolls; i++)
        if (strcmp(v->colls[i]->name, name) == 0)
            return h5s_error_set(H5S_EINVAL, "%s: collection %s declared twice", fpath, name);
    size_t row = 0;
    hid_t obs_type = h5s_volumes_obs_type(opts->extra, opts->nextra, &row);
    if (obs_type < 0)
        return h5s_error_prefix(H5S_EINVAL, "%s: collection %s", fpath, name);
    h5s_collection *c = calloc(1, sizeof *c);
    if (!c) {
        H5Tclose(obs_type);
        return h5s_error_set(H5S_ENOMEM, "out of memory");
    }
    c->volumes = v;
    snprintf(c->name, sizeof c->name, "%s", name);
    snprintf(c->voxels_path, sizeof c->voxels_path, "%s/%s/voxels", H5S_VOLUMES_GROUP, name);
    c->opts = *opts;
    copy_columns(c->extra, c->extra_names, opts->extra, opts->nextra);
    c->opts.extra = opts->nextra ? c->extra : NULL;
    c->row_bytes = row;
    c->elem = h5s_dtype_size(opts->dtype);
    v->colls[v->ncolls++] = c;

    char gpath[VOL_PATH_MAX], opath[VOL_PATH_MAX + 8];
    snprintf(gpath, sizeof gpath, "%s/%s", H5S_VOLUMES_GROUP, name);
    snprintf(opath, sizeof opath, "%s/obs", gpath);
    hid_t g = H5Gcreate2(fid, gpath, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0)
        rc = h5s_error_set_h5(H5S_EIO, "%s: cannot create %s", fpath, gpath);
    if (rc == 0) {
        uint64_t shape[4], block[3];
        for (int i = 0; i < 4; i++)
            shape[i] = opts->shape[i];
        for (int i = 0; i < 3; i++)
            block[i] = opts->block[i];
        if (h5s_attr_string(g, H5S_VOLUMES_ATTR_KIND,
                            opts->heterogeneous ? "heterogeneous" : "uniform") != 0 ||
            h5s_attr_string(g, "dtype", h5s_dtype_name(opts->dtype)) != 0 ||
            (!opts->heterogeneous && (write_attr_u64(g, "shape", shape, (hsize_t)opts->ndim) != 0 ||
                                      write_attr_u64(g, "block", block, 3) != 0)))
            rc = h5s_error_set_h5(H5S_EIO, "%s: %s: cannot write attributes", fpath, gpath);
    }
    if (g >= 0)
        H5Gclose(g);
    if (rc == 0)
        rc = h5s_group_create(&c->group, v->file, gpath);
    if (rc == 0 && !opts->heterogeneous)
        rc = create_uniform(c, fid, fpath);
    if (rc == 0 && opts->heterogeneous) {
        h5s_column_options o = H5S_COLUMN_OPTIONS_INIT;
        o.type = h5s_format_h5type(opts->dtype);
        o.chunk_rows = opts->pool_chunk ? opts->pool_chunk : ((uint64_t)1 << 20) / c->elem;
        o.codec = opts->codec;
        rc = h5s_column_create(&c->pool, c->group, c->voxels_path, &o);
    }
    if (rc == 0) {
        h5s_column_options o = H5S_COLUMN_OPTIONS_INIT;
        o.type = obs_type;
        o.marker = 1;
        o.chunk_rows = 64;
        rc = h5s_column_create(&c->obs, c->group, opath, &o);
    }
    H5Tclose(obs_type);
    if (rc == 0)
        *out = c;
    return rc;
}

const h5s_collection_options *h5s_collection_info(const h5s_collection *c)
{
    return c ? &c->opts : NULL;
}

uint64_t h5s_collection_count(const h5s_collection *c)
{
    return c ? atomic_load(&c->count) : 0;
}

int h5s_volumes_write_obs_meta(h5s_volumes *v, const char *const *subject_ids,
                               const h5s_meta_value *values, size_t nrows)
{
    if (!v || (nrows && !subject_ids))
        return h5s_error_set(H5S_EINVAL, "h5s_volumes_write_obs_meta: NULL argument");
    unsigned char *row = malloc(v->meta_row_bytes);
    if (!row)
        return h5s_error_set(H5S_ENOMEM, "out of memory");
    int rc = 0;
    h5s_group_lock(v->meta_group);
    for (size_t r = 0; r < nrows && rc == 0; r++) {
        rc = copy_id((char *)row, H5S_VOLUMES_ID_MAX, subject_ids[r], "obs_subject_id", 1);
        if (rc == 0)
            rc = pack_cells(row + H5S_VOLUMES_ID_MAX, v->cols, v->ncols,
                            values ? values + r * v->ncols : NULL, "obs_meta");
        if (rc == 0)
            rc = h5s_column_append(v->meta, row, 1);
        if (rc == 0)
            rc = h5s_group_item_done(v->meta_group, 1);
        if (rc)
            h5s_error_prefix(rc, "%s: obs_meta row %zu", h5s_file_path(v->file), r);
    }
    h5s_group_unlock(v->meta_group);
    free(row);
    return rc;
}

void h5s_volumes_free(h5s_volumes *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->ncolls; i++)
        free(v->colls[i]);
    for (size_t i = 0; i < v->ids.cap; i++)
        free(v->ids.slots[i]);
    free(v->ids.slots);
    pthread_mutex_destroy(&v->ids.mu);
    free(v);
}

/* ---- uniform voxels: encoded chunks stored by the writer thread -------------------- */

typedef struct {
    hsize_t off[5];
    uint32_t mask;
    size_t size;
    void *bytes;
} vol_chunk;

typedef struct {
    h5s_collection *c;
    char obs_id[H5S_VOLUMES_ID_MAX];
    uint64_t index;
    vol_chunk *chunks;
    size_t n, cap;
    size_t bytes;
} vol_call;

static void vol_call_free(void *payload)
{
    vol_call *p = payload;
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++)
        free(p->chunks[i].bytes);
    free(p->chunks);
    free(p);
}

/* Writer thread: extends the voxels to the volume, stores its chunks, flushes. */
static int vol_call_run(hid_t fid, void *payload)
{
    vol_call *p = payload;
    h5s_collection *c = p->c;
    const char *fpath = h5s_file_path(c->volumes->file);
    hid_t d = H5Dopen2(fid, c->voxels_path, H5P_DEFAULT);
    if (d < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: cannot open %s", fpath, c->voxels_path);
    int rc = 0;
    if (p->index + 1 > c->w_extent) {
        hsize_t dims[5];
        dims[0] = p->index + 1;
        for (int i = 1; i < c->rank; i++)
            dims[i] = (hsize_t)c->opts.shape[c->rank - 1 - i];
        if (H5Dset_extent(d, dims) < 0)
            rc = h5s_error_set_h5(H5S_EIO, "%s: %s: cannot extend to %llu volumes (obs_id %s)",
                                  fpath, c->voxels_path, (unsigned long long)dims[0], p->obs_id);
        else
            c->w_extent = p->index + 1;
    }
    for (size_t i = 0; i < p->n && rc == 0; i++) {
        const vol_chunk *k = &p->chunks[i];
        if (H5Dwrite_chunk(d, H5P_DEFAULT, k->mask, k->off, k->size, k->bytes) < 0)
            rc = h5s_error_set_h5(H5S_EIO,
                                  "%s: %s: volume %llu (obs_id %s): cannot write the "
                                  "chunk at z %llu, y %llu, x %llu",
                                  fpath, c->voxels_path, (unsigned long long)p->index, p->obs_id,
                                  (unsigned long long)k->off[c->rank - 3],
                                  (unsigned long long)k->off[c->rank - 2],
                                  (unsigned long long)k->off[c->rank - 1]);
    }
    if (rc == 0 && H5Dflush(d) < 0)
        rc = h5s_error_set_h5(H5S_EIO, "%s: cannot flush %s", fpath, c->voxels_path);
    H5Dclose(d);
    return rc;
}

struct h5s_volume_stream {
    h5s_collection *c;
    unsigned char *row; /* the obs row + extra cells */
    uint64_t nx, ny, nz, nt;
    uint64_t slices, done;
    size_t slice_bytes;
    /* uniform */
    uint64_t index;
    unsigned char *band; /* block mode: bz slices of one t */
    uint64_t band_z0, band_n;
    unsigned char *chunkbuf, *encbuf, *scratch;
    size_t enc_cap;
    vol_call *call;
    int locked; /* heterogeneous: holds the group lock */
    int failed;
};

static h5s_volume_obs *stream_obs(h5s_volume_stream *s)
{
    return (h5s_volume_obs *)s->row;
}

static void stream_free(h5s_volume_stream *s)
{
    if (!s)
        return;
    if (s->locked)
        h5s_group_unlock(s->c->group);
    vol_call_free(s->call);
    free(s->band);
    free(s->chunkbuf);
    free(s->encbuf);
    free(s->scratch);
    free(s->row);
    free(s);
}

/* Sends the gathered chunks to the writer. */
static int flush_call(h5s_volume_stream *s)
{
    vol_call *p = s->call;
    if (!p || p->n == 0)
        return 0;
    s->call = NULL;
    return h5s_file_call(s->c->volumes->file, vol_call_run, p, vol_call_free, p->bytes);
}

/* Encodes one chunk of chunk_bytes raw bytes at the given voxels offset. */
static int add_chunk(h5s_volume_stream *s, const void *raw, const hsize_t *off)
{
    h5s_collection *c = s->c;
    if (!s->call) {
        s->call = calloc(1, sizeof *s->call);
        if (!s->call)
            return h5s_error_set(H5S_ENOMEM, "out of memory");
        s->call->c = c;
        s->call->index = s->index;
        memcpy(s->call->obs_id, stream_obs(s)->obs_id, sizeof s->call->obs_id);
    }
    vol_call *p = s->call;
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        vol_chunk *k = realloc(p->chunks, cap * sizeof *k);
        if (!k)
            return h5s_error_set(H5S_ENOMEM, "out of memory");
        p->chunks = k;
        p->cap = cap;
    }
    size_t size = 0;
    uint32_t mask = 0;
    int rc = h5s_codec_encode(&c->opts.codec, c->elem, raw, c->chunk_bytes, s->encbuf, s->enc_cap,
                              s->scratch, &size, &mask);
    if (rc)
        return h5s_error_prefix(rc, "%s: collection %s: obs_id %s", h5s_file_path(c->volumes->file),
                                c->name, stream_obs(s)->obs_id);
    void *bytes = malloc(size ? size : 1);
    if (!bytes)
        return h5s_error_set(H5S_ENOMEM, "out of memory");
    memcpy(bytes, s->encbuf, size);
    vol_chunk *k = &p->chunks[p->n++];
    memset(k, 0, sizeof *k);
    for (int i = 0; i < c->rank; i++)
        k->off[i] = off[i];
    k->mask = mask;
    k->size = size;
    k->bytes = bytes;
    p->bytes += size + sizeof *k;
    if (p->bytes >= VOL_CALL_BYTES)
        return flush_call(s);
    return 0;
}

/* Block mode: cuts the band (band_n slices from band_z0 of volume t) into blocks. */
static int flush_band(h5s_volume_stream *s, uint64_t t)
{
    h5s_collection *c = s->c;
    int zax = c->rank - 3;
    uint64_t bz = c->chunk[zax], by = c->chunk[zax + 1], bx = c->chunk[zax + 2];
    size_t e = c->elem;
    for (uint64_t y0 = 0; y0 < s->ny; y0 += by) {
        for (uint64_t x0 = 0; x0 < s->nx; x0 += bx) {
            /* Edge blocks are stored whole, zero past the volume (HDF5 ignores it). */
            memset(s->chunkbuf, 0, c->chunk_bytes);
            uint64_t ny = y0 + by <= s->ny ? by : s->ny - y0;
            uint64_t nx = x0 + bx <= s->nx ? bx : s->nx - x0;
            for (uint64_t z = 0; z < s->band_n; z++)
                for (uint64_t y = 0; y < ny; y++)
                    memcpy(s->chunkbuf + ((z * by + y) * bx) * e,
                           s->band + ((z * s->ny + y0 + y) * s->nx + x0) * e, nx * e);
            hsize_t off[5] = {s->index, 0, 0, 0, 0};
            if (c->rank == 5)
                off[1] = t;
            off[zax] = s->band_z0;
            off[zax + 1] = y0;
            off[zax + 2] = x0;
            (void)bz;
            int rc = add_chunk(s, s->chunkbuf, off);
            if (rc)
                return rc;
        }
    }
    s->band_n = 0;
    return 0;
}

/* Volume mismatches against a uniform collection; 0 or H5S_EINVAL. */
static int check_obs(const h5s_collection *c, const h5s_volume_obs *o)
{
    const char *fpath = h5s_file_path(c->volumes->file);
    if (o->ndim < 1 || o->ndim > H5S_VOLUMES_MAX_DIMS)
        return h5s_error_set(H5S_EINVAL, "%s: collection %s: obs_id %s: ndim %d (1 to 7)", fpath,
                             c->name, o->obs_id, o->ndim);
    for (int i = 0; i < H5S_VOLUMES_MAX_DIMS; i++)
        if (o->shape[i] < 1 || (i >= o->ndim && o->shape[i] != 1) || o->shape[i] > INT32_MAX)
            return h5s_error_set(H5S_EINVAL, "%s: collection %s: obs_id %s: shape[%d] = %lld",
                                 fpath, c->name, o->obs_id, i, (long long)o->shape[i]);
    if (o->nifti_datatype != 0 && o->nifti_datatype != h5s_nifti_code_from_dtype(c->opts.dtype)) {
        h5s_dtype dt = H5S_DTYPE_INVALID;
        h5s_nifti_dtype_from_code(&dt, o->nifti_datatype);
        h5s_error_clear();
        return h5s_error_set(H5S_EINVAL,
                             "%s: collection %s: obs_id %s: dtype %s (NIfTI datatype %d), the "
                             "collection holds %s",
                             fpath, c->name, o->obs_id, h5s_dtype_name(dt), o->nifti_datatype,
                             h5s_dtype_name(c->opts.dtype));
    }
    if (!o->obs_id[0] || !memchr(o->obs_id, 0, sizeof o->obs_id) ||
        !memchr(o->obs_subject_id, 0, sizeof o->obs_subject_id) ||
        !memchr(o->series_type, 0, sizeof o->series_type))
        return h5s_error_set(H5S_EINVAL,
                             "%s: collection %s: obs_id empty or an id not "
                             "NUL-terminated",
                             fpath, c->name);
    if (c->opts.heterogeneous)
        return 0;
    uint64_t want[7] = {1, 1, 1, 1, 1, 1, 1};
    for (int i = 0; i < c->opts.ndim; i++)
        want[i] = c->opts.shape[i];
    for (int i = 0; i < H5S_VOLUMES_MAX_DIMS; i++) {
        if ((uint64_t)o->shape[i] != want[i]) {
            char got[160], exp[160];
            int n1 = 0, n2 = 0;
            for (int k = 0; k < o->ndim; k++)
                n1 += snprintf(got + n1, sizeof got - (size_t)n1, "%s%lld", k ? "x" : "",
                               (long long)o->shape[k]);
            for (int k = 0; k < c->opts.ndim; k++)
                n2 += snprintf(exp + n2, sizeof exp - (size_t)n2, "%s%llu", k ? "x" : "",
                               (unsigned long long)c->opts.shape[k]);
            return h5s_error_set(H5S_EINVAL,
                                 "%s: collection %s: obs_id %s: shape %s, the collection holds "
                                 "%s (declare it heterogeneous for mixed shapes)",
                                 fpath, c->name, o->obs_id, got, exp);
        }
    }
    return 0;
}

int h5s_collection_begin(h5s_volume_stream **out, h5s_collection *c, const h5s_volume_obs *obs,
                         const h5s_meta_value *extra)
{
    if (!out || !c || !obs)
        return h5s_error_set(H5S_EINVAL, "h5s_collection_begin: NULL argument");
    *out = NULL;
    int rc = check_obs(c, obs);
    if (rc)
        return rc;
    const char *fpath = h5s_file_path(c->volumes->file);
    h5s_volume_stream *s = calloc(1, sizeof *s);
    if (!s || !(s->row = calloc(1, c->row_bytes))) {
        free(s);
        return h5s_error_set(H5S_ENOMEM, "out of memory");
    }
    s->c = c;
    memcpy(s->row, obs, sizeof *obs);
    h5s_volume_obs *o = stream_obs(s);
    if (o->nifti_datatype == 0)
        o->nifti_datatype = h5s_nifti_code_from_dtype(c->opts.dtype);
    rc = pack_cells(s->row + sizeof *obs, c->extra, c->opts.nextra, extra, "obs");
    if (rc) {
        h5s_error_prefix(rc, "%s: collection %s: obs_id %s", fpath, c->name, o->obs_id);
        stream_free(s);
        return rc;
    }
    s->nx = (uint64_t)o->shape[0];
    s->ny = (uint64_t)o->shape[1];
    s->nz = (uint64_t)o->shape[2];
    s->nt = 1;
    for (int i = 3; i < H5S_VOLUMES_MAX_DIMS; i++)
        s->nt *= (uint64_t)o->shape[i];
    s->slices = s->nz * s->nt;
    s->slice_bytes = (size_t)(s->nx * s->ny) * c->elem;
    int added = set_add(&c->volumes->ids, o->obs_id);
    if (added <= 0) {
        rc = added < 0
                 ? h5s_error_set(H5S_ENOMEM, "out of memory")
                 : h5s_error_set(H5S_EINVAL, "%s: collection %s: obs_id %s is already in the file",
                                 fpath, c->name, o->obs_id);
        stream_free(s);
        return rc;
    }
    if (c->opts.heterogeneous) {
        h5s_group_lock(c->group);
        s->locked = 1;
        rc = h5s_column_pad_to_chunk(c->pool);
        o->pool_offset = h5s_column_rows(c->pool);
        o->voxel_index = atomic_fetch_add(&c->next_index, 1);
    } else {
        s->index = atomic_fetch_add(&c->next_index, 1);
        o->voxel_index = s->index;
        o->pool_offset = 0;
        s->enc_cap = h5s_codec_bound(&c->opts.codec, c->chunk_bytes);
        s->encbuf = malloc(s->enc_cap);
        s->scratch = malloc(c->chunk_bytes);
        if (c->opts.block[0]) {
            s->chunkbuf = malloc(c->chunk_bytes);
            s->band = malloc(c->chunk[c->rank - 3] * s->slice_bytes);
        }
        if (!s->encbuf || !s->scratch || (c->opts.block[0] && (!s->chunkbuf || !s->band)))
            rc = h5s_error_set(H5S_ENOMEM, "out of memory");
    }
    if (rc) {
        h5s_volume_stream_abort(s);
        return rc;
    }
    *out = s;
    return 0;
}

int h5s_volume_stream_write(h5s_volume_stream *s, const void *data, size_t nbytes, uint64_t count)
{
    if (!s || (!data && count))
        return h5s_error_set(H5S_EINVAL, "h5s_volume_stream_write: NULL argument");
    h5s_collection *c = s->c;
    const char *fpath = h5s_file_path(c->volumes->file);
    const char *id = stream_obs(s)->obs_id;
    if (s->failed)
        return h5s_error_set(H5S_ESTATE, "%s: collection %s: obs_id %s: stream failed before",
                             fpath, c->name, id);
    if (count > s->slices - s->done)
        return h5s_error_set(H5S_ERANGE,
                             "%s: collection %s: obs_id %s: %llu slices given, %llu "
                             "left",
                             fpath, c->name, id, (unsigned long long)count,
                             (unsigned long long)(s->slices - s->done));
    if (nbytes != count * s->slice_bytes)
        return h5s_error_set(H5S_EINVAL,
                             "%s: collection %s: obs_id %s: %zu bytes for %llu "
                             "slices of %zu bytes",
                             fpath, c->name, id, nbytes, (unsigned long long)count, s->slice_bytes);
    int rc = 0;
    const unsigned char *src = data;
    if (c->opts.heterogeneous) {
        rc = h5s_column_append(c->pool, data, count * s->nx * s->ny);
        if (rc == 0)
            s->done += count;
    } else {
        int zax = c->rank - 3;
        uint64_t bz = c->chunk[zax];
        for (uint64_t k = 0; k < count && rc == 0; k++, src += s->slice_bytes) {
            uint64_t z = s->done % s->nz, t = s->done / s->nz;
            if (!c->opts.block[0]) {
                hsize_t off[5] = {s->index, 0, 0, 0, 0};
                if (c->rank == 5)
                    off[1] = t;
                off[zax] = z;
                rc = add_chunk(s, src, off);
            } else {
                if (s->band_n == 0)
                    s->band_z0 = z;
                memcpy(s->band + s->band_n * s->slice_bytes, src, s->slice_bytes);
                s->band_n++;
                if (s->band_n == bz || z + 1 == s->nz)
                    rc = flush_band(s, t);
            }
            if (rc == 0)
                s->done++;
        }
    }
    if (rc) {
        s->failed = 1;
        if (rc != H5S_ENOMEM && !strstr(h5s_error_message(), id))
            h5s_error_prefix(rc, "%s: collection %s: obs_id %s", fpath, c->name, id);
    }
    return rc;
}

int h5s_volume_stream_commit(h5s_volume_stream *s)
{
    if (!s)
        return h5s_error_set(H5S_EINVAL, "h5s_volume_stream_commit: NULL argument");
    h5s_collection *c = s->c;
    const char *fpath = h5s_file_path(c->volumes->file);
    const char *id = stream_obs(s)->obs_id;
    int rc = 0;
    if (s->failed)
        rc = h5s_error_set(H5S_ESTATE, "%s: collection %s: obs_id %s: stream failed before", fpath,
                           c->name, id);
    else if (s->done != s->slices)
        rc = h5s_error_set(H5S_ESTATE,
                           "%s: collection %s: obs_id %s: %llu of %llu slices "
                           "written; the volume is dropped",
                           fpath, c->name, id, (unsigned long long)s->done,
                           (unsigned long long)s->slices);
    if (rc == 0)
        rc = flush_call(s);
    if (rc == 0) {
        /* The obs row goes in after the voxels' calls: its commit comes after them. */
        if (!s->locked) {
            h5s_group_lock(c->group);
            s->locked = 1;
        }
        rc = h5s_column_append(c->obs, s->row, 1);
        if (rc == 0) {
            atomic_fetch_add(&c->count, 1);
            rc = h5s_group_item_done(c->group, 1);
        }
    }
    if (rc && s->done == s->slices && !s->failed && stream_obs(s)->obs_id[0] &&
        !strstr(h5s_error_message(), id))
        h5s_error_prefix(rc, "%s: collection %s: obs_id %s", fpath, c->name, id);
    if (rc)
        set_remove(&c->volumes->ids, id);
    stream_free(s);
    return rc;
}

void h5s_volume_stream_abort(h5s_volume_stream *s)
{
    if (!s)
        return;
    set_remove(&s->c->volumes->ids, stream_obs(s)->obs_id);
    stream_free(s);
}

int h5s_collection_write_volume(h5s_collection *c, const void *data, size_t nbytes,
                                const h5s_volume_obs *obs, const h5s_meta_value *extra)
{
    h5s_volume_stream *s = NULL;
    int rc = h5s_collection_begin(&s, c, obs, extra);
    if (rc)
        return rc;
    rc = h5s_volume_stream_write(s, data, nbytes, s->slices);
    if (rc) {
        h5s_volume_stream_abort(s);
        return rc;
    }
    return h5s_volume_stream_commit(s);
}

int h5s_collection_write_batch(h5s_collection *c, const void *const *data, const size_t *nbytes,
                               const h5s_volume_obs *obs, const h5s_meta_value *extra, size_t n)
{
    if (!c || (n && (!data || !nbytes || !obs)))
        return h5s_error_set(H5S_EINVAL, "h5s_collection_write_batch: NULL argument");
    for (size_t i = 0; i < n; i++) {
        int rc = h5s_collection_write_volume(c, data[i], nbytes[i], &obs[i],
                                             extra ? extra + i * c->opts.nextra : NULL);
        if (rc)
            return h5s_error_prefix(rc, "batch volume %zu", i);
    }
    return 0;
}

/* ---- NIfTI import -------------------------------------------------------------------- */

static void default_names(const char *path, char *obs_id, size_t id_size, char *series,
                          size_t series_size)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t len = strlen(base);
    if (len > 7 && strcmp(base + len - 7, ".nii.gz") == 0)
        len -= 7;
    else if (len > 4 && strcmp(base + len - 4, ".nii") == 0)
        len -= 4;
    snprintf(obs_id, id_size, "%.*s", (int)len, base);
    const char *us = memchr(base, '_', len) ? base + len : NULL;
    while (us && us > base && us[-1] != '_')
        us--;
    if (us && us > base)
        snprintf(series, series_size, "%.*s", (int)(base + len - us), us);
    else
        series[0] = '\0';
}

int h5s_collection_import_nifti(h5s_collection *c, const char *path, const char *obs_id,
                                const char *obs_subject_id, const char *series_type)
{
    if (!c || !path)
        return h5s_error_set(H5S_EINVAL, "h5s_collection_import_nifti: NULL argument");
    h5s_nifti_reader *r = NULL;
    int rc = h5s_nifti_open(&r, path, NULL);
    if (rc)
        return rc;
    const h5s_nifti_header *h = h5s_nifti_reader_header(r);
    h5s_volume_obs obs;
    memset(&obs, 0, sizeof obs);
    obs_from_nifti(&obs, h);
    char def_id[256], def_series[256];
    default_names(path, def_id, sizeof def_id, def_series, sizeof def_series);
    if ((rc = copy_id(obs.obs_id, sizeof obs.obs_id, obs_id ? obs_id : def_id, "obs_id", 1)) != 0 ||
        (rc = copy_id(obs.obs_subject_id, sizeof obs.obs_subject_id, obs_subject_id,
                      "obs_subject_id", 0)) != 0 ||
        (rc = copy_id(obs.series_type, sizeof obs.series_type,
                      series_type ? series_type : def_series, "series_type", 0)) != 0) {
        h5s_nifti_close(r);
        return h5s_error_prefix(rc, "%s", path);
    }
    h5s_volume_stream *s = NULL;
    rc = h5s_collection_begin(&s, c, &obs, NULL);
    if (rc) {
        h5s_nifti_close(r);
        return h5s_error_prefix(rc, "%s", path);
    }
    uint64_t total = h5s_nifti_nslices(h);
    size_t slice = (size_t)(h5s_nifti_slice_voxels(h) * h5s_dtype_size(h->dtype));
    uint64_t batch = slice ? VOL_IMPORT_BYTES / slice : 1;
    if (batch == 0)
        batch = 1;
    if (batch > total)
        batch = total;
    void *buf = malloc((size_t)batch * slice);
    if (!buf)
        rc = h5s_error_set(H5S_ENOMEM, "%s: out of memory", path);
    for (uint64_t done = 0; rc == 0 && done < total;) {
        uint64_t n = total - done < batch ? total - done : batch;
        rc = h5s_nifti_read_slices(r, buf, (size_t)n * slice, n);
        if (rc == 0)
            rc = h5s_volume_stream_write(s, buf, (size_t)n * slice, n);
        done += n;
    }
    free(buf);
    h5s_nifti_close(r);
    if (rc) {
        h5s_volume_stream_abort(s);
        return rc;
    }
    return h5s_volume_stream_commit(s);
}
