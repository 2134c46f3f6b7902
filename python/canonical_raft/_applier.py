"""The applier: the Python thread that applies committed entries to the FSM
and resolves futures, taking the core's items in batches (one GIL acquisition
per batch, never on the loop thread)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from . import _core, identity
from ._codec import decode_snapshot, encode_snapshot
from .errors import ShutdownError, error_from_code
from .types import Leader

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("canonical_raft")
trace_log = logging.getLogger("canonical_raft.libraft")

_K = _core.items
COMMAND, APPLY_FAILED, REQUEST_DONE = _K["COMMAND"], _K["APPLY_FAILED"], _K["REQUEST_DONE"]
RESTORE, SNAPSHOT, EVENT, LOG, CLOSED = (_K["RESTORE"], _K["SNAPSHOT"], _K["EVENT"],
                                        _K["LOG"], _K["CLOSED"])
ADVANCE = _K["ADVANCE"]
_TRACE_LEVELS = {1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO, 4: logging.DEBUG,
                 5: logging.DEBUG}


def run(node: Node, initial: list, started: list) -> None:
    """The applier thread. It first restores the snapshot raft_start loaded (the
    head of ``initial``) and reports to start() through ``started`` (an
    exception, or None) and node._restored, so a damaged snapshot fails start()."""
    core = node._core
    items = initial
    try:
        while items and items[0][0] == RESTORE:
            _restore(node, items.pop(0))
    except BaseException as exc:
        started.append(exc)
        node._restored.set()
        return
    started.append(None)
    node._restored.set()
    while True:
        if not items:
            items = core.drain(250)
            if items is None:
                return
        if not process(node, items):
            return
        items = None


def process(node: Node, items: list) -> bool:
    """Handle one batch of core items; False once the node is closed."""
    for item in items:
        kind = item[0]
        try:
            if kind == COMMAND:
                _apply(node, item)
            elif kind == APPLY_FAILED:
                _apply_failed(node, item)
            elif kind == REQUEST_DONE:
                _request_done(node, item)
            elif kind == RESTORE:
                _restore(node, item)
            elif kind == SNAPSHOT:
                _snapshot(node, item)
            elif kind == EVENT:
                _event(node, item)
            elif kind == ADVANCE:
                if item[1] > node._applied:
                    node._applied = item[1]
            elif kind == LOG:
                trace_log.log(_TRACE_LEVELS.get(item[1], logging.DEBUG), "node %d: %s",
                              node.id, item[2])
            elif kind == CLOSED:
                _closed(node)
                return False
        except BaseException as exc:  # FSM.restore failed, or a bug of ours
            _degrade(node, exc)
    return True


def _degrade(node: Node, exc: BaseException) -> None:
    """The FSM can no longer follow the log (its restore failed) or the applier
    hit a bug: close the node so the cluster stops counting on it, and fail what
    waits, rather than apply further entries to an unknown state."""
    if node._broken is None:
        node._broken = exc
        log.critical("node %d: the FSM cannot follow the log any more; closing the node",
                     node.id, exc_info=exc)
        node._core.request_close()


def _apply(node: Node, item: tuple) -> None:
    _, index, mine, cmds = item
    if node._broken is not None:
        _fail_mine(node, cmds if mine else None)
        return
    if cmds is None:
        log.error("node %d: log entry %d is not a canonical-raft command; skipped",
                  node.id, index)
        node._applied = index
        return
    fsm_apply = identity.apply_hook(node, index)  # our reserved records never reach the FSM
    pending = node._pending
    for rid, data in cmds:
        try:
            result = fsm_apply(data)
            failed = None
        except Exception as exc:
            failed = exc
            log.error("node %d: FSM.apply raised at index %d (the entry counts as applied)",
                      node.id, index, exc_info=True)
        if mine:
            fut = pending.pop(rid, None)
            if fut is not None:
                fut.index = index
                if failed is None:
                    fut.set_result(result)
                else:
                    fut.set_exception(failed)
    node._applied = index


def _fail_mine(node: Node, cmds: list | None) -> None:
    for rid, _data in cmds or ():
        fut = node._pending.pop(rid, None)
        if fut is not None:
            fut.set_exception(ShutdownError("the node's FSM failed; the command was committed "
                                            "but not applied here", indeterminate=True))


def _apply_failed(node: Node, item: tuple) -> None:
    _, code, msg, ids, indeterminate, leader_id, leader_address, applied = item
    pending = node._pending
    for rid in ids:
        fut = pending.pop(rid, None)
        if fut is not None:
            fut.set_exception(error_from_code(code, msg, indeterminate=indeterminate,
                                              leader_id=leader_id,
                                              leader_address=leader_address))
    node._applied = max(node._applied, applied)


def _request_done(node: Node, item: tuple) -> None:
    _, rid, code, msg, leader_id, leader_address, applied = item
    node._applied = max(node._applied, applied)
    entry = node._requests.pop(rid, None)
    if entry is None:
        return
    fut, on_success = entry
    if code != 0:
        fut.set_exception(error_from_code(code, msg, leader_id=leader_id,
                                          leader_address=leader_address))
        return
    try:
        on_success(fut, leader_id)
    except Exception as exc:  # a follow-up step could not be submitted
        if not fut.done():
            fut.set_exception(exc)


def _restore(node: Node, item: tuple) -> None:
    _, index, data = item
    if node._broken is not None:
        return
    node._fsm.restore(decode_snapshot(data))
    if index:
        node._applied = index
    node._snapshots_restored += 1


def _snapshot(node: Node, item: tuple) -> None:
    ticket = item[1]
    if node._broken is not None:
        node._core.snapshot_done(ticket, None)
        return
    try:
        data = node._fsm.snapshot()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"FSM.snapshot() must return bytes, not {type(data).__name__}")
        data = encode_snapshot(bytes(data), node._config.snapshot_compression)
    except Exception:
        log.error("node %d: FSM.snapshot raised; the snapshot is skipped", node.id,
                  exc_info=True)
        node._core.snapshot_done(ticket, None)
        return
    node._core.snapshot_done(ticket, data)
    node._snapshots_taken += 1


def _event(node: Node, item: tuple) -> None:
    _, state, term, leader_id, leader_address, applied, self_role = item
    node._applied = max(node._applied, applied)
    leader = Leader(leader_id, leader_address) if leader_id else None
    node._events.publish(node._leadership_event(state, term, leader, self_role))


def _closed(node: Node) -> None:
    # Flag first, then empty: a concurrent apply() inserts, then checks the flag,
    # so one of the two always fails its future (see Node._track).
    node._applier_done = True
    for table in (node._pending, node._requests):
        while table:
            _, entry = table.popitem()
            fut = entry[0] if isinstance(entry, tuple) else entry
            if not fut.done():
                fut.set_exception(ShutdownError("node closed before the outcome was known",
                                                indeterminate=True))
    node._events.publish(None)
