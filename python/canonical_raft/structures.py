"""Replicated structures: a dict, a lock with a lease, a counter, a queue.

Every node runs one ``Structures`` FSM inside a ``SessionFSM`` (``make_fsm()``
builds both); it holds any number of named objects. Clients reach them through
a ``sessions.Session`` over in-process nodes, so every write applies exactly
once, even when retried after a leader change::

    import canonical_raft as raft
    from canonical_raft import structures
    from canonical_raft.sessions import Session

    nodes = [raft.Node(i, addr, structures.make_fsm(), f"n{i}", cluster=cluster).start()
             for i, addr in cluster.items()]
    session = Session(nodes)
    users = structures.ReplDict(session, "users")
    users.set("ada", {"admin": True})
    users.get("ada")                       # linearizable: read through the log
    lock = structures.ReplLock(session, "leader-job", lease=10.0)
    with lock:                             # blocks until acquired
        ...
    hits = structures.ReplCounter(session, "hits")
    hits.add(1)                            # the new value

Each blocking method has an asyncio twin with an ``a`` prefix
(``await users.aset("ada", ...)``, ``await lock.aacquire()``,
``async with lock``); the blocking ones may be called from any thread.

Reads go through the log (a read command): they are linearizable and cost one
entry. ``local_view(node)`` gives the (possibly stale) state a node has
applied, without the log.

The lock: ``acquire`` succeeds if the lock is free, held by this session, or
its holder's lease has run out in log time (``sessions.Context.now``: the
largest wall-clock stamp the proposers put in the log, never a replica's own
clock). A holder that re-acquires renews its lease. ``release`` frees it only
for its holder. Each acquire returns a fencing token that grows with every
change of holder: pass it to the resources the lock guards, so that they can
refuse a holder whose lease ran out. Values are JSON values.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from typing import Any

from .fsm import FSM
from .sessions import Context, Session, SessionFSM

__all__ = ["Structures", "make_fsm", "ReplDict", "ReplLock", "ReplCounter", "ReplQueue",
           "LockNotHeldError"]

_MISSING = object()


class LockNotHeldError(RuntimeError):
    """``release`` of a lock this session does not hold (any more)."""


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


class Structures(FSM):
    """The FSM of named dicts, locks, counters and queues. Commands are JSON:
    ``{"o": "dict.set", "n": name, ...}``. apply/snapshot/restore run on the
    applier thread; ``view`` may be called from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.dicts: dict[str, dict[str, Any]] = {}
        self.locks: dict[str, dict[str, Any]] = {}   # name -> {"holder", "expires", "token"}
        self.counters: dict[str, int] = {}
        self.queues: dict[str, deque[Any]] = {}
        self.tokens = 0  # fencing tokens handed out, over every lock

    def apply(self, command: bytes) -> Any:
        return self.apply_session(command, Context(None, None, 0, 0.0))

    def apply_session(self, command: bytes, ctx: Context) -> Any:
        cmd = json.loads(command)
        op, name = cmd["o"], cmd["n"]
        if not isinstance(name, str):
            raise TypeError("a structure's name is a str")
        kind, _, verb = op.partition(".")
        method = getattr(self, f"_{kind}_{verb}", None)
        if method is None:
            raise ValueError(f"unknown structures op {op!r}")
        with self._lock:
            return method(name, cmd, ctx)

    # ---------------------------------------------------------- dict

    def _dict_get(self, name: str, cmd: dict[str, Any], ctx: Context) -> Any:
        d = self.dicts.get(name, {})
        return {"found": cmd["k"] in d, "value": d.get(cmd["k"])}

    def _dict_set(self, name: str, cmd: dict[str, Any], ctx: Context) -> Any:
        self.dicts.setdefault(name, {})[cmd["k"]] = cmd.get("v")
        return True

    def _dict_delete(self, name: str, cmd: dict[str, Any], ctx: Context) -> Any:
        d = self.dicts.get(name, {})
        value = d.pop(cmd["k"], _MISSING)
        return {"found": value is not _MISSING, "value": None if value is _MISSING else value}

    def _dict_cas(self, name: str, cmd: dict[str, Any], ctx: Context) -> Any:
        d = self.dicts.setdefault(name, {})
        current = d.get(cmd["k"])
        if not _same(current, cmd.get("e")):
            return {"ok": False, "value": current}
        d[cmd["k"]] = cmd.get("v")
        return {"ok": True, "value": cmd.get("v")}

    def _dict_items(self, name: str, cmd: dict[str, Any], ctx: Context) -> Any:
        return [[k, v] for k, v in self.dicts.get(name, {}).items()]

    def _dict_clear(self, name: str, cmd: dict[str, Any], ctx: Context) -> Any:
        self.dicts.pop(name, None)
        return True

    # ---------------------------------------------------------- lock

    def _lock_state(self, name: str, ctx: Context) -> dict[str, Any] | None:
        """The live holder record, or None (free, or its lease ran out)."""
        state = self.locks.get(name)
        if state is None or state["expires"] <= ctx.now:
            return None
        return state

    def _lock_acquire(self, name: str, cmd: dict[str, Any], ctx: Context) -> Any:
        owner = ctx.client
        if owner is None:
            raise ValueError("lock.acquire needs a session (the owner)")
        lease = float(cmd["lease"])
        state = self._lock_state(name, ctx)
        if state is not None and state["holder"] != owner:
            return {"ok": False, "holder": state["holder"], "expires": state["expires"]}
        if state is None:
            self.tokens += 1
            state = {"holder": owner, "token": self.tokens}
        state["expires"] = ctx.now + lease
        self.locks[name] = state
        return {"ok": True, "token": state["token"], "expires": state["expires"]}

    def _lock_release(self, name: str, cmd: dict[str, Any], ctx: Context) -> Any:
        state = self._lock_state(name, ctx)
        if state is None or state["holder"] != ctx.client:
            return False
        del self.locks[name]
        return True

    def _lock_holder(self, name: str, cmd: dict[str, Any], ctx: Context) -> Any:
        state = self._lock_state(name, ctx)
        return None if state is None else dict(state)

    # ---------------------------------------------------------- counter

    def _counter_add(self, name: str, cmd: dict[str, Any], ctx: Context) -> Any:
        by = cmd.get("by", 1)
        if not isinstance(by, int) or isinstance(by, bool):
            raise TypeError("a counter adds ints")
        self.counters[name] = self.counters.get(name, 0) + by
        return self.counters[name]

    def _counter_get(self, name: str, cmd: dict[str, Any], ctx: Context) -> Any:
        return self.counters.get(name, 0)

    # ---------------------------------------------------------- queue

    def _queue_put(self, name: str, cmd: dict[str, Any], ctx: Context) -> Any:
        q = self.queues.setdefault(name, deque())
        q.append(cmd.get("v"))
        return len(q)

    def _queue_get(self, name: str, cmd: dict[str, Any], ctx: Context) -> Any:
        q = self.queues.get(name)
        if not q:
            return {"found": False, "value": None}
        return {"found": True, "value": q.popleft()}

    def _queue_len(self, name: str, cmd: dict[str, Any], ctx: Context) -> Any:
        return len(self.queues.get(name, ()))

    # ---------------------------------------------------------- snapshots

    def snapshot(self) -> bytes:
        with self._lock:
            return json.dumps({"dicts": self.dicts, "locks": self.locks,
                               "counters": self.counters, "tokens": self.tokens,
                               "queues": {k: list(v) for k, v in self.queues.items()}},
                              separators=(",", ":")).encode()

    def restore(self, snapshot: bytes) -> None:
        state = json.loads(snapshot)
        with self._lock:
            self.dicts, self.locks = state["dicts"], state["locks"]
            self.counters, self.tokens = state["counters"], state["tokens"]
            self.queues = {k: deque(v) for k, v in state["queues"].items()}

    # ---------------------------------------------------------- local reads

    def view(self, kind: str, name: str) -> Any:
        """A copy of one structure as this replica applied it (possibly stale)."""
        with self._lock:
            if kind == "dict":
                return dict(self.dicts.get(name, {}))
            if kind == "counter":
                return self.counters.get(name, 0)
            if kind == "queue":
                return list(self.queues.get(name, ()))
            if kind == "lock":
                state = self.locks.get(name)
                return None if state is None else dict(state)
        raise ValueError(f"no structure kind {kind!r}")


def make_fsm(**session_options: Any) -> SessionFSM:
    """``SessionFSM(Structures(), **session_options)``: every node's FSM."""
    return SessionFSM(Structures(), **session_options)


def _command(op: str, name: str, **fields: Any) -> bytes:
    return json.dumps({"o": op, "n": name, **fields}, separators=(",", ":"),
                      allow_nan=False).encode()


class _Handle:
    kind = ""

    def __init__(self, session: Session, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError("name must be a non-empty str")
        self.session = session
        self.name = name

    def _call(self, verb: str, **fields: Any) -> Any:
        return self.session.call(_command(f"{self.kind}.{verb}", self.name, **fields))

    async def _acall(self, verb: str, **fields: Any) -> Any:
        return await self.session.acall(_command(f"{self.kind}.{verb}", self.name, **fields))

    def local_view(self, node: Any) -> Any:
        """This structure as ``node`` applied it (no log entry; possibly stale)."""
        fsm = node.fsm
        return getattr(fsm, "inner", fsm).view(self.kind, self.name)


class ReplDict(_Handle):
    """A replicated dict of str keys and JSON values."""

    kind = "dict"

    def get(self, key: str, default: Any = None) -> Any:
        r = self._call("get", k=key)
        return r["value"] if r["found"] else default

    def set(self, key: str, value: Any) -> None:
        self._call("set", k=key, v=value)

    def __getitem__(self, key: str) -> Any:
        r = self._call("get", k=key)
        if not r["found"]:
            raise KeyError(key)
        return r["value"]

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def pop(self, key: str, default: Any = _MISSING) -> Any:
        r = self._call("delete", k=key)
        if r["found"]:
            return r["value"]
        if default is _MISSING:
            raise KeyError(key)
        return default

    def delete(self, key: str) -> bool:
        """True if the key was there."""
        return bool(self._call("delete", k=key)["found"])

    def cas(self, key: str, expected: Any, value: Any) -> bool:
        """Set ``key`` to ``value`` if it holds ``expected`` (None: absent)."""
        return bool(self._call("cas", k=key, e=expected, v=value)["ok"])

    def items(self) -> list[tuple[str, Any]]:
        return [(k, v) for k, v in self._call("items")]

    def clear(self) -> None:
        self._call("clear")

    async def aget(self, key: str, default: Any = None) -> Any:
        r = await self._acall("get", k=key)
        return r["value"] if r["found"] else default

    async def aset(self, key: str, value: Any) -> None:
        await self._acall("set", k=key, v=value)

    async def adelete(self, key: str) -> bool:
        return bool((await self._acall("delete", k=key))["found"])

    async def acas(self, key: str, expected: Any, value: Any) -> bool:
        return bool((await self._acall("cas", k=key, e=expected, v=value))["ok"])

    async def aitems(self) -> list[tuple[str, Any]]:
        return [(k, v) for k, v in await self._acall("items")]


class ReplCounter(_Handle):
    """A replicated int counter."""

    kind = "counter"

    def add(self, by: int = 1) -> int:
        """Add ``by`` (may be negative); the new value."""
        return int(self._call("add", by=by))

    def get(self) -> int:
        return int(self._call("get"))

    async def aadd(self, by: int = 1) -> int:
        return int(await self._acall("add", by=by))

    async def aget(self) -> int:
        return int(await self._acall("get"))


class ReplQueue(_Handle):
    """A replicated FIFO queue of JSON values (non-blocking ``get``)."""

    kind = "queue"

    def put(self, value: Any) -> int:
        """Append; the queue's length after."""
        return int(self._call("put", v=value))

    def get(self, default: Any = None) -> Any:
        """Pop the oldest value (``default`` if empty)."""
        r = self._call("get")
        return r["value"] if r["found"] else default

    def __len__(self) -> int:
        return int(self._call("len"))

    async def aput(self, value: Any) -> int:
        return int(await self._acall("put", v=value))

    async def aget(self, default: Any = None) -> Any:
        r = await self._acall("get")
        return r["value"] if r["found"] else default


class ReplLock(_Handle):
    """A replicated lock owned by a session, with a lease in log time
    (module docstring). ``lease`` seconds; ``retry`` seconds between attempts
    of a blocking acquire."""

    kind = "lock"

    def __init__(self, session: Session, name: str, *, lease: float = 30.0,
                 retry: float = 0.05) -> None:
        super().__init__(session, name)
        if not lease > 0:
            raise ValueError("lease must be > 0 seconds")
        self.lease = lease
        self.retry = retry
        self.token: int | None = None  # fencing token of the last successful acquire

    def try_acquire(self) -> bool:
        """One attempt; True if this session holds the lock now (renewed)."""
        r = self._call("acquire", lease=self.lease)
        if r["ok"]:
            self.token = r["token"]
        return bool(r["ok"])

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Like ``threading.Lock.acquire``: polls every ``retry`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.try_acquire():
                return True
            if not blocking or (deadline is not None and time.monotonic() >= deadline):
                return False
            time.sleep(self.retry)

    renew = try_acquire

    def release(self) -> None:
        """Raises LockNotHeldError if this session does not hold it (its
        lease ran out and perhaps another session took it)."""
        held = self._call("release")
        self.token = None
        if not held:
            raise LockNotHeldError(f"lock {self.name!r} is not held by this session")

    def holder(self) -> dict[str, Any] | None:
        """``{"holder": client id, "expires": log time, "token": n}`` or None."""
        holder: dict[str, Any] | None = self._call("holder")
        return holder

    def locked(self) -> bool:
        return self.holder() is not None

    def __enter__(self) -> ReplLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    async def atry_acquire(self) -> bool:
        r = await self._acall("acquire", lease=self.lease)
        if r["ok"]:
            self.token = r["token"]
        return bool(r["ok"])

    async def aacquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if await self.atry_acquire():
                return True
            if not blocking or (deadline is not None and time.monotonic() >= deadline):
                return False
            await asyncio.sleep(self.retry)

    async def arelease(self) -> None:
        held = await self._acall("release")
        self.token = None
        if not held:
            raise LockNotHeldError(f"lock {self.name!r} is not held by this session")

    async def __aenter__(self) -> ReplLock:
        await self.aacquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.arelease()
