#!/usr/bin/env python3
"""Readers on damaged files: a clear error, never a hang or a crash.

Copies of a cleanly closed file get a few bytes flipped at seeded random offsets (in its
metadata or its chunks) or are cut short; `h5stream tail` and `h5stream info` must then
finish within a time limit, exit 0 (the damage hit nothing they read) or 1 (with a
message), and never die from a signal. Before SWMR reads capped their metadata retries,
one flipped byte could keep a reader waiting for minutes.
"""
import os
import random
import shutil
import subprocess
import time

import h5s_scriptlib as lib

SEED = int(os.environ.get("H5S_CORRUPT_SEED", "20261121"))
LIMIT_S = 60  # a reader must finish well inside this; a hang is a failure


def run(p, args):
    t0 = time.monotonic()
    try:
        r = subprocess.run([p.bin] + args, capture_output=True, text=True, timeout=LIMIT_S)
    except subprocess.TimeoutExpired:
        return None, time.monotonic() - t0, ""
    return r.returncode, time.monotonic() - t0, r.stderr


def damaged_copies(src, d, rng):
    size = os.path.getsize(src)
    with open(src, "rb") as f:
        data = bytearray(f.read())
    for i in range(8):
        bad = bytearray(data)
        # Half the copies hit the first 8 KiB (superblock, object headers), half anywhere.
        span = 8192 if i % 2 == 0 else size
        where = sorted(rng.randrange(span) for _ in range(3))
        for w in where:
            bad[w] ^= 1 << rng.randrange(8)
        path = os.path.join(d, "flip%d.h5" % i)
        with open(path, "wb") as f:
            f.write(bad)
        yield path, "3 bits flipped at %s" % where
    for cut in (size // 2, size // 10, 100):
        path = os.path.join(d, "cut%d.h5" % cut)
        with open(path, "wb") as f:
            f.write(data[:cut])
        yield path, "cut at byte %d of %d" % (cut, size)


def body(checks, p):
    d = p.fresh_dir("corrupt")
    src = os.path.join(d, "good.h5")
    r = subprocess.run([p.bin, "ingest", "frames", "sim:ramp", "--shape", "32x48", "-n", "40",
                        "--compress", "blosc:lz4:5:shuffle", "-q", "-o", src],
                       capture_output=True, text=True, timeout=120)
    checks.equal("the clean file is written", r.returncode, 0, r.stderr)
    checks.info("seed %d (H5S_CORRUPT_SEED replays another)" % SEED)
    rng = random.Random(SEED)
    for path, what in damaged_copies(src, d, rng):
        for cmd in (["tail", path], ["info", path]):
            code, secs, err = run(p, cmd)
            name = "%s on %s (%s)" % (cmd[0], os.path.basename(path), what)
            if code is None:
                checks.check(name, False, "still running after %d s: a hang" % LIMIT_S)
            elif code < 0:
                checks.check(name, False, "killed by signal %d: %s" % (-code, err[-300:]))
            else:
                checks.check(name, code in (0, 1) and (code == 0 or "h5stream:" in err),
                             "exit %d in %.1f s%s" % (code, secs,
                                                      (": " + err.strip()[:160]) if code else ""))
    shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    lib.run_main(body)
