/*
 * h5s_codec.h - chunk codecs: parse a codec spec, declare its HDF5 filter pipeline on a
 * dataset creation property list, and encode whole chunks exactly as the registered
 * HDF5 filters would, so that H5Dwrite_chunk can store them and any HDF5 reader decodes
 * them with the standard filters.
 *
 * Depends on nothing else in h5stream except the shared definitions (h5s_types.h) and
 * error messages (h5s_error.h).
 */
#ifndef H5S_CODEC_H
#define H5S_CODEC_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include "h5s_types.h"

/* HDF5 filter id of Blosc (hdf5-blosc, registered with The HDF Group). */
#define H5S_FILTER_BLOSC 32001

/*
 * Registers the Blosc filter (hdf5-blosc's register_blosc) with HDF5 once per process.
 * Returns 0, or H5S_ECODEC if HDF5 refuses it. Thread-safe; later calls are no-ops.
 */
int h5s_filters_init(void);

/*
 * Parses a codec spec as given to --compress:
 *   none
 *   deflate[:LEVEL[:shuffle|noshuffle]]            LEVEL 1-9, default 4, noshuffle
 *   blosc[:CODEC[:LEVEL[:shuffle|bitshuffle|noshuffle]]]
 *        CODEC blosclz|lz4|lz4hc|zlib|zstd (default blosclz), LEVEL 0-9 (default 5),
 *        default shuffle (hdf5-blosc's defaults)
 * Returns 0, or H5S_EINVAL with a message naming the bad part. Thread-safe.
 */
int h5s_codec_parse(h5s_codec *out, const char *spec);

/* Writes the canonical spec of c ("blosc:lz4:5:shuffle") into buf. Returns 0 or
 * H5S_EINVAL if it does not fit or c is invalid. Thread-safe. */
int h5s_codec_format(const h5s_codec *c, char *buf, size_t bufsize);

/* Checks ranges and combinations (bitshuffle is Blosc-only). 0 or H5S_EINVAL. */
int h5s_codec_validate(const h5s_codec *c);

/*
 * Adds c's filters to a dataset creation property list: nothing for none; shuffle (if
 * asked) then deflate for deflate; filter 32001 with cd_values {0,0,0,0, level, shuffle,
 * compressor} for Blosc (hdf5-blosc's set_local fills the first four at H5Dcreate).
 * Calls h5s_filters_init. Returns 0, or H5S_ECODEC/H5S_EINVAL.
 */
int h5s_codec_set_dcpl(hid_t dcpl, const h5s_codec *c);

/*
 * The inverse of h5s_codec_set_dcpl: reads a dataset creation property list's filter
 * pipeline back as a codec. Recognises exactly the pipelines h5stream writes: none,
 * deflate, shuffle then deflate, and Blosc (cd_values[4..6]; absent ones take
 * hdf5-blosc's defaults: level 5, byte shuffle, blosclz).
 * Returns 0, or H5S_EFORMAT for any other pipeline (the message lists its filters).
 * Thread-safe.
 */
int h5s_codec_from_dcpl(h5s_codec *out, hid_t dcpl);

/*
 * Largest number of bytes h5s_codec_encode can produce for nbytes of input.
 */
size_t h5s_codec_bound(const h5s_codec *c, size_t nbytes);

/*
 * Encodes one whole chunk (nbytes of elements of typesize bytes, C order) as HDF5's
 * filter pipeline declared by h5s_codec_set_dcpl would:
 * - none: copies;
 * - deflate: HDF5's byte shuffle (if on) then zlib compress2 at the level;
 * - Blosc: blosc_compress_ctx with hdf5-blosc's arguments (destination size = nbytes);
 *   when Blosc cannot compress into nbytes the raw bytes are stored and bit 0 of the
 *   filter mask is set, exactly as HDF5 does for a failing optional filter.
 * dst: dstcap >= h5s_codec_bound(c, nbytes) bytes. scratch: nbytes bytes, used for
 * the deflate shuffle (may be NULL otherwise).
 * out_size: bytes written to dst; out_filter_mask: the mask to pass to H5Dwrite_chunk.
 * Returns 0, or H5S_ECODEC with the compressor's status. Thread-safe (no global state).
 */
int h5s_codec_encode(const h5s_codec *c, size_t typesize, const void *src, size_t nbytes, void *dst,
                     size_t dstcap, void *scratch, size_t *out_size, uint32_t *out_filter_mask);

/*
 * Decodes a chunk produced by h5s_codec_encode (or read with H5Dread_chunk) back to
 * nbytes raw bytes in dst. For tests and tools; HDF5 readers do not need it.
 * Returns 0, or H5S_ECODEC/H5S_EFORMAT if the bytes are not a valid encoding.
 */
int h5s_codec_decode(const h5s_codec *c, size_t typesize, const void *src, size_t srcsize,
                     uint32_t filter_mask, void *dst, size_t nbytes);

#endif
