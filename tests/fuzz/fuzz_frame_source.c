/*
 * fuzz_frame_source.c - the frame sources of `h5stream ingest frames` (tools/frame_source.c)
 * on arbitrary bytes. The first HEADER bytes choose the options (dtype, shape, count,
 * shard rank, ranks and block) and the source:
 *   raw:FILE  the rest of the input is the file; every frame handed out must be the
 *             file's bytes of that global frame, the frames exactly this shard's ones
 *             below the count, in order, the stream ending at the file's end or with an
 *             error for a short last frame (what a model computes alone);
 *   sim:ramp  each element must be (frame * 7919 + p) truncated to the dtype (floats:
 *             modulo 65536, float16 rounded as h5s_half_from_float does);
 *   sim       a few small synthetic frames;
 *   SPEC      the rest of the input, up to a NUL, as the spec text, so that the spec
 *             parser sees anything (raw: paths are pointed at the input file, FILE.h5 at
 *             a folder that does not exist, so nothing outside is read).
 * Nothing may crash or leak.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frame_source.h"
#include "fuzz_common.h"
#include "h5s_types.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HEADER 16
#define MAX_FRAMES 4096
#define SPEC_MAX 256

enum { SRC_RAW, SRC_RAMP, SRC_SIM, SRC_SPEC, N_KINDS };

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* The frames of the stream that belong to shard rank, global numbers ascending. */
static uint64_t next_of_shard(uint64_t f, const frame_source_options *o)
{
    uint64_t ranks = o->shard_ranks ? o->shard_ranks : 1;
    uint64_t block = o->shard_block ? o->shard_block : 1;
    if (ranks == 1)
        return f;
    while (f != UINT64_MAX && (f / block) % ranks != o->shard_rank) {
        /* Jump to the first frame of the next block. */
        uint64_t next_block = (f / block + 1);
        if (next_block > UINT64_MAX / block)
            return UINT64_MAX;
        f = next_block * block;
    }
    return f;
}

/* Reads the whole stream of src: checks each frame against the file (raw) or the ramp. */
static void check_stream(frame_source *src, int kind, const frame_source_options *o,
                         const uint8_t *file, size_t file_size)
{
    size_t fb = frame_source_frame_bytes(src);
    uint64_t count = frame_source_count(src);
    unsigned char *buf = malloc(fb ? fb : 1);
    if (!buf)
        return;
    uint64_t expect = next_of_shard(0, o);
    int rc = 0;
    for (int n = 0; n < MAX_FRAMES; n++) {
        rc = frame_source_next(src, buf);
        if (kind != SRC_RAW && kind != SRC_RAMP)
            if (rc != 1)
                break;
        if (kind == SRC_RAW) {
            /* The model: this shard's next frame below the count, whole in the file (a
             * frame), cut by its end (an error), or past it (the end). */
            int want = expect >= count                                    ? 0
                       : expect >= file_size / fb + (file_size % fb != 0) ? 0
                       : (expect + 1) * fb > file_size                    ? FRAME_SOURCE_EDATA
                                                                          : 1;
            if (rc != want)
                FUZZ_TRAP();
            if (rc != 1)
                break;
            if (frame_source_index(src) != expect || memcmp(buf, file + expect * fb, fb) != 0)
                FUZZ_TRAP();
        } else if (kind == SRC_RAMP) {
            if (rc != (expect < count ? 1 : 0))
                FUZZ_TRAP();
            if (rc != 1)
                break;
            size_t es = h5s_dtype_size(frame_source_dtype(src));
            h5s_dtype t = frame_source_dtype(src);
            for (size_t p = 0; p < fb / es; p++) {
                uint64_t v = expect * 7919u + p, got = 0;
                if (t == H5S_FLOAT16) {
                    uint16_t half;
                    memcpy(&half, buf + p * es, 2);
                    if (half != h5s_half_from_float((float)(v & 0xffffu)))
                        FUZZ_TRAP();
                    continue;
                }
                if (t == H5S_FLOAT32 || t == H5S_FLOAT64) {
                    double d;
                    if (t == H5S_FLOAT32) {
                        float f;
                        memcpy(&f, buf + p * es, 4);
                        d = f;
                    } else {
                        memcpy(&d, buf + p * es, 8);
                    }
                    if (d != (double)(v & 0xffffu))
                        FUZZ_TRAP();
                    continue;
                }
                memcpy(&got, buf + p * es, es); /* little-endian host */
                if (es < 8)
                    v &= ((uint64_t)1 << (8 * es)) - 1;
                if (got != v)
                    FUZZ_TRAP();
            }
        }
        expect = expect == UINT64_MAX ? UINT64_MAX : next_of_shard(expect + 1, o);
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < HEADER)
        return 0;
    static const h5s_dtype dtypes[] = {H5S_DTYPE_INVALID, H5S_INT8,    H5S_UINT8,   H5S_INT16,
                                       H5S_UINT16,        H5S_INT32,   H5S_UINT32,  H5S_INT64,
                                       H5S_UINT64,        H5S_FLOAT32, H5S_FLOAT64, H5S_FLOAT16};
    frame_source_options o = FRAME_SOURCE_OPTIONS_INIT;
    int kind = data[0] % N_KINDS;
    o.dtype = dtypes[data[1] % (sizeof dtypes / sizeof dtypes[0])];
    o.rank = data[2] % 4;
    for (unsigned i = 0; i < 3; i++)
        o.dims[i] = data[3 + i] % 9; /* 0 is refused by the shape check */
    o.has_count = data[6] & 1;
    o.count = data[6] & 2 ? le64(data + 8) : data[7];
    o.shard_ranks = data[6] >> 4;      /* 0 to 15 */
    o.shard_rank = (data[6] >> 2) & 3; /* sometimes not below ranks: refused */
    /* Small blocks, or blocks just past 2^64 / k, whose multiples by a rank overflow. */
    o.shard_block = data[14] & 0x80 ? UINT64_MAX / (1 + data[15] % 8) + 1 + data[13] % 4 : data[14];
    o.seed = data[15];
    o.repeat = data[2] & 0x80 ? 1 : 0; /* only for FILE.h5: refused elsewhere */
    o.poisson = (data[2] & 0x40) != 0;
    const uint8_t *body = data + HEADER;
    size_t body_size = size - HEADER;

    char path[4096], spec[SPEC_MAX + 4096];
    if (fuzz_tmpfile(path, sizeof path, ".raw", body, body_size) != 0)
        return 0;
    if (kind == SRC_RAW) {
        snprintf(spec, sizeof spec, "raw:%s", path);
    } else if (kind == SRC_RAMP || kind == SRC_SIM) {
        snprintf(spec, sizeof spec, "%s", kind == SRC_RAMP ? "sim:ramp" : "sim");
        /* Synthetic frames are made, not read: keep them few and small. */
        o.has_count = 1;
        o.count = data[7] % 5;
        if (o.rank == 0) {
            o.rank = 2;
            o.dims[0] = o.dims[1] = 8;
        }
    } else {
        const uint8_t *nul = memchr(body, '\0', body_size);
        size_t n = nul ? (size_t)(nul - body) : body_size;
        if (n > SPEC_MAX)
            n = SPEC_MAX;
        memcpy(spec, body, n);
        spec[n] = '\0';
        char rest[SPEC_MAX + 1];
        memcpy(rest, spec, n + 1);
        if (strncmp(rest, "raw:", 4) == 0 && rest[4])
            snprintf(spec, sizeof spec, "raw:%s", path); /* never stdin or another file */
        else if (strncmp(rest, "sim:", 4) != 0 && strstr(rest, ":/"))
            snprintf(spec, sizeof spec, "/nonexistent-h5s-fuzz/%s", rest);
        if (strncmp(spec, "sim", 3) == 0) {
            o.has_count = 1;
            o.count = data[7] % 3;
            if (o.rank == 0) {
                o.rank = 1;
                o.dims[0] = 16;
            }
        }
    }
    frame_source *src = NULL;
    int rc = frame_source_open(&src, spec, &o);
    if (rc == 0) {
        if (!src || frame_source_frame_bytes(src) == 0 || frame_source_rank(src) < 1 ||
            frame_source_rank(src) > 3)
            FUZZ_TRAP();
        if (kind == SRC_RAW || (kind == SRC_SPEC && strncmp(spec, "raw:", 4) == 0))
            check_stream(src, SRC_RAW, &o, body, body_size);
        else
            check_stream(src, kind, &o, NULL, 0);
        frame_source_close(src);
    } else if (src || (rc != FRAME_SOURCE_EUSAGE && rc != FRAME_SOURCE_EDATA)) {
        FUZZ_TRAP();
    }
    /* A rank not below the rank count is a usage error, whatever the source. */
    if (o.shard_rank >= (o.shard_ranks ? o.shard_ranks : 1u) && rc != FRAME_SOURCE_EUSAGE)
        FUZZ_TRAP();
    unlink(path);
    return 0;
}
