"""Snapshot framing of ours: a checksum (libraft 0.22.1 keeps none for snapshot
data, so a truncated snapshot file would reach FSM.restore), and optional zlib
compression (libraft 0.22.1 writes snapshots raw).

    8-byte magic | u64 length of the body | u32 crc32 of the body | u32 flags | body
"""

from __future__ import annotations

import struct
import zlib

from .errors import CorruptError

_MAGIC = b"CRFSNAP1"
_HEADER = struct.Struct("<8sQII")
_COMPRESSED = 1


def encode_snapshot(data: bytes, compress: bool) -> bytes:
    body = zlib.compress(data, 1) if compress else data
    header = _HEADER.pack(_MAGIC, len(body), zlib.crc32(body), _COMPRESSED if compress else 0)
    return header + body


def decode_snapshot(data: bytes) -> bytes:
    """The FSM's bytes; CorruptError if the snapshot is damaged."""
    if len(data) < _HEADER.size:
        raise CorruptError(f"snapshot of {len(data)} bytes is too short to be one of ours")
    magic, length, crc, flags = _HEADER.unpack_from(data)
    body = memoryview(data)[_HEADER.size:]
    if magic != _MAGIC:
        raise CorruptError("snapshot has no canonical-raft header (damaged or foreign)")
    if len(body) != length:
        raise CorruptError(f"snapshot body is {len(body)} bytes, its header says {length} "
                           "(truncated or damaged)")
    if zlib.crc32(body) != crc:
        raise CorruptError("snapshot checksum mismatch (damaged)")
    return zlib.decompress(body) if flags & _COMPRESSED else bytes(body)
