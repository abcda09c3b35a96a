#!/usr/bin/python3
"""test_live_readers.py - one SWMR writer, several reader processes reading while it writes.

DESIGN.md sections 3 and 7: a writer appends frames while separate reader processes tail
the same file and check every frame's content. For each scenario this test starts

  (a) the C reader, `h5stream tail F -f --json`, BEFORE the writer exists, so it must wait
      for the file and for SWMR to start;
  (b) two h5py reader processes (this same file run with --h5py-reader), polling at
      different intervals: they open with swmr=True once the writer has started SWMR,
      then refresh the commit marker (frame_id) first, the data second, and check every
      newly committed frame against the sim:ramp formula, until /h5stream/writer says
      closed and every frame has been seen;

then the writer `h5stream ingest frames sim:ramp ...`. It asserts that the writer exits
0, that every reader saw every frame exactly once with the right content, and that the
readers saw the file grow while the writer was running (they read live, not afterwards).

Scenarios: 3000 frames 64x96 uint16 with blosc:lz4:5:shuffle at 600 Hz; and 602 frames
with no compression, 4 frames per chunk and 32x48 tiles (bands, tiles and a partial last
band under live reading).
"""

import json
import os
import subprocess
import sys
import threading
import time
import zlib

import numpy as np

import h5s_scriptlib as lib

READ_BLOCK = 256  # frames an h5py reader reads and checks at once
MAX_ERRORS = 5  # errors a reader records before it stops listing them
LIVE_MARGIN_S = 0.5  # tail lines this long before the writer exits count as read live


# ---- the h5py reader process -------------------------------------------------------------

def open_when_ready(path, deadline, report):
    """Opens path for SWMR reading once the writer has created it and started SWMR."""
    f, attempts, last_error = lib.open_swmr_when_ready(
        path, (lib.DATA_PATH, lib.FRAME_ID_PATH, lib.STATUS_PATH),
        lambda: time.monotonic() < deadline)
    report["open_attempts"] += attempts
    if f is None:
        report["errors"].append("could not open for SWMR reading before the timeout: %s"
                                % last_error)
    return f


def check_new_frames(data, frame_id, seen, n, frame_shape, dtype):
    """Checks frames seen .. n-1 (covered by the commit marker); returns error texts."""
    errors = []
    for first in range(seen, n, READ_BLOCK):
        last = min(n, first + READ_BLOCK)
        if data.shape[0] < last:
            errors.append("frame_id covers %d frames but data holds only %d"
                          % (n, data.shape[0]))
            return errors
        ids = frame_id[first:last]
        if not np.array_equal(ids, np.arange(first, last, dtype=ids.dtype)):
            errors.append("frame_id[%d:%d] is not %d..%d: starts %s"
                          % (first, last, first, last - 1, ids[:8].tolist()))
        mismatch = lib.first_mismatch(data[first:last],
                                      lib.ramp_frames(first, last - first, frame_shape, dtype),
                                      first)
        if mismatch:
            errors.append("data: " + mismatch)
    return errors


def h5py_reader(path, frame_shape, dtype, interval_s, timeout_s):
    """Follows the file until the writer closes it; returns a report (a dict)."""
    import hdf5plugin  # noqa: F401  (Blosc decoding; lib.open_swmr_when_ready imports h5py)

    report = {"frames": 0, "errors": [], "open_attempts": 0, "polls": 0,
              "counts_while_writing": [], "final_state": None}
    deadline = time.monotonic() + timeout_s
    f = open_when_ready(path, deadline, report)
    if f is None:
        return report
    counts_while_writing = set()
    seen = 0
    with f:
        data, frame_id, status = f[lib.DATA_PATH], f[lib.FRAME_ID_PATH], f[lib.STATUS_PATH]
        while True:
            report["polls"] += 1
            # State first: if it already says closed, the marker read after it is final.
            status.refresh()
            state = int(status[0]["state"])
            frame_id.refresh()  # the commit marker before the payload
            n = frame_id.shape[0]
            data.refresh()
            if n < seen:
                report["errors"].append("frame_id shrank from %d to %d" % (seen, n))
            elif n > seen:
                if len(report["errors"]) < MAX_ERRORS:
                    report["errors"] += check_new_frames(data, frame_id, seen, n,
                                                         frame_shape, dtype)
                seen = n
            if state == lib.STATE_WRITING:
                counts_while_writing.add(n)
            if state == lib.STATE_CLOSED:
                break
            if time.monotonic() > deadline:
                report["errors"].append("writer state still %d after %.0f s" % (state, timeout_s))
                break
            time.sleep(interval_s)
    report["frames"] = seen
    report["final_state"] = state
    report["counts_while_writing"] = sorted(counts_while_writing)
    return report


def reader_main(argv):
    """--h5py-reader FILE HxW DTYPE INTERVAL_MS TIMEOUT_S: prints the report as JSON."""
    path, shape, dtype, interval_ms, timeout_s = argv
    frame_shape = tuple(int(x) for x in shape.split("x"))
    try:
        report = h5py_reader(path, frame_shape, np.dtype(dtype), float(interval_ms) / 1000,
                             float(timeout_s))
    except Exception as e:  # the parent must see every failure as a report
        report = {"frames": 0, "errors": ["reader crashed: %r" % e],
                  "counts_while_writing": []}
    print(json.dumps(report))
    return 0


# ---- the test (parent process) -----------------------------------------------------------

class Scenario:
    """One writer run: what it writes and where its files and logs go."""

    def __init__(self, p, name, count, shape, dtype, rate, writer_options):
        self.name, self.count, self.shape, self.dtype = name, count, shape, dtype
        self.rate, self.writer_options = rate, writer_options
        self.bin = p.bin
        self.out_dir = p.fresh_dir("live_readers_" + name)
        self.path = os.path.join(self.out_dir, "live.h5")

    def out(self, filename):
        return os.path.join(self.out_dir, filename)

    def shape_text(self):
        return "x".join(str(d) for d in self.shape)

    def writer_cmd(self):
        return [self.bin, "ingest", "frames", "sim:ramp", "--shape", self.shape_text(),
                "--dtype", self.dtype, "-n", str(self.count), "--rate", str(self.rate),
                "-o", self.path] + self.writer_options


class LineCollector:
    """Reads a process's stdout lines in a thread, noting when each line arrived."""

    def __init__(self, stream):
        self.lines = []  # (monotonic time, text)
        self.thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self.thread.start()

    def _run(self, stream):
        for raw in stream:
            self.lines.append((time.monotonic(), raw.decode("utf-8", "replace")))

    def join(self, timeout):
        self.thread.join(timeout)


def start_tail(s):
    cmd = [s.bin, "tail", s.path, "-f", "--json", "--interval", "20", "--timeout", "30000"]
    with open(s.out("tail.stderr"), "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
    return proc, LineCollector(proc.stdout)


def start_h5py_reader(s, name, interval_ms):
    cmd = [sys.executable, os.path.abspath(__file__), "--h5py-reader", s.path, s.shape_text(),
           s.dtype, str(interval_ms), "120"]
    with open(s.out(name + ".json"), "wb") as out, open(s.out(name + ".stderr"), "wb") as err:
        return subprocess.Popen(cmd, stdout=out, stderr=err)


def wait_or_kill(proc, timeout_s):
    """Exit code of proc, or None if it had to be killed after timeout_s."""
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        lib.stop_process(proc)
        return None


def first_difference(seen, expected):
    for i, (a, b) in enumerate(zip(seen, expected)):
        if a != b:
            return "%d: seen %r, expected %r" % (i, a, b)
    return "%d (one list is a prefix of the other)" % min(len(seen), len(expected))


def abbreviate(values, keep=6):
    if len(values) <= 2 * keep:
        return str(values)
    return "%s ... %s" % (values[:keep], values[-keep:])


# -- the C reader (tail -f --json)

def expected_stats(s):
    """Per frame of the ramp: (crc32 of its little-endian bytes, min, max, mean)."""
    stats = []
    for first in range(0, s.count, READ_BLOCK):
        frames = lib.ramp_frames(first, min(READ_BLOCK, s.count - first), s.shape, s.dtype)
        le = frames.astype(frames.dtype.newbyteorder("<"), copy=False)
        stats += [(zlib.crc32(f.tobytes()), f.min().item(), f.max().item(),
                   float(f.mean(dtype=np.float64))) for f in le]
    return stats


def parse_tail_lines(checks, s, collector):
    """The JSON objects tail printed (lines that are not JSON fail a check)."""
    records, bad_lines = [], []
    for _, text in collector.lines:
        try:
            records.append(json.loads(text))
        except ValueError:
            bad_lines.append(text.strip())
    checks.check("%s: tail lines are JSON objects" % s.name, not bad_lines,
                 "%d lines" % len(collector.lines) if not bad_lines else
                 "%d of %d lines are not JSON, first: %r" % (len(bad_lines), len(collector.lines),
                                                             bad_lines[0]))
    return records


def check_tail_sequence(checks, s, records):
    index, expected = [r.get("index") for r in records], list(range(s.count))
    checks.check("%s: tail index sequence is 0..%d, no gap or repeat" % (s.name, s.count - 1),
                 index == expected,
                 "%d records" % len(index) if index == expected else
                 "expected %d records 0..%d, seen %d records, first differing position %s"
                 % (s.count, s.count - 1, len(index), first_difference(index, expected)))
    bad_ids = [(r.get("index"), r.get("frame_id")) for r in records
               if r.get("frame_id") != r.get("index")]
    checks.check("%s: tail frame_id == index" % s.name, records and not bad_ids,
                 "%d records" % len(records) if not bad_ids else
                 "%d records differ, first (index, frame_id): %s" % (len(bad_ids), bad_ids[:3]))


def check_tail_content(checks, s, records, run_window):
    """crc32 (zlib, of the little-endian bytes), min, max and mean of every frame, and its
    timestamp within the writer's run (wall clock)."""
    stats = expected_stats(s)
    known = [r for r in records if isinstance(r.get("index"), int) and 0 <= r["index"] < s.count]
    bad = {"crc32": [], "min/max/mean": [], "timestamp": []}
    for r in known:
        crc, lo, hi, mean = stats[r["index"]]
        if r.get("crc32") != crc:
            bad["crc32"].append((r["index"], r.get("crc32"), crc))
        seen_mean = r.get("mean")
        if r.get("min") != lo or r.get("max") != hi or not isinstance(seen_mean, (int, float)) \
                or abs(seen_mean - mean) > 1e-3 + 1e-6 * abs(mean):
            bad["min/max/mean"].append((r["index"], (r.get("min"), r.get("max"), seen_mean),
                                        (lo, hi, mean)))
        stamp = r.get("timestamp")
        if not isinstance(stamp, (int, float)) or not run_window[0] <= stamp <= run_window[1]:
            bad["timestamp"].append((r["index"], stamp, run_window))
    for what, wrong in bad.items():
        checks.check("%s: tail %s of every frame" % (s.name, what), known and not wrong,
                     "%d frames" % len(known) if not wrong else
                     "%d frames differ, first (index, seen, expected): %s" % (len(wrong),
                                                                               wrong[:2]))


def check_tail_live(checks, s, collector, writer_end):
    # A tail that only read the file after the writer closed it would print everything
    # within moments of the writer's exit; a live one has printed much a while before.
    early = sum(1 for t, _ in collector.lines if t < writer_end - LIVE_MARGIN_S)
    checks.check("%s: tail printed frames while the writer ran" % s.name,
                 early >= s.count // 10,
                 "expected >= %d lines more than %.1f s before the writer exited, seen %d of %d"
                 % (s.count // 10, LIVE_MARGIN_S, early, len(collector.lines)))


def check_tail(checks, s, rc, collector, writer_run):
    """writer_run: (wall-clock start, wall-clock end, monotonic end) of the writer."""
    checks.equal("%s: tail -f exit status" % s.name, rc, 0,
                 "stderr: %s" % lib.tail_text(s.out("tail.stderr")) if rc else "")
    records = parse_tail_lines(checks, s, collector)
    check_tail_sequence(checks, s, records)
    check_tail_content(checks, s, records, writer_run[:2])
    check_tail_live(checks, s, collector, writer_run[2])


# -- the h5py readers and the closed file

def check_h5py_reader(checks, s, reader, rc):
    """An h5py reader's report: no error, every frame, and growth seen while writing."""
    label = "%s: h5py reader %s" % (s.name, reader)
    try:
        with open(s.out(reader + ".json")) as f:
            report = json.loads(f.read())
    except (OSError, ValueError) as e:
        report = {"frames": 0, "errors": ["no report (%s); exit %r; stderr: %s" % (
            e, rc, lib.tail_text(s.out(reader + ".stderr")))], "counts_while_writing": []}
    clean = rc == 0 and not report["errors"]
    checks.check("%s exits 0 with no error" % label, clean,
                 "exit %r, %d polls, %d open attempts" % (rc, report.get("polls", 0),
                                                          report.get("open_attempts", 0))
                 if clean else
                 "expected exit 0 and no errors, seen exit %r, errors: %s" % (rc, report["errors"]))
    checks.equal("%s saw every frame, each checked" % label, report["frames"], s.count)
    live = [n for n in report["counts_while_writing"] if 0 < n < s.count]
    checks.check("%s saw the file grow while the writer ran" % label, len(live) >= 5,
                 "expected >= 5 distinct frame counts (between 1 and %d) while state was "
                 "writing, seen %d: %s" % (s.count - 1, len(live), abbreviate(live)))


def check_closed_file(checks, s):
    """After the writer: a plain (non-SWMR) open shows exactly count frames, state closed."""
    import h5py
    import hdf5plugin  # noqa: F401
    n = s.count
    try:
        with h5py.File(s.path, "r") as f:
            data_shape = f[lib.DATA_PATH].shape
            ids = f[lib.FRAME_ID_PATH][()]
            state = int(f[lib.STATUS_PATH][0]["state"])
            last = f[lib.DATA_PATH][n - 1:n] if data_shape[0] >= n else None
    except (OSError, KeyError) as e:
        checks.check("%s: closed file opens without SWMR" % s.name, False,
                     "h5py.File(%s, 'r') failed: %s" % (s.path, e))
        return
    checks.equal("%s: closed file data shape" % s.name, data_shape, (n,) + tuple(s.shape))
    checks.check("%s: closed file frame_id == 0..%d" % (s.name, n - 1),
                 np.array_equal(ids, np.arange(n)),
                 "length %d, first %s" % (len(ids), ids[:4].tolist()))
    checks.equal("%s: closed file writer state" % s.name, state, lib.STATE_CLOSED)
    mismatch = "missing" if last is None else lib.first_mismatch(
        last, lib.ramp_frames(n - 1, 1, s.shape, s.dtype), n - 1)
    checks.check("%s: closed file last frame (end of a partial band, if any)" % s.name,
                 mismatch is None, mismatch or "")


# -- one scenario

def run_scenario(checks, s):
    """Readers first (the file does not exist yet), then the writer; then every outcome."""
    tail, collector = start_tail(s)
    readers = {"fast": start_h5py_reader(s, "fast", 5),
               "slow": start_h5py_reader(s, "slow", 100)}
    try:
        time.sleep(0.5)
        checks.check("%s: tail -f waits for a file that does not exist yet" % s.name,
                     tail.poll() is None and not os.path.exists(s.path),
                     "expected tail still running, seen exit status %r: %s"
                     % (tail.poll(), lib.tail_text(s.out("tail.stderr")))
                     if tail.poll() is not None else "")
        writer_rc, writer_run = run_writer(checks, s)
        tail_rc = wait_or_kill(tail, 60)
        collector.join(5)
        reader_rcs = {r: wait_or_kill(proc, 150) for r, proc in readers.items()}
    finally:
        for proc in [tail] + list(readers.values()):
            lib.stop_process(proc)
    check_tail(checks, s, tail_rc, collector, writer_run)
    for reader, rc in reader_rcs.items():
        check_h5py_reader(checks, s, reader, rc)
    if writer_rc == 0:
        check_closed_file(checks, s)


def run_writer(checks, s):
    """Runs the writer to its end; (exit status, (wall start, wall end, monotonic end))."""
    checks.info("%s: %s" % (s.name, " ".join(s.writer_cmd())))
    started, wall_started = time.monotonic(), time.time()
    with open(s.out("writer.stderr"), "wb") as err, open(s.out("writer.stdout"), "wb") as out:
        writer = subprocess.Popen(s.writer_cmd(), stdout=out, stderr=err)
        rc = wait_or_kill(writer, 180)
    ended, wall_ended = time.monotonic(), time.time()
    checks.info("%s: writer ran %.2f s (%d frames at %d Hz take >= %.2f s)"
                % (s.name, ended - started, s.count, s.rate, s.count / s.rate))
    checks.equal("%s: writer exit status" % s.name, rc, 0,
                 "stderr: %s" % lib.tail_text(s.out("writer.stderr")) if rc != 0 else "")
    return rc, (wall_started, wall_ended, ended)


def main(checks, p):
    run_scenario(checks, Scenario(p, "blosc", 3000, (64, 96), "uint16", 600,
                                  ["--flush-ms", "50", "--compress", "blosc:lz4:5:shuffle"]))
    run_scenario(checks, Scenario(p, "bands-tiles", 602, (64, 96), "uint16", 300,
                                  ["--flush-ms", "50", "--compress", "none",
                                   "--frames-per-chunk", "4", "--tile", "32x48"]))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--h5py-reader":
        sys.exit(reader_main(sys.argv[2:]))
    lib.run_main(main)
