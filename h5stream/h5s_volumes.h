/*
 * h5s_volumes.h - the volumes model: 3-D/4-D images (NIfTI volumes) with their subject
 * and acquisition metadata, streamed into collections of one SWMR file, as RadiObject's
 * RadiObjectWriter (write_obs_meta, add_collection) and VolumeCollection's
 * StreamingWriter (write_volume, write_batch) do. docs/volumes.md has the layout.
 *
 * Layout (DESIGN.md section 4, volumes; docs/volumes.md):
 *   /volumes/NAME/voxels   uniform: [N, (T,) Z, Y, X] of the collection's dtype, C order,
 *                          so one volume is NIfTI's i-fastest voxel order; chunked
 *                          [1, (1,) 1, Y, X] (one axial slice) or [1, (1,) bz, by, bx];
 *                          heterogeneous: a 1-D pool [elements], each volume starting
 *                          on a chunk boundary at its obs row's pool_offset
 *   /volumes/NAME/obs      compound rows h5s_volume_obs (+ the collection's extra
 *                          columns): the commit marker of the collection
 *   /obs_meta              compound rows: obs_subject_id + the declared columns; its
 *                          own commit marker
 * Attributes of /volumes/NAME (written before SWMR): h5stream_volumes_kind ("uniform" or
 * "heterogeneous"), dtype (numpy name), shape (uniform: X, Y, Z[, T]), block.
 *
 * Commit order: a volume's voxels are stored and flushed before its obs row is written,
 * and a reader reads obs first, so a reader (or a crash) never shows an obs row whose
 * voxels are missing. A volume whose obs row never committed is invisible (its voxels
 * may be in the file, unreferenced).
 *
 * Thread safety: the declaration calls (h5s_volumes_create, h5s_volumes_add_collection)
 * run on one thread before h5s_file_start_swmr; the write calls may come from any thread
 * after it. A volume stream (h5s_volume_stream) is used by one thread.
 */
#ifndef H5S_VOLUMES_H
#define H5S_VOLUMES_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include "h5s_volumes_layout.h"
#include "h5stream.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Fills obs for a volume of ndim dims shape[0..ndim-1] (X first, NIfTI's dim[1..]):
 * ids copied (truncated ids are an error), pixdim from spacing (ndim values, NULL = 1),
 * and the affine: NULL = diag(spacing) with qform and sform codes 0 (nibabel's base
 * affine is then what readers see); else both transforms from it (qform_code 1 and
 * sform_code 1, NIFTI_XFORM_SCANNER_ANAT), as nibabel's set_qform/set_sform. Units mm
 * and s, scl_slope 1, scl_inter 0. nifti_datatype is set by the write call from the
 * collection's dtype when it is 0.
 * affine: 4 x 4 row-major, voxel -> mm. series_type may be NULL ("").
 * Errors: H5S_EINVAL (NULL ids, ndim outside 1..7, a dim < 1, an id too long, a
 * non-finite affine). Thread-safe.
 */
int h5s_volume_obs_init(h5s_volume_obs *obs, const char *obs_id, const char *obs_subject_id,
                        const char *series_type, int ndim, const int64_t *shape,
                        const double *spacing, const double affine[4][4]);

/* ---- writing ----------------------------------------------------------------------- */

typedef struct h5s_volumes h5s_volumes;
typedef struct h5s_collection h5s_collection;
typedef struct h5s_volume_stream h5s_volume_stream;

/*
 * Declares the volumes model of a file (RadiObjectWriter): /volumes and the subject table
 * /obs_meta with obs_subject_id and the given columns (copied; ncols may be 0). Call in
 * the declaration phase, before h5s_file_start_swmr. out: the caller's; free it with
 * h5s_volumes_free after h5s_file_close.
 * Errors: H5S_EINVAL (NULL, bad or duplicate column, more than 64), H5S_ESTATE (SWMR
 * started), H5S_EIO (HDF5), H5S_ENOMEM.
 */
int h5s_volumes_create(h5s_volumes **out, h5s_file *file, const h5s_meta_column *cols,
                       size_t ncols);

#define H5S_COLLECTION_OPTIONS_VERSION 1

typedef struct {
    unsigned version;             /* H5S_COLLECTION_OPTIONS_VERSION */
    h5s_dtype dtype;              /* element type of every volume (not float16: NIfTI has none) */
    int heterogeneous;            /* 0: uniform shape; 1: any shape per volume (1-D pool) */
    int ndim;                     /* uniform: 3 or 4 */
    uint64_t shape[4];            /* uniform: X, Y, Z[, T] (NIfTI dim[1..4]) */
    uint64_t block[3];            /* uniform: chunk block bx, by, bz; all 0 = one axial slice */
    uint64_t pool_chunk;          /* heterogeneous: elements per chunk; 0 = 1 MiB of elements */
    h5s_codec codec;              /* chunk compression */
    const h5s_meta_column *extra; /* extra obs columns (copied), nextra of them */
    size_t nextra;
} h5s_collection_options;

#define H5S_COLLECTION_OPTIONS_INIT                                                                \
    {                                                                                              \
        H5S_COLLECTION_OPTIONS_VERSION, H5S_INT16, 0, 3, {0, 0, 0, 0}, {0, 0, 0}, 0,               \
            H5S_CODEC_INIT, NULL, 0                                                                \
    }

/*
 * Declares a collection (RadiObjectWriter.add_collection): /volumes/NAME with its voxels
 * dataset and obs table (see the layout above), in the declaration phase. Blocks larger
 * than the volume are clipped to it. out: borrowed, valid until h5s_volumes_free.
 * Errors: H5S_EINVAL (bad name, name in use, bad dtype/shape/block/codec/columns),
 * H5S_ESTATE (SWMR started), H5S_EIO, H5S_ENOMEM.
 */
int h5s_volumes_add_collection(h5s_collection **out, h5s_volumes *volumes, const char *name,
                               const h5s_collection_options *opts);

/* The options a collection was declared with (extra points into the collection). */
const h5s_collection_options *h5s_collection_info(const h5s_collection *collection);

/*
 * Appends subject rows to /obs_meta (RadiObjectWriter.write_obs_meta, row by row):
 * values: nrows x ncols cells in declaration order. After SWMR started; any thread.
 * Errors: H5S_EINVAL (NULL, id too long, string too long for its column), H5S_ESTATE,
 * the stream's kept error.
 */
int h5s_volumes_write_obs_meta(h5s_volumes *volumes, const char *const *subject_ids,
                               const h5s_meta_value *values, size_t nrows);

/*
 * Starts one volume: checks obs against the collection (shape for uniform collections,
 * nifti_datatype against dtype when set), reserves obs->obs_id in the file (a duplicate
 * is refused) and a place for the voxels. extra: one value per extra column (NULL =
 * missing). Feed the voxels with h5s_volume_stream_write in order, then
 * h5s_volume_stream_commit. A heterogeneous collection holds its lock from begin to
 * commit/abort (its volumes are written one at a time).
 * out: the caller's until commit or abort. Errors: H5S_EINVAL (a shape, dtype or id
 * mismatch or a duplicate obs_id; the message names the collection, obs_id and field),
 * H5S_ESTATE (before start or after close), H5S_ENOMEM.
 */
int h5s_collection_begin(h5s_volume_stream **out, h5s_collection *collection,
                         const h5s_volume_obs *obs, const h5s_meta_value *extra);

/*
 * Feeds the next count slices of the volume: data holds count x X x Y elements of the
 * collection's dtype, x fastest (NIfTI order; slice s is z = s % Z, t = s / Z), nbytes
 * exactly that. Chunks are encoded on this thread and queued for the writer; blocks
 * while the queue budget is used. Errors: H5S_EINVAL (size), H5S_ERANGE (more slices
 * than the volume has), H5S_ECODEC, the stream's kept error. On error, abort the stream.
 */
int h5s_volume_stream_write(h5s_volume_stream *stream, const void *data, size_t nbytes,
                            uint64_t count);

/*
 * Finishes the volume: queues its last chunks, then writes its obs row (the commit
 * marker, stored after the voxels). Frees the stream (also on error).
 * Errors: H5S_ESTATE (slices missing: the volume is dropped), the stream's kept error.
 */
int h5s_volume_stream_commit(h5s_volume_stream *stream);

/* Drops an unfinished volume (its obs_id is free again) and frees the stream. NULL ok. */
void h5s_volume_stream_abort(h5s_volume_stream *stream);

/*
 * Writes one whole volume (StreamingWriter.write_volume): begin, one write of every
 * slice, commit. data: X*Y*Z[*T] elements of the collection's dtype, x fastest;
 * nbytes exactly that. Errors: those of the three calls.
 */
int h5s_collection_write_volume(h5s_collection *collection, const void *data, size_t nbytes,
                                const h5s_volume_obs *obs, const h5s_meta_value *extra);

/*
 * Writes n volumes in order (StreamingWriter.write_batch). extra: n x nextra values or
 * NULL. Stops at the first error, which names the volume's index in the batch; volumes
 * before it are kept. Errors: those of h5s_collection_write_volume.
 */
int h5s_collection_write_batch(h5s_collection *collection, const void *const *data,
                               const size_t *nbytes, const h5s_volume_obs *obs,
                               const h5s_meta_value *extra, size_t n);

/*
 * Streams a NIfTI-1/NIfTI-2 file (.nii, .nii.gz; formats/h5s_nifti.h) into the
 * collection as one volume, slice batch by slice batch (memory: a few MiB, never the
 * volume): header fields into the obs row, voxels as stored (unscaled). obs_id NULL =
 * the file name without .nii/.nii.gz; series_type NULL = the BIDS suffix of the name
 * (after its last '_'), else "".
 * Errors: those of h5s_nifti_open/read_slices (H5S_EFORMAT ... with path and offset),
 * H5S_EINVAL (dtype or shape not the collection's, duplicate obs_id; message names the
 * file), and the write calls' errors.
 */
int h5s_collection_import_nifti(h5s_collection *collection, const char *path, const char *obs_id,
                                const char *obs_subject_id, const char *series_type);

/* Volumes committed or queued in the collection so far (any thread). */
uint64_t h5s_collection_count(const h5s_collection *collection);

/* Frees the model's handles. Call after h5s_file_close. NULL is a no-op. */
void h5s_volumes_free(h5s_volumes *volumes);

#ifdef __cplusplus
}
#endif
#endif /* H5S_VOLUMES_H */
