#!/usr/bin/env bash
# One command: set up (system packages, libraft source, venv, build) and run the
# test suite against the installed package. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "pytest>=7" pytest-timeout pysyncobj
# The package lives under python/, never on sys.path: tests import the installed copy.
exec .venv/bin/python -m pytest "$@"
