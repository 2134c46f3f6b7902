"""The compiled core under AddressSanitizer + LeakSanitizer.

Builds _core with -DCANONICAL_RAFT_ASAN=ON into build/asan (cached: ninja only
rebuilds what changed), puts it beside a copy of the installed package's .py
files, and runs scripts of tests/asan/ with gcc's libasan preloaded: cycle.py
(3 nodes, applies, snapshots, restarts, error paths, close) and hostile.py
(bytes thrown at the raft port). Any ASan error or an unsuppressed leak
(tests/asan/lsan.supp lists the accepted ones) fails the test.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import canonical_raft as raft

pytestmark = [pytest.mark.asan, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "asan"
HERE = Path(__file__).resolve().parent / "asan"
CORE_NAME = "_core" + sysconfig.get_config_var("EXT_SUFFIX")


def gcc_runtime(name: str) -> str:
    """Absolute path of a gcc runtime library, or skip (gcc echoes the bare name
    when it has no such library)."""
    try:
        path = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("gcc is not available")
    if not os.path.isabs(path) or not os.path.exists(path):
        pytest.skip(f"gcc has no {name}")
    return path


def tool(name: str) -> str | None:
    # Prefer the venv's cmake/ninja (pip-installed build requirements).
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


@pytest.fixture(scope="module")
def asan_core() -> Path:
    gcc_runtime("libasan.so")
    cmake, ninja = tool("cmake"), tool("ninja")
    if cmake is None:
        pytest.skip("cmake is not available")
    pybind11_dir = subprocess.run([sys.executable, "-m", "pybind11", "--cmakedir"],
                                  capture_output=True, text=True, check=True).stdout.strip()
    BUILD.mkdir(parents=True, exist_ok=True)
    # Another test run may be building the same dir: take turns.
    with open(BUILD / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (BUILD / "CMakeCache.txt").exists():
            configure = [cmake, "-S", str(ROOT), "-B", str(BUILD),
                         "-DCMAKE_BUILD_TYPE=RelWithDebInfo", "-DCANONICAL_RAFT_ASAN=ON",
                         f"-Dpybind11_DIR={pybind11_dir}", f"-DPython_EXECUTABLE={sys.executable}"]
            if ninja is not None:
                configure += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
            run_build_step(configure, "configure")
        # Only the module: the benchmark's C ceiling is not under test here.
        run_build_step([cmake, "--build", str(BUILD), "--target", "_core", "-j2"], "build")
    core = BUILD / CORE_NAME
    assert b"__asan_init" in core.read_bytes(), f"{core} is not instrumented"
    return core


def run_build_step(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, (f"ASan {what} failed:\n{proc.stdout[-4000:]}\n"
                                  f"{proc.stderr[-4000:]}")


def asan_package(core: Path, dest: Path) -> Path:
    """The installed package's Python files with the ASan-built core; returns
    the directory to put first on PYTHONPATH."""
    installed = Path(raft.__file__).parent
    pkg = dest / "canonical_raft"
    shutil.copytree(installed, pkg, ignore=shutil.ignore_patterns("*.so", "__pycache__", "bin"))
    shutil.copy2(core, pkg / CORE_NAME)
    return dest


def run_under_asan(core: Path, tmp_path: Path, script: str, *args: str) -> str:
    """Run tests/asan/<script> on the ASan core; assert a clean exit; return stdout."""
    site = asan_package(core, tmp_path / "site")
    data = tmp_path / "data"
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(site),
        # libstdc++ too: ASan's __cxa_throw interceptor must resolve the real one
        # at start-up, before _core loads libstdc++ (else the first C++ throw aborts).
        LD_PRELOAD=f"{gcc_runtime('libasan.so')} {gcc_runtime('libstdc++.so')}",
        # allocator_may_return_null: a huge malloc returns NULL as glibc's does
        # (libraft handles that) instead of being reported as an ASan error.
        ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0:allocator_may_return_null=1",
        LSAN_OPTIONS=f"suppressions={HERE / 'lsan.supp'}:print_suppressions=1",
        # Every Python object from malloc, so ASan also guards buffers the core fills.
        PYTHONMALLOC="malloc",
    )
    proc = subprocess.run([sys.executable, str(HERE / script), str(data), *args], env=env,
                          capture_output=True, text=True, timeout=900, cwd=tmp_path)
    report = (f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\n"
              f"stderr:\n{proc.stderr[-12000:]}")
    assert "ERROR: AddressSanitizer" not in proc.stderr, report
    assert "ERROR: LeakSanitizer" not in proc.stderr, report
    assert proc.returncode == 0, report
    return proc.stdout


def test_three_node_cycle_is_clean_under_asan(asan_core, tmp_path):
    out = run_under_asan(asan_core, tmp_path, "cycle.py")
    assert f"core: {tmp_path / 'site' / 'canonical_raft' / CORE_NAME}" in out, out
    assert "cycle ok" in out, out


def test_hostile_bytes_on_raft_port_are_clean_under_asan(asan_core, tmp_path):
    assert "served 9" in run_under_asan(asan_core, tmp_path, "hostile.py")


def test_unterminated_handshake_address_is_clean_under_asan(asan_core, tmp_path):
    assert "served 1" in run_under_asan(asan_core, tmp_path, "hostile.py", "unterminated address")


def test_failed_assign_is_clean_under_asan(asan_core, tmp_path):
    # libraft kept a failed raft_assign request in r->legacy.change (fix_libraft.sh:
    # assign-change); under ASan the use after free is caught at its first read.
    assert "assign ok" in run_under_asan(asan_core, tmp_path, "assign_nospace.py")


def test_fixed_hostile_messages_are_clean_under_asan(asan_core, tmp_path):
    # request-vote-flags, configuration-bounds, message-length (fix_libraft.sh):
    # 8-byte and unbounded over-reads in the decoders before those fixes.
    names = ["32-byte RequestVote v1", "32-byte RequestVote v0",
             "short InstallSnapshot configuration", "64 MiB header"]
    assert "served 4" in run_under_asan(asan_core, tmp_path, "hostile.py", *names)


def test_asyncio_engine_bridge_is_clean_under_asan(asan_core, tmp_path):
    # cpp/io_bridge.cpp: load, appends, sends, frames decoded, snapshots put and
    # got, InstallSnapshot both ways, close cancelling what is pending.
    out = run_under_asan(asan_core, tmp_path, "bridge.py")
    print(out)
    assert "bridge ok" in out
