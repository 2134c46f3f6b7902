#!/usr/bin/env bash
# Everything the demo and the tests need, on a fresh Debian 12/13 (or Ubuntu):
# system packages, the pinned libraft source, a virtualenv, and canonical-raft
# itself built and installed into it. Idempotent: a second run only rebuilds
# what changed. Usage: scripts/setup.sh [extra pip packages...]
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(build-essential pkg-config libuv1-dev liblz4-dev python3 python3-venv python3-dev dpkg-dev)

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "setup: need root (or sudo) to run: $*" >&2; exit 1; fi
}

missing=()
if command -v dpkg-query >/dev/null; then
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
fi
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

bash third_party/fetch_libraft.sh

PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q --disable-pip-version-check \
  "scikit-build-core>=0.10" "pybind11>=3.0" "cmake>=3.20" ninja "$@"
# A persistent build dir (pyproject: build-dir) keeps rebuilds incremental.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-build-isolation .
.venv/bin/python -c "import canonical_raft as r; print('setup: canonical-raft', r.__version__, 'with libraft', r.__libraft_version__)"
