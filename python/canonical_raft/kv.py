"""A replicated key-value store: an FSM with exactly-once client commands.

Commands are compact JSON objects, built with the ``*_cmd`` helpers::

    node.apply(kv.set_cmd("color", "blue", client="c1", seq=1))

Keys are strings; values are any JSON value. Every command may carry a client
id and a sequence number. The store remembers, per client, the last sequence
number it applied and that command's result: a command whose (client, seq) was
already applied is not applied again and returns the cached result. A client
that retries an indeterminate command with the same seq (after a timeout or a
lost leader) therefore never applies it twice. A client must have at most one
command in flight at a time (a command older than the last applied one is
ignored, see ``STALE``), as in the client sessions of the Raft dissertation.

Results are JSON-ready dicts, always with ``"ok"``:

=========  ==================================================================
set        ``{"ok": True}``
delete     ``{"ok": existed}``
cas        ``{"ok": swapped, "value": value_now}`` (an absent key compares as None)
incr       ``{"ok": True, "value": n}`` or ``{"ok": False, "error": ...}``
=========  ==================================================================
"""

from __future__ import annotations

import json
import threading
from typing import Any

from .fsm import FSM
from .sessions import DUPLICATE, SessionTable
from .sessions import STALE as STALE_SEQ

__all__ = ["KVStore", "set_cmd", "delete_cmd", "cas_cmd", "incr_cmd", "encode", "decode",
           "STALE"]

#: Result of a command older than its client's last applied one (never applied).
STALE = {"ok": False, "error": "stale", "message": "an older sequence number than the "
         "client's last applied command: this command was not applied"}
_OPS = ("set", "delete", "cas", "incr")
_MISSING = object()


# ------------------------------------------------------------------ encoding

def encode(op: str, key: str, *, client: str | None = None, seq: int | None = None,
           acked: int | None = None, **fields: Any) -> bytes:
    """One command as compact JSON. ``client`` and ``seq`` go together;
    ``acked`` (optional, field "a") is the lowest seq the client still awaits
    an answer for (default: ``seq``, one command in flight)."""
    if op not in _OPS:
        raise ValueError(f"unknown op {op!r} (one of {', '.join(_OPS)})")
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, not {type(key).__name__}")
    cmd: dict[str, Any] = {"op": op, "k": key, **fields}
    if (client is None) != (seq is None):
        raise ValueError("client and seq must be given together")
    if client is not None:
        if not isinstance(client, str) or not client:
            raise TypeError("client must be a non-empty str")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise ValueError(f"seq must be an int >= 1, not {seq!r}")
        cmd["c"], cmd["s"] = client, seq
        if acked is not None:
            if not isinstance(acked, int) or isinstance(acked, bool) or not 1 <= acked <= seq:
                raise ValueError(f"acked must be an int in 1..seq, not {acked!r}")
            cmd["a"] = acked
    elif acked is not None:
        raise ValueError("acked needs client and seq")
    # allow_nan=False: NaN would make replicas disagree on equality.
    return json.dumps(cmd, separators=(",", ":"), allow_nan=False).encode()


def decode(command: bytes) -> dict[str, Any]:
    cmd = json.loads(command)
    if not isinstance(cmd, dict) or cmd.get("op") not in _OPS or not isinstance(cmd.get("k"), str):
        raise ValueError(f"not a KVStore command: {command[:80]!r}")
    if "c" in cmd:
        seq = cmd.get("s")
        if not isinstance(cmd["c"], str) or not isinstance(seq, int) or isinstance(seq, bool) \
                or seq < 1:
            raise ValueError(f"bad client id or seq in KVStore command: {command[:80]!r}")
        acked = cmd.get("a", seq)
        if not isinstance(acked, int) or isinstance(acked, bool) or not 1 <= acked <= seq:
            raise ValueError(f"bad acked seq in KVStore command: {command[:80]!r}")
    return cmd


def set_cmd(key: str, value: Any, *, client: str | None = None, seq: int | None = None) -> bytes:
    return encode("set", key, client=client, seq=seq, v=value)


def delete_cmd(key: str, *, client: str | None = None, seq: int | None = None) -> bytes:
    return encode("delete", key, client=client, seq=seq)


def cas_cmd(key: str, expected: Any, new: Any, *, client: str | None = None,
            seq: int | None = None) -> bytes:
    """Set ``key`` to ``new`` if its value equals ``expected`` (None: absent)."""
    return encode("cas", key, client=client, seq=seq, e=expected, v=new)


def incr_cmd(key: str, by: int = 1, *, client: str | None = None,
             seq: int | None = None) -> bytes:
    """Add ``by`` to the int at ``key`` (absent: 0); the result holds the new value."""
    if not isinstance(by, int) or isinstance(by, bool):
        raise TypeError(f"by must be an int, not {type(by).__name__}")
    return encode("incr", key, client=client, seq=seq, by=by)


def _same(a: Any, b: Any) -> bool:
    # JSON equality: in Python True == 1 == 1.0, which JSON tells apart.
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


# ------------------------------------------------------------------ the FSM

class KVStore(FSM):
    """The replicated dict. apply/snapshot/restore run on the node's applier
    thread; get/items/dump/len may be called from any thread (one lock guards
    the state, held briefly).

    ``max_sessions`` bounds the per-client table: past it the least recently
    active client is forgotten (in log order, so every replica forgets the same
    one). A forgotten client's retry of an old command would apply it again.
    """

    def __init__(self, *, max_sessions: int = 100_000,
                 expire_after_entries: int | None = None) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, Any] = {}
        # The per-client table (canonical_raft.sessions): sessions open
        # implicitly on a client's first command, as kv's wire format has no
        # registration.
        self._sessions = SessionTable(max_sessions=max_sessions, implicit=True,
                                      expire_after_entries=expire_after_entries)
        self.max_sessions = max_sessions

    # ---------------------------------------------------------- FSM

    def apply(self, command: bytes) -> dict:
        cmd = decode(command)  # a malformed command raises: logged on every node
        client, seq = cmd.get("c"), cmd.get("s")
        with self._lock:
            if client is None:
                return dict(self._execute(cmd))
            table = self._sessions
            if table.expire_after_entries is not None:  # the clock serves expiry only
                table.tick(cmd.get("t"))
            status, cached = table.lookup(client, seq, cmd.get("a", seq))
            if status == DUPLICATE:
                return dict(cached[1])
            if status == STALE_SEQ:
                return dict(STALE)
            result = self._execute(cmd)
            table.record(client, seq, ("ok", result))
            return dict(result)

    def _execute(self, cmd: dict[str, Any]) -> dict:
        op, key, data = cmd["op"], cmd["k"], self._data
        if op == "set":
            data[key] = cmd.get("v")
            return {"ok": True}
        if op == "delete":
            return {"ok": data.pop(key, _MISSING) is not _MISSING}
        if op == "cas":
            current = data.get(key)
            if not _same(current, cmd.get("e")):
                return {"ok": False, "value": current}
            data[key] = cmd.get("v")
            return {"ok": True, "value": data[key]}
        # incr
        current, by = data.get(key, 0), cmd.get("by", 1)
        if not isinstance(current, int) or isinstance(current, bool) or \
                not isinstance(by, int) or isinstance(by, bool):
            return {"ok": False, "error": "not_an_integer",
                    "message": f"incr of {key!r}: not an integer"}
        data[key] = current + by
        return {"ok": True, "value": data[key]}

    def snapshot(self) -> bytes:
        with self._lock:
            state = {"data": self._data, "sessions": self._sessions.to_json()}
            return json.dumps(state, separators=(",", ":")).encode()

    def restore(self, snapshot: bytes) -> None:
        state = json.loads(snapshot)
        table = SessionTable(max_sessions=self.max_sessions, implicit=True,
                             expire_after_entries=self._sessions.expire_after_entries)
        sessions = state["sessions"]
        if isinstance(sessions, list):  # before sessions.py: [[client, seq, result], ...]
            sessions = {"clock": 0, "now_ms": 0,
                        "sessions": [[c, s, 0, 0, [[s, "ok", r]]] for c, s, r in sessions]}
        table.load_json(sessions)
        with self._lock:
            self._data = state["data"]
            self._sessions = table

    # ---------------------------------------------------------- reads (any thread)

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            return self._data.get(key, default)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._data

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def items(self) -> list[tuple[str, Any]]:
        with self._lock:
            return list(self._data.items())

    def dump(self) -> dict[str, Any]:
        """A copy of the whole dict (values shared: treat them as read-only)."""
        with self._lock:
            return dict(self._data)

    def last_seq(self, client: str) -> int:
        """The last sequence number applied for ``client`` (0: none)."""
        with self._lock:
            return self._sessions.last_seq(client)
