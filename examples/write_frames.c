/*
 * write_frames.c - stream frames from two producer threads into one SWMR file.
 *
 * Shows: h5s_file_create, h5s_frames_create (NeXus layout, Blosc), h5s_frames_add_scalar,
 * h5s_file_start_swmr, h5s_frames_append from several threads with per-frame metadata,
 * h5s_file_flush, h5s_file_close, and the error message of a failed call.
 *
 *   write_frames OUT.h5 [FRAMES]
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "h5s_codec.h"
#include "h5stream.h"

#define H 256
#define W 256

typedef struct {
    h5s_frames *frames;
    unsigned first, count;
    int rc;
} producer;

static void *produce(void *arg)
{
    producer *p = arg;
    static _Thread_local uint16_t frame[H * W];
    for (unsigned i = p->first; i < p->first + p->count && p->rc == 0; i++) {
        for (size_t e = 0; e < H * W; e++)
            frame[e] = (uint16_t)((e + i) % 1000);
        double exposure = 0.001 * (i % 10 + 1); /* seconds */
        h5s_frame_meta meta = {1, i, 0, 0, &exposure};
        p->rc = h5s_frames_append(p->frames, frame, sizeof frame, &meta);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: write_frames OUT.h5 [FRAMES]\n");
        return 2;
    }
    unsigned n = argc > 2 ? (unsigned)atoi(argv[2]) : 1000;
    h5s_file *file;
    h5s_frames *frames;
    h5s_file_options fo = H5S_FILE_OPTIONS_INIT;
    fo.flush_ms = 200; /* readers see new frames within 0.2 s */
    h5s_frames_options o = H5S_FRAMES_OPTIONS_INIT;
    o.dtype = H5S_UINT16;
    o.rank = 2;
    o.dims[0] = H;
    o.dims[1] = W;
    int rc = h5s_codec_parse(&o.codec, "blosc:lz4:5:shuffle");
    if (!rc)
        rc = h5s_file_create(&file, argv[1], &fo);
    if (rc) {
        fprintf(stderr, "write_frames: %s: %s\n", h5s_strerror(rc), h5s_error_message());
        return 1;
    }
    if ((rc = h5s_frames_create(&frames, file, NULL, &o)) ||
        (rc = h5s_frames_add_scalar(frames, "exposure", H5S_FLOAT32)) ||
        (rc = h5s_file_start_swmr(file))) {
        fprintf(stderr, "write_frames: %s\n", h5s_error_message());
        h5s_file_close(file);
        return 1;
    }
    /* Two producers; frames are numbered in the order their appends take the lock, and
     * frame_id keeps each producer's own numbering. */
    producer p[2] = {{frames, 0, n / 2, 0}, {frames, n / 2, n - n / 2, 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, produce, &p[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    if (!p[0].rc && !p[1].rc)
        rc = h5s_file_flush(file); /* everything appended so far is now visible */
    int rc_close = h5s_file_close(file);
    if (p[0].rc || p[1].rc || rc || rc_close) {
        fprintf(stderr, "write_frames: %s\n", h5s_error_message());
        return 1;
    }
    printf("wrote %u frames to %s\n", n, argv[1]);
    return 0;
}
