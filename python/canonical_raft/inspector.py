"""``canonical-raft inspect DATA_DIR``: what a data dir holds, read-only.

For an MDBStore directory (store/mdb.py): term, vote, first and last index,
the snapshot, and the configuration in force (the newest configuration entry
in the log, else the snapshot's), every entry's CRC checked on the way.

For a uv-engine data dir (raft_uv's files): term and vote from metadata1/2,
the index range of the closed segments, the newest snapshot and its
configuration. Open segments are not decoded (their entries are counted as
"not decoded"), so a configuration change still in an open segment is not
shown.

The node's identity file (identity.py) is shown for both. Safe to run beside a
live node: LMDB readers do not block the writer, and nothing is written.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import struct
import sys
from typing import Any, Dict, List, Optional, Tuple

from . import _core
from ._preflight import MDB_FILES
from .errors import RaftError
from .identity import read as read_identity

RAFT_CHANGE = 3
_ROLES = {v: k.lower() for k, v in _core.roles.items()}
_SEGMENT = re.compile(r"^(\d{16})-(\d{16})$")
_UV_SNAPSHOT = re.compile(r"^snapshot-(\d+)-(\d+)-(\d+)\.meta$")

Server = Tuple[int, str, str]


def decode_configuration(buf: bytes) -> List[Server]:
    """libraft's encoding: u8 format (1), u64 n, then n x (u64 id, the address
    NUL-terminated, u8 role); little-endian."""
    if len(buf) < 9 or buf[0] != 1:
        raise ValueError("not a libraft configuration (format byte)")
    (n,) = struct.unpack_from("<Q", buf, 1)
    at, servers = 9, []
    for _ in range(n):
        (sid,) = struct.unpack_from("<Q", buf, at)
        end = buf.index(b"\0", at + 8)
        address = buf[at + 8:end].decode()
        role = buf[end + 1]
        servers.append((sid, address, _ROLES.get(role, str(role))))
        at = end + 2
    return servers


def _format_conf(conf: Optional[List[Server]]) -> str:
    if conf is None:
        return "(none)"
    return ", ".join(f"{sid} {addr} {role}" for sid, addr, role in conf)


# ------------------------------------------------------------------ MDBStore

def inspect_mdb(path: str) -> Dict[str, Any]:
    import lmdb

    from .store import mdb
    info: Dict[str, Any] = {"kind": "MDBStore"}
    data_path = os.path.join(path, mdb.DATA_FILE)
    if not os.path.exists(data_path):
        raise RaftError(f"{data_path} is missing")
    try:
        env = lmdb.open(path, readonly=True, max_dbs=2, lock=True, subdir=True)
    except lmdb.Error as exc:
        raise RaftError(f"cannot open {data_path}: {exc}") from None
    try:
        mdb.check_data_file(env, data_path)
        log_db = env.open_db(b"log", create=False)
        meta_db = env.open_db(b"meta", create=False)
        with env.begin() as txn:
            fmt, term, vote, first, record = mdb.read_meta(txn, meta_db, data_path)
            info.update(format=(fmt or b"").decode(errors="replace"), term=term, vote=vote)
            cursor = txn.cursor(db=log_db)
            last = first - 1
            if cursor.last():
                last = max(last, struct.unpack(">Q", cursor.key())[0])
            count, conf, conf_index = 0, None, 0
            if cursor.set_range(mdb.entry_key(first)):
                for key, value in cursor:
                    index = struct.unpack(">Q", key)[0]
                    _, type_, data = mdb.decode_entry(index, value, data_path)
                    count += 1
                    if type_ == RAFT_CHANGE:
                        conf, conf_index = decode_configuration(data), index
        info.update(first_index=first if count else None, last_index=last if count else None,
                    entries=count)
        if record is not None:
            info["snapshot"] = {"index": record.index, "term": record.term,
                                "file": record.file_name, "size": record.size}
            if conf is None:
                conf, conf_index = decode_configuration(record.conf), record.conf_index
        else:
            info["snapshot"] = None
        info["configuration_index"] = conf_index or None
        info["configuration"] = conf
    finally:
        env.close()
    return info


# ------------------------------------------------------------------ uv engine

def inspect_uv(path: str) -> Dict[str, Any]:
    info: Dict[str, Any] = {"kind": "uv engine (raft_uv)"}
    best: Optional[Tuple[int, int, int]] = None
    for name in ("metadata1", "metadata2"):
        try:
            with open(os.path.join(path, name), "rb") as f:
                raw = f.read(32)
        except OSError:
            continue
        if len(raw) == 32:
            fmt, version, term, vote = struct.unpack("<QQQQ", raw)
            if fmt == 1 and (best is None or version > best[0]):
                best = (version, term, vote)
    info["term"], info["vote"] = (best[1], best[2]) if best else (0, 0)
    names = os.listdir(path)
    ranges = [(int(m.group(1)), int(m.group(2))) for m in map(_SEGMENT.match, names) if m]
    info["first_index"] = min((a for a, _ in ranges), default=None)
    info["last_index"] = max((b for _, b in ranges), default=None)
    info["open_segments"] = sum(1 for n in names if n.startswith("open-"))
    snaps = sorted((tuple(map(int, m.groups())), m.group(0)) for m in
                   map(_UV_SNAPSHOT.match, names) if m)
    info["snapshot"] = None
    info["configuration"] = None
    info["configuration_index"] = None
    if snaps:
        (term, index, _), meta_name = snaps[-1]
        info["snapshot"] = {"index": index, "term": term, "file": meta_name[:-5]}
        with open(os.path.join(path, meta_name), "rb") as f:
            raw = f.read()
        # format, crc, configuration index, configuration length (u64 each, LE)
        if len(raw) >= 32:
            _, _, conf_index, length = struct.unpack_from("<QQQQ", raw)
            try:
                info["configuration"] = decode_configuration(raw[32:32 + length])
                info["configuration_index"] = conf_index
            except (ValueError, IndexError, struct.error):
                pass
    return info


# ------------------------------------------------------------------ the command

def inspect(data_dir: str) -> Dict[str, Any]:
    if not os.path.isdir(data_dir):
        raise RaftError(f"{data_dir} is not a directory")
    names = set(os.listdir(data_dir))
    if names & set(MDB_FILES):
        info = inspect_mdb(data_dir)
    elif names & {"metadata1", "metadata2"} or any(_SEGMENT.match(n) for n in names):
        info = inspect_uv(data_dir)
    else:
        raise RaftError(f"{data_dir} holds no Raft state (neither an MDBStore nor the uv "
                        "engine's files)")
    ident = read_identity(data_dir)
    info["node_id"] = ident.node_id if ident else None
    info["cluster_id"] = ident.cluster_id if ident else None
    info["data_dir"] = os.path.abspath(data_dir)
    return info


def render(info: Dict[str, Any]) -> str:
    snap = info["snapshot"]
    lines = [
        ("data dir", f"{info['data_dir']} ({info['kind']})"),
        ("node", f"{info['node_id'] or '?'} (cluster {info['cluster_id'] or '?'})"),
        ("term", info["term"]),
        ("vote", info["vote"] or "none"),
        ("first index", info["first_index"] if info["first_index"] is not None else "(empty log)"),
        ("last index", info["last_index"] if info["last_index"] is not None else "(empty log)"),
        ("snapshot", "none" if snap is None else
         f"index {snap['index']}, term {snap['term']} ({snap['file']})"),
        ("configuration", (f"at index {info['configuration_index']}: "
                           if info["configuration_index"] else "") +
         _format_conf(info["configuration"])),
    ]
    if info.get("open_segments"):
        lines.append(("open segments", f"{info['open_segments']} (entries not decoded)"))
    return "\n".join(f"{k + ':':15}{v}" for k, v in lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data_dir", metavar="DATA_DIR", help="a node's data dir (either engine)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args: argparse.Namespace) -> int:
    try:
        info = inspect(args.data_dir)
    except (RaftError, OSError, ImportError) as exc:
        print(f"canonical-raft inspect: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(info, indent=1) if args.json else render(info))
    return 0
