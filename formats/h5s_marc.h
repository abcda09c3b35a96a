/*
 * h5s_marc.h - MARC 21 bibliographic records in ISO 2709 framing, without HDF5.
 *
 * Four layers, each usable alone:
 *   1. scanner: cuts a byte stream of unknown length (fed in blocks) into records, each
 *      with its source byte offset and ordinal; resynchronises on the 0x1D record
 *      terminator when the leader's length lies; keeps truncated tails and junk as records
 *      flagged so (nothing read is dropped). Memory: the largest record plus one block.
 *      The cursor makes the same cuts without copying, over windows the caller holds.
 *   2. validation: one pure single pass over a record's bytes giving typed errors (code,
 *      byte offset within the record) with no allocation; the three modes (strict,
 *      lenient with repairs, permissive) decide acceptance from it.
 *   3. accessors: leader, control number (001), title (245 $a), field and subfield
 *      iteration.
 *   4. writers: ISO 2709 (bytes as stored), MARCXML, MARC-in-JSON and yaz-marcdump's line
 *      format, to a FILE* or a growable buffer, with optional MARC-8 -> UTF-8 conversion
 *      through libyaz's yaz_iconv.
 *
 * Specs: MARC 21 Specifications for Record Structure (leader, directory, fields);
 * ISO 2709:2008; MARCXML schema (http://www.loc.gov/MARC21/slim); MARC-in-JSON
 * (Ross Singer, 2010). docs/marc.md describes the checks, modes and error codes.
 *
 * Thread safety: every function is reentrant; scanner, writer and converter objects must
 * not be shared between threads without locking.
 */
#ifndef H5S_MARC_H
#define H5S_MARC_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define H5S_MARC_RT 0x1D /* record terminator */
#define H5S_MARC_FT 0x1E /* field terminator */
#define H5S_MARC_SF 0x1F /* subfield delimiter */
#define H5S_MARC_LEADER_LEN 24
#define H5S_MARC_MAX_ERRORS 16 /* errors and repairs stored per record (more are counted) */

/* --------------------------------------------------------------------- error codes */

/*
 * Record defects. Values are stable (stored in /marc/rejected's error table); a name and
 * a sentence for each come from h5s_marc_error_name() and h5s_marc_error_text().
 * The offset of each error is a byte offset within the record (0 = first leader byte).
 */
#define H5S_MARC_ERROR_TABLE(X)                                                                    \
    X(H5S_MARC_OK, 0, "no error")                                                                  \
    X(H5S_MARC_E_SHORT, 1, "record shorter than a 24-byte leader and a terminator")                \
    X(H5S_MARC_E_TRUNCATED, 2, "input ended inside the record")                                    \
    X(H5S_MARC_E_RESYNC, 3, "leader length wrong; record cut at the next 0x1D terminator")         \
    X(H5S_MARC_E_RECORD_TERMINATOR, 4, "record does not end with 0x1D")                            \
    X(H5S_MARC_E_LENGTH_DIGITS, 5, "leader/00-04 record length is not 5 digits")                   \
    X(H5S_MARC_E_LENGTH, 6, "leader/00-04 record length disagrees with the record's size")         \
    X(H5S_MARC_E_INDICATOR_COUNT, 7, "leader/10 indicator count is not '2'")                       \
    X(H5S_MARC_E_SUBFIELD_CODE_COUNT, 8, "leader/11 subfield code count is not '2'")               \
    X(H5S_MARC_E_BASE_DIGITS, 9, "leader/12-16 base address of data is not 5 digits")              \
    X(H5S_MARC_E_BASE_BOUNDS, 10, "base address of data outside the record")                       \
    X(H5S_MARC_E_ENTRY_MAP, 11, "leader/20-23 entry map is not \"4500\"")                          \
    X(H5S_MARC_E_CHARSET, 12, "leader/09 character coding is neither ' ' nor 'a'")                 \
    X(H5S_MARC_E_DIR_TERMINATOR, 13, "directory does not end with 0x1E just before the base")      \
    X(H5S_MARC_E_DIR_LENGTH, 14, "directory length is not a multiple of 12")                       \
    X(H5S_MARC_E_DIR_TAG, 15, "directory tag is not 3 ASCII letters or digits")                    \
    X(H5S_MARC_E_DIR_DIGITS, 16, "directory field length or start is not digits")                  \
    X(H5S_MARC_E_FIELD_BOUNDS, 17, "field lies outside the data area or has length 0")             \
    X(H5S_MARC_E_FIELD_TERMINATOR, 18, "field does not end with 0x1E")                             \
    X(H5S_MARC_E_EMBEDDED_TERMINATOR, 19, "0x1E or 0x1D inside a field")                           \
    X(H5S_MARC_E_CONTROL_DELIMITER, 20, "subfield delimiter 0x1F inside a control field")          \
    X(H5S_MARC_E_INDICATORS, 21, "data field lacks two indicators")                                \
    X(H5S_MARC_E_SUBFIELD_START, 22, "data field data does not start with 0x1F after indicators")  \
    X(H5S_MARC_E_UTF8, 23, "leader/09 says UTF-8 but the bytes are not valid UTF-8")               \
    X(H5S_MARC_E_NO_FIELDS, 24, "record has no fields")                                            \
    X(H5S_MARC_E_NO_DIRECTORY, 25, "no directory terminator found")

#define H5S_MARC_X_ENUM(name, value, text) name = value,
typedef enum h5s_marc_code {
    H5S_MARC_ERROR_TABLE(H5S_MARC_X_ENUM) H5S_MARC_CODE_COUNT
} h5s_marc_code;
#undef H5S_MARC_X_ENUM

/* One defect (or one repair): code and byte offset within the record. */
typedef struct h5s_marc_error {
    uint16_t code;   /* h5s_marc_code */
    uint32_t offset; /* byte offset within the record */
} h5s_marc_error;

/* Short symbolic name of code ("E_LENGTH"), "?" when unknown. Static storage; thread-safe. */
const char *h5s_marc_error_name(int code);

/* One-sentence description of code (table above), "unknown" when unknown. Thread-safe. */
const char *h5s_marc_error_text(int code);

/* ------------------------------------------------------------------------ scanner */

/* Flags of a scanned record (h5s_marc_span.flags). */
#define H5S_MARC_SPAN_RESYNC 0x1u    /* leader length wrong or not digits; cut at 0x1D */
#define H5S_MARC_SPAN_TRUNCATED 0x2u /* input ended before a 0x1D terminator */
#define H5S_MARC_SPAN_NO_RT 0x4u     /* leader length held, but the last byte is not 0x1D */

/* One record cut from the stream. data is borrowed from the scanner. */
typedef struct h5s_marc_span {
    const unsigned char *data; /* the record's bytes, exactly as read */
    size_t len;                /* bytes */
    uint64_t offset;           /* byte offset of data[0] in the stream */
    uint64_t ordinal;          /* 0-based index of the record in the stream */
    uint64_t skipped;          /* separator bytes (\r, \n) skipped just before it */
    uint32_t flags;            /* H5S_MARC_SPAN_* */
} h5s_marc_span;

typedef struct h5s_marc_scanner h5s_marc_scanner;

/*
 * Creates a scanner. max_record bounds the bytes held for one record (0 = 16 MiB); a
 * record larger than that is returned cut, flagged TRUNCATED, and scanning continues.
 * *out is the caller's to free with h5s_marc_scanner_free. Errors: H5S_EINVAL (out NULL),
 * H5S_ENOMEM.
 */
int h5s_marc_scanner_create(h5s_marc_scanner **out, size_t max_record);

/* Frees s and its buffer; NULL is a no-op. */
void h5s_marc_scanner_free(h5s_marc_scanner *s);

/*
 * Appends n bytes of the stream to s (copied). Invalidates spans returned before.
 * Call h5s_marc_scanner_next until it returns H5S_EAGAIN before feeding more, so memory
 * stays bounded by the largest record. Errors: H5S_EINVAL, H5S_ESTATE (after finish),
 * H5S_ENOMEM.
 */
int h5s_marc_scanner_feed(h5s_marc_scanner *s, const void *data, size_t n);

/* Marks the end of the stream: next() then returns the last bytes as a record. */
void h5s_marc_scanner_finish(h5s_marc_scanner *s);

/*
 * Reads one block (64 KiB) from fp and feeds it; at end of file calls finish.
 * Returns the bytes read (0 at end of file), or H5S_EIO / H5S_ENOMEM (negative).
 */
long h5s_marc_scanner_fill(h5s_marc_scanner *s, FILE *fp);

/*
 * Cuts the next record. Returns 1 with *out set (out->data valid until the next feed,
 * fill or free), H5S_EAGAIN when more input is needed, 0 when the stream is finished and
 * empty. Never fails on bad data: lying lengths, junk and truncation are flagged in
 * out->flags (see ISO 2709 4.2 for the leader length, 0x1D for the terminator).
 */
int h5s_marc_scanner_next(h5s_marc_scanner *s, h5s_marc_span *out);

/* Bytes of the stream consumed so far (records and separators). */
uint64_t h5s_marc_scanner_offset(const h5s_marc_scanner *s);

/*
 * Zero-copy scanning: the scanner's cuts (same rules, same records, flags and ordinals)
 * over bytes the caller holds, such as an mmap window or a read buffer; spans point into
 * them. The caller hands windows of the stream, each holding the stream from the next
 * uncut byte on (h5s_marc_cursor.offset); a record that runs past a window's end asks for
 * the next window (H5S_EAGAIN). Plain data: put it on the stack, nothing to free.
 */
typedef struct h5s_marc_cursor {
    const unsigned char *data; /* the window: stream bytes [window offset, + len) */
    size_t len;
    size_t pos;        /* next uncut byte, in data */
    uint64_t offset;   /* stream offset of the next uncut byte */
    uint64_t ordinal;  /* ordinal of the next record (may be set to continue a count) */
    uint64_t skipped;  /* separators skipped since the last record */
    size_t max_record; /* as for h5s_marc_scanner_create */
    size_t searched;   /* internal: bytes after pos already searched for 0x1D */
    size_t fetched;    /* internal: prefetched up to here in data */
    int eof;           /* the window ends the stream */
} h5s_marc_cursor;

/* Initialises *c at stream offset 0, ordinal 0, no window yet. H5S_EINVAL when c is NULL. */
int h5s_marc_cursor_init(h5s_marc_cursor *c, size_t max_record);

/*
 * Gives c the window data (len bytes, borrowed until the next window) holding the stream
 * from offset; it must hold c->offset (offset <= c->offset <= offset + len). eof nonzero:
 * the stream ends with it. H5S_EINVAL otherwise.
 */
int h5s_marc_cursor_window(h5s_marc_cursor *c, const void *data, size_t len, uint64_t offset,
                           int eof);

/*
 * Cuts the next record of the window: 1 with *out set (out->data points into the window),
 * H5S_EAGAIN when the record needs bytes past the window (hand a window from c->offset
 * that reaches further, or one with eof), 0 when the stream is finished and empty.
 * Never fails on bad data (see h5s_marc_scanner_next). Reentrant; c is not shared.
 */
int h5s_marc_cursor_next(h5s_marc_cursor *c, h5s_marc_span *out);

/* --------------------------------------------------------------------- validation */

typedef enum h5s_marc_mode {
    H5S_MARC_STRICT = 0,    /* accept only records with no error at all; stop at the first */
    H5S_MARC_LENIENT = 1,   /* repair structure (lengths, base, directory); then strict */
    H5S_MARC_PERMISSIVE = 2 /* accept whatever has a readable directory of in-bounds fields */
} h5s_marc_mode;

/* Parses "strict", "lenient" or "permissive" into *out; H5S_EINVAL otherwise. */
int h5s_marc_mode_parse(h5s_marc_mode *out, const char *name);

/* Flags of a checked record (h5s_marc_report.flags). */
#define H5S_MARC_F_UTF8 0x1u      /* leader/09 = 'a' */
#define H5S_MARC_F_MARC8 0x2u     /* leader/09 = ' ' */
#define H5S_MARC_F_ACCEPTED 0x4u  /* the mode accepts the record */
#define H5S_MARC_F_REPAIRED 0x8u  /* lenient mode changed bytes (see repairs) */
#define H5S_MARC_F_READABLE 0x10u /* fields can be read (permissive's criterion) */

/* Outcome of checking one record. Plain data, no allocation: put it on the stack. */
typedef struct h5s_marc_report {
    uint32_t flags;                             /* H5S_MARC_F_* */
    uint32_t n_errors;                          /* defects found (may exceed stored) */
    uint32_t n_repairs;                         /* repairs made (lenient) */
    uint32_t n_fields;                          /* directory entries */
    h5s_marc_error errors[H5S_MARC_MAX_ERRORS]; /* first defects, in the order found */
    h5s_marc_error repairs[H5S_MARC_MAX_ERRORS];
} h5s_marc_report;

/*
 * Validates one record (rec: len bytes, a whole record with its 0x1D) against MARC 21's
 * record structure: leader (length, indicator and subfield code counts, base address,
 * entry map, leader/09), directory (12-byte entries, tags, digits, bounds, 0x1E at
 * base-1), fields (0x1E terminators, indicators and 0x1F subfields, control fields 00X
 * free of delimiters) and, when leader/09 = 'a', UTF-8 validity. With stop_first nonzero
 * it returns at the first defect (the strict fast path). Fills *out; returns the number
 * of defects (0 = clean). Pure: no allocation, no global state, thread-safe.
 */
uint32_t h5s_marc_validate(h5s_marc_report *out, const unsigned char *rec, size_t len,
                           int stop_first);

/*
 * Length (1-4) of the valid UTF-8 sequence at p, n bytes available (n >= 1), or 0 when
 * the bytes there are not valid UTF-8 (RFC 3629: no overlongs, surrogates or > U+10FFFF).
 */
size_t h5s_marc_utf8_seq(const unsigned char *p, size_t n);

/* Growable byte buffer owned by its user; release with h5s_marc_buf_free. */
typedef struct h5s_marc_buf {
    unsigned char *data;
    size_t len;
    size_t cap;
} h5s_marc_buf;

/* Frees b->data and zeroes *b; NULL is a no-op. */
void h5s_marc_buf_free(h5s_marc_buf *b);

/* Makes room for n more bytes. H5S_ENOMEM on failure (b unchanged). */
int h5s_marc_buf_reserve(h5s_marc_buf *b, size_t n);

/* Appends n bytes. H5S_ENOMEM on failure. */
int h5s_marc_buf_append(h5s_marc_buf *b, const void *data, size_t n);

/*
 * Checks rec (len bytes) in mode and says whether it is accepted (1) or rejected (0).
 * *report gets the defects of the original bytes (and, in lenient mode, the repairs).
 * In lenient mode, when repairs were made, the repaired record replaces repaired->data
 * (repaired->len set; the buffer is reused between calls, so ingest does no per-record
 * malloc once it is large enough); repaired may be NULL in the other modes, and its
 * len is 0 when no repair was needed. A rejected record's reason is report->errors[0].
 * Returns 1 accepted, 0 rejected, H5S_ENOMEM (negative) if the buffer cannot grow.
 * Definitions of what each mode accepts: docs/marc.md.
 */
int h5s_marc_check(h5s_marc_report *report, h5s_marc_buf *repaired, const unsigned char *rec,
                   size_t len, h5s_marc_mode mode);

/*
 * Formats the defects of report for a human: "<path>: record <ordinal> (001 <id>) at byte
 * <source_offset + error offset>: <text> [E_NAME]" for the first defect, then "; +N more".
 * Writes at most cap bytes with a NUL; returns the length it wanted (as snprintf).
 */
size_t h5s_marc_report_format(char *buf, size_t cap, const h5s_marc_report *report,
                              const char *path, uint64_t ordinal, uint64_t source_offset,
                              const unsigned char *rec, size_t len);

/* ---------------------------------------------------------------------- accessors */

/* One field of a record, borrowed from the record's bytes. */
typedef struct h5s_marc_field {
    char tag[4];                    /* NUL-terminated 3-character tag */
    const unsigned char *data;      /* content without the 0x1E terminator */
    size_t len;                     /* bytes of content */
    int control;                    /* 1 for control fields (tag 00X) */
    unsigned char ind1, ind2;       /* data fields: indicators (' ' when missing) */
    const unsigned char *subfields; /* data fields: bytes after the indicators */
    size_t subfields_len;
} h5s_marc_field;

/* Iterator over the fields of a record in directory order. */
typedef struct h5s_marc_iter {
    const unsigned char *rec;
    size_t len;
    size_t base;      /* base address of data in use */
    size_t pos;       /* next directory entry */
    size_t dirend;    /* offset of the directory's 0x1E */
    uint32_t skipped; /* entries skipped as unreadable */
} h5s_marc_iter;

/*
 * Starts iterating rec (len bytes). The base address is the leader's when it points just
 * past a 0x1E ending a 12-byte-entry directory, else the first such 0x1E found.
 * Returns 0, or H5S_EFORMAT when no directory can be located (shorter than a leader,
 * no 0x1E). Thread-safe; borrows rec.
 */
int h5s_marc_iter_init(h5s_marc_iter *it, const unsigned char *rec, size_t len);

/*
 * Next readable field into *out (entries with non-digit or out-of-bounds positions are
 * skipped and counted in it->skipped). Returns 1, or 0 at the end.
 */
int h5s_marc_iter_next(h5s_marc_iter *it, h5s_marc_field *out);

/* Iterator over a data field's subfields: 0x1F code value... */
typedef struct h5s_marc_subfield {
    unsigned char code;
    const unsigned char *data; /* value, borrowed */
    size_t len;
} h5s_marc_subfield;

/* Next subfield after *pos (start with *pos = 0) of field. Returns 1, or 0 at the end. */
int h5s_marc_subfield_next(const h5s_marc_field *field, size_t *pos, h5s_marc_subfield *out);

/* First field with tag (3 characters) into *out; 1 found, 0 not found. */
int h5s_marc_find(const unsigned char *rec, size_t len, const char *tag, h5s_marc_field *out);

/*
 * Copies the 24-byte leader into out (25 bytes, NUL-terminated; shorter records are
 * padded with spaces). Returns the leader bytes present (0..24).
 */
size_t h5s_marc_leader(char out[25], const unsigned char *rec, size_t len);

/*
 * Copies the control number (001 content, surrounding spaces trimmed) into out (cap
 * bytes, NUL-terminated, cut to fit). Returns its length, 0 when there is no 001.
 */
size_t h5s_marc_control_number(char *out, size_t cap, const unsigned char *rec, size_t len);

/* As h5s_marc_control_number for the first 245 $a (the title) of the record. */
size_t h5s_marc_title(char *out, size_t cap, const unsigned char *rec, size_t len);

/* -------------------------------------------------------------------------- export */

typedef enum h5s_marc_format {
    H5S_MARC_ISO2709 = 0, /* the record's bytes as given */
    H5S_MARC_MARCXML = 1, /* MARCXML slim, <collection> wrapper, as yaz-marcdump -o marcxml */
    H5S_MARC_JSON = 2,    /* MARC-in-JSON, one JSON array of records */
    H5S_MARC_LINE = 3     /* yaz-marcdump's line format, blank line between records */
} h5s_marc_format;

/* Parses "iso2709", "marcxml", "marc-json" (or "json") and "line"; H5S_EINVAL otherwise. */
int h5s_marc_format_parse(h5s_marc_format *out, const char *name);

/* MARC-8 -> UTF-8 converter (wraps a yaz_iconv_t "utf-8" from "marc8"). */
typedef struct h5s_marc_charconv h5s_marc_charconv;

/* Opens a converter; *out freed with h5s_marc_charconv_free. H5S_ENOMEM, H5S_EINVAL. */
int h5s_marc_charconv_open(h5s_marc_charconv **out);

/* Frees cv; NULL is a no-op. */
void h5s_marc_charconv_free(h5s_marc_charconv *cv);

/*
 * Rebuilds rec (len bytes, any leader/09) with every control field and subfield value
 * converted from MARC-8 to UTF-8 by yaz_iconv, a new directory and leader (length, base,
 * leader/09 = 'a'), into out (replacing its content). Bytes yaz_iconv cannot decode
 * become U+FFFD, counted in *n_bad when n_bad is not NULL. Errors: H5S_EFORMAT (no
 * readable directory, or a converted field longer than 9999 bytes), H5S_ENOMEM.
 */
int h5s_marc_charconv_record(h5s_marc_charconv *cv, h5s_marc_buf *out, const unsigned char *rec,
                             size_t len, size_t *n_bad);

#define H5S_MARC_WRITE_MARC8_TO_UTF8 0x1u /* convert records whose leader/09 is ' ' */

/* Streams records in one format to a FILE* or (fp NULL) into w->out. */
typedef struct h5s_marc_writer {
    h5s_marc_format format;
    unsigned flags;        /* H5S_MARC_WRITE_* */
    FILE *fp;              /* destination, or NULL to keep everything in out */
    h5s_marc_buf out;      /* pending output (all of it when fp is NULL) */
    h5s_marc_buf scratch;  /* converted record */
    h5s_marc_charconv *cv; /* opened on first need */
    uint64_t n_records;
} h5s_marc_writer;

/*
 * Initialises *w and writes the collection header (MARCXML: <collection xmlns=...>;
 * JSON: '['). fp is borrowed (not closed). Errors: H5S_EINVAL, H5S_ENOMEM, H5S_EIO.
 */
int h5s_marc_writer_begin(h5s_marc_writer *w, h5s_marc_format format, unsigned flags, FILE *fp);

/*
 * Writes one record (rec: len bytes of ISO 2709). Fields are read as h5s_marc_iter does,
 * so damaged records export what can be read. XML and JSON text is always valid UTF-8:
 * invalid bytes become U+FFFD; MARCXML drops C0 control bytes and sets leader/09 'a' as
 * yaz-marcdump does. Errors: H5S_EFORMAT (no readable directory; nothing written for
 * that record except in ISO 2709), H5S_ENOMEM, H5S_EIO.
 */
int h5s_marc_writer_record(h5s_marc_writer *w, const unsigned char *rec, size_t len);

/* Writes the collection trailer and flushes to fp. Errors: H5S_ENOMEM, H5S_EIO. */
int h5s_marc_writer_end(h5s_marc_writer *w);

/* Frees the writer's buffers and converter (not fp). NULL is a no-op. */
void h5s_marc_writer_release(h5s_marc_writer *w);

#ifdef __cplusplus
}
#endif

#endif
