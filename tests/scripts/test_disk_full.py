#!/usr/bin/python3
"""test_disk_full.py - each model's writer on a disk that fills up (ENOSPC).

A writer runs until the disk under its output is full. The test asserts what a user needs:

  - the writer stops by itself (no hang: a time limit), exits 1 (not a signal, not 0),
    and its stderr names the file and says the disk is full ("No space left on device",
    the errno text) and how many items were committed and kept;
  - a plain HDF5 reader (h5py, not SWMR) either opens the file as it was left, which
    then says "closed after a writer error" (/h5stream/writer state 2, docs/format.md)
    and whose status row's count is its commit markers' count, or the writer said to
    run `h5stream recover`;
  - what a user then does: move the file to a disk with room (here: a copy into a
    normal folder, because a full disk cannot take recover's changes either; freeing
    space and recovering in place is the same) and run `h5stream recover` on it, which
    exits 0;
  - afterwards plain h5py opens it, the model's commit marker covers at least one item,
    every committed item is bit-exact (frames: the sim:ramp formula; tracts: the same
    streamlines in a clean run of the same source; volumes: nibabel's voxels of the
    source; MARC: the source's record bytes), no item past the marker counts as
    committed (frames: recover trimmed the payload to the marker; the others: the marker
    never points past its payload, and `h5stream tail` prints exactly the marker's
    items), and the count equals the one the writer printed.

Mechanisms, each one a separate run of every model:

  - tmpfs: a small tmpfs mounted for the run (`mount -t tmpfs -o size=...`), when this
    machine allows mount (root with CAP_SYS_ADMIN). A CI container often does not; the
    test then says so and runs the shim alone.
  - shim: tests/scripts/enospc_shim.c preloaded (LD_PRELOAD), which makes the writer's
    own writes under the output folder fail with ENOSPC past a byte budget, after a short
    write, as a file system does. It runs everywhere, so the error path is tested on
    every machine. Two variants: "shim" models a file system without sparse files (FAT,
    a size quota), where even HDF5's closing ftruncate fails and the file is left
    shorter than its superblock says; "shim-sparse" one with them (ext4, XFS, tmpfs).
"""

import glob
import os
import re
import shutil
import subprocess
import time

import numpy as np

import h5s_scriptlib as lib

WRITER_LIMIT_S = 120  # a writer on a full disk must stop well inside this
TOOL_LIMIT_S = 300
NOSPACE = "No space left on device"
MiB = 1 << 20

FRAME_SHAPE = (64, 96)
FRAME_DTYPE = "uint16"
N_VOLUMES = 200


# ---- the models ----------------------------------------------------------------------

class Model:
    """One writer: its command, how much disk it gets, and how its file is checked."""
    name = ""
    budget = 3 * MiB
    tail_path = None  # the tail argument that selects the model (None: frames)

    def __init__(self, p, work):
        self.p, self.work = p, work

    def command(self, out):
        raise NotImplementedError

    def markers(self, f):
        """Items the commit markers cover, summed as the status row counts them."""
        raise NotImplementedError

    def check(self, checks, label, f, printed):
        """Checks the recovered file (open in h5py); returns the committed item count."""
        raise NotImplementedError


class Frames(Model):
    name = "frames"
    # Room for several writer batches (up to 256 frames each, and a commit is due only
    # between batches), so frames are committed before the disk fills.
    budget = 8 * MiB

    def __init__(self, p, work, options=(), label="frames"):
        super().__init__(p, work)
        self.options, self.name = list(options), label

    def command(self, out):
        return [self.p.bin, "ingest", "frames", "sim:ramp", "--shape",
                "x".join(map(str, FRAME_SHAPE)), "--dtype", FRAME_DTYPE, "-n", "1000000",
                "--flush-every", "20", "-o", out] + self.options

    def markers(self, f):
        return f[lib.FRAME_ID_PATH].shape[0]

    def check(self, checks, label, f, printed):
        n = f[lib.FRAME_ID_PATH].shape[0]
        data = f[lib.DATA_PATH]
        checks.equal(label + ": recover trimmed data to frame_id's extent (nothing past "
                     "the marker)", data.shape[0], n)
        checks.equal(label + ": timestamp has one value per committed frame",
                     f[lib.TIMESTAMP_PATH].shape[0], n)
        ids = f[lib.FRAME_ID_PATH][()]
        checks.check(label + ": frame_id is 0 .. n-1", np.array_equal(ids, np.arange(n)),
                     "first ids %s" % ids[:5].tolist())
        bad = None
        for first in range(0, n, 256):
            k = min(256, n - first)
            bad = lib.first_mismatch(data[first:first + k],
                                     lib.ramp_frames(first, k, FRAME_SHAPE, FRAME_DTYPE), first)
            if bad:
                break
        checks.check(label + ": every committed frame is bit-exact (sim:ramp)", bad is None,
                     bad or "%d frames" % n)
        return n


class Tracts(Model):
    name = "tracts"
    tail_path = "/tracts"
    SOURCE = "standard.trk"

    def command(self, out):
        src = os.path.join(self.p.shared_data, "tracts", self.SOURCE)
        return [self.p.bin, "ingest", "tracts", src, "--repeat", "1000000",
                "--flush-every", "100", "-o", out]

    def markers(self, f):
        return f["/tracts/offsets"].shape[0] - 1

    def reference(self, checks):
        """The source's streamlines as h5stream stores them, from a clean run on this
        disk, checked against nibabel's reading of the source."""
        import h5py
        import nibabel
        if hasattr(self, "ref"):
            return self.ref
        src = os.path.join(self.p.shared_data, "tracts", self.SOURCE)
        out = os.path.join(self.work, "tracts_reference.h5")
        r = subprocess.run([self.p.bin, "ingest", "tracts", src, "-q", "-o", out],
                           capture_output=True, text=True, timeout=TOOL_LIMIT_S)
        checks.equal("tracts: the reference run on a disk with room exits 0", r.returncode, 0,
                     r.stderr.strip())
        with h5py.File(out, "r") as f:
            pos, off = f["/tracts/positions"][()], f["/tracts/offsets"][()]
        sl = nibabel.streamlines.load(src).streamlines
        want = np.concatenate([np.asarray(s, np.float32) for s in sl])
        lens = np.array([len(s) for s in sl])
        checks.check("tracts: the reference equals nibabel's reading of %s" % self.SOURCE,
                     pos.shape == want.shape and np.allclose(pos, want, atol=1e-4) and
                     np.array_equal(np.diff(off.astype(np.int64)), lens),
                     "%d streamlines" % len(lens))
        self.ref = [pos[off[i]:off[i + 1]] for i in range(len(off) - 1)]
        return self.ref

    def check(self, checks, label, f, printed):
        ref = self.reference(checks)
        off = f["/tracts/offsets"][()].astype(np.int64)
        pos = f["/tracts/positions"]
        n = len(off) - 1
        checks.check(label + ": offsets start at 0, never decrease, and stay inside "
                     "positions", off[0] == 0 and bool(np.all(np.diff(off) >= 0)) and
                     off[-1] <= pos.shape[0],
                     "offsets[-1] = %d, positions rows %d" % (off[-1], pos.shape[0]))
        allpos = pos[:int(off[-1])]
        bad = None
        for i in range(n):
            got = allpos[off[i]:off[i + 1]]
            want = ref[i % len(ref)]
            if got.shape != want.shape or got.tobytes() != want.tobytes():
                bad = "streamline %d differs from source streamline %d" % (i, i % len(ref))
                break
        checks.check(label + ": every committed streamline is bit-exact (the source's, "
                     "repeated)", bad is None, bad or "%d streamlines" % n)
        return n


class Volumes(Model):
    name = "volumes"
    tail_path = "/volumes"
    SOURCE = "anatomical.nii"

    def command(self, out):
        # Many files (links to one source, each a subject of its own) fill a small disk.
        src_dir = os.path.join(self.work, "volume_sources")
        if not os.path.isdir(src_dir):
            os.makedirs(src_dir)
            src = os.path.join(self.p.shared_data, "volumes", self.SOURCE)
            for i in range(N_VOLUMES):
                os.symlink(src, os.path.join(src_dir, "sub-%03d_T1w.nii" % i))
        return [self.p.bin, "ingest", "volumes", src_dir, "--collection", "anat",
                "--flush-every", "2", "-o", out]

    def markers(self, f):
        return f["/volumes/anat/obs"].shape[0] + f["/obs_meta"].shape[0]

    def check(self, checks, label, f, printed):
        import nibabel
        img = nibabel.load(os.path.join(self.p.shared_data, "volumes", self.SOURCE))
        want = np.asanyarray(img.dataobj.get_unscaled()).T  # [Z, Y, X], as stored
        obs = f["/volumes/anat/obs"][()]
        vox = f["/volumes/anat/voxels"]
        n = len(obs)
        checks.check(label + ": the voxels cover every committed volume", vox.shape[0] >= n,
                     "%d rows of voxels, %d obs rows" % (vox.shape[0], n))
        ids = [o["obs_id"].decode() for o in obs]
        checks.check(label + ": obs_ids are distinct and name source files",
                     len(set(ids)) == n and all(re.fullmatch(r"sub-\d{3}_T1w", i) for i in ids),
                     str(ids[:3]))
        bad = None
        for i in range(n):
            v = vox[int(obs[i]["voxel_index"])]
            # Same type up to byte order (NIfTI's big-endian int16 is stored little-endian).
            if (v.dtype.kind, v.dtype.itemsize, v.shape) != \
                    (want.dtype.kind, want.dtype.itemsize, want.shape) or \
                    not np.array_equal(v, want):
                bad = "volume %d (%s) differs from %s" % (i, ids[i], self.SOURCE)
                break
        checks.check(label + ": every committed volume is bit-exact (nibabel's voxels)",
                     bad is None, bad or "%d volumes" % n)
        return n


class Marc(Model):
    name = "marc"
    tail_path = "/marc"
    budget = 12 * MiB  # MARC commits in large steps: room for a few before the disk fills
    SOURCE = "MMA_Pubs_records_2021_07.mrc"

    def command(self, out):
        src = os.path.join(self.p.shared_data, "marc", self.SOURCE)
        return [self.p.bin, "ingest", "marc", src, src, src, "--flush-every", "100", "-o", out]

    def markers(self, f):
        return f["/marc/index"].shape[0] + f["/marc/rejected/index"].shape[0]

    def source_records(self):
        with open(os.path.join(self.p.shared_data, "marc", self.SOURCE), "rb") as fh:
            data = fh.read()
        recs, at = [], 0
        while at < len(data):  # ISO 2709: the leader's first 5 digits are the record length
            length = int(data[at:at + 5])
            recs.append(data[at:at + length])
            at += length
        return recs

    def check(self, checks, label, f, printed):
        src = self.source_records()
        index = f["/marc/index"][()]
        off = f["/marc/offsets"][()].astype(np.int64)
        records = f["/marc/records"]
        n = len(index)
        checks.check(label + ": offsets cover the index and stay inside records",
                     len(off) >= n + 1 and off[0] == 0 and off[n] <= records.shape[0],
                     "%d index rows, %d offsets, offsets[n] = %s, %d record bytes" %
                     (n, len(off), off[n] if len(off) > n else "?", records.shape[0]))
        data = records[:int(off[n])].tobytes()
        bad = None
        for i in range(n):
            if data[off[i]:off[i + 1]] != src[i % len(src)]:
                bad = "record %d differs from source record %d" % (i, i % len(src))
                break
        checks.check(label + ": every committed record is bit-exact (the source's bytes)",
                     bad is None, bad or "%d records" % n)
        checks.equal(label + ": no record was rejected", f["/marc/rejected/index"].shape[0], 0)
        return n


# ---- mechanisms ----------------------------------------------------------------------

def try_mount(d, size_bytes):
    """Mounts a tmpfs of size_bytes on d; None, or why it could not."""
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d" % size_bytes, "tmpfs", d],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    return None if r.returncode == 0 else (r.stderr.strip() or "mount exit %d" % r.returncode)


def shim_env(p, d, budget, sparse, report):
    shim = os.environ.get("H5S_ENOSPC_SHIM", os.path.join(os.path.dirname(os.path.dirname(
        p.bin)), "tests", "libh5s_enospc_shim.so"))
    env = lib.preload_env(p.bin, shim)
    env.update({"H5S_ENOSPC_DIR": os.path.realpath(d),
                "H5S_ENOSPC_BYTES": str(budget), "H5S_ENOSPC_SPARSE": "1" if sparse else "0",
                "H5S_ENOSPC_REPORT": report})
    return shim, env


# ---- one run -------------------------------------------------------------------------

def tool(p, *args):
    return subprocess.run([p.bin] + list(args), capture_output=True, text=True,
                          timeout=TOOL_LIMIT_S)


def printed_count(stderr):
    """The committed count the writer printed ("N of the M frames appended were
    committed", "... streamlines pushed ...", "... volumes queued ...", or MARC's "the N
    records committed before it")."""
    m = re.search(r"(\d+) of the (\d+) \w+ (?:appended|pushed|queued) were committed", stderr)
    m = m or re.search(r"the (\d+) records committed before it", stderr)
    return int(m.group(1)) if m else None


def status_row(f):
    row = f[lib.STATUS_PATH][0]
    return int(row["state"]), int(row["committed"])


def run_one(checks, p, mech, model, d, env, report):
    import h5py
    import hdf5plugin  # noqa: F401  (Blosc)
    label = "%s/%s" % (mech, model.name)
    out = os.path.join(d, model.name + ".h5")
    t0 = time.monotonic()
    try:
        r = subprocess.run(model.command(out), capture_output=True, text=True, env=env,
                           timeout=WRITER_LIMIT_S)
    except subprocess.TimeoutExpired:
        checks.check(label + ": the writer stops by itself on a full disk", False,
                     "still running after %d s: a hang" % WRITER_LIMIT_S)
        return
    secs = time.monotonic() - t0
    err = r.stderr.strip()
    checks.check(label + ": the writer stops by itself and exits 1 (not a signal)",
                 r.returncode == 1, "exit %d in %.2f s" % (r.returncode, secs))
    first_line = err.splitlines()[0] if err else ""
    checks.check(label + ": its message names the file and says the disk is full",
                 out in first_line and NOSPACE in first_line, first_line[:400])
    checks.check(label + ": no sanitizer report", "Sanitizer" not in err and
                 "runtime error" not in err, err[-600:])
    checks.info("%s: stderr: %s" % (label, " | ".join(err.splitlines())[:900]))
    if report:
        fired = open(report).read() if os.path.exists(report) else ""
        checks.check(label + ": the ENOSPC came from the shim", "ENOSPC" in fired,
                     fired.strip().replace("\n", "; ") or "no report: the shim did not fire")
        os.remove(report) if os.path.exists(report) else None
    if not os.path.exists(out):
        checks.check(label + ": the file exists", False, out)
        return
    printed = printed_count(err)

    # What a user does: move the file to a disk with room, then look and recover.
    moved = os.path.join(p.tmp, "disk_full_moved", mech + "_" + model.name + ".h5")
    os.makedirs(os.path.dirname(moved), exist_ok=True)
    shutil.copyfile(out, moved)
    os.remove(out)
    try:
        with h5py.File(moved, "r") as f:
            state, committed = status_row(f)
            markers = model.markers(f)
        checks.info("%s: the file as left opens with plain h5py (state %d, %d committed)"
                    % (label, state, committed))
        checks.equal(label + ": the file as left says 'closed after a writer error' (state 2)",
                     state, 2)
        checks.equal(label + ": its status row counts what its commit markers cover",
                     committed, markers)
    except OSError as e:
        checks.info("%s: the file as left does not open with plain h5py (%s)" %
                    (label, str(e)[:200]))
        checks.check(label + ": the writer said to run `h5stream recover`",
                     "h5stream recover" in err, err[-300:])
    rr = tool(p, "recover", moved)
    checks.equal(label + ": `h5stream recover` on the moved file exits 0", rr.returncode, 0,
                 (rr.stdout + rr.stderr).strip()[:400])
    try:
        f = h5py.File(moved, "r")
    except OSError as e:
        checks.check(label + ": plain h5py opens the recovered file", False, str(e))
        return
    with f:
        state, committed = status_row(f)
        checks.check(label + ": after recover the status row says closed (1 or 2)",
                     state in (1, 2), "state %d" % state)
        n = model.check(checks, label, f, printed)
    checks.check(label + ": some items were committed before the disk filled", n > 0,
                 "%d" % n)
    if printed is not None:
        checks.equal(label + ": the count the writer printed is the file's", n, printed)
    else:
        checks.info("%s: the writer printed no committed count" % label)
    tail = [lib.DATA_PATH] if model.tail_path is None else [model.tail_path]
    rt = tool(p, "tail", moved, *tail)
    lines = [x for x in rt.stdout.splitlines() if x.strip()]
    checks.check(label + ": `h5stream tail` prints exactly the committed items",
                 rt.returncode == 0 and len(lines) == n,
                 "exit %d, %d lines for %d items%s" % (rt.returncode, len(lines), n,
                                                       ": " + rt.stderr.strip()[:200]
                                                       if rt.returncode else ""))
    os.remove(moved)


def body(checks, p):
    work = p.fresh_dir("disk_full")
    shutil.rmtree(os.path.join(p.tmp, "disk_full_moved"), ignore_errors=True)
    models = [Frames(p, work),
              Frames(p, work, ["--compress", "blosc:lz4:5:shuffle", "--frames-per-chunk", "4"],
                     "frames-blosc-k4"),
              Tracts(p, work), Volumes(p, work), Marc(p, work)]

    # tmpfs, where mount is allowed.
    mnt = os.path.join(work, "mnt")
    os.makedirs(mnt)
    why = try_mount(mnt, MiB)
    if why is None:
        subprocess.run(["umount", mnt], timeout=60)
        checks.info("mechanism tmpfs: mount works here, every model runs on a small tmpfs")
        for m in models:
            why = try_mount(mnt, m.budget)
            if not checks.check("tmpfs/%s: a %d MiB tmpfs is mounted" % (m.name, m.budget // MiB),
                                why is None, why or ""):
                continue
            try:
                run_one(checks, p, "tmpfs", m, mnt, dict(os.environ), None)
            finally:
                u = subprocess.run(["umount", mnt], capture_output=True, text=True, timeout=60)
                checks.equal("tmpfs/%s: unmounted" % m.name, u.returncode, 0, u.stderr.strip())
    else:
        checks.info("mechanism tmpfs: NOT USED, mount is not allowed here (%s); the shim "
                    "runs alone" % why)

    # The preload shim, everywhere.
    for mech, sparse in (("shim", False), ("shim-sparse", True)):
        checks.info("mechanism %s: LD_PRELOAD enospc_shim, %s file system" %
                    (mech, "a sparse" if sparse else "a non-sparse"))
        for m in models:
            d = os.path.join(work, mech, m.name)
            os.makedirs(d)
            report = os.path.join(work, "%s_%s.report" % (mech, m.name))
            shim, env = shim_env(p, d, m.budget, sparse, report)
            if not checks.check("%s: the shim library exists" % mech, os.path.exists(shim), shim):
                return
            run_one(checks, p, mech, m, d, env, report)
    shutil.rmtree(work, ignore_errors=True)
    for leftover in glob.glob(os.path.join(p.tmp, "disk_full_moved", "*")):
        os.remove(leftover)


if __name__ == "__main__":
    lib.run_main(body)
