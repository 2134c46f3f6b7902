"""The cluster under test: ``serve`` processes behind a LinkProxy, with the
process faults (SIGKILL, SIGSTOP/SIGCONT), membership bookkeeping and the
post-mortem (exit codes, log scan).

Every node is *known by* its port on the proxy: its ``--address``, its entry
in every node's ``--cluster``, and the address a membership change adds it
at are all proxy ports. Each node listens on a private port of its own
(``--bind``) that only the proxy dials. So every configuration the cluster
ever holds, including the one a snapshot carries, names proxy ports only, and
no raft byte can bypass the proxy (the runner checks both: every member's
configuration lists proxy ports only, and every member's raft connections
crossed the proxy). Fault schedules therefore run with snapshots on
(``SNAPSHOTS``: one every 128 entries, 32 kept behind it).

Membership: ``ids`` are the current members (the nodes the harness keeps
running, restarts after a fault, and expects to converge). ``spares`` more
ids have their ports (raft, proxy, client) set aside from the start, so every
server's ``--client-ports`` and every client know them; ``take_spare()``
hands out a fresh id, started on a fresh data dir with no bootstrap
configuration (``--cluster ''``) and added by the leader; ``retire(id)``
stops a node once its removal committed. The bootstrap members always start
with the same ``--cluster`` (the cluster id derives from it).

Engines: ``engine`` ("uv", "asyncio" or "mixed") and ``store`` (the asyncio
nodes' ``--store``) pass through to LocalCluster. TLS is not offered here: the
proxy learns each connection's sender from libraft's plaintext preamble, which
TLS hides (tests/test_hostile_storm.py and tests/test_tls.py cover TLS nodes).
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..client import ClusterClient
from ..local_cluster import LocalCluster, free_port
from .proxy import LinkProxy

__all__ = ["ProxiedCluster", "scan_log", "FATAL_PATTERNS", "ENGINES", "engines_for"]

#: ``--engine`` of the harness: every node on one engine, or ``mixed``
#: (odd ids on the uv engine, even ids on the asyncio engine).
ENGINES = ("uv", "asyncio", "mixed")


def engines_for(engine: str, nodes: int) -> dict[int, str]:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
    if engine == "mixed":
        return {i: "uv" if i % 2 else "asyncio" for i in range(1, nodes + 1)}
    return {i: engine for i in range(1, nodes + 1)}

#: Lines in a node's stderr that fail a run (anything we did not inject).
FATAL_PATTERNS = re.compile(
    r"Assertion|assertion failed|Fatal Python error|Segmentation fault|core dumped|"
    r"AddressSanitizer|LeakSanitizer|runtime error:|Aborted|Traceback \(most recent call|"
    r" CRITICAL | ERROR ")

#: Server arguments of fault schedules: frequent snapshots, a short trailing log
#: (followers that fall behind install snapshots; restarts load them).
SNAPSHOTS = ["--snapshot-threshold", "128", "--snapshot-trailing", "32"]
#: Server arguments that keep every entry in the log.
NO_SNAPSHOTS = ["--snapshot-threshold", "1000000", "--snapshot-trailing", "1000000"]


_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ node ")


def _records(lines: list[str]) -> list[tuple[int, list[str]]]:
    """(first line number, lines) per log record; untimestamped lines (C
    asserts, Python's fatal errors, tracebacks) continue the record before."""
    records: list[tuple[int, list[str]]] = []
    for n, line in enumerate(lines, 1):
        if _RECORD.match(line) or not records:
            records.append((n, [line]))
        else:
            records[-1][1].append(line)
    return records


def scan_log(path: Path, limit: int = 20) -> list[str]:
    """The lines of a node log that match FATAL_PATTERNS (at most ``limit``).

    Nothing is skipped: the one known record that used to be (asyncio's
    CancelledError traceback when a server stopped with a client connected)
    is fixed in server.py (docs/reliability.md, Findings 1)."""
    try:
        with open(path, errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    found: list[str] = []
    for first, record in _records(lines):
        for k, line in enumerate(record):
            if FATAL_PATTERNS.search(line) and len(found) < limit:
                found.append(f"{path.name}:{first + k}: {line.rstrip()[:300]}")
    return found


class ProxiedCluster(LocalCluster):
    """A LocalCluster whose raft traffic goes through a LinkProxy (``proxied``),
    with ``spares`` ids set aside for nodes added later, and which tracks
    paused nodes and unexpected deaths."""

    def __init__(self, base_dir: str | os.PathLike, size: int = 3, *,
                 server_args: Sequence[str] = (), proxied: bool = True,
                 engine: str = "uv", store: str = "memory", spares: int = 0,
                 forward: bool = False) -> None:
        super().__init__(base_dir, size, server_args=server_args,
                         engines=engines_for(engine, size), store=store, forward=forward)
        self.initial = list(self.ids)          # the bootstrap members
        self.spares: list[int] = []            # ids set aside, never started yet
        for i, kind in engines_for(engine, size + spares).items():
            if i > size:
                self.raft_ports[i], self.client_ports[i] = free_port(), free_port()
                self.engines[i] = kind
                self.stores[i] = store if kind == "asyncio" else None
                self.tls[i] = None
                if self.forward_ports is not None:
                    self.forward_ports[i] = free_port()
                self.spares.append(i)
        self.started: set[int] = set()         # every id that ever ran
        self.removed: list[int] = []           # retired after their removal committed
        self.proxy = LinkProxy(self.raft_ports).start() if proxied else None
        self.paused: set[int] = set()
        self.deaths: list[tuple[int, int]] = []     # (node, exit status) we did not cause
        self.exit_codes: dict[int, int] = {}
        # Know every id's client port, the spares' too.
        self._monitor.close()
        self._monitor = ClusterClient(self.client_ports, timeout=5.0, attempt_timeout=5.0)
        # Short timeouts: a paused or partitioned node must not stall the harness.
        self._fast = ClusterClient(self.client_ports, timeout=2.0, attempt_timeout=1.0)

    def all_durable(self) -> bool:
        """Every node's state outlives its process (it may be killed and restarted)."""
        return all(self.durable(i) for i in [*self.ids, *self.spares])

    def advertised(self, node_id: int) -> str:
        """The address the cluster knows ``node_id`` by: its proxy port (or,
        unproxied, its own)."""
        if self.proxy is None:
            return self.address(node_id)
        return f"127.0.0.1:{self.proxy.ports[node_id]}"

    def command(self, node_id: int) -> list[str]:
        cmd = super().command(node_id)
        bootstrap = ",".join(f"{i}={self.advertised(i)}" for i in self.initial)
        cmd[cmd.index("--cluster") + 1] = bootstrap if node_id in self.initial else ""
        if self.proxy is not None:
            cmd[cmd.index("--address") + 1] = self.advertised(node_id)
            cmd += ["--bind", self.address(node_id)]
        return cmd

    def spawn(self, node_id: int):
        self.started.add(node_id)
        return super().spawn(node_id)

    # ---------------------------------------------------------- membership

    def take_spare(self) -> int | None:
        """A fresh id (fresh data dir, ports known to all) now counted as a
        member-to-be, or None when none is left."""
        if not self.spares:
            return None
        node_id = self.spares.pop(0)
        self.ids = sorted([*self.ids, node_id])
        return node_id

    def retire(self, node_id: int, timeout: float = 20.0) -> None:
        """A node no longer in the configuration: stop it (SIGTERM; its exit
        status is checked like any other) and stop expecting it."""
        self.ids = [i for i in self.ids if i != node_id]
        self.removed.append(node_id)
        self.resume(node_id)
        if node_id in self.procs:
            self.exit_codes[node_id] = self.stop(node_id, timeout)
        self._fast.disconnect(node_id)

    # ---------------------------------------------------------- process faults

    def pause(self, node_id: int) -> None:
        os.kill(self.pid(node_id), signal.SIGSTOP)
        self.paused.add(node_id)

    def resume(self, node_id: int) -> None:
        self.paused.discard(node_id)
        if self.is_running(node_id):
            os.kill(self.pid(node_id), signal.SIGCONT)

    def resume_all(self) -> None:
        for i in list(self.paused):
            self.resume(i)

    def kill(self, node_id: int) -> None:
        self.paused.discard(node_id)   # SIGKILL ends a stopped process too
        super().kill(node_id)
        self._fast.disconnect(node_id)

    def kill_all(self) -> None:
        """SIGKILL every running node, as close to at once as we can."""
        procs = {i: self.procs[i] for i in self.running()}
        for proc in procs.values():
            proc.send_signal(signal.SIGKILL)
        for i in procs:
            self.kill(i)   # reaps it

    def check_deaths(self) -> list[tuple[int, int]]:
        """Nodes that exited without being told to: recorded, and forgotten
        (so the harness may restart them). Returns the new ones."""
        new = []
        for i, proc in list(self.procs.items()):
            code = proc.poll()
            if code is not None:
                self.procs.pop(i)
                proc.stdout.close()
                self.paused.discard(i)
                new.append((i, code))
        self.deaths += new
        return new

    def live(self) -> list[int]:
        """Running and not paused."""
        return [i for i in self.running() if i not in self.paused]

    # ---------------------------------------------------------- state

    def status(self, node_id: int) -> dict | None:
        if node_id in self.paused or not self.is_running(node_id):
            return None
        try:
            return self._fast.status(node_id)
        except (OSError, ValueError):
            return None

    def dump(self, node_id: int) -> dict:
        return self._fast.dump(node_id, timeout=10.0)

    def leader(self, among: Sequence[int] | None = None, after_term: int = 0) -> dict | None:
        """The status of the leader in the highest term among ``among`` (default:
        the live nodes), or None."""
        ids = self.live() if among is None else [i for i in among if i in self.live()]
        leaders = [s for s in map(self.status, ids)
                   if s is not None and s["state"] == "LEADER" and s["term"] > after_term]
        return max(leaders, key=lambda s: s["term"]) if leaders else None

    def wait_new_leader(self, among: Sequence[int] | None, after_term: int,
                        timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.leader(among, after_term)
            if found is not None:
                return found
            time.sleep(0.02)
        return None

    def wait_leader(self, timeout: float = 30.0, *, after_term: int = 0) -> dict:
        found = self.wait_new_leader(None, after_term, timeout)
        if found is None:
            raise TimeoutError(f"no leader elected within {timeout}s")
        return found

    # ---------------------------------------------------------- the end

    def close(self, timeout: float = 20.0) -> dict[int, int]:
        """Resume, stop (SIGTERM) every node, close the proxy; exit statuses."""
        try:
            self.resume_all()
            self.check_deaths()
            # Our client connections first: see docs/reliability.md (server shutdown).
            self._fast.close()
            self._monitor.close()
            time.sleep(0.05)
            codes = super().close(timeout)
            self.exit_codes.update(codes)
            return codes
        finally:
            self._fast.close()
            if self.proxy is not None:
                self.proxy.close()

    def scan_logs(self) -> dict[int, list[str]]:
        found = {i: scan_log(self.log_path(i)) for i in sorted(self.started)}
        return {i: lines for i, lines in found.items() if lines}

    def postmortem(self) -> list[str]:
        """Problems seen after close(): unexpected deaths, bad exit statuses,
        fatal lines in the logs."""
        problems = [f"node {i} died on its own with status {_status(c)}" for i, c in self.deaths]
        problems += [f"node {i} exited with status {_status(c)} on SIGTERM"
                     for i, c in self.exit_codes.items() if c != 0]
        for i, lines in self.scan_logs().items():
            problems += [f"node {i} log: {line}" for line in lines]
        return problems


def _status(code: Any) -> str:
    if isinstance(code, int) and code < 0:
        try:
            return f"{code} ({signal.Signals(-code).name})"
        except ValueError:
            pass
    return str(code)


def artifact_dir(artifacts: str | None, prefix: str) -> Path:
    """A fresh directory for one run's history, logs and data dirs, under
    ``artifacts`` (default: the temp dir)."""
    import tempfile

    parent = Path(artifacts or tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
