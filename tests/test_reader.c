/*
 * test_reader.c - the SWMR reader (readers/h5s_reader.h) against files written with plain
 * HDF5 calls that follow docs/format.md's frames layout, so these tests do not depend on
 * the writer engine. Live tests run the writer in a forked child process, as real readers
 * and writers are separate processes.
 *
 * Run one test alone: test_reader test_reader__<case>
 */
#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#include "h5s_codec.h"
#include "h5s_error.h"
#include "h5s_format.h"
#include "h5s_reader.h"

/* ---- helpers: paths, clocks, processes ---- */

static void tmp_path(char *out, size_t size, const char *name)
{
    const char *dir = getenv("H5S_TEST_TMP");
    if (!dir || !dir[0])
        dir = "/tmp";
    mkdir(dir, 0777);
    snprintf(out, size, "%s/test_reader_%ld_%s.h5", dir, (long)getpid(), name);
    unlink(out);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec req = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&req, &req) != 0 && errno == EINTR)
        ;
}

/* One-byte tokens between parent and child; both sides give up after timeout_ms so a
 * failed assertion on one side never leaves the other blocked forever. */
static int token_post(int fd)
{
    char c = 'x';
    return write(fd, &c, 1) == 1 ? 0 : -1;
}

static int token_wait(int fd, int timeout_ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    char c;
    if (poll(&p, 1, timeout_ms) != 1)
        return -1;
    return read(fd, &c, 1) == 1 ? 0 : -1;
}

typedef struct {
    int to_parent[2];
    int to_child[2];
} channel;

static void channel_open(channel *ch)
{
    assert_int_equal(pipe(ch->to_parent), 0);
    assert_int_equal(pipe(ch->to_child), 0);
}

static void channel_close(channel *ch)
{
    close(ch->to_parent[0]);
    close(ch->to_parent[1]);
    close(ch->to_child[0]);
    close(ch->to_child[1]);
}

/* Runs fn(arg) in a child that leaves with _exit, so it never runs the parent's atexit
 * handlers or flushes its stdio buffers a second time. */
static pid_t spawn(int (*fn)(void *), void *arg)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(fn(arg) == 0 ? 0 : 1);
    return pid;
}

static int reap(pid_t pid)
{
    int status = 0;
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ---- the frames layout, written with plain HDF5 ---- */

/* Element p of frame i: (i * 7919 + p) truncated to the type (sim:ramp's pattern). */
static void fill_frame(void *buf, h5s_dtype dtype, size_t elements, uint64_t frame)
{
    unsigned char *p = buf;
    size_t size = h5s_dtype_size(dtype);
    for (size_t e = 0; e < elements; e++) {
        uint64_t v = frame * 7919 + e;
        unsigned char *q = p + e * size;
        if (dtype == H5S_FLOAT32) {
            float f = (float)(v % 65536);
            memcpy(q, &f, sizeof f);
        } else if (dtype == H5S_FLOAT64) {
            double d = (double)(v % 65536);
            memcpy(q, &d, sizeof d);
        } else {
            for (size_t b = 0; b < size; b++)
                q[b] = (unsigned char)(v >> (8 * b));
        }
    }
}

static uint64_t frame_id_of(uint64_t i)
{
    return 1000 + i;
}

static double timestamp_of(uint64_t i)
{
    return 1700000000.0 + 0.25 * (double)i;
}

typedef struct {
    const char *data_path; /* NULL: H5S_FRAMES_DEFAULT_PATH */
    h5s_dtype dtype;
    unsigned frame_rank;
    hsize_t frame_dims[3];
    hsize_t frames_per_chunk; /* 0 = 1 */
    int deflate;              /* shuffle + deflate */
    int blosc;                /* filter 32001, lz4 + shuffle */
    int no_status;
    int no_timestamp;
    int no_frame_id;
    int old_format;  /* libver EARLIEST (superblock 0), as a non-SWMR tool writes */
    int nxdata_link; /* hard link /entry/data/data to the frames, as NeXus files have */
} tw_spec;

typedef struct {
    tw_spec spec;
    hid_t file, data, fid, ts, status;
    size_t frame_elems, frame_bytes;
    uint64_t written;   /* frames in the data dataset */
    uint64_t committed; /* frames covered by frame_id */
    unsigned char *frame;
} tw_file;

static hid_t make_per_frame(hid_t file, const char *path, hid_t type, hid_t lcpl)
{
    hsize_t dims = 0, maxdims = H5S_UNLIMITED, chunk = 256;
    hid_t space = H5Screate_simple(1, &dims, &maxdims);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, &chunk);
    hid_t d = H5Dcreate2(file, path, type, space, lcpl, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Sclose(space);
    return d;
}

static int tw_write_status(tw_file *w, int state)
{
    h5s_status_row row = {state, 1700000000.0 + (double)w->committed, w->committed};
    hid_t t = h5s_format_status_type();
    herr_t rc = H5Dwrite(w->status, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, &row);
    H5Tclose(t);
    if (rc < 0 || H5Dflush(w->status) < 0)
        return -1;
    return 0;
}

/* Creates the file and declares every object (the writer's pre-SWMR phase). */
static int tw_create(tw_file *w, const char *path, const tw_spec *spec)
{
    memset(w, 0, sizeof *w);
    w->spec = *spec;
    w->file = w->data = w->fid = w->ts = w->status = H5I_INVALID_HID;
    const char *dpath = spec->data_path ? spec->data_path : H5S_FRAMES_DEFAULT_PATH;
    hsize_t k = spec->frames_per_chunk ? spec->frames_per_chunk : 1;
    hsize_t dims[4] = {0}, maxdims[4] = {H5S_UNLIMITED}, chunk[4] = {k};
    w->frame_elems = 1;
    for (unsigned i = 0; i < spec->frame_rank; i++) {
        dims[i + 1] = maxdims[i + 1] = chunk[i + 1] = spec->frame_dims[i];
        w->frame_elems *= spec->frame_dims[i];
    }
    w->frame_bytes = w->frame_elems * h5s_dtype_size(spec->dtype);
    w->frame = malloc(w->frame_bytes);

    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (!spec->old_format)
        H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
    w->file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (w->file < 0 || !w->frame)
        return -1;
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);

    hid_t space = H5Screate_simple((int)spec->frame_rank + 1, dims, maxdims);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, (int)spec->frame_rank + 1, chunk);
    if (spec->deflate) {
        H5Pset_shuffle(dcpl);
        H5Pset_deflate(dcpl, 1);
    }
    if (spec->blosc) {
        /* hdf5-blosc cd_values: 4 filled by set_local, level, shuffle, compressor. */
        unsigned cd[7] = {0, 0, 0, 0, 5, 1, 1};
        H5Pset_filter(dcpl, H5S_FILTER_BLOSC, H5Z_FLAG_OPTIONAL, 7, cd);
    }
    w->data =
        H5Dcreate2(w->file, dpath, h5s_format_h5type(spec->dtype), space, lcpl, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Sclose(space);

    char side[512];
    int ok = w->data >= 0;
    if (ok && !spec->no_frame_id) {
        h5s_format_sidecar(side, sizeof side, dpath, H5S_SIDECAR_FRAME_ID);
        w->fid = make_per_frame(w->file, side, H5T_STD_U64LE, lcpl);
        ok = w->fid >= 0;
    }
    if (ok && !spec->no_timestamp) {
        h5s_format_sidecar(side, sizeof side, dpath, H5S_SIDECAR_TIMESTAMP);
        w->ts = make_per_frame(w->file, side, H5T_IEEE_F64LE, lcpl);
        ok = w->ts >= 0;
    }
    if (ok && !spec->no_status) {
        hsize_t one = 1;
        hid_t sspace = H5Screate_simple(1, &one, NULL);
        hid_t t = h5s_format_status_type();
        w->status =
            H5Dcreate2(w->file, H5S_STATUS_DATASET, t, sspace, lcpl, H5P_DEFAULT, H5P_DEFAULT);
        H5Tclose(t);
        H5Sclose(sspace);
        /* Written before SWMR starts, so its storage exists before the reader looks. */
        ok = w->status >= 0 && tw_write_status(w, H5S_STATE_WRITING) == 0;
    }
    if (ok && spec->nxdata_link)
        ok =
            H5Lcreate_hard(w->file, dpath, w->file, H5S_FRAMES_NXDATA_LINK, lcpl, H5P_DEFAULT) >= 0;
    H5Pclose(lcpl);
    return ok ? 0 : -1;
}

static int tw_start_swmr(tw_file *w)
{
    return H5Fstart_swmr_write(w->file) < 0 ? -1 : 0;
}

/* Appends n frames to the data dataset only (payload, not yet committed). */
static int tw_write_frames(tw_file *w, uint64_t n)
{
    unsigned rank = w->spec.frame_rank + 1;
    hsize_t dims[4], start[4] = {0}, count[4];
    for (uint64_t i = 0; i < n; i++) {
        uint64_t idx = w->written + i;
        dims[0] = idx + 1;
        start[0] = idx;
        count[0] = 1;
        for (unsigned a = 1; a < rank; a++)
            dims[a] = count[a] = w->spec.frame_dims[a - 1];
        if (H5Dset_extent(w->data, dims) < 0)
            return -1;
        fill_frame(w->frame, w->spec.dtype, w->frame_elems, idx);
        hid_t fspace = H5Dget_space(w->data);
        hid_t mspace = H5Screate_simple((int)rank, count, NULL);
        H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL);
        herr_t rc = H5Dwrite(w->data, h5s_format_h5type(w->spec.dtype), mspace, fspace, H5P_DEFAULT,
                             w->frame);
        H5Sclose(mspace);
        H5Sclose(fspace);
        if (rc < 0)
            return -1;
    }
    w->written += n;
    return H5Dflush(w->data) < 0 ? -1 : 0;
}

static int append_values(hid_t d, uint64_t from, uint64_t to, hid_t memtype, const void *vals)
{
    hsize_t dims = to, start = from, count = to - from;
    if (count == 0)
        return 0;
    if (H5Dset_extent(d, &dims) < 0)
        return -1;
    hid_t fspace = H5Dget_space(d);
    hid_t mspace = H5Screate_simple(1, &count, NULL);
    H5Sselect_hyperslab(fspace, H5S_SELECT_SET, &start, NULL, &count, NULL);
    herr_t rc = H5Dwrite(d, memtype, mspace, fspace, H5P_DEFAULT, vals);
    H5Sclose(mspace);
    H5Sclose(fspace);
    return rc < 0 || H5Dflush(d) < 0 ? -1 : 0;
}

/* Commits frames up to `upto`: timestamps, then the frame_id marker last. */
static int tw_commit(tw_file *w, uint64_t upto)
{
    uint64_t n = upto - w->committed;
    uint64_t *ids = malloc((n ? n : 1) * sizeof *ids);
    double *ts = malloc((n ? n : 1) * sizeof *ts);
    int rc = ids && ts ? 0 : -1;
    for (uint64_t i = 0; rc == 0 && i < n; i++) {
        ids[i] = frame_id_of(w->committed + i);
        ts[i] = timestamp_of(w->committed + i);
    }
    if (rc == 0 && w->ts >= 0)
        rc = append_values(w->ts, w->committed, upto, H5T_NATIVE_DOUBLE, ts);
    if (rc == 0 && w->fid >= 0)
        rc = append_values(w->fid, w->committed, upto, H5T_NATIVE_UINT64, ids);
    free(ids);
    free(ts);
    if (rc == 0)
        w->committed = upto;
    return rc;
}

static int tw_append(tw_file *w, uint64_t n)
{
    if (tw_write_frames(w, n) != 0)
        return -1;
    return tw_commit(w, w->written);
}

static int tw_close(tw_file *w, int mark_closed)
{
    int rc = 0;
    if (mark_closed && w->status >= 0)
        rc = tw_write_status(w, H5S_STATE_CLOSED);
    hid_t ids[] = {w->status, w->ts, w->fid, w->data};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        if (ids[i] >= 0)
            H5Dclose(ids[i]);
    if (w->file >= 0 && H5Fclose(w->file) < 0)
        rc = -1;
    free(w->frame);
    w->frame = NULL;
    return rc;
}

/* A closed (non-SWMR) file holding `written` frames of which `committed` are committed. */
static void make_closed_file(const char *path, const tw_spec *spec, uint64_t written,
                             uint64_t committed)
{
    tw_file w;
    assert_int_equal(tw_create(&w, path, spec), 0);
    assert_int_equal(tw_write_frames(&w, written), 0);
    assert_int_equal(tw_commit(&w, committed), 0);
    assert_int_equal(tw_close(&w, 1), 0);
}

static const tw_spec SPEC_U16 = {.dtype = H5S_UINT16, .frame_rank = 2, .frame_dims = {4, 5}};

static h5s_reader *open_ok(const char *path, const char *dataset, int timeout_ms)
{
    h5s_reader_options o = H5S_READER_OPTIONS_INIT;
    o.open_timeout_ms = timeout_ms;
    o.poll_ms = 20;
    h5s_reader *r = NULL;
    int rc = h5s_reader_open(&r, path, dataset, &o);
    if (rc != 0)
        fail_msg("h5s_reader_open(%s): %s: %s", path, h5s_strerror(rc), h5s_error_message());
    return r;
}

static int open_rc(const char *path, const char *dataset, int timeout_ms)
{
    h5s_reader_options o = H5S_READER_OPTIONS_INIT;
    o.open_timeout_ms = timeout_ms;
    o.poll_ms = 20;
    h5s_reader *r = (h5s_reader *)&o; /* must be reset to NULL on failure */
    int rc = h5s_reader_open(&r, path, dataset, &o);
    if (rc != 0)
        assert_null(r);
    h5s_reader_close(r);
    return rc;
}

/* Reads frames [first, first + n) and compares each with the ramp pattern. */
static void check_frames(h5s_reader *r, uint64_t first, uint64_t n)
{
    h5s_frame_shape shape;
    assert_int_equal(h5s_reader_shape(r, &shape), 0);
    size_t elems = shape.frame_bytes / h5s_dtype_size(shape.dtype);
    unsigned char *got = malloc(n * shape.frame_bytes);
    unsigned char *want = malloc(shape.frame_bytes);
    uint64_t *ids = malloc(n * sizeof *ids);
    double *ts = malloc(n * sizeof *ts);
    assert_non_null(got);
    assert_non_null(want);
    assert_non_null(ids);
    assert_non_null(ts);
    int rc = h5s_reader_read(r, first, n, got, n * shape.frame_bytes);
    if (rc != 0)
        fail_msg("read %llu+%llu: %s", (unsigned long long)first, (unsigned long long)n,
                 h5s_error_message());
    assert_int_equal(h5s_reader_read_meta(r, first, n, ids, ts), 0);
    for (uint64_t i = 0; i < n; i++) {
        fill_frame(want, shape.dtype, elems, first + i);
        if (memcmp(got + i * shape.frame_bytes, want, shape.frame_bytes) != 0)
            fail_msg("frame %llu differs", (unsigned long long)(first + i));
        assert_int_equal(ids[i], frame_id_of(first + i));
        assert_true(ts[i] == timestamp_of(first + i));
    }
    free(ts);
    free(ids);
    free(want);
    free(got);
}

/* ---- closed files ---- */

static void test_reader__reads_closed_file(void **state)
{
    (void)state;
    char path[512];
    tmp_path(path, sizeof path, "closed");
    make_closed_file(path, &SPEC_U16, 6, 6);

    h5s_reader *r = open_ok(path, NULL, 0);
    h5s_frame_shape shape;
    assert_int_equal(h5s_reader_shape(r, &shape), 0);
    assert_int_equal(shape.dtype, H5S_UINT16);
    assert_int_equal(shape.rank, 2);
    assert_int_equal(shape.dims[0], 4);
    assert_int_equal(shape.dims[1], 5);
    assert_int_equal(shape.frame_bytes, 40);
    assert_int_equal(h5s_reader_count(r), 6);
    assert_int_equal(h5s_reader_writer_state(r), H5S_WRITER_CLOSED);
    uint64_t count = 0;
    assert_int_equal(h5s_reader_refresh(r, &count), 0);
    assert_int_equal(count, 6);

    check_frames(r, 0, 6);
    check_frames(r, 2, 3);
    check_frames(r, 5, 1);

    /* Exact bytes of frame 3, element by element. */
    uint16_t f[20];
    assert_int_equal(h5s_reader_read(r, 3, 1, f, sizeof f), 0);
    for (unsigned p = 0; p < 20; p++)
        assert_int_equal(f[p], (uint16_t)(3 * 7919 + p));
    h5s_reader_close(r);
    unlink(path);
}

static void test_reader__read_beyond_commit_marker_is_erange(void **state)
{
    (void)state;
    char path[512];
    tmp_path(path, sizeof path, "erange");
    /* 9 frames of payload, only 5 committed: the data dataset is longer than frame_id. */
    make_closed_file(path, &SPEC_U16, 9, 5);

    h5s_reader *r = open_ok(path, NULL, 0);
    assert_int_equal(h5s_reader_count(r), 5);
    uint16_t buf[20 * 9];
    assert_int_equal(h5s_reader_read(r, 4, 1, buf, sizeof buf), 0);
    assert_int_equal(h5s_reader_read(r, 5, 0, buf, sizeof buf), 0);
    assert_int_equal(h5s_reader_read(r, 5, 1, buf, sizeof buf), H5S_ERANGE);
    assert_non_null(strstr(h5s_error_message(), "5 committed"));
    assert_int_equal(h5s_reader_read(r, 3, 3, buf, sizeof buf), H5S_ERANGE);
    assert_int_equal(h5s_reader_read(r, 8, 1, buf, sizeof buf), H5S_ERANGE);
    assert_int_equal(h5s_reader_read(r, 0, 9, buf, sizeof buf), H5S_ERANGE);
    assert_int_equal(h5s_reader_read(r, 6, 0, buf, sizeof buf), H5S_ERANGE);
    assert_int_equal(h5s_reader_read(r, UINT64_MAX, 2, buf, sizeof buf), H5S_ERANGE);
    uint64_t id;
    assert_int_equal(h5s_reader_read_meta(r, 5, 1, &id, NULL), H5S_ERANGE);
    /* A buffer one byte short of two frames. */
    assert_int_equal(h5s_reader_read(r, 0, 2, buf, 79), H5S_EINVAL);
    check_frames(r, 0, 5);
    h5s_reader_close(r);
    unlink(path);
}

static void test_reader__read_meta_values(void **state)
{
    (void)state;
    char path[512];
    tmp_path(path, sizeof path, "meta");
    make_closed_file(path, &SPEC_U16, 7, 7);
    h5s_reader *r = open_ok(path, NULL, 0);
    uint64_t ids[4] = {0};
    double ts[4] = {0};
    assert_int_equal(h5s_reader_read_meta(r, 2, 4, ids, ts), 0);
    for (unsigned i = 0; i < 4; i++) {
        assert_int_equal(ids[i], 1002 + i);
        assert_true(ts[i] == 1700000000.0 + 0.25 * (2 + i));
    }
    memset(ids, 0, sizeof ids);
    assert_int_equal(h5s_reader_read_meta(r, 6, 1, ids, NULL), 0);
    assert_int_equal(ids[0], 1006);
    assert_int_equal(h5s_reader_read_meta(r, 0, 1, NULL, ts), 0);
    assert_true(ts[0] == 1700000000.0);
    h5s_reader_close(r);
    unlink(path);

    /* Without a timestamp dataset, timestamps read as NaN. */
    tw_spec spec = SPEC_U16;
    spec.no_timestamp = 1;
    make_closed_file(path, &spec, 3, 3);
    r = open_ok(path, NULL, 0);
    assert_int_equal(h5s_reader_read_meta(r, 0, 3, ids, ts), 0);
    assert_int_equal(ids[2], 1002);
    assert_true(isnan(ts[0]) && isnan(ts[2]));
    h5s_reader_close(r);
    unlink(path);
}

static void test_reader__named_dataset_sidecars(void **state)
{
    (void)state;
    char path[512];
    tmp_path(path, sizeof path, "named");
    tw_spec spec = {.data_path = "/cam2/image",
                    .dtype = H5S_INT8,
                    .frame_rank = 1,
                    .frame_dims = {300},
                    .deflate = 1};
    make_closed_file(path, &spec, 4, 4);
    /* The dataset path may be given without its leading slash. */
    h5s_reader *r = open_ok(path, "cam2/image", 0);
    h5s_frame_shape shape;
    assert_int_equal(h5s_reader_shape(r, &shape), 0);
    assert_int_equal(shape.dtype, H5S_INT8);
    assert_int_equal(shape.rank, 1);
    assert_int_equal(shape.dims[0], 300);
    assert_int_equal(shape.frame_bytes, 300);
    assert_int_equal(h5s_reader_count(r), 4);
    check_frames(r, 0, 4);
    h5s_reader_close(r);
    unlink(path);
}

static void test_reader__opens_through_nxdata_link(void **state)
{
    (void)state;
    char path[512];
    tmp_path(path, sizeof path, "nxlink");
    tw_spec spec = SPEC_U16;
    spec.nxdata_link = 1;
    make_closed_file(path, &spec, 4, 3);
    /* /entry/data/frame_id does not exist: the reader finds the detector's through the
     * other name of the same dataset. */
    h5s_reader *r = open_ok(path, H5S_FRAMES_NXDATA_LINK, 0);
    assert_int_equal(h5s_reader_count(r), 3);
    check_frames(r, 0, 3);
    h5s_reader_close(r);
    unlink(path);
}

static void test_reader__reads_rank3_float_frames(void **state)
{
    (void)state;
    char path[512];
    tmp_path(path, sizeof path, "rank3");
    tw_spec spec = {.dtype = H5S_FLOAT64,
                    .frame_rank = 3,
                    .frame_dims = {2, 3, 7},
                    .frames_per_chunk = 4,
                    .deflate = 1};
    /* Bands of 4 frames with 10 written: the last band is partial and 2 are uncommitted. */
    make_closed_file(path, &spec, 10, 8);
    h5s_reader *r = open_ok(path, NULL, 0);
    h5s_frame_shape shape;
    assert_int_equal(h5s_reader_shape(r, &shape), 0);
    assert_int_equal(shape.rank, 3);
    assert_int_equal(shape.dims[0], 2);
    assert_int_equal(shape.dims[1], 3);
    assert_int_equal(shape.dims[2], 7);
    assert_int_equal(shape.frame_bytes, 2 * 3 * 7 * 8);
    assert_int_equal(h5s_reader_count(r), 8);
    check_frames(r, 0, 8);
    check_frames(r, 3, 2);
    h5s_reader_close(r);
    unlink(path);
}

static void test_reader__opens_old_format_file(void **state)
{
    (void)state;
    char path[512];
    tmp_path(path, sizeof path, "oldformat");
    tw_spec spec = SPEC_U16;
    spec.old_format = 1;
    spec.dtype = H5S_INT32;
    make_closed_file(path, &spec, 3, 3);
    h5s_reader *r = open_ok(path, NULL, 0);
    assert_int_equal(h5s_reader_count(r), 3);
    check_frames(r, 0, 3);
    h5s_reader_close(r);
    unlink(path);
}

/* ---- format errors ---- */

/* Writes a file whose frames dataset is broken in one way. */
static void make_bad_file(const char *path, const char *what)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    assert_true(f >= 0);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hsize_t dims[3] = {2, 4, 4}, maxdims[3] = {H5S_UNLIMITED, 4, 4}, chunk[3] = {1, 4, 4};
    int rank = 3;
    hid_t type = H5Tcopy(H5T_STD_U16LE);
    int frame_id = 1;
    if (strcmp(what, "rank1") == 0)
        rank = 1;
    else if (strcmp(what, "fixed") == 0)
        maxdims[0] = 2;
    else if (strcmp(what, "string") == 0) {
        H5Tclose(type);
        type = H5Tcopy(H5T_C_S1);
        H5Tset_size(type, 8);
    } else if (strcmp(what, "no_frame_id") == 0)
        frame_id = 0;
    hid_t space = H5Screate_simple(rank, dims, maxdims);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, rank, chunk);
    hid_t d = H5Dcreate2(f, H5S_FRAMES_DEFAULT_PATH, type, space, lcpl, dcpl, H5P_DEFAULT);
    assert_true(d >= 0);
    if (frame_id) {
        hid_t fid = make_per_frame(f, "/entry/instrument/detector/frame_id", H5T_STD_U64LE, lcpl);
        assert_true(fid >= 0);
        H5Dclose(fid);
    }
    H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(space);
    H5Tclose(type);
    H5Pclose(lcpl);
    assert_true(H5Fclose(f) >= 0);
}

static void expect_format_error(const char *what, const char *words)
{
    char path[512];
    tmp_path(path, sizeof path, what);
    make_bad_file(path, what);
    assert_int_equal(open_rc(path, NULL, 0), H5S_EFORMAT);
    if (!strstr(h5s_error_message(), words))
        fail_msg("%s: message '%s' lacks '%s'", what, h5s_error_message(), words);
    assert_non_null(strstr(h5s_error_message(), path));
    unlink(path);
}

static void test_reader__rejects_rank1_data(void **state)
{
    (void)state;
    expect_format_error("rank1", "rank 1");
}

static void test_reader__rejects_missing_frame_id(void **state)
{
    (void)state;
    expect_format_error("no_frame_id", "frame_id");
}

static void test_reader__rejects_fixed_first_axis(void **state)
{
    (void)state;
    expect_format_error("fixed", "unlimited");
}

static void test_reader__rejects_non_numeric_type(void **state)
{
    (void)state;
    expect_format_error("string", "integer or float");
}

static void test_reader__missing_dataset_is_not_found(void **state)
{
    (void)state;
    char path[512];
    tmp_path(path, sizeof path, "nodataset");
    make_closed_file(path, &SPEC_U16, 1, 1);
    assert_int_equal(open_rc(path, "/nope/data", 0), H5S_ENOTFOUND);
    assert_non_null(strstr(h5s_error_message(), "/nope/data"));
    int64_t t0 = now_ms();
    assert_int_equal(open_rc(path, "/entry/instrument/detector/missing", 150), H5S_ENOTFOUND);
    assert_true(now_ms() - t0 >= 140);
    /* A group is not a frames dataset. */
    assert_int_equal(open_rc(path, "/entry/instrument", 0), H5S_EFORMAT);
    unlink(path);
}

/* ---- opening while the file does not exist or is not in SWMR yet ---- */

static void test_reader__open_missing_file_times_out(void **state)
{
    (void)state;
    char path[512];
    tmp_path(path, sizeof path, "missing");
    int64_t t0 = now_ms();
    assert_int_equal(open_rc(path, NULL, 400), H5S_ETIMEDOUT);
    int64_t elapsed = now_ms() - t0;
    assert_true(elapsed >= 390);
    assert_true(elapsed < 5000);
    assert_non_null(strstr(h5s_error_message(), path));
    assert_non_null(strstr(h5s_error_message(), "No such file"));

    /* 0 = try once. */
    t0 = now_ms();
    assert_int_equal(open_rc(path, NULL, 0), H5S_ETIMEDOUT);
    assert_true(now_ms() - t0 < 2000);
}

typedef struct {
    char path[512];
    tw_spec spec;
    channel ch;
    int delay_create_ms; /* before H5Fcreate */
    int delay_swmr_ms;   /* between declaring and H5Fstart_swmr_write */
    int start_swmr;
    uint64_t frames;
    int batch_max;
} writer_args;

/* Creates the file late, declares, waits, starts SWMR, commits `frames` frames, then
 * waits for the parent's token before closing. */
static int child_slow_start(void *arg)
{
    writer_args *a = arg;
    tw_file w;
    sleep_ms(a->delay_create_ms);
    if (tw_create(&w, a->path, &a->spec) != 0)
        return 1;
    sleep_ms(a->delay_swmr_ms);
    if (a->start_swmr && tw_start_swmr(&w) != 0)
        return 2;
    if (a->frames && tw_append(&w, a->frames) != 0)
        return 3;
    if (token_wait(a->ch.to_child[0], 20000) != 0)
        return 4;
    return tw_close(&w, 1) == 0 ? 0 : 5;
}

static void test_reader__open_waits_for_file_and_swmr_start(void **state)
{
    (void)state;
    writer_args a = {.spec = SPEC_U16,
                     .delay_create_ms = 300,
                     .delay_swmr_ms = 300,
                     .start_swmr = 1,
                     .frames = 3};
    tmp_path(a.path, sizeof a.path, "appears");
    channel_open(&a.ch);
    int64_t t0 = now_ms();
    pid_t pid = spawn(child_slow_start, &a);

    h5s_reader *r = open_ok(a.path, NULL, 20000);
    /* Neither a missing file nor a declared-but-not-SWMR file may be opened. */
    assert_true(now_ms() - t0 >= 550);
    uint64_t count = 0;
    while (count < 3)
        assert_int_equal(h5s_reader_wait(r, count, 10000, &count), 0);
    assert_int_equal(count, 3);
    assert_int_equal(h5s_reader_writer_state(r), H5S_WRITER_WRITING);
    check_frames(r, 0, 3);

    assert_int_equal(token_post(a.ch.to_child[1]), 0);
    assert_int_equal(reap(pid), 0);
    assert_int_equal(h5s_reader_refresh(r, &count), 0);
    assert_int_equal(h5s_reader_writer_state(r), H5S_WRITER_CLOSED);
    h5s_reader_close(r);
    channel_close(&a.ch);
    unlink(a.path);
}

static void test_reader__open_times_out_while_writer_declares(void **state)
{
    (void)state;
    writer_args a = {.spec = SPEC_U16, .start_swmr = 0};
    tmp_path(a.path, sizeof a.path, "declaring");
    channel_open(&a.ch);
    pid_t pid = spawn(child_slow_start, &a);
    /* Let the child create the file; until it does, the error is "no such file". */
    struct stat st;
    int64_t t0 = now_ms();
    while (stat(a.path, &st) != 0 && now_ms() - t0 < 10000)
        sleep_ms(5);
    sleep_ms(50);

    t0 = now_ms();
    assert_int_equal(open_rc(a.path, NULL, 300), H5S_ETIMEDOUT);
    assert_true(now_ms() - t0 >= 290);
    /* The reason is HDF5's (file locked, or open for writing without SWMR). */
    assert_non_null(strstr(h5s_error_message(), "SWMR"));
    assert_null(strstr(h5s_error_message(), "No such file"));

    assert_int_equal(token_post(a.ch.to_child[1]), 0);
    assert_int_equal(reap(pid), 0);
    channel_close(&a.ch);
    unlink(a.path);
}

/* ---- live reading ---- */

/* Appends a.frames frames in commits of 1..batch_max frames; the payload of the next
 * commit is written before the current one is committed, so the data dataset is usually
 * longer than frame_id, as with a writer that flushes payload first. */
static int child_live_writer(void *arg)
{
    writer_args *a = arg;
    tw_file w;
    if (tw_create(&w, a->path, &a->spec) != 0 || tw_start_swmr(&w) != 0)
        return 1;
    uint64_t seed = 12345;
    while (w.committed < a->frames) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        uint64_t n = 1 + (seed >> 33) % (uint64_t)a->batch_max;
        if (n > a->frames - w.written)
            n = a->frames - w.written;
        if (n && tw_write_frames(&w, n) != 0)
            return 2;
        sleep_ms(1);
        uint64_t upto = w.written - (w.written > w.committed + 1 && w.written < a->frames);
        if (tw_commit(&w, upto) != 0)
            return 3;
        if (tw_write_status(&w, H5S_STATE_WRITING) != 0)
            return 4;
        sleep_ms((int)((seed >> 40) % 3));
    }
    return tw_close(&w, 1) == 0 ? 0 : 5;
}

static void follow_live_writer(const tw_spec *spec, uint64_t frames, const char *name)
{
    writer_args a = {.spec = *spec, .frames = frames, .batch_max = 9};
    tmp_path(a.path, sizeof a.path, name);
    pid_t pid = spawn(child_live_writer, &a);

    h5s_reader *r = open_ok(a.path, NULL, 20000);
    uint64_t next = 0, count = 0;
    unsigned polls = 0;
    for (;;) {
        int rc = h5s_reader_wait(r, next, 20000, &count);
        if (rc != 0)
            fail_msg("wait after %llu: %s", (unsigned long long)next, h5s_error_message());
        polls++;
        while (next < count) {
            uint64_t n = count - next < 64 ? count - next : 64;
            check_frames(r, next, n);
            next += n;
        }
        /* Everything the marker covered must have been readable. */
        assert_int_equal(next, h5s_reader_count(r));
        if (h5s_reader_writer_state(r) == H5S_WRITER_CLOSED)
            break;
    }
    assert_int_equal(next, frames);
    /* Each wait returned because something changed, so the reader saw the file grow. */
    assert_true(polls > 1);
    assert_int_equal(reap(pid), 0);
    h5s_reader_close(r);
    unlink(a.path);
}

static void test_reader__follows_live_writer(void **state)
{
    (void)state;
    tw_spec spec = {.dtype = H5S_UINT16, .frame_rank = 2, .frame_dims = {32, 48}, .deflate = 1};
    follow_live_writer(&spec, 300, "live");
}

static void test_reader__follows_live_writer_banded_float(void **state)
{
    (void)state;
    tw_spec spec = {
        .dtype = H5S_FLOAT32, .frame_rank = 3, .frame_dims = {2, 8, 8}, .frames_per_chunk = 4};
    follow_live_writer(&spec, 150, "live_banded");
}

static void test_reader__follows_live_writer_blosc(void **state)
{
    (void)state;
    h5s_filters_init();
    if (H5Zfilter_avail(H5S_FILTER_BLOSC) <= 0)
        skip();
    tw_spec spec = {.dtype = H5S_INT32, .frame_rank = 2, .frame_dims = {16, 16}, .blosc = 1};
    follow_live_writer(&spec, 120, "live_blosc");
}

/* Commits 2 frames, waits; commits 3 more and closes the file cleanly. */
static int child_state_writer(void *arg)
{
    writer_args *a = arg;
    tw_file w;
    if (tw_create(&w, a->path, &a->spec) != 0 || tw_start_swmr(&w) != 0)
        return 1;
    if (tw_append(&w, 2) != 0 || token_post(a->ch.to_parent[1]) != 0)
        return 2;
    if (token_wait(a->ch.to_child[0], 20000) != 0)
        return 3;
    if (tw_append(&w, 3) != 0 || tw_close(&w, 1) != 0)
        return 4;
    return token_post(a->ch.to_parent[1]) == 0 ? 0 : 5;
}

static void test_reader__writer_state_transitions(void **state)
{
    (void)state;
    writer_args a = {.spec = SPEC_U16};
    tmp_path(a.path, sizeof a.path, "state");
    channel_open(&a.ch);
    pid_t pid = spawn(child_state_writer, &a);
    assert_int_equal(token_wait(a.ch.to_parent[0], 20000), 0);

    h5s_reader *r = open_ok(a.path, NULL, 0);
    assert_int_equal(h5s_reader_writer_state(r), H5S_WRITER_WRITING);
    assert_int_equal(h5s_reader_count(r), 2);
    /* Nothing new while the writer idles: the wait times out and keeps the count. */
    uint64_t count = 99;
    int64_t t0 = now_ms();
    assert_int_equal(h5s_reader_wait(r, 2, 200, &count), H5S_ETIMEDOUT);
    assert_true(now_ms() - t0 >= 190);
    assert_int_equal(count, 2);
    assert_int_equal(h5s_reader_writer_state(r), H5S_WRITER_WRITING);

    assert_int_equal(token_post(a.ch.to_child[1]), 0);
    assert_int_equal(token_wait(a.ch.to_parent[0], 20000), 0);
    assert_int_equal(h5s_reader_refresh(r, &count), 0);
    assert_int_equal(count, 5);
    assert_int_equal(h5s_reader_writer_state(r), H5S_WRITER_CLOSED);
    /* A closed writer ends a wait at once, with no new frame. */
    t0 = now_ms();
    assert_int_equal(h5s_reader_wait(r, 5, -1, &count), 0);
    assert_int_equal(count, 5);
    assert_true(now_ms() - t0 < 2000);
    check_frames(r, 0, 5);
    h5s_reader_close(r);
    assert_int_equal(reap(pid), 0);
    channel_close(&a.ch);
    unlink(a.path);

    /* No status dataset: the state is unknown. */
    tw_spec spec = SPEC_U16;
    spec.no_status = 1;
    make_closed_file(a.path, &spec, 2, 2);
    r = open_ok(a.path, NULL, 0);
    assert_int_equal(h5s_reader_writer_state(r), H5S_WRITER_UNKNOWN);
    assert_int_equal(h5s_reader_wait(r, 2, 50, &count), H5S_ETIMEDOUT);
    h5s_reader_close(r);
    unlink(a.path);
}

/* ---- frame summaries ---- */

static void summarize(h5s_frame_summary *s, const void *frame, h5s_dtype dtype, size_t n)
{
    h5s_frame_shape shape = {dtype, 1, {n, 0, 0}, n * h5s_dtype_size(dtype)};
    assert_int_equal(h5s_frame_summarize(s, frame, &shape), 0);
    uint32_t crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), frame, (uInt)shape.frame_bytes);
    assert_int_equal(s->crc32, crc);
}

static void expect_summary(const void *frame, h5s_dtype dtype, size_t n, double min, double max,
                           double mean)
{
    h5s_frame_summary s;
    summarize(&s, frame, dtype, n);
    assert_true(s.min == min);
    assert_true(s.max == max);
    if (fabs(s.mean - mean) > 1e-9 * (fabs(mean) + 1))
        fail_msg("%s: mean %.17g, expected %.17g", h5s_dtype_name(dtype), s.mean, mean);
}

static void test_reader__summarize_integer_dtypes(void **state)
{
    (void)state;
    const int8_t i8[] = {-128, 0, 127, 5};
    expect_summary(i8, H5S_INT8, 4, -128, 127, 1.0);
    const uint8_t u8[] = {0, 255, 1};
    expect_summary(u8, H5S_UINT8, 3, 0, 255, 256.0 / 3);
    const int16_t i16[] = {-32768, 32767, -1, 2};
    expect_summary(i16, H5S_INT16, 4, -32768, 32767, 0.0);
    const uint16_t u16[] = {0, 1523, 7, 65535, 10};
    expect_summary(u16, H5S_UINT16, 5, 0, 65535, (0 + 1523 + 7 + 65535 + 10) / 5.0);
    const int32_t i32[] = {-2000000000, 2000000000, 3};
    expect_summary(i32, H5S_INT32, 3, -2000000000, 2000000000, 1.0);
    const uint32_t u32[] = {4294967295u, 1};
    expect_summary(u32, H5S_UINT32, 2, 1, 4294967295.0, 2147483648.0);
    const int64_t i64[] = {-((int64_t)1 << 40), 1 << 20};
    expect_summary(i64, H5S_INT64, 2, -1099511627776.0, 1048576.0,
                   (-1099511627776.0 + 1048576.0) / 2);
    const uint64_t u64[] = {UINT64_MAX, 0, 0, 0};
    expect_summary(u64, H5S_UINT64, 4, 0, 18446744073709551615.0, 18446744073709551615.0 / 4);

    /* The crc is zlib's of the frame's bytes: a known value for "123456789". */
    h5s_frame_summary s;
    h5s_frame_shape shape = {H5S_UINT8, 1, {9, 0, 0}, 9};
    assert_int_equal(h5s_frame_summarize(&s, "123456789", &shape), 0);
    assert_int_equal(s.crc32, 0xcbf43926u);
    assert_true(s.min == '1' && s.max == '9' && s.mean == '5');
}

static void test_reader__summarize_floats_skips_nan(void **state)
{
    (void)state;
    const float f32[] = {1.5f, NAN, -2.5f, 4.0f, NAN};
    expect_summary(f32, H5S_FLOAT32, 5, -2.5, 4.0, 1.0);
    const double f64[] = {NAN, 0.25, 1e10, -1e10};
    expect_summary(f64, H5S_FLOAT64, 4, -1e10, 1e10, 0.25 / 3);
    const double nans[] = {NAN, NAN};
    h5s_frame_summary s;
    summarize(&s, nans, H5S_FLOAT64, 2);
    assert_true(isnan(s.min) && isnan(s.max) && isnan(s.mean));
    const double inf[] = {INFINITY, 1.0};
    summarize(&s, inf, H5S_FLOAT64, 2);
    assert_true(isinf(s.max) && s.min == 1.0);

    /* Unaligned frames are fine: the summary never dereferences typed pointers. */
    unsigned char raw[1 + 3 * 8];
    const double vals[3] = {3.0, -1.0, 7.0};
    memcpy(raw + 1, vals, sizeof vals);
    expect_summary(raw + 1, H5S_FLOAT64, 3, -1.0, 7.0, 3.0);
}

static void test_reader__summarize_rejects_bad_arguments(void **state)
{
    (void)state;
    h5s_frame_summary s;
    uint8_t frame[4] = {0};
    h5s_frame_shape shape = {H5S_DTYPE_INVALID, 1, {4, 0, 0}, 4};
    assert_int_equal(h5s_frame_summarize(&s, frame, &shape), H5S_EINVAL);
    shape.dtype = H5S_UINT8;
    assert_int_equal(h5s_frame_summarize(NULL, frame, &shape), H5S_EINVAL);
    assert_int_equal(h5s_frame_summarize(&s, NULL, &shape), H5S_EINVAL);
    assert_int_equal(h5s_frame_summarize(&s, frame, NULL), H5S_EINVAL);
}

static void test_reader__null_arguments(void **state)
{
    (void)state;
    h5s_reader *r = NULL;
    assert_int_equal(h5s_reader_open(NULL, "x.h5", NULL, NULL), H5S_EINVAL);
    assert_int_equal(h5s_reader_open(&r, NULL, NULL, NULL), H5S_EINVAL);
    assert_null(r);
    h5s_reader_options bad = H5S_READER_OPTIONS_INIT;
    bad.version = 0;
    assert_int_equal(h5s_reader_open(&r, "x.h5", NULL, &bad), H5S_EINVAL);
    h5s_frame_shape shape;
    assert_int_equal(h5s_reader_shape(NULL, &shape), H5S_EINVAL);
    assert_int_equal(h5s_reader_refresh(NULL, NULL), H5S_EINVAL);
    assert_int_equal(h5s_reader_wait(NULL, 0, 0, NULL), H5S_EINVAL);
    assert_int_equal(h5s_reader_read(NULL, 0, 0, NULL, 0), H5S_EINVAL);
    assert_int_equal(h5s_reader_read_meta(NULL, 0, 0, NULL, NULL), H5S_EINVAL);
    assert_int_equal(h5s_reader_count(NULL), 0);
    assert_int_equal(h5s_reader_writer_state(NULL), H5S_WRITER_UNKNOWN);
    h5s_reader_close(NULL);
}

int main(int argc, char **argv)
{
    /*
     * File locking is part of what these tests rely on: while the writer declares its
     * schema it holds an exclusive lock (and its superblock says "open for writing"), so
     * the reader must wait. BEST_EFFORT keeps the locks where the file system supports
     * them and does not fail where it has no flock (some network mounts given as
     * H5S_TEST_TMP); the superblock flags still refuse early opens there. A value set by
     * the caller wins.
     */
    setenv("HDF5_USE_FILE_LOCKING", "BEST_EFFORT", 0);
    h5s_hdf5_quiet();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reader__reads_closed_file),
        cmocka_unit_test(test_reader__read_beyond_commit_marker_is_erange),
        cmocka_unit_test(test_reader__read_meta_values),
        cmocka_unit_test(test_reader__named_dataset_sidecars),
        cmocka_unit_test(test_reader__opens_through_nxdata_link),
        cmocka_unit_test(test_reader__reads_rank3_float_frames),
        cmocka_unit_test(test_reader__opens_old_format_file),
        cmocka_unit_test(test_reader__rejects_rank1_data),
        cmocka_unit_test(test_reader__rejects_missing_frame_id),
        cmocka_unit_test(test_reader__rejects_fixed_first_axis),
        cmocka_unit_test(test_reader__rejects_non_numeric_type),
        cmocka_unit_test(test_reader__missing_dataset_is_not_found),
        cmocka_unit_test(test_reader__open_missing_file_times_out),
        cmocka_unit_test(test_reader__open_waits_for_file_and_swmr_start),
        cmocka_unit_test(test_reader__open_times_out_while_writer_declares),
        cmocka_unit_test(test_reader__follows_live_writer),
        cmocka_unit_test(test_reader__follows_live_writer_banded_float),
        cmocka_unit_test(test_reader__follows_live_writer_blosc),
        cmocka_unit_test(test_reader__writer_state_transitions),
        cmocka_unit_test(test_reader__summarize_integer_dtypes),
        cmocka_unit_test(test_reader__summarize_floats_skips_nan),
        cmocka_unit_test(test_reader__summarize_rejects_bad_arguments),
        cmocka_unit_test(test_reader__null_arguments),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
