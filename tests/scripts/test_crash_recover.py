#!/usr/bin/python3
"""test_crash_recover.py - kill -9 the writer mid-stream, recover, check every committed frame.

DESIGN.md sections 3 and 7 and docs/cli.md ("recover"). For each case the test starts
`h5stream ingest frames sim:ramp ... --flush-every 20 --flush-ms 100` at a moderate rate
(one case at a high rate, so that kills also land inside commits), follows it with an h5py
SWMR reader, and at a seeded random moment remembers the committed count c (the frame_id
length it just saw) and sends SIGKILL. Then `h5stream recover F` must exit 0, and a plain
h5py open (no SWMR) must show:
  - frame_id length >= c (no committed frame lost) and frame_id == 0, 1, 2, ...;
  - data.shape[0] and the timestamp length == frame_id length, every timestamp within
    the writer's run;
  - every frame equal to the sim:ramp formula.
Cases cover no compression, Blosc, deflate, 4 frames per chunk and tiles. The seed is
printed; H5S_CRASH_SEED replays another one.

For one killed file a copy is cleared with `h5clear -s` alone (the trap DESIGN.md warns
about); what that copy then holds is printed for information only.
"""

import os
import random
import shutil
import signal
import subprocess
import time

import numpy as np

import h5py
import hdf5plugin  # noqa: F401  (Blosc decoding)

import h5s_scriptlib as lib

SEED = int(os.environ.get("H5S_CRASH_SEED", "20240611"))
SHAPE = (64, 96)
DTYPE = "uint16"
RATE = 400  # frames per second: about 20 commits a second with --flush-every 20
FAST_RATE = 5000  # one case commits every 4 ms, so a kill often lands inside a flush
READ_BLOCK = 512

# name, rate, writer options; the kill moment is drawn per case from the seeded generator.
CASES = [
    ("none", RATE, ["--compress", "none"]),
    ("blosc", RATE, ["--compress", "blosc:lz4:5:shuffle"]),
    ("none-fpc4", RATE, ["--compress", "none", "--frames-per-chunk", "4"]),
    ("blosc-fpc4-tiles", RATE, ["--compress", "blosc:zstd:3:bitshuffle",
                                "--frames-per-chunk", "4", "--tile", "32x48"]),
    ("deflate", RATE, ["--compress", "deflate:4:shuffle"]),
    ("deflate-fpc4-tiles", RATE, ["--compress", "deflate:1", "--frames-per-chunk", "4",
                                  "--tile", "16x96"]),
    ("blosc-fast", FAST_RATE, ["--compress", "blosc:lz4:1:bitshuffle"]),
]
TRAP_CASE = "blosc"  # the case whose killed file is also cleared with h5clear -s alone


def open_swmr(path, writer, timeout_s):
    """An h5py SWMR reader on path once the writer has started SWMR; (file, error)."""
    deadline = time.monotonic() + timeout_s
    error = "file does not exist"
    while time.monotonic() < deadline and writer.poll() is None:
        if os.path.exists(path):
            try:
                f = h5py.File(path, "r", libver="latest", swmr=True)
                try:
                    f[lib.FRAME_ID_PATH]
                    return f, None
                except KeyError as e:
                    f.close()
                    error = str(e)
            except OSError as e:
                error = str(e)
        time.sleep(0.01)
    if writer.poll() is not None:
        return None, "writer exited with status %r before SWMR reading could start" % writer.poll()
    return None, "no SWMR open within %d s: %s" % (timeout_s, error)


def kill_after(path, writer, delay_s):
    """Follows the commit marker for delay_s, then SIGKILLs the writer.

    Returns (c, error): c is the frame_id length read just before the kill."""
    f, error = open_swmr(path, writer, 30)
    if f is None:
        return None, error
    with f:
        frame_id = f[lib.FRAME_ID_PATH]
        end = time.monotonic() + delay_s
        while time.monotonic() < end:
            time.sleep(0.01)
            frame_id.refresh()
        frame_id.refresh()
        committed = frame_id.shape[0]
        if writer.poll() is not None:
            return committed, "writer already exited with status %r" % writer.returncode
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    return committed, None


def frame_counts_plain(path, read_frames=False):
    """What a plain h5py open shows: frame_id and data lengths (and, with read_frames,
    how many frames read back equal to the ramp), or why it cannot open."""
    try:
        with h5py.File(path, "r") as f:
            n, data = f[lib.FRAME_ID_PATH].shape[0], f[lib.DATA_PATH]
            text = "frame_id %d, data %d" % (n, data.shape[0])
            if read_frames:
                text += ", %s" % count_good_frames(data, min(n, data.shape[0]))
            return text
    except Exception as e:  # information only: any failure is what it is
        return "cannot open: %s" % str(e).splitlines()[0]


def count_good_frames(data, n):
    """How many of frames 0..n-1 read back equal to the ramp (information only)."""
    good, failed = 0, 0
    for i in range(n):
        try:
            good += lib.first_mismatch(data[i:i + 1], lib.ramp_frames(i, 1, SHAPE, DTYPE)) is None
        except Exception:  # a chunk cut off by the truncation
            failed += 1
    return "%d of %d frames read back correct, %d unreadable" % (good, n, failed)


def show_h5clear_trap(checks, name, killed_copy):
    """Information only: what `h5clear -s` alone leaves of a killed file."""
    size_before = os.path.getsize(killed_copy)
    run = subprocess.run(["h5clear", "-s", killed_copy], capture_output=True, timeout=60)
    checks.info("%s: h5clear -s alone on a copy: exit %d, file %d -> %d bytes, then %s"
                % (name, run.returncode, size_before, os.path.getsize(killed_copy),
                   frame_counts_plain(killed_copy, read_frames=True)))


def check_frames(checks, name, data, n):
    """Every frame of data[0:n] equals the ramp formula."""
    for first in range(0, n, READ_BLOCK):
        last = min(n, first + READ_BLOCK)
        mismatch = lib.first_mismatch(data[first:last],
                                      lib.ramp_frames(first, last - first, SHAPE, DTYPE), first)
        if mismatch:
            return checks.check("%s: every recovered frame equals the ramp" % name, False,
                                mismatch)
    return checks.check("%s: every recovered frame equals the ramp" % name, n > 0,
                        "%d frames" % n if n else "no frames at all")


def check_timestamps(checks, name, stamps, n, run_window):
    """timestamp (beside frame_id) trimmed to the marker, each within the writer's run."""
    if not checks.equal("%s: timestamp length == frame_id length" % name, len(stamps), n):
        return
    outside = np.flatnonzero(~((stamps >= run_window[0]) & (stamps <= run_window[1])))
    checks.check("%s: every timestamp within the writer's run" % name, outside.size == 0,
                 "%d timestamps" % n if outside.size == 0 else
                 "expected seconds since the epoch in [%.3f, %.3f], seen %d outside, first "
                 "frame %d: %r" % (run_window + (outside.size, outside[0], stamps[outside[0]])))


def check_recovered(checks, name, path, committed, run_window):
    """Plain (non-SWMR) open of the recovered file: marker, extent, content."""
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        checks.check("%s: recovered file opens without SWMR" % name, False,
                     "h5py.File(F, 'r') failed: %s" % e)
        return
    with f:
        ids = f[lib.FRAME_ID_PATH][()]
        data = f[lib.DATA_PATH]
        n = len(ids)
        checks.check("%s: no committed frame lost" % name, n >= committed,
                     "expected frame_id length >= %d (seen before the kill), seen %d"
                     % (committed, n))
        checks.equal("%s: data.shape[0] == frame_id length" % name, data.shape[0], n)
        checks.check("%s: frame_id == 0..%d" % (name, n - 1),
                     np.array_equal(ids, np.arange(n, dtype=ids.dtype)),
                     "%d ids" % n if np.array_equal(ids, np.arange(n, dtype=ids.dtype)) else
                     "first differing position %d" % int(np.argmax(ids != np.arange(n))))
        check_frames(checks, name, data, min(n, data.shape[0]))
        check_timestamps(checks, name, f[lib.TIMESTAMP_PATH][()], n, run_window)
        try:
            checks.info("%s: after recover: writer state %d, %d frames (%d seen before kill)"
                        % (name, int(f[lib.STATUS_PATH][0]["state"]), n, committed))
        except (OSError, KeyError) as e:
            checks.info("%s: /h5stream/writer unreadable: %s" % (name, e))


def run_case(checks, p, rng, name, rate, options):
    out_dir = p.fresh_dir("crash_recover_" + name)
    path = os.path.join(out_dir, "killed.h5")
    delay = round(rng.uniform(0.3, 2.5), 3)
    cmd = [p.bin, "ingest", "frames", "sim:ramp", "--shape", "%dx%d" % SHAPE, "--dtype", DTYPE,
           "-n", "1000000", "--rate", str(rate), "--flush-every", "20", "--flush-ms", "100",
           "-o", path] + options
    checks.info("%s: kill %.3f s after SWMR opens: %s" % (name, delay, " ".join(cmd)))
    with open(os.path.join(out_dir, "writer.stderr"), "wb") as err:
        started = time.time()
        writer = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        try:
            committed, error = kill_after(path, writer, delay)
        finally:
            lib.stop_process(writer)
        run_window = (started, time.time())
    if not checks.check("%s: writer killed mid-stream" % name, error is None,
                        error and "%s (stderr: %s)" % (
                            error, lib.tail_text(os.path.join(out_dir, "writer.stderr")))):
        return
    checks.check("%s: frames were committed before the kill" % name, committed > 0,
                 "expected frame_id length > 0 after %.3f s at %d Hz, seen %d"
                 % (delay, rate, committed))
    checks.info("%s: before recover, plain open: %s" % (name, frame_counts_plain(path)))

    if name == TRAP_CASE:
        trap_copy = os.path.join(out_dir, "h5clear-only.h5")
        shutil.copyfile(path, trap_copy)
        show_h5clear_trap(checks, name, trap_copy)

    run = subprocess.run([p.bin, "recover", path], capture_output=True, timeout=120)
    if not checks.equal("%s: h5stream recover exit status" % name, run.returncode, 0,
                        "stderr: %s" % run.stderr.decode(errors="replace").strip()
                        if run.returncode else ""):
        return
    for line in run.stdout.decode(errors="replace").strip().splitlines():
        checks.info("%s: recover says: %s" % (name, line))
    check_recovered(checks, name, path, committed, run_window)


def main(checks, p):
    checks.info("seed %d (set H5S_CRASH_SEED to change it)" % SEED)
    rng = random.Random(SEED)
    for name, rate, options in CASES:
        run_case(checks, p, rng, name, rate, options)


if __name__ == "__main__":
    lib.run_main(main)
