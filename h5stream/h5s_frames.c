/*
 * h5s_frames.c - the frames model: streaming datasets [N, frame...] with per-frame
 * datasets, fed by producers, encoded by the pool and written by the writer thread.
 *
 * A band is frames_per_chunk consecutive frames: the unit that producers fill, encoders
 * cut into tiles and compress, and the writer stores with H5Dwrite_chunk.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "h5s_engine.h"
#include "h5s_error.h"
#include "h5s_format.h"

/* Elements per chunk of the 1-D per-frame datasets. */
#define H5S_META_CHUNK 1024
/* HDF5 stores a chunk's size in 32 bits. */
#define H5S_MAX_CHUNK_BYTES ((size_t)0xFFFFFFFFu)

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const char *file_path(const h5s_frames *fr)
{
    return fr->file->path;
}

/* Creates group path (and its parents) unless it exists; tags new ones with NX_class. */
static int nexus_group(hid_t fid, const char *path, const char *nx_class)
{
    if (h5s_format_path_exists(fid, path))
        return 0;
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t g = H5Gcreate2(fid, path, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    H5Pclose(lcpl);
    if (g < 0)
        return -1;
    int rc = h5s_attr_string(g, "NX_class", nx_class);
    H5Gclose(g);
    return rc;
}

static int set_group_attr(hid_t fid, const char *path, const char *name, const char *value)
{
    hid_t g = H5Oopen(fid, path, H5P_DEFAULT);
    if (g < 0)
        return -1;
    int rc = H5Aexists(g, name) > 0 ? 0 : h5s_attr_string(g, name, value);
    H5Oclose(g);
    return rc;
}

static int create_nexus_groups(hid_t fid)
{
    if (nexus_group(fid, "/entry", "NXentry") < 0 ||
        nexus_group(fid, "/entry/instrument", "NXinstrument") < 0 ||
        nexus_group(fid, "/entry/instrument/detector", "NXdetector") < 0 ||
        nexus_group(fid, "/entry/data", "NXdata") < 0 ||
        set_group_attr(fid, "/entry/data", "signal", "data") < 0 ||
        set_group_attr(fid, "/entry", "default", "data") < 0 ||
        set_group_attr(fid, "/", "default", "entry") < 0)
        return -1;
    return 0;
}

/* A 1-D unlimited chunked dataset for per-frame values, with NeXus units if given. */
static int create_meta_dataset(hid_t fid, const char *path, hid_t type, const char *units)
{
    hsize_t zero = 0, unlimited = H5S_UNLIMITED, chunk = H5S_META_CHUNK;
    hid_t space = H5Screate_simple(1, &zero, &unlimited);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, &chunk);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t d = H5Dcreate2(fid, path, type, space, lcpl, dcpl, H5P_DEFAULT);
    H5Pclose(lcpl);
    H5Pclose(dcpl);
    H5Sclose(space);
    if (d < 0)
        return -1;
    int rc = units ? h5s_attr_string(d, "units", units) : 0;
    H5Dclose(d);
    return rc;
}

/* Range of an integer dtype (as doubles); 0 for float types. */
static int integer_range(h5s_dtype dtype, double *lo, double *hi)
{
    size_t bits = 8 * h5s_dtype_size(dtype);
    switch (dtype) {
    case H5S_INT8:
    case H5S_INT16:
    case H5S_INT32:
    case H5S_INT64:
        *lo = -ldexp(1.0, (int)bits - 1);
        *hi = ldexp(1.0, (int)bits - 1) - 1;
        return 1;
    case H5S_UINT8:
    case H5S_UINT16:
    case H5S_UINT32:
    case H5S_UINT64:
        *lo = 0;
        *hi = ldexp(1.0, (int)bits) - 1;
        return 1;
    default:
        return 0;
    }
}

static int check_options(const h5s_frames_options *o, const char *where)
{
    if (o->version != H5S_FRAMES_OPTIONS_VERSION)
        return h5s_error_set(H5S_EINVAL, "%s: frames options version %u, expected %u", where,
                             o->version, H5S_FRAMES_OPTIONS_VERSION);
    if (h5s_dtype_size(o->dtype) == 0)
        return h5s_error_set(H5S_EINVAL, "%s: invalid dtype %d", where, (int)o->dtype);
    if (o->rank < 1 || o->rank > 3)
        return h5s_error_set(H5S_EINVAL, "%s: frame rank %u (expected 1 to 3)", where, o->rank);
    int tiled = 0;
    for (unsigned i = 0; i < o->rank; i++) {
        if (o->dims[i] == 0)
            return h5s_error_set(H5S_EINVAL, "%s: frame axis %u has length 0", where, i);
        tiled |= o->tile[i] != 0;
    }
    for (unsigned i = 0; tiled && i < o->rank; i++)
        if (o->tile[i] == 0 || o->tile[i] > o->dims[i])
            return h5s_error_set(H5S_EINVAL,
                                 "%s: tile axis %u is %llu (expected 1 to the frame's %llu)", where,
                                 i, (unsigned long long)o->tile[i], (unsigned long long)o->dims[i]);
    if (o->frames_per_chunk == 0)
        return h5s_error_set(H5S_EINVAL, "%s: frames_per_chunk is 0", where);
    if (!isfinite(o->fill_value))
        return h5s_error_set(H5S_EINVAL, "%s: fill value is not finite", where);
    double lo, hi;
    if (integer_range(o->dtype, &lo, &hi) &&
        (o->fill_value != floor(o->fill_value) || o->fill_value < lo || o->fill_value > hi))
        return h5s_error_set(H5S_EINVAL, "%s: fill value %g does not fit %s (%.0f to %.0f)", where,
                             o->fill_value, h5s_dtype_name(o->dtype), lo, hi);
    return h5s_codec_validate(&o->codec);
}

/* Derives sizes, chunk shape and the tile grid; fails when a chunk is too big for HDF5. */
static int layout(h5s_frames *fr)
{
    const h5s_frames_options *o = &fr->opts;
    size_t esize = h5s_dtype_size(o->dtype);
    double frame_bytes = (double)esize, chunk_bytes = (double)esize * o->frames_per_chunk;
    fr->chunk_dims[0] = o->frames_per_chunk;
    for (unsigned a = 0; a < 3; a++)
        fr->tiles[a] = 1;
    for (unsigned i = 0; i < o->rank; i++) {
        uint64_t t = o->tile[i] ? o->tile[i] : o->dims[i];
        fr->chunk_dims[1 + i] = t;
        fr->tiles[3 - o->rank + i] = (o->dims[i] + t - 1) / t;
        frame_bytes *= (double)o->dims[i];
        chunk_bytes *= (double)t;
    }
    if (chunk_bytes > (double)H5S_MAX_CHUNK_BYTES || frame_bytes * o->frames_per_chunk > 1e15)
        return h5s_error_set(H5S_EINVAL,
                             "%s: a chunk of %.0f bytes exceeds HDF5's 4 GiB chunk limit; use "
                             "a tile or fewer frames per chunk",
                             file_path(fr), chunk_bytes);
    fr->frame_bytes = (size_t)frame_bytes;
    fr->band_bytes = fr->frame_bytes * o->frames_per_chunk;
    fr->chunk_bytes = (size_t)chunk_bytes;
    fr->chunk_bound = h5s_codec_bound(&o->codec, fr->chunk_bytes);
    memset(fr->fill, 0, sizeof fr->fill);
    double fill = o->fill_value;
    memcpy(fr->fill, &fill, sizeof fill);
    /* HDF5's own conversion, so padding equals the dataset's fill value exactly. */
    if (H5Tconvert(H5T_NATIVE_DOUBLE, h5s_format_h5type(o->dtype), 1, fr->fill, NULL, H5P_DEFAULT) <
        0)
        return h5s_error_set_h5(H5S_EINVAL, "%s: fill value %g does not convert to %s",
                                file_path(fr), fill, h5s_dtype_name(o->dtype));
    return 0;
}

static int create_data_dataset(h5s_frames *fr)
{
    const h5s_frames_options *o = &fr->opts;
    hid_t fid = fr->file->fid;
    int rank = (int)o->rank + 1;
    hsize_t dims[H5S_DSET_RANK_MAX] = {0}, maxdims[H5S_DSET_RANK_MAX] = {H5S_UNLIMITED};
    for (unsigned i = 0; i < o->rank; i++)
        dims[1 + i] = maxdims[1 + i] = o->dims[i];
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, rank, fr->chunk_dims);
    double fill = o->fill_value;
    H5Pset_fill_value(dcpl, H5T_NATIVE_DOUBLE, &fill);
    int rc = h5s_codec_set_dcpl(dcpl, &o->codec);
    if (rc) {
        H5Pclose(dcpl);
        return rc;
    }
    hid_t space = H5Screate_simple(rank, dims, maxdims);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t d =
        H5Dcreate2(fid, fr->path, h5s_format_h5type(o->dtype), space, lcpl, dcpl, H5P_DEFAULT);
    H5Pclose(lcpl);
    H5Sclose(space);
    H5Pclose(dcpl);
    if (d < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: cannot create %s", file_path(fr), fr->path);
    H5Dclose(d);
    return 0;
}

int h5s_frames_create(h5s_frames **out, h5s_file *file, const char *path,
                      const h5s_frames_options *opts)
{
    h5s_error_clear();
    if (!out || !file || !opts)
        return h5s_error_set(H5S_EINVAL, "h5s_frames_create: NULL argument");
    *out = NULL;
    if (file->started)
        return h5s_error_set(H5S_ESTATE, "%s: frames dataset declared after SWMR started",
                             file->path);
    int nexus = path == NULL;
    const char *p = nexus ? H5S_FRAMES_DEFAULT_PATH : path;
    if (p[0] != '/' || strlen(p) >= H5S_NAME_MAX || p[strlen(p) - 1] == '/')
        return h5s_error_set(H5S_EINVAL,
                             "%s: dataset path '%s' must be absolute, shorter "
                             "than %d bytes",
                             file->path, p, H5S_NAME_MAX);
    int rc = check_options(opts, file->path);
    if (rc)
        return rc;
    h5s_frames *fr = calloc(1, sizeof *fr);
    h5s_frames **grown = realloc(file->frames, (file->nframes + 1) * sizeof *grown);
    if (!fr || !grown) {
        free(fr);
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", file->path);
    }
    file->frames = grown;
    fr->file = file;
    fr->opts = *opts;
    fr->dset = fr->id_dset = fr->ts_dset = H5I_INVALID_HID;
    snprintf(fr->path, sizeof fr->path, "%s", p);
    pthread_mutex_init(&fr->mu, NULL);
    if ((rc = layout(fr)) != 0 ||
        (rc = h5s_format_sidecar(fr->id_path, sizeof fr->id_path, p, H5S_SIDECAR_FRAME_ID)) ||
        (rc = h5s_format_sidecar(fr->ts_path, sizeof fr->ts_path, p, H5S_SIDECAR_TIMESTAMP)))
        goto fail;
    if (h5s_format_path_exists(file->fid, p) || h5s_format_path_exists(file->fid, fr->id_path) ||
        h5s_format_path_exists(file->fid, fr->ts_path) ||
        (nexus && h5s_format_path_exists(file->fid, H5S_FRAMES_NXDATA_LINK))) {
        rc = h5s_error_set(H5S_EINVAL, "%s: %s or its per-frame datasets already exist", file->path,
                           p);
        goto fail;
    }
    if (nexus && create_nexus_groups(file->fid) < 0) {
        rc = h5s_error_set_h5(H5S_EIO, "%s: cannot create the NeXus groups", file->path);
        goto fail;
    }
    if ((rc = create_data_dataset(fr)) != 0)
        goto fail;
    if (create_meta_dataset(file->fid, fr->id_path, H5T_STD_U64LE, NULL) < 0 ||
        create_meta_dataset(file->fid, fr->ts_path, H5T_IEEE_F64LE, "s") < 0) {
        rc = h5s_error_set_h5(H5S_EIO, "%s: cannot create the per-frame datasets of %s", file->path,
                              p);
        goto fail;
    }
    if (nexus && (rc = h5s_file_link(file, H5S_FRAMES_NXDATA_LINK, p)) != 0)
        goto fail;
    file->frames[file->nframes++] = fr;
    *out = fr;
    return 0;
fail:
    pthread_mutex_destroy(&fr->mu);
    free(fr);
    return rc;
}

/* ---- Reopening a file to append ------------------------------------------------- */

/* Extent along the first axis of the dataset at path, or -1. */
static int64_t extent_of(hid_t fid, const char *path)
{
    hid_t d = H5Dopen2(fid, path, H5P_DEFAULT);
    if (d < 0)
        return -1;
    hid_t sp = H5Dget_space(d);
    hsize_t dims[H5S_DSET_RANK_MAX + 1];
    int rank = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    int64_t n =
        rank >= 1 && rank <= H5S_DSET_RANK_MAX && H5Sget_simple_extent_dims(sp, dims, NULL) >= 0
            ? (int64_t)dims[0]
            : -1;
    if (sp >= 0)
        H5Sclose(sp);
    H5Dclose(d);
    return n;
}

/* Reads the layout of the data dataset into fr->opts. */
static int read_layout(h5s_frames *fr, hid_t d)
{
    const char *where = file_path(fr);
    hid_t type = H5Dget_type(d), space = H5Dget_space(d), dcpl = H5Dget_create_plist(d);
    hsize_t dims[H5S_DSET_RANK_MAX], chunk[H5S_DSET_RANK_MAX];
    int rank = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    int rc = 0;
    h5s_frames_options *o = &fr->opts;
    *o = (h5s_frames_options)H5S_FRAMES_OPTIONS_INIT;
    o->dtype = type >= 0 ? h5s_format_dtype_of(type) : H5S_DTYPE_INVALID;
    if (o->dtype == H5S_DTYPE_INVALID || rank < 2 || rank > H5S_DSET_RANK_MAX ||
        H5Sget_simple_extent_dims(space, dims, NULL) < 0 || H5Pget_layout(dcpl) != H5D_CHUNKED ||
        H5Pget_chunk(dcpl, rank, chunk) != rank) {
        rc = h5s_error_set(H5S_EFORMAT, "%s: %s: not a chunked [N, frame...] numeric dataset",
                           where, fr->path);
    } else {
        o->rank = (unsigned)rank - 1;
        for (unsigned i = 0; i < o->rank; i++) {
            o->dims[i] = dims[1 + i];
            o->tile[i] = chunk[1 + i];
        }
        o->frames_per_chunk = (uint32_t)chunk[0];
        if (H5Pget_fill_value(dcpl, H5T_NATIVE_DOUBLE, &o->fill_value) < 0)
            o->fill_value = 0;
        rc = h5s_codec_from_dcpl(&o->codec, dcpl);
        if (rc)
            rc = h5s_error_prefix(rc, "%s: %s", where, fr->path);
    }
    if (type >= 0)
        H5Tclose(type);
    if (space >= 0)
        H5Sclose(space);
    if (dcpl >= 0)
        H5Pclose(dcpl);
    return rc;
}

/* Declares the per-frame values among the dataset's per-frame datasets (all but its
 * timestamp), as h5s_format_find_frames found them. */
static int adopt_scalars(h5s_frames *fr, const h5s_format_frames *found)
{
    for (unsigned i = 0; i < found->nper_frame; i++) {
        const char *path = found->per_frame[i];
        if (strcmp(path, fr->ts_path) == 0)
            continue;
        if (fr->nscalars == H5S_MAX_SCALARS)
            return h5s_error_set(H5S_EFORMAT, "%s: %s: more than %d per-frame values",
                                 file_path(fr), fr->path, H5S_MAX_SCALARS);
        h5s_scalar *sc = &fr->scalars[fr->nscalars];
        memset(sc, 0, sizeof *sc);
        snprintf(sc->name, sizeof sc->name, "%s", strrchr(path, '/') + 1);
        snprintf(sc->path, sizeof sc->path, "%s", path);
        hid_t sd = H5Dopen2(fr->file->fid, sc->path, H5P_DEFAULT);
        hid_t st = sd >= 0 ? H5Dget_type(sd) : H5I_INVALID_HID;
        sc->dtype = st >= 0 ? h5s_format_dtype_of(st) : H5S_DTYPE_INVALID;
        if (st >= 0)
            H5Tclose(st);
        if (sd >= 0)
            H5Dclose(sd);
        if (sc->dtype == H5S_DTYPE_INVALID)
            return h5s_error_set(H5S_EFORMAT, "%s: per-frame dataset %s is missing or not numeric",
                                 file_path(fr), sc->path);
        sc->dset = H5I_INVALID_HID;
        fr->nscalars++;
    }
    return 0;
}

/* Builds the frames object of an existing dataset; the counts come from its marker. */
static int adopt(h5s_file *f, const h5s_format_frames *found)
{
    const char *path = found->data;
    h5s_frames *fr = calloc(1, sizeof *fr);
    h5s_frames **grown = realloc(f->frames, (f->nframes + 1) * sizeof *grown);
    if (!fr || !grown) {
        free(fr);
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", f->path);
    }
    f->frames = grown;
    fr->file = f;
    fr->adopted = 1;
    fr->dset = fr->id_dset = fr->ts_dset = H5I_INVALID_HID;
    snprintf(fr->path, sizeof fr->path, "%s", path);
    pthread_mutex_init(&fr->mu, NULL);
    hid_t d = H5Dopen2(f->fid, path, H5P_DEFAULT);
    int rc = d < 0 ? h5s_error_set_h5(H5S_EIO, "%s: cannot open %s", f->path, path) : 0;
    if (!rc && !(rc = read_layout(fr, d)) && !(rc = check_options(&fr->opts, f->path)) &&
        !(rc = layout(fr)) &&
        !(rc = h5s_format_sidecar(fr->id_path, sizeof fr->id_path, path, H5S_SIDECAR_FRAME_ID)) &&
        !(rc = h5s_format_sidecar(fr->ts_path, sizeof fr->ts_path, path, H5S_SIDECAR_TIMESTAMP)))
        rc = adopt_scalars(fr, found);
    if (d >= 0)
        H5Dclose(d);
    int64_t n = rc ? -1 : extent_of(f->fid, fr->id_path);
    if (!rc) {
        /* Every payload must be exactly as long as the marker (a clean close does that;
         * after a crash, h5s_recover does). */
        int same = n >= 0 && extent_of(f->fid, path) == n && extent_of(f->fid, fr->ts_path) == n;
        for (unsigned i = 0; same && i < fr->nscalars; i++)
            same = extent_of(f->fid, fr->scalars[i].path) == n;
        if (!same)
            rc = h5s_error_set(H5S_EFORMAT,
                               "%s: %s: its per-frame datasets and frame_id (%lld frames) differ "
                               "in length; run `h5stream recover` first",
                               f->path, path, (long long)n);
    }
    if (rc) {
        pthread_mutex_destroy(&fr->mu);
        free(fr);
        return rc;
    }
    atomic_store(&fr->appended, (uint64_t)n);
    fr->extent = fr->written = fr->committed = (uint64_t)n;
    fr->sealed = fr->opts.frames_per_chunk > 1 && (uint64_t)n % fr->opts.frames_per_chunk != 0;
    f->frames[f->nframes++] = fr;
    return 0;
}

static int adopt_found(const h5s_format_frames *found, void *payload)
{
    return adopt(payload, found);
}

int h5s_frames_adopt_all(h5s_file *f)
{
    return h5s_format_find_frames(f->fid, f->path, adopt_found, f);
}

int h5s_frames_info(const h5s_frames *fr, h5s_frames_options *out)
{
    if (!fr || !out)
        return h5s_error_set(H5S_EINVAL, "h5s_frames_info: NULL argument");
    *out = fr->opts;
    return 0;
}

const char *h5s_frames_path(const h5s_frames *fr)
{
    return fr ? fr->path : NULL;
}

int h5s_frames_add_scalar(h5s_frames *fr, const char *name, h5s_dtype dtype)
{
    h5s_error_clear();
    if (!fr || !name)
        return h5s_error_set(H5S_EINVAL, "h5s_frames_add_scalar: NULL argument");
    if (fr->file->started)
        return h5s_error_set(H5S_ESTATE, "%s: per-frame value '%s' declared after SWMR started",
                             file_path(fr), name);
    if (!name[0] || strchr(name, '/') || strlen(name) >= H5S_NAME_MAX ||
        strcmp(name, H5S_SIDECAR_FRAME_ID) == 0 || strcmp(name, H5S_SIDECAR_TIMESTAMP) == 0)
        return h5s_error_set(H5S_EINVAL,
                             "%s: per-frame value name '%s' is empty, reserved or has a '/'",
                             file_path(fr), name);
    if (h5s_dtype_size(dtype) == 0)
        return h5s_error_set(H5S_EINVAL, "%s: per-frame value '%s': invalid dtype", file_path(fr),
                             name);
    if (fr->nscalars == H5S_MAX_SCALARS)
        return h5s_error_set(H5S_EINVAL, "%s: more than %d per-frame values", file_path(fr),
                             H5S_MAX_SCALARS);
    if (fr->adopted && fr->committed > 0)
        return h5s_error_set(H5S_ESTATE,
                             "%s: %s: cannot add per-frame value '%s' to a dataset that already "
                             "holds %llu frames",
                             file_path(fr), fr->path, name, (unsigned long long)fr->committed);
    h5s_scalar *s = &fr->scalars[fr->nscalars];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    int rc = h5s_format_sidecar(s->path, sizeof s->path, fr->path, name);
    if (rc)
        return rc;
    if (h5s_format_path_exists(fr->file->fid, s->path))
        return h5s_error_set(H5S_EINVAL, "%s: %s already exists", file_path(fr), s->path);
    if (create_meta_dataset(fr->file->fid, s->path, h5s_format_h5type(dtype), NULL) < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: cannot create %s", file_path(fr), s->path);
    s->dtype = dtype;
    s->dset = H5I_INVALID_HID;
    fr->nscalars++;
    return 0;
}

int h5s_frames_write_attrs(h5s_frames *fr)
{
    char list[H5S_MAX_SCALARS * H5S_NAME_MAX + H5S_NAME_MAX] = "";
    size_t len = 0;
    const char *names[H5S_MAX_SCALARS + 1];
    names[0] = strrchr(fr->ts_path, '/') + 1;
    for (unsigned i = 0; i < fr->nscalars; i++)
        names[i + 1] = strrchr(fr->scalars[i].path, '/') + 1;
    for (unsigned i = 0; i <= fr->nscalars; i++)
        len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i ? "," : "", names[i]);
    hid_t d = H5Dopen2(fr->file->fid, fr->path, H5P_DEFAULT);
    int rc = d >= 0 ? h5s_attr_string(d, H5S_ATTR_PER_FRAME, list) : -1;
    if (d >= 0)
        H5Dclose(d);
    if (rc < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s: cannot write attribute %s", file_path(fr),
                                fr->path, H5S_ATTR_PER_FRAME);
    return 0;
}

int h5s_frames_open_swmr(h5s_frames *fr)
{
    hid_t fid = fr->file->fid;
    fr->dset = H5Dopen2(fid, fr->path, H5P_DEFAULT);
    fr->id_dset = H5Dopen2(fid, fr->id_path, H5P_DEFAULT);
    fr->ts_dset = H5Dopen2(fid, fr->ts_path, H5P_DEFAULT);
    int ok = fr->dset >= 0 && fr->id_dset >= 0 && fr->ts_dset >= 0;
    for (unsigned i = 0; i < fr->nscalars; i++) {
        fr->scalars[i].dset = H5Dopen2(fid, fr->scalars[i].path, H5P_DEFAULT);
        ok = ok && fr->scalars[i].dset >= 0;
    }
    if (!ok)
        return h5s_error_set_h5(H5S_EIO, "%s: cannot reopen %s after starting SWMR", file_path(fr),
                                fr->path);
    return 0;
}

void h5s_frames_close_handles(h5s_frames *fr)
{
    hid_t *ids[] = {&fr->dset, &fr->id_dset, &fr->ts_dset};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        if (*ids[i] >= 0)
            H5Dclose(*ids[i]);
        *ids[i] = H5I_INVALID_HID;
    }
    for (unsigned i = 0; i < fr->nscalars; i++) {
        if (fr->scalars[i].dset >= 0)
            H5Dclose(fr->scalars[i].dset);
        fr->scalars[i].dset = H5I_INVALID_HID;
    }
}

/* 1 when chunk c is stored straight from the band buffer (no codec, no tiles). */
static int chunk_in_raw(const h5s_job *job, size_t c)
{
    return job->raw && job->chunks[c].bytes == job->raw;
}

/* Untiled datasets take chunk buffers from the band pool (see h5s_file_start_swmr). */
static h5s_pool *chunk_pool_of(h5s_frames *fr)
{
    return fr->chunk_pool.size ? &fr->chunk_pool : &fr->band_pool;
}

size_t h5s_job_held_bytes(const h5s_job *job)
{
    if (job->kind == H5S_JOB_CHUNK)
        return h5s_column_held_bytes(job);
    if (job->kind != H5S_JOB_BAND)
        return 0;
    size_t n = job->raw ? job->frames->band_bytes_alloc : 0;
    for (size_t c = 0; c < job->nchunks; c++)
        if (job->chunks[c].bytes && !chunk_in_raw(job, c))
            n += chunk_pool_of(job->frames)->size;
    return n;
}

void h5s_job_free(h5s_job *job)
{
    if (!job)
        return;
    if (job->kind != H5S_JOB_BAND)
        h5s_column_job_release(job); /* the other kinds hold no frames buffers */
    for (size_t c = 0; c < job->nchunks; c++)
        if (!chunk_in_raw(job, c))
            h5s_pool_put(chunk_pool_of(job->frames), job->chunks[c].bytes);
    if (job->raw)
        h5s_pool_put(&job->frames->band_pool, job->raw);
    free(job->chunks);
    free(job->ids);
    free(job->stamps);
    free(job->scalars);
    free(job->errmsg);
    free(job);
}

void h5s_frames_free(h5s_frames *fr)
{
    if (!fr)
        return;
    h5s_job_free(fr->band);
    h5s_pool_destroy(&fr->band_pool);
    h5s_pool_destroy(&fr->chunk_pool);
    free(fr->p_ids);
    free(fr->p_stamps);
    free(fr->p_scalars);
    pthread_mutex_destroy(&fr->mu);
    free(fr);
}

uint64_t h5s_frames_count(const h5s_frames *fr)
{
    return fr ? atomic_load(&((h5s_frames *)fr)->appended) : 0;
}

/* ---- producers ------------------------------------------------------------------- */

static h5s_job *band_new(h5s_frames *fr, uint64_t first)
{
    uint32_t k = fr->opts.frames_per_chunk;
    h5s_job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->kind = H5S_JOB_BAND;
    j->frames = fr;
    j->first_frame = first;
    j->charged = fr->band_bytes_alloc;
    j->raw = h5s_pool_get(&fr->band_pool);
    j->ids = malloc(k * sizeof *j->ids);
    j->stamps = malloc(k * sizeof *j->stamps);
    j->scalars = fr->nscalars ? calloc((size_t)k * fr->nscalars, sizeof *j->scalars) : NULL;
    if (!j->raw || !j->ids || !j->stamps || (fr->nscalars && !j->scalars)) {
        h5s_job_free(j);
        return NULL;
    }
    return j;
}

/* Pads the unfilled frames of a band with the fill value. */
static void pad_band(h5s_frames *fr, h5s_job *j)
{
    size_t esize = h5s_dtype_size(fr->opts.dtype);
    unsigned char *p = j->raw + (size_t)j->nframes * fr->frame_bytes;
    unsigned char *end = j->raw + fr->band_bytes;
    for (; p < end; p += esize)
        memcpy(p, fr->fill, esize);
}

int h5s_frames_append(h5s_frames *fr, const void *data, size_t nbytes, const h5s_frame_meta *meta)
{
    h5s_error_clear();
    if (!fr || !data)
        return h5s_error_set(H5S_EINVAL, "h5s_frames_append: NULL argument");
    h5s_file *f = fr->file;
    if (!f->started || atomic_load(&f->closing))
        return h5s_error_set(H5S_ESTATE, "%s: %s: append before SWMR started or after close",
                             f->path, fr->path);
    if (nbytes != fr->frame_bytes)
        return h5s_error_set(H5S_EINVAL, "%s: %s: frame %llu has %zu bytes, expected %zu", f->path,
                             fr->path, (unsigned long long)atomic_load(&fr->appended), nbytes,
                             fr->frame_bytes);
    if (fr->sealed)
        return h5s_error_set(H5S_ESTATE,
                             "%s: %s: cannot append: its last chunk holds %llu of %u frames and "
                             "was padded when the file was closed",
                             f->path, fr->path,
                             (unsigned long long)(fr->committed % fr->opts.frames_per_chunk),
                             fr->opts.frames_per_chunk);
    int rc = h5s_queue_error(&f->q);
    if (rc)
        return rc;
    pthread_mutex_lock(&fr->mu);
    uint64_t index = atomic_load(&fr->appended);
    if (!fr->band) {
        rc = h5s_queue_reserve(&f->q, fr->band_bytes_alloc);
        if (rc == 0 && !(fr->band = band_new(fr, index))) {
            h5s_queue_unreserve(&f->q, fr->band_bytes_alloc);
            rc = h5s_error_set(H5S_ENOMEM, "%s: %s: out of memory at frame %llu", f->path, fr->path,
                               (unsigned long long)index);
        }
        if (rc) {
            pthread_mutex_unlock(&fr->mu);
            return rc;
        }
    }
    h5s_job *j = fr->band;
    uint32_t i = j->nframes;
    memcpy(j->raw + (size_t)i * fr->frame_bytes, data, fr->frame_bytes);
    j->ids[i] = meta && meta->has_frame_id ? meta->frame_id : index;
    j->stamps[i] = meta && meta->has_timestamp ? meta->timestamp : wall_now();
    if (fr->nscalars && meta && meta->scalars)
        memcpy(j->scalars + (size_t)i * fr->nscalars, meta->scalars, fr->nscalars * sizeof(double));
    j->nframes++;
    atomic_store(&fr->appended, index + 1);
    if (j->nframes == fr->opts.frames_per_chunk) {
        fr->band = NULL;
        h5s_queue_submit(&f->q, j);
    }
    pthread_mutex_unlock(&fr->mu);
    return 0;
}

int h5s_frames_submit_partial(h5s_frames *fr)
{
    pthread_mutex_lock(&fr->mu);
    h5s_job *j = fr->band;
    fr->band = NULL;
    if (j) {
        pad_band(fr, j);
        h5s_queue_submit(&fr->file->q, j);
    }
    pthread_mutex_unlock(&fr->mu);
    return 0;
}

/* ---- encoders -------------------------------------------------------------------- */

/*
 * Copies tile t (3-D tile coordinates) of every frame of the band into dst, C order
 * [k, c0, c1, c2], padding the parts outside the frame with the fill value. Frames are
 * viewed as 3-D with leading axes of length 1.
 */
static void gather_tile(const h5s_frames *fr, const h5s_job *j, const uint64_t t[3],
                        unsigned char *dst)
{
    const h5s_frames_options *o = &fr->opts;
    size_t es = h5s_dtype_size(o->dtype);
    uint64_t v[3] = {1, 1, 1}, c[3] = {1, 1, 1};
    for (unsigned i = 0; i < o->rank; i++) {
        v[3 - o->rank + i] = o->dims[i];
        c[3 - o->rank + i] = fr->chunk_dims[1 + i];
    }
    uint64_t o0 = t[0] * c[0], o1 = t[1] * c[1], o2 = t[2] * c[2];
    uint64_t row = o2 + c[2] <= v[2] ? c[2] : v[2] - o2;
    for (uint32_t f = 0; f < o->frames_per_chunk; f++) {
        const unsigned char *frame = j->raw + (size_t)f * fr->frame_bytes;
        for (uint64_t a = 0; a < c[0]; a++) {
            for (uint64_t b = 0; b < c[1]; b++) {
                uint64_t n = (o0 + a < v[0] && o1 + b < v[1]) ? row : 0;
                if (n)
                    memcpy(dst, frame + (((o0 + a) * v[1] + (o1 + b)) * v[2] + o2) * es, n * es);
                for (uint64_t e = n; e < c[2]; e++)
                    memcpy(dst + e * es, fr->fill, es);
                dst += c[2] * es;
            }
        }
    }
}

int h5s_frames_encode(h5s_job *j, unsigned char *gather, unsigned char *scratch)
{
    h5s_frames *fr = j->frames;
    const h5s_frames_options *o = &fr->opts;
    size_t es = h5s_dtype_size(o->dtype);
    size_t ntiles = (size_t)(fr->tiles[0] * fr->tiles[1] * fr->tiles[2]);
    int whole = ntiles == 1; /* one tile covers the frame: the band is the chunk */
    j->chunks = calloc(ntiles, sizeof *j->chunks);
    if (!j->chunks)
        return h5s_error_set(H5S_ENOMEM, "%s: %s: out of memory encoding frame %llu", file_path(fr),
                             fr->path, (unsigned long long)j->first_frame);
    size_t bound = fr->chunk_bound;
    uint64_t t[3];
    for (t[0] = 0; t[0] < fr->tiles[0]; t[0]++) {
        for (t[1] = 0; t[1] < fr->tiles[1]; t[1]++) {
            for (t[2] = 0; t[2] < fr->tiles[2]; t[2]++) {
                h5s_chunk *ch = &j->chunks[j->nchunks++];
                ch->offset[0] = j->first_frame;
                for (unsigned i = 0; i < o->rank; i++)
                    ch->offset[1 + i] = t[3 - o->rank + i] * fr->chunk_dims[1 + i];
                if (whole && o->codec.kind == H5S_CODEC_NONE) {
                    ch->bytes = j->raw; /* stored as is, no copy */
                    ch->size = fr->chunk_bytes;
                    continue;
                }
                const unsigned char *src = j->raw;
                if (!whole) {
                    gather_tile(fr, j, t, gather);
                    src = gather;
                }
                ch->bytes = h5s_pool_get(chunk_pool_of(fr));
                if (!ch->bytes)
                    return h5s_error_set(H5S_ENOMEM, "%s: %s: out of memory encoding frame %llu",
                                         file_path(fr), fr->path,
                                         (unsigned long long)j->first_frame);
                int rc = h5s_codec_encode(&o->codec, es, src, fr->chunk_bytes, ch->bytes, bound,
                                          scratch, &ch->size, &ch->mask);
                if (rc)
                    return h5s_error_prefix(rc, "%s: %s: frame %llu", file_path(fr), fr->path,
                                            (unsigned long long)j->first_frame);
            }
        }
    }
    if (!(whole && o->codec.kind == H5S_CODEC_NONE)) {
        h5s_pool_put(&fr->band_pool, j->raw);
        j->raw = NULL;
    }
    return 0;
}

/* ---- writer thread --------------------------------------------------------------- */

static int set_extent(hid_t dset, int rank, const h5s_frames_options *o, uint64_t n)
{
    hsize_t dims[H5S_DSET_RANK_MAX] = {n};
    for (int i = 1; i < rank; i++)
        dims[i] = o->dims[i - 1];
    return H5Dset_extent(dset, dims) < 0 ? -1 : 0;
}

int h5s_frames_extend(h5s_frames *fr, uint64_t end)
{
    if (end <= fr->extent)
        return 0;
    if (set_extent(fr->dset, (int)fr->opts.rank + 1, &fr->opts, end) < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s: cannot extend to %llu frames", file_path(fr),
                                fr->path, (unsigned long long)end);
    fr->extent = end;
    return 0;
}

static int reserve_pending(h5s_frames *fr, size_t n)
{
    if (n <= fr->p_cap)
        return 0;
    size_t cap = fr->p_cap ? fr->p_cap : 1024;
    while (cap < n)
        cap *= 2;
    uint64_t *ids = realloc(fr->p_ids, cap * sizeof *ids);
    if (ids)
        fr->p_ids = ids;
    double *st = realloc(fr->p_stamps, cap * sizeof *st);
    if (st)
        fr->p_stamps = st;
    double *sc = fr->nscalars ? realloc(fr->p_scalars, cap * fr->nscalars * sizeof *sc) : NULL;
    if (sc)
        fr->p_scalars = sc;
    if (!ids || !st || (fr->nscalars && !sc))
        return -1;
    fr->p_cap = cap;
    return 0;
}

void h5s_frames_test_break_after(h5s_frames *fr, uint64_t chunks)
{
    fr->break_after = chunks;
}

int h5s_frames_write_band(h5s_frames *fr, h5s_job *j)
{
    h5s_file *f = fr->file;
    for (size_t c = 0; c < j->nchunks; c++) {
        h5s_chunk *ch = &j->chunks[c];
        hid_t dset = fr->dset;
        if (fr->break_after && ++fr->chunk_writes > fr->break_after)
            dset = H5I_INVALID_HID;
        if (H5Dwrite_chunk(dset, H5P_DEFAULT, ch->mask, ch->offset, ch->size, ch->bytes) < 0)
            return h5s_error_set_h5(H5S_EIO, "%s: %s: frame %llu: cannot write chunk %zu", f->path,
                                    fr->path, (unsigned long long)j->first_frame, c);
        atomic_fetch_add(&f->st_bytes_stored, ch->size);
    }
    atomic_fetch_add(&f->st_bytes_raw, (uint64_t)j->nframes * fr->frame_bytes);
    size_t at = (size_t)(fr->written - fr->committed);
    if (reserve_pending(fr, at + j->nframes) < 0)
        return h5s_error_set(H5S_ENOMEM, "%s: %s: out of memory at frame %llu", f->path, fr->path,
                             (unsigned long long)j->first_frame);
    memcpy(fr->p_ids + at, j->ids, j->nframes * sizeof *j->ids);
    memcpy(fr->p_stamps + at, j->stamps, j->nframes * sizeof *j->stamps);
    if (fr->nscalars)
        memcpy(fr->p_scalars + at * fr->nscalars, j->scalars,
               (size_t)j->nframes * fr->nscalars * sizeof *j->scalars);
    fr->written = j->first_frame + j->nframes;
    return 0;
}

/* Extends a 1-D per-frame dataset to `end` and writes n values ending there. */
static int write_meta(hid_t dset, hid_t memtype, uint64_t end, uint64_t n, const void *values,
                      size_t stride_bytes, size_t elem_bytes)
{
    hsize_t dim = end, start = end - n, count = n;
    if (H5Dset_extent(dset, &dim) < 0)
        return -1;
    hid_t fspace = H5Dget_space(dset);
    H5Sselect_hyperslab(fspace, H5S_SELECT_SET, &start, NULL, &count, NULL);
    /* Values may be interleaved (per-frame scalars): select every stride-th element. */
    hsize_t mdim = n * (stride_bytes / elem_bytes), mstart = 0, mstride = stride_bytes / elem_bytes;
    hid_t mspace = H5Screate_simple(1, &mdim, NULL);
    H5Sselect_hyperslab(mspace, H5S_SELECT_SET, &mstart, &mstride, &count, NULL);
    herr_t st = H5Dwrite(dset, memtype, mspace, fspace, H5P_DEFAULT, values);
    H5Sclose(mspace);
    H5Sclose(fspace);
    return st < 0 ? -1 : 0;
}

int h5s_frames_commit_payload(h5s_frames *fr)
{
    uint64_t n = fr->written - fr->committed;
    const char *bad = NULL;
    if (n > 0) {
        if (write_meta(fr->ts_dset, H5T_NATIVE_DOUBLE, fr->written, n, fr->p_stamps, sizeof(double),
                       sizeof(double)) < 0)
            bad = fr->ts_path;
        for (unsigned s = 0; !bad && s < fr->nscalars; s++)
            if (write_meta(fr->scalars[s].dset, H5T_NATIVE_DOUBLE, fr->written, n,
                           fr->p_scalars + s, fr->nscalars * sizeof(double), sizeof(double)) < 0)
                bad = fr->scalars[s].path;
    }
    if (!bad && H5Dflush(fr->dset) < 0)
        bad = fr->path;
    if (!bad && H5Dflush(fr->ts_dset) < 0)
        bad = fr->ts_path;
    for (unsigned s = 0; !bad && s < fr->nscalars; s++)
        if (H5Dflush(fr->scalars[s].dset) < 0)
            bad = fr->scalars[s].path;
    if (bad)
        return h5s_error_set_h5(H5S_EIO, "%s: %s: commit of frames %llu to %llu failed",
                                file_path(fr), bad, (unsigned long long)fr->committed,
                                (unsigned long long)fr->written);
    return 0;
}

int h5s_frames_commit_marker(h5s_frames *fr)
{
    uint64_t n = fr->written - fr->committed;
    if (n == 0)
        return 0;
    if (write_meta(fr->id_dset, H5T_NATIVE_UINT64, fr->written, n, fr->p_ids, sizeof(uint64_t),
                   sizeof(uint64_t)) < 0 ||
        H5Dflush(fr->id_dset) < 0) {
        int rc = h5s_error_set_h5(H5S_EIO, "%s: %s: commit of frames %llu to %llu failed",
                                  file_path(fr), fr->id_path, (unsigned long long)fr->committed,
                                  (unsigned long long)fr->written);
        /* The marker was extended before its values were written: take the extent back,
         * or the next metadata flush (at close) would commit frames whose ids never
         * reached the disk (a full disk fails the values' new chunk, not the extent). */
        hsize_t back = fr->committed;
        H5Dset_extent(fr->id_dset, &back);
        H5Eclear2(H5E_DEFAULT);
        return rc;
    }
    fr->committed = fr->written;
    return 0;
}
