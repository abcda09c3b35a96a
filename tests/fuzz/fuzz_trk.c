/*
 * fuzz_trk.c - arbitrary bytes as a TrackVis .trk file through h5s_trk_open and
 * h5s_tract_next (formats/h5s_trk.c): the 1000-byte header in either byte order, the
 * scalar and property names ("name", "name\0K"), the voxmm -> RAS+ transform, and the
 * streamline records. Nothing may crash or leak; a rejected file's message names the file
 * and the byte offset, and the error sticks. A file read to its end that the TRK writer
 * accepts is written back and must read back with the same streamlines and values.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_tracts.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const places[] = {"byte ", NULL};

/* Values stored as float32 come back exactly; NaN stays NaN. */
static int same_values(const double *a, const double *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!(a[i] == b[i] || (isnan(a[i]) && isnan(b[i]))))
            return 0;
    return 1;
}

/* Reads the file at path and the copy at out in step: same counts and values. */
static void compare(const char *path, const char *out)
{
    h5s_tract_reader *a = NULL, *b = NULL;
    if (h5s_trk_open(&a, path) != 0 || h5s_trk_open(&b, out) != 0)
        FUZZ_TRAP();
    const h5s_tract_header *ha = h5s_tract_reader_header(a), *hb = h5s_tract_reader_header(b);
    if (ha->dps_width != hb->dps_width || ha->dpv_width != hb->dpv_width)
        FUZZ_TRAP();
    h5s_tract_streamline sa, sb;
    int ra, rb;
    while ((ra = h5s_tract_next(a, &sa)) == 1) {
        rb = h5s_tract_next(b, &sb);
        if (rb != 1 || sa.n_points != sb.n_points ||
            (ha->dps_width && !same_values(sa.dps, sb.dps, ha->dps_width)) ||
            (ha->dpv_width && !same_values(sa.dpv, sb.dpv, sa.n_points * ha->dpv_width)))
            FUZZ_TRAP();
    }
    if (ra != 0 || h5s_tract_next(b, &sb) != 0)
        FUZZ_TRAP();
    h5s_tract_close(a);
    h5s_tract_close(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[4096], out[4096];
    h5s_tract_reader *r =
        fuzz_open_tracts(data, size, ".trk", h5s_trk_open, places, path, sizeof path);
    if (!r)
        return 0;
    int rc;
    const h5s_tract_header *h = h5s_tract_reader_header(r);
    if (h->format != H5S_TRACT_TRK || h->n_groups || h->n_dpg)
        FUZZ_TRAP();
    double m[4][4];
    if (h5s_trk_voxmm_to_rasmm(m, h) != 0)
        FUZZ_TRAP(); /* the reader checked it at open */

    /* The TRK writer takes the reader's header; it may refuse what TRK cannot hold
     * (a name too long with its count, a negative dimension). */
    h5s_tract_writer *w = NULL;
    if (fuzz_tmpfile(out, sizeof out, ".trk", NULL, 0) != 0)
        out[0] = '\0';
    else if (h5s_tract_writer_open(&w, out, H5S_TRACT_TRK, h) != 0)
        w = NULL;

    h5s_tract_streamline s;
    uint64_t index = 0;
    while ((rc = h5s_tract_next(r, &s)) == 1) {
        if (s.index != index++ || (s.n_points && !s.points) || !s.dps != !h->dps_width ||
            !s.dpv != !h->dpv_width)
            FUZZ_TRAP();
        if (w && h5s_tract_writer_write(w, &s) != 0)
            FUZZ_TRAP();
    }
    fuzz_tract_error_sticks(r, rc, path, places);
    if (h5s_tract_read_groups(r, fuzz_no_group, NULL) != 0)
        FUZZ_TRAP();
    h5s_tract_close(r);
    if (w && h5s_tract_writer_close(w) != 0)
        FUZZ_TRAP();
    if (w && rc == 0)
        compare(path, out);
    if (out[0])
        unlink(out);
    unlink(path);
    return 0;
}
