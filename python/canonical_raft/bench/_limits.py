"""Physical limits of the machine, measured in the same run as the systems."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from ._stats import percentiles

_ECHO = r"""
import socket, sys
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while True:
    data = conn.recv(65536)
    if not data:
        break
    conn.sendall(data)
"""


def fsync_append(directory: str, seconds: float) -> dict:
    """Append 4 KiB to a file and fsync it, one at a time, on ``directory``'s filesystem."""
    path = os.path.join(directory, "fsync-probe")
    block = b"\xa5" * 4096
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    samples = []
    try:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            os.write(fd, block)
            os.fsync(fd)
            samples.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        os.unlink(path)
    return percentiles(samples)


def dsync_prealloc(directory: str, seconds: float) -> dict:
    """4 KiB O_DSYNC writes into a preallocated file: what raft_uv's segment writer does."""
    path = os.path.join(directory, "dsync-probe")
    size = 16 * 1024 * 1024
    block = b"\x5a" * 4096
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DSYNC, 0o644)
    samples = []
    try:
        os.posix_fallocate(fd, 0, size)
        os.fsync(fd)
        off = 0
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            os.pwrite(fd, block, off)
            samples.append(time.perf_counter() - t0)
            off = (off + 4096) % size
    finally:
        os.close(fd)
        os.unlink(path)
    return percentiles(samples)


def loopback_rtt(seconds: float, size: int = 64) -> dict:
    """Round trip of ``size`` bytes over TCP on 127.0.0.1 to another process."""
    echo = subprocess.Popen([sys.executable, "-c", _ECHO], stdout=subprocess.PIPE, text=True)
    try:
        port = int(echo.stdout.readline())
        samples = []
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            msg = b"r" * size
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                s.sendall(msg)
                got = 0
                while got < size:
                    got += len(s.recv(size - got))
                samples.append(time.perf_counter() - t0)
        return percentiles(samples)
    finally:
        echo.wait(10)
        echo.stdout.close()


def filesystem_of(directory: str) -> str:
    """The filesystem type of ``directory`` (from /proc/mounts), e.g. 'ext4'."""
    best, fstype = "", "?"
    real = os.path.realpath(directory)
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                mnt = parts[1]
                if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
                    best, fstype = mnt, parts[2]
    except OSError:
        pass
    return fstype
