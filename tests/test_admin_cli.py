"""The admin command line (canonical-raft status|add|remove|transfer) against
a live 3-process LocalCluster: text and --json output, membership changes,
transfer, and what it says when nodes are down."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from canonical_raft import admin
from canonical_raft.local_cluster import LocalCluster

from conftest import WAIT, free_port, wait_for


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with LocalCluster(tmp_path_factory.mktemp("admin"), size=3) as cluster:
        cluster.start_all()
        cluster.wait_leader()
        cluster.client().set("k", "v")
        yield cluster


def cluster_arg(cluster) -> str:
    return ",".join(f"{i}=127.0.0.1:{p}" for i, p in sorted(cluster.client_ports.items()))


def run(capsys, *argv):
    code = admin.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_status_text_via_the_installed_command(live):
    proc = subprocess.run([sys.executable, "-m", "canonical_raft", "status", "--cluster",
                           cluster_arg(live)], capture_output=True, text=True, timeout=WAIT)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    leader = live.wait_leader()
    assert lines[0].startswith(f"leader: {leader['id']}   term: {leader['term']}")
    assert "reachable: 3/3" in lines[0]
    assert lines[1].split() == ["ID", "ADDRESS", "STATE", "ROLE", "LAST_INDEX", "APPLIED", "LAG"]
    rows = {int(line.split()[0]): line.split() for line in lines[2:]}
    assert sorted(rows) == [1, 2, 3]
    assert rows[leader["id"]][2] == "LEADER"
    assert all(r[3] == "voter" for r in rows.values())
    assert sum(r[2] == "FOLLOWER" for r in rows.values()) == 2


def test_status_json(live, capsys):
    code, out, _ = run(capsys, "status", "--json", "--cluster", cluster_arg(live))
    status = json.loads(out)
    assert code == 0 and status["ok"] and status["reachable"] == 3
    leader = [n for n in status["nodes"] if n["state"] == "LEADER"]
    assert [n["id"] for n in leader] == [status["leader"]]
    for n in status["nodes"]:
        assert n["reachable"] and n["role"] == "voter" and n["lag"] >= 0
        assert n["last_applied"] <= n["last_index"] and n["term"] == status["term"]
        assert n["address"] == f"127.0.0.1:{live.client_ports[n['id']]}"


def test_transfer(live, capsys):
    before = live.wait_leader()
    target = next(i for i in live.ids if i != before["id"])
    code, out, err = run(capsys, "transfer", "--to", str(target), "--cluster",
                         cluster_arg(live))
    assert code == 0, err
    assert out.strip() == f"leader is now node {target}"
    wait_for(lambda: (live.status(target) or {}).get("state") == "LEADER", WAIT)
    code, out, _ = run(capsys, "transfer", "--json", "--cluster", cluster_arg(live))
    assert code == 0 and json.loads(out)["ok"]


def test_add_and_remove_a_spare(live, capsys):
    spare = f"127.0.0.1:{free_port()}"
    code, out, err = run(capsys, "add", "4", spare, "--role", "spare", "--cluster",
                         cluster_arg(live))
    assert code == 0, err
    assert out.strip() == f"added node 4 at {spare} as spare"
    code, out, _ = run(capsys, "status", "--json", "--cluster", cluster_arg(live))
    nodes = {n["id"]: n for n in json.loads(out)["nodes"]}
    assert nodes[4]["role"] == "spare" and not nodes[4]["reachable"]
    assert nodes[4]["error"] == "not in --cluster"
    code, out, err = run(capsys, "remove", "4", "--json", "--cluster", cluster_arg(live))
    assert code == 0, err
    assert 4 not in [m["id"] for m in json.loads(out)["members"]]


def test_errors_from_the_leader_are_reported(live, capsys):
    code, out, err = run(capsys, "remove", "9", "--cluster", cluster_arg(live))
    assert code == 1 and out == ""
    assert err.startswith("error: remove 9: leader ")


def test_unreachable_nodes(live, capsys):
    dead = f"127.0.0.1:{free_port()}"
    arg = cluster_arg(live) + f",9={dead}"
    code, out, _ = run(capsys, "status", "--cluster", arg)
    assert code == 1  # a member did not answer
    row = next(r for r in out.splitlines()[2:] if r.split()[0] == "9")
    assert row.split()[1:3] == [dead, "UNREACHABLE"]
    assert f"node 9 ({dead}): Connection refused" in out
    code, out, _ = run(capsys, "status", "--json", "--cluster", f"1={dead}")
    status = json.loads(out)
    assert code == 1 and status["leader"] is None and status["reachable"] == 0
    code, out, err = run(capsys, "transfer", "--cluster", f"1={dead}")
    assert code == 1 and "no node of --cluster answered: node 1: Connection refused" in err
    code, out, _ = run(capsys, "add", "5", "127.0.0.1:1", "--json", "--cluster", f"1={dead}")
    assert code == 1 and json.loads(out)["ok"] is False


def test_bad_cluster_argument(capsys):
    with pytest.raises(SystemExit) as exc:
        admin.main(["status", "--cluster", "1=nohostport"])
    assert exc.value.code == 2
    assert "expected host:port" in capsys.readouterr().err


def test_a_killed_node_shows_unreachable(live, capsys):
    # Last in this module: it takes a member down.
    leader = live.wait_leader()
    victim = next(i for i in live.ids if i != leader["id"])
    live.kill(victim)
    code, out, _ = run(capsys, "status", "--cluster", cluster_arg(live))
    assert code == 1
    line = next(row for row in out.splitlines()[2:] if row.split()[0] == str(victim))
    assert line.split()[2] == "UNREACHABLE"
    assert f"leader: {leader['id']}" in out.splitlines()[0]
