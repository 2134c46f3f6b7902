#include "node.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <random>
#include <time.h>
#include <unordered_map>

namespace craft {

// Request wrappers: libraft's request struct first, so req->data can point back.
struct NodeImpl::ApplyReq {
    struct raft_apply req;
    NodeImpl* node;
    std::vector<uint64_t> ids;
};
struct NodeImpl::BarrierReq {
    struct raft_barrier req;
    NodeImpl* node;
    uint64_t id;
};
struct NodeImpl::ChangeReq {
    struct raft_change req;
    NodeImpl* node;
    uint64_t id;
};
struct NodeImpl::TransferReq {
    struct raft_transfer req;
    NodeImpl* node;
    uint64_t id;
};
// A snapshot on its way to disk: libraft reads `bufs` (pointing into `chunks`)
// until its callback, so the loop thread keeps this alive until then.
struct NodeImpl::SnapshotPut {
    uint64_t index;
    std::vector<std::string> chunks;
    std::vector<struct raft_buffer> bufs;
};

namespace {
uint64_t random_nonce() {
    std::random_device rd;
    uint64_t n = (uint64_t(rd()) << 32) ^ rd();
    return n == 0 ? 1 : n;
}

// libraft's TCP transport leaves Nagle's algorithm on, so small Raft messages can
// wait for delayed ACKs (tens of ms at p99). Its listen/connect are wrapped to set
// TCP_NODELAY on every stream. The wrapped functions and callbacks are libraft's
// own, the same for every node, so process-wide pointers suffice.
using ListenFn = int (*)(struct raft_uv_transport*, raft_uv_accept_cb);
using ConnectFn = int (*)(struct raft_uv_transport*, struct raft_uv_connect*, raft_id,
                          const char*, raft_uv_connect_cb);
std::atomic<ListenFn> g_listen{nullptr};
std::atomic<ConnectFn> g_connect{nullptr};
std::atomic<raft_uv_accept_cb> g_accept_cb{nullptr};
std::atomic<raft_uv_connect_cb> g_connect_cb{nullptr};

void set_nodelay(struct uv_stream_s* stream) {
    if (stream != nullptr && stream->type == UV_TCP) {
        uv_tcp_nodelay(reinterpret_cast<uv_tcp_t*>(stream), 1);
    }
}

void accept_nodelay(struct raft_uv_transport* t, raft_id id, const char* address,
                    struct uv_stream_s* stream) {
    set_nodelay(stream);
    g_accept_cb.load()(t, id, address, stream);
}

int listen_nodelay(struct raft_uv_transport* t, raft_uv_accept_cb cb) {
    g_accept_cb = cb;
    return g_listen.load()(t, &accept_nodelay);
}

void connect_nodelay_cb(struct raft_uv_connect* req, struct uv_stream_s* stream, int status) {
    if (status == 0) set_nodelay(stream);
    g_connect_cb.load()(req, stream, status);
}

int connect_nodelay(struct raft_uv_transport* t, struct raft_uv_connect* req, raft_id id,
                    const char* address, raft_uv_connect_cb cb) {
    g_connect_cb = cb;
    return g_connect.load()(t, req, id, address, &connect_nodelay_cb);
}

void wrap_transport(struct raft_uv_transport* t) {
    g_listen = t->listen;
    g_connect = t->connect;
    t->listen = &listen_nodelay;
    t->connect = &connect_nodelay;
}

uint64_t now_ns() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

// Benchmark instrument: raft_uv's append is wrapped (like the transport above)
// to time the local disk write. Only while some node has timing on; the times
// are process-wide and kept for the io they came from.
using AppendFn = int (*)(struct raft_io*, struct raft_io_append*, const struct raft_entry[],
                         unsigned, raft_io_append_cb);
std::atomic<AppendFn> g_append{nullptr};
std::atomic<int> g_timing_nodes{0};
std::mutex g_append_mu;  // leaf lock
std::unordered_map<struct raft_io_append*, raft_io_append_cb> g_append_cbs;
std::atomic<const struct raft_io*> g_append_io{nullptr};
std::atomic<uint64_t> g_append_start{0};
std::atomic<uint64_t> g_append_done{0};

void append_timed_cb(struct raft_io_append* req, int status) {
    g_append_done = now_ns();
    raft_io_append_cb cb;
    {
        std::lock_guard<std::mutex> lock(g_append_mu);
        auto it = g_append_cbs.find(req);
        cb = it->second;
        g_append_cbs.erase(it);
    }
    cb(req, status);
}

int append_timed(struct raft_io* io, struct raft_io_append* req, const struct raft_entry entries[],
                 unsigned n, raft_io_append_cb cb) {
    if (g_timing_nodes.load(std::memory_order_relaxed) == 0) {
        return g_append.load()(io, req, entries, n, cb);
    }
    {
        std::lock_guard<std::mutex> lock(g_append_mu);
        g_append_cbs[req] = cb;
    }
    g_append_io = io;
    g_append_start = now_ns();
    int rv = g_append.load()(io, req, entries, n, &append_timed_cb);
    if (rv != 0) {
        std::lock_guard<std::mutex> lock(g_append_mu);
        g_append_cbs.erase(req);
    }
    return rv;
}

// Early rejections after which the caller still owns the buffer (LIBRAFT_NOTES rule 5).
bool apply_rejected_early(int rv) {
    return rv == RAFT_NOTLEADER || rv == RAFT_NOSPACE || rv == RAFT_MALFORMED ||
           rv == RAFT_CANTCHANGE;
}
}  // namespace

NodeImpl::NodeImpl(std::shared_ptr<Loop> loop, NodeOptions opts)
    : opts_(std::move(opts)), nonce_(random_nonce()),
      closed_future_(closed_promise_.get_future().share()) {
    exec_ = loop;
    loop_ = std::move(loop);
}

NodeImpl::NodeImpl(std::shared_ptr<BridgeExecutor> exec, NodeOptions opts)
    : opts_(std::move(opts)), nonce_(random_nonce()),
      closed_future_(closed_promise_.get_future().share()) {
    exec_ = exec;
    bridge_exec_ = std::move(exec);
    bridge_ = std::make_unique<Bridge>();
}

NodeImpl::~NodeImpl() { set_timing(false); }

bool NodeImpl::run_on_loop(std::function<void()> fn) { return exec_->post(std::move(fn)); }

void NodeImpl::bridge_call(const std::function<void()>& fn) {
    fn();
    while (bridge_->run_deferred()) {
    }
    if (started_ && !closing_) {
        // Status first: a callback's reader (e.g. transfer()) sees the new leader.
        publish_status(false);
        LegacyFireCompletedRequests(&raft_);
        if (!closing_) publish_status(false);
    }
}

// ---------------------------------------------------------------- start

void NodeImpl::start_blocking() {
    std::promise<CoreError> result;
    auto fut = result.get_future();
    auto self = shared_from_this();
    if (bridge_) {  // the asyncio engine starts on its event loop thread
        if (!exec_->on_loop_thread()) {
            throw CoreError{RAFT_INVALID, "start the node on its event loop's thread"};
        }
        bridge_call([&] { do_start(&result); });
    } else if (!run_on_loop([self, &result] { self->do_start(&result); })) {
        throw CoreError{RAFT_SHUTDOWN, "the loop thread is stopped"};
    }
    CoreError err = fut.get();
    if (err.code != 0) throw err;
}

void NodeImpl::do_start(std::promise<CoreError>* result) {
    if (closing_ || close_requested_) {
        result->set_value({RAFT_SHUTDOWN, "node is closed"});
        return;
    }
    tracer_.impl = this;
    tracer_.version = 2;
    tracer_.emit = &NodeImpl::on_trace;
    int rv;
    if (bridge_) {
        bridge_->init(&io_, 65535);  // capacity: the store does its own accounting
    } else if (!init_uv_io(result)) {
        return;
    }

    fsm_.version = 1;

    fsm_.data = this;
    fsm_.apply = &NodeImpl::fsm_apply;
    fsm_.snapshot = &NodeImpl::fsm_snapshot;
    fsm_.restore = &NodeImpl::fsm_restore;

    rv = raft_init(&raft_, &io_, &fsm_, opts_.id, opts_.address.c_str());
    if (rv != 0) {
        std::string msg = raft_errmsg(&raft_);
        close_io();
        result->set_value({rv, msg});
        return;
    }
    raft_.data = this;
    // raft_uv seeds libraft's election PRNG from the clock, so nodes started in one
    // process together draw identical election timeouts and can split the vote
    // forever. Seed each node from the OS.
    raft_seed(&raft_, static_cast<unsigned>(random_nonce()));
    // Silence the default stderr tracer: it formats every trace line even when off.
    raft_.tracer = opts_.trace_level > 0 ? &tracer_ : nullptr;
    raft_set_election_timeout(&raft_, opts_.election_timeout_ms);
    raft_set_heartbeat_timeout(&raft_, opts_.heartbeat_timeout_ms);
    raft_set_install_snapshot_timeout(&raft_, opts_.install_snapshot_timeout_ms);
    // The applier takes snapshots itself (snapshot_put); libraft's own trigger,
    // which would ask for one on this thread, never fires.
    raft_set_snapshot_threshold(&raft_, UINT_MAX);
    raft_set_snapshot_trailing(&raft_, opts_.snapshot_trailing);
    raft_set_pre_vote(&raft_, opts_.pre_vote);
    raft_set_max_inflight_entries(&raft_, opts_.max_inflight_entries);
    raft_set_max_catch_up_rounds(&raft_, opts_.max_catch_up_rounds);
    raft_set_max_catch_up_round_duration(&raft_, opts_.max_catch_up_round_duration_ms);
    // raft_uv reports capacity as prepared segments plus free space in open ones;
    // the default threshold (4 MiB) starves small segments (LIBRAFT_NOTES rule 10),
    // and a whole segment still fails bursts while the next one is being prepared.
    size_t threshold_kib = opts_.segment_size / 1024 / 4;
    if (threshold_kib > 4096) threshold_kib = 4096;
    raft_set_capacity_threshold(&raft_, static_cast<unsigned short>(threshold_kib));

    if (!opts_.bootstrap.empty()) {
        struct raft_configuration conf;
        raft_configuration_init(&conf);
        for (const auto& [sid, addr] : opts_.bootstrap) {
            rv = raft_configuration_add(&conf, sid, addr.c_str(), RAFT_VOTER);
            if (rv != 0) break;
        }
        if (rv == 0) rv = raft_bootstrap(&raft_, &conf);
        raft_configuration_close(&conf);
        if (rv != 0 && rv != RAFT_CANTBOOTSTRAP) {  // CANTBOOTSTRAP: state exists already
            fail_start(result, rv, std::string("bootstrap: ") + raft_errmsg(&raft_));
            return;
        }
    }
    rv = raft_start(&raft_);
    if (rv != 0) {
        fail_start(result, rv, raft_errmsg(&raft_));
        return;
    }
    started_ = true;
    start_snapshot_index_ = TrailSnapshotIndex(&raft_.trail);
    self_ = shared_from_this();
    if (!bridge_) {  // the asyncio engine publishes after every entry (bridge_call)
        uv_check_init(loop_->uv(), &check_);
        check_.data = this;
        uv_check_start(&check_, &NodeImpl::on_check);
    }
    publish_status(true);
    result->set_value({0, ""});
}

bool NodeImpl::init_uv_io(std::promise<CoreError>* result) {
    transport_.version = 1;  // 0.22 rejects anything else
    transport_.data = nullptr;
    int rv = raft_uv_tcp_init(&transport_, loop_->uv());
    if (rv != 0) {
        result->set_value({rv, std::string("transport: ") + transport_.errmsg});
        return false;
    }
    wrap_transport(&transport_);
    if (!opts_.bind_address.empty()) {
        rv = raft_uv_tcp_set_bind_address(&transport_, opts_.bind_address.c_str());
        if (rv != 0) {
            raft_uv_tcp_close(&transport_);
            result->set_value({rv, "invalid bind address " + opts_.bind_address});
            return false;
        }
    }
    rv = raft_uv_init(&io_, loop_->uv(), opts_.data_dir.c_str(), &transport_);
    if (rv != 0) {
        std::string msg = io_.errmsg;
        raft_uv_tcp_close(&transport_);
        result->set_value({rv, msg});
        return false;
    }
    g_append = io_.append;  // hop timing (bench): wraps raft_uv's append
    io_.append = &append_timed;
    raft_uv_set_auto_recovery(&io_, opts_.auto_recovery);
    raft_uv_set_segment_size(&io_, opts_.segment_size);
    raft_uv_set_connect_retry_delay(&io_, opts_.connect_retry_delay_ms);
    raft_uv_set_tracer(&io_, opts_.trace_level > 0 ? &tracer_ : nullptr);
    return true;
}

void NodeImpl::close_io() {
    if (!bridge_) {
        raft_uv_close(&io_);
        raft_uv_tcp_close(&transport_);
    }
}

void NodeImpl::fail_start(std::promise<CoreError>* result, int code, const std::string& msg) {
    // raft_init succeeded: only raft_close may release the io now. The promise is
    // fulfilled from its callback, once every handle is closed.
    struct Closing {
        NodeImpl* node;
        std::promise<CoreError>* result;
        CoreError err;
    };
    auto* closing = new Closing{this, result, {code, msg}};
    raft_.data = closing;
    self_ = shared_from_this();
    raft_close(&raft_, [](struct raft* r) noexcept {
        auto* c = static_cast<Closing*>(r->data);
        c->node->close_io();
        auto keep = std::move(c->node->self_);
        c->result->set_value(c->err);
        delete c;
    });
}

// ---------------------------------------------------------------- close

void NodeImpl::request_close() {
    if (close_requested_.exchange(true)) return;
    auto self = shared_from_this();
    if (!run_on_loop([self] { self->do_close(); })) {
        // The loop is gone: nothing of ours is on it any more.
        closed_ = true;
        closed_promise_.set_value();
    }
}

void NodeImpl::close_blocking() {
    request_close();
    closed_future_.wait();
}

void NodeImpl::do_close() {
    if (closing_) return;
    closing_ = true;
    std::vector<PendingCommand> pending;
    {
        std::lock_guard<std::mutex> lock(submit_mu_);
        pending.swap(pending_);
    }
    std::vector<uint64_t> ids;
    for (auto& c : pending) ids.push_back(c.request_id);
    if (!ids.empty()) fail_commands(std::move(ids), RAFT_SHUTDOWN, "node closed", false);
    if (!started_) {
        finish_close();
        return;
    }
    if (bridge_) {
        close_pending_ = 1;
    } else {
        close_pending_ = 2;
        uv_close(reinterpret_cast<uv_handle_t*>(&check_), &NodeImpl::on_check_closed);
    }
    // Requests still in flight complete inside raft_close with LEADERSHIPLOST.
    raft_close(&raft_, &NodeImpl::on_raft_closed);
}

void NodeImpl::on_check_closed(uv_handle_t* handle) noexcept {
    auto* self = static_cast<NodeImpl*>(handle->data);
    if (--self->close_pending_ == 0) self->finish_close();
}

void NodeImpl::on_raft_closed(struct raft* r) noexcept {
    auto* self = static_cast<NodeImpl*>(r->data);
    self->close_io();
    if (--self->close_pending_ == 0) self->finish_close();
}

void NodeImpl::finish_close() {
    auto keep = std::move(self_);  // `this` may be freed when keep goes out of scope
    {
        std::lock_guard<std::mutex> lock(status_mu_);
        status_.state = RAFT_UNAVAILABLE;
        status_.leader_id = 0;
        status_.leader_address.clear();
    }
    Item item;
    item.kind = kClosed;
    queue_.push(std::move(item));
    if (bridge_exec_) bridge_exec_->stop();
    closed_ = true;
    closed_promise_.set_value();
}

// ---------------------------------------------------------------- commands

bool NodeImpl::submit(uint64_t request_id, const char* data, size_t len) {
    uint64_t cmds = inflight_cmds_.load(std::memory_order_relaxed);
    if (cmds > 0 && (cmds >= opts_.max_pending_commands ||
                     inflight_bytes_.load(std::memory_order_relaxed) + len >
                         opts_.max_pending_bytes)) {
        return false;  // concurrent submitters may overshoot by a few: a soft bound
    }
    inflight_cmds_.fetch_add(1, std::memory_order_relaxed);
    inflight_bytes_.fetch_add(len, std::memory_order_relaxed);
    std::vector<PendingCommand> one;
    one.push_back({request_id, std::string(data, len)});  // copied before the lock
    return enqueue(std::move(one));
}

bool NodeImpl::submit_many(uint64_t first_id, std::vector<std::string>&& commands,
                           size_t bytes) {
    uint64_t n = commands.size();
    if (n == 0) return true;
    uint64_t cmds = inflight_cmds_.load(std::memory_order_relaxed);
    if (cmds > 0 && (cmds + n > opts_.max_pending_commands ||
                     inflight_bytes_.load(std::memory_order_relaxed) + bytes >
                         opts_.max_pending_bytes)) {
        return false;  // all or nothing
    }
    inflight_cmds_.fetch_add(n, std::memory_order_relaxed);
    inflight_bytes_.fetch_add(bytes, std::memory_order_relaxed);
    std::vector<PendingCommand> batch;
    batch.reserve(n);
    for (uint64_t i = 0; i < n; i++) batch.push_back({first_id + i, std::move(commands[i])});
    return enqueue(std::move(batch));
}

// Appends to the submission queue under one lock; the first submission since
// the last flush wakes the loop thread. Always returns true: if the loop is
// gone, the commands fail (kApplyFailed) like any other.
bool NodeImpl::enqueue(std::vector<PendingCommand>&& cmds) {
    bool post = false;
    {
        std::lock_guard<std::mutex> lock(submit_mu_);
        if (pending_.empty()) {
            pending_.swap(cmds);
        } else {
            pending_.reserve(pending_.size() + cmds.size());
            for (auto& c : cmds) pending_.push_back(std::move(c));
        }
        if (!flush_posted_) {
            flush_posted_ = true;
            post = true;
        }
    }
    if (post) {
        auto self = shared_from_this();
        if (!run_on_loop([self] { self->flush(); })) {
            std::vector<PendingCommand> pending;
            {
                std::lock_guard<std::mutex> lock(submit_mu_);
                pending.swap(pending_);
                flush_posted_ = false;
            }
            std::vector<uint64_t> ids;
            for (auto& c : pending) ids.push_back(c.request_id);
            fail_commands(std::move(ids), RAFT_SHUTDOWN, "node closed", false);
        }
    }
    return true;
}

void NodeImpl::release(uint64_t commands, uint64_t bytes) {
    inflight_cmds_.fetch_sub(commands, std::memory_order_relaxed);
    inflight_bytes_.fetch_sub(bytes, std::memory_order_relaxed);
}

void NodeImpl::set_timing(bool on) {
    if (timing_.exchange(on) != on) g_timing_nodes.fetch_add(on ? 1 : -1);
}

NodeImpl::HopTimes NodeImpl::hop_times() const {
    bool ours = g_append_io.load() == &io_;
    return {t_flush_.load(), ours ? g_append_start.load() : 0, ours ? g_append_done.load() : 0,
            t_commit_.load()};
}

Item NodeImpl::leader_item(int kind) const {
    Item item;
    item.kind = kind;
    if (started_ && !closing_) {
        raft_id id = 0;
        const char* address = nullptr;
        raft_leader(const_cast<struct raft*>(&raft_), &id, &address);
        item.leader_id = id;
        if (address != nullptr) item.leader_address = address;
        item.applied = raft_last_applied(const_cast<struct raft*>(&raft_));
    }
    return item;
}

void NodeImpl::fail_commands(std::vector<uint64_t> ids, int code, const std::string& msg,
                             bool indeterminate) {
    Item item = leader_item(kApplyFailed);
    item.code = code;
    item.msg = msg;
    item.indeterminate = indeterminate;
    item.ids = std::move(ids);
    queue_.push(std::move(item));
}

void NodeImpl::flush() {
    std::vector<PendingCommand> cmds;
    {
        std::lock_guard<std::mutex> lock(submit_mu_);
        cmds.swap(pending_);
        flush_posted_ = false;
    }
    if (cmds.empty()) return;
    if (timing_.load(std::memory_order_relaxed)) t_flush_ = now_ns();
    auto all_ids = [&cmds] {
        std::vector<uint64_t> ids;
        ids.reserve(cmds.size());
        for (auto& c : cmds) ids.push_back(c.request_id);
        return ids;
    };
    if (closing_ || !started_) {
        fail_commands(all_ids(), RAFT_SHUTDOWN, "node closed", false);
        return;
    }
    if (raft_state(&raft_) != RAFT_LEADER) {
        fail_commands(all_ids(), RAFT_NOTLEADER, "not the leader", false);
        return;
    }
    // Pack into entries of about max_entry_bytes each (a single larger command
    // gets an entry of its own).
    size_t first = 0, bytes = kEnvelopeHeader;
    for (size_t i = 0; i < cmds.size(); i++) {
        size_t sz = envelope_command_size(cmds[i].data.size());
        if (i > first && bytes + sz > opts_.max_entry_bytes) {
            propose(cmds, first, i, bytes);
            first = i;
            bytes = kEnvelopeHeader;
        }
        bytes += sz;
    }
    propose(cmds, first, cmds.size(), bytes);
}

void NodeImpl::propose(std::vector<PendingCommand>& cmds, size_t first, size_t last,
                       size_t bytes) {
    std::vector<uint64_t> ids;
    ids.reserve(last - first);
    for (size_t i = first; i < last; i++) ids.push_back(cmds[i].request_id);
    struct raft_buffer buf;
    buf.len = bytes;
    buf.base = raft_malloc(bytes);
    if (buf.base == nullptr) {
        fail_commands(std::move(ids), RAFT_NOMEM, "out of memory", false);
        return;
    }
    encode_envelope(static_cast<char*>(buf.base), nonce_, cmds, first, last);
    for (size_t i = first; i < last; i++) std::string().swap(cmds[i].data);
    auto* req = new ApplyReq{};
    req->req.data = req;
    req->node = this;
    req->ids = std::move(ids);
    int rv = raft_apply(&raft_, &req->req, &buf, 1, &NodeImpl::on_apply);
    if (rv != 0) {
        // Early rejections leave the buffer ours; after any other failure the
        // legacy layer has freed it already (a leak beats a double free).
        if (apply_rejected_early(rv)) raft_free(buf.base);
        fail_commands(std::move(req->ids), rv, raft_errmsg(&raft_), false);
        delete req;
        return;
    }
    entries_proposed_++;
    commands_proposed_ += last - first;
}

void NodeImpl::on_apply(struct raft_apply* r, int status, void*) noexcept {
    auto* req = static_cast<ApplyReq*>(r->data);
    // Success is reported by the applier when it applies the entry; a failure
    // here means the entry may or may not commit later (LIBRAFT_NOTES rule 15).
    if (status != 0) {
        NodeImpl* self = req->node;
        std::string msg = self->closing_ ? "node closed while the command was in flight"
                                         : raft_strerror(status);
        self->fail_commands(std::move(req->ids), self->closing_ ? RAFT_SHUTDOWN : status, msg,
                            true);
    }
    delete req;
}

// ---------------------------------------------------------------- other requests

void NodeImpl::done(uint64_t request_id, int code, const std::string& msg) {
    Item item = leader_item(kRequestDone);
    item.a = request_id;
    item.code = code;
    item.msg = msg;
    if (closing_ && code == RAFT_LEADERSHIPLOST) {
        // raft_close fails what is in flight with LEADERSHIPLOST; say what
        // happened, as for applies.
        item.code = RAFT_SHUTDOWN;
        item.msg = "node closed while the request was in flight";
    }
    queue_.push(std::move(item));
}

#define CRAFT_ON_LOOP(REQUEST_ID, BODY)                                       \
    do {                                                                      \
        auto self = shared_from_this();                                       \
        uint64_t rid_ = (REQUEST_ID);                                         \
        if (!run_on_loop([=] {                                                \
                if (self->closing_ || !self->started_) {                      \
                    self->done(rid_, RAFT_SHUTDOWN, "node closed");           \
                    return;                                                   \
                }                                                             \
                BODY                                                          \
            })) {                                                             \
            done(rid_, RAFT_SHUTDOWN, "node closed");                         \
        }                                                                     \
    } while (0)

void NodeImpl::barrier(uint64_t request_id) {
    CRAFT_ON_LOOP(request_id, {
        auto* req = new BarrierReq{};
        req->req.data = req;
        req->node = self.get();
        req->id = rid_;
        int rv = raft_barrier(&self->raft_, &req->req, &NodeImpl::on_barrier);
        if (rv != 0) {
            self->done(rid_, rv, raft_errmsg(&self->raft_));
            delete req;
        }
    });
}

void NodeImpl::on_barrier(struct raft_barrier* r, int status) noexcept {
    auto* req = static_cast<BarrierReq*>(r->data);
    req->node->done(req->id, status, status ? raft_strerror(status) : "");
    delete req;
}

void NodeImpl::add(uint64_t request_id, uint64_t id, const std::string& address) {
    CRAFT_ON_LOOP(request_id, {
        auto* req = new ChangeReq{};
        req->req.data = req;
        req->node = self.get();
        req->id = rid_;
        int rv = raft_add(&self->raft_, &req->req, id, address.c_str(), &NodeImpl::on_change);
        if (rv != 0) {
            self->done(rid_, rv, raft_errmsg(&self->raft_));
            delete req;
        }
    });
}

void NodeImpl::assign(uint64_t request_id, uint64_t id, int role) {
    CRAFT_ON_LOOP(request_id, {
        auto* req = new ChangeReq{};
        req->req.data = req;
        req->node = self.get();
        req->id = rid_;
        int rv = raft_assign(&self->raft_, &req->req, id, role, &NodeImpl::on_change);
        if (rv != 0) {
            self->done(rid_, rv, raft_errmsg(&self->raft_));
            delete req;
        }
    });
}

void NodeImpl::remove(uint64_t request_id, uint64_t id) {
    CRAFT_ON_LOOP(request_id, {
        auto* req = new ChangeReq{};
        req->req.data = req;
        req->node = self.get();
        req->id = rid_;
        int rv = raft_remove(&self->raft_, &req->req, id, &NodeImpl::on_change);
        if (rv != 0) {
            self->done(rid_, rv, raft_errmsg(&self->raft_));
            delete req;
        }
    });
}

void NodeImpl::on_change(struct raft_change* r, int status) noexcept {
    auto* req = static_cast<ChangeReq*>(r->data);
    req->node->done(req->id, status, status ? raft_strerror(status) : "");
    delete req;
}

void NodeImpl::transfer(uint64_t request_id, uint64_t id) {
    CRAFT_ON_LOOP(request_id, {
        auto* req = new TransferReq{};
        req->req.data = req;
        req->node = self.get();
        req->id = rid_;
        int rv = raft_transfer(&self->raft_, &req->req, id, &NodeImpl::on_transfer);
        if (rv != 0) {
            self->done(rid_, rv, raft_errmsg(&self->raft_));
            delete req;
        }
    });
}

void NodeImpl::on_transfer(struct raft_transfer* r) noexcept {
    // libraft reports no status: the caller compares the leader before and after.
    auto* req = static_cast<TransferReq*>(r->data);
    req->node->done(req->id, 0, "");
    delete req;
}

#undef CRAFT_ON_LOOP

// ---------------------------------------------------------------- snapshots

void NodeImpl::snapshot_put(uint64_t index, std::vector<std::string>&& chunks) {
    auto put = std::make_shared<SnapshotPut>();
    put->index = index;
    put->chunks = std::move(chunks);
    auto self = shared_from_this();
    if (!run_on_loop([self, put] { self->do_snapshot_put(put); })) {
        snapshot_done(index, RAFT_SHUTDOWN, "node closed");
    }
}

void NodeImpl::do_snapshot_put(const std::shared_ptr<SnapshotPut>& put) {
    if (closing_ || !started_) {
        snapshot_done(put->index, RAFT_SHUTDOWN, "node closed");
        return;
    }
    for (auto& chunk : put->chunks) {
        if (!chunk.empty()) put->bufs.push_back({&chunk[0], chunk.size()});
    }
    if (put->bufs.empty()) {
        snapshot_done(put->index, RAFT_INVALID, "empty snapshot");
        return;
    }
    auto* holder = new std::shared_ptr<SnapshotPut>(put);
    int rv = raft_legacy_snapshot_put(&raft_, put->index, put->bufs.data(),
                                      static_cast<unsigned>(put->bufs.size()), holder,
                                      &NodeImpl::on_snapshot_put);
    if (rv != 0) {
        delete holder;
        const char* why = rv == RAFT_BUSY       ? "a snapshot is being taken or installed"
                          : rv == RAFT_NOTFOUND ? "the index was compacted or superseded"
                                                : raft_strerror(rv);
        snapshot_done(put->index, rv, why);
    }
}

void NodeImpl::on_snapshot_put(struct raft* r, void* data, raft_index index, int status) noexcept {
    auto* self = static_cast<NodeImpl*>(r->data);
    auto* holder = static_cast<std::shared_ptr<SnapshotPut>*>(data);
    const char* why = status == 0              ? ""
                      : status == RAFT_BUSY     ? "superseded by a snapshot from the leader"
                      : status == RAFT_CANCELED ? "node closed"
                                                : raft_strerror(status);
    self->snapshot_done(index, status, why);
    delete holder;  // libraft is done with the buffers
}

void NodeImpl::snapshot_done(uint64_t index, int code, const std::string& msg) {
    Item item;
    item.kind = kSnapshotDone;
    item.index = index;
    item.code = code;
    item.msg = msg;
    queue_.push(std::move(item));
}

// ---------------------------------------------------------------- queries

Status NodeImpl::status() const {
    std::lock_guard<std::mutex> lock(status_mu_);
    return status_;
}

Stats NodeImpl::stats_blocking() {
    std::promise<Stats> result;
    auto fut = result.get_future();
    auto self = shared_from_this();
    auto collect = [self, &result] {
        Stats s;
        if (!self->started_ || self->closing_) {
            result.set_value(s);
            return;
        }
        self->publish_status(false);
        s.ok = true;
        s.status = self->status();
        const struct raft_configuration& conf = self->raft_.configuration;
        for (unsigned i = 0; i < conf.n; i++) {
            s.configuration.push_back(
                {conf.servers[i].id, conf.servers[i].address, conf.servers[i].role});
        }
        s.configuration_committed_index = self->raft_.configuration_committed_index;
        s.snapshot_threshold = self->opts_.snapshot_threshold;
        s.entries_proposed = self->entries_proposed_;
        s.commands_proposed = self->commands_proposed_;
        result.set_value(std::move(s));
    };
    // On the asyncio engine's own thread, waiting for a posted closure would
    // wait forever: run it here.
    bool posted = exec_->on_loop_thread() ? (collect(), true) : run_on_loop(collect);
    if (!posted) throw CoreError{RAFT_SHUTDOWN, "node is closed"};
    Stats s = fut.get();
    if (!s.ok) throw CoreError{RAFT_SHUTDOWN, "node is closed"};
    return s;
}

void NodeImpl::publish_status(bool force_event) {
    Status s;
    s.state = static_cast<int>(raft_state(&raft_));
    s.term = raft_current_term(&raft_);
    raft_id leader = 0;
    const char* address = nullptr;
    raft_leader(&raft_, &leader, &address);
    s.leader_id = leader;
    if (address != nullptr) s.leader_address = address;
    s.last_index = raft_last_index(&raft_);
    s.commit_index = raft_commit_index(&raft_);
    s.last_applied = raft_last_applied(&raft_);
    s.voted_for = raft_voted_for(&raft_);
    s.self_role = raft_.configuration.n == 0 ? Status::kNoConfiguration : Status::kNotMember;
    for (unsigned i = 0; i < raft_.configuration.n; i++) {
        if (raft_.configuration.servers[i].id == opts_.id) {
            s.self_role = raft_.configuration.servers[i].role;
            break;
        }
    }
    bool changed = force_event || s.state != last_published_.state ||
                   s.term != last_published_.term || s.leader_id != last_published_.leader_id ||
                   s.self_role != last_published_.self_role;
    {
        std::lock_guard<std::mutex> lock(status_mu_);
        status_ = s;
    }
    if (changed) {
        Item item;
        item.kind = kEvent;
        item.state = s.state;
        item.term = s.term;
        item.leader_id = s.leader_id;
        item.leader_address = s.leader_address;
        item.applied = s.last_applied;
        item.code = s.self_role;  // kEvent carries this node's role in `code`
        queue_.push(std::move(item));
    }
    if (changed) last_pushed_applied_ = std::max(last_pushed_applied_, s.last_applied);
    if (s.last_applied > last_pushed_applied_) {
        // Barrier and configuration entries advance raft without reaching the FSM;
        // tell the applier so its last_applied (and wait_applied) keep up.
        Item item;
        item.kind = kAdvance;
        item.applied = s.last_applied;
        queue_.push(std::move(item));
        last_pushed_applied_ = s.last_applied;
    }
    last_published_ = std::move(s);
}

void NodeImpl::on_check(uv_check_t* handle) noexcept {
    auto* self = static_cast<NodeImpl*>(handle->data);
    if (!self->closing_) self->publish_status(false);
}

// ---------------------------------------------------------------- FSM glue

int NodeImpl::fsm_apply(struct raft_fsm* fsm, const struct raft_buffer* buf,
                        void** result) noexcept {
    // Must return 0: a non-zero return is fatal in libraft (LIBRAFT_NOTES rule 6).
    // An allocation failure here terminates the process rather than diverge.
    *result = nullptr;
    auto* self = static_cast<NodeImpl*>(fsm->data);
    Item item;
    item.kind = kCommand;
    item.index = raft_last_applied(&self->raft_) + 1;
    item.applied = item.index;
    item.data.assign(static_cast<const char*>(buf->base), buf->len);
    if (self->timing_.load(std::memory_order_relaxed)) self->t_commit_ = now_ns();
    uint64_t applied = item.applied;
    self->queue_.push(std::move(item));
    self->last_pushed_applied_ = applied;
    return 0;
}

int NodeImpl::fsm_snapshot(struct raft_fsm*, struct raft_buffer*[], unsigned*) noexcept {
    // libraft's own trigger is off (threshold UINT_MAX): snapshots come from the
    // applier through snapshot_put. Answering here would mean waiting for it.
    return RAFT_BUSY;
}

int NodeImpl::fsm_restore(struct raft_fsm* fsm, struct raft_buffer* buf) noexcept {
    // On success the buffer is ours to free. The applier restores in queue order,
    // after every entry before the snapshot.
    auto* self = static_cast<NodeImpl*>(fsm->data);
    Item item;
    item.kind = kRestore;
    item.index = self->started_ ? raft_commit_index(&self->raft_) : 0;
    item.data.assign(static_cast<const char*>(buf->base), buf->len);
    raft_free(buf->base);
    self->queue_.push(std::move(item));
    return 0;
}

void NodeImpl::on_trace(struct raft_tracer* t, int type, const void* info) noexcept {
    auto* self = static_cast<NodeImpl*>(t->impl);
    if (type != RAFT_TRACER_DIAGNOSTIC || info == nullptr) return;
    const auto* i = static_cast<const struct raft_tracer_info*>(info);
    if (i->diagnostic.level > self->opts_.trace_level) return;
    Item item;
    item.kind = kLog;
    item.code = i->diagnostic.level;
    item.msg = std::string(i->diagnostic.file ? i->diagnostic.file : "?") + ":" +
               std::to_string(i->diagnostic.line) + " " +
               (i->diagnostic.message ? i->diagnostic.message : "");
    self->queue_.push(std::move(item));
}

}  // namespace craft
