#!/usr/bin/env python3
"""`h5stream ingest frames ... --append`: a stream continues in an existing file.

Covers a clean append (content, frame_id continuing, codec kept), the crash workflow
(a killed writer's file refuses to append until `h5stream recover`, then continues after
the last committed frame), and the refusals: a padded last band, a frame shape that does
not match, and layout options that would change the dataset.
"""
import os
import signal
import subprocess
import time

import h5py
import hdf5plugin  # noqa: F401  (Blosc)
import numpy as np

import h5s_scriptlib as lib

SHAPE = (16, 24)


def run(p, args):
    r = subprocess.run([p.bin] + args, capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout, r.stderr


def ingest(p, out, n, extra=()):
    return run(p, ["ingest", "frames", "sim:ramp", "--shape", "16x24", "--dtype", "uint16",
                   "-n", str(n), "-q", "-o", out] + list(extra))


def check_stream(checks, name, out, parts):
    """parts: list of (frames, first ramp index) in file order."""
    with h5py.File(out, "r") as f:
        data = f[lib.DATA_PATH][:]
        ids = f[lib.FRAME_ID_PATH][:]
        ts = f[lib.TIMESTAMP_PATH][:]
    total = sum(n for n, _ in parts)
    checks.equal("%s: frames in the file" % name, (data.shape[0], ids.shape[0], ts.shape[0]),
                 (total, total, total))
    checks.check("%s: frame_id runs 0..%d" % (name, total - 1),
                 np.array_equal(ids, np.arange(total)), "ids[:5]=%s" % ids[:5])
    at, problems = 0, []
    for n, first in parts:
        bad = lib.first_mismatch(data[at:at + n], lib.ramp_frames(first, n, SHAPE, "uint16"), at)
        if bad:
            problems.append(bad)
        at += n
    checks.check("%s: every frame's content" % name, not problems, "; ".join(problems) or "ok")


def clean_append(checks, p, d):
    out = os.path.join(d, "clean.h5")
    code, _, err = ingest(p, out, 40, ["--compress", "blosc:zstd:3:bitshuffle"])
    checks.equal("clean: first run exits 0", code, 0, err)
    code, out_text, err = run(p, ["ingest", "frames", "sim:ramp", "--shape", "16x24",
                                  "--dtype", "uint16", "-n", "25", "--append", "-o", out])
    checks.equal("clean: --append exits 0", code, 0, err)
    checks.check("clean: the summary gives the new total", "now holds 65 frames" in out_text,
                 out_text.strip()[:200])
    check_stream(checks, "clean", out, [(40, 0), (25, 0)])
    with h5py.File(out, "r") as f:
        cd = f[lib.DATA_PATH]._filters.get("32001", ())
    checks.check("clean: the dataset keeps its Blosc zstd bitshuffle codec",
                 len(cd) >= 7 and cd[4] == 3 and cd[5] == 2 and cd[6] == 5, "cd_values %s" % (cd,))


def crash_then_append(checks, p, d):
    out = os.path.join(d, "crashed.h5")
    log = open(out + ".log", "w")
    w = subprocess.Popen([p.bin, "ingest", "frames", "sim:ramp", "--shape", "16x24",
                          "--dtype", "uint16", "-n", "1000000", "--rate", "400",
                          "--flush-ms", "50", "-q", "-o", out], stdout=log,
                         stderr=subprocess.STDOUT)
    seen, deadline = 0, time.monotonic() + 20
    try:
        while time.monotonic() < deadline and seen < 60:
            try:
                with h5py.File(out, "r", libver="latest", swmr=True) as f:
                    seen = f[lib.FRAME_ID_PATH].shape[0]
            except (OSError, KeyError):
                pass
            time.sleep(0.05)
        w.send_signal(signal.SIGKILL)
        w.wait()
    finally:
        lib.stop_process(w)
        log.close()
    checks.check("crash: the writer committed frames before the kill", seen >= 60,
                 "%d committed" % seen)
    code, _, err = ingest(p, out, 10, ["--append"])
    checks.check("crash: --append refuses the killed writer's file and says to recover",
                 code == 1 and "recover" in err, "exit %d: %s" % (code, err.strip()[:300]))
    code, text, err = run(p, ["recover", out])
    checks.equal("crash: recover exits 0", code, 0, err)
    with h5py.File(out, "r") as f:
        kept = f[lib.FRAME_ID_PATH].shape[0]
    checks.check("crash: recover kept every frame committed before the kill", kept >= seen,
                 "%d kept, %d seen" % (kept, seen))
    code, _, err = ingest(p, out, 20, ["--append"])
    checks.equal("crash: --append after recover exits 0", code, 0, err)
    check_stream(checks, "crash", out, [(kept, 0), (20, 0)])


def refusals(checks, p, d):
    out = os.path.join(d, "banded.h5")
    code, _, err = ingest(p, out, 10, ["--frames-per-chunk", "4"])
    checks.equal("banded: first run exits 0", code, 0, err)
    code, _, err = ingest(p, out, 5, ["--append"])
    checks.check("banded: a padded last band refuses to append (exit 1, says why)",
                 code == 1 and "holds 2 of 4 frames" in err, "exit %d: %s" % (code, err.strip()))
    with h5py.File(out, "r") as f:
        checks.equal("banded: the file still holds its 10 frames", f[lib.DATA_PATH].shape[0], 10)

    out = os.path.join(d, "shape.h5")
    ingest(p, out, 5)
    code, _, err = run(p, ["ingest", "frames", "sim:ramp", "--shape", "16x25", "--dtype",
                           "uint16", "-n", "5", "--append", "-o", out])
    checks.check("shape: other frame shapes are refused (exit 1, both shapes named)",
                 code == 1 and "16x25" in err and "16x24" in err, "exit %d: %s" % (code, err))
    code, _, err = ingest(p, out, 5, ["--append", "--tile", "8x8"])
    checks.check("layout: --tile with --append is a usage error (exit 2)",
                 code == 2 and "--tile" in err, "exit %d: %s" % (code, err.strip()[:200]))
    code, _, err = ingest(p, os.path.join(d, "missing.h5"), 5, ["--append"])
    checks.check("missing: --append to a missing file exits 1", code == 1 and "no such" in err,
                 "exit %d: %s" % (code, err.strip()))


def body(checks, p):
    d = p.fresh_dir("append")
    clean_append(checks, p, d)
    crash_then_append(checks, p, d)
    refusals(checks, p, d)


if __name__ == "__main__":
    lib.run_main(body)
