"""The soak's faults: one every ``interval`` seconds, cycling through
``KINDS``; each is applied and undone before the next, so the cluster is
whole between faults.

=================  ==========================================================
kill-follower      SIGKILL a follower; restart it from its data dir ``down`` s later
kill-leader        SIGKILL the leader; restart it ``down`` s later
pause              SIGSTOP a node (in turn) for ``pause`` s, then SIGCONT
transfer           ask the leader to hand leadership over (server op ``transfer``)
=================  ==========================================================

The ``witness`` node (default 1) is never killed: when it leads at a
kill-leader, leadership is first transferred away from it (logged as part of
that fault). So one process lives the whole run, and its RSS shows a leak
that restarts would otherwise reset. It is paused in its turn and may lead.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from ..jepsen.cluster import ProxiedCluster

__all__ = ["Faults", "KINDS"]

KINDS = ("kill-follower", "kill-leader", "pause", "transfer")


class Faults(threading.Thread):
    """Runs the fault cycle until ``stop()`` (or ``end`` seconds); ``events`` has one dict per
    fault (``t`` on the soak's clock, ``kind``, ``node``, ``ok``, ``detail``,
    ``new_leader_s``), ``problems`` what went wrong that should not have."""

    def __init__(self, cluster: ProxiedCluster, t0: float, *, interval: float = 60.0,
                 kinds: tuple[str, ...] = KINDS, down: float = 3.0, pause: float = 5.0,
                 witness: int | None = 1, seed: int = 1, end: float | None = None) -> None:
        super().__init__(name="soak-faults", daemon=True)
        unknown = set(kinds) - set(KINDS)
        if unknown or not kinds:
            raise ValueError(f"fault kinds must be among {KINDS}, not {sorted(unknown)}")
        self.cluster = cluster
        self.t0 = t0
        self.interval = interval
        self.end = end   # no fault starts at or after this many seconds
        self.kinds = kinds
        self.down = down
        self.pause_s = pause
        self.witness = witness
        self.rng = random.Random(seed)
        self.events: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self._stop_event = threading.Event()
        self._paused_turn = 0

    def stop(self, timeout: float = 120.0) -> None:
        self._stop_event.set()
        self.join(timeout)

    def counts(self) -> dict[str, int]:
        done: dict[str, int] = {}
        for event in self.events:
            done[event["kind"]] = done.get(event["kind"], 0) + 1
        return done

    def run(self) -> None:
        n = 0
        while not self._stop_event.wait(max(0.0, self.t0 + (n + 1) * self.interval
                                             - time.monotonic())):
            kind = self.kinds[n % len(self.kinds)]
            n += 1
            if self.end is not None and time.monotonic() - self.t0 >= self.end - 0.5:
                return
            event: dict[str, Any] = {"t": round(time.monotonic() - self.t0, 3), "kind": kind,
                                     "node": None, "ok": True, "detail": "",
                                     "new_leader_s": None}
            try:
                self._revive_dead()
                getattr(self, "_" + kind.replace("-", "_"))(event)
            except Exception as exc:   # keep going: the report says what failed
                event["ok"] = False
                event["detail"] = f"{event['detail']} {exc!r}".strip()
                self.problems.append(f"fault {kind} at t={event['t']}s: {exc!r}")
            finally:
                self.cluster.resume_all()
            self.events.append(event)

    # ---------------------------------------------------------- helpers

    def _revive_dead(self) -> None:
        for node, code in self.cluster.check_deaths():
            self.problems.append(f"node {node} died on its own (status {code})")
        for node in self.cluster.ids:
            if not self.cluster.is_running(node):
                self.cluster.start(node, timeout=60)

    def _leader(self, timeout: float = 15.0) -> int:
        return int(self.cluster.wait_leader(timeout)["id"])

    def _new_leader(self, event: dict[str, Any], after_term: int, since: float,
                    among: list[int] | None = None) -> None:
        found = self.cluster.wait_new_leader(among, after_term, 30.0)
        if found is None:
            raise TimeoutError("no new leader within 30s")
        event["new_leader_s"] = round(time.monotonic() - since, 3)

    def _transfer_from(self, leader: int, to: int | None) -> int:
        reply = self.cluster.request(leader, {"op": "transfer", "to": to}, timeout=15.0)
        if reply.get("error") == "not_leader":   # it lost the leadership on its own
            now = int(self.cluster.wait_leader(15.0)["id"])
            if now != leader and (to is None or now == to):
                return now
            raise RuntimeError(f"transfer from {leader}: not the leader, and node {now} leads")
        if "error" in reply:
            raise RuntimeError(f"transfer from {leader}: {reply}")
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            found = self.cluster.leader()
            if found is not None and found["id"] != leader:
                return int(found["id"])
            time.sleep(0.05)
        raise TimeoutError(f"leadership did not move from node {leader} within 15s")

    def _kill_restart(self, event: dict[str, Any], node: int, term: int,
                      was_leader: bool) -> None:
        event["node"] = node
        since = time.monotonic()
        self.cluster.kill(node)
        if was_leader:
            self._new_leader(event, term, since, [i for i in self.cluster.ids if i != node])
        self._stop_event.wait(self.down)   # shortened if the soak ends
        self.cluster.start(node, timeout=60)

    # ---------------------------------------------------------- the faults

    def _kill_follower(self, event: dict[str, Any]) -> None:
        status = self.cluster.wait_leader(15.0)
        candidates = [i for i in self.cluster.ids if i not in (status["id"], self.witness)]
        self._kill_restart(event, self.rng.choice(candidates), int(status["term"]), False)

    def _kill_leader(self, event: dict[str, Any]) -> None:
        for _ in range(3):   # the leader may change on its own meanwhile: look again
            status = self.cluster.wait_leader(15.0)
            leader = int(status["id"])
            if leader != self.witness:
                self._kill_restart(event, leader, int(status["term"]), True)
                return
            others = [i for i in self.cluster.ids if i != self.witness]
            moved = self._transfer_from(leader, self.rng.choice(others))
            event["detail"] = f"leadership moved off the witness to {moved} first"
        raise RuntimeError("the witness kept the leadership: no leader to kill")

    def _pause(self, event: dict[str, Any]) -> None:
        node = self.cluster.ids[self._paused_turn % len(self.cluster.ids)]
        self._paused_turn += 1
        event["node"] = node
        status = self.cluster.wait_leader(15.0)
        was_leader = int(status["id"]) == node
        event["detail"] = "the leader" if was_leader else "a follower"
        since = time.monotonic()
        self.cluster.pause(node)
        if was_leader:
            self._new_leader(event, int(status["term"]), since,
                             [i for i in self.cluster.ids if i != node])
        self._stop_event.wait(max(0.0, self.pause_s - (time.monotonic() - since)))
        self.cluster.resume(node)

    def _transfer(self, event: dict[str, Any]) -> None:
        leader = self._leader()
        event["node"] = leader
        since = time.monotonic()
        new = self._transfer_from(leader, None)   # to the most up-to-date voter
        event["new_leader_s"] = round(time.monotonic() - since, 3)
        event["detail"] = f"{leader} -> {new}"
