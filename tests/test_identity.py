"""Data dir identity: a dir remembers its node id and cluster id
(canonical-raft.identity); start() refuses another node's or another cluster's
dir, joiners get the cluster id through the log, and dirs made before the file
existed still start."""

from __future__ import annotations

import json
import logging
import os

import pytest

import canonical_raft as raft
from canonical_raft import identity
from conftest import FAST, KV, WAIT, free_port, wait_for

IDENTITY = identity.IDENTITY_FILE


def stored(data_dir) -> dict:
    with open(os.path.join(data_dir, IDENTITY)) as f:
        return json.load(f)


def single(node_id: int, address: str, data_dir, cluster=None) -> raft.Node:
    return raft.Node(node_id, address, KV(), data_dir, cluster=cluster, config=FAST)


def run_once(node: raft.Node, commands: int = 3) -> None:
    with node:
        node.wait_leader(WAIT)
        for i in range(commands):
            node.apply(f"incr k{i}".encode()).result(WAIT)


def test_bootstrap_writes_the_identity(tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    run_once(single(1, addr, tmp_path / "n1", {1: addr}))
    doc = stored(tmp_path / "n1")
    assert doc["node_id"] == 1
    assert doc["cluster_id"] == identity.cluster_id_for({1: addr})
    assert not os.path.exists(tmp_path / "n1" / (IDENTITY + ".tmp"))


def test_dir_of_another_cluster_is_refused(tmp_path):
    addr, other = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    run_once(single(1, addr, tmp_path / "a", {1: addr}))      # cluster A: node 1 alone
    cluster_b = {1: addr, 2: other}
    node = single(1, addr, tmp_path / "a", cluster_b)         # started as node 1 of B
    with pytest.raises(raft.IdentityError) as info:
        node.start()
    a_id, b_id = identity.cluster_id_for({1: addr}), identity.cluster_id_for(cluster_b)
    assert a_id != b_id
    assert a_id in str(info.value) and b_id in str(info.value)
    assert node.state == raft.State.UNAVAILABLE  # it never ran (let alone led)
    run_once(single(1, addr, tmp_path / "a", {1: addr}))      # the right cluster still starts


def test_dir_of_another_node_is_refused(tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    run_once(single(1, addr, tmp_path / "n1", {1: addr}))
    for cluster in (None, {2: addr}):
        node = single(2, addr, tmp_path / "n1", cluster)
        with pytest.raises(raft.IdentityError, match=r"belongs to node 1, not to node 2"):
            node.start()
    assert stored(tmp_path / "n1")["node_id"] == 1


def test_joiner_gets_the_cluster_id_and_keeps_it(cluster):
    c = cluster(3)
    leader = c.leader()
    expected = identity.cluster_id_for(c.initial)
    joiner = c.start(4, bootstrap=False)
    assert stored(c.data_dir(4)) == {"version": 1, "node_id": 4, "cluster_id": None,
                                     "removed_at": None}
    leader.add_voter(4, joiner.address).result(WAIT)
    wait_for(lambda: stored(c.data_dir(4))["cluster_id"] == expected, what="joiner adopts id")

    c.stop(4)
    again = c.start(4, bootstrap=False)  # restarted: same dir, no cluster=
    assert stored(c.data_dir(4))["cluster_id"] == expected
    c.converge()
    c.stop(4)
    # It belongs to that cluster now: a different cluster dict is refused.
    other = {4: again.address, 5: f"127.0.0.1:{free_port()}"}
    node = raft.Node(4, again.address, KV(), c.data_dir(4), cluster=other, config=FAST,
                     engine=c.engine, store=c.stores.get(4))
    with pytest.raises(raft.IdentityError, match=expected):
        node.start()


def test_dir_without_identity_file_starts_and_adopts_one(tmp_path, caplog):
    addr = f"127.0.0.1:{free_port()}"
    run_once(single(1, addr, tmp_path / "old", {1: addr}), commands=5)
    os.remove(tmp_path / "old" / IDENTITY)  # as a dir from before this file existed
    caplog.set_level(logging.INFO, logger="canonical_raft")
    node = single(1, addr, tmp_path / "old", {1: addr})
    with node:
        node.wait_leader(WAIT)
        node.barrier().result(WAIT)
        assert node.fsm.count == 5  # its state is intact
    assert "no identity file" in caplog.text
    assert stored(tmp_path / "old") == {"version": 1, "node_id": 1, "removed_at": None,
                                        "cluster_id": identity.cluster_id_for({1: addr})}


def test_old_joiner_dir_without_cluster_adopts_the_announced_id(cluster):
    c = cluster(3)
    joiner = c.start(4, bootstrap=False)
    c.leader().add_voter(4, joiner.address).result(WAIT)
    c.converge()
    c.stop(4)
    os.remove(c.data_dir(4) / IDENTITY)
    c.start(4, bootstrap=False)
    assert stored(c.data_dir(4))["cluster_id"] is None
    c.leader().transfer().result(WAIT)  # a new leader announces the cluster id
    wait_for(lambda: stored(c.data_dir(4))["cluster_id"] == identity.cluster_id_for(c.initial),
             what="joiner adopts the announced id")


def test_ignored_cluster_is_logged(tmp_path, caplog):
    addr = f"127.0.0.1:{free_port()}"
    run_once(single(1, addr, tmp_path / "n1", {1: addr}))
    caplog.set_level(logging.INFO, logger="canonical_raft")
    with single(1, addr, tmp_path / "n1", {1: addr}) as node:
        node.wait_leader(WAIT)
    assert "cluster= is ignored" in caplog.text
    assert identity.cluster_id_for({1: addr}) in caplog.text


def test_empty_dir_with_a_stale_identity_is_reused(tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    os.makedirs(tmp_path / "n")
    identity.write(str(tmp_path / "n"), identity.Identity(7, "0123456789abcdef"))
    run_once(single(1, addr, tmp_path / "n", {1: addr}))  # no Raft state: nothing to protect
    assert stored(tmp_path / "n")["node_id"] == 1


def test_damaged_identity_file_is_corruption(tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    run_once(single(1, addr, tmp_path / "n1", {1: addr}))
    (tmp_path / "n1" / IDENTITY).write_text("{not json")
    with pytest.raises(raft.CorruptError, match=IDENTITY):
        single(1, addr, tmp_path / "n1", {1: addr}).start()


def test_reserved_records_never_reach_the_fsm_and_cannot_be_forged(tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    with single(1, addr, tmp_path / "n1", {1: addr}) as node:
        node.wait_leader(WAIT)
        with pytest.raises(raft.InvalidConfigError, match="reserved"):
            node.apply(identity.RECORD_PREFIX + b"{}")
        node.apply(b"incr a").result(WAIT)
        assert node.fsm.count == 1  # the leader's announcement was not applied to it
        assert node.stats()["commands_proposed"] == 1
