"""The asyncio engine (engine 2): Raft's io as coroutines on an event loop,
wire-compatible with the uv engine, with optional mutual TLS and pluggable
stores. Node behaviour common to both engines is tested over both elsewhere
(the `cluster` fixture); this file holds what is specific to engine 2."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time

import pytest
from conftest import FAST, KV, WAIT, free_port, wait_for

import canonical_raft as raft

CONFIG = FAST


def addresses(n: int) -> dict[int, str]:
    return {i: f"127.0.0.1:{free_port()}" for i in range(1, n + 1)}


def leader_of(nodes) -> raft.Node:
    def find():
        leaders = [n for n in nodes if n.is_leader]
        return leaders[0] if len(leaders) == 1 else None
    return wait_for(find, what="one leader")


# ------------------------------------------------------------------ use from asyncio

@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_a_cluster_on_the_applications_event_loop(loop_kind):
    async def main():
        cluster = addresses(3)
        nodes = [raft.Node(i, a, KV(), engine="asyncio", store=raft.MemoryStore(),
                           cluster=cluster, config=CONFIG) for i, a in cluster.items()]
        for node in nodes:
            await node.astart()
        try:
            leader_info = await nodes[0].wait_leader(WAIT)
            leader = next(n for n in nodes if n.id == leader_info.id)
            assert await leader.apply(b"set x 1") == "1"
            results = await asyncio.gather(*(leader.apply(f"incr c".encode())
                                             for _ in range(500)))
            assert sorted(results) == list(range(1, 501))
            # The event loop keeps running meanwhile: a 1 ms sleep is not late.
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            assert time.perf_counter() - started < 0.5
            await leader.barrier()
            target = leader.last_applied
            for node in nodes:
                while node.last_applied < target:
                    await asyncio.sleep(0.005)
                assert node.fsm.state() == leader.fsm.state()
        finally:
            for node in nodes:
                await node.aclose()

    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        uvloop.run(main())
    else:
        asyncio.run(main())


def test_blocking_calls_on_the_event_loop_point_to_the_async_ones():
    async def main():
        addr = f"127.0.0.1:{free_port()}"
        node = raft.Node(1, addr, KV(), engine="asyncio", store=raft.MemoryStore(),
                         cluster={1: addr}, config=CONFIG)
        with pytest.raises(raft.InvalidConfigError, match="await node.astart"):
            node.start()
        async with node:
            await node.wait_leader(WAIT)
            with pytest.raises(raft.InvalidConfigError, match="await node.aclose"):
                node.close()
            assert await node.apply(b"set k v") == "v"
            assert node.stats()["state"] == "LEADER"  # runs inline on the loop's thread
        assert node.state == raft.State.CLOSED

    asyncio.run(main())


def test_a_synchronous_program_uses_the_librarys_loop_thread(tmp_path):
    cluster = addresses(3)
    nodes = [raft.Node(i, a, KV(), tmp_path / f"n{i}", engine="asyncio",
                       store=raft.MemoryStore(), cluster=cluster, config=CONFIG).start()
             for i, a in cluster.items()]
    try:
        leader = leader_of(nodes)
        futures = [leader.apply(f"set k{i} {i}".encode()) for i in range(200)]
        assert [f.result(WAIT) for f in futures] == [str(i) for i in range(200)]
        assert leader.engine == "asyncio"
    finally:
        for node in nodes:
            node.close()


def test_bad_engine_arguments_are_refused(tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    with pytest.raises(raft.InvalidConfigError, match="store="):
        raft.Node(1, addr, KV(), engine="asyncio")
    with pytest.raises(raft.InvalidConfigError, match="engine"):
        raft.Node(1, addr, KV(), tmp_path, engine="tokio")
    with pytest.raises(raft.InvalidConfigError, match="TLS needs engine='asyncio'"):
        raft.Node(1, addr, KV(), tmp_path, tls=raft.TLS("c", "k", "ca"))
    with pytest.raises(raft.InvalidConfigError, match="data_dir"):
        raft.Node(1, addr, KV())
    with pytest.raises(raft.InvalidConfigError, match="store="):
        raft.Node(1, addr, KV(), tmp_path, store=raft.MemoryStore())


# ------------------------------------------------------------------ mixed clusters

@pytest.mark.parametrize("engines", [("uv", "uv", "asyncio"), ("uv", "asyncio", "asyncio")])
def test_mixed_cluster_commits_survives_leader_loss_and_restarts(tmp_path, engines):
    cluster = addresses(3)
    stores = {i: raft.MemoryStore() for i in cluster}

    def make(i: int) -> raft.Node:
        engine = engines[i - 1]
        return raft.Node(i, cluster[i], KV(), tmp_path / f"n{i}", engine=engine,
                         store=stores[i] if engine == "asyncio" else None,
                         cluster=cluster, config=CONFIG)

    nodes = {i: make(i).start() for i in cluster}
    try:
        leader = leader_of(nodes.values())
        for i in range(100):
            leader.apply(f"set k{i} {i}".encode()).result(WAIT)
        old = leader.id
        nodes.pop(old).close()
        leader = leader_of(nodes.values())
        for i in range(100, 200):
            leader.apply(f"set k{i} {i}".encode()).result(WAIT)
        nodes[old] = make(old).start()  # back from its data dir or its store
        leader.barrier().result(WAIT)
        for node in nodes.values():
            node.wait_applied(leader.last_applied, WAIT)
        states = {i: n.fsm.state() for i, n in nodes.items()}
        assert len({str(s) for s in states.values()}) == 1, states
        assert len(states[old][0]) == 200
    finally:
        for node in nodes.values():
            node.close()


# ------------------------------------------------------------------ durability

def test_power_loss_keeps_every_acknowledged_write():
    cluster = addresses(3)
    stores = {i: raft.MemoryStore(sync_delay=0.002) for i in cluster}

    def make(i: int) -> raft.Node:
        return raft.Node(i, cluster[i], KV(), engine="asyncio", store=stores[i],
                         cluster=cluster, config=CONFIG)

    nodes = {i: make(i).start() for i in cluster}
    acked = []
    try:
        leader = leader_of(nodes.values())
        futures = [(i, leader.apply(f"set k{i} {i}".encode())) for i in range(300)]
        for i, fut in futures[:150]:
            fut.result(WAIT)
            acked.append(i)
        # Power goes out everywhere, with writes in flight.
        for node in nodes.values():
            node.close()
        lost = sum(store.power_loss() for store in stores.values())
        for i, fut in futures[150:]:
            if fut.exception(WAIT) is None:
                acked.append(i)
        nodes = {i: make(i).start() for i in cluster}
        leader = leader_of(nodes.values())
        leader.barrier().result(WAIT)
        data = leader.fsm.state()[0]
        missing = [i for i in acked if data.get(f"k{i}") != str(i)]
        assert not missing, f"acknowledged writes lost: {missing[:10]} (lost in flight: {lost})"
    finally:
        for node in nodes.values():
            node.close()


def test_a_failing_store_closes_the_node_instead_of_going_on(caplog):
    addr = f"127.0.0.1:{free_port()}"
    store = raft.MemoryStore()
    node = raft.Node(1, addr, KV(), engine="asyncio", store=store, cluster={1: addr},
                     config=CONFIG).start()
    try:
        node.wait_leader(WAIT)
        node.apply(b"set a 1").result(WAIT)
        store.fail_next("append", OSError(28, "No space left on device"))
        fut = node.apply(b"set b 2")
        assert isinstance(fut.exception(WAIT), raft.RaftError)
        wait_for(lambda: node._broken is not None, what="the node to notice")
        assert any("the store failed" in r.getMessage() for r in caplog.records)
        assert "b" not in node.fsm.data
    finally:
        node.close()


# ------------------------------------------------------------------ hostile input

def hostile_payloads(node_id: int = 99) -> list[bytes]:
    good_handshake = struct.pack("<QQQ", 1, node_id, 16) + b"127.0.0.1:1\0\0\0\0\0"
    return [
        b"",                                              # connect and close
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",              # not the protocol
        struct.pack("<QQQ", 2, node_id, 16) + b"x" * 16,   # wrong protocol version
        struct.pack("<QQQ", 1, node_id, 10**9),            # absurd address length
        good_handshake + bytes(16),                        # zero header length
        good_handshake + struct.pack("<BBBBIQ", 1, 0, 0, 0, 0, 8) + bytes(8),  # short header
        good_handshake + struct.pack("<BBBBIQ", 99, 0, 0, 0, 0, 24) + bytes(24),  # bad type
        good_handshake + struct.pack("<BBBBIQ", 3, 0, 2, 0, 0, 1 << 40),  # huge header
        good_handshake + bytes(range(256)) * 4,            # garbage frames
    ]


def test_garbage_on_the_raft_port_is_refused_and_the_node_goes_on(caplog):
    caplog.set_level(logging.WARNING, logger="canonical_raft.transport")
    addr = f"127.0.0.1:{free_port()}"
    node = raft.Node(1, addr, KV(), engine="asyncio", store=raft.MemoryStore(),
                     cluster={1: addr}, config=CONFIG).start()
    try:
        node.wait_leader(WAIT)
        host, port = addr.split(":")
        for payload in hostile_payloads():
            with socket.create_connection((host, int(port)), timeout=5) as s:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                s.settimeout(5)
                try:
                    while s.recv(4096):
                        pass
                except OSError:
                    pass
        assert node.apply(b"set still alive").result(WAIT) == "alive"
        refused = [r for r in caplog.records if "refused a connection" in r.getMessage()]
        assert len(refused) >= 5, [r.getMessage() for r in refused]
    finally:
        node.close()


def test_a_data_dir_whose_store_was_lost_is_refused(tmp_path):
    # The node ran in a cluster on this data dir; a fresh MemoryStore means its
    # term and vote are gone: starting could make it vote twice.
    addr = f"127.0.0.1:{free_port()}"
    d = tmp_path / "n1"
    node = raft.Node(1, addr, KV(), d, engine="asyncio", store=raft.MemoryStore(),
                     cluster={1: addr}, config=CONFIG).start()
    node.wait_leader(WAIT)
    node.apply(b"set a 1").result(WAIT)
    node.close()
    again = raft.Node(1, addr, KV(), d, engine="asyncio", store=raft.MemoryStore(),
                      cluster={1: addr}, config=CONFIG)
    with pytest.raises(raft.IdentityError, match="could vote twice"):
        again.start()
