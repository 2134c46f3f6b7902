"""The process's shared loop thread: created with the first open node, stopped
with the last one (so an idle process keeps no thread)."""

from __future__ import annotations

import threading

from . import _core

_lock = threading.Lock()
_loop: _core.LoopCore | None = None
_users = 0


def acquire() -> _core.LoopCore:
    global _loop, _users
    with _lock:
        if _loop is None:
            _loop = _core.LoopCore()
        _users += 1
        return _loop


def release(loop: _core.LoopCore) -> None:
    """Drop one user; stop the thread when none is left."""
    global _loop, _users
    with _lock:
        _users -= 1
        if _users > 0 or _loop is not loop:
            return
        _loop = None
    loop.stop()  # joins the thread, without the GIL
