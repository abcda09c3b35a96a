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

#endif
