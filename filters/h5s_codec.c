/*
 * h5s_codec.c - chunk codecs that produce the same bytes as HDF5's registered filters.
 *
 * Sources mirrored: HDF5 1.10 H5Zshuffle.c and H5Zdeflate.c, H5Z_pipeline (a failing
 * optional filter sets its bit in the chunk's filter mask and the chunk is stored as it
 * was), and hdf5-blosc's blosc_filter.c (cd_values layout, destination size = nbytes).
 */
#include "h5s_codec.h"

#include <blosc.h>
#include <blosc_filter.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "h5s_error.h"

static const struct {
    h5s_blosc_compressor code;
    const char *name;
} blosc_names[] = {
    {H5S_BLOSC_BLOSCLZ, "blosclz"}, {H5S_BLOSC_LZ4, "lz4"},   {H5S_BLOSC_LZ4HC, "lz4hc"},
    {H5S_BLOSC_ZLIB, "zlib"},       {H5S_BLOSC_ZSTD, "zstd"},
};
#define N_BLOSC (sizeof blosc_names / sizeof blosc_names[0])

static const char *const shuffle_names[] = {"noshuffle", "shuffle", "bitshuffle"};

static const char *blosc_name(h5s_blosc_compressor code)
{
    for (size_t i = 0; i < N_BLOSC; i++)
        if (blosc_names[i].code == code)
            return blosc_names[i].name;
    return NULL;
}

/* ---- Blosc registration ---- */

static pthread_once_t filters_once = PTHREAD_ONCE_INIT;
static int filters_status;

static void register_filters(void)
{
    char *version = NULL, *date = NULL;
    /* register_blosc returns 1 even when H5Zregister fails, so ask HDF5 afterwards. */
    register_blosc(&version, &date);
    free(version);
    free(date);
    filters_status = H5Zfilter_avail(H5S_FILTER_BLOSC) > 0 ? 0 : H5S_ECODEC;
}

int h5s_filters_init(void)
{
    pthread_once(&filters_once, register_filters);
    if (filters_status != 0)
        return h5s_error_set_h5(filters_status,
                                "cannot register the Blosc HDF5 filter (id %d) with HDF5",
                                H5S_FILTER_BLOSC);
    return 0;
}

/* ---- Parsing and formatting ---- */

/* Parses a level of 1-2 decimal digits (no sign, no spaces); -1 if it is not one. */
static int parse_level(const char *s, size_t len)
{
    if (len == 0 || len > 2)
        return -1;
    int v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

int h5s_codec_parse(h5s_codec *out, const char *spec)
{
    if (!out || !spec)
        return h5s_error_set(H5S_EINVAL, "--compress: no codec spec given");
    if (!spec[0])
        return h5s_error_set(H5S_EINVAL,
                             "--compress '': empty codec spec (expected none, deflate, blosc)");
    /* Split at ':'; no codec takes more than four fields, so stop at five. */
    const char *part[5] = {0};
    size_t len[5] = {0};
    size_t nparts = 0;
    for (const char *p = spec;; p++) {
        if (nparts == 5)
            return h5s_error_set(H5S_EINVAL, "--compress '%s': too many ':' fields", spec);
        const char *end = strchr(p, ':');
        part[nparts] = p;
        len[nparts] = end ? (size_t)(end - p) : strlen(p);
        nparts++;
        if (!end)
            break;
        p = end;
    }
#define PART_IS(i, s) (len[i] == strlen(s) && strncmp(part[i], s, len[i]) == 0)

    h5s_codec c = H5S_CODEC_INIT;
    int max_parts;
    if (PART_IS(0, "none")) {
        max_parts = 1;
    } else if (PART_IS(0, "deflate")) {
        c = (h5s_codec){H5S_CODEC_DEFLATE, 4, H5S_SHUFFLE_NONE, c.blosc_compressor};
        max_parts = 3;
    } else if (PART_IS(0, "blosc")) {
        c = (h5s_codec){H5S_CODEC_BLOSC, 5, H5S_SHUFFLE_BYTE, H5S_BLOSC_BLOSCLZ};
        max_parts = 4;
    } else {
        return h5s_error_set(H5S_EINVAL,
                             "--compress '%s': unknown codec '%.*s' (expected none, deflate, "
                             "blosc)",
                             spec, (int)len[0], part[0]);
    }
    if ((int)nparts > max_parts)
        return h5s_error_set(H5S_EINVAL, "--compress '%s': too many ':' fields for %.*s", spec,
                             (int)len[0], part[0]);

    size_t next = 1;
    if (c.kind == H5S_CODEC_BLOSC && nparts > next) {
        size_t i;
        for (i = 0; i < N_BLOSC && !PART_IS(next, blosc_names[i].name); i++)
            ;
        if (i == N_BLOSC)
            return h5s_error_set(H5S_EINVAL,
                                 "--compress '%s': unknown Blosc compressor '%.*s' (expected "
                                 "blosclz, lz4, lz4hc, zlib, zstd)",
                                 spec, (int)len[next], part[next]);
        c.blosc_compressor = blosc_names[i].code;
        next++;
    }
    if (c.kind != H5S_CODEC_NONE && nparts > next) {
        int lo = c.kind == H5S_CODEC_DEFLATE ? 1 : 0;
        int level = parse_level(part[next], len[next]);
        if (level < lo || level > 9)
            return h5s_error_set(H5S_EINVAL,
                                 "--compress '%s': %s level '%.*s' is not valid (expected an "
                                 "integer %d-9)",
                                 spec, c.kind == H5S_CODEC_DEFLATE ? "deflate" : "Blosc",
                                 (int)len[next], part[next], lo);
        c.level = level;
        next++;
    }
    if (c.kind != H5S_CODEC_NONE && nparts > next) {
        int s;
        for (s = 0; s < 3 && !PART_IS(next, shuffle_names[s]); s++)
            ;
        if (s == 3 || (s == H5S_SHUFFLE_BIT && c.kind == H5S_CODEC_DEFLATE))
            return h5s_error_set(
                H5S_EINVAL, "--compress '%s': shuffle '%.*s' is not valid (expected %s)", spec,
                (int)len[next], part[next],
                c.kind == H5S_CODEC_DEFLATE ? "shuffle or noshuffle; bitshuffle is Blosc-only"
                                            : "shuffle, bitshuffle or noshuffle");
        c.shuffle = (h5s_shuffle)s;
    }
#undef PART_IS
    *out = c;
    return 0;
}

int h5s_codec_validate(const h5s_codec *c)
{
    if (!c)
        return h5s_error_set(H5S_EINVAL, "codec: no codec given");
    switch (c->kind) {
    case H5S_CODEC_NONE:
        return 0;
    case H5S_CODEC_DEFLATE:
        if (c->level < 1 || c->level > 9)
            return h5s_error_set(H5S_EINVAL, "codec: deflate level %d is not in 1-9", c->level);
        if (c->shuffle != H5S_SHUFFLE_NONE && c->shuffle != H5S_SHUFFLE_BYTE)
            return h5s_error_set(H5S_EINVAL,
                                 "codec: deflate takes shuffle or noshuffle (shuffle value %d; "
                                 "bitshuffle is Blosc-only)",
                                 (int)c->shuffle);
        return 0;
    case H5S_CODEC_BLOSC: {
        if (c->level < 0 || c->level > 9)
            return h5s_error_set(H5S_EINVAL, "codec: Blosc level %d is not in 0-9", c->level);
        if ((unsigned)c->shuffle > H5S_SHUFFLE_BIT)
            return h5s_error_set(H5S_EINVAL, "codec: Blosc shuffle value %d is not 0, 1 or 2",
                                 (int)c->shuffle);
        const char *name = blosc_name(c->blosc_compressor);
        const char *have;
        if (!name)
            return h5s_error_set(H5S_EINVAL, "codec: unknown Blosc compressor code %d",
                                 (int)c->blosc_compressor);
        /* hdf5-blosc fails the chunk if the Blosc library lacks the compressor. */
        if (blosc_compcode_to_compname((int)c->blosc_compressor, &have) < 0)
            return h5s_error_set(H5S_EINVAL,
                                 "codec: Blosc compressor '%s' is not built into this Blosc "
                                 "library",
                                 name);
        return 0;
    }
    }
    return h5s_error_set(H5S_EINVAL, "codec: unknown codec kind %d", (int)c->kind);
}

int h5s_codec_format(const h5s_codec *c, char *buf, size_t bufsize)
{
    int rc = h5s_codec_validate(c);
    if (rc)
        return rc;
    if (!buf)
        return h5s_error_set(H5S_EINVAL, "codec: no buffer to format into");
    int n;
    if (c->kind == H5S_CODEC_NONE)
        n = snprintf(buf, bufsize, "none");
    else if (c->kind == H5S_CODEC_DEFLATE)
        n = snprintf(buf, bufsize, "deflate:%d:%s", c->level, shuffle_names[c->shuffle]);
    else
        n = snprintf(buf, bufsize, "blosc:%s:%d:%s", blosc_name(c->blosc_compressor), c->level,
                     shuffle_names[c->shuffle]);
    if (n < 0 || (size_t)n >= bufsize)
        return h5s_error_set(H5S_EINVAL, "codec: a buffer of %zu bytes is too small for the spec",
                             bufsize);
    return 0;
}

/* ---- HDF5 pipeline ---- */

int h5s_codec_set_dcpl(hid_t dcpl, const h5s_codec *c)
{
    int rc = h5s_codec_validate(c);
    if (rc)
        return rc;
    switch (c->kind) {
    case H5S_CODEC_NONE:
        return 0;
    case H5S_CODEC_DEFLATE:
        if (c->shuffle == H5S_SHUFFLE_BYTE && H5Pset_shuffle(dcpl) < 0)
            return h5s_error_set_h5(H5S_ECODEC, "codec: cannot add the shuffle filter");
        if (H5Pset_deflate(dcpl, (unsigned)c->level) < 0)
            return h5s_error_set_h5(H5S_ECODEC, "codec: cannot add the deflate filter");
        return 0;
    case H5S_CODEC_BLOSC: {
        rc = h5s_filters_init();
        if (rc)
            return rc;
        /* Slots 0-3 (revision, Blosc format, typesize, chunk bytes) are filled by
         * hdf5-blosc's set_local when the dataset is created. */
        const unsigned cd[7] = {
            0, 0, 0, 0, (unsigned)c->level, (unsigned)c->shuffle, (unsigned)c->blosc_compressor};
        if (H5Pset_filter(dcpl, H5S_FILTER_BLOSC, H5Z_FLAG_OPTIONAL, 7, cd) < 0)
            return h5s_error_set_h5(H5S_ECODEC, "codec: cannot add the Blosc filter");
        return 0;
    }
    }
    return h5s_error_set(H5S_EINVAL, "codec: unknown codec kind %d", (int)c->kind);
}

int h5s_codec_from_dcpl(h5s_codec *out, hid_t dcpl)
{
    enum { MAX_FILTERS = 4, MAX_CD = 8 };
    H5Z_filter_t ids[MAX_FILTERS];
    unsigned cd[MAX_FILTERS][MAX_CD];
    size_t ncd[MAX_FILTERS];
    int n = H5Pget_nfilters(dcpl);
    if (n < 0)
        return h5s_error_set_h5(H5S_EFORMAT, "codec: cannot read the filter pipeline");
    char names[256] = "";
    size_t len = 0;
    for (int i = 0; i < n && i < MAX_FILTERS; i++) {
        unsigned flags = 0, config = 0;
        char name[64] = "";
        ncd[i] = MAX_CD;
        ids[i] =
            H5Pget_filter2(dcpl, (unsigned)i, &flags, &ncd[i], cd[i], sizeof name, name, &config);
        if (ncd[i] > MAX_CD)
            ncd[i] = MAX_CD;
        int w = snprintf(names + len, sizeof names - len, "%s%d", i ? ", " : "", (int)ids[i]);
        if (w > 0 && (size_t)w < sizeof names - len)
            len += (size_t)w;
    }
    h5s_codec c = H5S_CODEC_INIT;
    if (n == 0) {
        c.kind = H5S_CODEC_NONE;
    } else if (n == 1 && ids[0] == H5Z_FILTER_DEFLATE) {
        c.kind = H5S_CODEC_DEFLATE;
        c.level = ncd[0] >= 1 ? (int)cd[0][0] : 6;
    } else if (n == 2 && ids[0] == H5Z_FILTER_SHUFFLE && ids[1] == H5Z_FILTER_DEFLATE) {
        c.kind = H5S_CODEC_DEFLATE;
        c.shuffle = H5S_SHUFFLE_BYTE;
        c.level = ncd[1] >= 1 ? (int)cd[1][0] : 6;
    } else if (n == 1 && ids[0] == H5S_FILTER_BLOSC) {
        c.kind = H5S_CODEC_BLOSC;
        c.level = ncd[0] > 4 ? (int)cd[0][4] : 5;
        c.shuffle = ncd[0] > 5 ? (h5s_shuffle)cd[0][5] : H5S_SHUFFLE_BYTE;
        c.blosc_compressor = ncd[0] > 6 ? (h5s_blosc_compressor)cd[0][6] : H5S_BLOSC_BLOSCLZ;
    } else {
        return h5s_error_set(H5S_EFORMAT,
                             "codec: filter pipeline (%s) is not one h5stream writes (none, "
                             "[shuffle+]deflate, Blosc)",
                             names);
    }
    int rc = h5s_codec_validate(&c);
    if (rc)
        return h5s_error_prefix(H5S_EFORMAT, "codec: filter settings out of range");
    *out = c;
    return 0;
}

/* ---- Encoding and decoding ---- */

size_t h5s_codec_bound(const h5s_codec *c, size_t nbytes)
{
    /* Blosc writes at most nbytes (its destination size), else the raw chunk is kept. */
    if (c && (c->kind == H5S_CODEC_NONE || c->kind == H5S_CODEC_BLOSC))
        return nbytes;
    return compressBound(nbytes);
}

/* HDF5's shuffle: it leaves 1-byte types and single elements alone. */
static int shuffle_applies(size_t typesize, size_t nbytes)
{
    return typesize > 1 && nbytes / typesize > 1;
}

/* out[b*n + j] = in[j*size + b]; the nbytes % size trailing bytes are copied as they are. */
static void byte_shuffle(uint8_t *out, const uint8_t *in, size_t size, size_t nbytes)
{
    size_t n = nbytes / size;
    for (size_t b = 0; b < size; b++)
        for (size_t j = 0; j < n; j++)
            out[b * n + j] = in[j * size + b];
    memcpy(out + n * size, in + n * size, nbytes - n * size);
}

static void byte_unshuffle(uint8_t *out, const uint8_t *in, size_t size, size_t nbytes)
{
    size_t n = nbytes / size;
    for (size_t b = 0; b < size; b++)
        for (size_t j = 0; j < n; j++)
            out[j * size + b] = in[b * n + j];
    memcpy(out + n * size, in + n * size, nbytes - n * size);
}

/* hdf5-blosc's set_local: a type larger than Blosc can shuffle is treated as bytes. */
static size_t blosc_typesize(size_t typesize)
{
    return typesize > BLOSC_MAX_TYPESIZE ? 1 : typesize;
}

int h5s_codec_encode(const h5s_codec *c, size_t typesize, const void *src, size_t nbytes, void *dst,
                     size_t dstcap, void *scratch, size_t *out_size, uint32_t *out_filter_mask)
{
    int rc = h5s_codec_validate(c);
    if (rc)
        return rc;
    if (!out_size || !out_filter_mask || (nbytes && (!src || !dst)) || typesize == 0)
        return h5s_error_set(H5S_EINVAL, "codec encode: missing buffer or zero type size");
    if (dstcap < h5s_codec_bound(c, nbytes))
        return h5s_error_set(H5S_EINVAL,
                             "codec encode: destination of %zu bytes is below the bound %zu for "
                             "a %zu-byte chunk",
                             dstcap, h5s_codec_bound(c, nbytes), nbytes);
    *out_size = nbytes;
    *out_filter_mask = 0;

    if (c->kind == H5S_CODEC_DEFLATE) {
        const void *in = src;
        if (c->shuffle == H5S_SHUFFLE_BYTE && shuffle_applies(typesize, nbytes)) {
            if (!scratch)
                return h5s_error_set(H5S_EINVAL, "codec encode: shuffle needs a scratch buffer");
            byte_shuffle(scratch, src, typesize, nbytes);
            in = scratch;
        }
        uLongf len = (uLongf)dstcap;
        int zrc = compress2(dst, &len, in, (uLong)nbytes, c->level);
        if (zrc != Z_OK)
            return h5s_error_set(
                H5S_ECODEC, "codec encode: zlib compress2 failed (%d) on %zu bytes", zrc, nbytes);
        *out_size = len;
        return 0;
    }
    if (c->kind == H5S_CODEC_BLOSC) {
        int n = blosc_compress_ctx(c->level, (int)c->shuffle, blosc_typesize(typesize), nbytes, src,
                                   dst, nbytes, blosc_name(c->blosc_compressor), 0, 1);
        /* hdf5-blosc would store such a chunk raw too, but with checked arguments a negative
         * status means Blosc itself failed (memory), which the caller should hear about. */
        if (n < 0)
            return h5s_error_set(
                H5S_ECODEC, "codec encode: blosc_compress_ctx failed (%d) on %zu bytes", n, nbytes);
        if (n > 0) {
            *out_size = (size_t)n;
            return 0;
        }
        /* 0: does not fit in nbytes (incompressible, level 0, or under 128 bytes). The
         * optional filter fails, so HDF5 stores the chunk raw and marks filter 0 skipped. */
        *out_filter_mask = 1;
    }
    /* none, or Blosc's raw fallback */
    if (nbytes)
        memcpy(dst, src, nbytes);
    return 0;
}

static int decode_raw(const void *src, size_t srcsize, void *dst, size_t nbytes)
{
    if (srcsize != nbytes)
        return h5s_error_set(H5S_EFORMAT,
                             "codec decode: unfiltered chunk has %zu bytes, expected %zu", srcsize,
                             nbytes);
    if (nbytes)
        memcpy(dst, src, nbytes);
    return 0;
}

static int decode_deflate(const h5s_codec *c, size_t typesize, const void *src, size_t srcsize,
                          uint32_t mask, void *dst, size_t nbytes)
{
    /* Pipeline order: shuffle is filter 0 when present, deflate follows it. */
    int has_shuffle = c->shuffle == H5S_SHUFFLE_BYTE;
    uint32_t deflate_bit = has_shuffle ? 2u : 1u;
    int unshuffle = has_shuffle && !(mask & 1u) && shuffle_applies(typesize, nbytes);
    uint8_t *tmp = NULL;
    void *out = dst;
    if (unshuffle) {
        tmp = malloc(nbytes);
        if (!tmp)
            return h5s_error_set(H5S_ENOMEM, "codec decode: no memory for %zu bytes", nbytes);
        out = tmp;
    }
    int rc = 0;
    if (mask & deflate_bit) {
        rc = decode_raw(src, srcsize, out, nbytes);
    } else {
        uLongf len = (uLongf)nbytes;
        int zrc = uncompress(out, &len, src, (uLong)srcsize);
        if (zrc != Z_OK || len != nbytes)
            rc = h5s_error_set(H5S_EFORMAT,
                               "codec decode: deflate stream of %zu bytes is corrupt or does not "
                               "hold %zu bytes (zlib %d)",
                               srcsize, nbytes, zrc);
    }
    if (rc == 0 && unshuffle)
        byte_unshuffle(dst, tmp, typesize, nbytes);
    free(tmp);
    return rc;
}

static int decode_blosc(const void *src, size_t srcsize, uint32_t mask, void *dst, size_t nbytes)
{
    if (mask & 1u)
        return decode_raw(src, srcsize, dst, nbytes);
    size_t held = 0;
    if (blosc_cbuffer_validate(src, srcsize, &held) < 0 || held != nbytes)
        return h5s_error_set(H5S_EFORMAT,
                             "codec decode: Blosc header of a %zu-byte chunk is corrupt or does "
                             "not hold %zu bytes",
                             srcsize, nbytes);
    int n = blosc_decompress_ctx(src, dst, nbytes, 1);
    if (n < 0 || (size_t)n != nbytes)
        return h5s_error_set(H5S_EFORMAT,
                             "codec decode: Blosc data of a %zu-byte chunk is corrupt (%d)",
                             srcsize, n);
    return 0;
}

int h5s_codec_decode(const h5s_codec *c, size_t typesize, const void *src, size_t srcsize,
                     uint32_t filter_mask, void *dst, size_t nbytes)
{
    int rc = h5s_codec_validate(c);
    if (rc)
        return rc;
    if ((srcsize && !src) || (nbytes && !dst) || typesize == 0)
        return h5s_error_set(H5S_EINVAL, "codec decode: missing buffer or zero type size");
    if (c->kind == H5S_CODEC_DEFLATE)
        return decode_deflate(c, typesize, src, srcsize, filter_mask, dst, nbytes);
    if (c->kind == H5S_CODEC_BLOSC)
        return decode_blosc(src, srcsize, filter_mask, dst, nbytes);
    return decode_raw(src, srcsize, dst, nbytes);
}
