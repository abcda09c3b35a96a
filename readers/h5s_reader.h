/*
 * h5s_reader.h - live SWMR reader of h5stream frames datasets, usable while another
 * process is still writing the file.
 *
 * The reader refreshes the commit marker (frame_id) first and only reads frames it
 * covers, so it never returns a frame the writer has not committed. It depends on the
 * on-disk format (docs/format.md), not on the writer engine.
 */
#ifndef H5S_READER_H
#define H5S_READER_H

#include <stddef.h>
#include <stdint.h>

#include "h5s_types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct h5s_reader h5s_reader;

#define H5S_READER_OPTIONS_VERSION 1

typedef struct {
    unsigned version;    /* H5S_READER_OPTIONS_VERSION */
    int open_timeout_ms; /* how long h5s_reader_open waits for the file to exist and its
                            writer to start SWMR; 0 = try once, -1 = forever */
    unsigned poll_ms;    /* retry and poll interval (milliseconds) */
} h5s_reader_options;

#define H5S_READER_OPTIONS_INIT                                                                    \
    {                                                                                              \
        H5S_READER_OPTIONS_VERSION, 0, 100                                                         \
    }

/* State of the writer as the file's status dataset (/h5stream/writer) says. */
typedef enum {
    H5S_WRITER_UNKNOWN = 0, /* no status dataset (a file not written by h5stream) */
    H5S_WRITER_WRITING,     /* SWMR writing in progress, or the writer died */
    H5S_WRITER_CLOSED,      /* closed cleanly: no more frames will come */
    H5S_WRITER_FAILED       /* closed after a writer error: no more frames will come; those
                               committed before it are whole */
} h5s_writer_state;

/* Shape of one frame of the dataset being read. */
typedef struct {
    h5s_dtype dtype;
    unsigned rank;      /* frame rank, 1 to 3 */
    uint64_t dims[3];   /* frame shape, slowest axis first */
    size_t frame_bytes; /* bytes of one frame */
} h5s_frame_shape;

/*
 * Opens path for SWMR reading (H5F_ACC_RDONLY | H5F_ACC_SWMR_READ) and the frames
 * dataset at dataset (NULL = /entry/instrument/detector/data) with its commit marker.
 * While the file does not exist, or its writer has not yet started SWMR, or the dataset
 * is not there yet, it retries every poll_ms until open_timeout_ms has passed.
 * A file closed by its writer (not SWMR) opens too.
 * out: the caller's; free with h5s_reader_close.
 * Errors: H5S_ETIMEDOUT (still not openable; the message says why), H5S_ENOTFOUND
 * (no such dataset, after the timeout), H5S_EFORMAT (not an h5stream frames dataset:
 * wrong rank, type, or no frame_id beside it; or, after the timeout, the file is not HDF5
 * or is shorter than its superblock says), H5S_EINVAL, H5S_ENOMEM.
 * Thread safety: a reader is used by one thread at a time; several readers may exist.
 */
int h5s_reader_open(h5s_reader **out, const char *path, const char *dataset,
                    const h5s_reader_options *opts);

/* Frame shape of the open dataset. Returns 0 or H5S_EINVAL. */
int h5s_reader_shape(const h5s_reader *reader, h5s_frame_shape *out);

/*
 * Polls once: refreshes the commit marker and the writer status and returns the
 * number of committed frames in *out_count (may be NULL).
 * Errors: H5S_EIO if the refresh fails (for example, the file was truncated).
 * In the writer's own process the poll waits for a commit in progress (docs/format.md).
 */
int h5s_reader_refresh(h5s_reader *reader, uint64_t *out_count);

/* Committed frame count as of the last refresh. */
uint64_t h5s_reader_count(const h5s_reader *reader);

/* Writer state as of the last refresh. */
h5s_writer_state h5s_reader_writer_state(const h5s_reader *reader);

/*
 * Waits until more than `known` frames are committed, or the writer has closed the
 * file, or timeout_ms passes (-1 = no limit), polling every poll_ms.
 * *out_count: the committed count at return.
 * Returns 0 when the count grew or the writer closed, cleanly or after an error
 * (compare *out_count with known; h5s_reader_writer_state tells which),
 * H5S_ETIMEDOUT when nothing happened in time, H5S_EIO on a refresh failure.
 */
int h5s_reader_wait(h5s_reader *reader, uint64_t known, int timeout_ms, uint64_t *out_count);

/*
 * Reads n committed frames starting at index first into buf (bufsize >= n * frame_bytes),
 * C order, the dataset's dtype, native little-endian.
 * Errors: H5S_ERANGE if first + n exceeds the committed count of the last refresh
 * (the reader never returns an uncommitted frame); H5S_EINVAL for a small buffer;
 * H5S_EIO/H5S_ECODEC if HDF5 cannot read or decode a chunk (message names the frame).
 */
int h5s_reader_read(h5s_reader *reader, uint64_t first, uint64_t n, void *buf, size_t bufsize);

/*
 * Reads the per-frame frame_id and timestamp (seconds since the epoch) of n committed
 * frames from first. Either output may be NULL. Errors as h5s_reader_read.
 */
int h5s_reader_read_meta(h5s_reader *reader, uint64_t first, uint64_t n, uint64_t *frame_ids,
                         double *timestamps);

/* Summary of one frame, as `h5stream tail` prints it. */
typedef struct {
    double min;
    double max;
    double mean;
    uint32_t crc32; /* zlib crc32 of the frame's bytes (little-endian, C order) */
} h5s_frame_summary;

/*
 * Computes min, max, mean and crc32 of one frame (shape->frame_bytes bytes of
 * shape->dtype). NaNs in float frames are skipped by min/max/mean (all-NaN gives NaN).
 * Returns 0, or H5S_EINVAL for a NULL argument or an invalid dtype. Thread-safe.
 */
int h5s_frame_summarize(h5s_frame_summary *out, const void *frame, const h5s_frame_shape *shape);

/* Closes the reader and its HDF5 handles. NULL is a no-op. */
void h5s_reader_close(h5s_reader *reader);

#ifdef __cplusplus
}
#endif
#endif /* H5S_READER_H */
