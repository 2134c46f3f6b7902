"""Hundreds of hostile connections at once (garbage, forged messages, huge
declared lengths, stalled handshakes) against a live node: it keeps committing
and its memory stays bounded. The node runs in a child: a crash must not take
pytest down. It runs on the uv engine, on the asyncio engine, and on the
asyncio engine with mutual TLS (where the storm adds TLS attackers: another
CA's certificate, none, a cut-short handshake, and valid members sending
hostile raft bytes)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

STORM = os.path.join(os.path.dirname(__file__), "asan", "storm.py")


MODES = ["uv", "asyncio", "asyncio-tls"]


def run_storm(tmp_path, connections: int, timeout: float, mode: str = "uv") -> str:
    if mode == "asyncio-tls":
        pytest.importorskip("trustme", reason="the TLS storm makes its certificates with "
                                              "trustme: pip install trustme")
    proc = subprocess.run([sys.executable, STORM, str(tmp_path / "d"), str(connections), mode],
                          capture_output=True, text=True, timeout=timeout,
                          cwd=os.path.dirname(STORM))
    assert proc.returncode == 0, f"child exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    assert f"storm {connections} ok" in proc.stdout, proc.stdout
    assert f"engine={mode.split('-')[0]}" in proc.stdout, proc.stdout
    return proc.stdout


@pytest.mark.parametrize("mode", MODES)
def test_200_hostile_connections(tmp_path, mode):
    run_storm(tmp_path, 200, timeout=240, mode=mode)


@pytest.mark.nightly
@pytest.mark.timeout(0)
@pytest.mark.parametrize("mode", MODES)
def test_20000_hostile_connections(tmp_path, request, mode):
    if "nightly" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("20,000 connections: run with -m nightly")
    run_storm(tmp_path, 20000, timeout=3600, mode=mode)
