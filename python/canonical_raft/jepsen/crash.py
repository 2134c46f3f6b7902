"""Crash points: SIGKILL at random moments while writes are in flight, restart,
and check what survived.

Kinds of crash point (``KINDS``), each on its own cluster (no proxy), kept
across its cycles so the data dirs grow as they would in service:

=========  ===================================================================
single     a 1-node cluster; kill -9 it
all        3 nodes; kill -9 all of them at once ("coordinated crash")
leader     3 nodes; kill -9 the leader (the others carry on), restart it
snapshot   3 nodes, snapshot threshold 32 (a snapshot every ~32 writes, so
           kills land during snapshot creation); kill -9 all at once
install    3 nodes, threshold 32: a follower is killed, the others write past
           several snapshots, the follower restarts and must install one; it is
           killed again 0-1 s into its catch-up (during the install), restarted
close      3 nodes; SIGTERM all (a clean close()) then SIGKILL 0-300 ms later
=========  ===================================================================

Each cycle: ``writers`` clients write ``w<i>-<n> = n`` for n = 1, 2, ... (one
write in flight per client); after a uniform 50-1,500 ms the kill; restart;
a write through the new leader (a barrier); wait until every node applied the
same index and holds the same dict. Then, per client:

* every acknowledged write is present (no lost write);
* the writes present are exactly ``1..m``: a prefix of that client's order,
  hence of the log order (a client's writes enter the log in its order), with
  no hole;
* ``m`` is at most the last write the client invoked (nothing never invoked);
* every restart succeeded, nothing died on its own, no fatal line in a log.

Every kind restarts killed processes, so every node's state must outlive its
process: the uv engine, or the asyncio engine on ``store="mdb"``. On
asyncio with a MemoryStore, ``run_crash_points`` refuses to run (a problem,
naming why) rather than restart nodes with no memory of their votes.

What is not checked without the raft log (see docs/reliability.md): the order
between writes of different clients that were in flight together.
"""

from __future__ import annotations

import json
import random
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..client import ClusterClient
from ..errors import RaftError
from ..checker.raft_checks import replica_divergence
from .cluster import ProxiedCluster, artifact_dir
from .journals import fetch_journals, journal_tuples
from .stats import summarize

__all__ = ["CrashConfig", "CrashResult", "run_crash_points", "KINDS"]

KINDS = ("single", "all", "leader", "snapshot", "install", "close")
_SIZE = {"single": 1}
_SMALL_SNAPSHOTS = ("snapshot", "install")


@dataclass
class CrashConfig:
    seed: int
    points: int = 20                  # spread over the kinds, in rotation
    kinds: tuple[str, ...] = KINDS
    writers: int = 3
    delay: tuple[float, float] = (0.05, 1.5)
    election_timeout: float = 0.5
    heartbeat_timeout: float = 0.05
    wait: float = 60.0
    artifacts: str | None = None
    keep: bool = False
    engine: str = "uv"                # uv, asyncio, or mixed (cluster.engines_for)
    store: str = "memory"             # the asyncio nodes' store: only mdb restarts


@dataclass
class CrashResult:
    seed: int
    ok: bool
    points: dict[str, int]
    acked: int
    problems: list[str]
    recovery_s: list[float]
    snapshots: dict[str, int]          # snapshots taken by the processes that were killed
    seconds: float
    artifacts: str | None = None
    cycles: list[dict] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"crash points seed {self.seed}: {'PASS' if self.ok else 'FAIL'} in "
                 f"{self.seconds:.1f}s; points {self.points}; {self.acked} acknowledged "
                 f"writes checked; snapshots {self.snapshots}",
                 f"  restart to converged: {summarize(self.recovery_s)}"]
        lines += [f"  PROBLEM: {p}" for p in self.problems[:20]]
        if self.artifacts:
            lines.append(f"  artifacts kept in {self.artifacts}")
        return "\n".join(lines)


class _Writer(threading.Thread):
    def __init__(self, ports: dict[int, int], prefix: str) -> None:
        super().__init__(daemon=True, name=f"crash-writer-{prefix}")
        self.client = ClusterClient(ports, timeout=1.5, attempt_timeout=1.0,
                                    client_id=prefix)
        self.prefix = prefix
        self.acked: list[int] = []
        self.invoked = 0
        self.halt = threading.Event()

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                n = self.invoked + 1
                self.invoked = n
                try:
                    self.client.set(f"{self.prefix}-{n}", n)
                except (RaftError, OSError, ValueError):
                    return   # indeterminate: this client is done for the cycle
                self.acked.append(n)
        finally:
            self.client.close()


def _check(data: dict, writers: list[_Writer]) -> tuple[list[str], int]:
    problems, acked = [], 0
    for w in writers:
        present = sorted(int(k.rsplit("-", 1)[1]) for k in data
                         if k.startswith(w.prefix + "-"))
        acked += len(w.acked)
        m = present[-1] if present else 0
        lost = sorted(set(w.acked) - set(present))
        if lost:
            problems.append(f"{w.prefix}: acknowledged writes lost: {lost[:10]} "
                            f"({len(lost)} of {len(w.acked)})")
        if present != list(range(1, m + 1)):
            holes = sorted(set(range(1, m + 1)) - set(present))
            problems.append(f"{w.prefix}: not a prefix: writes {holes[:10]} missing below {m}")
        if m > w.invoked:
            problems.append(f"{w.prefix}: write {m} present but only {w.invoked} invoked")
        wrong = [k for k in data if k.startswith(w.prefix + "-")
                 and data[k] != int(k.rsplit("-", 1)[1])]
        if wrong:
            problems.append(f"{w.prefix}: wrong values at {wrong[:5]}")
    return problems, acked


class _Kind:
    """One cluster and its cycles."""

    def __init__(self, kind: str, cfg: CrashConfig, base: Path, rng: random.Random) -> None:
        self.kind, self.cfg, self.rng = kind, cfg, rng
        args = ["--election-timeout", str(cfg.election_timeout),
                "--heartbeat-timeout", str(cfg.heartbeat_timeout)]
        args += (["--snapshot-threshold", "32", "--snapshot-trailing", "8"]
                 if kind in _SMALL_SNAPSHOTS else
                 ["--snapshot-threshold", "256", "--snapshot-trailing", "64"])
        self.cluster = ProxiedCluster(base / kind, _SIZE.get(kind, 3), server_args=args,
                                      proxied=False, engine=cfg.engine, store=cfg.store)
        self.cluster.start_all(timeout=cfg.wait)
        self.cycle = 0
        self.snapshots = 0

    def _start(self, nodes: list[int]) -> None:
        spawned = [i for i in nodes if not self.cluster.is_running(i)]
        for i in spawned:   # all first: they start in parallel
            self.cluster.spawn(i)
        for i in spawned:
            self.cluster.wait_ready(i, self.cfg.wait)

    def run_cycle(self) -> dict:
        cfg, cluster, rng = self.cfg, self.cluster, self.rng
        self.cycle += 1
        tag = f"{self.kind}{self.cycle}"
        cluster.wait_leader(cfg.wait)
        writers = [_Writer(cluster.client_ports, f"{tag}w{i}") for i in range(cfg.writers)]
        lagging = None
        if self.kind == "install":
            leader = cluster.wait_leader(cfg.wait)
            lagging = rng.choice([i for i in cluster.ids if i != leader["id"]])
            cluster.kill(lagging)
        for w in writers:
            w.start()
        delay = rng.uniform(*cfg.delay)
        if self.kind == "install":
            time.sleep(1.0)                 # the others move several snapshots on
            cluster.start(lagging, cfg.wait)
            delay = rng.uniform(0.0, 1.0)   # then kill it during its catch-up
        time.sleep(delay)
        # What the processes about to die did (counters restart with a process).
        before = {i: cluster.status(i) or {} for i in cluster.running()}
        snapshots = sum(st.get("snapshots_taken", 0) for st in before.values())
        self.snapshots += snapshots
        installing = None
        if lagging is not None:
            installing = before.get(lagging, {}).get("snapshots_restored", 0) < 2
        victims = self._kill(lagging)
        for w in writers:
            w.halt.set()
        for w in writers:
            w.join(cfg.wait)
        t0 = time.monotonic()
        self._start(cluster.ids)
        cluster.wait_leader(cfg.wait)
        with cluster.client(timeout=cfg.wait) as client:
            client.set(f"{tag}-barrier", True)
        state = cluster.wait_converged(cluster.ids, cfg.wait)
        recovery = time.monotonic() - t0
        problems, acked = _check(state["data"], writers)
        # Every node's apply journal (since its process started, from its
        # snapshot or from index 1): consecutive, and equal where they overlap.
        with cluster.client(timeout=cfg.wait) as client:
            journals, missing = fetch_journals(client, cluster.ids, cfg.wait, commands=False)
        problems += missing
        problems += [str(p) for p in replica_divergence(
            {i: journal_tuples(j) for i, j in journals.items()})][:10]
        restores = sum(1 for j in journals.values() for r in j["entries"] if "restore" in r)
        return {"kind": self.kind, "cycle": self.cycle, "delay_s": round(delay, 3),
                "killed": victims, "acked": acked, "snapshots_in_cycle": snapshots,
                "killed_before_install_done": installing, "journal_restores": restores,
                "invoked": sum(w.invoked for w in writers), "recovery_s": round(recovery, 3),
                "problems": problems}

    def _kill(self, lagging: int | None) -> list[int]:
        cluster = self.cluster
        if self.kind in ("single", "all", "snapshot"):
            victims = cluster.running()
            cluster.kill_all()
        elif self.kind == "leader":
            leader = cluster.leader()
            victims = [leader["id"] if leader else self.rng.choice(cluster.running())]
            cluster.kill(victims[0])
        elif self.kind == "install":
            victims = [lagging]
            cluster.kill(lagging)
        else:  # close: SIGTERM everyone, SIGKILL while they close
            victims = cluster.running()
            for i in victims:
                cluster.procs[i].terminate()
            time.sleep(self.rng.uniform(0.0, 0.3))
            for i in victims:
                cluster.kill(i)
        return victims

    def close(self) -> list[str]:
        self.cluster.close()
        # Exit statuses after a kill mid-close are not the node's fault; the
        # final SIGTERM of close() must still give 0.
        return self.cluster.postmortem()


def run_crash_points(cfg: CrashConfig) -> CrashResult:
    started = time.monotonic()
    base = artifact_dir(cfg.artifacts, f"jepsen-crash-seed{cfg.seed}-")
    rng = random.Random(cfg.seed)
    plan = [cfg.kinds[n % len(cfg.kinds)] for n in range(cfg.points)]
    kinds: dict[str, _Kind] = {}
    problems: list[str] = []
    cycles: list[dict] = []
    points: dict[str, int] = {}
    if cfg.engine != "uv" and cfg.store != "mdb":
        plan = []
        problems.append(f"crash points restart killed processes: engine {cfg.engine!r} "
                        f"needs a durable store (store='mdb'), not {cfg.store!r}")
    try:
        for kind in plan:
            try:
                if kind not in kinds:
                    kinds[kind] = _Kind(kind, cfg, base, random.Random(rng.getrandbits(64)))
                cycle = kinds[kind].run_cycle()
            except Exception as exc:
                problems.append(f"{kind}: cycle failed (restart or convergence): {exc!r}")
                break
            cycles.append(cycle)
            points[kind] = points.get(kind, 0) + 1
            problems += [f"{kind} cycle {cycle['cycle']}: {p}" for p in cycle["problems"]]
            if cycle["problems"]:
                break
    finally:
        for k in kinds.values():
            try:
                problems += [f"{k.kind}: {p}" for p in k.close()]
            except Exception as exc:
                problems.append(f"{k.kind}: close failed: {exc!r}")
    result = CrashResult(
        seed=cfg.seed, ok=not problems, points=points,
        acked=sum(c["acked"] for c in cycles), problems=problems,
        recovery_s=[c["recovery_s"] for c in cycles],
        snapshots={k: v.snapshots for k, v in kinds.items()},
        seconds=time.monotonic() - started, cycles=cycles)
    if problems or cfg.keep:
        with open(base / "summary.json", "w") as fh:
            json.dump({**asdict(result), "config": asdict(cfg)}, fh, indent=1, default=str)
        result.artifacts = str(base)
    else:
        shutil.rmtree(base, ignore_errors=True)
    return result
