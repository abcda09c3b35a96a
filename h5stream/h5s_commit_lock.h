/*
 * h5s_commit_lock.h - private: makes each commit look atomic to readers that run in the
 * writer's own process.
 *
 * HDF5 opens a file once per process. A reader that opens a file this process is writing
 * gets a handle on the writer's open file, so it sees every HDF5 call of a commit the
 * moment it returns, not only what the commit has flushed: between the call that grows a
 * commit marker and the one that stores the marker's rows, such a reader would count
 * items whose marker rows still read as the fill value (0). A reader in another process
 * only sees what the writer flushed, in the order it flushed it, and needs no lock.
 *
 * The writer thread holds the lock exclusively for the whole of a commit (payload flush,
 * markers, status row, file flush); a same-process reader holds it shared while it polls
 * the status and the markers. Writers are preferred, so readers polling without pause
 * cannot hold a commit off. Never taken recursively; HDF5's own lock is only held inside
 * HDF5 calls, so the two cannot deadlock.
 */
#ifndef H5S_COMMIT_LOCK_H
#define H5S_COMMIT_LOCK_H

#include <hdf5.h>

/* Writer thread: around a commit. */
void h5s_commit_lock_exclusive(void);
void h5s_commit_unlock_exclusive(void);

/*
 * Reader: takes the lock shared when `file` (a reader's file handle) is open for writing in
 * this process, which is how HDF5 shows a file it shares with a writer here. Returns 1 if
 * it took the lock (pass that to h5s_commit_read_end), else 0. Nested calls on one thread
 * count, never block. Thread-safe.
 */
int h5s_commit_read_begin(hid_t file);
void h5s_commit_read_end(int taken);

#endif
