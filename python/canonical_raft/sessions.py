"""Exactly-once client sessions (Raft dissertation, section 6.3).

A client that retries a command after an indeterminate outcome (a timeout, a
lost leader, a closed node) may otherwise apply it twice. Sessions prevent
that: every command carries the client's id and a sequence number, and the
state machine keeps, per client, the results of the commands it applied and
the client has not yet seen answered. A retry with the same (client, seq)
returns the cached result instead of applying again.

On the nodes, wrap your FSM::

    fsm = SessionFSM(MyFSM(), expire_after_entries=100_000)
    node = raft.Node(1, address, fsm, data_dir, cluster=cluster)

In the client (any process that holds a Node, or several)::

    session = Session(nodes)             # a Node, or a list of in-process Nodes
    result = session.call(b"command")    # blocking; retries with the same seq
    result = await session.acall(b"command")   # in asyncio

Rules (what every replica does alike, so they agree without talking):

* **Registration.** A session starts with a ``register`` entry (the helper sends
  it before the first command). A command from a client the table does not
  know is not applied: its result is ``SessionExpiredError`` (the session
  expired, or never existed). A client whose session expired starts a new one
  under a new id; the outcome of its indeterminate commands stays unknown.
* **Sequence numbers.** A client numbers its commands 1, 2, 3... and sends with
  each the lowest seq it has not yet had an answer for (``acked``). Results of
  seqs below ``acked`` are dropped from the table; a command with seq below
  ``acked`` is stale and not applied. Several commands may be in flight at once.
* **Log time.** Every session entry advances the table's clock by one
  (``clock``: session entries applied, in log order), and carries the
  proposer's wall-clock stamp in milliseconds; the table's ``now`` is the
  largest stamp applied so far, so it never goes backwards. Both are part of
  the snapshot. The local clock of a replica is never read while applying.
* **Expiry.** A session idle for more than ``expire_after_entries`` session
  entries (or, if given, ``expire_after`` seconds of log time) is dropped when
  the next session entry is applied. ``max_sessions`` bounds the table: past
  it, the least recently active session is dropped. All three happen in log
  order, identically on every replica.

Commands that do not start with ``SESSION_PREFIX`` pass through to the inner
FSM untouched (no deduplication), so a wrapped FSM still accepts plain
commands. An inner FSM may define ``apply_session(command, ctx)`` to learn the
client, seq and log time of a session command (see ``Context``); otherwise its
``apply(command)`` is called.

Cached results must be JSON values or bytes (tuples come back as lists after a
snapshot restore); anything else is cached as its ``repr``.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import logging
import struct
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import (BusyError, LeadershipLostError, NoConnectionError, NotLeaderError,
                     RaftError, ShutdownError)
from .errors import TimeoutError as RaftTimeoutError
from .fsm import FSM, Buffer

__all__ = ["SESSION_PREFIX", "Context", "Session", "SessionError", "SessionExpiredError",
           "StaleCommandError", "CommandFailedError", "SessionFSM", "SessionTable",
           "encode_command", "encode_register", "encode_unregister", "decode_command"]

log = logging.getLogger("canonical_raft.sessions")

#: Every session entry starts with these bytes, then a JSON header line, then
#: the inner command.
SESSION_PREFIX = b"\x00canonical-raft/session\x00"
_SNAPSHOT_MAGIC = b"CRSESS1\x00"


class SessionError(RaftError):
    """A session command was not applied (see the subclasses)."""


class SessionExpiredError(SessionError):
    """The client's session is not in the table (expired, or never
    registered): the command was not applied. Start a new session. An earlier
    indeterminate command of the old session may or may not have applied."""


class StaleCommandError(SessionError):
    """The command's seq is below what the client said it had answers for:
    it was not applied (a client bug, or a very late duplicate)."""


class CommandFailedError(SessionError):
    """The inner FSM raised on this command when it was first applied; this is
    the answer to a retry of it (the original exception is not kept)."""


# ------------------------------------------------------------------ encoding

def _header(fields: dict[str, Any], command: bytes = b"") -> bytes:
    return SESSION_PREFIX + json.dumps(fields, separators=(",", ":")).encode() + b"\n" + command


def encode_command(client: str, seq: int, command: bytes, *, acked: int | None = None,
                   stamp_ms: int | None = None) -> bytes:
    """One session command: ``command`` as seq ``seq`` of ``client``.
    ``acked`` (default ``seq``): the lowest seq without an answer yet."""
    if not isinstance(client, str) or not client:
        raise TypeError("client must be a non-empty str")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise ValueError(f"seq must be an int >= 1, not {seq!r}")
    acked = seq if acked is None else acked
    if not 1 <= acked <= seq:
        raise ValueError(f"acked must be in 1..seq, not {acked!r}")
    stamp = int(time.time() * 1000) if stamp_ms is None else stamp_ms
    return _header({"c": client, "s": seq, "a": acked, "t": stamp}, bytes(command))


def encode_register(client: str, *, stamp_ms: int | None = None) -> bytes:
    """Open a session for ``client`` (idempotent while it lives)."""
    stamp = int(time.time() * 1000) if stamp_ms is None else stamp_ms
    return _header({"op": "register", "c": client, "t": stamp})


def encode_unregister(client: str) -> bytes:
    """Close a session: its cached results are dropped at once."""
    return _header({"op": "unregister", "c": client, "t": 0})


def decode_command(command: bytes) -> tuple[dict[str, Any], bytes]:
    """(header, inner command) of a session entry; ValueError if malformed."""
    if not command.startswith(SESSION_PREFIX):
        raise ValueError("not a session command")
    end = command.find(b"\n", len(SESSION_PREFIX))
    if end < 0:
        raise ValueError("session command without a header line")
    header = json.loads(command[len(SESSION_PREFIX):end])
    if not isinstance(header, dict) or not isinstance(header.get("c"), str):
        raise ValueError("bad session header")
    return header, command[end + 1:]


def _encode_result(value: Any) -> Any:
    def default(obj: Any) -> Any:
        if isinstance(obj, (bytes, bytearray, memoryview)):
            return {"$bytes": base64.b64encode(bytes(obj)).decode()}
        if isinstance(obj, (set, frozenset)):
            return sorted(obj, key=repr)
        return {"$repr": repr(obj)}
    return json.loads(json.dumps(value, default=default))


def _decode_result(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and "$bytes" in value:
            return base64.b64decode(value["$bytes"])
        if len(value) == 1 and "$repr" in value:
            return value["$repr"]
        return {k: _decode_result(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_result(v) for v in value]
    return value


# ------------------------------------------------------------------ the table

@dataclass(frozen=True)
class Context:
    """What a session command's inner FSM may know besides the command: the
    client and seq, ``clock`` (session entries applied so far, this one
    included) and ``now`` (log time in seconds: the largest proposer stamp)."""

    client: str | None
    seq: int | None
    clock: int
    now: float


class _Session:
    __slots__ = ("acked", "results", "active", "active_ms")

    def __init__(self, active: int, active_ms: int) -> None:
        self.acked = 1
        self.results: dict[int, Any] = {}   # seq -> ("ok", result) | ("error", message)
        self.active = active                # clock at its last entry
        self.active_ms = active_ms          # log time at its last entry


#: lookup outcomes
NEW, DUPLICATE, STALE, UNKNOWN = "new", "duplicate", "stale", "unknown"


class SessionTable:
    """The per-client table, deterministic in log order. Not thread-safe:
    its owner (an FSM) guards it. ``implicit=True`` opens a session on the first
    command of an unknown client instead of refusing it (kv's legacy clients)."""

    def __init__(self, *, expire_after_entries: int | None = None,
                 expire_after: float | None = None, max_sessions: int | None = 100_000,
                 implicit: bool = False) -> None:
        for name, value in (("expire_after_entries", expire_after_entries),
                            ("max_sessions", max_sessions)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an int >= 1 or None, not {value!r}")
        if expire_after is not None and not expire_after > 0:
            raise ValueError(f"expire_after must be > 0 seconds or None, not {expire_after!r}")
        self.expire_after_entries = expire_after_entries
        self.expire_after_ms = None if expire_after is None else int(expire_after * 1000)
        self.max_sessions = max_sessions
        self.implicit = implicit
        self.clock = 0
        self.now_ms = 0
        self.expired = 0  # sessions dropped by expiry or the bound, over the table's life
        self._sessions: OrderedDict[str, _Session] = OrderedDict()  # least recently active first

    # ---------------------------------------------------------- log time

    def tick(self, stamp_ms: Any = None) -> None:
        """One session entry is being applied: advance the clock, expire."""
        self.clock += 1
        if isinstance(stamp_ms, int) and not isinstance(stamp_ms, bool) and \
                stamp_ms > self.now_ms:
            self.now_ms = stamp_ms
        self._expire()

    def _expire(self) -> None:
        sessions = self._sessions
        while sessions:
            client, oldest = next(iter(sessions.items()))
            idle = self.expire_after_entries is not None and \
                self.clock - oldest.active > self.expire_after_entries
            idle = idle or (self.expire_after_ms is not None and
                            self.now_ms - oldest.active_ms > self.expire_after_ms)
            if not idle:
                break
            del sessions[client]
            self.expired += 1
        # A session's log time can lag its position when stamps are skewed:
        # the entries rule is exact (positions are in clock order), the
        # seconds rule is checked at the head only, which is conservative.

    def context(self, client: str | None = None, seq: int | None = None) -> Context:
        return Context(client, seq, self.clock, self.now_ms / 1000)

    # ---------------------------------------------------------- sessions

    def _touch(self, client: str, session: _Session) -> None:
        session.active, session.active_ms = self.clock, self.now_ms
        self._sessions.move_to_end(client)

    def register(self, client: str) -> None:
        session = self._sessions.get(client)
        if session is None:
            session = self._sessions[client] = _Session(self.clock, self.now_ms)
            self._bound()
        self._touch(client, session)

    def unregister(self, client: str) -> bool:
        return self._sessions.pop(client, None) is not None

    def _bound(self) -> None:
        while self.max_sessions is not None and len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
            self.expired += 1

    def lookup(self, client: str, seq: int, acked: int) -> tuple[str, Any]:
        """Before applying (client, seq): (NEW, None), (DUPLICATE, cached),
        (STALE, None) or (UNKNOWN, None). Drops results below ``acked``."""
        session = self._sessions.get(client)
        if session is None:
            if not self.implicit:
                return UNKNOWN, None
            self.register(client)
            session = self._sessions[client]
        self._touch(client, session)
        if acked > session.acked:
            session.acked = acked
            for s in [s for s in session.results if s < acked]:
                del session.results[s]
        if seq < session.acked and seq not in session.results:
            return STALE, None
        if seq in session.results:
            return DUPLICATE, session.results[seq]
        return NEW, None

    def record(self, client: str, seq: int, outcome: tuple[str, Any]) -> None:
        """The outcome of a NEW command: ("ok", result) or ("error", message)."""
        session = self._sessions.get(client)
        if session is not None:
            session.results[seq] = outcome

    def last_seq(self, client: str) -> int:
        """The highest seq with a cached result for ``client`` (0: none)."""
        session = self._sessions.get(client)
        return max(session.results, default=0) if session else 0

    def __contains__(self, client: str) -> bool:
        return client in self._sessions

    def __len__(self) -> int:
        return len(self._sessions)

    # ---------------------------------------------------------- snapshots

    def to_json(self) -> dict[str, Any]:
        return {"clock": self.clock, "now_ms": self.now_ms, "expired": self.expired,
                "sessions": [[c, s.acked, s.active, s.active_ms,
                              [[seq, kind, _encode_result(v)]
                               for seq, (kind, v) in s.results.items()]]
                             for c, s in self._sessions.items()]}

    def load_json(self, state: dict[str, Any]) -> None:
        sessions: OrderedDict[str, _Session] = OrderedDict()
        for client, acked, active, active_ms, results in state["sessions"]:
            session = _Session(active, active_ms)
            session.acked = acked
            session.results = {seq: (kind, _decode_result(v)) for seq, kind, v in results}
            sessions[client] = session
        self.clock, self.now_ms = state["clock"], state["now_ms"]
        self.expired = state.get("expired", 0)
        self._sessions = sessions


# ------------------------------------------------------------------ the FSM wrapper

class SessionFSM(FSM):
    """Wraps ``inner`` with a session table; see the module docstring.

    Concurrency: like every FSM, apply/snapshot/restore run on the node's
    applier thread; ``inner`` is called from there too. The table's read
    accessors (``sessions``, ``clock``, ``now``) may be called from any thread.
    """

    def __init__(self, inner: FSM, *, expire_after_entries: int | None = 1_000_000,
                 expire_after: float | None = None,
                 max_sessions: int | None = 100_000) -> None:
        self.inner = inner
        self.table = SessionTable(expire_after_entries=expire_after_entries,
                                  expire_after=expire_after, max_sessions=max_sessions)
        self._lock = threading.Lock()
        self._session_apply = getattr(inner, "apply_session", None)

    def apply(self, command: bytes) -> Any:
        if not command.startswith(SESSION_PREFIX):
            return self.inner.apply(command)
        header, body = decode_command(command)  # malformed: raises, logged on every node
        client = header["c"]
        with self._lock:
            table = self.table
            table.tick(header.get("t"))
            op = header.get("op")
            if op == "register":
                table.register(client)
                return True
            if op == "unregister":
                return table.unregister(client)
            seq, acked = header["s"], header.get("a", header["s"])
            status, cached = table.lookup(client, seq, acked)
            ctx = table.context(client, seq)
        if status == UNKNOWN:
            return SessionExpiredError(f"session {client!r} is not known (expired or never "
                                       f"registered): seq {seq} was not applied")
        if status == STALE:
            return StaleCommandError(f"session {client!r}: seq {seq} is below {acked}, the "
                                     f"lowest the client awaits: not applied")
        if status == DUPLICATE:
            kind, value = cached
            if kind == "error":
                raise CommandFailedError(value)
            return value
        try:
            if self._session_apply is not None:
                result = self._session_apply(body, ctx)
            else:
                result = self.inner.apply(body)
        except Exception as exc:
            with self._lock:
                table.record(client, seq, ("error", f"{type(exc).__name__}: {exc}"))
            raise
        with self._lock:
            table.record(client, seq, ("ok", result))
        return result

    def snapshot(self) -> list[Buffer]:
        with self._lock:
            head = json.dumps(self.table.to_json(), separators=(",", ":")).encode()
        inner = self.inner.snapshot()
        parts: list[Buffer] = [_SNAPSHOT_MAGIC + struct.pack("<Q", len(head)), head]
        if isinstance(inner, (bytes, bytearray, memoryview)):
            parts.append(inner)
        else:
            parts.extend(inner)
        return parts

    def restore(self, snapshot: bytes) -> None:
        if not snapshot.startswith(_SNAPSHOT_MAGIC):
            raise ValueError("not a SessionFSM snapshot")
        start = len(_SNAPSHOT_MAGIC) + 8
        (n,) = struct.unpack_from("<Q", snapshot, len(_SNAPSHOT_MAGIC))
        state = json.loads(snapshot[start:start + n])
        self.inner.restore(bytes(snapshot[start + n:]))
        with self._lock:
            self.table.load_json(state)

    # ---------------------------------------------------------- reads (any thread)

    @property
    def clock(self) -> int:
        with self._lock:
            return self.table.clock

    @property
    def now(self) -> float:
        """Log time in seconds (the largest proposer stamp applied)."""
        with self._lock:
            return self.table.now_ms / 1000

    def sessions(self) -> int:
        with self._lock:
            return len(self.table)

    def has_session(self, client: str) -> bool:
        with self._lock:
            return client in self.table


# ------------------------------------------------------------------ the client helper

#: Errors after which the same (client, seq) is sent again.
_RETRY = (NotLeaderError, LeadershipLostError, ShutdownError, NoConnectionError, BusyError,
          RaftTimeoutError)


class _Attempts:
    """One command's retries, for ``Session.call`` and ``acall`` alike: the
    deadline, which failures are worth another attempt, and the back-off."""

    def __init__(self, session: Session, timeout: float | None) -> None:
        self.session = session
        self.deadline = time.monotonic() + (session.timeout if timeout is None else timeout)
        self.attempt = 0
        self.last: BaseException | None = None

    def next_wait(self) -> float:
        """How long the next attempt may wait; TimeoutError past the deadline."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise RaftTimeoutError(f"no outcome within the session timeout (last: "
                                   f"{self.last!r})", indeterminate=True)
        return min(remaining, self.session.attempt_timeout)

    def failed(self, exc: BaseException) -> float:
        """Re-raise a definite failure; otherwise the pause before retrying
        (the same seq: the session table applies it once)."""
        if isinstance(exc, RaftError) and not isinstance(exc, _RETRY) and not exc.indeterminate:
            raise exc
        self.last = exc
        self.attempt += 1
        self.session.retries += 1
        self.session._redirect(exc)
        return max(0.0, min(self.session._delay(self.attempt), self.deadline - time.monotonic()))


class Session:
    """The client side of one session, over in-process nodes.

    ``target``: a Node, or a sequence of Nodes (in-process members of one
    cluster); each command goes to the one that leads, following
    ``NotLeaderError.leader_id`` among them. ``call`` blocks (any thread);
    ``acall`` is its asyncio twin. Both retry the SAME (client, seq) after an
    indeterminate outcome or a leader change until ``timeout``, then raise
    ``canonical_raft.TimeoutError`` (indeterminate). Several commands may be in
    flight at once (from several threads or tasks).

    ``target`` may also be any object with ``apply(bytes) -> Future``, which
    then is used as is (e.g. a forwarding proxy). A list of nodes is kept, not
    copied: a program that restarts a node puts the new Node in its place.
    """

    def __init__(self, target: Any, *, client_id: str | None = None, timeout: float = 30.0,
                 attempt_timeout: float = 10.0) -> None:
        nodes = target if isinstance(target, Sequence) else [target]
        if not nodes:
            raise ValueError("a Session needs at least one node")
        self.nodes = nodes
        self.client_id = client_id or uuid.uuid4().hex
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self.retries = 0
        self._lock = threading.Lock()
        self._seq = 0
        self._outstanding: set[int] = set()
        self._registered = False
        self._current = 0  # index in nodes of the last node that led

    # ---------------------------------------------------------- seqs

    def _next(self) -> int:
        with self._lock:
            self._seq += 1
            self._outstanding.add(self._seq)
            return self._seq

    def _done(self, seq: int) -> None:
        with self._lock:
            self._outstanding.discard(seq)

    def _wrap(self, seq: int, command: bytes) -> bytes:
        with self._lock:
            acked = min(self._outstanding, default=seq)
        return encode_command(self.client_id, seq, command, acked=min(acked, seq))

    # ---------------------------------------------------------- routing

    def _pick(self) -> Any:
        for i, node in enumerate(self.nodes):
            if getattr(node, "is_leader", False):
                self._current = i
                return node
        return self.nodes[self._current % len(self.nodes)]

    def _redirect(self, exc: BaseException) -> None:
        leader_id = getattr(exc, "leader_id", None)
        for i, node in enumerate(self.nodes):
            if leader_id and getattr(node, "id", None) == leader_id:
                self._current = i
                return
        self._current += 1

    def _result(self, value: Any) -> Any:
        if isinstance(value, SessionExpiredError):
            # The next call opens a new session, under a new id: reusing this
            # one could apply an old, indeterminate seq a second time.
            with self._lock:
                self.client_id, self._registered = uuid.uuid4().hex, False
                self._seq, self._outstanding = 0, set()
        if isinstance(value, SessionError):
            raise value
        return value

    def _delay(self, attempt: int) -> float:
        return min(0.2, 0.005 * 2.0 ** min(attempt, 6))

    # ---------------------------------------------------------- blocking

    def register(self) -> None:
        """Open the session (``call`` does it before the first command)."""
        self._send(lambda: encode_register(self.client_id))
        self._registered = True

    def call(self, command: bytes, *, timeout: float | None = None) -> Any:
        """Apply ``command`` exactly once; its result."""
        if not self._registered:
            self.register()
        seq = self._next()
        try:
            return self._result(self._send(lambda: self._wrap(seq, command), timeout))
        finally:
            self._done(seq)

    def _send(self, make: Any, timeout: float | None = None) -> Any:
        attempts = _Attempts(self, timeout)
        while True:
            wait = attempts.next_wait()
            try:
                return self._pick().apply(make()).result(wait)
            except (concurrent.futures.TimeoutError, RaftError) as exc:
                time.sleep(attempts.failed(exc))

    # ---------------------------------------------------------- asyncio

    async def aregister(self) -> None:
        await self._asend(lambda: encode_register(self.client_id))
        self._registered = True

    async def acall(self, command: bytes, *, timeout: float | None = None) -> Any:
        """``call`` for asyncio: never blocks the event loop."""
        if not self._registered:
            await self.aregister()
        seq = self._next()
        try:
            return self._result(await self._asend(lambda: self._wrap(seq, command), timeout))
        finally:
            self._done(seq)

    async def _asend(self, make: Any, timeout: float | None = None) -> Any:
        attempts = _Attempts(self, timeout)
        while True:
            wait = attempts.next_wait()
            try:
                fut = self._pick().apply(make())
                if not hasattr(fut, "__await__"):  # a target's plain concurrent future
                    fut = asyncio.wrap_future(fut)
                return await asyncio.wait_for(fut, wait)
            except (concurrent.futures.TimeoutError, asyncio.TimeoutError, RaftError) as exc:
                await asyncio.sleep(attempts.failed(exc))


