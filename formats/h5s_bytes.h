/*
 * h5s_bytes.h - private to formats/: byte order of the fields' files. TCK, TRK and NIfTI
 * come in either endianness; TRX, ISO 2709 lengths and HDF5's data are little-endian.
 */
#ifndef H5S_BYTES_H
#define H5S_BYTES_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Reverses the bytes of each of the n elements of width bytes (2, 4 or 8) in buf. */
void h5s_bytes_swap(void *buf, size_t n, size_t width);

/* 1 when this machine is little-endian. */
static inline int h5s_bytes_host_le(void)
{
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

static inline uint32_t h5s_bytes_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t h5s_bytes_le64(const unsigned char *p)
{
    return (uint64_t)h5s_bytes_le32(p) | (uint64_t)h5s_bytes_le32(p + 4) << 32;
}

#endif
