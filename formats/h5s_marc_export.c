/*
 * h5s_marc_export.c - writers for MARC records: ISO 2709, MARCXML (MARC21 slim schema,
 * element for element as yaz-marcdump -o marcxml), MARC-in-JSON and yaz-marcdump's line
 * format; MARC-8 -> UTF-8 through libyaz's yaz_iconv.
 */
#include "h5s_marc.h"

#include <stdlib.h>
#include <string.h>

#include <yaz/yaz-iconv.h>

#include "h5s_error.h"

#define WRITER_FLUSH (1u << 16)
#define MARCXML_NS "http://www.loc.gov/MARC21/slim"

static const unsigned char replacement[3] = {0xEF, 0xBF, 0xBD}; /* U+FFFD */

int h5s_marc_format_parse(h5s_marc_format *out, const char *name)
{
    static const struct {
        const char *name;
        h5s_marc_format format;
    } names[] = {{"iso2709", H5S_MARC_ISO2709},
                 {"marcxml", H5S_MARC_MARCXML},
                 {"marc-json", H5S_MARC_JSON},
                 {"json", H5S_MARC_JSON},
                 {"line", H5S_MARC_LINE}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (name && strcmp(name, names[i].name) == 0) {
            *out = names[i].format;
            return 0;
        }
    }
    return h5s_error_set(H5S_EINVAL, "marc: unknown export format '%s'", name ? name : "(null)");
}

/* ------------------------------------------------------------------ MARC-8 -> UTF-8 */

struct h5s_marc_charconv {
    yaz_iconv_t cd;
    h5s_marc_buf data; /* fields of the record being rebuilt */
};

int h5s_marc_charconv_open(h5s_marc_charconv **out)
{
    if (!out)
        return h5s_error_set(H5S_EINVAL, "marc: charconv out is NULL");
    *out = NULL;
    h5s_marc_charconv *cv = calloc(1, sizeof(*cv));
    if (!cv)
        return h5s_error_set(H5S_ENOMEM, "marc: out of memory");
    cv->cd = yaz_iconv_open("utf-8", "marc8");
    if (!cv->cd) {
        free(cv);
        return h5s_error_set(H5S_EINVAL, "marc: yaz_iconv_open(\"utf-8\", \"marc8\") failed");
    }
    *out = cv;
    return 0;
}

void h5s_marc_charconv_free(h5s_marc_charconv *cv)
{
    if (!cv)
        return;
    yaz_iconv_close(cv->cd);
    h5s_marc_buf_free(&cv->data);
    free(cv);
}

/* Converts n MARC-8 bytes, appending UTF-8 to out; undecodable bytes become U+FFFD. */
static int convert(yaz_iconv_t cd, h5s_marc_buf *out, const unsigned char *in, size_t n,
                   size_t *bad)
{
    char *ip = (char *)(uintptr_t)in;
    size_t il = n;
    int rc;
    while (il > 0) {
        if ((rc = h5s_marc_buf_reserve(out, il * 4 + 64)) != 0)
            return rc;
        char *op = (char *)out->data + out->len;
        size_t ol = out->cap - out->len;
        size_t r = yaz_iconv(cd, &ip, &il, &op, &ol);
        out->len = (size_t)((unsigned char *)op - out->data);
        if (r != (size_t)-1 || il == 0 || yaz_iconv_error(cd) == YAZ_ICONV_E2BIG)
            continue;
        if ((rc = h5s_marc_buf_append(out, replacement, 3)) != 0)
            return rc;
        ip++;
        il--;
        if (bad)
            (*bad)++;
    }
    /* Flush pending combining marks and reset the escape state for the next value. */
    for (int tries = 0; tries < 8; tries++) {
        if ((rc = h5s_marc_buf_reserve(out, 256)) != 0)
            return rc;
        char *op = (char *)out->data + out->len;
        size_t ol = out->cap - out->len;
        size_t r = yaz_iconv(cd, NULL, NULL, &op, &ol);
        out->len = (size_t)((unsigned char *)op - out->data);
        if (r != (size_t)-1 || yaz_iconv_error(cd) != YAZ_ICONV_E2BIG)
            break;
    }
    return 0;
}

int h5s_marc_charconv_record(h5s_marc_charconv *cv, h5s_marc_buf *out, const unsigned char *rec,
                             size_t len, size_t *n_bad)
{
    h5s_marc_iter it;
    h5s_marc_field f;
    if (n_bad)
        *n_bad = 0;
    int rc = h5s_marc_iter_init(&it, rec, len);
    if (rc)
        return rc;
    size_t n = 0;
    while (h5s_marc_iter_next(&it, &f))
        n++;
    out->len = 0;
    rc = h5s_marc_buf_reserve(out, H5S_MARC_LEADER_LEN + 12 * n + 2);
    if (rc)
        return rc;
    out->len = H5S_MARC_LEADER_LEN + 12 * n + 1;
    memcpy(out->data, rec, H5S_MARC_LEADER_LEN);
    cv->data.len = 0;
    h5s_marc_iter_init(&it, rec, len);
    for (size_t i = 0; h5s_marc_iter_next(&it, &f); i++) {
        size_t start = cv->data.len;
        if (f.control) {
            rc = convert(cv->cd, &cv->data, f.data, f.len, n_bad);
        } else {
            unsigned char ind[2] = {f.ind1, f.ind2};
            rc = h5s_marc_buf_append(&cv->data, ind, 2);
            h5s_marc_subfield s;
            size_t pos = 0;
            while (rc == 0 && h5s_marc_subfield_next(&f, &pos, &s)) {
                unsigned char head[2] = {H5S_MARC_SF, s.code};
                rc = h5s_marc_buf_append(&cv->data, head, 2);
                if (rc == 0)
                    rc = convert(cv->cd, &cv->data, s.data, s.len, n_bad);
            }
        }
        unsigned char ft = H5S_MARC_FT;
        if (rc == 0)
            rc = h5s_marc_buf_append(&cv->data, &ft, 1);
        if (rc)
            return rc;
        size_t flen = cv->data.len - start;
        if (flen > 9999 || start > 99999)
            return h5s_error_set(H5S_EFORMAT,
                                 "marc: field %zu (%s) is %zu bytes in UTF-8, over 9999", i, f.tag,
                                 flen);
        char entry[13];
        snprintf(entry, sizeof(entry), "%.3s%04zu%05zu", f.tag, flen, start);
        memcpy(out->data + H5S_MARC_LEADER_LEN + 12 * i, entry, 12);
    }
    out->data[out->len - 1] = H5S_MARC_FT;
    size_t base = out->len;
    rc = h5s_marc_buf_append(out, cv->data.data, cv->data.len);
    unsigned char rt = H5S_MARC_RT;
    if (rc == 0)
        rc = h5s_marc_buf_append(out, &rt, 1);
    if (rc)
        return rc;
    if (out->len > 99999)
        return h5s_error_set(H5S_EFORMAT, "marc: record is %zu bytes in UTF-8, over 99999",
                             out->len);
    char num[6];
    snprintf(num, sizeof(num), "%05zu", out->len);
    memcpy(out->data, num, 5);
    snprintf(num, sizeof(num), "%05zu", base);
    memcpy(out->data + 12, num, 5);
    out->data[9] = 'a';
    return 0;
}

/* -------------------------------------------------------------------- text escaping */

static int put(h5s_marc_buf *b, const char *s)
{
    return h5s_marc_buf_append(b, s, strlen(s));
}

/* 1 for the bytes XML character data cannot carry as they are: C0 controls, the five
 * specials (" & ' < >) and every byte from 0x80 (checked as UTF-8). */
static const unsigned char xml_special[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x00 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x10 */
    0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x20: " & ' */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, /* 0x30: < > */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x40 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x50 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x60 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x70 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x80 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x90 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xA0 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xB0 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xC0 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xD0 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xE0 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xF0 */
};

/* The most bytes XML character data takes for one input byte ("&quot;"). */
#define XML_GROWTH 6
/* A field's MARCXML is at most this long for len bytes of content: every byte as an
 * entity, plus the markup of the field and of one subfield per byte (each subfield takes
 * a delimiter byte at least). */
#define MARCXML_FIELD_BOUND(len) ((len) * (XML_GROWTH + 48) + 128)

/* Appends a string literal; the caller has reserved the room. */
#define PUT_LIT(b, lit)                                                                            \
    do {                                                                                           \
        memcpy((b)->data + (b)->len, lit, sizeof(lit) - 1);                                        \
        (b)->len += sizeof(lit) - 1;                                                               \
    } while (0)

/*
 * XML character data: the five specials as entities, C0 controls dropped (XML 1.0 cannot
 * carry them; yaz-marcdump drops them too), invalid UTF-8 as U+FFFD. The caller has
 * reserved n * XML_GROWTH bytes.
 */
static void xml_text(h5s_marc_buf *b, const unsigned char *p, size_t n)
{
    unsigned char *d = b->data + b->len;
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (!xml_special[c]) {
            *d++ = c;
            i++;
            continue;
        }
        const char *ent = c == '<'    ? "&lt;"
                          : c == '>'  ? "&gt;"
                          : c == '&'  ? "&amp;"
                          : c == '"'  ? "&quot;"
                          : c == '\'' ? "&apos;"
                                      : NULL;
        if (ent) {
            size_t k = strlen(ent);
            memcpy(d, ent, k);
            d += k;
            i++;
        } else if (c < 0x20) {
            i++;
        } else {
            size_t k = h5s_marc_utf8_seq(p + i, n - i);
            if (k) {
                memcpy(d, p + i, k);
                d += k;
                i += k;
            } else {
                memcpy(d, replacement, 3);
                d += 3;
                i++;
            }
        }
    }
    b->len = (size_t)(d - b->data);
}

/* A JSON string (RFC 8259) with quotes; invalid UTF-8 as U+FFFD. */
static int put_json(h5s_marc_buf *b, const unsigned char *p, size_t n)
{
    int rc = h5s_marc_buf_reserve(b, n * 6 + 2);
    if (rc)
        return rc;
    b->data[b->len++] = '"';
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            b->data[b->len++] = c;
            i++;
        } else if (c == '"' || c == '\\') {
            b->data[b->len++] = '\\';
            b->data[b->len++] = c;
            i++;
        } else if (c < 0x20) {
            b->len += (size_t)snprintf((char *)b->data + b->len, 7, "\\u%04x", c);
            i++;
        } else {
            size_t k = h5s_marc_utf8_seq(p + i, n - i);
            const unsigned char *src = k ? p + i : replacement;
            memcpy(b->data + b->len, src, k ? k : 3);
            b->len += k ? k : 3;
            i += k ? k : 1;
        }
    }
    b->data[b->len++] = '"';
    return 0;
}

/* ------------------------------------------------------------------------ formats */

static int write_marcxml(h5s_marc_buf *b, const unsigned char *rec, size_t len)
{
    h5s_marc_iter it;
    h5s_marc_field f;
    int rc = h5s_marc_iter_init(&it, rec, len);
    if (rc)
        return rc;
    unsigned char leader[H5S_MARC_LEADER_LEN];
    memcpy(leader, rec, H5S_MARC_LEADER_LEN);
    leader[9] = 'a'; /* the XML text is Unicode */
    if ((rc = h5s_marc_buf_reserve(b, MARCXML_FIELD_BOUND(sizeof leader))) != 0)
        return rc;
    PUT_LIT(b, "<record>\n  <leader>");
    xml_text(b, leader, sizeof leader);
    PUT_LIT(b, "</leader>\n");
    while (h5s_marc_iter_next(&it, &f)) {
        if ((rc = h5s_marc_buf_reserve(b, MARCXML_FIELD_BOUND(f.len))) != 0)
            return rc;
        if (f.control) {
            PUT_LIT(b, "  <controlfield tag=\"");
            xml_text(b, (const unsigned char *)f.tag, 3);
            PUT_LIT(b, "\">");
            xml_text(b, f.data, f.len);
            PUT_LIT(b, "</controlfield>\n");
            continue;
        }
        PUT_LIT(b, "  <datafield tag=\"");
        xml_text(b, (const unsigned char *)f.tag, 3);
        PUT_LIT(b, "\" ind1=\"");
        xml_text(b, &f.ind1, f.len > 0);
        PUT_LIT(b, "\" ind2=\"");
        xml_text(b, &f.ind2, f.len > 1);
        PUT_LIT(b, "\">\n");
        h5s_marc_subfield s;
        size_t pos = 0;
        while (h5s_marc_subfield_next(&f, &pos, &s)) {
            PUT_LIT(b, "    <subfield code=\"");
            xml_text(b, &s.code, 1);
            PUT_LIT(b, "\">");
            xml_text(b, s.data, s.len);
            PUT_LIT(b, "</subfield>\n");
        }
        PUT_LIT(b, "  </datafield>\n");
    }
    return put(b, "</record>\n");
}

static int write_json(h5s_marc_buf *b, const unsigned char *rec, size_t len)
{
    h5s_marc_iter it;
    h5s_marc_field f;
    int rc = h5s_marc_iter_init(&it, rec, len);
    if (rc)
        return rc;
    rc = put(b, "{\"leader\":");
    rc = rc ? rc : put_json(b, rec, H5S_MARC_LEADER_LEN);
    rc = rc ? rc : put(b, ",\"fields\":[");
    for (int first = 1; rc == 0 && h5s_marc_iter_next(&it, &f); first = 0) {
        rc = put(b, first ? "{" : ",{");
        rc = rc ? rc : put_json(b, (const unsigned char *)f.tag, 3);
        rc = rc ? rc : put(b, ":");
        if (f.control) {
            rc = rc ? rc : put_json(b, f.data, f.len);
            rc = rc ? rc : put(b, "}");
            continue;
        }
        rc = rc ? rc : put(b, "{\"ind1\":");
        rc = rc ? rc : put_json(b, &f.ind1, 1);
        rc = rc ? rc : put(b, ",\"ind2\":");
        rc = rc ? rc : put_json(b, &f.ind2, 1);
        rc = rc ? rc : put(b, ",\"subfields\":[");
        h5s_marc_subfield s;
        size_t pos = 0;
        for (int sfirst = 1; rc == 0 && h5s_marc_subfield_next(&f, &pos, &s); sfirst = 0) {
            rc = put(b, sfirst ? "{" : ",{");
            rc = rc ? rc : put_json(b, &s.code, 1);
            rc = rc ? rc : put(b, ":");
            rc = rc ? rc : put_json(b, s.data, s.len);
            rc = rc ? rc : put(b, "}");
        }
        rc = rc ? rc : put(b, "]}}");
    }
    return rc ? rc : put(b, "]}");
}

/* yaz-marcdump's default output: leader line, "TAG data" or "TAG I1I2 $a v $b v", blank. */
static int write_line(h5s_marc_buf *b, const unsigned char *rec, size_t len)
{
    h5s_marc_iter it;
    h5s_marc_field f;
    int rc = h5s_marc_iter_init(&it, rec, len);
    if (rc)
        return rc;
    rc = h5s_marc_buf_append(b, rec, H5S_MARC_LEADER_LEN);
    rc = rc ? rc : put(b, "\n");
    while (rc == 0 && h5s_marc_iter_next(&it, &f)) {
        rc = h5s_marc_buf_append(b, f.tag, 3);
        rc = rc ? rc : put(b, " ");
        if (f.control) {
            rc = rc ? rc : h5s_marc_buf_append(b, f.data, f.len);
        } else {
            rc = rc ? rc : h5s_marc_buf_append(b, f.data, f.len < 2 ? f.len : 2);
            h5s_marc_subfield s;
            size_t pos = 0;
            while (rc == 0 && h5s_marc_subfield_next(&f, &pos, &s)) {
                unsigned char head[4] = {' ', '$', s.code, ' '};
                rc = h5s_marc_buf_append(b, head, 4);
                rc = rc ? rc : h5s_marc_buf_append(b, s.data, s.len);
            }
        }
        rc = rc ? rc : put(b, "\n");
    }
    return rc ? rc : put(b, "\n");
}

/* ------------------------------------------------------------------------ writer */

static int writer_flush(h5s_marc_writer *w, size_t threshold)
{
    if (!w->fp || w->out.len < threshold || w->out.len == 0)
        return 0;
    if (fwrite(w->out.data, 1, w->out.len, w->fp) != w->out.len)
        return h5s_error_set(H5S_EIO, "marc: write failed after %llu records",
                             (unsigned long long)w->n_records);
    w->out.len = 0;
    return 0;
}

int h5s_marc_writer_begin(h5s_marc_writer *w, h5s_marc_format format, unsigned flags, FILE *fp)
{
    if (!w || (unsigned)format > H5S_MARC_LINE)
        return h5s_error_set(H5S_EINVAL, "marc: bad writer arguments");
    memset(w, 0, sizeof(*w));
    w->format = format;
    w->flags = flags;
    w->fp = fp;
    if (format == H5S_MARC_MARCXML)
        return put(&w->out, "<collection xmlns=\"" MARCXML_NS "\">\n");
    if (format == H5S_MARC_JSON)
        return put(&w->out, "[");
    return 0;
}

int h5s_marc_writer_record(h5s_marc_writer *w, const unsigned char *rec, size_t len)
{
    if (!w || (!rec && len))
        return h5s_error_set(H5S_EINVAL, "marc: bad writer arguments");
    if (w->format == H5S_MARC_ISO2709) {
        int rc = h5s_marc_buf_append(&w->out, rec, len);
        if (rc == 0)
            w->n_records++;
        return rc ? rc : writer_flush(w, WRITER_FLUSH);
    }
    if ((w->flags & H5S_MARC_WRITE_MARC8_TO_UTF8) && len > H5S_MARC_LEADER_LEN && rec[9] == ' ') {
        int rc = w->cv ? 0 : h5s_marc_charconv_open(&w->cv);
        rc = rc ? rc : h5s_marc_charconv_record(w->cv, &w->scratch, rec, len, NULL);
        if (rc)
            return h5s_error_prefix(rc, "marc: record %llu", (unsigned long long)w->n_records);
        rec = w->scratch.data;
        len = w->scratch.len;
    }
    size_t mark = w->out.len;
    int rc = 0;
    if (w->format == H5S_MARC_JSON && w->n_records)
        rc = put(&w->out, ",\n");
    else if (w->format == H5S_MARC_JSON)
        rc = put(&w->out, "\n");
    if (rc == 0) {
        if (w->format == H5S_MARC_MARCXML)
            rc = write_marcxml(&w->out, rec, len);
        else if (w->format == H5S_MARC_JSON)
            rc = write_json(&w->out, rec, len);
        else
            rc = write_line(&w->out, rec, len);
    }
    if (rc) {
        w->out.len = mark; /* nothing of a record that cannot be read */
        return h5s_error_prefix(rc, "marc: record %llu", (unsigned long long)w->n_records);
    }
    w->n_records++;
    return writer_flush(w, WRITER_FLUSH);
}

int h5s_marc_writer_end(h5s_marc_writer *w)
{
    if (!w)
        return h5s_error_set(H5S_EINVAL, "marc: writer is NULL");
    int rc = 0;
    if (w->format == H5S_MARC_MARCXML)
        rc = put(&w->out, "</collection>\n");
    else if (w->format == H5S_MARC_JSON)
        rc = put(&w->out, "\n]\n");
    rc = rc ? rc : writer_flush(w, 1);
    if (rc == 0 && w->fp && fflush(w->fp) != 0)
        rc = h5s_error_set(H5S_EIO, "marc: flush failed");
    return rc;
}

void h5s_marc_writer_release(h5s_marc_writer *w)
{
    if (!w)
        return;
    h5s_marc_buf_free(&w->out);
    h5s_marc_buf_free(&w->scratch);
    h5s_marc_charconv_free(w->cv);
    w->cv = NULL;
}
