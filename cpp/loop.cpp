#include "loop.h"

#include <stdexcept>
#include <string>

namespace craft {

Loop::Loop() {
    // Initialised here, before the thread exists; thread creation orders these
    // writes before anything the loop thread does.
    int rv = uv_loop_init(&loop_);
    if (rv != 0) throw std::runtime_error(std::string("uv_loop_init: ") + uv_strerror(rv));
    rv = uv_async_init(&loop_, &async_, &Loop::on_async);
    if (rv != 0) {
        uv_loop_close(&loop_);
        throw std::runtime_error(std::string("uv_async_init: ") + uv_strerror(rv));
    }
    async_.data = this;
    thread_ = std::thread([this] { run(); });
    thread_id_ = thread_.get_id();
}

Loop::~Loop() {
    // A thread id is only ours while the thread runs: once it was joined, the
    // system may hand the same id to any new thread.
    if (thread_.joinable() && on_loop_thread()) {
        // Last reference dropped by a closure on our own thread: cannot join ourselves.
        thread_.detach();
        return;
    }
    stop();
}

bool Loop::running() const {
    std::lock_guard<std::mutex> lock(mu_);
    return accepting_;
}

bool Loop::post(std::function<void()> fn) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!accepting_) return false;
    queue_.push_back(std::move(fn));
    // Sent under the same mutex that guards accepting_, so it never races the
    // uv_close of the async handle (sending on a closed handle is undefined).
    uv_async_send(&async_);
    return true;
}

void Loop::on_async(uv_async_t* handle) noexcept {
    static_cast<Loop*>(handle->data)->drain();
}

void Loop::drain() {
    // Sends coalesce: take everything queued, again until empty.
    for (;;) {
        std::vector<std::function<void()>> batch;
        {
            std::lock_guard<std::mutex> lock(mu_);
            batch.swap(queue_);
        }
        if (batch.empty()) break;
        for (auto& fn : batch) fn();
    }
    if (stopping_ && !uv_is_closing(reinterpret_cast<uv_handle_t*>(&async_))) {
        uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr);
    }
}

void Loop::run() {
    uv_run(&loop_, UV_RUN_DEFAULT);
    // Every handle is closed (the nodes were closed before stop()).
    uv_loop_close(&loop_);
}

void Loop::stop() {
    std::call_once(joined_, [this] {
        {
            std::lock_guard<std::mutex> lock(mu_);
            if (accepting_) {
                accepting_ = false;
                queue_.push_back([this] { stopping_ = true; });
                uv_async_send(&async_);
            }
        }
        if (thread_.joinable()) {
            if (on_loop_thread()) {
                thread_.detach();
            } else {
                thread_.join();
            }
        }
    });
}

}  // namespace craft
