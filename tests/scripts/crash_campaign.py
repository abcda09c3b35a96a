#!/usr/bin/python3
"""crash_campaign.py - kill -9 the writer of every model at many seeded random points,
recover, and check every committed item bit for bit (DESIGN.md sections 3 and 7).

Not a ctest test (its name does not start with test_); tests/scripts/test_crash_campaign.py
runs a short version of it in CI. By hand, from a build folder:

    /usr/bin/python3 tests/scripts/crash_campaign.py --bin build/tools/h5stream \\
        --model all --kills 50 --seed 1

For each kill round:

1. A variant of the model's writer is drawn (codec, chunking, flush interval, source),
   with commits every few milliseconds (--flush-every / --flush-ms). Inputs are real
   files from shared/data, replayed at a fixed rate (frames --rate, tracts --rate, MARC
   fed through a pipe at a paced rate) or, for volumes (no rate option), as many symlinked
   copies as fill about a second of writing.
2. A kill moment is drawn, measured from the writer's start: "startup" (0 - 80 ms: file
   creation, schema, SWMR start, first commit), "early", "mid", "late" (around the end of
   the input, including the final commit and H5Fclose), or "close" (SIGTERM, or the end
   of the MARC input, then SIGKILL 0 - 6 ms or 0 - 30 ms later, while the writer closes).
   Rounds go on until the requested number of SIGKILLs have hit a running writer; rounds
   whose writer had already finished are checked the same way and counted apart.
3. While it waits, an h5py SWMR reader (this process) polls the status row and then the
   commit markers (docs/format.md: frame_id, /tracts/offsets, /volumes/C/obs and
   /obs_meta, /marc/index and /marc/rejected/index). The marker extent it last saw
   before the SIGKILL is the committed count c of each marker: those items were
   committed before the last flush the writer completed, and must survive.
4. SIGKILL; the reader is closed; then `h5stream recover FILE` (in 15 % of the rounds a
   first recover is itself killed 0 - 25 ms after it starts, so the one that counts
   finishes another's work). It must exit 0, except when the writer died before
   H5Fstart_swmr_write (superblock status flags without the SWMR-write bit, read from
   the bytes, or no file at all): then nothing was committed, and recover may exit 1
   saying so (docs/cli.md, "recover").
5. A plain h5py open (no SWMR) must succeed, and every item the recovered markers cover
   (those seen before the kill and any committed after the last poll) must equal an
   independent expectation, bit for bit:
   - frames: the sim:ramp formula (h5s_scriptlib.ramp_frames); frame_id = 0, 1, ...;
     timestamps inside the writer's run; data and timestamp trimmed to frame_id;
   - tracts: the source read with nibabel (.trk, .tck) or numpy from the TRX zip
     (positions, offsets, dps, dpv, groups, dpg), repeated --repeat times;
   - volumes: the source NIfTI's unscaled voxels read by nibabel (C order [(T,) Z, Y, X]
     per uniform row, Fortran-flat in the heterogeneous pool), obs row fields, and the
     /obs_meta rows against the participants table;
   - MARC: the bytes fed to the pipe, cut by the record length in each leader
     (h5s_scriptlib.iso2709_split), for /marc and /marc/rejected rows by their ordinal,
     with their source offsets; and /marc/control_index, where its sentinel says it
     covers every committed row (readers then trust it), against the rows' controls.
   Payload rows past a marker (tracts, volumes, MARC) are not part of the file
   (docs/format.md, "Models"): readers never look past the marker, recover keeps them,
   and they are not checked, except group indices of tracts, which readers report as
   stored: every stored one must be exact. Frames past frame_id must be gone (recover
   trims them). The status row must then say closed, with committed = the markers' total.

Per model and in total it prints: kills, items checked, items lost (committed items
missing or not bit-exact; must be 0), files not openable (must be 0), rounds with any
other failure, and how many kills came before SWMR started, how many rounds' writers had
finished before their kill, and how many recovers were killed. Exit 1 if anything failed.
--class restricts the kill classes (for a targeted run), --recover-kills sets the share
of rounds whose first recover is killed.
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile

import numpy as np

import h5py
import hdf5plugin  # noqa: F401  (Blosc decoding)

import h5s_scriptlib as lib

MODELS = ("frames", "tracts", "volumes", "marc")
# (class, weight): where in the writer's life the SIGKILL lands.
KILL_CLASSES = (("startup", 0.12), ("early", 0.13), ("mid", 0.37), ("late", 0.18),
                ("close", 0.20))
STARTUP_WINDOW = 0.08  # seconds after the spawn: creation, schema, SWMR start, first commit
POLL_S = 0.003
RECOVER_KILLS = 0.15  # share of rounds where a first `h5stream recover` is killed too
RECOVER_TIMEOUT = 600

# ---------------------------------------------------------------------------------------
# Following the writer


class Follower:
    """An h5py SWMR reader that remembers the largest extent each commit marker showed.

    markers: [(path, rows that are not items)] (offsets start with a preset 0)."""

    def __init__(self, path, markers):
        self.path = path
        self.markers = markers
        self.seen = {m: 0 for m, _ in markers}
        self.f = None
        self.ds = None
        self.status = None
        self.problems = []  # commit-protocol violations seen live

    def poll(self):
        if self.f is None and not self._open():
            return
        try:
            # The status row first: it is written after the markers of the same commit,
            # so what it says can never be ahead of the markers read after it.
            self.status.refresh()
            said = int(self.status[0]["committed"])
            total = 0
            for m, extra in self.markers:
                d = self.ds[m]
                d.refresh()
                n = max(0, d.shape[0] - extra)
                if n < self.seen[m] and len(self.problems) < 5:
                    self.problems.append("%s went back from %d to %d items" % (m, self.seen[m], n))
                self.seen[m] = max(self.seen[m], n)
                total += n
            if said > total and len(self.problems) < 5:
                self.problems.append("the status row said %d committed while the markers "
                                     "held %d" % (said, total))
        except (OSError, KeyError, RuntimeError):
            pass  # a read racing the writer; the next poll tries again

    def _open(self):
        # Only once the superblock says SWMR writing: an open before that fails anyway,
        # and on an existing file (--append) it would hold a lock the writer needs.
        try:
            sb = lib.superblock_flags(self.path)
        except OSError:
            return False
        if sb is None or not sb[1] & lib.SB_SWMR_WRITE_ACCESS:
            return False
        try:
            f = h5py.File(self.path, "r", libver="latest", swmr=True)
        except OSError:
            return False  # not yet in SWMR mode (the writer still declares its schema)
        try:
            self.ds = {m: f[m] for m, _ in self.markers}
            self.status = f[lib.STATUS_PATH]
        except KeyError:
            f.close()
            return False
        self.f = f
        return True

    def close(self):
        if self.f is not None:
            self.f.close()
        self.f = None


# ---------------------------------------------------------------------------------------
# Comparing


def rows_equal(stored, expected):
    """Per row of two 2-D arrays: True where every element has the same bits (so NaNs
    compare, and -0.0 differs from 0.0). expected is converted to stored's type only
    where that is exact (a safe cast); otherwise ValueError."""
    stored = np.ascontiguousarray(stored)
    expected = np.asarray(expected)
    if stored.dtype != expected.dtype:
        if not np.can_cast(expected.dtype, stored.dtype, "safe"):
            raise ValueError("stored as %s, source %s" % (stored.dtype, expected.dtype))
        expected = expected.astype(stored.dtype)
    expected = np.ascontiguousarray(expected.astype(expected.dtype.newbyteorder("=")))
    stored = np.ascontiguousarray(stored.astype(stored.dtype.newbyteorder("=")))
    if stored.shape != expected.shape:
        raise ValueError("shape %s, expected %s" % (stored.shape, expected.shape))
    if stored.size == 0:
        return np.ones(stored.shape[0], dtype=bool)
    view = "u%d" % stored.dtype.itemsize
    s = stored.reshape(stored.shape[0], -1).view(view)
    e = expected.reshape(expected.shape[0], -1).view(view)
    return (s == e).all(axis=1)


def per_row(dset, expected):
    """rows_equal of the first len(expected) rows of dset; rows dset lacks are unequal."""
    n = len(expected)
    have = min(n, dset.shape[0])
    eq = np.zeros(n, dtype=bool)
    if have:
        eq[:have] = rows_equal(dset[:have], expected[:have])
    return eq


def repeated(a, rows):
    """The first `rows` rows of a repeated end to end (a source pushed --repeat times)."""
    if rows == 0:
        return a[:0]
    return np.concatenate([a] * -(-rows // len(a)))[:rows]


class Verdict:
    """What one recovered file holds compared with what must be there."""

    def __init__(self):
        self.checked = 0   # items the recovered markers cover, each compared
        self.missing = 0   # items seen committed before the kill and no longer covered
        self.wrong = 0     # covered items whose bytes differ from the expectation
        self.final = {}    # marker -> items after recover
        self.problems = []  # anything else that is not as promised

    def items(self, marker, seen, final, bad):
        """bad: number of covered items that differ."""
        self.final[marker] = final
        self.checked += final
        self.missing += max(0, seen - final)
        self.wrong += bad

    def problem(self, text):
        self.problems.append(text)


def status_row(f):
    row = f[lib.STATUS_PATH][0]
    return int(row["state"]), int(row["committed"])


def check_status(v, f):
    """After recover: state closed (1) or failed (2), committed = all markers' items."""
    state, committed = status_row(f)
    total = sum(v.final.values())
    if state not in (lib.STATE_CLOSED, 2):
        v.problem("status row state %d after recover, expected 1 (closed)" % state)
    if committed != total:
        v.problem("status row says %d committed, the markers hold %d" % (committed, total))


# ---------------------------------------------------------------------------------------
# Models. Each gives variants; a variant's start() returns a Run: the command, the file,
# the markers to follow, the nominal duration, an optional stdin feeder, and verify().


class Run:
    def __init__(self, cmd, path, markers, duration, verify, feed=None, before=None,
                 close_mode="term"):
        self.cmd = cmd
        self.path = path
        self.markers = markers
        self.duration = duration
        self.verify = verify  # verify(h5py.File, seen, run) -> Verdict
        self.feed = feed      # feed(stdin, stop_event, end_at) for a pipe source
        self.before = before  # a step before the writer starts (an append's first part)
        self.close_mode = close_mode  # how a "close" kill gets the writer to close: pick_kill
        self.spawn_wall = None
        self.end_wall = None
        self.ctx = {}


class Model:
    name = None

    def __init__(self, p, scale, work):
        self.p = p
        self.scale = scale
        self.work = work

    def variants(self):
        raise NotImplementedError

    def data(self, rel):
        return os.path.join(self.p.shared_data, rel)


# ---- frames -----------------------------------------------------------------------------

FRAME_ID = lib.FRAME_ID_PATH


class FramesModel(Model):
    name = "frames"

    # name, shape, dtype, rate, options (flush options included)
    VARIANTS = [
        ("none", (64, 96), "uint16", 800, ["--compress", "none", "--flush-every", "10",
                                          "--flush-ms", "30"]),
        ("blosc", (64, 96), "uint16", 800, ["--compress", "blosc:lz4:5:shuffle",
                                           "--flush-every", "8", "--flush-ms", "20"]),
        ("deflate-fpc4-tiles", (64, 96), "int32", 800,
         ["--compress", "deflate:1", "--frames-per-chunk", "4", "--tile", "32x48",
          "--flush-every", "8", "--flush-ms", "25"]),
        ("zstd-fpc3-3d", (2, 32, 48), "float32", 800,
         ["--compress", "blosc:zstd:3:bitshuffle", "--frames-per-chunk", "3",
          "--flush-ms", "15"]),
        ("every-frame-fast", (64, 96), "uint16", 4000,
         ["--compress", "blosc:lz4:1:bitshuffle", "--flush-every", "1", "--flush-ms", "1"]),
        ("append", (64, 96), "uint16", 800, ["--append", "--flush-every", "10",
                                             "--flush-ms", "30"]),
    ]

    def variants(self):
        return [v[0] for v in self.VARIANTS]

    def start(self, variant, rdir, rng):
        name, shape, dtype, rate, opts = next(v for v in self.VARIANTS if v[0] == variant)
        path = os.path.join(rdir, "killed.h5")
        n = max(50, int(rate * 1.2 * self.scale))
        shape_s = "x".join(str(x) for x in shape)
        cmd = [self.p.bin, "ingest", "frames", "sim:ramp", "--shape", shape_s, "--dtype", dtype,
               "-n", str(n), "--rate", str(rate), "-o", path, "-q"] + opts
        run = Run(cmd, path, [(FRAME_ID, 0)], n / rate + 0.03, self.verify)
        run.ctx.update(shape=shape, dtype=dtype, base=0)
        if variant == "append":
            base = 40 + rng.randrange(60)

            def before():
                # A first run, closed cleanly; the killed run appends to it.
                t0 = time.time()
                r = subprocess.run([self.p.bin, "ingest", "frames", "sim:ramp", "--shape",
                                    shape_s, "--dtype", dtype, "-n", str(base), "-o", path,
                                    "-q", "--compress", "blosc:lz4"],
                                   capture_output=True, timeout=120)
                if r.returncode != 0:
                    raise RuntimeError("the first part of the append run failed: %s"
                                       % r.stderr.decode(errors="replace"))
                run.ctx["base_window"] = (t0, time.time())
            run.before = before
            run.ctx["base"] = base
        return run

    def verify(self, f, seen, run):
        v = Verdict()
        shape, dtype, base = run.ctx["shape"], run.ctx["dtype"], run.ctx["base"]
        ids = f[FRAME_ID][()]
        data = f[lib.DATA_PATH]
        stamps = f[lib.TIMESTAMP_PATH][()]
        n = len(ids)
        if data.shape[0] != n:
            v.problem("data holds %d frames, frame_id %d (recover trims data to frame_id)"
                      % (data.shape[0], n))
        if len(stamps) != n:
            v.problem("timestamp holds %d values, frame_id %d" % (len(stamps), n))
        bad = np.zeros(n, dtype=bool)
        bad |= ids != np.arange(n, dtype=ids.dtype)
        # Frames 0..base-1 come from the first (clean) run, the rest from the killed one;
        # sim:ramp starts again at 0 in each run.
        spans = [(0, min(n, base), 0, run.ctx.get("base_window")),
                 (min(n, base), n, base, (run.spawn_wall, run.end_wall))]
        for first, last, origin, window in spans:
            for a in range(first, last, 256):
                b = min(last, a + 256)
                seen_frames = data[a:b] if b <= data.shape[0] else None
                if seen_frames is None:
                    bad[a:b] = True
                    continue
                expected = lib.ramp_frames(a - origin, b - a, shape, dtype)
                bad[a:b] |= ~rows_equal(seen_frames.reshape(b - a, -1),
                                        expected.reshape(b - a, -1))
            if window and last > first and len(stamps) >= last:
                s = stamps[first:last]
                bad[first:last] |= ~((s >= window[0] - 1.0) & (s <= window[1] + 1.0))
        if bad.any():
            v.problem("frame %d is not the ramp frame (or its id or timestamp is wrong)"
                      % int(np.argmax(bad)))
        v.items(FRAME_ID, seen[FRAME_ID], n, int(bad.sum()))
        if base and n < base:
            v.problem("the %d frames of the first, cleanly closed run were not all kept (%d)"
                      % (base, n))
            v.missing += base - n
        check_status(v, f)
        return v


# ---- tracts -----------------------------------------------------------------------------

OFFSETS = "/tracts/offsets"


def trx_name(entry):
    """'dps/name.3.uint8' -> ('name', 3, dtype)."""
    parts = os.path.basename(entry).split(".")
    dtype = np.dtype(parts[-1]).newbyteorder("<")
    if len(parts) >= 3 and parts[-2].isdigit():
        return ".".join(parts[:-2]), int(parts[-2]), dtype
    return ".".join(parts[:-1]), 1, dtype


def read_trx(path):
    """The arrays of a TRX zip, read with numpy (the TRX spec; legacy offsets without the
    trailing sentinel get it added)."""
    z = zipfile.ZipFile(path)
    header = json.loads(z.read("header.json"))
    src = {"dps": {}, "dpv": {}, "groups": {}, "dpg": {}}
    for entry in z.namelist():
        if entry.endswith("/") or entry == "header.json":
            continue
        name, k, dtype = trx_name(entry)
        a = np.frombuffer(z.read(entry), dtype=dtype)
        top = entry.split("/")[0]
        if entry.startswith("positions."):
            src["positions"] = a.reshape(-1, 3)
        elif entry.startswith("offsets."):
            off = a.astype(np.uint64)
        elif top in ("dps", "dpv"):
            src[top][name] = a.reshape(-1, k)
        elif top == "groups":
            src["groups"][name] = a.ravel()
        elif top == "dpg":
            src["dpg"]["%s/%s" % (entry.split("/")[1], name)] = a.ravel()
    nv = int(header["NB_VERTICES"])
    if len(off) == int(header["NB_STREAMLINES"]):
        off = np.append(off, np.uint64(nv))
    src["lengths"] = np.diff(off.astype(np.int64))
    src["affine"] = np.array(header["VOXEL_TO_RASMM"], dtype=np.float64)
    return src


def read_nibabel_tracts(path):
    import nibabel as nib
    t = nib.streamlines.load(path)
    sl = t.streamlines
    src = {"positions": sl.get_data(), "lengths": np.asarray(sl._lengths, dtype=np.int64),
           "dps": {}, "dpv": {}, "groups": {}, "dpg": {}}
    for k, a in t.tractogram.data_per_streamline.items():
        a = np.asarray(a)
        src["dps"][k] = a.reshape(a.shape[0], -1)
    for k, a in t.tractogram.data_per_point.items():
        a = a.get_data()
        src["dpv"][k] = a.reshape(a.shape[0], -1)
    return src


class TractsModel(Model):
    name = "tracts"

    # name, source, streamlines per second, repeats at scale 1, options
    VARIANTS = [
        ("trx-pascal", "tracts/small_pascal_legacy_offsets.trx", 5000, 6,
         ["--flush-ms", "20"]),
        ("trx-deflate-blosc", "tracts/dpsv_legacy_offsets_deflate.trx", 4000, 10,
         ["--compress", "blosc:lz4:5:shuffle", "--flush-every", "50", "--flush-ms", "20"]),
        ("trk-complex-every", "tracts/complex.trk", 3000, 1200,
         ["--flush-every", "1", "--flush-ms", "1"]),
        ("tck-f64-deflate", "tracts/standard.tck", 5000, 50,
         ["--dtype", "float64", "--compress", "deflate:1", "--flush-ms", "10"]),
        ("trk-fast", "tracts/standard.trk", 20000, 200,
         ["--flush-every", "100", "--flush-ms", "5", "--queue-mb", "4"]),
    ]

    def __init__(self, *a):
        super().__init__(*a)
        self.sources = {}

    def variants(self):
        return [v[0] for v in self.VARIANTS]

    def source(self, rel):
        if rel not in self.sources:
            path = self.data(rel)
            self.sources[rel] = read_trx(path) if rel.endswith(".trx") else \
                read_nibabel_tracts(path)
        return self.sources[rel]

    def start(self, variant, rdir, rng):
        name, rel, rate, reps, opts = next(v for v in self.VARIANTS if v[0] == variant)
        src = self.source(rel)
        reps = max(2, int(round(reps * self.scale)))
        path = os.path.join(rdir, "killed.h5")
        total = reps * len(src["lengths"])
        cmd = [self.p.bin, "ingest", "tracts", self.data(rel), "--repeat", str(reps), "--rate",
               str(rate), "-o", path, "-q"] + opts
        run = Run(cmd, path, [(OFFSETS, 1)], total / rate + 0.03, self.verify)
        run.ctx.update(src=src, reps=reps)
        return run

    def verify(self, f, seen, run):
        v = Verdict()
        src, reps = run.ctx["src"], run.ctx["reps"]
        nsrc = len(src["lengths"])
        off = f[OFFSETS][()].astype(np.int64)
        n = len(off) - 1
        if n < 0 or off[0] != 0:
            v.problem("offsets[0] is not 0")
            v.items(OFFSETS, seen[OFFSETS], 0, 0)
            return v
        if n > reps * nsrc:
            v.problem("%d streamlines committed, the run pushes %d" % (n, reps * nsrc))
            n = reps * nsrc
        lengths = np.tile(src["lengths"], reps)[:n]
        exp_off = np.concatenate([[0], np.cumsum(lengths)])
        bad = off[1:n + 1] != exp_off[1:]
        nv = int(exp_off[-1])
        pos = f["/tracts/positions"]
        if pos.shape[0] < int(off[n]):
            v.problem("positions hold %d points, the last offset is %d" % (pos.shape[0], off[n]))
        # Each point row is compared with the source row it must be (the source repeated).
        bad_rows = ~per_row(pos, repeated(src["positions"], nv))
        for k, a in src["dpv"].items():
            d = f["/tracts/dpv/" + k]
            if d.shape[0] < nv:
                v.problem("dpv %s holds %d rows, the last offset is %d" % (k, d.shape[0], nv))
            bad_rows |= ~per_row(d, repeated(a, nv))
        # A streamline is wrong if any of its points (or point values) is.
        cum = np.concatenate([[0], np.cumsum(bad_rows)])
        bad |= (cum[exp_off[1:]] - cum[exp_off[:-1]]) > 0
        for k, a in src["dps"].items():
            d = f["/tracts/dps/" + k]
            if d.shape[0] < n:
                v.problem("dps %s holds %d rows, %d committed" % (k, d.shape[0], n))
            bad |= ~per_row(d, repeated(a, n))
        if bad.any():
            v.problem("streamline %d differs from the source's" % int(np.argmax(bad)))
        v.items(OFFSETS, seen[OFFSETS], n, int(bad.sum()))
        self.check_groups(v, f, src, reps, n)
        check_status(v, f)
        return v

    @staticmethod
    def check_groups(v, f, src, reps, n):
        """Group indices are reported as stored (docs/tracts.md): each stored row must be
        the source's index rebased by the streamlines of the passes before it. dpg values
        are written and flushed by the writer thread before any streamline can commit, so
        with n > 0 they must be the source's; with none committed they may still be the
        zeros they were declared with (docs/tracts.md: empty groups keep zeros)."""
        nsrc = len(src["lengths"])
        for g, idx in src["groups"].items():
            expected = np.concatenate([idx.astype(np.int64) + r * nsrc for r in range(reps)])
            stored = f["/tracts/groups/" + g][()].astype(np.int64)
            if len(stored) > len(expected) or not np.array_equal(stored,
                                                                 expected[:len(stored)]):
                v.problem("group %s: %d stored indices are not the source's, rebased" %
                          (g, len(stored)))
        for key, vals in src["dpg"].items():
            stored = f["/tracts/dpg/" + key][()]
            if rows_equal(stored.reshape(1, -1), vals.reshape(1, -1)).all():
                continue
            if n > 0 or np.any(stored != 0):
                v.problem("dpg %s is %s, the source's %s (%d streamlines committed)"
                          % (key, stored.tolist(), vals.tolist(), n))


# ---- volumes ----------------------------------------------------------------------------

OBS_META = "/obs_meta"


class VolumesModel(Model):
    name = "volumes"

    # name, [(source, BIDS suffix)], copies at scale 1, heterogeneous, options
    VARIANTS = [
        ("anat-deflate-every", [("volumes/anatomical.nii", "T1w")], 500, False,
         ["--compress", "deflate:1", "--flush-every", "1", "--flush-ms", "5",
          "--threads", "2"]),
        ("4d-gz-blocks-blosc", [("volumes/example4d.nii.gz", "bold")], 150, False,
         ["--compress", "blosc:lz4:5:shuffle", "--chunk", "block:16", "--flush-ms", "10",
          "--threads", "2"]),
        ("functional-scaled", [("volumes/functional.nii", "bold")], 500, False,
         ["--compress", "deflate:1:shuffle", "--flush-every", "5", "--flush-ms", "10",
          "--threads", "1"]),
        ("hetero-mix", [("volumes/anatomical.nii", "T1w"), ("volumes/aniso_vox.nii.gz", "dwi"),
                        ("volumes/example_nifti2.nii.gz", "T2w"),
                        ("volumes/functional.nii", "bold")], 180, True,
         ["--compress", "deflate:1", "--flush-every", "2", "--flush-ms", "10",
          "--threads", "1"]),
    ]

    def __init__(self, *a):
        super().__init__(*a)
        self.expected = {}   # source -> (header fields, raw voxels)
        self.duration = {}   # variant -> seconds of a whole run (measured once)
        self.inputs = {}     # variant -> (folder, {obs_id: source}, participants rows)

    def variants(self):
        return [v[0] for v in self.VARIANTS]

    def source(self, rel):
        if rel not in self.expected:
            import nibabel as nib
            img = nib.load(self.data(rel))
            h = img.header
            # The header as stored: nibabel's image header has scl_* reset to NaN.
            stored = type(h).from_fileobj(nib.openers.ImageOpener(self.data(rel)))
            raw = np.asanyarray(img.dataobj.get_unscaled())
            ndim = int(h["dim"][0])
            self.expected[rel] = {
                "raw": raw,
                "ndim": ndim,
                "dim": [int(x) for x in h["dim"][1:ndim + 1]],
                "datatype": int(h["datatype"]),
                "slope": float(stored["scl_slope"]),
                "inter": float(stored["scl_inter"]),
                "affine": img.affine,
            }
        return self.expected[rel]

    def prepare(self, variant):
        """Symlinked copies named sub-NNNN_SUFFIX.nii[.gz] and a participants table."""
        if variant in self.inputs:
            return self.inputs[variant]
        name, sources, copies, hetero, opts = next(v for v in self.VARIANTS if v[0] == variant)
        folder = os.path.join(self.work, "volumes-input-" + variant)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        copies = max(8, int(copies * self.scale))
        obs = {}
        rows = []
        for i in range(copies):
            rel, suffix = sources[i % len(sources)]
            ext = ".nii.gz" if rel.endswith(".gz") else ".nii"
            obs_id = "sub-%04d_%s" % (i, suffix)
            os.symlink(self.data(rel), os.path.join(folder, obs_id + ext))
            obs[obs_id] = rel
            if i % 3 != 2:  # some subjects without a row: obs_meta is its own table
                rows.append(("%04d" % i, 20 + i % 50, "G%d" % (i % 4), 0.25 * i))
        tsv = os.path.join(self.work, "participants-" + variant + ".tsv")
        with open(tsv, "w") as t:
            t.write("participant_id\tage\tgroup\tscore\n")
            for sid, age, grp, score in rows:
                t.write("sub-%s\t%d\t%s\t%r\n" % (sid, age, grp, score))
        self.inputs[variant] = (folder, obs, rows, tsv, hetero, opts)
        return self.inputs[variant]

    def command(self, variant, path):
        folder, obs, rows, tsv, hetero, opts = self.prepare(variant)
        return [self.p.bin, "ingest", "volumes", folder, "-o", path, "--collection", "c",
                "--participants", tsv] + (["--heterogeneous"] if hetero else []) + opts

    def calibrate(self, variant):
        """Volumes have no --rate: one whole run says how long the writer takes."""
        if variant not in self.duration:
            path = os.path.join(self.work, "calibrate-%s.h5" % variant)
            t0 = time.monotonic()
            r = subprocess.run(self.command(variant, path), capture_output=True, timeout=600)
            self.duration[variant] = time.monotonic() - t0
            if r.returncode != 0:
                raise RuntimeError("volumes %s: a whole run failed: %s" %
                                   (variant, r.stderr.decode(errors="replace")))
            os.remove(path)
        return self.duration[variant]

    def start(self, variant, rdir, rng):
        path = os.path.join(rdir, "killed.h5")
        duration = self.calibrate(variant)
        folder, obs, rows, tsv, hetero, opts = self.prepare(variant)
        run = Run(self.command(variant, path), path, [("/volumes/c/obs", 0), (OBS_META, 0)],
                  duration, self.verify, close_mode="end")
        run.ctx.update(obs=obs, rows=rows, hetero=hetero)
        return run

    def verify(self, f, seen, run):
        v = Verdict()
        obs_map, rows, hetero = run.ctx["obs"], run.ctx["rows"], run.ctx["hetero"]
        obs = f["/volumes/c/obs"][()]
        vox = f["/volumes/c/voxels"]
        n = len(obs)
        bad = 0
        first_bad = None
        ids = set()
        for i in range(n):
            row = obs[i]
            obs_id = row["obs_id"].decode(errors="replace")
            why = self.check_volume(row, obs_id, obs_map, ids, vox, hetero)
            ids.add(obs_id)
            if why:
                bad += 1
                first_bad = first_bad or "obs row %d (%s): %s" % (i, obs_id, why)
        if first_bad:
            v.problem(first_bad)
        v.items("/volumes/c/obs", seen["/volumes/c/obs"], n, bad)
        meta = f[OBS_META][()]
        m = len(meta)
        mbad = 0
        for i in range(m):
            r = meta[i]
            want = rows[i] if i < len(rows) else None
            got = (r["obs_subject_id"].decode(errors="replace"), int(r["age"]),
                   r["group"].decode(errors="replace"), float(r["score"]))
            if got != want:
                mbad += 1
                if mbad == 1:
                    v.problem("obs_meta row %d is %r, expected %r" % (i, got, want))
        v.items(OBS_META, seen[OBS_META], m, mbad)
        check_status(v, f)
        return v

    def check_volume(self, row, obs_id, obs_map, ids, vox, hetero):
        if obs_id not in obs_map:
            return "no such source"
        if obs_id in ids:
            return "obs_id twice"
        e = self.source(obs_map[obs_id])
        subject = obs_id[4:8]
        if row["obs_subject_id"].decode() != subject:
            return "subject %r, expected %r" % (row["obs_subject_id"], subject)
        ndim = int(row["ndim"])
        if ndim != e["ndim"] or [int(x) for x in row["shape"][:ndim]] != e["dim"]:
            return "shape %s, expected %s" % (list(row["shape"][:ndim]), e["dim"])
        if int(row["nifti_datatype"]) != e["datatype"]:
            return "datatype %d, expected %d" % (row["nifti_datatype"], e["datatype"])
        if float(row["scl_slope"]) != e["slope"] or float(row["scl_inter"]) != e["inter"]:
            return "scl_slope/scl_inter %r/%r, expected %r/%r" % (
                row["scl_slope"], row["scl_inter"], e["slope"], e["inter"])
        if not np.allclose(row["affine"], e["affine"], rtol=0, atol=1e-5):
            return "affine differs from nibabel's"
        raw = e["raw"]
        if hetero:
            at = int(row["pool_offset"])
            if at + raw.size > vox.shape[0]:
                return "pool holds %d elements, the volume ends at %d" % (vox.shape[0],
                                                                          at + raw.size)
            stored = vox[at:at + raw.size]
            expected = raw.ravel(order="F")  # NIfTI order: i fastest
        else:
            k = int(row["voxel_index"])
            if k >= vox.shape[0]:
                return "voxel_index %d past the voxels' %d rows" % (k, vox.shape[0])
            stored = vox[k]
            expected = raw.T  # [(T,) Z, Y, X] in C order
            if stored.shape != expected.shape:
                return "voxels shape %s, expected %s" % (stored.shape, expected.shape)
        if not rows_equal(stored.reshape(1, -1), expected.reshape(1, -1)).all():
            return "voxels differ from nibabel's unscaled data"
        return None


# ---- MARC -------------------------------------------------------------------------------

MARC_INDEX = "/marc/index"
MARC_REJ_INDEX = "/marc/rejected/index"


class MarcModel(Model):
    name = "marc"

    # name, stream, bytes per second at scale 1, options
    VARIANTS = [
        ("mma-strict", "mma", 4.5e6, ["--mode", "strict", "--flush-ms", "10"]),
        ("mixed-permissive-every", "mixed", 4.5e6,
         ["--mode", "permissive", "--flush-every", "1", "--flush-ms", "2", "--threads", "2"]),
        ("mma-lenient-blosc", "mma", 6e6,
         ["--mode", "lenient", "--compress", "blosc:zstd:1:shuffle", "--flush-every", "40",
          "--flush-ms", "20"]),
    ]

    def __init__(self, *a):
        super().__init__(*a)
        self.streams = {}

    def variants(self):
        return [v[0] for v in self.VARIANTS]

    def stream(self, kind):
        """(bytes, [(offset, record)]): what goes down the pipe, cut independently."""
        if kind not in self.streams:
            mma = lib.iso2709_split(open(self.data("marc/MMA_Pubs_records_2021_07.mrc"),
                                         "rb").read())
            recs = [r for _, r in mma]
            if kind == "mixed":
                # Every record of a file with many defects, one after each 10 MMA records:
                # permissive mode rejects some, so both markers move during the run.
                bad = [r for _, r in lib.iso2709_split(open(self.data(
                    "marc/pride-and-prejudice-with-many-errors.mrc"), "rb").read())]
                mixed = []
                for i, r in enumerate(recs):
                    mixed.append(r)
                    if i % 10 == 9 and bad:
                        mixed.append(bad.pop(0))
                recs = mixed + bad
            data = b"".join(recs)
            self.streams[kind] = (data, lib.iso2709_split(data))
        return self.streams[kind]

    def start(self, variant, rdir, rng):
        name, kind, rate, opts = next(v for v in self.VARIANTS if v[0] == variant)
        data, recs = self.stream(kind)
        nbytes = max(200000, int(len(data) * min(1.0, self.scale)))
        # A whole number of records.
        cut = next((i for i, (o, r) in enumerate(recs) if o + len(r) >= nbytes), len(recs) - 1)
        nbytes = recs[cut][0] + len(recs[cut][1])
        path = os.path.join(rdir, "killed.h5")
        cmd = [self.p.bin, "ingest", "marc", "-", "-o", path, "-q"] + opts
        pace = random.Random(rng.random())
        duration = nbytes / rate

        ends = [o + len(r) for o, r in recs[:cut + 1]]

        def feed(stdin, stop, end_at):
            """Writes the stream in pieces of 2 - 64 KiB (cutting records anywhere) on a
            fixed schedule; closes the pipe at the end, or when end_at (the 'close' kills)
            comes first, after the rest of the record it was in."""
            t0 = time.monotonic()
            at = 0
            try:
                while at < nbytes and not stop.is_set():
                    piece = min(nbytes - at, pace.randint(2048, 65536))
                    if end_at is not None and time.monotonic() - t0 >= end_at:
                        piece = next(e for e in ends if e >= at) - at
                        if piece == 0:
                            break
                    stdin.write(data[at:at + piece])
                    stdin.flush()
                    at += piece
                    if end_at is not None and at in ends and time.monotonic() - t0 >= end_at:
                        break
                    delay = t0 + at / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
            except (BrokenPipeError, OSError, ValueError):
                pass
            try:
                stdin.close()
            except (BrokenPipeError, OSError):
                pass

        run = Run(cmd, path, [(MARC_INDEX, 0), (MARC_REJ_INDEX, 0)], duration + 0.03,
                  self.verify, feed=feed, close_mode="pipe")
        run.ctx.update(recs=recs[:cut + 1])
        return run

    def verify(self, f, seen, run):
        v = Verdict()
        recs = run.ctx["recs"]
        ordinals = set()
        for marker, base in ((MARC_INDEX, "/marc"), (MARC_REJ_INDEX, "/marc/rejected")):
            idx = f[marker][()]
            n = len(idx)
            off = f[base + "/offsets"][()].astype(np.int64)
            data = f[base + "/records"]
            bad = 0
            first_bad = None
            if len(off) < n + 1 or off[0] != 0:
                v.problem("%s/offsets holds %d rows for %d records" % (base, len(off), n))
                v.items(marker, seen[marker], n, n)
                continue
            end = int(off[n]) if n else 0
            if data.shape[0] < end:
                v.problem("%s/records holds %d bytes, the last offset is %d" %
                          (base, data.shape[0], end))
            blob = data[:min(end, data.shape[0])].tobytes()
            last = -1
            for i in range(n):
                o = int(idx[i]["ordinal"])
                why = None
                if o <= last or o >= len(recs) or o in ordinals:
                    why = "ordinal %d out of order, out of range or stored twice" % o
                else:
                    src_off, rec = recs[o]
                    got = blob[int(off[i]):int(off[i + 1])]
                    if got != rec:
                        why = "bytes differ from input record %d" % o
                    elif int(idx[i]["length"]) != len(rec) or \
                            int(idx[i]["source_offset"]) != src_off:
                        why = "length/source_offset %d/%d, expected %d/%d" % (
                            idx[i]["length"], idx[i]["source_offset"], len(rec), src_off)
                last = max(last, o)
                ordinals.add(o)
                if why:
                    bad += 1
                    first_bad = first_bad or "%s row %d: %s" % (marker, i, why)
            if first_bad:
                v.problem(first_bad)
            v.items(marker, seen[marker], n, bad)
            if marker == MARC_INDEX:
                self.check_control_index(v, f, idx)
        check_status(v, f)
        return v

    @staticmethod
    def check_control_index(v, f, idx):
        """/marc/control_index is written at close; readers trust it when the status row
        says closed (as recover leaves it) and its sentinel covers every committed row
        (docs/marc-model.md). If it does, it must be right: sorted (hash, row) pairs of
        every row with a 001, hash = FNV-1a 64 of the stored control."""
        if "/marc/control_index" not in f:
            return
        ci = f["/marc/control_index"][()]
        top = np.uint64(0xFFFFFFFFFFFFFFFF)
        if len(ci) == 0 or ci[-1]["hash"] != top or int(ci[-1]["row"]) != len(idx):
            return  # not trusted: readers scan the index rows instead
        want = []
        for row in range(len(idx)):
            control = bytes(idx[row]["control"]).split(b"\0", 1)[0]
            if control:
                want.append((fnv1a64(control), row))
        want.sort()
        got = [(int(h), int(r)) for h, r in ci[:-1]]
        if got != want:
            v.problem("/marc/control_index has a sentinel for all %d rows but does not list "
                      "their controls (%d pairs, expected %d)" % (len(idx), len(got), len(want)))


def fnv1a64(data):
    """FNV-1a 64 (docs/marc-model.md: 2^64 - 1 is reserved and maps to 2^64 - 2)."""
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return 0xFFFFFFFFFFFFFFFE if h == 0xFFFFFFFFFFFFFFFF else h


MODEL_CLASSES = {"frames": FramesModel, "tracts": TractsModel, "volumes": VolumesModel,
                 "marc": MarcModel}

# ---------------------------------------------------------------------------------------
# One kill round


def pick_kill(rng, duration, close_mode, classes=None):
    """(class, kill time, SIGTERM / end-of-input time or None), seconds after the spawn.

    close_mode: "term" (SIGTERM closes the file: frames, tracts), "pipe" (the end of the
    input closes it: MARC's feeder closes the pipe), "end" (volumes: only the end of the
    input, so a "close" kill lands around the measured end of the run)."""
    weighted = [(c, w) for c, w in KILL_CLASSES if not classes or c in classes]
    r, acc = rng.random() * sum(w for _, w in weighted), 0.0
    cls = weighted[-1][0]
    for name, w in weighted:
        acc += w
        if r < acc:
            cls = name
            break
    d = max(duration, STARTUP_WINDOW * 3)
    if cls == "startup":
        # Half of them in the first 25 ms, where the file is created and its schema
        # declared before SWMR starts (about 10 ms after the spawn here).
        return cls, rng.uniform(0.0, 0.025) if rng.random() < 0.5 else \
            rng.uniform(0.025, STARTUP_WINDOW), None
    if cls == "early":
        return cls, rng.uniform(STARTUP_WINDOW, 0.25 * d), None
    if cls == "mid":
        return cls, rng.uniform(0.25 * d, 0.85 * d), None
    if cls == "late":
        return cls, rng.uniform(0.85 * d, 1.01 * d), None
    if close_mode == "end":
        return cls, rng.uniform(0.95 * d, 1.02 * d), None
    term = rng.uniform(0.2 * d, 0.9 * d)
    return cls, term + rng.uniform(0.0, 0.006 if close_mode == "term" else 0.03), term


class RoundResult:
    def __init__(self, model, variant, cls):
        self.model = model
        self.variant = variant
        self.cls = cls
        self.t_kill = None
        self.seen = {}
        self.outcome = ""  # killed, finished, no-file, pre-swmr, ...
        self.recover_rc = None
        self.recover_text = ""
        self.openable = True
        self.verdict = None
        self.failures = []
        self.pre_swmr = False
        self.no_file = False
        self.recover_killed = False

    def failed(self):
        return bool(self.failures)


def run_round(model, variant, rng, rdir, classes=None):
    rng_round = random.Random(rng.random())
    run = model.start(variant, rdir, rng_round)
    res = RoundResult(model.name, variant, None)
    cls, t_kill, t_term = pick_kill(rng_round, run.duration, run.close_mode, classes)
    res.cls = cls
    # In some rounds `h5stream recover` is killed too, once, before the recover that counts.
    kill_recover_at = rng_round.uniform(0.0, 0.025) if rng_round.random() < RECOVER_KILLS \
        else None
    if run.before:
        run.before()
    follower = Follower(run.path, run.markers)
    err_path = os.path.join(rdir, "writer.stderr")
    stop = threading.Event()
    with open(err_path, "wb") as err:
        run.spawn_wall = time.time()
        t0 = time.monotonic()
        proc = subprocess.Popen(run.cmd, stdin=subprocess.PIPE if run.feed else
                                subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        feeder = None
        if run.feed:
            end_at = t_term if run.close_mode == "pipe" else None
            feeder = threading.Thread(target=run.feed, args=(proc.stdin, stop, end_at),
                                      daemon=True)
            feeder.start()
        termed = False
        try:
            while True:
                now = time.monotonic() - t0
                if proc.poll() is not None:
                    break
                if run.close_mode == "term" and t_term is not None and not termed and \
                        now >= t_term:
                    proc.send_signal(signal.SIGTERM)
                    termed = True
                follower.poll()
                if now >= t_kill:
                    break  # right after a poll: what it saw was committed before the kill
                time.sleep(POLL_S)
            res.t_kill = time.monotonic() - t0
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                res.outcome = "killed"
            else:
                res.outcome = "finished (exit %d)" % proc.returncode
            proc.wait()
        finally:
            stop.set()
            lib.stop_process(proc)
            if feeder:
                feeder.join(5)
            follower.close()
        run.end_wall = time.time()
    res.seen = dict(follower.seen)
    res.failures += ["live: " + t for t in follower.problems]
    if res.outcome.startswith("finished") and proc.returncode != 0 and not termed:
        res.failures.append("the writer exited %d on its own: %s" % (
            proc.returncode, lib.tail_text(err_path)))
    recover_and_check(model, run, res, rdir, kill_recover_at)
    return res


def kill_a_recover(binpath, path, at):
    """Starts `h5stream recover` and SIGKILLs it `at` seconds later; True if it was
    still running then."""
    proc = subprocess.Popen([binpath, "recover", path], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    end = time.monotonic() + at
    while proc.poll() is None and time.monotonic() < end:
        time.sleep(0.001)
    killed = proc.poll() is None
    lib.stop_process(proc)
    return killed


def recover_and_check(model, run, res, rdir, kill_recover_at=None):
    path = run.path
    sb = None
    if not os.path.exists(path):
        res.no_file = True
    else:
        sb = lib.superblock_flags(path)
        # Open for writing, not yet for SWMR writing (or not even a superblock yet).
        res.pre_swmr = sb is None or (sb[1] & lib.SB_WRITE_ACCESS and
                                      not sb[1] & lib.SB_SWMR_WRITE_ACCESS)
        if res.outcome == "killed":
            shutil.copyfile(path, os.path.join(rdir, "before-recover.h5"))
        # Not on a file killed before SWMR started: one that recover refuses must keep the
        # superblock flags that let the next recover say why.
        if kill_recover_at is not None and not res.pre_swmr and \
                kill_a_recover(model.p.bin, path, kill_recover_at):
            res.recover_killed = True
            res.outcome += ", recover killed at %.3fs" % kill_recover_at
    r = subprocess.run([model.p.bin, "recover", path], capture_output=True,
                       timeout=RECOVER_TIMEOUT)
    res.recover_rc = r.returncode
    res.recover_text = (r.stdout + r.stderr).decode(errors="replace").strip()
    committed_seen = sum(res.seen.values())
    base = run.ctx.get("base", 0)
    if res.no_file:
        res.outcome += ", no file yet"
        if r.returncode != 1 or "no such file" not in res.recover_text:
            res.failures.append("recover of a missing file: exit %d, expected 1 naming it: %s"
                                % (r.returncode, res.recover_text[-300:]))
        if committed_seen:
            res.failures.append("items were seen committed but there is no file")
        return
    if res.pre_swmr:
        res.outcome += ", before SWMR started"
    if r.returncode != 0:
        # Only a file whose writer died before SWMR started (so before any commit) and
        # that never held a whole schema may be refused, with the documented message;
        # one killed before its superblock was written is "not an HDF5 file".
        allowed = res.pre_swmr and not base and committed_seen == 0 and \
            r.returncode == 1 and ("before SWMR writing started" in res.recover_text or
                                   (sb is None and "no HDF5 signature" in res.recover_text))
        if not allowed:
            res.failures.append("recover exit %d: %s" % (r.returncode, res.recover_text[-600:]))
        else:
            res.outcome += ", recover refused it as documented"
        return
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        res.openable = False
        res.failures.append("the recovered file does not open without SWMR: %s" % e)
        return
    with f:
        try:
            v = run.verify(f, res.seen, run)
        except Exception as e:  # a file that opens but cannot be read as promised
            v = Verdict()
            v.missing = committed_seen
            v.problem("reading the recovered file failed: %r" % e)
    res.verdict = v
    if v.missing or v.wrong:
        res.failures.append("%d committed items missing, %d not bit-exact" % (v.missing, v.wrong))
    res.failures += v.problems


def whole_run(model, variant, rdir):
    """Runs a variant to its end without a kill (for the checks of the checker itself);
    returns the Run, its file closed by the writer."""
    run = model.start(variant, rdir, random.Random(0))
    if run.before:
        run.before()
    run.spawn_wall = time.time()
    err_path = os.path.join(rdir, "writer.stderr")
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(run.cmd, stdin=subprocess.PIPE if run.feed else
                                subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        if run.feed:
            # The feeder closes the pipe at the end of the stream.
            threading.Thread(target=run.feed, args=(proc.stdin, threading.Event(), None),
                             daemon=True).start()
        proc.wait(timeout=600)
    run.end_wall = time.time()
    if proc.returncode != 0:
        raise RuntimeError("%s %s: exit %d: %s" % (model.name, variant, proc.returncode,
                                                    lib.tail_text(err_path)))
    return run


# ---------------------------------------------------------------------------------------
# The campaign


class Totals:
    def __init__(self):
        self.rounds = 0
        self.kills = 0  # SIGKILLs that hit a running writer
        self.checked = 0
        self.lost = 0
        self.missing = 0
        self.wrong = 0
        self.unopenable = 0
        self.failed_rounds = 0
        self.pre_swmr = 0
        self.no_file = 0
        self.finished = 0
        self.refused = 0
        self.recover_killed = 0
        self.classes = {}

    def add(self, res):
        self.rounds += 1
        killed = res.outcome.startswith("killed")
        self.kills += killed
        if killed:
            self.classes[res.cls] = self.classes.get(res.cls, 0) + 1
        if res.verdict:
            self.checked += res.verdict.checked
            self.missing += res.verdict.missing
            self.wrong += res.verdict.wrong
            self.lost += res.verdict.missing + res.verdict.wrong
        self.unopenable += not res.openable
        self.failed_rounds += res.failed()
        self.pre_swmr += res.pre_swmr
        self.no_file += res.no_file
        self.finished += not killed
        self.refused += "refused" in res.outcome
        self.recover_killed += res.recover_killed

    def line(self, label):
        return ("%-8s kills %d, items checked %d, items lost %d (missing %d, not bit-exact %d), "
                "files not openable %d, failed rounds %d | rounds %d (writer finished before "
                "the kill %d); kills before SWMR started %d (no file yet %d, file refused by "
                "recover as documented %d); recovers killed and run again %d; kills by class "
                "%s" % (
                    label, self.kills, self.checked, self.lost, self.missing, self.wrong,
                    self.unopenable, self.failed_rounds, self.rounds, self.finished,
                    self.pre_swmr + self.no_file, self.no_file, self.refused,
                    self.recover_killed,
                    " ".join("%s=%d" % kv for kv in sorted(self.classes.items()))))

    def ok(self):
        return self.kills > 0 and self.lost == 0 and self.unopenable == 0 and \
            self.failed_rounds == 0


def run_campaign(p, models, kills, seed, work, scale=1.0, keep_all=False, out=print,
                 classes=None):
    """Runs rounds per model until `kills` SIGKILLs have hit a running writer (at most
    3 x kills rounds); returns ({model: Totals}, the overall Totals)."""
    results = {}
    total = Totals()
    t_start = time.monotonic()
    out("campaign: seed %d, %d kills per model, models %s, scale %.2f, binary %s, work %s"
        % (seed, kills, ",".join(models), scale, p.bin, work))
    for mname in models:
        # Each model has its own generator, so one model's draws do not depend on another.
        rng = random.Random("%d:%s" % (seed, mname))
        model = MODEL_CLASSES[mname](p, scale, work)
        tot = Totals()
        t_model = time.monotonic()
        k = 0
        while tot.kills < kills and k < 3 * kills:
            variant = rng.choice(model.variants())
            rdir = os.path.join(work, "%s-%03d" % (mname, k))
            shutil.rmtree(rdir, ignore_errors=True)
            os.makedirs(rdir)
            try:
                res = run_round(model, variant, rng, rdir, classes)
            except Exception as e:
                res = RoundResult(mname, variant, "error")
                res.outcome = "error"
                res.failures.append("the round could not run: %r" % e)
            tot.add(res)
            total.add(res)
            final = res.verdict.final if res.verdict else {}
            out("%s %3d %-24s %-7s kill %.3fs %s; seen %s; after recover %s%s" % (
                mname, k, variant, res.cls, res.t_kill or 0.0, res.outcome,
                fmt_counts(res.seen), fmt_counts(final) if final else "-",
                "" if not res.failed() else "\n    FAIL " + "\n    FAIL ".join(res.failures)))
            if res.failed():
                out("    kept for inspection: %s (recover said: %s)" % (
                    rdir, res.recover_text[-400:]))
            elif not keep_all:
                shutil.rmtree(rdir, ignore_errors=True)
            k += 1
        out(tot.line(mname) + "; %.1f s" % (time.monotonic() - t_model))
        results[mname] = tot
    out(total.line("total") + "; %.1f s" % (time.monotonic() - t_start))
    return results, total


def fmt_counts(d):
    return ",".join("%s=%d" % (k.rsplit("/", 2)[-2] + "/" + k.rsplit("/", 1)[-1]
                               if k.count("/") > 1 else k, n) for k, n in d.items())


def main(argv=None):
    global RECOVER_KILLS
    p = lib.paths()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="all", choices=MODELS + ("all",))
    ap.add_argument("--kills", type=int, default=50, help="kills per model (default 50)")
    ap.add_argument("--seed", type=int, default=20240611)
    ap.add_argument("--bin", default=p.bin, help="h5stream binary (default: $H5S_BIN)")
    ap.add_argument("--tmp", default=os.path.join(p.tmp, "crash_campaign"),
                    help="work folder (emptied first)")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="input size factor (1: about a second of writing per round)")
    ap.add_argument("--keep", action="store_true", help="keep every round's files")
    ap.add_argument("--recover-kills", type=float, default=RECOVER_KILLS,
                    help="share of rounds where a first recover is killed too (default %.2f)"
                    % RECOVER_KILLS)
    ap.add_argument("--class", dest="classes", action="append",
                    choices=[c for c, _ in KILL_CLASSES],
                    help="only kills of this class (repeatable; default: all, weighted)")
    a = ap.parse_args(argv)
    RECOVER_KILLS = a.recover_kills
    p.bin = a.bin
    if not os.access(p.bin, os.X_OK):
        print("crash_campaign: no h5stream binary at %s (use --bin or H5S_BIN)" % p.bin)
        return 2
    shutil.rmtree(a.tmp, ignore_errors=True)
    os.makedirs(a.tmp)
    models = list(MODELS) if a.model == "all" else [a.model]
    _, total = run_campaign(p, models, a.kills, a.seed, a.tmp, a.scale, a.keep,
                            classes=a.classes)
    return 0 if total.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
