"""The soak's client load: a few threads, each with its own ClusterClient,
at a steady total rate, over a bounded key space.

Each thread owns ``keys`` keys (``c<thread>k<j>``) that only it writes (set,
cas) and reads (``read_index``), and every thread increments the shared
counters ``ctr<j>``. Owning keys makes every outcome checkable without a
linearizability search, in memory bounded by the key space:

* a key's possible values are its last acknowledged write plus the writes
  sent after it that ended indeterminate (timed out, connection lost). A
  later acknowledged write from the same client closes that list: the
  KVStore's sessions drop any command with a lower sequence number than one
  already applied, so an older write can never land after it;
* a linearizable read must return one of the possible values;
* a cas expecting the last acknowledged value, with nothing indeterminate
  since, must succeed (no one else writes the key);
* at the end each key's value on every replica is a possible value, and a
  counter lies in [acknowledged incrs, acknowledged + indeterminate].

Anything else is a correctness bug (``bugs``); errors the faults cause
(timeouts, refused requests) are counted in ``errors``, not bugs.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from typing import Any

from ..client import ClusterClient, CommandError
from ..errors import RaftError

__all__ = ["Load", "MIX"]

#: Operation mix: (name, weight).
MIX = (("set", 35), ("cas", 20), ("incr", 20), ("read", 25))

_ABSENT: Any = None   # what a read of an absent key returns


class _Key:
    """What one owner thread knows of one key."""

    __slots__ = ("acked", "pending")

    def __init__(self) -> None:
        self.acked: Any = _ABSENT
        self.pending: list[Any] = []   # indeterminate writes since the last ack

    def possible(self) -> list[Any]:
        return [self.acked, *self.pending]

    def ack(self, value: Any) -> None:
        self.acked = value
        self.pending.clear()


class Load:
    """``clients`` threads sending ``rate`` operations per second in total."""

    def __init__(self, client_ports: dict[int, int], *, clients: int = 4, rate: float = 300.0,
                 keys: int = 16, counters: int = 4, value_bytes: int = 100,
                 op_timeout: float = 10.0, seed: int = 1) -> None:
        if clients < 1 or rate <= 0 or keys < 1 or counters < 1:
            raise ValueError("clients, rate, keys and counters must be positive")
        self.ports = dict(client_ports)
        self.clients = clients
        self.rate = rate
        self.value_bytes = value_bytes
        self.op_timeout = op_timeout
        self.owned: list[dict[str, _Key]] = [
            {f"c{t}k{j}": _Key() for j in range(keys)} for t in range(clients)]
        self.counter_keys = [f"ctr{j}" for j in range(counters)]
        self.incr_acked: Counter[str] = Counter()
        self.incr_unknown: Counter[str] = Counter()
        self.ops: Counter[str] = Counter()       # successful operations, by kind
        self.errors: Counter[str] = Counter()    # failed ones, by kind and error
        self.bugs: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._rng = random.Random(seed)
        self._threads = [threading.Thread(target=self._worker, args=(t, self._rng.getrandbits(64)),
                                          name=f"soak-load-{t}", daemon=True)
                         for t in range(clients)]

    # ---------------------------------------------------------- control

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        wait = self.op_timeout + 5.0 if timeout is None else timeout
        for thread in self._threads:
            if thread.ident is not None:   # started
                thread.join(wait)

    def totals(self) -> tuple[int, int]:
        """(successful operations, errors) so far."""
        with self._lock:
            return sum(self.ops.values()), sum(self.errors.values())

    def keys(self) -> list[str]:
        return [k for owned in self.owned for k in owned] + self.counter_keys

    # ---------------------------------------------------------- the check at the end

    def check_final(self, data: dict[str, Any]) -> list[str]:
        """Problems with one replica's final dict (``dump``), against what
        the clients were told."""
        problems: list[str] = []
        for owned in self.owned:
            for key, state in owned.items():
                value = data.get(key, _ABSENT)
                if value not in state.possible():
                    problems.append(f"{key}: final value {_short(value)} was never written "
                                    f"there after the last acknowledged {_short(state.acked)} "
                                    f"(indeterminate since: {len(state.pending)})")
        for key in self.counter_keys:
            value = data.get(key, 0)
            low, high = self.incr_acked[key], self.incr_acked[key] + self.incr_unknown[key]
            if not isinstance(value, int) or not low <= value <= high:
                problems.append(f"{key}: final value {value!r} outside [{low}, {high}] "
                                f"(acknowledged incrs, + indeterminate ones)")
        expected = set(self.keys())
        extra = sorted(k for k in data if k not in expected and not k.startswith("__"))
        if extra:
            problems.append(f"keys nobody wrote: {extra[:10]}")
        return problems

    # ---------------------------------------------------------- the threads

    def _worker(self, tid: int, seed: int) -> None:
        rng = random.Random(seed)
        owned = self.owned[tid]
        names = list(owned)
        kinds = [k for k, _ in MIX]
        weights = [w for _, w in MIX]
        period = self.clients / self.rate
        seq = 0
        client = ClusterClient(self.ports, timeout=self.op_timeout,
                               attempt_timeout=min(2.0, self.op_timeout),
                               client_id=f"soak-{tid}-{rng.getrandbits(32):08x}")
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if next_at > now:
                    if self._stop.wait(next_at - now):
                        break
                elif now - next_at > 1.0:   # fell behind (a fault): no catch-up burst
                    next_at = now
                next_at += period
                kind = rng.choices(kinds, weights)[0]
                seq += 1
                value = f"{tid}.{seq}|".ljust(self.value_bytes, "x")
                if kind == "incr":
                    self._incr(client, rng.choice(self.counter_keys))
                else:
                    key = rng.choice(names)
                    self._on_owned(client, kind, key, owned[key], value)
        finally:
            client.close()

    def _count(self, kind: str, error: BaseException | None = None) -> None:
        with self._lock:
            if error is None:
                self.ops[kind] += 1
            else:
                self.errors[f"{kind}: {_error_name(error)}"] += 1

    def _bug(self, text: str) -> None:
        with self._lock:
            if len(self.bugs) < 100:
                self.bugs.append(text)

    def _incr(self, client: ClusterClient, key: str) -> None:
        try:
            client.incr(key)
        except (RaftError, OSError, ValueError) as exc:
            # Conservatively indeterminate, whatever the error: it only widens the range.
            with self._lock:
                self.incr_unknown[key] += 1
            self._count("incr", exc)
            return
        with self._lock:
            self.incr_acked[key] += 1
        self._count("incr")

    def _on_owned(self, client: ClusterClient, kind: str, key: str, state: _Key,
                  value: str) -> None:
        try:
            if kind == "set":
                client.set(key, value)
                state.ack(value)
            elif kind == "cas":
                clean = not state.pending
                if client.cas(key, state.acked, value):
                    state.ack(value)
                elif clean:
                    self._bug(f"cas on {key} expecting its last acknowledged value "
                              f"{_short(state.acked)} failed, and nobody else writes it")
                # else: an indeterminate write landed; its value stays possible.
            else:
                got, _ = client.read_index(key)
                if got not in state.possible():
                    self._bug(f"read of {key} returned {_short(got)}, not the last "
                              f"acknowledged {_short(state.acked)} nor one of "
                              f"{len(state.pending)} indeterminate writes since")
        except (RaftError, OSError, ValueError) as exc:
            if kind != "read":
                # Conservatively indeterminate (a CommandError is a refusal, but
                # treating it as maybe-applied only widens what is accepted).
                state.pending.append(value)
            self._count(kind, exc)
            return
        self._count(kind)


def _error_name(exc: BaseException) -> str:
    if isinstance(exc, CommandError):
        return str(exc.reply.get("error"))
    return type(exc).__name__


def _short(value: Any) -> str:
    return repr(value.split("|", 1)[0] + "|..." if isinstance(value, str) else value)
