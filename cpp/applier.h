// The hand-over from the loop thread to the applier (a Python thread).
//
// The loop thread never waits for the GIL or for the applier, for anything: it
// pushes plain C++ items here and the applier takes them in batches, one GIL
// acquisition per batch. Snapshots go the other way: the applier serialises the
// FSM itself and hands the bytes to the loop thread (NodeImpl::snapshot_put),
// whose outcome comes back here as a kSnapshotDone item.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

namespace craft {

enum ItemKind : int {
    kCommand = 0,       // index, data = envelope copied from the log entry
    kApplyFailed = 1,   // ids, code, msg, leader: commands that got no result
    kRequestDone = 2,   // a = request id, code, msg, leader: barrier/change/transfer
    kRestore = 3,       // index (0 if not yet known), data = snapshot bytes
    kSnapshotDone = 4,  // index, code, msg: the outcome of a snapshot_put
    kEvent = 5,         // state, term, leader: role, term or leader changed
    kLog = 6,           // code = level, msg: a libraft trace line
    kClosed = 7,        // the node is closed; nothing follows
    kAdvance = 8,       // applied: raft applied entries that carry no command (barriers)
};

struct Item {
    int kind = 0;
    int code = 0;
    int state = 0;
    bool indeterminate = false;
    uint64_t index = 0;
    uint64_t applied = 0;  // raft's last applied index when the item was pushed
    uint64_t a = 0;
    uint64_t term = 0;
    uint64_t leader_id = 0;
    std::string leader_address;
    std::string data;
    std::string msg;
    std::vector<uint64_t> ids;
};

class ApplyQueue {
public:
    // Loop thread (or any thread). Never blocks on anything but the leaf mutex.
    void push(Item&& item);

    // Applier thread, GIL released: waits up to timeout_ms for items, then moves
    // them all into out. Returns false once kClosed has been taken.
    bool pop_all(std::vector<Item>* out, int timeout_ms);

    // Applier thread: puts back items it took but could not hand to Python
    // (a MemoryError while converting), ahead of everything else.
    void unpop(std::vector<Item>&& items, size_t first);

    size_t size() const;
    size_t bytes() const;  // payload bytes queued (commands and snapshots)

private:
    mutable std::mutex mu_;  // leaf lock: never held while taking the GIL
    std::condition_variable items_cv_;
    std::deque<Item> items_;
    size_t bytes_ = 0;
    bool closed_ = false;
};

}  // namespace craft
