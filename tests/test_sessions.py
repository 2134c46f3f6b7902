"""Exactly-once client sessions (canonical_raft.sessions): the table's rules
on a bare SessionFSM, then Session over a 3-node in-process cluster across
leader changes, snapshots and restarts."""

from __future__ import annotations

import asyncio
import json

import pytest

import canonical_raft as raft
from canonical_raft import sessions
from canonical_raft.sessions import (Session, SessionExpiredError, SessionFSM,
                                     StaleCommandError, encode_command, encode_register)

from conftest import FAST, WAIT, wait_for


class Sum(raft.FSM):
    """Adds ints; counts every apply so duplicates show."""

    def __init__(self) -> None:
        self.total = 0
        self.applied = 0

    def apply(self, command: bytes):
        if command == b"boom":
            raise RuntimeError("boom")
        self.applied += 1
        self.total += int(command)
        return self.total

    def snapshot(self) -> bytes:
        return json.dumps([self.total, self.applied]).encode()

    def restore(self, snapshot: bytes) -> None:
        self.total, self.applied = json.loads(snapshot)


def cmd(client, seq, body, acked=None, t=None):
    return encode_command(client, seq, body, acked=acked, stamp_ms=t)


# ------------------------------------------------------------------ the table

def test_duplicate_returns_cached_result_and_applies_once():
    fsm = SessionFSM(Sum())
    assert fsm.apply(encode_register("c")) is True
    assert fsm.apply(cmd("c", 1, b"5")) == 5
    assert fsm.apply(cmd("c", 1, b"5")) == 5
    assert fsm.apply(cmd("c", 2, b"1")) == 6
    assert fsm.inner.applied == 2 and fsm.inner.total == 6


def test_unregistered_client_is_refused_not_applied():
    fsm = SessionFSM(Sum())
    result = fsm.apply(cmd("nobody", 1, b"5"))
    assert isinstance(result, SessionExpiredError)
    assert fsm.inner.applied == 0


def test_plain_commands_pass_through():
    fsm = SessionFSM(Sum())
    assert fsm.apply(b"3") == 3 and fsm.apply(b"3") == 6


def test_pipelined_commands_and_acked_drops_results():
    fsm = SessionFSM(Sum())
    fsm.apply(encode_register("c"))
    # Three in flight: each says seq 1 is the lowest unanswered.
    assert [fsm.apply(cmd("c", s, b"1", acked=1)) for s in (1, 2, 3)] == [1, 2, 3]
    # Retried out of order, still cached.
    assert fsm.apply(cmd("c", 2, b"1", acked=1)) == 2
    # The client had every answer up to 3: 1..3 are dropped; a late 2 is stale.
    assert fsm.apply(cmd("c", 4, b"1", acked=4)) == 4
    assert isinstance(fsm.apply(cmd("c", 2, b"1", acked=2)), StaleCommandError)
    assert fsm.inner.applied == 4


def test_inner_exception_is_cached_and_reraised():
    fsm = SessionFSM(Sum())
    fsm.apply(encode_register("c"))
    with pytest.raises(RuntimeError):
        fsm.apply(cmd("c", 1, b"boom"))
    with pytest.raises(sessions.CommandFailedError, match="boom"):
        fsm.apply(cmd("c", 1, b"boom"))


def test_expiry_by_entries_is_deterministic():
    def run():
        fsm = SessionFSM(Sum(), expire_after_entries=3)
        out = [fsm.apply(encode_register("idle")), fsm.apply(encode_register("busy"))]
        for s in range(1, 5):
            out.append(fsm.apply(cmd("busy", s, b"1")))
        out.append(fsm.apply(cmd("idle", 1, b"1")))
        return fsm, out
    fsm, out = run()
    assert isinstance(out[-1], SessionExpiredError)
    assert fsm.has_session("busy") and not fsm.has_session("idle")
    assert fsm.table.expired == 1
    # Same commands, same outcome: nothing but the log decides.
    _, again = run()
    assert [repr(x) for x in out] == [repr(x) for x in again]


def test_expiry_by_log_time_uses_stamps_not_the_local_clock():
    fsm = SessionFSM(Sum(), expire_after_entries=None, expire_after=10.0)
    fsm.apply(encode_register("a", stamp_ms=1_000))
    fsm.apply(encode_register("b", stamp_ms=1_000))
    assert fsm.apply(cmd("b", 1, b"1", t=5_000)) == 1
    assert fsm.has_session("a")
    # 10 s of log time later (stamps only): a expires, b (active at 5 s) stays.
    fsm.apply(cmd("b", 2, b"1", t=11_500))
    assert not fsm.has_session("a") and fsm.has_session("b")
    # A stamp from a clock that went back never moves log time back.
    fsm.apply(cmd("b", 3, b"1", t=2_000))
    assert fsm.now == 11.5


def test_max_sessions_drops_least_recently_active():
    fsm = SessionFSM(Sum(), max_sessions=2)
    for c in "abc":
        fsm.apply(encode_register(c))
    assert not fsm.has_session("a") and fsm.sessions() == 2


def test_snapshot_restore_keeps_table_clock_and_cached_results():
    fsm = SessionFSM(Sum(), expire_after_entries=100)
    fsm.apply(encode_register("c", stamp_ms=1_000))
    fsm.apply(cmd("c", 1, b"7", t=123_000))
    fsm.apply(cmd("c", 2, b"1", acked=1, t=120_000))
    snap = b"".join(bytes(p) for p in fsm.snapshot())
    other = SessionFSM(Sum(), expire_after_entries=100)
    other.restore(snap)
    assert other.inner.total == 8 and other.clock == fsm.clock and other.now == 123.0
    assert other.apply(cmd("c", 1, b"7", acked=1)) == 7  # still cached
    assert other.inner.applied == 2
    assert b"".join(bytes(p) for p in other.snapshot()) != b""


def test_bytes_results_survive_a_snapshot():
    class Echo(Sum):
        def apply(self, command):
            return {"raw": command, "t": (1, 2)}
    fsm = SessionFSM(Echo())
    fsm.apply(encode_register("c"))
    fsm.apply(cmd("c", 1, b"\x00\xff"))
    other = SessionFSM(Echo())
    other.restore(b"".join(bytes(p) for p in fsm.snapshot()))
    assert other.apply(cmd("c", 1, b"\x00\xff")) == {"raw": b"\x00\xff", "t": [1, 2]}


# ------------------------------------------------------------------ on a cluster

def session_cluster(cluster, **fsm_kwargs):
    c = cluster(3, start=False)
    for i in c.addresses:
        c.start(i, fsm=SessionFSM(Sum(), **fsm_kwargs))
    c.leader()
    return c


def test_session_retry_after_leader_change_applies_once(cluster):
    c = session_cluster(cluster)
    session = Session(list(c.nodes.values()), timeout=WAIT)
    assert session.call(b"1") == 1
    # An indeterminate command: proposed on the leader, then the leader goes.
    leader = c.leader()
    wrapped = session._wrap(session._next(), b"10")
    leader.apply(wrapped)
    c.stop(leader.id)
    new_leader = c.leader(exclude=(leader.id,))
    # The retry (what Session does) carries the same seq: applied once at most.
    for _ in range(2):
        try:
            result = new_leader.apply(wrapped).result(WAIT)
        except raft.NotLeaderError:
            continue
    assert result == 11
    session.nodes = list(c.nodes.values())
    assert session.call(b"100") == 111
    for node in c.nodes.values():
        node.wait_applied(new_leader.last_applied, WAIT)
        assert node.fsm.inner.total == 111 and node.fsm.inner.applied == 3


def test_sessions_survive_snapshots_and_restarts(cluster):
    c = session_cluster(cluster)
    session = Session(list(c.nodes.values()), timeout=WAIT)
    for _ in range(FAST.snapshot_threshold * 2):  # crosses at least one snapshot
        session.call(b"1")
    last = encode_command(session.client_id, session._seq, b"1")
    total = 2 * FAST.snapshot_threshold
    leader = c.leader()
    assert leader.stats()["snapshots_taken"] >= 1
    for i in list(c.nodes):
        c.stop(i)
    for i in c.addresses:
        c.start(i, fsm=SessionFSM(Sum()))
    leader = c.leader()
    # The restarted table still knows the last seq: a late retry is a duplicate.
    assert leader.apply(last).result(WAIT) == total
    session.nodes = list(c.nodes.values())
    assert session.call(b"1") == total + 1
    assert leader.fsm.inner.applied == total + 1


def test_session_from_threads_and_asyncio(cluster):
    c = session_cluster(cluster)
    nodes = list(c.nodes.values())
    session = Session(nodes, timeout=WAIT)

    async def main():
        return await asyncio.gather(*(session.acall(b"1") for _ in range(20)))
    results = asyncio.run(main())
    assert sorted(results) == list(range(1, 21))

    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        more = list(pool.map(lambda _: session.call(b"1"), range(20)))
    assert sorted(more) == list(range(21, 41))
    leader = c.leader()
    wait_for(lambda: leader.fsm.inner.applied == 40, what="40 applies")


def test_expired_session_is_refused_then_a_new_one_opens(cluster):
    c = session_cluster(cluster, expire_after_entries=5)
    nodes = list(c.nodes.values())
    idle = Session(nodes, timeout=WAIT)
    busy = Session(nodes, timeout=WAIT)
    idle.call(b"1")
    old_id = idle.client_id
    for _ in range(7):
        busy.call(b"1")
    with pytest.raises(SessionExpiredError):
        idle.call(b"1")
    assert idle.client_id != old_id
    assert idle.call(b"1") == 9
