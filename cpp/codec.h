// The envelope that packs many commands into one libraft log entry.
//
// libraft 0.22's legacy raft_apply takes one buffer per entry and raft_uv needs
// every entry length to be a multiple of 8, so commands queued while the loop is
// busy travel together:
//
//   u32 magic | u32 count | u64 nonce                (16-byte header)
//   count x ( u64 request_id | u32 length | u32 0 | bytes | zero pad to 8 )
//
// `nonce` names the proposing NodeCore instance, so that only the node that
// proposed a command resolves its future (indexes can be reused after a leader
// change; nonces never are).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace craft {

constexpr uint32_t kEnvelopeMagic = 0x31465243;  // "CRF1"
constexpr size_t kEnvelopeHeader = 16;
constexpr size_t kCommandHeader = 16;

inline size_t pad8(size_t n) { return (n + 7) & ~size_t(7); }
inline size_t envelope_command_size(size_t len) { return kCommandHeader + pad8(len); }

struct PendingCommand {
    uint64_t request_id;
    std::string data;
};

// Writes the envelope of cmds[first, last) into out (which must hold `size` bytes,
// the sum of the header and envelope_command_size of each command).
void encode_envelope(char* out, uint64_t nonce, const std::vector<PendingCommand>& cmds,
                     size_t first, size_t last);

struct DecodedCommand {
    uint64_t request_id;
    std::string_view data;
};

// Returns false if buf is not a well-formed envelope (nothing is then trusted).
bool decode_envelope(std::string_view buf, uint64_t* nonce, std::vector<DecodedCommand>* out);

}  // namespace craft
