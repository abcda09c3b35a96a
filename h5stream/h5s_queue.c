/*
 * h5s_queue.c - the bounded queue between producers, encoders and the writer thread.
 *
 * One mutex guards it all: the critical sections only move pointers and counters, so
 * contention stays low next to the memcpy, compression and I/O done outside it.
 * Bands get their sequence number when submitted; encoders may finish them in any
 * order, and the ring hands them to the writer strictly in sequence order.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "h5s_engine.h"
#include "h5s_error.h"

double h5s_mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int h5s_queue_init(h5s_queue *q, size_t cap, int nonblocking)
{
    memset(q, 0, sizeof *q);
    q->cap = cap;
    q->nonblocking = nonblocking;
    q->ring_cap = 64;
    q->ring = calloc(q->ring_cap, sizeof *q->ring);
    if (!q->ring)
        return h5s_error_set(H5S_ENOMEM, "queue: out of memory");
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv_budget, &ca);
    pthread_cond_init(&q->cv_work, &ca);
    pthread_cond_init(&q->cv_ready, &ca);
    pthread_cond_init(&q->cv_done, &ca);
    pthread_condattr_destroy(&ca);
    return 0;
}

void h5s_queue_destroy(h5s_queue *q)
{
    if (!q->ring)
        return;
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv_budget);
    pthread_cond_destroy(&q->cv_work);
    pthread_cond_destroy(&q->cv_ready);
    pthread_cond_destroy(&q->cv_done);
    free(q->ring);
    q->ring = NULL;
}

/* Caller holds mu. */
static int kept_error_locked(h5s_queue *q)
{
    if (q->err_code)
        return h5s_error_restore(q->err_code, q->err_msg);
    return 0;
}

static int reserve(h5s_queue *q, size_t bytes, int may_fail)
{
    pthread_mutex_lock(&q->mu);
    int rc = kept_error_locked(q);
    /* Only bytes in flight (submitted, not yet written) can come back by waiting: when
     * none are, go ahead even past the budget. This lets a band larger than the budget
     * through, and keeps a producer that alternates between datasets whose open bands
     * hold the budget from waiting for itself. */
    while (rc == 0 && q->used > q->open_bytes && q->used + bytes > q->cap) {
        if (q->nonblocking && may_fail) {
            rc = h5s_error_set(H5S_EAGAIN, "queue full: %zu of %zu bytes in use", q->used, q->cap);
            break;
        }
        pthread_cond_wait(&q->cv_budget, &q->mu);
        rc = kept_error_locked(q);
    }
    if (rc == 0) {
        q->used += bytes;
        q->open_bytes += bytes;
        if (q->used > q->peak)
            q->peak = q->used;
    }
    pthread_mutex_unlock(&q->mu);
    return rc;
}

int h5s_queue_reserve(h5s_queue *q, size_t bytes)
{
    return reserve(q, bytes, 1);
}

int h5s_queue_reserve_wait(h5s_queue *q, size_t bytes)
{
    return reserve(q, bytes, 0);
}

void h5s_queue_unreserve(h5s_queue *q, size_t bytes)
{
    pthread_mutex_lock(&q->mu);
    q->open_bytes = bytes > q->open_bytes ? 0 : q->open_bytes - bytes;
    q->used = bytes > q->used ? 0 : q->used - bytes;
    pthread_cond_broadcast(&q->cv_budget);
    pthread_mutex_unlock(&q->mu);
}

void h5s_queue_charge(h5s_queue *q, size_t bytes)
{
    pthread_mutex_lock(&q->mu);
    q->used += bytes;
    if (q->used > q->peak)
        q->peak = q->used;
    pthread_mutex_unlock(&q->mu);
}

static void release_locked(h5s_queue *q, size_t bytes)
{
    q->used = bytes > q->used ? 0 : q->used - bytes;
    pthread_cond_broadcast(&q->cv_budget);
}

void h5s_queue_release(h5s_queue *q, size_t bytes)
{
    pthread_mutex_lock(&q->mu);
    release_locked(q, bytes);
    pthread_mutex_unlock(&q->mu);
}

/* Caller holds mu. Grows the ring so that seq has a slot. */
static int ring_fit_locked(h5s_queue *q, uint64_t seq)
{
    if (seq - q->write_seq < q->ring_cap)
        return 0;
    uint64_t cap = q->ring_cap;
    while (seq - q->write_seq >= cap)
        cap *= 2;
    h5s_job **ring = calloc(cap, sizeof *ring);
    if (!ring)
        return H5S_ENOMEM;
    for (uint64_t i = 0; i < q->ring_cap; i++) {
        h5s_job *j = q->ring[i];
        if (j)
            ring[j->seq % cap] = j;
    }
    free(q->ring);
    q->ring = ring;
    q->ring_cap = cap;
    return 0;
}

static void put_ready_locked(h5s_queue *q, h5s_job *job)
{
    if (ring_fit_locked(q, job->seq) != 0) {
        /* No memory for a bigger ring: fail the stream, but keep the job where the writer
         * still finds it, so the sequence goes on to the STOP job and close returns. */
        if (!q->err_code) {
            q->err_code = H5S_ENOMEM;
            snprintf(q->err_msg, sizeof q->err_msg, "queue: out of memory growing the ring");
        }
        job->next = q->overflow;
        q->overflow = job;
        pthread_cond_broadcast(&q->cv_budget);
        pthread_cond_broadcast(&q->cv_done);
        pthread_cond_signal(&q->cv_ready);
        return;
    }
    q->ring[job->seq % q->ring_cap] = job;
    if (job->seq == q->write_seq)
        pthread_cond_signal(&q->cv_ready);
}

uint64_t h5s_queue_submit(h5s_queue *q, h5s_job *job)
{
    pthread_mutex_lock(&q->mu);
    job->seq = q->next_seq++;
    job->next = NULL;
    /* Its budget is now in flight: a producer waiting on it may wait for the writer. */
    size_t open = job->kind == H5S_JOB_BAND ? job->charged : job->reserved;
    q->open_bytes = open > q->open_bytes ? 0 : q->open_bytes - open;
    if (job->kind == H5S_JOB_BAND || job->kind == H5S_JOB_CHUNK) {
        if (q->work_tail)
            q->work_tail->next = job;
        else
            q->work_head = job;
        q->work_tail = job;
        pthread_cond_signal(&q->cv_work);
    } else {
        put_ready_locked(q, job);
    }
    uint64_t seq = job->seq;
    pthread_mutex_unlock(&q->mu);
    return seq;
}

h5s_job *h5s_queue_take_work(h5s_queue *q)
{
    pthread_mutex_lock(&q->mu);
    while (!q->work_head && !q->stop_encoders)
        pthread_cond_wait(&q->cv_work, &q->mu);
    h5s_job *job = q->work_head;
    if (job) {
        q->work_head = job->next;
        if (!q->work_head)
            q->work_tail = NULL;
    }
    pthread_mutex_unlock(&q->mu);
    return job;
}

void h5s_queue_put_ready(h5s_queue *q, h5s_job *job, size_t charge)
{
    pthread_mutex_lock(&q->mu);
    if (charge < job->charged)
        release_locked(q, job->charged - charge);
    else
        q->used += charge - job->charged;
    if (q->used > q->peak)
        q->peak = q->used;
    job->charged = charge;
    put_ready_locked(q, job);
    pthread_mutex_unlock(&q->mu);
}

static void deadline_to_timespec(double deadline, struct timespec *ts)
{
    ts->tv_sec = (time_t)deadline;
    ts->tv_nsec = (long)((deadline - (double)ts->tv_sec) * 1e9);
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

size_t h5s_queue_take_ready(h5s_queue *q, h5s_job **out, size_t max, double deadline)
{
    pthread_mutex_lock(&q->mu);
    struct timespec ts;
    if (deadline >= 0)
        deadline_to_timespec(deadline, &ts);
    size_t n = 0;
    for (;;) {
        while (n < max) {
            h5s_job **slot = &q->ring[q->write_seq % q->ring_cap];
            if (!*slot || (*slot)->seq != q->write_seq) {
                slot = &q->overflow; /* rare: only after the ring could not grow */
                while (*slot && (*slot)->seq != q->write_seq)
                    slot = &(*slot)->next;
                if (!*slot)
                    break;
                h5s_job *job = *slot;
                *slot = job->next;
                out[n++] = job;
                q->write_seq++;
                continue;
            }
            out[n++] = *slot;
            *slot = NULL;
            q->write_seq++;
        }
        if (n > 0)
            break;
        if (deadline < 0)
            pthread_cond_wait(&q->cv_ready, &q->mu);
        else if (pthread_cond_timedwait(&q->cv_ready, &q->mu, &ts) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&q->mu);
    return n;
}

void h5s_queue_mark_done(h5s_queue *q, uint64_t seq_end)
{
    pthread_mutex_lock(&q->mu);
    if (seq_end > q->done_seq)
        q->done_seq = seq_end;
    pthread_cond_broadcast(&q->cv_done);
    pthread_mutex_unlock(&q->mu);
}

int h5s_queue_wait_done(h5s_queue *q, uint64_t seq)
{
    pthread_mutex_lock(&q->mu);
    while (q->done_seq <= seq && !q->err_code)
        pthread_cond_wait(&q->cv_done, &q->mu);
    int rc = kept_error_locked(q);
    pthread_mutex_unlock(&q->mu);
    return rc;
}

void h5s_queue_fail(h5s_queue *q, int code, const char *msg)
{
    pthread_mutex_lock(&q->mu);
    if (!q->err_code) {
        q->err_code = code;
        snprintf(q->err_msg, sizeof q->err_msg, "%s", msg);
    }
    pthread_cond_broadcast(&q->cv_budget);
    pthread_cond_broadcast(&q->cv_done);
    pthread_mutex_unlock(&q->mu);
}

void h5s_queue_note(h5s_queue *q, const char *note)
{
    pthread_mutex_lock(&q->mu);
    size_t len = strlen(q->err_msg);
    if (q->err_code && len + 1 < sizeof q->err_msg)
        snprintf(q->err_msg + len, sizeof q->err_msg - len, "%s", note);
    pthread_mutex_unlock(&q->mu);
}

int h5s_queue_error(h5s_queue *q)
{
    pthread_mutex_lock(&q->mu);
    int rc = kept_error_locked(q);
    pthread_mutex_unlock(&q->mu);
    return rc;
}

void h5s_queue_stop_encoders(h5s_queue *q)
{
    pthread_mutex_lock(&q->mu);
    q->stop_encoders = 1;
    pthread_cond_broadcast(&q->cv_work);
    pthread_mutex_unlock(&q->mu);
}

void h5s_pool_init(h5s_pool *p, size_t size, size_t keep)
{
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    p->size = size;
    p->free = calloc(keep ? keep : 1, sizeof *p->free);
    p->cap = p->free ? keep : 0;
}

void h5s_pool_destroy(h5s_pool *p)
{
    if (!p->size)
        return;
    for (size_t i = 0; i < p->n; i++)
        free(p->free[i]);
    free(p->free);
    pthread_mutex_destroy(&p->mu);
    memset(p, 0, sizeof *p);
}

void *h5s_pool_get(h5s_pool *p)
{
    void *buf = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->n)
        buf = p->free[--p->n];
    pthread_mutex_unlock(&p->mu);
    return buf ? buf : malloc(p->size ? p->size : 1);
}

void h5s_pool_put(h5s_pool *p, void *buf)
{
    if (!buf)
        return;
    pthread_mutex_lock(&p->mu);
    if (p->n < p->cap) {
        p->free[p->n++] = buf;
        buf = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    free(buf);
}
