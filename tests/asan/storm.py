"""Many hostile connections at once against a live node; it must keep committing
with bounded memory. Usage: python storm.py DATA_DIR CONNECTIONS
Prints "storm N ok rss_growth_kib=K applies=A" on success."""

from __future__ import annotations

import random
import socket
import sys
import threading

import canonical_raft as raft
from hostile import HELLO, PAYLOADS, UNSAFE, Counter, free_port, u64

STALLED_MAX = 40  # connections held open without finishing their message


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def attack(port: int, rng: random.Random, stalled: list) -> None:
    kind = rng.randrange(5)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        if kind == 0:  # one of the named payloads
            s.sendall(rng.choice(list({**PAYLOADS, **UNSAFE}.values())))
        elif kind == 1:  # random garbage of random length
            s.sendall(rng.randbytes(rng.randrange(1, 16384)))
        elif kind == 2:  # a valid handshake, then a random message
            s.sendall(HELLO + u64(rng.randrange(1, 7)) + u64(rng.randrange(0, 4096))
                      + rng.randbytes(rng.randrange(0, 4096)))
        elif kind == 3 and len(stalled) < STALLED_MAX:  # truncated handshake, held open
            s.sendall(HELLO[: rng.randrange(1, len(HELLO))])
            stalled.append(s)
            return
        else:  # connect and say nothing, held open
            if len(stalled) < STALLED_MAX:
                stalled.append(s)
                return
    except OSError:
        pass  # the node hung up first: fine
    s.close()


def commit(node: raft.Node) -> int:
    """Apply once, riding out step-downs: a peer that speaks the protocol is
    trusted by libraft, so a forged higher term can depose the leader."""
    deadline = 60
    for _ in range(deadline * 10):
        try:
            return node.apply(b"x").result(30)
        except (raft.NotLeaderError, raft.LeadershipLostError):
            node.wait_leader(30)
            threading.Event().wait(0.1)
    raise AssertionError("the node stopped committing")


def main(data_dir: str, connections: int) -> None:
    addr = f"127.0.0.1:{free_port()}"
    port = int(addr.rsplit(":", 1)[1])
    config = raft.Config(election_timeout=0.5, heartbeat_timeout=0.05)
    with raft.Node(1, addr, Counter(), data_dir, cluster={1: addr}, config=config) as node:
        node.wait_leader(30)
        node.apply(b"warm").result(30)
        before = rss_kib()
        rng = random.Random(connections)
        stalled: list[socket.socket] = []
        done = 0
        applies = 0
        while done < connections:
            batch = min(50, connections - done)
            threads = [threading.Thread(target=attack, args=(port, random.Random(rng.random()),
                                                             stalled)) for _ in range(batch)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            done += batch
            applies = commit(node)
            if len(stalled) >= STALLED_MAX:
                for s in stalled:
                    s.close()
                stalled.clear()
        for s in stalled:
            s.close()
        applies = commit(node)
        growth = rss_kib() - before
        assert growth < 256 * 1024, f"RSS grew by {growth} KiB"
        print(f"storm {connections} ok rss_growth_kib={growth} applies={applies}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
