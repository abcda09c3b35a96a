/*
 * h5stream.h - the h5stream writer: one SWMR writer thread per HDF5 file, fed by
 * producers on any thread through a bounded queue, with a pool of encoder threads that
 * compress whole chunks.
 *
 * Life of a file:
 *   h5s_file_create            creates the file (libver LATEST) and the root attributes;
 *   h5s_frames_create ...      declare the whole schema (datasets, per-frame values,
 *   h5s_frames_add_scalar      hard links). Runs on the calling thread, before SWMR;
 *   h5s_file_link
 *   h5s_file_start_swmr        starts SWMR writing, the writer thread and the encoders;
 *                              from here only the writer thread calls HDF5 on this file;
 *   h5s_frames_append ...      from any thread;
 *   h5s_file_flush             commit on demand;
 *   h5s_file_close             drain, write the last partial chunks, final commit, close.
 *
 * rust-hdf5's SwmrFileWriter, call for call (docs/architecture.md has the table):
 *   create                               h5s_file_create
 *   create_streaming_dataset             h5s_frames_create, tile 0, frames_per_chunk 1
 *   create_streaming_dataset_compressed  ... with options.codec
 *   create_streaming_dataset_tiled[_compressed]    ... with options.tile
 *   create_streaming_dataset_chunked[_compressed]  ... with options.frames_per_chunk
 *   create_hard_link                     h5s_file_link
 *   start_swmr                           h5s_file_start_swmr
 *   append_frame                         h5s_frames_append
 *   flush                                h5s_file_flush
 *   close                                h5s_file_close
 *
 * Errors: functions return 0 or a negative h5s_error_code; h5s_error_message() has the
 * detail. An error in the writer thread is kept and returned by the next append, flush
 * or close on any thread, with a message naming the file, dataset and item index.
 */
#ifndef H5STREAM_H
#define H5STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "h5s_types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct h5s_file h5s_file;
typedef struct h5s_frames h5s_frames;

/*
 * File locking, with HDF5_USE_FILE_LOCKING's meanings. As in HDF5 itself, that variable,
 * when set in the environment before HDF5 starts, overrides the policy of every file.
 */
typedef enum {
    H5S_LOCKING_ENV = 0, /* follow HDF5_USE_FILE_LOCKING if set, else HDF5's default (on) */
    H5S_LOCKING_ON,
    H5S_LOCKING_OFF,
    H5S_LOCKING_BEST_EFFORT /* lock, but carry on where the filesystem has no locks */
} h5s_locking;

#define H5S_FILE_OPTIONS_VERSION 1

typedef struct {
    unsigned version;     /* H5S_FILE_OPTIONS_VERSION */
    size_t queue_bytes;   /* byte budget for data appended but not yet written; >= 1 MiB */
    int nonblocking;      /* 0: append blocks while the budget is used; 1: H5S_EAGAIN */
    int encode_threads;   /* encoder threads; 0 = number of online cores */
    uint64_t flush_every; /* commit after this many appended items; 0 = not by count */
    unsigned flush_ms;    /* commit at least this often (milliseconds); 0 = not by time */
    h5s_locking locking;  /* file locking policy */
    const char *creator;  /* root attribute "creator"; NULL = "h5stream VERSION" */
} h5s_file_options;

#define H5S_FILE_OPTIONS_INIT                                                                      \
    {                                                                                              \
        H5S_FILE_OPTIONS_VERSION, (size_t)256 << 20, 0, 0, 0, 1000, H5S_LOCKING_ENV, NULL          \
    }

/*
 * Creates (or truncates) the HDF5 file at path with libver bounds LATEST/LATEST and
 * writes the root attributes (format name and version, creator, models). The file is
 * in its declaration phase until h5s_file_start_swmr.
 * out: the new handle, the caller's; free it with h5s_file_close.
 * opts: NULL for H5S_FILE_OPTIONS_INIT.
 * Errors: H5S_EINVAL (bad option), H5S_EIO (HDF5 cannot create the file, for example
 * a missing folder or a lock held by another process), H5S_ENOMEM.
 * Thread safety: the handle may be shared by producer threads once SWMR has started;
 * declaration calls must come from one thread.
 */
int h5s_file_create(h5s_file **out, const char *path, const h5s_file_options *opts);

/*
 * Opens an existing h5stream file, closed cleanly (or repaired by h5s_recover), to append
 * more frames, as rust-hdf5's SwmrFileWriter::open_append: every frames dataset in it is
 * available through h5s_frames_get, with its layout, codec and per-frame values, and new
 * frames continue after the committed ones (default frame_id continues the index). The
 * file is in its declaration phase: more datasets may be declared, then
 * h5s_file_start_swmr. A dataset with frames_per_chunk > 1 whose frame count is not a
 * multiple of it had its last chunk padded at close; it refuses appends (H5S_ESTATE).
 * out: the caller's; free it with h5s_file_close. opts: NULL for the defaults.
 * Errors: H5S_ENOTFOUND (no such file); H5S_EIO (HDF5 cannot open it for writing, for
 * example a file whose writer was killed: run h5s_recover first); H5S_EFORMAT (not an
 * h5stream file of this format version, or payload and commit marker lengths differ).
 * Thread safety: as h5s_file_create.
 */
int h5s_file_open_append(h5s_file **out, const char *path, const h5s_file_options *opts);

/*
 * The frames dataset at path in a file (NULL: the NeXus default; its /entry/data/data
 * alias is accepted too), declared by h5s_frames_create or found by h5s_file_open_append.
 * out: borrowed, valid until h5s_file_close.
 * Errors: H5S_ENOTFOUND. Thread-safe once SWMR has started.
 */
int h5s_frames_get(h5s_frames **out, h5s_file *file, const char *path);

#define H5S_FRAMES_OPTIONS_VERSION 1

typedef struct {
    unsigned version;          /* H5S_FRAMES_OPTIONS_VERSION */
    h5s_dtype dtype;           /* element type of a frame */
    unsigned rank;             /* frame rank, 1 to 3 (dataset rank is rank + 1) */
    uint64_t dims[3];          /* frame shape, slowest axis first (for 2-D: H, W) */
    uint64_t tile[3];          /* chunk shape within a frame; all 0 = the whole frame */
    uint32_t frames_per_chunk; /* k >= 1 frames stored together in each chunk */
    h5s_codec codec;           /* chunk compression */
    double fill_value;         /* HDF5 fill value, pads partial chunks; must fit dtype */
} h5s_frames_options;

#define H5S_FRAMES_OPTIONS_INIT                                                                    \
    {                                                                                              \
        H5S_FRAMES_OPTIONS_VERSION, H5S_UINT16, 2, {0, 0, 0}, {0, 0, 0}, 1, H5S_CODEC_INIT, 0.0    \
    }

/*
 * Declares a streaming frames dataset: [N, dims...] unlimited along N, chunked
 * [frames_per_chunk, tile...] (tile = dims when all 0), with the codec's filters, and
 * its per-frame datasets frame_id (uint64, the commit marker) and timestamp (float64
 * seconds since the epoch), named as docs/format.md says.
 * path: absolute dataset path; NULL means the NeXus default
 * /entry/instrument/detector/data, which also creates /entry (NXentry),
 * /entry/instrument (NXinstrument), /entry/instrument/detector (NXdetector) and
 * /entry/data (NXdata, signal "data") with a hard link data -> the detector data.
 * Missing parent groups are created. The NeXus classes follow the NeXus base classes
 * (NXentry, NXinstrument, NXdetector, NXdata) as areaDetector's NDFileHDF5 writes them.
 * opts: copied; see h5s_frames_options for shapes (elements, slowest axis first).
 * out: borrowed handle, valid until h5s_file_close.
 * Errors: H5S_ESTATE after h5s_file_start_swmr; H5S_EINVAL for a bad shape, tile,
 * dtype or codec, or an existing path; H5S_EIO when HDF5 fails.
 * Thread safety: declaration phase, one thread.
 */
int h5s_frames_create(h5s_frames **out, h5s_file *file, const char *path,
                      const h5s_frames_options *opts);

/*
 * Declares a per-frame value written in lockstep with the frames, as the dataset
 * beside frame_id named as docs/format.md says ([N], dtype). Values are passed to
 * h5s_frames_append as doubles in declaration order and cast to dtype.
 * name: [A-Za-z0-9_ ...] without '/', not "frame_id" or "timestamp"; copied.
 * Errors: H5S_ESTATE after start; H5S_EINVAL for a bad name or dtype or a name in use;
 * H5S_EIO when HDF5 fails. Thread safety: declaration phase, one thread.
 * Follows areaDetector's "attributes as datasets": per-frame metadata lives in datasets,
 * because SWMR forbids attribute changes once writing has started.
 */
int h5s_frames_add_scalar(h5s_frames *frames, const char *name, h5s_dtype dtype);

/*
 * Creates a hard link link_path -> target_path (an existing object), creating missing
 * parent groups (as rust-hdf5's create_hard_link). Both paths absolute; copied.
 * Errors: H5S_ESTATE after start; H5S_ENOTFOUND if target is missing; H5S_EINVAL if
 * link_path exists or a path is relative; H5S_EIO when HDF5 fails.
 * Thread safety: declaration phase, one thread.
 */
int h5s_file_link(h5s_file *file, const char *link_path, const char *target_path);

/*
 * Ends the declaration phase: calls H5Fstart_swmr_write, reopens the datasets, and
 * starts the writer thread and the encoder pool (threads that block every signal, so
 * signals reach the application's own threads). Readers may open the file from here.
 * Errors: H5S_ESTATE if already started; H5S_EIO if HDF5 refuses SWMR (for example on
 * a file system without the needed locking); H5S_ENOMEM.
 * Thread safety: call once, from the thread that declared the schema.
 * Follows HDF5's SWMR rules (docs/format.md): every object exists before this call.
 */
int h5s_file_start_swmr(h5s_file *file);

/* Per-frame metadata for h5s_frames_append; all fields optional. */
typedef struct {
    int has_frame_id;      /* 0: frame_id = index of the frame in this dataset (0-based) */
    uint64_t frame_id;     /* the detector's frame number (areaDetector's uniqueId) */
    int has_timestamp;     /* 0: the wall-clock time of the append call */
    double timestamp;      /* seconds since the epoch */
    const double *scalars; /* one per declared scalar, declaration order; NULL = zeros */
} h5s_frame_meta;

/*
 * Appends one frame. data: dims[0] x ... x dims[rank-1] elements of the dataset's dtype,
 * C order, native little-endian; nbytes must equal the frame size. The data is copied
 * before the call returns. Frames are numbered in the order their append calls take the
 * dataset's lock.
 * meta: NULL for the defaults.
 * Blocks while the queue's byte budget is used, unless the file is non-blocking, in
 * which case it returns H5S_EAGAIN and the frame is not taken (call again).
 * Errors: H5S_EINVAL (wrong size), H5S_ESTATE (before start or after close began),
 * H5S_EAGAIN, or the writer thread's kept error (H5S_EIO, H5S_ECODEC, ...).
 * Thread-safe.
 */
int h5s_frames_append(h5s_frames *frames, const void *data, size_t nbytes,
                      const h5s_frame_meta *meta);

/*
 * The layout of a frames dataset (dtype, shape, tile, frames_per_chunk, codec, fill) as
 * declared or, after h5s_file_open_append, as read from the file. Thread-safe.
 * Returns 0 or H5S_EINVAL.
 */
int h5s_frames_info(const h5s_frames *frames, h5s_frames_options *out);

/* Absolute path of a frames dataset (borrowed, valid until h5s_file_close). Thread-safe. */
const char *h5s_frames_path(const h5s_frames *frames);

/* Number of frames in this dataset so far, committed or not, including those already in
 * the file when it was opened with h5s_file_open_append. Thread-safe. */
uint64_t h5s_frames_count(const h5s_frames *frames);

/*
 * Commits now: waits until every frame appended before the call that completes a chunk
 * is written, flushes the payload datasets, then the commit marker, then the file
 * (H5Fflush). Frames of a chunk with frames_per_chunk > 1 that is not yet full stay
 * queued until it fills or the file closes.
 * Errors: the writer thread's kept error; H5S_ESTATE before start. Thread-safe.
 */
int h5s_file_flush(h5s_file *file);

/* Counters of a file, for progress displays and benchmarks. */
typedef struct {
    uint64_t appended;       /* items in all datasets, committed or not */
    uint64_t committed;      /* items covered by the commit markers */
    uint64_t commits;        /* commits done */
    uint64_t bytes_raw;      /* raw bytes of the chunks written */
    uint64_t bytes_stored;   /* encoded bytes written */
    size_t queue_bytes;      /* bytes held in the queue now */
    size_t queue_peak_bytes; /* the most bytes the queue ever held */
} h5s_file_stats;

/* Fills out with the current counters. Thread-safe. Returns 0 or H5S_EINVAL. */
int h5s_file_stats_get(h5s_file *file, h5s_file_stats *out);

/*
 * Closes the file: waits for all queued frames, writes each dataset's last partial
 * chunk padded with the fill value, sets every extent to the exact frame count, commits,
 * marks the writer status closed, closes HDF5 and frees the handle (also before start,
 * or after an error). NULL is a no-op returning 0.
 * Returns 0, or the first error the writer met (the file is closed all the same, unless
 * HDF5 cannot write its metadata at close, on a full disk for example: then the message
 * says so, and the file, still marked open or shorter than its superblock says, needs
 * h5s_recover once there is room; its committed items are kept). HDF5 before 1.14.1 then
 * also keeps a stale file ID that its clean-up at exit crashes on (HDFFV-11052): a
 * program that may meet a full disk calls H5dont_atexit() before any HDF5 call, as the
 * h5stream command does.
 * Thread safety: call once, after every other thread has returned from its appends and
 * flushes on this file.
 */
int h5s_file_close(h5s_file *file);

/* Path the file was created at (borrowed, valid until h5s_file_close). Thread-safe. */
const char *h5s_file_path(const h5s_file *file);

/* What h5s_recover found and did. */
typedef struct {
    int was_open;              /* the superblock still said "open for SWMR write" */
    uint64_t datasets;         /* frames datasets found (those with a frame_id beside them) */
    uint64_t committed;        /* frames covered by the commit markers, all datasets */
    uint64_t dropped;          /* frames past a commit marker, trimmed from the payload */
    uint64_t unreadable;       /* committed frames whose chunks failed to decode (kept) */
    uint64_t first_unreadable; /* index of the first of those, if any */
    uint64_t markers;          /* other models' commit markers found (/tracts/offsets,
                                  /volumes/C/obs, /obs_meta, /marc/index, ...) */
    uint64_t items;            /* items those markers commit, all together (kept) */
} h5s_recover_report;

/*
 * Makes the file of a killed writer readable without losing a committed frame
 * (DESIGN.md section 3): clears the superblock's SWMR-write flags and, in the same
 * step, moves the end-of-allocation to the real end of file (never truncating, unlike
 * `h5clear -s` alone); then, for each frames dataset, trims payload datasets (data,
 * timestamp, per-frame values) to the commit marker's length, reads every committed
 * frame back to check it decodes, and marks the writer status closed. The payload
 * datasets are those the data's h5stream_per_frame attribute lists (docs/format.md).
 * A file that was closed cleanly is checked the same way and left as it is. Last, the
 * disk space a killed writer had reserved past the file's end is given back (its size and
 * bytes do not change; docs/architecture.md, "File space").
 * out: filled in, may be NULL.
 * Errors: H5S_ENOTFOUND (no file), H5S_ESTATE (another process still has the file open
 * for writing, seen in /proc on Linux), H5S_EIO (HDF5 cannot open or repair it),
 * H5S_EFORMAT (not an h5stream file, or a commit marker longer than its payload),
 * H5S_ECODEC (some committed frame does not decode; out says which).
 * Thread safety: no other process may have the file open for writing.
 */
int h5s_recover(const char *path, h5s_recover_report *out);

#ifdef __cplusplus
}
#endif
#endif /* H5STREAM_H */
