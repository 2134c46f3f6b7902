"""The operator procedure of docs/operations.md: a member whose data dir is
damaged is removed, restarted empty without `cluster`, and re-added."""

from __future__ import annotations

import socket

import pytest

import canonical_raft as raft

WAIT = 30
FAST = raft.Config(election_timeout=0.5, heartbeat_timeout=0.05, snapshot_threshold=64,
                   snapshot_trailing=16)


class Counter(raft.FSM):
    def __init__(self) -> None:
        self.total = 0

    def apply(self, command: bytes):
        self.total += int(command)
        return self.total

    def snapshot(self) -> bytes:
        return str(self.total).encode()

    def restore(self, snapshot: bytes) -> None:
        self.total = int(snapshot)


def free_addr() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_replace_a_member_with_a_damaged_data_dir(tmp_path):
    cluster = {i: free_addr() for i in (1, 2, 3)}
    nodes = {i: raft.Node(i, cluster[i], Counter(), tmp_path / f"n{i}", cluster=cluster,
                          config=FAST).start() for i in cluster}
    try:
        leader_id = nodes[1].wait_leader(WAIT).id
        if leader_id == 3:  # keep the member we damage a follower
            nodes[3].transfer(1).result(WAIT)
            leader_id = nodes[1].wait_leader(WAIT).id
        leader = nodes[leader_id]
        futures = [leader.apply(b"1") for _ in range(300)]
        acked = sum(1 for f in futures if f.result(WAIT))

        nodes[3].close()
        for name in ("metadata1", "metadata2"):  # the damage: term/vote files lost
            path = tmp_path / "n3" / name
            if path.exists():
                path.write_bytes(b"")
        with pytest.raises(raft.CorruptError, match="metadata"):
            raft.Node(3, cluster[3], Counter(), tmp_path / "n3", cluster=cluster,
                      config=FAST).start()

        # The procedure: remove it, restart it empty and without `cluster`, re-add it.
        leader = nodes[nodes[1].wait_leader(WAIT).id]
        leader.remove(3).result(WAIT)
        assert 3 not in {s.id for s in leader.configuration}
        nodes[3] = raft.Node(3, cluster[3], Counter(), tmp_path / "n3-fresh", config=FAST).start()
        leader.add_voter(3, cluster[3]).result(120)
        roles = {s.id: s.role for s in leader.configuration}
        assert roles[3] == raft.Role.VOTER

        leader.apply(b"1").result(WAIT)
        leader.barrier().result(WAIT)
        for node in nodes.values():
            node.wait_applied(leader.last_applied, WAIT)
            assert node.fsm.total == acked + 1
    finally:
        for node in nodes.values():
            node.close()
