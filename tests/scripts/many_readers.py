#!/usr/bin/python3
"""many_readers.py - one writer at full speed, many SWMR readers in other processes.

    many_readers.py [--seconds 60] [--readers 8] [--shape 64x64] [--dtype uint16]
                    [--compress blosc:lz4:5:shuffle] [--flush-ms 100] [--interval-ms 20]
                    [--rate HZ] [--bin PATH] [--read-frames PATH] [--dir DIR] [--json FILE]

The writer is `h5stream ingest frames sim:ramp` with no --rate (as fast as it goes; --rate
HZ paces it instead, to see the lag of readers that keep up) and a frame count it cannot
reach; after --seconds it gets SIGINT, which stops it reading,
commits and closes the file (docs/cli.md). While it runs, --readers reader processes
follow the file, each an independent SWMR reader of its own kind, in turn:

  h5py     this script (--h5py-reader): polls /h5stream/writer, then frame_id (the
           commit marker), then the data, every --interval-ms; checks frame_id and every
           new frame against the sim:ramp formula (h5s_scriptlib.ramp_frames). When a poll
           finds more than --verify-max new frames (it fell behind), it checks a seeded
           random sample of them plus the first and last, and counts the rest as seen but
           not checked; the report says how many were checked.
  tail     `h5stream tail -f --json --interval MS`: the C reader API behind the command
           line; every line's crc32 (of the frame's little-endian bytes) is compared with
           the ramp frame's, and the indices must run 0, 1, 2, ... with no gap.
  capi     examples/read_frames (h5s_reader_open, h5s_reader_wait, h5s_reader_read),
           through stdbuf -oL so each line arrives when printed; its crc32 per frame is
           checked the same way.

Every reader must see every committed frame (the h5py ones may check a sample of them,
as said), end by itself once the writer has closed the file, and report no error.

Lag, from commit to visible, one sample per commit a reader sees: the writer stamps
/h5stream/writer with the wall time of each commit (heartbeat) and its committed count. A
logger process (not one of the readers) polls that row every 2 ms and keeps (committed,
heartbeat) of every commit it sees. For an h5py reader, the lag of a commit is the wall
time at which its poll first saw that committed count minus the heartbeat; for tail and
capi, the wall time at which the line of the commit's first frame arrived minus the
heartbeat of that logged commit. A reader that prints every frame and falls behind the
writer therefore shows its backlog in its lag. Same machine, same clock. The summary
gives p50 and p99 over all readers and per kind, the frames written per second, the
frames each reader saw and checked, and the errors.

Exit status: 0 when every reader saw every frame, no check failed and the writer ended as
SIGINT makes it; 1 otherwise; 2 on a usage error. tests/scripts/test_many_readers.py runs
a shorter version under ctest.
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zlib

import numpy as np

import h5s_scriptlib as lib

LOGGER_POLL_S = 0.002
OPEN_TIMEOUT_S = 60


# ---- helpers shared by the processes ----------------------------------------------------

def ramp_crc32(first, count, shape, dtype):
    """crc32 of the little-endian bytes of ramp frames first .. first+count-1."""
    frames = lib.ramp_frames(first, count, shape, dtype)
    le = frames.astype(frames.dtype.newbyteorder("<"), copy=False)
    return [zlib.crc32(f.tobytes()) for f in le]


def open_swmr(h5py, path, deadline):
    """Opens path for SWMR reading once the writer has started SWMR; (file, last error)."""
    last = "file does not exist"
    while time.monotonic() < deadline:
        if os.path.exists(path):
            f = None
            try:
                f = h5py.File(path, "r", libver="latest", swmr=True)
                for name in (lib.DATA_PATH, lib.FRAME_ID_PATH, lib.STATUS_PATH):
                    f[name]
                return f, None
            except (OSError, KeyError) as e:
                last = str(e)
                if f is not None:
                    f.close()
        time.sleep(0.005)
    return None, last


def percentile(values, q):
    if not values:
        return float("nan")
    v = sorted(values)
    k = (len(v) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


# ---- the h5py reader process --------------------------------------------------------------

def h5py_reader(args):
    import h5py
    import hdf5plugin  # noqa: F401  (Blosc)
    shape = tuple(int(x) for x in args.shape.split("x"))
    dtype = np.dtype(args.dtype)
    rng = random.Random(args.seed)
    rep = {"kind": "h5py", "seen": 0, "checked": 0, "sampled_polls": 0, "polls": 0,
           "errors": [], "lags": [], "commits": []}
    f, why = open_swmr(h5py, args.path, time.monotonic() + OPEN_TIMEOUT_S)
    if f is None:
        rep["errors"].append("could not open for SWMR reading: %s" % why)
        return rep
    seen, last_committed = 0, -1
    with f:
        data, ids, status = f[lib.DATA_PATH], f[lib.FRAME_ID_PATH], f[lib.STATUS_PATH]
        while True:
            rep["polls"] += 1
            status.refresh()
            row = status[0]
            now = time.time()
            state, committed = int(row["state"]), int(row["committed"])
            if committed != last_committed:
                if committed < last_committed:
                    rep["errors"].append("status committed went from %d to %d"
                                         % (last_committed, committed))
                elif last_committed >= 0:
                    rep["lags"].append(now - float(row["heartbeat"]))
                    rep["commits"].append((committed, float(row["heartbeat"])))
                last_committed = committed
            ids.refresh()  # the commit marker before the payload
            n = ids.shape[0]
            if n < seen:
                rep["errors"].append("frame_id shrank from %d to %d" % (seen, n))
            elif n > seen:
                data.refresh()
                if data.shape[0] < n:
                    rep["errors"].append("frame_id covers %d frames, data holds %d"
                                         % (n, data.shape[0]))
                    break
                new = n - seen
                if new <= args.verify_max:
                    picks = None
                else:  # fell behind: a seeded sample, the ends always in it
                    rep["sampled_polls"] += 1
                    picks = sorted({seen, n - 1} | set(rng.sample(range(seen, n),
                                                                  args.verify_sample)))
                rep["checked"] += check_frames(rep, data, ids, seen, n, picks, shape, dtype,
                                               args.block)
                seen = n
            if state in (lib.STATE_CLOSED, 2) and seen == n:
                ids.refresh()
                if ids.shape[0] == seen:
                    break
            if len(rep["errors"]) > 5:
                break
            time.sleep(args.interval_ms / 1000.0)
    rep["seen"] = seen
    return rep


def check_frames(rep, data, ids, first, end, picks, shape, dtype, block):
    """Checks frames [first, end) (or only picks); returns how many were checked."""
    checked = 0
    if picks is None:
        for a in range(first, end, block):
            b = min(end, a + block)
            got_ids = ids[a:b]
            if not np.array_equal(got_ids, np.arange(a, b, dtype=got_ids.dtype)):
                rep["errors"].append("frame_id[%d:%d] is not %d..%d" % (a, b, a, b - 1))
            bad = lib.first_mismatch(data[a:b], lib.ramp_frames(a, b - a, shape, dtype), a)
            if bad:
                rep["errors"].append("data: " + bad)
            checked += b - a
        return checked
    for i in picks:
        if int(ids[i]) != i:
            rep["errors"].append("frame_id[%d] is %d" % (i, int(ids[i])))
        bad = lib.first_mismatch(data[i:i + 1], lib.ramp_frames(i, 1, shape, dtype), i)
        if bad:
            rep["errors"].append("data: " + bad)
        checked += 1
    return checked


# ---- the commit logger process ------------------------------------------------------------

def commit_logger(args):
    import h5py
    rep = {"commits": [], "errors": []}
    f, why = open_swmr(h5py, args.path, time.monotonic() + OPEN_TIMEOUT_S)
    if f is None:
        rep["errors"].append("could not open for SWMR reading: %s" % why)
        return rep
    last = -1
    with f:
        status = f[lib.STATUS_PATH]
        while True:
            status.refresh()
            row = status[0]
            c = int(row["committed"])
            if c != last:
                rep["commits"].append((c, float(row["heartbeat"])))
                last = c
            if int(row["state"]) in (lib.STATE_CLOSED, 2):
                break
            time.sleep(LOGGER_POLL_S)
    return rep


# ---- the orchestrating process ------------------------------------------------------------

class LineReader:
    """A C reader's stdout, each line with the wall time it arrived."""

    def __init__(self, kind, name, proc):
        self.kind, self.name, self.proc = kind, name, proc
        self.lines = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        for raw in self.proc.stdout:
            self.lines.append((time.time(), raw))


def parse_c_lines(lr, shape, dtype):
    """(indices, crcs, arrival times, errors) of a tail --json or read_frames reader."""
    idx, crcs, times, errors = [], [], [], []
    pat = re.compile(rb"^frame (\d+) id (\d+) mean \S+ crc32 ([0-9a-f]{8})$")
    for t, raw in lr.lines:
        line = raw.strip()
        if not line:
            continue
        if lr.kind == "tail":
            try:
                o = json.loads(line)
                i, fid, crc = int(o["index"]), int(o["frame_id"]), int(o["crc32"])
            except (ValueError, KeyError, TypeError):
                errors.append("not a JSON frame line: %r" % line[:120])
                continue
        else:
            m = pat.match(line)
            if not m:
                errors.append("not a frame line: %r" % line[:120])
                continue
            i, fid, crc = int(m.group(1)), int(m.group(2)), int(m.group(3), 16)
        if fid != i:
            errors.append("frame %d has frame_id %d" % (i, fid))
        idx.append(i)
        crcs.append(crc)
        times.append(t)
    return idx, crcs, times, errors


def expected_crcs(total, shape, dtype, block=256):
    """The crc32 of every ramp frame below total, computed once for all C readers."""
    out = []
    for a in range(0, total, block):
        out += ramp_crc32(a, min(block, total - a), shape, dtype)
    return out


def check_c_reader(lr, shape, dtype, total, commits, expected):
    idx, crcs, times, errors = parse_c_lines(lr, shape, dtype)
    if idx != list(range(len(idx))):
        first_bad = next(k for k, v in enumerate(idx) if v != k)
        errors.append("indices do not run 0, 1, 2, ...: position %d holds %d"
                      % (first_bad, idx[first_bad]))
    if len(idx) != total:
        errors.append("saw %d frames, the writer committed %d" % (len(idx), total))
    bad = 0
    for k, (i, g) in enumerate(zip(idx, crcs)):
        w = expected[i] if 0 <= i < len(expected) else None
        if g != w:
            bad += 1
            if bad <= 3:
                errors.append("frame %d: crc32 %08x, the ramp's is %s" %
                              (i, g, "%08x" % w if w is not None else "none (not committed)"))
    if bad > 3:
        errors.append("%d frames with a wrong crc32 in all" % bad)
    # Lag, one sample per logged commit: the arrival of the line of its first frame (the
    # reader has seen the new count) minus its heartbeat.
    arrival = dict(zip(idx, times))
    lags, unseen, prev = [], 0, 0
    for c, hb in commits:
        if prev in arrival:
            lags.append(arrival[prev] - hb)
        else:
            unseen += 1
        prev = c
    return {"kind": lr.kind, "seen": len(idx), "checked": len(crcs), "errors": errors,
            "lags": lags, "unlogged": unseen}


def clean_commits(commits):
    """The logger's commits, increasing, each the first sighting of its count."""
    out = []
    for c, hb in commits:
        if c > 0 and (not out or c > out[-1][0]):
            out.append((c, hb))
    return out


def start_py(args, mode, name, out_dir, seed=0):
    cmd = [sys.executable, os.path.abspath(__file__), mode, "--path", args.path,
           "--shape", args.shape, "--dtype", args.dtype, "--interval-ms", str(args.interval_ms),
           "--verify-max", str(args.verify_max), "--verify-sample", str(args.verify_sample),
           "--block", str(args.block), "--seed", str(seed)]
    out = open(os.path.join(out_dir, name + ".json"), "wb")
    err = open(os.path.join(out_dir, name + ".stderr"), "wb")
    return subprocess.Popen(cmd, stdout=out, stderr=err), out, err


def c_env():
    env = dict(os.environ)
    # A sanitizer build's runtime must come first when stdbuf preloads its library.
    env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0").lstrip(":")
    return env


def orchestrate(args):
    if not os.access(args.bin, os.X_OK):
        print("many_readers: no h5stream binary at %s" % args.bin, file=sys.stderr)
        return 2
    kinds = (["h5py", "tail", "capi"] * args.readers)[:args.readers]
    if "capi" in kinds and not os.access(args.read_frames, os.X_OK):
        print("many_readers: no examples/read_frames at %s (--read-frames)" % args.read_frames,
              file=sys.stderr)
        return 2
    shutil.rmtree(args.dir, ignore_errors=True)
    os.makedirs(args.dir)
    args.path = os.path.join(args.dir, "stream.h5")
    shape = tuple(int(x) for x in args.shape.split("x"))
    print("writer: h5stream ingest frames sim:ramp --shape %s --dtype %s --compress %s "
          "--flush-ms %d, %s, SIGINT after %g s" %
          (args.shape, args.dtype, args.compress, args.flush_ms,
           "--rate %g" % args.rate if args.rate else "as fast as it goes", args.seconds),
          flush=True)
    print("readers: %d (%s), polling every %d ms; machine: %d cores" %
          (len(kinds), ", ".join("%d %s" % (kinds.count(k), k) for k in ("h5py", "tail", "capi")
                                 if k in kinds), args.interval_ms, os.cpu_count()), flush=True)

    # Readers first: they wait for the file and for SWMR to start.
    logger, lout, lerr = start_py(args, "--logger", "logger", args.dir)
    procs, c_readers, files = [], [], [lout, lerr]
    for i, kind in enumerate(kinds):
        name = "reader%d_%s" % (i, kind)
        if kind == "h5py":
            p, o, e = start_py(args, "--h5py-reader", name, args.dir, seed=1000 + i)
            procs.append((name, kind, p))
            files += [o, e]
            continue
        if kind == "tail":
            cmd = [args.bin, "tail", args.path, "-f", "--json", "--interval",
                   str(args.interval_ms), "--timeout", str(OPEN_TIMEOUT_S * 1000)]
        else:
            cmd = ["stdbuf", "-oL", args.read_frames, args.path]
        e = open(os.path.join(args.dir, name + ".stderr"), "wb")
        files.append(e)
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=e, env=c_env())
        procs.append((name, kind, p))
        c_readers.append((name, LineReader(kind, name, p)))

    time.sleep(0.3)
    wcmd = [args.bin, "ingest", "frames", "sim:ramp", "--shape", args.shape, "--dtype",
            args.dtype, "-n", "1G", "--flush-ms", str(args.flush_ms), "--compress",
            args.compress, "-o", args.path] + (["--rate", str(args.rate)] if args.rate else [])
    werr = open(os.path.join(args.dir, "writer.stderr"), "wb")
    files.append(werr)
    t0 = time.time()
    writer = subprocess.Popen(wcmd, stdout=subprocess.DEVNULL, stderr=werr)
    try:
        writer.wait(timeout=args.seconds)
        early = True
    except subprocess.TimeoutExpired:
        early = False
        writer.send_signal(signal.SIGINT)
    try:
        wrc = writer.wait(timeout=120)
    except subprocess.TimeoutExpired:
        lib.stop_process(writer)
        wrc = None
    t1 = time.time()
    werr.flush()
    wtext = lib.tail_text(werr.name)

    problems = []
    deadline = time.monotonic() + 120
    for name, kind, p in procs + [("logger", "logger", logger)]:
        try:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            lib.stop_process(p)
            problems.append("%s did not end by itself after the writer closed" % name)
    for _, lr in c_readers:
        lr.thread.join(30)
    for f in files:
        f.close()

    import h5py
    total = None
    try:
        with h5py.File(args.path, "r") as f:
            total = f[lib.FRAME_ID_PATH].shape[0]
            state = int(f[lib.STATUS_PATH][0]["state"])
    except OSError as e:
        problems.append("the file does not open with plain h5py after the run: %s" % e)
        state = None
    if early:
        problems.append("the writer ended before the SIGINT (exit %s): %s" % (wrc, wtext))
    elif wrc != 1 or "interrupted by SIGINT" not in wtext or "file closed" not in wtext:
        problems.append("the writer did not stop as SIGINT makes it (exit %s): %s" % (wrc, wtext))
    if state != lib.STATE_CLOSED:
        problems.append("the file's state is %s, not 1 (closed)" % state)

    def load(name):
        with open(os.path.join(args.dir, name + ".json")) as fh:
            text = fh.read()
        try:
            return json.loads(text)
        except ValueError:
            return {"errors": ["no report (%s)" % lib.tail_text(
                os.path.join(args.dir, name + ".stderr"), 400)], "lags": [], "commits": []}

    expected = expected_crcs(total or 0, shape, np.dtype(args.dtype)) if c_readers else []
    log = load("logger")
    commits = clean_commits([tuple(c) for c in log.get("commits", [])])
    problems += ["logger: " + e for e in log.get("errors", [])]
    readers = []
    for name, kind, p in procs:
        if kind == "h5py":
            r = load(name)
        else:
            lr = dict(c_readers)[name]
            r = check_c_reader(lr, shape, np.dtype(args.dtype), total or 0, commits, expected)
            err_text = lib.tail_text(os.path.join(args.dir, name + ".stderr"), 400)
            if p.returncode != 0:
                r["errors"].append("exit %s: %s" % (p.returncode, err_text))
        r["name"] = name
        if kind == "h5py" and total is not None and r.get("seen") != total:
            r["errors"].append("saw %s frames, the writer committed %d" % (r.get("seen"), total))
        if kind == "h5py" and p.returncode != 0:
            r["errors"].append("exit %s" % p.returncode)
        readers.append(r)

    secs = t1 - t0
    all_lags = [x for r in readers for x in r.get("lags", [])]
    print("\nwriter: %s frames of %s %s in %.1f s = %.0f frames/s (%.1f MB/s raw); %d commits "
          "logged" % (total, args.shape, args.dtype, secs, (total or 0) / secs,
                      (total or 0) * int(np.prod(shape)) * np.dtype(args.dtype).itemsize / 1e6 /
                      secs, len(commits)))
    print("\n%-16s %10s %10s %8s %10s %10s %8s  %s" % ("reader", "seen", "checked", "sampled",
                                                      "lag p50", "lag p99", "samples", "errors"))
    for r in readers:
        lags = r.get("lags", [])
        print("%-16s %10s %10s %8s %9.1fms %9.1fms %8d  %s" % (
            r["name"], r.get("seen"), r.get("checked"),
            r.get("sampled_polls", "-") if r.get("kind") == "h5py" else "-",
            percentile(lags, 0.5) * 1e3, percentile(lags, 0.99) * 1e3, len(lags),
            "; ".join(r.get("errors", [])[:3]) or "none"))
    print()
    for kind in ("h5py", "tail", "capi"):
        lags = [x for r in readers if r.get("kind") == kind for x in r.get("lags", [])]
        if lags:
            print("lag %-5s p50 %7.1f ms  p99 %7.1f ms  max %7.1f ms  (%d samples)" % (
                kind, percentile(lags, 0.5) * 1e3, percentile(lags, 0.99) * 1e3,
                max(lags) * 1e3, len(lags)))
    print("lag all   p50 %7.1f ms  p99 %7.1f ms  (%d samples, commit to visible)" % (
        percentile(all_lags, 0.5) * 1e3, percentile(all_lags, 0.99) * 1e3, len(all_lags)))
    unlogged = sum(r.get("unlogged", 0) for r in readers)
    if unlogged:
        print("logged commits whose first frame a C reader never printed: %d" % unlogged)
    checked = sum(r.get("checked", 0) for r in readers)
    print("frames checked by all readers: %d; h5py polls that checked a sample: %d" % (
        checked, sum(r.get("sampled_polls", 0) for r in readers)))
    errors = [(r["name"], e) for r in readers for e in r.get("errors", [])]
    for name, e in errors:
        problems.append("%s: %s" % (name, e))
    summary = {"frames": total, "seconds": secs, "frames_per_s": (total or 0) / secs,
               "lag_p50_ms": percentile(all_lags, 0.5) * 1e3,
               "lag_p99_ms": percentile(all_lags, 0.99) * 1e3,
               "readers": [{k: v for k, v in r.items() if k not in ("lags", "commits")}
                           for r in readers],
               "problems": problems}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=1)
    if problems:
        print("\nFAILED: %d problem(s)" % len(problems))
        for pr in problems[:20]:
            print("  " + pr)
        return 1
    print("\nOK: every reader saw every committed frame, no error")
    if not args.keep:
        shutil.rmtree(args.dir, ignore_errors=True)
    return 0


def main():
    p = lib.paths()
    build = os.environ.get("H5S_BUILD", os.path.dirname(os.path.dirname(p.bin)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--readers", type=int, default=8)
    ap.add_argument("--shape", default="64x64")
    ap.add_argument("--dtype", default="uint16")
    ap.add_argument("--compress", default="blosc:lz4:5:shuffle")
    ap.add_argument("--flush-ms", type=int, default=100)
    ap.add_argument("--interval-ms", type=int, default=20)
    ap.add_argument("--rate", type=float, default=0, help="frames/s (default: full speed)")
    ap.add_argument("--verify-max", type=int, default=20000,
                    help="an h5py poll checks every new frame up to this many, else a sample")
    ap.add_argument("--verify-sample", type=int, default=256)
    ap.add_argument("--block", type=int, default=1024)
    ap.add_argument("--bin", default=p.bin)
    ap.add_argument("--read-frames", default=os.path.join(build, "examples", "read_frames"))
    ap.add_argument("--dir", default=os.path.join(p.tmp, "many_readers"))
    ap.add_argument("--json", default=None, help="also write the summary as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the file and logs")
    # The child modes.
    ap.add_argument("--h5py-reader", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--logger", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.h5py_reader or args.logger:
        try:
            rep = h5py_reader(args) if args.h5py_reader else commit_logger(args)
        except Exception as e:  # the parent must see every failure as a report
            rep = {"errors": ["reader crashed: %r" % e], "lags": [], "commits": []}
        print(json.dumps(rep))
        return 0
    if args.readers < 1 or args.seconds <= 0:
        ap.error("--readers and --seconds must be positive")
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
