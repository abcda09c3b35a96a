/*
 * h5s_tractio.h - tractography files without HDF5: streaming readers of TCK (MRtrix), TRK
 * (TrackVis v2) and TRX (zip archive or folder), streaming writers of TCK and TRK, and a
 * TRX writer whose arrays are pulled from caller callbacks. docs/tractio.md has the format
 * notes and the rules followed.
 *
 * Memory never grows with the number of streamlines: readers hold one streamline (its
 * points, dps and dpv values) plus fixed-size I/O buffers; the TRX writer holds no array at
 * all, it asks the caller for the next block of each entry while the archive is written.
 *
 * The common model mirrors TRX (and h5stream's /tracts, DESIGN.md section 4):
 * - points are float32 x, y, z in RAS+ millimetres (TRK's voxmm are converted on the way in
 *   and out as nibabel does);
 * - per-streamline values (dps, TRK "properties") and per-vertex values (dpv, TRK "scalars")
 *   are fields of K columns with an element type; a reader delivers them as float64;
 * - groups are lists of streamline indices; dpg are small per-group arrays held in memory.
 *
 * Typical reading loop:
 *     h5s_tract_reader *r;  h5s_tract_streamline s;  int rc;
 *     if (h5s_tract_open(&r, path) != 0) fail(h5s_error_message());
 *     const h5s_tract_header *h = h5s_tract_reader_header(r);
 *     while ((rc = h5s_tract_next(r, &s)) == 1) use(s.points, s.n_points, s.dps, s.dpv);
 *     if (rc == 0) rc = h5s_tract_read_groups(r, on_chunk, payload);
 *     h5s_tract_close(r);
 *
 * Thread safety: a handle is used by one thread at a time; different handles are
 * independent. Error messages are per thread (h5s_error_message()).
 */
#ifndef H5S_TRACTIO_H
#define H5S_TRACTIO_H

#include <stddef.h>
#include <stdint.h>

#include "h5s_types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Longest field, group or dpg name, NUL included. Longer names are H5S_EFORMAT/EINVAL. */
#define H5S_TRACT_NAME_MAX 128

typedef enum {
    H5S_TRACT_UNKNOWN = 0,
    H5S_TRACT_TCK, /* MRtrix .tck */
    H5S_TRACT_TRK, /* TrackVis .trk, version 2 (version 1 is read too) */
    H5S_TRACT_TRX  /* TRX, a zip archive (stored or deflate) or a folder */
} h5s_tract_format;

/* One dps or dpv field: name, element type in the file, number of columns K (>= 1). */
typedef struct {
    char name[H5S_TRACT_NAME_MAX];
    h5s_dtype dtype;
    uint32_t ncols;
    /* Column of this field's first value in h5s_tract_streamline.dps (or one dpv row);
       filled by readers and by h5s_tract_header_layout. */
    uint32_t col;
} h5s_tract_field;

/* One group: name and number of streamline indices (-1 when not known). */
typedef struct {
    char name[H5S_TRACT_NAME_MAX];
    int64_t count;
} h5s_tract_group;

/*
 * One dpg array (data per group): group name, field name, file dtype, K columns and the
 * values: n_values = rows x K (TRX stores one row), as float64 and as the raw
 * little-endian bytes of the file (n_values x h5s_dtype_size(dtype) bytes).
 */
typedef struct {
    char group[H5S_TRACT_NAME_MAX];
    char name[H5S_TRACT_NAME_MAX];
    h5s_dtype dtype;
    uint32_t ncols;
    size_t n_values;
    double *values;
    void *raw;
} h5s_tract_dpg;

/*
 * What a file says about its tractogram. Readers own theirs (h5s_tract_reader_header);
 * a caller building one for a writer starts from h5s_tract_header_init and keeps the arrays
 * alive while the writer uses them (writers copy what they need at open).
 */
typedef struct {
    h5s_tract_format format; /* format of the file read, or UNKNOWN */
    /* Voxel (corner of voxel 0 at -0.5) -> RAS+ mm, row-major. TCK has none: identity. */
    double voxel_to_rasmm[4][4];
    int32_t dimensions[3]; /* reference image grid; TCK: 1 1 1 */
    float voxel_sizes[3];  /* mm; TRK's field, else the norms of the affine's columns */
    char voxel_order[4];   /* TRK's voxel order ("LAS"), else derived from the affine */
    /* Counts: -1 when unknown. TRX: exact. TRK: n_count (0 there means "not stored": -1).
       TCK: the header's "count", which MRtrix writes but nothing verifies (it is wrong in
       some files); only the end of the body is authoritative. */
    int64_t nb_streamlines;
    int64_t nb_vertices;
    h5s_dtype positions_dtype; /* element type of the file's points: TCK/TRK FLOAT32 */
    size_t n_dps;
    h5s_tract_field *dps; /* n_dps fields, in file order */
    size_t n_dpv;
    h5s_tract_field *dpv;
    size_t n_groups;
    h5s_tract_group *groups;
    size_t n_dpg;
    h5s_tract_dpg *dpg; /* each names a group of groups[] */
    uint32_t dps_width; /* sum of the dps fields' ncols */
    uint32_t dpv_width; /* sum of the dpv fields' ncols */
} h5s_tract_header;

/*
 * Sets h to an empty tractogram: identity affine, dimensions 1 1 1, voxel sizes 1, voxel
 * order "RAS", counts -1, positions FLOAT32, no fields, groups or dpg. Thread-safe.
 */
void h5s_tract_header_init(h5s_tract_header *h);

/*
 * Fills each field's col and the header's dps_width and dpv_width from the ncols of its
 * fields (call it after filling dps/dpv by hand). Returns 0, or H5S_EINVAL for a field
 * with ncols 0, an invalid dtype, an empty name or a name without NUL. Thread-safe.
 */
int h5s_tract_header_layout(h5s_tract_header *h);

/*
 * Fills voxel_sizes (norms of the affine's first three columns) and voxel_order (nibabel's
 * aff2axcodes: for each voxel axis, the RAS letter its column points to most) from
 * voxel_to_rasmm. Thread-safe.
 */
void h5s_tract_header_derive(h5s_tract_header *h);

/* ---------------------------------------------------------------------------- reading */

typedef struct h5s_tract_reader h5s_tract_reader;

/*
 * One streamline, as h5s_tract_next gives it. Every pointer is borrowed from the reader
 * and valid until the next h5s_tract_next or h5s_tract_close.
 * - points: n_points x 3 float32, RAS+ millimetres, row-major (x y z of each vertex).
 * - dps: header dps_width float64, the dps fields in header order, K values each (field f
 *   starts at dps[f.col]); NULL when dps_width is 0.
 * - dpv: n_points x dpv_width float64, row-major: row v holds vertex v's values of every
 *   dpv field (field f at dpv[v * dpv_width + f.col]); NULL when dpv_width is 0.
 * Values are the file's numbers converted to float64 (exact for every dtype but int64 and
 * uint64 beyond 2^53). TRX float64 points are rounded to float32; float16 points are exact.
 * For writers the same struct is input: the caller's arrays, read during the call only.
 */
typedef struct {
    uint64_t index; /* 0-based streamline number in the file */
    size_t n_points;
    const float *points;
    const double *dps;
    const double *dpv;
} h5s_tract_streamline;

/*
 * Opens a tractogram for streaming, choosing the reader by content: a folder is TRX, a file
 * starting "PK\3\4" is a TRX zip, "TRACK" is TRK, "mrtrix tracks" is TCK. Reads and checks
 * the header (TRX: header.json, the entry list, sizes and the dpg values).
 * *out is the caller's, freed with h5s_tract_close.
 * Errors: H5S_EINVAL (NULL argument), H5S_EIO (cannot open or read; message has errno's
 * text), H5S_EFORMAT (not one of the three formats, or a bad header: the message names the
 * file, the byte offset or entry, and the reason), H5S_ENOMEM.
 */
int h5s_tract_open(h5s_tract_reader **out, const char *path);

/* The same, for a known format (the opener of each one). Errors as h5s_tract_open. */
int h5s_tck_open(h5s_tract_reader **out, const char *path);
int h5s_trk_open(h5s_tract_reader **out, const char *path);
int h5s_trx_open(h5s_tract_reader **out, const char *path);

/* The header of an open reader; borrowed, valid until h5s_tract_close. Never NULL. */
const h5s_tract_header *h5s_tract_reader_header(const h5s_tract_reader *r);

/*
 * Reads the next streamline into *out (see h5s_tract_streamline for the arrays).
 * Returns 1 with *out filled, 0 at the end of the streamlines, or a negative code:
 * H5S_EFORMAT (bad data: the message names the file, the byte offset or TRX entry and
 * item index, and the reason; streamlines delivered before it are good, and later calls
 * return the same error), H5S_EIO, H5S_ENOMEM. TCK: empty streamlines (two NaN triplets
 * in a row) are skipped, as nibabel does; a body that ends without the Inf triplet is
 * H5S_EFORMAT. Cost: one block conversion per streamline, no per-point calls.
 */
int h5s_tract_next(h5s_tract_reader *r, h5s_tract_streamline *out);

/*
 * Called by h5s_tract_read_groups with a chunk of group `group` (index into the header's
 * groups): n streamline indices (each < nb_streamlines), borrowed for the call. Return 0 to
 * go on, anything else to stop (h5s_tract_read_groups then returns that value).
 */
typedef int (*h5s_tract_group_fn)(size_t group, const uint32_t *indices, size_t n, void *payload);

/*
 * Streams the indices of every group, group after group in header order, in chunks of at
 * most 65,536 indices. Independent of h5s_tract_next (may be called before, between or
 * after). TCK and TRK have no groups: returns 0 without calling fn.
 * Errors: H5S_EFORMAT (an index negative or >= NB_STREAMLINES: the message names the
 * entry and item), H5S_EIO, H5S_ENOMEM, or fn's nonzero value.
 */
int h5s_tract_read_groups(h5s_tract_reader *r, h5s_tract_group_fn fn, void *payload);

/* Closes the file and frees the reader, its header and buffers. NULL is a no-op. */
void h5s_tract_close(h5s_tract_reader *r);

/* ------------------------------------------------------------ TCK and TRK writing */

typedef struct h5s_tract_writer h5s_tract_writer;

/*
 * Creates path (truncating it) as a TCK or TRK file for streamline-by-streamline writing.
 * hdr gives the affine, dimensions, voxel sizes and order (TRK) and the dps/dpv fields
 * (with col/width as h5s_tract_header_layout sets them); it is copied.
 * TCK: "mrtrix tracks" header with count, datatype Float32LE and file offset; points
 * written as given (RAS+ mm); dps, dpv, groups and dpg have no place in TCK and are not
 * written. TRK (TrackVis v2, little-endian): dpv fields become scalars, dps fields become
 * properties (all as float32; a field of K > 1 columns is named "name\0K", nibabel's
 * convention); points are converted from RAS+ mm to voxmm with the inverse of the
 * transform h5s_trk_voxmm_to_rasmm gives. The count is patched into the header at close.
 * Errors: H5S_EINVAL (bad format or header), H5S_ERANGE (TRK: more than 10 dpv or 10 dps
 * fields, a name too long for 20 bytes with its count, more than 32767 columns, or a
 * dimension above 32767), H5S_EIO, H5S_ENOMEM.
 */
int h5s_tract_writer_open(h5s_tract_writer **out, const char *path, h5s_tract_format format,
                          const h5s_tract_header *hdr);

/*
 * Appends one streamline: s->points (n_points x 3 float32, RAS+ mm), s->dps and s->dpv as
 * described for h5s_tract_streamline with the widths of the header given at open (ignored
 * for TCK); s->index is ignored. Output is buffered and converted block-wise.
 * Errors: H5S_EINVAL (NULL points with n_points > 0, a non-finite point for TCK, whose
 * body uses NaN and Inf as markers), H5S_ERANGE (TRK: more than 2^31-1 points), H5S_EIO.
 */
int h5s_tract_writer_write(h5s_tract_writer *w, const h5s_tract_streamline *s);

/*
 * Finishes the file (TCK: the Inf triplet; both: the streamline count patched into the
 * header), closes it and frees w, also on error. NULL is a no-op returning 0.
 * Errors: H5S_EIO (write, seek or close failed: the file is incomplete).
 */
int h5s_tract_writer_close(h5s_tract_writer *w);

/*
 * The transform nibabel applies to TRK points: voxmm (voxel index x voxel size, corner
 * origin) -> RAS+ mm: divide by voxel sizes, shift by -0.5 voxel, reorder/flip from the
 * header's voxel_order to the orientation of voxel_to_rasmm, then voxel_to_rasmm.
 * out is 4 x 4 row-major. Errors: H5S_EFORMAT (a voxel size of 0, or a voxel order that is
 * not three distinct axes of RLAPSI). Thread-safe.
 */
int h5s_trk_voxmm_to_rasmm(double out[4][4], const h5s_tract_header *h);

/* ------------------------------------------------------------------- TRX writing */

typedef enum {
    H5S_TRX_ZIP_STORE = 0, /* zip archive, entries stored (the default) */
    H5S_TRX_ZIP_DEFLATE,   /* zip archive, entries deflate-compressed */
    H5S_TRX_DIR_CLEAN,     /* folder: removed if present, then created */
    H5S_TRX_DIR_PERSISTENT /* folder that must exist: only our entries are (over)written */
} h5s_trx_mode;

#define H5S_TRX_WRITE_OPTIONS_VERSION 1

typedef struct {
    unsigned version;   /* H5S_TRX_WRITE_OPTIONS_VERSION */
    h5s_trx_mode mode;  /* H5S_TRX_ZIP_STORE by default */
    int deflate_level;  /* 1-9 for H5S_TRX_ZIP_DEFLATE; 0 = libzip's default (6) */
    size_t buffer_size; /* bytes per fill call for folders; 0 = 1 MiB */
} h5s_trx_write_options;

#define H5S_TRX_WRITE_OPTIONS_INIT                                                                 \
    {                                                                                              \
        H5S_TRX_WRITE_OPTIONS_VERSION, H5S_TRX_ZIP_STORE, 0, 0                                     \
    }

/*
 * Supplies the bytes of one entry: writes the next bytes of the entry (little-endian,
 * C order) into buf, at most cap, and sets *out_len to their number (> 0 while bytes
 * remain). Called repeatedly, in order, until the entry's declared size is reached;
 * entries are filled one after another in the order they were added. Return 0, or a
 * negative h5s code (with h5s_error_set) to abort the write; that code and message
 * are what h5s_trx_writer_add or h5s_trx_writer_close then return.
 */
typedef int (*h5s_trx_fill_fn)(size_t *out_len, void *buf, size_t cap, void *payload);

typedef struct h5s_trx_writer h5s_trx_writer;

/*
 * Starts a TRX output at path in the given mode (opts NULL = defaults). A zip archive is
 * written at h5s_trx_writer_close (libzip writes a temporary file and renames it, so
 * nothing is left on failure); a folder's entries are written as they are added.
 * *out is the caller's; h5s_trx_writer_close or h5s_trx_writer_discard frees it.
 * Errors: H5S_EINVAL (bad options), H5S_ENOTFOUND (persistent folder missing), H5S_EIO.
 */
int h5s_trx_writer_open(h5s_trx_writer **out, const char *path, const h5s_trx_write_options *opts);

/*
 * Adds header.json made from hdr: NB_STREAMLINES and NB_VERTICES (must be >= 0, as
 * integers), VOXEL_TO_RASMM (4 x 4) and DIMENSIONS (3). Must come before any other entry,
 * once; later entries' sizes are checked against these counts.
 * Errors: H5S_EINVAL (negative counts), H5S_ESTATE (header already added), H5S_EIO,
 * H5S_ENOMEM. TRX spec, header.json.
 */
int h5s_trx_writer_add_header(h5s_trx_writer *w, const h5s_tract_header *hdr);

/*
 * Adds one array entry named name ("positions.3.float16", "offsets.uint64",
 * "dps/NAME.K.DTYPE" or "dps/NAME.DTYPE", "dpv/...", "groups/NAME.uint32",
 * "dpg/GROUP/NAME.K.DTYPE"; h5s_trx_entry_name builds them) of size bytes, produced by
 * fill(payload). Folder modes call fill during this call; zip modes call it during
 * h5s_trx_writer_close, so payload must stay valid until then. The rules of trx-python and
 * trx-cpp are enforced: positions 3 columns of float16/32/64 and NB_VERTICES rows, offsets
 * only uint64 with NB_STREAMLINES + 1 entries, dps NB_STREAMLINES rows, dpv NB_VERTICES
 * rows, groups only uint32, dpg only for a group added before, names without '.' or '/',
 * each entry once. The contents (offsets start at 0 and end at NB_VERTICES, group indices
 * in range) are the caller's to get right.
 * Errors: H5S_ESTATE (no header yet), H5S_EINVAL (name or size breaks a rule above),
 * H5S_EIO (folder write failed), H5S_ENOMEM, or fill's code.
 */
int h5s_trx_writer_add(h5s_trx_writer *w, const char *name, uint64_t size, h5s_trx_fill_fn fill,
                       void *payload);

/*
 * Finishes the output: checks that positions and offsets were added, then (zip) runs
 * every fill callback and writes the archive, with zip64 records only where an entry or
 * the archive passes 4 GiB and no other extra fields in local headers. Frees w, also on
 * error. Errors: H5S_EFORMAT (positions or offsets missing), H5S_EIO (libzip's reason),
 * H5S_ENOMEM, or a fill callback's code.
 */
int h5s_trx_writer_close(h5s_trx_writer *w);

/* Abandons the output (zip: nothing is written; folder: entries written so far stay) and
   frees w. NULL is a no-op. */
void h5s_trx_writer_discard(h5s_trx_writer *w);

typedef enum {
    H5S_TRX_POSITIONS = 0,
    H5S_TRX_OFFSETS,
    H5S_TRX_DPS,
    H5S_TRX_DPV,
    H5S_TRX_GROUP,
    H5S_TRX_DPG
} h5s_trx_entry_kind;

/*
 * Writes the TRX entry name for kind into buf (cap bytes): "positions.3.DTYPE",
 * "offsets.DTYPE", "dps/NAME.DTYPE" (K = 1) or "dps/NAME.K.DTYPE", "dpv/...",
 * "groups/NAME.DTYPE", "dpg/GROUP/NAME[.K].DTYPE". group is used by DPG only, name by
 * DPS/DPV/GROUP/DPG. Errors: H5S_EINVAL (name or group empty or with '.' or '/', ncols 0),
 * H5S_ERANGE (buf too small). Thread-safe.
 */
int h5s_trx_entry_name(char *buf, size_t cap, h5s_trx_entry_kind kind, const char *group,
                       const char *name, uint32_t ncols, h5s_dtype dtype);

/*
 * Parses a TRX entry name (path inside the archive or folder, '/'-separated) into its
 * kind, group (dpg only), name, ncols (1 when absent) and dtype. group and name get
 * H5S_TRACT_NAME_MAX bytes each. Returns 0, H5S_ENOTFOUND for a name that is not an array
 * entry (header.json, other *.json, folders), or H5S_EFORMAT for a malformed array name
 * (unknown dtype, bad column count, dpg without group). Thread-safe.
 */
int h5s_trx_entry_parse(const char *entry, h5s_trx_entry_kind *kind, char *group, char *name,
                        uint32_t *ncols, h5s_dtype *dtype);

/* --------------------------------------------------- internal to formats/, not API */
#ifdef H5S_TRACTIO_INTERNAL
struct h5s_tract_reader_ops {
    int (*next)(h5s_tract_reader *r, h5s_tract_streamline *out);
    int (*groups)(h5s_tract_reader *r, h5s_tract_group_fn fn, void *payload); /* NULL: none */
    void (*close)(h5s_tract_reader *r);
};
/* Each format's reader struct starts with this. */
struct h5s_tract_reader {
    const struct h5s_tract_reader_ops *ops;
    h5s_tract_header header;
    int sticky; /* error code repeated by later next() calls */
    char *sticky_msg;
};
struct h5s_tract_writer_ops {
    int (*write)(h5s_tract_writer *w, const h5s_tract_streamline *s);
    int (*close)(h5s_tract_writer *w);
};
struct h5s_tract_writer {
    const struct h5s_tract_writer_ops *ops;
};
/* Frees the arrays of a header a reader owns. */
void h5s_tract_header_free(h5s_tract_header *h);
/* Converts n elements of dtype (little-endian bytes) to float64 / to float32. */
void h5s_tract_to_f64(double *dst, const void *src, size_t n, h5s_dtype dtype);
void h5s_tract_to_f32(float *dst, const void *src, size_t n, h5s_dtype dtype);
/* Inverts a 4 x 4 matrix; H5S_EINVAL when singular. */
int h5s_tract_mat4_inverse(double out[4][4], const double m[4][4]);
#endif

#ifdef __cplusplus
}
#endif
#endif /* H5S_TRACTIO_H */
