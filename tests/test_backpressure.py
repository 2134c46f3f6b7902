"""Backpressure (issue 8): commands submitted on a node and not yet resolved are
bounded in number and bytes (Config.max_pending_commands / max_pending_bytes).
Past the bound apply() raises BusyError (never submitted, safe to retry), or
waits up to apply(timeout=...)."""

from __future__ import annotations

import resource
import threading
import time

import pytest
from conftest import FAST, KV, WAIT, wait_for

import canonical_raft as raft


class Slow(KV):
    """Applies take `delay` seconds: the FSM is slower than the disk."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def apply(self, command: bytes):
        end = time.perf_counter() + self.delay
        while time.perf_counter() < end:
            pass
        return super().apply(command)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def one_node(cluster, fsm, **config):
    c = cluster(1, start=False)
    node = c.start(1, fsm=fsm, config=FAST.replace(**config))
    node.wait_leader(WAIT)
    node.barrier().result(WAIT)  # the new leader's own record (identity.py) is applied
    wait_for(lambda: node.stats()["pending_commands"] == 0, what="an idle node")
    return node


def test_past_the_command_bound_apply_raises_busy_and_nothing_is_submitted(cluster):
    node = one_node(cluster, Slow(0.002), max_pending_commands=50)
    futures = [node.apply(f"set k{i} {i}".encode()) for i in range(50)]
    with pytest.raises(raft.BusyError) as info:
        node.apply(b"set over 1")
    assert not info.value.indeterminate
    assert "max_pending_commands" in str(info.value)
    for fut in futures:
        fut.result(WAIT)
    assert node.apply(b"set after 1").result(WAIT) == "1"  # room again
    node.barrier().result(WAIT)
    assert "over" not in node.fsm.data  # the refused command was never appended
    assert node.stats()["pending_commands"] == 0 and node.stats()["pending_bytes"] == 0


def test_byte_bound_and_a_single_large_command_is_always_admitted(cluster):
    node = one_node(cluster, Slow(0.01), max_pending_bytes=10_000)
    big = node.apply(b"set big " + b"x" * 20_000)  # alone: admitted although over
    with pytest.raises(raft.BusyError):
        node.apply(b"set small 1")
    big.result(WAIT)
    node.apply(b"set small 1").result(WAIT)


def test_apply_with_timeout_waits_for_room(cluster):
    node = one_node(cluster, Slow(0.001), max_pending_commands=20)
    futures = [node.apply(f"set k{i} {i}".encode(), timeout=WAIT) for i in range(500)]
    assert [f.result(WAIT) for f in futures] == [str(i) for i in range(500)]
    # A wait that runs out is a BusyError too.
    node2 = futures and one_node(cluster, Slow(0.5), max_pending_commands=1)
    node2.apply(b"set a 1")
    started = time.monotonic()
    with pytest.raises(raft.BusyError):
        node2.apply(b"set b 2", timeout=0.2)
    assert time.monotonic() - started >= 0.2


def test_memory_stays_flat_when_the_fsm_is_slower_than_the_disk(cluster):
    # Commands pack into ~1 MiB entries: snapshot every few entries, so the log
    # (in RAM with the asyncio engine's MemoryStore) is compacted as it grows.
    node = one_node(cluster, Slow(0.0002), max_pending_bytes=2 * 2**20,
                    max_pending_commands=100_000, snapshot_threshold=4, snapshot_trailing=2)
    payload = b"x" * 1024
    stop = threading.Event()
    busy = [0]

    def producer():
        i = 0
        while not stop.is_set():
            try:
                node.apply(b"set k " + payload)
            except raft.BusyError:
                busy[0] += 1
                time.sleep(0.001)
            i += 1

    thread = threading.Thread(target=producer)
    thread.start()
    samples = []
    try:
        for _ in range(16):
            time.sleep(0.5)
            stats = node.stats()
            samples.append((rss_mib(), stats["pending_bytes"], stats["applier_queue_bytes"]))
    finally:
        stop.set()
        thread.join()
    print(f"\nRSS MiB / pending bytes / applier queue bytes: {samples}; BusyError x{busy[0]}")
    assert busy[0] > 0  # the bound was reached
    assert all(p <= 2 * 2**20 + 64 * 1024 for _, p, _ in samples)
    assert all(q <= 4 * 2**20 for _, _, q in samples)
    early, late = samples[3][0], max(rss for rss, _, _ in samples[4:])
    assert late - early < 48, f"RSS grew from {early:.0f} to {late:.0f} MiB"
    wait_for(lambda: node.stats()["pending_commands"] == 0, what="the backlog to drain")
