"""Process handles for the benchmark: worker nodes, RSS, ports, cleanup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

from ..local_cluster import free_port


class BenchError(RuntimeError):
    """A benchmark run could not complete or did not verify: fail loudly."""


def free_ports(n: int) -> list[int]:
    """Bindable 127.0.0.1 ports below the ephemeral range (local_cluster.free_port)."""
    return [free_port() for _ in range(n)]


def rss_kib(pid: int) -> dict:
    """Current and peak resident set size of a process, in KiB."""
    out = {"rss_kib": None, "hwm_kib": None}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    out["rss_kib"] = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    out["hwm_kib"] = int(line.split()[1])
    except OSError:
        pass
    return out


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a process has used so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def tail(path: str, n: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - n))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


class Worker:
    """A node process running canonical_raft.bench._worker, driven by JSON lines."""

    def __init__(self, spec: dict, log_path: str) -> None:
        self.spec = spec
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "canonical_raft.bench._worker", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            text=True, bufsize=1)
        self.pid = self.proc.pid
        self._lock = threading.Lock()

    def call(self, cmd: str, timeout: float = 600, **args) -> dict:
        with self._lock:
            try:
                self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
                self.proc.stdin.flush()
            except OSError:
                raise BenchError(f"node {self.spec['id']} ({self.spec['system']}) died; "
                                 f"its log ends with:\n{tail(self.log_path)}") from None
            line = self.proc.stdout.readline()
        if not line:
            try:
                status = self.proc.wait(5)
            except subprocess.TimeoutExpired:
                status = None
            raise BenchError(f"node {self.spec['id']} ({self.spec['system']}) died during "
                             f"{cmd!r} (exit status {status}); its log ends with:\n"
                             f"{tail(self.log_path)}")
        reply = json.loads(line)
        if not reply.pop("ok"):
            raise BenchError(f"node {self.spec['id']} ({self.spec['system']}): {cmd} failed: "
                             f"{reply['error']}")
        return reply

    def call_async(self, cmd: str, **args) -> "Pending":
        return Pending(self, cmd, args)

    def rss(self) -> dict:
        return rss_kib(self.pid)

    def cpu(self) -> float | None:
        return cpu_seconds(self.pid)

    def stop(self, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            try:
                self.call("stop")
            except (BenchError, ValueError, OSError):
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_pipes()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        self._log.close()


class Pending:
    """A worker call running on a helper thread (to drive several nodes at once)."""

    def __init__(self, worker: Worker, cmd: str, args: dict) -> None:
        self.result: dict | None = None
        self.error: BaseException | None = None
        self._t = threading.Thread(target=self._run, args=(worker, cmd, args), daemon=True)
        self._t.start()

    def _run(self, worker: Worker, cmd: str, args: dict) -> None:
        try:
            self.result = worker.call(cmd, **args)
        except BaseException as exc:
            self.error = exc

    def get(self) -> dict:
        self._t.join()
        if self.error is not None:
            raise self.error
        return self.result


def terminate(proc: subprocess.Popen, timeout: float = 15, *, signalled: bool = False) -> None:
    """SIGTERM (unless already sent), wait, and kill if it does not exit in time."""
    if proc.poll() is None:
        if not signalled:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
