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
    {"op": "barrier_get", "key": k}   linearizable read, leader only
    {"op": "status"}                  {"op": "dump"}  (this node's whole dict)

A reply is the KVStore result (``{"ok": ...}``) or ``{"error": name, ...}``.
Writes on a follower answer ``{"error": "not_leader", "leader_id": id,
"leader_client": port}`` (the port from --client-ports, or null). Errors after
which the command may still commit carry ``"indeterminate": true``: retry
with the same client and seq. An optional "rid" in a request is echoed back.

Prints "READY <id>" on stdout once the node and the client port are up, and
closes the node cleanly on SIGTERM or SIGINT (exit status 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from typing import Any

from . import kv
from .config import Config
from .errors import (LeadershipLostError, NoConnectionError, NotLeaderError, RaftError,
                     ShutdownError)
from .errors import TimeoutError as RaftTimeoutError
from .node import Node
from .types import LeadershipEvent

log = logging.getLogger("canonical_raft.server")

WRITE_OPS = ("set", "delete", "cas", "incr")
MAX_LINE = 16 * 1024 * 1024


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


def _cluster_arg(text: str) -> dict[int, str]:
    return parse_map(text, "--cluster")


def _ports_arg(text: str) -> dict[int, int]:
    ports = parse_map(text, "--client-ports")
    if not all(p.isdigit() for p in ports.values()):
        raise argparse.ArgumentTypeError("--client-ports: ports must be numbers")
    return {k: int(v) for k, v in ports.items()}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--id", type=int, required=True, help="this server's id (>= 1)")
    p.add_argument("--address", required=True, help="Raft address, host:port")
    p.add_argument("--data-dir", required=True, help="where the log and snapshots live")
    p.add_argument("--cluster", type=_cluster_arg, required=True,
                   help="initial members, 1=host:port,2=... (ignored once the data dir "
                        "holds state)")
    p.add_argument("--client-port", type=int, required=True,
                   help="port of the JSON client protocol on 127.0.0.1")
    p.add_argument("--client-ports", type=_ports_arg, default={},
                   help="every member's client port, 1=9101,2=..., so followers can "
                        "redirect clients to the leader")
    p.add_argument("--election-timeout", type=float, default=Config.election_timeout)
    p.add_argument("--heartbeat-timeout", type=float, default=Config.heartbeat_timeout)
    p.add_argument("--snapshot-threshold", type=int, default=Config.snapshot_threshold)
    p.add_argument("--snapshot-trailing", type=int, default=Config.snapshot_trailing)
    p.add_argument("--apply-timeout", type=float, default=10.0,
                   help="seconds a write may wait to commit before answering 'timeout'")
    p.add_argument("--exit-with-parent", action="store_true",
                   help="stop when the parent process dies (for supervised clusters)")
    p.add_argument("--log-level", default="INFO", type=str.upper,
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"])


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


class Handler:
    """Answers client requests against one node and its KVStore."""

    def __init__(self, node: Node, store: kv.KVStore, client_ports: dict[int, int],
                 apply_timeout: float) -> None:
        self.node = node
        self.store = store
        self.client_ports = client_ports
        self.apply_timeout = apply_timeout

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
            if op == "status":
                return self.status()
            if op == "dump":
                return {"ok": True, "id": self.node.id, "last_applied": self.node.last_applied,
                        "data": self.store.dump()}
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
        if not self.node.is_leader:  # cheap early answer; the core checks again
            return self.not_leader()
        return await self._wait(self.node.apply(command))

    def read(self, req: dict) -> dict:
        key = req["key"]
        if not isinstance(key, str):
            raise TypeError("key must be a string")
        found = key in self.store
        return {"ok": True, "found": found, "value": self.store.get(key)}

    async def barrier_get(self, req: dict) -> dict:
        if not isinstance(req.get("key"), str):
            raise TypeError("key must be a string")
        if not self.node.is_leader:
            return self.not_leader()
        await self._wait(self.node.barrier())
        return self.read(req)

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
                "snapshots_restored": stats["snapshots_restored"]}


# ------------------------------------------------------------------ the process

class Server:
    """The asyncio side: client connections, signals, parent watch."""

    def __init__(self, handler: Handler, port: int, exit_with_parent: bool) -> None:
        self.handler = handler
        self.port = port
        self.exit_with_parent = exit_with_parent
        self.writers: set[asyncio.StreamWriter] = set()

    async def connection(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
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
        finally:
            self.writers.discard(writer)
            writer.close()

    async def _watch_parent(self, stop: asyncio.Event) -> None:
        parent = os.getppid()
        while os.getppid() == parent:
            await asyncio.sleep(0.5)
        log.warning("parent process %d is gone: stopping", parent)
        stop.set()

    async def run(self, ready: str) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        server = await asyncio.start_server(self.connection, "127.0.0.1", self.port,
                                            limit=MAX_LINE)
        watcher = asyncio.create_task(self._watch_parent(stop)) if self.exit_with_parent \
            else None
        print(ready, flush=True)
        await stop.wait()
        server.close()
        for writer in list(self.writers):
            writer.close()
        if watcher is not None:
            watcher.cancel()


def _log_event(event: LeadershipEvent) -> None:
    who = event.leader.id if event.leader else None
    log.info("state %s, term %d, leader %s", event.state.name, event.term, who)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format=f"%(asctime)s node {args.id} %(name)s %(levelname)s %(message)s")
    # Until the event loop takes the signals over, SIGTERM interrupts like
    # Ctrl-C: a server stopped while starting still closes its node, exit 0.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    config = Config(election_timeout=args.election_timeout,
                    heartbeat_timeout=args.heartbeat_timeout,
                    snapshot_threshold=args.snapshot_threshold,
                    snapshot_trailing=args.snapshot_trailing)
    store = kv.KVStore()
    node: Node | None = None
    try:
        try:
            node = Node(args.id, args.address, store, args.data_dir, cluster=args.cluster,
                        config=config)
            node.on_leadership_change(_log_event)
            node.start()
        except (RaftError, ValueError, TypeError) as exc:
            print(f"error: node {args.id} could not start: {exc}", file=sys.stderr)
            return 1
        handler = Handler(node, store, args.client_ports, args.apply_timeout)
        asyncio.run(Server(handler, args.client_port, args.exit_with_parent)
                    .run(f"READY {args.id}"))
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # the client port is taken
        print(f"error: node {args.id}: client port {args.client_port}: {exc}",
              file=sys.stderr)
        return 1
    finally:
        if node is not None:
            node.close()
    log.info("closed")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="canonical-raft serve", description=__doc__.split("\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
