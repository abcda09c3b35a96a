#!/usr/bin/python3
"""test_crash_campaign.py - the short crash campaign of CI (crash_campaign.py, which says
how a round works).

For each model (frames, tracts, volumes, MARC) it runs kill rounds of crash_campaign.py,
with a fixed seed and inputs at half size, until 6 SIGKILLs have hit a running writer,
and checks for each model: 6 kills, committed items checked, 0 items lost (missing or
not bit-exact), 0 files that do not open without SWMR after `h5stream recover`, and no
round with any other failure (recover's exit status, the status row, payload shorter
than a marker, live commit-protocol violations).

So that a pass means something, it first checks the checker: for each model a whole
run's file must pass, a copy with one item's bytes changed must show 1 item not
bit-exact, and a copy whose commit marker lost its last row must show 1 item missing.

H5S_CRASH_SEED and H5S_CRASH_KILLS change the seed and the kills per model.
"""

import os
import shutil

import h5py
import numpy as np

import crash_campaign as cc
import h5s_scriptlib as lib

SEED = int(os.environ.get("H5S_CRASH_SEED", "20240611"))
KILLS = int(os.environ.get("H5S_CRASH_KILLS", "6"))
SCALE = 0.5

def change_frame(f):
    d = f[lib.DATA_PATH]
    frame = d[3]
    frame.flat[5] += 1
    d[3] = frame


def change_point(f):
    d = f["/tracts/positions"]
    row = d[10]
    row[1] = row[1] + 1 if np.isfinite(row[1]) else 1
    d[10] = row


def change_voxel(f):
    k = int(f["/volumes/c/obs"][2]["voxel_index"])
    d = f["/volumes/c/voxels"]
    vol = d[k]
    vol.flat[vol.size // 2] += 1
    d[k] = vol


def change_record_byte(f):
    off = f["/marc/offsets"][()]
    d = f["/marc/records"]
    at = int(off[4]) + 30  # inside record 4's directory
    d[at] = d[at] ^ 0x20


# model -> (a light variant, how to change one committed item's bytes in place, the marker
# whose last row to drop)
CONTROLS = {
    "frames": ("none", change_frame, cc.FRAME_ID),
    "tracts": ("trx-pascal", change_point, cc.OFFSETS),
    "volumes": ("anat-deflate-every", change_voxel, "/volumes/c/obs"),
    "marc": ("mma-strict", change_record_byte, cc.MARC_INDEX),
}


def verify_copy(model, run, path, seen):
    with h5py.File(path, "r") as f:
        return run.verify(f, seen, run)


def check_the_checker(checks, p, work):
    for name, (variant, change, marker) in CONTROLS.items():
        model = cc.MODEL_CLASSES[name](p, 0.2, work)
        rdir = os.path.join(work, "control-" + name)
        os.makedirs(rdir)
        run = cc.whole_run(model, variant, rdir)
        with h5py.File(run.path, "r") as f:
            seen = {m: max(0, f[m].shape[0] - extra) for m, extra in run.markers}
        v = verify_copy(model, run, run.path, seen)
        checks.check("%s control: a whole run's file passes the checker" % name,
                     v.checked > 0 and v.missing == 0 and v.wrong == 0 and not v.problems,
                     "%d items checked, %d missing, %d not bit-exact, problems %s"
                     % (v.checked, v.missing, v.wrong, v.problems))

        changed = os.path.join(rdir, "changed.h5")
        shutil.copyfile(run.path, changed)
        with h5py.File(changed, "r+") as f:
            change(f)
        v = verify_copy(model, run, changed, seen)
        checks.equal("%s control: one changed item is found not bit-exact" % name,
                     (v.missing, v.wrong), (0, 1), "; ".join(v.problems))

        short = os.path.join(rdir, "short.h5")
        shutil.copyfile(run.path, short)
        with h5py.File(short, "r+") as f:
            d = f[marker]
            d.resize(d.shape[0] - 1, axis=0)
            if name == "frames":  # as recover would leave it: data trimmed to frame_id
                for path in (lib.DATA_PATH, lib.TIMESTAMP_PATH):
                    f[path].resize(d.shape[0], axis=0)
            status = f[lib.STATUS_PATH][()]
            status[0]["committed"] -= 1
            f[lib.STATUS_PATH][...] = status
        v = verify_copy(model, run, short, seen)
        checks.equal("%s control: a marker one row short is found missing an item" % name,
                     (v.missing, v.wrong), (1, 0), "; ".join(v.problems))
        shutil.rmtree(rdir)


def body(checks, p):
    work = p.fresh_dir("campaign")
    check_the_checker(checks, p, work)
    results, total = cc.run_campaign(p, list(cc.MODELS), KILLS, SEED, work, SCALE,
                                     out=lambda line: print("info  " + line, flush=True))
    for name, t in results.items():
        checks.equal("%s: SIGKILLs that hit a running writer" % name, t.kills, KILLS,
                     "in %d rounds" % t.rounds)
        checks.check("%s: committed items were checked" % name, t.checked > 0,
                     "%d items" % t.checked)
        checks.equal("%s: committed items lost (missing or not bit-exact)" % name, t.lost, 0)
        checks.equal("%s: recovered files that do not open without SWMR" % name,
                     t.unopenable, 0)
        checks.equal("%s: rounds with another failure (see FAIL lines above)" % name,
                     t.failed_rounds, 0)
    if total.ok():
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    lib.run_main(body)
