"""A Jepsen-style reliability harness for canonical-raft (docs/reliability.md).

Real ``canonical_raft serve`` processes on 127.0.0.1, their raft traffic
through a userspace TCP proxy with one rule per directed link, clients that
record a history, a nemesis driven by one seed, and the checkers of
``canonical_raft.checker``::

    from canonical_raft.jepsen import RunConfig, run_schedule, CrashConfig, run_crash_points

    result = run_schedule(RunConfig(seed=1, time=30, nodes=3))
    print(result.summary())        # on failure: the seed and the kept artifacts

    python -m canonical_raft.jepsen --seed 1 --time 30 --nodes 3

Every node is known by its port on the proxy and listens (``--bind``) on a
private one behind it, so no configuration, a snapshot's included, leads
around the proxy: schedules run with frequent snapshots.

Files, one job each: ``proxy`` (LinkProxy), ``cluster`` (ProxiedCluster:
processes, pauses, membership bookkeeping, post-mortem), ``history``
(Recorder), ``workload`` (register clients), ``nemesis`` (faults and
membership moves), ``runner`` (one schedule), ``journals`` (the nodes' apply
journals, harvested per process, and the raft checks that need them),
``crash`` (kill -9 at random points, recovery checks), ``stats``.
"""

from __future__ import annotations

from .cluster import ProxiedCluster, scan_log
from .crash import CrashConfig, CrashResult, run_crash_points
from .history import Recorder
from .nemesis import FAULTS, Nemesis
from .proxy import LinkProxy
from .runner import RunConfig, RunResult, run_schedule
from .stats import percentile, summarize
from .workload import Workload

__all__ = ["FAULTS", "CrashConfig", "CrashResult", "LinkProxy", "Nemesis", "ProxiedCluster",
           "Recorder", "RunConfig", "RunResult", "Workload", "percentile", "run_crash_points",
           "run_schedule", "scan_log", "summarize"]
