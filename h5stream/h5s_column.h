/*
 * h5s_column.h - private to h5stream/: groups of columns, the engine's building block for
 * the models whose items are table rows and runs of ragged arrays (tracts, MARC,
 * volumes). docs/architecture.md, "Groups and columns".
 *
 * A column is one dataset appended along its first axis: [N] or [N, ncols] rows of one
 * element type (numeric or compound), chunked by chunk_rows rows. A group is the set of
 * columns one model's items write to, committed together: exactly one of its columns is
 * the group's commit marker, and a reader never looks past the marker's extent.
 *
 * Producers (any thread) lock the group, append the rows of one whole item to each of its
 * columns, call h5s_group_item_done, and unlock; so the rows of an item are contiguous and
 * all columns agree on item order. Rows are copied into each column's open chunk buffer;
 * a full chunk goes to the encoder pool and then to the writer thread, which stores it with
 * H5Dwrite_chunk. A "cut" (by the file's flush policy, h5s_file_flush and close) hands the
 * writer copies of the partial chunks and a commit point; at the next commit the writer
 * flushes every payload column, then writes the marker's chunks, extends it to the items
 * of the commit point and flushes it, then the status row. A reader that reads the marker
 * first therefore never sees an item whose payload is not on disk.
 */
#ifndef H5S_COLUMN_H
#define H5S_COLUMN_H

#include <hdf5.h>
#include <stdint.h>

#include "h5stream.h"

typedef struct h5s_group h5s_group;
typedef struct h5s_column h5s_column;

#define H5S_COLUMN_OPTIONS_VERSION 1

typedef struct {
    unsigned version;    /* H5S_COLUMN_OPTIONS_VERSION */
    hid_t type;          /* element file type; copied. Rows are stored as given, no conversion */
    uint64_t ncols;      /* 0: a 1-D dataset [N]; else [N, ncols] */
    uint64_t chunk_rows; /* rows per chunk; 0 = about 128 KiB of rows */
    h5s_codec codec;     /* chunk compression */
    int marker;          /* 1: this column is its group's commit marker (one per group) */
} h5s_column_options;

#define H5S_COLUMN_OPTIONS_INIT                                                                    \
    {                                                                                              \
        H5S_COLUMN_OPTIONS_VERSION, H5I_INVALID_HID, 0, 0, H5S_CODEC_INIT, 0                       \
    }

/*
 * Declaration phase: a new group of the file, named for messages (for example "/tracts").
 * The file owns it and frees it at close. Errors: H5S_EINVAL, H5S_ESTATE (SWMR started),
 * H5S_ENOMEM.
 */
int h5s_group_create(h5s_group **out, h5s_file *file, const char *name);

/*
 * Declaration phase: creates the column's dataset at path (absolute; intermediate groups
 * are made), unlimited along N, with the codec's filters. Its extent starts at 0 rows.
 * The group owns the column. Errors: H5S_EINVAL (bad options, a second marker, path taken),
 * H5S_ESTATE, H5S_EIO (HDF5), H5S_ENOMEM.
 */
int h5s_column_create(h5s_column **out, h5s_group *group, const char *path,
                      const h5s_column_options *opts);

/*
 * Declaration phase: the column's first nrows rows (at most one chunk), written to the
 * file now, so readers see them from the start (a TRX offsets column's leading 0). rows
 * is copied. Errors: H5S_EINVAL (rows already there, too many), H5S_ESTATE, H5S_EIO.
 */
int h5s_column_preset(h5s_column *column, const void *rows, uint64_t nrows);

/* The column's dataset path (borrowed, valid while the file is). */
const char *h5s_column_path(const h5s_column *column);

/* Declaration phase only: the file's HDF5 id, to write attributes and create fixed-size
 * datasets; H5I_INVALID_HID once SWMR started (the writer thread owns the file then). */
hid_t h5s_file_hid(h5s_file *file);

/* Takes and releases the group's lock. Producers hold it while they add one item. */
void h5s_group_lock(h5s_group *group);
void h5s_group_unlock(h5s_group *group);

/*
 * Group locked, after SWMR started: appends nrows rows (nrows x row bytes, the element
 * type's memory layout, which is the file type's) to the column. rows is copied. Blocks
 * while the queue budget is used (the group lock stays held), even in the file's
 * non-blocking mode: an item is never left half-appended. Returns 0 or the stream's
 * kept error (H5S_EIO, ...), or H5S_ESTATE before start or after close.
 */
int h5s_column_append(h5s_column *column, const void *rows, uint64_t nrows);

/*
 * As h5s_column_append, but the caller writes the rows in place: fill(dst, first, n,
 * payload) is called once per chunk touched, to write rows [first, first + n) of this
 * append (0-based within it) to dst. Saves a copy when rows are converted (float32
 * points to float16 positions).
 */
int h5s_column_append_fill(h5s_column *column, uint64_t nrows,
                           void (*fill)(void *dst, uint64_t first, uint64_t n, void *payload),
                           void *payload);

/* Gives lent rows back: bytes[0, len) are no longer used by the stream. */
typedef void (*h5s_lent_done_fn)(void *ctx, const void *bytes, size_t len);

/*
 * As h5s_column_append, but without the copy where the rows allow it: a run of rows that
 * starts on a chunk boundary is stored straight from rows, chunk by chunk, and consecutive
 * calls whose rows continue each other in memory (rows == the end of the previous call's,
 * with the same done and ctx) keep filling the same chunk. rows must then stay valid and
 * unchanged until done(ctx, p, len) has been called for each lent range [p, p + len); it
 * is called once per chunk, on an encoder or the writer thread once the chunk is stored
 * (or dropped: failure, close), or on this thread when the rest of a partly filled chunk
 * is copied after all (a cut, rows that do not continue, or a plain append). After
 * h5s_file_close returns, no lent rows are in use. Rows before the next chunk boundary
 * are copied as by h5s_column_append. Errors as h5s_column_append.
 */
int h5s_column_append_lent(h5s_column *column, const void *rows, uint64_t nrows,
                           h5s_lent_done_fn done, void *ctx);

/* Group locked: appends zero rows until the column's row count is a multiple of its
 * chunk_rows (a heterogeneous volume pool starts each volume on a chunk). */
int h5s_column_pad_to_chunk(h5s_column *column);

/* Rows appended to the column so far (group locked, or after close). */
uint64_t h5s_column_rows(const h5s_column *column);

/* Rows per chunk (fixed at create). */
uint64_t h5s_column_chunk_rows(const h5s_column *column);

/*
 * Group locked: nitems more items are complete in every column. Counts them for the
 * file's stats and flush policy and cuts (hands the writer a commit point) when
 * flush_every items or flush_ms milliseconds have passed since the last cut.
 */
int h5s_group_item_done(h5s_group *group, uint64_t nitems);

/* The file's flush_every (items per commit, 0 = off): a model that appends items in
 * batches splits a batch at it, so that commits come as often as the user asked. */
uint64_t h5s_group_flush_every(const h5s_group *group);

/* Commit points (cuts) the file's groups have handed the writer so far, all groups
 * together. The writer may merge cuts that wait in its queue together into one commit, so
 * this counts what the flush policy asked for, not commits. Thread-safe. */
uint64_t h5s_file_group_cuts(h5s_file *file);

/* Items completed so far (group locked, or after close). */
uint64_t h5s_group_items(const h5s_group *group);

/* Items covered by the last commit (any thread). */
uint64_t h5s_group_committed(const h5s_group *group);

/*
 * Runs fn(fid, payload) on the writer thread after everything submitted before it is
 * written: writes in place to fixed-size datasets made in the declaration phase (a TRX
 * group's dpg values), or a model's own chunk writes (a volume's encoded chunks, stored
 * with H5Dwrite_chunk; fn then H5Dflush-es what it wrote, since only columns are flushed
 * by the commit). Datasets fn opens it must close before returning. fn returns 0 or an
 * h5s error (with its message set), which becomes the stream's kept error. bytes: memory
 * the payload holds, counted against the queue budget until fn has run (the call blocks
 * while the budget is used, or returns H5S_EAGAIN in non-blocking mode); 0 for small
 * payloads. free_payload (may be NULL) is called after fn, or instead of it once the
 * stream failed, and on any error of this call. Any thread, after start. Errors:
 * H5S_ESTATE, H5S_ENOMEM, H5S_EAGAIN, or the kept error.
 */
int h5s_file_call(h5s_file *file, int (*fn)(hid_t fid, void *payload), void *payload,
                  void (*free_payload)(void *payload), size_t bytes);

/*
 * Declaration phase: the file takes ownership of a model's handle: free_fn(obj) runs
 * when the file is closed or discarded, after the writer has stopped. Errors: H5S_EINVAL,
 * H5S_ESTATE, H5S_ENOMEM (free_fn is then called at once).
 */
int h5s_file_attach(h5s_file *file, void *obj, void (*free_fn)(void *obj));

/*
 * Registers the model's name for the root attribute "models" (written at start), for
 * example "tracts". Declaration phase; repeated names are kept once.
 */
int h5s_file_add_model(h5s_file *file, const char *model);

#endif
