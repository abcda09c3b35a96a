#!/usr/bin/python3
"""test_cross_reader.py - every codec and dtype, read back bit-exactly by independent readers.

DESIGN.md sections 2 and 7: the writer stores pre-filtered chunks with H5Dwrite_chunk, so
any HDF5 reader must decode them with the standard filters (deflate and shuffle built into
HDF5; Blosc = filter 32001 with hdf5-blosc's cd_values). For each codec x dtype this test
writes 5 sim:ramp frames of 16x24 with the CLI and checks:
  - h5py (with `import hdf5plugin`) reads the exact expected values, dtype and shape;
  - h5dump (hdf5-tools, finding the Blosc plugin in HDF5's default plugin folder) exits 0
    and its `-b LE` binary output is byte for byte the expected little-endian ramp;
  - h5dump -pH shows the expected datatype, dataspace (unlimited along frames), chunk
    shape and filter pipeline: SHUFFLE and DEFLATE { LEVEL L } in that order, or
    FILTER_ID 32001 with PARAMS[2..6] = typesize, chunk bytes, level, shuffle, compressor
    (hdf5-blosc's cd_values layout).
The short forms `deflate` and `blosc` are checked for their filter only (their defaults
are not part of docs/cli.md). Extra rows use 2 or 3 frames per chunk (a partial last band)
and tiles, some of which do not divide the frame (partial edge chunks).
"""

import os
import re
import subprocess

import numpy as np

import h5py
import hdf5plugin  # noqa: F401  (Blosc decoding in h5py)

import h5s_scriptlib as lib

FRAMES = 5
SHAPE = (16, 24)

CODECS = [
    "none",
    "deflate", "blosc",  # short forms: only the filter is checked, not its defaults
    "deflate:4:noshuffle", "deflate:1", "deflate:9", "deflate:4:shuffle",
    "blosc:blosclz:5:shuffle", "blosc:lz4:0:noshuffle", "blosc:lz4:9:bitshuffle",
    "blosc:lz4hc:9:shuffle", "blosc:zlib:1:bitshuffle", "blosc:zstd:9:noshuffle",
    "blosc:zstd:3:shuffle",
]
DTYPES = ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32",
          "float64"]
# (codec, dtype, frames per chunk, tile): bands and tiles, with a partial last band; the
# last rows use tiles that do not divide the 16x24 frame (partial edge chunks).
LAYOUT_ROWS = [
    ("none", "float64", 2, (8, 12)),
    ("deflate:4:shuffle", "int32", 2, (16, 12)),
    ("blosc:lz4:5:bitshuffle", "uint16", 2, (8, 12)),
    ("blosc:zstd:1:shuffle", "int16", 2, (4, 24)),
    ("none", "uint8", 2, (5, 7)),
    ("deflate:6:shuffle", "float32", 3, (10, 10)),
    ("blosc:lz4:5:shuffle", "uint16", 2, (5, 7)),
    ("blosc:blosclz:9:bitshuffle", "int64", 1, (7, 11)),
]

H5_TYPE = {"int8": "H5T_STD_I8LE", "uint8": "H5T_STD_U8LE", "int16": "H5T_STD_I16LE",
           "uint16": "H5T_STD_U16LE", "int32": "H5T_STD_I32LE", "uint32": "H5T_STD_U32LE",
           "int64": "H5T_STD_I64LE", "uint64": "H5T_STD_U64LE", "float32": "H5T_IEEE_F32LE",
           "float64": "H5T_IEEE_F64LE"}
BLOSC_COMPRESSOR = {"blosclz": 0, "lz4": 1, "lz4hc": 2, "snappy": 3, "zlib": 4, "zstd": 5}
BLOSC_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}

# h5dump -pH filter lines, in pipeline order.
FILTER_RE = re.compile(r"PREPROCESSING SHUFFLE|COMPRESSION DEFLATE \{ LEVEL (\d+) \}|"
                       r"FILTER_ID (\d+)\s+COMMENT \S+\s+PARAMS \{([\d ]*)\}|"
                       r"PREPROCESSING \w+|COMPRESSION \w+|FILTER_ID \d+")


def expected_filters(codec, dtype, chunk):
    """The pipeline h5dump should show: a list of ("shuffle",) ("deflate", L) ("blosc", p)."""
    parts = codec.split(":")
    if parts[0] == "none":
        return []
    if len(parts) == 1:  # a short form: the filter, with whatever defaults
        return [(parts[0], ANY)]
    if parts[0] == "deflate":
        level = int(parts[1])
        shuffle = len(parts) > 2 and parts[2] == "shuffle"
        return ([("shuffle",)] if shuffle else []) + [("deflate", level)]
    cname, level, shuffle = parts[1], int(parts[2]), parts[3]
    chunk_bytes = int(np.prod(chunk)) * np.dtype(dtype).itemsize
    return [("blosc", [np.dtype(dtype).itemsize, chunk_bytes, level, BLOSC_SHUFFLE[shuffle],
                       BLOSC_COMPRESSOR[cname]])]


class AnyValue:
    """Equal to anything: the parameters of a short-form codec are not checked."""

    def __eq__(self, other):
        return True

    def __repr__(self):
        return "any"


ANY = AnyValue()


def filters_in(header):
    """The filter pipeline of an h5dump -pH listing, in the form of expected_filters()."""
    block = re.search(r"FILTERS \{(.*?)\n\s*\}\n\s*FILLVALUE", header, re.S)
    if not block:
        return None
    seen = []
    for m in FILTER_RE.finditer(block.group(1)):
        text = m.group(0)
        if text == "PREPROCESSING SHUFFLE":
            seen.append(("shuffle",))
        elif m.group(1) is not None:
            seen.append(("deflate", int(m.group(1))))
        elif m.group(2) == "32001":
            params = [int(x) for x in m.group(3).split()]
            seen.append(("blosc", params[2:7]))
        else:
            seen.append(("other", text))
    return seen


def h5dump_env():
    """h5dump must find the Blosc plugin in HDF5's default folder, not through our env."""
    env = dict(os.environ)
    env.pop("HDF5_PLUGIN_PATH", None)
    return env


def write_file(p, out_dir, codec, dtype, fpc, tile):
    """Writes the ramp file with the CLI; the defaults (k=1, whole frame) are left implicit."""
    layout = "" if (fpc, tile) == (1, SHAPE) else "_k%d_%dx%d" % ((fpc,) + tile)
    path = os.path.join(out_dir, "%s_%s%s.h5" % (codec.replace(":", "-"), dtype, layout))
    cmd = [p.bin, "ingest", "frames", "sim:ramp", "--shape", "%dx%d" % SHAPE, "--dtype", dtype,
           "-n", str(FRAMES), "--compress", codec, "-q", "-o", path]
    if layout:
        cmd += ["--frames-per-chunk", str(fpc), "--tile", "%dx%d" % tile]
    run = subprocess.run(cmd, capture_output=True, timeout=60)
    return path, run


def check_h5py(checks, label, path, dtype):
    """h5py (with hdf5plugin) reads the expected dtype, shape and bytes."""
    expected = lib.ramp_frames(0, FRAMES, SHAPE, dtype)
    try:
        with h5py.File(path, "r") as f:
            seen = f[lib.DATA_PATH][()]
    except (OSError, KeyError) as e:
        return checks.check("%s: h5py reads the frames" % label, False, "h5py failed: %s" % e)
    if seen.dtype != expected.dtype.newbyteorder("<") or seen.shape != expected.shape:
        return checks.check("%s: h5py reads the frames" % label, False,
                            "expected %s %s, seen %s %s" % (expected.dtype, expected.shape,
                                                            seen.dtype, seen.shape))
    same = seen.astype(seen.dtype.newbyteorder("<")).tobytes() == \
        lib.ramp_le_bytes(0, FRAMES, SHAPE, dtype)
    return checks.check("%s: h5py reads the exact frames" % label, same,
                        "" if same else lib.first_mismatch(seen, expected) or "bytes differ")


def check_h5dump_binary(checks, label, path, dtype):
    """h5dump -b LE exits 0 and writes exactly the expected little-endian bytes."""
    out = path + ".bin"
    run = subprocess.run(["h5dump", "-d", lib.DATA_PATH, "-b", "LE", "-o", out, path],
                         capture_output=True, timeout=60, env=h5dump_env())
    if run.returncode != 0 or not os.path.exists(out):
        return checks.check("%s: h5dump -b LE reads the frames" % label, False,
                            "expected exit 0, seen %d: %s" % (
                                run.returncode, run.stderr.decode(errors="replace").strip()))
    with open(out, "rb") as f:
        seen = f.read()
    expected = lib.ramp_le_bytes(0, FRAMES, SHAPE, dtype)
    detail = ""
    if seen != expected:
        le = np.dtype(dtype).newbyteorder("<")
        if len(seen) != len(expected):
            detail = "expected %d bytes, seen %d" % (len(expected), len(seen))
        else:
            detail = lib.first_mismatch(np.frombuffer(seen, le).reshape((FRAMES,) + SHAPE),
                                        np.frombuffer(expected, le).reshape((FRAMES,) + SHAPE))
    return checks.check("%s: h5dump -b LE bytes == expected ramp" % label, not detail, detail)


def check_h5dump_header(checks, label, path, codec, dtype, chunk):
    """h5dump -pH exits 0 and shows the datatype, dataspace, chunk shape and filters."""
    run = subprocess.run(["h5dump", "-pH", "-d", lib.DATA_PATH, path], capture_output=True,
                         timeout=60, env=h5dump_env())
    header = run.stdout.decode(errors="replace")
    problems = []
    if run.returncode != 0:
        problems.append("exit %d: %s" % (run.returncode,
                                          run.stderr.decode(errors="replace").strip()))
    if "DATATYPE  %s" % H5_TYPE[dtype] not in header:
        problems.append("expected DATATYPE %s, seen %s" % (
            H5_TYPE[dtype], re.findall(r"DATATYPE\s+(\S+)", header)))
    space = "SIMPLE { ( %d, %d, %d ) / ( H5S_UNLIMITED, %d, %d ) }" % ((FRAMES,) + SHAPE + SHAPE)
    if space not in header:
        problems.append("expected DATASPACE %s, seen %s" % (
            space, re.findall(r"DATASPACE\s+(.*)", header)))
    chunked = "CHUNKED ( %s )" % ", ".join(str(c) for c in chunk)
    if chunked not in header:
        problems.append("expected %s, seen %s" % (chunked, re.findall(r"CHUNKED \(.*?\)", header)))
    want, seen = expected_filters(codec, dtype, chunk), filters_in(header)
    if want != seen:
        problems.append("expected filters %s, seen %s" % (want, seen))
    return checks.check("%s: h5dump -pH type, space, chunk and filters" % label, not problems,
                        "; ".join(problems) if problems else
                        " + ".join(describe_filter(f) for f in want) or "no filter")


def describe_filter(f):
    if len(f) > 1 and f[1] is ANY:
        return f[0].upper()
    if f[0] == "deflate":
        return "DEFLATE level %d" % f[1]
    if f[0] == "blosc":
        return "Blosc typesize %d, chunk %d B, level %d, shuffle %d, compressor %d" % tuple(f[1])
    return f[0].upper()


def check_one(checks, p, out_dir, codec, dtype, fpc=1, tile=SHAPE):
    layout = "" if (fpc, tile) == (1, SHAPE) else " k=%d tile %dx%d" % ((fpc,) + tile)
    label = "%s %s%s" % (codec, dtype, layout)
    path, run = write_file(p, out_dir, codec, dtype, fpc, tile)
    if not checks.equal("%s: ingest exit status" % label, run.returncode, 0,
                        "stderr: %s" % run.stderr.decode(errors="replace").strip()
                        if run.returncode else ""):
        return
    chunk = (fpc,) + tuple(tile)
    check_h5py(checks, label, path, dtype)
    check_h5dump_binary(checks, label, path, dtype)
    check_h5dump_header(checks, label, path, codec, dtype, chunk)


def main(checks, p):
    out_dir = p.fresh_dir("cross_reader")
    for codec in CODECS:
        for dtype in DTYPES:
            check_one(checks, p, out_dir, codec, dtype)
    for codec, dtype, fpc, tile in LAYOUT_ROWS:
        check_one(checks, p, out_dir, codec, dtype, fpc, tile)


if __name__ == "__main__":
    lib.run_main(main)
