#!/usr/bin/env python3
"""The writer keeps the end-of-allocation (EOA) stored in the superblock current.

During SWMR writing HDF5 only rewrites the superblock when the file is flushed, so its
stored EOA goes stale; `h5clear -s` alone truncates a crashed file to that EOA
(DESIGN.md section 3). h5stream calls H5Fflush at its first commit and then at least once
a second. This test reads the superblock (version 2/3 layout: signature, version, sizes,
flags, base address, extension address, then the EOA at byte 28) while a writer runs and
checks that the stored EOA never trails the real file size by more than ~1 s of growth.
"""
import os
import struct
import subprocess
import time

import h5s_scriptlib as lib

SIGNATURE = b"\x89HDF\r\n\x1a\n"
LAG_S = 2.0  # H5Fflush every ~1 s, plus margin for a loaded machine (sanitizer builds)


def stored_eoa(path):
    """The EOA recorded in the superblock, or None if the file has no v2/3 superblock yet."""
    with open(path, "rb") as f:
        head = f.read(36)
    if len(head) < 36 or head[:8] != SIGNATURE or head[8] not in (2, 3) or head[9] != 8:
        return None
    return struct.unpack_from("<Q", head, 28)[0]


def body(checks, p):
    out = os.path.join(p.fresh_dir("superblock_eoa"), "eoa.h5")
    log = open(out + ".log", "w")
    writer = subprocess.Popen(
        [p.bin, "ingest", "frames", "sim:ramp", "--shape", "128x128", "--dtype", "uint16",
         "-n", "100000", "--rate", "300", "--flush-ms", "100", "-q", "-o", out],
        stdout=log, stderr=subprocess.STDOUT)
    samples = []  # (seconds since start, file size, stored EOA)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 6.0 and writer.poll() is None:
            if os.path.exists(out):
                eoa = stored_eoa(out)
                size = os.path.getsize(out)
                if eoa is not None:
                    samples.append((time.monotonic() - t0, size, eoa))
            time.sleep(0.05)
    finally:
        still_running = writer.poll() is None
        lib.stop_process(writer)
        log.close()
    checks.check("the writer ran for the whole observation", still_running,
                 lib.tail_text(out + ".log"))
    checks.check("superblock samples taken", len(samples) > 50, "%d samples" % len(samples))
    if not samples:
        return
    final_size = samples[-1][1]
    checks.check("the file grew", final_size > 20 * 1024 * 1024,
                 "%d bytes after %.1f s" % (final_size, samples[-1][0]))

    # For every sample, the stored EOA covers the file as it was LAG_S seconds earlier.
    worst = None
    for t, size, eoa in samples:
        earlier = [s for (u, s, _) in samples if u <= t - LAG_S]
        if not earlier:
            continue
        if eoa < earlier[-1] and (worst is None or earlier[-1] - eoa > worst[1]):
            worst = (t, earlier[-1] - eoa, eoa, earlier[-1])
    checks.check("stored EOA never trails the file by more than %.1f s of growth" % LAG_S,
                 worst is None,
                 "ok" if worst is None else
                 "at %.2f s the EOA was %d, the file %.1f s earlier %d bytes (%d short)" %
                 (worst[0], worst[2], LAG_S, worst[3], worst[1]))
    distinct = sorted(set(e for (_, _, e) in samples))
    checks.check("the stored EOA was rewritten several times while writing",
                 len(distinct) >= 4, "%d distinct values" % len(distinct))


if __name__ == "__main__":
    lib.run_main(body)
