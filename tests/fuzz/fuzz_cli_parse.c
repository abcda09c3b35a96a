/*
 * fuzz_cli_parse.c - the command line's parsers of option values on arbitrary text: each
 * line of the input goes through cli_parse_shape, cli_parse_u64, cli_parse_double,
 * cli_engine_option (tools/cli_util.c), h5s_codec_parse (filters/h5s_codec.c, --compress)
 * and h5s_dtype_parse (--dtype). Nothing may crash or leak, and what is accepted must be
 * what the text says: a shape printed back parses to the same dims; a count equals
 * strtoull's reading times its k/M/G suffix; a number is strtod's, finite; engine options
 * stay in their documented ranges; a codec validates, prints canonically and parses back
 * to itself, and encodes the input's bytes into a chunk that decodes back to them; a
 * dtype name parses back to the same dtype.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fuzz_common.h"
#include "h5s_codec.h"
#include "h5s_types.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define LINE_MAX_LEN 512
#define MAX_LINES 64

static void check_shape(const char *s)
{
    unsigned rank = 0;
    uint64_t dims[3] = {7, 7, 7};
    if (cli_parse_shape(s, &rank, dims) != 0)
        return;
    if (rank < 1 || rank > 3)
        FUZZ_TRAP();
    char text[3 * 24];
    size_t used = 0;
    for (unsigned i = 0; i < 3; i++) {
        if ((i < rank && dims[i] == 0) || (i >= rank && dims[i] != 0))
            FUZZ_TRAP();
        if (i < rank)
            used += (size_t)snprintf(text + used, sizeof text - used, "%s%" PRIu64, i ? "x" : "",
                                     dims[i]);
    }
    unsigned rank2 = 0;
    uint64_t dims2[3];
    if (cli_parse_shape(text, &rank2, dims2) != 0 || rank2 != rank ||
        memcmp(dims, dims2, sizeof dims) != 0)
        FUZZ_TRAP();
}

static void check_u64(const char *s)
{
    uint64_t v = 0;
    int rc = cli_parse_u64(s, &v);
    /* The reference: digits only (no sign, space or 0x), then at most one suffix. */
    size_t digits = 0;
    while (isdigit((unsigned char)s[digits]))
        digits++;
    const char *suffix = s + digits;
    uint64_t mult = suffix[0] == 'k'   ? 1000
                    : suffix[0] == 'M' ? 1000000
                    : suffix[0] == 'G' ? 1000000000
                                       : 1;
    int well_formed = digits > 0 && (suffix[0] == '\0' || (mult != 1 && suffix[1] == '\0'));
    uint64_t ref = 0;
    int fits = 0;
    if (well_formed) {
        errno = 0;
        ref = strtoull(s, NULL, 10);
        fits = errno != ERANGE && (ref == 0 || ref <= UINT64_MAX / mult);
    }
    if ((rc == 0) != (well_formed && fits) || (rc == 0 && v != ref * mult))
        FUZZ_TRAP();
}

static void check_double(const char *s)
{
    double v = 0;
    if (cli_parse_double(s, &v) != 0)
        return;
    char *end = NULL;
    double ref = strtod(s, &end);
    if (!isfinite(v) || *end != '\0' || memcmp(&v, &ref, sizeof v) != 0)
        FUZZ_TRAP();
}

static void check_engine(const char *s)
{
    static const char *const names[] = {"--threads", "--queue-mb", "--flush-every", "--flush-ms"};
    for (int i = 0; i < 4; i++) {
        h5s_file_options fo = H5S_FILE_OPTIONS_INIT;
        int rc = cli_engine_option(names[i], s, &fo);
        uint64_t v;
        int number = cli_parse_u64(s, &v) == 0;
        if (rc != 0) {
            if (rc != CLI_EUSAGE)
                FUZZ_TRAP();
            continue;
        }
        if (!number || (i == 0 && (fo.encode_threads < 0 || fo.encode_threads > 256)) ||
            (i == 1 && (fo.queue_bytes == 0 || fo.queue_bytes >> 20 != v)) ||
            (i == 2 && fo.flush_every != v) || (i == 3 && fo.flush_ms != v))
            FUZZ_TRAP();
    }
    h5s_file_options fo = H5S_FILE_OPTIONS_INIT;
    if (cli_engine_option(s, "1", &fo) == 0 && strcmp(s, "--threads") != 0 &&
        strcmp(s, "--queue-mb") != 0 && strcmp(s, "--flush-every") != 0 &&
        strcmp(s, "--flush-ms") != 0)
        FUZZ_TRAP();
}

static int same_codec(const h5s_codec *a, const h5s_codec *b)
{
    return a->kind == b->kind && a->level == b->level && a->shuffle == b->shuffle &&
           (a->kind != H5S_CODEC_BLOSC || a->blosc_compressor == b->blosc_compressor);
}

static void check_codec(const char *s, const uint8_t *data, size_t size)
{
    h5s_codec c;
    if (h5s_codec_parse(&c, s) != 0)
        return;
    char text[128], text2[128];
    h5s_codec c2;
    if (h5s_codec_validate(&c) != 0 || h5s_codec_format(&c, text, sizeof text) != 0 ||
        h5s_codec_parse(&c2, text) != 0 || !same_codec(&c, &c2) ||
        h5s_codec_format(&c2, text2, sizeof text2) != 0 || strcmp(text, text2) != 0)
        FUZZ_TRAP();
    /* A chunk of the input's bytes, as elements of 1, 2, 4 or 8 bytes. */
    size_t typesize = (size_t)1 << (size % 4);
    size_t nbytes = size - size % typesize;
    size_t cap = h5s_codec_bound(&c, nbytes);
    unsigned char *dst = malloc(cap ? cap : 1), *scratch = malloc(nbytes ? nbytes : 1);
    unsigned char *back = malloc(nbytes ? nbytes : 1);
    size_t out_size = 0;
    uint32_t mask = 0;
    if (dst && scratch && back) {
        if (h5s_codec_encode(&c, typesize, data, nbytes, dst, cap, scratch, &out_size, &mask) !=
                0 ||
            out_size > cap ||
            h5s_codec_decode(&c, typesize, dst, out_size, mask, back, nbytes) != 0 ||
            memcmp(back, data, nbytes) != 0)
            FUZZ_TRAP();
    }
    free(dst);
    free(scratch);
    free(back);
}

static void check_dtype(const char *s)
{
    h5s_dtype t;
    if (h5s_dtype_parse(&t, s) != 0)
        return;
    h5s_dtype t2;
    if (h5s_dtype_size(t) == 0 || h5s_dtype_parse(&t2, h5s_dtype_name(t)) != 0 || t2 != t)
        FUZZ_TRAP();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char line[LINE_MAX_LEN + 1];
    size_t at = 0;
    for (int n = 0; n < MAX_LINES && at <= size; n++) {
        const uint8_t *nl = memchr(data + at, '\n', size - at);
        size_t len = nl ? (size_t)(nl - (data + at)) : size - at;
        size_t keep = len < LINE_MAX_LEN ? len : LINE_MAX_LEN;
        memcpy(line, data + at, keep);
        line[keep] = '\0'; /* a NUL inside ends the text there, as in argv */
        check_shape(line);
        check_u64(line);
        check_double(line);
        check_engine(line);
        check_codec(line, data, size);
        check_dtype(line);
        if (!nl)
            break;
        at += len + 1;
    }
    return 0;
}
