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

#endif
