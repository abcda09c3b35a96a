/*
 * test_tracts_reader.c - the SWMR reader of /tracts and the exporter (h5s_tracts_reader.h):
 * files written through the tracts model, read back by index range (points, dps, dpv),
 * followed live while a writer thread pushes, exported to TRX and TCK and read back with the
 * formats/ readers, shards merged with rebased groups and the dpg rule.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "h5s_tractio.h"
#include "h5s_tracts.h"
#include "h5s_tracts_reader.h"
#include "h5stream.h"

static char tmpdir[1024];

static const char *tmp_path(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", tmpdir, name);
    return buf;
}

/* Streamline i has 1 + i % 7 points; point j is (i, j, i + j / 4) mm. */
static uint64_t npoints_of(uint64_t i)
{
    return 1 + i % 7;
}

static void points_of(uint64_t i, float *p)
{
    for (uint64_t j = 0; j < npoints_of(i); j++) {
        p[j * 3] = (float)i;
        p[j * 3 + 1] = (float)j;
        p[j * 3 + 2] = (float)i + (float)j / 4.0f;
    }
}

typedef struct {
    h5s_tracts *t;
    uint64_t first, n;
    int rc;
} pusher;

/* dps "w" (float32, K=1) = 2 i; dpv "c" (uint16, K=2) = (i, j). */
static int push_range(h5s_tracts *t, uint64_t first, uint64_t n)
{
    float pts[7 * 3];
    uint16_t dpv[7 * 2];
    for (uint64_t i = first; i < first + n; i++) {
        points_of(i, pts);
        float w = 2.0f * (float)i;
        for (uint64_t j = 0; j < npoints_of(i); j++) {
            dpv[j * 2] = (uint16_t)i;
            dpv[j * 2 + 1] = (uint16_t)j;
        }
        const void *dps_p[1] = {&w}, *dpv_p[1] = {dpv};
        int rc = h5s_tracts_push(t, pts, npoints_of(i), dps_p, dpv_p, NULL);
        if (rc)
            return rc;
    }
    return 0;
}

/* A file of n streamlines with group "odd" (odd indices) and dpg odd/color = color. */
static void write_file(const char *path, uint64_t n, const uint8_t color[3], h5s_dtype pdtype)
{
    h5s_file_options fo = H5S_FILE_OPTIONS_INIT;
    fo.queue_bytes = (size_t)4 << 20;
    h5s_tracts_options to = H5S_TRACTS_OPTIONS_INIT;
    to.positions_dtype = pdtype;
    to.dimensions[0] = 10;
    to.voxel_to_rasmm[0] = 2.0;
    h5s_file *f = NULL;
    h5s_tracts *t = NULL;
    assert_int_equal(h5s_file_create(&f, path, &fo), 0);
    assert_int_equal(h5s_tracts_create(&t, f, &to), 0);
    assert_int_equal(h5s_tracts_add_dps(t, "w", H5S_FLOAT32, 1, NULL), 0);
    assert_int_equal(h5s_tracts_add_dpv(t, "c", H5S_UINT16, 2, NULL), 0);
    assert_int_equal(h5s_tracts_add_group(t, "odd", NULL), 0);
    assert_int_equal(h5s_tracts_add_dpg(t, "odd", "color", H5S_UINT8, 3), 0);
    assert_int_equal(h5s_file_start_swmr(f), 0);
    assert_int_equal(h5s_tracts_set_dpg(t, "odd", "color", color), 0);
    assert_int_equal(push_range(t, 0, n), 0);
    for (uint32_t i = 1; i < n; i += 2)
        assert_int_equal(h5s_tracts_group_add(t, 0, &i, 1), 0);
    assert_int_equal(h5s_file_close(f), 0);
}

static void check_batch(const h5s_tracts_batch *b, int with_fields)
{
    float want[7 * 3];
    for (uint64_t k = 0; k < b->count; k++) {
        uint64_t i = b->first + k, p0 = b->offsets[k];
        assert_int_equal(b->offsets[k + 1] - p0, npoints_of(i));
        points_of(i, want);
        for (uint64_t j = 0; j < npoints_of(i) * 3; j++)
            assert_true(fabsf(b->points[p0 * 3 + j] - want[j]) < 1e-5f);
        if (!with_fields)
            continue;
        assert_true(b->dps[k] == 2.0 * (double)i);
        for (uint64_t j = 0; j < npoints_of(i); j++) {
            assert_true(b->dpv[(p0 + j) * 2] == (double)i);
            assert_true(b->dpv[(p0 + j) * 2 + 1] == (double)j);
        }
    }
}

static void test_tracts_reader__closed_file_by_range(void **state)
{
    (void)state;
    char path[1200];
    const uint8_t color[3] = {1, 2, 3};
    write_file(tmp_path(path, sizeof path, "closed.h5"), 1000, color, H5S_FLOAT32);
    h5s_tracts_reader *r = NULL;
    assert_int_equal(h5s_tracts_reader_open(&r, path, NULL), 0);
    const h5s_tract_header *h = h5s_tracts_reader_header(r);
    assert_int_equal(h5s_tracts_reader_count(r), 1000);
    assert_int_equal(h5s_tracts_reader_writer_state(r), H5S_WRITER_CLOSED);
    assert_int_equal(h->nb_streamlines, 1000);
    uint64_t nv = 0;
    for (uint64_t i = 0; i < 1000; i++)
        nv += npoints_of(i);
    assert_int_equal(h->nb_vertices, nv);
    assert_true(h->voxel_to_rasmm[0][0] == 2.0 && h->dimensions[0] == 10);
    assert_int_equal(h->n_dps, 1);
    assert_string_equal(h->dps[0].name, "w");
    assert_int_equal(h->dpv[0].ncols, 2);
    assert_int_equal(h->dpv[0].dtype, H5S_UINT16);
    assert_int_equal(h->n_groups, 1);
    assert_int_equal(h->groups[0].count, 500);
    assert_int_equal(h->n_dpg, 1);
    assert_memory_equal(h->dpg[0].raw, color, 3);

    h5s_tracts_batch b;
    for (uint64_t first = 0; first < 1000; first += 333) {
        uint64_t n = 1000 - first < 333 ? 1000 - first : 333;
        assert_int_equal(h5s_tracts_reader_read(r, first, n, H5S_TRACTS_READ_ALL, &b), 0);
        assert_int_equal(b.count, n);
        check_batch(&b, 1);
    }
    /* never beyond the marker */
    assert_int_equal(h5s_tracts_reader_read(r, 999, 2, H5S_TRACTS_READ_POINTS, &b), H5S_ERANGE);
    assert_int_equal(h5s_tracts_reader_read(r, 1001, 0, H5S_TRACTS_READ_POINTS, &b), H5S_ERANGE);
    uint32_t idx[500];
    assert_int_equal(h5s_tracts_reader_read_rows(r, H5S_TRACTS_GROUP, 0, 0, 500, idx, sizeof idx),
                     0);
    assert_int_equal(idx[0], 1);
    assert_int_equal(idx[499], 999);
    assert_int_equal(
        h5s_tracts_reader_read_rows(r, H5S_TRACTS_GROUP, 0, 0, 501, idx, sizeof idx + 4),
        H5S_ERANGE);
    assert_int_equal(h5s_tracts_reader_read_rows(r, H5S_TRACTS_DPS, 5, 0, 1, idx, sizeof idx),
                     H5S_EINVAL);
    h5s_tracts_reader_close(r);
    h5s_tracts_reader_close(NULL);
}

static void test_tracts_reader__float16_positions(void **state)
{
    (void)state;
    char path[1200];
    const uint8_t color[3] = {0, 0, 0};
    write_file(tmp_path(path, sizeof path, "half.h5"), 100, color, H5S_FLOAT16);
    h5s_tracts_reader *r = NULL;
    assert_int_equal(h5s_tracts_reader_open(&r, path, NULL), 0);
    assert_int_equal(h5s_tracts_reader_header(r)->positions_dtype, H5S_FLOAT16);
    h5s_tracts_batch b;
    assert_int_equal(h5s_tracts_reader_read(r, 0, 100, H5S_TRACTS_READ_POINTS, &b), 0);
    check_batch(&b, 0); /* the points are exact in float16 */
    h5s_tracts_reader_close(r);
}

static void test_tracts_reader__open_errors(void **state)
{
    (void)state;
    char path[1200];
    h5s_tracts_reader *r = NULL;
    h5s_tracts_reader_options o = H5S_TRACTS_READER_OPTIONS_INIT;
    o.open_timeout_ms = 150;
    o.poll_ms = 20;
    assert_int_equal(h5s_tracts_reader_open(&r, tmp_path(path, sizeof path, "none.h5"), &o),
                     H5S_ETIMEDOUT);
    assert_null(r);
    assert_non_null(strstr(h5s_error_message(), "none.h5"));
    /* an h5stream file without /tracts */
    h5s_file *f = NULL;
    h5s_frames *fr = NULL;
    h5s_frames_options fo = H5S_FRAMES_OPTIONS_INIT;
    fo.dims[0] = fo.dims[1] = 4;
    assert_int_equal(h5s_file_create(&f, tmp_path(path, sizeof path, "frames.h5"), NULL), 0);
    assert_int_equal(h5s_frames_create(&fr, f, NULL, &fo), 0);
    assert_int_equal(h5s_file_close(f), 0);
    o.open_timeout_ms = 0;
    assert_int_equal(h5s_tracts_reader_open(&r, path, &o), H5S_ENOTFOUND);
}

typedef struct {
    h5s_tracts *t;
    h5s_file *f;
    int rc;
} live_writer;

static void *live_main(void *arg)
{
    live_writer *w = arg;
    for (uint64_t k = 0; k < 20 && w->rc == 0; k++) {
        w->rc = push_range(w->t, k * 50, 50);
        if (w->rc == 0)
            w->rc = h5s_file_flush(w->f);
        usleep(10000);
    }
    return NULL;
}

static void test_tracts_reader__live_follow(void **state)
{
    (void)state;
    char path[1200];
    tmp_path(path, sizeof path, "live.h5");
    unlink(path);
    h5s_file_options fo = H5S_FILE_OPTIONS_INIT;
    fo.flush_ms = 0;
    h5s_tracts_options to = H5S_TRACTS_OPTIONS_INIT;
    live_writer w = {NULL, NULL, 0};
    assert_int_equal(h5s_file_create(&w.f, path, &fo), 0);
    assert_int_equal(h5s_tracts_create(&w.t, w.f, &to), 0);
    assert_int_equal(h5s_tracts_add_dps(w.t, "w", H5S_FLOAT32, 1, NULL), 0);
    assert_int_equal(h5s_tracts_add_dpv(w.t, "c", H5S_UINT16, 2, NULL), 0);
    assert_int_equal(h5s_file_start_swmr(w.f), 0);
    h5s_tracts_reader_options o = H5S_TRACTS_READER_OPTIONS_INIT;
    o.open_timeout_ms = 10000;
    o.poll_ms = 5;
    h5s_tracts_reader *r = NULL;
    assert_int_equal(h5s_tracts_reader_open(&r, path, &o), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, live_main, &w), 0);
    uint64_t next = 0, count = 0, growths = 0;
    for (;;) {
        int rc = h5s_tracts_reader_wait(r, next, 20000, &count);
        if (rc != 0)
            fail_msg("wait after %llu: %d: %s", (unsigned long long)next, rc, h5s_error_message());
        if (count > next) {
            growths++;
            h5s_tracts_batch b;
            rc = h5s_tracts_reader_read(r, next, count - next, H5S_TRACTS_READ_ALL, &b);
            if (rc != 0)
                fail_msg("read %llu..%llu: %d: %s", (unsigned long long)next,
                         (unsigned long long)count, rc, h5s_error_message());
            check_batch(&b, 1);
            /* one past the committed count is refused */
            assert_int_equal(h5s_tracts_reader_read(r, count, 1, H5S_TRACTS_READ_POINTS, &b),
                             H5S_ERANGE);
            next = count;
        }
        if (next == 1000)
            break;
    }
    pthread_join(th, NULL);
    assert_int_equal(w.rc, 0);
    assert_true(growths >= 2); /* seen while growing, not only at the end */
    assert_int_equal(h5s_file_close(w.f), 0);
    assert_int_equal(h5s_tracts_reader_wait(r, next, 5000, &count), 0);
    assert_int_equal(h5s_tracts_reader_writer_state(r), H5S_WRITER_CLOSED);
    assert_int_equal(count, 1000);
    h5s_tracts_reader_close(r);
}

typedef struct {
    h5s_tracts *t;
    h5s_file *f;
    uint64_t n;
    int rc;
} commit_writer;

static void *commit_main(void *arg)
{
    commit_writer *w = arg;
    for (uint64_t k = 0; k < w->n && w->rc == 0; k++) {
        w->rc = push_range(w->t, k, 1);
        if (w->rc == 0)
            w->rc = h5s_file_flush(w->f);
    }
    return NULL;
}

/* A reader in the writer's own process shares its HDF5 file (HDF5 opens a file once per
 * process), so it sees each HDF5 call of a commit as it happens, not only flushed ones.
 * Polling without pause against a commit per streamline must still only ever see whole
 * commits: every streamline it is given reads back exact. */
static void test_tracts_reader__same_process_commits(void **state)
{
    (void)state;
    char path[1200];
    tmp_path(path, sizeof path, "sameproc_tracts.h5");
    unlink(path);
    h5s_file_options fo = H5S_FILE_OPTIONS_INIT;
    fo.flush_ms = 0;
    h5s_tracts_options to = H5S_TRACTS_OPTIONS_INIT;
    commit_writer w = {NULL, NULL, 1500, 0};
    assert_int_equal(h5s_file_create(&w.f, path, &fo), 0);
    assert_int_equal(h5s_tracts_create(&w.t, w.f, &to), 0);
    assert_int_equal(h5s_tracts_add_dps(w.t, "w", H5S_FLOAT32, 1, NULL), 0);
    assert_int_equal(h5s_tracts_add_dpv(w.t, "c", H5S_UINT16, 2, NULL), 0);
    assert_int_equal(h5s_file_start_swmr(w.f), 0);
    h5s_tracts_reader *r = NULL;
    assert_int_equal(h5s_tracts_reader_open(&r, path, NULL), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, commit_main, &w), 0);
    uint64_t next = 0, count = 0, polls = 0, growths = 0;
    while (next < w.n) {
        int rc = h5s_tracts_reader_refresh(r, &count);
        if (rc != 0)
            fail_msg("poll %llu after %llu streamlines: %s", (unsigned long long)polls,
                     (unsigned long long)next, h5s_error_message());
        polls++;
        if (count == next)
            continue;
        h5s_tracts_batch b;
        rc = h5s_tracts_reader_read(r, next, count - next, H5S_TRACTS_READ_ALL, &b);
        if (rc != 0)
            fail_msg("read %llu..%llu: %s", (unsigned long long)next, (unsigned long long)count,
                     h5s_error_message());
        check_batch(&b, 1);
        next = count;
        growths++;
    }
    pthread_join(th, NULL);
    assert_int_equal(w.rc, 0);
    assert_true(growths >= 2); /* it read while the file grew */
    assert_int_equal(h5s_file_close(w.f), 0);
    h5s_tracts_reader_close(r);
}

static void test_tracts_reader__export_and_merge(void **state)
{
    (void)state;
    char a[1200], b[1200], c[1200], out[1200];
    const uint8_t red[3] = {255, 0, 0}, blue[3] = {0, 0, 255};
    write_file(tmp_path(a, sizeof a, "shard_a.h5"), 300, red, H5S_FLOAT32);
    write_file(tmp_path(b, sizeof b, "shard_b.h5"), 201, red, H5S_FLOAT32);
    const char *in[2] = {a, b};
    h5s_tracts_export_options o = H5S_TRACTS_EXPORT_OPTIONS_INIT;
    o.block_bytes = 4096; /* many blocks per entry */
    h5s_tracts_export_report rep;
    assert_int_equal(h5s_tracts_export(in, 2, tmp_path(out, sizeof out, "m.trx"), &o, &rep), 0);
    assert_int_equal(rep.streamlines, 501);
    assert_int_equal(rep.shards, 2);

    /* read back with the formats/ TRX reader: streamline k of shard b is b's k-th */
    h5s_tract_reader *tr = NULL;
    assert_int_equal(h5s_tract_open(&tr, out), 0);
    const h5s_tract_header *h = h5s_tract_reader_header(tr);
    assert_int_equal(h->nb_streamlines, 501);
    assert_int_equal(h->n_groups, 1);
    assert_int_equal(h->groups[0].count, 150 + 100);
    assert_int_equal(h->n_dpg, 1);
    assert_memory_equal(h->dpg[0].raw, red, 3);
    h5s_tract_streamline s;
    float want[7 * 3];
    for (uint64_t k = 0; k < 501; k++) {
        assert_int_equal(h5s_tract_next(tr, &s), 1);
        uint64_t i = k < 300 ? k : k - 300;
        assert_int_equal(s.n_points, npoints_of(i));
        points_of(i, want);
        assert_memory_equal(s.points, want, s.n_points * 3 * sizeof(float));
        assert_true(s.dps[0] == 2.0 * (double)i);
        assert_true(s.dpv[1] == 0.0 && s.dpv[0] == (double)i);
    }
    assert_int_equal(h5s_tract_next(tr, &s), 0);
    h5s_tract_close(tr);

    /* different dpg of a group with streamlines in both shards: refused, both named */
    write_file(tmp_path(c, sizeof c, "shard_c.h5"), 10, blue, H5S_FLOAT32);
    in[1] = c;
    assert_int_equal(h5s_tracts_export(in, 2, tmp_path(out, sizeof out, "bad.trx"), &o, NULL),
                     H5S_EFORMAT);
    assert_non_null(strstr(h5s_error_message(), "shard_a.h5"));
    assert_non_null(strstr(h5s_error_message(), "shard_c.h5"));
    /* a shard with other positions dtype is refused too */
    write_file(tmp_path(c, sizeof c, "shard_h.h5"), 10, red, H5S_FLOAT16);
    assert_int_equal(h5s_tracts_export(in, 2, tmp_path(out, sizeof out, "bad2.trx"), &o, NULL),
                     H5S_EFORMAT);
    /* TCK: points only, all streamlines */
    in[1] = b;
    o.format = H5S_TRACT_TCK;
    assert_int_equal(h5s_tracts_export(in, 2, tmp_path(out, sizeof out, "m.tck"), &o, &rep), 0);
    assert_int_equal(h5s_tract_open(&tr, out), 0);
    uint64_t n = 0;
    while (h5s_tract_next(tr, &s) == 1)
        n++;
    h5s_tract_close(tr);
    assert_int_equal(n, 501);
}

/* The zip archive is written to a temporary file renamed at the end: a failed export leaves
 * nothing, a good one leaves only the archive (and replaces an older one); the sequential
 * reader (no chunk cache) reads the same bytes. */
static void test_tracts_reader__export_zip_files(void **state)
{
    (void)state;
    char src[1200], dir[1200], out[1300];
    const uint8_t red[3] = {255, 0, 0};
    write_file(tmp_path(src, sizeof src, "zipsrc.h5"), 400, red, H5S_FLOAT16);
    const char *in[1] = {src};
    h5s_tracts_export_options o = H5S_TRACTS_EXPORT_OPTIONS_INIT;
    o.block_bytes = 4096;

    snprintf(out, sizeof out, "%s/no-such-folder/x.trx", tmpdir);
    assert_int_equal(h5s_tracts_export(in, 1, out, &o, NULL), H5S_EIO);
    assert_non_null(strstr(h5s_error_message(), "no-such-folder/x.trx"));

    tmp_path(dir, sizeof dir, "zipdir");
    assert_true(mkdir(dir, 0777) == 0 || errno == EEXIST);
    snprintf(out, sizeof out, "%s/one.trx", dir);
    for (int round = 0; round < 2; round++) { /* the second replaces the first */
        h5s_tracts_export_report rep;
        assert_int_equal(h5s_tracts_export(in, 1, out, &o, &rep), 0);
        assert_int_equal(rep.streamlines, 400);
        DIR *d = opendir(dir);
        assert_non_null(d);
        int n = 0;
        const struct dirent *de;
        while ((de = readdir(d)) != NULL)
            if (de->d_name[0] != '.') {
                assert_string_equal(de->d_name, "one.trx");
                n++;
            }
        closedir(d);
        assert_int_equal(n, 1);
    }
    h5s_tract_reader *tr = NULL;
    assert_int_equal(h5s_tract_open(&tr, out), 0);
    assert_int_equal(h5s_tract_reader_header(tr)->nb_streamlines, 400);
    h5s_tract_close(tr);

    h5s_tracts_reader *r = NULL, *rs = NULL;
    h5s_tracts_reader_options ro = H5S_TRACTS_READER_OPTIONS_INIT;
    assert_int_equal(h5s_tracts_reader_open(&r, src, &ro), 0);
    ro.sequential = 1;
    assert_int_equal(h5s_tracts_reader_open(&rs, src, &ro), 0);
    uint64_t nv = (uint64_t)h5s_tracts_reader_header(r)->nb_vertices;
    unsigned char *a = malloc(nv * 6), *b = malloc(nv * 6);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(h5s_tracts_reader_read_rows(r, H5S_TRACTS_POSITIONS, 0, 0, nv, a, nv * 6), 0);
    assert_int_equal(h5s_tracts_reader_read_rows(rs, H5S_TRACTS_POSITIONS, 0, 0, nv, b, nv * 6), 0);
    assert_memory_equal(a, b, nv * 6);
    free(a);
    free(b);
    h5s_tracts_reader_close(r);
    h5s_tracts_reader_close(rs);
}

int main(void)
{
    const char *t = getenv("H5S_TEST_TMP");
    snprintf(tmpdir, sizeof tmpdir, "%s", t && t[0] ? t : "/tmp");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tracts_reader__closed_file_by_range),
        cmocka_unit_test(test_tracts_reader__float16_positions),
        cmocka_unit_test(test_tracts_reader__open_errors),
        cmocka_unit_test(test_tracts_reader__live_follow),
        cmocka_unit_test(test_tracts_reader__same_process_commits),
        cmocka_unit_test(test_tracts_reader__export_and_merge),
        cmocka_unit_test(test_tracts_reader__export_zip_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
