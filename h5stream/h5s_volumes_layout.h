/*
 * h5s_volumes_layout.h - public: the volumes model's on-disk names and row types (docs/
 * volumes.md), shared by the writer and every reader. Part of the format (h5s_base), so
 * readers/ depend on it and not on the writer engine.
 */
#ifndef H5S_VOLUMES_LAYOUT_H
#define H5S_VOLUMES_LAYOUT_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the format: names, the obs row, the table columns ---------------------------- */

#define H5S_VOLUMES_GROUP "/volumes"
#define H5S_OBS_META_PATH "/obs_meta"
#define H5S_VOLUMES_MODEL "volumes"
#define H5S_VOLUMES_ATTR_KIND "h5stream_volumes_kind"
#define H5S_VOLUMES_NAME_MAX 64   /* collection name bytes, NUL included */
#define H5S_VOLUMES_ID_MAX 64     /* obs_id, obs_subject_id bytes, NUL included */
#define H5S_VOLUMES_SERIES_MAX 32 /* series_type bytes, NUL included */
#define H5S_VOLUMES_MAX_COLUMNS 64
#define H5S_VOLUMES_MAX_DIMS 7

/* Missing values of table cells (BIDS "n/a"): an empty string, INT64_MIN, NaN. */
#define H5S_META_MISSING_INT INT64_MIN
/* Bytes of a string column whose strsize is 0. */
#define H5S_META_DEFAULT_STRSIZE 64

typedef enum { H5S_META_STRING = 1, H5S_META_INT, H5S_META_FLOAT } h5s_meta_type;

/* A declared table column: obs_meta's, or a collection's extra obs column. */
typedef struct {
    const char *name;   /* [A-Za-z0-9_-.], not a built-in column name */
    h5s_meta_type type; /* STRING: fixed-length, NUL-padded; INT: int64; FLOAT: float64 */
    size_t strsize;     /* STRING: bytes on disk incl. NUL; 0 = 64 */
} h5s_meta_column;

/* A cell value: the member of the column's type is used; s NULL = missing. */
typedef struct {
    const char *s;
    int64_t i;
    double f;
} h5s_meta_value;

/*
 * One obs row: everything of a volume's NIfTI header that writing the same header back
 * needs (NIfTI-1/NIfTI-2 field meanings), plus where its voxels are. This is the memory
 * layout of the obs compound's fixed part (h5s_volumes_obs_type); extra columns follow
 * it in the row.
 */
typedef struct {
    char obs_id[H5S_VOLUMES_ID_MAX];          /* unique within the file */
    char obs_subject_id[H5S_VOLUMES_ID_MAX];  /* key into /obs_meta */
    char series_type[H5S_VOLUMES_SERIES_MAX]; /* BIDS suffix ("T1w", "bold"), may be "" */
    uint64_t voxel_index;                     /* uniform: position along N of voxels */
    uint64_t pool_offset;                     /* heterogeneous: first element in the pool */
    int32_t ndim;                             /* dim[0], 1..7 */
    int32_t nifti_version;                    /* source header: 1, 2, or 0 (not NIfTI) */
    int64_t shape[H5S_VOLUMES_MAX_DIMS];      /* dim[1..7]: X, Y, Z, T, ...; 1 past ndim */
    double pixdim[8];                         /* pixdim[0] (qfac) and the grid spacings */
    double affine[4][4];                      /* voxel -> mm, row-major, as nibabel's img.affine */
    int32_t qform_code;                       /* NIFTI_XFORM_* */
    int32_t sform_code;                       /* NIFTI_XFORM_* */
    double quatern[3];                        /* quatern_b, c, d */
    double qoffset[3];                        /* qoffset_x, y, z (mm) */
    double qfac;                              /* -1 or 1 */
    double srow[3][4];                        /* srow_x, srow_y, srow_z */
    int32_t xyzt_units;                       /* NIFTI_UNITS_* bits */
    int32_t nifti_datatype;                   /* the source's NIFTI_TYPE_* code */
    double scl_slope, scl_inter;
    double cal_min, cal_max;
    int32_t intent_code;
    double intent_p[3];
    char intent_name[16];
    char descrip[80];
    char aux_file[24];
    int32_t dim_info, slice_code;
    int64_t slice_start, slice_end;
    double slice_duration, toffset;
} h5s_volume_obs;

/*
 * The HDF5 compound type of h5s_volume_obs (little-endian, fixed-length NUL-padded
 * strings, array members), extended by extra columns laid out after it (may be NULL/0):
 * string columns as fixed-length strings, INT int64, FLOAT float64, in order, packed.
 * out_row_bytes (may be NULL): the row size. The caller closes the type.
 * Returns a type id, or H5I_INVALID_HID (message set: bad column). Thread-safe.
 */
hid_t h5s_volumes_obs_type(const h5s_meta_column *extra, size_t nextra, size_t *out_row_bytes);

/*
 * The compound type of /obs_meta rows: obs_subject_id (64-byte string) then the
 * columns, packed. out_row_bytes as above. Returns a type, or H5I_INVALID_HID.
 */
hid_t h5s_volumes_meta_type(const h5s_meta_column *cols, size_t ncols, size_t *out_row_bytes);

/* Voxels of the volume obs describes (product of shape[0..ndim-1]). Thread-safe. */
uint64_t h5s_volume_obs_voxels(const h5s_volume_obs *obs);

/* Bytes of one cell of column c in a packed row (strings: strsize, 0 = 64). */
size_t h5s_meta_cell_size(const h5s_meta_column *c);

#ifdef __cplusplus
}
#endif
#endif
