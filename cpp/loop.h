// The loop thread: one libuv loop in a thread of its own, hosting any number of
// nodes. Every libraft and libuv call for those nodes happens on this thread;
// other threads hand it closures through post().
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "executor.h"

namespace craft {

class Loop : public Executor, public std::enable_shared_from_this<Loop> {
public:
    Loop();
    ~Loop() override;
    Loop(const Loop&) = delete;
    Loop& operator=(const Loop&) = delete;

    // Thread-safe. Returns false (and drops fn) once the loop is stopping.
    // Closures must hold no Python object: they run and die on the loop thread.
    bool post(std::function<void()> fn) override;

    // Blocks until the thread has exited. Call without the GIL, after every
    // node on this loop is closed. Idempotent.
    void stop();

    uv_loop_t* uv() { return &loop_; }
    bool on_loop_thread() const override { return std::this_thread::get_id() == thread_id_; }
    bool running() const;

private:
    static void on_async(uv_async_t* handle) noexcept;
    void drain();
    void run();

    uv_loop_t loop_;
    uv_async_t async_;
    mutable std::mutex mu_;  // leaf lock: guards queue_ and accepting_
    std::vector<std::function<void()>> queue_;
    bool accepting_ = true;
    bool stopping_ = false;  // loop thread only
    std::thread thread_;
    std::thread::id thread_id_;
    std::once_flag joined_;
};

}  // namespace craft
