"""Percentiles and the liveness summary."""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["percentile", "summarize"]


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0-100), nearest rank; None for no values."""
    xs = sorted(values)
    if not xs:
        return None
    rank = max(1, math.ceil(q / 100 * len(xs)))
    return xs[min(rank, len(xs)) - 1]


def summarize(values: Iterable[float]) -> dict:
    xs = list(values)
    if not xs:
        return {"n": 0}
    return {"n": len(xs), "p50": round(percentile(xs, 50), 3),
            "p99": round(percentile(xs, 99), 3), "max": round(max(xs), 3)}
