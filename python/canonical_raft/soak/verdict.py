"""Is a resource flat? The soak's verdict on its samples.

For each node and metric, the median over the last quarter of the run
(``late``) is compared with the median over the second quarter (``early``):
the first quarter is warm-up (the Python heap, libraft's segment pool, the
client connections and the key space all fill up there). The late median
must stay under a limit derived from the early one:

============  =====================================================  =========================
metric        limit                                                  why
============  =====================================================  =========================
RSS           early x (1 + ``rss_growth``) + ``rss_slack_kb``        allocator and GC noise, the
                                                                     leader's extra buffers
open fds      early + ``fds_slack``                                  client connections come and
                                                                     go with the leader
data dir      early x (1 + ``dir_growth``) + ``dir_slack_bytes``     a segment more or less, two
                                                                     snapshots at a time
============  =====================================================  =========================

plus, for the data dir, an absolute ``dir_cap_bytes`` on the largest sample
of the whole run (a bound from the snapshot threshold and trailing).

A restart resets a process's RSS and fds, so those two are judged only on
samples of processes at least ``settle_s`` old: a restarted process is
compared once it has settled, at the same age as the others. Restarts would
still hide a slow leak in the restarted nodes; the soak never kills one node
(the witness, see faults.py) so that one series covers the whole run. A
window with no settled sample gives no verdict (``ok``, noted "n/a").
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Tolerances", "Check", "flatness", "series", "trend"]

METRICS = ("rss_kb", "fds", "dir_bytes")


@dataclass(frozen=True)
class Tolerances:
    rss_growth: float = 0.20
    rss_slack_kb: int = 8 * 1024
    fds_slack: int = 8
    dir_growth: float = 0.5
    dir_slack_bytes: int = 8 * 2**20        # one libraft segment (UV__MAX_SEGMENT_SIZE)
    dir_cap_bytes: int | None = None
    settle_s: float = 60.0


@dataclass(frozen=True)
class Check:
    node: int
    metric: str
    early: float | None      # median of the second quarter
    late: float | None       # median of the last quarter
    limit: float | None
    ok: bool
    samples: tuple[int, int]  # (early, late) samples used
    note: str = ""

    def describe(self) -> str:
        if self.early is None or self.late is None or self.limit is None:
            return f"node {self.node} {self.metric}: n/a ({self.note})"
        word = "ok" if self.ok else "GROWS"
        return (f"node {self.node} {self.metric}: {self.early:.0f} -> {self.late:.0f} "
                f"(limit {self.limit:.0f}) {word}{': ' + self.note if self.note else ''}")


def series(rows: Sequence[dict[str, Any]], node: int, metric: str,
           settle_s: float = 0.0) -> list[tuple[float, float]]:
    """(t, value) of one node's metric, skipping empty cells and, with
    ``settle_s``, samples of processes younger than that."""
    out = []
    for row in rows:
        value = row.get(f"{metric}_{node}")
        if value is None or value == "":
            continue
        age = row.get(f"age_s_{node}")
        if settle_s and (age is None or age == "" or float(age) < settle_s):
            continue
        out.append((float(row["t"]), float(value)))
    return out


def flatness(rows: Sequence[dict[str, Any]], ids: Sequence[int], tol: Tolerances = Tolerances(),
             duration: float | None = None) -> list[Check]:
    """One Check per node and metric (see the module docstring). ``duration``:
    the run's length (default: the last sample's time)."""
    if not rows:
        return []
    end = duration if duration is not None else max(float(r["t"]) for r in rows)
    checks = []
    for node in ids:
        for metric in METRICS:
            settle = tol.settle_s if metric in ("rss_kb", "fds") else 0.0
            points = series(rows, node, metric, settle)
            early = [v for t, v in points if end / 4 <= t < end / 2]
            late = [v for t, v in points if t >= 3 * end / 4]
            checks.append(_judge(node, metric, early, late, tol,
                                 max((v for _, v in series(rows, node, metric)), default=None)))
    return checks


def _judge(node: int, metric: str, early: list[float], late: list[float], tol: Tolerances,
           peak: float | None) -> Check:
    counts = (len(early), len(late))
    if not early or not late:
        return Check(node, metric, None, None, None, True, counts,
                     "no settled sample in the second or the last quarter")
    e, l_ = statistics.median(early), statistics.median(late)
    if metric == "rss_kb":
        limit = e * (1 + tol.rss_growth) + tol.rss_slack_kb
    elif metric == "fds":
        limit = e + tol.fds_slack
    else:
        limit = e * (1 + tol.dir_growth) + tol.dir_slack_bytes
    ok = l_ <= limit
    note = ""
    if metric == "dir_bytes" and tol.dir_cap_bytes is not None and peak is not None \
            and peak > tol.dir_cap_bytes:
        ok = False
        note = f"peak {peak:.0f} over the cap {tol.dir_cap_bytes}"
    return Check(node, metric, e, l_, limit, ok, counts, note)


def trend(rows: Sequence[dict[str, Any]], node: int, metric: str = "rss_kb",
          settle_s: float = 0.0) -> tuple[float, float] | None:
    """Informational, not part of the verdict: the least-squares slope (units
    per hour) of one metric over the longest stretch of one process (no
    restart in it), from ``settle_s`` of age on; ``(slope, span in s)``, or
    None if under two points."""
    runs: list[list[tuple[float, float]]] = []
    last_age = None
    for row in rows:
        value, age = row.get(f"{metric}_{node}"), row.get(f"age_s_{node}")
        if value in (None, "") or age in (None, ""):
            last_age = None
            continue
        age = float(age)
        if last_age is None or age < last_age:
            runs.append([])
        last_age = age
        if age >= settle_s:
            runs[-1].append((float(row["t"]), float(value)))
    longest = max(runs, key=lambda r: r[-1][0] - r[0][0] if r else -1.0, default=[])
    if len(longest) < 2:
        return None
    n = len(longest)
    mt = sum(t for t, _ in longest) / n
    mv = sum(v for _, v in longest) / n
    var = sum((t - mt) ** 2 for t, _ in longest)
    if var == 0:
        return None
    slope = sum((t - mt) * (v - mv) for t, v in longest) / var
    return slope * 3600.0, longest[-1][0] - longest[0][0]
