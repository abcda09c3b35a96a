"""h5s_scriptlib.py - helpers shared by the script tests in tests/scripts/ (not a test).

The script tests run under ctest with the system Python (/usr/bin/python3, which has
h5py, numpy and hdf5plugin). ctest sets H5S_BIN, H5S_TEST_TMP, H5S_SOURCE and
H5S_SHARED_DATA; by hand they default to the usual build folder /tmp/build-e.

What lives here:
- paths(): the environment, with defaults;
- ramp_frames(): the sim:ramp test pattern of docs/cli.md, computed independently of the
  product: element p (flat C-order index) of frame i is (i * 7919 + p) truncated to the
  dtype's width (two's complement for signed types); for float types it is
  (i * 7919 + p) mod 65536;
- first_mismatch(): where two arrays of frames first differ, for failure messages;
- superblock_flags(): the consistency flags a writer left in an HDF5 superblock (read
  from the bytes, as h5s_recover does, without HDF5), to tell a file whose writer died
  before H5Fstart_swmr_write from one that died while streaming;
- iso2709_split(): ISO 2709 records cut by the record length in their leaders, with their
  byte offsets (independent of formats/h5s_marc.c);
- open_swmr_when_ready(): a SWMR reader's open of a file a writer is creating;
- Checks: one printed line per check and the closing "N passed, M failed" line.
"""

import os
import re
import shutil
import subprocess
import sys
import time
import traceback

import numpy as np

RAMP_STEP = 7919
DATA_PATH = "/entry/instrument/detector/data"
FRAME_ID_PATH = "/entry/instrument/detector/frame_id"
TIMESTAMP_PATH = "/entry/instrument/detector/timestamp"
STATUS_PATH = "/h5stream/writer"
STATE_WRITING = 0
STATE_CLOSED = 1
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
SB_WRITE_ACCESS = 0x01  # HDF5 file format specification, superblock v2/v3 status flags
SB_SWMR_WRITE_ACCESS = 0x04


class Paths:
    """Where the binary is and where a test may write."""

    def __init__(self):
        source_default = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
        self.bin = os.environ.get("H5S_BIN", "/tmp/build-e/tools/h5stream")
        self.source = os.environ.get("H5S_SOURCE", source_default)
        self.shared_data = os.environ.get(
            "H5S_SHARED_DATA", os.path.join(self.source, "..", "shared", "data"))
        self.tmp = os.environ.get("H5S_TEST_TMP", "/tmp/h5s-script-tests")

    def fresh_dir(self, name):
        """An empty folder H5S_TEST_TMP/name (removed first if a previous run left it)."""
        path = os.path.join(self.tmp, name)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        return path


def preload_env(binary, shim):
    """A copy of os.environ with LD_PRELOAD=shim for running binary; a sanitizer build's
    ASan runtime is put first, as it must come first in the list."""
    env = dict(os.environ)
    preload = [shim]
    r = subprocess.run(["ldd", binary], capture_output=True, text=True)
    m = re.search(r"(\S*libasan\.so\S*) => (\S+)", r.stdout)
    if m:
        preload.insert(0, m.group(2))
    env["LD_PRELOAD"] = " ".join(preload)
    return env


def paths():
    return Paths()


def ramp_frames(first, count, frame_shape, dtype):
    """Frames first .. first+count-1 of sim:ramp, as an array [count, *frame_shape]."""
    dtype = np.dtype(dtype)
    elems = int(np.prod(frame_shape))
    frame = np.arange(first, first + count, dtype=np.uint64)[:, None]
    pixel = np.arange(elems, dtype=np.uint64)[None, :]
    value = frame * np.uint64(RAMP_STEP) + pixel  # wraps modulo 2**64, as the C code does
    if dtype.kind == "f":
        value = value & np.uint64(0xFFFF)
    # uint64 -> narrower integer keeps the low bits (two's complement for signed types).
    return value.astype(dtype).reshape((count,) + tuple(frame_shape))


def ramp_le_bytes(first, count, frame_shape, dtype):
    """The little-endian bytes of ramp frames first .. first+count-1, back to back."""
    frames = ramp_frames(first, count, frame_shape, dtype)
    return frames.astype(frames.dtype.newbyteorder("<"), copy=False).tobytes()


def first_mismatch(seen, expected, first_frame=0):
    """None if equal, else a text naming the first differing frame, element and values."""
    if seen.shape != expected.shape:
        return "shape %s, expected %s" % (seen.shape, expected.shape)
    if seen.dtype.kind == "f":
        differ = ~((seen == expected) | (np.isnan(seen) & np.isnan(expected)))
    else:
        differ = seen != expected
    if not differ.any():
        return None
    where = np.argwhere(differ)[0]
    frames_bad = int(differ.reshape(differ.shape[0], -1).any(axis=1).sum())
    return "frame %d element %s is %r, expected %r (%d frame(s) differ)" % (
        first_frame + int(where[0]), tuple(int(i) for i in where[1:]),
        seen[tuple(where)].item(), expected[tuple(where)].item(), frames_bad)


def superblock_flags(path):
    """(version, flags) of the file's superblock, or None when the file has no HDF5
    signature at 0, 512, 1024, ... (empty, or cut before its superblock was written).
    flags is 0 for superblock versions 0 and 1, which carry none."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        off = 0
        while off + 12 <= size:
            f.seek(off)
            head = f.read(12)
            if head[:8] == HDF5_SIGNATURE:
                version = head[8]
                return version, (head[11] if version >= 2 else 0)
            off = 512 if off == 0 else off * 2
    return None


def iso2709_split(data):
    """[(offset, record bytes)] of data cut by leader/00-04 (the record length); raises
    ValueError where a length is not 5 digits or a record does not end in 0x1D."""
    out, at = [], 0
    while at < len(data):
        head = data[at:at + 5]
        if len(head) < 5 or not head.isdigit() or int(head) < 24:
            raise ValueError("byte %d: no record length in the leader" % at)
        rec = data[at:at + int(head)]
        if len(rec) != int(head) or rec[-1:] != b"\x1d":
            raise ValueError("byte %d: record of length %d does not end in 0x1D" % (at, int(head)))
        out.append((at, rec))
        at += len(rec)
    return out


class Checks:
    """Prints one line per check; finish() prints the totals and returns the exit code."""

    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.started = time.monotonic()

    def check(self, name, ok, detail=""):
        """Records one check. detail should say what was expected and what was seen."""
        if ok:
            self.passed += 1
            print("ok    %s%s" % (name, (" (%s)" % detail) if detail else ""), flush=True)
        else:
            self.failed += 1
            print("FAIL  %s: %s" % (name, detail or "failed"), flush=True)
        return ok

    def equal(self, name, seen, expected, note=""):
        """Checks seen == expected and says both when they differ; note is appended."""
        ok = seen == expected
        detail = repr(seen) if ok else "expected %r, seen %r" % (expected, seen)
        return self.check(name, ok, detail + ("; " + note if note else ""))

    def info(self, text):
        """A line for the reader of the log; not a check."""
        print("info  %s" % text, flush=True)

    def finish(self):
        print("time  %.1f s" % (time.monotonic() - self.started))
        print("%d passed, %d failed" % (self.passed, self.failed), flush=True)
        return 0 if self.failed == 0 and self.passed > 0 else 1


def require_binary(p, checks):
    """Checks that the h5stream binary exists; the caller stops when it does not."""
    found = os.access(p.bin, os.X_OK)
    return checks.check("h5stream binary exists", found,
                        p.bin if found else "expected an executable at H5S_BIN=%s" % p.bin)


def tail_text(path, limit=800):
    """The end of a text file, for failure messages."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return "<%s>" % e
    text = data.decode("utf-8", "replace").strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def stop_process(proc):
    """Kills a process this test started, if it is still running, and reaps it."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


def open_swmr_when_ready(path, names, keep_waiting, pause_s=0.005):
    """Opens path for SWMR reading once a writer has started SWMR on it: an h5py File in
    which every dataset of names exists (a writer declares its whole schema before SWMR
    starts; without file locking a reader can get in earlier). Retries while
    keep_waiting() is true. Returns (file or None, attempts, the last error's text)."""
    import h5py  # only the scripts that follow a live file need it
    attempts, last_error = 0, "file does not exist"
    while keep_waiting():
        attempts += 1
        if os.path.exists(path):
            f = None
            try:
                f = h5py.File(path, "r", libver="latest", swmr=True)
                for name in names:
                    f[name]
                return f, attempts, ""
            except (OSError, KeyError) as e:
                last_error = str(e)
                if f is not None:
                    f.close()
        time.sleep(pause_s)
    return None, attempts, last_error


def exit_with(checks):
    sys.exit(checks.finish())


def run_main(body):
    """Runs body(checks, paths) and exits with the totals; an exception in the script
    itself counts as a failed check (with its traceback) instead of losing the totals."""
    checks = Checks()
    p = paths()
    try:
        if require_binary(p, checks):
            body(checks, p)
    except Exception:
        checks.check("the test script ran to its end", False, traceback.format_exc())
    exit_with(checks)
