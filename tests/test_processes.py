"""A 3-node cluster of separate ``canonical_raft serve`` processes: losing the
leader to SIGKILL loses no acknowledged write, and the killed node, restarted
from its data dir, catches up to the same state.

Every test stops every process it started (the fixture), whatever happens.
"""

from __future__ import annotations

import json
import signal
import threading

import pytest

from canonical_raft.client import ClusterClient, CommandError
from canonical_raft.local_cluster import LocalCluster
from conftest import ClientWriter as Writer

pytestmark = pytest.mark.timeout(120)
WAIT = 60.0  # generous: the machine is shared

# Small snapshot settings: a node that missed more than a few entries catches
# up by installing a snapshot, so that path runs between processes too.
SERVER_ARGS = ["--election-timeout", "1.0", "--snapshot-threshold", "64",
               "--snapshot-trailing", "16"]


@pytest.fixture
def local_cluster(tmp_path):
    clusters: list[LocalCluster] = []

    def make(size: int = 3) -> LocalCluster:
        cluster = LocalCluster(tmp_path / f"cluster{len(clusters)}", size,
                               server_args=SERVER_ARGS)
        clusters.append(cluster)
        cluster.start_all(timeout=WAIT)
        return cluster

    yield make
    for cluster in clusters:
        cluster.close()


def assert_has_acknowledged(data: dict, writer: Writer) -> None:
    missing = {k: v for k, v in writer.acked.items() if data.get(k) != v}
    assert not missing, f"{len(missing)} acknowledged writes missing, e.g. {list(missing)[:5]}"
    # Retried increments were deduplicated: none applied twice.
    assert data["counter"] == writer.increments


def test_leader_kill_loses_no_acknowledged_write_and_restart_catches_up(local_cluster):
    cluster = local_cluster()
    leader = cluster.wait_leader(WAIT)
    writer = Writer(cluster.client(timeout=WAIT))
    writer.start()
    try:
        writer.wait_for(100)
        at_kill = writer.increments
        cluster.kill(leader["id"])  # SIGKILL, with writes in flight
        new = cluster.wait_leader(WAIT, after_term=leader["term"])
        assert new["id"] != leader["id"]
        writer.wait_for(at_kill + 100)
    finally:
        writer.finish()

    survivors = cluster.running()
    assert len(survivors) == 2
    state = cluster.wait_converged(survivors, WAIT)
    for i in survivors:
        assert_has_acknowledged(cluster.dump(i)["data"], writer)
    assert cluster.dump(survivors[1])["data"] == state["data"]

    cluster.start(leader["id"], timeout=WAIT)
    final = cluster.wait_converged(cluster.ids, WAIT)
    assert final["data"] == state["data"]
    assert_has_acknowledged(cluster.dump(leader["id"])["data"], writer)
    status = cluster.status(leader["id"])
    assert status["last_applied"] >= state["last_applied"]
    # Once from its own data dir at start, then at least once from the leader:
    # it was far behind the survivors' compacted logs, so it installed a snapshot.
    assert status["snapshots_restored"] >= 2
    assert all(cluster.status(i)["snapshots_taken"] >= 1 for i in survivors)

    # The restarted node is a full member again: the cluster survives losing another.
    client = cluster.client(timeout=WAIT)
    cluster.kill(cluster.wait_leader(WAIT)["id"])
    client.set("after-second-kill", True)
    assert client.get("after-second-kill") is True
    client.close()


def test_follower_redirects_and_retries_are_deduplicated(local_cluster):
    cluster = local_cluster()
    leader = cluster.wait_leader(WAIT)
    follower = next(i for i in cluster.ids if i != leader["id"])

    reply = cluster._monitor.request(follower, {"op": "set", "key": "k", "value": 1,
                                                "rid": "r1"})
    assert reply["error"] == "not_leader"
    assert reply["leader_id"] == leader["id"]
    assert reply["leader_client"] == cluster.client_ports[leader["id"]]
    assert reply["rid"] == "r1"

    # The same (client, seq) sent twice, as a client does after losing a reply.
    incr = {"op": "incr", "key": "n", "client": "c1", "seq": 1}
    first = cluster._monitor.request(leader["id"], incr, WAIT)
    again = cluster._monitor.request(leader["id"], incr, WAIT)
    # Each reply carries the index of its own entry: the retry's entry is a
    # later one, which the KVStore recognised and did not apply again.
    assert first.pop("index") < again.pop("index")
    assert first == again == {"ok": True, "value": 1}

    # A client told of the follower only finds the leader from the redirect.
    with ClusterClient({follower: cluster.client_ports[follower]}, timeout=WAIT) as client:
        client.set("via-redirect", "yes")
        assert client.get("via-redirect") == "yes"
    with cluster.client(timeout=WAIT) as client:
        assert client.incr("n") == 2
        assert client.cas("n", 2, 10) is True
        assert client.cas("n", 2, 11) is False
        assert client.get("n") == 10
        assert client.get("n", linearizable=False, node=leader["id"]) == 10
        assert client.delete("n") is True
        assert client.get("n", "absent") == "absent"
        client.set("text", "abc")
        with pytest.raises(CommandError):
            client.incr("text")
    bad = cluster._monitor.request(leader["id"], {"op": "frobnicate"})
    assert bad["error"] == "bad_request"


def test_sigterm_closes_cleanly_and_state_survives_a_full_restart(local_cluster):
    cluster = local_cluster()
    raw = cluster.client()
    assert raw.status(1)["id"] == 1
    with cluster.client(timeout=WAIT) as client:
        for i in range(150):  # past a few snapshots
            client.set(f"k{i}", i)
        client.incr("n", 7)
    before = cluster.wait_converged(cluster.ids, WAIT)

    codes = cluster.close()
    assert codes == {1: 0, 2: 0, 3: 0}, "SIGTERM must close the node and exit 0"

    cluster.start_all(timeout=WAIT)
    # A connection kept from before the restart is noticed as closed, not reused.
    assert raw.status(1)["id"] == 1
    raw.close()
    cluster.wait_leader(WAIT)
    with cluster.client(timeout=WAIT) as client:
        assert client.get("n") == 7  # a barrier on the new leader: everything replayed
    after = cluster.wait_converged(cluster.ids, WAIT)
    for key, value in before["data"].items():
        assert after["data"][key] == value

    proc = cluster.procs[1]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(WAIT) == 0


def _journal_tuples(journal: dict) -> list[tuple]:
    """A node's journal as the checker's (index, term, digest) records."""
    out: list[tuple] = []
    for rec in journal["entries"]:
        if "restore" in rec:
            out.append((rec["restore"], None, None))
        elif "noop" in rec:
            first, last = rec["noop"]
            out += [(i, None, "noop") for i in range(first, last + 1)]
        else:
            out.append((rec["index"], None, rec["digest"]))
    return out


def test_write_indices_read_index_and_journals_agree(local_cluster):
    from canonical_raft.checker.raft_checks import replica_divergence
    from canonical_raft.kv import set_cmd

    cluster = local_cluster(3)
    clients = [cluster.client(timeout=WAIT) for _ in range(4)]
    written: dict[int, list[bytes]] = {}      # index -> commands acknowledged there
    lock = threading.Lock()
    errors: list[BaseException] = []

    def write(c: ClusterClient, n: int) -> None:
        try:
            for i in range(n):
                c.set(f"{c.client_id}-{i}", i)
                cmd = set_cmd(f"{c.client_id}-{i}", i, client=c.client_id, seq=i + 1)
                with lock:
                    written.setdefault(c.last_index, []).append(cmd)
                if i % 10 == 0:
                    value, index = c.read_index(f"{c.client_id}-{i}")
                    assert value == i and index >= c.last_index
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(c, 150)) for c in clients[:3]]
    for t in threads:
        t.start()
    follower = next(i for i in cluster.ids if cluster.status(i)["state"] != "LEADER")
    cluster.kill(follower)
    for t in threads:
        t.join(WAIT)
    assert not errors, errors
    cluster.start(follower, timeout=WAIT)
    clients[3].set("last", 1)
    cluster.wait_converged(cluster.ids, WAIT)

    journals = {i: clients[3].journal(i, commands=True) for i in cluster.ids}
    assert not replica_divergence({i: _journal_tuples(j) for i, j in journals.items()})
    # Every acknowledged write is in the leader's journal at the index it reported.
    leader = cluster.wait_leader(WAIT)["id"]
    at = {rec["index"]: rec for rec in journals[leader]["entries"] if "index" in rec}
    for index, cmds in written.items():
        assert index in at, index
        have = [json.dumps(c["cmd"], separators=(",", ":")).encode()
                for c in at[index]["commands"]]
        for cmd in cmds:
            assert cmd in have, (index, cmd, have)
    # The restarted node's journal starts at its snapshot or at index 1.
    first = journals[follower]["entries"][0]
    assert "restore" in first or (first.get("noop") or [first.get("index")])[0] == 1, first

    # SIGTERM with clients connected: exit 0 and no traceback in any log.
    for c in clients:
        c.status(cluster.ids[0])
    codes = cluster.close()
    assert all(code == 0 for code in codes.values()), codes
    for i in cluster.ids:
        text = cluster.log_path(i).read_text()
        assert "Traceback" not in text and "CancelledError" not in text, text[-3000:]
    for c in clients:
        c.close()
