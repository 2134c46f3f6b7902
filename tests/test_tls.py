"""Mutual TLS on the asyncio engine: every raft connection, both ways, needs a
certificate signed by the cluster's CA. Certificates are made at test time."""

from __future__ import annotations

import logging
import socket
import ssl
import struct

import pytest
from conftest import FAST, KV, WAIT, free_port, wait_for

import canonical_raft as raft

trustme = pytest.importorskip("trustme")


def write_identity(ca, tmp_path, name: str) -> raft.TLS:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path, ca_path = (tmp_path / f"{name}.pem", tmp_path / f"{name}.key",
                                    tmp_path / f"{name}-ca.pem")
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    for blob in cert.cert_chain_pems[1:]:
        blob.write_to_path(str(cert_path), append=True)
    cert.private_key_pem.write_to_path(str(key_path))
    ca.cert_pem.write_to_path(str(ca_path))
    return raft.TLS(cert=cert_path, key=key_path, ca=ca_path)


def start(cluster, i, tls, store=None):
    return raft.Node(i, cluster[i], KV(), engine="asyncio", store=store or raft.MemoryStore(),
                     cluster=cluster, config=FAST, tls=tls).start()


def test_a_tls_cluster_commits(tmp_path):
    ca = trustme.CA()
    cluster = {i: f"127.0.0.1:{free_port()}" for i in (1, 2, 3)}
    nodes = [start(cluster, i, write_identity(ca, tmp_path, f"n{i}")) for i in cluster]
    try:
        leader = wait_for(lambda: next((n for n in nodes if n.is_leader), None), what="leader")
        for i in range(50):
            leader.apply(f"set k{i} {i}".encode()).result(WAIT)
        leader.barrier().result(WAIT)
        for node in nodes:
            node.wait_applied(leader.last_applied, WAIT)
            assert node.fsm.state() == leader.fsm.state()
    finally:
        for node in nodes:
            node.close()


def test_other_ca_and_plaintext_peers_are_refused(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="canonical_raft.transport")
    ca, rogue_ca = trustme.CA(), trustme.CA()
    cluster = {1: f"127.0.0.1:{free_port()}", 2: f"127.0.0.1:{free_port()}"}
    # Node 1 alone can elect itself only if it is the whole cluster: make it so,
    # and let node 2 (another CA) try to talk to it.
    solo = {1: cluster[1]}
    good = raft.Node(1, cluster[1], KV(), engine="asyncio", store=raft.MemoryStore(),
                     cluster=solo, config=FAST, tls=write_identity(ca, tmp_path, "good")).start()
    try:
        good.wait_leader(WAIT)
        host, port = cluster[1].split(":")
        # A plaintext peer: a raft handshake without TLS.
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(struct.pack("<QQQ", 1, 2, 16) + b"127.0.0.1:1\0\0\0\0\0")
            s.settimeout(5)
            try:  # the node answers as TLS would, or closes: never as raft
                reply = s.recv(100)
            except OSError:
                reply = b""
            assert not reply.startswith(b"\x01\x00\x00\x00")
        # A TLS peer with another CA's certificate.
        rogue = write_identity(rogue_ca, tmp_path, "rogue")
        ctx = rogue.client_context()
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            with pytest.raises((ssl.SSLError, OSError)):
                with ctx.wrap_socket(raw) as s:
                    s.sendall(b"x" * 64)
                    s.recv(10)
        wait_for(lambda: sum("TLS handshake failed" in r.getMessage()
                             for r in caplog.records) >= 2, what="both refusals logged")
        assert good.apply(b"set still ok").result(WAIT) == "ok"
    finally:
        good.close()


def test_a_node_with_another_cas_certificate_cannot_join(tmp_path):
    ca, rogue_ca = trustme.CA(), trustme.CA()
    cluster = {i: f"127.0.0.1:{free_port()}" for i in (1, 2, 3)}
    nodes = [start(cluster, 1, write_identity(ca, tmp_path, "n1")),
             start(cluster, 2, write_identity(ca, tmp_path, "n2"))]
    rogue = start(cluster, 3, write_identity(rogue_ca, tmp_path, "n3"))
    try:
        leader = wait_for(lambda: next((n for n in nodes if n.is_leader), None), what="leader")
        for i in range(20):
            leader.apply(f"set k{i} {i}".encode()).result(WAIT)
        assert rogue.last_applied < leader.last_applied
        assert not rogue.fsm.data  # nothing reached it
    finally:
        for node in [*nodes, rogue]:
            node.close()


def test_tls_files_that_do_not_load_are_a_clear_error(tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    node = raft.Node(1, addr, KV(), engine="asyncio", store=raft.MemoryStore(),
                     cluster={1: addr}, tls=raft.TLS(tmp_path / "no.pem", tmp_path / "no.key",
                                                      tmp_path / "no-ca.pem"))
    with pytest.raises(raft.InvalidConfigError, match="cannot load"):
        node.start()


def test_forwarding_runs_over_the_same_mutual_tls(tmp_path, caplog):
    """Node(forward=..., tls=...): a follower's apply travels to the leader over
    TLS (a plaintext or other-CA client is refused there), with big frames both
    ways at once (one reader thread, many writers on one connection)."""
    caplog.set_level(logging.WARNING, logger="canonical_raft.forwarding")
    ca, rogue_ca = trustme.CA(), trustme.CA()
    cluster = {i: f"127.0.0.1:{free_port()}" for i in (1, 2, 3)}
    forward = {i: f"127.0.0.1:{free_port()}" for i in cluster}
    nodes = [raft.Node(i, cluster[i], KV(), engine="asyncio", store=raft.MemoryStore(),
                       cluster=cluster, config=FAST, forward=forward,
                       tls=write_identity(ca, tmp_path, f"n{i}")).start() for i in cluster]
    try:
        leader = wait_for(lambda: next((n for n in nodes if n.is_leader), None), what="leader")
        follower = next(n for n in nodes if n is not leader)
        big = "v" * 300_000
        futs = [follower.apply(f"set k{i} {big}".encode()) for i in range(20)]
        assert all(f.result(WAIT) == big for f in futs)
        assert all(f.index is not None for f in futs)  # the leader's log index
        follower.barrier().result(WAIT)
        assert follower.fsm.data["k19"] == big
        host, port = forward[leader.id].split(":")
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(struct.pack("<IBQ", 9 + 9, 0, 1) + b"set x bad")
            s.settimeout(5)
            try:
                assert s.recv(100) == b""  # refused: closed without an answer
            except OSError:
                pass
        ctx = write_identity(rogue_ca, tmp_path, "rogue").client_context()
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            with pytest.raises((ssl.SSLError, OSError)):
                with ctx.wrap_socket(raw) as s:
                    s.sendall(struct.pack("<IBQ", 9 + 9, 0, 1) + b"set x bad")
                    assert s.recv(100) == b""
                    raise OSError("closed")
        wait_for(lambda: "refused a forwarding connection: TLS" in caplog.text,
                 what="the refusal logged")
        assert "x" not in leader.fsm.data
    finally:
        for node in nodes:
            node.close()
