#!/usr/bin/python3
"""test_volumes_cli.py - `h5stream ingest volumes` / `export --to nifti` / `tail /volumes`
checked with nibabel and h5py (docs/volumes.md).

- every shared NIfTI file round-trips through ingest + export: data equal (unscaled),
  affines within 1e-6, same NIfTI version family where the data needs it;
- a folder of same-dtype files goes into one heterogeneous collection;
- partial reads with --select/--slice/--box equal nibabel's slices (and affines of
  img.slicer); --where filters through obs_meta from a participants.tsv;
- broken copies (truncated, wrong vox_offset, dims disagreeing with the size) give exit 1
  with the file named, and the good files of the same run are kept;
- a live tail -f in another process sees every volume as it commits;
- SIGINT stops an ingest between volumes and closes the file with what it wrote.
"""
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time

import h5py
import nibabel as nib
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import h5s_scriptlib as lib  # noqa: E402

P = lib.paths()
VOL = os.path.join(P.shared_data, "volumes")
FILES = sorted(f for f in os.listdir(VOL) if f.endswith(".nii") or f.endswith(".nii.gz"))
passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print("ok   %s" % name)
    else:
        failed += 1
        print("FAIL %s %s" % (name, detail))


def run(*args, **kw):
    return subprocess.run([P.bin] + list(args), capture_output=True, text=True, timeout=120, **kw)


def stem(f):
    return f.split(".nii")[0]


def data(img):
    return np.asanyarray(img.dataobj.get_unscaled())


def roundtrip():
    d = P.fresh_dir("roundtrip")
    for f in FILES:
        src = os.path.join(VOL, f)
        h5 = os.path.join(d, stem(f) + ".h5")
        out = os.path.join(d, "out_" + stem(f))
        r = run("ingest", "volumes", src, "-o", h5, "--collection", "c", "--chunk",
                "block:8" if "4d" in f else "slice", "--compress", "deflate:1")
        check("ingest %s" % f, r.returncode == 0, r.stderr)
        for gz in (False, True):
            r = run("export", h5, "--to", "nifti", "-o", out, *(["--gz"] if gz else []))
            path = os.path.join(out, "c", stem(f) + (".nii.gz" if gz else ".nii"))
            check("export %s gz=%d" % (f, gz), r.returncode == 0 and os.path.exists(path), r.stderr)
            if not os.path.exists(path):
                continue
            a, b = nib.load(src), nib.load(path)
            check("data %s" % f, data(a).shape == data(b).shape and
                  np.array_equal(data(a), data(b)) and
                  data(a).dtype.newbyteorder("<") == data(b).dtype.newbyteorder("<"))
            check("affine %s" % f, np.allclose(a.affine, b.affine, atol=1e-6, rtol=0))
            check("codes %s" % f, int(a.header["sform_code"]) == int(b.header["sform_code"]) and
                  int(a.header["qform_code"]) == int(b.header["qform_code"]))
            check("zooms %s" % f, np.allclose(a.header.get_zooms(), b.header.get_zooms()))
        with h5py.File(h5, "r") as hf:
            obs = hf["/volumes/c/obs"]
            check("obs row %s" % f, obs.shape == (1,) and obs["obs_id"][0].decode() == stem(f))


def folder_and_partial():
    d = P.fresh_dir("folder")
    src = os.path.join(d, "bids")
    for sub, f in (("01", "anatomical.nii"), ("02", "aniso_vox.nii.gz"), ("03", "functional.nii")):
        os.makedirs(os.path.join(src, "sub-" + sub, "anat"))
        shutil.copy(os.path.join(VOL, f), os.path.join(
            src, "sub-" + sub, "anat", "sub-%s_T1w%s" % (sub, ".nii.gz" if f.endswith("gz") else ".nii")))
    tsv = os.path.join(d, "participants.tsv")
    with open(tsv, "w") as t:
        t.write("participant_id\tage\tsex\nsub-01\t30\tF\nsub-02\t41\tM\nsub-03\tn/a\tF\n")
    h5 = os.path.join(d, "all.h5")
    r = run("ingest", "volumes", src, "-o", h5, "--collection", "anat", "--heterogeneous",
            "--participants", tsv)
    check("ingest folder", r.returncode == 0, r.stderr)
    with h5py.File(h5, "r") as hf:
        ids = [x.decode() for x in hf["/volumes/anat/obs"]["obs_subject_id"]]
        check("subjects from BIDS names", ids == ["01", "02", "03"], str(ids))
        meta = hf["/obs_meta"]
        check("obs_meta rows", [x.decode() for x in meta["obs_subject_id"]] == ["01", "02", "03"]
              and list(meta["age"][:2]) == [30, 41])
    out = os.path.join(d, "where")
    r = run("export", h5, "--to", "nifti", "-o", out, "--where", "sex=F")
    got = sorted(os.listdir(os.path.join(out, "anat")))
    check("--where sex=F", r.returncode == 0 and got == ["obs.tsv", "sub-01_T1w.nii", "sub-03_T1w.nii"],
          str(got) + r.stderr)
    parts = open(os.path.join(out, "participants.tsv")).read().splitlines()
    check("participants.tsv", parts[0].split("\t")[:3] == ["obs_subject_id", "age", "sex"] and
          parts[3].split("\t")[1] == "n/a", str(parts))
    src_img = nib.load(os.path.join(VOL, "anatomical.nii"))
    full = data(src_img)
    cases = [("axial:7", np.s_[:, :, 7:8]), ("coronal:3", np.s_[:, 3:4, :]),
             ("sagittal:20", np.s_[20:21, :, :])]
    for spec, sl in cases:
        o = os.path.join(d, "slice_" + spec.split(":")[0])
        r = run("export", h5, "--to", "nifti", "-o", o, "--select", "obs_id=sub-01_T1w",
                "--slice", spec)
        path = os.path.join(o, "anat", "sub-01_T1w.nii")
        ok = r.returncode == 0 and os.path.exists(path)
        if ok:
            img = nib.load(path)
            ok = np.array_equal(data(img), full[sl]) and np.allclose(
                img.affine, src_img.slicer[sl].affine, atol=1e-6)
        check("--slice %s" % spec, ok, r.stderr)
    o = os.path.join(d, "box")
    r = run("export", h5, "--to", "nifti", "-o", o, "--select", "obs_id=sub-03_T1w",
            "--box", "2:9,4:15,1:3")
    path = os.path.join(o, "anat", "sub-03_T1w.nii")
    f4 = nib.load(os.path.join(VOL, "functional.nii"))
    ok = r.returncode == 0 and os.path.exists(path)
    if ok:
        img = nib.load(path)
        ok = np.array_equal(data(img), data(f4)[2:9, 4:15, 1:3, :]) and np.allclose(
            img.affine, f4.slicer[2:9, 4:15, 1:3].affine, atol=1e-6)
    check("--box on a 4-D volume", ok, r.stderr)
    r = run("export", h5, "--to", "nifti", "-o", o, "--slice", "axial:999")
    check("slice out of range: exit 1", r.returncode == 1 and "outside" in r.stderr, r.stderr)
    r = run("export", h5, "--to", "nifti", "-o", o, "--box", "3:1,0:1,0:1")
    check("bad --box: exit 2", r.returncode == 2, r.stderr)


def bad_nifti():
    d = P.fresh_dir("bad")
    raw = open(os.path.join(VOL, "anatomical.nii"), "rb").read()
    cases = {}
    cases["truncated.nii"] = raw[:len(raw) - 5000]
    b = bytearray(raw)
    b[108:112] = struct.pack("<f", 1e7)
    cases["vox_offset.nii"] = bytes(b)
    b = bytearray(raw)
    b[46:48] = struct.pack("<h", 99)  # dim[3]: 99 slices the file does not have
    cases["dims.nii"] = bytes(b)
    for name, content in cases.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(content)
    good = os.path.join(d, "good.nii")
    shutil.copy(os.path.join(VOL, "anatomical.nii"), good)
    for name in cases:
        h5 = os.path.join(d, name + ".h5")
        r = run("ingest", "volumes", os.path.join(d, name), good, "-o", h5, "--collection", "c")
        check("bad %s: exit 1 naming it" % name, r.returncode == 1 and name in r.stderr, r.stderr)
        with h5py.File(h5, "r") as hf:
            ids = [x.decode() for x in hf["/volumes/c/obs"]["obs_id"]]
        check("bad %s: good file kept" % name, ids == ["good"], str(ids))
    r = run("ingest", "volumes", good, "-o", os.path.join(d, "x.h5"))
    check("no --collection: exit 2", r.returncode == 2, r.stderr)


def live_tail():
    d = P.fresh_dir("live")
    src = os.path.join(d, "src")
    os.makedirs(src)
    n = 12
    for i in range(n):
        shutil.copy(os.path.join(VOL, "anatomical.nii"), os.path.join(src, "sub-%02d_T1w.nii" % i))
    h5 = os.path.join(d, "live.h5")
    tail = subprocess.Popen([P.bin, "tail", h5, "/volumes/anat", "-f", "--interval", "20",
                             "--timeout", "60000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(0.3)
    r = run("ingest", "volumes", src, "-o", h5, "--collection", "anat", "--flush-every", "1")
    check("live ingest", r.returncode == 0, r.stderr)
    try:
        out, err = tail.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        tail.kill()
        out, err = tail.communicate()
    lines = [ln for ln in out.splitlines() if ln.startswith("anat ")]
    expect = nib.load(os.path.join(VOL, "anatomical.nii"))
    v = data(expect).astype(np.float64)
    want_tail = "shape=33x41x25 min=%.9g max=%.9g" % (v.min(), v.max())
    ok = tail.returncode == 0 and len(lines) == n and all(
        ("obs_id=sub-%02d_T1w subject=%02d" % (i, i)) in lines[i] and want_tail in lines[i]
        for i in range(n))
    check("tail -f sees every volume", ok, out[-500:] + err)
    # The same file, closed now, as JSON Lines: one object per volume, same values.
    r = run("tail", h5, "/volumes/anat", "--json")
    objs = []
    try:
        objs = [json.loads(ln) for ln in r.stdout.splitlines() if ln.strip()]
    except ValueError as e:
        check("tail --json prints JSON Lines", False, "%s: %s" % (e, r.stdout[-300:]))
    ok = r.returncode == 0 and len(objs) == n and all(
        o["collection"] == "anat" and o["index"] == i and o["obs_id"] == "sub-%02d_T1w" % i
        and o["obs_subject_id"] == "%02d" % i and o["shape"] == [33, 41, 25]
        and o["min"] == v.min() and o["max"] == v.max() and abs(o["mean"] - v.mean()) < 1e-6
        for i, o in enumerate(objs))
    check("tail --json: one object per volume with its obs and statistics", ok,
          r.stdout[-300:] + r.stderr)


def interrupted():
    """SIGINT while volumes stream in: the ingest stops between volumes, closes the file
    (no recover needed) and says how many volumes it wrote; they are all there, whole."""
    d = P.fresh_dir("sigint")
    src = os.path.join(d, "src")
    os.makedirs(src)
    n = 3000
    for i in range(n):
        os.symlink(os.path.join(VOL, "anatomical.nii"), os.path.join(src, "sub-%04d_T1w.nii" % i))
    h5 = os.path.join(d, "stopped.h5")
    w = subprocess.Popen([P.bin, "ingest", "volumes", src, "-o", h5, "--collection", "anat",
                          "--flush-every", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    committed = 0
    deadline = time.monotonic() + 60
    while committed < 5 and w.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
        try:
            with h5py.File(h5, "r", libver="latest", swmr=True) as f:
                committed = f["/volumes/anat/obs"].shape[0]
        except (OSError, KeyError):
            pass
    w.send_signal(signal.SIGINT)
    out, err = w.communicate(timeout=120)
    said = re.search(r"interrupted by SIGINT: (\d+) volumes written", err)
    check("SIGINT: exit 1 and how many volumes were written", w.returncode == 1 and said is not None
          and "committed, file closed" in err, "exit %d: %s" % (w.returncode, err[-400:]))
    if not said:
        return
    k = int(said.group(1))
    with h5py.File(h5, "r") as f:  # no SWMR, no recover: the file was closed
        state = int(f["/h5stream/writer"][0]["state"])
        obs = f["/volumes/anat/obs"][:]
        vox = f["/volumes/anat/voxels"]
        want = data(nib.load(os.path.join(VOL, "anatomical.nii")))
        whole = all(np.array_equal(vox[i], want.transpose()) for i in range(len(obs)))
    check("SIGINT: closed cleanly (state 1), with every volume it counted, whole",
          state == 1 and committed <= k == len(obs) < n and whole,
          "state %d, %d obs rows, %d said, %d seen before the signal, voxels whole: %s" % (
              state, len(obs), k, committed, whole))


def main():
    for fn in (roundtrip, folder_and_partial, bad_nifti, live_tail, interrupted):
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            check(fn.__name__, False, repr(e))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
