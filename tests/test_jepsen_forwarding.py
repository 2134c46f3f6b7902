"""Forwarding under the Jepsen harness (issue 14): every node runs with
``serve --forward`` and each client talks to one node only, whatever its role,
so most writes and linearizable reads travel follower -> leader. Leaders are
killed, paused and isolated; the checker then finds no lost or duplicated
write (journals), linearizable histories, equal replicas. Both engines (the
asyncio one on MDBStore, so its nodes survive kills).

The forwarding side channel does not cross the harness's link proxy: a
partition cuts raft traffic, not forwarded requests (as when only the raft
port is firewalled). Leader faults are what exercise forwarding's failure
paths: a request in flight when its leader dies fails as indeterminate and the
client's retry (same client id and seq) is applied at most once.
"""

from __future__ import annotations

import os

import pytest
from test_jepsen import AIO_STORE, _artifacts

from canonical_raft.jepsen import RunConfig, run_schedule

SECONDS = float(os.environ.get("JEPSEN_CI_FORWARD_TIME", "20"))
LEADER_FAULTS = ("kill-leader", "pause-leader", "isolate-leader")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("engine, seed", [("uv", 201), ("asyncio", 202)])
def test_forwarding_clients_through_leader_faults(engine, seed):
    store = AIO_STORE if engine == "asyncio" else "memory"
    faults = LEADER_FAULTS if engine == "uv" or store == "mdb" else ("pause-leader",
                                                                     "isolate-leader")
    result = run_schedule(RunConfig(seed=seed, time=SECONDS, nodes=3, faults=faults,
                                    engine=engine, store=store, forward=True,
                                    artifacts=_artifacts()))
    print(result.summary())
    assert result.ok, f"seed {seed} failed; artifacts in {result.artifacts}:\n" \
                      f"{result.summary()}"
    assert result.verdict == "ok"
    assert result.extra["forwarded"] > 0  # followers really forwarded
    assert "duplicate_applies" in result.extra["raft_checks"]
    assert result.faults and set(result.faults) <= set(faults)
