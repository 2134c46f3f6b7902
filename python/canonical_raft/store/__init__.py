"""Stores for the asyncio engine: the protocol (base.py) and implementations
beside it (memory.py; mdb.py is planned)."""

from .base import Entry, Persisted, Snapshot, Store
from .memory import MemoryStore

__all__ = ["Entry", "MemoryStore", "Persisted", "Snapshot", "Store"]
