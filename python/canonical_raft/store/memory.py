"""MemoryStore: the Store protocol in memory, for tests.

It models a disk: every write first lands in a volatile cache and is "synced"
(made durable) before its coroutine returns, after ``sync_delay`` seconds. A
``power_loss()`` drops everything not yet synced, so a test can restart a node
(on the same MemoryStore) with exactly what a crash would have left. Faults can
be injected: ``fail_next("append", OSError(...))`` makes the next call of that
method raise, as a failing disk would.

The same MemoryStore may be handed to a new Node after the old one closed: that
is a restart. It is not thread-safe: one event loop uses it at a time.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Callable, Dict, List, Optional

from .base import Entry, Persisted, Snapshot


class MemoryStore:
    #: Its contents die with the process: a data dir that ran on one refuses a
    #: new, empty one (identity.prepare), since the node's vote would be lost.
    volatile = True

    def __init__(self, *, sync_delay: float = 0.0) -> None:
        self.sync_delay = sync_delay
        self._durable = Persisted()
        self._faults: Dict[str, List[BaseException]] = {}
        self._inflight = 0  # writes started and not yet synced
        self._epoch = 0     # bumped by power_loss(): writes of an older epoch are lost
        self.writes = 0     # synced writes, for tests

    # ------------------------------------------------------------ test hooks

    def fail_next(self, method: str, exc: BaseException) -> None:
        """The next call of ``method`` (e.g. "append") raises ``exc``."""
        self._faults.setdefault(method, []).append(exc)

    def power_loss(self) -> int:
        """Drop every write not yet synced; return how many were lost."""
        lost = self._inflight
        self._epoch += 1
        self._inflight = 0
        return lost

    @property
    def persisted(self) -> Persisted:
        """A copy of what survives a crash now."""
        return copy.deepcopy(self._durable)

    # ------------------------------------------------------------ protocol

    async def _write(self, method: str, apply: Callable[[Persisted], None]) -> None:
        faults = self._faults.get(method)
        if faults:
            raise faults.pop(0)
        epoch = self._epoch
        self._inflight += 1
        try:
            if self.sync_delay:
                await asyncio.sleep(self.sync_delay)
        finally:
            if epoch == self._epoch:
                self._inflight -= 1
        if epoch != self._epoch:  # the power went out before this write synced
            raise OSError("power lost before the write was synced")
        apply(self._durable)
        self.writes += 1

    async def load(self) -> Persisted:
        faults = self._faults.get("load")
        if faults:
            raise faults.pop(0)
        return copy.deepcopy(self._durable)

    async def set_term(self, term: int) -> None:
        def apply(p: Persisted) -> None:
            p.term, p.vote = term, 0
        await self._write("set_term", apply)

    async def set_vote(self, server_id: int) -> None:
        def apply(p: Persisted) -> None:
            p.vote = server_id
        await self._write("set_vote", apply)

    async def append(self, first_index: int, entries: List[Entry]) -> None:
        batch = list(entries)

        def apply(p: Persisted) -> None:
            expected = p.start_index + len(p.entries)
            if first_index != expected:
                raise ValueError(f"append at {first_index}, the log ends before {expected}")
            p.entries.extend(batch)
        await self._write("append", apply)

    async def truncate(self, index: int) -> None:
        def apply(p: Persisted) -> None:
            keep = max(0, index - p.start_index)
            del p.entries[keep:]
        await self._write("truncate", apply)

    async def put_snapshot(self, snapshot: Snapshot, trailing: int) -> None:
        def apply(p: Persisted) -> None:
            p.snapshot = snapshot
            if trailing == 0:  # installed: the log starts after it
                p.entries = []
                p.start_index = snapshot.index + 1
                return
            cut = snapshot.index - trailing  # delete entries <= cut
            drop = min(max(0, cut - p.start_index + 1), len(p.entries))
            if drop:
                del p.entries[:drop]
                p.start_index += drop
        await self._write("put_snapshot", apply)

    async def get_snapshot(self) -> Optional[Snapshot]:
        return self._durable.snapshot

    async def close(self) -> None:
        pass
