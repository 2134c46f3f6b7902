"""Forwarding: ``apply()`` and ``barrier()`` on a follower travel to the leader.

Opt-in per node: ``Node(..., forward={id: "host:port", ...})`` gives every
member's forwarding address (a side channel beside the Raft port, on either
engine). The node listens on its own entry; on a follower, ``apply()`` sends the
command to the leader's entry and the future resolves to the leader's result.

The wire: requests ``u32 length | u8 kind (0 apply, 1 barrier) | u64 id |
command`` and replies ``u32 length | u64 id | u8 kind | payload`` on one TCP
connection per follower, pipelined. An apply's result travels with the log
index it was applied at (``ApplyFuture.index`` on the follower). A barrier's reply carries the index the
leader had applied when it resolved; the follower's future resolves once its
own FSM has applied that far, so a read there after it sees every write
acknowledged before the barrier. A result, and an exception FSM.apply
raised, travel pickled (only a follower unpickles, what the leader of its own
cluster sent); a RaftError as JSON (class, message, indeterminate, leader). A connection lost
with requests in flight fails them as indeterminate (the command may still
commit): retry through a session (``canonical_raft.sessions``) so nothing
applies twice. With ``Node(tls=...)`` (the asyncio engine) the channel
requires the same mutual TLS as the raft connections; otherwise listen on a
private network: the port accepts commands from whoever reaches it, as the uv
engine's Raft port does.
"""

from __future__ import annotations

import functools
import heapq
import json
import logging
import pickle
import queue
import socket
import struct
import threading
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, Union

from . import errors
from .config import parse_address
from ._tls_channel import TLSChannel
from .futures import Future

if TYPE_CHECKING:
    from .node import Node
    from .tls import TLS

log = logging.getLogger("canonical_raft.forwarding")

_REQ = struct.Struct("<IBQ")   # length of the rest, kind, id
_REP = struct.Struct("<IQB")   # length of the rest, id, ok
APPLY, BARRIER = 0, 1
_ERROR, _RESULT, _RAISED = 0, 1, 2  # reply kinds: a RaftError, a result, the FSM's exception
MAX_FRAME = 64 * 1024 * 1024
HANDSHAKE_TIMEOUT = 5.0  # connect, and the TLS handshake
MAX_CONNECTIONS = 64     # open forwarding connections a node serves at once
Stream = Union[socket.socket, TLSChannel]


def _read_exact(sock: Stream, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionError("closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _encode_error(exc: BaseException) -> bytes:
    doc = {"class": type(exc).__name__, "message": str(exc),
           "indeterminate": getattr(exc, "indeterminate", None),
           "leader_id": getattr(exc, "leader_id", None),
           "leader_address": getattr(exc, "leader_address", None)}
    return json.dumps(doc).encode()


def _decode_error(payload: bytes) -> BaseException:
    doc = json.loads(payload)
    cls = getattr(errors, doc.get("class", ""), None)
    if not (isinstance(cls, type) and issubclass(cls, errors.RaftError)):
        return errors.RaftError(f"the leader failed the command: {doc['class']}: "
                                f"{doc['message']}")
    if cls is errors.NotLeaderError:
        return errors.NotLeaderError(doc["message"], leader_id=doc.get("leader_id"),
                                     leader_address=doc.get("leader_address"))
    return cls(doc["message"], indeterminate=doc.get("indeterminate"))


class Server:
    """The leader side: applies what followers forward, answers in order of
    completion (ids match them up)."""

    def __init__(self, node: Node, address: str, tls: TLS | None = None) -> None:
        self.node = node
        self.served = 0  # requests followers forwarded here
        self.lock = threading.Lock()
        self.connections = 0  # open, each with its own threads
        self.context = tls.server_context() if tls is not None else None
        host, port = parse_address(address)
        self.sock = socket.create_server((host, port), reuse_port=False)
        self.thread = threading.Thread(target=self._accept, daemon=True,
                                       name=f"canonical-raft-forward-{node.id}")
        self.thread.start()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            with self.lock:
                full = self.connections >= MAX_CONNECTIONS
                if not full:
                    self.connections += 1
            if full:  # one per follower is the norm: a storm gets no threads
                log.warning("node %d: refused a forwarding connection from %s: %d open "
                            "already", self.node.id, peer, MAX_CONNECTIONS)
                conn.close()
                continue
            threading.Thread(target=self._serve_counted, args=(conn,), daemon=True).start()

    def _serve_counted(self, sock: socket.socket) -> None:
        try:
            self._serve(sock)
        finally:
            with self.lock:
                self.connections -= 1

    def _serve(self, sock: socket.socket) -> None:
        conn: Stream = sock
        if self.context is not None:
            try:
                sock.settimeout(HANDSHAKE_TIMEOUT)
                conn = TLSChannel(sock, self.context, server_side=True)
                sock.settimeout(None)
            except OSError as exc:  # ssl.SSLError included
                log.warning("node %d: refused a forwarding connection: TLS: %s",
                            self.node.id, exc)
                sock.close()
                return
        # Replies leave from a writer thread: futures resolve on the applier
        # thread, which must never wait on a socket. The queue holds at most
        # what the leader admitted (its backpressure bounds it).
        out: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()

        def write() -> None:
            while (frame := out.get()) is not None:
                try:
                    conn.sendall(frame)
                except OSError:
                    return
        threading.Thread(target=write, daemon=True).start()

        def reply(rid: int, ok: int, payload: bytes) -> None:
            out.put(_REP.pack(len(payload) + 9, rid, ok) + payload)

        def done(rid: int, kind: int, fut: Future) -> None:
            exc = fut.exception()
            try:
                if exc is None:
                    # On the applier thread: _applied is the barrier's index here;
                    # an apply's result travels with the index it was applied at.
                    result = (self.node._applied if kind == BARRIER
                              else (fut.result(), getattr(fut, "index", None)))
                    reply(rid, _RESULT, pickle.dumps(result))
                elif isinstance(exc, errors.RaftError):
                    reply(rid, _ERROR, _encode_error(exc))
                else:  # the FSM's own exception (applied; raised alike everywhere)
                    reply(rid, _RAISED, pickle.dumps(exc))
            except Exception as err:  # unpicklable: say so, the command was applied
                reply(rid, _ERROR, _encode_error(errors.RaftError(
                    f"the outcome cannot travel back: {err!r}", indeterminate=False)))

        try:
            while True:
                length, kind, rid = _REQ.unpack(_read_exact(conn, _REQ.size))
                if not 9 <= length <= MAX_FRAME or kind not in (APPLY, BARRIER):
                    log.warning("node %d: refused a forwarding connection: bad frame",
                                self.node.id)
                    return
                command = _read_exact(conn, length - 9)
                self.served += 1
                try:
                    fut = (self.node._apply_here(command) if kind == APPLY
                           else self.node._barrier_here())
                except errors.RaftError as exc:
                    reply(rid, _ERROR, _encode_error(exc))
                    continue
                fut.add_done_callback(functools.partial(done, rid, kind))
        except (ConnectionError, OSError, struct.error):
            return
        finally:
            out.put(None)
            conn.close()


class Client:
    """The follower side: one pipelined connection to the current leader."""

    def __init__(self, node: Node, addresses: Dict[int, str], tls: TLS | None = None) -> None:
        self.node = node
        self.addresses = addresses
        self.context = tls.client_context() if tls is not None else None
        self.sent = 0  # requests sent to a leader
        self.lock = threading.Lock()
        self.conn: Optional[Tuple[int, Stream]] = None
        self.pending: Dict[int, Tuple[int, Future]] = {}
        self.next_id = 1
        # Forwarded barriers the leader answered, waiting for this FSM to apply
        # as far as the leader had: (index, order, future), a heap.
        self.waiting: List[Tuple[int, int, Future]] = []
        self.waiting_lock = threading.Lock()

    def submit(self, kind: int, command: bytes, fut: Future) -> None:
        leader = self.node.leader
        target = self.addresses.get(leader.id) if leader is not None else None
        if leader is None or target is None or leader.id == self.node.id:
            fut.set_exception(errors.NotLeaderError(
                "not the leader, and no leader to forward to",
                leader_id=leader.id if leader else None,
                leader_address=leader.address if leader else None))
            return
        with self.lock:
            rid = self.next_id
            self.next_id += 1
            try:
                sock = self._connect(leader.id, target)
                self.pending[rid] = (kind, fut)
                sock.sendall(_REQ.pack(len(command) + 9, kind, rid) + command)
                self.sent += 1
            except OSError as exc:
                sent = self.pending.pop(rid, None) is not None
                self._drop(f"forwarding to node {leader.id} at {target} failed")
                if not fut.done():
                    fut.set_exception(errors.NoConnectionError(
                        f"cannot forward to the leader (node {leader.id} at {target}): {exc}",
                        indeterminate=sent))

    def _connect(self, leader_id: int, address: str) -> Stream:
        if self.conn is not None and self.conn[0] == leader_id:
            return self.conn[1]
        self._drop("the leader changed")
        host, port = parse_address(address)
        sock = socket.create_connection((host, port), timeout=HANDSHAKE_TIMEOUT)
        conn: Stream = sock
        if self.context is not None:
            try:
                conn = TLSChannel(sock, self.context, server_side=False)
            except OSError:
                sock.close()
                raise
        sock.settimeout(None)
        self.conn = (leader_id, conn)
        threading.Thread(target=self._read, args=(conn,), daemon=True).start()
        return conn

    def _drop(self, why: str) -> None:
        """Close the connection; what was in flight may still commit."""
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn[1].shutdown(socket.SHUT_RDWR)  # wakes the reader thread
            except OSError:
                pass
            conn[1].close()
        pending, self.pending = self.pending, {}
        for _, fut in pending.values():
            if not fut.done():
                fut.set_exception(errors.LeadershipLostError(
                    f"forwarded command in flight when {why}", indeterminate=True))

    def _read(self, sock: Stream) -> None:
        try:
            while True:
                length, rid, ok = _REP.unpack(_read_exact(sock, _REP.size))
                payload = _read_exact(sock, length - 9)
                with self.lock:
                    kind, fut = self.pending.pop(rid, (APPLY, None))
                if fut is None or fut.done():
                    continue
                try:
                    self._settle(kind, ok, rid, fut, payload)
                except Exception as exc:  # e.g. a result class this process lacks
                    fut.set_exception(errors.RaftError(
                        f"the leader's answer cannot be read here: {exc!r} (the command "
                        "was applied)", indeterminate=False))
        except (ConnectionError, OSError, struct.error, ValueError):
            with self.lock:
                if self.conn is not None and self.conn[1] is sock:
                    self._drop("the connection to the leader was lost")

    def _settle(self, kind: int, ok: int, rid: int, fut: Future, payload: bytes) -> None:
        if ok == _RESULT and kind == BARRIER:
            self._when_applied(int(pickle.loads(payload)), rid, fut)
        elif ok == _RESULT:
            result, index = pickle.loads(payload)
            fut.index = index  # type: ignore[attr-defined]
            fut.set_result(result)
        elif ok == _RAISED:
            fut.set_exception(pickle.loads(payload))
        else:
            fut.set_exception(_decode_error(payload))

    def _when_applied(self, index: int, order: int, fut: Future) -> None:
        with self.waiting_lock:  # the applier reads _applied, then takes this lock
            if self.node._applied < index:
                heapq.heappush(self.waiting, (index, order, fut))
                return
        fut.set_result(None)

    def applied(self, index: int) -> None:
        """The applier, after each batch: resolve the barriers now covered."""
        done = []
        with self.waiting_lock:
            while self.waiting and self.waiting[0][0] <= index:
                done.append(heapq.heappop(self.waiting)[2])
        for fut in done:
            if not fut.done():
                fut.set_result(None)

    def close(self) -> None:
        with self.lock:
            self._drop("the node closed")
        with self.waiting_lock:
            waiting, self.waiting = self.waiting, []
        for _, _, fut in waiting:
            if not fut.done():
                fut.set_exception(errors.ShutdownError(
                    "node closed before it applied as far as the leader's barrier",
                    indeterminate=False))


def check(forward: Any, node_id: int) -> Dict[int, str]:
    """Validate ``Node(forward=...)``."""
    if not isinstance(forward, dict) or node_id not in forward:
        raise errors.InvalidConfigError("forward must be a dict {id: 'host:port'} that lists "
                                        "this node")
    for sid, addr in forward.items():
        parse_address(addr, what=f"forwarding address of server {sid}")
    return dict(forward)
