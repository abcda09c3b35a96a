/*
 * h5s_marc_layout.h - the marc model's on-disk layout, in C: dataset names, row structs,
 * index flags, HDF5 compound types and the control-number hash. Shared by the writer
 * (h5stream/h5s_marc_writer.c) and the reader (readers/h5s_marc_reader.c), which must not
 * depend on each other, so everything here is header-only. docs/marc-model.md is the
 * prose version; keep them in step.
 *
 * Layout (all under /marc; "G" is /marc for accepted records, /marc/rejected for the rest):
 *   G/records   uint8 [bytes]     the records' ISO 2709 bytes back to back
 *   G/offsets   uint64 [N + 1]    offsets[0] = 0, record i = records[offsets[i]:offsets[i+1]]
 *   G/index     compound [N]      h5s_marc_index_row per record: the group's commit marker
 *   /marc/rejected/errors  compound [N_rejected]  h5s_marc_error_row, one per rejected record
 *   /marc/repairs          compound  h5s_marc_repair_row per record stored altered
 *   /marc/originals        uint8     input bytes of the records stored altered
 *   /marc/sources          fixed string [nsources]  source file names (index.source)
 *   /marc/control_index    compound  h5s_marc_control_row, sorted, written at close
 */
#ifndef H5S_MARC_LAYOUT_H
#define H5S_MARC_LAYOUT_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#define H5S_MARC_LAYOUT_VERSION 1

#define H5S_MARC_ROOT "/marc"
#define H5S_MARC_REJECTED "/marc/rejected"
/* Names inside a record group (/marc or /marc/rejected). */
#define H5S_MARC_RECORDS "records"
#define H5S_MARC_OFFSETS "offsets"
#define H5S_MARC_INDEX "index"
/* Datasets of /marc only. */
#define H5S_MARC_ERRORS_PATH "/marc/rejected/errors"
#define H5S_MARC_REPAIRS_PATH "/marc/repairs"
#define H5S_MARC_ORIGINALS_PATH "/marc/originals"
#define H5S_MARC_SOURCES_PATH "/marc/sources"
#define H5S_MARC_CONTROL_INDEX_PATH "/marc/control_index"

/* Attributes of /marc (written before SWMR starts). */
#define H5S_MARC_ATTR_LAYOUT "h5stream_marc_layout" /* int32 H5S_MARC_LAYOUT_VERSION */
#define H5S_MARC_ATTR_MODE "mode"                   /* "strict" | "lenient" | "permissive" */
#define H5S_MARC_ATTR_CONTROL_HASH "control_hash"   /* "fnv1a64" */

#define H5S_MARC_LEADER_BYTES 24
#define H5S_MARC_CONTROL_BYTES 48 /* 001 stored in at most 48 bytes, NUL-padded */
#define H5S_MARC_MESSAGE_BYTES 256
#define H5S_MARC_SOURCE_BYTES 1024
#define H5S_MARC_REPAIRS_MAX 16 /* = H5S_MARC_MAX_ERRORS of formats/h5s_marc.h */

/* h5s_marc_index_row.flags */
#define H5S_MARC_IX_REPAIRED 0x1u      /* lenient repairs: stored bytes differ from the input */
#define H5S_MARC_IX_CONVERTED 0x2u     /* --to-utf8: stored bytes are MARC-8 converted */
#define H5S_MARC_IX_MARC8 0x4u         /* input leader/09 = ' ' */
#define H5S_MARC_IX_UTF8 0x8u          /* input leader/09 = 'a' */
#define H5S_MARC_IX_UTF8_INVALID 0x10u /* leader/09 'a' but bytes not valid UTF-8 */
#define H5S_MARC_IX_DEFECTS 0x20u      /* the input record has defects (error, n_errors) */
#define H5S_MARC_IX_NO_CONTROL 0x40u   /* no 001: control is "" */
#define H5S_MARC_IX_CONTROL_CUT 0x80u  /* 001 longer than 48 bytes: control is cut */
#define H5S_MARC_IX_RESYNC 0x100u      /* leader length lied: cut at the next 0x1D */
#define H5S_MARC_IX_TRUNCATED 0x200u   /* input ended inside the record */
#define H5S_MARC_IX_NO_RT 0x400u       /* length held but the record lacks its 0x1D */

/*
 * One row of G/index, per record, in input order (the commit marker). Strings are fixed
 * length, NUL-padded (h5py: bytes). ordinal counts every record read in the run, accepted
 * or rejected, across all sources, from 0; so accepted ordinals may have gaps.
 */
typedef struct h5s_marc_index_row {
    uint64_t ordinal;                     /* position in the run's input, 0-based */
    uint64_t source_offset;               /* byte offset of the record in its source */
    uint32_t length;                      /* bytes stored in G/records */
    uint32_t source;                      /* row of /marc/sources */
    uint32_t flags;                       /* H5S_MARC_IX_* */
    uint16_t error;                       /* first defect of the input (h5s_marc_code), 0 */
    uint16_t n_errors;                    /* defects found (capped at 65535) */
    char leader[H5S_MARC_LEADER_BYTES];   /* the stored record's leader */
    char control[H5S_MARC_CONTROL_BYTES]; /* 001, trimmed, NUL-padded */
} h5s_marc_index_row;

/* One row of /marc/rejected/errors per rejected record (same row as its index). */
typedef struct h5s_marc_error_row {
    uint64_t ordinal;
    uint64_t source_offset; /* byte offset in the source of the first defect */
    uint32_t source;
    uint16_t code;     /* first defect (h5s_marc_code) */
    uint16_t n_errors; /* defects found */
    char message[H5S_MARC_MESSAGE_BYTES];
} h5s_marc_error_row;

/* h5s_marc_repair_row.kind */
#define H5S_MARC_ALTER_REPAIRED 0x1u
#define H5S_MARC_ALTER_CONVERTED 0x2u

/* One row of /marc/repairs per accepted record stored with other bytes than read. */
typedef struct h5s_marc_repair_row {
    uint64_t row; /* row of /marc/index */
    uint64_t ordinal;
    uint64_t original_offset; /* the input bytes: /marc/originals[original_offset : +len] */
    uint32_t original_length;
    uint16_t n_repairs;                  /* repairs listed (lenient), up to H5S_MARC_REPAIRS_MAX */
    uint16_t kind;                       /* H5S_MARC_ALTER_* */
    uint16_t code[H5S_MARC_REPAIRS_MAX]; /* h5s_marc_code of each repair */
    uint32_t at[H5S_MARC_REPAIRS_MAX];   /* byte offset of each repair within the input */
} h5s_marc_repair_row;

/*
 * /marc/control_index: every accepted record with a 001, sorted by (hash, row), then one
 * sentinel row {UINT64_MAX, N} where N is the number of /marc/index rows it covers.
 * Written once, after the last record; a reader trusts it only when the sentinel's N
 * equals the committed index rows of a closed file.
 */
typedef struct h5s_marc_control_row {
    uint64_t hash; /* h5s_marc_control_hash of the control string */
    uint64_t row;  /* row of /marc/index */
} h5s_marc_control_row;

#define H5S_MARC_CONTROL_SENTINEL UINT64_MAX

/* FNV-1a, 64 bit, of the control number's bytes (as stored: trimmed, cut to 48 bytes). */
static inline uint64_t h5s_marc_control_hash(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    /* The sentinel value is reserved. */
    return h == H5S_MARC_CONTROL_SENTINEL ? h - 1 : h;
}

/* Length of a fixed string field (up to the first NUL or cap). */
static inline size_t h5s_marc_fixed_len(const char *s, size_t cap)
{
    size_t n = 0;
    while (n < cap && s[n])
        n++;
    return n;
}

static inline hid_t h5s_marc_string_type(size_t n)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, n);
    H5Tset_strpad(t, H5T_STR_NULLPAD);
    return t;
}

/* Compound type of h5s_marc_index_row (file and memory layout). Caller closes it. */
static inline hid_t h5s_marc_index_type(void)
{
    hid_t t = H5Tcreate(H5T_COMPOUND, sizeof(h5s_marc_index_row));
    hid_t leader = h5s_marc_string_type(H5S_MARC_LEADER_BYTES);
    hid_t control = h5s_marc_string_type(H5S_MARC_CONTROL_BYTES);
    H5Tinsert(t, "ordinal", offsetof(h5s_marc_index_row, ordinal), H5T_STD_U64LE);
    H5Tinsert(t, "source_offset", offsetof(h5s_marc_index_row, source_offset), H5T_STD_U64LE);
    H5Tinsert(t, "length", offsetof(h5s_marc_index_row, length), H5T_STD_U32LE);
    H5Tinsert(t, "source", offsetof(h5s_marc_index_row, source), H5T_STD_U32LE);
    H5Tinsert(t, "flags", offsetof(h5s_marc_index_row, flags), H5T_STD_U32LE);
    H5Tinsert(t, "error", offsetof(h5s_marc_index_row, error), H5T_STD_U16LE);
    H5Tinsert(t, "n_errors", offsetof(h5s_marc_index_row, n_errors), H5T_STD_U16LE);
    H5Tinsert(t, "leader", offsetof(h5s_marc_index_row, leader), leader);
    H5Tinsert(t, "control", offsetof(h5s_marc_index_row, control), control);
    H5Tclose(leader);
    H5Tclose(control);
    return t;
}

/* Compound type of h5s_marc_error_row. Caller closes it. */
static inline hid_t h5s_marc_error_type(void)
{
    hid_t t = H5Tcreate(H5T_COMPOUND, sizeof(h5s_marc_error_row));
    hid_t msg = h5s_marc_string_type(H5S_MARC_MESSAGE_BYTES);
    H5Tinsert(t, "ordinal", offsetof(h5s_marc_error_row, ordinal), H5T_STD_U64LE);
    H5Tinsert(t, "source_offset", offsetof(h5s_marc_error_row, source_offset), H5T_STD_U64LE);
    H5Tinsert(t, "source", offsetof(h5s_marc_error_row, source), H5T_STD_U32LE);
    H5Tinsert(t, "code", offsetof(h5s_marc_error_row, code), H5T_STD_U16LE);
    H5Tinsert(t, "n_errors", offsetof(h5s_marc_error_row, n_errors), H5T_STD_U16LE);
    H5Tinsert(t, "message", offsetof(h5s_marc_error_row, message), msg);
    H5Tclose(msg);
    return t;
}

/* Compound type of h5s_marc_repair_row. Caller closes it. */
static inline hid_t h5s_marc_repair_type(void)
{
    hsize_t n = H5S_MARC_REPAIRS_MAX;
    hid_t codes = H5Tarray_create2(H5T_STD_U16LE, 1, &n);
    hid_t at = H5Tarray_create2(H5T_STD_U32LE, 1, &n);
    hid_t t = H5Tcreate(H5T_COMPOUND, sizeof(h5s_marc_repair_row));
    H5Tinsert(t, "row", offsetof(h5s_marc_repair_row, row), H5T_STD_U64LE);
    H5Tinsert(t, "ordinal", offsetof(h5s_marc_repair_row, ordinal), H5T_STD_U64LE);
    H5Tinsert(t, "original_offset", offsetof(h5s_marc_repair_row, original_offset), H5T_STD_U64LE);
    H5Tinsert(t, "original_length", offsetof(h5s_marc_repair_row, original_length), H5T_STD_U32LE);
    H5Tinsert(t, "n_repairs", offsetof(h5s_marc_repair_row, n_repairs), H5T_STD_U16LE);
    H5Tinsert(t, "kind", offsetof(h5s_marc_repair_row, kind), H5T_STD_U16LE);
    H5Tinsert(t, "code", offsetof(h5s_marc_repair_row, code), codes);
    H5Tinsert(t, "at", offsetof(h5s_marc_repair_row, at), at);
    H5Tclose(codes);
    H5Tclose(at);
    return t;
}

/* Compound type of h5s_marc_control_row. Caller closes it. */
static inline hid_t h5s_marc_control_type(void)
{
    hid_t t = H5Tcreate(H5T_COMPOUND, sizeof(h5s_marc_control_row));
    H5Tinsert(t, "hash", offsetof(h5s_marc_control_row, hash), H5T_STD_U64LE);
    H5Tinsert(t, "row", offsetof(h5s_marc_control_row, row), H5T_STD_U64LE);
    return t;
}

#endif
