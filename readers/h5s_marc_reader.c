/*
 * h5s_marc_reader.c - SWMR reader of the marc model (h5s_marc_reader.h): open with retry,
 * refresh in commit order (status, index, then offsets and records), batch reads, lookups
 * by ordinal and control number, and the exporters' pipeline.
 */
#include "h5s_marc_reader.h"

#include <errno.h>
#include <hdf5.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "h5s_codec.h"
#include "h5s_error.h"
#include "h5s_rdutil.h"
#include "h5s_format.h"
#include "h5s_commit_lock.h"

#define MARC_PATH_MAX 256
/* Records are read in big batches: the chunk cache would only add a copy (HDF5 reads chunks
 * it does not cache straight into the caller's buffer). */
#define MARC_RECORDS_CACHE ((size_t)0)
#define MARC_DEFAULT_CACHE SIZE_MAX
#define MARC_INDEX_CACHE ((size_t)4 << 20)
#define MARC_ITER_BYTES ((size_t)4 << 20)
#define MARC_ITER_ROWS 65536
#define MARC_SCAN_ROWS 65536

/* Buffers of one batch read. */
typedef struct {
    unsigned char *bytes;
    size_t bytes_cap;
    uint64_t *offs; /* n + 1, relative to bytes */
    h5s_marc_index_row *rows;
    size_t rows_cap; /* rows; offs holds rows_cap + 1 */
    h5s_marc_batch batch;
} batch_buf;

typedef struct {
    uint64_t hash, row;
} map_slot;

struct h5s_marc_reader {
    char *path;
    char group[64];
    int rejected;
    int swmr;
    unsigned poll_ms;
    hid_t file, index, offsets, records, status;
    hid_t errors, repairs, originals, control; /* optional, H5I_INVALID_HID when absent */
    uint64_t count;
    h5s_writer_state state;
    char **sources;
    size_t nsources;

    batch_buf buf;  /* read and read_batch */
    batch_buf iter; /* next */
    uint64_t cursor;
    unsigned char *orig; /* repair's original bytes */
    size_t orig_cap;

    map_slot *map; /* control hash -> first row, open addressing, hash 0 = empty slot */
    size_t map_cap, map_n;
    uint64_t map_scanned;
    int used_index;
};

static void close_handles(h5s_marc_reader *r)
{
    h5s_rd_close(&r->control, H5Dclose);
    h5s_rd_close(&r->originals, H5Dclose);
    h5s_rd_close(&r->repairs, H5Dclose);
    h5s_rd_close(&r->errors, H5Dclose);
    h5s_rd_close(&r->status, H5Dclose);
    h5s_rd_close(&r->records, H5Dclose);
    h5s_rd_close(&r->offsets, H5Dclose);
    h5s_rd_close(&r->index, H5Dclose);
    h5s_rd_close(&r->file, H5Fclose);
}

static void free_sources(h5s_marc_reader *r)
{
    for (size_t i = 0; i < r->nsources; i++)
        free(r->sources[i]);
    free(r->sources);
    r->sources = NULL;
    r->nsources = 0;
}

static void batch_free(batch_buf *b)
{
    free(b->bytes);
    free(b->offs);
    free(b->rows);
    memset(b, 0, sizeof *b);
}

static hid_t open_dset(hid_t file, const char *path, size_t cache)
{
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    if (cache != MARC_DEFAULT_CACHE)
        H5Pset_chunk_cache(dapl, 521, cache, 1.0);
    hid_t d = H5Dopen2(file, path, dapl);
    H5Pclose(dapl);
    return d;
}

static int open_optional(hid_t file, const char *path, hid_t *out)
{
    int e = h5s_rd_path_exists(file, path);
    if (e <= 0)
        return e;
    *out = open_dset(file, path, MARC_DEFAULT_CACHE);
    return *out < 0 ? -1 : 0;
}

static void member_path(char *out, const h5s_marc_reader *r, const char *name)
{
    snprintf(out, MARC_PATH_MAX, "%s/%s", r->group, name);
}

/* ---- status and refresh ----------------------------------------------------------- */

static int read_status(h5s_marc_reader *r)
{
    return h5s_rd_writer_state(r->status, r->path, &r->state);
}

static int refresh_one(h5s_marc_reader *r, hid_t d, const char *what)
{
    if (d >= 0 && r->swmr && H5Drefresh(d) < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s/%s: refresh failed", r->path, r->group, what);
    return 0;
}

static int refresh_unlocked(h5s_marc_reader *r)
{
    int rc;
    /* Status first: "closed" is written after the final commit, so a marker read after it
     * is final. Then the marker, then the payload it covers. */
    if (r->status >= 0) {
        if ((rc = refresh_one(r, r->status, "status")) != 0 || (rc = read_status(r)) != 0)
            return rc;
    } else {
        r->state = H5S_WRITER_UNKNOWN;
    }
    uint64_t n, noff;
    if ((rc = refresh_one(r, r->index, H5S_MARC_INDEX)) != 0)
        return rc;
    if (h5s_rd_extent0(r->index, &n) < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s/index: cannot get extent", r->path, r->group);
    if ((rc = refresh_one(r, r->offsets, H5S_MARC_OFFSETS)) != 0 ||
        (rc = refresh_one(r, r->records, H5S_MARC_RECORDS)) != 0)
        return rc;
    if (h5s_rd_extent0(r->offsets, &noff) < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s/offsets: cannot get extent", r->path, r->group);
    /* A record counts only when its end offset is there too. */
    if (noff == 0)
        n = 0;
    else if (n > noff - 1)
        n = noff - 1;
    if (n > r->count)
        r->count = n;
    return 0;
}

/* One poll; a reader in the writer's process waits for a commit in progress
 * (h5s_commit_lock.h). */
static int do_refresh(h5s_marc_reader *r)
{
    int locked = h5s_commit_read_begin(r->file);
    int rc = refresh_unlocked(r);
    h5s_commit_read_end(locked);
    return rc;
}

int h5s_marc_reader_refresh(h5s_marc_reader *r, uint64_t *out_count)
{
    if (!r)
        return h5s_error_set(H5S_EINVAL, "h5s_marc_reader_refresh: NULL reader");
    int rc = do_refresh(r);
    if (out_count)
        *out_count = r->count;
    return rc;
}

uint64_t h5s_marc_reader_count(const h5s_marc_reader *r)
{
    return r ? r->count : 0;
}

h5s_writer_state h5s_marc_reader_writer_state(const h5s_marc_reader *r)
{
    return r ? r->state : H5S_WRITER_UNKNOWN;
}

static int refresh_cb(void *reader)
{
    return do_refresh(reader);
}

int h5s_marc_reader_wait(h5s_marc_reader *r, uint64_t known, int timeout_ms, uint64_t *out_count)
{
    if (!r)
        return h5s_error_set(H5S_EINVAL, "h5s_marc_reader_wait: NULL reader");
    h5s_rd_poll p = {r, refresh_cb, &r->count, &r->state, r->poll_ms, r->path, "record", r->group};
    int rc = h5s_rd_wait(&p, known, timeout_ms);
    if (out_count)
        *out_count = r->count;
    return rc;
}

/* ---- open ------------------------------------------------------------------------- */

static int read_sources(h5s_marc_reader *r)
{
    hid_t d = H5I_INVALID_HID;
    if (open_optional(r->file, H5S_MARC_SOURCES_PATH, &d) < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: cannot open %s", r->path, H5S_MARC_SOURCES_PATH);
    if (d < 0)
        return 0;
    uint64_t n = 0;
    hid_t ftype = H5Dget_type(d);
    size_t width = ftype >= 0 ? H5Tget_size(ftype) : 0;
    if (ftype >= 0)
        H5Tclose(ftype);
    int rc = 0;
    if (h5s_rd_extent0(d, &n) < 0 || width == 0 || width > 65536 || n > 1000000)
        rc = h5s_error_set(H5S_EFORMAT, "%s: %s is not a table of file names", r->path,
                           H5S_MARC_SOURCES_PATH);
    char *buf = rc == 0 && n ? calloc((size_t)n, width) : NULL;
    r->sources = rc == 0 && n ? calloc((size_t)n, sizeof *r->sources) : NULL;
    if (rc == 0 && n && (!buf || !r->sources))
        rc = h5s_error_set(H5S_ENOMEM, "%s: out of memory", r->path);
    hid_t mtype = h5s_marc_string_type(width);
    if (rc == 0 && n && H5Dread(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
        rc = h5s_error_set_h5(H5S_EIO, "%s: cannot read %s", r->path, H5S_MARC_SOURCES_PATH);
    H5Tclose(mtype);
    for (uint64_t i = 0; rc == 0 && i < n; i++) {
        size_t len = h5s_marc_fixed_len(buf + i * width, width);
        r->sources[i] = malloc(len + 1);
        if (!r->sources[i]) {
            rc = h5s_error_set(H5S_ENOMEM, "%s: out of memory", r->path);
            break;
        }
        memcpy(r->sources[i], buf + i * width, len);
        r->sources[i][len] = '\0';
        r->nsources = (size_t)i + 1;
    }
    free(buf);
    H5Dclose(d);
    return rc;
}

static int check_layout(h5s_marc_reader *r)
{
    hid_t g = H5Gopen2(r->file, H5S_MARC_ROOT, H5P_DEFAULT);
    if (g < 0)
        return h5s_error_set_h5(H5S_EFORMAT, "%s: %s is not a group", r->path, H5S_MARC_ROOT);
    int version = H5S_MARC_LAYOUT_VERSION;
    if (H5Aexists(g, H5S_MARC_ATTR_LAYOUT) > 0) {
        hid_t a = H5Aopen(g, H5S_MARC_ATTR_LAYOUT, H5P_DEFAULT);
        if (a < 0 || H5Aread(a, H5T_NATIVE_INT, &version) < 0)
            version = -1;
        if (a >= 0)
            H5Aclose(a);
    }
    H5Gclose(g);
    if (version != H5S_MARC_LAYOUT_VERSION)
        return h5s_error_set(H5S_EFORMAT, "%s: marc layout version %d, this reader knows %d",
                             r->path, version, H5S_MARC_LAYOUT_VERSION);
    hid_t t = H5Dget_type(r->index);
    size_t size = t >= 0 ? H5Tget_size(t) : 0;
    int ok = t >= 0 && H5Tget_class(t) == H5T_COMPOUND && H5Tget_member_index(t, "control") >= 0 &&
             H5Tget_member_index(t, "ordinal") >= 0 && size == sizeof(h5s_marc_index_row);
    if (t >= 0)
        H5Tclose(t);
    if (!ok)
        return h5s_error_set(H5S_EFORMAT, "%s: %s/index is not a marc index table", r->path,
                             r->group);
    return 0;
}

static int try_open(h5s_marc_reader *r, hid_t fapl)
{
    struct stat st;
    if (stat(r->path, &st) != 0)
        return h5s_error_set(H5S_EAGAIN, "%s: %s", r->path, strerror(errno));
    r->swmr = 1;
    r->file = H5Fopen(r->path, H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, fapl);
    if (r->file < 0) {
        h5s_error_set_h5(H5S_EAGAIN, "%s: cannot open for SWMR reading", r->path);
        r->swmr = 0;
        r->file = H5Fopen(r->path, H5F_ACC_RDONLY, fapl);
        H5Eclear2(H5E_DEFAULT);
        if (r->file < 0)
            return H5S_EAGAIN;
    }
    char p[MARC_PATH_MAX];
    member_path(p, r, H5S_MARC_INDEX);
    int e = h5s_rd_path_exists(r->file, p);
    if (e <= 0)
        return e < 0 ? h5s_error_set_h5(H5S_EIO, "%s: cannot look up %s", r->path, p)
                     : h5s_error_set(H5S_ENOTFOUND, "%s: no %s (not a marc file?)", r->path, p);
    r->index = open_dset(r->file, p, MARC_INDEX_CACHE);
    if (r->index < 0)
        return h5s_error_set_h5(H5S_EFORMAT, "%s: %s is not a readable dataset", r->path, p);
    /* The writer declares every dataset before SWMR starts: one missing is damage. */
    static const char *const needed[] = {H5S_MARC_OFFSETS, H5S_MARC_RECORDS};
    hid_t *ids[] = {&r->offsets, &r->records};
    for (size_t i = 0; i < 2; i++) {
        member_path(p, r, needed[i]);
        e = h5s_rd_path_exists(r->file, p);
        if (e == 0)
            return h5s_error_set(H5S_EFORMAT,
                                 "%s: %s is missing (%s has its index but not "
                                 "its %s)",
                                 r->path, p, r->group, needed[i]);
        *ids[i] = e > 0 ? open_dset(r->file, p, i == 0 ? MARC_INDEX_CACHE : MARC_RECORDS_CACHE)
                        : H5I_INVALID_HID;
        if (*ids[i] < 0)
            return h5s_error_set_h5(H5S_EFORMAT, "%s: %s is not a readable dataset", r->path, p);
    }
    int rc = check_layout(r);
    if (rc)
        return rc;
    if (open_optional(r->file, H5S_STATUS_DATASET, &r->status) < 0 ||
        (r->rejected && open_optional(r->file, H5S_MARC_ERRORS_PATH, &r->errors) < 0) ||
        (!r->rejected && open_optional(r->file, H5S_MARC_REPAIRS_PATH, &r->repairs) < 0) ||
        (!r->rejected && open_optional(r->file, H5S_MARC_ORIGINALS_PATH, &r->originals) < 0) ||
        (!r->rejected && open_optional(r->file, H5S_MARC_CONTROL_INDEX_PATH, &r->control) < 0))
        return h5s_error_set_h5(H5S_EIO, "%s: cannot open the marc tables", r->path);
    if ((rc = read_sources(r)) != 0)
        return rc;
    return do_refresh(r);
}

int h5s_marc_reader_open(h5s_marc_reader **out, const char *path,
                         const h5s_marc_reader_options *opts)
{
    static const h5s_marc_reader_options defaults = H5S_MARC_READER_OPTIONS_INIT;
    if (!out)
        return h5s_error_set(H5S_EINVAL, "h5s_marc_reader_open: out is NULL");
    *out = NULL;
    if (!path || !path[0])
        return h5s_error_set(H5S_EINVAL, "h5s_marc_reader_open: no file name");
    if (!opts)
        opts = &defaults;
    if (opts->version != H5S_MARC_READER_OPTIONS_VERSION || opts->open_timeout_ms < -1)
        return h5s_error_set(H5S_EINVAL, "h5s_marc_reader_open: bad options");
    h5s_hdf5_quiet();
    h5s_filters_init();
    h5s_marc_reader *r = calloc(1, sizeof *r);
    if (!r)
        return h5s_error_set(H5S_ENOMEM, "h5s_marc_reader_open: out of memory");
    r->file = r->index = r->offsets = r->records = r->status = H5I_INVALID_HID;
    r->errors = r->repairs = r->originals = r->control = H5I_INVALID_HID;
    r->rejected = opts->rejected ? 1 : 0;
    snprintf(r->group, sizeof r->group, "%s", r->rejected ? H5S_MARC_REJECTED : H5S_MARC_ROOT);
    r->poll_ms = opts->poll_ms ? opts->poll_ms : 1;
    r->path = strdup(path);
    hid_t fapl = r->path ? h5s_format_swmr_read_fapl() : H5I_INVALID_HID;
    if (fapl < 0) {
        h5s_marc_reader_close(r);
        return h5s_error_set(H5S_ENOMEM, "%s: cannot set up the reader", path);
    }
    int64_t start = h5s_rd_now_ms();
    int rc;
    char reason[1024];
    for (;;) {
        rc = try_open(r, fapl);
        if (rc == 0)
            break;
        close_handles(r);
        free_sources(r);
        r->count = 0;
        if (rc != H5S_EAGAIN && rc != H5S_ENOTFOUND)
            break;
        snprintf(reason, sizeof reason, "%s", h5s_error_message());
        int64_t elapsed = h5s_rd_now_ms() - start;
        if (opts->open_timeout_ms >= 0 && elapsed >= opts->open_timeout_ms) {
            /* A file that is not HDF5, or is cut short, will not open by waiting. */
            if (rc == H5S_EAGAIN && h5s_rd_unopenable(path) != 0) {
                rc = H5S_EFORMAT;
                break;
            }
            /* A missing /marc in an openable file keeps its own code. */
            if (rc != H5S_ENOTFOUND)
                rc = H5S_ETIMEDOUT;
            h5s_error_set(rc, "%s (after %lld ms)", reason, (long long)elapsed);
            break;
        }
        int64_t wait = r->poll_ms;
        if (opts->open_timeout_ms >= 0 && wait > opts->open_timeout_ms - elapsed)
            wait = opts->open_timeout_ms - elapsed;
        h5s_rd_sleep_ms(wait);
    }
    H5Pclose(fapl);
    if (rc) {
        h5s_marc_reader_close(r);
        return rc;
    }
    h5s_error_clear();
    *out = r;
    return 0;
}

void h5s_marc_reader_close(h5s_marc_reader *r)
{
    if (!r)
        return;
    close_handles(r);
    free_sources(r);
    batch_free(&r->buf);
    batch_free(&r->iter);
    free(r->orig);
    free(r->map);
    free(r->path);
    free(r);
}

size_t h5s_marc_reader_nsources(const h5s_marc_reader *r)
{
    return r ? r->nsources : 0;
}

const char *h5s_marc_reader_source(const h5s_marc_reader *r, uint32_t id)
{
    return r && id < r->nsources ? r->sources[id] : NULL;
}

/* ---- reading ---------------------------------------------------------------------- */

static int grow(void **p, size_t *cap, size_t want, size_t elem)
{
    if (*cap >= want)
        return 0;
    size_t n = *cap ? *cap : 64;
    while (n < want)
        n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q)
        return -1;
    *p = q;
    *cap = n;
    return 0;
}

/* Reads up to max_n records from first into b (see h5s_marc_reader_read_batch). */
static int read_into(h5s_marc_reader *r, uint64_t first, uint64_t max_n, size_t max_bytes,
                     batch_buf *b)
{
    if (first > r->count)
        return h5s_error_set(H5S_ERANGE, "%s: %s: row %llu is past the %llu committed records",
                             r->path, r->group, (unsigned long long)first,
                             (unsigned long long)r->count);
    uint64_t n = r->count - first;
    if (n > max_n)
        n = max_n;
    memset(&b->batch, 0, sizeof b->batch);
    b->batch.first = first;
    /* offs and rows share rows_cap: both hold at least n + 1 entries. */
    if (b->rows_cap < n + 1) {
        size_t cap = b->rows_cap, cap2 = b->rows_cap;
        if (grow((void **)&b->offs, &cap, n + 1, sizeof *b->offs) != 0 ||
            grow((void **)&b->rows, &cap2, n + 1, sizeof *b->rows) != 0)
            return h5s_error_set(H5S_ENOMEM, "%s: out of memory for %llu records", r->path,
                                 (unsigned long long)n);
        b->rows_cap = cap < cap2 ? cap : cap2;
    }
    if (n == 0) {
        b->offs[0] = 0;
        b->batch.offsets = b->offs;
        b->batch.bytes = b->bytes;
        b->batch.index = b->rows;
        return 0;
    }
    if (h5s_rd_read_rows(r->offsets, H5T_NATIVE_UINT64, first, n + 1, b->offs) < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s/offsets: cannot read rows %llu..%llu", r->path,
                                r->group, (unsigned long long)first,
                                (unsigned long long)(first + n));
    uint64_t base = b->offs[0];
    uint64_t k = 0;
    for (; k < n; k++) {
        if (b->offs[k + 1] < b->offs[k])
            return h5s_error_set(H5S_EFORMAT, "%s: %s/offsets decrease at row %llu", r->path,
                                 r->group, (unsigned long long)(first + k + 1));
        if (k > 0 && b->offs[k + 1] - base > max_bytes)
            break;
    }
    n = k;
    uint64_t nbytes = b->offs[n] - base;
    uint64_t have;
    if (h5s_rd_extent0(r->records, &have) < 0 || b->offs[n] > have)
        return h5s_error_set(H5S_EFORMAT, "%s: %s/offsets point past the records (%llu > %llu)",
                             r->path, r->group, (unsigned long long)b->offs[n],
                             (unsigned long long)have);
    if (nbytes > SIZE_MAX - 1 || grow((void **)&b->bytes, &b->bytes_cap, (size_t)nbytes + 1, 1))
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory for %llu bytes", r->path,
                             (unsigned long long)nbytes);
    hid_t itype = h5s_marc_index_type();
    herr_t st = h5s_rd_read_rows(r->index, itype, first, n, b->rows);
    H5Tclose(itype);
    if (st < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s/index: cannot read rows %llu..%llu", r->path,
                                r->group, (unsigned long long)first,
                                (unsigned long long)(first + n - 1));
    if (h5s_rd_read_rows(r->records, H5T_NATIVE_UCHAR, base, nbytes, b->bytes) < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s/records: cannot read records %llu..%llu", r->path,
                                r->group, (unsigned long long)first,
                                (unsigned long long)(first + n - 1));
    for (uint64_t i = 0; i <= n; i++)
        b->offs[i] -= base;
    b->batch.n = n;
    b->batch.bytes = b->bytes;
    b->batch.offsets = b->offs;
    b->batch.index = b->rows;
    return 0;
}

int h5s_marc_reader_read_batch(h5s_marc_reader *r, uint64_t first, uint64_t max_n, size_t max_bytes,
                               h5s_marc_batch *out)
{
    if (!r || !out)
        return h5s_error_set(H5S_EINVAL, "h5s_marc_reader_read_batch: NULL argument");
    int rc = read_into(r, first, max_n, max_bytes, &r->buf);
    if (rc == 0)
        *out = r->buf.batch;
    return rc;
}

static void record_of(const h5s_marc_batch *b, uint64_t k, h5s_marc_record *out)
{
    out->row = b->first + k;
    out->data = b->bytes + b->offsets[k];
    out->len = (size_t)(b->offsets[k + 1] - b->offsets[k]);
    out->index = b->index[k];
}

int h5s_marc_reader_read(h5s_marc_reader *r, uint64_t row, h5s_marc_record *out)
{
    if (!r || !out)
        return h5s_error_set(H5S_EINVAL, "h5s_marc_reader_read: NULL argument");
    if (row >= r->count)
        return h5s_error_set(H5S_ERANGE, "%s: %s: row %llu is not committed (%llu records)",
                             r->path, r->group, (unsigned long long)row,
                             (unsigned long long)r->count);
    int rc = read_into(r, row, 1, 0, &r->buf);
    if (rc == 0)
        record_of(&r->buf.batch, 0, out);
    return rc;
}

int h5s_marc_reader_next(h5s_marc_reader *r, h5s_marc_record *out)
{
    if (!r || !out)
        return h5s_error_set(H5S_EINVAL, "h5s_marc_reader_next: NULL argument");
    h5s_marc_batch *b = &r->iter.batch;
    if (!(b->n && r->cursor >= b->first && r->cursor < b->first + b->n)) {
        if (r->cursor >= r->count)
            return 0;
        int rc = read_into(r, r->cursor, MARC_ITER_ROWS, MARC_ITER_BYTES, &r->iter);
        if (rc)
            return rc;
    }
    record_of(b, r->cursor - b->first, out);
    r->cursor++;
    return 1;
}

void h5s_marc_reader_seek(h5s_marc_reader *r, uint64_t row)
{
    if (r)
        r->cursor = row;
}

/* One member of an index row (a partial compound read). */
static herr_t read_member(h5s_marc_reader *r, hid_t dset, const char *name, size_t size,
                          hid_t mtype, uint64_t first, uint64_t n, void *buf)
{
    hid_t t = H5Tcreate(H5T_COMPOUND, size);
    H5Tinsert(t, name, 0, mtype);
    herr_t st = h5s_rd_read_rows(dset, t, first, n, buf);
    H5Tclose(t);
    (void)r;
    return st;
}

int h5s_marc_reader_find_ordinal(h5s_marc_reader *r, uint64_t ordinal, uint64_t *out_row)
{
    if (!r || !out_row)
        return h5s_error_set(H5S_EINVAL, "h5s_marc_reader_find_ordinal: NULL argument");
    uint64_t lo = 0, hi = r->count; /* first row whose ordinal >= the one sought */
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2, v;
        if (read_member(r, r->index, "ordinal", sizeof v, H5T_NATIVE_UINT64, mid, 1, &v) < 0)
            return h5s_error_set_h5(H5S_EIO, "%s: %s/index: cannot read row %llu", r->path,
                                    r->group, (unsigned long long)mid);
        if (v < ordinal)
            lo = mid + 1;
        else
            hi = mid;
    }
    uint64_t v = UINT64_MAX;
    if (lo < r->count &&
        read_member(r, r->index, "ordinal", sizeof v, H5T_NATIVE_UINT64, lo, 1, &v) < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s/index: cannot read row %llu", r->path, r->group,
                                (unsigned long long)lo);
    if (v != ordinal)
        return h5s_error_set(H5S_ENOTFOUND, "%s: %s has no committed record of ordinal %llu",
                             r->path, r->group, (unsigned long long)ordinal);
    *out_row = lo;
    return 0;
}

/* ---- control numbers -------------------------------------------------------------- */

/* 1 when the row's stored control is exactly control (len bytes). */
static int control_matches(h5s_marc_reader *r, uint64_t row, const char *control, size_t len,
                           int *err)
{
    char c[H5S_MARC_CONTROL_BYTES];
    hid_t st = h5s_marc_string_type(H5S_MARC_CONTROL_BYTES);
    herr_t rc = read_member(r, r->index, "control", sizeof c, st, row, 1, c);
    H5Tclose(st);
    if (rc < 0) {
        *err = h5s_error_set_h5(H5S_EIO, "%s: %s/index: cannot read row %llu", r->path, r->group,
                                (unsigned long long)row);
        return 0;
    }
    return h5s_marc_fixed_len(c, sizeof c) == len && memcmp(c, control, len) == 0;
}

/* The control index is complete when the file is closed and its sentinel covers the
 * committed rows. Returns its row count without the sentinel, or -1 when unusable. */
static int64_t control_index_rows(h5s_marc_reader *r)
{
    if (r->control < 0 || r->state == H5S_WRITER_WRITING)
        return -1;
    if (refresh_one(r, r->control, "control_index") != 0) {
        h5s_error_clear();
        return -1;
    }
    uint64_t n;
    if (h5s_rd_extent0(r->control, &n) < 0 || n == 0)
        return -1;
    h5s_marc_control_row last;
    hid_t t = h5s_marc_control_type();
    herr_t st = h5s_rd_read_rows(r->control, t, n - 1, 1, &last);
    H5Tclose(t);
    if (st < 0 || last.hash != H5S_MARC_CONTROL_SENTINEL || last.row != r->count) {
        H5Eclear2(H5E_DEFAULT);
        return -1;
    }
    return (int64_t)(n - 1);
}

static int find_in_index(h5s_marc_reader *r, uint64_t n, uint64_t hash, const char *control,
                         size_t len, uint64_t *out_row)
{
    hid_t t = h5s_marc_control_type();
    uint64_t lo = 0, hi = n;
    int rc = 0;
    while (lo < hi && rc == 0) {
        uint64_t mid = lo + (hi - lo) / 2;
        h5s_marc_control_row row;
        if (h5s_rd_read_rows(r->control, t, mid, 1, &row) < 0)
            rc = h5s_error_set_h5(H5S_EIO, "%s: %s: cannot read row %llu", r->path,
                                  H5S_MARC_CONTROL_INDEX_PATH, (unsigned long long)mid);
        else if (row.hash < hash)
            lo = mid + 1;
        else
            hi = mid;
    }
    /* Rows of equal hash are in row order: the first whose control matches wins. */
    for (uint64_t i = lo; rc == 0 && i < n; i++) {
        h5s_marc_control_row row;
        if (h5s_rd_read_rows(r->control, t, i, 1, &row) < 0) {
            rc = h5s_error_set_h5(H5S_EIO, "%s: %s: cannot read row %llu", r->path,
                                  H5S_MARC_CONTROL_INDEX_PATH, (unsigned long long)i);
            break;
        }
        if (row.hash != hash)
            break;
        int err = 0;
        if (row.row < r->count && control_matches(r, row.row, control, len, &err)) {
            *out_row = row.row;
            H5Tclose(t);
            return 0;
        }
        rc = err;
    }
    H5Tclose(t);
    return rc ? rc : H5S_ENOTFOUND;
}

/* Inserts (hash, row); rows sharing a hash (equal 001s, or a collision) are all kept and
 * told apart by find_scanned. hash 0 marks an empty slot, so 0 is stored as 1. */
static int map_put(h5s_marc_reader *r, uint64_t hash, uint64_t row);

static int map_grow(h5s_marc_reader *r)
{
    size_t cap = r->map_cap ? 2 * r->map_cap : 4096;
    map_slot *old = r->map;
    size_t oldcap = r->map_cap;
    r->map = calloc(cap, sizeof *r->map);
    if (!r->map) {
        r->map = old;
        return -1;
    }
    r->map_cap = cap;
    r->map_n = 0;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].hash)
            map_put(r, old[i].hash, old[i].row);
    free(old);
    return 0;
}

static int map_put(h5s_marc_reader *r, uint64_t hash, uint64_t row)
{
    if (hash == 0)
        hash = 1;
    if ((r->map_n + 1) * 2 > r->map_cap && map_grow(r) != 0)
        return -1;
    size_t mask = r->map_cap - 1;
    for (size_t i = (size_t)hash & mask;; i = (i + 1) & mask) {
        if (r->map[i].hash == 0) {
            r->map[i].hash = hash;
            r->map[i].row = row;
            r->map_n++;
            return 0;
        }
    }
}

/* Brings the in-memory map up to the committed rows. */
static int scan_controls(h5s_marc_reader *r)
{
    if (r->map_scanned >= r->count)
        return 0;
    char(*buf)[H5S_MARC_CONTROL_BYTES] = malloc((size_t)MARC_SCAN_ROWS * H5S_MARC_CONTROL_BYTES);
    if (!buf)
        return h5s_error_set(H5S_ENOMEM, "%s: out of memory", r->path);
    hid_t st = h5s_marc_string_type(H5S_MARC_CONTROL_BYTES);
    int rc = 0;
    while (rc == 0 && r->map_scanned < r->count) {
        uint64_t first = r->map_scanned, n = r->count - first;
        if (n > MARC_SCAN_ROWS)
            n = MARC_SCAN_ROWS;
        if (read_member(r, r->index, "control", H5S_MARC_CONTROL_BYTES, st, first, n, buf) < 0) {
            rc = h5s_error_set_h5(H5S_EIO, "%s: %s/index: cannot read rows %llu..%llu", r->path,
                                  r->group, (unsigned long long)first,
                                  (unsigned long long)(first + n - 1));
            break;
        }
        for (uint64_t i = 0; i < n; i++) {
            size_t len = h5s_marc_fixed_len(buf[i], H5S_MARC_CONTROL_BYTES);
            if (len && map_put(r, h5s_marc_control_hash(buf[i], len), first + i) != 0) {
                rc = h5s_error_set(H5S_ENOMEM, "%s: out of memory for the control map", r->path);
                break;
            }
        }
        if (rc == 0)
            r->map_scanned = first + n;
    }
    H5Tclose(st);
    free(buf);
    return rc;
}

static int find_scanned(h5s_marc_reader *r, uint64_t hash, const char *control, size_t len,
                        uint64_t *out_row)
{
    if (hash == 0)
        hash = 1;
    if (!r->map_cap)
        return H5S_ENOTFOUND;
    size_t mask = r->map_cap - 1;
    uint64_t best = UINT64_MAX;
    int rc = 0;
    for (size_t i = (size_t)hash & mask; r->map[i].hash; i = (i + 1) & mask) {
        if (r->map[i].hash != hash || r->map[i].row >= best)
            continue;
        int err = 0;
        if (control_matches(r, r->map[i].row, control, len, &err))
            best = r->map[i].row;
        if (err) {
            rc = err;
            break;
        }
    }
    if (rc)
        return rc;
    if (best == UINT64_MAX)
        return H5S_ENOTFOUND;
    *out_row = best;
    return 0;
}

int h5s_marc_reader_find_control(h5s_marc_reader *r, const char *control, uint64_t *out_row)
{
    if (!r || !control || !out_row)
        return h5s_error_set(H5S_EINVAL, "h5s_marc_reader_find_control: NULL argument");
    size_t len = strlen(control);
    if (len == 0 || len > H5S_MARC_CONTROL_BYTES)
        return h5s_error_set(H5S_ENOTFOUND, "%s: no record has 001 '%s'", r->path, control);
    uint64_t hash = h5s_marc_control_hash(control, len);
    int64_t n = control_index_rows(r);
    int rc;
    if (n >= 0) {
        r->used_index = 1;
        rc = find_in_index(r, (uint64_t)n, hash, control, len, out_row);
    } else {
        r->used_index = 0;
        rc = scan_controls(r);
        if (rc == 0)
            rc = find_scanned(r, hash, control, len, out_row);
    }
    if (rc == H5S_ENOTFOUND)
        return h5s_error_set(H5S_ENOTFOUND, "%s: no committed record in %s has 001 '%s'", r->path,
                             r->group, control);
    return rc;
}

int h5s_marc_reader_used_control_index(const h5s_marc_reader *r)
{
    return r ? r->used_index : 0;
}

/* ---- error and repair tables ------------------------------------------------------ */

int h5s_marc_reader_error(h5s_marc_reader *r, uint64_t row, h5s_marc_error_row *out)
{
    if (!r || !out || !r->rejected || r->errors < 0)
        return h5s_error_set(H5S_EINVAL, "h5s_marc_reader_error: not a reader of the rejected "
                                         "records");
    if (row >= r->count)
        return h5s_error_set(H5S_ERANGE, "%s: rejected row %llu is not committed", r->path,
                             (unsigned long long)row);
    if (refresh_one(r, r->errors, "errors") != 0)
        return H5S_EIO;
    hid_t t = h5s_marc_error_type();
    herr_t st = h5s_rd_read_rows(r->errors, t, row, 1, out);
    H5Tclose(t);
    if (st < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s: cannot read row %llu", r->path,
                                H5S_MARC_ERRORS_PATH, (unsigned long long)row);
    return 0;
}

int h5s_marc_reader_repair(h5s_marc_reader *r, uint64_t row, h5s_marc_repair_row *out,
                           const unsigned char **original)
{
    if (!r || !out || r->rejected || r->repairs < 0 || r->originals < 0)
        return h5s_error_set(H5S_EINVAL, "h5s_marc_reader_repair: not a reader of /marc");
    if (refresh_one(r, r->repairs, "repairs") != 0 ||
        refresh_one(r, r->originals, "originals") != 0)
        return H5S_EIO;
    uint64_t n;
    if (h5s_rd_extent0(r->repairs, &n) < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: cannot read %s", r->path, H5S_MARC_REPAIRS_PATH);
    hid_t t = h5s_marc_repair_type();
    uint64_t lo = 0, hi = n;
    int rc = 0;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2, v;
        if (read_member(r, r->repairs, "row", sizeof v, H5T_NATIVE_UINT64, mid, 1, &v) < 0) {
            rc = h5s_error_set_h5(H5S_EIO, "%s: cannot read %s", r->path, H5S_MARC_REPAIRS_PATH);
            break;
        }
        if (v < row)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (rc == 0 && lo < n && h5s_rd_read_rows(r->repairs, t, lo, 1, out) < 0)
        rc = h5s_error_set_h5(H5S_EIO, "%s: cannot read %s", r->path, H5S_MARC_REPAIRS_PATH);
    H5Tclose(t);
    if (rc)
        return rc;
    if (lo >= n || out->row != row)
        return h5s_error_set(H5S_ENOTFOUND, "%s: record row %llu was stored as read", r->path,
                             (unsigned long long)row);
    if (original) {
        uint64_t have;
        if (h5s_rd_extent0(r->originals, &have) < 0 ||
            out->original_offset + out->original_length > have)
            return h5s_error_set(H5S_EFORMAT, "%s: %s row %llu points past %s", r->path,
                                 H5S_MARC_REPAIRS_PATH, (unsigned long long)lo,
                                 H5S_MARC_ORIGINALS_PATH);
        if (grow((void **)&r->orig, &r->orig_cap, (size_t)out->original_length + 1, 1) != 0)
            return h5s_error_set(H5S_ENOMEM, "%s: out of memory", r->path);
        if (h5s_rd_read_rows(r->originals, H5T_NATIVE_UCHAR, out->original_offset,
                             out->original_length, r->orig) < 0)
            return h5s_error_set_h5(H5S_EIO, "%s: cannot read %s", r->path,
                                    H5S_MARC_ORIGINALS_PATH);
        *original = r->orig;
    }
    return 0;
}

/* ---- export ----------------------------------------------------------------------- */

/*
 * Pipeline: this thread reads batches (about 4 MiB of records) into a ring of jobs; a pool
 * formats each job into its own buffer with its own formats/ writer; this thread writes the
 * buffers in order. ISO 2709 without conversion skips the pool: the stored bytes are the
 * output.
 */
#define EXPORT_RING 8

typedef struct {
    batch_buf in;
    h5s_marc_buf out;
    uint64_t records, skipped;
    int first; /* the export's first batch: no separator before its first JSON record */
    int done;
    int rc;
    char err[512];
} export_job;

typedef struct {
    const h5s_marc_export_options *o;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    export_job jobs[EXPORT_RING];
    uint64_t submitted, taken;
    int stop;
} export_pool;

/* ISO 2709 with MARC-8 -> UTF-8: the formats/ writer stores ISO 2709 as given, so the
 * conversion is done here with the same converter. */
static int format_iso_converted(export_job *j, h5s_marc_charconv **cv, h5s_marc_buf *scratch)
{
    const h5s_marc_batch *b = &j->in.batch;
    for (uint64_t k = 0; k < b->n; k++) {
        const unsigned char *rec = b->bytes + b->offsets[k];
        size_t len = (size_t)(b->offsets[k + 1] - b->offsets[k]);
        int rc = 0;
        if (len > H5S_MARC_LEADER_LEN && rec[9] == ' ') {
            rc = *cv ? 0 : h5s_marc_charconv_open(cv);
            if (rc == 0)
                rc = h5s_marc_charconv_record(*cv, scratch, rec, len, NULL);
            if (rc == H5S_EFORMAT) {
                j->skipped++; /* no readable directory: kept as stored */
                rc = 0;
            } else if (rc == 0) {
                rec = scratch->data;
                len = scratch->len;
            }
        }
        if (rc == 0)
            rc = h5s_marc_buf_append(&j->out, rec, len);
        if (rc)
            return rc;
        j->records++;
    }
    return 0;
}

static int format_job(export_job *j, h5s_marc_writer *w, const h5s_marc_export_options *o,
                      h5s_marc_charconv **cv, h5s_marc_buf *scratch)
{
    j->out.len = 0;
    j->records = j->skipped = 0;
    if (o->format == H5S_MARC_ISO2709)
        return format_iso_converted(j, cv, scratch);
    /* The writer's own buffer becomes the job's: swap, so no bytes are copied. */
    h5s_marc_buf keep = w->out;
    w->out = j->out;
    w->out.len = 0;
    w->n_records = j->first ? 0 : 1;
    const h5s_marc_batch *b = &j->in.batch;
    int rc = 0;
    for (uint64_t k = 0; k < b->n && rc == 0; k++) {
        const unsigned char *rec = b->bytes + b->offsets[k];
        size_t len = (size_t)(b->offsets[k + 1] - b->offsets[k]);
        uint64_t before = w->n_records;
        rc = h5s_marc_writer_record(w, rec, len);
        if (rc == H5S_EFORMAT) {
            j->skipped++;
            rc = 0;
        } else if (rc == 0 && w->n_records > before) {
            j->records++;
        }
        if (j->first && j->records == 0)
            w->n_records = 0; /* no separator until a record is written */
    }
    j->out = w->out;
    w->out = keep;
    return rc;
}

static void *export_worker(void *arg)
{
    export_pool *p = arg;
    h5s_marc_writer w;
    h5s_marc_charconv *cv = NULL;
    h5s_marc_buf scratch = {0};
    int begun = h5s_marc_writer_begin(&w, p->o->format, p->o->flags, NULL) == 0;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (p->taken == p->submitted && !p->stop)
            pthread_cond_wait(&p->cv_work, &p->mu);
        if (p->taken == p->submitted) {
            pthread_mutex_unlock(&p->mu);
            break;
        }
        export_job *j = &p->jobs[p->taken % EXPORT_RING];
        p->taken++;
        pthread_mutex_unlock(&p->mu);
        int rc = begun ? format_job(j, &w, p->o, &cv, &scratch)
                       : h5s_error_set(H5S_ENOMEM, "marc export: out of memory");
        pthread_mutex_lock(&p->mu);
        j->rc = rc;
        if (rc)
            snprintf(j->err, sizeof j->err, "%s", h5s_error_message());
        j->done = 1;
        pthread_cond_broadcast(&p->cv_done);
        pthread_mutex_unlock(&p->mu);
    }
    h5s_marc_writer_release(&w);
    h5s_marc_charconv_free(cv);
    h5s_marc_buf_free(&scratch);
    return NULL;
}

static int write_all(FILE *fp, const void *p, size_t n, h5s_marc_export_stats *st)
{
    if (n && fwrite(p, 1, n, fp) != n)
        return h5s_error_set(H5S_EIO, "marc export: write failed: %s", strerror(errno));
    st->bytes += n;
    return 0;
}

/* Writes a finished job's output (waiting for it) and adds its counts. */
static int drain_job(export_pool *p, export_job *j, FILE *fp, h5s_marc_export_stats *st)
{
    pthread_mutex_lock(&p->mu);
    while (!j->done)
        pthread_cond_wait(&p->cv_done, &p->mu);
    pthread_mutex_unlock(&p->mu);
    if (j->rc)
        return h5s_error_restore(j->rc, j->err);
    const unsigned char *out = j->out.data;
    size_t n = j->out.len;
    /* A JSON batch formatted as "not first" while nothing was written before it. */
    if (p->o->format == H5S_MARC_JSON && st->records == 0 && n && out[0] == ',') {
        out++;
        n--;
    }
    st->records += j->records;
    st->skipped += j->skipped;
    return write_all(fp, out, n, st);
}

static int export_plain_iso(h5s_marc_reader *r, FILE *fp, h5s_marc_export_stats *st)
{
    for (uint64_t row = 0; row < r->count;) {
        int rc = read_into(r, row, MARC_ITER_ROWS, MARC_ITER_BYTES, &r->iter);
        if (rc == 0)
            rc = write_all(fp, r->iter.batch.bytes, (size_t)r->iter.batch.offsets[r->iter.batch.n],
                           st);
        if (rc)
            return rc;
        st->records += r->iter.batch.n;
        row += r->iter.batch.n;
    }
    return 0;
}

/* Exports r's records through the formatting pool. head/tail: write the collection's
 * opening/closing (the first and last of several files exported as one). */
static int export_pooled(h5s_marc_reader *r, FILE *fp, const h5s_marc_export_options *o,
                         h5s_marc_export_stats *st, int head, int tail)
{
    export_pool *p = calloc(1, sizeof *p);
    if (!p)
        return h5s_error_set(H5S_ENOMEM, "marc export: out of memory");
    p->o = o;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv_work, NULL);
    pthread_cond_init(&p->cv_done, NULL);
    int nthreads = o->threads;
    if (nthreads <= 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        nthreads = cores > 0 ? (int)cores : 1;
    }
    if (nthreads > 16)
        nthreads = 16;
    pthread_t th[16];
    int started = 0;
    for (; started < nthreads; started++)
        if (pthread_create(&th[started], NULL, export_worker, p) != 0)
            break;
    int rc = started ? 0 : h5s_error_set(H5S_ENOMEM, "marc export: cannot start threads");

    /* The collection header, from a writer of the same format. */
    h5s_marc_writer hw;
    memset(&hw, 0, sizeof hw);
    if (rc == 0 && (rc = h5s_marc_writer_begin(&hw, o->format, o->flags, NULL)) == 0) {
        if (head)
            rc = write_all(fp, hw.out.data, hw.out.len, st);
        hw.out.len = 0;
    }
    uint64_t row = 0, seq = 0;
    while (rc == 0 && row < r->count) {
        export_job *j = &p->jobs[seq % EXPORT_RING];
        if (seq >= EXPORT_RING && (rc = drain_job(p, j, fp, st)) != 0)
            break;
        if ((rc = read_into(r, row, MARC_ITER_ROWS, MARC_ITER_BYTES, &j->in)) != 0)
            break;
        row += j->in.batch.n;
        /* Only the first record of the whole output goes without a separator; a later
         * file's first record follows the previous file's last one. */
        j->first = seq == 0 && st->records == 0;
        j->done = 0;
        pthread_mutex_lock(&p->mu);
        p->submitted = ++seq;
        pthread_cond_signal(&p->cv_work);
        pthread_mutex_unlock(&p->mu);
    }
    /* The jobs still out, in order (after an error, only waited for). */
    uint64_t from = seq > EXPORT_RING ? seq - EXPORT_RING : 0;
    for (uint64_t s = from; s < seq; s++) {
        int r2 = rc == 0 ? drain_job(p, &p->jobs[s % EXPORT_RING], fp, st) : 0;
        if (rc) {
            pthread_mutex_lock(&p->mu);
            while (!p->jobs[s % EXPORT_RING].done)
                pthread_cond_wait(&p->cv_done, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (r2 && !rc)
            rc = r2;
    }
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    if (rc == 0 && tail && o->format != H5S_MARC_ISO2709) {
        rc = h5s_marc_writer_end(&hw);
        if (rc == 0)
            rc = write_all(fp, hw.out.data, hw.out.len, st);
    }
    h5s_marc_writer_release(&hw);
    for (int i = 0; i < EXPORT_RING; i++) {
        batch_free(&p->jobs[i].in);
        h5s_marc_buf_free(&p->jobs[i].out);
    }
    pthread_cond_destroy(&p->cv_work);
    pthread_cond_destroy(&p->cv_done);
    pthread_mutex_destroy(&p->mu);
    free(p);
    return rc;
}

int h5s_marc_export_files(const char *const *h5paths, size_t n, FILE *fp,
                          const h5s_marc_export_options *opts, h5s_marc_export_stats *out)
{
    static const h5s_marc_export_options defaults = H5S_MARC_EXPORT_OPTIONS_INIT;
    h5s_marc_export_stats st = {0, 0, 0};
    if (out)
        *out = st;
    if (!h5paths || n == 0 || !fp)
        return h5s_error_set(H5S_EINVAL, "h5s_marc_export_files: NULL argument or no file");
    if (!opts)
        opts = &defaults;
    if (opts->version != H5S_MARC_EXPORT_OPTIONS_VERSION || (unsigned)opts->format > H5S_MARC_LINE)
        return h5s_error_set(H5S_EINVAL, "h5s_marc_export_file: bad options");
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        h5s_marc_reader_options ro = H5S_MARC_READER_OPTIONS_INIT;
        ro.rejected = opts->rejected;
        h5s_marc_reader *r = NULL;
        rc = h5s_marc_reader_open(&r, h5paths[i], &ro);
        if (rc == 0) {
            if (opts->format == H5S_MARC_ISO2709 && !(opts->flags & H5S_MARC_WRITE_MARC8_TO_UTF8))
                rc = export_plain_iso(r, fp, &st);
            else
                rc = export_pooled(r, fp, opts, &st, i == 0, i + 1 == n);
        }
        h5s_marc_reader_close(r);
    }
    if (rc == 0 && fflush(fp) != 0)
        rc = h5s_error_set(H5S_EIO, "marc export: flush failed: %s", strerror(errno));
    if (out)
        *out = st;
    return rc;
}

int h5s_marc_export_file(const char *h5path, FILE *fp, const h5s_marc_export_options *opts,
                         h5s_marc_export_stats *out)
{
    if (!h5path)
        return h5s_error_set(H5S_EINVAL, "h5s_marc_export_file: NULL argument");
    return h5s_marc_export_files(&h5path, 1, fp, opts, out);
}
