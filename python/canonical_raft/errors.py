"""Every error canonical-raft raises, in one hierarchy rooted at RaftError.

Each exception keeps libraft's code (``.code``, or None when the error is ours)
and says whether the command it concerns may still commit (``.indeterminate``).
An indeterminate command was handed to Raft and then lost track of (leadership
lost, node closed while in flight, wait timed out): it may be applied later, on
every node, exactly once. Retry only commands that are safe to apply twice, or
make them idempotent (a client id + sequence number the FSM deduplicates).
"""

from __future__ import annotations

import builtins
from typing import Any

from . import _core

__all__ = [
    "RaftError", "NotLeaderError", "LeadershipLostError", "ShutdownError",
    "NoConnectionError", "TimeoutError", "BadIdError", "CantBootstrapError",
    "CantChangeError", "CorruptError", "TooBigError", "InvalidConfigError",
    "NoSpaceError", "StorageError", "DataDirLockedError", "AddressInUseError",
    "IdentityError", "error_from_code",
]


class RaftError(Exception):
    """Base of every canonical-raft error."""

    default_indeterminate = False

    def __init__(self, message: str = "", *, code: int | None = None,
                 indeterminate: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.indeterminate = (self.default_indeterminate if indeterminate is None
                              else indeterminate)

    def _state(self) -> dict[str, Any]:
        return {"code": self.code, "indeterminate": self.indeterminate}

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self._state()))


def _rebuild(cls: type[RaftError], message: str, state: dict[str, Any]) -> RaftError:
    err = cls.__new__(cls)
    RaftError.__init__(err, message, code=state.pop("code"),
                       indeterminate=state.pop("indeterminate"))
    err.__dict__.update(state)
    return err


class NotLeaderError(RaftError):
    """This node is not the leader. ``leader_id``/``leader_address`` name the
    leader it knows of (None if it knows none): send the command there. The
    message is always ``describe(leader_id, leader_address)`` unless given."""

    def __init__(self, message: str | None = None, *, code: int | None = None,
                 indeterminate: bool | None = None, leader_id: int | None = None,
                 leader_address: str | None = None) -> None:
        if message is None:
            message = self.describe(leader_id, leader_address)
        super().__init__(message, code=code, indeterminate=indeterminate)
        self.leader_id = leader_id
        self.leader_address = leader_address

    @staticmethod
    def describe(leader_id: int | None, leader_address: str | None) -> str:
        """The one wording of this error, everywhere."""
        if leader_id:
            where = f" at {leader_address}" if leader_address else ""
            return f"not the leader: the leader is node {leader_id}{where}"
        return "not the leader: no leader is known"

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "leader_id": self.leader_id,
                "leader_address": self.leader_address}


class LeadershipLostError(RaftError):
    """Leadership was lost while the command was in flight: it may still commit."""

    default_indeterminate = True


class ShutdownError(RaftError):
    """The node is closed (or closing)."""


class NoConnectionError(RaftError, ConnectionError):
    """A peer could not be reached."""


class TimeoutError(RaftError, builtins.TimeoutError):  # noqa: A001 - the name users expect
    """A wait ran out of time. The operation itself goes on and may still succeed."""

    default_indeterminate = True


class BadIdError(RaftError, ValueError):
    """A server id is invalid, unknown, or already used."""


class CantBootstrapError(RaftError):
    """The data dir already holds state, so the node cannot be bootstrapped."""


class CantChangeError(RaftError):
    """A configuration change is already in progress (one at a time)."""


class CorruptError(RaftError):
    """The data dir is damaged. The message names the file. See docs/operations.md."""


class TooBigError(RaftError, ValueError):
    """A command or snapshot is larger than the configured limit."""


class InvalidConfigError(RaftError, ValueError):
    """A Config value, address or path is unusable."""


class NoSpaceError(RaftError, OSError):
    """The disk holding the data dir is full."""


class StorageError(RaftError, OSError):
    """The data dir could not be read or written."""


class AddressInUseError(RaftError, OSError):
    """The node's address (or Config.bind_address) is already bound by another socket."""


class DataDirLockedError(RaftError):
    """Another process (or Node) is using this data dir."""


class BusyError(RaftError):
    """Too much is pending: the operation was not submitted, so it is safe to
    retry (backpressure: Config.max_pending_commands / max_pending_bytes)."""


class IdentityError(RaftError):
    """The data dir belongs to another node id or another cluster (its
    ``canonical-raft.identity`` file says which; the message names both values).
    Raised by start(); see docs/operations.md, "Data dir identity"."""


_BY_NAME = {
    "NOTLEADER": NotLeaderError,
    "LEADERSHIPLOST": LeadershipLostError,
    "SHUTDOWN": ShutdownError,
    "CANCELED": ShutdownError,
    "NOCONNECTION": NoConnectionError,
    "BADID": BadIdError,
    "DUPLICATEID": BadIdError,
    "DUPLICATEADDRESS": BadIdError,
    "BADROLE": InvalidConfigError,
    "INVALID": InvalidConfigError,
    "NAMETOOLONG": InvalidConfigError,
    "CANTBOOTSTRAP": CantBootstrapError,
    "CANTCHANGE": CantChangeError,
    "CORRUPT": CorruptError,
    "TOOBIG": TooBigError,
    "NOSPACE": NoSpaceError,
    "IOERR": StorageError,
    "NOTFOUND": BadIdError,
    "BUSY": BusyError,  # no such server (e.g. no voter to transfer to)
}
# The one table from libraft's codes (read from the compiled header) to classes.
_BY_CODE: dict[int, type[RaftError]] = {_core.codes[name]: cls for name, cls in _BY_NAME.items()}


def error_from_code(code: int, message: str = "", *, indeterminate: bool | None = None,
                    leader_id: int | None = None, leader_address: str | None = None) -> RaftError:
    """The exception for a libraft error code."""
    cls = _BY_CODE.get(code, RaftError)
    if cls is NotLeaderError:  # one wording, whatever libraft or the core said
        return NotLeaderError(code=code, indeterminate=indeterminate,
                              leader_id=leader_id or None, leader_address=leader_address or None)
    text = message or _core.strerror(code)
    return cls(text, code=code, indeterminate=indeterminate)


def from_core(exc: BaseException, *, starting: bool = False) -> RaftError:
    """Turn a _core.CoreError(code, message) into its RaftError. While starting,
    a malformed file in the data dir is corruption."""
    code, message = exc.args
    if starting and code == _core.codes["MALFORMED"]:
        return CorruptError(message or _core.strerror(code), code=code)
    return error_from_code(code, message)
