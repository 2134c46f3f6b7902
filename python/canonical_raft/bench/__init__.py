"""The benchmark suite: canonical-raft side by side with PySyncObj and a C ceiling.

``python -m canonical_raft bench [--smoke | --quick | --full] [--json FILE] [--plot PNG]``

In one run on one machine: canonical-raft (uv engine, 64 B and 1 KiB commands;
in --quick and --full also the asyncio engine with a MemoryStore, on the
standard event loop and on uvloop, with the loop's lag under load),
PySyncObj (its default batching mode and its no-batching mode; it keeps its log
in memory and never fsyncs), and the C ceiling (benchmarks/ceiling/ceiling.c,
the same bundled libraft driven directly: one command per entry and 64 packed in
one entry), plus the machine's physical limits (fsync of a 4 KiB append,
loopback round trip). Every system runs as separate node processes on
127.0.0.1, the load inside the leader's process; every throughput run verifies
that each node's FSM counted exactly the acknowledged commands (a mismatch fails
the run). Timings are reported, never asserted: compare the ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time

from . import _limits, _report
from ._proc import BenchError
from ._large_state import run_large_state
from ._systems import NodeCluster, ceiling_binary, run_ceiling, run_snapshot_install

__all__ = ["main"]

MiB = 1024 * 1024
PSO_DURABILITY = "none: log in memory, no fsync"
OUR_DURABILITY = "fsync (O_DSYNC) per entry"
AIO_DURABILITY = "none: MemoryStore, no fsync"
#: The asyncio engine's rows (issue 9): event loop -> variant.
AIO_VARIANTS = {"asyncio": "asyncio, MemoryStore", "uvloop": "asyncio+uvloop, MemoryStore",
                "mdb": "asyncio, MDBStore"}
#: Issue 10's row: the asyncio engine (standard loop) on MDBStore, which syncs.
MDB_DURABILITY = "LMDB commit with sync per write"
#: FSM.snapshot()'s cost in the large-state scenario (issue 8's 47 MB FSM: 0.8-2.2 s).
LARGE_STATE_SNAPSHOT_DELAY = 1.0


@dataclasses.dataclass
class Plan:
    name: str
    seconds: float                # each throughput run
    latency_seconds: float        # each one-at-a-time run
    scale_seconds: float          # each extra in-flight point
    scale: tuple = ()             # extra in-flight points (1000 always runs)
    scale_pysyncobj: bool = False
    sizes: tuple = (64, 1024)     # canonical-raft command sizes
    pso_sizes: tuple = (64,)
    five_nodes: bool = False
    five_nodes_ceiling: bool = False
    snapshots: tuple = (1 * MiB,)
    limits_seconds: float = 1.0
    large_states: tuple = ()      # FSM sizes of the large-state scenario (_large_state.py)
    large_state_seconds: float = 10.0
    asyncio_engine: bool = False  # the asyncio engine's rows (standard loop and uvloop)


PLANS = {
    "smoke": Plan("smoke", 1.0, 1.0, 1.0, limits_seconds=0.5),
    "quick": Plan("quick", 3.0, 2.0, 1.5, scale=(1, 10, 100, 10000), five_nodes=True,
                  snapshots=(1 * MiB, 8 * MiB), large_states=(50 * MiB,),
                  asyncio_engine=True),
    "full": Plan("full", 10.0, 10.0, 5.0, scale=(1, 10, 100, 10000), scale_pysyncobj=True,
                 pso_sizes=(64, 1024), five_nodes=True, five_nodes_ceiling=True,
                 snapshots=(1 * MiB, 64 * MiB), limits_seconds=3.0,
                 large_states=(0, 50 * MiB), large_state_seconds=20.0, asyncio_engine=True),
}


class Progress:
    """One progress line on stderr (rewritten in place on a terminal)."""

    def __init__(self, total: int) -> None:
        self.total, self.n, self.t0 = total, 0, time.monotonic()
        self.tty = sys.stderr.isatty()

    def __call__(self, msg: str) -> None:
        self.n += 1
        e = int(time.monotonic() - self.t0)
        line = f"[{self.n:>2}/{self.total} {e // 60}:{e % 60:02d}] {msg}"
        if self.tty:
            sys.stderr.write("\r\x1b[2K" + line[:150])
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
        e = time.monotonic() - self.t0
        sys.stderr.write(f"benchmark finished in {e:.0f} s\n")


def machine_info(root: str) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import canonical_raft
    try:
        from importlib.metadata import version
        pso = version("pysyncobj")
    except Exception:
        pso = None
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "canonical_raft": canonical_raft.__version__,
            "libraft": canonical_raft.__libraft_version__, "pysyncobj": pso,
            "filesystem": _limits.filesystem_of(root), "loadavg_start": _loadavg(),
            "summary": f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, "
                       f"Python {platform.python_version()}"}


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="canonical-raft bench", description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--smoke", dest="mode", action="store_const", const="smoke",
                      help="the smallest run of everything (about a minute; for tests)")
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="about 2 minutes; the default, used by CI as a smoke test")
    mode.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="10 s per run, every scale point, 64 MiB snapshot (~6-8 min)")
    p.set_defaults(mode="quick")
    p.add_argument("--seconds", type=float, help="override the length of each timed run")
    p.add_argument("--json", metavar="FILE", help="write all results as JSON ('-': stdout)")
    p.add_argument("--plot", metavar="PNG", help="chart of throughput vs in-flight (matplotlib)")
    p.add_argument("--dir", metavar="DIR",
                   help="where the data dirs go (default: a temp dir); its filesystem is measured")
    p.add_argument("--no-pysyncobj", action="store_true", help="leave PySyncObj out")
    p.add_argument("--no-asyncio-engine", action="store_true",
                   help="leave the asyncio engine's rows out (--quick and --full)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the suite; print the table; return 0, or 1 if anything failed to verify."""
    args = build_parser().parse_args(argv)
    plan = dataclasses.replace(PLANS[args.mode])
    if args.seconds is not None:
        if args.seconds <= 0:
            build_parser().error("--seconds must be positive")
        plan.seconds = plan.latency_seconds = args.seconds
        plan.scale_seconds = min(plan.scale_seconds, args.seconds)
    pso = not args.no_pysyncobj
    if pso:
        try:
            import pysyncobj  # noqa: F401
        except ImportError:
            print("PySyncObj is not installed (pip install pysyncobj); it is left out of this "
                  "run (--no-pysyncobj to silence this)", file=sys.stderr)
            pso = False
    if args.no_asyncio_engine:
        plan.asyncio_engine = False
    loops = _aio_loops() if plan.asyncio_engine else []
    if args.dir:
        os.makedirs(args.dir, exist_ok=True)
    root = tempfile.mkdtemp(prefix="craft-bench-", dir=args.dir)
    results = {"mode": plan.name, "plan": dataclasses.asdict(plan), "machine": machine_info(root),
               "limits": {}, "runs": [], "latency": [], "snapshots": [], "large_state": [],
               "rss": [], "errors": [], "notes": []}
    if plan.asyncio_engine and "uvloop" not in loops:
        results["notes"].append("uvloop is not installed (pip install uvloop): the asyncio "
                                "engine ran on the standard loop only")
    try:
        _run(plan, pso, loops, root, results)
    except KeyboardInterrupt:
        results["errors"].append("interrupted")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    results["machine"]["loadavg_end"] = _loadavg()
    results["rows"] = _report.rows(results)
    results["targets"] = _report.targets(results)
    results["asyncio_engine"] = _report.asyncio_engine(results)
    if args.json == "-":
        _report.print_table(results, file=sys.stderr)
        json.dump(results, sys.stdout, indent=2, default=str)
        print()
    else:
        _report.print_table(results)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2, default=str)
    if args.plot:
        why_not = _report.plot(results, args.plot)
        print(why_not or f"chart written to {args.plot}", file=sys.stderr)
    return 1 if results["errors"] else 0


def _aio_loops() -> list[str]:
    loops = ["asyncio"]
    try:
        import uvloop  # noqa: F401
    except ImportError:
        print("uvloop is not installed (pip install uvloop): the asyncio engine runs on the "
              "standard loop only", file=sys.stderr)
    else:
        loops.append("uvloop")
    try:
        import lmdb  # noqa: F401
    except ImportError:
        print("lmdb is not installed (pip install lmdb): no MDBStore row", file=sys.stderr)
    else:
        loops.append("mdb")  # the standard loop, on MDBStore
    return loops


def _count_steps(plan: Plan, pso: bool, ceiling: bool, loops: list[str]) -> int:
    n = 1  # limits
    if ceiling:
        n += 2 + (1 if plan.five_nodes_ceiling else 0)
    n += 1 + len(plan.scale) + 2 * len(plan.sizes) + 6  # canonical-raft 3 nodes (+ issue 11)
    n += 3 if plan.five_nodes else 0
    n += 3 * len(loops)
    if pso:
        n += 2 * (1 + 2 * len(plan.pso_sizes) + (len(plan.scale) if plan.scale_pysyncobj else 0))
    return n + len(plan.snapshots) + len(plan.large_states)


def _run(plan: Plan, pso: bool, loops: list[str], root: str, results: dict) -> None:
    binary = ceiling_binary()
    if binary is None:
        results["errors"].append("the C ceiling (canonical_raft/bin/craft_ceiling) is not "
                                  "installed: build the package with `pip install .`")
    progress = Progress(_count_steps(plan, pso, binary is not None, loops))

    def attempt(what: str, fn) -> None:
        try:
            fn()
        except BenchError as exc:
            results["errors"].append(f"{what}: {exc}")
            print(f"\nFAILED {what}: {exc}", file=sys.stderr)

    progress(f"physical limits: fsync of 4 KiB appends on {results['machine']['filesystem']}, "
             "loopback round trip")
    results["limits"] = {
        "fsync_append": _limits.fsync_append(root, plan.limits_seconds),
        "dsync_prealloc": _limits.dsync_prealloc(root, plan.limits_seconds),
        "loopback_rtt": _limits.loopback_rtt(plan.limits_seconds)}

    if binary is not None:
        for batch, nodes in ((1, 3), (64, 3)) + (((64, 5),) if plan.five_nodes_ceiling else ()):
            variant = f"{batch}/entry"
            attempt(f"ceiling {variant}, {nodes} nodes",
                    lambda b=batch, n=nodes, v=variant: _ceiling(plan, binary, root, results,
                                                                 b, n, v, progress))

    for nodes in (3, 5) if plan.five_nodes else (3,):
        attempt(f"canonical-raft, {nodes} nodes",
                lambda n=nodes: _nodes(plan, "canonical-raft", "uv engine", {}, n, root, results,
                                       progress, OUR_DURABILITY))
    for loop in loops:
        attempt(f"canonical-raft ({AIO_VARIANTS[loop]})",
                lambda lp=loop: _asyncio_engine(plan, lp, root, results, progress))
    if pso:
        for variant, batching in (("batching", True), ("no batching", False)):
            attempt(f"pysyncobj {variant}",
                    lambda v=variant, b=batching: _nodes(plan, "pysyncobj", v, {"batching": b}, 3,
                                                         root, results, progress, PSO_DURABILITY))
    for size in plan.snapshots:
        progress(f"canonical-raft: install a {size // MiB} MiB snapshot on a lagging node")
        attempt(f"snapshot {size // MiB} MiB", lambda s=size: results["snapshots"].append(
            run_snapshot_install(root, s, name=f"snap-{s}")))
    for size in plan.large_states:
        delay = LARGE_STATE_SNAPSHOT_DELAY if size else 0.0
        progress(f"canonical-raft: {size // MiB} MiB state, snapshot() taking {delay:g} s, "
                 f"1000 in flight for {plan.large_state_seconds:g} s")
        attempt(f"large state {size // MiB} MiB", lambda s=size, d=delay: results[
            "large_state"].append(run_large_state(root, s, seconds=plan.large_state_seconds,
                                                  snapshot_delay=d, name=f"large-{s}")))
    progress.done()


def _ceiling(plan, binary, root, results, batch, nodes, variant, progress) -> None:
    inflight = [1000] + ([] if nodes != 3 else list(plan.scale))
    progress(f"C ceiling {variant}, {nodes} nodes: throughput at {inflight} in flight, "
             f"then one at a time")
    r = run_ceiling(binary, root, nodes=nodes, batch=batch, size=64, inflight=inflight,
                    seconds=plan.seconds, latency_seconds=plan.latency_seconds,
                    name=f"ceiling-{batch}-{nodes}")
    for ph in r["phases"]:
        results["runs"].append({"system": "ceiling", "variant": variant, "nodes": nodes,
                                "size": 64, "durability": OUR_DURABILITY,
                                "verified": r["verified"], **ph})
    results["latency"].append({"system": "ceiling", "variant": variant, "nodes": nodes,
                               "size": 64, **r["latency"]})
    results["rss"].append({"what": f"ceiling {variant}, {nodes} nodes", "nodes": r["rss"]})


def _nodes(plan, system, variant, extra, nodes, root, results, progress, durability) -> None:
    is_pso = system == "pysyncobj"
    sizes = plan.pso_sizes if is_pso else plan.sizes
    if nodes != 3:
        sizes = sizes[:1]
    scale = plan.scale if (nodes == 3 and (not is_pso or plan.scale_pysyncobj)) else ()
    name = f"{system} ({variant})"
    progress(f"{name}, {nodes} nodes: starting")
    with NodeCluster(system, nodes, root, name=f"{system}-{len(results['runs'])}".replace(" ", ""),
                     extra=extra) as c:
        for size in sizes:
            points = [1000] + list(scale if size == 64 else ())
            for inflight in points:
                secs = plan.seconds if inflight == 1000 else plan.scale_seconds
                progress(f"{name}, {nodes} nodes: throughput, {inflight} in flight, "
                         f"{_report.size_label(size)}, {secs:g} s")
                r = c.throughput(secs, inflight, size)
                r.pop("errors", None)
                results["runs"].append({"system": system, "variant": variant, "nodes": nodes,
                                        "size": size, "durability": durability, **r})
                if inflight == 1000 and size == sizes[0]:
                    results["rss"].append({"what": f"{name}, {nodes} nodes, after "
                                                   f"1000 in flight", "nodes": c.rss()})
            if not is_pso and nodes == 3 and size == 64:
                _issue11_rows(plan, c, results, progress, name, durability)
            progress(f"{name}, {nodes} nodes: one apply at a time, {_report.size_label(size)}, "
                     f"{plan.latency_seconds:g} s")
            lat = c.latency(plan.latency_seconds, size)
            c.verify()
            results["latency"].append({"system": system, "variant": variant, "nodes": nodes,
                                       "size": size, **lat})


def _asyncio_engine(plan, loop, root, results, progress) -> None:
    """3 asyncio-engine nodes (MemoryStore), each on its process's own event
    loop; the load, 1000 tasks awaiting apply() on the leader's loop, and the
    lag of that loop (how late a 1 ms sleep wakes up) meanwhile."""
    variant = AIO_VARIANTS[loop]
    name = f"canonical-raft ({variant})"
    event_loop, store = ("asyncio", "mdb") if loop == "mdb" else (loop, "memory")
    durability = MDB_DURABILITY if store == "mdb" else AIO_DURABILITY
    progress(f"{name}, 3 nodes: starting")
    with NodeCluster("canonical-raft", 3, root, name=f"aio-{loop}-{len(results['runs'])}",
                     extra={"engine": "asyncio", "loop": event_loop, "store": store}) as c:
        progress(f"{name}: 1000 tasks awaiting apply(), 64 B, {plan.seconds:g} s, "
                 f"loop lag probed")
        r = c.throughput(plan.seconds, 1000, 64)
        r.pop("errors", None)
        results["runs"].append({"system": "canonical-raft", "variant": variant, "nodes": 3,
                                "size": 64, "durability": durability, "loop": loop, **r})
        results["rss"].append({"what": f"{name}, 3 nodes, after 1000 in flight",
                               "nodes": c.rss()})
        progress(f"{name}: one await apply() at a time, 64 B, {plan.latency_seconds:g} s")
        lat = c.latency(plan.latency_seconds, 64)
        c.verify()
        results["latency"].append({"system": "canonical-raft", "variant": variant, "nodes": 3,
                                   "size": 64, **lat})


def _issue11_rows(plan, c, results, progress, name, durability) -> None:
    """apply_many, asyncio vs threads at 2,000 and 10,000, and the hops of one apply."""
    secs = plan.scale_seconds
    base = {"system": "canonical-raft", "nodes": 3, "size": 64, "durability": durability}

    def run(cmd: str, **kw) -> dict:
        before = c.leader.cpu()
        r = c.leader.call(cmd, **kw)
        after = c.leader.cpu()
        c.acked += r.get("acked", 0)
        r.pop("errors", None)
        if before is not None and after is not None and r.get("acked"):
            r["leader_cpu_us"] = 1e6 * (after - before) / r["acked"]
        return r

    progress(f"{name}: apply_many, 1000 in flight, {secs:g} s")
    r = run("throughput_many", seconds=secs, inflight=1000, size=64)
    results["runs"].append({**base, "variant": "uv engine, apply_many", "verified": c.verify(r),
                            **r, "leader_cpu_s": r.get("leader_cpu_us", 0) * r["acked"] / 1e6,
                            "cpu_s": {}})
    results["aio"] = []
    for tasks in (2000, 10000):
        progress(f"{name}: {tasks} applies in flight from a thread, then {tasks} asyncio tasks")
        thr = run("throughput", seconds=secs, inflight=tasks, size=64)
        aio = run("aio", seconds=secs, tasks=tasks, size=64)
        c.verify()
        results["aio"].append({"tasks": tasks, "thread_applies_per_s": thr["applies_per_s"],
                               "aio_applies_per_s": aio["applies_per_s"],
                               "vs_thread": aio["applies_per_s"] / thr["applies_per_s"]
                               if thr["applies_per_s"] else None,
                               "lag_p50_ms": aio["lag_p50_ms"], "lag_p99_ms": aio["lag_p99_ms"],
                               "lag_max_ms": aio["lag_max_ms"],
                               "aio_cpu_us": aio.get("leader_cpu_us"),
                               "thread_cpu_us": thr.get("leader_cpu_us")})
    progress(f"{name}: one apply at a time, timestamped at every hop")
    results["hops"] = run("hops", seconds=plan.latency_seconds, size=64)
