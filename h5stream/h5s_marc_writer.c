/*
 * h5s_marc_writer.c - the marc model: declares the /marc layout (h5s_marc_layout.h) as two
 * groups of columns, accepted and rejected, each committed by its index, and stores batches
 * of records in them; at the end writes the sorted control-number index.
 */
#include "h5s_marc_writer.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "h5s_column.h"
#include "h5s_error.h"

#define MARC_RECORDS_CHUNK ((size_t)1 << 20)
#define MARC_SMALL_BYTES_CHUNK ((size_t)64 << 10)

struct h5s_marc_model {
    h5s_file *file;
    h5s_group *acc, *rej;
    h5s_column *records, *offsets, *index, *repairs, *originals;
    h5s_column *rrecords, *roffsets, *rindex, *rerrors;
    char **sources;
    size_t nsources;
    int control_index;
    int finished;

    /* Under acc's lock. */
    uint64_t n_acc, acc_bytes, orig_bytes, n_altered;
    h5s_marc_control_row *ctl;
    size_t nctl, capctl;
    /* Under rej's lock. */
    uint64_t n_rej, rej_bytes;
    /* A copy for h5s_marc_model_stats_get, which may run after the file (and so the
     * groups and their locks) is gone. */
    pthread_mutex_t stats_mu;
    h5s_marc_model_stats stats;
};

/* ---- declaration ------------------------------------------------------------------ */

static int make_column(h5s_column **out, h5s_group *g, const char *path, hid_t type,
                       uint64_t chunk_rows, const h5s_codec *codec, int marker)
{
    h5s_column_options o = H5S_COLUMN_OPTIONS_INIT;
    o.type = type;
    o.chunk_rows = chunk_rows;
    o.codec = *codec;
    o.marker = marker;
    return h5s_column_create(out, g, path, &o);
}

static int write_sources(h5s_marc_model *m, hid_t fid)
{
    size_t n = m->nsources;
    char *rows = calloc(n, H5S_MARC_SOURCE_BYTES);
    if (!rows)
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", h5s_file_path(m->file));
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(m->sources[i]);
        if (len > H5S_MARC_SOURCE_BYTES - 1)
            len = H5S_MARC_SOURCE_BYTES - 1;
        memcpy(rows + i * H5S_MARC_SOURCE_BYTES, m->sources[i], len);
    }
    hsize_t dims = n;
    hid_t type = h5s_marc_string_type(H5S_MARC_SOURCE_BYTES);
    hid_t space = H5Screate_simple(1, &dims, NULL);
    hid_t d =
        H5Dcreate2(fid, H5S_MARC_SOURCES_PATH, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t st = d >= 0 ? H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, rows) : -1;
    if (d >= 0)
        H5Dclose(d);
    H5Sclose(space);
    H5Tclose(type);
    free(rows);
    if (st < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: cannot write %s", h5s_file_path(m->file),
                                H5S_MARC_SOURCES_PATH);
    return 0;
}

/* /marc/control_index: not a column (it is written once, sorted, by a writer call). */
static int create_control_index(h5s_marc_model *m, hid_t fid)
{
    hsize_t dims = 0, maxdims = H5S_UNLIMITED, chunk = 65536;
    hid_t type = h5s_marc_control_type();
    hid_t space = H5Screate_simple(1, &dims, &maxdims);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, &chunk);
    hid_t d =
        H5Dcreate2(fid, H5S_MARC_CONTROL_INDEX_PATH, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Sclose(space);
    H5Tclose(type);
    if (d < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: cannot create %s", h5s_file_path(m->file),
                                H5S_MARC_CONTROL_INDEX_PATH);
    H5Dclose(d);
    return 0;
}

static int string_attr(hid_t obj, const char *name, const char *value)
{
    hid_t type = h5s_marc_string_type(strlen(value) ? strlen(value) : 1);
    H5Tset_strpad(type, H5T_STR_NULLTERM);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t st = a >= 0 ? H5Awrite(a, type, value) : -1;
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(space);
    H5Tclose(type);
    return st < 0 ? -1 : 0;
}

static int write_attrs(h5s_marc_model *m, hid_t fid, h5s_marc_mode mode)
{
    static const char *const modes[] = {"strict", "lenient", "permissive"};
    hid_t g = H5Gopen2(fid, H5S_MARC_ROOT, H5P_DEFAULT);
    if (g < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: cannot open %s", h5s_file_path(m->file),
                                H5S_MARC_ROOT);
    int version = H5S_MARC_LAYOUT_VERSION;
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(g, H5S_MARC_ATTR_LAYOUT, H5T_STD_I32LE, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t st = a >= 0 ? H5Awrite(a, H5T_NATIVE_INT, &version) : -1;
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(space);
    int rc = st < 0 ? -1 : 0;
    if (rc == 0)
        rc = string_attr(g, H5S_MARC_ATTR_MODE, (unsigned)mode < 3 ? modes[mode] : "strict");
    if (rc == 0)
        rc = string_attr(g, H5S_MARC_ATTR_CONTROL_HASH, "fnv1a64");
    H5Gclose(g);
    if (rc)
        return h5s_error_set_h5(H5S_EIO, "%s: cannot write the attributes of %s",
                                h5s_file_path(m->file), H5S_MARC_ROOT);
    return 0;
}

static void model_release(h5s_marc_model *m)
{
    for (size_t i = 0; i < m->nsources; i++)
        free(m->sources[i]);
    free(m->sources);
    free(m->ctl);
    pthread_mutex_destroy(&m->stats_mu);
    free(m);
}

static int declare(h5s_marc_model *m, const h5s_marc_model_options *o)
{
    h5s_file *f = m->file;
    hid_t fid = h5s_file_hid(f);
    const h5s_codec *cd = &o->codec;
    size_t rchunk = o->records_chunk ? o->records_chunk : MARC_RECORDS_CHUNK;
    hid_t tindex = h5s_marc_index_type(), terr = h5s_marc_error_type();
    hid_t trep = h5s_marc_repair_type();
    int rc = h5s_file_add_model(f, "marc");
    if (rc == 0)
        rc = h5s_group_create(&m->acc, f, H5S_MARC_ROOT);
    if (rc == 0)
        rc = h5s_group_create(&m->rej, f, H5S_MARC_REJECTED);
    /* Columns: the index is each group's commit marker. */
    if (rc == 0)
        rc = make_column(&m->records, m->acc, H5S_MARC_ROOT "/" H5S_MARC_RECORDS, H5T_STD_U8LE,
                         rchunk, cd, 0);
    if (rc == 0)
        rc = make_column(&m->offsets, m->acc, H5S_MARC_ROOT "/" H5S_MARC_OFFSETS, H5T_STD_U64LE,
                         65536, cd, 0);
    if (rc == 0)
        rc = make_column(&m->index, m->acc, H5S_MARC_ROOT "/" H5S_MARC_INDEX, tindex, 0, cd, 1);
    if (rc == 0)
        rc = make_column(&m->repairs, m->acc, H5S_MARC_REPAIRS_PATH, trep, 512, cd, 0);
    if (rc == 0)
        rc = make_column(&m->originals, m->acc, H5S_MARC_ORIGINALS_PATH, H5T_STD_U8LE,
                         MARC_SMALL_BYTES_CHUNK, cd, 0);
    if (rc == 0)
        rc = make_column(&m->rrecords, m->rej, H5S_MARC_REJECTED "/" H5S_MARC_RECORDS, H5T_STD_U8LE,
                         4 * MARC_SMALL_BYTES_CHUNK, cd, 0);
    if (rc == 0)
        rc = make_column(&m->roffsets, m->rej, H5S_MARC_REJECTED "/" H5S_MARC_OFFSETS,
                         H5T_STD_U64LE, 8192, cd, 0);
    if (rc == 0)
        rc = make_column(&m->rindex, m->rej, H5S_MARC_REJECTED "/" H5S_MARC_INDEX, tindex, 1024, cd,
                         1);
    if (rc == 0)
        rc = make_column(&m->rerrors, m->rej, H5S_MARC_ERRORS_PATH, terr, 512, cd, 0);
    H5Tclose(tindex);
    H5Tclose(terr);
    H5Tclose(trep);
    uint64_t zero = 0;
    if (rc == 0)
        rc = h5s_column_preset(m->offsets, &zero, 1);
    if (rc == 0)
        rc = h5s_column_preset(m->roffsets, &zero, 1);
    if (rc == 0)
        rc = write_sources(m, fid);
    if (rc == 0)
        rc = create_control_index(m, fid);
    if (rc == 0)
        rc = write_attrs(m, fid, o->mode);
    return rc;
}

int h5s_marc_model_create(h5s_marc_model **out, h5s_file *file, const char *const *sources,
                          size_t nsources, const h5s_marc_model_options *opts)
{
    static const h5s_marc_model_options defaults = H5S_MARC_MODEL_OPTIONS_INIT;
    h5s_error_clear();
    if (!out || !file || !sources)
        return h5s_error_set(H5S_EINVAL, "h5s_marc_model_create: NULL argument");
    *out = NULL;
    if (!opts)
        opts = &defaults;
    if (opts->version != H5S_MARC_MODEL_OPTIONS_VERSION)
        return h5s_error_set(H5S_EINVAL, "%s: marc options version %u, expected %u",
                             h5s_file_path(file), opts->version, H5S_MARC_MODEL_OPTIONS_VERSION);
    if (nsources == 0 || nsources > UINT32_MAX)
        return h5s_error_set(H5S_EINVAL, "%s: marc needs 1 to 2^32-1 sources, not %zu",
                             h5s_file_path(file), nsources);
    hid_t fid = h5s_file_hid(file);
    if (fid < 0)
        return h5s_error_set(H5S_ESTATE, "%s: marc model declared after SWMR started",
                             h5s_file_path(file));
    htri_t exists = H5Lexists(fid, H5S_MARC_ROOT, H5P_DEFAULT);
    if (exists != 0)
        return h5s_error_set(H5S_EINVAL, "%s: %s already exists", h5s_file_path(file),
                             H5S_MARC_ROOT);
    h5s_marc_model *m = calloc(1, sizeof *m);
    if (m)
        m->sources = calloc(nsources, sizeof *m->sources);
    if (!m || !m->sources) {
        free(m);
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", h5s_file_path(file));
    }
    pthread_mutex_init(&m->stats_mu, NULL);
    m->file = file;
    m->control_index = !opts->no_control_index;
    for (size_t i = 0; i < nsources; i++) {
        m->sources[i] = strdup(sources[i] ? sources[i] : "");
        if (!m->sources[i]) {
            model_release(m);
            return h5s_error_set(H5S_ENOMEM, "%s: out of memory", h5s_file_path(file));
        }
        m->nsources = i + 1;
    }
    int rc = declare(m, opts);
    if (rc) {
        model_release(m);
        return rc;
    }
    *out = m;
    return 0;
}

/* ---- records ---------------------------------------------------------------------- */

static int digits_at(const unsigned char *p, int n, size_t *v)
{
    size_t x = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
        x = x * 10 + (size_t)(p[i] - '0');
    }
    *v = x;
    return 1;
}

/*
 * h5s_marc_control_number, with a shortcut for the usual record whose first directory
 * entry is 001: when the leader's base address and that entry pass exactly the checks
 * formats/'s field iterator makes, the field it would return is read directly (saves a
 * third of the per-record cost of a clean ingest); any other record goes the long way.
 */
static size_t first_control_number(char *out, size_t cap, const unsigned char *rec, size_t len)
{
    size_t base, flen, fstart;
    if (len > H5S_MARC_LEADER_LEN + 12 && digits_at(rec + 12, 5, &base) &&
        base >= H5S_MARC_LEADER_LEN + 13 && base < len && rec[base - 1] == H5S_MARC_FT &&
        (base - 1 - H5S_MARC_LEADER_LEN) % 12 == 0 && memcmp(rec + 24, "001", 3) == 0 &&
        digits_at(rec + 27, 4, &flen) && digits_at(rec + 31, 5, &fstart) && flen > 0 &&
        base + fstart <= len && flen <= len - base - fstart) {
        const unsigned char *d = rec + base + fstart;
        size_t n = flen;
        if (d[n - 1] == H5S_MARC_FT || d[n - 1] == H5S_MARC_RT)
            n--;
        while (n && d[0] == ' ') {
            d++;
            n--;
        }
        while (n && d[n - 1] == ' ')
            n--;
        if (n > cap - 1)
            n = cap - 1;
        memcpy(out, d, n);
        out[n] = '\0';
        return n;
    }
    return h5s_marc_control_number(out, cap, rec, len);
}

void h5s_marc_model_index_row(h5s_marc_index_row *out, const unsigned char *rec, size_t len,
                              const h5s_marc_report *report, uint32_t scan_flags)
{
    memset(out, 0, sizeof *out);
    if (len >= H5S_MARC_LEADER_BYTES) {
        memcpy(out->leader, rec, H5S_MARC_LEADER_BYTES);
    } else {
        char leader[H5S_MARC_LEADER_LEN + 1];
        h5s_marc_leader(leader, rec, len);
        memcpy(out->leader, leader, H5S_MARC_LEADER_BYTES);
    }
    char ctl[H5S_MARC_CONTROL_BYTES + 2];
    size_t n = first_control_number(ctl, sizeof ctl, rec, len);
    uint32_t flags = 0;
    if (n == 0)
        flags |= H5S_MARC_IX_NO_CONTROL;
    if (n > H5S_MARC_CONTROL_BYTES) {
        flags |= H5S_MARC_IX_CONTROL_CUT;
        n = H5S_MARC_CONTROL_BYTES;
    }
    memcpy(out->control, ctl, n);
    if (len > 9 && rec[9] == 'a')
        flags |= H5S_MARC_IX_UTF8;
    else if (len > 9 && rec[9] == ' ')
        flags |= H5S_MARC_IX_MARC8;
    if (scan_flags & H5S_MARC_SPAN_RESYNC)
        flags |= H5S_MARC_IX_RESYNC;
    if (scan_flags & H5S_MARC_SPAN_TRUNCATED)
        flags |= H5S_MARC_IX_TRUNCATED;
    if (scan_flags & H5S_MARC_SPAN_NO_RT)
        flags |= H5S_MARC_IX_NO_RT;
    if (report) {
        if (report->n_errors) {
            flags |= H5S_MARC_IX_DEFECTS;
            out->error = report->errors[0].code;
            out->n_errors = report->n_errors > UINT16_MAX ? UINT16_MAX : (uint16_t)report->n_errors;
        }
        uint32_t stored =
            report->n_errors < H5S_MARC_MAX_ERRORS ? report->n_errors : H5S_MARC_MAX_ERRORS;
        for (uint32_t i = 0; i < stored; i++)
            if (report->errors[i].code == H5S_MARC_E_UTF8)
                flags |= H5S_MARC_IX_UTF8_INVALID;
        if (report->flags & H5S_MARC_F_REPAIRED)
            flags |= H5S_MARC_IX_REPAIRED;
    }
    out->flags = flags;
}

/* Walks the items of one group (accepted or rejected) while a column is filled. */
typedef struct {
    h5s_marc_model *m;
    const h5s_marc_item *items;
    size_t n, pos;
    int rejected;
    uint64_t end; /* offsets: bytes so far */
    uint64_t row; /* index: next row */
    int collect;  /* index: push control numbers */
    int oom;      /* the control list could not grow */
} walk;

static const h5s_marc_item *walk_next(walk *w)
{
    while (w->pos < w->n && (w->items[w->pos].rejected != 0) != w->rejected)
        w->pos++;
    return w->pos < w->n ? &w->items[w->pos++] : NULL;
}

static void fill_offsets(void *dst, uint64_t first, uint64_t n, void *payload)
{
    (void)first;
    walk *w = payload;
    unsigned char *p = dst;
    for (uint64_t k = 0; k < n; k++) {
        w->end += walk_next(w)->len;
        memcpy(p + k * sizeof w->end, &w->end, sizeof w->end);
    }
}

static int push_control(h5s_marc_model *m, uint64_t hash, uint64_t row)
{
    if (m->nctl == m->capctl) {
        size_t cap = m->capctl ? 2 * m->capctl : 4096;
        h5s_marc_control_row *p = realloc(m->ctl, cap * sizeof *p);
        if (!p)
            return -1;
        m->ctl = p;
        m->capctl = cap;
    }
    m->ctl[m->nctl].hash = hash;
    m->ctl[m->nctl].row = row;
    m->nctl++;
    return 0;
}

static void fill_index(void *dst, uint64_t first, uint64_t n, void *payload)
{
    (void)first;
    walk *w = payload;
    unsigned char *p = dst;
    for (uint64_t k = 0; k < n; k++) {
        const h5s_marc_item *it = walk_next(w);
        h5s_marc_index_row row = it->index;
        row.length = (uint32_t)it->len;
        memcpy(p + k * sizeof row, &row, sizeof row);
        if (w->collect && !(row.flags & H5S_MARC_IX_NO_CONTROL)) {
            size_t cl = h5s_marc_fixed_len(row.control, H5S_MARC_CONTROL_BYTES);
            if (cl && push_control(w->m, h5s_marc_control_hash(row.control, cl), w->row) != 0)
                w->oom = 1;
        }
        w->row++;
    }
}

/* The caller's lender of input bytes (h5s_marc_model_append_lent), or none. */
typedef struct {
    h5s_lent_done_fn done;
    void *ctx;
} lender;

static int append_run(h5s_column *c, const unsigned char *run, size_t len, int lend,
                      const lender *l)
{
    if (!len)
        return 0;
    return lend && l->done ? h5s_column_append_lent(c, run, len, l->done, l->ctx)
                           : h5s_column_append(c, run, len);
}

/* Appends the bytes of the group's items, contiguous ones as one run. Runs of input bytes
 * (not altered) are lent to the column when l has a lender. */
static int append_bytes(h5s_column *c, const h5s_marc_item *items, size_t n, int rejected,
                        uint64_t *total, const lender *l)
{
    const unsigned char *run = NULL;
    size_t runlen = 0;
    int runlend = 0, rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const h5s_marc_item *it = &items[i];
        if ((it->rejected != 0) != rejected)
            continue;
        *total += it->len;
        int lend = it->original == NULL;
        if (run && it->data == run + runlen && lend == runlend) {
            runlen += it->len;
            continue;
        }
        rc = append_run(c, run, runlen, runlend, l);
        run = it->data;
        runlen = it->len;
        runlend = lend;
    }
    if (rc == 0)
        rc = append_run(c, run, runlen, runlend, l);
    return rc;
}

static int append_altered(h5s_marc_model *m, const h5s_marc_item *it, uint64_t row)
{
    h5s_marc_repair_row r;
    memset(&r, 0, sizeof r);
    r.row = row;
    r.ordinal = it->index.ordinal;
    r.original_offset = m->orig_bytes;
    r.original_length = (uint32_t)it->original_len;
    if (it->index.flags & H5S_MARC_IX_REPAIRED)
        r.kind |= H5S_MARC_ALTER_REPAIRED;
    if (it->index.flags & H5S_MARC_IX_CONVERTED)
        r.kind |= H5S_MARC_ALTER_CONVERTED;
    if (it->report && (it->index.flags & H5S_MARC_IX_REPAIRED)) {
        uint32_t nr = it->report->n_repairs;
        if (nr > H5S_MARC_REPAIRS_MAX)
            nr = H5S_MARC_REPAIRS_MAX;
        r.n_repairs = (uint16_t)nr;
        for (uint32_t i = 0; i < nr; i++) {
            r.code[i] = it->report->repairs[i].code;
            r.at[i] = it->report->repairs[i].offset;
        }
    }
    int rc = h5s_column_append(m->originals, it->original, it->original_len);
    if (rc == 0)
        rc = h5s_column_append(m->repairs, &r, 1);
    if (rc == 0) {
        m->orig_bytes += it->original_len;
        m->n_altered++;
    }
    return rc;
}

static int append_accepted(h5s_marc_model *m, const h5s_marc_item *items, size_t n, size_t count,
                           const lender *l)
{
    uint64_t bytes = 0;
    int rc = append_bytes(m->records, items, n, 0, &bytes, l);
    walk w = {m, items, n, 0, 0, m->acc_bytes, m->n_acc, m->control_index, 0};
    if (rc == 0)
        rc = h5s_column_append_fill(m->offsets, count, fill_offsets, &w);
    w.pos = 0;
    if (rc == 0)
        rc = h5s_column_append_fill(m->index, count, fill_index, &w);
    if (rc == 0 && w.oom)
        rc = h5s_error_set(H5S_ENOMEM, "%s: out of memory for the control index",
                           h5s_file_path(m->file));
    uint64_t row = m->n_acc;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (items[i].rejected)
            continue;
        if (items[i].original)
            rc = append_altered(m, &items[i], row);
        row++;
    }
    if (rc == 0) {
        m->n_acc += count;
        m->acc_bytes += bytes;
        rc = h5s_group_item_done(m->acc, count);
    }
    return rc;
}

static int append_rejected(h5s_marc_model *m, const h5s_marc_item *items, size_t n, size_t count,
                           const lender *l)
{
    uint64_t bytes = 0;
    int rc = append_bytes(m->rrecords, items, n, 1, &bytes, l);
    walk w = {m, items, n, 0, 1, m->rej_bytes, m->n_rej, 0, 0};
    if (rc == 0)
        rc = h5s_column_append_fill(m->roffsets, count, fill_offsets, &w);
    w.pos = 0;
    if (rc == 0)
        rc = h5s_column_append_fill(m->rindex, count, fill_index, &w);
    for (size_t i = 0; i < n && rc == 0; i++) {
        const h5s_marc_item *it = &items[i];
        if (!it->rejected)
            continue;
        h5s_marc_error_row e;
        memset(&e, 0, sizeof e);
        e.ordinal = it->index.ordinal;
        e.source = it->index.source;
        e.source_offset = it->index.source_offset;
        const h5s_marc_report *r = it->report;
        if (r && r->n_errors) {
            e.code = r->errors[0].code;
            e.n_errors = r->n_errors > UINT16_MAX ? UINT16_MAX : (uint16_t)r->n_errors;
            e.source_offset += r->errors[0].offset;
            /* The message is NUL-terminated in a buffer one longer than the field. */
            char msg[H5S_MARC_MESSAGE_BYTES + 1];
            h5s_marc_report_format(msg, sizeof msg, r, m->sources[it->index.source],
                                   it->index.ordinal, it->index.source_offset, it->data, it->len);
            memcpy(e.message, msg, strnlen(msg, H5S_MARC_MESSAGE_BYTES));
        } else {
            snprintf(e.message, sizeof e.message, "%s: record %llu at byte %llu: rejected",
                     m->sources[it->index.source], (unsigned long long)it->index.ordinal,
                     (unsigned long long)it->index.source_offset);
        }
        rc = h5s_column_append(m->rerrors, &e, 1);
    }
    if (rc == 0) {
        m->n_rej += count;
        m->rej_bytes += bytes;
        rc = h5s_group_item_done(m->rej, count);
    }
    return rc;
}

int h5s_marc_model_append(h5s_marc_model *m, const h5s_marc_item *items, size_t n)
{
    return h5s_marc_model_append_lent(m, items, n, NULL, NULL);
}

int h5s_marc_model_append_lent(h5s_marc_model *m, const h5s_marc_item *items, size_t n,
                               h5s_lent_done_fn done, void *ctx)
{
    const lender l = {done, ctx};
    if (!m || (!items && n))
        return h5s_error_set(H5S_EINVAL, "h5s_marc_model_append: NULL argument");
    for (size_t i = 0; i < n; i++) {
        const h5s_marc_item *it = &items[i];
        if ((!it->data && it->len) || it->len > UINT32_MAX || it->original_len > UINT32_MAX ||
            it->index.source >= m->nsources || (it->original && it->rejected))
            return h5s_error_set(H5S_EINVAL, "%s: marc record %llu: bad item (size %zu, source %u)",
                                 h5s_file_path(m->file), (unsigned long long)it->index.ordinal,
                                 it->len, (unsigned)it->index.source);
    }
    if (m->finished)
        return h5s_error_set(H5S_ESTATE, "%s: marc append after finish", h5s_file_path(m->file));
    int rc = 0;
    /* A batch larger than flush_every goes in slices of flush_every items, each counted
     * (and so committed) on its own, as the user's flush policy asks. */
    uint64_t every = h5s_group_flush_every(m->acc);
    size_t slice = every && every < n ? (size_t)every : n;
    /* Both locks, always in this order, so concurrent batches keep input order in each
     * group (the writer thread only ever try-locks a group). */
    h5s_group_lock(m->acc);
    for (size_t at = 0; rc == 0 && at < n; at += slice) {
        const h5s_marc_item *part = items + at;
        size_t k = n - at < slice ? n - at : slice, kacc = 0;
        for (size_t i = 0; i < k; i++)
            kacc += !part[i].rejected;
        if (kacc)
            rc = append_accepted(m, part, k, kacc, &l);
        if (rc == 0 && kacc < k) {
            h5s_group_lock(m->rej);
            rc = append_rejected(m, part, k, k - kacc, &l);
            h5s_group_unlock(m->rej);
        }
    }
    pthread_mutex_lock(&m->stats_mu);
    m->stats.accepted = m->n_acc;
    m->stats.accepted_bytes = m->acc_bytes;
    m->stats.altered = m->n_altered;
    m->stats.rejected = m->n_rej;
    m->stats.rejected_bytes = m->rej_bytes;
    pthread_mutex_unlock(&m->stats_mu);
    h5s_group_unlock(m->acc);
    return rc;
}

/* ---- the control index ------------------------------------------------------------ */

typedef struct {
    h5s_marc_control_row *rows;
    size_t n;
    char path[1024];
} control_job;

static int write_control_index(hid_t fid, void *payload)
{
    control_job *j = payload;
    hid_t d = H5Dopen2(fid, H5S_MARC_CONTROL_INDEX_PATH, H5P_DEFAULT);
    hsize_t dims = j->n;
    herr_t st = d >= 0 ? H5Dset_extent(d, &dims) : -1;
    hid_t type = h5s_marc_control_type();
    if (st >= 0 && j->n)
        st = H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, j->rows);
    if (st >= 0)
        st = H5Dflush(d);
    H5Tclose(type);
    if (d >= 0)
        H5Dclose(d);
    if (st < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: cannot write %s (%zu rows)", j->path,
                                H5S_MARC_CONTROL_INDEX_PATH, j->n);
    return 0;
}

static void free_control_job(void *payload)
{
    control_job *j = payload;
    free(j->rows);
    free(j);
}

/* Stable LSD radix sort by hash, 16 bits a pass; rows stay in row order within a hash. */
static int sort_by_hash(h5s_marc_control_row *rows, size_t n)
{
    if (n < 2)
        return 0;
    h5s_marc_control_row *tmp = malloc(n * sizeof *tmp);
    size_t *count = malloc(65536 * sizeof *count);
    if (!tmp || !count) {
        free(tmp);
        free(count);
        return -1;
    }
    h5s_marc_control_row *src = rows, *dst = tmp;
    for (int shift = 0; shift < 64; shift += 16) {
        memset(count, 0, 65536 * sizeof *count);
        for (size_t i = 0; i < n; i++)
            count[(src[i].hash >> shift) & 0xFFFF]++;
        size_t sum = 0;
        for (size_t b = 0; b < 65536; b++) {
            size_t c = count[b];
            count[b] = sum;
            sum += c;
        }
        for (size_t i = 0; i < n; i++)
            dst[count[(src[i].hash >> shift) & 0xFFFF]++] = src[i];
        h5s_marc_control_row *t = src;
        src = dst;
        dst = t;
    }
    /* Four passes: the result is back in rows. */
    free(tmp);
    free(count);
    return 0;
}

int h5s_marc_model_finish(h5s_marc_model *m)
{
    if (!m)
        return h5s_error_set(H5S_EINVAL, "h5s_marc_model_finish: NULL argument");
    h5s_group_lock(m->acc);
    int already = m->finished;
    m->finished = 1;
    h5s_marc_control_row *rows = m->ctl;
    size_t n = m->nctl;
    uint64_t nindex = m->n_acc;
    if (!already && m->control_index) {
        m->ctl = NULL;
        m->nctl = m->capctl = 0;
    }
    h5s_group_unlock(m->acc);
    if (already)
        return h5s_error_set(H5S_ESTATE, "%s: marc finish called twice", h5s_file_path(m->file));
    if (!m->control_index)
        return 0;
    control_job *j = calloc(1, sizeof *j);
    h5s_marc_control_row *grown = realloc(rows, (n + 1) * sizeof *rows);
    if (grown)
        rows = grown;
    if (!j || !grown || sort_by_hash(rows, n) != 0) {
        free(j);
        free(rows);
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory for the control index",
                             h5s_file_path(m->file));
    }
    rows[n].hash = H5S_MARC_CONTROL_SENTINEL;
    rows[n].row = nindex;
    j->rows = rows;
    j->n = n + 1;
    snprintf(j->path, sizeof j->path, "%s", h5s_file_path(m->file));
    return h5s_file_call(m->file, write_control_index, j, free_control_job, 0);
}

void h5s_marc_model_stats_get(h5s_marc_model *m, h5s_marc_model_stats *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!m)
        return;
    pthread_mutex_lock(&m->stats_mu);
    *out = m->stats;
    pthread_mutex_unlock(&m->stats_mu);
}

void h5s_marc_model_free(h5s_marc_model *m)
{
    if (m)
        model_release(m);
}
