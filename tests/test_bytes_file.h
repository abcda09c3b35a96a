/*
 * test_bytes_file.h - a test fixture shared by the engine's tests: a file holding one
 * group with a uint64 marker column `count` and a uint8 payload column `bytes`, SWMR
 * started. Include after cmocka.h; every function is static.
 */
#ifndef H5S_TEST_BYTES_FILE_H
#define H5S_TEST_BYTES_FILE_H

#include <stdio.h>

#include "h5s_codec.h"
#include "h5s_column.h"

typedef struct {
    h5s_file *f;
    h5s_group *g;
    h5s_column *marker; /* GROUP/count, uint64, the group's commit marker */
    h5s_column *bytes;  /* GROUP/bytes, uint8 */
} bytes_file;

/* Creates path with fo (NULL: defaults) and group (an absolute path such as "/g"); the
 * payload column has chunk_rows rows a chunk and codec (NULL: none). Fails the test on
 * any error. */
static void bytes_file_open(bytes_file *out, const char *path, const h5s_file_options *fo,
                            const char *group, size_t chunk_rows, const h5s_codec *codec)
{
    char name[256];
    h5s_file_options defaults = H5S_FILE_OPTIONS_INIT;
    assert_int_equal(h5s_file_create(&out->f, path, fo ? fo : &defaults), 0);
    assert_int_equal(h5s_file_add_model(out->f, "test"), 0);
    assert_int_equal(h5s_group_create(&out->g, out->f, group), 0);
    h5s_column_options o = H5S_COLUMN_OPTIONS_INIT;
    o.type = H5T_STD_U64LE;
    o.marker = 1;
    snprintf(name, sizeof name, "%s/count", group);
    assert_int_equal(h5s_column_create(&out->marker, out->g, name, &o), 0);
    o.marker = 0;
    o.type = H5T_STD_U8LE;
    o.chunk_rows = chunk_rows;
    if (codec)
        o.codec = *codec;
    snprintf(name, sizeof name, "%s/bytes", group);
    assert_int_equal(h5s_column_create(&out->bytes, out->g, name, &o), 0);
    assert_int_equal(h5s_file_start_swmr(out->f), 0);
}

#endif
