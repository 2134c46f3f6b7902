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


def test_io_fault_stops_the_server_and_the_others_go_on():
    """fix_libraft.sh io-error-stop: a server whose write fails stops (state
    UNAVAILABLE) instead of freeing its entries twice; the others commit."""
    c = Cluster(3, fsm=Counter)
    c.elect(0)
    c.io_fault(1, 0, -1)
    f = c.apply(b"1")
    c.step_until_applied(f.index, [0, 2])
    assert c.stopped(1) and c.state(1) == raft.State.UNAVAILABLE
    assert not c.stopped(0) and not c.stopped(2)


def test_lowering_disk_latency_waits_for_the_writes_in_flight():
    c = Cluster(3, fsm=Counter)
    c.elect(0)
    c.set_disk_latency(1, 200)
    f = c.apply(b"1")
    c.step_for(50)  # server 1 is writing the entry, due in 200 ms
    c.set_disk_latency(1, 5)
    assert c._core.disk_latency(1) == 200  # deferred: it would overtake that write
    c.step_until_done(f)
    assert c._core.disk_latency(1) == 200
    c.step_for(200)
    assert c._core.disk_latency(1) == 5  # applied once the write completed
    c.set_disk_latency(2, 50)
    c.set_disk_latency(2, 10, reorder=True)  # at once, on request
    assert c._core.disk_latency(2) == 10
    for _ in range(20):
        c.set_disk_latency(0, c.random.choice([1, 5, 40, 120]))
        c.step_until_done(c.apply(b"1"))
    c.step_until_applied(c.last_index(0))
    assert [c.fsm(i).value for i in range(3)] == [21, 21, 21]
    c.assert_consistent()


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


# ---------------------------------------------------------------- elections


class Nop(raft.FSM):
    def apply(self, command: bytes):
        return None

    def snapshot(self) -> bytes:
        return b""

    def restore(self, snapshot: bytes) -> None:
        pass


@pytest.mark.parametrize("pre_vote", [False, True])
def test_every_seed_reelects_within_10s_of_a_leader_partition(pre_vote):
    """With fixed per-server election timeouts, 10% of seeds (5% with pre-vote)
    split the vote for ever after the leader is cut off; re-drawn timeouts end
    every split."""
    slow = []
    for seed in range(1000):
        c = Cluster(3, fsm=Nop, seed=seed, pre_vote=pre_vote)
        c.elect(seed % 3)
        old = c.leader
        c.isolate(old)
        start = c.time
        try:
            c.step_until_leader(exclude=old, max_ms=10_000)
        except raft.TimeoutError:
            slow.append(seed)
        else:
            assert c.time - start <= 10_000
    assert slow == []


def test_seed_155_elects_a_first_leader():
    # Its first draws make the three servers time out together; the next
    # round's draws differ.
    c = Cluster(3, fsm=Nop, seed=155)
    c.step_until_leader(max_ms=10_000)
    c.assert_consistent()


def test_election_timeouts_are_redrawn_deterministically():
    def draws(seed):
        c = Cluster(3, fsm=Nop, seed=seed)
        seen = [tuple(c.election_timeout(i) for i in range(3))]
        for old in range(3):
            c.step_until_leader()
            c.isolate(c.leader)
            c.step_until_leader(exclude=c.leader)
            c.heal()
            seen.append(tuple(c.election_timeout(i) for i in range(3)))
        return seen

    a = draws(155)
    assert a == draws(155)
    assert len(set(a)) == len(a)  # new values after each election
    assert all(1000 <= t <= 2000 for ts in a for t in ts)
    assert a != draws(156)


def test_set_election_timeout_holds_until_used():
    c = Cluster(3, fsm=Nop, seed=4)
    c.elect(0)
    c.set_election_timeout(1, 1500)
    c.step_for(5000)  # heartbeats restart the timer but draw nothing
    assert c.election_timeout(1) == 1500
    c.isolate(0)
    c.step_until_leader(exclude=0)
    assert c.election_timeout(1) != 1500  # used at the election, then re-drawn


def test_no_seed_keeps_the_fixtures_fixed_timeouts():
    c = Cluster(3, fsm=Nop)
    assert [c.election_timeout(i) for i in range(3)] == [1000, 1100, 1200]
    assert c.step_until_leader() == 0
    c.isolate(0)
    assert c.step_until_leader(exclude=0) == 1
    assert [c.election_timeout(i) for i in range(3)] == [1000, 1100, 1200]


# ---------------------------------------------------------------- waiting


def test_step_until_applied_waits_for_the_leaders_side_only():
    c = Cluster(3, fsm=Counter, seed=7)
    c.elect(0)
    c.isolate(0)
    new = c.step_until_leader(exclude=0)
    g = c.apply(b"2")
    c.step_until_applied(g.index)  # used to wait for the isolated server 0
    side = [i for i in range(3) if i != 0]
    assert all(c.last_applied(i) >= g.index for i in side)
    assert c.last_applied(0) < g.index
    assert g.result() == 2 and new in side
    with pytest.raises(raft.TimeoutError, match="servers 0, 1"):
        c.step_until_applied(g.index, [0, 1], max_ms=2000)
    c.heal()
    c.step_until_applied(g.index, 0)  # explicitly, once it can catch up
    assert c.fsm(0).value == 2


def test_step_until_applied_skips_killed_and_one_way_cut_servers():
    c = Cluster(3, fsm=Counter, seed=8)
    c.elect(1)
    c.kill(2)
    f = c.apply(b"1")
    c.step_until_applied(f.index)
    assert c.last_applied(2) < f.index
    c.revive(2)
    c.disconnect(1, 2, both=False)  # the leader's messages to 2 are lost
    g = c.apply(b"1")
    c.step_until_applied(g.index)
    assert c.last_applied(1) >= g.index and c.last_applied(2) < g.index
    c.reconnect(1, 2, both=False)
    c.step_until_applied(g.index)
    # Server 2 is back on the leader's side; a new leader may have won meanwhile.
    leader = c.leader
    assert leader is not None and c.last_applied(2) >= g.index


def test_step_until_applied_waits_for_a_leader():
    c = Cluster(3, fsm=Counter, seed=9)
    c.elect(0)
    f = c.apply(b"3")
    c.isolate(0)
    c.step_until_no_leader()
    with pytest.raises(raft.TimeoutError, match="leader's side"):
        c.step_until_applied(f.index + 10, max_ms=1000)


def test_step_until_done_returns_the_result_or_raises():
    c = Cluster(3, fsm=Counter, seed=5)
    c.elect(2)
    f = c.apply(b"4")
    assert c.step_until_done(f) == 4
    assert c.step_until_done(f) == 4  # already done: no stepping
    boom = c.apply(b"boom")
    with pytest.raises(ValueError, match="boom"):
        c.step_until_done(boom)
    refused = c.apply(b"1", on=0)
    with pytest.raises(raft.NotLeaderError):
        c.step_until_done(refused)
    with pytest.raises(TypeError):
        c.step_until_done(raft.ApplyFuture())  # type: ignore[arg-type]
    other = Cluster(3, fsm=Counter, seed=5)
    other.elect(2)
    with pytest.raises(ValueError, match="another Cluster"):
        c.step_until_done(other.apply(b"1"))


def test_step_until_done_times_out_and_leaves_the_future_pending():
    c = Cluster(3, fsm=Counter, seed=6)
    c.elect(0)
    for i in range(3):
        c.set_disk_latency(i, 400)
    f = c.apply(b"1")
    with pytest.raises(raft.TimeoutError, match="did not resolve within 300"):
        c.step_until_done(f, max_ms=300)
    assert not f.done()
    assert c.step_until_done(f) == 1


def test_step_until_done_sees_a_reused_index():
    """A killed leader's uncommitted entries keep their indexes; the new leader
    fills the same indexes with other entries, so waiting on the index returns
    while the command is still pending and will fail."""
    c = Cluster(3, fsm=Counter, seed=3)
    c.elect(0)
    c.step_until_done(c.apply(b"1"))
    first = c.apply(b"100")
    second = c.apply(b"100")
    c.kill(0)  # frozen as leader: its proposals stay pending
    new = c.step_until_leader(exclude=0)
    mine = c.apply(b"2")
    assert mine.index == second.index  # after the new leader's own barrier entry
    c.step_until_applied(second.index)
    assert not second.done()
    assert c.applied_commands(new, second.index) == [b"2"]
    c.revive(0)
    for fut in (first, second):
        with pytest.raises(raft.LeadershipLostError) as info:
            c.step_until_done(fut)
        assert info.value.indeterminate
    assert c.step_until_done(mine) == 3
    c.converge()
    assert [fsm.value for fsm in c.fsms] == [3, 3, 3]
    c.assert_consistent()


def test_a_list_of_buffers_snapshot_works_in_the_cluster():
    class Chunked(Counter):
        def snapshot(self):
            data = super().snapshot()
            return [data[:1], memoryview(data[1:])]

    c = Cluster(3, fsm=Chunked, seed=3)
    for i in range(3):
        c._core.set_snapshot_threshold(i, 4)
        c._core.set_snapshot_trailing(i, 2)
    c.elect(0)
    for _ in range(20):
        c.step_until_done(c.apply(b"1"))
    c.converge()
    c.assert_consistent()
    assert all(c._core.snapshots_taken(i) >= 1 for i in range(3))


def test_membership_add_assign_remove():
    c = Cluster(3, fsm=Counter, seed=3)
    c.elect(0)
    c.step_until_done(c.apply(b"5"))
    i = c.grow()
    assert (i, c.n) == (3, 4) and i not in c.configuration()
    assert c.step_until_done(c.add(i)) is None
    assert c.configuration()[i] == raft.Role.SPARE
    c.step_until_done(c.assign(i, raft.Role.VOTER))
    assert c.configuration()[i] == raft.Role.VOTER
    f = c.apply(b"2")
    assert c.step_until_done(f) == 7
    c.step_until_applied(f.index, i)
    assert c.fsm(i).value == 7
    assert c.step_until_done(c.remove(1)) is None
    assert sorted(c.configuration()) == [0, 2, 3]
    c.kill(1)  # it no longer hears from the leader
    g = c.apply(b"1")
    c.step_until_applied(g.index, [0, 2, 3])
    c.assert_consistent()


def test_membership_errors():
    c = Cluster(3, fsm=Counter)
    i = c.grow()
    assert isinstance(c.add(i).exception(), raft.NotLeaderError)  # no leader yet
    c.elect(0)
    first, second = c.add(i), c.remove(1)
    assert isinstance(second.exception(), raft.CantChangeError)  # one at a time
    c.step_until_done(first)
    assert isinstance(c.assign(i, raft.Role.SPARE).exception(), raft.RaftError)  # same role
    assert isinstance(c.apply(b"1", on=1).exception(), raft.NotLeaderError)
    with pytest.raises(IndexError):
        c.remove(9)
    while c.n < 8:
        c.grow()
    with pytest.raises(raft.RaftError):
        c.grow()


def test_a_grown_voter_catches_up_by_snapshot():
    c = Cluster(3, fsm=Counter, seed=11)
    c.set_snapshot_threshold(8, trailing=2)
    c.elect(0)
    futs = [c.apply(b"1") for _ in range(30)]
    c.step_until_done(futs[-1])
    i = c.grow()
    c.step_until_done(c.add(i))
    c.step_until_done(c.assign(i, raft.Role.VOTER))
    c.step_until_applied(c.last_index(0), i)
    assert c.fsm(i).value == 30
    assert c._core.restored_at(i) > 0
    c.assert_consistent()
