#!/usr/bin/python3
"""Makes the seed corpora of the fuzz targets (tests/fuzz/corpus/<target>/) from the real
files of ../shared/data, small enough that ctest replays them fast in every build. Each
seed's origin is listed in tests/data/SOURCES.md. Run from anywhere with the system Python
(numpy, h5py):  /usr/bin/python3 tests/fuzz/make_seeds.py [SHARED_DATA]

Regression inputs (crash-*) are not made here: they are committed as found.
"""
import gzip
import io
import json
import os
import shutil
import struct
import sys
import zipfile

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
DATA = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "..", "shared", "data")


def out(target, name, data):
    folder = os.path.join(CORPUS, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def read(*parts):
    with open(os.path.join(DATA, *parts), "rb") as f:
        return f.read()


# ---- TCK and TRK: the nibabel test files, copied whole (all are a few KB) ----
for name in sorted(os.listdir(os.path.join(DATA, "tracts"))):
    if name.endswith(".tck"):
        out("fuzz_tck", name, read("tracts", name))
    elif name.endswith(".trk"):
        out("fuzz_trk", name, read("tracts", name))

# ---- TRX: the two archives cut to their first streamlines ----


def cut_trx(src, ns, sentinel, compression):
    """The first ns streamlines of a TRX archive: every entry cut to them, group indices
    taken modulo ns, header counts updated; written with or without the final offset."""
    z = zipfile.ZipFile(os.path.join(DATA, "tracts", src))
    header = json.loads(z.read("header.json"))
    offsets = np.frombuffer(z.read("offsets.uint64"), "<u8")
    nv = int(offsets[ns])
    header["NB_STREAMLINES"] = ns
    header["NB_VERTICES"] = nv
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as o:
        def put(name, data):  # a fixed date, so the seeds are the same on every run
            o.writestr(zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0)), data, compression)
        put("header.json", json.dumps(header))
        for info in z.infolist():
            name = info.filename
            if name == "header.json" or name.endswith("/"):
                continue
            dtype = np.dtype(name.rsplit(".", 1)[1]).newbyteorder("<")
            parts = name.split("/")[-1].split(".")
            ncols = int(parts[1]) if len(parts) == 3 else 1
            a = np.frombuffer(z.read(name), dtype)
            if name.startswith("positions."):
                a = a[: nv * 3]
            elif name.startswith("offsets."):
                a = offsets[: ns + 1 if sentinel else ns]
            elif name.startswith("dps/"):
                a = a[: ns * ncols]
            elif name.startswith("dpv/"):
                a = a[: nv * ncols]
            elif name.startswith("groups/"):
                a = a % ns
            put(name, a.astype(a.dtype.newbyteorder("<")).tobytes())
    return buf.getvalue(), json.dumps(header).encode()


pascal = "small_pascal_legacy_offsets.trx"
dpsv = "dpsv_legacy_offsets_deflate.trx"
for src, stem, compression in ((pascal, "pascal", zipfile.ZIP_STORED),
                               (dpsv, "dpsv", zipfile.ZIP_DEFLATED)):
    legacy, _ = cut_trx(src, 6, False, compression)
    out("fuzz_trx", stem + "_6_legacy.trx", legacy)
    current, header = cut_trx(src, 4, True, compression)
    out("fuzz_trx", stem + "_4.trx", current)
    # header.json as stored in the original (the folder case of the target)
    out("fuzz_trx", stem + "_header.json", zipfile.ZipFile(os.path.join(DATA, "tracts", src))
        .read("header.json"))
# header.json that fits the fixed arrays of the target's folder (2 streamlines, 4 points)
out("fuzz_trx", "folder_header.json", json.dumps({
    "DIMENSIONS": [117, 151, 115], "NB_STREAMLINES": 2, "NB_VERTICES": 4,
    "VOXEL_TO_RASMM": [[-1.25, 0.0, 0.0, 72.5], [0.0, 1.25, 0.0, -109.75],
                       [0.0, 0.0, 1.25, -64.5], [0.0, 0.0, 0.0, 1.0]]}).encode())

# ---- NIfTI: headers of the nibabel and dipy files with their dims cut down ----


def nifti_bytes(name):
    b = read("volumes", name)
    return gzip.decompress(b) if name.endswith(".gz") else b


def cut_nifti(name, dims):
    """The file's header (and extensions) with dims[1..] replaced, then the first bytes of
    its data that the new dims need."""
    b = bytearray(nifti_bytes(name))
    e = "<" if struct.unpack("<i", b[:4])[0] in (348, 540) else ">"
    v1 = struct.unpack(e + "i", b[:4])[0] == 348
    if v1:
        bitpix = struct.unpack(e + "h", b[72:74])[0]
        vox = int(struct.unpack(e + "f", b[108:112])[0])
        for i, d in enumerate(dims):
            struct.pack_into(e + "h", b, 42 + 2 * i, d)
    else:
        bitpix = struct.unpack(e + "h", b[14:16])[0]
        vox = struct.unpack(e + "q", b[168:176])[0]
        for i, d in enumerate(dims):
            struct.pack_into(e + "q", b, 24 + 8 * i, d)
    n = int(np.prod(dims)) * bitpix // 8
    return bytes(b[: vox + n])


out("fuzz_nifti_header", "anatomical_2slices.nii", cut_nifti("anatomical.nii", [33, 41, 2]))
out("fuzz_nifti_header", "anatomical_cut.nii", read("volumes", "anatomical.nii")[:1400])
out("fuzz_nifti_header", "functional_2vols.nii", cut_nifti("functional.nii", [17, 21, 3, 2]))
out("fuzz_nifti_header", "example4d_ext.nii", cut_nifti("example4d.nii.gz", [8, 8, 2, 2]))
out("fuzz_nifti_header", "example_nifti2_small.nii",
    cut_nifti("example_nifti2.nii.gz", [32, 20, 1, 1]))
out("fuzz_nifti_header", "aniso_vox_small.nii.gz",
    gzip.compress(cut_nifti("aniso_vox.nii.gz", [58, 58, 1]), 6, mtime=0))
for name in ("small_25.nii.gz", "standard.nii.gz", "example_nifti2.nii.gz"):
    out("fuzz_nifti_header", name, read("volumes", name))

# ---- frame sources: option header + raw int32 frames cut from the Pilatus frame ----
with h5py.File(os.path.join(DATA, "frames", "AgBehenate_228.hdf5"), "r") as f:
    frame = np.asarray(f["/entry/data/data"], dtype="<i4")  # one 195 x 487 frame
# four 8 x 8 windows along the beam's row, where the rings are
tiles = b"".join(frame[90:98, 40 + 100 * k:48 + 100 * k].tobytes() for k in range(4))


def frames_seed(kind, dtype, rank, dims, flags=0, count=0, big=0, block=0, seed=0, body=b""):
    h = bytes([kind, dtype, rank, *dims, flags, count]) + struct.pack("<Q", big)
    h = h[:14] + bytes([block, seed])
    return h + body


INT32, UINT16, INT16 = 5, 4, 3
out("fuzz_frame_source", "raw_int32_8x8", frames_seed(0, INT32, 2, [8, 8, 0], body=tiles))
out("fuzz_frame_source", "raw_int32_8x8_count3",
    frames_seed(0, INT32, 2, [8, 8, 0], flags=1, count=3, body=tiles))
out("fuzz_frame_source", "raw_int32_8x8_rank1_of_2",
    frames_seed(0, INT32, 2, [8, 8, 0], flags=0x24, block=1, body=tiles))
out("fuzz_frame_source", "raw_int32_8x8_short_last",
    frames_seed(0, INT32, 2, [8, 8, 0], body=tiles[: 3 * 256 + 100]))
out("fuzz_frame_source", "raw_uint16_2x8x8", frames_seed(0, UINT16, 3, [2, 8, 8], body=tiles))
out("fuzz_frame_source", "ramp_int16_4x4", frames_seed(1, INT16, 2, [4, 4, 0], count=3))
out("fuzz_frame_source", "sim_uint16_8x8", frames_seed(2, UINT16, 2, [8, 8, 0], count=2))
for i, spec in enumerate([b"raw:-", b"sim:poisson", b"AgBehenate_228.hdf5:/entry/data/data",
                          b"raw:", b"bogus:source", b"sim:ramp"]):
    out("fuzz_frame_source", "spec_%d" % i,
        frames_seed(3, INT32, 2, [8, 8, 0], count=2, body=spec + b"\0" + tiles[:256]))

# ---- the command line's option values (hand-written, one per line) ----
cli = {
    "shapes": "512x512\n16\n4x256x256\n0x4\n1x2x3x4\n512X512\n 16\n18446744073709551615x1\n"
              "18446744073709551616\nx\n4x\n",
    "counts": "0\n1000\n10k\n5M\n2G\n18446744073709551615\n18446744073709551616\n18446744073709551k\n"
              "-1\n+5\n0x10\n10kk\n1.5\n",
    "numbers": "30\n0.5\n-2.5e3\n1e308\n1e309\ninf\nnan\n0x1p-3\n 1\n1 \n",
    "codecs": "none\ndeflate\ndeflate:9\ndeflate:4:shuffle\ndeflate:1:noshuffle\nblosc\n"
              "blosc:lz4\nblosc:zstd:9:bitshuffle\nblosc:blosclz:0:noshuffle\nblosc:lz4hc:5:shuffle\n"
              "blosc:zlib:1\ndeflate:0\ndeflate:4:bitshuffle\nblosc:lz5\nnone:1\n:\n"
              "blosc:lz4:5:shuffle:x\n",
    "dtypes": "uint16\nint8\nfloat32\nfloat64\nf4\nu2\n<u2\nfloat16\nint128\n",
    "engine": "0\n256\n257\n1\n4294967295\n4294967296\n--threads\n--queue-mb\n",
}
for name, text in cli.items():
    out("fuzz_cli_parse", name, text.encode())
