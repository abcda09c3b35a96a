/*
 * h5s_tsv.h - private to h5stream (formats/): BIDS tab-separated tables (participants.tsv
 * and the like) and subject ids from file names, for the volumes model's /obs_meta and
 * obs_subject_id (DESIGN.md section 4). docs/nifti.md, "Tables and subject ids".
 *
 * Spec: BIDS 1.x "Tabular files": UTF-8, a header row of column names, fields separated
 * by one tab, rows by "\n" (a "\r\n" is accepted on read), "n/a" for a missing value.
 * An empty field is read as missing too. Written tables use "\n" and "n/a".
 *
 * Thread safety: a table or matcher is not shared between threads while one of them
 * modifies it; the functions keep no global state.
 */
#ifndef H5S_TSV_H
#define H5S_TSV_H

#include <stddef.h>
#include <stdint.h>

#include "h5s_types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    H5S_TSV_INFER = 0, /* read: int if every present value is an integer, else float if
                          every one is a number, else string (all missing: string) */
    H5S_TSV_STRING,
    H5S_TSV_INT,  /* int64, decimal */
    H5S_TSV_FLOAT /* double; "nan", "inf" accepted */
} h5s_tsv_type;

/* One column: nrows values in the array of its type; missing[r] = 1 where "n/a". */
typedef struct {
    char *name;
    h5s_tsv_type type;      /* never H5S_TSV_INFER once read or set */
    char **strings;         /* STRING: owned, NUL-terminated; NULL where missing */
    int64_t *ints;          /* INT: 0 where missing */
    double *floats;         /* FLOAT: NaN where missing */
    unsigned char *missing; /* nrows flags */
} h5s_tsv_column;

/* A table: ncols columns of nrows rows each. Owned by whoever got it; h5s_tsv_free. */
typedef struct {
    size_t ncols;
    size_t nrows;
    h5s_tsv_column *cols;
} h5s_tsv_table;

/* A column type declared for h5s_tsv_read (columns not listed are inferred). */
typedef struct {
    const char *name;
    h5s_tsv_type type;
} h5s_tsv_decl;

/*
 * Reads a TSV file into a new table (*out, free with h5s_tsv_free). decls: ndecls
 * declared column types (may be NULL/0). A leading UTF-8 byte-order mark is skipped;
 * blank lines at the end are ignored.
 * Errors (messages name the path, line, byte offset and column):
 *   H5S_EINVAL    NULL arguments; a declared column that the header lacks
 *   H5S_ENOTFOUND the file does not exist;  H5S_EIO  it cannot be read
 *   H5S_EFORMAT   empty file, empty or duplicate column name, a row with a different
 *                 number of fields than the header, a NUL byte, a value that is not
 *                 of its declared type (int: decimal int64; float: a C number)
 *   H5S_ENOMEM
 */
int h5s_tsv_read(h5s_tsv_table **out, const char *path, const h5s_tsv_decl *decls, size_t ndecls);

/*
 * Writes table to path as TSV: the header row, then each row; missing values as "n/a",
 * integers in decimal, floats in the shortest form that reads back to the same double
 * ("%.15g" or "%.17g"; "nan", "inf", "-inf"). Errors: H5S_EINVAL (NULL, a column of type
 * INFER, a name or string holding a tab, newline or carriage return, or equal to "n/a"
 * for strings), H5S_EIO (cannot create or write), the file is then removed.
 */
int h5s_tsv_write(const char *path, const h5s_tsv_table *table);

/*
 * New table of ncols columns and nrows rows; every column is unnamed, of type STRING
 * and missing in every row until h5s_tsv_set_column names and types it.
 * Errors: H5S_ENOMEM.
 */
int h5s_tsv_table_new(h5s_tsv_table **out, size_t ncols, size_t nrows);

/*
 * Names column col (name copied) and gives it a type (not INFER), every row missing.
 * Errors: H5S_EINVAL (col out of range, NULL name, INFER), H5S_ENOMEM.
 */
int h5s_tsv_set_column(h5s_tsv_table *table, size_t col, const char *name, h5s_tsv_type type);

/* Set one cell (copying a string; NULL string = missing). Errors: H5S_EINVAL (out of
 * range, wrong column type). */
int h5s_tsv_set_string(h5s_tsv_table *table, size_t col, size_t row, const char *value);
int h5s_tsv_set_int(h5s_tsv_table *table, size_t col, size_t row, int64_t value);
int h5s_tsv_set_float(h5s_tsv_table *table, size_t col, size_t row, double value);
int h5s_tsv_set_missing(h5s_tsv_table *table, size_t col, size_t row);

/* Index of the column called name, or -1. */
long h5s_tsv_find(const h5s_tsv_table *table, const char *name);

/* Frees a table and everything in it. NULL is a no-op. */
void h5s_tsv_free(h5s_tsv_table *table);

/* ---- subject ids from file names ---- */

typedef struct h5s_subject_matcher h5s_subject_matcher;

/*
 * Compiles a subject-id rule. pattern NULL: BIDS, "sub-<label>" where label is one or more
 * ASCII letters or digits, starting the file name or following "_" or "/" (so
 * "sub-01_T1w.nii.gz" and "data/sub-01/anat/x.nii" give "01"). Otherwise pattern is a POSIX
 * extended regular expression (regcomp REG_EXTENDED) with exactly one capture group,
 * whose text is the id. *out is the caller's; h5s_subject_matcher_free.
 * Errors: H5S_EINVAL (the regex does not compile: regerror's text; not exactly one
 * group), H5S_ENOMEM.
 */
int h5s_subject_matcher_create(h5s_subject_matcher **out, const char *pattern);

/*
 * The subject id of path into out (NUL-terminated, at most out_size - 1 bytes). The
 * rule is tried on the file name (after the last '/') first, then on the whole path. The
 * BIDS rule takes the last "sub-" in the text (the deepest folder); a user regex takes
 * its leftmost match. Errors: H5S_ENOTFOUND (no match, or an empty group),
 * H5S_ERANGE (the id does not fit out_size), H5S_EINVAL (NULL). Thread-safe for one
 * matcher used by many threads (regexec is).
 */
int h5s_subject_match(const h5s_subject_matcher *matcher, const char *path, char *out,
                      size_t out_size);

/* Frees a matcher. NULL is a no-op. */
void h5s_subject_matcher_free(h5s_subject_matcher *matcher);

#ifdef __cplusplus
}
#endif
#endif /* H5S_TSV_H */
