/*
 * h5s_tracts_export.c - /tracts of one file or of several shards -> TRX (zip or folder), TCK
 * or TRK (h5s_tracts_export in h5s_tracts_reader.h; rules in docs/tracts.md).
 *
 * TRX: every entry is a pull source for the formats/ TRX writer. A read-ahead thread walks the
 * entries in the order the writer pulls them and, for each, the shards in order: it reads a
 * block of rows of the array from HDF5 in the file's element type (one hyperslab of
 * block_bytes), rebases it where needed (offsets by the vertices before, group indices by the
 * streamlines before) and queues it in one of EXPORT_SLOTS buffers, while the writer (CRC and
 * write, on the calling thread) consumes the block before. Only that thread calls HDF5 while
 * the writer runs. Memory is EXPORT_SLOTS blocks whatever the tractogram's size.
 * TCK/TRK: batches of streamlines through h5s_tracts_reader_read into the streaming writers.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5s_error.h"
#include "h5s_tracts_reader.h"

#define EXPORT_BLOCK_DEFAULT ((size_t)1 << 20)
/* Blocks of the TRX read-ahead: one being written, the others read ahead. */
#define EXPORT_SLOTS 3
/* Streamlines per batch of TCK/TRK exports. */
#define EXPORT_BATCH 4096

typedef struct {
    h5s_tracts_reader *r;
    const h5s_tract_header *h;
    uint64_t ns, nv;         /* committed when opened */
    uint64_t s_base, v_base; /* streamlines and vertices of the shards before */
    long *group_of;          /* per output group: this shard's group index or -1 */
    uint64_t *group_valid;   /* per output group: indices < ns */
} ex_shard;

typedef struct ex_ctx ex_ctx;

/* One TRX entry being pulled. */
typedef struct {
    ex_ctx *x;
    char name[4 * H5S_TRACT_NAME_MAX];
    h5s_tracts_array which;
    size_t index;             /* output field or group */
    const unsigned char *mem; /* dpg: bytes in memory */
    size_t row_bytes;
    /* read-ahead thread only */
    size_t shard;
    uint64_t row; /* next row to read in the shard */
    int started;  /* offsets: the leading 0 was given */
    /* writer thread only */
    const unsigned char *buf; /* the block being handed out (a slot) */
    size_t len, pos;
    int holding;          /* a slot is held */
    uint64_t size, given; /* declared bytes, bytes handed out */
} ex_entry;

/* Blocks read ahead: a ring of EXPORT_SLOTS slots under mu. */
typedef struct {
    pthread_t thread;
    int running;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned char *slot[EXPORT_SLOTS];
    size_t slot_len[EXPORT_SLOTS], slot_entry[EXPORT_SLOTS];
    size_t head, count; /* oldest filled slot, filled slots */
    int done, stop;     /* the thread has finished; the writer wants it to */
    int rc;             /* the thread's error and its message */
    char *msg;
} ex_ahead;

struct ex_ctx {
    const char *out;
    size_t block;
    ex_shard *shards;
    size_t n_shards;
    char (*group_names)[H5S_TRACT_NAME_MAX];
    size_t n_groups;
    ex_entry *entries;
    size_t n_entries;
    uint64_t ns, nv, bytes;
    ex_ahead ra;
};

static int same_fields(const h5s_tract_field *a, size_t na, const h5s_tract_field *b, size_t nb)
{
    if (na != nb)
        return 0;
    for (size_t i = 0; i < na; i++)
        if (strcmp(a[i].name, b[i].name) != 0 || a[i].dtype != b[i].dtype ||
            a[i].ncols != b[i].ncols)
            return 0;
    return 1;
}

/* Shards must agree on what makes streamlines comparable (docs/tracts.md, "Shards"). The
 * reader lists fields by name, so equal sets come in the same order. */
static int check_shard(const ex_ctx *x, size_t s)
{
    const h5s_tract_header *a = x->shards[0].h, *b = x->shards[s].h;
    const char *pa = h5s_tracts_reader_path(x->shards[0].r),
               *pb = h5s_tracts_reader_path(x->shards[s].r);
    if (memcmp(a->voxel_to_rasmm, b->voxel_to_rasmm, sizeof a->voxel_to_rasmm) != 0 ||
        memcmp(a->dimensions, b->dimensions, sizeof a->dimensions) != 0)
        return h5s_error_set(H5S_EFORMAT,
                             "%s: VOXEL_TO_RASMM or DIMENSIONS differ from %s's: shards of one "
                             "tractogram share the reference space",
                             pb, pa);
    if (a->positions_dtype != b->positions_dtype)
        return h5s_error_set(H5S_EFORMAT, "%s: positions are %s, %s's are %s", pb,
                             h5s_dtype_name(b->positions_dtype), pa,
                             h5s_dtype_name(a->positions_dtype));
    if (!same_fields(a->dps, a->n_dps, b->dps, b->n_dps))
        return h5s_error_set(H5S_EFORMAT,
                             "%s: its dps fields (names, dtypes, widths) differ from %s's", pb, pa);
    if (!same_fields(a->dpv, a->n_dpv, b->dpv, b->n_dpv))
        return h5s_error_set(H5S_EFORMAT,
                             "%s: its dpv fields (names, dtypes, widths) differ from %s's", pb, pa);
    return 0;
}

static long find_group(const h5s_tract_header *h, const char *name)
{
    for (size_t i = 0; i < h->n_groups; i++)
        if (strcmp(h->groups[i].name, name) == 0)
            return (long)i;
    return -1;
}

/* Union of the group names, in order of first appearance. */
static int collect_groups(ex_ctx *x)
{
    size_t cap = 0;
    for (size_t s = 0; s < x->n_shards; s++)
        cap += x->shards[s].h->n_groups;
    x->group_names = calloc(cap ? cap : 1, sizeof *x->group_names);
    if (!x->group_names)
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", x->out);
    for (size_t s = 0; s < x->n_shards; s++) {
        const h5s_tract_header *h = x->shards[s].h;
        for (size_t g = 0; g < h->n_groups; g++) {
            size_t i = 0;
            while (i < x->n_groups && strcmp(x->group_names[i], h->groups[g].name) != 0)
                i++;
            if (i == x->n_groups)
                snprintf(x->group_names[x->n_groups++], H5S_TRACT_NAME_MAX, "%s",
                         h->groups[g].name);
        }
    }
    for (size_t s = 0; s < x->n_shards; s++) {
        ex_shard *sh = &x->shards[s];
        sh->group_of = calloc(x->n_groups ? x->n_groups : 1, sizeof *sh->group_of);
        sh->group_valid = calloc(x->n_groups ? x->n_groups : 1, sizeof *sh->group_valid);
        if (!sh->group_of || !sh->group_valid)
            return h5s_error_set(H5S_ENOMEM, "%s: out of memory", x->out);
        for (size_t g = 0; g < x->n_groups; g++)
            sh->group_of[g] = find_group(sh->h, x->group_names[g]);
    }
    return 0;
}

/* Counts, per shard and group, the indices that name committed streamlines (the entry's
 * size must be known before it is written). */
static int count_groups(ex_ctx *x)
{
    size_t cap = x->block / 4;
    uint32_t *buf = NULL;
    int rc = 0;
    for (size_t s = 0; rc == 0 && s < x->n_shards; s++) {
        ex_shard *sh = &x->shards[s];
        for (size_t g = 0; rc == 0 && g < x->n_groups; g++) {
            if (sh->group_of[g] < 0)
                continue;
            uint64_t n = (uint64_t)sh->h->groups[sh->group_of[g]].count;
            if (n && !buf && !(buf = malloc(cap * 4)))
                rc = h5s_error_set(H5S_ENOMEM, "%s: out of memory", x->out);
            for (uint64_t at = 0; rc == 0 && at < n;) {
                uint64_t m = n - at < cap ? n - at : cap;
                rc = h5s_tracts_reader_read_rows(sh->r, H5S_TRACTS_GROUP, (size_t)sh->group_of[g],
                                                 at, m, buf, cap * 4);
                for (uint64_t i = 0; rc == 0 && i < m; i++)
                    sh->group_valid[g] += buf[i] < sh->ns;
                at += m;
            }
        }
    }
    free(buf);
    return rc;
}

/* ---- TRX pull sources ---- */

/* Reads the next block of the entry into dst (x->block bytes). 0 with *len > 0, or an error. */
static int read_block(ex_entry *e, unsigned char *dst, size_t *len)
{
    ex_ctx *x = e->x;
    *len = 0;
    if (e->which == H5S_TRACTS_OFFSETS && !e->started) {
        memset(dst, 0, 8);
        *len = 8;
        e->started = 1;
        e->row = 1;
        return 0;
    }
    while (e->shard < x->n_shards) {
        ex_shard *sh = &x->shards[e->shard];
        uint64_t rows = 0;
        long idx = (long)e->index;
        switch (e->which) {
        case H5S_TRACTS_POSITIONS:
        case H5S_TRACTS_DPV:
            rows = sh->nv;
            break;
        case H5S_TRACTS_DPS:
            rows = sh->ns;
            break;
        case H5S_TRACTS_OFFSETS:
            rows = sh->ns + 1;
            break;
        case H5S_TRACTS_GROUP:
            idx = sh->group_of[e->index];
            rows = idx < 0 ? 0 : (uint64_t)sh->h->groups[idx].count;
            break;
        }
        if (e->row >= rows) {
            e->shard++;
            e->row = e->which == H5S_TRACTS_OFFSETS ? 1 : 0;
            continue;
        }
        uint64_t per = x->block / e->row_bytes, m = rows - e->row < per ? rows - e->row : per;
        int rc =
            h5s_tracts_reader_read_rows(sh->r, e->which, (size_t)idx, e->row, m, dst, x->block);
        if (rc)
            return rc;
        e->row += m;
        if (e->which == H5S_TRACTS_OFFSETS) {
            uint64_t *o = (uint64_t *)dst;
            for (uint64_t i = 0; i < m; i++)
                o[i] += sh->v_base;
        } else if (e->which == H5S_TRACTS_GROUP) {
            uint32_t *g = (uint32_t *)dst;
            uint64_t kept = 0;
            for (uint64_t i = 0; i < m; i++)
                if (g[i] < sh->ns)
                    g[kept++] = (uint32_t)(g[i] + sh->s_base);
            m = kept;
            if (m == 0)
                continue;
        }
        *len = (size_t)m * e->row_bytes;
        return 0;
    }
    return h5s_error_set(H5S_EFORMAT,
                         "%s: entry %s ran out of rows before its declared size "
                         "(the shards changed while exporting?)",
                         x->out, e->name);
}

/* The read-ahead thread: every streamed entry, in order, block by block into free slots. */
static void *read_ahead(void *arg)
{
    ex_ctx *x = arg;
    ex_ahead *ra = &x->ra;
    int rc = 0;
    pthread_mutex_lock(&ra->mu);
    for (size_t i = 0; rc == 0 && !ra->stop && i < x->n_entries; i++) {
        ex_entry *e = &x->entries[i];
        for (uint64_t made = 0; rc == 0 && !e->mem && made < e->size;) {
            while (ra->count == EXPORT_SLOTS && !ra->stop)
                pthread_cond_wait(&ra->cv, &ra->mu);
            if (ra->stop)
                break;
            size_t k = (ra->head + ra->count) % EXPORT_SLOTS, len = 0;
            pthread_mutex_unlock(&ra->mu);
            rc = read_block(e, ra->slot[k], &len);
            char *msg = rc ? strdup(h5s_error_message()) : NULL; /* messages are per thread */
            pthread_mutex_lock(&ra->mu);
            if (rc) {
                ra->rc = rc;
                ra->msg = msg;
                break;
            }
            ra->slot_len[k] = len;
            ra->slot_entry[k] = i;
            ra->count++;
            made += len;
            pthread_cond_broadcast(&ra->cv);
        }
    }
    ra->done = 1;
    pthread_cond_broadcast(&ra->cv);
    pthread_mutex_unlock(&ra->mu);
    return NULL;
}

static int ahead_start(ex_ctx *x)
{
    ex_ahead *ra = &x->ra;
    for (int k = 0; k < EXPORT_SLOTS; k++)
        if (!(ra->slot[k] = malloc(x->block)))
            return h5s_error_set(H5S_ENOMEM, "%s: out of memory for a block of %zu bytes", x->out,
                                 x->block);
    if (pthread_mutex_init(&ra->mu, NULL) != 0)
        return h5s_error_set(H5S_ENOMEM, "%s: cannot create a mutex", x->out);
    if (pthread_cond_init(&ra->cv, NULL) != 0) {
        pthread_mutex_destroy(&ra->mu);
        return h5s_error_set(H5S_ENOMEM, "%s: cannot create a condition variable", x->out);
    }
    if (pthread_create(&ra->thread, NULL, read_ahead, x) != 0) {
        pthread_cond_destroy(&ra->cv);
        pthread_mutex_destroy(&ra->mu);
        return h5s_error_set(H5S_ENOMEM, "%s: cannot start the read-ahead thread", x->out);
    }
    ra->running = 1;
    return 0;
}

static void ahead_stop(ex_ctx *x)
{
    ex_ahead *ra = &x->ra;
    if (ra->running) {
        pthread_mutex_lock(&ra->mu);
        ra->stop = 1;
        pthread_cond_broadcast(&ra->cv);
        pthread_mutex_unlock(&ra->mu);
        pthread_join(ra->thread, NULL);
        pthread_cond_destroy(&ra->cv);
        pthread_mutex_destroy(&ra->mu);
        ra->running = 0;
    }
    for (int k = 0; k < EXPORT_SLOTS; k++) {
        free(ra->slot[k]);
        ra->slot[k] = NULL;
    }
    free(ra->msg);
    ra->msg = NULL;
}

/* Gives back the slot the entry holds, so the thread can read into it. */
static void release_block(ex_entry *e)
{
    ex_ahead *ra = &e->x->ra;
    if (!e->holding)
        return;
    pthread_mutex_lock(&ra->mu);
    ra->head = (ra->head + 1) % EXPORT_SLOTS;
    ra->count--;
    pthread_cond_broadcast(&ra->cv);
    pthread_mutex_unlock(&ra->mu);
    e->holding = 0;
    e->buf = NULL;
    e->len = e->pos = 0;
}

/* Takes the entry's next block from the read-ahead thread. */
static int next_block(ex_entry *e)
{
    ex_ctx *x = e->x;
    ex_ahead *ra = &x->ra;
    release_block(e);
    pthread_mutex_lock(&ra->mu);
    while (ra->count == 0 && !ra->done)
        pthread_cond_wait(&ra->cv, &ra->mu);
    int rc = 0;
    if (ra->count == 0 && ra->rc)
        rc = h5s_error_restore(ra->rc, ra->msg ? ra->msg : "");
    else if (ra->count == 0 || ra->slot_entry[ra->head] != (size_t)(e - x->entries))
        rc =
            h5s_error_set(H5S_EINVAL, "%s: entry %s: the TRX writer asked for entries out of order",
                          x->out, e->name);
    if (rc == 0) {
        e->buf = ra->slot[ra->head];
        e->len = ra->slot_len[ra->head];
        e->pos = 0;
        e->holding = 1;
    }
    pthread_mutex_unlock(&ra->mu);
    return rc;
}

static int entry_fill(size_t *out_len, void *buf, size_t cap, void *payload)
{
    ex_entry *e = payload;
    if (e->mem) {
        size_t n = e->row_bytes - e->pos < cap ? e->row_bytes - e->pos : cap;
        memcpy(buf, e->mem + e->pos, n);
        e->pos += n;
        *out_len = n;
        return 0;
    }
    size_t done = 0;
    while (done < cap) {
        if (e->pos == e->len) {
            /* Take the next block only when the writer wants more than this one holds. */
            if (done > 0)
                break;
            int rc = next_block(e);
            if (rc)
                return rc;
        }
        size_t n = e->len - e->pos < cap - done ? e->len - e->pos : cap - done;
        memcpy((unsigned char *)buf + done, e->buf + e->pos, n);
        e->pos += n;
        done += n;
    }
    e->x->bytes += done;
    *out_len = done;
    return 0;
}

/* The writer calls fill until the declared size; the slot is given back when that is
 * reached, so the next entry's blocks can follow. */
static int entry_fill_and_release(size_t *out_len, void *buf, size_t cap, void *payload)
{
    ex_entry *e = payload;
    int rc = entry_fill(out_len, buf, cap, payload);
    if (rc == 0) {
        e->given += *out_len;
        if (e->given >= e->size)
            release_block(e);
    }
    return rc;
}

static ex_entry *new_entry(ex_ctx *x, h5s_tracts_array which, size_t index, size_t row_bytes,
                           uint64_t size)
{
    ex_entry *e = &x->entries[x->n_entries++];
    memset(e, 0, sizeof *e);
    e->x = x;
    e->which = which;
    e->index = index;
    e->row_bytes = row_bytes;
    e->size = size;
    return e;
}

/* Picks the dpg values of GROUP/NAME by the shard rule; *out NULL when no shard has it. */
static int pick_dpg(const ex_ctx *x, const char *group, const char *name, const h5s_tract_dpg **out,
                    size_t *from)
{
    *out = NULL;
    const h5s_tract_dpg *first = NULL;
    size_t first_s = 0;
    for (size_t s = 0; s < x->n_shards; s++) {
        const h5s_tract_header *h = x->shards[s].h;
        for (size_t i = 0; i < h->n_dpg; i++) {
            const h5s_tract_dpg *d = &h->dpg[i];
            if (strcmp(d->group, group) != 0 || strcmp(d->name, name) != 0)
                continue;
            if (!first) {
                first = d;
                first_s = s;
            }
            long g = find_group(h, group);
            size_t og = 0;
            while (og < x->n_groups && strcmp(x->group_names[og], group) != 0)
                og++;
            if (g < 0 || og == x->n_groups || x->shards[s].group_valid[og] == 0)
                continue; /* an empty group's dpg does not count */
            if (!*out) {
                *out = d;
                *from = s;
            } else if ((*out)->dtype != d->dtype || (*out)->n_values != d->n_values ||
                       memcmp((*out)->raw, d->raw, d->n_values * h5s_dtype_size(d->dtype)) != 0) {
                return h5s_error_set(H5S_EFORMAT,
                                     "dpg %s/%s: %s and %s hold different values (shards must "
                                     "agree on the dpg of a group both have streamlines in)",
                                     group, name, h5s_tracts_reader_path(x->shards[*from].r),
                                     h5s_tracts_reader_path(x->shards[s].r));
            }
        }
    }
    if (!*out) {
        *out = first;
        *from = first_s;
    }
    return 0;
}

static int dpg_seen(const ex_ctx *x, size_t upto_shard, size_t upto_i, const char *group,
                    const char *name)
{
    for (size_t s = 0; s <= upto_shard; s++) {
        const h5s_tract_header *h = x->shards[s].h;
        size_t end = s == upto_shard ? upto_i : h->n_dpg;
        for (size_t i = 0; i < end; i++)
            if (strcmp(h->dpg[i].group, group) == 0 && strcmp(h->dpg[i].name, name) == 0)
                return 1;
    }
    return 0;
}

/* Lists the TRX entries, names and sizes, in the order they are written (the read-ahead
 * thread follows that order). */
static int plan_trx(ex_ctx *x)
{
    const h5s_tract_header *h0 = x->shards[0].h;
    size_t n_dpg = 0;
    for (size_t s = 0; s < x->n_shards; s++)
        n_dpg += x->shards[s].h->n_dpg;
    size_t max_entries = 2 + h0->n_dps + h0->n_dpv + x->n_groups + n_dpg;
    x->entries = calloc(max_entries, sizeof *x->entries);
    if (!x->entries)
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", x->out);
    size_t psize = h5s_dtype_size(h0->positions_dtype) * 3;
    ex_entry *e = new_entry(x, H5S_TRACTS_POSITIONS, 0, psize, x->nv * psize);
    int rc = h5s_trx_entry_name(e->name, sizeof e->name, H5S_TRX_POSITIONS, NULL, NULL, 3,
                                h0->positions_dtype);
    if (rc == 0) {
        e = new_entry(x, H5S_TRACTS_OFFSETS, 0, 8, (x->ns + 1) * 8);
        snprintf(e->name, sizeof e->name, "offsets.uint64");
    }
    for (int kind = 0; kind < 2 && rc == 0; kind++) {
        size_t n = kind ? h0->n_dpv : h0->n_dps;
        const h5s_tract_field *f = kind ? h0->dpv : h0->dps;
        for (size_t i = 0; i < n && rc == 0; i++) {
            size_t rb = h5s_dtype_size(f[i].dtype) * f[i].ncols;
            e = new_entry(x, kind ? H5S_TRACTS_DPV : H5S_TRACTS_DPS, i, rb,
                          (kind ? x->nv : x->ns) * rb);
            rc = h5s_trx_entry_name(e->name, sizeof e->name, kind ? H5S_TRX_DPV : H5S_TRX_DPS, NULL,
                                    f[i].name, f[i].ncols, f[i].dtype);
        }
    }
    for (size_t g = 0; g < x->n_groups && rc == 0; g++) {
        uint64_t total = 0;
        for (size_t s = 0; s < x->n_shards; s++)
            total += x->shards[s].group_valid[g];
        e = new_entry(x, H5S_TRACTS_GROUP, g, 4, total * 4);
        rc = h5s_trx_entry_name(e->name, sizeof e->name, H5S_TRX_GROUP, NULL, x->group_names[g], 1,
                                H5S_UINT32);
    }
    for (size_t s = 0; s < x->n_shards && rc == 0; s++) {
        const h5s_tract_header *h = x->shards[s].h;
        for (size_t i = 0; i < h->n_dpg && rc == 0; i++) {
            if (dpg_seen(x, s, i, h->dpg[i].group, h->dpg[i].name))
                continue;
            const h5s_tract_dpg *d = NULL;
            size_t from = 0;
            rc = pick_dpg(x, h->dpg[i].group, h->dpg[i].name, &d, &from);
            if (rc || !d)
                break;
            size_t bytes = d->n_values * h5s_dtype_size(d->dtype);
            e = new_entry(x, H5S_TRACTS_GROUP, 0, bytes, bytes);
            e->mem = d->raw;
            rc = h5s_trx_entry_name(e->name, sizeof e->name, H5S_TRX_DPG, d->group, d->name,
                                    d->ncols, d->dtype);
        }
    }
    return rc;
}

static int export_trx(ex_ctx *x, const h5s_tracts_export_options *o)
{
    if (x->n_groups && x->ns > UINT32_MAX)
        return h5s_error_set(H5S_ERANGE,
                             "%s: %llu streamlines: TRX group indices are uint32, so groups "
                             "cannot name them all",
                             x->out, (unsigned long long)x->ns);
    int rc = plan_trx(x);
    if (rc)
        return rc;
    h5s_trx_write_options wo = H5S_TRX_WRITE_OPTIONS_INIT;
    wo.mode = o->trx_mode;
    wo.deflate_level = o->deflate_level;
    wo.buffer_size = x->block;
    h5s_trx_writer *w = NULL;
    rc = h5s_trx_writer_open(&w, x->out, &wo);
    if (rc)
        return rc;
    rc = ahead_start(x);
    h5s_tract_header th = *x->shards[0].h;
    th.nb_streamlines = (int64_t)x->ns;
    th.nb_vertices = (int64_t)x->nv;
    if (rc == 0)
        rc = h5s_trx_writer_add_header(w, &th);
    for (size_t i = 0; i < x->n_entries && rc == 0; i++) {
        ex_entry *e = &x->entries[i];
        rc = h5s_trx_writer_add(w, e->name, e->size, e->mem ? entry_fill : entry_fill_and_release,
                                e);
    }
    if (rc) {
        h5s_trx_writer_discard(w);
        ahead_stop(x);
        return rc;
    }
    rc = h5s_trx_writer_close(w);
    ahead_stop(x);
    return rc;
}

/* ---- TCK and TRK ---- */

static int export_streams(ex_ctx *x, h5s_tract_format format)
{
    h5s_tract_header th = *x->shards[0].h;
    th.nb_streamlines = (int64_t)x->ns;
    th.nb_vertices = (int64_t)x->nv;
    th.positions_dtype = H5S_FLOAT32;
    th.n_groups = 0;
    th.n_dpg = 0;
    h5s_tract_writer *w = NULL;
    int rc = h5s_tract_writer_open(&w, x->out, format, &th);
    if (rc)
        return rc;
    uint32_t dps_w = th.dps_width, dpv_w = th.dpv_width;
    for (size_t s = 0; s < x->n_shards && rc == 0; s++) {
        ex_shard *sh = &x->shards[s];
        for (uint64_t at = 0; at < sh->ns && rc == 0;) {
            uint64_t n = sh->ns - at < EXPORT_BATCH ? sh->ns - at : EXPORT_BATCH;
            h5s_tracts_batch b;
            unsigned what = H5S_TRACTS_READ_POINTS;
            if (format == H5S_TRACT_TRK)
                what = H5S_TRACTS_READ_ALL;
            rc = h5s_tracts_reader_read(sh->r, at, n, what, &b);
            for (uint64_t i = 0; i < n && rc == 0; i++) {
                h5s_tract_streamline sl;
                uint64_t p = b.offsets[i];
                sl.index = sh->s_base + at + i;
                sl.n_points = (size_t)(b.offsets[i + 1] - p);
                sl.points = b.points + p * 3;
                sl.dps = b.dps ? b.dps + i * dps_w : NULL;
                sl.dpv = b.dpv ? b.dpv + p * dpv_w : NULL;
                rc = h5s_tract_writer_write(w, &sl);
                if (rc)
                    h5s_error_prefix(rc, "%s: streamline %llu", x->out,
                                     (unsigned long long)sl.index);
            }
            x->bytes += b.n_points * 12;
            at += n;
        }
    }
    int crc = h5s_tract_writer_close(w);
    return rc ? rc : crc;
}

int h5s_tracts_export(const char *const *inputs, size_t n_inputs, const char *out_path,
                      const h5s_tracts_export_options *opts, h5s_tracts_export_report *report)
{
    static const h5s_tracts_export_options defaults = H5S_TRACTS_EXPORT_OPTIONS_INIT;
    if (!inputs || n_inputs == 0 || !out_path || !out_path[0])
        return h5s_error_set(H5S_EINVAL, "h5s_tracts_export: no input or no output");
    if (!opts)
        opts = &defaults;
    if (opts->version != H5S_TRACTS_EXPORT_OPTIONS_VERSION ||
        (opts->format != H5S_TRACT_TRX && opts->format != H5S_TRACT_TCK &&
         opts->format != H5S_TRACT_TRK))
        return h5s_error_set(H5S_EINVAL, "%s: bad export options (format %d)", out_path,
                             (int)opts->format);
    ex_ctx x;
    memset(&x, 0, sizeof x);
    x.out = out_path;
    x.block = opts->block_bytes ? opts->block_bytes : EXPORT_BLOCK_DEFAULT;
    if (x.block < 4096)
        x.block = 4096;
    x.shards = calloc(n_inputs, sizeof *x.shards);
    if (!x.shards)
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", out_path);
    x.n_shards = n_inputs;
    int rc = 0;
    for (size_t s = 0; s < n_inputs && rc == 0; s++) {
        ex_shard *sh = &x.shards[s];
        h5s_tracts_reader_options ro = H5S_TRACTS_READER_OPTIONS_INIT;
        ro.sequential = opts->format == H5S_TRACT_TRX; /* TCK/TRK read by streamline batches */
        rc = h5s_tracts_reader_open(&sh->r, inputs[s], &ro);
        if (rc)
            break;
        sh->h = h5s_tracts_reader_header(sh->r);
        sh->ns = (uint64_t)sh->h->nb_streamlines;
        sh->nv = (uint64_t)sh->h->nb_vertices;
        sh->s_base = x.ns;
        sh->v_base = x.nv;
        x.ns += sh->ns;
        x.nv += sh->nv;
        /* Rows wider than a block would never fit one read. */
        if (rc == 0 && s > 0)
            rc = check_shard(&x, s);
    }
    for (size_t f = 0; rc == 0 && f < x.shards[0].h->n_dpv; f++)
        if (h5s_dtype_size(x.shards[0].h->dpv[f].dtype) * x.shards[0].h->dpv[f].ncols > x.block)
            rc = h5s_error_set(H5S_EINVAL, "%s: dpv %s rows are wider than a block", out_path,
                               x.shards[0].h->dpv[f].name);
    for (size_t f = 0; rc == 0 && f < x.shards[0].h->n_dps; f++)
        if (h5s_dtype_size(x.shards[0].h->dps[f].dtype) * x.shards[0].h->dps[f].ncols > x.block)
            rc = h5s_error_set(H5S_EINVAL, "%s: dps %s rows are wider than a block", out_path,
                               x.shards[0].h->dps[f].name);
    if (rc == 0)
        rc = collect_groups(&x);
    if (rc == 0 && opts->format == H5S_TRACT_TRX)
        rc = count_groups(&x);
    if (rc == 0)
        rc =
            opts->format == H5S_TRACT_TRX ? export_trx(&x, opts) : export_streams(&x, opts->format);
    if (rc == 0 && report) {
        report->streamlines = x.ns;
        report->vertices = x.nv;
        report->shards = x.n_shards;
        report->bytes = x.bytes;
    }
    free(x.entries);
    for (size_t s = 0; s < x.n_shards; s++) {
        h5s_tracts_reader_close(x.shards[s].r);
        free(x.shards[s].group_of);
        free(x.shards[s].group_valid);
    }
    free(x.shards);
    free(x.group_names);
    return rc;
}
