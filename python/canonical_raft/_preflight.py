"""Checks made before a node starts, for errors libraft reports poorly."""

from __future__ import annotations

import errno
import os
import re
import socket

from .config import parse_address
from .errors import AddressInUseError, CorruptError, InvalidConfigError

_LOG_FILE = re.compile(r"^(open-\d+|\d{16}-\d{16}|snapshot-\d+-\d+-\d+(\.meta)?)$")


def check_bindable(address: str) -> None:
    """libraft's listen failure says only "I/O error": find out which and say so."""
    host, port = parse_address(address)
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InvalidConfigError(f"cannot resolve the host of {address!r}: {exc}") from None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as libuv does
        try:
            probe.bind(infos[0][4])
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise AddressInUseError(f"address {address} is already in use by another "
                                        "socket", code=None) from None
            raise InvalidConfigError(f"cannot listen on {address}: {exc.strerror}") from None


#: Files an MDBStore (store/mdb.py) keeps in its directory.
MDB_FILES = ("canonical-raft-mdb.format", "data.mdb")


def uv_files(data_dir: str) -> list[str]:
    """The uv engine's (raft_uv's) files in data_dir, sorted."""
    try:
        names = os.listdir(data_dir)
    except OSError:
        return []
    return sorted(n for n in names if _LOG_FILE.match(n) or n in ("metadata1", "metadata2"))


def check_metadata(data_dir: str) -> None:
    """A data dir with log files but no readable term/vote metadata is damaged:
    libraft would treat it as brand new beside its old log. A data dir that
    holds an MDBStore is not the uv engine's: refuse it rather than start an
    empty log beside it."""
    try:
        names = os.listdir(data_dir)
    except OSError:
        return
    mdb = [m for m in MDB_FILES if m in names]
    if mdb:
        raise InvalidConfigError(f"{data_dir} holds an MDBStore ({mdb[0]}), the asyncio "
                                 "engine's log: start the node with engine='asyncio', "
                                 "store=MDBStore(data_dir), not on the uv engine")
    if not any(_LOG_FILE.match(name) for name in names):
        return
    sizes = [os.path.getsize(os.path.join(data_dir, m)) for m in ("metadata1", "metadata2")
             if m in names]
    if not any(sizes):
        raise CorruptError(f"{data_dir} holds a Raft log but metadata1/metadata2 (term and "
                           "vote) are missing or empty; see docs/operations.md")


def has_raft_state(data_dir: str) -> bool:
    """Whether libraft has written anything to data_dir (a log, a snapshot, or
    term/vote metadata)."""
    try:
        names = os.listdir(data_dir)
    except OSError:
        return False
    if any(_LOG_FILE.match(name) for name in names):
        return True
    return any(os.path.getsize(os.path.join(data_dir, m)) for m in ("metadata1", "metadata2")
               if m in names)


def newest_snapshot(data_dir: str) -> str:
    """The snapshot file libraft loads at start (highest term, index, time)."""
    best, name = None, "the newest snapshot file"
    for entry in os.listdir(data_dir):
        m = re.match(r"^snapshot-(\d+)-(\d+)-(\d+)$", entry)
        if m and (best is None or tuple(map(int, m.groups())) > best):
            best, name = tuple(map(int, m.groups())), entry
    return name
