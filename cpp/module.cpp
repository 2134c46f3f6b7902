// The _core module: LoopCore and NodeCore, the error codes, and the GIL rules.
//
// GIL rule 1: every call that can block (start, close, stats, waiting for the
// applier queue) releases the GIL after its Python arguments are converted.
// GIL rule 2: the loop thread never touches Python; it only fills C++ items
// that drain() converts here, on the applier thread, with the GIL held.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>

#include "node.h"

namespace py = pybind11;
using namespace craft;

namespace craft {
void init_fixture(py::module_& m);  // fixture.cpp
}

namespace {

struct LoopCore {
    std::shared_ptr<Loop> loop = std::make_shared<Loop>();
    void stop() {
        py::gil_scoped_release nogil;
        loop->stop();
    }
};

// The Python handle of a node. Dropping it without close() still closes the
// node, asynchronously, on the loop thread.
struct NodeCore {
    std::shared_ptr<NodeImpl> impl;
    NodeCore(LoopCore& loop, NodeOptions opts)
        : impl(std::make_shared<NodeImpl>(loop.loop, std::move(opts))) {}
    // The asyncio engine: made on the event loop thread that will drive it.
    explicit NodeCore(NodeOptions opts)
        : impl(std::make_shared<NodeImpl>(std::make_shared<BridgeExecutor>(), std::move(opts))) {}
    ~NodeCore() {
        if (impl) impl->request_close();
    }
};

// Commands that start with this prefix are the library's own records
// (identity.py), set once by the applier module; a flag per entry tells the
// applier whether it must look for them at all.
std::string g_reserved_prefix;

// (COMMAND, index, mine, [request_id, bytes, request_id, bytes, ...], has_reserved),
// built with the C API: this runs once per committed command, and a flat list
// allocates no tuple per command (the applier walks it in pairs).
py::object command_item(NodeImpl& node, Item& item) {
    uint64_t nonce = 0;
    std::vector<DecodedCommand> cmds;
    if (!decode_envelope(item.data, &nonce, &cmds)) {
        return py::make_tuple(int(kCommand), item.index, false, py::none(), false);
    }
    bool mine = nonce == node.nonce();
    bool reserved = false;
    const std::string& prefix = g_reserved_prefix;
    py::list out(2 * cmds.size());
    for (size_t i = 0; i < cmds.size(); i++) {
        const auto& c = cmds[i];
        if (!prefix.empty() && c.data.size() >= prefix.size() &&
            std::memcmp(c.data.data(), prefix.data(), prefix.size()) == 0) {
            reserved = true;
        }
        PyObject* id = PyLong_FromUnsignedLongLong(mine ? c.request_id : 0);
        if (id == nullptr) throw py::error_already_set();
        PyList_SET_ITEM(out.ptr(), 2 * i, id);  // owned by the list from here on
        PyObject* data = PyBytes_FromStringAndSize(c.data.data(), Py_ssize_t(c.data.size()));
        if (data == nullptr) throw py::error_already_set();
        PyList_SET_ITEM(out.ptr(), 2 * i + 1, data);
    }
    return py::make_tuple(int(kCommand), item.index, mine, std::move(out), reserved);
}

py::object to_python(NodeImpl& node, Item& item) {
    switch (item.kind) {
        case kCommand:
            return command_item(node, item);
        case kApplyFailed:
            return py::make_tuple(item.kind, item.code, item.msg, py::cast(item.ids),
                                  item.indeterminate, item.leader_id, item.leader_address,
                                  item.applied);
        case kRequestDone:
            return py::make_tuple(item.kind, item.a, item.code, item.msg, item.leader_id,
                                  item.leader_address, item.applied);
        case kRestore:
            return py::make_tuple(item.kind, item.index, py::bytes(item.data));
        case kSnapshotDone:
            return py::make_tuple(item.kind, item.index, item.code, item.msg);
        case kEvent:
            return py::make_tuple(item.kind, item.state, item.term, item.leader_id,
                                  item.leader_address, item.applied, item.code /* self role */);
        case kLog:
            return py::make_tuple(item.kind, item.code, item.msg);
        case kAdvance:
            return py::make_tuple(item.kind, item.applied);
        default:
            return py::make_tuple(int(kClosed));
    }
}

py::object drain(NodeCore& self, int timeout_ms) {
    std::vector<Item> items;
    bool open;
    {
        py::gil_scoped_release nogil;
        open = self.impl->queue().pop_all(&items, timeout_ms);
    }
    if (!open) return py::none();
    py::list out;
    for (size_t i = 0; i < items.size(); i++) {
        try {
            out.append(to_python(*self.impl, items[i]));
        } catch (py::error_already_set&) {
            // Out of memory (or a bug): nothing taken is dropped. What was not
            // converted goes back to the head of the queue for the next drain.
            self.impl->queue().unpop(std::move(items), i);
            if (i == 0) throw;
            PyErr_Clear();
            break;
        }
    }
    return std::move(out);
}

bool submit(NodeCore& self, uint64_t request_id, const py::bytes& data) {
    char* buf = nullptr;
    Py_ssize_t len = 0;
    if (PyBytes_AsStringAndSize(data.ptr(), &buf, &len) != 0) throw py::error_already_set();
    return self.impl->submit(request_id, buf, static_cast<size_t>(len));
}

// apply_many: one call, one lock, one wake-up of the loop thread for them all.
bool submit_many(NodeCore& self, uint64_t first_id, const py::list& commands) {
    std::vector<std::string> copies;
    size_t n = commands.size(), bytes = 0;
    copies.reserve(n);
    for (size_t i = 0; i < n; i++) {
        char* buf = nullptr;
        Py_ssize_t len = 0;
        if (PyBytes_AsStringAndSize(PyList_GET_ITEM(commands.ptr(), i), &buf, &len) != 0) {
            throw py::error_already_set();
        }
        copies.emplace_back(buf, static_cast<size_t>(len));
        bytes += static_cast<size_t>(len);
    }
    return self.impl->submit_many(first_id, std::move(copies), bytes);
}

// The applier hands the encoded snapshot as a list of bytes-like chunks, so a
// large state is never concatenated; each is copied once, then the GIL is free.
void snapshot_put(NodeCore& self, uint64_t index, const py::list& chunks) {
    std::vector<std::string> copies;
    copies.reserve(chunks.size());
    for (const auto& chunk : chunks) {
        py::buffer_info info = py::reinterpret_borrow<py::buffer>(chunk).request();
        copies.emplace_back(static_cast<const char*>(info.ptr),
                            static_cast<size_t>(info.size * info.itemsize));
    }
    py::gil_scoped_release nogil;
    self.impl->snapshot_put(index, std::move(copies));
}

py::dict status_dict(const Status& s) {
    py::dict d;
    d["state"] = s.state;
    d["term"] = s.term;
    d["leader_id"] = s.leader_id;
    d["leader_address"] = s.leader_address;
    d["last_index"] = s.last_index;
    d["commit_index"] = s.commit_index;
    d["raft_last_applied"] = s.last_applied;
    d["voted_for"] = s.voted_for;
    d["self_role"] = s.self_role;  // role, or -1: not in the configuration, -2: none yet
    return d;
}

py::dict stats(NodeCore& self) {
    Stats s;
    {
        py::gil_scoped_release nogil;
        s = self.impl->stats_blocking();
    }
    py::dict d = status_dict(s.status);
    py::list conf;
    for (const auto& srv : s.configuration) conf.append(py::make_tuple(srv.id, srv.address, srv.role));
    d["configuration"] = conf;
    d["configuration_committed_index"] = s.configuration_committed_index;
    d["entries_proposed"] = s.entries_proposed;
    d["commands_proposed"] = s.commands_proposed;
    d["applier_queue"] = self.impl->queue().size();
    d["applier_queue_bytes"] = self.impl->queue().bytes();
    d["pending_commands"] = self.impl->pending_commands();
    d["pending_bytes"] = self.impl->pending_bytes();
    return d;
}

// ---------------------------------------------------------------- asyncio engine

Bridge& bridge_of(NodeCore& self) {
    Bridge* b = self.impl->bridge();
    if (b == nullptr) throw CoreError{RAFT_INVALID, "not an asyncio-engine node"};
    return *b;
}

py::list ops_to_python(std::vector<IoOp>&& ops) {
    py::list out;
    for (auto& op : ops) {
        switch (op.kind) {
            case IoOp::kAppend: {
                py::list entries;
                for (auto& [term, type, data] : op.entries) {
                    entries.append(py::make_tuple(term, type, py::bytes(data)));
                }
                out.append(py::make_tuple(op.kind, op.id, std::move(entries)));
                break;
            }
            case IoOp::kSend:
                out.append(py::make_tuple(op.kind, op.id, op.address, py::bytes(op.data)));
                break;
            case IoOp::kSnapshotPut:
                out.append(py::make_tuple(op.kind, op.id, op.a, op.b, op.c, op.d,
                                          py::bytes(op.conf), py::bytes(op.data)));
                break;
            case IoOp::kSnapshotGet:
                out.append(py::make_tuple(op.kind, op.id));
                break;
            case IoOp::kClose:
                out.append(py::make_tuple(op.kind));
                break;
            default:  // start, set_term, set_vote, truncate
                out.append(py::make_tuple(op.kind, op.a));
        }
    }
    return out;
}

// One entry into raft on the event loop thread, without the GIL (the core never
// calls Python); returns the io requests raft made meanwhile.
template <typename F>
py::list bridge_entry(NodeCore& self, F&& fn) {
    Bridge& b = bridge_of(self);
    std::vector<IoOp> ops;
    {
        py::gil_scoped_release nogil;
        self.impl->bridge_call(fn);
        ops = b.take_ops();
    }
    return ops_to_python(std::move(ops));
}

std::vector<std::tuple<uint64_t, int, std::string>> entries_from(const py::list& entries) {
    std::vector<std::tuple<uint64_t, int, std::string>> out;
    out.reserve(entries.size());
    for (const auto& e : entries) {
        auto t = e.cast<py::tuple>();
        out.emplace_back(t[0].cast<uint64_t>(), t[1].cast<int>(), t[2].cast<std::string>());
    }
    return out;
}

void init_bridge(py::class_<NodeCore>& cls, py::module_& m) {
    m.def("payload_length", [](int type, int version, const py::bytes& header) {
        return payload_length(type, version, std::string(header));
    });
    m.def("encode_configuration",
          [](const std::vector<std::tuple<uint64_t, std::string, int>>& servers) {
              return py::bytes(encode_configuration(servers));
          });
    py::dict ops;
    ops["START"] = int(IoOp::kStart);
    ops["SET_TERM"] = int(IoOp::kSetTerm);
    ops["SET_VOTE"] = int(IoOp::kSetVote);
    ops["APPEND"] = int(IoOp::kAppend);
    ops["TRUNCATE"] = int(IoOp::kTruncate);
    ops["SEND"] = int(IoOp::kSend);
    ops["SNAPSHOT_PUT"] = int(IoOp::kSnapshotPut);
    ops["SNAPSHOT_GET"] = int(IoOp::kSnapshotGet);
    ops["CLOSE"] = int(IoOp::kClose);
    m.attr("io_ops") = ops;
    cls.def_static("asyncio", [](NodeOptions opts) { return new NodeCore(std::move(opts)); },
                   py::arg("options"))
        .def_property_readonly("bridge_fd",
                               [](NodeCore& self) {
                                   bridge_of(self);
                                   return self.impl->bridge_executor()->fd();
                               })
        .def("bridge_load",
             [](NodeCore& self, uint64_t term, uint64_t vote, py::object snapshot,
                uint64_t start_index, const py::list& entries) {
                 LoadedState st;
                 st.term = term;
                 st.vote = vote;
                 st.start_index = start_index;
                 if (!snapshot.is_none()) {
                     auto t = snapshot.cast<py::tuple>();
                     st.has_snapshot = true;
                     st.snapshot_index = t[0].cast<uint64_t>();
                     st.snapshot_term = t[1].cast<uint64_t>();
                     st.conf_index = t[2].cast<uint64_t>();
                     st.conf = t[3].cast<std::string>();
                     st.data = t[4].cast<std::string>();
                 }
                 st.entries = entries_from(entries);
                 bridge_of(self).set_loaded(std::move(st));
             })
        .def("bridge_start",
             [](NodeCore& self) {
                 bridge_of(self);
                 std::vector<IoOp> ops;
                 {
                     py::gil_scoped_release nogil;
                     self.impl->start_blocking();  // inline: we are on the loop thread
                     ops = self.impl->bridge()->take_ops();
                 }
                 return ops_to_python(std::move(ops));
             })
        .def("bridge_run_posted",
             [](NodeCore& self) {
                 BridgeExecutor* exec = self.impl->bridge_executor();
                 return bridge_entry(self, [exec] { exec->drain(); });
             })
        .def("bridge_tick",
             [](NodeCore& self) {
                 Bridge* b = &bridge_of(self);
                 return bridge_entry(self, [b] { b->tick(); });
             })
        .def("bridge_recv",
             [](NodeCore& self, uint64_t server_id, const std::string& address, int type,
                int version, const py::bytes& header, const py::bytes& payload) {
                 Bridge* b = &bridge_of(self);
                 std::string h(header), p(payload);
                 int rc = 0;
                 py::list ops = bridge_entry(self, [&] {
                     rc = b->recv(server_id, address, type, version, h, p);
                 });
                 return py::make_tuple(rc, ops);
             })
        .def("bridge_append_done",
             [](NodeCore& self, uint64_t id, int status) {
                 Bridge* b = &bridge_of(self);
                 return bridge_entry(self, [=] { b->append_done(id, status); });
             })
        .def("bridge_snapshot_put_done",
             [](NodeCore& self, uint64_t id, int status) {
                 Bridge* b = &bridge_of(self);
                 return bridge_entry(self, [=] { b->snapshot_put_done(id, status); });
             })
        .def("bridge_snapshot_get_done",
             [](NodeCore& self, uint64_t id, uint64_t index, uint64_t term, uint64_t conf_index,
                const py::bytes& conf, const py::bytes& data) {
                 Bridge* b = &bridge_of(self);
                 std::string c(conf), d(data);
                 return bridge_entry(self, [&] {
                     b->snapshot_get_done(id, index, term, conf_index, c, d);
                 });
             });
}

void init_codes(py::module_& m) {
    py::dict codes;
#define CODE(name) codes[#name] = int(RAFT_##name)
    CODE(NOMEM); CODE(BADID); CODE(DUPLICATEID); CODE(DUPLICATEADDRESS); CODE(BADROLE);
    CODE(MALFORMED); CODE(NOTLEADER); CODE(LEADERSHIPLOST); CODE(SHUTDOWN);
    CODE(CANTBOOTSTRAP); CODE(CANTCHANGE); CODE(CORRUPT); CODE(CANCELED); CODE(NAMETOOLONG);
    CODE(TOOBIG); CODE(NOCONNECTION); CODE(BUSY); CODE(IOERR); CODE(NOTFOUND); CODE(INVALID);
    CODE(UNAUTHORIZED); CODE(NOSPACE); CODE(TOOMANY);
#undef CODE
    m.attr("codes") = codes;
    py::dict states;
    states["UNAVAILABLE"] = int(RAFT_UNAVAILABLE);
    states["FOLLOWER"] = int(RAFT_FOLLOWER);
    states["CANDIDATE"] = int(RAFT_CANDIDATE);
    states["LEADER"] = int(RAFT_LEADER);
    m.attr("states") = states;
    py::dict roles;
    roles["STANDBY"] = int(RAFT_STANDBY);
    roles["VOTER"] = int(RAFT_VOTER);
    roles["SPARE"] = int(RAFT_SPARE);
    m.attr("roles") = roles;
    m.def("set_reserved_prefix", [](const py::bytes& prefix) {
        g_reserved_prefix = std::string(prefix);
    });
    m.def("strerror", [](int code) { return std::string(raft_strerror(code)); });
    m.attr("libraft_version") = CANONICAL_RAFT_LIBRAFT_VERSION;
    m.attr("ENVELOPE_HEADER") = kEnvelopeHeader;
    m.attr("COMMAND_HEADER") = kCommandHeader;
    m.attr("items") = py::dict(py::arg("COMMAND") = int(kCommand),
                               py::arg("APPLY_FAILED") = int(kApplyFailed),
                               py::arg("REQUEST_DONE") = int(kRequestDone),
                               py::arg("RESTORE") = int(kRestore),
                               py::arg("SNAPSHOT_DONE") = int(kSnapshotDone),
                               py::arg("EVENT") = int(kEvent), py::arg("LOG") = int(kLog),
                               py::arg("CLOSED") = int(kClosed),
                               py::arg("ADVANCE") = int(kAdvance));
}

void init_errors(py::module_& m) {
    PyObject* cls = PyErr_NewException("canonical_raft._core.CoreError", PyExc_RuntimeError, nullptr);
    m.add_object("CoreError", py::reinterpret_steal<py::object>(cls));
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const CoreError& e) {
            py::object cls = py::module_::import("canonical_raft._core").attr("CoreError");
            PyErr_SetObject(cls.ptr(), py::make_tuple(e.code, e.message).ptr());
        }
    });
}

void init_loop(py::module_& m) {
    py::class_<LoopCore>(m, "LoopCore")
        .def(py::init<>())
        .def("stop", &LoopCore::stop)
        .def_property_readonly("running", [](LoopCore& l) { return l.loop->running(); });
}

void init_node(py::module_& m) {
    py::class_<NodeOptions>(m, "NodeOptions")
        .def(py::init<>())
        .def_readwrite("id", &NodeOptions::id)
        .def_readwrite("address", &NodeOptions::address)
        .def_readwrite("bind_address", &NodeOptions::bind_address)
        .def_readwrite("data_dir", &NodeOptions::data_dir)
        .def_readwrite("bootstrap", &NodeOptions::bootstrap)
        .def_readwrite("election_timeout_ms", &NodeOptions::election_timeout_ms)
        .def_readwrite("heartbeat_timeout_ms", &NodeOptions::heartbeat_timeout_ms)
        .def_readwrite("install_snapshot_timeout_ms", &NodeOptions::install_snapshot_timeout_ms)
        .def_readwrite("snapshot_threshold", &NodeOptions::snapshot_threshold)
        .def_readwrite("snapshot_trailing", &NodeOptions::snapshot_trailing)
        .def_readwrite("connect_retry_delay_ms", &NodeOptions::connect_retry_delay_ms)
        .def_readwrite("max_inflight_entries", &NodeOptions::max_inflight_entries)
        .def_readwrite("max_catch_up_rounds", &NodeOptions::max_catch_up_rounds)
        .def_readwrite("max_catch_up_round_duration_ms", &NodeOptions::max_catch_up_round_duration_ms)
        .def_readwrite("pre_vote", &NodeOptions::pre_vote)
        .def_readwrite("auto_recovery", &NodeOptions::auto_recovery)
        .def_readwrite("segment_size", &NodeOptions::segment_size)
        .def_readwrite("max_entry_bytes", &NodeOptions::max_entry_bytes)
        .def_readwrite("trace_level", &NodeOptions::trace_level)
        .def_readwrite("max_pending_commands", &NodeOptions::max_pending_commands)
        .def_readwrite("max_pending_bytes", &NodeOptions::max_pending_bytes);

    py::class_<NodeCore> node_core(m, "NodeCore");
    init_bridge(node_core, m);
    node_core
        .def(py::init<LoopCore&, NodeOptions>(), py::arg("loop"), py::arg("options"))
        .def("start", [](NodeCore& self) {
            py::gil_scoped_release nogil;
            self.impl->start_blocking();
        })
        .def("close", [](NodeCore& self) {
            py::gil_scoped_release nogil;
            self.impl->close_blocking();
        })
        .def("request_close", [](NodeCore& self) { self.impl->request_close(); })
        .def("submit", &submit, py::arg("request_id"), py::arg("data"))
        .def("submit_many", &submit_many, py::arg("first_id"), py::arg("commands"))
        .def("set_timing", [](NodeCore& self, bool on) { self.impl->set_timing(on); })
        .def("hop_times", [](NodeCore& self) {
            auto t = self.impl->hop_times();
            return py::make_tuple(t.flush_ns, t.append_start_ns, t.append_done_ns, t.commit_ns);
        })
        .def("barrier", [](NodeCore& self, uint64_t rid) { self.impl->barrier(rid); })
        .def("add", [](NodeCore& self, uint64_t rid, uint64_t id, const std::string& a) {
            self.impl->add(rid, id, a);
        })
        .def("assign", [](NodeCore& self, uint64_t rid, uint64_t id, int role) {
            self.impl->assign(rid, id, role);
        })
        .def("remove", [](NodeCore& self, uint64_t rid, uint64_t id) { self.impl->remove(rid, id); })
        .def("transfer", [](NodeCore& self, uint64_t rid, uint64_t id) {
            self.impl->transfer(rid, id);
        })
        .def("drain", &drain, py::arg("timeout_ms"))
        .def("snapshot_put", &snapshot_put, py::arg("index"), py::arg("chunks"))
        .def("release", [](NodeCore& self, uint64_t commands, uint64_t bytes) {
            self.impl->release(commands, bytes);
        })
        .def_property_readonly("start_snapshot_index",
                               [](NodeCore& self) { return self.impl->start_snapshot_index(); })
        .def("status", [](NodeCore& self) { return status_dict(self.impl->status()); })
        .def("stats", &stats)
        .def_property_readonly("closed", [](NodeCore& self) { return self.impl->closed(); })
        .def_property_readonly("nonce", [](NodeCore& self) { return self.impl->nonce(); });
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "canonical_raft's compiled core: libraft on a libuv loop thread (private)";
    init_errors(m);
    init_codes(m);
    init_loop(m);
    init_node(m);
    init_fixture(m);
}
