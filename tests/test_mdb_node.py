"""Nodes on the asyncio engine with MDBStore: a cluster that restarts from
disk comes back with identical state; a uv-engine node refuses an MDBStore's
directory and MDBStore refuses a uv-engine one."""

from __future__ import annotations

import pytest

import canonical_raft as raft
from conftest import FAST, KV, WAIT, free_port, wait_for

pytest.importorskip("lmdb")
from canonical_raft.store import MDBStore  # noqa: E402


def start_cluster(tmp_path, addresses, *, bootstrap=True, config=FAST):
    nodes = {}
    for i, addr in addresses.items():
        d = tmp_path / f"n{i}"
        nodes[i] = raft.Node(i, addr, KV(), d, engine="asyncio", store=MDBStore(d),
                             cluster=addresses if bootstrap else None, config=config).start()
    return nodes


def leader_of(nodes):
    return wait_for(lambda: next((n for n in nodes.values() if n.is_leader), None),
                    what="a leader")


def converge(nodes):
    leader = leader_of(nodes)
    leader.barrier().result(WAIT)
    for n in nodes.values():
        n.wait_applied(leader.last_applied, WAIT)
    states = {i: n.fsm.state() for i, n in nodes.items()}
    assert len(set(map(repr, states.values()))) == 1, states
    return states[leader.id]


def test_cluster_restarts_from_disk_with_identical_state(tmp_path):
    addresses = {i: f"127.0.0.1:{free_port()}" for i in (1, 2, 3)}
    nodes = start_cluster(tmp_path, addresses)
    try:
        leader = leader_of(nodes)
        # Past several snapshots (threshold 64, trailing 16): compaction runs.
        # One at a time: commands in flight together may share one log entry.
        for i in range(300):
            leader.apply(f"set k{i % 50} v{i}".encode()).result(WAIT)
        before = converge(nodes)
        assert all(n.stats()["snapshot"]["taken"] >= 3 for n in nodes.values())
    finally:
        for n in nodes.values():
            n.close()
    # Every node restarts from its directory alone (no cluster=): same state.
    nodes = start_cluster(tmp_path, addresses, bootstrap=False)
    try:
        after = converge(nodes)
        assert after == before
        # The FSM came back from the snapshot plus the log, not from replication alone.
        assert all(n.fsm.restores >= 1 for n in nodes.values())
        leader = leader_of(nodes)
        leader.apply(b"set after restart").result(WAIT)
        converge(nodes)
    finally:
        for n in nodes.values():
            n.close()


def test_single_node_restart_keeps_every_acknowledged_command(tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    d = tmp_path / "n1"
    node = raft.Node(1, addr, KV(), d, engine="asyncio", store=MDBStore(d),
                     cluster={1: addr}, config=FAST).start()
    try:
        wait_for(lambda: node.is_leader, what="leader")
        for i in range(200):
            node.apply(f"incr c".encode()).result(WAIT)
        state = node.fsm.state()
    finally:
        node.close()
    node = raft.Node(1, addr, KV(), d, engine="asyncio", store=MDBStore(d), config=FAST).start()
    try:
        wait_for(lambda: node.is_leader, what="leader")
        node.barrier().result(WAIT)
        assert node.fsm.state()[0] == state[0] and state[0]["c"] == "200"
    finally:
        node.close()


def test_uv_engine_refuses_an_mdbstore_directory(tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    d = tmp_path / "n1"
    node = raft.Node(1, addr, KV(), d, engine="asyncio", store=MDBStore(d),
                     cluster={1: addr}, config=FAST).start()
    node.close()
    with pytest.raises(raft.InvalidConfigError, match="holds an MDBStore"):
        raft.Node(1, addr, KV(), d, cluster={1: addr}, config=FAST).start()


def test_mdbstore_refuses_a_uv_engine_directory(tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    d = tmp_path / "n1"
    node = raft.Node(1, addr, KV(), d, cluster={1: addr}, config=FAST).start()
    wait_for(lambda: node.is_leader, what="leader")
    node.close()
    with pytest.raises(raft.InvalidConfigError, match="uv engine"):
        raft.Node(1, addr, KV(), d, engine="asyncio", store=MDBStore(d), config=FAST).start()


def test_two_nodes_cannot_share_a_store(tmp_path):
    addr, addr2 = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    d = tmp_path / "n1"
    node = raft.Node(1, addr, KV(), tmp_path / "a", engine="asyncio", store=MDBStore(d),
                     cluster={1: addr}, config=FAST).start()
    try:
        with pytest.raises(raft.DataDirLockedError):
            raft.Node(1, addr2, KV(), tmp_path / "b", engine="asyncio", store=MDBStore(d),
                      cluster={1: addr2}, config=FAST).start()
    finally:
        node.close()
