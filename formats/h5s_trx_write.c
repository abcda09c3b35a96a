/*
 * h5s_trx_write.c - TRX writer: a zip archive (libzip, one custom zip_source_function per
 * entry, so each array is pulled from the caller's fill callback block by block while
 * libzip writes the archive) or a folder (clean or persistent). Format notes and the rules
 * enforced (those of trx-python and trx-cpp): docs/tractio.md.
 */
#define _GNU_SOURCE /* sync_file_range */
#define _POSIX_C_SOURCE 200809L
#define _XOPEN_SOURCE 700
#define H5S_TRACTIO_INTERNAL
#include "h5s_tractio.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zip.h>

#include "h5s_error.h"
#include "h5s_prealloc.h"

typedef struct trx_wentry {
    struct h5s_trx_writer *w;
    char *name;
    h5s_trx_entry_kind kind;
    char group[H5S_TRACT_NAME_MAX];
    char field[H5S_TRACT_NAME_MAX];
    uint64_t size, done;
    h5s_trx_fill_fn fill;
    void *payload;
    int opened;
    zip_error_t zerr;
} trx_wentry;

struct h5s_trx_writer {
    char *path;
    h5s_trx_mode mode;
    int level;
    size_t buffer_size;
    zip_t *za;
    int have_header, have_positions, have_offsets;
    uint64_t ns, nv;
    trx_wentry **entries; /* stable addresses: libzip holds them until zip_close */
    size_t n_entries;
    char *header_json;
    size_t header_len, header_done;
    int err;       /* first error raised inside a libzip callback */
    char *err_msg; /* its message */
    time_t mtime;
};

/* ---------------------------------------------------------------- names */

static int plain_name(const char *s)
{
    return s && s[0] && !strchr(s, '.') && !strchr(s, '/') && strlen(s) < H5S_TRACT_NAME_MAX;
}

int h5s_trx_entry_name(char *buf, size_t cap, h5s_trx_entry_kind kind, const char *group,
                       const char *name, uint32_t ncols, h5s_dtype dtype)
{
    if (!buf || !h5s_dtype_size(dtype) || ncols == 0)
        return h5s_error_set(H5S_EINVAL, "TRX entry name: bad buffer, dtype or column count");
    const char *dt = h5s_dtype_name(dtype), *dir = NULL;
    int n;
    char cols[16] = "";
    if (ncols > 1)
        snprintf(cols, sizeof cols, ".%u", ncols);
    switch (kind) {
    case H5S_TRX_POSITIONS:
        n = snprintf(buf, cap, "positions.3.%s", dt);
        break;
    case H5S_TRX_OFFSETS:
        n = snprintf(buf, cap, "offsets.%s", dt);
        break;
    case H5S_TRX_DPS:
        dir = "dps";
        /* fall through */
    case H5S_TRX_DPV:
        if (!dir)
            dir = "dpv";
        /* fall through */
    case H5S_TRX_GROUP:
        if (!dir)
            dir = "groups";
        if (!plain_name(name))
            return h5s_error_set(H5S_EINVAL,
                                 "TRX entry name: \"%s\" is empty, too long or has "
                                 "'.' or '/'",
                                 name ? name : "(null)");
        n = snprintf(buf, cap, "%s/%s%s.%s", dir, name, kind == H5S_TRX_GROUP ? "" : cols, dt);
        break;
    case H5S_TRX_DPG:
        if (!plain_name(name) || !plain_name(group))
            return h5s_error_set(H5S_EINVAL,
                                 "TRX entry name: dpg \"%s/%s\": names must be "
                                 "non-empty, without '.' or '/'",
                                 group ? group : "(null)", name ? name : "(null)");
        n = snprintf(buf, cap, "dpg/%s/%s%s.%s", group, name, cols, dt);
        break;
    default:
        return h5s_error_set(H5S_EINVAL, "TRX entry name: unknown kind %d", (int)kind);
    }
    if (n < 0 || (size_t)n >= cap)
        return h5s_error_set(H5S_ERANGE, "TRX entry name: buffer of %zu bytes too small", cap);
    return 0;
}

/* ------------------------------------------------------------------- zip */

static void keep_error(h5s_trx_writer *w, int code)
{
    if (w->err)
        return;
    w->err = code;
    w->err_msg = strdup(h5s_error_message());
}

static zip_int64_t source_cb(void *ud, void *data, zip_uint64_t len, zip_source_cmd_t cmd)
{
    trx_wentry *e = ud;
    switch (cmd) {
    case ZIP_SOURCE_OPEN:
        if (e->opened) { /* the caller's stream cannot rewind */
            keep_error(e->w, h5s_error_set(H5S_EIO, "%s: entry %s: libzip asked to read it twice",
                                           e->w->path, e->name));
            zip_error_set(&e->zerr, ZIP_ER_INTERNAL, 0);
            return -1;
        }
        e->opened = 1;
        e->done = 0;
        return 0;
    case ZIP_SOURCE_READ: {
        if (e->done == e->size)
            return 0;
        uint64_t left = e->size - e->done;
        size_t cap = len < left ? (size_t)len : (size_t)left, got = 0;
        int rc = e->fill(&got, data, cap, e->payload);
        if (!rc && (got == 0 || got > cap))
            rc = h5s_error_set(H5S_EINVAL,
                               "%s: entry %s: byte %llu: fill gave %zu bytes (1 to %zu expected)",
                               e->w->path, e->name, (unsigned long long)e->done, got, cap);
        if (rc) {
            keep_error(e->w, rc);
            zip_error_set(&e->zerr, ZIP_ER_INTERNAL, 0);
            return -1;
        }
        e->done += got;
        return (zip_int64_t)got;
    }
    case ZIP_SOURCE_CLOSE:
        return 0;
    case ZIP_SOURCE_STAT: {
        zip_stat_t *st = data;
        if (len < sizeof *st)
            return -1;
        zip_stat_init(st);
        st->size = e->size;
        st->mtime = e->w->mtime;
        st->valid |= ZIP_STAT_SIZE | ZIP_STAT_MTIME;
        return (zip_int64_t)sizeof *st;
    }
    case ZIP_SOURCE_ERROR:
        return zip_error_to_data(&e->zerr, data, len);
    case ZIP_SOURCE_FREE:
        return 0; /* the writer owns the entry */
    case ZIP_SOURCE_SUPPORTS:
        return zip_source_make_command_bitmap(ZIP_SOURCE_OPEN, ZIP_SOURCE_READ, ZIP_SOURCE_CLOSE,
                                              ZIP_SOURCE_STAT, ZIP_SOURCE_ERROR, ZIP_SOURCE_FREE,
                                              -1);
    default:
        zip_error_set(&e->zerr, ZIP_ER_OPNOTSUPP, 0);
        return -1;
    }
}

/* ------------------------------------------------------- the archive file */

/* Bytes gathered before one write() of the archive. */
#define TRX_SINK_BYTES ((size_t)4 << 20)

/* The archive itself is a writable libzip source over a file descriptor (zip_source_function
 * protocol, zip_open_from_source). libzip's own file source writes through stdio in 4 KiB
 * pieces; this one gathers libzip's small writes into TRX_SINK_BYTES blocks written with one
 * pwrite() each and, on Linux, starts the writeback of every block at once
 * (sync_file_range), so the disk writes while the next block is made instead of all at the
 * caller's fsync. The pwrite runs on a thread of its own, on a second buffer, so libzip
 * (which computes every stored entry's CRC-32 on the caller's thread) goes on filling the
 * next block meanwhile. As libzip's file source, it writes a temporary file beside the
 * target and renames it at commit, so a failed export leaves no archive. */
typedef struct {
    h5s_trx_writer *w;
    int fd;
    char *tmp;          /* temporary file while writing */
    unsigned char *buf; /* bytes [off, off + len) of the file */
    size_t cap, len;
    uint64_t off;
    uint64_t size; /* bytes of the file, buffered ones included */
    zip_error_t zerr;

    /* The background write of the previous block (under mu). */
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int running;          /* th exists */
    int busy, stop;       /* a block is being written; th must end */
    unsigned char *spare; /* the other buffer: the block being written, or free */
    size_t job_len;
    uint64_t job_off;
    uint64_t synced;  /* writeback started below this offset (th only) */
    int job_errno;    /* the first failed pwrite's errno (0: none) */
    h5s_prealloc pre; /* space reserved ahead of the writes (th only, then commit) */
} trx_sink;

static int sink_fail(trx_sink *s, int zip_code, const char *what)
{
    int sys = errno;
    keep_error(s->w, h5s_error_set(H5S_EIO, "%s: %s: %s", s->w->path, what, strerror(sys)));
    zip_error_set(&s->zerr, zip_code, sys);
    return -1;
}

/* The background thread: writes each block handed to it, then starts its writeback. */
static void *sink_main(void *arg)
{
    trx_sink *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->busy && !s->stop)
            pthread_cond_wait(&s->cv, &s->mu);
        if (!s->busy)
            break;
        const unsigned char *p = s->spare;
        size_t n = s->job_len;
        uint64_t at = s->job_off;
        pthread_mutex_unlock(&s->mu);
        int err = 0;
        h5s_prealloc_ensure(&s->pre, at + n);
        while (n > 0) {
            ssize_t k = pwrite(s->fd, p, n, (off_t)at);
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0) {
                err = k == 0 ? EIO : errno;
                break;
            }
            p += k;
            n -= (size_t)k;
            at += (uint64_t)k;
        }
#ifdef SYNC_FILE_RANGE_WRITE
        /* Write-behind: a hint, so its failure is not an error (fsync reports real ones). */
        if (err == 0 && at >= s->synced + s->cap) {
            (void)sync_file_range(s->fd, (off_t)s->synced, (off_t)(at - s->synced),
                                  SYNC_FILE_RANGE_WRITE);
            s->synced = at;
        }
#endif
        pthread_mutex_lock(&s->mu);
        if (err && !s->job_errno)
            s->job_errno = err;
        s->busy = 0;
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* Waits until the block in flight is written; -1 (error kept) if a write failed. */
static int sink_drain(trx_sink *s)
{
    pthread_mutex_lock(&s->mu);
    while (s->busy)
        pthread_cond_wait(&s->cv, &s->mu);
    int err = s->job_errno;
    pthread_mutex_unlock(&s->mu);
    if (err) {
        errno = err;
        return sink_fail(s, ZIP_ER_WRITE, "cannot write the archive");
    }
    return 0;
}

/* Hands the buffered bytes to the background thread and goes on in the other buffer. */
static int sink_flush(trx_sink *s)
{
    if (s->len == 0)
        return 0;
    if (sink_drain(s) != 0)
        return -1;
    pthread_mutex_lock(&s->mu);
    unsigned char *full = s->buf;
    s->buf = s->spare;
    s->spare = full;
    s->job_len = s->len;
    s->job_off = s->off;
    s->busy = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    s->off += s->len;
    s->len = 0;
    return 0;
}

/* Ends the background thread (after the block in flight). */
static void sink_stop(trx_sink *s)
{
    if (!s->running)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->th, NULL);
    s->running = 0;
    s->stop = 0;
}

static int sink_begin(trx_sink *s)
{
    size_t n = strlen(s->w->path) + 32;
    if ((!s->buf && !(s->buf = malloc(s->cap))) || (!s->spare && !(s->spare = malloc(s->cap)))) {
        errno = ENOMEM;
        return sink_fail(s, ZIP_ER_MEMORY, "no memory for the archive buffers");
    }
    char *name = malloc(n);
    if (!name) {
        errno = ENOMEM;
        return sink_fail(s, ZIP_ER_MEMORY, "no memory");
    }
    /* O_EXCL on a fresh name: the umask applies as for any new file (mkstemp would give
     * 0600). */
    static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    unsigned long long r = (unsigned long long)time(NULL) ^ ((unsigned long long)getpid() << 20) ^
                           (unsigned long long)(uintptr_t)s;
    for (int tries = 0; tries < 100; tries++) {
        char suffix[8];
        for (int i = 0; i < 7; i++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            suffix[i] = digits[(r >> 33) % 36];
        }
        suffix[7] = '\0';
        snprintf(name, n, "%s.%s", s->w->path, suffix);
        s->fd = open(name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (s->fd >= 0 || errno != EEXIST)
            break;
    }
    if (s->fd < 0) {
        int e = errno;
        free(name);
        errno = e;
        return sink_fail(s, ZIP_ER_TMPOPEN, "cannot create a temporary file beside it");
    }
    s->tmp = name;
    h5s_prealloc_init(&s->pre, s->fd, 0);
    s->off = s->size = s->synced = 0;
    s->len = 0;
    s->job_errno = 0;
    if (pthread_create(&s->th, NULL, sink_main, s) != 0) {
        errno = EAGAIN;
        sink_fail(s, ZIP_ER_INTERNAL, "cannot start the archive's write thread");
        close(s->fd);
        s->fd = -1;
        unlink(s->tmp);
        free(s->tmp);
        s->tmp = NULL;
        return -1;
    }
    s->running = 1;
    return 0;
}

static void sink_drop_tmp(trx_sink *s)
{
    sink_stop(s);
    h5s_prealloc_trim(&s->pre);
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    if (s->tmp)
        unlink(s->tmp);
    free(s->tmp);
    s->tmp = NULL;
}

static int sink_commit(trx_sink *s)
{
    if (sink_flush(s) != 0 || sink_drain(s) != 0)
        return -1;
    sink_stop(s);
    h5s_prealloc_trim(&s->pre);
    int fd = s->fd;
    s->fd = -1;
    if (close(fd) != 0) {
        sink_fail(s, ZIP_ER_CLOSE, "cannot close the archive");
        sink_drop_tmp(s);
        return -1;
    }
    if (rename(s->tmp, s->w->path) != 0) {
        sink_fail(s, ZIP_ER_RENAME, "cannot rename the temporary file to it");
        sink_drop_tmp(s);
        return -1;
    }
    free(s->tmp);
    s->tmp = NULL;
    return 0;
}

static zip_int64_t sink_write(trx_sink *s, const void *data, zip_uint64_t n)
{
    const unsigned char *p = data;
    zip_uint64_t left = n;
    while (left > 0) {
        size_t k = s->cap - s->len < left ? s->cap - s->len : (size_t)left;
        memcpy(s->buf + s->len, p, k);
        s->len += k;
        p += k;
        left -= k;
        if (s->len == s->cap && sink_flush(s) != 0)
            return -1;
    }
    if (s->off + s->len > s->size)
        s->size = s->off + s->len;
    return (zip_int64_t)n;
}

static zip_int64_t sink_cb(void *ud, void *data, zip_uint64_t len, zip_source_cmd_t cmd)
{
    trx_sink *s = ud;
    switch (cmd) {
    case ZIP_SOURCE_STAT:
        /* The archive is always made anew: report "no such file" as libzip expects. */
        zip_error_set(&s->zerr, ZIP_ER_READ, ENOENT);
        return -1;
    case ZIP_SOURCE_BEGIN_WRITE:
        return sink_begin(s);
    case ZIP_SOURCE_WRITE:
        return sink_write(s, data, len);
    case ZIP_SOURCE_SEEK_WRITE: {
        zip_source_args_seek_t *a =
            ZIP_SOURCE_GET_ARGS(zip_source_args_seek_t, data, len, &s->zerr);
        if (!a)
            return -1;
        int64_t base = a->whence == SEEK_SET   ? 0
                       : a->whence == SEEK_CUR ? (int64_t)(s->off + s->len)
                       : a->whence == SEEK_END ? (int64_t)s->size
                                               : -1;
        if (base < 0 || base + a->offset < 0) {
            zip_error_set(&s->zerr, ZIP_ER_INVAL, 0);
            return -1;
        }
        /* The block in flight must land before bytes at another offset are buffered. */
        if (sink_flush(s) != 0 || sink_drain(s) != 0)
            return -1;
        s->off = (uint64_t)(base + a->offset);
        return 0;
    }
    case ZIP_SOURCE_TELL_WRITE:
        return (zip_int64_t)(s->off + s->len);
    case ZIP_SOURCE_COMMIT_WRITE:
        return sink_commit(s);
    case ZIP_SOURCE_ROLLBACK_WRITE:
        s->len = 0;
        sink_drop_tmp(s);
        return 0;
    case ZIP_SOURCE_REMOVE:
        if (unlink(s->w->path) != 0 && errno != ENOENT)
            return sink_fail(s, ZIP_ER_REMOVE, "cannot remove it");
        return 0;
    case ZIP_SOURCE_ERROR:
        return zip_error_to_data(&s->zerr, data, len);
    case ZIP_SOURCE_FREE:
        sink_drop_tmp(s);
        free(s->buf);
        free(s->spare);
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
        zip_error_fini(&s->zerr);
        free(s);
        return 0;
    case ZIP_SOURCE_SUPPORTS:
        return zip_source_make_command_bitmap(
            ZIP_SOURCE_OPEN, ZIP_SOURCE_READ, ZIP_SOURCE_CLOSE, ZIP_SOURCE_STAT, ZIP_SOURCE_ERROR,
            ZIP_SOURCE_FREE, ZIP_SOURCE_SEEK, ZIP_SOURCE_TELL, ZIP_SOURCE_SUPPORTS,
            ZIP_SOURCE_BEGIN_WRITE, ZIP_SOURCE_COMMIT_WRITE, ZIP_SOURCE_ROLLBACK_WRITE,
            ZIP_SOURCE_WRITE, ZIP_SOURCE_SEEK_WRITE, ZIP_SOURCE_TELL_WRITE, ZIP_SOURCE_REMOVE, -1);
    default:
        /* Reading the archive back (OPEN, READ, SEEK, TELL...) is never needed: it is new. */
        zip_error_set(&s->zerr, ZIP_ER_OPNOTSUPP, 0);
        return -1;
    }
}

/* Opens w->za over a new trx_sink. */
static int open_archive(h5s_trx_writer *w)
{
    trx_sink *s = calloc(1, sizeof *s);
    if (!s)
        return h5s_error_set(H5S_ENOMEM, "%s: no memory", w->path);
    s->w = w;
    s->fd = -1;
    h5s_prealloc_init(&s->pre, -1, 0);
    s->cap = TRX_SINK_BYTES;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    zip_error_init(&s->zerr);
    zip_error_t ze;
    zip_error_init(&ze);
    zip_source_t *src = zip_source_function_create(sink_cb, s, &ze);
    if (src)
        w->za = zip_open_from_source(src, ZIP_CREATE | ZIP_TRUNCATE, &ze);
    int rc = 0;
    if (!w->za) {
        rc = h5s_error_set(H5S_EIO, "%s: cannot create the zip archive: %s", w->path,
                           zip_error_strerror(&ze));
        if (src)
            zip_source_free(src); /* frees s (ZIP_SOURCE_FREE) */
        else {
            zip_error_fini(&s->zerr);
            pthread_cond_destroy(&s->cv);
            pthread_mutex_destroy(&s->mu);
            free(s);
        }
    }
    zip_error_fini(&ze);
    return rc;
}

/* ---------------------------------------------------------------- folders */

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static int mkdirs_for(const h5s_trx_writer *w, const char *entry)
{
    size_t n = strlen(w->path) + strlen(entry) + 2;
    char *p = malloc(n);
    if (!p)
        return h5s_error_set(H5S_ENOMEM, "%s: no memory", w->path);
    snprintf(p, n, "%s/%s", w->path, entry);
    for (char *s = p + strlen(w->path) + 1; (s = strchr(s, '/')) != NULL; s++) {
        *s = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            int rc = h5s_error_set(H5S_EIO, "%s: cannot create folder %s: %s", w->path, p,
                                   strerror(errno));
            free(p);
            return rc;
        }
        *s = '/';
    }
    free(p);
    return 0;
}

static int write_file_entry(h5s_trx_writer *w, trx_wentry *e)
{
    int rc = mkdirs_for(w, e->name);
    if (rc)
        return rc;
    size_t n = strlen(w->path) + strlen(e->name) + 2;
    char *p = malloc(n);
    unsigned char *buf = malloc(w->buffer_size);
    FILE *fp = NULL;
    if (!p || !buf) {
        rc = h5s_error_set(H5S_ENOMEM, "%s: no memory", w->path);
        goto done;
    }
    snprintf(p, n, "%s/%s", w->path, e->name);
    fp = fopen(p, "wb");
    if (!fp) {
        rc = h5s_error_set(H5S_EIO, "%s: cannot create %s: %s", w->path, e->name, strerror(errno));
        goto done;
    }
    while (e->done < e->size) {
        uint64_t left = e->size - e->done;
        size_t cap = left < w->buffer_size ? (size_t)left : w->buffer_size, got = 0;
        rc = e->fill(&got, buf, cap, e->payload);
        if (!rc && (got == 0 || got > cap))
            rc = h5s_error_set(H5S_EINVAL,
                               "%s: entry %s: byte %llu: fill gave %zu bytes (1 to %zu expected)",
                               w->path, e->name, (unsigned long long)e->done, got, cap);
        if (rc)
            goto done;
        if (fwrite(buf, 1, got, fp) != got) {
            rc = h5s_error_set(H5S_EIO, "%s: entry %s: write failed: %s", w->path, e->name,
                               strerror(errno));
            goto done;
        }
        e->done += got;
    }
done:
    if (fp && fclose(fp) != 0 && !rc)
        rc = h5s_error_set(H5S_EIO, "%s: entry %s: close failed: %s", w->path, e->name,
                           strerror(errno));
    free(p);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------ API */

int h5s_trx_writer_open(h5s_trx_writer **out, const char *path, const h5s_trx_write_options *opts)
{
    h5s_trx_write_options def = H5S_TRX_WRITE_OPTIONS_INIT;
    if (!out || !path || !path[0])
        return h5s_error_set(H5S_EINVAL, "h5s_trx_writer_open: NULL argument");
    *out = NULL;
    if (!opts)
        opts = &def;
    if (opts->version != H5S_TRX_WRITE_OPTIONS_VERSION || opts->mode < H5S_TRX_ZIP_STORE ||
        opts->mode > H5S_TRX_DIR_PERSISTENT || opts->deflate_level < 0 || opts->deflate_level > 9)
        return h5s_error_set(H5S_EINVAL, "%s: bad TRX write options", path);
    h5s_trx_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->path = strdup(path))) {
        free(w);
        return h5s_error_set(H5S_ENOMEM, "%s: no memory", path);
    }
    w->mode = opts->mode;
    w->level = opts->deflate_level;
    w->buffer_size = opts->buffer_size ? opts->buffer_size : (1u << 20);
    w->mtime = time(NULL);
    int rc = 0;
    struct stat st;
    if (w->mode == H5S_TRX_ZIP_STORE || w->mode == H5S_TRX_ZIP_DEFLATE) {
        rc = open_archive(w);
    } else if (w->mode == H5S_TRX_DIR_CLEAN) {
        if (lstat(path, &st) == 0) {
            if (!S_ISDIR(st.st_mode))
                rc = h5s_error_set(H5S_EINVAL, "%s: exists and is not a folder", path);
            else if (nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
                rc = h5s_error_set(H5S_EIO, "%s: cannot remove the old folder: %s", path,
                                   strerror(errno));
        }
        if (!rc && mkdir(path, 0777) != 0)
            rc = h5s_error_set(H5S_EIO, "%s: cannot create the folder: %s", path, strerror(errno));
    } else if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        rc = h5s_error_set(H5S_ENOTFOUND, "%s: persistent TRX folder does not exist", path);
    }
    if (rc) {
        free(w->path);
        free(w);
        return rc;
    }
    *out = w;
    return 0;
}

static int header_fill(size_t *out_len, void *buf, size_t cap, void *payload)
{
    h5s_trx_writer *w = payload;
    size_t n = w->header_len - w->header_done < cap ? w->header_len - w->header_done : cap;
    memcpy(buf, w->header_json + w->header_done, n);
    w->header_done += n;
    *out_len = n;
    return 0;
}

static int add_entry(h5s_trx_writer *w, const char *name, uint64_t size, h5s_trx_fill_fn fill,
                     void *payload, h5s_trx_entry_kind kind, const char *group, const char *field)
{
    trx_wentry **grown = realloc(w->entries, (w->n_entries + 1) * sizeof *grown);
    if (!grown)
        return h5s_error_set(H5S_ENOMEM, "%s: no memory", w->path);
    w->entries = grown;
    trx_wentry *e = calloc(1, sizeof *e);
    if (!e || !(e->name = strdup(name))) {
        free(e);
        return h5s_error_set(H5S_ENOMEM, "%s: no memory", w->path);
    }
    e->w = w;
    e->kind = kind;
    snprintf(e->group, sizeof e->group, "%s", group);
    snprintf(e->field, sizeof e->field, "%s", field);
    e->size = size;
    e->fill = fill;
    e->payload = payload;
    zip_error_init(&e->zerr);
    w->entries[w->n_entries++] = e;
    if (!w->za)
        return write_file_entry(w, e);
    zip_source_t *src = zip_source_function(w->za, source_cb, e);
    if (!src)
        return h5s_error_set(H5S_ENOMEM, "%s: entry %s: %s", w->path, name, zip_strerror(w->za));
    zip_int64_t idx = zip_file_add(w->za, name, src, ZIP_FL_ENC_UTF_8);
    if (idx < 0) {
        zip_source_free(src);
        return h5s_error_set(H5S_EIO, "%s: entry %s: %s", w->path, name, zip_strerror(w->za));
    }
    int deflate = w->mode == H5S_TRX_ZIP_DEFLATE;
    if (zip_set_file_compression(w->za, (zip_uint64_t)idx, deflate ? ZIP_CM_DEFLATE : ZIP_CM_STORE,
                                 deflate ? (zip_uint32_t)w->level : 0) != 0)
        return h5s_error_set(H5S_EIO, "%s: entry %s: %s", w->path, name, zip_strerror(w->za));
    return 0;
}

int h5s_trx_writer_add_header(h5s_trx_writer *w, const h5s_tract_header *hdr)
{
    if (!w || !hdr)
        return h5s_error_set(H5S_EINVAL, "h5s_trx_writer_add_header: NULL argument");
    if (w->have_header)
        return h5s_error_set(H5S_ESTATE, "%s: header.json already added", w->path);
    if (hdr->nb_streamlines < 0 || hdr->nb_vertices < 0)
        return h5s_error_set(
            H5S_EINVAL, "%s: NB_STREAMLINES and NB_VERTICES must be known (>= 0) for TRX", w->path);
    json_t *root = json_object(), *aff = json_array(), *dims = json_array();
    int bad = !root || !aff || !dims;
    for (int i = 0; i < 4 && !bad; i++) {
        json_t *row = json_array();
        bad |= !row || json_array_append_new(aff, row) != 0;
        for (int j = 0; j < 4 && !bad; j++)
            bad |= json_array_append_new(row, json_real(hdr->voxel_to_rasmm[i][j])) != 0;
    }
    for (int i = 0; i < 3 && !bad; i++)
        bad |= json_array_append_new(dims, json_integer(hdr->dimensions[i])) != 0;
    if (!bad) {
        bad |= json_object_set_new(root, "NB_STREAMLINES", json_integer(hdr->nb_streamlines));
        bad |= json_object_set_new(root, "NB_VERTICES", json_integer(hdr->nb_vertices));
        bad |= json_object_set(root, "VOXEL_TO_RASMM", aff);
        bad |= json_object_set(root, "DIMENSIONS", dims);
    }
    char *text = bad ? NULL : json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(aff);
    json_decref(dims);
    json_decref(root);
    if (!text)
        return h5s_error_set(H5S_ENOMEM, "%s: no memory for header.json", w->path);
    w->header_json = text;
    w->header_len = strlen(text);
    w->ns = (uint64_t)hdr->nb_streamlines;
    w->nv = (uint64_t)hdr->nb_vertices;
    w->have_header = 1;
    return add_entry(w, "header.json", w->header_len, header_fill, w, (h5s_trx_entry_kind)-1, "",
                     "");
}

int h5s_trx_writer_add(h5s_trx_writer *w, const char *name, uint64_t size, h5s_trx_fill_fn fill,
                       void *payload)
{
    if (!w || !name || (!fill && size))
        return h5s_error_set(H5S_EINVAL, "h5s_trx_writer_add: NULL argument");
    if (!w->have_header)
        return h5s_error_set(H5S_ESTATE, "%s: add header.json before %s", w->path, name);
    h5s_trx_entry_kind kind;
    char group[H5S_TRACT_NAME_MAX], field[H5S_TRACT_NAME_MAX];
    uint32_t k;
    h5s_dtype dt;
    int rc = h5s_trx_entry_parse(name, &kind, group, field, &k, &dt);
    if (rc)
        return h5s_error_set(H5S_EINVAL, "%s: \"%s\" is not a TRX array entry name", w->path, name);
    const char *dot = strrchr(name, '.');
    if (strcmp(dot + 1, h5s_dtype_name(dt)) != 0 || strchr(field, '.') || strchr(group, '.'))
        return h5s_error_set(H5S_EINVAL,
                             "%s: entry %s: names must have no dots and a full dtype name", w->path,
                             name);
    uint64_t sz = h5s_dtype_size(dt), want = 0;
    int exact = 1;
    switch (kind) {
    case H5S_TRX_POSITIONS:
        want = w->nv * 3 * sz;
        break;
    case H5S_TRX_OFFSETS:
        if (dt != H5S_UINT64)
            return h5s_error_set(H5S_EINVAL, "%s: entry %s: offsets must be uint64", w->path, name);
        want = (w->ns + 1) * 8;
        break;
    case H5S_TRX_DPS:
        want = w->ns * k * sz;
        break;
    case H5S_TRX_DPV:
        want = w->nv * k * sz;
        break;
    case H5S_TRX_GROUP:
        if (dt != H5S_UINT32)
            return h5s_error_set(H5S_EINVAL, "%s: entry %s: groups must be uint32", w->path, name);
        exact = 0;
        want = 4;
        break;
    case H5S_TRX_DPG: {
        int found = 0;
        for (size_t i = 0; i < w->n_entries; i++)
            found |= w->entries[i]->kind == H5S_TRX_GROUP && !strcmp(w->entries[i]->field, group);
        if (!found)
            return h5s_error_set(H5S_EINVAL, "%s: entry %s: group \"%s\" was not added before",
                                 w->path, name, group);
        exact = 0;
        want = k * sz;
        break;
    }
    }
    if (exact ? size != want : (size % want != 0 || (kind == H5S_TRX_DPG && size == 0)))
        return h5s_error_set(H5S_EINVAL, "%s: entry %s: %llu bytes, %s %llu", w->path, name,
                             (unsigned long long)size,
                             exact ? "the header's counts need" : "must be a multiple of",
                             (unsigned long long)want);
    for (size_t i = 0; i < w->n_entries; i++) {
        const trx_wentry *o = w->entries[i];
        if (o->kind == kind && !strcmp(o->group, group) && !strcmp(o->field, field))
            return h5s_error_set(H5S_EINVAL, "%s: entry %s: added twice (as %s)", w->path, name,
                                 o->name);
    }
    rc = add_entry(w, name, size, fill, payload, kind, group, field);
    if (!rc) {
        w->have_positions |= kind == H5S_TRX_POSITIONS;
        w->have_offsets |= kind == H5S_TRX_OFFSETS;
    }
    return rc;
}

static void writer_free(h5s_trx_writer *w)
{
    for (size_t i = 0; i < w->n_entries; i++) {
        zip_error_fini(&w->entries[i]->zerr);
        free(w->entries[i]->name);
        free(w->entries[i]);
    }
    free(w->entries);
    free(w->header_json);
    free(w->err_msg);
    free(w->path);
    free(w);
}

int h5s_trx_writer_close(h5s_trx_writer *w)
{
    if (!w)
        return 0;
    int rc = 0;
    if (!w->have_header || !w->have_positions || !w->have_offsets)
        rc = h5s_error_set(H5S_EFORMAT, "%s: a TRX needs header.json, positions and offsets",
                           w->path);
    if (w->za) {
        if (rc) {
            zip_discard(w->za);
        } else if (zip_close(w->za) != 0) {
            rc = w->err ? h5s_error_restore(w->err, w->err_msg ? w->err_msg : "")
                        : h5s_error_set(H5S_EIO, "%s: writing the zip archive failed: %s", w->path,
                                        zip_strerror(w->za));
            zip_discard(w->za);
        }
    }
    writer_free(w);
    return rc;
}

void h5s_trx_writer_discard(h5s_trx_writer *w)
{
    if (!w)
        return;
    if (w->za)
        zip_discard(w->za);
    writer_free(w);
}
