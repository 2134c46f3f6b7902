"""The one future type, for threads and asyncio alike.

A Raft future is created per command, and most are resolved before anyone
waits on them, so what a ``concurrent.futures.Future`` builds eagerly (a
Condition, two lists, five attributes) is here built on demand: a new future
costs one or two attribute writes. It stays a ``concurrent.futures.Future``
subclass, so ``concurrent.futures.wait``/``as_completed`` and
``asyncio.wrap_future`` accept it.

Asyncio: ``await fut`` registers an asyncio future with a per-loop waker
(``_LoopWaker``); the resolving thread queues it there, and the applier wakes
each event loop once per batch (``batch()``): one ``call_soon_threadsafe`` for
all the futures that batch resolved, not one per future.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import logging
import threading
import weakref
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, RUNNING
from typing import Any, Callable, Generator, cast

from . import errors

# Guards the lazy parts of every future (Condition, callback and awaiter lists)
# against its resolution. Held for a few bytecodes, never while calling out.
_lazy = threading.Lock()
_DONE = (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)
_LOGGER = logging.getLogger("concurrent.futures")
_get_running_loop = asyncio.get_running_loop


class Future(concurrent.futures.Future[Any]):
    """A concurrent.futures.Future that is also awaitable.

    - ``result(timeout)`` raises canonical_raft.TimeoutError (also a builtin
      TimeoutError) when the wait runs out; the operation itself goes on.
    - Waiting (``result``/``exception``) on the thread that resolves the future
      (the node's applier: inside FSM methods and callbacks) would never return:
      it raises RaftError instead. Use ``add_done_callback`` there.
    - ``await fut`` works in any asyncio loop, without ``wrap_future``.
    - Cancellation: a Raft operation cannot be withdrawn once submitted, so
      ``cancel()`` returns False and the future resolves as usual. Cancelling a
      task that awaits it stops the wait only; the command may still commit.
    - Callbacks run on the resolving thread (the node's applier), or at once on
      the caller's thread if the future is already done.
    """

    # Class-level defaults: a new future writes no attribute it does not need.
    _cond: threading.Condition | None = None
    _state = RUNNING
    _result: Any = None
    _exception: BaseException | None = None
    _resolver: int | None = None  # ident of the thread that resolves it
    _waiters: Any = ()            # concurrent.futures.wait's waiters (a list once used)
    _done_callbacks: Any = ()     # a list once a callback is added
    _aio: Any = None              # the _Waiter of the task awaiting it (a list if several)

    def __init__(self, resolver: int | None = None) -> None:
        # Not super().__init__(): that builds the Condition and lists eagerly.
        if resolver is not None:
            self._resolver = resolver

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        cond = self._cond
        if cond is None:
            with _lazy:
                cond = self._cond
                if cond is None:
                    self._waiters = []
                    cond = self._cond = threading.Condition()
        return cond

    # ------------------------------------------------------------ resolution

    def _resolve(self, result: Any, exception: BaseException | None) -> None:
        with _lazy:
            state: str | None = self._state
            if state in _DONE:
                cond = None
            else:
                state = None
                self._result = result
                self._exception = exception
                self._state = FINISHED
                cond, aio, callbacks = self._cond, self._aio, self._done_callbacks
        if state is not None:  # raised outside the lock: repr() may take it
            raise concurrent.futures.InvalidStateError(f"{state}: {self!r}")
        if cond is not None:  # someone waits (or waited) on a thread
            with cond:
                for waiter in self._waiters:
                    if exception is None:
                        waiter.add_result(self)
                    else:
                        waiter.add_exception(self)
                cond.notify_all()
        if aio is not None:
            self._aio = None
            if type(aio) is list:
                for waiter in aio:
                    waiter._waker.add(waiter)
            else:
                aio._waker.add(aio)
        if callbacks:
            for fn in callbacks:
                try:
                    fn(self)
                except Exception:
                    _LOGGER.exception("exception calling callback for %r", self)
            self._done_callbacks = ()

    def set_result(self, result: Any) -> None:
        self._resolve(result, None)

    def set_exception(self, exception: BaseException | None) -> None:
        self._resolve(None, exception)

    def add_done_callback(self, fn: Callable[[Any], object]) -> None:
        with _lazy:
            if self._state not in _DONE:
                if not self._done_callbacks:
                    self._done_callbacks = [fn]
                else:
                    self._done_callbacks.append(fn)
                return
        try:
            fn(self)
        except Exception:
            _LOGGER.exception("exception calling callback for %r", self)

    def cancel(self) -> bool:
        """Always False: a submitted Raft operation cannot be withdrawn."""
        return False

    def cancelled(self) -> bool:
        return False

    def running(self) -> bool:
        return self._state == RUNNING

    def done(self) -> bool:
        return self._state in _DONE

    # ------------------------------------------------------------ waiting

    def _check_wait(self) -> None:
        # Waiting on the thread that must resolve us would never return.
        if self._resolver is not None and self._state not in _DONE and \
                threading.get_ident() == self._resolver:
            raise errors.RaftError(
                "waiting for a node's future inside its FSM or leadership callback would "
                "deadlock (they run on the thread that resolves it); use "
                "add_done_callback() instead")

    def result(self, timeout: float | None = None) -> Any:
        if self._state != FINISHED:
            self._check_wait()
            try:
                concurrent.futures.Future.exception(self, timeout)  # waits
            except builtins.TimeoutError as exc:
                if isinstance(exc, errors.RaftError) or self.done():
                    raise
                raise errors.TimeoutError(
                    f"no outcome within {timeout}s; the operation may still complete",
                    indeterminate=True) from None
        err = self._exception
        if err is not None:
            try:
                raise err
            finally:
                del err, self  # no frame -> exception -> future cycle
        return self._result

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._state != FINISHED:
            self._check_wait()
            try:
                return concurrent.futures.Future.exception(self, timeout)
            except builtins.TimeoutError:
                if self.done():
                    raise
                raise errors.TimeoutError(f"no outcome within {timeout}s",
                                          indeterminate=True) from None
        return self._exception

    def __await__(self) -> Generator[Any, None, Any]:
        if self._state not in _DONE:
            loop = _get_running_loop()
            waiter = _Waiter(loop, _waker_for(loop))
            with _lazy:
                pending = self._state not in _DONE
                if pending:
                    aio = self._aio
                    if aio is None:
                        self._aio = waiter  # the common case: one awaiter, no list
                    elif type(aio) is list:
                        aio.append(waiter)
                    else:
                        self._aio = [aio, waiter]
            if pending:
                yield waiter  # cancelling the task ends the wait, not the command
        return self.result()


class _Waiter:
    """What ``await future`` hands its asyncio Task to wait on: the smallest
    object the Task accepts as a future (``_asyncio_future_blocking``,
    ``get_loop``, ``add_done_callback``, ``result``, ``cancel``). The loop's
    waker calls the Task's wake-up directly, so a completion costs no asyncio
    Future and no ``call_soon`` handle of its own."""

    __slots__ = ("_loop", "_waker", "_asyncio_future_blocking", "_callback", "_context",
                 "_state")

    def __init__(self, loop: asyncio.AbstractEventLoop, waker: _LoopWaker) -> None:
        self._loop = loop
        self._waker = waker
        self._asyncio_future_blocking = True
        self._callback: Callable[[_Waiter], object] | None = None
        self._context: Any = None
        self._state = 0  # 0 waiting, 1 fired, 2 cancelled

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def add_done_callback(self, fn: Callable[[_Waiter], object], *,
                          context: Any = None) -> None:
        if self._state:
            self._loop.call_soon(fn, self, context=context)
        else:
            self._callback, self._context = fn, context

    def remove_done_callback(self, fn: Callable[[_Waiter], object]) -> int:
        if self._callback is fn:
            self._callback = self._context = None
            return 1
        return 0

    def done(self) -> bool:
        return self._state != 0

    def cancelled(self) -> bool:
        return self._state == 2

    def cancel(self, msg: Any = None) -> bool:
        if self._state:
            return False
        self._state = 2
        self._fire_later()
        return True

    def result(self) -> None:
        if self._state == 2:
            raise asyncio.CancelledError()

    def exception(self) -> None:
        if self._state == 2:
            raise asyncio.CancelledError()

    def _fire(self) -> None:  # on the loop, from the waker
        if self._state:
            return
        self._state = 1
        fn = self._callback
        if fn is not None:
            self._callback = None
            try:
                if self._context is not None:
                    self._context.run(fn, self)
                else:
                    fn(self)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._loop.call_exception_handler(
                    {"message": "canonical_raft: waking an awaiting task failed",
                     "exception": exc})

    def _fire_later(self) -> None:
        fn = self._callback
        if fn is not None:
            self._callback = None
            self._loop.call_soon(fn, self, context=self._context)


class ApplyFuture(Future):
    """The outcome of ``node.apply(command)``: the FSM's return value.

    ``index`` is the log index the command was applied at (None until then);
    ``nbytes`` the command's size (the node's backpressure count).
    """

    index: int | None = None
    nbytes = 0

    def __init__(self, resolver: int | None = None, nbytes: int = 0) -> None:
        if resolver is not None:
            self._resolver = resolver
        if nbytes:
            self.nbytes = nbytes


# ---------------------------------------------------------------- asyncio wake-ups

#: Tasks woken per turn of an event loop, so that a large batch does not hold
#: the loop (and its timers) for long: the rest go in the next turns.
DELIVER_CHUNK = 128

_tls = threading.local()


class _LoopWaker:
    """The asyncio waiters of one event loop whose futures resolved, and whether
    the loop was told: it is woken once until it has taken them."""

    __slots__ = ("_loop", "_lock", "_items", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)
        self._lock = threading.Lock()
        self._items: list[_Waiter] = []
        self._scheduled = False

    def add(self, waiter: _Waiter) -> None:
        """Any thread: queue a waiter; wake the loop now, or at the end of the
        resolving thread's batch (see batch())."""
        with self._lock:
            self._items.append(waiter)
            if self._scheduled:
                return
            self._scheduled = True
        pending = getattr(_tls, "wakers", None)
        if pending is not None:
            pending.append(self)
        else:
            self._wake()

    def _wake(self) -> None:
        loop = self._loop()
        try:
            if loop is None:
                raise RuntimeError("loop collected")
            loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:  # the loop is closed: nobody awaits there any more
            with self._lock:
                self._items = []
                self._scheduled = False

    def _deliver(self) -> None:  # on the loop
        with self._lock:
            items, self._items = self._items, []
            self._scheduled = False
        self._deliver_from(items, 0)

    def _deliver_from(self, items: list[_Waiter], start: int) -> None:
        end = start + DELIVER_CHUNK
        for waiter in items[start:end]:
            waiter._fire()  # nothing if its task was cancelled meanwhile
        if end < len(items):
            loop = self._loop()
            if loop is not None:
                loop.call_soon(self._deliver_from, items, end)


_wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopWaker] = (
    weakref.WeakKeyDictionary())
# (a reference to the last loop, its waker); the waker is None only in this
# placeholder, whose reference matches no loop.
_last_waker: tuple[Callable[[], object], _LoopWaker | None] = (lambda: None, None)


def _waker_for(loop: asyncio.AbstractEventLoop) -> _LoopWaker:
    global _last_waker
    ref, waker = _last_waker
    if ref() is loop:
        return cast(_LoopWaker, waker)  # not the placeholder: a waker
    with _lazy:
        try:
            waker = _wakers.get(loop)
            if waker is None:
                waker = _wakers[loop] = _LoopWaker(loop)
        except TypeError:  # a loop type without weak references: no cache
            waker = _LoopWaker(loop)
        else:
            _last_waker = (weakref.ref(loop), waker)
    return waker


class batch:
    """``with futures.batch():`` event loops that futures resolved inside the
    block must wake are woken once each, when it ends (the applier wraps each
    batch of committed entries in one)."""

    __slots__ = ("_outer",)

    def __enter__(self) -> None:
        self._outer = getattr(_tls, "wakers", None)
        if self._outer is None:
            _tls.wakers = []

    def __exit__(self, *exc: object) -> None:
        if self._outer is None:
            wakers = _tls.wakers
            _tls.wakers = None
            for waker in wakers:
                waker._wake()


def wake_pending() -> None:
    """Inside ``batch()``: wake now the event loops waiting so far (the applier
    calls it where it offers the GIL in the middle of a large batch)."""
    wakers = getattr(_tls, "wakers", None)
    if wakers:
        _tls.wakers = []
        for waker in wakers:
            waker._wake()
