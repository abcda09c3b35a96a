/*
 * h5s_tck.c - MRtrix .tck: streaming reader and writer, and the dispatch of the
 * streamline writers (TCK here, TRK in h5s_trk.c). Format notes: docs/tractio.md.
 *
 * Header: "mrtrix tracks\n", then "key: value" lines (a key repeated, or a line without a
 * colon, continues the previous key), up to a line "END". "file: . OFFSET" gives the byte
 * where the body starts, "datatype: Float32LE|Float32BE" its byte order. Body: float32
 * x y z triplets in RAS+ mm; an all-NaN triplet ends each streamline and an all-Inf triplet
 * ends the file. Tolerance follows nibabel's TCK reader.
 */
#define _POSIX_C_SOURCE 200809L
#define H5S_TRACTIO_INTERNAL
#include "h5s_tractio.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5s_bytes.h"
#include "h5s_error.h"

#define TCK_MAGIC "mrtrix tracks"
#define TCK_HEADER_MAX (16u << 20) /* a header longer than this is not a TCK header */
#define TCK_BLOCK_POINTS 65536u    /* triplets per body read */

typedef struct {
    struct h5s_tract_reader base;
    char *path;
    FILE *fp;
    int swap;              /* body is big-endian on a little-endian host, or the reverse */
    uint64_t body_start;   /* byte of the first triplet */
    uint64_t block_offset; /* byte of block[0] in the file */
    float *block;          /* TCK_BLOCK_POINTS x 3 */
    size_t block_n;        /* triplets in block */
    size_t block_pos;      /* next triplet to look at */
    int eof;               /* the Inf triplet was seen */
    float *points;         /* the streamline being assembled */
    size_t n_points, cap_points;
    uint64_t index;
} tck_reader;

static int tck_points_reserve(tck_reader *t, size_t n)
{
    if (n <= t->cap_points)
        return 0;
    size_t cap = t->cap_points ? t->cap_points : 1024;
    while (cap < n)
        cap *= 2;
    float *p = realloc(t->points, cap * 3 * sizeof(float));
    if (!p)
        return h5s_error_set(H5S_ENOMEM, "%s: no memory for a streamline of %zu points", t->path,
                             n);
    t->points = p;
    t->cap_points = cap;
    return 0;
}

/* Reads the next block of triplets; sets block_n 0 at the end of the file. */
static int tck_fill_block(tck_reader *t)
{
    t->block_offset += (uint64_t)t->block_n * 12u;
    size_t got = fread(t->block, 1, (size_t)TCK_BLOCK_POINTS * 12u, t->fp);
    if (got < (size_t)TCK_BLOCK_POINTS * 12u && ferror(t->fp))
        return h5s_error_set(H5S_EIO, "%s: byte %llu: read failed: %s", t->path,
                             (unsigned long long)t->block_offset, strerror(errno));
    if (got % 12u != 0)
        return h5s_error_set(
            H5S_EFORMAT, "%s: byte %llu: body truncated inside a point (%zu trailing bytes)",
            t->path, (unsigned long long)(t->block_offset + got - got % 12u), got % 12u);
    t->block_n = got / 12u;
    t->block_pos = 0;
    if (t->swap)
        h5s_bytes_swap(t->block, t->block_n * 3u, 4);
    return 0;
}

static int tck_next(h5s_tract_reader *r, h5s_tract_streamline *out)
{
    tck_reader *t = (tck_reader *)r;
    if (t->eof)
        return 0;
    t->n_points = 0;
    for (;;) {
        if (t->block_pos == t->block_n) {
            int rc = tck_fill_block(t);
            if (rc)
                return rc;
            if (t->block_n == 0) {
                uint64_t at = t->block_offset;
                if (t->n_points)
                    return h5s_error_set(H5S_EFORMAT,
                                         "%s: byte %llu: streamline %llu truncated: end of file "
                                         "before its NaN delimiter",
                                         t->path, (unsigned long long)at,
                                         (unsigned long long)t->index);
                return h5s_error_set(H5S_EFORMAT,
                                     "%s: byte %llu: body ends without the Inf end-of-file "
                                     "triplet (file truncated?)",
                                     t->path, (unsigned long long)at);
            }
        }
        const float *b = t->block;
        size_t start = t->block_pos, i = start;
        /* Scan for the next delimiter (all NaN or all Inf); plain points are copied in bulk. */
        while (i < t->block_n) {
            const float *p = b + i * 3;
            if ((isnan(p[0]) && isnan(p[1]) && isnan(p[2])) ||
                (isinf(p[0]) && isinf(p[1]) && isinf(p[2])))
                break;
            i++;
        }
        if (i > start) {
            int rc = tck_points_reserve(t, t->n_points + (i - start));
            if (rc)
                return rc;
            memcpy(t->points + t->n_points * 3, b + start * 3, (i - start) * 3 * sizeof(float));
            t->n_points += i - start;
        }
        t->block_pos = i;
        if (i == t->block_n)
            continue;
        t->block_pos = i + 1;
        if (isinf(b[i * 3])) {
            if (t->n_points)
                return h5s_error_set(H5S_EFORMAT,
                                     "%s: byte %llu: streamline %llu not ended by a NaN "
                                     "triplet before the Inf end-of-file triplet",
                                     t->path,
                                     (unsigned long long)(t->block_offset + (uint64_t)i * 12u),
                                     (unsigned long long)t->index);
            t->eof = 1;
            return 0;
        }
        if (t->n_points == 0)
            continue; /* empty streamline: skipped, as nibabel does */
        out->index = t->index++;
        out->n_points = t->n_points;
        out->points = t->points;
        out->dps = NULL;
        out->dpv = NULL;
        return 1;
    }
}

static void tck_close(h5s_tract_reader *r)
{
    tck_reader *t = (tck_reader *)r;
    if (t->fp)
        fclose(t->fp);
    free(t->block);
    free(t->points);
    free(t->path);
    h5s_tract_header_free(&t->base.header);
    free(t);
}

static const struct h5s_tract_reader_ops tck_ops = {tck_next, NULL, tck_close};

/* Strips leading and trailing white space in place; returns the start. */
static char *tck_strip(char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

/* Parses the text header; leaves fp anywhere. */
static int tck_parse_header(tck_reader *t)
{
    char magic[sizeof TCK_MAGIC];
    size_t got = fread(magic, 1, sizeof magic, t->fp);
    if (got < sizeof magic || memcmp(magic, TCK_MAGIC, sizeof TCK_MAGIC - 1) != 0 ||
        magic[sizeof magic - 1] != '\n')
        return h5s_error_set(
            H5S_EFORMAT, "%s: byte 0: not a TCK file: no \"mrtrix tracks\" magic line", t->path);
    uint64_t off = sizeof magic, line_off = off;
    char *line = NULL, key[64] = "";
    size_t cap = 0;
    int found_end = 0, have_dtype = 0, have_file = 0, rc = 0;
    unsigned long long data_off = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, t->fp)) > 0) {
        line_off = off;
        off += (uint64_t)n;
        if (off > TCK_HEADER_MAX) {
            rc = h5s_error_set(H5S_EFORMAT, "%s: byte %llu: header longer than %u bytes", t->path,
                               (unsigned long long)line_off, TCK_HEADER_MAX);
            break;
        }
        if (memchr(line, '\0', (size_t)n))
            continue; /* binary bytes: can only be a body without END before it */
        char *s = tck_strip(line);
        if (!*s)
            continue;
        if (strcmp(s, "END") == 0) {
            found_end = 1;
            break;
        }
        char *colon = strchr(s, ':'), *value = s;
        if (colon) {
            *colon = '\0';
            snprintf(key, sizeof key, "%s", tck_strip(s));
            value = tck_strip(colon + 1);
        } else if (!key[0]) {
            rc = h5s_error_set(H5S_EFORMAT, "%s: byte %llu: header line without a key: %.40s",
                               t->path, (unsigned long long)line_off, s);
            break;
        }
        if (strcmp(key, "datatype") == 0 && colon) {
            have_dtype = 1;
            if (strcmp(value, "Float32LE") == 0) {
                t->swap = !h5s_bytes_host_le();
            } else if (strcmp(value, "Float32BE") == 0) {
                t->swap = h5s_bytes_host_le();
            } else {
                rc = h5s_error_set(H5S_EFORMAT,
                                   "%s: byte %llu: datatype \"%.40s\" not supported (TCK bodies "
                                   "are Float32LE or Float32BE)",
                                   t->path, (unsigned long long)line_off, value);
                break;
            }
        } else if (strcmp(key, "file") == 0 && colon) {
            char *end = NULL;
            if (value[0] != '.' || (value[1] != ' ' && value[1] != '\t')) {
                rc = h5s_error_set(H5S_EFORMAT,
                                   "%s: byte %llu: \"file: %.40s\": only single-file TCK "
                                   "(\"file: . OFFSET\") is supported",
                                   t->path, (unsigned long long)line_off, value);
                break;
            }
            errno = 0;
            data_off = strtoull(value + 2, &end, 10);
            if (errno || end == value + 2 || *tck_strip(end)) {
                rc = h5s_error_set(H5S_EFORMAT, "%s: byte %llu: bad body offset in \"file: %.40s\"",
                                   t->path, (unsigned long long)line_off, value);
                break;
            }
            have_file = 1;
        } else if (strcmp(key, "count") == 0 && colon) {
            char *end = NULL;
            long long c = strtoll(value, &end, 10);
            if (end != value && !*end && c >= 0)
                t->base.header.nb_streamlines = c;
        }
    }
    free(line);
    if (rc)
        return rc;
    if (!found_end) {
        if (ferror(t->fp))
            return h5s_error_set(H5S_EIO, "%s: byte %llu: read failed: %s", t->path,
                                 (unsigned long long)off, strerror(errno));
        return h5s_error_set(H5S_EFORMAT, "%s: byte %llu: end of file before the header's END line",
                             t->path, (unsigned long long)off);
    }
    if (!have_dtype)
        t->swap = !h5s_bytes_host_le(); /* nibabel assumes Float32LE */
    if (!have_file)
        data_off = off; /* nibabel guesses the body follows END */
    if (data_off < off)
        return h5s_error_set(H5S_EFORMAT,
                             "%s: byte %llu: body offset %llu points inside the header", t->path,
                             (unsigned long long)line_off, data_off);
    t->body_start = data_off;
    return 0;
}

int h5s_tck_open(h5s_tract_reader **out, const char *path)
{
    if (!out || !path)
        return h5s_error_set(H5S_EINVAL, "h5s_tck_open: NULL argument");
    *out = NULL;
    tck_reader *t = calloc(1, sizeof *t);
    if (!t)
        return h5s_error_set(H5S_ENOMEM, "%s: no memory", path);
    t->base.ops = &tck_ops;
    h5s_tract_header_init(&t->base.header);
    t->base.header.format = H5S_TRACT_TCK;
    int rc = 0;
    t->path = strdup(path);
    t->block = malloc((size_t)TCK_BLOCK_POINTS * 12u);
    if (!t->path || !t->block) {
        rc = h5s_error_set(H5S_ENOMEM, "%s: no memory", path);
        goto fail;
    }
    t->fp = fopen(path, "rb");
    if (!t->fp) {
        rc = h5s_error_set(H5S_EIO, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    rc = tck_parse_header(t);
    if (rc)
        goto fail;
    if (fseeko(t->fp, (off_t)t->body_start, SEEK_SET) != 0) {
        rc = h5s_error_set(H5S_EIO, "%s: byte %llu: seek failed: %s", path,
                           (unsigned long long)t->body_start, strerror(errno));
        goto fail;
    }
    t->block_offset = t->body_start;
    *out = &t->base;
    return 0;
fail:
    tck_close(&t->base);
    return rc;
}

/* ---------------------------------------------------------------------- writer */

#define TCK_OUT_BUFFER (1u << 20)

typedef struct {
    struct h5s_tract_writer base;
    char *path;
    FILE *fp;
    unsigned char *buf;
    size_t len;
    uint64_t count;
    int failed;
} tck_writer;

static int tck_flush(tck_writer *w)
{
    if (!w->len)
        return 0;
    if (!h5s_bytes_host_le())
        h5s_bytes_swap(w->buf, w->len / 4u, 4);
    if (fwrite(w->buf, 1, w->len, w->fp) != w->len) {
        w->failed = 1;
        return h5s_error_set(H5S_EIO, "%s: write failed: %s", w->path, strerror(errno));
    }
    w->len = 0;
    return 0;
}

static int tck_put(tck_writer *w, const void *src, size_t n)
{
    const unsigned char *s = src;
    while (n) {
        size_t room = TCK_OUT_BUFFER - w->len, k = n < room ? n : room;
        memcpy(w->buf + w->len, s, k);
        w->len += k;
        s += k;
        n -= k;
        if (w->len == TCK_OUT_BUFFER) {
            int rc = tck_flush(w);
            if (rc)
                return rc;
        }
    }
    return 0;
}

static int tck_write(h5s_tract_writer *base, const h5s_tract_streamline *s)
{
    tck_writer *w = (tck_writer *)base;
    const float *p = s->points;
    size_t n = s->n_points * 3;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(p[i]))
            return h5s_error_set(H5S_EINVAL,
                                 "%s: streamline %llu point %zu is not finite (TCK uses NaN and "
                                 "Inf as markers)",
                                 w->path, (unsigned long long)w->count, i / 3);
    const float nan3[3] = {NAN, NAN, NAN};
    int rc = tck_put(w, p, n * sizeof(float));
    if (!rc)
        rc = tck_put(w, nan3, sizeof nan3);
    if (!rc)
        w->count++;
    return rc;
}

static int tck_writer_close(h5s_tract_writer *base)
{
    tck_writer *w = (tck_writer *)base;
    const float inf3[3] = {INFINITY, INFINITY, INFINITY};
    int rc = w->failed ? h5s_error_set(H5S_EIO, "%s: earlier write failed", w->path) : 0;
    if (!rc)
        rc = tck_put(w, inf3, sizeof inf3);
    if (!rc)
        rc = tck_flush(w);
    if (!rc) {
        char count[16];
        snprintf(count, sizeof count, "%010llu", (unsigned long long)w->count);
        if (fseek(w->fp, (long)strlen(TCK_MAGIC "\ncount: "), SEEK_SET) != 0 ||
            fwrite(count, 1, 10, w->fp) != 10)
            rc = h5s_error_set(H5S_EIO, "%s: cannot patch the count: %s", w->path, strerror(errno));
    }
    if (fclose(w->fp) != 0 && !rc)
        rc = h5s_error_set(H5S_EIO, "%s: close failed: %s", w->path, strerror(errno));
    free(w->buf);
    free(w->path);
    free(w);
    return rc;
}

static const struct h5s_tract_writer_ops tck_writer_ops = {tck_write, tck_writer_close};

/* Opens the TCK writer (called by h5s_tract_writer_open). */
static int tck_writer_open(h5s_tract_writer **out, const char *path)
{
    tck_writer *w = calloc(1, sizeof *w);
    if (!w)
        return h5s_error_set(H5S_ENOMEM, "%s: no memory", path);
    w->base.ops = &tck_writer_ops;
    w->path = strdup(path);
    w->buf = malloc(TCK_OUT_BUFFER);
    if (!w->path || !w->buf) {
        free(w->path);
        free(w->buf);
        free(w);
        return h5s_error_set(H5S_ENOMEM, "%s: no memory", path);
    }
    w->fp = fopen(path, "wb");
    if (!w->fp) {
        int rc = h5s_error_set(H5S_EIO, "%s: cannot create: %s", path, strerror(errno));
        free(w->path);
        free(w->buf);
        free(w);
        return rc;
    }
    /* The count is padded to 10 digits so that patching it at close keeps every offset. */
    char head[160];
    const char *fixed = TCK_MAGIC "\ncount: 0000000000\ndatatype: Float32LE\nfile: . ";
    size_t total = strlen(fixed) + strlen("\nEND\n") + 1;
    for (;;) {
        int n = snprintf(head, sizeof head, "%s%zu\nEND\n", fixed, total);
        if ((size_t)n == total)
            break;
        total = (size_t)n;
    }
    int rc = tck_put(w, head, total);
    if (rc) {
        fclose(w->fp);
        free(w->path);
        free(w->buf);
        free(w);
        return rc;
    }
    *out = &w->base;
    return 0;
}

/* ------------------------------------------------------------ writer dispatch */

/* Opens the TRK writer; defined in h5s_trk.c. */
int h5s_trk_writer_open_impl(h5s_tract_writer **out, const char *path, const h5s_tract_header *hdr);

int h5s_tract_writer_open(h5s_tract_writer **out, const char *path, h5s_tract_format format,
                          const h5s_tract_header *hdr)
{
    if (!out || !path || !hdr)
        return h5s_error_set(H5S_EINVAL, "h5s_tract_writer_open: NULL argument");
    *out = NULL;
    if (format == H5S_TRACT_TCK)
        return tck_writer_open(out, path);
    if (format == H5S_TRACT_TRK)
        return h5s_trk_writer_open_impl(out, path, hdr);
    return h5s_error_set(H5S_EINVAL, "%s: streamline writers exist for TCK and TRK only", path);
}

int h5s_tract_writer_write(h5s_tract_writer *w, const h5s_tract_streamline *s)
{
    if (!w || !s || (s->n_points && !s->points))
        return h5s_error_set(H5S_EINVAL, "h5s_tract_writer_write: NULL argument");
    return w->ops->write(w, s);
}

int h5s_tract_writer_close(h5s_tract_writer *w)
{
    return w ? w->ops->close(w) : 0;
}
