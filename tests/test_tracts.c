/*
 * test_tracts.c - the tracts model (h5stream/h5s_tracts.c): streamlines pushed from many
 * threads read back whole with their dps, dpv, groups and dpg; float16 conversion; the
 * header attributes; declaration errors.
 */
#include <math.h>
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

#include "h5s_tracts.h"

#define THREADS 3
#define PER_THREAD 2000

static char tmpdir[1024];

/* The scalar and the array (F16C) conversions agree bit for bit, and both round to
 * nearest even, overflow to infinity and keep NaN. */
static void test_tracts__half_conversions_agree(void **state)
{
    (void)state;
    enum { N = 1 << 16 };
    float *src = malloc(N * sizeof *src);
    uint16_t *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
    float *back = malloc(N * sizeof *back);
    /* Every half value, and points between neighbours (ties and near-ties). */
    for (uint32_t i = 0; i < N; i++)
        src[i] = h5s_half_to_float((uint16_t)i);
    h5s_half_from_float_n(a, src, N);
    for (uint32_t i = 0; i < N; i++) {
        b[i] = h5s_half_from_float(src[i]);
        if (!isnan(src[i])) {
            assert_int_equal(a[i], i); /* exact values round-trip */
            assert_int_equal(b[i], i);
        } else {
            assert_true((a[i] & 0x7c00u) == 0x7c00u && (a[i] & 0x3ffu));
            assert_true((b[i] & 0x7c00u) == 0x7c00u && (b[i] & 0x3ffu));
        }
    }
    h5s_half_to_float_n(back, a, N);
    for (uint32_t i = 0; i < N; i++)
        if (!isnan(src[i]))
            assert_memory_equal(&back[i], &src[i], sizeof(float));
    uint32_t x = 12345;
    for (uint32_t i = 0; i < N; i++) {
        x = x * 1103515245u + 12345u;
        uint32_t bits = x;
        memcpy(&src[i], &bits, sizeof bits);
    }
    src[0] = 1.0f + 1.0f / 2048; /* a tie: rounds to even (1.0) */
    src[1] = 70000.0f;           /* overflow */
    src[2] = 5.96e-8f;           /* smallest subnormal */
    h5s_half_from_float_n(a, src, N);
    for (uint32_t i = 0; i < N; i++) {
        b[i] = h5s_half_from_float(src[i]);
        if (isnan(src[i]))
            assert_true((a[i] & 0x7c00u) == 0x7c00u && (b[i] & 0x7c00u) == 0x7c00u);
        else
            assert_int_equal(a[i], b[i]);
    }
    assert_int_equal(a[0], 0x3c00);
    assert_int_equal(a[1], 0x7c00);
    assert_int_equal(a[2], 0x0001);
    free(src);
    free(a);
    free(b);
    free(back);
}

typedef struct {
    h5s_tracts *t;
    unsigned thread;
    int rc;
} producer;

/* Streamline i of thread t: (i + t) % 9 points (some empty), point k = (t, i, k). */
static uint64_t npoints_of(unsigned t, unsigned i)
{
    return (i + t) % 9;
}

static void *produce(void *arg)
{
    producer *p = arg;
    float pts[9 * 3], dpv[9 * 2];
    for (unsigned i = 0; i < PER_THREAD && p->rc == 0; i++) {
        uint64_t n = npoints_of(p->thread, i);
        for (uint64_t k = 0; k < n; k++) {
            pts[k * 3] = (float)p->thread;
            pts[k * 3 + 1] = (float)(i % 1000);
            pts[k * 3 + 2] = (float)k * 0.5f;
            dpv[k * 2] = (float)k;
            dpv[k * 2 + 1] = -(float)k;
        }
        float dps = (float)i;
        uint32_t tag = p->thread * 100000u + i;
        const void *dps_v[] = {&dps, &tag};
        const void *dpv_v[] = {dpv};
        uint64_t index;
        p->rc = h5s_tracts_push(p->t, pts, n, dps_v, dpv_v, &index);
        if (p->rc == 0 && i % 10 == 0) {
            uint32_t idx = (uint32_t)index;
            p->rc = h5s_tracts_group_add(p->t, p->thread % 2, &idx, 1);
        }
    }
    return NULL;
}

static void *read_ds(hid_t fid, const char *path, hid_t mtype, size_t elem, hsize_t *n0)
{
    hid_t d = H5Dopen2(fid, path, H5P_DEFAULT);
    assert_true(d >= 0);
    hid_t s = H5Dget_space(d);
    hsize_t dims[2] = {0, 1};
    int rank = H5Sget_simple_extent_dims(s, dims, NULL);
    H5Sclose(s);
    size_t total = (size_t)dims[0] * (rank == 2 ? (size_t)dims[1] : 1);
    void *buf = malloc(total * elem + 1);
    assert_true(H5Dread(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    H5Dclose(d);
    *n0 = dims[0];
    return buf;
}

static void test_tracts__threads_round_trip(void **state)
{
    (void)state;
    char path[1200];
    snprintf(path, sizeof path, "%s/tracts.h5", tmpdir);
    h5s_file_options fo = H5S_FILE_OPTIONS_INIT;
    fo.queue_bytes = (size_t)4 << 20;
    h5s_file *f;
    assert_int_equal(h5s_file_create(&f, path, &fo), 0);
    h5s_tracts_options o = H5S_TRACTS_OPTIONS_INIT;
    o.positions_dtype = H5S_FLOAT16;
    o.voxel_to_rasmm[3] = -90.0;
    o.dimensions[0] = 182;
    o.dimensions[1] = 218;
    o.dimensions[2] = 182;
    o.chunk_points = 100;
    h5s_tracts *t;
    assert_int_equal(h5s_tracts_create(&t, f, &o), 0);
    h5s_tracts *t2;
    assert_int_equal(h5s_tracts_create(&t2, f, &o), H5S_EINVAL);
    unsigned i0, i1;
    assert_int_equal(h5s_tracts_add_dps(t, "weight", H5S_FLOAT32, 1, &i0), 0);
    assert_int_equal(h5s_tracts_add_dps(t, "tag", H5S_UINT32, 1, &i1), 0);
    assert_int_equal(i1, 1);
    assert_int_equal(h5s_tracts_add_dps(t, "bad.name", H5S_FLOAT32, 1, NULL), H5S_EINVAL);
    assert_int_equal(h5s_tracts_add_dps(t, "weight", H5S_FLOAT32, 1, NULL), H5S_EINVAL);
    assert_int_equal(h5s_tracts_add_dpv(t, "fa", H5S_FLOAT32, 2, NULL), 0);
    assert_int_equal(h5s_tracts_add_group(t, "even", NULL), 0);
    assert_int_equal(h5s_tracts_add_group(t, "odd", NULL), 0);
    assert_int_equal(h5s_tracts_add_dpg(t, "even", "color", H5S_UINT8, 3), 0);
    assert_int_equal(h5s_tracts_add_dpg(t, "none", "color", H5S_UINT8, 3), H5S_ENOTFOUND);
    float pt[3] = {0, 0, 0};
    assert_int_equal(h5s_tracts_push(t, pt, 1, NULL, NULL, NULL), H5S_ESTATE);
    assert_int_equal(h5s_file_start_swmr(f), 0);
    assert_int_equal(h5s_tracts_add_group(t, "late", NULL), H5S_ESTATE);
    float bad[3] = {0, NAN, 0};
    assert_int_equal(h5s_tracts_push(t, bad, 1, NULL, NULL, NULL), H5S_EINVAL);

    pthread_t th[THREADS];
    producer p[THREADS];
    for (unsigned k = 0; k < THREADS; k++) {
        p[k] = (producer){t, k, 0};
        assert_int_equal(pthread_create(&th[k], NULL, produce, &p[k]), 0);
    }
    for (unsigned k = 0; k < THREADS; k++) {
        pthread_join(th[k], NULL);
        assert_int_equal(p[k].rc, 0);
    }
    uint8_t color[3] = {255, 0, 7};
    assert_int_equal(h5s_tracts_set_dpg(t, "even", "color", color), 0);
    assert_int_equal(h5s_tracts_set_dpg(t, "even", "nope", color), H5S_ENOTFOUND);
    assert_int_equal(h5s_tracts_count(t), THREADS * PER_THREAD);
    assert_int_equal(h5s_file_close(f), 0);

    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(fid >= 0);
    hsize_t ns1, nv, n;
    uint64_t *off = read_ds(fid, "/tracts/offsets", H5T_NATIVE_UINT64, 8, &ns1);
    assert_int_equal(ns1, THREADS * PER_THREAD + 1);
    float *pos = read_ds(fid, "/tracts/positions", H5T_NATIVE_FLOAT, 4, &nv);
    assert_int_equal(nv, off[ns1 - 1]);
    float *w = read_ds(fid, "/tracts/dps/weight", H5T_NATIVE_FLOAT, 4, &n);
    assert_int_equal(n, ns1 - 1);
    uint32_t *tag = read_ds(fid, "/tracts/dps/tag", H5T_NATIVE_UINT32, 4, &n);
    float *fa = read_ds(fid, "/tracts/dpv/fa", H5T_NATIVE_FLOAT, 4, &n);
    assert_int_equal(n, nv);
    for (uint64_t s = 0; s + 1 < ns1; s++) {
        unsigned th_id = tag[s] / 100000u, i = tag[s] % 100000u;
        assert_true(th_id < THREADS);
        assert_true(w[s] == (float)i);
        assert_int_equal(off[s + 1] - off[s], npoints_of(th_id, i));
        for (uint64_t k = 0; k < off[s + 1] - off[s]; k++) {
            const float *q = &pos[(off[s] + k) * 3];
            /* float16 holds these small integers and halves exactly */
            assert_true(q[0] == (float)th_id && q[1] == (float)(i % 1000) &&
                        q[2] == (float)k * 0.5f);
            assert_true(fa[(off[s] + k) * 2] == (float)k && fa[(off[s] + k) * 2 + 1] == -(float)k);
        }
    }
    uint32_t *even = read_ds(fid, "/tracts/groups/even", H5T_NATIVE_UINT32, 4, &n);
    uint64_t expect_even = 0;
    for (unsigned k = 0; k < THREADS; k++)
        if (k % 2 == 0)
            expect_even += PER_THREAD / 10;
    assert_int_equal(n, expect_even);
    for (uint64_t k = 0; k < n; k++)
        assert_int_equal((tag[even[k]] / 100000u) % 2, 0);
    uint8_t *col = read_ds(fid, "/tracts/dpg/even/color", H5T_NATIVE_UINT8, 1, &n);
    assert_int_equal(n, 3);
    assert_memory_equal(col, color, 3);
    /* The half type is numpy's float16: 2 bytes, IEEE layout. */
    hid_t d = H5Dopen2(fid, "/tracts/positions", H5P_DEFAULT);
    hid_t ty = H5Dget_type(d);
    assert_int_equal(H5Tget_class(ty), H5T_FLOAT);
    assert_int_equal(H5Tget_size(ty), 2);
    H5Tclose(ty);
    H5Dclose(d);
    double aff[16];
    int32_t dims[3];
    hid_t g = H5Gopen2(fid, "/tracts", H5P_DEFAULT);
    hid_t a = H5Aopen(g, "VOXEL_TO_RASMM", H5P_DEFAULT);
    assert_true(H5Aread(a, H5T_NATIVE_DOUBLE, aff) >= 0);
    H5Aclose(a);
    a = H5Aopen(g, "DIMENSIONS", H5P_DEFAULT);
    assert_true(H5Aread(a, H5T_NATIVE_INT32, dims) >= 0);
    H5Aclose(a);
    H5Gclose(g);
    assert_true(aff[3] == -90.0 && aff[0] == 1.0 && aff[15] == 1.0);
    assert_int_equal(dims[1], 218);
    H5Fclose(fid);
    free(off);
    free(pos);
    free(w);
    free(tag);
    free(fa);
    free(even);
    free(col);
}

int main(void)
{
    const char *t = getenv("H5S_TEST_TMP");
    snprintf(tmpdir, sizeof tmpdir, "%s", t ? t : "/tmp");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tracts__half_conversions_agree),
        cmocka_unit_test(test_tracts__threads_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
