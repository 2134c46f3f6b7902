// The one place that includes libraft's headers, and where version differences live.
#pragma once

// raft.h has no extern "C", and its RAFT__ASSERT_COMPATIBILITY puts a struct
// definition inside sizeof() in a static_assert, which C++ rejects. Hide the C++
// static_assert feature macro so the header picks _Static_assert, and make that a
// no-op for the include (the same checks run when libraft itself is compiled as C).
#pragma push_macro("__cpp_static_assert")
#undef __cpp_static_assert
#define _Static_assert(cond, msg)
extern "C" {
#include <raft.h>
#include <raft/fixture.h>
#include <raft/uv.h>
}
#undef _Static_assert
#pragma pop_macro("__cpp_static_assert")

// Added to the pinned libraft by third_party/fix_libraft.sh (fix "app-snapshot"):
// persist a snapshot the application produced for an index it has applied. The
// buffers stay ours until cb; cb runs (on the loop thread) only if this returns 0.
extern "C" {
typedef void (*raft_legacy_snapshot_put_cb)(struct raft* r, void* data, raft_index index,
                                            int status);
int raft_legacy_snapshot_put(struct raft* r, raft_index index, struct raft_buffer bufs[],
                             unsigned n_bufs, void* data, raft_legacy_snapshot_put_cb cb);
// libraft internal (src/trail.c): the index of the last snapshot raft knows of.
raft_index TrailSnapshotIndex(const struct raft_trail* t);
// libraft internal (src/legacy.c): run the completed client requests' callbacks.
// raft_uv does it every loop iteration; a custom io must (ENGINE2_NOTES §2).
void LegacyFireCompletedRequests(struct raft* r);
}

#if !(RAFT_VERSION_MAJOR == 0 && RAFT_VERSION_MINOR >= 22)
#error "canonical-raft needs libraft >= 0.22 (see DESIGN.md, 'Libraft version')"
#endif

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the entry envelope is encoded in host order, which must be little-endian");

#include <cstring>
#include <string>

namespace craft {

// Hands a snapshot to libraft as one raft_malloc'd buffer array, as raft_fsm's
// snapshot() must (libraft frees both after the put).
inline int to_raft_snapshot(const std::string& data, struct raft_buffer* bufs[], unsigned* n) {
    auto* out = static_cast<struct raft_buffer*>(raft_malloc(sizeof(struct raft_buffer)));
    if (out == nullptr) return RAFT_NOMEM;
    out->len = data.size();
    out->base = raft_malloc(data.size() > 0 ? data.size() : 8);
    if (out->base == nullptr) {
        raft_free(out);
        return RAFT_NOMEM;
    }
    if (!data.empty()) std::memcpy(out->base, data.data(), data.size());
    *bufs = out;
    *n = 1;
    return 0;
}

}  // namespace craft
