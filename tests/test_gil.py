"""The GIL: Python threads that hold it must not stall Raft.

The loop thread (libraft + libuv) must never wait for the GIL: if it did, a busy
Python thread would delay heartbeats and appends by whole switch intervals or
longer, which shows up as latency stalls and needless elections.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time

import pytest

import canonical_raft as raft
from conftest import FAST, WAIT, wait_for

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def spin(stop: threading.Event, counter: list) -> None:
    # Pure Python: holds the GIL for whole switch intervals, releases it only
    # when the interpreter forces a switch.
    n = 0
    while not stop.is_set():
        for _ in range(1000):
            n += 1
    counter.append(n)


@pytest.mark.parametrize("size", [1, 3])
def test_spinning_threads_do_not_stall_applies(cluster, size):
    c = cluster(size)
    leader = c.leader()
    term = leader.term
    lost = []
    leader.on_leadership_change(lambda ev: None if ev.is_leader else lost.append(ev))

    stop, counter = threading.Event(), []
    spinner = threading.Thread(target=spin, args=(stop, counter))
    spinner.start()
    latencies = []
    try:
        for i in range(500):
            start = time.perf_counter()
            assert leader.apply(b"incr a").result(WAIT) == i + 1
            latencies.append(time.perf_counter() - start)
    finally:
        stop.set()
        spinner.join()
    assert counter and counter[0] > 0  # the spinner really ran

    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)]
    assert p99 < 0.5, (f"p99 {p99:.3f}s, median {statistics.median(latencies):.4f}s, "
                       f"max {latencies[-1]:.3f}s")
    assert leader.is_leader and leader.term == term and not lost, lost
    c.converge()


FOLLOWERS_SCRIPT = """
import sys, threading, time
sys.path.insert(0, sys.argv[1])
import canonical_raft as raft
from conftest import KV, FAST
cluster = {int(k): v for k, v in (arg.split("=") for arg in sys.argv[3:])}
config = FAST.replace(snapshot_threshold=100_000)
nodes = [raft.Node(i, cluster[i], KV(), f"{sys.argv[2]}/n{i}", cluster=cluster,
                   config=config).start() for i in (2, 3)]
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
print("ready", flush=True)
while not stop.wait(0.05):
    for n in nodes:  # node 1 (in the test process) is to lead
        if n.is_leader:
            try:
                n.transfer(1).result(5)
            except raft.RaftError:
                pass
for n in nodes:
    n.close()
"""


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return max(time.perf_counter() - start, 1e-4)


def hold_gil(seconds_per_1e7: float, target: float) -> None:
    """Hold the GIL for about `target` seconds in one C call: sum() over a range
    runs in C and never lets another Python thread in."""
    sum(range(int(target / seconds_per_1e7 * 10**7)))


def settled_leader(node: raft.Node) -> bool:
    if not node.is_leader:
        return False
    try:
        node.apply(b"incr a").result(WAIT)  # the followers replicate
    except (raft.NotLeaderError, raft.LeadershipLostError):
        return False
    return node.is_leader


@pytest.mark.engines("uv", reason="the asyncio engine runs Raft on a Python event loop, "
                     "which needs the GIL: a thread holding it for seconds stalls it")
def test_gil_held_for_seconds_does_not_stall_the_leader(cluster, tmp_path):
    # The followers live in another process, so only this process's loop thread
    # is exposed to our GIL: if it waited for the GIL, the followers would miss
    # heartbeats and elect a new leader (a new term). All nodes in one process
    # would not show it: they would all stall together.
    c = cluster(3, config=FAST.replace(snapshot_threshold=100_000), start=False)
    script = tmp_path / "followers.py"
    script.write_text(FOLLOWERS_SCRIPT)
    args = [f"{i}={a}" for i, a in c.addresses.items()]
    followers = subprocess.Popen([sys.executable, str(script), TESTS_DIR, str(tmp_path), *args],
                                 cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True)
    try:
        assert followers.stdout.readline().strip() == "ready"
        leader = c.start(1, config=FAST.replace(snapshot_threshold=100_000))
        # The followers hand leadership to node 1; it may take a round or two.
        wait_for(lambda: settled_leader(leader), what="node 1 to lead and commit")
        term = leader.term

        per_1e7 = min(timed(lambda: sum(range(10**7))) for _ in range(3))
        gaps, stop = [], threading.Event()

        def ticker():  # proves the GIL really was unavailable during each hold
            last = time.perf_counter()
            while not stop.is_set():
                time.sleep(0.005)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        t = threading.Thread(target=ticker)
        t.start()
        try:
            for _ in range(3):
                # Longer than the largest randomized election timeout (2 x 0.5 s).
                hold_gil(per_1e7, 2.5)
                time.sleep(0.3)
        finally:
            stop.set()
            t.join()
        assert max(gaps) > 1.2, f"the GIL was not held long enough (max gap {max(gaps):.2f}s)"
        assert leader.is_leader and leader.term == term, (
            f"leadership lost while this process held the GIL: term {term} -> {leader.term}")
        assert leader.apply(b"incr a").result(WAIT) >= 2
    finally:
        followers.stdin.close()
        try:
            followers.wait(WAIT)
        finally:
            followers.kill()
    assert followers.returncode == 0
