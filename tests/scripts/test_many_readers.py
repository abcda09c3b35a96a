#!/usr/bin/python3
"""test_many_readers.py - the ctest form of many_readers.py: one writer at full speed and
8 SWMR reader processes (3 h5py, 3 `h5stream tail -f --json`, 2 examples/read_frames on
the C reader API) for H5S_MANY_READERS_SECONDS (default 15) seconds.

It asserts what many_readers.py checks (every reader sees every committed frame, each
checks them against the sim:ramp formula or its crc32, the h5py readers a seeded sample
when they fall behind, no reader errors, the writer stops as SIGINT makes it and the file
is closed) and prints its figures: frames written per second, frames each reader saw and
checked, and the lag from commit to visible, p50 and p99. The full run is
`many_readers.py --seconds 60`.
"""

import json
import os
import subprocess
import sys

import h5s_scriptlib as lib

SECONDS = float(os.environ.get("H5S_MANY_READERS_SECONDS", "15"))


def body(checks, p):
    build = os.environ.get("H5S_BUILD", os.path.dirname(os.path.dirname(p.bin)))
    read_frames = os.path.join(build, "examples", "read_frames")
    if not checks.check("examples/read_frames exists (the C API readers)",
                        os.access(read_frames, os.X_OK), read_frames):
        return
    d = p.fresh_dir("many_readers")
    summary = os.path.join(d, "summary.json")
    cmd = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                        "many_readers.py"),
           "--seconds", str(SECONDS), "--readers", "8", "--bin", p.bin,
           "--read-frames", read_frames, "--dir", os.path.join(d, "run"), "--json", summary]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=SECONDS + 600)
    except subprocess.TimeoutExpired:
        checks.check("many_readers.py ends", False, "still running after %d s" % (SECONDS + 600))
        return
    print(r.stdout, end="")
    if r.stderr.strip():
        print(r.stderr, end="")
    checks.equal("many_readers.py exits 0 (every reader saw and checked every frame)",
                 r.returncode, 0, r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "")
    if not os.path.exists(summary):
        checks.check("the summary was written", False, summary)
        return
    with open(summary) as f:
        s = json.load(f)
    checks.check("the writer wrote frames", (s.get("frames") or 0) > 0,
                 "%s frames, %.0f frames/s" % (s.get("frames"), s.get("frames_per_s", 0)))
    readers = s.get("readers", [])
    checks.equal("8 readers reported", len(readers), 8)
    for rd in readers:
        checks.check("%s: saw every frame, no error" % rd.get("name"),
                     rd.get("seen") == s.get("frames") and not rd.get("errors"),
                     "saw %s of %s, checked %s; errors: %s" % (
                         rd.get("seen"), s.get("frames"), rd.get("checked"),
                         "; ".join(rd.get("errors", [])[:3]) or "none"))
    checks.info("lag commit to visible: p50 %.1f ms, p99 %.1f ms" %
                (s.get("lag_p50_ms", float("nan")), s.get("lag_p99_ms", float("nan"))))


if __name__ == "__main__":
    lib.run_main(body)
