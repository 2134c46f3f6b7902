"""``canonical-raft inspect DATA_DIR`` on an MDBStore directory and on a uv-engine
data dir: term, vote, log range, snapshot, configuration."""

from __future__ import annotations

import json

import pytest

import canonical_raft as raft
from canonical_raft.cli import main
from conftest import FAST, KV, WAIT, free_port, wait_for


def run_node(tmp_path, engine, commands=100):
    addr = f"127.0.0.1:{free_port()}"
    d = tmp_path / "n1"
    store = None
    if engine == "asyncio":
        from canonical_raft.store import MDBStore
        store = MDBStore(d)
    node = raft.Node(7, addr, KV(), d, engine=engine, store=store, cluster={7: addr},
                     config=FAST).start()
    try:
        wait_for(lambda: node.is_leader, what="leader")
        for i in range(commands):
            node.apply(f"set k {i}".encode()).result(WAIT)
        stats = node.stats()
    finally:
        node.close()
    return d, addr, stats


def inspect_json(capsys, d) -> dict:
    assert main(["inspect", "--json", str(d)]) == 0
    return json.loads(capsys.readouterr().out)


def test_inspect_mdbstore(tmp_path, capsys):
    pytest.importorskip("lmdb")
    d, addr, stats = run_node(tmp_path, "asyncio")
    info = inspect_json(capsys, d)
    assert info["kind"] == "MDBStore" and info["node_id"] == 7
    assert info["term"] == stats["term"] and info["vote"] == stats["voted_for"]
    assert info["last_index"] == stats["last_index"]
    assert info["snapshot"]["index"] == stats["snapshot"]["index"] > 0
    assert info["first_index"] <= info["snapshot"]["index"] - FAST.snapshot_trailing + 1
    assert info["configuration"] == [[7, addr, "voter"]]
    assert main(["inspect", str(d)]) == 0
    text = capsys.readouterr().out
    assert f"configuration: at index 1: 7 {addr} voter" in text, text
    assert f"last index:    {stats['last_index']}" in text


def test_inspect_uv_engine_dir(tmp_path, capsys):
    d, addr, stats = run_node(tmp_path, "uv")
    info = inspect_json(capsys, d)
    assert info["kind"].startswith("uv engine") and info["node_id"] == 7
    assert info["term"] == stats["term"] and info["vote"] == stats["voted_for"]
    assert info["snapshot"]["index"] == stats["snapshot"]["index"] > 0
    assert info["configuration"] == [[7, addr, "voter"]]


def test_inspect_refuses_an_empty_dir(tmp_path, capsys):
    assert main(["inspect", str(tmp_path)]) == 1
    assert "holds no Raft state" in capsys.readouterr().err


def test_inspect_reports_a_damaged_entry(tmp_path, capsys):
    pytest.importorskip("lmdb")
    d, _, _ = run_node(tmp_path, "asyncio", commands=5)
    data = bytearray((d / "data.mdb").read_bytes())
    at = data.find(b"set k 3")
    while at >= 0:
        data[at + 6] ^= 1
        at = data.find(b"set k 3", at + 1)
    (d / "data.mdb").write_bytes(bytes(data))
    assert main(["inspect", str(d)]) == 1
    err = capsys.readouterr().err
    assert "data.mdb: log entry" in err and "is damaged" in err
