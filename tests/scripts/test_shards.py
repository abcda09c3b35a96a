"""test_shards.py - sharded frame writers behind a virtual-dataset master (docs/shards.md).

Runs `h5stream ingest frames` as 4 writers under mpirun and as 4 independent processes
(--rank/--ranks), then reads the master with h5py: every frame exactly once, in order,
equal to what a single writer makes from the same source (sim:ramp, which the test
recomputes, and the seeded Poisson simulator, compared with a single-writer run). While
the ranks write, an h5py SWMR reader and `h5stream tail -f` follow the master and must
see a growing, gap-free prefix. One rank killed with SIGKILL: after `h5stream recover`
of its shard, the master shows every frame up to that rank's last commit.
mpirun is required: without it the test fails.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import h5s_scriptlib as lib  # noqa: E402

RANKS = 4
SHAPE = (16, 24)


def mpirun_cmd():
    exe = shutil.which("mpirun")
    if exe is None:
        return None
    cmd = [exe, "--oversubscribe", "-n", str(RANKS)]
    if os.geteuid() == 0:
        cmd.insert(1, "--allow-run-as-root")
    return cmd


def mpi_env():
    env = dict(os.environ)
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    # This process's own rank variables (if a CI runs it under MPI) must not leak in.
    for k in ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"):
        env.pop(k, None)
    return env


def owner(f, ranks, block):
    return (f // block) % ranks


def global_of(local, rank, ranks, block):
    return (local // block) * block * ranks + rank * block + local % block


def first_missing(path, name):
    """Opens a dataset of the master with the first-missing view (h5py's low-level API)."""
    f = h5py.File(path, "r", libver="latest", swmr=True)
    dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
    dapl.set_virtual_view(h5py.h5d.VDS_FIRST_MISSING)
    return f, h5py.Dataset(h5py.h5d.open(f.id, name.encode(), dapl=dapl))


def shard_frame_ids(path):
    with h5py.File(path, "r") as f:
        return f[lib.FRAME_ID_PATH][:]


def body(checks, p):
    check = checks.check
    d = p.fresh_dir("shards")
    env = mpi_env()
    mpirun = mpirun_cmd()
    if not check("mpirun is installed", mpirun is not None,
                 mpirun[0] if mpirun else
                 "mpirun not on PATH; the sharded writers' tests need Open MPI"):
        return
    log = lambda name: os.path.join(d, name)  # noqa: E731

    def run(cmd, name, timeout=120):
        with open(log(name + ".out"), "w") as o, open(log(name + ".err"), "w") as e:
            return subprocess.run(cmd, stdout=o, stderr=e, env=env, timeout=timeout).returncode

    def check_master(name, master, count, block, expected, ranks=RANKS):
        with h5py.File(master, "r") as f:
            data = f[lib.DATA_PATH]
            ids = f[lib.FRAME_ID_PATH][:]
            ts = f[lib.TIMESTAMP_PATH][:]
            check(name + ": data, frame_id and timestamp are virtual",
                  data.is_virtual and f[lib.FRAME_ID_PATH].is_virtual
                  and f[lib.TIMESTAMP_PATH].is_virtual)
            checks.equal(name + ": master frame count (plain HDF5 open)", data.shape,
                         (count,) + SHAPE)
            check(name + ": frame_id is 0..N-1, each frame once, in order",
                  np.array_equal(ids, np.arange(count)), "first ids %s" % ids[:8])
            check(name + ": every timestamp present", bool(np.isfinite(ts).all()))
            seen = data[:]
            bad = lib.first_mismatch(seen, expected)
            check(name + ": frames equal the single writer's", bad is None, bad or "")
            checks.equal(name + ": master status state (1 = final)",
                         int(f[lib.STATUS_PATH][0]["state"]), lib.STATE_CLOSED)
            checks.equal(name + ": shard attributes",
                         (int(f.attrs["h5stream_shard_ranks"]),
                          int(f.attrs["h5stream_shard_block"])), (ranks, block))
        for r in range(ranks):
            shard = master[:-3] + "_%d.h5" % r
            got = shard_frame_ids(shard)
            want = [g for g in range(count) if owner(g, ranks, block) == r]
            check(name + ": shard %d holds exactly its frames" % r,
                  np.array_equal(got, want), "%d frames, first %s" % (len(got), got[:6]))

    # 1. mpirun, sim:ramp, blocks of 3, a count that leaves partial blocks.
    count, block = 203, 3
    master = log("ramp.h5")
    rc = run(mpirun + [p.bin, "ingest", "frames", "sim:ramp", "--shape", "16x24", "-n",
                       str(count), "--block", str(block), "-o", master, "-q"], "ramp")
    if check("mpirun -n 4 ingest sim:ramp exits 0", rc == 0,
             "rc %d: %s" % (rc, lib.tail_text(log("ramp.err")))):
        check_master("mpirun ramp", master, count, block,
                     lib.ramp_frames(0, count, SHAPE, np.uint16))

    # 2. The Poisson simulator: the union of the shards equals one writer's frames.
    single = log("sim_single.h5")
    rc1 = run([p.bin, "ingest", "frames", "sim", "--shape", "16x24", "-n", "37", "--seed",
               "9", "-o", single, "-q"], "sim_single")
    rc2 = run(mpirun + [p.bin, "ingest", "frames", "sim", "--shape", "16x24", "-n", "37",
                        "--seed", "9", "--block", "2", "-o", log("sim.h5"), "-q"], "sim")
    if check("sim: single writer and mpirun both exit 0", rc1 == 0 and rc2 == 0,
             "%d %d: %s" % (rc1, rc2, lib.tail_text(log("sim.err")))):
        with h5py.File(single, "r") as f:
            want = f[lib.DATA_PATH][:]
        check("sim: the simulator makes distinct frames", not np.array_equal(want[0], want[1]))
        check_master("mpirun sim", log("sim.h5"), 37, 2, want)

    # 3. Independent processes with --rank/--ranks (rank 0 starts last).
    master = log("indep.h5")
    procs = []
    for r in reversed(range(RANKS)):
        with open(log("indep_%d.err" % r), "w") as e:
            procs.append(subprocess.Popen(
                [p.bin, "ingest", "frames", "sim:ramp", "--shape", "16x24", "-n", "150",
                 "--block", "4", "--rank", str(r), "--ranks", str(RANKS), "-o", master,
                 "-q"], stderr=e, env=env))
    codes = [q.wait(timeout=120) for q in procs]
    if check("--rank/--ranks: all 4 processes exit 0", codes == [0] * RANKS, str(codes)):
        check_master("--rank/--ranks", master, 150, 4, lib.ramp_frames(0, 150, SHAPE, np.uint16))

    # 4. Live: an h5py SWMR reader and `tail -f` follow the master while the ranks write.
    master = log("live.h5")
    count = 900
    with open(log("live_tail.out"), "w") as o, open(log("live_tail.err"), "w") as e:
        tail = subprocess.Popen([p.bin, "tail", "-f", master, "--json", "--interval", "20"],
                                stdout=o, stderr=e, env=env)
    writer = subprocess.Popen(
        mpirun + [p.bin, "ingest", "frames", "sim:ramp", "--shape", "16x24", "-n", str(count),
                  "--rate", "600", "--flush-ms", "30", "--block", "2", "-o", master, "-q"],
        stdout=open(log("live.out"), "w"), stderr=open(log("live.err"), "w"), env=env)
    counts, gaps, wrong = [], [], []
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(master) and time.monotonic() < deadline:
            time.sleep(0.02)
        ino = os.stat(master).st_ino
        f = h5py.File(master, "r", libver="latest", swmr=True)
        dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
        dapl.set_virtual_view(h5py.h5d.VDS_FIRST_MISSING)
        seen = 0
        while time.monotonic() < deadline:
            # Reopen each poll (1.10.8: refresh resets a virtual dataset's view); the
            # marker before the data.
            ids = h5py.Dataset(h5py.h5d.open(f.id, lib.FRAME_ID_PATH.encode(), dapl=dapl))
            n = ids.shape[0]
            data = h5py.Dataset(h5py.h5d.open(f.id, lib.DATA_PATH.encode(), dapl=dapl))
            counts.append(n)
            if n > seen:
                got = ids[seen:n]
                if not np.array_equal(got, np.arange(seen, n)):
                    gaps.append((seen, n, got[:8].tolist()))
                bad = lib.first_mismatch(data[seen:n], lib.ramp_frames(seen, n - seen, SHAPE,
                                                                       np.uint16), seen)
                if bad:
                    wrong.append(bad)
                seen = n
            ids.id.close()
            data.id.close()
            if os.stat(master).st_ino != ino:
                break  # rank 0 renamed the final master over the live one
            time.sleep(0.01)
        f.close()
        wrc = writer.wait(timeout=60)
        trc = tail.wait(timeout=30)
    finally:
        lib.stop_process(writer)
        lib.stop_process(tail)
    check("live: mpirun exits 0", wrc == 0, lib.tail_text(log("live.err")))
    distinct = sorted(set(counts))
    check("live: the SWMR reader saw the master grow", len(distinct) >= 5 and
          0 < distinct[1] < count, "distinct counts %s" % distinct[:10])
    check("live: the counts never shrink", all(a <= b for a, b in zip(counts, counts[1:])))
    check("live: every prefix seen is gap-free (frame_id 0..n-1)", not gaps, str(gaps[:3]))
    check("live: every frame seen has the right content", not wrong, str(wrong[:3]))
    with h5py.File(master, "r") as f:
        checks.equal("live: the final master has every frame", f[lib.DATA_PATH].shape[0], count)
    lines = [json.loads(x) for x in open(log("live_tail.out")) if x.strip()]
    check("live: tail -f exits 0 once the master is final", trc == 0,
          "rc %s: %s" % (trc, lib.tail_text(log("live_tail.err"))))
    check("live: tail -f printed frames 0..N-1 once each, in order",
          [x["index"] for x in lines] == list(range(count)) and
          [x["frame_id"] for x in lines] == list(range(count)),
          "%d lines, first %s" % (len(lines), [x["frame_id"] for x in lines[:5]]))

    # 5. Rank 2 killed mid-run, its shard recovered: the master shows every frame up to
    #    rank 2's last commit.
    master = log("kill.h5")
    block = 2
    writer = subprocess.Popen(
        mpirun + [p.bin, "ingest", "frames", "sim:ramp", "--shape", "16x24", "-n", "100000",
                  "--rate", "400", "--flush-ms", "30", "--block", str(block), "-o", master,
                  "-q"], stdout=open(log("kill.out"), "w"), stderr=open(log("kill.err"), "w"),
        env=env)
    victim = None
    try:
        deadline = time.monotonic() + 30
        shard2 = log("kill_2.h5")
        # Wait until rank 2 has committed some frames, then kill it.
        while time.monotonic() < deadline and victim is None:
            time.sleep(0.1)
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open("/proc/%s/environ" % pid, "rb") as e:
                        environ = e.read().split(b"\0")
                    with open("/proc/%s/cmdline" % pid, "rb") as c:
                        cmdline = c.read().split(b"\0")
                except OSError:
                    continue
                if (b"OMPI_COMM_WORLD_RANK=2" in environ and master.encode() in cmdline
                        and os.path.exists(shard2) and os.path.getsize(shard2) > 200000):
                    victim = int(pid)
                    os.kill(victim, signal.SIGKILL)
                    break
        writer.wait(timeout=60)
    finally:
        lib.stop_process(writer)
    if not check("kill: rank 2 found and killed with SIGKILL", victim is not None):
        return
    rc = run([p.bin, "recover", shard2], "kill_recover")
    check("kill: recover of rank 2's shard exits 0", rc == 0, lib.tail_text(log("kill_recover.err")))
    shard_counts = []
    for r in range(RANKS):
        shard = log("kill_%d.h5" % r)
        rc = 0 if r == 2 else run([p.bin, "recover", shard], "kill_recover_%d" % r)
        ids = shard_frame_ids(shard)
        shard_counts.append(len(ids))
        want = [global_of(i, r, RANKS, block) for i in range(len(ids))]
        check("kill: shard %d's frame_ids are its frames, in order" % r,
              rc == 0 and np.array_equal(ids, want), "%d frames" % len(ids))
    c2 = shard_counts[2]
    check("kill: rank 2 had committed frames before the kill", c2 > 0, str(shard_counts))
    prefix = min(global_of(shard_counts[r], r, RANKS, block) for r in range(RANKS))
    last2 = global_of(c2 - 1, 2, RANKS, block)
    f, ids = first_missing(master, lib.FRAME_ID_PATH)
    with f:
        n = ids.shape[0]
        checks.equal("kill: the master's first-missing view is the gap-free prefix", n, prefix,
                     "shard counts %s" % shard_counts)
        check("kill: it shows every frame up to rank 2's last commit (frame %d)" % last2,
              n > last2, "%d frames shown" % n)
        check("kill: frame_id 0..n-1", np.array_equal(ids[:], np.arange(n)))
        data = h5py.Dataset(h5py.h5d.open(f.id, lib.DATA_PATH.encode(), dapl=ids.id.get_access_plist()))
        bad = lib.first_mismatch(data[:n], lib.ramp_frames(0, n, SHAPE, np.uint16))
        check("kill: every frame shown has the right content", bad is None, bad or "")
    res = subprocess.run([p.bin, "tail", master, "--json"], capture_output=True, text=True,
                         env=env, timeout=60)
    shown = [json.loads(x)["frame_id"] for x in res.stdout.splitlines() if x.strip()]
    check("kill: h5stream tail of the master prints the same prefix",
          res.returncode == 0 and shown == list(range(prefix)),
          "rc %d, %d lines; %s" % (res.returncode, len(shown), res.stderr[-300:]))

    # 5b. `h5stream recover` of the master recovers every shard (again: they are closed
    #     now, so only read) and rewrites the master final, with fixed mappings.
    res = subprocess.run([p.bin, "recover", master], capture_output=True, text=True, env=env,
                         timeout=120)
    check("kill: recover of the master exits 0, a line per shard and the frames kept",
          res.returncode == 0 and res.stdout.count("was ") == RANKS
          and ("master rewritten final: %d frame" % prefix) in res.stdout,
          (res.stdout + res.stderr)[-600:])
    with h5py.File(master, "r") as f:  # a plain open: no SWMR, no view
        ids = f[lib.FRAME_ID_PATH][:]
        state = int(f["/h5stream/writer"][0]["state"])
        data = f[lib.DATA_PATH]
        checks.equal("kill: a plain reader of the final master sees exactly the prefix",
                     ids.shape[0], prefix)
        check("kill: the final master's frame_id is 0..n-1", np.array_equal(ids,
                                                                      np.arange(prefix)))
        bad = lib.first_mismatch(data[:prefix], lib.ramp_frames(0, prefix, SHAPE, np.uint16))
        check("kill: the final master's frames have the right content", bad is None, bad or "")
    checks.equal("kill: the final master says a shard was cut short (state 2)", state, 2)
    res = subprocess.run([p.bin, "info", master, "--json"], capture_output=True, text=True,
                         env=env, timeout=60)
    try:
        frames_info = json.loads(res.stdout)["frames"][0]
    except (ValueError, KeyError, IndexError):
        frames_info = {}
    check("kill: info says the master's data is virtual, one mapping per shard",
          res.returncode == 0 and frames_info.get("virtual_mappings") == RANKS
          and frames_info.get("committed") == prefix, res.stdout[-300:] + res.stderr[-200:])
    res = subprocess.run([p.bin, "tail", master, "-f", "--json", "--timeout", "20000"],
                         capture_output=True, text=True, env=env, timeout=60)
    shown = [json.loads(x)["frame_id"] for x in res.stdout.splitlines() if x.strip()]
    check("kill: tail -f of the final master prints the prefix and stops (state 2: exit 1)",
          res.returncode == 1 and shown == list(range(prefix)),
          "rc %d, %d lines; %s" % (res.returncode, len(shown), res.stderr[-300:]))

    # 6. Usage errors exit 2 before anything is written.
    for args, what in (([ "--rank", "1"], "--rank without --ranks"),
                       (["--rank", "4", "--ranks", "4"], "a rank not below --ranks"),
                       (["--ranks", "2", "--rank", "0", "--append"], "--append sharded")):
        res = subprocess.run([p.bin, "ingest", "frames", "sim:ramp", "-n", "3", "-o",
                              log("usage.h5")] + args, capture_output=True, text=True, env=env)
        check("usage: %s exits 2" % what, res.returncode == 2 and "h5stream:" in res.stderr
              and not os.path.exists(log("usage.h5")), "rc %d: %s" % (res.returncode,
                                                                     res.stderr.strip()[:200]))


if __name__ == "__main__":
    lib.run_main(body)
