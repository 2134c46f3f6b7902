"""The nodes' apply journals (the server's ``journal`` op) as the checker's
inputs, and the raft checks that need them.

A journal is a node's record of every log entry it applied since it started:
``(index, digest)`` per command entry, no-op ranges (barriers, configuration
changes) and snapshot restores (see ``canonical_raft.server.Journal``). From
them:

* ``replica_divergence``: per node, consecutive indices; across nodes (and
  across one node's restarts), the same digest at the same index;
* the committed log, as ``LogEntry`` records, from the journal of the node
  that covers the most (a complete one starts at index 1, no snapshot), for
  ``lost_writes`` and ``duplicate_applies``;
* ``at_index``: every acknowledged write is in the entry at the index its reply
  gave (an entry may hold several commands: the core batches them);
* ``index_order``: real-time order against the reported indices.

A journal lives in its server process. With snapshots on, a restarted node
replays only what follows its snapshot, so after a restart-all no live
process may hold the head of the log: ``Harvester`` fetches every member's
journal incrementally during the run (periodically, and just before the
nemesis kills or removes a node) and keeps one journal per process. The
committed log is then the union of all of them (``merged_log``); indices no
journal recorded (applied and covered by a snapshot between a node's last
harvest and its death) are reported as a figure, and the acknowledged writes
at those indices are left to the linearizability check and the final reads.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable, Iterable, Mapping

from ..checker import LogEntry, Operation
from ..checker.history import OK
from ..checker.raft_checks import (duplicate_applies, index_order, lost_writes,
                                   replica_divergence)

__all__ = ["journal_tuples", "committed_log", "merged_log", "check_with_journals",
           "fetch_journals", "Harvester"]

#: Commands of one entry get LogEntry indices ``index * BATCH + k``: the
#: checker's log wants one command per index, the core puts several in one.
BATCH = 1024


def journal_tuples(journal: Mapping[str, Any]) -> list[tuple]:
    """One node's journal as ``replica_divergence`` wants it:
    ``(index, term, digest)``; ``(index, None, None)`` for a restore; no-op
    entries get the digest ``"noop"``."""
    out: list[tuple] = []
    for rec in journal["entries"]:
        if "restore" in rec:
            if rec["restore"] is not None:
                out.append((rec["restore"], None, None))
        elif "noop" in rec:
            first, last = rec["noop"]
            out += [(i, None, "noop") for i in range(first, last + 1)]
        else:
            out.append((rec["index"], None, rec["digest"]))
    return out


def _as_op(cmd: dict) -> tuple[str, Any, Any] | None:
    """A KVStore command as the history's (f, key, value)."""
    op = cmd.get("op")
    if op == "set":
        return "write", cmd.get("k"), cmd.get("v")
    if op == "cas":
        return "cas", cmd.get("k"), (cmd.get("e"), cmd.get("v"))
    return None


def _complete(journal: Mapping[str, Any]) -> bool:
    """Starts at index 1, nothing dropped, no restore."""
    entries = journal["entries"]
    if journal.get("first", 0) != 0 or not entries:
        return False
    if any("restore" in rec for rec in entries):
        return False
    head = entries[0]
    return (head.get("noop") or [head.get("index")])[0] == 1


def committed_log(journal: Mapping[str, Any]) -> tuple[list[LogEntry], dict[int, set]]:
    """The commands a complete journal (taken with ``commands=True``) applied:
    LogEntry records (synthetic indices, see BATCH; deduplicated retries left
    out) and, per real index, the set of (f, key, value) of its commands."""
    log: list[LogEntry] = []
    at: dict[int, set] = {}
    for rec in journal["entries"]:
        if "index" not in rec:
            continue
        for k, c in enumerate(rec.get("commands") or ()):
            cmd = c.get("cmd") or {}
            fkv = _as_op(cmd)
            if fkv is None:
                continue
            at.setdefault(rec["index"], set()).add(fkv)
            if c.get("dup"):
                continue   # a retry the KVStore recognised: not applied again
            log.append(LogEntry(rec["index"] * BATCH + k, *fkv,
                                id=(cmd.get("c"), cmd.get("s"))))
    return log, at


def merged_log(journals: Iterable[Mapping[str, Any]]) -> tuple[dict, list[int]]:
    """The union of journals (any processes' records of the same log) as one
    journal from index 1, and the indices up to the highest recorded that no
    journal covers."""
    commands: dict[int, dict] = {}
    covered: set[int] = set()
    for journal in journals:
        for rec in journal["entries"]:
            if "noop" in rec:
                covered.update(range(rec["noop"][0], rec["noop"][1] + 1))
            elif "index" in rec:
                covered.add(rec["index"])
                commands.setdefault(rec["index"], rec)
    last = max(covered, default=0)
    gaps = [i for i in range(1, last + 1) if i not in covered]
    return {"first": 0, "last_index": last,
            "entries": [commands[i] for i in sorted(commands)]}, gaps


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, (list, tuple)) else value


def check_with_journals(ops: list[Operation], journals: Mapping[Any, Mapping[str, Any]],
                        *, merge: bool = False, gap_figures: dict | None = None,
                        ) -> tuple[list[str], list[str]]:
    """(problems, the checks that ran) over the history and every node's journal.

    ``merge``: the committed log is the union of all journals (``merged_log``:
    for journals of processes that died along the way), not the longest
    complete one; ``gap_figures["unjournaled_indices"]`` then says how many
    indices none recorded (their writes are not checked here)."""
    checks = ["index_order"]
    problems = [str(p) for p in index_order(ops)]
    if not journals:
        return problems + ["no journal could be fetched"], checks
    checks.append("replica_divergence")
    problems += [str(p) for p in replica_divergence(
        {node: journal_tuples(j) for node, j in journals.items()})]
    complete = [j for j in journals.values() if _complete(j)]
    gaps: set[int] = set()
    if merge:   # journals of processes that died early: only their union is whole
        best, missing = merged_log(journals.values())
        gaps = set(missing)
        if gap_figures is not None:
            gap_figures["unjournaled_indices"] = len(missing)
        if not best["entries"]:
            return problems + ["the journals hold no command entry"], checks
    elif complete:
        best = max(complete, key=lambda j: j.get("last_index", 0))
    else:
        return problems + ["no node's journal covers the whole log"], checks
    log, at = committed_log(best)
    checks += ["lost_writes", "duplicate_applies", "at_index"]
    if gaps:   # writes acknowledged at an index no journal recorded: not checkable here
        ops = [op for op in ops if op.index not in gaps]
    # Indices are matched by at_index below (the log's are synthetic).
    plain = [dataclasses.replace(op, index=None) for op in ops]
    problems += [str(p) for p in lost_writes(plain, log)]
    problems += [str(p) for p in duplicate_applies(log)]
    for op in ops:
        if op.status == OK and op.f != "read" and op.index is not None:
            if (op.f, op.key, _hashable(op.value)) not in at.get(op.index, ()):
                problems.append(f"[lost-write] {op.describe()} was acknowledged at index "
                                f"{op.index}, but that entry holds "
                                f"{sorted(map(repr, at.get(op.index, ())))}")
    return problems, checks


def fetch_journals(client: Any, nodes: Iterable[int], timeout: float, *,
                   commands: bool = True) -> tuple[dict, list[str]]:
    """Every node's journal through ``client.journal``; problems for the
    nodes that gave none."""
    journals, problems = {}, []
    for node in nodes:
        try:
            journals[node] = client.journal(node, commands=commands, timeout=timeout)
        except (OSError, ValueError) as exc:
            problems.append(f"node {node}: no journal: {exc!r}")
    return journals, problems


class Harvester:
    """Every process's journal, fetched incrementally (``harvest``), kept per
    process: ``journals()`` maps ``"<node>/<pid>"`` to a journal.

    ``request(node, request, timeout)`` sends one client request (no retry);
    ``processes()`` names the live processes, ``{node: pid}``. Thread-safe."""

    def __init__(self, request: Callable[[int, dict, float], dict],
                 processes: Callable[[], dict[int, int]], timeout: float = 2.0) -> None:
        self._request = request
        self._processes = processes
        self._timeout = timeout
        self._lock = threading.Lock()
        self._journals: dict[str, dict] = {}
        self._next: dict[str, int] = {}
        self.failures = 0

    def harvest(self, nodes: Iterable[int] | None = None) -> None:
        """Fetch what the live processes of ``nodes`` (default: all) journaled
        since the last harvest. A node that does not answer is skipped."""
        with self._lock:
            for node, pid in self._processes().items():
                if nodes is not None and node not in nodes:
                    continue
                key = f"{node}/{pid}"
                try:
                    while True:
                        start = self._next.get(key, 0)
                        reply = self._request(node, {"op": "journal", "from": start,
                                                     "limit": 10_000, "commands": True},
                                              self._timeout)
                        if "error" in reply:
                            raise ValueError(reply["error"])
                        journal = self._journals.setdefault(
                            key, {"first": reply["first"], "entries": []})
                        journal["entries"] += reply["entries"]
                        journal["last_index"] = reply["last_index"]
                        self._next[key] = reply["next"]
                        if reply["next"] >= reply["end"] or not reply["entries"]:
                            break
                except (OSError, ValueError, KeyError):
                    self.failures += 1

    def journals(self) -> dict[str, dict]:
        with self._lock:
            return {k: {**j, "entries": list(j["entries"])} for k, j in self._journals.items()}
