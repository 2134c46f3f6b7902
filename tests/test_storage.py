"""The uv engine's data dir: a restarted node comes back with the same FSM
state; a damaged dir gives a named error (never a crash, never a silent loss
unless auto_recovery is asked for).

Starts on damaged dirs run in a child process (libraft parses the files), and
the child's exit status is checked. The data dir layout is libraft's
(LIBRAFT_NOTES.md §7): metadata1/2, closed segments named first-last index,
open-N, snapshot-<term>-<index>-<ms> plus .meta.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import canonical_raft as raft
from conftest import WAIT, KV, free_port

TESTS = os.path.dirname(os.path.abspath(__file__))
MiB = 1024 * 1024
FAST = raft.Config(election_timeout=0.5, heartbeat_timeout=0.05)
# Small segments and entries, so a few thousand commands close several segments.
SMALL_SEGMENTS = dict(election_timeout=0.5, heartbeat_timeout=0.05, segment_size=1 * MiB,
                      max_entry_bytes=4096)
SNAPSHOTS = dict(election_timeout=0.5, heartbeat_timeout=0.05, snapshot_threshold=32,
                 snapshot_trailing=8)
CLOSED = re.compile(r"^\d{16}-\d{16}$")

# Start a node on a data dir, report what happened as one JSON line.
CHILD = """
    import json, os
    import canonical_raft as raft
    from conftest import KV

    class Checked(KV):
        # Records snapshots that are not one of ours instead of raising on them.
        bad_restores = 0
        def restore(self, snapshot):
            try:
                json.loads(snapshot)
            except ValueError:
                Checked.bad_restores += 1
                return
            super().restore(snapshot)

    data_dir, addr = sys.argv[1], sys.argv[2]
    config, wait = json.loads(sys.argv[3]), float(sys.argv[4])
    cluster = None if "--join" in sys.argv else {1: addr}
    fsm = KV() if "--plain" in sys.argv else Checked()
    node = raft.Node(1, addr, fsm, data_dir, cluster=cluster, config=raft.Config(**config))
    try:
        node.start()
    except raft.RaftError as exc:
        out = {"error": type(exc).__name__, "code": exc.code, "message": str(exc)}
    else:
        out = {}
        try:
            node.wait_leader(wait)
            node.barrier().result(wait)
            out["state"] = node.fsm.state()
            out["term"] = node.term
            node.apply(b"set after restart").result(wait)  # still commits
        except raft.RaftError as exc:
            out["stuck"] = f"{type(exc).__name__}: {exc} (term {node.term}, {node.state.name})"
        out["bad_restores"] = Checked.bad_restores
        node.close()
    out["files"] = sorted(os.listdir(data_dir))
    print(json.dumps(out))
"""


def start_in_child(data_dir: Path, addr: str, config: dict, *, wait: float = WAIT,
                   join: bool = False, plain: bool = False) -> dict:
    """``join``: no cluster dict (a node added by add_voter); ``plain``: conftest's
    KV, whose restore() raises on bytes it did not produce."""
    script = f"import sys; sys.path.insert(0, {TESTS!r})\n" + textwrap.dedent(CHILD)
    args = [sys.executable, "-c", script, str(data_dir), addr, json.dumps(config), str(wait)]
    args += ["--join"] * join + ["--plain"] * plain
    proc = subprocess.run(args, capture_output=True, text=True, timeout=4 * wait + 60)
    assert proc.returncode == 0, f"child exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if "state" in out:
        out["state"] = tuple(out["state"])
    return out


def fill(data_dir: Path, addr: str, config: dict, count: int, size: int = 0,
         burst: int = 50) -> tuple:
    """Write ``count`` commands through a one-node cluster; return its FSM state.
    Commands of one burst may share a log entry; burst=1 gives an entry each."""
    with raft.Node(1, addr, KV(), data_dir, cluster={1: addr},
                   config=raft.Config(**config)) as node:
        node.wait_leader(WAIT)
        pad = "x" * size
        for start in range(0, count, burst):  # modest bursts (see test_small_segments_...)
            futures = [node.apply(f"set k{i} {i}{pad}".encode())
                       for i in range(start, min(start + burst, count))]
            for fut in futures:
                fut.result(WAIT)
        return node.fsm.state()


Base = collections.namedtuple("Base", "dir addr state")


@pytest.fixture(scope="module")
def segments_base(tmp_path_factory) -> Base:
    """A closed node with several closed segments (built once, copied per test)."""
    d = tmp_path_factory.mktemp("segments") / "node"
    addr = f"127.0.0.1:{free_port()}"
    state = fill(d, addr, SMALL_SEGMENTS, 3000, size=1000)
    closed = [f for f in os.listdir(d) if CLOSED.match(f)]
    assert len(closed) >= 4, sorted(os.listdir(d))
    return Base(d, addr, state)


@pytest.fixture(scope="module")
def snapshots_base(tmp_path_factory) -> Base:
    d = tmp_path_factory.mktemp("snapshots") / "node"
    addr = f"127.0.0.1:{free_port()}"
    state = fill(d, addr, SNAPSHOTS, 300, burst=1)
    assert len(snapshot_files(d)) == 2, sorted(os.listdir(d))  # libraft keeps two
    return Base(d, addr, state)


def copy(base: Base, tmp_path: Path) -> Path:
    d = tmp_path / "node"
    shutil.copytree(base.dir, d)
    return d


def closed_segments(d: Path) -> list[str]:
    return sorted(f for f in os.listdir(d) if CLOSED.match(f))


def snapshot_files(d: Path) -> list[str]:
    """Snapshot data files, oldest first (by index)."""
    names = [f for f in os.listdir(d) if f.startswith("snapshot-") and not f.endswith(".meta")]
    return sorted(names, key=lambda f: int(f.split("-")[2]))


def flip_middle(path: Path, n: int = 16) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    for i in range(mid, mid + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def tree(d: Path) -> dict:
    return {f: (d / f).read_bytes() for f in sorted(os.listdir(d)) if (d / f).is_file()}


# ------------------------------------------------------------------ restarts

def test_restart_replays_the_log_to_the_same_state(tmp_path, port):
    addr = f"127.0.0.1:{port}"
    state = fill(tmp_path / "d", addr, dict(election_timeout=0.5, heartbeat_timeout=0.05), 200)
    with raft.Node(1, addr, KV(), tmp_path / "d", cluster={1: addr}, config=FAST) as node:
        node.wait_leader(WAIT)
        node.barrier().result(WAIT)
        assert node.fsm.state() == state
        assert node.fsm.restores == 0  # no snapshot: the whole log was replayed
        assert node.apply(b"incr n").result(WAIT) == 1


def test_restart_after_snapshots_restores_the_same_state(tmp_path, port):
    addr = f"127.0.0.1:{port}"
    d = tmp_path / "d"
    state = fill(d, addr, SNAPSHOTS, 300, burst=1)  # snapshots count entries
    assert snapshot_files(d), sorted(os.listdir(d))
    config = raft.Config(**SNAPSHOTS)
    # Twice: the second restart sees snapshots taken after the first one.
    for round_ in range(2):
        with raft.Node(1, addr, KV(), d, cluster={1: addr}, config=config) as node:
            node.wait_leader(WAIT)
            node.barrier().result(WAIT)
            assert node.fsm.state() == state, f"restart {round_}"
            assert node.fsm.restores == 1  # the latest snapshot, then the log after it
            for i in range(100):
                node.apply(f"set r{round_}-{i} v".encode()).result(WAIT)
            state = node.fsm.state()


def test_unknown_files_in_the_data_dir_are_ignored(segments_base, tmp_path):
    d = copy(segments_base, tmp_path)
    strays = {"notes.txt": b"hello", "metadata3": b"\0" * 32, "backup.tar": os.urandom(5000),
              "snapshot-notes": b"junk"}
    for name, data in strays.items():
        (d / name).write_bytes(data)
    (d / "subdir").mkdir()
    out = start_in_child(d, segments_base.addr, SMALL_SEGMENTS)
    assert "error" not in out and "stuck" not in out, out
    assert out["state"] == segments_base.state
    for name, data in strays.items():
        assert (d / name).read_bytes() == data, f"{name} was touched"
    assert (d / "subdir").is_dir()


# ------------------------------------------------------------------ damaged segments

def test_corrupt_closed_segment_is_corrupt_error_naming_it(segments_base, tmp_path):
    d = copy(segments_base, tmp_path)
    closed = closed_segments(d)
    victim = closed[len(closed) // 2]
    flip_middle(d / victim)
    before = tree(d)
    out = start_in_child(d, segments_base.addr, SMALL_SEGMENTS)
    assert out.get("error") == "CorruptError", out
    assert victim in out["message"], out["message"]
    # auto_recovery is off by default: nothing was moved aside or rewritten.
    assert tree(d).keys() - {"canonical-raft.lock"} == before.keys() - {"canonical-raft.lock"}
    assert (d / victim).read_bytes() == before[victim]


def test_auto_recovery_does_not_rescue_a_corrupt_segment_mid_log(segments_base, tmp_path):
    # libraft only moves aside the *last* closed segment (uvRecoverFromCorruptSegment).
    d = copy(segments_base, tmp_path)
    closed = closed_segments(d)
    victim = closed[len(closed) // 2]
    flip_middle(d / victim)
    out = start_in_child(d, segments_base.addr, {**SMALL_SEGMENTS, "auto_recovery": True})
    assert out.get("error") == "CorruptError", out
    assert victim in out["message"]


def test_corrupt_last_segment_is_corrupt_error_by_default(segments_base, tmp_path):
    d = copy(segments_base, tmp_path)
    victim = closed_segments(d)[-1]
    flip_middle(d / victim)
    out = start_in_child(d, segments_base.addr, SMALL_SEGMENTS)
    assert out.get("error") == "CorruptError", out
    assert victim in out["message"]


def test_auto_recovery_moves_a_corrupt_last_segment_aside_losing_its_entries(
        segments_base, tmp_path):
    # What Config(auto_recovery=True) does on libraft 0.22.1: the node starts,
    # the damaged segment is renamed corrupt-<n>-<name>, and the acknowledged
    # commands it held are gone. This is why the default is off.
    d = copy(segments_base, tmp_path)
    victim = closed_segments(d)[-1]
    first, last = (int(i) for i in victim.split("-"))
    flip_middle(d / victim)
    out = start_in_child(d, segments_base.addr, {**SMALL_SEGMENTS, "auto_recovery": True})
    assert "error" not in out and "stuck" not in out, out
    # (A new segment may reuse the victim's name once the node writes again.)
    assert any(f.startswith("corrupt-") and f.endswith(victim) for f in out["files"]), out["files"]
    lost = segments_base.state[1] - out["state"][1]
    assert lost >= last - first + 1, (lost, victim)  # at least one command per lost entry


# ------------------------------------------------------------------ damaged metadata

def zero_metadata(d: Path) -> None:
    for name in ("metadata1", "metadata2"):
        (d / name).write_bytes(bytes(32))


def test_zeroed_metadata_fails_start_naming_the_file(segments_base, tmp_path):
    d = copy(segments_base, tmp_path)
    zero_metadata(d)
    out = start_in_child(d, segments_base.addr, SMALL_SEGMENTS)
    assert "error" in out, out
    assert "metadata1" in out["message"], out


def test_zeroed_metadata_is_a_corrupt_error(segments_base, tmp_path):
    d = copy(segments_base, tmp_path)
    zero_metadata(d)
    out = start_in_child(d, segments_base.addr, SMALL_SEGMENTS)
    assert out.get("error") == "CorruptError", out


# A metadata file shorter than 32 bytes is taken by libraft as a crash mid-write
# and deleted: the node then believes it is brand new (term 0) beside its log.
def test_empty_metadata_gives_a_clear_error_or_a_working_node(segments_base, tmp_path):
    d = copy(segments_base, tmp_path)
    (d / "metadata1").write_bytes(b"")
    out = start_in_child(d, segments_base.addr, SMALL_SEGMENTS)
    if "error" in out:
        assert out["error"] == "CorruptError" and "metadata" in out["message"], out
    else:
        assert "stuck" not in out and out["state"] == segments_base.state, out


def test_empty_metadata_on_a_joined_node_does_not_stall(segments_base, tmp_path):
    d = copy(segments_base, tmp_path)
    (d / "metadata1").write_bytes(b"")
    out = start_in_child(d, segments_base.addr, SMALL_SEGMENTS, wait=5, join=True)
    assert "stuck" not in out, out


# ------------------------------------------------------------------ damaged snapshots

def test_truncated_snapshot_meta_is_corrupt_error(snapshots_base, tmp_path):
    d = copy(snapshots_base, tmp_path)
    meta = d / (snapshot_files(d)[-1] + ".meta")
    meta.write_bytes(meta.read_bytes()[:40])
    out = start_in_child(d, snapshots_base.addr, SNAPSHOTS)
    # libraft falls back to the older snapshot, then finds the log does not reach it.
    assert out.get("error") == "CorruptError", out
    assert "snapshot" in out["message"], out


def test_truncated_snapshot_is_detected(snapshots_base, tmp_path):
    d = copy(snapshots_base, tmp_path)
    newest = d / snapshot_files(d)[-1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    out = start_in_child(d, snapshots_base.addr, SNAPSHOTS)
    if "error" in out:
        assert out["error"] == "CorruptError" and newest.name in out["message"], out
    else:
        assert out["bad_restores"] == 0, out
        assert out["state"] == snapshots_base.state, out


def test_truncated_snapshot_with_a_strict_fsm_fails_start(snapshots_base, tmp_path):
    d = copy(snapshots_base, tmp_path)
    newest = d / snapshot_files(d)[-1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    out = start_in_child(d, snapshots_base.addr, SNAPSHOTS, wait=10, plain=True)
    assert "error" in out, out  # a named RaftError from start(), not a zombie node


# ------------------------------------------------------------------ segment size vs. capacity

def test_large_segments_accept_applies(tmp_path, port):
    config = FAST.replace(segment_size=32 * MiB)
    try:
        config.validate()
    except raft.InvalidConfigError:
        return  # refusing the size is a fix too
    addr = f"127.0.0.1:{port}"
    with raft.Node(1, addr, KV(), tmp_path / "d", cluster={1: addr}, config=config) as node:
        node.wait_leader(WAIT)
        assert node.apply(b"set k v").result(WAIT) == "v"


# Not strict: whether the prepared-segment pool runs dry during a burst is a race.
@pytest.mark.xfail(strict=False, reason="with 1 MiB segments a burst can outrun raft_uv's "
                   "segment preparation: libraft then refuses applies with NoSpaceError "
                   "(backpressure, not lost data: the command was never appended)")
def test_small_segments_survive_a_burst_without_nospace(tmp_path, port):
    addr = f"127.0.0.1:{port}"
    config = raft.Config(**SMALL_SEGMENTS)
    with raft.Node(1, addr, KV(), tmp_path / "d", cluster={1: addr}, config=config) as node:
        node.wait_leader(WAIT)
        payload = "x" * 1000
        for _ in range(10):
            futures = [node.apply(f"set k{i} {payload}".encode()) for i in range(3000)]
            for fut in futures:
                fut.result(WAIT)  # NoSpaceError here
