#include "applier.h"

#include <chrono>

namespace craft {

void ApplyQueue::push(Item&& item) {
    {
        std::lock_guard<std::mutex> lock(mu_);
        bytes_ += item.data.size();
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
        bytes_ -= items_.front().data.size();
        out->push_back(std::move(items_.front()));
        items_.pop_front();
    }
    return true;
}

void ApplyQueue::unpop(std::vector<Item>&& items, size_t first) {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = items.size(); i > first; i--) {
        Item& item = items[i - 1];
        if (item.kind == kClosed) closed_ = false;
        bytes_ += item.data.size();
        items_.push_front(std::move(item));
    }
}

size_t ApplyQueue::size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return items_.size();
}

size_t ApplyQueue::bytes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return bytes_;
}

}  // namespace craft
