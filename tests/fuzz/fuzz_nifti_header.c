/*
 * fuzz_nifti_header.c - arbitrary bytes as a NIfTI file through formats/h5s_nifti.c:
 * named .nii.gz when they start with the gzip magic (opened with and without the
 * decompressed-length check), else .nii. Our checks of the raw header (sizeof_hdr and
 * byte order, magic, dims, datatype, vox_offset, data length) run before libnifti2 parses
 * it; then every slice is read. Nothing may crash or leak; a rejected file's message
 * names the file and the byte offset. An image that reads whole is written back with
 * h5s_nifti_write and must load back with the same geometry and voxels.
 */
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "h5s_nifti.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_IMAGE (4u << 20) /* images read whole and written back: at most this many bytes */

static const char *const places[] = {"byte ", NULL};

/* Equal as NIfTI-1 stores them: a NIfTI-2 image small enough for NIfTI-1 is written as
 * NIfTI-1, whose float fields are float32 (h5s_nifti.h), so doubles come back rounded. */
static int same_float(double a, double b)
{
    float fa = (float)a, fb = (float)b;
    return fa == fb || (isnan(fa) && isnan(fb));
}

/* A finite value NIfTI-1's float32 holds; libnifti2 reads a non-finite scale as 0, and a
 * NIfTI-2 double beyond float32 cannot survive the NIfTI-1 it is written as. */
static int in_float_range(double x)
{
    return isfinite(x) && fabs(x) <= FLT_MAX;
}

/* Writes the image and loads it back: the geometry h5stream keeps and the voxels. */
static void roundtrip(const h5s_nifti_header *h, const void *voxels, int gz)
{
    char path[4096];
    if (fuzz_tmpfile(path, sizeof path, gz ? ".nii.gz" : ".nii", NULL, 0) != 0)
        return;
    /* What was read must be writable: export writes what ingest read. */
    if (h5s_nifti_write(path, h, voxels, NULL) != 0) {
        fprintf(stderr, "fuzz: write back failed: %s\n", h5s_error_message());
        FUZZ_TRAP();
    }
    /* scl_slope 0 means no scaling (NIfTI-1 spec), and libnifti2 then drops scl_inter. */
    h5s_nifti_header back;
    void *got = NULL;
    if (h5s_nifti_load(&back, &got, path) != 0)
        FUZZ_TRAP();
    if (back.ndim != h->ndim || memcmp(back.dim, h->dim, sizeof h->dim) != 0 ||
        back.dtype != h->dtype || back.qform_code != h->qform_code ||
        back.sform_code != h->sform_code ||
        (in_float_range(h->scl_slope) && !same_float(back.scl_slope, h->scl_slope)) ||
        (h->scl_slope != 0 && in_float_range(h->scl_slope) && in_float_range(h->scl_inter) &&
         !same_float(back.scl_inter, h->scl_inter)) ||
        memcmp(got, voxels, (size_t)h5s_nifti_data_bytes(h)) != 0)
        FUZZ_TRAP();
    /* libnifti2 writes NIfTI-1 spacings as their absolute values (nibabel fixes negative
     * ones the same way on loading). */
    for (int i = 1; i <= h->ndim; i++)
        if (!same_float(fabs(back.pixdim[i]), fabs(h->pixdim[i])))
            FUZZ_TRAP();
    free(got);
    unlink(path);
}

static void read_file(const char *path, int check_gz_length, int gz)
{
    h5s_nifti_open_options o = H5S_NIFTI_OPEN_OPTIONS_INIT;
    o.check_gz_length = check_gz_length;
    h5s_nifti_reader *r = NULL;
    int rc = h5s_nifti_open(&r, path, &o);
    if (rc != 0) {
        if (r)
            FUZZ_TRAP();
        fuzz_check_message(h5s_error_message(), path, places);
        return;
    }
    const h5s_nifti_header *h = h5s_nifti_reader_header(r);
    if (h->ndim < 1 || h->ndim > 7 || h->dim[0] != h->ndim || !h5s_nifti_code_from_dtype(h->dtype))
        FUZZ_TRAP();
    for (int i = 1; i <= 7; i++)
        if (h->dim[i] < 1 || (i > h->ndim && h->dim[i] != 1))
            FUZZ_TRAP();
    double affine[4][4];
    h5s_nifti_header_affine(h, affine);
    (void)h5s_nifti_needs_v2(h);

    uint64_t slice = h5s_nifti_slice_voxels(h) * h5s_dtype_size(h->dtype);
    uint64_t total = h5s_nifti_data_bytes(h), nslices = h5s_nifti_nslices(h);
    /* Slice by slice into one buffer when the image is small; else slices are read into
     * one slice's room and thrown away (a .nii.gz opened without the length check may
     * claim more than it holds, and must fail at the first missing slice). */
    int whole = total <= MAX_IMAGE;
    unsigned char *buf = slice <= MAX_IMAGE ? malloc(whole ? total + 1 : slice + 1) : NULL;
    for (uint64_t i = 0; buf && i < nslices; i++) {
        unsigned char *at = whole ? buf + i * slice : buf;
        rc = h5s_nifti_read_slices(r, at, (size_t)slice, 1);
        if (rc != 0) {
            fuzz_check_message(h5s_error_message(), path, places);
            /* After an error the reader accepts only close. */
            if (h5s_nifti_read_slices(r, at, (size_t)slice, 1) != H5S_ESTATE)
                FUZZ_TRAP();
            break;
        }
        if (h5s_nifti_reader_position(r) != i + 1)
            FUZZ_TRAP();
    }
    if (buf && rc == 0) {
        /* Past the last slice: out of range, not a read. */
        if (h5s_nifti_read_slices(r, buf, (size_t)slice, 1) != H5S_ERANGE)
            FUZZ_TRAP();
        if (whole)
            roundtrip(h, buf, gz);
    }
    free(buf);
    h5s_nifti_close(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int gz = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
    char path[4096];
    if (fuzz_tmpfile(path, sizeof path, gz ? ".nii.gz" : ".nii", data, size) != 0)
        return 0;
    read_file(path, 1, gz);
    if (gz)
        read_file(path, 0, gz);
    unlink(path);
    return 0;
}
