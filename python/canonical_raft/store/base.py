"""The Store protocol: where the asyncio engine keeps Raft's log and state.

Like HashiCorp raft's LogStore + StableStore + SnapshotStore in one object. The
engine calls one method at a time, in Raft's order, and awaits each before the
next (so an implementation needs no locking of its own), on the node's event
loop. Every method's coroutine returns only once its effect is durable (it
survives a crash or a power loss): Raft relies on it (a vote must never be
forgotten; an acknowledged entry must never be lost). Blocking disk work must
not run on the event loop: use ``loop.run_in_executor`` or an async driver.

Entries are ``(term, type, data)`` tuples: ``type`` is libraft's entry type
(1 command, 2 barrier, 3 configuration change), ``data`` the payload bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Protocol, Tuple, runtime_checkable

Entry = Tuple[int, int, bytes]


@dataclass(frozen=True)
class Snapshot:
    """A snapshot as Raft sees it: the last index and term it covers, the
    configuration (libraft-encoded) in force at that index and its index, and the
    data (the FSM's state, framed by canonical-raft)."""

    index: int
    term: int
    conf_index: int
    conf: bytes
    data: bytes


@dataclass
class Persisted:
    """What a store holds, for ``load()``: term, vote, the latest snapshot, and
    the entries from ``start_index`` on (contiguous)."""

    term: int = 0
    vote: int = 0
    snapshot: Optional[Snapshot] = None
    start_index: int = 1
    entries: List[Entry] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.term == 0 and self.snapshot is None and not self.entries


@runtime_checkable
class Store(Protocol):
    """A store may set ``volatile = True`` when its contents do not survive
    the process (MemoryStore): a data dir whose node ran on it then refuses a
    new, empty one."""

    async def load(self) -> Persisted:
        """Everything persisted. Called once, before the node starts."""

    async def set_term(self, term: int) -> None:
        """Durably store the current term and clear the vote."""

    async def set_vote(self, server_id: int) -> None:
        """Durably store the vote of the current term."""

    async def append(self, first_index: int, entries: List[Entry]) -> None:
        """Durably append entries starting at first_index (the next index), as
        one unit: after a crash either all of them are there or none."""

    async def truncate(self, index: int) -> None:
        """Durably drop every entry at index and after."""

    async def put_snapshot(self, snapshot: Snapshot, trailing: int) -> None:
        """Durably store a snapshot. With ``trailing`` > 0 (this node's own
        snapshot), entries up to ``snapshot.index - trailing`` may be deleted
        and the log goes on as before. With 0 (a snapshot installed from the
        leader), the whole log is replaced: the next entry is ``index + 1``."""

    async def get_snapshot(self) -> Optional[Snapshot]:
        """The latest snapshot, None if there is none."""

    async def close(self) -> None:
        """Release resources; every earlier write is durable already."""
