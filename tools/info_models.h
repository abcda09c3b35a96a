/* info_models.h - private to tools/: the model datasets part of `h5stream info`. */
#ifndef H5S_INFO_MODELS_H
#define H5S_INFO_MODELS_H

#include <hdf5.h>
#include <jansson.h>
#include <stdint.h>

#define INFO_COLUMN_RANK 8
#define INFO_COLUMN_PATH 512

typedef struct {
    char path[INFO_COLUMN_PATH];
    int rank;
    hsize_t dims[INFO_COLUMN_RANK];
    char type[64];
    char codec[128];
    uint64_t storage;
} info_column;

typedef struct {
    info_column *cols;
    size_t n;
} info_columns;

/* Lists every dataset under /tracts, /volumes, /marc and /obs_meta. 0, or -1 when out of
 * memory. */
int info_columns_scan(hid_t fid, info_columns *out);
/* Text and JSON forms; the JSON array is the caller's. */
void info_columns_print(const info_columns *c);
json_t *info_columns_json(const info_columns *c);
void info_columns_free(info_columns *c);

/* What a file lacks to be the h5stream file it says it is (info_layout_check). */
#define INFO_MAX_PROBLEMS 16
typedef struct {
    char text[INFO_MAX_PROBLEMS][512];
    int n;
} info_problems;

/*
 * Checks an open file against the layout its root attributes declare (docs/format.md and
 * the models' pages): the h5stream_format attribute (without it the file is not
 * h5stream's at all), the writer status, and the datasets of every model that
 * h5stream_models lists (frames: a frames dataset with its frame_id; tracts: positions and
 * offsets; volumes: /volumes, /obs_meta, each collection's obs and voxels; MARC: records,
 * offsets and index, accepted and rejected, and the error table). The writer declares all
 * of them before SWMR starts, so one missing is damage. Fills out with one line per
 * problem (out->n of them, 0 for a whole file). `info` and `recover` print them.
 */
void info_layout_check(hid_t fid, info_problems *out);

#endif
