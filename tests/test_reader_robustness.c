/*
 * test_reader_robustness.c - the four reader APIs' open calls on files that are not what
 * they expect: the documented error code and a message naming the file and the problem,
 * never a crash (the sanitizer build checks the memory too).
 *
 * Damage, made from copies of small files each model's writer makes here: a plain text
 * file, an empty file, an HDF5 file of another program; each model's file cut at several
 * offsets; each model's file with one required dataset deleted. The command-line entry
 * points on the same kinds of damage are tests/scripts/test_cli_robustness.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <hdf5.h>

#include "h5s_format.h"
#include "h5s_marc_reader.h"
#include "h5s_marc_writer.h"
#include "h5s_reader.h"
#include "h5s_tracts.h"
#include "h5s_tracts_reader.h"
#include "h5s_volumes.h"
#include "h5s_volumes_reader.h"
#include "h5stream.h"

typedef enum { M_FRAMES, M_TRACTS, M_VOLUMES, M_MARC, M_COUNT } model;

static const char *const model_names[M_COUNT] = {"frames", "tracts", "volumes", "marc"};

/* ---- paths ---- */

static void tmp_path(char *out, size_t size, const char *name)
{
    const char *dir = getenv("H5S_TEST_TMP");
    snprintf(out, size, "%s/robust_%s.h5", dir && dir[0] ? dir : "/tmp", name);
}

static void good_path(char *out, size_t size, model m)
{
    char name[64];
    snprintf(name, sizeof name, "good_%s", model_names[m]);
    tmp_path(out, size, name);
}

/* ---- one clean file per model, made with the writer APIs ---- */

static void write_frames(const char *path)
{
    h5s_file *f = NULL;
    h5s_frames *fr = NULL;
    h5s_frames_options o = H5S_FRAMES_OPTIONS_INIT;
    o.dtype = H5S_UINT16;
    o.rank = 2;
    o.dims[0] = 8;
    o.dims[1] = 8;
    assert_int_equal(h5s_file_create(&f, path, NULL), 0);
    assert_int_equal(h5s_frames_create(&fr, f, NULL, &o), 0);
    assert_int_equal(h5s_file_start_swmr(f), 0);
    uint16_t frame[64];
    for (int i = 0; i < 5; i++) {
        for (int p = 0; p < 64; p++)
            frame[p] = (uint16_t)(i * 100 + p);
        assert_int_equal(h5s_frames_append(fr, frame, sizeof frame, NULL), 0);
    }
    assert_int_equal(h5s_file_close(f), 0);
}

static void write_tracts(const char *path)
{
    h5s_file *f = NULL;
    h5s_tracts *t = NULL;
    h5s_tracts_options o = H5S_TRACTS_OPTIONS_INIT;
    assert_int_equal(h5s_file_create(&f, path, NULL), 0);
    assert_int_equal(h5s_tracts_create(&t, f, &o), 0);
    assert_int_equal(h5s_file_start_swmr(f), 0);
    float pts[4 * 3];
    for (int i = 0; i < 6; i++) {
        for (int j = 0; j < 12; j++)
            pts[j] = (float)(i + j);
        assert_int_equal(h5s_tracts_push(t, pts, 2 + (uint64_t)(i % 3), NULL, NULL, NULL), 0);
    }
    assert_int_equal(h5s_file_close(f), 0);
}

static void write_volumes(const char *path)
{
    h5s_file *f = NULL;
    h5s_volumes *v = NULL;
    h5s_collection *c = NULL;
    h5s_collection_options co = H5S_COLLECTION_OPTIONS_INIT;
    co.dtype = H5S_INT16;
    co.ndim = 3;
    co.shape[0] = 4;
    co.shape[1] = 3;
    co.shape[2] = 2;
    assert_int_equal(h5s_file_create(&f, path, NULL), 0);
    assert_int_equal(h5s_volumes_create(&v, f, NULL, 0), 0);
    assert_int_equal(h5s_volumes_add_collection(&c, v, "anat", &co), 0);
    assert_int_equal(h5s_file_start_swmr(f), 0);
    double affine[4][4] = {{1, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 0}, {0, 0, 0, 1}};
    int64_t shape[3] = {4, 3, 2};
    int16_t vox[24];
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof id, "vol%d", i);
        h5s_volume_obs obs;
        assert_int_equal(h5s_volume_obs_init(&obs, id, "s1", "T1w", 3, shape, NULL, affine), 0);
        for (int k = 0; k < 24; k++)
            vox[k] = (int16_t)(i * 24 + k);
        assert_int_equal(h5s_collection_write_volume(c, vox, sizeof vox, &obs, NULL), 0);
    }
    assert_int_equal(h5s_file_close(f), 0);
    h5s_volumes_free(v);
}

/* A tiny ISO 2709 record: leader, one directory entry (001), the field, the terminator. */
static size_t make_record(unsigned char *out, int n)
{
    char field[16];
    int flen = snprintf(field, sizeof field, "rec%04d", n) + 1; /* + field terminator */
    int base = 24 + 12 + 1, total = base + flen + 1;
    int len = snprintf((char *)out, 64, "%05dnam a22%05d   4500001%04d%05d", total, base, flen, 0);
    out[len++] = 0x1e; /* end of directory */
    memcpy(out + len, field, (size_t)flen - 1);
    len += flen - 1;
    out[len++] = 0x1e;
    out[len++] = 0x1d;
    return (size_t)len;
}

static void write_marc(const char *path)
{
    h5s_file *f = NULL;
    h5s_marc_model *m = NULL;
    const char *sources[1] = {"robust.mrc"};
    assert_int_equal(h5s_file_create(&f, path, NULL), 0);
    assert_int_equal(h5s_marc_model_create(&m, f, sources, 1, NULL), 0);
    assert_int_equal(h5s_file_start_swmr(f), 0);
    unsigned char recs[4][64];
    h5s_marc_item items[4];
    uint64_t at = 0;
    for (int i = 0; i < 4; i++) {
        size_t len = make_record(recs[i], i);
        memset(&items[i], 0, sizeof items[i]);
        items[i].data = recs[i];
        items[i].len = len;
        h5s_marc_model_index_row(&items[i].index, recs[i], len, NULL, 0);
        items[i].index.ordinal = (uint64_t)i;
        items[i].index.source_offset = at;
        at += len;
    }
    assert_int_equal(h5s_marc_model_append(m, items, 4), 0);
    assert_int_equal(h5s_marc_model_finish(m), 0);
    assert_int_equal(h5s_file_close(f), 0);
    h5s_marc_model_free(m);
}

static int setup(void **state)
{
    (void)state;
    static void (*const writers[M_COUNT])(const char *) = {write_frames, write_tracts,
                                                           write_volumes, write_marc};
    for (int m = 0; m < M_COUNT; m++) {
        char path[512];
        good_path(path, sizeof path, (model)m);
        writers[m](path);
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int m = 0; m < M_COUNT; m++) {
        char path[512];
        good_path(path, sizeof path, (model)m);
        unlink(path);
    }
    return 0;
}

/* ---- opening with each API ---- */

/* Opens path with model m's reader, trying once; closes it if it opened. The code. */
static int open_with(model m, const char *path)
{
    switch (m) {
    case M_FRAMES: {
        h5s_reader *r = NULL;
        int rc = h5s_reader_open(&r, path, NULL, NULL);
        h5s_reader_close(r);
        return rc;
    }
    case M_TRACTS: {
        h5s_tracts_reader *r = NULL;
        int rc = h5s_tracts_reader_open(&r, path, NULL);
        h5s_tracts_reader_close(r);
        return rc;
    }
    case M_VOLUMES: {
        h5s_volumes_reader *r = NULL;
        int rc = h5s_volumes_reader_open(&r, path, NULL);
        h5s_volumes_reader_close(r);
        return rc;
    }
    default: {
        h5s_marc_reader *r = NULL;
        int rc = h5s_marc_reader_open(&r, path, NULL);
        h5s_marc_reader_close(r);
        return rc;
    }
    }
}

/* Asserts rc is one of the two codes and the message names path and says word. */
static void expect(model m, const char *path, int rc, int code1, int code2, const char *word)
{
    const char *msg = h5s_error_message();
    if (rc != code1 && rc != code2)
        fail_msg("%s reader on %s: %d (%s), expected %d or %d; message: %s", model_names[m], path,
                 rc, h5s_strerror(rc), code1, code2, msg);
    if (!strstr(msg, path) || !strstr(msg, word))
        fail_msg("%s reader on %s: message '%s' should name the file and say '%s'", model_names[m],
                 path, msg, word);
}

/* ---- not h5stream's ---- */

static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

static void test_reader_robustness__text_file(void **state)
{
    (void)state;
    char path[512];
    tmp_path(path, sizeof path, "text");
    const char text[] = "this is a plain text file, not HDF5\n";
    write_bytes(path, text, sizeof text - 1);
    for (int m = 0; m < M_COUNT; m++)
        expect((model)m, path, open_with((model)m, path), H5S_EFORMAT, H5S_EFORMAT,
               "not an HDF5 file");
    unlink(path);
}

static void test_reader_robustness__empty_file(void **state)
{
    (void)state;
    char path[512];
    tmp_path(path, sizeof path, "empty");
    write_bytes(path, "", 0);
    for (int m = 0; m < M_COUNT; m++)
        expect((model)m, path, open_with((model)m, path), H5S_EFORMAT, H5S_EFORMAT, "empty");
    unlink(path);
}

static void test_reader_robustness__other_hdf5_file(void **state)
{
    (void)state;
    char path[512];
    tmp_path(path, sizeof path, "other");
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(f >= 0);
    hsize_t dims[2] = {4, 4};
    hid_t space = H5Screate_simple(2, dims, NULL);
    hid_t d = H5Dcreate2(f, "data", H5T_STD_I32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(d >= 0);
    H5Dclose(d);
    H5Sclose(space);
    assert_true(H5Fclose(f) >= 0);
    /* Each names what it looked for. */
    static const char *const looked_for[M_COUNT] = {H5S_FRAMES_DEFAULT_PATH, "/tracts", "/volumes",
                                                    "/marc/index"};
    for (int m = 0; m < M_COUNT; m++)
        expect((model)m, path, open_with((model)m, path), H5S_ENOTFOUND, H5S_EFORMAT,
               looked_for[m]);
    unlink(path);
}

/* ---- truncated ---- */

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    assert_true(size > 0);
    fseek(fp, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)size);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)size, fp), (size_t)size);
    fclose(fp);
    *n = (size_t)size;
    return buf;
}

static void test_reader_robustness__truncated_files(void **state)
{
    (void)state;
    for (int m = 0; m < M_COUNT; m++) {
        char good[512];
        good_path(good, sizeof good, (model)m);
        size_t size;
        unsigned char *bytes = slurp(good, &size);
        size_t cuts[] = {20, 48, 1024, size / 2, size - 1};
        for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
            if (cuts[i] == 0 || cuts[i] >= size)
                continue;
            char name[64], path[512];
            snprintf(name, sizeof name, "%s_cut%zu", model_names[m], cuts[i]);
            tmp_path(path, sizeof path, name);
            write_bytes(path, bytes, cuts[i]);
            int rc = open_with((model)m, path);
            /* Shorter than its superblock says, or cut inside the superblock. */
            expect((model)m, path, rc, H5S_EFORMAT, H5S_EFORMAT,
                   cuts[i] < 48 ? "cut short inside its HDF5 superblock" : "shorter");
            unlink(path);
        }
        free(bytes);
    }
}

/* ---- a required dataset missing ---- */

static void copy_without(const char *good, const char *path, const char *gone)
{
    size_t n;
    unsigned char *bytes = slurp(good, &n);
    write_bytes(path, bytes, n);
    free(bytes);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0);
    assert_true(H5Ldelete(f, gone, H5P_DEFAULT) >= 0);
    assert_true(H5Fclose(f) >= 0);
}

static void missing(model m, const char *gone)
{
    char good[512], name[128], path[512];
    good_path(good, sizeof good, m);
    snprintf(name, sizeof name, "%s_without", model_names[m]);
    for (const char *c = gone; *c && strlen(name) + 2 < sizeof name; c++) {
        size_t len = strlen(name);
        name[len] = *c == '/' ? '_' : *c;
        name[len + 1] = '\0';
    }
    tmp_path(path, sizeof path, name);
    copy_without(good, path, gone);
    expect(m, path, open_with(m, path), H5S_ENOTFOUND, H5S_EFORMAT, gone);
    unlink(path);
}

static void test_reader_robustness__frames_missing_dataset(void **state)
{
    (void)state;
    missing(M_FRAMES, "/entry/instrument/detector/frame_id");
    missing(M_FRAMES, H5S_FRAMES_DEFAULT_PATH);
}

static void test_reader_robustness__tracts_missing_dataset(void **state)
{
    (void)state;
    missing(M_TRACTS, "/tracts/offsets");
    missing(M_TRACTS, "/tracts/positions");
}

static void test_reader_robustness__volumes_missing_dataset(void **state)
{
    (void)state;
    missing(M_VOLUMES, "/volumes/anat/obs");
    missing(M_VOLUMES, "/volumes/anat/voxels");
    missing(M_VOLUMES, "/obs_meta");
}

static void test_reader_robustness__marc_missing_dataset(void **state)
{
    (void)state;
    missing(M_MARC, "/marc/index");
    missing(M_MARC, "/marc/offsets");
    missing(M_MARC, "/marc/records");
}

/* The clean files open with every API: the damage, not the setup, makes the errors. */
static void test_reader_robustness__clean_files_open(void **state)
{
    (void)state;
    for (int m = 0; m < M_COUNT; m++) {
        char path[512];
        good_path(path, sizeof path, (model)m);
        int rc = open_with((model)m, path);
        if (rc != 0)
            fail_msg("%s reader on the clean file: %s", model_names[m], h5s_error_message());
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reader_robustness__clean_files_open),
        cmocka_unit_test(test_reader_robustness__text_file),
        cmocka_unit_test(test_reader_robustness__empty_file),
        cmocka_unit_test(test_reader_robustness__other_hdf5_file),
        cmocka_unit_test(test_reader_robustness__truncated_files),
        cmocka_unit_test(test_reader_robustness__frames_missing_dataset),
        cmocka_unit_test(test_reader_robustness__tracts_missing_dataset),
        cmocka_unit_test(test_reader_robustness__volumes_missing_dataset),
        cmocka_unit_test(test_reader_robustness__marc_missing_dataset),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
