"""The soak: 3 ``serve`` processes under mixed load, with frequent snapshots
and a fault a minute, sampled for RSS, open fds and data-dir size, which
must stay flat (docs/soak.md).

    python -m canonical_raft.soak --minutes 60 --out soak-out
"""

from __future__ import annotations

from .run import SoakConfig, SoakResult, main, run_soak
from .verdict import Check, Tolerances, flatness

__all__ = ["SoakConfig", "SoakResult", "run_soak", "main", "Check", "Tolerances", "flatness"]
