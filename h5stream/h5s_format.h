/*
 * h5s_format.h - the on-disk layout, in C: names, the status row, the per-frame naming
 * rule and the element types. Public: the writer engine, the readers, the tools and any
 * other program reading h5stream files share it. docs/format.md is the prose version of
 * this file; keep them in step. Every function here is pure and thread-safe.
 */
#ifndef H5S_FORMAT_H
#define H5S_FORMAT_H

#include <hdf5.h>
#include <stdint.h>
#include <stddef.h>

#include "h5s_types.h"

/* Root attributes (written before SWMR starts). */
#define H5S_ATTR_FORMAT "h5stream_format"                 /* "h5stream" */
#define H5S_ATTR_FORMAT_VERSION "h5stream_format_version" /* int32 */
#define H5S_ATTR_CREATOR "creator"                        /* "h5stream 0.1.0" or user's */
#define H5S_ATTR_MODELS "h5stream_models"                 /* "frames" (comma list) */

/* Root attributes of a sharded frames master (docs/shards.md), absent elsewhere. */
#define H5S_ATTR_SHARD_RANKS "h5stream_shard_ranks" /* uint32: shards N */
#define H5S_ATTR_SHARD_BLOCK "h5stream_shard_block" /* uint64: frames per block B */
#define H5S_ATTR_SHARD_FILES "h5stream_shard_files" /* string: shard names, comma list */

/*
 * Writer status: /h5stream/writer, a one-row compound dataset overwritten in place.
 * state: 0 = writing (SWMR), 1 = closed cleanly, 2 = closed after a writer error (the
 * frames committed before it are whole; nothing more will come). heartbeat: seconds since
 * the epoch of the
 * last commit. committed: items committed by the last commit (all datasets together).
 */
#define H5S_STATUS_GROUP "/h5stream"
#define H5S_STATUS_DATASET "/h5stream/writer"
#define H5S_STATE_WRITING 0
#define H5S_STATE_CLOSED 1
#define H5S_STATE_FAILED 2 /* closed after a writer error: final, like CLOSED */

typedef struct {
    int32_t state;
    double heartbeat;
    uint64_t committed;
} h5s_status_row;

/* Compound type of h5s_status_row (memory and file layout). Caller closes it. */
hid_t h5s_format_status_type(void);

/*
 * Attribute of a frames dataset (fixed-length string, written before SWMR starts):
 * the names, within its group, of its per-frame payload datasets (timestamp and the
 * declared values), comma-separated. Recovery trims exactly these, never a neighbour.
 */
#define H5S_ATTR_PER_FRAME "h5stream_per_frame"

/* Default frames dataset (NeXus): data, its hard link, and the NeXus groups. */
#define H5S_FRAMES_DEFAULT_PATH "/entry/instrument/detector/data"
#define H5S_FRAMES_NXDATA_LINK "/entry/data/data"

/* Per-frame datasets beside a frames dataset (see h5s_format_sidecar). */
#define H5S_SIDECAR_FRAME_ID "frame_id"   /* uint64, the commit marker */
#define H5S_SIDECAR_TIMESTAMP "timestamp" /* float64 seconds since the epoch */

/*
 * Path of a per-frame dataset named `what` for the frames dataset at data_path:
 * "GROUP/what" when the data's own name is "data", else "GROUP/NAME_what".
 * ("/entry/instrument/detector/data", "frame_id") -> "/entry/instrument/detector/frame_id"
 * ("/cam2/image", "frame_id") -> "/cam2/image_frame_id".
 * Returns 0, or H5S_EINVAL if the result does not fit in outsize bytes.
 */
int h5s_format_sidecar(char *out, size_t outsize, const char *data_path, const char *what);

/*
 * Metadata read attempts for SWMR readers. A SWMR reader retries a metadata checksum
 * failure, since the writer may be halfway through writing that metadata; HDF5 1.10's
 * default of 100 attempts, with doubling sleeps, makes one corrupted byte in a file that
 * nobody writes an endless wait. 30 attempts end after about a second.
 */
#define H5S_SWMR_READ_ATTEMPTS 30

/*
 * A file access property list for SWMR reading: H5S_SWMR_READ_ATTEMPTS metadata read
 * attempts. The caller closes it. H5I_INVALID_HID if HDF5 fails.
 */
hid_t h5s_format_swmr_read_fapl(void);

/* 1 when every component of the absolute path exists as a link (H5Lexists alone fails
 * when a parent is missing). */
int h5s_format_path_exists(hid_t loc, const char *path);

/* What a file's HDF5 superblock says, read from its bytes without HDF5. */
typedef struct {
    uint64_t offset;      /* where the signature was found: 0, 512, 1024, 2048, ... */
    unsigned version;     /* superblock version, 0 to 3 */
    unsigned offset_size; /* bytes per address: 2, 4 or 8 when valid */
    unsigned flags;       /* file consistency flags (versions 2 and 3; 0 otherwise) */
    uint64_t eof;         /* end-of-file address it records, absolute (base + EOF); 0 when
                             its bytes do not say (bad size of offsets, unknown version,
                             or the file ends inside the superblock) */
} h5s_superblock;

/*
 * Finds the HDF5 signature of the file open as fd (size bytes long) at byte 0, 512, 1024,
 * 2048, ... (after a user block) and reads the superblock there into out. HDF5 file format
 * specification, "Superblock": versions 0 and 1 put the base address at byte 24 (28 for
 * version 1), versions 2 and 3 at byte 12, each followed by two more addresses, the
 * second the end-of-file address. Returns 1 when found, 0 when the file has no HDF5
 * signature, -1 when a read fails (errno set). Thread-safe; reads with pread only.
 */
int h5s_format_superblock(int fd, uint64_t size, h5s_superblock *out);

/* Limits of a frames dataset's description. */
#define H5S_FORMAT_PATH_MAX 512
#define H5S_FORMAT_PER_FRAME_MAX 65 /* timestamp and up to 64 declared values */

/* One frames dataset of a file, as h5s_format_find_frames reports it. */
typedef struct {
    char data[H5S_FORMAT_PATH_MAX];   /* its name beside frame_id (not a NeXus alias) */
    char marker[H5S_FORMAT_PATH_MAX]; /* its frame_id, the commit marker */
    unsigned nper_frame;
    /* Its per-frame payload datasets (absolute paths), as its h5stream_per_frame attribute
     * lists them; without that attribute, its timestamp if it has one. */
    char per_frame[H5S_FORMAT_PER_FRAME_MAX][H5S_FORMAT_PATH_MAX];
} h5s_format_frames;

/*
 * Calls fn once for each frames dataset of an open file: a dataset of rank 2 or more
 * with a 1-D frame_id beside it, found through its links (the NeXus alias
 * /entry/data/data has no frame_id beside it, so the object is reported once, under
 * its own name). fn returns 0 to go on, anything else to stop with that value.
 * Returns 0, fn's value, or H5S_EIO/H5S_ENOMEM/H5S_EFORMAT with a message naming file.
 * The one place that decides what a frames dataset is: recover, info and
 * h5s_file_open_append all use it.
 */
int h5s_format_find_frames(hid_t fid, const char *file,
                           int (*fn)(const h5s_format_frames *frames, void *payload),
                           void *payload);

/* HDF5 little-endian file/memory type for a dtype (a predefined id; do not close). */
hid_t h5s_format_h5type(h5s_dtype dtype);

/* The IEEE binary16 type (h5py reads it as numpy float16). Made once; do not close. */
hid_t h5s_format_half_type(void);

/* dtype of an HDF5 type (integer or float, 1-8 bytes), or H5S_DTYPE_INVALID. */
h5s_dtype h5s_format_dtype_of(hid_t type);

#endif
