#!/usr/bin/env bash
# Our fixes to bugs of the libraft 0.22.1 release, applied to the fetched source
# (third_party/libraft-0.22.1, git-ignored) before it is compiled. Each fix is
# marked "canonical-raft fix" in the source, applied once, and checked.
# Usage: fix_libraft.sh SOURCE_DIR
set -euo pipefail
SRC=$1

fix() {  # fix NAME FILE PERL_SUBSTITUTION
  local name=$1 file="$SRC/src/$2" expr=$3
  grep -q "canonical-raft fix: $name" "$file" && return 0
  perl -0pi -e "$expr" "$file"
  grep -q "canonical-raft fix: $name" "$file" || {
    echo "fix_libraft: could not apply '$name' to $file" >&2; exit 1; }
}

# 1. takeSnapshotCb clears legacy.snapshot_pending before reading it, then starts
#    persisting a NULL request: SIGSEGV when an InstallSnapshot arrives while the
#    node takes its own snapshot. Read it first, then clear it.
fix snapshot-pending legacy.c \
  's/(\n[ \t]*)r->legacy\.snapshot_pending = NULL;(\n[ \t]*)persist = r->legacy\.snapshot_pending;/$1persist = r->legacy.snapshot_pending; \/* canonical-raft fix: snapshot-pending *\/$2r->legacy.snapshot_pending = NULL;/'

# 2. The handshake's address length comes from the peer: it was malloc'd unbounded
#    and later read with strlen() although nothing NUL-terminates it.
fix handshake-address uv_tcp_listen.c \
  's/(\n[ \t]*)h->address\.base = RaftHeapMalloc\(h->address\.len\);\n([ \t]*)if \(h->address\.base == NULL\) \{\n([ \t]*)return RAFT_NOMEM;\n([ \t]*)\}/$1\/* canonical-raft fix: handshake-address *\/$1if (h->address.len == 0 || h->address.len > 1024) {$1    return RAFT_MALFORMED;$1}$1h->address.base = RaftHeapMalloc(h->address.len + 1);\n$2if (h->address.base == NULL) {\n$3return RAFT_NOMEM;\n$4}$1((char *)h->address.base)[h->address.len] = 0;/'

# 3. The message decoders read their fixed fields without checking the header's
#    declared length: a short header from any TCP peer reads past the buffer
#    (SIGSEGV). Check that each type's fields, and AppendEntries' batch header,
#    fit before decoding.
fix header-length uv_encoding.c \
  's/(\nint uvDecodeMessage\(uint8_t type,)/\n\/* canonical-raft fix: header-length *\/\nstatic bool crHeaderFits(uint8_t type, uint8_t version, const uv_buf_t *h)\n{\n    const uint8_t *p = (const uint8_t *)h->base;\n    size_t len = h->len;\n    uint64_t n;\n    switch (type) {\n        case RAFT_REQUEST_VOTE:\n            return len >= 40 || (len >= 32 && (version == 1 || (version == 0 \&\& len == 32)));\n        case RAFT_REQUEST_VOTE_RESULT:\n            return len >= 24 || (len >= 16 && (version == 1 || (version == 0 \&\& len == 16)));\n        case RAFT_APPEND_ENTRIES:\n            if (len < 40) {\n                return false;\n            }\n            n = byteGet64(\&(const uint8_t *){p + 32});\n            return n <= (len - 40) \/ 16;\n        case RAFT_APPEND_ENTRIES_RESULT:\n            return len >= 28 || (len >= 26 && version == 1) || (len == 24 && version == 0);\n        case RAFT_INSTALL_SNAPSHOT:\n            if (len < 48) {\n                return false;\n            }\n            n = byteGet64(\&(const uint8_t *){p + 32});\n            \/* The configuration: format byte, server count, then at least 10 bytes\n             * (id, empty address, role) a server. *\/\n            if (n < 9 \|\| n > len - 48) {\n                return false;\n            }\n            return byteGet64(\&(const uint8_t *){p + 41}) <= (n - 9) \/ 10;\n        case RAFT_TIMEOUT_NOW:\n            return len >= 24;\n        default:\n            return true;\n    }\n}\n$1/' 

fix header-length-call uv_encoding.c \
  's/(\n    \*payload_len = 0;\n)/$1\n    if (!crHeaderFits(type, version, header)) { \/* canonical-raft fix: header-length-call *\/\n        return RAFT_MALFORMED;\n    }\n/'
