/*
 * h5s_volumes_layout.c - the volumes model's on-disk row types (h5s_volumes_layout.h):
 * the obs and obs_meta compounds, shared by the writer (h5stream/h5s_volumes.c) and the
 * readers (readers/h5s_volumes_reader.c), so readers depend on the format, not on the
 * writer engine.
 */
#include <stdio.h>
#include <string.h>

#include "h5s_error.h"
#include "h5s_volumes_layout.h"

/* ---- types ------------------------------------------------------------------------- */

static hid_t str_type(size_t size)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0)
        return t;
    if (H5Tset_size(t, size) < 0 || H5Tset_strpad(t, H5T_STR_NULLTERM) < 0) {
        H5Tclose(t);
        return H5I_INVALID_HID;
    }
    return t;
}

static int insert_array(hid_t t, const char *name, size_t off, hid_t base, unsigned rank,
                        const hsize_t *dims)
{
    hid_t a = H5Tarray_create2(base, rank, dims);
    if (a < 0)
        return -1;
    herr_t e = H5Tinsert(t, name, off, a);
    H5Tclose(a);
    return e < 0 ? -1 : 0;
}

static int insert_str(hid_t t, const char *name, size_t off, size_t size)
{
    hid_t s = str_type(size);
    if (s < 0)
        return -1;
    herr_t e = H5Tinsert(t, name, off, s);
    H5Tclose(s);
    return e < 0 ? -1 : 0;
}

size_t h5s_meta_cell_size(const h5s_meta_column *c)
{
    if (c->type == H5S_META_STRING)
        return c->strsize ? c->strsize : H5S_META_DEFAULT_STRSIZE;
    return 8;
}

static const char *const builtin_obs[] = {
    "obs_id",     "obs_subject_id", "series_type",    "voxel_index", "pool_offset",
    "ndim",       "nifti_version",  "shape",          "pixdim",      "affine",
    "qform_code", "sform_code",     "quatern",        "qoffset",     "qfac",
    "srow",       "xyzt_units",     "nifti_datatype", "scl_slope",   "scl_inter",
    "cal_min",    "cal_max",        "intent_code",    "intent_p",    "intent_name",
    "descrip",    "aux_file",       "dim_info",       "slice_code",  "slice_start",
    "slice_end",  "slice_duration", "toffset"};

static int check_columns(const h5s_meta_column *cols, size_t n, const char *const *reserved,
                         size_t nreserved, const char *what)
{
    if (n > H5S_VOLUMES_MAX_COLUMNS)
        return h5s_error_set(H5S_EINVAL, "%s: %zu columns (at most %d)", what, n,
                             H5S_VOLUMES_MAX_COLUMNS);
    if (n && !cols)
        return h5s_error_set(H5S_EINVAL, "%s: NULL columns", what);
    for (size_t i = 0; i < n; i++) {
        const char *name = cols[i].name;
        if (!name || !*name || strlen(name) > 63)
            return h5s_error_set(H5S_EINVAL, "%s: column %zu: empty or too long name", what, i);
        for (const char *p = name; *p; p++)
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' || *p == '.'))
                return h5s_error_set(H5S_EINVAL,
                                     "%s: column '%s': only letters, digits, '_', '-' and '.'",
                                     what, name);
        if (cols[i].type != H5S_META_STRING && cols[i].type != H5S_META_INT &&
            cols[i].type != H5S_META_FLOAT)
            return h5s_error_set(H5S_EINVAL, "%s: column '%s': unknown type %d", what, name,
                                 (int)cols[i].type);
        if (cols[i].type == H5S_META_STRING && cols[i].strsize == 1)
            return h5s_error_set(H5S_EINVAL, "%s: column '%s': strsize 1 holds no text", what,
                                 name);
        for (size_t k = 0; k < nreserved; k++)
            if (strcmp(name, reserved[k]) == 0)
                return h5s_error_set(H5S_EINVAL, "%s: column '%s' is a built-in column", what,
                                     name);
        for (size_t k = 0; k < i; k++)
            if (strcmp(name, cols[k].name) == 0)
                return h5s_error_set(H5S_EINVAL, "%s: column '%s' declared twice", what, name);
    }
    return 0;
}

/* Inserts the columns after offset base; returns the packed end, or 0 on error. */
static size_t insert_columns(hid_t t, size_t base, const h5s_meta_column *cols, size_t n)
{
    size_t off = base;
    for (size_t i = 0; i < n; i++) {
        int e;
        if (cols[i].type == H5S_META_STRING)
            e = insert_str(t, cols[i].name, off, h5s_meta_cell_size(&cols[i]));
        else
            e = H5Tinsert(t, cols[i].name, off,
                          cols[i].type == H5S_META_INT ? H5T_STD_I64LE : H5T_IEEE_F64LE) < 0
                    ? -1
                    : 0;
        if (e)
            return 0;
        off += h5s_meta_cell_size(&cols[i]);
    }
    return off;
}

static size_t columns_bytes(const h5s_meta_column *cols, size_t n)
{
    size_t b = 0;
    for (size_t i = 0; i < n; i++)
        b += h5s_meta_cell_size(&cols[i]);
    return b;
}

hid_t h5s_volumes_obs_type(const h5s_meta_column *extra, size_t nextra, size_t *out_row_bytes)
{
    if (check_columns(extra, nextra, builtin_obs, sizeof builtin_obs / sizeof *builtin_obs,
                      "obs") != 0)
        return H5I_INVALID_HID;
    size_t row = sizeof(h5s_volume_obs) + columns_bytes(extra, nextra);
    hid_t t = H5Tcreate(H5T_COMPOUND, row);
    if (t < 0)
        return t;
    hsize_t d3[1] = {3}, d7[1] = {H5S_VOLUMES_MAX_DIMS}, d8[1] = {8}, d44[2] = {4, 4},
            d34[2] = {3, 4};
    int e = 0;
#define VOL_INS(name, type) e |= H5Tinsert(t, #name, offsetof(h5s_volume_obs, name), type) < 0
#define VOL_STR(name)                                                                              \
    e |= insert_str(t, #name, offsetof(h5s_volume_obs, name), sizeof(((h5s_volume_obs *)0)->name))
#define VOL_ARR(name, base, rank, dims)                                                            \
    e |= insert_array(t, #name, offsetof(h5s_volume_obs, name), base, rank, dims)
    VOL_STR(obs_id);
    VOL_STR(obs_subject_id);
    VOL_STR(series_type);
    VOL_INS(voxel_index, H5T_STD_U64LE);
    VOL_INS(pool_offset, H5T_STD_U64LE);
    VOL_INS(ndim, H5T_STD_I32LE);
    VOL_INS(nifti_version, H5T_STD_I32LE);
    VOL_ARR(shape, H5T_STD_I64LE, 1, d7);
    VOL_ARR(pixdim, H5T_IEEE_F64LE, 1, d8);
    VOL_ARR(affine, H5T_IEEE_F64LE, 2, d44);
    VOL_INS(qform_code, H5T_STD_I32LE);
    VOL_INS(sform_code, H5T_STD_I32LE);
    VOL_ARR(quatern, H5T_IEEE_F64LE, 1, d3);
    VOL_ARR(qoffset, H5T_IEEE_F64LE, 1, d3);
    VOL_INS(qfac, H5T_IEEE_F64LE);
    VOL_ARR(srow, H5T_IEEE_F64LE, 2, d34);
    VOL_INS(xyzt_units, H5T_STD_I32LE);
    VOL_INS(nifti_datatype, H5T_STD_I32LE);
    VOL_INS(scl_slope, H5T_IEEE_F64LE);
    VOL_INS(scl_inter, H5T_IEEE_F64LE);
    VOL_INS(cal_min, H5T_IEEE_F64LE);
    VOL_INS(cal_max, H5T_IEEE_F64LE);
    VOL_INS(intent_code, H5T_STD_I32LE);
    VOL_ARR(intent_p, H5T_IEEE_F64LE, 1, d3);
    VOL_STR(intent_name);
    VOL_STR(descrip);
    VOL_STR(aux_file);
    VOL_INS(dim_info, H5T_STD_I32LE);
    VOL_INS(slice_code, H5T_STD_I32LE);
    VOL_INS(slice_start, H5T_STD_I64LE);
    VOL_INS(slice_end, H5T_STD_I64LE);
    VOL_INS(slice_duration, H5T_IEEE_F64LE);
    VOL_INS(toffset, H5T_IEEE_F64LE);
#undef VOL_INS
#undef VOL_STR
#undef VOL_ARR
    if (e || (nextra && insert_columns(t, sizeof(h5s_volume_obs), extra, nextra) == 0)) {
        H5Tclose(t);
        h5s_error_set_h5(H5S_EIO, "obs: cannot build the compound type");
        return H5I_INVALID_HID;
    }
    if (out_row_bytes)
        *out_row_bytes = row;
    return t;
}

static const char *const builtin_meta[] = {"obs_subject_id"};

hid_t h5s_volumes_meta_type(const h5s_meta_column *cols, size_t ncols, size_t *out_row_bytes)
{
    if (check_columns(cols, ncols, builtin_meta, 1, "obs_meta") != 0)
        return H5I_INVALID_HID;
    size_t row = H5S_VOLUMES_ID_MAX + columns_bytes(cols, ncols);
    hid_t t = H5Tcreate(H5T_COMPOUND, row);
    if (t < 0)
        return t;
    if (insert_str(t, "obs_subject_id", 0, H5S_VOLUMES_ID_MAX) != 0 ||
        (ncols && insert_columns(t, H5S_VOLUMES_ID_MAX, cols, ncols) == 0)) {
        H5Tclose(t);
        h5s_error_set_h5(H5S_EIO, "obs_meta: cannot build the compound type");
        return H5I_INVALID_HID;
    }
    if (out_row_bytes)
        *out_row_bytes = row;
    return t;
}

uint64_t h5s_volume_obs_voxels(const h5s_volume_obs *obs)
{
    uint64_t n = 1;
    for (int i = 0; i < obs->ndim && i < H5S_VOLUMES_MAX_DIMS; i++)
        n *= (uint64_t)(obs->shape[i] > 0 ? obs->shape[i] : 0);
    return n;
}
