"""A test rig for ``canonical_raft serve``: a large, slow FSM and a loop-thread probe.

Used by the acceptance tests of the snapshot path (tests/test_large_state.py) and
the large-state benchmark (bench/_large_state.py). Not for production use.

* ``SlowFSM`` wraps the server's KVStore: every snapshot also carries a ballast
  of ``--fsm-ballast-mb`` MiB (restored on every node like real state),
  ``snapshot()`` sleeps ``--fsm-snapshot-delay`` seconds (the cost of
  serialising a large state), ``apply()`` busy-waits ``--fsm-apply-delay``
  seconds per command (a slow FSM, so a backlog builds up).
* ``LoopProbe`` times ``node.stats()`` over and over (``--loop-probe`` seconds
  apart). ``stats()`` is a no-op round trip through the node's loop thread, so a
  slow sample means the loop thread was busy or waiting: the thread that sends
  heartbeats. Samples that overlap a ``SlowFSM.snapshot()`` call are also
  reported apart ("during snapshots").
* Extra client ops (newline-delimited JSON, as in server.py):
  ``{"op": "probe", "reset": bool}``: the probe's figures (per node);
  ``{"op": "bulk", "count": n, "key": k}``: on the leader, queue ``n`` increments
  of ``k`` at once (``node.apply`` without waiting for results; for room only,
  past ``--max-pending-commands``), then wait for them all;
  ``{"op": "load", "seconds": s, "inflight": n, "key": k}``: on the leader, keep
  ``n`` increments of ``k`` in flight for ``s`` seconds (the benchmark's load;
  it pauses while the node is not the leader).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from . import kv
from .errors import RaftError, ShutdownError
from .fsm import FSM

if TYPE_CHECKING:
    from .node import Node

MiB = 1024 * 1024
_HEADER = 8  # length of the wrapped FSM's snapshot, little endian


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("test rig (tests and benchmarks of the snapshot path)")
    g.add_argument("--fsm-ballast-mb", type=float, default=0.0,
                   help="MiB of extra state carried by every snapshot")
    g.add_argument("--fsm-snapshot-delay", type=float, default=0.0,
                   help="seconds FSM.snapshot() sleeps")
    g.add_argument("--fsm-apply-delay", type=float, default=0.0,
                   help="seconds FSM.apply() busy-waits per command")
    g.add_argument("--loop-probe", type=float, default=0.0,
                   help="time node.stats() (a loop-thread round trip) every this many "
                        "seconds; report with the 'probe' op (0: off)")


class SlowFSM(FSM):
    """An FSM that delegates to ``inner`` and adds a ballast, a slow snapshot and
    a slow apply (see the module docstring). Remembers when snapshot() ran."""

    def __init__(self, inner: FSM, *, ballast_bytes: int = 0, snapshot_delay: float = 0.0,
                 apply_delay: float = 0.0) -> None:
        self.inner = inner
        # The same bytes on every node (as replicated state would be), incompressible.
        self.ballast = random.Random(0).randbytes(ballast_bytes) if ballast_bytes else b""
        self.snapshot_delay = snapshot_delay
        self.apply_delay = apply_delay
        self._lock = threading.Lock()
        self._windows: collections.deque = collections.deque(maxlen=100_000)
        self._since: float | None = None  # start of the snapshot() call in progress

    def apply(self, command: bytes) -> Any:
        if self.apply_delay:
            end = time.perf_counter() + self.apply_delay
            while time.perf_counter() < end:
                pass
        return self.inner.apply(command)

    def snapshot(self) -> bytes:
        t0 = time.monotonic()
        with self._lock:
            self._since = t0
        try:
            if self.snapshot_delay:
                time.sleep(self.snapshot_delay)
            inner = self.inner.snapshot()
            return len(inner).to_bytes(_HEADER, "little") + inner + self.ballast
        finally:
            with self._lock:
                self._since = None
                self._windows.append((t0, time.monotonic()))

    def restore(self, snapshot: bytes) -> None:
        n = int.from_bytes(snapshot[:_HEADER], "little")
        self.inner.restore(snapshot[_HEADER:_HEADER + n])
        self.ballast = snapshot[_HEADER + n:]

    def windows(self) -> list[tuple[float, float]]:
        """(start, end) monotonic times of the snapshot() calls, the current one
        ending now."""
        with self._lock:
            out = list(self._windows)
            if self._since is not None:
                out.append((self._since, time.monotonic()))
        return out


def summary(seconds: list[float]) -> dict:
    """Count and p50/p99/max in ms of durations in seconds (nearest rank)."""
    if not seconds:
        return {"samples": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    s = sorted(seconds)

    def pct(p: float) -> float:
        return round(s[min(len(s) - 1, int(p * len(s)))] * 1000, 3)

    return {"samples": len(s), "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "max_ms": round(s[-1] * 1000, 3)}


class LoopProbe(threading.Thread):
    """Times ``node.stats()`` every ``interval`` seconds until stopped."""

    def __init__(self, node: Node, fsm: SlowFSM | None, interval: float) -> None:
        super().__init__(name="canonical-raft-loop-probe", daemon=True)
        self.node, self.fsm, self.interval = node, fsm, interval
        self._samples: collections.deque = collections.deque(maxlen=1_000_000)
        self._stop_event = threading.Event()
        self._from = time.monotonic()

    def run(self) -> None:
        while not self._stop_event.is_set():
            t0 = time.monotonic()
            try:
                self.node.stats()
            except ShutdownError:
                return
            except RaftError:
                continue
            self._samples.append((t0, time.monotonic()))
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)

    def reset(self) -> None:
        self._from = time.monotonic()

    def report(self) -> dict:
        samples = [s for s in list(self._samples) if s[0] >= self._from]
        windows = [w for w in (self.fsm.windows() if self.fsm else []) if w[1] >= self._from]
        # A sample is "during a snapshot" if it overlaps a snapshot() call.
        during = [t1 - t0 for t0, t1 in samples
                  if any(t0 < w1 and t1 > w0 for w0, w1 in windows)]
        return {"all": summary([t1 - t0 for t0, t1 in samples]),
                "during_snapshots": summary(during),
                "snapshot_calls": len(windows),
                "snapshot_seconds": round(sum(w1 - w0 for w0, w1 in windows), 3),
                "interval": self.interval}


class Rig:
    """What the options above add to one server: the FSM to run and extra ops."""

    def __init__(self, fsm: FSM, slow: SlowFSM | None, probe_interval: float) -> None:
        self.fsm = fsm
        self.slow = slow
        self.probe_interval = probe_interval
        self.probe: LoopProbe | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace, store: FSM) -> Rig:
        slow = None
        if args.fsm_ballast_mb or args.fsm_snapshot_delay or args.fsm_apply_delay \
                or args.loop_probe:  # the probe needs SlowFSM's record of snapshot() calls
            slow = SlowFSM(store, ballast_bytes=int(args.fsm_ballast_mb * MiB),
                           snapshot_delay=args.fsm_snapshot_delay,
                           apply_delay=args.fsm_apply_delay)
        return cls(slow or store, slow, args.loop_probe)

    def start(self, node: Node) -> dict[str, Callable]:
        """Start the probe (if asked); the extra ops for the server's Handler."""
        if self.probe_interval > 0:
            self.probe = LoopProbe(node, self.slow, self.probe_interval)
            self.probe.start()
        return {"probe": self._probe_op, "bulk": _bulk_op, "load": _load_op}

    def close(self) -> None:
        if self.probe is not None:
            self.probe.stop()

    async def _probe_op(self, handler: Any, req: dict) -> dict:
        if self.probe is None:
            return {"error": "unavailable", "message": "started without --loop-probe"}
        reply = {"ok": True, "id": handler.node.id, **self.probe.report()}
        if req.get("reset"):
            self.probe.reset()
        return reply


async def _bulk_op(handler: Any, req: dict) -> dict:
    count, key = req["count"], req.get("key", "bulk")
    if not isinstance(count, int) or count < 1 or not isinstance(key, str):
        raise ValueError("count must be a positive int and key a string")
    if not handler.node.is_leader:
        return handler.not_leader()
    return await asyncio.to_thread(_bulk, handler.node, count, kv.incr_cmd(key, 1))


def _bulk(node: Node, count: int, command: bytes) -> dict:
    lock = threading.Lock()
    done = threading.Event()
    outcome = {"acked": 0, "failed": 0, "errors": []}

    def finished(fut: Any) -> None:
        exc = fut.exception()
        with lock:
            if exc is None:
                outcome["acked"] += 1
            else:
                outcome["failed"] += 1
                if len(outcome["errors"]) < 3:
                    outcome["errors"].append(repr(exc))
            if outcome["acked"] + outcome["failed"] == count:
                done.set()

    t0 = time.monotonic()
    for _ in range(count):
        try:  # past Config.max_pending_commands, wait for room (BusyError after 60 s)
            fut = node.apply(command, timeout=60.0)
        except RaftError as exc:  # refused before it reached raft: counted, not retried
            finished(_Failed(exc))
            continue
        fut.add_done_callback(finished)
    submitted = time.monotonic() - t0
    done.wait()
    return {"ok": True, "count": count, **outcome, "submit_seconds": round(submitted, 3),
            "seconds": round(time.monotonic() - t0, 3), "index": node.last_applied}


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self._exc = exc

    def exception(self) -> BaseException:
        return self._exc


async def _load_op(handler: Any, req: dict) -> dict:
    seconds, inflight, key = req["seconds"], req.get("inflight", 1000), req.get("key", "load")
    if not handler.node.is_leader:
        return handler.not_leader()
    from .bench._worker import windowed_load
    node = handler.node
    command = kv.incr_cmd(key, 1)
    end = time.perf_counter() + float(seconds)

    def submit(done: Callable) -> None:
        # Not (or no longer) the leader: wait rather than count refusals by the million.
        while not node.is_leader and time.perf_counter() < end:
            time.sleep(0.01)
        try:
            fut = node.apply(command)
        except RaftError as exc:
            done(False, repr(exc))
            return
        fut.add_done_callback(lambda f: done(f.exception() is None,
                                             None if f.exception() is None
                                             else repr(f.exception())))

    result = await asyncio.to_thread(windowed_load, submit, float(seconds), int(inflight))
    return {"ok": True, **result, "index": node.last_applied}
