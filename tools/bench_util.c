/* bench_util.c - helpers shared by the benchmark programs (bench_util.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double bench_dd(const char *dir, uint64_t mib, int fsync, struct rusage *ru)
{
    char of[1200], count[32];
    snprintf(of, sizeof of, "of=%s/dd.bin", dir);
    snprintf(count, sizeof count, "count=%" PRIu64, mib);
    double t0 = bench_now();
    pid_t pid = fork();
    if (pid == 0) {
        /* dd reports its own rate on stderr; the caller times it and parses nothing. */
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) {
            dup2(null, STDOUT_FILENO);
            dup2(null, STDERR_FILENO);
        }
        if (fsync)
            execl("/bin/dd", "dd", "if=/dev/zero", of, "bs=1M", count, "conv=fsync", (char *)NULL);
        else
            execl("/bin/dd", "dd", "if=/dev/zero", of, "bs=1M", count, (char *)NULL);
        _exit(127);
    }
    if (pid < 0)
        return -1;
    int status = 0;
    struct rusage usage;
    memset(&usage, 0, sizeof usage);
    while (wait4(pid, &status, 0, &usage) < 0 && errno == EINTR)
        ;
    double secs = bench_now() - t0;
    if (ru)
        *ru = usage;
    unlink(of + 3);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? secs : -1;
}

int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_median(const double *v, int n)
{
    if (n <= 0)
        return 0;
    double *s = malloc((size_t)n * sizeof *s);
    if (!s)
        return v[0];
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, bench_cmp_double);
    double m = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
    free(s);
    return m;
}

uint64_t bench_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

int bench_fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

void bench_empty_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    const struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char p[1400];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
}

void bench_remove_dir(const char *dir)
{
    bench_empty_dir(dir);
    rmdir(dir);
}

static void write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static size_t read_all(int fd, void *buf, size_t n)
{
    char *p = buf;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    return got;
}

int bench_fork_run(void (*fn)(void *arg, void *res), void *arg, void *res, size_t res_size,
                   struct rusage *ru, char *why, size_t why_size)
{
    struct rusage usage;
    memset(&usage, 0, sizeof usage);
    if (ru)
        *ru = usage;
    int pfd[2];
    if (pipe(pfd) != 0) {
        snprintf(why, why_size, "pipe: %s", strerror(errno));
        return -1;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        close(pfd[0]);
        fn(arg, res);
        write_all(pfd[1], res, res_size);
        close(pfd[1]);
        /* _exit: the parent's stdio buffers and atexit handlers are not the child's. */
        _exit(0);
    }
    close(pfd[1]);
    if (pid < 0) {
        close(pfd[0]);
        snprintf(why, why_size, "fork: %s", strerror(errno));
        return -1;
    }
    size_t got = read_all(pfd[0], res, res_size);
    close(pfd[0]);
    int status = 0;
    while (wait4(pid, &status, 0, &usage) < 0 && errno == EINTR)
        ;
    if (ru)
        *ru = usage;
    if (got == res_size)
        return 0;
    if (WIFSIGNALED(status))
        snprintf(why, why_size, "the run died of signal %d", WTERMSIG(status));
    else
        snprintf(why, why_size, "the run sent no result (wait status %d)", status);
    return -1;
}
