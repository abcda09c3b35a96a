/*
 * test_nifti.c - formats/h5s_nifti and formats/h5s_tsv: every shared NIfTI file read,
 * written back as .nii and .nii.gz and read again, checked against nibabel
 * (tests/scripts/nifti_check.py run with /usr/bin/python3); NIfTI-2 written by us;
 * corrupted copies giving exact errors; BIDS TSV round trips and subject ids.
 *
 * Run one test alone with its name (or a glob) as the only argument:
 *   test_nifti test_nifti__bad_inputs
 */
#define _POSIX_C_SOURCE 200809L

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "h5s_error.h"
#include "h5s_nifti.h"
#include "h5s_tsv.h"

/* Test paths are short; a truncated one would only make a test fail, never pass. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

#define PY "/usr/bin/python3"

static const char *tmp_dir(void)
{
    const char *t = getenv("H5S_TEST_TMP");
    return t && *t ? t : "/tmp";
}

static const char *volumes_dir(void)
{
    static char dir[4096];
    const char *d = getenv("H5S_SHARED_DATA");
    snprintf(dir, sizeof dir, "%s/volumes", d && *d ? d : "/work/shared/data");
    return dir;
}

/* tests/scripts/nifti_check.py beside this source file. */
static void check_script(char *out, size_t cap)
{
    const char *here = __FILE__;
    const char *slash = strrchr(here, '/');
    int n = slash ? (int)(slash - here) : 1;
    snprintf(out, cap, "%.*s/scripts/nifti_check.py", n, slash ? here : ".");
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void spit(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* Whole decompressed content of a gzip file. */
static unsigned char *gunzip_file(const char *path, size_t *len)
{
    gzFile gz = gzopen(path, "rb");
    assert_non_null(gz);
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = malloc(cap);
    assert_non_null(buf);
    for (;;) {
        int got = gzread(gz, buf + n, (unsigned)(cap - n));
        if (got <= 0)
            break;
        n += (size_t)got;
        if (n == cap) {
            cap *= 2;
            unsigned char *bigger = realloc(buf, cap);
            assert_non_null(bigger);
            buf = bigger;
        }
    }
    gzclose(gz);
    *len = n;
    return buf;
}

static void gzip_file(const char *path, const void *data, size_t len)
{
    gzFile gz = gzopen(path, "wb");
    assert_non_null(gz);
    assert_int_equal(gzwrite(gz, data, (unsigned)len), (int)len);
    assert_int_equal(gzclose(gz), Z_OK);
}

/* Writes PREFIX.bin (voxels) and PREFIX.txt (header facts) for nifti_check.py verify. */
static void dump_for_python(const char *prefix, const h5s_nifti_header *h, const void *data)
{
    char path[4096];
    snprintf(path, sizeof path, "%s.bin", prefix);
    spit(path, data, (size_t)h5s_nifti_data_bytes(h));
    snprintf(path, sizeof path, "%s.txt", prefix);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "dtype %s\nshape", h5s_dtype_name(h->dtype));
    for (int i = 1; i <= h->ndim; i++)
        fprintf(f, " %lld", (long long)h->dim[i]);
    fprintf(f, "\nversion %d\nqform_code %d\nsform_code %d\nxyzt_units %d\npixdim", h->version,
            h->qform_code, h->sform_code, h->xyzt_units);
    for (int i = 0; i < 8; i++)
        fprintf(f, " %.17g", h->pixdim[i]);
    double aff[4][4];
    h5s_nifti_header_affine(h, aff);
    const double(*mats[3])[4] = {h->qto_xyz, h->sto_xyz, aff};
    const char *names[3] = {"qform", "sform", "affine"};
    for (int m = 0; m < 3; m++) {
        fprintf(f, "\n%s", names[m]);
        for (int r = 0; r < 4; r++)
            for (int c = 0; c < 4; c++)
                fprintf(f, " %.17g", mats[m][r][c]);
    }
    fprintf(f, "\n");
    assert_int_equal(fclose(f), 0);
}

static int run_python_jobs(const char *jobs)
{
    char script[4096], cmd[8192];
    check_script(script, sizeof script);
    snprintf(cmd, sizeof cmd, PY " '%s' '%s'", script, jobs);
    int rc = system(cmd);
    return rc;
}

static int same_double(double a, double b)
{
    return (isnan(a) && isnan(b)) || a == b;
}

static int near(double a, double b, double tol)
{
    return (isnan(a) && isnan(b)) || fabs(a - b) <= tol * (1.0 + fabs(a));
}

/* Header fields the writer keeps; tol 0 for exact (NIfTI-1 source), else relative. */
static void assert_same_geometry(const h5s_nifti_header *a, const h5s_nifti_header *b, double tol)
{
    assert_int_equal(a->ndim, b->ndim);
    for (int i = 0; i <= 7; i++)
        assert_int_equal(a->dim[i], b->dim[i]);
    assert_int_equal(a->dtype, b->dtype);
    assert_int_equal(a->nifti_datatype, b->nifti_datatype);
    for (int i = 1; i <= 7; i++)
        assert_true(near(a->pixdim[i], b->pixdim[i], tol));
    assert_int_equal(a->qform_code, b->qform_code);
    assert_int_equal(a->sform_code, b->sform_code);
    if (a->qform_code > 0) {
        assert_true(near(a->quatern_b, b->quatern_b, tol));
        assert_true(near(a->quatern_c, b->quatern_c, tol));
        assert_true(near(a->quatern_d, b->quatern_d, tol));
        assert_true(near(a->qoffset_x, b->qoffset_x, tol));
        assert_true(near(a->qoffset_y, b->qoffset_y, tol));
        assert_true(near(a->qoffset_z, b->qoffset_z, tol));
        assert_true(a->qfac == b->qfac);
        for (int r = 0; r < 4; r++)
            for (int c = 0; c < 4; c++)
                assert_true(near(a->qto_xyz[r][c], b->qto_xyz[r][c], tol + 1e-12));
    }
    if (a->sform_code > 0)
        for (int r = 0; r < 4; r++)
            for (int c = 0; c < 4; c++)
                assert_true(near(a->sto_xyz[r][c], b->sto_xyz[r][c], tol));
    assert_int_equal(a->xyzt_units, b->xyzt_units);
    assert_true(same_double(a->scl_slope, b->scl_slope));
    assert_true(same_double(a->scl_inter, b->scl_inter));
    assert_int_equal(a->intent_code, b->intent_code);
    assert_string_equal(a->descrip, b->descrip);
}

/* Reads path slice by slice (one at a time) and checks it against a whole load. */
static void *read_streamed(const char *path, h5s_nifti_header *hdr)
{
    h5s_nifti_reader *r = NULL;
    assert_int_equal(h5s_nifti_open(&r, path, NULL), 0);
    *hdr = *h5s_nifti_reader_header(r);
    uint64_t n = h5s_nifti_nslices(hdr);
    size_t sb = (size_t)(h5s_nifti_slice_voxels(hdr) * h5s_dtype_size(hdr->dtype));
    unsigned char *data = malloc((size_t)h5s_nifti_data_bytes(hdr) + 1);
    assert_non_null(data);
    for (uint64_t s = 0; s < n; s++) {
        assert_int_equal(h5s_nifti_reader_position(r), s);
        assert_int_equal(h5s_nifti_read_slices(r, data + s * sb, sb, 1), 0);
    }
    /* past the last slice */
    assert_int_equal(h5s_nifti_read_slices(r, data, sb, 1), H5S_ERANGE);
    h5s_nifti_close(r);

    h5s_nifti_header whole_hdr;
    void *whole = NULL;
    assert_int_equal(h5s_nifti_load(&whole_hdr, &whole, path), 0);
    assert_memory_equal(whole, data, (size_t)h5s_nifti_data_bytes(hdr));
    free(whole);
    return data;
}

static int has_suffix(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

/* ---- tests ---- */

static void test_nifti__shared_round_trip(void **state)
{
    (void)state;
    DIR *d = opendir(volumes_dir());
    assert_non_null(d);
    char jobs[4096];
    snprintf(jobs, sizeof jobs, "%s/jobs_shared.txt", tmp_dir());
    FILE *jf = fopen(jobs, "w");
    assert_non_null(jf);
    int files = 0, saw_be = 0, saw_v2 = 0, saw_ext = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!has_suffix(e->d_name, ".nii") && !has_suffix(e->d_name, ".nii.gz"))
            continue;
        char src[4096], stem[1024], prefix[4096];
        snprintf(src, sizeof src, "%s/%s", volumes_dir(), e->d_name);
        snprintf(stem, sizeof stem, "%.*s", (int)strcspn(e->d_name, "."), e->d_name);
        h5s_nifti_header h;
        unsigned char *data = read_streamed(src, &h);
        assert_true(h.version == 1 || h.version == 2);
        assert_int_equal(h.compressed, has_suffix(src, ".gz"));
        saw_be += h.big_endian;
        saw_v2 += h.version == 2;
        saw_ext += h.has_extensions;
        if (strcmp(e->d_name, "anatomical.nii") == 0) {
            assert_int_equal(h.big_endian, 1);
            assert_int_equal(h.ndim, 3);
            assert_int_equal(h.dim[1], 33);
            assert_int_equal(h.dim[2], 41);
            assert_int_equal(h.dim[3], 25);
            assert_int_equal(h.dtype, H5S_INT16);
            assert_int_equal(h.vox_offset, 352);
            assert_true(h.pixdim[0] == -1.0 && h.qfac == -1.0 && h.pixdim[3] == 2.0);
            assert_int_equal(h.qform_code, 2);
        }
        if (strcmp(e->d_name, "example4d.nii.gz") == 0) {
            assert_int_equal(h.vox_offset, 416);
            assert_int_equal(h.has_extensions, 1);
            assert_int_equal(h5s_nifti_nslices(&h), 24 * 2);
        }
        snprintf(prefix, sizeof prefix, "%s/src_%s", tmp_dir(), stem);
        dump_for_python(prefix, &h, data);
        fprintf(jf, "verify %s %s\n", src, prefix);

        const char *exts[2] = {".nii", ".nii.gz"};
        for (int k = 0; k < 2; k++) {
            char out[4096];
            snprintf(out, sizeof out, "%s/out_%s%s", tmp_dir(), stem, exts[k]);
            assert_int_equal(h5s_nifti_write(out, &h, data, NULL), 0);
            h5s_nifti_header back;
            unsigned char *again = read_streamed(out, &back);
            assert_int_equal(back.version, 1);
            assert_int_equal(back.vox_offset, 352);
            assert_int_equal(back.big_endian, 0);
            assert_int_equal(back.compressed, k);
            assert_memory_equal(again, data, (size_t)h5s_nifti_data_bytes(&h));
            assert_same_geometry(&h, &back, h.version == 1 ? 0.0 : 1e-6);
            free(again);
            fprintf(jf, "same %s %s\n", src, out);
            snprintf(prefix, sizeof prefix, "%s/out_%s_%d", tmp_dir(), stem, k);
        }
        free(data);
        files++;
    }
    closedir(d);
    assert_int_equal(fclose(jf), 0);
    assert_int_equal(files, 8);
    assert_true(saw_be >= 1);
    assert_int_equal(saw_v2, 1);
    assert_true(saw_ext >= 1);
    assert_int_equal(run_python_jobs(jobs), 0);
}

static void test_nifti__nifti2_synthetic(void **state)
{
    (void)state;
    int64_t dims[3] = {40000, 2, 1};
    h5s_nifti_header h;
    assert_int_equal(h5s_nifti_header_init(&h, H5S_UINT8, 3, dims), 0);
    double aff[4][4] = {{-2, 0, 0, 10}, {0, 3, 0, -20}, {0, 0, 1.5, 30}, {0, 0, 0, 1}};
    assert_int_equal(h5s_nifti_header_set_affine(&h, aff, 1, 2), 0);
    snprintf(h.descrip, sizeof h.descrip, "h5stream NIfTI-2 test");
    assert_int_equal(h5s_nifti_needs_v2(&h), 1);
    size_t n = 80000;
    unsigned char *data = malloc(n);
    assert_non_null(data);
    for (size_t i = 0; i < n; i++)
        data[i] = (unsigned char)((i * 7 + i / 251) & 0xff);

    char jobs[4096];
    snprintf(jobs, sizeof jobs, "%s/jobs_v2.txt", tmp_dir());
    FILE *jf = fopen(jobs, "w");
    assert_non_null(jf);
    const char *exts[2] = {".nii", ".nii.gz"};
    for (int k = 0; k < 2; k++) {
        char out[4096], prefix[4096];
        snprintf(out, sizeof out, "%s/big2%s", tmp_dir(), exts[k]);
        /* streamed: the writer takes the one slice in two calls' worth of API */
        h5s_nifti_writer *w = NULL;
        assert_int_equal(h5s_nifti_writer_open(&w, out, &h, NULL), 0);
        assert_int_equal(h5s_nifti_writer_version(w), 2);
        assert_int_equal(h5s_nifti_write_slices(w, data, 1), 0);
        assert_int_equal(h5s_nifti_write_slices(w, data, 1), H5S_ERANGE);
        assert_int_equal(h5s_nifti_writer_close(w), 0);
        if (k == 0) {
            struct stat st;
            assert_int_equal(stat(out, &st), 0);
            assert_int_equal(st.st_size, 544 + 80000);
            size_t len;
            unsigned char *raw = slurp(out, &len);
            assert_memory_equal(raw + 4, "n+2\0\r\n\032\n", 8);
            assert_memory_equal(raw + 544, data, n);
            free(raw);
        }
        h5s_nifti_header back;
        void *again = NULL;
        assert_int_equal(h5s_nifti_load(&back, &again, out), 0);
        assert_int_equal(back.version, 2);
        assert_int_equal(back.vox_offset, 544);
        assert_int_equal(back.dim[1], 40000);
        assert_memory_equal(again, data, n);
        assert_string_equal(back.descrip, "h5stream NIfTI-2 test");
        for (int r = 0; r < 4; r++)
            for (int c = 0; c < 4; c++) {
                assert_true(fabs(back.sto_xyz[r][c] - aff[r][c]) < 1e-12);
                assert_true(fabs(back.qto_xyz[r][c] - aff[r][c]) < 1e-9);
            }
        assert_int_equal(back.qform_code, 1);
        assert_int_equal(back.sform_code, 2);
        snprintf(prefix, sizeof prefix, "%s/big2_%d", tmp_dir(), k);
        dump_for_python(prefix, &back, again);
        fprintf(jf, "verify %s %s\n", out, prefix);
        free(again);
    }
    assert_int_equal(fclose(jf), 0);
    assert_int_equal(run_python_jobs(jobs), 0);

    /* forcing NIfTI-1 is refused, and leaves no file */
    char out[4096], msg[4200];
    snprintf(out, sizeof out, "%s/big1.nii", tmp_dir());
    h5s_nifti_write_options o = H5S_NIFTI_WRITE_OPTIONS_INIT;
    o.nifti_version = 1;
    assert_int_equal(h5s_nifti_write(out, &h, data, &o), H5S_ERANGE);
    snprintf(msg, sizeof msg,
             "%s: header does not fit NIfTI-1 (a dim, slice or code above 32767): write NIfTI-2",
             out);
    assert_string_equal(h5s_error_message(), msg);
    struct stat st;
    assert_int_not_equal(stat(out, &st), 0);
    free(data);
}

static void test_nifti__stream_and_state(void **state)
{
    (void)state;
    int64_t dims[4] = {7, 5, 3, 4};
    h5s_nifti_header h;
    assert_int_equal(h5s_nifti_header_init(&h, H5S_FLOAT32, 4, dims), 0);
    h.scl_slope = 2.5;
    h.scl_inter = -1;
    h.xyzt_units = 2 | 16; /* mm, ms */
    assert_int_equal(h5s_nifti_needs_v2(&h), 0);
    assert_int_equal(h5s_nifti_slice_voxels(&h), 35);
    assert_int_equal(h5s_nifti_nslices(&h), 12);
    float data[7 * 5 * 3 * 4];
    for (int i = 0; i < 420; i++)
        data[i] = (float)i * 0.25f - 3.0f;
    char out[4096];
    snprintf(out, sizeof out, "%s/stream.nii.gz", tmp_dir());
    h5s_nifti_writer *w = NULL;
    assert_int_equal(h5s_nifti_writer_open(&w, out, &h, NULL), 0);
    assert_int_equal(h5s_nifti_writer_version(w), 1);
    for (int s = 0; s < 12; s += 3)
        assert_int_equal(h5s_nifti_write_slices(w, data + s * 35, 3), 0);
    assert_int_equal(h5s_nifti_writer_close(w), 0);

    h5s_nifti_reader *r = NULL;
    assert_int_equal(h5s_nifti_open(&r, out, NULL), 0);
    const h5s_nifti_header *rh = h5s_nifti_reader_header(r);
    assert_int_equal(rh->ndim, 4);
    assert_true(rh->scl_slope == 2.5 && rh->scl_inter == -1.0);
    assert_int_equal(rh->xyzt_units, 18);
    float got[420];
    assert_int_equal(h5s_nifti_read_slices(r, got, sizeof got, 5), 0);
    /* buffer too small for what is asked */
    assert_int_equal(h5s_nifti_read_slices(r, got, 35 * 4, 2), H5S_EINVAL);
    assert_int_equal(h5s_nifti_read_slices(r, got + 5 * 35, sizeof got - 5 * 35 * 4, 7), 0);
    assert_memory_equal(got, data, sizeof data);
    assert_int_equal(h5s_nifti_read_slices(r, got, sizeof got, 1), H5S_ERANGE);
    h5s_nifti_close(r);

    /* a writer closed early fails and removes its file */
    snprintf(out, sizeof out, "%s/short.nii", tmp_dir());
    assert_int_equal(h5s_nifti_writer_open(&w, out, &h, NULL), 0);
    assert_int_equal(h5s_nifti_write_slices(w, data, 4), 0);
    assert_int_equal(h5s_nifti_writer_close(w), H5S_ESTATE);
    char msg[4200];
    snprintf(msg, sizeof msg, "%s: closed after 4 of 12 slices; file removed", out);
    assert_string_equal(h5s_error_message(), msg);
    struct stat st;
    assert_int_not_equal(stat(out, &st), 0);

    /* bad names and headers */
    assert_int_equal(h5s_nifti_writer_open(&w, "/tmp/x.img", &h, NULL), H5S_EINVAL);
    assert_string_equal(h5s_error_message(), "/tmp/x.img: name must end in .nii or .nii.gz");
    int64_t bad[2] = {3, 0};
    assert_int_equal(h5s_nifti_header_init(&h, H5S_UINT8, 2, bad), H5S_EINVAL);
    assert_string_equal(h5s_error_message(), "nifti header: dim[2] = 0, must be > 0");
    assert_int_equal(h5s_nifti_header_init(&h, H5S_FLOAT16, 2, dims), H5S_EINVAL);
    assert_string_equal(h5s_error_message(),
                        "nifti header: dtype float16 has no NIfTI datatype code");
    h5s_nifti_writer_abort(NULL);
    h5s_nifti_close(NULL);
    assert_int_equal(h5s_nifti_writer_close(NULL), 0);
}

static void test_nifti__affine_helpers(void **state)
{
    (void)state;
    int64_t dims[3] = {10, 20, 30};
    h5s_nifti_header h;
    assert_int_equal(h5s_nifti_header_init(&h, H5S_INT16, 3, dims), 0);
    double base[4][4];
    h.pixdim[1] = 2;
    h.pixdim[2] = 3;
    h.pixdim[3] = 4;
    h5s_nifti_header_affine(&h, base);
    /* nibabel get_base_affine: diag(-2, 3, 4), origin -(n-1)/2 * zoom */
    double want[4][4] = {{-2, 0, 0, 9}, {0, 3, 0, -28.5}, {0, 0, 4, -58}, {0, 0, 0, 1}};
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++)
            assert_true(fabs(base[r][c] - want[r][c]) < 1e-12);
    /* a rotation about z by 30 degrees with zooms 1, 2, 3 and a flip (qfac -1) */
    double cs = cos(M_PI / 6), sn = sin(M_PI / 6);
    double aff[4][4] = {{cs, -2 * sn, 0, 5}, {sn, 2 * cs, 0, 6}, {0, 0, -3, 7}, {0, 0, 0, 1}};
    assert_int_equal(h5s_nifti_header_set_affine(&h, aff, 2, 0), 0);
    assert_true(h.qfac == -1.0);
    assert_true(fabs(h.pixdim[3] - 3) < 1e-12);
    double got[4][4];
    h5s_nifti_header_affine(&h, got);
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++)
            assert_true(fabs(got[r][c] - aff[r][c]) < 1e-9);
    aff[1][1] = NAN;
    assert_int_equal(h5s_nifti_header_set_affine(&h, aff, 1, 1), H5S_EINVAL);
    assert_string_equal(h5s_error_message(), "nifti header: affine[1][1] is not finite");
}

/* Expects h5s_nifti_open(path) to fail with code and exactly msg. */
static void expect_open_error(const char *path, int code, const char *msg)
{
    h5s_nifti_reader *r = NULL;
    int rc = h5s_nifti_open(&r, path, NULL);
    if (rc != code || strcmp(h5s_error_message(), msg) != 0)
        print_error("open %s: got %d '%s'\n   expected %d '%s'\n", path, rc, h5s_error_message(),
                    code, msg);
    assert_int_equal(rc, code);
    assert_string_equal(h5s_error_message(), msg);
    assert_null(r);
}

static void put_be16(unsigned char *p, int v)
{
    p[0] = (unsigned char)((unsigned)v >> 8);
    p[1] = (unsigned char)v;
}

static void put_be_float(unsigned char *p, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    p[0] = (unsigned char)(u >> 24);
    p[1] = (unsigned char)(u >> 16);
    p[2] = (unsigned char)(u >> 8);
    p[3] = (unsigned char)u;
}

static void test_nifti__bad_inputs(void **state)
{
    (void)state;
    char src[4096], path[4096], msg[8192];
    snprintf(src, sizeof src, "%s/anatomical.nii", volumes_dir());
    size_t len;
    unsigned char *orig = slurp(src, &len);
    assert_int_equal(len, 68002);
    unsigned char *buf = malloc(len);
    assert_non_null(buf);

    /* data cut short */
    snprintf(path, sizeof path, "%s/bad_truncated.nii", tmp_dir());
    spit(path, orig, 30000);
    snprintf(msg, sizeof msg,
             "%s: byte 30000: data truncated: dims 33x41x25 of int16 need 67650 bytes from "
             "vox_offset 352 (to byte 68002), file size is 30000 bytes",
             path);
    expect_open_error(path, H5S_EFORMAT, msg);

    /* header cut short */
    snprintf(path, sizeof path, "%s/bad_header.nii", tmp_dir());
    spit(path, orig, 200);
    snprintf(msg, sizeof msg, "%s: byte 200: file ends inside the 348-byte NIfTI-1 header", path);
    expect_open_error(path, H5S_EFORMAT, msg);
    spit(path, orig, 2);
    snprintf(msg, sizeof msg,
             "%s: byte 2: file ends inside the header (a NIfTI header is at least 348 bytes)",
             path);
    expect_open_error(path, H5S_EFORMAT, msg);

    /* vox_offset beyond the file, inside the header, not an integer */
    snprintf(path, sizeof path, "%s/bad_voxoffset.nii", tmp_dir());
    memcpy(buf, orig, len);
    put_be_float(buf + 108, 1.0e6f);
    spit(path, buf, len);
    snprintf(msg, sizeof msg,
             "%s: byte 108: vox_offset 1000000 is beyond the end of the file (file size 68002 "
             "bytes)",
             path);
    expect_open_error(path, H5S_EFORMAT, msg);
    put_be_float(buf + 108, 100.0f);
    spit(path, buf, len);
    snprintf(msg, sizeof msg,
             "%s: byte 108: vox_offset 100 is before the end of the header (348 bytes + 4-byte "
             "extension flag = 352)",
             path);
    expect_open_error(path, H5S_EFORMAT, msg);
    put_be_float(buf + 108, 352.5f);
    spit(path, buf, len);
    snprintf(msg, sizeof msg, "%s: byte 108: vox_offset 352.5 is not a non-negative integer", path);
    expect_open_error(path, H5S_EFORMAT, msg);

    /* dims too big for the file */
    snprintf(path, sizeof path, "%s/bad_dims.nii", tmp_dir());
    memcpy(buf, orig, len);
    put_be16(buf + 46, 100);
    spit(path, buf, len);
    snprintf(msg, sizeof msg,
             "%s: byte 68002: data truncated: dims 33x41x100 of int16 need 270600 bytes from "
             "vox_offset 352 (to byte 270952), file size is 68002 bytes",
             path);
    expect_open_error(path, H5S_EFORMAT, msg);
    /* negative and zero dims, bad dim[0] */
    memcpy(buf, orig, len);
    put_be16(buf + 42, -5);
    spit(path, buf, len);
    snprintf(msg, sizeof msg, "%s: byte 42: dim[1] = -5, must be > 0", path);
    expect_open_error(path, H5S_EFORMAT, msg);
    memcpy(buf, orig, len);
    put_be16(buf + 44, 0);
    spit(path, buf, len);
    snprintf(msg, sizeof msg, "%s: byte 44: dim[2] = 0, must be > 0", path);
    expect_open_error(path, H5S_EFORMAT, msg);
    memcpy(buf, orig, len);
    put_be16(buf + 40, 9);
    spit(path, buf, len);
    snprintf(msg, sizeof msg, "%s: byte 40: dim[0] = 9, must be 1..7", path);
    expect_open_error(path, H5S_EFORMAT, msg);

    /* unsupported datatype, not NIfTI at all, damaged magic */
    snprintf(path, sizeof path, "%s/bad_type.nii", tmp_dir());
    memcpy(buf, orig, len);
    put_be16(buf + 70, 32);
    spit(path, buf, len);
    snprintf(msg, sizeof msg,
             "%s: byte 70: datatype 32 (NIFTI_TYPE_COMPLEX64) is not supported: only integer and "
             "float32/"
             "float64 voxels are kept (no complex, RGB, float128 or binary)",
             path);
    expect_open_error(path, H5S_EFORMAT, msg);
    put_be16(buf + 70, 128);
    spit(path, buf, len);
    snprintf(
        msg, sizeof msg,
        "%s: byte 70: datatype 128 (NIFTI_TYPE_RGB24) is not supported: only integer and float32/"
        "float64 voxels are kept (no complex, RGB, float128 or binary)",
        path);
    expect_open_error(path, H5S_EFORMAT, msg);
    memcpy(buf, orig, len);
    memcpy(buf, "GIF8", 4);
    spit(path, buf, len);
    snprintf(msg, sizeof msg,
             "%s: byte 0: sizeof_hdr is 944130375, expected 348 (NIfTI-1) or 540 (NIfTI-2): not "
             "a NIfTI file",
             path);
    expect_open_error(path, H5S_EFORMAT, msg);
    memcpy(buf, orig, len);
    memcpy(buf + 344, "ni1", 4);
    spit(path, buf, len);
    snprintf(msg, sizeof msg,
             "%s: byte 344: magic \"ni1\" is a two-file (.hdr/.img) NIfTI-1 header; only "
             "single-file .nii is supported",
             path);
    expect_open_error(path, H5S_EFORMAT, msg);
    memcpy(buf + 344, "xx1", 4);
    spit(path, buf, len);
    snprintf(msg, sizeof msg,
             "%s: byte 344: magic is not \"n+1\" (ANALYZE 7.5 or damaged NIfTI-1 header)", path);
    expect_open_error(path, H5S_EFORMAT, msg);

    /* names and missing files */
    snprintf(path, sizeof path, "%s/missing.nii", tmp_dir());
    snprintf(msg, sizeof msg, "%s: no such file", path);
    expect_open_error(path, H5S_ENOTFOUND, msg);
    snprintf(path, sizeof path, "%s/anatomical.img", tmp_dir());
    snprintf(msg, sizeof msg, "%s: name must end in .nii or .nii.gz", path);
    expect_open_error(path, H5S_EINVAL, msg);
    snprintf(path, sizeof path, "%s/gzip_named_plain.nii", tmp_dir());
    gzip_file(path, orig, len);
    snprintf(msg, sizeof msg,
             "%s: byte 0: gzip-compressed data in a file named .nii (rename it .nii.gz)", path);
    expect_open_error(path, H5S_EFORMAT, msg);
    free(buf);
    free(orig);
}

static void test_nifti__bad_gzip(void **state)
{
    (void)state;
    char src[4096], path[4096], msg[8192];
    snprintf(src, sizeof src, "%s/standard.nii.gz", volumes_dir());
    size_t len;
    unsigned char *raw = gunzip_file(src, &len);
    assert_int_equal(len, 492);

    /* dims too big for the decompressed length */
    snprintf(path, sizeof path, "%s/bad_dims.nii.gz", tmp_dir());
    raw[46] = 70; /* little-endian dim[3] = 70 */
    raw[47] = 0;
    gzip_file(path, raw, len);
    snprintf(msg, sizeof msg,
             "%s: byte 492: data truncated: dims 4x5x70 of uint8 need 1400 bytes from vox_offset "
             "352 (to byte 1752), decompressed length is 492 bytes",
             path);
    expect_open_error(path, H5S_EFORMAT, msg);

    /* without the length pass, the slice reader finds it */
    h5s_nifti_open_options o = H5S_NIFTI_OPEN_OPTIONS_INIT;
    o.check_gz_length = 0;
    h5s_nifti_reader *r = NULL;
    assert_int_equal(h5s_nifti_open(&r, path, &o), 0);
    unsigned char out[1400];
    assert_int_equal(h5s_nifti_read_slices(r, out, sizeof out, 70), H5S_EFORMAT);
    snprintf(msg, sizeof msg, "%s: byte 492: data truncated: the file ends inside slice 7 of 70",
             path);
    assert_string_equal(h5s_error_message(), msg);
    assert_int_equal(h5s_nifti_read_slices(r, out, sizeof out, 1), H5S_ESTATE);
    h5s_nifti_close(r);

    /* vox_offset past the decompressed end */
    raw[46] = 7;
    memcpy(raw + 108, &(float){4096.0f}, 4);
    gzip_file(path, raw, len);
    snprintf(msg, sizeof msg,
             "%s: byte 108: vox_offset 4096 is beyond the end of the file (decompressed length "
             "492 bytes)",
             path);
    expect_open_error(path, H5S_EFORMAT, msg);
    free(raw);

    /* a gzip file cut in the middle: the truncation is reported at the decompressed end */
    snprintf(src, sizeof src, "%s/small_25.nii.gz", volumes_dir());
    size_t zlen;
    unsigned char *z = slurp(src, &zlen);
    snprintf(path, sizeof path, "%s/cut.nii.gz", tmp_dir());
    spit(path, z, zlen / 2);
    size_t dlen;
    unsigned char *part = gunzip_file(path, &dlen);
    free(part);
    assert_true(dlen > 352 && dlen < 4512);
    snprintf(msg, sizeof msg,
             "%s: byte %zu: data truncated: dims 10x8x2x26 of uint8 need 4160 bytes from "
             "vox_offset 352 (to byte 4512), decompressed length is %zu bytes",
             path, dlen, dlen);
    expect_open_error(path, H5S_EFORMAT, msg);

    /* flipped bytes in the deflate data: a corrupt stream, never a crash */
    memcpy(z + zlen / 2, "\xff\x00\xff\x00\xff\x00\xff\x00", 8);
    snprintf(path, sizeof path, "%s/flipped.nii.gz", tmp_dir());
    spit(path, z, zlen);
    h5s_nifti_reader *r2 = NULL;
    assert_int_equal(h5s_nifti_open(&r2, path, NULL), H5S_EFORMAT);
    assert_null(r2);
    char prefix[4200];
    snprintf(prefix, sizeof prefix, "%s: byte ", path);
    assert_memory_equal(h5s_error_message(), prefix, strlen(prefix));
    assert_non_null(strstr(h5s_error_message(), "(decompressed): corrupt gzip stream: "));
    free(z);

    /* NIfTI-2 vox_offset inside its 540-byte header */
    int64_t dims[1] = {10};
    h5s_nifti_header h;
    assert_int_equal(h5s_nifti_header_init(&h, H5S_UINT8, 1, dims), 0);
    h5s_nifti_write_options wo = H5S_NIFTI_WRITE_OPTIONS_INIT;
    wo.nifti_version = 2;
    snprintf(path, sizeof path, "%s/v2.nii", tmp_dir());
    unsigned char ten[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    assert_int_equal(h5s_nifti_write(path, &h, ten, &wo), 0);
    unsigned char *v2 = slurp(path, &len);
    assert_int_equal(len, 554);
    memset(v2 + 168, 0, 8);
    spit(path, v2, len);
    snprintf(msg, sizeof msg,
             "%s: byte 168: vox_offset 0 is before the end of the header (540 bytes + 4-byte "
             "extension flag = 544)",
             path);
    expect_open_error(path, H5S_EFORMAT, msg);
    memcpy(v2 + 8, "\n\n\032\n", 4);
    spit(path, v2, len);
    snprintf(msg, sizeof msg,
             "%s: byte 8: NIfTI-2 signature bytes \\r\\n\\032\\n damaged (file transferred as "
             "text?)",
             path);
    expect_open_error(path, H5S_EFORMAT, msg);
    free(v2);
}

/* ---- TSV ---- */

static const char participants[] = "participant_id\tage\tsex\tweight\tgroup\n"
                                   "sub-01\t34\tM\t70.5\tcontrol\n"
                                   "sub-02\tn/a\tF\t61\tpatient\n"
                                   "sub-03\t29\tn/a\tn/a\t\n";

static void test_nifti__tsv_round_trip(void **state)
{
    (void)state;
    char path[4096], back[4096];
    snprintf(path, sizeof path, "%s/participants.tsv", tmp_dir());
    spit(path, participants, strlen(participants));
    h5s_tsv_table *t = NULL;
    assert_int_equal(h5s_tsv_read(&t, path, NULL, 0), 0);
    assert_int_equal(t->ncols, 5);
    assert_int_equal(t->nrows, 3);
    assert_int_equal(h5s_tsv_find(t, "age"), 1);
    assert_int_equal(h5s_tsv_find(t, "nope"), -1);
    assert_int_equal(t->cols[0].type, H5S_TSV_STRING);
    assert_string_equal(t->cols[0].strings[2], "sub-03");
    assert_int_equal(t->cols[1].type, H5S_TSV_INT);
    assert_int_equal(t->cols[1].ints[0], 34);
    assert_int_equal(t->cols[1].missing[1], 1);
    assert_int_equal(t->cols[1].ints[2], 29);
    assert_int_equal(t->cols[2].type, H5S_TSV_STRING);
    assert_null(t->cols[2].strings[2]);
    assert_int_equal(t->cols[3].type, H5S_TSV_FLOAT);
    assert_true(t->cols[3].floats[0] == 70.5 && t->cols[3].floats[1] == 61.0);
    assert_true(isnan(t->cols[3].floats[2]) && t->cols[3].missing[2]);
    assert_int_equal(t->cols[4].missing[2], 1); /* empty cell */

    snprintf(back, sizeof back, "%s/participants_out.tsv", tmp_dir());
    assert_int_equal(h5s_tsv_write(back, t), 0);
    size_t len;
    unsigned char *text = slurp(back, &len);
    const char want[] = "participant_id\tage\tsex\tweight\tgroup\n"
                        "sub-01\t34\tM\t70.5\tcontrol\n"
                        "sub-02\tn/a\tF\t61.0\tpatient\n"
                        "sub-03\t29\tn/a\tn/a\tn/a\n";
    assert_int_equal(len, strlen(want));
    assert_memory_equal(text, want, len);
    free(text);
    h5s_tsv_table *t2 = NULL;
    assert_int_equal(h5s_tsv_read(&t2, back, NULL, 0), 0);
    for (size_t c = 0; c < 5; c++) {
        assert_int_equal(t2->cols[c].type, t->cols[c].type);
        assert_memory_equal(t2->cols[c].missing, t->cols[c].missing, 3);
    }
    h5s_tsv_free(t2);
    h5s_tsv_free(t);

    /* declared types: age as float, participant_id as string; CRLF and a BOM */
    const char crlf[] = "\xEF\xBB\xBFparticipant_id\tage\r\n001\t7\r\n002\t8\r\n\r\n";
    spit(path, crlf, strlen(crlf));
    h5s_tsv_decl decls[2] = {{"age", H5S_TSV_FLOAT}, {"participant_id", H5S_TSV_STRING}};
    assert_int_equal(h5s_tsv_read(&t, path, decls, 2), 0);
    assert_int_equal(t->nrows, 2);
    assert_string_equal(t->cols[0].name, "participant_id");
    assert_string_equal(t->cols[0].strings[0], "001");
    assert_int_equal(t->cols[1].type, H5S_TSV_FLOAT);
    assert_true(t->cols[1].floats[1] == 8.0);
    h5s_tsv_free(t);

    /* a table built in code, with the shortest float text */
    assert_int_equal(h5s_tsv_table_new(&t, 3, 2), 0);
    assert_int_equal(h5s_tsv_set_column(t, 0, "id", H5S_TSV_STRING), 0);
    assert_int_equal(h5s_tsv_set_column(t, 1, "n", H5S_TSV_INT), 0);
    assert_int_equal(h5s_tsv_set_column(t, 2, "x", H5S_TSV_FLOAT), 0);
    assert_int_equal(h5s_tsv_set_string(t, 0, 0, "a b"), 0);
    assert_int_equal(h5s_tsv_set_int(t, 1, 0, -9007199254740993LL), 0);
    assert_int_equal(h5s_tsv_set_float(t, 2, 0, 0.1), 0);
    assert_int_equal(h5s_tsv_set_float(t, 2, 1, 1.0 / 3.0), 0);
    assert_int_equal(h5s_tsv_set_int(t, 2, 1, 5), H5S_EINVAL);
    assert_int_equal(h5s_tsv_write(back, t), 0);
    text = slurp(back, &len);
    const char want2[] = "id\tn\tx\na b\t-9007199254740993\t0.1\nn/a\tn/a\t0.33333333333333331\n";
    assert_int_equal(len, strlen(want2));
    assert_memory_equal(text, want2, len);
    free(text);
    assert_int_equal(h5s_tsv_set_string(t, 0, 1, "tab\there"), 0);
    assert_int_equal(h5s_tsv_write(back, t), H5S_EINVAL);
    snprintf(path, sizeof path,
             "%s: row 2, column 'id': value holds a tab or newline, or is the missing marker "
             "\"n/a\"",
             back);
    assert_string_equal(h5s_error_message(), path);
    h5s_tsv_free(t);
    h5s_tsv_free(NULL);
}

static void expect_tsv_error(const char *name, const char *text, const h5s_tsv_decl *decls,
                             size_t ndecls, int code, const char *tail)
{
    char path[4096], msg[8192];
    snprintf(path, sizeof path, "%s/%s", tmp_dir(), name);
    spit(path, text, strlen(text));
    h5s_tsv_table *t = NULL;
    assert_int_equal(h5s_tsv_read(&t, path, decls, ndecls), code);
    assert_null(t);
    snprintf(msg, sizeof msg, "%s: %s", path, tail);
    assert_string_equal(h5s_error_message(), msg);
}

static void test_nifti__tsv_errors(void **state)
{
    (void)state;
    expect_tsv_error("short.tsv", "a\tb\n1\t2\n3\n", NULL, 0, H5S_EFORMAT,
                     "line 3, byte 8: 1 fields, the header has 2");
    expect_tsv_error("long.tsv", "a\tb\n1\t2\t3\n", NULL, 0, H5S_EFORMAT,
                     "line 2, byte 8: more than the header's 2 fields");
    expect_tsv_error("dup.tsv", "a\tb\ta\n1\t2\t3\n", NULL, 0, H5S_EFORMAT,
                     "line 1, byte 4: duplicate column 'a'");
    expect_tsv_error("emptyname.tsv", "a\t\n1\t2\n", NULL, 0, H5S_EFORMAT,
                     "line 1, byte 2: column 2 has an empty name");
    expect_tsv_error("empty.tsv", "\n\n", NULL, 0, H5S_EFORMAT,
                     "byte 0: empty table (no header row)");
    h5s_tsv_decl age = {"age", H5S_TSV_INT};
    expect_tsv_error("notint.tsv", "id\tage\nx\t12\ny\t1.5\n", &age, 1, H5S_EFORMAT,
                     "line 3, byte 14, column 'age': '1.5' is not an integer");
    expect_tsv_error("huge.tsv", "id\tage\nx\t99999999999999999999\n", &age, 1, H5S_EFORMAT,
                     "line 2, byte 9, column 'age': '99999999999999999999' is not within int64");
    h5s_tsv_decl w = {"weight", H5S_TSV_FLOAT};
    expect_tsv_error("nofloat.tsv", "id\tweight\nx\theavy\n", &w, 1, H5S_EFORMAT,
                     "line 2, byte 12, column 'weight': 'heavy' is not a number");
    expect_tsv_error("nodecl.tsv", "id\n1\n", &w, 1, H5S_EINVAL,
                     "declared column 'weight' is not in the header");
    h5s_tsv_table *t = NULL;
    assert_int_equal(h5s_tsv_read(&t, "/nonexistent/participants.tsv", NULL, 0), H5S_ENOTFOUND);
    assert_string_equal(h5s_error_message(), "/nonexistent/participants.tsv: no such file");
    /* a mixed column is inferred as string */
    char path[4096];
    snprintf(path, sizeof path, "%s/mixed.tsv", tmp_dir());
    spit(path, "v\n1\n2.5\nx\n", 10);
    assert_int_equal(h5s_tsv_read(&t, path, NULL, 0), 0);
    assert_int_equal(t->cols[0].type, H5S_TSV_STRING);
    assert_string_equal(t->cols[0].strings[1], "2.5");
    h5s_tsv_free(t);
}

static void expect_subject(const h5s_subject_matcher *m, const char *path, const char *want)
{
    char id[64];
    int rc = h5s_subject_match(m, path, id, sizeof id);
    if (rc)
        print_error("%s: %s\n", path, h5s_error_message());
    assert_int_equal(rc, 0);
    assert_string_equal(id, want);
}

static void test_nifti__subject_ids(void **state)
{
    (void)state;
    h5s_subject_matcher *m = NULL;
    assert_int_equal(h5s_subject_matcher_create(&m, NULL), 0);
    expect_subject(m, "sub-01_T1w.nii.gz", "01");
    expect_subject(m, "/data/bids/sub-ABC123/anat/sub-ABC123_ses-2_T1w.nii", "ABC123");
    expect_subject(m, "/data/bids/sub-07/anat/T1w.nii", "07");
    expect_subject(m, "/data/x_sub-9b-extra.nii", "9b");
    char id[8];
    assert_int_equal(h5s_subject_match(m, "/data/nosub-1/T1w.nii", id, sizeof id), H5S_ENOTFOUND);
    assert_string_equal(h5s_error_message(),
                        "/data/nosub-1/T1w.nii: no subject id in the name (BIDS sub-<label>)");
    assert_int_equal(h5s_subject_match(m, "sub-.nii", id, sizeof id), H5S_ENOTFOUND);
    assert_int_equal(h5s_subject_match(m, "sub-0123456789_T1w.nii", id, sizeof id), H5S_ERANGE);
    assert_string_equal(h5s_error_message(),
                        "sub-0123456789_T1w.nii: subject id of 10 bytes does not fit 8");
    h5s_subject_matcher_free(m);

    assert_int_equal(h5s_subject_matcher_create(&m, "^([A-Z]+[0-9]+)_scan"), 0);
    expect_subject(m, "/mnt/PAT042_scan1.nii.gz", "PAT042");
    assert_int_equal(h5s_subject_match(m, "/mnt/pat042_scan1.nii.gz", id, sizeof id),
                     H5S_ENOTFOUND);
    assert_string_equal(h5s_error_message(),
                        "/mnt/pat042_scan1.nii.gz: no subject id in the name (pattern did not "
                        "match)");
    h5s_subject_matcher_free(m);
    /* a pattern on folders falls back to the whole path */
    assert_int_equal(h5s_subject_matcher_create(&m, "/subjects/([^/]+)/"), 0);
    expect_subject(m, "/x/subjects/s17/t1.nii", "s17");
    h5s_subject_matcher_free(m);

    assert_int_equal(h5s_subject_matcher_create(&m, "(a)(b)"), H5S_EINVAL);
    assert_string_equal(h5s_error_message(),
                        "subject pattern '(a)(b)': has 2 capture groups, needs exactly 1");
    assert_null(m);
    assert_int_equal(h5s_subject_matcher_create(&m, "sub-[0-9]+"), H5S_EINVAL);
    assert_int_equal(h5s_subject_matcher_create(&m, "(unclosed"), H5S_EINVAL);
    assert_memory_equal(h5s_error_message(), "subject pattern '(unclosed': ", 29);
    h5s_subject_matcher_free(NULL);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nifti__shared_round_trip),
        cmocka_unit_test(test_nifti__nifti2_synthetic),
        cmocka_unit_test(test_nifti__stream_and_state),
        cmocka_unit_test(test_nifti__affine_helpers),
        cmocka_unit_test(test_nifti__bad_inputs),
        cmocka_unit_test(test_nifti__bad_gzip),
        cmocka_unit_test(test_nifti__tsv_round_trip),
        cmocka_unit_test(test_nifti__tsv_errors),
        cmocka_unit_test(test_nifti__subject_ids),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
