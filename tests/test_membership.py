"""Membership changes: add_voter (catch-up by snapshot, failure and resume),
assign to STANDBY and SPARE, remove (and the removed node knowing it), and
leadership transfer with and without a target."""

from __future__ import annotations

import logging
import time

import pytest

import canonical_raft as raft
from conftest import FAST, WAIT, free_port, wait_for


def roles(node: raft.Node) -> dict[int, raft.Role]:
    return {s.id: s.role for s in node.configuration}


def fill(leader: raft.Node, n: int) -> None:
    """n commands one at a time: n log entries, so the log gets compacted."""
    for i in range(n):
        leader.apply(f"set k{i % 40} {i}".encode()).result(WAIT)


def test_add_voter_catches_up_by_snapshot_and_votes(cluster):
    c = cluster(3)
    leader = c.leader()
    fill(leader, 200)  # past several snapshots: entry 1.. are gone from the log
    joiner = c.start(4, bootstrap=False)  # cluster=None, empty data dir
    assert leader.add_voter(4, joiner.address).result(WAIT) is None

    assert roles(leader)[4] == raft.Role.VOTER
    c.converge()
    assert joiner.stats()["snapshots_restored"] >= 1  # it could not replay from 1
    # The joiner learned the configuration with itself as a voter.
    wait_for(lambda: roles(joiner).get(4) == raft.Role.VOTER, what="joiner sees itself voter")
    assert set(roles(joiner)) == {1, 2, 3, 4}


def test_a_joiner_never_reports_removed_while_it_catches_up(cluster):
    """The snapshot a joiner installs first predates its own addition: the
    configuration it then holds does not list it, but it was never a member,
    so it is not REMOVED (it used to say so until it applied the add)."""
    c = cluster(3)
    leader = c.leader()
    fill(leader, 200)
    joiner = c.make(4, bootstrap=False)
    seen: list[raft.State] = []
    joiner.on_leadership_change(lambda event: seen.append(event.state))
    joiner.start()
    c.nodes[4] = joiner
    assert leader.add_voter(4, joiner.address).result(WAIT) is None
    c.converge()
    assert joiner.stats()["snapshots_restored"] >= 1
    assert raft.State.REMOVED not in seen, seen
    assert joiner.state != raft.State.REMOVED


def test_new_voter_counts_toward_the_quorum(cluster):
    c = cluster(3)
    leader = c.leader()
    joiner = c.start(4, bootstrap=False)
    leader.add_voter(4, joiner.address).result(WAIT)
    # With 4 voters the quorum is 3: with one old follower gone, the leader
    # commits only if node 4 really stores entries and counts.
    c.stop(next(n.id for n in c.followers() if n.id != 4))
    assert leader.apply(b"incr q").result(WAIT) == 1
    c.converge()


def test_assign_standby_then_spare(cluster):
    c = cluster(3)
    leader = c.leader()
    fill(leader, 10)
    extra = c.start(4, bootstrap=False)
    assert leader.add(4, extra.address).result(WAIT) is None
    assert roles(leader)[4] == raft.Role.SPARE

    leader.assign(4, raft.Role.STANDBY).result(WAIT)
    assert roles(leader)[4] == raft.Role.STANDBY
    state = c.converge()  # a standby replicates the log
    assert extra.fsm.state() == state

    leader.assign(4, raft.Role.SPARE).result(WAIT)
    assert roles(leader)[4] == raft.Role.SPARE
    # A spare is not replicated to: it stays behind while the others move on.
    fill(leader, 30)
    leader.barrier().result(WAIT)
    for n in c.nodes.values():
        if n.id != 4:
            n.wait_applied(leader.last_applied, WAIT)
    assert extra.fsm.count < leader.fsm.count


def test_remove_a_follower(cluster):
    c = cluster(3)
    leader = c.leader()
    victim = c.followers()[0]
    leader.remove(victim.id).result(WAIT)
    assert set(roles(leader)) == set(c.addresses) - {victim.id}
    c.stop(victim.id)
    # Two voters left, both up: writes still commit.
    assert leader.apply(b"incr a").result(WAIT) == 1
    c.converge()
    survivor = c.followers()[0]
    assert victim.id not in roles(survivor)


def test_remove_the_leader_itself(cluster):
    c = cluster(3)
    old = c.leader()
    old.remove(old.id).result(WAIT)
    c.stop(old.id)
    new = c.leader()
    assert set(roles(new)) == set(c.addresses) - {old.id}
    assert new.apply(b"incr a").result(WAIT) == 1
    c.converge()


def test_transfer_to_a_non_voter_is_refused(cluster):
    c = cluster(3)
    leader = c.leader()
    extra = c.start(4, bootstrap=False)
    leader.add(4, extra.address).result(WAIT)
    leader.assign(4, raft.Role.STANDBY).result(WAIT)
    for target in (4, 99):  # a standby, an unknown id
        with pytest.raises(raft.BadIdError):
            leader.transfer(target).result(WAIT)
    assert leader.is_leader


def test_membership_changes_on_a_follower_raise_not_leader(cluster):
    c = cluster(3)
    leader = c.leader()
    follower = c.followers()[0]
    follower.wait_leader(WAIT)
    for call in (lambda: follower.add(9, "127.0.0.1:9"),
                 lambda: follower.add_voter(9, "127.0.0.1:9"),
                 lambda: follower.assign(leader.id, raft.Role.STANDBY),
                 lambda: follower.remove(leader.id)):
        with pytest.raises(raft.NotLeaderError) as info:
            call().result(WAIT)
        assert info.value.leader_id == leader.id


def test_add_an_existing_id_is_refused(cluster):
    c = cluster(3)
    leader = c.leader()
    with pytest.raises(raft.BadIdError):
        leader.add(2, "127.0.0.1:9").result(WAIT)
    with pytest.raises(raft.BadIdError):
        leader.remove(99).result(WAIT)
    assert set(roles(leader)) == {1, 2, 3}


def test_transfer_to_a_chosen_voter(cluster):
    c = cluster(3)
    old = c.leader()
    fill(old, 5)
    target = c.followers()[0]
    new_id = old.transfer(target.id).result(WAIT)
    wait_for(lambda: target.is_leader, what="target to lead")
    assert c.leader() is target
    assert new_id == target.id  # transfer() resolves to the new leader's id
    assert not old.is_leader
    assert target.apply(b"incr a").result(WAIT) == 1
    c.converge()


def test_transfer_without_target(cluster):
    c = cluster(3)
    old = c.leader()
    fill(old, 5)
    new_id = old.transfer().result(WAIT)
    new = c.leader(exclude=(old.id,))
    assert new.id != old.id
    assert new_id == new.id
    assert new.apply(b"incr a").result(WAIT) == 1
    c.converge()


def test_add_voter_to_an_unreachable_address_fails_then_resumes(cluster):
    c = cluster(3, config=FAST.replace(max_catch_up_rounds=2, max_catch_up_round_duration=0.3))
    leader = c.leader()
    fill(leader, 5)
    address = f"127.0.0.1:{free_port()}"  # nothing listens there yet
    with pytest.raises(raft.NoConnectionError) as info:
        leader.add_voter(4, address).result(WAIT)
    assert f"add_voter(4, {address!r}) again" in str(info.value)
    assert roles(leader)[4] == raft.Role.SPARE  # no vote: the quorum is unchanged
    assert leader.apply(b"incr a").result(WAIT) == 1

    with pytest.raises(raft.BadIdError, match="already in the configuration"):
        leader.add_voter(4, "127.0.0.1:9").result(WAIT)

    c.addresses[4] = address
    c.start(4, bootstrap=False)  # the server comes up; the retry resumes
    assert leader.add_voter(4, address).result(WAIT) is None
    assert roles(leader)[4] == raft.Role.VOTER
    assert leader.add_voter(4, address).result(WAIT) is None  # already a voter: no-op
    c.converge()


def test_removed_follower_is_told_and_says_so_after_restart(cluster, caplog):
    c = cluster(3)
    leader = c.leader()
    fill(leader, 5)
    victim = c.followers()[0]
    seen: list[raft.LeadershipEvent] = []
    victim.on_leadership_change(seen.append)
    assert victim.state == raft.State.FOLLOWER
    leader.remove(victim.id).result(WAIT)
    wait_for(lambda: victim.state == raft.State.REMOVED, what="the victim to know")
    wait_for(lambda: any(e.is_removed for e in seen), what="a REMOVED event")
    assert leader.apply(b"incr a").result(WAIT) == 1  # the others go on
    c.stop(victim.id)

    caplog.set_level(logging.WARNING, logger="canonical_raft")
    again = c.start(victim.id)
    assert "removal from the cluster" in caplog.text
    assert again.state == raft.State.REMOVED
    time.sleep(3 * FAST.election_timeout)  # it never disrupts the cluster
    assert again.state == raft.State.REMOVED and not again.is_leader
    assert c.leader(exclude=(victim.id,)).apply(b"incr a").result(WAIT) == 2


def test_removed_leader_reports_removed_and_logs_why_at_restart(cluster, caplog):
    c = cluster(3)
    old = c.leader()
    seen: list[raft.LeadershipEvent] = []
    old.on_leadership_change(seen.append)
    old.remove(old.id).result(WAIT)
    wait_for(lambda: old.state == raft.State.REMOVED, what="the old leader to step down")
    wait_for(lambda: seen and seen[-1].state == raft.State.REMOVED and seen[-1].role is None,
             what="a REMOVED event")
    c.stop(old.id)
    caplog.set_level(logging.WARNING, logger="canonical_raft")
    again = c.start(old.id)
    assert "is not in the configuration it holds" in caplog.text
    assert again.state == raft.State.REMOVED
    assert c.leader(exclude=(old.id,)).apply(b"incr a").result(WAIT) == 1


def test_not_leader_error_has_one_wording_naming_the_leader(cluster):
    c = cluster(3)
    leader = c.leader()
    follower = c.followers()[0]
    follower.wait_leader(WAIT)
    expected = f"not the leader: the leader is node {leader.id} at {leader.address}"
    for call in (lambda: follower.apply(b"incr a"), lambda: follower.barrier(),
                 lambda: follower.add(9, "127.0.0.1:9"), lambda: follower.transfer()):
        with pytest.raises(raft.NotLeaderError) as info:
            call().result(WAIT)
        assert str(info.value) == expected
