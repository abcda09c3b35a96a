/*
 * h5s_prealloc.c - file space reserved ahead of a sequential writer (h5s_prealloc.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* fallocate */
#endif
#include "h5s_prealloc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/vfs.h>
#endif

#define EXT_SUPER_MAGIC 0xEF53     /* ext2, ext3, ext4 */
#define XFS_SUPER_MAGIC 0x58465342 /* "XFSB" */

static int wanted(int fd)
{
    const char *env = getenv("H5STREAM_PREALLOC");
    if (env && strcmp(env, "0") == 0)
        return 0;
#if defined(__linux__) && defined(FALLOC_FL_KEEP_SIZE)
    struct statfs sf;
    if (fstatfs(fd, &sf) != 0)
        return 0;
    return sf.f_type == EXT_SUPER_MAGIC || sf.f_type == XFS_SUPER_MAGIC;
#else
    (void)fd;
    return 0;
#endif
}

void h5s_prealloc_init(h5s_prealloc *p, int fd, uint64_t step)
{
    p->fd = -1;
    p->end = 0;
    p->step = step ? step : H5S_PREALLOC_STEP;
    if (fd < 0 || !wanted(fd))
        return;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        return;
    p->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    p->end = (uint64_t)st.st_size;
}

void h5s_prealloc_ensure(h5s_prealloc *p, uint64_t upto)
{
    if (p->fd < 0 || upto <= p->end)
        return;
#if defined(__linux__) && defined(FALLOC_FL_KEEP_SIZE)
    uint64_t to = upto + p->step;
    if (fallocate(p->fd, FALLOC_FL_KEEP_SIZE, (off_t)p->end, (off_t)(to - p->end)) == 0) {
        p->end = to;
        return;
    }
#endif
    /* Full, or not supported after all: write as without it. What was reserved so far is
     * still given back by the trim. */
    p->end = UINT64_MAX;
}

/* Space past the size below this is not worth a truncate (which also sets the file's
 * modification time): the file system's own extent blocks count in st_blocks too. */
#define TRIM_SLACK ((uint64_t)1 << 20)

static int trim_fd(int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        return -1;
    uint64_t blk = st.st_blksize > 0 ? (uint64_t)st.st_blksize : 4096;
    uint64_t needed = ((uint64_t)st.st_size + blk - 1) / blk * blk;
    if ((uint64_t)st.st_blocks * 512 <= needed + TRIM_SLACK)
        return 0; /* nothing reserved past the end: the file is left as it is */
    /* Truncating to the same size frees blocks reserved past it (ext4, xfs). */
    return ftruncate(fd, st.st_size);
}

void h5s_prealloc_trim(h5s_prealloc *p)
{
    if (p->fd < 0)
        return;
    int saved = errno;
    trim_fd(p->fd);
    close(p->fd);
    errno = saved;
    p->fd = -1;
    p->end = 0;
}

int h5s_prealloc_trim_path(const char *path)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = trim_fd(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}
