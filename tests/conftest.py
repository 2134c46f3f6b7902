"""Shared fixtures: free ports, a test FSM, a cluster factory, and a leak check.

Tests import the installed canonical_raft (never python/ from the source tree).
Timeouts are generous on purpose: the suite shares 2 cores with other runs.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

import canonical_raft as raft
from canonical_raft import _loop as raft_loop
from canonical_raft import node as raft_node
from canonical_raft.aio import loop_thread as aio_loop_thread

WAIT = 30.0  # seconds for any single wait on the cluster

# Small thresholds so tests cross snapshots; election timeout high enough that a
# busy shared machine does not cause spurious elections. libraft drops an
# InstallSnapshot that arrives while another is still being installed, and the
# leader resends only after install_snapshot_timeout (30 s by default), so a
# follower can stall that long under load: 5 s keeps such a stall within WAIT.
FAST = raft.Config(election_timeout=0.5, heartbeat_timeout=0.05,
                   snapshot_threshold=64, snapshot_trailing=16, install_snapshot_timeout=5.0)


# ------------------------------------------------------------------ ports

_PORT_LOCKS = os.path.join(tempfile.gettempdir(), "canonical-raft-test-ports")
_held: dict[int, int] = {}  # port -> fd of its lock file, held until the test ends
_port_lock = threading.Lock()


def free_port() -> int:
    """A bindable 127.0.0.1 port, reserved for the rest of the test.

    Below the ephemeral range (libraft's outgoing connections take ephemeral
    ports), and reserved with a flock on a per-port file, so that concurrent test
    runs never hand out the same port between picking it and a node binding it.
    """
    os.makedirs(_PORT_LOCKS, exist_ok=True)
    with _port_lock:
        for _ in range(2000):
            port = random.randint(20000, 32000)
            if port in _held:
                continue
            fd = os.open(os.path.join(_PORT_LOCKS, f"{port}.lock"), os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another test process holds it
                os.close(fd)
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    os.close(fd)
                    continue
            _held[port] = fd
            return port
    raise RuntimeError("no free port found")


def release_ports() -> None:
    with _port_lock:
        for fd in _held.values():
            os.close(fd)
        _held.clear()


@pytest.fixture
def port():
    return free_port()


# ------------------------------------------------------------------ FSM

class KV(raft.FSM):
    """A small key/value FSM.

    Commands: ``set <k> <v>`` (returns v), ``incr <k>`` (returns the new int),
    ``fail <msg>`` (raises ValueError(msg)). Every command, failing or not, is
    folded into an order-sensitive digest so replicas can be compared exactly.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data: dict[str, str] = {}
        self.count = 0
        self.digest = ""
        self.restores = 0
        self.threads: set[str] = set()  # where apply/restore ran (the FSM contract)

    def apply(self, command: bytes):
        with self.lock:
            self.threads.add(threading.current_thread().name)
            self.count += 1
            self.digest = hashlib.sha256(self.digest.encode() + b"|" + command).hexdigest()
            op, _, rest = command.decode().partition(" ")
            if op == "set":
                key, _, value = rest.partition(" ")
                self.data[key] = value
                return value
            if op == "incr":
                value = int(self.data.get(rest, "0")) + 1
                self.data[rest] = str(value)
                return value
            if op == "fail":
                raise ValueError(rest)
            raise RuntimeError(f"unknown command {command!r}")

    def snapshot(self) -> bytes:
        with self.lock:
            return json.dumps({"data": self.data, "count": self.count,
                               "digest": self.digest}).encode()

    def restore(self, snapshot: bytes) -> None:
        state = json.loads(snapshot)
        with self.lock:
            self.threads.add(threading.current_thread().name)
            self.data, self.count, self.digest = state["data"], state["count"], state["digest"]
            self.restores += 1

    def state(self) -> tuple:
        """Everything replicas must agree on."""
        with self.lock:
            return dict(self.data), self.count, self.digest


# ------------------------------------------------------------------ cluster

def wait_for(predicate, timeout: float = WAIT, interval: float = 0.01, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Cluster:
    """N in-process nodes on 127.0.0.1, one data dir each under tmp_path.

    ``nodes`` holds the running Node per id; ``start(id)`` always builds a new
    Node object (and a new FSM) on that id's address and data dir.
    """

    def __init__(self, base: Path, size: int, config: raft.Config, engine: str = "uv") -> None:
        self.base = base
        self.config = config
        self.engine = engine
        # The asyncio engine's log lives in a store: one per id, kept across
        # restarts (a MemoryStore survives its Node, as a disk would).
        self.stores: dict[int, raft.MemoryStore] = {}
        self.addresses = {i: f"127.0.0.1:{free_port()}" for i in range(1, size + 1)}
        self.initial = dict(self.addresses)
        self.nodes: dict[int, raft.Node] = {}
        self.every_node: list[raft.Node] = []  # every Node ever built, for teardown

    def data_dir(self, node_id: int) -> Path:
        return self.base / f"node{node_id}"

    def make(self, node_id: int, *, bootstrap: bool = True, fsm: raft.FSM | None = None,
             config: raft.Config | None = None,
             forward: dict[int, str] | None = None) -> raft.Node:
        """A new, not yet started Node for node_id."""
        if node_id not in self.addresses:
            self.addresses[node_id] = f"127.0.0.1:{free_port()}"
        store = None
        if self.engine == "asyncio":
            store = self.stores.setdefault(node_id, raft.MemoryStore())
        node = raft.Node(node_id, self.addresses[node_id], fsm if fsm is not None else KV(),
                         self.data_dir(node_id),
                         cluster=self.initial if bootstrap else None,
                         config=config or self.config, engine=self.engine, store=store,
                         forward=forward)
        self.every_node.append(node)
        return node

    def start(self, node_id: int, **kwargs) -> raft.Node:
        node = self.make(node_id, **kwargs).start()
        self.nodes[node_id] = node
        return node

    def stop(self, node_id: int) -> raft.Node:
        node = self.nodes.pop(node_id)
        node.close()
        return node

    def close_all(self) -> None:
        errors = []
        for node in reversed(self.every_node):
            try:
                node.close()
            except Exception as exc:  # keep closing the others
                errors.append(exc)
        self.nodes.clear()
        if errors:
            raise errors[0]

    def leader(self, timeout: float = WAIT, exclude: tuple = ()) -> raft.Node:
        """The running node that is leader, once exactly one claims it."""
        def find():
            leaders = [n for i, n in self.nodes.items() if i not in exclude and n.is_leader]
            return leaders[0] if len(leaders) == 1 else None
        return wait_for(find, timeout, what="a single leader")

    def followers(self) -> list[raft.Node]:
        leader = self.leader()
        return [n for n in self.nodes.values() if n is not leader]

    def converge(self, timeout: float = WAIT) -> tuple:
        """Barrier on the leader, wait until every running node applied as far,
        check every FSM equals the leader's; return that state."""
        leader = self.leader(timeout)
        leader.barrier().result(timeout)
        target = leader.last_applied
        for node in self.nodes.values():
            node.wait_applied(target, timeout)
        expected = leader.fsm.state()
        for node in self.nodes.values():
            # No retry: once wait_applied returns, the FSM must hold that state.
            assert node.fsm.state() == expected, (
                f"node {node.id} applied {node.last_applied} but its FSM differs "
                f"(count {node.fsm.count} vs {expected[1]})")
        return expected


ENGINES = ["uv", "asyncio"]


@pytest.fixture(params=ENGINES)
def engine(request) -> str:
    """Every Node test runs on both engines; a test that is engine-specific by
    nature says so with ``@pytest.mark.engines("uv")`` and the reason."""
    marker = request.node.get_closest_marker("engines")
    if marker is not None and request.param not in marker.args:
        pytest.skip(f"{request.param} engine: {marker.kwargs.get('reason', 'not applicable')}")
    return request.param


@pytest.fixture
def cluster(tmp_path, engine):
    """Factory: ``cluster(3)`` starts 3 bootstrapped nodes and waits for a leader
    (``start=False`` builds the Cluster only), on the test's engine. Every node is
    closed at teardown, whatever the test did."""
    made: list[Cluster] = []

    def factory(size: int = 3, *, config: raft.Config = FAST, start: bool = True) -> Cluster:
        c = Cluster(tmp_path / f"cluster{len(made)}", size, config, engine)
        made.append(c)
        if start:
            for node_id in c.addresses:
                c.start(node_id)
            c.leader()
        return c

    yield factory
    for c in made:
        c.close_all()


# ------------------------------------------------------------------ process clusters

PROCESS_WAIT = 60.0  # generous: the machine is shared


class ClientWriter(threading.Thread):
    """Through one ClusterClient (of a LocalCluster), sets key-N = N and
    increments "counter" until stopped; records what was acknowledged. The
    process tests' load."""

    def __init__(self, client: ClusterClient) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.acked: dict[str, int] = {}
        self.increments = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.progress = threading.Condition()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                n = len(self.acked) + 1
                self.client.set(f"key-{n}", n)
                self.acked[f"key-{n}"] = n
                self.client.incr("counter")
                with self.progress:
                    self.increments += 1
                    self.progress.notify_all()
        except BaseException as exc:
            self.error = exc
            with self.progress:
                self.progress.notify_all()

    def wait_for(self, count: int) -> None:
        with self.progress:
            ok = self.progress.wait_for(lambda: self.increments >= count or self.error,
                                        PROCESS_WAIT)
        assert self.error is None, f"a write failed: {self.error!r}"
        assert ok, f"only {self.increments} writes acknowledged"

    def finish(self) -> None:
        self.stop.set()
        self.join(PROCESS_WAIT)
        assert not self.is_alive()
        self.client.close()
        assert self.error is None, f"a write failed: {self.error!r}"


# ------------------------------------------------------------------ leak check

@pytest.fixture(autouse=True)
def no_leaked_nodes():
    """Every test must close every node it started: no Node left open, no
    applier thread alive, and the shared loop thread stopped."""
    yield
    leaked = list(raft_node._live_nodes)
    for node in leaked:  # don't let one leak cascade into the next tests
        node.close()
    release_ports()  # every node of the test is closed: its ports may be reused
    appliers = [t for t in threading.enumerate()
                if t.name.startswith("canonical-raft-applier") and t.is_alive()]
    assert not leaked, f"nodes left open: {leaked}"
    assert not appliers, f"applier threads still running: {appliers}"
    assert raft_loop._loop is None and raft_loop._users == 0, "loop thread still held"
    assert not aio_loop_thread.active(), "the asyncio engine's loop thread still held"


def pytest_report_header(config):
    return f"canonical_raft from {os.path.dirname(raft.__file__)} (libraft {raft.__libraft_version__})"


def pytest_collection_modifyitems(config, items):
    """The large forms (marked slow or nightly) run only when the mark
    expression asks for them (``-m slow``, ``-m nightly``), never by default."""
    expr = config.getoption("markexpr") or ""
    for item in items:
        for mark in ("slow", "nightly"):
            if item.get_closest_marker(mark) is not None and mark not in expr:
                item.add_marker(pytest.mark.skip(reason=f"the large form: run with -m {mark}"))
                break
