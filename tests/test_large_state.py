"""Acceptance of issue 8, "the loop thread never waits for Python": a large FSM
whose snapshot() is slow costs no leadership change and no failed write.

Three ``canonical_raft serve`` processes run a KVStore wrapped in the test rig's
SlowFSM (canonical_raft._slowfsm): every snapshot carries a ballast of
BALLAST_MB MiB and FSM.snapshot() sleeps 3 election timeouts. A client writes
continuously for WRITE_SECONDS. If any node's loop thread waited for
FSM.snapshot(), it would send no heartbeat (leader) or answer no AppendEntries
(follower) for 3 election timeouts: an election follows, and writes fail.

Asserted: the leader and term seen at the start are the only ones any node
reports during and after the run, and no node logged a state change; every
write succeeded at its first attempt; every node took snapshots and compacted
its log (snapshot files present, the first segment no longer starts at index 1);
the nodes converge with every acknowledged write. The loop thread's latency
(``node.stats()`` round trips timed in each node process) is printed, overall
and during FSM.snapshot() calls, and its maximum must stay below an election
timeout.

The backlog test adds 150k queued applies of 20 us each (FSM.apply busy-waits)
with a snapshot threshold of 64: a snapshot asked for while the applier is
seconds behind must not hold the loop thread either.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

import pytest

from canonical_raft.client import ClusterClient
from canonical_raft.local_cluster import LocalCluster

pytestmark = pytest.mark.timeout(150)

ELECTION = 1.0                       # seconds
SNAPSHOT_DELAY = 3 * ELECTION        # FSM.snapshot() sleeps this long
WRITE_SECONDS = float(os.environ.get("CRAFT_LARGE_STATE_SECONDS", "15"))
BALLAST_MB = float(os.environ.get("CRAFT_LARGE_STATE_MB", "16"))
BACKLOG = 150_000                    # queued applies in the backlog test
APPLY_DELAY = 20e-6                  # FSM.apply busy-waits this long per command
WAIT = 60.0

SEGMENT = re.compile(r"^(\d{16})-(\d{16})$")
SNAPSHOT = re.compile(r"^snapshot-\d+-\d+-\d+$")
SEE = "(figures: the LARGE-STATE line printed above)"
STATE_LINE = re.compile(r"state (\w+), term (\d+), leader (\w+)")


def server_args(threshold: int, apply_delay: float = 0.0) -> list[str]:
    return ["--election-timeout", str(ELECTION), "--heartbeat-timeout", "0.1",
            # A short trailing keeps compaction visible: old segments get deleted.
            "--snapshot-threshold", str(threshold), "--snapshot-trailing", str(threshold // 4),
            "--apply-timeout", str(WAIT),
            "--fsm-ballast-mb", str(BALLAST_MB), "--fsm-snapshot-delay", str(SNAPSHOT_DELAY),
            "--fsm-apply-delay", str(apply_delay), "--loop-probe", "0.005",
            "--max-pending-commands", str(2 * BACKLOG)]  # the whole backlog queued at once


@pytest.fixture
def cluster(tmp_path):
    made: list[LocalCluster] = []

    def make(args: list[str]) -> LocalCluster:
        c = LocalCluster(tmp_path / "cluster", 3, server_args=args)
        made.append(c)
        c.start_all(timeout=WAIT)
        return c

    yield make
    for c in made:
        c.close()


class Writer(threading.Thread):
    """Sets key-N = N, one write at a time, until stopped. A write that needed a
    second attempt (redirect, timeout, leadership lost, no answer) or raised is
    a failed write."""

    def __init__(self, client: ClusterClient) -> None:
        super().__init__(daemon=True, name="writer")
        self.client = client
        self.acked: dict[str, int] = {}
        self.failed: list[str] = []
        self.slowest = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            retries, t0 = self.client.retries, time.monotonic()
            try:
                self.client.set(f"key-{n}", n)
            except Exception as exc:
                self.failed.append(f"key-{n}: {exc!r}")
                continue
            self.slowest = max(self.slowest, time.monotonic() - t0)
            self.acked[f"key-{n}"] = n
            if self.client.retries > retries:
                self.failed.append(f"key-{n}: {self.client.retries - retries} retries")

    def finish(self) -> None:
        self.stop.set()
        self.join(WAIT)
        assert not self.is_alive(), "the writer is stuck"


class Monitor(threading.Thread):
    """Polls every node's status; records each (state, term, leader) seen."""

    def __init__(self, cluster: LocalCluster) -> None:
        super().__init__(daemon=True, name="monitor")
        self.client = ClusterClient(cluster.client_ports, timeout=10, attempt_timeout=10)
        self.ids = cluster.ids
        self.seen: dict[int, set] = {i: set() for i in self.ids}
        self.unanswered = {i: 0 for i in self.ids}
        self.polls = 0
        self.stop = threading.Event()

    def poll(self) -> dict[int, dict]:
        out = {}
        for i in self.ids:
            try:
                s = self.client.status(i)
            except (OSError, ValueError):
                self.unanswered[i] += 1
                continue
            self.seen[i].add((s["state"], s["term"], s["leader_id"]))
            out[i] = s
        return out

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.poll()
            self.polls += 1

    def finish(self) -> dict[int, dict]:
        self.stop.set()
        self.join(WAIT)
        last = self.poll()
        self.client.close()
        return last


def state_changes(cluster: LocalCluster) -> dict[int, list[str]]:
    """The "state X, term T, leader L" lines each node's log holds."""
    out = {}
    for i in cluster.ids:
        text = cluster.log_path(i).read_text(errors="replace")
        out[i] = [" ".join(m.groups()) for m in STATE_LINE.finditer(text)]
    return out


def log_files(data_dir: Path) -> tuple[list[str], int | None]:
    """Snapshot files, and the first index of the oldest closed segment."""
    names = os.listdir(data_dir)
    snapshots = sorted(n for n in names if SNAPSHOT.match(n))
    firsts = [int(m.group(1)) for m in map(SEGMENT.match, names) if m]
    return snapshots, min(firsts) if firsts else None


def wait_stable_leader(cluster: LocalCluster) -> tuple[int, int]:
    """Once every node reports the same leader and term: (leader id, term)."""
    deadline = time.monotonic() + WAIT
    while True:
        statuses = [cluster.status(i) for i in cluster.ids]
        pairs = {(s["leader_id"], s["term"]) for s in statuses if s is not None}
        if len(pairs) == 1 and None not in statuses and next(iter(pairs))[0]:
            return next(iter(pairs))
        assert time.monotonic() < deadline, f"no stable leader: {statuses}"
        time.sleep(0.1)


def run_scenario(cluster: LocalCluster, capsys, name: str, backlog: int = 0) -> dict:
    leader, term = wait_stable_leader(cluster)
    client = cluster.client(timeout=WAIT, attempt_timeout=WAIT / 2)
    client.set("warm-up", 0)  # finds the leader: later redirects count as failures
    before = state_changes(cluster)
    for i in cluster.ids:
        cluster.request(i, {"op": "probe", "reset": True})
    writer, monitor = Writer(client), Monitor(cluster)
    monitor.start()
    t0 = time.monotonic()
    bulk: dict = {}
    bulk_thread = None
    if backlog:  # queued first: the writer's entries (and snapshots) come behind it
        def flood() -> None:
            with ClusterClient(cluster.client_ports, timeout=120, attempt_timeout=120) as c:
                bulk.update(c.request(leader, {"op": "bulk", "count": backlog}, timeout=120))
        bulk_thread = threading.Thread(target=flood, daemon=True)
        bulk_thread.start()
        time.sleep(0.5)
    writer.start()
    time.sleep(WRITE_SECONDS)
    writer.finish()
    if bulk_thread is not None:
        bulk_thread.join(WAIT)
    last = monitor.finish()
    elapsed = time.monotonic() - t0
    after = state_changes(cluster)
    probes = {i: cluster.request(i, {"op": "probe"}) for i in cluster.ids}
    files = {i: log_files(cluster.data_dir(i)) for i in cluster.ids}

    figures = {
        "scenario": name, "ballast_mb": BALLAST_MB, "snapshot_delay_s": SNAPSHOT_DELAY,
        "election_timeout_s": ELECTION, "write_seconds": round(elapsed, 1),
        "leader": leader, "term": term, "writes_acked": len(writer.acked),
        "writes_failed": len(writer.failed), "slowest_write_s": round(writer.slowest, 2),
        "failed_examples": writer.failed[:5],
        "states_seen": {i: sorted(map(list, s), key=str) for i, s in monitor.seen.items()},
        "status_polls": monitor.polls, "status_unanswered": monitor.unanswered,
        "new_state_lines": {i: after[i][len(before[i]):] for i in cluster.ids},
        "snapshots_taken": {i: s.get("snapshots_taken") for i, s in last.items()},
        "snapshot_files": {i: len(f[0]) for i, f in files.items()},
        "first_segment_index": {i: f[1] for i, f in files.items()},
        "loop_latency_ms": {i: {"all": p.get("all"), "during_snapshots":
                                p.get("during_snapshots"), "snapshot_calls":
                                p.get("snapshot_calls")} for i, p in probes.items()},
    }
    if backlog:
        figures["bulk"] = {k: bulk.get(k) for k in ("count", "acked", "failed", "errors",
                                                     "submit_seconds", "seconds", "error")}
    with capsys.disabled():
        print(f"\nLARGE-STATE {name}: " + json.dumps(figures, default=str))
        for i, p in sorted(figures["loop_latency_ms"].items()):
            d = p["during_snapshots"] or {}
            a = p["all"] or {}
            print(f"LOOP-LATENCY {name} node {i}: during snapshots p50 {d.get('p50_ms')} ms "
                  f"p99 {d.get('p99_ms')} ms max {d.get('max_ms')} ms "
                  f"({d.get('samples')} samples, {p['snapshot_calls']} snapshot() calls); "
                  f"all p50 {a.get('p50_ms')} p99 {a.get('p99_ms')} max {a.get('max_ms')} ms")

    # No leadership change: the same leader and term everywhere, all along.
    for i in cluster.ids:
        expected = {("LEADER" if i == leader else "FOLLOWER", term, leader)}
        assert monitor.seen[i] <= expected, \
            f"node {i} saw a leadership change: {figures['states_seen'][i]} {SEE}"
        assert i in last and last[i]["term"] == term and last[i]["leader_id"] == leader, \
            f"node {i} ends with {last.get(i)} {SEE}"
    assert not any(figures["new_state_lines"].values()), \
        "state changes logged during the run " + SEE
    # No failed write.
    assert writer.failed == [], f"{len(writer.failed)} failed writes {SEE}"
    assert len(writer.acked) > 0
    if backlog:
        assert bulk.get("acked") == backlog and bulk.get("failed") == 0, \
            f"queued applies failed {SEE}"
    # Snapshots taken and the log compacted on every node.
    for i in cluster.ids:
        assert last[i]["snapshots_taken"] >= 1, f"node {i} took no snapshot {SEE}"
        snapshots, first = files[i]
        assert snapshots, f"node {i} has no snapshot file {SEE}"
        assert first is None or first > 1, f"node {i}'s log was not compacted {SEE}"
    # The loop thread answered within an election timeout, even during snapshots.
    for i, p in probes.items():
        assert p["during_snapshots"]["samples"] > 0, f"node {i}: no sample during a snapshot"
        assert p["all"]["max_ms"] < ELECTION * 1000, \
            f"node {i}'s loop thread stalled {p['all']['max_ms']} ms {SEE}"

    # Every acknowledged write is on every node.
    state = cluster.wait_converged(timeout=WAIT)["data"]
    missing = [k for k, v in writer.acked.items() if state.get(k) != v]
    assert not missing, f"{len(missing)} acknowledged writes missing"
    if backlog:
        assert state.get("bulk") == backlog
    client.close()
    return figures


def test_slow_snapshot_of_large_state_costs_no_leadership_change(cluster, capsys):
    c = cluster(server_args(threshold=256))
    run_scenario(c, capsys, "threshold-256")


def test_snapshot_behind_a_backlog_of_applies_costs_no_leadership_change(cluster, capsys):
    c = cluster(server_args(threshold=64, apply_delay=APPLY_DELAY))
    run_scenario(c, capsys, "backlog-150k", backlog=BACKLOG)
