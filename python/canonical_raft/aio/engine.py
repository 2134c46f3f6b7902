"""The asyncio engine behind Node (engine="asyncio"): libraft's io runs as
coroutines on an event loop (the application's, with ``await node.astart()``,
or the library's own loop thread for a synchronous program), the FSM on the
node's applier thread as on the uv engine."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Optional

from .. import _core
from ..errors import InvalidConfigError, ShutdownError
from . import loop_thread
from .driver import Driver

if TYPE_CHECKING:
    from ..node import Node

log = logging.getLogger("canonical_raft")

CLOSE_WAIT = 30.0  # seconds: raft_close completes in one loop turn; this is a safety net


class AsyncioEngine:
    kind = "asyncio"

    def __init__(self, store: Any, tls: Any) -> None:
        if store is None:
            raise InvalidConfigError("engine='asyncio' needs store= (canonical_raft.MemoryStore "
                                     "for tests; an LMDB store is planned)")
        self.store = store
        self.tls = tls
        self.loop: Optional[asyncio.AbstractEventLoop] = None  # set by start
        self.own_loop = False
        self.driver: Optional[Driver] = None

    def check_thread(self, what: str) -> None:
        """A blocking call on the node's own event loop would wait for itself."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self.loop is None or running is self.loop:
            raise InvalidConfigError(f"node.{what}() blocks; on an event loop use "
                                     f"'await node.a{what}()' (or 'async with node')")

    def open(self, node: Node, options: _core.NodeOptions,
             loop: Optional[asyncio.AbstractEventLoop]) -> _core.NodeCore:
        """Blocking, never on ``loop``'s thread: start the core there."""
        if loop is None:
            loop, self.own_loop = loop_thread.acquire(), True
        self.loop = loop
        try:
            return asyncio.run_coroutine_threadsafe(self._open(node, options), loop).result()
        except BaseException:
            self._release_loop()
            raise

    async def _open(self, node: Node, options: _core.NodeOptions) -> _core.NodeCore:
        core = _core.NodeCore.asyncio(options)
        driver = Driver(core, self.store, node.id, node.address,
                        bind_address=node._config.bind_address, tls=self.tls,
                        retry_delay=node._config.connect_retry_delay,
                        on_fatal=lambda exc: self._fatal(node, exc))
        try:
            await driver.start(node._bootstrap, node._check_identity)
        except BaseException:
            core.request_close()
            await driver.stopped()
            raise
        self.driver = driver
        return core

    def _fatal(self, node: Node, exc: BaseException) -> None:
        if node._broken is None:
            node._broken = exc
        if node._core is not None:
            node._core.request_close()

    def close(self, node: Node) -> None:
        """Blocking, never on the loop's thread: close raft, then the driver."""
        core, driver, loop = node._core, self.driver, self.loop
        if core is not None:
            core.request_close()
        if driver is not None and loop is not None and loop.is_running():
            async def wait() -> None:
                await driver.closed.wait()
            try:
                asyncio.run_coroutine_threadsafe(wait(), loop).result(CLOSE_WAIT)
            except Exception as exc:  # a loop that stopped under us: nothing more to wait for
                log.warning("node %d: closing on the asyncio engine: %r", node.id, exc)
        self._release_loop()

    def _release_loop(self) -> None:
        if self.own_loop and self.loop is not None:
            self.own_loop = False
            loop_thread.release(self.loop)


def no_loop_error(what: str) -> ShutdownError:
    return ShutdownError(f"{what}: the node's event loop is not running")
