"""The one future type, for threads and asyncio alike."""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import threading
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, RUNNING
from typing import Any, Callable, Generator

from . import errors

# Guards the lazy creation of a future's Condition against its resolution.
_lazy = threading.Lock()
_DONE = (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)


class Future(concurrent.futures.Future):  # type: ignore[type-arg]
    """A concurrent.futures.Future that is also awaitable.

    ``result(timeout)`` raises canonical_raft.TimeoutError (also a builtin
    TimeoutError) when the wait runs out; the operation itself goes on. Raft
    operations cannot be withdrawn once submitted, so ``cancel()`` returns False.

    Most futures are resolved before anyone waits on them, so the Condition a
    concurrent.futures.Future carries is only created when a thread waits
    (it was a quarter of the per-command cost of apply()).
    """

    def __init__(self, resolver: int | None = None) -> None:
        # Not super().__init__(): that builds the Condition eagerly.
        self._cond: threading.Condition | None = None
        self._state = RUNNING
        self._result = None
        self._exception = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Any] = []
        # Ident of the thread that resolves this future (the node's applier).
        self._resolver = resolver

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        cond = self._cond
        if cond is None:
            with _lazy:
                if self._cond is None:
                    self._cond = threading.Condition()
                cond = self._cond
        return cond

    def _resolve_fast(self, result: Any, exception: BaseException | None) -> bool:
        """Resolve without a Condition if nobody has waited yet."""
        with _lazy:
            if self._cond is not None:
                return False
            if self._state in _DONE:
                raise concurrent.futures.InvalidStateError(f"{self._state}: {self!r}")
            self._result = result
            self._exception = exception
            self._state = FINISHED
        self._invoke_callbacks()  # type: ignore[attr-defined]
        return True

    def set_result(self, result: Any) -> None:
        if not self._resolve_fast(result, None):
            super().set_result(result)

    def set_exception(self, exception: BaseException | None) -> None:
        if not self._resolve_fast(None, exception):
            super().set_exception(exception)

    def add_done_callback(self, fn: Callable[[Any], object]) -> None:
        with _lazy:
            if self._cond is None and self._state not in _DONE:
                self._done_callbacks.append(fn)
                return
        super().add_done_callback(fn)

    def done(self) -> bool:
        return self._state in _DONE

    def _check_wait(self) -> None:
        # Waiting on the thread that must resolve us would never return.
        if self._resolver is not None and self._state not in _DONE and \
                threading.get_ident() == self._resolver:
            raise errors.RaftError(
                "waiting for a node's future inside its FSM or leadership callback would "
                "deadlock (they run on the thread that resolves it); use "
                "add_done_callback() instead")

    def result(self, timeout: float | None = None) -> Any:
        if self._state == FINISHED:
            if self._exception is not None:
                raise self._exception
            return self._result
        self._check_wait()
        try:
            return super().result(timeout)
        except builtins.TimeoutError as exc:
            if isinstance(exc, errors.RaftError) or self.done():
                raise
            raise errors.TimeoutError(
                f"no outcome within {timeout}s; the operation may still complete",
                indeterminate=True) from None

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._state == FINISHED:
            return self._exception
        self._check_wait()
        try:
            return super().exception(timeout)
        except builtins.TimeoutError:
            if self.done():
                raise
            raise errors.TimeoutError(f"no outcome within {timeout}s",
                                      indeterminate=True) from None

    def __await__(self) -> Generator[Any, None, Any]:
        return asyncio.wrap_future(self).__await__()


class ApplyFuture(Future):
    """The outcome of ``node.apply(command)``: the FSM's return value.

    ``index`` is the log index the command was applied at (None until then).
    """

    def __init__(self, resolver: int | None = None) -> None:
        super().__init__(resolver)
        self.index: int | None = None
        self.nbytes = 0  # the command's size, for the node's backpressure count
