"""Snapshot framing of ours: a checksum (libraft 0.22.1 keeps none for snapshot
data, so a truncated snapshot file would reach FSM.restore), and optional zlib
compression (libraft 0.22.1 writes snapshots raw).

Version 2, written since the applier takes snapshots itself:

    8-byte magic | u32 flags | u32 0 | u64 body length | u32 crc32 | u32 0 | body

The crc32 runs over the flags, the zero word, the length and the body, so a
flipped flag is caught as damage. The body may be handed over in chunks (the FSM
may return a list of buffers), so a large state is never concatenated here.
Version 1 (round 1: magic | u64 length | u32 crc32 of the body | u32 flags) is
still read.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

from .errors import CorruptError

_MAGIC_V1 = b"CRFSNAP1"
_MAGIC = b"CRFSNAP2"
_HEADER_V1 = struct.Struct("<8sQII")
_COVERED = struct.Struct("<IIQ")  # flags, 0, length: under the crc
_HEADER = struct.Struct("<8s16sII")  # magic, covered, crc, 0
_COMPRESSED = 1


def snapshot_chunks(data: Any) -> list[bytes | bytearray | memoryview]:
    """FSM.snapshot()'s return value as a list of non-empty buffers; TypeError
    if it is neither a bytes-like object nor a list or tuple of them."""
    parts = data if isinstance(data, (list, tuple)) else [data]
    chunks = []
    for part in parts:
        if not isinstance(part, (bytes, bytearray, memoryview)):
            raise TypeError("FSM.snapshot() must return bytes, bytearray, memoryview or a list "
                            f"of them, not {type(part).__name__}")
        if isinstance(part, memoryview) and not part.c_contiguous:
            raise TypeError("FSM.snapshot() returned a non-contiguous memoryview")
        if len(part):
            chunks.append(part)
    return chunks


def snapshot_bytes(data: Any) -> bytes:
    """FSM.snapshot()'s return value joined into one bytes object."""
    return b"".join(bytes(chunk) for chunk in snapshot_chunks(data))


def encode_snapshot(data: Any, compress: bool) -> list[bytes | bytearray | memoryview]:
    """The frame for FSM.snapshot()'s return value, as a list of buffers."""
    chunks = snapshot_chunks(data)
    if compress:
        c = zlib.compressobj(1)
        body: list[bytes | bytearray | memoryview] = [c.compress(chunk) for chunk in chunks]
        body.append(c.flush())
        body = [b for b in body if b]
    else:
        body = chunks
    length = sum(memoryview(b).nbytes for b in body)
    covered = _COVERED.pack(_COMPRESSED if compress else 0, 0, length)
    crc = zlib.crc32(covered)
    for b in body:
        crc = zlib.crc32(b, crc)
    return [_HEADER.pack(_MAGIC, covered, crc, 0), *body]


def decode_snapshot(data: bytes) -> bytes:
    """The FSM's bytes; CorruptError if the snapshot is damaged."""
    if len(data) < _HEADER.size and not (data[:8] == _MAGIC_V1 and len(data) >= _HEADER_V1.size):
        raise CorruptError(f"snapshot of {len(data)} bytes is too short to be one of ours")
    magic = bytes(data[:8])
    if magic == _MAGIC_V1:
        _, length, crc, flags = _HEADER_V1.unpack_from(data)
        body = memoryview(data)[_HEADER_V1.size:]
        if zlib.crc32(body) != crc:
            raise CorruptError("snapshot checksum mismatch (damaged)")
    elif magic == _MAGIC:
        _, covered, crc, _ = _HEADER.unpack_from(data)
        flags, _, length = _COVERED.unpack(covered)
        body = memoryview(data)[_HEADER.size:]
        if len(body) == length and zlib.crc32(body, zlib.crc32(covered)) != crc:
            raise CorruptError("snapshot checksum mismatch (damaged)")
    else:
        raise CorruptError("snapshot has no canonical-raft header (damaged or foreign)")
    if len(body) != length:
        raise CorruptError(f"snapshot body is {len(body)} bytes, its header says {length} "
                           "(truncated or damaged)")
    if flags & ~_COMPRESSED:
        raise CorruptError(f"snapshot has unknown flags {flags:#x} (damaged or newer)")
    if not flags & _COMPRESSED:
        return bytes(body)
    try:
        return zlib.decompress(body)
    except zlib.error as exc:
        raise CorruptError(f"snapshot does not decompress ({exc}): damaged") from None
