"""Histories: the events a client records, and the operations paired from them.

A history is a sequence of events, one JSON object per line (as Jepsen and etcd
record them)::

    {"process": 3, "type": "invoke", "f": "write", "key": "k1", "value": 7, "t": 1200}
    {"process": 3, "type": "ok",     "f": "write", "key": "k1", "value": 7, "t": 1900,
     "index": 42, "node": 1}

``type`` is ``invoke`` (just before the call), then one completion: ``ok`` (it
happened, ``value`` is the result: what a read returned), ``fail`` (it certainly
did not happen) or ``info`` (indeterminate: it may have happened, or may still
happen, at any time after the invoke). ``t`` is an integer time in ns from one
monotonic clock. ``index`` is the raft index the FSM reported for the command.

A process runs one operation at a time. After an ``info`` its operation stays
open forever, so the process must continue under a new id; reusing the id is an
error. An invoke with no completion by the end of the history counts as ``info``.

``pair`` turns events into ``Operation`` records: ``fail`` operations are
dropped, ``info`` ones keep ``ret = math.inf``. JSON lists become tuples so that
values are hashable (a CAS value is ``(old, new)``, a list read is a tuple).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import IO, Any, Iterable, Iterator

__all__ = ["Event", "Operation", "HistoryError", "pair", "load", "save", "load_operations",
           "freeze", "INVOKE", "OK", "FAIL", "INFO"]

INVOKE, OK, FAIL, INFO = "invoke", "ok", "fail", "info"
_COMPLETIONS = (OK, FAIL, INFO)
_TYPES = (INVOKE,) + _COMPLETIONS


class HistoryError(ValueError):
    """A history that breaks the format rules (the message names the event)."""


def freeze(value: Any) -> Any:
    """``value`` with every list turned into a tuple, recursively (hashable)."""
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    return value


@dataclass(frozen=True)
class Event:
    """One line of a history."""

    process: Any
    type: str
    f: str
    t: int
    key: Any = None
    value: Any = None
    index: int | None = None
    node: Any = None

    def to_json(self) -> dict:
        d = asdict(self)
        return {k: v for k, v in d.items() if v is not None or k in ("key", "value")}

    @classmethod
    def from_json(cls, d: dict) -> Event:
        try:
            return cls(process=d["process"], type=d["type"], f=d["f"], t=d["t"],
                       key=freeze(d.get("key")), value=freeze(d.get("value")),
                       index=d.get("index"), node=d.get("node"))
        except KeyError as exc:
            raise HistoryError(f"event {d!r} has no {exc.args[0]!r} field") from None


@dataclass(frozen=True)
class Operation:
    """One invoke paired with its completion.

    ``value`` is what the invoke carried (the written value, the CAS pair, the
    appended element, the delta), ``output`` what an ``ok`` completion carried
    (what a read returned; None when indeterminate). ``ret`` is ``math.inf``
    for an indeterminate operation. ``id`` is the position of the invoke among
    the kept operations, which is also the order of ``call``.
    """

    id: int
    process: Any
    f: str
    key: Any
    value: Any
    output: Any
    status: str          # OK or INFO
    call: int
    ret: float
    index: int | None = None
    node: Any = None

    @property
    def indeterminate(self) -> bool:
        return self.status == INFO

    def describe(self) -> str:
        """A short human-readable form, e.g. ``p3 read k1 -> 7 [t 1200..1900]``."""
        key = "" if self.key is None else f" {self.key!r}"
        if self.f == "read":
            body = f"read{key} -> " + ("?" if self.indeterminate else repr(self.output))
        else:
            body = f"{self.f}{key} {self.value!r}"
            if self.indeterminate:
                body += " (indeterminate)"
        ret = "inf" if self.ret == math.inf else str(self.ret)
        idx = "" if self.index is None else f" @{self.index}"
        return f"#{self.id} p{self.process} {body} [t {self.call}..{ret}]{idx}"


def pair(events: Iterable[Event]) -> list[Operation]:
    """Pair invokes with completions, in invoke order; drop ``fail``; see module doc."""
    open_: dict[Any, tuple[int, Event]] = {}   # process -> (seq, invoke)
    closed: set[Any] = set()                   # processes whose last op was info
    done: list[tuple[int, Event, Event | None]] = []
    seq = 0
    for n, ev in enumerate(events):
        if ev.type not in _TYPES:
            raise HistoryError(f"event {n}: unknown type {ev.type!r} (one of {_TYPES})")
        if ev.type == INVOKE:
            if ev.process in open_:
                raise HistoryError(f"event {n}: process {ev.process!r} invokes while its "
                                   "previous operation is still open")
            if ev.process in closed:
                raise HistoryError(f"event {n}: process {ev.process!r} invokes after an "
                                   "'info' completion; continue under a new process id")
            open_[ev.process] = (seq, ev)
            seq += 1
            continue
        if ev.process not in open_:
            raise HistoryError(f"event {n}: {ev.type!r} for process {ev.process!r}, "
                               "which has no open invoke")
        s, inv = open_.pop(ev.process)
        if ev.f != inv.f:
            raise HistoryError(f"event {n}: completion f={ev.f!r} does not match its "
                               f"invoke f={inv.f!r}")
        if ev.t < inv.t:
            raise HistoryError(f"event {n}: completes at t={ev.t}, before its invoke "
                               f"at t={inv.t}")
        if ev.type == INFO:
            closed.add(ev.process)
        done.append((s, inv, ev))
    for s, inv in open_.values():
        done.append((s, inv, None))
    done.sort(key=lambda x: x[0])

    ops: list[Operation] = []
    for _, inv, comp in done:
        if comp is not None and comp.type == FAIL:
            continue
        key = freeze(inv.key if inv.key is not None else (comp.key if comp else None))
        value = freeze(inv.value)
        if comp is not None and comp.type == OK:
            ops.append(Operation(len(ops), inv.process, inv.f, key, value, freeze(comp.value),
                                 OK, inv.t, comp.t, comp.index, comp.node))
        else:
            ops.append(Operation(len(ops), inv.process, inv.f, key, value, None, INFO,
                                 inv.t, math.inf, None if comp is None else comp.index,
                                 inv.node if comp is None else comp.node))
    return ops


def _lines(source: str | IO[str]) -> Iterator[str]:
    if isinstance(source, str):
        with open(source, encoding="utf-8") as fh:
            yield from fh
    else:
        yield from source


def load(source: str | IO[str]) -> list[Event]:
    """Events from a JSON-lines file (a path or an open text file); blank lines skipped."""
    events = []
    for n, line in enumerate(_lines(source), 1):
        line = line.strip()
        if not line:
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as exc:
            raise HistoryError(f"line {n}: not JSON: {exc}") from None
        if not isinstance(d, dict):
            raise HistoryError(f"line {n}: expected a JSON object, got {type(d).__name__}")
        events.append(Event.from_json(d))
    return events


def save(events: Iterable[Event], dest: str | IO[str]) -> None:
    """Write events as JSON lines to a path or an open text file."""
    if isinstance(dest, str):
        with open(dest, "w", encoding="utf-8") as fh:
            save(events, fh)
        return
    for ev in events:
        dest.write(json.dumps(ev.to_json(), separators=(",", ":")) + "\n")


def load_operations(source: str | IO[str]) -> list[Operation]:
    """``pair(load(source))``."""
    return pair(load(source))
