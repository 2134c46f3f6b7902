"""canonical_raft.testing.Cluster: the deterministic in-memory cluster."""

from __future__ import annotations

import pytest

import canonical_raft as raft
from canonical_raft.testing import Cluster, ClusterFuture


class Counter(raft.FSM):
    def __init__(self) -> None:
        self.value = 0
        self.commands: list[bytes] = []

    def apply(self, command: bytes):
        if command == b"boom":
            raise ValueError("boom")
        self.commands.append(command)
        self.value += int(command)
        return self.value

    def snapshot(self) -> bytes:
        return str(self.value).encode()

    def restore(self, snapshot: bytes) -> None:
        self.value = int(snapshot)


def test_issue_example_partition():
    c = Cluster(3, fsm=Counter, seed=7)
    c.elect(0)
    assert c.leader == 0
    f = c.apply(b"5")
    assert isinstance(f, raft.ApplyFuture) and f.index is not None
    c.step_until_applied(f.index)
    assert f.result() == 5
    assert [fsm.value for fsm in c.fsms] == [5, 5, 5]
    c.disconnect(0, 1)
    c.disconnect(0, 2)
    new = c.step_until_leader(exclude=0)
    assert new in (1, 2)
    g = c.apply(b"2")
    c.step_until_applied(g.index, new)
    assert g.result() == 7
    c.converge()
    assert [fsm.value for fsm in c.fsms] == [7, 7, 7]
    c.assert_consistent()


def test_deterministic_for_a_seed():
    def run(seed):
        c = Cluster(5, fsm=Counter, seed=seed)
        leader = c.step_until_leader()
        futs = [c.apply(b"1") for _ in range(5)]
        c.step_until_applied(futs[-1].index)
        return leader, c.time, c.steps, [f.result() for f in futs]

    assert run(3) == run(3)
    leaders = {run(s)[0] for s in range(12)}
    assert len(leaders) > 1  # the seed changes who wins the first election


def test_apply_not_leader_and_waiting_without_stepping():
    c = Cluster(3, fsm=Counter)
    f = c.apply(b"1")
    with pytest.raises(raft.NotLeaderError):
        f.result()
    c.elect(1)
    f = c.apply(b"1", on=0)
    with pytest.raises(raft.NotLeaderError):
        f.result()
    f = c.apply(b"1")
    assert isinstance(f, ClusterFuture)
    with pytest.raises(raft.RaftError, match="stepped"):
        f.result()
    c.step_until_applied(f.index)
    assert f.result() == 1
    with pytest.raises(TypeError):
        c.apply("text")  # type: ignore[arg-type]


def test_fsm_exception_becomes_the_futures_exception():
    c = Cluster(3, fsm=Counter)
    c.elect(0)
    f = c.apply(b"boom")
    g = c.apply(b"3")
    c.step_until_applied(g.index)
    with pytest.raises(ValueError, match="boom"):
        f.result()
    assert g.result() == 3
    c.assert_consistent()


def test_leadership_lost_is_indeterminate():
    c = Cluster(3, fsm=Counter)
    c.elect(0)
    c.isolate(0)
    f = c.apply(b"4")
    c.step_until_leader(exclude=0)
    c.step_for(3000)
    c.heal()
    c.step_for(3000)
    assert f.done()
    with pytest.raises(raft.LeadershipLostError) as info:
        f.result()
    assert info.value.indeterminate
    c.converge()
    c.assert_consistent()
    # Indeterminate means either outcome: here the old leader's longer log wins
    # the election after healing, so the entry commits after all.
    values = {fsm.value for fsm in c.fsms}
    assert values in ({0}, {4})


def test_elect_depose_and_reelect():
    c = Cluster(3, fsm=Counter)
    c.elect(0)
    t0 = c.term(0)
    c.depose()
    assert c.leader is None
    c.elect(2)
    assert c.leader == 2 and c.term(2) > t0
    c.elect(1)  # deposes 2 first
    assert c.leader == 1


def test_kill_and_revive_catches_up():
    c = Cluster(3, fsm=Counter, seed=1)
    c.elect(0)
    c.kill(2)
    futs = [c.apply(b"1") for _ in range(10)]
    c.step_until_applied(futs[-1].index, 0)
    assert c.fsm(2).value == 0
    c.revive(2)
    c.step_until_applied(futs[-1].index)
    assert c.fsm(2).value == 10
    c.assert_consistent()


def test_leader_killed_then_new_leader():
    c = Cluster(5, fsm=Counter, seed=2)
    c.elect(0)
    c.kill(0)
    new = c.step_until_leader(exclude=0)
    f = c.apply(b"9")
    c.step_until_applied(f.index, new)
    assert f.result() == 9
    c.converge()
    c.assert_consistent()


def test_snapshots_and_restore_on_a_lagging_follower():
    c = Cluster(3, fsm=Counter)
    c.set_snapshot_threshold(8, trailing=2)
    c.elect(0)
    c.kill(2)
    futs = [c.apply(b"1") for _ in range(40)]
    c.step_until_applied(futs[-1].index, 0)
    c.revive(2)
    c.step_until_applied(futs[-1].index)
    assert c.fsm(2).value == 40
    assert c._core.restored_at(2) > 0  # caught up through InstallSnapshot
    c.assert_consistent()


def test_io_fault_needs_unsafe():
    c = Cluster(3, fsm=Counter)
    with pytest.raises(raft.RaftError, match="unsafe=True"):
        c.io_fault(1)


def test_lowering_disk_latency_needs_reorder():
    c = Cluster(3, fsm=Counter)
    c.set_disk_latency(0, 50)
    with pytest.raises(ValueError, match="reorder"):
        c.set_disk_latency(0, 10)
    c.set_disk_latency(0, 10, reorder=True)


def test_latency_does_not_break_safety():
    c = Cluster(3, fsm=Counter, seed=5)
    c.elect(0)
    c.set_network_latency(0, 200)
    c.set_disk_latency(1, 300)
    futs = [c.apply(b"1") for _ in range(5)]
    c.step_for(5000)
    c.converge()
    c.assert_consistent()
    acked = [f for f in futs if f.done() and f.exception() is None]
    assert acked and all(c.fsm(i).value >= len(acked) for i in range(3))


def test_assert_consistent_catches_a_diverging_fsm():
    class Diverging(Counter):
        instances = 0

        def __init__(self) -> None:
            super().__init__()
            Diverging.instances += 1
            self.me = Diverging.instances

        def apply(self, command: bytes):
            self.value += int(command) * (2 if self.me == 3 else 1)
            return self.value

    c = Cluster(3, fsm=Diverging, seed=11)
    c.elect(0)
    f = c.apply(b"1")
    c.step_until_applied(f.index)
    with pytest.raises(AssertionError, match="seed=11.*snapshots differ"):
        c.assert_consistent()


def test_bad_arguments():
    with pytest.raises(TypeError):
        Cluster(3)
    with pytest.raises(ValueError):
        Cluster(9, fsm=Counter)
    c = Cluster(3, fsm=Counter)
    with pytest.raises(IndexError):
        c.kill(3)
    with pytest.raises(ValueError):
        c.disconnect(1, 1)
    with pytest.raises(raft.InvalidConfigError):
        c.set_election_timeout(0, 10)
    with pytest.raises(raft.NotLeaderError):
        c.depose()
    with pytest.raises(raft.TimeoutError):
        c.step_until_applied(100, max_ms=500)


def test_keyboard_interrupt_in_fsm_propagates():
    class Interrupting(Counter):
        def apply(self, command: bytes):
            raise KeyboardInterrupt

    c = Cluster(1, fsm=Interrupting)
    c.step_until_leader()
    c.apply(b"1")
    with pytest.raises(KeyboardInterrupt):
        c.step_for(1000)
