"""The event loop a synchronous program's asyncio-engine nodes run on: one
thread per process running ``loop.run_forever()``, created with the first such
node and stopped with the last (as _loop.py does for the uv engine)."""

from __future__ import annotations

import asyncio
import threading
from typing import Optional

_lock = threading.Lock()
_loop: Optional[asyncio.AbstractEventLoop] = None
_thread: Optional[threading.Thread] = None
_users = 0


def acquire() -> asyncio.AbstractEventLoop:
    global _loop, _thread, _users
    with _lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            _thread = threading.Thread(target=run, name="canonical-raft-asyncio", daemon=True)
            _thread.start()
            ready.wait()
            _loop = loop
        _users += 1
        return _loop


def release(loop: asyncio.AbstractEventLoop) -> None:
    global _loop, _thread, _users
    with _lock:
        if loop is not _loop:
            return
        _users -= 1
        if _users > 0:
            return
        thread, _loop, _thread = _thread, None, None
    loop.call_soon_threadsafe(loop.stop)
    if thread is not None and thread is not threading.current_thread():
        thread.join()
    loop.close()


def active() -> bool:
    return _loop is not None
