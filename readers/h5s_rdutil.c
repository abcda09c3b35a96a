/* h5s_rdutil.c - helpers shared by the SWMR readers (h5s_rdutil.h). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "h5s_error.h"
#include "h5s_format.h"
#include "h5s_rdutil.h"

#define RD_PATH_MAX 1024

int64_t h5s_rd_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void h5s_rd_sleep_ms(int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec req = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&req, &req) != 0 && errno == EINTR)
        ;
}

void h5s_rd_close(hid_t *id, herr_t (*closer)(hid_t))
{
    if (*id >= 0)
        closer(*id);
    *id = H5I_INVALID_HID;
}

int h5s_rd_path_exists(hid_t file, const char *path)
{
    char buf[RD_PATH_MAX];
    size_t len = strlen(path);
    if (len >= sizeof buf)
        return -1;
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char saved = buf[i];
        buf[i] = '\0';
        htri_t e = H5Lexists(file, buf, H5P_DEFAULT);
        buf[i] = saved;
        if (e <= 0)
            return e < 0 ? -1 : 0;
    }
    return 1;
}

int h5s_rd_extent0(hid_t dset, uint64_t *out)
{
    hid_t space = H5Dget_space(dset);
    if (space < 0)
        return -1;
    hsize_t dims[H5S_MAX_RANK];
    int rank = H5Sget_simple_extent_dims(space, dims, NULL);
    H5Sclose(space);
    if (rank < 1)
        return -1;
    *out = dims[0];
    return 0;
}

herr_t h5s_rd_read_rows(hid_t dset, hid_t memtype, uint64_t first, uint64_t n, void *buf)
{
    if (n == 0)
        return 0;
    hid_t fs = H5Dget_space(dset);
    if (fs < 0)
        return -1;
    hsize_t start = first, cnt = n;
    herr_t st = H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &cnt, NULL);
    hid_t ms = H5Screate_simple(1, &cnt, NULL);
    if (st >= 0 && ms >= 0)
        st = H5Dread(dset, memtype, ms, fs, H5P_DEFAULT, buf);
    else
        st = -1;
    if (ms >= 0)
        H5Sclose(ms);
    H5Sclose(fs);
    return st;
}

int h5s_rd_writer_state(hid_t status, const char *path, h5s_writer_state *out)
{
    h5s_status_row row = {-1, 0.0, 0};
    hid_t memtype = h5s_format_status_type();
    hid_t fspace = H5Dget_space(status);
    hid_t mspace = H5Screate(H5S_SCALAR);
    herr_t rc = -1;
    if (memtype >= 0 && fspace >= 0 && mspace >= 0) {
        /* Only the first row: a longer table must not overrun the one-row buffer. */
        if (H5Sget_simple_extent_ndims(fspace) == 1) {
            hsize_t start = 0, one = 1;
            rc = H5Sselect_hyperslab(fspace, H5S_SELECT_SET, &start, NULL, &one, NULL);
        } else {
            rc = 0;
        }
        if (rc >= 0)
            rc = H5Dread(status, memtype, mspace, fspace, H5P_DEFAULT, &row);
    }
    if (memtype >= 0)
        H5Tclose(memtype);
    if (fspace >= 0)
        H5Sclose(fspace);
    if (mspace >= 0)
        H5Sclose(mspace);
    if (rc < 0)
        return h5s_error_set_h5(H5S_EIO, "%s: %s: cannot read the writer status", path,
                                H5S_STATUS_DATASET);
    *out = row.state == H5S_STATE_CLOSED   ? H5S_WRITER_CLOSED
           : row.state == H5S_STATE_FAILED ? H5S_WRITER_FAILED
                                           : H5S_WRITER_WRITING;
    return 0;
}

int h5s_rd_wait(const h5s_rd_poll *p, uint64_t known, int timeout_ms)
{
    int64_t start = h5s_rd_now_ms();
    for (;;) {
        int rc = p->refresh(p->reader);
        if (rc != 0)
            return rc;
        if (*p->count > known || *p->state == H5S_WRITER_CLOSED || *p->state == H5S_WRITER_FAILED)
            return 0;
        int64_t elapsed = h5s_rd_now_ms() - start;
        if (timeout_ms >= 0 && elapsed >= timeout_ms)
            return h5s_error_set(H5S_ETIMEDOUT, "%s: %s: no %s after %llu in %lld ms", p->path,
                                 p->where, p->what, (unsigned long long)known, (long long)elapsed);
        int64_t wait = p->poll_ms;
        if (timeout_ms >= 0 && wait > timeout_ms - elapsed)
            wait = timeout_ms - elapsed;
        h5s_rd_sleep_ms(wait);
    }
}

int h5s_rd_unopenable(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    struct stat st;
    h5s_superblock sb;
    int found = fstat(fd, &st) == 0 && S_ISREG(st.st_mode)
                    ? h5s_format_superblock(fd, (uint64_t)st.st_size, &sb)
                    : -1;
    close(fd);
    uint64_t size = found >= 0 ? (uint64_t)st.st_size : 0;
    if (found < 0)
        return 0;
    if (found == 0)
        return h5s_error_set(H5S_EFORMAT, "%s: not an HDF5 file (%s)", path,
                             size == 0 ? "it is empty" : "no HDF5 signature");
    if (sb.eof == 0 && size - sb.offset < 64)
        return h5s_error_set(
            H5S_EFORMAT, "%s: the file is cut short inside its HDF5 superblock (%" PRIu64 " bytes)",
            path, size);
    if (sb.eof > size)
        return h5s_error_set(H5S_EFORMAT,
                             "%s: the file is shorter (%" PRIu64 " bytes) than its HDF5 "
                             "superblock says (%" PRIu64 " bytes): it was cut short, or its "
                             "writer met a full disk",
                             path, size, sb.eof);
    return 0;
}
