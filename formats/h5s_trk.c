/*
 * h5s_trk.c - TrackVis .trk (version 2; version 1 read too): streaming reader and writer,
 * the voxmm <-> RAS+ mm transform nibabel uses, and the affine helpers of the common
 * header. Format notes: docs/tractio.md.
 *
 * Header: 1000 bytes, "TRACK\0", dim int16[3] @6, voxel_size float[3] @12, origin @24,
 * n_scalars int16 @36, scalar_name char[10][20] @38, n_properties int16 @238,
 * property_name char[10][20] @240, vox_to_ras float[4][4] @440, reserved @504,
 * voxel_order char[4] @948, pad @952, image_orientation_patient float[6] @956, pad @980,
 * invert/swap bytes @982, n_count int32 @988, version int32 @992, hdr_size int32 @996
 * (1000, in the file's byte order: it tells the endianness). Body per streamline: int32 m,
 * m x (3 + n_scalars) float32 (x y z in voxmm, then the scalars), n_properties float32.
 */
#define _POSIX_C_SOURCE 200809L
#define H5S_TRACTIO_INTERNAL
#include "h5s_tractio.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "h5s_bytes.h"
#include "h5s_error.h"

#define TRK_HDR 1000
#define TRK_MAX_NAMES 10

/* ------------------------------------------------------------ affine helpers */

static void mat4_mul(double out[4][4], const double a[4][4], const double b[4][4])
{
    double r[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            double s = 0;
            for (int k = 0; k < 4; k++)
                s += a[i][k] * b[k][j];
            r[i][j] = s;
        }
    memcpy(out, r, sizeof r);
}

int h5s_tract_mat4_inverse(double out[4][4], const double m[4][4])
{
    double a[4][8];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 8; j++)
            a[i][j] = j < 4 ? m[i][j] : (j - 4 == i ? 1.0 : 0.0);
    for (int c = 0; c < 4; c++) {
        int piv = c;
        for (int i = c + 1; i < 4; i++)
            if (fabs(a[i][c]) > fabs(a[piv][c]))
                piv = i;
        if (fabs(a[piv][c]) < 1e-300)
            return h5s_error_set(H5S_EINVAL, "affine is singular");
        if (piv != c)
            for (int j = 0; j < 8; j++) {
                double t = a[c][j];
                a[c][j] = a[piv][j];
                a[piv][j] = t;
            }
        double d = a[c][c];
        for (int j = 0; j < 8; j++)
            a[c][j] /= d;
        for (int i = 0; i < 4; i++)
            if (i != c && a[i][c] != 0.0) {
                double f = a[i][c];
                for (int j = 0; j < 8; j++)
                    a[i][j] -= f * a[c][j];
            }
    }
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            out[i][j] = a[i][j + 4];
    return 0;
}

/* nibabel's io_orientation for non-oblique affines: for each voxel axis in turn, the RAS
   axis its normalized column points to most (taken axes excluded), and the sign. */
static int axes_of_affine(int axis[3], int flip[3], const double aff[4][4])
{
    double r[3][3];
    for (int j = 0; j < 3; j++) {
        double n = sqrt(aff[0][j] * aff[0][j] + aff[1][j] * aff[1][j] + aff[2][j] * aff[2][j]);
        for (int i = 0; i < 3; i++)
            r[i][j] = n > 0 ? aff[i][j] / n : 0.0;
    }
    for (int j = 0; j < 3; j++) {
        int best = -1;
        for (int i = 0; i < 3; i++)
            if (fabs(r[i][j]) > 1e-12 && (best < 0 || fabs(r[i][j]) > fabs(r[best][j])))
                best = i;
        if (best < 0)
            return H5S_EFORMAT;
        axis[j] = best;
        flip[j] = r[best][j] < 0 ? -1 : 1;
        for (int k = 0; k < 3; k++)
            r[best][k] = 0.0;
    }
    return 0;
}

static int axes_of_codes(int axis[3], int flip[3], const char *codes)
{
    int seen = 0;
    for (int i = 0; i < 3; i++) {
        switch (codes[i]) {
        case 'R':
        case 'r':
            axis[i] = 0;
            flip[i] = 1;
            break;
        case 'L':
        case 'l':
            axis[i] = 0;
            flip[i] = -1;
            break;
        case 'A':
        case 'a':
            axis[i] = 1;
            flip[i] = 1;
            break;
        case 'P':
        case 'p':
            axis[i] = 1;
            flip[i] = -1;
            break;
        case 'S':
        case 's':
            axis[i] = 2;
            flip[i] = 1;
            break;
        case 'I':
        case 'i':
            axis[i] = 2;
            flip[i] = -1;
            break;
        default:
            return H5S_EFORMAT;
        }
        if (seen & (1 << axis[i]))
            return H5S_EFORMAT;
        seen |= 1 << axis[i];
    }
    return 0;
}

void h5s_tract_header_derive(h5s_tract_header *h)
{
    static const char letters[3][2] = {{'L', 'R'}, {'P', 'A'}, {'I', 'S'}};
    const double(*a)[4] = h->voxel_to_rasmm;
    for (int j = 0; j < 3; j++)
        h->voxel_sizes[j] = (float)sqrt(a[0][j] * a[0][j] + a[1][j] * a[1][j] + a[2][j] * a[2][j]);
    int axis[3], flip[3];
    if (axes_of_affine(axis, flip, h->voxel_to_rasmm) == 0) {
        for (int j = 0; j < 3; j++)
            h->voxel_order[j] = letters[axis[j]][flip[j] > 0];
        h->voxel_order[3] = '\0';
    }
}

int h5s_trk_voxmm_to_rasmm(double out[4][4], const h5s_tract_header *h)
{
    double a[4][4] = {{0}}, m[4][4] = {{0}};
    for (int i = 0; i < 3; i++) {
        if (!(h->voxel_sizes[i] > 0) && !(h->voxel_sizes[i] < 0))
            return h5s_error_set(H5S_EFORMAT, "TRK voxel size %d is 0", i);
        a[i][i] = 1.0 / h->voxel_sizes[i];
        a[i][3] = -0.5;
    }
    a[3][3] = 1.0;
    int h_axis[3], h_flip[3], a_axis[3], a_flip[3];
    if (axes_of_codes(h_axis, h_flip, h->voxel_order))
        return h5s_error_set(H5S_EFORMAT, "TRK voxel order \"%.3s\" is not 3 axes of RLAPSI",
                             h->voxel_order);
    if (axes_of_affine(a_axis, a_flip, h->voxel_to_rasmm))
        return h5s_error_set(H5S_EFORMAT, "vox_to_ras has no axis directions");
    /* nibabel: ornt_transform(header order -> affine order), then inv_ornt_aff. */
    for (int i = 0; i < 3; i++) {
        int to = 0;
        for (int k = 0; k < 3; k++)
            if (a_axis[k] == h_axis[i])
                to = k;
        int flip = h_flip[i] == a_flip[to] ? 1 : -1;
        double c = -((double)h->dimensions[i] - 1.0) / 2.0;
        m[i][to] = flip;
        m[i][3] = flip * c - c;
    }
    m[3][3] = 1.0;
    mat4_mul(a, m, a);
    mat4_mul(out, h->voxel_to_rasmm, a);
    return 0;
}

/* --------------------------------------------------------------------- reader */

typedef struct {
    struct h5s_tract_reader base;
    char *path;
    FILE *fp;
    int swap;
    uint64_t file_size, pos, index;
    int32_t n_scalars, n_props;
    double aff[4][4]; /* voxmm -> RAS+ mm */
    float *raw;       /* one streamline as stored */
    float *points;
    double *dpv, *dps;
    size_t cap_points;
} trk_reader;

static int16_t rd16(const unsigned char *p, int swap)
{
    uint16_t v;
    memcpy(&v, p, 2);
    if (swap)
        v = (uint16_t)(v >> 8 | v << 8);
    return (int16_t)v;
}

static int32_t rd32(const unsigned char *p, int swap)
{
    uint32_t v;
    memcpy(&v, p, 4);
    if (swap)
        h5s_bytes_swap(&v, 1, 4);
    return (int32_t)v;
}

static float rdf(const unsigned char *p, int swap)
{
    uint32_t v = (uint32_t)rd32(p, swap);
    float f;
    memcpy(&f, &v, 4);
    return f;
}

/* Makes room for a streamline of m points: raw holds it as stored (m x (3 + n_scalars)
   floats, then the n_properties floats, which a streamline of 0 points has too), points
   and dpv its conversions. The room doubles from a few points, so that it stays within
   twice the streamline read: with 32767 scalars a point is 128 KiB. */
static int trk_grow(trk_reader *t, size_t m)
{
    size_t per = 3u + (size_t)t->n_scalars;
    if (t->raw && m <= t->cap_points)
        return 0;
    size_t cap = t->cap_points ? t->cap_points : 16;
    while (cap < m)
        cap *= 2;
    float *raw = realloc(t->raw, (cap * per + (size_t)t->n_props) * sizeof(float));
    if (raw)
        t->raw = raw;
    float *pts = realloc(t->points, cap * 3 * sizeof(float));
    if (pts)
        t->points = pts;
    double *dpv =
        t->n_scalars ? realloc(t->dpv, cap * (size_t)t->n_scalars * sizeof(double)) : t->dpv;
    if (dpv)
        t->dpv = dpv;
    if (!raw || !pts || (t->n_scalars && !dpv))
        return h5s_error_set(H5S_ENOMEM, "%s: no memory for a streamline of %zu points", t->path,
                             m);
    t->cap_points = cap;
    return 0;
}

static int trk_next(h5s_tract_reader *r, h5s_tract_streamline *out)
{
    trk_reader *t = (trk_reader *)r;
    int64_t declared = t->base.header.nb_streamlines;
    if (declared >= 0 && t->index >= (uint64_t)declared)
        return 0;
    unsigned char mb[4];
    size_t got = fread(mb, 1, 4, t->fp);
    if (got == 0 && !ferror(t->fp)) {
        if (declared >= 0)
            return h5s_error_set(H5S_EFORMAT,
                                 "%s: byte %llu: file ends after %llu streamlines, n_count says "
                                 "%lld (file truncated?)",
                                 t->path, (unsigned long long)t->pos, (unsigned long long)t->index,
                                 (long long)declared);
        return 0;
    }
    if (got < 4)
        return h5s_error_set(H5S_EFORMAT, "%s: byte %llu: streamline %llu: truncated point count",
                             t->path, (unsigned long long)t->pos, (unsigned long long)t->index);
    int32_t m = rd32(mb, t->swap);
    size_t per = 3u + (size_t)t->n_scalars;
    uint64_t need = (uint64_t)(m < 0 ? 0 : m) * per * 4u + (uint64_t)t->n_props * 4u;
    if (m < 0)
        return h5s_error_set(H5S_EFORMAT, "%s: byte %llu: streamline %llu: point count %d < 0",
                             t->path, (unsigned long long)t->pos, (unsigned long long)t->index,
                             (int)m);
    if (need > t->file_size - t->pos - 4)
        return h5s_error_set(H5S_EFORMAT,
                             "%s: byte %llu: streamline %llu: %d points need %llu bytes, only "
                             "%llu left (file truncated?)",
                             t->path, (unsigned long long)t->pos, (unsigned long long)t->index,
                             (int)m, (unsigned long long)need,
                             (unsigned long long)(t->file_size - t->pos - 4));
    int rc = trk_grow(t, (size_t)m);
    if (rc)
        return rc;
    size_t nf = (size_t)m * per;
    if (fread(t->raw, 4, nf, t->fp) != nf ||
        (t->n_props && fread(t->raw + nf, 4, (size_t)t->n_props, t->fp) != (size_t)t->n_props))
        return h5s_error_set(H5S_EIO, "%s: byte %llu: streamline %llu: read failed", t->path,
                             (unsigned long long)t->pos, (unsigned long long)t->index);
    if (t->swap)
        h5s_bytes_swap(t->raw, nf + (size_t)t->n_props, 4);
    const double(*a)[4] = t->aff;
    const float *s = t->raw;
    float *p = t->points;
    for (size_t i = 0; i < (size_t)m; i++, s += per, p += 3) {
        double x = s[0], y = s[1], z = s[2];
        p[0] = (float)(a[0][0] * x + a[0][1] * y + a[0][2] * z + a[0][3]);
        p[1] = (float)(a[1][0] * x + a[1][1] * y + a[1][2] * z + a[1][3]);
        p[2] = (float)(a[2][0] * x + a[2][1] * y + a[2][2] * z + a[2][3]);
        for (int32_t k = 0; k < t->n_scalars; k++)
            t->dpv[i * (size_t)t->n_scalars + (size_t)k] = s[3 + k];
    }
    for (int32_t k = 0; k < t->n_props; k++)
        t->dps[k] = t->raw[nf + (size_t)k];
    t->pos += 4 + need;
    out->index = t->index++;
    out->n_points = (size_t)m;
    out->points = t->points;
    out->dpv = t->n_scalars ? t->dpv : NULL;
    out->dps = t->n_props ? t->dps : NULL;
    return 1;
}

static void trk_close(h5s_tract_reader *r)
{
    trk_reader *t = (trk_reader *)r;
    if (t->fp)
        fclose(t->fp);
    free(t->raw);
    free(t->points);
    free(t->dpv);
    free(t->dps);
    free(t->path);
    h5s_tract_header_free(&t->base.header);
    free(t);
}

static const struct h5s_tract_reader_ops trk_ops = {trk_next, NULL, trk_close};

/* nibabel's names: "name" (1 column), "name\0N" (N columns), "" (unused slot); columns
   left over after the named ones form a field named `rest`. */
static int trk_names(trk_reader *t, const unsigned char *slots, int32_t total, const char *rest,
                     const char *what, uint64_t at, h5s_tract_field **out, size_t *n_out)
{
    h5s_tract_field *f = calloc(TRK_MAX_NAMES + 1, sizeof *f);
    if (!f)
        return h5s_error_set(H5S_ENOMEM, "%s: no memory", t->path);
    size_t n = 0;
    int32_t cols = 0;
    for (int s = 0; s < TRK_MAX_NAMES && cols < total; s++) {
        const char *slot = (const char *)slots + s * 20;
        size_t len = strnlen(slot, 20);
        if (len == 0)
            continue;
        uint32_t k = 1;
        if (len < 19 && slot[len] == '\0' && slot[len + 1] != '\0') {
            char num[21] = "";
            memcpy(num, slot + len + 1, 19 - len);
            char *end = NULL;
            long v = strtol(num, &end, 10);
            size_t tail = (size_t)(end - num);
            int junk = 0;
            for (size_t q = len + 1 + tail; q < 20; q++)
                junk |= slot[q] != '\0';
            /* K can be any column count TRK holds: n_scalars and n_properties are int16,
               and the writer names a field of up to 32767 columns this way. */
            if (end == num || v < 0 || v > INT16_MAX || junk) {
                free(f);
                return h5s_error_set(H5S_EFORMAT, "%s: byte %llu: bad %s name \"%.*s\"", t->path,
                                     (unsigned long long)(at + (uint64_t)s * 20), what, (int)len,
                                     slot);
            }
            k = (uint32_t)v;
        }
        if (k == 0)
            continue;
        memcpy(f[n].name, slot, len);
        f[n].dtype = H5S_FLOAT32;
        f[n].ncols = k;
        cols += (int32_t)k;
        n++;
    }
    if (cols > total) {
        free(f);
        return h5s_error_set(H5S_EFORMAT, "%s: byte %llu: %s names give %d columns, the header %d",
                             t->path, (unsigned long long)at, what, (int)cols, (int)total);
    }
    if (cols < total) {
        snprintf(f[n].name, sizeof f[n].name, "%s", rest);
        f[n].dtype = H5S_FLOAT32;
        f[n].ncols = (uint32_t)(total - cols);
        n++;
    }
    *out = f;
    *n_out = n;
    return 0;
}

static int trk_parse(trk_reader *t, const unsigned char *h)
{
    h5s_tract_header *hd = &t->base.header;
    if (memcmp(h, "TRACK", 5) != 0)
        return h5s_error_set(H5S_EFORMAT, "%s: byte 0: not a TRK file: no \"TRACK\" magic",
                             t->path);
    if (rd32(h + 996, 0) == TRK_HDR)
        t->swap = 0;
    else if (rd32(h + 996, 1) == TRK_HDR)
        t->swap = 1;
    else
        return h5s_error_set(H5S_EFORMAT, "%s: byte 996: hdr_size is not 1000 in either byte order",
                             t->path);
    int32_t version = rd32(h + 992, t->swap);
    if (version < 1 || version > 3)
        return h5s_error_set(H5S_EFORMAT, "%s: byte 992: TRK version %d not supported (1 to 3)",
                             t->path, (int)version);
    for (int i = 0; i < 3; i++) {
        hd->dimensions[i] = rd16(h + 6 + 2 * i, t->swap);
        hd->voxel_sizes[i] = rdf(h + 12 + 4 * i, t->swap);
    }
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            hd->voxel_to_rasmm[i][j] = version == 1 ? 0.0 : rdf(h + 440 + 16 * i + 4 * j, t->swap);
    if (hd->voxel_to_rasmm[3][3] == 0.0) { /* not recorded: identity, as nibabel */
        memset(hd->voxel_to_rasmm, 0, sizeof hd->voxel_to_rasmm);
        for (int i = 0; i < 4; i++)
            hd->voxel_to_rasmm[i][i] = 1.0;
    }
    memcpy(hd->voxel_order, h + 948, 3);
    hd->voxel_order[3] = '\0';
    if (!hd->voxel_order[0])
        memcpy(hd->voxel_order, "LPS", 4); /* TrackVis's default, as nibabel */
    int32_t count = rd32(h + 988, t->swap);
    if (count < 0)
        return h5s_error_set(H5S_EFORMAT, "%s: byte 988: n_count %d < 0", t->path, (int)count);
    hd->nb_streamlines = count > 0 ? count : -1;
    t->n_scalars = rd16(h + 36, t->swap);
    t->n_props = rd16(h + 238, t->swap);
    if (t->n_scalars < 0 || t->n_props < 0)
        return h5s_error_set(H5S_EFORMAT, "%s: byte %d: negative n_%s", t->path,
                             t->n_scalars < 0 ? 36 : 238,
                             t->n_scalars < 0 ? "scalars" : "properties");
    int rc = trk_names(t, h + 38, t->n_scalars, "scalars", "scalar", 38, &hd->dpv, &hd->n_dpv);
    if (!rc)
        rc = trk_names(t, h + 240, t->n_props, "properties", "property", 240, &hd->dps, &hd->n_dps);
    if (!rc)
        rc = h5s_tract_header_layout(hd);
    if (rc)
        return rc;
    rc = h5s_trk_voxmm_to_rasmm(t->aff, hd);
    if (rc)
        return h5s_error_prefix(rc, "%s: byte 12", t->path);
    if (t->n_props) {
        t->dps = malloc((size_t)t->n_props * sizeof(double));
        if (!t->dps)
            return h5s_error_set(H5S_ENOMEM, "%s: no memory", t->path);
    }
    return 0;
}

int h5s_trk_open(h5s_tract_reader **out, const char *path)
{
    if (!out || !path)
        return h5s_error_set(H5S_EINVAL, "h5s_trk_open: NULL argument");
    *out = NULL;
    trk_reader *t = calloc(1, sizeof *t);
    if (!t)
        return h5s_error_set(H5S_ENOMEM, "%s: no memory", path);
    t->base.ops = &trk_ops;
    h5s_tract_header_init(&t->base.header);
    t->base.header.format = H5S_TRACT_TRK;
    int rc;
    unsigned char h[TRK_HDR];
    struct stat st;
    t->path = strdup(path);
    if (!t->path) {
        rc = h5s_error_set(H5S_ENOMEM, "%s: no memory", path);
        goto fail;
    }
    t->fp = fopen(path, "rb");
    if (!t->fp || fstat(fileno(t->fp), &st) != 0) {
        rc = h5s_error_set(H5S_EIO, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    t->file_size = (uint64_t)st.st_size;
    size_t got = fread(h, 1, TRK_HDR, t->fp);
    if (got < TRK_HDR) {
        rc = got >= 5 && memcmp(h, "TRACK", 5) == 0
                 ? h5s_error_set(H5S_EFORMAT, "%s: byte %zu: header truncated (%zu of 1000 bytes)",
                                 path, got, got)
                 : h5s_error_set(H5S_EFORMAT, "%s: byte 0: not a TRK file: no \"TRACK\" magic",
                                 path);
        goto fail;
    }
    rc = trk_parse(t, h);
    if (rc)
        goto fail;
    t->pos = TRK_HDR;
    *out = &t->base;
    return 0;
fail:
    trk_close(&t->base);
    return rc;
}

/* --------------------------------------------------------------------- writer */

typedef struct {
    struct h5s_tract_writer base;
    char *path;
    FILE *fp;
    double inv[4][4]; /* RAS+ mm -> voxmm */
    uint32_t n_scalars, n_props;
    float *buf;
    size_t cap_points;
    uint64_t count;
    int failed;
} trk_writer;

static void put16(unsigned char *p, int v)
{
    uint16_t u = (uint16_t)(int16_t)v;
    p[0] = (unsigned char)(u & 0xff);
    p[1] = (unsigned char)(u >> 8);
}

static void put32(unsigned char *p, uint32_t u)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(u >> (8 * i));
}

static void putf(unsigned char *p, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    put32(p, u);
}

static int trk_put_names(unsigned char *slots, const h5s_tract_field *f, size_t n, const char *path,
                         const char *what)
{
    if (n > TRK_MAX_NAMES)
        return h5s_error_set(H5S_ERANGE, "%s: TRK holds at most 10 %s names, not %zu", path, what,
                             n);
    for (size_t i = 0; i < n; i++) {
        char s[64];
        size_t len = strlen(f[i].name);
        int total =
            f[i].ncols == 1 ? (int)len : snprintf(s, sizeof s, "%s%c%u", f[i].name, 0, f[i].ncols);
        if (len == 0 || total > 20)
            return h5s_error_set(H5S_ERANGE,
                                 "%s: %s name \"%s\" (with its count) does not fit "
                                 "TRK's 20 bytes",
                                 path, what, f[i].name);
        if (f[i].ncols == 1)
            memcpy(slots + 20 * i, f[i].name, len);
        else
            memcpy(slots + 20 * i, s, (size_t)total);
    }
    return 0;
}

static int trk_write(h5s_tract_writer *base, const h5s_tract_streamline *s)
{
    trk_writer *w = (trk_writer *)base;
    if (s->n_points > INT32_MAX)
        return h5s_error_set(H5S_ERANGE, "%s: streamline %llu has %zu points, TRK holds 2^31-1",
                             w->path, (unsigned long long)w->count, s->n_points);
    if ((w->n_scalars && s->n_points && !s->dpv) || (w->n_props && !s->dps))
        return h5s_error_set(H5S_EINVAL, "%s: streamline %llu lacks its dps or dpv values", w->path,
                             (unsigned long long)w->count);
    size_t per = 3u + w->n_scalars, m = s->n_points;
    if (m + 1 > w->cap_points) {
        size_t cap = w->cap_points ? w->cap_points : 1024;
        while (cap < m + 1)
            cap *= 2;
        float *b = realloc(w->buf, (cap * per + w->n_props + 1) * sizeof(float));
        if (!b)
            return h5s_error_set(H5S_ENOMEM, "%s: no memory", w->path);
        w->buf = b;
        w->cap_points = cap;
    }
    int32_t m32 = (int32_t)m;
    memcpy(w->buf, &m32, 4);
    float *o = w->buf + 1;
    const float *p = s->points;
    const double(*a)[4] = w->inv;
    for (size_t i = 0; i < m; i++, p += 3, o += per) {
        double x = p[0], y = p[1], z = p[2];
        o[0] = (float)(a[0][0] * x + a[0][1] * y + a[0][2] * z + a[0][3]);
        o[1] = (float)(a[1][0] * x + a[1][1] * y + a[1][2] * z + a[1][3]);
        o[2] = (float)(a[2][0] * x + a[2][1] * y + a[2][2] * z + a[2][3]);
        for (uint32_t k = 0; k < w->n_scalars; k++)
            o[3 + k] = (float)s->dpv[i * w->n_scalars + k];
    }
    for (uint32_t k = 0; k < w->n_props; k++)
        o[k] = (float)s->dps[k];
    size_t n = 1 + m * per + w->n_props;
    if (!h5s_bytes_host_le())
        h5s_bytes_swap(w->buf, n, 4);
    if (fwrite(w->buf, 4, n, w->fp) != n) {
        w->failed = 1;
        return h5s_error_set(H5S_EIO, "%s: write failed: %s", w->path, strerror(errno));
    }
    w->count++;
    return 0;
}

static int trk_writer_close(h5s_tract_writer *base)
{
    trk_writer *w = (trk_writer *)base;
    int rc = w->failed ? h5s_error_set(H5S_EIO, "%s: earlier write failed", w->path) : 0;
    if (!rc && w->count > INT32_MAX)
        rc = h5s_error_set(H5S_ERANGE, "%s: %llu streamlines, TRK's n_count holds 2^31-1", w->path,
                           (unsigned long long)w->count);
    if (!rc) {
        unsigned char c[4];
        put32(c, (uint32_t)w->count);
        if (fseek(w->fp, 988, SEEK_SET) != 0 || fwrite(c, 1, 4, w->fp) != 4)
            rc = h5s_error_set(H5S_EIO, "%s: cannot patch n_count: %s", w->path, strerror(errno));
    }
    if (fclose(w->fp) != 0 && !rc)
        rc = h5s_error_set(H5S_EIO, "%s: close failed: %s", w->path, strerror(errno));
    free(w->buf);
    free(w->path);
    free(w);
    return rc;
}

static const struct h5s_tract_writer_ops trk_writer_ops = {trk_write, trk_writer_close};

/* Called by h5s_tract_writer_open (h5s_tck.c) for TRK. */
int h5s_trk_writer_open_impl(h5s_tract_writer **out, const char *path, const h5s_tract_header *hdr);

int h5s_trk_writer_open_impl(h5s_tract_writer **out, const char *path, const h5s_tract_header *hdr)
{
    h5s_tract_header h = *hdr;
    unsigned char b[TRK_HDR];
    memset(b, 0, sizeof b);
    int axis[3], flip[3];
    if (axes_of_codes(axis, flip, h.voxel_order) || !(h.voxel_sizes[0] > 0) ||
        !(h.voxel_sizes[1] > 0) || !(h.voxel_sizes[2] > 0)) {
        h5s_tract_header_derive(&h); /* voxel order and sizes from the affine */
        if (axes_of_codes(axis, flip, h.voxel_order))
            return h5s_error_set(H5S_EINVAL, "%s: affine has no axis directions", path);
    }
    for (int i = 0; i < 3; i++)
        if (h.dimensions[i] < 0 || h.dimensions[i] > 32767)
            return h5s_error_set(H5S_ERANGE, "%s: dimension %d = %d does not fit TRK's int16", path,
                                 i, (int)h.dimensions[i]);
    uint32_t n_scalars = 0, n_props = 0;
    for (size_t i = 0; i < h.n_dpv; i++)
        n_scalars += h.dpv[i].ncols;
    for (size_t i = 0; i < h.n_dps; i++)
        n_props += h.dps[i].ncols;
    if (n_scalars > 32767 || n_props > 32767)
        return h5s_error_set(H5S_ERANGE, "%s: too many columns for TRK", path);
    int rc = trk_put_names(b + 38, h.dpv, h.n_dpv, path, "scalar");
    if (!rc)
        rc = trk_put_names(b + 240, h.dps, h.n_dps, path, "property");
    if (rc)
        return rc;
    memcpy(b, "TRACK", 5);
    for (int i = 0; i < 3; i++) {
        put16(b + 6 + 2 * i, h.dimensions[i]);
        putf(b + 12 + 4 * i, h.voxel_sizes[i]);
    }
    put16(b + 36, (int)n_scalars);
    put16(b + 238, (int)n_props);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            putf(b + 440 + 16 * i + 4 * j, (float)h.voxel_to_rasmm[i][j]);
    for (int i = 0; i < 3; i++)
        b[948 + i] = (unsigned char)h.voxel_order[i];
    put32(b + 992, 2);
    put32(b + 996, TRK_HDR);

    /* The transform nibabel will apply on reading, from the header as stored (float32). */
    h5s_tract_header stored = h;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            stored.voxel_to_rasmm[i][j] = (float)h.voxel_to_rasmm[i][j];
    double fwd[4][4];
    trk_writer *w = calloc(1, sizeof *w);
    if (!w)
        return h5s_error_set(H5S_ENOMEM, "%s: no memory", path);
    rc = h5s_trk_voxmm_to_rasmm(fwd, &stored);
    if (!rc && h5s_tract_mat4_inverse(w->inv, fwd))
        rc = h5s_error_set(H5S_EINVAL, "%s: the voxmm -> RAS+ transform is singular", path);
    if (rc) {
        free(w);
        return rc;
    }
    w->base.ops = &trk_writer_ops;
    w->n_scalars = n_scalars;
    w->n_props = n_props;
    w->path = strdup(path);
    if (!w->path) {
        free(w);
        return h5s_error_set(H5S_ENOMEM, "%s: no memory", path);
    }
    w->fp = fopen(path, "wb");
    if (!w->fp || fwrite(b, 1, TRK_HDR, w->fp) != TRK_HDR) {
        rc = h5s_error_set(H5S_EIO, "%s: cannot create: %s", path, strerror(errno));
        if (w->fp)
            fclose(w->fp);
        free(w->path);
        free(w);
        return rc;
    }
    *out = &w->base;
    return 0;
}
