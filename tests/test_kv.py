"""KVStore: commands, results, exactly-once client sessions, snapshots, reads
from other threads; and the same store behind a real (single) Node."""

from __future__ import annotations

import json
import threading
import time

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


# ------------------------------------------------------------------ the server's journal

def test_journal_places_commands_noops_and_restores_at_their_index():
    from canonical_raft.server import Journal, JournalStore, entry_digest

    journal = Journal(size=100)
    store = JournalStore(journal)
    a, b, c = (kv.set_cmd(k, 1, client="x", seq=n) for n, k in enumerate("abc", 1))
    journal.advance(2)                      # a barrier and the leader's no-op
    store.apply(a)
    store.apply(b)                          # one entry, two commands (a batch)
    journal.advance(3)
    journal.advance(3)                      # an event repeating the index: nothing
    journal.advance(5)                      # barriers, announced alone (ADVANCE)
    store.apply(c)
    store.apply(c)                          # a retry: deduplicated by the KVStore
    journal.advance(7)                      # a barrier at 6 applied with the command
    store.restore(store.snapshot())
    journal.advance(20)                     # the restore's index, set after restore()
    store.apply(kv.set_cmd("d", 1))
    journal.advance(21)
    got = journal.read(commands=True)
    entries = [{k: v for k, v in r.items() if k not in ("n", "commands")}
               for r in got["entries"]]
    assert entries == [{"noop": [1, 2]}, {"index": 3, "digest": entry_digest([a, b])},
                       {"noop": [4, 5]}, {"noop": [6, 6]},
                       {"index": 7, "digest": entry_digest([c, c])}, {"restore": 20},
                       {"index": 21, "digest": entry_digest([kv.set_cmd("d", 1)])}]
    assert [x["dup"] for x in got["entries"][4]["commands"]] == [False, True]
    assert got["entries"][1]["commands"][1]["cmd"] == json.loads(b)
    assert got["last_index"] == 21 and got["first"] == 0 and got["next"] == 7

    # A restore at start-up (index unknown): the next command's entry tells.
    fresh = Journal()
    fresh.restored()
    fresh.command(a, False)
    fresh.advance(9)
    assert [{k: v for k, v in r.items() if k not in ("n", "commands")}
            for r in fresh.read()["entries"]] == [{"restore": 8},
                                                   {"index": 9, "digest": entry_digest([a])}]


def test_journal_is_bounded_and_pages():
    from canonical_raft.server import Journal

    journal = Journal(size=10)
    for i in range(1, 26):
        journal.command(kv.set_cmd("k", i), False)
        journal.advance(i)
    page = journal.read(0, limit=4)
    assert page["first"] == 15 and [r["index"] for r in page["entries"]] == [16, 17, 18, 19]
    rest = journal.read(page["next"], limit=100)
    assert [r["index"] for r in rest["entries"]] == list(range(20, 26))
    assert rest["next"] == rest["end"] == 25


def test_journal_node_reports_every_applied_index(tmp_path):
    """A real node: write futures' indices match the journal, barriers are no-ops."""
    from canonical_raft.config import Config
    from canonical_raft.server import Journal, JournalNode, JournalStore, entry_digest

    journal = Journal()
    store = JournalStore(journal)
    address = f"127.0.0.1:{free_port()}"
    node = JournalNode(1, address, store, tmp_path / "n1", cluster={1: address},
                       config=Config(election_timeout=0.2, heartbeat_timeout=0.02),
                       journal=journal)
    node.start()
    try:
        deadline = time.monotonic() + 20
        while not node.is_leader and time.monotonic() < deadline:
            time.sleep(0.02)
        futs = []
        for i in range(50):
            cmd = kv.set_cmd(f"k{i}", i)
            futs.append((cmd, node.apply(cmd)))
            if i % 7 == 0:
                node.barrier().result(10)
        for _, f in futs:
            f.result(10)
        node.barrier().result(10)
        node.wait_applied(node.last_applied, 10)
        records = journal.read(commands=True)["entries"]
        at = {r["index"]: r for r in records if "index" in r}
        for cmd, f in futs:
            assert json.loads(cmd) in [c["cmd"] for c in at[f.index]["commands"]]
        # Consecutive indices from 1 to last_applied, each exactly once.
        covered = []
        for r in records:
            covered += list(range(r["noop"][0], r["noop"][1] + 1)) if "noop" in r \
                else [r["index"]]
        assert covered == list(range(1, node.last_applied + 1))
        for r in at.values():
            assert r["digest"] == entry_digest(
                [json.dumps(c["cmd"], separators=(",", ":")).encode() for c in r["commands"]])
    finally:
        node.close()
