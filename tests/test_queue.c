/* test_queue.c - the bounded queue: byte budget, back-pressure, ordering, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "h5s_engine.h"
#include "h5s_error.h"

static h5s_job *job_of(h5s_job_kind kind, size_t charged)
{
    h5s_job *j = calloc(1, sizeof *j);
    assert_non_null(j);
    j->kind = kind;
    j->charged = charged;
    return j;
}

/* Reserves a band's bytes and submits it: the bytes are then in flight to the writer. */
static h5s_job *in_flight(h5s_queue *q, size_t bytes)
{
    assert_int_equal(h5s_queue_reserve(q, bytes), 0);
    h5s_job *j = job_of(H5S_JOB_BAND, bytes);
    h5s_queue_submit(q, j);
    return j;
}

/* Empties the encoders' FIFO and frees its jobs (tests that never run the encoders). */
static void drop_work(h5s_queue *q)
{
    h5s_queue_stop_encoders(q);
    for (h5s_job *j; (j = h5s_queue_take_work(q));)
        free(j);
}

static void test_queue__reserve_within_budget(void **state)
{
    (void)state;
    h5s_queue q;
    assert_int_equal(h5s_queue_init(&q, 1000, 1), 0);
    in_flight(&q, 600);
    in_flight(&q, 400);
    assert_int_equal(q.used, 1000);
    assert_int_equal(q.open_bytes, 0);
    /* Full: the non-blocking queue refuses and says how full it is. */
    assert_int_equal(h5s_queue_reserve(&q, 1), H5S_EAGAIN);
    assert_non_null(strstr(h5s_error_message(), "1000 of 1000 bytes"));
    h5s_queue_release(&q, 600);
    assert_int_equal(h5s_queue_reserve(&q, 500), 0);
    assert_int_equal(q.used, 900);
    assert_int_equal(q.open_bytes, 500);
    assert_int_equal(q.peak, 1000);
    drop_work(&q);
    h5s_queue_destroy(&q);
}

static void test_queue__open_bands_never_make_a_producer_wait(void **state)
{
    (void)state;
    h5s_queue q;
    assert_int_equal(h5s_queue_init(&q, 1000, 1), 0);
    /* Two datasets' bands being filled hold more than the budget: the producer that
     * would fill them must not wait for them (it would wait for itself). */
    assert_int_equal(h5s_queue_reserve(&q, 800), 0);
    assert_int_equal(h5s_queue_reserve(&q, 800), 0);
    assert_int_equal(q.open_bytes, 1600);
    /* Once one is submitted, its bytes are in flight and a new band waits for them. */
    h5s_job *j = job_of(H5S_JOB_BAND, 800);
    h5s_queue_submit(&q, j);
    assert_int_equal(q.open_bytes, 800);
    assert_int_equal(h5s_queue_reserve(&q, 100), H5S_EAGAIN);
    /* An open band given up returns its budget. */
    h5s_queue_unreserve(&q, 800);
    assert_int_equal(q.used, 800);
    assert_int_equal(q.open_bytes, 0);
    drop_work(&q);
    h5s_queue_destroy(&q);
}

static void test_queue__oversized_job_passes_when_empty(void **state)
{
    (void)state;
    h5s_queue q;
    assert_int_equal(h5s_queue_init(&q, 100, 1), 0);
    /* Bigger than the whole budget: allowed alone, else it could never go through. */
    in_flight(&q, 5000);
    assert_int_equal(h5s_queue_reserve(&q, 1), H5S_EAGAIN);
    h5s_queue_release(&q, 5000);
    assert_int_equal(q.used, 0);
    drop_work(&q);
    h5s_queue_destroy(&q);
}

typedef struct {
    h5s_queue *q;
    size_t bytes;
    int rc;
    volatile int done;
} reserver;

static void *reserve_thread(void *arg)
{
    reserver *r = arg;
    r->rc = h5s_queue_reserve(r->q, r->bytes);
    r->done = 1;
    return NULL;
}

static void test_queue__blocking_reserve_waits_for_release(void **state)
{
    (void)state;
    h5s_queue q;
    assert_int_equal(h5s_queue_init(&q, 1000, 0), 0);
    in_flight(&q, 900);
    reserver r = {&q, 500, -99, 0};
    pthread_t t;
    pthread_create(&t, NULL, reserve_thread, &r);
    usleep(100 * 1000);
    assert_int_equal(r.done, 0); /* still blocked: 900 + 500 > 1000 */
    h5s_queue_release(&q, 900);
    pthread_join(t, NULL);
    assert_int_equal(r.rc, 0);
    assert_int_equal(q.used, 500);
    drop_work(&q);
    h5s_queue_destroy(&q);
}

static void test_queue__failure_wakes_blocked_producer(void **state)
{
    (void)state;
    h5s_queue q;
    assert_int_equal(h5s_queue_init(&q, 1000, 0), 0);
    in_flight(&q, 1000);
    reserver r = {&q, 10, -99, 0};
    pthread_t t;
    pthread_create(&t, NULL, reserve_thread, &r);
    usleep(50 * 1000);
    h5s_queue_fail(&q, H5S_EIO, "out.h5: /data: frame 7: disk full");
    pthread_join(t, NULL);
    assert_int_equal(r.rc, H5S_EIO);
    /* The kept error and its message reach any thread that asks. */
    h5s_error_clear();
    assert_int_equal(h5s_queue_error(&q), H5S_EIO);
    assert_string_equal(h5s_error_message(), "out.h5: /data: frame 7: disk full");
    /* Only the first error is kept. */
    h5s_queue_fail(&q, H5S_ECODEC, "later");
    assert_int_equal(h5s_queue_error(&q), H5S_EIO);
    drop_work(&q);
    h5s_queue_destroy(&q);
}

typedef struct {
    h5s_queue *q;
    h5s_job **jobs;
    size_t from, to, step;
} finisher;

/* Hands jobs to the writer side out of order, as encoders finishing at random would. */
static void *finish_thread(void *arg)
{
    finisher *fi = arg;
    for (size_t i = fi->from; i < fi->to; i += fi->step)
        h5s_queue_put_ready(fi->q, fi->jobs[fi->to - 1 - (i - fi->from)], 10);
    return NULL;
}

static void test_queue__writer_gets_sequence_order(void **state)
{
    (void)state;
    enum { N = 1000 };
    h5s_queue q;
    assert_int_equal(h5s_queue_init(&q, 1 << 20, 0), 0);
    h5s_job *jobs[N];
    for (size_t i = 0; i < N; i++) {
        jobs[i] = job_of(H5S_JOB_BAND, 10);
        assert_int_equal(h5s_queue_reserve(&q, 10), 0);
        assert_int_equal(h5s_queue_submit(&q, jobs[i]), i);
    }
    /* Encoders take bands in FIFO order. */
    for (size_t i = 0; i < N; i++)
        assert_ptr_equal(h5s_queue_take_work(&q), jobs[i]);
    /* Two threads finish them backwards; the ring must grow past its 64 slots. */
    finisher a = {&q, jobs, 0, N / 2, 1}, b = {&q, jobs, N / 2, N, 1};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, finish_thread, &b);
    pthread_create(&tb, NULL, finish_thread, &a);
    size_t got = 0;
    while (got < N) {
        h5s_job *batch[64];
        size_t n = h5s_queue_take_ready(&q, batch, 64, h5s_mono_now() + 5.0);
        assert_true(n > 0);
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(batch[i]->seq, got);
            got++;
            h5s_queue_release(&q, batch[i]->charged);
            free(batch[i]);
        }
    }
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_int_equal(q.used, 0);
    h5s_queue_destroy(&q);
}

static void test_queue__take_ready_times_out(void **state)
{
    (void)state;
    h5s_queue q;
    assert_int_equal(h5s_queue_init(&q, 1 << 20, 0), 0);
    h5s_job *batch[4];
    double t0 = h5s_mono_now();
    assert_int_equal(h5s_queue_take_ready(&q, batch, 4, t0 + 0.1), 0);
    double waited = h5s_mono_now() - t0;
    assert_true(waited >= 0.09 && waited < 2.0);
    h5s_queue_destroy(&q);
}

static void test_queue__markers_skip_the_encoders(void **state)
{
    (void)state;
    h5s_queue q;
    assert_int_equal(h5s_queue_init(&q, 1 << 20, 0), 0);
    h5s_job *band = job_of(H5S_JOB_BAND, 0), *flush = job_of(H5S_JOB_FLUSH, 0);
    h5s_queue_submit(&q, band);
    h5s_queue_submit(&q, flush);
    /* The flush marker is ready but must wait behind the band in sequence order. */
    h5s_job *batch[4];
    assert_int_equal(h5s_queue_take_ready(&q, batch, 4, h5s_mono_now() + 0.05), 0);
    assert_ptr_equal(h5s_queue_take_work(&q), band);
    h5s_queue_put_ready(&q, band, 0);
    assert_int_equal(h5s_queue_take_ready(&q, batch, 4, h5s_mono_now() + 1.0), 2);
    assert_ptr_equal(batch[0], band);
    assert_ptr_equal(batch[1], flush);
    h5s_queue_mark_done(&q, 2);
    assert_int_equal(h5s_queue_wait_done(&q, 1), 0);
    free(band);
    free(flush);
    /* Stopped encoders get NULL once the FIFO is empty. */
    h5s_queue_stop_encoders(&q);
    assert_null(h5s_queue_take_work(&q));
    h5s_queue_destroy(&q);
}

static void test_queue__error_prefix_keeps_the_cause(void **state)
{
    (void)state;
    /* An encoder's failure reaches the writer as "where: cause", the cause intact. */
    h5s_error_set(H5S_ECODEC, "blosc_compress_ctx failed with status -1");
    assert_int_equal(h5s_error_prefix(H5S_ECODEC, "out.h5: %s: frame %d", "/data", 42), H5S_ECODEC);
    assert_string_equal(h5s_error_message(),
                        "out.h5: /data: frame 42: blosc_compress_ctx failed with status -1");
    h5s_error_clear();
    h5s_error_prefix(H5S_EIO, "no cause");
    assert_string_equal(h5s_error_message(), "no cause");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_queue__reserve_within_budget),
        cmocka_unit_test(test_queue__oversized_job_passes_when_empty),
        cmocka_unit_test(test_queue__open_bands_never_make_a_producer_wait),
        cmocka_unit_test(test_queue__blocking_reserve_waits_for_release),
        cmocka_unit_test(test_queue__failure_wakes_blocked_producer),
        cmocka_unit_test(test_queue__writer_gets_sequence_order),
        cmocka_unit_test(test_queue__take_ready_times_out),
        cmocka_unit_test(test_queue__markers_skip_the_encoders),
        cmocka_unit_test(test_queue__error_prefix_keeps_the_cause),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
