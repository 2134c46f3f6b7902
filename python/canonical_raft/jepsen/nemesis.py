"""The nemesis: one fault at a time, drawn from a seeded generator.

Faults are dealt from a deck: every fault of ``faults`` once per round, in
an order shuffled by the seed, so a short schedule still sees each class.

Every fault is applied, held, and undone before the next one starts, so a run
always ends healed. Each step is logged to ``timeline`` (dicts with ``t`` on
the history's clock). Times to a new leader after the leader is killed,
isolated or paused are collected in ``new_leader_s``.

Faults (``FAULTS``):

=================  ===============================================================
kill-leader        SIGKILL the leader; restart it 1-3 s later
kill-random        SIGKILL a random node; restart it 1-3 s later
pause              SIGSTOP a random node for 2-5 s (longer than the election timeout)
pause-leader       SIGSTOP the leader for 2-5 s
isolate-leader     black-hole every link to and from the leader for 3-6 s
split              a random minority and majority cannot reach each other, 3-6 s
one-way            one direction only: the leader hears no one, or a random link, 3-6 s
slow               20-150 ms added on every link, 3-6 s
refuse             connections to a random node are reset at once (fails fast), 3-6 s
restart-all        SIGKILL every node at once, restart them all
=================  ===============================================================

The first two and the last restart a killed process (``RESTART_FAULTS``): a
node's state must outlive its process for that to be sound. An asyncio-engine
node on a MemoryStore comes back with no log, no term and no memory of its
votes (it could vote twice in one term), and ``serve`` refuses to start it
again; ``restartable_faults`` leaves those faults out of such a schedule. The
pauses (SIGSTOP/SIGCONT) keep the process, and its memory, and stay in.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from .cluster import ProxiedCluster

__all__ = ["Nemesis", "FAULTS", "RESTART_FAULTS", "restartable_faults"]

FAULTS = ("kill-leader", "kill-random", "pause", "pause-leader", "isolate-leader", "split",
          "one-way", "slow", "refuse", "restart-all")
PROCESS_FAULTS = ("kill-leader", "kill-random", "pause", "pause-leader", "restart-all")
RESTART_FAULTS = ("kill-leader", "kill-random", "restart-all")


def restartable_faults(faults: tuple[str, ...], durable: bool
                       ) -> tuple[tuple[str, ...], dict[str, str]]:
    """The faults a cluster can take, and why the others were left out:
    without a durable store on every node, none that restarts a process."""
    if durable:
        return faults, {}
    why = ("restarts a process: needs every node's state to outlive it (uv engine, or "
           "--store mdb); a MemoryStore node restarted empty could vote twice")
    return (tuple(f for f in faults if f not in RESTART_FAULTS),
            {f: why for f in faults if f in RESTART_FAULTS})


class Nemesis(threading.Thread):
    def __init__(self, cluster: ProxiedCluster, rng: random.Random, *,
                 faults: tuple[str, ...] = FAULTS, interval: tuple[float, float] = (1.0, 2.5),
                 election_timeout: float = 1.0, start_timeout: float = 60.0) -> None:
        super().__init__(name="jepsen-nemesis", daemon=True)
        if cluster.proxy is None:
            faults = tuple(f for f in faults if f in PROCESS_FAULTS)
        self.cluster = cluster
        self.rng = rng
        self.faults = faults
        self.interval = interval
        self.election_timeout = election_timeout
        self.start_timeout = start_timeout
        self.timeline: list[dict[str, Any]] = []
        self.new_leader_s: list[float] = []
        self.new_leader_by_fault: dict[str, list[float]] = {}
        self.leaderless: list[str] = []      # a fault after which no leader came
        self.problems: list[str] = []        # restart failures, unexpected deaths
        self.counts: dict[str, int] = {}
        self._halt = threading.Event()

    # ---------------------------------------------------------- driver

    def stop(self, timeout: float = 120.0) -> None:
        self._halt.set()
        self.join(timeout)
        if self.is_alive():
            self.problems.append(f"nemesis did not finish its fault within {timeout}s")

    def run(self) -> None:
        try:
            deck: list[str] = []
            while not self._halt.wait(self.rng.uniform(*self.interval)):
                if not deck:   # every fault once per round, in a seeded order
                    deck = list(self.faults)
                    self.rng.shuffle(deck)
                fault = deck.pop()
                self.counts[fault] = self.counts.get(fault, 0) + 1
                self.log("start", fault)
                getattr(self, "_" + fault.replace("-", "_"))()
                self.log("end", fault)
                self._deaths()
        except Exception as exc:  # a harness bug must fail the run, not vanish
            self.problems.append(f"nemesis crashed: {exc!r}")
            self.log("crash", repr(exc))
        finally:
            self.heal()

    def log(self, what: str, fault: str, **details: Any) -> None:
        self.timeline.append({"t": time.monotonic_ns(), "event": what, "fault": fault,
                              **details})

    def _hold(self, seconds: float) -> None:
        """Wait while a fault holds; a stop request cuts it short."""
        self._halt.wait(seconds)

    def _deaths(self) -> None:
        for node, code in self.cluster.check_deaths():
            self.problems.append(f"node {node} died on its own with status {code}")
            self.log("death", "-", node=node, status=code)

    # ---------------------------------------------------------- helpers

    def _leader(self) -> dict | None:
        return self.cluster.leader()

    def _measure_new_leader(self, old: dict | None, among: list[int], fault: str,
                            t0: float) -> None:
        """Time from t0 to a leader of a later term among ``among``."""
        if old is None:
            return
        found = self.cluster.wait_new_leader(among, old["term"], timeout=20.0)
        if found is None:
            self.leaderless.append(f"{fault}: no new leader among {among} within 20s")
            self.log("no-leader", fault, among=among)
            return
        dt = time.monotonic() - t0
        self.new_leader_s.append(dt)
        self.new_leader_by_fault.setdefault(fault, []).append(dt)
        self.log("new-leader", fault, node=found["id"], term=found["term"], after_s=round(dt, 3))

    def restart(self, node: int) -> None:
        if self.cluster.is_running(node):
            return
        try:
            self.cluster.start(node, timeout=self.start_timeout)
            self.log("restarted", "-", node=node)
        except (RuntimeError, TimeoutError, OSError) as exc:
            self.problems.append(f"node {node} failed to restart: {exc}")
            self.log("restart-failed", "-", node=node, error=str(exc)[:500])

    def heal(self) -> None:
        """Every link up, every node resumed and running."""
        try:
            if self.cluster.proxy is not None:
                self.cluster.proxy.heal()
            self.cluster.resume_all()
            self._deaths()
            for node in self.cluster.ids:
                self.restart(node)
            self.log("healed", "-")
        except Exception as exc:
            self.problems.append(f"heal failed: {exc!r}")

    # ---------------------------------------------------------- faults

    def _kill(self, node: int, fault: str, measure: dict | None) -> None:
        t0 = time.monotonic()
        self.cluster.kill(node)
        self.log("kill", fault, node=node)
        others = [i for i in self.cluster.ids if i != node]
        self._measure_new_leader(measure, others, fault, t0)
        rest = self.rng.uniform(1.0, 3.0) - (time.monotonic() - t0)
        self._hold(max(0.0, rest))
        self.restart(node)

    def _kill_leader(self) -> None:
        leader = self._leader()
        node = leader["id"] if leader else self.rng.choice(self.cluster.running())
        self._kill(node, "kill-leader", leader)

    def _kill_random(self) -> None:
        running = self.cluster.running()
        if running:
            self._kill(self.rng.choice(running), "kill-random", None)

    def _pause_node(self, node: int, fault: str, measure: dict | None) -> None:
        t0 = time.monotonic()
        self.cluster.pause(node)
        self.log("pause", fault, node=node)
        duration = self.rng.uniform(max(2.0, 2 * self.election_timeout), 5.0)
        self._measure_new_leader(measure, [i for i in self.cluster.ids if i != node], fault, t0)
        self._hold(max(0.0, duration - (time.monotonic() - t0)))
        self.cluster.resume(node)
        self.log("resume", fault, node=node)

    def _pause(self) -> None:
        live = self.cluster.live()
        if live:
            self._pause_node(self.rng.choice(live), "pause", None)

    def _pause_leader(self) -> None:
        leader = self._leader()
        if leader is not None:
            self._pause_node(leader["id"], "pause-leader", leader)

    def _links(self, fault: str, apply, duration: float, measure: dict | None = None,
               among: list[int] | None = None) -> None:
        t0 = time.monotonic()
        apply()
        self.log("links", fault, modes={f"{a}->{b}": m for (a, b), m in
                                        self.cluster.proxy.modes().items() if m != "up"})
        if measure is not None and among:
            self._measure_new_leader(measure, among, fault, t0)
        self._hold(max(0.0, duration - (time.monotonic() - t0)))
        self.cluster.proxy.heal()
        self.log("links-healed", fault)

    def _isolate_leader(self) -> None:
        leader = self._leader()
        if leader is None:
            return
        node = leader["id"]
        self._links("isolate-leader", lambda: self.cluster.proxy.isolate(node),
                    self.rng.uniform(3.0, 6.0), leader,
                    [i for i in self.cluster.ids if i != node])

    def _split(self) -> None:
        ids = list(self.cluster.ids)
        self.rng.shuffle(ids)
        minority, majority = ids[:(len(ids) - 1) // 2], ids[(len(ids) - 1) // 2:]
        leader = self._leader()
        measure = leader if leader is not None and leader["id"] in minority else None
        self._links("split", lambda: self.cluster.proxy.partition(minority, majority),
                    self.rng.uniform(3.0, 6.0), measure, majority)

    def _one_way(self) -> None:
        proxy = self.cluster.proxy
        leader = self._leader()
        if leader is not None and self.rng.random() < 0.5:
            node = leader["id"]   # the leader still sends, hears no one
            links = [(i, node) for i in self.cluster.ids if i != node]
        else:
            a, b = self.rng.sample(list(self.cluster.ids), 2)
            links = [(a, b)]
        self._links("one-way", lambda: proxy.set_links(links, "blackhole"),
                    self.rng.uniform(3.0, 6.0))

    def _slow(self) -> None:
        proxy = self.cluster.proxy
        delay = self.rng.uniform(0.02, 0.15)
        self._links("slow", lambda: proxy.set_links(list(proxy.modes()), "up", delay=delay),
                    self.rng.uniform(3.0, 6.0))

    def _refuse(self) -> None:
        node = self.rng.choice(list(self.cluster.ids))
        self._links("refuse", lambda: self.cluster.proxy.isolate(node, "refuse"),
                    self.rng.uniform(3.0, 6.0))

    def _restart_all(self) -> None:
        self.cluster.kill_all()
        self.log("kill-all", "restart-all")
        self._hold(self.rng.uniform(0.2, 1.5))
        t0 = time.monotonic()
        spawned = [i for i in self.cluster.ids if not self.cluster.is_running(i)]
        for node in spawned:   # spawn all first: they start in parallel
            self.cluster.spawn(node)
        for node in spawned:
            try:
                self.cluster.wait_ready(node, self.start_timeout)
            except (RuntimeError, TimeoutError, OSError) as exc:
                self.problems.append(f"node {node} failed to restart: {exc}")
        self.log("restarted-all", "restart-all", after_s=round(time.monotonic() - t0, 3))
