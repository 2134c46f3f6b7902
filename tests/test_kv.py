"""KVStore: commands, results, exactly-once client sessions, snapshots, reads
from other threads; and the same store behind a real (single) Node."""

from __future__ import annotations

import json
import threading

import pytest

import canonical_raft as raft
from canonical_raft import kv
from canonical_raft.local_cluster import free_port


def test_set_get_delete():
    s = kv.KVStore()
    assert s.apply(kv.set_cmd("a", {"x": [1, 2]})) == {"ok": True}
    assert s.get("a") == {"x": [1, 2]}
    assert "a" in s and len(s) == 1
    assert s.apply(kv.delete_cmd("a")) == {"ok": True}
    assert s.apply(kv.delete_cmd("a")) == {"ok": False}
    assert s.get("a", "default") == "default"


def test_cas_compares_json_values():
    s = kv.KVStore()
    assert s.apply(kv.cas_cmd("k", None, 1)) == {"ok": True, "value": 1}  # None: absent
    assert s.apply(kv.cas_cmd("k", None, 2)) == {"ok": False, "value": 1}
    assert s.apply(kv.cas_cmd("k", True, 2)) == {"ok": False, "value": 1}  # True != 1 in JSON
    assert s.apply(kv.cas_cmd("k", 1, 3)) == {"ok": True, "value": 3}
    assert s.get("k") == 3


def test_incr():
    s = kv.KVStore()
    assert s.apply(kv.incr_cmd("n")) == {"ok": True, "value": 1}
    assert s.apply(kv.incr_cmd("n", 5)) == {"ok": True, "value": 6}
    s.apply(kv.set_cmd("t", "text"))
    result = s.apply(kv.incr_cmd("t"))
    assert result["ok"] is False and result["error"] == "not_an_integer"
    assert s.get("t") == "text"


def test_commands_are_compact_json():
    cmd = kv.set_cmd("k", "v", client="c1", seq=7)
    assert b" " not in cmd
    assert json.loads(cmd) == {"op": "set", "k": "k", "v": "v", "c": "c1", "s": 7}


@pytest.mark.parametrize("make", [
    lambda: kv.set_cmd(1, "v"),                         # key not a str
    lambda: kv.set_cmd("k", "v", client="c"),           # client without seq
    lambda: kv.set_cmd("k", "v", client="c", seq=0),    # seq starts at 1
    lambda: kv.set_cmd("k", float("nan")),              # NaN != NaN: replicas would differ
    lambda: kv.incr_cmd("k", 1.5),
    lambda: kv.encode("drop", "k"),
])
def test_bad_commands_are_refused_when_encoded(make):
    with pytest.raises((TypeError, ValueError)):
        make()


@pytest.mark.parametrize("command", [b"not json", b"[]", b'{"op":"nope","k":"a"}',
                                     b'{"op":"set","k":"a","c":"x","s":"1"}'])
def test_malformed_command_raises_in_apply(command):
    with pytest.raises(ValueError):
        kv.KVStore().apply(command)


def test_same_client_seq_applies_once_and_returns_cached_result():
    s = kv.KVStore()
    first = s.apply(kv.incr_cmd("n", client="c1", seq=1))
    again = s.apply(kv.incr_cmd("n", client="c1", seq=1))  # an indeterminate retry
    assert first == again == {"ok": True, "value": 1}
    assert s.get("n") == 1
    assert s.apply(kv.incr_cmd("n", client="c1", seq=2)) == {"ok": True, "value": 2}
    # Another client's seq numbers are its own.
    assert s.apply(kv.incr_cmd("n", client="c2", seq=1)) == {"ok": True, "value": 3}
    assert s.last_seq("c1") == 2 and s.last_seq("c2") == 1 and s.last_seq("c3") == 0


def test_a_retry_of_a_cas_returns_the_original_outcome():
    s = kv.KVStore()
    assert s.apply(kv.cas_cmd("k", None, "mine", client="c", seq=1))["ok"] is True
    # Retried after its success: re-evaluating would say False; the cache says True.
    assert s.apply(kv.cas_cmd("k", None, "mine", client="c", seq=1))["ok"] is True


def test_older_seq_is_not_applied():
    s = kv.KVStore()
    s.apply(kv.set_cmd("k", "new", client="c", seq=5))
    assert s.apply(kv.set_cmd("k", "old", client="c", seq=4)) == kv.STALE
    assert s.get("k") == "new"


def test_commands_without_client_are_not_deduplicated():
    s = kv.KVStore()
    s.apply(kv.incr_cmd("n"))
    s.apply(kv.incr_cmd("n"))
    assert s.get("n") == 2


def test_session_table_is_bounded_in_log_order():
    s = kv.KVStore(max_sessions=2)
    s.apply(kv.incr_cmd("n", client="a", seq=1))
    s.apply(kv.incr_cmd("n", client="b", seq=1))
    s.apply(kv.incr_cmd("n", client="a", seq=2))  # a is now the most recent
    s.apply(kv.incr_cmd("n", client="c", seq=1))  # evicts b
    assert (s.last_seq("a"), s.last_seq("b"), s.last_seq("c")) == (2, 0, 1)


def test_results_cannot_alter_the_cache():
    s = kv.KVStore()
    result = s.apply(kv.incr_cmd("n", client="c", seq=1))
    result["value"] = 99
    assert s.apply(kv.incr_cmd("n", client="c", seq=1))["value"] == 1


def test_snapshot_restore_keeps_data_and_sessions():
    s = kv.KVStore()
    s.apply(kv.set_cmd("a", [1, "two", None]))
    s.apply(kv.incr_cmd("n", client="c", seq=3))
    snap = s.snapshot()
    assert isinstance(snap, bytes)

    t = kv.KVStore()
    t.apply(kv.set_cmd("gone", 1))
    t.restore(snap)
    assert t.dump() == {"a": [1, "two", None], "n": 1}
    # The restored session still deduplicates the retry.
    assert t.apply(kv.incr_cmd("n", client="c", seq=3)) == {"ok": True, "value": 1}
    assert t.get("n") == 1
    assert t.snapshot() == snap


def test_reads_from_other_threads_while_applying():
    """Copies, snapshots and lookups from other threads never see a dict in
    the middle of a change (unguarded, iteration would raise)."""
    s = kv.KVStore()
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        seen = 0
        try:
            while not stop.is_set():
                size = len(s.dump())
                snap = json.loads(s.snapshot())
                assert seen <= size <= len(snap["data"])  # keys are only added
                seen = size
                s.items()
                s.get("k1")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(5000):
            s.apply(kv.set_cmd(f"k{i}", i, client=f"c{i % 7}", seq=i + 1))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    assert len(s) == 5000


def test_a_node_applies_a_retried_command_once(tmp_path):
    """Through Raft: the same (client, seq) proposed twice is applied once."""
    address = f"127.0.0.1:{free_port()}"
    store = kv.KVStore()
    config = raft.Config(election_timeout=0.5, heartbeat_timeout=0.05)
    with raft.Node(1, address, store, tmp_path / "n1", cluster={1: address},
                   config=config) as node:
        node.wait_leader(timeout=30)
        cmd = kv.incr_cmd("n", client="c", seq=1)
        first = node.apply(cmd).result(30)
        second = node.apply(cmd).result(30)
        assert first == second == {"ok": True, "value": 1}
        assert node.apply(kv.incr_cmd("n", client="c", seq=2)).result(30)["value"] == 2
        assert store.get("n") == 2
        with pytest.raises(ValueError):  # FSM errors reach the proposer; the node goes on
            node.apply(b"garbage").result(30)
        assert node.apply(kv.set_cmd("k", "v")).result(30) == {"ok": True}

    # Restarted from its data dir, it replays to the same state (sessions included).
    store2 = kv.KVStore()
    with raft.Node(1, address, store2, tmp_path / "n1", cluster={1: address},
                   config=config) as node:
        node.wait_leader(timeout=30)
        node.barrier().result(30)
        assert store2.dump() == {"n": 2, "k": "v"}
        assert node.apply(kv.incr_cmd("n", client="c", seq=2)).result(30)["value"] == 2
