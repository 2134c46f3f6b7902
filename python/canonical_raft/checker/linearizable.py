"""Linearizability checking: Wing & Gong's search with Lowe's memoization.

The algorithm is the one Knossos and Porcupine use (described in
RELIABILITY_NOTES.md section 4.3); this is our own implementation of it.

1. Indeterminate reads are dropped; indeterminate writes are dropped or given
   a return time where the model can prove it does not change the verdict
   (``Register.settle``).
2. The history is split by key (linearizability is local) and each key is
   searched on its own.
3. Calls and returns are sorted by time (calls first on ties, so operations
   that touch count as concurrent) into a doubly linked list. An indeterminate
   operation returns at +inf: it may take effect at any time after its call.
4. Depth-first search: take the first call in the list whose operation the
   model accepts in the current state and whose (linearized set, new state)
   was not seen before; lift it and its return out of the list; start again
   at the head. Meeting a return means an operation that must already have
   taken effect cannot: undo the last choice. An empty list is a witness
   order; undoing past the first choice means the history is not
   linearizable.

The search is exponential in the number of operations open at the same time.
A key with more than ``max_open`` of them, or a search that runs out of its
time or step budget, gets the verdict ``unknown``, never ``ok``.

The set of linearized operations is stored as ``(base, rest)``: every
operation below ``base`` is linearized, and ``rest`` is a bitset relative to
``base``. Memory per memo entry therefore grows with the width of the window
of open operations, not with the length of the history.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from .history import INFO, OK, Event, Operation, pair
from .models import KeyMap, Model

__all__ = ["Result", "KeyResult", "check_history", "VERDICTS"]

VERDICTS = ("ok", "illegal", "unknown")
_SHOW = 8   # operations shown in an explanation


@dataclass
class KeyResult:
    """The verdict for one key's sub-history.

    ``witness`` (on ``ok``) is one valid order of the operations. On
    ``illegal``, ``partial`` is the longest linearization the search found,
    ``state`` the model state after it, and ``blocked`` the operation that
    had to take effect next and could not.
    """

    key: Any
    verdict: str
    explanation: str
    ops: int = 0
    dropped: int = 0
    max_open: int = 0
    steps: int = 0
    witness: list[Operation] | None = None
    partial: list[Operation] = field(default_factory=list)
    state: Any = None
    blocked: Operation | None = None


@dataclass
class Result:
    """The verdict for a whole history: ``illegal`` if any key is, else
    ``unknown`` if any key is, else ``ok``. ``keys`` maps key -> KeyResult."""

    verdict: str
    explanation: str
    keys: dict[Any, KeyResult]
    ops: int
    steps: int
    elapsed: float

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"


class _Budget:
    def __init__(self, seconds: float | None, steps: int | None) -> None:
        self.deadline = None if seconds is None else time.monotonic() + seconds
        self.steps_left = math.inf if steps is None else steps
        self.seconds = seconds
        self.steps = steps

    def spent(self) -> bool:
        return self.steps_left <= 0 or (self.deadline is not None
                                        and time.monotonic() >= self.deadline)

    def describe(self) -> str:
        parts = []
        if self.seconds is not None:
            parts.append(f"{self.seconds:g} s")
        if self.steps is not None:
            parts.append(f"{self.steps} steps")
        return " / ".join(parts)


class _OutOfBudget(Exception):
    pass


def check_history(history: Iterable[Operation] | Iterable[Event], model: Model, *,
                  time_limit: float | None = None, max_steps: int | None = None,
                  max_open: int | None = 20, partition: bool = True) -> Result:
    """Check that ``history`` is linearizable with respect to ``model``.

    ``history`` is a list of Operations (``history.pair``) or of Events.
    ``model`` describes one object per key (``KeyMap(m)`` means the same as
    ``m``): each key is checked on its own. With ``partition=False`` and a
    ``KeyMap``, the whole map is searched at once (slow; for cross-checks).

    ``time_limit`` (seconds) and ``max_steps`` bound the whole check; when
    either runs out the verdict is ``unknown``. A key with more than
    ``max_open`` operations open at one instant (indeterminate ones stay open
    forever) is not searched and is ``unknown``; None lifts the limit.
    """
    started = time.monotonic()
    ops = list(history)
    if ops and isinstance(ops[0], Event):
        ops = pair(ops)  # type: ignore[arg-type]
    for op in ops:
        if op.status not in (OK, INFO):
            raise ValueError(f"operation {op.describe()} has status {op.status!r}; "
                             "expected 'ok' or 'info' (drop 'fail' operations)")
        if op.ret < op.call:
            raise ValueError(f"operation {op.describe()} returns before it is called")
    inner = model.model if isinstance(model, KeyMap) else model
    if partition:
        groups: dict[Any, list[Operation]] = {}
        for op in ops:
            groups.setdefault(op.key, []).append(op)
        search_model = inner
    else:
        groups = {None: ops}
        search_model = model
    budget = _Budget(time_limit, max_steps)
    keys: dict[Any, KeyResult] = {}
    for key, group in groups.items():
        if budget.spent():
            keys[key] = KeyResult(key, "unknown", f"key {key!r}: not checked, the budget "
                                  f"({budget.describe()}) was spent", ops=len(group))
            continue
        keys[key] = _check_key(key, group, search_model, inner, budget, max_open)
    return _summarize(keys, len(ops), time.monotonic() - started)


def _summarize(keys: dict[Any, KeyResult], n_ops: int, elapsed: float) -> Result:
    steps = sum(k.steps for k in keys.values())
    bad = [k for k in keys.values() if k.verdict == "illegal"]
    unknown = [k for k in keys.values() if k.verdict == "unknown"]
    if bad:
        verdict = "illegal"
        text = "\n\n".join(k.explanation for k in bad)
        if unknown:
            text += f"\n\n({len(unknown)} other key(s) unknown)"
    elif unknown:
        verdict = "unknown"
        text = "\n".join(k.explanation for k in unknown)
    else:
        verdict = "ok"
        dropped = sum(k.dropped for k in keys.values())
        text = (f"linearizable: {n_ops} operations on {len(keys)} key(s) "
                f"({dropped} indeterminate dropped), {steps} search steps, {elapsed:.3f} s")
    return Result(verdict, text, keys, n_ops, steps, elapsed)


def _check_key(key: Any, ops: list[Operation], model: Any, inner: Any, budget: _Budget,
               max_open: int | None) -> KeyResult:
    keep = [op for op in ops if not (op.status != OK and op.f == "read")]
    settle = getattr(inner, "settle", None)
    if settle is not None:
        skip, closes = settle(keep)
        if skip or closes:
            keep = [op if op.id not in closes else dataclasses.replace(op, ret=closes[op.id])
                    for op in keep if op.id not in skip]
    dropped = len(ops) - len(keep)
    events = sorted([(op.call, 0, i) for i, op in enumerate(keep)]
                    + [(op.ret, 1, i) for i, op in enumerate(keep)])
    width = peak = 0
    for _, kind, _ in events:
        width += 1 if kind == 0 else -1
        peak = max(peak, width)
    name = f"key {key!r}" if key is not None else "history"
    if max_open is not None and peak > max_open:
        n_info = sum(op.status != OK for op in keep)
        return KeyResult(key, "unknown", (
            f"{name}: {peak} operations open at once ({n_info} indeterminate, open "
            f"forever), more than max_open={max_open}: not searched. Use fewer clients "
            "per key and more keys, or drop indeterminate writes the raft log shows never "
            "happened (raft_checks.resolve_indeterminate)."),
            ops=len(keep), dropped=dropped, max_open=peak)
    res = KeyResult(key, "ok", "", ops=len(keep), dropped=dropped, max_open=peak)
    try:
        _search(keep, events, model, budget, res)
    except _OutOfBudget:
        res.verdict = "unknown"
        res.explanation = (f"{name}: the budget ({budget.describe()}) ran out after "
                           f"{res.steps} search steps over {len(keep)} operations")
        return res
    if res.verdict == "ok":
        res.explanation = f"{name}: linearizable ({len(keep)} operations)"
    else:
        res.explanation = _explain(name, model, keep, res)
    return res


def _search(ops: Sequence[Operation], events: list, model: Any, budget: _Budget,
            res: KeyResult) -> None:
    """The WGL search on one key; fills ``res``. ``events`` is sorted (t, kind, i)."""
    n = len(ops)
    # Node 0 is the head; each event gets a node 1..2n, in time order.
    size = 2 * n + 1
    nxt = list(range(1, size + 1))
    nxt[-1] = -1
    prv = list(range(-1, size - 1))
    node_op = [0] * size
    is_call = [False] * size
    match = [0] * size
    call_node = [0] * n
    for pos, (_, kind, i) in enumerate(events, 1):
        node_op[pos] = i
        if kind == 0:
            is_call[pos] = True
            call_node[i] = pos
        else:
            match[call_node[i]] = pos

    step = model.step
    state = model.init()
    base, rest = 0, 0        # linearized = all ids < base, plus rest << base
    cache: set = set()
    # The stack of choices, as a chain of (call node, state, base, rest, below,
    # depth) tuples holding what to restore. A chain, not a list, so that
    # remembering the deepest point reached costs O(1).
    top = None
    best = -2
    best_top = best_state = best_blocked = None
    steps = 0
    check_every = 2048
    limit = budget.steps_left
    next_check = min(limit, check_every)
    entry = nxt[0]
    while entry != -1:
        steps += 1
        if steps >= next_check:
            budget.steps_left = limit - steps
            if budget.spent():
                res.steps = steps
                raise _OutOfBudget
            next_check = min(limit, steps + check_every)
        if is_call[entry]:
            i = node_op[entry]
            ok, s2 = step(state, ops[i])
            if ok:
                rel = i - base
                if rel == 0:
                    r2 = rest | 1
                    t = (~r2 & (r2 + 1)).bit_length() - 1   # trailing ones
                    b2, r2 = base + t, r2 >> t
                else:
                    b2, r2 = base, rest | (1 << rel)
                seen = len(cache)
                cache.add((b2, r2, s2))
                if len(cache) != seen:
                    top = (entry, state, base, rest, top, 0 if top is None else top[5] + 1)
                    state, base, rest = s2, b2, r2
                    # lift the call, then its return
                    p, q = prv[entry], nxt[entry]
                    nxt[p] = q
                    prv[q] = p
                    ret = match[entry]
                    p, q = prv[ret], nxt[ret]
                    nxt[p] = q
                    if q != -1:
                        prv[q] = p
                    entry = nxt[0]
                    continue
            entry = nxt[entry]
        else:
            depth = -1 if top is None else top[5]
            if depth > best:
                best, best_top, best_state, best_blocked = depth, top, state, entry
            if top is None:
                res.verdict = "illegal"
                res.steps = steps
                budget.steps_left = limit - steps
                res.partial = [ops[node_op[c]] for c in _chain(best_top)]
                res.state = best_state
                res.blocked = ops[node_op[best_blocked]]
                return
            entry, state, base, rest, top, _ = top
            # unlift: the return first, then the call (reverse of lift)
            ret = match[entry]
            p, q = prv[ret], nxt[ret]
            nxt[p] = ret
            if q != -1:
                prv[q] = ret
            p, q = prv[entry], nxt[entry]
            nxt[p] = entry
            prv[q] = entry
            entry = nxt[entry]
    res.verdict = "ok"
    res.steps = steps
    budget.steps_left = limit - steps
    res.witness = [ops[node_op[c]] for c in _chain(top)]


def _chain(top: tuple | None) -> list[int]:
    """The call nodes on a stack chain, bottom first."""
    out = []
    while top is not None:
        out.append(top[0])
        top = top[4]
    out.reverse()
    return out


def _explain(name: str, model: Any, ops: Sequence[Operation], res: KeyResult) -> str:
    lines = [f"{name}: NOT linearizable ({getattr(model, 'name', type(model).__name__)}, "
             f"{len(ops)} operations)."]
    part = res.partial
    lines.append(f"The longest linearization found places {len(part)} of {len(ops)} "
                 "operations" + (", ending with:" if part else "."))
    for op in part[-_SHOW:]:
        lines.append(f"    {op.describe()}")
    lines.append(f"State after it: {res.state!r}")
    blocked = res.blocked
    if blocked is not None:
        lines.append(f"Then {blocked.describe()} must take effect before it returns, "
                     "but no order allows it.")
        placed = {op.id for op in part}
        pending = [op for op in ops if op.id not in placed and op.call <= blocked.ret]
        pending.sort(key=lambda op: op.call)
        if pending:
            lines.append("Operations that could go next at that point:")
            for op in pending[:_SHOW]:
                ok, _ = model.step(res.state, op)
                why = "accepted, but leads to a dead end" if ok else "rejected by the model"
                lines.append(f"    {op.describe()}: {why}")
            if len(pending) > _SHOW:
                lines.append(f"    ... and {len(pending) - _SHOW} more")
    return "\n".join(lines)
