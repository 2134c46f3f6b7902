"""One benchmark node process: ``python -m canonical_raft.bench._worker SPEC``.

SPEC is a JSON object: ``{"system": "canonical-raft" | "pysyncobj", "id": 1,
"cluster": {"1": "127.0.0.1:port", ...}, "data_dir": ..., ...}``. The driver
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
import sys
import threading
import time

from ._stats import percentiles


def windowed_load(submit, seconds: float, inflight: int) -> dict:
    """Keep ``inflight`` commands outstanding for ``seconds``, then drain.

    ``submit(done)`` starts one command and arranges ``done(ok: bool)`` to be
    called (from any thread) when it completes.
    """
    window = threading.Semaphore(inflight)
    lock = threading.Lock()
    counts = [0, 0]  # acked, failed
    errors: list[str] = []

    def done(ok: bool, err: str | None = None) -> None:
        with lock:
            counts[0 if ok else 1] += 1
            if err and len(errors) < 3:
                errors.append(err)
        window.release()

    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        window.acquire()
        submit(done)
    for _ in range(inflight):  # drain the window
        window.acquire()
    elapsed = time.perf_counter() - start
    return {"inflight": inflight, "acked": counts[0], "failed": counts[1], "seconds": elapsed,
            "applies_per_s": counts[0] / elapsed, "errors": errors}


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
        self.node = raft.Node(spec["id"], cluster[spec["id"]], self.fsm, spec["data_dir"],
                              cluster=cluster, config=config)
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

    def cmd_latency(self, seconds: float, size: int) -> dict:
        payload = b"y" * size
        return one_at_a_time(lambda: self.node.apply(payload).result(30), seconds)

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
    node = CraftNode(spec) if spec["system"] == "canonical-raft" else PsoNode(spec)
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
