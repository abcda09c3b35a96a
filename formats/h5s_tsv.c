/*
 * h5s_tsv.c - BIDS tab-separated tables and subject ids from file names (h5s_tsv.h).
 */
#define _POSIX_C_SOURCE 200809L

#include "h5s_tsv.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5s_error.h"

#define TSV_MISSING "n/a"

/* ---- tables ---- */

static void column_clear(h5s_tsv_column *c, size_t nrows)
{
    if (c->strings)
        for (size_t r = 0; r < nrows; r++)
            free(c->strings[r]);
    free(c->strings);
    free(c->ints);
    free(c->floats);
    free(c->missing);
    free(c->name);
    memset(c, 0, sizeof *c);
}

void h5s_tsv_free(h5s_tsv_table *t)
{
    if (!t)
        return;
    for (size_t c = 0; c < t->ncols; c++)
        column_clear(&t->cols[c], t->nrows);
    free(t->cols);
    free(t);
}

/* Allocates the value array of type and an all-missing flag array. */
static int column_alloc(h5s_tsv_column *c, h5s_tsv_type type, size_t nrows)
{
    size_t n = nrows ? nrows : 1;
    c->type = type;
    c->missing = malloc(n);
    if (!c->missing)
        return H5S_ENOMEM;
    memset(c->missing, 1, n);
    if (type == H5S_TSV_STRING)
        c->strings = calloc(n, sizeof *c->strings);
    else if (type == H5S_TSV_INT)
        c->ints = calloc(n, sizeof *c->ints);
    else
        c->floats = malloc(n * sizeof *c->floats);
    if (!c->strings && !c->ints && !c->floats)
        return H5S_ENOMEM;
    if (c->floats)
        for (size_t r = 0; r < n; r++)
            c->floats[r] = NAN;
    return 0;
}

int h5s_tsv_table_new(h5s_tsv_table **out, size_t ncols, size_t nrows)
{
    if (!out)
        return h5s_error_set(H5S_EINVAL, "tsv table: NULL argument");
    *out = NULL;
    h5s_tsv_table *t = calloc(1, sizeof *t);
    if (!t)
        return h5s_error_set(H5S_ENOMEM, "tsv table: out of memory");
    t->cols = calloc(ncols ? ncols : 1, sizeof *t->cols);
    if (!t->cols) {
        free(t);
        return h5s_error_set(H5S_ENOMEM, "tsv table: out of memory");
    }
    t->ncols = ncols;
    t->nrows = nrows;
    for (size_t c = 0; c < ncols; c++) {
        if (column_alloc(&t->cols[c], H5S_TSV_STRING, nrows)) {
            h5s_tsv_free(t);
            return h5s_error_set(H5S_ENOMEM, "tsv table: out of memory");
        }
    }
    *out = t;
    return 0;
}

int h5s_tsv_set_column(h5s_tsv_table *t, size_t col, const char *name, h5s_tsv_type type)
{
    if (!t || !name || col >= t->ncols)
        return h5s_error_set(H5S_EINVAL, "tsv: column %zu: no such column or NULL name", col);
    if (type != H5S_TSV_STRING && type != H5S_TSV_INT && type != H5S_TSV_FLOAT)
        return h5s_error_set(H5S_EINVAL, "tsv: column '%s': type %d is not string, int or float",
                             name, (int)type);
    char *copy = strdup(name);
    if (!copy)
        return h5s_error_set(H5S_ENOMEM, "tsv: out of memory");
    h5s_tsv_column *c = &t->cols[col];
    column_clear(c, t->nrows);
    c->name = copy;
    if (column_alloc(c, type, t->nrows))
        return h5s_error_set(H5S_ENOMEM, "tsv: out of memory");
    return 0;
}

static int cell_check(const h5s_tsv_table *t, size_t col, size_t row, h5s_tsv_type type)
{
    if (!t || col >= t->ncols || row >= t->nrows)
        return h5s_error_set(H5S_EINVAL, "tsv: cell (%zu, %zu) out of range", row, col);
    if (type != H5S_TSV_INFER && t->cols[col].type != type)
        return h5s_error_set(H5S_EINVAL, "tsv: column %zu is not of the type set", col);
    return 0;
}

int h5s_tsv_set_string(h5s_tsv_table *t, size_t col, size_t row, const char *value)
{
    int rc = cell_check(t, col, row, H5S_TSV_STRING);
    if (rc)
        return rc;
    h5s_tsv_column *c = &t->cols[col];
    char *copy = NULL;
    if (value && !(copy = strdup(value)))
        return h5s_error_set(H5S_ENOMEM, "tsv: out of memory");
    free(c->strings[row]);
    c->strings[row] = copy;
    c->missing[row] = copy == NULL;
    return 0;
}

int h5s_tsv_set_int(h5s_tsv_table *t, size_t col, size_t row, int64_t value)
{
    int rc = cell_check(t, col, row, H5S_TSV_INT);
    if (rc)
        return rc;
    t->cols[col].ints[row] = value;
    t->cols[col].missing[row] = 0;
    return 0;
}

int h5s_tsv_set_float(h5s_tsv_table *t, size_t col, size_t row, double value)
{
    int rc = cell_check(t, col, row, H5S_TSV_FLOAT);
    if (rc)
        return rc;
    t->cols[col].floats[row] = value;
    t->cols[col].missing[row] = 0;
    return 0;
}

int h5s_tsv_set_missing(h5s_tsv_table *t, size_t col, size_t row)
{
    int rc = cell_check(t, col, row, H5S_TSV_INFER);
    if (rc)
        return rc;
    h5s_tsv_column *c = &t->cols[col];
    c->missing[row] = 1;
    if (c->strings) {
        free(c->strings[row]);
        c->strings[row] = NULL;
    } else if (c->ints) {
        c->ints[row] = 0;
    } else {
        c->floats[row] = NAN;
    }
    return 0;
}

long h5s_tsv_find(const h5s_tsv_table *t, const char *name)
{
    if (!t || !name)
        return -1;
    for (size_t c = 0; c < t->ncols; c++)
        if (t->cols[c].name && strcmp(t->cols[c].name, name) == 0)
            return (long)c;
    return -1;
}

/* ---- reading ---- */

static int parse_int(int64_t *out, const char *s)
{
    const char *p = s;
    if (*p == '+' || *p == '-')
        p++;
    if (!isdigit((unsigned char)*p))
        return -1;
    for (; *p; p++)
        if (!isdigit((unsigned char)*p))
            return -1;
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    if (errno == ERANGE)
        return -2;
    *out = (int64_t)v;
    return 0;
}

static int parse_float(double *out, const char *s)
{
    if (!*s || isspace((unsigned char)*s))
        return -1;
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (*end)
        return -1;
    *out = v;
    return 0;
}

static int is_missing(const char *s)
{
    return !*s || strcmp(s, TSV_MISSING) == 0;
}

/* Line and byte of a cell, for messages. */
typedef struct {
    const char *text;
    size_t line;
    size_t offset;
} tsv_cell;

static int read_file(char **out, size_t *len, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT)
            return h5s_error_set(H5S_ENOTFOUND, "%s: no such file", path);
        return h5s_error_set(H5S_EIO, "%s: cannot open: %s", path, strerror(errno));
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap)
            break;
        char *bigger = realloc(buf, cap * 2 + 1);
        if (!bigger) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = bigger;
        cap *= 2;
    }
    int err = ferror(f);
    fclose(f);
    if (!buf)
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", path);
    if (err) {
        free(buf);
        return h5s_error_set(H5S_EIO, "%s: read failed", path);
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

/* Converts the text cells of column c (nrows of them) to type, or infers the type. */
static int convert_column(h5s_tsv_column *col, h5s_tsv_type type, const tsv_cell *cells,
                          size_t nrows, const char *path)
{
    if (type == H5S_TSV_INFER) {
        int all_int = 1, all_num = 1, any = 0;
        for (size_t r = 0; r < nrows && all_num; r++) {
            const char *s = cells[r].text;
            if (is_missing(s))
                continue;
            any = 1;
            int64_t iv;
            double dv;
            if (all_int && parse_int(&iv, s) != 0)
                all_int = 0;
            if (!all_int && parse_float(&dv, s) != 0)
                all_num = 0;
        }
        type = !any || !all_num ? H5S_TSV_STRING : all_int ? H5S_TSV_INT : H5S_TSV_FLOAT;
    }
    if (column_alloc(col, type, nrows))
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", path);
    for (size_t r = 0; r < nrows; r++) {
        const char *s = cells[r].text;
        if (is_missing(s))
            continue;
        col->missing[r] = 0;
        if (type == H5S_TSV_STRING) {
            if (!(col->strings[r] = strdup(s)))
                return h5s_error_set(H5S_ENOMEM, "%s: out of memory", path);
        } else if (type == H5S_TSV_INT) {
            int prc = parse_int(&col->ints[r], s);
            if (prc)
                return h5s_error_set(H5S_EFORMAT,
                                     "%s: line %zu, byte %zu, column '%s': '%s' is not %s", path,
                                     cells[r].line, cells[r].offset, col->name, s,
                                     prc == -2 ? "within int64" : "an integer");
        } else if (parse_float(&col->floats[r], s)) {
            return h5s_error_set(H5S_EFORMAT,
                                 "%s: line %zu, byte %zu, column '%s': '%s' is not a number", path,
                                 cells[r].line, cells[r].offset, col->name, s);
        }
    }
    return 0;
}

/*
 * Splits buf in place into lines and fields. Fills *fields (row-major, nrows x ncols,
 * header row first) and the counts.
 */
static int split(tsv_cell **out, size_t *out_ncols, size_t *out_nrows, char *buf, size_t len,
                 const char *path)
{
    size_t start = 0;
    if (len >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0)
        start = 3;
    if (memchr(buf, '\0', len))
        return h5s_error_set(H5S_EFORMAT, "%s: byte %zu: NUL byte in a text table", path,
                             (size_t)((char *)memchr(buf, '\0', len) - buf));
    /* drop trailing blank lines */
    while (len > start && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        len--;
    buf[len] = '\0';
    if (len == start)
        return h5s_error_set(H5S_EFORMAT, "%s: byte 0: empty table (no header row)", path);

    size_t ncols = 1;
    for (size_t i = start; i < len && buf[i] != '\n'; i++)
        ncols += buf[i] == '\t';
    size_t nlines = 1;
    for (size_t i = start; i < len; i++)
        nlines += buf[i] == '\n';
    if (nlines > SIZE_MAX / sizeof(tsv_cell) / ncols)
        return h5s_error_set(H5S_ENOMEM, "%s: table too large", path);
    tsv_cell *cells = calloc(nlines * ncols, sizeof *cells);
    if (!cells)
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", path);

    size_t pos = start;
    for (size_t line = 0; line < nlines; line++) {
        size_t eol = pos;
        while (eol < len && buf[eol] != '\n')
            eol++;
        size_t end = eol;
        if (end > pos && buf[end - 1] == '\r')
            end--;
        size_t field = 0, fstart = pos;
        for (size_t i = pos; i <= end; i++) {
            if (i < end && buf[i] != '\t')
                continue;
            if (field >= ncols) {
                free(cells);
                return h5s_error_set(H5S_EFORMAT,
                                     "%s: line %zu, byte %zu: more than the header's %zu fields",
                                     path, line + 1, fstart, ncols);
            }
            buf[i] = '\0';
            tsv_cell *c = &cells[line * ncols + field];
            c->text = buf + fstart;
            c->line = line + 1;
            c->offset = fstart;
            field++;
            fstart = i + 1;
        }
        if (field != ncols) {
            free(cells);
            return h5s_error_set(H5S_EFORMAT,
                                 "%s: line %zu, byte %zu: %zu fields, the header has %zu", path,
                                 line + 1, pos, field, ncols);
        }
        pos = eol + 1;
    }
    *out = cells;
    *out_ncols = ncols;
    *out_nrows = nlines - 1;
    return 0;
}

int h5s_tsv_read(h5s_tsv_table **out, const char *path, const h5s_tsv_decl *decls, size_t ndecls)
{
    if (!out || !path || (!decls && ndecls))
        return h5s_error_set(H5S_EINVAL, "tsv read: NULL argument");
    *out = NULL;
    char *buf = NULL;
    size_t len = 0;
    int rc = read_file(&buf, &len, path);
    if (rc)
        return rc;
    tsv_cell *cells = NULL;
    size_t ncols = 0, nrows = 0;
    rc = split(&cells, &ncols, &nrows, buf, len, path);
    if (rc) {
        free(buf);
        return rc;
    }
    for (size_t c = 0; c < ncols && !rc; c++) {
        if (!*cells[c].text)
            rc = h5s_error_set(H5S_EFORMAT, "%s: line 1, byte %zu: column %zu has an empty name",
                               path, cells[c].offset, c + 1);
        for (size_t d = 0; d < c && !rc; d++)
            if (strcmp(cells[c].text, cells[d].text) == 0)
                rc = h5s_error_set(H5S_EFORMAT, "%s: line 1, byte %zu: duplicate column '%s'", path,
                                   cells[c].offset, cells[c].text);
    }
    for (size_t d = 0; d < ndecls && !rc; d++) {
        int found = 0;
        for (size_t c = 0; c < ncols; c++)
            found |= decls[d].name && strcmp(decls[d].name, cells[c].text) == 0;
        if (!found)
            rc = h5s_error_set(H5S_EINVAL, "%s: declared column '%s' is not in the header", path,
                               decls[d].name ? decls[d].name : "(null)");
    }
    h5s_tsv_table *t = NULL;
    if (!rc) {
        t = calloc(1, sizeof *t);
        if (t)
            t->cols = calloc(ncols, sizeof *t->cols);
        if (!t || !t->cols)
            rc = h5s_error_set(H5S_ENOMEM, "%s: out of memory", path);
        else {
            t->ncols = ncols;
            t->nrows = nrows;
        }
    }
    tsv_cell *colcells = NULL;
    if (!rc && !(colcells = malloc((nrows ? nrows : 1) * sizeof *colcells)))
        rc = h5s_error_set(H5S_ENOMEM, "%s: out of memory", path);
    for (size_t c = 0; c < ncols && !rc; c++) {
        h5s_tsv_column *col = &t->cols[c];
        if (!(col->name = strdup(cells[c].text))) {
            rc = h5s_error_set(H5S_ENOMEM, "%s: out of memory", path);
            break;
        }
        h5s_tsv_type type = H5S_TSV_INFER;
        for (size_t d = 0; d < ndecls; d++)
            if (strcmp(decls[d].name, col->name) == 0)
                type = decls[d].type;
        for (size_t r = 0; r < nrows; r++)
            colcells[r] = cells[(r + 1) * ncols + c];
        rc = convert_column(col, type, colcells, nrows, path);
    }
    free(colcells);
    free(cells);
    free(buf);
    if (rc) {
        h5s_tsv_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

/* ---- writing ---- */

static int text_ok(const char *s)
{
    return strpbrk(s, "\t\n\r") == NULL;
}

static void format_float(char *out, size_t cap, double v)
{
    if (isnan(v)) {
        snprintf(out, cap, "nan");
        return;
    }
    if (isinf(v)) {
        snprintf(out, cap, v < 0 ? "-inf" : "inf");
        return;
    }
    snprintf(out, cap, "%.15g", v);
    if (strtod(out, NULL) != v)
        snprintf(out, cap, "%.17g", v);
    /* keep a float column a float when read back with type inference */
    if (!strpbrk(out, ".eE")) {
        size_t n = strlen(out);
        if (n + 2 < cap)
            memcpy(out + n, ".0", 3);
    }
}

int h5s_tsv_write(const char *path, const h5s_tsv_table *t)
{
    if (!path || !t || (!t->cols && t->ncols))
        return h5s_error_set(H5S_EINVAL, "tsv write: NULL argument");
    for (size_t c = 0; c < t->ncols; c++) {
        const h5s_tsv_column *col = &t->cols[c];
        if (!col->name || !*col->name || !text_ok(col->name))
            return h5s_error_set(H5S_EINVAL,
                                 "%s: column %zu: name missing or holding a tab or newline", path,
                                 c + 1);
        if (col->type != H5S_TSV_STRING && col->type != H5S_TSV_INT && col->type != H5S_TSV_FLOAT)
            return h5s_error_set(H5S_EINVAL, "%s: column '%s' has no type", path, col->name);
        if (col->type == H5S_TSV_STRING)
            for (size_t r = 0; r < t->nrows; r++)
                if (!col->missing[r] && col->strings[r] &&
                    (!text_ok(col->strings[r]) || strcmp(col->strings[r], TSV_MISSING) == 0))
                    return h5s_error_set(H5S_EINVAL,
                                         "%s: row %zu, column '%s': value holds a tab or newline, "
                                         "or is the missing marker \"n/a\"",
                                         path, r + 1, col->name);
    }
    FILE *f = fopen(path, "w");
    if (!f)
        return h5s_error_set(H5S_EIO, "%s: cannot create: %s", path, strerror(errno));
    for (size_t c = 0; c < t->ncols; c++)
        fprintf(f, "%s%s", c ? "\t" : "", t->cols[c].name);
    fputc('\n', f);
    char num[64];
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t c = 0; c < t->ncols; c++) {
            const h5s_tsv_column *col = &t->cols[c];
            const char *text = num;
            if (col->missing[r] || (col->type == H5S_TSV_STRING && !col->strings[r]))
                text = TSV_MISSING;
            else if (col->type == H5S_TSV_STRING)
                text = col->strings[r];
            else if (col->type == H5S_TSV_INT)
                snprintf(num, sizeof num, "%lld", (long long)col->ints[r]);
            else
                format_float(num, sizeof num, col->floats[r]);
            fprintf(f, "%s%s", c ? "\t" : "", text);
        }
        fputc('\n', f);
    }
    int bad = ferror(f);
    bad |= fclose(f) != 0;
    if (bad) {
        remove(path);
        return h5s_error_set(H5S_EIO, "%s: write failed", path);
    }
    return 0;
}

/* ---- subject ids ---- */

struct h5s_subject_matcher {
    int bids;
    regex_t re;
};

int h5s_subject_matcher_create(h5s_subject_matcher **out, const char *pattern)
{
    if (!out)
        return h5s_error_set(H5S_EINVAL, "subject matcher: NULL argument");
    *out = NULL;
    h5s_subject_matcher *m = calloc(1, sizeof *m);
    if (!m)
        return h5s_error_set(H5S_ENOMEM, "subject matcher: out of memory");
    if (!pattern) {
        m->bids = 1;
        *out = m;
        return 0;
    }
    int rc = regcomp(&m->re, pattern, REG_EXTENDED);
    if (rc) {
        char msg[256];
        regerror(rc, &m->re, msg, sizeof msg);
        free(m);
        return h5s_error_set(H5S_EINVAL, "subject pattern '%s': %s", pattern, msg);
    }
    if (m->re.re_nsub != 1) {
        size_t n = m->re.re_nsub;
        regfree(&m->re);
        free(m);
        return h5s_error_set(H5S_EINVAL,
                             "subject pattern '%s': has %zu capture groups, needs exactly 1",
                             pattern, n);
    }
    *out = m;
    return 0;
}

void h5s_subject_matcher_free(h5s_subject_matcher *m)
{
    if (!m)
        return;
    if (!m->bids)
        regfree(&m->re);
    free(m);
}

/* BIDS rule on text: the last "sub-" at its start or after '_' or '/'. */
static int bids_match(const char *text, const char **start, size_t *len)
{
    int found = 0;
    for (const char *p = strstr(text, "sub-"); p; p = strstr(p + 1, "sub-")) {
        if (p != text && p[-1] != '_' && p[-1] != '/')
            continue;
        const char *q = p + 4;
        size_t n = 0;
        while (isalnum((unsigned char)q[n]))
            n++;
        if (n) {
            *start = q;
            *len = n;
            found = 1;
        }
    }
    return found;
}

static int regex_match(const regex_t *re, const char *text, const char **start, size_t *len)
{
    regmatch_t m[2];
    if (regexec(re, text, 2, m, 0) != 0 || m[1].rm_so < 0 || m[1].rm_eo <= m[1].rm_so)
        return 0;
    *start = text + m[1].rm_so;
    *len = (size_t)(m[1].rm_eo - m[1].rm_so);
    return 1;
}

int h5s_subject_match(const h5s_subject_matcher *m, const char *path, char *out, size_t out_size)
{
    if (!m || !path || !out || !out_size)
        return h5s_error_set(H5S_EINVAL, "subject match: NULL argument");
    out[0] = '\0';
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *start = NULL;
    size_t len = 0;
    int ok = m->bids ? bids_match(base, &start, &len) : regex_match(&m->re, base, &start, &len);
    if (!ok && base != path)
        ok = m->bids ? bids_match(path, &start, &len) : regex_match(&m->re, path, &start, &len);
    if (!ok)
        return h5s_error_set(H5S_ENOTFOUND, "%s: no subject id in the name (%s)", path,
                             m->bids ? "BIDS sub-<label>" : "pattern did not match");
    if (len >= out_size)
        return h5s_error_set(H5S_ERANGE, "%s: subject id of %zu bytes does not fit %zu", path, len,
                             out_size);
    memcpy(out, start, len);
    out[len] = '\0';
    return 0;
}
