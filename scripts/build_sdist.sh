#!/usr/bin/env bash
# One command: a self-contained sdist of canonical-raft in dist/.
#
#   bash scripts/build_sdist.sh
#
# The sdist carries the pinned libraft 0.22.1 release tarball (fetched and
# sha256-checked by third_party/fetch_libraft.sh, as for a git build) and never
# the unpacked source. `pip install canonical_raft-X.tar.gz` then needs no network
# for libraft: it checks the tarball's sha256, unpacks it and applies
# third_party/fix_libraft.sh; it needs only a C/C++ compiler, pkg-config and the
# libuv and liblz4 headers (the build names the packages if they are missing).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ! -x .venv/bin/python ]]; then bash scripts/setup.sh >&2; fi
.venv/bin/python -m pip install -q --disable-pip-version-check "scikit-build-core>=0.10" >&2
tarball=$(bash third_party/fetch_libraft.sh --tarball)
rel=${tarball#"$PWD"/}

mkdir -p dist
# The PEP 517 hook itself (what `python -m build --sdist` calls); it prints the name.
sdist=dist/$(.venv/bin/python -c \
  'from scikit_build_core.build import build_sdist; print(build_sdist("dist"))' | tail -n1)
version=${sdist#dist/canonical_raft-}; version=${version%.tar.gz}

# A release artifact: refuse one that lacks the libraft tarball or carries its source.
listing=$(tar -tzf "$sdist")
grep -qx "canonical_raft-$version/$rel" <<<"$listing" || {
  echo "build_sdist: $sdist lacks $rel" >&2; exit 1; }
if grep -q "/third_party/libraft-" <<<"$listing"; then
  echo "build_sdist: $sdist carries the unpacked libraft source" >&2; exit 1
fi
echo "build_sdist: $sdist ($(du -k "$sdist" | cut -f1) KiB)" >&2
printf '%s\n' "$sdist"
