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
add-member         start a fresh node (new id, empty data dir, known by its proxy
                   port) and have the leader add it as a voter
remove-member      have the leader remove a random member (the leader itself too);
                   once the removal committed, stop the removed node
replace-member     remove a member, then add a fresh one (at ``size - 1``
                   voters: add first): the cluster keeps its size
transfer-leader    the leader hands leadership to a random other voter
disk-full          (opt-in: ``DISK_FAULTS``, needs root) fill a random node's data
                   disk (a small tmpfs, jepsen/disks.py) to 0-8 KiB free for 3-6 s
=================  ===============================================================

Membership stays between ``size - 1`` and ``size + 1`` voters: add-member at
``size + 1`` removes one first, remove-member at ``size - 1`` adds one first.
A change's reply is not trusted for the bookkeeping: after each move, a write
through the leader commits everything before it and the leader's
configuration is read back (``settle_membership``); the nodes in it are the
members the harness expects to converge, the others are stopped. A fresh id
comes from the cluster's spares; when none is left, adding is skipped
(logged). Leader-failure timings are only measured where the survivors are a
majority of the configuration.

kill-leader, kill-random and restart-all restart a killed process
(``RESTART_FAULTS``): a node's state must outlive its process for that to be
sound. An asyncio-engine node on a MemoryStore comes back with no log, no term
and no memory of its votes (it could vote twice in one term), and ``serve``
refuses to start it again; ``restartable_faults`` leaves those faults out of
such a schedule. The pauses (SIGSTOP/SIGCONT) keep the process, and its
memory, and stay in; so do the membership moves (they start fresh nodes and
stop removed ones, never restart one).
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any, Callable

from ..client import RETRYABLE
from .cluster import ProxiedCluster
from .disks import SmallDisks

__all__ = ["Nemesis", "FAULTS", "MEMBERSHIP_MOVES", "RESTART_FAULTS", "DISK_FAULTS",
           "restartable_faults"]

MEMBERSHIP_MOVES = ("add-member", "remove-member", "replace-member", "transfer-leader")
FAULTS = ("kill-leader", "kill-random", "pause", "pause-leader", "isolate-leader", "split",
          "one-way", "slow", "refuse", "restart-all", *MEMBERSHIP_MOVES)
PROCESS_FAULTS = ("kill-leader", "kill-random", "pause", "pause-leader", "restart-all",
                  *MEMBERSHIP_MOVES)
RESTART_FAULTS = ("kill-leader", "kill-random", "restart-all")
#: Not in FAULTS: each node's data dir must be a small disk of its own (root).
DISK_FAULTS = ("disk-full",)


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
                 election_timeout: float = 1.0, start_timeout: float = 60.0,
                 harvest: Callable[[list[int] | None], None] | None = None,
                 disks: SmallDisks | None = None) -> None:
        super().__init__(name="jepsen-nemesis", daemon=True)
        self.disks = disks             # for disk-full (jepsen/disks.py)
        self.size = len(cluster.ids)   # membership moves keep size-1..size+1 voters
        self.harvest = harvest         # journals of nodes about to die (journals.Harvester)
        self.membership: list[dict[str, Any]] = []   # each move's outcome
        self._marks = 0
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
        if old is None or 2 * len(among) <= len(self.cluster.ids):
            return   # (survivors that are no majority elect no one)
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
            if self.disks is not None:
                self.disks.free_all()
            self.cluster.resume_all()
            self._deaths()
            for node in self.cluster.ids:
                self.restart(node)
            self.log("healed", "-")
        except Exception as exc:
            self.problems.append(f"heal failed: {exc!r}")

    # ---------------------------------------------------------- faults

    def _harvest(self, nodes: list[int] | None) -> None:
        if self.harvest is not None:
            self.harvest(nodes)

    def _kill(self, node: int, fault: str, measure: dict | None) -> None:
        self._harvest([node])
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

    def _disk_full(self) -> None:
        """A node's disk fills up under load, then space returns: it must
        refuse or wait (raft_uv retries a full disk), never corrupt, and go on."""
        if self.disks is None:
            return
        nodes = [i for i in self.cluster.running() if i in self.disks.mounted]
        if not nodes:
            return
        node = self.rng.choice(nodes)
        before = self.cluster.status(node)
        left = self.disks.fill(node, self.rng)
        self.log("disk-full", "disk-full", node=node, free_bytes=left)
        self._hold(self.rng.uniform(3.0, 6.0))
        after, leader = self.cluster.status(node), self._leader()
        self.disks.free(node)
        # How far it got while full, against the leader's log (it stalls once
        # it needs a new segment or a snapshot file).
        grew = (after["last_index"] - before["last_index"]) if before and after else None
        self.log("disk-freed", "disk-full", node=node, its_log_grew=grew,
                 behind_leader=(leader["last_index"] - after["last_index"])
                 if leader and after else None)

    def _restart_all(self) -> None:
        self._harvest(None)
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

    # ---------------------------------------------------------- membership moves

    def _leader_request(self, request: dict, timeout: float = 30.0) -> dict:
        """``request`` to whichever node leads, again while the answer is one
        that may change (not leader, timeout, busy with another change...);
        the last reply (``{"error": ...}`` if none came)."""
        deadline = time.monotonic() + timeout
        reply: dict = {"error": "no_leader"}
        while time.monotonic() < deadline:
            leader = self._leader()
            if leader is not None:
                try:
                    reply = self.cluster.request(leader["id"], request,
                                                 max(0.5, min(10.0, deadline - time.monotonic())))
                except (OSError, ValueError) as exc:
                    reply = {"error": "no_answer", "message": repr(exc)}
                if reply.get("ok") or reply.get("error") not in (*RETRYABLE, "raft_error",
                                                                 "no_answer"):
                    return reply
            time.sleep(0.2)
        return reply

    def settle_membership(self, timeout: float = 30.0) -> dict[int, str] | None:
        """Commit a marker write through the leader, then read the leader's
        configuration ({id: role}); make ``cluster.ids`` its voters and standbys
        and stop every other node that runs. None if no leader answered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._marks += 1
            try:
                with self.cluster.client(timeout=max(1.0, deadline - time.monotonic()),
                                         attempt_timeout=2.0) as client:
                    client.set("__membership__", self._marks)
            except Exception:   # a timeout: try again while time is left
                continue
            leader = self._leader()
            if leader is None or "members" not in leader:
                time.sleep(0.1)
                continue
            roles = {m["id"]: m["role"] for m in leader["members"]}
            members = sorted(i for i, r in roles.items() if r in ("voter", "standby"))
            for node in [i for i in self.cluster.started if i not in members]:
                if node in self.cluster.ids or self.cluster.is_running(node):
                    self._harvest([node])
                    self.cluster.retire(node)
                    self.log("retired", "-", node=node, role=roles.get(node))
            unknown = [i for i in members if i not in self.cluster.started]
            if unknown:
                self.problems.append(f"members {unknown} have no process of ours")
            self.cluster.ids = [i for i in members if i in self.cluster.started]
            return roles
        self.problems.append(f"membership not settled within {timeout}s: no leader committed "
                             "a write")
        return None

    def _add_member(self) -> None:
        if len(self.cluster.ids) >= self.size + 1:
            self._remove_one("add-member")
        self._add_one("add-member")

    def _remove_member(self) -> None:
        if len(self.cluster.ids) <= self.size - 1:
            self._add_one("remove-member")
        self._remove_one("remove-member")

    def _replace_member(self) -> None:
        if len(self.cluster.ids) <= self.size - 1:   # never below the floor
            self._add_one("replace-member")
            self._remove_one("replace-member")
        else:
            self._remove_one("replace-member")
            self._add_one("replace-member")

    def _add_one(self, fault: str) -> None:
        node = self.cluster.take_spare()
        if node is None:
            self.log("skipped", fault, why="no spare id left")
            return
        t0 = time.monotonic()
        try:
            self.cluster.start(node, timeout=self.start_timeout)
        except (RuntimeError, TimeoutError, OSError) as exc:
            self.problems.append(f"new node {node} failed to start: {exc}")
            self.settle_membership()
            return
        address = self.cluster.advertised(node)
        self.log("add", fault, node=node, address=address)
        reply = self._leader_request({"op": "add", "id": node, "address": address,
                                      "role": "voter"})
        roles = self.settle_membership()
        self._outcome(fault, "add", node, reply, roles, t0)

    def _remove_one(self, fault: str) -> None:
        node = self.rng.choice(self.cluster.ids)
        t0 = time.monotonic()
        self.log("remove", fault, node=node)
        reply = self._leader_request({"op": "remove", "id": node})
        roles = self.settle_membership()
        self._outcome(fault, "remove", node, reply, roles, t0)

    def _outcome(self, fault: str, op: str, node: int, reply: dict,
                 roles: dict[int, str] | None, t0: float) -> None:
        member = roles is not None and roles.get(node) in ("voter", "standby")
        done = member if op == "add" else (roles is not None and not member)
        entry = {"fault": fault, "op": op, "node": node, "done": done,
                 "reply": reply.get("error", "ok"), "s": round(time.monotonic() - t0, 3)}
        self.membership.append(entry)
        self.log("membership", fault, **{k: v for k, v in entry.items() if k != "fault"},
                 members=roles)

    def _transfer_leader(self) -> None:
        leader = self._leader()
        if leader is None:
            return
        others = [i for i in self.cluster.ids if i != leader["id"] and i in self.cluster.live()]
        if not others:
            return
        target = self.rng.choice(others)
        t0 = time.monotonic()
        try:
            reply = self.cluster.request(leader["id"], {"op": "transfer", "to": target}, 10.0)
        except (OSError, ValueError) as exc:
            reply = {"error": "no_answer", "message": repr(exc)}
        self.log("transfer", "transfer-leader", node=leader["id"], to=target,
                 reply=reply.get("leader_id", reply.get("error")))
        found = self.cluster.wait_new_leader(None, leader["term"], timeout=10.0)
        if found is not None:
            self.new_leader_by_fault.setdefault("transfer-leader", []).append(
                time.monotonic() - t0)
