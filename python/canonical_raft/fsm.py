"""The state machine a user replicates."""

from __future__ import annotations

import abc


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
    """

    @abc.abstractmethod
    def apply(self, command: bytes):
        """Apply one committed command; the return value is the command's result."""

    @abc.abstractmethod
    def snapshot(self) -> bytes:
        """The whole state as bytes (for log compaction and lagging followers)."""

    @abc.abstractmethod
    def restore(self, snapshot: bytes) -> None:
        """Replace the whole state with one produced by snapshot()."""
