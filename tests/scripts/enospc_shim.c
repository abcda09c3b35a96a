/*
 * enospc_shim.c - an LD_PRELOAD library for tests: writes to files under one folder fail
 * with ENOSPC once a byte budget is spent, as on a full file system, so the writer's
 * full-disk path is tested on machines where a test may not mount a small tmpfs.
 *
 * Environment (read once, at load):
 *   H5S_ENOSPC_DIR     the folder (absolute, no symbolic links); files under it share the
 *                      budget. Unset: the shim passes every call through unchanged.
 *   H5S_ENOSPC_BYTES   the budget: bytes by which this process may grow those files.
 *   H5S_ENOSPC_SPARSE  1: model a file system with sparse files (ext4, XFS, tmpfs); else
 *                      one without (FAT, or a quota on file size).
 *   H5S_ENOSPC_REPORT  optional file; the first short write and the first ENOSPC each
 *                      append one line to it, so a test can tell the shim was what failed.
 *
 * Without sparse files, growing a file (a write past its end, an extending ftruncate or
 * fallocate) uses space and overwriting bytes inside it does not. With them, an extending
 * ftruncate only makes a hole, and a write or fallocate uses what it puts past the end or
 * into holes (found with SEEK_HOLE/SEEK_DATA). Shrinking a file gives its space back. Like
 * a real file system, a write that crosses the limit first returns a short count (taking
 * the new bytes to be at the end of the range, as they are for an appending writer), and
 * the next one fails with ENOSPC. Calls on other files, and reads, are passed through. Interposed:
 * write, pwrite, pwrite64, writev, pwritev, pwritev64, ftruncate, ftruncate64, fallocate,
 * fallocate64, posix_fallocate, posix_fallocate64. glibc's stdio writes through internal calls no
 * preload can see; HDF5's sec2 driver, which writes every h5stream file, calls pwrite.
 *
 * Assumes 64-bit Linux (off_t and off64_t are the same type). Built only for the tests
 * (tests/CMakeLists.txt); used by tests/scripts/test_disk_full.py.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define SHIM_CACHE 64
#define SHIM_IOV_MAX 1024 /* Linux's IOV_MAX: writev refuses longer vectors anyway */

typedef struct {
    dev_t dev;
    ino_t ino;
    int under;
} shim_file;

static struct {
    int active;
    int sparse;
    char dir[PATH_MAX];
    size_t dir_len;
    uint64_t budget;
    uint64_t used;
    char report[PATH_MAX];
    int reported_short, reported_full;
    shim_file cache[SHIM_CACHE]; /* files are few in a test */
    unsigned ncache, next_slot;
    pthread_mutex_t mu;
} shim = {.mu = PTHREAD_MUTEX_INITIALIZER};

typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*writev_fn)(int, const struct iovec *, int);
typedef ssize_t (*pwritev_fn)(int, const struct iovec *, int, off_t);
typedef int (*ftruncate_fn)(int, off_t);
typedef int (*fallocate_fn)(int, int, off_t, off_t);
typedef int (*posix_fallocate_fn)(int, off_t, off_t);

static void *real(const char *name)
{
    void *f = dlsym(RTLD_NEXT, name);
    if (!f)
        abort(); /* every interposed name is in glibc: a broken process, not a test result */
    return f;
}

/* The real functions, looked up on first use (a call may come before the constructor). */
#define REAL(type, name)                                                                           \
    static type real_##name;                                                                       \
    if (!real_##name)                                                                              \
        real_##name = (type)real(#name);

__attribute__((constructor)) static void shim_init(void)
{
    const char *dir = getenv("H5S_ENOSPC_DIR");
    const char *bytes = getenv("H5S_ENOSPC_BYTES");
    if (!dir || !dir[0] || !bytes || !bytes[0])
        return;
    char *end;
    errno = 0;
    unsigned long long b = strtoull(bytes, &end, 10);
    if (errno || *end || strlen(dir) + 2 > sizeof shim.dir)
        return;
    /* "DIR/" so that DIR2/file is not taken for a file under DIR. */
    snprintf(shim.dir, sizeof shim.dir, "%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/");
    shim.dir_len = strlen(shim.dir);
    shim.budget = b;
    const char *sparse = getenv("H5S_ENOSPC_SPARSE");
    shim.sparse = sparse && strcmp(sparse, "1") == 0;
    const char *report = getenv("H5S_ENOSPC_REPORT");
    if (report && strlen(report) < sizeof shim.report)
        snprintf(shim.report, sizeof shim.report, "%s", report);
    shim.active = 1;
}

/* 1 when fd is a regular file under the folder (size in *size). Caller holds the lock. */
static int watched(int fd, off_t *size)
{
    struct stat st;
    if (!shim.active || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        return 0;
    *size = st.st_size;
    for (unsigned i = 0; i < shim.ncache; i++)
        if (shim.cache[i].dev == st.st_dev && shim.cache[i].ino == st.st_ino)
            return shim.cache[i].under;
    char link[64], target[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    int under = 0;
    if (n > 0) {
        target[n] = '\0';
        under = strncmp(target, shim.dir, shim.dir_len) == 0;
    }
    unsigned slot = shim.ncache < SHIM_CACHE ? shim.ncache++ : shim.next_slot++ % SHIM_CACHE;
    shim.cache[slot].dev = st.st_dev;
    shim.cache[slot].ino = st.st_ino;
    shim.cache[slot].under = under;
    return under;
}

static void report_once(int *done, const char *what, int fd, uint64_t asked, uint64_t got)
{
    if (*done || !shim.report[0])
        return;
    *done = 1;
    REAL(write_fn, write)
    char line[256];
    int n = snprintf(line, sizeof line,
                     "%s: fd %d, %llu bytes asked, %llu written, %llu of %llu budget bytes used\n",
                     what, fd, (unsigned long long)asked, (unsigned long long)got,
                     (unsigned long long)shim.used, (unsigned long long)shim.budget);
    int rfd = open(shim.report, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (rfd >= 0) {
        if (n > 0)
            (void)real_write(rfd, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
        close(rfd);
    }
}

/* Bytes of [a, b) (b <= the file size) in holes; the file position is kept. */
static uint64_t hole_bytes(int fd, off_t a, off_t b)
{
    off_t saved = lseek(fd, 0, SEEK_CUR);
    uint64_t total = 0;
    for (off_t pos = a; pos < b;) {
        off_t hole = lseek(fd, pos, SEEK_HOLE);
        if (hole < 0 || hole >= b)
            break;
        off_t data = lseek(fd, hole, SEEK_DATA);
        if (data < 0 || data > b)
            data = b; /* ENXIO: no data after the hole */
        total += (uint64_t)(data - hole);
        pos = data;
    }
    if (saved >= 0)
        lseek(fd, saved, SEEK_SET);
    return total;
}

/* Bytes of space that writing [off, off + n) to a file of size size takes. Caller holds
 * the lock. */
static uint64_t new_bytes(int fd, off_t size, off_t off, uint64_t n)
{
    uint64_t end = (uint64_t)off + n;
    if (!shim.sparse)
        return end > (uint64_t)size ? end - (uint64_t)size : 0;
    uint64_t past = 0;
    if (end > (uint64_t)size)
        past = end - ((uint64_t)off > (uint64_t)size ? (uint64_t)off : (uint64_t)size);
    off_t inside_end = end < (uint64_t)size ? (off_t)end : size;
    return past + (off < inside_end ? hole_bytes(fd, off, inside_end) : 0);
}

/*
 * How many of the n bytes asked at offset off may be written: all when their new space
 * (*need) fits the budget, else those before the point where it runs out (a short
 * write), or none (then ENOSPC). Caller holds the lock.
 */
static size_t allowed(int fd, off_t size, off_t off, size_t n, uint64_t *need)
{
    *need = new_bytes(fd, size, off, n);
    if (shim.used + *need <= shim.budget)
        return n;
    uint64_t room = shim.budget - shim.used;
    if ((uint64_t)n + room <= *need)
        return 0;
    size_t ok = (size_t)((uint64_t)n + room - *need);
    *need = new_bytes(fd, size, off, ok);
    return ok;
}

/* Charges a write of got bytes out of ok whose new space was need. */
static void charge(uint64_t need, size_t ok, ssize_t got)
{
    if (got <= 0)
        return;
    /* A write shorter than asked (rare) is charged at most what it wrote. */
    shim.used += (size_t)got == ok ? need : (need < (uint64_t)got ? need : (uint64_t)got);
}

/* Where a write(2) on fd lands. */
static off_t write_offset(int fd, off_t size)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0 && (flags & O_APPEND))
        return size;
    off_t pos = lseek(fd, 0, SEEK_CUR);
    return pos < 0 ? size : pos;
}

/*
 * The common part of every write: off is where it lands (-1: the file position). Calls
 * do_write(n2) with the count allowed, or fails with ENOSPC.
 */
typedef ssize_t (*shim_writer)(const void *ctx, size_t n);

static ssize_t guarded_write(int fd, off_t off, size_t n, shim_writer do_write, const void *ctx)
{
    pthread_mutex_lock(&shim.mu);
    off_t size;
    if (n == 0 || !watched(fd, &size)) {
        pthread_mutex_unlock(&shim.mu);
        return do_write(ctx, n);
    }
    if (off < 0)
        off = write_offset(fd, size);
    uint64_t need;
    size_t ok = allowed(fd, size, off, n, &need);
    if (ok == 0) {
        report_once(&shim.reported_full, "ENOSPC", fd, n, 0);
        pthread_mutex_unlock(&shim.mu);
        errno = ENOSPC;
        return -1;
    }
    ssize_t got = do_write(ctx, ok);
    int saved = errno;
    charge(need, ok, got);
    if (ok < n)
        report_once(&shim.reported_short, "short write", fd, n, got > 0 ? (uint64_t)got : 0);
    pthread_mutex_unlock(&shim.mu);
    errno = saved;
    return got;
}

typedef struct {
    int fd;
    const void *buf;
    off_t off;
} flat_call;

static ssize_t do_write_flat(const void *ctx, size_t n)
{
    const flat_call *c = ctx;
    REAL(write_fn, write)
    return real_write(c->fd, c->buf, n);
}

static ssize_t do_pwrite_flat(const void *ctx, size_t n)
{
    const flat_call *c = ctx;
    REAL(pwrite_fn, pwrite64)
    return real_pwrite64(c->fd, c->buf, n, c->off);
}

ssize_t write(int fd, const void *buf, size_t n)
{
    flat_call c = {fd, buf, 0};
    return guarded_write(fd, -1, n, do_write_flat, &c);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    flat_call c = {fd, buf, off};
    return guarded_write(fd, off, n, do_pwrite_flat, &c);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
    return pwrite(fd, buf, n, off);
}

typedef struct {
    int fd;
    const struct iovec *iov;
    int iovcnt;
    off_t off;
    int positioned;
} vec_call;

/* Writes the first n bytes of the vector (a shorter vector when n is less). */
static ssize_t do_write_vec(const void *ctx, size_t n)
{
    const vec_call *c = ctx;
    REAL(writev_fn, writev)
    REAL(pwritev_fn, pwritev64)
    struct iovec cut[SHIM_IOV_MAX];
    int count = 0;
    size_t left = n;
    for (int i = 0; i < c->iovcnt && i < SHIM_IOV_MAX && left > 0; i++, count++) {
        cut[count] = c->iov[i];
        if (cut[count].iov_len > left)
            cut[count].iov_len = left;
        left -= cut[count].iov_len;
    }
    return c->positioned ? real_pwritev64(c->fd, cut, count, c->off)
                         : real_writev(c->fd, cut, count);
}

static size_t vec_bytes(const struct iovec *iov, int iovcnt)
{
    size_t n = 0;
    for (int i = 0; i < iovcnt; i++)
        n += iov[i].iov_len;
    return n;
}

ssize_t writev(int fd, const struct iovec *iov, int iovcnt)
{
    vec_call c = {fd, iov, iovcnt, 0, 0};
    return guarded_write(fd, -1, vec_bytes(iov, iovcnt), do_write_vec, &c);
}

ssize_t pwritev(int fd, const struct iovec *iov, int iovcnt, off_t off)
{
    vec_call c = {fd, iov, iovcnt, off, 1};
    return guarded_write(fd, off, vec_bytes(iov, iovcnt), do_write_vec, &c);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int iovcnt, off64_t off)
{
    return pwritev(fd, iov, iovcnt, off);
}

/* Space given back by cutting a file from size to len (len < size). */
static uint64_t freed_bytes(int fd, off_t size, off_t len)
{
    uint64_t cut = (uint64_t)(size - len);
    return shim.sparse ? cut - hole_bytes(fd, len, size) : cut;
}

static void give_back(uint64_t n)
{
    shim.used = n < shim.used ? shim.used - n : 0;
}

int ftruncate(int fd, off_t len)
{
    REAL(ftruncate_fn, ftruncate)
    pthread_mutex_lock(&shim.mu);
    off_t size;
    if (!watched(fd, &size)) {
        pthread_mutex_unlock(&shim.mu);
        return real_ftruncate(fd, len);
    }
    /* Growing makes a hole on a sparse file system and takes space on the others. */
    uint64_t need = len > size && !shim.sparse ? (uint64_t)(len - size) : 0;
    if (shim.used + need > shim.budget) {
        report_once(&shim.reported_full, "ENOSPC (ftruncate)", fd, need, 0);
        pthread_mutex_unlock(&shim.mu);
        errno = ENOSPC;
        return -1;
    }
    uint64_t freed = len < size ? freed_bytes(fd, size, len) : 0;
    int rc = real_ftruncate(fd, len);
    int saved = errno;
    if (rc == 0) {
        shim.used += need;
        give_back(freed);
    }
    pthread_mutex_unlock(&shim.mu);
    errno = saved;
    return rc;
}

int ftruncate64(int fd, off64_t len)
{
    return ftruncate(fd, len);
}

/* 0 when an allocation of [off, off + len) fits (its space in *need), else ENOSPC.
 * Modes other than 0 (punching holes, keeping the size) go through uncharged. */
static int fallocate_check(int fd, int mode, off_t off, off_t len, uint64_t *need)
{
    *need = 0;
    off_t size;
    if (mode != 0 || len <= 0 || !watched(fd, &size))
        return 0;
    *need = new_bytes(fd, size, off, (uint64_t)len);
    if (shim.used + *need > shim.budget) {
        report_once(&shim.reported_full, "ENOSPC (fallocate)", fd, *need, 0);
        *need = 0;
        return ENOSPC;
    }
    return 0;
}

int fallocate(int fd, int mode, off_t off, off_t len)
{
    REAL(fallocate_fn, fallocate)
    pthread_mutex_lock(&shim.mu);
    uint64_t need;
    int e = fallocate_check(fd, mode, off, len, &need);
    if (e) {
        pthread_mutex_unlock(&shim.mu);
        errno = e;
        return -1;
    }
    int rc = real_fallocate(fd, mode, off, len);
    int saved = errno;
    if (rc == 0)
        shim.used += need;
    pthread_mutex_unlock(&shim.mu);
    errno = saved;
    return rc;
}

int fallocate64(int fd, int mode, off64_t off, off64_t len)
{
    return fallocate(fd, mode, off, len);
}

int posix_fallocate(int fd, off_t off, off_t len)
{
    REAL(posix_fallocate_fn, posix_fallocate)
    pthread_mutex_lock(&shim.mu);
    uint64_t need;
    int e = fallocate_check(fd, 0, off, len, &need);
    if (e) {
        pthread_mutex_unlock(&shim.mu);
        return e;
    }
    int rc = real_posix_fallocate(fd, off, len);
    if (rc == 0)
        shim.used += need;
    pthread_mutex_unlock(&shim.mu);
    return rc;
}

int posix_fallocate64(int fd, off64_t off, off64_t len)
{
    return posix_fallocate(fd, off, len);
}
