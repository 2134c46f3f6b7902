"""A linearizability checker for histories recorded against a Raft service.

Record a history (``history.Event``, one JSON line each), then::

    from canonical_raft.checker import CASRegister, check_history, load_operations

    result = check_history(load_operations("history.jsonl"), CASRegister(),
                           time_limit=30)
    result.verdict       # 'ok', 'illegal' or 'unknown' (never 'ok' on a budget overrun)
    result.explanation   # why, with the longest partial linearization on 'illegal'

Each key is checked on its own against the model. ``raft_checks`` holds the
cheaper checks that the raft index and the committed log allow (lost writes,
duplicate applies, diverging replicas, real-time order); run them first.
See docs/checker.md.
"""

from __future__ import annotations

from .history import (Event, HistoryError, Operation, load, load_operations, pair,
                      save)
from .linearizable import KeyResult, Result, check_history
from .models import AppendList, CASRegister, Counter, KeyMap, Model, Register
from .raft_checks import LogEntry, Problem, RaftResult, check_raft, resolve_indeterminate

__all__ = [
    "AppendList", "CASRegister", "Counter", "Event", "HistoryError", "KeyMap", "KeyResult",
    "LogEntry", "Model", "Operation", "Problem", "RaftResult", "Register", "Result",
    "check_history", "check_raft", "load", "load_operations", "pair",
    "resolve_indeterminate", "save",
]
