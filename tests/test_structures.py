"""Replicated structures (canonical_raft.structures) on a 3-node in-process
cluster: each structure from threads and asyncio, the lock's lease in log
time, and histories under leader changes and leader restarts checked by the linearizability
checker (the dict as a CAS register per key, the counter, the lock for
mutual exclusion)."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from typing import Any

import pytest

import canonical_raft as raft
from canonical_raft import structures
from canonical_raft.checker import CASRegister, Counter, Event, check_history
from canonical_raft.checker.history import OK, Operation
from canonical_raft.sessions import Session, encode_command, encode_register
from canonical_raft.structures import (LockNotHeldError, ReplCounter, ReplDict, ReplLock,
                                       ReplQueue, Structures)

from conftest import WAIT, wait_for


def start(cluster, **fsm_kwargs):
    c = cluster(3, start=False)
    c.fsm_kwargs = fsm_kwargs
    for i in c.addresses:
        c.start(i, fsm=structures.make_fsm(**fsm_kwargs))
    c.leader()
    return c


def session_of(c, **kwargs) -> Session:
    """A session over the cluster's nodes: the list chaos() updates in place."""
    if not hasattr(c, "live"):
        c.live = [c.nodes[i] for i in sorted(c.nodes)]
    return Session(c.live, timeout=WAIT, **kwargs)


def test_dict_counter_queue(cluster):
    c = start(cluster)
    s = session_of(c)
    d, n, q = ReplDict(s, "d"), ReplCounter(s, "n"), ReplQueue(s, "q")
    d["a"] = 1
    d.set("b", {"x": [1, 2]})
    assert d["a"] == 1 and d.get("b") == {"x": [1, 2]} and d.get("zz", 7) == 7
    assert d.cas("a", 1, 2) and not d.cas("a", 1, 3) and d["a"] == 2
    assert sorted(d.items()) == [("a", 2), ("b", {"x": [1, 2]})]
    assert d.pop("a") == 2 and not d.delete("a")
    with pytest.raises(KeyError):
        d["a"]
    assert [n.add(), n.add(5), n.add(-1)] == [1, 6, 5] and n.get() == 5
    assert q.put("x") == 1 and q.put("y") == 2 and len(q) == 2
    assert q.get() == "x" and q.get() == "y" and q.get("empty") == "empty"
    # Every replica applied the same: local views agree.
    leader = c.leader()
    leader.barrier().result(WAIT)
    for node in c.nodes.values():
        node.wait_applied(leader.last_applied, WAIT)
        assert d.local_view(node) == {"b": {"x": [1, 2]}} and n.local_view(node) == 5


def test_structures_from_asyncio(cluster):
    c = start(cluster)
    s = session_of(c)
    d, n, q = ReplDict(s, "d"), ReplCounter(s, "n"), ReplQueue(s, "q")
    lock = ReplLock(s, "l", lease=30)

    async def main():
        await asyncio.gather(*(n.aadd() for _ in range(10)),
                             *(d.aset(f"k{i}", i) for i in range(5)))
        async with lock:
            assert (await lock.aacquire(blocking=False))  # renew while held
        await q.aput(1)
        return await n.aget(), await d.aget("k3"), await q.aget(), await d.acas("k1", 1, 9)
    assert asyncio.run(main()) == (10, 3, 1, True)


def test_counter_from_threads_no_lost_or_double_adds(cluster):
    c = start(cluster)
    counters = [ReplCounter(session_of(c), "hits") for _ in range(4)]
    threads = [threading.Thread(target=lambda k=k: [k.add() for _ in range(25)])
               for k in counters]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert counters[0].get() == 100


def test_lock_owner_and_release(cluster):
    c = start(cluster)
    a, b = ReplLock(session_of(c), "job", lease=30), ReplLock(session_of(c), "job", lease=30)
    assert a.acquire(blocking=False)
    assert not b.acquire(blocking=False)
    assert not b.acquire(timeout=0.2)
    with pytest.raises(LockNotHeldError):
        b.release()
    assert a.holder()["holder"] == a.session.client_id
    token = a.token
    a.release()
    assert not a.locked()
    with b:
        assert b.token > token  # fencing tokens grow with each new holder
    assert not b.locked()


def test_lock_lease_runs_out_in_log_time_only():
    """On the bare FSM, with stamps given: the lease is measured on the stamps
    the proposers put in the log, never on a replica's clock."""
    fsm = structures.make_fsm()

    def acquire(client, seq, t_ms, lease=10):
        body = b'{"o":"lock.acquire","n":"l","lease":%d}' % lease
        return fsm.apply(encode_command(client, seq, body, stamp_ms=t_ms))
    fsm.apply(encode_register("a", stamp_ms=0))
    fsm.apply(encode_register("b", stamp_ms=0))
    assert acquire("a", 1, 1_000)["ok"]
    assert not acquire("b", 1, 5_000)["ok"]
    time.sleep(0.01)  # the wall clock moves; log time does not
    assert not acquire("b", 2, 10_999)["ok"]
    won = acquire("b", 3, 11_000)  # a's lease (1 s + 10 s) is over at 11 s of log time
    assert won["ok"] and won["expires"] == 21.0
    assert not acquire("a", 2, 12_000)["ok"]
    assert isinstance(fsm.inner, Structures) and fsm.inner.view("lock", "l")["holder"] == "b"


def test_lock_expires_for_a_silent_holder(cluster):
    c = start(cluster)
    holder, waiter = ReplLock(session_of(c), "l", lease=0.3), ReplLock(session_of(c), "l")
    assert holder.acquire(blocking=False)
    assert waiter.acquire(timeout=WAIT)   # the holder never renews: its lease runs out
    with pytest.raises(LockNotHeldError):
        holder.release()


# ------------------------------------------------------------------ under the checker

class Mutex:
    """A lock: ``acquire`` (ok: the process got it), ``release`` (ok: it held it).
    State: the holding process or None. An indeterminate acquire may or may
    not have taken it; an indeterminate release may or may not have freed it."""

    name = "mutex"

    def init(self) -> Any:
        return None

    def step(self, state: Any, op: Operation) -> tuple[bool, Any]:
        owner = op.value
        if op.f == "acquire":  # the holder may acquire again: it renews
            if state is None or state == owner:
                return True, owner
            return op.status != OK, state
        if op.f == "release":
            if state == owner:
                return True, None
            return op.status != OK, state
        raise ValueError(op.f)


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.lock = threading.Lock()
        self.ids = itertools.count(1)

    def run(self, process: Any, f: str, key: Any, value: Any, call, result=None) -> Any:
        """Record invoke, run ``call``; ok/fail/info by its outcome. ``result``
        maps the return value to (type, recorded value)."""
        with self.lock:
            self.events.append(Event(process, "invoke", f, time.monotonic_ns(), key, value))
        try:
            out = call()
        except raft.RaftError as exc:
            if not exc.indeterminate:
                kind, rec = "fail", value
            else:
                kind, rec = "info", value
            out = exc
        else:
            kind, rec = result(out) if result else ("ok", value)
        with self.lock:
            self.events.append(Event(process, kind, f, time.monotonic_ns(), key, rec))
        return out


def chaos(c, stop: threading.Event) -> None:
    """While the clients run: hand leadership around, and every third move
    stop the leader (its commands in flight end indeterminate) and start it
    again from its data dir, in its place in the sessions' node list."""
    for move in itertools.count(1):
        if stop.wait(0.4):
            return
        try:
            leader = c.leader(timeout=5)
            if move % 3:
                leader.transfer().result(5)
                continue
            fsm_kwargs = getattr(c, "fsm_kwargs", {})
            c.stop(leader.id)
            stop.wait(0.3)
            node = c.start(leader.id, fsm=structures.make_fsm(**fsm_kwargs))
            c.restarts = getattr(c, "restarts", 0) + 1
            c.live[[n.id for n in c.live].index(leader.id)] = node
        except Exception:
            pass


def run_clients(c, body, n_clients: int, seconds: float) -> None:
    stop = threading.Event()
    nemesis = threading.Thread(target=chaos, args=(c, stop))
    threads = [threading.Thread(target=body, args=(i, stop)) for i in range(n_clients)]
    nemesis.start()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads + [nemesis]:
        t.join(WAIT * 2)


@pytest.mark.engines("uv", reason="one engine is enough for the checker runs; sessions "
                                  "are engine-agnostic and covered on both above")
def test_dict_is_a_linearizable_register_per_key(cluster):
    c = start(cluster)
    rec = Recorder()
    keys = ["k0", "k1", "k2"]

    def client(i: int, stop: threading.Event) -> None:
        d = ReplDict(session_of(c, attempt_timeout=2), "reg")
        rnd = random.Random(i)
        while not stop.is_set():
            key, p = rnd.choice(keys), f"{i}"
            r = rnd.random()
            if r < 0.4:
                rec.run(p, "read", key, None, lambda: d.get(key), lambda v: ("ok", v))
            elif r < 0.8:
                v = next(rec.ids)
                rec.run(p, "write", key, v, lambda: d.set(key, v))
            else:
                old, v = rnd.randint(1, 40), next(rec.ids)
                rec.run(p, "cas", key, [old, v], lambda: d.cas(key, old, v),
                        lambda ok: ("ok" if ok else "fail", [old, v]))
    run_clients(c, client, 4, 4.0)
    assert getattr(c, "restarts", 0) >= 1
    # Indeterminate operations keep their process open: give them fresh ids.
    result = check_history(_reopen(rec.events), CASRegister(), time_limit=60)
    assert result.verdict == "ok", result.explanation
    assert sum(e.type == "ok" for e in rec.events) > 50


@pytest.mark.engines("uv", reason="one engine is enough for the checker runs")
def test_counter_is_linearizable(cluster):
    c = start(cluster)
    rec = Recorder()

    def client(i: int, stop: threading.Event) -> None:
        n = ReplCounter(session_of(c, attempt_timeout=2), "n")
        rnd = random.Random(i)
        while not stop.is_set():
            if rnd.random() < 0.5:
                rec.run(str(i), "read", "n", None, n.get, lambda v: ("ok", v))
            else:
                d = rnd.randint(1, 3)
                rec.run(str(i), "add", "n", d, lambda: n.add(d))
    run_clients(c, client, 4, 4.0)
    result = check_history(_reopen(rec.events), Counter(), time_limit=60)
    assert result.verdict == "ok", result.explanation


@pytest.mark.engines("uv", reason="one engine is enough for the checker runs")
def test_lock_gives_mutual_exclusion(cluster):
    c = start(cluster)
    rec = Recorder()
    inside = []  # (process, enter ns, leave ns) of every critical section

    def client(i: int, stop: threading.Event) -> None:
        lock = ReplLock(session_of(c, attempt_timeout=2), "m", lease=60)
        while not stop.is_set():
            got = rec.run(str(i), "acquire", "m", str(i), lambda: lock.try_acquire(),
                          lambda ok: ("ok" if ok else "fail", str(i)))
            if got is True:
                t0 = time.monotonic_ns()
                time.sleep(0.005)
                inside.append((i, t0, time.monotonic_ns()))
                rec.run(str(i), "release", "m", str(i), lambda: lock.release())
            time.sleep(0.002)
    run_clients(c, client, 3, 4.0)
    result = check_history(_reopen(rec.events), Mutex(), time_limit=60)
    assert result.verdict == "ok", result.explanation
    # And directly: no two critical sections overlap in real time.
    inside.sort(key=lambda s: s[1])
    for (_, _, end), (_, start_, _) in zip(inside, inside[1:]):
        assert end <= start_
    assert len(inside) > 5


def _reopen(events: list[Event]) -> list[Event]:
    """A process continues under a new id after an indeterminate op."""
    gen: dict[Any, int] = {}
    out = []
    for e in events:
        pid = f"{e.process}.{gen.get(e.process, 0)}"
        out.append(Event(pid, e.type, e.f, e.t, e.key, e.value, e.index, e.node))
        if e.type == "info":
            gen[e.process] = gen.get(e.process, 0) + 1
    return out


def test_mutex_model_catches_two_holders():
    """The check above is not vacuous: two overlapping holders are illegal."""
    t = iter(range(1, 100))
    events = [Event("1", "invoke", "acquire", next(t), "m", "1"),
              Event("1", "ok", "acquire", next(t), "m", "1"),
              Event("2", "invoke", "acquire", next(t), "m", "2"),
              Event("2", "ok", "acquire", next(t), "m", "2")]
    assert check_history(events, Mutex()).verdict == "illegal"
