// FixtureCore: libraft's raft_fixture (an in-memory, steppable cluster with
// simulated time, network and disk) with one Python FSM per server.
//
// Threading: everything happens on the thread that calls into FixtureCore, with
// the GIL held. libraft fires FSM apply/snapshot/restore synchronously inside
// raft_fixture_step, so the FSM glue calls the Python FSM directly; this is the
// one place in the core where libraft runs under the GIL, which is fine because
// nothing else ever touches a fixture (no loop thread, no applier thread).
//
// Only the fixture's function API is used (LIBRAFT_NOTES rule 20): its struct is
// allocated here but its fields are never read or written.
//
// Preconditions that libraft checks with assert() (compiled out under NDEBUG)
// are checked here and raised as CoreError instead.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "codec.h"
#include "compat.h"
#include "node.h"  // CoreError


namespace py = pybind11;

namespace craft {
namespace {

class FixtureCore;

// Nonces of fixture servers: far from NodeCore's, unique per FixtureCore.
uint64_t next_fixture_nonce = uint64_t(1) << 62;

struct Server {
    FixtureCore* core = nullptr;
    unsigned index = 0;
    uint64_t nonce = 0;
    struct raft_fsm fsm {};
    py::object py_fsm;
    // Commands applied by this server's FSM, by log index (for consistency checks).
    std::map<uint64_t, std::vector<std::string>> applied;
    uint64_t restored_at = 0;  // index of the last snapshot restored (0: none)
    unsigned disk_latency = 10;  // the fixture's default
    uint64_t snapshots_taken = 0;
    // The randomized election timeout this server's next election-timer reset
    // draws (what raft_fixture_set_randomized_election_timeout was last given),
    // and the raft_random state the next one is drawn from (see redraw_timeouts).
    unsigned election_timeout = 0;
    unsigned timeout_state = 0;
    // A lower disk latency waiting for the server's writes to drain (see
    // set_disk_latency); 0: none.
    unsigned lower_disk_latency = 0;
};

struct ApplyReq {
    struct raft_apply req;
    FixtureCore* core;
    uint64_t request_id;
};

// A membership change (raft_add/raft_assign/raft_remove) in flight.
struct ChangeReq {
    struct raft_change req;
    FixtureCore* core;
    uint64_t request_id;
};

struct Result {
    uint64_t request_id;
    uint64_t index;
    bool ok;
    py::object value;  // the FSM's return value, or the exception it raised
};

struct Failure {
    uint64_t request_id;
    int code;
};

bool apply_rejected_early(int rv) {
    return rv == RAFT_NOTLEADER || rv == RAFT_NOSPACE || rv == RAFT_MALFORMED ||
           rv == RAFT_CANTCHANGE;
}

[[noreturn]] void fail(int code, const std::string& msg) { throw CoreError{code, msg}; }

class FixtureCore {
public:
    FixtureCore(py::list fsms, bool pre_vote, bool record_applied, bool trace,
                std::vector<unsigned> election_timeouts, std::vector<unsigned> election_seeds)
        : record_applied_(record_applied), pre_vote_(pre_vote), trace_(trace),
          redraw_(!election_seeds.empty()) {
        size_t n = fsms.size();
        if (n < 1 || n > RAFT_FIXTURE_MAX_SERVERS) {
            fail(RAFT_INVALID, "a fixture cluster has 1 to " +
                                   std::to_string(RAFT_FIXTURE_MAX_SERVERS) + " servers");
        }
        f_ = std::make_unique<struct raft_fixture>();
        std::memset(f_.get(), 0, sizeof(struct raft_fixture));
        int rv = raft_fixture_initialize(f_.get());
        if (rv != 0) {
            f_.reset();
            fail(rv, "raft_fixture_initialize failed");
        }
        initialized_ = true;
        servers_.reserve(n);
        for (size_t i = 0; i < n; i++) {
            auto s = std::make_unique<Server>();
            s->core = this;
            s->index = static_cast<unsigned>(i);
            s->nonce = next_fixture_nonce++;
            s->py_fsm = fsms[i];
            s->fsm.version = 1;
            s->fsm.data = s.get();
            s->fsm.apply = &FixtureCore::fsm_apply;
            s->fsm.snapshot = &FixtureCore::fsm_snapshot;
            s->fsm.restore = &FixtureCore::fsm_restore;
            servers_.push_back(std::move(s));
            rv = raft_fixture_grow(f_.get(), &servers_.back()->fsm);
            if (rv != 0) fail(rv, "raft_fixture_grow failed");
            raft_set_pre_vote(raft(i), pre_vote);
            // The fixture installs a tracer that prints every event to stderr;
            // keep it only when asked (struct raft's own field, not the fixture's).
            if (!trace) raft(i)->tracer = nullptr;
        }
        if (redraw_ && election_seeds.size() != n) {
            fail(RAFT_INVALID, "election_seeds needs one seed per server");
        }
        for (size_t i = 0; i < n; i++) {
            Server& s = *servers_[i];
            // The fixture's own default (fixture.h): server i draws 1000 + 100 i.
            s.election_timeout = raft(i)->election_timeout + 100 * static_cast<unsigned>(i);
            if (redraw_) s.timeout_state = election_seeds[i];
            if (i < election_timeouts.size()) {
                set_election_timeout(static_cast<int>(i), election_timeouts[i]);
            } else if (redraw_) {
                draw_election_timeout(s);
            }
        }
        struct raft_configuration conf;
        rv = raft_fixture_configuration(f_.get(), static_cast<unsigned>(n), &conf);
        if (rv != 0) fail(rv, "raft_fixture_configuration failed");
        rv = raft_fixture_bootstrap(f_.get(), &conf);
        raft_configuration_close(&conf);
        if (rv != 0) fail(rv, "raft_fixture_bootstrap failed");
        rv = raft_fixture_start(f_.get());
        if (rv != 0) fail(rv, "raft_fixture_start failed");
        redraw_timeouts();  // raft_start reset every election timer
    }

    ~FixtureCore() {
        // raft_close completes pending requests through on_apply: they only
        // touch C++ state, and the GIL is held here anyway.
        if (initialized_) raft_fixture_close(f_.get());
    }

    unsigned n() const { return static_cast<unsigned>(servers_.size()); }

    struct raft* raft(size_t i) { return raft_fixture_get(f_.get(), static_cast<unsigned>(i)); }

    unsigned check(int i) const {
        if (i < 0 || static_cast<unsigned>(i) >= n()) {
            throw py::index_error("no server " + std::to_string(i) + " in a cluster of " +
                                  std::to_string(n()));
        }
        return static_cast<unsigned>(i);
    }

    // ------------------------------------------------------------ stepping

    // One fixture step, then our own checks and the stashed Python error.
    py::tuple step() {
        struct raft_fixture_event* ev = raft_fixture_step(f_.get());
        after_step();
        return py::make_tuple(raft_fixture_event_type(ev), raft_fixture_event_server_index(ev));
    }

    void step_n(unsigned count) {
        for (unsigned k = 0; k < count; k++) {
            raft_fixture_step(f_.get());
            after_step();
        }
    }

    // Step until `done` or until max_ms of simulated time elapsed. True if done.
    template <typename Done>
    bool step_until(Done done, uint64_t max_ms) {
        raft_time start = raft_fixture_time(f_.get());
        while (!done()) {
            if (raft_fixture_time(f_.get()) - start >= max_ms) return false;
            raft_fixture_step(f_.get());
            after_step();
        }
        return true;
    }

    // Step until every server in `servers` applied `index`. An empty list
    // means the leader's side: there is a stable leader, and it and every live
    // server linked to it in both directions applied `index` (re-evaluated
    // after every step, so a leader change moves the side).
    bool step_until_applied(std::vector<int> servers, uint64_t index, uint64_t max_ms) {
        std::vector<unsigned> ks;
        for (int i : servers) ks.push_back(check(i));
        if (!ks.empty()) {
            return step_until(
                [&] {
                    for (unsigned k : ks) {
                        if (raft_last_applied(raft(k)) < index) return false;
                    }
                    return true;
                },
                max_ms);
        }
        return step_until(
            [&] {
                unsigned l = raft_fixture_leader_index(f_.get());
                if (l >= n()) return false;
                for (unsigned k = 0; k < n(); k++) {
                    if (k == l || reaches_both_ways(l, k)) {
                        if (raft_last_applied(raft(k)) < index) return false;
                    }
                }
                return true;
            },
            max_ms);
    }

    // Step until the outcome of the command submitted with `request_id` is
    // known (take_outcomes() then holds it). True if it is.
    bool step_until_outcome(uint64_t request_id, uint64_t max_ms) {
        watched_ = request_id;
        watched_seen_ = false;
        for (const auto& r : results_) watched_seen_ |= r.request_id == request_id;
        for (const auto& f : failures_) watched_seen_ |= f.request_id == request_id;
        bool done = step_until([&] { return watched_seen_; }, max_ms);
        watched_ = 0;
        return done;
    }

    bool step_until_leader(std::vector<int> exclude, uint64_t max_ms) {
        uint64_t mask = 0;
        for (int e : exclude) mask |= uint64_t(1) << check(e);
        return step_until(
            [&] {
                unsigned l = raft_fixture_leader_index(f_.get());
                return l < n() && !(mask & (uint64_t(1) << l));
            },
            max_ms);
    }

    bool step_until_no_leader(uint64_t max_ms) {
        return step_until([&] { return raft_fixture_leader_index(f_.get()) >= n(); }, max_ms);
    }

    bool step_until_state(int i, int state, uint64_t max_ms) {
        unsigned k = check(i);
        return step_until([&] { return int(raft_state(raft(k))) == state; }, max_ms);
    }

    void step_for(uint64_t ms) {
        step_until([] { return false; }, ms);
    }

    // ------------------------------------------------------------ elections

    void elect(int i) {
        unsigned k = check(i);
        unsigned leader = raft_fixture_leader_index(f_.get());
        if (leader == k) return;
        if (leader < n()) fail(RAFT_BUSY, "server " + std::to_string(leader) +
                                              " is the leader; depose it first");
        if (!raft_fixture_alive(f_.get(), k)) fail(RAFT_INVALID, "server is killed");
        if (raft_role(raft(k)) != RAFT_VOTER) fail(RAFT_BADROLE, "server is not a voter");
        for (unsigned j = 0; j < n(); j++) {
            if (raft_state(raft(j)) != RAFT_FOLLOWER) {
                fail(RAFT_BUSY, "server " + std::to_string(j) +
                                    " is not a follower; step until the cluster settles");
            }
        }
        raft_fixture_start_elect(f_.get(), k);
        step_until([&] { return raft_fixture_leader_index(f_.get()) < n(); }, 20000);
        if (raft_fixture_leader_index(f_.get()) != k) {
            fail(RAFT_NOCONNECTION, "server " + std::to_string(k) +
                                        " did not win the election (is it cut off?)");
        }
    }

    bool depose() {
        unsigned leader = raft_fixture_leader_index(f_.get());
        if (leader >= n()) fail(RAFT_NOTLEADER, "there is no stable leader to depose");
        for (unsigned j = 0; j < n(); j++) {
            if (j != leader && raft_state(raft(j)) != RAFT_FOLLOWER) {
                fail(RAFT_BUSY, "server " + std::to_string(j) + " is not a follower");
            }
        }
        raft_fixture_depose(f_.get());
        after_step();
        return raft_fixture_leader_index(f_.get()) >= n();
    }

    // ------------------------------------------------------------ proposals

    // Proposes `data` on server i; returns the log index of the new entry.
    uint64_t submit(int i, uint64_t request_id, const py::bytes& data) {
        unsigned k = check(i);
        struct raft* r = raft(k);
        if (raft_state(r) != RAFT_LEADER) fail(RAFT_NOTLEADER, "server is not the leader");
        char* ptr = nullptr;
        Py_ssize_t len = 0;
        if (PyBytes_AsStringAndSize(data.ptr(), &ptr, &len) != 0) throw py::error_already_set();
        std::vector<PendingCommand> cmds(1);
        cmds[0].request_id = request_id;
        cmds[0].data.assign(ptr, static_cast<size_t>(len));
        size_t bytes = kEnvelopeHeader + envelope_command_size(static_cast<size_t>(len));
        struct raft_buffer buf;
        buf.len = bytes;
        buf.base = raft_malloc(bytes);
        if (buf.base == nullptr) fail(RAFT_NOMEM, "out of memory");
        encode_envelope(static_cast<char*>(buf.base), servers_[k]->nonce, cmds, 0, 1);
        auto* req = new ApplyReq{};
        req->req.data = req;
        req->core = this;
        req->request_id = request_id;
        int rv = raft_apply(r, &req->req, &buf, 1, &FixtureCore::on_apply);
        if (rv != 0) {
            if (apply_rejected_early(rv)) raft_free(buf.base);
            delete req;
            // raft_errmsg may hold stale, non-UTF-8 bytes after an I/O failure.
            fail(rv, raft_strerror(rv));
        }
        return raft_last_index(r);
    }

    // ------------------------------------------------------------ membership

    // Adds a server to the fixture (raft_fixture_grow) and starts it with an empty
    // log, outside the configuration; returns its index. Its Raft id is index + 1.
    unsigned grow(py::object fsm, std::vector<unsigned> election_seed) {
        unsigned i = n();
        if (i >= RAFT_FIXTURE_MAX_SERVERS) {
            fail(RAFT_TOOMANY, "a fixture cluster has at most " +
                                   std::to_string(RAFT_FIXTURE_MAX_SERVERS) + " servers");
        }
        if (redraw_ && election_seed.size() != 1) {
            fail(RAFT_INVALID, "a seeded cluster needs one election seed for a new server");
        }
        auto s = std::make_unique<Server>();
        s->core = this;
        s->index = i;
        s->nonce = next_fixture_nonce++;
        s->py_fsm = std::move(fsm);
        s->fsm.version = 1;
        s->fsm.data = s.get();
        s->fsm.apply = &FixtureCore::fsm_apply;
        s->fsm.snapshot = &FixtureCore::fsm_snapshot;
        s->fsm.restore = &FixtureCore::fsm_restore;
        servers_.push_back(std::move(s));
        int rv = raft_fixture_grow(f_.get(), &servers_.back()->fsm);
        if (rv != 0) {
            // The fixture counted the server before failing: it cannot be used.
            fail(rv, "raft_fixture_grow failed; the cluster is unusable");
        }
        raft_set_pre_vote(raft(i), pre_vote_);
        if (!trace_) raft(i)->tracer = nullptr;
        Server& sv = *servers_.back();
        sv.election_timeout = raft(i)->election_timeout + 100 * i;
        if (redraw_) {
            sv.timeout_state = election_seed[0];
            draw_election_timeout(sv);
        }
        rv = raft_start(raft(i));
        if (rv != 0) {
            fail(rv, "raft_start of the new server failed; the cluster is unusable");
        }
        redraw_timeouts();
        return i;
    }

    // Proposes a membership change on server i (the leader): kind 0 adds server
    // `target` as a spare, 1 assigns it `role`, 2 removes it. The outcome comes
    // through take_outcomes() under request_id, like submit's (index 0).
    void change(int i, uint64_t request_id, int kind, int target, int role) {
        unsigned k = check(i);
        unsigned t = check(target);
        struct raft* r = raft(k);
        if (raft_state(r) != RAFT_LEADER) fail(RAFT_NOTLEADER, "server is not the leader");
        raft_id id = t + 1;  // the fixture's ids
        std::string address = std::to_string(id);  // the fixture's addresses
        auto* req = new ChangeReq{};
        req->req.data = req;
        req->core = this;
        req->request_id = request_id;
        int rv;
        switch (kind) {
            case 0:
                rv = raft_add(r, &req->req, id, address.c_str(), &FixtureCore::on_change);
                break;
            case 1:
                rv = raft_assign(r, &req->req, id, role, &FixtureCore::on_change);
                break;
            case 2:
                rv = raft_remove(r, &req->req, id, &FixtureCore::on_change);
                break;
            default:
                delete req;
                fail(RAFT_INVALID, "unknown membership change");
        }
        if (rv != 0) {
            delete req;  // a failed request stays ours (fix_libraft.sh assign-change)
            fail(rv, raft_strerror(rv));
        }
    }

    // Server i's configuration: [(index of the server, role)], by Raft id.
    std::vector<std::pair<int, int>> configuration(int i) {
        const struct raft_configuration& c = raft(check(i))->configuration;
        std::vector<std::pair<int, int>> out;
        for (unsigned j = 0; j < c.n; j++) {
            out.emplace_back(static_cast<int>(c.servers[j].id) - 1, c.servers[j].role);
        }
        return out;
    }

    int role(int i) { return raft_role(raft(check(i))); }

    // Outcomes since the last call: ([(request_id, index, ok, value)], [(request_id, code)]).
    py::tuple take_outcomes() {
        py::list results(results_.size());
        for (size_t i = 0; i < results_.size(); i++) {
            Result& res = results_[i];
            results[i] = py::make_tuple(res.request_id, res.index, res.ok, std::move(res.value));
        }
        results_.clear();
        py::list failures(failures_.size());
        for (size_t i = 0; i < failures_.size(); i++) {
            failures[i] = py::make_tuple(failures_[i].request_id, failures_[i].code);
        }
        failures_.clear();
        return py::make_tuple(std::move(results), std::move(failures));
    }

    // ------------------------------------------------------------ faults

    void saturate(int i, int j) { raft_fixture_saturate(f_.get(), pair(i, j), check(j)); }
    void desaturate(int i, int j) { raft_fixture_desaturate(f_.get(), pair(i, j), check(j)); }
    bool saturated(int i, int j) { return raft_fixture_saturated(f_.get(), pair(i, j), check(j)); }
    void disconnect(int i, int j) { raft_fixture_disconnect(f_.get(), pair(i, j), check(j)); }
    void reconnect(int i, int j) { raft_fixture_reconnect(f_.get(), pair(i, j), check(j)); }
    void kill(int i) { raft_fixture_kill(f_.get(), check(i)); }
    void revive(int i) { raft_fixture_revive(f_.get(), check(i)); }
    bool alive(int i) { return raft_fixture_alive(f_.get(), check(i)); }

    void set_network_latency(int i, unsigned ms) {
        raft_fixture_set_network_latency(f_.get(), check(i), ms);
    }
    // The fixture completes each write at its submission time + the latency of
    // then, so lowering the latency under in-flight writes would complete a later
    // write first (raft_io forbids it; libraft 0.22.1 then miscounts its persisted
    // entries). Unless `reorder`, a lower latency therefore waits until the
    // server has no write in flight, checked after every step. True if applied now.
    bool set_disk_latency(int i, unsigned ms, bool reorder) {
        unsigned k = check(i);
        Server& s = *servers_[k];
        s.lower_disk_latency = 0;
        if (!reorder && ms < s.disk_latency && !disk_idle(k)) {
            s.lower_disk_latency = ms;
            return false;
        }
        s.disk_latency = ms;
        raft_fixture_set_disk_latency(f_.get(), k, ms);
        return true;
    }
    unsigned disk_latency(int i) { return servers_[check(i)]->disk_latency; }
    void set_election_timeout(int i, unsigned ms) {
        // libraft draws the randomized timeout in [election_timeout, 2 x election_timeout].
        unsigned k = check(i);
        unsigned base = raft(k)->election_timeout;
        if (ms < base || ms > 2 * base) {
            fail(RAFT_INVALID, "the randomized election timeout must be within [" +
                                   std::to_string(base) + ", " + std::to_string(2 * base) + "]");
        }
        servers_[k]->election_timeout = ms;
        raft_fixture_set_randomized_election_timeout(f_.get(), k, ms);
    }
    unsigned election_timeout(int i) { return servers_[check(i)]->election_timeout; }
    void io_fault(int i, int delay, int repeat) {
        raft_fixture_io_fault(f_.get(), check(i), delay, repeat);
    }
    void set_snapshot_threshold(int i, unsigned n) { raft_set_snapshot_threshold(raft(check(i)), n); }
    void set_snapshot_trailing(int i, unsigned n) { raft_set_snapshot_trailing(raft(check(i)), n); }

    // ------------------------------------------------------------ inspection

    int leader_index() {
        unsigned l = raft_fixture_leader_index(f_.get());
        return l < n() ? static_cast<int>(l) : -1;
    }
    uint64_t time() { return raft_fixture_time(f_.get()); }
    int state(int i) { return static_cast<int>(raft_state(raft(check(i)))); }
    uint64_t term(int i) { return raft_current_term(raft(check(i))); }
    uint64_t voted_for(int i) { return raft_voted_for(raft(check(i))); }
    uint64_t commit_index(int i) { return raft_commit_index(raft(check(i))); }
    uint64_t last_index(int i) { return raft_last_index(raft(check(i))); }
    uint64_t last_applied(int i) { return raft_last_applied(raft(check(i))); }
    py::object fsm(int i) { return servers_[check(i)]->py_fsm; }
    uint64_t restored_at(int i) { return servers_[check(i)]->restored_at; }
    uint64_t snapshots_taken(int i) { return servers_[check(i)]->snapshots_taken; }
    uint64_t steps() const { return steps_; }

    py::object applied_commands(int i, uint64_t index) {
        auto& m = servers_[check(i)]->applied;
        auto it = m.find(index);
        if (it == m.end()) return py::none();
        py::list out;
        for (const auto& c : it->second) out.append(py::bytes(c));
        return std::move(out);
    }

    // First index at which two servers' FSMs applied different commands, as a
    // message; None if every index applied by two servers agrees.
    py::object applied_disagreement() {
        for (unsigned a = 0; a < n(); a++) {
            for (unsigned b = a + 1; b < n(); b++) {
                const auto& ma = servers_[a]->applied;
                const auto& mb = servers_[b]->applied;
                for (const auto& [index, cmds] : ma) {
                    auto it = mb.find(index);
                    if (it != mb.end() && it->second != cmds) {
                        return py::str("servers " + std::to_string(a) + " and " +
                                       std::to_string(b) + " applied different commands at index " +
                                       std::to_string(index));
                    }
                }
            }
        }
        return py::none();
    }

    // Safety violations seen after any step (two leaders in one term), as messages.
    std::vector<std::string> violations() const { return violations_; }

private:
    unsigned pair(int i, int j) {
        unsigned k = check(i);
        if (check(j) == k) throw py::value_error("a server has no link to itself");
        return k;
    }

    bool reaches_both_ways(unsigned a, unsigned b) {
        return raft_fixture_alive(f_.get(), a) && raft_fixture_alive(f_.get(), b) &&
               !raft_fixture_saturated(f_.get(), a, b) && !raft_fixture_saturated(f_.get(), b, a);
    }

    // No entries or snapshot being persisted (struct raft's own fields).
    bool disk_idle(unsigned k) {
        struct raft* r = raft(k);
        return r->last_stored >= raft_last_index(r) && !r->legacy.snapshot_taking &&
               !r->legacy.snapshot_install && r->legacy.snapshot_pending == nullptr &&
               !r->snapshot.installing;
    }

    void lower_disk_latencies() {
        for (auto& s : servers_) {
            if (s->lower_disk_latency != 0 && disk_idle(s->index)) {
                s->disk_latency = s->lower_disk_latency;
                s->lower_disk_latency = 0;
                raft_fixture_set_disk_latency(f_.get(), s->index, s->disk_latency);
            }
        }
    }

    void draw_election_timeout(Server& s) {
        unsigned base = raft(s.index)->election_timeout;
        s.election_timeout = raft_random(&s.timeout_state, base, 2 * base);
        raft_fixture_set_randomized_election_timeout(f_.get(), s.index, s.election_timeout);
    }

    // libraft draws a new randomized election timeout from its PRNG every
    // time it resets a follower's or candidate's election timer (on becoming
    // follower, at every election round). The fixture defeats that: before
    // every step it re-seeds each server's PRNG so that the next draw returns
    // the value given to raft_fixture_set_randomized_election_timeout, so a
    // server would draw that same value for ever and two servers with close
    // values could split the vote round after round. We detect a draw after
    // the step (the timer now expires exactly `election_timeout` ms from now)
    // and give the fixture the next value from this server's own raft_random
    // sequence. A heartbeat restarting the timer with the same value looks
    // the same and just draws one more; a draw the fixture's own elect/depose
    // hide is caught at the server's next draw, which returns the same value.
    void redraw_timeouts() {
        if (!redraw_) return;
        raft_time now = raft_fixture_time(f_.get());
        for (auto& s : servers_) {
            struct raft* r = raft(s->index);
            int st = int(raft_state(r));
            if (st != RAFT_FOLLOWER && st != RAFT_CANDIDATE) continue;
            if (raft_timeout(r) == now + s->election_timeout) draw_election_timeout(*s);
        }
    }

    void after_step() {
        steps_++;
        redraw_timeouts();
        lower_disk_latencies();
        // Election safety, across time: one leader per term, ever.
        for (unsigned k = 0; k < n(); k++) {
            struct raft* r = raft(k);
            if (raft_state(r) != RAFT_LEADER) continue;
            raft_term t = raft_current_term(r);
            auto [it, inserted] = leaders_.emplace(t, k);
            if (!inserted && it->second != k && violations_.size() < 16) {
                violations_.push_back("servers " + std::to_string(it->second) + " and " +
                                      std::to_string(k) + " were both leader in term " +
                                      std::to_string(t));
            }
        }
        if (stash_) {
            py::error_already_set err = std::move(*stash_);
            stash_.reset();
            throw err;
        }
    }

    // Keeps a non-Exception BaseException (KeyboardInterrupt, SystemExit) raised
    // inside the FSM to re-raise after the step, outside libraft.
    bool stash_if_fatal(py::error_already_set& e) {
        if (e.matches(PyExc_Exception)) return false;
        if (!stash_) stash_ = std::make_unique<py::error_already_set>(std::move(e));
        return true;
    }

    void add_result(uint64_t request_id, uint64_t index, bool ok, py::object value) {
        results_.push_back({request_id, index, ok, std::move(value)});
        watched_seen_ |= request_id == watched_;
    }

    static int fsm_apply(struct raft_fsm* fsm, const struct raft_buffer* buf,
                         void** result) noexcept {
        // Must return 0 (LIBRAFT_NOTES rule 6).
        *result = nullptr;
        auto* s = static_cast<Server*>(fsm->data);
        FixtureCore* core = s->core;
        uint64_t index = raft_last_applied(core->raft(s->index)) + 1;
        uint64_t nonce = 0;
        std::vector<DecodedCommand> cmds;
        std::string_view view(static_cast<const char*>(buf->base), buf->len);
        if (!decode_envelope(view, &nonce, &cmds)) {
            if (core->record_applied_) s->applied[index] = {std::string(view)};
            return 0;
        }
        bool mine = nonce == s->nonce;
        std::vector<std::string>* record = nullptr;
        if (core->record_applied_) {
            record = &s->applied[index];
            record->clear();
        }
        try {
            py::object apply = s->py_fsm.attr("apply");
            for (const auto& c : cmds) {
                if (record) record->emplace_back(c.data);
                py::bytes data(c.data.data(), c.data.size());
                try {
                    py::object value = apply(std::move(data));
                    if (mine && c.request_id) core->add_result(c.request_id, index, true, value);
                } catch (py::error_already_set& e) {
                    if (core->stash_if_fatal(e)) continue;
                    py::object exc = e.value();
                    if (mine && c.request_id) core->add_result(c.request_id, index, false, exc);
                }
            }
        } catch (py::error_already_set& e) {  // no apply attribute
            core->stash_if_fatal(e);
        } catch (...) {
        }
        return 0;
    }

    static int fsm_snapshot(struct raft_fsm* fsm, struct raft_buffer* bufs[],
                            unsigned* n) noexcept {
        auto* s = static_cast<Server*>(fsm->data);
        std::string data;
        try {
            py::object out = s->py_fsm.attr("snapshot")();
            // Any bytes-like object or a list of them, as on Node.
            if (!PyBytes_Check(out.ptr())) {
                out = py::module_::import("canonical_raft._codec").attr("snapshot_bytes")(out);
            }
            data = out.cast<std::string>();
        } catch (py::error_already_set& e) {
            s->core->stash_if_fatal(e);
            return RAFT_IOERR;  // libraft tries again at a later threshold check
        } catch (...) {
            return RAFT_IOERR;
        }
        s->snapshots_taken++;
        return craft::to_raft_snapshot(data, bufs, n);
    }

    static int fsm_restore(struct raft_fsm* fsm, struct raft_buffer* buf) noexcept {
        auto* s = static_cast<Server*>(fsm->data);
        try {
            py::bytes data(static_cast<const char*>(buf->base), buf->len);
            s->py_fsm.attr("restore")(std::move(data));
        } catch (py::error_already_set& e) {
            s->core->stash_if_fatal(e);
        } catch (...) {
        }
        raft_free(buf->base);
        s->restored_at = raft_commit_index(s->core->raft(s->index));
        return 0;
    }

    static void on_change(struct raft_change* r, int status) noexcept {
        auto* req = static_cast<ChangeReq*>(r->data);
        FixtureCore* core = req->core;
        try {
            if (status == 0) {
                core->add_result(req->request_id, 0, true, py::none());
            } else {
                core->failures_.push_back({req->request_id, status});
                core->watched_seen_ |= req->request_id == core->watched_;
            }
        } catch (...) {
        }
        delete req;
    }

    static void on_apply(struct raft_apply* r, int status, void*) noexcept {
        auto* req = static_cast<ApplyReq*>(r->data);
        // Success is reported by the FSM glue when the proposer applies the entry.
        if (status != 0) {
            try {
                req->core->failures_.push_back({req->request_id, status});
                req->core->watched_seen_ |= req->request_id == req->core->watched_;
            } catch (...) {
            }
        }
        delete req;
    }

    std::unique_ptr<struct raft_fixture> f_;
    bool initialized_ = false;
    bool record_applied_;
    bool pre_vote_;
    bool trace_;
    std::vector<std::unique_ptr<Server>> servers_;
    std::vector<Result> results_;
    std::vector<Failure> failures_;
    std::map<uint64_t, unsigned> leaders_;
    std::vector<std::string> violations_;
    std::unique_ptr<py::error_already_set> stash_;
    uint64_t steps_ = 0;
    bool redraw_;                // re-draw election timeouts (a seed was given)
    uint64_t watched_ = 0;       // request id step_until_outcome waits for (0: none)
    bool watched_seen_ = false;  // its outcome is in results_ or failures_
};

}  // namespace

void init_fixture(py::module_& m) {
    py::dict events;
    events["TICK"] = int(RAFT_FIXTURE_TICK);
    events["NETWORK"] = int(RAFT_FIXTURE_NETWORK);
    events["DISK"] = int(RAFT_FIXTURE_DISK);
    events["WORK"] = int(RAFT_FIXTURE_WORK);
    m.attr("fixture_events") = events;
    m.attr("FIXTURE_MAX_SERVERS") = int(RAFT_FIXTURE_MAX_SERVERS);

    py::class_<FixtureCore>(m, "FixtureCore")
        .def(py::init<py::list, bool, bool, bool, std::vector<unsigned>, std::vector<unsigned>>(),
             py::arg("fsms"), py::arg("pre_vote") = false, py::arg("record_applied") = true,
             py::arg("trace") = false, py::arg("election_timeouts") = std::vector<unsigned>(),
             py::arg("election_seeds") = std::vector<unsigned>())
        .def_property_readonly("n", &FixtureCore::n)
        .def_property_readonly("time", &FixtureCore::time)
        .def_property_readonly("steps", &FixtureCore::steps)
        .def("step", &FixtureCore::step)
        .def("step_n", &FixtureCore::step_n, py::arg("count"))
        .def("step_for", &FixtureCore::step_for, py::arg("ms"))
        .def("step_until_applied", &FixtureCore::step_until_applied, py::arg("servers"),
             py::arg("index"), py::arg("max_ms"))
        .def("step_until_outcome", &FixtureCore::step_until_outcome, py::arg("request_id"),
             py::arg("max_ms"))
        .def("step_until_leader", &FixtureCore::step_until_leader, py::arg("exclude"),
             py::arg("max_ms"))
        .def("step_until_no_leader", &FixtureCore::step_until_no_leader, py::arg("max_ms"))
        .def("step_until_state", &FixtureCore::step_until_state, py::arg("i"), py::arg("state"),
             py::arg("max_ms"))
        .def("elect", &FixtureCore::elect, py::arg("i"))
        .def("depose", &FixtureCore::depose)
        .def("submit", &FixtureCore::submit, py::arg("i"), py::arg("request_id"), py::arg("data"))
        .def("take_outcomes", &FixtureCore::take_outcomes)
        .def("grow", &FixtureCore::grow, py::arg("fsm"),
             py::arg("election_seed") = std::vector<unsigned>())
        .def("change", &FixtureCore::change, py::arg("i"), py::arg("request_id"),
             py::arg("kind"), py::arg("target"), py::arg("role") = 0)
        .def("configuration", &FixtureCore::configuration, py::arg("i"))
        .def("role", &FixtureCore::role, py::arg("i"))
        .def("saturate", &FixtureCore::saturate)
        .def("desaturate", &FixtureCore::desaturate)
        .def("saturated", &FixtureCore::saturated)
        .def("disconnect", &FixtureCore::disconnect)
        .def("reconnect", &FixtureCore::reconnect)
        .def("kill", &FixtureCore::kill)
        .def("revive", &FixtureCore::revive)
        .def("alive", &FixtureCore::alive)
        .def("set_network_latency", &FixtureCore::set_network_latency)
        .def("set_disk_latency", &FixtureCore::set_disk_latency, py::arg("i"), py::arg("ms"),
             py::arg("reorder") = false)
        .def("disk_latency", &FixtureCore::disk_latency, py::arg("i"))
        .def("set_election_timeout", &FixtureCore::set_election_timeout)
        .def("election_timeout", &FixtureCore::election_timeout)
        .def("io_fault", &FixtureCore::io_fault, py::arg("i"), py::arg("delay"),
             py::arg("repeat"))
        .def("set_snapshot_threshold", &FixtureCore::set_snapshot_threshold)
        .def("set_snapshot_trailing", &FixtureCore::set_snapshot_trailing)
        .def("leader_index", &FixtureCore::leader_index)
        .def("state", &FixtureCore::state)
        .def("term", &FixtureCore::term)
        .def("voted_for", &FixtureCore::voted_for)
        .def("commit_index", &FixtureCore::commit_index)
        .def("last_index", &FixtureCore::last_index)
        .def("last_applied", &FixtureCore::last_applied)
        .def("fsm", &FixtureCore::fsm)
        .def("restored_at", &FixtureCore::restored_at)
        .def("snapshots_taken", &FixtureCore::snapshots_taken)
        .def("applied_commands", &FixtureCore::applied_commands)
        .def("applied_disagreement", &FixtureCore::applied_disagreement)
        .def("violations", &FixtureCore::violations);
}

}  // namespace craft
