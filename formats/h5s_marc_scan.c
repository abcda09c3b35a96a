/*
 * h5s_marc_scan.c - cuts an ISO 2709 byte stream into records (ISO 2709 4.2: leader/00-04
 * is the record length, 0x1D ends the record). The leader length is trusted only when it
 * lands on a 0x1D; otherwise the record is cut at the next 0x1D and flagged RESYNC.
 */
#include "h5s_marc.h"

#include <stdlib.h>
#include <string.h>

#include "h5s_error.h"

#define SCAN_BLOCK 65536
#define SCAN_DEFAULT_MAX ((size_t)16 << 20)

struct h5s_marc_scanner {
    unsigned char *buf;
    size_t cap;
    size_t start;     /* first unconsumed byte */
    size_t end;       /* one past the last byte held */
    size_t searched;  /* bytes from start already searched for 0x1D without success */
    uint64_t base;    /* stream offset of buf[0] */
    uint64_t ordinal; /* records returned */
    uint64_t skipped; /* separators skipped since the last record */
    size_t max_record;
    int finished;
};

int h5s_marc_scanner_create(h5s_marc_scanner **out, size_t max_record)
{
    if (!out)
        return h5s_error_set(H5S_EINVAL, "marc scanner: out is NULL");
    *out = NULL;
    h5s_marc_scanner *s = calloc(1, sizeof(*s));
    if (!s)
        return h5s_error_set(H5S_ENOMEM, "marc scanner: out of memory");
    s->max_record = max_record ? max_record : SCAN_DEFAULT_MAX;
    if (s->max_record < 32)
        s->max_record = 32;
    *out = s;
    return 0;
}

void h5s_marc_scanner_free(h5s_marc_scanner *s)
{
    if (!s)
        return;
    free(s->buf);
    free(s);
}

int h5s_marc_scanner_feed(h5s_marc_scanner *s, const void *data, size_t n)
{
    if (!s || (!data && n))
        return h5s_error_set(H5S_EINVAL, "marc scanner: NULL argument");
    if (s->finished)
        return h5s_error_set(H5S_ESTATE, "marc scanner: feed after finish");
    if (n == 0)
        return 0;
    if (s->start > 0) { /* compact: spans handed out before are invalid from here on */
        memmove(s->buf, s->buf + s->start, s->end - s->start);
        s->base += s->start;
        s->end -= s->start;
        s->start = 0;
    }
    if (s->end + n > s->cap) {
        size_t cap = s->cap ? s->cap : SCAN_BLOCK;
        while (cap < s->end + n)
            cap *= 2;
        unsigned char *p = realloc(s->buf, cap);
        if (!p)
            return h5s_error_set(H5S_ENOMEM, "marc scanner: out of memory for %zu bytes", cap);
        s->buf = p;
        s->cap = cap;
    }
    memcpy(s->buf + s->end, data, n);
    s->end += n;
    return 0;
}

void h5s_marc_scanner_finish(h5s_marc_scanner *s)
{
    if (s)
        s->finished = 1;
}

long h5s_marc_scanner_fill(h5s_marc_scanner *s, FILE *fp)
{
    unsigned char block[SCAN_BLOCK];
    if (!s || !fp)
        return h5s_error_set(H5S_EINVAL, "marc scanner: NULL argument");
    size_t got = fread(block, 1, sizeof(block), fp);
    if (got == 0) {
        if (ferror(fp))
            return h5s_error_set(H5S_EIO, "marc scanner: read error at byte %llu",
                                 (unsigned long long)(s->base + s->end));
        h5s_marc_scanner_finish(s);
        return 0;
    }
    int rc = h5s_marc_scanner_feed(s, block, got);
    return rc < 0 ? rc : (long)got;
}

uint64_t h5s_marc_scanner_offset(const h5s_marc_scanner *s)
{
    return s ? s->base + s->start : 0;
}

/* Leader/00-04 as a number, or 0 when not 5 digits. */
static size_t declared_length(const unsigned char *p)
{
    size_t v = 0;
    for (int i = 0; i < 5; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
        v = v * 10 + (size_t)(p[i] - '0');
    }
    return v;
}

static int emit(h5s_marc_scanner *s, h5s_marc_span *out, size_t len, uint32_t flags)
{
    out->data = s->buf + s->start;
    out->len = len;
    out->offset = s->base + s->start;
    out->ordinal = s->ordinal++;
    out->skipped = s->skipped;
    s->skipped = 0;
    out->flags = flags;
    s->start += len;
    s->searched = 0;
    return 1;
}

/*
 * The cut of the record at p (avail bytes held; finished: nothing follows them). Returns 1
 * with *len and *flags, or H5S_EAGAIN when more bytes are needed. *searched is how far a
 * search for 0x1D from p has already failed (a hint kept between calls; 0 at first).
 * Both the copying scanner and the cursor cut with it, so their records are the same.
 */
static int cut(const unsigned char *p, size_t avail, int finished, size_t max_record,
               size_t *searched, size_t *len, uint32_t *flags)
{
    size_t want = avail >= 5 ? declared_length(p) : 0;
    if (want < H5S_MARC_LEADER_LEN + 1)
        want = 0;
    *flags = 0;
    if (want) {
        if (avail >= want) {
            if (p[want - 1] == H5S_MARC_RT) {
                *len = want;
                return 1;
            }
        } else if (!finished && want <= max_record) {
            return H5S_EAGAIN;
        }
    }
    /* The length lies (or is missing): cut at the next terminator. */
    size_t from = *searched < avail ? *searched : avail;
    const unsigned char *rt = memchr(p + from, H5S_MARC_RT, avail - from);
    if (rt) {
        *len = (size_t)(rt - p) + 1;
        /*
         * A record whose length holds but whose 0x1D is missing (it ends in 0x1E and the
         * next record's leader follows) is cut at its length, not merged with the next.
         */
        if (want && want < *len && p[want - 1] == H5S_MARC_FT && avail >= want + 5 &&
            declared_length(p + want) >= H5S_MARC_LEADER_LEN + 1) {
            *len = want;
            *flags = H5S_MARC_SPAN_NO_RT;
        } else {
            *flags = H5S_MARC_SPAN_RESYNC;
        }
        return 1;
    }
    *searched = avail;
    if (!finished && avail < max_record)
        return H5S_EAGAIN;
    if (want && want <= avail && p[want - 1] == H5S_MARC_FT) {
        *len = want;
        *flags = H5S_MARC_SPAN_NO_RT;
        return 1;
    }
    *len = avail < max_record ? avail : max_record;
    *flags = H5S_MARC_SPAN_TRUNCATED;
    return 1;
}

int h5s_marc_scanner_next(h5s_marc_scanner *s, h5s_marc_span *out)
{
    if (!s || !out)
        return h5s_error_set(H5S_EINVAL, "marc scanner: NULL argument");
    /* Newlines between records (one record per line exports) are separators. */
    while (s->start < s->end && (s->buf[s->start] == '\n' || s->buf[s->start] == '\r')) {
        s->start++;
        s->skipped++;
        s->searched = 0;
    }
    size_t avail = s->end - s->start;
    if (avail == 0)
        return s->finished ? 0 : H5S_EAGAIN;
    if (avail < 5 && !s->finished)
        return H5S_EAGAIN;
    size_t len;
    uint32_t flags;
    int rc = cut(s->buf + s->start, avail, s->finished, s->max_record, &s->searched, &len, &flags);
    return rc == 1 ? emit(s, out, len, flags) : rc;
}

/* ------------------------------------------------------------------------- cursor */

int h5s_marc_cursor_init(h5s_marc_cursor *c, size_t max_record)
{
    if (!c)
        return h5s_error_set(H5S_EINVAL, "marc cursor: NULL argument");
    memset(c, 0, sizeof(*c));
    c->max_record = max_record ? max_record : SCAN_DEFAULT_MAX;
    if (c->max_record < 32)
        c->max_record = 32;
    return 0;
}

int h5s_marc_cursor_window(h5s_marc_cursor *c, const void *data, size_t len, uint64_t offset,
                           int eof)
{
    if (!c || (!data && len))
        return h5s_error_set(H5S_EINVAL, "marc cursor: NULL argument");
    if (offset > c->offset || offset + len < c->offset)
        return h5s_error_set(H5S_EINVAL,
                             "marc cursor: window [%llu, %llu) does not hold stream byte %llu",
                             (unsigned long long)offset, (unsigned long long)(offset + len),
                             (unsigned long long)c->offset);
    c->data = data;
    c->len = len;
    c->pos = (size_t)(c->offset - offset);
    c->fetched = 0;
    c->eof = eof != 0;
    return 0;
}

int h5s_marc_cursor_next(h5s_marc_cursor *c, h5s_marc_span *out)
{
    if (!c || !out)
        return h5s_error_set(H5S_EINVAL, "marc cursor: NULL argument");
    const unsigned char *buf = c->data;
    while (c->pos < c->len && (buf[c->pos] == '\n' || buf[c->pos] == '\r')) {
        c->pos++;
        c->offset++;
        c->skipped++;
        c->searched = 0;
    }
    size_t avail = c->len - c->pos;
    if (avail == 0)
        return c->eof ? 0 : H5S_EAGAIN;
    if (avail < 5 && !c->eof)
        return H5S_EAGAIN;
    const unsigned char *p = buf + c->pos;
    size_t len;
    uint32_t flags;
    int rc = cut(p, avail, c->eof, c->max_record, &c->searched, &len, &flags);
    if (rc != 1)
        return rc;
#if defined(__GNUC__)
    /* Records are cut one after the other: fetch the lines of the next few ahead of time
     * (their leaders are a chain of dependent loads the hardware cannot guess). */
    size_t ahead = c->pos + len + 4096 < c->len ? c->pos + len + 4096 : c->len;
    if (c->fetched < c->pos)
        c->fetched = c->pos;
    for (; c->fetched < ahead; c->fetched += 64)
        __builtin_prefetch(buf + c->fetched);
#endif
    out->data = p;
    out->len = len;
    out->offset = c->offset;
    out->ordinal = c->ordinal++;
    out->skipped = c->skipped;
    out->flags = flags;
    c->skipped = 0;
    c->searched = 0;
    c->pos += len;
    c->offset += len;
    return 1;
}
