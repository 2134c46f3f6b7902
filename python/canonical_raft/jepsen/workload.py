"""Clients of the register workload: threads that read, write and CAS keys
at a fixed total rate and record every operation.

Keys live in ``slots``; a key takes ``ops_per_key`` operations, then its slot
moves to a fresh key (as Jepsen's independent keys do). That bounds how many
operations, and indeterminate ones above all, one key's search must order,
while each key still sees every client. Written values are unique integers.

Reads are ``read_index`` reads (linearizable: on the leader, or with
``forward`` on any node, after a barrier forwarded to the leader). Recording
(checker format): ``invoke`` just before the request, then ``ok`` with the
raft ``index`` the server reported (a write's entry; the index a read was
served at), the read's value (None when absent), ``fail`` (a CAS that did not
swap; a read that got no answer; nothing happened) or ``info`` (a write that
got no definite answer: it may still commit). After an ``info`` the client
takes a new process id and a new ClusterClient (new client id), so the old
command's session is never reused.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter

from ..client import ClusterClient, CommandError
from ..errors import RaftError
from .history import Recorder

__all__ = ["Workload", "KeySpace"]


class KeySpace:
    def __init__(self, slots: int, ops_per_key: int, prefix: str) -> None:
        self._lock = threading.Lock()
        self.ops_per_key = ops_per_key
        self.prefix = prefix
        self._gen = itertools.count()
        self._slots = [self._fresh() for _ in range(slots)]
        self.used: list[str] = [k for k, _ in self._slots]
        self.last: dict[str, object] = {}   # last value seen or written, for CAS

    def _fresh(self) -> list:
        return [f"{self.prefix}{next(self._gen)}", 0]

    def pick(self, rng: random.Random) -> str:
        with self._lock:
            slot = rng.randrange(len(self._slots))
            entry = self._slots[slot]
            if entry[1] >= self.ops_per_key:
                entry = self._slots[slot] = self._fresh()
                self.used.append(entry[0])
            entry[1] += 1
            return entry[0]


class Workload:
    """``clients`` threads against ``ports``; ``rate`` operations per second in
    total. ``start()``, later ``stop()`` (waits for operations in flight)."""

    def __init__(self, ports: dict[int, int], recorder: Recorder, rng: random.Random, *,
                 clients: int = 5, rate: float = 100.0, keys: int = 8, ops_per_key: int = 60,
                 op_timeout: float = 5.0, mix: tuple[float, float, float] = (0.4, 0.35, 0.25),
                 tag: str = "", forward: bool = False) -> None:
        self.ports = dict(ports)
        # Forwarding: client n sends everything to node n (mod the size), which
        # forwards it to the leader when it is a follower (serve --forward).
        self.forward = forward
        self.recorder = recorder
        self.keys = KeySpace(keys, ops_per_key, prefix=f"{tag}k")
        self.clients = clients
        self.interval = clients / rate
        self.op_timeout = op_timeout
        self.mix = mix
        self.tag = tag
        self._values = itertools.count(1)
        self._values_lock = threading.Lock()
        self._seeds = [rng.getrandbits(64) for _ in range(clients)]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.errors: Counter = Counter()
        self.bugs: list[str] = []

    def start(self) -> None:
        for n, seed in enumerate(self._seeds):
            t = threading.Thread(target=self._run, args=(random.Random(seed), n),
                                 name=f"jepsen-client-{n}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 60.0) -> None:
        """Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            self.bugs.append(f"client threads still running after {timeout}s: {alive}")

    def _value(self) -> int:
        with self._values_lock:
            return next(self._values)

    def _client(self, process: int, n: int) -> ClusterClient:
        via = sorted(self.ports)[n % len(self.ports)] if self.forward else None
        return ClusterClient(self.ports, timeout=self.op_timeout,
                             attempt_timeout=min(2.0, self.op_timeout),
                             client_id=f"{self.tag}p{process}", via=via)

    def _run(self, rng: random.Random, n: int) -> None:
        process = self.recorder.new_process()
        client = self._client(process, n)
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                next_at = max(next_at + self.interval, time.monotonic())
                self._stop.wait(max(0.0, next_at - time.monotonic()))
                if self._stop.is_set():
                    break
                if not self._one(client, process, rng):
                    client.close()
                    process = self.recorder.new_process()
                    client = self._client(process, n)
        except Exception as exc:  # a harness bug: report it, never hide it
            self.bugs.append(f"client thread crashed: {exc!r}")
        finally:
            client.close()

    def _one(self, client: ClusterClient, p: int, rng: random.Random) -> bool:
        """One operation; False after an ``info`` (the process is done)."""
        key = self.keys.pick(rng)
        r = rng.random()
        rec = self.recorder.record
        if r < self.mix[0]:
            rec(p, "invoke", "read", key)
            try:
                value, index = client.read_index(key)
            except (RaftError, OSError, ValueError) as exc:
                self.errors[f"read:{_name(exc)}"] += 1
                rec(p, "fail", "read", key)
                return True
            rec(p, "ok", "read", key, value, index=index)
            self.keys.last[key] = value
            return True
        new = self._value()
        if r < self.mix[0] + self.mix[1]:
            f, arg = "write", new
        else:
            f, arg = "cas", [self.keys.last.get(key), new]
        rec(p, "invoke", f, key, arg)
        try:
            if f == "write":
                client.set(key, new)
                swapped = True
            else:
                swapped = client.cas(key, arg[0], new)
        except (RaftError, OSError, ValueError) as exc:
            self.errors[f"{f}:{_name(exc)}"] += 1
            if isinstance(exc, CommandError) and exc.reply.get("error") == "bad_request":
                self.bugs.append(f"server refused {f} {key}: {exc.reply}")
            rec(p, "info", f, key, arg)
            return False
        if swapped:
            rec(p, "ok", f, key, arg, index=client.last_index)
            self.keys.last[key] = new
        else:
            rec(p, "fail", f, key, arg)
        return True


def _name(exc: BaseException) -> str:
    if isinstance(exc, CommandError):
        return str(exc.reply.get("error"))
    return type(exc).__name__
