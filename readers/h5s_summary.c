/* h5s_summary.c - min/max/mean/crc32 of one frame, as `h5stream tail` prints them. */
#include <math.h>
#include <string.h>
#include <zlib.h>

#include "h5s_error.h"
#include "h5s_reader.h"

/* Frames are little-endian whatever the host; assembling bytes keeps that explicit and
 * compiles to plain loads on little-endian machines. */
static uint64_t load_le(const unsigned char *p, size_t size)
{
    uint64_t v = 0;
    for (size_t i = 0; i < size; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static double element(const unsigned char *p, h5s_dtype dtype)
{
    switch (dtype) {
    case H5S_INT8:
        return (double)(int8_t)p[0];
    case H5S_UINT8:
        return (double)p[0];
    case H5S_INT16:
        return (double)(int16_t)(uint16_t)load_le(p, 2);
    case H5S_UINT16:
        return (double)(uint16_t)load_le(p, 2);
    case H5S_INT32:
        return (double)(int32_t)(uint32_t)load_le(p, 4);
    case H5S_UINT32:
        return (double)(uint32_t)load_le(p, 4);
    case H5S_INT64:
        return (double)(int64_t)load_le(p, 8);
    case H5S_UINT64:
        return (double)load_le(p, 8);
    case H5S_FLOAT32: {
        uint32_t bits = (uint32_t)load_le(p, 4);
        float f;
        memcpy(&f, &bits, sizeof f);
        return (double)f;
    }
    case H5S_FLOAT64: {
        uint64_t bits = load_le(p, 8);
        double d;
        memcpy(&d, &bits, sizeof d);
        return d;
    }
    default:
        return NAN;
    }
}

int h5s_frame_summarize(h5s_frame_summary *out, const void *frame, const h5s_frame_shape *shape)
{
    if (!out || !frame || !shape)
        return h5s_error_set(H5S_EINVAL, "h5s_frame_summarize: NULL argument");
    size_t size = h5s_dtype_size(shape->dtype);
    if (size == 0)
        return h5s_error_set(H5S_EINVAL, "h5s_frame_summarize: invalid dtype %d",
                             (int)shape->dtype);
    const unsigned char *p = frame;
    size_t n = shape->frame_bytes / size;
    double lo = INFINITY, hi = -INFINITY;
    /* long double keeps the mean of large integer frames exact enough that it agrees with
     * numpy's float64 mean to the printed digits. */
    long double sum = 0;
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        double v = element(p + i * size, shape->dtype);
        if (isnan(v))
            continue;
        if (v < lo)
            lo = v;
        if (v > hi)
            hi = v;
        sum += v;
        used++;
    }
    if (used == 0) {
        out->min = out->max = out->mean = NAN;
    } else {
        out->min = lo;
        out->max = hi;
        out->mean = (double)(sum / (long double)used);
    }
    out->crc32 = (uint32_t)crc32_z(crc32_z(0L, Z_NULL, 0), p, shape->frame_bytes);
    return 0;
}
