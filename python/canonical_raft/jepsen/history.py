"""A thread-safe history recorder in the checker's format (``checker.Event``).

Times are ``time.monotonic_ns()`` of this process: every client thread and
the nemesis share one clock. ``new_process()`` hands out process ids; a
client continues under a new id after an ``info``.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

from ..checker import Event, Operation, pair, save

__all__ = ["Recorder"]


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()
        self._processes = itertools.count()

    def new_process(self) -> int:
        with self._lock:
            return next(self._processes)

    def record(self, process: int, type: str, f: str, key: Any, value: Any = None, *,
               index: int | None = None, node: Any = None) -> int:
        with self._lock:
            t = time.monotonic_ns()
            self.events.append(Event(process=process, type=type, f=f, t=t, key=key,
                                     value=value, index=index, node=node))
            return t

    def add(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def operations(self) -> list[Operation]:
        with self._lock:
            return pair(list(self.events))

    def counts(self) -> dict[str, int]:
        with self._lock:
            out: dict[str, int] = {}
            for ev in self.events:
                out[ev.type] = out.get(ev.type, 0) + 1
            return out

    def save(self, path: str) -> None:
        with self._lock:
            save(list(self.events), path)
