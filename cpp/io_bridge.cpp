#include "io_bridge.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

// libraft internals, reachable because libraft is compiled into this module:
// raft_uv's own wire codec (so engine-2 nodes talk to uv-engine nodes byte for
// byte), and the flush of completed client requests a custom io must run.
extern "C" {
int uvEncodeMessage(const struct raft_message* message, uv_buf_t** bufs, unsigned* n_bufs);
int uvDecodeMessage(uint8_t type, uint8_t version, const uv_buf_t* header,
                    struct raft_message* message, size_t* payload_len);
void uvDecodeEntriesBatch(uint8_t* batch, size_t offset, struct raft_entry* entries, unsigned n);
}

namespace craft {

// ---------------------------------------------------------------- executor

BridgeExecutor::BridgeExecutor() : thread_id_(std::this_thread::get_id()) {
    fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

BridgeExecutor::~BridgeExecutor() {
    if (fd_ >= 0) close(fd_);
}

bool BridgeExecutor::post(std::function<void()> fn) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!accepting_ || fd_ < 0) return false;
    queue_.push_back(std::move(fn));
    uint64_t one = 1;
    ssize_t n = write(fd_, &one, sizeof one);  // EAGAIN: the counter is already set
    (void)n;
    return true;
}

void BridgeExecutor::drain() {
    uint64_t count;
    ssize_t n = read(fd_, &count, sizeof count);
    (void)n;
    for (;;) {
        std::vector<std::function<void()>> batch;
        {
            std::lock_guard<std::mutex> lock(mu_);
            batch.swap(queue_);
        }
        if (batch.empty()) break;
        for (auto& fn : batch) fn();
    }
}

void BridgeExecutor::stop() {
    std::vector<std::function<void()>> dropped;
    {
        std::lock_guard<std::mutex> lock(mu_);
        accepting_ = false;
        dropped.swap(queue_);
    }
}

// ---------------------------------------------------------------- bridge

namespace {
Bridge* bridge_of(struct raft_io* io) { return static_cast<Bridge*>(io->impl); }

std::string encode_conf(const struct raft_configuration* conf) {
    struct raft_buffer buf {};
    if (raft_configuration_encode(conf, &buf) != 0) return std::string();
    std::string out(static_cast<const char*>(buf.base), buf.len);
    raft_free(buf.base);
    return out;
}

void* copy_to_raft(const std::string& data) {
    void* p = raft_malloc(std::max<size_t>(data.size(), 8));
    if (p != nullptr && !data.empty()) std::memcpy(p, data.data(), data.size());
    return p;
}
}  // namespace

Bridge::Bridge() : rng_(std::random_device{}()) {}

Bridge::~Bridge() = default;

void Bridge::init(struct raft_io* io, unsigned short capacity_kib) {
    io_ = io;
    io->version = 2;
    io->capacity = capacity_kib;
    io->impl = this;
    io->init = &Bridge::io_init;
    io->close = &Bridge::io_close;
    io->load = &Bridge::io_load;
    io->start = &Bridge::io_start;
    io->bootstrap = &Bridge::io_bootstrap;
    io->recover = &Bridge::io_recover;
    io->set_term = &Bridge::io_set_term;
    io->set_vote = &Bridge::io_set_vote;
    io->send = &Bridge::io_send;
    io->append = &Bridge::io_append;
    io->truncate = &Bridge::io_truncate;
    io->snapshot_put = &Bridge::io_snapshot_put;
    io->snapshot_get = &Bridge::io_snapshot_get;
    io->time = &Bridge::io_time;
    io->random = &Bridge::io_random;
}

std::vector<IoOp> Bridge::take_ops() {
    std::vector<IoOp> out;
    out.swap(ops_);
    return out;
}

bool Bridge::run_deferred() {
    bool any = false;
    while (!deferred_.empty()) {
        std::vector<std::function<void()>> batch;
        batch.swap(deferred_);
        for (auto& fn : batch) fn();
        any = true;
    }
    return any;
}

struct raft_snapshot* Bridge::make_snapshot(uint64_t index, uint64_t term, uint64_t conf_index,
                                            const std::string& conf, const std::string& data) {
    auto* s = static_cast<struct raft_snapshot*>(raft_malloc(sizeof(struct raft_snapshot)));
    if (s == nullptr) return nullptr;
    std::memset(s, 0, sizeof *s);
    s->index = index;
    s->term = term;
    s->configuration_index = conf_index;
    raft_configuration_init(&s->configuration);
    if (!conf.empty()) {
        struct raft_buffer buf {const_cast<char*>(conf.data()), conf.size()};
        if (raft_configuration_decode(&buf, &s->configuration) != 0) {
            raft_free(s);
            return nullptr;
        }
    }
    s->bufs = static_cast<struct raft_buffer*>(raft_malloc(sizeof(struct raft_buffer)));
    void* base = copy_to_raft(data);
    if (s->bufs == nullptr || base == nullptr) {
        raft_configuration_close(&s->configuration);
        raft_free(s->bufs);
        raft_free(base);
        raft_free(s);
        return nullptr;
    }
    s->bufs[0].base = base;
    s->bufs[0].len = data.size();
    s->n_bufs = 1;
    return s;
}

// An op that carries one number (term, vote, truncation index); never fails.
int Bridge::push_value(struct raft_io* io, int kind, uint64_t value) noexcept {
    IoOp op;
    op.kind = kind;
    op.a = value;
    bridge_of(io)->ops_.push_back(std::move(op));
    return 0;
}

int Bridge::io_init(struct raft_io*, raft_id, const char*) noexcept { return 0; }

int Bridge::io_load(struct raft_io* io, raft_term* term, raft_id* voted_for,
                    struct raft_snapshot** snapshot, raft_index* start_index,
                    struct raft_entry* entries[], size_t* n_entries) noexcept {
    Bridge* b = bridge_of(io);
    LoadedState& st = b->loaded_;
    *term = st.term;
    *voted_for = st.vote;
    *snapshot = nullptr;
    *start_index = st.start_index;
    *entries = nullptr;
    *n_entries = 0;
    if (st.has_snapshot) {
        *snapshot = b->make_snapshot(st.snapshot_index, st.snapshot_term, st.conf_index, st.conf,
                                     st.data);
        if (*snapshot == nullptr) return RAFT_NOMEM;
        b->snap_index_ = st.snapshot_index;
        b->snap_term_ = st.snapshot_term;
        b->snap_conf_index_ = st.conf_index;
        b->snap_conf_ = st.conf;
    }
    if (!st.entries.empty()) {
        size_t n = st.entries.size();
        auto* arr = static_cast<struct raft_entry*>(raft_calloc(n, sizeof(struct raft_entry)));
        if (arr == nullptr) return RAFT_NOMEM;
        for (size_t i = 0; i < n; i++) {
            auto& [t, type, data] = st.entries[i];
            arr[i].term = t;
            arr[i].type = static_cast<enum raft_entry_type>(type);
            arr[i].buf.base = copy_to_raft(data);  // batch NULL: raft frees each buffer
            arr[i].buf.len = data.size();
            arr[i].batch = nullptr;
            if (arr[i].buf.base == nullptr) return RAFT_NOMEM;
        }
        *entries = arr;
        *n_entries = n;
    }
    st = LoadedState();  // raft owns its copies now
    return 0;
}

int Bridge::io_start(struct raft_io* io, unsigned msecs, raft_io_tick_cb tick,
                     raft_io_recv_cb recv) noexcept {
    Bridge* b = bridge_of(io);
    b->tick_cb_ = tick;
    b->recv_cb_ = recv;
    IoOp op;
    op.kind = IoOp::kStart;
    op.a = msecs;
    b->ops_.push_back(std::move(op));
    return 0;
}

int Bridge::io_bootstrap(struct raft_io* io, const struct raft_configuration*) noexcept {
    // The backend bootstraps its store before raft_start (Python owns durability).
    std::snprintf(io->errmsg, RAFT_ERRMSG_BUF_SIZE, "bootstrap goes through the store");
    return RAFT_CANTBOOTSTRAP;
}

int Bridge::io_recover(struct raft_io* io, const struct raft_configuration*) noexcept {
    std::snprintf(io->errmsg, RAFT_ERRMSG_BUF_SIZE, "recover is not supported on this engine");
    return RAFT_INVALID;
}

int Bridge::io_set_term(struct raft_io* io, raft_term term) noexcept {
    return push_value(io, IoOp::kSetTerm, term);
}

int Bridge::io_set_vote(struct raft_io* io, raft_id id) noexcept {
    return push_value(io, IoOp::kSetVote, id);
}

int Bridge::io_send(struct raft_io* io, struct raft_io_send* req, const struct raft_message* msg,
                    raft_io_send_cb cb) noexcept {
    Bridge* b = bridge_of(io);
    req->cb = cb;
    uv_buf_t* bufs = nullptr;
    unsigned n = 0;
    int rv = uvEncodeMessage(msg, &bufs, &n);
    if (rv != 0) return rv;
    IoOp op;
    op.kind = IoOp::kSend;
    op.id = msg->server_id;
    op.address = msg->server_address != nullptr ? msg->server_address : "";
    size_t total = 0;
    for (unsigned i = 0; i < n; i++) total += bufs[i].len;
    op.data.reserve(total);
    for (unsigned i = 0; i < n; i++) op.data.append(bufs[i].base, bufs[i].len);
    raft_free(bufs[0].base);  // the rest alias raft's entries or snapshot
    raft_free(bufs);
    if (!b->closing_) b->ops_.push_back(std::move(op));
    // The frame is copied: raft may release the message (never synchronously).
    b->deferred_.push_back([req] { req->cb(req, 0); });
    return 0;
}

int Bridge::io_append(struct raft_io* io, struct raft_io_append* req,
                      const struct raft_entry entries[], unsigned n,
                      raft_io_append_cb cb) noexcept {
    Bridge* b = bridge_of(io);
    req->cb = cb;
    IoOp op;
    op.kind = IoOp::kAppend;
    op.id = b->next_id_++;
    op.entries.reserve(n);
    for (unsigned i = 0; i < n; i++) {
        op.entries.emplace_back(entries[i].term, static_cast<int>(entries[i].type),
                                std::string(static_cast<const char*>(entries[i].buf.base),
                                            entries[i].buf.len));
    }
    b->appends_[op.id] = req;
    b->ops_.push_back(std::move(op));
    return 0;
}

int Bridge::io_truncate(struct raft_io* io, raft_index index) noexcept {
    return push_value(io, IoOp::kTruncate, index);
}

int Bridge::io_snapshot_put(struct raft_io* io, unsigned trailing, struct raft_io_snapshot_put* req,
                            const struct raft_snapshot* s, raft_io_snapshot_put_cb cb) noexcept {
    Bridge* b = bridge_of(io);
    req->cb = cb;
    IoOp op;
    op.kind = IoOp::kSnapshotPut;
    op.id = b->next_id_++;
    op.a = trailing;
    op.b = s->index;
    op.c = s->term;
    op.d = s->configuration_index;
    op.conf = encode_conf(&s->configuration);
    size_t total = 0;
    for (unsigned i = 0; i < s->n_bufs; i++) total += s->bufs[i].len;
    op.data.reserve(total);
    for (unsigned i = 0; i < s->n_bufs; i++) {
        op.data.append(static_cast<const char*>(s->bufs[i].base), s->bufs[i].len);
    }
    b->snap_index_ = s->index;
    b->snap_term_ = s->term;
    b->snap_conf_index_ = s->configuration_index;
    b->snap_conf_ = op.conf;
    b->puts_[op.id] = req;
    b->ops_.push_back(std::move(op));
    return 0;
}

int Bridge::io_snapshot_get(struct raft_io* io, struct raft_io_snapshot_get* req,
                            raft_io_snapshot_get_cb cb) noexcept {
    Bridge* b = bridge_of(io);
    req->cb = cb;
    IoOp op;
    op.kind = IoOp::kSnapshotGet;
    op.id = b->next_id_++;
    b->gets_[op.id] = req;
    b->ops_.push_back(std::move(op));
    return 0;
}

raft_time Bridge::io_time(struct raft_io*) noexcept {
    using namespace std::chrono;
    return static_cast<raft_time>(
        duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count());
}

int Bridge::io_random(struct raft_io* io, int min, int max) noexcept {
    if (max <= min) return min;
    std::uniform_int_distribution<int> dist(min, max - 1);
    return dist(bridge_of(io)->rng_);
}

void Bridge::io_close(struct raft_io* io, raft_io_close_cb cb) noexcept {
    Bridge* b = bridge_of(io);
    b->closing_ = true;
    b->close_cb_ = cb;
    b->tick_cb_ = nullptr;
    b->recv_cb_ = nullptr;
    IoOp op;
    op.kind = IoOp::kClose;
    b->ops_.push_back(std::move(op));
    // Every pending request completes before the close callback (which frees
    // the log they use), later, outside this io method.
    b->deferred_.push_back([b] {
        auto appends = std::move(b->appends_);
        b->appends_.clear();
        for (auto& [id, req] : appends) req->cb(req, RAFT_CANCELED);
        auto puts = std::move(b->puts_);
        b->puts_.clear();
        for (auto& [id, req] : puts) req->cb(req, RAFT_CANCELED);
        auto gets = std::move(b->gets_);
        b->gets_.clear();
        for (auto& [id, req] : gets) {
            // A get must not fail; its send is dropped since we are closing.
            struct raft_snapshot* s = b->make_snapshot(b->snap_index_, b->snap_term_,
                                                       b->snap_conf_index_, b->snap_conf_, "");
            req->cb(req, s, 0);
        }
        raft_io_close_cb done = b->close_cb_;
        b->close_cb_ = nullptr;
        done(b->io_);
    });
}

// ---------------------------------------------------------------- completions

void Bridge::append_done(uint64_t id, int status) {
    auto it = appends_.find(id);
    if (it == appends_.end()) return;
    struct raft_io_append* req = it->second;
    appends_.erase(it);
    req->cb(req, status);
}

void Bridge::snapshot_put_done(uint64_t id, int status) {
    auto it = puts_.find(id);
    if (it == puts_.end()) return;
    struct raft_io_snapshot_put* req = it->second;
    puts_.erase(it);
    req->cb(req, status);
}

void Bridge::snapshot_get_done(uint64_t id, uint64_t index, uint64_t term, uint64_t conf_index,
                               const std::string& conf, const std::string& data) {
    auto it = gets_.find(id);
    if (it == gets_.end()) return;
    struct raft_io_snapshot_get* req = it->second;
    gets_.erase(it);
    struct raft_snapshot* s = make_snapshot(index, term, conf_index, conf, data);
    if (s == nullptr) {  // out of memory: answer with the metadata alone
        s = make_snapshot(snap_index_, snap_term_, snap_conf_index_, snap_conf_, "");
    }
    req->cb(req, s, 0);
}

void Bridge::tick() {
    if (tick_cb_ != nullptr) tick_cb_(io_);
}

int Bridge::recv(uint64_t server_id, const std::string& address, int type, int version,
                 const std::string& header, const std::string& payload) {
    if (type < 0 || type > 255 || version < 0 || version > 255 || header.empty()) {
        return RAFT_MALFORMED;
    }
    uv_buf_t hdr = uv_buf_init(const_cast<char*>(header.data()),
                               static_cast<unsigned>(header.size()));
    struct raft_message msg;
    std::memset(&msg, 0, sizeof msg);
    size_t payload_len = 0;
    int rv = uvDecodeMessage(static_cast<uint8_t>(type), static_cast<uint8_t>(version), &hdr,
                             &msg, &payload_len);
    if (rv != 0) return rv;
    auto discard = [&msg] {
        if (msg.type == RAFT_APPEND_ENTRIES) raft_free(msg.append_entries.entries);
        if (msg.type == RAFT_INSTALL_SNAPSHOT) raft_configuration_close(&msg.install_snapshot.conf);
    };
    if (payload_len != payload.size()) {
        discard();
        return RAFT_MALFORMED;
    }
    if (recv_cb_ == nullptr) {  // not started yet, or closing: drop it
        discard();
        return 0;
    }
    if (msg.type == RAFT_APPEND_ENTRIES && payload_len > 0) {
        void* batch = copy_to_raft(payload);
        if (batch == nullptr) {
            discard();
            return RAFT_NOMEM;
        }
        uvDecodeEntriesBatch(static_cast<uint8_t*>(batch), 0, msg.append_entries.entries,
                             msg.append_entries.n_entries);
    } else if (msg.type == RAFT_INSTALL_SNAPSHOT) {
        msg.install_snapshot.data.base = copy_to_raft(payload);
        msg.install_snapshot.data.len = payload.size();
        if (msg.install_snapshot.data.base == nullptr) {
            discard();
            return RAFT_NOMEM;
        }
    }
    msg.server_id = server_id;
    msg.server_address = address.c_str();  // raft copies it during the call
    recv_cb_(io_, &msg);
    return 0;
}

// The length of the payload that follows a header, or a negative RAFT_* code.
long long payload_length(int type, int version, const std::string& header) {
    if (type < 0 || type > 255 || version < 0 || version > 255 || header.empty()) {
        return -RAFT_MALFORMED;
    }
    uv_buf_t hdr = uv_buf_init(const_cast<char*>(header.data()),
                               static_cast<unsigned>(header.size()));
    struct raft_message msg;
    std::memset(&msg, 0, sizeof msg);
    size_t payload_len = 0;
    int rv = uvDecodeMessage(static_cast<uint8_t>(type), static_cast<uint8_t>(version), &hdr,
                             &msg, &payload_len);
    if (rv != 0) return -rv;
    if (msg.type == RAFT_APPEND_ENTRIES) raft_free(msg.append_entries.entries);
    if (msg.type == RAFT_INSTALL_SNAPSHOT) raft_configuration_close(&msg.install_snapshot.conf);
    return static_cast<long long>(payload_len);
}

std::string encode_configuration(const std::vector<std::tuple<uint64_t, std::string, int>>& servers) {
    struct raft_configuration conf;
    raft_configuration_init(&conf);
    for (const auto& [id, address, role] : servers) {
        if (raft_configuration_add(&conf, id, address.c_str(), role) != 0) {
            raft_configuration_close(&conf);
            return std::string();
        }
    }
    std::string out = encode_conf(&conf);
    raft_configuration_close(&conf);
    return out;
}

}  // namespace craft
