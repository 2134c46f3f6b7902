"""``python -m canonical_raft demo``: a cluster of separate processes loses its
leader and loses no acknowledged write.

1. start N server processes on 127.0.0.1 (temp data dirs), wait for a leader;
2. a writer thread sets key-00001, key-00002, ... and increments "counter"
   through a ClusterClient;
3. SIGKILL the leader while the writer runs; report the new election;
4. check that every acknowledged write is on every survivor, and that the
   counter equals the acknowledged increments (retries were deduplicated);
5. restart the killed node from its data dir and watch it catch up.

Every process and the temp dir are cleaned up on success, error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from . import __libraft_version__
from .client import ClusterClient
from .local_cluster import LocalCluster

KEYS_BEFORE = 200  # acknowledged keys before the kill
KEYS_AFTER = 100   # and after the writer resumed


class DemoFailed(Exception):
    """A check of the demo did not hold."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", type=int, default=3,
                   help="cluster size, 3-7 (default 3; a cluster must keep a majority)")
    p.add_argument("--keep-dir", action="store_true",
                   help="keep the data dirs and node logs instead of deleting them")


def say(text: str = "") -> None:
    print(text, flush=True)


class Writer(threading.Thread):
    """Writes key-N = N, then increments "counter", until stopped."""

    def __init__(self, client: ClusterClient) -> None:
        super().__init__(name="demo-writer", daemon=True)
        self.client = client
        self.acked: dict[str, int] = {}
        self.increments = 0
        self.error: BaseException | None = None
        self.stopping = threading.Event()
        self.longest_stall = 0.0  # the longest wait for one acknowledgement

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                n = len(self.acked) + 1
                key = f"key-{n:05d}"
                self._timed(self.client.set, key, n)
                self.acked[key] = n
                self._timed(self.client.incr, "counter")
                self.increments += 1
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def _timed(self, write, *args) -> None:
        began = time.monotonic()
        write(*args)
        self.longest_stall = max(self.longest_stall, time.monotonic() - began)

    def wait_for(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        progress = sys.stdout.isatty()
        while self.increments < count:
            if self.error is not None:
                raise DemoFailed(f"a write failed: {self.error!r}")
            if time.monotonic() > deadline:
                raise DemoFailed(f"only {self.increments} writes after {timeout}s")
            if progress:
                print(f"\r  writing ... {self.increments}/{count} keys", end="", flush=True)
            time.sleep(0.05)
        if progress:
            print("\r", end="")


def run(args: argparse.Namespace) -> int:
    if not 3 <= args.nodes <= 7:
        print("demo: --nodes must be between 3 and 7", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="canonical-raft-demo-"))
    cluster: LocalCluster | None = None
    statuses: dict[int, int] = {}
    code = 1
    try:
        cluster = LocalCluster(base, args.nodes)
        _demo(cluster)
        code = 0
    except KeyboardInterrupt:
        say("\ninterrupted: stopping the cluster")
        code = 130
    except (DemoFailed, OSError, RuntimeError, TimeoutError) as exc:
        say(f"\ndemo FAILED: {exc}")
        args.keep_dir = True  # the node logs say why
    finally:
        if cluster is not None:
            statuses = cluster.close()
        if args.keep_dir:
            say(f"data dirs and node logs kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    if code == 0 and any(statuses.values()):
        say(f"demo FAILED: servers exited with {statuses}")
        code = 1
    return code


def _demo(cluster: LocalCluster) -> None:
    began = time.monotonic()
    size = len(cluster.ids)
    say(f"canonical-raft demo: {size} nodes, each a separate process on 127.0.0.1 "
        f"(libraft {__libraft_version__})")
    cluster.start_all()
    for i in cluster.ids:
        say(f"  node {i}: raft {cluster.address(i)}, clients :{cluster.client_ports[i]}, "
            f"pid {cluster.pid(i)}")
    leader = cluster.wait_leader()
    say(f"Cluster up in {time.monotonic() - began:.1f} s: node {leader['id']} leads "
        f"(term {leader['term']}).")

    say()
    say("Writing key-00001, key-00002, ... and incrementing 'counter' through a "
        "ClusterClient")
    client = cluster.client()
    writer = Writer(client)
    started = time.monotonic()
    writer.start()
    try:
        writer.wait_for(KEYS_BEFORE)
        rate = 2 * writer.increments / (time.monotonic() - started)
        say(f"  {writer.increments} keys acknowledged ({rate:,.0f} writes/s, each "
            "durable on a majority)")
        old, old_term = leader["id"], leader["term"]
        say(f"Killing the leader, node {old} (SIGKILL, pid {cluster.pid(old)}), while the "
            "writer keeps going ...")
        count_at_kill = writer.increments
        killed_at = time.monotonic()
        cluster.kill(old)
        leader = cluster.wait_leader(after_term=old_term)
        elected = time.monotonic() - killed_at
        say(f"  node {leader['id']} elected leader (term {leader['term']}) "
            f"{elected:.2f} s after the kill")
        writer.wait_for(count_at_kill + KEYS_AFTER)
    except BaseException:
        writer.stopping.set()  # a daemon: it dies with us if it is stuck in a retry
        writer.join(1)
        raise
    writer.stopping.set()
    writer.join(60)
    client.close()
    if writer.error is not None:
        raise DemoFailed(f"a write failed: {writer.error!r}")
    say(f"  the writer waited {writer.longest_stall:.2f} s at most for one write; "
        f"{len(writer.acked)} keys acknowledged in all")
    say(f"  {client.retries} retries during the failover, each with the same client id + "
        "seq, so none can apply twice")

    say()
    survivors = cluster.running()
    say(f"Checking the survivors (nodes {', '.join(map(str, survivors))}):")
    state = cluster.wait_converged(survivors)
    for i in survivors:
        _check(i, cluster.dump(i)["data"], writer)
    say(f"  identical state on nodes {', '.join(map(str, survivors))} "
        f"(applied index {state['last_applied']})")

    say()
    say(f"Restarting node {old} from its data dir ...")
    restarted = time.monotonic()
    cluster.start(old)
    state = cluster.wait_converged(cluster.ids)
    _check(old, cluster.dump(old)["data"], writer)
    say(f"  node {old} caught up in {time.monotonic() - restarted:.1f} s: identical state "
        f"on all {size} nodes (applied index {state['last_applied']})")
    say()
    say(f"Done in {time.monotonic() - began:.1f} s: no acknowledged write lost, none "
        "applied twice.")


def _check(node_id: int, data: dict, writer: Writer) -> None:
    missing = [k for k, v in writer.acked.items() if data.get(k) != v]
    if missing:
        raise DemoFailed(f"node {node_id} lacks {len(missing)} acknowledged writes, "
                         f"e.g. {missing[:3]}")
    # Exactly once: a retried increment applied twice would show here.
    if data.get("counter") != writer.increments:
        raise DemoFailed(f"node {node_id}: counter is {data.get('counter')}, but "
                         f"{writer.increments} increments were acknowledged")
    say(f"  node {node_id}: all {len(writer.acked)} acknowledged keys present, "
        f"counter = {data['counter']} = acknowledged increments")
