"""python -m canonical_raft.jepsen --seed N --time 30 --nodes 3 [--runs R] [--crash-points P]
    [--engine uv|asyncio|mixed] [--store memory|mdb]

Runs seeded fault schedules (seeds N .. N+R-1; --time 0 for none) and, with
--crash-points, that many crash points, and prints a summary per run plus
the liveness figures over all of them. ``--engine asyncio`` (or ``mixed``: odd
ids uv, even ids asyncio) runs the asyncio-engine nodes on ``--store``; with
``memory`` the faults that restart a process (kill-leader, kill-random,
restart-all) and the crash points are left out, as such a node cannot restart.
Exit status 0 when everything passed, 1 on a failure (the seed and the kept
artifacts are printed).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from .cluster import ENGINES
from .crash import KINDS, CrashConfig, run_crash_points
from .nemesis import DISK_FAULTS, FAULTS, restartable_faults
from .runner import RunConfig, run_schedule
from .stats import summarize


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m canonical_raft.jepsen",
                                description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--runs", type=int, default=1, help="schedules, with consecutive seeds")
    p.add_argument("--time", type=float, default=30.0, help="seconds of faults")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--clients", type=int, default=5)
    p.add_argument("--rate", type=float, default=100.0, help="operations per second, total")
    p.add_argument("--keys", type=int, default=8, help="keys in use at once")
    p.add_argument("--faults", default=",".join(FAULTS),
                   help=f"comma-separated subset of {','.join(FAULTS + DISK_FAULTS)} "
                        "(disk-full: needs root to mount a tmpfs per node)")
    p.add_argument("--engine", choices=ENGINES, default="uv",
                   help="the nodes' engine (mixed: odd ids uv, even ids asyncio)")
    p.add_argument("--store", choices=("memory", "mdb"), default="memory",
                   help="the asyncio nodes' store (memory: no fault that restarts a process)")
    p.add_argument("--forward", action="store_true",
                   help="nodes forward writes and barriers (serve --forward); each client "
                        "talks to one node, whatever its role")
    p.add_argument("--snapshot-threshold", type=int, default=RunConfig.snapshot_threshold,
                   help="fault schedules: a snapshot every this many entries")
    p.add_argument("--snapshot-trailing", type=int, default=RunConfig.snapshot_trailing)
    p.add_argument("--crash-points", type=int, default=0,
                   help="also run this many crash points (0: none)")
    p.add_argument("--crash-kinds", default=",".join(KINDS))
    p.add_argument("--artifacts", default=None, help="where run directories go")
    p.add_argument("--keep", action="store_true", help="keep artifacts of clean runs too")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    faults = tuple(f for f in args.faults.split(",") if f)
    unknown = set(faults) - set(FAULTS) - set(DISK_FAULTS)
    if unknown:
        p.error(f"unknown faults: {sorted(unknown)}")
    durable = args.engine == "uv" or args.store == "mdb"
    kept, left_out = restartable_faults(faults, durable)
    if left_out:
        print(f"note: {args.engine} engine on a {args.store} store: left out "
              f"{', '.join(left_out)} (they restart processes, and a MemoryStore node "
              f"cannot restart)", file=sys.stderr)
        if not kept and args.time > 0:
            p.error("no fault left to run: add some that keep processes (pause, split, ...)")
    if args.crash_points and not durable:
        p.error("--crash-points restart killed processes: --engine asyncio/mixed needs "
                "--store mdb")

    ok = True
    results = []
    new_leader: list[float] = []
    converge: list[float] = []
    by_fault: dict[str, list[float]] = {}
    failed: list[int] = []
    faults_run: dict[str, int] = {}
    moves = [0, 0]   # membership changes: took effect, attempted
    for seed in range(args.seed, args.seed + args.runs) if args.time > 0 else ():
        run = run_schedule(RunConfig(seed=seed, time=args.time, nodes=args.nodes,
                                     clients=args.clients, rate=args.rate, keys=args.keys,
                                     faults=faults, artifacts=args.artifacts, keep=args.keep,
                                     engine=args.engine, store=args.store,
                                     forward=args.forward,
                                     snapshot_threshold=args.snapshot_threshold,
                                     snapshot_trailing=args.snapshot_trailing))
        ok &= run.ok
        if not run.ok:
            failed.append(seed)
        new_leader += run.new_leader_s
        for fault, values in run.extra.get("new_leader_by_fault", {}).items():
            by_fault.setdefault(fault, []).extend(values)
        for fault, n in run.faults.items():
            faults_run[fault] = faults_run.get(fault, 0) + n
        moves[0] += sum(m["done"] for m in run.extra.get("membership", ()))
        moves[1] += len(run.extra.get("membership", ()))
        if run.converge_s is not None:
            converge.append(run.converge_s)
        results.append(asdict(run))
        if not args.json:
            print(run.summary(), flush=True)
    if args.runs > 1 and not args.json and args.time > 0:
        print(f"{args.runs} schedules, {args.runs - len(failed)} clean; failing seeds: "
              f"{failed or 'none'}\n  new leader after a leader fault (s): "
              f"{summarize(new_leader)}\n  convergence after healing (s): "
              f"{summarize(converge)}\n  faults: {dict(sorted(faults_run.items()))}; "
              f"membership changes {moves[0]}/{moves[1]} took effect", flush=True)
        for fault, values in sorted(by_fault.items()):
            print(f"    {fault}: {summarize(values)}", flush=True)
    if args.crash_points:
        crash = run_crash_points(CrashConfig(seed=args.seed, points=args.crash_points,
                                             kinds=tuple(args.crash_kinds.split(",")),
                                             artifacts=args.artifacts, keep=args.keep,
                                             engine=args.engine, store=args.store))
        ok &= crash.ok
        results.append(asdict(crash))
        if not args.json:
            print(crash.summary(), flush=True)
    if args.json:
        print(json.dumps(results, indent=1, default=str))
    if not ok:
        print(f"FAILED: reproduce with --seed {failed[0] if failed else args.seed}",
              file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
