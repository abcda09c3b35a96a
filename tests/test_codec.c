/*
 * test_codec.c - filters/h5s_codec: spec parsing, encode/decode round trips, and
 * byte-for-byte agreement with HDF5's own filter pipeline (shuffle + deflate, hdf5-blosc).
 *
 * Run one test alone with its name (or a glob) as the only argument:
 *   test_codec test_codec__hdf5_blosc
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <hdf5.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "h5s_codec.h"
#include "h5s_format.h"
#include "h5s_error.h"

/* ---- Test data ---- */

static uint64_t rng_next(uint64_t *s)
{
    /* xorshift64*: deterministic, so a failing case can be replayed. */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static double rng_unit(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) / 9007199254740992.0;
}

/* A detector-like count: binomial(16, mean/16), close to Poisson for these small means,
 * with a slowly varying mean and rare hot pixels. */
static unsigned count_at(uint64_t *s, size_t i)
{
    double p = (0.5 + 4.0 * (double)(i % 97) / 97.0) / 16.0;
    unsigned k = 0;
    for (int t = 0; t < 16; t++)
        k += rng_unit(s) < p;
    if (rng_next(s) % 64 == 0)
        k += (unsigned)(rng_next(s) % 200);
    return k;
}

/* Fills nelem elements of dtype with counts (or random bytes if random is set). */
static void fill(h5s_dtype dt, void *buf, size_t nelem, uint64_t seed, int random)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    size_t ts = h5s_dtype_size(dt);
    if (random) {
        for (size_t i = 0; i < nelem * ts; i++)
            ((uint8_t *)buf)[i] = (uint8_t)(rng_next(&s) >> 56);
        return;
    }
    for (size_t i = 0; i < nelem; i++) {
        unsigned k = count_at(&s, i);
        /* Calibrated values: counts with noise quantized to 1/64. */
        double noise = (double)(rng_next(&s) % 16) / 64.0 - 0.125;
        switch (dt) {
        case H5S_INT8:
        case H5S_UINT8:
            ((uint8_t *)buf)[i] = (uint8_t)(k > 127 ? 127 : k);
            break;
        case H5S_INT16:
        case H5S_UINT16:
            ((uint16_t *)buf)[i] = (uint16_t)k;
            break;
        case H5S_INT32:
        case H5S_UINT32:
            ((uint32_t *)buf)[i] = k;
            break;
        case H5S_INT64:
        case H5S_UINT64:
            ((uint64_t *)buf)[i] = k;
            break;
        case H5S_FLOAT32:
            ((float *)buf)[i] = (float)(k + noise);
            break;
        case H5S_FLOAT64:
            ((double *)buf)[i] = k + noise;
            break;
        default:
            fail_msg("no data for dtype %d", (int)dt);
        }
    }
}

static uint8_t *xmalloc(size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

static h5s_codec parsed(const char *spec)
{
    h5s_codec c;
    if (h5s_codec_parse(&c, spec) != 0)
        fail_msg("parse '%s': %s", spec, h5s_error_message());
    return c;
}

static const h5s_blosc_compressor all_compressors[] = {
    H5S_BLOSC_BLOSCLZ, H5S_BLOSC_LZ4, H5S_BLOSC_LZ4HC, H5S_BLOSC_ZLIB, H5S_BLOSC_ZSTD};
static const h5s_dtype sized_dtypes[] = {H5S_UINT8, H5S_UINT16, H5S_FLOAT32, H5S_UINT64};

/* Encodes into a buffer of exactly h5s_codec_bound bytes (ASan catches any overrun),
 * decodes, and checks the data came back. The encoded chunk is returned for more checks. */
static uint8_t *round_trip(const h5s_codec *c, size_t ts, const uint8_t *data, size_t nbytes,
                           size_t *size, uint32_t *mask)
{
    char spec[64];
    assert_int_equal(h5s_codec_format(c, spec, sizeof spec), 0);
    size_t cap = h5s_codec_bound(c, nbytes);
    uint8_t *enc = xmalloc(cap), *scratch = xmalloc(nbytes), *dec = xmalloc(nbytes);
    if (h5s_codec_encode(c, ts, data, nbytes, enc, cap, scratch, size, mask) != 0)
        fail_msg("encode %s ts %zu n %zu: %s", spec, ts, nbytes, h5s_error_message());
    assert_true(*size <= cap);
    memset(dec, 0xA5, nbytes);
    if (h5s_codec_decode(c, ts, enc, *size, *mask, dec, nbytes) != 0)
        fail_msg("decode %s ts %zu n %zu: %s", spec, ts, nbytes, h5s_error_message());
    if (memcmp(dec, data, nbytes) != 0)
        fail_msg("%s ts %zu n %zu: decoded bytes differ", spec, ts, nbytes);
    free(scratch);
    free(dec);
    return enc;
}

/* ---- Parsing ---- */

static void test_codec__parse_valid(void **state)
{
    (void)state;
    static const struct {
        const char *spec;
        h5s_codec want;
    } cases[] = {
        {"none", H5S_CODEC_INIT},
        {"deflate", {H5S_CODEC_DEFLATE, 4, H5S_SHUFFLE_NONE, H5S_BLOSC_LZ4}},
        {"deflate:9", {H5S_CODEC_DEFLATE, 9, H5S_SHUFFLE_NONE, H5S_BLOSC_LZ4}},
        {"deflate:1:shuffle", {H5S_CODEC_DEFLATE, 1, H5S_SHUFFLE_BYTE, H5S_BLOSC_LZ4}},
        {"deflate:6:noshuffle", {H5S_CODEC_DEFLATE, 6, H5S_SHUFFLE_NONE, H5S_BLOSC_LZ4}},
        {"blosc", {H5S_CODEC_BLOSC, 5, H5S_SHUFFLE_BYTE, H5S_BLOSC_BLOSCLZ}},
        {"blosc:zstd", {H5S_CODEC_BLOSC, 5, H5S_SHUFFLE_BYTE, H5S_BLOSC_ZSTD}},
        {"blosc:lz4:5:bitshuffle", {H5S_CODEC_BLOSC, 5, H5S_SHUFFLE_BIT, H5S_BLOSC_LZ4}},
        {"blosc:lz4hc:0", {H5S_CODEC_BLOSC, 0, H5S_SHUFFLE_BYTE, H5S_BLOSC_LZ4HC}},
        {"blosc:zlib:9:noshuffle", {H5S_CODEC_BLOSC, 9, H5S_SHUFFLE_NONE, H5S_BLOSC_ZLIB}},
        {"blosc:blosclz:1:shuffle", {H5S_CODEC_BLOSC, 1, H5S_SHUFFLE_BYTE, H5S_BLOSC_BLOSCLZ}},
        {"blosc:zstd:07", {H5S_CODEC_BLOSC, 7, H5S_SHUFFLE_BYTE, H5S_BLOSC_ZSTD}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        h5s_codec got = parsed(cases[i].spec);
        if (memcmp(&got, &cases[i].want, sizeof got) != 0)
            fail_msg("'%s' parsed as kind %d level %d shuffle %d compressor %d", cases[i].spec,
                     (int)got.kind, got.level, (int)got.shuffle, (int)got.blosc_compressor);
    }
}

static void test_codec__parse_invalid(void **state)
{
    (void)state;
    static const struct {
        const char *spec;
        const char *fragment; /* the bad part the message must name */
    } cases[] = {
        {"deflate:0", "'0'"},
        {"deflate:10", "'10'"},
        {"deflate:-1", "'-1'"},
        {"deflate: 5", "' 5'"},
        {"deflate:", "level ''"},
        {"blosc:lz5", "unknown Blosc compressor 'lz5' (expected blosclz, lz4, lz4hc, zlib, zstd)"},
        {"blosc:LZ4", "'LZ4'"},
        {"blosc:snappy", "'snappy'"},
        {"blosc:lz4:10", "'10'"},
        {"blosc:lz4:100", "'100'"},
        {"blosc:lz4:5:twist", "'twist'"},
        {"deflate:4:bitshuffle", "'bitshuffle'"},
        {"", "empty"},
        {"gzip", "'gzip'"},
        {"none:1", "too many"},
        {"deflate:4:shuffle:x", "too many"},
        {"blosc:lz4:5:shuffle:x", "too many"},
        {"blosc:lz4:5:shuffle:x:y:z", "too many"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        h5s_codec out = {H5S_CODEC_BLOSC, 3, H5S_SHUFFLE_BIT, H5S_BLOSC_ZLIB};
        const h5s_codec before = out;
        int rc = h5s_codec_parse(&out, cases[i].spec);
        const char *msg = h5s_error_message();
        if (rc != H5S_EINVAL)
            fail_msg("'%s' returned %d, expected H5S_EINVAL", cases[i].spec, rc);
        if (!strstr(msg, cases[i].fragment) || !strstr(msg, "--compress"))
            fail_msg("'%s': message \"%s\" does not name \"%s\"", cases[i].spec, msg,
                     cases[i].fragment);
        if (cases[i].spec[0] && !strstr(msg, cases[i].spec))
            fail_msg("'%s': message \"%s\" does not quote the spec", cases[i].spec, msg);
        assert_memory_equal(&out, &before, sizeof out);
    }
    h5s_codec out;
    assert_int_equal(h5s_codec_parse(&out, NULL), H5S_EINVAL);
    assert_int_equal(h5s_codec_parse(NULL, "none"), H5S_EINVAL);
}

static void test_codec__format_round_trip(void **state)
{
    (void)state;
    static const struct {
        const char *spec, *canonical;
    } named[] = {
        {"none", "none"},
        {"deflate", "deflate:4:noshuffle"},
        {"deflate:1:shuffle", "deflate:1:shuffle"},
        {"blosc", "blosc:blosclz:5:shuffle"},
        {"blosc:zstd", "blosc:zstd:5:shuffle"},
        {"blosc:lz4:5:bitshuffle", "blosc:lz4:5:bitshuffle"},
    };
    char buf[64];
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++) {
        h5s_codec c = parsed(named[i].spec);
        assert_int_equal(h5s_codec_format(&c, buf, sizeof buf), 0);
        assert_string_equal(buf, named[i].canonical);
    }

    /* Every valid codec survives format then parse unchanged. */
    int n = 0;
    h5s_codec all[1 + 9 * 2 + 5 * 10 * 3];
    all[n++] = (h5s_codec)H5S_CODEC_INIT;
    for (int level = 1; level <= 9; level++)
        for (int s = 0; s <= 1; s++)
            all[n++] = (h5s_codec){H5S_CODEC_DEFLATE, level, (h5s_shuffle)s, H5S_BLOSC_LZ4};
    for (size_t k = 0; k < 5; k++)
        for (int level = 0; level <= 9; level++)
            for (int s = 0; s <= 2; s++)
                all[n++] = (h5s_codec){H5S_CODEC_BLOSC, level, (h5s_shuffle)s, all_compressors[k]};
    for (int i = 0; i < n; i++) {
        assert_int_equal(h5s_codec_format(&all[i], buf, sizeof buf), 0);
        h5s_codec back = parsed(buf);
        if (memcmp(&back, &all[i], sizeof back) != 0)
            fail_msg("'%s' did not parse back to the codec it came from", buf);
    }

    h5s_codec c = parsed("deflate:4:noshuffle");
    size_t len = strlen("deflate:4:noshuffle");
    assert_int_equal(h5s_codec_format(&c, buf, len), H5S_EINVAL);
    assert_non_null(strstr(h5s_error_message(), "too small"));
    assert_int_equal(h5s_codec_format(&c, buf, len + 1), 0);
    c.level = 0;
    assert_int_equal(h5s_codec_format(&c, buf, sizeof buf), H5S_EINVAL);
}

static void test_codec__validate(void **state)
{
    (void)state;
    static const struct {
        h5s_codec c;
        const char *fragment;
    } bad[] = {
        {{H5S_CODEC_DEFLATE, 0, H5S_SHUFFLE_NONE, H5S_BLOSC_LZ4}, "level 0"},
        {{H5S_CODEC_DEFLATE, 10, H5S_SHUFFLE_NONE, H5S_BLOSC_LZ4}, "level 10"},
        {{H5S_CODEC_DEFLATE, 4, H5S_SHUFFLE_BIT, H5S_BLOSC_LZ4}, "Blosc-only"},
        {{H5S_CODEC_BLOSC, -1, H5S_SHUFFLE_BYTE, H5S_BLOSC_LZ4}, "level -1"},
        {{H5S_CODEC_BLOSC, 10, H5S_SHUFFLE_BYTE, H5S_BLOSC_LZ4}, "level 10"},
        {{H5S_CODEC_BLOSC, 5, (h5s_shuffle)3, H5S_BLOSC_LZ4}, "shuffle value 3"},
        {{H5S_CODEC_BLOSC, 5, H5S_SHUFFLE_BYTE, (h5s_blosc_compressor)3}, "compressor code 3"},
        {{(h5s_codec_kind)7, 5, H5S_SHUFFLE_BYTE, H5S_BLOSC_LZ4}, "kind 7"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(h5s_codec_validate(&bad[i].c), H5S_EINVAL);
        if (!strstr(h5s_error_message(), bad[i].fragment))
            fail_msg("message \"%s\" does not name \"%s\"", h5s_error_message(), bad[i].fragment);
    }
    assert_int_equal(h5s_codec_validate(NULL), H5S_EINVAL);
    for (size_t k = 0; k < 5; k++) {
        h5s_codec c = {H5S_CODEC_BLOSC, 0, H5S_SHUFFLE_BIT, all_compressors[k]};
        assert_int_equal(h5s_codec_validate(&c), 0);
    }
}

/* ---- Encode/decode ---- */

static void test_codec__round_trip_none(void **state)
{
    (void)state;
    h5s_codec c = parsed("none");
    uint8_t data[1000];
    fill(H5S_UINT8, data, sizeof data, 1, 1);
    size_t size;
    uint32_t mask;
    uint8_t *enc = round_trip(&c, 1, data, sizeof data, &size, &mask);
    assert_int_equal(size, sizeof data);
    assert_int_equal(mask, 0);
    assert_memory_equal(enc, data, sizeof data);
    free(enc);
}

static void test_codec__round_trip_deflate(void **state)
{
    (void)state;
    for (size_t d = 0; d < sizeof sized_dtypes / sizeof sized_dtypes[0]; d++) {
        size_t ts = h5s_dtype_size(sized_dtypes[d]);
        size_t nelem = 16384;
        uint8_t *data = xmalloc(nelem * ts + 3);
        fill(sized_dtypes[d], data, nelem, d + 10, 0);
        for (size_t i = 0; i < 3; i++)
            data[nelem * ts + i] = (uint8_t)(7 + i);
        /* Whole elements, a chunk that is not a multiple of the type size, one element. */
        const size_t sizes[] = {nelem * ts, nelem * ts + 3, ts, 5 * ts - 1};
        for (int level = 1; level <= 9; level++) {
            for (int s = 0; s <= 1; s++) {
                h5s_codec c = {H5S_CODEC_DEFLATE, level, (h5s_shuffle)s, H5S_BLOSC_LZ4};
                for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
                    size_t size;
                    uint32_t mask;
                    free(round_trip(&c, ts, data, sizes[k], &size, &mask));
                    assert_int_equal(mask, 0);
                    /* Counts always shrink; shuffled multi-byte counts by half or more. */
                    size_t most = s && ts > 1 ? sizes[k] / 2 : sizes[k] - 1;
                    if (k == 0 && size > most)
                        fail_msg("deflate:%d shuffle %d ts %zu: counts only shrank to %zu of %zu",
                                 level, s, ts, size, sizes[k]);
                }
            }
        }
        free(data);
    }
}

/* The deflate stream holds exactly HDF5's shuffle of the input (H5Zshuffle.c). */
static void test_codec__shuffle_layout(void **state)
{
    (void)state;
    uint8_t in[23], enc[128], scratch[23], out[64];
    for (int i = 0; i < 23; i++)
        in[i] = (uint8_t)i;
    /* 4-byte elements: n = 5 whole elements, then 3 leftover bytes copied unchanged. */
    static const uint8_t want4[23] = {0,  4,  8,  12, 16, 1,  5,  9,  13, 17, 2, 6,
                                      10, 14, 18, 3,  7,  11, 15, 19, 20, 21, 22};
    static const struct {
        size_t ts, nbytes;
        const uint8_t *want; /* NULL: stored unchanged */
    } cases[] = {{4, 23, want4}, {1, 23, NULL}, {8, 12, NULL}, {8, 8, NULL}};
    h5s_codec c = parsed("deflate:1:shuffle");
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        size_t size;
        uint32_t mask;
        assert_int_equal(h5s_codec_encode(&c, cases[k].ts, in, cases[k].nbytes, enc, sizeof enc,
                                          scratch, &size, &mask),
                         0);
        uLongf len = sizeof out;
        assert_int_equal(uncompress(out, &len, enc, size), Z_OK);
        assert_int_equal(len, cases[k].nbytes);
        assert_memory_equal(out, cases[k].want ? cases[k].want : in, cases[k].nbytes);
    }
}

static void test_codec__round_trip_blosc(void **state)
{
    (void)state;
    static const int levels[] = {0, 1, 5, 9};
    for (size_t d = 0; d < sizeof sized_dtypes / sizeof sized_dtypes[0]; d++) {
        size_t ts = h5s_dtype_size(sized_dtypes[d]);
        size_t nbytes = 16384 * ts;
        uint8_t *data = xmalloc(nbytes);
        fill(sized_dtypes[d], data, nbytes / ts, d + 20, 0);
        for (size_t k = 0; k < 5; k++) {
            for (int s = 0; s <= 2; s++) {
                for (size_t l = 0; l < 4; l++) {
                    h5s_codec c = {H5S_CODEC_BLOSC, levels[l], (h5s_shuffle)s, all_compressors[k]};
                    size_t size;
                    uint32_t mask;
                    uint8_t *enc = round_trip(&c, ts, data, nbytes, &size, &mask);
                    if (levels[l] == 0) {
                        /* Level 0 is a copy plus a 16-byte header: it never fits in nbytes,
                         * so the filter fails and the chunk is stored raw. */
                        assert_int_equal(mask, 1);
                        assert_int_equal(size, nbytes);
                        assert_memory_equal(enc, data, nbytes);
                    } else if (mask == 1) {
                        /* Blosc gave up (blosclz does on high-entropy bytes): raw copy. */
                        assert_int_equal(size, nbytes);
                        assert_memory_equal(enc, data, nbytes);
                        if (s != H5S_SHUFFLE_NONE && all_compressors[k] != H5S_BLOSC_BLOSCLZ)
                            fail_msg("blosc %d:%d:%d ts %zu: shuffled counts not compressed",
                                     (int)all_compressors[k], levels[l], s, ts);
                    } else {
                        assert_true(size < nbytes);
                    }
                    free(enc);
                }
            }
        }
        free(data);
    }
}

static void test_codec__blosc_incompressible(void **state)
{
    (void)state;
    static const int levels[] = {1, 5, 9};
    /* Random data, and chunks under Blosc's 128-byte minimum (always a plain copy). */
    const size_t sizes[] = {65536, 4096 + 8, 100, 8};
    for (size_t z = 0; z < sizeof sizes / sizeof sizes[0]; z++) {
        uint8_t *data = xmalloc(sizes[z]);
        fill(H5S_UINT8, data, sizes[z], z + 30, 1);
        for (size_t k = 0; k < 5; k++)
            for (int s = 0; s <= 2; s++)
                for (size_t l = 0; l < 3; l++) {
                    h5s_codec c = {H5S_CODEC_BLOSC, levels[l], (h5s_shuffle)s, all_compressors[k]};
                    size_t size;
                    uint32_t mask;
                    uint8_t *enc = round_trip(&c, 4, data, sizes[z], &size, &mask);
                    assert_int_equal(mask, 1);
                    assert_int_equal(size, sizes[z]);
                    assert_memory_equal(enc, data, sizes[z]);
                    free(enc);
                }
        free(data);
    }
}

static void test_codec__bound(void **state)
{
    (void)state;
    /* Random bytes are deflate's worst case; buffers of exactly the bound let ASan see any
     * write past it. */
    uint8_t *data = xmalloc(70000);
    fill(H5S_UINT8, data, 70000, 40, 1);
    const size_t sizes[] = {0, 1, 2, 15, 16, 17, 127, 128, 129, 1000, 4099, 65536, 70000};
    const char *specs[] = {"none",
                           "deflate:1",
                           "deflate:9:shuffle",
                           "blosc:lz4:9:shuffle",
                           "blosc:zstd:1:bitshuffle",
                           "blosc:blosclz:5:noshuffle"};
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        h5s_codec c = parsed(specs[i]);
        for (size_t z = 0; z < sizeof sizes / sizeof sizes[0]; z++) {
            size_t size;
            uint32_t mask;
            free(round_trip(&c, 2, data, sizes[z], &size, &mask));
            if (c.kind == H5S_CODEC_DEFLATE)
                assert_true(h5s_codec_bound(&c, sizes[z]) >= compressBound(sizes[z]));
            else
                assert_int_equal(h5s_codec_bound(&c, sizes[z]), sizes[z]);
        }
    }
    free(data);
}

static void test_codec__encode_errors(void **state)
{
    (void)state;
    uint8_t data[256] = {0}, dst[512], scratch[256];
    size_t size;
    uint32_t mask;
    h5s_codec c = parsed("deflate:4:shuffle");
    size_t bound = h5s_codec_bound(&c, sizeof data);
    assert_int_equal(
        h5s_codec_encode(&c, 2, data, sizeof data, dst, bound - 1, scratch, &size, &mask),
        H5S_EINVAL);
    assert_non_null(strstr(h5s_error_message(), "below the bound"));
    assert_int_equal(h5s_codec_encode(&c, 2, data, sizeof data, dst, bound, NULL, &size, &mask),
                     H5S_EINVAL);
    assert_non_null(strstr(h5s_error_message(), "scratch"));
    assert_int_equal(h5s_codec_encode(&c, 0, data, sizeof data, dst, bound, scratch, &size, &mask),
                     H5S_EINVAL);
    /* Scratch is only needed when the shuffle actually moves bytes. */
    assert_int_equal(h5s_codec_encode(&c, 1, data, sizeof data, dst, bound, NULL, &size, &mask), 0);
    c.level = 12;
    assert_int_equal(h5s_codec_encode(&c, 2, data, sizeof data, dst, bound, scratch, &size, &mask),
                     H5S_EINVAL);
}

static void test_codec__decode_corrupt(void **state)
{
    (void)state;
    enum { N = 8192 };
    uint8_t *data = xmalloc(N), *enc = xmalloc(N + 64), *out = xmalloc(N);
    fill(H5S_UINT16, data, N / 2, 50, 0);
    size_t size;
    uint32_t mask;

    h5s_codec d = parsed("deflate:6:shuffle");
    assert_int_equal(h5s_codec_encode(&d, 2, data, N, enc, N + 64, out, &size, &mask), 0);
    assert_int_equal(h5s_codec_decode(&d, 2, enc, size / 2, 0, out, N), H5S_EFORMAT);
    assert_non_null(strstr(h5s_error_message(), "deflate stream"));
    assert_int_equal(h5s_codec_decode(&d, 2, enc, size, 0, out, N - 2), H5S_EFORMAT);
    assert_int_equal(h5s_codec_decode(&d, 2, enc, size, 0, out, N), 0);
    enc[size / 2] ^= 0xFF;
    enc[size / 2 + 1] ^= 0xFF;
    assert_int_equal(h5s_codec_decode(&d, 2, enc, size, 0, out, N), H5S_EFORMAT);

    h5s_codec b = parsed("blosc:lz4:5:shuffle");
    assert_int_equal(h5s_codec_encode(&b, 2, data, N, enc, N, NULL, &size, &mask), 0);
    assert_int_equal(mask, 0);
    assert_int_equal(h5s_codec_decode(&b, 2, enc, size - 1, 0, out, N), H5S_EFORMAT);
    assert_non_null(strstr(h5s_error_message(), "Blosc header"));
    assert_int_equal(h5s_codec_decode(&b, 2, enc, size, 0, out, N / 2), H5S_EFORMAT);
    assert_int_equal(h5s_codec_decode(&b, 2, enc, 10, 0, out, N), H5S_EFORMAT);
    /* A chunk marked unfiltered must be exactly nbytes long. */
    assert_int_equal(h5s_codec_decode(&b, 2, data, N - 1, 1, out, N), H5S_EFORMAT);
    assert_non_null(strstr(h5s_error_message(), "unfiltered"));
    h5s_codec none = parsed("none");
    assert_int_equal(h5s_codec_decode(&none, 2, data, N, 0, out, N), 0);
    assert_int_equal(h5s_codec_decode(&none, 2, data, N - 2, 0, out, N), H5S_EFORMAT);
    free(data);
    free(enc);
    free(out);
}

/* ---- HDF5 registration and pipeline ---- */

static void *init_in_thread(void *arg)
{
    *(int *)arg = h5s_filters_init();
    return NULL;
}

static void test_codec__filters_init(void **state)
{
    (void)state;
    pthread_t t[4];
    int rc[4] = {-99, -99, -99, -99};
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, init_in_thread, &rc[i]), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(rc[i], 0);
    }
    assert_int_equal(h5s_filters_init(), 0);
    assert_true(H5Zfilter_avail(H5S_FILTER_BLOSC) > 0);
    unsigned config = 0;
    assert_true(H5Zget_filter_info(H5S_FILTER_BLOSC, &config) >= 0);
    assert_true(config & H5Z_FILTER_CONFIG_ENCODE_ENABLED);
    assert_true(config & H5Z_FILTER_CONFIG_DECODE_ENABLED);
}

static void expect_filter(hid_t dcpl, unsigned idx, H5Z_filter_t id, unsigned flags, size_t ncd,
                          const unsigned *cd)
{
    unsigned got_flags = 0, got_cd[16];
    size_t got_ncd = 16;
    H5Z_filter_t got = H5Pget_filter2(dcpl, idx, &got_flags, &got_ncd, got_cd, 0, NULL, NULL);
    assert_int_equal(got, id);
    assert_int_equal(got_flags & H5Z_FLAG_OPTIONAL, flags & H5Z_FLAG_OPTIONAL);
    assert_int_equal(got_ncd, ncd);
    assert_memory_equal(got_cd, cd, ncd * sizeof *cd);
}

static void test_codec__set_dcpl(void **state)
{
    (void)state;
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    assert_true(dcpl >= 0);
    h5s_codec c = parsed("none");
    assert_int_equal(h5s_codec_set_dcpl(dcpl, &c), 0);
    assert_int_equal(H5Pget_nfilters(dcpl), 0);

    c = parsed("deflate:6");
    assert_int_equal(h5s_codec_set_dcpl(dcpl, &c), 0);
    assert_int_equal(H5Pget_nfilters(dcpl), 1);
    expect_filter(dcpl, 0, H5Z_FILTER_DEFLATE, H5Z_FLAG_OPTIONAL, 1, (unsigned[]){6});
    H5Premove_filter(dcpl, H5Z_FILTER_ALL);

    c = parsed("deflate:2:shuffle");
    assert_int_equal(h5s_codec_set_dcpl(dcpl, &c), 0);
    assert_int_equal(H5Pget_nfilters(dcpl), 2);
    expect_filter(dcpl, 0, H5Z_FILTER_SHUFFLE, H5Z_FLAG_OPTIONAL, 0, (unsigned[]){0});
    expect_filter(dcpl, 1, H5Z_FILTER_DEFLATE, H5Z_FLAG_OPTIONAL, 1, (unsigned[]){2});
    H5Premove_filter(dcpl, H5Z_FILTER_ALL);

    c = parsed("blosc:zstd:7:bitshuffle");
    assert_int_equal(h5s_codec_set_dcpl(dcpl, &c), 0);
    assert_int_equal(H5Pget_nfilters(dcpl), 1);
    expect_filter(dcpl, 0, H5S_FILTER_BLOSC, H5Z_FLAG_OPTIONAL, 7,
                  (unsigned[]){0, 0, 0, 0, 7, 2, 5});
    H5Pclose(dcpl);

    /* HDF5 refuses filters on a file access list; its reason is kept in the message. */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    c = parsed("deflate:3");
    assert_int_equal(h5s_codec_set_dcpl(fapl, &c), H5S_ECODEC);
    assert_non_null(strstr(h5s_error_message(), "cannot add the deflate filter: "));
    c = parsed("blosc");
    assert_int_equal(h5s_codec_set_dcpl(fapl, &c), H5S_ECODEC);
    assert_non_null(strstr(h5s_error_message(), "Blosc"));
    c.level = 11;
    assert_int_equal(h5s_codec_set_dcpl(fapl, &c), H5S_EINVAL);
    H5Pclose(fapl);
}

/*
 * Byte-exactness: each case makes two datasets with one DCPL. HDF5 filters the data into
 * "ref" through H5Dwrite; h5s_codec_encode's chunk goes into "ours" through
 * H5Dwrite_chunk. After the file is closed and reopened, both stored chunks (bytes and
 * filter mask) must be identical, and HDF5 must decode ours back to the data.
 */
typedef struct {
    const char *spec;
    h5s_dtype dtype;
    hsize_t rows, cols; /* chunk shape = dataset shape */
    int random;         /* incompressible data */
} h5_case;

static void tmp_path(char *buf, size_t n, const char *name)
{
    const char *dir = getenv("H5S_TEST_TMP");
    snprintf(buf, n, "%s/h5s_test_codec_%ld_%s.h5", dir && *dir ? dir : "/tmp", (long)getpid(),
             name);
}

static void write_case(hid_t file, size_t idx, const h5_case *k)
{
    h5s_codec c = parsed(k->spec);
    hid_t type = h5s_format_h5type(k->dtype);
    size_t ts = h5s_dtype_size(k->dtype), nelem = (size_t)(k->rows * k->cols);
    size_t nbytes = nelem * ts;
    hsize_t dims[2] = {k->rows, k->cols}, maxdims[2] = {H5S_UNLIMITED, k->cols};
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    assert_true(H5Pset_chunk(dcpl, 2, dims) >= 0);
    assert_int_equal(h5s_codec_set_dcpl(dcpl, &c), 0);
    hid_t space = H5Screate_simple(2, dims, maxdims);
    char name[32];
    snprintf(name, sizeof name, "ref%zu", idx);
    hid_t ref = H5Dcreate2(file, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    snprintf(name, sizeof name, "ours%zu", idx);
    hid_t ours = H5Dcreate2(file, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    assert_true(ref >= 0 && ours >= 0);

    uint8_t *data = xmalloc(nbytes), *enc = xmalloc(h5s_codec_bound(&c, nbytes));
    uint8_t *scratch = xmalloc(nbytes);
    fill(k->dtype, data, nelem, idx, k->random);
    assert_true(H5Dwrite(ref, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0);
    size_t size;
    uint32_t mask;
    assert_int_equal(h5s_codec_encode(&c, ts, data, nbytes, enc, h5s_codec_bound(&c, nbytes),
                                      scratch, &size, &mask),
                     0);
    const hsize_t origin[2] = {0, 0};
    assert_true(H5Dwrite_chunk(ours, H5P_DEFAULT, mask, origin, size, enc) >= 0);

    if (c.kind == H5S_CODEC_BLOSC) {
        /* hdf5-blosc's set_local filled slots 0-3 at H5Dcreate. */
        hid_t created = H5Dget_create_plist(ours);
        unsigned want[7] = {2,
                            2,
                            (unsigned)ts,
                            (unsigned)nbytes,
                            (unsigned)c.level,
                            (unsigned)c.shuffle,
                            (unsigned)c.blosc_compressor};
        expect_filter(created, 0, H5S_FILTER_BLOSC, H5Z_FLAG_OPTIONAL, 7, want);
        H5Pclose(created);
    }
    free(data);
    free(enc);
    free(scratch);
    H5Dclose(ref);
    H5Dclose(ours);
    H5Sclose(space);
    H5Pclose(dcpl);
}

static uint8_t *read_chunk(hid_t file, const char *prefix, size_t idx, hsize_t *size,
                           uint32_t *mask)
{
    char name[32];
    snprintf(name, sizeof name, "%s%zu", prefix, idx);
    hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
    assert_true(d >= 0);
    const hsize_t origin[2] = {0, 0};
    assert_true(H5Dget_chunk_storage_size(d, origin, size) >= 0);
    uint8_t *buf = xmalloc((size_t)*size);
    assert_true(H5Dread_chunk(d, H5P_DEFAULT, origin, mask, buf) >= 0);
    H5Dclose(d);
    return buf;
}

static void verify_case(hid_t file, size_t idx, const h5_case *k)
{
    hsize_t ref_size, our_size;
    uint32_t ref_mask = 99, our_mask = 99;
    uint8_t *ref = read_chunk(file, "ref", idx, &ref_size, &ref_mask);
    uint8_t *ours = read_chunk(file, "ours", idx, &our_size, &our_mask);
    size_t ts = h5s_dtype_size(k->dtype), nelem = (size_t)(k->rows * k->cols);
    int same_bytes = ref_size == our_size && memcmp(ref, ours, (size_t)ref_size) == 0;
    if (!same_bytes || ref_mask != our_mask)
        fail_msg("%s %s %llux%llu%s: HDF5 stored %llu bytes (mask %u), we stored %llu bytes "
                 "(mask %u)%s",
                 k->spec, h5s_dtype_name(k->dtype), (unsigned long long)k->rows,
                 (unsigned long long)k->cols, k->random ? " random" : "",
                 (unsigned long long)ref_size, ref_mask, (unsigned long long)our_size, our_mask,
                 same_bytes ? "" : ", bytes differ");

    uint8_t *data = xmalloc(nelem * ts), *back = xmalloc(nelem * ts);
    fill(k->dtype, data, nelem, idx, k->random);
    char name[32];
    snprintf(name, sizeof name, "ours%zu", idx);
    hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
    assert_true(H5Dread(d, h5s_format_h5type(k->dtype), H5S_ALL, H5S_ALL, H5P_DEFAULT, back) >= 0);
    H5Dclose(d);
    if (memcmp(back, data, nelem * ts) != 0)
        fail_msg("%s %s: HDF5 decoded our chunk to different data", k->spec,
                 h5s_dtype_name(k->dtype));
    free(ref);
    free(ours);
    free(data);
    free(back);
}

static void run_h5_cases(const char *test, const h5_case *cases, size_t n)
{
    char path[4096];
    tmp_path(path, sizeof path, test);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
    hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (file < 0)
        fail_msg("cannot create %s", path);
    for (size_t i = 0; i < n; i++)
        write_case(file, i, &cases[i]);
    assert_true(H5Fclose(file) >= 0);

    file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    assert_true(file >= 0);
    for (size_t i = 0; i < n; i++)
        verify_case(file, i, &cases[i]);
    H5Fclose(file);
    H5Pclose(fapl);
    remove(path);
}

static const h5s_dtype h5_dtypes[] = {H5S_UINT8,   H5S_UINT16,  H5S_INT32,
                                      H5S_FLOAT32, H5S_FLOAT64, H5S_UINT64};
#define N_H5_DTYPES (sizeof h5_dtypes / sizeof h5_dtypes[0])

static void test_codec__hdf5_none(void **state)
{
    (void)state;
    const h5_case cases[] = {{"none", H5S_UINT16, 8, 64, 0}, {"none", H5S_FLOAT64, 3, 5, 1}};
    run_h5_cases("none", cases, sizeof cases / sizeof cases[0]);
}

static void test_codec__hdf5_deflate(void **state)
{
    (void)state;
    static const char *specs[] = {"deflate:1",         "deflate:4",         "deflate:6:shuffle",
                                  "deflate:9:shuffle", "deflate:1:shuffle", "deflate:9"};
    h5_case cases[sizeof specs / sizeof specs[0] * N_H5_DTYPES + 4];
    size_t n = 0;
    for (size_t s = 0; s < sizeof specs / sizeof specs[0]; s++)
        for (size_t d = 0; d < N_H5_DTYPES; d++)
            cases[n++] = (h5_case){specs[s], h5_dtypes[d], 16, 256 + 8 * d, 0};
    /* Incompressible data grows under deflate; HDF5 stores it grown, mask 0. */
    cases[n++] = (h5_case){"deflate:5:shuffle", H5S_FLOAT32, 16, 100, 1};
    /* One element: HDF5's shuffle leaves it alone. */
    cases[n++] = (h5_case){"deflate:5:shuffle", H5S_UINT64, 1, 1, 0};
    /* A chunk over 1 MiB, larger than HDF5's default chunk cache. */
    cases[n++] = (h5_case){"deflate:3:shuffle", H5S_UINT16, 256, 2500, 0};
    cases[n++] = (h5_case){"deflate:7", H5S_INT32, 5, 7, 0};
    run_h5_cases("deflate", cases, n);
}

static void test_codec__hdf5_blosc(void **state)
{
    (void)state;
    /* hdf5-blosc calls blosc_compress, which obeys these variables (BLOSC_NTHREADS alone
     * reorders blocks); our encoder ignores them by design, so the reference must too. */
    static const char *blosc_env[] = {"BLOSC_CLEVEL",     "BLOSC_SHUFFLE",   "BLOSC_TYPESIZE",
                                      "BLOSC_COMPRESSOR", "BLOSC_BLOCKSIZE", "BLOSC_NTHREADS",
                                      "BLOSC_SPLITMODE"};
    for (size_t i = 0; i < sizeof blosc_env / sizeof blosc_env[0]; i++)
        unsetenv(blosc_env[i]);
    static const char *names[] = {"blosclz", "lz4", "lz4hc", "zlib", "zstd"};
    static const char *shuffles[] = {"noshuffle", "shuffle", "bitshuffle"};
    static const int levels[] = {0, 1, 5, 9};
    static char specs[5 * 3 * 4][40];
    h5_case cases[5 * 3 * 4 + 5 * 2 + 3];
    size_t n = 0;
    for (size_t k = 0; k < 5; k++)
        for (size_t s = 0; s < 3; s++)
            for (size_t l = 0; l < 4; l++) {
                char *spec = specs[n];
                snprintf(spec, sizeof specs[0], "blosc:%s:%d:%s", names[k], levels[l], shuffles[s]);
                cases[n] = (h5_case){spec, h5_dtypes[n % N_H5_DTYPES], 32, 512, 0};
                n++;
            }
    for (size_t k = 0; k < 5; k++) {
        static char rnd[5][40], big[5][40];
        snprintf(rnd[k], sizeof rnd[0], "blosc:%s:9:bitshuffle", names[k]);
        cases[n++] = (h5_case){rnd[k], H5S_UINT16, 64, 300, 1};
        /* Chunks past 1 MiB use Blosc's largest blocks (HCR codecs at level 9). */
        snprintf(big[k], sizeof big[0], "blosc:%s:9:shuffle", names[k]);
        cases[n++] = (h5_case){big[k], H5S_FLOAT32, 512, 700, 0};
    }
    /* Under 128 bytes Blosc only copies, which cannot fit: stored raw with the mask. */
    cases[n++] = (h5_case){"blosc:lz4:5:shuffle", H5S_FLOAT32, 5, 5, 0};
    cases[n++] = (h5_case){"blosc", H5S_UINT64, 1, 1, 0};
    /* Default settings on a chunk whose row count is odd. */
    cases[n++] = (h5_case){"blosc", H5S_INT32, 33, 257, 0};
    run_h5_cases("blosc", cases, n);
}

static int group_setup(void **state)
{
    (void)state;
    h5s_hdf5_quiet();
    return 0;
}

static void test_codec__from_dcpl_round_trip(void **state)
{
    (void)state;
    const char *specs[] = {"none",
                           "deflate:1",
                           "deflate:9:shuffle",
                           "blosc:blosclz:0:noshuffle",
                           "blosc:lz4:5:shuffle",
                           "blosc:lz4hc:9:bitshuffle",
                           "blosc:zlib:3:shuffle",
                           "blosc:zstd:7:bitshuffle"};
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        h5s_codec want, got;
        assert_int_equal(h5s_codec_parse(&want, specs[i]), 0);
        hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
        assert_int_equal(h5s_codec_set_dcpl(dcpl, &want), 0);
        memset(&got, 0xff, sizeof got);
        assert_int_equal(h5s_codec_from_dcpl(&got, dcpl), 0);
        char a[64], b[64];
        assert_int_equal(h5s_codec_format(&want, a, sizeof a), 0);
        assert_int_equal(h5s_codec_format(&got, b, sizeof b), 0);
        assert_string_equal(b, a);
        H5Pclose(dcpl);
    }
    /* Pipelines h5stream never writes are refused, naming their filters. */
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_fletcher32(dcpl);
    h5s_codec c;
    assert_int_equal(h5s_codec_from_dcpl(&c, dcpl), H5S_EFORMAT);
    assert_non_null(strstr(h5s_error_message(), "(3)"));
    H5Pclose(dcpl);
    dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_deflate(dcpl, 4);
    H5Pset_shuffle(dcpl); /* shuffle after deflate: not h5stream's order */
    assert_int_equal(h5s_codec_from_dcpl(&c, dcpl), H5S_EFORMAT);
    H5Pclose(dcpl);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codec__parse_valid),
        cmocka_unit_test(test_codec__parse_invalid),
        cmocka_unit_test(test_codec__format_round_trip),
        cmocka_unit_test(test_codec__validate),
        cmocka_unit_test(test_codec__round_trip_none),
        cmocka_unit_test(test_codec__round_trip_deflate),
        cmocka_unit_test(test_codec__shuffle_layout),
        cmocka_unit_test(test_codec__round_trip_blosc),
        cmocka_unit_test(test_codec__blosc_incompressible),
        cmocka_unit_test(test_codec__bound),
        cmocka_unit_test(test_codec__encode_errors),
        cmocka_unit_test(test_codec__decode_corrupt),
        cmocka_unit_test(test_codec__filters_init),
        cmocka_unit_test(test_codec__set_dcpl),
        cmocka_unit_test(test_codec__from_dcpl_round_trip),
        cmocka_unit_test(test_codec__hdf5_none),
        cmocka_unit_test(test_codec__hdf5_deflate),
        cmocka_unit_test(test_codec__hdf5_blosc),
    };
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
