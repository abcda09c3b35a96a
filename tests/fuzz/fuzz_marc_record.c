/*
 * fuzz_marc_record.c - feeds arbitrary bytes through the MARC layer: the scanner (in
 * small blocks, so records straddle feeds), validation in the three modes, the
 * accessors, and every writer with MARC-8 conversion. Nothing may crash or leak.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "h5s_marc.h"

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
    for (;;) {
        h5s_marc_span span;
        int rc = h5s_marc_scanner_next(s, &span);
        if (rc == 1) {
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
    return 0;
}
