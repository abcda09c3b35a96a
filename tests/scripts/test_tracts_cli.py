#!/usr/bin/python3
"""test_tracts_cli.py - the tracts commands end to end (docs/tracts.md).

- every file of shared/data/tracts: ingest, then export to TRX (checked by trx_check.py),
  TCK and TRK (read back by nibabel) with points, dps and dpv compared with nibabel's
  reading of the source (TCK/TRK) or with the source archive's own arrays (legacy TRX);
- float16 positions within float16 precision; TRX deflate, folder clean and persistent;
- malformed inputs: exit 1, a message naming the file and the byte, no crash;
- several sources concatenated, and a clear error when their headers differ;
- shard merge with groups and dpg (indices rebased, dpg rule), and a dpg conflict;
- live: ingest --rate while `tail -f FILE /tracts --json` runs in another process.
"""
import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import h5s_scriptlib as lib  # noqa: E402
import trx_check  # noqa: E402

import h5py  # noqa: E402
import nibabel  # noqa: E402

GOOD_TCK = ["empty.tck", "matlab_nan.tck", "multiline_header_field.tck", "simple.tck",
            "simple_big_endian.tck", "standard.tck"]
GOOD_TRK = ["complex.trk", "complex_big_endian.trk", "empty.trk", "simple.trk",
            "standard.LPS.trk", "standard.trk"]
LEGACY_TRX = ["small_pascal_legacy_offsets.trx", "dpsv_legacy_offsets_deflate.trx"]
BAD_TCK = ["no_header_end.tck", "no_header_end_eof.tck", "no_magic_number.tck"]


def run(p, *args, timeout=120):
    return subprocess.run([p.bin] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout)


def nib_load(path):
    t = nibabel.streamlines.load(path)
    sl = t.streamlines
    lens = np.array([len(s) for s in sl], dtype=np.int64)
    pts = np.concatenate([np.asarray(s, np.float32) for s in sl]) if len(sl) else \
        np.zeros((0, 3), np.float32)
    return t, lens, pts


def legacy_arrays(path):
    """Arrays of a (legacy) TRX zip read by hand: the offsets may lack the sentinel."""
    out = {}
    with zipfile.ZipFile(path) as zf:
        hdr = json.loads(zf.read("header.json"))
        for info in zf.infolist():
            name = info.filename
            if name.endswith("/") or name.endswith(".json"):
                continue
            parts = name.split("/")
            bits = parts[-1].split(".")
            k = int(bits[1]) if len(bits) == 3 else 1
            arr = np.frombuffer(zf.read(info), dtype=np.dtype(bits[-1]).newbyteorder("<"))
            key = "/".join(parts[:-1] + [bits[0]])
            out[key] = arr.reshape(-1, k) if parts[0] in ("dps", "dpv") or key == "positions" \
                else arr
    out["positions"] = out["positions"].reshape(-1, 3)
    off = out["offsets"].astype(np.uint64)
    if off.size == hdr["NB_STREAMLINES"]:
        off = np.concatenate([off, [hdr["NB_VERTICES"]]]).astype(np.uint64)
    out["offsets"] = off
    out["header"] = hdr
    return out


def check_trx(checks, name, path):
    try:
        return trx_check.check(path)
    except trx_check.TrxError as e:
        checks.check(name + ": trx_check", False, str(e))
        return None


def round_trip_nibabel(checks, p, d, src_name):
    """TCK/TRK -> h5 -> TRX, TCK and TRK, compared with nibabel's reading of the source."""
    src = os.path.join(p.shared_data, "tracts", src_name)
    stem = os.path.join(d, src_name.replace(".", "_"))
    h5 = stem + ".h5"
    r = run(p, "ingest", "tracts", src, "-o", h5, "--export", "trx:" + stem + ".trx",
            "--export", "tck:" + stem + ".tck", "--export", "trk:" + stem + ".trk")
    if not checks.check(src_name + ": ingest with three exports exits 0", r.returncode == 0,
                        r.stderr.strip()):
        return
    t, lens, pts = nib_load(src)
    with h5py.File(h5, "r") as f:
        pos = f["/tracts/positions"][()]
        off = f["/tracts/offsets"][()]
        aff = f["/tracts"].attrs["VOXEL_TO_RASMM"]
        dims = f["/tracts"].attrs["DIMENSIONS"]
        dps = {k: f["/tracts/dps/" + k][()] for k in f.get("/tracts/dps", {})}
        dpv = {k: f["/tracts/dpv/" + k][()] for k in f.get("/tracts/dpv", {})}
    ok = pos.shape == pts.shape and np.allclose(pos, pts, atol=1e-4, rtol=0) and \
        off[0] == 0 and np.array_equal(np.diff(off.astype(np.int64)), lens)
    checks.check(src_name + ": h5 positions and offsets equal nibabel's", ok,
                 "%d streamlines, %d points" % (len(lens), len(pts)))
    if src_name.endswith(".trk"):
        want_aff = np.asarray(t.header["voxel_to_rasmm"], float)
        checks.check(src_name + ": VOXEL_TO_RASMM and DIMENSIONS copied from the header",
                     np.allclose(aff, want_aff, atol=1e-5) and
                     list(dims) == [int(x) for x in t.header["dimensions"]],
                     "%s / %s" % (aff.tolist(), list(dims)))
        ok = True
        for k, v in t.tractogram.data_per_point.items():
            mine = dpv.get(k)
            want = np.concatenate([np.asarray(a) for a in v]) if len(v) else None
            ok &= mine is not None and (want is None or np.allclose(mine, want, atol=1e-5))
        for k, v in t.tractogram.data_per_streamline.items():
            mine = dps.get(k)
            ok &= mine is not None and np.allclose(mine, np.asarray(v), atol=1e-5)
        checks.check(src_name + ": scalars -> dpv and properties -> dps with their values", ok,
                     "dpv %s dps %s" % (sorted(dpv), sorted(dps)))
    arrays = check_trx(checks, src_name + " -> trx", stem + ".trx")
    if arrays is not None:
        ok = arrays["header"]["NB_STREAMLINES"] == len(lens) and \
            np.allclose(arrays["positions"], pts, atol=1e-4, rtol=0) and \
            np.array_equal(np.diff(arrays["offsets"].astype(np.int64)), lens)
        checks.check(src_name + " -> trx: trx_check passes, points and offsets equal", ok)
    for ext in ("tck", "trk"):
        out = stem + "." + ext
        try:
            t2, lens2, pts2 = nib_load(out)
        except Exception as e:  # nibabel's own reason is the detail
            checks.check(src_name + " -> " + ext + ": nibabel loads it", False, repr(e))
            continue
        ok = np.array_equal(lens2, lens) and pts2.shape == pts.shape and \
            np.allclose(pts2, pts, atol=1e-3, rtol=0)
        detail = "%d streamlines" % len(lens2)
        if ext == "trk" and src_name.endswith(".trk"):
            for k, v in t.tractogram.data_per_point.items():
                got = t2.tractogram.data_per_point.get(k)
                ok &= got is not None and all(np.allclose(a, b, atol=1e-5) for a, b in zip(got, v))
            for k, v in t.tractogram.data_per_streamline.items():
                got = t2.tractogram.data_per_streamline.get(k)
                ok &= got is not None and np.allclose(got, v, atol=1e-5)
            detail += ", scalars/properties %s/%s" % (
                sorted(t2.tractogram.data_per_point), sorted(t2.tractogram.data_per_streamline))
        checks.check(src_name + " -> h5 -> " + ext + ": nibabel reads the same streamlines",
                     ok, detail)


def legacy_round_trip(checks, p, d, src_name):
    src = os.path.join(p.shared_data, "tracts", src_name)
    stem = os.path.join(d, src_name.replace(".", "_"))
    r = run(p, "ingest", "tracts", src, "-o", stem + ".h5", "--export", "trx:" + stem + ".trx")
    if not checks.check(src_name + ": ingest + export trx exits 0", r.returncode == 0,
                        r.stderr.strip()):
        return
    want = legacy_arrays(src)
    got = check_trx(checks, src_name + " -> trx", stem + ".trx")
    if got is None:
        return
    ok = got["positions"].dtype == want["positions"].dtype and \
        np.array_equal(got["positions"], want["positions"]) and \
        np.array_equal(got["offsets"], want["offsets"])
    checks.check(src_name + ": positions (same dtype, bit for bit) and offsets with sentinel",
                 ok, "%s %s" % (got["positions"].dtype, got["positions"].shape))
    bad = []
    for key, arr in want.items():
        if key in ("positions", "offsets", "header"):
            continue
        mine = got.get(key)
        # TRX groups are uint32 (the legacy sources store int64): values must agree.
        same_type = key.startswith("groups/") and mine is not None and \
            mine.dtype == np.uint32 or mine is not None and mine.dtype == arr.dtype
        if not same_type or not np.array_equal(mine.reshape(arr.shape), arr):
            bad.append(key)
    checks.check(src_name + ": every dps, dpv, group and dpg equal the source's", not bad,
                 "differ: %s" % bad if bad else "%d arrays" % (len(want) - 3))
    h = got["header"]
    checks.check(src_name + ": header VOXEL_TO_RASMM and DIMENSIONS copied",
                 np.allclose(h["VOXEL_TO_RASMM"], want["header"]["VOXEL_TO_RASMM"]) and
                 h["DIMENSIONS"] == want["header"]["DIMENSIONS"])


def test_round_trips(checks, p):
    d = p.fresh_dir("round_trips")
    for name in GOOD_TCK + GOOD_TRK:
        round_trip_nibabel(checks, p, d, name)
    for name in LEGACY_TRX:
        legacy_round_trip(checks, p, d, name)
    # float16 positions: within float16 precision of the source
    src = os.path.join(p.shared_data, "tracts", "standard.trk")
    h5 = os.path.join(d, "f16.h5")
    r = run(p, "ingest", "tracts", src, "-o", h5, "--dtype", "float16", "--export",
            "trk:" + os.path.join(d, "f16.trk"))
    _, lens, pts = nib_load(src)
    with h5py.File(h5, "r") as f:
        pos = f["/tracts/positions"][()]
    _, _, back = nib_load(os.path.join(d, "f16.trk"))
    checks.check("float16: stored as float16, within its precision, and through TRK",
                 r.returncode == 0 and pos.dtype == np.float16 and
                 np.allclose(pos.astype(np.float32), pts, rtol=1e-3, atol=1e-3) and
                 np.allclose(back, pts, rtol=1e-3, atol=1e-2), r.stderr.strip())


def test_trx_modes(checks, p):
    d = p.fresh_dir("modes")
    src = os.path.join(p.shared_data, "tracts", "small_pascal_legacy_offsets.trx")
    h5 = os.path.join(d, "a.h5")
    run(p, "ingest", "tracts", src, "-o", h5, "-q")
    out = os.path.join(d, "deflate.trx")
    r = run(p, "export", h5, "--to", "trx", "-o", out, "--compression", "deflate")
    with zipfile.ZipFile(out) as zf:
        methods = {i.compress_type for i in zf.infolist()}
    checks.check("export --compression deflate: deflated entries, trx_check passes",
                 r.returncode == 0 and methods == {zipfile.ZIP_DEFLATED} and
                 check_trx(checks, "deflate", out) is not None, r.stderr.strip())
    stored = os.path.join(d, "stored.trx")
    run(p, "export", h5, "--to", "trx", "-o", stored)
    with zipfile.ZipFile(stored) as zf:
        methods = {i.compress_type for i in zf.infolist()}
    checks.equal("export --to trx stores by default", methods, {zipfile.ZIP_STORED})
    folder = os.path.join(d, "dir")
    os.makedirs(folder)
    with open(os.path.join(folder, "stray.txt"), "w") as f:
        f.write("x")
    r = run(p, "export", h5, "--to", "trx-dir", "-o", folder)
    checks.check("trx-dir (clean) replaces the folder and passes trx_check",
                 r.returncode == 0 and not os.path.exists(os.path.join(folder, "stray.txt")) and
                 check_trx(checks, "trx-dir", folder) is not None, r.stderr.strip())
    with open(os.path.join(folder, "notes.json"), "w") as f:
        f.write("{}")
    r = run(p, "export", h5, "--to", "trx-dir", "--persistent", "-o", folder)
    checks.check("trx-dir --persistent writes into the folder and keeps its other files",
                 r.returncode == 0 and os.path.exists(os.path.join(folder, "notes.json")) and
                 check_trx(checks, "persistent", folder) is not None, r.stderr.strip())
    r = run(p, "export", h5, "--to", "trx-dir", "--persistent", "-o", os.path.join(d, "none"))
    checks.check("--persistent on a missing folder: exit 1 naming it",
                 r.returncode == 1 and "none" in r.stderr, r.stderr.strip())
    r = run(p, "export", h5, "--to", "tck", "--persistent", "-o", os.path.join(d, "x.tck"))
    checks.equal("--persistent with --to tck is a usage error", r.returncode, 2)


def test_malformed(checks, p):
    d = p.fresh_dir("malformed")
    data = os.path.join(p.shared_data, "tracts")
    cases = [(os.path.join(data, n), n) for n in BAD_TCK]
    with open(os.path.join(data, "standard.tck"), "rb") as f:
        tck = f.read()
    cut = os.path.join(d, "truncated_body.tck")
    with open(cut, "wb") as f:
        f.write(tck[:len(tck) - 200])
    cases.append((cut, "truncated TCK body"))
    with open(os.path.join(data, "standard.trk"), "rb") as f:
        trk = f.read()
    badhdr = os.path.join(d, "bad_header.trk")
    with open(badhdr, "wb") as f:
        f.write(trk[:996] + b"\x00\x00\x00\x00" + trk[1000:])  # hdr_size 0
    cases.append((badhdr, "TRK with hdr_size 0"))
    cuttrk = os.path.join(d, "truncated_body.trk")
    with open(cuttrk, "wb") as f:
        f.write(trk[:len(trk) - 10])
    cases.append((cuttrk, "truncated TRK body"))
    with open(os.path.join(data, "small_pascal_legacy_offsets.trx"), "rb") as f:
        trx = f.read()
    cuttrx = os.path.join(d, "truncated.trx")
    with open(cuttrx, "wb") as f:
        f.write(trx[:len(trx) // 2])
    cases.append((cuttrx, "TRX zip cut in half"))
    for path, what in cases:
        r = run(p, "ingest", "tracts", path, "-o", os.path.join(d, "out.h5"))
        named = os.path.basename(path) in r.stderr and ("byte" in r.stderr or
                                                        "entry" in r.stderr)
        checks.check("malformed %s: exit 1, message names the file and byte/entry" % what,
                     r.returncode == 1 and named and "Traceback" not in r.stderr,
                     "rc %d: %s" % (r.returncode, r.stderr.strip()[:300]))


def test_concat(checks, p):
    d = p.fresh_dir("concat")
    data = os.path.join(p.shared_data, "tracts")
    h5 = os.path.join(d, "two.h5")
    r = run(p, "ingest", "tracts", os.path.join(data, "standard.trk"),
            os.path.join(data, "standard.trk"), "-o", h5, "--repeat", "2")
    _, lens, pts = nib_load(os.path.join(data, "standard.trk"))
    with h5py.File(h5, "r") as f:
        pos = f["/tracts/positions"][()]
        off = f["/tracts/offsets"][()]
    checks.check("two sources x --repeat 2: four copies in order",
                 r.returncode == 0 and np.allclose(pos, np.tile(pts, (4, 1)), atol=1e-4) and
                 len(off) == 4 * len(lens) + 1, r.stderr.strip())
    r = run(p, "ingest", "tracts", os.path.join(data, "standard.trk"),
            os.path.join(data, "complex.trk"), "-o", os.path.join(d, "bad.h5"))
    checks.check("sources with different headers: exit 1 naming the second",
                 r.returncode == 1 and "complex.trk" in r.stderr, r.stderr.strip())


def test_shards(checks, p):
    d = p.fresh_dir("shards")
    src = os.path.join(p.shared_data, "tracts", "small_pascal_legacy_offsets.trx")
    want = legacy_arrays(src)
    a, b = os.path.join(d, "a.h5"), os.path.join(d, "b.h5")
    procs = [subprocess.Popen([p.bin, "ingest", "tracts", src, "-o", x, "-q"],
                              stderr=subprocess.PIPE, text=True) for x in (a, b)]
    errs = [pr.communicate(timeout=120)[1] for pr in procs]
    checks.check("two processes write one shard each",
                 all(pr.returncode == 0 for pr in procs), " / ".join(errs))
    out = os.path.join(d, "merged.trx")
    r = run(p, "export", a, b, "--to", "trx", "-o", out)
    got = check_trx(checks, "merged", out)
    if r.returncode != 0 or got is None:
        checks.check("export of two shards exits 0", False, r.stderr.strip())
        return
    ns = want["header"]["NB_STREAMLINES"]
    nv = want["header"]["NB_VERTICES"]
    ok = got["header"]["NB_STREAMLINES"] == 2 * ns and \
        np.array_equal(got["positions"], np.concatenate([want["positions"]] * 2)) and \
        np.array_equal(got["offsets"], np.concatenate(
            [want["offsets"][:-1], want["offsets"] + np.uint64(nv)]))
    checks.check("merge: positions concatenated, offsets rebased", ok)
    bad = []
    for key, arr in want.items():
        if key.startswith("groups/"):
            exp = np.concatenate([arr, arr + ns]).astype(np.uint32)
        elif key.startswith("dps/") or key.startswith("dpv/"):
            exp = np.concatenate([arr, arr])
        elif key.startswith("dpg/"):
            exp = arr
        else:
            continue
        mine = got.get(key)
        if mine is None or not np.array_equal(mine.reshape(exp.shape), exp):
            bad.append(key)
    checks.check("merge: dps/dpv concatenated, group indices rebased, dpg kept", not bad,
                 "differ: %s" % bad if bad else "")
    # A shard whose dpg CC/volume differs: the merge refuses it and names both shards.
    folder = os.path.join(d, "edited")
    run(p, "export", a, "--to", "trx-dir", "-o", folder)
    vol = os.path.join(folder, "dpg", "CC", "volume.uint32")
    np.array([12345], dtype="<u4").tofile(vol)
    c = os.path.join(d, "c.h5")
    r1 = run(p, "ingest", "tracts", folder, "-o", c, "-q")
    r = run(p, "export", a, c, "--to", "trx", "-o", os.path.join(d, "conflict.trx"))
    checks.check("merge: different dpg values of a non-empty group -> exit 1 naming both",
                 r1.returncode == 0 and r.returncode == 1 and "CC/volume" in r.stderr and
                 "a.h5" in r.stderr and "c.h5" in r.stderr, r.stderr.strip())
    r = run(p, "export", a, c, "--to", "tck", "-o", os.path.join(d, "both.tck"))
    t, lens, _ = nib_load(os.path.join(d, "both.tck"))
    checks.check("merge to TCK: all streamlines of both shards",
                 r.returncode == 0 and len(lens) == 2 * ns, r.stderr.strip())


def test_live(checks, p):
    d = p.fresh_dir("live")
    src = os.path.join(p.shared_data, "tracts", "small_pascal_legacy_offsets.trx")
    h5 = os.path.join(d, "live.h5")
    tail_out = open(os.path.join(d, "tail.jsonl"), "w")
    tail = subprocess.Popen([p.bin, "tail", "-f", h5, "/tracts", "--json", "--interval", "20"],
                            stdout=tail_out, stderr=subprocess.PIPE, text=True)
    ingest = None
    try:
        ingest = subprocess.Popen([p.bin, "ingest", "tracts", src, "-o", h5, "--rate", "800",
                                   "--flush-ms", "50", "-q"], stderr=subprocess.PIPE, text=True)
        ierr = ingest.communicate(timeout=120)[1]
        terr = tail.communicate(timeout=60)[1]
    finally:
        lib.stop_process(ingest)
        lib.stop_process(tail)
        tail_out.close()
    checks.check("live: ingest --rate 800 exits 0", ingest.returncode == 0, ierr.strip())
    checks.check("live: tail -f ends by itself when the writer closes", tail.returncode == 0,
                 terr.strip())
    rows = [json.loads(line) for line in open(os.path.join(d, "tail.jsonl"))]
    want = legacy_arrays(src)
    lens = np.diff(want["offsets"].astype(np.int64))
    seen_idx = [r["index"] for r in rows]
    seen_pts = np.array([r["points"] for r in rows])
    pos = want["positions"].astype(np.float64)
    offs = want["offsets"].astype(np.int64)
    lengths = np.array([np.linalg.norm(np.diff(pos[offs[i]:offs[i + 1]], axis=0), axis=1).sum()
                        for i in range(len(lens))])
    ok = seen_idx == list(range(len(lens))) and np.array_equal(seen_pts, lens)
    checks.check("live: tail saw every streamline once, in order, with its point count", ok,
                 "%d rows of %d" % (len(rows), len(lens)))
    got_len = np.array([r["length_mm"] for r in rows]) if ok else np.zeros(0)
    checks.check("live: length_mm matches the points (float16 positions)",
                 ok and np.allclose(got_len, lengths, rtol=1e-4, atol=1e-3))
    with h5py.File(h5, "r") as f:
        state = int(f[lib.STATUS_PATH][0]["state"])
    checks.equal("live: the writer status is closed", state, lib.STATE_CLOSED)
    r = run(p, "tail", h5, "/tracts")
    lines = r.stdout.splitlines()
    checks.check("tail (no -f) prints one text line per streamline",
                 r.returncode == 0 and len(lines) == len(lens) and
                 lines[0].startswith("0 points=%d length_mm=" % lens[0]), lines[:1])


def body(checks, p):
    test_round_trips(checks, p)
    test_trx_modes(checks, p)
    test_malformed(checks, p)
    test_concat(checks, p)
    test_shards(checks, p)
    test_live(checks, p)


if __name__ == "__main__":
    lib.run_main(body)
