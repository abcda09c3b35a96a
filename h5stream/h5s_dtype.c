/* h5s_dtype.c - element type names and sizes. */
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
                         "unknown dtype '%s' (expected int8..int64, uint8..uint64, float32, "
                         "float64)",
                         name);
}
