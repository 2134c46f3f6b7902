"""Lifecycle: close with pending futures, use after close, idempotent close,
context manager, restart rules, interpreter exit and gc with live nodes, and
leadership events (callbacks and async iterator)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import subprocess
import sys
import textwrap
import threading

import pytest

import canonical_raft as raft
from conftest import FAST, WAIT, KV, free_port, wait_for

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))  # for conftest's KV in subprocesses


def appliers_alive() -> bool:
    return any(t.name.startswith("canonical-raft-applier") for t in threading.enumerate())


def test_close_resolves_every_pending_future(cluster):
    c = cluster(1)
    node = c.nodes[1]
    futures = [node.apply(f"set k{i} {i}".encode()) for i in range(5000)]
    node.close()
    done, not_done = concurrent.futures.wait(futures, timeout=WAIT)
    assert not not_done, f"{len(not_done)} futures never resolved"
    ok, unsent = set(), set()
    for i, f in enumerate(futures):
        exc = f.exception()
        if exc is None:
            ok.add(f"k{i}")
            continue
        assert isinstance(exc, (raft.ShutdownError, raft.LeadershipLostError)), repr(exc)
        if not exc.indeterminate:
            unsent.add(f"k{i}")  # never handed to Raft: must never be applied

    # Reopen the same data dir: what the futures said must match the log.
    again = c.start(1)
    again.wait_leader(WAIT)
    again.barrier().result(WAIT)
    applied = set(again.fsm.data)
    assert ok <= applied, f"acknowledged but lost: {sorted(ok - applied)[:5]}"
    assert not (unsent & applied), (
        f"reported as never sent (indeterminate=False) but applied: {sorted(unsent & applied)[:5]}")


def test_close_racing_with_submitting_threads(cluster):
    # apply() and barrier() racing with close(): each call either raises
    # ShutdownError at once or returns a future that resolves; none hangs.
    c = cluster(1)
    node = c.nodes[1]
    futures: list[concurrent.futures.Future] = []
    started = threading.Barrier(5)
    unexpected = []

    def submit(kind: int) -> None:
        started.wait()
        while True:
            try:
                futures.append(node.barrier() if kind == 0 else node.apply(b"incr a"))
            except raft.ShutdownError:
                return
            except BaseException as exc:
                unexpected.append(exc)
                return

    threads = [threading.Thread(target=submit, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    started.wait()
    wait_for(lambda: len(futures) > 2000, what="submissions")
    node.close()
    for t in threads:
        t.join(WAIT)
    assert not unexpected, unexpected
    _, not_done = concurrent.futures.wait(futures, timeout=WAIT)
    assert not not_done, f"{len(not_done)} of {len(futures)} futures never resolved"
    for f in futures:
        exc = f.exception()
        assert exc is None or isinstance(exc, (raft.ShutdownError,
                                               raft.LeadershipLostError)), repr(exc)


def test_in_flight_commands_are_marked_indeterminate(cluster):
    # A command that may still commit must not claim to be definitely failed:
    # every failure whose key ended up applied must have said indeterminate.
    c = cluster(3)
    leader = c.leader()
    futures = [leader.apply(f"set k{i} {i}".encode()) for i in range(3000)]
    c.stop(leader.id)
    concurrent.futures.wait(futures, timeout=WAIT)
    state = c.converge()
    for i, f in enumerate(futures):
        assert f.done()
        exc = f.exception()
        if exc is not None and f"k{i}" in state[0]:
            assert exc.indeterminate, f"k{i} applied after {exc!r} said it was not"


def test_use_after_close_raises_shutdown(cluster):
    c = cluster(1)
    node = c.nodes[1]
    node.close()
    node.close()  # idempotent
    assert node.state == raft.State.CLOSED
    calls = {
        "apply": lambda: node.apply(b"incr a"),
        "barrier": node.barrier,
        "add": lambda: node.add(2, "127.0.0.1:2"),
        "add_voter": lambda: node.add_voter(2, "127.0.0.1:2"),
        "assign": lambda: node.assign(1, raft.Role.VOTER),
        "remove": lambda: node.remove(1),
        "transfer": node.transfer,
        "stats": node.stats,
        "configuration": lambda: node.configuration,
        "wait_leader": lambda: node.wait_leader(1),
        "wait_applied": lambda: node.wait_applied(10**9, 1),
    }
    for name, call in calls.items():
        with pytest.raises(raft.ShutdownError):
            result = call()
            if isinstance(result, concurrent.futures.Future):
                result.result(WAIT)  # raising through the future is fine too
            pytest.fail(f"{name} after close did not raise")
    assert not node.is_leader


def test_start_after_close_raises(cluster):
    c = cluster(1)
    node = c.nodes[1]
    node.close()
    with pytest.raises(raft.ShutdownError):
        node.start()


def test_apply_before_start_raises(tmp_path, port):
    addr = f"127.0.0.1:{port}"
    node = raft.Node(1, addr, KV(), tmp_path / "n", cluster={1: addr})
    with pytest.raises(raft.ShutdownError):
        node.apply(b"incr a")
    node.close()  # closing a never-started node is fine
    assert node.state == raft.State.CLOSED


def test_context_manager_closes_even_on_error(tmp_path, port):
    addr = f"127.0.0.1:{port}"
    with pytest.raises(RuntimeError, match="inside"):
        with raft.Node(1, addr, KV(), tmp_path / "n", cluster={1: addr}, config=FAST) as node:
            node.wait_leader(WAIT)
            assert node.apply(b"incr a").result(WAIT) == 1
            raise RuntimeError("inside")
    assert node.state == raft.State.CLOSED
    # The data dir lock was released: a new Node reopens it with its state.
    with raft.Node(1, addr, KV(), tmp_path / "n", cluster={1: addr}, config=FAST) as again:
        again.wait_leader(WAIT)
        assert again.apply(b"incr a").result(WAIT) == 2


def test_concurrent_close_returns_only_once_closed(tmp_path):
    # Regression: a second close() returned while the first still held the data dir
    # lock, the applier and the loop. Repeated: the window is a few ms wide.
    for attempt in range(5):
        addr = f"127.0.0.1:{free_port()}"
        data_dir = tmp_path / f"n{attempt}"
        node = raft.Node(1, addr, KV(), data_dir, cluster={1: addr}, config=FAST).start()
        node.wait_leader(WAIT)
        first = threading.Thread(target=node.close)
        first.start()
        while node.state != raft.State.CLOSED:  # the first close() has begun
            pass
        node.close()
        # Returned: the node must be fully closed, its data dir free again.
        again = raft.Node(1, addr, KV(), data_dir, cluster={1: addr}, config=FAST)
        try:
            again.start()
        finally:
            first.join(WAIT)
            again.close()


def test_close_with_transfer_hands_leadership_over(cluster):
    # Regression: close() marked the node closed before checking is_leader, so it
    # never transferred. Election timeouts of 2 s or more: a leader within 1 s of close() can
    # only come from a transfer, not from an election.
    c = cluster(3, config=FAST.replace(election_timeout=2.0, heartbeat_timeout=0.1))
    old = c.leader()
    c.nodes.pop(old.id).close(transfer_leadership=True)
    c.leader(timeout=1.0)


CLOSE_INSIDE_SCRIPT = """
import faulthandler, sys, threading, time
sys.path.insert(0, sys.argv[1])
import canonical_raft as raft
from conftest import FAST, KV
faulthandler.dump_traceback_later(10, exit=True)  # a deadlock fails fast, with stacks
addr = "127.0.0.1:" + sys.argv[3]
mode = sys.argv[4]

class Closing(KV):
    def apply(self, command):
        if command == b"close":
            node.close()
            return "closed"
        return super().apply(command)

node = raft.Node(1, addr, Closing(), sys.argv[2], cluster={1: addr}, config=FAST)
if mode == "callback":
    node.on_leadership_change(lambda ev: ev.is_leader and node.close())
node.start()
if mode == "fsm":
    node.wait_leader(30)
    assert node.apply(b"close").result(30) == "closed"
while node.state != raft.State.CLOSED:
    time.sleep(0.01)
# Let that close() finish before exiting (exiting meanwhile is another test).
while any(t.name.startswith("canonical-raft-applier") for t in threading.enumerate()):
    time.sleep(0.01)
print("closed", flush=True)
"""


@pytest.mark.parametrize("where", ["fsm", "callback"])
def test_close_from_the_applier_thread(tmp_path, where):
    # close() called by FSM.apply or a leadership callback (the applier thread)
    # cannot join that thread: it must still close, without deadlocking.
    script = tmp_path / "close_inside.py"
    script.write_text(CLOSE_INSIDE_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), TESTS_DIR, str(tmp_path / "n"),
                           str(free_port()), where],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "closed" in proc.stdout, proc.stderr[-3000:]


def test_callbacks_and_fsm_run_on_the_applier_thread(cluster):
    # Documented contract (Node, FSM): callbacks, apply and restore run on the
    # node's applier thread, including what happens while the node starts.
    c = cluster(1, start=False)
    callbacks: list[str] = []
    fsm_calls: set[str] = set()
    for round in range(2):  # fresh start, then a restart from a snapshot + log tail
        node = c.make(1)
        node.on_leadership_change(lambda ev: callbacks.append(threading.current_thread().name))
        node.start()
        c.nodes[1] = node
        node.wait_leader(WAIT)
        for _ in range(70):  # one at a time: past the snapshot threshold (64)
            node.apply(b"incr a").result(WAIT)
        wait_for(lambda: callbacks, what="a leadership event")
        # The applier snapshots between batches, off the loop thread: wait for it.
        wait_for(lambda: node.stats()["snapshot"]["taken"] >= 1, what="a snapshot")
        fsm_calls |= node.fsm.threads
        c.stop(1)
    assert node.fsm.restores >= 1  # the restart did restore a snapshot

    def elsewhere(names):
        return sorted({t for t in names if not t.startswith("canonical-raft-applier")})
    assert not elsewhere(callbacks), f"leadership callbacks ran on {elsewhere(callbacks)}"
    assert not elsewhere(fsm_calls), f"FSM.apply/restore ran on {elsewhere(fsm_calls)}"


def test_close_from_another_thread_unblocks_waiters(cluster):
    c = cluster(1)
    node = c.nodes[1]
    errors = []

    def waiter():
        try:
            node.wait_applied(10**9, timeout=WAIT)
        except raft.RaftError as exc:
            errors.append(exc)

    t = threading.Thread(target=waiter)
    t.start()
    node.close()
    t.join(WAIT)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], raft.ShutdownError)


# ------------------------------------------------------------------ process exit

CLUSTER_SCRIPT = """
import sys, canonical_raft as raft
sys.path.insert(0, {tests!r})
from conftest import KV, FAST
ports = {ports!r}
cluster = {{i + 1: f"127.0.0.1:{{p}}" for i, p in enumerate(ports)}}
nodes = [raft.Node(i, a, KV(), f"{{sys.argv[1]}}/n{{i}}", cluster=cluster, config=FAST).start()
         for i, a in cluster.items()]
leader = None
while leader is None:
    leader = next((n for n in nodes if n.is_leader), None)
for i in range(50):
    leader.apply(b"incr a").result(30)
"""


def run_script(tmp_path, body: str) -> subprocess.CompletedProcess:
    script = tmp_path / "script.py"
    script.write_text(body)
    # cwd is tmp_path, so only the installed canonical_raft can be imported.
    return subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)


def test_interpreter_exit_with_live_nodes(tmp_path):
    body = CLUSTER_SCRIPT.format(tests=TESTS_DIR, ports=[free_port() for _ in range(3)])
    # Exit with nodes open and commands in flight.
    body += "\nfor i in range(2000):\n    leader.apply(b'incr a')\nprint('exiting')\n"
    proc = run_script(tmp_path, body)
    assert proc.returncode == 0, proc.stderr
    assert "exiting" in proc.stdout
    assert "Traceback" not in proc.stderr and "Fatal" not in proc.stderr, proc.stderr


def test_sys_exit_from_a_thread_with_live_nodes(tmp_path):
    body = CLUSTER_SCRIPT.format(tests=TESTS_DIR, ports=[free_port() for _ in range(3)])
    body += textwrap.dedent("""
        import os, threading
        t = threading.Thread(target=lambda: [leader.apply(b'incr a') for _ in range(1000)])
        t.start()
        t.join()
        sys.exit(3)
    """)
    proc = run_script(tmp_path, body)
    assert proc.returncode == 3, proc.stderr
    assert "Fatal" not in proc.stderr, proc.stderr


def test_exit_while_another_thread_is_closing(tmp_path):
    # Regression: the atexit close() returned at once (another close() was under
    # way), the interpreter finalized, and the daemon applier thread, waiting in
    # C++ without the GIL, was killed by pthread_exit when it retook the GIL:
    # std::terminate, SIGABRT.
    port = free_port()
    body = textwrap.dedent(f"""
        import sys, threading, canonical_raft as raft
        sys.path.insert(0, {TESTS_DIR!r})
        from conftest import KV, FAST
        addr = "127.0.0.1:{port}"
        node = raft.Node(1, addr, KV(), sys.argv[1] + "/n", cluster={{1: addr}},
                         config=FAST).start()
        node.wait_leader(30)
        threading.Thread(target=node.close, daemon=True).start()
        while node.state != raft.State.CLOSED:  # that close() has begun
            pass
        print("exiting")
    """)
    proc = run_script(tmp_path, body)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "exiting" in proc.stdout


def test_unreferenced_node_does_not_hang_exit(tmp_path):
    port = free_port()
    body = textwrap.dedent(f"""
        import gc, sys, canonical_raft as raft
        sys.path.insert(0, {TESTS_DIR!r})
        from conftest import KV, FAST

        def run():
            addr = "127.0.0.1:{port}"
            node = raft.Node(1, addr, KV(), sys.argv[1] + "/n", cluster={{1: addr}},
                             config=FAST).start()
            node.wait_leader(30)
            node.apply(b"incr a").result(30)
            node.apply(b"incr a")  # one still pending

        run()
        gc.collect()
        print("dropped")
    """)
    proc = run_script(tmp_path, body)
    assert proc.returncode == 0, proc.stderr
    assert "dropped" in proc.stdout
    assert "Fatal" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


# ------------------------------------------------------------------ events

def test_leadership_callbacks_follow_failover(cluster):
    c = cluster(3, start=False)
    seen: dict[int, list[raft.LeadershipEvent]] = {i: [] for i in c.addresses}
    nodes = [c.make(i) for i in c.addresses]
    for n in nodes:  # registered before start: the first events are not missed
        n.on_leadership_change(seen[n.id].append)
    for n in nodes:
        n.start()
        c.nodes[n.id] = n
    old = c.leader()
    wait_for(lambda: any(e.is_leader for e in seen[old.id]), what="leader event")
    first = next(e for e in seen[old.id] if e.is_leader)
    assert first.node_id == old.id and first.leader == raft.Leader(old.id, old.address)

    c.stop(old.id)
    new = c.leader()
    wait_for(lambda: any(e.is_leader and e.term > first.term for e in seen[new.id]),
             what="new leader event")
    # The other survivor hears of the new leader through its callback too.
    other = next(n for n in c.nodes.values() if n is not new)
    wait_for(lambda: any(e.leader is not None and e.leader.id == new.id
                         for e in seen[other.id]), what="follower learns new leader")
    for events in seen.values():
        terms = [e.term for e in events]
        assert terms == sorted(terms), "events out of order"


def test_unregistered_callback_is_not_called(cluster):
    c = cluster(3)
    leader = c.leader()
    calls = []
    remove = leader.on_leadership_change(calls.append)
    remove()
    leader.transfer().result(WAIT)
    c.leader(exclude=(leader.id,))
    assert calls == []


def test_waiting_inside_a_callback_raises_instead_of_deadlocking(cluster):
    c = cluster(3)
    leader = c.leader()
    follower = c.followers()[0]
    outcome = []

    def callback(event):
        try:
            follower.barrier().result(WAIT)
        except raft.RaftError as exc:
            outcome.append(exc)

    follower.on_leadership_change(callback)
    c.stop(leader.id)
    wait_for(lambda: outcome, what="the callback to run")
    assert "deadlock" in str(outcome[0])


def test_events_async_iterator(cluster):
    c = cluster(3)
    old = c.leader()
    target = c.followers()[0]

    async def main():
        events = []
        transferred = False
        async for ev in target.events():
            events.append(ev)
            if not transferred:
                transferred = True  # the first event is the current state
                assert ev.leader == raft.Leader(old.id, old.address)
                old.transfer(target.id)
            elif ev.is_leader:
                break
        return events

    events = asyncio.run(asyncio.wait_for(main(), WAIT))
    assert events[-1].is_leader and events[-1].node_id == target.id
    assert events[-1].term > events[0].term


def test_events_iterator_ends_when_node_closes(cluster):
    c = cluster(1)
    node = c.nodes[1]

    closer: list[threading.Thread] = []

    async def main():
        got = []
        async for ev in node.events():
            got.append(ev)
            if len(got) == 1:
                closer.append(threading.Thread(target=node.close))
                closer[0].start()
        return got

    got = asyncio.run(asyncio.wait_for(main(), WAIT))
    closer[0].join(WAIT)
    assert got and got[0].is_leader
