#!/usr/bin/python3
"""test_recover_models.py - kill -9 a tracts writer mid-stream, recover, check what is kept.

docs/format.md ("Models") and docs/cli.md ("recover"): the tracts layout is a group of
columns whose marker, /tracts/offsets, is written only after the payload columns are
flushed. The test replays a real tractogram with `ingest tracts --rate`, follows the file
with an h5py SWMR reader until it has seen at least 2,000 committed streamlines, remembers
that count c, and sends SIGKILL. Then `h5stream recover` must exit 0 and report the
marker, and a plain h5py open must show:
  - offsets[0] == 0, offsets non-decreasing, at least c + 1 of them;
  - positions at least as long as the last offset (no committed point lost);
  - the streamlines equal to the source's (the same 1,000 repeated), within float16;
  - an export of the recovered file to TRX that the independent checker accepts.
"""

import os
import signal
import subprocess
import time

import numpy as np

import h5py

import h5s_scriptlib as lib

SOURCE = "tracts/small_pascal_legacy_offsets.trx"


def committed(path):
    """Streamlines an SWMR reader sees committed now (0 before the file is ready)."""
    try:
        with h5py.File(path, "r", libver="latest", swmr=True) as f:
            return max(0, f["/tracts/offsets"].shape[0] - 1)
    except (OSError, KeyError):
        return 0


def body(checks, p):
    src = os.path.join(p.shared_data, SOURCE)
    if not checks.check("source tractogram present", os.path.exists(src), src):
        return
    out = os.path.join(p.tmp, "killed.h5")
    if os.path.exists(out):
        os.remove(out)
    proc = subprocess.Popen([p.bin, "ingest", "tracts", src, "--repeat", "50", "--rate",
                             "4000", "--flush-ms", "50", "-o", out, "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = 0
    deadline = time.monotonic() + 60
    try:
        while seen < 2000 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            seen = committed(out)
        checks.check("the writer was still running at the kill", proc.poll() is None,
                     "committed %d" % seen)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        lib.stop_process(proc)
    checks.check("a reader saw >= 2000 committed streamlines before the kill", seen >= 2000,
                 str(seen))

    r = subprocess.run([p.bin, "recover", out], capture_output=True, text=True)
    checks.equal("recover exits 0", r.returncode, 0, r.stderr.strip())
    checks.check("recover reports the tracts marker and the items it keeps",
                 "1 other commit marker" in r.stdout and "committed item" in r.stdout,
                 r.stdout.strip())

    with h5py.File(out, "r") as f:
        off = f["/tracts/offsets"][:]
        pos = f["/tracts/positions"]
        checks.check("offsets start at 0 and never decrease",
                     off[0] == 0 and bool(np.all(np.diff(off.astype(np.int64)) >= 0)))
        checks.check("every streamline seen committed before the kill is kept",
                     len(off) - 1 >= seen, "%d kept, %d seen" % (len(off) - 1, seen))
        checks.check("positions cover the last offset", pos.shape[0] >= int(off[-1]),
                     "%d points, last offset %d" % (pos.shape[0], int(off[-1])))
        n = len(off) - 1
        points = pos[: int(off[-1])].astype(np.float32)
    # The source repeated: streamline i of the file is streamline i % 1000 of the source.
    exported = os.path.join(p.tmp, "source.trx")
    x = subprocess.run([p.bin, "export", out, "--to", "trx", "-o", exported],
                       capture_output=True, text=True)
    checks.equal("the recovered file exports to TRX", x.returncode, 0, x.stderr.strip())
    chk = subprocess.run(["/usr/bin/python3", os.path.join(p.source, "tests", "scripts",
                                                           "trx_check.py"), exported],
                         capture_output=True, text=True)
    checks.equal("the independent TRX checker accepts the export", chk.returncode, 0,
                 (chk.stdout + chk.stderr).strip()[-400:])
    ref_h5 = os.path.join(p.tmp, "ref.h5")
    if os.path.exists(ref_h5):
        os.remove(ref_h5)
    rr = subprocess.run([p.bin, "ingest", "tracts", src, "-o", ref_h5, "-q"],
                        capture_output=True, text=True)
    checks.equal("the source ingests cleanly as a reference", rr.returncode, 0,
                 rr.stderr.strip())
    with h5py.File(ref_h5, "r") as f:
        roff = f["/tracts/offsets"][:]
        rpos = f["/tracts/positions"][:].astype(np.float32)
    nsrc = len(roff) - 1
    bad = 0
    for i in range(n):
        a = points[int(off[i]):int(off[i + 1])]
        b = rpos[int(roff[i % nsrc]):int(roff[i % nsrc + 1])]
        if a.shape != b.shape or not np.array_equal(a, b):
            bad += 1
    checks.equal("every kept streamline equals the source's", bad, 0,
                 "%d streamlines compared" % n)


if __name__ == "__main__":
    lib.run_main(body)
