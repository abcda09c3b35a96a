/*
 * h5s_marc_writer.h - the marc model of the writer engine: MARC 21 records (ISO 2709)
 * stored byte-exact in a SWMR file, with a per-record index, the rejected records and
 * their errors, and a control-number index (layout: h5s_marc_layout.h,
 * docs/marc-model.md).
 *
 * Life of a marc file:
 *   h5s_file_create            the file;
 *   h5s_marc_model_create      declares /marc (both record groups, the sources table, the
 *                              repairs, the control index) with the source names;
 *   h5s_file_start_swmr        starts the writer;
 *   h5s_marc_model_append ...  batches of records, accepted or rejected, any thread;
 *   h5s_marc_model_finish      after the last append: hands the writer the control index;
 *   h5s_file_close             drains, commits and closes;
 *   h5s_marc_model_free        frees the model (after close).
 *
 * Records are checked and cut by the caller (formats/h5s_marc.h); this layer stores what
 * it is given, in the order given. Thread safety: append is thread-safe (it holds the
 * accepted group's lock, then the rejected group's, for a whole batch); create, finish
 * and free are called once from one thread.
 */
#ifndef H5S_MARC_WRITER_H
#define H5S_MARC_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "h5s_marc.h"
#include "h5s_marc_layout.h"
#include "h5stream.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct h5s_marc_model h5s_marc_model;

#define H5S_MARC_MODEL_OPTIONS_VERSION 1

typedef struct {
    unsigned version;     /* H5S_MARC_MODEL_OPTIONS_VERSION */
    h5s_codec codec;      /* compression of every column */
    h5s_marc_mode mode;   /* stored as /marc's "mode" attribute only */
    size_t records_chunk; /* bytes per chunk of /marc/records; 0 = 1 MiB */
    int no_control_index; /* 1: skip /marc/control_index (readers then scan) */
} h5s_marc_model_options;

#define H5S_MARC_MODEL_OPTIONS_INIT                                                                \
    {                                                                                              \
        H5S_MARC_MODEL_OPTIONS_VERSION, H5S_CODEC_INIT, H5S_MARC_STRICT, 0, 0                      \
    }

/*
 * Declaration phase: makes every dataset of the layout in file, writes /marc's attributes
 * and the sources table (nsources names, each cut to 1023 bytes), and registers the model
 * "marc". The file owns the columns; *out is the caller's, freed by h5s_marc_model_free
 * after h5s_file_close. opts: NULL for the defaults.
 * Errors: H5S_EINVAL (bad options, nsources 0 or > UINT32_MAX, /marc exists), H5S_ESTATE
 * (SWMR started), H5S_EIO (HDF5), H5S_ENOMEM.
 */
int h5s_marc_model_create(h5s_marc_model **out, h5s_file *file, const char *const *sources,
                          size_t nsources, const h5s_marc_model_options *opts);

/* One record for h5s_marc_model_append. Pointers are borrowed for the call. */
typedef struct h5s_marc_item {
    const unsigned char *data; /* bytes to store (the input, or its repaired/converted form) */
    size_t len;
    const unsigned char *original; /* when data is not the input: the input bytes, else NULL */
    size_t original_len;
    int rejected;                  /* 1: to /marc/rejected, with an errors row */
    const h5s_marc_report *report; /* defects (and lenient repairs) of the input; may be NULL */
    h5s_marc_index_row index;      /* see h5s_marc_model_index_row; length is set by append */
} h5s_marc_item;

/*
 * Fills the parts of an index row that come from the record: leader and control number
 * of rec (the bytes to store), and flags, error and n_errors from report (may be NULL)
 * and scan_flags (H5S_MARC_SPAN_* of the scanner). ordinal, source and source_offset are
 * left for the caller. Pure and thread-safe; no allocation.
 */
void h5s_marc_model_index_row(h5s_marc_index_row *out, const unsigned char *rec, size_t len,
                              const h5s_marc_report *report, uint32_t scan_flags);

/*
 * Appends n records in the order given: accepted ones to /marc (records, offsets, index;
 * altered ones also to /marc/repairs and /marc/originals), rejected ones to /marc/rejected
 * (records, offsets, index, errors, whose message is h5s_marc_report_format's text).
 * Contiguous accepted records are appended as one run of bytes. Bytes are copied before
 * it returns. Blocks while the queue budget is used.
 * Errors: H5S_EINVAL (NULL, a record over 4 GiB, a source out of range), H5S_ESTATE
 * (before start, after finish), or the stream's kept error (H5S_EIO, ...). Thread-safe.
 */
int h5s_marc_model_append(h5s_marc_model *m, const h5s_marc_item *items, size_t n);

/*
 * As h5s_marc_model_append, but the input bytes are lent, not copied, where whole 1 MiB
 * chunks of /marc/records (or /marc/rejected/records) can be stored straight from them:
 * items whose data is the input (original == NULL) and that lie back to back in memory,
 * also across calls. Such data must stay valid and unchanged until done(ctx, bytes, len)
 * has been called for each lent range; done runs on an engine thread (an encoder or the
 * writer) or on the calling thread, once per range, and must be thread-safe. After
 * h5s_file_close returns, no lent bytes are in use. Altered records (repaired, converted)
 * are always copied. done may be NULL: then this is h5s_marc_model_append.
 * Errors and thread safety as h5s_marc_model_append.
 */
int h5s_marc_model_append_lent(h5s_marc_model *m, const h5s_marc_item *items, size_t n,
                               void (*done)(void *ctx, const void *bytes, size_t len), void *ctx);

/*
 * After the last append: sorts the control numbers seen and hands the writer thread the
 * /marc/control_index write (it runs before the final commit of h5s_file_close).
 * Errors: H5S_ESTATE (called twice), H5S_ENOMEM, or the stream's kept error.
 */
int h5s_marc_model_finish(h5s_marc_model *m);

/* What the model has been given so far. */
typedef struct {
    uint64_t accepted, rejected, altered; /* records */
    uint64_t accepted_bytes, rejected_bytes;
} h5s_marc_model_stats;

/* Fills out with the counts of the appends so far. Any thread, also after h5s_file_close. */
void h5s_marc_model_stats_get(h5s_marc_model *m, h5s_marc_model_stats *out);

/* Frees the model; NULL is a no-op. Call after h5s_file_close (or when create failed). */
void h5s_marc_model_free(h5s_marc_model *m);

#ifdef __cplusplus
}
#endif
#endif
