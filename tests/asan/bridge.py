"""The asyncio engine's io bridge (cpp/io_bridge.cpp) under AddressSanitizer +
LeakSanitizer: a mixed cluster (two asyncio-engine nodes on MemoryStores, one
uv-engine node) applies across snapshots; an asyncio follower is stopped and
restarted on its store so the leader's log moves past it (a snapshot install
through the bridge: snapshot_get on one side, InstallSnapshot decoded and
snapshot_put trailing 0 on the other); hostile frames hit an asyncio node's
port; everything closes (pending requests cancelled by the bridge's close).
Prints "bridge ok". Usage: python bridge.py DATA_DIR
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import time

from cycle import WAIT, Counter, free_ports

import canonical_raft as raft
from canonical_raft import _core


def main(base: str) -> None:
    print("core:", _core.__file__)
    with open("/proc/self/maps") as maps:
        assert "libasan" in maps.read(), "libasan is not loaded"
    config = raft.Config(election_timeout=1.0, heartbeat_timeout=0.1,
                         snapshot_threshold=32, snapshot_trailing=8)
    cluster = {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(free_ports(3))}
    stores = {1: raft.MemoryStore(), 2: raft.MemoryStore()}

    def make(i: int) -> raft.Node:
        cfg = config.replace(election_timeout=1.0 + 0.3 * i)
        if i in stores:
            return raft.Node(i, cluster[i], Counter(), os.path.join(base, f"n{i}"),
                             cluster=cluster, config=cfg, engine="asyncio", store=stores[i])
        return raft.Node(i, cluster[i], Counter(), os.path.join(base, f"n{i}"),
                         cluster=cluster, config=cfg)

    def leader() -> raft.Node:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            found = [n for n in nodes.values() if n.is_leader]
            if len(found) == 1:
                return found[0]
            time.sleep(0.01)
        raise SystemExit("no leader")

    nodes = {i: make(i).start() for i in cluster}
    total = 0
    lead = leader()
    for fut in [lead.apply(b"1") for _ in range(200)]:
        fut.result(WAIT)
    total += 200
    follower = next(i for i in stores if nodes[i] is not lead)
    nodes[follower].close()
    for _ in range(80):  # one entry each: the leader compacts past the follower
        lead.apply(b"1").result(WAIT)
    total += 80
    nodes[follower] = make(follower).start()

    # Hostile frames at an asyncio node's port (the bridge decodes headers).
    host, port = cluster[follower].split(":")
    hello = struct.pack("<QQQ", 1, 77, 16) + b"127.0.0.1:1\0\0\0\0\0"
    for payload in (hello + struct.pack("<BBBBIQ", 1, 0, 0, 0, 0, 8) + bytes(8),
                    hello + struct.pack("<BBBBIQ", 5, 0, 0, 0, 0, 48) + bytes(48),
                    hello + bytes(range(256)) * 8):
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(5)
            try:
                while s.recv(4096):
                    pass
            except OSError:
                pass

    lead = leader()
    lead.barrier().result(WAIT)
    for node in nodes.values():
        node.wait_applied(lead.last_applied, WAIT)
        assert node.fsm.n == total, (node.id, node.fsm.n, total)
    restored = {i: n.stats()["snapshots_restored"] for i, n in nodes.items()}
    pending = [lead.apply(b"1") for _ in range(50)]  # in flight at close
    for node in nodes.values():
        node.close()
    for fut in pending:
        fut.exception(WAIT)
    print(f"bridge ok: {total} applied, snapshots restored {restored}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main(sys.argv[1])
