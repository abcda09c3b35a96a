/*
 * h5s_volumes_reader.h - SWMR reader of the volumes model (h5stream/h5s_volumes.h for the
 * layout): committed volumes by index or obs_id, partial reads (one slice, a box) that
 * read only the chunks they touch, subject filters on obs/obs_meta columns, and export
 * to NIfTI-1/NIfTI-2 (formats/h5s_nifti.h) and BIDS-style TSV (formats/h5s_tsv.h).
 *
 * The reader refreshes a collection's obs table (the commit marker) first and reads only
 * the volumes it covers, so it never returns a volume whose voxels are not on disk.
 * Thread safety: a reader is used by one thread at a time; several may exist.
 */
#ifndef H5S_VOLUMES_READER_H
#define H5S_VOLUMES_READER_H

#include <stddef.h>
#include <stdint.h>

#include "h5s_reader.h"
#include "h5s_types.h"
#include "h5s_volumes_layout.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct h5s_volumes_reader h5s_volumes_reader;

/*
 * Opens path for SWMR reading and lists its collections. While the file does not exist,
 * its writer has not started SWMR, or it has no /volumes yet, retries every
 * opts->poll_ms until opts->open_timeout_ms (NULL: try once).
 * out: the caller's; free with h5s_volumes_reader_close.
 * Errors: H5S_ETIMEDOUT (not openable in time; says why), H5S_ENOTFOUND (no /volumes),
 * H5S_EFORMAT (a collection is not laid out as h5s_volumes.h says, its obs or voxels or
 * /obs_meta is missing (named); or, after the timeout, the file is not HDF5 or is shorter
 * than its superblock says), H5S_ENOMEM.
 */
int h5s_volumes_reader_open(h5s_volumes_reader **out, const char *path,
                            const h5s_reader_options *opts);

/* Number of collections, and the name of collection i (borrowed; NULL past the end). */
size_t h5s_volumes_reader_ncollections(const h5s_volumes_reader *reader);
const char *h5s_volumes_reader_collection(const h5s_volumes_reader *reader, size_t i);

/* What a collection holds (from its attributes and datasets). */
typedef struct {
    h5s_dtype dtype;
    int heterogeneous;
    int ndim;           /* uniform: 3 or 4 */
    uint64_t shape[4];  /* uniform: X, Y, Z[, T] */
    uint64_t committed; /* volumes committed as of the last refresh */
} h5s_collection_desc;

/* Fills out for the collection called name (NULL: the only or first one).
 * Errors: H5S_ENOTFOUND (no such collection). */
int h5s_volumes_reader_describe(h5s_volumes_reader *reader, const char *name,
                                h5s_collection_desc *out);

/*
 * Polls once: refreshes the writer status, then the collection's obs table (the commit
 * marker), and gives the committed count. name NULL: the first collection.
 * Errors: H5S_ENOTFOUND, H5S_EIO (refresh failed).
 * In the writer's own process the poll waits for a commit in progress (docs/format.md).
 */
int h5s_volumes_reader_refresh(h5s_volumes_reader *reader, const char *name, uint64_t *out_count);

/* Writer state as of the last refresh (H5S_WRITER_UNKNOWN for a file without status). */
h5s_writer_state h5s_volumes_reader_state(const h5s_volumes_reader *reader);

/*
 * Reads obs row index (< committed count) of the collection into out (the fixed part;
 * extra columns are in the TSV export). Errors: H5S_ERANGE (not committed), H5S_EIO.
 */
int h5s_volumes_reader_obs(h5s_volumes_reader *reader, const char *name, uint64_t index,
                           h5s_volume_obs *out);

/*
 * Finds a committed volume by obs_id in the collection called name (NULL: every
 * collection; *out_name then says which, borrowed, may be NULL). Errors: H5S_ENOTFOUND.
 */
int h5s_volumes_reader_find(h5s_volumes_reader *reader, const char *name, const char *obs_id,
                            const char **out_name, uint64_t *out_index);

/* A box of voxels: lo inclusive, hi exclusive, along x, y, z, t (t is dims 4..7 as one
 * axis, slowest). */
typedef struct {
    uint64_t lo[4];
    uint64_t hi[4];
} h5s_volume_box;

/* The whole volume obs describes. */
void h5s_volume_box_full(h5s_volume_box *out, const h5s_volume_obs *obs);

/*
 * One plane of the volume: axis 2 (axial, z = k: an x-y plane), 1 (coronal, y = k:
 * x-z) or 0 (sagittal, x = k: y-z), every t. Errors: H5S_EINVAL (bad axis), H5S_ERANGE
 * (k outside the volume).
 */
int h5s_volume_box_slice(h5s_volume_box *out, const h5s_volume_obs *obs, int axis, uint64_t k);

/* Voxels in a box. */
uint64_t h5s_volume_box_voxels(const h5s_volume_box *box);

/*
 * Reads a box of committed volume index into buf: box voxels of the collection's dtype,
 * C order [t][z][y][x] of the box (x fastest, as NIfTI), host byte order. box NULL: the
 * whole volume. Reads only the chunks the box touches (a slice of a slice-chunked
 * collection is one chunk). Errors: H5S_ERANGE (index not committed, box outside the
 * volume), H5S_EINVAL (buffer too small), H5S_EIO/H5S_ECODEC (HDF5 cannot read or decode;
 * the message names the collection and obs_id).
 */
int h5s_volumes_reader_read(h5s_volumes_reader *reader, const char *name, uint64_t index,
                            const h5s_volume_box *box, void *buf, size_t bufsize);

/*
 * Indices (ascending) of the committed volumes of a collection whose rows match every
 * condition: "COLUMN=VALUE", COLUMN an obs string/number column (obs_id, obs_subject_id,
 * series_type, an extra column) or an /obs_meta column (matched through
 * obs_subject_id). Strings compare exactly, numbers by value. *out: malloc'd (free()),
 * may be NULL when *out_n is 0. Errors: H5S_EINVAL (no '=' or an unknown column),
 * H5S_ENOMEM, H5S_EIO.
 */
int h5s_volumes_reader_select(h5s_volumes_reader *reader, const char *name,
                              const char *const *where, size_t nwhere, uint64_t **out,
                              size_t *out_n);

/*
 * Writes committed volume index (or a box of it; NULL = all) to a NIfTI file (path ending
 * in .nii or .nii.gz): the obs row's header fields (dims, pixdim, datatype, qform and
 * sform with codes, units, scl_slope/inter, cal, intent, descrip, slice timing); a box
 * moves the qform and sform origin to its corner, as nibabel's img.slicer does.
 * NIfTI-1 unless the dims need NIfTI-2. Streams slice by slice: memory is one slice
 * row of chunks, never the volume. Errors: those of h5s_volumes_reader_read and of
 * h5s_nifti_writer_open/write_slices (the partial file is removed).
 */
int h5s_volumes_export_nifti(h5s_volumes_reader *reader, const char *name, uint64_t index,
                             const h5s_volume_box *box, const char *path);

/*
 * Writes the committed obs rows of a collection (indices; NULL = all, n ignored) as TSV:
 * every scalar column (strings, integers, floats incl. the extra columns) plus "shape"
 * ("XxYxZ[xT]"). Spec: BIDS tabular files (formats/h5s_tsv.h). Errors: H5S_EIO, those of
 * h5s_tsv_write.
 */
int h5s_volumes_export_obs_tsv(h5s_volumes_reader *reader, const char *name,
                               const uint64_t *indices, size_t n, const char *path);

/*
 * Writes the committed /obs_meta rows as TSV (participants.tsv style: obs_subject_id
 * first; missing values "n/a"). Errors: H5S_ENOTFOUND (no /obs_meta), H5S_EIO, those of
 * h5s_tsv_write.
 */
int h5s_volumes_export_meta_tsv(h5s_volumes_reader *reader, const char *path);

/* Closes the reader. NULL is a no-op. */
void h5s_volumes_reader_close(h5s_volumes_reader *reader);

#ifdef __cplusplus
}
#endif
#endif /* H5S_VOLUMES_READER_H */
