"""A node known by one address and listening on another (``Node(bind=...)``,
``serve --bind``): behind a port mapping, NAT or a proxy.

The nodes here are known by ports of a LinkProxy (the Jepsen harness's
fault-injecting proxy), which holds those ports and forwards to each node's
bind port: a node that tried to listen on its advertised address would fail
to start (the port is taken), and one whose peers bypassed the proxy would
show no connection crossing it.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from conftest import FAST, KV, WAIT, free_port, wait_for

import canonical_raft as raft
from canonical_raft.jepsen import LinkProxy

ENGINES = {"uv": {1: "uv", 2: "uv", 3: "uv"},
           "asyncio": {1: "asyncio", 2: "asyncio", 3: "asyncio"},
           "mixed": {1: "uv", 2: "asyncio", 3: "uv"}}


def _node(i: int, cluster: dict[int, str], bind: str, engine: str, tmp_path) -> raft.Node:
    extra = {"store": raft.MemoryStore()} if engine == "asyncio" else {}
    return raft.Node(i, cluster[i], KV(), tmp_path / f"n{i}", cluster=cluster, bind=bind,
                     config=FAST, engine=engine, **extra)


@pytest.mark.parametrize("kind", sorted(ENGINES))
def test_nodes_known_by_proxy_addresses_commit_and_snapshots_keep_them(tmp_path, kind):
    binds = {i: free_port() for i in (1, 2, 3)}
    nodes: dict[int, raft.Node] = {}
    with LinkProxy(binds) as proxy:
        cluster = {i: f"127.0.0.1:{proxy.ports[i]}" for i in binds}
        try:
            for i in binds:
                node = nodes[i] = _node(i, cluster, f"127.0.0.1:{binds[i]}",
                                        ENGINES[kind][i], tmp_path)
                assert node.address == cluster[i] and node.bind == f"127.0.0.1:{binds[i]}"
            for node in nodes.values():
                node.start()
            leader = nodes[nodes[1].wait_leader(WAIT).id]
            for n in range(50):
                leader.apply(f"set k{n} {n}".encode()).result(WAIT)

            # A follower cut off while the leader writes past several snapshots
            # (threshold 64, trailing 16) must install one to catch up.
            follower = next(n for n in nodes.values() if n is not leader)
            proxy.isolate(follower.id)
            for n in range(50, 400):   # one at a time: one entry each
                leader.apply(f"set k{n} {n}".encode()).result(WAIT)
            proxy.heal()
            leader.barrier().result(WAIT)
            target = leader.last_applied
            wait_for(lambda: all(n.last_applied >= target for n in nodes.values()),
                     what="every node applied the last write")
            assert {n.fsm.digest for n in nodes.values()} == {leader.fsm.digest}
            assert follower.fsm.restores >= 1   # it caught up from a snapshot

            # Every configuration, the installed snapshot's included, names the
            # proxy's ports: none leads around it.
            for node in nodes.values():
                assert {s.id: s.address for s in node.configuration} == cluster
            crossed: dict[int, int] = {}
            for (_, dst), count in proxy.connections().items():
                crossed[dst] = crossed.get(dst, 0) + count
            assert all(crossed[i] > 0 for i in binds), crossed
        finally:
            for node in nodes.values():
                node.close()


def test_nothing_listens_on_the_advertised_address_itself(tmp_path):
    """The node listens on ``bind`` only: a connection to its advertised
    address (held by nobody here) is refused."""
    advertised, bound = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    with raft.Node(1, advertised, KV(), tmp_path / "n1", cluster={1: advertised},
                   bind=bound, config=FAST) as node:
        node.wait_leader(WAIT)
        assert node.apply(b"set a 1").result(WAIT) == "1"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", int(advertised.rsplit(":", 1)[1])), 2).close()
        socket.create_connection(("127.0.0.1", int(bound.rsplit(":", 1)[1])), 2).close()


@pytest.mark.parametrize("bind", ["nohost", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000",
                                  "[::1]:9000", "300.1.1.1:9000", 9000, b"127.0.0.1:9000"])
def test_a_bad_bind_is_refused_like_a_bad_address(tmp_path, bind):
    addr = f"127.0.0.1:{free_port()}"
    with pytest.raises(raft.InvalidConfigError, match="bind"):
        raft.Node(1, addr, KV(), tmp_path / "d", cluster={1: addr}, bind=bind)


def test_bind_and_config_bind_address_must_agree(tmp_path):
    addr, other = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    with pytest.raises(raft.InvalidConfigError, match="differ"):
        raft.Node(1, addr, KV(), tmp_path / "d", cluster={1: addr}, bind=other,
                  config=raft.Config(bind_address=addr))
    node = raft.Node(1, addr, KV(), tmp_path / "d", cluster={1: addr}, bind=other,
                     config=raft.Config(bind_address=other))
    assert node.bind == other
    assert raft.Node(1, addr, KV(), tmp_path / "e", cluster={1: addr}).bind == addr


def test_a_taken_bind_address_is_address_in_use(tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = f"127.0.0.1:{holder.getsockname()[1]}"
        node = raft.Node(1, addr, KV(), tmp_path / "d", cluster={1: addr}, bind=taken)
        with pytest.raises(raft.AddressInUseError, match=taken):
            node.start()
        node.close()


def test_serve_rejects_a_bad_bind(tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    proc = subprocess.run(
        [sys.executable, "-m", "canonical_raft", "serve", "--id", "1", "--address", addr,
         "--bind", "127.0.0.1:99999", "--data-dir", str(tmp_path / "n1"), "--cluster",
         f"1={addr}", "--client-port", str(free_port())],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc
    assert "could not start" in proc.stderr and "bind" in proc.stderr, proc.stderr
