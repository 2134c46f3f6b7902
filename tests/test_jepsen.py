"""The Jepsen-style harness (canonical_raft.jepsen): its own self-tests, then
seeded fault schedules and crash points against real node processes.

Default (CI) form, about 7 minutes on 2 shared cores:
  * proxy, log-scanner, journal-merge and bypass-check self-tests (seconds);
  * 8 fault schedules x 30 s on 3 nodes (seeds 1-8), every fault class and
    every membership move (add, remove, replace a member, transfer
    leadership), snapshots on (one every 128 entries); every node is known by
    its proxy port and binds a private one, so no configuration, a snapshot's
    included, leads around the proxy, and the run checks that none does;
  * 40 crash points (6-7 of each kind: single, all, leader, snapshot, install, close);
  * the asyncio engine: 2 schedules x 20 s on 3 asyncio-engine nodes (seeds
    101-102), the fault classes dealt over them the same way. On MemoryStore
    (while canonical_raft.store.mdb is not importable) the classes that restart
    a process (kill-leader, kill-random, restart-all) are left out: such a node
    comes back with no log and no memory of its votes. Partitions, one-way
    links, slow and refused links and SIGSTOP pauses all run. On MDBStore
    every class runs. JEPSEN_CI_AIO_SEEDS / _AIO_TIME override the counts.
Large form (``-m slow``; the nightly job): 100 schedules x 90 s on 3 nodes,
20 x 120 s on 5 nodes, 1,000 crash points. JEPSEN_CI_SEEDS / _TIME /
_POINTS override the default form's counts; JEPSEN_SEEDS / _TIME / _SEEDS_5 /
_TIME_5 / _POINTS the large form's.

A failure prints its seed and the directory that keeps the history, the
nemesis timeline, every node's log and data dir. Timing is never asserted.
"""

from __future__ import annotations

import os
import socket
import struct
import tempfile
import threading
import time

import pytest

from canonical_raft.jepsen import (FAULTS, CrashConfig, LinkProxy, RunConfig,
                                   run_crash_points, run_schedule, scan_log)
from canonical_raft.jepsen.nemesis import MEMBERSHIP_MOVES, RESTART_FAULTS, restartable_faults
from canonical_raft.local_cluster import free_port

CI_SEEDS = int(os.environ.get("JEPSEN_CI_SEEDS", "8"))
CI_TIME = float(os.environ.get("JEPSEN_CI_TIME", "30"))
CI_POINTS = int(os.environ.get("JEPSEN_CI_POINTS", "40"))
CI_AIO_SEEDS = int(os.environ.get("JEPSEN_CI_AIO_SEEDS", "2"))
CI_AIO_TIME = float(os.environ.get("JEPSEN_CI_AIO_TIME", "20"))


def _aio_store() -> str:
    """mdb once canonical_raft.store.mdb imports (every fault class), else memory."""
    try:
        import canonical_raft.store.mdb  # noqa: F401
    except ImportError:
        return "memory"
    return "mdb"


AIO_STORE = _aio_store()


def _artifacts() -> str:
    """Where failing runs keep their files: JEPSEN_ARTIFACTS, else a fixed
    directory under the temp dir (not pytest's basetemp, which later pytest
    runs prune). Clean runs delete their own directory."""
    path = os.environ.get("JEPSEN_ARTIFACTS") or os.path.join(tempfile.gettempdir(),
                                                              "canonical-raft-jepsen")
    os.makedirs(path, exist_ok=True)
    return path


# ------------------------------------------------------------------ self-tests

class _Echo:
    """A TCP echo server standing in for a node behind the proxy (it echoes
    everything after the 24-byte handshake)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", free_port()))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(24, socket.MSG_WAITALL)   # the handshake, as libraft reads it
                while data := conn.recv(4096):
                    conn.sendall(data)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


def _connect(proxy: LinkProxy, src: int, dst: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", proxy.ports[dst]), timeout=5)
    s.sendall(struct.pack("<QQQ", 1, src, 0))
    return s


def _echoes(s: socket.socket, wait: float = 0.5) -> bool:
    """True if a ping comes back; False if nothing within ``wait`` or reset."""
    s.settimeout(wait)
    try:
        s.sendall(b"ping")
        return s.recv(4, socket.MSG_WAITALL) == b"ping"
    except (socket.timeout, OSError):
        return False


def test_proxy_applies_each_rule_per_directed_link_and_heals():
    echo = {i: _Echo() for i in (1, 2, 3)}
    with LinkProxy({i: e.port for i, e in echo.items()}) as proxy:
        a, b = _connect(proxy, 1, 2), _connect(proxy, 3, 2)
        assert _echoes(a) and _echoes(b)

        proxy.set_link(1, 2, "blackhole")        # one direction, one link
        assert not _echoes(a)                    # held back, not delivered
        assert _echoes(b)                        # 3 -> 2 untouched
        assert _echoes(_connect(proxy, 2, 1))    # 2 -> 1 untouched
        proxy.heal()
        assert not _echoes(a, 2.0)               # its held bytes were never delivered: reset
        assert _echoes(_connect(proxy, 1, 2))    # a new connection works

        proxy.partition([1], [2, 3])
        assert not _echoes(_connect(proxy, 1, 2))
        assert not _echoes(_connect(proxy, 2, 1))
        assert _echoes(_connect(proxy, 3, 2))
        proxy.heal()
        assert _echoes(_connect(proxy, 2, 1))

        proxy.isolate(3, "refuse")               # fails fast: reset at once
        s = socket.create_connection(("127.0.0.1", proxy.ports[3]), timeout=5)
        s.sendall(struct.pack("<QQQ", 1, 1, 0))
        s.settimeout(5)
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            if s.recv(1) == b"":
                raise ConnectionResetError
        proxy.heal()

        proxy.set_links(list(proxy.modes()), "up", delay=0.2)
        c = _connect(proxy, 1, 3)
        t0 = time.monotonic()
        assert _echoes(c, 5.0)
        assert time.monotonic() - t0 >= 0.35      # delayed both ways
        proxy.heal()
        assert all(m == "up" for m in proxy.modes().values())
        assert proxy.connections()[(1, 2)] >= 3
    for e in echo.values():
        e.close()


def test_every_node_is_known_by_its_proxy_port_and_binds_its_own(tmp_path):
    from canonical_raft.jepsen import ProxiedCluster

    cluster = ProxiedCluster(tmp_path, 3, spares=2)
    try:
        assert cluster.ids == [1, 2, 3] and cluster.spares == [4, 5]

        def arg(cmd, name):
            return cmd[cmd.index(name) + 1]
        proxied = {i: f"127.0.0.1:{cluster.proxy.ports[i]}" for i in (1, 2, 3, 4, 5)}
        bootstrap = ",".join(f"{i}={proxied[i]}" for i in (1, 2, 3))
        for i in (1, 2, 3):
            cmd = cluster.command(i)
            assert arg(cmd, "--address") == proxied[i]
            assert arg(cmd, "--bind") == f"127.0.0.1:{cluster.raft_ports[i]}"
            assert arg(cmd, "--cluster") == bootstrap          # the same on every node
            assert str(cluster.client_ports[5]) in arg(cmd, "--client-ports")
        assert cluster.take_spare() == 4 and cluster.ids == [1, 2, 3, 4]
        joiner = cluster.command(4)
        assert arg(joiner, "--cluster") == "" and arg(joiner, "--address") == proxied[4]
        assert set(cluster.proxy.targets) == {1, 2, 3, 4, 5}    # the proxy routes spares too
    finally:
        cluster.close()


def test_log_scan_flags_fatal_lines_including_the_former_shutdown_noise(tmp_path):
    # server.py no longer logs this on SIGTERM: nothing is skipped any more.
    noise = [
        "2026-01-01 00:00:00,000 node 1 asyncio ERROR Exception in callback "
        "StreamReaderProtocol.connection_made.<locals>.callback(<Task>) at x.py:1",
        "handle: <Handle StreamReaderProtocol.connection_made.<locals>.callback(<Task>)>",
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in f',
        "    await self._waiter",
        "asyncio.exceptions.CancelledError",
    ]
    clean = tmp_path / "clean.log"
    clean.write_text("2026-01-01 00:00:00,000 node 1 x INFO ok\n")
    assert scan_log(clean) == []
    noisy = tmp_path / "noisy.log"
    noisy.write_text("\n".join(["2026-01-01 00:00:00,000 node 1 x INFO ok", *noise]) + "\n")
    assert len(scan_log(noisy)) == 2      # the ERROR record and its traceback
    bad = tmp_path / "bad.log"
    bad.write_text("\n".join([*noise[:4], "python3: src/replication.c:12: f: Assertion "
                              "`x' failed.", *noise[4:],
                              "Fatal Python error: Aborted"]) + "\n")
    found = scan_log(bad)
    assert len(found) == 4, found


def test_journal_checks_find_divergence_lost_and_misplaced_writes():
    from canonical_raft.checker import Event, pair
    from canonical_raft.jepsen.journals import check_with_journals
    from canonical_raft.server import entry_digest

    def cmd(k, v, seq):
        return {"op": "set", "k": k, "v": v, "c": "p0", "s": seq}

    def journal(*recs):
        return {"first": 0, "last_index": 4, "entries": list(recs)}

    a, b = cmd("x", 1, 1), cmd("x", 2, 2)
    good = journal({"noop": [1, 1]}, {"index": 2, "digest": "d2",
                                      "commands": [{"cmd": a, "dup": False}]},
                   {"index": 3, "digest": "d3", "commands": [{"cmd": b, "dup": False}]})
    events = [Event(0, "invoke", "write", 0, key="x", value=1),
              Event(0, "ok", "write", 10, key="x", value=1, index=2),
              Event(0, "invoke", "write", 20, key="x", value=2),
              Event(0, "ok", "write", 30, key="x", value=2, index=3),
              Event(1, "invoke", "read", 40, key="x"),
              Event(1, "ok", "read", 50, key="x", value=2, index=3)]
    ops = pair(events)
    problems, checks = check_with_journals(ops, {1: good, 2: good})
    assert not problems and {"index_order", "replica_divergence", "lost_writes",
                             "duplicate_applies", "at_index"} <= set(checks)
    other = journal({"noop": [1, 1]}, {"index": 2, "digest": "zz", "commands": []})
    problems, _ = check_with_journals(ops, {1: good, 2: other})
    assert any("divergence" in p for p in problems), problems
    lost = journal({"noop": [1, 1]}, {"index": 2, "digest": "d2",
                                      "commands": [{"cmd": a, "dup": False}]})
    problems, _ = check_with_journals(ops, {1: lost})
    assert any("lost-write" in p for p in problems), problems
    late = pair(events[:4] + [Event(1, "invoke", "read", 40, key="x"),
                              Event(1, "ok", "read", 50, key="x", value=2, index=2)])
    problems, _ = check_with_journals(late, {1: good})
    assert any("order" in p for p in problems), problems
    twice = journal({"index": 1, "digest": "d1", "commands": [{"cmd": a, "dup": False}]},
                    {"index": 2, "digest": "d2", "commands": [{"cmd": a, "dup": False}]},
                    {"index": 3, "digest": "d3", "commands": [{"cmd": b, "dup": False}]})
    problems, _ = check_with_journals(ops, {1: twice})
    assert any("duplicate" in p for p in problems), problems
    assert entry_digest([b"x"]) != entry_digest([b"x", b"x"])


# ------------------------------------------------------------------ fault schedules

def _schedule(seed: int, seconds: float, nodes: int, artifacts: str,
              faults: tuple[str, ...] = FAULTS, **engine: str):
    result = run_schedule(RunConfig(seed=seed, time=seconds, nodes=nodes, faults=faults,
                                    artifacts=artifacts, **engine))
    print(result.summary())
    assert result.ok, f"seed {seed} failed; artifacts in {result.artifacts}:\n" \
                      f"{result.summary()}"
    assert result.verdict == "ok"
    return result


def ci_share(seed: int, seeds: int) -> tuple[str, ...]:
    """The classes seed ``seed`` (1-based) of ``seeds`` runs: every seeds-th
    fault class, and one membership move in rotation (so moves meet the
    other faults' aftermath: a replaced member after a restart-all...)."""
    faults = tuple(f for f in FAULTS if f not in MEMBERSHIP_MOVES)
    moves = MEMBERSHIP_MOVES
    mine = moves[(seed - 1) % seeds::seeds] if seeds < len(moves) else \
        (moves[(seed - 1) % len(moves)],)
    return (*faults[(seed - 1) % seeds::seeds], *mine)


def test_the_ci_seeds_share_out_every_class():
    for seeds in (2, 4, 8, 10):
        dealt = [f for seed in range(1, seeds + 1) for f in ci_share(seed, seeds)]
        assert set(dealt) == set(FAULTS), seeds


@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", range(1, CI_SEEDS + 1))
def test_fault_schedule(seed):
    """3 nodes; the fault classes are dealt out over the CI seeds (ci_share;
    each schedule cycles through its share), so the short form still runs
    every class. Linearizable, no lost write, replicas equal, no crash or
    assertion, every restart works, no configuration leads around the proxy."""
    result = _schedule(seed, CI_TIME, 3, _artifacts(), ci_share(seed, CI_SEEDS))
    assert all(m["done"] for m in result.extra["membership"]), result.extra["membership"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("seed", range(101, 101 + CI_AIO_SEEDS))
def test_fault_schedule_asyncio_engine(seed):
    """3 asyncio-engine nodes (on the server's own event loop) behind the
    proxy; the classes this store allows dealt over the seeds as above."""
    allowed, left_out = restartable_faults(FAULTS, AIO_STORE == "mdb")
    share = allowed[(seed - 101) % CI_AIO_SEEDS::CI_AIO_SEEDS]
    result = _schedule(seed, CI_AIO_TIME, 3, _artifacts(), share, engine="asyncio",
                       store=AIO_STORE)
    assert result.faults and set(result.faults) <= set(share), result.faults
    assert not set(result.faults) & set(left_out)


def test_memory_store_schedules_leave_out_what_restarts_a_process():
    allowed, left_out = restartable_faults(FAULTS, durable=False)
    assert set(left_out) == set(RESTART_FAULTS) == {"kill-leader", "kill-random",
                                                    "restart-all"}
    assert {"pause", "pause-leader", "isolate-leader", "split"} <= set(allowed)
    assert restartable_faults(FAULTS, durable=True) == (FAULTS, {})
    result = run_crash_points(CrashConfig(seed=1, points=1, engine="asyncio", store="memory",
                                          artifacts=_artifacts()))
    assert not result.ok and "durable store" in result.problems[0], result.problems


def test_every_fault_class_is_in_the_mix():
    assert set(FAULTS) >= {"kill-leader", "kill-random", "pause", "pause-leader",
                           "isolate-leader", "split", "one-way", "restart-all",
                           "add-member", "remove-member", "replace-member", "transfer-leader"}


def test_journal_merge_covers_processes_that_died_and_reports_gaps():
    from canonical_raft.checker import Event, pair
    from canonical_raft.jepsen.journals import check_with_journals, merged_log

    def cmd(v, seq):
        return {"cmd": {"op": "set", "k": "x", "v": v, "c": "p0", "s": seq}, "dup": False}

    def rec(index, v):
        return {"index": index, "digest": f"d{index}", "commands": [cmd(v, index)]}

    # A process that died after index 3, one restarted from a snapshot at 5.
    early = {"first": 0, "entries": [{"noop": [1, 1]}, rec(2, 2), rec(3, 3)]}
    late = {"first": 0, "entries": [{"restore": 5}, rec(6, 6), rec(7, 7)]}
    merged, gaps = merged_log([early, late])
    assert gaps == [4, 5] and [r["index"] for r in merged["entries"]] == [2, 3, 6, 7]

    def write(p, v, index, t):
        return [Event(p, "invoke", "write", t, key="x", value=v),
                Event(p, "ok", "write", t + 1, key="x", value=v, index=index)]
    ops = pair([*write(0, 2, 2, 0), *write(0, 3, 3, 10), *write(0, 5, 5, 20),
                *write(0, 6, 6, 30), *write(0, 7, 7, 40)])
    figures: dict = {}
    problems, checks = check_with_journals(ops, {"1/10": early, "1/11": late}, merge=True,
                                           gap_figures=figures)
    assert not problems and "lost_writes" in checks and figures["unjournaled_indices"] == 2
    # A write acknowledged at a journaled index but absent is still caught.
    lost = {"first": 0, "entries": [{"restore": 5}, rec(6, 6)]}
    problems, _ = check_with_journals(ops, {"1/10": early, "1/11": lost}, merge=True)
    assert any("lost-write" in p for p in problems), problems


def test_the_bypass_check_flags_a_configuration_that_names_a_real_port():
    from canonical_raft.jepsen.runner import _bypass_check

    class Fake:
        ids = [1, 2]

        class proxy:
            ports = {1: 1001, 2: 1002}

        def __init__(self, members):
            self.members = members

        def advertised(self, i):
            return f"127.0.0.1:{self.proxy.ports[i]}"

        def status(self, node):
            return {"snapshots_taken": 1, "snapshots_restored": 0,
                    "members": [{"id": i, "address": a} for i, a in self.members.items()]}

    good = Fake({1: "127.0.0.1:1001", 2: "127.0.0.1:1002"})
    figures: dict = {}
    assert _bypass_check(good, figures) == [] and figures["snapshots_taken"] == 2
    bad = Fake({1: "127.0.0.1:1001", 2: "127.0.0.1:2002"})   # node 2's own port
    assert any("bypass" in p for p in _bypass_check(bad, {}))


@pytest.mark.timeout(600)
def test_crash_points():
    result = run_crash_points(CrashConfig(seed=1, points=CI_POINTS,
                                          artifacts=_artifacts()))
    print(result.summary())
    assert result.ok, f"crash points failed; artifacts in {result.artifacts}:\n" \
                      f"{result.summary()}"
    assert sum(result.points.values()) == CI_POINTS
    assert result.snapshots.get("snapshot", 0) > 0   # the killed nodes were snapshotting


# ------------------------------------------------------------------ large form
# Marked ``slow`` (declared in pyproject.toml). The tests also skip themselves
# unless the -m expression names "slow" or "nightly", as test_simulation.py
# does: a plain ``pytest`` must not start a 3-hour run. To make
# ``pytest -m nightly`` select them, declare "nightly" in pyproject.toml and
# add ``pytest.mark.nightly`` to LARGE.

LARGE = [pytest.mark.slow, pytest.mark.nightly, pytest.mark.timeout(0)]


def _large_form(request) -> None:
    expr = request.config.getoption("markexpr") or ""
    if "slow" not in expr and "nightly" not in expr:
        pytest.skip("the large reliability form: run with -m slow (or -m nightly)")


def _many(seeds, seconds: float, nodes: int, artifacts: str) -> None:
    """Every seed runs; the failing ones are all reported at the end."""
    failed = []
    for seed in seeds:
        result = run_schedule(RunConfig(seed=seed, time=seconds, nodes=nodes,
                                        artifacts=artifacts))
        print(result.summary(), flush=True)
        if not result.ok:
            failed.append(f"seed {seed}: {result.artifacts}")
    assert not failed, "failing seeds (artifacts kept):\n" + "\n".join(failed)


@pytest.mark.parametrize("nodes, seeds, seconds", [
    (3, range(1000, 1000 + int(os.environ.get("JEPSEN_SEEDS", "100"))),
     float(os.environ.get("JEPSEN_TIME", "90"))),
    (5, range(5000, 5000 + int(os.environ.get("JEPSEN_SEEDS_5", "20"))),
     float(os.environ.get("JEPSEN_TIME_5", "120"))),
], ids=["3-nodes", "5-nodes"])
def test_nightly_fault_schedules(nodes, seeds, seconds, request):
    _large_form(request)
    _many(seeds, seconds, nodes, _artifacts())


def test_nightly_crash_points(request):
    _large_form(request)
    points = int(os.environ.get("JEPSEN_POINTS", "1000"))
    result = run_crash_points(CrashConfig(seed=7, points=points,
                                          artifacts=_artifacts()))
    print(result.summary())
    assert result.ok, f"crash points failed; artifacts in {result.artifacts}"


for _test in (test_nightly_fault_schedules, test_nightly_crash_points):
    for _mark in LARGE:
        _mark(_test)
