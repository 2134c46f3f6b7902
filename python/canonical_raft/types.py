"""Public data types: roles, states, servers, leadership events."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from . import _core


class State(enum.IntEnum):
    """A node's Raft state. CLOSED is ours: the node was closed."""

    UNAVAILABLE = _core.states["UNAVAILABLE"]
    FOLLOWER = _core.states["FOLLOWER"]
    CANDIDATE = _core.states["CANDIDATE"]
    LEADER = _core.states["LEADER"]
    CLOSED = 100


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
    """What a node saw change: its state, its term, or who leads."""

    node_id: int
    state: State
    term: int
    leader: Leader | None

    @property
    def is_leader(self) -> bool:
        return self.state == State.LEADER
