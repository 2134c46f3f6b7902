"""Stores for the asyncio engine: the protocol (base.py) and implementations
beside it: memory.py (tests) and mdb.py (LMDB, durable; needs py-lmdb, so it is
imported only when ``MDBStore`` is first used: ``import canonical_raft`` works
without it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Entry, Persisted, Snapshot, Store
from .memory import MemoryStore

if TYPE_CHECKING:
    from .mdb import MDBStore

__all__ = ["Entry", "MDBStore", "MemoryStore", "Persisted", "Snapshot", "Store"]


def __getattr__(name: str) -> Any:
    if name == "MDBStore":
        try:
            from .mdb import MDBStore
        except ModuleNotFoundError as exc:
            if exc.name != "lmdb":
                raise
            raise ImportError("MDBStore needs py-lmdb: pip install 'canonical-raft[mdb]' "
                              "(or pip install lmdb)") from exc
        return MDBStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
