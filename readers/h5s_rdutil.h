/*
 * h5s_rdutil.h - private to readers/: the small HDF5 and clock helpers every SWMR reader
 * (frames, tracts, volumes, MARC) needs.
 */
#ifndef H5S_RDUTIL_H
#define H5S_RDUTIL_H

#include <hdf5.h>
#include <stdint.h>

#include "h5s_reader.h"

/* Monotonic clock in milliseconds. */
int64_t h5s_rd_now_ms(void);

/* Sleeps ms milliseconds (resumed after signals); nothing for ms <= 0. */
void h5s_rd_sleep_ms(int64_t ms);

/* Closes *id with closer when it is valid, then sets it to H5I_INVALID_HID. */
void h5s_rd_close(hid_t *id, herr_t (*closer)(hid_t));

/* 1 if every link along the absolute path exists, 0 if one is missing, -1 on an HDF5
 * error (or a path too long). H5Lexists on "/a/b" fails rather than returning 0 when "/a"
 * is missing, so each prefix is checked. */
int h5s_rd_path_exists(hid_t file, const char *path);

/* A dataset's extent along its first axis. 0, or -1 on an HDF5 error or a scalar. */
int h5s_rd_extent0(hid_t dset, uint64_t *out);

/* Reads rows [first, first + n) of a 1-D dataset as memtype into buf. HDF5's status. */
herr_t h5s_rd_read_rows(hid_t dset, hid_t memtype, uint64_t first, uint64_t n, void *buf);

/* Reads the first row of the writer status dataset (docs/format.md, "Writer status") and
 * maps its state: 1 closed, 2 failed, anything else writing (it may still grow). path:
 * the file, for the message. Returns 0, or H5S_EIO (message set). */
int h5s_rd_writer_state(hid_t status, const char *path, h5s_writer_state *out);

/*
 * Why a file that HDF5 would not open will not open by waiting: when path exists but
 * holds no HDF5 signature (at byte 0, 512, 1024, ...: an empty file, or another format),
 * or is shorter than the end of file its superblock records (cut short, or written on a
 * disk that filled up), sets this thread's message to say so, naming path, and returns
 * H5S_EFORMAT. Otherwise (no such file, or nothing wrong that the bytes show) returns 0
 * and leaves the message alone. The readers call it once their open timeout has passed,
 * so a file its writer is still creating is not judged too early.
 */
int h5s_rd_unopenable(const char *path);

/* What h5s_rd_wait polls: refresh(reader) updates *count and *state from the file. */
typedef struct {
    void *reader;
    int (*refresh)(void *reader);
    const uint64_t *count;
    const h5s_writer_state *state;
    unsigned poll_ms;
    const char *path;  /* the file, for the timeout message */
    const char *what;  /* "frame", "streamline", "record" */
    const char *where; /* the dataset or group, for the message */
} h5s_rd_poll;

/* The readers' wait: refreshes until more than `known` items are committed, the writer
 * has closed or failed (returns 0), an error, or timeout_ms passes (H5S_ETIMEDOUT, with
 * "PATH: WHERE: no WHAT after KNOWN in MS ms"; timeout_ms < 0 waits forever), sleeping
 * poll_ms between refreshes. */
int h5s_rd_wait(const h5s_rd_poll *p, uint64_t known, int timeout_ms);

#endif
