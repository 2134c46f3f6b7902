// The hand-over from the loop thread to the applier (a Python thread).
//
// The loop thread never waits for the GIL on its hot path: it pushes plain C++
// items here and the applier takes them in batches, one GIL acquisition per
// batch. The one place the loop thread waits for the applier is a snapshot,
// which must see the FSM exactly at raft's last applied index; that wait is
// bounded and answers RAFT_BUSY on timeout (libraft retries later).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

namespace craft {

enum ItemKind : int {
    kCommand = 0,      // index, data = envelope copied from the log entry
    kApplyFailed = 1,  // ids, code, msg, leader: commands that got no result
    kRequestDone = 2,  // a = request id, code, msg, leader: barrier/change/transfer
    kRestore = 3,      // index (0 if not yet known), data = snapshot bytes
    kSnapshot = 4,     // a = ticket: the applier must call snapshot_done(ticket, ...)
    kEvent = 5,        // state, term, leader: role, term or leader changed
    kLog = 6,          // code = level, msg: a libraft trace line
    kClosed = 7,       // the node is closed; nothing follows
    kAdvance = 8,      // applied: raft applied entries that carry no command (barriers)
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

    // Loop thread: asks the applier for a snapshot and waits for it.
    // Returns 0 and fills data, or RAFT_BUSY on timeout/failure/close.
    int request_snapshot(int timeout_ms, std::string* data);

    // Applier thread: the answer to a kSnapshot item.
    void snapshot_done(uint64_t ticket, bool ok, std::string&& data);

    // Any thread: wakes a snapshot wait (the node is closing).
    void abandon_snapshots();

    size_t size() const;

private:
    mutable std::mutex mu_;  // leaf lock: never held while taking the GIL
    std::condition_variable items_cv_;
    std::condition_variable snapshot_cv_;
    std::deque<Item> items_;
    bool closed_ = false;
    uint64_t snapshot_ticket_ = 0;  // the ticket being waited for, 0 if none
    bool snapshot_answered_ = false;
    bool snapshot_ok_ = false;
    bool abandoned_ = false;
    std::string snapshot_data_;
};

}  // namespace craft
