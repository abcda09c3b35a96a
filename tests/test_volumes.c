/*
 * test_volumes.c - the volumes model (h5stream/h5s_volumes.c) and its reader
 * (readers/h5s_volumes_reader.c): uniform (slice and block chunks, 3-D and 4-D) and
 * heterogeneous collections read back whole and in parts, obs rows and obs_meta, the
 * errors for duplicate obs_ids and shape/dtype mismatches, NIfTI import of the shared
 * data and of broken copies, and 10,000 small volumes within the queue budget.
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

#include "h5s_codec.h"
#include "h5s_nifti.h"
#include "h5s_volumes.h"
#include "h5s_volumes_reader.h"

static char tmpdir[1024];
static const char *shared;

static void tmp_path(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", tmpdir, name);
}

/* Voxel (x, y, z, t) of volume v: a value that differs for every voxel and volume. */
static int16_t voxel(int v, uint64_t x, uint64_t y, uint64_t z, uint64_t t)
{
    return (int16_t)(v * 1000 + (int)(t * 211 + z * 37 + y * 7 + x));
}

static int16_t *make_volume(int v, int ndim, const int64_t *shape)
{
    uint64_t nt = ndim > 3 ? (uint64_t)shape[3] : 1;
    size_t n = (size_t)(shape[0] * shape[1] * shape[2]) * nt;
    int16_t *d = malloc(n * 2);
    size_t i = 0;
    for (uint64_t t = 0; t < nt; t++)
        for (int64_t z = 0; z < shape[2]; z++)
            for (int64_t y = 0; y < shape[1]; y++)
                for (int64_t x = 0; x < shape[0]; x++)
                    d[i++] = voxel(v, (uint64_t)x, (uint64_t)y, (uint64_t)z, t);
    return d;
}

typedef struct {
    h5s_file *file;
    h5s_volumes *vols;
    h5s_collection *coll;
} writer;

static const h5s_meta_column meta_cols[] = {
    {"sex", H5S_META_STRING, 8}, {"age", H5S_META_INT, 0}, {"weight", H5S_META_FLOAT, 0}};

static void open_writer(writer *w, const char *path, const h5s_collection_options *co,
                        size_t queue_bytes)
{
    h5s_file_options fo = H5S_FILE_OPTIONS_INIT;
    fo.queue_bytes = queue_bytes;
    fo.flush_ms = 20;
    assert_int_equal(h5s_file_create(&w->file, path, &fo), 0);
    assert_int_equal(h5s_volumes_create(&w->vols, w->file, meta_cols, 3), 0);
    assert_int_equal(h5s_volumes_add_collection(&w->coll, w->vols, "anat", co), 0);
    assert_int_equal(h5s_file_start_swmr(w->file), 0);
}

static void close_writer(writer *w)
{
    assert_int_equal(h5s_file_close(w->file), 0);
    h5s_volumes_free(w->vols);
}

static void write_vol(writer *w, int v, int ndim, const int64_t *shape, const char *subject)
{
    char id[32];
    snprintf(id, sizeof id, "vol%d", v);
    h5s_volume_obs o;
    double affine[4][4] = {{-2, 0, 0, 90}, {0, 2, 0, -126}, {0, 0, 2.5, -72}, {0, 0, 0, 1}};
    assert_int_equal(h5s_volume_obs_init(&o, id, subject, "T1w", ndim, shape, NULL, affine), 0);
    int16_t *d = make_volume(v, ndim, shape);
    size_t bytes = (size_t)h5s_volume_obs_voxels(&o) * 2;
    assert_int_equal(h5s_collection_write_volume(w->coll, d, bytes, &o, NULL), 0);
    free(d);
}

/* Reads box b of volume index and compares it with voxel(). */
static void check_box(h5s_volumes_reader *r, const char *coll, uint64_t index, int v,
                      const h5s_volume_box *b)
{
    uint64_t n = h5s_volume_box_voxels(b);
    int16_t *buf = malloc((size_t)n * 2);
    assert_int_equal(h5s_volumes_reader_read(r, coll, index, b, buf, (size_t)n * 2), 0);
    size_t i = 0;
    for (uint64_t t = b->lo[3]; t < b->hi[3]; t++)
        for (uint64_t z = b->lo[2]; z < b->hi[2]; z++)
            for (uint64_t y = b->lo[1]; y < b->hi[1]; y++)
                for (uint64_t x = b->lo[0]; x < b->hi[0]; x++, i++)
                    if (buf[i] != voxel(v, x, y, z, t))
                        fail_msg("volume %d voxel %llu,%llu,%llu,%llu: %d, expected %d", v,
                                 (unsigned long long)x, (unsigned long long)y,
                                 (unsigned long long)z, (unsigned long long)t, buf[i],
                                 voxel(v, x, y, z, t));
    free(buf);
}

/* Whole volume, every axial/coronal/sagittal plane, and an inner box. */
static void check_volume(h5s_volumes_reader *r, const char *coll, uint64_t index, int v)
{
    h5s_volume_obs o;
    assert_int_equal(h5s_volumes_reader_obs(r, coll, index, &o), 0);
    h5s_volume_box b;
    h5s_volume_box_full(&b, &o);
    check_box(r, coll, index, v, &b);
    for (int axis = 0; axis < 3; axis++)
        for (uint64_t k = 0; k < (uint64_t)o.shape[axis]; k++) {
            assert_int_equal(h5s_volume_box_slice(&b, &o, axis, k), 0);
            check_box(r, coll, index, v, &b);
        }
    h5s_volume_box_full(&b, &o);
    for (int a = 0; a < 3; a++)
        if (b.hi[a] > 2) {
            b.lo[a] = 1;
            b.hi[a] -= 1;
        }
    check_box(r, coll, index, v, &b);
    assert_int_equal(h5s_volume_box_slice(&b, &o, 2, (uint64_t)o.shape[2]), H5S_ERANGE);
}

static void run_uniform(const char *name, int ndim, const int64_t *shape, uint64_t block,
                        const char *codec)
{
    char path[1200];
    tmp_path(path, sizeof path, name);
    h5s_collection_options co = H5S_COLLECTION_OPTIONS_INIT;
    co.ndim = ndim;
    for (int i = 0; i < ndim; i++)
        co.shape[i] = (uint64_t)shape[i];
    co.block[0] = co.block[1] = co.block[2] = block;
    assert_int_equal(h5s_codec_parse(&co.codec, codec), 0);
    writer w;
    open_writer(&w, path, &co, (size_t)4 << 20);
    for (int v = 0; v < 4; v++)
        write_vol(&w, v, ndim, shape, v < 2 ? "01" : "02");
    const char *ids[2] = {"01", "02"};
    h5s_meta_value vals[6] = {{"F", 0, 0}, {NULL, 31, 0}, {NULL, 0, 61.5},
                              {"M", 0, 0}, {NULL, 45, 0}, {NULL, 0, 80.25}};
    assert_int_equal(h5s_volumes_write_obs_meta(w.vols, ids, vals, 2), 0);
    close_writer(&w);

    h5s_volumes_reader *r = NULL;
    assert_int_equal(h5s_volumes_reader_open(&r, path, NULL), 0);
    assert_int_equal(h5s_volumes_reader_ncollections(r), 1);
    assert_string_equal(h5s_volumes_reader_collection(r, 0), "anat");
    h5s_collection_desc d;
    assert_int_equal(h5s_volumes_reader_describe(r, "anat", &d), 0);
    assert_int_equal(d.committed, 4);
    assert_int_equal(d.dtype, H5S_INT16);
    assert_int_equal(d.heterogeneous, 0);
    assert_int_equal(h5s_volumes_reader_state(r), H5S_WRITER_CLOSED);
    for (int v = 0; v < 4; v++)
        check_volume(r, "anat", (uint64_t)v, v);
    h5s_volume_obs o;
    assert_int_equal(h5s_volumes_reader_obs(r, "anat", 2, &o), 0);
    assert_string_equal(o.obs_id, "vol2");
    assert_string_equal(o.obs_subject_id, "02");
    assert_string_equal(o.series_type, "T1w");
    assert_int_equal(o.voxel_index, 2);
    assert_int_equal(o.nifti_datatype, 4); /* NIFTI_TYPE_INT16 */
    assert_true(o.affine[0][0] == -2 && o.affine[2][2] == 2.5 && o.affine[1][3] == -126);
    assert_int_equal(o.qform_code, 1);
    assert_int_equal(o.sform_code, 1);
    assert_int_equal(h5s_volumes_reader_obs(r, "anat", 4, &o), H5S_ERANGE);
    uint64_t index = 99;
    const char *cname = NULL;
    assert_int_equal(h5s_volumes_reader_find(r, NULL, "vol3", &cname, &index), 0);
    assert_int_equal(index, 3);
    assert_string_equal(cname, "anat");
    assert_int_equal(h5s_volumes_reader_find(r, NULL, "nope", NULL, &index), H5S_ENOTFOUND);
    /* Filters on obs and obs_meta columns. */
    uint64_t *sel = NULL;
    size_t nsel = 0;
    const char *w1[] = {"age=45"};
    assert_int_equal(h5s_volumes_reader_select(r, "anat", w1, 1, &sel, &nsel), 0);
    assert_int_equal(nsel, 2);
    assert_int_equal(sel[0], 2);
    assert_int_equal(sel[1], 3);
    free(sel);
    const char *w2[] = {"sex=F", "obs_id=vol1"};
    assert_int_equal(h5s_volumes_reader_select(r, "anat", w2, 2, &sel, &nsel), 0);
    assert_int_equal(nsel, 1);
    assert_int_equal(sel[0], 1);
    free(sel);
    const char *w3[] = {"nosuch=1"};
    assert_int_equal(h5s_volumes_reader_select(r, "anat", w3, 1, &sel, &nsel), H5S_EINVAL);
    assert_non_null(strstr(h5s_error_message(), "nosuch"));
    h5s_volumes_reader_close(r);

    /* The voxels dataset: [N, (T,) Z, Y, X] with the declared chunks. */
    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t ds = H5Dopen2(fid, "/volumes/anat/voxels", H5P_DEFAULT);
    hid_t sp = H5Dget_space(ds), dcpl = H5Dget_create_plist(ds);
    hsize_t dims[5], chunk[5];
    int rank = H5Sget_simple_extent_dims(sp, dims, NULL);
    assert_int_equal(rank, ndim + 1);
    assert_int_equal(H5Pget_chunk(dcpl, 5, chunk), rank);
    assert_int_equal(dims[0], 4);
    assert_int_equal(dims[rank - 1], (hsize_t)shape[0]);
    assert_int_equal(dims[rank - 3], (hsize_t)shape[2]);
    if (block) {
        assert_int_equal(chunk[rank - 1], block < (uint64_t)shape[0] ? block : (uint64_t)shape[0]);
        assert_int_equal(chunk[rank - 3], block < (uint64_t)shape[2] ? block : (uint64_t)shape[2]);
    } else {
        assert_int_equal(chunk[rank - 3], 1);
        assert_int_equal(chunk[rank - 1], (hsize_t)shape[0]);
        assert_int_equal(chunk[rank - 2], (hsize_t)shape[1]);
    }
    H5Pclose(dcpl);
    H5Sclose(sp);
    H5Dclose(ds);
    H5Fclose(fid);
}

static void test_volumes__uniform_slices_deflate(void **state)
{
    (void)state;
    int64_t shape[3] = {9, 7, 5};
    run_uniform("slices.h5", 3, shape, 0, "deflate:4:shuffle");
}

static void test_volumes__uniform_blocks_4d_blosc(void **state)
{
    (void)state;
    int64_t shape[4] = {10, 7, 5, 3};
    run_uniform("blocks.h5", 4, shape, 4, "blosc:lz4:5:shuffle");
}

static void test_volumes__uniform_blocks_raw(void **state)
{
    (void)state;
    int64_t shape[3] = {16, 16, 16};
    run_uniform("blocks_raw.h5", 3, shape, 8, "none");
}

static void test_volumes__heterogeneous_pool(void **state)
{
    (void)state;
    char path[1200];
    tmp_path(path, sizeof path, "hetero.h5");
    h5s_collection_options co = H5S_COLLECTION_OPTIONS_INIT;
    co.heterogeneous = 1;
    co.pool_chunk = 64;
    assert_int_equal(h5s_codec_parse(&co.codec, "deflate:1"), 0);
    writer w;
    open_writer(&w, path, &co, (size_t)1 << 20);
    int64_t s0[3] = {5, 4, 3}, s1[4] = {3, 3, 2, 4}, s2[3] = {11, 2, 1};
    write_vol(&w, 0, 3, s0, "a");
    write_vol(&w, 1, 4, s1, "b");
    write_vol(&w, 2, 3, s2, "c");
    close_writer(&w);
    h5s_volumes_reader *r = NULL;
    assert_int_equal(h5s_volumes_reader_open(&r, path, NULL), 0);
    h5s_collection_desc d;
    assert_int_equal(h5s_volumes_reader_describe(r, NULL, &d), 0);
    assert_int_equal(d.heterogeneous, 1);
    assert_int_equal(d.committed, 3);
    uint64_t expect_off = 0;
    for (int v = 0; v < 3; v++) {
        h5s_volume_obs o;
        assert_int_equal(h5s_volumes_reader_obs(r, "anat", (uint64_t)v, &o), 0);
        /* Each volume starts on a chunk boundary, right after the previous one's chunks. */
        assert_int_equal(o.pool_offset % 64, 0);
        assert_int_equal(o.pool_offset, expect_off);
        expect_off += (h5s_volume_obs_voxels(&o) + 63) / 64 * 64;
        check_volume(r, "anat", (uint64_t)v, v);
    }
    h5s_volumes_reader_close(r);
}

static void test_volumes__duplicate_and_mismatch_errors(void **state)
{
    (void)state;
    char path[1200];
    tmp_path(path, sizeof path, "errors.h5");
    h5s_collection_options co = H5S_COLLECTION_OPTIONS_INIT;
    co.shape[0] = 4;
    co.shape[1] = 3;
    co.shape[2] = 2;
    writer w;
    open_writer(&w, path, &co, (size_t)1 << 20);
    int64_t shape[3] = {4, 3, 2};
    write_vol(&w, 0, 3, shape, "s");
    h5s_volume_obs o;
    int16_t data[24] = {0};
    assert_int_equal(h5s_volume_obs_init(&o, "vol0", "s", NULL, 3, shape, NULL, NULL), 0);
    assert_int_equal(h5s_collection_write_volume(w.coll, data, sizeof data, &o, NULL), H5S_EINVAL);
    assert_non_null(strstr(h5s_error_message(), "obs_id vol0 is already in the file"));
    int64_t other[3] = {4, 3, 3};
    assert_int_equal(h5s_volume_obs_init(&o, "volX", "s", NULL, 3, other, NULL, NULL), 0);
    assert_int_equal(h5s_collection_write_volume(w.coll, data, sizeof data, &o, NULL), H5S_EINVAL);
    assert_non_null(strstr(h5s_error_message(), "shape 4x3x3, the collection holds 4x3x2"));
    assert_int_equal(h5s_volume_obs_init(&o, "volY", "s", NULL, 3, shape, NULL, NULL), 0);
    o.nifti_datatype = 16; /* float32 */
    assert_int_equal(h5s_collection_write_volume(w.coll, data, sizeof data, &o, NULL), H5S_EINVAL);
    assert_non_null(strstr(h5s_error_message(), "dtype float32"));
    o.nifti_datatype = 0;
    assert_int_equal(h5s_collection_write_volume(w.coll, data, sizeof data - 2, &o, NULL),
                     H5S_EINVAL);
    assert_non_null(strstr(h5s_error_message(), "obs_id volY"));
    /* The failed attempt freed volY: it can be written now. */
    assert_int_equal(h5s_collection_write_volume(w.coll, data, sizeof data, &o, NULL), 0);
    /* A stream that stops early is dropped. */
    h5s_volume_stream *s = NULL;
    assert_int_equal(h5s_volume_obs_init(&o, "volZ", "s", NULL, 3, shape, NULL, NULL), 0);
    assert_int_equal(h5s_collection_begin(&s, w.coll, &o, NULL), 0);
    assert_int_equal(h5s_volume_stream_write(s, data, 12 * 2, 1), 0);
    assert_int_equal(h5s_volume_stream_write(s, data, 12 * 2 * 2, 2), H5S_ERANGE);
    assert_int_equal(h5s_volume_stream_commit(s), H5S_ESTATE);
    assert_non_null(strstr(h5s_error_message(), "1 of 2 slices"));
    /* Declaring after start is refused. */
    h5s_collection *late = NULL;
    assert_int_equal(h5s_volumes_add_collection(&late, w.vols, "late", &co), H5S_ESTATE);
    close_writer(&w);
    h5s_volumes_reader *r = NULL;
    assert_int_equal(h5s_volumes_reader_open(&r, path, NULL), 0);
    uint64_t n = 0;
    assert_int_equal(h5s_volumes_reader_refresh(r, "anat", &n), 0);
    assert_int_equal(n, 2);
    h5s_volume_obs got;
    assert_int_equal(h5s_volumes_reader_obs(r, "anat", 1, &got), 0);
    assert_string_equal(got.obs_id, "volY");
    h5s_volumes_reader_close(r);
}

static void test_volumes__bad_declarations(void **state)
{
    (void)state;
    char path[1200];
    tmp_path(path, sizeof path, "decl.h5");
    h5s_file *f = NULL;
    h5s_volumes *v = NULL;
    h5s_collection *c = NULL;
    assert_int_equal(h5s_file_create(&f, path, NULL), 0);
    h5s_meta_column dup[2] = {{"age", H5S_META_INT, 0}, {"age", H5S_META_FLOAT, 0}};
    assert_int_equal(h5s_volumes_create(&v, f, dup, 2), H5S_EINVAL);
    assert_non_null(strstr(h5s_error_message(), "'age' declared twice"));
    assert_int_equal(h5s_volumes_create(&v, f, NULL, 0), 0);
    h5s_collection_options co = H5S_COLLECTION_OPTIONS_INIT;
    assert_int_equal(h5s_volumes_add_collection(&c, v, "a", &co), H5S_EINVAL); /* shape 0 */
    co.shape[0] = co.shape[1] = co.shape[2] = 2;
    assert_int_equal(h5s_volumes_add_collection(&c, v, "bad/name", &co), H5S_EINVAL);
    co.dtype = H5S_FLOAT16;
    assert_int_equal(h5s_volumes_add_collection(&c, v, "a", &co), H5S_EINVAL);
    assert_non_null(strstr(h5s_error_message(), "float16"));
    co.dtype = H5S_UINT8;
    assert_int_equal(h5s_volumes_add_collection(&c, v, "a", &co), 0);
    assert_int_equal(h5s_volumes_add_collection(&c, v, "a", &co), H5S_EINVAL);
    assert_int_equal(h5s_file_close(f), 0);
    h5s_volumes_free(v);
}

/* Every shared NIfTI file imports (into a heterogeneous collection of its dtype) and
 * reads back equal to the formats layer's own load. */
static void test_volumes__import_shared_nifti(void **state)
{
    (void)state;
    static const char *files[] = {"anatomical.nii",   "functional.nii",        "example4d.nii.gz",
                                  "standard.nii.gz",  "example_nifti2.nii.gz", "small_25.nii.gz",
                                  "aniso_vox.nii.gz", "S0_10slices.nii.gz"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char src[1200], path[1200];
        snprintf(src, sizeof src, "%s/volumes/%s", shared, files[i]);
        snprintf(path, sizeof path, "%s/import%zu.h5", tmpdir, i);
        h5s_nifti_header h;
        void *data = NULL;
        assert_int_equal(h5s_nifti_load(&h, &data, src), 0);
        h5s_file *f = NULL;
        h5s_volumes *v = NULL;
        h5s_collection *c = NULL;
        h5s_collection_options co = H5S_COLLECTION_OPTIONS_INIT;
        co.dtype = h.dtype;
        co.heterogeneous = i % 2;
        if (!co.heterogeneous) {
            co.ndim = h.ndim >= 4 && h.dim[4] > 1 ? 4 : 3;
            for (int k = 0; k < co.ndim; k++)
                co.shape[k] = (uint64_t)(k < h.ndim ? h.dim[k + 1] : 1);
        }
        assert_int_equal(h5s_file_create(&f, path, NULL), 0);
        assert_int_equal(h5s_volumes_create(&v, f, NULL, 0), 0);
        assert_int_equal(h5s_volumes_add_collection(&c, v, "c", &co), 0);
        assert_int_equal(h5s_file_start_swmr(f), 0);
        assert_int_equal(h5s_collection_import_nifti(c, src, NULL, "01", NULL), 0);
        assert_int_equal(h5s_file_close(f), 0);
        h5s_volumes_free(v);
        h5s_volumes_reader *r = NULL;
        assert_int_equal(h5s_volumes_reader_open(&r, path, NULL), 0);
        h5s_volume_obs o;
        assert_int_equal(h5s_volumes_reader_obs(r, "c", 0, &o), 0);
        assert_int_equal(o.ndim, h.ndim);
        assert_int_equal(o.nifti_version, h.version);
        assert_int_equal(o.qform_code, h.qform_code);
        assert_int_equal(o.sform_code, h.sform_code);
        assert_true(o.pixdim[1] == h.pixdim[1] && o.pixdim[3] == h.pixdim[3]);
        size_t bytes = (size_t)h5s_nifti_data_bytes(&h);
        void *back = malloc(bytes);
        assert_int_equal(h5s_volumes_reader_read(r, "c", 0, NULL, back, bytes), 0);
        if (memcmp(back, data, bytes) != 0)
            fail_msg("%s: voxels differ after import", files[i]);
        /* obs_id from the file name; export writes a NIfTI equal to the source. */
        char out[1300];
        snprintf(out, sizeof out, "%s/export%zu.nii.gz", tmpdir, i);
        assert_int_equal(h5s_volumes_export_nifti(r, "c", 0, NULL, out), 0);
        h5s_nifti_header h2;
        void *data2 = NULL;
        assert_int_equal(h5s_nifti_load(&h2, &data2, out), 0);
        assert_int_equal(h2.ndim, h.ndim);
        assert_int_equal(h2.sform_code, h.sform_code);
        assert_int_equal(memcmp(data2, data, bytes), 0);
        free(data2);
        free(back);
        free(data);
        h5s_volumes_reader_close(r);
    }
}

static void copy_prefix(const char *src, const char *dst, long keep, long patch_at,
                        const void *patch, size_t patch_len)
{
    FILE *in = fopen(src, "rb");
    FILE *out = fopen(dst, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buf[4096];
    size_t n;
    long total = 0;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
        if (keep >= 0 && total + (long)n > keep)
            n = (size_t)(keep - total);
        if (patch && patch_at >= total && patch_at < total + (long)n)
            memcpy(buf + (patch_at - total), patch, patch_len);
        fwrite(buf, 1, n, out);
        total += (long)n;
        if (keep >= 0 && total >= keep)
            break;
    }
    fclose(in);
    fclose(out);
}

/* Broken NIfTI copies are refused with a clear error; the good file after them lands. */
static void test_volumes__bad_nifti_refused(void **state)
{
    (void)state;
    char src[1200], trunc[1200], voff[1200], path[1200];
    snprintf(src, sizeof src, "%s/volumes/anatomical.nii", shared);
    snprintf(trunc, sizeof trunc, "%s/truncated.nii", tmpdir);
    snprintf(voff, sizeof voff, "%s/bad_vox_offset.nii", tmpdir);
    tmp_path(path, sizeof path, "bad.h5");
    copy_prefix(src, trunc, 40000, -1, NULL, 0);
    float big = 1e9f;
    copy_prefix(src, voff, -1, 108, &big, 4); /* vox_offset past the end */
    h5s_nifti_header h;
    assert_int_equal(h5s_nifti_read_header(&h, src), 0);
    h5s_collection_options co = H5S_COLLECTION_OPTIONS_INIT;
    co.shape[0] = (uint64_t)h.dim[1];
    co.shape[1] = (uint64_t)h.dim[2];
    co.shape[2] = (uint64_t)h.dim[3];
    writer w;
    open_writer(&w, path, &co, (size_t)2 << 20);
    assert_int_equal(h5s_collection_import_nifti(w.coll, trunc, NULL, "01", NULL), H5S_EFORMAT);
    assert_non_null(strstr(h5s_error_message(), "truncated.nii"));
    assert_int_equal(h5s_collection_import_nifti(w.coll, voff, NULL, "01", NULL), H5S_EFORMAT);
    assert_non_null(strstr(h5s_error_message(), "bad_vox_offset.nii"));
    assert_int_equal(h5s_collection_import_nifti(w.coll, src, "good", "01", NULL), 0);
    close_writer(&w);
    h5s_volumes_reader *r = NULL;
    assert_int_equal(h5s_volumes_reader_open(&r, path, NULL), 0);
    uint64_t n = 0;
    assert_int_equal(h5s_volumes_reader_refresh(r, "anat", &n), 0);
    assert_int_equal(n, 1);
    h5s_volume_obs o;
    assert_int_equal(h5s_volumes_reader_obs(r, "anat", 0, &o), 0);
    assert_string_equal(o.obs_id, "good");
    /* The voxel index of the good volume follows the refused ones' reservations. */
    h5s_volumes_reader_close(r);
}

/* 10,000 small volumes through a 1 MiB queue: the queue never holds more than its budget
 * and a few chunks, and every volume is there. */
static void test_volumes__ten_thousand_bounded(void **state)
{
    (void)state;
    char path[1200];
    tmp_path(path, sizeof path, "many.h5");
    h5s_collection_options co = H5S_COLLECTION_OPTIONS_INIT;
    co.shape[0] = co.shape[1] = co.shape[2] = 8;
    writer w;
    open_writer(&w, path, &co, (size_t)1 << 20);
    int64_t shape[3] = {8, 8, 8};
    int16_t data[512];
    for (int v = 0; v < 10000; v++) {
        char id[32];
        snprintf(id, sizeof id, "v%05d", v);
        for (int i = 0; i < 512; i++)
            data[i] = (int16_t)(v + i);
        h5s_volume_obs o;
        assert_int_equal(h5s_volume_obs_init(&o, id, "s", NULL, 3, shape, NULL, NULL), 0);
        assert_int_equal(h5s_collection_write_volume(w.coll, data, sizeof data, &o, NULL), 0);
    }
    h5s_file_stats st;
    assert_int_equal(h5s_file_stats_get(w.file, &st), 0);
    assert_true(st.queue_peak_bytes <= ((size_t)3 << 20));
    assert_int_equal(h5s_collection_count(w.coll), 10000);
    close_writer(&w);
    h5s_volumes_reader *r = NULL;
    assert_int_equal(h5s_volumes_reader_open(&r, path, NULL), 0);
    uint64_t n = 0;
    assert_int_equal(h5s_volumes_reader_refresh(r, "anat", &n), 0);
    assert_int_equal(n, 10000);
    for (uint64_t v = 0; v < 10000; v += 997) {
        h5s_volume_obs o;
        assert_int_equal(h5s_volumes_reader_obs(r, "anat", v, &o), 0);
        assert_int_equal(o.voxel_index, v);
        int16_t back[512];
        assert_int_equal(h5s_volumes_reader_read(r, "anat", v, NULL, back, sizeof back), 0);
        for (int i = 0; i < 512; i++)
            assert_int_equal(back[i], (int16_t)(v + (uint64_t)i));
    }
    h5s_volumes_reader_close(r);
}

/* A reader opened while the writer streams sees the committed volumes, whole. */
static void test_volumes__live_reader(void **state)
{
    (void)state;
    char path[1200];
    tmp_path(path, sizeof path, "live.h5");
    h5s_collection_options co = H5S_COLLECTION_OPTIONS_INIT;
    co.shape[0] = 6;
    co.shape[1] = 5;
    co.shape[2] = 4;
    writer w;
    open_writer(&w, path, &co, (size_t)1 << 20);
    int64_t shape[3] = {6, 5, 4};
    write_vol(&w, 0, 3, shape, "s");
    write_vol(&w, 1, 3, shape, "s");
    assert_int_equal(h5s_file_flush(w.file), 0);
    h5s_volumes_reader *r = NULL;
    h5s_reader_options ro = H5S_READER_OPTIONS_INIT;
    ro.open_timeout_ms = 5000;
    assert_int_equal(h5s_volumes_reader_open(&r, path, &ro), 0);
    uint64_t n = 0;
    assert_int_equal(h5s_volumes_reader_refresh(r, "anat", &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(h5s_volumes_reader_state(r), H5S_WRITER_WRITING);
    check_volume(r, "anat", 1, 1);
    write_vol(&w, 2, 3, shape, "s");
    assert_int_equal(h5s_file_flush(w.file), 0);
    assert_int_equal(h5s_volumes_reader_refresh(r, "anat", &n), 0);
    assert_int_equal(n, 3);
    check_volume(r, "anat", 2, 2);
    close_writer(&w);
    h5s_volumes_reader_close(r);
}

typedef struct {
    writer *w;
    int n;
    int rc;
} commit_writer;

/* Volume v (6 x 5 x 4 int16, obs_id "vol<v>"), one commit per volume; no cmocka asserts
 * off the main thread. */
static void *commit_main(void *arg)
{
    commit_writer *cw = arg;
    const int64_t shape[3] = {6, 5, 4};
    double affine[4][4] = {{1, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 0}, {0, 0, 0, 1}};
    for (int v = 0; v < cw->n && cw->rc == 0; v++) {
        char id[32];
        snprintf(id, sizeof id, "vol%d", v);
        h5s_volume_obs o;
        cw->rc = h5s_volume_obs_init(&o, id, "s", "T1w", 3, shape, NULL, affine);
        int16_t *d = make_volume(v, 3, shape);
        if (cw->rc == 0)
            cw->rc = h5s_collection_write_volume(cw->w->coll, d, 6 * 5 * 4 * 2, &o, NULL);
        free(d);
        if (cw->rc == 0)
            cw->rc = h5s_file_flush(cw->w->file);
    }
    return NULL;
}

/* A reader in the writer's own process shares its HDF5 file and sees each HDF5 call of a
 * commit as it returns; polling without pause against one commit per volume, it must
 * still only count volumes whose obs row and voxels are stored. */
static void test_volumes__same_process_reader(void **state)
{
    (void)state;
    char path[1200];
    tmp_path(path, sizeof path, "sameproc_volumes.h5");
    h5s_collection_options co = H5S_COLLECTION_OPTIONS_INIT;
    co.shape[0] = 6;
    co.shape[1] = 5;
    co.shape[2] = 4;
    writer w;
    open_writer(&w, path, &co, (size_t)1 << 20);
    h5s_volumes_reader *r = NULL;
    if (h5s_volumes_reader_open(&r, path, NULL) != 0)
        fail_msg("open: %s", h5s_error_message());
    commit_writer cw = {&w, 300, 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, commit_main, &cw), 0);
    uint64_t next = 0, count = 0, growths = 0;
    while (next < (uint64_t)cw.n) {
        if (h5s_volumes_reader_refresh(r, "anat", &count) != 0)
            fail_msg("refresh after %llu volumes: %s", (unsigned long long)next,
                     h5s_error_message());
        growths += count > next;
        for (; next < count; next++) {
            h5s_volume_obs o;
            char want[32];
            snprintf(want, sizeof want, "vol%llu", (unsigned long long)next);
            if (h5s_volumes_reader_obs(r, "anat", next, &o) != 0)
                fail_msg("obs %llu: %s", (unsigned long long)next, h5s_error_message());
            if (strcmp(o.obs_id, want) != 0)
                fail_msg("obs %llu: obs_id \"%s\", expected %s", (unsigned long long)next, o.obs_id,
                         want);
            h5s_volume_box b;
            h5s_volume_box_full(&b, &o);
            check_box(r, "anat", next, (int)next, &b);
        }
    }
    pthread_join(th, NULL);
    assert_int_equal(cw.rc, 0);
    assert_true(growths >= 2); /* it read while the file grew */
    close_writer(&w);
    h5s_volumes_reader_close(r);
}

int main(void)
{
    const char *t = getenv("H5S_TEST_TMP");
    snprintf(tmpdir, sizeof tmpdir, "%s", t ? t : "/tmp");
    shared = getenv("H5S_SHARED_DATA");
    if (!shared)
        shared = "../shared/data";
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_volumes__uniform_slices_deflate),
        cmocka_unit_test(test_volumes__uniform_blocks_4d_blosc),
        cmocka_unit_test(test_volumes__uniform_blocks_raw),
        cmocka_unit_test(test_volumes__heterogeneous_pool),
        cmocka_unit_test(test_volumes__duplicate_and_mismatch_errors),
        cmocka_unit_test(test_volumes__bad_declarations),
        cmocka_unit_test(test_volumes__import_shared_nifti),
        cmocka_unit_test(test_volumes__bad_nifti_refused),
        cmocka_unit_test(test_volumes__ten_thousand_bounded),
        cmocka_unit_test(test_volumes__live_reader),
        cmocka_unit_test(test_volumes__same_process_reader),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
