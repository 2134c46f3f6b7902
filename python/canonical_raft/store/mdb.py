"""MDBStore: the Store protocol on LMDB (py-lmdb), durable across crashes.

One directory per node holds::

    data.mdb, lock.mdb             the LMDB environment (two tables, below)
    canonical-raft-mdb.format      written once the environment is initialised
    canonical-raft-mdb.lock        flock'ed while a store has the directory open
    mdb-snapshot-T-I-S             the latest snapshot (term T, index I, sequence S)

Tables:

- ``log``: key = big-endian u64 index; value = u64 term, u8 type, u32 CRC32
  (over the key, term, type and payload), then the payload.
- ``meta``: ``format`` (the marker below), ``state`` (term, vote), ``first``
  (the first index of the log: entries below it are leftovers that compaction
  is still deleting) and ``snapshot`` (index, term, configuration and the
  file's name, size and CRC32). Every meta value ends with its own CRC32.

Snapshots are files beside the environment, never LMDB records: a large value
in LMDB needs contiguous free pages, and the pages of the two previous copies
cannot be reused yet, so the data file grows to about 3x the snapshot
(measured: docs/stores.md). A snapshot is written to a temp file, fsynced,
renamed, the directory fsynced, and only then the LMDB record that names it is
committed: a crash leaves either the old snapshot or the new one.

Concurrency: every LMDB call runs on one thread owned by the store (a
single-worker executor), so write transactions stay on one thread and nothing
blocks the event loop. The engine calls one method at a time (store/base.py);
compaction after a snapshot runs as bounded transactions queued on that thread
between the engine's calls. Every write commits with fsync before its
coroutine returns.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import re
import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, List, Optional, Tuple, TypeVar

import lmdb

from .._preflight import uv_files
from ..errors import (CorruptError, DataDirLockedError, InvalidConfigError, NoSpaceError,
                      RaftError, ShutdownError, StorageError)
from .base import Entry, Persisted, Snapshot

log = logging.getLogger("canonical_raft")

T = TypeVar("T")

FORMAT = b"canonical-raft-mdb 1"
FORMAT_FILE = "canonical-raft-mdb.format"
LOCK_FILE = "canonical-raft-mdb.lock"
DATA_FILE = "data.mdb"
SNAPSHOT_MAGIC = b"CRMDBSN1"
_SNAPSHOT_FILE = re.compile(r"^mdb-snapshot-(\d+)-(\d+)-(\d+)(\.tmp)?$")

_ENTRY = struct.Struct(">QBI")       # term, type, crc
_STATE = struct.Struct(">QQ")        # term, vote
_U64 = struct.Struct(">Q")
_CRC = struct.Struct(">I")
_SNAP = struct.Struct(">QQQQQI")     # index, term, conf_index, seq, size, data crc
_SNAP_HEADER = struct.Struct(">8sQQQI")  # magic, index, term, size, data crc

DEFAULT_MAP_SIZE = 1 << 30   # address space only: the file grows as pages are used
COMPACT_BATCH = 4096         # entries deleted per compaction transaction
DISK_FULL_MARGIN = 1 << 20   # an I/O error with less free space than this is a full disk

_CORRUPT = (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.InvalidError,
            lmdb.VersionMismatchError, lmdb.PanicError, lmdb.IncompatibleError,
            lmdb.BadValsizeError)


def entry_key(index: int) -> bytes:
    return _U64.pack(index)


def encode_entry(index: int, term: int, type_: int, data: bytes) -> bytes:
    head = _U64.pack(term) + bytes((type_,))
    crc = zlib.crc32(data, zlib.crc32(head, zlib.crc32(entry_key(index))))
    return _ENTRY.pack(term, type_, crc) + data


def decode_entry(index: int, value: bytes, where: str) -> Entry:
    """(term, type, data) of a log value; CorruptError naming the file and the
    index if it fails its CRC."""
    if len(value) < _ENTRY.size:
        raise CorruptError(f"{where}: log entry {index} is damaged (only {len(value)} bytes)")
    term, type_, crc = _ENTRY.unpack_from(value)
    data = value[_ENTRY.size:]
    head = _U64.pack(term) + bytes((type_,))
    if zlib.crc32(data, zlib.crc32(head, zlib.crc32(entry_key(index)))) != crc:
        raise CorruptError(f"{where}: log entry {index} is damaged (CRC mismatch)")
    return term, type_, data


def _seal(key: bytes, payload: bytes) -> bytes:
    return payload + _CRC.pack(zlib.crc32(payload, zlib.crc32(key)))


def _unseal(key: bytes, value: Optional[bytes], where: str) -> Optional[bytes]:
    if value is None:
        return None
    payload = value[:-4]
    if len(value) < 4 or _CRC.unpack(value[-4:])[0] != zlib.crc32(payload, zlib.crc32(key)):
        raise CorruptError(f"{where}: meta record {key.decode()!r} is damaged (CRC mismatch)")
    return payload


class SnapshotRecord:
    """What the meta table says about the latest snapshot."""

    __slots__ = ("index", "term", "conf_index", "conf", "seq", "size", "crc")

    def __init__(self, index: int, term: int, conf_index: int, conf: bytes, seq: int,
                 size: int, crc: int) -> None:
        self.index, self.term, self.conf_index, self.conf = index, term, conf_index, conf
        self.seq, self.size, self.crc = seq, size, crc

    @property
    def file_name(self) -> str:
        return f"mdb-snapshot-{self.term}-{self.index}-{self.seq}"

    def encode(self) -> bytes:
        return _SNAP.pack(self.index, self.term, self.conf_index, self.seq, self.size,
                          self.crc) + self.conf

    @classmethod
    def decode(cls, raw: bytes, where: str) -> SnapshotRecord:
        if len(raw) < _SNAP.size:
            raise CorruptError(f"{where}: meta record 'snapshot' is damaged (too short)")
        index, term, conf_index, seq, size, crc = _SNAP.unpack_from(raw)
        return cls(index, term, conf_index, raw[_SNAP.size:], seq, size, crc)


def _get(txn: lmdb.Transaction, key: bytes, db: Any) -> Optional[bytes]:
    value = txn.get(key, db=db)
    return None if value is None else bytes(value)


def read_meta(txn: lmdb.Transaction, meta: Any, where: str) -> Tuple[
        Optional[bytes], int, int, int, Optional[SnapshotRecord]]:
    """(format, term, vote, first, snapshot record) from a transaction."""
    fmt = _get(txn, b"format", meta)
    state = _unseal(b"state", _get(txn, b"state", meta), where)
    first = _unseal(b"first", _get(txn, b"first", meta), where)
    snap = _unseal(b"snapshot", _get(txn, b"snapshot", meta), where)
    term = vote = 0
    if state is not None:
        if len(state) != _STATE.size:
            raise CorruptError(f"{where}: meta record 'state' is damaged (wrong size)")
        term, vote = _STATE.unpack(state)
    first_index = 1
    if first is not None:
        if len(first) != _U64.size:
            raise CorruptError(f"{where}: meta record 'first' is damaged (wrong size)")
        (first_index,) = _U64.unpack(first)
    record = None if snap is None else SnapshotRecord.decode(snap, where)
    return fmt, term, vote, first_index, record


def read_snapshot_file(path: str, record: SnapshotRecord) -> bytes:
    """The data of the snapshot file ``record`` names, checked against it."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise CorruptError(f"{path}: the snapshot file (index {record.index}) named by the "
                           "store is missing") from None
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) < _SNAP_HEADER.size:
        raise CorruptError(f"{path}: snapshot file (index {record.index}) is truncated")
    magic, index, term, size, crc = _SNAP_HEADER.unpack_from(raw)
    data = raw[_SNAP_HEADER.size:]
    if (magic, index, term, size, crc) != (SNAPSHOT_MAGIC, record.index, record.term,
                                           record.size, record.crc) or len(data) != size:
        raise CorruptError(f"{path}: snapshot file (index {record.index}) does not match the "
                           "store's record of it (truncated or replaced)")
    if zlib.crc32(data) != crc:
        raise CorruptError(f"{path}: snapshot file (index {record.index}) is damaged "
                           "(CRC mismatch)")
    return data


def check_data_file(env: lmdb.Environment, data_path: str) -> None:
    """LMDB maps the file: a page past its end would be a SIGBUS, not an error.
    Refuse a data file shorter than the pages its meta page says are in use."""
    info, stat = env.info(), env.stat()
    need = (info["last_pgno"] + 1) * stat["psize"]
    size = os.path.getsize(data_path)
    if size < need:
        raise CorruptError(f"{data_path} is truncated: {size} bytes, the environment uses "
                           f"{need}")


class MDBStore:
    """The Store protocol (store/base.py) on an LMDB environment in ``path``.

    ``map_size`` is the initial size of the memory map (address space; the file
    only grows as pages are used); a full map is grown (doubled) automatically.
    ``compact_batch`` bounds the entries one compaction transaction deletes.

    Nothing is opened until ``load()``. After ``close()`` the same object may
    be handed to a new Node: ``load()`` opens the directory again (a restart).
    Errors: CorruptError (a damaged environment, entry or snapshot file, named
    with the index), NoSpaceError (the disk is full; nothing committed is
    lost), DataDirLockedError (another store has the directory open),
    InvalidConfigError (the directory belongs to the uv engine or to another
    LMDB application), StorageError (any other I/O failure).
    """

    def __init__(self, path: str | os.PathLike[str], *, map_size: int = DEFAULT_MAP_SIZE,
                 compact_batch: int = COMPACT_BATCH) -> None:
        if map_size <= 0 or compact_batch <= 0:
            raise InvalidConfigError("map_size and compact_batch must be positive")
        self.path = os.path.abspath(os.fspath(path))
        self.data_path = os.path.join(self.path, DATA_FILE)
        self.map_size = map_size
        self.compact_batch = compact_batch
        self._env: Optional[lmdb.Environment] = None
        self._log: Any = None
        self._meta: Any = None
        self._lock_fd: Optional[int] = None
        self._executor: Optional[ThreadPoolExecutor] = None
        self._term = 0
        self._vote = 0
        self._snapshot: Optional[SnapshotRecord] = None
        self._closing = False
        self._background_error: Optional[BaseException] = None
        self.compactions = 0  # compaction transactions committed, for tests

    def __repr__(self) -> str:
        return f"MDBStore({self.path!r})"

    def __del__(self) -> None:
        if self._env is not None:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=1)

    # ------------------------------------------------------------ test hook

    def _point(self, name: str) -> None:
        """Called on the store's thread at each step where a crash matters
        (tests override it to kill the process there)."""

    # ------------------------------------------------------------ running on the store's thread

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise ShutdownError(f"{self!r} is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _txn(self, what: str, fn: Callable[[lmdb.Transaction], T]) -> T:
        """Run fn in one write transaction, committed with fsync; grow a full
        map and retry; map LMDB's errors to ours. ``what`` names the step for
        ``_point`` (``what.commit`` before the commit, ``what.done`` after)."""
        if self._background_error is not None:
            raise self._background_error
        env = self._env
        if env is None:
            raise ShutdownError(f"{self!r} is closed")
        while True:
            try:
                with env.begin(write=True) as txn:
                    result = fn(txn)
                    self._point(what + ".commit")
                self._point(what + ".done")
                return result
            except lmdb.MapFullError:
                new = env.info()["map_size"] * 2
                log.info("%s: the LMDB map is full: growing it to %d MiB", self.data_path,
                         new >> 20)
                env.set_mapsize(new)
            except lmdb.Error as exc:
                raise self._error(exc) from None

    def _error(self, exc: lmdb.Error) -> RaftError:
        code = getattr(exc, "code", 0)
        # LMDB reports a short write (how a full disk often shows) as EIO.
        if code in (errno.ENOSPC, errno.EDQUOT) or (code == errno.EIO and _disk_full(self.path)):
            return NoSpaceError(f"{self.data_path}: the disk is full ({exc}); the transaction "
                                "was rolled back, nothing committed is lost")
        if isinstance(exc, _CORRUPT):
            return CorruptError(f"{self.data_path} is damaged: {exc}")
        return StorageError(f"{self.data_path}: {exc}")

    # ------------------------------------------------------------ open / close

    def _open(self) -> Persisted:
        os.makedirs(self.path, exist_ok=True)
        self._lock()
        try:
            self._open_env()
            return self._load()
        except BaseException:
            self._close_env()
            raise

    def _lock(self) -> None:
        try:
            fd = os.open(os.path.join(self.path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot use {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirLockedError(f"{self.path} is in use by another MDBStore (its "
                                     f"{LOCK_FILE} is locked)") from None
        self._lock_fd = fd

    def _open_env(self) -> None:
        uv = uv_files(self.path)
        if uv:
            raise InvalidConfigError(f"{self.path} holds the uv engine's log ({', '.join(uv[:3])}"
                                     "): MDBStore cannot use it; start it with engine='uv', or "
                                     "give MDBStore an empty directory")
        marked = os.path.exists(os.path.join(self.path, FORMAT_FILE))
        exists = os.path.exists(self.data_path)
        if marked and not exists:
            raise CorruptError(f"{self.data_path} is missing (the directory is an MDBStore's: "
                               f"{FORMAT_FILE})")
        if marked and os.path.getsize(self.data_path) == 0:
            raise CorruptError(f"{self.data_path} is truncated: 0 bytes")
        try:
            env = lmdb.open(self.path, map_size=self.map_size, subdir=True, max_dbs=2,
                            sync=True, metasync=True, readahead=False, lock=True)
        except lmdb.Error as exc:
            raise self._error(exc) from None
        self._env = env
        try:
            if env.info()["map_size"] > self.map_size:  # an earlier run grew it
                self.map_size = env.info()["map_size"]
            check_data_file(env, self.data_path)
            env.reader_check()  # slots of a killed process would pin freed pages
            with env.begin() as txn:
                names = [k for k, _ in txn.cursor()]
            if names and set(names) - {b"log", b"meta"}:
                raise InvalidConfigError(f"{self.data_path} is an LMDB environment of another "
                                         "application, not an MDBStore")
            if not names and marked:
                raise CorruptError(f"{self.data_path} is damaged: it holds no tables")
            self._log = env.open_db(b"log")
            self._meta = env.open_db(b"meta")
            with env.begin() as txn:
                fmt = _get(txn, b"format", self._meta)
            if fmt is None:
                if marked:
                    raise CorruptError(f"{self.data_path} is damaged: its format marker is "
                                       "missing")
                self._txn("init", self._init)
            elif fmt != FORMAT:
                if fmt.startswith(b"canonical-raft-mdb "):
                    raise InvalidConfigError(f"{self.data_path} has format {fmt.decode()!r}; "
                                             f"this canonical-raft reads {FORMAT.decode()!r}")
                raise CorruptError(f"{self.data_path} is damaged: its format marker reads "
                                   f"{fmt!r}")
            if not marked:
                self._write_format_file()
        except lmdb.Error as exc:
            raise self._error(exc) from None

    def _init(self, txn: lmdb.Transaction) -> None:
        txn.put(b"format", FORMAT, db=self._meta)
        txn.put(b"state", _seal(b"state", _STATE.pack(0, 0)), db=self._meta)
        txn.put(b"first", _seal(b"first", _U64.pack(1)), db=self._meta)

    def _write_format_file(self) -> None:
        path = os.path.join(self.path, FORMAT_FILE)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, FORMAT + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            _fsync_dir(self.path)
        except OSError as exc:
            raise _os_error(path, exc) from None

    def _close_env(self) -> None:
        env, self._env = self._env, None
        if env is not None:
            env.close()
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)

    # ------------------------------------------------------------ reads

    def _load(self) -> Persisted:
        env = self._env
        assert env is not None
        where = self.data_path
        with env.begin() as txn:
            _, term, vote, first, record = read_meta(txn, self._meta, where)
            entries: List[Entry] = []
            cursor = txn.cursor(db=self._log)
            expected = first
            if cursor.set_range(entry_key(first)):
                for key, value in cursor:
                    (index,) = _U64.unpack(key)
                    if index != expected:
                        raise CorruptError(f"{where}: log entry {expected} is missing (the "
                                           f"next one is {index})")
                    entries.append(decode_entry(index, value, where))
                    expected += 1
            leftovers = cursor.first() and _U64.unpack(cursor.key())[0] < first
        self._term, self._vote, self._snapshot = term, vote, record
        snapshot = None
        if record is not None:
            data = read_snapshot_file(os.path.join(self.path, record.file_name), record)
            snapshot = Snapshot(record.index, record.term, record.conf_index, record.conf, data)
        self._remove_stale_snapshots()
        if leftovers:  # a compaction that a crash interrupted
            self._compact_step()
        return Persisted(term=term, vote=vote, snapshot=snapshot, start_index=first,
                         entries=entries)

    def _get_snapshot(self) -> Optional[Snapshot]:
        record = self._snapshot
        if record is None:
            return None
        data = read_snapshot_file(os.path.join(self.path, record.file_name), record)
        return Snapshot(record.index, record.term, record.conf_index, record.conf, data)

    def _remove_stale_snapshots(self) -> None:
        keep = self._snapshot.file_name if self._snapshot is not None else None
        for name in os.listdir(self.path):
            if _SNAPSHOT_FILE.match(name) and name != keep:
                try:
                    os.unlink(os.path.join(self.path, name))
                except OSError as exc:
                    log.warning("%s: cannot remove the stale snapshot %s: %s", self.path,
                                name, exc.strerror)

    # ------------------------------------------------------------ writes

    def _set_state(self, term: int, vote: int) -> None:
        def put(txn: lmdb.Transaction) -> None:
            txn.put(b"state", _seal(b"state", _STATE.pack(term, vote)), db=self._meta)
        self._txn("state", put)
        self._term, self._vote = term, vote

    def _append(self, first_index: int, entries: List[Entry]) -> None:
        items = [(entry_key(first_index + i),
                  encode_entry(first_index + i, term, type_, bytes(data)))
                 for i, (term, type_, data) in enumerate(entries)]

        def put(txn: lmdb.Transaction) -> None:
            expected = self._next_index(txn)
            if first_index != expected:
                raise ValueError(f"append at {first_index}, the log ends before {expected}")
            cursor = txn.cursor(db=self._log)
            added, _ = cursor.putmulti(items, append=True)
            if added != len(items):
                raise StorageError(f"{self.data_path}: appended {added} of {len(items)} entries")
        self._txn("append", put)

    def _next_index(self, txn: lmdb.Transaction) -> int:
        first = self._first(txn)
        cursor = txn.cursor(db=self._log)
        if cursor.last():
            return max(first, int(_U64.unpack(cursor.key())[0]) + 1)
        return first

    def _first(self, txn: lmdb.Transaction) -> int:
        raw = _unseal(b"first", _get(txn, b"first", self._meta), self.data_path)
        return 1 if raw is None else int(_U64.unpack(raw)[0])

    def _truncate(self, index: int) -> None:
        def drop(txn: lmdb.Transaction) -> None:
            cursor = txn.cursor(db=self._log)
            if cursor.set_range(entry_key(index)):
                while cursor.delete():
                    if not cursor.key():
                        break
        self._txn("truncate", drop)

    def _put_snapshot(self, snapshot: Snapshot, trailing: int) -> None:
        old = self._snapshot
        data = bytes(snapshot.data)
        record = SnapshotRecord(snapshot.index, snapshot.term, snapshot.conf_index,
                                bytes(snapshot.conf), (old.seq + 1) if old else 1, len(data),
                                zlib.crc32(data))
        path = os.path.join(self.path, record.file_name)
        tmp = path + ".tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                header = _SNAP_HEADER.pack(SNAPSHOT_MAGIC, record.index, record.term,
                                           record.size, record.crc)
                _write_all(fd, header)
                _write_all(fd, data)
                self._point("snapshot.file")
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, path)
            self._point("snapshot.renamed")
            _fsync_dir(self.path)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise _os_error(tmp, exc) from None

        def put(txn: lmdb.Transaction) -> None:
            txn.put(b"snapshot", _seal(b"snapshot", record.encode()), db=self._meta)
            first = self._first(txn)
            if trailing == 0:
                # Installed from the leader: the log is replaced. Entries after
                # the snapshot go now; those up to it are compacted below.
                cursor = txn.cursor(db=self._log)
                if cursor.set_range(entry_key(snapshot.index + 1)):
                    while cursor.delete():
                        if not cursor.key():
                            break
                new_first = snapshot.index + 1
            else:
                new_first = max(first, min(snapshot.index - trailing + 1,
                                           self._next_index(txn)))
            if new_first != first:
                txn.put(b"first", _seal(b"first", _U64.pack(new_first)), db=self._meta)
        try:
            self._txn("snapshot", put)
        except BaseException:
            try:
                os.unlink(path)
            except OSError:
                pass
            raise
        self._snapshot = record
        if old is not None and old.file_name != record.file_name:
            try:
                os.unlink(os.path.join(self.path, old.file_name))
            except OSError as exc:
                log.warning("%s: cannot remove the old snapshot %s: %s", self.path,
                            old.file_name, exc.strerror)
        self._compact_step()

    def _compact_step(self) -> None:
        """Delete up to compact_batch entries below ``first`` in one transaction;
        if more remain, queue the next step behind whatever the engine queued
        meanwhile (so appends are not held up by a long compaction)."""
        if self._closing or self._env is None:
            return

        def delete(txn: lmdb.Transaction) -> bool:
            first = self._first(txn)
            cursor = txn.cursor(db=self._log)
            if not cursor.first():
                return False
            for _ in range(self.compact_batch):
                if _U64.unpack(cursor.key())[0] >= first:
                    return False
                if not cursor.delete() or not cursor.key():
                    return False
            return bool(_U64.unpack(cursor.key())[0] < first)
        try:
            more = self._txn("compact", delete)
        except BaseException as exc:  # fails the engine's next call (and so closes the node)
            log.error("%s: compaction failed: %r", self.data_path, exc)
            self._background_error = exc
            return
        self.compactions += 1
        if more and self._executor is not None:
            self._executor.submit(self._compact_step)

    # ------------------------------------------------------------ the protocol

    async def load(self) -> Persisted:
        if self._executor is None:
            self._closing = False
            self._background_error = None
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="canonical-raft-mdb")
        try:
            return await self._run(self._open_or_load)
        except BaseException:
            if self._env is None:
                self._shutdown_executor()
            raise

    def _open_or_load(self) -> Persisted:
        if self._env is None:
            return self._open()
        return self._load()

    async def set_term(self, term: int) -> None:
        await self._run(self._set_state, term, 0)

    async def set_vote(self, server_id: int) -> None:
        await self._run(lambda: self._set_state(self._term, server_id))

    async def append(self, first_index: int, entries: List[Entry]) -> None:
        await self._run(self._append, first_index, list(entries))

    async def truncate(self, index: int) -> None:
        await self._run(self._truncate, index)

    async def put_snapshot(self, snapshot: Snapshot, trailing: int) -> None:
        await self._run(self._put_snapshot, snapshot, trailing)

    async def get_snapshot(self) -> Optional[Snapshot]:
        return await self._run(self._get_snapshot)

    async def close(self) -> None:
        """Close the environment and release the directory. Idempotent."""
        if self._executor is None:
            return
        self._closing = True  # pending compaction steps do nothing; the next load resumes
        try:
            await self._run(self._close_env)
        finally:
            self._shutdown_executor()

    def _shutdown_executor(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)


# ------------------------------------------------------------------ helpers

def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _disk_full(path: str) -> bool:
    """Whether the filesystem holding path has (next to) no space left."""
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < DISK_FULL_MARGIN


def _os_error(path: str, exc: OSError) -> RaftError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoSpaceError(f"{path}: the disk is full; nothing committed is lost")
    return StorageError(f"{path}: {exc.strerror}")
