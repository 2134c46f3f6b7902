"""Sequential models: what one object does when operations run one at a time.

A model has ``init() -> state`` and ``step(state, op) -> (ok, new_state)``.
States must be hashable and compare by value (the search memoizes them).
``step`` accepts ``op`` if the object, in ``state``, could have produced what
``op`` observed. An indeterminate operation (``op.status == "info"``) observed
nothing, so ``step`` accepts it with any effect it could have had; where it may
also have had no effect (a CAS whose old value does not match), the state stays.

The read function is always called ``read``. The checker drops indeterminate
reads before the search. A model may also have ``settle(ops)``, which drops or
closes indeterminate writes where that cannot change the verdict (see
``Register.settle``): it keeps the number of open operations down.

Models are stateless objects and may be shared between checks and threads.
"""

from __future__ import annotations

import math
from typing import Any, Hashable, Iterable, Protocol

from .history import OK, Operation

__all__ = ["Model", "Register", "CASRegister", "AppendList", "Counter", "KeyMap"]


class Model(Protocol):
    """A sequential specification; see the module docstring."""

    name: str

    def init(self) -> Hashable: ...

    def step(self, state: Any, op: Operation) -> tuple[bool, Any]: ...


def _bad_f(model: Any, op: Operation) -> ValueError:
    return ValueError(f"{model.name} has no operation {op.f!r} (op {op.describe()})")


class _UniqueWrites:
    """For models whose writes put a value that later operations can observe."""

    def written(self, op: Operation) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def observed(self, op: Operation) -> Iterable[Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def settle(self, ops: list[Operation]) -> tuple[set[int], dict[int, float]]:
        """Narrow down indeterminate writes before the search.

        Returns the ids to drop and new return times. Neither changes the verdict:

        * an indeterminate write whose value no operation observed can always be
          linearized last, where it changes nothing anyone saw; and removing it
          from any linearization leaves one that is still valid, since nothing
          between it and the next write observed its value: it is dropped;
        * an indeterminate write of a value that only it writes (and that is not
          the initial value) must take effect before every acknowledged
          operation that observed the value, so it returns, at the latest, when
          the first of them returns: its return time is set to that.

        Both keep the number of operations open at once (the cost of the
        search) down; the second needs unique written values.
        """
        initial = self.init()
        writers: dict = {}
        seen: set = set()
        first_seen: dict = {}
        for op in ops:
            try:
                if op.f != "read":
                    w = self.written(op)
                    writers[w] = writers.get(w, 0) + 1
                for v in self.observed(op):
                    seen.add(v)
                    if op.status == OK and op.ret < first_seen.get(v, math.inf):
                        first_seen[v] = op.ret
            except TypeError:   # unhashable values: settle nothing
                return set(), {}
        drop: set[int] = set()
        ret: dict[int, float] = {}
        for op in ops:
            if op.status == OK or op.f == "read":
                continue
            w = self.written(op)
            if w in self.observed(op):
                continue
            if w not in seen:
                drop.add(op.id)
            elif writers[w] == 1 and w != initial:
                bound = first_seen.get(w, math.inf)
                if op.call <= bound < op.ret:
                    ret[op.id] = bound
        return drop, ret


class Register(_UniqueWrites):
    """A read/write register. ``write v``; ``read -> v``. Starts at ``initial``."""

    name = "register"

    def __init__(self, initial: Hashable = None) -> None:
        self.initial = initial

    def init(self) -> Hashable:
        return self.initial

    def step(self, state: Any, op: Operation) -> tuple[bool, Any]:
        f = op.f
        if f == "read":
            return (op.status != OK or op.output == state), state
        if f == "write":
            return True, op.value
        raise _bad_f(self, op)

    def written(self, op: Operation) -> Any:
        return op.value

    def observed(self, op: Operation) -> Iterable[Any]:
        if op.f == "read" and op.status == OK:
            return (op.output,)
        return ()


class CASRegister(Register):
    """A register with compare-and-set: ``cas (old, new)`` succeeds iff value == old.

    Record a CAS that did not swap as ``fail`` (it had no effect): an ``ok``
    CAS means it swapped.
    """

    name = "cas-register"

    def step(self, state: Any, op: Operation) -> tuple[bool, Any]:
        if op.f == "cas":
            old, new = op.value
            if state == old:
                return True, new
            return op.status != OK, state
        return Register.step(self, state, op)

    def written(self, op: Operation) -> Any:
        return op.value[1] if op.f == "cas" else op.value

    def observed(self, op: Operation) -> Iterable[Any]:
        if op.f == "cas":
            return (op.value[0],)
        return Register.observed(self, op)


class AppendList(_UniqueWrites):
    """An append-only list: ``append x``; ``read -> [x1, x2, ...]`` (the whole list).

    The state is a tuple, so each step costs O(length): use it for histories of
    hundreds, not tens of thousands, of appends per key.
    """

    name = "append-list"

    def init(self) -> Hashable:
        return ()

    def step(self, state: Any, op: Operation) -> tuple[bool, Any]:
        f = op.f
        if f == "read":
            return (op.status != OK or op.output == state), state
        if f == "append":
            return True, state + (op.value,)
        raise _bad_f(self, op)

    def written(self, op: Operation) -> Any:
        return op.value

    def observed(self, op: Operation) -> Iterable[Any]:
        if op.f == "read" and op.status == OK:
            return op.output or ()
        return ()


class Counter:
    """A counter: ``add d`` (``d`` defaults to 1 when the value is None); ``read -> n``."""

    name = "counter"

    def __init__(self, initial: int = 0) -> None:
        self.initial = initial

    def init(self) -> Hashable:
        return self.initial

    def step(self, state: Any, op: Operation) -> tuple[bool, Any]:
        f = op.f
        if f == "read":
            return (op.status != OK or op.output == state), state
        if f == "add":
            return True, state + (1 if op.value is None else op.value)
        raise _bad_f(self, op)


class KeyMap:
    """A map from keys to independent objects of ``model``; ``op.key`` picks one.

    ``check_history`` never steps this model: linearizability is local, so it
    checks each key's sub-history against ``model`` on its own. ``step`` is
    here for the search over the whole map at once (``partition=False``),
    which gives the same verdict, exponentially slower.
    """

    def __init__(self, model: Model) -> None:
        self.model = model
        self.name = f"map of {model.name}"

    def init(self) -> Hashable:
        return frozenset()

    def step(self, state: frozenset, op: Operation) -> tuple[bool, Any]:
        current = dict(state)
        inner = current.get(op.key, _ABSENT)
        if inner is _ABSENT:
            inner = self.model.init()
        ok, new = self.model.step(inner, op)
        if not ok:
            return False, state
        current[op.key] = new
        return True, frozenset(current.items())


_ABSENT = object()
