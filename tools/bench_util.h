/*
 * bench_util.h - private to tools/: what the `h5stream bench` programs (frames, tracts,
 * volumes, marc, shards) share: the dd baseline, medians, files and folders.
 */
#ifndef H5S_BENCH_UTIL_H
#define H5S_BENCH_UTIL_H

#include <stdint.h>
#include <sys/resource.h>

/* Runs `dd if=/dev/zero of=DIR/dd.bin bs=1M count=MIB [conv=fsync]` in a child, its output
 * discarded, and removes DIR/dd.bin. Returns the seconds from fork to exit, or -1 when dd
 * could not run or failed. ru (may be NULL) receives the child's resource usage. */
double bench_dd(const char *dir, uint64_t mib, int fsync, struct rusage *ru);

/* Median of n values (the mean of the middle two for even n); 0 for n <= 0. v is not
 * changed. */
double bench_median(const double *v, int n);

/* qsort comparator for doubles, ascending. */
int bench_cmp_double(const void *a, const void *b);

/* Size of a file in bytes, 0 if it cannot be read. */
uint64_t bench_file_size(const char *path);

/* fsync of a file by path: 0, or -1 (errno set). */
int bench_fsync_path(const char *path);

/* Removes the files directly in dir (best effort); dir stays. */
void bench_empty_dir(const char *dir);

/* Removes the files directly in dir, then dir itself (best effort). */
void bench_remove_dir(const char *dir);

/* Runs fn(arg, res) in a forked child, so that the run has its own heap, threads and peak
 * RSS, and copies the child's res (res_size bytes, plain data) back through a pipe.
 * Returns 0 when the whole result came back; otherwise -1, with why (why_size bytes, may
 * be 0) saying what happened (pipe or fork failed, the child died of a signal, or sent
 * nothing). ru (may be NULL) receives the child's resource usage (ru_maxrss: its peak RSS
 * in KiB). stdout and stderr are flushed before the fork; the child ends with _exit. */
int bench_fork_run(void (*fn)(void *arg, void *res), void *arg, void *res, size_t res_size,
                   struct rusage *ru, char *why, size_t why_size);

/* Seconds of the monotonic clock. */
double bench_now(void);

#endif
