"""The applier: the Python thread that applies committed entries to the FSM
and resolves futures, taking the core's items in batches (one GIL acquisition
per batch, never on the loop thread). Between batches it takes snapshots
(_snapshots.py); the loop thread never waits for it."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from . import _core, futures, identity
from ._codec import decode_snapshot
from .errors import ShutdownError, error_from_code
from .types import Leader

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("canonical_raft")
trace_log = logging.getLogger("canonical_raft.libraft")

_K = _core.items
COMMAND, APPLY_FAILED, REQUEST_DONE = _K["COMMAND"], _K["APPLY_FAILED"], _K["REQUEST_DONE"]
RESTORE, SNAPSHOT_DONE, EVENT, LOG, CLOSED = (_K["RESTORE"], _K["SNAPSHOT_DONE"],
                                             _K["EVENT"], _K["LOG"], _K["CLOSED"])
ADVANCE = _K["ADVANCE"]
_core.set_reserved_prefix(identity.RECORD_PREFIX)  # drain flags entries holding our records
_resolve = futures.Future._resolve
_TRACE_LEVELS = {1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO, 4: logging.DEBUG,
                 5: logging.DEBUG}


def run(node: Node, initial: list, started: list) -> None:
    """The applier thread. It first restores the snapshot raft_start loaded (in
    ``initial``, after any libraft trace lines) and reports to start() through
    ``started`` (an exception, or None) and node._restored, so a damaged
    snapshot fails start()."""
    core = node._core
    items = initial
    try:
        while items and items[0][0] in (RESTORE, LOG):
            item = items.pop(0)
            if item[0] == RESTORE:
                _restore(node, item)
            else:
                _log(node, item)
    except BaseException as exc:
        started.append(exc)
        node._restored.set()
        return
    started.append(None)
    node._restored.set()
    snapshots = node._snapshots
    while True:
        if not items:
            try:
                items = core.drain(250)
            except MemoryError:
                # drain() put back what it could not convert: nothing is lost.
                log.error("node %d: out of memory taking committed entries; retrying", node.id)
                time.sleep(0.05)
                continue
            if items is None:
                return
            if node._hop_clock is not None:  # benchmark instrument (bench hops)
                node._hop_clock.append(time.monotonic_ns())
        with futures.batch():  # each event loop is woken once for the whole batch
            if not process(node, items):
                return
            if node._fwd_client is not None and node._fwd_client.waiting:
                node._fwd_client.applied(node._applied)
        items = None
        try:
            snapshots.maybe_take(node)
        except Exception as exc:  # a bug of ours: never let it stop the applier
            log.exception("node %d: taking a snapshot failed", node.id, exc_info=exc)


#: Commands applied between two offers of the GIL to other threads (an event loop
#: awaiting futures, the submitting threads): a large batch holds the GIL for
#: at most about this many FSM calls at a time, not the whole switch interval.
GIL_SLICE = 256


def _offer_gil() -> None:
    futures.wake_pending()  # the event loops get what is resolved so far
    time.sleep(0)


def process(node: Node, items: list) -> bool:
    """Handle one batch of core items; False once the node is closed."""
    for i, item in enumerate(items):
        if i and not i % GIL_SLICE:
            _offer_gil()
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
            elif kind == SNAPSHOT_DONE:
                node._snapshots.done(node, item[1], item[2], item[3])
            elif kind == EVENT:
                _event(node, item)
            elif kind == ADVANCE:
                if item[1] > node._applied:
                    node._applied = item[1]
            elif kind == LOG:
                _log(node, item)
            elif kind == CLOSED:
                _closed(node)
                return False
        except BaseException as exc:  # FSM.restore failed, or a bug of ours
            _degrade(node, exc)
    return True


def _log(node: Node, item: tuple) -> None:
    trace_log.log(_TRACE_LEVELS.get(item[1], logging.DEBUG), "node %d: %s", node.id, item[2])


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
    """One committed entry: its commands to the FSM, in order, and the futures
    of those this node proposed resolved (the hot path: one call per command)."""
    _, index, mine, cmds, reserved = item
    if node._broken is not None:
        _fail_mine(node, cmds if mine else None)
        return
    if cmds is None:
        log.error("node %d: log entry %d is not a canonical-raft command; skipped",
                  node.id, index)
        node._applied = index
        return
    # Our reserved records never reach the FSM; most entries hold none.
    fsm_apply = identity.apply_hook(node, index) if reserved else node._fsm.apply
    if not mine:
        for data in cmds[1::2]:
            try:
                fsm_apply(data)
            except Exception:
                log.error("node %d: FSM.apply raised at index %d (the entry counts as applied)",
                          node.id, index, exc_info=True)
        node._applied = index
        return
    pop = node._pending.pop
    released = released_bytes = 0
    # cmds is flat: request id, command, request id, command...
    step = 2 * GIL_SLICE
    slices = (cmds,) if len(cmds) <= step else \
        [cmds[i:i + step] for i in range(0, len(cmds), step)]
    for k, part in enumerate(slices):
        if k:
            _offer_gil()  # between slices of a large entry
        pairs = iter(part)
        for rid, data in zip(pairs, pairs):  # zip reuses its tuple: no allocation
            try:
                result = fsm_apply(data)
                failed = None
            except Exception as exc:
                result, failed = None, exc
                log.error("node %d: FSM.apply raised at index %d (the entry counts as applied)",
                          node.id, index, exc_info=True)
            fut = pop(rid, None)
            if fut is not None:
                released += 1
                released_bytes += len(data)
                fut.index = index
                _resolve(fut, result, failed)
    if released:
        node._core.release(released, released_bytes)
    node._applied = index


def _fail_mine(node: Node, cmds: list | None) -> None:
    pairs = iter(cmds or ())
    for rid, data in zip(pairs, pairs):
        fut = node._pending.pop(rid, None)
        if fut is not None:
            node._core.release(1, len(data))
            fut.set_exception(ShutdownError("the node's FSM failed; the command was committed "
                                            "but not applied here", indeterminate=True))


def _apply_failed(node: Node, item: tuple) -> None:
    _, code, msg, ids, indeterminate, leader_id, leader_address, applied = item
    pending = node._pending
    released = released_bytes = 0
    for rid in ids:
        fut = pending.pop(rid, None)
        if fut is not None:
            released += 1
            released_bytes += fut.nbytes
            fut.set_exception(error_from_code(code, msg, indeterminate=indeterminate,
                                              leader_id=leader_id,
                                              leader_address=leader_address))
    if released:
        node._core.release(released, released_bytes)
    node._applied = max(node._applied, applied)


def _request_done(node: Node, item: tuple) -> None:
    _, rid, code, msg, leader_id, leader_address, applied = item
    node._applied = max(node._applied, applied)
    entry = node._requests.pop(rid, None)
    if entry is None:
        return
    fut, on_success = entry
    if code != 0:
        # Closed while in flight: a membership change may still have committed.
        indeterminate = True if code == _core.codes["SHUTDOWN"] else None
        fut.set_exception(error_from_code(code, msg, indeterminate=indeterminate,
                                          leader_id=leader_id, leader_address=leader_address))
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
    # At start the core knows the index only once raft_start has returned.
    index = index or node._core.start_snapshot_index
    if index:
        node._applied = index
    node._snapshots.restored_at(index)


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
