"""libraft itself, as we compile it: its own upstream test suite on our patched
copy, and our C regression tests for each fix in third_party/fix_libraft.sh.

- test_upstream_suite: third_party/libraft_suite.sh (autotools build of the
  fetched, patched source in a scratch dir; tmpfs and loop-mounted ext4 when
  root can mount them). Debug build (libraft's assertions on) in CI, about a
  minute; the ASan and release builds under -m slow.
- test_fix_regression[CASE]: tests/libraft/regress.c, built against the patched
  source with ASan + LSan + UBSan (tests/libraft/build.sh). Each case fails
  without its fix (an ASan/LSan report or a failed check); see the table in
  docs/reliability.md.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "third_party" / "libraft_suite.sh"
BUILD_SH = ROOT / "tests" / "libraft" / "build.sh"
REGRESS = ROOT / "build" / "libraft-regress" / "regress"
BINARIES = ["unit/core", "unit/uv", "integration/core", "integration/uv", "fuzzy/core"]

CASES = [
    "request-vote-flags",
    "configuration-bounds",
    "install-snapshot-configuration",
    "message-length",
    "install-snapshot-leak",
    "fixture-truncate",
    "snapshot-load-term",
    "io-error-follower",
    "io-error-leader",
    "io-error-truncate",
    "io-error-install-snapshot",
]


def run_suite(mode: str, timeout: float) -> dict[str, dict[str, int]]:
    if shutil.which("gcc") is None or shutil.which("make") is None:
        pytest.skip("gcc and make are needed to build libraft's suite")
    proc = subprocess.run(["bash", str(SUITE), "--mode", mode], capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode == 2:
        pytest.skip(proc.stderr.strip()[-500:])
    figures = {}
    for m in re.finditer(r"^suite: (\S+) passed=(\d+) failed=(\d+) skipped=(\d+) allowed=(\d+)$",
                         proc.stdout, re.M):
        figures[m[1]] = dict(zip(("passed", "failed", "skipped", "allowed"),
                                 map(int, m.groups()[1:])))
    report = f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, report
    assert sorted(figures) == sorted(BINARIES), report
    for name, f in figures.items():
        assert f["failed"] == 0 and f["passed"] > 0, (name, report)
    print(proc.stdout)  # the per-binary figures, with -s or -rA
    return figures


@pytest.mark.timeout(900)
def test_upstream_suite():
    figures = run_suite("debug", timeout=850)
    # Nothing is skipped wholesale: the core binaries run every test.
    assert figures["unit/core"]["skipped"] == 0
    assert figures["integration/core"]["skipped"] == 0
    assert figures["fuzzy/core"]["skipped"] == 0


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("mode", ["asan", "release"])
def test_upstream_suite_other_builds(mode):
    run_suite(mode, timeout=1750)


@pytest.fixture(scope="module")
def regress() -> Path:
    if shutil.which("gcc") is None or shutil.which("pkg-config") is None:
        pytest.skip("gcc and pkg-config are needed")
    proc = subprocess.run(["bash", str(BUILD_SH), str(REGRESS)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    listed = subprocess.run([str(REGRESS), "--list"], capture_output=True, text=True,
                            check=True).stdout.split()
    assert listed == CASES
    return REGRESS


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", CASES)
def test_fix_regression(regress, case):
    env = dict(os.environ,
               ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0",
               UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
    env.pop("LD_PRELOAD", None)
    env.pop("LIBRAFT_TRACE", None)
    proc = subprocess.run([str(regress), case], capture_output=True, text=True, timeout=240,
                          env=env)
    report = f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-6000:]}"
    assert "ERROR: AddressSanitizer" not in proc.stderr, report
    assert "ERROR: LeakSanitizer" not in proc.stderr, report
    assert "runtime error" not in proc.stderr, report
    assert proc.returncode == 0, report
    assert f"ok {case}" in proc.stdout, report
