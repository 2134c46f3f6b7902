"""The state machine a user replicates."""

from __future__ import annotations

import abc
from typing import Any, Sequence, Union

Buffer = Union[bytes, bytearray, memoryview]


class FSM(abc.ABC):
    """A deterministic state machine, one instance per node.

    Concurrency contract: apply, snapshot and restore are always called from the
    same thread (the node's applier), never concurrently, in log order. Other
    threads may read the FSM's state; guard it with a lock if reads must see a
    consistent multi-field state.

    ``apply`` must be deterministic: every node applies the same commands in the
    same order and must reach the same state. Its return value becomes the
    result of ``node.apply(...)`` on the node that proposed the command. If it
    raises, the exception becomes that future's exception, is logged, and the
    entry still counts as applied (on every node, where it raises alike).

    Snapshots: the applier calls ``snapshot`` itself, between two applies, every
    ``Config.snapshot_threshold`` entries, so it sees exactly the state at one
    log index. While it runs, applies on this node wait; Raft does not
    (heartbeats, elections and replication go on), so a slow snapshot never
    costs the cluster its leader. If it raises, the error is logged once and
    counted in ``node.stats()["snapshot"]``, and the snapshot is retried after a
    backoff (1 s doubling to 60 s); the log is not compacted meanwhile.
    """

    @abc.abstractmethod
    def apply(self, command: bytes) -> Any:
        """Apply one committed command; the return value is the command's result."""

    @abc.abstractmethod
    def snapshot(self) -> Buffer | Sequence[Buffer]:
        """The whole state (for log compaction and lagging followers), as a
        bytes-like object or a list of them: a large state need not be joined
        into one buffer. ``restore`` receives their concatenation."""

    @abc.abstractmethod
    def restore(self, snapshot: bytes) -> None:
        """Replace the whole state with one produced by snapshot()."""
