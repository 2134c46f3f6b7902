"""Soak: a long run of appends with a snapshot every 10k entries, as the
asyncio engine drives a store (batches of 64, snapshots keeping a trailing
log). The data file must stop growing once LMDB reuses the pages compaction
frees, and RSS must stay flat. 100k entries in CI; 1M under ``-m slow``.
Run with ``-s`` to see the curves (entries, data.mdb size, RSS)."""

from __future__ import annotations

import asyncio
import os
import random

import pytest

pytest.importorskip("lmdb")
from canonical_raft.store import MDBStore, Snapshot  # noqa: E402

BATCH = 64
EVERY = 10_000
TRAILING = 1_024


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def soak(path, total: int) -> list:
    """Run; return [(entries, data.mdb bytes, RSS bytes)] after each snapshot."""
    rnd = random.Random(7)
    curve = []

    async def main() -> None:
        store = MDBStore(path)
        await store.load()
        await store.set_term(1)
        index = 0
        while index < total:
            batch = [(1, 1, rnd.randbytes(rnd.randint(32, 256))) for _ in range(BATCH)]
            await store.append(index + 1, batch)
            index += BATCH
            if index % EVERY < BATCH:
                await store.put_snapshot(Snapshot(index, 1, 1, b"conf",
                                                  rnd.randbytes(64 * 1024)), TRAILING)
                curve.append((index, os.path.getsize(path / "data.mdb"), rss()))
        await store.close()
        again = MDBStore(path)
        p = await again.load()
        await again.close()
        assert p.snapshot is not None and p.start_index + len(p.entries) == index + 1
        assert len(p.entries) <= TRAILING + EVERY
    asyncio.run(main())
    return curve


def report(curve: list) -> str:
    return "\n".join(f"{n:>9} entries  data.mdb {size / 2**20:7.2f} MiB  RSS {mem / 2**20:7.1f} MiB"
                     for n, size, mem in curve)


def check(curve: list) -> None:
    text = report(curve)
    print("\n" + text)
    # After a few rounds (the free list fills up), the file stops growing.
    settled = curve[3][1]
    assert max(size for _, size, _ in curve[3:]) <= settled * 1.25, text
    rss_settled = curve[3][2]
    assert max(mem for _, _, mem in curve[3:]) <= rss_settled + 32 * 2**20, text


def test_soak_100k(tmp_path):
    check(soak(tmp_path, 100_000))


@pytest.mark.slow
def test_soak_1m(tmp_path, request):
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("the long form: run with -m slow")
    check(soak(tmp_path, 1_000_000))
