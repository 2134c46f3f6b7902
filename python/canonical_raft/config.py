"""Node configuration: a plain dataclass, its defaults, and its validation."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from dataclasses import dataclass
from typing import Any

from . import _core
from .errors import InvalidConfigError

MiB = 1024 * 1024
MAX_SEGMENT = 16 * MiB
_MAX_SECONDS = 3600.0


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Config:
    """Tuning of one node. Times are in seconds.

    The defaults suit a LAN or one machine. Keep heartbeat_timeout well below
    election_timeout (libraft ticks at the heartbeat interval).
    """

    election_timeout: float = 1.0
    heartbeat_timeout: float = 0.1
    #: Take a snapshot (and compact the log) every this many applied entries.
    snapshot_threshold: int = 8192
    #: Entries kept behind a snapshot, so slightly lagging followers need no snapshot.
    snapshot_trailing: int = 8192
    #: The leader resends a snapshot not acknowledged within this. libraft 0.22.1
    #: drops an InstallSnapshot that arrives while another is installing, so a
    #: follower can wait this long under load: keep it short on a LAN.
    install_snapshot_timeout: float = 10.0
    #: Pre-vote: a partitioned node does not disrupt the cluster when it returns.
    pre_vote: bool = True
    #: libraft's auto-recovery moves corrupt segments aside and starts without them,
    #: which can drop acknowledged entries. Off: a damaged data dir raises CorruptError.
    auto_recovery: bool = False
    #: Size of a raft_uv log segment (three are preallocated per node).
    segment_size: int = 8 * MiB
    #: zlib-compress snapshots. libraft 0.22.1 writes snapshots raw, so this is ours;
    #: restore reads compressed and raw snapshots whatever the setting.
    snapshot_compression: bool = False
    connect_retry_delay: float = 0.2
    #: Commands queued while the loop is busy are packed into entries of about this size.
    max_entry_bytes: int = 1 * MiB
    #: Largest command accepted by apply(); None: half a segment.
    max_command_size: int | None = None
    max_inflight_entries: int = 32
    max_catch_up_rounds: int = 10
    max_catch_up_round_duration: float = 5.0
    #: Listen here instead of on the node's advertised address (e.g. "0.0.0.0:9001").
    bind_address: str | None = None
    #: Backpressure: commands submitted on this node and not yet resolved, at most
    #: (apply() past it raises BusyError, or waits with apply(timeout=...)).
    max_pending_commands: int = 100_000
    #: ... and their bytes, at most.
    max_pending_bytes: int = 256 * MiB
    #: Forward libraft's own trace lines (level 1 error .. 5 trace) to the
    #: "canonical_raft.libraft" logger. None: only when that logger is at DEBUG.
    trace_level: int | None = None

    def validate(self) -> Config:
        """Raise InvalidConfigError naming the first unusable field; return self."""
        for name in ("election_timeout", "heartbeat_timeout",
                     "install_snapshot_timeout", "connect_retry_delay",
                     "max_catch_up_round_duration"):
            value = getattr(self, name)
            # libraft counts in whole milliseconds (unsigned): 0 ms divides by zero.
            if not _is_number(value) or not 0.001 <= value <= _MAX_SECONDS:
                raise InvalidConfigError(f"Config.{name} must be a number of seconds between "
                                         f"0.001 and {_MAX_SECONDS}, not {value!r}")
        if self.heartbeat_timeout >= self.election_timeout:
            raise InvalidConfigError("Config.heartbeat_timeout must be shorter than "
                                     "election_timeout")
        for name in ("snapshot_threshold", "snapshot_trailing", "max_entry_bytes",
                     "max_inflight_entries", "max_catch_up_rounds"):
            value = getattr(self, name)
            if not _is_int(value) or not 0 < value < 2**32:
                raise InvalidConfigError(f"Config.{name} must be an int from 1 to 2**32-1, "
                                         f"not {value!r}")
        for name in ("max_pending_commands", "max_pending_bytes"):
            value = getattr(self, name)
            if not _is_int(value) or not 0 < value < 2**63:
                raise InvalidConfigError(f"Config.{name} must be a positive int, not {value!r}")
        for name in ("pre_vote", "auto_recovery", "snapshot_compression"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidConfigError(f"Config.{name} must be True or False, not "
                                         f"{getattr(self, name)!r}")
        # raft_uv reports free log capacity in KiB in an unsigned short: with three
        # preallocated segments of more than ~16 MiB it wraps, and every apply then
        # fails with NoSpaceError.
        if not _is_int(self.segment_size) or not MiB <= self.segment_size <= MAX_SEGMENT \
                or self.segment_size % 4096:
            raise InvalidConfigError(f"Config.segment_size must be a multiple of 4096 from "
                                     f"1 MiB to 16 MiB, not {self.segment_size!r}")
        if self.max_command_size is not None and not _is_int(self.max_command_size):
            raise InvalidConfigError("Config.max_command_size must be an int or None")
        limit = self.command_limit()
        if limit <= 0 or limit > self.segment_size - 64 * 1024:
            raise InvalidConfigError("Config.max_command_size must be positive and leave "
                                     "64 KiB of a segment free")
        if self.bind_address is not None:
            parse_address(self.bind_address, what="Config.bind_address")
        if self.trace_level is not None and (not _is_int(self.trace_level)
                                             or self.trace_level not in range(0, 6)):
            raise InvalidConfigError("Config.trace_level must be 0..5 or None")
        return self

    def command_limit(self) -> int:
        if self.max_command_size is None:
            return self.segment_size // 2
        return self.max_command_size

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


def parse_address(address: object, *, what: str = "address") -> tuple[str, int]:
    """Check an "ipv4-or-hostname:port" string as libraft 0.22 accepts it."""
    if not isinstance(address, str):
        raise InvalidConfigError(f"{what} must be a 'host:port' string, not "
                                 f"{type(address).__name__}")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) \
            or not 0 < int(port) < 65536:
        raise InvalidConfigError(f"{what} {address!r} is not 'host:port' with a port 1-65535")
    if host.startswith("[") or ":" in host:
        raise InvalidConfigError(f"{what} {address!r}: libraft's transport speaks IPv4 only")
    labels = host.split(".")
    if all(label.isascii() and label.isdigit() for label in labels):
        try:  # all-numeric: must be a dotted IPv4 literal, never a "hostname"
            ipaddress.IPv4Address(host)
        except ValueError:
            raise InvalidConfigError(f"{what} {address!r} has an invalid IPv4 address") from None
    elif not host.isascii() or not all(
            label and len(label) < 64 and label.replace("-", "").isalnum() for label in labels):
        raise InvalidConfigError(f"{what} {address!r} has an invalid host name")
    return host, int(port)


def check_id(value: object, *, what: str = "server id") -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidConfigError(f"{what} must be an int, not {type(value).__name__}")
    if not 0 < value < 2**63:
        raise InvalidConfigError(f"{what} must be between 1 and 2**63-1, not {value}")
    return value


def to_options(config: Config, node_id: int, address: str, data_dir: str,
               bootstrap: list[tuple[int, str]], trace_level: int) -> _core.NodeOptions:
    o = _core.NodeOptions()
    o.id = node_id
    o.address = address
    o.bind_address = config.bind_address or ""
    o.data_dir = data_dir
    o.bootstrap = bootstrap
    o.election_timeout_ms = round(config.election_timeout * 1000)
    o.heartbeat_timeout_ms = round(config.heartbeat_timeout * 1000)
    o.install_snapshot_timeout_ms = round(config.install_snapshot_timeout * 1000)
    o.snapshot_threshold = config.snapshot_threshold
    o.snapshot_trailing = config.snapshot_trailing
    o.connect_retry_delay_ms = round(config.connect_retry_delay * 1000)
    o.max_inflight_entries = config.max_inflight_entries
    o.max_catch_up_rounds = config.max_catch_up_rounds
    o.max_catch_up_round_duration_ms = round(config.max_catch_up_round_duration * 1000)
    o.pre_vote = config.pre_vote
    o.auto_recovery = config.auto_recovery
    o.segment_size = config.segment_size
    o.max_entry_bytes = config.max_entry_bytes
    o.trace_level = trace_level
    o.max_pending_commands = config.max_pending_commands
    o.max_pending_bytes = config.max_pending_bytes
    return o
