/*
 * h5s_marc_reader.h - reading the marc model of an h5stream file (docs/marc-model.md),
 * also while its writer is still appending (SWMR), and exporting it to ISO 2709, MARCXML,
 * MARC-in-JSON or the line format through formats/h5s_marc.h.
 *
 * The reader refreshes the commit marker (the group's index) first and only reads records
 * it covers, so it never returns a record the writer has not committed. Records are
 * numbered by row: 0 .. count-1 in the order they were read (input order); each row's
 * index entry carries the run-wide ordinal, which also counts records of the other group.
 * It depends on the layout (h5stream/h5s_marc_layout.h), not on the writer engine.
 *
 * Thread safety: a reader is used by one thread at a time; several readers may exist.
 */
#ifndef H5S_MARC_READER_H
#define H5S_MARC_READER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "h5s_marc.h"
#include "h5s_marc_layout.h"
#include "h5s_reader.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct h5s_marc_reader h5s_marc_reader;

#define H5S_MARC_READER_OPTIONS_VERSION 1

typedef struct {
    unsigned version;    /* H5S_MARC_READER_OPTIONS_VERSION */
    int open_timeout_ms; /* wait for the file, its SWMR start and /marc: 0 once, -1 forever */
    unsigned poll_ms;    /* retry and poll interval (milliseconds) */
    int rejected;        /* 0: the accepted records (/marc); 1: /marc/rejected */
} h5s_marc_reader_options;

#define H5S_MARC_READER_OPTIONS_INIT                                                               \
    {                                                                                              \
        H5S_MARC_READER_OPTIONS_VERSION, 0, 100, 0                                                 \
    }

/*
 * Opens path for SWMR reading (a closed file opens too) and the record group chosen by
 * opts->rejected. Waits, retrying every poll_ms up to open_timeout_ms, while the file does
 * not exist, is not yet in SWMR mode or has no /marc yet. *out is the caller's; free it
 * with h5s_marc_reader_close.
 * Errors: H5S_ETIMEDOUT (not openable in time), H5S_ENOTFOUND (no /marc after the
 * timeout), H5S_EFORMAT (a /marc of another layout version or shape, or its offsets or
 * records missing (named); or, after the timeout, the file is not HDF5 or is shorter than
 * its superblock says), H5S_EINVAL, H5S_ENOMEM, H5S_EIO.
 */
int h5s_marc_reader_open(h5s_marc_reader **out, const char *path,
                         const h5s_marc_reader_options *opts);

/* Closes the reader and its HDF5 handles. NULL is a no-op. */
void h5s_marc_reader_close(h5s_marc_reader *r);

/*
 * Polls once: refreshes the writer status, the index (commit marker), then offsets and
 * records, and sets the committed record count (*out_count, may be NULL).
 * Errors: H5S_EIO when a refresh fails.
 * In the writer's own process the poll waits for a commit in progress (docs/format.md).
 */
int h5s_marc_reader_refresh(h5s_marc_reader *r, uint64_t *out_count);

/* Committed records as of the last refresh. */
uint64_t h5s_marc_reader_count(const h5s_marc_reader *r);

/* Writer state as of the last refresh. */
h5s_writer_state h5s_marc_reader_writer_state(const h5s_marc_reader *r);

/*
 * Waits until more than known records are committed, or the writer has closed the file,
 * or timeout_ms passes (-1 = no limit). *out_count: the count at return (may be NULL).
 * Returns 0 (count grew or writer closed), H5S_ETIMEDOUT, or H5S_EIO.
 */
int h5s_marc_reader_wait(h5s_marc_reader *r, uint64_t known, int timeout_ms, uint64_t *out_count);

/* One record. data is borrowed from the reader, valid until its next read call. */
typedef struct {
    uint64_t row;
    const unsigned char *data; /* the stored ISO 2709 bytes */
    size_t len;
    h5s_marc_index_row index;
} h5s_marc_record;

/*
 * Reads the record at row (0-based, < count). Errors: H5S_ERANGE (row not committed),
 * H5S_EIO/H5S_ECODEC (HDF5 cannot read or decode), H5S_EFORMAT (offsets out of order),
 * H5S_ENOMEM.
 */
int h5s_marc_reader_read(h5s_marc_reader *r, uint64_t row, h5s_marc_record *out);

/* Consecutive records read at once; every pointer is borrowed until the next read call. */
typedef struct {
    uint64_t first, n;               /* rows first .. first + n - 1 */
    const unsigned char *bytes;      /* their bytes back to back */
    const uint64_t *offsets;         /* n + 1 entries into bytes; offsets[0] = 0 */
    const h5s_marc_index_row *index; /* n entries */
} h5s_marc_batch;

/*
 * Reads up to max_n committed records from row first, stopping before max_bytes of record
 * bytes are exceeded (at least one record is read however long). out->n = 0 when first is
 * the committed count. Errors: H5S_ERANGE (first past the count), as h5s_marc_reader_read.
 */
int h5s_marc_reader_read_batch(h5s_marc_reader *r, uint64_t first, uint64_t max_n, size_t max_bytes,
                               h5s_marc_batch *out);

/*
 * Iterates the committed records in constant memory (batches of about 4 MiB): fills *out
 * with the record at the cursor and moves the cursor on. Returns 1, 0 at the committed
 * end (refresh and call again to follow a live file), or a negative error as read.
 */
int h5s_marc_reader_next(h5s_marc_reader *r, h5s_marc_record *out);

/* Moves the iteration cursor to row (the next h5s_marc_reader_next returns it). */
void h5s_marc_reader_seek(h5s_marc_reader *r, uint64_t row);

/*
 * Row of the first committed record whose 001 (trimmed, as stored: cut to 48 bytes) is
 * control. Without a scan when the file is closed and has its /marc/control_index; while
 * the file is written, builds an in-memory map of the committed rows (16 bytes a record)
 * and keeps it up to date on later calls. Errors: H5S_ENOTFOUND, H5S_EIO, H5S_ENOMEM.
 */
int h5s_marc_reader_find_control(h5s_marc_reader *r, const char *control, uint64_t *out_row);

/* 1 when the last find_control used /marc/control_index, 0 when it scanned. */
int h5s_marc_reader_used_control_index(const h5s_marc_reader *r);

/*
 * Row of the committed record with this run-wide ordinal (binary search on the index,
 * whose ordinals increase). Errors: H5S_ENOTFOUND (the ordinal is in the other group or
 * not committed), H5S_EIO.
 */
int h5s_marc_reader_find_ordinal(h5s_marc_reader *r, uint64_t ordinal, uint64_t *out_row);

/* Rejected group only: the error row of the rejected record at row. Errors: H5S_EINVAL
 * (accepted group), H5S_ERANGE, H5S_EIO. */
int h5s_marc_reader_error(h5s_marc_reader *r, uint64_t row, h5s_marc_error_row *out);

/*
 * Accepted group only: for a record stored altered (index flags REPAIRED or CONVERTED),
 * its /marc/repairs row and its original input bytes (*original borrowed until the next
 * read call; may be NULL). Errors: H5S_ENOTFOUND (not altered), H5S_EINVAL, H5S_EIO.
 */
int h5s_marc_reader_repair(h5s_marc_reader *r, uint64_t row, h5s_marc_repair_row *out,
                           const unsigned char **original);

/* Number of source files and the name of source id (borrowed; NULL when out of range). */
size_t h5s_marc_reader_nsources(const h5s_marc_reader *r);
const char *h5s_marc_reader_source(const h5s_marc_reader *r, uint32_t id);

/* ---- export ------------------------------------------------------------------------- */

#define H5S_MARC_EXPORT_OPTIONS_VERSION 1

typedef struct {
    unsigned version;       /* H5S_MARC_EXPORT_OPTIONS_VERSION */
    h5s_marc_format format; /* ISO 2709, MARCXML, MARC-in-JSON, line */
    unsigned flags;         /* H5S_MARC_WRITE_MARC8_TO_UTF8 */
    int rejected;           /* export /marc/rejected instead of /marc */
    int threads;            /* formatting threads for MARCXML/JSON/line; 0 = cores */
} h5s_marc_export_options;

#define H5S_MARC_EXPORT_OPTIONS_INIT                                                               \
    {                                                                                              \
        H5S_MARC_EXPORT_OPTIONS_VERSION, H5S_MARC_ISO2709, 0, 0, 0                                 \
    }

typedef struct {
    uint64_t records; /* records written */
    uint64_t skipped; /* records the format could not express (no readable directory) */
    uint64_t bytes;   /* bytes written */
} h5s_marc_export_stats;

/*
 * Writes every committed record of the file at h5path, in row order, to fp in the chosen
 * format. ISO 2709 without conversion is the stored bytes, byte for byte; the other
 * formats are formats/h5s_marc.h's writers (MARCXML as yaz-marcdump -o marcxml writes it).
 * Records are read in batches and formatted by a pool of threads, in constant memory.
 * out: counts, may be NULL. Errors: as h5s_marc_reader_open (timeout 0), H5S_EIO (write
 * failed), H5S_ENOMEM; a record the format cannot express is skipped and counted.
 */
int h5s_marc_export_file(const char *h5path, FILE *fp, const h5s_marc_export_options *opts,
                         h5s_marc_export_stats *out);

/*
 * As h5s_marc_export_file for several files (shards of one run, docs/shards.md) written
 * as one output, in the order given: ISO 2709 is their records back to back, MARCXML one
 * collection, MARC-in-JSON one array. Each record keeps its bytes; the ordinals in the
 * files' indexes are not part of any output, so nothing needs rebasing. Stops at the
 * first file that fails (the output is then incomplete). Errors: as h5s_marc_export_file,
 * H5S_EINVAL for no file.
 */
int h5s_marc_export_files(const char *const *h5paths, size_t n, FILE *fp,
                          const h5s_marc_export_options *opts, h5s_marc_export_stats *out);

#ifdef __cplusplus
}
#endif
#endif
