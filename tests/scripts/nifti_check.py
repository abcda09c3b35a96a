#!/usr/bin/python3
"""Checks h5stream's NIfTI reader and writer against nibabel (run by tests/test_nifti.c).

Usage: nifti_check.py JOBS

JOBS is a text file, one job per line:
  verify FILE PREFIX   nibabel's load of FILE must equal what h5stream read from it:
                       PREFIX.bin (the voxels, i fastest, little-endian) and PREFIX.txt
                       ("key value..." lines written by the C test).
  same SRC OUT         OUT (written by h5stream) must hold SRC's data (unscaled values,
                       dtype, shape), the same affine within 1e-6, the same qform/sform
                       codes, and the same qform and sform (1e-6) where their code is > 0.
Prints one line per failure and exits 1 if any job failed, else prints "ok N" and exits 0.
"""
import sys

import numpy as np
import nibabel as nib

TOL = 1e-6


def load(path):
    img = nib.load(path)
    return img, np.asanyarray(img.dataobj.get_unscaled())


def read_txt(path):
    out = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if parts:
                out[parts[0]] = parts[1:]
    return out


def mat(values):
    return np.array([float(v) for v in values]).reshape(4, 4)


def verify(path, prefix):
    errs = []
    img, data = load(path)
    hdr = img.header
    meta = read_txt(prefix + ".txt")
    dtype = np.dtype(meta["dtype"][0]).newbyteorder("<")
    shape = tuple(int(v) for v in meta["shape"])
    if shape != data.shape:
        errs.append(f"shape {shape} != nibabel {data.shape}")
    if dtype.newbyteorder("=") != data.dtype.newbyteorder("="):
        errs.append(f"dtype {dtype} != nibabel {data.dtype}")
    ours = np.fromfile(prefix + ".bin", dtype=dtype)
    if ours.size != data.size:
        errs.append(f"{ours.size} voxels != nibabel {data.size}")
    elif not np.array_equal(ours.reshape(data.shape, order="F"), data):
        errs.append("voxel values differ from nibabel")
    version = 2 if isinstance(hdr, nib.Nifti2Header) else 1
    if int(meta["version"][0]) != version:
        errs.append(f"version {meta['version'][0]} != nibabel {version}")
    for key in ("qform_code", "sform_code"):
        if int(meta[key][0]) != int(hdr[key]):
            errs.append(f"{key} {meta[key][0]} != nibabel {int(hdr[key])}")
    checks = [("affine", img.affine)]
    # a transform whose code is 0 is unused (NIfTI-1 spec); only coded ones are kept
    if int(hdr["qform_code"]) > 0:
        checks.append(("qform", hdr.get_qform()))
    if int(hdr["sform_code"]) > 0:
        checks.append(("sform", hdr.get_sform()))
    for key, theirs in checks:
        if not np.allclose(mat(meta[key]), theirs, rtol=0, atol=TOL):
            errs.append(f"{key} differs from nibabel:\n{mat(meta[key])}\n{theirs}")
    pixdim = [float(v) for v in meta["pixdim"]]
    if not np.allclose(pixdim[1:], hdr["pixdim"][1:], rtol=0, atol=TOL):
        errs.append(f"pixdim {pixdim} != nibabel {hdr['pixdim']}")
    if int(meta["xyzt_units"][0]) != int(hdr["xyzt_units"]):
        errs.append(f"xyzt_units {meta['xyzt_units'][0]} != nibabel {int(hdr['xyzt_units'])}")
    return errs


def same(src, out):
    errs = []
    a_img, a = load(src)
    b_img, b = load(out)
    if a.shape != b.shape:
        errs.append(f"shape {b.shape} != source {a.shape}")
    elif a.dtype.newbyteorder("=") != b.dtype.newbyteorder("="):
        errs.append(f"dtype {b.dtype} != source {a.dtype}")
    elif not np.array_equal(a, b):
        errs.append("voxel values differ from the source")
    ah, bh = a_img.header, b_img.header
    for key in ("qform_code", "sform_code"):
        if int(ah[key]) != int(bh[key]):
            errs.append(f"{key} {int(bh[key])} != source {int(ah[key])}")
    pairs = [("affine", a_img.affine, b_img.affine)]
    if int(ah["qform_code"]) > 0:
        pairs.append(("qform", ah.get_qform(), bh.get_qform()))
    if int(ah["sform_code"]) > 0:
        pairs.append(("sform", ah.get_sform(), bh.get_sform()))
    for key, x, y in pairs:
        if not np.allclose(x, y, rtol=0, atol=TOL):
            errs.append(f"{key} differs from the source:\n{x}\n{y}")
    return errs


def main():
    failed = 0
    jobs = 0
    with open(sys.argv[1]) as f:
        lines = [line.split() for line in f if line.strip()]
    for job in lines:
        jobs += 1
        try:
            errs = verify(job[1], job[2]) if job[0] == "verify" else same(job[1], job[2])
        except Exception as exc:  # a load failure is a failed job, reported like the others
            errs = [f"{type(exc).__name__}: {exc}"]
        for e in errs:
            print(f"FAIL {' '.join(job)}: {e}")
        failed += bool(errs)
    if failed:
        return 1
    print(f"ok {jobs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
