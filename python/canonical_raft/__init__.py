"""canonical-raft: replicate any Python object over the network with Raft.

Write an FSM (apply, snapshot, restore), start a Node on each machine, call
``node.apply(command)``; every replica applies the same commands in the same
order. Built on libraft 0.22.1 (compiled in).
"""

from __future__ import annotations

try:
    from . import _core
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "canonical_raft's compiled core (_core) could not be loaded: "
        f"{exc}. It links libuv and liblz4 from the system: on Debian/Ubuntu run "
        "'apt-get install libuv1 liblz4-1', then reinstall canonical-raft "
        "('pip install .' builds it; see README.md)."
    ) from exc

from .config import Config
from .errors import (AddressInUseError, BadIdError, BusyError, CantBootstrapError,
                     CantChangeError, CorruptError, DataDirLockedError, IdentityError,
                     InvalidConfigError, LeadershipLostError, NoConnectionError, NoSpaceError,
                     NotLeaderError, RaftError, ShutdownError, StorageError, TimeoutError,
                     TooBigError)
from .fsm import FSM
from .futures import ApplyFuture, Future
from .node import Node
from .store import MemoryStore, Store
from .tls import TLS
from .types import Leader, LeadershipEvent, Role, Server, State

__version__ = "0.1.0"
__libraft_version__ = _core.libraft_version

__all__ = [
    "AddressInUseError", "ApplyFuture", "BadIdError", "BusyError", "CantBootstrapError",
    "CantChangeError", "Config", "CorruptError", "DataDirLockedError", "FSM", "Future",
    "IdentityError", "InvalidConfigError", "Leader", "LeadershipEvent", "LeadershipLostError", "MemoryStore",
    "NoConnectionError", "NoSpaceError", "Node", "NotLeaderError", "RaftError", "Role", "Server",
    "ShutdownError", "State", "StorageError", "Store", "TLS", "TimeoutError", "TooBigError",
]
