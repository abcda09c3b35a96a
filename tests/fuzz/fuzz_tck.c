/*
 * fuzz_tck.c - arbitrary bytes as an MRtrix .tck file through h5s_tck_open and
 * h5s_tract_next (formats/h5s_tck.c): the magic line, the "key: value" header up to END,
 * "file: . OFFSET" and "datatype", and a body of float32 triplets with NaN and Inf
 * markers. Nothing may crash or leak; a rejected file's message names the file and the
 * byte offset, and the error sticks. A file read to its end whose points are all finite
 * goes through the TCK writer and must read back with the same streamlines.
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

typedef struct {
    float *points; /* every point read, x y z */
    size_t n_points, cap;
    size_t *lengths; /* points of each streamline */
    size_t n_lines, cap_lines;
    int finite;
} tck_copy;

static int copy_add(tck_copy *c, const h5s_tract_streamline *s)
{
    if (c->n_points + s->n_points > c->cap) {
        size_t cap = c->cap ? c->cap : 256;
        while (cap < c->n_points + s->n_points)
            cap *= 2;
        float *p = realloc(c->points, cap * 3 * sizeof *p);
        if (!p)
            return -1;
        c->points = p;
        c->cap = cap;
    }
    if (c->n_lines == c->cap_lines) {
        size_t cap = c->cap_lines ? 2 * c->cap_lines : 64;
        size_t *l = realloc(c->lengths, cap * sizeof *l);
        if (!l)
            return -1;
        c->lengths = l;
        c->cap_lines = cap;
    }
    memcpy(c->points + 3 * c->n_points, s->points, s->n_points * 3 * sizeof(float));
    for (size_t i = 0; i < s->n_points * 3; i++)
        c->finite &= isfinite(s->points[i]) != 0;
    c->n_points += s->n_points;
    c->lengths[c->n_lines++] = s->n_points;
    return 0;
}

/* Writes c with the TCK writer and reads it back: the same streamlines, bit for bit. */
static void roundtrip(const tck_copy *c)
{
    char path[4096];
    if (fuzz_tmpfile(path, sizeof path, ".tck", NULL, 0) != 0)
        return;
    h5s_tract_header h;
    h5s_tract_header_init(&h);
    h5s_tract_writer *w = NULL;
    if (h5s_tract_writer_open(&w, path, H5S_TRACT_TCK, &h) != 0)
        FUZZ_TRAP();
    const float *p = c->points;
    for (size_t i = 0; i < c->n_lines; i++) {
        h5s_tract_streamline s = {0, c->lengths[i], p, NULL, NULL};
        if (h5s_tract_writer_write(w, &s) != 0)
            FUZZ_TRAP();
        p += 3 * c->lengths[i];
    }
    if (h5s_tract_writer_close(w) != 0)
        FUZZ_TRAP();
    h5s_tract_reader *r = NULL;
    if (h5s_tck_open(&r, path) != 0)
        FUZZ_TRAP();
    if (h5s_tract_reader_header(r)->nb_streamlines != (int64_t)c->n_lines)
        FUZZ_TRAP();
    h5s_tract_streamline s;
    size_t line = 0;
    int rc;
    p = c->points;
    while ((rc = h5s_tract_next(r, &s)) == 1) {
        if (line == c->n_lines || s.n_points != c->lengths[line] ||
            memcmp(s.points, p, s.n_points * 3 * sizeof(float)) != 0)
            FUZZ_TRAP();
        p += 3 * s.n_points;
        line++;
    }
    if (rc != 0 || line != c->n_lines)
        FUZZ_TRAP();
    h5s_tract_close(r);
    unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[4096];
    h5s_tract_reader *r =
        fuzz_open_tracts(data, size, ".tck", h5s_tck_open, places, path, sizeof path);
    if (!r)
        return 0;
    int rc;
    const h5s_tract_header *h = h5s_tract_reader_header(r);
    if (h->format != H5S_TRACT_TCK || h->n_dps || h->n_dpv || h->n_groups)
        FUZZ_TRAP();
    tck_copy copy = {NULL, 0, 0, NULL, 0, 0, 1};
    h5s_tract_streamline s;
    uint64_t index = 0;
    while ((rc = h5s_tract_next(r, &s)) == 1) {
        /* Numbered in order, never empty (empty ones are skipped), no dps or dpv. */
        if (s.index != index++ || s.n_points == 0 || !s.points || s.dps || s.dpv)
            FUZZ_TRAP();
        if (copy_add(&copy, &s) != 0)
            break;
    }
    fuzz_tract_error_sticks(r, rc, path, places);
    if (h5s_tract_read_groups(r, fuzz_no_group, NULL) != 0)
        FUZZ_TRAP();
    h5s_tract_close(r);
    unlink(path);
    if (rc == 0 && copy.finite)
        roundtrip(&copy);
    free(copy.points);
    free(copy.lengths);
    return 0;
}
