/*
 * h5s_commit_lock.c - the process-wide commit lock (h5s_commit_lock.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP */
#endif
#include "h5s_commit_lock.h"

#include <pthread.h>

#ifdef PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP
static pthread_rwlock_t commit_lock = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;
#else
static pthread_rwlock_t commit_lock = PTHREAD_RWLOCK_INITIALIZER;
#endif

void h5s_commit_lock_exclusive(void)
{
    pthread_rwlock_wrlock(&commit_lock);
}

void h5s_commit_unlock_exclusive(void)
{
    pthread_rwlock_unlock(&commit_lock);
}

/* Shared holds of this thread: a refresh that reopens the file refreshes again inside,
 * and a second shared lock could wait behind a waiting writer that waits for the first. */
static _Thread_local unsigned read_holds;

int h5s_commit_read_begin(hid_t file)
{
    if (read_holds) {
        read_holds++;
        return 1;
    }
    unsigned intent = 0;
    if (file < 0 || H5Fget_intent(file, &intent) < 0 || !(intent & H5F_ACC_RDWR))
        return 0;
    pthread_rwlock_rdlock(&commit_lock);
    read_holds = 1;
    return 1;
}

void h5s_commit_read_end(int taken)
{
    if (taken && --read_holds == 0)
        pthread_rwlock_unlock(&commit_lock);
}
