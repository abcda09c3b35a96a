/* test_schema.c - the declaration phase: options, datasets, NeXus layout, links. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include "h5s_engine.h"
#include "h5s_format.h"
#include "h5stream.h"

static char path[512];

static int setup(void **state)
{
    (void)state;
    const char *dir = getenv("H5S_TEST_TMP");
    snprintf(path, sizeof path, "%s/test_schema_%d.h5", dir ? dir : "/tmp", (int)getpid());
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(path);
    return 0;
}

static h5s_frames_options frame_opts(unsigned rank, uint64_t d0, uint64_t d1, uint64_t d2)
{
    h5s_frames_options o = H5S_FRAMES_OPTIONS_INIT;
    o.rank = rank;
    o.dims[0] = d0;
    o.dims[1] = d1;
    o.dims[2] = d2;
    return o;
}

static char *read_string_attr(hid_t obj, const char *name)
{
    static char buf[256];
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    assert_true(a >= 0);
    hid_t t = H5Aget_type(a);
    size_t n = H5Tget_size(t);
    assert_true(n < sizeof buf);
    memset(buf, 0, sizeof buf);
    assert_true(H5Aread(a, t, buf) >= 0);
    H5Tclose(t);
    H5Aclose(a);
    return buf;
}

static void test_schema__file_options_are_checked(void **state)
{
    (void)state;
    h5s_file *f = NULL;
    h5s_file_options o = H5S_FILE_OPTIONS_INIT;
    o.queue_bytes = 1000;
    assert_int_equal(h5s_file_create(&f, path, &o), H5S_EINVAL);
    assert_non_null(strstr(h5s_error_message(), "below 1 MiB"));
    o = (h5s_file_options)H5S_FILE_OPTIONS_INIT;
    o.version = 99;
    assert_int_equal(h5s_file_create(&f, path, &o), H5S_EINVAL);
    o = (h5s_file_options)H5S_FILE_OPTIONS_INIT;
    o.encode_threads = -1;
    assert_int_equal(h5s_file_create(&f, path, &o), H5S_EINVAL);
    assert_null(f);
    /* A folder that does not exist: HDF5's reason is in the message. */
    assert_int_equal(h5s_file_create(&f, "/nonexistent-dir/x.h5", NULL), H5S_EIO);
    assert_non_null(strstr(h5s_error_message(), "/nonexistent-dir/x.h5"));
}

static void test_schema__frame_options_are_checked(void **state)
{
    (void)state;
    h5s_file *f;
    h5s_frames *fr;
    assert_int_equal(h5s_file_create(&f, path, NULL), 0);
    h5s_frames_options o = frame_opts(4, 2, 2, 2);
    assert_int_equal(h5s_frames_create(&fr, f, NULL, &o), H5S_EINVAL);
    assert_non_null(strstr(h5s_error_message(), "rank 4"));
    o = frame_opts(2, 0, 10, 0);
    assert_int_equal(h5s_frames_create(&fr, f, NULL, &o), H5S_EINVAL);
    o = frame_opts(2, 10, 10, 0);
    o.tile[0] = 11;
    o.tile[1] = 5;
    assert_int_equal(h5s_frames_create(&fr, f, NULL, &o), H5S_EINVAL);
    assert_non_null(strstr(h5s_error_message(), "tile axis 0 is 11"));
    o = frame_opts(2, 10, 10, 0);
    o.frames_per_chunk = 0;
    assert_int_equal(h5s_frames_create(&fr, f, NULL, &o), H5S_EINVAL);
    o = frame_opts(2, 10, 10, 0);
    o.codec.kind = H5S_CODEC_DEFLATE;
    o.codec.level = 4;
    o.codec.shuffle = H5S_SHUFFLE_BIT; /* bitshuffle is Blosc's */
    assert_int_equal(h5s_frames_create(&fr, f, NULL, &o), H5S_EINVAL);
    o = frame_opts(2, 10, 10, 0);
    assert_int_equal(h5s_frames_create(&fr, f, "relative/path", &o), H5S_EINVAL);
    o = frame_opts(2, 100000, 100000, 0); /* 20 GB chunk */
    assert_int_equal(h5s_frames_create(&fr, f, NULL, &o), H5S_EINVAL);
    assert_non_null(strstr(h5s_error_message(), "4 GiB"));
    o = frame_opts(2, 10, 10, 0);
    o.dtype = H5S_DTYPE_INVALID;
    assert_int_equal(h5s_frames_create(&fr, f, NULL, &o), H5S_EINVAL);
    /* A fill value the dtype cannot hold is refused, never silently clamped. */
    o = frame_opts(2, 10, 10, 0);
    o.dtype = H5S_UINT8;
    o.fill_value = 300;
    assert_int_equal(h5s_frames_create(&fr, f, NULL, &o), H5S_EINVAL);
    assert_non_null(strstr(h5s_error_message(), "fill value 300 does not fit uint8 (0 to 255)"));
    o.fill_value = -1;
    assert_int_equal(h5s_frames_create(&fr, f, NULL, &o), H5S_EINVAL);
    o.dtype = H5S_UINT16;
    o.fill_value = 1.5;
    assert_int_equal(h5s_frames_create(&fr, f, NULL, &o), H5S_EINVAL);
    /* In range (or a float type) is fine: checked by creating such datasets. */
    o = frame_opts(2, 10, 10, 0);
    o.dtype = H5S_INT8;
    o.fill_value = -128;
    assert_int_equal(h5s_frames_create(&fr, f, "/ok/int8", &o), 0);
    o.dtype = H5S_FLOAT32;
    o.fill_value = 0.1;
    assert_int_equal(h5s_frames_create(&fr, f, "/ok/float32", &o), 0);
    /* Nothing was created by the refused calls. */
    assert_false(H5Lexists(f->fid, "/entry", H5P_DEFAULT) > 0);
    assert_int_equal(h5s_file_close(f), 0);
}

static void test_schema__nexus_default_layout(void **state)
{
    (void)state;
    h5s_file *f;
    h5s_frames *fr;
    assert_int_equal(h5s_file_create(&f, path, NULL), 0);
    h5s_frames_options o = frame_opts(2, 195, 487, 0);
    o.dtype = H5S_INT32;
    assert_int_equal(h5s_frames_create(&fr, f, NULL, &o), 0);
    /* A second default dataset would collide. */
    h5s_frames *again;
    assert_int_equal(h5s_frames_create(&again, f, NULL, &o), H5S_EINVAL);
    assert_int_equal(h5s_file_start_swmr(f), 0);
    assert_int_equal(h5s_file_close(f), 0);

    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(fid >= 0);
    assert_string_equal(read_string_attr(fid, "h5stream_format"), "h5stream");
    assert_string_equal(read_string_attr(fid, "h5stream_models"), "frames");
    assert_string_equal(read_string_attr(fid, "default"), "entry");
    const char *groups[][2] = {{"/entry", "NXentry"},
                               {"/entry/instrument", "NXinstrument"},
                               {"/entry/instrument/detector", "NXdetector"},
                               {"/entry/data", "NXdata"}};
    for (size_t i = 0; i < 4; i++) {
        hid_t g = H5Gopen2(fid, groups[i][0], H5P_DEFAULT);
        assert_true(g >= 0);
        assert_string_equal(read_string_attr(g, "NX_class"), groups[i][1]);
        H5Gclose(g);
    }
    hid_t g = H5Gopen2(fid, "/entry/data", H5P_DEFAULT);
    assert_string_equal(read_string_attr(g, "signal"), "data");
    H5Gclose(g);
    /* /entry/data/data is a hard link: the same object as the detector data. */
    H5O_info_t a, b;
    assert_true(H5Oget_info_by_name(fid, H5S_FRAMES_DEFAULT_PATH, &a, H5P_DEFAULT) >= 0);
    assert_true(H5Oget_info_by_name(fid, H5S_FRAMES_NXDATA_LINK, &b, H5P_DEFAULT) >= 0);
    assert_int_equal(a.addr, b.addr);
    assert_int_equal(a.rc, 2);
    hid_t d = H5Dopen2(fid, H5S_FRAMES_DEFAULT_PATH, H5P_DEFAULT);
    hid_t space = H5Dget_space(d);
    hsize_t dims[3], maxdims[3];
    assert_int_equal(H5Sget_simple_extent_dims(space, dims, maxdims), 3);
    assert_int_equal(dims[0], 0);
    assert_int_equal(dims[1], 195);
    assert_int_equal(dims[2], 487);
    assert_true(maxdims[0] == H5S_UNLIMITED);
    H5Sclose(space);
    H5Dclose(d);
    assert_true(H5Lexists(fid, "/entry/instrument/detector/frame_id", H5P_DEFAULT) > 0);
    hid_t ts = H5Dopen2(fid, "/entry/instrument/detector/timestamp", H5P_DEFAULT);
    assert_true(ts >= 0);
    assert_string_equal(read_string_attr(ts, "units"), "s"); /* NeXus units */
    H5Dclose(ts);
    H5Fclose(fid);
}

static void test_schema__custom_path_and_scalars(void **state)
{
    (void)state;
    h5s_file *f;
    h5s_frames *fr;
    assert_int_equal(h5s_file_create(&f, path, NULL), 0);
    h5s_frames_options o = frame_opts(1, 2048, 0, 0);
    o.frames_per_chunk = 16;
    assert_int_equal(h5s_frames_create(&fr, f, "/cam2/spectrum", &o), 0);
    assert_int_equal(h5s_frames_add_scalar(fr, "exposure", H5S_FLOAT32), 0);
    assert_int_equal(h5s_frames_add_scalar(fr, "exposure", H5S_FLOAT32), H5S_EINVAL);
    assert_int_equal(h5s_frames_add_scalar(fr, "frame_id", H5S_UINT64), H5S_EINVAL);
    assert_int_equal(h5s_frames_add_scalar(fr, "a/b", H5S_UINT64), H5S_EINVAL);
    assert_int_equal(h5s_frames_add_scalar(fr, "", H5S_UINT64), H5S_EINVAL);
    assert_int_equal(h5s_file_link(f, "/alias/spectrum", "/cam2/spectrum"), 0);
    assert_int_equal(h5s_file_link(f, "/alias/spectrum", "/cam2/spectrum"), H5S_EINVAL);
    assert_int_equal(h5s_file_link(f, "/alias/none", "/cam2/missing"), H5S_ENOTFOUND);
    assert_int_equal(h5s_file_start_swmr(f), 0);
    /* After SWMR starts the schema is frozen. */
    assert_int_equal(h5s_frames_add_scalar(fr, "gain", H5S_FLOAT32), H5S_ESTATE);
    assert_int_equal(h5s_file_link(f, "/alias/x", "/cam2/spectrum"), H5S_ESTATE);
    h5s_frames *late;
    assert_int_equal(h5s_frames_create(&late, f, "/late", &o), H5S_ESTATE);
    assert_int_equal(h5s_file_start_swmr(f), H5S_ESTATE);
    assert_int_equal(h5s_file_close(f), 0);

    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(H5Lexists(fid, "/cam2/spectrum_frame_id", H5P_DEFAULT) > 0);
    assert_true(H5Lexists(fid, "/cam2/spectrum_timestamp", H5P_DEFAULT) > 0);
    assert_true(H5Lexists(fid, "/cam2/spectrum_exposure", H5P_DEFAULT) > 0);
    assert_false(H5Lexists(fid, "/entry", H5P_DEFAULT) > 0);
    hid_t d = H5Dopen2(fid, "/cam2/spectrum", H5P_DEFAULT);
    assert_string_equal(read_string_attr(d, "h5stream_per_frame"),
                        "spectrum_timestamp,spectrum_exposure");
    hid_t dcpl = H5Dget_create_plist(d);
    hsize_t chunk[2];
    assert_int_equal(H5Pget_chunk(dcpl, 2, chunk), 2);
    assert_int_equal(chunk[0], 16);
    assert_int_equal(chunk[1], 2048);
    H5Pclose(dcpl);
    H5Dclose(d);
    H5Fclose(fid);
}

static void test_schema__close_before_start_leaves_a_valid_file(void **state)
{
    (void)state;
    h5s_file *f;
    h5s_frames *fr;
    assert_int_equal(h5s_file_create(&f, path, NULL), 0);
    h5s_frames_options o = frame_opts(2, 8, 8, 0);
    assert_int_equal(h5s_frames_create(&fr, f, NULL, &o), 0);
    assert_int_equal(h5s_frames_append(fr, "x", 1, NULL), H5S_ESTATE);
    assert_int_equal(h5s_file_flush(f), H5S_ESTATE);
    assert_int_equal(h5s_file_close(f), 0);
    assert_int_equal(h5s_file_close(NULL), 0);

    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(fid >= 0);
    hid_t d = H5Dopen2(fid, H5S_STATUS_DATASET, H5P_DEFAULT);
    hid_t t = h5s_format_status_type();
    h5s_status_row row;
    assert_true(H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, &row) >= 0);
    assert_int_equal(row.state, H5S_STATE_CLOSED);
    assert_int_equal(row.committed, 0);
    H5Tclose(t);
    H5Dclose(d);
    H5Fclose(fid);
}

/* 1 if another open file description can take a shared flock on path right now. */
static int can_flock(const char *p)
{
    int fd = open(p, O_RDONLY);
    assert_true(fd >= 0);
    int ok = flock(fd, LOCK_SH | LOCK_NB) == 0;
    assert_true(ok || errno == EWOULDBLOCK);
    close(fd);
    return ok;
}

static void test_schema__locking_policy_reaches_hdf5(void **state)
{
    (void)state;
    /* HDF5 1.10 holds an exclusive flock on a file it writes, until SWMR starts; the policy
     * decides whether it takes it (its file-access list does not report the setting). */
    const struct {
        h5s_locking policy;
        int others_can_lock;
    } cases[] = {{H5S_LOCKING_ON, 0}, {H5S_LOCKING_OFF, 1}, {H5S_LOCKING_BEST_EFFORT, 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        h5s_file *f;
        h5s_file_options o = H5S_FILE_OPTIONS_INIT;
        o.locking = cases[i].policy;
        assert_int_equal(h5s_file_create(&f, path, &o), 0);
        assert_int_equal(can_flock(path), cases[i].others_can_lock);
        assert_int_equal(h5s_file_close(f), 0);
        assert_true(can_flock(path)); /* released at close */
    }
    h5s_file *f = NULL;
    h5s_file_options o = H5S_FILE_OPTIONS_INIT;
    o.locking = (h5s_locking)17;
    assert_int_equal(h5s_file_create(&f, path, &o), H5S_EINVAL);
}

int main(void)
{
    /* HDF5 reads this once, at its first call, and lets it override every file's own
     * locking setting: clear it so the locking test sees the policy alone. */
    unsetenv("HDF5_USE_FILE_LOCKING");
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_schema__file_options_are_checked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_schema__frame_options_are_checked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_schema__nexus_default_layout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_schema__custom_path_and_scalars, setup, teardown),
        cmocka_unit_test_setup_teardown(test_schema__close_before_start_leaves_a_valid_file, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_schema__locking_policy_reaches_hdf5, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
