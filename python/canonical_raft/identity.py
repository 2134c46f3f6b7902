"""A data dir's identity (which node, which cluster) and the reserved log
records that carry it: the cluster id to joiners, and a removal notice to a
server being removed (libraft never sends a removed server the entry that
removes it).

The identity file, ``canonical-raft.identity`` beside raft_uv's files, is JSON::

    {"version": 1, "node_id": 1, "cluster_id": "3f0c9d1e7a2b4c65", "removed_at": null}

- ``cluster_id`` is derived from the bootstrap configuration: the first 16 hex
  digits of the SHA-256 of the sorted ``cluster`` dict. Every bootstrapping member
  passes the same dict, so they agree without talking. A joiner (empty dir, no
  ``cluster``) starts with ``null`` and adopts the id from the first
  cluster-id record it applies; leaders append one when they are elected and
  after every promotion (``assign``/``add_voter``).
- ``removed_at`` is the log index of a removal notice for this node (see
  ``Node.remove``); it is cleared by any later cluster-id record.

Records are commands that start with ``RECORD_PREFIX`` followed by JSON; the
applier hands them here, never to the FSM. ``Node.apply`` refuses user commands
that start with the prefix. Every function that touches a node runs on its
applier thread, except ``prepare``, which start() calls before the applier runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable

from ._preflight import has_raft_state
from .errors import CorruptError, IdentityError, StorageError

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("canonical_raft")

IDENTITY_FILE = "canonical-raft.identity"
RECORD_PREFIX = b"\x00canonical-raft/reserved\x00"
_VERSION = 1


@dataclass(frozen=True)
class Identity:
    node_id: int
    cluster_id: str | None
    removed_at: int | None = None


def cluster_id_for(cluster: list[tuple[int, str]] | dict[int, str]) -> str:
    """The cluster id every member bootstrapped with ``cluster`` derives alike.

    Only the member ids count: members may legitimately know each other under
    different addresses (a proxy, NAT, a host name against an IP), and every
    such view must give one cluster id."""
    text = json.dumps(sorted(dict(cluster)), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ------------------------------------------------------------------ the file

def read(data_dir: str) -> Identity | None:
    """The identity stored in data_dir, None if there is none; CorruptError if
    the file cannot be decoded."""
    path = os.path.join(data_dir, IDENTITY_FILE)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}") from None
    try:
        doc = json.loads(raw)
        node_id = doc["node_id"]
        cluster_id = doc["cluster_id"]
        removed_at = doc.get("removed_at")
        if not isinstance(node_id, int) or node_id <= 0 or \
                not (cluster_id is None or isinstance(cluster_id, str)) or \
                not (removed_at is None or isinstance(removed_at, int)):
            raise ValueError("bad field types")
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptError(f"{path} is damaged ({exc}); it names the node and cluster this "
                           "data dir belongs to: see docs/operations.md") from None
    return Identity(node_id, cluster_id, removed_at)


def write(data_dir: str, identity: Identity) -> None:
    """Store atomically: a temp file, fsync, rename over the old one, fsync the dir."""
    path = os.path.join(data_dir, IDENTITY_FILE)
    tmp = path + ".tmp"
    doc = {"version": _VERSION, "node_id": identity.node_id,
           "cluster_id": identity.cluster_id, "removed_at": identity.removed_at}
    data = (json.dumps(doc, indent=1) + "\n").encode()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        dfd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror}") from None


def prepare(data_dir: str, node_id: int, cluster: list[tuple[int, str]],
            has_state: bool | None = None, volatile: bool = False) -> Identity:
    """Check data_dir against the node about to start there and write its
    identity. Raises IdentityError naming both values on a mismatch."""
    stored = read(data_dir)
    wanted = cluster_id_for(cluster) if cluster else None
    # The uv engine's state is its files; the asyncio engine's is in its store.
    state = has_raft_state(data_dir) if has_state is None else has_state
    if not state and volatile and stored is not None and stored.cluster_id is not None:
        # Asyncio engine: this dir served a member of a cluster, but the
        # volatile store it is given now is empty (a new MemoryStore after a
        # restart): starting would forget its term and vote, so it could vote
        # twice. (An empty durable store only means nothing was written yet:
        # a node votes only after a durable write.)
        raise IdentityError(f"data dir {data_dir} belongs to node {stored.node_id} of cluster "
                            f"{stored.cluster_id}, but its store is empty: the node would have "
                            "forgotten its term and vote (it could vote twice). Start it on the "
                            "store it ran on, or on an empty data dir to join as a new member")
    if not state:
        # Nothing of Raft's here yet: the dir is new (or a start failed before
        # Raft wrote anything), so any identity in it binds nothing.
        if stored is not None and (stored.node_id, stored.cluster_id) != (node_id, wanted):
            log.warning("node %d: %s holds no Raft state; replacing its identity (node %d, "
                        "cluster %s)", node_id, data_dir, stored.node_id, stored.cluster_id)
        identity = Identity(node_id, wanted)
        if identity != stored:
            write(data_dir, identity)
        return identity
    if stored is None:
        identity = Identity(node_id, wanted)
        write(data_dir, identity)
        log.warning("node %d: %s holds Raft state but no identity file (made before "
                    "canonical-raft kept one): adopted node id %d and cluster id %s%s",
                    node_id, data_dir, node_id, wanted or "(unknown until a leader announces it)",
                    " from cluster=" if wanted else "")
        return identity
    if stored.node_id != node_id:
        raise IdentityError(f"data dir {data_dir} belongs to node {stored.node_id}, not to node "
                            f"{node_id}: start node {stored.node_id} on it, or give node "
                            f"{node_id} its own data dir")
    if wanted is not None:
        if stored.cluster_id is not None and stored.cluster_id != wanted:
            raise IdentityError(f"data dir {data_dir} belongs to cluster {stored.cluster_id}, not "
                                f"to cluster {wanted} (the one cluster= describes): pass the "
                                "cluster dict it was bootstrapped with, no cluster= to run on "
                                "the state it holds, or an empty data dir to bootstrap anew")
        log.info("node %d: cluster= is ignored: %s already holds the state of cluster %s",
                 node_id, data_dir, stored.cluster_id or "(id not yet announced)")
    return stored


# ------------------------------------------------------------------ records

def announce(cluster_id: str) -> bytes:
    return RECORD_PREFIX + json.dumps({"cluster_id": cluster_id}).encode()


def removing(node_id: int) -> bytes:
    return RECORD_PREFIX + json.dumps({"removing": node_id}).encode()


def apply_hook(node: Node, index: int) -> Callable[[bytes], Any]:
    """FSM.apply for the commands of the entry at ``index``, with our records
    taken out (they resolve to None)."""
    fsm_apply = node._fsm.apply

    def apply(data: bytes) -> Any:
        if data.startswith(RECORD_PREFIX):
            on_record(node, index, data)
            return None
        return fsm_apply(data)
    return apply


def on_record(node: Node, index: int, data: bytes) -> None:
    try:
        doc = json.loads(data[len(RECORD_PREFIX):])
    except ValueError:
        log.error("node %d: reserved record at index %d does not decode; ignored",
                  node.id, index)
        return
    current = node._identity
    if current is None:  # not started through Node.start (cannot happen)
        return
    if "cluster_id" in doc:
        cid = doc["cluster_id"]
        updated = current
        if current.cluster_id is None:
            log.info("node %d: joined cluster %s (announced at index %d)", node.id, cid, index)
            updated = replace(updated, cluster_id=cid)
        elif current.cluster_id != cid:
            log.error("node %d: the leader announces cluster %s but this data dir belongs to "
                      "cluster %s; keeping %s (see docs/operations.md, data dir identity)",
                      node.id, cid, current.cluster_id, current.cluster_id)
        if current.removed_at is not None and index > current.removed_at:
            log.info("node %d: still a member after the removal notice at index %d",
                     node.id, current.removed_at)
            updated = replace(updated, removed_at=None)
        _store(node, updated)
    elif doc.get("removing") == node.id:
        log.warning("node %d: the leader is removing this node from the cluster (notice at "
                    "index %d)", node.id, index)
        _store(node, replace(current, removed_at=index))


def _store(node: Node, identity: Identity) -> None:
    if identity == node._identity:
        return
    node._identity = identity
    if node.data_dir is None:  # asyncio engine without a data dir: kept in memory
        return
    try:
        write(node.data_dir, identity)
    except StorageError as exc:  # the in-memory identity still holds; retried next change
        log.error("node %d: %s", node.id, exc)
