"""LocalCluster: ``canonical_raft serve`` processes on 127.0.0.1, one per node,
each with its data dir and log file under one base directory. Used by the
demo, the process tests and the benchmarks.

    with LocalCluster(tmp_dir, size=3) as cluster:
        cluster.start_all()
        leader = cluster.wait_leader()
        cluster.client().set("k", "v")
        cluster.kill(leader["id"])

Every server runs with --exit-with-parent, so none outlives this process even
if it is killed; ``close()`` (or leaving the ``with``) stops them all.

Engines, per node (``serve --engine``): uv by default; ``engines={2: "asyncio"}``
(or ``engines="asyncio"`` for all) runs node 2 on the asyncio engine with the
store ``store`` ("memory" or "mdb"; also a per-node dict), and ``tls={id:
(cert, key, ca)}`` gives asyncio nodes mutual TLS. ``durable(id)`` says
whether a node's state survives its process (uv, or asyncio on "mdb"): only
those may be restarted (``serve`` refuses to start a MemoryStore node twice on
one data dir: it would come back with no log and no memory of its votes).
"""

from __future__ import annotations

import os
import random
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .client import ClusterClient

__all__ = ["LocalCluster", "free_port"]

_handed_out: set[int] = set()
_port_lock = threading.Lock()


def free_port() -> int:
    """A bindable 127.0.0.1 port below Linux's ephemeral range, so that the
    transport's outgoing connections cannot take it between now and its bind."""
    with _port_lock:
        for _ in range(2000):
            port = random.randint(20000, 32000)
            if port in _handed_out:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port found in 20000-32000")


def _per_node(value: Any, ids: list[int], default: Any, what: str) -> dict[int, Any]:
    if value is None:
        return {i: default for i in ids}
    if isinstance(value, Mapping):
        unknown = set(value) - set(ids)
        if unknown:
            raise ValueError(f"{what}: no node {sorted(unknown)} in {ids}")
        return {i: value.get(i, default) for i in ids}
    return {i: value for i in ids}


class LocalCluster:
    """``size`` server processes; ids 1..size. ``server_args`` are passed to
    every ``serve`` (e.g. ["--snapshot-threshold", "64"]); ``engines``,
    ``store`` and ``tls`` choose each node's engine (module docstring);
    ``forward`` starts every node with ``--forward`` (followers forward
    writes and barriers to the leader)."""

    def __init__(self, base_dir: str | os.PathLike, size: int = 3, *,
                 server_args: Sequence[str] = (), python: str = sys.executable,
                 engines: str | Mapping[int, str] | None = None,
                 store: str | Mapping[int, str] = "memory",
                 tls: Mapping[int, tuple[Any, Any, Any]] | None = None,
                 forward: bool = False) -> None:
        self.base = Path(base_dir)
        self.base.mkdir(parents=True, exist_ok=True)
        self.ids = list(range(1, size + 1))
        self.engines: dict[int, str] = _per_node(engines, self.ids, "uv", "engines")
        self.stores: dict[int, str | None] = {
            i: s if self.engines[i] == "asyncio" else None
            for i, s in _per_node(store, self.ids, "memory", "store").items()}
        self.tls: dict[int, tuple[Any, Any, Any] | None] = _per_node(tls or {}, self.ids, None,
                                                                     "tls")
        self.raft_ports = {i: free_port() for i in self.ids}
        self.client_ports = {i: free_port() for i in self.ids}
        # serve --forward: followers send writes and barriers to the leader.
        self.forward_ports = {i: free_port() for i in self.ids} if forward else None
        self.server_args = list(server_args)
        self.python = python
        self.procs: dict[int, subprocess.Popen] = {}
        # Status and dump requests: short timeouts, never retried.
        self._monitor = ClusterClient(self.client_ports, timeout=5.0, attempt_timeout=5.0)

    # ---------------------------------------------------------- paths and commands

    def data_dir(self, node_id: int) -> Path:
        return self.base / f"node{node_id}"

    def log_path(self, node_id: int) -> Path:
        return self.base / f"node{node_id}.log"

    def address(self, node_id: int) -> str:
        return f"127.0.0.1:{self.raft_ports[node_id]}"

    def durable(self, node_id: int) -> bool:
        """Whether the node's Raft state outlives its process (it may restart)."""
        return self.engines[node_id] == "uv" or self.stores[node_id] == "mdb"

    def engine_args(self, node_id: int) -> list[str]:
        if self.engines[node_id] == "uv":
            return []
        args = ["--engine", self.engines[node_id], "--store", str(self.stores[node_id])]
        tls = self.tls[node_id]
        if tls is not None:
            cert, key, ca = (os.fspath(p) for p in tls)
            args += ["--tls-cert", cert, "--tls-key", key, "--tls-ca", ca]
        return args

    def command(self, node_id: int) -> list[str]:
        def joined(m: dict[int, Any]) -> str:
            return ",".join(f"{i}={v}" for i, v in sorted(m.items()))
        return [self.python, "-m", "canonical_raft", "serve", "--id", str(node_id),
                "--address", self.address(node_id), "--data-dir", str(self.data_dir(node_id)),
                "--cluster", joined({i: self.address(i) for i in self.ids}),
                "--client-port", str(self.client_ports[node_id]),
                "--client-ports", joined(self.client_ports), "--exit-with-parent",
                *self.forward_args(), *self.engine_args(node_id), *self.server_args]

    def forward_args(self) -> list[str]:
        if self.forward_ports is None:
            return []
        return ["--forward", ",".join(f"{i}=127.0.0.1:{p}"
                                      for i, p in sorted(self.forward_ports.items()))]

    # ---------------------------------------------------------- processes

    def spawn(self, node_id: int) -> subprocess.Popen:
        """Start one server without waiting for it (see wait_ready)."""
        if self.is_running(node_id):
            raise RuntimeError(f"node {node_id} is already running")
        with open(self.log_path(node_id), "ab") as log:
            proc = subprocess.Popen(self.command(node_id), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=log, cwd=self.base,
                                    bufsize=0)
        self.procs[node_id] = proc
        return proc

    def wait_ready(self, node_id: int, timeout: float = 30.0) -> None:
        """Wait for the server's "READY <id>" line."""
        proc = self.procs[node_id]
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        buf = b""
        while b"\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"node {node_id} not ready after {timeout}s"
                                   f"{self._log_tail(node_id)}")
            ready, _, _ = select.select([fd], [], [], min(remaining, 0.5))
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    code = proc.wait()
                    raise RuntimeError(f"node {node_id} exited with status {code} before "
                                       f"it was ready{self._log_tail(node_id)}")
                buf += chunk
        line = buf.split(b"\n", 1)[0].decode(errors="replace").strip()
        if line != f"READY {node_id}":
            raise RuntimeError(f"node {node_id} printed {line!r} instead of READY")

    def start(self, node_id: int, timeout: float = 30.0) -> None:
        self.spawn(node_id)
        self.wait_ready(node_id, timeout)

    def start_all(self, timeout: float = 30.0) -> None:
        for i in self.ids:  # spawn all first: they start in parallel
            self.spawn(i)
        for i in self.ids:
            self.wait_ready(i, timeout)

    def is_running(self, node_id: int) -> bool:
        proc = self.procs.get(node_id)
        return proc is not None and proc.poll() is None

    def running(self) -> list[int]:
        return [i for i in self.ids if self.is_running(i)]

    def pid(self, node_id: int) -> int:
        return self.procs[node_id].pid

    def kill(self, node_id: int) -> None:
        """SIGKILL: the process gets no chance to close anything."""
        proc = self.procs.pop(node_id)
        proc.kill()
        proc.wait()
        proc.stdout.close()
        self._monitor.disconnect(node_id)

    def stop(self, node_id: int, timeout: float = 20.0) -> int:
        """SIGTERM and wait; SIGKILL past the timeout. Returns the exit status."""
        return self._stop([node_id], timeout)[node_id]

    def _stop(self, ids: Iterable[int], timeout: float) -> dict[int, int]:
        procs = {i: self.procs.pop(i) for i in list(ids) if i in self.procs}
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        codes = {}
        for i, proc in procs.items():
            try:
                codes[i] = proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[i] = proc.wait()
            proc.stdout.close()
            self._monitor.disconnect(i)
        return codes

    def close(self, timeout: float = 20.0) -> dict[int, int]:
        """Stop every server still running; their exit statuses."""
        self._monitor.close()
        return self._stop(list(self.procs), timeout)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _log_tail(self, node_id: int, lines: int = 15) -> str:
        try:
            text = self.log_path(node_id).read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "; its log ends with:\n" + "\n".join(text[-lines:]) if text else ""

    # ---------------------------------------------------------- cluster state

    def client(self, **kwargs: Any) -> ClusterClient:
        return ClusterClient(self.client_ports, **kwargs)

    def status(self, node_id: int) -> dict | None:
        """The node's status, or None if it does not answer."""
        try:
            return self._monitor.status(node_id)
        except (OSError, ValueError):
            return None

    def dump(self, node_id: int) -> dict:
        return self._monitor.dump(node_id)

    def request(self, node_id: int, request: dict, timeout: float | None = None) -> dict:
        """One request to one node (no retry); its reply."""
        return self._monitor.request(node_id, request, timeout)

    def wait_leader(self, timeout: float = 30.0, *, after_term: int = 0) -> dict:
        """The status of the running node that leads in the highest term
        (above ``after_term``), once there is one."""
        deadline = time.monotonic() + timeout
        while True:
            leaders = [s for s in map(self.status, self.running())
                       if s is not None and s["state"] == "LEADER" and s["term"] > after_term]
            if leaders:
                return max(leaders, key=lambda s: s["term"])
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no leader elected within {timeout}s")
            time.sleep(0.02)

    def wait_converged(self, nodes: Iterable[int] | None = None,
                       timeout: float = 30.0) -> dict:
        """Wait until the nodes (default: the running ones) have applied the
        same index and hold the same dict; return one of their dumps."""
        ids = list(self.running() if nodes is None else nodes)
        deadline = time.monotonic() + timeout
        while True:
            try:
                dumps = [self.dump(i) for i in ids]
            except (OSError, ValueError):
                dumps = []
            if dumps and all(d["last_applied"] == dumps[0]["last_applied"] and
                             d["data"] == dumps[0]["data"] for d in dumps):
                return dumps[0]
            if time.monotonic() >= deadline:
                applied = {d["id"]: d["last_applied"] for d in dumps}
                raise TimeoutError(f"nodes {ids} did not converge within {timeout}s "
                                   f"(applied: {applied})")
            time.sleep(0.05)
