"""Bad input gets a clear, named exception before it reaches C; never a crash
or a hang. Hostile bytes on the raft port leave the node serving.

Anything that could take the process down runs in a child process whose exit
status is checked (a crash is a negative return code, a hang a timeout).
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import textwrap

import pytest

import canonical_raft as raft
from conftest import WAIT, KV

TESTS = os.path.dirname(os.path.abspath(__file__))
FAST = raft.Config(election_timeout=0.5, heartbeat_timeout=0.05)


@pytest.fixture
def addr(port):
    return f"127.0.0.1:{port}"


@pytest.fixture
def node(tmp_path, addr):
    with raft.Node(1, addr, KV(), tmp_path / "node", cluster={1: addr}, config=FAST) as n:
        n.wait_leader(WAIT)
        yield n


def run_child(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (the installed package, conftest's KV
    importable)."""
    script = f"import sys; sys.path.insert(0, {TESTS!r})\n" + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, timeout=timeout)


# ------------------------------------------------------------------ ids

@pytest.mark.parametrize("bad", [0, -1, True, False, "1", 1.0, None, 2**63, 2**64])
def test_bad_node_id_is_rejected(tmp_path, addr, bad):
    with pytest.raises(raft.InvalidConfigError, match="server id") as info:
        raft.Node(bad, addr, KV(), tmp_path / "d")
    assert isinstance(info.value, ValueError)


# ------------------------------------------------------------------ addresses

@pytest.mark.parametrize("bad", ["nohost", "1.2.3.4", "1.2.3.4:0", ":80", "host:99999",
                                 "host:-1", "host:80x", "127.0.0.1: 80", "a..b:80", "bad_host:80",
                                 " 127.0.0.1:80", "127.0.0.1:80\x00"])
def test_malformed_address_is_rejected_and_quoted(tmp_path, bad):
    with pytest.raises(raft.InvalidConfigError) as info:
        raft.Node(1, bad, KV(), tmp_path / "d")
    assert "address" in str(info.value) and repr(bad) in str(info.value)


@pytest.mark.parametrize("bad", ["[::1]:80", "::1:80", "[fe80::1%eth0]:80"])
def test_ipv6_address_is_rejected_as_unsupported(tmp_path, bad):
    with pytest.raises(raft.InvalidConfigError, match="IPv4 only"):
        raft.Node(1, bad, KV(), tmp_path / "d")


@pytest.mark.parametrize("bad", [80, None, b"127.0.0.1:80", ("127.0.0.1", 80)])
def test_non_str_address_is_rejected(tmp_path, bad):
    with pytest.raises(raft.InvalidConfigError, match="must be a 'host:port' string"):
        raft.Node(1, bad, KV(), tmp_path / "d")


# Both pass the Python check today, then fail in C with StorageError("I/O error").
@pytest.mark.parametrize("bad", ["127.0.0.1:\u0968\u0966", "256.1.1.1:80"])
def test_address_python_check_is_strict(tmp_path, bad):
    with pytest.raises(raft.InvalidConfigError):
        raft.Node(1, bad, KV(), tmp_path / "d")


# ------------------------------------------------------------------ cluster

@pytest.mark.parametrize("cluster, words", [
    ({2: "127.0.0.1:1"}, "must list this node as 1"),
    ({}, "non-empty dict"),
    ([(1, "x")], "non-empty dict"),
])
def test_cluster_without_this_node_is_rejected(tmp_path, addr, cluster, words):
    with pytest.raises(raft.InvalidConfigError, match=words):
        raft.Node(1, addr, KV(), tmp_path / "d", cluster=cluster)


def test_cluster_with_another_address_for_this_node_is_rejected(tmp_path, addr):
    with pytest.raises(raft.InvalidConfigError, match="it has '127.0.0.1:1'"):
        raft.Node(1, addr, KV(), tmp_path / "d", cluster={1: "127.0.0.1:1"})


@pytest.mark.parametrize("entry, words", [
    ({0: "127.0.0.1:2"}, "cluster id"),
    ({"2": "127.0.0.1:2"}, "cluster id"),
    ({2**64: "127.0.0.1:2"}, "cluster id"),
    ({2: "nohost"}, "address of server 2"),
    ({2: None}, "address of server 2"),
])
def test_bad_cluster_entry_is_rejected(tmp_path, addr, entry, words):
    with pytest.raises(raft.InvalidConfigError, match=words):
        raft.Node(1, addr, KV(), tmp_path / "d", cluster={1: addr, **entry})


def test_duplicate_addresses_in_cluster_are_rejected(tmp_path, addr):
    with pytest.raises(raft.InvalidConfigError, match=f"share address {addr}"):
        raft.Node(1, addr, KV(), tmp_path / "d", cluster={1: addr, 2: addr})


# ------------------------------------------------------------------ fsm, config, data_dir

class NoSnapshot:
    def apply(self, command):
        return None

    def restore(self, snapshot):
        pass


class ApplyNotCallable(NoSnapshot):
    apply = 42
    snapshot = NoSnapshot.restore


@pytest.mark.parametrize("fsm, method", [(NoSnapshot(), "snapshot"), (ApplyNotCallable(), "apply"),
                                         (None, "apply"), (object(), "apply")])
def test_fsm_without_its_methods_is_rejected(tmp_path, addr, fsm, method):
    with pytest.raises(TypeError, match=rf"{method}\(\)"):
        raft.Node(1, addr, fsm, tmp_path / "d")


@pytest.mark.parametrize("config", [{"election_timeout": 1.0}, raft.Config, "fast", 1])
def test_config_of_wrong_type_is_rejected(tmp_path, addr, config):
    with pytest.raises(TypeError, match="canonical_raft.Config"):
        raft.Node(1, addr, KV(), tmp_path / "d", config=config)


@pytest.mark.parametrize("changes, field", [
    ({"election_timeout": -1}, "election_timeout"),
    ({"election_timeout": 0}, "election_timeout"),
    ({"election_timeout": math.nan}, "election_timeout"),
    ({"election_timeout": "1"}, "election_timeout"),
    ({"election_timeout": True}, "election_timeout"),
    ({"heartbeat_timeout": -0.1}, "heartbeat_timeout"),
    ({"heartbeat_timeout": 1.0}, "heartbeat_timeout"),   # == election_timeout
    ({"heartbeat_timeout": 2.0}, "heartbeat_timeout"),
    ({"max_pending_commands": 0}, "max_pending_commands"),
    ({"max_pending_bytes": -1}, "max_pending_bytes"),
    ({"install_snapshot_timeout": -1}, "install_snapshot_timeout"),
    ({"connect_retry_delay": 0}, "connect_retry_delay"),
    ({"max_catch_up_round_duration": -5}, "max_catch_up_round_duration"),
    ({"snapshot_threshold": 0}, "snapshot_threshold"),
    ({"snapshot_threshold": 1.5}, "snapshot_threshold"),
    ({"snapshot_trailing": -1}, "snapshot_trailing"),
    ({"segment_size": 0}, "segment_size"),
    ({"segment_size": 4096}, "segment_size"),            # below 1 MiB
    ({"segment_size": 1024 * 1024 + 1}, "segment_size"),  # not a multiple of 4096
    ({"max_entry_bytes": 0}, "max_entry_bytes"),
    ({"max_inflight_entries": 0}, "max_inflight_entries"),
    ({"max_catch_up_rounds": -1}, "max_catch_up_rounds"),
    ({"max_command_size": 0}, "max_command_size"),
    ({"max_command_size": 8 * 1024 * 1024}, "max_command_size"),  # a whole segment
    ({"bind_address": "nohost"}, "bind_address"),
    ({"trace_level": 9}, "trace_level"),
])
def test_bad_config_value_names_the_field(tmp_path, addr, changes, field):
    config = raft.Config(**changes)
    with pytest.raises(raft.InvalidConfigError, match=f"Config.{field}"):
        config.validate()
    with pytest.raises(raft.InvalidConfigError, match=f"Config.{field}"):
        raft.Node(1, addr, KV(), tmp_path / "d", config=config)


# validate() accepts these; start() then dies in to_options (OverflowError or a
# pybind11 "incompatible function arguments" TypeError), or the node misbehaves.
@pytest.mark.parametrize("changes, field", [
    ({"election_timeout": math.inf}, "election_timeout"),        # OverflowError at start
    ({"election_timeout": 1e9}, "election_timeout"),             # ms overflow a C unsigned
    ({"snapshot_threshold": 2**70}, "snapshot_threshold"),
    ({"max_inflight_entries": 2**40}, "max_inflight_entries"),
    ({"segment_size": 2**40}, "segment_size"),                   # 1 TiB segments
    ({"pre_vote": "yes"}, "pre_vote"),
    ({"auto_recovery": None}, "auto_recovery"),
])
def test_out_of_range_config_value_names_the_field(changes, field):
    with pytest.raises(raft.InvalidConfigError, match=f"Config.{field}"):
        raft.Config(**changes).validate()


def test_sub_millisecond_election_timeout_is_rejected():
    with pytest.raises(raft.InvalidConfigError, match="Config.election_timeout"):
        raft.Config(election_timeout=0.0004, heartbeat_timeout=0.0001).validate()


def test_sub_millisecond_election_timeout_does_not_crash(tmp_path):
    proc = run_child("""
        import canonical_raft as raft
        from conftest import KV, free_port
        addr = f"127.0.0.1:{free_port()}"
        config = raft.Config(election_timeout=0.0004, heartbeat_timeout=0.0001)
        try:
            with raft.Node(1, addr, KV(), sys.argv[1], cluster={1: addr}, config=config):
                pass
        except raft.RaftError as exc:
            print(type(exc).__name__, exc)
    """, str(tmp_path / "d"))
    assert proc.returncode == 0, f"child died with {proc.returncode}: {proc.stderr[-2000:]}"


def test_data_dir_of_wrong_type_is_rejected(tmp_path, addr):
    with pytest.raises(TypeError, match="data_dir"):
        raft.Node(1, addr, KV(), 42)


def test_data_dir_that_is_a_file_is_rejected_at_start(tmp_path, addr):
    a_file = tmp_path / "file"
    a_file.write_text("not a dir")
    node = raft.Node(1, addr, KV(), a_file, cluster={1: addr})
    with pytest.raises(raft.InvalidConfigError, match="not a directory") as info:
        node.start()
    assert str(a_file) in str(info.value)
    assert a_file.read_text() == "not a dir"
    node.close()


def test_empty_data_dir_is_rejected(addr):
    with pytest.raises(raft.InvalidConfigError, match="data_dir"):
        raft.Node(1, addr, KV(), "")


def test_data_dir_with_nul_byte_is_an_invalid_config_error(tmp_path, addr):
    with pytest.raises(raft.InvalidConfigError, match="data_dir"):
        raft.Node(1, addr, KV(), str(tmp_path / "a\x00b"), cluster={1: addr})


def test_locked_data_dir_is_refused_and_owner_unaffected(node):
    other = raft.Node(1, node.address, KV(), node.data_dir, cluster={1: node.address})
    with pytest.raises(raft.DataDirLockedError, match="in use") as info:
        other.start()
    assert node.data_dir in str(info.value)
    other.close()
    assert node.apply(b"set k v").result(WAIT) == "v"


# ------------------------------------------------------------------ commands

@pytest.mark.parametrize("bad", ["set k v", 1, None, [1, 2], {"k": "v"}, 1.5])
def test_non_bytes_command_is_a_type_error(node, bad):
    with pytest.raises(TypeError, match=f"not {type(bad).__name__}"):
        node.apply(bad)
    assert node.apply(b"set k v").result(WAIT) == "v"  # still serving


@pytest.mark.parametrize("command", [bytearray(b"set k v"), memoryview(b"set k v"),
                                     memoryview(b"s.e.t. .k. .v.")[::2]])
def test_bytes_like_commands_are_accepted(node, command):
    assert node.apply(command).result(WAIT) == "v"


def test_oversized_command_is_too_big_error(tmp_path, addr):
    config = FAST.replace(max_command_size=1000)
    with raft.Node(1, addr, KV(), tmp_path / "d", cluster={1: addr}, config=config) as node:
        node.wait_leader(WAIT)
        with pytest.raises(raft.TooBigError, match="max_command_size") as info:
            node.apply(b"set k " + b"x" * 995)
        assert isinstance(info.value, ValueError)
        # The limit itself is fine, and the node keeps serving.
        assert node.apply(b"set k " + b"x" * 994).result(WAIT) == "x" * 994


# ------------------------------------------------------------------ the raft port

def test_port_in_use_fails_start_quickly_and_owner_unaffected(tmp_path, addr, port):
    with socket.socket() as owner:
        # As servers do; it also lets the node rebind past the TIME_WAIT left below.
        owner.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        owner.bind(("127.0.0.1", port))
        owner.listen()
        node = raft.Node(1, addr, KV(), tmp_path / "d", cluster={1: addr}, config=FAST)
        with pytest.raises(raft.RaftError):
            node.start()  # pytest-timeout turns a hang into a failure
        node.close()
        # The owner still accepts and talks.
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as client:
            conn, _ = owner.accept()
            with conn:
                client.sendall(b"ping")
                assert conn.recv(4) == b"ping"
    # The failed start left the data dir unlocked and usable.
    with raft.Node(1, addr, KV(), tmp_path / "d", cluster={1: addr}, config=FAST) as node:
        node.wait_leader(WAIT)
        assert node.apply(b"set k v").result(WAIT) == "v"


def test_port_in_use_error_says_so(tmp_path, addr, port):
    with socket.socket() as owner:
        owner.bind(("127.0.0.1", port))
        owner.listen()
        node = raft.Node(1, addr, KV(), tmp_path / "d", cluster={1: addr}, config=FAST)
        with pytest.raises(raft.RaftError) as info:
            node.start()
        node.close()
    assert not isinstance(info.value, raft.StorageError), repr(info.value)
    assert addr in str(info.value), repr(info.value)


# tests/asan/hostile.py owns the node in a child: a crash must not take pytest down.
HOSTILE = os.path.join(TESTS, "asan", "hostile.py")


def test_garbage_on_raft_port_leaves_node_serving(tmp_path):
    # Random bytes, zeros, a wrong protocol, huge/zero declared lengths, early closes.
    proc = subprocess.run([sys.executable, HOSTILE, str(tmp_path / "d")], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"child exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    assert "served 9" in proc.stdout  # one committed apply after each of the 9 payloads


def test_truncated_message_header_leaves_node_serving(tmp_path):
    # A valid handshake, then a message whose header claims 1 byte.
    proc = subprocess.run([sys.executable, HOSTILE, str(tmp_path / "d"),
                           "1-byte AppendEntries header"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"child exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    assert "served 1" in proc.stdout
