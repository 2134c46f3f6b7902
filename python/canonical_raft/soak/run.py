"""One soak run: start the cluster, load it, inject a fault every interval,
sample the processes; then heal, converge, check, and write the report.

    result = run_soak(SoakConfig(minutes=60), out="soak-out")
    result.ok, result.problems

The out dir gets ``samples.csv``, ``faults.json``, ``result.json``,
``soak.svg``, ``summary.md`` and ``cluster/`` (every node's log and data
dir; removed after a clean run unless ``keep``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..jepsen.cluster import ProxiedCluster
from .faults import KINDS, Faults
from .load import Load
from .report import write_summary, write_svg
from .sampler import Sampler, read_samples
from .verdict import Check, Tolerances, flatness

__all__ = ["SoakConfig", "SoakResult", "run_soak", "rerender", "main"]

SEGMENT_BYTES = 8 * 2**20   # libraft's open segment size (UV__MAX_SEGMENT_SIZE)


@dataclass
class SoakConfig:
    minutes: float = 60.0
    rate: float = 200.0                 # operations per second, all clients together
    clients: int = 4
    keys: int = 16                      # per client (each owns its keys)
    counters: int = 4                   # shared incr keys
    value_bytes: int = 100
    fault_every: float = 60.0           # seconds
    faults: tuple[str, ...] = KINDS
    down: float = 3.0                   # seconds a killed node stays down
    pause: float = 5.0                  # seconds a paused node stays stopped
    sample_every: float = 5.0
    snapshot_threshold: int = 512       # entries: a snapshot every ~2.5 s at 200 ops/s
    snapshot_trailing: int = 256
    journal_size: int = 2048            # the server's apply journal (bounded; see docs/soak.md)
    election_timeout: float = 1.0
    heartbeat_timeout: float = 0.1
    op_timeout: float = 10.0
    settle: float = 60.0                # RSS/fds of a process younger than this: not judged
    witness: int | None = 1
    seed: int = 1
    keep: bool = False
    tolerances: Tolerances | None = None   # default: from the config (see tolerances())

    @property
    def seconds(self) -> float:
        return self.minutes * 60.0

    def server_args(self) -> list[str]:
        return ["--snapshot-threshold", str(self.snapshot_threshold),
                "--snapshot-trailing", str(self.snapshot_trailing),
                "--journal-size", str(self.journal_size),
                "--election-timeout", str(self.election_timeout),
                "--heartbeat-timeout", str(self.heartbeat_timeout),
                "--apply-timeout", str(max(1.0, self.op_timeout / 2)),
                "--log-level", "WARNING"]

    def dir_cap(self) -> int:
        """A generous bound on one data dir: libraft's open segments (the one
        being written and the ones prepared ahead, ``SEGMENT_BYTES`` each, at
        most 4), the closed segments holding up to threshold + trailing
        entries, and two snapshots (libraft keeps the last two), each bounded
        by the key space; x2 for the moment between writing a new snapshot
        and deleting an old one."""
        entry = self.value_bytes + 200                     # command JSON + entry header
        state = (self.clients * self.keys + self.counters) * (self.value_bytes + 64) \
            + self.clients * 4096                          # + the client sessions
        entries = (self.snapshot_threshold + self.snapshot_trailing) * entry
        return 4 * SEGMENT_BYTES + 2 * (entries + 2 * state)

    def tolerances_(self) -> Tolerances:
        if self.tolerances is not None:
            return self.tolerances
        return Tolerances(fds_slack=self.clients + 4, dir_cap_bytes=self.dir_cap(),
                          settle_s=self.settle)


@dataclass
class SoakResult:
    ok: bool
    problems: list[str]
    checks: list[Check]
    ops: dict[str, int]
    errors: dict[str, int]
    faults: dict[str, int]
    fault_events: list[dict[str, Any]]
    snapshots: int
    seconds: float
    out: str
    extra: dict[str, Any] = field(default_factory=dict)


def run_soak(cfg: SoakConfig, out: str | Path) -> SoakResult:
    started = time.monotonic()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = out / "cluster"
    if base.exists():
        shutil.rmtree(base)
    problems: list[str] = []
    cluster = ProxiedCluster(base, 3, server_args=cfg.server_args(), proxied=False)
    load = Load(cluster.client_ports, clients=cfg.clients, rate=cfg.rate, keys=cfg.keys,
                counters=cfg.counters, value_bytes=cfg.value_bytes, op_timeout=cfg.op_timeout,
                seed=cfg.seed)
    sampler: Sampler | None = None
    faults: Faults | None = None
    converged = False
    replicas: dict[int, Any] = {}
    try:
        cluster.start_all(timeout=60)
        cluster.wait_leader(60)
        t0 = time.monotonic()
        sampler = Sampler(cluster, load, out / "samples.csv", t0, cfg.sample_every)
        faults = Faults(cluster, t0, interval=cfg.fault_every, kinds=cfg.faults,
                        down=cfg.down, pause=cfg.pause, witness=cfg.witness, seed=cfg.seed,
                        end=cfg.seconds)
        sampler.sample()
        load.start()
        sampler.start()
        faults.start()
        time.sleep(max(0.0, t0 + cfg.seconds - time.monotonic()))
        faults.stop()
        load.stop()
        sampler.sample()   # the last sample at the end of the load
        sampler.stop()
        replicas = _converge(cluster, problems)
        converged = bool(replicas)
    except Exception as exc:
        problems.append(f"harness error: {exc!r}")
    finally:
        if faults is not None and faults.is_alive():
            faults.stop()
        load.stop(timeout=0.0 if problems else None)
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        cluster.close()
    problems += cluster.postmortem()
    if faults is not None:
        problems += faults.problems
    problems += [f"client saw: {bug}" for bug in load.bugs]
    if converged:
        first = next(iter(replicas.values()))
        for node, data in replicas.items():
            if data != first:
                diff = sorted(k for k in set(data) | set(first) if data.get(k) != first.get(k))
                problems.append(f"replicas differ after convergence: node {node} on {diff[:10]}")
            problems += [f"node {node}: {p}" for p in load.check_final(data)]
    rows = sampler.rows if sampler is not None else []
    checks = flatness(rows, cluster.ids, cfg.tolerances_(), cfg.seconds)
    if rows and not any(c.early is not None for c in checks if c.metric == "rss_kb"):
        problems.append("no node had settled RSS samples in both quarters: no verdict on RSS")
    snapshots = sampler.snapshots_taken() if sampler is not None else 0
    if rows and snapshots == 0:
        problems.append("no snapshot was taken: the soak does not exercise snapshots")
    result = SoakResult(
        ok=not problems and all(c.ok for c in checks), problems=problems, checks=checks,
        ops=dict(load.ops), errors=dict(load.errors),
        faults=faults.counts() if faults is not None else {},
        fault_events=list(faults.events) if faults is not None else [],
        snapshots=snapshots, seconds=round(time.monotonic() - started, 1), out=str(out),
        extra={"config": {k: v for k, v in asdict(cfg).items() if k != "tolerances"},
               "tolerances": asdict(cfg.tolerances_()),
               "incr_acked": dict(load.incr_acked), "incr_indeterminate":
                   dict(load.incr_unknown)})
    with open(out / "faults.json", "w") as fh:
        json.dump(result.fault_events, fh, indent=1)
    with open(out / "result.json", "w") as fh:
        json.dump(asdict(result), fh, indent=1, default=str)
    write_svg(out / "soak.svg", rows, cluster.ids, result.fault_events, cfg.seconds)
    write_summary(out / "summary.md", result, rows, cluster.ids, cfg)
    if result.ok and not cfg.keep:
        shutil.rmtree(base, ignore_errors=True)
    return result


def _converge(cluster: ProxiedCluster, problems: list[str]) -> dict[int, Any]:
    """Every node up, a barrier write, all applied alike: each node's dict
    (empty on failure, with the problem noted)."""
    try:
        cluster.resume_all()
        for node, code in cluster.check_deaths():
            problems.append(f"node {node} died on its own (status {code})")
        for node in cluster.ids:
            if not cluster.is_running(node):
                cluster.start(node, timeout=60)
        cluster.wait_leader(60)
        with cluster.client(timeout=60) as client:
            client.set("__soak_end__", True)   # commits everything before it
        cluster.wait_converged(cluster.ids, timeout=60)
        return {node: cluster.dump(node)["data"] for node in cluster.ids}
    except (TimeoutError, OSError, RuntimeError, ValueError) as exc:
        problems.append(f"no convergence after the soak: {exc!r}")
        return {}


def rerender(out: str | Path) -> SoakResult:
    """Write ``soak.svg`` and ``summary.md`` again from a finished run's
    ``samples.csv``, ``faults.json`` and ``result.json`` (the verdict is
    recomputed from the samples, with the tolerances the run used)."""
    out = Path(out)
    saved = json.loads((out / "result.json").read_text())
    config = dict(saved["extra"]["config"])
    config["faults"] = tuple(config["faults"])
    cfg = SoakConfig(**config, tolerances=Tolerances(**saved["extra"]["tolerances"]))
    rows = read_samples(out / "samples.csv")
    ids = sorted({int(c.rsplit("_", 1)[1]) for c in rows[0] if c.startswith("rss_kb_")})
    checks = flatness(rows, ids, cfg.tolerances_(), cfg.seconds)
    events = json.loads((out / "faults.json").read_text())
    result = SoakResult(**{**saved, "checks": checks, "fault_events": events,
                           "ok": not saved["problems"] and all(c.ok for c in checks)})
    write_svg(out / "soak.svg", rows, ids, events, cfg.seconds)
    write_summary(out / "summary.md", result, rows, ids, cfg)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m canonical_raft.soak",
                                description="3 nodes under mixed load, snapshots and faults; "
                                            "RSS, open fds and data-dir size must stay flat")
    d = SoakConfig()
    p.add_argument("--minutes", type=float, default=d.minutes)
    p.add_argument("--out", required=True, help="directory for samples.csv, soak.svg, summary.md")
    p.add_argument("--report-only", action="store_true",
                   help="no run: write soak.svg and summary.md again from --out's files")
    p.add_argument("--rate", type=float, default=d.rate, help="operations/s, all clients")
    p.add_argument("--clients", type=int, default=d.clients)
    p.add_argument("--keys", type=int, default=d.keys, help="keys each client owns")
    p.add_argument("--value-bytes", type=int, default=d.value_bytes)
    p.add_argument("--fault-every", type=float, default=d.fault_every, help="seconds")
    p.add_argument("--faults", default=",".join(d.faults),
                   help=f"the cycle, comma-separated, among {','.join(KINDS)}")
    p.add_argument("--sample-every", type=float, default=d.sample_every, help="seconds")
    p.add_argument("--settle", type=float, default=d.settle,
                   help="seconds after a (re)start before a process's RSS and fds count")
    p.add_argument("--snapshot-threshold", type=int, default=d.snapshot_threshold)
    p.add_argument("--snapshot-trailing", type=int, default=d.snapshot_trailing)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--keep", action="store_true", help="keep the nodes' logs and data dirs")
    a = p.parse_args(argv)
    if a.report_only:
        result = rerender(a.out)
        print((Path(a.out) / "summary.md").read_text())
        return 0 if result.ok else 1
    cfg = SoakConfig(minutes=a.minutes, rate=a.rate, clients=a.clients, keys=a.keys,
                     value_bytes=a.value_bytes, fault_every=a.fault_every,
                     faults=tuple(f for f in a.faults.split(",") if f),
                     sample_every=a.sample_every, settle=a.settle,
                     snapshot_threshold=a.snapshot_threshold,
                     snapshot_trailing=a.snapshot_trailing, seed=a.seed, keep=a.keep)
    result = run_soak(cfg, a.out)
    print((Path(a.out) / "summary.md").read_text())
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
