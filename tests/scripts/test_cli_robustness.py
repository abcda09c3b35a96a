#!/usr/bin/python3
"""test_cli_robustness.py - every command-line reader entry point on files that are not
what it expects: a clear error naming the file and the problem, never a signal, never a
hang.

Damaged inputs, all derived from copies (the shared data is never touched):

  (1) not h5stream's: a plain text file, an empty file, and a valid HDF5 file written by
      h5py that holds other datasets;
  (2) truncated: a cleanly closed h5stream file of each model (frames, tracts, volumes,
      MARC) cut at several offsets, from inside the superblock to the last byte;
  (3) missing dataset: a file of each model copied with one required dataset deleted
      (frame_id, the frames data, /tracts/offsets, /tracts/positions, /volumes/C/obs,
      /volumes/C/voxels, /obs_meta, /marc/index, /marc/offsets, /marc/records).

Entry points: `h5stream tail FILE [/tracts|/volumes|/marc]`, the same with
`-f --timeout 500`, `info`, `info --json`, `export` for each model that has one
(tracts --to trx, volumes --to nifti, MARC --to iso2709) and `recover` (on a copy). The C
reader APIs' open calls are tests/test_reader_robustness.c (cmocka).

Each run must end inside a time limit, by itself, with exit 1 (the documented data-error
status; 0 is accepted only where the damage cannot matter to that command, which the
table says), with stderr naming the file and saying what is wrong: the missing dataset's
path, "not an HDF5 file" / "not an h5stream file", or HDF5's reason for a truncated file.
A sanitizer build must print no report. The table of every run is printed at the end.
"""

import concurrent.futures
import os
import shutil
import subprocess
import time

import h5s_scriptlib as lib

LIMIT_S = 60  # every run must end well inside this
FOLLOW_TIMEOUT_MS = 500  # tail -f waits this long for a file that may still be written

TAIL_PATHS = {"frames": [], "tracts": ["/tracts"], "volumes": ["/volumes"], "marc": ["/marc"]}
EXPORTS = {"tracts": ["--to", "trx"], "volumes": ["--to", "nifti"], "marc": ["--to", "iso2709"]}
REQUIRED = {
    "frames": [lib.FRAME_ID_PATH, lib.DATA_PATH],
    "tracts": ["/tracts/offsets", "/tracts/positions"],
    "volumes": ["/volumes/anat/obs", "/volumes/anat/voxels", "/obs_meta"],
    "marc": ["/marc/index", "/marc/offsets", "/marc/records"],
}


def make_good_files(checks, p, d):
    """One cleanly closed file of each model."""
    data = p.shared_data
    cmds = {
        "frames": ["ingest", "frames", "sim:ramp", "--shape", "32x48", "-n", "40",
                   "--compress", "blosc:lz4:5:shuffle", "-q"],
        "tracts": ["ingest", "tracts", os.path.join(data, "tracts", "standard.trk"), "-q"],
        "volumes": ["ingest", "volumes", os.path.join(data, "volumes", "anatomical.nii"),
                    "--collection", "anat"],
        "marc": ["ingest", "marc", os.path.join(data, "marc", "BooksAll.2014.part01-0001.mrc"),
                 "-q"],
    }
    good = {}
    for model, cmd in cmds.items():
        out = os.path.join(d, "good_%s.h5" % model)
        r = subprocess.run([p.bin] + cmd + ["-o", out], capture_output=True, text=True,
                           timeout=300)
        if checks.equal("the clean %s file is written" % model, r.returncode, 0,
                        r.stderr.strip()[-300:]):
            good[model] = out
    return good


class Case:
    """A damaged file: what it is, which models' entry points to run, and what its
    error must say (any one of the texts)."""

    def __init__(self, path, what, models, says):
        self.path, self.what, self.models, self.says = path, what, models, says


def not_ours_cases(d):
    import h5py
    import numpy as np
    text = os.path.join(d, "text.h5")
    with open(text, "w") as f:
        f.write("this is a plain text file, not HDF5\n" * 40)
    empty = os.path.join(d, "empty.h5")
    open(empty, "wb").close()
    other = os.path.join(d, "other.h5")
    with h5py.File(other, "w") as f:
        f["data"] = np.arange(100.0).reshape(10, 10)
        f.create_group("entry")["values"] = np.arange(5)
        f.attrs["creator"] = "not h5stream"
    every = list(TAIL_PATHS)
    not_hdf5 = ["not an HDF5 file", "not an HDF5", "signature"]
    return [Case(text, "a plain text file", every, not_hdf5),
            Case(empty, "an empty file", every, not_hdf5 + ["empty"]),
            Case(other, "an HDF5 file of another program", every,
                 ["not an h5stream", "no dataset", "no /", "not found", "no such",
                  "has no", "is not"])]


def truncated_cases(d, good):
    cases = []
    for model, src in sorted(good.items()):
        with open(src, "rb") as f:
            data = f.read()
        size = len(data)
        cuts = sorted({c for c in (48, 1024, size // 3, size // 2, size - 4096, size - 1)
                       if 0 < c < size})
        for cut in cuts:
            path = os.path.join(d, "%s_cut%d.h5" % (model, cut))
            with open(path, "wb") as f:
                f.write(data[:cut])
            cases.append(Case(path, "%s file cut at byte %d of %d" % (model, cut, size),
                              [model], ["truncated", "signature", "not an HDF5", "cannot",
                                        "failed", "short", "past the end", "no such",
                                        "not found", "no /", "has no", "is not"]))
    return cases


def missing_cases(d, good):
    import h5py
    cases = []
    for model, src in sorted(good.items()):
        for gone in REQUIRED[model]:
            path = os.path.join(d, "%s_without_%s.h5" % (model, gone.strip("/").replace("/", "_")))
            shutil.copyfile(src, path)
            with h5py.File(path, "r+") as f:
                del f[gone]
            cases.append(Case(path, "%s file without %s" % (model, gone), [model], [gone]))
    return cases


def entry_points(case, model):
    """(name, argv after the binary) of every entry point run on this case for model."""
    f = case.path
    out = [("tail %s" % " ".join(TAIL_PATHS[model]) if TAIL_PATHS[model] else "tail",
            ["tail", f] + TAIL_PATHS[model]),
           ("tail -f %s" % " ".join(TAIL_PATHS[model]),
            ["tail", f] + TAIL_PATHS[model] + ["-f", "--timeout", str(FOLLOW_TIMEOUT_MS),
                                               "--interval", "50"])]
    if model in EXPORTS:
        out.append(("export %s" % " ".join(EXPORTS[model]),
                    ["export", f] + EXPORTS[model] + ["-o", f + ".export." + model]))
    return out


def run(p, argv):
    t0 = time.monotonic()
    try:
        r = subprocess.run([p.bin] + argv, capture_output=True, text=True, timeout=LIMIT_S)
    except subprocess.TimeoutExpired:
        return None, time.monotonic() - t0, ""
    return r.returncode, time.monotonic() - t0, r.stderr


def judge(checks, table, case, name, argv, code, secs, err, ok_zero=False):
    """One run: exit 1 (or 0 where allowed), a message naming the file and the problem,
    no signal, no hang, no sanitizer report."""
    label = "%s on %s" % (name, case.what)
    first = err.strip().splitlines()[0] if err.strip() else ""
    if code is None:
        checks.check(label, False, "still running after %d s: a hang" % LIMIT_S)
        table.append((name, case.what, "HANG", ""))
        return
    table.append((name, case.what, str(code), first[:150]))
    if code < 0:
        checks.check(label, False, "killed by signal %d: %s" % (-code, err[-400:]))
        return
    if "Sanitizer" in err or "runtime error:" in err:
        checks.check(label, False, "sanitizer report: " + err[-600:])
        return
    if code == 0 and ok_zero:
        checks.check(label, True, "exit 0 (allowed here) in %.1f s" % secs)
        return
    names_file = case.path in err
    says = [s for s in case.says if s.lower() in err.lower()]
    checks.check(label, code == 1 and names_file and bool(says) and
                 err.lstrip().startswith("h5stream:") and "HDF5-DIAG" not in err,
                 "exit %d in %.1f s; %s%s%s" % (
                     code, secs, "" if names_file else "[the file is not named] ",
                     "" if says else "[none of %s] " % case.says,
                     " | ".join(err.strip().splitlines())[:400]))


def body(checks, p):
    d = p.fresh_dir("cli_robustness")
    good = make_good_files(checks, p, d)
    if len(good) != 4:
        return
    cases = not_ours_cases(d) + truncated_cases(d, good) + missing_cases(d, good)
    runs = []  # (case, entry point name, argv)
    for case in cases:
        for model in case.models:
            runs += [(case, name, argv) for name, argv in entry_points(case, model)]
        # Model-independent commands once per file; recover on a copy (it may write).
        runs.append((case, "info", ["info", case.path]))
        runs.append((case, "info --json", ["info", case.path, "--json"]))
        work = case.path + ".recover.h5"
        shutil.copyfile(case.path, work)
        runs.append((Case(work, case.what, case.models, case.says), "recover", ["recover", work]))
    # Two at a time (the runs are independent; tail -f spends its time waiting).
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda r: run(p, r[2]), runs))
    table = []
    for (case, name, argv), (code, secs, err) in zip(runs, results):
        judge(checks, table, case, name, argv, code, secs, err)
        if name == "recover" and code == 1:
            # A refused file is given back as it was: a cut one is not padded with zeros.
            source = case.path[: -len(".recover.h5")]
            before, after = os.path.getsize(source), os.path.getsize(case.path)
            checks.check("recover leaves %s at its size" % case.what, before == after,
                         "%d bytes before, %d after" % (before, after))

    print("\nentry point | damage | exit | first line of stderr")
    for row in table:
        print(" | ".join(row))
    shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    lib.run_main(body)
