/*
 * test_marc_model.c - the marc model (h5stream/h5s_marc_writer.c) and its reader
 * (readers/h5s_marc_reader.c): records come back byte for byte with their index rows,
 * rejected records keep their bytes and errors, altered records keep their input bytes,
 * lookups by ordinal and control number work with and without /marc/control_index, a
 * reader follows a live file, exports match the stored bytes, misuse gets the documented
 * errors.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <hdf5.h>
#include <jansson.h>

#include "h5s_column.h"
#include "h5s_marc.h"
#include "h5s_marc_reader.h"
#include "h5s_marc_writer.h"

static char tmpdir[1024];
static char shared[1024];

static void tmp_path(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", tmpdir, name);
}

/* A MARC file cut into records with the formats/ scanner. */
typedef struct {
    unsigned char *bytes;
    size_t size;
    size_t n;
    size_t *off, *len;
    uint32_t *flags;
} corpus;

static void load_corpus(corpus *c, const char *name)
{
    char path[2048];
    snprintf(path, sizeof path, "%s/marc/%s", shared, name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    memset(c, 0, sizeof *c);
    c->bytes = malloc((size_t)size);
    assert_int_equal(fread(c->bytes, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    c->size = (size_t)size;
    h5s_marc_scanner *s = NULL;
    assert_int_equal(h5s_marc_scanner_create(&s, 0), 0);
    assert_int_equal(h5s_marc_scanner_feed(s, c->bytes, c->size), 0);
    h5s_marc_scanner_finish(s);
    size_t cap = 16;
    c->off = malloc(cap * sizeof *c->off);
    c->len = malloc(cap * sizeof *c->len);
    c->flags = malloc(cap * sizeof *c->flags);
    h5s_marc_span sp;
    while (h5s_marc_scanner_next(s, &sp) == 1) {
        if (c->n == cap) {
            cap *= 2;
            c->off = realloc(c->off, cap * sizeof *c->off);
            c->len = realloc(c->len, cap * sizeof *c->len);
            c->flags = realloc(c->flags, cap * sizeof *c->flags);
        }
        c->off[c->n] = (size_t)sp.offset;
        c->len[c->n] = sp.len;
        c->flags[c->n] = sp.flags;
        c->n++;
    }
    h5s_marc_scanner_free(s);
}

static void free_corpus(corpus *c)
{
    free(c->bytes);
    free(c->off);
    free(c->len);
    free(c->flags);
}

/* Items for records [first, first + n) of c, checked in mode; reports kept in reps. */
static void make_items(h5s_marc_item *items, h5s_marc_report *reps, h5s_marc_buf *repaired,
                       const corpus *c, size_t first, size_t n, uint32_t source, uint64_t ordinal0,
                       h5s_marc_mode mode)
{
    for (size_t i = 0; i < n; i++) {
        const unsigned char *rec = c->bytes + c->off[first + i];
        size_t len = c->len[first + i];
        h5s_marc_item *it = &items[i];
        memset(it, 0, sizeof *it);
        int acc = h5s_marc_check(&reps[i], &repaired[i], rec, len, mode);
        assert_true(acc >= 0);
        it->data = rec;
        it->len = len;
        it->rejected = !acc;
        it->report = &reps[i];
        if (acc && repaired[i].len) {
            it->data = repaired[i].data;
            it->len = repaired[i].len;
            it->original = rec;
            it->original_len = len;
        }
        h5s_marc_model_index_row(&it->index, it->data, it->len, &reps[i], c->flags[first + i]);
        it->index.ordinal = ordinal0 + i;
        it->index.source = source;
        it->index.source_offset = c->off[first + i];
    }
}

typedef struct {
    h5s_file *file;
    h5s_marc_model *model;
} writer;

static void open_writer(writer *w, const char *path, const char *const *sources, size_t nsrc,
                        unsigned flush_ms)
{
    h5s_file_options fo = H5S_FILE_OPTIONS_INIT;
    fo.flush_ms = flush_ms;
    fo.queue_bytes = (size_t)64 << 20;
    assert_int_equal(h5s_file_create(&w->file, path, &fo), 0);
    h5s_marc_model_options mo = H5S_MARC_MODEL_OPTIONS_INIT;
    mo.mode = H5S_MARC_LENIENT;
    mo.records_chunk = 64 << 10; /* several chunks even for small corpora */
    assert_int_equal(h5s_marc_model_create(&w->model, w->file, sources, nsrc, &mo), 0);
    assert_int_equal(h5s_file_start_swmr(w->file), 0);
}

static void close_writer(writer *w)
{
    assert_int_equal(h5s_marc_model_finish(w->model), 0);
    assert_int_equal(h5s_file_close(w->file), 0);
    h5s_marc_model_free(w->model);
}

static void append_corpus(writer *w, const corpus *c, uint32_t source, uint64_t ordinal0,
                          h5s_marc_mode mode, size_t batch)
{
    h5s_marc_item *items = calloc(batch, sizeof *items);
    h5s_marc_report *reps = calloc(batch, sizeof *reps);
    h5s_marc_buf *rep = calloc(batch, sizeof *rep);
    for (size_t first = 0; first < c->n; first += batch) {
        size_t n = c->n - first < batch ? c->n - first : batch;
        make_items(items, reps, rep, c, first, n, source, ordinal0 + first, mode);
        assert_int_equal(h5s_marc_model_append(w->model, items, n), 0);
    }
    for (size_t i = 0; i < batch; i++)
        h5s_marc_buf_free(&rep[i]);
    free(rep);
    free(reps);
    free(items);
}

static h5s_marc_reader *open_reader(const char *path, int rejected)
{
    h5s_marc_reader_options o = H5S_MARC_READER_OPTIONS_INIT;
    o.rejected = rejected;
    h5s_marc_reader *r = NULL;
    assert_int_equal(h5s_marc_reader_open(&r, path, &o), 0);
    return r;
}

/* Every record of a clean corpus, written in batches from two sources, comes back byte
 * for byte with its index row; iteration, batches and lookups agree. */
static void test_marc_model__roundtrip(void **state)
{
    (void)state;
    corpus c;
    load_corpus(&c, "MMA_Pubs_records_2021_07.mrc");
    assert_int_equal(c.n, 3804);
    char path[2048];
    tmp_path(path, sizeof path, "roundtrip.h5");
    writer w;
    const char *sources[] = {"first.mrc", "second.mrc"};
    open_writer(&w, path, sources, 2, 1000);
    append_corpus(&w, &c, 0, 0, H5S_MARC_STRICT, 500);
    append_corpus(&w, &c, 1, c.n, H5S_MARC_STRICT, 777);
    h5s_marc_model_stats st;
    h5s_marc_model_stats_get(w.model, &st);
    assert_int_equal(st.accepted, 2 * c.n);
    assert_int_equal(st.rejected, 0);
    assert_int_equal(st.accepted_bytes, 2 * c.size);
    close_writer(&w);

    h5s_marc_reader *r = open_reader(path, 0);
    assert_int_equal(h5s_marc_reader_count(r), 2 * c.n);
    assert_int_equal(h5s_marc_reader_writer_state(r), H5S_WRITER_CLOSED);
    assert_int_equal(h5s_marc_reader_nsources(r), 2);
    assert_string_equal(h5s_marc_reader_source(r, 1), "second.mrc");
    assert_null(h5s_marc_reader_source(r, 2));

    /* Iteration: every record, in order, byte-exact. */
    h5s_marc_record rec;
    uint64_t k = 0;
    int rc;
    while ((rc = h5s_marc_reader_next(r, &rec)) == 1) {
        size_t i = (size_t)(k % c.n);
        assert_int_equal(rec.row, k);
        assert_int_equal(rec.len, c.len[i]);
        assert_memory_equal(rec.data, c.bytes + c.off[i], rec.len);
        assert_int_equal(rec.index.ordinal, k);
        assert_int_equal(rec.index.source, k / c.n);
        assert_int_equal(rec.index.source_offset, c.off[i]);
        assert_int_equal(rec.index.length, c.len[i]);
        assert_memory_equal(rec.index.leader, c.bytes + c.off[i], 24);
        char ctl[64];
        size_t cl = h5s_marc_control_number(ctl, sizeof ctl, rec.data, rec.len);
        assert_int_equal(h5s_marc_fixed_len(rec.index.control, H5S_MARC_CONTROL_BYTES), cl);
        assert_memory_equal(rec.index.control, ctl, cl);
        assert_true(rec.index.flags & H5S_MARC_IX_UTF8);
        assert_int_equal(rec.index.n_errors, 0);
        k++;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(k, 2 * c.n);

    /* A batch limited by bytes stops before the limit, but reads at least one record. */
    h5s_marc_batch b;
    assert_int_equal(h5s_marc_reader_read_batch(r, 10, 1000, 5000, &b), 0);
    assert_true(b.n >= 1 && b.offsets[b.n] <= 5000 + c.len[10]);
    assert_int_equal(b.first, 10);
    assert_memory_equal(b.bytes, c.bytes + c.off[10], (size_t)b.offsets[b.n]);
    assert_int_equal(h5s_marc_reader_read_batch(r, 0, 1, 1, &b), 0);
    assert_int_equal(b.n, 1);
    assert_int_equal(h5s_marc_reader_read_batch(r, 2 * c.n, 10, 1 << 20, &b), 0);
    assert_int_equal(b.n, 0);
    assert_int_equal(h5s_marc_reader_read_batch(r, 2 * c.n + 1, 10, 1 << 20, &b), H5S_ERANGE);

    /* Read by row, find by ordinal and by control number (the closed file's index). */
    assert_int_equal(h5s_marc_reader_read(r, 4000, &rec), 0);
    assert_memory_equal(rec.data, c.bytes + c.off[4000 - c.n], rec.len);
    assert_int_equal(h5s_marc_reader_read(r, 2 * c.n, &rec), H5S_ERANGE);
    uint64_t row = 0;
    assert_int_equal(h5s_marc_reader_find_ordinal(r, 5000, &row), 0);
    assert_int_equal(row, 5000);
    assert_int_equal(h5s_marc_reader_find_ordinal(r, 2 * c.n, &row), H5S_ENOTFOUND);
    for (size_t i = 0; i < c.n; i += 97) {
        char ctl[64];
        if (h5s_marc_control_number(ctl, sizeof ctl, c.bytes + c.off[i], c.len[i]) == 0)
            continue; /* a record without 001 */
        assert_int_equal(h5s_marc_reader_find_control(r, ctl, &row), 0);
        /* The same 001 is in both sources: the first row wins. */
        assert_true(row <= i);
        assert_int_equal(h5s_marc_reader_read(r, row, &rec), 0);
        char got[64];
        h5s_marc_control_number(got, sizeof got, rec.data, rec.len);
        assert_string_equal(got, ctl);
        assert_int_equal(h5s_marc_reader_used_control_index(r), 1);
    }
    assert_int_equal(h5s_marc_reader_find_control(r, "no such 001", &row), H5S_ENOTFOUND);
    assert_int_equal(h5s_marc_reader_find_control(r, "", &row), H5S_ENOTFOUND);
    h5s_marc_reader_close(r);

    /* The rejected group exists and is empty. */
    r = open_reader(path, 1);
    assert_int_equal(h5s_marc_reader_count(r), 0);
    assert_int_equal(h5s_marc_reader_next(r, &rec), 0);
    h5s_marc_reader_close(r);
    free_corpus(&c);
}

/* A file with defects: each record lands in one group in input order; rejected records
 * keep their bytes, index row and error; repaired ones keep their input bytes. */
static void test_marc_model__rejected_and_repaired(void **state)
{
    (void)state;
    corpus c;
    load_corpus(&c, "bad_records.mrc");
    assert_int_equal(c.n, 8);
    char path[2048];
    tmp_path(path, sizeof path, "bad.h5");
    writer w;
    const char *sources[] = {"bad_records.mrc"};
    open_writer(&w, path, sources, 1, 1000);
    append_corpus(&w, &c, 0, 0, H5S_MARC_LENIENT, 3);
    close_writer(&w);

    /* What lenient mode decides, record by record. */
    int accepted[8], repaired_n = 0;
    size_t nacc = 0, nrej = 0;
    for (size_t i = 0; i < c.n; i++) {
        h5s_marc_report rep;
        h5s_marc_buf buf = {0};
        accepted[i] = h5s_marc_check(&rep, &buf, c.bytes + c.off[i], c.len[i], H5S_MARC_LENIENT);
        repaired_n += accepted[i] && buf.len;
        nacc += accepted[i] == 1;
        nrej += accepted[i] == 0;
        h5s_marc_buf_free(&buf);
    }
    assert_true(nrej > 0 && repaired_n > 0);

    h5s_marc_reader *acc = open_reader(path, 0);
    h5s_marc_reader *rej = open_reader(path, 1);
    assert_int_equal(h5s_marc_reader_count(acc), nacc);
    assert_int_equal(h5s_marc_reader_count(rej), nrej);
    uint64_t ra = 0, rr = 0;
    for (size_t i = 0; i < c.n; i++) {
        h5s_marc_record rec;
        const unsigned char *in = c.bytes + c.off[i];
        if (accepted[i]) {
            assert_int_equal(h5s_marc_reader_read(acc, ra, &rec), 0);
            assert_int_equal(rec.index.ordinal, i);
            uint64_t row;
            assert_int_equal(h5s_marc_reader_find_ordinal(acc, i, &row), 0);
            assert_int_equal(row, ra);
            h5s_marc_repair_row rp;
            const unsigned char *orig = NULL;
            if (rec.index.flags & H5S_MARC_IX_REPAIRED) {
                assert_int_equal(h5s_marc_reader_repair(acc, ra, &rp, &orig), 0);
                assert_int_equal(rp.row, ra);
                assert_int_equal(rp.ordinal, i);
                assert_true(rp.kind & H5S_MARC_ALTER_REPAIRED);
                assert_true(rp.n_repairs >= 1);
                assert_int_equal(rp.original_length, c.len[i]);
                assert_memory_equal(orig, in, c.len[i]);
                /* The stored record is the repaired one: it validates clean. */
                h5s_marc_report after;
                assert_int_equal(h5s_marc_validate(&after, rec.data, rec.len, 0), 0);
            } else {
                assert_int_equal(h5s_marc_reader_repair(acc, ra, &rp, &orig), H5S_ENOTFOUND);
                assert_int_equal(rec.len, c.len[i]);
                assert_memory_equal(rec.data, in, rec.len);
            }
            ra++;
        } else {
            assert_int_equal(h5s_marc_reader_read(rej, rr, &rec), 0);
            assert_int_equal(rec.len, c.len[i]);
            assert_memory_equal(rec.data, in, rec.len);
            assert_int_equal(rec.index.ordinal, i);
            assert_true(rec.index.flags & H5S_MARC_IX_DEFECTS);
            assert_int_equal(h5s_marc_reader_find_ordinal(acc, i, &ra), H5S_ENOTFOUND);
            h5s_marc_error_row e;
            assert_int_equal(h5s_marc_reader_error(rej, rr, &e), 0);
            assert_int_equal(e.ordinal, i);
            assert_int_equal(e.code, rec.index.error);
            assert_true(e.code > 0 && e.code < H5S_MARC_CODE_COUNT);
            assert_true(e.source_offset >= c.off[i] && e.source_offset < c.off[i] + c.len[i]);
            assert_non_null(strstr(e.message, "bad_records.mrc"));
            assert_non_null(strstr(e.message, h5s_marc_error_name(e.code)));
            rr++;
        }
    }
    h5s_marc_error_row e;
    assert_int_equal(h5s_marc_reader_error(acc, 0, &e), H5S_EINVAL);
    assert_int_equal(h5s_marc_reader_error(rej, rr, &e), H5S_ERANGE);
    h5s_marc_reader_close(acc);
    h5s_marc_reader_close(rej);
    free_corpus(&c);
}

/* A reader that opens the file while it is written sees only committed records, finds
 * control numbers by scanning, and after the close uses the control index. */
static void test_marc_model__live_reader(void **state)
{
    (void)state;
    corpus c;
    load_corpus(&c, "BooksAll.2014.part01-0001.mrc");
    assert_int_equal(c.n, 100);
    char path[2048];
    tmp_path(path, sizeof path, "live.h5");
    writer w;
    const char *sources[] = {"books.mrc"};
    open_writer(&w, path, sources, 1, 0);
    h5s_marc_reader *r = open_reader(path, 0);
    assert_int_equal(h5s_marc_reader_count(r), 0);
    assert_int_equal(h5s_marc_reader_writer_state(r), H5S_WRITER_WRITING);
    h5s_marc_batch b; /* an empty batch first: the buffers must still grow later */
    assert_int_equal(h5s_marc_reader_read_batch(r, 0, 10, 1 << 20, &b), 0);
    assert_int_equal(b.n, 0);

    h5s_marc_item items[100];
    h5s_marc_report reps[100];
    h5s_marc_buf bufs[100];
    memset(bufs, 0, sizeof bufs);
    make_items(items, reps, bufs, &c, 0, 40, 0, 0, H5S_MARC_STRICT);
    assert_int_equal(h5s_marc_model_append(w.model, items, 40), 0);
    /* Not committed yet (no flush policy): the reader sees nothing. */
    uint64_t n = 99;
    assert_int_equal(h5s_marc_reader_refresh(r, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(h5s_file_flush(w.file), 0);
    assert_int_equal(h5s_marc_reader_wait(r, 0, 5000, &n), 0);
    assert_int_equal(n, 40);
    assert_int_equal(h5s_marc_reader_read_batch(r, 0, 100, 1 << 20, &b), 0);
    assert_int_equal(b.n, 40);
    assert_memory_equal(b.bytes, c.bytes, (size_t)b.offsets[40]);
    assert_int_equal(b.index[39].ordinal, 39);
    char ctl[64];
    h5s_marc_control_number(ctl, sizeof ctl, c.bytes + c.off[33], c.len[33]);
    uint64_t row;
    assert_int_equal(h5s_marc_reader_find_control(r, ctl, &row), 0);
    assert_int_equal(row, 33);
    assert_int_equal(h5s_marc_reader_used_control_index(r), 0);
    h5s_marc_control_number(ctl, sizeof ctl, c.bytes + c.off[70], c.len[70]);
    assert_int_equal(h5s_marc_reader_find_control(r, ctl, &row), H5S_ENOTFOUND);

    make_items(items, reps, bufs, &c, 40, 60, 0, 40, H5S_MARC_STRICT);
    assert_int_equal(h5s_marc_model_append(w.model, items, 60), 0);
    assert_int_equal(h5s_file_flush(w.file), 0);
    assert_int_equal(h5s_marc_reader_wait(r, 40, 5000, &n), 0);
    assert_int_equal(n, 100);
    /* The map built by the first scan is extended, not rebuilt. */
    assert_int_equal(h5s_marc_reader_find_control(r, ctl, &row), 0);
    assert_int_equal(row, 70);
    assert_int_equal(h5s_marc_reader_used_control_index(r), 0);
    close_writer(&w);

    assert_int_equal(h5s_marc_reader_wait(r, 100, 5000, &n), 0);
    assert_int_equal(h5s_marc_reader_writer_state(r), H5S_WRITER_CLOSED);
    assert_int_equal(h5s_marc_reader_find_control(r, ctl, &row), 0);
    assert_int_equal(row, 70);
    assert_int_equal(h5s_marc_reader_used_control_index(r), 1);
    h5s_marc_reader_close(r);
    for (int i = 0; i < 100; i++)
        h5s_marc_buf_free(&bufs[i]);
    free_corpus(&c);
}

typedef struct {
    writer *w;
    const corpus *c;
    unsigned passes;
    int rc;
} commit_writer;

/* One record per commit, the corpus `passes` times over (ordinals keep counting). */
static void *commit_main(void *arg)
{
    commit_writer *cw = arg;
    h5s_marc_item item;
    h5s_marc_report rep;
    h5s_marc_buf buf = {0};
    for (size_t k = 0; k < cw->passes * cw->c->n && cw->rc == 0; k++) {
        make_items(&item, &rep, &buf, cw->c, k % cw->c->n, 1, 0, k, H5S_MARC_STRICT);
        cw->rc = h5s_marc_model_append(cw->w->model, &item, 1);
        if (cw->rc == 0)
            cw->rc = h5s_file_flush(cw->w->file);
    }
    h5s_marc_buf_free(&buf);
    return NULL;
}

/* A reader in the writer's own process shares its HDF5 file and sees each HDF5 call of a
 * commit as it returns; polling without pause against one commit per record, it must
 * still only count records whose bytes and index rows are stored. */
static void test_marc_model__same_process_reader(void **state)
{
    (void)state;
    corpus c;
    load_corpus(&c, "BooksAll.2014.part01-0001.mrc");
    char path[2048];
    tmp_path(path, sizeof path, "sameproc_marc.h5");
    writer w;
    const char *sources[] = {"books.mrc"};
    open_writer(&w, path, sources, 1, 0);
    h5s_marc_reader *r = open_reader(path, 0);
    commit_writer cw = {&w, &c, 3, 0};
    const uint64_t total = cw.passes * c.n;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, commit_main, &cw), 0);
    uint64_t next = 0, count = 0, growths = 0;
    while (next < total) {
        if (h5s_marc_reader_refresh(r, &count) != 0)
            fail_msg("refresh after %llu records: %s", (unsigned long long)next,
                     h5s_error_message());
        if (count == next)
            continue;
        h5s_marc_batch b;
        if (h5s_marc_reader_read_batch(r, next, count - next, (size_t)64 << 20, &b) != 0)
            fail_msg("read %llu..%llu: %s", (unsigned long long)next, (unsigned long long)count,
                     h5s_error_message());
        assert_int_equal(b.n, count - next);
        for (uint64_t i = 0; i < b.n; i++) {
            uint64_t k = next + i;
            size_t src = (size_t)(k % c.n);
            if (b.index[i].ordinal != k || b.offsets[i + 1] - b.offsets[i] != c.len[src] ||
                memcmp(b.bytes + b.offsets[i], c.bytes + c.off[src], c.len[src]) != 0)
                fail_msg("record %llu: ordinal %llu, %llu bytes (%zu expected) or other bytes",
                         (unsigned long long)k, (unsigned long long)b.index[i].ordinal,
                         (unsigned long long)(b.offsets[i + 1] - b.offsets[i]), c.len[src]);
        }
        next = count;
        growths++;
    }
    pthread_join(th, NULL);
    assert_int_equal(cw.rc, 0);
    assert_true(growths >= 2); /* it read while the file grew */
    close_writer(&w);
    h5s_marc_reader_close(r);
    free_corpus(&c);
}

/* flush_every holds inside one batch: 100 records appended at once with flush_every 10
 * make 10 commit points, and are committed with no explicit flush. */
static void test_marc_model__flush_every_in_a_batch(void **state)
{
    (void)state;
    corpus c;
    load_corpus(&c, "BooksAll.2014.part01-0001.mrc");
    assert_int_equal(c.n, 100);
    char path[2048];
    tmp_path(path, sizeof path, "every.h5");
    h5s_file_options fo = H5S_FILE_OPTIONS_INIT;
    fo.flush_ms = 0;
    fo.flush_every = 10;
    writer w;
    assert_int_equal(h5s_file_create(&w.file, path, &fo), 0);
    h5s_marc_model_options mo = H5S_MARC_MODEL_OPTIONS_INIT;
    const char *sources[] = {"books.mrc"};
    assert_int_equal(h5s_marc_model_create(&w.model, w.file, sources, 1, &mo), 0);
    assert_int_equal(h5s_file_start_swmr(w.file), 0);
    h5s_marc_reader *r = open_reader(path, 0);
    h5s_marc_item items[100];
    h5s_marc_report reps[100];
    h5s_marc_buf bufs[100];
    memset(bufs, 0, sizeof bufs);
    make_items(items, reps, bufs, &c, 0, 100, 0, 0, H5S_MARC_STRICT);
    uint64_t cuts0 = h5s_file_group_cuts(w.file);
    assert_int_equal(h5s_marc_model_append(w.model, items, 100), 0);
    /* A commit point every 10 records (the writer may merge those it finds queued
     * together into fewer commits). */
    assert_int_equal(h5s_file_group_cuts(w.file) - cuts0, 10);
    uint64_t n = 0;
    assert_int_equal(h5s_marc_reader_wait(r, 99, 5000, &n), 0);
    assert_int_equal(n, 100);
    close_writer(&w);
    h5s_marc_reader_close(r);
    for (int i = 0; i < 100; i++)
        h5s_marc_buf_free(&bufs[i]);
    free_corpus(&c);
}

/* Exports: ISO 2709 is the stored bytes; MARCXML and MARC-in-JSON hold every record. */
static void test_marc_model__export(void **state)
{
    (void)state;
    corpus c;
    load_corpus(&c, "camel.usmarc");
    char path[2048], out[2048];
    tmp_path(path, sizeof path, "export.h5");
    writer w;
    const char *sources[] = {"camel.usmarc"};
    open_writer(&w, path, sources, 1, 1000);
    append_corpus(&w, &c, 0, 0, H5S_MARC_STRICT, 4);
    close_writer(&w);

    tmp_path(out, sizeof out, "export.mrc");
    FILE *f = fopen(out, "w+b");
    h5s_marc_export_options o = H5S_MARC_EXPORT_OPTIONS_INIT;
    h5s_marc_export_stats st;
    assert_int_equal(h5s_marc_export_file(path, f, &o, &st), 0);
    assert_int_equal(st.records, c.n);
    assert_int_equal(st.bytes, c.size);
    rewind(f);
    unsigned char *back = malloc(c.size);
    assert_int_equal(fread(back, 1, c.size, f), c.size);
    assert_memory_equal(back, c.bytes, c.size);
    free(back);
    fclose(f);

    tmp_path(out, sizeof out, "export.json");
    f = fopen(out, "w+b");
    o.format = H5S_MARC_JSON;
    o.threads = 3;
    assert_int_equal(h5s_marc_export_file(path, f, &o, &st), 0);
    assert_int_equal(st.records, c.n);
    fclose(f);
    json_error_t err;
    json_t *doc = json_load_file(out, 0, &err);
    assert_non_null(doc);
    assert_int_equal(json_array_size(doc), c.n);
    const char *leader = json_string_value(json_object_get(json_array_get(doc, 2), "leader"));
    assert_non_null(leader);
    assert_memory_equal(leader + 5, c.bytes + c.off[2] + 5, 4); /* status, type, level */
    json_decref(doc);

    tmp_path(out, sizeof out, "export.xml");
    f = fopen(out, "w+b");
    o.format = H5S_MARC_MARCXML;
    assert_int_equal(h5s_marc_export_file(path, f, &o, &st), 0);
    assert_int_equal(st.records, c.n);
    fclose(f);
    f = fopen(out, "rb");
    char head[128] = "";
    assert_true(fread(head, 1, sizeof head - 1, f) > 0);
    fclose(f);
    assert_non_null(strstr(head, "<collection xmlns=\"http://www.loc.gov/MARC21/slim\">"));
    free_corpus(&c);
}

/* Misuse and missing files get the documented errors. */
static void test_marc_model__errors(void **state)
{
    (void)state;
    char path[2048];
    tmp_path(path, sizeof path, "errors.h5");
    h5s_file *file = NULL;
    h5s_marc_model *m = NULL;
    const char *sources[] = {"a.mrc"};
    assert_int_equal(h5s_file_create(&file, path, NULL), 0);
    assert_int_equal(h5s_marc_model_create(&m, file, sources, 0, NULL), H5S_EINVAL);
    h5s_marc_model_options bad = H5S_MARC_MODEL_OPTIONS_INIT;
    bad.version = 99;
    assert_int_equal(h5s_marc_model_create(&m, file, sources, 1, &bad), H5S_EINVAL);
    assert_int_equal(h5s_marc_model_create(&m, file, sources, 1, NULL), 0);
    h5s_marc_model *m2 = NULL;
    assert_int_equal(h5s_marc_model_create(&m2, file, sources, 1, NULL), H5S_EINVAL);
    assert_int_equal(h5s_file_start_swmr(file), 0);
    assert_int_equal(h5s_marc_model_create(&m2, file, sources, 1, NULL), H5S_ESTATE);

    static const unsigned char rec[] = "00026     2200025   4500\x1e\x1d";
    h5s_marc_item it;
    memset(&it, 0, sizeof it);
    it.data = rec;
    it.len = sizeof rec - 1;
    h5s_marc_model_index_row(&it.index, it.data, it.len, NULL, 0);
    it.index.source = 1; /* out of range */
    assert_int_equal(h5s_marc_model_append(m, &it, 1), H5S_EINVAL);
    assert_non_null(strstr(h5s_error_message(), "source"));
    it.index.source = 0;
    it.rejected = 1;
    it.original = rec; /* a rejected record is stored as read */
    it.original_len = it.len;
    assert_int_equal(h5s_marc_model_append(m, &it, 1), H5S_EINVAL);
    it.original = NULL;
    it.original_len = 0;
    assert_int_equal(h5s_marc_model_append(m, &it, 1), 0);
    assert_int_equal(h5s_marc_model_finish(m), 0);
    assert_int_equal(h5s_marc_model_finish(m), H5S_ESTATE);
    assert_int_equal(h5s_marc_model_append(m, &it, 1), H5S_ESTATE);
    assert_int_equal(h5s_file_close(file), 0);
    h5s_marc_model_stats st;
    h5s_marc_model_stats_get(m, &st); /* after the close: from the model's own copy */
    assert_int_equal(st.rejected, 1);
    assert_int_equal(st.accepted, 0);
    h5s_marc_model_free(m);
    h5s_marc_model_free(NULL);

    /* The lone rejected record has no 001 and an error row. */
    h5s_marc_reader *r = open_reader(path, 1);
    h5s_marc_record rr;
    assert_int_equal(h5s_marc_reader_read(r, 0, &rr), 0);
    assert_int_equal(rr.len, sizeof rec - 1);
    assert_true(rr.index.flags & H5S_MARC_IX_NO_CONTROL);
    h5s_marc_error_row e;
    assert_int_equal(h5s_marc_reader_error(r, 0, &e), 0);
    assert_non_null(strstr(e.message, "a.mrc"));
    h5s_marc_reader_close(r);

    /* No file: timeout 0 says so at once; a file without /marc is not found. */
    h5s_marc_reader *none = NULL;
    char missing[2048];
    tmp_path(missing, sizeof missing, "missing.h5");
    assert_int_equal(h5s_marc_reader_open(&none, missing, NULL), H5S_ETIMEDOUT);
    assert_null(none);
    char plain[2048];
    tmp_path(plain, sizeof plain, "plain.h5");
    hid_t fid = H5Fcreate(plain, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(fid);
    assert_int_equal(h5s_marc_reader_open(&none, plain, NULL), H5S_ENOTFOUND);
    assert_int_equal(h5s_marc_reader_open(NULL, plain, NULL), H5S_EINVAL);
    h5s_marc_reader_close(NULL);
}

/* Index rows: a long 001 is cut and flagged, a record without one is flagged, MARC-8
 * and UTF-8 leaders are told apart, scanner flags carry over. */
static void test_marc_model__index_row(void **state)
{
    (void)state;
    /* leader (24) + directory: 001 entry + 0x1E + field (60 x 'A', 0x1E) + 0x1D */
    unsigned char rec[200];
    memcpy(rec, "00000nam  2200037   4500", 24);
    memcpy(rec + 24, "001006100000", 12);
    rec[36] = 0x1E;
    rec[37] = ' ';
    memset(rec + 38, 'A', 59);
    rec[97] = 0x1E;
    rec[98] = 0x1D;
    size_t len = 99;
    memcpy(rec, "00099", 5);
    h5s_marc_index_row row;
    h5s_marc_model_index_row(&row, rec, len, NULL, H5S_MARC_SPAN_RESYNC);
    assert_true(row.flags & H5S_MARC_IX_CONTROL_CUT);
    assert_true(row.flags & H5S_MARC_IX_MARC8);
    assert_true(row.flags & H5S_MARC_IX_RESYNC);
    assert_false(row.flags & H5S_MARC_IX_NO_CONTROL);
    assert_int_equal(h5s_marc_fixed_len(row.control, H5S_MARC_CONTROL_BYTES), 48);
    assert_int_equal(row.control[0], 'A'); /* the leading space is trimmed */
    assert_memory_equal(row.leader, rec, 24);
    /* The direct 001 path and the formats/ accessor agree. */
    char ctl[64];
    assert_int_equal(h5s_marc_control_number(ctl, sizeof ctl, rec, len), 59);
    assert_memory_equal(row.control, ctl, 48);
    rec[9] = 'a';
    memcpy(rec + 24, "245006100000", 12); /* no 001 any more */
    h5s_marc_model_index_row(&row, rec, len, NULL, 0);
    assert_true(row.flags & H5S_MARC_IX_NO_CONTROL);
    assert_true(row.flags & H5S_MARC_IX_UTF8);
    assert_int_equal(row.control[0], '\0');
}

int main(void)
{
    const char *t = getenv("H5S_TEST_TMP");
    snprintf(tmpdir, sizeof tmpdir, "%s", t ? t : "/tmp");
    const char *d = getenv("H5S_SHARED_DATA");
    snprintf(shared, sizeof shared, "%s", d ? d : "../shared/data");
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_marc_model__roundtrip),
        cmocka_unit_test(test_marc_model__rejected_and_repaired),
        cmocka_unit_test(test_marc_model__live_reader),
        cmocka_unit_test(test_marc_model__same_process_reader),
        cmocka_unit_test(test_marc_model__flush_every_in_a_batch),
        cmocka_unit_test(test_marc_model__export),
        cmocka_unit_test(test_marc_model__errors),
        cmocka_unit_test(test_marc_model__index_row),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
