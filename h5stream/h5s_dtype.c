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
