"""Cheap checks that a Raft FSM makes possible (RELIABILITY_NOTES.md section 4.4).

The FSM sees every command with its log index, so besides the black-box history
we can have ground truth: the final committed log (``LogEntry`` records, one per
FSM command, from any node after convergence) and per-node apply journals.
These checks are O(n log n) and find most bugs without a search:

* ``lost_writes``: every acknowledged write is in the log (at its index, if the
  client recorded one);
* ``duplicate_applies``: no command is in the log twice;
* ``replica_divergence``: replicas that applied something different at the same
  index, or that skipped or repeated an index;
* ``index_order``: real-time order agrees with raft order: if A returned before
  B was invoked, ``index(A) < index(B)`` (``<=`` when B is a read, which may be
  served at the index it waited for);
* ``replay``: replaying the log through the model gives what clients observed;
* ``resolve_indeterminate``: uses the log to settle indeterminate writes before
  the linearizability search.

Commands are matched to operations by ``(f, key, value)``, so written values
must be unique (client id + sequence number), as the history format requires.
"""

from __future__ import annotations

import bisect
import dataclasses
from dataclasses import dataclass
from typing import Any, Hashable, Iterable, Mapping, Sequence

from .history import INFO, OK, Operation
from .models import Model

__all__ = ["LogEntry", "Problem", "RaftResult", "lost_writes", "duplicate_applies",
           "replica_divergence", "index_order", "replay", "resolve_indeterminate",
           "check_raft"]

_SHOW = 10


@dataclass(frozen=True)
class LogEntry:
    """One committed command as the FSM applied it.

    ``id`` is the command's identity for ``duplicate_applies`` (e.g. the
    ``(client, seq)`` pair); by default ``(f, key, value)``.
    """

    index: int
    f: str
    key: Any
    value: Any
    id: Hashable = None
    term: int | None = None

    @property
    def ident(self) -> Hashable:
        return self.id if self.id is not None else (self.f, self.key, self.value)

    def describe(self) -> str:
        return f"@{self.index} {self.f} {self.key!r} {self.value!r}"


@dataclass(frozen=True)
class Problem:
    """One violation. ``kind`` is one of: lost-write, duplicate, divergence, gap,
    order, result."""

    kind: str
    message: str
    ops: tuple = ()
    index: int | None = None

    def __str__(self) -> str:
        return f"[{self.kind}] {self.message}"


@dataclass
class RaftResult:
    """``verdict`` is ``ok`` or ``illegal``; ``problems`` lists every violation."""

    verdict: str
    explanation: str
    problems: list[Problem]
    checks: list[str]

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"


def _acked_writes(ops: Iterable[Operation]) -> list[Operation]:
    return [op for op in ops if op.status == OK and op.f != "read"]


def _by_ident(log: Iterable[LogEntry]) -> dict[tuple, list[LogEntry]]:
    out: dict[tuple, list[LogEntry]] = {}
    for e in log:
        out.setdefault((e.f, e.key, e.value), []).append(e)
    return out


def lost_writes(ops: Iterable[Operation], log: Sequence[LogEntry]) -> list[Problem]:
    """Acknowledged writes missing from the log, or not at the index they reported."""
    at = {e.index: e for e in log}
    by = _by_ident(log)
    problems = []
    for op in _acked_writes(ops):
        if op.index is not None:
            e = at.get(op.index)
            if e is None or (e.f, e.key, e.value) != (op.f, op.key, op.value):
                where = "nothing" if e is None else e.describe()
                problems.append(Problem("lost-write", (
                    f"{op.describe()} was acknowledged at index {op.index}, but the log has "
                    f"{where} there"), (op,), op.index))
        elif (op.f, op.key, op.value) not in by:
            problems.append(Problem("lost-write", (
                f"{op.describe()} was acknowledged but is not in the log"), (op,)))
    return problems


def duplicate_applies(log: Iterable[LogEntry]) -> list[Problem]:
    """Commands (other than reads) present at more than one index, and indices
    present twice with different commands."""
    problems = []
    first: dict[Hashable, LogEntry] = {}
    at: dict[int, LogEntry] = {}
    for e in log:
        prev = at.get(e.index)
        if prev is not None and prev != e:
            problems.append(Problem("divergence", (
                f"the log has two commands at index {e.index}: {prev.describe()} and "
                f"{e.describe()}"), index=e.index))
        at[e.index] = e
        if e.f == "read":
            continue
        seen = first.get(e.ident)
        if seen is not None and seen.index != e.index:
            problems.append(Problem("duplicate", (
                f"command {e.ident!r} applied twice: at index {seen.index} and {e.index}"),
                index=e.index))
        else:
            first[e.ident] = e
    return problems


def replica_divergence(journals: Mapping[Any, Iterable[tuple]]) -> list[Problem]:
    """Check per-node apply journals of ``(index, term, digest)`` tuples.

    Every node must apply consecutive indices, and any two applies of the same
    index (on any nodes, or on one node after a restart) must have the same
    term and digest. ``(index, term, None)`` marks a restore from a snapshot
    taken at ``index``: the next apply is ``index + 1``. ``term`` may be None.
    """
    problems = []
    seen: dict[int, tuple[Any, Any, Any]] = {}   # index -> (term, digest, node)
    for node, journal in journals.items():
        prev = None
        for index, term, digest in journal:
            if digest is None:
                prev = index
                continue
            if prev is not None and index != prev + 1:
                kind = "gap" if index > prev + 1 else "divergence"
                problems.append(Problem(kind, (
                    f"node {node!r} applied index {index} right after {prev}"), index=index))
            prev = index
            other = seen.get(index)
            if other is None:
                seen[index] = (term, digest, node)
            elif other[1] != digest or (term is not None and other[0] is not None
                                        and other[0] != term):
                problems.append(Problem("divergence", (
                    f"index {index}: node {other[2]!r} applied term {other[0]} digest "
                    f"{_short(other[1])}, node {node!r} applied term {term} digest "
                    f"{_short(digest)}"), index=index))
    return problems


def _short(d: Any) -> str:
    s = d.hex() if isinstance(d, (bytes, bytearray)) else str(d)
    return s[:12]


def index_order(ops: Iterable[Operation]) -> list[Problem]:
    """Real-time order against raft order, over acknowledged ops with an index.

    For each op B (in call order), let A be the op with the highest index among
    those that returned strictly before B was invoked: B needs
    ``index(B) > index(A)``, or ``>=`` when B is a read. O(n log n).
    """
    acked = [op for op in ops if op.status == OK and op.index is not None]
    by_ret = sorted(acked, key=lambda op: op.ret)
    rets = [op.ret for op in by_ret]
    problems = []
    best: Operation | None = None
    j = 0
    for b in sorted(acked, key=lambda op: op.call):
        k = bisect.bisect_left(rets, b.call)     # ops with ret < b.call
        while j < k:
            a = by_ret[j]
            if best is None or a.index > best.index:
                best = a
            j += 1
        if best is None:
            continue
        if b.index < best.index or (b.index == best.index and b.f != "read"):
            problems.append(Problem("order", (
                f"{b.describe()} was invoked after {best.describe()} returned, yet its "
                f"index {b.index} is not after {best.index}"), (best, b), b.index))
    return problems


def replay(ops: Iterable[Operation], log: Sequence[LogEntry], model: Model) -> list[Problem]:
    """Replay the log in index order through ``model`` (one object per key) and
    check every acknowledged op that carries an index against it.

    The op whose command is the entry at its index is stepped in its place; a
    read whose index holds another command (served at a read index or after a
    barrier) is checked against the state after that index.
    """
    pending: dict[int, list[Operation]] = {}
    for op in ops:
        if op.status == OK and op.index is not None:
            pending.setdefault(op.index, []).append(op)
    states: dict[Any, Any] = {}
    problems = []

    def check(op: Operation, at: str) -> None:
        state = states.get(op.key, model.init())
        ok, new = model.step(state, op)
        if not ok:
            problems.append(Problem("result", (
                f"{op.describe()} does not match the log: replaying it {at} gives state "
                f"{state!r}"), (op,), op.index))
        else:
            states[op.key] = new

    entries = sorted(log, key=lambda e: e.index)
    indices = sorted(pending)
    k = 0
    for e in entries:
        while k < len(indices) and indices[k] < e.index:
            for op in pending[indices[k]]:
                if op.f == "read":
                    check(op, f"up to index {indices[k]}")
            k += 1
        here = pending.get(e.index, ())
        mine = [op for op in here if (op.f, op.key, op.value) == (e.f, e.key, e.value)
                or (op.f == e.f == "read" and op.key == e.key)]
        if mine:
            check(mine[0], f"at index {e.index}")
        else:
            as_op = Operation(-1, None, e.f, e.key, e.value, None, INFO, 0, 0, e.index)
            state = states.get(e.key, model.init())
            _, states[e.key] = model.step(state, as_op)
        for op in here:
            if op.f == "read" and (not mine or op is not mine[0]):
                check(op, f"after index {e.index}")
        if k < len(indices) and indices[k] == e.index:
            k += 1
    for idx in indices[k:]:
        for op in pending[idx]:
            if op.f == "read":
                check(op, f"after the last entry (index {idx})")
    return problems


def resolve_indeterminate(ops: Iterable[Operation], log: Sequence[LogEntry]) -> list[Operation]:
    """Settle indeterminate writes with the final committed log.

    An indeterminate write absent from the log never took effect and is
    dropped; one present gets the log index (it stays indeterminate for the
    search: its return time is still unknown). Only valid when ``log`` is the
    complete committed log after the cluster has converged.
    """
    by = _by_ident(log)
    out = []
    for op in ops:
        if op.status == INFO and op.f != "read":
            found = by.get((op.f, op.key, op.value))
            if not found:
                continue
            op = dataclasses.replace(op, index=found[0].index)
        out.append(op)
    return out


def check_raft(ops: Sequence[Operation], log: Sequence[LogEntry] | None = None, *,
               model: Model | None = None,
               journals: Mapping[Any, Iterable[tuple]] | None = None) -> RaftResult:
    """Run every check the inputs allow; see the module docstring."""
    problems: list[Problem] = []
    checks = ["index_order"]
    problems += index_order(ops)
    if log is not None:
        checks += ["lost_writes", "duplicate_applies"]
        problems += lost_writes(ops, log)
        problems += duplicate_applies(log)
        if model is not None:
            checks.append("replay")
            problems += replay(ops, log, model)
    if journals is not None:
        checks.append("replica_divergence")
        problems += replica_divergence(journals)
    if not problems:
        return RaftResult("ok", f"ok: {', '.join(checks)} on {len(ops)} operations",
                          [], checks)
    lines = [f"{len(problems)} problem(s) ({', '.join(checks)}):"]
    lines += [f"  {p}" for p in problems[:_SHOW]]
    if len(problems) > _SHOW:
        lines.append(f"  ... and {len(problems) - _SHOW} more")
    return RaftResult("illegal", "\n".join(lines), problems, checks)
