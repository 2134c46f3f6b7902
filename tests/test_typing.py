"""Types, checked on the installed package (as users' type checkers see it).

- ``_core.pyi`` against the compiled module, with mypy's stubtest: every name the
  stub declares exists at runtime with the same kind, and the module has nothing
  the stub omits. (pybind11 functions carry no ``__text_signature__``, so stubtest
  cannot compare their parameters; the metaclass of pybind11 classes is an
  implementation detail the stub does not spell.)
- the package under ``mypy --strict`` with the project's configuration
  (pyproject.toml ``[tool.mypy]``, which lists what is excluded and why).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import canonical_raft

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"


def mypy(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300, check=False)


def test_core_stub_matches_the_compiled_module(tmp_path: Path) -> None:
    proc = mypy("mypy.stubtest", "canonical_raft._core", cwd=tmp_path)
    blocks = re.split(r"\n(?=error: )", proc.stdout.strip())
    errors = [b for b in blocks if b.startswith("error: ") and
              not re.match(r"error: \S+ is inconsistent, metaclass differs\n", b)]
    assert not errors, "\n\n".join(errors)
    assert "not checking stubs" not in proc.stdout, proc.stdout + proc.stderr


def test_package_is_clean_under_mypy_strict(tmp_path: Path) -> None:
    package = Path(canonical_raft.__file__).parent
    assert (package / "py.typed").exists()
    assert "site-packages" in str(package), f"not the installed package: {package}"
    proc = mypy("mypy", "--config-file", str(PYPROJECT), "--cache-dir", str(tmp_path / "cache"),
                "-p", "canonical_raft", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
