/*
 * h5s_tracts.h - public: the tracts model. Streamlines pushed from any thread into a TRX-
 * shaped layout under /tracts that readers see while tracking runs (docs/format.md,
 * "tracts"; DESIGN.md section 4).
 *
 * Layout: /tracts/positions [Nv, 3] (float16, float32 or float64, RAS+ millimetres),
 * /tracts/offsets [Ns + 1] uint64 (offsets[0] = 0, then each streamline's end: the commit
 * marker), /tracts/dps/NAME [Ns, K], /tracts/dpv/NAME [Nv, K], /tracts/groups/NAME [n]
 * uint32 streamline indices, /tracts/dpg/GROUP/NAME [K]. Attributes of /tracts:
 * VOXEL_TO_RASMM (4 x 4 float64) and DIMENSIONS (3 int32), as in TRX's header.json.
 * A reader reads offsets' extent first: streamlines [0, extent - 1) are whole on disk.
 */
#ifndef H5S_TRACTS_H
#define H5S_TRACTS_H

#include <stdint.h>

#include "h5stream.h"

#ifdef __cplusplus
extern "C" {
#endif

#define H5S_TRACTS_PATH "/tracts"
#define H5S_TRACTS_OPTIONS_VERSION 1
/* Fields (dps, dpv) and groups a tractogram may declare. */
#define H5S_TRACTS_MAX_FIELDS 64
#define H5S_TRACTS_MAX_GROUPS 256

typedef struct h5s_tracts h5s_tracts;

typedef struct {
    unsigned version;          /* H5S_TRACTS_OPTIONS_VERSION */
    h5s_dtype positions_dtype; /* H5S_FLOAT16, H5S_FLOAT32 or H5S_FLOAT64 */
    double voxel_to_rasmm[16]; /* 4 x 4, row-major (TRX VOXEL_TO_RASMM) */
    int32_t dimensions[3];     /* reference image grid (TRX DIMENSIONS), each >= 1 */
    h5s_codec codec;           /* chunk compression of every dataset */
    uint64_t chunk_points;     /* points per positions chunk; 0 = about 128 KiB */
} h5s_tracts_options;

#define H5S_TRACTS_OPTIONS_INIT                                                                    \
    {                                                                                              \
        H5S_TRACTS_OPTIONS_VERSION, H5S_FLOAT32, {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1}, \
            {1, 1, 1}, H5S_CODEC_INIT, 0                                                           \
    }

/*
 * Declaration phase: creates the tracts model of a new file at /tracts with its header
 * attributes. The file owns the handle (freed by h5s_file_close). One per file.
 * Errors: H5S_EINVAL (dtype not float16/32/64, a dimension < 1, non-finite affine, a
 * second tracts model), H5S_ESTATE (SWMR started), H5S_EIO, H5S_ENOMEM.
 * Thread safety: declaration calls from one thread. Spec: TRX header.json.
 */
int h5s_tracts_create(h5s_tracts **out, h5s_file *file, const h5s_tracts_options *opts);

/*
 * Declaration phase: a data-per-streamline (dps) or data-per-vertex (dpv) field of ncols
 * (K >= 1) values of dtype per streamline / per point. name: 1 to 64 characters, no '/' or
 * '.' (TRX forbids dots in names), unique among the kind. Returns the field's index
 * (declaration order) through out_index (may be NULL).
 * Errors: H5S_EINVAL, H5S_ESTATE, H5S_EIO. Spec: TRX dps/NAME.K.DTYPE, dpv/NAME.K.DTYPE.
 */
int h5s_tracts_add_dps(h5s_tracts *t, const char *name, h5s_dtype dtype, uint32_t ncols,
                       unsigned *out_index);
int h5s_tracts_add_dpv(h5s_tracts *t, const char *name, h5s_dtype dtype, uint32_t ncols,
                       unsigned *out_index);

/*
 * Declaration phase: a group of streamlines (TRX groups/NAME.uint32), filled while
 * streaming by h5s_tracts_group_add. Same name rules. Returns its index via out_index.
 */
int h5s_tracts_add_group(h5s_tracts *t, const char *name, unsigned *out_index);

/*
 * Declaration phase: a data-per-group field (TRX dpg/GROUP/NAME.K.DTYPE) of group, ncols
 * values of dtype, zero until h5s_tracts_set_dpg. Errors as h5s_tracts_add_dps, and
 * H5S_ENOTFOUND for an unknown group.
 */
int h5s_tracts_add_dpg(h5s_tracts *t, const char *group, const char *name, h5s_dtype dtype,
                       uint32_t ncols);

/*
 * Pushes one streamline. points: npoints x 3 float32, RAS+ millimetres, row-major;
 * npoints >= 0 (an empty streamline is kept). dps: one pointer per declared dps field, in
 * declaration order, each to K values of the field's dtype (native little-endian); dpv:
 * likewise, each to npoints x K values. dps or dpv may be NULL when no field of that kind
 * is declared, or to store zeros. Points are converted to the positions dtype (float16:
 * round to nearest even) before the call takes the tracts lock, and copied: the caller
 * keeps its buffers. out_index (may be NULL) receives the streamline's index (order of
 * taking the lock). Blocks while the queue budget is used (H5S_EAGAIN in non-blocking
 * mode, with nothing stored).
 * Errors: H5S_EINVAL (NULL points with npoints > 0, a non-finite coordinate), H5S_ESTATE
 * (before start or after close), the stream's kept error (H5S_EIO, ...).
 * Thread-safe: any number of producer threads. Spec: TRX positions/offsets.
 */
int h5s_tracts_push(h5s_tracts *t, const float *points, uint64_t npoints, const void *const *dps,
                    const void *const *dpv, uint64_t *out_index);

/*
 * Adds streamlines to group (index from h5s_tracts_add_group). indices: n streamline
 * indices (already pushed or not; readers only show the committed ones). Thread-safe.
 * Errors: H5S_EINVAL (unknown group), H5S_ESTATE, the kept error.
 */
int h5s_tracts_group_add(h5s_tracts *t, unsigned group, const uint32_t *indices, uint64_t n);

/*
 * Sets the values of a declared dpg field: ncols values of its dtype. Written in place by
 * the writer thread in order with the pushes; readers see it at the next commit.
 * Thread-safe. Errors: H5S_ENOTFOUND (no such group/field), H5S_ESTATE, H5S_ENOMEM.
 */
int h5s_tracts_set_dpg(h5s_tracts *t, const char *group, const char *name, const void *values);

/* Streamlines pushed so far (committed or not). Thread-safe. */
uint64_t h5s_tracts_count(const h5s_tracts *t);

/* The tracts model of a file, or NULL. */
h5s_tracts *h5s_tracts_get(h5s_file *file);

#ifdef __cplusplus
}
#endif
#endif
