/*
 * test_marc_record.c - the MARC record layer (formats/h5s_marc*.c) on the shared MARC
 * files: scanning, validation in each mode, repairs, accessors, and the writers compared
 * with yaz-marcdump.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "h5s_marc.h"

typedef struct file_counts {
    const char *name;
    unsigned records, strict, lenient, permissive, resync, truncated;
} file_counts;

/* Exact outcomes per file; docs/marc.md explains the notable ones. */
static const file_counts expected[] = {
    {"000-line-seperated.mrc", 20, 20, 20, 20, 0, 0},
    {"008008027.mrc", 19, 18, 18, 18, 0, 1},
    {"AAAP-PDF_records_2022-03.mrc", 72, 72, 72, 72, 0, 0},
    {"BooksAll.2014.part01-0001.mrc", 100, 100, 100, 100, 0, 0},
    {"MMA_Pubs_records_2021_07.mrc", 3804, 3804, 3804, 3804, 0, 0},
    {"bad_hathi_records.mrc", 5, 4, 4, 5, 1, 0},
    {"bad_leaders_10_11.mrc", 1, 0, 1, 1, 0, 0},
    {"bad_records.mrc", 8, 2, 5, 6, 0, 0},
    {"bad_too_long_plus_2.mrc", 3, 0, 2, 3, 1, 0},
    {"baddir.usmarc", 1, 0, 0, 0, 0, 0},
    {"badind.usmarc", 1, 1, 1, 1, 0, 0},
    {"badldr.usmarc", 8, 6, 6, 6, 1, 1},
    {"brkrtest.mrc", 8, 8, 8, 8, 0, 0},
    {"brkrtest_UTF8.mrc", 8, 8, 8, 8, 0, 0},
    {"camel.usmarc", 10, 10, 10, 10, 0, 0},
    {"cameleof.usmarc", 10, 7, 7, 7, 3, 0},
    {"chinese_mangled_multibyte.mrc", 4, 4, 4, 4, 0, 0},
    {"datos-20161010-slice.mrc", 1, 0, 0, 0, 1, 0},
    {"incomplete_esc_seq.mrc", 1, 1, 1, 1, 0, 0},
    {"marc.dat", 20, 20, 20, 20, 0, 0},
    {"marc8.dat", 1, 1, 1, 1, 0, 0},
    {"pride-and-prejudice-fixed.mrc", 383, 383, 383, 383, 0, 0},
    {"pride-and-prejudice-with-many-errors.mrc", 383, 298, 298, 367, 0, 0},
    {"test.dat", 10, 10, 10, 10, 0, 0},
    {"unordered-directory-entries.mrc", 1, 1, 1, 1, 0, 0},
    {"utf8_invalid.mrc", 1, 1, 1, 1, 0, 0},
    {"yaz/marc0.marc", 1, 0, 0, 1, 0, 0},
    {"yaz/marc1.marc", 1, 0, 0, 1, 0, 0},
    {"yaz/marc2.marc", 1, 0, 0, 1, 0, 0},
    {"yaz/marc3.marc", 1, 0, 0, 1, 0, 0},
    {"yaz/marc4.marc", 1, 0, 0, 0, 1, 0},
    {"yaz/marc5.marc", 1, 0, 0, 1, 0, 0},
    {"yaz/marc6.marc", 1, 1, 1, 1, 0, 0},
    {"yaz/marc7.marc", 1, 1, 1, 1, 0, 0},
    {"yaz/marc8.marc", 1, 0, 1, 1, 0, 0},
    {"yaz/marc9.marc", 1, 1, 1, 1, 0, 0},
    {"yaz/marc10.marc", 1, 0, 1, 1, 0, 0},
    {"yaz/marc11.marc", 1, 0, 1, 1, 0, 0},
    {"yaz/marc12.marc", 1, 1, 1, 1, 0, 0},
    {"yaz/marccol1.u8.marc", 19, 19, 19, 19, 0, 0},
};

static const char *clean_files[] = {"MMA_Pubs_records_2021_07.mrc", "BooksAll.2014.part01-0001.mrc",
                                    "marc.dat"};

static void data_path(char *out, size_t cap, const char *name)
{
    const char *root = getenv("H5S_SHARED_DATA");
    assert_non_null(root);
    snprintf(out, cap, "%s/marc/%s", root, name);
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)n + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *len = (size_t)n;
    return p;
}

/* Calls fn on every record of path, fed in blocks of block bytes. */
typedef void (*record_fn)(const h5s_marc_span *span, void *payload);

static unsigned scan_file(const char *path, size_t block, record_fn fn, void *payload)
{
    size_t len;
    unsigned char *all = slurp(path, &len);
    h5s_marc_scanner *s = NULL;
    assert_int_equal(h5s_marc_scanner_create(&s, 0), 0);
    size_t fed = 0;
    unsigned n = 0;
    for (;;) {
        h5s_marc_span span;
        int rc = h5s_marc_scanner_next(s, &span);
        if (rc == 1) {
            assert_int_equal(span.ordinal, n);
            n++;
            fn(&span, payload);
            continue;
        }
        if (rc == 0)
            break;
        assert_int_equal(rc, -3); /* H5S_EAGAIN */
        if (fed == len) {
            h5s_marc_scanner_finish(s);
            continue;
        }
        size_t k = len - fed < block ? len - fed : block;
        assert_int_equal(h5s_marc_scanner_feed(s, all + fed, k), 0);
        fed += k;
    }
    assert_int_equal(h5s_marc_scanner_offset(s), len);
    h5s_marc_scanner_free(s);
    free(all);
    return n;
}

typedef struct tally {
    unsigned ok[3], resync, truncated;
    uint64_t bytes; /* bytes of all spans plus separators: nothing lost */
    h5s_marc_buf repaired;
} tally;

static void count_record(const h5s_marc_span *span, void *payload)
{
    tally *t = payload;
    t->bytes += span->len + span->skipped;
    t->resync += (span->flags & H5S_MARC_SPAN_RESYNC) != 0;
    t->truncated += (span->flags & H5S_MARC_SPAN_TRUNCATED) != 0;
    for (int m = 0; m < 3; m++) {
        h5s_marc_report r;
        int rc = h5s_marc_check(&r, &t->repaired, span->data, span->len, (h5s_marc_mode)m);
        assert_true(rc == 0 || rc == 1);
        t->ok[m] += (unsigned)rc;
        if (rc == 0)
            assert_true(r.n_errors > 0);
        if (m == H5S_MARC_LENIENT && t->repaired.len) {
            h5s_marc_report again;
            assert_int_equal(h5s_marc_validate(&again, t->repaired.data, t->repaired.len, 0), 0);
        }
    }
}

static void test_marc_record__counts(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++) {
        char path[4096];
        data_path(path, sizeof(path), expected[i].name);
        size_t blocks[2] = {65536, 7};
        for (int b = 0; b < 2; b++) {
            tally t = {0};
            unsigned n = scan_file(path, blocks[b], count_record, &t);
            size_t len, tail = 0;
            unsigned char *all = slurp(path, &len);
            while (tail < len && (all[len - 1 - tail] == '\n' || all[len - 1 - tail] == '\r'))
                tail++;
            free(all);
            printf("%s: %u records, strict %u, lenient %u, permissive %u\n", expected[i].name, n,
                   t.ok[0], t.ok[1], t.ok[2]);
            assert_int_equal(n, expected[i].records);
            assert_int_equal(t.ok[0], expected[i].strict);
            assert_int_equal(t.ok[1], expected[i].lenient);
            assert_int_equal(t.ok[2], expected[i].permissive);
            assert_int_equal(t.resync, expected[i].resync);
            assert_int_equal(t.truncated, expected[i].truncated);
            assert_int_equal(t.bytes + tail, len); /* trailing newlines are separators */
            h5s_marc_buf_free(&t.repaired);
        }
    }
}

/* The spans of a scan, copied out (data as an offset into the file). */
typedef struct span_list {
    h5s_marc_span *v;
    size_t n, cap;
    const unsigned char *base; /* the file's bytes when data points into them, else NULL */
} span_list;

static void keep_span(const h5s_marc_span *span, void *payload)
{
    span_list *l = payload;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->v = realloc(l->v, l->cap * sizeof(*l->v));
        assert_non_null(l->v);
    }
    l->v[l->n] = *span;
    l->v[l->n].data = NULL; /* the scanner's buffer is gone by the time they are compared */
    l->n++;
}

/*
 * The cursor over windows of the file (window bytes from the next uncut byte, grown when
 * a record needs more) makes exactly the scanner's cuts, with the same offsets, lengths,
 * flags, ordinals and separators, and spans that point into the window.
 */
static void test_marc_record__cursor_matches_scanner(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++) {
        char path[4096];
        data_path(path, sizeof(path), expected[i].name);
        span_list want = {0};
        scan_file(path, 65536, keep_span, &want);
        size_t len;
        unsigned char *all = slurp(path, &len);
        size_t windows[3] = {len + 1, 4096, 61};
        for (int w = 0; w < 3; w++) {
            h5s_marc_cursor c;
            assert_int_equal(h5s_marc_cursor_init(&c, 0), 0);
            size_t got = 0, size = windows[w];
            for (;;) {
                size_t from = (size_t)c.offset, n = len - from < size ? len - from : size;
                assert_int_equal(h5s_marc_cursor_window(&c, all + from, n, from, from + n == len),
                                 0);
                h5s_marc_span sp;
                int rc, cut = 0;
                while ((rc = h5s_marc_cursor_next(&c, &sp)) == 1) {
                    assert_true(got < want.n);
                    const h5s_marc_span *e = &want.v[got++];
                    assert_ptr_equal(sp.data, all + sp.offset);
                    assert_int_equal(sp.offset, e->offset);
                    assert_int_equal(sp.len, e->len);
                    assert_int_equal(sp.flags, e->flags);
                    assert_int_equal(sp.ordinal, e->ordinal);
                    assert_int_equal(sp.skipped, e->skipped);
                    cut = 1;
                }
                if (rc == 0)
                    break;
                assert_int_equal(rc, -3);           /* H5S_EAGAIN */
                size = cut ? windows[w] : 2 * size; /* a record longer than the window */
            }
            assert_int_equal(got, want.n);
        }
        free(all);
        free(want.v);
    }
}

static void append_accepted(const h5s_marc_span *span, void *payload)
{
    h5s_marc_report r;
    if (h5s_marc_check(&r, NULL, span->data, span->len, H5S_MARC_STRICT) == 1)
        assert_int_equal(h5s_marc_buf_append(payload, span->data, span->len), 0);
}

static void test_marc_record__roundtrip_clean(void **state)
{
    (void)state;
    for (size_t i = 0; i < 3; i++) {
        char path[4096];
        size_t len;
        data_path(path, sizeof(path), clean_files[i]);
        unsigned char *all = slurp(path, &len);
        h5s_marc_buf b = {0};
        scan_file(path, 4096, append_accepted, &b);
        assert_int_equal(b.len, len);
        assert_memory_equal(b.data, all, len);
        h5s_marc_buf_free(&b);
        free(all);
    }
}

typedef struct first_errors {
    h5s_marc_report r[8];
    unsigned n;
} first_errors;

static void keep_report(const h5s_marc_span *span, void *payload)
{
    first_errors *f = payload;
    if (f->n < 8)
        h5s_marc_validate(&f->r[f->n++], span->data, span->len, 0);
}

static void test_marc_record__bad_records(void **state)
{
    (void)state;
    char path[4096];
    data_path(path, sizeof(path), "bad_records.mrc");
    first_errors f = {0};
    assert_int_equal(scan_file(path, 65536, keep_report, &f), 8);
    /* pymarc's bad_records.mrc: one documented defect per record, 0 and 7 clean. */
    static const struct {
        uint16_t code;
        uint32_t offset;
    } want[8] = {{0, 0},
                 {H5S_MARC_E_BASE_BOUNDS, 12},
                 {H5S_MARC_E_BASE_BOUNDS, 12},
                 {H5S_MARC_E_DIR_LENGTH, 24},
                 {H5S_MARC_E_DIR_LENGTH, 24},
                 {H5S_MARC_E_BASE_DIGITS, 12},
                 {H5S_MARC_E_NO_FIELDS, 24},
                 {0, 0}};
    for (int i = 0; i < 8; i++) {
        if (want[i].code == 0) {
            assert_int_equal(f.r[i].n_errors, 0);
            continue;
        }
        assert_true(f.r[i].n_errors > 0);
        assert_int_equal(f.r[i].errors[0].code, want[i].code);
        assert_int_equal(f.r[i].errors[0].offset, want[i].offset);
    }
    /* Record 4's directory also holds non-ASCII bytes where the field length is. */
    assert_int_equal(f.r[4].n_errors, 2);
    assert_int_equal(f.r[4].errors[1].code, H5S_MARC_E_DIR_DIGITS);
    assert_int_equal(f.r[4].errors[1].offset, 27);
    char msg[256];
    size_t len;
    unsigned char *all = slurp(path, &len);
    h5s_marc_report r;
    assert_int_equal(h5s_marc_check(&r, NULL, all + 127, 127, H5S_MARC_STRICT), 0);
    h5s_marc_report_format(msg, sizeof(msg), &r, "bad_records.mrc", 1, 127, all + 127, 127);
    assert_string_equal(msg, "bad_records.mrc: record 1 (001 ?) at byte 139: base address of "
                             "data outside the record [E_BASE_BOUNDS]");
    /* Lenient mode repairs record 1's base address into a clean copy of record 0. */
    h5s_marc_buf rep = {0};
    assert_int_equal(h5s_marc_check(&r, &rep, all + 127, 127, H5S_MARC_LENIENT), 1);
    assert_int_equal(rep.len, 127);
    assert_memory_equal(rep.data, all, 127);
    assert_int_equal(r.n_repairs, 1);
    assert_int_equal(r.repairs[0].code, H5S_MARC_E_BASE_BOUNDS);
    h5s_marc_buf_free(&rep);
    free(all);
}

static void test_marc_record__accessors(void **state)
{
    (void)state;
    char path[4096];
    size_t len;
    data_path(path, sizeof(path), "marc.dat");
    unsigned char *all = slurp(path, &len);
    char buf[256], leader[25];
    assert_int_equal(h5s_marc_control_number(buf, sizeof(buf), all, len), 8);
    assert_string_equal(buf, "11778504");
    h5s_marc_title(buf, sizeof(buf), all, 1060);
    assert_string_equal(buf, "The pragmatic programmer :");
    assert_int_equal(h5s_marc_leader(leader, all, len), 24);
    assert_string_equal(leader, "01060cam  22002894a 4500");
    h5s_marc_field f;
    assert_int_equal(h5s_marc_find(all, 1060, "906", &f), 1);
    h5s_marc_subfield s;
    size_t pos = 0, n = 0;
    while (h5s_marc_subfield_next(&f, &pos, &s))
        n++;
    assert_int_equal(n, 7);
    free(all);
}

/* Runs cmd and returns its stdout with every line trimmed and blank lines dropped. */
static char *run_normalised(const char *cmd)
{
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    h5s_marc_buf b = {0};
    char line[65536];
    while (fgets(line, sizeof(line), p)) {
        char *s = line, *e = line + strlen(line);
        while (*s == ' ' || *s == '\t')
            s++;
        while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (e > s) {
            assert_int_equal(h5s_marc_buf_append(&b, s, (size_t)(e - s)), 0);
            assert_int_equal(h5s_marc_buf_append(&b, "\n", 1), 0);
        }
    }
    assert_int_equal(pclose(p), 0);
    assert_int_equal(h5s_marc_buf_append(&b, "", 1), 0);
    return (char *)b.data;
}

typedef struct export_ctx {
    h5s_marc_writer w;
} export_ctx;

static void export_record(const h5s_marc_span *span, void *payload)
{
    export_ctx *c = payload;
    assert_int_equal(h5s_marc_writer_record(&c->w, span->data, span->len), 0);
}

static void export_file(const char *src, const char *dst, h5s_marc_format format, unsigned flags)
{
    export_ctx c;
    FILE *fp = fopen(dst, "wb");
    assert_non_null(fp);
    assert_int_equal(h5s_marc_writer_begin(&c.w, format, flags, fp), 0);
    scan_file(src, 65536, export_record, &c);
    assert_int_equal(h5s_marc_writer_end(&c.w), 0);
    h5s_marc_writer_release(&c.w);
    fclose(fp);
}

/* Builds an ISO 2709 record from n fields given as tag and content (without the 0x1E). */
static size_t build_record(unsigned char *out, size_t cap, const char *const *tags,
                           const char *const *contents, size_t n)
{
    size_t base = 24 + 12 * n + 1, data = 0;
    for (size_t i = 0; i < n; i++)
        data += strlen(contents[i]) + 1;
    size_t total = base + data + 1;
    assert_true(total <= cap);
    char leader[64];
    snprintf(leader, sizeof leader, "%05zunam a22%05zu   4500", total, base);
    memcpy(out, leader, 24);
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        char entry[40];
        size_t flen = strlen(contents[i]) + 1;
        snprintf(entry, sizeof entry, "%.3s%04zu%05zu", tags[i], flen, at);
        memcpy(out + 24 + 12 * i, entry, 12);
        memcpy(out + base + at, contents[i], flen - 1);
        out[base + at + flen - 1] = 0x1E;
        at += flen;
    }
    out[base - 1] = 0x1E;
    out[total - 1] = 0x1D;
    return total;
}

/* MARCXML text: the five specials as entities (in codes and indicators too), C0 controls
 * dropped, valid UTF-8 kept, each invalid or cut-short byte as U+FFFD. */
static void test_marc_record__marcxml_escapes(void **state)
{
    (void)state;
    const char *tags[] = {"001", "245", "500"};
    const char *contents[] = {
        "id<1>&\"'",
        "1&\x1f"
        "aA\x01"
        "B\xc3\xa9"
        "C\xff"
        "D\xe2\x82\x1f&x",
        "  \x1f"
        "a<&>",
    };
    unsigned char rec[512];
    size_t len = build_record(rec, sizeof rec, tags, contents, 3);
    h5s_marc_writer w;
    assert_int_equal(h5s_marc_writer_begin(&w, H5S_MARC_MARCXML, 0, NULL), 0);
    size_t head = w.out.len;
    assert_int_equal(h5s_marc_writer_record(&w, rec, len), 0);
    char leader[25];
    memcpy(leader, rec, 24);
    leader[24] = '\0';
    char want[1024];
    snprintf(want, sizeof want,
             "<record>\n"
             "  <leader>%s</leader>\n"
             "  <controlfield tag=\"001\">id&lt;1&gt;&amp;&quot;&apos;</controlfield>\n"
             "  <datafield tag=\"245\" ind1=\"1\" ind2=\"&amp;\">\n"
             "    <subfield code=\"a\">AB\xc3\xa9"
             "C\xef\xbf\xbd"
             "D\xef\xbf\xbd\xef\xbf\xbd"
             "</subfield>\n"
             "    <subfield code=\"&amp;\">x</subfield>\n"
             "  </datafield>\n"
             "  <datafield tag=\"500\" ind1=\" \" ind2=\" \">\n"
             "    <subfield code=\"a\">&lt;&amp;&gt;</subfield>\n"
             "  </datafield>\n"
             "</record>\n",
             leader);
    assert_int_equal(w.out.len - head, strlen(want));
    assert_memory_equal(w.out.data + head, want, strlen(want));
    h5s_marc_writer_release(&w);
}

/* 1 when r holds a stored defect with this code (at offset, unless offset is UINT32_MAX). */
static int has_defect(const h5s_marc_report *r, uint16_t code, uint32_t offset)
{
    uint32_t stored = r->n_errors < H5S_MARC_MAX_ERRORS ? r->n_errors : H5S_MARC_MAX_ERRORS;
    for (uint32_t i = 0; i < stored; i++)
        if (r->errors[i].code == code && (offset == UINT32_MAX || r->errors[i].offset == offset))
            return 1;
    return 0;
}

/* The clean-record fast path (vector scans of the data area, an inline search of control
 * fields) against one bad byte at every position of the data area: each must be found. The
 * record sits in a buffer of its exact size, with its control field last, so the sanitizer
 * build catches a scan reading past the record. */
static void test_marc_record__bad_byte_every_position(void **state)
{
    (void)state;
    const char *tags[] = {"245", "008"};
    const char *contents[] = {"10\x1f"
                              "aThe quick brown fox jumps over the lazy dog,\x1f"
                              "bversus \xc3\xa9t\xc3\xa9 and more text to fill 100 bytes",
                              "860506s1986    nyu           000 0 eng  "};
    unsigned char tmp[512];
    size_t len = build_record(tmp, sizeof tmp, tags, contents, 2);
    unsigned char *rec = malloc(len);
    assert_non_null(rec);
    memcpy(rec, tmp, len);
    h5s_marc_report r;
    assert_int_equal(h5s_marc_validate(&r, rec, len, 0), 0);
    assert_int_equal(r.n_fields, 2);
    assert_int_equal(r.flags, H5S_MARC_F_UTF8);
    size_t base = 24 + 2 * 12 + 1, ctl = base + strlen(contents[0]) + 1;
    assert_int_equal(ctl + strlen(contents[1]) + 2, len);
    unsigned checked = 0;
    for (size_t at = base; at < len - 1; at++) {
        if (rec[at] == 0x1E)
            continue; /* a field's own terminator */
        unsigned char keep = rec[at];
        rec[at] = 0x1D;
        assert_true(h5s_marc_validate(&r, rec, len, 0) > 0);
        rec[at] = 0x1E;
        assert_true(h5s_marc_validate(&r, rec, len, 0) > 0);
        rec[at] = 0xFF;
        assert_true(h5s_marc_validate(&r, rec, len, 0) > 0);
        /* At that byte, or at the lead byte of the sequence it cut short (é's 0xA9). */
        int in_seq = keep >= 0x80 && keep < 0xC0;
        assert_true(has_defect(&r, H5S_MARC_E_UTF8, (uint32_t)(in_seq ? at - 1 : at)));
        if (at >= ctl) {
            rec[at] = 0x1F;
            assert_true(h5s_marc_validate(&r, rec, len, 0) > 0);
            assert_true(has_defect(&r, H5S_MARC_E_CONTROL_DELIMITER, UINT32_MAX));
        }
        rec[at] = keep;
        assert_int_equal(h5s_marc_validate(&r, rec, len, 0), 0);
        checked++;
    }
    assert_int_equal(checked, len - 1 - base - 2);
    free(rec);
}

static void test_marc_record__exports_match_yaz(void **state)
{
    (void)state;
    const char *tmp = getenv("H5S_TEST_TMP");
    assert_non_null(tmp);
    for (size_t i = 0; i < 3; i++) {
        char src[4096], xml[4096], iso[4096], txt[4096], json[4096], cmd[16384];
        data_path(src, sizeof(src), clean_files[i]);
        snprintf(xml, sizeof(xml), "%s/out%zu.xml", tmp, i);
        snprintf(iso, sizeof(iso), "%s/out%zu.mrc", tmp, i);
        snprintf(txt, sizeof(txt), "%s/out%zu.txt", tmp, i);
        snprintf(json, sizeof(json), "%s/out%zu.json", tmp, i);
        export_file(src, xml, H5S_MARC_MARCXML, 0);
        export_file(src, iso, H5S_MARC_ISO2709, 0);
        export_file(src, txt, H5S_MARC_LINE, 0);
        export_file(src, json, H5S_MARC_JSON, 0);

        snprintf(cmd, sizeof(cmd), "yaz-marcdump -i marc -o marcxml '%s'", src);
        char *want = run_normalised(cmd);
        snprintf(cmd, sizeof(cmd), "cat '%s'", xml);
        char *got = run_normalised(cmd);
        assert_string_equal(got, want);
        /* yaz reads our MARCXML and our ISO 2709 back to the same records. */
        snprintf(cmd, sizeof(cmd), "yaz-marcdump -i marcxml -o marcxml '%s'", xml);
        char *back = run_normalised(cmd);
        assert_string_equal(back, want);
        snprintf(cmd, sizeof(cmd), "yaz-marcdump -i marc -o marcxml '%s'", iso);
        char *back2 = run_normalised(cmd);
        assert_string_equal(back2, want);
        snprintf(cmd, sizeof(cmd), "yaz-marcdump '%s'", src);
        char *line_want = run_normalised(cmd);
        snprintf(cmd, sizeof(cmd), "cat '%s'", txt);
        char *line_got = run_normalised(cmd);
        assert_string_equal(line_got, line_want);

        json_error_t err;
        json_t *root = json_load_file(json, 0, &err);
        if (!root)
            fail_msg("%s: line %d: %s", json, err.line, err.text);
        size_t n = 0;
        for (size_t k = 0; want[k]; k++)
            n += strncmp(want + k, "<record>", 8) == 0;
        assert_int_equal(json_array_size(root), n);
        json_t *first = json_array_get(root, 0);
        assert_non_null(json_object_get(first, "leader"));
        assert_true(json_array_size(json_object_get(first, "fields")) > 0);
        json_decref(root);
        free(want);
        free(got);
        free(back);
        free(back2);
        free(line_want);
        free(line_got);
    }
}

static void test_marc_record__marc8_to_utf8(void **state)
{
    (void)state;
    const char *tmp = getenv("H5S_TEST_TMP");
    char src[4096], xml[4096], cmd[16384];
    data_path(src, sizeof(src), "AAAP-PDF_records_2022-03.mrc");
    snprintf(xml, sizeof(xml), "%s/marc8.xml", tmp);
    export_file(src, xml, H5S_MARC_MARCXML, H5S_MARC_WRITE_MARC8_TO_UTF8);
    snprintf(cmd, sizeof(cmd), "yaz-marcdump -f marc8 -t utf-8 -i marc -o marcxml '%s'", src);
    char *want = run_normalised(cmd);
    snprintf(cmd, sizeof(cmd), "cat '%s'", xml);
    char *got = run_normalised(cmd);
    assert_string_equal(got, want);
    free(want);
    free(got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_marc_record__counts),
        cmocka_unit_test(test_marc_record__cursor_matches_scanner),
        cmocka_unit_test(test_marc_record__roundtrip_clean),
        cmocka_unit_test(test_marc_record__bad_records),
        cmocka_unit_test(test_marc_record__accessors),
        cmocka_unit_test(test_marc_record__marcxml_escapes),
        cmocka_unit_test(test_marc_record__bad_byte_every_position),
        cmocka_unit_test(test_marc_record__exports_match_yaz),
        cmocka_unit_test(test_marc_record__marc8_to_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
