"""The release artifacts, as a user gets them: the manylinux wheel and the sdist.

Each is built by its documented command (scripts/build_wheel.sh,
scripts/build_sdist.sh), installed into a fresh virtualenv and made to run a
3-node cluster there. The wheel must carry libuv and liblz4 (and the core must
load them from the wheel); the sdist must carry the pinned libraft tarball and
build with no network. Also: the documentation site builds with warnings as errors.

These tests need the source tree (they build it), unlike the rest of the suite.
The wheel reuses scripts/setup.sh's build dir; the sdist compiles from scratch
(about 25 s on 2 cores).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the test venv (.venv/bin)

# Libraries a manylinux wheel may take from the system (PEP 600 / auditwheel policy;
# the ones a C++ extension can meet).
SYSTEM_LIBS = {"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1",
               "libstdc++.so.6", "libgcc_s.so.1", "ld-linux-x86-64.so.2",
               "ld-linux-aarch64.so.1"}

# A 3-node cluster on the uv engine, in one process; prints where libuv came from.
SMOKE = r'''
import sys, tempfile, time
import canonical_raft as raft

class Counter(raft.FSM):
    def __init__(self):
        self.value = 0
    def apply(self, command):
        self.value += int(command)
        return self.value
    def snapshot(self):
        return str(self.value).encode()
    def restore(self, snapshot):
        self.value = int(snapshot)

ports = [int(p) for p in sys.argv[1:4]]
cluster = {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(ports)}
config = raft.Config(election_timeout=0.5, heartbeat_timeout=0.05)
with tempfile.TemporaryDirectory() as d:
    nodes = [raft.Node(i, a, Counter(), f"{d}/n{i}", cluster=cluster, config=config).start()
             for i, a in cluster.items()]
    try:
        leader_id = nodes[0].wait_leader(timeout=30).id
        leader = nodes[leader_id - 1]
        results = [leader.apply(b"1").result(timeout=30) for _ in range(20)]
        assert results == list(range(1, 21)), results
        deadline = time.monotonic() + 30
        while any(n.fsm.value != 20 for n in nodes):
            assert time.monotonic() < deadline, [n.fsm.value for n in nodes]
            time.sleep(0.01)
    finally:
        for n in nodes:
            n.close()
maps = open("/proc/self/maps").read().split("\n")
libuv = sorted({line.split()[-1] for line in maps if "/libuv" in line})
print("version", raft.__version__, "libraft", raft.__libraft_version__)
print("libuv", *libuv)
print("smoke ok")
'''


def run(cmd, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
                             f"\n--- stderr\n{proc.stderr[-4000:]}")
    return proc


def fresh_venv(path: Path) -> Path:
    run([sys.executable, "-m", "venv", str(path)])
    return path / "bin" / "python"


def smoke(python: Path, cwd: Path) -> str:
    """Run the 3-node cluster with python (outside the source tree); its stdout."""
    script = cwd / "smoke.py"
    script.write_text(SMOKE)
    ports = [str(free_port()) for _ in range(3)]
    out = run([str(python), str(script), *ports], cwd=cwd, timeout=180).stdout
    assert "smoke ok" in out, out
    return out


def site_packages(python: Path) -> Path:
    return Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
                .stdout.strip())


def needed(path: Path) -> list[str]:
    out = run(["readelf", "-d", str(path)]).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


# ------------------------------------------------------------------ wheel

@pytest.fixture(scope="module")
def wheel() -> Path:
    proc = run(["bash", str(ROOT / "scripts" / "build_wheel.sh")], cwd=ROOT, timeout=600)
    path = ROOT / proc.stdout.strip().splitlines()[-1]
    assert path.is_file(), proc.stdout
    return path


def test_wheel_is_manylinux_and_carries_libuv_lz4(wheel: Path) -> None:
    tag = re.search(r"-(manylinux_\d+_\d+_\w+)\.whl$", wheel.name)
    assert tag, f"not a manylinux wheel: {wheel.name}"
    show = run([str(BIN / "auditwheel"), "show", str(wheel)]).stdout
    flat = " ".join(show.split())
    assert f'consistent with the following platform tag: "{tag.group(1)}"' in flat, show
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert "canonical_raft/py.typed" in names
    assert "canonical_raft/_core.pyi" in names
    libs = [n for n in names if n.startswith("canonical_raft.libs/")]
    assert any("/libuv-" in n for n in libs) and any("/liblz4-" in n for n in libs), libs


def test_wheel_in_fresh_venv(wheel: Path, tmp_path: Path) -> None:
    python = fresh_venv(tmp_path / "venv")
    # No index: the wheel must bring everything it needs.
    run([str(python), "-m", "pip", "install", "-q", "--no-index", "--disable-pip-version-check",
         str(wheel)])
    pkg = site_packages(python) / "canonical_raft"
    core = next(pkg.glob("_core.*.so"))
    # Every library the core needs is either in the wheel or allowed by the policy.
    vendored = {p.name for p in (pkg.parent / "canonical_raft.libs").iterdir()}
    outside = [n for n in needed(core) if n not in vendored and n not in SYSTEM_LIBS]
    assert not outside, f"the core needs libraries from outside the wheel: {outside}"
    # ldd: libuv and liblz4 resolve into the wheel, not to /usr/lib.
    ldd = run(["ldd", str(core)]).stdout
    for lib in ("libuv", "liblz4"):
        found = re.search(rf"^\s*{lib}\S* => (\S+)", ldd, re.MULTILINE)
        assert found, ldd
        assert Path(found.group(1)).resolve().parent == pkg.parent / "canonical_raft.libs", ldd
    out = smoke(python, tmp_path)
    assert f"{pkg.parent}/canonical_raft.libs/libuv-" in out, out


# ------------------------------------------------------------------ sdist

@pytest.fixture(scope="module")
def sdist() -> Path:
    proc = run(["bash", str(ROOT / "scripts" / "build_sdist.sh")], cwd=ROOT, timeout=600)
    path = ROOT / proc.stdout.strip().splitlines()[-1]
    assert path.is_file(), proc.stdout
    return path


def test_sdist_carries_the_checked_libraft_tarball(sdist: Path) -> None:
    script = (ROOT / "third_party" / "fetch_libraft.sh").read_text()
    version = re.search(r"^VERSION=(\S+)", script, re.MULTILINE).group(1)
    sha256 = re.search(r"^SHA256=(\S+)", script, re.MULTILINE).group(1)
    top = sdist.name[:-len(".tar.gz")]
    with tarfile.open(sdist) as tf:
        names = tf.getnames()
        member = tf.extractfile(f"{top}/third_party/.fetch/raft_{version}.orig.tar.gz")
        assert member is not None
        assert hashlib.sha256(member.read()).hexdigest() == sha256
    assert not [n for n in names if "/third_party/libraft-" in n], "unpacked libraft in sdist"
    assert f"{top}/PKG-INFO" in names


def build_env(python: Path) -> None:
    """The build requirements, installed the ordinary way (pip's cache, else PyPI)."""
    requires = ['scikit-build-core>=0.10', 'pybind11>=3.0', 'cmake>=3.20', 'ninja']
    run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *requires],
        timeout=300)


def offline(cmd: list[str]) -> list[str]:
    """cmd in a network namespace of its own (no network at all), when we may make one."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True, check=False).returncode == 0:
        return [unshare, "-n", *cmd]
    return cmd


def test_sdist_builds_offline_in_fresh_venv(sdist: Path, tmp_path: Path) -> None:
    python = fresh_venv(tmp_path / "venv")
    build_env(python)
    pip = [str(python), "-m", "pip", "install", "-q", "--no-index", "--no-build-isolation",
           "--disable-pip-version-check", str(sdist)]
    env = dict(os.environ, CMAKE_BUILD_PARALLEL_LEVEL="2")
    env.pop("CANONICAL_RAFT_LIBRAFT_TARBALL", None)

    # Without the libuv/lz4 development files, the error names what to install.
    no_deps = dict(env, PKG_CONFIG_LIBDIR=str(tmp_path / "none"), PKG_CONFIG_PATH="")
    proc = subprocess.run(offline(pip), capture_output=True, text=True, env=no_deps,
                          timeout=300, check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "missing build dependencies: libuv" in text and "libuv1-dev liblz4-dev" in text, text

    run(offline(pip), env=env, timeout=600)
    out = smoke(python, tmp_path)
    assert "libraft 0.22.1" in out and "/canonical_raft.libs/" not in out, out


# ------------------------------------------------------------------ docs

def test_docs_build_strict(tmp_path: Path) -> None:
    mkdocs = BIN / "mkdocs"
    if not mkdocs.exists():
        pytest.fail("mkdocs is not installed: scripts/test.sh installs it")
    run([str(mkdocs), "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"),
         "-d", str(tmp_path / "site")], cwd=ROOT, timeout=300)
    assert (tmp_path / "site" / "reference" / "index.html").exists()
