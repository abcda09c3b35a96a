#!/usr/bin/python3
"""Independent TRX checker (numpy + zipfile only), written from the rules in docs/tractio.md.

check(path) -> dict of numpy arrays ("header", "positions", "offsets", "dps/NAME",
"dpv/NAME", "groups/NAME", "dpg/GROUP/NAME"); raises TrxError naming the rule broken.
Rules: entries at the archive root; header.json with integer NB_STREAMLINES and
NB_VERTICES, VOXEL_TO_RASMM 4x4, DIMENSIONS 3 integers; positions.3.float16|32|64 with
NB_VERTICES rows; offsets.uint64 with NB_STREAMLINES + 1 values, 0 first, NB_VERTICES
last, non-decreasing; dps/NAME[.K].DTYPE with NB_STREAMLINES rows, dpv with NB_VERTICES
rows; groups/NAME.uint32 with indices < NB_STREAMLINES; dpg/GROUP/NAME[.K].DTYPE for
existing groups only; names without dots; no other files than these and *.json; zip
entries stored or deflate, little-endian, and local headers whose extra field is empty or
a needed zip64 record only (trx-python rejects others).

CLI:
  trx_check.py OUT.trx|FOLDER [--compare-tck X.tck]   check, optionally compare the points
                                                      with nibabel's reading of X.tck
  trx_check.py --nibabel FILE.tck|trk --points RAW.f32 --count N
                                                      nibabel's points of FILE equal the
                                                      raw float32 n x 3 file within 1e-4
Exit 0 when all is well, 1 with the reason on stderr otherwise.
"""
import json
import os
import struct
import sys
import zipfile

import numpy as np

DTYPES = {"int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
          "float16", "float32", "float64"}


class TrxError(Exception):
    pass


def _local_header_check(path, zf):
    with open(path, "rb") as f:
        for info in zf.infolist():
            f.seek(info.header_offset)
            head = f.read(30)
            if len(head) < 30 or head[:4] != b"PK\x03\x04":
                raise TrxError(f"{info.filename}: no local header at {info.header_offset}")
            (method, csize, usize, nlen, elen) = (struct.unpack("<H", head[8:10])[0],
                                                  *struct.unpack("<IIHH", head[18:30]))
            if method not in (0, 8):
                raise TrxError(f"{info.filename}: compression method {method} (0 or 8 only)")
            f.seek(info.header_offset + 30 + nlen)
            extra = f.read(elen)
            pos = 0
            while pos < len(extra):
                if pos + 4 > len(extra):
                    raise TrxError(f"{info.filename}: malformed local extra field")
                fid, flen = struct.unpack("<HH", extra[pos:pos + 4])
                needed = 0xFFFFFFFF in (csize, usize)
                if fid != 0x0001 or not needed:
                    raise TrxError(f"{info.filename}: local header carries extra field "
                                   f"0x{fid:04x} ({flen} bytes); only a needed zip64 one "
                                   f"is allowed")
                pos += 4 + flen


def _entries(path):
    """Yields (name, bytes) of every file entry of a zip archive or folder."""
    if os.path.isdir(path):
        for root, _dirs, files in os.walk(path):
            for fn in files:
                full = os.path.join(root, fn)
                rel = os.path.relpath(full, path).replace(os.sep, "/")
                with open(full, "rb") as f:
                    yield rel, f.read()
        return
    with zipfile.ZipFile(path) as zf:
        _local_header_check(path, zf)
        for info in zf.infolist():
            if info.filename.endswith("/"):
                continue
            yield info.filename, zf.read(info)


def _split(name, where):
    parts = name.split(".")
    if len(parts) == 2:
        base, k, dt = parts[0], 1, parts[1]
    elif len(parts) == 3 and parts[1].isdigit():
        base, k, dt = parts[0], int(parts[1]), parts[2]
    else:
        raise TrxError(f"{where}: name must be NAME[.K].DTYPE without other dots")
    if dt not in DTYPES or not base or k < 1:
        raise TrxError(f"{where}: bad name or dtype")
    return base, k, np.dtype(dt).newbyteorder("<")


def check(path):
    raw = {}
    for name, data in _entries(path):
        raw[name] = data
    if "header.json" not in raw:
        raise TrxError("no header.json at the root")
    hdr = json.loads(raw["header.json"])
    for key in ("NB_STREAMLINES", "NB_VERTICES"):
        if not isinstance(hdr.get(key), int) or isinstance(hdr.get(key), bool) or hdr[key] < 0:
            raise TrxError(f"header.json: {key} must be an integer >= 0")
    aff = np.asarray(hdr.get("VOXEL_TO_RASMM"), dtype=float)
    if aff.shape != (4, 4):
        raise TrxError("header.json: VOXEL_TO_RASMM must be 4 x 4")
    dims = hdr.get("DIMENSIONS")
    if not isinstance(dims, list) or len(dims) != 3 or not all(isinstance(d, int) for d in dims):
        raise TrxError("header.json: DIMENSIONS must be 3 integers")
    ns, nv = hdr["NB_STREAMLINES"], hdr["NB_VERTICES"]
    out = {"header": hdr}
    dpg = []
    for name, data in raw.items():
        if name.endswith(".json"):
            continue
        parts = name.split("/")
        if len(parts) == 1:
            base, k, dt = _split(name, name)
            arr = np.frombuffer(data, dtype=dt)
            if base == "positions":
                if k != 3 or dt.name not in ("float16", "float32", "float64"):
                    raise TrxError(f"{name}: positions must be positions.3.float16|32|64")
                if arr.size != nv * 3:
                    raise TrxError(f"{name}: {arr.size} values, NB_VERTICES x 3 = {nv * 3}")
                out["positions"] = arr.reshape(nv, 3)
            elif base == "offsets":
                if dt.name != "uint64" or k != 1:
                    raise TrxError(f"{name}: offsets must be offsets.uint64")
                if arr.size != ns + 1:
                    raise TrxError(f"{name}: {arr.size} values, NB_STREAMLINES + 1 = {ns + 1}")
                if arr[0] != 0 or arr[-1] != nv or np.any(np.diff(arr.astype(np.int64)) < 0):
                    raise TrxError(f"{name}: must start at 0, end at NB_VERTICES, not decrease")
                out["offsets"] = arr
            else:
                raise TrxError(f"{name}: unexpected file at the root")
        elif len(parts) == 2 and parts[0] in ("dps", "dpv", "groups"):
            base, k, dt = _split(parts[1], name)
            arr = np.frombuffer(data, dtype=dt)
            if parts[0] == "groups":
                if dt.name != "uint32" or k != 1:
                    raise TrxError(f"{name}: groups must be uint32")
                if arr.size and int(arr.max()) >= ns:
                    raise TrxError(f"{name}: index {int(arr.max())} >= NB_STREAMLINES {ns}")
                out[f"groups/{base}"] = arr
            else:
                rows = ns if parts[0] == "dps" else nv
                if arr.size != rows * k:
                    raise TrxError(f"{name}: {arr.size} values, {rows} rows x {k} needed")
                out[f"{parts[0]}/{base}"] = arr.reshape(rows, k)
        elif len(parts) == 3 and parts[0] == "dpg":
            base, k, dt = _split(parts[2], name)
            if "." in parts[1]:
                raise TrxError(f"{name}: group name with a dot")
            arr = np.frombuffer(data, dtype=dt)
            if arr.size % k:
                raise TrxError(f"{name}: not rows of {k}")
            dpg.append((parts[1], name))
            out[f"dpg/{parts[1]}/{base}"] = arr.reshape(-1, k)
        else:
            raise TrxError(f"{name}: not a TRX entry")
    for key in ("positions", "offsets"):
        if key not in out:
            raise TrxError(f"no {key} entry")
    for group, name in dpg:
        if f"groups/{group}" not in out:
            raise TrxError(f"{name}: dpg for a group that does not exist")
    return out


def _nibabel_points(path):
    import nibabel
    sl = nibabel.streamlines.load(path).streamlines
    pts = np.concatenate([np.asarray(s, dtype=np.float32) for s in sl]) if len(sl) else \
        np.zeros((0, 3), np.float32)
    return len(sl), pts


def main(argv):
    args = argv[1:]
    try:
        if args[:1] == ["--nibabel"]:
            opts = dict(zip(args[0::2], args[1::2]))
            n, pts = _nibabel_points(opts["--nibabel"])
            mine = np.fromfile(opts["--points"], dtype="<f4").reshape(-1, 3)
            if n != int(opts["--count"]):
                raise TrxError(f"nibabel reads {n} streamlines, the C reader {opts['--count']}")
            if pts.shape != mine.shape or not np.allclose(pts, mine, atol=1e-4, rtol=0):
                raise TrxError(f"points differ from nibabel's ({pts.shape} vs {mine.shape})")
            return 0
        arrays = check(args[0])
        if "--compare-tck" in args:
            n, pts = _nibabel_points(args[args.index("--compare-tck") + 1])
            mine = arrays["positions"].astype(np.float32)
            tol = 1e-3 if arrays["positions"].dtype == np.float16 else 1e-6
            if n != arrays["header"]["NB_STREAMLINES"] or pts.shape != mine.shape or \
                    not np.allclose(pts, mine, rtol=tol, atol=tol):
                raise TrxError("positions differ from the TCK's")
        return 0
    except (TrxError, KeyError, ValueError, zipfile.BadZipFile, OSError) as e:
        print(f"trx_check: {args[0] if args else ''}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
