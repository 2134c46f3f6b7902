"""The future contract (issue 11): one type for threads and asyncio, built on
demand, woken in batches. Unit tests drive futures.Future directly; the rest go
through a one-node cluster."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import threading
import time

import pytest
from conftest import FAST, KV, WAIT, wait_for

import canonical_raft as raft
from canonical_raft import futures


def one_node(cluster, fsm=None, **config):
    c = cluster(1, start=False)
    node = c.start(1, fsm=fsm or KV(), config=FAST.replace(**config))
    node.wait_leader(WAIT)
    node.barrier().result(WAIT)
    return node


# ------------------------------------------------------------------ threads

def test_result_and_exception_from_another_thread():
    f = futures.ApplyFuture()
    assert not f.done() and f.running() and f.index is None and f.nbytes == 0
    threading.Timer(0.05, f.set_result, args=(7,)).start()
    assert f.result(WAIT) == 7 and f.exception() is None and f.done()

    g = futures.Future()
    threading.Timer(0.05, g.set_exception, args=(ValueError("x"),)).start()
    assert isinstance(g.exception(WAIT), ValueError)
    with pytest.raises(ValueError):
        g.result()


def test_timeout_raises_our_timeout_error():
    f = futures.Future()
    with pytest.raises(raft.TimeoutError) as info:
        f.result(0.01)
    assert isinstance(info.value, TimeoutError) and info.value.indeterminate
    with pytest.raises(raft.TimeoutError):
        f.exception(0.01)
    f.set_result(1)
    assert f.result(0) == 1


def test_resolving_twice_is_an_error():
    f = futures.Future()
    f.set_result(1)
    with pytest.raises(concurrent.futures.InvalidStateError):
        f.set_result(2)
    with pytest.raises(concurrent.futures.InvalidStateError):
        f.set_exception(ValueError())
    assert f.result() == 1


def test_callbacks_before_and_after_resolution():
    f = futures.Future()
    seen = []
    f.add_done_callback(lambda fut: seen.append(("before", fut.result())))
    f.add_done_callback(lambda fut: 1 / 0)  # logged, does not stop the others
    f.add_done_callback(lambda fut: seen.append(("before2", fut.result())))
    f.set_result(3)
    f.add_done_callback(lambda fut: seen.append(("after", fut.result())))
    assert seen == [("before", 3), ("before2", 3), ("after", 3)]


def test_cancel_is_refused():
    f = futures.Future()
    assert f.cancel() is False and not f.cancelled() and not f.done()
    f.set_result(None)
    assert f.cancel() is False and not f.cancelled()


def test_wait_and_as_completed():
    fs = [futures.ApplyFuture() for _ in range(5)]
    done, not_done = concurrent.futures.wait(fs, timeout=0.01)
    assert not done and len(not_done) == 5
    fs[2].set_result(2)
    done, _ = concurrent.futures.wait(fs, return_when=concurrent.futures.FIRST_COMPLETED)
    assert done == {fs[2]}
    for i, f in enumerate(fs):
        if i != 2:
            threading.Timer(0.01 * i, f.set_result, args=(i,)).start()
    assert sorted(f.result() for f in concurrent.futures.as_completed(fs, timeout=WAIT)) == \
        list(range(5))
    fs2 = [futures.Future(), futures.Future()]
    threading.Timer(0.02, fs2[0].set_exception, args=(ValueError(),)).start()
    done, _ = concurrent.futures.wait(fs2, timeout=WAIT,
                                      return_when=concurrent.futures.FIRST_EXCEPTION)
    assert done == {fs2[0]}


def test_waiting_on_the_resolver_thread_raises():
    out = []

    def body():
        f = futures.Future(threading.get_ident())
        with pytest.raises(raft.RaftError, match="deadlock"):
            f.result(1)
        f.set_result(5)
        out.append(f.result(0))  # once done, reading it is fine
    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert out == [5]


def test_a_resolved_future_makes_no_cyclic_garbage():
    gc.collect()
    gc.disable()
    try:
        before = gc.get_count()[0]
        for _ in range(1000):
            f = futures.ApplyFuture(None, 8)
            f.add_done_callback(len)  # any callable
            f.index = 1
            f.set_result(b"r")
            f.result()
        assert gc.collect() == 0, "resolving futures left cyclic garbage"
    finally:
        gc.enable()
    assert gc.get_count()[0] >= before or True  # (counts move with any allocation)


# ------------------------------------------------------------------ asyncio

def test_await_without_wrap_future_and_batched_wakeups():
    async def main():
        loop = asyncio.get_running_loop()
        fs = [futures.ApplyFuture() for _ in range(300)]
        tasks = [asyncio.ensure_future(_await(f)) for f in fs]
        await asyncio.sleep(0)
        wakes = []
        real = loop.call_soon_threadsafe
        loop.call_soon_threadsafe = lambda *a, **k: (wakes.append(a), real(*a, **k))[1]

        def resolve():
            with futures.batch():  # as the applier does: one wake-up for the whole batch
                for i, f in enumerate(fs):
                    f.set_result(i)
        try:
            await loop.run_in_executor(None, resolve)
            assert await asyncio.gather(*tasks) == list(range(300))
        finally:
            del loop.call_soon_threadsafe
        ours = [w for w in wakes if getattr(w[0], "__self__", None).__class__.__name__ ==
                "_LoopWaker"]
        assert len(ours) == 1, wakes  # (the other one is run_in_executor's own)
        done = futures.Future()
        done.set_result("now")
        assert await done == "now"  # already done: no wait at all
        failing = futures.Future()
        loop.call_later(0.01, lambda: failing.set_exception(KeyError("k")))
        with pytest.raises(KeyError):
            await failing
    asyncio.run(main())


async def _await(f):
    return await f


def test_cancelling_the_awaiting_task_leaves_the_future_alone():
    async def main():
        f = futures.Future()
        task = asyncio.ensure_future(_await(f))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not f.done()
        f.set_result(1)  # the operation still completes
        assert await f == 1
        # wait_for's timeout cancels the wait, not the command
        g = futures.Future()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(_await(g), 0.01)
        g.set_result(2)
        assert await asyncio.wrap_future(g) == 2  # wrap_future still works
    asyncio.run(main())


def test_two_loops_await_one_future():
    f = futures.Future()
    results = []

    def run():
        results.append(asyncio.run(_await(f)))
    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    f.set_result("both")
    for t in threads:
        t.join(WAIT)
    assert results == ["both", "both"]


# ------------------------------------------------------------------ on a node

def test_node_futures_with_threads_callbacks_and_asyncio(cluster):
    node = one_node(cluster)
    fs = [node.apply(f"set k{i} {i}".encode()) for i in range(50)]
    assert [f.result(WAIT) for f in concurrent.futures.as_completed(fs, timeout=WAIT)]
    assert [f.result() for f in fs] == [str(i) for i in range(50)]
    idx = [f.index for f in fs]
    assert idx == sorted(idx) and all(f.nbytes == len(f"set k{i} {i}") for i, f in enumerate(fs))

    seen = []
    node.apply(b"incr c").add_done_callback(
        lambda f: seen.append((threading.current_thread().name, f.result())))
    wait_for(lambda: seen, what="the callback")
    assert seen[0][0].startswith("canonical-raft-applier") and seen[0][1] == 1

    async def main():
        values = await asyncio.gather(*(node.apply(b"incr a") for _ in range(200)))
        assert sorted(values) == list(range(1, 201))
        with pytest.raises(ValueError):
            await node.apply(b"fail boom")  # FSM exceptions reach the awaiting task
    asyncio.run(main())


def test_waiting_inside_a_callback_raises_instead_of_deadlocking(cluster):
    node = one_node(cluster)
    errors = []

    def cb(_f):
        try:
            node.apply(b"incr x").result(1)
        except raft.RaftError as exc:
            errors.append(exc)
    node.apply(b"incr y").add_done_callback(cb)
    wait_for(lambda: errors, what="the guard")
    assert "deadlock" in str(errors[0])


def test_close_fails_pending_futures_everywhere(cluster):
    class Slow(KV):
        def apply(self, command):
            time.sleep(0.002)
            return super().apply(command)
    node = one_node(cluster, fsm=Slow())
    fs = [node.apply(b"incr n") for _ in range(300)]
    seen = []
    fs[-1].add_done_callback(lambda f: seen.append(f.exception()))

    async def awaiter():
        try:
            return await fs[-2]
        except raft.RaftError as exc:
            return exc
    box = []
    t = threading.Thread(target=lambda: box.append(asyncio.run(awaiter())))
    t.start()
    node.close()
    t.join(WAIT)
    outcomes = [f.exception(WAIT) for f in fs]
    failed = [e for e in outcomes if e is not None]
    assert all(isinstance(e, raft.ShutdownError) for e in failed)
    assert seen and (seen[0] is None or isinstance(seen[0], raft.ShutdownError))
    assert box and (isinstance(box[0], raft.ShutdownError) or box[0] == fs[-2].result())
