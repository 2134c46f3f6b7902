"""``python -m canonical_raft demo`` runs to the end, says what it showed, and
leaves no process or temp dir behind, also when interrupted."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(150)


def demo_env(tmp_path: Path) -> dict[str, str]:
    # The demo's temp dir goes under tmp_path, where the test can look for leftovers.
    return {**os.environ, "TMPDIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}


def server_pids(output: str) -> list[int]:
    return [int(p) for p in re.findall(r"^  node \d+: raft .* pid (\d+)$", output, re.M)]


def assert_no_servers_left(pids: list[int]) -> None:
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # gone
        assert b"canonical_raft" not in cmdline, f"server process {pid} was left running"


def test_demo_runs_and_cleans_up(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "canonical_raft", "demo"], cwd=tmp_path,
                          env=demo_env(tmp_path), capture_output=True, text=True, timeout=120)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert len(server_pids(out)) == 3
    for expected in (r"Cluster up in [\d.]+ s: node \d leads",
                     r"Killing the leader, node (\d) \(SIGKILL",
                     r"node \d elected leader \(term \d+\) [\d.]+ s after the kill",
                     r"node \d: all \d+ acknowledged keys present, counter = \d+",
                     r"node \d caught up in [\d.]+ s: identical state on all 3 nodes",
                     r"no acknowledged write lost, none applied twice"):
        assert re.search(expected, out), f"missing {expected!r} in:\n{out}"
    assert len(out.splitlines()) <= 30
    assert_no_servers_left(server_pids(out))
    assert not list(tmp_path.glob("canonical-raft-demo-*")), "temp dir left behind"


def test_demo_keep_dir_keeps_the_logs(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "canonical_raft", "demo", "--keep-dir"],
                          cwd=tmp_path, env=demo_env(tmp_path), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    kept = list(tmp_path.glob("canonical-raft-demo-*"))
    assert len(kept) == 1 and str(kept[0]) in proc.stdout
    assert sorted(p.name for p in kept[0].glob("node*.log")) == [
        "node1.log", "node2.log", "node3.log"]


def test_ctrl_c_stops_every_process_and_removes_the_temp_dir(tmp_path):
    # A new session, so the SIGINT goes to the demo's whole process group, as a
    # terminal's Ctrl-C does.
    proc = subprocess.Popen([sys.executable, "-m", "canonical_raft", "demo"], cwd=tmp_path,
                            env=demo_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Writing"):
                break
        time.sleep(0.3)  # mid-stream
        os.killpg(proc.pid, signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = "".join(lines) + rest
    assert proc.returncode == 130, out + err
    assert "interrupted" in out
    assert_no_servers_left(server_pids(out))
    assert not list(tmp_path.glob("canonical-raft-demo-*")), "temp dir left behind"


def test_bad_node_count_is_refused(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "canonical_raft", "demo", "--nodes", "2"],
                          cwd=tmp_path, env=demo_env(tmp_path), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "--nodes" in proc.stderr
