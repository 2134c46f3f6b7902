"""Snapshot framing of ours: optional zlib compression, recognised on restore."""

from __future__ import annotations

import zlib

_MAGIC = b"CRFSNAPZ"  # compressed snapshot; anything else is the FSM's raw bytes


def encode_snapshot(data: bytes, compress: bool) -> bytes:
    return _MAGIC + zlib.compress(data, 1) if compress else data


def decode_snapshot(data: bytes) -> bytes:
    if data.startswith(_MAGIC):
        return zlib.decompress(data[len(_MAGIC):])
    return data
