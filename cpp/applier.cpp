#include "applier.h"

#include <chrono>

#include "compat.h"

namespace craft {

void ApplyQueue::push(Item&& item) {
    {
        std::lock_guard<std::mutex> lock(mu_);
        items_.push_back(std::move(item));
    }
    items_cv_.notify_one();
}

bool ApplyQueue::pop_all(std::vector<Item>* out, int timeout_ms) {
    std::unique_lock<std::mutex> lock(mu_);
    if (closed_) return false;
    if (items_.empty()) {
        items_cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                           [this] { return !items_.empty(); });
    }
    while (!items_.empty()) {
        if (items_.front().kind == kClosed) closed_ = true;
        out->push_back(std::move(items_.front()));
        items_.pop_front();
    }
    return true;
}

int ApplyQueue::request_snapshot(int timeout_ms, std::string* data) {
    uint64_t ticket;
    {
        std::unique_lock<std::mutex> lock(mu_);
        if (abandoned_) return RAFT_BUSY;
        ticket = ++snapshot_ticket_;
        snapshot_answered_ = false;
        Item item;
        item.kind = kSnapshot;
        item.a = ticket;
        items_.push_back(std::move(item));
        items_cv_.notify_one();
        bool answered = snapshot_cv_.wait_for(
            lock, std::chrono::milliseconds(timeout_ms),
            [this] { return snapshot_answered_ || abandoned_; });
        // A late answer for this ticket is dropped by snapshot_done.
        snapshot_ticket_ = ticket + 1;
        if (!answered || abandoned_ || !snapshot_ok_) return RAFT_BUSY;
        data->swap(snapshot_data_);
        snapshot_data_.clear();
    }
    return 0;
}

void ApplyQueue::snapshot_done(uint64_t ticket, bool ok, std::string&& data) {
    {
        std::lock_guard<std::mutex> lock(mu_);
        if (ticket != snapshot_ticket_ || snapshot_answered_) return;
        snapshot_answered_ = true;
        snapshot_ok_ = ok;
        snapshot_data_ = std::move(data);
    }
    snapshot_cv_.notify_all();
}

void ApplyQueue::abandon_snapshots() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        abandoned_ = true;
    }
    snapshot_cv_.notify_all();
}

size_t ApplyQueue::size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return items_.size();
}

}  // namespace craft
