/*
 * frame_source.h - private to tools/: where `h5stream ingest frames` gets its frames.
 *
 * A source is opened from the SRC argument (docs/cli.md, "ingest frames"):
 *   sim, sim:poisson   seeded synthetic photon-counting frames (Poisson counts, a few
 *                      photons of background, bright powder rings)
 *   sim:ramp           element p of frame i = (i * 7919 + p), truncated to the dtype
 *                      (floats: modulo 65536, float16 then rounded to its nearest),
 *                      so any reader can recompute it
 *   raw:PATH, raw:-    little-endian frames back to back, from a file or stdin
 *   FILE.h5:/dataset   an HDF5 dataset: 2-D is one frame, 3-D or 4-D is [N, frame...]
 * and hands out one frame at a time, C order, little-endian, in its dtype.
 *
 * Messages for every failure are printed on stderr (cli_errorf) by the source itself,
 * naming the source and, for raw input, the byte offset.
 */
#ifndef H5S_FRAME_SOURCE_H
#define H5S_FRAME_SOURCE_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "h5s_types.h"

typedef struct frame_source frame_source;

/* Returned by frame_source_open and frame_source_next. */
#define FRAME_SOURCE_EDATA (-1)  /* the input cannot be opened or read: exit status 1 */
#define FRAME_SOURCE_EUSAGE (-2) /* the spec or options are wrong: exit status 2 */

/* Frame count of a source that runs until its input ends (raw without --count). */
#define FRAME_SOURCE_UNTIL_END UINT64_MAX

typedef struct {
    h5s_dtype dtype;  /* H5S_DTYPE_INVALID = the source's own (sim: uint16) */
    unsigned rank;    /* 0 = the source's own shape (sim: 512x512) */
    uint64_t dims[3]; /* frame shape when rank > 0, slowest axis first */
    int has_count;    /* 0: sim 1000, raw until the end, h5 frames x repeat */
    uint64_t count;   /* frames to produce when has_count */
    uint64_t seed;    /* sim and Poisson resampling */
    uint64_t repeat;  /* h5 only: times through the dataset; 0 = not given (1) */
    int poisson;      /* h5 only: resample each frame as Poisson(value) */
    double rate;      /* frames per second; 0 = as fast as possible */
    /* Set by a signal handler to ask for an early end: a pending sleep or read that a
     * signal interrupts then ends the stream instead of resuming. May be NULL. */
    volatile sig_atomic_t *stop;
    /* Sharding (docs/shards.md): of the global frames 0 .. count-1, hand out only those
     * of shard_rank, frame f being shard (f / shard_block) mod shard_ranks's. Each is
     * made exactly as a single source would make it (random frames are seeded by the
     * seed and the frame number). shard_ranks 0 or 1: every frame. */
    uint32_t shard_rank;
    uint32_t shard_ranks;
    uint64_t shard_block; /* 0 = 1 */
} frame_source_options;

#define FRAME_SOURCE_OPTIONS_INIT                                                                  \
    {                                                                                              \
        H5S_DTYPE_INVALID, 0, {0, 0, 0}, 0, 0, 1, 0, 0, 0.0, NULL, 0, 1, 1                         \
    }

/*
 * Opens the source described by spec with opts. out: the caller's; free with
 * frame_source_close. Returns 0, FRAME_SOURCE_EUSAGE (bad spec, or an option that does
 * not fit the source) or FRAME_SOURCE_EDATA (cannot open or understand the input).
 */
int frame_source_open(frame_source **out, const char *spec, const frame_source_options *opts);

/*
 * Writes the next frame into buf (frame_source_frame_bytes bytes), sleeping first when a
 * rate is set. Returns 1 (a frame), 0 (no more frames, or stop was set while waiting) or
 * FRAME_SOURCE_EDATA (a read error or a short last frame; buf is then unspecified).
 */
int frame_source_next(frame_source *src, void *buf);

/* Closes the source and frees it. NULL is a no-op. */
void frame_source_close(frame_source *src);

h5s_dtype frame_source_dtype(const frame_source *src);
unsigned frame_source_rank(const frame_source *src);
/* The frame shape: rank values, slowest axis first. Borrowed. */
const uint64_t *frame_source_dims(const frame_source *src);
size_t frame_source_frame_bytes(const frame_source *src);
/* Global frames of the stream (all shards together), or FRAME_SOURCE_UNTIL_END. */
uint64_t frame_source_count(const frame_source *src);
/* Global frame number (0-based, all shards counted) of the frame frame_source_next
 * returned last: the frame's frame_id. Unspecified before the first frame. */
uint64_t frame_source_index(const frame_source *src);
/* Path of the input file for the h5 and raw sources, or NULL (sim, stdin). Borrowed. */
const char *frame_source_file(const frame_source *src);

#endif
