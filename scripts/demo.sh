#!/usr/bin/env bash
# One command: set up (system packages, libraft source, venv, build) and run the
# demo, a 3-process cluster that survives the loss of its leader.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m canonical_raft demo "$@"
