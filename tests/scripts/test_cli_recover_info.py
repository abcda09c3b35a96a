"""test_cli_recover_info.py - `h5stream info`, `h5stream recover` and a `bench --quick` smoke run.

docs/cli.md ("info", "recover", "bench frames") and DESIGN.md section 3 (crash recovery).
Every expectation is computed here, independently of the product: frame shapes and counts
from the ingest arguments, content from the sim:ramp formula, codecs from h5py's view of
the filter pipeline.

Cases:
- info, text and --json, on files written by `ingest frames sim:ramp` with no codec,
  deflate and Blosc (and one with 4 frames per chunk and a partial last chunk): counts,
  frame and chunk shape, dtype, codec, writer state;
- recover on a cleanly closed file: exit 0 and not one byte changed;
- recover on a file whose writer was SIGKILLed mid-stream (raw, and Blosc with 4 frames
  per chunk): before recovery a copy cannot be opened without SWMR; after it h5py opens it
  without SWMR, keeps at least every frame seen committed before the kill, data extent ==
  frame_id extent, every frame equals the ramp, the writer status says closed; a second
  recover changes nothing;
- recover on damaged copies of a good file: uncommitted frames (trimmed, exit 0), one
  corrupted chunk (exit 1, the frame named, kept), a commit marker longer than the data
  (exit 1, file untouched); recover refuses while the writer is still running;
- recover and info on a missing file and on a non-HDF5 file: exit 1, a clear message;
  usage errors: exit 2;
- `bench frames --quick`: the dd, plain libhdf5 and h5stream rows and the ratio lines are
  printed, and the bench folder is removed. No speed is asserted: machines are noisy.

Run with /usr/bin/python3 (h5py, numpy, hdf5plugin). Environment: H5S_BIN, H5S_TEST_TMP.
"""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import h5py  # noqa: E402
import hdf5plugin  # noqa: E402,F401  (registers Blosc for h5py)
import numpy as np  # noqa: E402

import h5s_scriptlib as lib  # noqa: E402

TS_PATH = "/entry/instrument/detector/timestamp"


def run(p, args, timeout=300):
    """Runs the binary; returns (exit code, stdout, stderr)."""
    r = subprocess.run([p.bin] + args, capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def md5(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def ingest(p, checks, out, n, shape, dtype, codec, k=1):
    args = ["ingest", "frames", "sim:ramp", "-o", out, "-n", str(n), "--shape",
            "x".join(str(d) for d in shape), "--dtype", dtype, "--compress", codec,
            "--frames-per-chunk", str(k), "-q"]
    code, _, err = run(p, args)
    return checks.check("ingest %s (%s, k=%d) exits 0" % (os.path.basename(out), codec, k),
                        code == 0, "exit %d: %s" % (code, err.strip()))


def h5py_codec(dset):
    """The codec spec that the dataset's filter pipeline stands for, as h5py sees it."""
    plist = dset.id.get_create_plist()
    filters = [plist.get_filter(i) for i in range(plist.get_nfilters())]
    ids = [f[0] for f in filters]
    if not ids:
        return "none"
    if ids == [1]:
        return "deflate:%d:noshuffle" % filters[0][2][0]
    if ids == [2, 1]:
        return "deflate:%d:shuffle" % filters[1][2][0]
    if ids == [32001]:
        cd = filters[0][2]
        names = {0: "blosclz", 1: "lz4", 2: "lz4hc", 4: "zlib", 5: "zstd"}
        shuffles = {0: "noshuffle", 1: "shuffle", 2: "bitshuffle"}
        return "blosc:%s:%d:%s" % (names[cd[6]], cd[4], shuffles[cd[5]])
    return "other %r" % ids


# ---- info ----

INFO_CASES = [
    # name, frames, frame shape, dtype, codec given to ingest, frames per chunk
    ("none", 37, (24, 40), "uint16", "none", 1),
    ("deflate", 37, (24, 40), "int32", "deflate:6:shuffle", 1),
    ("blosc", 37, (24, 40), "uint16", "blosc:lz4:5:shuffle", 1),
    ("blosc_k4", 37, (3, 10, 12), "float32", "blosc:zstd:3:bitshuffle", 4),
]


def check_info(p, checks, out_dir):
    for name, n, shape, dtype, codec, k in INFO_CASES:
        path = os.path.join(out_dir, "info_%s.h5" % name)
        if not ingest(p, checks, path, n, shape, dtype, codec, k):
            continue
        with h5py.File(path, "r") as f:
            d = f[lib.DATA_PATH]
            want_codec = h5py_codec(d)
            want_chunk = list(d.chunks)
            checks.equal("info %s: h5py sees the codec ingest was given" % name, want_codec,
                         codec)
            content_ok = lib.first_mismatch(d[...], lib.ramp_frames(0, n, shape, dtype))
            checks.check("info %s: file holds the ramp" % name, content_ok is None,
                         content_ok or "")

        code, out, err = run(p, ["info", path, "--json"])
        if not checks.check("info %s --json exits 0" % name, code == 0,
                            "exit %d: %s" % (code, err.strip())):
            continue
        try:
            doc = json.loads(out)
        except ValueError as e:
            checks.check("info %s --json is JSON" % name, False, "%s: %r" % (e, out[:300]))
            continue
        checks.equal("info %s --json: format" % name,
                     (doc.get("format"), doc.get("format_version")), ("h5stream", 1))
        checks.equal("info %s --json: writer state" % name,
                     doc.get("writer", {}).get("state"), "closed")
        checks.equal("info %s --json: writer committed" % name,
                     doc.get("writer", {}).get("committed"), n)
        frames = doc.get("frames", [])
        if not checks.equal("info %s --json: one frames dataset" % name, len(frames), 1):
            continue
        fr = frames[0]
        checks.equal("info %s --json: path" % name, fr.get("path"), lib.DATA_PATH)
        checks.equal("info %s --json: committed" % name, fr.get("committed"), n)
        checks.equal("info %s --json: stored frames" % name, fr.get("stored_frames"), n)
        checks.equal("info %s --json: frame shape" % name, fr.get("frame_shape"), list(shape))
        checks.equal("info %s --json: chunk shape" % name, fr.get("chunk_shape"),
                     [k] + list(shape))
        checks.equal("info %s --json: chunk shape as h5py" % name, fr.get("chunk_shape"),
                     want_chunk)
        checks.equal("info %s --json: dtype" % name, fr.get("dtype"), dtype)
        checks.equal("info %s --json: codec" % name, fr.get("codec"), codec)
        checks.equal("info %s --json: fill value" % name, fr.get("fill_value"), 0.0)
        checks.equal("info %s --json: per-frame datasets" % name,
                     sorted(fr.get("per_frame", [])), ["frame_id", "timestamp"])

        code, out, err = run(p, ["info", path])
        if not checks.check("info %s (text) exits 0" % name, code == 0,
                            "exit %d: %s" % (code, err.strip())):
            continue
        lines = [line.strip() for line in out.splitlines()]
        for want in ["format: h5stream 1",
                     "frames dataset %s" % lib.DATA_PATH,
                     "dtype: %s" % dtype,
                     "frame shape: %s" % "x".join(str(s) for s in shape),
                     "chunk shape: %s" % "x".join(str(s) for s in [k] + list(shape)),
                     "codec: %s" % codec,
                     "committed frames: %d" % n,
                     "fill value: 0"]:
            ok = want in lines
            checks.check("info %s (text) says '%s'" % (name, want), ok,
                         "" if ok else "output:\n" + out)
        ok = any(line.startswith("writer: closed") for line in lines)
        checks.check("info %s (text): writer closed" % name, ok, "" if ok else out)


# ---- recover on a clean file ----

RECOVER_LINE = re.compile(
    r"^(?P<file>.+): (?P<state>was open for SWMR write|was closed cleanly); "
    r"(?P<datasets>\d+) frames datasets?; (?P<kept>\d+) committed frames? kept; "
    r"(?P<dropped>\d+) uncommitted frames? dropped; (?P<decode>.+)$")


def parse_recover(out):
    for line in out.splitlines():
        m = RECOVER_LINE.match(line.strip())
        if m:
            return m
    return None


def check_recover_clean(p, checks, out_dir):
    path = os.path.join(out_dir, "clean.h5")
    if not ingest(p, checks, path, 23, (16, 20), "uint16", "blosc:lz4:5:shuffle"):
        return
    before, mtime = md5(path), os.stat(path).st_mtime_ns
    code, out, err = run(p, ["recover", path])
    checks.check("recover clean: exits 0", code == 0, "exit %d: %s" % (code, err.strip()))
    m = parse_recover(out)
    if checks.check("recover clean: prints its summary line", m is not None, repr(out)):
        checks.equal("recover clean: says closed cleanly", m.group("state"),
                     "was closed cleanly")
        checks.equal("recover clean: counts", (m.group("datasets"), m.group("kept"),
                                               m.group("dropped")), ("1", "23", "0"))
        checks.equal("recover clean: decode", m.group("decode"), "all committed frames decode")
    checks.equal("recover clean: file bytes unchanged", md5(path), before)
    checks.equal("recover clean: file not rewritten (mtime)", os.stat(path).st_mtime_ns, mtime)


# ---- recover after SIGKILL ----

def committed_now(path):
    """frame_id length as a fresh SWMR reader sees it, or -1 while it cannot open yet."""
    try:
        with h5py.File(path, "r", swmr=True) as f:
            return f[lib.FRAME_ID_PATH].shape[0]
    except (OSError, KeyError):
        return -1


def check_recover_killed(p, checks, out_dir, name, shape, codec, k):
    path = os.path.join(out_dir, "killed_%s.h5" % name)
    log_path = os.path.join(out_dir, "killed_%s.log" % name)
    args = [p.bin, "ingest", "frames", "sim:ramp", "-o", path, "--rate", "200", "-n", "100000",
            "--flush-ms", "100", "--shape", "x".join(str(s) for s in shape), "--dtype",
            "uint16", "--compress", codec, "--frames-per-chunk", str(k), "-q"]
    proc = None
    seen = -1
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                seen = committed_now(path)
                if seen >= 50:
                    break
                time.sleep(0.05)
            alive = proc.poll() is None
            if alive and seen >= 50:
                # A live SWMR writer holds no file lock (HDF5 drops it once SWMR starts),
                # so recover must find the writer some other way and refuse.
                code, out, err = run(p, ["recover", path])
                checks.check("killed %s: recover refuses while the writer runs" % name,
                             code == 1 and "open for writing" in err,
                             "exit %d, stdout %r, stderr %r" % (code, out, err))
                alive = proc.poll() is None
            if alive:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    finally:
        lib.stop_process(proc)
    if not checks.check("killed %s: writer ran until a SWMR reader saw >= 50 frames" % name,
                        alive and seen >= 50,
                        "seen %d, writer %s; log: %s" % (
                            seen, "alive" if alive else "exited", lib.tail_text(log_path))):
        return
    checks.info("killed %s: SIGKILL after a SWMR reader saw %d committed frames" % (name, seen))

    # Before recovery, a copy cannot be opened normally: the superblock says SWMR write.
    copy = path + ".copy"
    shutil.copyfile(path, copy)
    try:
        h5py.File(copy, "r").close()
        opened, why = True, ""
    except OSError as e:
        opened, why = False, str(e)
    checks.check("killed %s: before recovery a copy cannot be opened without SWMR" % name,
                 not opened, why or "it opened")
    code, out, _ = run(p, ["info", copy, "--json"])
    if code == 0:
        doc = json.loads(out)
        checks.equal("killed %s: info on the copy opens it SWMR-read, writer 'writing'" % name,
                     (doc.get("opened"), doc.get("writer", {}).get("state")),
                     ("swmr-read", "writing"))
    else:
        checks.check("killed %s: info on the copy exits 0" % name, False, "exit %d" % code)
    # What `h5clear -s` alone does to another copy, for the log (it depends on how fresh
    # the stored end-of-allocation was when the writer died, so it is not asserted).
    if shutil.which("h5clear"):
        cleared = path + ".h5clear"
        shutil.copyfile(path, cleared)
        subprocess.run(["h5clear", "-s", cleared], capture_output=True)
        lost = os.path.getsize(path) - os.path.getsize(cleared)
        try:
            with h5py.File(cleared, "r") as f:
                f[lib.DATA_PATH][...]
            state = "reads"
        except (OSError, KeyError) as e:
            state = "unreadable (%s)" % str(e).split("\n")[0][:80]
        checks.info("killed %s: `h5clear -s` alone cut %d bytes off a copy; its data %s"
                    % (name, lost, state))
        os.unlink(cleared)

    code, out, err = run(p, ["recover", path])
    checks.check("killed %s: recover exits 0" % name, code == 0,
                 "exit %d: %s %s" % (code, out.strip(), err.strip()))
    m = parse_recover(out)
    if checks.check("killed %s: recover prints its summary line" % name, m is not None,
                    repr(out) + repr(err)):
        checks.equal("killed %s: recover says it was open" % name, m.group("state"),
                     "was open for SWMR write")
        checks.equal("killed %s: recover says all frames decode" % name, m.group("decode"),
                     "all committed frames decode")
        checks.info("killed %s: %s" % (name, out.strip()))

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        checks.check("killed %s: recovered file opens without SWMR" % name, False, str(e))
        return
    with f:
        checks.check("killed %s: recovered file opens without SWMR" % name, True)
        ids = f[lib.FRAME_ID_PATH][...]
        n = ids.shape[0]
        data = f[lib.DATA_PATH]
        checks.check("killed %s: frame_id count >= seen before the kill" % name, n >= seen,
                     "%d frames kept, %d seen" % (n, seen))
        checks.equal("killed %s: data extent == frame_id extent" % name, data.shape[0], n)
        checks.equal("killed %s: timestamp extent == frame_id extent" % name,
                     f[TS_PATH].shape[0], n)
        checks.check("killed %s: frame ids are 0..n-1" % name,
                     bool(np.array_equal(ids, np.arange(n, dtype=ids.dtype))), repr(ids[:8]))
        bad = None
        for first in range(0, n, 256):
            count = min(256, n - first)
            bad = lib.first_mismatch(data[first:first + count],
                                     lib.ramp_frames(first, count, shape, "uint16"), first)
            if bad:
                break
        checks.check("killed %s: every kept frame equals the ramp" % name, bad is None,
                     bad or "%d frames" % n)
        if m:
            checks.equal("killed %s: recover's count matches the file" % name,
                         int(m.group("kept")), n)
        checks.equal("killed %s: writer status closed" % name,
                     int(f[lib.STATUS_PATH][0]["state"]), lib.STATE_CLOSED)

    before = md5(path)
    code, out, _ = run(p, ["recover", path])
    m = parse_recover(out)
    checks.check("killed %s: second recover exits 0, closed cleanly, 0 dropped" % name,
                 code == 0 and m is not None and m.group("state") == "was closed cleanly"
                 and m.group("dropped") == "0", "exit %d: %r" % (code, out))
    checks.equal("killed %s: second recover changes nothing" % name, md5(path), before)
    os.unlink(copy)


# ---- damaged files ----

def check_damaged(p, checks, out_dir):
    """Takes good files, breaks one thing in each, and asserts recover's exact verdict."""
    n, shape = 30, (32, 48)
    src = os.path.join(out_dir, "damage_src.h5")
    if not ingest(p, checks, src, n, shape, "uint16", "blosc:lz4:5:shuffle"):
        return

    # Uncommitted frames: payload longer than frame_id, as a writer killed between
    # storing chunks and committing leaves it.
    extra = os.path.join(out_dir, "damage_uncommitted.h5")
    shutil.copyfile(src, extra)
    with h5py.File(extra, "r+") as f:
        d = f[lib.DATA_PATH]
        d.resize(n + 3, axis=0)
        d[n:] = lib.ramp_frames(n, 3, shape, "uint16")
        f[TS_PATH].resize(n + 2, axis=0)
        # A user's own log beside the detector data, longer than frame_id: not a
        # per-frame dataset (h5stream_per_frame does not list it), so it must survive.
        f.create_dataset("/entry/instrument/detector/operator_log", data=range(n + 40),
                         maxshape=(None,), chunks=(16,))
    code, out, err = run(p, ["recover", extra])
    m = parse_recover(out)
    checks.check("uncommitted: recover exits 0 and drops 3 frames",
                 code == 0 and m is not None and m.group("kept") == str(n) and
                 m.group("dropped") == "3", "exit %d: %r %r" % (code, out, err))
    with h5py.File(extra, "r") as f:
        checks.equal("uncommitted: extents trimmed to frame_id",
                     (f[lib.DATA_PATH].shape[0], f[TS_PATH].shape[0]), (n, n))
        checks.equal("uncommitted: an unlisted neighbour dataset is left whole",
                     list(f["/entry/instrument/detector/operator_log"][:]),
                     list(range(n + 40)))
    code, out, err = run(p, ["info", extra, "--json"])
    per_frame = json.loads(out)["frames"][0].get("per_frame") if code == 0 else None
    checks.equal("uncommitted: info lists the per-frame datasets, not the neighbour",
                 sorted(per_frame or []), ["frame_id", "timestamp"], err)

    # One chunk's bytes overwritten: the frame stays, recover names it and exits 1.
    bad_frame = 7
    corrupt = os.path.join(out_dir, "damage_chunk.h5")
    shutil.copyfile(src, corrupt)
    with h5py.File(corrupt, "r") as f:
        info = f[lib.DATA_PATH].id.get_chunk_info_by_coord((bad_frame, 0, 0))
    with open(corrupt, "r+b") as f:
        f.seek(info.byte_offset + 16)  # past Blosc's 16-byte header, into the payload
        f.write(b"\xff" * min(64, info.size - 16))
    code, out, err = run(p, ["recover", corrupt])
    m = parse_recover(out)
    checks.check("corrupt chunk: exit 1, summary names frame %d" % bad_frame,
                 code == 1 and m is not None and m.group("decode") ==
                 "1 committed frame does not decode (first: frame %d), kept as they are"
                 % bad_frame, "exit %d: %r" % (code, out))
    checks.check("corrupt chunk: stderr names file, dataset and frame",
                 corrupt in err and lib.DATA_PATH in err and
                 ("frame %d does not decode" % bad_frame) in err, repr(err))
    with h5py.File(corrupt, "r") as f:
        checks.equal("corrupt chunk: the frame is kept", f[lib.DATA_PATH].shape[0], n)

    # A commit marker longer than its payload cannot come from h5stream's commit order.
    longer = os.path.join(out_dir, "damage_marker.h5")
    shutil.copyfile(src, longer)
    with h5py.File(longer, "r+") as f:
        f[lib.FRAME_ID_PATH].resize(n + 5, axis=0)
    before = md5(longer)
    code, out, err = run(p, ["recover", longer])
    checks.check("marker longer than data: exit 1, says so",
                 code == 1 and "commit marker" in err and "holds only %d" % n in err,
                 "exit %d: %r" % (code, err))
    checks.equal("marker longer than data: file left as it was", md5(longer), before)


# ---- errors ----

def check_errors(p, checks, out_dir):
    missing = os.path.join(out_dir, "does_not_exist.h5")
    for cmd in ("recover", "info"):
        code, out, err = run(p, [cmd, missing])
        checks.check("%s on a missing file: exit 1, 'no such file'" % cmd,
                     code == 1 and "no such file" in err and missing in err,
                     "exit %d, stderr %r" % (code, err))
    text = os.path.join(out_dir, "not_hdf5.h5")
    with open(text, "w") as f:
        f.write("this is not an HDF5 file\n" * 100)
    before = md5(text)
    code, out, err = run(p, ["recover", text])
    checks.check("recover on a non-HDF5 file: exit 1, 'not an HDF5 file'",
                 code == 1 and "not an HDF5 file" in err and text in err,
                 "exit %d, stderr %r" % (code, err))
    checks.equal("recover on a non-HDF5 file leaves it alone", md5(text), before)
    code, out, err = run(p, ["info", text])
    checks.check("info on a non-HDF5 file: exit 1, names the file",
                 code == 1 and text in err and err.startswith("h5stream: "),
                 "exit %d, stderr %r" % (code, err))
    # An HDF5 file that h5stream did not write.
    other = os.path.join(out_dir, "plain.h5")
    with h5py.File(other, "w") as f:
        f["x"] = np.arange(10)
    code, out, err = run(p, ["recover", other])
    checks.check("recover on a non-h5stream HDF5 file: exit 1, 'not an h5stream file'",
                 code == 1 and "not an h5stream file" in err, "exit %d, stderr %r" % (code, err))
    for args in (["recover"], ["recover", "a.h5", "b.h5"], ["info"], ["info", "--bogus", "x"],
                 ["bench", "frames", "--bogus"], ["bench", "frames", "--frames", "0"]):
        code, _, err = run(p, args)
        checks.check("usage error %r: exit 2" % " ".join(args), code == 2,
                     "exit %d, stderr %r" % (code, err))


# ---- bench smoke run ----

BENCH_ROWS = ["dd conv=fsync", "plain libhdf5", "h5stream"]
BENCH_RATIOS = [
    "raw: h5stream (1 thread) / dd",
    "raw: h5stream (2 threads) / dd",
    "Blosc: h5stream 2 threads / 1 thread",
    "Blosc: h5stream (2 threads) / plain libhdf5",
    "memory: peak RSS (10 N) / peak RSS (N)",
]


def check_bench(p, checks, out_dir):
    bench_dir = os.path.join(out_dir, "bench")
    os.makedirs(bench_dir)
    code, out, err = run(p, ["bench", "frames", "--quick", "--dir", bench_dir], timeout=600)
    if not checks.check("bench frames --quick exits 0", code == 0,
                        "exit %d: %s" % (code, err.strip())):
        print(out)
        return
    lines = out.splitlines()
    # The table: from its header line ("run ...") to the first blank line.
    table = []
    for line in lines[next((i for i, x in enumerate(lines) if x.startswith("run ")), len(lines)):]:
        if not line.strip():
            break
        table.append(line)
    for row in BENCH_ROWS:
        rows = [line for line in table if line.startswith(row)]
        ok = bool(rows) and all(re.search(r"\d+\.\d+", r) for r in rows) and \
            not any("FAILED" in r for r in rows)
        checks.check("bench prints the '%s' row(s) with a MB/s figure" % row, ok,
                     "%d row(s)" % len(rows) if ok else "\n".join(rows) or out)
    for ratio in BENCH_RATIOS:
        found = [line for line in lines if line.startswith(ratio)]
        ok = len(found) == 1 and re.search(r"\d+\.\d+\s+(>=|<=) \d+\.\d+\s+(PASS|MISS)$",
                                           found[0]) is not None
        checks.check("bench prints the ratio '%s' with a target and PASS/MISS" % ratio, ok,
                     found[0] if found else out)
    ok = any(line.startswith("memory: h5stream Blosc") for line in lines)
    checks.check("bench prints both peak RSS values", ok, "" if ok else out)
    checks.equal("bench removed the files it wrote", os.listdir(bench_dir), [])
    checks.info("bench --quick output:\n" + out)


def main():
    p = lib.paths()
    checks = lib.Checks()
    if not lib.require_binary(p, checks):
        lib.exit_with(checks)
    out_dir = p.fresh_dir("cli_recover_info")
    check_info(p, checks, out_dir)
    check_recover_clean(p, checks, out_dir)
    check_recover_killed(p, checks, out_dir, "raw", (64, 96), "none", 1)
    check_recover_killed(p, checks, out_dir, "blosc_k4", (64, 96), "blosc:lz4:5:shuffle", 4)
    check_damaged(p, checks, out_dir)
    check_errors(p, checks, out_dir)
    check_bench(p, checks, out_dir)
    code = checks.finish()
    if code == 0:
        shutil.rmtree(out_dir, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
