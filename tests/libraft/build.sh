#!/usr/bin/env bash
# Build tests/libraft/regress.c against the patched libraft source (fetched and
# fixed by third_party/fetch_libraft.sh) with AddressSanitizer + LeakSanitizer
# and libraft's assertions on. Usage: build.sh OUTPUT_BINARY
# Rebuilds only when regress.c or a libraft source file is newer than OUTPUT.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SRC="$ROOT/third_party/libraft-0.22.1"
OUT=$1

[[ -f "$SRC/include/raft.h.in" ]] || bash "$ROOT/third_party/fetch_libraft.sh" >&2
bash "$ROOT/third_party/fix_libraft.sh" "$SRC"
# raft.h is generated beside raft.h.in, as cmake/libraft.cmake does.
[[ -f "$SRC/include/raft.h" ]] ||
  sed 's/@enable_v0@/yes/' "$SRC/include/raft.h.in" >"$SRC/include/raft.h"

if [[ -x "$OUT" ]] && [[ -z $(find "$HERE/regress.c" "$SRC/src" "$SRC/include" -newer "$OUT" -print -quit) ]]; then
  exit 0
fi
mkdir -p "$(dirname "$OUT")"
defs=(-D_GNU_SOURCE -DV0_ENABLED -DLZ4_AVAILABLE)
[[ -f /usr/include/linux/aio_abi.h ]] && defs+=(-DHAVE_LINUX_AIO_ABI_H=1)
[[ -f /usr/include/linux/io_uring.h ]] && defs+=(-DHAVE_LINUX_IO_URING_H=1)
# shellcheck disable=SC2046
gcc -std=gnu11 -g -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -w \
  "${defs[@]}" -o "$OUT.tmp" "$HERE/regress.c" "$SRC"/src/*.c \
  $(pkg-config --cflags --libs libuv liblz4)
mv "$OUT.tmp" "$OUT"
