"""The uv engine behind Node (the default): libraft's own raft_uv (segmented
log in the data dir, TCP transport) on the process's libuv loop thread."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from . import _core, _loop

if TYPE_CHECKING:
    from .node import Node


class UvEngine:
    kind = "uv"
    store = None

    def __init__(self) -> None:
        self._loop: Optional[_core.LoopCore] = None

    def check_thread(self, what: str) -> None:
        pass  # the loop thread is ours: blocking calls from anywhere are fine

    def open(self, node: Node, options: _core.NodeOptions, loop: Any) -> _core.NodeCore:
        # On failure the caller calls close(), which undoes all of this.
        self._loop = _loop.acquire()
        core = node._core = _core.NodeCore(self._loop, options)
        core.start()
        return core

    def close(self, node: Node) -> None:
        if node._core is not None:
            node._core.close()  # blocks without the GIL until libraft and libuv are closed
        if self._loop is not None:
            _loop.release(self._loop)
            self._loop = None
