"""Forwarding (opt-in, Node(forward={id: address})): apply() and barrier() on a
follower travel to the leader and resolve to its result, on both engines."""

from __future__ import annotations

import time

import pytest
from conftest import FAST, KV, WAIT, free_port, wait_for

import canonical_raft as raft
from canonical_raft.sessions import Session, SessionFSM


@pytest.fixture
def forwarding_cluster(cluster):
    def make(fsm_factory=KV):
        c = cluster(3, start=False)
        forward = {i: f"127.0.0.1:{free_port()}" for i in c.addresses}

        def start(i):
            node = c.make(i, fsm=fsm_factory(), forward=forward).start()
            c.nodes[i] = node
            return node
        for i in c.addresses:
            start(i)
        leader = c.leader()
        # A follower that knows no leader yet refuses at once (NotLeaderError,
        # nothing applied): let every follower hear from the leader first.
        wait_for(lambda: all(n.leader is not None and n.leader.id == leader.id
                             for n in c.nodes.values()), what="every node knows the leader")
        return c, forward, start
    return make


def test_a_follower_forwards_to_the_leader_and_gets_its_result(forwarding_cluster):
    c, _, _ = forwarding_cluster()
    leader = c.leader()
    follower = c.followers()[0]
    assert follower.apply(b"set k v").result(WAIT) == "v"
    assert [follower.apply(b"incr n") for _ in range(100)][-1].result(WAIT) == 100
    follower.barrier().result(WAIT)
    assert follower.fsm.data["n"] == "100"  # a forwarded barrier: applied here too
    with pytest.raises(ValueError):       # the FSM's own exception comes back named
        follower.apply(b"fail boom").result(WAIT)
    assert leader.fsm.data["k"] == "v"
    c.converge()


class SlowKV(KV):
    """Applies slowly, so a follower's FSM trails the leader's."""

    def apply(self, command: bytes):
        if command.startswith(b"incr"):
            time.sleep(0.002)
        return super().apply(command)


def test_a_forwarded_barrier_waits_for_this_fsm_not_only_the_leaders(forwarding_cluster):
    c, _, _ = forwarding_cluster(SlowKV)
    follower = c.followers()[0]
    futs = [follower.apply(b"incr n") for _ in range(300)]
    assert futs[-1].result(WAIT) == 300
    follower.barrier().result(WAIT)
    assert follower.fsm.data["n"] == "300"  # the leader's applied index, reached here


def test_forwarding_is_opt_in_per_node(cluster):
    c = cluster(3)
    with pytest.raises(raft.NotLeaderError):
        c.followers()[0].apply(b"set k v").result(WAIT)


def test_leader_loss_keeps_forwarded_writes_exactly_once_with_a_session(forwarding_cluster):
    c, _, start = forwarding_cluster(lambda: SessionFSM(KV()))
    leader = c.leader()
    follower = c.followers()[0]
    session = Session([follower])  # the follower forwards for it
    for i in range(20):
        session.call(f"incr a".encode(), timeout=WAIT)
    c.stop(leader.id)
    wait_for(lambda: any(n.is_leader for n in c.nodes.values()), what="a new leader")
    for i in range(20):
        session.call(f"incr a".encode(), timeout=WAIT)
    start(leader.id)
    new = c.leader()
    new.barrier().result(WAIT)
    for node in c.nodes.values():
        node.wait_applied(new.last_applied, WAIT)
        assert node.fsm.inner.data["a"] == "40", node.fsm.inner.data  # no loss, no double


def test_a_bad_forward_map_is_refused(tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    with pytest.raises(raft.InvalidConfigError, match="forward"):
        raft.Node(1, addr, KV(), tmp_path, cluster={1: addr}, forward={2: "127.0.0.1:1"})
    with pytest.raises(raft.InvalidConfigError):
        raft.Node(1, addr, KV(), tmp_path, cluster={1: addr}, forward={1: "nohost"})


def test_garbage_on_the_forwarding_port_is_refused_and_logged(forwarding_cluster, caplog):
    """Hostile input: a bad kind, a length below the header or past the cap, a
    frame cut short, random bytes, and a storm of idle connections past the
    cap: each is refused (logged), nothing is applied, the node keeps serving."""
    import logging
    import socket
    import struct

    from canonical_raft import forwarding

    caplog.set_level(logging.WARNING, logger="canonical_raft.forwarding")
    c, forward, _ = forwarding_cluster()
    leader = c.leader()
    host, port = forward[leader.id].split(":")
    frames = [struct.pack("<IBQ", 9 + 5, 7, 1) + b"set x",        # unknown kind
              struct.pack("<IBQ", 3, 0, 1),                       # length below the header
              struct.pack("<IBQ", forwarding.MAX_FRAME + 1, 0, 1),  # past the cap
              struct.pack("<IBQ", 9 + 100, 0, 1) + b"set x 1",    # cut short, then closed
              bytes(range(256)) * 4]                              # noise
    for frame in frames:
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.settimeout(5)
            try:
                s.sendall(frame)
                s.shutdown(socket.SHUT_WR)
                assert s.recv(100) == b""  # closed without an answer
            except (ConnectionResetError, BrokenPipeError, OSError) as exc:
                assert not isinstance(exc, socket.timeout)  # closed, never stalled
    storm = [socket.create_connection((host, int(port)), timeout=5)
             for _ in range(forwarding.MAX_CONNECTIONS + 5)]
    try:
        wait_for(lambda: "open already" in caplog.text, what="the storm refused")
    finally:
        for s in storm:
            s.close()
    assert "bad frame" in caplog.text
    assert "x" not in leader.fsm.data
    follower = c.followers()[0]
    wait_for(lambda: leader._fwd_server.connections <= 1, what="the storm's threads gone")
    assert follower.apply(b"set ok 1").result(WAIT) == "1"  # still serving
