"""Regression tests for the defects a code review found (issue 8), each
reproducing the original scenario."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import FAST, KV, WAIT, wait_for

import canonical_raft as raft

ASAN_SCRIPTS = Path(__file__).resolve().parent / "asan"


def test_failed_assign_leaves_no_dangling_request(tmp_path):
    # Defect 1: NoSpaceError from assign(), then SIGSEGV inside raft_close.
    proc = subprocess.run([sys.executable, str(ASAN_SCRIPTS / "assign_nospace.py"),
                           str(tmp_path / "d")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert "assign ok" in proc.stdout


def test_wait_applied_in_a_done_callback_raises_instead_of_hanging(cluster):
    # Defect 6: the applier resolves futures; waiting there waits on itself.
    c = cluster(1)
    leader = c.leader()
    outcome: list = []

    def done(fut):
        try:
            leader.wait_applied(fut.index + 1000, timeout=WAIT)
            outcome.append("returned")
        except raft.RaftError as exc:
            outcome.append(exc)

    leader.apply(b"set a 1").add_done_callback(done)
    wait_for(lambda: outcome, what="the callback to finish")
    assert isinstance(outcome[0], raft.RaftError) and "applier thread" in str(outcome[0])
    # Waiting for what is already applied is fine there.
    got: list = []
    leader.apply(b"set b 2").add_done_callback(
        lambda f: got.append(leader.wait_applied(f.index - 1, timeout=1) or "ok"))
    wait_for(lambda: got, what="the second callback")
    assert got == ["ok"]


def test_close_fails_every_pending_request_with_shutdown(cluster):
    # At close, barriers and membership changes failed with LeadershipLostError
    # while applies failed with ShutdownError.
    c = cluster(3)
    leader = c.leader()
    for node in c.followers():
        c.stop(node.id)
    pending = [leader.barrier(), leader.add(9, "127.0.0.1:1"), leader.apply(b"set k v")]
    leader.close()
    for fut in pending:
        exc = fut.exception(WAIT)
        assert isinstance(exc, raft.ShutdownError), (fut, exc)


def test_trace_logging_still_restores_before_start_returns(tmp_path, port, caplog):
    # Defect 2: with the libraft logger at DEBUG, trace items came before the
    # restore item, so start() returned before the snapshot was restored.
    addr = f"127.0.0.1:{port}"
    config = FAST.replace(snapshot_threshold=16, snapshot_trailing=4)
    with raft.Node(1, addr, KV(), tmp_path / "d", cluster={1: addr}, config=config) as node:
        node.wait_leader(WAIT)
        for i in range(60):
            node.apply(f"set k{i} {i}".encode()).result(WAIT)
        wait_for(lambda: node.stats()["snapshots_taken"] >= 2, what="snapshots")
        state = node.fsm.state()
    caplog.set_level("DEBUG", logger="canonical_raft.libraft")
    node = raft.Node(1, addr, KV(), tmp_path / "d", cluster={1: addr}, config=config).start()
    try:
        assert node.fsm.restores == 1  # restored before start() returned
        assert node.last_applied >= 48
        node.wait_leader(WAIT)
        node.barrier().result(WAIT)
        assert node.fsm.state() == state
    finally:
        node.close()
    assert any(r.name == "canonical_raft.libraft" for r in caplog.records)

    # And a damaged snapshot still fails start() with tracing on.
    d = tmp_path / "d"
    newest = max((f for f in d.iterdir() if f.name.startswith("snapshot-")
                  and not f.name.endswith(".meta")), key=lambda f: int(f.name.split("-")[2]))
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    with pytest.raises(raft.CorruptError):
        raft.Node(1, addr, KV(), d, cluster={1: addr}, config=config).start()


def test_single_voter_restart_with_a_configuration_entry_starts_at_once(tmp_path, port):
    # Defect 3: a configuration entry applied inside raft_start made libraft ask
    # for a snapshot at once, and start() froze for the whole snapshot_timeout.
    addr = f"127.0.0.1:{port}"
    config = FAST.replace(snapshot_threshold=16, snapshot_trailing=4)
    with raft.Node(1, addr, KV(), tmp_path / "d", cluster={1: addr}, config=config) as node:
        node.wait_leader(WAIT)
        for i in range(40):
            node.apply(f"set k{i} {i}".encode()).result(WAIT)
        node.add(2, "127.0.0.1:1").result(WAIT)  # a configuration entry at the tail
        node.apply(b"set last 1").result(WAIT)
    started = time.monotonic()
    with raft.Node(1, addr, KV(), tmp_path / "d", cluster={1: addr}, config=config) as node:
        elapsed = time.monotonic() - started
        node.wait_leader(WAIT)
        node.barrier().result(WAIT)
        assert node.fsm.data["last"] == "1"
    assert elapsed < 5.0, f"start() took {elapsed:.1f} s"


def test_snapshot_failures_back_off_log_once_and_show_in_stats(cluster, caplog):
    # Defect 5: a failing FSM.snapshot() was retried on every raft event (2,765
    # calls in 2 s) and a wrong return type was logged ~190 times in 0.74 s.
    class BadSnapshot(KV):
        calls = 0

        def snapshot(self):
            BadSnapshot.calls += 1
            return {"not": "bytes"}

    c = cluster(1, start=False)
    node = c.start(1, fsm=BadSnapshot(), config=FAST.replace(snapshot_threshold=8))
    node.wait_leader(WAIT)
    caplog.set_level("ERROR", logger="canonical_raft")
    stop = time.monotonic() + 2.5
    while time.monotonic() < stop:
        node.apply(b"set k v").result(WAIT)
    assert 1 <= BadSnapshot.calls <= 3, BadSnapshot.calls  # 1 s, then 2 s of backoff
    snap = node.stats()["snapshot"]
    assert snap["failures"] == BadSnapshot.calls and snap["taken"] == 0
    assert "dict" in snap["last_error"]
    logged = [r for r in caplog.records if "snapshot" in r.getMessage()]
    assert len(logged) == BadSnapshot.calls


def test_applies_and_threads_survive_a_snapshot_racing_close(cluster):
    # close() while the loop thread persists a snapshot: the put is cancelled,
    # nothing hangs, every future resolves.
    class Slow(KV):
        def snapshot(self):
            time.sleep(0.3)
            return super().snapshot()

    c = cluster(1, start=False)
    node = c.start(1, fsm=Slow(), config=FAST.replace(snapshot_threshold=4))
    node.wait_leader(WAIT)
    futures = []
    stopper = threading.Timer(0.5, node.close)
    stopper.start()
    try:
        while not node._closed:
            try:
                futures.append(node.apply(b"set k v"))
            except raft.ShutdownError:
                break
            time.sleep(0.002)
    finally:
        stopper.join()
    for fut in futures:
        fut.exception(WAIT)  # resolved, one way or the other
