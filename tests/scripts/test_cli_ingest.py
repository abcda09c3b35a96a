#!/usr/bin/python3
"""test_cli_ingest.py - `h5stream ingest frames` as a user runs it, checked with h5py.

Covers every source of docs/cli.md (sim, sim:ramp, raw:PATH, raw:-, FILE.h5:/dataset with
--repeat and --poisson), the usage errors (exit 2, nothing created), a short raw frame
(exit 1, the byte offset named, the full frames kept), the NeXus layout, the chunk shape
from --tile and --frames-per-chunk with an exact final extent, frame_id, --path, the
summary on stdout, and the top-level dispatch of the h5stream command.

Environment (set by ctest; defaults for a run by hand):
  H5S_BIN          the h5stream binary
  H5S_TEST_TMP     a folder this test may write in
  H5S_SHARED_DATA  /work/shared/data (real input files)

Run with the system Python, which has h5py, numpy and hdf5plugin:
  /usr/bin/python3 tests/scripts/test_cli_ingest.py
It prints one line per check and ends with "N passed, N failed"; the exit status is 1 if
any check failed.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

import h5py
import numpy as np

try:
    import hdf5plugin  # noqa: F401  (registers Blosc for h5py)
except ImportError:
    hdf5plugin = None

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.abspath(os.path.join(HERE, "..", ".."))
DATA = "/entry/instrument/detector/data"
FRAME_ID = "/entry/instrument/detector/frame_id"
TIMESTAMP = "/entry/instrument/detector/timestamp"
AGBE_DATASET = "/entry/data/data"
RAMP_STEP = 7919


def default_bin():
    candidates = []
    if os.environ.get("H5S_BUILD"):
        candidates.append(os.path.join(os.environ["H5S_BUILD"], "tools", "h5stream"))
    candidates += [os.path.join(SOURCE, "build", "tools", "h5stream"),
                   "/tmp/build-cli/tools/h5stream"]
    for c in candidates:
        if os.access(c, os.X_OK):
            return c
    return shutil.which("h5stream") or candidates[0]


BIN = os.environ.get("H5S_BIN") or default_bin()
SHARED = os.environ.get("H5S_SHARED_DATA") or os.path.join(SOURCE, "..", "shared", "data")
AGBE = os.path.join(SHARED, "frames", "AgBehenate_228.hdf5")
TMP_ROOT = os.environ.get("H5S_TEST_TMP") or tempfile.gettempdir()
TMP = os.path.join(TMP_ROOT, "test_cli_ingest")

passed = 0
failed = 0


def check(name, ok, detail=""):
    """Records one outcome; detail says what was seen (and expected, on failure)."""
    global passed, failed
    if ok:
        passed += 1
        # On success a one-line note is enough; failures get the whole story.
        note = detail.strip().splitlines()[0] if detail.strip() else ""
        print("ok    %s%s" % (name, " (%s)" % note if note else ""), flush=True)
    else:
        failed += 1
        print("FAIL  %s: %s" % (name, detail or "failed"), flush=True)
    return ok


def tmp(name):
    return os.path.join(TMP, name)


def run(args, stdin_bytes=None, timeout=600):
    """Runs h5stream with args; returns (exit status, stdout text, stderr text)."""
    p = subprocess.run([BIN] + list(args), input=stdin_bytes, capture_output=True,
                       timeout=timeout)
    return (p.returncode, p.stdout.decode("utf-8", "replace"),
            p.stderr.decode("utf-8", "replace"))


def ingest(args, name, stdin_bytes=None):
    """Runs `ingest frames` and checks it succeeded; returns (status, stdout, stderr)."""
    rc, out, err = run(["ingest", "frames"] + list(args), stdin_bytes)
    check("%s: exit status 0" % name, rc == 0, "status %d, stderr: %s" % (rc, err.strip()))
    return rc, out, err


def ramp(first, count, shape, dtype):
    """The sim:ramp pattern of docs/cli.md, computed independently of the product."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape))
    i = np.arange(first, first + count, dtype=np.uint64)[:, None]
    p = np.arange(n, dtype=np.uint64)[None, :]
    v = i * np.uint64(RAMP_STEP) + p
    if dtype.kind == "f":
        out = (v % np.uint64(65536)).astype(dtype)
    else:
        bits = dtype.itemsize * 8
        if bits < 64:
            v = v & np.uint64((1 << bits) - 1)
        # Same width, unsigned -> the dtype: the two's complement reading of the bits.
        out = v.astype(np.dtype("u%d" % dtype.itemsize)).view(dtype)
    return out.reshape((count,) + tuple(shape))


def mismatch(seen, expected):
    """None if equal, else where they first differ."""
    if seen.shape != expected.shape:
        return "shape %s, expected %s" % (seen.shape, expected.shape)
    if seen.dtype != expected.dtype:
        return "dtype %s, expected %s" % (seen.dtype, expected.dtype)
    differ = seen != expected
    if not differ.any():
        return None
    w = tuple(int(x) for x in np.argwhere(differ)[0])
    return "element %s is %r, expected %r" % (w, seen[w].item(), expected[w].item())


def attr_text(obj, name):
    v = obj.attrs.get(name)
    if isinstance(v, np.ndarray):
        v = v.item() if v.size == 1 else v
    if isinstance(v, bytes):
        v = v.decode()
    return v


# ---- tests ----------------------------------------------------------------------------


def test_ramp_dtypes_and_shapes():
    cases = [("int8", "7x9"), ("uint8", "1000"), ("int16", "3x4x5"), ("uint16", "16x16"),
             ("int32", "5x6"), ("uint32", "33"), ("int64", "4x4"), ("uint64", "2x3x4"),
             ("float32", "8x8"), ("float64", "3x7")]
    count = 11  # frame 10 starts at 79190: past the range of the 8- and 16-bit types
    for dtype, shape_text in cases:
        shape = tuple(int(x) for x in shape_text.split("x"))
        out = tmp("ramp_%s.h5" % dtype)
        name = "ramp %s %s" % (dtype, shape_text)
        rc, _, _ = ingest(["sim:ramp", "--dtype", dtype, "--shape", shape_text, "-n",
                           str(count), "-o", out, "-q"], name)
        if rc != 0:
            continue
        with h5py.File(out, "r") as f:
            d = f[DATA]
            check(name + ": dataset shape and dtype",
                  d.shape == (count,) + shape and d.dtype == np.dtype(dtype),
                  "%s %s" % (d.shape, d.dtype))
            check(name + ": maxshape unlimited along frames", d.maxshape[0] is None,
                  str(d.maxshape))
            bad = mismatch(d[()], ramp(0, count, shape, dtype))
            check(name + ": every element equals (i * 7919 + p) in the dtype", bad is None,
                  bad or "")
            fid = f[FRAME_ID][()]
            check(name + ": frame_id == arange(N)",
                  fid.dtype == np.uint64 and np.array_equal(fid, np.arange(count)), str(fid))
            ts = f[TIMESTAMP][()]
            now = time.time()
            check(name + ": timestamps are recent and in order",
                  ts.shape == (count,) and np.all(np.diff(ts) >= 0) and
                  np.all(np.abs(ts - now) < 600), "%s .. %s" % (ts.min(), ts.max()))


def test_sim_poisson():
    out = tmp("sim.h5")
    rc, _, _ = ingest(["sim", "--shape", "128x160", "-n", "20", "--seed", "5", "-o", out,
                       "-q"], "sim")
    if rc != 0:
        return
    with h5py.File(out, "r") as f:
        a = f[DATA][()]
    check("sim: default dtype uint16, requested shape", a.dtype == np.uint16 and
          a.shape == (20, 128, 160), "%s %s" % (a.dtype, a.shape))
    mean = a.mean()
    check("sim: mean of a few photons", 0.5 <= mean <= 10.0, "mean %.3f" % mean)
    check("sim: bright rings (some pixels far above the mean)", a.max() >= 20,
          "max %d" % a.max())
    check("sim: frames differ (fresh noise each frame)", not np.array_equal(a[0], a[1]))
    # Poisson counts: over frames each pixel's variance matches its mean.
    m = a.mean(axis=0)
    v = a.var(axis=0, ddof=1)
    bright = m > 5
    ratio = v[bright].mean() / m[bright].mean()
    check("sim: variance / mean close to 1 (Poisson)", 0.85 < ratio < 1.15,
          "ratio %.3f" % ratio)
    out2 = tmp("sim_again.h5")
    rc, _, _ = ingest(["sim", "--shape", "128x160", "-n", "20", "--seed", "5", "-o", out2,
                       "-q"], "sim same seed")
    if rc == 0:
        with h5py.File(out2, "r") as f:
            check("sim: the same seed gives the same frames", np.array_equal(f[DATA][()], a))
    out3 = tmp("sim_3d.h5")
    rc, _, _ = ingest(["sim", "--shape", "2x30x40", "--dtype", "float32", "-n", "3", "-o",
                       out3, "-q"], "sim 3-D float32")
    if rc == 0:
        with h5py.File(out3, "r") as f:
            b = f[DATA][()]
        check("sim 3-D float32: shape, dtype, whole counts",
              b.shape == (3, 2, 30, 40) and b.dtype == np.float32 and
              np.all(b == np.round(b)) and b.min() >= 0, "%s %s" % (b.shape, b.dtype))
    # The default is sim:poisson, 512x512 uint16, 1000 frames; -n keeps the run short.
    out4 = tmp("sim_default.h5")
    rc, _, _ = ingest(["sim:poisson", "-n", "2", "-o", out4, "-q"], "sim:poisson default")
    if rc == 0:
        with h5py.File(out4, "r") as f:
            check("sim:poisson default shape 512x512 uint16",
                  f[DATA].shape == (2, 512, 512) and f[DATA].dtype == np.uint16,
                  "%s %s" % (f[DATA].shape, f[DATA].dtype))


def test_raw_roundtrip():
    rng = np.random.default_rng(11)
    frames = rng.integers(0, 65536, size=(5, 6, 7), dtype=np.uint16)
    raw = frames.astype("<u2").tobytes()
    path = tmp("frames.raw")
    with open(path, "wb") as fh:
        fh.write(raw)
    out = tmp("raw.h5")
    rc, _, _ = ingest(["raw:" + path, "--dtype", "uint16", "--shape", "6x7", "-o", out,
                       "-q"], "raw:PATH")
    if rc == 0:
        with h5py.File(out, "r") as f:
            d = f[DATA][()]
            check("raw:PATH: bytes round-trip exactly",
                  d.shape == (5, 6, 7) and d.astype("<u2").tobytes() == raw,
                  "shape %s" % (d.shape,))
            check("raw:PATH: frame_id == arange(5)",
                  np.array_equal(f[FRAME_ID][()], np.arange(5)))
    # stdin, float64, and --count stopping before the end of the input
    f64 = rng.standard_normal((4, 3, 2, 5))
    out = tmp("raw_stdin.h5")
    rc, _, _ = ingest(["raw:-", "--dtype", "float64", "--shape", "3x2x5", "-n", "3", "-o",
                       out, "-q"], "raw:- with --count", stdin_bytes=f64.astype("<f8").tobytes())
    if rc == 0:
        with h5py.File(out, "r") as f:
            d = f[DATA][()]
            check("raw:-: float64 bytes round-trip, --count 3 of 4",
                  d.shape == (3, 3, 2, 5) and d.tobytes() == f64[:3].tobytes(),
                  "shape %s" % (d.shape,))


def test_raw_short_last_frame():
    frame_bytes = 4 * 5 * 4
    full = np.arange(3 * 20, dtype="<i4").reshape(3, 4, 5)
    path = tmp("short.raw")
    with open(path, "wb") as fh:
        fh.write(full.tobytes() + b"\x01" * 10)
    out = tmp("short.h5")
    rc, stdout, err = run(["ingest", "frames", "raw:" + path, "--dtype", "int32", "--shape",
                           "4x5", "-o", out])
    check("raw short last frame: exit status 1", rc == 1, "status %d, stderr: %s" %
          (rc, err.strip()))
    offset = 3 * frame_bytes
    check("raw short last frame: stderr names the file and byte offset %d" % offset,
          str(offset) in err and path in err and err.startswith("h5stream: "), err.strip())
    check("raw short last frame: no summary on stdout", stdout == "", repr(stdout))
    if os.path.exists(out):
        with h5py.File(out, "r") as f:
            d = f[DATA][()]
            bad = mismatch(d, full.astype(np.int32))
            check("raw short last frame: the 3 full frames are kept exactly", bad is None,
                  bad or "")
            check("raw short last frame: frame_id covers the kept frames",
                  np.array_equal(f[FRAME_ID][()], np.arange(3)))
    else:
        check("raw short last frame: output exists", False, out)
    rc, _, err = run(["ingest", "frames", "raw:" + tmp("no-such-file.raw"), "--dtype",
                      "uint8", "--shape", "4", "-o", tmp("nofile.h5")])
    check("raw missing file: exit status 1, named", rc == 1 and "no-such-file.raw" in err,
          "status %d, %s" % (rc, err.strip()))


def agbe_frame():
    with h5py.File(AGBE, "r") as f:
        return f[AGBE_DATASET][()]


def test_h5_repeat():
    src = agbe_frame()
    out = tmp("agbe_repeat.h5")
    rc, _, _ = ingest([AGBE + ":" + AGBE_DATASET, "--repeat", "3", "-o", out, "-q"],
                      "h5 source --repeat 3")
    if rc == 0:
        with h5py.File(out, "r") as f:
            d = f[DATA]
            check("h5 --repeat 3: 3 frames of 195x487 int32",
                  d.shape == (3, 195, 487) and d.dtype == np.int32, "%s %s" %
                  (d.shape, d.dtype))
            check("h5 --repeat 3: every frame equals the source",
                  all(np.array_equal(d[i], src) for i in range(d.shape[0])))
    # A 3-D source is cycled frame by frame: --count 5 of 2 frames = 0, 1, 0, 1, 0.
    two = tmp("two_frames.h5")
    pair = np.stack([src[:20, :30], src[:20, :30] * 2]).astype(np.int32)
    with h5py.File(two, "w") as f:
        f.create_dataset("stack", data=pair, chunks=(2, 10, 30), compression="gzip")
    out = tmp("cycle.h5")
    rc, _, _ = ingest([two + ":/stack", "-n", "5", "-o", out, "-q"], "h5 3-D source --count 5")
    if rc == 0:
        with h5py.File(out, "r") as f:
            bad = mismatch(f[DATA][()], pair[[0, 1, 0, 1, 0]])
            check("h5 3-D source: frames cycle 0 1 0 1 0", bad is None, bad or "")
    # A 4-D source gives 3-D frames; --dtype converts through HDF5.
    four = tmp("four_d.h5")
    vol = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)
    with h5py.File(four, "w") as f:
        f["g/vol"] = vol
    out = tmp("four_d_out.h5")
    rc, _, _ = ingest([four + ":/g/vol", "--dtype", "uint16", "-o", out, "-q"],
                      "h5 4-D source with --dtype")
    if rc == 0:
        with h5py.File(out, "r") as f:
            bad = mismatch(f[DATA][()], vol.astype(np.uint16))
            check("h5 4-D source: [2, 3, 4, 5] frames as uint16", bad is None, bad or "")
    rc, _, err = run(["ingest", "frames", AGBE + ":/entry/no/such", "-o", tmp("x.h5")])
    check("h5 source, missing dataset: exit 1, named", rc == 1 and "/entry/no/such" in err,
          "status %d, %s" % (rc, err.strip()))
    check("h5 source, missing dataset: no output created", not os.path.exists(tmp("x.h5")))


def test_h5_poisson():
    src = agbe_frame().astype(np.int64)
    n = 40
    out = tmp("agbe_poisson.h5")
    rc, _, _ = ingest([AGBE + ":" + AGBE_DATASET, "--repeat", str(n), "--poisson", "--seed",
                       "3", "--compress", "blosc:lz4", "-o", out, "-q"], "h5 --poisson")
    if rc != 0:
        return
    with h5py.File(out, "r") as f:
        a = f[DATA][()]
    check("h5 --poisson: shape and dtype kept", a.shape == (n, 195, 487) and
          a.dtype == np.int32, "%s %s" % (a.shape, a.dtype))
    rel = abs(a.mean() - src.mean()) / src.mean()
    check("h5 --poisson: output mean close to the source mean", rel < 0.002,
          "%.2f vs %.2f" % (a.mean(), src.mean()))
    check("h5 --poisson: frames are resampled, not copied",
          not np.array_equal(a[0], src) and not np.array_equal(a[0], a[1]))
    m = a.mean(axis=0)
    v = a.var(axis=0, ddof=1)
    sel = (src > 50) & (src < 5000)
    ratio = v[sel].mean() / src[sel].mean()
    check("h5 --poisson: per-pixel variance equals the value (Poisson)", 0.9 < ratio < 1.1,
          "variance/mean %.3f" % ratio)
    z = (m - src) / np.sqrt(np.maximum(src, 1) / n)
    check("h5 --poisson: per-pixel means unbiased", abs(z.mean()) < 0.05 and
          0.9 < z.std() < 1.1, "z mean %.4f, z std %.3f" % (z.mean(), z.std()))

    # Masked pixels: negative values pass through unchanged, in int and float sources.
    base = agbe_frame()[:60, :80].astype(np.int32)
    base[5, :] = -1
    base[:, 7] = -2
    base[10:12, 10:12] = 0
    masked = np.stack([base, base // 3])
    mpath = tmp("masked.h5")
    with h5py.File(mpath, "w") as f:
        f["i32"] = masked
        f["f32"] = masked.astype(np.float32) + np.float32(0.25) * (masked >= 0)
        f["u8"] = np.where(base >= 0, base % 10, 0)[None].astype(np.uint8)
    for ds, dtype in (("i32", np.int32), ("f32", np.float32)):
        out = tmp("masked_%s.h5" % ds)
        rc, _, _ = ingest([mpath + ":/" + ds, "--poisson", "--repeat", "4", "-o", out, "-q"],
                          "--poisson %s masked" % ds)
        if rc != 0:
            continue
        with h5py.File(mpath, "r") as f:
            s = f[ds][()]
        with h5py.File(out, "r") as f:
            a = f[DATA][()]
        exp = np.concatenate([s] * 4)
        neg = exp < 0
        check("--poisson %s: dtype kept" % ds, a.dtype == dtype, str(a.dtype))
        check("--poisson %s: negative (masked) pixels unchanged" % ds,
              np.array_equal(a[neg], exp[neg]), "%d masked" % neg.sum())
        check("--poisson %s: zero pixels stay zero" % ds, np.all(a[exp == 0] == 0))
        check("--poisson %s: other pixels are whole counts >= 0, resampled" % ds,
              np.all(a[~neg] >= 0) and np.all(a[~neg] == np.round(a[~neg])) and
              not np.array_equal(a[~neg], exp[~neg]))
    # Means below 10 go through the other sampler: uint8 with values 0..9.
    out = tmp("masked_u8.h5")
    rc, _, _ = ingest([mpath + ":/u8", "--poisson", "--repeat", "300", "-o", out, "-q"],
                      "--poisson uint8 small means")
    if rc == 0:
        with h5py.File(mpath, "r") as f:
            s = f["u8"][0].astype(np.float64)
        with h5py.File(out, "r") as f:
            a = f[DATA][()].astype(np.float64)
        sel = s > 0
        check("--poisson uint8: mean over frames matches small source values",
              abs(a.mean(axis=0)[sel].mean() - s[sel].mean()) / s[sel].mean() < 0.01,
              "%.4f vs %.4f" % (a.mean(axis=0)[sel].mean(), s[sel].mean()))
        vr = a.var(axis=0, ddof=1)[sel].mean() / s[sel].mean()
        check("--poisson uint8: variance / mean close to 1", 0.93 < vr < 1.07, "%.3f" % vr)


def test_usage_errors():
    out = tmp("usage.h5")
    cases = [
        ("bad --shape 0x5", ["sim", "--shape", "0x5", "-o", out]),
        ("bad --shape axb", ["sim", "--shape", "axb", "-o", out]),
        ("bad --shape with 4 axes", ["sim", "--shape", "1x2x3x4", "-o", out]),
        ("bad --compress gzip", ["sim", "--compress", "gzip", "-o", out]),
        ("bad --compress blosc:nope", ["sim", "--compress", "blosc:nope", "-o", out]),
        ("bad --compress deflate:12", ["sim", "--compress", "deflate:12", "-o", out]),
        ("missing -o", ["sim", "-n", "3"]),
        ("unknown option", ["sim", "--frobnicate", "-o", out]),
        ("option without its value", ["sim", "-o"]),
        ("no source", ["-o", out]),
        ("two sources", ["sim", "sim:ramp", "-o", out]),
        ("unknown source", ["bogus", "-o", out]),
        ("unknown sim variant", ["sim:foo", "-o", out]),
        ("raw without --dtype/--shape", ["raw:-", "-o", out]),
        ("bad --dtype", ["sim", "--dtype", "int12", "-o", out]),
        ("bad --count", ["sim", "-n", "ten", "-o", out]),
        ("--repeat with sim", ["sim", "--repeat", "2", "-o", out]),
        ("--poisson with raw", ["raw:-", "--dtype", "uint8", "--shape", "4", "--poisson",
                                "-o", out]),
        ("--tile rank differs from the frame", ["sim", "--shape", "64x64", "--tile", "8",
                                                "-o", out]),
        ("--tile larger than the frame", ["sim", "--shape", "64x64", "--tile", "65x8", "-o",
                                          out]),
        ("--frames-per-chunk 0", ["sim", "--frames-per-chunk", "0", "-o", out]),
        ("--rate 0", ["sim", "--rate", "0", "-o", out]),
        ("relative --path", ["sim", "--path", "entry/data", "-o", out]),
        ("--locking bad", ["sim", "--locking", "maybe", "-o", out]),
        ("a chunk over 4 GiB from --shape", ["sim", "--shape", "100000x100000", "-o", out]),
        ("--shape differs from an h5 source", [AGBE + ":" + AGBE_DATASET, "--shape",
                                               "10x10", "-o", out]),
    ]
    # A shape far too big is refused before the simulator precomputes its 10^10 pixels
    # (that took minutes before the check moved ahead of opening the source).
    try:
        rc, _, err = run(["ingest", "frames", "sim", "--shape", "100000x100000", "-o", out],
                         timeout=10)
        check("a chunk over 4 GiB is refused at once (exit 2, within 10 s)",
              rc == 2 and "4 GiB" in err, "exit %d: %s" % (rc, err.strip()[:200]))
    except subprocess.TimeoutExpired:
        check("a chunk over 4 GiB is refused at once (exit 2, within 10 s)", False,
              "still running after 10 s")
    for name, args in cases:
        if os.path.exists(out):
            os.remove(out)
        rc, stdout, err = run(["ingest", "frames"] + args)
        check("usage error, %s: exit 2 with a message and the usage" % name,
              rc == 2 and err.startswith("h5stream: ") and "usage" in err,
              "status %d, stderr: %s" % (rc, err.strip()))
        check("usage error, %s: nothing created, nothing on stdout" % name,
              not os.path.exists(out) and stdout == "")
    rc, stdout, err = run(["ingest", "frames", "--help"])
    check("ingest frames --help: exit 0, options on stdout",
          rc == 0 and "--frames-per-chunk" in stdout and "--poisson" in stdout)
    src_copy = tmp("self.h5")
    shutil.copy(AGBE, src_copy)
    rc, _, err = run(["ingest", "frames", src_copy + ":" + AGBE_DATASET, "-o", src_copy])
    with h5py.File(src_copy, "r") as f:
        intact = AGBE_DATASET in f
    check("output == the source file: refused with exit 2, source intact",
          rc == 2 and intact, "status %d, %s" % (rc, err.strip()))


def test_nexus_layout():
    out = tmp("nexus.h5")
    rc, stdout, _ = ingest(["sim:ramp", "--shape", "8x9", "-n", "4", "-o", out], "nexus")
    if rc != 0:
        return
    with h5py.File(out, "r", swmr=True) as f:
        for path, cls in (("/entry", "NXentry"), ("/entry/instrument", "NXinstrument"),
                          ("/entry/instrument/detector", "NXdetector"),
                          ("/entry/data", "NXdata")):
            check("nexus: %s NX_class = %s" % (path, cls),
                  path in f and attr_text(f[path], "NX_class") == cls,
                  repr(attr_text(f[path], "NX_class")) if path in f else "missing")
        check("nexus: /entry/data signal = data",
              attr_text(f["/entry/data"], "signal") == "data",
              repr(attr_text(f["/entry/data"], "signal")))
        link = f["/entry/data"].get("data", getlink=True)
        check("nexus: /entry/data/data is a hard link", isinstance(link, h5py.HardLink),
              type(link).__name__)
        same = h5py.h5o.get_info(f["/entry/data/data"].id).addr == \
            h5py.h5o.get_info(f[DATA].id).addr
        check("nexus: /entry/data/data is the same object as the detector data", same)
        bad = mismatch(f["/entry/data/data"][()], ramp(0, 4, (8, 9), "uint16"))
        check("nexus: the data reads the same through the link", bad is None, bad or "")
    check("summary: 'wrote 4 frames' and the dataset on stdout",
          ("wrote 4 frames" in stdout and out + ":" + DATA in stdout), stdout)
    check("summary: h5py snippet with swmr=True, no hdf5plugin without Blosc",
          "import h5py" in stdout and "swmr=True" in stdout and "hdf5plugin" not in stdout,
          stdout)
    rc, stdout, _ = ingest(["sim", "--shape", "8x9", "-n", "2", "--compress", "blosc", "-o",
                            out], "blosc summary")
    check("summary: Blosc output mentions import hdf5plugin", "import hdf5plugin" in stdout,
          stdout)


def test_chunks_and_partial_band():
    cases = [
        ("none", ["--tile", "4x5", "--frames-per-chunk", "3"], (3, 4, 5)),
        ("deflate", ["--tile", "10x12", "--frames-per-chunk", "4", "--compress",
                     "deflate:6:shuffle"], (4, 10, 12)),
        ("blosc", ["--tile", "3x7", "--frames-per-chunk", "3", "--compress",
                   "blosc:zstd:3:bitshuffle", "--fill", "7"], (3, 3, 7)),
        ("whole frame", [], (1, 10, 12)),
    ]
    for name, extra, chunks in cases:
        out = tmp("chunks_%s.h5" % name.replace(" ", "_"))
        n = 10
        rc, _, _ = ingest(["sim:ramp", "--dtype", "int16", "--shape", "10x12", "-n", str(n),
                           "-o", out, "-q"] + extra, "chunks %s" % name)
        if rc != 0:
            continue
        with h5py.File(out, "r") as f:
            d = f[DATA]
            check("chunks %s: chunk shape %s" % (name, chunks), d.chunks == chunks,
                  str(d.chunks))
            check("chunks %s: extent exactly %d frames" % (name, n), d.shape == (n, 10, 12),
                  str(d.shape))
            bad = mismatch(d[()], ramp(0, n, (10, 12), "int16"))
            check("chunks %s: content exact, last partial band included" % name, bad is None,
                  bad or "")
            check("chunks %s: frame_id == arange(%d)" % (name, n),
                  np.array_equal(f[FRAME_ID][()], np.arange(n)))
            if "--fill" in extra:
                check("chunks %s: fill value 7" % name, d.fillvalue == 7, str(d.fillvalue))
    # 1-D frames with a tile
    out = tmp("chunks_1d.h5")
    rc, _, _ = ingest(["sim:ramp", "--dtype", "float32", "--shape", "100", "--tile", "32",
                       "--frames-per-chunk", "8", "-n", "13", "-o", out, "-q"], "chunks 1-D")
    if rc == 0:
        with h5py.File(out, "r") as f:
            d = f[DATA]
            check("chunks 1-D: chunk (8, 32), extent (13, 100)",
                  d.chunks == (8, 32) and d.shape == (13, 100), "%s %s" % (d.chunks, d.shape))
            bad = mismatch(d[()], ramp(0, 13, (100,), "float32"))
            check("chunks 1-D: content exact", bad is None, bad or "")


def test_custom_path_and_rate():
    out = tmp("custom.h5")
    t0 = time.monotonic()
    rc, stdout, _ = ingest(["sim:ramp", "--shape", "6x6", "-n", "10", "--rate", "20",
                            "--path", "/cam2/image", "-o", out], "--path and --rate")
    elapsed = time.monotonic() - t0
    if rc != 0:
        return
    check("--rate 20: 10 frames take about 0.45 s or more", elapsed >= 0.4,
          "%.2f s" % elapsed)
    with h5py.File(out, "r") as f:
        check("--path: data at /cam2/image, frame_id beside it",
              "/cam2/image" in f and np.array_equal(f["/cam2/image_frame_id"][()],
                                                     np.arange(10)))
        check("--path: no NeXus default dataset", DATA not in f)
        bad = mismatch(f["/cam2/image"][()], ramp(0, 10, (6, 6), "uint16"))
        check("--path: content exact", bad is None, bad or "")
    check("--path: summary names the dataset", out + ":/cam2/image" in stdout, stdout)


def test_sigint():
    out = tmp("sigint.h5")
    p = subprocess.Popen([BIN, "ingest", "frames", "sim", "--shape", "64x64", "--rate", "50",
                          "-n", "1000000", "-o", out], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        time.sleep(1.5)
        p.send_signal(signal.SIGINT)
        stdout, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    err = err.decode("utf-8", "replace")
    check("SIGINT: exit status 1", p.returncode == 1, "status %s, %s" %
          (p.returncode, err.strip()))
    if not os.path.exists(out):
        check("SIGINT: output exists", False)
        return
    with h5py.File(out, "r") as f:
        n = f[DATA].shape[0]
        fid = f[FRAME_ID][()]
        state = f["/h5stream/writer"][0]["state"] if "/h5stream/writer" in f else None
    check("SIGINT: message says how many frames were written",
          ("wrote %d frames" % n) in err, err.strip())
    check("SIGINT: frames appended so far are committed, file closed cleanly",
          n > 10 and np.array_equal(fid, np.arange(n)) and state == 1,
          "%d frames, writer state %s" % (n, state))


def test_dispatch():
    rc, out, _ = run(["--version"])
    check("--version", rc == 0 and out.startswith("h5stream 0.1.0"), out.strip())
    for args in (["--help"], ["help"]):
        rc, out, _ = run(args)
        check("%s: exit 0, lists the commands, points at docs/cli.md" % args[0],
              rc == 0 and all(c in out for c in ("ingest", "tail", "info", "recover",
                                                  "bench", "docs/cli.md")), out[:200])
    rc, out, err = run([])
    check("no command: exit 2, usage on stderr", rc == 2 and "usage" in err and out == "")
    rc, out, err = run(["frobnicate"])
    check("unknown command: exit 2, usage on stderr",
          rc == 2 and "usage" in err and "frobnicate" in err and out == "", err.strip())
    for model in ("tracts", "volumes", "marc"):
        # Each model's own command gets the arguments: a missing source "x" is its error.
        rc, _, err = run(["ingest", model, "x", "-o", tmp("m.h5")])
        check("ingest %s x: the model's command refuses it (exit 1 or 2, a message)" % model,
              rc in (1, 2) and "unknown model" not in err and err.strip() != "", err.strip())
    rc, _, err = run(["ingest"])
    check("ingest without a model: exit 2", rc == 2, err.strip())


TESTS = [test_dispatch, test_ramp_dtypes_and_shapes, test_sim_poisson, test_raw_roundtrip,
         test_raw_short_last_frame, test_h5_repeat, test_h5_poisson, test_usage_errors,
         test_nexus_layout, test_chunks_and_partial_band, test_custom_path_and_rate,
         test_sigint]


def main():
    shutil.rmtree(TMP, ignore_errors=True)
    os.makedirs(TMP)
    print("info  binary %s" % BIN, flush=True)
    if not check("h5stream binary exists", os.access(BIN, os.X_OK), BIN):
        print("%d passed, %d failed" % (passed, failed))
        return 1
    if not check("AgBehenate_228.hdf5 exists", os.path.exists(AGBE), AGBE):
        print("%d passed, %d failed" % (passed, failed))
        return 1
    only = sys.argv[1:]
    for t in TESTS:
        if only and t.__name__ not in only:
            continue
        print("----  %s" % t.__name__, flush=True)
        try:
            t()
        except Exception:  # a crash in one test is its failure, not the end of the run
            check(t.__name__ + " ran to the end", False, traceback.format_exc())
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
