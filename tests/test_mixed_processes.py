"""Mixed clusters as separate ``canonical_raft serve`` processes (issue 9's
acceptance): uv-engine and asyncio-engine nodes speak one wire protocol, so
2 uv + 1 asyncio and 1 uv + 2 asyncio form one cluster. Writes go through the
client; the leader is killed with SIGKILL while they are in flight; writes go
on under a new leader; the killed node is restarted when its state survives
its process; in the end every node holds the same state, and every
acknowledged write is in it.

Which node is killed is chosen, not left to the election: leadership is handed
to a node of the engine under test first (the server's "transfer" op), so the
kill of a uv leader and of an asyncio leader both run on every composition.

Restarts: a uv node comes back from its data dir. An asyncio node on a
MemoryStore has nothing to come back from (its log, term and vote died with
it); restarted empty it could vote twice in one term, so the server refuses
to start it again, and that refusal is tested here. An asyncio node on
MDBStore (``canonical_raft.store.mdb``, LMDB) restarts like a uv node; those
tests skip, saying so, while that module is not importable.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from canonical_raft.client import ClusterClient
from canonical_raft.local_cluster import LocalCluster, free_port
from conftest import ClientWriter as Writer

pytestmark = pytest.mark.timeout(120)
WAIT = 60.0  # generous: the machine is shared
# Small snapshot settings: a restarted node that missed more than a few entries
# catches up by installing a snapshot, from a leader of either engine.
SERVER_ARGS = ["--election-timeout", "1.0", "--snapshot-threshold", "64",
               "--snapshot-trailing", "16"]
BEFORE_KILL, AFTER_KILL = 100, 100  # acknowledged writer rounds (a set and an incr each)

COMPOSITIONS = {"2uv+1asyncio": ("uv", "uv", "asyncio"),
                "1uv+2asyncio": ("uv", "asyncio", "asyncio")}


def _mdb_missing() -> str | None:
    try:
        import canonical_raft.store.mdb  # noqa: F401
    except ImportError as exc:
        return (f"an asyncio node restarts only on a durable store, and MDBStore "
                f"(canonical_raft.store.mdb) is not importable here: {exc}")
    return None


MDB_MISSING = _mdb_missing()


@pytest.fixture
def mixed(tmp_path):
    clusters: list[LocalCluster] = []

    def make(engines: tuple[str, ...], store: str = "memory") -> LocalCluster:
        cluster = LocalCluster(tmp_path / f"cluster{len(clusters)}", len(engines),
                               server_args=SERVER_ARGS, store=store,
                               engines={i: e for i, e in enumerate(engines, 1)})
        clusters.append(cluster)
        cluster.start_all(timeout=WAIT)
        return cluster

    yield make
    for cluster in clusters:
        codes = cluster.close()
        assert all(code == 0 for code in codes.values()), f"exit statuses on SIGTERM: {codes}"


def lead_with(cluster: LocalCluster, engine: str) -> dict:
    """Hand leadership to a node of ``engine``; its status."""
    deadline = time.monotonic() + WAIT
    while True:
        leader = cluster.wait_leader(WAIT)
        if cluster.engines[leader["id"]] == engine:
            return leader
        target = next(i for i in cluster.ids if cluster.engines[i] == engine)
        reply = cluster.request(leader["id"], {"op": "transfer", "to": target}, timeout=WAIT)
        assert reply.get("ok") or reply.get("error") in ("not_leader", "timeout"), reply
        if time.monotonic() > deadline:
            raise TimeoutError(f"leadership never reached node {target} ({engine})")
        time.sleep(0.1)


def assert_same_everywhere(cluster: LocalCluster, nodes: list[int], writer: Writer) -> dict:
    state = cluster.wait_converged(nodes, WAIT)
    for i in nodes:
        data = cluster.dump(i)["data"]
        assert data == state["data"], f"node {i} differs"
        missing = [k for k, v in writer.acked.items() if data.get(k) != v]
        assert not missing, f"node {i}: {len(missing)} acknowledged writes missing, " \
                            f"e.g. {missing[:5]}"
        assert data["counter"] == writer.increments  # retried increments applied once
    return state


def kill_leader_while_writing(cluster: LocalCluster, engine: str) -> tuple[dict, Writer]:
    """Lead with ``engine``, write, SIGKILL the leader mid-write, write on;
    the old leader's status and the (finished) writer."""
    leader = lead_with(cluster, engine)
    writer = Writer(cluster.client(timeout=WAIT))
    writer.start()
    try:
        writer.wait_for(BEFORE_KILL)
        at_kill = writer.increments
        cluster.kill(leader["id"])
        new = cluster.wait_leader(WAIT, after_term=leader["term"])
        assert new["id"] != leader["id"]
        writer.wait_for(at_kill + AFTER_KILL)
    finally:
        writer.finish()
    return leader, writer


@pytest.mark.parametrize("composition", COMPOSITIONS)
def test_uv_leader_killed_writes_go_on_and_it_restarts(mixed, composition):
    cluster = mixed(COMPOSITIONS[composition])
    leader, writer = kill_leader_while_writing(cluster, "uv")
    survivors = cluster.running()
    assert_same_everywhere(cluster, survivors, writer)
    cluster.start(leader["id"], timeout=WAIT)   # from its data dir
    final = assert_same_everywhere(cluster, cluster.ids, writer)
    assert final["last_applied"] >= BEFORE_KILL + AFTER_KILL
    status = {i: cluster.status(i) for i in cluster.ids}
    assert {s["engine"] for s in status.values()} == {"uv", "asyncio"}
    # It missed more than the leader keeps: it caught up through a snapshot
    # (restored from its own data dir at start, then the leader's).
    assert status[leader["id"]]["snapshots_restored"] >= 2, status[leader["id"]]


@pytest.mark.parametrize("composition", COMPOSITIONS)
def test_asyncio_leader_killed_writes_go_on_and_memory_store_is_not_restarted(
        mixed, composition):
    cluster = mixed(COMPOSITIONS[composition], store="memory")
    leader, writer = kill_leader_while_writing(cluster, "asyncio")
    survivors = cluster.running()
    assert_same_everywhere(cluster, survivors, writer)
    # Its MemoryStore died with it: the server refuses to start it empty.
    with pytest.raises(RuntimeError, match="exited with status 1"):
        cluster.start(leader["id"], timeout=WAIT)
    assert "could vote twice" in cluster.log_path(leader["id"]).read_text()
    cluster.procs.pop(leader["id"]).stdout.close()   # its exit status 1 is expected
    # The two survivors still commit, and agree.
    with cluster.client(timeout=WAIT) as client:
        client.set("after-refusal", 1)
    assert_same_everywhere(cluster, survivors, writer)


@pytest.mark.skipif(MDB_MISSING is not None, reason=MDB_MISSING or "")
@pytest.mark.parametrize("composition", COMPOSITIONS)
def test_asyncio_leader_killed_writes_go_on_and_it_restarts_from_mdb(mixed, composition):
    cluster = mixed(COMPOSITIONS[composition], store="mdb")
    leader, writer = kill_leader_while_writing(cluster, "asyncio")
    assert_same_everywhere(cluster, cluster.running(), writer)
    cluster.start(leader["id"], timeout=WAIT)   # from <data-dir>/mdb
    final = assert_same_everywhere(cluster, cluster.ids, writer)
    assert final["last_applied"] >= BEFORE_KILL + AFTER_KILL


# ------------------------------------------------------------------ serve's engine options

def _serve(tmp_path, *args: str) -> subprocess.CompletedProcess:
    port = free_port()
    return subprocess.run(
        [sys.executable, "-m", "canonical_raft", "serve", "--id", "1", "--address",
         f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "n1"), "--cluster",
         f"1=127.0.0.1:{port}", "--client-port", str(free_port()), *args],
        capture_output=True, text=True, timeout=WAIT, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("args, message", [
    (["--store", "memory"], "--store needs --engine asyncio"),
    (["--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a"], "TLS needs --engine asyncio"),
    (["--engine", "asyncio"], "--engine asyncio needs --store"),
    (["--engine", "asyncio", "--store", "memory", "--tls-cert", "c"], "go together"),
])
def test_serve_refuses_engine_options_that_do_not_fit(tmp_path, args, message):
    proc = _serve(tmp_path, *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_serve_store_mdb_without_the_module_is_a_clear_error(tmp_path):
    if MDB_MISSING is None:
        pytest.skip("canonical_raft.store.mdb is importable here")
    proc = _serve(tmp_path, "--engine", "asyncio", "--store", "mdb")
    assert proc.returncode == 1, proc.stderr
    assert "--store mdb needs canonical_raft.store.mdb" in proc.stderr, proc.stderr


def test_serve_a_tls_cluster_of_processes_commits(tmp_path):
    """--tls-cert/--tls-key/--tls-ca: three asyncio-engine processes with
    mutual TLS commit through the client and agree."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    files = {}
    for i in (1, 2, 3):
        cert = ca.issue_cert("127.0.0.1")
        paths = tuple(tmp_path / f"n{i}.{ext}" for ext in ("pem", "key", "ca.pem"))
        for k, blob in enumerate(cert.cert_chain_pems):
            blob.write_to_path(str(paths[0]), append=k > 0)
        cert.private_key_pem.write_to_path(str(paths[1]))
        ca.cert_pem.write_to_path(str(paths[2]))
        files[i] = paths
    cluster = LocalCluster(tmp_path / "tls", 3, server_args=SERVER_ARGS, engines="asyncio",
                           tls=files)
    try:
        cluster.start_all(timeout=WAIT)
        cluster.wait_leader(WAIT)
        with cluster.client(timeout=WAIT) as client:
            for n in range(50):
                client.set(f"k{n}", n)
        state = cluster.wait_converged(cluster.ids, WAIT)
        assert all(state["data"][f"k{n}"] == n for n in range(50))
        assert "--tls-ca" in cluster.command(1)
    finally:
        codes = cluster.close()
    assert all(code == 0 for code in codes.values()), codes
