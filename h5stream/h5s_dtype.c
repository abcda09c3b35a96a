/* h5s_dtype.c - element type names and sizes. */
#include <stdint.h>
#include <string.h>

#include "h5s_error.h"
#include "h5s_types.h"

static const struct {
    h5s_dtype dtype;
    size_t size;
    const char *name;
    const char *code; /* numpy kind + size */
} dtypes[] = {
    {H5S_INT8, 1, "int8", "i1"},       {H5S_UINT8, 1, "uint8", "u1"},
    {H5S_INT16, 2, "int16", "i2"},     {H5S_UINT16, 2, "uint16", "u2"},
    {H5S_INT32, 4, "int32", "i4"},     {H5S_UINT32, 4, "uint32", "u4"},
    {H5S_INT64, 8, "int64", "i8"},     {H5S_UINT64, 8, "uint64", "u8"},
    {H5S_FLOAT32, 4, "float32", "f4"}, {H5S_FLOAT64, 8, "float64", "f8"},
    {H5S_FLOAT16, 2, "float16", "f2"},
};

size_t h5s_dtype_size(h5s_dtype dtype)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (dtypes[i].dtype == dtype)
            return dtypes[i].size;
    return 0;
}

const char *h5s_dtype_name(h5s_dtype dtype)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (dtypes[i].dtype == dtype)
            return dtypes[i].name;
    return "invalid";
}

int h5s_dtype_parse(h5s_dtype *out, const char *name)
{
    if (!out || !name)
        return h5s_error_set(H5S_EINVAL, "dtype: no name given");
    const char *s = name[0] == '<' ? name + 1 : name;
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++) {
        if (strcmp(s, dtypes[i].name) == 0 || strcmp(s, dtypes[i].code) == 0) {
            *out = dtypes[i].dtype;
            return 0;
        }
    }
    return h5s_error_set(H5S_EINVAL,
                         "unknown dtype '%s' (expected int8..int64, uint8..uint64, float16, "
                         "float32, float64)",
                         name);
}

uint16_t h5s_half_from_float(float value)
{
    uint32_t x;
    memcpy(&x, &value, sizeof x);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t exp = (x >> 23) & 0xffu, mant = x & 0x7fffffu;
    if (exp == 0xff) /* infinity, or NaN with a mantissa bit kept set */
        return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u | (mant >> 13) : 0));
    int e = (int)exp - 127 + 15;
    if (e >= 31)
        return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) {
        if (e < -10)
            return sign;   /* below half the smallest subnormal: signed zero */
        mant |= 0x800000u; /* the implicit bit, then shift into a subnormal */
        unsigned shift = (unsigned)(14 - e);
        uint32_t half = mant >> shift, rest = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rest > mid || (rest == mid && (half & 1u)))
            half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = ((uint32_t)e << 10) | (mant >> 13), rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u)))
        half++; /* a carry into the exponent is right, up to infinity */
    return (uint16_t)(sign | half);
}

float h5s_half_to_float(uint16_t half)
{
    uint32_t sign = (uint32_t)(half & 0x8000u) << 16;
    uint32_t exp = (half >> 10) & 0x1fu, mant = half & 0x3ffu, x;
    if (exp == 0x1f) {
        x = sign | 0x7f800000u | (mant << 13);
    } else if (exp != 0) {
        x = sign | ((exp - 15 + 127) << 23) | (mant << 13);
    } else if (mant == 0) {
        x = sign;
    } else { /* subnormal: normalise */
        int e = -1;
        do {
            mant <<= 1;
            e++;
        } while (!(mant & 0x400u));
        x = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &x, sizeof f);
    return f;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define H5S_HAVE_F16C_PATH 1

__attribute__((target("avx,f16c"))) static void from_float_f16c(uint16_t *dst, const float *src,
                                                                size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(src + i);
        _mm_storeu_si128((__m128i *)(void *)(dst + i),
                         _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
    }
    for (; i < n; i++)
        dst[i] = h5s_half_from_float(src[i]);
}

__attribute__((target("avx,f16c"))) static void to_float_f16c(float *dst, const uint16_t *src,
                                                              size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(src + i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(v));
    }
    for (; i < n; i++)
        dst[i] = h5s_half_to_float(src[i]);
}

/* F16C and AVX (CPUID leaf 1, ECX), with the OS saving the YMM registers (OSXSAVE, then
 * XCR0 bits 1 and 2). __builtin_cpu_supports("f16c") says the same on gcc, but clang 14,
 * which the fuzzing build uses, does not know that name. */
static int have_f16c(void)
{
    static int known = -1;
    if (known < 0) {
        unsigned a, b, c, d, xcr0_lo, xcr0_hi;
        int ok =
            __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) && (c & bit_AVX) && (c & bit_OSXSAVE);
        if (ok) {
            __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
            ok = (xcr0_lo & 6u) == 6u;
        }
        known = ok;
    }
    return known;
}
#endif

void h5s_half_from_float_n(uint16_t *dst, const float *src, size_t n)
{
#ifdef H5S_HAVE_F16C_PATH
    if (have_f16c()) {
        from_float_f16c(dst, src, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++)
        dst[i] = h5s_half_from_float(src[i]);
}

void h5s_half_to_float_n(float *dst, const uint16_t *src, size_t n)
{
#ifdef H5S_HAVE_F16C_PATH
    if (have_f16c()) {
        to_float_f16c(dst, src, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++)
        dst[i] = h5s_half_to_float(src[i]);
}
