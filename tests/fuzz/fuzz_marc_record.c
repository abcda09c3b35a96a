/*
 * fuzz_marc_record.c - feeds arbitrary bytes through the MARC layer: the scanner (in
 * small blocks, so records straddle feeds), validation in the three modes, the
 * accessors, and every writer with MARC-8 conversion. Nothing may crash or leak. The
 * zero-copy cursor, given windows of the same bytes, must make the scanner's cuts.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "h5s_marc.h"

#define MAX_CUTS 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void one_record(const unsigned char *rec, size_t len, h5s_marc_buf *repaired)
{
    h5s_marc_report report;
    char text[256];
    for (int mode = H5S_MARC_STRICT; mode <= H5S_MARC_PERMISSIVE; mode++) {
        int ok = h5s_marc_check(&report, repaired, rec, len, (h5s_marc_mode)mode);
        if (ok == 0)
            h5s_marc_report_format(text, sizeof(text), &report, "fuzz", 0, 0, rec, len);
    }
    h5s_marc_control_number(text, sizeof(text), rec, len);
    h5s_marc_title(text, sizeof(text), rec, len);
    for (int format = H5S_MARC_ISO2709; format <= H5S_MARC_LINE; format++) {
        h5s_marc_writer w;
        if (h5s_marc_writer_begin(&w, (h5s_marc_format)format, H5S_MARC_WRITE_MARC8_TO_UTF8,
                                  NULL) == 0) {
            h5s_marc_writer_record(&w, rec, len);
            if (repaired->len)
                h5s_marc_writer_record(&w, repaired->data, repaired->len);
            h5s_marc_writer_end(&w);
        }
        h5s_marc_writer_release(&w);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    h5s_marc_scanner *s = NULL;
    h5s_marc_buf repaired = {0};
    if (h5s_marc_scanner_create(&s, 1 << 20) != 0)
        return 0;
    size_t block = size % 97 + 1, fed = 0;
    static uint64_t cuts[MAX_CUTS][2]; /* offset and length of the scanner's records */
    size_t ncuts = 0;
    for (;;) {
        h5s_marc_span span;
        int rc = h5s_marc_scanner_next(s, &span);
        if (rc == 1) {
            if (ncuts < MAX_CUTS) {
                cuts[ncuts][0] = span.offset;
                cuts[ncuts++][1] = span.len;
            }
            one_record(span.data, span.len, &repaired);
            continue;
        }
        if (rc == 0)
            break;
        if (fed >= size) {
            h5s_marc_scanner_finish(s);
            continue;
        }
        size_t n = size - fed < block ? size - fed : block;
        h5s_marc_scanner_feed(s, data + fed, n);
        fed += n;
    }
    h5s_marc_scanner_free(s);
    h5s_marc_buf_free(&repaired);

    /* The cursor, over windows of block bytes from its next uncut byte (grown while a
     * record needs more), cuts the same records. */
    h5s_marc_cursor c;
    h5s_marc_cursor_init(&c, 1 << 20);
    size_t got = 0, window = block;
    for (;;) {
        size_t from = (size_t)c.offset, n = size - from < window ? size - from : window;
        if (h5s_marc_cursor_window(&c, data + from, n, from, from + n == size) != 0)
            __builtin_trap();
        h5s_marc_span span;
        int rc, cut = 0;
        while ((rc = h5s_marc_cursor_next(&c, &span)) == 1) {
            if (got < ncuts && (span.offset != cuts[got][0] || span.len != cuts[got][1] ||
                                span.data != data + span.offset))
                __builtin_trap();
            got++;
            cut = 1;
        }
        if (rc == 0)
            break;
        window = cut ? block : 2 * window;
    }
    if (got < MAX_CUTS && got != ncuts)
        __builtin_trap();
    return 0;
}
