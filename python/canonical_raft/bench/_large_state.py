"""The large-state scenario: applies/s and leadership changes while a 3-node
cluster with a large FSM takes snapshots.

Three ``canonical_raft serve`` processes run the test rig's SlowFSM
(canonical_raft._slowfsm): the KVStore plus a ballast of ``state_bytes``, whose
snapshot() also sleeps ``snapshot_delay`` seconds (the cost of serialising a
large state: the FSM of issue 8, 47 MB, took 0.8-2.2 s). The leader's process
keeps ``inflight`` increments in flight for ``seconds`` (the same windowed load
as the other rows, through ``node.apply``), with a snapshot every ``threshold``
entries. Measured: applies/s, failed applies, leadership changes (a node
logging that it became leader, after the first leader), terms, snapshots taken,
and the loop-thread round trip (``node.stats()`` timed in each node process)
during snapshot() calls. Verified: every node's counter holds every
acknowledged increment (a failed, indeterminate one may be there too).
"""

from __future__ import annotations

import re
import shutil
import time

from ..local_cluster import LocalCluster
from ._proc import BenchError

MiB = 1024 * 1024
_LEADER_LINE = re.compile(r"state LEADER, term (\d+)")


def _leader_lines(cluster: LocalCluster) -> dict[int, int]:
    out = {}
    for i in cluster.ids:
        try:
            text = cluster.log_path(i).read_text(errors="replace")
        except OSError:
            text = ""
        out[i] = len(_LEADER_LINE.findall(text))
    return out


def run_large_state(root: str, state_bytes: int, *, seconds: float, name: str,
                    inflight: int = 1000, threshold: int = 1024,
                    snapshot_delay: float = 1.0, election_timeout: float = 1.0) -> dict:
    args = ["--election-timeout", str(election_timeout),
            "--snapshot-threshold", str(threshold), "--snapshot-trailing", str(threshold),
            "--fsm-ballast-mb", str(state_bytes / MiB),
            "--fsm-snapshot-delay", str(snapshot_delay), "--loop-probe", "0.01",
            "--apply-timeout", "60", "--log-level", "INFO"]
    try:
        with LocalCluster(f"{root}/{name}", 3, server_args=args) as cluster:
            return _run(cluster, name, seconds, inflight, state_bytes, snapshot_delay,
                        threshold, election_timeout)
    finally:
        shutil.rmtree(f"{root}/{name}", ignore_errors=True)


def _run(cluster: LocalCluster, name: str, seconds: float, inflight: int, state_bytes: int,
         snapshot_delay: float, threshold: int, election_timeout: float) -> dict:
    cluster.start_all(timeout=120)
    leader = cluster.wait_leader(60)
    # Wait until every node knows that leader: the run starts from a settled cluster.
    deadline = time.monotonic() + 60
    while {(s or {}).get("leader_id") for s in map(cluster.status, cluster.ids)} \
            != {leader["id"]}:
        if time.monotonic() > deadline:
            raise BenchError(f"{name}: the nodes do not agree on a leader")
        time.sleep(0.05)
    first = _leader_lines(cluster)
    before = {i: cluster.status(i) for i in cluster.ids}
    for i in cluster.ids:
        cluster.request(i, {"op": "probe", "reset": True})
    r = cluster.request(leader["id"], {"op": "load", "seconds": seconds,
                                       "inflight": inflight, "key": "load"},
                        timeout=seconds + 120)
    if not r.get("ok"):
        raise BenchError(f"{name}: the load did not run: {r}")
    probes = {i: cluster.request(i, {"op": "probe"}) for i in cluster.ids}
    after = {i: cluster.status(i) for i in cluster.ids}
    state = cluster.wait_converged(timeout=120)["data"]
    counted = state.get("load", 0)
    if not r["acked"] <= counted <= r["acked"] + r["failed"]:
        raise BenchError(f"{name}: the nodes counted {counted} increments, "
                         f"{r['acked']} were acknowledged and {r['failed']} failed")
    changes = sum(_leader_lines(cluster).values()) - sum(first.values())
    terms = max(s["term"] for s in after.values() if s) - leader["term"]
    during = {i: p.get("during_snapshots") for i, p in probes.items()}
    return {
        "state_bytes": state_bytes, "snapshot_delay": snapshot_delay,
        "threshold": threshold, "election_timeout": election_timeout,
        "inflight": inflight, "seconds": r["seconds"], "acked": r["acked"],
        "failed": r["failed"], "errors": r["errors"],
        "applies_per_s": r["acked"] / r["seconds"] if r["seconds"] else 0.0,
        "leader_changes": changes, "terms": terms,
        "entries": after[leader["id"]]["last_index"] - before[leader["id"]]["last_index"]
        if after[leader["id"]] and before[leader["id"]] else None,
        "snapshots_taken": {i: after[i]["snapshots_taken"] - before[i]["snapshots_taken"]
                            for i in cluster.ids if after[i] and before[i]},
        "loop_during_snapshots": during,
        "loop_p99_ms": max((d["p99_ms"] for d in during.values()
                            if d and d["p99_ms"] is not None), default=None),
        "loop_max_ms": max((d["max_ms"] for d in during.values()
                            if d and d["max_ms"] is not None), default=None),
        "verified": {"acked": r["acked"], "counted": counted},
    }
