"""Leadership events: callbacks, and async iterators fed without blocking."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import AsyncIterator, Callable

from .types import LeadershipEvent

log = logging.getLogger("canonical_raft")

Callback = Callable[[LeadershipEvent], None]


class EventHub:
    """Fans one node's events out. publish() runs on the applier thread: it
    calls callbacks there (keep them short) and hands events to each async
    subscriber's loop with call_soon_threadsafe, so it never waits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: list[Callback] = []
        self._queues: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[LeadershipEvent | None]]] = []
        self.last: LeadershipEvent | None = None

    def add_callback(self, fn: Callback) -> Callable[[], None]:
        with self._lock:
            self._callbacks.append(fn)

        def remove() -> None:
            with self._lock:
                if fn in self._callbacks:
                    self._callbacks.remove(fn)
        return remove

    def publish(self, event: LeadershipEvent | None) -> None:
        """Deliver an event; None ends every async iterator (the node closed)."""
        if event is not None:
            self.last = event
        with self._lock:
            callbacks = list(self._callbacks)
            queues = list(self._queues)
        if event is not None:
            for fn in callbacks:
                try:
                    fn(event)
                except Exception:
                    log.exception("leadership callback %r raised", fn)
        for loop, queue in queues:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, event)
            except RuntimeError:  # that event loop is closed
                self._drop(queue)

    def _drop(self, queue: asyncio.Queue[LeadershipEvent | None]) -> None:
        with self._lock:
            self._queues = [(lp, q) for lp, q in self._queues if q is not queue]

    async def subscribe(self, closed: Callable[[], bool]) -> AsyncIterator[LeadershipEvent]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[LeadershipEvent | None] = asyncio.Queue()
        with self._lock:
            self._queues.append((loop, queue))
        try:
            if self.last is not None:
                yield self.last
            while not closed():
                event = await queue.get()
                if event is None:
                    return
                yield event
        finally:
            self._drop(queue)
