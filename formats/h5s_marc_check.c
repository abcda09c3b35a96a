/*
 * h5s_marc_check.c - validation of one MARC 21 record (MARC 21 Specifications for Record
 * Structure; ISO 2709), the strict / lenient / permissive modes, lenient repairs, and
 * the accessors (leader, 001, 245 $a, field and subfield iteration).
 */
#include "h5s_marc.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define H5S_MARC_AVX2 1 /* an AVX2 scan_area, chosen at run time */
#endif

#include "h5s_error.h"

/* ------------------------------------------------------------------ names, buffers */

#define NAME_ENTRY(name, value, text) [value] = #name,
#define TEXT_ENTRY(name, value, text) [value] = text,
static const char *const code_names[] = {H5S_MARC_ERROR_TABLE(NAME_ENTRY)};
static const char *const code_texts[] = {H5S_MARC_ERROR_TABLE(TEXT_ENTRY)};

const char *h5s_marc_error_name(int code)
{
    if (code < 0 || code >= H5S_MARC_CODE_COUNT)
        return "?";
    return code_names[code] + strlen("H5S_MARC_");
}

const char *h5s_marc_error_text(int code)
{
    if (code < 0 || code >= H5S_MARC_CODE_COUNT)
        return "unknown";
    return code_texts[code];
}

void h5s_marc_buf_free(h5s_marc_buf *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int h5s_marc_buf_reserve(h5s_marc_buf *b, size_t n)
{
    if (b->cap - b->len >= n)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < n)
        cap *= 2;
    unsigned char *p = realloc(b->data, cap);
    if (!p)
        return h5s_error_set(H5S_ENOMEM, "marc: out of memory for %zu bytes", cap);
    b->data = p;
    b->cap = cap;
    return 0;
}

int h5s_marc_buf_append(h5s_marc_buf *b, const void *data, size_t n)
{
    int rc = h5s_marc_buf_reserve(b, n);
    if (rc)
        return rc;
    if (n)
        memcpy(b->data + b->len, data, n);
    b->len += n;
    return 0;
}

int h5s_marc_mode_parse(h5s_marc_mode *out, const char *name)
{
    static const char *const names[] = {"strict", "lenient", "permissive"};
    for (int i = 0; i < 3; i++) {
        if (name && strcmp(name, names[i]) == 0) {
            *out = (h5s_marc_mode)i;
            return 0;
        }
    }
    return h5s_error_set(H5S_EINVAL, "marc: unknown mode '%s' (strict, lenient, permissive)",
                         name ? name : "(null)");
}

/* ----------------------------------------------------------------------- helpers */

/* Parses n ASCII digits at p into *v; 0 when one is not a digit. */
static int digits(const unsigned char *p, int n, size_t *v)
{
    size_t x = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
        x = x * 10 + (size_t)(p[i] - '0');
    }
    *v = x;
    return 1;
}

static void put_digits(unsigned char *p, int n, size_t v)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (unsigned char)('0' + v % 10);
        v /= 10;
    }
}

static int is_alnum(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/*
 * Length of the valid UTF-8 sequence at p (n bytes left), 0 when invalid (RFC 3629: no
 * overlongs, no surrogates, nothing past U+10FFFF).
 */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return n >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (n < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
            return 0;
        if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] > 0x9F))
            return 0;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (n < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
            return 0;
        if ((c == 0xF0 && p[1] < 0x90) || (c == 0xF4 && p[1] > 0x8F))
            return 0;
        return 4;
    }
    return 0;
}

/* Offset of the first byte of p[0..n) that is not valid UTF-8, or n. ASCII fast path. */
static size_t utf8_check(const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        while (i + 16 <= n) {
            uint64_t w[2];
            memcpy(w, p + i, 16);
            if ((w[0] | w[1]) & 0x8080808080808080ull)
                break;
            i += 16;
        }
        while (i < n && p[i] < 0x80)
            i++;
        if (i >= n)
            break;
        size_t k = utf8_seq(p + i, n - i);
        if (!k)
            return i;
        i += k;
    }
    return n;
}

size_t h5s_marc_utf8_seq(const unsigned char *p, size_t n)
{
    return utf8_seq(p, n);
}

/*
 * Locates the directory: the leader's base address when it is in bounds, follows a 0x1E
 * and leaves a whole number of 12-byte entries; otherwise the first 0x1E after the
 * leader. Sets *dirend (offset of that 0x1E) and returns 1, or 0 when there is none.
 */
static int locate_directory(const unsigned char *rec, size_t len, size_t *dirend)
{
    size_t base;
    if (digits(rec + 12, 5, &base) && base >= H5S_MARC_LEADER_LEN + 1 && base < len &&
        rec[base - 1] == H5S_MARC_FT && (base - 1 - H5S_MARC_LEADER_LEN) % 12 == 0) {
        *dirend = base - 1;
        return 1;
    }
    const unsigned char *ft =
        memchr(rec + H5S_MARC_LEADER_LEN, H5S_MARC_FT, len - H5S_MARC_LEADER_LEN);
    if (!ft)
        return 0;
    *dirend = (size_t)(ft - rec);
    return 1;
}

/* ---------------------------------------------------------------------- validation */

static void add_error(h5s_marc_report *r, int code, size_t off)
{
    if (r->n_errors < H5S_MARC_MAX_ERRORS) {
        r->errors[r->n_errors].code = (uint16_t)code;
        r->errors[r->n_errors].offset = (uint32_t)off;
    }
    r->n_errors++;
}

static void add_repair(h5s_marc_report *r, int code, size_t off)
{
    if (r->n_repairs < H5S_MARC_MAX_ERRORS) {
        r->repairs[r->n_repairs].code = (uint16_t)code;
        r->repairs[r->n_repairs].offset = (uint32_t)off;
    }
    r->n_repairs++;
}

#define DEFECT(code, off)                                                                          \
    do {                                                                                           \
        add_error(r, (code), (off));                                                               \
        if (stop_first)                                                                            \
            return r->n_errors;                                                                    \
    } while (0)

/* Checks one field's content [fs, fs + clen) of a control or data field. */
static int check_content(h5s_marc_report *r, const unsigned char *rec, size_t fs, size_t clen,
                         int control, int stop_first)
{
    const unsigned char *c = rec + fs;
    const unsigned char *ft = memchr(c, H5S_MARC_FT, clen);
    if (ft) {
        add_error(r, H5S_MARC_E_EMBEDDED_TERMINATOR, (size_t)(ft - rec));
        if (stop_first)
            return 1;
    }
    const unsigned char *rt = memchr(c, H5S_MARC_RT, clen);
    if (rt) {
        add_error(r, H5S_MARC_E_EMBEDDED_TERMINATOR, (size_t)(rt - rec));
        if (stop_first)
            return 1;
    }
    if (control) {
        const unsigned char *sf = memchr(c, H5S_MARC_SF, clen);
        if (sf) {
            add_error(r, H5S_MARC_E_CONTROL_DELIMITER, (size_t)(sf - rec));
            if (stop_first)
                return 1;
        }
        return 0;
    }
    if (clen < 2 || c[0] == H5S_MARC_SF || c[1] == H5S_MARC_SF) {
        add_error(r, H5S_MARC_E_INDICATORS, fs);
        return stop_first;
    }
    if (clen > 2 && c[2] != H5S_MARC_SF) {
        add_error(r, H5S_MARC_E_SUBFIELD_START, fs + 2);
        return stop_first;
    }
    return 0;
}

/*
 * The full walk: every check in the order docs/marc.md lists them, each defect with its
 * offset. It runs only for the records clean_record does not vouch for (defective ones,
 * and clean ones whose fields are not stored in directory order), to name the defects.
 */
static uint32_t validate_walk(h5s_marc_report *r, const unsigned char *rec, size_t len,
                              int stop_first)
{
    r->flags = 0;
    r->n_errors = 0;
    r->n_repairs = 0;
    r->n_fields = 0;
    if (!rec || len < H5S_MARC_LEADER_LEN + 1) {
        add_error(r, H5S_MARC_E_SHORT, 0);
        return r->n_errors;
    }
    size_t v, base = 0;
    if (rec[len - 1] != H5S_MARC_RT)
        DEFECT(H5S_MARC_E_RECORD_TERMINATOR, len - 1);
    if (!digits(rec, 5, &v))
        DEFECT(H5S_MARC_E_LENGTH_DIGITS, 0);
    else if (v != len)
        DEFECT(H5S_MARC_E_LENGTH, 0);
    if (rec[9] == 'a')
        r->flags |= H5S_MARC_F_UTF8;
    else if (rec[9] == ' ')
        r->flags |= H5S_MARC_F_MARC8;
    else
        DEFECT(H5S_MARC_E_CHARSET, 9);
    if (rec[10] != '2')
        DEFECT(H5S_MARC_E_INDICATOR_COUNT, 10);
    if (rec[11] != '2')
        DEFECT(H5S_MARC_E_SUBFIELD_CODE_COUNT, 11);
    if (!digits(rec + 12, 5, &base))
        DEFECT(H5S_MARC_E_BASE_DIGITS, 12);
    else if (base < H5S_MARC_LEADER_LEN + 1 || base >= len)
        DEFECT(H5S_MARC_E_BASE_BOUNDS, 12);
    else if (rec[base - 1] != H5S_MARC_FT)
        DEFECT(H5S_MARC_E_DIR_TERMINATOR, base - 1);
    if (memcmp(rec + 20, "4500", 4) != 0)
        DEFECT(H5S_MARC_E_ENTRY_MAP, 20);

    size_t dirend;
    if (!locate_directory(rec, len, &dirend))
        DEFECT(H5S_MARC_E_NO_DIRECTORY, H5S_MARC_LEADER_LEN);
    if (r->n_errors && (r->errors[r->n_errors - 1].code == H5S_MARC_E_NO_DIRECTORY))
        return r->n_errors;
    size_t data = dirend + 1;
    size_t dirlen = dirend - H5S_MARC_LEADER_LEN;
    if (dirlen % 12)
        DEFECT(H5S_MARC_E_DIR_LENGTH, H5S_MARC_LEADER_LEN);
    size_t n = dirlen / 12;
    r->n_fields = (uint32_t)n;
    if (n == 0)
        DEFECT(H5S_MARC_E_NO_FIELDS, H5S_MARC_LEADER_LEN);
    size_t dataend = rec[len - 1] == H5S_MARC_RT ? len - 1 : len;
    for (size_t i = 0; i < n; i++) {
        const unsigned char *e = rec + H5S_MARC_LEADER_LEN + 12 * i;
        size_t q = H5S_MARC_LEADER_LEN + 12 * i, flen, fstart;
        if (!is_alnum(e[0]) || !is_alnum(e[1]) || !is_alnum(e[2]))
            DEFECT(H5S_MARC_E_DIR_TAG, q);
        if (!digits(e + 3, 4, &flen) || !digits(e + 7, 5, &fstart)) {
            DEFECT(H5S_MARC_E_DIR_DIGITS, q + 3);
            continue;
        }
        size_t fs = data + fstart;
        if (flen == 0 || fs > dataend || flen > dataend - fs) {
            DEFECT(H5S_MARC_E_FIELD_BOUNDS, q);
            continue;
        }
        size_t clen = flen - 1;
        if (rec[fs + clen] != H5S_MARC_FT) {
            DEFECT(H5S_MARC_E_FIELD_TERMINATOR, fs + clen);
            clen = flen;
        }
        if (check_content(r, rec, fs, clen, e[0] == '0' && e[1] == '0', stop_first) && stop_first)
            return r->n_errors;
    }
    if (r->flags & H5S_MARC_F_UTF8) {
        size_t bad = utf8_check(rec + data, dataend - data);
        if (bad < dataend - data)
            DEFECT(H5S_MARC_E_UTF8, data + bad);
    }
    return r->n_errors;
}

/* ------------------------------------------------------- validation: the clean path */

/* 1 for the bytes of a directory tag: ASCII letters and digits. */
static const unsigned char tag_ok[256] = {
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
    ['8'] = 1, ['9'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1,
    ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1,
    ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1,
    ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1,
    ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1,
    ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1,
    ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1};

/* 8 bytes at p as a little-endian word (p[0] in the low byte) on any host. */
static uint64_t load_le64(const unsigned char *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    w = __builtin_bswap64(w);
#endif
    return w;
}

/*
 * The 8 ASCII digits at p as two 4-digit numbers (p[0..3] in the low 32 bits, p[4..7] in
 * the high ones; p[0] and p[4] the most significant), or UINT64_MAX when one is not a
 * digit. SWAR: a byte is a digit iff its high nibble is 3 before and after adding 6 (no
 * carry can cross bytes that pass the first test); then pairs, then quads.
 */
static uint64_t digits4x2(const unsigned char *p)
{
    const uint64_t hi = 0xF0F0F0F0F0F0F0F0ull, zeros = 0x3030303030303030ull;
    uint64_t w = load_le64(p);
    if ((w & hi) != zeros || ((w + 0x0606060606060606ull) & hi) != zeros)
        return UINT64_MAX;
    w -= zeros;
    w = w * 10 + (w >> 8); /* bytes 0, 2, 4, 6: pairs */
    return (w & 0x000000FF000000FFull) * 100 + ((w >> 16) & 0x000000FF000000FFull);
}

#if defined(H5S_MARC_AVX2)
/*
 * scan_area's loop 32 bytes at a time, for CPUs with AVX2: counts the 0x1E bytes of the
 * whole 32-byte blocks of p[0..n), ORs into *seen as scan_area does, and sets *done to the
 * bytes it covered (the caller scans the rest).
 */
__attribute__((target("avx2"))) static size_t scan_area_avx2(const unsigned char *p, size_t n,
                                                             unsigned *seen, size_t *done)
{
    size_t i = 0, fts = 0;
    const __m256i ft = _mm256_set1_epi8(H5S_MARC_FT), rt = _mm256_set1_epi8(H5S_MARC_RT);
    const __m256i zero = _mm256_setzero_si256();
    __m256i rts = zero, any = zero;
    while (n - i >= 32) {
        /* Byte counters, summed before they can wrap (255 blocks). */
        size_t stop = n - i > 255 * 32 ? i + 255 * 32 : n - 31;
        __m256i cnt = zero;
        for (; i < stop; i += 32) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(p + i));
            cnt = _mm256_sub_epi8(cnt, _mm256_cmpeq_epi8(v, ft));
            rts = _mm256_or_si256(rts, _mm256_cmpeq_epi8(v, rt));
            any = _mm256_or_si256(any, v);
        }
        __m256i sum = _mm256_sad_epu8(cnt, zero);
        fts += (size_t)_mm256_extract_epi64(sum, 0) + (size_t)_mm256_extract_epi64(sum, 1) +
               (size_t)_mm256_extract_epi64(sum, 2) + (size_t)_mm256_extract_epi64(sum, 3);
    }
    if (_mm256_movemask_epi8(rts))
        *seen |= 1u;
    if (_mm256_movemask_epi8(any))
        *seen |= 2u;
    *done = i;
    return fts;
}
#endif

/*
 * Counts the 0x1E bytes of p[0..n) and ORs into *seen the 0x1D bytes found (bit 0) and the
 * bytes >= 0x80 (bit 1). One pass: 32 bytes at a time where the CPU has AVX2, then 16 at
 * a time with SSE2, then byte by byte.
 */
static size_t scan_area(const unsigned char *p, size_t n, unsigned *seen)
{
    size_t i = 0, fts = 0;
#if defined(H5S_MARC_AVX2)
    if (__builtin_cpu_supports("avx2")) {
        size_t done = 0;
        fts = scan_area_avx2(p, n, seen, &done);
        p += done;
        n -= done;
    }
#endif
#if defined(__SSE2__)
    const __m128i ft = _mm_set1_epi8(H5S_MARC_FT), rt = _mm_set1_epi8(H5S_MARC_RT);
    const __m128i zero = _mm_setzero_si128();
    __m128i rts = zero, any = zero;
    while (n - i >= 16) {
        /* Byte counters, summed before they can wrap (255 blocks). */
        size_t stop = n - i > 255 * 16 ? i + 255 * 16 : n - 15;
        __m128i cnt = zero;
        for (; i < stop; i += 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
            cnt = _mm_sub_epi8(cnt, _mm_cmpeq_epi8(v, ft));
            rts = _mm_or_si128(rts, _mm_cmpeq_epi8(v, rt));
            any = _mm_or_si128(any, v);
        }
        __m128i sum = _mm_sad_epu8(cnt, zero);
        fts += (size_t)_mm_cvtsi128_si32(sum) + (size_t)_mm_extract_epi16(sum, 4);
    }
    if (_mm_movemask_epi8(rts))
        *seen |= 1u;
    if (_mm_movemask_epi8(any))
        *seen |= 2u;
#endif
    for (; i < n; i++) {
        fts += p[i] == H5S_MARC_FT;
        if (p[i] == H5S_MARC_RT)
            *seen |= 1u;
        if (p[i] >= 0x80)
            *seen |= 2u;
    }
    return fts;
}

/*
 * 1 when p[0..n) holds a 0x1F. Control fields are short, so this stays inline instead of
 * calling memchr: 16-byte blocks while a whole block ends by limit (the record's end; bytes
 * past p + n are masked off), then byte by byte.
 */
static inline int has_sf(const unsigned char *p, size_t n, const unsigned char *limit)
{
    size_t i = 0;
#if defined(__SSE2__)
    const __m128i sf = _mm_set1_epi8(H5S_MARC_SF);
    for (; i < n && (size_t)(limit - p) - i >= 16; i += 16) {
        unsigned m = (unsigned)_mm_movemask_epi8(
            _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(const void *)(p + i)), sf));
        if (n - i < 16)
            m &= (1u << (n - i)) - 1;
        if (m)
            return 1;
    }
#endif
    for (; i < n; i++)
        if (p[i] == H5S_MARC_SF)
            return 1;
    return 0;
}

/*
 * Decides in one pass whether rec has no defect at all, the case of nearly every real
 * record: the leader, one vector pass over the data area that counts its 0x1E bytes
 * (fields that tile the area in directory order hold no embedded 0x1E iff there are
 * exactly n), looks for 0x1D and for bytes >= 0x80 (an ASCII area is valid UTF-8), then
 * each directory entry once (tags by table, the 4 + 5 digits as one SWAR word plus one
 * byte, each field's 0x1E by index at start + length - 1). Returns 1 with r's flags and
 * n_fields set as validate_walk would set them; 0 when the record needs the full walk
 * (a defect, or fields stored out of directory order).
 */
static int clean_record(h5s_marc_report *r, const unsigned char *rec, size_t len)
{
    if (!rec || len < H5S_MARC_LEADER_LEN + 1)
        return 0;
    if (rec[10] != '2' || rec[11] != '2' || (rec[9] != 'a' && rec[9] != ' ') ||
        memcmp(rec + 20, "4500", 4) != 0)
        return 0;
    /* leader/00-04 length and leader/12-16 base: "LLLLL" at 0 and "BBBBB" at 12. */
    size_t declared, base;
    if (!digits(rec, 5, &declared) || declared != len || !digits(rec + 12, 5, &base))
        return 0;
    if (base < H5S_MARC_LEADER_LEN + 1 || base >= len || (base - 1 - H5S_MARC_LEADER_LEN) % 12 != 0)
        return 0;
    size_t n = (base - 1 - H5S_MARC_LEADER_LEN) / 12, dataend = len - 1, area = dataend - base;
    if (n == 0)
        return 0;
    /* The data area first, in one sequential pass: the record is usually not in this
     * core's cache yet, and the directory checks below then find each field's last byte
     * there instead of waiting for memory once per field. */
    unsigned seen = 0;
    if (scan_area(rec + base, area, &seen) != n || (seen & 1u) || rec[len - 1] != H5S_MARC_RT ||
        rec[base - 1] != H5S_MARC_FT)
        return 0;
    size_t next = 0; /* where the next field starts when fields tile the data area */
    int tiled = 1;
    const unsigned char *e = rec + H5S_MARC_LEADER_LEN;
    for (size_t i = 0; i < n; i++, e += 12) {
        /* e[3..10] is one word: the 4 digits of the length and 4 of the start. */
        uint64_t v = digits4x2(e + 3);
        unsigned d11 = (unsigned)e[11] - '0';
        if (!(tag_ok[e[0]] & tag_ok[e[1]] & tag_ok[e[2]]) || v == UINT64_MAX || d11 > 9)
            return 0;
        size_t flen = (size_t)(v & 0xFFFFFFFFu), fstart = (size_t)(v >> 32) * 10 + d11;
        if (flen == 0 || fstart > area || flen > area - fstart)
            return 0;
        const unsigned char *c = rec + base + fstart;
        size_t clen = flen - 1;
        if (c[clen] != H5S_MARC_FT)
            return 0;
        if (e[0] == '0' && e[1] == '0') {
            if (has_sf(c, clen, rec + len))
                return 0;
        } else if (clen < 2 || c[0] == H5S_MARC_SF || c[1] == H5S_MARC_SF ||
                   (clen > 2 && c[2] != H5S_MARC_SF)) {
            return 0;
        }
        tiled &= fstart == next;
        next = fstart + flen;
    }
    if (!tiled || next != area)
        return 0;
    if (rec[9] == 'a' && (seen & 2u) && utf8_check(rec + base, area) != area)
        return 0;
    r->flags = rec[9] == 'a' ? H5S_MARC_F_UTF8 : H5S_MARC_F_MARC8;
    r->n_fields = (uint32_t)n;
    return 1;
}

uint32_t h5s_marc_validate(h5s_marc_report *r, const unsigned char *rec, size_t len, int stop_first)
{
    r->flags = 0;
    r->n_errors = 0;
    r->n_repairs = 0;
    r->n_fields = 0;
    if (clean_record(r, rec, len)) {
#ifndef NDEBUG
        /* Debug builds hold the clean path to the full walk on every record. */
        h5s_marc_report full;
        uint32_t defects = validate_walk(&full, rec, len, 0);
        assert(defects == 0 && full.flags == r->flags && full.n_fields == r->n_fields);
        (void)defects;
#endif
        return 0;
    }
    return validate_walk(r, rec, len, stop_first);
}

/* ------------------------------------------------------------------------- modes */

/* Permissive's criterion: a directory is found and every entry points into the record. */
static int readable(const unsigned char *rec, size_t len)
{
    h5s_marc_iter it;
    if (h5s_marc_iter_init(&it, rec, len) != 0)
        return 0;
    h5s_marc_field f;
    while (h5s_marc_iter_next(&it, &f))
        ;
    return it.skipped == 0 && (it.dirend - H5S_MARC_LEADER_LEN) % 12 == 0;
}

/*
 * Lenient repairs on a copy in out: terminator, base address, directory lengths and
 * starts (from the fields' actual 0x1E terminators, in directory order), leader/10-11,
 * leader/20-23, leader/09 and the record length. Returns 1 when a record came out, 0
 * when the structure cannot be repaired, or a negative error code.
 */
static int repair(h5s_marc_report *r, h5s_marc_buf *out, const unsigned char *rec, size_t len)
{
    if (len < H5S_MARC_LEADER_LEN + 1)
        return 0;
    out->len = 0;
    int rc = h5s_marc_buf_reserve(out, len + 1);
    if (rc)
        return rc;
    unsigned char *w = out->data;
    memcpy(w, rec, len);
    size_t n = len;
    if (w[n - 1] != H5S_MARC_RT) {
        if (w[n - 1] != H5S_MARC_FT)
            return 0; /* cut inside a field: its end is lost */
        w[n++] = H5S_MARC_RT;
        add_repair(r, H5S_MARC_E_RECORD_TERMINATOR, len - 1);
    }
    /* Directory: the leader's base when consistent, else the first 0x1E on a 12-byte step. */
    size_t base = 0, dirend = 0;
    if (digits(w + 12, 5, &base) && base >= H5S_MARC_LEADER_LEN + 1 && base < n &&
        w[base - 1] == H5S_MARC_FT && (base - 1 - H5S_MARC_LEADER_LEN) % 12 == 0) {
        dirend = base - 1;
    } else {
        for (size_t q = H5S_MARC_LEADER_LEN; q < n - 1; q += 12) {
            if (w[q] == H5S_MARC_FT) {
                dirend = q;
                break;
            }
        }
        if (!dirend || dirend + 1 > 99999)
            return 0;
        put_digits(w + 12, 5, dirend + 1);
        add_repair(r, H5S_MARC_E_BASE_BOUNDS, 12);
    }
    size_t data = dirend + 1, dataend = n - 1, entries = (dirend - H5S_MARC_LEADER_LEN) / 12;
    int rebuild = 0;
    for (size_t i = 0; i < entries; i++) {
        const unsigned char *e = w + H5S_MARC_LEADER_LEN + 12 * i;
        size_t flen, fstart;
        if (!is_alnum(e[0]) || !is_alnum(e[1]) || !is_alnum(e[2]))
            return 0;
        if (!digits(e + 3, 4, &flen) || !digits(e + 7, 5, &fstart) || flen == 0 ||
            data + fstart > dataend || flen > dataend - data - fstart ||
            w[data + fstart + flen - 1] != H5S_MARC_FT)
            rebuild = 1;
    }
    if (rebuild) {
        /* Fields are taken to be stored in directory order, each ending at its 0x1E. */
        size_t pos = data;
        for (size_t i = 0; i < entries; i++) {
            if (pos >= dataend)
                return 0;
            const unsigned char *ft = memchr(w + pos, H5S_MARC_FT, dataend - pos);
            if (!ft)
                return 0;
            size_t flen = (size_t)(ft - w) + 1 - pos;
            if (flen > 9999 || pos - data > 99999)
                return 0;
            unsigned char *e = w + H5S_MARC_LEADER_LEN + 12 * i;
            size_t oldlen = 0, oldstart = 0;
            if (!digits(e + 3, 4, &oldlen) || !digits(e + 7, 5, &oldstart) || oldlen != flen ||
                oldstart != pos - data) {
                put_digits(e + 3, 4, flen);
                put_digits(e + 7, 5, pos - data);
                add_repair(r, H5S_MARC_E_DIR_DIGITS, H5S_MARC_LEADER_LEN + 12 * i + 3);
            }
            pos += flen;
        }
        if (pos != dataend)
            return 0; /* more terminated chunks than entries: fields would be lost */
    }
    if (w[10] != '2') {
        w[10] = '2';
        add_repair(r, H5S_MARC_E_INDICATOR_COUNT, 10);
    }
    if (w[11] != '2') {
        w[11] = '2';
        add_repair(r, H5S_MARC_E_SUBFIELD_CODE_COUNT, 11);
    }
    if (memcmp(w + 20, "4500", 4) != 0) {
        memcpy(w + 20, "4500", 4);
        add_repair(r, H5S_MARC_E_ENTRY_MAP, 20);
    }
    if (w[9] != ' ' && w[9] != 'a') {
        size_t span = dataend - data;
        int ascii = 1;
        for (size_t i = data; i < dataend && ascii; i++)
            ascii = w[i] < 0x80;
        w[9] = ascii ? ' ' : (utf8_check(w + data, span) == span ? 'a' : w[9]);
        if (w[9] != ' ' && w[9] != 'a')
            return 0;
        add_repair(r, H5S_MARC_E_CHARSET, 9);
    }
    size_t declared;
    if (!digits(w, 5, &declared) || declared != n) {
        if (n > 99999)
            return 0;
        put_digits(w, 5, n);
        add_repair(r, H5S_MARC_E_LENGTH, 0);
    }
    out->len = n;
    return 1;
}

int h5s_marc_check(h5s_marc_report *report, h5s_marc_buf *repaired, const unsigned char *rec,
                   size_t len, h5s_marc_mode mode)
{
    if (repaired)
        repaired->len = 0;
    if (mode == H5S_MARC_STRICT) {
        if (h5s_marc_validate(report, rec, len, 1) == 0) {
            report->flags |= H5S_MARC_F_ACCEPTED | H5S_MARC_F_READABLE;
            return 1;
        }
        return 0;
    }
    uint32_t n = h5s_marc_validate(report, rec, len, 0);
    if (n == 0) {
        report->flags |= H5S_MARC_F_ACCEPTED | H5S_MARC_F_READABLE;
        return 1;
    }
    if (len >= H5S_MARC_LEADER_LEN + 1 && readable(rec, len))
        report->flags |= H5S_MARC_F_READABLE;
    if (mode == H5S_MARC_PERMISSIVE) {
        if (report->flags & H5S_MARC_F_READABLE) {
            report->flags |= H5S_MARC_F_ACCEPTED;
            return 1;
        }
        return 0;
    }
    if (!repaired)
        return h5s_error_set(H5S_EINVAL, "marc: lenient mode needs a repair buffer");
    int rc = repair(report, repaired, rec, len);
    if (rc < 0)
        return rc;
    if (rc == 0 || report->n_repairs == 0) {
        repaired->len = 0;
        return 0;
    }
    /* What is left after the repairs decides; its defects become the reasons. */
    h5s_marc_report after;
    if (h5s_marc_validate(&after, repaired->data, repaired->len, 0) == 0) {
        report->flags |= H5S_MARC_F_ACCEPTED | H5S_MARC_F_REPAIRED;
        return 1;
    }
    report->n_errors = after.n_errors;
    memcpy(report->errors, after.errors, sizeof(after.errors));
    repaired->len = 0;
    return 0;
}

size_t h5s_marc_report_format(char *buf, size_t cap, const h5s_marc_report *report,
                              const char *path, uint64_t ordinal, uint64_t source_offset,
                              const unsigned char *rec, size_t len)
{
    char id[64];
    if (!h5s_marc_control_number(id, sizeof(id), rec, len))
        strcpy(id, "?");
    int code = report->n_errors ? report->errors[0].code : H5S_MARC_OK;
    uint64_t off = source_offset + (report->n_errors ? report->errors[0].offset : 0);
    int k;
    if (report->n_errors > 1)
        k = snprintf(buf, cap, "%s: record %llu (001 %s) at byte %llu: %s [%s]; +%u more",
                     path ? path : "-", (unsigned long long)ordinal, id, (unsigned long long)off,
                     h5s_marc_error_text(code), h5s_marc_error_name(code), report->n_errors - 1);
    else
        k = snprintf(buf, cap, "%s: record %llu (001 %s) at byte %llu: %s [%s]", path ? path : "-",
                     (unsigned long long)ordinal, id, (unsigned long long)off,
                     h5s_marc_error_text(code), h5s_marc_error_name(code));
    return k < 0 ? 0 : (size_t)k;
}

/* ---------------------------------------------------------------------- accessors */

int h5s_marc_iter_init(h5s_marc_iter *it, const unsigned char *rec, size_t len)
{
    memset(it, 0, sizeof(*it));
    if (!rec || len < H5S_MARC_LEADER_LEN + 1)
        return h5s_error_set(H5S_EFORMAT, "marc: record of %zu bytes has no directory", len);
    size_t dirend;
    if (!locate_directory(rec, len, &dirend))
        return h5s_error_set(H5S_EFORMAT, "marc: byte 24: no directory terminator 0x1E");
    it->rec = rec;
    it->len = len;
    it->dirend = dirend;
    it->base = dirend + 1;
    it->pos = H5S_MARC_LEADER_LEN;
    return 0;
}

int h5s_marc_iter_next(h5s_marc_iter *it, h5s_marc_field *out)
{
    while (it->rec && it->pos + 12 <= it->dirend) {
        const unsigned char *e = it->rec + it->pos;
        it->pos += 12;
        size_t flen, fstart;
        if (!digits(e + 3, 4, &flen) || !digits(e + 7, 5, &fstart) || flen == 0 ||
            it->base + fstart > it->len || flen > it->len - it->base - fstart) {
            it->skipped++;
            continue;
        }
        memcpy(out->tag, e, 3);
        out->tag[3] = '\0';
        const unsigned char *d = it->rec + it->base + fstart;
        size_t n = flen;
        if (d[n - 1] == H5S_MARC_FT || d[n - 1] == H5S_MARC_RT)
            n--;
        out->data = d;
        out->len = n;
        out->control = e[0] == '0' && e[1] == '0';
        out->ind1 = n > 0 ? d[0] : ' ';
        out->ind2 = n > 1 ? d[1] : ' ';
        out->subfields = n > 2 ? d + 2 : d + n;
        out->subfields_len = n > 2 ? n - 2 : 0;
        return 1;
    }
    return 0;
}

int h5s_marc_subfield_next(const h5s_marc_field *field, size_t *pos, h5s_marc_subfield *out)
{
    const unsigned char *s = field->subfields;
    size_t n = field->subfields_len, i = *pos;
    for (;;) {
        const unsigned char *sf = i < n ? memchr(s + i, H5S_MARC_SF, n - i) : NULL;
        if (!sf || (size_t)(sf - s) + 1 >= n) {
            *pos = n;
            return 0;
        }
        i = (size_t)(sf - s) + 1;
        if (s[i] == H5S_MARC_SF)
            continue; /* a delimiter with no code */
        const unsigned char *next = memchr(s + i + 1, H5S_MARC_SF, n - i - 1);
        size_t end = next ? (size_t)(next - s) : n;
        out->code = s[i];
        out->data = s + i + 1;
        out->len = end - i - 1;
        *pos = end;
        return 1;
    }
}

int h5s_marc_find(const unsigned char *rec, size_t len, const char *tag, h5s_marc_field *out)
{
    h5s_marc_iter it;
    if (h5s_marc_iter_init(&it, rec, len) != 0) {
        h5s_error_clear();
        return 0;
    }
    while (h5s_marc_iter_next(&it, out)) {
        if (memcmp(out->tag, tag, 3) == 0)
            return 1;
    }
    return 0;
}

size_t h5s_marc_leader(char out[25], const unsigned char *rec, size_t len)
{
    size_t n = len < H5S_MARC_LEADER_LEN ? len : H5S_MARC_LEADER_LEN;
    memset(out, ' ', H5S_MARC_LEADER_LEN);
    if (n)
        memcpy(out, rec, n);
    out[H5S_MARC_LEADER_LEN] = '\0';
    return n;
}

static size_t copy_trimmed(char *out, size_t cap, const unsigned char *p, size_t n)
{
    while (n && p[0] == ' ') {
        p++;
        n--;
    }
    while (n && p[n - 1] == ' ')
        n--;
    if (cap == 0)
        return 0;
    if (n > cap - 1)
        n = cap - 1;
    memcpy(out, p, n);
    out[n] = '\0';
    return n;
}

size_t h5s_marc_control_number(char *out, size_t cap, const unsigned char *rec, size_t len)
{
    h5s_marc_field f;
    if (cap)
        out[0] = '\0';
    if (!h5s_marc_find(rec, len, "001", &f))
        return 0;
    return copy_trimmed(out, cap, f.data, f.len);
}

size_t h5s_marc_title(char *out, size_t cap, const unsigned char *rec, size_t len)
{
    h5s_marc_field f;
    h5s_marc_subfield s;
    size_t pos = 0;
    if (cap)
        out[0] = '\0';
    if (!h5s_marc_find(rec, len, "245", &f))
        return 0;
    while (h5s_marc_subfield_next(&f, &pos, &s)) {
        if (s.code == 'a')
            return copy_trimmed(out, cap, s.data, s.len);
    }
    return 0;
}
