"""The one future type, for threads and asyncio alike."""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures

from . import errors


class Future(concurrent.futures.Future):
    """A concurrent.futures.Future that is also awaitable.

    ``result(timeout)`` raises canonical_raft.TimeoutError (also a builtin
    TimeoutError) when the wait runs out; the operation itself goes on. Raft
    operations cannot be withdrawn once submitted, so ``cancel()`` returns False.
    """

    def __init__(self) -> None:
        super().__init__()
        self.set_running_or_notify_cancel()

    def result(self, timeout: float | None = None):
        try:
            return super().result(timeout)
        except builtins.TimeoutError as exc:
            if isinstance(exc, errors.RaftError) or self.done():
                raise
            raise errors.TimeoutError(
                f"no outcome within {timeout}s; the operation may still complete",
                indeterminate=True) from None

    def exception(self, timeout: float | None = None):
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

    def __init__(self) -> None:
        super().__init__()
        self.index: int | None = None
