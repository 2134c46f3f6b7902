"""Node.apply_many (issue 11): many commands in one call, one future each."""

from __future__ import annotations

import asyncio

import pytest
from conftest import FAST, KV, WAIT, wait_for

import canonical_raft as raft
from canonical_raft import identity


def one_node(cluster, fsm=None, **config):
    c = cluster(1, start=False)
    node = c.start(1, fsm=fsm or KV(), config=FAST.replace(**config))
    node.wait_leader(WAIT)
    node.barrier().result(WAIT)
    wait_for(lambda: node.stats()["pending_commands"] == 0, what="an idle node")
    return node


def test_one_result_per_command_in_order(cluster):
    c = cluster(3)
    leader = c.leader()
    fs = leader.apply_many([b"incr a"] * 100 + [bytearray(b"set k v"), memoryview(b"incr a")])
    assert len(fs) == 102
    assert [f.result(WAIT) for f in fs] == list(range(1, 101)) + ["v", 101]
    indexes = [f.index for f in fs]
    assert indexes == sorted(indexes)
    assert indexes[-1] - indexes[0] <= 1  # packed into one entry (two at most)
    assert leader.apply_many([]) == []
    c.converge()


def test_commands_of_one_call_are_consecutive_in_the_log(cluster):
    node = one_node(cluster)
    order = []
    fs_a = node.apply_many([f"set a{i} {i}".encode() for i in range(200)])
    fs_b = [node.apply(b"incr b") for _ in range(10)]
    fs_c = node.apply_many([f"set c{i} {i}".encode() for i in range(200)])
    for f in fs_a + fs_b + fs_c:
        f.result(WAIT)
        order.append(f.index)
    assert order == sorted(order)
    a = [f.index for f in fs_a]
    assert all(not (a[0] < f.index < a[-1]) for f in fs_b + fs_c)  # nothing in between


def test_fsm_exception_fails_only_its_command(cluster):
    node = one_node(cluster)
    fs = node.apply_many([b"incr x", b"fail nope", b"incr x"])
    assert fs[0].result(WAIT) == 1
    with pytest.raises(ValueError, match="nope"):
        fs[1].result(WAIT)
    assert fs[2].result(WAIT) == 2


def test_validation_is_all_or_nothing(cluster):
    node = one_node(cluster, max_command_size=64)
    before = node.last_applied
    with pytest.raises(raft.TooBigError, match="command 1 "):
        node.apply_many([b"incr a", b"x" * 65])
    with pytest.raises(TypeError):
        node.apply_many([b"incr a", "text"])
    with pytest.raises(raft.InvalidConfigError):
        node.apply_many([b"incr a", identity.RECORD_PREFIX + b"{}"])
    node.barrier().result(WAIT)
    assert node.fsm.data.get("a") is None and node.fsm.count == 0
    assert node.last_applied >= before


def test_backpressure_admits_the_whole_call_or_nothing(cluster):
    class Slow(KV):
        def apply(self, command):
            import time
            time.sleep(0.002)
            return super().apply(command)
    node = one_node(cluster, fsm=Slow(), max_pending_commands=50)
    with pytest.raises(raft.TooBigError, match="split it"):
        node.apply_many([b"incr a"] * 51)  # can never fit
    first = node.apply_many([b"incr a"] * 40)
    with pytest.raises(raft.BusyError) as info:
        node.apply_many([b"incr b"] * 20)  # 40 + 20 > 50: none submitted
    assert "none of the 20 commands" in str(info.value) and not info.value.indeterminate
    later = node.apply_many([b"incr b"] * 20, timeout=WAIT)  # waits for room for all
    assert [f.result(WAIT) for f in first] == list(range(1, 41))
    assert [f.result(WAIT) for f in later] == list(range(1, 21))
    wait_for(lambda: node.stats()["pending_commands"] == 0, what="counts released")
    assert node.stats()["pending_bytes"] == 0


def test_size_limits_pack_into_several_entries(cluster):
    node = one_node(cluster, max_entry_bytes=4096)
    cmds = [b"set k%d " % i + b"v" * 1000 for i in range(20)]
    fs = node.apply_many(cmds)
    assert [f.result(WAIT) for f in fs] == ["v" * 1000] * 20
    entries = {f.index for f in fs}
    assert 5 <= len(entries) <= 20  # about 3 commands of 1 KiB per 4 KiB entry
    assert sorted(f.index for f in fs) == [f.index for f in fs]
    wait_for(lambda: node.stats()["pending_bytes"] == 0, what="bytes released")


def test_partial_failure_on_a_follower_and_after_close(cluster):
    c = cluster(3)
    leader = c.leader()
    follower = next(n for n in c.nodes.values() if n is not leader)
    fs = follower.apply_many([b"incr a"] * 5)
    for f in fs:
        with pytest.raises(raft.NotLeaderError):
            f.result(WAIT)
    assert follower.stats()["pending_commands"] == 0
    fs = leader.apply_many([b"incr a"] * 3000)
    leader.close()
    outcomes = [f.exception(WAIT) for f in fs]
    ok = [e is None for e in outcomes]
    # a prefix may have applied; what did not got ShutdownError (indeterminate)
    assert all(isinstance(e, raft.ShutdownError) for e in outcomes if e is not None)
    assert ok == sorted(ok, reverse=True)
    with pytest.raises(raft.ShutdownError):
        leader.apply_many([b"incr a"])


def test_awaiting_apply_many(cluster):
    node = one_node(cluster)

    async def main():
        return await asyncio.gather(*node.apply_many([b"incr z"] * 500))
    assert asyncio.run(main()) == list(range(1, 501))
