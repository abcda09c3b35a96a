/*
 * h5s_trx_read.c - TRX reader (zip archive, stored or deflate, or a folder), the entry
 * name rules, the common header and the dispatch of h5s_tract_open / next / close.
 * Format notes: docs/tractio.md.
 *
 * Entries sit at the root: header.json, positions.3.DTYPE, offsets.DTYPE, dps/NAME[.K].DTYPE,
 * dpv/NAME[.K].DTYPE, groups/NAME.DTYPE, dpg/GROUP/NAME[.K].DTYPE; arrays little-endian,
 * C order. Offsets have NB_STREAMLINES + 1 entries (0 first, NB_VERTICES last), or
 * NB_STREAMLINES in the older layout without the sentinel; both are read. Every array is
 * read through its own small buffered stream (libzip's zip_fread, or stdio for a folder),
 * so memory does not grow with the tractogram.
 */
#define _POSIX_C_SOURCE 200809L
#define H5S_TRACTIO_INTERNAL
#include "h5s_tractio.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zip.h>

#include "h5s_bytes.h"
#include "h5s_error.h"

#define TRX_STREAM_BUF (64u << 10)
#define TRX_GROUP_CHUNK 65536u
#define TRX_SMALL_MAX (1u << 20) /* header.json and each dpg array */

/* ------------------------------------------------------------- common header */

void h5s_tract_header_init(h5s_tract_header *h)
{
    memset(h, 0, sizeof *h);
    for (int i = 0; i < 4; i++)
        h->voxel_to_rasmm[i][i] = 1.0;
    for (int i = 0; i < 3; i++) {
        h->dimensions[i] = 1;
        h->voxel_sizes[i] = 1.0f;
    }
    memcpy(h->voxel_order, "RAS", 4);
    h->nb_streamlines = -1;
    h->nb_vertices = -1;
    h->positions_dtype = H5S_FLOAT32;
}

static int layout_fields(h5s_tract_field *f, size_t n, uint32_t *width, const char *what)
{
    uint32_t col = 0;
    for (size_t i = 0; i < n; i++) {
        if (!f[i].ncols || !h5s_dtype_size(f[i].dtype) || !f[i].name[0] ||
            !memchr(f[i].name, '\0', sizeof f[i].name))
            return h5s_error_set(H5S_EINVAL, "%s field %zu: bad name, dtype or ncols", what, i);
        if (f[i].ncols > UINT32_MAX - col)
            return h5s_error_set(H5S_EINVAL, "%s field %zu: more than 2^32-1 columns in all", what,
                                 i);
        f[i].col = col;
        col += f[i].ncols;
    }
    *width = col;
    return 0;
}

int h5s_tract_header_layout(h5s_tract_header *h)
{
    if (!h)
        return h5s_error_set(H5S_EINVAL, "h5s_tract_header_layout: NULL header");
    int rc = layout_fields(h->dps, h->n_dps, &h->dps_width, "dps");
    return rc ? rc : layout_fields(h->dpv, h->n_dpv, &h->dpv_width, "dpv");
}

void h5s_tract_header_free(h5s_tract_header *h)
{
    free(h->dps);
    free(h->dpv);
    free(h->groups);
    for (size_t i = 0; i < h->n_dpg; i++) {
        free(h->dpg[i].values);
        free(h->dpg[i].raw);
    }
    free(h->dpg);
    h->dps = h->dpv = NULL;
    h->groups = NULL;
    h->dpg = NULL;
    h->n_dps = h->n_dpv = h->n_groups = h->n_dpg = 0;
}

/* Little-endian element loads, whatever the host. */
#define TRX_CONVERT(DST_T, SRC_T, LOAD)                                                            \
    for (size_t i = 0; i < n; i++) {                                                               \
        SRC_T v;                                                                                   \
        LOAD;                                                                                      \
        dst[i] = (DST_T)v;                                                                         \
    }

#define TRX_CONVERT_ALL(DST_T)                                                                     \
    const unsigned char *s = src;                                                                  \
    switch (dtype) {                                                                               \
    case H5S_INT8:                                                                                 \
        TRX_CONVERT(DST_T, int8_t, v = (int8_t)s[i]) break;                                        \
    case H5S_UINT8:                                                                                \
        TRX_CONVERT(DST_T, uint8_t, v = s[i]) break;                                               \
    case H5S_INT16:                                                                                \
        TRX_CONVERT(DST_T, int16_t, v = (int16_t)(uint16_t)(s[2 * i] | s[2 * i + 1] << 8)) break;  \
    case H5S_UINT16:                                                                               \
        TRX_CONVERT(DST_T, uint16_t, v = (uint16_t)(s[2 * i] | s[2 * i + 1] << 8)) break;          \
    case H5S_INT32:                                                                                \
        TRX_CONVERT(DST_T, int32_t, v = (int32_t)h5s_bytes_le32(s + 4 * i)) break;                 \
    case H5S_UINT32:                                                                               \
        TRX_CONVERT(DST_T, uint32_t, v = h5s_bytes_le32(s + 4 * i)) break;                         \
    case H5S_INT64:                                                                                \
        TRX_CONVERT(DST_T, int64_t, v = (int64_t)h5s_bytes_le64(s + 8 * i)) break;                 \
    case H5S_UINT64:                                                                               \
        TRX_CONVERT(DST_T, uint64_t, v = h5s_bytes_le64(s + 8 * i)) break;                         \
    case H5S_FLOAT32:                                                                              \
        TRX_CONVERT(DST_T, float, uint32_t u = h5s_bytes_le32(s + 4 * i); memcpy(&v, &u, 4))       \
        break;                                                                                     \
    case H5S_FLOAT64:                                                                              \
        TRX_CONVERT(DST_T, double, uint64_t u = h5s_bytes_le64(s + 8 * i); memcpy(&v, &u, 8))      \
        break;                                                                                     \
    case H5S_FLOAT16:                                                                              \
        TRX_CONVERT(DST_T, float, v = h5s_half_to_float((uint16_t)(s[2 * i] | s[2 * i + 1] << 8))) \
        break;                                                                                     \
    default:                                                                                       \
        for (size_t i = 0; i < n; i++)                                                             \
            dst[i] = 0;                                                                            \
    }

void h5s_tract_to_f64(double *dst, const void *src, size_t n, h5s_dtype dtype)
{
    TRX_CONVERT_ALL(double)
}

void h5s_tract_to_f32(float *dst, const void *src, size_t n, h5s_dtype dtype)
{
    TRX_CONVERT_ALL(float)
}

/* ---------------------------------------------------------------- entry names */

static int is_int_dtype(h5s_dtype d)
{
    return d >= H5S_INT8 && d <= H5S_UINT64;
}

int h5s_trx_entry_parse(const char *entry, h5s_trx_entry_kind *kind, char *group, char *name,
                        uint32_t *ncols, h5s_dtype *dtype)
{
    size_t len = strlen(entry);
    if (!len || entry[len - 1] == '/' || (len >= 5 && strcmp(entry + len - 5, ".json") == 0))
        return H5S_ENOTFOUND;
    const char *base = entry;
    group[0] = '\0';
    if (strncmp(entry, "dps/", 4) == 0) {
        *kind = H5S_TRX_DPS;
        base = entry + 4;
    } else if (strncmp(entry, "dpv/", 4) == 0) {
        *kind = H5S_TRX_DPV;
        base = entry + 4;
    } else if (strncmp(entry, "groups/", 7) == 0) {
        *kind = H5S_TRX_GROUP;
        base = entry + 7;
    } else if (strncmp(entry, "dpg/", 4) == 0) {
        *kind = H5S_TRX_DPG;
        const char *g = entry + 4, *slash = strchr(g, '/');
        if (!slash || slash == g || (size_t)(slash - g) >= H5S_TRACT_NAME_MAX)
            return h5s_error_set(H5S_EFORMAT, "TRX entry \"%s\": dpg entry without a group", entry);
        memcpy(group, g, (size_t)(slash - g));
        group[slash - g] = '\0';
        base = slash + 1;
    } else if (strncmp(entry, "positions.", 10) == 0) {
        *kind = H5S_TRX_POSITIONS;
    } else if (strncmp(entry, "offsets.", 8) == 0) {
        *kind = H5S_TRX_OFFSETS;
    } else {
        return H5S_ENOTFOUND;
    }
    if (strchr(base, '/'))
        return h5s_error_set(H5S_EFORMAT, "TRX entry \"%s\": unexpected sub-folder", entry);
    const char *dot = strrchr(base, '.');
    if (!dot || dot == base)
        return h5s_error_set(H5S_EFORMAT, "TRX entry \"%s\": no .DTYPE suffix", entry);
    if (h5s_dtype_parse(dtype, dot + 1) != 0 || *dtype == H5S_DTYPE_INVALID)
        return h5s_error_set(H5S_EFORMAT, "TRX entry \"%s\": unknown dtype \"%s\"", entry, dot + 1);
    const char *name_end = dot;
    *ncols = 1;
    const char *dot2 = NULL;
    for (const char *p = dot - 1; p > base; p--)
        if (*p == '.') {
            dot2 = p;
            break;
        }
    if (dot2 && dot2 + 1 < dot) {
        int digits = 1;
        for (const char *p = dot2 + 1; p < dot; p++)
            digits &= *p >= '0' && *p <= '9';
        if (digits) {
            unsigned long k = strtoul(dot2 + 1, NULL, 10);
            if (k == 0 || k > 1000000)
                return h5s_error_set(H5S_EFORMAT, "TRX entry \"%s\": bad column count", entry);
            *ncols = (uint32_t)k;
            name_end = dot2;
        }
    }
    size_t nlen = (size_t)(name_end - base);
    if (nlen >= H5S_TRACT_NAME_MAX)
        return h5s_error_set(H5S_EFORMAT, "TRX entry \"%s\": name too long", entry);
    memcpy(name, base, nlen);
    name[nlen] = '\0';
    if (*kind == H5S_TRX_POSITIONS && (strcmp(name, "positions") || *ncols != 3))
        return h5s_error_set(H5S_EFORMAT, "TRX entry \"%s\": positions must be positions.3.DTYPE",
                             entry);
    if (*kind == H5S_TRX_OFFSETS && (strcmp(name, "offsets") || *ncols != 1))
        return h5s_error_set(H5S_EFORMAT, "TRX entry \"%s\": offsets must be offsets.DTYPE", entry);
    if ((*kind == H5S_TRX_OFFSETS || *kind == H5S_TRX_GROUP) && !is_int_dtype(*dtype))
        return h5s_error_set(H5S_EFORMAT, "TRX entry \"%s\": must have an integer dtype", entry);
    if (*kind == H5S_TRX_POSITIONS && *dtype != H5S_FLOAT16 && *dtype != H5S_FLOAT32 &&
        *dtype != H5S_FLOAT64)
        return h5s_error_set(H5S_EFORMAT, "TRX entry \"%s\": positions must be float", entry);
    return 0;
}

/* -------------------------------------------------------------------- reader */

typedef struct {
    h5s_trx_entry_kind kind;
    char group[H5S_TRACT_NAME_MAX];
    char name[H5S_TRACT_NAME_MAX];
    uint32_t ncols;
    h5s_dtype dtype;
    char *path; /* entry name inside the archive or folder */
    zip_int64_t index;
    uint64_t size;
} trx_entry;

typedef struct {
    const char *trx;   /* archive or folder, for messages */
    const char *entry; /* entry name, for messages */
    zip_file_t *zf;
    FILE *fp;
    uint64_t size, done; /* bytes of the entry; bytes handed out */
    unsigned char *buf;
    size_t len, pos;
} trx_stream;

typedef struct {
    struct h5s_tract_reader base;
    char *path;
    int is_dir;
    uint64_t archive_size; /* bytes of the zip archive */
    zip_t *za;
    trx_entry *entries;
    size_t n_entries;
    const trx_entry *positions, *offsets;
    size_t *dps_entry, *dpv_entry, *group_entry; /* indices into entries */
    trx_stream pos_s, off_s, *dps_s, *dpv_s;
    uint64_t ns, nv, n_offsets, index, cur;
    unsigned char *scratch;
    size_t scratch_cap;
    float *points;
    double *dps, *dpv, *dpv_tmp;
    size_t cap_points;
} trx_reader;

static int stream_open(trx_reader *t, trx_stream *s, const trx_entry *e)
{
    memset(s, 0, sizeof *s);
    s->trx = t->path;
    s->entry = e->path;
    s->size = e->size;
    s->buf = malloc(TRX_STREAM_BUF);
    if (!s->buf)
        return h5s_error_set(H5S_ENOMEM, "%s: no memory", t->path);
    if (t->is_dir) {
        size_t n = strlen(t->path) + strlen(e->path) + 2;
        char *full = malloc(n);
        if (!full)
            return h5s_error_set(H5S_ENOMEM, "%s: no memory", t->path);
        snprintf(full, n, "%s/%s", t->path, e->path);
        s->fp = fopen(full, "rb");
        free(full);
        if (!s->fp)
            return h5s_error_set(H5S_EIO, "%s: entry %s: cannot open: %s", t->path, e->path,
                                 strerror(errno));
    } else {
        s->zf = zip_fopen_index(t->za, (zip_uint64_t)e->index, 0);
        if (!s->zf)
            return h5s_error_set(H5S_EIO, "%s: entry %s: cannot open: %s", t->path, e->path,
                                 zip_strerror(t->za));
    }
    return 0;
}

static void stream_close(trx_stream *s)
{
    if (s->zf)
        zip_fclose(s->zf);
    if (s->fp)
        fclose(s->fp);
    free(s->buf);
    memset(s, 0, sizeof *s);
}

/* Reads exactly n bytes of the entry (the caller checked they exist by its size). */
static int stream_read(trx_stream *s, void *dst, size_t n)
{
    unsigned char *d = dst;
    while (n) {
        if (s->pos == s->len) {
            uint64_t left = s->size - s->done;
            size_t want = left < TRX_STREAM_BUF ? (size_t)left : TRX_STREAM_BUF;
            if (want == 0)
                return h5s_error_set(H5S_EFORMAT, "%s: entry %s: byte %llu: entry ends early",
                                     s->trx, s->entry, (unsigned long long)s->done);
            zip_int64_t got =
                s->zf ? zip_fread(s->zf, s->buf, want) : (zip_int64_t)fread(s->buf, 1, want, s->fp);
            if (got <= 0)
                return h5s_error_set(s->zf ? H5S_EFORMAT : H5S_EIO,
                                     "%s: entry %s: byte %llu: read failed%s%s", s->trx, s->entry,
                                     (unsigned long long)s->done, s->zf ? ": " : "",
                                     s->zf ? zip_file_strerror(s->zf) : "");
            s->len = (size_t)got;
            s->pos = 0;
        }
        size_t k = s->len - s->pos < n ? s->len - s->pos : n;
        memcpy(d, s->buf + s->pos, k);
        s->pos += k;
        s->done += k;
        d += k;
        n -= k;
    }
    return 0;
}

/* Reads a whole small entry into memory (header.json, dpg). */
static int read_small(trx_reader *t, const trx_entry *e, unsigned char **out)
{
    *out = NULL;
    if (e->size > TRX_SMALL_MAX)
        return h5s_error_set(H5S_EFORMAT, "%s: entry %s: %llu bytes, more than the %u expected",
                             t->path, e->path, (unsigned long long)e->size, TRX_SMALL_MAX);
    trx_stream s;
    unsigned char *b = malloc((size_t)e->size + 1);
    if (!b)
        return h5s_error_set(H5S_ENOMEM, "%s: no memory", t->path);
    int rc = stream_open(t, &s, e);
    if (!rc)
        rc = stream_read(&s, b, (size_t)e->size);
    stream_close(&s);
    if (rc) {
        free(b);
        return rc;
    }
    b[e->size] = '\0';
    *out = b;
    return 0;
}

/* Deflate gives at most 1032 bytes per compressed byte (the format's limit: a 258-byte
   match in fewer than 2 bits). */
#define TRX_DEFLATE_MAX_RATIO 1032u

/*
 * Adds a TRX entry of the archive or folder (others are ignored). zip is NULL for a file
 * of a folder, whose size is its real length; for an entry of an archive it is the
 * directory record, whose size is only a claim until the entry is read: it is checked
 * against the compressed bytes first (stored: as many, within the archive; deflate: at
 * most 1032 to 1; no other method is TRX), since buffers are sized from it.
 */
static int add_entry(trx_reader *t, const char *path, zip_int64_t index, uint64_t size,
                     const zip_stat_t *zip)
{
    trx_entry e;
    memset(&e, 0, sizeof e);
    int rc = strcmp(path, "header.json") == 0
                 ? 0
                 : h5s_trx_entry_parse(path, &e.kind, e.group, e.name, &e.ncols, &e.dtype);
    if (rc == H5S_ENOTFOUND)
        return 0; /* other *.json, folders, files TRX does not define: ignored */
    if (rc)
        return h5s_error_prefix(rc, "%s", t->path);
    if (strcmp(path, "header.json") == 0)
        e.kind = (h5s_trx_entry_kind)-1;
    if (zip) {
        if (!(zip->valid & ZIP_STAT_COMP_SIZE) || !(zip->valid & ZIP_STAT_COMP_METHOD))
            return h5s_error_set(H5S_EFORMAT,
                                 "%s: entry %s: directory record without its "
                                 "compressed size or method",
                                 t->path, path);
        if (zip->comp_method != ZIP_CM_STORE && zip->comp_method != ZIP_CM_DEFLATE)
            return h5s_error_set(H5S_EFORMAT,
                                 "%s: entry %s: compression method %d (TRX entries are stored "
                                 "or deflate)",
                                 t->path, path, (int)zip->comp_method);
        uint64_t most = zip->comp_method == ZIP_CM_STORE
                            ? zip->comp_size
                            : (zip->comp_size + 1) * TRX_DEFLATE_MAX_RATIO;
        if (zip->comp_size > t->archive_size || size > most)
            return h5s_error_set(H5S_EFORMAT,
                                 "%s: entry %s: the directory says %llu bytes from %llu %s bytes "
                                 "(in an archive of %llu bytes)",
                                 t->path, path, (unsigned long long)size,
                                 (unsigned long long)zip->comp_size,
                                 zip->comp_method == ZIP_CM_STORE ? "stored" : "deflated",
                                 (unsigned long long)t->archive_size);
    }
    trx_entry *n = realloc(t->entries, (t->n_entries + 1) * sizeof *n);
    if (!n)
        return h5s_error_set(H5S_ENOMEM, "%s: no memory", t->path);
    t->entries = n;
    e.path = strdup(path);
    if (!e.path)
        return h5s_error_set(H5S_ENOMEM, "%s: no memory", t->path);
    e.index = index;
    e.size = size;
    t->entries[t->n_entries++] = e;
    return 0;
}

static int list_dir(trx_reader *t, const char *rel, int depth)
{
    size_t n = strlen(t->path) + strlen(rel) + 2;
    char *full = malloc(n);
    if (!full)
        return h5s_error_set(H5S_ENOMEM, "%s: no memory", t->path);
    snprintf(full, n, "%s%s%s", t->path, rel[0] ? "/" : "", rel);
    DIR *d = opendir(full);
    free(full);
    if (!d)
        return h5s_error_set(H5S_EIO, "%s: cannot list %s: %s", t->path, rel[0] ? rel : ".",
                             strerror(errno));
    int rc = 0;
    struct dirent *de;
    while (!rc && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char sub[3 * H5S_TRACT_NAME_MAX + 16];
        if ((size_t)snprintf(sub, sizeof sub, "%s%s%s", rel, rel[0] ? "/" : "", de->d_name) >=
            sizeof sub)
            continue;
        size_t fn = strlen(t->path) + strlen(sub) + 2;
        char *f = malloc(fn);
        if (!f) {
            rc = h5s_error_set(H5S_ENOMEM, "%s: no memory", t->path);
            break;
        }
        snprintf(f, fn, "%s/%s", t->path, sub);
        struct stat st;
        int ok = stat(f, &st) == 0;
        free(f);
        if (!ok)
            continue;
        if (S_ISDIR(st.st_mode)) {
            if (depth < 2)
                rc = list_dir(t, sub, depth + 1);
        } else if (S_ISREG(st.st_mode)) {
            rc = add_entry(t, sub, -1, (uint64_t)st.st_size, NULL);
        }
    }
    closedir(d);
    return rc;
}

static int list_zip(trx_reader *t)
{
    int err = 0;
    t->za = zip_open(t->path, ZIP_RDONLY, &err);
    if (!t->za) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, err);
        int rc = h5s_error_set(err == ZIP_ER_OPEN || err == ZIP_ER_READ ? H5S_EIO : H5S_EFORMAT,
                               "%s: byte 0: not a readable zip archive: %s", t->path,
                               zip_error_strerror(&ze));
        zip_error_fini(&ze);
        return rc;
    }
    zip_int64_t n = zip_get_num_entries(t->za, 0);
    for (zip_int64_t i = 0; i < n; i++) {
        zip_stat_t st;
        if (zip_stat_index(t->za, (zip_uint64_t)i, 0, &st) != 0 || !(st.valid & ZIP_STAT_NAME) ||
            !(st.valid & ZIP_STAT_SIZE))
            return h5s_error_set(H5S_EFORMAT, "%s: zip entry %lld: unreadable directory record",
                                 t->path, (long long)i);
        int rc = add_entry(t, st.name, i, st.size, &st);
        if (rc)
            return rc;
    }
    return 0;
}

static int json_int(const json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return 0;
    }
    if (json_is_real(v)) { /* some writers emit 1000.0 */
        double d = json_real_value(v);
        if (d == floor(d) && fabs(d) < 9e15) {
            *out = (int64_t)d;
            return 0;
        }
    }
    return -1;
}

static int parse_header_json(trx_reader *t, const trx_entry *e)
{
    unsigned char *text;
    int rc = read_small(t, e, &text);
    if (rc)
        return rc;
    json_error_t je;
    json_t *root = json_loadb((const char *)text, (size_t)e->size, 0, &je);
    free(text);
    if (!root)
        return h5s_error_set(H5S_EFORMAT, "%s: entry header.json: byte %d: %s", t->path,
                             je.position, je.text);
    h5s_tract_header *h = &t->base.header;
    int64_t ns, nv;
    const json_t *aff = json_object_get(root, "VOXEL_TO_RASMM");
    const json_t *dims = json_object_get(root, "DIMENSIONS");
    if (json_int(json_object_get(root, "NB_STREAMLINES"), &ns) || ns < 0 ||
        json_int(json_object_get(root, "NB_VERTICES"), &nv) || nv < 0) {
        rc = h5s_error_set(H5S_EFORMAT,
                           "%s: entry header.json: NB_STREAMLINES and NB_VERTICES must be "
                           "integers >= 0",
                           t->path);
        goto done;
    }
    h->nb_streamlines = ns;
    h->nb_vertices = nv;
    if (aff) {
        if (!json_is_array(aff) || json_array_size(aff) != 4) {
            rc = h5s_error_set(H5S_EFORMAT, "%s: entry header.json: VOXEL_TO_RASMM is not 4 x 4",
                               t->path);
            goto done;
        }
        for (size_t i = 0; i < 4 && !rc; i++) {
            const json_t *row = json_array_get(aff, i);
            if (!json_is_array(row) || json_array_size(row) != 4) {
                rc = h5s_error_set(H5S_EFORMAT,
                                   "%s: entry header.json: VOXEL_TO_RASMM row %zu is not 4 numbers",
                                   t->path, i);
                break;
            }
            for (size_t j = 0; j < 4 && !rc; j++) {
                const json_t *v = json_array_get(row, j);
                if (!json_is_number(v))
                    rc = h5s_error_set(H5S_EFORMAT,
                                       "%s: entry header.json: VOXEL_TO_RASMM[%zu][%zu] is not a "
                                       "number",
                                       t->path, i, j);
                else
                    h->voxel_to_rasmm[i][j] = json_number_value(v);
            }
        }
        if (rc)
            goto done;
    }
    if (dims) {
        int64_t d[3];
        if (!json_is_array(dims) || json_array_size(dims) != 3 ||
            json_int(json_array_get(dims, 0), &d[0]) || json_int(json_array_get(dims, 1), &d[1]) ||
            json_int(json_array_get(dims, 2), &d[2]) || d[0] < 0 || d[1] < 0 || d[2] < 0 ||
            d[0] > INT32_MAX || d[1] > INT32_MAX || d[2] > INT32_MAX) {
            rc = h5s_error_set(H5S_EFORMAT, "%s: entry header.json: DIMENSIONS is not 3 integers",
                               t->path);
            goto done;
        }
        for (int i = 0; i < 3; i++)
            h->dimensions[i] = (int32_t)d[i];
    }
    h5s_tract_header_derive(h);
done:
    json_decref(root);
    return rc;
}

/* Checks sizes, builds the header's fields, groups and dpg. */
static int trx_build(trx_reader *t)
{
    h5s_tract_header *h = &t->base.header;
    const trx_entry *hj = NULL;
    size_t nd = 0, nv = 0, ng = 0, npg = 0;
    for (size_t i = 0; i < t->n_entries; i++) {
        const trx_entry *e = &t->entries[i];
        if ((int)e->kind == -1) {
            hj = e;
            continue;
        }
        if ((e->kind == H5S_TRX_POSITIONS && t->positions) ||
            (e->kind == H5S_TRX_OFFSETS && t->offsets))
            return h5s_error_set(H5S_EFORMAT, "%s: entry %s: a second %s array", t->path, e->path,
                                 e->kind == H5S_TRX_POSITIONS ? "positions" : "offsets");
        if (e->kind == H5S_TRX_POSITIONS)
            t->positions = e;
        else if (e->kind == H5S_TRX_OFFSETS)
            t->offsets = e;
        nd += e->kind == H5S_TRX_DPS;
        nv += e->kind == H5S_TRX_DPV;
        ng += e->kind == H5S_TRX_GROUP;
        npg += e->kind == H5S_TRX_DPG;
    }
    if (!hj)
        return h5s_error_set(H5S_EFORMAT, "%s: no header.json entry", t->path);
    if (!t->positions || !t->offsets)
        return h5s_error_set(H5S_EFORMAT, "%s: no %s entry", t->path,
                             t->positions ? "offsets.DTYPE" : "positions.3.DTYPE");
    int rc = parse_header_json(t, hj);
    if (rc)
        return rc;
    t->ns = (uint64_t)h->nb_streamlines;
    t->nv = (uint64_t)h->nb_vertices;
    h->positions_dtype = t->positions->dtype;
    size_t psz = h5s_dtype_size(t->positions->dtype), osz = h5s_dtype_size(t->offsets->dtype);
    if (t->nv > UINT64_MAX / 3 / psz || t->positions->size != t->nv * 3 * psz)
        return h5s_error_set(H5S_EFORMAT, "%s: entry %s: %llu bytes, NB_VERTICES %llu needs %llu",
                             t->path, t->positions->path, (unsigned long long)t->positions->size,
                             (unsigned long long)t->nv, (unsigned long long)(t->nv * 3 * psz));
    t->n_offsets = t->offsets->size / osz;
    if (t->offsets->size % osz || (t->n_offsets != t->ns && t->n_offsets != t->ns + 1))
        return h5s_error_set(H5S_EFORMAT,
                             "%s: entry %s: %llu bytes, NB_STREAMLINES %llu needs %llu values "
                             "(or %llu without the final offset)",
                             t->path, t->offsets->path, (unsigned long long)t->offsets->size,
                             (unsigned long long)t->ns, (unsigned long long)(t->ns + 1),
                             (unsigned long long)t->ns);
    h->dps = calloc(nd + 1, sizeof *h->dps);
    h->dpv = calloc(nv + 1, sizeof *h->dpv);
    h->groups = calloc(ng + 1, sizeof *h->groups);
    h->dpg = calloc(npg + 1, sizeof *h->dpg);
    t->dps_entry = calloc(nd + 1, sizeof *t->dps_entry);
    t->dpv_entry = calloc(nv + 1, sizeof *t->dpv_entry);
    t->group_entry = calloc(ng + 1, sizeof *t->group_entry);
    if (!h->dps || !h->dpv || !h->groups || !h->dpg || !t->dps_entry || !t->dpv_entry ||
        !t->group_entry)
        return h5s_error_set(H5S_ENOMEM, "%s: no memory", t->path);
    for (size_t i = 0; i < t->n_entries; i++) {
        const trx_entry *e = &t->entries[i];
        size_t sz = h5s_dtype_size(e->dtype);
        if ((int)e->kind == -1)
            continue;
        if (e->kind == H5S_TRX_DPS || e->kind == H5S_TRX_DPV) {
            uint64_t rows = e->kind == H5S_TRX_DPS ? t->ns : t->nv;
            if (rows > UINT64_MAX / sz / e->ncols || e->size != rows * e->ncols * sz)
                return h5s_error_set(
                    H5S_EFORMAT, "%s: entry %s: %llu bytes, %llu rows of %u columns need %llu",
                    t->path, e->path, (unsigned long long)e->size, (unsigned long long)rows,
                    e->ncols, (unsigned long long)(rows * e->ncols * sz));
            h5s_tract_field *f = e->kind == H5S_TRX_DPS ? &h->dps[h->n_dps] : &h->dpv[h->n_dpv];
            memcpy(f->name, e->name, sizeof f->name);
            f->dtype = e->dtype;
            f->ncols = e->ncols;
            if (e->kind == H5S_TRX_DPS)
                t->dps_entry[h->n_dps++] = i;
            else
                t->dpv_entry[h->n_dpv++] = i;
        } else if (e->kind == H5S_TRX_GROUP) {
            if (e->size % sz || e->ncols != 1)
                return h5s_error_set(
                    H5S_EFORMAT, "%s: entry %s: %llu bytes is not a whole number of %s", t->path,
                    e->path, (unsigned long long)e->size, h5s_dtype_name(e->dtype));
            memcpy(h->groups[h->n_groups].name, e->name, H5S_TRACT_NAME_MAX);
            h->groups[h->n_groups].count = (int64_t)(e->size / sz);
            t->group_entry[h->n_groups++] = i;
        }
    }
    rc = h5s_tract_header_layout(h);
    if (rc)
        return h5s_error_prefix(rc, "%s", t->path);
    for (size_t i = 0; i < t->n_entries; i++) {
        const trx_entry *e = &t->entries[i];
        if ((int)e->kind == -1 || e->kind != H5S_TRX_DPG)
            continue;
        size_t g = 0, sz = h5s_dtype_size(e->dtype);
        while (g < h->n_groups && strcmp(h->groups[g].name, e->group) != 0)
            g++;
        if (g == h->n_groups)
            return h5s_error_set(H5S_EFORMAT, "%s: entry %s: no group \"%s\" for this dpg", t->path,
                                 e->path, e->group);
        if (e->size % (sz * e->ncols))
            return h5s_error_set(H5S_EFORMAT, "%s: entry %s: %llu bytes is not rows of %u %s",
                                 t->path, e->path, (unsigned long long)e->size, e->ncols,
                                 h5s_dtype_name(e->dtype));
        h5s_tract_dpg *d = &h->dpg[h->n_dpg];
        unsigned char *raw;
        rc = read_small(t, e, &raw);
        if (rc)
            return rc;
        d->raw = raw;
        h->n_dpg++;
        memcpy(d->group, e->group, sizeof d->group);
        memcpy(d->name, e->name, sizeof d->name);
        d->dtype = e->dtype;
        d->ncols = e->ncols;
        d->n_values = (size_t)e->size / sz;
        d->values = malloc((d->n_values + 1) * sizeof(double));
        if (!d->values)
            return h5s_error_set(H5S_ENOMEM, "%s: no memory", t->path);
        h5s_tract_to_f64(d->values, raw, d->n_values, e->dtype);
    }
    return 0;
}

static int trx_open_streams(trx_reader *t)
{
    h5s_tract_header *h = &t->base.header;
    int rc = stream_open(t, &t->pos_s, t->positions);
    if (!rc)
        rc = stream_open(t, &t->off_s, t->offsets);
    if (rc)
        return rc;
    t->dps_s = calloc(h->n_dps + 1, sizeof *t->dps_s);
    t->dpv_s = calloc(h->n_dpv + 1, sizeof *t->dpv_s);
    /* Without streamlines no dps row is read, and the fields' widths are not bounded by
       the sizes of their (empty) entries. */
    t->dps = calloc(t->ns ? (size_t)h->dps_width + 1 : 1, sizeof *t->dps);
    if (!t->dps_s || !t->dpv_s || !t->dps)
        return h5s_error_set(H5S_ENOMEM, "%s: no memory", t->path);
    for (size_t i = 0; i < h->n_dps && !rc; i++)
        rc = stream_open(t, &t->dps_s[i], &t->entries[t->dps_entry[i]]);
    for (size_t i = 0; i < h->n_dpv && !rc; i++)
        rc = stream_open(t, &t->dpv_s[i], &t->entries[t->dpv_entry[i]]);
    return rc;
}

/* Reads one offset value and widens it. */
static int read_offset(trx_reader *t, uint64_t item, uint64_t *out)
{
    unsigned char b[8];
    h5s_dtype d = t->offsets->dtype;
    int rc = stream_read(&t->off_s, b, h5s_dtype_size(d));
    if (rc)
        return rc;
    double v;
    if (d == H5S_UINT64) {
        *out = h5s_bytes_le64(b);
        return 0;
    }
    if (d == H5S_INT64) {
        int64_t s = (int64_t)h5s_bytes_le64(b);
        if (s < 0)
            return h5s_error_set(H5S_EFORMAT, "%s: entry %s: item %llu: offset %lld < 0", t->path,
                                 t->offsets->path, (unsigned long long)item, (long long)s);
        *out = (uint64_t)s;
        return 0;
    }
    h5s_tract_to_f64(&v, b, 1, d);
    if (v < 0)
        return h5s_error_set(H5S_EFORMAT, "%s: entry %s: item %llu: offset %.0f < 0", t->path,
                             t->offsets->path, (unsigned long long)item, v);
    *out = (uint64_t)v;
    return 0;
}

/* The room a buffer grows to for need items, from cap: doubled until it fits, or need
   itself once doubling would overflow. */
static size_t grown(size_t cap, size_t need)
{
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : 2 * cap;
    return cap;
}

static int scratch_reserve(trx_reader *t, size_t bytes)
{
    if (bytes <= t->scratch_cap)
        return 0;
    size_t cap = grown(t->scratch_cap ? t->scratch_cap : 65536, bytes);
    unsigned char *s = realloc(t->scratch, cap);
    if (!s)
        return h5s_error_set(H5S_ENOMEM, "%s: no memory", t->path);
    t->scratch = s;
    t->scratch_cap = cap;
    return 0;
}

static int trx_next(h5s_tract_reader *r, h5s_tract_streamline *out)
{
    trx_reader *t = (trx_reader *)r;
    h5s_tract_header *h = &t->base.header;
    if (t->index >= t->ns)
        return 0;
    int rc;
    if (t->index == 0) {
        uint64_t first = 0;
        if (t->ns > 0 && (rc = read_offset(t, 0, &first)) != 0)
            return rc;
        if (first != 0)
            return h5s_error_set(H5S_EFORMAT, "%s: entry %s: item 0: first offset is %llu, not 0",
                                 t->path, t->offsets->path, (unsigned long long)first);
        t->cur = 0;
    }
    uint64_t end = t->nv;
    if (t->index + 1 < t->n_offsets && (rc = read_offset(t, t->index + 1, &end)) != 0)
        return rc;
    if (end < t->cur || end > t->nv)
        return h5s_error_set(H5S_EFORMAT,
                             "%s: entry %s: item %llu: offset %llu outside [%llu, NB_VERTICES "
                             "%llu]",
                             t->path, t->offsets->path, (unsigned long long)(t->index + 1),
                             (unsigned long long)end, (unsigned long long)t->cur,
                             (unsigned long long)t->nv);
    if (t->index + 1 == t->ns && end != t->nv)
        return h5s_error_set(H5S_EFORMAT,
                             "%s: entry %s: item %llu: last offset %llu is not NB_VERTICES %llu",
                             t->path, t->offsets->path, (unsigned long long)(t->index + 1),
                             (unsigned long long)end, (unsigned long long)t->nv);
    /* n and the sizes below are bounded by the entries' sizes, which list_zip checked
       against the archive; the multiplications are checked for 32-bit hosts. The room
       starts at the first streamline's points: one point is dpv_width values. */
    uint64_t n64 = end - t->cur;
    size_t psz = h5s_dtype_size(t->positions->dtype);
    size_t per_point = 3 * sizeof(float) + 2 * (size_t)h->dpv_width * sizeof(double);
    if (n64 > SIZE_MAX / 3 / psz || n64 > SIZE_MAX / per_point)
        return h5s_error_set(H5S_ENOMEM, "%s: no memory for streamline %llu (%llu points)", t->path,
                             (unsigned long long)t->index, (unsigned long long)n64);
    size_t n = (size_t)n64;
    if (n > t->cap_points) {
        size_t cap = grown(t->cap_points ? t->cap_points : n, n);
        if (cap > SIZE_MAX / per_point)
            cap = n;
        float *p = realloc(t->points, cap * 3 * sizeof(float));
        if (p)
            t->points = p;
        double *v = h->dpv_width ? realloc(t->dpv, cap * h->dpv_width * sizeof(double)) : t->dpv;
        if (v)
            t->dpv = v;
        double *vt =
            h->dpv_width ? realloc(t->dpv_tmp, cap * h->dpv_width * sizeof(double)) : t->dpv_tmp;
        if (vt)
            t->dpv_tmp = vt;
        if (!p || (h->dpv_width && (!v || !vt)))
            return h5s_error_set(H5S_ENOMEM, "%s: no memory for streamline %llu (%zu points)",
                                 t->path, (unsigned long long)t->index, n);
        t->cap_points = cap;
    }
    if ((rc = scratch_reserve(t, n * 3 * psz)) != 0 ||
        (rc = stream_read(&t->pos_s, t->scratch, n * 3 * psz)) != 0)
        return rc;
    h5s_tract_to_f32(t->points, t->scratch, n * 3, t->positions->dtype);
    for (size_t f = 0; f < h->n_dps; f++) {
        const h5s_tract_field *fd = &h->dps[f];
        size_t bytes = (size_t)fd->ncols * h5s_dtype_size(fd->dtype);
        if ((rc = scratch_reserve(t, bytes)) != 0 ||
            (rc = stream_read(&t->dps_s[f], t->scratch, bytes)) != 0)
            return rc;
        h5s_tract_to_f64(t->dps + fd->col, t->scratch, fd->ncols, fd->dtype);
    }
    for (size_t f = 0; f < h->n_dpv; f++) {
        const h5s_tract_field *fd = &h->dpv[f];
        size_t k = fd->ncols, bytes = n * k * h5s_dtype_size(fd->dtype);
        if ((rc = scratch_reserve(t, bytes)) != 0 ||
            (rc = stream_read(&t->dpv_s[f], t->scratch, bytes)) != 0)
            return rc;
        if (h->n_dpv == 1) {
            h5s_tract_to_f64(t->dpv, t->scratch, n * k, fd->dtype);
            continue;
        }
        h5s_tract_to_f64(t->dpv_tmp, t->scratch, n * k, fd->dtype);
        for (size_t v = 0; v < n; v++)
            memcpy(t->dpv + v * h->dpv_width + fd->col, t->dpv_tmp + v * k, k * sizeof(double));
    }
    out->index = t->index++;
    out->n_points = n;
    out->points = t->points;
    out->dps = h->dps_width ? t->dps : NULL;
    out->dpv = h->dpv_width ? t->dpv : NULL;
    t->cur = end;
    return 1;
}

static int trx_groups(h5s_tract_reader *r, h5s_tract_group_fn fn, void *payload)
{
    trx_reader *t = (trx_reader *)r;
    h5s_tract_header *h = &t->base.header;
    uint32_t *idx = malloc(TRX_GROUP_CHUNK * sizeof *idx);
    unsigned char *raw = malloc(TRX_GROUP_CHUNK * 8u);
    double *tmp = malloc(TRX_GROUP_CHUNK * sizeof *tmp);
    int rc = 0;
    if (!idx || !raw || !tmp)
        rc = h5s_error_set(H5S_ENOMEM, "%s: no memory", t->path);
    for (size_t g = 0; g < h->n_groups && !rc; g++) {
        const trx_entry *e = &t->entries[t->group_entry[g]];
        size_t sz = h5s_dtype_size(e->dtype);
        uint64_t total = e->size / sz, done = 0;
        trx_stream s;
        rc = stream_open(t, &s, e);
        while (!rc && done < total) {
            size_t n = total - done < TRX_GROUP_CHUNK ? (size_t)(total - done) : TRX_GROUP_CHUNK;
            rc = stream_read(&s, raw, n * sz);
            if (rc)
                break;
            h5s_tract_to_f64(tmp, raw, n, e->dtype);
            for (size_t i = 0; i < n; i++) {
                /* Indices are handed out as uint32 (h5s_tract_group_fn). */
                if (!(tmp[i] >= 0) || tmp[i] >= (double)t->ns || tmp[i] > (double)UINT32_MAX) {
                    rc = h5s_error_set(H5S_EFORMAT,
                                       "%s: entry %s: item %llu: streamline index %.0f outside "
                                       "[0, NB_STREAMLINES %llu)",
                                       t->path, e->path, (unsigned long long)(done + i), tmp[i],
                                       (unsigned long long)t->ns);
                    break;
                }
                idx[i] = (uint32_t)tmp[i];
            }
            if (!rc)
                rc = fn(g, idx, n, payload);
            done += n;
        }
        stream_close(&s);
    }
    free(idx);
    free(raw);
    free(tmp);
    return rc;
}

static void trx_close(h5s_tract_reader *r)
{
    trx_reader *t = (trx_reader *)r;
    h5s_tract_header *h = &t->base.header;
    stream_close(&t->pos_s);
    stream_close(&t->off_s);
    for (size_t i = 0; t->dps_s && i < h->n_dps; i++)
        stream_close(&t->dps_s[i]);
    for (size_t i = 0; t->dpv_s && i < h->n_dpv; i++)
        stream_close(&t->dpv_s[i]);
    free(t->dps_s);
    free(t->dpv_s);
    if (t->za)
        zip_discard(t->za);
    for (size_t i = 0; i < t->n_entries; i++)
        free(t->entries[i].path);
    free(t->entries);
    free(t->dps_entry);
    free(t->dpv_entry);
    free(t->group_entry);
    free(t->scratch);
    free(t->points);
    free(t->dps);
    free(t->dpv);
    free(t->dpv_tmp);
    free(t->path);
    h5s_tract_header_free(h);
    free(t);
}

static const struct h5s_tract_reader_ops trx_ops = {trx_next, trx_groups, trx_close};

int h5s_trx_open(h5s_tract_reader **out, const char *path)
{
    if (!out || !path)
        return h5s_error_set(H5S_EINVAL, "h5s_trx_open: NULL argument");
    *out = NULL;
    trx_reader *t = calloc(1, sizeof *t);
    if (!t)
        return h5s_error_set(H5S_ENOMEM, "%s: no memory", path);
    t->base.ops = &trx_ops;
    h5s_tract_header_init(&t->base.header);
    t->base.header.format = H5S_TRACT_TRX;
    int rc;
    struct stat st;
    t->path = strdup(path);
    if (!t->path) {
        rc = h5s_error_set(H5S_ENOMEM, "%s: no memory", path);
        goto fail;
    }
    if (stat(path, &st) != 0) {
        rc = h5s_error_set(H5S_EIO, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    t->is_dir = S_ISDIR(st.st_mode);
    t->archive_size = (uint64_t)st.st_size;
    rc = t->is_dir ? list_dir(t, "", 0) : list_zip(t);
    if (!rc)
        rc = trx_build(t);
    if (!rc)
        rc = trx_open_streams(t);
    if (rc)
        goto fail;
    *out = &t->base;
    return 0;
fail:
    trx_close(&t->base);
    return rc;
}

/* ------------------------------------------------------------------ dispatch */

int h5s_tract_open(h5s_tract_reader **out, const char *path)
{
    if (!out || !path)
        return h5s_error_set(H5S_EINVAL, "h5s_tract_open: NULL argument");
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0)
        return h5s_error_set(H5S_EIO, "%s: cannot open: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode))
        return h5s_trx_open(out, path);
    unsigned char magic[13] = {0};
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return h5s_error_set(H5S_EIO, "%s: cannot open: %s", path, strerror(errno));
    size_t got = fread(magic, 1, sizeof magic, fp);
    fclose(fp);
    if (got >= 4 && memcmp(magic, "PK\3\4", 4) == 0)
        return h5s_trx_open(out, path);
    if (got >= 5 && memcmp(magic, "TRACK", 5) == 0)
        return h5s_trk_open(out, path);
    if (got >= 13 && memcmp(magic, "mrtrix tracks", 13) == 0)
        return h5s_tck_open(out, path);
    /* Unknown content: let the reader the extension names explain what is wrong. */
    const char *ext = strrchr(path, '.');
    if (ext && strcmp(ext, ".tck") == 0)
        return h5s_tck_open(out, path);
    if (ext && strcmp(ext, ".trk") == 0)
        return h5s_trk_open(out, path);
    if (ext && strcmp(ext, ".trx") == 0)
        return h5s_trx_open(out, path);
    return h5s_error_set(H5S_EFORMAT, "%s: byte 0: not a TCK, TRK or TRX file", path);
}

const h5s_tract_header *h5s_tract_reader_header(const h5s_tract_reader *r)
{
    return &r->header;
}

int h5s_tract_next(h5s_tract_reader *r, h5s_tract_streamline *out)
{
    if (!r || !out)
        return h5s_error_set(H5S_EINVAL, "h5s_tract_next: NULL argument");
    if (r->sticky)
        return h5s_error_restore(r->sticky, r->sticky_msg ? r->sticky_msg : "");
    int rc = r->ops->next(r, out);
    if (rc < 0) {
        r->sticky = rc;
        r->sticky_msg = strdup(h5s_error_message());
    }
    return rc;
}

int h5s_tract_read_groups(h5s_tract_reader *r, h5s_tract_group_fn fn, void *payload)
{
    if (!r || !fn)
        return h5s_error_set(H5S_EINVAL, "h5s_tract_read_groups: NULL argument");
    /* TCK and TRK have no groups: their readers leave the operation out. */
    return r->ops->groups ? r->ops->groups(r, fn, payload) : 0;
}

void h5s_tract_close(h5s_tract_reader *r)
{
    if (!r)
        return;
    free(r->sticky_msg);
    r->ops->close(r);
}
