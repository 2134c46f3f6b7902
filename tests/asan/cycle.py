"""The workload test_asan.py runs under AddressSanitizer + LeakSanitizer.

Three nodes in one process: elect, apply across several snapshots, restart a
follower so it catches up (from a snapshot when the leader has compacted past
it), take the error paths that cross C++ (a start that fails, FSM exceptions,
use after close), then close everything. Prints "cycle ok" when every check
passed. Usage: python cycle.py DATA_DIR
"""

from __future__ import annotations

import json
import os
import random
import socket
import sys
import time

import canonical_raft as raft
from canonical_raft import _core

WAIT = 60.0


class Counter(raft.FSM):
    def __init__(self) -> None:
        self.n = 0

    def apply(self, command: bytes):
        if command == b"boom":
            raise ValueError("boom")
        self.n += int(command)
        return self.n

    def snapshot(self) -> bytes:
        return json.dumps(self.n).encode()

    def restore(self, snapshot: bytes) -> None:
        self.n = json.loads(snapshot)


def free_ports(k: int) -> list[int]:
    # Below the ephemeral range, like conftest.free_port: outgoing connections
    # cannot take them between our check and the nodes' binds.
    ports: set[int] = set()
    while len(ports) < k:
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.add(port)
    return sorted(ports)


def main(base: str) -> None:
    # Prove what is under test: the ASan-built core, with the runtime loaded.
    print("core:", _core.__file__)
    with open("/proc/self/maps") as maps:
        assert "libasan" in maps.read(), "libasan is not loaded"

    config = raft.Config(election_timeout=1.0, heartbeat_timeout=0.1,
                         snapshot_threshold=32, snapshot_trailing=8)
    cluster = {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(free_ports(3))}

    def make(i: int) -> raft.Node:
        # Staggered election timeouts: nodes of one process otherwise split votes.
        return raft.Node(i, cluster[i], Counter(), os.path.join(base, f"n{i}"),
                         cluster=cluster, config=config.replace(election_timeout=1.0 + 0.3 * i))

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
    for _ in range(3):
        lead = leader()
        for fut in [lead.apply(b"1") for _ in range(150)]:
            fut.result(WAIT)
        total += 150
        follower = next(i for i, n in nodes.items() if n is not lead)
        nodes[follower].close()
        for _ in range(40):  # past the threshold: the restarted one may need a snapshot
            lead.apply(b"1").result(WAIT)
        total += 40
        nodes[follower] = make(follower).start()

    lead = leader()
    try:
        lead.apply(b"boom").result(WAIT)
        raise SystemExit("FSM exception was lost")
    except ValueError:
        pass
    try:
        lead.apply(b"x" * (config.command_limit() + 1))
        raise SystemExit("oversized command accepted")
    except raft.TooBigError:
        pass

    # A start that fails inside the core (its port is taken): C++ exception path.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        try:
            raft.Node(9, addr, Counter(), os.path.join(base, "busy"), cluster={9: addr}).start()
            raise SystemExit("started on a taken port")
        except raft.RaftError:
            pass

    lead.barrier().result(WAIT)
    for node in nodes.values():
        node.wait_applied(lead.last_applied, WAIT)
        assert node.fsm.n == total, (node.id, node.fsm.n, total)
    taken_snapshots = {i: n.stats()["snapshots_taken"] for i, n in nodes.items()}
    restored = {i: n.stats()["snapshots_restored"] for i, n in nodes.items()}
    for node in nodes.values():
        node.close()
    try:
        lead.apply(b"1")
        raise SystemExit("apply after close accepted")
    except raft.ShutdownError:
        pass
    print(f"cycle ok: {total} applied, snapshots taken {taken_snapshots}, restored {restored}")


if __name__ == "__main__":
    main(sys.argv[1])
