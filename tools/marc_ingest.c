/*
 * marc_ingest.c - the ISO 2709 ingest pipeline (marc_ingest.h).
 *
 *   this thread: maps each regular file whole (read()s pipes) and hands out 4 MiB windows
 *                of it as batches, cuts their records with the formats/ cursor (the
 *                scanner's rules, no copy); the bytes of a record cut by the window's end
 *                start the next batch; drops the pages the writer is done with;
 *   parsers:     check each record (h5s_marc_check in the run's mode), fill its index row,
 *                repair or convert into the batch's own arena (no per-record malloc);
 *   committer:   whichever parser finishes the next batch in input order appends it to
 *                the model in one call; records read through the mapping are lent, so
 *                whole 1 MiB chunks are stored straight from it (no copy).
 * Memory: the batches in flight (2 per parser + 2), the queue budget, and the mapped
 * pages not yet written (about the queue budget); the mapping is unmapped after close.
 * A source that shrinks while it is mapped: see "Sources that shrink" below.
 */
#include "marc_ingest.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "h5s_marc_writer.h"

#define BLOCK_BYTES ((size_t)4 << 20)
#define MAX_THREADS 64

typedef struct {
    size_t off; /* in the batch buffer */
    size_t len;
    uint64_t ordinal;
    uint32_t flags; /* H5S_MARC_SPAN_* */
} span_rec;

typedef struct batch {
    struct batch *next; /* free list or work queue */
    uint64_t seq;
    uint32_t source;
    uint64_t base;      /* source offset of buf[0] */
    unsigned char *buf; /* len bytes: into own, or into the source's mapping */
    size_t len;
    unsigned char *own; /* read() buffer */
    size_t own_cap;
    int mapped; /* buf is in the source's mapping: its bytes can be lent to the model */
    span_rec *spans;
    size_t n, cap_spans;
    h5s_marc_item *items; /* cap_spans */
    size_t *alt_off;      /* per item: offset in altered, or SIZE_MAX */
    uint32_t *rep_idx;    /* per item: index in reports, or UINT32_MAX */
    h5s_marc_report *reports;
    size_t nreports, cap_reports;
    h5s_marc_buf altered; /* repaired / converted bytes */
    size_t ncommit;       /* items to commit (all, or up to a strict stop) */
    int stop;             /* strict: this batch holds the first bad record */
    char stop_msg[1024];
    size_t parsed; /* parser: records fully handled so far */
    int shrunk;    /* the source shrank: commit ncommit records, then fail with err */
    int rc;
    char err[512];
} batch;

/* A source's whole mapping, whose bytes are lent to the model. */
typedef struct mapping {
    unsigned char *base;
    size_t len;
    atomic_size_t released; /* the writer is done with [0, released) (about: see lent_done) */
    size_t dropped;         /* reader: [0, dropped) is out of the mapping's page tables */
} mapping;

typedef struct {
    const marc_ingest_args *a;
    h5s_marc_model *model;
    const char *const *names; /* source names as stored */
    pthread_mutex_t mu;
    pthread_cond_t cv_free, cv_work;
    batch *all;
    size_t nbatches;
    batch *free_list;
    batch *work_head, *work_tail;
    batch **ready; /* by seq % nbatches */
    uint64_t next_commit;
    int committing;
    int quit;    /* parsers: no more work will come */
    int halted;  /* reader: a source shrank; read nothing more */
    int stopped; /* strict stop or an error: commit nothing more, read nothing more */
    int rc;
    char err[1024];
    int source_failed; /* rc came from a source (unreadable, or shrank), not the output */
    int strict_stopped;
    char stop_msg[1024];
    uint64_t repaired, converted;
    mapping *maps; /* per source: its whole mapping (regular files), unmapped after close */
} pipeline;

typedef struct {
    pipeline *p;
    h5s_marc_buf repaired, scratch;
    h5s_marc_charconv *cv;
} parser;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- sources that shrink ------------------------------------------------------------ */

/*
 * A regular source is read through a mapping. If someone truncates the file meanwhile, a
 * read of a page past its new end raises SIGBUS. The reader and the parsers touch the
 * mapping only inside a guard (cut_guarded, parse_guarded): there the handler jumps back,
 * the batch keeps the records handled before the fault, and the run fails after committing
 * them, naming the source, the byte offset and the new size. Elsewhere the writer's
 * pwrite from the mapping fails with EFAULT (an I/O error naming the dataset), and in any
 * other thread (the committer copying the tail of a chunk, an encoder compressing one) the
 * handler says what happened and the process dies as it would have: the output is then
 * like a killed writer's, for `h5stream recover`. No locks are held, and nothing is
 * allocated, where a guard can jump from.
 */
static _Thread_local sigjmp_buf *fault_jump;
static _Thread_local const unsigned char *fault_addr;

static void on_sigbus(int sig, siginfo_t *si, void *ctx)
{
    (void)ctx;
    if (fault_jump) {
        fault_addr = si->si_addr;
        siglongjmp(*fault_jump, 1);
    }
    static const char msg[] = "h5stream: SIGBUS: an input file shrank while it was read; the "
                              "output is left as a killed writer leaves it (h5stream recover)\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)w;
    /* Back to the default: the faulting read runs again and ends the process. */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigaction(sig, &dfl, NULL);
}

/* The message for a fault at fault_addr in source sid's mapping. */
static void shrunk_message(pipeline *p, uint32_t sid, const unsigned char *at, char *out,
                           size_t cap)
{
    const mapping *m = &p->maps[sid];
    struct stat st;
    long long now = stat(p->a->sources[sid], &st) == 0 ? (long long)st.st_size : -1;
    size_t off = at >= m->base && at < m->base + m->len ? (size_t)(at - m->base) : m->len;
    snprintf(out, cap,
             "%s: the file shrank while it was read: byte %zu is past its end (%lld bytes now, "
             "%zu when opened); the records before it are stored",
             p->names[sid], off, now, m->len);
}

static void fail_locked(pipeline *p, int rc, const char *msg)
{
    if (!p->rc) {
        p->rc = rc;
        snprintf(p->err, sizeof p->err, "%s", msg);
    }
    p->stopped = 1;
    pthread_cond_broadcast(&p->cv_free);
}

/* fail_locked for a source that cannot be read (the run's first error is then the input's). */
static void fail_source_locked(pipeline *p, const char *msg)
{
    if (!p->rc)
        p->source_failed = 1;
    fail_locked(p, H5S_EIO, msg);
}

static int grow(void **ptr, size_t *cap, size_t want, size_t elem)
{
    if (*cap >= want)
        return 0;
    size_t n = *cap ? *cap : 1024;
    while (n < want)
        n *= 2;
    void *q = realloc(*ptr, n * elem);
    if (!q)
        return -1;
    *ptr = q;
    *cap = n;
    return 0;
}

/* Grows realloc'd array *p of elem-sized entries to cap entries. */
static int resize(void **p, size_t cap, size_t elem)
{
    void *q = realloc(*p, cap * elem);
    if (!q)
        return -1;
    *p = q;
    return 0;
}

static int batch_reserve_spans(batch *b, size_t want)
{
    if (b->cap_spans >= want)
        return 0;
    size_t cap = b->cap_spans ? 2 * b->cap_spans : 4096;
    while (cap < want)
        cap *= 2;
    if (resize((void **)&b->spans, cap, sizeof *b->spans) ||
        resize((void **)&b->items, cap, sizeof *b->items) ||
        resize((void **)&b->alt_off, cap, sizeof *b->alt_off) ||
        resize((void **)&b->rep_idx, cap, sizeof *b->rep_idx))
        return -1;
    b->cap_spans = cap;
    return 0;
}

static void batch_release(batch *b)
{
    free(b->own);
    free(b->spans);
    free(b->items);
    free(b->alt_off);
    free(b->rep_idx);
    free(b->reports);
    h5s_marc_buf_free(&b->altered);
}

/* ---- parsers ---------------------------------------------------------------------- */

static int keep_report(batch *b, size_t i, const h5s_marc_report *rep)
{
    if (b->nreports == b->cap_reports &&
        grow((void **)&b->reports, &b->cap_reports, b->nreports + 1, sizeof *b->reports))
        return -1;
    b->reports[b->nreports] = *rep;
    b->rep_idx[i] = (uint32_t)b->nreports++;
    return 0;
}

static int keep_altered(batch *b, size_t i, const h5s_marc_buf *bytes)
{
    b->alt_off[i] = b->altered.len;
    return h5s_marc_buf_append(&b->altered, bytes->data, bytes->len) ? -1 : 0;
}

/* The arenas of b's first ncommit items are final: turn their offsets into pointers. */
static void batch_finalize(batch *b)
{
    for (size_t i = 0; i < b->ncommit; i++) {
        if (b->alt_off[i] != SIZE_MAX)
            b->items[i].data = b->altered.data + b->alt_off[i];
        if (b->rep_idx[i] != UINT32_MAX)
            b->items[i].report = &b->reports[b->rep_idx[i]];
    }
}

/* Checks every record of b; returns 0 or -1 with b->err set. */
static int parse_batch(parser *w, batch *b)
{
    pipeline *p = w->p;
    const marc_ingest_args *a = p->a;
    b->altered.len = 0;
    b->nreports = 0;
    b->ncommit = b->n;
    b->stop = 0;
    for (size_t i = 0; i < b->n; i++) {
        b->parsed = i;
        const span_rec *s = &b->spans[i];
        const unsigned char *rec = b->buf + s->off;
        h5s_marc_item *it = &b->items[i];
        b->alt_off[i] = SIZE_MAX;
        b->rep_idx[i] = UINT32_MAX;
        h5s_marc_report rep;
        int acc = h5s_marc_check(&rep, &w->repaired, rec, s->len, a->mode);
        if (acc < 0) {
            snprintf(b->err, sizeof b->err, "%s", h5s_error_message());
            return -1;
        }
        it->data = rec;
        it->len = s->len;
        it->original = NULL;
        it->original_len = 0;
        it->rejected = !acc;
        it->report = NULL;
        const unsigned char *stored = rec;
        size_t stored_len = s->len;
        int converted = 0;
        if (acc && w->repaired.len) {
            if (keep_altered(b, i, &w->repaired))
                goto oom;
            stored = w->repaired.data;
            stored_len = w->repaired.len;
        }
        if (acc && a->to_utf8 && stored_len > 9 && stored[9] == ' ') {
            size_t bad = 0;
            int rc = w->cv ? 0 : h5s_marc_charconv_open(&w->cv);
            if (rc == 0)
                rc = h5s_marc_charconv_record(w->cv, &w->scratch, stored, stored_len, &bad);
            if (rc == 0) {
                b->alt_off[i] = SIZE_MAX; /* the converted form replaces a repaired one */
                if (keep_altered(b, i, &w->scratch))
                    goto oom;
                stored = w->scratch.data;
                stored_len = w->scratch.len;
                converted = 1;
            } else if (rc != H5S_EFORMAT) {
                snprintf(b->err, sizeof b->err, "%s", h5s_error_message());
                return -1;
            }
        }
        h5s_marc_model_index_row(&it->index, stored, stored_len, &rep, s->flags);
        it->index.ordinal = s->ordinal;
        it->index.source = b->source;
        it->index.source_offset = b->base + s->off;
        if (converted) {
            it->index.flags |= H5S_MARC_IX_CONVERTED | H5S_MARC_IX_MARC8;
            it->index.flags &= ~H5S_MARC_IX_UTF8;
        }
        if (b->alt_off[i] != SIZE_MAX) {
            it->original = rec;
            it->original_len = s->len;
            it->len = stored_len;
        }
        if ((!acc || (rep.flags & H5S_MARC_F_REPAIRED)) && keep_report(b, i, &rep))
            goto oom;
        if (!acc && a->mode == H5S_MARC_STRICT) {
            h5s_marc_report_format(b->stop_msg, sizeof b->stop_msg, &rep, p->names[b->source],
                                   s->ordinal, b->base + s->off, rec, s->len);
            b->stop = 1;
            b->ncommit = i + 1;
            break;
        }
    }
    batch_finalize(b);
    return 0;
oom:
    snprintf(b->err, sizeof b->err, "out of memory for a batch of %zu records", b->n);
    return -1;
}

#define RELEASE_BYTES ((size_t)16 << 20)

/*
 * The writer is done with lent input bytes (a 1 MiB chunk of /marc/records it stored).
 * Only noted here: the writer thread is the ingest's critical path. The reader drops the
 * pages below that mark from the mapping as it goes (drop_released). Chunks can finish
 * out of order when they are compressed, so the mark may run ahead of one still being
 * encoded; a page dropped too early is only mapped again when that encoder touches it.
 */
static void lent_done(void *ctx, const void *bytes, size_t len)
{
    mapping *m = ctx;
    size_t end = (size_t)((const unsigned char *)bytes - m->base) + len;
    size_t cur = atomic_load(&m->released);
    while (cur < end && !atomic_compare_exchange_weak(&m->released, &cur, end))
        ;
}

/*
 * Reader thread: the pages the writer is done with leave this process's mapping (they stay
 * in the page cache), 16 MiB at a time (each call costs every core a TLB flush), so the
 * resident size stays about the queue budget whatever the input's size.
 */
static void drop_released(mapping *m)
{
    size_t upto = atomic_load(&m->released) / RELEASE_BYTES * RELEASE_BYTES;
    if (upto > m->dropped) {
        madvise(m->base + m->dropped, upto - m->dropped, MADV_DONTNEED);
        m->dropped = upto;
    }
}

/* Appends b to the model (committer only; in input order). Records read through a
 * mapping are lent: the model stores whole chunks straight from the mapping. */
static int commit_batch(pipeline *p, batch *b, char *err, size_t errsize)
{
    if (b->ncommit == 0)
        return 0; /* a batch that only carries a shrunk source's error */
    int rc = b->mapped ? h5s_marc_model_append_lent(p->model, b->items, b->ncommit, lent_done,
                                                    &p->maps[b->source])
                       : h5s_marc_model_append(p->model, b->items, b->ncommit);
    if (rc) {
        snprintf(err, errsize, "%s", h5s_error_message());
        return rc;
    }
    for (size_t i = 0; i < b->ncommit; i++) {
        uint32_t f = b->items[i].index.flags;
        if (b->items[i].rejected)
            continue;
        if (f & H5S_MARC_IX_REPAIRED)
            p->repaired++;
        if (f & H5S_MARC_IX_CONVERTED)
            p->converted++;
    }
    return 0;
}

static void put_free_locked(pipeline *p, batch *b)
{
    b->next = p->free_list;
    p->free_list = b;
    pthread_cond_broadcast(&p->cv_free);
}

/* A parsed batch: commit it and every following one that is ready, in order. */
static void finish_batch(pipeline *p, batch *b)
{
    pthread_mutex_lock(&p->mu);
    p->ready[b->seq % p->nbatches] = b;
    if (p->committing) {
        pthread_mutex_unlock(&p->mu);
        return;
    }
    p->committing = 1;
    for (;;) {
        batch *c = p->ready[p->next_commit % p->nbatches];
        if (!c || c->seq != p->next_commit)
            break;
        p->ready[p->next_commit % p->nbatches] = NULL;
        int skip = p->stopped;
        pthread_mutex_unlock(&p->mu);
        char err[1024] = "";
        int rc = 0;
        if (!skip && c->rc)
            rc = c->rc;
        else if (!skip)
            rc = commit_batch(p, c, err, sizeof err);
        pthread_mutex_lock(&p->mu);
        if (!skip && c->rc)
            fail_locked(p, c->rc, c->err);
        else if (!skip && rc)
            fail_locked(p, rc, err);
        else if (!skip && c->shrunk)
            fail_source_locked(p, c->err);
        else if (!skip && c->stop) {
            p->strict_stopped = 1;
            snprintf(p->stop_msg, sizeof p->stop_msg, "%s", c->stop_msg);
            p->stopped = 1;
        }
        p->next_commit++;
        put_free_locked(p, c);
    }
    p->committing = 0;
    pthread_mutex_unlock(&p->mu);
}

/*
 * parse_batch under the fault guard. When the source shrank under the batch, it keeps the
 * records handled before the fault and is marked shrunk (committed in order, then the run
 * fails). The converter may have been left mid-record: it is dropped.
 */
static int parse_guarded(parser *w, batch *b)
{
    sigjmp_buf jb;
    if (sigsetjmp(jb, 0)) {
        fault_jump = NULL;
        b->ncommit = b->parsed;
        b->stop = 0;
        b->shrunk = 1;
        shrunk_message(w->p, b->source, fault_addr, b->err, sizeof b->err);
        batch_finalize(b);
        h5s_marc_charconv_free(w->cv);
        w->cv = NULL;
        return 0;
    }
    fault_jump = &jb;
    int rc = parse_batch(w, b);
    fault_jump = NULL;
    return rc;
}

static void *parser_main(void *arg)
{
    parser *w = arg;
    pipeline *p = w->p;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->work_head && !p->quit)
            pthread_cond_wait(&p->cv_work, &p->mu);
        batch *b = p->work_head;
        if (!b) {
            pthread_mutex_unlock(&p->mu);
            break;
        }
        p->work_head = b->next;
        if (!p->work_head)
            p->work_tail = NULL;
        int skip = p->stopped;
        pthread_mutex_unlock(&p->mu);
        b->rc = 0;
        if (!skip && parse_guarded(w, b) != 0)
            b->rc = H5S_ENOMEM;
        finish_batch(p, b);
    }
    return NULL;
}

/* ---- reader (this thread) --------------------------------------------------------- */

static batch *get_free(pipeline *p)
{
    pthread_mutex_lock(&p->mu);
    while (!p->free_list && !p->stopped)
        pthread_cond_wait(&p->cv_free, &p->mu);
    batch *b = p->stopped ? NULL : p->free_list;
    if (b)
        p->free_list = b->next;
    pthread_mutex_unlock(&p->mu);
    if (b) {
        b->len = 0;
        b->n = 0;
        b->rc = 0;
        b->mapped = 0;
    }
    return b;
}

static void submit(pipeline *p, batch *b, uint64_t *seq)
{
    b->seq = (*seq)++;
    b->next = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->work_tail)
        p->work_tail->next = b;
    else
        p->work_head = b;
    p->work_tail = b;
    pthread_cond_signal(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
}

static int is_stopped(pipeline *p)
{
    pthread_mutex_lock(&p->mu);
    int s = p->stopped;
    pthread_mutex_unlock(&p->mu);
    return s || (p->a->stop && *p->a->stop);
}

static void fail(pipeline *p, int rc, const char *fmt, const char *name, const char *why)
{
    char msg[1024];
    snprintf(msg, sizeof msg, fmt, name, why);
    pthread_mutex_lock(&p->mu);
    fail_locked(p, rc, msg);
    pthread_mutex_unlock(&p->mu);
}

static void fail_source(pipeline *p, const char *name, const char *why)
{
    char msg[1024];
    snprintf(msg, sizeof msg, "%s: %s", name, why);
    pthread_mutex_lock(&p->mu);
    fail_source_locked(p, msg);
    pthread_mutex_unlock(&p->mu);
}

/*
 * Cutting records: the formats/ cursor makes the scanner's cuts (its rules decide every
 * unusual case: lying or missing lengths, a missing 0x1D, truncation, junk, newlines
 * between records) over the batch's own bytes, so spans are offsets into the window and
 * nothing is copied. One cursor per source carries the position and the ordinals from one
 * window to the next.
 */
static int add_span(pipeline *p, batch *b, const h5s_marc_span *sp)
{
    if (b->n == b->cap_spans && batch_reserve_spans(b, b->n + 1)) {
        fail(p, H5S_ENOMEM, "%s: %s", p->names[b->source], "out of memory for record spans");
        return -1;
    }
    span_rec *r = &b->spans[b->n++];
    r->off = (size_t)(sp->data - b->buf);
    r->len = sp->len;
    r->flags = sp->flags;
    r->ordinal = sp->ordinal;
    return 0;
}

/* Cuts every whole record of b (which holds the source from c->offset on). 0, or -1. */
static int cut_records(pipeline *p, h5s_marc_cursor *c, batch *b, int eof, uint64_t *ordinal)
{
    if (h5s_marc_cursor_window(c, b->buf, b->len, b->base, eof) != 0) {
        fail(p, H5S_EINVAL, "%s: %s", p->names[b->source], h5s_error_message());
        return -1;
    }
    h5s_marc_span sp;
    int rc = 0;
    while (rc == 0 && h5s_marc_cursor_next(c, &sp) == 1)
        rc = add_span(p, b, &sp);
    *ordinal = c->ordinal;
    return rc;
}

/* cut_records under the fault guard: 1 when the source shrank under the window (b keeps
 * the records cut before the fault), else cut_records' 0 or -1. */
static int cut_guarded(pipeline *p, h5s_marc_cursor *c, batch *b, int eof, uint64_t *ordinal)
{
    sigjmp_buf jb;
    if (sigsetjmp(jb, 0)) {
        fault_jump = NULL;
        *ordinal = c->ordinal;
        return 1;
    }
    fault_jump = &jb;
    int rc = cut_records(p, c, b, eof, ordinal);
    fault_jump = NULL;
    return rc;
}

static void give_back(pipeline *p, batch *b)
{
    pthread_mutex_lock(&p->mu);
    put_free_locked(p, b);
    pthread_mutex_unlock(&p->mu);
}

/* A new batch that starts at source offset base (the previous batch's unfinished tail). */
static batch *next_batch(pipeline *p, uint32_t sid, uint64_t base)
{
    batch *nb = get_free(p);
    if (nb) {
        nb->source = sid;
        nb->base = base;
        nb->shrunk = 0;
        nb->buf = nb->own;
        nb->len = 0;
    }
    return nb;
}

/*
 * A regular file: mapped whole, once (0 when it cannot be: then it is read as a stream).
 * Each batch is a window of the mapping, no copy; the next window starts at the previous
 * batch's unfinished tail. The scanner gets each byte once. The mapping lives until the
 * output is closed, since the model stores chunks of records straight from it. A source
 * truncated by someone else while it is read: see "Sources that shrink".
 */
static int read_mapped(pipeline *p, uint32_t sid, int fd, uint64_t size, uint64_t *seq,
                       uint64_t *ordinal, uint64_t *bytes_in)
{
    if (size > SIZE_MAX)
        return 0;
    void *m = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED)
        return 0;
    mapping *mp = &p->maps[sid];
    mp->base = m;
    mp->len = (size_t)size;
    unsigned char *base = m;
    uint64_t pos = 0; /* bytes handed to the cursor so far */
    h5s_marc_cursor c;
    h5s_marc_cursor_init(&c, 0);
    c.ordinal = *ordinal;
    batch *b = next_batch(p, sid, 0);
    while (b && !is_stopped(p)) {
        uint64_t end = size - pos > BLOCK_BYTES ? pos + BLOCK_BYTES : size;
        drop_released(mp);
        b->mapped = 1;
        b->buf = base + b->base;
        b->len = (size_t)(end - b->base);
        *bytes_in += end - pos;
        pos = end;
        int eof = pos == size;
        int cut = cut_guarded(p, &c, b, eof, ordinal);
        if (cut == 1) {
            /* The records cut before the fault go on; this batch then ends the run. */
            b->shrunk = 1;
            shrunk_message(p, sid, fault_addr, b->err, sizeof b->err);
            submit(p, b, seq);
            b = NULL;
            p->halted = 1;
            break;
        }
        if (cut != 0)
            break;
        if (b->n == 0) {
            if (eof)
                break;
            continue; /* a record longer than the window: widen it */
        }
        batch *nb = eof ? NULL : next_batch(p, sid, c.offset);
        submit(p, b, seq);
        b = nb;
    }
    if (b)
        give_back(p, b);
    return 1;
}

/* A pipe or terminal: read() into each batch's own buffer. */
static void read_stream(pipeline *p, uint32_t sid, int fd, uint64_t *seq, uint64_t *ordinal,
                        uint64_t *bytes_in)
{
    const char *name = p->names[sid];
    h5s_marc_cursor c;
    h5s_marc_cursor_init(&c, 0);
    c.ordinal = *ordinal;
    batch *b = next_batch(p, sid, 0);
    int eof = 0;
    while (b && !eof && !is_stopped(p)) {
        if (grow((void **)&b->own, &b->own_cap, b->len + BLOCK_BYTES, 1)) {
            fail(p, H5S_ENOMEM, "%s: %s", name, "out of memory for a read block");
            break;
        }
        b->buf = b->own;
        /* What has come so far: a live pipe's records go on as they arrive. */
        ssize_t n;
        do
            n = read(fd, b->buf + b->len, BLOCK_BYTES);
        while (n < 0 && errno == EINTR && !is_stopped(p));
        if (n < 0 && errno == EINTR)
            break; /* a signal asked to stop: what was cut so far is committed */
        if (n < 0) {
            char why[300];
            snprintf(why, sizeof why, "read failed: %s", strerror(errno));
            fail_source(p, name, why);
            break;
        }
        eof = n == 0;
        *bytes_in += (uint64_t)n;
        b->len += (size_t)n;
        if (cut_records(p, &c, b, eof, ordinal) != 0)
            break;
        if (b->n == 0)
            continue;
        /* Bytes after the last record (a record cut by the block end) start the next. */
        size_t tail_at = (size_t)(c.offset - b->base);
        size_t tail = b->len - tail_at;
        batch *nb = eof ? NULL : next_batch(p, sid, b->base + tail_at);
        if (nb && grow((void **)&nb->own, &nb->own_cap, tail + BLOCK_BYTES, 1)) {
            fail(p, H5S_ENOMEM, "%s: %s", name, "out of memory for a read block");
            give_back(p, nb);
            nb = NULL;
        } else if (nb) {
            nb->buf = nb->own;
            memcpy(nb->buf, b->buf + tail_at, tail);
            nb->len = tail;
        }
        submit(p, b, seq);
        b = nb;
    }
    if (b)
        give_back(p, b);
}

/* Reads one source to its end (or a stop). */
static void read_source(pipeline *p, uint32_t sid, uint64_t *seq, uint64_t *ordinal,
                        uint64_t *bytes_in)
{
    const char *path = p->a->sources[sid];
    const char *name = p->names[sid];
    int fd = strcmp(path, "-") == 0 ? STDIN_FILENO : open(path, O_RDONLY);
    if (fd < 0) {
        fail_source(p, name, strerror(errno));
        return;
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
        posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
        if (!read_mapped(p, sid, fd, (uint64_t)st.st_size, seq, ordinal, bytes_in))
            read_stream(p, sid, fd, seq, ordinal, bytes_in);
    } else {
        read_stream(p, sid, fd, seq, ordinal, bytes_in);
    }
    if (fd != STDIN_FILENO)
        close(fd);
}

/* ---- the run ---------------------------------------------------------------------- */

static int open_model(const marc_ingest_args *a, h5s_file **file, h5s_marc_model **model,
                      const char *const *names, char *err, size_t errsize)
{
    h5s_file_options fo = a->file;
    int rc = h5s_file_create(file, a->output, &fo);
    h5s_marc_model_options mo = H5S_MARC_MODEL_OPTIONS_INIT;
    mo.codec = a->codec;
    mo.mode = a->mode;
    if (rc == 0)
        rc = h5s_marc_model_create(model, *file, names, a->nsources, &mo);
    if (rc == 0)
        rc = h5s_file_start_swmr(*file);
    if (rc)
        snprintf(err, errsize, "%s", h5s_error_message());
    return rc;
}

int marc_ingest_run(const marc_ingest_args *a, marc_ingest_result *out)
{
    memset(out, 0, sizeof *out);
    double t0 = now_s();
    const char **names = calloc(a->nsources ? a->nsources : 1, sizeof *names);
    if (!names) {
        snprintf(out->error, sizeof out->error, "out of memory");
        return H5S_ENOMEM;
    }
    for (size_t i = 0; i < a->nsources; i++)
        names[i] = strcmp(a->sources[i], "-") == 0 ? "<stdin>" : a->sources[i];

    h5s_file *file = NULL;
    h5s_marc_model *model = NULL;
    int rc = open_model(a, &file, &model, names, out->error, sizeof out->error);
    if (rc) {
        h5s_file_close(file);
        h5s_marc_model_free(model);
        free(names);
        return rc;
    }

    int nthreads = a->threads;
    if (nthreads <= 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        nthreads = cores > 0 ? (int)cores : 1;
    }
    if (nthreads > MAX_THREADS)
        nthreads = MAX_THREADS;
    pipeline p;
    memset(&p, 0, sizeof p);
    p.a = a;
    p.model = model;
    p.names = names;
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.cv_free, NULL);
    pthread_cond_init(&p.cv_work, NULL);
    p.nbatches = (size_t)nthreads * 2 + 2;
    p.all = calloc(p.nbatches, sizeof *p.all);
    p.ready = calloc(p.nbatches, sizeof *p.ready);
    p.maps = calloc(a->nsources ? a->nsources : 1, sizeof *p.maps);
    parser *ws = calloc((size_t)nthreads, sizeof *ws);
    pthread_t th[MAX_THREADS];
    int started = 0;
    if (!p.all || !p.ready || !p.maps || !ws) {
        rc = H5S_ENOMEM;
        snprintf(out->error, sizeof out->error, "out of memory");
    } else {
        for (size_t i = 0; i < p.nbatches; i++)
            put_free_locked(&p, &p.all[i]);
        for (; started < nthreads; started++) {
            ws[started].p = &p;
            if (pthread_create(&th[started], NULL, parser_main, &ws[started]) != 0)
                break;
        }
        if (!started) {
            rc = H5S_ENOMEM;
            snprintf(out->error, sizeof out->error, "cannot start the parser threads");
        }
    }
    uint64_t seq = 0, ordinal = 0;
    struct sigaction sa, old_bus;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER; /* guards jump out with sigsetjmp(.., 0) */
    sigemptyset(&sa.sa_mask);
    int bus_set = sigaction(SIGBUS, &sa, &old_bus) == 0;
    for (size_t i = 0; rc == 0 && i < a->nsources && !p.halted && !is_stopped(&p); i++)
        read_source(&p, (uint32_t)i, &seq, &ordinal, &out->bytes_in);
    pthread_mutex_lock(&p.mu);
    p.quit = 1;
    pthread_cond_broadcast(&p.cv_work);
    pthread_mutex_unlock(&p.mu);
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    if (rc == 0 && p.rc) {
        rc = p.rc;
        snprintf(out->error, sizeof out->error, "%s", p.err);
    }
    /* The control index covers what was committed, also after a strict stop or an error
     * (then the file says "failed" or is missing records, and readers scan instead). */
    int frc = h5s_marc_model_finish(model);
    if (frc && rc == 0) {
        rc = frc;
        snprintf(out->error, sizeof out->error, "%s", h5s_error_message());
    }
    int crc = h5s_file_close(file);
    if (crc && rc == 0) {
        rc = crc;
        snprintf(out->error, sizeof out->error, "%s", h5s_error_message());
    }
    if (bus_set)
        sigaction(SIGBUS, &old_bus, NULL);
    /* Closed: no lent bytes are in use any more. */
    for (size_t i = 0; p.maps && i < a->nsources; i++)
        if (p.maps[i].base)
            munmap(p.maps[i].base, p.maps[i].len);
    h5s_marc_model_stats st;
    h5s_marc_model_stats_get(model, &st);
    out->accepted = st.accepted;
    out->rejected = st.rejected;
    /* After a strict stop the records cut past the bad one were never handled. */
    out->read = p.strict_stopped ? st.accepted + st.rejected : ordinal;
    out->repaired = p.repaired;
    out->converted = p.converted;
    out->strict_stopped = p.strict_stopped;
    out->source_failed = rc != 0 && p.source_failed && rc == p.rc;
    snprintf(out->stop_message, sizeof out->stop_message, "%s", p.stop_msg);
    out->seconds = now_s() - t0;
    h5s_marc_model_free(model);
    for (int i = 0; ws && i < nthreads; i++) {
        h5s_marc_buf_free(&ws[i].repaired);
        h5s_marc_buf_free(&ws[i].scratch);
        h5s_marc_charconv_free(ws[i].cv);
    }
    free(ws);
    for (size_t i = 0; p.all && i < p.nbatches; i++)
        batch_release(&p.all[i]);
    free(p.all);
    free(p.ready);
    free(p.maps);
    pthread_cond_destroy(&p.cv_free);
    pthread_cond_destroy(&p.cv_work);
    pthread_mutex_destroy(&p.mu);
    free(names);
    return rc;
}
