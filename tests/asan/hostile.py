"""Send hostile bytes to a live node's raft port, then check it still commits.

Run in a child process by test_bad_input.py (installed build) and test_asan.py
(ASan build), since some inputs crash libraft 0.22.1.
Usage: python hostile.py DATA_DIR [PAYLOAD_NAME ...]  (default: every safe one)
Prints "served N" after N payloads, each followed by a committed apply.
"""

from __future__ import annotations

import random
import socket
import struct
import sys
import time

import canonical_raft as raft


class Counter(raft.FSM):
    def __init__(self) -> None:
        self.n = 0

    def apply(self, command: bytes):
        self.n += 1
        return self.n

    def snapshot(self) -> bytes:
        return str(self.n).encode()

    def restore(self, snapshot: bytes) -> None:
        self.n = int(snapshot)


def u64(x: int) -> bytes:
    return struct.pack("<Q", x)


# raft_uv's handshake: protocol 1, server id, address length, NUL-padded address.
HELLO = u64(1) + u64(7) + u64(16) + b"127.0.0.1:1".ljust(16, b"\0")
_rng = random.Random(1)
PAYLOADS = {
    "random": bytes(_rng.randrange(256) for _ in range(64 * 1024)),
    "zeros": bytes(4096),
    "bad protocol": u64(99) + u64(7) + u64(5) + b"hello",
    "huge address length": u64(1) + u64(7) + u64(2**62),
    "1 GiB address, then close": u64(1) + u64(7) + u64(2**30) + b"abc",
    "huge header length": HELLO + u64(1) + u64(2**62),
    "1 GiB header, then close": HELLO + u64(1) + u64(2**30) + b"xx",
    "zero header length": HELLO + u64(1) + u64(0),
    "unknown message type": HELLO + u64(200) + u64(8) + u64(0),
}
# Valid framing, bad content: libraft 0.22.1 reads past its buffers on these.
UNSAFE = {
    # strlen() on the peer's address, which libraft never NUL-terminates
    # (uv_recv.c:66): a heap over-read, visible under ASan only.
    "unterminated address": u64(1) + u64(7) + u64(11) + b"127.0.0.1:1",
    # uvDecodeMessage ignores the declared header length (uv_encoding.c:486):
    # a 1-byte AppendEntries header is read as 40+ bytes; SIGSEGV in practice.
    "1-byte AppendEntries header": HELLO + u64(1) + u64(1) + b"\x01",
}

# Valid framing, bad content, made safe by fix_libraft.sh's later fixes (each
# reproduced at the C level by tests/libraft/regress.c); run by name. Term 1,
# below the node's, so after decoding they are only rejected.
_MSG = lambda kind, version, body: HELLO + u64(kind | version << 16) + u64(len(body)) + body  # noqa: E731
_SHORT_CONF = bytes([1]) + u64(2) + u64(1) + b"127.0.0.1:1\0"  # 29 bytes, declares 2 servers
FIXED = {
    # request-vote-flags: 32 bytes, version 1, no flags field (8-byte over-read)
    "32-byte RequestVote v1": _MSG(3, 1, u64(1) + u64(7) + u64(1) + u64(1)),
    "32-byte RequestVote v0": _MSG(3, 0, u64(1) + u64(7) + u64(1) + u64(1)),
    # configuration-bounds: InstallSnapshot whose configuration is too short
    "short InstallSnapshot configuration": _MSG(
        5, 0, u64(1) + u64(10) + u64(2) + u64(1) + u64(len(_SHORT_CONF)) + _SHORT_CONF + u64(0)),
    # message-length: a 64 MiB header declared (refused at once with the fix)
    "64 MiB header": HELLO + u64(1) + u64(64 << 20) + b"x" * 64,
}


def free_port() -> int:
    # Below the ephemeral range, like conftest.free_port: outgoing connections
    # cannot take it between our check and the node's bind.
    while True:
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def main(data_dir: str, names: list[str]) -> None:
    names = names or list(PAYLOADS)
    addr = f"127.0.0.1:{free_port()}"
    port = int(addr.rsplit(":", 1)[1])
    config = raft.Config(election_timeout=0.5, heartbeat_timeout=0.05)
    with raft.Node(1, addr, Counter(), data_dir, cluster={1: addr}, config=config) as node:
        node.wait_leader(30)
        for i, name in enumerate(names, 1):
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                try:
                    s.sendall({**PAYLOADS, **UNSAFE, **FIXED}[name])
                except OSError:
                    pass  # the node may hang up first: fine
                time.sleep(0.1)  # let the node read it before the close
            assert node.apply(b"x").result(30) == i, name
        print(f"served {len(names)}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
