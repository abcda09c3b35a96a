/*
 * test_column.c - groups of columns (h5stream/h5s_column.c): ragged items appended from
 * many threads land whole and in one order in every column, across chunk boundaries,
 * partial-chunk cuts and codecs; the marker never covers rows that are not there; calls
 * run on the writer thread; misuse gets the documented errors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <hdf5.h>
#include <pthread.h>

#include "h5s_codec.h"
#include "h5s_column.h"
#include "h5s_format.h"
#include "test_bytes_file.h"

#define THREADS 4
#define ITEMS_PER_THREAD 3000

static char tmpdir[1024];

static void tmp_path(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", tmpdir, name);
}

typedef struct {
    h5s_file *file;
    h5s_group *group;
    h5s_column *offsets, *points, *tags;
    uint64_t end; /* producer side, under the group lock: rows of points so far */
} ragged;

/* One row of the "tags" table: who made the item. */
typedef struct {
    uint32_t thread;
    uint32_t index;
    uint64_t first_point;
} tag_row;

static hid_t tag_type(void)
{
    hid_t t = H5Tcreate(H5T_COMPOUND, sizeof(tag_row));
    H5Tinsert(t, "thread", offsetof(tag_row, thread), H5T_STD_U32LE);
    H5Tinsert(t, "index", offsetof(tag_row, index), H5T_STD_U32LE);
    H5Tinsert(t, "first_point", offsetof(tag_row, first_point), H5T_STD_U64LE);
    return t;
}

static void make_ragged(ragged *r, const char *path, const h5s_codec *codec, uint64_t chunk_rows,
                        uint64_t flush_every)
{
    memset(r, 0, sizeof *r);
    h5s_file_options fo = H5S_FILE_OPTIONS_INIT;
    fo.queue_bytes = (size_t)2 << 20;
    fo.flush_every = flush_every;
    fo.flush_ms = 50;
    assert_int_equal(h5s_file_create(&r->file, path, &fo), 0);
    assert_int_equal(h5s_file_add_model(r->file, "test"), 0);
    assert_int_equal(h5s_group_create(&r->group, r->file, "/rag"), 0);
    h5s_column_options o = H5S_COLUMN_OPTIONS_INIT;
    o.type = H5T_STD_U64LE;
    o.chunk_rows = chunk_rows;
    o.marker = 1;
    o.codec = *codec;
    assert_int_equal(h5s_column_create(&r->offsets, r->group, "/rag/offsets", &o), 0);
    o.marker = 0;
    o.type = H5T_IEEE_F32LE;
    o.ncols = 3;
    assert_int_equal(h5s_column_create(&r->points, r->group, "/rag/points", &o), 0);
    o.ncols = 0;
    o.type = tag_type();
    assert_int_equal(h5s_column_create(&r->tags, r->group, "/rag/tags", &o), 0);
    H5Tclose(o.type);
    uint64_t zero = 0;
    assert_int_equal(h5s_column_preset(r->offsets, &zero, 1), 0);
    assert_int_equal(h5s_column_preset(r->offsets, &zero, 1), H5S_EINVAL);
    assert_int_equal(h5s_file_start_swmr(r->file), 0);
}

typedef struct {
    ragged *r;
    uint32_t thread;
    int rc;
} producer;

/* Item i of thread t: (i * 7 + t) % 13 points, point k = (t, i, k). */
static uint64_t item_points(uint32_t t, uint32_t i)
{
    return ((uint64_t)i * 7 + t) % 13;
}

static void *produce(void *arg)
{
    producer *p = arg;
    ragged *r = p->r;
    float pts[13 * 3];
    for (uint32_t i = 0; i < ITEMS_PER_THREAD && p->rc == 0; i++) {
        uint64_t n = item_points(p->thread, i);
        for (uint64_t k = 0; k < n; k++) {
            pts[k * 3] = (float)p->thread;
            pts[k * 3 + 1] = (float)i;
            pts[k * 3 + 2] = (float)k;
        }
        h5s_group_lock(r->group);
        tag_row tag = {p->thread, i, r->end};
        r->end += n;
        p->rc = h5s_column_append(r->points, pts, n);
        if (p->rc == 0)
            p->rc = h5s_column_append(r->tags, &tag, 1);
        if (p->rc == 0)
            p->rc = h5s_column_append(r->offsets, &r->end, 1);
        if (p->rc == 0)
            p->rc = h5s_group_item_done(r->group, 1);
        h5s_group_unlock(r->group);
    }
    return NULL;
}

static void run_producers(ragged *r)
{
    pthread_t th[THREADS];
    producer p[THREADS];
    for (uint32_t t = 0; t < THREADS; t++) {
        p[t] = (producer){r, t, 0};
        assert_int_equal(pthread_create(&th[t], NULL, produce, &p[t]), 0);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(p[t].rc, 0);
    }
}

static uint64_t extent_of(hid_t fid, const char *path)
{
    hid_t d = H5Dopen2(fid, path, H5P_DEFAULT);
    assert_true(d >= 0);
    hid_t s = H5Dget_space(d);
    hsize_t dims[2];
    H5Sget_simple_extent_dims(s, dims, NULL);
    H5Sclose(s);
    H5Dclose(d);
    return dims[0];
}

static void *read_all(hid_t fid, const char *path, hid_t memtype, size_t bytes)
{
    void *buf = malloc(bytes ? bytes : 1);
    hid_t d = H5Dopen2(fid, path, H5P_DEFAULT);
    assert_true(d >= 0);
    assert_true(H5Dread(d, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    H5Dclose(d);
    return buf;
}

/* Every item is whole: its tag names who made it, its points are that item's, in order. */
static void check_file(const char *path, uint64_t items)
{
    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(fid >= 0);
    assert_int_equal(extent_of(fid, "/rag/offsets"), items + 1);
    assert_true(extent_of(fid, "/rag/tags") >= items);
    uint64_t *off = read_all(fid, "/rag/offsets", H5T_NATIVE_UINT64, (items + 1) * 8);
    uint64_t npts = extent_of(fid, "/rag/points");
    assert_true(npts >= off[items]);
    float *pts = read_all(fid, "/rag/points", H5T_NATIVE_FLOAT, npts * 12);
    hid_t tt = tag_type();
    tag_row *tags = read_all(fid, "/rag/tags", tt, extent_of(fid, "/rag/tags") * sizeof(tag_row));
    H5Tclose(tt);
    assert_int_equal(off[0], 0);
    uint64_t seen[THREADS] = {0};
    for (uint64_t i = 0; i < items; i++) {
        const tag_row *t = &tags[i];
        assert_true(t->thread < THREADS);
        /* Each thread's items come in its own order. */
        assert_int_equal(t->index, seen[t->thread]);
        seen[t->thread]++;
        assert_int_equal(t->first_point, off[i]);
        uint64_t n = off[i + 1] - off[i];
        assert_int_equal(n, item_points(t->thread, t->index));
        for (uint64_t k = 0; k < n; k++) {
            const float *p = &pts[(off[i] + k) * 3];
            assert_true(p[0] == (float)t->thread && p[1] == (float)t->index && p[2] == (float)k);
        }
    }
    free(off);
    free(pts);
    free(tags);
    H5Fclose(fid);
}

static void run_case(const char *name, const char *codec_spec, uint64_t chunk_rows,
                     uint64_t flush_every)
{
    char path[1200];
    tmp_path(path, sizeof path, name);
    h5s_codec codec;
    assert_int_equal(h5s_codec_parse(&codec, codec_spec), 0);
    ragged r;
    make_ragged(&r, path, &codec, chunk_rows, flush_every);
    run_producers(&r);
    h5s_file_stats st;
    assert_int_equal(h5s_file_stats_get(r.file, &st), 0);
    assert_int_equal(st.appended, THREADS * ITEMS_PER_THREAD);
    assert_int_equal(h5s_file_close(r.file), 0);
    check_file(path, THREADS * ITEMS_PER_THREAD);
}

static void test_column__threads_raw_small_chunks(void **state)
{
    (void)state;
    run_case("raw.h5", "none", 100, 0);
}

static void test_column__threads_deflate_every_item(void **state)
{
    (void)state;
    run_case("deflate.h5", "deflate:4", 1000, 1);
}

static void test_column__threads_blosc_default_chunks(void **state)
{
    (void)state;
    run_case("blosc.h5", "blosc:lz4:5:shuffle", 0, 500);
}

/* While the writer streams, a SWMR reader sees a marker that never points past the
 * points on disk, and every committed item is whole. */
static void test_column__live_reader_never_sees_torn_items(void **state)
{
    (void)state;
    char path[1200];
    tmp_path(path, sizeof path, "live.h5");
    h5s_codec codec = H5S_CODEC_INIT;
    ragged r;
    make_ragged(&r, path, &codec, 64, 97);
    pthread_t th;
    producer p = {&r, 0, 0};
    assert_int_equal(pthread_create(&th, NULL, produce, &p), 0);
    hid_t fapl = h5s_format_swmr_read_fapl();
    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, fapl);
    H5Pclose(fapl);
    assert_true(fid >= 0);
    hid_t doff = H5Dopen2(fid, "/rag/offsets", H5P_DEFAULT);
    hid_t dpts = H5Dopen2(fid, "/rag/points", H5P_DEFAULT);
    uint64_t last = 0;
    int polls = 0;
    for (int done = 0; !done; polls++) {
        done = p.rc != 0 || h5s_group_committed(r.group) >= ITEMS_PER_THREAD;
        assert_true(H5Drefresh(doff) >= 0);
        assert_true(H5Drefresh(dpts) >= 0);
        hid_t s = H5Dget_space(doff);
        hsize_t n;
        H5Sget_simple_extent_dims(s, &n, NULL);
        H5Sclose(s);
        assert_true(n >= last);
        last = n;
        if (n < 2)
            continue;
        uint64_t end;
        hsize_t at = n - 1, one = 1;
        s = H5Dget_space(doff);
        H5Sselect_hyperslab(s, H5S_SELECT_SET, &at, NULL, &one, NULL);
        hid_t m = H5Screate_simple(1, &one, NULL);
        assert_true(H5Dread(doff, H5T_NATIVE_UINT64, m, s, H5P_DEFAULT, &end) >= 0);
        H5Sclose(m);
        H5Sclose(s);
        s = H5Dget_space(dpts);
        hsize_t pdims[2];
        H5Sget_simple_extent_dims(s, pdims, NULL);
        H5Sclose(s);
        assert_true(pdims[0] >= end); /* the marker never runs ahead of the payload */
    }
    pthread_join(th, NULL);
    assert_int_equal(p.rc, 0);
    H5Dclose(doff);
    H5Dclose(dpts);
    H5Fclose(fid);
    assert_int_equal(h5s_file_close(r.file), 0);
    assert_true(polls > 1);
    check_file(path, ITEMS_PER_THREAD);
}

/* With no flush policy at all, the marker chunks the writer holds for the next commit are
 * still bounded: past the cap the writer asks producers to cut, so commits happen. */
static void test_column__held_marker_chunks_force_cuts(void **state)
{
    (void)state;
    char path[1200];
    tmp_path(path, sizeof path, "held.h5");
    h5s_file_options fo = H5S_FILE_OPTIONS_INIT;
    fo.queue_bytes = (size_t)1 << 20;
    fo.flush_every = 0;
    fo.flush_ms = 0;
    h5s_file *f;
    assert_int_equal(h5s_file_create(&f, path, &fo), 0);
    h5s_group *g;
    assert_int_equal(h5s_group_create(&g, f, "/g"), 0);
    h5s_column_options o = H5S_COLUMN_OPTIONS_INIT;
    o.type = H5T_STD_U64LE;
    o.marker = 1;
    o.chunk_rows = 1024; /* 8 KiB chunks: the cap is 4 chunks (1 MiB / 16 is less) */
    h5s_column *c;
    assert_int_equal(h5s_column_create(&c, g, "/g/index", &o), 0);
    assert_int_equal(h5s_file_start_swmr(f), 0);
    for (uint64_t i = 0; i < 2000000; i++) {
        h5s_group_lock(g);
        assert_int_equal(h5s_column_append(c, &i, 1), 0);
        assert_int_equal(h5s_group_item_done(g, 1), 0);
        h5s_group_unlock(g);
    }
    h5s_file_stats st;
    assert_int_equal(h5s_file_stats_get(f, &st), 0);
    /* 2,000,000 rows are 1,953 chunks, 15 times the 128 chunks the budget lets a producer
     * run ahead of the writer: the writer holds more than the cap long before the producer
     * ends, so cuts, and commits, happen while it streams (without the cap: only at close). */
    assert_true(st.commits >= 5);
    assert_true(h5s_group_committed(g) > 0);
    assert_int_equal(h5s_file_close(f), 0);
    hid_t rf = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_int_equal(extent_of(rf, "/g/index"), 2000000);
    uint64_t *v = read_all(rf, "/g/index", H5T_NATIVE_UINT64, 2000000 * 8);
    for (uint64_t i = 0; i < 2000000; i++)
        assert_int_equal(v[i], i);
    free(v);
    H5Fclose(rf);
}

static int write_attr_call(hid_t fid, void *payload)
{
    hid_t d = H5Dopen2(fid, "/fixed", H5P_DEFAULT);
    if (d < 0)
        return -1;
    herr_t st = H5Dwrite(d, H5T_NATIVE_INT, H5S_ALL, H5S_ALL, H5P_DEFAULT, payload);
    H5Dclose(d);
    return st < 0 ? H5S_EIO : 0;
}

static int calls_freed;

static void count_free(void *payload)
{
    free(payload);
    calls_freed++;
}

static void test_column__call_runs_on_writer_and_misuse_errors(void **state)
{
    (void)state;
    char path[1200];
    tmp_path(path, sizeof path, "call.h5");
    h5s_file *f;
    assert_int_equal(h5s_file_create(&f, path, NULL), 0);
    h5s_group *g;
    assert_int_equal(h5s_group_create(&g, f, "/g"), 0);
    h5s_column_options o = H5S_COLUMN_OPTIONS_INIT;
    o.type = H5T_STD_U64LE;
    o.marker = 1;
    h5s_column *c, *c2;
    assert_int_equal(h5s_column_create(&c, g, "/g/marker", &o), 0);
    /* A second marker, a taken path, a relative path. */
    assert_int_equal(h5s_column_create(&c2, g, "/g/marker2", &o), H5S_EINVAL);
    o.marker = 0;
    assert_int_equal(h5s_column_create(&c2, g, "/g/marker", &o), H5S_EINVAL);
    assert_int_equal(h5s_column_create(&c2, g, "g/x", &o), H5S_EINVAL);
    uint64_t v = 1;
    h5s_group_lock(g);
    assert_int_equal(h5s_column_append(c, &v, 1), H5S_ESTATE);
    h5s_group_unlock(g);
    hid_t fid = h5s_file_hid(f);
    hsize_t two = 2;
    hid_t sp = H5Screate_simple(1, &two, NULL);
    hid_t d = H5Dcreate2(fid, "/fixed", H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(d >= 0);
    H5Dclose(d);
    H5Sclose(sp);
    assert_int_equal(h5s_file_start_swmr(f), 0);
    assert_int_equal(h5s_file_hid(f), H5I_INVALID_HID);
    assert_int_equal(h5s_group_create(&g, f, "/late"), H5S_ESTATE);
    int *vals = malloc(2 * sizeof *vals);
    vals[0] = 41;
    vals[1] = 42;
    assert_int_equal(h5s_file_call(f, write_attr_call, vals, count_free, 8), 0);
    assert_int_equal(h5s_file_flush(f), 0);
    assert_int_equal(calls_freed, 1);
    assert_int_equal(h5s_file_close(f), 0);
    hid_t rf = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    int back[2] = {0, 0};
    d = H5Dopen2(rf, "/fixed", H5P_DEFAULT);
    assert_true(H5Dread(d, H5T_NATIVE_INT, H5S_ALL, H5S_ALL, H5P_DEFAULT, back) >= 0);
    H5Dclose(d);
    assert_int_equal(back[0], 41);
    assert_int_equal(back[1], 42);
    /* The models attribute names the registered model... none here but the file has one. */
    assert_int_equal(extent_of(rf, "/g/marker"), 0);
    H5Fclose(rf);
}

/* What the lender is given back: every range must lie in the lent buffer. */
typedef struct {
    const unsigned char *base;
    size_t size;
    pthread_mutex_t mu;
    uint64_t calls, bytes, whole_chunks;
    int outside;
} lender;

static void lent_back(void *ctx, const void *bytes, size_t len)
{
    lender *l = ctx;
    const unsigned char *p = bytes;
    pthread_mutex_lock(&l->mu);
    l->calls++;
    l->bytes += len;
    if (len == 1000)
        l->whole_chunks++;
    if (p < l->base || p + len > l->base + l->size)
        l->outside = 1;
    pthread_mutex_unlock(&l->mu);
}

/*
 * Lent rows (h5s_column_append_lent): whole chunks are stored from the caller's buffer and
 * handed back once each; calls that continue each other keep filling one lent chunk; a
 * plain append, rows that do not continue, and a cut copy what is lent so far. Every byte
 * reads back in order, for codec none and for deflate, and by the time the file is closed
 * every lent byte has been given back exactly once.
 */
static void lent_case(const char *name, const char *codec_spec)
{
    char path[1200];
    tmp_path(path, sizeof path, name);
    h5s_codec codec;
    assert_int_equal(h5s_codec_parse(&codec, codec_spec), 0);
    h5s_file_options fo = H5S_FILE_OPTIONS_INIT;
    fo.queue_bytes = (size_t)1 << 20;
    fo.flush_ms = 0;
    bytes_file bf;
    bytes_file_open(&bf, path, &fo, "/lent", 1000, &codec);
    h5s_file *f = bf.f;
    h5s_group *g = bf.g;
    h5s_column *marker = bf.marker, *bytes = bf.bytes;

    enum { SRC = 20000 };
    unsigned char *src = malloc(SRC), other[64], *expect = malloc(2 * SRC);
    assert_non_null(src);
    assert_non_null(expect);
    for (size_t i = 0; i < SRC; i++)
        src[i] = (unsigned char)(i * 31 + 7);
    for (size_t i = 0; i < sizeof other; i++)
        other[i] = (unsigned char)(0xA0 + i);
    lender l = {src, SRC, PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0};
    size_t n = 0;
#define LEND(off, len)                                                                             \
    do {                                                                                           \
        assert_int_equal(h5s_column_append_lent(bytes, src + (off), (len), lent_back, &l), 0);     \
        memcpy(expect + n, src + (off), (len));                                                    \
        n += (len);                                                                                \
    } while (0)
    uint64_t items = 0;
    h5s_group_lock(g);
    LEND(0, 2500);   /* chunks 0 and 1 whole, 500 rows of chunk 2 lent */
    LEND(2500, 700); /* continues: chunk 2 whole, 200 rows of chunk 3 */
    assert_int_equal(h5s_column_append(bytes, other, 50), 0); /* copies chunk 3 so far */
    memcpy(expect + n, other, 50);
    n += 50;
    LEND(3200, 750);  /* chunk 3 completed by copy; nothing left over */
    LEND(9000, 1000); /* a whole chunk that does not continue the previous rows */
    LEND(12000, 1234);
    items = 6;
    assert_int_equal(h5s_column_append(marker, &items, 1), 0);
    assert_int_equal(h5s_group_item_done(g, 1), 0);
    h5s_group_unlock(g);
    assert_int_equal(h5s_file_flush(f), 0); /* a cut with 234 lent rows open: copied */
    h5s_group_lock(g);
    LEND(13234, 766); /* does not continue the copy in memory: copied up to the boundary */
    LEND(14000, 3500);
    items = 8;
    assert_int_equal(h5s_column_append(marker, &items, 1), 0);
    assert_int_equal(h5s_group_item_done(g, 1), 0);
    h5s_group_unlock(g);
#undef LEND
    assert_int_equal(h5s_file_close(f), 0);

    /* Given back, each once and inside the buffer: the 8 chunks stored straight from src
     * (rows 0-2999, 4000-5999 and 7000-9999) and the lent parts copied by the plain append
     * (200 rows), the cut (234) and the close (500). Rows appended while a copied chunk was
     * open (750 and 766) were never lent. */
    assert_int_equal(l.outside, 0);
    assert_int_equal(l.whole_chunks, 8);
    assert_int_equal(l.calls, 11);
    assert_int_equal(l.bytes, 8 * 1000 + 200 + 234 + 500);

    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(fid >= 0);
    assert_int_equal(extent_of(fid, "/lent/bytes"), n);
    hid_t d = H5Dopen2(fid, "/lent/bytes", H5P_DEFAULT);
    unsigned char *back = malloc(n);
    assert_non_null(back);
    assert_true(H5Dread(d, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, back) >= 0);
    assert_memory_equal(back, expect, n);
    H5Dclose(d);
    H5Fclose(fid);
    free(back);
    free(expect);
    free(src);
}

static void test_column__lent_rows_none(void **state)
{
    (void)state;
    lent_case("lent_none.h5", "none");
}

static void test_column__lent_rows_deflate(void **state)
{
    (void)state;
    lent_case("lent_deflate.h5", "deflate:1");
}

int main(void)
{
    const char *t = getenv("H5S_TEST_TMP");
    snprintf(tmpdir, sizeof tmpdir, "%s", t ? t : "/tmp");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_column__threads_raw_small_chunks),
        cmocka_unit_test(test_column__threads_deflate_every_item),
        cmocka_unit_test(test_column__threads_blosc_default_chunks),
        cmocka_unit_test(test_column__live_reader_never_sees_torn_items),
        cmocka_unit_test(test_column__call_runs_on_writer_and_misuse_errors),
        cmocka_unit_test(test_column__held_marker_chunks_force_cuts),
        cmocka_unit_test(test_column__lent_rows_none),
        cmocka_unit_test(test_column__lent_rows_deflate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
