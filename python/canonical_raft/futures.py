"""The one future type, for threads and asyncio alike."""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import threading

from . import errors


class Future(concurrent.futures.Future):
    """A concurrent.futures.Future that is also awaitable.

    ``result(timeout)`` raises canonical_raft.TimeoutError (also a builtin
    TimeoutError) when the wait runs out; the operation itself goes on. Raft
    operations cannot be withdrawn once submitted, so ``cancel()`` returns False.
    """

    def __init__(self, resolver: int | None = None) -> None:
        super().__init__()
        self.set_running_or_notify_cancel()
        # Ident of the thread that resolves this future (the node's applier).
        self._resolver = resolver

    def _check_wait(self) -> None:
        # Waiting on the thread that must resolve us would never return.
        if self._resolver is not None and not self.done() and \
                threading.get_ident() == self._resolver:
            raise errors.RaftError(
                "waiting for a node's future inside its FSM or leadership callback would "
                "deadlock (they run on the thread that resolves it); use "
                "add_done_callback() instead")

    def result(self, timeout: float | None = None):
        self._check_wait()
        try:
            return super().result(timeout)
        except builtins.TimeoutError as exc:
            if isinstance(exc, errors.RaftError) or self.done():
                raise
            raise errors.TimeoutError(
                f"no outcome within {timeout}s; the operation may still complete",
                indeterminate=True) from None

    def exception(self, timeout: float | None = None):
        self._check_wait()
        try:
            return super().exception(timeout)
        except builtins.TimeoutError:
            if self.done():
                raise
            raise errors.TimeoutError(f"no outcome within {timeout}s",
                                      indeterminate=True) from None

    def __await__(self):
        return asyncio.wrap_future(self).__await__()


class ApplyFuture(Future):
    """The outcome of ``node.apply(command)``: the FSM's return value.

    ``index`` is the log index the command was applied at (None until then).
    """

    def __init__(self, resolver: int | None = None) -> None:
        super().__init__(resolver)
        self.index: int | None = None
