"""A deterministic, in-memory Raft cluster for testing your FSM.

``Cluster`` runs N replicas of your FSM on libraft's own test fixture: simulated
time, network and disk, in one thread, with no sockets and no sleeps. Nothing
happens unless you step it, and the same steps (and the same ``seed``) always give
the same run, so a failing test replays exactly.

    from canonical_raft.testing import Cluster

    def test_my_fsm_survives_partition():
        c = Cluster(3, fsm=MyFSM, seed=7)
        c.elect(0)
        f = c.apply(b"x")                  # on the leader; an ApplyFuture like a Node's
        assert c.step_until_done(f) == ...
        c.disconnect(0, 1); c.disconnect(0, 2)
        c.step_until_leader(exclude=0)
        g = c.apply(b"y")
        c.step_until_applied(g.index)      # the new leader and the servers it reaches
        c.heal()
        c.assert_consistent()              # every replica agrees on the applied prefix

Servers are numbered 0..n-1 (their Raft ids are 1..n). Times are simulated
milliseconds. The defaults of the fixture: election timeout 1000 ms, heartbeat
100 ms, network latency 15 ms, disk latency 10 ms.

Concurrency contract: a Cluster belongs to the thread that created it. The FSMs'
``apply``, ``snapshot`` and ``restore`` run synchronously inside the stepping
calls (``step``, ``step_until_*``, ``elect``...), on that thread; futures resolve
there too, so wait on them only after stepping (``result()`` on a future that is
not done raises instead of blocking forever), or with ``step_until_done``.
"""

from __future__ import annotations

import itertools
import logging
import random
from typing import Any, Callable, Iterable, Sequence, Union

from . import _core
from ._codec import snapshot_bytes
from .errors import NotLeaderError, RaftError, TimeoutError, error_from_code, from_core
from .fsm import FSM
from .futures import ApplyFuture
from .types import Role, State

__all__ = ["Cluster", "ClusterFuture", "ELECTION_TIMEOUT", "HEARTBEAT_TIMEOUT"]

log = logging.getLogger("canonical_raft.testing")

#: The fixture's election timeout (ms); randomized timeouts lie in [T, 2T].
ELECTION_TIMEOUT = 1000
#: The fixture's heartbeat interval (ms).
HEARTBEAT_TIMEOUT = 100
#: Default bound, in simulated ms, for the ``step_until_*`` methods.
DEFAULT_MAX_MS = 30_000

FSMFactory = Union[type, Callable[[], FSM]]
Exclude = Union[int, Iterable[int], None]


class ClusterFuture(ApplyFuture):
    """The ApplyFuture of ``Cluster.apply``. It resolves only while the cluster is
    stepped, on the stepping thread; waiting on it before then raises."""

    _request_id = 0  # its key in the Cluster's pending table

    def _check_wait(self) -> None:
        if not self.done():
            raise RaftError(
                "this future resolves only while the Cluster is stepped; call "
                "cluster.step_until_done(future) (or another step method) first")


class Cluster:
    """N replicas of an FSM on libraft's deterministic in-memory fixture.

    Args:
        n: number of voting servers (1 to 8).
        fsm: the FSM class (or any zero-argument factory); one instance per server.
        seed: makes the randomized election timeouts (in [1000, 2000] ms) random
            but reproducible, so elections happen in a seed-dependent order.
            ``None`` keeps the fixture's fixed defaults (1000 + 100 x i: server 0
            times out first, every time).
        pre_vote: enable Raft's pre-vote phase on every server.
        trace: print libraft's event trace to stderr (for debugging a test).

    Election timeouts with a seed: each server draws a new randomized timeout
    every time its election timer is reset (when it becomes a follower, at
    every election round it starts), as libraft does on a real node, so two
    servers that time out together once (a split vote) are unlikely to do so
    again. libraft's fixture would otherwise hand a server the same value at
    every draw. The first timeout of each server comes from ``random.Random(
    seed)`` (the same stream as ``cluster.random``, before your own draws);
    the next ones from a per-server ``raft_random`` sequence seeded from
    ``seed``. The core notices each draw after the step that made it (the
    timer then expires exactly that many ms ahead) and hands the fixture the
    next value (``raft_fixture_set_randomized_election_timeout``). Same seed,
    same calls: same run.
    """

    def __init__(self, n: int = 3, fsm: FSMFactory | None = None, *, seed: int | None = None,
                 pre_vote: bool = False, trace: bool = False) -> None:
        if fsm is None:
            raise TypeError("Cluster needs fsm=, an FSM class or factory")
        if not isinstance(n, int) or not 1 <= n <= _core.FIXTURE_MAX_SERVERS:
            raise ValueError(f"n must be an int in [1, {_core.FIXTURE_MAX_SERVERS}], not {n!r}")
        self.seed = seed
        self.pre_vote = pre_vote
        self._fsm_factory = fsm
        self._fsms: list[FSM] = [fsm() for _ in range(n)]
        #: A random.Random seeded with ``seed``, for the test's own choices.
        self.random = random.Random(seed)
        timeouts = ([] if seed is None else
                    [self.random.randint(ELECTION_TIMEOUT, 2 * ELECTION_TIMEOUT)
                     for _ in range(n)])
        # A stream of its own, so that cluster.random stays the test's.
        timer = random.Random(f"canonical_raft.testing.Cluster/election/{seed}")
        self._timer = timer  # grow() draws a new server's seed from it
        seeds = [] if seed is None else [timer.getrandbits(32) for _ in range(n)]
        try:
            self._core = _core.FixtureCore(self._fsms, pre_vote, True, trace, timeouts, seeds)
        except _core.CoreError as exc:
            raise from_core(exc) from None
        self._ids = itertools.count(1)
        self._pending: dict[int, ClusterFuture] = {}
        self._cut: set[tuple[int, int]] = set()  # one-way links cut by disconnect()
        self._disk_latency = [10] * n
        self._snapshot: tuple[int, int | None] | None = None  # set_snapshot_threshold's

    # ------------------------------------------------------------ inspection

    @property
    def n(self) -> int:
        """Number of servers."""
        return self._core.n

    @property
    def time(self) -> int:
        """Simulated time, in ms."""
        return self._core.time

    @property
    def steps(self) -> int:
        """Number of fixture steps taken so far."""
        return self._core.steps

    @property
    def fsms(self) -> list[FSM]:
        """The FSM instance of every server, by index."""
        return list(self._fsms)

    def fsm(self, i: int) -> FSM:
        """The FSM instance of server ``i``."""
        return self._fsms[self._check(i)]

    @property
    def leader(self) -> int | None:
        """Index of the stable leader (acknowledged by a connected majority), or None."""
        i = self._core.leader_index()
        return None if i < 0 else i

    def state(self, i: int) -> State:
        """Raft state of server ``i``."""
        return State(self._core.state(i))

    def term(self, i: int) -> int:
        return self._core.term(i)

    def commit_index(self, i: int) -> int:
        return self._core.commit_index(i)

    def last_index(self, i: int) -> int:
        return self._core.last_index(i)

    def last_applied(self, i: int) -> int:
        """Index of the last entry server ``i`` applied (commands and others)."""
        return self._core.last_applied(i)

    def alive(self, i: int) -> bool:
        return self._core.alive(i)

    def applied_commands(self, i: int, index: int) -> list[bytes] | None:
        """The commands server ``i``'s FSM applied at log ``index`` (None: not applied
        there, or covered by a snapshot it restored)."""
        return self._core.applied_commands(i, index)

    # ------------------------------------------------------------ stepping

    def step(self, n: int = 1) -> None:
        """Advance by ``n`` fixture events (a tick, a message, or a disk write each)."""
        self._call(self._core.step_n, n)

    def step_for(self, ms: int) -> None:
        """Advance simulated time by ``ms`` milliseconds."""
        self._call(self._core.step_for, ms)

    def step_until_applied(self, index: int, i: int | Iterable[int] | None = None, *,
                           max_ms: int = DEFAULT_MAX_MS) -> None:
        """Step until the servers that can reach the leader applied ``index``.

        By default, wait until there is a stable leader, and it and every live
        server linked to it in both directions (not cut off by ``disconnect``,
        ``isolate`` or ``partition``) applied ``index``. A server cut off from
        the leader, or killed, is not waited for (it may never catch up). The
        check is made after every step, so it follows a change of leader. Pass
        a server index, or several, as ``i`` to wait for exactly those servers
        (killed or cut off ones included).

        An index says where an entry is, not which one: after a partition, a new
        leader can put a different entry at the index of one the old leader
        proposed. To wait for a given command, use ``step_until_done``.

        Raises canonical_raft.TimeoutError if that takes more than ``max_ms``.
        """
        if index is None:
            raise TypeError("index is None: the command was not accepted (see the future)")
        servers = self._indexes(i)
        if i is not None and not servers:
            raise ValueError("no server to wait for")
        if not self._call(self._core.step_until_applied, servers, index, max_ms):
            who = ("the leader's side" if i is None else
                   "servers " + ", ".join(map(str, servers)))
            raise TimeoutError(f"{who} did not apply index {index} within {max_ms} "
                               f"simulated ms (leader: {self.leader}, "
                               f"applied: {self._applied_summary()})")

    def step_until_done(self, future: ClusterFuture, *, max_ms: int = DEFAULT_MAX_MS) -> Any:
        """Step until ``future`` (from ``apply`` on this cluster) resolves; return
        its result, or raise its exception.

        Unlike ``step_until_applied(future.index)``, this waits for that very
        command: an entry proposed by a leader that lost its place fails with
        LeadershipLostError even if another entry is applied at its index.

        Raises canonical_raft.TimeoutError (and leaves the future pending) if it
        does not resolve within ``max_ms``.
        """
        if not isinstance(future, ClusterFuture):
            raise TypeError(f"step_until_done needs a ClusterFuture from Cluster.apply, "
                            f"not {type(future).__name__}")
        if not future.done():
            if self._pending.get(future._request_id) is not future:
                raise ValueError("this future belongs to another Cluster")
            if not self._call(self._core.step_until_outcome, future._request_id, max_ms):
                raise TimeoutError(f"the command at index {future.index} did not resolve "
                                   f"within {max_ms} simulated ms (leader: {self.leader}, "
                                   f"applied: {self._applied_summary()})")
        return future.result()

    def step_until_leader(self, exclude: Exclude = None, *, max_ms: int = DEFAULT_MAX_MS) -> int:
        """Step until a stable leader not in ``exclude`` exists; return its index.

        Raises canonical_raft.TimeoutError if none emerges within ``max_ms``.
        """
        excluded = self._indexes(exclude)
        if not self._call(self._core.step_until_leader, excluded, max_ms):
            raise TimeoutError(f"no leader outside {sorted(excluded)} within {max_ms} "
                               f"simulated ms (states: {self._state_summary()})")
        return self._core.leader_index()

    def step_until_no_leader(self, *, max_ms: int = DEFAULT_MAX_MS) -> None:
        """Step until there is no stable leader."""
        if not self._call(self._core.step_until_no_leader, max_ms):
            raise TimeoutError(f"the leader kept its place for {max_ms} simulated ms")

    def step_until_state(self, i: int, state: State, *, max_ms: int = DEFAULT_MAX_MS) -> None:
        """Step until server ``i`` is in ``state``."""
        if not self._call(self._core.step_until_state, self._check(i), int(state), max_ms):
            raise TimeoutError(f"server {i} did not become {State(state).name} within "
                               f"{max_ms} simulated ms")

    # ------------------------------------------------------------ leadership

    def elect(self, i: int) -> None:
        """Make server ``i`` the leader (deposing the current one first if needed).

        The other servers' election timers are pushed back so that ``i`` times out
        first; it must be alive and reach a majority.
        """
        self._check(i)
        if self.leader == i:
            return
        if self.leader is not None:
            self.depose()
        self._settle_followers()
        self._call(self._core.elect, i)

    def depose(self) -> None:
        """Make the current leader step down (its followers stop acknowledging it
        until it does). Raises NotLeaderError if there is no stable leader."""
        self._settle_followers(keep_leader=True)
        self._call(self._core.depose)
        if self.leader is not None:
            raise TimeoutError("the leader could not be deposed")

    def _settle_followers(self, keep_leader: bool = False, max_ms: int = DEFAULT_MAX_MS) -> None:
        # elect/depose need every other server to be a follower.
        leader = self._core.leader_index() if keep_leader else -1
        deadline = self.time + max_ms
        while any(self._core.state(j) != State.FOLLOWER for j in range(self.n) if j != leader):
            if self.time >= deadline:
                raise TimeoutError(f"the servers did not settle as followers "
                                   f"(states: {self._state_summary()})")
            self._call(self._core.step_n, 1)

    # ------------------------------------------------------------ commands

    def apply(self, command: bytes, *, on: int | None = None) -> ClusterFuture:
        """Propose ``command`` on server ``on`` (default: the leader).

        Returns an ApplyFuture whose ``index`` is the command's log index; it
        resolves to the FSM's return value once that server applied it (step the
        cluster first). If the server is not the leader, the future fails with
        NotLeaderError; if it loses leadership meanwhile, LeadershipLostError.
        """
        if not isinstance(command, bytes):
            if isinstance(command, (bytearray, memoryview)):
                command = bytes(command)
            else:
                raise TypeError(f"command must be bytes, not {type(command).__name__}")
        fut = ClusterFuture()
        if on is None:
            on = self._live_leader()
        if on is None:
            fut.set_exception(NotLeaderError("no leader in the cluster"))
            return fut
        self._check(on)
        rid = next(self._ids)
        try:
            fut.index = self._core.submit(on, rid, command)
        except _core.CoreError as exc:
            fut.set_exception(from_core(exc))
            return fut
        fut._request_id = rid
        self._pending[rid] = fut
        return fut

    # ------------------------------------------------------------ membership

    def grow(self) -> int:
        """Add a server to the fixture and start it, with an empty log and a new
        FSM from the factory; returns its index (its Raft id is index + 1).

        It is not a member yet: ``add`` it, then ``assign`` it a role. The fixture
        holds at most 8 servers, removed ones included (a server cannot be
        deleted, only removed from the configuration and killed).
        """
        fsm = self._fsm_factory()
        seeds = [] if self.seed is None else [self._timer.getrandbits(32)]
        try:
            i = self._core.grow(fsm, seeds)
        except _core.CoreError as exc:
            raise from_core(exc) from None
        self._fsms.append(fsm)
        self._disk_latency.append(10)
        if self._snapshot is not None:
            threshold, trailing = self._snapshot
            self._core.set_snapshot_threshold(i, threshold)
            if trailing is not None:
                self._core.set_snapshot_trailing(i, trailing)
        return i

    def add(self, i: int, *, on: int | None = None) -> ClusterFuture:
        """Propose adding server ``i`` (see ``grow``) to the configuration as a
        spare, on server ``on`` (default: the leader). The future resolves to None
        once the change is committed, or fails as ``apply``'s does (a change
        already in flight: CantChangeError)."""
        return self._change(0, i, Role.SPARE, on)

    def assign(self, i: int, role: Role, *, on: int | None = None) -> ClusterFuture:
        """Propose giving server ``i`` the ``role`` (Role.VOTER, STANDBY or SPARE).
        libraft first catches a new voter up, then commits the change; the future
        resolves to None then."""
        return self._change(1, i, Role(role), on)

    def remove(self, i: int, *, on: int | None = None) -> ClusterFuture:
        """Propose removing server ``i`` from the configuration. The server keeps
        running (it no longer hears from the leader); ``kill`` it once removed."""
        return self._change(2, i, Role.SPARE, on)

    def configuration(self, i: int | None = None) -> dict[int, Role]:
        """Server ``i``'s configuration (default: the leader's, or None without
        one), as {server index: role}; it includes uncommitted changes."""
        if i is None:
            i = self.leader
            if i is None:
                raise NotLeaderError("no leader in the cluster")
        return {j: Role(role) for j, role in self._core.configuration(self._check(i))}

    def _change(self, kind: int, i: int, role: Role, on: int | None) -> ClusterFuture:
        self._check(i)
        fut = ClusterFuture()
        if on is None:
            on = self._live_leader()
        if on is None:
            fut.set_exception(NotLeaderError("no leader in the cluster"))
            return fut
        rid = next(self._ids)
        try:
            self._core.change(self._check(on), rid, kind, i, int(role))
        except _core.CoreError as exc:
            fut.set_exception(from_core(exc))
            return fut
        fut._request_id = rid
        self._pending[rid] = fut
        return fut

    def _live_leader(self) -> int | None:
        on = self.leader
        if on is None:  # the stable-leader view lags; accept any live leader
            on = next((j for j in range(self.n)
                       if self._core.alive(j) and self._core.state(j) == State.LEADER), None)
        return on

    # ------------------------------------------------------------ faults

    def disconnect(self, i: int, j: int, *, both: bool = True) -> None:
        """Cut the link between servers ``i`` and ``j`` (messages are silently
        dropped, like a partition). ``both=False`` cuts only ``i`` -> ``j``."""
        for a, b in ((i, j), (j, i)) if both else ((i, j),):
            self._check_pair(a, b)
            self._cut.add((a, b))
            self._core.saturate(a, b)

    def reconnect(self, i: int, j: int, *, both: bool = True) -> None:
        """Restore the link between ``i`` and ``j`` (undo disconnect)."""
        for a, b in ((i, j), (j, i)) if both else ((i, j),):
            self._check_pair(a, b)
            self._cut.discard((a, b))
            if self._core.alive(a) and self._core.alive(b):
                self._core.desaturate(a, b)

    def isolate(self, i: int) -> None:
        """Cut server ``i`` off from every other server."""
        for j in range(self.n):
            if j != i:
                self.disconnect(i, j)

    def partition(self, *groups: Sequence[int]) -> None:
        """Split the cluster: servers in different groups cannot talk. Servers
        named in no group form one more group."""
        named = {i for g in groups for i in g}
        rest = [i for i in range(self.n) if i not in named]
        side = {}
        for k, g in enumerate(list(groups) + [rest]):
            for i in g:
                side[self._check(i)] = k
        for a in range(self.n):
            for b in range(a + 1, self.n):
                if side[a] != side[b]:
                    self.disconnect(a, b)

    def kill(self, i: int) -> None:
        """Stop server ``i``: it gets no ticks and no messages (its memory, log and
        FSM are kept, as after a pause)."""
        self._core.kill(self._check(i))

    def revive(self, i: int) -> None:
        """Start a killed server again; links cut with disconnect() stay cut."""
        self._core.revive(self._check(i))
        for a, b in self._cut:
            if i in (a, b):
                self._core.saturate(a, b)

    def heal(self) -> None:
        """Revive every server, restore every link, reset network latencies (disk
        latencies stay: see set_disk_latency)."""
        for i in range(self.n):
            if not self._core.alive(i):
                self._core.revive(i)
        for a, b in list(self._cut):
            self._core.desaturate(a, b)
        self._cut.clear()
        for i in range(self.n):
            self._core.set_network_latency(i, 15)
            self._core.io_fault(i, -1, 0)
        # Disk latency is left alone (set_disk_latency lowers it safely if asked).

    def set_network_latency(self, i: int, ms: int) -> None:
        """Messages sent by server ``i`` from now on take ``ms`` to arrive (default 15)."""
        self._core.set_network_latency(self._check(i), ms)

    def set_disk_latency(self, i: int, ms: int, *, reorder: bool = False) -> None:
        """Disk writes of server ``i`` from now on take ``ms`` (default 10).

        The fixture completes each write at submission time + latency, so lowering
        the latency under in-flight writes would complete a later write first.
        That breaks raft_io's in-order contract, and libraft 0.22.1 then miscounts
        its persisted entries (an unsigned underflow) and the server can stall for
        good. A lower latency therefore takes effect once the server has no entry
        or snapshot write in flight (checked after every step); ``reorder=True``
        applies it at once, to study that case on purpose. Raising is immediate.
        """
        i = self._check(i)
        if not isinstance(ms, int) or ms < 0:
            raise ValueError(f"disk latency must be an int >= 0, not {ms!r}")
        self._disk_latency[i] = ms
        self._core.set_disk_latency(i, ms, reorder)

    def set_election_timeout(self, i: int, ms: int) -> None:
        """The randomized election timeout server ``i`` draws next, in [1000, 2000].

        It holds until the server resets its election timer with it; with a seed,
        the draws after that are random again."""
        self._call(self._core.set_election_timeout, self._check(i), ms)

    def election_timeout(self, i: int) -> int:
        """The randomized election timeout server ``i`` will draw next (ms)."""
        return self._core.election_timeout(self._check(i))

    def io_fault(self, i: int, delay: int = 0, repeat: int = 1, *, unsafe: bool = False) -> None:
        """Fail server ``i``'s I/O (disk writes, sends, term/vote saves) after
        ``delay`` more requests, ``repeat`` times (-1: forever; ``heal`` clears it).

        A failed send is a lost message. A failed write (term, vote, entries,
        snapshot) stops the server: libraft cannot take back what it already
        holds in memory, so the server turns ``State.UNAVAILABLE`` (see
        ``stopped``), its requests in flight fail with ``LeadershipLostError``
        (their entries may still commit through the others), it refuses new ones
        with ``NotLeaderError`` and ignores ticks and messages. A real node would
        be restarted from its disk; the fixture cannot restart a server, so it
        stays stopped: ``kill`` it as an operator would stop the process (the
        fixture's stable leader needs every live server to know the leader).
        fix_libraft.sh ``io-error-stop``; before it, libraft 0.22.1 freed the
        entries of a failed append twice. ``unsafe`` is accepted and ignored (it
        was required then).
        """
        del unsafe
        if not isinstance(delay, int) or not isinstance(repeat, int):
            raise TypeError("delay and repeat must be ints")
        self._core.io_fault(self._check(i), delay, repeat)

    def stopped(self, i: int) -> bool:
        """Whether server ``i`` stopped after a failed write (see ``io_fault``)."""
        return self._core.state(self._check(i)) == State.UNAVAILABLE

    def set_snapshot_threshold(self, threshold: int, trailing: int | None = None) -> None:
        """Take a snapshot every ``threshold`` entries, keeping ``trailing`` entries.

        libraft 0.22.1's fixture mishandled a log truncation after an installed
        snapshot, and its legacy layer sent a snapshot replaced while loading
        with the old term; both are fixed in our build (fix_libraft.sh), and the
        simulation runs with frequent snapshots.
        """
        self._snapshot = (threshold, trailing)  # for servers grown later
        for i in range(self.n):
            self._core.set_snapshot_threshold(i, threshold)
            if trailing is not None:
                self._core.set_snapshot_trailing(i, trailing)

    # ------------------------------------------------------------ checks

    def converge(self, *, max_ms: int = DEFAULT_MAX_MS) -> int:
        """Heal the cluster, wait for a leader, and step until every server applied
        everything the leader has; returns the leader's index."""
        self.heal()
        leader = self.step_until_leader(max_ms=max_ms)
        self.step_until_applied(self._core.last_index(leader), max_ms=max_ms)
        return leader

    def assert_consistent(self) -> None:
        """Assert that the replicas agree.

        Checks that no two servers were ever leader in the same term; that at every
        log index applied by two servers they applied the same commands; and that
        servers which applied up to the same index have equal ``FSM.snapshot()``.
        Raises AssertionError describing the first disagreement.
        """
        problems = list(self._core.violations())
        mismatch = self._core.applied_disagreement()
        if mismatch is not None:
            problems.append(mismatch)
        by_applied: dict[int, list[int]] = {}
        for i in range(self.n):
            by_applied.setdefault(self._core.last_applied(i), []).append(i)
        for index, servers in sorted(by_applied.items()):
            snaps = {i: snapshot_bytes(self._fsms[i].snapshot()) for i in servers}
            first = servers[0]
            for i in servers[1:]:
                if snaps[i] != snaps[first]:
                    problems.append(f"servers {first} and {i} both applied up to index {index} "
                                    f"but their FSM snapshots differ "
                                    f"({snaps[first][:60]!r} vs {snaps[i][:60]!r})")
        if problems:
            seed = "" if self.seed is None else f" (seed={self.seed})"
            raise AssertionError(f"replicas disagree{seed}: " + "; ".join(problems))

    # ------------------------------------------------------------ internals

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except _core.CoreError as exc:
            raise from_core(exc) from None
        finally:
            self._resolve()

    def _resolve(self) -> None:
        results, failures = self._core.take_outcomes()
        pending = self._pending
        for rid, index, ok, value in results:
            fut = pending.pop(rid, None)
            if fut is None:
                continue
            if index:  # 0: a membership change
                fut.index = index
            if ok:
                fut.set_result(value)
            else:
                log.error("FSM.apply raised at index %d (the entry counts as applied)",
                          index, exc_info=value)
                fut.set_exception(value)
        for rid, code in failures:
            fut = pending.pop(rid, None)
            if fut is not None:
                fut.set_exception(error_from_code(code, indeterminate=True))

    def _check(self, i: int) -> int:
        if not isinstance(i, int) or not 0 <= i < self._core.n:
            raise IndexError(f"no server {i!r} in a cluster of {self._core.n}")
        return i

    def _check_pair(self, i: int, j: int) -> None:
        self._check(i)
        self._check(j)
        if i == j:
            raise ValueError("a server has no link to itself")

    def _indexes(self, which: Exclude) -> list[int]:
        if which is None:
            return []
        if isinstance(which, int):
            return [self._check(which)]
        return [self._check(i) for i in which]

    def _state_summary(self) -> str:
        return ", ".join(
            f"{i}:{State(self._core.state(i)).name.lower()}/t{self._core.term(i)}"
            + ("" if self._core.alive(i) else "(killed)") for i in range(self.n))

    def _applied_summary(self) -> str:
        return ", ".join(f"{i}:{self._core.last_applied(i)}" for i in range(self.n))

    def __repr__(self) -> str:
        return f"<Cluster n={self.n} time={self.time}ms leader={self.leader} seed={self.seed}>"
