"""Many hostile connections at once against a live node; it must keep committing
with bounded memory.

Usage: python storm.py DATA_DIR CONNECTIONS [uv | asyncio | asyncio-tls]

The node runs on the uv engine (default), on the asyncio engine (MemoryStore,
on the library's loop thread), or on the asyncio engine with mutual TLS
(certificates made here with trustme). Against a TLS node the storm adds TLS
attackers: a client certificate from another CA, no client certificate, a
TLS handshake cut short and held open, and peers with a valid certificate
that then send the same hostile raft bytes (authenticated, yet hostile).
Prints "storm N ok rss_growth_kib=K applies=A" on success."""

from __future__ import annotations

import os
import random
import socket
import ssl
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


def hostile_bytes(rng: random.Random) -> bytes:
    kind = rng.randrange(3)
    if kind == 0:  # one of the named payloads
        return rng.choice(list({**PAYLOADS, **UNSAFE}.values()))
    if kind == 1:  # random garbage of random length
        return rng.randbytes(rng.randrange(1, 16384))
    return (HELLO + u64(rng.randrange(1, 7)) + u64(rng.randrange(0, 4096))
            + rng.randbytes(rng.randrange(0, 4096)))


class TLSAttackers:
    """Client contexts for the TLS kinds of attack: a valid member's, one
    signed by another CA, and one with no certificate at all."""

    def __init__(self, valid: raft.TLS, rogue: raft.TLS) -> None:
        self.valid = valid.client_context()
        self.rogue = rogue.client_context()
        bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        bare.check_hostname = False
        bare.verify_mode = ssl.CERT_NONE
        self.bare = bare

    def attack(self, port: int, rng: random.Random, stalled: list) -> None:
        kind = rng.randrange(4)
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            if kind == 3:  # a ClientHello cut short, held open
                if len(stalled) < STALLED_MAX:
                    stalled.append(raw)
                    raw.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
                    return
                kind = rng.randrange(3)
            ctx = (self.rogue, self.bare, self.valid)[kind]
            with ctx.wrap_socket(raw) as s:   # refused, unless kind 2 (a valid member)
                s.sendall(hostile_bytes(rng))
                s.settimeout(1)
                s.recv(1)
        except (OSError, ssl.SSLError):
            pass  # refused, or the node hung up first: fine
        raw.close()


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


def identity(ca, directory: str, name: str) -> raft.TLS:
    cert = ca.issue_cert("127.0.0.1")
    paths = [os.path.join(directory, f"{name}.{ext}") for ext in ("pem", "key", "ca.pem")]
    for i, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(paths[0], append=i > 0)
    cert.private_key_pem.write_to_path(paths[1])
    ca.cert_pem.write_to_path(paths[2])
    return raft.TLS(*paths)


def node_options(mode: str, data_dir: str) -> tuple[dict, TLSAttackers | None]:
    if mode == "uv":
        return {}, None
    options = {"engine": "asyncio", "store": raft.MemoryStore()}
    if mode == "asyncio":
        return options, None
    import trustme
    certs = os.path.join(os.path.dirname(os.path.abspath(data_dir)), "tls")
    os.makedirs(certs, exist_ok=True)
    ca = trustme.CA()
    options["tls"] = identity(ca, certs, "node")
    return options, TLSAttackers(identity(ca, certs, "member"),
                                 identity(trustme.CA(), certs, "rogue"))


def main(data_dir: str, connections: int, mode: str = "uv") -> None:
    addr = f"127.0.0.1:{free_port()}"
    port = int(addr.rsplit(":", 1)[1])
    config = raft.Config(election_timeout=0.5, heartbeat_timeout=0.05)
    options, tls = node_options(mode, data_dir)
    with raft.Node(1, addr, Counter(), data_dir, cluster={1: addr}, config=config,
                   **options) as node:
        node.wait_leader(30)
        node.apply(b"warm").result(30)
        before = rss_kib()
        rng = random.Random(connections)
        stalled: list[socket.socket] = []
        done = 0
        applies = 0
        while done < connections:
            batch = min(50, connections - done)
            # Against a TLS node, half the attackers speak TLS.
            threads = [threading.Thread(
                target=tls.attack if tls is not None and rng.random() < 0.5 else attack,
                args=(port, random.Random(rng.random()), stalled)) for _ in range(batch)]
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
        print(f"storm {connections} ok rss_growth_kib={growth} applies={applies} "
              f"engine={node.engine}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:4])
