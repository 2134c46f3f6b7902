"""Small disks for the ``disk-full`` fault: one tmpfs per node's data dir.

``SmallDisks(cluster, mib)`` mounts a tmpfs of ``mib`` MiB on every node's
data dir (spares included) before any node starts; ``fill(node)`` leaves a few
KiB free on that node's disk with a filler file, ``free(node)`` deletes it.
``release(keep)`` unmounts them all, first copying each data dir beside it when
the run's artifacts are kept (a tmpfs forgets everything when unmounted).

Mounting needs root: ``mount()`` returns why it could not, and the runner then
leaves the fault out of the schedule (as it does restart faults on volatile
stores). Only uv-engine nodes get small disks: the asyncio engine's stores
have their own full-disk tests (MDBStore: ``NoSpaceError``).
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["SmallDisks"]

FILLER = "jepsen-filler"


class SmallDisks:
    def __init__(self, cluster: Any, mib: int) -> None:
        self.cluster = cluster
        self.mib = mib
        self.mounted: dict[int, Path] = {}
        self.full: set[int] = set()

    def mount(self) -> str | None:
        """Mount every uv node's tmpfs; None, or why it could not (nothing left mounted)."""
        if shutil.which("mount") is None:
            return "no mount command"
        for i, engine in sorted(self.cluster.engines.items()):
            if engine != "uv":
                continue
            path = Path(self.cluster.data_dir(i))
            path.mkdir(parents=True, exist_ok=True)
            proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.mib}m", "tmpfs",
                                   str(path)], capture_output=True, timeout=30)
            if proc.returncode != 0:
                self.release(keep=False)
                return f"cannot mount a tmpfs: {proc.stderr.decode().strip()}"
            self.mounted[i] = path
        return None if self.mounted else "no uv-engine node"

    def fill(self, node: int, rng: random.Random) -> int:
        """Leave nothing, or a page or two, free on the node's disk; the bytes left."""
        path = self.mounted[node]
        leave = rng.choice((0, 0, 4096, 8192))
        free = shutil.disk_usage(path).free
        with open(path / FILLER, "wb") as fh:
            chunk = b"\0" * (1 << 20)
            todo = max(0, free - leave)
            try:
                while todo > 0:
                    todo -= fh.write(chunk[:min(todo, len(chunk))])
            except OSError:  # the node took some meanwhile: full is full
                pass
        self.full.add(node)
        return shutil.disk_usage(path).free

    def free(self, node: int) -> None:
        (self.mounted[node] / FILLER).unlink(missing_ok=True)
        self.full.discard(node)

    def free_all(self) -> None:
        for node in list(self.full):
            self.free(node)

    def release(self, keep: bool) -> None:
        """Unmount every disk (the nodes are stopped); copy the data dirs out
        first when ``keep`` (to <data dir>.kept, the filler left behind)."""
        for node, path in sorted(self.mounted.items()):
            if keep:
                shutil.copytree(path, path.with_name(path.name + ".kept"),
                                ignore=shutil.ignore_patterns(FILLER), dirs_exist_ok=True)
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)
        self.mounted.clear()
        self.full.clear()
