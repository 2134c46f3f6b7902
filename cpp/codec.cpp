#include "codec.h"

#include <cstring>

namespace craft {

namespace {
void put32(char*& p, uint32_t v) { std::memcpy(p, &v, 4); p += 4; }
void put64(char*& p, uint64_t v) { std::memcpy(p, &v, 8); p += 8; }
uint32_t get32(const char* p) { uint32_t v; std::memcpy(&v, p, 4); return v; }
uint64_t get64(const char* p) { uint64_t v; std::memcpy(&v, p, 8); return v; }
}  // namespace

void encode_envelope(char* out, uint64_t nonce, const std::vector<PendingCommand>& cmds,
                     size_t first, size_t last) {
    char* p = out;
    put32(p, kEnvelopeMagic);
    put32(p, static_cast<uint32_t>(last - first));
    put64(p, nonce);
    for (size_t i = first; i < last; i++) {
        const std::string& d = cmds[i].data;
        put64(p, cmds[i].request_id);
        put32(p, static_cast<uint32_t>(d.size()));
        put32(p, 0);
        std::memcpy(p, d.data(), d.size());
        size_t padded = pad8(d.size());
        std::memset(p + d.size(), 0, padded - d.size());
        p += padded;
    }
}

bool decode_envelope(std::string_view buf, uint64_t* nonce, std::vector<DecodedCommand>* out) {
    out->clear();
    if (buf.size() < kEnvelopeHeader || get32(buf.data()) != kEnvelopeMagic) return false;
    uint32_t count = get32(buf.data() + 4);
    *nonce = get64(buf.data() + 8);
    size_t off = kEnvelopeHeader;
    // Every command takes at least kCommandHeader bytes: bound count before reserving.
    if (count > (buf.size() - off) / kCommandHeader) return false;
    out->reserve(count);
    for (uint32_t i = 0; i < count; i++) {
        if (buf.size() - off < kCommandHeader) return false;
        uint64_t id = get64(buf.data() + off);
        uint32_t len = get32(buf.data() + off + 8);
        off += kCommandHeader;
        if (pad8(len) > buf.size() - off) return false;
        out->push_back({id, buf.substr(off, len)});
        off += pad8(len);
    }
    return off == buf.size();
}

}  // namespace craft
