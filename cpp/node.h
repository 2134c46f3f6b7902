// NodeImpl: one libraft server (struct raft + raft_uv io + TCP transport + the
// FSM glue) living on a Loop. Public methods are thread-safe and never block,
// except start_blocking/close_blocking/stats_blocking, which the caller must
// invoke without the GIL. Everything else runs on the loop thread, which never
// waits for Python or for the applier.
#pragma once

#include <atomic>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "applier.h"
#include "codec.h"
#include "compat.h"
#include "io_bridge.h"
#include "loop.h"

namespace craft {

struct NodeOptions {
    uint64_t id = 0;
    std::string address;
    std::string bind_address;  // empty: listen on `address`
    std::string data_dir;
    std::vector<std::pair<uint64_t, std::string>> bootstrap;  // empty: do not bootstrap
    unsigned election_timeout_ms = 1000;
    unsigned heartbeat_timeout_ms = 100;
    unsigned install_snapshot_timeout_ms = 10000;
    unsigned snapshot_threshold = 8192;
    unsigned snapshot_trailing = 8192;
    unsigned connect_retry_delay_ms = 200;
    unsigned max_inflight_entries = 32;
    unsigned max_catch_up_rounds = 10;
    unsigned max_catch_up_round_duration_ms = 5000;
    bool pre_vote = true;
    bool auto_recovery = false;
    size_t segment_size = 8 * 1024 * 1024;
    size_t max_entry_bytes = 1024 * 1024;  // soft cap of one packed entry
    int trace_level = 0;                   // forward libraft traces up to this level (0: none)
    // Backpressure: commands submitted and not yet resolved (applied here, or
    // failed). Past either bound submit() refuses; one command is always admitted.
    uint64_t max_pending_commands = 100000;
    uint64_t max_pending_bytes = 256u << 20;
};

struct Status {
    int state = 0;  // RAFT_UNAVAILABLE .. RAFT_LEADER
    uint64_t term = 0;
    uint64_t leader_id = 0;
    std::string leader_address;
    uint64_t last_index = 0;
    uint64_t commit_index = 0;
    uint64_t last_applied = 0;
    uint64_t voted_for = 0;
    // This node's role in the configuration raft holds (RAFT_STANDBY..SPARE),
    // kNotMember if that configuration does not list it (it was removed), or
    // kNoConfiguration if raft holds none yet (a joiner not yet added).
    static constexpr int kNotMember = -1;
    static constexpr int kNoConfiguration = -2;
    int self_role = kNoConfiguration;
};

struct ServerInfo {
    uint64_t id;
    std::string address;
    int role;
};

struct Stats {
    bool ok = false;  // false: the node is not running
    Status status;
    std::vector<ServerInfo> configuration;
    uint64_t configuration_committed_index = 0;
    uint64_t snapshot_threshold = 0;
    uint64_t entries_proposed = 0;
    uint64_t commands_proposed = 0;
};

// A failure that the binding turns into canonical_raft's exception for `code`.
struct CoreError {
    int code;
    std::string message;
};

class NodeImpl : public std::enable_shared_from_this<NodeImpl> {
public:
    // The uv engine: raft_uv on `loop`'s thread.
    NodeImpl(std::shared_ptr<Loop> loop, NodeOptions opts);
    // The asyncio engine: the Bridge io, on the thread that made `exec`.
    NodeImpl(std::shared_ptr<BridgeExecutor> exec, NodeOptions opts);
    ~NodeImpl();

    // Blocking (release the GIL first). Throws CoreError.
    void start_blocking();
    void close_blocking();
    Stats stats_blocking();

    // Non-blocking, thread-safe. Outcomes arrive through queue().
    // submit() returns false, and queues nothing, past the backpressure bounds.
    bool submit(uint64_t request_id, const char* data, size_t len);
    // Many commands under one lock and one wake-up of the loop thread, with the
    // request ids first_id, first_id + 1, ...: all admitted, or none (false) if
    // they would take the pending counts past the bounds while any is pending.
    bool submit_many(uint64_t first_id, std::vector<std::string>&& commands, size_t bytes);
    // The applier: that many submitted commands (of that many bytes) resolved.
    void release(uint64_t commands, uint64_t bytes);
    uint64_t pending_commands() const { return inflight_cmds_.load(); }
    uint64_t pending_bytes() const { return inflight_bytes_.load(); }
    // The applier: persist `chunks` as the snapshot of the FSM at `index`, which
    // it has applied. The outcome arrives as a kSnapshotDone item.
    void snapshot_put(uint64_t index, std::vector<std::string>&& chunks);
    // The index of the snapshot raft_start loaded (0: none). Valid after start.
    uint64_t start_snapshot_index() const { return start_snapshot_index_; }
    // Benchmark instrument (one command at a time): CLOCK_MONOTONIC ns of the
    // last flush on the loop thread, the last local append started and done, and
    // the last committed entry handed to the applier. Off: nothing is recorded.
    void set_timing(bool on);
    struct HopTimes {
        uint64_t flush_ns, append_start_ns, append_done_ns, commit_ns;
    };
    HopTimes hop_times() const;
    void barrier(uint64_t request_id);
    void add(uint64_t request_id, uint64_t id, const std::string& address);
    void assign(uint64_t request_id, uint64_t id, int role);
    void remove(uint64_t request_id, uint64_t id);
    void transfer(uint64_t request_id, uint64_t id);
    void request_close();

    // Asyncio engine, event loop thread: run fn (an entry into raft: a
    // completion, a tick, a message, the posted closures), then the callbacks
    // deferred out of io methods, the completed requests, and the status.
    void bridge_call(const std::function<void()>& fn);
    Bridge* bridge() { return bridge_.get(); }
    BridgeExecutor* bridge_executor() { return bridge_exec_.get(); }

    Status status() const;
    ApplyQueue& queue() { return queue_; }
    uint64_t nonce() const { return nonce_; }
    const NodeOptions& options() const { return opts_; }
    bool closed() const { return closed_.load(); }

private:
    struct ApplyReq;
    struct BarrierReq;
    struct ChangeReq;
    struct TransferReq;
    struct SnapshotPut;

    // Loop thread.
    void do_start(std::promise<CoreError>* result);
    void fail_start(std::promise<CoreError>* result, int code, const std::string& msg);
    bool init_uv_io(std::promise<CoreError>* result);
    void close_io();
    void do_close();
    void finish_close();
    void flush();
    void propose(std::vector<PendingCommand>& cmds, size_t first, size_t last, size_t bytes);
    void fail_commands(std::vector<uint64_t> ids, int code, const std::string& msg,
                       bool indeterminate);
    void done(uint64_t request_id, int code, const std::string& msg);
    void do_snapshot_put(const std::shared_ptr<SnapshotPut>& put);
    void snapshot_done(uint64_t index, int code, const std::string& msg);
    void publish_status(bool force_event);
    bool run_on_loop(std::function<void()> fn);
    bool enqueue(std::vector<PendingCommand>&& cmds);
    Item leader_item(int kind) const;

    static int fsm_apply(struct raft_fsm* fsm, const struct raft_buffer* buf, void** result) noexcept;
    static int fsm_snapshot(struct raft_fsm* fsm, struct raft_buffer* bufs[], unsigned* n) noexcept;
    static int fsm_restore(struct raft_fsm* fsm, struct raft_buffer* buf) noexcept;
    static void on_check(uv_check_t* handle) noexcept;
    static void on_trace(struct raft_tracer* t, int type, const void* info) noexcept;
    static void on_apply(struct raft_apply* req, int status, void* result) noexcept;
    static void on_barrier(struct raft_barrier* req, int status) noexcept;
    static void on_change(struct raft_change* req, int status) noexcept;
    static void on_transfer(struct raft_transfer* req) noexcept;
    static void on_snapshot_put(struct raft* r, void* data, raft_index index, int status) noexcept;
    static void on_raft_closed(struct raft* r) noexcept;
    static void on_check_closed(uv_handle_t* handle) noexcept;

    std::shared_ptr<Executor> exec_;       // where libraft runs
    std::shared_ptr<Loop> loop_;           // uv engine
    std::shared_ptr<BridgeExecutor> bridge_exec_;  // asyncio engine
    std::unique_ptr<Bridge> bridge_;       // asyncio engine
    const NodeOptions opts_;
    const uint64_t nonce_;
    ApplyQueue queue_;

    // Owned by the loop thread once started.
    struct raft raft_ {};
    struct raft_io io_ {};
    struct raft_uv_transport transport_ {};
    struct raft_fsm fsm_ {};
    struct raft_tracer tracer_ {};
    uv_check_t check_ {};
    bool started_ = false;
    bool closing_ = false;
    int close_pending_ = 0;
    std::shared_ptr<NodeImpl> self_;  // keeps us alive while libraft holds pointers
    Status last_published_;
    uint64_t last_pushed_applied_ = 0;  // highest `applied` handed to the applier
    uint64_t entries_proposed_ = 0;
    uint64_t commands_proposed_ = 0;
    uint64_t start_snapshot_index_ = 0;

    std::atomic<bool> timing_{false};
    std::atomic<uint64_t> t_flush_{0};
    std::atomic<uint64_t> t_commit_{0};

    std::atomic<uint64_t> inflight_cmds_{0};
    std::atomic<uint64_t> inflight_bytes_{0};

    // Submissions from other threads, flushed by the loop thread.
    std::mutex submit_mu_;  // leaf lock
    std::vector<PendingCommand> pending_;
    bool flush_posted_ = false;

    mutable std::mutex status_mu_;  // leaf lock
    Status status_;

    std::atomic<bool> close_requested_{false};
    std::atomic<bool> closed_{false};
    std::promise<void> closed_promise_;
    std::shared_future<void> closed_future_;
};

}  // namespace craft
