"""A one-node cluster: apply results, indexes, barrier, the FSM exception policy,
stats() and configuration, input checks."""

from __future__ import annotations

import os

import pytest

import canonical_raft as raft
from conftest import WAIT, KV, free_port


@pytest.fixture
def node(cluster):
    return cluster(1).nodes[1]


def test_installed_package_is_tested():
    # The suite must exercise the installed build, not python/ from the tree.
    assert "site-packages" in raft.__file__
    assert raft.__libraft_version__ == "0.22.1"


def test_apply_returns_fsm_result_with_increasing_index(node):
    results, indexes = [], []
    for i in range(20):
        fut = node.apply(b"incr a")
        results.append(fut.result(WAIT))
        indexes.append(fut.index)
    assert results == list(range(1, 21))
    assert all(b > a for a, b in zip(indexes, indexes[1:])), indexes
    assert node.last_applied >= indexes[-1]
    assert node.fsm.data == {"a": "20"}


def test_apply_accepts_bytearray_and_memoryview(node):
    assert node.apply(bytearray(b"set k v1")).result(WAIT) == "v1"
    assert node.apply(memoryview(b"set k v2")).result(WAIT) == "v2"


def test_apply_rejects_bad_commands(node):
    with pytest.raises(TypeError):
        node.apply("incr a")  # str, not bytes
    big = b"x" * (raft.Config().command_limit() + 1)
    with pytest.raises(raft.TooBigError):
        node.apply(big)
    assert node.apply(b"incr a").result(WAIT) == 1  # still usable


def test_barrier_waits_for_every_earlier_apply(node):
    futures = [node.apply(b"incr n") for _ in range(500)]
    assert node.barrier().result(WAIT) is None
    # Everything submitted before the barrier is applied once it resolves.
    assert all(f.done() for f in futures)
    assert node.fsm.data["n"] == "500"
    assert node.last_applied >= max(f.index for f in futures)


def test_fsm_exception_fails_only_that_future(node):
    before = node.apply(b"incr a").result(WAIT)
    failing = node.apply(b"fail kaboom")
    with pytest.raises(ValueError, match="kaboom") as info:
        failing.result(WAIT)
    assert not isinstance(info.value, raft.RaftError)  # the FSM's own exception
    # The entry counts as applied: it has an index and last_applied passed it.
    assert failing.index is not None
    assert node.last_applied >= failing.index
    assert node.fsm.count == 2
    # Later commands keep working, in order after it.
    after = node.apply(b"incr a")
    assert after.result(WAIT) == before + 1
    assert after.index > failing.index
    assert node.is_leader


def test_wait_applied_times_out_with_raft_timeout_error(node):
    with pytest.raises(raft.TimeoutError) as info:
        node.wait_applied(node.last_applied + 1000, timeout=0.2)
    assert isinstance(info.value, TimeoutError)  # also the builtin


def test_stats_and_configuration(node, cluster):
    for _ in range(10):
        node.apply(b"incr a").result(WAIT)
    stats = node.stats()
    assert stats["id"] == 1
    assert stats["address"] == node.address
    assert stats["state"] == "LEADER"
    assert stats["leader_id"] == 1 and stats["leader_address"] == node.address
    assert stats["term"] >= 1
    assert stats["last_applied"] == node.last_applied >= 11  # bootstrap entry + 10
    assert stats["commit_index"] >= stats["last_applied"]
    assert stats["commands_proposed"] == 10
    assert stats["pending_applies"] == 0
    assert node.configuration == [raft.Server(1, node.address, raft.Role.VOTER)]
    assert node.leader == raft.Leader(1, node.address)
    assert node.state == raft.State.LEADER


def test_snapshots_are_taken_past_the_threshold(node):
    # FAST snapshots every 64 log entries; one at a time, each command is an entry
    # (concurrent applies would be packed into a few entries).
    for _ in range(150):
        node.apply(b"incr a").result(WAIT)
    assert node.stats()["entries_proposed"] >= 150
    assert node.stats()["snapshots_taken"] >= 2
    assert node.fsm.data["a"] == "150"


def test_transfer_is_refused_without_another_voter(node):
    with pytest.raises(raft.RaftError) as info:
        node.transfer().result(WAIT)
    # Regression: RAFT_NOTFOUND was mapped to StorageError (an OSError about the data dir).
    assert not isinstance(info.value, (raft.StorageError, OSError)), repr(info.value)
    assert node.is_leader


def test_invalid_arguments_are_rejected_before_c(tmp_path, port):
    addr = f"127.0.0.1:{port}"
    with pytest.raises(raft.InvalidConfigError):
        raft.Node(0, addr, KV(), tmp_path / "a")
    with pytest.raises(raft.InvalidConfigError):
        raft.Node(1, "127.0.0.1", KV(), tmp_path / "a")
    with pytest.raises(raft.InvalidConfigError):
        raft.Node(1, addr, KV(), tmp_path / "a", cluster={1: "127.0.0.1:1"})
    with pytest.raises(TypeError):
        raft.Node(1, addr, object(), tmp_path / "a")
    a_file = tmp_path / "file"
    a_file.write_text("not a dir")
    node = raft.Node(1, addr, KV(), a_file, cluster={1: addr})
    with pytest.raises(raft.InvalidConfigError):
        node.start()


def test_second_node_on_same_data_dir_is_refused(node, cluster):
    addr = f"127.0.0.1:{free_port()}"  # its own address: only the data dir is shared
    other = raft.Node(1, addr, KV(), node.data_dir, cluster={1: addr})
    with pytest.raises(raft.DataDirLockedError):
        other.start()
    assert os.path.isdir(node.data_dir)
    assert node.apply(b"incr a").result(WAIT) == 1
