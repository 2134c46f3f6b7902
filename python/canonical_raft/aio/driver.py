"""The asyncio engine's driver: runs one node's raft_io on an event loop.

The core's Bridge (cpp/io_bridge.cpp) turns every raft_io call into an op; each
entry into raft (a tick, a frame from a peer, a store completion, closures
posted by other threads) returns the ops raft made meanwhile, and this driver
carries them out:

- store writes (term, vote, append, truncate, snapshots) go through one FIFO
  task, in Raft's order, each awaited before the next; appends and snapshot
  puts report back (``bridge_append_done`` ...) once durable;
- frames go to the transport, but never ahead of a term or vote that is not
  durable yet (Raft's safety needs both on disk before any reply leaves);
- ticks are a ``call_later`` chain.

A store failure is fatal to the node (libraft has no way to retry a write): the
driver logs it and closes the node, as a failed FSM restore does.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Callable, Deque, List, Optional, Tuple, cast

from .. import _core
from ..store.base import Entry, Persisted, Snapshot, Store
from .transport import TcpTransport

log = logging.getLogger("canonical_raft")

_OP = _core.io_ops
START, SET_TERM, SET_VOTE, APPEND = _OP["START"], _OP["SET_TERM"], _OP["SET_VOTE"], _OP["APPEND"]
TRUNCATE, SEND, SNAPSHOT_PUT = _OP["TRUNCATE"], _OP["SEND"], _OP["SNAPSHOT_PUT"]
SNAPSHOT_GET, CLOSE = _OP["SNAPSHOT_GET"], _OP["CLOSE"]
RAFT_CHANGE = 3


class Driver:
    def __init__(self, core: _core.NodeCore, store: Store, node_id: int, address: str, *,
                 bind_address: Optional[str], tls: Any, retry_delay: float,
                 on_fatal: Callable[[BaseException], None]) -> None:
        self.core = core
        self.store = store
        self.node_id = node_id
        self.loop = asyncio.get_running_loop()
        self.on_fatal = on_fatal
        self.transport = TcpTransport(node_id, address, self._on_frame,
                                      bind_address=bind_address, tls=tls,
                                      retry_delay=retry_delay)
        self._writes: Deque[Tuple[Any, ...]] = deque()
        self._writer: Optional[asyncio.Task[None]] = None
        self._wake = asyncio.Event()
        self._meta_unsynced = 0          # term/vote writes queued and not yet durable
        self._held: List[Tuple[int, str, bytes]] = []  # frames waiting for them
        self._tick: Optional[asyncio.TimerHandle] = None
        self._tick_ms = 100
        self._next_index = 1
        self._stopped = False
        self.closed = asyncio.Event()

    # ------------------------------------------------------------ lifecycle

    async def start(self, bootstrap: List[Tuple[int, str]],
                    check_identity: Callable[[bool], None]) -> None:
        state = await self.store.load()
        await self.loop.run_in_executor(None, check_identity, not state.empty)
        # A crash between the two bootstrap writes leaves term 1 and no log:
        # bootstrap again (nothing can have voted or replicated yet).
        never_ran = (not state.entries and state.snapshot is None and state.term <= 1
                     and state.vote == 0)
        if never_ran and bootstrap:
            # What raft_bootstrap writes: term 1 and entry 1, the configuration.
            conf = _core.encode_configuration([(sid, addr, _core.roles["VOTER"])
                                               for sid, addr in bootstrap])
            await self.store.set_term(1)
            await self.store.append(1, [(1, RAFT_CHANGE, conf)])
            state = await self.store.load()
        await self.transport.start()
        self._load(state)
        self._writer = asyncio.ensure_future(self._write_loop())
        self.loop.add_reader(self.core.bridge_fd, self._run_posted)
        self._handle(self.core.bridge_start())

    def _load(self, state: Persisted) -> None:
        snap = state.snapshot
        snapshot = None if snap is None else (snap.index, snap.term, snap.conf_index, snap.conf,
                                             snap.data)
        start_index = state.start_index
        if snap is not None and not state.entries:
            start_index = snap.index + 1
        self._next_index = start_index + len(state.entries)
        self.core.bridge_load(state.term, state.vote, snapshot, start_index,
                              cast(List[Entry], [tuple(e) for e in state.entries]))

    async def stopped(self) -> None:
        """After the core closed: stop ticks, connections and the store."""
        if self._stopped:
            return
        self._stopped = True
        if self._tick is not None:
            self._tick.cancel()
        try:
            self.loop.remove_reader(self.core.bridge_fd)
        except (ValueError, OSError):
            pass
        await self.transport.close()
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        await self.store.close()
        self.closed.set()

    # ------------------------------------------------------------ entries into raft

    def _handle(self, ops: List[Tuple[Any, ...]]) -> None:
        for op in ops:
            kind = op[0]
            if kind == SEND:
                if self._meta_unsynced:
                    self._held.append(op[1:])
                else:
                    self.transport.send(op[1], op[2], op[3])
            elif kind == APPEND:
                # raft_io's append carries no index: entries go at the log's end.
                self._queue((APPEND, op[1], self._next_index, op[2]))
                self._next_index += len(op[2])
            elif kind == TRUNCATE:
                if op[1] < self._next_index:  # a no-op at or past the end
                    self._next_index = op[1]
                    self._queue(op)
            elif kind == SNAPSHOT_PUT:
                if op[2] == 0:  # installed: the log goes on after it
                    self._next_index = op[3] + 1
                self._queue(op)
            elif kind == SNAPSHOT_GET:
                self._queue(op)
            elif kind == SET_TERM or kind == SET_VOTE:
                self._meta_unsynced += 1
                self._queue(op)
            elif kind == START:
                self._tick_ms = op[1]
                self._tick = self.loop.call_later(self._tick_ms / 1000, self._on_tick)
            elif kind == CLOSE:
                if self._tick is not None:
                    self._tick.cancel()
                    self._tick = None
        if self.core.closed and not self._stopped:
            asyncio.ensure_future(self.stopped())

    def _enter(self, call: Callable[[], List[Tuple[Any, ...]]]) -> None:
        if self._stopped:
            return
        self._handle(call())

    def _run_posted(self) -> None:
        self._enter(self.core.bridge_run_posted)

    def _on_tick(self) -> None:
        self._tick = self.loop.call_later(self._tick_ms / 1000, self._on_tick)
        self._enter(self.core.bridge_tick)

    def _on_frame(self, server_id: int, address: str, type_: int, version: int, header: bytes,
                  payload: bytes) -> int:
        if self._stopped:
            return 0
        rc, ops = self.core.bridge_recv(server_id, address, type_, version, header, payload)
        self._handle(ops)
        return rc

    # ------------------------------------------------------------ the store, in order

    def _queue(self, op: Tuple[Any, ...]) -> None:
        self._writes.append(op)
        self._wake.set()

    async def _write_loop(self) -> None:
        try:
            while True:
                while not self._writes:
                    self._wake.clear()
                    await self._wake.wait()
                op = self._writes.popleft()
                await self._write(op)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the store failed: Raft cannot go on here
            log.critical("node %d: the store failed (%r); closing the node", self.node_id,
                         exc, exc_info=exc)
            self.on_fatal(exc)

    async def _write(self, op: Tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == APPEND:
            _, rid, first_index, entries = op
            await self.store.append(first_index, entries)
            self._enter(lambda: self.core.bridge_append_done(rid, 0))
        elif kind == TRUNCATE:
            await self.store.truncate(op[1])
        elif kind == SET_TERM or kind == SET_VOTE:
            if kind == SET_TERM:
                await self.store.set_term(op[1])
            else:
                await self.store.set_vote(op[1])
            self._meta_unsynced -= 1
            if not self._meta_unsynced:
                held, self._held = self._held, []
                for server_id, address, frame in held:
                    self.transport.send(server_id, address, frame)
        elif kind == SNAPSHOT_PUT:
            _, rid, trailing, index, term, conf_index, conf, data = op
            await self.store.put_snapshot(Snapshot(index, term, conf_index, conf, data), trailing)
            self._enter(lambda: self.core.bridge_snapshot_put_done(rid, 0))
        elif kind == SNAPSHOT_GET:
            rid = op[1]
            snap = await self.store.get_snapshot()
            if snap is None:  # cannot happen: raft asks only after a snapshot
                snap = Snapshot(0, 0, 0, b"", b"")
            self._enter(lambda: self.core.bridge_snapshot_get_done(
                rid, snap.index, snap.term, snap.conf_index, snap.conf, snap.data))
