"""Hostile messages that libraft 0.22.1 mis-decodes and fix_libraft.sh's later
fixes make safe (request-vote-flags, configuration-bounds, message-length),
sent to a live node's raft port on the installed build; each followed by a
committed apply. tests/test_asan.py runs the same payloads under ASan, where
the over-reads themselves are visible; tests/libraft/regress.c shows each one
failing without its fix."""

from __future__ import annotations

import os
import subprocess
import sys

HOSTILE = os.path.join(os.path.dirname(__file__), "asan", "hostile.py")
NAMES = ["32-byte RequestVote v1", "32-byte RequestVote v0",
         "short InstallSnapshot configuration", "64 MiB header"]


def test_fixed_hostile_messages_leave_the_node_committing(tmp_path):
    proc = subprocess.run([sys.executable, HOSTILE, str(tmp_path / "d"), *NAMES],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    assert f"served {len(NAMES)}" in proc.stdout, proc.stdout
