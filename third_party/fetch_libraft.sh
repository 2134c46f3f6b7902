#!/usr/bin/env bash
# Fetch the pinned libraft release source (0.22.1) into third_party/libraft-0.22.1.
#
# Debian/Ubuntu: `apt-get source` of Debian 13's `raft` source package, through a
# private apt state folder that reuses the mirror this machine is configured with.
# Elsewhere: set CANONICAL_RAFT_LIBRAFT_TARBALL to a downloaded release tarball.
# From an sdist: the tarball travels inside it (third_party/.fetch/, put there by
# scripts/build_sdist.sh) and is used as is: no network, no apt.
# Either way the tarball's sha256 must match; nothing fetched is ever committed.
#
# Usage: fetch_libraft.sh            unpack (once) and apply fix_libraft.sh
#        fetch_libraft.sh --tarball  only make sure the checked tarball is in
#                                    third_party/.fetch/ and print its path
set -euo pipefail

VERSION=0.22.1
SHA256=7e45b6f24f3671c9bfd5b146814493f87cb2e560712bd469c1f5969a4b94291a
HERE=$(cd "$(dirname "$0")" && pwd)
DEST="$HERE/libraft-$VERSION"
WORK="$HERE/.fetch"

apply_fixes() {
  bash "$HERE/fix_libraft.sh" "$DEST"
}

MODE=${1:-}
tarball="$WORK/raft_$VERSION.orig.tar.gz"
# An unpacked sdist has PKG-INFO at its root (a git checkout has not).
IN_SDIST=0
[[ -f "$HERE/../PKG-INFO" ]] && IN_SDIST=1

if [[ "$MODE" != --tarball && -f "$DEST/include/raft.h.in" ]]; then
  apply_fixes
  exit 0
fi

mkdir -p "$WORK"

configured_mirror() {
  # First Debian archive URI of the machine's apt configuration (deb822 or one-line).
  local uri
  uri=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
        awk '{print $2}' | grep -v security | head -n1 || true)
  if [[ -z "$uri" && -f /etc/apt/sources.list ]]; then
    uri=$(grep -E '^deb ' /etc/apt/sources.list | grep -v security |
          sed -E 's/^deb (\[[^]]*\] )?//' | awk '{print $1}' | head -n1 || true)
  fi
  printf '%s' "$uri"
}

fetch_with_apt() {
  local mirror apt="$WORK/apt"
  mirror=$(configured_mirror)
  [[ -n "$mirror" ]] || { echo "fetch_libraft: no Debian mirror in the apt configuration" >&2; return 1; }
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial"
  echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" >"$apt/sources.list"
  local opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
              -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
              -o "APT::Sandbox::User=root" -qq)
  apt-get "${opts[@]}" update >&2
  (cd "$WORK" && apt-get "${opts[@]}" source --download-only "raft=$VERSION-1" >&2)
}

if [[ -n "${CANONICAL_RAFT_LIBRAFT_TARBALL:-}" ]]; then
  cp "$CANONICAL_RAFT_LIBRAFT_TARBALL" "$tarball"
elif [[ ! -f "$tarball" && $IN_SDIST == 1 ]]; then
  echo "fetch_libraft: this sdist lacks the libraft $VERSION release tarball" \
       "(third_party/.fetch/raft_$VERSION.orig.tar.gz); it was not built by" \
       "scripts/build_sdist.sh. Set CANONICAL_RAFT_LIBRAFT_TARBALL to the tarball." >&2
  exit 1
elif [[ ! -f "$tarball" ]]; then
  command -v apt-get >/dev/null || {
    echo "fetch_libraft: no apt-get here; download the libraft $VERSION release tarball and set CANONICAL_RAFT_LIBRAFT_TARBALL" >&2
    exit 1
  }
  fetch_with_apt
fi

echo "$SHA256  $tarball" | sha256sum -c --quiet - || {
  echo "fetch_libraft: sha256 mismatch for $tarball" >&2
  rm -f "$tarball"
  exit 1
}

if [[ "$MODE" == --tarball ]]; then
  printf '%s\n' "$tarball"
  exit 0
fi

rm -rf "$DEST.tmp" && mkdir -p "$DEST.tmp"
tar -xzf "$tarball" -C "$DEST.tmp" --strip-components=1
mv "$DEST.tmp" "$DEST"
apply_fixes
echo "fetch_libraft: libraft $VERSION source in $DEST" >&2
