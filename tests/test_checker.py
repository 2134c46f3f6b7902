"""The linearizability checker and the raft checks, on histories with known verdicts.

* hand-made histories (the textbook cases);
* random histories valid by construction: a real register is simulated, each
  operation takes effect at a random point inside its own interval: all must pass;
* the same histories perturbed (one read made impossible): all must fail;
* budgets and open-operation limits give 'unknown', never 'ok';
* throughput: 10 keys x 1,000 operations, 5 clients per key.
"""

from __future__ import annotations

import dataclasses
import io
import math
import random
import time

import pytest

from canonical_raft.checker import (AppendList, CASRegister, Counter, Event, HistoryError,
                                    KeyMap, LogEntry, Register, check_history, check_raft,
                                    load, load_operations, pair, resolve_indeterminate,
                                    save)
from canonical_raft.checker.raft_checks import (duplicate_applies, index_order,
                                                lost_writes, replay, replica_divergence)

# ------------------------------------------------------------------ helpers


def H(*rows, key="x"):
    """Events from compact rows ``(process, type, f, value, t)``."""
    return [Event(process=p, type=ty, f=f, t=t, key=key, value=v) for p, ty, f, v, t in rows]


def op(p, f, call, ret, value=None, out=None, key="x", info=False):
    """Invoke + completion events for one operation (``ret`` ignored when info)."""
    ev = [Event(p, "invoke", f, call, key, value)]
    if info:
        ev.append(Event(p, "info", f, ret, key, value))
    else:
        ev.append(Event(p, "ok", f, ret, key, out if f == "read" else value))
    return ev


def hist(*ops):
    events = [e for o in ops for e in o]
    events.sort(key=lambda e: (e.t, e.type != "invoke"))
    return events


def verdict(events, model=None, **kw):
    return check_history(pair(events), model or CASRegister(), **kw).verdict


# ------------------------------------------------------------------ history format


def test_pair_fail_is_dropped_and_info_is_open():
    ev = hist(op(1, "write", 0, 10, 1), [Event(2, "invoke", "write", 1, "x", 2),
                                         Event(2, "fail", "write", 5, "x", 2)],
              op(3, "write", 2, 8, 3, info=True), [Event(4, "invoke", "read", 20, "x")])
    ops = pair(ev)
    assert [o.process for o in ops] == [1, 3, 4]
    assert ops[0].status == "ok" and ops[0].ret == 10
    assert ops[1].indeterminate and ops[1].ret == math.inf
    assert ops[2].indeterminate            # never completed: counts as info
    assert [o.id for o in ops] == [0, 1, 2]


@pytest.mark.parametrize("events, message", [
    ([Event(1, "invoke", "read", 0), Event(1, "invoke", "read", 1)], "still open"),
    ([Event(1, "ok", "read", 0)], "no open invoke"),
    ([Event(1, "invoke", "read", 0), Event(1, "info", "read", 1),
      Event(1, "invoke", "read", 2)], "new process id"),
    ([Event(1, "invoke", "read", 0), Event(1, "ok", "write", 1)], "does not match"),
    ([Event(1, "invoke", "read", 5), Event(1, "ok", "read", 1)], "before its invoke"),
    ([Event(1, "begin", "read", 5)], "unknown type"),
])
def test_pair_rejects_malformed_histories(events, message):
    with pytest.raises(HistoryError, match=message):
        pair(events)


def test_jsonl_round_trip_freezes_lists():
    ev = [Event(1, "invoke", "cas", 0, "k", [1, 2]), Event(1, "ok", "cas", 5, "k", [1, 2],
                                                           index=7, node=2),
          Event(2, "invoke", "read", 6, "l"), Event(2, "ok", "read", 9, "l", ["a", ["b"]])]
    buf = io.StringIO()
    save(ev, buf)
    assert buf.getvalue().count("\n") == 4
    back = load(io.StringIO(buf.getvalue() + "\n"))
    assert back[1].value == (1, 2) and back[1].index == 7 and back[1].node == 2
    assert back[3].value == ("a", ("b",))
    ops = load_operations(io.StringIO(buf.getvalue()))
    assert ops[0].value == (1, 2) and ops[1].output == ("a", ("b",))
    with pytest.raises(HistoryError, match="line 1"):
        load(io.StringIO("{not json\n"))
    with pytest.raises(HistoryError, match="'t'"):
        load(io.StringIO('{"process": 1, "type": "invoke", "f": "read"}\n'))


def test_jsonl_file(tmp_path):
    ev = hist(op(1, "write", 0, 10, 1), op(2, "read", 20, 30, out=1))
    path = str(tmp_path / "h.jsonl")
    save(ev, path)
    assert check_history(load_operations(path), Register()).verdict == "ok"


# ------------------------------------------------------------------ hand-made verdicts


def test_stale_read_after_completed_write_is_illegal():
    ev = hist(op(1, "write", 0, 10, 1), op(1, "write", 20, 30, 2), op(2, "read", 40, 50, out=1))
    res = check_history(pair(ev), Register())
    assert res.verdict == "illegal"
    assert "read 'x' -> 1" in res.explanation and "State after it: 2" in res.explanation
    kr = res.keys["x"]
    assert kr.blocked.f == "read" and kr.state == 2 and len(kr.partial) == 2


@pytest.mark.parametrize("seen", [None, 1])
def test_concurrent_write_and_read_either_way(seen):
    ev = hist(op(1, "write", 0, 100, 1), op(2, "read", 10, 20, out=seen))
    assert verdict(ev, Register()) == "ok"


def test_read_of_a_value_never_written_is_illegal():
    ev = hist(op(1, "write", 0, 10, 1), op(2, "read", 5, 20, out=7))
    assert verdict(ev, Register()) == "illegal"


def test_touching_intervals_count_as_concurrent():
    # the read is invoked at the instant the write returns: either order is allowed
    ev = hist(op(1, "write", 0, 10, 1), op(2, "read", 10, 20, out=None))
    assert verdict(ev, Register()) == "ok"


def test_reads_must_agree_on_one_order():
    # two concurrent writes; two later readers see them in opposite orders
    ev = hist(op(1, "write", 0, 10, 1), op(2, "write", 0, 10, 2),
              op(3, "read", 20, 30, out=1), op(4, "read", 40, 50, out=2),
              op(5, "read", 60, 70, out=1))
    assert verdict(ev, Register()) == "illegal"


def test_indeterminate_write_that_later_appears():
    ev = hist(op(1, "write", 0, 10, 1, info=True), op(2, "read", 20, 30, out=None),
              op(3, "read", 40, 50, out=1), op(4, "read", 60, 70, out=1))
    assert verdict(ev, Register()) == "ok"
    # once seen it stays: reading the old value afterwards is illegal
    ev = hist(op(1, "write", 0, 10, 1, info=True), op(3, "read", 40, 50, out=1),
              op(4, "read", 60, 70, out=None))
    assert verdict(ev, Register()) == "illegal"


def test_indeterminate_write_cannot_act_before_its_invoke():
    ev = hist(op(2, "read", 0, 10, out=1), op(1, "write", 20, 30, 1, info=True))
    assert verdict(ev, Register()) == "illegal"


def test_indeterminate_ops_that_never_appear_are_fine():
    ops = [op(i, "write", i, i + 5, 100 + i, info=True) for i in range(30)]
    ev = hist(*ops, op(99, "read", 50, 60, out=None))
    res = check_history(pair(ev), Register())
    assert res.verdict == "ok" and res.keys["x"].dropped == 30


def test_failed_write_did_not_happen():
    fail = [Event(1, "invoke", "write", 0, "x", 1), Event(1, "fail", "write", 10, "x", 1)]
    assert verdict(hist(fail, op(2, "read", 20, 30, out=None))) == "ok"
    assert verdict(hist(fail, op(2, "read", 20, 30, out=1))) == "illegal"


def test_indeterminate_read_is_dropped():
    ev = hist(op(1, "write", 0, 10, 1), op(2, "read", 20, 30, info=True),
              op(3, "read", 40, 50, out=1))
    res = check_history(pair(ev), Register())
    assert res.verdict == "ok" and res.keys["x"].dropped == 1


def test_cas_chain():
    ev = hist(op(1, "write", 0, 10, 0), op(1, "cas", 20, 30, (0, 1)),
              op(2, "cas", 25, 40, (1, 2)), op(3, "read", 50, 60, out=2))
    assert verdict(ev) == "ok"
    # the same CAS cannot succeed twice in sequence
    ev = hist(op(1, "write", 0, 10, 0), op(1, "cas", 20, 30, (0, 1)),
              op(2, "cas", 40, 50, (0, 1)))
    assert verdict(ev) == "illegal"
    # concurrent CASes: the chain fixes their order (2->3 must follow 1->2)
    ev = hist(op(1, "write", 0, 10, 1), op(2, "cas", 20, 60, (2, 3)),
              op(3, "cas", 20, 60, (1, 2)), op(4, "read", 70, 80, out=3))
    res = check_history(pair(ev), CASRegister())
    assert res.verdict == "ok"
    assert [o.value for o in res.keys["x"].witness] == [1, (1, 2), (2, 3), None]


def test_indeterminate_cas_may_or_may_not_apply():
    base = [op(1, "write", 0, 10, 1), op(2, "cas", 20, 30, (1, 2), info=True)]
    assert verdict(hist(*base, op(3, "read", 40, 50, out=2))) == "ok"
    assert verdict(hist(*base, op(3, "read", 40, 50, out=1))) == "ok"
    assert verdict(hist(*base, op(3, "read", 40, 50, out=2),
                        op(3, "read", 60, 70, out=1))) == "illegal"


def test_backtracking_finds_the_only_order():
    # five concurrent writes; reads after them pin the last one; a read during them
    # pins an earlier one. The first choices of the search are wrong.
    writes = [op(i, "write", 0, 100, i) for i in range(5)]
    ev = hist(*writes, op(10, "read", 50, 60, out=0), op(11, "read", 110, 120, out=4))
    res = check_history(pair(ev), Register())
    assert res.verdict == "ok"
    order = [o.value if o.f == "write" else ("r", o.output) for o in res.keys["x"].witness]
    assert order.index(0) < order.index(("r", 0)) < order.index(4)
    assert order[-2:] == [4, ("r", 4)]


def test_append_list():
    m = AppendList()
    a, b = op(1, "append", 0, 10, "a"), op(2, "append", 0, 10, "b")
    assert verdict(hist(a, b, op(3, "read", 20, 30, out=["b", "a"])), m) == "ok"
    assert verdict(hist(a, b, op(3, "read", 20, 30, out=["a", "b"]),
                        op(4, "read", 40, 50, out=["b", "a"])), m) == "illegal"
    assert verdict(hist(a, op(3, "read", 20, 30, out=[])), m) == "illegal"
    # an acknowledged append missing from a later read is lost
    assert verdict(hist(a, op(2, "append", 20, 30, "b"),
                        op(3, "read", 40, 50, out=["b"])), m) == "illegal"


def test_counter():
    m = Counter()
    adds = [op(i, "add", 0, 10, 1) for i in range(3)]
    assert verdict(hist(*adds, op(9, "read", 5, 6, out=2)), m) == "ok"
    assert verdict(hist(*adds, op(9, "read", 20, 30, out=2)), m) == "illegal"
    assert verdict(hist(*adds, op(8, "add", 12, 13, None, info=True),
                        op(9, "read", 20, 30, out=4)), m) == "ok"


def test_unknown_operation_raises():
    with pytest.raises(ValueError, match="no operation 'append'"):
        verdict(hist(op(1, "append", 0, 1, 5)), Register())


def test_malformed_operations_raise():
    good = pair(hist(op(1, "write", 0, 10, 1)))[0]
    with pytest.raises(ValueError, match="status 'fail'"):
        check_history([dataclasses.replace(good, status="fail")], Register())
    with pytest.raises(ValueError, match="returns before"):
        check_history([dataclasses.replace(good, ret=-1)], Register())


def test_keys_are_checked_separately_and_named():
    ev = hist(op(1, "write", 0, 10, 1, key="a"), op(2, "read", 20, 30, out=1, key="a"),
              op(3, "write", 0, 10, 5, key="b"), op(4, "read", 20, 30, out=6, key="b"))
    res = check_history(pair(ev), CASRegister())
    assert res.verdict == "illegal"
    assert res.keys["a"].verdict == "ok" and res.keys["b"].verdict == "illegal"
    assert "key 'b'" in res.explanation and "key 'a'" not in res.explanation


def test_check_history_accepts_events():
    ev = hist(op(1, "write", 0, 10, 1), op(2, "read", 20, 30, out=1))
    assert check_history(ev, KeyMap(Register())).verdict == "ok"


# ------------------------------------------------------------------ generated histories


def simulate(rng, *, keys=1, clients=4, ops_per_key=60, p_info=0.0, cas=True,
             reads=0.5, gap=20, dur=40):
    """A valid-by-construction history of a CAS register per key.

    Each client runs operations back to back; each operation takes effect at a
    random instant strictly inside its interval. Applying them to a real register
    in that order gives every result. An indeterminate operation either took
    effect or never did (chosen at random). Returns (events, log): log is the
    applied commands in effect order, with raft-like indices.
    """
    plans = []   # (lin, call, ret, key, process, kind, value, info)
    nxt_value = 1
    for k in range(keys):
        key = f"k{k}"
        n_each = [ops_per_key // clients] * clients
        for c in range(ops_per_key % clients):
            n_each[c] += 1
        for c in range(clients):
            pid = (k, c, 0)
            t = rng.randrange(gap)
            for _ in range(n_each[c]):
                call = t
                ret = call + 2 + rng.randrange(dur)
                lin = rng.uniform(call + 0.01, ret - 0.01)
                u = rng.random()
                if u < reads:
                    kind, value = "read", None
                elif cas and u < reads + (1 - reads) / 2:
                    kind, value = "cas", None      # old chosen at apply time
                else:
                    kind, value = "write", nxt_value
                    nxt_value += 1
                info = rng.random() < p_info
                plans.append([lin, call, ret, key, pid, kind, value, info])
                if info:
                    pid = (k, c, pid[2] + 1)
                t = ret + 1 + rng.randrange(gap)
    plans.sort(key=lambda p: p[0])
    state: dict = {}
    log = []
    results = {}
    for n, p in enumerate(plans):
        lin, call, ret, key, pid, kind, value, info = p
        applied = not info or rng.random() < 0.5
        cur = state.get(key)
        if kind == "cas":
            old = cur if rng.random() < 0.6 else rng.choice([cur, -5, 10 ** 6])
            new = nxt_value
            nxt_value += 1
            p[6] = value = (old, new)
            swapped = old == cur
            if applied:
                log.append(LogEntry(len(log) + 1, "cas", key, value))
                if swapped:
                    state[key] = new
            results[n] = ("ok" if swapped else "fail", value, len(log))
        elif kind == "write":
            if applied:
                state[key] = value
                log.append(LogEntry(len(log) + 1, "write", key, value))
            results[n] = ("ok", value, len(log))
        else:
            if applied:
                log.append(LogEntry(len(log) + 1, "read", key, None))
            results[n] = ("ok", cur, len(log))
    events = []
    for n, p in enumerate(plans):
        lin, call, ret, key, pid, kind, value, info = p
        typ, out, idx = results[n]
        events.append(Event(pid, "invoke", kind, call, key, value))
        if info:
            events.append(Event(pid, "info", kind, ret, key, value))
        else:
            events.append(Event(pid, typ, kind, ret, key, out, index=idx))
    events.sort(key=lambda e: (e.t, e.type != "invoke"))
    return events, log


@pytest.mark.parametrize("seed", range(60))
def test_random_valid_histories_pass(seed):
    rng = random.Random(seed)
    events, log = simulate(rng, keys=1 + seed % 3, clients=2 + seed % 5,
                           ops_per_key=40 + seed % 40, p_info=0.05 * (seed % 3))
    ops = pair(events)
    res = check_history(ops, CASRegister())
    assert res.verdict == "ok", res.explanation
    for kr in res.keys.values():      # the witness is a legal sequential order...
        m, s = CASRegister(), None
        for o in kr.witness:
            ok, s = m.step(s, o)
            assert ok
        ret_before = {o.id: o.ret for o in kr.witness}
        pos = {o.id: n for n, o in enumerate(kr.witness)}
        for a in kr.witness:          # ...that respects real time
            for b in kr.witness:
                if ret_before[a.id] < b.call:
                    assert pos[a.id] < pos[b.id]
    raft = check_raft(ops, log, model=CASRegister())
    assert raft.verdict == "ok", raft.explanation


def _stale_value(ops, read):
    """A value written (ok) by W1, overwritten by an ok W2, with W1 < W2 < read in
    real time: reading it is illegal. None if there is no such pair."""
    writes = [o for o in ops if o.key == read.key and o.status == "ok"
              and o.f in ("write", "cas")]
    for w2 in writes:
        if w2.ret >= read.call:
            continue
        for w1 in writes:
            if w1.ret < w2.call:
                v = w1.value if w1.f == "write" else w1.value[1]
                if v != read.output:
                    return v
    return None


@pytest.mark.parametrize("seed", range(60))
def test_perturbed_histories_fail(seed):
    rng = random.Random(1000 + seed)
    events, log = simulate(rng, keys=1 + seed % 2, clients=2 + seed % 4, ops_per_key=50,
                           p_info=0.04 * (seed % 2), gap=5)
    ops = pair(events)
    reads = [o for o in ops if o.f == "read" and o.status == "ok"]
    rng.shuffle(reads)
    if seed % 2 == 0:
        target, value = reads[0], "never-written"
    else:
        target = value = None
        for r in reads:
            value = _stale_value(ops, r)
            if value is not None:
                target = r
                break
        assert target is not None, "the generator gave no stale candidate"
    bad = [o if o is not target else
           type(o)(**{**o.__dict__, "output": value}) for o in ops]
    res = check_history(bad, CASRegister())
    assert res.verdict == "illegal", res.explanation
    assert res.keys[target.key].verdict == "illegal"
    # the raft replay sees the same lie
    rr = check_raft(bad, log, model=CASRegister())
    assert rr.verdict == "illegal" and any(p.kind == "result" for p in rr.problems)


@pytest.mark.parametrize("seed", range(15))
def test_keymap_without_partition_agrees(seed):
    rng = random.Random(5000 + seed)
    events, _ = simulate(rng, keys=2, clients=2, ops_per_key=8, p_info=0.1)
    ops = pair(events)
    if seed % 2:
        reads = [o for o in ops if o.f == "read" and o.status == "ok"]
        ops = [type(o)(**{**o.__dict__, "output": "bogus"}) if o is reads[0] else o
               for o in ops]
    whole = check_history(ops, KeyMap(CASRegister()), partition=False, max_open=None)
    split = check_history(ops, KeyMap(CASRegister()))
    assert whole.verdict == split.verdict == ("illegal" if seed % 2 else "ok")


# ------------------------------------------------------------------ budgets


def _hard_history():
    rng = random.Random(7)
    events, _ = simulate(rng, keys=1, clients=6, ops_per_key=600, reads=0.6, gap=2)
    return pair(events)


def test_step_budget_gives_unknown():
    res = check_history(_hard_history(), CASRegister(), max_steps=50)
    assert res.verdict == "unknown"
    assert "budget" in res.explanation and res.steps <= 60


def test_time_budget_gives_unknown_not_ok():
    ops = _hard_history()
    assert check_history(ops, CASRegister()).verdict == "ok"
    res = check_history(ops, CASRegister(), time_limit=0.0)
    assert res.verdict == "unknown"


def test_spent_budget_leaves_later_keys_unknown():
    rng = random.Random(3)
    events, _ = simulate(rng, keys=4, clients=3, ops_per_key=300)
    res = check_history(pair(events), CASRegister(), max_steps=400)
    assert res.verdict == "unknown"
    assert any("not checked" in k.explanation for k in res.keys.values())


def test_too_many_open_operations_is_unknown():
    # 25 concurrent writes, all observed (so none can be dropped)
    ops = [op(i, "write", 0, 100, i) for i in range(25)]
    reads = [op(100 + i, "read", 50, 60, out=i) for i in range(25)]
    res = check_history(pair(hist(*ops, *reads)), Register())
    assert res.verdict == "unknown" and "max_open=20" in res.explanation
    assert res.keys["x"].max_open == 50


def test_illegal_on_one_key_wins_over_unknown_on_another():
    ops = [op(i, "write", 0, 100, i, key="big") for i in range(25)]
    reads = [op(100 + i, "read", 50, 60, out=i, key="big") for i in range(25)]
    bad = [op(201, "write", 0, 10, 1, key="small"),
           op(202, "read", 20, 30, out=2, key="small")]
    res = check_history(pair(hist(*ops, *reads, *bad)), Register())
    assert res.verdict == "illegal" and "1 other key(s) unknown" in res.explanation


# ------------------------------------------------------------------ raft checks


def _ok(p, f, call, ret, value=None, out=None, index=None, key="x"):
    return [Event(p, "invoke", f, call, key, value),
            Event(p, "ok", f, ret, key, out if f == "read" else value, index=index)]


def test_index_order():
    good = pair(hist(_ok(1, "write", 0, 10, 1, index=5), _ok(2, "read", 20, 30, out=1,
                                                              index=5),
                     _ok(3, "write", 40, 50, 2, index=6), _ok(4, "write", 45, 60, 3, index=4)))
    # write 3 at index 4 overlaps write 2 only, but it follows write 1 (index 5)
    probs = index_order(good)
    assert len(probs) == 1 and probs[0].kind == "order" and probs[0].ops[1].value == 3
    assert index_order(good[:3]) == []
    # a write may not share the index of an earlier op
    same = pair(hist(_ok(1, "write", 0, 10, 1, index=5), _ok(2, "write", 20, 30, 2, index=5)))
    assert [p.kind for p in index_order(same)] == ["order"]


def test_lost_and_duplicate_writes():
    ops = pair(hist(_ok(1, "write", 0, 10, 1, index=1), _ok(2, "write", 20, 30, 2, index=2),
                    _ok(3, "write", 40, 50, 3)))
    log = [LogEntry(1, "write", "x", 1), LogEntry(2, "write", "x", 99)]
    probs = lost_writes(ops, log)
    assert [p.kind for p in probs] == ["lost-write", "lost-write"]
    assert "index 2" in probs[0].message and "not in the log" in probs[1].message
    dup = [LogEntry(1, "write", "x", 1), LogEntry(2, "write", "x", 1),
           LogEntry(3, "read", "x", None), LogEntry(4, "read", "x", None),
           LogEntry(4, "write", "x", 5)]
    assert [p.kind for p in duplicate_applies(dup)] == ["duplicate", "divergence"]
    by_id = [LogEntry(1, "add", "c", 1, id=("c1", 1)), LogEntry(2, "add", "c", 1, id=("c1", 2))]
    assert duplicate_applies(by_id) == []


def test_replica_divergence():
    a = [(1, 1, "h1"), (2, 1, "h2"), (3, 2, "h3")]
    assert replica_divergence({"a": a, "b": a[:2]}) == []
    kinds = [p.kind for p in replica_divergence({"a": a, "b": [(1, 1, "h1"), (2, 1, "hX")]})]
    assert kinds == ["divergence"]
    assert [p.kind for p in replica_divergence({"a": [(1, 1, "h1"), (3, 2, "h3")]})] == ["gap"]
    # a restart restores a snapshot at 1 and re-applies 2..3: fine if identical
    restart = a + [(1, 1, None), (2, 1, "h2"), (3, 2, "h3")]
    assert replica_divergence({"a": restart, "c": [(2, 1, None), (3, 2, "h3")]}) == []
    assert [p.kind for p in replica_divergence({"a": a + [(2, 1, "h2")]})] == ["divergence"]


def test_replay_and_read_index():
    ops = pair(hist(_ok(1, "write", 0, 10, 1, index=1), _ok(2, "cas", 20, 30, (1, 2), index=2),
                    _ok(3, "read", 40, 50, out=2, index=2),       # served at read index 2
                    _ok(4, "read", 60, 70, out=2, index=3)))      # a read in the log
    log = [LogEntry(1, "write", "x", 1), LogEntry(2, "cas", "x", (1, 2)),
           LogEntry(3, "read", "x", None)]
    assert replay(ops, log, CASRegister()) == []
    bad_log = [LogEntry(1, "write", "x", 1), LogEntry(2, "cas", "x", (7, 2)),
               LogEntry(3, "read", "x", None)]
    kinds = {p.kind for p in check_raft(ops, bad_log, model=CASRegister()).problems}
    assert kinds == {"lost-write", "result"}


def test_resolve_indeterminate_drops_writes_the_log_never_had():
    ops = [op(i, "write", 0, 100, i, info=True) for i in range(30)]
    reads = [op(100 + i, "read", 50 + 2 * i, 51 + 2 * i, out=i) for i in range(30)]
    history = pair(hist(*ops, *reads))
    assert check_history(history, Register()).verdict == "unknown"
    log = [LogEntry(1, "write", "x", 0), LogEntry(2, "write", "x", 1),
           LogEntry(3, "write", "x", 2)]
    resolved = resolve_indeterminate(history, log)
    assert len(resolved) == 33 and {o.index for o in resolved if o.f == "write"} == {1, 2, 3}
    # now decidable: the reads of values 3.. saw writes the log says never happened
    assert check_history(resolved, Register()).verdict == "illegal"


# ------------------------------------------------------------------ throughput


def test_throughput_10_keys_x_1000_ops(capsys):
    rng = random.Random(42)
    events, log = simulate(rng, keys=10, clients=5, ops_per_key=1000, p_info=0.01)
    ops = pair(events)
    t0 = time.perf_counter()
    res = check_history(ops, CASRegister(), time_limit=60)
    dt = time.perf_counter() - t0
    assert res.verdict == "ok", res.explanation
    t1 = time.perf_counter()
    rr = check_raft(ops, log, model=CASRegister())
    dt2 = time.perf_counter() - t1
    assert rr.verdict == "ok", rr.explanation
    with capsys.disabled():
        print(f"\n  checker: {len(ops)} ops in {dt:.2f} s = {len(ops) / dt:,.0f} ops/s "
              f"({res.steps} steps, max open {max(k.max_open for k in res.keys.values())}); "
              f"raft checks: {len(ops) / dt2:,.0f} ops/s")
    assert dt < 20


# ------------------------------------------------------------------ against brute force


def _brute_force(ops, model):
    """Linearizable? by trying every order that respects real time (tiny histories)."""
    def go(left, state):
        if not left:
            return True
        for o in left:
            if any(p.ret < o.call for p in left if p is not o):
                continue      # something still pending had to come first
            ok, s2 = model.step(state, o)
            if ok and go([p for p in left if p is not o], s2):
                return True
        return False
    return go(list(ops), model.init())


def _random_small(rng, n, kinds, unique=False):
    """Random tiny histories, mostly not linearizable. With ``unique``, every
    write puts a new value and reads return one of them (or None)."""
    events, pid = [], 0
    pool = [None, 0, 1, 2]
    if unique:
        pool = [None] + [10 + i for i in range(n)]
    for i in range(n):
        call = rng.randrange(20)
        ret = call + 1 + rng.randrange(10)
        f = rng.choice(kinds)
        new = 10 + i if unique else rng.randrange(3)
        value = {"read": None, "write": new, "cas": (rng.choice(pool), new)}[f]
        events.append(Event(pid, "invoke", f, call, "x", value))
        typ = rng.choice(["ok", "ok", "info"] if unique else ["ok", "ok", "ok", "info"])
        out = rng.choice(pool) if f == "read" else value
        events.append(Event(pid, typ, f, ret, "x", out))
        pid += 1
    events.sort(key=lambda e: (e.t, e.type != "invoke"))
    return pair(events)


@pytest.mark.parametrize("unique", [False, True])
@pytest.mark.parametrize("model, kinds", [(Register(), ["read", "write"]),
                                          (CASRegister(), ["read", "write", "cas"])])
def test_agrees_with_brute_force_on_random_small_histories(model, kinds, unique):
    rng = random.Random(11)
    counts = {"ok": 0, "illegal": 0}
    for _ in range(300):
        ops = _random_small(rng, rng.randrange(1, 8), kinds, unique)
        expected = "ok" if _brute_force(ops, model) else "illegal"
        got = check_history(ops, model).verdict
        assert got == expected, "\n".join(o.describe() for o in ops)
        counts[got] += 1
    assert min(counts.values()) > 30     # both verdicts well represented


def _random_small_list(rng, n, counter):
    """Tiny append-list (or counter) histories; reads return prefixes of one
    random order of the appends (or small numbers), so both verdicts occur."""
    events = []
    order = list(range(n))
    rng.shuffle(order)
    for i in range(n):
        call = rng.randrange(20)
        ret = call + 1 + rng.randrange(10)
        if rng.random() < 0.5:
            f, v = ("add", rng.choice([1, 2])) if counter else ("append", i)
            out = v
        else:
            f, v = "read", None
            out = rng.randrange(6) if counter else order[:rng.randrange(n + 1)]
        events.append(Event(i, "invoke", f, call, "x", v))
        events.append(Event(i, rng.choice(["ok", "ok", "info"]), f, ret, "x", out))
    events.sort(key=lambda e: (e.t, e.type != "invoke"))
    return pair(events)


@pytest.mark.parametrize("model", [AppendList(), Counter()], ids=lambda m: m.name)
def test_list_and_counter_agree_with_brute_force(model):
    rng = random.Random(12)
    counts = {"ok": 0, "illegal": 0}
    for _ in range(300):
        ops = _random_small_list(rng, rng.randrange(1, 7), isinstance(model, Counter))
        expected = "ok" if _brute_force(ops, model) else "illegal"
        got = check_history(ops, model).verdict
        assert got == expected, "\n".join(o.describe() for o in ops)
        counts[got] += 1
    assert min(counts.values()) > 30
