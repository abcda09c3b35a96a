/*
 * test_tractio.c - formats/h5s_tractio.h: every file of $H5S_SHARED_DATA/tracts read, written
 * to TCK, TRK, TRX zip (stored, deflate) and TRX folder (clean, persistent), read back and
 * compared; outputs checked by tests/scripts/trx_check.py (TRX) and nibabel (TCK, TRK);
 * malformed inputs give the exact error code and a message naming file and byte offset.
 */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "h5s_tractio.h"
#include "h5s_error.h"
#include "h5s_types.h"

/* ---------------------------------------------------------------- helpers */

typedef struct {
    h5s_tract_header h; /* fields/groups/dpg arrays owned here */
    float *points;      /* nv x 3 */
    uint64_t *offsets;  /* ns + 1 */
    double *dps;        /* ns x dps_width */
    double *dpv;        /* nv x dpv_width */
    uint32_t **groups;  /* n_groups arrays of h.groups[g].count */
    size_t *gdone;      /* indices received per group */
    size_t ns, nv;
} tract;

static char g_tmp[1024], g_data[1024], g_script[1024];

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

static void tract_free(tract *t)
{
    free(t->points);
    free(t->offsets);
    free(t->dps);
    free(t->dpv);
    for (size_t g = 0; g < t->h.n_groups; g++)
        free(t->groups[g]);
    free(t->groups);
    free(t->gdone);
    free(t->h.dps);
    free(t->h.dpv);
    free(t->h.groups);
    for (size_t i = 0; i < t->h.n_dpg; i++) {
        free(t->h.dpg[i].values);
        free(t->h.dpg[i].raw);
    }
    free(t->h.dpg);
    memset(t, 0, sizeof *t);
}

static int on_group(size_t group, const uint32_t *idx, size_t n, void *payload)
{
    tract *t = payload;
    assert_true(group < t->h.n_groups);
    assert_true(t->gdone[group] + n <= (size_t)t->h.groups[group].count);
    memcpy(t->groups[group] + t->gdone[group], idx, n * sizeof *idx);
    t->gdone[group] += n;
    return 0;
}

/* Reads a whole tractogram into memory (test files are small). Returns the code of the
   first failure, with the streamlines read before it kept. */
static int tract_load(tract *t, const char *path)
{
    memset(t, 0, sizeof *t);
    h5s_tract_reader *r;
    int rc = h5s_tract_open(&r, path);
    if (rc)
        return rc;
    const h5s_tract_header *h = h5s_tract_reader_header(r);
    t->h = *h;
    t->h.dps = xmalloc((h->n_dps + 1) * sizeof *h->dps);
    if (h->n_dps)
        memcpy(t->h.dps, h->dps, h->n_dps * sizeof *h->dps);
    t->h.dpv = xmalloc((h->n_dpv + 1) * sizeof *h->dpv);
    if (h->n_dpv)
        memcpy(t->h.dpv, h->dpv, h->n_dpv * sizeof *h->dpv);
    t->h.groups = xmalloc((h->n_groups + 1) * sizeof *h->groups);
    if (h->n_groups)
        memcpy(t->h.groups, h->groups, h->n_groups * sizeof *h->groups);
    t->h.dpg = xmalloc((h->n_dpg + 1) * sizeof *h->dpg);
    for (size_t i = 0; i < h->n_dpg; i++) {
        t->h.dpg[i] = h->dpg[i];
        t->h.dpg[i].values = xmalloc(h->dpg[i].n_values * sizeof(double));
        memcpy(t->h.dpg[i].values, h->dpg[i].values, h->dpg[i].n_values * sizeof(double));
        size_t rb = h->dpg[i].n_values * h5s_dtype_size(h->dpg[i].dtype);
        t->h.dpg[i].raw = xmalloc(rb);
        memcpy(t->h.dpg[i].raw, h->dpg[i].raw, rb);
    }
    size_t cap_s = 16, cap_v = 1024;
    t->offsets = xmalloc(cap_s * sizeof *t->offsets);
    t->dps = xmalloc(cap_s * (h->dps_width + 1) * sizeof(double));
    t->points = xmalloc(cap_v * 3 * sizeof(float));
    t->dpv = xmalloc(cap_v * (h->dpv_width + 1) * sizeof(double));
    t->offsets[0] = 0;
    h5s_tract_streamline s;
    while ((rc = h5s_tract_next(r, &s)) == 1) {
        assert_int_equal(s.index, t->ns);
        if (t->ns + 2 > cap_s) {
            cap_s *= 2;
            t->offsets = realloc(t->offsets, cap_s * sizeof *t->offsets);
            t->dps = realloc(t->dps, cap_s * (h->dps_width + 1) * sizeof(double));
            assert_non_null(t->offsets);
            assert_non_null(t->dps);
        }
        while (t->nv + s.n_points > cap_v) {
            cap_v *= 2;
            t->points = realloc(t->points, cap_v * 3 * sizeof(float));
            t->dpv = realloc(t->dpv, cap_v * (h->dpv_width + 1) * sizeof(double));
            assert_non_null(t->points);
            assert_non_null(t->dpv);
        }
        if (s.n_points)
            memcpy(t->points + t->nv * 3, s.points, s.n_points * 3 * sizeof(float));
        if (h->dpv_width)
            memcpy(t->dpv + t->nv * h->dpv_width, s.dpv, s.n_points * h->dpv_width * 8);
        if (h->dps_width)
            memcpy(t->dps + t->ns * h->dps_width, s.dps, h->dps_width * 8);
        t->nv += s.n_points;
        t->offsets[++t->ns] = t->nv;
    }
    if (rc == 0) {
        t->groups = xmalloc((h->n_groups + 1) * sizeof *t->groups);
        for (size_t g = 0; g < h->n_groups; g++)
            t->groups[g] = xmalloc(((size_t)h->groups[g].count + 1) * sizeof(uint32_t));
        t->gdone = calloc(h->n_groups + 1, sizeof *t->gdone);
        assert_non_null(t->gdone);
        rc = h5s_tract_read_groups(r, on_group, t);
        for (size_t g = 0; rc == 0 && g < h->n_groups; g++)
            assert_int_equal(t->gdone[g], h->groups[g].count);
    } else {
        t->h.n_groups = 0;
    }
    t->h.nb_streamlines = (int64_t)t->ns;
    t->h.nb_vertices = (int64_t)t->nv;
    h5s_tract_close(r);
    return rc;
}

/* Writes t with a streamline writer. */
static void write_stream(const tract *t, const char *path, h5s_tract_format fmt)
{
    h5s_tract_writer *w;
    int rc = h5s_tract_writer_open(&w, path, fmt, &t->h);
    assert_int_equal(rc, 0);
    for (size_t i = 0; i < t->ns; i++) {
        h5s_tract_streamline s = {i, (size_t)(t->offsets[i + 1] - t->offsets[i]),
                                  t->points + t->offsets[i] * 3, t->dps + i * t->h.dps_width,
                                  t->dpv + t->offsets[i] * t->h.dpv_width};
        assert_int_equal(h5s_tract_writer_write(w, &s), 0);
    }
    assert_int_equal(h5s_tract_writer_close(w), 0);
}

/* A fill source over bytes in memory, handed out in blocks of at most `block`. */
typedef struct {
    unsigned char *bytes;
    size_t len, pos, block;
} mem_src;

static int mem_fill(size_t *out_len, void *buf, size_t cap, void *payload)
{
    mem_src *m = payload;
    size_t n = m->len - m->pos;
    if (n > cap)
        n = cap;
    if (n > m->block)
        n = m->block;
    memcpy(buf, m->bytes + m->pos, n);
    m->pos += n;
    *out_len = n;
    return 0;
}

static void put_value(unsigned char *dst, double v, h5s_dtype dt)
{
    switch (dt) {
#define PUT(T)                                                                                     \
    do {                                                                                           \
        T x = (T)v;                                                                                \
        memcpy(dst, &x, sizeof x);                                                                 \
    } while (0)
    case H5S_INT8:
        PUT(int8_t);
        break;
    case H5S_UINT8:
        PUT(uint8_t);
        break;
    case H5S_INT16:
        PUT(int16_t);
        break;
    case H5S_UINT16:
        PUT(uint16_t);
        break;
    case H5S_INT32:
        PUT(int32_t);
        break;
    case H5S_UINT32:
        PUT(uint32_t);
        break;
    case H5S_INT64:
        PUT(int64_t);
        break;
    case H5S_UINT64:
        PUT(uint64_t);
        break;
    case H5S_FLOAT32:
        PUT(float);
        break;
    case H5S_FLOAT64:
        PUT(double);
        break;
    case H5S_FLOAT16: {
        uint16_t x = h5s_half_from_float((float)v);
        memcpy(dst, &x, 2);
    } break;
    default:
        fail();
#undef PUT
    }
}

/* Packs column block [col, col + k) of rows x width doubles into dtype bytes. */
static mem_src *pack(const double *v, size_t rows, size_t width, size_t col, size_t k, h5s_dtype dt)
{
    mem_src *m = calloc(1, sizeof *m);
    assert_non_null(m);
    size_t sz = h5s_dtype_size(dt);
    m->len = rows * k * sz;
    m->bytes = xmalloc(m->len);
    m->block = 1000; /* odd block size: exercises partial fills */
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < k; c++)
            put_value(m->bytes + (r * k + c) * sz, v[r * width + col + c], dt);
    return m;
}

static void write_trx(const tract *t, const char *path, h5s_trx_mode mode)
{
    h5s_trx_write_options o = H5S_TRX_WRITE_OPTIONS_INIT;
    o.mode = mode;
    o.buffer_size = 4096;
    h5s_trx_writer *w;
    assert_int_equal(h5s_trx_writer_open(&w, path, &o), 0);
    assert_int_equal(h5s_trx_writer_add_header(w, &t->h), 0);
    mem_src *srcs[256];
    size_t n = 0;
    char name[512];
    /* positions in the source dtype when float16/float32 (exact), else float32 */
    h5s_dtype pdt = t->h.positions_dtype == H5S_FLOAT16 ? H5S_FLOAT16 : H5S_FLOAT32;
    double *pd = xmalloc(t->nv * 3 * sizeof(double) + 8);
    for (size_t i = 0; i < t->nv * 3; i++)
        pd[i] = t->points[i];
    srcs[n] = pack(pd, t->nv, 3, 0, 3, pdt);
    free(pd);
    assert_int_equal(h5s_trx_entry_name(name, sizeof name, H5S_TRX_POSITIONS, NULL, NULL, 3, pdt),
                     0);
    assert_int_equal(h5s_trx_writer_add(w, name, srcs[n]->len, mem_fill, srcs[n]), 0);
    n++;
    srcs[n] = calloc(1, sizeof(mem_src));
    srcs[n]->len = (t->ns + 1) * 8;
    srcs[n]->bytes = xmalloc(srcs[n]->len);
    memcpy(srcs[n]->bytes, t->offsets, srcs[n]->len);
    srcs[n]->block = 1u << 30;
    assert_int_equal(h5s_trx_writer_add(w, "offsets.uint64", srcs[n]->len, mem_fill, srcs[n]), 0);
    n++;
    for (int pass = 0; pass < 2; pass++) {
        const h5s_tract_field *f = pass ? t->h.dpv : t->h.dps;
        size_t nf = pass ? t->h.n_dpv : t->h.n_dps;
        for (size_t i = 0; i < nf; i++) {
            srcs[n] = pass ? pack(t->dpv, t->nv, t->h.dpv_width, f[i].col, f[i].ncols, f[i].dtype)
                           : pack(t->dps, t->ns, t->h.dps_width, f[i].col, f[i].ncols, f[i].dtype);
            assert_int_equal(h5s_trx_entry_name(name, sizeof name, pass ? H5S_TRX_DPV : H5S_TRX_DPS,
                                                NULL, f[i].name, f[i].ncols, f[i].dtype),
                             0);
            assert_int_equal(h5s_trx_writer_add(w, name, srcs[n]->len, mem_fill, srcs[n]), 0);
            n++;
        }
    }
    for (size_t g = 0; g < t->h.n_groups; g++) {
        srcs[n] = calloc(1, sizeof(mem_src));
        srcs[n]->len = (size_t)t->h.groups[g].count * 4;
        srcs[n]->bytes = xmalloc(srcs[n]->len);
        memcpy(srcs[n]->bytes, t->groups[g], srcs[n]->len);
        srcs[n]->block = 7;
        assert_int_equal(h5s_trx_entry_name(name, sizeof name, H5S_TRX_GROUP, NULL,
                                            t->h.groups[g].name, 1, H5S_UINT32),
                         0);
        assert_int_equal(h5s_trx_writer_add(w, name, srcs[n]->len, mem_fill, srcs[n]), 0);
        n++;
    }
    for (size_t i = 0; i < t->h.n_dpg; i++) {
        const h5s_tract_dpg *d = &t->h.dpg[i];
        srcs[n] = calloc(1, sizeof(mem_src));
        srcs[n]->len = d->n_values * h5s_dtype_size(d->dtype);
        srcs[n]->bytes = xmalloc(srcs[n]->len);
        memcpy(srcs[n]->bytes, d->raw, srcs[n]->len);
        srcs[n]->block = 1u << 30;
        assert_int_equal(h5s_trx_entry_name(name, sizeof name, H5S_TRX_DPG, d->group, d->name,
                                            d->ncols, d->dtype),
                         0);
        assert_int_equal(h5s_trx_writer_add(w, name, srcs[n]->len, mem_fill, srcs[n]), 0);
        n++;
    }
    assert_true(n < 256);
    assert_int_equal(h5s_trx_writer_close(w), 0);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(srcs[i]->pos, srcs[i]->len); /* every byte was pulled */
        free(srcs[i]->bytes);
        free(srcs[i]);
    }
}

/* The values of each field of a equal those of b's field of the same name (order may
   differ: TRX folders and archives list entries in their own order). */
static void compare_fields(const h5s_tract_field *fa, size_t na, const double *va, size_t wa,
                           const h5s_tract_field *fb, size_t nb, const double *vb, size_t wb,
                           size_t rows, const char *what)
{
    assert_int_equal(na, nb);
    for (size_t f = 0; f < na; f++) {
        size_t g = 0;
        while (g < nb && strcmp(fa[f].name, fb[g].name))
            g++;
        if (g == nb)
            fail_msg("%s field %s missing", what, fa[f].name);
        assert_int_equal(fa[f].ncols, fb[g].ncols);
        for (size_t r = 0; r < rows; r++)
            for (size_t c = 0; c < fa[f].ncols; c++) {
                double x = va[r * wa + fa[f].col + c], y = vb[r * wb + fb[g].col + c];
                if (!(fabs(x - y) <= 1e-6 * fabs(x)))
                    fail_msg("%s %s row %zu col %zu: %.9g vs %.9g", what, fa[f].name, r, c, x, y);
            }
    }
}

static void compare(const tract *a, const tract *b, double ptol, int values, int groups)
{
    assert_int_equal(a->ns, b->ns);
    assert_int_equal(a->nv, b->nv);
    assert_memory_equal(a->offsets, b->offsets, (a->ns + 1) * 8);
    for (size_t i = 0; i < a->nv * 3; i++) {
        if (ptol == 0)
            assert_true(a->points[i] == b->points[i]);
        else
            assert_true(fabs(a->points[i] - b->points[i]) <= ptol);
    }
    if (!values)
        return;
    assert_int_equal(a->h.dps_width, b->h.dps_width);
    assert_int_equal(a->h.dpv_width, b->h.dpv_width);
    compare_fields(a->h.dps, a->h.n_dps, a->dps, a->h.dps_width, b->h.dps, b->h.n_dps, b->dps,
                   b->h.dps_width, a->ns, "dps");
    compare_fields(a->h.dpv, a->h.n_dpv, a->dpv, a->h.dpv_width, b->h.dpv, b->h.n_dpv, b->dpv,
                   b->h.dpv_width, a->nv, "dpv");
    if (!groups)
        return;
    assert_int_equal(a->h.n_groups, b->h.n_groups);
    for (size_t g = 0; g < a->h.n_groups; g++) {
        size_t gb = 0;
        while (gb < b->h.n_groups && strcmp(a->h.groups[g].name, b->h.groups[gb].name))
            gb++;
        assert_true(gb < b->h.n_groups);
        assert_int_equal(a->h.groups[g].count, b->h.groups[gb].count);
        assert_memory_equal(a->groups[g], b->groups[gb], (size_t)a->h.groups[g].count * 4);
    }
    assert_int_equal(a->h.n_dpg, b->h.n_dpg);
    for (size_t i = 0; i < a->h.n_dpg; i++) {
        size_t j = 0;
        while (j < b->h.n_dpg && (strcmp(a->h.dpg[i].group, b->h.dpg[j].group) ||
                                  strcmp(a->h.dpg[i].name, b->h.dpg[j].name)))
            j++;
        assert_true(j < b->h.n_dpg);
        assert_int_equal(a->h.dpg[i].n_values, b->h.dpg[j].n_values);
        assert_memory_equal(a->h.dpg[i].values, b->h.dpg[j].values,
                            a->h.dpg[i].n_values * sizeof(double));
    }
}

static int run(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    if (st != 0 && !strstr(cmd, "2>/dev/null"))
        fprintf(stderr, "command failed (%d): %s\n", st, cmd);
    return st;
}

/* nibabel reads path with the same points as our reader. */
static void check_nibabel(const char *path, const tract *t)
{
    /* The points go beside the test's other outputs, never beside a shared input. */
    char raw[2200];
    const char *base = strrchr(path, '/');
    snprintf(raw, sizeof raw, "%s/%s.points.f32", g_tmp, base ? base + 1 : path);
    FILE *fp = fopen(raw, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(t->points, 12, t->nv, fp), t->nv);
    fclose(fp);
    assert_int_equal(run("/usr/bin/python3 %s --nibabel '%s' --points '%s' --count %zu", g_script,
                         path, raw, t->ns),
                     0);
}

static const char *const k_malformed[] = {"no_header_end.tck", "no_header_end_eof.tck",
                                          "no_magic_number.tck"};

static int is_malformed(const char *name)
{
    for (size_t i = 0; i < sizeof k_malformed / sizeof *k_malformed; i++)
        if (!strcmp(name, k_malformed[i]))
            return 1;
    return 0;
}

static const char *const k_files[] = {"standard.trk",
                                      "standard.LPS.trk",
                                      "standard.tck",
                                      "simple.trk",
                                      "simple.tck",
                                      "simple_big_endian.tck",
                                      "complex.trk",
                                      "complex_big_endian.trk",
                                      "empty.trk",
                                      "empty.tck",
                                      "matlab_nan.tck",
                                      "multiline_header_field.tck",
                                      "small_pascal_legacy_offsets.trx",
                                      "dpsv_legacy_offsets_deflate.trx"};

/* ------------------------------------------------------------------ tests */

static void test_tractio__roundtrip_all(void **state)
{
    (void)state;
    for (size_t fi = 0; fi < sizeof k_files / sizeof *k_files; fi++) {
        char src[1100], out[1200];
        snprintf(src, sizeof src, "%s/%s", g_data, k_files[fi]);
        assert_false(is_malformed(k_files[fi]));
        tract t;
        print_message("%s\n", k_files[fi]);
        int rc = tract_load(&t, src);
        if (rc)
            fail_msg("%s: %s", k_files[fi], h5s_error_message());
        int is_trk = strstr(k_files[fi], ".trk") != NULL;
        if (strstr(k_files[fi], ".trx") == NULL)
            check_nibabel(src, &t); /* our reader agrees with nibabel on every source */

        /* TCK: points exact, no values */
        snprintf(out, sizeof out, "%s/%s.out.tck", g_tmp, k_files[fi]);
        write_stream(&t, out, H5S_TRACT_TCK);
        tract b;
        assert_int_equal(tract_load(&b, out), 0);
        compare(&t, &b, 0, 0, 0);
        check_nibabel(out, &b);
        tract_free(&b);

        /* TRK: points through voxmm and back, values as float32 */
        snprintf(out, sizeof out, "%s/%s.out.trk", g_tmp, k_files[fi]);
        write_stream(&t, out, H5S_TRACT_TRK);
        assert_int_equal(tract_load(&b, out), 0);
        compare(&t, &b, 2e-4, 1, 0);
        check_nibabel(out, &b);
        tract_free(&b);

        static const h5s_trx_mode modes[] = {H5S_TRX_ZIP_STORE, H5S_TRX_ZIP_DEFLATE,
                                             H5S_TRX_DIR_CLEAN, H5S_TRX_DIR_PERSISTENT};
        static const char *const mode_names[] = {"store.trx", "deflate.trx", "clean", "persist"};
        for (int m = 0; m < 4; m++) {
            snprintf(out, sizeof out, "%s/%s.out.%s", g_tmp, k_files[fi], mode_names[m]);
            char keep[1300];
            snprintf(keep, sizeof keep, "%s/parent_owned.txt", out);
            if (modes[m] == H5S_TRX_DIR_PERSISTENT) {
                mkdir(out, 0777);
                FILE *fp = fopen(keep, "w");
                assert_non_null(fp);
                fputs("made by the parent\n", fp);
                fclose(fp);
            }
            if (modes[m] == H5S_TRX_DIR_CLEAN) { /* a stale file that clean mode removes */
                mkdir(out, 0777);
                FILE *fp = fopen(keep, "w");
                assert_non_null(fp);
                fclose(fp);
            }
            write_trx(&t, out, modes[m]);
            struct stat st;
            assert_int_equal(stat(keep, &st) == 0, modes[m] == H5S_TRX_DIR_PERSISTENT);
            if (modes[m] == H5S_TRX_DIR_PERSISTENT) {
                write_trx(&t, out, modes[m]); /* again: overwrites its own entries */
                unlink(keep);
            }
            assert_int_equal(tract_load(&b, out), 0);
            assert_int_equal(b.h.positions_dtype,
                             t.h.positions_dtype == H5S_FLOAT16 ? H5S_FLOAT16 : H5S_FLOAT32);
            compare(&t, &b, 0, 1, 1);
            assert_true(fabs(b.h.voxel_to_rasmm[0][0] - t.h.voxel_to_rasmm[0][0]) < 1e-12);
            assert_int_equal(b.h.dimensions[2], t.h.dimensions[2]);
            tract_free(&b);
            if (strstr(k_files[fi], ".tck") && !is_trk)
                assert_int_equal(
                    run("/usr/bin/python3 %s '%s' --compare-tck '%s'", g_script, out, src), 0);
            else
                assert_int_equal(run("/usr/bin/python3 %s '%s'", g_script, out), 0);
        }
        tract_free(&t);
    }
}

static void test_tractio__known_contents(void **state)
{
    (void)state;
    char src[1100];
    tract t;
    snprintf(src, sizeof src, "%s/small_pascal_legacy_offsets.trx", g_data);
    assert_int_equal(tract_load(&t, src), 0);
    assert_int_equal(t.ns, 1000);
    assert_int_equal(t.nv, 33886);
    assert_int_equal(t.h.positions_dtype, H5S_FLOAT16);
    assert_int_equal(t.h.n_dps, 4);
    assert_int_equal(t.h.n_dpv, 4);
    assert_int_equal(t.h.n_groups, 5);
    assert_int_equal(t.h.n_dpg, 11);
    assert_int_equal(t.h.dimensions[0], 117);
    assert_true(t.h.voxel_to_rasmm[0][0] == -1.25);
    tract_free(&t);
    snprintf(src, sizeof src, "%s/complex.trk", g_data);
    assert_int_equal(tract_load(&t, src), 0);
    /* nibabel: data_per_point colors (3) and fa (1); data_per_streamline mean_curvature,
       mean_torsion, mean_colors (3) */
    assert_int_equal(t.h.dpv_width, 4);
    assert_int_equal(t.h.dps_width, 5);
    assert_string_equal(t.h.dpv[0].name, "colors");
    assert_int_equal(t.h.dpv[0].ncols, 3);
    tract_free(&t);
    /* the checker is not a rubber stamp: both shared legacy files break current rules */
    snprintf(src, sizeof src, "%s/dpsv_legacy_offsets_deflate.trx", g_data);
    assert_int_not_equal(run("/usr/bin/python3 %s '%s' 2>/dev/null", g_script, src), 0);
    snprintf(src, sizeof src, "%s/small_pascal_legacy_offsets.trx", g_data);
    assert_int_not_equal(run("/usr/bin/python3 %s '%s' 2>/dev/null", g_script, src), 0);
    snprintf(src, sizeof src, "%s/matlab_nan.tck", g_data);
    assert_int_equal(tract_load(&t, src), 0);
    assert_int_equal(t.ns, 1);
    tract_free(&t);
}

/* Copies a shared file into the scratch folder, keeping only its first `keep` bytes. */
static void copy_cut(const char *name, const char *dst, long keep)
{
    char src[1100];
    snprintf(src, sizeof src, "%s/%s", g_data, name);
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    assert_non_null(in);
    assert_non_null(out);
    unsigned char buf[65536];
    size_t n, total = 0;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
        if (keep >= 0 && total + n > (size_t)keep)
            n = (size_t)keep - total;
        fwrite(buf, 1, n, out);
        total += n;
    }
    fclose(in);
    fclose(out);
}

static void patch(const char *path, long off, const void *bytes, size_t n)
{
    FILE *fp = fopen(path, "r+b");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, off, SEEK_SET), 0);
    assert_int_equal(fwrite(bytes, 1, n, fp), n);
    fclose(fp);
}

/* Opens and reads path to the end; returns the code and how many streamlines came first. */
static int read_all(const char *path, size_t *good)
{
    h5s_tract_reader *r;
    *good = 0;
    int rc = h5s_tract_open(&r, path);
    if (rc)
        return rc;
    h5s_tract_streamline s;
    while ((rc = h5s_tract_next(r, &s)) == 1)
        (*good)++;
    if (rc < 0) { /* sticky: the same error again */
        char first[512];
        snprintf(first, sizeof first, "%s", h5s_error_message());
        assert_int_equal(h5s_tract_next(r, &s), rc);
        assert_string_equal(h5s_error_message(), first);
    }
    h5s_tract_close(r);
    return rc;
}

static void expect_error(const char *path, int code, const char *needle, size_t good)
{
    size_t n;
    int rc = read_all(path, &n);
    assert_int_equal(rc, code);
    const char *msg = h5s_error_message();
    if (!strstr(msg, needle) || !strstr(msg, path))
        fail_msg("message \"%s\" lacks \"%s\" or the path", msg, needle);
    assert_int_equal(n, good);
}

static void test_tractio__malformed_tck(void **state)
{
    (void)state;
    char p[1100];
    snprintf(p, sizeof p, "%s/no_header_end.tck", g_data);
    expect_error(p, H5S_EFORMAT, "byte 81: end of file before the header's END", 0);
    snprintf(p, sizeof p, "%s/no_header_end_eof.tck", g_data);
    expect_error(p, H5S_EFORMAT, "byte 62: end of file before the header's END", 0);
    snprintf(p, sizeof p, "%s/no_magic_number.tck", g_data);
    expect_error(p, H5S_EFORMAT, "byte 0: not a TCK file", 0);
    /* standard.tck: body at 67, 481 triplets (120 streamlines + NaNs + Inf), 5839 bytes */
    snprintf(p, sizeof p, "%s/cut_point.tck", g_tmp);
    copy_cut("standard.tck", p, 5839 - 18);
    expect_error(p, H5S_EFORMAT, "byte 5815: body truncated inside a point", 0);
    snprintf(p, sizeof p, "%s/cut_inf.tck", g_tmp);
    copy_cut("standard.tck", p, 5839 - 12);
    expect_error(p, H5S_EFORMAT, "byte 5827: body ends without the Inf", 120);
    snprintf(p, sizeof p, "%s/cut_mid.tck", g_tmp);
    copy_cut("standard.tck", p, 5839 - 36);
    expect_error(p, H5S_EFORMAT, "byte 5803: streamline 119 truncated", 119);
    snprintf(p, sizeof p, "%s/bad_dtype.tck", g_tmp);
    copy_cut("standard.tck", p, -1);
    patch(p, 42, "Int32LE  ", 9); /* datatype: Int32LE */
    expect_error(p, H5S_EFORMAT, "byte 32: datatype \"Int32LE\" not supported", 0);
}

static void test_tractio__malformed_trk(void **state)
{
    (void)state;
    char p[1100];
    size_t good;
    snprintf(p, sizeof p, "%s/bad_hdr_size.trk", g_tmp);
    copy_cut("standard.trk", p, -1);
    patch(p, 996, "\x01\x02\x03\x04", 4);
    expect_error(p, H5S_EFORMAT, "byte 996: hdr_size", 0);
    snprintf(p, sizeof p, "%s/bad_magic.trk", g_tmp);
    copy_cut("standard.trk", p, -1);
    patch(p, 0, "TRICK", 5);
    h5s_tract_reader *r = NULL;
    assert_int_equal(h5s_trk_open(&r, p), H5S_EFORMAT);
    assert_null(r);
    assert_non_null(strstr(h5s_error_message(), "byte 0: not a TRK file"));
    /* standard.trk: 120 streamlines; cut 10 bytes: the last one is truncated */
    snprintf(p, sizeof p, "%s/cut.trk", g_tmp);
    copy_cut("standard.trk", p, 5800 - 10);
    assert_int_equal(read_all(p, &good), H5S_EFORMAT);
    assert_int_equal(good, 119);
    assert_non_null(strstr(h5s_error_message(), "streamline 119"));
    assert_non_null(strstr(h5s_error_message(), "file truncated"));
    assert_non_null(strstr(h5s_error_message(), "cut.trk: byte "));
    snprintf(p, sizeof p, "%s/negative.trk", g_tmp);
    copy_cut("standard.trk", p, -1);
    patch(p, 1000, "\xff\xff\xff\xff", 4);
    expect_error(p, H5S_EFORMAT, "byte 1000: streamline 0: point count -1 < 0", 0);
}

static void write_file(const char *path, const void *bytes, size_t n)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(bytes, 1, n, fp), n);
    fclose(fp);
}

static void test_tractio__malformed_trx(void **state)
{
    (void)state;
    char src[1100], dir[1100], p[1300];
    tract t;
    snprintf(src, sizeof src, "%s/simple.tck", g_data);
    assert_int_equal(tract_load(&t, src), 0);
    snprintf(dir, sizeof dir, "%s/bad.trxdir", g_tmp);
    write_trx(&t, dir, H5S_TRX_DIR_CLEAN);
    /* offsets decreasing: item 2 */
    uint64_t off[4];
    memcpy(off, t.offsets, sizeof off);
    off[2] = 0;
    snprintf(p, sizeof p, "%s/offsets.uint64", dir);
    write_file(p, off, sizeof off);
    expect_error(dir, H5S_EFORMAT, "entry offsets.uint64: item 2: offset 0 outside", 1);
    write_file(p, t.offsets, sizeof off);
    /* positions one byte short */
    snprintf(p, sizeof p, "%s/positions.3.float32", dir);
    write_file(p, t.points, t.nv * 12 - 1);
    expect_error(dir, H5S_EFORMAT, "entry positions.3.float32:", 0);
    write_file(p, t.points, t.nv * 12);
    /* bad JSON */
    snprintf(p, sizeof p, "%s/header.json", dir);
    write_file(p, "{\"NB_STREAMLINES\": 3,", 21);
    expect_error(dir, H5S_EFORMAT, "entry header.json: byte", 0);
    write_file(p, "{\"NB_STREAMLINES\": 3.5, \"NB_VERTICES\": 2}", 41);
    expect_error(dir, H5S_EFORMAT, "NB_STREAMLINES and NB_VERTICES must be integers", 0);
    tract_free(&t);
}

/* Reads a whole file into memory (*n bytes, malloc'd). */
static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    *n = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *b = xmalloc(*n);
    assert_int_equal(fread(b, 1, *n, fp), *n);
    fclose(fp);
    return b;
}

/* The central directory record of entry name in a zip held in memory (its signature). */
static unsigned char *central_record(unsigned char *zip, size_t n, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i + 46 + len <= n; i++)
        if (memcmp(zip + i, "PK\1\2", 4) == 0 && zip[i + 28] == len && zip[i + 29] == 0 &&
            memcmp(zip + i + 46, name, len) == 0)
            return zip + i;
    fail_msg("no central directory record for %s", name);
    return NULL;
}

static void put_le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* A zip's directory claims sizes that its entries cannot hold: refused at open, before
 * any buffer is sized from them. */
static void test_tractio__trx_size_claims(void **state)
{
    (void)state;
    char src[1100], p[1100];
    tract t;
    snprintf(src, sizeof src, "%s/simple.tck", g_data);
    assert_int_equal(tract_load(&t, src), 0);
    snprintf(p, sizeof p, "%s/claims.trx", g_tmp);
    size_t n;

    /* stored: one point (12 bytes) more than the entry's 8 points (96 bytes) */
    write_trx(&t, p, H5S_TRX_ZIP_STORE);
    unsigned char *zip = slurp(p, &n);
    unsigned char *rec = central_record(zip, n, "positions.3.float32");
    put_le32(rec + 24, (uint32_t)(t.nv * 12 + 12));
    write_file(p, zip, n);
    expect_error(p, H5S_EFORMAT,
                 "entry positions.3.float32: the directory says 108 bytes from 96 stored bytes", 0);
    /* a method TRX does not use (12: bzip2) */
    put_le32(rec + 24, (uint32_t)(t.nv * 12));
    rec[10] = 12;
    write_file(p, zip, n);
    expect_error(p, H5S_EFORMAT, "entry positions.3.float32: compression method 12", 0);
    free(zip);

    /* deflate: more than 1032 bytes per compressed byte */
    write_trx(&t, p, H5S_TRX_ZIP_DEFLATE);
    zip = slurp(p, &n);
    rec = central_record(zip, n, "offsets.uint64");
    uint32_t comp = (uint32_t)rec[20] | (uint32_t)rec[21] << 8 | (uint32_t)rec[22] << 16 |
                    (uint32_t)rec[23] << 24;
    put_le32(rec + 24, (comp + 1) * 1032 + 1);
    write_file(p, zip, n);
    expect_error(p, H5S_EFORMAT, "entry offsets.uint64: the directory says", 0);
    free(zip);
    tract_free(&t);
}

static int failing_fill(size_t *out_len, void *buf, size_t cap, void *payload)
{
    (void)buf;
    (void)cap;
    (void)payload;
    *out_len = 0;
    return h5s_error_set(H5S_EIO, "source dataset unreadable at chunk 7");
}

static void test_tractio__trx_writer_rules(void **state)
{
    (void)state;
    char p[1100], name[64];
    h5s_tract_header h;
    h5s_tract_header_init(&h);
    h.nb_streamlines = 2;
    h.nb_vertices = 5;
    h5s_trx_writer *w;
    snprintf(p, sizeof p, "%s/rules.trx", g_tmp);
    assert_int_equal(h5s_trx_writer_open(&w, p, NULL), 0);
    assert_int_equal(h5s_trx_writer_add(w, "offsets.uint64", 24, failing_fill, NULL), H5S_ESTATE);
    assert_int_equal(h5s_trx_writer_add_header(w, &h), 0);
    assert_int_equal(h5s_trx_writer_add_header(w, &h), H5S_ESTATE);
    assert_int_equal(h5s_trx_writer_add(w, "offsets.uint32", 12, failing_fill, NULL), H5S_EINVAL);
    assert_int_equal(h5s_trx_writer_add(w, "offsets.uint64", 16, failing_fill, NULL), H5S_EINVAL);
    assert_non_null(strstr(h5s_error_message(), "the header's counts need 24"));
    assert_int_equal(h5s_trx_writer_add(w, "dps/a.b.float32", 8, failing_fill, NULL), H5S_EINVAL);
    assert_int_equal(h5s_trx_writer_add(w, "groups/g.int64", 8, failing_fill, NULL), H5S_EINVAL);
    assert_int_equal(h5s_trx_writer_add(w, "dpg/g/x.float32", 4, failing_fill, NULL), H5S_EINVAL);
    assert_non_null(strstr(h5s_error_message(), "group \"g\" was not added"));
    assert_int_equal(h5s_trx_writer_add(w, "readme.txt", 4, failing_fill, NULL), H5S_EINVAL);
    assert_int_equal(
        h5s_trx_entry_name(name, sizeof name, H5S_TRX_DPS, NULL, "a.b", 1, H5S_FLOAT32),
        H5S_EINVAL);
    assert_int_equal(h5s_trx_entry_name(name, sizeof name, H5S_TRX_DPV, NULL, "fa", 3, H5S_FLOAT16),
                     0);
    assert_string_equal(name, "dpv/fa.3.float16");
    assert_int_equal(h5s_trx_entry_name(name, 8, H5S_TRX_DPV, NULL, "fa", 3, H5S_FLOAT16),
                     H5S_ERANGE);
    /* a fill failure surfaces at close with its own code and message, and no file is left */
    assert_int_equal(h5s_trx_writer_add(w, "positions.3.float32", 60, failing_fill, NULL), 0);
    assert_int_equal(h5s_trx_writer_add(w, "offsets.uint64", 24, failing_fill, NULL), 0);
    assert_int_equal(h5s_trx_writer_add(w, "offsets.uint64", 24, failing_fill, NULL), H5S_EINVAL);
    assert_int_equal(h5s_trx_writer_close(w), H5S_EIO);
    assert_string_equal(h5s_error_message(), "source dataset unreadable at chunk 7");
    struct stat st;
    assert_int_not_equal(stat(p, &st), 0);
    /* persistent mode needs the folder */
    snprintf(p, sizeof p, "%s/missing_dir", g_tmp);
    h5s_trx_write_options o = H5S_TRX_WRITE_OPTIONS_INIT;
    o.mode = H5S_TRX_DIR_PERSISTENT;
    assert_int_equal(h5s_trx_writer_open(&w, p, &o), H5S_ENOTFOUND);
    /* missing positions is an error at close */
    snprintf(p, sizeof p, "%s/nopos.trx", g_tmp);
    assert_int_equal(h5s_trx_writer_open(&w, p, NULL), 0);
    assert_int_equal(h5s_trx_writer_add_header(w, &h), 0);
    assert_int_equal(h5s_trx_writer_close(w), H5S_EFORMAT);
}

int main(void)
{
    const char *tmp = getenv("H5S_TEST_TMP"), *data = getenv("H5S_SHARED_DATA");
    if (!tmp || !data) {
        fprintf(stderr, "H5S_TEST_TMP and H5S_SHARED_DATA must be set (ctest does)\n");
        return 1;
    }
    snprintf(g_tmp, sizeof g_tmp, "%s", tmp);
    snprintf(g_data, sizeof g_data, "%s/tracts", data);
    snprintf(g_script, sizeof g_script, "%s", __FILE__);
    char *slash = strrchr(g_script, '/');
    snprintf(slash ? slash + 1 : g_script,
             sizeof g_script - (size_t)(slash ? slash + 1 - g_script : 0), "scripts/trx_check.py");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tractio__known_contents),
        cmocka_unit_test(test_tractio__malformed_tck),
        cmocka_unit_test(test_tractio__malformed_trk),
        cmocka_unit_test(test_tractio__malformed_trx),
        cmocka_unit_test(test_tractio__trx_size_claims),
        cmocka_unit_test(test_tractio__trx_writer_rules),
        cmocka_unit_test(test_tractio__roundtrip_all),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
