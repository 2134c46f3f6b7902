"""A uv-engine node whose data dir is on a full disk (a small tmpfs).

What libraft 0.22.1's raft_uv does, and what these tests hold it to:

- A leader refuses new commands with ``NoSpaceError`` once its disk capacity
  (prepared open segments plus the room left in the open one) falls below the
  threshold (a quarter of ``Config.segment_size``); a majority of voters must
  report a healthy capacity for a leader to accept commands.
- Writes that find the disk full are not failed: raft_uv retries creating the
  next open segment, and writing a snapshot, every few seconds. A follower on a
  full disk therefore stalls (the others go on committing), and a node recovers
  by itself once space returns: no restart needed.
- A write that does fail (an I/O error, not a full disk) stops the node
  (fix_libraft.sh io-error-stop): that path is covered by the simulation and
  tests/libraft/regress.c (the fixture can inject it; a tmpfs cannot).

Each test fills a tmpfs with a filler file, writes until the disk is full,
checks that every apply resolves (acknowledged or a named error, never a hang or
a crash), deletes the filler, checks that writes are accepted again, then
restarts the node from its data dir and checks that every acknowledged write is
there. Mounting needs root: skipped where it is not allowed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

import canonical_raft as raft

from conftest import wait_for

MiB = 1024 * 1024
# Small segments, so that a few MiB hold several; snapshots often enough that
# the log is compacted, and rarely enough that the FSM is not serialised all
# the time.
CONFIG = raft.Config(election_timeout=0.5, heartbeat_timeout=0.05,
                     snapshot_threshold=256, snapshot_trailing=64,
                     install_snapshot_timeout=5.0, segment_size=1 * MiB)
VALUE = b"v" * 1000
APPLY_TIMEOUT = 15.0  # an apply that finds the disk full must still resolve
RECOVERY = 60.0  # raft_uv retries a full disk every few seconds

pytestmark = pytest.mark.engines("uv", reason="raft_uv's own disk handling: the asyncio "
                                               "engine's log is in a Python store")


@contextmanager
def small_disk(path: Path, size_mib: int):
    """A tmpfs of ``size_mib`` MiB mounted on ``path`` (as tests/test_mdb_store.py's
    small_disk fixture); skips the test where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs",
                           str(path)], capture_output=True, timeout=30)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs: {proc.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], timeout=30)


def fill(path: Path, leave: int) -> Path:
    """A filler file that leaves about ``leave`` bytes free on path's filesystem."""
    filler = path / "filler"
    free = shutil.disk_usage(path).free
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


class Writer:
    """Writes ``set k<N mod KEYS> <N>-<padding>`` through the current leader;
    records the last acknowledged N of each key and which errors it met. Keys
    are reused so that the FSM, and so each snapshot, stays about 2 MB: what
    fills the disk is snapshots and log segments, and it all fits again once
    the filler is gone."""

    KEYS = 2000

    def __init__(self, c) -> None:
        self.c = c
        self.acked: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.n = 0
        self.count = 0

    def write(self) -> bool:
        n = self.n
        self.n += 1
        key = f"k{n % self.KEYS}"
        try:
            leader = self.c.leader(APPLY_TIMEOUT)
            fut = leader.apply(b"set %s %d-%s" % (key.encode(), n, VALUE))
            fut.result(APPLY_TIMEOUT)
        except (raft.NoSpaceError, raft.NotLeaderError, raft.LeadershipLostError) as exc:
            name = type(exc).__name__
            self.errors[name] = self.errors.get(name, 0) + 1
            return False
        self.acked[key] = n
        self.count += 1
        return True

    def check(self, node: raft.Node) -> None:
        """Every acknowledged write is in node's FSM (or a later one of its key)."""
        data, count, _ = node.fsm.state()
        lost = [k for k, n in self.acked.items()
                if k not in data or int(data[k].partition("-")[0]) < n]
        assert not lost, (f"node {node.id} lost acknowledged writes to {len(lost)} keys, "
                          f"first {lost[0]} (acknowledged {self.acked[lost[0]]}, "
                          f"has {data.get(lost[0], '')[:12]!r})")
        assert count >= self.count


def until_accepted(w: Writer) -> None:
    deadline = time.monotonic() + RECOVERY
    while not w.write():
        assert time.monotonic() < deadline, f"no write accepted within {RECOVERY}s: {w.errors}"
        time.sleep(0.2)


def test_single_node_disk_full_refuses_then_recovers(cluster):
    c = cluster(1, config=CONFIG, start=False)
    with small_disk(c.data_dir(1), 16) as disk:
        filler = fill(disk, 4 * MiB)
        node = c.start(1)
        c.leader()
        w = Writer(c)
        t0 = time.monotonic()
        while w.write():  # until NoSpaceError: about 4 MiB of entries and snapshots
            assert time.monotonic() - t0 < 120, "the disk never filled"
        assert w.errors == {"NoSpaceError": 1}, w.errors
        assert w.count > 500
        for _ in range(5):  # refused again, at once, and the node keeps leading
            assert not w.write()
        assert set(w.errors) == {"NoSpaceError"}
        assert node.state == raft.State.LEADER
        w.check(node)

        filler.unlink()  # space returns: raft_uv's retries find it
        until_accepted(w)
        for _ in range(50):
            assert w.write(), w.errors
        w.check(node)

        c.stop(1)
        node = c.start(1)  # the data dir loads and holds every acknowledged write
        c.leader()
        node.barrier().result(APPLY_TIMEOUT)
        w.check(node)
        assert w.write()
        print(f"\n1 node: {w.count} acknowledged, refused: {w.errors}")


@pytest.mark.parametrize("role", ["follower", "leader"])
def test_voter_disk_full_stalls_then_catches_up(cluster, role):
    """One voter of three on the small disk, a follower or the leader. The
    cluster keeps committing (a leader needs a majority of voters reporting a
    healthy capacity, so one full disk does not stop it); a follower on the full
    disk stalls (thousands of entries behind) and catches up by itself once
    space returns. A leader on it kept up in our runs (snapshots compact its log
    within the room left), so for it the test checks that it stays safe and
    live at the edge of a full disk."""
    c = cluster(3, config=CONFIG, start=False)
    small = 2
    with small_disk(c.data_dir(small), 16) as disk:
        filler = fill(disk, 3 * MiB)
        for i in c.addresses:
            c.start(i)
        leader = c.leader()
        if (leader.id == small) != (role == "leader"):
            target = small if role == "leader" else next(i for i in c.nodes if i != small
                                                         and i != leader.id)
            leader.transfer(target).result(APPLY_TIMEOUT)
            wait_for(lambda: c.leader().id == target, what=f"node {target} leading")
        w = Writer(c)
        t0 = time.monotonic()
        # Write until the small disk is full (less than a segment left) and, for
        # a follower, until it stalled on it (500 entries behind).
        def full() -> bool:
            if shutil.disk_usage(disk).free >= CONFIG.segment_size or w.n < 3000:
                return False
            return role == "leader" or c.leader().last_index - c.nodes[small].last_index > 500
        while not full():
            for _ in range(100):
                w.write()
            assert time.monotonic() - t0 < 120, f"the disk never filled: {w.errors}"
        assert set(w.errors) <= {"NoSpaceError", "NotLeaderError", "LeadershipLostError"}
        assert w.count > 1000, w.errors
        node = c.nodes[small]
        assert node.state != raft.State.UNAVAILABLE  # stalled on the disk, not stopped
        leader = c.leader()
        leader.barrier().result(APPLY_TIMEOUT)
        state, lag = node.state.name, leader.last_index - node.last_index
        for n in c.nodes.values():
            if n is not node:
                n.wait_applied(leader.last_applied, APPLY_TIMEOUT)
                w.check(n)

        filler.unlink()
        until_accepted(w)
        c.converge(RECOVERY)  # the small-disk node catches up by itself
        for n in c.nodes.values():
            w.check(n)

        c.stop(small)
        node = c.start(small)
        c.converge(RECOVERY)
        w.check(node)
        assert w.write()
        print(f"\n3 nodes, {role} on the small disk: {w.count} acknowledged, "
              f"refused: {w.errors}; it was {state} and {lag} entries behind when full")
