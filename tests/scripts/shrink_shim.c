/*
 * shrink_shim.c - an LD_PRELOAD library for tests: truncates one input file at a chosen
 * moment after the program has mapped it, as another process truncating a file that is
 * being ingested would, so the ingest's "source shrank" path runs deterministically.
 *
 * Environment (read at load):
 *   H5S_SHRINK_PATH   the file to truncate. Unset: the shim passes every call through.
 *   H5S_SHRINK_TO     its new size in bytes.
 *   H5S_SHRINK_WHEN   map:    right after the first mmap of that file returns (before the
 *                             program has read a byte through the mapping);
 *                     signal: at the first pthread_cond_signal made afterwards by the
 *                             thread that mapped it (the ingest's reader handing its first
 *                             window of records to the parsers, which then read bytes that
 *                             are gone).
 *   H5S_SHRINK_REPORT optional file; one line is appended when the truncation is done, so a
 *                     test can tell the shim acted.
 *
 * Interposed: mmap, mmap64, pthread_cond_signal. Built only for the tests
 * (tests/CMakeLists.txt); used by tests/scripts/test_marc_cli.py.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static int (*real_signal)(pthread_cond_t *);
static const char *path, *report;
static off_t new_size;
static int at_signal;
static int armed; /* the file is mapped; the truncation is due (signal mode) */
static int done;  /* truncated */
static pthread_t mapper;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

__attribute__((constructor)) static void shim_init(void)
{
    real_signal = (int (*)(pthread_cond_t *))dlsym(RTLD_NEXT, "pthread_cond_signal");
    path = getenv("H5S_SHRINK_PATH");
    const char *to = getenv("H5S_SHRINK_TO"), *when = getenv("H5S_SHRINK_WHEN");
    report = getenv("H5S_SHRINK_REPORT");
    if (!path || !to) {
        path = NULL;
        return;
    }
    new_size = (off_t)strtoll(to, NULL, 10);
    at_signal = when && strcmp(when, "signal") == 0;
}

/* Truncates the file (once). The caller holds mu. */
static void shrink_locked(void)
{
    if (done)
        return;
    done = 1;
    if (truncate(path, new_size) != 0) {
        perror("shrink_shim: truncate");
        return;
    }
    if (report) {
        FILE *fp = fopen(report, "a");
        if (fp) {
            fprintf(fp, "truncated %s to %lld (%s)\n", path, (long long)new_size,
                    at_signal ? "signal" : "map");
            fclose(fp);
        }
    }
}

static void after_map(void *m, int fd)
{
    if (!path || m == MAP_FAILED || fd < 0)
        return;
    struct stat a, b;
    if (fstat(fd, &a) != 0 || stat(path, &b) != 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino)
        return;
    pthread_mutex_lock(&mu);
    if (!armed && !done) {
        armed = 1;
        mapper = pthread_self();
        if (!at_signal)
            shrink_locked();
    }
    pthread_mutex_unlock(&mu);
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    /* The system call itself: a sanitizer runtime maps memory before this library's
     * constructor has run, so there may be no symbol looked up yet. */
    void *m = (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off); /* -1: MAP_FAILED */
    after_map(m, fd);
    return m;
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    return mmap(addr, len, prot, flags, fd, off);
}

int pthread_cond_signal(pthread_cond_t *cv)
{
    if (path && at_signal) {
        pthread_mutex_lock(&mu);
        if (armed && !done && pthread_equal(mapper, pthread_self()))
            shrink_locked();
        pthread_mutex_unlock(&mu);
    }
    if (!real_signal)
        real_signal = (int (*)(pthread_cond_t *))dlsym(RTLD_NEXT, "pthread_cond_signal");
    return real_signal(cv);
}
