/*
 * h5s_tracts_reader.h - live SWMR reader of an h5stream file's /tracts (the tracts model,
 * h5stream/h5s_tracts.h and docs/tracts.md), and the exporter that turns one file or several
 * shard files into TRX (zip or folder), TCK or TRK.
 *
 * The reader refreshes the commit marker first: /tracts/offsets has extent E, so streamlines
 * [0, E - 1) are whole on disk, and the reader never returns anything past them. It depends
 * on the on-disk format (h5s_format.h) and the file formats (h5s_tractio.h), never on the
 * writer engine.
 *
 * Typical live loop:
 *     h5s_tracts_reader *r;  h5s_tracts_batch b;  uint64_t next = 0, count;
 *     h5s_tracts_reader_open(&r, "run.h5", &opts);           // waits for the writer
 *     for (;;) {
 *         h5s_tracts_reader_wait(r, next, -1, &count);        // new commit or closed
 *         while (next < count) {
 *             uint64_t n = count - next < 4096 ? count - next : 4096;
 *             h5s_tracts_reader_read(r, next, n, H5S_TRACTS_READ_ALL, &b);
 *             use(b.points, b.offsets, b.dps, b.dpv);          // borrowed
 *             next += n;
 *         }
 *         if (h5s_tracts_reader_writer_state(r) != H5S_WRITER_WRITING) break;
 *     }
 *     h5s_tracts_reader_close(r);
 *
 * Thread safety: a reader is used by one thread at a time; several readers may exist.
 * Errors: functions return 0 or a negative h5s code; h5s_error_message() names the file,
 * the dataset and the streamline or row.
 */
#ifndef H5S_TRACTS_READER_H
#define H5S_TRACTS_READER_H

#include <stddef.h>
#include <stdint.h>

#include "h5s_reader.h"
#include "h5s_tractio.h"
#include "h5s_types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct h5s_tracts_reader h5s_tracts_reader;

#define H5S_TRACTS_READER_OPTIONS_VERSION 2

typedef struct {
    unsigned version;    /* H5S_TRACTS_READER_OPTIONS_VERSION (1: without `sequential`) */
    int open_timeout_ms; /* how long open waits for the file, its SWMR start and /tracts;
                            0 = try once, -1 = forever */
    unsigned poll_ms;    /* retry and poll interval (milliseconds) */
    int sequential;      /* 1: reads will be large blocks in row order (exports): unfiltered
                            datasets get no chunk cache, so HDF5 reads whole chunks straight
                            into the caller's buffer instead of through the cache (one copy
                            less); filtered ones keep theirs. 0: a 2 MiB cache per dataset */
} h5s_tracts_reader_options;

#define H5S_TRACTS_READER_OPTIONS_INIT                                                             \
    {                                                                                              \
        H5S_TRACTS_READER_OPTIONS_VERSION, 0, 100, 0                                               \
    }

/*
 * Opens path for SWMR reading and its /tracts group: attributes VOXEL_TO_RASMM and
 * DIMENSIONS, positions, offsets (the marker), every dps, dpv, group and dpg. While the file
 * does not exist, its writer has not started SWMR or /tracts is not there, it retries every
 * poll_ms until open_timeout_ms has passed. A closed file opens too.
 * out: the caller's; free with h5s_tracts_reader_close. opts: NULL for the defaults.
 * Errors: H5S_ETIMEDOUT (not readable in time; the message says why), H5S_ENOTFOUND (no
 * /tracts after the timeout), H5S_EFORMAT (a dataset of the wrong rank, type or width, a
 * bad attribute, more fields than h5s_tract_header can name; or, after the timeout, the
 * file is not HDF5 or is shorter than its superblock says), H5S_EINVAL, H5S_ENOMEM.
 */
int h5s_tracts_reader_open(h5s_tracts_reader **out, const char *path,
                           const h5s_tracts_reader_options *opts);

/*
 * The tractogram's description as of the last refresh: voxel_to_rasmm, dimensions,
 * voxel_sizes and voxel_order (derived from the affine), nb_streamlines (committed) and
 * nb_vertices (offsets[nb_streamlines]), positions_dtype, the dps and dpv fields (file
 * order, with col and widths set), the groups (count = indices stored, some of which may
 * name streamlines not yet committed) and the dpg arrays with their values as of the last
 * refresh. format is H5S_TRACT_UNKNOWN. Borrowed: valid until the next refresh or close.
 */
const h5s_tract_header *h5s_tracts_reader_header(const h5s_tracts_reader *r);

/* The file path given at open (borrowed). */
const char *h5s_tracts_reader_path(const h5s_tracts_reader *r);

/*
 * Polls once: the writer status, then the marker (offsets' extent and last value), then the
 * positions' extent; updates the header's counts and dpg values. *out_count (may be NULL)
 * gets the committed streamline count. The count never decreases.
 * Errors: H5S_EIO (refresh or read failed), H5S_EFORMAT (offsets decrease, or point past the
 * positions stored).
 * In the writer's own process the poll waits for a commit in progress (docs/format.md).
 */
int h5s_tracts_reader_refresh(h5s_tracts_reader *r, uint64_t *out_count);

/* Committed streamlines as of the last refresh (0 for NULL). */
uint64_t h5s_tracts_reader_count(const h5s_tracts_reader *r);

/* Writer state as of the last refresh (h5s_reader.h). */
h5s_writer_state h5s_tracts_reader_writer_state(const h5s_tracts_reader *r);

/*
 * Waits until more than known streamlines are committed, or the writer has closed the file
 * (cleanly or after an error), or timeout_ms passes (-1 = no limit), polling every poll_ms.
 * *out_count (may be NULL): the committed count at return.
 * Returns 0 (count grew or writer closed), H5S_ETIMEDOUT, or a refresh error.
 */
int h5s_tracts_reader_wait(h5s_tracts_reader *r, uint64_t known, int timeout_ms,
                           uint64_t *out_count);

/* What h5s_tracts_reader_read fills (bit flags). */
#define H5S_TRACTS_READ_POINTS 1u
#define H5S_TRACTS_READ_DPS 2u
#define H5S_TRACTS_READ_DPV 4u
#define H5S_TRACTS_READ_ALL 7u

/*
 * A batch of committed streamlines [first, first + count). Every array is borrowed from the
 * reader, valid until the next read or close.
 * - offsets: count + 1 values; streamline first + i has points [offsets[i], offsets[i+1])
 *   of this batch (offsets[0] = 0; add first_point for the index in /tracts/positions).
 * - points: n_points x 3 float32, RAS+ millimetres, row-major (NULL unless READ_POINTS).
 * - dps: count x dps_width float64, row-major, field f at column f.col (NULL unless
 *   READ_DPS or when dps_width is 0).
 * - dpv: n_points x dpv_width float64, likewise (NULL unless READ_DPV or width 0).
 */
typedef struct {
    uint64_t first;
    uint64_t count;
    uint64_t first_point;
    uint64_t n_points;
    const uint64_t *offsets;
    const float *points;
    const double *dps;
    const double *dpv;
} h5s_tracts_batch;

/*
 * Reads committed streamlines [first, first + n) into *out (what: H5S_TRACTS_READ_* flags).
 * One hyperslab read per dataset, whatever n; float16 and float64 positions are converted to
 * float32, field values to float64. Memory held: the largest batch read so far.
 * Errors: H5S_ERANGE (first + n beyond the committed count of the last refresh: the reader
 * never returns an uncommitted streamline), H5S_EINVAL, H5S_ENOMEM, H5S_EIO/H5S_ECODEC (a
 * chunk cannot be read or decoded; the message names the dataset and streamlines).
 */
int h5s_tracts_reader_read(h5s_tracts_reader *r, uint64_t first, uint64_t n, unsigned what,
                           h5s_tracts_batch *out);

/* The arrays of /tracts, for h5s_tracts_reader_read_rows. */
typedef enum {
    H5S_TRACTS_POSITIONS = 0, /* [nb_vertices, 3] positions_dtype */
    H5S_TRACTS_OFFSETS,       /* [nb_streamlines + 1] uint64 */
    H5S_TRACTS_DPS,           /* field index: [nb_streamlines, K] field dtype */
    H5S_TRACTS_DPV,           /* field index: [nb_vertices, K] field dtype */
    H5S_TRACTS_GROUP          /* group index: [count] uint32 streamline indices */
} h5s_tracts_array;

/*
 * Reads rows [first, first + n) of one array in its own element type (little-endian, C
 * order) into buf (bufsize >= n x row bytes): the raw path of exporters, one hyperslab read.
 * index picks the dps/dpv field or group (ignored otherwise). Rows are bounded by the
 * committed counts of the last refresh (groups: by the extent seen at the last refresh).
 * Errors: H5S_ERANGE, H5S_EINVAL (bad index, small buffer), H5S_EIO/H5S_ECODEC.
 */
int h5s_tracts_reader_read_rows(h5s_tracts_reader *r, h5s_tracts_array which, size_t index,
                                uint64_t first, uint64_t n, void *buf, size_t bufsize);

/* Closes the reader and its HDF5 handles. NULL is a no-op. */
void h5s_tracts_reader_close(h5s_tracts_reader *r);

/* ------------------------------------------------------------------------- export */

#define H5S_TRACTS_EXPORT_OPTIONS_VERSION 1

typedef struct {
    unsigned version;        /* H5S_TRACTS_EXPORT_OPTIONS_VERSION */
    h5s_tract_format format; /* H5S_TRACT_TRX, H5S_TRACT_TCK or H5S_TRACT_TRK */
    h5s_trx_mode trx_mode;   /* TRX only: zip stored (default), zip deflate, folder clean or
                                persistent */
    int deflate_level;       /* TRX deflate: 1-9, 0 = libzip's default */
    size_t block_bytes;      /* bytes read from HDF5 per block; 0 = 1 MiB */
} h5s_tracts_export_options;

#define H5S_TRACTS_EXPORT_OPTIONS_INIT                                                             \
    {                                                                                              \
        H5S_TRACTS_EXPORT_OPTIONS_VERSION, H5S_TRACT_TRX, H5S_TRX_ZIP_STORE, 0, 0                  \
    }

/* What an export wrote. */
typedef struct {
    uint64_t streamlines;
    uint64_t vertices;
    uint64_t shards;
    uint64_t bytes; /* bytes of array data handed to the writer (before any deflate) */
} h5s_tracts_export_report;

/*
 * Exports the committed streamlines of one h5stream file, or of several shard files merged
 * in the order given, to out_path. Each input is opened as h5s_tracts_reader_open does with
 * no wait (a live file exports what is committed when it opens).
 * Shard merge (docs/tracts.md, "Shards"): every shard must have the same VOXEL_TO_RASMM,
 * DIMENSIONS, positions dtype and dps/dpv fields (names, dtypes, widths; order may differ);
 * positions, dps and dpv are concatenated in shard order, offsets and group indices are
 * rebased by the streamlines and vertices of the shards before (as trx-cpp's merge); groups
 * are the union by name; a dpg array GROUP/NAME must have the same dtype, width and values
 * in every shard where GROUP has at least one streamline (shards where it is empty do not
 * count; if it is empty everywhere the first shard's values are kept), else H5S_EFORMAT
 * naming both shards. Group indices not committed in their shard are dropped.
 * Memory: one block of block_bytes per array at a time, never the whole tractogram; TRX
 * entries are streamed into the archive as libzip writes it (zip64 past 4 GiB).
 * TCK keeps only the points; TRK keeps dps as properties and dpv as scalars (float32, at
 * most 10 of each).
 * report: may be NULL. Errors: H5S_EINVAL (options, no input), H5S_EFORMAT (shards that
 * disagree, bad data), H5S_ERANGE (TRK limits), H5S_EIO, H5S_ENOMEM, H5S_ENOTFOUND
 * (persistent folder missing). Thread-safe for different outputs.
 */
int h5s_tracts_export(const char *const *inputs, size_t n_inputs, const char *out_path,
                      const h5s_tracts_export_options *opts, h5s_tracts_export_report *report);

#ifdef __cplusplus
}
#endif
#endif /* H5S_TRACTS_READER_H */
