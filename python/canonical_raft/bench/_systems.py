"""The systems under test: clusters of worker processes, and the C ceiling."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from ._proc import BenchError, Worker, free_ports, rss_kib, tail, terminate


class NodeCluster:
    """``n`` node processes of canonical-raft or PySyncObj on 127.0.0.1.

    Every throughput run ends with :meth:`verify`: each node's FSM must have
    counted exactly the commands acknowledged so far.
    """

    def __init__(self, system: str, n: int, root: str, *, name: str,
                 extra: dict | None = None, start_ids: list[int] | None = None) -> None:
        self.system = system
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir)
        ports = free_ports(n)
        self.cluster = {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(ports)}
        self.workers: dict[int, Worker] = {}
        self.acked = 0
        self.leader_id: int | None = None
        self._extra = extra or {}
        self._start_ids = start_ids or list(self.cluster)

    def __enter__(self) -> NodeCluster:
        try:
            for i in self.cluster:
                spec = {"system": self.system, "id": i,
                        "cluster": {str(k): v for k, v in self.cluster.items()},
                        "data_dir": os.path.join(self.dir, f"n{i}"), **self._extra}
                per_node = spec.pop("config_by_id", {})
                if i in per_node:
                    spec["config"] = per_node[i]
                self.workers[i] = Worker(spec, os.path.join(self.dir, f"n{i}.log"))
            for p in [self.workers[i].call_async("start") for i in self._start_ids]:
                p.get()
            self.leader_id = self.workers[self._start_ids[0]].call("leader")["leader"]
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for w in self.workers.values():
            w.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def leader(self) -> Worker:
        return self.workers[self.leader_id]

    def throughput(self, seconds: float, inflight: int, size: int) -> dict:
        before = {i: w.cpu() for i, w in self.workers.items()}
        r = self.leader.call("throughput", seconds=seconds, inflight=inflight, size=size)
        after = {i: w.cpu() for i, w in self.workers.items()}
        r["cpu_s"] = {i: after[i] - before[i] for i in before
                      if after[i] is not None and before[i] is not None}
        r["leader_cpu_s"] = r["cpu_s"].get(self.leader_id)
        self.acked += r["acked"]
        r["verified"] = self.verify(r)
        return r

    def latency(self, seconds: float, size: int) -> dict:
        r = self.leader.call("latency", seconds=seconds, size=size)
        self.acked += r["acked"]
        return r

    def verify(self, run: dict | None = None) -> dict:
        """Every running node's FSM count == acknowledged commands, or BenchError."""
        pending = {i: w.call_async("count", expected=self.acked)
                   for i, w in self.workers.items() if i in self._start_ids}
        counts = {i: p.get()["count"] for i, p in pending.items()}
        failed = (run or {}).get("failed", 0)
        if failed or any(c != self.acked for c in counts.values()):
            raise BenchError(f"{self.system}: FSM counts {counts} != {self.acked} acknowledged "
                             f"commands ({failed} failed: {(run or {}).get('errors')})")
        return {"acked": self.acked, "fsm_counts": counts}

    def rss(self) -> dict:
        return {i: w.rss() for i, w in self.workers.items()}


def ceiling_binary() -> str | None:
    """The installed craft_ceiling (canonical_raft/bin), or $CRAFT_CEILING."""
    env = os.environ.get("CRAFT_CEILING")
    if env:
        return env
    import canonical_raft
    path = Path(canonical_raft.__file__).parent / "bin" / "craft_ceiling"
    return str(path) if path.exists() else None


def run_ceiling(binary: str, root: str, *, nodes: int, batch: int, size: int,
                inflight: list[int], seconds: float, latency_seconds: float,
                name: str) -> dict:
    """One ceiling cluster: throughput at each in-flight value, then latency."""
    d = os.path.join(root, name)
    os.makedirs(d)
    ports = free_ports(nodes)
    cluster = ",".join(f"{i + 1}=127.0.0.1:{p}" for i, p in enumerate(ports))
    expect = os.path.join(d, "expect")
    procs, outs = {}, {}
    try:
        for i in range(1, nodes + 1):
            data = os.path.join(d, f"n{i}")
            os.makedirs(data)
            outs[i] = os.path.join(d, f"n{i}.out")
            with open(outs[i], "wb") as out, open(os.path.join(d, f"n{i}.log"), "wb") as err:
                procs[i] = subprocess.Popen(
                    [binary, "--id", str(i), "--dir", data, "--cluster", cluster,
                     "--batch", str(batch), "--size", str(size),
                     "--inflight", ",".join(map(str, inflight)), "--seconds", str(seconds),
                     "--latency-seconds", str(latency_seconds), "--expect-file", expect],
                    stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        budget = 60 + len(inflight) * (seconds + 10) + latency_seconds * 2
        deadline = time.monotonic() + budget
        result = None
        while result is None:
            for i, path in outs.items():
                for line in Path(path).read_text().splitlines():
                    if line.startswith("RESULT "):
                        result = json.loads(line[len("RESULT "):])
                        break
            if result is not None:
                break
            dead = [i for i, p in procs.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                codes = {i: procs[i].returncode for i in dead}
                raise BenchError(f"ceiling node(s) {dead or 'all'} "
                                 f"{f'exited (status {codes})' if dead else 'timed out'}; "
                                 f"log: {tail(os.path.join(d, f'n{(dead or [1])[0]}.log'))}")
            time.sleep(0.05)
        result["rss"] = {i: rss_kib(p.pid) for i, p in procs.items()}
        with open(expect + ".tmp", "w") as f:
            f.write(str(result["acked_total"]))
        os.replace(expect + ".tmp", expect)
        # Followers first: they learn the last commit index from the leader.
        leader = result["id"]
        for i, p in procs.items():
            if i != leader:
                p.send_signal(signal.SIGTERM)
        for i, p in procs.items():
            if i != leader:
                terminate(p, signalled=True)
        terminate(procs[leader])
        counts = {}
        for i, path in outs.items():
            for line in Path(path).read_text().splitlines():
                if line.startswith("COUNT "):
                    counts[i] = int(line.split()[1])
        result["verified"] = {"acked": result["acked_total"], "fsm_counts": counts}
        if (result.get("error") or result["failed_total"] or len(counts) != nodes
                or any(c != result["acked_total"] for c in counts.values())):
            raise BenchError(f"ceiling (batch {batch}): FSM counts {counts} != "
                             f"{result['acked_total']} acknowledged commands "
                             f"(failed {result['failed_total']}, error {result.get('error')})")
        return result
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(d, ignore_errors=True)


def run_snapshot_install(root: str, size: int, *, name: str) -> dict:
    """Time for a lagging node to catch up through a snapshot of ``size`` bytes.

    Nodes 1 and 2 of a 3-node canonical-raft cluster grow their FSM to ``size``
    bytes and compact their log; node 3 then starts empty and must install the
    snapshot. Measured: from node 3's start() to it having applied the leader's
    last index (the snapshot and what follows it).
    """
    # Nodes 1 and 2 snapshot often and keep few entries, so node 3 needs a snapshot.
    # Node 3 keeps the default threshold: libraft 0.22.1 dereferences NULL when an
    # InstallSnapshot was deferred behind a snapshot the node takes itself
    # (takeSnapshotCb in src/legacy.c clears snapshot_pending before reading it).
    config = {"snapshot_threshold": 32, "snapshot_trailing": 8}
    with NodeCluster("canonical-raft", 3, root, name=name,
                     extra={"config": config, "config_by_id": {3: {}}},
                     start_ids=[1, 2]) as c:
        grown = c.leader.call("grow", total=size, chunk=1024 * 1024, extra=100)
        t0 = time.perf_counter()
        r = c.workers[3].call("catch_up", index=grown["index"])
        wall = time.perf_counter() - t0
        rss = c.rss()
        if r["blob"] != size or r["count"] != grown["count"] or r["snapshots_restored"] < 1:
            raise BenchError(f"snapshot install of {size} bytes did not verify: {r} vs {grown}")
        return {"size": size, "seconds": r["seconds"], "wall_seconds": wall,
                "snapshots_restored": r["snapshots_restored"], "rss": rss}
