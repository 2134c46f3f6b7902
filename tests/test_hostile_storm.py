"""Hundreds of hostile connections at once (garbage, forged messages, huge
declared lengths, stalled handshakes) against a live node: it keeps committing
and its memory stays bounded. The node runs in a child: a crash must not take
pytest down."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

STORM = os.path.join(os.path.dirname(__file__), "asan", "storm.py")


def run_storm(tmp_path, connections: int, timeout: float) -> str:
    proc = subprocess.run([sys.executable, STORM, str(tmp_path / "d"), str(connections)],
                          capture_output=True, text=True, timeout=timeout,
                          cwd=os.path.dirname(STORM))
    assert proc.returncode == 0, f"child exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    assert f"storm {connections} ok" in proc.stdout, proc.stdout
    return proc.stdout


def test_200_hostile_connections(tmp_path):
    run_storm(tmp_path, 200, timeout=240)


@pytest.mark.nightly
@pytest.mark.timeout(0)
def test_20000_hostile_connections(tmp_path, request):
    if "nightly" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("20,000 connections: run with -m nightly")
    run_storm(tmp_path, 20000, timeout=3600)
