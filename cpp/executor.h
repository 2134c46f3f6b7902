// Where a node's libraft calls run: one thread, fed closures by the others.
// The uv engine's Loop (loop.h) runs a libuv loop in a thread of its own; the
// asyncio engine's BridgeExecutor (io_bridge.h) runs them on the application's
// event loop thread.
#pragma once

#include <functional>

namespace craft {

class Executor {
public:
    virtual ~Executor() = default;
    // Thread-safe. Returns false (and drops fn) once the executor is stopping.
    // Closures must hold no Python object: they may die on any thread.
    virtual bool post(std::function<void()> fn) = 0;
    virtual bool on_loop_thread() const = 0;
};

}  // namespace craft
