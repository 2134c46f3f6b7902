"""Snapshots are taken by the applier, off the loop thread (issue 8): a slow
FSM.snapshot() pauses that node's applies, never heartbeats."""

from __future__ import annotations

import os
import statistics
import struct
import threading
import time
import zlib

import pytest
from conftest import FAST, KV, WAIT, wait_for

import canonical_raft as raft
from canonical_raft._codec import decode_snapshot, encode_snapshot


class SlowSnapshot(KV):
    """A KV whose snapshot() takes `delay` seconds (as a large state would)."""

    delay = 1.5

    def __init__(self) -> None:
        super().__init__()
        self.snapshots = 0

    def snapshot(self):
        time.sleep(self.delay)
        self.snapshots += 1
        return super().snapshot()


def test_slow_snapshots_cost_no_leader_and_no_write(cluster):
    # FSM.snapshot() sleeps 3x the election timeout on every node; with the
    # loop thread waiting for it (round 1) this cost leaders and writes.
    config = FAST.replace(snapshot_threshold=64, snapshot_trailing=16)
    c = cluster(3, start=False)
    for i in c.addresses:
        c.start(i, fsm=SlowSnapshot(), config=config)
    leader = c.leader()
    term = leader.term
    # Every node has heard from this leader before we count changes: a node
    # still learning who leads would report that as an event.
    wait_for(lambda: all(n.leader is not None and n.leader.id == leader.id and n.term == term
                         for n in c.nodes.values()), what="every node knows the leader")
    changes: list = []
    for node in c.nodes.values():
        node.on_leadership_change(changes.append)
    failed: list = []
    written = [0]
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            try:
                leader.apply(f"set k{i % 100} {i}".encode()).result(WAIT)
                written[0] += 1
            except raft.RaftError as exc:
                failed.append(exc)
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    # A no-op round trip through the loop thread, sampled throughout.
    latencies = []
    deadline = time.monotonic() + 7.0
    try:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            leader.stats()
            latencies.append(time.perf_counter() - started)
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join()
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)]
    print(f"\nloop round trip during snapshots: p50 {statistics.median(latencies) * 1e3:.2f} ms, "
          f"p99 {p99 * 1e3:.2f} ms, max {latencies[-1] * 1e3:.2f} ms; {written[0]} writes")
    assert not failed, failed[:3]
    # A change of leader or term (an event that only repeats who leads is not one).
    moved = [e for e in changes if e.term != term or e.leader is None or
             e.leader.id != leader.id or e.state not in (raft.State.LEADER, raft.State.FOLLOWER)]
    assert not moved, moved
    assert all(node.term == term for node in c.nodes.values())
    assert written[0] > 64
    for node in c.nodes.values():
        assert node.fsm.snapshots >= 1, node.id
        assert node.stats()["snapshot"]["taken"] >= 1, node.stats()["snapshot"]
        if c.engine == "uv":
            files = os.listdir(c.data_dir(node.id))
            assert any(f.startswith("snapshot-") for f in files), files
        else:
            kept = c.stores[node.id].persisted
            assert kept.snapshot is not None and kept.start_index > 1, kept.start_index
    c.converge()


def test_snapshot_may_be_a_list_of_buffers(tmp_path, port):
    class Chunked(KV):
        def snapshot(self):
            data = super().snapshot()
            return [data[:10], bytearray(data[10:20]), memoryview(data[20:]), b""]

    addr = f"127.0.0.1:{port}"
    config = FAST.replace(snapshot_threshold=16, snapshot_trailing=4)
    for compress in (False, True):
        d = tmp_path / f"d{compress}"
        cfg = config.replace(snapshot_compression=compress)
        with raft.Node(1, addr, Chunked(), d, cluster={1: addr}, config=cfg) as node:
            node.wait_leader(WAIT)
            for i in range(40):
                node.apply(f"set k{i} {i}".encode()).result(WAIT)
            wait_for(lambda: node.stats()["snapshot"]["taken"] >= 2, what="snapshots")
            stats = node.stats()["snapshot"]
            assert stats["last_size"] > 0 and stats["largest_duration"] > 0
            state = node.fsm.state()
        with raft.Node(1, addr, Chunked(), d, cluster={1: addr}, config=cfg) as node:
            assert node.fsm.restores == 1
            node.wait_leader(WAIT)
            node.barrier().result(WAIT)
            assert node.fsm.state() == state


def test_followers_record_the_index_of_a_change_inside_a_batch(cluster):
    # libraft 0.22.1 gave every configuration change in an AppendEntries batch
    # the batch's first index, so a follower that caught up through one batch
    # kept a stale committed configuration index (1 here), and its snapshots a
    # stale membership. fix_libraft.sh: change-index.
    c = cluster(3)
    leader = c.leader()
    lagging = c.followers()[0].id
    c.stop(lagging)
    for i in range(5):
        leader.apply(f"set a{i} 1".encode()).result(WAIT)  # an entry each
    leader.add(10, "127.0.0.1:1").result(WAIT)
    for i in range(5):
        leader.apply(f"set b{i} 1".encode()).result(WAIT)
    node = c.start(lagging)  # catches up: [a0..a4, change, b0..b4] in one batch
    leader.barrier().result(WAIT)
    node.wait_applied(leader.last_applied, WAIT)
    expected = leader.stats()["configuration_committed_index"]
    assert expected > 1
    wait_for(lambda: node.stats()["configuration_committed_index"] == expected,
             what=f"node {node.id} to commit the change at {expected}, it has "
                  f"{node.stats()['configuration_committed_index']}")


# ------------------------------------------------------------------ framing

@pytest.mark.parametrize("compress", [False, True])
def test_snapshot_frame_round_trips_and_catches_a_flipped_flag(compress):
    frame = b"".join(encode_snapshot([b"abc", bytearray(b"def")], compress))
    assert decode_snapshot(frame) == b"abcdef"
    flipped = bytearray(frame)
    flipped[8] ^= 0x01  # the compression flag, now under the CRC
    with pytest.raises(raft.CorruptError):
        decode_snapshot(bytes(flipped))


def test_round_one_snapshots_still_restore_and_flag_damage_is_corrupt():
    body = zlib.compress(b"old state")
    v1 = struct.pack("<8sQII", b"CRFSNAP1", len(body), zlib.crc32(body), 1) + body
    assert decode_snapshot(v1) == b"old state"
    raw = b"raw state"
    v1_raw = struct.pack("<8sQII", b"CRFSNAP1", len(raw), zlib.crc32(raw), 1) + raw
    with pytest.raises(raft.CorruptError):  # a flipped flag was a zlib.error in RaftError
        decode_snapshot(v1_raw)


def test_a_wrong_snapshot_type_is_a_type_error():
    with pytest.raises(TypeError, match="dict"):
        encode_snapshot({"a": 1}, False)
    with pytest.raises(TypeError, match="str"):
        encode_snapshot(["text"], False)
