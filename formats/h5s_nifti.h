/*
 * h5s_nifti.h - private to h5stream (formats/): NIfTI-1 and NIfTI-2 single-file images
 * (.nii, .nii.gz) read and written without HDF5, for the volumes model (DESIGN.md section
 * 4, /volumes) and `h5stream export --to nifti`. docs/nifti.md says what is kept.
 *
 * Specs: NIfTI-1 (nifti1.h, NIfTI DFWG 2004) and NIfTI-2 (nifti2.h, 2011). The header is
 * parsed by libnifti2 (Debian libnifti2-dev) after this module has checked the raw bytes
 * itself, because libnifti2 prints to stderr and trusts sizes it should not.
 *
 * Voxel order everywhere: NIfTI's own, i fastest, which is C order [w][v][u][t][z][y][x];
 * for a 4-D image [T][Z][Y][X], so one volume is one hyperslab of the collection's
 * [N, (T,) Z, Y, X] dataset. A "slice" is one i-j plane: dim[1] x dim[2] voxels (a 1-D
 * image has one slice of dim[1] voxels); an image has dim[3] x ... x dim[7] slices, in
 * file order (slice s is z = s % nz, t = s / nz for 4-D).
 *
 * Values are the stored values, never scaled: scl_slope/scl_inter are kept beside them,
 * as nibabel's dataobj.get_unscaled() returns them. Data handed out or taken in is in
 * the host's byte order (little-endian on every supported machine).
 *
 * Thread safety: handles are not shared between threads; distinct handles may be used on
 * distinct threads at once. libnifti2's global verbosity is set quiet once, on first use.
 */
#ifndef H5S_NIFTI_H
#define H5S_NIFTI_H

#include <stddef.h>
#include <stdint.h>

#include "h5s_types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Most dimensions a NIfTI image has (dim[1..7]). */
#define H5S_NIFTI_MAX_DIMS 7

/*
 * Everything the collection keeps of a NIfTI header. Field meanings are the spec's; the
 * NIfTI-1 float fields are widened to double exactly, so this struct holds them
 * bit-identical. Written back as NIfTI-1, they are too, except where libnifti2 normalises
 * (|pixdim|, pixdim[0] 0 without a qform, scl_inter dropped when scl_slope is 0: see
 * docs/nifti.md).
 */
typedef struct {
    int version;        /* 1 (NIfTI-1, 348-byte header) or 2 (NIfTI-2, 540 bytes) */
    int ndim;           /* dim[0]: 1..7 */
    int64_t dim[8];     /* dim[0] = ndim; dim[1..ndim] > 0 (i, j, k, t, u, v, w); rest 1 */
    double pixdim[8];   /* pixdim[0] as stored (qfac); pixdim[1..7] grid spacings */
    h5s_dtype dtype;    /* element type of the stored values */
    int nifti_datatype; /* the NIfTI datatype code (NIFTI_TYPE_*) */

    int qform_code; /* NIFTI_XFORM_* code of the qform, 0 = none */
    double quatern_b, quatern_c, quatern_d;
    double qoffset_x, qoffset_y, qoffset_z;
    double qfac;          /* -1 or 1 (pixdim[0] < 0 gives -1) */
    double qto_xyz[4][4]; /* qform affine (voxel i,j,k -> x,y,z mm), row-major */
    int sform_code;       /* NIFTI_XFORM_* code of the sform, 0 = none */
    double sto_xyz[4][4]; /* rows 0..2 = srow_x, srow_y, srow_z; row 3 = 0 0 0 1 */

    int xyzt_units; /* the xyzt_units byte: space units | time units (NIFTI_UNITS_*) */
    double scl_slope, scl_inter;
    double cal_min, cal_max;
    int intent_code;
    double intent_p1, intent_p2, intent_p3;
    char intent_name[17]; /* NUL-terminated (16 bytes on disk) */
    char descrip[81];     /* NUL-terminated (80 bytes on disk) */
    char aux_file[25];    /* NUL-terminated (24 bytes on disk) */
    int dim_info;         /* freq | phase << 2 | slice << 4 */
    int slice_code;
    int64_t slice_start, slice_end;
    double slice_duration, toffset;

    /* Read only (ignored when writing): */
    int64_t vox_offset; /* byte offset of the data in the (decompressed) file */
    int big_endian;     /* 1 when the file was big-endian (data is swapped on read) */
    int compressed;     /* 1 for gzip (.nii.gz) */
    int has_extensions; /* 1 when header extensions were present (they are not kept) */
} h5s_nifti_header;

/*
 * Fills hdr for a new image: version 0 (chosen at write), the given dims (dims[0..ndim-1]
 * = i, j, k, ...), spacings 1, dtype, no qform/sform (codes 0, identity matrices),
 * scl_slope 1, scl_inter 0, xyzt_units mm + s. Errors: H5S_EINVAL (ndim outside 1..7,
 * a dim < 1, a dtype NIfTI has no code for: float16). Thread-safe.
 */
int h5s_nifti_header_init(h5s_nifti_header *hdr, h5s_dtype dtype, int ndim, const int64_t *dims);

/*
 * Sets both spatial transforms from one affine (4 x 4 row-major, voxel -> mm), as
 * nibabel's set_qform(affine)/set_sform(affine) do: sto_xyz = affine with sform_code,
 * and the quaternion, qoffset, qfac and pixdim[1..3] from the affine's rotation and
 * zooms, qto_xyz recomputed (it equals affine when affine has no shear). Give code 0 to
 * leave a transform unset. Errors: H5S_EINVAL (NULL, non-finite values). Thread-safe.
 */
int h5s_nifti_header_set_affine(h5s_nifti_header *hdr, const double affine[4][4], int qform_code,
                                int sform_code);

/*
 * The affine nibabel's img.affine gives: sto_xyz when sform_code > 0, else qto_xyz when
 * qform_code > 0, else the base affine (diag(pixdim[1..3]) centred on the grid, as
 * nibabel's get_base_affine). out: 4 x 4 row-major. Thread-safe.
 */
void h5s_nifti_header_affine(const h5s_nifti_header *hdr, double out[4][4]);

/* Voxels of one slice (dim[1] x dim[2]). */
uint64_t h5s_nifti_slice_voxels(const h5s_nifti_header *hdr);
/* Slices of the image (dim[3] x ... x dim[ndim]; 1 for 1-D and 2-D images). */
uint64_t h5s_nifti_nslices(const h5s_nifti_header *hdr);
/* Bytes of the whole image: voxels x element size. */
uint64_t h5s_nifti_data_bytes(const h5s_nifti_header *hdr);

/*
 * Maps a NIfTI datatype code to h5s_dtype. Errors: H5S_EFORMAT for codes h5stream does
 * not keep (complex, RGB, float128, binary) or that NIfTI does not define; the message
 * names the code and its NIfTI name. Thread-safe.
 */
int h5s_nifti_dtype_from_code(h5s_dtype *out, int nifti_datatype);

/* The NIfTI datatype code of dtype, or 0 when NIfTI has none (float16). Thread-safe. */
int h5s_nifti_code_from_dtype(h5s_dtype dtype);

/* ---- reading ---- */

typedef struct h5s_nifti_reader h5s_nifti_reader;

#define H5S_NIFTI_OPEN_OPTIONS_VERSION 1

typedef struct {
    unsigned version; /* H5S_NIFTI_OPEN_OPTIONS_VERSION */
    /* .nii.gz only: 1 = decompress the whole stream once at open to check its length and
     * CRC, so a short file fails before any slice is handed out (costs one extra pass);
     * 0 = trust the header and fail at the first short slice instead. */
    int check_gz_length;
} h5s_nifti_open_options;

#define H5S_NIFTI_OPEN_OPTIONS_INIT                                                                \
    {                                                                                              \
        H5S_NIFTI_OPEN_OPTIONS_VERSION, 1                                                          \
    }

/*
 * Opens a .nii or .nii.gz file (NIfTI-1 or NIfTI-2, either byte order), validates its
 * header and its size, and positions the slice iterator at slice 0. opts may be NULL
 * (defaults). The reader is the caller's; free it with h5s_nifti_close.
 *
 * Errors (message: "PATH: byte OFFSET: reason" or "PATH: FIELD ...: reason"):
 *   H5S_EINVAL    NULL arguments, a name not ending in .nii or .nii.gz
 *   H5S_ENOTFOUND the file does not exist
 *   H5S_EIO       the file cannot be opened or read
 *   H5S_EFORMAT   truncated header; sizeof_hdr neither 348 nor 540; bad magic (also
 *                 two-file "ni1"/"ni2" headers); dim[0] outside 1..7; a dim < 1;
 *                 unsupported datatype; vox_offset not an integer, inside the header,
 *                 or beyond the end of the file; data shorter than dims x bitpix need
 *                 (.nii: the file size; .nii.gz: the decompressed length); a corrupt
 *                 gzip stream; libnifti2 rejecting a header that passed these checks
 *   H5S_ERANGE    dims whose byte count overflows 64 bits
 *   H5S_ENOMEM
 */
int h5s_nifti_open(h5s_nifti_reader **out, const char *path, const h5s_nifti_open_options *opts);

/* The reader's header (borrowed; valid until h5s_nifti_close). */
const h5s_nifti_header *h5s_nifti_reader_header(const h5s_nifti_reader *reader);

/* Index of the next slice h5s_nifti_read_slices will return (0 after open). */
uint64_t h5s_nifti_reader_position(const h5s_nifti_reader *reader);

/*
 * Reads the next count slices into out (count x h5s_nifti_slice_voxels x element size
 * bytes, i fastest, host byte order) and advances the iterator. Reading is sequential
 * (a .nii.gz is one deflate stream), so memory is one slice batch, never the image.
 * Errors: H5S_EINVAL (NULL, out_bytes too small), H5S_ERANGE (fewer than count slices
 * left), H5S_EFORMAT (the file ends early or its gzip stream is corrupt: message names
 * the byte offset), H5S_EIO. After an error the reader only accepts h5s_nifti_close.
 */
int h5s_nifti_read_slices(h5s_nifti_reader *reader, void *out, size_t out_bytes, uint64_t count);

/* Closes the file and frees the reader. NULL is a no-op. */
void h5s_nifti_close(h5s_nifti_reader *reader);

/*
 * Reads and validates only the header of path (same checks and errors as
 * h5s_nifti_open with default options, so a .nii.gz is decompressed once).
 */
int h5s_nifti_read_header(h5s_nifti_header *out, const char *path);

/*
 * Reads a whole image into memory: *out_data (h5s_nifti_data_bytes bytes, malloc'd, the
 * caller frees it with free()) and *out_hdr. For small volumes; stream big ones with
 * h5s_nifti_open/h5s_nifti_read_slices. Errors: those of h5s_nifti_open and
 * h5s_nifti_read_slices, H5S_ENOMEM.
 */
int h5s_nifti_load(h5s_nifti_header *out_hdr, void **out_data, const char *path);

/* ---- writing ---- */

typedef struct h5s_nifti_writer h5s_nifti_writer;

#define H5S_NIFTI_WRITE_OPTIONS_VERSION 1

typedef struct {
    unsigned version; /* H5S_NIFTI_WRITE_OPTIONS_VERSION */
    /* 0: NIfTI-1 unless the header needs NIfTI-2 (h5s_nifti_needs_v2); 1: NIfTI-1 or
     * H5S_ERANGE; 2: always NIfTI-2. */
    int nifti_version;
} h5s_nifti_write_options;

#define H5S_NIFTI_WRITE_OPTIONS_INIT                                                               \
    {                                                                                              \
        H5S_NIFTI_WRITE_OPTIONS_VERSION, 0                                                         \
    }

/*
 * 1 when hdr cannot be stored in NIfTI-1's fields: a dim or slice_start/slice_end above
 * 32767, qform/sform/intent codes outside a short, dim_info/slice_code/xyzt_units outside
 * a byte. Floating-point fields never force NIfTI-2 (NIfTI-1 stores them as float32).
 */
int h5s_nifti_needs_v2(const h5s_nifti_header *hdr);

/*
 * Creates path (.nii or .nii.gz, gzip chosen by the name) and writes hdr's geometry:
 * dims, pixdim, datatype, qform (quaternion, qoffset, qfac) and sform (sto_xyz rows)
 * with their codes, xyzt_units, scl_slope/inter, cal, intent, descrip, aux_file, slice
 * timing, dim_info. NIfTI-1 is written by libnifti2 (vox_offset 352); NIfTI-2 by this
 * module (540-byte little-endian header, 4-byte empty extension flag, vox_offset 544),
 * since Debian's libnifti2 3.0.1 cannot write single-file NIfTI-2. hdr->version,
 * vox_offset, big_endian, compressed and has_extensions are ignored. Then feed every
 * slice with h5s_nifti_write_slices and finish with h5s_nifti_writer_close.
 * Errors: H5S_EINVAL (NULL, bad name, bad header), H5S_ERANGE (nifti_version 1 and the
 * header needs NIfTI-2), H5S_EIO (cannot create or write), H5S_ENOMEM.
 */
int h5s_nifti_writer_open(h5s_nifti_writer **out, const char *path, const h5s_nifti_header *hdr,
                          const h5s_nifti_write_options *opts);

/* The NIfTI version being written (1 or 2). */
int h5s_nifti_writer_version(const h5s_nifti_writer *writer);

/*
 * Appends count slices (count x slice voxels x element size bytes, i fastest, host byte
 * order; written little-endian). Errors: H5S_EINVAL (NULL), H5S_ERANGE (more slices than
 * the image has), H5S_EIO (write failed; message names the path and byte offset).
 */
int h5s_nifti_write_slices(h5s_nifti_writer *writer, const void *data, uint64_t count);

/*
 * Finishes the file and frees the writer (also on error). Errors: H5S_ESTATE (fewer
 * slices written than the image has: the file is removed), H5S_EIO (flush/close failed).
 * NULL is a no-op returning 0.
 */
int h5s_nifti_writer_close(h5s_nifti_writer *writer);

/* Abandons a writer: closes and removes its file, frees it. NULL is a no-op. */
void h5s_nifti_writer_abort(h5s_nifti_writer *writer);

/*
 * Writes a whole image from memory (data: h5s_nifti_data_bytes(hdr) bytes): open, one
 * h5s_nifti_write_slices of every slice, close. opts may be NULL. Errors: as those calls.
 */
int h5s_nifti_write(const char *path, const h5s_nifti_header *hdr, const void *data,
                    const h5s_nifti_write_options *opts);

#ifdef __cplusplus
}
#endif
#endif /* H5S_NIFTI_H */
