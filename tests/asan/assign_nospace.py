"""A failed assign() must leave no dangling request in libraft (issue 8, defect 1).

libraft 0.22.1's raft_assign stored the request in r->legacy.change and returned
an error (NoSpaceError here) without clearing it; the core freed the failed
request and libraft later used it: SIGSEGV inside raft_close. One node with
1 MiB segments, a spare added, then bursts of 30 applies of 100 KB, each
followed by assign(2, STANDBY or SPARE); then close. Prints "assign ok" and
the outcomes. Run by test_defects.py as is and by test_asan.py under ASan.
Usage: python assign_nospace.py DATA_DIR
"""

from __future__ import annotations

import collections
import socket
import sys

import canonical_raft as raft

WAIT = 30.0


class Sink(raft.FSM):
    def apply(self, command: bytes):
        return len(command)

    def snapshot(self) -> bytes:
        return b"sink"

    def restore(self, snapshot: bytes) -> None:
        pass


def free_addr() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def main(data_dir: str) -> None:
    addr = free_addr()
    config = raft.Config(segment_size=1024 * 1024, election_timeout=0.5,
                         heartbeat_timeout=0.05, snapshot_threshold=64, snapshot_trailing=16)
    outcomes: collections.Counter[str] = collections.Counter()
    node = raft.Node(1, addr, Sink(), data_dir, cluster={1: addr}, config=config).start()
    try:
        node.wait_leader(WAIT)
        node.add(2, free_addr()).result(WAIT)
        payload = b"x" * 100_000
        futures, changes = [], []
        for burst in range(40):
            futures += [node.apply(payload) for _ in range(30)]
            role = raft.Role.STANDBY if burst % 2 == 0 else raft.Role.SPARE
            changes.append(node.assign(2, role))
            if burst % 4 == 3:  # let a change through now and then
                for fut in changes[-4:]:
                    fut.exception(WAIT)
        for what, futs in (("assign", changes), ("apply", futures)):
            for fut in futs:
                try:
                    fut.result(WAIT)
                    outcomes[f"{what} ok"] += 1
                except raft.RaftError as exc:
                    outcomes[f"{what} {type(exc).__name__}"] += 1
        # Events after a failed assign read r->legacy.change: keep raft busy a bit.
        node.barrier().result(WAIT)
    finally:
        node.close()
    print(dict(outcomes))
    print("assign ok")


if __name__ == "__main__":
    main(sys.argv[1])
