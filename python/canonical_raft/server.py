"""A node process: a Node running a KVStore, served to clients over TCP.

    python -m canonical_raft serve --id 1 --address 127.0.0.1:9001 --data-dir n1 \\
        --cluster 1=127.0.0.1:9001,2=127.0.0.1:9002,3=127.0.0.1:9003 \\
        --client-port 9101 --client-ports 1=9101,2=9102,3=9103

The client protocol is newline-delimited JSON on 127.0.0.1:<client-port>, one
reply line per request line, in order. Requests::

    {"op": "set", "key": k, "value": v, "client": c, "seq": s}
    {"op": "delete", "key": k, ...}   {"op": "incr", "key": k, "by": n, ...}
    {"op": "cas", "key": k, "expected": e, "value": v, ...}
    {"op": "get", "key": k}           local read, possibly stale, on any node
    {"op": "barrier_get", "key": k}   linearizable read, leader only (or --forward)
    {"op": "read_index", "key": k}    linearizable read, leader only (or --forward):
                                      also "index"
    {"op": "status"}                  {"op": "dump"}  (this node's whole dict)
    {"op": "journal", "from": n, "limit": m, "commands": bool}  the apply journal
    {"op": "probe"} {"op": "bulk", ...} {"op": "load", ...}  test rig: see _slowfsm.py

A reply is the KVStore result (``{"ok": ...}``) or ``{"error": name, ...}``.
A write's reply also carries "index": the raft log index its entry was applied
at (for a retry that the KVStore recognised as a duplicate: the retry's entry,
not the original's). ``read_index`` answers ``{"ok", "found", "value",
"index"}``: after a barrier on the leader, the value as of at least ``index``
(this node's applied index before the read). See ``Journal`` for the journal.
With ``--forward`` (every member's forwarding address), a follower sends writes
and barriers to the leader (Node(forward=...)) and answers them itself.
Otherwise writes on a follower answer ``{"error": "not_leader", "leader_id": id,
"leader_client": port}`` (the port from --client-ports, or null). Errors after
which the command may still commit carry ``"indeterminate": true``: retry
with the same client and seq. An optional "rid" in a request is echoed back.

Prints "READY <id>" on stdout once the node and the client port are up, and
closes the node cleanly on SIGTERM or SIGINT (exit status 0).

Engines (``--engine``): ``uv`` (the default) keeps the log in --data-dir and
runs Raft on the core's libuv thread. ``asyncio`` runs Raft's I/O as
coroutines on this process's event loop, the one that serves the clients
(``--loop uvloop`` for uvloop), and keeps its state in a store (``--store``,
required): ``memory`` (MemoryStore: everything dies with the process, so such
a node is never started twice on one data dir: see ``VOLATILE_MARKER``) or
``mdb`` (MDBStore on LMDB, in <data-dir>/mdb; durable). ``--tls-cert``,
``--tls-key`` and ``--tls-ca`` (asyncio engine only) require mutual TLS on
every raft connection. Both engines speak libraft's wire protocol, so one
cluster may mix them.

``{"op": "transfer", "to": id}`` (leader only) hands leadership to voter
``id`` (null: the most up-to-date one) and answers the leader id after it.
``{"op": "add", "id": n, "address": "host:port", "role": "voter"}`` and
``{"op": "remove", "id": n}`` (leader only) change the membership and answer
``{"ok": true, "members": [...]}``; ``status`` lists ``members`` too
(``canonical-raft status|add|remove|transfer`` use these: see admin.py).
"status" names the node's engine and store.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import logging
import os
import signal
import sys
import threading
from typing import Any

from . import _slowfsm, kv
from .config import Config
from .errors import (LeadershipLostError, NoConnectionError, NotLeaderError, RaftError,
                     ShutdownError)
from .errors import TimeoutError as RaftTimeoutError
from .node import Node
from .types import LeadershipEvent, Role

log = logging.getLogger("canonical_raft.server")

WRITE_OPS = ("set", "delete", "cas", "incr")
MAX_LINE = 16 * 1024 * 1024
ENGINES = ("uv", "asyncio")
STORES = ("memory", "mdb")
LOOPS = ("asyncio", "uvloop")
#: Left in --data-dir by a node that ran on a MemoryStore. Its Raft state (log,
#: term, vote) died with the process: started again on an empty store, the
#: node could vote twice in one term, or count towards a majority for entries
#: it no longer has. So a second start on that data dir is refused.
VOLATILE_MARKER = "memory-store-was-here"


# ------------------------------------------------------------------ arguments

def parse_map(text: str, what: str) -> dict[int, str]:
    """'1=a,2=b' -> {1: 'a', 2: 'b'}."""
    result: dict[int, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip().isdigit() or not value.strip():
            raise argparse.ArgumentTypeError(f"{what}: expected 'id=value,...', got {part!r}")
        result[int(key)] = value.strip()
    return result


def _cluster_arg(text: str) -> dict[int, str] | None:
    """An empty --cluster: a node that joins (the leader adds it), no bootstrap."""
    return parse_map(text, "--cluster") or None


def _forward_arg(text: str) -> dict[int, str]:
    return parse_map(text, "--forward")


def _ports_arg(text: str) -> dict[int, int]:
    ports = parse_map(text, "--client-ports")
    if not all(p.isdigit() for p in ports.values()):
        raise argparse.ArgumentTypeError("--client-ports: ports must be numbers")
    return {k: int(v) for k, v in ports.items()}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--id", type=int, required=True, help="this server's id (>= 1)")
    p.add_argument("--address", required=True,
                   help="Raft address, host:port: the one the cluster knows this node by "
                        "(its entry in --cluster; what peers dial)")
    p.add_argument("--bind", metavar="HOST:PORT", default=None,
                   help="listen for raft connections here instead of on --address (behind "
                        "NAT, a port mapping or a proxy; e.g. 0.0.0.0:9001)")
    p.add_argument("--data-dir", required=True, help="where the log and snapshots live")
    p.add_argument("--cluster", type=_cluster_arg, required=True,
                   help="initial members, 1=host:port,2=... (ignored once the data dir "
                        "holds state); empty (--cluster '') for a node that joins and is "
                        "added by the leader")
    p.add_argument("--client-port", type=int, required=True,
                   help="port of the JSON client protocol on 127.0.0.1")
    p.add_argument("--client-ports", type=_ports_arg, default={},
                   help="every member's client port, 1=9101,2=..., so followers can "
                        "redirect clients to the leader")
    p.add_argument("--forward", type=_forward_arg, default=None,
                   help="every member's forwarding address, 1=host:port,2=...: writes "
                        "and linearizable reads on a follower then travel to the leader "
                        "(Node(forward=...)) instead of answering not_leader")
    p.add_argument("--election-timeout", type=float, default=Config.election_timeout)
    p.add_argument("--heartbeat-timeout", type=float, default=Config.heartbeat_timeout)
    p.add_argument("--snapshot-threshold", type=int, default=Config.snapshot_threshold)
    p.add_argument("--snapshot-trailing", type=int, default=Config.snapshot_trailing)
    p.add_argument("--segment-size", type=int, default=Config.segment_size,
                   help="uv engine: bytes per log segment (1-16 MiB, a multiple of 4096)")
    p.add_argument("--max-pending-commands", type=int, default=Config.max_pending_commands,
                   help="backpressure: unresolved commands submitted on this node, at most")
    p.add_argument("--apply-timeout", type=float, default=10.0,
                   help="seconds a write may wait to commit before answering 'timeout'")
    p.add_argument("--journal-size", type=int, default=200_000,
                   help="apply journal records kept (the 'journal' op)")
    p.add_argument("--exit-with-parent", action="store_true",
                   help="stop when the parent process dies (for supervised clusters)")
    p.add_argument("--log-level", default="INFO", type=str.upper,
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    g = p.add_argument_group("engine (see the module docstring)")
    g.add_argument("--engine", choices=ENGINES, default="uv",
                   help="uv: libraft's own disk log and TCP transport (default); asyncio: "
                        "Raft's I/O on this process's event loop, state in --store")
    g.add_argument("--store", choices=STORES, default=None,
                   help="asyncio engine, required: memory (lost when the process ends; such "
                        "a node cannot be restarted) or mdb (LMDB in <data-dir>/mdb)")
    g.add_argument("--loop", choices=LOOPS, default="asyncio",
                   help="the event loop that serves clients (and runs the asyncio engine)")
    g.add_argument("--tls-cert", help="asyncio engine: this node's certificate chain (PEM)")
    g.add_argument("--tls-key", help="asyncio engine: this node's private key (PEM)")
    g.add_argument("--tls-ca", help="asyncio engine: the CA every member's certificate "
                                    "must be signed by (PEM)")
    _slowfsm.add_arguments(p)


def check_engine_arguments(args: argparse.Namespace) -> str | None:
    """What is wrong with the engine options, or None."""
    tls = [args.tls_cert, args.tls_key, args.tls_ca]
    if any(tls) and not all(tls):
        return "--tls-cert, --tls-key and --tls-ca go together"
    if args.engine == "uv":
        if args.store is not None:
            return "--store needs --engine asyncio (the uv engine keeps its log in --data-dir)"
        if any(tls):
            return ("TLS needs --engine asyncio: libraft's own TCP transport (the uv engine) "
                    "has no TLS")
    elif args.store is None:
        return ("--engine asyncio needs --store: memory (state lost when the process ends) "
                "or mdb (durable, in <data-dir>/mdb)")
    return None


class StoreUnavailable(RuntimeError):
    """The store asked for cannot be made (its module is missing, or the data
    dir already served a node whose MemoryStore is gone)."""


def make_store(kind: str, data_dir: str) -> Any:
    """The asyncio engine's store for ``--store kind``."""
    os.makedirs(data_dir, exist_ok=True)
    if kind == "mdb":
        try:
            from .store.mdb import MDBStore  # lazily: LMDB is an optional dependency
        except ImportError as exc:
            raise StoreUnavailable(f"--store mdb needs canonical_raft.store.mdb (MDBStore, on "
                                   f"LMDB), which this installation cannot import: {exc}") \
                from None
        return MDBStore(os.path.join(data_dir, "mdb"))
    marker = os.path.join(data_dir, VOLATILE_MARKER)
    if os.path.exists(marker):
        raise StoreUnavailable(
            f"{data_dir} was the data dir of a node on --store memory, whose Raft state (log, "
            f"term, vote) ended with its process; starting it again on an empty store could "
            f"vote twice in a term or lose committed entries. Use --store mdb for nodes that "
            f"restart; to bring this member back, give it a new data dir (and id) and add it "
            f"to the cluster.")
    from .store.memory import MemoryStore
    with open(marker, "w") as fh:
        fh.write(f"pid {os.getpid()}\n")
    return MemoryStore()


def tls_of(args: argparse.Namespace) -> Any:
    if not args.tls_cert:
        return None
    from .tls import TLS
    return TLS(cert=args.tls_cert, key=args.tls_key, ca=args.tls_ca)


# ------------------------------------------------------------------ requests

def _error(name: str, message: str = "", **extra: Any) -> dict:
    return {"error": name, "message": message, **extra}


def _raft_error(exc: RaftError) -> dict:
    if isinstance(exc, LeadershipLostError):
        name = "leadership_lost"
    elif isinstance(exc, ShutdownError):
        name = "shutdown"
    elif isinstance(exc, NoConnectionError):
        name = "no_connection"
    elif isinstance(exc, RaftTimeoutError):
        name = "timeout"
    else:
        name = "raft_error"
    return _error(name, str(exc), indeterminate=exc.indeterminate)


def _command(op: str, req: dict) -> bytes:
    """The KVStore command for a write request (raises ValueError/TypeError/KeyError)."""
    ident = {"client": req.get("client"), "seq": req.get("seq")}
    key = req["key"]
    if op == "set":
        return kv.set_cmd(key, req.get("value"), **ident)
    if op == "delete":
        return kv.delete_cmd(key, **ident)
    if op == "cas":
        return kv.cas_cmd(key, req.get("expected"), req.get("value"), **ident)
    return kv.incr_cmd(key, req.get("by", 1), **ident)


# ------------------------------------------------------------------ apply journal

def digest(data: bytes) -> str:
    """The journal's digest of one command (hex, 128 bits of sha256)."""
    return hashlib.sha256(data).hexdigest()[:32]


def entry_digest(commands: list[bytes]) -> str:
    """The digest of one log entry: the digests of its commands, in order (an
    entry may carry several commands: the core batches concurrent applies)."""
    if len(commands) == 1:
        return digest(commands[0])
    return digest(b"".join(len(c).to_bytes(8, "little") + c for c in commands))


class Journal:
    """What this node applied, entry by entry, since it started (bounded: the
    last ``size`` records; older ones are dropped and counted).

    Records, in apply order, each with a sequence number ``n`` (from 0, over the
    process's life):

    * ``{"n", "index", "digest"}``: the command entry at ``index`` (``digest``
      is ``entry_digest`` of its commands);
    * ``{"n", "noop": [first, last]}``: entries that carried no command
      (barriers, configuration changes, the leader's no-op);
    * ``{"n", "restore": index}``: the FSM was replaced by a snapshot taken at
      ``index`` (the next entry is ``index + 1``); ``null`` if not yet known.

    How the index is learned: FSM.apply is not told its index, but the applier
    thread assigns ``node._applied = index`` right after it applied every
    command of an entry, and also when raft applied entries with no command
    (ADVANCE, events) or restored a snapshot, in log order, on that same
    thread. ``JournalNode`` turns that assignment into ``advance(index)``: the
    commands applied since the last advance belong to the entry at ``index``;
    indices between are no-op entries; right after a restore, the restored
    state is the log up to ``index - 1`` if commands are pending (their entry is
    ``index``), else up to ``index``. Using ``node.last_applied + 1`` inside
    apply would be wrong: a barrier applied just before a command reaches the
    applier in the same batch, with no separate ADVANCE.
    """

    def __init__(self, size: int = 200_000) -> None:
        self._lock = threading.Lock()
        self._records: collections.deque = collections.deque(maxlen=size)
        self._next = 0          # sequence number of the next record
        self._last = 0          # the last index accounted for
        self._pending: list[tuple[bytes, bool]] = []   # (command, deduplicated)
        self._restore_pending = False

    # on the applier thread
    def command(self, command: bytes, duplicate: bool) -> None:
        self._pending.append((command, duplicate))

    def restored(self) -> None:
        with self._lock:
            if self._pending:  # cannot happen: advance follows every entry
                self._pending.clear()
            self._restore_pending = True

    def _add(self, record: dict) -> None:
        record["n"] = self._next
        self._next += 1
        self._records.append(record)

    def advance(self, index: int) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            if self._restore_pending:
                if not pending and index <= 0:
                    self._pending = pending
                    return
                self._restore_pending = False
                self._last = index - 1 if pending else index
                self._add({"restore": self._last})
            if pending:
                if index - 1 > self._last:
                    self._add({"noop": [self._last + 1, index - 1]})
                self._add({"index": index,
                           "digest": entry_digest([c for c, _ in pending]),
                           "commands": pending})
                self._last = max(self._last, index)
            elif index > self._last:
                self._add({"noop": [self._last + 1, index]})
                self._last = index

    # any thread
    def read(self, start: int = 0, limit: int = 10_000, commands: bool = False) -> dict:
        with self._lock:
            first = self._next - len(self._records)
            start = max(start, first)
            picked = [self._records[i - first]
                      for i in range(start, min(self._next, start + limit))]
            last, restore_pending = self._last, self._restore_pending
            end = self._next
        out = []
        for rec in picked:
            rec = dict(rec)
            cmds = rec.pop("commands", None)
            if commands and cmds is not None:
                rec["commands"] = [{"cmd": json.loads(c) if _is_json(c) else None,
                                    "dup": dup} for c, dup in cmds]
            out.append(rec)
        return {"ok": True, "first": first, "next": start + len(picked), "end": end,
                "last_index": last, "restore_pending": restore_pending, "entries": out}


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


class JournalStore(kv.KVStore):
    """A KVStore that reports each applied command (and whether the KVStore
    deduplicated it) and each restore to a Journal."""

    def __init__(self, journal: Journal, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.journal = journal

    def apply(self, command: bytes) -> dict:
        duplicate = False
        try:
            cmd = json.loads(command)
            client, seq = cmd.get("c"), cmd.get("s")
            if isinstance(client, str) and isinstance(seq, int):
                duplicate = seq <= self.last_seq(client)
        except (ValueError, AttributeError):
            pass
        try:
            return super().apply(command)
        finally:
            self.journal.command(command, duplicate)

    def restore(self, snapshot: bytes) -> None:
        super().restore(snapshot)
        self.journal.restored()


class JournalNode(Node):
    """A Node that tells its Journal each time its applied index is set (on the
    applier thread, in log order: see Journal)."""

    def __init__(self, *args: Any, journal: Journal, **kwargs: Any) -> None:
        self._journal = journal
        super().__init__(*args, **kwargs)

    @property  # type: ignore[override]
    def _applied(self) -> int:
        return self.__dict__.get("_applied_value", 0)

    @_applied.setter
    def _applied(self, value: int) -> None:
        self.__dict__["_applied_value"] = value
        if value:
            self._journal.advance(value)


class Handler:
    """Answers client requests against one node and its KVStore."""

    def __init__(self, node: Node, store: kv.KVStore, client_ports: dict[int, int],
                 apply_timeout: float, extra_ops: dict[str, Any] | None = None,
                 store_kind: str | None = None) -> None:
        self.node = node
        self.store_kind = store_kind  # the asyncio engine's --store
        self.store = store
        self.client_ports = client_ports
        self.apply_timeout = apply_timeout
        self.extra_ops = extra_ops or {}  # op -> async fn(handler, request)

    def not_leader(self, leader_id: int | None = None) -> dict:
        if not leader_id:
            leader = self.node.leader
            leader_id = leader.id if leader is not None else None
        if leader_id == self.node.id:  # we just lost it: the client should look again
            leader_id = None
        return _error("not_leader", "this node is not the leader", leader_id=leader_id,
                      leader_client=self.client_ports.get(leader_id) if leader_id else None)

    async def handle(self, req: Any) -> dict:
        if not isinstance(req, dict):
            return _error("bad_request", "a request is a JSON object")
        op = req.get("op")
        try:
            if op in WRITE_OPS:
                return await self.write(op, req)
            if op == "get":
                return self.read(req)
            if op == "barrier_get":
                return await self.barrier_get(req)
            if op == "read_index":
                return await self.read_index(req)
            if op == "journal":
                return self.journal(req)
            if op == "status":
                return self.status()
            if op == "transfer":
                return await self.transfer(req)
            if op == "add":
                return await self.add(req)
            if op == "remove":
                return await self.remove(req)
            if op == "dump":
                return {"ok": True, "id": self.node.id, "last_applied": self.node.last_applied,
                        "data": self.store.dump()}
            if op in self.extra_ops:
                return await self.extra_ops[op](self, req)
        except (KeyError, TypeError, ValueError) as exc:
            return _error("bad_request", f"{op}: {exc!r}")
        except NotLeaderError as exc:
            return self.not_leader(exc.leader_id)
        except RaftError as exc:
            return _raft_error(exc)
        except Exception as exc:  # a bug of ours: answer, log, keep serving
            log.exception("request %r failed", op)
            return _error("internal_error", repr(exc))
        return _error("bad_request", f"unknown op {op!r}")

    async def _wait(self, fut: Any) -> Any:
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), self.apply_timeout)
        except asyncio.TimeoutError as exc:
            if isinstance(exc, RaftError):
                raise
            # Raft futures cannot be withdrawn: the command goes on and may commit.
            raise RaftTimeoutError(f"no outcome within {self.apply_timeout}s",
                                   indeterminate=True) from None

    async def write(self, op: str, req: dict) -> dict:
        command = _command(op, req)
        if not self._here_or_forwarded():  # cheap early answer; the core checks again
            return self.not_leader()
        fut = self.node.apply(command)
        result = await self._wait(fut)
        if isinstance(result, dict):
            result = {**result, "index": fut.index}
        return result

    def _here_or_forwarded(self) -> bool:
        """Writes and linearizable reads run here on the leader, or on a follower
        that forwards them (--forward): a forwarded barrier resolves once this
        node applied as far as the leader had, so the local read after it is
        linearizable too."""
        return self.node.is_leader or self.node.forwards

    def read(self, req: dict) -> dict:
        key = req["key"]
        if not isinstance(key, str):
            raise TypeError("key must be a string")
        found = key in self.store
        return {"ok": True, "found": found, "value": self.store.get(key)}

    async def barrier_get(self, req: dict) -> dict:
        if not isinstance(req.get("key"), str):
            raise TypeError("key must be a string")
        if not self._here_or_forwarded():
            return self.not_leader()
        await self._wait(self.node.barrier())
        return self.read(req)

    async def read_index(self, req: dict) -> dict:
        """A linearizable read with the index it was served at: after a
        barrier on the leader (every entry committed before it is applied
        here), this node's applied index, then the value (which reflects at
        least that index)."""
        if not isinstance(req.get("key"), str):
            raise TypeError("key must be a string")
        if not self._here_or_forwarded():
            return self.not_leader()
        await self._wait(self.node.barrier())
        index = self.node.last_applied
        return {**self.read(req), "index": index}

    async def transfer(self, req: dict) -> dict:
        to = req.get("to")
        if to is not None and (not isinstance(to, int) or isinstance(to, bool)):
            raise TypeError("to must be a server id or null")
        if not self.node.is_leader:
            return self.not_leader()
        leader_id = await self._wait(self.node.transfer(to))
        return {"ok": True, "leader_id": leader_id}

    async def add(self, req: dict) -> dict:
        """Membership (leader only): add server ``id`` at raft ``address`` as
        ``role`` ("voter", the default: added, caught up, promoted; "standby";
        "spare")."""
        sid, address, role = req["id"], req["address"], req.get("role", "voter")
        if not isinstance(sid, int) or isinstance(sid, bool) or not isinstance(address, str):
            raise TypeError("add needs an int id and a str address")
        if role not in ("voter", "standby", "spare"):
            raise ValueError(f"role must be voter, standby or spare, not {role!r}")
        if not self.node.is_leader:
            return self.not_leader()
        if role == "voter":
            await self._wait(self.node.add_voter(sid, address))
        else:
            await self._wait(self.node.add(sid, address))
            if role == "standby":
                await self._wait(self.node.assign(sid, Role.STANDBY))
        return {"ok": True, "members": self.members()}

    async def remove(self, req: dict) -> dict:
        """Membership (leader only): remove server ``id``."""
        sid = req["id"]
        if not isinstance(sid, int) or isinstance(sid, bool):
            raise TypeError("remove needs an int id")
        if not self.node.is_leader:
            return self.not_leader()
        await self._wait(self.node.remove(sid))
        return {"ok": True, "members": self.members()}

    def members(self) -> list[dict]:
        return [{"id": m.id, "address": m.address, "role": m.role.name.lower()}
                for m in self.node.configuration]

    def journal(self, req: dict) -> dict:
        journal = getattr(self.node, "_journal", None)
        if journal is None:
            return _error("unavailable", "this node keeps no apply journal")
        start, limit = req.get("from", 0), req.get("limit", 10_000)
        if not isinstance(start, int) or not isinstance(limit, int) or limit < 1:
            raise ValueError("from and limit must be integers (limit >= 1)")
        reply = journal.read(start, min(limit, 100_000), bool(req.get("commands")))
        return {**reply, "id": self.node.id, "last_applied": self.node.last_applied}

    def status(self) -> dict:
        node = self.node
        leader = node.leader
        leader_id = leader.id if leader is not None else None
        stats = node.stats()
        return {"ok": True, "id": node.id, "state": node.state.name, "term": node.term,
                "leader_id": leader_id,
                "leader_client": self.client_ports.get(leader_id) if leader_id else None,
                "last_applied": node.last_applied, "commit_index": node.commit_index,
                "last_index": node.last_index, "keys": len(self.store), "pid": os.getpid(),
                "snapshots_taken": stats["snapshots_taken"],
                "snapshots_restored": stats["snapshots_restored"],
                "forwarded_sent": stats["forwarded_sent"],
                "forwarded_served": stats["forwarded_served"],
                "engine": node.engine, "store": self.store_kind,
                "members": self.members()}


# ------------------------------------------------------------------ the process

class Server:
    """The asyncio side: client connections, signals, parent watch."""

    def __init__(self, handler: Handler, port: int, exit_with_parent: bool) -> None:
        self.handler = handler
        self.port = port
        self.exit_with_parent = exit_with_parent
        self.writers: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task] = set()

    async def connection(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                try:
                    req = json.loads(line)
                except ValueError:
                    reply = _error("bad_request", "not a JSON line")
                else:
                    reply = await self.handler.handle(req)
                    if isinstance(req, dict) and "rid" in req:
                        reply["rid"] = req["rid"]
                writer.write(json.dumps(reply, separators=(",", ":")).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError):
            pass  # the client went away or sent a line over MAX_LINE
        except asyncio.CancelledError:
            # Shutdown (run() cancels us): end quietly. Re-raising would make
            # asyncio's StreamReaderProtocol log a CancelledError traceback.
            pass
        finally:
            self.tasks.discard(task)
            self.writers.discard(writer)
            writer.close()

    async def _watch_parent(self, stop: asyncio.Event) -> None:
        parent = os.getppid()
        while os.getppid() == parent:
            await asyncio.sleep(0.5)
        log.warning("parent process %d is gone: stopping", parent)
        stop.set()

    async def run(self, ready: str, stop: asyncio.Event | None = None) -> None:
        if stop is None:
            stop = stop_on_signals()
        server = await asyncio.start_server(self.connection, "127.0.0.1", self.port,
                                            limit=MAX_LINE)
        watcher = asyncio.create_task(self._watch_parent(stop)) if self.exit_with_parent \
            else None
        print(ready, flush=True)
        await stop.wait()
        server.close()
        # Cancel and await the connection tasks here, rather than leave them to
        # asyncio.run's final cancellation (which logged a traceback).
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for writer in list(self.writers):
            writer.close()
        if watcher is not None:
            watcher.cancel()
            try:
                await watcher
            except asyncio.CancelledError:
                pass


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (on the running loop)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _log_event(event: LeadershipEvent) -> None:
    who = event.leader.id if event.leader else None
    log.info("state %s, term %d, leader %s", event.state.name, event.term, who)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format=f"%(asctime)s node {args.id} %(name)s %(levelname)s %(message)s")
    problem = check_engine_arguments(args)
    if problem:
        print(f"error: node {args.id}: {problem}", file=sys.stderr)
        return 2
    if args.loop == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            print(f"error: node {args.id}: --loop uvloop needs uvloop (pip install uvloop)",
                  file=sys.stderr)
            return 2
    # Until the event loop takes the signals over, SIGTERM interrupts like
    # Ctrl-C: a server stopped while starting still closes its node, exit 0.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    config = Config(election_timeout=args.election_timeout,
                    heartbeat_timeout=args.heartbeat_timeout,
                    snapshot_threshold=args.snapshot_threshold,
                    snapshot_trailing=args.snapshot_trailing,
                    segment_size=args.segment_size,
                    max_pending_commands=args.max_pending_commands,
                    bind_address=args.bind)
    journal = Journal(args.journal_size)
    store = JournalStore(journal)
    rig = _slowfsm.Rig.from_args(args, store)  # the store, or a SlowFSM around it
    if args.engine == "asyncio":
        try:
            return _run_loop(args.loop, _serve_asyncio(args, config, journal, store, rig))
        except KeyboardInterrupt:  # before the loop took the signals over
            return 0
    node: Node | None = None
    try:
        try:
            node = JournalNode(args.id, args.address, rig.fsm, args.data_dir,
                               cluster=args.cluster, config=config, journal=journal,
                               forward=args.forward)
            node.on_leadership_change(_log_event)
            node.start()
        except (RaftError, ValueError, TypeError) as exc:
            print(f"error: node {args.id} could not start: {exc}", file=sys.stderr)
            return 1
        handler = Handler(node, store, args.client_ports, args.apply_timeout, rig.start(node))
        _run_loop(args.loop, Server(handler, args.client_port, args.exit_with_parent)
                  .run(f"READY {args.id}"))
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # the client port is taken
        print(f"error: node {args.id}: client port {args.client_port}: {exc}",
              file=sys.stderr)
        return 1
    finally:
        rig.close()
        if node is not None:
            node.close()
    log.info("closed")
    return 0


def _run_loop(kind: str, main: Any) -> Any:
    if kind == "uvloop":
        import uvloop
        return uvloop.run(main)
    return asyncio.run(main)


async def _serve_asyncio(args: argparse.Namespace, config: Config, journal: Journal,
                         store: JournalStore, rig: _slowfsm.Rig) -> int:
    """The asyncio engine: the node runs on this loop, beside the client server."""
    stop = stop_on_signals()
    try:
        raft_store = await asyncio.to_thread(make_store, args.store, args.data_dir)
    except (StoreUnavailable, OSError) as exc:
        print(f"error: node {args.id} could not start: {exc}", file=sys.stderr)
        return 1
    node = JournalNode(args.id, args.address, rig.fsm, args.data_dir, cluster=args.cluster,
                       config=config, journal=journal, engine="asyncio", store=raft_store,
                       tls=tls_of(args), forward=args.forward)
    node.on_leadership_change(_log_event)
    try:
        await node.astart()
    except (RaftError, ValueError, TypeError) as exc:
        if args.store == "memory":  # raft never ran: nothing to forget
            try:
                os.remove(os.path.join(args.data_dir, VOLATILE_MARKER))
            except OSError:
                pass
        print(f"error: node {args.id} could not start: {exc}", file=sys.stderr)
        return 1
    try:
        if not stop.is_set():
            handler = Handler(node, store, args.client_ports, args.apply_timeout,
                              rig.start(node), store_kind=args.store)
            await Server(handler, args.client_port, args.exit_with_parent).run(
                f"READY {args.id}", stop)
    except OSError as exc:  # the client port is taken
        print(f"error: node {args.id}: client port {args.client_port}: {exc}",
              file=sys.stderr)
        return 1
    finally:
        await asyncio.to_thread(rig.close)
        await node.aclose()
    log.info("closed")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="canonical-raft serve", description=__doc__.split("\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
