"""Public data types: roles, states, servers, leadership events."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from . import _core


class State(enum.IntEnum):
    """A node's Raft state. CLOSED and REMOVED are ours: the node was closed; or
    it is no longer a member of the cluster (the configuration it holds does not
    list it, or it applied a removal notice for itself and knows no leader since).
    A REMOVED node never campaigns; to bring it back, start it on an empty data
    dir and ``add_voter`` it again (see docs/operations.md)."""

    UNAVAILABLE = _core.states["UNAVAILABLE"]
    FOLLOWER = _core.states["FOLLOWER"]
    CANDIDATE = _core.states["CANDIDATE"]
    LEADER = _core.states["LEADER"]
    CLOSED = 100
    REMOVED = 101


class Role(enum.IntEnum):
    """A server's role in the configuration."""

    STANDBY = _core.roles["STANDBY"]  # replicates the log, does not vote
    VOTER = _core.roles["VOTER"]      # replicates and votes
    SPARE = _core.roles["SPARE"]      # neither: a member in name only


@dataclass(frozen=True)
class Server:
    id: int
    address: str
    role: Role


@dataclass(frozen=True)
class Leader:
    id: int
    address: str


@dataclass(frozen=True)
class LeadershipEvent:
    """What a node saw change: its state, its term, who leads, or its own
    membership. ``role`` is this node's role in the configuration it holds, None
    if it holds none or is not in it; ``state`` is ``State.REMOVED`` once it
    knows it was removed."""

    node_id: int
    state: State
    term: int
    leader: Leader | None
    role: Role | None = None

    @property
    def is_removed(self) -> bool:
        return self.state == State.REMOVED

    @property
    def is_leader(self) -> bool:
        return self.state == State.LEADER
