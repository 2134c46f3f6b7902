"""The admin command line: ``canonical-raft status|add|remove|transfer``.

It talks to ``canonical-raft serve`` processes through their client ports
(the JSON-lines protocol of server.py)::

    canonical-raft status --cluster 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003
    canonical-raft add 4 127.0.0.1:9004 --cluster ...      (raft address of the new server)
    canonical-raft remove 3 --cluster ...
    canonical-raft transfer [--to 2] --cluster ...

``--cluster`` maps each member id to its CLIENT address (host:port of
``serve --client-port``), not its Raft address. ``--json`` prints one JSON
object instead of text. Membership changes and transfers go to the leader,
found by asking every node.

Exit status: 0 success (``status``: every node answered and one leads); 1 the
command failed, or (``status``) some node did not answer or no leader is
known; 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["query", "cluster_status", "main"]

COMMANDS = ("status", "add", "remove", "transfer")


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected host:port, got {text!r}")
    return host, int(port)


def _cluster_arg(text: str) -> dict[int, tuple[str, int]]:
    result: dict[int, tuple[str, int]] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip().isdigit():
            raise argparse.ArgumentTypeError(
                f"--cluster: expected 'id=host:port,...', got {part!r}")
        result[int(key)] = _address(value.strip())
    if not result:
        raise argparse.ArgumentTypeError("--cluster names no node")
    return result


class Unreachable(Exception):
    """A node did not answer (the message says how)."""


def query(address: tuple[str, int], request: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One request to one node's client port; its reply. Raises Unreachable."""
    try:
        with socket.create_connection(address, timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(json.dumps(request).encode() + b"\n")
            with sock.makefile("rb") as reader:
                line = reader.readline()
    except socket.timeout:
        raise Unreachable(f"no answer within {timeout}s") from None
    except OSError as exc:
        raise Unreachable(exc.strerror or str(exc)) from None
    if not line.endswith(b"\n"):
        raise Unreachable("closed the connection without an answer")
    try:
        reply = json.loads(line)
    except ValueError:
        raise Unreachable("answered something that is not JSON (not a serve client "
                          "port?)") from None
    if not isinstance(reply, dict):
        raise Unreachable("answered a non-object")
    return reply


def cluster_status(cluster: dict[int, tuple[str, int]], timeout: float = 2.0) -> dict[str, Any]:
    """Every node's status, in parallel, and a summary::

        {"leader": id|None, "term": n, "reachable": k, "nodes": [{"id", "address",
         "reachable", "state", "role", "term", "last_index", "commit_index",
         "last_applied", "lag", "error"}, ...]}

    ``lag`` is the leader's last index minus the node's applied index."""
    def one(item: tuple[int, tuple[str, int]]) -> tuple[int, dict[str, Any] | str]:
        sid, address = item
        try:
            return sid, query(address, {"op": "status"}, timeout)
        except Unreachable as exc:
            return sid, str(exc)
    with ThreadPoolExecutor(max(1, len(cluster))) as pool:
        answers = dict(pool.map(one, sorted(cluster.items())))
    statuses = {i: a for i, a in answers.items() if isinstance(a, dict) and "error" not in a}
    leaders = [s for s in statuses.values() if s.get("state") == "LEADER"]
    leader = max(leaders, key=lambda s: s["term"]) if leaders else None
    roles: dict[int, str] = {}
    members = (leader or next(iter(statuses.values()), {})).get("members") or []
    for m in members:
        roles[m["id"]] = m["role"]
    nodes = []
    for sid in sorted(set(cluster) | set(roles)):
        host, port = cluster.get(sid, ("?", 0))
        row: dict[str, Any] = {"id": sid, "address": f"{host}:{port}" if sid in cluster
                               else None, "role": roles.get(sid)}
        answer = answers.get(sid, "not in --cluster")
        if isinstance(answer, dict) and "error" not in answer:
            row.update(reachable=True, state=answer["state"], term=answer["term"],
                       last_index=answer["last_index"], commit_index=answer["commit_index"],
                       last_applied=answer["last_applied"], error=None,
                       lag=(leader["last_index"] - answer["last_applied"]) if leader else None)
        else:
            error = answer.get("message", answer["error"]) if isinstance(answer, dict) \
                else answer
            row.update(reachable=False, state=None, term=None, last_index=None,
                       commit_index=None, last_applied=None, lag=None, error=error)
        nodes.append(row)
    return {"leader": leader["id"] if leader else None,
            "term": max((s["term"] for s in statuses.values()), default=None),
            "reachable": len(statuses), "nodes": nodes}


def _leader_call(args: argparse.Namespace,
                 request: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """Send ``request`` to the leader: (reply, None) or ({}, problem)."""
    status = cluster_status(args.cluster, args.timeout)
    if status["reachable"] == 0:
        return {}, "no node of --cluster answered: " + "; ".join(
            f"node {n['id']}: {n['error']}" for n in status["nodes"])
    if status["leader"] is None:
        return {}, "no leader: the reachable nodes know of none (election in progress, " \
                     "or no quorum)"
    if status["leader"] not in args.cluster:
        return {}, f"the leader is node {status['leader']}, which --cluster does not name"
    try:
        reply = query(args.cluster[status["leader"]], request, args.timeout + 30)
    except Unreachable as exc:
        return {}, f"leader {status['leader']}: {exc}"
    if "error" in reply:
        return {}, f"leader {status['leader']}: {reply['error']}: {reply.get('message', '')}"
    return reply, None


# ------------------------------------------------------------------ output

def _text_status(status: dict[str, Any]) -> str:
    leader = status["leader"]
    lines = [f"leader: {leader if leader is not None else 'none known'}   "
             f"term: {status['term'] if status['term'] is not None else '-'}   "
             f"reachable: {status['reachable']}/{len(status['nodes'])}"]
    header = ("ID", "ADDRESS", "STATE", "ROLE", "LAST_INDEX", "APPLIED", "LAG")
    rows = [header]
    for n in status["nodes"]:
        if n["reachable"]:
            rows.append((str(n["id"]), n["address"] or "-", n["state"], n["role"] or "-",
                         str(n["last_index"]), str(n["last_applied"]),
                         "-" if n["lag"] is None else str(n["lag"])))
        else:
            rows.append((str(n["id"]), n["address"] or "-", "UNREACHABLE", n["role"] or "-",
                         "-", "-", "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    for n in status["nodes"]:
        if not n["reachable"]:
            lines.append(f"node {n['id']} ({n['address']}): {n['error']}")
    return "\n".join(lines)


def _emit(args: argparse.Namespace, payload: dict[str, Any], text: str, code: int) -> int:
    if args.json:
        print(json.dumps(payload, sort_keys=True))
    else:
        print(text, file=sys.stdout if code == 0 else sys.stderr)
    return code


def _fail(args: argparse.Namespace, problem: str) -> int:
    return _emit(args, {"ok": False, "error": problem}, f"error: {problem}", 1)


# ------------------------------------------------------------------ commands

def run_status(args: argparse.Namespace) -> int:
    status = cluster_status(args.cluster, args.timeout)
    healthy = status["leader"] is not None and status["reachable"] == len(args.cluster)
    status["ok"] = healthy
    if args.json:
        print(json.dumps(status, sort_keys=True))
    else:
        print(_text_status(status))
    return 0 if healthy else 1


def run_add(args: argparse.Namespace) -> int:
    reply, problem = _leader_call(args, {"op": "add", "id": args.id, "address": args.address,
                                         "role": args.role})
    if problem:
        return _fail(args, f"add {args.id}: {problem}")
    return _emit(args, reply, f"added node {args.id} at {args.address} as {args.role}", 0)


def run_remove(args: argparse.Namespace) -> int:
    reply, problem = _leader_call(args, {"op": "remove", "id": args.id})
    if problem:
        return _fail(args, f"remove {args.id}: {problem}")
    return _emit(args, reply, f"removed node {args.id}", 0)


def run_transfer(args: argparse.Namespace) -> int:
    reply, problem = _leader_call(args, {"op": "transfer", "to": args.to})
    if problem:
        return _fail(args, f"transfer: {problem}")
    return _emit(args, reply, f"leader is now node {reply.get('leader_id')}", 0)


def add_arguments(p: argparse.ArgumentParser, command: str) -> None:
    p.add_argument("--cluster", type=_cluster_arg, required=True,
                   help="every member's CLIENT address: 1=host:port,2=host:port,... "
                        "(serve's --client-port)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--timeout", type=float, default=2.0,
                   help="seconds to wait for each node's status (default 2)")
    if command == "add":
        p.add_argument("id", type=int, help="the new server's id")
        p.add_argument("address", help="the new server's RAFT address, host:port")
        p.add_argument("--role", choices=("voter", "standby", "spare"), default="voter")
    elif command == "remove":
        p.add_argument("id", type=int, help="the id of the server to remove")
    elif command == "transfer":
        p.add_argument("--to", type=int, default=None,
                       help="the voter to hand leadership to (default: the most "
                            "up-to-date one)")
    p.set_defaults(run={"status": run_status, "add": run_add, "remove": run_remove,
                        "transfer": run_transfer}[command])


HELP = {"status": "show each member's state, role, indexes and lag (via client ports)",
        "add": "add a server to the cluster (via the leader's client port)",
        "remove": "remove a server from the cluster",
        "transfer": "hand leadership to another voter"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="canonical-raft admin")
    sub = p.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        add_arguments(sub.add_parser(name, help=HELP[name]), name)
    args = p.parse_args(argv)
    code: int = args.run(args)
    return code
