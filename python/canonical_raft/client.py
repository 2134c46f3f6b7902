"""ClusterClient: talks to a cluster of ``canonical_raft serve`` processes.

It finds the leader, follows ``not_leader`` redirects and retries after
connection errors and indeterminate failures, always re-sending a write with
the SAME client id and sequence number: the KVStore applies each (client, seq)
once, so a retry never applies a write twice.

Thread-safe, one request at a time (the KVStore's sessions expect at most one
write in flight per client id): use one ClusterClient per thread for
concurrency.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
import uuid
from typing import Any

from .errors import RaftError
from .errors import TimeoutError as RaftTimeoutError

__all__ = ["ClusterClient", "CommandError", "RETRYABLE"]

#: Server errors after which the same request may be sent again.
RETRYABLE = frozenset({"not_leader", "timeout", "leadership_lost", "shutdown",
                       "no_connection"})


class CommandError(RaftError, ValueError):
    """The server refused the request (bad request, or the FSM said no)."""

    def __init__(self, reply: dict) -> None:
        super().__init__(f"{reply.get('error')}: {reply.get('message', '')}".rstrip(": "))
        self.reply = reply


class _Connection:
    """One line-oriented JSON connection to one server."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb")

    def call(self, request: dict, timeout: float) -> dict:
        self.sock.settimeout(timeout)
        self.sock.sendall(json.dumps(request, separators=(",", ":")).encode() + b"\n")
        line = self.reader.readline()
        if not line.endswith(b"\n"):
            raise ConnectionError("the server closed the connection")
        return json.loads(line)

    def dropped(self) -> bool:
        """Idle, yet readable: the server closed it (e.g. it restarted)."""
        readable, _, _ = select.select([self.sock], [], [], 0)
        return bool(readable)

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


class ClusterClient:
    """``ClusterClient({node_id: client_port, ...})``; every call raises
    canonical_raft.TimeoutError (``indeterminate`` for writes) if no node gave
    an answer within ``timeout`` seconds."""

    def __init__(self, client_ports: dict[int, int], *, host: str = "127.0.0.1",
                 timeout: float = 30.0, attempt_timeout: float = 15.0,
                 client_id: str | None = None, via: int | None = None) -> None:
        """``via``: send writes and linearizable reads to this node, whichever
        its role, for servers started with ``--forward`` (a follower forwards
        them to the leader); move on to the next node only when it does not
        answer or knows no leader. Without it, requests go to the leader."""
        if not client_ports:
            raise ValueError("client_ports must name at least one node")
        if via is not None and via not in client_ports:
            raise ValueError(f"via={via} is not one of the nodes {sorted(client_ports)}")
        self.ports = dict(client_ports)
        self.host = host
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self.client_id = client_id or uuid.uuid4().hex
        self.retries = 0  # attempts beyond the first, over the client's life
        #: The raft index of the last successful write or read_index reply of
        #: this client (None before one, or if the server does not report it).
        self.last_index: int | None = None
        self._seq = 0
        self._leader: int | None = None
        self.via = via  # the node requests go to (forwarding), moved on failure
        self._conns: dict[int, _Connection] = {}
        self._lock = threading.RLock()
        self._rotation = 0

    # ---------------------------------------------------------- key-value API

    def set(self, key: str, value: Any) -> None:
        self._write({"op": "set", "key": key, "value": value})

    def delete(self, key: str) -> bool:
        """True if the key existed."""
        return self._write({"op": "delete", "key": key})["ok"]

    def cas(self, key: str, expected: Any, value: Any) -> bool:
        """Set key to value if it holds expected (None: absent); True if it did."""
        return self._write({"op": "cas", "key": key, "expected": expected, "value": value})["ok"]

    def incr(self, key: str, by: int = 1) -> int:
        """Add by to the int at key (absent: 0); the new value."""
        return self._write({"op": "incr", "key": key, "by": by})["value"]

    def get(self, key: str, default: Any = None, *, linearizable: bool = True,
            node: int | None = None) -> Any:
        """Linearizable: asks the leader after a barrier. Otherwise: the local,
        possibly stale, value on ``node`` (or any node that answers)."""
        if linearizable:
            reply = self._leader_call({"op": "barrier_get", "key": key}, write=False)
            if "error" in reply:
                raise CommandError(reply)
        else:
            reply = self._any_call({"op": "get", "key": key}, node)
        return reply["value"] if reply["found"] else default

    def read_index(self, key: str, default: Any = None) -> tuple[Any, int | None]:
        """A linearizable read on the leader (after a barrier) with the raft
        index it was served at: ``(value, index)``; the value reflects every
        entry up to at least ``index``. Also sets ``last_index``."""
        reply = self._leader_call({"op": "read_index", "key": key}, write=False)
        if "error" in reply:
            raise CommandError(reply)
        self.last_index = reply.get("index")
        return (reply["value"] if reply["found"] else default), self.last_index

    def journal(self, node: int, *, commands: bool = False, timeout: float | None = None,
                page: int = 10_000) -> dict:
        """One node's whole apply journal (see server.Journal), read in pages:
        ``{"entries": [...], "first": n, "last_index": i, "last_applied": a, ...}``
        (``first`` > 0: older records were dropped). Raises OSError if the node
        does not answer."""
        entries: list = []
        start = 0
        while True:
            reply = self.request(node, {"op": "journal", "from": start, "limit": page,
                                        "commands": commands}, timeout)
            if "error" in reply:
                raise CommandError(reply)
            if not entries:
                first = reply["first"]
            entries += reply["entries"]
            if reply["next"] >= reply["end"] or not reply["entries"]:
                return {**reply, "first": first, "entries": entries}
            start = reply["next"]

    # ---------------------------------------------------------- cluster API

    def status(self, node: int, timeout: float | None = None) -> dict:
        """One node's status; raises OSError if it does not answer."""
        return self.request(node, {"op": "status"}, timeout)

    def dump(self, node: int, timeout: float | None = None) -> dict:
        """One node's whole dict and last applied index."""
        return self.request(node, {"op": "dump"}, timeout)

    def request(self, node: int, request: dict, timeout: float | None = None) -> dict:
        """Send one raw request to one node: no retries, no redirects."""
        with self._lock:
            return self._call(node, request, timeout or self.attempt_timeout)

    def disconnect(self, node: int) -> None:
        """Drop the connection to one node (the next request reconnects)."""
        with self._lock:
            self._drop(node)

    def close(self) -> None:
        with self._lock:
            for node in list(self._conns):
                self._drop(node)

    def __enter__(self) -> ClusterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------- internals

    def _write(self, request: dict) -> dict:
        with self._lock:
            self._seq += 1  # consumed even if this write times out: it may still commit
            request = {**request, "client": self.client_id, "seq": self._seq}
            reply = self._leader_call(request, write=True)
            if "error" not in reply:
                self.last_index = reply.get("index")
        if not reply.get("ok") and "error" in reply:
            raise CommandError(reply)
        return reply

    def _leader_call(self, request: dict, *, write: bool) -> dict:
        deadline = time.monotonic() + self.timeout
        problem = "no node answered"
        attempt = 0
        with self._lock:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RaftTimeoutError(
                        f"{request['op']}: no answer from the cluster within {self.timeout}s "
                        f"(last: {problem})", indeterminate=write)
                if attempt:
                    self.retries += 1
                if self.via is not None:
                    target = self.via
                else:
                    target = self._leader if self._leader is not None else self._next_node()
                try:
                    reply = self._call(target, request, min(remaining, self.attempt_timeout))
                except (OSError, ValueError) as exc:  # down, reset, timed out, garbled
                    problem = f"node {target}: {exc!r}"
                    self._leader = None
                    if self.via is not None:
                        self.via = self._next_node()
                    attempt += 1
                    # Try every node once quickly, then back off.
                    if attempt % len(self.ports) == 0:
                        self._pause(attempt, deadline)
                    continue
                error = reply.get("error")
                if error is None or error not in RETRYABLE:
                    if error is None:
                        self._leader = target
                    return reply
                problem = f"node {target}: {error}"
                attempt += 1
                hint = reply.get("leader_id")
                if hint not in self.ports and isinstance(reply.get("leader_client"), int):
                    self.ports[hint] = reply["leader_client"]  # a leader we were not told of
                if self.via is not None:  # it knows no leader (or lost it): try another
                    if error == "not_leader":
                        self.via = self._next_node()
                    self._pause(attempt, deadline)
                    continue
                if error == "not_leader" and hint in self.ports and hint != target:
                    self._leader = hint
                    if attempt > 2:  # a stale hint can bounce between nodes
                        self._pause(attempt, deadline)
                    continue
                self._leader = None if error == "not_leader" else target
                self._pause(attempt, deadline)

    def _any_call(self, request: dict, node: int | None) -> dict:
        if node is not None:
            reply = self.request(node, request)
        else:
            reply = None
            with self._lock:
                for _ in range(len(self.ports)):
                    try:
                        reply = self._call(self._next_node(), request, self.attempt_timeout)
                        break
                    except (OSError, ValueError):
                        continue
            if reply is None:
                raise RaftTimeoutError(f"{request['op']}: no node answered")
        if "error" in reply:
            raise CommandError(reply)
        return reply

    def _next_node(self) -> int:
        ids = sorted(self.ports)
        self._rotation += 1
        return ids[self._rotation % len(ids)]

    def _pause(self, attempt: int, deadline: float) -> None:
        delay = min(0.25, 0.01 * 2 ** min(attempt, 5))
        time.sleep(max(0.0, min(delay, deadline - time.monotonic())))

    def _call(self, node: int, request: dict, timeout: float) -> dict:
        conn = self._conns.get(node)
        if conn is not None and conn.dropped():
            self._drop(node)
            conn = None
        try:
            if conn is None:
                conn = self._conns[node] = _Connection(self.host, self.ports[node], timeout)
            reply = conn.call(request, timeout)
        except BaseException:
            # A late reply must never be read as the answer to a later request.
            self._drop(node)
            raise
        if not isinstance(reply, dict):
            self._drop(node)
            raise ValueError(f"node {node} sent a non-object reply")
        return reply

    def _drop(self, node: int) -> None:
        conn = self._conns.pop(node, None)
        if conn is not None:
            conn.close()
