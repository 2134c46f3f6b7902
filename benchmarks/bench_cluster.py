"""Committed applies/s and apply latency of a 3-process canonical-raft cluster.

Each node is a separate process on 127.0.0.1 with its data dir on disk (every
entry fsynced by raft_uv before it counts). The load runs inside the leader's
process, calling node.apply() directly, so what is measured is the library,
not a client protocol. At the end every node's FSM must have counted exactly
the acknowledged commands.

    python benchmarks/bench_cluster.py [--seconds 10] [--inflight 1000] [--size 64] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_main(node_id: int, cluster: dict, data_dir: str, conn) -> None:
    import canonical_raft as raft

    class Counter(raft.FSM):
        def __init__(self) -> None:
            self.count = 0

        def apply(self, command: bytes):
            self.count += 1
            return self.count

        def snapshot(self) -> bytes:
            return str(self.count).encode()

        def restore(self, snapshot: bytes) -> None:
            self.count = int(snapshot)

    fsm = Counter()
    node = raft.Node(node_id, cluster[node_id], fsm, data_dir, cluster=cluster).start()
    conn.send(("ready", node_id))
    while True:
        cmd, arg = conn.recv()
        if cmd == "leader":
            conn.send(node.wait_leader(timeout=30).id)
        elif cmd == "throughput":
            conn.send(throughput(node, **arg))
        elif cmd == "latency":
            conn.send(latency(node, **arg))
        elif cmd == "count":
            node.barrier().result(30) if node.is_leader else None
            node.wait_applied(arg, timeout=60)
            conn.send(fsm.count)
        elif cmd == "stop":
            node.close()
            conn.send("stopped")
            return


def throughput(node, seconds: float, inflight: int, size: int) -> dict:
    """Keep `inflight` applies outstanding for `seconds`; count completions."""
    import threading

    payload = b"x" * size
    window = threading.Semaphore(inflight)
    done = [0]
    failed = [0]

    def finished(fut) -> None:
        if fut.exception() is None:
            done[0] += 1
        else:
            failed[0] += 1
        window.release()

    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        window.acquire()
        node.apply(payload).add_done_callback(finished)
    for _ in range(inflight):  # drain the window
        window.acquire()
    elapsed = time.perf_counter() - start
    return {"acked": done[0], "failed": failed[0], "seconds": elapsed,
            "applies_per_s": done[0] / elapsed, "last_applied": node.last_applied}


def latency(node, seconds: float, size: int) -> dict:
    """One apply at a time: the time from apply() to its result."""
    payload = b"y" * size
    samples = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        node.apply(payload).result(30)
        samples.append(time.perf_counter() - t0)
    samples.sort()

    def pct(p: float) -> float:
        return samples[min(len(samples) - 1, int(p * len(samples)))] * 1000

    return {"acked": len(samples), "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "p999_ms": pct(0.999), "mean_ms": statistics.fmean(samples) * 1000,
            "last_applied": node.last_applied}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--inflight", type=int, default=1000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    ctx = mp.get_context("spawn")
    root = tempfile.mkdtemp(prefix="craft-bench-")
    cluster = {i: f"127.0.0.1:{free_port()}" for i in range(1, args.nodes + 1)}
    procs, conns = {}, {}
    try:
        for i in cluster:
            parent, child = ctx.Pipe()
            p = ctx.Process(target=node_main, args=(i, cluster, os.path.join(root, f"n{i}"), child))
            p.start()
            procs[i], conns[i] = p, parent
        for c in conns.values():
            c.recv()
        conns[1].send(("leader", None))
        leader = conns[1].recv()
        lc = conns[leader]
        print(f"# {args.nodes} nodes, leader {leader}; throughput run ({args.seconds:.0f}s, "
              f"{args.inflight} in flight, {args.size} B)...", file=sys.stderr)
        lc.send(("throughput", {"seconds": args.seconds, "inflight": args.inflight,
                                "size": args.size}))
        tp = lc.recv()
        print(f"# latency run ({args.seconds:.0f}s, one at a time)...", file=sys.stderr)
        lc.send(("latency", {"seconds": args.seconds, "size": args.size}))
        lat = lc.recv()
        acked = tp["acked"] + lat["acked"]
        counts = {}
        for i, c in conns.items():
            c.send(("count", lat["last_applied"]))
        for i, c in conns.items():
            counts[i] = c.recv()
        ok = all(v == acked for v in counts.values()) and tp["failed"] == 0
        result = {"system": "canonical-raft", "nodes": args.nodes, "size": args.size,
                  "inflight": args.inflight, "throughput": tp, "latency": lat,
                  "fsm_counts": counts, "acked_total": acked, "verified": ok,
                  "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                             f"Python {platform.python_version()}"}
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(f"{'system':<16}{'applies/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}  verified")
            print(f"{'canonical-raft':<16}{tp['applies_per_s']:>12,.0f}{lat['p50_ms']:>9.2f}"
                  f"{lat['p99_ms']:>9.2f}{lat['p999_ms']:>10.2f}  {ok} ({acked} acked, FSMs {counts})")
        return 0 if ok else 1
    finally:
        for i, c in conns.items():
            try:
                c.send(("stop", None))
                c.recv()
            except Exception:
                pass
        for p in procs.values():
            p.join(10)
            if p.is_alive():
                p.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
