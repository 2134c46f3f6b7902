"""The Store contract (store/base.py), one suite over every store.

Each test drives a store as the asyncio engine does (one awaited call at a
time) and checks what ``load()`` returns, before and after a restart: for a
MemoryStore a restart is the same object after ``close()``; for an MDBStore
it is a new MDBStore on the same directory.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, TypeVar

import pytest

from canonical_raft.store import MemoryStore, Persisted, Snapshot

T = TypeVar("T")

CMD, BARRIER, CHANGE = 1, 2, 3


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro
    return asyncio.run(main())


class Harness:
    """A store under test, and how to restart it."""

    def __init__(self, kind: str, tmp_path) -> None:
        self.kind = kind
        self.path = tmp_path / "store"
        self.store: Any = None
        self.memory = MemoryStore() if kind == "memory" else None

    def open(self) -> Any:
        if self.kind == "memory":
            self.store = self.memory
        else:
            from canonical_raft.store import MDBStore
            self.store = MDBStore(self.path, compact_batch=3)
        return self.store

    async def restart(self) -> Persisted:
        await self.store.close()
        self.open()
        return await self.store.load()

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()


@pytest.fixture(params=["memory", "mdb"])
def harness(request, tmp_path):
    if request.param == "mdb":
        pytest.importorskip("lmdb")
    h = Harness(request.param, tmp_path)
    h.open()
    yield h
    run(h.close())


def scenario(harness: Harness, body: Callable[[Any], Awaitable[T]]) -> T:
    async def main() -> T:
        await harness.store.load()
        return await body(harness.store)
    return run(main())


def cmds(term: int, *payloads: str) -> list:
    return [(term, CMD, p.encode()) for p in payloads]


def test_empty_store_loads_empty(harness):
    async def body(store):
        p = await store.load()
        assert p.empty and (p.term, p.vote, p.snapshot, p.start_index, p.entries) == \
            (0, 0, None, 1, [])
        assert await store.get_snapshot() is None
        p = await harness.restart()
        assert p.empty
    scenario(harness, body)


def test_term_and_vote(harness):
    async def body(store):
        await store.set_term(2)
        await store.set_vote(3)
        p = await harness.restart()
        assert (p.term, p.vote) == (2, 3)
        store = harness.store
        await store.set_term(5)  # a new term clears the vote
        p = await harness.restart()
        assert (p.term, p.vote) == (5, 0)
        assert not p.empty
    scenario(harness, body)


def test_append_is_contiguous_and_survives_restart(harness):
    async def body(store):
        await store.set_term(1)
        await store.append(1, [(1, CHANGE, b"conf")])
        await store.append(2, cmds(1, "a", "b"))
        await store.append(4, [(1, BARRIER, b"")])
        with pytest.raises(ValueError):
            await store.append(7, cmds(1, "gap"))
        with pytest.raises(ValueError):
            await store.append(3, cmds(1, "overlap"))
        p = await harness.restart()
        assert p.start_index == 1
        assert p.entries == [(1, CHANGE, b"conf"), (1, CMD, b"a"), (1, CMD, b"b"),
                             (1, BARRIER, b"")]
    scenario(harness, body)


def test_large_and_binary_payloads(harness):
    payload = bytes(range(256)) * 4096  # 1 MiB
    async def body(store):
        await store.append(1, [(1, CMD, payload), (1, CMD, b""), (2, CMD, b"\x00" * 10)])
        p = await harness.restart()
        assert p.entries == [(1, CMD, payload), (1, CMD, b""), (2, CMD, b"\x00" * 10)]
    scenario(harness, body)


def test_truncate(harness):
    async def body(store):
        await store.append(1, cmds(1, "a", "b", "c", "d"))
        await store.truncate(3)
        p = await store.load()
        assert p.entries == cmds(1, "a", "b")
        await store.append(3, cmds(2, "C"))   # the log goes on after the cut
        await store.truncate(10)              # past the end: nothing
        p = await harness.restart()
        assert p.entries == cmds(1, "a", "b") + cmds(2, "C")
        await harness.store.truncate(1)       # everything
        p = await harness.restart()
        assert (p.start_index, p.entries) == (1, [])
        await harness.store.append(1, cmds(3, "x"))
        p = await harness.restart()
        assert p.entries == cmds(3, "x")
    scenario(harness, body)


def test_snapshot_with_trailing_compacts_the_prefix(harness):
    async def body(store):
        await store.append(1, cmds(1, *"abcdefghij"))  # indices 1..10
        snap = Snapshot(8, 1, 1, b"conf", b"state@8")
        await store.put_snapshot(snap, 3)              # keep 6..10
        assert await store.get_snapshot() == snap
        p = await store.load()
        assert (p.snapshot, p.start_index, p.entries) == (snap, 6, cmds(1, *"fghij"))
        await store.append(11, cmds(2, "k"))
        p = await harness.restart()
        assert (p.snapshot, p.start_index, p.entries) == (snap, 6, cmds(1, *"fghij") +
                                                          cmds(2, "k"))
        assert await harness.store.get_snapshot() == snap
    scenario(harness, body)


def test_snapshot_trailing_longer_than_the_log_keeps_it(harness):
    async def body(store):
        await store.append(1, cmds(1, "a", "b", "c"))
        snap = Snapshot(3, 1, 1, b"conf", b"s")
        await store.put_snapshot(snap, 10)
        p = await harness.restart()
        assert (p.start_index, p.entries) == (1, cmds(1, "a", "b", "c"))
    scenario(harness, body)


def test_newer_snapshot_replaces_the_older(harness):
    async def body(store):
        await store.append(1, cmds(1, *"abcdefghij"))
        await store.put_snapshot(Snapshot(4, 1, 1, b"conf", b"s4"), 2)
        await store.put_snapshot(Snapshot(9, 1, 1, b"conf", b"s9" * 1000), 2)
        p = await harness.restart()
        assert p.snapshot == Snapshot(9, 1, 1, b"conf", b"s9" * 1000)
        assert (p.start_index, p.entries) == (8, cmds(1, "h", "i", "j"))
    scenario(harness, body)


def test_installed_snapshot_replaces_the_log(harness):
    async def body(store):
        await store.set_term(4)
        await store.append(1, cmds(1, *"abcdef"))
        snap = Snapshot(50, 4, 40, b"conf40", b"leader's state")
        await store.put_snapshot(snap, 0)
        p = await store.load()
        assert p.snapshot == snap and p.entries == []
        await store.append(51, cmds(4, "after"))
        p = await harness.restart()
        assert (p.term, p.snapshot, p.start_index, p.entries) == (4, snap, 51,
                                                                  cmds(4, "after"))
    scenario(harness, body)


def test_installed_snapshot_inside_the_log_drops_the_rest(harness):
    async def body(store):
        await store.append(1, cmds(1, *"abcdef"))        # 1..6
        snap = Snapshot(4, 2, 1, b"conf", b"s")
        await store.put_snapshot(snap, 0)
        await store.append(5, cmds(2, "E"))
        p = await harness.restart()
        assert (p.snapshot, p.start_index, p.entries) == (snap, 5, cmds(2, "E"))
    scenario(harness, body)


def test_long_run_of_snapshots(harness):
    """Many snapshot/compaction rounds: the log and the snapshot stay right."""
    async def body(store):
        index = 0
        for round_ in range(20):
            batch = cmds(1, *(f"r{round_}e{i}" for i in range(25)))
            await store.append(index + 1, batch)
            index += len(batch)
            await store.put_snapshot(Snapshot(index, 1, 1, b"conf", f"@{index}".encode()), 5)
        p = await harness.restart()
        assert p.snapshot is not None and p.snapshot.index == index == 500
        assert p.start_index == 496
        assert p.entries == cmds(1, *(f"r19e{i}" for i in range(20, 25)))
    scenario(harness, body)


def test_close_is_idempotent(harness):
    async def body(store):
        await store.set_term(1)
        await store.close()
        await store.close()
    scenario(harness, body)
