/*
 * h5s_column.c - groups of columns: tables and ragged arrays appended by producers,
 * encoded by the pool and stored by the writer thread (h5s_column.h).
 *
 * Producer side (group lock): each column fills one open chunk buffer; a full chunk is
 * submitted to the encoders at once, and a cut submits copies of the partial chunks and a
 * MARK job. Writer side: chunks of payload columns are stored as they come (extending the
 * extent to their last row); the marker's chunks are held until a commit, which flushes the
 * payload columns first and only then writes the marker, so the marker never points at
 * rows that are not on disk.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5s_column.h"
#include "h5s_engine.h"
#include "h5s_error.h"
#include "h5s_format.h"

/* Default chunk size: well within HDF5's default 1 MiB chunk cache, so a reader's cache
 * holds a few whole chunks and reading item after item decodes each chunk once; small
 * enough that a small tractogram's columns do not each take a mostly empty chunk, large
 * enough that a stream at 1 GB/s needs under 10,000 chunk writes a second. */
#define H5S_COLUMN_CHUNK_TARGET ((size_t)128 << 10)
#define H5S_MAX_COLUMNS 1024

typedef struct h5s_held {
    struct h5s_held *next;
    h5s_job *job; /* an encoded marker chunk waiting for the commit */
} h5s_held;

struct h5s_column {
    h5s_group *group;
    char path[2 * H5S_NAME_MAX];
    hid_t ftype;
    size_t row_bytes;
    uint64_t ncols, chunk_rows;
    size_t chunk_bytes, chunk_bound, typesize;
    h5s_codec codec;
    int marker;
    h5s_pool raw_pool, enc_pool;

    /* Producer side, under the group lock. */
    unsigned char *open; /* the open chunk's buffer, NULL when none */
    uint64_t rows;       /* rows appended */
    uint64_t open_first; /* first row of the open chunk */
    /* Or a lent open chunk: rows [open_first, rows) are the caller's, at lent, not copied
     * (h5s_column_append_lent); open is NULL then. */
    const unsigned char *lent;
    h5s_lent_done_fn lent_done;
    void *lent_ctx;

    unsigned char *preset; /* rows [0, npreset) written at declaration */
    uint64_t npreset;

    /* Writer side. */
    hid_t dset;
    uint64_t extent;
    int dirty;      /* chunks written since the last payload flush */
    h5s_held *held; /* marker only */
};

struct h5s_group {
    h5s_file *file;
    char name[H5S_NAME_MAX];
    pthread_mutex_t mu;
    h5s_column *cols[H5S_MAX_COLUMNS];
    size_t ncols;
    h5s_column *marker;

    /* Producer side, under mu; items also read atomically by the writer. */
    atomic_uint_fast64_t items;
    uint64_t cut_items;
    atomic_uint_fast64_t cuts; /* commit points handed to the writer */
    double last_cut;

    /* Writer side. */
    int pending;
    uint64_t mark_items, mark_rows;
    atomic_uint_fast64_t committed;
    size_t held;        /* marker chunks held for the next commit */
    atomic_int cut_due; /* set by the writer when they pass held_cap: producers cut */
};

/* ---- declaration phase ------------------------------------------------------------ */

static int check_declaring(h5s_file *f, const char *what)
{
    if (f->started || atomic_load(&f->closing))
        return h5s_error_set(H5S_ESTATE, "%s: %s after SWMR started", f->path, what);
    return 0;
}

int h5s_file_add_model(h5s_file *file, const char *model)
{
    if (!file || !model || !model[0] || strlen(model) >= sizeof file->models[0])
        return h5s_error_set(H5S_EINVAL, "h5s_file_add_model: bad model name");
    int rc = check_declaring(file, "a new model");
    if (rc)
        return rc;
    for (unsigned i = 0; i < file->nmodels; i++)
        if (strcmp(file->models[i], model) == 0)
            return 0;
    if (file->nmodels == H5S_MAX_MODELS)
        return h5s_error_set(H5S_EINVAL, "%s: more than %d models", file->path, H5S_MAX_MODELS);
    snprintf(file->models[file->nmodels++], sizeof file->models[0], "%s", model);
    return 0;
}

int h5s_file_attach(h5s_file *file, void *obj, void (*free_fn)(void *obj))
{
    if (!file || !obj || !free_fn)
        return h5s_error_set(H5S_EINVAL, "h5s_file_attach: NULL argument");
    int rc = check_declaring(file, "a new model handle");
    if (rc == 0 && file->nattached == H5S_MAX_MODELS)
        rc =
            h5s_error_set(H5S_EINVAL, "%s: more than %d model handles", file->path, H5S_MAX_MODELS);
    if (rc) {
        free_fn(obj);
        return rc;
    }
    file->attached[file->nattached] = obj;
    file->attached_free[file->nattached++] = free_fn;
    return 0;
}

void h5s_file_free_attached(h5s_file *f)
{
    while (f->nattached) {
        f->nattached--;
        f->attached_free[f->nattached](f->attached[f->nattached]);
    }
}

hid_t h5s_file_hid(h5s_file *file)
{
    return file && !file->started ? file->fid : H5I_INVALID_HID;
}

int h5s_group_create(h5s_group **out, h5s_file *file, const char *name)
{
    h5s_error_clear();
    if (!out || !file || !name || strlen(name) >= H5S_NAME_MAX)
        return h5s_error_set(H5S_EINVAL, "h5s_group_create: bad argument");
    *out = NULL;
    int rc = check_declaring(file, "a new group");
    if (rc)
        return rc;
    h5s_group **grown = realloc(file->groups, (file->ngroups + 1) * sizeof *grown);
    h5s_group *g = calloc(1, sizeof *g);
    if (grown)
        file->groups = grown;
    if (!grown || !g) {
        free(g);
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", file->path);
    }
    g->file = file;
    snprintf(g->name, sizeof g->name, "%s", name);
    pthread_mutex_init(&g->mu, NULL);
    file->groups[file->ngroups++] = g;
    *out = g;
    return 0;
}

static int create_dataset(h5s_column *c)
{
    hid_t fid = c->group->file->fid;
    int rank = c->ncols ? 2 : 1;
    hsize_t dims[2] = {0, c->ncols}, maxdims[2] = {H5S_UNLIMITED, c->ncols};
    hsize_t chunk[2] = {c->chunk_rows, c->ncols};
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, rank, chunk);
    int rc = h5s_codec_set_dcpl(dcpl, &c->codec);
    if (rc) {
        H5Pclose(dcpl);
        return rc;
    }
    hid_t space = H5Screate_simple(rank, dims, maxdims);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t d = H5Dcreate2(fid, c->path, c->ftype, space, lcpl, dcpl, H5P_DEFAULT);
    H5Pclose(lcpl);
    H5Sclose(space);
    H5Pclose(dcpl);
    if (d < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: cannot create %s", c->group->file->path, c->path);
    H5Dclose(d);
    return 0;
}

int h5s_column_create(h5s_column **out, h5s_group *g, const char *path,
                      const h5s_column_options *opts)
{
    h5s_error_clear();
    if (!out || !g || !path || !opts)
        return h5s_error_set(H5S_EINVAL, "h5s_column_create: NULL argument");
    *out = NULL;
    h5s_file *f = g->file;
    int rc = check_declaring(f, "a new column");
    if (rc)
        return rc;
    if (opts->version != H5S_COLUMN_OPTIONS_VERSION)
        return h5s_error_set(H5S_EINVAL, "%s: column options version %u, expected %u", f->path,
                             opts->version, H5S_COLUMN_OPTIONS_VERSION);
    if (path[0] != '/' || strlen(path) >= sizeof((h5s_column *)0)->path)
        return h5s_error_set(H5S_EINVAL, "%s: column path '%s' is not absolute or too long",
                             f->path, path);
    size_t esize = opts->type >= 0 ? H5Tget_size(opts->type) : 0;
    if (esize == 0 || H5Tis_variable_str(opts->type) > 0)
        return h5s_error_set(H5S_EINVAL, "%s: %s: no fixed-size element type", f->path, path);
    if (opts->marker && g->marker)
        return h5s_error_set(H5S_EINVAL, "%s: %s: group %s already has a marker (%s)", f->path,
                             path, g->name, g->marker->path);
    if (g->ncols == H5S_MAX_COLUMNS)
        return h5s_error_set(H5S_EINVAL, "%s: more than %d columns in %s", f->path, H5S_MAX_COLUMNS,
                             g->name);
    if (h5s_format_path_exists(f->fid, path))
        return h5s_error_set(H5S_EINVAL, "%s: %s already exists", f->path, path);
    rc = h5s_codec_validate(&opts->codec);
    if (rc)
        return h5s_error_prefix(rc, "%s: %s", f->path, path);
    h5s_column *c = calloc(1, sizeof *c);
    if (!c)
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", f->path);
    c->group = g;
    snprintf(c->path, sizeof c->path, "%s", path);
    c->ncols = opts->ncols;
    c->row_bytes = esize * (opts->ncols ? opts->ncols : 1);
    c->typesize = esize;
    c->chunk_rows = opts->chunk_rows;
    if (c->chunk_rows == 0) {
        c->chunk_rows = H5S_COLUMN_CHUNK_TARGET / c->row_bytes;
        if (c->chunk_rows == 0)
            c->chunk_rows = 1;
    }
    c->chunk_bytes = (size_t)c->chunk_rows * c->row_bytes;
    c->codec = opts->codec;
    c->chunk_bound = h5s_codec_bound(&c->codec, c->chunk_bytes);
    c->marker = opts->marker;
    c->dset = H5I_INVALID_HID;
    c->ftype = H5Tcopy(opts->type);
    if (c->ftype < 0) {
        free(c);
        return h5s_error_set_h5(H5S_EINVAL, "%s: %s: bad element type", f->path, path);
    }
    rc = create_dataset(c);
    if (rc) {
        H5Tclose(c->ftype);
        free(c);
        return rc;
    }
    g->cols[g->ncols++] = c;
    if (c->marker)
        g->marker = c;
    *out = c;
    return 0;
}

int h5s_column_preset(h5s_column *c, const void *rows, uint64_t nrows)
{
    h5s_error_clear();
    if (!c || !rows || nrows == 0)
        return h5s_error_set(H5S_EINVAL, "h5s_column_preset: no rows");
    h5s_file *f = c->group->file;
    int rc = check_declaring(f, "preset rows");
    if (rc)
        return rc;
    if (c->rows || nrows > c->chunk_rows)
        return h5s_error_set(H5S_EINVAL, "%s: %s: preset rows must fit the first chunk", f->path,
                             c->path);
    c->preset = malloc((size_t)nrows * c->row_bytes);
    if (!c->preset)
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", f->path);
    memcpy(c->preset, rows, (size_t)nrows * c->row_bytes);
    hid_t d = H5Dopen2(f->fid, c->path, H5P_DEFAULT);
    hsize_t dims[2] = {nrows, c->ncols};
    herr_t st = d >= 0 ? H5Dset_extent(d, dims) : -1;
    if (st >= 0)
        st = H5Dwrite(d, c->ftype, H5S_ALL, H5S_ALL, H5P_DEFAULT, rows);
    if (d >= 0)
        H5Dclose(d);
    if (st < 0) {
        free(c->preset);
        c->preset = NULL;
        return h5s_error_set_h5(H5S_EIO, "%s: cannot write the first rows of %s", f->path, c->path);
    }
    c->npreset = nrows;
    c->rows = nrows;
    return 0;
}

const char *h5s_column_path(const h5s_column *c)
{
    return c ? c->path : NULL;
}

uint64_t h5s_column_rows(const h5s_column *c)
{
    return c ? c->rows : 0;
}

uint64_t h5s_column_chunk_rows(const h5s_column *c)
{
    return c ? c->chunk_rows : 0;
}

size_t h5s_group_max_chunk_bytes(const h5s_group *g)
{
    size_t n = 0;
    for (size_t i = 0; i < g->ncols; i++)
        if (g->cols[i]->chunk_bytes > n)
            n = g->cols[i]->chunk_bytes;
    return n;
}

uint64_t h5s_group_items(const h5s_group *g)
{
    return g ? atomic_load(&g->items) : 0;
}

uint64_t h5s_group_committed(const h5s_group *g)
{
    return g ? atomic_load(&g->committed) : 0;
}

/* ---- start and close -------------------------------------------------------------- */

int h5s_group_open_swmr(h5s_group *g)
{
    h5s_file *f = g->file;
    if (!g->marker)
        return h5s_error_set(H5S_EINVAL, "%s: group %s has no marker column", f->path, g->name);
    /* Every chunk buffer that can exist at once is kept for reuse: the budget bounds how
     * many there are, and a fresh 1 MiB buffer each time would cost its page faults. */
    size_t keep = f->opts.queue_bytes;
    for (size_t i = 0; i < g->ncols; i++) {
        h5s_column *c = g->cols[i];
        c->dset = H5Dopen2(f->fid, c->path, H5P_DEFAULT);
        if (c->dset < 0)
            return h5s_error_set_h5(H5S_EIO, "%s: cannot reopen %s", f->path, c->path);
        c->extent = c->npreset;
        size_t n = keep / c->chunk_bytes + 8;
        if (n > 65536)
            n = 65536;
        h5s_pool_init(&c->raw_pool, c->chunk_bytes, n);
        h5s_pool_init(&c->enc_pool, c->chunk_bound, n);
    }
    g->last_cut = h5s_mono_now();
    return 0;
}

void h5s_group_close_handles(h5s_group *g)
{
    for (size_t i = 0; i < g->ncols; i++) {
        h5s_column *c = g->cols[i];
        if (c->dset >= 0)
            H5Dclose(c->dset);
        c->dset = H5I_INVALID_HID;
    }
}

void h5s_group_free(h5s_group *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->ncols; i++) {
        h5s_column *c = g->cols[i];
        while (c->held) {
            h5s_held *h = c->held;
            c->held = h->next;
            h5s_job_free(h->job);
            free(h);
        }
        if (c->open)
            h5s_pool_put(&c->raw_pool, c->open);
        if (c->lent)
            c->lent_done(c->lent_ctx, c->lent, (size_t)(c->rows - c->open_first) * c->row_bytes);
        h5s_pool_destroy(&c->raw_pool);
        h5s_pool_destroy(&c->enc_pool);
        if (c->ftype >= 0)
            H5Tclose(c->ftype);
        free(c->preset);
        free(c);
    }
    pthread_mutex_destroy(&g->mu);
    free(g);
}

/* ---- producer side ---------------------------------------------------------------- */

void h5s_group_lock(h5s_group *g)
{
    pthread_mutex_lock(&g->mu);
}

void h5s_group_unlock(h5s_group *g)
{
    pthread_mutex_unlock(&g->mu);
}

static h5s_job *new_chunk_job(h5s_column *c, unsigned char *raw, uint64_t row0, uint64_t nrows)
{
    h5s_job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->kind = H5S_JOB_CHUNK;
    j->column = c;
    j->raw = raw;
    j->row0 = row0;
    j->nrows = nrows;
    j->charged = c->chunk_bytes;
    return j;
}

/* Submits the open chunk, which is full. */
static int submit_full(h5s_column *c)
{
    h5s_file *f = c->group->file;
    h5s_job *j = new_chunk_job(c, c->open, c->open_first, c->chunk_rows);
    if (!j)
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", f->path);
    j->reserved = c->chunk_bytes;
    c->open = NULL;
    h5s_queue_submit(&f->q, j);
    return 0;
}

static int open_chunk(h5s_column *c)
{
    h5s_file *f = c->group->file;
    int rc = h5s_queue_reserve_wait(&f->q, c->chunk_bytes);
    if (rc)
        return rc;
    c->open = h5s_pool_get(&c->raw_pool);
    if (!c->open) {
        h5s_queue_unreserve(&f->q, c->chunk_bytes);
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", f->path);
    }
    /* Only the first chunk can be partly preset; its preset rows are the buffer's too. */
    c->open_first = c->rows - c->rows % c->chunk_rows;
    if (c->open_first < c->npreset)
        memcpy(c->open, c->preset + c->open_first * c->row_bytes,
               (size_t)(c->npreset - c->open_first) * c->row_bytes);
    return 0;
}

static int check_appending(const h5s_column *c)
{
    const h5s_file *f = c->group->file;
    if (!f->started || atomic_load(&f->closing))
        return h5s_error_set(H5S_ESTATE, "%s: %s: append before SWMR started or after close",
                             f->path, c->path);
    return 0;
}

typedef struct {
    const unsigned char *src;
    size_t row_bytes;
} copy_src;

static void copy_rows(void *dst, uint64_t first, uint64_t n, void *payload)
{
    const copy_src *s = payload;
    memcpy(dst, s->src + first * s->row_bytes, (size_t)n * s->row_bytes);
}

/* Turns a lent open chunk into an ordinary one: its rows so far are copied into a pool
 * buffer and given back. The budget taken when it was opened stays with it. */
static int copy_lent(h5s_column *c)
{
    h5s_file *f = c->group->file;
    unsigned char *buf = h5s_pool_get(&c->raw_pool);
    if (!buf)
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", f->path);
    size_t used = (size_t)(c->rows - c->open_first) * c->row_bytes;
    memcpy(buf, c->lent, used);
    c->lent_done(c->lent_ctx, c->lent, used);
    c->lent = NULL;
    c->open = buf;
    return 0;
}

/* Submits the lent open chunk, which is full. */
static int submit_lent(h5s_column *c)
{
    h5s_file *f = c->group->file;
    h5s_job *j =
        new_chunk_job(c, (unsigned char *)(uintptr_t)c->lent, c->open_first, c->chunk_rows);
    if (!j)
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", f->path);
    j->reserved = c->chunk_bytes;
    j->lent_done = c->lent_done;
    j->lent_ctx = c->lent_ctx;
    c->lent = NULL;
    h5s_queue_submit(&f->q, j);
    return 0;
}

int h5s_column_append_lent(h5s_column *c, const void *rows, uint64_t nrows, h5s_lent_done_fn done,
                           void *ctx)
{
    if (!c || (!rows && nrows) || !done)
        return h5s_error_set(H5S_EINVAL, "h5s_column_append_lent: NULL argument");
    int rc = check_appending(c);
    const unsigned char *p = rows;
    uint64_t left = nrows;
    while (rc == 0 && left) {
        uint64_t in_chunk = c->rows - (c->rows - c->rows % c->chunk_rows);
        uint64_t n = c->chunk_rows - in_chunk;
        if (n > left)
            n = left;
        if (c->lent &&
            (p != c->lent + in_chunk * c->row_bytes || done != c->lent_done || ctx != c->lent_ctx))
            rc = copy_lent(c); /* these rows do not continue the lent ones */
        else if (!c->lent && !c->open && in_chunk == 0 &&
                 (rc = h5s_queue_reserve_wait(&c->group->file->q, c->chunk_bytes)) == 0) {
            c->lent = p; /* a new lent chunk */
            c->lent_done = done;
            c->lent_ctx = ctx;
            c->open_first = c->rows;
        }
        if (rc)
            break;
        if (c->lent) {
            c->rows += n;
            if (c->rows - c->open_first == c->chunk_rows)
                rc = submit_lent(c);
        } else {
            rc = h5s_column_append(c, p, n); /* up to the chunk boundary */
        }
        p += n * c->row_bytes;
        left -= n;
    }
    return rc;
}

int h5s_column_append_fill(h5s_column *c, uint64_t nrows,
                           void (*fill)(void *dst, uint64_t first, uint64_t n, void *payload),
                           void *payload)
{
    if (!c || !fill)
        return h5s_error_set(H5S_EINVAL, "h5s_column_append: NULL argument");
    int rc = check_appending(c);
    if (rc == 0 && c->lent && nrows)
        rc = copy_lent(c);
    uint64_t done = 0;
    while (rc == 0 && done < nrows) {
        if (!c->open && (rc = open_chunk(c)) != 0)
            break;
        uint64_t at = c->rows - c->open_first;
        uint64_t n = c->chunk_rows - at;
        if (n > nrows - done)
            n = nrows - done;
        fill(c->open + at * c->row_bytes, done, n, payload);
        c->rows += n;
        done += n;
        if (c->rows - c->open_first == c->chunk_rows)
            rc = submit_full(c);
    }
    return rc;
}

int h5s_column_append(h5s_column *c, const void *rows, uint64_t nrows)
{
    if (!c || (!rows && nrows))
        return h5s_error_set(H5S_EINVAL, "h5s_column_append: NULL argument");
    copy_src s = {rows, c->row_bytes};
    return h5s_column_append_fill(c, nrows, copy_rows, &s);
}

static void zero_rows(void *dst, uint64_t first, uint64_t n, void *payload)
{
    (void)first;
    memset(dst, 0, (size_t)n * *(const size_t *)payload);
}

int h5s_column_pad_to_chunk(h5s_column *c)
{
    if (!c)
        return h5s_error_set(H5S_EINVAL, "h5s_column_pad_to_chunk: NULL argument");
    uint64_t r = c->rows % c->chunk_rows;
    if (r == 0)
        return check_appending(c);
    return h5s_column_append_fill(c, c->chunk_rows - r, zero_rows, &c->row_bytes);
}

/* Hands the writer a copy of the open chunk's rows so far (zero-padded). */
static int submit_partial(h5s_column *c, int wait_budget)
{
    h5s_file *f = c->group->file;
    if (c->lent) {
        int rc = copy_lent(c);
        if (rc)
            return rc;
    }
    if (!c->open || c->rows == c->open_first)
        return 0;
    int rc = 0;
    if (wait_budget)
        rc = h5s_queue_reserve_wait(&f->q, c->chunk_bytes);
    else
        h5s_queue_charge(&f->q, c->chunk_bytes);
    if (rc)
        return rc;
    unsigned char *copy = h5s_pool_get(&c->raw_pool);
    uint64_t n = c->rows - c->open_first;
    h5s_job *j = copy ? new_chunk_job(c, copy, c->open_first, n) : NULL;
    if (!j) {
        h5s_pool_put(&c->raw_pool, copy);
        if (wait_budget)
            h5s_queue_unreserve(&f->q, c->chunk_bytes);
        else
            h5s_queue_release(&f->q, c->chunk_bytes);
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", f->path);
    }
    size_t used = (size_t)n * c->row_bytes;
    memcpy(copy, c->open, used);
    memset(copy + used, 0, c->chunk_bytes - used);
    j->reserved = wait_budget ? c->chunk_bytes : 0;
    h5s_queue_submit(&f->q, j);
    return 0;
}

int h5s_group_cut(h5s_group *g, int wait_budget)
{
    h5s_file *f = g->file;
    uint64_t items = atomic_load(&g->items);
    g->last_cut = h5s_mono_now();
    if (items == g->cut_items && g->cut_items != 0)
        return 0;
    for (size_t i = 0; i < g->ncols; i++) {
        int rc = submit_partial(g->cols[i], wait_budget);
        if (rc)
            return rc;
    }
    h5s_job *m = calloc(1, sizeof *m);
    if (!m)
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", f->path);
    m->kind = H5S_JOB_MARK;
    m->group = g;
    m->mark_items = items;
    m->mark_rows = g->marker->rows;
    g->cut_items = items;
    atomic_fetch_add(&g->cuts, 1);
    h5s_queue_submit(&f->q, m);
    return 0;
}

int h5s_group_item_done(h5s_group *g, uint64_t nitems)
{
    if (!g)
        return h5s_error_set(H5S_EINVAL, "h5s_group_item_done: NULL argument");
    uint64_t items = atomic_fetch_add(&g->items, nitems) + nitems;
    const h5s_file_options *o = &g->file->opts;
    if (atomic_load_explicit(&g->cut_due, memory_order_relaxed)) {
        atomic_store(&g->cut_due, 0);
        return h5s_group_cut(g, 1);
    }
    if (o->flush_every && items - g->cut_items >= o->flush_every)
        return h5s_group_cut(g, 1);
    if (o->flush_ms && h5s_mono_now() - g->last_cut >= o->flush_ms / 1000.0)
        return h5s_group_cut(g, 1);
    return 0;
}

uint64_t h5s_file_group_cuts(h5s_file *f)
{
    uint64_t n = 0;
    for (size_t i = 0; f && i < f->ngroups; i++)
        n += atomic_load(&f->groups[i]->cuts);
    return n;
}

uint64_t h5s_group_flush_every(const h5s_group *g)
{
    return g ? g->file->opts.flush_every : 0;
}

int h5s_group_needs_cut(h5s_group *g, double now, double interval)
{
    /* cut_items and last_cut are read without the lock: a stale value only moves the cut
     * to the writer's next wake-up. */
    return atomic_load(&g->items) != g->cut_items &&
           (now - g->last_cut >= interval || atomic_load(&g->cut_due));
}

void h5s_group_try_cut(h5s_group *g)
{
    if (pthread_mutex_trylock(&g->mu) != 0)
        return; /* a producer holds it and will cut by itself */
    h5s_group_cut(g, 0);
    pthread_mutex_unlock(&g->mu);
}

int h5s_file_call(h5s_file *f, int (*fn)(hid_t fid, void *payload), void *payload,
                  void (*free_payload)(void *payload), size_t bytes)
{
    int rc = 0;
    if (!f || !fn)
        rc = h5s_error_set(H5S_EINVAL, "h5s_file_call: NULL argument");
    else if (!f->started || atomic_load(&f->closing))
        rc = h5s_error_set(H5S_ESTATE, "%s: call before SWMR started or after close", f->path);
    else if (bytes)
        rc = h5s_queue_reserve(&f->q, bytes);
    else
        rc = h5s_queue_error(&f->q);
    h5s_job *j = rc == 0 ? calloc(1, sizeof *j) : NULL;
    if (rc == 0 && !j) {
        h5s_queue_unreserve(&f->q, bytes);
        rc = h5s_error_set(H5S_ENOMEM, "%s: out of memory", f->path);
    }
    if (rc) {
        if (free_payload)
            free_payload(payload);
        return rc;
    }
    j->kind = H5S_JOB_CALL;
    j->call = fn;
    j->call_payload = payload;
    j->call_free = free_payload;
    j->charged = bytes;
    j->reserved = bytes;
    h5s_queue_submit(&f->q, j);
    return 0;
}

/* ---- encoders --------------------------------------------------------------------- */

/* Gives a chunk job's raw rows back: to the column's pool, or to their lender. */
static void release_raw(h5s_job *j)
{
    h5s_column *c = j->column;
    if (j->raw && j->lent_done)
        j->lent_done(j->lent_ctx, j->raw, c->chunk_bytes);
    else if (j->raw)
        h5s_pool_put(&c->raw_pool, j->raw);
    j->raw = NULL;
    j->lent_done = NULL;
}

int h5s_column_encode(h5s_job *j, unsigned char *scratch)
{
    h5s_column *c = j->column;
    if (c->codec.kind == H5S_CODEC_NONE) {
        j->chunks = calloc(1, sizeof *j->chunks);
        if (!j->chunks)
            return h5s_error_set(H5S_ENOMEM, "%s: out of memory", c->group->file->path);
        j->nchunks = 1;
        j->chunks[0].bytes = j->raw; /* stored as is */
        j->chunks[0].size = c->chunk_bytes;
        return 0;
    }
    j->chunks = calloc(1, sizeof *j->chunks);
    void *dst = h5s_pool_get(&c->enc_pool);
    if (!j->chunks || !dst) {
        h5s_pool_put(&c->enc_pool, dst);
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", c->group->file->path);
    }
    j->nchunks = 1;
    h5s_chunk *ch = &j->chunks[0];
    ch->bytes = dst;
    int rc = h5s_codec_encode(&c->codec, c->typesize, j->raw, c->chunk_bytes, dst, c->chunk_bound,
                              scratch, &ch->size, &ch->mask);
    if (rc)
        return h5s_error_prefix(rc, "%s: %s: rows %llu..%llu", c->group->file->path, c->path,
                                (unsigned long long)j->row0,
                                (unsigned long long)(j->row0 + j->nrows));
    release_raw(j);
    return 0;
}

size_t h5s_column_held_bytes(const h5s_job *j)
{
    const h5s_column *c = j->column;
    size_t n = j->raw ? c->chunk_bytes : 0;
    if (j->nchunks && j->chunks[0].bytes && j->chunks[0].bytes != j->raw)
        n += c->chunk_bound;
    return n;
}

void h5s_column_job_release(h5s_job *j)
{
    if (j->kind == H5S_JOB_CALL && j->call_free) {
        j->call_free(j->call_payload);
        j->call_free = NULL;
    }
    if (j->kind != H5S_JOB_CHUNK)
        return;
    h5s_column *c = j->column;
    if (j->nchunks && j->chunks[0].bytes && j->chunks[0].bytes != j->raw)
        h5s_pool_put(&c->enc_pool, j->chunks[0].bytes);
    release_raw(j);
    free(j->chunks);
    j->chunks = NULL;
    j->nchunks = 0;
}

/* ---- writer thread ---------------------------------------------------------------- */

static int extend_to(h5s_column *c, uint64_t rows)
{
    if (rows <= c->extent)
        return 0;
    hsize_t dims[2] = {rows, c->ncols};
    if (H5Dset_extent(c->dset, dims) < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: cannot extend %s to %llu rows", c->group->file->path,
                                c->path, (unsigned long long)rows);
    c->extent = rows;
    return 0;
}

static int store_chunk(h5s_column *c, const h5s_job *j)
{
    h5s_file *f = c->group->file;
    hsize_t offset[2] = {j->row0, 0};
    const h5s_chunk *ch = &j->chunks[0];
    if (H5Dwrite_chunk(c->dset, H5P_DEFAULT, ch->mask, offset, ch->size, ch->bytes) < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s: cannot write rows %llu..%llu", f->path, c->path,
                                (unsigned long long)j->row0,
                                (unsigned long long)(j->row0 + j->nrows));
    atomic_fetch_add(&f->st_bytes_stored, ch->size);
    atomic_fetch_add(&f->st_bytes_raw, (uint64_t)j->nrows * c->row_bytes);
    c->dirty = 1;
    return 0;
}

/* Marker chunks may be held up to this many bytes before the writer asks producers to cut
 * early: the held chunks are outside the queue budget (holding them must never make a
 * producer wait, or the cut that frees them would never come), so this bounds them. */
static size_t held_cap(const h5s_column *c)
{
    size_t cap = c->group->file->opts.queue_bytes / 16;
    return cap > 4 * c->chunk_bytes ? cap : 4 * c->chunk_bytes;
}

int h5s_column_write(h5s_job *j)
{
    h5s_column *c = j->column;
    if (c->marker) {
        /* Held for the commit; a newer copy of the same chunk replaces an older one. */
        h5s_group *g = c->group;
        h5s_held **p = &c->held;
        while (*p && (*p)->job->row0 != j->row0)
            p = &(*p)->next;
        if (*p) {
            h5s_job_free((*p)->job);
            (*p)->job = j;
            return 1;
        }
        h5s_held *h = malloc(sizeof *h);
        if (!h)
            return h5s_error_set(H5S_ENOMEM, "%s: out of memory", g->file->path);
        h->job = j;
        h->next = NULL;
        *p = h;
        g->held += c->chunk_bytes;
        if (g->held > held_cap(c))
            atomic_store(&g->cut_due, 1);
        return 1; /* kept: the caller must not free the job */
    }
    int rc = extend_to(c, j->row0 + j->nrows);
    return rc ? rc : store_chunk(c, j);
}

void h5s_group_mark(h5s_job *j)
{
    h5s_group *g = j->group;
    g->pending = 1;
    g->mark_items = j->mark_items;
    g->mark_rows = j->mark_rows;
}

int h5s_group_pending(const h5s_group *g)
{
    return g->pending;
}

int h5s_group_commit_payload(h5s_group *g)
{
    if (!g->pending)
        return 0;
    for (size_t i = 0; i < g->ncols; i++) {
        h5s_column *c = g->cols[i];
        if (c->marker || !c->dirty)
            continue;
        if (H5Dflush(c->dset) < 0)
            return h5s_error_set_h5(H5S_EIO, "%s: cannot flush %s", g->file->path, c->path);
        c->dirty = 0;
    }
    return 0;
}

int h5s_group_commit_marker(h5s_group *g)
{
    if (!g->pending)
        return 0;
    h5s_column *m = g->marker;
    uint64_t before = m->extent;
    int rc = extend_to(m, g->mark_rows);
    /* The held chunks that start below the mark; rows of theirs past it stay hidden by the
     * extent until a later commit reveals them. */
    for (h5s_held **p = &m->held; rc == 0 && *p;) {
        h5s_held *h = *p;
        if (h->job->row0 >= g->mark_rows) {
            p = &h->next;
            continue;
        }
        rc = store_chunk(m, h->job);
        if (rc == 0) {
            *p = h->next;
            h5s_job_free(h->job);
            free(h);
            g->held -= m->chunk_bytes;
        }
    }
    if (rc == 0 && H5Dflush(m->dset) < 0)
        rc = h5s_error_set_h5(H5S_EIO, "%s: cannot flush %s", g->file->path, m->path);
    if (rc != 0 && m->extent > before) {
        /* The extent grew before the rows were stored: take it back, or the next metadata
         * flush (at close) would commit rows that never reached the disk (a full disk
         * fails a new chunk, not the extent) and readers would take their fill values
         * for items. */
        hsize_t dims[2] = {before, m->ncols};
        if (H5Dset_extent(m->dset, dims) >= 0)
            m->extent = before;
        H5Eclear2(H5E_DEFAULT);
    }
    if (rc == 0) {
        m->dirty = 0;
        g->pending = 0;
        atomic_store(&g->committed, g->mark_items);
    }
    return rc;
}
