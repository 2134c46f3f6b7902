"""Resource samples of the soak's node processes, every few seconds, into
``samples.csv`` (one row per sample, written as it is taken).

Per node ``i``: ``rss_kb_i`` (VmRSS from /proc/PID/status), ``fds_i``
(entries of /proc/PID/fd), ``dir_bytes_i`` (sum of the sizes of the files
under its data dir), ``age_s_i`` (seconds since its process started: a
restart resets RSS), ``state_i`` (up, paused, down), ``snapshots_i``
(snapshots taken by this process, from its status). Cluster-wide:
``ops_s`` and ``errors_s`` since the previous sample, ``leader``.
Cells of a node that is down are empty.
"""

from __future__ import annotations

import csv
import os
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from ..jepsen.cluster import ProxiedCluster
from .load import Load

__all__ = ["Sampler", "columns", "rss_kb", "open_fds", "dir_bytes", "read_samples"]

PER_NODE = ("rss_kb", "fds", "dir_bytes", "age_s", "state", "snapshots")


def columns(ids: list[int]) -> list[str]:
    return ["t", "ops_s", "errors_s", "leader",
            *(f"{name}_{i}" for i in ids for name in PER_NODE)]


def rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def dir_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:   # removed while we walked (segments and snapshots come and go)
                pass
    return total


def read_samples(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """samples.csv back as dicts of floats (None for empty cells; states as text)."""
    rows: list[dict[str, Any]] = []
    with open(path, newline="") as fh:
        for raw in csv.DictReader(fh):
            rows.append({k: (v if k.startswith("state") else
                             (float(v) if v not in ("", None) else None))
                         for k, v in raw.items()})
    return rows


class Sampler(threading.Thread):
    """Samples every ``interval`` seconds until ``stop()``; ``rows`` keeps them all."""

    def __init__(self, cluster: ProxiedCluster, load: Load, out: Path, t0: float,
                 interval: float = 5.0) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.cluster = cluster
        self.load = load
        self.t0 = t0
        self.interval = interval
        self.rows: list[dict[str, Any]] = []
        self.columns = columns(cluster.ids)
        self._fh: TextIO = open(out, "w", newline="")
        self._writer = csv.DictWriter(self._fh, self.columns)
        self._writer.writeheader()
        self._stop_event = threading.Event()
        self._born: dict[int, tuple[int, float]] = {}   # node -> (pid, monotonic start)
        self._snapshots: dict[int, tuple[int, int]] = {}   # node -> (pid, taken by it)
        self._done: dict[int, int] = {}   # node -> taken by its earlier processes
        self._last = (t0, 0, 0)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(self.interval + 30.0)
        self._fh.close()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.sample()

    def snapshots_taken(self) -> int:
        """Snapshots taken over the run, by every node process (a restarted
        node counts again from 0)."""
        return sum(self._done.values()) + sum(taken for _, taken in self._snapshots.values())

    def sample(self) -> dict[str, Any]:
        now = time.monotonic()
        ops, errors = self.load.totals()
        t_prev, ops_prev, errors_prev = self._last
        self._last = (now, ops, errors)
        span = max(now - t_prev, 1e-6)
        row: dict[str, Any] = {"t": round(now - self.t0, 2),
                               "ops_s": round((ops - ops_prev) / span, 1),
                               "errors_s": round((errors - errors_prev) / span, 2),
                               "leader": ""}
        for i in self.cluster.ids:
            row[f"dir_bytes_{i}"] = dir_bytes(self.cluster.data_dir(i))
            proc = self.cluster.procs.get(i)
            if proc is None or proc.poll() is not None:
                row[f"state_{i}"] = "down"
                continue
            pid = proc.pid
            if self._born.get(i, (None, 0.0))[0] != pid:
                self._born[i] = (pid, now)
            row[f"age_s_{i}"] = round(now - self._born[i][1], 1)
            row[f"rss_kb_{i}"] = rss_kb(pid)
            row[f"fds_{i}"] = open_fds(pid)
            paused = i in self.cluster.paused
            row[f"state_{i}"] = "paused" if paused else "up"
            status = None if paused else self.cluster.status(i)
            if status is not None:
                taken = int(status.get("snapshots_taken", 0))
                row[f"snapshots_{i}"] = taken
                self._count_snapshots(i, pid, taken)
                if status.get("state") == "LEADER":
                    row["leader"] = i
        self.rows.append(row)
        self._writer.writerow(row)
        self._fh.flush()
        return row

    def _count_snapshots(self, node: int, pid: int, taken: int) -> None:
        seen_pid, seen = self._snapshots.get(node, (pid, 0))
        if seen_pid != pid:
            self._done[node] = self._done.get(node, 0) + seen
        self._snapshots[node] = (pid, taken)
