/*
 * h5s_types.h - definitions shared by every part of h5stream: version, error codes,
 * element types and codec settings.
 *
 * This header holds plain definitions only. filters/, h5stream/ and readers/ all include
 * it; it includes nothing of theirs.
 */
#ifndef H5S_TYPES_H
#define H5S_TYPES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define H5S_VERSION_MAJOR 0
#define H5S_VERSION_MINOR 1
#define H5S_VERSION_PATCH 0
#define H5S_VERSION_STRING "0.1.0"

/* On-disk layout version, stored in the root attribute "h5stream_format_version". */
#define H5S_FORMAT_NAME "h5stream"
#define H5S_FORMAT_VERSION 1

/*
 * Error codes. Every function that can fail returns 0 or one of these; the detailed
 * message of the last failure of the calling thread is h5s_error_message().
 * X(name, value, short text)
 */
#define H5S_ERROR_TABLE(X)                                                                         \
    X(H5S_OK, 0, "success")                                                                        \
    X(H5S_EINVAL, -1, "invalid argument")                                                          \
    X(H5S_ENOMEM, -2, "out of memory")                                                             \
    X(H5S_EAGAIN, -3, "try again: queue full or nothing new yet")                                  \
    X(H5S_EIO, -4, "I/O error")                                                                    \
    X(H5S_EFORMAT, -5, "file or data is not in the expected format")                               \
    X(H5S_ENOTFOUND, -6, "not found")                                                              \
    X(H5S_ESTATE, -7, "call not allowed in the current state")                                     \
    X(H5S_ETIMEDOUT, -8, "timed out")                                                              \
    X(H5S_ECODEC, -9, "codec error")                                                               \
    X(H5S_ERANGE, -10, "index out of range")

typedef enum {
#define H5S_X_ENUM(name, value, text) name = value,
    H5S_ERROR_TABLE(H5S_X_ENUM)
#undef H5S_X_ENUM
} h5s_error_code;

/*
 * Returns the fixed short text of an error code ("invalid argument"); never NULL.
 * Thread-safe.
 */
const char *h5s_strerror(int code);

/*
 * Returns the detailed message of the last error raised on the calling thread (it names
 * the file, dataset, item index or byte offset where one applies), or "" if none.
 * The string is borrowed and stays valid until the next h5s_ call on this thread.
 * Thread-safe: each thread has its own message.
 */
const char *h5s_error_message(void);

/*
 * Element types of frames, streamline positions and per-item values. Values are
 * little-endian on disk. H5S_FLOAT16 is IEEE 754 binary16 (numpy float16); it was added
 * for TRX positions and keeps the enum's earlier values.
 */
typedef enum {
    H5S_DTYPE_INVALID = 0,
    H5S_INT8,
    H5S_UINT8,
    H5S_INT16,
    H5S_UINT16,
    H5S_INT32,
    H5S_UINT32,
    H5S_INT64,
    H5S_UINT64,
    H5S_FLOAT32,
    H5S_FLOAT64,
    H5S_FLOAT16
} h5s_dtype;

/* Size of one element in bytes, or 0 for H5S_DTYPE_INVALID. Thread-safe. */
size_t h5s_dtype_size(h5s_dtype dtype);

/* numpy-style name ("uint16", "float32"); "invalid" for an unknown value. Thread-safe. */
const char *h5s_dtype_name(h5s_dtype dtype);

/*
 * Parses a numpy-style name ("int8" ... "uint64", "float16", "float32", "float64"; "f4",
 * "u2" and "<u2" are accepted too). Returns 0, or H5S_EINVAL with a message for an
 * unknown name.
 */
int h5s_dtype_parse(h5s_dtype *out, const char *name);

/*
 * IEEE 754 binary16 <-> binary32. h5s_half_from_float rounds to nearest even, overflows
 * to infinity and keeps NaN a NaN; h5s_half_to_float is exact. Thread-safe.
 */
uint16_t h5s_half_from_float(float value);
float h5s_half_to_float(uint16_t half);

/* The same over arrays of n values (F16C instructions when the CPU has them; the results
 * are identical either way). Thread-safe. */
void h5s_half_from_float_n(uint16_t *dst, const float *src, size_t n);
void h5s_half_to_float_n(float *dst, const uint16_t *src, size_t n);

/* Chunk codecs. Bytes written with any of them decode with HDF5's standard filters. */
typedef enum {
    H5S_CODEC_NONE = 0,
    H5S_CODEC_DEFLATE, /* HDF5 filter 1 (zlib), optional byte shuffle (filter 2) before it */
    H5S_CODEC_BLOSC    /* HDF5 filter 32001, hdf5-blosc's cd_values layout */
} h5s_codec_kind;

typedef enum {
    H5S_SHUFFLE_NONE = 0, /* same values as Blosc's BLOSC_NOSHUFFLE/SHUFFLE/BITSHUFFLE */
    H5S_SHUFFLE_BYTE = 1,
    H5S_SHUFFLE_BIT = 2 /* Blosc only */
} h5s_shuffle;

/* Blosc compressor codes, the same numbers as blosc.h's BLOSC_*_FORMAT/compcode. */
typedef enum {
    H5S_BLOSC_BLOSCLZ = 0,
    H5S_BLOSC_LZ4 = 1,
    H5S_BLOSC_LZ4HC = 2,
    H5S_BLOSC_ZLIB = 4,
    H5S_BLOSC_ZSTD = 5
} h5s_blosc_compressor;

typedef struct {
    h5s_codec_kind kind;
    int level;           /* deflate 1-9, Blosc 0-9 */
    h5s_shuffle shuffle; /* deflate: NONE or BYTE; Blosc: any */
    h5s_blosc_compressor blosc_compressor;
} h5s_codec;

/* No compression. */
#define H5S_CODEC_INIT                                                                             \
    {                                                                                              \
        H5S_CODEC_NONE, 0, H5S_SHUFFLE_NONE, H5S_BLOSC_LZ4                                         \
    }

#ifdef __cplusplus
}
#endif
#endif /* H5S_TYPES_H */
