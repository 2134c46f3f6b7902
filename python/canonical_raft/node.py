"""Node: one member of a Raft cluster, replicating a user's FSM (uv engine)."""

from __future__ import annotations

import asyncio
import atexit
import copy
import functools
import fcntl
import itertools
import logging
import operator
import os
import threading
import time
import weakref
from typing import Any, AsyncIterator, Callable, Iterable

from . import _applier, _core, forwarding, identity
from ._preflight import check_bindable, check_metadata, newest_snapshot
from ._snapshots import Snapshots
from ._uv_engine import UvEngine
from .aio.engine import AsyncioEngine
from .config import Config, check_id, parse_address, to_options
from .errors import (AddressInUseError, BadIdError, BusyError, CorruptError, DataDirLockedError,
                     InvalidConfigError, NotLeaderError, RaftError, ShutdownError,
                     TimeoutError, TooBigError, from_core)
from .events import EventHub
from .fsm import FSM
from .futures import ApplyFuture, Future
from .tls import TLS
from .types import Leader, LeadershipEvent, Role, Server, State

log = logging.getLogger("canonical_raft")

LOCK_FILE = "canonical-raft.lock"
_live_nodes: weakref.WeakSet[Node] = weakref.WeakSet()


class Node:
    """One server of a Raft cluster.

    ``Node(id, address, fsm, data_dir, cluster={id: address, ...})`` bootstraps a
    new cluster from ``cluster`` (every initial member passes the same dict; a
    node whose data dir already holds state ignores it). A node that joins an
    existing cluster passes no ``cluster`` and is added by the leader with
    ``add_voter``. ``start()`` (or ``with Node(...) as node``) starts it.

    Thread safety: every method may be called from any thread. Callbacks and the
    FSM run on the node's applier thread.

    ``address`` is the address the cluster knows this node by: peers dial it,
    and it is this node's entry in ``cluster``. The node listens on ``bind``
    ("host:port"; default: ``address``) instead, when the two differ: behind
    NAT, a container's port mapping or a proxy, ``address`` is the outside
    address that leads to ``bind`` (e.g. ``bind="0.0.0.0:9001"``). Nothing
    checks that one leads to the other. ``bind`` is the same setting as
    ``Config.bind_address``; passing both, they must agree.

    The data dir remembers which node id and cluster it belongs to
    (``canonical-raft.identity``): start() refuses a dir of another node or
    cluster with IdentityError (docs/operations.md, "Data dir identity").
    """

    _identity: identity.Identity | None = None  # set by start(), then the applier's
    _announced_term = 0  # the term this node last announced the cluster id in, as leader
    _unhook_own: Callable[[], None] | None = None  # our own leadership callback
    _records_applied = 0  # reserved records this node proposed and applied (not user commands)
    _hop_clock: list | None = None  # benchmark instrument: the applier notes when it takes a batch

    def __init__(self, id: int, address: str, fsm: FSM, data_dir: str | os.PathLike | None = None,
                 *, cluster: dict[int, str] | None = None, config: Config | None = None,
                 engine: str = "uv", store: Any = None, tls: TLS | None = None,
                 forward: dict[int, str] | None = None, bind: str | None = None) -> None:
        self.id = check_id(id)
        parse_address(address)
        self.address = address
        for method in ("apply", "snapshot", "restore"):
            if not callable(getattr(fsm, method, None)):
                raise TypeError(f"fsm must have an {method}() method (subclass canonical_raft.FSM)")
        self._fsm = fsm
        if config is None:
            config = Config()
        if not isinstance(config, Config):
            raise TypeError(f"config must be a canonical_raft.Config, not {type(config).__name__}")
        if bind is not None:
            parse_address(bind, what="bind")
            if config.bind_address not in (None, bind):
                raise InvalidConfigError(f"bind {bind!r} and Config.bind_address "
                                         f"{config.bind_address!r} differ: pass one")
            config = config.replace(bind_address=bind)
        self._config = config.validate()
        #: Where this node listens for raft connections (``bind``, else ``address``).
        self.bind = self._config.bind_address or address
        self._command_limit = config.command_limit()
        self._engine = self._make_engine(engine, store, tls)
        if data_dir is None and self._engine.kind == "uv":
            raise InvalidConfigError("the uv engine keeps its log in data_dir: pass one")
        if data_dir is None:
            self.data_dir: str | None = None  # asyncio engine: the store holds everything
        else:
            if not isinstance(data_dir, (str, os.PathLike)):
                raise TypeError(f"data_dir must be a path, not {type(data_dir).__name__}")
            path = os.fspath(data_dir)
            if not isinstance(path, str) or not path or "\0" in path:
                raise InvalidConfigError(f"data_dir must be a non-empty path without NUL "
                                         f"bytes, not {path!r}")
            self.data_dir = os.path.abspath(path)
        self._bootstrap = self._check_cluster(cluster)
        # Forwarding from followers (forwarding.py): every member's side address.
        self._forward = forwarding.check(forward, self.id) if forward is not None else None
        self._was_member = False  # listed in a configuration it held, since start
        self._fwd_server: forwarding.Server | None = None
        self._fwd_client: forwarding.Client | None = None

        self._core: _core.NodeCore | None = None
        self._lock_fd: int | None = None
        self._applier: threading.Thread | None = None
        self._state_lock = threading.Lock()
        self._started = False
        self._closing = False
        self._closed = False
        self._close_done = threading.Event()
        self._restored = threading.Event()
        self._applier_done = False
        self._broken: BaseException | None = None
        self._applier_ident: int | None = None
        self._ids = itertools.count(1)
        self._blocks = itertools.count(0)  # apply_many's id blocks
        self._pending: dict[int, ApplyFuture] = {}
        self._requests: dict[int, tuple[Future, Callable]] = {}
        self._applied = 0
        self._snapshots = Snapshots(self._config.snapshot_threshold,
                                    self._config.snapshot_compression)
        self._events = EventHub()

    def _check_cluster(self, cluster) -> list[tuple[int, str]]:
        if cluster is None:
            return []
        if not isinstance(cluster, dict) or not cluster:
            raise InvalidConfigError("cluster must be a non-empty dict {id: 'host:port'}")
        seen: dict[str, int] = {}
        for sid, addr in cluster.items():
            check_id(sid, what="cluster id")
            parse_address(addr, what=f"address of server {sid}")
            if addr in seen:
                raise InvalidConfigError(f"servers {seen[addr]} and {sid} share address {addr}")
            seen[addr] = sid
        if cluster.get(self.id) != self.address:
            raise InvalidConfigError(f"cluster must list this node as {self.id}: "
                                     f"{self.address!r} (it has {cluster.get(self.id)!r})")
        return sorted(cluster.items())

    # ------------------------------------------------------------ lifecycle

    @staticmethod
    def _make_engine(engine: str, store: Any, tls: TLS | None) -> Any:
        if engine == "uv":
            if store is not None:
                raise InvalidConfigError("the uv engine keeps its own log in data_dir: store= "
                                         "needs engine='asyncio'")
            if tls is not None:
                raise InvalidConfigError("TLS needs engine='asyncio': libraft's own TCP "
                                         "transport (the uv engine) has no TLS")
            return UvEngine()
        if engine == "asyncio":
            if tls is not None and not isinstance(tls, TLS):
                raise TypeError(f"tls must be a canonical_raft.TLS, not {type(tls).__name__}")
            return AsyncioEngine(store, tls)
        raise InvalidConfigError(f"engine must be 'uv' or 'asyncio', not {engine!r}")

    @property
    def engine(self) -> str:
        return str(self._engine.kind)

    def start(self) -> Node:
        """Open the data dir, start Raft, return self. Raises RaftError subclasses.

        On the asyncio engine this runs the node on the library's own event
        loop thread; inside an event loop use ``await node.astart()`` (or
        ``async with node``) to run it on that loop."""
        self._engine.check_thread("start")
        return self._start(None)

    async def astart(self) -> Node:
        """start() for asyncio code: the asyncio engine runs on the current loop."""
        loop = asyncio.get_running_loop()
        target = loop if self._engine.kind == "asyncio" else None
        return await loop.run_in_executor(None, self._start, target)

    def _start(self, aio_loop: asyncio.AbstractEventLoop | None) -> Node:
        with self._state_lock:
            if self._closing:
                raise ShutdownError("node is closed; create a new Node to restart it")
            if self._started:
                return self
            self._prepare_storage()
            if self._forward is not None and self._fwd_server is None:
                try:
                    self._fwd_server = forwarding.Server(self, self._forward[self.id],
                                                         getattr(self._engine, "tls", None))
                except OSError as exc:
                    self._unlock_data_dir()
                    raise AddressInUseError(f"cannot listen on the forwarding address "
                                            f"{self._forward[self.id]}: {exc}") from None
            if self._unhook_own is None:  # before the applier runs: it may lead at once
                self._unhook_own = self._events.add_callback(self._on_own_event)
            trace_level = self._config.trace_level
            if trace_level is None:
                trace_level = 5 if logging.getLogger("canonical_raft.libraft").isEnabledFor(
                    logging.DEBUG) else 0
            bootstrap = self._bootstrap if self._engine.kind == "uv" else []
            options = to_options(self._config, self.id, self.address, self.data_dir or "",
                                 bootstrap, trace_level)
            try:
                self._core = self._engine.open(self, options, aio_loop)
                initial = self._core.drain(0) or []
                # The applier first restores the snapshot raft_start loaded; a
                # damaged one fails start() (see _applier.run).
                outcome: list = []
                self._applier = threading.Thread(
                    target=_applier.run, args=(self, initial, outcome),
                    name=f"canonical-raft-applier-{self.id}", daemon=True)
                self._applier.start()
                self._applier_ident = self._applier.ident
                self._restored.wait()
                if outcome[0] is not None:
                    raise outcome[0]
            except _core.CoreError as exc:
                self._abort_start()
                raise from_core(exc, starting=True) from None
            except CorruptError as exc:
                self._abort_start()
                if self._engine.kind != "uv":  # the store names what is damaged
                    raise
                raise CorruptError(f"{exc.message} (in {newest_snapshot(self.data_dir)})") \
                    from None
            except RaftError:
                self._abort_start()
                raise
            except Exception as exc:
                self._abort_start()
                raise RaftError(f"FSM.restore failed on the snapshot in "
                                f"{self.data_dir or 'the store'}: {exc!r}") from exc
            except BaseException:
                self._abort_start()
                raise
            self._started = True
            _live_nodes.add(self)
            if self._forward is not None:
                self._fwd_client = forwarding.Client(self, self._forward,
                                                     getattr(self._engine, "tls", None))
        self._report_membership()
        return self

    def _check_identity(self, has_state: bool) -> None:
        """Asyncio engine, once its store is loaded, before any bootstrap (in a
        worker thread: it may write the identity file)."""
        if self.data_dir is not None:
            volatile = bool(getattr(self._engine.store, "volatile", False))
            self._identity = identity.prepare(self.data_dir, self.id, self._bootstrap,
                                              has_state=has_state, volatile=volatile)

    def _prepare_storage(self) -> None:
        """Lock the data dir, check it, and settle this node's identity."""
        if self.data_dir is None:  # asyncio engine without a data dir
            cluster_id = identity.cluster_id_for(self._bootstrap) if self._bootstrap else None
            self._identity = self._identity or identity.Identity(self.id, cluster_id)
            return
        self._open_data_dir()
        if self._engine.kind != "uv":
            return  # the identity is settled once the store is loaded (check_identity)
        try:
            check_bindable(self._config.bind_address or self.address)
            check_metadata(self.data_dir)
            self._identity = identity.prepare(self.data_dir, self.id, self._bootstrap)
        except BaseException:
            self._unlock_data_dir()
            raise

    def _report_membership(self) -> None:
        """Say why a node that is no longer a member sits still (it never campaigns)."""
        try:
            servers = self.configuration
        except RaftError:
            return
        removed_at = self._identity.removed_at if self._identity else None
        if servers and self.id not in {s.id for s in servers}:
            log.warning("node %d is not in the configuration it holds (%s): it was removed from "
                        "the cluster and will not campaign; to rejoin, start it on an empty "
                        "data dir and add_voter() it again", self.id,
                        ", ".join(str(s.id) for s in servers))
        elif removed_at is not None:
            log.warning("node %d applied a notice of its removal from the cluster (index %d) "
                        "and has heard from no leader since: it is reported as REMOVED; to "
                        "rejoin, start it on an empty data dir and add_voter() it again",
                        self.id, removed_at)

    def _abort_start(self) -> None:
        if self._fwd_server is not None:
            self._fwd_server.close()
            self._fwd_server = None
        self._engine.close(self)
        self._core = None
        self._unlock_data_dir()

    def _open_data_dir(self) -> None:
        if os.path.exists(self.data_dir) and not os.path.isdir(self.data_dir):
            raise InvalidConfigError(f"data_dir {self.data_dir!r} exists and is not a directory")
        try:
            os.makedirs(self.data_dir, exist_ok=True)
            fd = os.open(os.path.join(self.data_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise InvalidConfigError(f"cannot use data_dir {self.data_dir!r}: {exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirLockedError(f"data_dir {self.data_dir!r} is in use by another "
                                     "node (lock file held)") from None
        self._lock_fd = fd

    def _unlock_data_dir(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # releases the flock

    def close(self, *, transfer_leadership: bool = False, timeout: float = 5.0) -> None:
        """Stop the node. Idempotent; a concurrent call returns once the node is
        closed. Futures still pending fail with ShutdownError (``indeterminate``
        if the command was already handed to Raft). With ``transfer_leadership``,
        a leader first hands over to another voter, waiting up to ``timeout``."""
        if self._started and not self._closing:
            self._engine.check_thread("close")
        with self._state_lock:
            first = not self._closing
            self._closing = True
            started = self._started
        if not first:
            # The applier thread must not wait: the first closer is joining it.
            if not self._on_applier_thread():
                self._close_done.wait()
            return
        try:
            if started and transfer_leadership and self.is_leader:
                try:
                    self.transfer().result(timeout)
                except RaftError as exc:
                    log.warning("node %d: leadership transfer before close failed: %s",
                                self.id, exc)
            self._closed = True
            if self._fwd_server is not None:
                self._fwd_server.close()
            if self._fwd_client is not None:
                self._fwd_client.close()
            if started:
                self._engine.close(self)  # blocks until libraft and its io are closed
                if not self._on_applier_thread():
                    self._applier.join()
                self._unlock_data_dir()
                _live_nodes.discard(self)
        finally:
            self._closed = True
            self._close_done.set()

    def _on_applier_thread(self) -> bool:
        return self._applier is not None and self._applier is threading.current_thread()

    async def aclose(self, *, transfer_leadership: bool = False, timeout: float = 5.0) -> None:
        """close() for asyncio code (it waits in a worker thread)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, functools.partial(
            self.close, transfer_leadership=transfer_leadership, timeout=timeout))

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    async def __aenter__(self) -> Node:
        return await self.astart()

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<Node {self.id} {self.address} {self.state.name}>"

    def _check_open(self) -> _core.NodeCore:
        core = self._core
        if self._closed or core is None or self._broken is not None:
            if self._broken is not None:
                raise ShutdownError(f"node closed itself: its FSM or its store failed "
                                    f"({self._broken!r})")
            raise ShutdownError("node is closed" if self._closed else "node is not started")
        return core

    def _settle_if_closed(self, table: dict, rid: int) -> None:
        # The future was registered before submitting; the applier sets
        # _applier_done before failing what is left, so one of us fails it.
        if self._applier_done:
            entry = table.pop(rid, None)
            if entry is not None:
                fut = entry[0] if isinstance(entry, tuple) else entry
                fut.set_exception(ShutdownError("node closed", indeterminate=True))

    # ------------------------------------------------------------ commands

    def apply(self, command: bytes, *, timeout: float | None = None) -> ApplyFuture:
        """Replicate one command; the future resolves to FSM.apply's return value
        once the command is committed and applied on this node.

        Backpressure: at most ``Config.max_pending_commands`` commands (and
        ``max_pending_bytes`` bytes) submitted on this node may be unresolved.
        Past that, apply() raises BusyError at once (safe inside an event loop),
        or with ``timeout`` waits up to that many seconds for room first. A
        BusyError command was never submitted: retrying it cannot apply it twice.

        With ``Node(forward=...)``, on a follower the command is forwarded to the
        leader and the future resolves to the leader's result (forwarding.py)."""
        if self._fwd_client is not None and not self.is_leader:
            return self._forwarded(forwarding.APPLY, command)
        return self._apply_here(command, timeout=timeout)

    def _forwarded(self, kind: int, command: bytes) -> ApplyFuture:
        if type(command) is not bytes:
            command = _as_command(command)
        if len(command) > self._command_limit:
            raise TooBigError(f"command of {len(command)} bytes exceeds the limit of "
                              f"{self._command_limit} (Config.max_command_size)")
        self._check_open()
        fut = ApplyFuture(self._applier_ident, len(command))
        assert self._fwd_client is not None
        self._fwd_client.submit(kind, command, fut)
        return fut

    def _apply_here(self, command: bytes, *, timeout: float | None = None) -> ApplyFuture:
        if type(command) is not bytes:
            command = _as_command(command)
        n = len(command)
        if n > self._command_limit:
            raise TooBigError(f"command of {n} bytes exceeds the limit of "
                              f"{self._command_limit} (Config.max_command_size)")
        if command.startswith(identity.RECORD_PREFIX):
            raise InvalidConfigError("commands starting with canonical_raft.identity."
                                     "RECORD_PREFIX are reserved")
        core = self._core
        if core is None or self._closed or self._broken is not None:
            core = self._check_open()
        rid = next(self._ids)
        fut = ApplyFuture(self._applier_ident, n)
        pending = self._pending
        pending[rid] = fut
        if not core.submit(rid, command):
            del pending[rid]
            self._wait_for_room(core, lambda c: c.submit(rid, command),
                                lambda: pending.__setitem__(rid, fut),
                                lambda: pending.pop(rid, None), timeout, 1)
        if self._applier_done:
            self._settle_if_closed(pending, rid)
        return fut

    def apply_many(self, commands: Iterable[bytes], *,
                   timeout: float | None = None) -> list[ApplyFuture]:
        """Replicate many commands with one call; one future per command, in order.

        They are submitted together (one call into the core, one lock, one
        wake-up of the loop thread) and packed into as few log entries as
        ``Config.max_entry_bytes`` allows, consecutive in the log, in the order
        given: no other command lands between two of them.

        All or nothing at submission: every command is checked first (type,
        ``max_command_size``, reserved prefix) and if one fails nothing is
        submitted. Backpressure counts the whole call: if it does not fit under
        ``max_pending_commands``/``max_pending_bytes`` (while anything is
        pending), BusyError (nothing submitted) or, with ``timeout``, a wait for
        room for all of them. A call larger than the bounds themselves raises
        TooBigError: split it.

        No atomicity after submission: each command has its own outcome. A
        failure (leadership lost, node closed) may fail some futures while
        earlier commands of the same call commit; an exception of FSM.apply
        fails that command's future only."""
        cmds = list(commands)
        n = len(cmds)
        if not n:
            return []
        for i, c in enumerate(cmds):
            if type(c) is not bytes:
                cmds[i] = _as_command(c)
        sizes = list(map(len, cmds))
        total = sum(sizes)
        limit = self._command_limit
        if max(sizes) > limit:
            i = next(i for i, s in enumerate(sizes) if s > limit)
            raise TooBigError(f"command {i} of {sizes[i]} bytes exceeds the limit of "
                              f"{limit} (Config.max_command_size); nothing was submitted")
        if any(map(_is_reserved, cmds)):
            raise InvalidConfigError("commands starting with canonical_raft.identity."
                                     "RECORD_PREFIX are reserved; nothing was submitted")
        config = self._config
        if n > min(config.max_pending_commands, _BLOCK) or total > config.max_pending_bytes:
            raise TooBigError(
                f"apply_many of {n} commands ({total} bytes) exceeds what may be pending at "
                f"once (Config.max_pending_commands={config.max_pending_commands}, "
                f"max_pending_bytes={config.max_pending_bytes}); split it")
        core = self._check_open()
        # Request ids of a block: bit 63 set (apply() ids never reach it),
        # consecutive, so one id names them all on the way to the core.
        first = _BLOCK_BASE + next(self._blocks) * _BLOCK
        ident = self._applier_ident
        futs = [ApplyFuture(ident, size) for size in sizes]
        ids = range(first, first + n)
        pending = self._pending
        pending.update(zip(ids, futs))

        def unregister() -> None:
            for rid in ids:
                pending.pop(rid, None)
        if not core.submit_many(first, cmds):
            unregister()
            self._wait_for_room(core, lambda c: c.submit_many(first, cmds),
                                lambda: pending.update(zip(ids, futs)), unregister, timeout, n)
        if self._applier_done:
            for rid in ids:
                self._settle_if_closed(pending, rid)
        return futs

    def _wait_for_room(self, core: _core.NodeCore, submit: Callable[[_core.NodeCore], bool],
                       register: Callable[[], None], unregister: Callable[[], None],
                       timeout: float | None, n: int) -> None:
        deadline = time.monotonic() + (timeout or 0.0)
        if timeout and self._on_applier_thread():
            raise RaftError("apply(timeout=...) on the node's applier thread (in an FSM "
                            "method or a callback) would wait on itself")
        while True:
            if time.monotonic() >= deadline:
                what = "the command was" if n == 1 else f"none of the {n} commands was"
                raise BusyError(
                    f"node {self.id} has {core.stats()['pending_commands']} commands pending "
                    f"(Config.max_pending_commands={self._config.max_pending_commands}, "
                    f"max_pending_bytes={self._config.max_pending_bytes}); {what} "
                    "submitted: retry later or pass apply(..., timeout=seconds)")
            time.sleep(0.001)
            core = self._check_open()
            register()
            if submit(core):
                return
            unregister()

    def _request(self, submit: Callable[[_core.NodeCore, int], None],
                 on_success: Callable[[Future, int], None] | None = None) -> Future:
        core = self._check_open()
        rid = next(self._ids)
        fut = Future(self._applier_ident)
        self._requests[rid] = (fut, on_success or (lambda f, _leader: f.set_result(None)))
        submit(core, rid)
        self._settle_if_closed(self._requests, rid)
        return fut

    def barrier(self) -> Future:
        """Resolves once every entry committed before it is applied to this FSM.
        On the leader, a read after ``barrier().result()`` is linearizable."""
        if self._fwd_client is not None and not self.is_leader:
            return self._forwarded(forwarding.BARRIER, b"")
        return self._barrier_here()

    def _barrier_here(self) -> Future:
        return self._request(lambda core, rid: core.barrier(rid))

    def add(self, id: int, address: str) -> Future:
        """Add a server as a SPARE (no log, no vote). Leader only."""
        check_id(id)
        parse_address(address)
        return self._request(lambda core, rid: core.add(rid, id, address))

    def assign(self, id: int, role: Role) -> Future:
        """Change a server's role; promoting to VOTER first catches it up. Leader only."""
        check_id(id)
        role = Role(role)

        def assigned(fut: Future, _leader: int) -> None:
            if role != Role.SPARE:
                self._announce()  # a promoted joiner learns the cluster id
            fut.set_result(None)
        return self._request(lambda core, rid: core.assign(rid, id, int(role)), assigned)

    def add_voter(self, id: int, address: str) -> Future:
        """Add a server and promote it to voter once it has caught up. Leader only.

        Resumable: if the server is already in the configuration at the same
        address (a previous add_voter failed while catching it up, e.g. with
        NoConnectionError because it was unreachable), the call goes straight to
        the promotion; if it is a voter already, it resolves at once. A failed
        call leaves the server as a SPARE (no vote, no log, no effect on the
        quorum) and says so: call add_voter again, or remove(id). The same id at
        another address fails with BadIdError.
        """
        check_id(id)
        parse_address(address)
        outer = Future(self._applier_ident)
        known = {s.id: s for s in self.configuration}.get(id)

        def finish(fut: Future) -> None:
            exc = fut.exception()
            if exc is None:
                outer.set_result(None)
            elif isinstance(exc, RaftError) and not isinstance(exc, NotLeaderError):
                outer.set_exception(_with_note(
                    exc, f"server {id} stays in the configuration as a SPARE: call "
                    f"add_voter({id}, {address!r}) again to resume, or remove({id})"))
            else:
                outer.set_exception(exc)

        def promote() -> None:
            try:
                self.assign(id, Role.VOTER).add_done_callback(finish)
            except RaftError as exc:
                outer.set_exception(exc)

        def added(fut: Future) -> None:
            if fut.exception() is not None:
                outer.set_exception(fut.exception())
            else:
                promote()

        if known is None:
            self.add(id, address).add_done_callback(added)
        elif known.address != address:
            outer.set_exception(BadIdError(
                f"server {id} is already in the configuration at {known.address}, not "
                f"{address}: remove({id}) first"))
        elif known.role == Role.VOTER:
            self.barrier().add_done_callback(finish)  # only confirms this node leads
        else:
            log.info("node %d: server %d is already a %s at %s: resuming add_voter with its "
                     "promotion", self.id, id, known.role.name, address)
            promote()
        return outer

    def remove(self, id: int) -> Future:
        """Remove a server from the configuration. Leader only.

        libraft never sends a removed server the entry that removes it, so a
        server other than this one is first sent a removal notice through the log
        (then a barrier, so that it learns the notice committed); once it hears
        from no leader, it reports ``State.REMOVED``. A server that is down or cut
        off during the removal is not told (docs/operations.md)."""
        check_id(id)
        if id == self.id or id not in {s.id for s in self.configuration}:
            return self._request(lambda core, rid: core.remove(rid, id))
        outer = Future(self._applier_ident)

        def then(fut: Future, next_step: Callable[[], Future], after: Callable) -> None:
            # Chain: a failed step fails the whole remove().
            if fut.exception() is not None:
                outer.set_exception(fut.exception())
                return
            try:
                next_step().add_done_callback(after)
            except RaftError as exc:
                outer.set_exception(exc)

        def take_out() -> Future:
            return self._request(lambda core, rid: core.remove(rid, id))

        def removed(fut: Future) -> None:
            if fut.exception() is not None:
                self._announce()  # a later cluster-id record cancels the notice
                outer.set_exception(fut.exception())
            else:
                outer.set_result(None)

        def noticed(fut: Future) -> None:  # notice applied: barrier, then remove
            then(fut, self.barrier, lambda b: then(b, take_out, removed))

        self._submit_reserved(identity.removing(id)).add_done_callback(noticed)
        return outer

    def _submit_reserved(self, record: bytes) -> ApplyFuture:
        """Append one of identity.py's records; it resolves to None once applied here."""
        core = self._check_open()
        rid = next(self._ids)
        fut = ApplyFuture(self._applier_ident)
        fut.nbytes = len(record)
        self._pending[rid] = fut
        if not core.submit(rid, record):
            del self._pending[rid]
            raise BusyError(f"node {self.id} has too many commands pending to append a "
                            "membership record; retry later")
        self._settle_if_closed(self._pending, rid)
        fut.add_done_callback(self._count_record)
        return fut

    def _count_record(self, fut: Future) -> None:
        if fut.exception() is None:
            self._records_applied += 1

    def _announce(self) -> None:
        """Best effort: append this node's cluster id for members that lack it."""
        ident = self._identity
        if ident is None or ident.cluster_id is None:
            return
        try:
            self._submit_reserved(identity.announce(ident.cluster_id))
        except RaftError:  # closing: the next leader announces
            pass

    def _on_own_event(self, event: LeadershipEvent) -> None:
        # Applier thread. A new leader announces the cluster id once per term.
        if event.state == State.LEADER and event.term != self._announced_term:
            self._announced_term = event.term
            self._announce()

    _TRANSFER_ATTEMPTS = 3

    def transfer(self, id: int | None = None) -> Future:
        """Hand leadership to voter ``id`` (None: the most up-to-date one).
        Resolves to the new leader's id (possibly still this node if it failed).

        libraft's transfer fails silently when the target ignores its
        TimeoutNow (it does while it is still persisting an entry it has
        acknowledged in a heartbeat): while this node is still the leader
        afterwards, the transfer is tried again, up to three times in all."""
        target = 0 if id is None else check_id(id)
        attempts = [1]

        def finished(fut: Future, _leader: int) -> None:
            leader = self._status()["leader_id"] or None
            if leader == self.id and self.is_leader and attempts[0] < self._TRANSFER_ATTEMPTS:
                attempts[0] += 1
                try:
                    core = self._check_open()
                    rid = next(self._ids)
                    self._requests[rid] = (fut, finished)
                    core.transfer(rid, target)
                    self._settle_if_closed(self._requests, rid)
                    return
                except RaftError:
                    pass
            fut.set_result(leader)
        return self._request(lambda core, rid: core.transfer(rid, target), finished)

    # ------------------------------------------------------------ state

    def _status(self) -> dict:
        core = self._core
        if core is None:
            return {"state": int(State.UNAVAILABLE), "term": 0, "leader_id": 0,
                    "leader_address": "", "last_index": 0, "commit_index": 0,
                    "self_role": -2}
        return core.status()

    @property
    def state(self) -> State:
        """The Raft state; CLOSED once closed; REMOVED once this node knows it
        is no longer a member (see State)."""
        if self._closed:
            return State.CLOSED
        s = self._status()
        return self._state_of(s["state"], s["leader_id"], s["self_role"])

    def _state_of(self, state: int, leader_id: int, self_role: int) -> State:
        raft_state = State(state)
        if self_role >= 0:
            self._was_member = True
        if raft_state in (State.FOLLOWER, State.CANDIDATE):
            ident = self._identity
            # The configuration it holds does not list it. A joiner catching up
            # holds one that predates its addition (e.g. from the leader's
            # snapshot): not removed, as it never was a member (no cluster id
            # learnt, never listed since it started).
            if self_role == -1 and (self._was_member or ident is None or
                                    ident.cluster_id is not None):
                return State.REMOVED
            if ident is not None and ident.removed_at is not None and not leader_id:
                return State.REMOVED
        return raft_state

    def _leadership_event(self, state: int, term: int, leader: Leader | None,
                          self_role: int) -> LeadershipEvent:
        return LeadershipEvent(self.id, self._state_of(state, leader.id if leader else 0,
                                                       self_role), term, leader,
                               Role(self_role) if self_role >= 0 else None)

    @property
    def is_leader(self) -> bool:
        return self.state == State.LEADER

    @property
    def forwards(self) -> bool:
        """Whether apply() and barrier() on this node, as a follower, travel to
        the leader (``Node(forward=...)``)."""
        return self._forward is not None

    @property
    def leader(self) -> Leader | None:
        """The leader this node knows of, or None."""
        s = self._status()
        return Leader(s["leader_id"], s["leader_address"]) if s["leader_id"] else None

    @property
    def term(self) -> int:
        return self._status()["term"]

    @property
    def last_index(self) -> int:
        return self._status()["last_index"]

    @property
    def commit_index(self) -> int:
        return self._status()["commit_index"]

    @property
    def last_applied(self) -> int:
        """The last log index applied to this node's FSM."""
        return self._applied

    @property
    def fsm(self) -> FSM:
        return self._fsm

    @property
    def configuration(self) -> list[Server]:
        """The servers of the cluster as this node currently knows them."""
        stats = self._check_open_stats()
        return [Server(sid, addr, Role(role)) for sid, addr, role in stats["configuration"]]

    def _check_open_stats(self) -> dict:
        core = self._check_open()
        try:
            return core.stats()
        except _core.CoreError as exc:
            raise from_core(exc) from None

    def stats(self) -> dict:
        """A snapshot of this node's counters and Raft state, for monitoring."""
        stats = self._check_open_stats()
        stats["commands_proposed"] -= self._records_applied  # count the user's commands only
        snapshots = self._snapshots.stats()
        stats.update(id=self.id, address=self.address, state=State(stats["state"]).name,
                     last_applied=self._applied, pending_applies=len(self._pending),
                     snapshots_taken=snapshots["taken"],
                     snapshots_restored=snapshots["restored"], snapshot=snapshots,
                     forwarded_sent=self._fwd_client.sent if self._fwd_client else 0,
                     forwarded_served=self._fwd_server.served if self._fwd_server else 0)
        return stats

    def wait_leader(self, timeout: float | None = None) -> Any:
        """Wait until this node knows a leader; return it. Raises TimeoutError.

        Called on a thread that runs an event loop, it returns a coroutine
        instead, so asyncio code writes ``leader = await node.wait_leader()``
        without blocking its loop."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._wait_leader(timeout)
        return self._await_leader(timeout)

    async def _await_leader(self, timeout: float | None) -> Leader:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (leader := self._leader_by(deadline, timeout)) is None:
            await asyncio.sleep(0.005)
        return leader

    def _wait_leader(self, timeout: float | None) -> Leader:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (leader := self._leader_by(deadline, timeout)) is None:
            time.sleep(0.005)
        return leader

    def _leader_by(self, deadline: float | None, timeout: float | None) -> Leader | None:
        """The known leader, None to keep waiting; TimeoutError past deadline."""
        self._check_open()
        leader = self.leader
        if leader is None and deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"node {self.id} saw no leader within {timeout}s")
        return leader

    def wait_applied(self, index: int, timeout: float | None = None) -> None:
        """Wait until this node's FSM has applied ``index``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._applied < index and self._on_applier_thread():
            # The applier would wait on itself (e.g. in a future's done callback).
            raise RaftError(f"wait_applied({index}) on node {self.id}'s applier thread (in an "
                            "FSM method or a callback) would wait on itself; index "
                            f"{self._applied} is applied so far")
        while self._applied < index:
            self._check_open()
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"node {self.id} applied {self._applied} < {index} "
                                   f"within {timeout}s")
            time.sleep(0.002)

    # ------------------------------------------------------------ events

    def on_leadership_change(self, callback: Callable[[LeadershipEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` on the applier thread at every change of state,
        term or leader. Returns a function that unregisters it."""
        return self._events.add_callback(callback)

    def events(self) -> AsyncIterator[LeadershipEvent]:
        """``async for event in node.events():`` the current state first, then
        every change, until the node closes."""
        return self._events.subscribe(lambda: self._applier_done)


#: apply_many's request ids: block k holds _BLOCK_BASE + k * _BLOCK + i (i < _BLOCK).
_BLOCK = 1 << 24
_BLOCK_BASE = 1 << 63


def _as_command(command: object) -> bytes:
    if isinstance(command, (bytearray, memoryview)):
        return bytes(command)
    raise TypeError(f"command must be bytes, not {type(command).__name__}")


_is_reserved = operator.methodcaller("startswith", identity.RECORD_PREFIX)


def _with_note(exc: RaftError, note: str) -> RaftError:
    """The same error (class, code, fields) with ``note`` added to its message."""
    new = copy.copy(exc)
    new.message = f"{exc.message}; {note}"
    new.args = (new.message,)
    return new


@atexit.register
def _close_live_nodes() -> None:
    # Close nodes before the interpreter finalises: afterwards the applier
    # threads could never take the GIL again.
    for node in list(_live_nodes):
        try:
            node.close()
        except Exception:
            log.exception("closing node %d at exit", node.id)
