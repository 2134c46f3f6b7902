"""The benchmark suite runs end to end (smallest mode) and verifies its counts.

Timings are never asserted: the suite shares 2 cores with other runs. What is
checked is that every system ran, that every throughput run verified each
node's FSM count against the acknowledged commands, and that the table printed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("pysyncobj", reason="the benchmark compares with PySyncObj: "
                                        "pip install pysyncobj to run this test")


def test_bench_smoke(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "canonical_raft.bench", "--smoke", "--json", str(out),
         "--dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, f"bench failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    # the table, the limits and the targets were printed
    assert "applies/s" in proc.stdout and "p50 ms" in proc.stdout
    assert "physical limits" in proc.stdout and "targets" in proc.stdout
    assert "[" in proc.stderr  # progress lines
    results = json.loads(out.read_text())
    assert results["errors"] == []
    systems = {(r["system"], r["variant"]) for r in results["runs"]}
    assert systems >= {("canonical-raft", "uv engine"), ("ceiling", "1/entry"),
                       ("ceiling", "64/entry"), ("pysyncobj", "batching"),
                       ("pysyncobj", "no batching")}
    assert {r["size"] for r in results["runs"] if r["system"] == "canonical-raft"} == {64, 1024}
    for run in results["runs"]:
        assert run["acked"] > 0, run
        assert run["failed"] == 0, run
        counts = run["verified"]["fsm_counts"]
        assert len(counts) == run["nodes"], run
        assert all(c == run["verified"]["acked"] for c in counts.values()), run
    assert all(lat["acked"] > 0 for lat in results["latency"])
    for key in ("fsync_append", "loopback_rtt"):
        assert results["limits"][key]["acked"] > 0
    assert results["snapshots"] and results["snapshots"][0]["snapshots_restored"] >= 1
    assert all(r["nodes"] for r in results["rss"])
    assert not list((tmp_path / "data").iterdir()), "the benchmark left data behind"


def test_bench_asyncio_engine_rows(tmp_path):
    """The asyncio engine's rows (--quick and --full only, so not in the smoke
    run above): 3 asyncio-engine worker processes per event loop, the load
    and the lag probe on the leader's loop, counts verified, the section and
    the issue 9 targets printed."""
    import dataclasses
    import io

    from canonical_raft import bench
    from canonical_raft.bench import _report

    plan = dataclasses.replace(bench.PLANS["smoke"], seconds=1.0, latency_seconds=0.5)
    loops = ["asyncio"] + (["uvloop"] if _have("uvloop") else [])
    results = {"mode": "test", "runs": [], "latency": [], "rss": [], "limits": {},
               "snapshots": [], "errors": [], "machine": {"summary": "-", "filesystem": "-",
                                                          "loadavg_start": "-",
                                                          "loadavg_end": "-"}}
    for loop in loops:
        bench._asyncio_engine(plan, loop, str(tmp_path), results, lambda msg: None)
    rows = _report.asyncio_engine(results)
    assert [r["loop"] for r in rows] == loops
    for run in results["runs"]:
        assert run["acked"] > 0 and run["failed"] == 0, run
        assert set(run["verified"]["fsm_counts"].values()) == {run["verified"]["acked"]}
        assert run["lag_samples"] > 0 and run["lag_p99_ms"] is not None
        assert run["lag_sleep_ms"] == 1.0
    out = io.StringIO()
    _report.print_table(results, file=out)
    assert "asyncio engine (issue 9" in out.getvalue()
    assert "loop lag p99 (1 ms sleep) < 5 ms" in out.getvalue()


def _have(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True
