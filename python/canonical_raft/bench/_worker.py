"""One benchmark node process: ``python -m canonical_raft.bench._worker SPEC``.

SPEC is a JSON object: ``{"system": "canonical-raft" | "pysyncobj", "id": 1,
"cluster": {"1": "127.0.0.1:port", ...}, "data_dir": ..., ...}``; for
canonical-raft, ``"engine": "asyncio"`` (with ``"loop": "asyncio" | "uvloop"``)
runs the node on the asyncio engine with a MemoryStore, on an event loop that
the process runs in a thread, as an asyncio application would: the load is
then asyncio tasks on that same loop (AioCraftNode). The driver
sends one JSON command per line on stdin and reads one JSON reply per line; the
original stdout carries only replies (anything else printed goes to stderr).

The load runs inside the leader's process (apply() called directly), so what
is measured is the library, not a client protocol. Both systems count applied
commands in their FSM; the driver compares the counts with what was acknowledged.
"""

from __future__ import annotations

import faulthandler
import json
import os
import statistics
import sys
import threading
import time

from ._stats import percentiles

#: The hops of one apply, in order (cmd_hops).
HOPS = ("caller -> loop thread", "loop -> disk write", "disk write", "disk -> commit",
        "commit -> applier", "applier: FSM + future", "applier -> caller")


def windowed_load(submit, seconds: float, inflight: int, many=None) -> dict:
    """Keep ``inflight`` commands outstanding for ``seconds``, then drain.

    ``submit(done)`` starts one command and arranges ``done(ok: bool)`` to be
    called when it completes (always from one thread: the system's own
    completion thread). ``many(done, k)``, if given, starts ``k`` at once.
    The window is refilled when a sixteenth of it (at least one) has completed,
    so the harness costs a few attribute operations per command, not a
    semaphore round trip.
    """
    counts = [0, 0]  # acked, failed (written by the completion thread only)
    errors: list[str] = []
    wake = threading.Event()
    waiting = [False]
    refill = max(1, inflight // 16)
    submitted = 0

    def done(ok: bool, err: str | None = None) -> None:
        counts[0 if ok else 1] += 1
        if err and len(errors) < 3:
            errors.append(err)
        if waiting[0] and submitted - counts[0] - counts[1] <= inflight - refill:
            waiting[0] = False
            wake.set()

    def room() -> int:
        return inflight - (submitted - counts[0] - counts[1])

    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        k = room()
        if k < refill:
            wake.clear()
            waiting[0] = True
            if room() < refill:
                wake.wait(0.05)
            waiting[0] = False
            continue
        if many is not None:
            submitted += k
            many(done, k)
        else:
            for _ in range(k):
                submitted += 1
                submit(done)
    while submitted - counts[0] - counts[1] > 0:  # drain the window
        time.sleep(0.0005)
    elapsed = time.perf_counter() - start
    return {"inflight": inflight, "acked": counts[0], "failed": counts[1], "seconds": elapsed,
            "applies_per_s": counts[0] / elapsed, "errors": errors}


def aio_load(apply, seconds: float, tasks: int, probe_sleep: float = 0.005) -> dict:
    """aio_load_async on a new event loop (asyncio.run)."""
    import asyncio
    return asyncio.run(aio_load_async(apply, seconds, tasks, probe_sleep))


async def aio_load_async(apply, seconds: float, tasks: int,
                         probe_sleep: float = 0.005) -> dict:
    """``tasks`` asyncio tasks, each awaiting ``apply()`` in a loop, for
    ``seconds``; a probe task measures the event loop's lag (how late a
    ``probe_sleep`` sleep wakes up) in the steady state: from 0.5 s after the
    tasks started (starting 10,000 tasks at once is one long turn of the
    loop) to the stop."""
    import asyncio

    counts = [0, 0]
    errors: list[str] = []
    lags: list[float] = []
    stop = [False]

    async def worker() -> None:
        while not stop[0]:
            try:
                await apply()
                counts[0] += 1
            except Exception as exc:
                counts[1] += 1
                if len(errors) < 3:
                    errors.append(repr(exc))

    async def probe() -> None:
        await asyncio.sleep(min(0.5, seconds / 4))
        while not stop[0]:
            t0 = time.perf_counter()
            await asyncio.sleep(probe_sleep)
            lags.append(time.perf_counter() - t0 - probe_sleep)

    start = time.perf_counter()
    workers = [asyncio.create_task(worker()) for _ in range(tasks)]
    prober = asyncio.create_task(probe())
    await asyncio.sleep(seconds)
    stop[0] = True
    await asyncio.gather(*workers, prober)
    elapsed = time.perf_counter() - start
    lat = percentiles(lags)
    return {"tasks": tasks, "inflight": tasks, "acked": counts[0], "failed": counts[1],
            "seconds": elapsed, "applies_per_s": counts[0] / elapsed, "errors": errors,
            "lag_sleep_ms": probe_sleep * 1000, "lag_samples": len(lags),
            "lag_p50_ms": lat["p50_ms"], "lag_p99_ms": lat["p99_ms"],
            "lag_max_ms": max(lags) * 1000 if lags else None}


def one_at_a_time(call, seconds: float) -> dict:
    samples = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    return percentiles(samples)


def wait_count(get, expected: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while get() < expected and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.05)  # give an over-count the chance to show
    return get()


# ------------------------------------------------------------------ canonical-raft

class CraftNode:
    def __init__(self, spec: dict) -> None:
        import canonical_raft as raft

        class BenchFSM(raft.FSM):
            """Counts commands; ``grow:N`` commands also grow a blob (snapshot size)."""

            def __init__(self) -> None:
                self.count = 0
                self.blob = bytearray()

            def apply(self, command: bytes):
                self.count += 1
                if command[:5] == b"grow:":
                    n = int(command[5:].split(b":")[0])
                    self.blob += (bytes(range(256)) * (n // 256 + 1))[:n]
                return self.count

            def snapshot(self) -> bytes:
                return self.count.to_bytes(8, "little") + bytes(self.blob)

            def restore(self, snapshot: bytes) -> None:
                self.count = int.from_bytes(snapshot[:8], "little")
                self.blob = bytearray(snapshot[8:])

        self.raft = raft
        self.fsm = BenchFSM()
        cluster = {int(k): v for k, v in spec["cluster"].items()}
        config = raft.Config(**spec.get("config", {}))
        engine: dict = {}
        if spec.get("engine", "uv") != "uv":
            if spec.get("store", "memory") == "mdb":
                from canonical_raft.store.mdb import MDBStore
                store = MDBStore(os.path.join(spec["data_dir"], "mdb"))
            else:
                store = raft.MemoryStore()
            engine = {"engine": spec["engine"], "store": store}
        self.node = raft.Node(spec["id"], cluster[spec["id"]], self.fsm, spec["data_dir"],
                              cluster=cluster, config=config, **engine)
        self.started_at: float | None = None

    def cmd_start(self) -> dict:
        self.started_at = time.perf_counter()
        self.node.start()
        return {}

    def cmd_leader(self, timeout: float = 30) -> dict:
        return {"leader": self.node.wait_leader(timeout=timeout).id}

    def cmd_throughput(self, seconds: float, inflight: int, size: int) -> dict:
        payload = b"x" * size
        node = self.node

        def submit(done) -> None:
            def finished(fut) -> None:
                exc = fut.exception()
                done(exc is None, None if exc is None else repr(exc))
            node.apply(payload).add_done_callback(finished)

        return windowed_load(submit, seconds, inflight)

    def cmd_throughput_many(self, seconds: float, inflight: int, size: int) -> dict:
        """The window refilled with apply_many (one call per refill)."""
        payload = b"x" * size
        node = self.node

        def many(done, k: int) -> None:
            def finished(fut) -> None:
                exc = fut.exception()
                done(exc is None, None if exc is None else repr(exc))
            for fut in node.apply_many([payload] * k):
                fut.add_done_callback(finished)

        return windowed_load(None, seconds, inflight, many)

    def cmd_aio(self, seconds: float, tasks: int, size: int) -> dict:
        payload = b"a" * size
        node = self.node
        return aio_load(lambda: node.apply(payload), seconds, tasks)

    def cmd_latency(self, seconds: float, size: int) -> dict:
        payload = b"y" * size
        return one_at_a_time(lambda: self.node.apply(payload).result(30), seconds)

    def cmd_hops(self, seconds: float, size: int) -> dict:
        """One apply at a time, timestamped at every hop (CLOCK_MONOTONIC ns):
        the median of each hop, in µs."""
        payload = b"h" * size
        node, core = self.node, self.node._core
        drained: list[int] = []
        node._hop_clock = drained  # the applier appends the time each batch was taken
        core.set_timing(True)
        hops: dict[str, list[float]] = {name: [] for name in HOPS}
        resolved = [0]
        applied = 0

        def on_done(_fut) -> None:
            resolved[0] = time.monotonic_ns()
        try:
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                drained.clear()
                t0 = time.monotonic_ns()
                fut = node.apply(payload)
                fut.add_done_callback(on_done)
                fut.result(30)
                t6 = time.monotonic_ns()
                applied += 1
                flush, a0, a1, commit = core.hop_times()
                if not (drained and t0 <= flush <= a0 <= a1 and commit <= drained[-1]):
                    continue  # a heartbeat-only turn or a reordering: not one clean trace
                marks = (t0, flush, a0, a1, max(commit, a1), drained[-1], resolved[0], t6)
                for name, a, b in zip(HOPS, marks, marks[1:]):
                    hops[name].append((b - a) / 1000)
        finally:
            core.set_timing(False)
            node._hop_clock = None
        out = {name: (statistics.median(v) if v else None) for name, v in hops.items()}
        n = len(hops[HOPS[0]])
        return {"samples": n, "acked": applied, "hops_us": out,
                "total_us": sum(v for v in out.values() if v is not None)}

    def cmd_count(self, expected: int, timeout: float = 30) -> dict:
        return {"count": wait_count(lambda: self.fsm.count, expected, timeout)}

    def cmd_grow(self, total: int, chunk: int, extra: int) -> dict:
        """Grow the FSM's blob by ``total`` bytes, then apply ``extra`` small
        commands so that a snapshot is taken and the log compacted."""
        futs = []
        left = total
        while left > 0:
            n = min(chunk, left)
            futs.append(self.node.apply(b"grow:%d:" % n))
            left -= n
        for f in futs:
            f.result(120)
        for _ in range(extra):  # one entry each: past the snapshot threshold
            self.node.apply(b"tick").result(120)
        self.node.barrier().result(120)
        return {"count": self.fsm.count, "index": self.node.last_applied,
                "blob": len(self.fsm.blob)}

    def cmd_stats(self) -> dict:
        s = self.node.stats()
        return {k: v for k, v in s.items() if isinstance(v, (int, float, str, bool))}

    def cmd_catch_up(self, index: int, timeout: float = 300) -> dict:
        """Start (if not started) and wait until this node has applied ``index``."""
        if self.started_at is None:
            self.cmd_start()
        self.node.wait_applied(index, timeout=timeout)
        elapsed = time.perf_counter() - self.started_at
        stats = self.node.stats()
        return {"seconds": elapsed, "snapshots_restored": stats["snapshots_restored"],
                "blob": len(self.fsm.blob), "count": self.fsm.count}

    def cmd_stop(self) -> dict:
        self.node.close()
        return {}


class AioCraftNode(CraftNode):
    """canonical-raft on the asyncio engine, on the process's own event loop
    (the standard loop or uvloop, in a thread), the way an asyncio
    application runs it: ``await node.astart()``, load as tasks awaiting
    ``node.apply()`` on that loop, whose lag is measured meanwhile."""

    #: The lag probe: how late a sleep of this length wakes up (issue 9: 1 ms).
    PROBE_SLEEP = 0.001

    def __init__(self, spec: dict) -> None:
        import asyncio
        super().__init__(spec)
        if spec.get("loop") == "uvloop":
            import uvloop
            self.loop = uvloop.new_event_loop()
        else:
            self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="app-loop",
                                        daemon=True)
        self._thread.start()

    def _run(self, coro, timeout: float | None = None):
        import asyncio
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def cmd_start(self) -> dict:
        self.started_at = time.perf_counter()
        self._run(self.node.astart())
        return {}

    def cmd_leader(self, timeout: float = 30) -> dict:
        async def leader() -> int:
            return (await self.node.wait_leader(timeout)).id
        return {"leader": self._run(leader())}

    def cmd_throughput(self, seconds: float, inflight: int, size: int) -> dict:
        """``inflight`` tasks awaiting apply() on the node's loop."""
        payload = b"x" * size
        node = self.node
        return self._run(aio_load_async(lambda: node.apply(payload), seconds, inflight,
                                        self.PROBE_SLEEP))

    def cmd_aio(self, seconds: float, tasks: int, size: int) -> dict:
        return self.cmd_throughput(seconds, tasks, size)

    def cmd_latency(self, seconds: float, size: int) -> dict:
        payload = b"y" * size
        node = self.node

        async def one_by_one() -> dict:
            samples = []
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                await node.apply(payload)
                samples.append(time.perf_counter() - t0)
            return percentiles(samples)
        return self._run(one_by_one())

    def cmd_stop(self) -> dict:
        try:
            self._run(self.node.aclose(), 60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        return {}


# ------------------------------------------------------------------ PySyncObj

class PsoNode:
    def __init__(self, spec: dict) -> None:
        from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated

        class Counter(SyncObj):
            def __init__(self, address: str, partners: list[str], conf) -> None:
                super().__init__(address, partners, conf)
                self.count = 0

            @replicated
            def incr(self, payload):
                self.count += 1
                return self.count

        cluster = {int(k): v for k, v in spec["cluster"].items()}
        me = cluster[spec["id"]]
        partners = [a for i, a in sorted(cluster.items()) if i != spec["id"]]
        # Default configuration (log kept in memory: no journal file, no fsync),
        # with or without its AppendEntries batching.
        conf = SyncObjConf(appendEntriesUseBatch=spec.get("batching", True))
        self.ok = FAIL_REASON.SUCCESS
        self.ids = {a: i for i, a in cluster.items()}
        self.obj = Counter(me, partners, conf)

    def cmd_start(self) -> dict:
        return {}

    def cmd_leader(self, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.obj._getLeader()
            if leader is not None:
                address = getattr(leader, "address", None) or str(leader)
                return {"leader": self.ids[address]}
            time.sleep(0.01)
        raise TimeoutError("PySyncObj elected no leader")

    def cmd_throughput(self, seconds: float, inflight: int, size: int) -> dict:
        payload = b"x" * size
        obj, ok = self.obj, self.ok

        def submit(done) -> None:
            obj.incr(payload, callback=lambda res, err: done(err == ok, None if err == ok
                                                                 else f"FAIL_REASON {err}"))

        return windowed_load(submit, seconds, inflight)

    def cmd_latency(self, seconds: float, size: int) -> dict:
        payload = b"y" * size
        return one_at_a_time(lambda: self.obj.incr(payload, sync=True, timeout=30), seconds)

    def cmd_count(self, expected: int, timeout: float = 30) -> dict:
        return {"count": wait_count(lambda: self.obj.count, expected, timeout)}

    def cmd_stop(self) -> dict:
        self.obj.destroy()
        return {}


def main() -> None:
    faulthandler.enable()  # a crash in the core shows its Python stacks in the node's log
    spec = json.loads(sys.argv[1])
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints must not corrupt the reply stream
    sys.stdout = sys.stderr
    if spec["system"] != "canonical-raft":
        node = PsoNode(spec)
    elif spec.get("engine", "uv") == "asyncio":
        node = AioCraftNode(spec)
    else:
        node = CraftNode(spec)
    cmd = None
    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg.pop("cmd")
        try:
            reply = {"ok": True, **getattr(node, "cmd_" + cmd)(**msg)}
        except Exception as exc:  # reported to the driver, which fails loudly
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        replies.write(json.dumps(reply) + "\n")
        if cmd == "stop":
            break
    if cmd != "stop":  # the driver went away: still close cleanly
        try:
            node.cmd_stop()
        except Exception:
            pass
    replies.close()
    os._exit(0)  # skip interpreter teardown of foreign threads (PySyncObj)


if __name__ == "__main__":
    main()
