#!/usr/bin/python3
"""test_swmr_space_reuse.py - a live reader's stale chunk address never points at other bytes.

A compressed column's last chunk is stored partial at each commit and stored again, larger,
at the next one; HDF5 then puts the chunk at a new address and frees the old space
(docs/format.md, "Reading while it is written"). A reader in another process that looked
up the chunk before the move and reads it after would get whatever now lies at the old
address. That is safe only if a SWMR writer never reuses freed file space; HDF5 1.10.8
does not, and the engine relies on it. This test pins both:

1. The library (h5py only, no h5stream): a chunk is stored small and then large, with
   another dataset's chunk stored in between, 50 times; then a small chunk is stored that
   would fit the freed space. Without SWMR, HDF5 puts some of them in the freed space (the
   probe can see reuse); with SWMR write access on, never.
2. The engine, end to end: `h5stream ingest marc -` with deflate and a commit every 8
   records is fed the MMA records in slices while this script follows the file as a SWMR
   reader. At every poll it notes each compressed chunk's address, size and stored bytes
   (read from the file with pread). After the writer closes: a chunk that still lies at
   the noted address may hold newer bytes (HDF5 rewrites a chunk in place when its size
   is unchanged, and the rows a reader knew of are the same in it); a chunk that moved
   away must have left its old bytes untouched. The test also requires that moves were
   seen, so it cannot pass without exercising the case.
"""

import hashlib
import os
import subprocess
import threading
import time
import zlib

import numpy as np

import h5py

import h5s_scriptlib as lib

PROBE_ROUNDS = 50
COMMIT_EVERY = 8
SLICE_RECORDS = 24
SLICE_PAUSE_S = 0.004


def probe_reuse(path, swmr):
    """Part 1: how many of PROBE_ROUNDS small chunks HDF5 puts in space it freed."""
    rng = np.random.default_rng(7)
    with h5py.File(path, "w", libver="latest") as f:
        moving = f.create_dataset("moving", shape=(0,), maxshape=(None,), chunks=(65536,),
                                  dtype="u1", compression="gzip")
        other = f.create_dataset("other", shape=(0,), maxshape=(None,), chunks=(65536,),
                                 dtype="u1", compression="gzip")
        if swmr:
            f.swmr_mode = True

        def store(ds, index, filled):
            raw = np.zeros(65536, "u1")
            raw[:filled] = rng.integers(0, 256, filled, dtype="u1")
            if ds.shape[0] < (index + 1) * 65536:
                ds.resize(((index + 1) * 65536,))
            ds.id.write_direct_chunk((index * 65536,), zlib.compress(raw.tobytes()))
            f.flush()

        reused = 0
        for k in range(PROBE_ROUNDS):
            store(moving, k, 1000)
            old = moving.id.get_chunk_info(k)
            store(other, 2 * k, 500)      # so the small chunk is not at the end of the file
            store(moving, k, 60000)       # larger: HDF5 moves it and frees the old space
            store(other, 2 * k + 1, 400)  # small enough for the freed space
            new = other.id.get_chunk_info(2 * k + 1)
            if old.byte_offset <= new.byte_offset < old.byte_offset + old.size:
                reused += 1
        return reused


def compressed_datasets(f):
    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.chunks and obj.compression:
            found.append(name)
    f.visititems(visit)
    return sorted(found)


def chunk_table(f, names):
    """{(dataset, chunk offset): (address, size)} for every stored chunk of names."""
    table = {}
    for name in names:
        ds = f[name]
        for i in range(ds.id.get_num_chunks()):
            info = ds.id.get_chunk_info(i)
            table[(name, info.chunk_offset)] = (info.byte_offset, info.size)
    return table


def digest(fd, address, size):
    return hashlib.sha256(os.pread(fd, size, address)).hexdigest()


def follow(path, writer, seen):
    """Part 2's reader: notes (dataset, chunk offset, address, size) -> digest at each poll
    until the writer has exited. Returns the number of polls."""
    polls = 0
    f, _, _ = lib.open_swmr_when_ready(path, ("marc/records",),
                                       lambda: writer.poll() is None, pause_s=0.01)
    if f is None:
        return 0
    names = compressed_datasets(f)
    fd = os.open(path, os.O_RDONLY)
    try:
        while writer.poll() is None:
            for name in names:
                f[name].id.refresh()
            for (name, offset), (address, size) in chunk_table(f, names).items():
                seen[(name, offset, address, size)] = digest(fd, address, size)
            polls += 1
            time.sleep(0.002)
    finally:
        os.close(fd)
        f.close()
    return polls


def feed(proc, records):
    """Writes the records to the writer's stdin in slices, pausing between them."""
    try:
        for at in range(0, len(records), SLICE_RECORDS):
            proc.stdin.write(b"".join(records[at:at + SLICE_RECORDS]))
            proc.stdin.flush()
            time.sleep(SLICE_PAUSE_S)
    finally:
        proc.stdin.close()


def body(checks, p):
    work = p.fresh_dir("swmr_space_reuse")

    plain = probe_reuse(os.path.join(work, "probe_plain.h5"), swmr=False)
    checks.check("without SWMR, HDF5 reuses freed chunk space (the probe can see reuse)",
                 plain > 0, "%d of %d small chunks went into freed space" % (plain, PROBE_ROUNDS))
    swmr = probe_reuse(os.path.join(work, "probe_swmr.h5"), swmr=True)
    checks.equal("with SWMR write access, HDF5 never reuses freed chunk space", swmr, 0,
                 "small chunks put into freed space, of %d" % PROBE_ROUNDS)

    source = os.path.join(p.shared_data, "marc", "MMA_Pubs_records_2021_07.mrc")
    with open(source, "rb") as src:
        records = [rec for _, rec in lib.iso2709_split(src.read())]
    out = os.path.join(work, "live.h5")
    log = os.path.join(work, "ingest.log")
    seen = {}
    with open(log, "wb") as err:
        writer = subprocess.Popen(
            [p.bin, "ingest", "marc", "-", "-o", out, "--compress", "deflate:1",
             "--flush-every", str(COMMIT_EVERY), "--mode", "permissive", "-q"],
            stdin=subprocess.PIPE, stderr=err)
        feeder = threading.Thread(target=feed, args=(writer, records))
        feeder.start()
        try:
            polls = follow(out, writer, seen)
        finally:
            feeder.join()
            rc = writer.wait()
    checks.equal("the ingest exits 0", rc, 0, lib.tail_text(log))
    checks.check("the reader polled the growing file", polls >= 20, "%d polls" % polls)

    with h5py.File(out, "r") as f:
        names = compressed_datasets(f)
        final = chunk_table(f, names)
        stored = int(f["/marc/index"].shape[0]) if "/marc/index" in f else -1
    checks.equal("every record is stored", stored, len(records))
    checks.check("the records column is among the compressed datasets",
                 "marc/records" in names, ", ".join(names))

    fd = os.open(out, os.O_RDONLY)
    try:
        moved = in_place = 0
        overwritten = []
        for (name, offset, address, size), sha in seen.items():
            if final.get((name, offset)) == (address, size):
                in_place += 1
                continue
            moved += 1
            if digest(fd, address, size) != sha:
                overwritten.append("%s chunk %s: %d bytes at %d" % (name, offset, size, address))
    finally:
        os.close(fd)
    checks.info("%d chunk locations noted over %d polls: %d still hold their chunk, %d were "
                "left behind by a move" % (len(seen), polls, in_place, moved))
    checks.check("chunks moved while the reader followed (the case under test happened)",
                 moved >= 10, "%d left-behind locations" % moved)
    checks.equal("no left-behind location was written over", overwritten[:5], [],
                 "%d of %d overwritten" % (len(overwritten), moved))


if __name__ == "__main__":
    lib.run_main(body)
