/*
 * test_shard_poll.c - h5s_master_shard_poll against a writer closing its file.
 *
 * A sharded run's rank 0 decides a shard is done when a poll sees it in a final state, and
 * takes the frame count from the same poll. A poll that raced the close once paired the
 * closed state with the marker's extent from before the final commit (CI, session 4: a
 * master of 12 frames instead of 150). Here a child process writes file after file, each
 * committed only at close, while this process polls each one as fast as it can. The child
 * closes a file only once this process has seen it being written (a byte through a pipe),
 * so every close happens while polls are running: every poll that sees a final state must
 * also see every frame, and no poll may see more frames than were written or fewer than an
 * earlier poll of the same file.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "h5s_format.h"
#include "h5s_master.h"
#include "h5stream.h"

enum { ROUNDS = 1000, FRAMES = 40, ROWS = 16, COLS = 24 };

static char tmpdir[1024];

static void round_path(char *out, size_t n, int round)
{
    snprintf(out, n, "%s/round_%02d.h5", tmpdir, round);
}

/* The child: ROUNDS files of FRAMES frames, with no commit before the close. Returns the
 * exit status (0, or the round that failed plus 1). The poller may open a file HDF5 is
 * still creating, as rank 0 does with the shards of a run. */
static int write_rounds(int go_fd)
{
    static uint16_t frame[ROWS * COLS];
    for (int r = 0; r < ROUNDS; r++) {
        char path[1200];
        round_path(path, sizeof path, r);
        h5s_file_options fo = H5S_FILE_OPTIONS_INIT;
        fo.encode_threads = 1;
        fo.flush_every = 0;
        fo.flush_ms = 0;
        h5s_frames_options o = H5S_FRAMES_OPTIONS_INIT;
        o.dtype = H5S_UINT16;
        o.rank = 2;
        o.dims[0] = ROWS;
        o.dims[1] = COLS;
        h5s_file *f = NULL;
        h5s_frames *fr = NULL;
        if (h5s_file_create(&f, path, &fo) != 0 || h5s_frames_create(&fr, f, NULL, &o) != 0 ||
            h5s_file_start_swmr(f) != 0)
            return r + 1;
        for (int i = 0; i < FRAMES; i++) {
            for (int p = 0; p < ROWS * COLS; p++)
                frame[p] = (uint16_t)(i * 7919 + p);
            if (h5s_frames_append(fr, frame, sizeof frame, NULL) != 0)
                return r + 1;
        }
        char go;
        if (read(go_fd, &go, 1) != 1 || h5s_file_close(f) != 0)
            return r + 1;
    }
    return 0;
}

static void test_shard_poll__final_state_shows_final_count(void **state)
{
    (void)state;
    for (int r = 0; r < ROUNDS; r++) {
        char path[1200];
        round_path(path, sizeof path, r);
        unlink(path);
    }
    int go[2];
    assert_int_equal(pipe(go), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        close(go[1]);
        _exit(write_rounds(go[0]));
    }
    close(go[0]);

    unsigned long polls = 0, final_polls = 0, open_polls = 0;
    for (int r = 0; r < ROUNDS; r++) {
        char path[1200];
        round_path(path, sizeof path, r);
        uint64_t seen = 0, seen_open = 0;
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
            h5s_shard_status st;
            assert_int_equal(h5s_master_shard_poll(&st, path, NULL), 0);
            polls++;
            if (st.readable) {
                if (st.frames > FRAMES || st.frames < seen)
                    fail_msg("round %d: a poll saw %llu frames after %llu (%d written)", r,
                             (unsigned long long)st.frames, (unsigned long long)seen, FRAMES);
                seen = st.frames;
                if (st.state == H5S_STATE_CLOSED || st.state == H5S_STATE_FAILED) {
                    if (st.state != H5S_STATE_CLOSED || st.frames != FRAMES)
                        fail_msg("round %d: a poll saw state %d with %llu frames, expected "
                                 "state %d with %d",
                                 r, (int)st.state, (unsigned long long)st.frames, H5S_STATE_CLOSED,
                                 FRAMES);
                    final_polls++;
                    unlink(path); /* closed: its writer is done with it */
                    break;
                }
                if (seen_open++ == 0)
                    assert_int_equal(write(go[1], "g", 1), 1); /* now it may close */
                open_polls++;
            }
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec - t0.tv_sec > 60)
                fail_msg("round %d: no final state after 60 s", r);
        }
    }
    close(go[1]);
    int status = 0;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(final_polls, ROUNDS);
    /* Every file was seen being written before it closed. */
    print_message("%lu polls, %lu of a file being written\n", polls, open_polls);
    assert_true(open_polls >= ROUNDS);
}

int main(void)
{
    const char *t = getenv("H5S_TEST_TMP");
    snprintf(tmpdir, sizeof tmpdir, "%s", t ? t : "/tmp");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shard_poll__final_state_shows_final_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
