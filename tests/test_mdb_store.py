"""MDBStore's bad states: the corruption matrix (each damage is a CorruptError
naming the file, and the index where there is one), a full map (grown), a full
disk (NoSpaceError, nothing lost), a directory locked by another process, and
directories that are not an MDBStore's."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("lmdb")
import lmdb  # noqa: E402

import canonical_raft as raft  # noqa: E402
from canonical_raft.store import MDBStore, Snapshot  # noqa: E402

CMD = 1


def run(coro):
    async def main():
        return await coro
    return asyncio.run(main())


async def filled(path, n=50, snapshot_at=None, **kw):
    """A closed store at path holding entries 1..n (payload b"entry-%06d"),
    term 7, vote 2, and optionally a snapshot at snapshot_at (trailing 10)."""
    store = MDBStore(path, **kw)
    await store.load()
    await store.set_term(7)
    await store.set_vote(2)
    await store.append(1, [(7, CMD, b"entry-%06d" % i) for i in range(1, n + 1)])
    if snapshot_at:
        await store.put_snapshot(Snapshot(snapshot_at, 7, 1, b"conf", b"S" * 5000), 10)
    await store.close()
    return store


async def load(path):
    store = MDBStore(path)
    try:
        return await store.load()
    finally:
        await store.close()


def flip_all(path, needle: bytes, offset: int = 0) -> int:
    """Flip one byte in every copy of needle in the file (LMDB keeps stale
    copies of pages it has not reused yet); return how many."""
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        count, at = 0, data.find(needle)
        while at >= 0:
            data[at + offset] ^= 0x40
            count += 1
            at = data.find(needle, at + 1)
        f.seek(0)
        f.write(data)
    return count


# ------------------------------------------------------------------ corruption matrix

def test_flipped_byte_in_an_entry_names_the_file_and_index(tmp_path):
    run(filled(tmp_path))
    assert flip_all(tmp_path / "data.mdb", b"entry-000033", 8) >= 1
    with pytest.raises(raft.CorruptError, match=r"data\.mdb: log entry 33 is damaged"):
        run(load(tmp_path))


def test_flipped_byte_in_an_entry_header_is_caught(tmp_path):
    run(filled(tmp_path))
    # The term (u64 7) sits right before type and CRC: change it to 7 + 2**56.
    assert flip_all(tmp_path / "data.mdb", b"\x00" * 7 + b"\x07\x01", 0) >= 1
    with pytest.raises(raft.CorruptError, match=r"data\.mdb: log entry \d+ is damaged"):
        run(load(tmp_path))


def test_flipped_bytes_in_the_meta_table(tmp_path):
    run(filled(tmp_path))
    term_vote = (7).to_bytes(8, "big") + (2).to_bytes(8, "big")
    assert flip_all(tmp_path / "data.mdb", term_vote, 15) >= 1  # the vote, 2 -> 66
    with pytest.raises(raft.CorruptError, match=r"data\.mdb: meta record 'state' is damaged"):
        run(load(tmp_path))


def test_flipped_format_marker(tmp_path):
    run(filled(tmp_path))
    assert flip_all(tmp_path / "data.mdb", b"canonical-raft-mdb 1", 0) >= 1
    with pytest.raises(raft.CorruptError, match=r"data\.mdb is damaged: its format marker"):
        run(load(tmp_path))


@pytest.mark.parametrize("keep", [0, 4096 * 3, "half"])
def test_truncated_data_file(tmp_path, keep):
    run(filled(tmp_path, n=3000))
    data = tmp_path / "data.mdb"
    size = data.stat().st_size
    os.truncate(data, size // 2 if keep == "half" else keep)
    with pytest.raises(raft.CorruptError, match=r"data\.mdb (is truncated|is damaged)"):
        run(load(tmp_path))


def test_missing_data_file(tmp_path):
    run(filled(tmp_path))
    os.unlink(tmp_path / "data.mdb")
    with pytest.raises(raft.CorruptError, match=r"data\.mdb is missing"):
        run(load(tmp_path))


def test_missing_snapshot_file(tmp_path):
    run(filled(tmp_path, snapshot_at=40))
    (snap,) = [p for p in tmp_path.iterdir() if p.name.startswith("mdb-snapshot-")]
    snap.unlink()
    with pytest.raises(raft.CorruptError, match=rf"{snap.name}: the snapshot file \(index 40\) "
                                                r"named by the store is missing"):
        run(load(tmp_path))


def test_damaged_snapshot_file(tmp_path):
    run(filled(tmp_path, snapshot_at=40))
    (snap,) = [p for p in tmp_path.iterdir() if p.name.startswith("mdb-snapshot-")]
    flip_all(snap, b"SSSS", 0)
    with pytest.raises(raft.CorruptError, match=rf"{snap.name}: snapshot file \(index 40\) is "
                                                "damaged"):
        run(load(tmp_path))
    os.truncate(snap, 100)
    with pytest.raises(raft.CorruptError, match=rf"{snap.name}: snapshot file \(index 40\) does "
                                                "not match"):
        run(load(tmp_path))


def test_missing_entry_in_the_middle(tmp_path):
    run(filled(tmp_path))
    env = lmdb.open(str(tmp_path), max_dbs=2)
    with env.begin(write=True) as txn:
        txn.delete((20).to_bytes(8, "big"), db=env.open_db(b"log", txn=txn))
    env.close()
    with pytest.raises(raft.CorruptError, match=r"log entry 20 is missing"):
        run(load(tmp_path))


# ------------------------------------------------------------------ not an MDBStore's directory

def test_another_applications_lmdb_is_refused(tmp_path):
    env = lmdb.open(str(tmp_path), max_dbs=2)
    with env.begin(write=True) as txn:
        txn.put(b"hello", b"world")
    env.close()
    with pytest.raises(raft.InvalidConfigError, match="another application"):
        run(load(tmp_path))


def test_a_newer_format_is_refused(tmp_path):
    run(filled(tmp_path))
    env = lmdb.open(str(tmp_path), max_dbs=2)
    with env.begin(write=True) as txn:
        txn.put(b"format", b"canonical-raft-mdb 2", db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(raft.InvalidConfigError, match="has format 'canonical-raft-mdb 2'"):
        run(load(tmp_path))


def test_uv_engine_files_are_refused(tmp_path):
    (tmp_path / "metadata1").write_bytes(b"\0" * 32)
    with pytest.raises(raft.InvalidConfigError, match="uv engine"):
        run(load(tmp_path))
    assert not (tmp_path / "data.mdb").exists()


# ------------------------------------------------------------------ resources

def test_a_full_map_grows(tmp_path):
    async def body():
        store = MDBStore(tmp_path, map_size=256 * 1024)
        await store.load()
        payload = os.urandom(10_000)
        for i in range(200):  # ~2 MB into a 256 KiB map
            await store.append(i * 5 + 1, [(1, CMD, payload)] * 5)
        await store.close()
        p = await load(tmp_path)
        assert len(p.entries) == 1000 and p.entries[-1] == (1, CMD, payload)
    run(body())


def test_second_process_is_locked_out(tmp_path):
    run(filled(tmp_path))
    child = textwrap.dedent(f"""
        import asyncio, sys
        import canonical_raft as raft
        from canonical_raft.store import MDBStore
        async def main():
            try:
                await MDBStore({str(tmp_path)!r}).load()
            except raft.DataDirLockedError as exc:
                print("locked:", exc)
                return 3
            return 0
        sys.exit(asyncio.run(main()))
    """)

    async def body():
        store = MDBStore(tmp_path)
        await store.load()
        try:
            proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                                  timeout=60)
        finally:
            await store.close()
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert "canonical-raft-mdb.lock" in proc.stdout
        again = MDBStore(tmp_path)  # released on close
        await again.load()
        await again.close()
    run(body())


def test_use_after_close_raises(tmp_path):
    async def body():
        store = MDBStore(tmp_path)
        await store.load()
        await store.close()
        with pytest.raises(raft.ShutdownError):
            await store.set_term(3)
        p = await store.load()  # a restart on the same object
        assert p.term == 0
        await store.close()
    run(body())


def test_stale_snapshot_files_are_removed(tmp_path):
    run(filled(tmp_path, snapshot_at=40))
    (tmp_path / "mdb-snapshot-7-45-9.tmp").write_bytes(b"half written")
    (tmp_path / "mdb-snapshot-7-30-0").write_bytes(b"old")
    p = run(load(tmp_path))
    assert p.snapshot.index == 40
    assert sorted(n.name for n in tmp_path.iterdir() if n.name.startswith("mdb-snap")) == \
        ["mdb-snapshot-7-40-1"]


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (needs root); skipped where mounting is not allowed."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                          capture_output=True, timeout=30)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs: {proc.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], timeout=30)


def test_full_disk_is_no_space_error_and_loses_nothing(small_disk):
    path = small_disk / "store"

    async def body():
        store = MDBStore(path)
        await store.load()
        acked = 0
        with pytest.raises(raft.NoSpaceError, match="disk is full"):
            while True:
                await store.append(acked + 1, [(1, CMD, os.urandom(1000)) for _ in range(20)])
                acked += 20
        with pytest.raises(raft.NoSpaceError):
            await store.put_snapshot(Snapshot(acked, 1, 1, b"c", os.urandom(500_000)), 10)
        await store.close()
        p = await load(path)
        assert len(p.entries) == acked > 0 and p.snapshot is None
        assert not [n for n in os.listdir(path) if n.startswith("mdb-snapshot")]
    run(body())


def test_canonical_raft_imports_without_lmdb():
    code = ("import sys; sys.modules['lmdb'] = None\n"
            "import canonical_raft\n"
            "try:\n"
            "    from canonical_raft.store import MDBStore\n"
            "except ImportError as exc:\n"
            "    print(exc)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "MDBStore needs py-lmdb: pip install 'canonical-raft[mdb]'" in proc.stdout
