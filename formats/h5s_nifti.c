/*
 * h5s_nifti.c - NIfTI-1/NIfTI-2 single-file images: validated header, sequential slice
 * reader, streaming writer. See h5s_nifti.h and docs/nifti.md.
 *
 * Reading checks the raw header bytes first (field offsets of nifti1.h / nifti2.h), then
 * lets libnifti2 parse the header (it computes qto_xyz and friends), and reads the voxels
 * itself through zlib, which reads plain files transparently, so .nii and .nii.gz share
 * one sequential path.
 */
#define _POSIX_C_SOURCE 200809L

#include "h5s_nifti.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include <nifti2_io.h>

#include "h5s_bytes.h"
#include "h5s_error.h"

#define NIFTI1_HDR_SIZE 348
#define NIFTI2_HDR_SIZE 540
#define NIFTI_EXT_FLAG 4
#define NIFTI_IO_CHUNK (1u << 30) /* gzread/gzwrite take an unsigned length */
#define NIFTI_GZ_BUFFER (256u * 1024u)

/* ---- small helpers ---- */

static pthread_once_t nifti_quiet_once = PTHREAD_ONCE_INIT;

static void nifti_quiet_init(void)
{
    nifti_set_debug_level(0);
    nifti_set_skip_blank_ext(1);
}

static void nifti_quiet(void)
{
    pthread_once(&nifti_quiet_once, nifti_quiet_init);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s);
    size_t m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* 1 for .nii.gz, 0 for .nii, -1 for any other name. */
static int name_kind(const char *path)
{
    if (ends_with(path, ".nii.gz"))
        return 1;
    if (ends_with(path, ".nii"))
        return 0;
    return -1;
}

/* Reads fields of a header in the file's byte order. */
typedef struct {
    const unsigned char *p;
    int be;
} raw_hdr;

static uint16_t raw_u16(const raw_hdr *h, size_t off)
{
    const unsigned char *p = h->p + off;
    return h->be ? (uint16_t)(p[0] << 8 | p[1]) : (uint16_t)(p[1] << 8 | p[0]);
}

static uint32_t raw_u32(const raw_hdr *h, size_t off)
{
    const unsigned char *p = h->p + off;
    if (h->be)
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
    return h5s_bytes_le32(p);
}

static uint64_t raw_u64(const raw_hdr *h, size_t off)
{
    uint64_t a = raw_u32(h, off);
    uint64_t b = raw_u32(h, off + 4);
    return h->be ? a << 32 | b : b << 32 | a;
}

static int16_t raw_i16(const raw_hdr *h, size_t off)
{
    uint16_t u = raw_u16(h, off);
    int16_t v;
    memcpy(&v, &u, sizeof v);
    return v;
}

static int64_t raw_i64(const raw_hdr *h, size_t off)
{
    uint64_t u = raw_u64(h, off);
    int64_t v;
    memcpy(&v, &u, sizeof v);
    return v;
}

static double raw_f32(const raw_hdr *h, size_t off)
{
    uint32_t u = raw_u32(h, off);
    float v;
    memcpy(&v, &u, sizeof v);
    return (double)v;
}

static double raw_f64(const raw_hdr *h, size_t off)
{
    uint64_t u = raw_u64(h, off);
    double v;
    memcpy(&v, &u, sizeof v);
    return v;
}

static const char *nifti_code_name(int code)
{
    const char *name = nifti_datatype_to_string(code);
    return name ? name : "UNKNOWN";
}

/* ---- dtype mapping and geometry ---- */

int h5s_nifti_dtype_from_code(h5s_dtype *out, int code)
{
    h5s_dtype d;
    switch (code) {
    case NIFTI_TYPE_UINT8:
        d = H5S_UINT8;
        break;
    case NIFTI_TYPE_INT8:
        d = H5S_INT8;
        break;
    case NIFTI_TYPE_INT16:
        d = H5S_INT16;
        break;
    case NIFTI_TYPE_UINT16:
        d = H5S_UINT16;
        break;
    case NIFTI_TYPE_INT32:
        d = H5S_INT32;
        break;
    case NIFTI_TYPE_UINT32:
        d = H5S_UINT32;
        break;
    case NIFTI_TYPE_INT64:
        d = H5S_INT64;
        break;
    case NIFTI_TYPE_UINT64:
        d = H5S_UINT64;
        break;
    case NIFTI_TYPE_FLOAT32:
        d = H5S_FLOAT32;
        break;
    case NIFTI_TYPE_FLOAT64:
        d = H5S_FLOAT64;
        break;
    default:
        return h5s_error_set(H5S_EFORMAT,
                             "datatype %d (%s) is not supported: only integer and float32/"
                             "float64 voxels are kept (no complex, RGB, float128 or binary)",
                             code, nifti_code_name(code));
    }
    if (out)
        *out = d;
    return 0;
}

int h5s_nifti_code_from_dtype(h5s_dtype dtype)
{
    switch (dtype) {
    case H5S_UINT8:
        return NIFTI_TYPE_UINT8;
    case H5S_INT8:
        return NIFTI_TYPE_INT8;
    case H5S_INT16:
        return NIFTI_TYPE_INT16;
    case H5S_UINT16:
        return NIFTI_TYPE_UINT16;
    case H5S_INT32:
        return NIFTI_TYPE_INT32;
    case H5S_UINT32:
        return NIFTI_TYPE_UINT32;
    case H5S_INT64:
        return NIFTI_TYPE_INT64;
    case H5S_UINT64:
        return NIFTI_TYPE_UINT64;
    case H5S_FLOAT32:
        return NIFTI_TYPE_FLOAT32;
    case H5S_FLOAT64:
        return NIFTI_TYPE_FLOAT64;
    default:
        return 0;
    }
}

uint64_t h5s_nifti_slice_voxels(const h5s_nifti_header *hdr)
{
    uint64_t n = (uint64_t)hdr->dim[1];
    if (hdr->ndim >= 2)
        n *= (uint64_t)hdr->dim[2];
    return n;
}

uint64_t h5s_nifti_nslices(const h5s_nifti_header *hdr)
{
    uint64_t n = 1;
    for (int i = 3; i <= hdr->ndim; i++)
        n *= (uint64_t)hdr->dim[i];
    return n;
}

uint64_t h5s_nifti_data_bytes(const h5s_nifti_header *hdr)
{
    return h5s_nifti_slice_voxels(hdr) * h5s_nifti_nslices(hdr) * h5s_dtype_size(hdr->dtype);
}

/* Total bytes of dims x element size, or H5S_ERANGE when it overflows. */
static int checked_bytes(uint64_t *out, const int64_t *dim, int ndim, size_t elsize)
{
    uint64_t n = elsize;
    for (int i = 1; i <= ndim; i++) {
        uint64_t d = (uint64_t)dim[i];
        if (d != 0 && n > UINT64_MAX / d)
            return H5S_ERANGE;
        n *= d;
    }
    *out = n;
    return 0;
}

static void identity44(double m[4][4])
{
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++)
            m[r][c] = r == c ? 1.0 : 0.0;
}

int h5s_nifti_header_init(h5s_nifti_header *hdr, h5s_dtype dtype, int ndim, const int64_t *dims)
{
    if (!hdr || !dims)
        return h5s_error_set(H5S_EINVAL, "nifti header: NULL argument");
    if (ndim < 1 || ndim > H5S_NIFTI_MAX_DIMS)
        return h5s_error_set(H5S_EINVAL, "nifti header: ndim %d outside 1..7", ndim);
    int code = h5s_nifti_code_from_dtype(dtype);
    if (code == 0)
        return h5s_error_set(H5S_EINVAL, "nifti header: dtype %s has no NIfTI datatype code",
                             h5s_dtype_name(dtype));
    memset(hdr, 0, sizeof *hdr);
    hdr->ndim = ndim;
    hdr->dim[0] = ndim;
    for (int i = 1; i <= 7; i++) {
        hdr->dim[i] = 1;
        hdr->pixdim[i] = 1.0;
    }
    for (int i = 0; i < ndim; i++) {
        if (dims[i] < 1)
            return h5s_error_set(H5S_EINVAL, "nifti header: dim[%d] = %lld, must be > 0", i + 1,
                                 (long long)dims[i]);
        hdr->dim[i + 1] = dims[i];
    }
    hdr->pixdim[0] = 1.0;
    hdr->dtype = dtype;
    hdr->nifti_datatype = code;
    hdr->qfac = 1.0;
    identity44(hdr->qto_xyz);
    identity44(hdr->sto_xyz);
    hdr->xyzt_units = NIFTI_UNITS_MM | NIFTI_UNITS_SEC;
    hdr->scl_slope = 1.0;
    return 0;
}

/*
 * qform affine from the quaternion fields, NIfTI-1 spec "method 2" (nifti1.h): a =
 * sqrt(1 - b^2 - c^2 - d^2), clamped at 0 as nibabel does (libnifti2 instead zeroes a
 * below 1e-7, which moves the matrix by up to 1e-4 from nibabel's).
 */
static void quatern_affine(h5s_nifti_header *hdr)
{
    double b = hdr->quatern_b, c = hdr->quatern_c, d = hdr->quatern_d;
    double w2 = 1.0 - (b * b + c * c + d * d);
    double a = w2 > 0 ? sqrt(w2) : 0.0;
    double z[3] = {hdr->pixdim[1], hdr->pixdim[2], hdr->pixdim[3] * (hdr->qfac < 0 ? -1.0 : 1.0)};
    double r[3][3] = {{a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)},
                      {2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)},
                      {2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b}};
    double off[3] = {hdr->qoffset_x, hdr->qoffset_y, hdr->qoffset_z};
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++)
            hdr->qto_xyz[i][j] = r[i][j] * z[j];
        hdr->qto_xyz[i][3] = off[i];
        hdr->qto_xyz[3][i] = 0.0;
    }
    hdr->qto_xyz[3][3] = 1.0;
}

int h5s_nifti_header_set_affine(h5s_nifti_header *hdr, const double affine[4][4], int qform_code,
                                int sform_code)
{
    if (!hdr || !affine)
        return h5s_error_set(H5S_EINVAL, "nifti header: NULL argument");
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++)
            if (!isfinite(affine[r][c]))
                return h5s_error_set(H5S_EINVAL, "nifti header: affine[%d][%d] is not finite", r,
                                     c);
    nifti_dmat44 m;
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++)
            m.m[r][c] = affine[r][c];
    double qb, qc, qd, qx, qy, qz, dx, dy, dz, qfac;
    nifti_dmat44_to_quatern(m, &qb, &qc, &qd, &qx, &qy, &qz, &dx, &dy, &dz, &qfac);
    hdr->quatern_b = qb;
    hdr->quatern_c = qc;
    hdr->quatern_d = qd;
    hdr->qoffset_x = qx;
    hdr->qoffset_y = qy;
    hdr->qoffset_z = qz;
    hdr->qfac = qfac < 0 ? -1.0 : 1.0;
    hdr->pixdim[0] = hdr->qfac;
    hdr->pixdim[1] = dx;
    hdr->pixdim[2] = dy;
    hdr->pixdim[3] = dz;
    quatern_affine(hdr);
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++)
            hdr->sto_xyz[r][c] = affine[r][c];
    hdr->qform_code = qform_code;
    hdr->sform_code = sform_code;
    return 0;
}

void h5s_nifti_header_affine(const h5s_nifti_header *hdr, double out[4][4])
{
    if (hdr->sform_code > 0) {
        memcpy(out, hdr->sto_xyz, sizeof hdr->sto_xyz);
        return;
    }
    if (hdr->qform_code > 0) {
        memcpy(out, hdr->qto_xyz, sizeof hdr->qto_xyz);
        return;
    }
    /* nibabel's get_base_affine: x flipped, centred on the voxel grid */
    identity44(out);
    for (int i = 0; i < 3; i++) {
        double zoom = i < hdr->ndim ? hdr->pixdim[i + 1] : 1.0;
        double n = i < hdr->ndim ? (double)hdr->dim[i + 1] : 1.0;
        if (i == 0)
            zoom = -zoom;
        out[i][i] = zoom;
        out[i][3] = -((n - 1.0) / 2.0) * zoom;
    }
}

/* ---- reading ---- */

struct h5s_nifti_reader {
    char *path;
    gzFile gz;
    h5s_nifti_header hdr;
    uint64_t slice_bytes;
    uint64_t next_slice;
    int swap;
    int failed;
};

/* Opens path with zlib (plain files are read transparently). */
static int open_gz(gzFile *out, const char *path)
{
    gzFile gz = gzopen(path, "rb");
    if (!gz) {
        if (errno == ENOENT)
            return h5s_error_set(H5S_ENOTFOUND, "%s: no such file", path);
        if (errno == ENOMEM)
            return h5s_error_set(H5S_ENOMEM, "%s: out of memory opening the file", path);
        return h5s_error_set(H5S_EIO, "%s: cannot open: %s", path, strerror(errno));
    }
    gzbuffer(gz, NIFTI_GZ_BUFFER);
    *out = gz;
    return 0;
}

/*
 * Reads up to len bytes into buf and sets *got (short only at the end of the data).
 * Returns 0, or H5S_EFORMAT for a corrupt gzip stream (naming the decompressed offset
 * at + bytes read) and H5S_EIO for a failed read.
 */
static int gz_read_full(gzFile gz, void *buf, uint64_t len, uint64_t *got, const char *path,
                        uint64_t at)
{
    unsigned char *p = buf;
    uint64_t done = 0;
    int zerr = Z_OK;
    const char *msg = NULL;
    *got = 0;
    while (done < len) {
        uint64_t want = len - done;
        unsigned n = want > NIFTI_IO_CHUNK ? NIFTI_IO_CHUNK : (unsigned)want;
        int k = gzread(gz, p + done, n);
        if (k < 0) {
            msg = gzerror(gz, &zerr);
            break;
        }
        if (k == 0)
            break;
        done += (uint64_t)k;
    }
    /* zlib reports a stream cut inside a deflate block only through gzerror */
    if (done < len && zerr == Z_OK)
        msg = gzerror(gz, &zerr);
    *got = done;
    if (zerr == Z_OK || zerr == Z_BUF_ERROR)
        return 0;
    if (zerr == Z_ERRNO)
        return h5s_error_set(H5S_EIO, "%s: byte %llu: read failed: %s", path,
                             (unsigned long long)(at + done), strerror(errno));
    return h5s_error_set(H5S_EFORMAT, "%s: byte %llu (decompressed): corrupt gzip stream: %s", path,
                         (unsigned long long)(at + done), msg ? msg : "unknown");
}

/* Decompressed length of the whole stream (also verifies the gzip CRC). */
static int gz_length(uint64_t *out, const char *path)
{
    gzFile gz = NULL;
    int rc = open_gz(&gz, path);
    if (rc)
        return rc;
    unsigned char *buf = malloc(NIFTI_GZ_BUFFER);
    if (!buf) {
        gzclose(gz);
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", path);
    }
    uint64_t total = 0;
    for (;;) {
        uint64_t got = 0;
        rc = gz_read_full(gz, buf, NIFTI_GZ_BUFFER, &got, path, total);
        total += got;
        if (rc || got < NIFTI_GZ_BUFFER)
            break;
    }
    free(buf);
    gzclose(gz);
    *out = total;
    return rc;
}

static int file_is_gzip(int *out, uint64_t *size, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT)
            return h5s_error_set(H5S_ENOTFOUND, "%s: no such file", path);
        return h5s_error_set(H5S_EIO, "%s: cannot open: %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        fclose(f);
        return h5s_error_set(H5S_EIO, "%s: cannot stat: %s", path, strerror(errno));
    }
    unsigned char m[2] = {0, 0};
    size_t n = fread(m, 1, 2, f);
    fclose(f);
    *out = n == 2 && m[0] == 0x1f && m[1] == 0x8b;
    *size = (uint64_t)st.st_size;
    return 0;
}

static void copy_text(char *dst, size_t cap, const char *src, size_t n)
{
    size_t len = 0;
    while (len < n && len + 1 < cap && src[len])
        len++;
    memcpy(dst, src, len);
    dst[len] = '\0';
}

/*
 * Checks the raw header bytes and fills the fields libnifti2 does not give faithfully
 * (dims as stored, vox_offset, byte order). data_len: bytes available after the header
 * (file size, or decompressed length; UINT64_MAX when unknown).
 */
static int check_raw_header(h5s_nifti_header *hdr, const unsigned char *buf, size_t n,
                            const char *path, uint64_t data_len, const char *len_what)
{
    if (n < 4)
        return h5s_error_set(H5S_EFORMAT,
                             "%s: byte %zu: file ends inside the header (a NIfTI header is "
                             "at least %d bytes)",
                             path, n, NIFTI1_HDR_SIZE);
    raw_hdr h = {buf, 0};
    uint32_t sz = raw_u32(&h, 0);
    if (sz != NIFTI1_HDR_SIZE && sz != NIFTI2_HDR_SIZE) {
        h.be = 1;
        sz = raw_u32(&h, 0);
    }
    if (sz != NIFTI1_HDR_SIZE && sz != NIFTI2_HDR_SIZE)
        return h5s_error_set(H5S_EFORMAT,
                             "%s: byte 0: sizeof_hdr is %u, expected 348 (NIfTI-1) or 540 "
                             "(NIfTI-2): not a NIfTI file",
                             path, (unsigned)h5s_bytes_le32(buf));
    int v = sz == NIFTI1_HDR_SIZE ? 1 : 2;
    if (n < sz)
        return h5s_error_set(H5S_EFORMAT,
                             "%s: byte %zu: file ends inside the %u-byte NIfTI-%d header", path, n,
                             (unsigned)sz, v);
    hdr->version = v;
    hdr->big_endian = h.be;

    /* magic: NIfTI-1 at 344 ("n+1\0"), NIfTI-2 at 4 ("n+2\0\r\n\032\n") */
    if (v == 1) {
        if (memcmp(buf + 344, "ni1\0", 4) == 0)
            return h5s_error_set(H5S_EFORMAT,
                                 "%s: byte 344: magic \"ni1\" is a two-file (.hdr/.img) NIfTI-1 "
                                 "header; only single-file .nii is supported",
                                 path);
        if (memcmp(buf + 344, "n+1\0", 4) != 0)
            return h5s_error_set(H5S_EFORMAT,
                                 "%s: byte 344: magic is not \"n+1\" (ANALYZE 7.5 or damaged "
                                 "NIfTI-1 header)",
                                 path);
    } else {
        if (memcmp(buf + 4, "ni2\0", 4) == 0)
            return h5s_error_set(H5S_EFORMAT,
                                 "%s: byte 4: magic \"ni2\" is a two-file (.hdr/.img) NIfTI-2 "
                                 "header; only single-file .nii is supported",
                                 path);
        if (memcmp(buf + 4, "n+2\0", 4) != 0)
            return h5s_error_set(H5S_EFORMAT, "%s: byte 4: magic is not \"n+2\"", path);
        if (memcmp(buf + 8, "\r\n\032\n", 4) != 0)
            return h5s_error_set(H5S_EFORMAT,
                                 "%s: byte 8: NIfTI-2 signature bytes \\r\\n\\032\\n damaged "
                                 "(file transferred as text?)",
                                 path);
    }

    size_t dim_off = v == 1 ? 40 : 16;
    size_t dim_w = v == 1 ? 2 : 8;
    int64_t ndim = v == 1 ? raw_i16(&h, dim_off) : raw_i64(&h, dim_off);
    if (ndim < 1 || ndim > 7)
        return h5s_error_set(H5S_EFORMAT, "%s: byte %zu: dim[0] = %lld, must be 1..7", path,
                             dim_off, (long long)ndim);
    hdr->ndim = (int)ndim;
    hdr->dim[0] = ndim;
    for (int i = 1; i <= 7; i++) {
        size_t off = dim_off + (size_t)i * dim_w;
        int64_t d = v == 1 ? raw_i16(&h, off) : raw_i64(&h, off);
        if (i <= ndim && d < 1)
            return h5s_error_set(H5S_EFORMAT, "%s: byte %zu: dim[%d] = %lld, must be > 0", path,
                                 off, i, (long long)d);
        hdr->dim[i] = i <= ndim ? d : 1;
    }

    /* pixdim as stored: libnifti2 rewrites pixdim[0] (qfac) */
    for (int i = 0; i < 8; i++)
        hdr->pixdim[i] =
            v == 1 ? raw_f32(&h, 76 + 4 * (size_t)i) : raw_f64(&h, 104 + 8 * (size_t)i);

    size_t dt_off = v == 1 ? 70 : 12;
    int code = raw_i16(&h, dt_off);
    int rc = h5s_nifti_dtype_from_code(&hdr->dtype, code);
    if (rc)
        return h5s_error_prefix(rc, "%s: byte %zu", path, dt_off);
    hdr->nifti_datatype = code;

    uint64_t nbytes = 0;
    if (checked_bytes(&nbytes, hdr->dim, hdr->ndim, h5s_dtype_size(hdr->dtype)))
        return h5s_error_set(H5S_ERANGE, "%s: byte %zu: dims overflow 64-bit byte counts", path,
                             dim_off);

    size_t vo_off = v == 1 ? 108 : 168;
    int64_t vox;
    if (v == 1) {
        double f = raw_f32(&h, vo_off);
        if (!isfinite(f) || f < 0 || f > 9.0e15 || floor(f) != f)
            return h5s_error_set(H5S_EFORMAT,
                                 "%s: byte %zu: vox_offset %g is not a non-negative integer", path,
                                 vo_off, f);
        vox = (int64_t)f;
    } else {
        vox = raw_i64(&h, vo_off);
    }
    if (vox < (int64_t)sz + NIFTI_EXT_FLAG)
        return h5s_error_set(H5S_EFORMAT,
                             "%s: byte %zu: vox_offset %lld is before the end of the header "
                             "(%u bytes + 4-byte extension flag = %u)",
                             path, vo_off, (long long)vox, (unsigned)sz,
                             (unsigned)sz + NIFTI_EXT_FLAG);
    if (data_len != UINT64_MAX && (uint64_t)vox > data_len)
        return h5s_error_set(H5S_EFORMAT,
                             "%s: byte %zu: vox_offset %lld is beyond the end of the file "
                             "(%s %llu bytes)",
                             path, vo_off, (long long)vox, len_what, (unsigned long long)data_len);
    hdr->vox_offset = vox;
    if (data_len != UINT64_MAX && data_len - (uint64_t)vox < nbytes) {
        char shape[160];
        size_t used = 0;
        shape[0] = '\0';
        for (int i = 1; i <= hdr->ndim && used < sizeof shape; i++) {
            int w = snprintf(shape + used, sizeof shape - used, "%s%lld", i > 1 ? "x" : "",
                             (long long)hdr->dim[i]);
            if (w < 0)
                break;
            used += (size_t)w;
        }
        return h5s_error_set(H5S_EFORMAT,
                             "%s: byte %llu: data truncated: dims %s of %s need %llu bytes from "
                             "vox_offset %lld (to byte %llu), %s is %llu bytes",
                             path, (unsigned long long)data_len, shape, h5s_dtype_name(hdr->dtype),
                             (unsigned long long)nbytes, (long long)vox,
                             (unsigned long long)((uint64_t)vox + nbytes), len_what,
                             (unsigned long long)data_len);
    }
    hdr->has_extensions = n > sz && buf[sz] != 0;
    return 0;
}

/* Copies what libnifti2 parsed into hdr (dims, pixdim, vox_offset and byte order come from
 * the raw header). */
static void copy_from_nim(h5s_nifti_header *hdr, const nifti_image *nim)
{
    hdr->qform_code = nim->qform_code;
    hdr->sform_code = nim->sform_code;
    hdr->quatern_b = nim->quatern_b;
    hdr->quatern_c = nim->quatern_c;
    hdr->quatern_d = nim->quatern_d;
    hdr->qoffset_x = nim->qoffset_x;
    hdr->qoffset_y = nim->qoffset_y;
    hdr->qoffset_z = nim->qoffset_z;
    hdr->qfac = hdr->pixdim[0] < 0 ? -1.0 : 1.0;
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) {
            hdr->qto_xyz[r][c] = nim->qto_xyz.m[r][c];
            hdr->sto_xyz[r][c] = nim->sto_xyz.m[r][c];
        }
    if (hdr->qform_code > 0)
        quatern_affine(hdr);
    hdr->xyzt_units = (nim->xyz_units & 0x07) | (nim->time_units & 0x38);
    hdr->scl_slope = nim->scl_slope;
    hdr->scl_inter = nim->scl_inter;
    hdr->cal_min = nim->cal_min;
    hdr->cal_max = nim->cal_max;
    hdr->intent_code = nim->intent_code;
    hdr->intent_p1 = nim->intent_p1;
    hdr->intent_p2 = nim->intent_p2;
    hdr->intent_p3 = nim->intent_p3;
    copy_text(hdr->intent_name, sizeof hdr->intent_name, nim->intent_name, sizeof nim->intent_name);
    copy_text(hdr->descrip, sizeof hdr->descrip, nim->descrip, sizeof nim->descrip);
    copy_text(hdr->aux_file, sizeof hdr->aux_file, nim->aux_file, sizeof nim->aux_file);
    hdr->dim_info = (nim->freq_dim & 3) | (nim->phase_dim & 3) << 2 | (nim->slice_dim & 3) << 4;
    hdr->slice_code = nim->slice_code;
    hdr->slice_start = nim->slice_start;
    hdr->slice_end = nim->slice_end;
    hdr->slice_duration = nim->slice_duration;
    hdr->toffset = nim->toffset;
}

/* Validates path and fills hdr; leaves the reader's stream closed. */
static int read_header(h5s_nifti_header *hdr, const char *path, int check_gz_length)
{
    memset(hdr, 0, sizeof *hdr);
    int kind = name_kind(path);
    if (kind < 0)
        return h5s_error_set(H5S_EINVAL, "%s: name must end in .nii or .nii.gz", path);
    int gz = 0;
    uint64_t fsize = 0;
    int rc = file_is_gzip(&gz, &fsize, path);
    if (rc)
        return rc;
    if (gz && kind == 0)
        return h5s_error_set(H5S_EFORMAT,
                             "%s: byte 0: gzip-compressed data in a file named .nii (rename it "
                             ".nii.gz)",
                             path);
    hdr->compressed = gz;

    uint64_t data_len = gz ? UINT64_MAX : fsize;
    const char *len_what = gz ? "decompressed length" : "file size";
    if (gz && check_gz_length) {
        rc = gz_length(&data_len, path);
        if (rc)
            return rc;
    }

    gzFile f = NULL;
    rc = open_gz(&f, path);
    if (rc)
        return rc;
    unsigned char buf[NIFTI2_HDR_SIZE + NIFTI_EXT_FLAG];
    uint64_t n = 0;
    rc = gz_read_full(f, buf, sizeof buf, &n, path, 0);
    gzclose(f);
    if (rc)
        return rc;
    rc = check_raw_header(hdr, buf, (size_t)n, path, data_len, len_what);
    if (rc)
        return rc;

    nifti_quiet();
    nifti_image *nim = nifti_image_read(path, 0);
    if (!nim)
        return h5s_error_set(H5S_EFORMAT,
                             "%s: libnifti2 rejected the NIfTI-%d header (fields passed the "
                             "size checks; run nifti_tool -disp_hdr for details)",
                             path, hdr->version);
    copy_from_nim(hdr, nim);
    nifti_image_free(nim);
    return 0;
}

int h5s_nifti_open(h5s_nifti_reader **out, const char *path, const h5s_nifti_open_options *opts)
{
    if (!out || !path)
        return h5s_error_set(H5S_EINVAL, "nifti open: NULL argument");
    *out = NULL;
    int check = opts ? opts->check_gz_length : 1;
    h5s_nifti_reader *r = calloc(1, sizeof *r);
    if (!r)
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", path);
    r->path = strdup(path);
    if (!r->path) {
        free(r);
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", path);
    }
    int rc = read_header(&r->hdr, path, check);
    if (!rc)
        rc = open_gz(&r->gz, path);
    if (!rc) {
        /* gzseek forward decompresses; a stream shorter than vox_offset stops short */
        z_off_t at = gzseek(r->gz, (z_off_t)r->hdr.vox_offset, SEEK_SET);
        if (at != (z_off_t)r->hdr.vox_offset)
            rc = h5s_error_set(H5S_EFORMAT,
                               "%s: byte %lld: cannot seek to vox_offset: the file ends first",
                               path, (long long)r->hdr.vox_offset);
    }
    if (rc) {
        h5s_nifti_close(r);
        return rc;
    }
    r->slice_bytes = h5s_nifti_slice_voxels(&r->hdr) * h5s_dtype_size(r->hdr.dtype);
    r->swap = r->hdr.big_endian == h5s_bytes_host_le() && h5s_dtype_size(r->hdr.dtype) > 1;
    *out = r;
    return 0;
}

const h5s_nifti_header *h5s_nifti_reader_header(const h5s_nifti_reader *reader)
{
    return &reader->hdr;
}

uint64_t h5s_nifti_reader_position(const h5s_nifti_reader *reader)
{
    return reader->next_slice;
}

int h5s_nifti_read_slices(h5s_nifti_reader *r, void *out, size_t out_bytes, uint64_t count)
{
    if (!r || (!out && count))
        return h5s_error_set(H5S_EINVAL, "nifti read: NULL argument");
    if (r->failed)
        return h5s_error_set(H5S_ESTATE, "%s: an earlier read failed", r->path);
    uint64_t nslices = h5s_nifti_nslices(&r->hdr);
    if (count > nslices - r->next_slice)
        return h5s_error_set(H5S_ERANGE, "%s: %llu slices asked at slice %llu of %llu", r->path,
                             (unsigned long long)count, (unsigned long long)r->next_slice,
                             (unsigned long long)nslices);
    uint64_t bytes = count * r->slice_bytes;
    if (bytes > out_bytes)
        return h5s_error_set(H5S_EINVAL, "%s: buffer of %zu bytes, %llu slices need %llu", r->path,
                             out_bytes, (unsigned long long)count, (unsigned long long)bytes);
    uint64_t at = (uint64_t)r->hdr.vox_offset + r->next_slice * r->slice_bytes;
    uint64_t got = 0;
    int rc = gz_read_full(r->gz, out, bytes, &got, r->path, at);
    if (rc) {
        r->failed = 1;
        return rc;
    }
    if (got < bytes) {
        r->failed = 1;
        uint64_t s = r->next_slice + got / r->slice_bytes;
        return h5s_error_set(H5S_EFORMAT,
                             "%s: byte %llu: data truncated: the file ends inside slice %llu of "
                             "%llu",
                             r->path, (unsigned long long)(at + got), (unsigned long long)s,
                             (unsigned long long)nslices);
    }
    if (r->swap)
        h5s_bytes_swap(out, bytes / h5s_dtype_size(r->hdr.dtype), h5s_dtype_size(r->hdr.dtype));
    r->next_slice += count;
    return 0;
}

void h5s_nifti_close(h5s_nifti_reader *reader)
{
    if (!reader)
        return;
    if (reader->gz)
        gzclose(reader->gz);
    free(reader->path);
    free(reader);
}

int h5s_nifti_read_header(h5s_nifti_header *out, const char *path)
{
    if (!out || !path)
        return h5s_error_set(H5S_EINVAL, "nifti read header: NULL argument");
    return read_header(out, path, 1);
}

int h5s_nifti_load(h5s_nifti_header *out_hdr, void **out_data, const char *path)
{
    if (!out_hdr || !out_data || !path)
        return h5s_error_set(H5S_EINVAL, "nifti load: NULL argument");
    *out_data = NULL;
    h5s_nifti_reader *r = NULL;
    int rc = h5s_nifti_open(&r, path, NULL);
    if (rc)
        return rc;
    uint64_t bytes = h5s_nifti_data_bytes(&r->hdr);
    if (bytes > SIZE_MAX) {
        h5s_nifti_close(r);
        return h5s_error_set(H5S_ENOMEM, "%s: %llu bytes do not fit in memory", path,
                             (unsigned long long)bytes);
    }
    void *data = malloc(bytes ? (size_t)bytes : 1);
    if (!data) {
        h5s_nifti_close(r);
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory for %llu bytes", path,
                             (unsigned long long)bytes);
    }
    rc = h5s_nifti_read_slices(r, data, (size_t)bytes, h5s_nifti_nslices(&r->hdr));
    if (rc) {
        free(data);
        h5s_nifti_close(r);
        return rc;
    }
    *out_hdr = r->hdr;
    *out_data = data;
    h5s_nifti_close(r);
    return 0;
}

/* ---- writing ---- */

struct h5s_nifti_writer {
    char *path;
    int version;
    h5s_nifti_header hdr;
    znzFile znz; /* NIfTI-1, opened by libnifti2 */
    gzFile gz;   /* NIfTI-2 .nii.gz */
    FILE *plain; /* NIfTI-2 .nii */
    uint64_t slice_bytes;
    uint64_t written;  /* slices */
    uint64_t position; /* bytes of the file so far */
    unsigned char *swapbuf;
    int failed;
};

int h5s_nifti_needs_v2(const h5s_nifti_header *hdr)
{
    for (int i = 1; i <= hdr->ndim; i++)
        if (hdr->dim[i] > INT16_MAX)
            return 1;
    if (hdr->slice_start < INT16_MIN || hdr->slice_start > INT16_MAX ||
        hdr->slice_end < INT16_MIN || hdr->slice_end > INT16_MAX)
        return 1;
    if (hdr->qform_code < INT16_MIN || hdr->qform_code > INT16_MAX || hdr->sform_code < INT16_MIN ||
        hdr->sform_code > INT16_MAX || hdr->intent_code < INT16_MIN || hdr->intent_code > INT16_MAX)
        return 1;
    if (hdr->dim_info < 0 || hdr->dim_info > 255 || hdr->slice_code < 0 || hdr->slice_code > 255 ||
        hdr->xyzt_units < 0 || hdr->xyzt_units > 255)
        return 1;
    return 0;
}

static int check_write_header(const h5s_nifti_header *hdr, const char *path)
{
    if (hdr->ndim < 1 || hdr->ndim > 7)
        return h5s_error_set(H5S_EINVAL, "%s: header ndim %d outside 1..7", path, hdr->ndim);
    for (int i = 1; i <= hdr->ndim; i++)
        if (hdr->dim[i] < 1)
            return h5s_error_set(H5S_EINVAL, "%s: header dim[%d] = %lld, must be > 0", path, i,
                                 (long long)hdr->dim[i]);
    if (h5s_nifti_code_from_dtype(hdr->dtype) == 0)
        return h5s_error_set(H5S_EINVAL, "%s: dtype %s has no NIfTI datatype code", path,
                             h5s_dtype_name(hdr->dtype));
    uint64_t n;
    if (checked_bytes(&n, hdr->dim, hdr->ndim, h5s_dtype_size(hdr->dtype)) || n > INT64_MAX)
        return h5s_error_set(H5S_ERANGE, "%s: dims overflow 64-bit byte counts", path);
    return 0;
}

static void fill_nim(nifti_image *nim, const h5s_nifti_header *hdr)
{
    nim->ndim = hdr->ndim;
    nim->dim[0] = hdr->ndim;
    for (int i = 1; i <= 7; i++) {
        nim->dim[i] = i <= hdr->ndim ? hdr->dim[i] : 1;
        nim->pixdim[i] = hdr->pixdim[i];
    }
    nim->nx = nim->dim[1];
    nim->ny = nim->dim[2];
    nim->nz = nim->dim[3];
    nim->nt = nim->dim[4];
    nim->nu = nim->dim[5];
    nim->nv = nim->dim[6];
    nim->nw = nim->dim[7];
    nim->dx = nim->pixdim[1];
    nim->dy = nim->pixdim[2];
    nim->dz = nim->pixdim[3];
    nim->dt = nim->pixdim[4];
    nim->du = nim->pixdim[5];
    nim->dv = nim->pixdim[6];
    nim->dw = nim->pixdim[7];
    nim->pixdim[0] = hdr->pixdim[0];
    nim->scl_slope = hdr->scl_slope;
    nim->scl_inter = hdr->scl_inter;
    nim->cal_min = hdr->cal_min;
    nim->cal_max = hdr->cal_max;
    nim->qform_code = hdr->qform_code;
    nim->sform_code = hdr->sform_code;
    nim->freq_dim = hdr->dim_info & 3;
    nim->phase_dim = (hdr->dim_info >> 2) & 3;
    nim->slice_dim = (hdr->dim_info >> 4) & 3;
    nim->slice_code = hdr->slice_code;
    nim->slice_start = hdr->slice_start;
    nim->slice_end = hdr->slice_end;
    nim->slice_duration = hdr->slice_duration;
    nim->quatern_b = hdr->quatern_b;
    nim->quatern_c = hdr->quatern_c;
    nim->quatern_d = hdr->quatern_d;
    nim->qoffset_x = hdr->qoffset_x;
    nim->qoffset_y = hdr->qoffset_y;
    nim->qoffset_z = hdr->qoffset_z;
    nim->qfac = hdr->qfac < 0 ? -1.0 : 1.0;
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) {
            nim->qto_xyz.m[r][c] = hdr->qto_xyz[r][c];
            nim->sto_xyz.m[r][c] = hdr->sto_xyz[r][c];
        }
    nim->toffset = hdr->toffset;
    nim->xyz_units = hdr->xyzt_units & 0x07;
    nim->time_units = hdr->xyzt_units & 0x38;
    nim->intent_code = hdr->intent_code;
    nim->intent_p1 = hdr->intent_p1;
    nim->intent_p2 = hdr->intent_p2;
    nim->intent_p3 = hdr->intent_p3;
    memset(nim->intent_name, 0, sizeof nim->intent_name);
    memset(nim->descrip, 0, sizeof nim->descrip);
    memset(nim->aux_file, 0, sizeof nim->aux_file);
    memcpy(nim->intent_name, hdr->intent_name, strnlen(hdr->intent_name, 16));
    memcpy(nim->descrip, hdr->descrip, strnlen(hdr->descrip, 80));
    memcpy(nim->aux_file, hdr->aux_file, strnlen(hdr->aux_file, 24));
}

static int open_v1(h5s_nifti_writer *w)
{
    int64_t dims[8];
    for (int i = 0; i < 8; i++)
        dims[i] = i <= w->hdr.ndim ? w->hdr.dim[i] : 1;
    dims[0] = w->hdr.ndim;
    nifti_quiet();
    nifti_image *nim = nifti_make_new_nim(dims, w->hdr.nifti_datatype, 0);
    if (!nim)
        return h5s_error_set(H5S_ENOMEM, "%s: libnifti2 could not make an image", w->path);
    fill_nim(nim, &w->hdr);
    nim->nifti_type = NIFTI_FTYPE_NIFTI1_1;
    if (nifti_set_filenames(nim, w->path, 0, 1) != 0) {
        nifti_image_free(nim);
        return h5s_error_set(H5S_EINVAL, "%s: libnifti2 rejected the file name", w->path);
    }
    nifti_set_iname_offset(nim, 1);
    /* write_opts 2: header only, leave the file open for the data */
    znzFile fp = nifti_image_write_hdr_img(nim, 2, "wb");
    int64_t off = nim->iname_offset;
    nifti_image_free(nim);
    if (znz_isnull(fp))
        return h5s_error_set(H5S_EIO, "%s: libnifti2 could not write the NIfTI-1 header", w->path);
    /* libnifti2 leaves the stream at the end of what it wrote; pad to vox_offset */
    long at = (long)znztell(fp);
    static const unsigned char zeros[16] = {0};
    while (at >= 0 && at < off) {
        size_t pad = (size_t)(off - at) < sizeof zeros ? (size_t)(off - at) : sizeof zeros;
        if (znzwrite(zeros, 1, pad, fp) != pad)
            break;
        at += (long)pad;
    }
    if (at != off) {
        znzclose(fp);
        return h5s_error_set(H5S_EIO, "%s: byte %ld: header written up to here, expected %lld",
                             w->path, at, (long long)off);
    }
    w->znz = fp;
    w->position = (uint64_t)off;
    return 0;
}

static void put16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void putd(unsigned char *p, double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    put64(p, u);
}

static void puti64(unsigned char *p, int64_t v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    put64(p, u);
}

static void puti32(unsigned char *p, int32_t v)
{
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    put32(p, u);
}

/* The 540-byte NIfTI-2 header (nifti2.h field offsets), little-endian, + extension flag. */
static void encode_v2(unsigned char out[NIFTI2_HDR_SIZE + NIFTI_EXT_FLAG],
                      const h5s_nifti_header *hdr)
{
    memset(out, 0, NIFTI2_HDR_SIZE + NIFTI_EXT_FLAG);
    put32(out + 0, NIFTI2_HDR_SIZE);
    memcpy(out + 4, "n+2\0\r\n\032\n", 8);
    put16(out + 12, (uint16_t)hdr->nifti_datatype);
    put16(out + 14, (uint16_t)(h5s_dtype_size(hdr->dtype) * 8));
    puti64(out + 16, hdr->ndim);
    for (int i = 1; i <= 7; i++)
        puti64(out + 16 + 8 * i, i <= hdr->ndim ? hdr->dim[i] : 1);
    putd(out + 80, hdr->intent_p1);
    putd(out + 88, hdr->intent_p2);
    putd(out + 96, hdr->intent_p3);
    putd(out + 104, hdr->qform_code > 0 ? (hdr->qfac < 0 ? -1.0 : 1.0) : hdr->pixdim[0]);
    for (int i = 1; i <= 7; i++)
        putd(out + 104 + 8 * i, hdr->pixdim[i]);
    puti64(out + 168, NIFTI2_HDR_SIZE + NIFTI_EXT_FLAG);
    putd(out + 176, hdr->scl_slope);
    putd(out + 184, hdr->scl_inter);
    putd(out + 192, hdr->cal_max);
    putd(out + 200, hdr->cal_min);
    putd(out + 208, hdr->slice_duration);
    putd(out + 216, hdr->toffset);
    puti64(out + 224, hdr->slice_start);
    puti64(out + 232, hdr->slice_end);
    memcpy(out + 240, hdr->descrip, strnlen(hdr->descrip, 80));
    memcpy(out + 320, hdr->aux_file, strnlen(hdr->aux_file, 24));
    puti32(out + 344, hdr->qform_code);
    puti32(out + 348, hdr->sform_code);
    putd(out + 352, hdr->quatern_b);
    putd(out + 360, hdr->quatern_c);
    putd(out + 368, hdr->quatern_d);
    putd(out + 376, hdr->qoffset_x);
    putd(out + 384, hdr->qoffset_y);
    putd(out + 392, hdr->qoffset_z);
    for (int c = 0; c < 4; c++) {
        putd(out + 400 + 8 * c, hdr->sto_xyz[0][c]);
        putd(out + 432 + 8 * c, hdr->sto_xyz[1][c]);
        putd(out + 464 + 8 * c, hdr->sto_xyz[2][c]);
    }
    puti32(out + 496, hdr->slice_code);
    puti32(out + 500, hdr->xyzt_units);
    puti32(out + 504, hdr->intent_code);
    memcpy(out + 508, hdr->intent_name, strnlen(hdr->intent_name, 16));
    out[524] = (unsigned char)hdr->dim_info;
}

static int raw_write(h5s_nifti_writer *w, const void *data, uint64_t len)
{
    const unsigned char *p = data;
    uint64_t done = 0;
    while (done < len) {
        uint64_t want = len - done;
        unsigned n = want > NIFTI_IO_CHUNK ? NIFTI_IO_CHUNK : (unsigned)want;
        size_t put;
        if (w->znz)
            put = znzwrite(p + done, 1, n, w->znz);
        else if (w->gz)
            put = (size_t)(gzwrite(w->gz, p + done, n) > 0 ? (unsigned)n : 0);
        else
            put = fwrite(p + done, 1, n, w->plain);
        if (put != n)
            return h5s_error_set(H5S_EIO, "%s: byte %llu: write failed: %s", w->path,
                                 (unsigned long long)(w->position + done),
                                 errno ? strerror(errno) : "short write");
        done += n;
    }
    w->position += len;
    return 0;
}

static int open_v2(h5s_nifti_writer *w, int gz)
{
    if (gz) {
        w->gz = gzopen(w->path, "wb6");
        if (w->gz)
            gzbuffer(w->gz, NIFTI_GZ_BUFFER);
    } else {
        w->plain = fopen(w->path, "wb");
    }
    if (!w->gz && !w->plain)
        return h5s_error_set(H5S_EIO, "%s: cannot create: %s", w->path, strerror(errno));
    unsigned char buf[NIFTI2_HDR_SIZE + NIFTI_EXT_FLAG];
    encode_v2(buf, &w->hdr);
    return raw_write(w, buf, sizeof buf);
}

/* Closes whichever stream is open; returns nonzero if closing failed. */
static int close_stream(h5s_nifti_writer *w)
{
    int bad = 0;
    if (w->znz) {
        bad |= znzclose(w->znz) != 0;
        w->znz = NULL;
    }
    if (w->gz) {
        bad |= gzclose(w->gz) != Z_OK;
        w->gz = NULL;
    }
    if (w->plain) {
        bad |= fclose(w->plain) != 0;
        w->plain = NULL;
    }
    return bad;
}

static void writer_free(h5s_nifti_writer *w)
{
    free(w->swapbuf);
    free(w->path);
    free(w);
}

int h5s_nifti_writer_open(h5s_nifti_writer **out, const char *path, const h5s_nifti_header *hdr,
                          const h5s_nifti_write_options *opts)
{
    if (!out || !path || !hdr)
        return h5s_error_set(H5S_EINVAL, "nifti writer: NULL argument");
    *out = NULL;
    int kind = name_kind(path);
    if (kind < 0)
        return h5s_error_set(H5S_EINVAL, "%s: name must end in .nii or .nii.gz", path);
    int rc = check_write_header(hdr, path);
    if (rc)
        return rc;
    int want = opts ? opts->nifti_version : 0;
    int needs2 = h5s_nifti_needs_v2(hdr);
    if (want != 0 && want != 1 && want != 2)
        return h5s_error_set(H5S_EINVAL, "%s: nifti_version %d is not 0, 1 or 2", path, want);
    if (want == 1 && needs2)
        return h5s_error_set(H5S_ERANGE,
                             "%s: header does not fit NIfTI-1 (a dim, slice or code above "
                             "32767): write NIfTI-2",
                             path);
    h5s_nifti_writer *w = calloc(1, sizeof *w);
    if (!w)
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", path);
    w->path = strdup(path);
    if (!w->path) {
        free(w);
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", path);
    }
    w->hdr = *hdr;
    w->hdr.nifti_datatype = h5s_nifti_code_from_dtype(hdr->dtype);
    w->version = want == 2 || (want == 0 && needs2) ? 2 : 1;
    w->slice_bytes = h5s_nifti_slice_voxels(hdr) * h5s_dtype_size(hdr->dtype);
    errno = 0;
    rc = w->version == 1 ? open_v1(w) : open_v2(w, kind == 1);
    if (rc) {
        close_stream(w);
        remove(path);
        writer_free(w);
        return rc;
    }
    *out = w;
    return 0;
}

int h5s_nifti_writer_version(const h5s_nifti_writer *writer)
{
    return writer->version;
}

int h5s_nifti_write_slices(h5s_nifti_writer *w, const void *data, uint64_t count)
{
    if (!w || (!data && count))
        return h5s_error_set(H5S_EINVAL, "nifti write: NULL argument");
    if (w->failed)
        return h5s_error_set(H5S_ESTATE, "%s: an earlier write failed", w->path);
    uint64_t nslices = h5s_nifti_nslices(&w->hdr);
    if (count > nslices - w->written)
        return h5s_error_set(H5S_ERANGE, "%s: %llu slices given at slice %llu of %llu", w->path,
                             (unsigned long long)count, (unsigned long long)w->written,
                             (unsigned long long)nslices);
    size_t es = h5s_dtype_size(w->hdr.dtype);
    int rc = 0;
    errno = 0;
    if (h5s_bytes_host_le() || es == 1) {
        rc = raw_write(w, data, count * w->slice_bytes);
    } else {
        /* big-endian host: the files are little-endian, swap a slice at a time */
        if (!w->swapbuf && !(w->swapbuf = malloc((size_t)w->slice_bytes)))
            return h5s_error_set(H5S_ENOMEM, "%s: out of memory", w->path);
        const unsigned char *p = data;
        for (uint64_t s = 0; s < count && !rc; s++) {
            memcpy(w->swapbuf, p + s * w->slice_bytes, (size_t)w->slice_bytes);
            h5s_bytes_swap(w->swapbuf, (size_t)w->slice_bytes / es, es);
            rc = raw_write(w, w->swapbuf, w->slice_bytes);
        }
    }
    if (rc) {
        w->failed = 1;
        return rc;
    }
    w->written += count;
    return 0;
}

int h5s_nifti_writer_close(h5s_nifti_writer *w)
{
    if (!w)
        return 0;
    uint64_t nslices = h5s_nifti_nslices(&w->hdr);
    int rc = 0;
    if (w->failed) {
        rc = h5s_error_set(H5S_EIO, "%s: not completed after a write error; file removed", w->path);
    } else if (w->written != nslices) {
        rc = h5s_error_set(H5S_ESTATE, "%s: closed after %llu of %llu slices; file removed",
                           w->path, (unsigned long long)w->written, (unsigned long long)nslices);
    }
    errno = 0;
    if (close_stream(w) && !rc)
        rc = h5s_error_set(H5S_EIO, "%s: closing failed: %s", w->path,
                           errno ? strerror(errno) : "flush error");
    if (rc)
        remove(w->path);
    writer_free(w);
    return rc;
}

void h5s_nifti_writer_abort(h5s_nifti_writer *w)
{
    if (!w)
        return;
    close_stream(w);
    remove(w->path);
    writer_free(w);
}

int h5s_nifti_write(const char *path, const h5s_nifti_header *hdr, const void *data,
                    const h5s_nifti_write_options *opts)
{
    if (!data)
        return h5s_error_set(H5S_EINVAL, "nifti write: NULL data");
    h5s_nifti_writer *w = NULL;
    int rc = h5s_nifti_writer_open(&w, path, hdr, opts);
    if (rc)
        return rc;
    rc = h5s_nifti_write_slices(w, data, h5s_nifti_nslices(hdr));
    if (rc) {
        h5s_nifti_writer_abort(w);
        return rc;
    }
    return h5s_nifti_writer_close(w);
}
