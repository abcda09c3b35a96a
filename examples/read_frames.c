/*
 * read_frames.c - follow a file while its writer appends, printing each new frame.
 *
 * Shows: h5s_reader_open (waits for the file and for SWMR), h5s_reader_shape,
 * h5s_reader_wait, h5s_reader_read, h5s_reader_read_meta, h5s_frame_summarize,
 * h5s_reader_writer_state, h5s_reader_close.
 *
 *   read_frames FILE.h5 [DATASET]
 */
#include <stdio.h>
#include <stdlib.h>

#include "h5s_reader.h"

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: read_frames FILE.h5 [DATASET]\n");
        return 2;
    }
    h5s_reader_options ro = H5S_READER_OPTIONS_INIT;
    ro.open_timeout_ms = 30000; /* the writer may not have started yet */
    h5s_reader *r;
    int rc = h5s_reader_open(&r, argv[1], argc > 2 ? argv[2] : NULL, &ro);
    if (rc) {
        fprintf(stderr, "read_frames: %s: %s\n", h5s_strerror(rc), h5s_error_message());
        return 1;
    }
    h5s_frame_shape shape;
    h5s_reader_shape(r, &shape);
    void *frame = malloc(shape.frame_bytes);
    uint64_t seen = 0, count = 0;
    for (;;) {
        rc = h5s_reader_wait(r, seen, 10000, &count);
        if (rc == H5S_ETIMEDOUT)
            continue; /* the writer is slow, not gone: keep waiting */
        if (rc)
            break;
        for (; seen < count && rc == 0; seen++) {
            uint64_t id;
            h5s_frame_summary s = {0};
            rc = h5s_reader_read(r, seen, 1, frame, shape.frame_bytes);
            if (!rc)
                rc = h5s_reader_read_meta(r, seen, 1, &id, NULL);
            if (!rc)
                rc = h5s_frame_summarize(&s, frame, &shape);
            if (!rc)
                printf("frame %llu id %llu mean %.3f crc32 %08x\n", (unsigned long long)seen,
                       (unsigned long long)id, s.mean, s.crc32);
        }
        /* Closed cleanly, or after a writer error (then h5s_reader_wait would return at
         * once forever): nothing more will come. */
        h5s_writer_state state = h5s_reader_writer_state(r);
        if (rc || ((state == H5S_WRITER_CLOSED || state == H5S_WRITER_FAILED) && seen == count))
            break;
    }
    if (rc)
        fprintf(stderr, "read_frames: %s\n", h5s_error_message());
    else if (h5s_reader_writer_state(r) == H5S_WRITER_FAILED)
        fprintf(stderr,
                "read_frames: the writer stopped after an error; its %llu frames are "
                "whole\n",
                (unsigned long long)seen);
    int failed = rc || h5s_reader_writer_state(r) == H5S_WRITER_FAILED;
    free(frame);
    h5s_reader_close(r);
    return failed ? 1 : 0;
}
