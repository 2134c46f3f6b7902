// Engine 2: a raft_io whose disk and network live in Python, on the
// application's asyncio event loop (ENGINE2_NOTES.md has the contract).
//
// libraft calls these io methods on the event loop thread; each one only
// records an IoOp. After every entry into raft, the binding hands the recorded
// ops to the Python backend, which does the work (store, transport) as
// coroutines and reports completions back (append_done, ...). C++ never calls
// Python: Python calls in, converting everything at the boundary, so the GIL
// can be released around all of it.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "compat.h"
#include "executor.h"

namespace craft {

// One request of raft's for the backend, in the order raft made them.
struct IoOp {
    enum Kind : int {
        kStart = 0,        // a = tick interval (ms)
        kSetTerm = 1,      // a = term (the vote is cleared)
        kSetVote = 2,      // a = server id
        kAppend = 3,       // id, a = first index, entries
        kTruncate = 4,     // a = index: drop entries >= a, after earlier appends
        kSend = 5,         // id = server id, address, data = whole frame
        kSnapshotPut = 6,  // id, a = trailing, b = index, c = term, d = conf index, conf, data
        kSnapshotGet = 7,  // id
        kClose = 8,        // raft is closing: stop ticks and connections
    };
    int kind = 0;
    uint64_t id = 0;
    uint64_t a = 0, b = 0, c = 0, d = 0;
    std::string address;
    std::string data;
    std::string conf;
    std::vector<std::tuple<uint64_t, int, std::string>> entries;  // term, type, data
};

// What the store holds, handed to raft_start through load().
struct LoadedState {
    uint64_t term = 0;
    uint64_t vote = 0;
    bool has_snapshot = false;
    uint64_t snapshot_index = 0, snapshot_term = 0, conf_index = 0;
    std::string conf;  // encoded configuration of the snapshot
    std::string data;  // snapshot data
    uint64_t start_index = 1;
    std::vector<std::tuple<uint64_t, int, std::string>> entries;
};

// Runs posted closures on the event loop thread. A write to an eventfd wakes
// the loop (the backend watches it with loop.add_reader), so posting needs
// neither the GIL nor the loop.
class BridgeExecutor : public Executor {
public:
    BridgeExecutor();
    ~BridgeExecutor() override;
    bool post(std::function<void()> fn) override;
    bool on_loop_thread() const override { return std::this_thread::get_id() == thread_id_; }
    int fd() const { return fd_; }
    void drain();  // event loop thread
    void stop();   // no more posts

private:
    int fd_ = -1;
    std::thread::id thread_id_;
    std::mutex mu_;  // leaf lock
    std::vector<std::function<void()>> queue_;
    bool accepting_ = true;
};

class Bridge {
public:
    Bridge();
    ~Bridge();
    // Fill io's methods; io->impl points here. Before raft_init.
    void init(struct raft_io* io, unsigned short capacity_kib);
    void set_loaded(LoadedState&& state) { loaded_ = std::move(state); }

    std::vector<IoOp> take_ops();
    bool closed() const { return close_cb_ == nullptr && closing_; }

    // Completions from the backend (event loop thread). Unknown ids (after
    // close cancelled them) are ignored.
    void append_done(uint64_t id, int status);
    void snapshot_put_done(uint64_t id, int status);
    void snapshot_get_done(uint64_t id, uint64_t index, uint64_t term, uint64_t conf_index,
                           const std::string& conf, const std::string& data);
    // A whole frame from a peer (preamble's type and version, the header, the
    // payload). RAFT_MALFORMED and the like: drop the connection.
    int recv(uint64_t server_id, const std::string& address, int type, int version,
             const std::string& header, const std::string& payload);
    void tick();
    // Run callbacks deferred out of io methods (send completions, close).
    // Returns true if any ran.
    bool run_deferred();

private:
    static int io_init(struct raft_io*, raft_id, const char*) noexcept;
    static void io_close(struct raft_io*, raft_io_close_cb) noexcept;
    static int io_load(struct raft_io*, raft_term*, raft_id*, struct raft_snapshot**,
                       raft_index*, struct raft_entry*[], size_t*) noexcept;
    static int io_start(struct raft_io*, unsigned, raft_io_tick_cb, raft_io_recv_cb) noexcept;
    static int io_bootstrap(struct raft_io*, const struct raft_configuration*) noexcept;
    static int io_recover(struct raft_io*, const struct raft_configuration*) noexcept;
    static int io_set_term(struct raft_io*, raft_term) noexcept;
    static int io_set_vote(struct raft_io*, raft_id) noexcept;
    static int io_send(struct raft_io*, struct raft_io_send*, const struct raft_message*,
                       raft_io_send_cb) noexcept;
    static int io_append(struct raft_io*, struct raft_io_append*, const struct raft_entry[],
                         unsigned, raft_io_append_cb) noexcept;
    static int io_truncate(struct raft_io*, raft_index) noexcept;
    static int io_snapshot_put(struct raft_io*, unsigned, struct raft_io_snapshot_put*,
                               const struct raft_snapshot*, raft_io_snapshot_put_cb) noexcept;
    static int io_snapshot_get(struct raft_io*, struct raft_io_snapshot_get*,
                               raft_io_snapshot_get_cb) noexcept;
    static raft_time io_time(struct raft_io*) noexcept;
    static int push_value(struct raft_io* io, int kind, uint64_t value) noexcept;
    static int io_random(struct raft_io*, int, int) noexcept;

    struct raft_snapshot* make_snapshot(uint64_t index, uint64_t term, uint64_t conf_index,
                                        const std::string& conf, const std::string& data);

    struct raft_io* io_ = nullptr;
    LoadedState loaded_;
    std::vector<IoOp> ops_;
    std::vector<std::function<void()>> deferred_;
    uint64_t next_id_ = 1;
    std::map<uint64_t, struct raft_io_append*> appends_;
    std::map<uint64_t, struct raft_io_snapshot_put*> puts_;
    std::map<uint64_t, struct raft_io_snapshot_get*> gets_;
    raft_io_tick_cb tick_cb_ = nullptr;
    raft_io_recv_cb recv_cb_ = nullptr;
    raft_io_close_cb close_cb_ = nullptr;
    bool closing_ = false;
    // The last snapshot's metadata: a get still pending at close is answered
    // with it (libraft mishandles a failed get, ENGINE2_NOTES §5.4).
    uint64_t snap_index_ = 0, snap_term_ = 0, snap_conf_index_ = 0;
    std::string snap_conf_;
    std::mt19937 rng_;
};

// The payload length a frame's header announces, or minus a RAFT_* code.
long long payload_length(int type, int version, const std::string& header);
// raft_configuration_encode of (id, address, role) triples; empty on failure.
std::string encode_configuration(
    const std::vector<std::tuple<uint64_t, std::string, int>>& servers);

}  // namespace craft
