/* test_frames.c - the frames model through the whole engine: bytes written are the bytes
 * HDF5 reads back, for every dtype, rank, tiling, band size and codec family; producers on
 * many threads; back-pressure; flush policy; writer errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <hdf5.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "h5s_codec.h"
#include "h5s_engine.h"
#include "h5s_format.h"
#include "h5s_reader.h"
#include "h5stream.h"

static char path[512];

static int setup(void **state)
{
    (void)state;
    const char *dir = getenv("H5S_TEST_TMP");
    snprintf(path, sizeof path, "%s/test_frames_%d.h5", dir ? dir : "/tmp", (int)getpid());
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(path);
    return 0;
}

/* The sim:ramp pattern of docs/cli.md: element p of frame i. */
static void ramp(h5s_dtype dtype, uint64_t i, size_t nelem, void *out)
{
    size_t es = h5s_dtype_size(dtype);
    for (size_t p = 0; p < nelem; p++) {
        uint64_t v = i * 7919 + p;
        unsigned char *dst = (unsigned char *)out + p * es;
        if (dtype == H5S_FLOAT32) {
            float x = (float)(v % 65536);
            memcpy(dst, &x, 4);
        } else if (dtype == H5S_FLOAT64) {
            double x = (double)(v % 65536);
            memcpy(dst, &x, 8);
        } else {
            memcpy(dst, &v, es); /* little-endian: the low bytes */
        }
    }
}

static size_t nelem_of(const h5s_frames_options *o)
{
    size_t n = 1;
    for (unsigned i = 0; i < o->rank; i++)
        n *= o->dims[i];
    return n;
}

/* Writes n ramp frames with the given options and checks HDF5 reads them back exactly,
 * with exact extents and frame ids. */
static void round_trip(const h5s_frames_options *o, uint64_t n, int encode_threads)
{
    h5s_file *f;
    h5s_frames *fr;
    h5s_file_options fo = H5S_FILE_OPTIONS_INIT;
    fo.encode_threads = encode_threads;
    assert_int_equal(h5s_file_create(&f, path, &fo), 0);
    assert_int_equal(h5s_frames_create(&fr, f, NULL, o), 0);
    assert_int_equal(h5s_file_start_swmr(f), 0);
    size_t es = h5s_dtype_size(o->dtype), ne = nelem_of(o);
    unsigned char *buf = malloc(ne * es), *back = malloc(ne * es);
    for (uint64_t i = 0; i < n; i++) {
        ramp(o->dtype, i, ne, buf);
        assert_int_equal(h5s_frames_append(fr, buf, ne * es, NULL), 0);
    }
    assert_int_equal(h5s_frames_count(fr), n);
    assert_int_equal(h5s_file_close(f), 0);

    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(fid >= 0);
    hid_t d = H5Dopen2(fid, H5S_FRAMES_DEFAULT_PATH, H5P_DEFAULT);
    hid_t fspace = H5Dget_space(d);
    hsize_t dims[4];
    assert_int_equal(H5Sget_simple_extent_dims(fspace, dims, NULL), (int)o->rank + 1);
    assert_int_equal(dims[0], n);
    hsize_t start[4] = {0}, count[4] = {1};
    for (unsigned a = 0; a < o->rank; a++)
        count[1 + a] = o->dims[a];
    hid_t mspace = H5Screate_simple((int)o->rank + 1, count, NULL);
    for (uint64_t i = 0; i < n; i++) {
        start[0] = i;
        H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL);
        assert_true(H5Dread(d, h5s_format_h5type(o->dtype), mspace, fspace, H5P_DEFAULT, back) >=
                    0);
        ramp(o->dtype, i, ne, buf);
        if (memcmp(buf, back, ne * es) != 0)
            fail_msg("frame %llu differs (%s, rank %u)", (unsigned long long)i,
                     h5s_dtype_name(o->dtype), o->rank);
    }
    H5Sclose(mspace);
    H5Sclose(fspace);
    H5Dclose(d);
    hid_t ids = H5Dopen2(fid, "/entry/instrument/detector/frame_id", H5P_DEFAULT);
    hid_t ispace = H5Dget_space(ids);
    hsize_t nid;
    H5Sget_simple_extent_dims(ispace, &nid, NULL);
    assert_int_equal(nid, n);
    uint64_t *idv = malloc((n ? n : 1) * sizeof *idv);
    assert_true(H5Dread(ids, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, idv) >= 0);
    for (uint64_t i = 0; i < n; i++)
        assert_int_equal(idv[i], i);
    free(idv);
    H5Sclose(ispace);
    H5Dclose(ids);
    H5Fclose(fid);
    free(buf);
    free(back);
}

static void test_frames__every_dtype_round_trips(void **state)
{
    (void)state;
    const h5s_dtype all[] = {H5S_INT8,   H5S_UINT8, H5S_INT16,  H5S_UINT16,  H5S_INT32,
                             H5S_UINT32, H5S_INT64, H5S_UINT64, H5S_FLOAT32, H5S_FLOAT64};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        h5s_frames_options o = H5S_FRAMES_OPTIONS_INIT;
        o.dtype = all[i];
        o.dims[0] = 17;
        o.dims[1] = 23;
        assert_int_equal(h5s_codec_parse(&o.codec, "blosc:lz4:5:shuffle"), 0);
        round_trip(&o, 12, 2);
    }
}

static void test_frames__ranks_tiles_and_bands(void **state)
{
    (void)state;
    struct {
        unsigned rank;
        uint64_t dims[3], tile[3];
        uint32_t k;
        const char *codec;
        uint64_t n;
    } cases[] = {
        {1, {1000}, {0}, 1, "none", 10},
        {1, {1000}, {300}, 8, "deflate:3:shuffle", 21}, /* edge tile, partial band */
        {2, {100, 130}, {32, 50}, 1, "none", 9},        /* tiles, no compression */
        {2, {100, 130}, {32, 50}, 7, "blosc:zstd:3:bitshuffle", 20},
        {2, {64, 64}, {0}, 5, "none", 5},      /* exactly one full band */
        {2, {64, 64}, {0}, 5, "deflate:1", 0}, /* nothing appended */
        {3, {4, 20, 30}, {0}, 1, "blosc:blosclz:9:shuffle", 6},
        {3, {4, 20, 30}, {3, 7, 11}, 3, "blosc:lz4hc:1:noshuffle", 10},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        h5s_frames_options o = H5S_FRAMES_OPTIONS_INIT;
        o.rank = cases[c].rank;
        memcpy(o.dims, cases[c].dims, sizeof o.dims);
        memcpy(o.tile, cases[c].tile, sizeof o.tile);
        o.frames_per_chunk = cases[c].k;
        assert_int_equal(h5s_codec_parse(&o.codec, cases[c].codec), 0);
        round_trip(&o, cases[c].n, 1);
    }
}

static void test_frames__partial_band_is_padded_with_the_fill_value(void **state)
{
    (void)state;
    h5s_frames_options o = H5S_FRAMES_OPTIONS_INIT;
    o.dims[0] = 4;
    o.dims[1] = 4;
    o.frames_per_chunk = 4;
    o.fill_value = 7;
    round_trip(&o, 6, 1);
    /* The last chunk holds frames 4 and 5 and two frames of padding, all 7s. */
    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(fid, H5S_FRAMES_DEFAULT_PATH, H5P_DEFAULT);
    hsize_t off[3] = {4, 0, 0};
    uint16_t chunk[4 * 16];
    uint32_t mask = 99;
    assert_true(H5Dread_chunk(d, H5P_DEFAULT, off, &mask, chunk) >= 0);
    assert_int_equal(mask, 0);
    for (int p = 32; p < 64; p++)
        assert_int_equal(chunk[p], 7);
    assert_int_equal(chunk[0], (uint16_t)(4 * 7919));
    double fill = 0;
    hid_t dcpl = H5Dget_create_plist(d);
    H5Pget_fill_value(dcpl, H5T_NATIVE_DOUBLE, &fill);
    assert_true(fill == 7.0);
    H5Pclose(dcpl);
    H5Dclose(d);
    H5Fclose(fid);
}

typedef struct {
    h5s_frames *fr;
    unsigned thread;
    unsigned n;
    int rc;
} producer;

/* Each frame says which thread sent it and its number there, in every element, and
 * carries frame_id = thread * 1e6 + number. */
static void *produce(void *arg)
{
    producer *p = arg;
    uint32_t frame[32 * 32];
    for (unsigned i = 0; i < p->n && p->rc == 0; i++) {
        for (size_t e = 0; e < 32 * 32; e++)
            frame[e] = p->thread * 1000000u + i;
        h5s_frame_meta m = {1, p->thread * 1000000u + i, 1, (double)i, NULL};
        p->rc = h5s_frames_append(p->fr, frame, sizeof frame, &m);
    }
    return NULL;
}

static void test_frames__many_producer_threads(void **state)
{
    (void)state;
    enum { THREADS = 4, EACH = 300 };
    h5s_file *f;
    h5s_frames *fr;
    h5s_file_options fo = H5S_FILE_OPTIONS_INIT;
    fo.queue_bytes = 1 << 20; /* small: producers will block on the budget */
    fo.flush_every = 50;
    assert_int_equal(h5s_file_create(&f, path, &fo), 0);
    h5s_frames_options o = H5S_FRAMES_OPTIONS_INIT;
    o.dtype = H5S_UINT32;
    o.dims[0] = o.dims[1] = 32;
    o.frames_per_chunk = 3;
    assert_int_equal(h5s_codec_parse(&o.codec, "deflate:1"), 0);
    assert_int_equal(h5s_frames_create(&fr, f, NULL, &o), 0);
    assert_int_equal(h5s_file_start_swmr(f), 0);
    producer p[THREADS];
    pthread_t t[THREADS];
    for (unsigned i = 0; i < THREADS; i++) {
        p[i] = (producer){fr, i + 1, EACH, 0};
        pthread_create(&t[i], NULL, produce, &p[i]);
    }
    for (unsigned i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(p[i].rc, 0);
    }
    h5s_file_stats st;
    assert_int_equal(h5s_file_stats_get(f, &st), 0);
    assert_int_equal(st.appended, THREADS * EACH);
    assert_true(st.queue_peak_bytes <= fo.queue_bytes);
    assert_int_equal(h5s_file_close(f), 0);

    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(fid, H5S_FRAMES_DEFAULT_PATH, H5P_DEFAULT);
    hid_t ids = H5Dopen2(fid, "/entry/instrument/detector/frame_id", H5P_DEFAULT);
    uint32_t *all = malloc((size_t)THREADS * EACH * 32 * 32 * 4);
    uint64_t idv[THREADS * EACH];
    assert_true(H5Dread(d, H5T_NATIVE_UINT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, all) >= 0);
    assert_true(H5Dread(ids, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, idv) >= 0);
    unsigned next[THREADS] = {0};
    for (size_t i = 0; i < THREADS * EACH; i++) {
        /* Every frame is whole (all elements agree with its frame_id) ... */
        for (size_t e = 0; e < 32 * 32; e++)
            assert_int_equal(all[i * 1024 + e], idv[i]);
        /* ... and each thread's frames keep their order. */
        unsigned th = (unsigned)(idv[i] / 1000000u) - 1, num = (unsigned)(idv[i] % 1000000u);
        assert_true(th < THREADS);
        assert_int_equal(num, next[th]);
        next[th]++;
    }
    for (unsigned i = 0; i < THREADS; i++)
        assert_int_equal(next[i], EACH);
    free(all);
    H5Dclose(ids);
    H5Dclose(d);
    H5Fclose(fid);
}

static void test_frames__nonblocking_append_says_eagain_when_full(void **state)
{
    (void)state;
    enum { N = 60 };
    h5s_file *f;
    h5s_frames *fr;
    h5s_file_options fo = H5S_FILE_OPTIONS_INIT;
    fo.queue_bytes = 1 << 20;
    fo.nonblocking = 1;
    fo.encode_threads = 1;
    assert_int_equal(h5s_file_create(&f, path, &fo), 0);
    h5s_frames_options o = H5S_FRAMES_OPTIONS_INIT;
    o.dtype = H5S_UINT32;
    o.dims[0] = o.dims[1] = 512; /* 1 MiB frames: one fills the budget */
    assert_int_equal(h5s_codec_parse(&o.codec, "deflate:9:shuffle"), 0);
    assert_int_equal(h5s_frames_create(&fr, f, NULL, &o), 0);
    assert_int_equal(h5s_file_start_swmr(f), 0);
    size_t ne = 512 * 512;
    uint32_t *buf = malloc(ne * 4);
    unsigned eagain = 0;
    for (uint64_t i = 0; i < N;) {
        ramp(H5S_UINT32, i, ne, buf);
        int rc = h5s_frames_append(fr, buf, ne * 4, NULL);
        if (rc == H5S_EAGAIN) {
            eagain++;
            usleep(1000);
            continue;
        }
        assert_int_equal(rc, 0);
        i++;
    }
    /* deflate-9 of a MiB takes milliseconds, a memcpy microseconds: the queue fills. */
    assert_true(eagain > 0);
    assert_int_equal(h5s_frames_count(fr), N);
    assert_int_equal(h5s_file_close(f), 0);
    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(fid, H5S_FRAMES_DEFAULT_PATH, H5P_DEFAULT);
    hsize_t dims[3];
    hid_t sp = H5Dget_space(d);
    H5Sget_simple_extent_dims(sp, dims, NULL);
    assert_int_equal(dims[0], N); /* no frame lost or doubled by the retries */
    H5Sclose(sp);
    H5Dclose(d);
    H5Fclose(fid);
    free(buf);
}

static uint64_t wait_committed(h5s_file *f, uint64_t want, double seconds)
{
    h5s_file_stats st;
    double end = h5s_mono_now() + seconds;
    do {
        h5s_file_stats_get(f, &st);
        if (st.committed >= want)
            break;
        usleep(10 * 1000);
    } while (h5s_mono_now() < end);
    return st.committed;
}

static h5s_frames *small_stream(h5s_file **f, uint64_t flush_every, unsigned flush_ms)
{
    h5s_frames *fr;
    h5s_file_options fo = H5S_FILE_OPTIONS_INIT;
    fo.flush_every = flush_every;
    fo.flush_ms = flush_ms;
    assert_int_equal(h5s_file_create(f, path, &fo), 0);
    h5s_frames_options o = H5S_FRAMES_OPTIONS_INIT;
    o.dims[0] = o.dims[1] = 16;
    assert_int_equal(h5s_frames_create(&fr, *f, NULL, &o), 0);
    assert_int_equal(h5s_file_start_swmr(*f), 0);
    return fr;
}

static void append_n(h5s_frames *fr, unsigned n)
{
    uint16_t frame[256] = {0};
    for (unsigned i = 0; i < n; i++)
        assert_int_equal(h5s_frames_append(fr, frame, sizeof frame, NULL), 0);
}

static void test_frames__flush_policy(void **state)
{
    (void)state;
    h5s_file *f;
    /* Neither count nor time: nothing commits until asked. */
    h5s_frames *fr = small_stream(&f, 0, 0);
    append_n(fr, 25);
    usleep(300 * 1000);
    assert_int_equal(wait_committed(f, 1, 0.0), 0);
    assert_int_equal(h5s_file_flush(f), 0); /* on demand */
    assert_int_equal(wait_committed(f, 25, 0.0), 25);
    assert_int_equal(h5s_file_close(f), 0);

    /* By count: every 10 frames. */
    fr = small_stream(&f, 10, 0);
    append_n(fr, 25);
    assert_true(wait_committed(f, 20, 5.0) >= 20);
    h5s_file_stats st;
    h5s_file_stats_get(f, &st);
    assert_true(st.commits >= 1);
    assert_int_equal(h5s_file_close(f), 0);

    /* By time: within 100 ms of the last commit. */
    fr = small_stream(&f, 0, 100);
    append_n(fr, 5);
    assert_int_equal(wait_committed(f, 5, 5.0), 5);
    assert_int_equal(h5s_file_close(f), 0);
}

/* Frames the closed file's commit marker covers (the extent of frame_id). */
static hsize_t committed_in_file(void)
{
    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(fid >= 0);
    hid_t ids = H5Dopen2(fid, "/entry/instrument/detector/frame_id", H5P_DEFAULT);
    hid_t sp = H5Dget_space(ids);
    hsize_t n = 0;
    H5Sget_simple_extent_dims(sp, &n, NULL);
    H5Sclose(sp);
    H5Dclose(ids);
    H5Fclose(fid);
    return n;
}

static void test_frames__writer_error_reaches_the_producer(void **state)
{
    (void)state;
    h5s_file *f;
    h5s_frames *fr;
    assert_int_equal(h5s_file_create(&f, path, NULL), 0);
    h5s_frames_options o = H5S_FRAMES_OPTIONS_INIT;
    o.dims[0] = o.dims[1] = 16;
    assert_int_equal(h5s_frames_create(&fr, f, NULL, &o), 0);
    h5s_frames_test_break_after(fr, 10);
    assert_int_equal(h5s_file_start_swmr(f), 0);
    append_n(fr, 10);
    assert_int_equal(h5s_file_flush(f), 0);
    uint16_t frame[256] = {0};
    assert_int_equal(h5s_frames_append(fr, frame, sizeof frame, NULL), 0); /* frame 10 */
    /* The writer fails on frame 10; flush reports it with file, dataset and frame. */
    assert_int_equal(h5s_file_flush(f), H5S_EIO);
    const char *msg = h5s_error_message();
    assert_non_null(strstr(msg, path));
    assert_non_null(strstr(msg, H5S_FRAMES_DEFAULT_PATH));
    assert_non_null(strstr(msg, "frame 10"));
    /* Later appends get the same kept error, and so does close. */
    assert_int_equal(h5s_frames_append(fr, frame, sizeof frame, NULL), H5S_EIO);
    assert_non_null(strstr(h5s_error_message(), "frame 10"));
    assert_int_equal(h5s_file_close(f), H5S_EIO);
    assert_non_null(strstr(h5s_error_message(), "frame 10"));
    /* The ten frames committed before the failure are in the file. */
    assert_int_equal(committed_in_file(), 10);
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

typedef struct {
    h5s_file *f;
    h5s_frames *fr;
    unsigned n;
    int rc;
} commit_writer;

/* Frame k: 16 x 16 uint16 ramp, frame_id 1000 + k, one commit per frame. */
static void *commit_main(void *arg)
{
    commit_writer *w = arg;
    uint16_t frame[256];
    for (unsigned k = 0; k < w->n && w->rc == 0; k++) {
        ramp(H5S_UINT16, k, 256, frame);
        h5s_frame_meta m = {.has_frame_id = 1, .frame_id = 1000 + k};
        w->rc = h5s_frames_append(w->fr, frame, sizeof frame, &m);
        if (w->rc == 0)
            w->rc = h5s_file_flush(w->f);
    }
    return NULL;
}

/* A reader in the writer's own process shares its HDF5 file and sees each HDF5 call of a
 * commit as it returns; polling without pause against one commit per frame, it must still
 * only count frames whose pixels and frame_id are stored. */
static void test_frames__same_process_reader_sees_whole_commits(void **state)
{
    (void)state;
    commit_writer w = {NULL, NULL, 600, 0};
    h5s_file_options fo = H5S_FILE_OPTIONS_INIT;
    fo.flush_ms = 0;
    assert_int_equal(h5s_file_create(&w.f, path, &fo), 0);
    h5s_frames_options o = H5S_FRAMES_OPTIONS_INIT;
    o.dims[0] = o.dims[1] = 16;
    assert_int_equal(h5s_frames_create(&w.fr, w.f, NULL, &o), 0);
    assert_int_equal(h5s_file_start_swmr(w.f), 0);
    h5s_reader *r;
    assert_int_equal(h5s_reader_open(&r, path, NULL, NULL), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, commit_main, &w), 0);
    uint64_t next = 0, count = 0, growths = 0;
    uint16_t got[256], want[256];
    while (next < w.n) {
        if (h5s_reader_refresh(r, &count) != 0)
            fail_msg("refresh after %llu frames: %s", (unsigned long long)next,
                     h5s_error_message());
        growths += count > next;
        for (; next < count; next++) {
            uint64_t id = 0;
            if (h5s_reader_read(r, next, 1, got, sizeof got) != 0 ||
                h5s_reader_read_meta(r, next, 1, &id, NULL) != 0)
                fail_msg("frame %llu: %s", (unsigned long long)next, h5s_error_message());
            ramp(H5S_UINT16, next, 256, want);
            if (id != 1000 + next || memcmp(got, want, sizeof got) != 0)
                fail_msg("frame %llu: frame_id %llu or its pixels are not what was written",
                         (unsigned long long)next, (unsigned long long)id);
        }
    }
    pthread_join(th, NULL);
    assert_int_equal(w.rc, 0);
    assert_true(growths >= 2); /* it read while the file grew */
    assert_int_equal(h5s_file_close(w.f), 0);
    h5s_reader_close(r);
}

static void test_frames__writer_error_commits_what_came_before(void **state)
{
    (void)state;
    h5s_file *f;
    h5s_frames *fr;
    h5s_file_options fo = H5S_FILE_OPTIONS_INIT;
    fo.flush_ms = 1000; /* no commit by time during the test */
    assert_int_equal(h5s_file_create(&f, path, &fo), 0);
    h5s_frames_options o = H5S_FRAMES_OPTIONS_INIT;
    o.dims[0] = o.dims[1] = 16;
    assert_int_equal(h5s_frames_create(&fr, f, NULL, &o), 0);
    h5s_frames_test_break_after(fr, 10);
    assert_int_equal(h5s_file_start_swmr(f), 0);
    /* Frames 0-9 store, frame 10 fails, none committed yet. The failure needs frame 10,
     * so appends 0-10 succeed; later ones may already see the kept error. */
    uint16_t frame[256] = {0};
    for (unsigned i = 0; i < 15; i++) {
        int rc = h5s_frames_append(fr, frame, sizeof frame, NULL);
        if (i <= 10)
            assert_int_equal(rc, 0);
        else
            assert_true(rc == 0 || rc == H5S_EIO);
    }
    assert_int_equal(h5s_file_flush(f), H5S_EIO);
    /* Failed, the writer waits for close without spinning. */
    double cpu0 = cpu_seconds();
    usleep(300 * 1000);
    assert_true(cpu_seconds() - cpu0 < 0.1);
    assert_int_equal(h5s_file_close(f), H5S_EIO);
    assert_non_null(strstr(h5s_error_message(), "frame 10"));

    assert_int_equal(committed_in_file(), 10); /* stored before the failure: committed */
    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(fid >= 0);
    hid_t st = H5Dopen2(fid, H5S_STATUS_DATASET, H5P_DEFAULT);
    hid_t t = h5s_format_status_type();
    h5s_status_row row;
    assert_true(H5Dread(st, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, &row) >= 0);
    assert_int_equal(row.state, H5S_STATE_FAILED); /* final: followers stop */
    assert_int_equal(row.committed, 10);
    H5Tclose(t);
    H5Dclose(st);
    H5Fclose(fid);

    /* The C reader sees a final state: its wait returns at once instead of forever. */
    h5s_reader *r;
    assert_int_equal(h5s_reader_open(&r, path, NULL, NULL), 0);
    assert_int_equal(h5s_reader_writer_state(r), H5S_WRITER_FAILED);
    uint64_t count = 0;
    double t0 = h5s_mono_now();
    assert_int_equal(h5s_reader_wait(r, 10, 5000, &count), 0);
    assert_true(h5s_mono_now() - t0 < 1.0);
    assert_int_equal(count, 10);
    h5s_reader_close(r);
}

static void test_frames__wrong_frame_size_is_refused(void **state)
{
    (void)state;
    h5s_file *f;
    h5s_frames *fr = small_stream(&f, 0, 0);
    uint16_t frame[300] = {0};
    assert_int_equal(h5s_frames_append(fr, frame, 100, NULL), H5S_EINVAL);
    assert_non_null(strstr(h5s_error_message(), "frame 0 has 100 bytes, expected 512"));
    assert_int_equal(h5s_frames_count(fr), 0);
    assert_int_equal(h5s_file_close(f), 0);
}

/* Appends n ramp frames, numbered from first, with one scalar equal to the index. */
static void append_ramp(h5s_frames *fr, uint64_t first, uint64_t n)
{
    h5s_frames_options o;
    assert_int_equal(h5s_frames_info(fr, &o), 0);
    size_t ne = nelem_of(&o), es = h5s_dtype_size(o.dtype);
    unsigned char *buf = malloc(ne * es);
    for (uint64_t i = first; i < first + n; i++) {
        ramp(o.dtype, i, ne, buf);
        double v = (double)i;
        h5s_frame_meta m = {0, 0, 0, 0, &v};
        assert_int_equal(h5s_frames_append(fr, buf, ne * es, &m), 0);
    }
    free(buf);
}

static void test_frames__one_producer_two_banded_datasets_never_deadlock(void **state)
{
    (void)state;
    /* Each dataset's open band (2 x 400 KB) holds budget until it fills; together they
     * exceed the 1 MiB budget, and the thread that fills them is the one appending. */
    alarm(60); /* a regression hangs: let SIGALRM fail the test instead of CI's timeout */
    for (int nonblocking = 0; nonblocking <= 1; nonblocking++) {
        h5s_file *f;
        h5s_frames *a, *b;
        h5s_file_options fo = H5S_FILE_OPTIONS_INIT;
        fo.queue_bytes = 1 << 20;
        fo.nonblocking = nonblocking;
        assert_int_equal(h5s_file_create(&f, path, &fo), 0);
        h5s_frames_options o = H5S_FRAMES_OPTIONS_INIT;
        o.dtype = H5S_UINT8;
        o.dims[0] = o.dims[1] = 640;
        o.frames_per_chunk = 2;
        assert_int_equal(h5s_frames_create(&a, f, "/a/data", &o), 0);
        assert_int_equal(h5s_frames_create(&b, f, "/b/data", &o), 0);
        assert_int_equal(h5s_file_start_swmr(f), 0);
        unsigned char *frame = calloc(640 * 640, 1);
        for (int i = 0; i < 20; i++) {
            h5s_frames *fr = i % 2 ? b : a;
            int rc;
            int tries = 0;
            while ((rc = h5s_frames_append(fr, frame, 640 * 640, NULL)) == H5S_EAGAIN &&
                   ++tries < 2000)
                usleep(1000);
            assert_int_equal(rc, 0);
        }
        free(frame);
        assert_int_equal(h5s_frames_count(a), 10);
        assert_int_equal(h5s_frames_count(b), 10);
        assert_int_equal(h5s_file_close(f), 0);
    }
    alarm(0);
}

static void test_frames__open_append_continues_the_stream(void **state)
{
    (void)state;
    h5s_file *f;
    h5s_frames *fr;
    h5s_frames_options o = H5S_FRAMES_OPTIONS_INIT;
    o.dims[0] = 24;
    o.dims[1] = 40;
    o.tile[0] = 10; /* tiles with a partial edge */
    o.tile[1] = 40;
    assert_int_equal(h5s_codec_parse(&o.codec, "blosc:zstd:3:bitshuffle"), 0);
    o.fill_value = 3;
    assert_int_equal(h5s_file_create(&f, path, NULL), 0);
    assert_int_equal(h5s_frames_create(&fr, f, NULL, &o), 0);
    assert_int_equal(h5s_frames_add_scalar(fr, "index", H5S_UINT32), 0);
    assert_int_equal(h5s_file_start_swmr(f), 0);
    append_ramp(fr, 0, 10);
    assert_int_equal(h5s_file_close(f), 0);

    /* Reopen: the dataset comes back with its layout, codec and per-frame value. */
    assert_int_equal(h5s_file_open_append(&f, path, NULL), 0);
    assert_int_equal(h5s_frames_get(&fr, f, NULL), 0);
    assert_string_equal(h5s_frames_path(fr), H5S_FRAMES_DEFAULT_PATH);
    h5s_frames *alias;
    assert_int_equal(h5s_frames_get(&alias, f, H5S_FRAMES_NXDATA_LINK), 0);
    assert_ptr_equal(alias, fr);
    assert_int_equal(h5s_frames_get(&alias, f, "/nope"), H5S_ENOTFOUND);
    h5s_frames_options back;
    assert_int_equal(h5s_frames_info(fr, &back), 0);
    assert_int_equal(back.dtype, o.dtype);
    assert_int_equal(back.rank, 2);
    assert_int_equal(back.dims[0], 24);
    assert_int_equal(back.tile[0], 10);
    assert_int_equal(back.frames_per_chunk, 1);
    assert_int_equal(back.codec.kind, H5S_CODEC_BLOSC);
    assert_int_equal(back.codec.blosc_compressor, H5S_BLOSC_ZSTD);
    assert_int_equal(back.codec.shuffle, H5S_SHUFFLE_BIT);
    assert_true(back.fill_value == 3.0);
    assert_int_equal(h5s_frames_count(fr), 10);
    /* New per-frame values would leave the first ten frames without one. */
    assert_int_equal(h5s_frames_add_scalar(fr, "late", H5S_UINT32), H5S_ESTATE);
    assert_int_equal(h5s_file_start_swmr(f), 0);
    append_ramp(fr, 10, 7);
    assert_int_equal(h5s_frames_count(fr), 17);
    assert_int_equal(h5s_file_close(f), 0);

    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(fid, H5S_FRAMES_DEFAULT_PATH, H5P_DEFAULT);
    uint16_t *all = malloc(17 * 24 * 40 * 2), *want = malloc(24 * 40 * 2);
    assert_true(H5Dread(d, H5T_NATIVE_UINT16, H5S_ALL, H5S_ALL, H5P_DEFAULT, all) >= 0);
    for (uint64_t i = 0; i < 17; i++) {
        ramp(H5S_UINT16, i, 24 * 40, want);
        if (memcmp(all + i * 24 * 40, want, 24 * 40 * 2) != 0)
            fail_msg("frame %llu differs after append", (unsigned long long)i);
    }
    uint64_t ids[17];
    uint32_t idx[17];
    hid_t idd = H5Dopen2(fid, "/entry/instrument/detector/frame_id", H5P_DEFAULT);
    hid_t sc = H5Dopen2(fid, "/entry/instrument/detector/index", H5P_DEFAULT);
    assert_true(H5Dread(idd, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, ids) >= 0);
    assert_true(H5Dread(sc, H5T_NATIVE_UINT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, idx) >= 0);
    for (unsigned i = 0; i < 17; i++) {
        assert_int_equal(ids[i], i); /* frame_id continues the index */
        assert_int_equal(idx[i], i);
    }
    hid_t st = H5Dopen2(fid, H5S_STATUS_DATASET, H5P_DEFAULT);
    hid_t t = h5s_format_status_type();
    h5s_status_row row;
    assert_true(H5Dread(st, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, &row) >= 0);
    assert_int_equal(row.state, H5S_STATE_CLOSED);
    assert_int_equal(row.committed, 17);
    H5Tclose(t);
    H5Dclose(st);
    H5Dclose(sc);
    H5Dclose(idd);
    H5Dclose(d);
    H5Fclose(fid);
    free(all);
    free(want);
}

static void test_frames__open_append_refuses_a_padded_band(void **state)
{
    (void)state;
    h5s_file *f;
    h5s_frames *fr;
    h5s_frames_options o = H5S_FRAMES_OPTIONS_INIT;
    o.dims[0] = o.dims[1] = 16; /* the frame size append_n writes */
    o.frames_per_chunk = 4;
    assert_int_equal(h5s_file_create(&f, path, NULL), 0);
    assert_int_equal(h5s_frames_create(&fr, f, NULL, &o), 0);
    assert_int_equal(h5s_frames_add_scalar(fr, "index", H5S_UINT32), 0);
    assert_int_equal(h5s_file_start_swmr(f), 0);
    append_ramp(fr, 0, 6); /* the second band holds 2 of 4 frames, padded at close */
    assert_int_equal(h5s_file_close(f), 0);

    assert_int_equal(h5s_file_open_append(&f, path, NULL), 0);
    assert_int_equal(h5s_frames_get(&fr, f, NULL), 0);
    assert_int_equal(h5s_file_start_swmr(f), 0);
    uint16_t frame[256] = {0};
    assert_int_equal(h5s_frames_append(fr, frame, sizeof frame, NULL), H5S_ESTATE);
    assert_non_null(strstr(h5s_error_message(), "holds 2 of 4 frames"));
    assert_int_equal(h5s_file_close(f), 0);

    /* A whole number of bands appends fine. */
    assert_int_equal(h5s_file_create(&f, path, NULL), 0);
    assert_int_equal(h5s_frames_create(&fr, f, NULL, &o), 0);
    assert_int_equal(h5s_file_start_swmr(f), 0);
    append_n(fr, 8);
    assert_int_equal(h5s_file_close(f), 0);
    assert_int_equal(h5s_file_open_append(&f, path, NULL), 0);
    assert_int_equal(h5s_frames_get(&fr, f, NULL), 0);
    assert_int_equal(h5s_file_start_swmr(f), 0);
    append_n(fr, 5);
    assert_int_equal(h5s_file_close(f), 0);
    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(fid, H5S_FRAMES_DEFAULT_PATH, H5P_DEFAULT);
    hid_t sp = H5Dget_space(d);
    hsize_t dims[3];
    H5Sget_simple_extent_dims(sp, dims, NULL);
    assert_int_equal(dims[0], 13);
    H5Sclose(sp);
    H5Dclose(d);
    H5Fclose(fid);
}

static void test_frames__open_append_refuses_foreign_files(void **state)
{
    (void)state;
    h5s_file *f = NULL;
    assert_int_equal(h5s_file_open_append(&f, "/nonexistent/x.h5", NULL), H5S_ENOTFOUND);
    /* A plain HDF5 file without h5stream's root attributes. */
    hid_t fid = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(fid);
    assert_int_equal(h5s_file_open_append(&f, path, NULL), H5S_EFORMAT);
    assert_non_null(strstr(h5s_error_message(), "not an h5stream file"));
    assert_null(f);
    /* Not HDF5 at all. */
    FILE *junk = fopen(path, "wb");
    fputs("not hdf5", junk);
    fclose(junk);
    assert_int_equal(h5s_file_open_append(&f, path, NULL), H5S_EIO);
    assert_null(f);
}

int main(void)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_frames__every_dtype_round_trips),
        T(test_frames__ranks_tiles_and_bands),
        T(test_frames__partial_band_is_padded_with_the_fill_value),
        T(test_frames__many_producer_threads),
        T(test_frames__nonblocking_append_says_eagain_when_full),
        T(test_frames__flush_policy),
        T(test_frames__writer_error_reaches_the_producer),
        T(test_frames__writer_error_commits_what_came_before),
        T(test_frames__same_process_reader_sees_whole_commits),
        T(test_frames__wrong_frame_size_is_refused),
        T(test_frames__one_producer_two_banded_datasets_never_deadlock),
        T(test_frames__open_append_continues_the_stream),
        T(test_frames__open_append_refuses_a_padded_band),
        T(test_frames__open_append_refuses_foreign_files),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
