"""When and how the applier takes snapshots (applier thread only).

The applier calls ``FSM.snapshot()`` itself, between two batches, once it has
applied ``Config.snapshot_threshold`` entries past the last snapshot: it sees
exactly the state at the index it has applied, and while it serialises, applies
on this node wait but Raft does not (heartbeats and replication go on, on the
loop thread). The frame goes to the loop thread (``NodeCore.snapshot_put``),
which persists it and tells raft, and the outcome comes back as a
SNAPSHOT_DONE item. A failure is logged once and retried after a backoff that
doubles up to a minute, never on every event.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from . import _core
from ._codec import encode_snapshot

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("canonical_raft")

_FIRST_BACKOFF = 1.0
_MAX_BACKOFF = 60.0
# Outcomes that are not failures of ours: the node is closing, or raft is busy
# with a snapshot from the leader (retried shortly, without backoff growth).
_CLOSING = {_core.codes["CANCELED"], _core.codes["SHUTDOWN"]}
_TRANSIENT = {_core.codes["BUSY"], _core.codes["NOTFOUND"]}


class Snapshots:
    """The applier's snapshot schedule and figures for ``Node.stats()``."""

    def __init__(self, threshold: int, compress: bool) -> None:
        self.threshold = threshold
        self.compress = compress
        self.last_index = 0       # index of the last snapshot taken or restored
        self.inflight: tuple[int, float, int] | None = None  # index, started, size
        self.retry_at = 0.0
        self.backoff = _FIRST_BACKOFF
        self.taken = 0
        self.restored = 0
        self.failures = 0
        self.last_error: str | None = None
        self.last_duration = 0.0   # seconds from FSM.snapshot() to persisted
        self.last_size = 0
        self.largest_duration = 0.0
        self.largest_size = 0

    def stats(self) -> dict[str, Any]:
        return {"index": self.last_index, "taken": self.taken, "restored": self.restored,
                "failures": self.failures, "last_error": self.last_error,
                "in_progress": self.inflight is not None,
                "last_duration": self.last_duration, "last_size": self.last_size,
                "largest_duration": self.largest_duration, "largest_size": self.largest_size}

    def restored_at(self, index: int) -> None:
        self.restored += 1
        if index > self.last_index:
            self.last_index = index

    def maybe_take(self, node: Node) -> None:
        """Between two batches: snapshot the FSM if the threshold is reached."""
        if self.inflight is not None or node._broken is not None:
            return
        index = node._applied
        if index - self.last_index < self.threshold:
            return
        started = time.monotonic()
        if started < self.retry_at:
            return
        try:
            chunks = encode_snapshot(node._fsm.snapshot(), self.compress)
        except Exception as exc:  # the FSM's own failure (or a wrong return type)
            self._failed(node, index, f"FSM.snapshot() raised {exc!r}", exc)
            return
        size = sum(memoryview(c).nbytes for c in chunks)
        self.inflight = (index, started, size)
        node._core.snapshot_put(index, chunks)

    def done(self, node: Node, index: int, code: int, msg: str) -> None:
        """The loop thread's outcome of snapshot_put."""
        if self.inflight is None or self.inflight[0] != index:
            return
        _, started, size = self.inflight
        self.inflight = None
        if code in _CLOSING:
            return
        if code in _TRANSIENT:
            # Raft is installing a snapshot from the leader (or just did): the
            # next capture, at a later index, will do.
            self.retry_at = time.monotonic() + _FIRST_BACKOFF
            return
        if code != 0:
            self._failed(node, index, f"persisting failed: {msg} (code {code})", None)
            return
        duration = time.monotonic() - started
        self.taken += 1
        self.last_index = max(self.last_index, index)
        self.last_duration, self.last_size = duration, size
        self.largest_duration = max(self.largest_duration, duration)
        self.largest_size = max(self.largest_size, size)
        self.backoff = _FIRST_BACKOFF

    def _failed(self, node: Node, index: int, error: str, exc: BaseException | None) -> None:
        self.failures += 1
        self.last_error = error
        log.error("node %d: snapshot at index %d failed: %s; retrying in %.0f s", node.id,
                  index, error, self.backoff, exc_info=exc)
        self.retry_at = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, _MAX_BACKOFF)
