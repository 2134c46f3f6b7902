"""Latency percentiles."""

from __future__ import annotations

import statistics


def percentiles(samples: list[float]) -> dict:
    """p50/p99/p99.9/mean in ms of samples in seconds."""
    if not samples:
        return {"acked": 0, "p50_ms": None, "p99_ms": None, "p999_ms": None, "mean_ms": None}
    s = sorted(samples)

    def pct(p: float) -> float:
        return s[min(len(s) - 1, int(p * len(s)))] * 1000

    return {"acked": len(s), "p50_ms": pct(0.50), "p99_ms": pct(0.99), "p999_ms": pct(0.999),
            "mean_ms": statistics.fmean(s) * 1000}
