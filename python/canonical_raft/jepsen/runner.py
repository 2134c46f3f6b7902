"""One fault schedule: cluster, clients and nemesis for ``time`` seconds, then
heal, settle the membership, converge, final reads on every member, checks,
post-mortem.

Snapshots are on (``snapshot_threshold``/``_trailing``); the journals the
checks need are harvested from every process during the run
(journals.Harvester). Membership moves change who is a member: the final
reads, convergence and journal checks cover the members of the final
configuration; removed nodes were stopped and their logs are still scanned.

    result = run_schedule(RunConfig(seed=7, time=30, nodes=3))
    result.ok, result.problems, result.artifacts

Everything random comes from ``seed`` (the fault schedule, which fault hits
which node, the clients' choices); thread timing does not repeat exactly.
The run directory keeps ``history.jsonl``, ``nemesis.jsonl``, ``summary.json``,
each node's log and data dir; it is removed after a clean run unless
``keep`` is set, and always kept (and named in ``problems``) after a failure.
"""

from __future__ import annotations

import json
import random
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ..checker import CASRegister, Event, check_history
from ..client import ClusterClient
from .cluster import ProxiedCluster, artifact_dir
from .history import Recorder
from .journals import Harvester, check_with_journals
from .disks import SmallDisks
from .nemesis import FAULTS, MEMBERSHIP_MOVES, Nemesis, restartable_faults
from .stats import summarize
from .workload import Workload

__all__ = ["RunConfig", "RunResult", "run_schedule", "final_reads"]


@dataclass
class RunConfig:
    seed: int
    time: float = 30.0
    nodes: int = 3
    clients: int = 5
    rate: float = 100.0
    keys: int = 8
    ops_per_key: int = 60
    faults: tuple[str, ...] = FAULTS
    interval: tuple[float, float] = (1.0, 2.5)
    election_timeout: float = 1.0
    heartbeat_timeout: float = 0.1
    op_timeout: float = 3.0           # a client gives up (info) after this
    check_time_limit: float = 60.0
    converge_timeout: float = 60.0
    artifacts: str | None = None      # parent of the run directory (default: the temp dir)
    keep: bool = False                # keep the run directory after a clean run
    engine: str = "uv"                # uv, asyncio, or mixed (cluster.engines_for)
    store: str = "memory"             # the asyncio nodes' store: memory or mdb
    forward: bool = False             # serve --forward; client n talks to node n only
    snapshot_threshold: int = 128     # a snapshot every this many entries...
    snapshot_trailing: int = 32       # ... keeping this many behind it
    harvest_interval: float = 1.0     # seconds between journal harvests
    small_disk_mib: int = 64          # disk-full: each uv node's data dir on a tmpfs this big

    def server_args(self) -> list[str]:
        return ["--election-timeout", str(self.election_timeout),
                "--heartbeat-timeout", str(self.heartbeat_timeout),
                "--apply-timeout", str(max(1.0, self.op_timeout - 1.0)),
                "--snapshot-threshold", str(self.snapshot_threshold),
                "--snapshot-trailing", str(self.snapshot_trailing),
                # disk-full: small segments, so that a node needs a new one often
                *(["--segment-size", str(1 << 20)] if "disk-full" in self.faults else [])]

    def spares(self) -> int:
        """Ids set aside for nodes the membership moves add: one per add, and
        a fault takes about 5 s (interval, then 3-6 s held), so this leaves
        room for a move in most of them; past it, adds are skipped (logged)."""
        if not set(self.faults) & set(MEMBERSHIP_MOVES):
            return 0
        return 3 + int(self.time / 6)


@dataclass
class RunResult:
    seed: int
    ok: bool
    problems: list[str]
    artifacts: str | None
    ops: dict[str, int]
    errors: dict[str, int]
    faults: dict[str, int]
    verdict: str                       # linearizability: ok / illegal / unknown
    keys: int
    new_leader_s: list[float]
    converge_s: float | None
    seconds: float
    explanation: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        converged = "never" if self.converge_s is None else f"{self.converge_s:.3f}s"
        engine = self.extra.get("engine", "uv")
        lines = [f"seed {self.seed} ({engine}): {'PASS' if self.ok else 'FAIL'} in "
                 f"{self.seconds:.1f}s; linearizability {self.verdict} over {self.keys} keys; "
                 f"ops {self.ops}; faults {self.faults}",
                 f"  new leader after a leader fault: {summarize(self.new_leader_s)}; "
                 f"converged {converged} after healing; raft checks "
                 f"{', '.join(self.extra.get('raft_checks') or ['none'])} on "
                 f"{self.extra.get('indexed_ops', 0)} indexed ops"]
        moves = self.extra.get("membership") or []
        if moves:
            done = sum(m["done"] for m in moves)
            lines.append(f"  membership: {done}/{len(moves)} changes took effect; members "
                         f"{self.extra.get('members')}, removed {self.extra.get('removed')}")
        lines.append(f"  snapshots (final processes): {self.extra.get('snapshots_taken', 0)} "
                     f"taken, {self.extra.get('snapshots_restored', 0)} restored; "
                     f"{self.extra.get('journals', 0)} process journals, "
                     f"{self.extra.get('unjournaled_indices', 0)} indices unjournaled")
        left_out = self.extra.get("faults_left_out")
        if left_out:
            lines.append(f"  left out: {', '.join(left_out)} ({next(iter(left_out.values()))})")
        if self.extra.get("forwarded"):
            lines.append(f"  forwarded by followers: {self.extra['forwarded']} requests "
                         "(since each node's last start)")
        if self.errors:
            lines.append(f"  client errors: {dict(sorted(self.errors.items()))}")
        for p in self.problems[:20]:
            lines.append(f"  PROBLEM: {p}")
        if self.artifacts:
            lines.append(f"  artifacts kept in {self.artifacts}")
        return "\n".join(lines)


def final_reads(cluster: ProxiedCluster, recorder: Recorder, keys: list[str],
                timeout: float) -> list[str]:
    """Read every key, into the history: through the leader with ``read_index``
    (a linearizable read that reports the index it was served at), then on
    every node.

    The server has no barrier on followers, so for the per-node reads: a write
    through the leader (a barrier: it commits only once everything before it
    has), then each node is waited for until it applied as far as any node
    had, then its whole dict is read (``dump``) and recorded as one read per
    key, spanning from before the barrier to after the dump. Returns problems
    (replicas that disagree).
    """
    problems: list[str] = []
    with cluster.client(timeout=timeout) as client:
        for key in keys:
            process = recorder.new_process()
            recorder.record(process, "invoke", "read", key)
            value, index = client.read_index(key)
            recorder.record(process, "ok", "read", key, value, index=index)
    t_call = time.monotonic_ns()
    with cluster.client(timeout=timeout) as client:
        client.set("__final_barrier__", t_call)
        barrier = client.last_index or 0   # the index the write was applied at
    # The node that acknowledged the write had applied it (at ``barrier``); the
    # leader may have changed since (a resumed node can start an election), and
    # a new leader may not have applied it yet: take the highest applied index
    # of all, and never less than the barrier's (a status can time out).
    # Anything applied anywhere is committed.
    target = max([barrier, *(s["last_applied"] for s in map(cluster.status, cluster.ids)
                             if s is not None)])
    dumps = {}
    deadline = time.monotonic() + timeout
    for node in cluster.ids:
        while True:
            status = cluster.status(node)
            if status is not None and status["last_applied"] >= target:
                dumps[node] = cluster.dump(node)
                break
            if time.monotonic() > deadline:
                problems.append(f"node {node} did not apply index {target} within {timeout}s "
                                f"(status {status})")
                break
            time.sleep(0.05)
    for node, dump in dumps.items():
        t_ret = time.monotonic_ns()
        for key in keys:
            process = recorder.new_process()
            recorder.add(Event(process=process, type="invoke", f="read", t=t_call, key=key,
                               node=node))
            recorder.add(Event(process=process, type="ok", f="read", t=t_ret, key=key,
                               value=dump["data"].get(key), node=node))
    first = next(iter(dumps.values()), None)
    for node, dump in dumps.items():
        if dump["data"] != first["data"]:
            diff = sorted(k for k in set(dump["data"]) | set(first["data"])
                          if dump["data"].get(k) != first["data"].get(k))
            problems.append(f"replicas differ after convergence: node {node} vs node "
                            f"{first['id']} on keys {diff[:10]}")
    return problems


class _Every(threading.Thread):
    """Calls ``fn()`` every ``interval`` seconds until stop()."""

    def __init__(self, interval: float, fn) -> None:
        super().__init__(name="jepsen-harvest", daemon=True)
        self.interval, self.fn = interval, fn
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.fn()

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join()


def _processes(cluster: ProxiedCluster) -> dict[int, int]:
    """{node: pid} of the live members (safe against the nemesis' changes)."""
    found = {}
    for i in list(cluster.ids):
        proc = cluster.procs.get(i)
        if proc is not None and proc.poll() is None and i not in cluster.paused:
            found[i] = proc.pid
    return found


def _bypass_check(cluster: ProxiedCluster, figures: dict) -> list[str]:
    """Every member's configuration names proxy ports only (else a peer could
    dial around the proxy); the snapshots the members took and installed."""
    if cluster.proxy is None:
        return []
    proxied = {cluster.advertised(i) for i in cluster.proxy.ports}
    problems = []
    taken = restored = 0
    for node in cluster.ids:
        status = cluster.status(node)
        if status is None:
            problems.append(f"node {node} gave no status for the proxy-bypass check")
            continue
        taken += status.get("snapshots_taken", 0)
        restored += status.get("snapshots_restored", 0)
        around = sorted(m["address"] for m in status.get("members", ())
                        if m["address"] not in proxied)
        if around:
            problems.append(f"node {node}'s configuration names {around}, not proxy ports: "
                            "traffic can bypass the proxy")
    figures.update(snapshots_taken=taken, snapshots_restored=restored)
    return problems


def run_schedule(cfg: RunConfig) -> RunResult:
    started = time.monotonic()
    base = artifact_dir(cfg.artifacts, f"jepsen-seed{cfg.seed}-")
    rng = random.Random(cfg.seed)
    recorder = Recorder()
    problems: list[str] = []
    cluster = ProxiedCluster(base, cfg.nodes, server_args=cfg.server_args(),
                             engine=cfg.engine, store=cfg.store, spares=cfg.spares(),
                             forward=cfg.forward)
    faults, left_out = restartable_faults(tuple(cfg.faults), cluster.all_durable())
    disks = None
    if "disk-full" in faults:
        disks = SmallDisks(cluster, cfg.small_disk_mib)
        why = disks.mount()
        if why is not None:
            faults = tuple(f for f in faults if f != "disk-full")
            left_out["disk-full"] = why
            disks = None
    engine = cfg.engine if cfg.engine == "uv" else f"{cfg.engine}, {cfg.store} store"
    workload = nemesis = None
    converge_s = None
    forwarded = 0
    verdict, explanation = "unknown", ""
    journals: dict = {}
    raft_checks: list[str] = []
    figures: dict[str, Any] = {}
    harvest_client = ClusterClient(cluster.client_ports, timeout=2.0, attempt_timeout=2.0)
    harvester = Harvester(harvest_client.request, lambda: _processes(cluster))
    harvesting = _Every(cfg.harvest_interval, harvester.harvest)
    try:
        if not faults:
            raise ValueError(f"no fault of {list(cfg.faults)} can run on this cluster: "
                             f"{left_out}")
        cluster.start_all(timeout=60)
        cluster.wait_leader(60)
        workload = Workload(cluster.client_ports, recorder, random.Random(rng.getrandbits(64)),
                            clients=cfg.clients, rate=cfg.rate, keys=cfg.keys,
                            ops_per_key=cfg.ops_per_key, op_timeout=cfg.op_timeout,
                            tag=f"s{cfg.seed}", forward=cfg.forward)
        nemesis = Nemesis(cluster, random.Random(rng.getrandbits(64)), faults=faults,
                          interval=cfg.interval, election_timeout=cfg.election_timeout,
                          harvest=harvester.harvest, disks=disks)
        workload.start()
        harvesting.start()
        nemesis.start()
        time.sleep(cfg.time)
        nemesis.stop()           # undoes its fault and heals
        workload.stop()
        nemesis.heal()           # again: a fault still held if stop() timed out
        t_heal = time.monotonic()
        try:
            cluster.wait_leader(cfg.converge_timeout)
            # Who the members are now (this commits everything before it).
            if nemesis.settle_membership(cfg.converge_timeout) is None:
                raise TimeoutError("the membership could not be read back")
            nemesis.heal()       # a member that is down comes back
            cluster.wait_converged(cluster.ids, cfg.converge_timeout)
            converge_s = time.monotonic() - t_heal
        except (TimeoutError, OSError, RuntimeError) as exc:
            problems.append(f"no convergence within {cfg.converge_timeout}s after healing: {exc}")
        if converge_s is not None:
            problems += final_reads(cluster, recorder, workload.keys.used, cfg.converge_timeout)
            # Requests followers forwarded (since each process last started).
            forwarded = sum(s.get("forwarded_sent", 0)
                            for s in map(cluster.status, cluster.ids) if s is not None)
            problems += _bypass_check(cluster, figures)
        harvesting.stop()
        harvester.harvest()
        journals = harvester.journals()
        processes = _processes(cluster)
        problems += [f"node {i}: no journal of its process {pid}"
                     for i, pid in processes.items() if f"{i}/{pid}" not in journals]
    except Exception as exc:
        problems.append(f"harness error: {exc!r}")
    finally:
        harvesting.stop()
        if nemesis is not None and nemesis.is_alive():
            nemesis.stop()
        if workload is not None:
            workload.stop()
        harvest_client.close()
        cluster.close()
        if disks is not None:  # (deleted with the run directory after a clean run)
            disks.release(keep=True)

    problems += cluster.postmortem()
    if cluster.proxy is not None:   # raft traffic really crossed the proxy, to every member
        used: dict[int, int] = {}
        for (_, dst), n in cluster.proxy.connections().items():
            used[dst] = used.get(dst, 0) + n
        unused = sorted(i for i in cluster.ids if not used.get(i))
        if unused:
            problems.append(f"no raft connection to nodes {unused} crossed the proxy "
                            "(bypassed?)")
    if nemesis is not None:
        problems += nemesis.problems + nemesis.leaderless
    if workload is not None:
        problems += workload.bugs
    ops = recorder.operations()
    if ops:
        lin = check_history(ops, CASRegister(), time_limit=cfg.check_time_limit)
        verdict, explanation = lin.verdict, lin.explanation
        if lin.verdict == "illegal":
            problems.append(f"NOT LINEARIZABLE: {lin.explanation}")
        elif lin.verdict == "unknown":
            problems.append(f"linearizability unknown (budget): {lin.explanation[:500]}")
        if journals:
            found, raft_checks = check_with_journals(ops, journals, merge=True,
                                                     gap_figures=figures)
            problems += [f"raft checks: {p}" for p in found[:20]]
            if len(found) > 20:
                problems.append(f"raft checks: ... and {len(found) - 20} more")
    else:
        problems.append("no operations were recorded")

    counts = recorder.counts()
    result = RunResult(
        seed=cfg.seed, ok=not problems, problems=problems, artifacts=None, ops=counts,
        errors=dict(workload.errors) if workload else {},
        faults=dict(nemesis.counts) if nemesis else {}, verdict=verdict,
        keys=len(workload.keys.used) if workload else 0,
        new_leader_s=list(nemesis.new_leader_s) if nemesis else [], converge_s=converge_s,
        seconds=time.monotonic() - started, explanation=explanation,
        extra={"engine": engine + (", forwarding" if cfg.forward else ""),
               "faults_left_out": left_out,
               "new_leader_by_fault": dict(nemesis.new_leader_by_fault) if nemesis else {},
               "raft_checks": raft_checks, "forwarded": forwarded,
               "members": list(cluster.ids), "removed": list(cluster.removed),
               "membership": list(nemesis.membership) if nemesis else [],
               "journals": len(journals), "harvest_failures": harvester.failures,
               **figures,
               "indexed_ops": sum(op.index is not None for op in ops),
               "journal_records": {n: len(j["entries"]) for n, j in journals.items()}})
    if problems or cfg.keep:
        recorder.save(str(base / "history.jsonl"))
        with open(base / "nemesis.jsonl", "w") as fh:
            for entry in (nemesis.timeline if nemesis else []):
                fh.write(json.dumps(entry) + "\n")
        with open(base / "summary.json", "w") as fh:
            json.dump({**asdict(result), "config": asdict(cfg)}, fh, indent=1, default=str)
        result.artifacts = str(base)
    else:
        shutil.rmtree(base, ignore_errors=True)
    return result
