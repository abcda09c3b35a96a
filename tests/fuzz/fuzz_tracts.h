/*
 * fuzz_tracts.h - shared by the tractogram fuzz targets (TCK, TRK, TRX): the checks every
 * streaming reader of h5s_tractio.h must pass whatever its format. Header-only.
 */
#ifndef H5S_FUZZ_TRACTS_H
#define H5S_FUZZ_TRACTS_H

#include "fuzz_common.h"
#include "h5s_tractio.h"

/* For formats without groups (TCK, TRK): the reader must never call this. */
static inline int fuzz_no_group(size_t group, const uint32_t *indices, size_t n, void *payload)
{
    (void)group;
    (void)indices;
    (void)n;
    (void)payload;
    FUZZ_TRAP();
}

/*
 * rc: what h5s_tract_next last returned. When it was an error, the message must say where
 * (fuzz_check_message), and the error must stick: the next call gives the same code and
 * the same message.
 */
static inline void fuzz_tract_error_sticks(h5s_tract_reader *r, int rc, const char *path,
                                           const char *const *places)
{
    if (rc >= 0)
        return;
    char *first = strdup(h5s_error_message());
    fuzz_check_message(first, path, places);
    h5s_tract_streamline s;
    if (h5s_tract_next(r, &s) != rc || (first && strcmp(first, h5s_error_message()) != 0))
        FUZZ_TRAP();
    free(first);
}

/*
 * Writes the fuzz input to a new file with extension ext (its name into path) and opens it
 * with open_fn. Returns the reader, or NULL when the file could not be made or was
 * refused; a refusal must leave no reader and must say where (fuzz_check_message), and its
 * file is removed. The caller closes the reader and removes path.
 */
static inline h5s_tract_reader *fuzz_open_tracts(const uint8_t *data, size_t size, const char *ext,
                                                 int (*open_fn)(h5s_tract_reader **, const char *),
                                                 const char *const *places, char *path,
                                                 size_t path_size)
{
    if (fuzz_tmpfile(path, path_size, ext, data, size) != 0)
        return NULL;
    h5s_tract_reader *r = NULL;
    if (open_fn(&r, path) != 0) {
        if (r)
            FUZZ_TRAP();
        fuzz_check_message(h5s_error_message(), path, places);
        unlink(path);
        return NULL;
    }
    return r;
}

#endif
