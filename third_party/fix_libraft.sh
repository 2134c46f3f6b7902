#!/usr/bin/env bash
# Our fixes to bugs of the libraft 0.22.1 release, applied to the fetched source
# (third_party/libraft-0.22.1, git-ignored) before it is compiled. Each fix is
# marked "canonical-raft fix" in the source, applied once, and checked.
# Usage: fix_libraft.sh SOURCE_DIR
set -euo pipefail
SRC=$1

fix() {  # fix NAME FILE PERL_SUBSTITUTION
  local name=$1 file="$SRC/src/$2" expr=$3
  grep -q "canonical-raft fix: $name" "$file" && return 0
  perl -0pi -e "$expr" "$file"
  grep -q "canonical-raft fix: $name" "$file" || {
    echo "fix_libraft: could not apply '$name' to $file" >&2; exit 1; }
}

# 1. takeSnapshotCb clears legacy.snapshot_pending before reading it, then starts
#    persisting a NULL request: SIGSEGV when an InstallSnapshot arrives while the
#    node takes its own snapshot. Read it first, then clear it.
fix snapshot-pending legacy.c \
  's/(\n[ \t]*)r->legacy\.snapshot_pending = NULL;(\n[ \t]*)persist = r->legacy\.snapshot_pending;/$1persist = r->legacy.snapshot_pending; \/* canonical-raft fix: snapshot-pending *\/$2r->legacy.snapshot_pending = NULL;/'

# 2. The handshake's address length comes from the peer: it was malloc'd unbounded
#    and later read with strlen() although nothing NUL-terminates it.
fix handshake-address uv_tcp_listen.c \
  's/(\n[ \t]*)h->address\.base = RaftHeapMalloc\(h->address\.len\);\n([ \t]*)if \(h->address\.base == NULL\) \{\n([ \t]*)return RAFT_NOMEM;\n([ \t]*)\}/$1\/* canonical-raft fix: handshake-address *\/$1if (h->address.len == 0 || h->address.len > 1024) {$1    return RAFT_MALFORMED;$1}$1h->address.base = RaftHeapMalloc(h->address.len + 1);\n$2if (h->address.base == NULL) {\n$3return RAFT_NOMEM;\n$4}$1((char *)h->address.base)[h->address.len] = 0;/'

# 3. The message decoders read their fixed fields without checking the header's
#    declared length: a short header from any TCP peer reads past the buffer
#    (SIGSEGV). Check that each type's fields, and AppendEntries' batch header,
#    fit before decoding.
fix header-length uv_encoding.c \
  's/(\nint uvDecodeMessage\(uint8_t type,)/\n\/* canonical-raft fix: header-length *\/\nstatic bool crHeaderFits(uint8_t type, uint8_t version, const uv_buf_t *h)\n{\n    const uint8_t *p = (const uint8_t *)h->base;\n    size_t len = h->len;\n    uint64_t n;\n    switch (type) {\n        case RAFT_REQUEST_VOTE:\n            return len >= 40 || (len >= 32 && (version == 1 || (version == 0 \&\& len == 32)));\n        case RAFT_REQUEST_VOTE_RESULT:\n            return len >= 24 || (len >= 16 && (version == 1 || (version == 0 \&\& len == 16)));\n        case RAFT_APPEND_ENTRIES:\n            if (len < 40) {\n                return false;\n            }\n            n = byteGet64(\&(const uint8_t *){p + 32});\n            return n <= (len - 40) \/ 16;\n        case RAFT_APPEND_ENTRIES_RESULT:\n            return len >= 28 || (len >= 26 && version == 1) || (len == 24 && version == 0);\n        case RAFT_INSTALL_SNAPSHOT:\n            if (len < 48) {\n                return false;\n            }\n            n = byteGet64(\&(const uint8_t *){p + 32});\n            \/* The configuration: format byte, server count, then at least 10 bytes\n             * (id, empty address, role) a server. *\/\n            if (n < 9 \|\| n > len - 48) {\n                return false;\n            }\n            return byteGet64(\&(const uint8_t *){p + 41}) <= (n - 9) \/ 10;\n        case RAFT_TIMEOUT_NOW:\n            return len >= 24;\n        default:\n            return true;\n    }\n}\n$1/' 

fix header-length-call uv_encoding.c \
  's/(\n    \*payload_len = 0;\n)/$1\n    if (!crHeaderFits(type, version, header)) { \/* canonical-raft fix: header-length-call *\/\n        return RAFT_MALFORMED;\n    }\n/'

# 4. raft_assign stores the request in r->legacy.change, then returns an error
#    on two paths (submitting the configuration change, e.g. RAFT_NOSPACE, and
#    forwarding the catch-up event) without clearing it. The caller owns a failed
#    request and frees it; libraft then read the freed request on every event and
#    wrote it and called its callback at step-down or close (SIGSEGV in raft_close).
fix assign-change legacy.c \
  's/(\n([ \t]*)r->configuration\.servers\[server_index\]\.role = old_role;\n)/$1$2r->legacy.change = NULL; \/* canonical-raft fix: assign-change *\/\n/'
fix assign-change-catch-up legacy.c \
  's/(event\.catch_up\.server_id = server->id;\n\n([ \t]*)rv = LegacyForwardToRaftIo\(r, &event\);\n[ \t]*if \(rv != 0\) \{\n)/$1$2    r->legacy.change = NULL; \/* canonical-raft fix: assign-change-catch-up *\/\n/'

# 5. clientChangeConfiguration leaks the encoded configuration when the submit
#    is refused before libraft takes it (RAFT_NOSPACE from a full log, and the
#    other early rejections that leave raft_apply's buffer to its caller).
fix change-buffer legacy.c \
  's/(rv = configurationEncode\(configuration, &entry\.buf\);\n(?:.*\n){0,14}?([ \t]*)rv = LegacyForwardToRaftIo\(r, &event\);\n[ \t]*if \(rv != 0\) \{\n)/$1$2    if (rv == RAFT_NOSPACE || rv == RAFT_NOTLEADER || rv == RAFT_CANTCHANGE ||\n$2        rv == RAFT_MALFORMED) { \/* canonical-raft fix: change-buffer *\/\n$2        raft_free(entry.buf.base);\n$2    }\n/'

# 6. Followers record the *first* index of an AppendEntries batch as the index of
#    every configuration change in it, so a change in the middle of a batch never
#    advances configuration_committed_index (one stayed at 1 after an add at
#    39154), and snapshots then carry a stale membership. Use the entry's index.
fix change-index replication.c \
  's/(\n[ \t]*)rv = membershipUncommittedChange\(r, index, entry\);/$1\/* canonical-raft fix: change-index *\/$1rv = membershipUncommittedChange(r, index + i, entry);/'

# 7. A new entry point: persist a snapshot that the application produced itself,
#    for an index it has applied (at or below last_applied), without libraft
#    calling fsm->snapshot on the loop thread. Our applier thread serialises the
#    FSM between two batches and the loop thread hands the bytes here; this does
#    what legacyTakeSnapshot + takeSnapshotCb do, with metadata exact for that
#    older index. See ../shared/SNAPSHOT_NOTES.md. Appended, so nothing of the
#    stock path changes. The completion also checks that the snapshot still
#    applies: an InstallSnapshot received meanwhile resets the trail (TrailRestore)
#    and forwarding RAFT_SNAPSHOT then would record an index the trail lacks.
if ! grep -q "canonical-raft fix: app-snapshot" "$SRC/src/legacy.c"; then
cat >> "$SRC/src/legacy.c" <<'CSRC'

/* canonical-raft fix: app-snapshot */
#include "trail.h"

typedef void (*raft_legacy_snapshot_put_cb)(struct raft *r, void *data,
                                            raft_index index, int status);

struct legacyAppSnapshot
{
    struct raft *r;
    struct raft_snapshot_metadata metadata;
    struct raft_snapshot snapshot;
    struct raft_io_snapshot_put put;
    void *data;
    raft_legacy_snapshot_put_cb cb;
};

/* The last configuration at or before index, which is committed. */
static int appSnapshotConfiguration(struct raft *r,
                                    raft_index index,
                                    struct raft_configuration *conf,
                                    raft_index *conf_index)
{
    raft_index committed = r->configuration_committed_index;
    raft_index i;
    for (i = index; i > 0; i--) {
        const struct raft_entry *entry;
        if (i == committed) {
            break;
        }
        entry = logGet(r->legacy.log, i);
        if (entry == NULL) {
            break; /* compacted */
        }
        if (entry->type == RAFT_CHANGE) {
            *conf_index = i;
            return configurationDecode(&entry->buf, conf);
        }
    }
    if (committed == 0 || committed > index) {
        return RAFT_NOTFOUND; /* a later capture will find it */
    }
    *conf_index = committed;
    return configurationCopy(&r->configuration_committed, conf);
}

static bool appSnapshotApplies(struct raft *r, raft_index index, raft_term term)
{
    return index > TrailSnapshotIndex(&r->trail) &&
           TrailTermOf(&r->trail, index) == term &&
           index > logSnapshotIndex(r->legacy.log) &&
           logTermOf(r->legacy.log, index) == term;
}

static void appSnapshotStartPending(struct raft *r)
{
    struct legacyPersistSnapshot *persist = r->legacy.snapshot_pending;
    if (persist != NULL) {
        r->legacy.snapshot_pending = NULL;
        if (legacyPersistSnapshotStart(persist) != 0) {
            r->legacy.snapshot_install = false; /* the leader will retry */
        }
    }
}

static void appSnapshotCb(struct raft_io_snapshot_put *put, int status)
{
    struct legacyAppSnapshot *req = put->data;
    struct raft *r = req->r;
    struct raft_snapshot_metadata metadata = req->metadata;
    raft_legacy_snapshot_put_cb cb = req->cb;
    void *data = req->data;
    struct raft_event event;

    r->legacy.snapshot_taking = false;
    raft_free(req);

    if (r->legacy.closing) {
        struct legacyPersistSnapshot *persist = r->legacy.snapshot_pending;
        r->legacy.snapshot_pending = NULL;
        if (persist != NULL) {
            legacyCancelPersistSnapshot(persist);
            raft_free(persist);
        }
        configurationClose(&metadata.configuration);
        cb(r, data, metadata.index, RAFT_CANCELED);
        return;
    }
    if (status == 0 && !appSnapshotApplies(r, metadata.index, metadata.term)) {
        status = RAFT_BUSY; /* superseded by an installed snapshot */
    }
    if (status != 0) {
        configurationClose(&metadata.configuration);
    } else {
        logSnapshot(r->legacy.log, metadata.index, r->legacy.snapshot_trailing);
        event.type = RAFT_SNAPSHOT;
        memset(&event.reserved, 0, sizeof event.reserved);
        event.snapshot.metadata = metadata; /* raft takes the configuration */
        event.snapshot.trailing = r->legacy.snapshot_trailing;
        LegacyForwardToRaftIo(r, &event);
    }
    appSnapshotStartPending(r);
    cb(r, data, metadata.index, status);
}

/* Persist bufs as the snapshot at index. The buffers stay the caller's and must
 * stay valid until cb(r, data, index, status), which is called only if this
 * returns 0. */
int raft_legacy_snapshot_put(struct raft *r,
                             raft_index index,
                             struct raft_buffer bufs[],
                             unsigned n_bufs,
                             void *data,
                             raft_legacy_snapshot_put_cb cb)
{
    struct legacyAppSnapshot *req;
    raft_term term;
    int rv;

    if (r->legacy.snapshot_trailing == 0 || index == 0 ||
        index > r->last_applied || n_bufs == 0 || cb == NULL) {
        return RAFT_INVALID; /* trailing 0 would make raft_uv wipe the log */
    }
    if (r->legacy.closing || r->state == RAFT_UNAVAILABLE) {
        return RAFT_CANCELED;
    }
    if (r->legacy.snapshot_taking || r->legacy.snapshot_install ||
        r->snapshot.installing || r->legacy.snapshot_pending != NULL) {
        return RAFT_BUSY;
    }
    term = TrailTermOf(&r->trail, index);
    if (term == 0 || !appSnapshotApplies(r, index, term)) {
        return RAFT_NOTFOUND; /* stale, or already compacted */
    }
    req = raft_malloc(sizeof *req);
    if (req == NULL) {
        return RAFT_NOMEM;
    }
    req->r = r;
    req->data = data;
    req->cb = cb;
    req->metadata.index = index;
    req->metadata.term = term;
    rv = appSnapshotConfiguration(r, index, &req->metadata.configuration,
                                  &req->metadata.configuration_index);
    if (rv != 0) {
        raft_free(req);
        return rv;
    }
    req->snapshot.index = index;
    req->snapshot.term = term;
    req->snapshot.configuration = req->metadata.configuration;
    req->snapshot.configuration_index = req->metadata.configuration_index;
    req->snapshot.bufs = bufs;
    req->snapshot.n_bufs = n_bufs;
    req->put.data = req;
    rv = r->io->snapshot_put(r->io, r->legacy.snapshot_trailing, &req->put,
                             &req->snapshot, appSnapshotCb);
    if (rv != 0) {
        configurationClose(&req->metadata.configuration);
        raft_free(req);
        return rv;
    }
    r->legacy.snapshot_taking = true;
    return 0;
}
CSRC
grep -q "canonical-raft fix: app-snapshot" "$SRC/src/legacy.c" || {
  echo "fix_libraft: could not apply 'app-snapshot'" >&2; exit 1; }
fi

# 8. decodeRequestVote reads the 8-byte flags for any version >= 1, but a 32-byte
#    RequestVote (version 1, or version 0 of exactly 32 bytes, both allowed by
#    header-length) has none: an 8-byte heap over-read. Read them only if present.
fix request-vote-flags uv_encoding.c \
  's/(\n[ \t]*)if \(p->version >= 1\) \{(\n[ \t]*uint64_t flags = byteGet64\(&cursor\);\n[ \t]*p->disrupt_leader)/$1\/* canonical-raft fix: request-vote-flags *\/$1if (p->version >= 1 && buf->len >= sizeofRequestVote()) {$2/'

# 9. configurationDecode has no bounds checks: it reads each server's id and role
#    wherever the cursor is, so a configuration shorter than it declares (e.g. 29
#    bytes, 2 servers, an 11-character first address) reads past the buffer, the
#    remaining length then wraps and the next address scan is unbounded. It
#    decodes configurations from peers (InstallSnapshot) and from disk. Check that
#    the header, each id, the address and the role byte are inside the buffer.
fix configuration-bounds configuration.c \
  's/(\n[ \t]*cursor = buf->base;\n)(\n[ \t]*\/\* Check the encoding format version \*\/)/$1\n    if (buf->len < 9) { \/* canonical-raft fix: configuration-bounds *\/\n        rv = RAFT_MALFORMED;\n        goto err;\n    }\n$2/;
   s/(\n([ \t]*)\/\* Server ID\. \*\/\n)/\n$2if (buf->len - (size_t)((const uint8_t *)cursor - (const uint8_t *)buf->base) < 10) {\n$2    rv = RAFT_MALFORMED; \/* canonical-raft fix: configuration-bounds-server *\/\n$2    goto err;\n$2}\n$1/;
   s/(\n([ \t]*)\/\* Role code\. \*\/\n)/\n$2if ((const uint8_t *)cursor >= (const uint8_t *)buf->base + buf->len) {\n$2    rv = RAFT_MALFORMED; \/* canonical-raft fix: configuration-bounds-role *\/\n$2    goto err;\n$2}\n$1/'

# 10. The header length a peer declares in the preamble was malloc'd with no limit
#     (only 0 was refused), so one connection could make the node allocate any size.
#     A legitimate header holds fixed fields plus 16 bytes per entry of one batch
#     (raft_uv's loader refuses batches of more than UV__MAX_SEGMENT_SIZE/32
#     entries: 4 MiB of entry headers) or one encoded configuration (persisted as
#     one entry): UV__MAX_SEGMENT_SIZE (8 MiB) bounds both. The payload length is
#     derived from the decoded header, so it stays as large as a snapshot needs.
fix message-length uv_recv.c \
  's/(\n([ \t]*)if \(s->header\.len == 0\) \{\n[ \t]*Tracef\(s->uv->tracer, "message has zero length"\);\n[ \t]*goto abort;\n[ \t]*\}\n)/$1$2if (s->header.len > UV__MAX_SEGMENT_SIZE) { \/* canonical-raft fix: message-length *\/\n$2    Tracef(s->uv->tracer, "message header too long");\n$2    goto abort;\n$2}\n/'

# 11. An InstallSnapshot that arrives while another one is being installed is
#     ignored (the leader re-sends it), but its configuration and data, which the
#     receiver owns, were never freed: 12 x 256 KiB in one run. Free them.
fix install-snapshot-leak recv_install_snapshot.c \
  's/(\n([ \t]*)rv = replicationInstallSnapshot\(r, args, &async\);\n)/\n$2if (r->snapshot.installing) { \/* canonical-raft fix: install-snapshot-leak *\/\n$2    raft_configuration_close(&args->conf);\n$2    raft_free(args->data.base);\n$2    return 0; \/* ignored, as replicationInstallSnapshot does *\/\n$2}\n$1/'

# 12. The fixture's ioMethodTruncate counts the entries to keep as index - 1, as if
#     its array always started at index 1; after an installed snapshot it starts at
#     start_index + 1, so truncating copied and freed past the array. Only the
#     raft_fixture (the simulation) is affected, not raft_uv.
fix fixture-truncate fixture.c \
  's/(\n[ \t]*)n = \(size_t\)\(index - 1\); \/\* Number of entries left after truncation \*\//$1\/* canonical-raft fix: fixture-truncate *\/$1n = index > io->start_index ? (size_t)(index - 1 - io->start_index) : 0;/'

# 13. A leader decides to send InstallSnapshot for its snapshot at index/term X,
#     then loads it (io->snapshot_get) asynchronously; if a newer snapshot was
#     taken meanwhile, legacyLoadSnapshotCb moved the message's last_index to the
#     loaded one but kept the old last_term. The follower then installed e.g.
#     31^11 where the leader's entry 31 is 31^13, found a "conflicting committed
#     entry" at the next AppendEntries and returned RAFT_SHUTDOWN, whose error
#     path frees the entries batch twice (recvAppendEntries and recvCb): "double
#     free" in the simulation (seed 5000105, 5 servers, snapshots on). Not
#     fixture-specific: raft_uv's snapshot_get also returns the latest snapshot.
fix snapshot-load-term legacy.c \
  's/(\n([ \t]*)params->last_index = snapshot->index;\n)/$1$2params->last_term = snapshot->term; \/* canonical-raft fix: snapshot-load-term *\/\n/'

# 14. A follower set commit_index = min(leader_commit, prev_log_index + n_entries)
#     whenever leader_commit was higher, so an AppendEntries whose last entry lies
#     below the follower's commit index (a new leader's heartbeat at a stale
#     next_index: prev 43, none, commit 46, on a follower at 44) moved it back.
#     libraft then took its next snapshot at that lower commit index, with the
#     FSM state of the higher last_applied: a follower installing it re-applied
#     entry 44 (the simulation's "FSM snapshots differ", seed 5502031, 5 servers,
#     pre-vote, snapshots and membership changes on). Never lower it.
fix commit-decrease replication.c \
  's/(\n([ \t]*)if \(args->leader_commit > r->commit_index)\) \{(\n[ \t]*raft_index last_new_entry = args->prev_log_index \+ args->n_entries;)/$1 \&\& \/* canonical-raft fix: commit-decrease *\/\n$2    args->prev_log_index + args->n_entries > r->commit_index) {$3/'

# 15. A pre-vote reply carried the request's term even when the voter's own term
#     was higher and it refused for that reason ("remote term is lower"), so the
#     candidate never learnt the higher term. Candidates with the longest logs
#     (term 4) then asked for term 5 for ever while the servers at terms 6 and 7,
#     with shorter logs, could not win: no leader, ever (simulation seed 5502788,
#     5 servers, pre-vote). Reply with the voter's term when it is higher (the
#     candidate then bumps its term, as recvRequestVoteResult already does).
fix pre-vote-term recv_request_vote.c \
  's/(\n([ \t]*)if \(args->pre_vote)\) \{(\n[ \t]*result->term = args->term;)/$1 \&\& args->term >= r->current_term) { \/* canonical-raft fix: pre-vote-term *\/$3/'

# 16. A follower took entries that its snapshot covers as missing (TrailTermOf is 0
#     below the snapshot) when an AppendEntries started at index 1 (prev 0 passes
#     the log-matching check), and appended them after its snapshot: entry 1 of
#     term 1 after records of higher terms (trail.c assertion; memory corruption
#     and SIGSEGV without assertions). Seen in the simulation with snapshots,
#     membership changes and lowered disk latencies (seed 5500300, 5 servers,
#     pre-vote). Entries at or below the snapshot index are committed and match:
#     skip them.
fix snapshot-covered-entries replication.c \
  's/(\n([ \t]*)raft_term local_term = TrailTermOf\(&r->trail, entry_index\);\n)/$1\n$2if (entry_index <= TrailSnapshotIndex(&r->trail)) {\n$2    continue; \/* canonical-raft fix: snapshot-covered-entries *\/\n$2}\n/'

# 17. The same for the previous entry: a follower whose snapshot (38) is past an
#     AppendEntries' prev_log_index (34), with the entries before its snapshot
#     compacted, answered "missing previous entry" and its hint sent the leader
#     further back; the leader then sent its snapshot (34), ignored as older
#     ("have more recent snapshot"), and started again: that follower never caught
#     up (simulation seed 3502160, 3 servers, pre-vote). An index at or below the
#     snapshot is committed, so the leader's entry there matches: accept it.
fix snapshot-covered-prev replication.c \
  's/(\n([ \t]*)local_prev_term = TrailTermOf\(&r->trail, args->prev_log_index\);\n)/\n$2if (args->prev_log_index <= TrailSnapshotIndex(&r->trail)) {\n$2    return 0; \/* canonical-raft fix: snapshot-covered-prev *\/\n$2}\n$1/'

# 18. A snapshot the node took itself that completes while an InstallSnapshot waits
#     for it (snapshot_pending) was still recorded: the core had already reset its
#     trail to the installed snapshot (TrailRestore when the install began), so
#     RAFT_SNAPSHOT for the older index read a term the trail no longer has
#     (trail.c assertion; garbage terms such as "36^49" without assertions, then a
#     follower that never caught up: simulation seed 3500786, 3 servers, pre-vote).
#     The install supersedes it: drop it and start the install.
fix take-snapshot-superseded legacy.c \
  's/\n    logSnapshot\(r->legacy\.log, metadata\.index, r->legacy\.snapshot_trailing\);\n\n    event\.type = RAFT_SNAPSHOT;\n    memset\(&event\.reserved, 0, sizeof event\.reserved\);\n    event\.snapshot\.metadata = metadata;\n    event\.snapshot\.trailing = r->legacy\.snapshot_trailing;\n    LegacyForwardToRaftIo\(r, &event\);\n/\n    if (r->legacy.snapshot_pending != NULL) { \/* canonical-raft fix: take-snapshot-superseded *\/\n        configurationClose(&metadata.configuration);\n    } else {\n        logSnapshot(r->legacy.log, metadata.index, r->legacy.snapshot_trailing);\n        event.type = RAFT_SNAPSHOT;\n        memset(&event.reserved, 0, sizeof event.reserved);\n        event.snapshot.metadata = metadata;\n        event.snapshot.trailing = r->legacy.snapshot_trailing;\n        LegacyForwardToRaftIo(r, &event);\n    }\n/'

# 19. A write that fails (raft_io set_term, set_vote, truncate, append or
#     snapshot_put returning an error, or an append/snapshot completing with one:
#     an I/O error; raft_uv retries a full disk instead) happens after
#     raft_step() has already taken the change into the core's memory (term,
#     vote, trail of entries); libraft 0.22.1 has no way to take it back. Its
#     legacy layer then:
#     - freed an AppendEntries/submitted batch twice: legacyHandleUpdateEntries
#       frees the batch before calling truncate/append (it owns it once raft_step
#       put it in the update) and returned the error; recvCb and raft_barrier
#       freed it again on that error ("double free"), and so did any raft_apply
#       caller that frees its buffer on an error (ours only does on an early
#       rejection, rule 5 of LIBRAFT_NOTES: then the entry was lost instead);
#     - discarded the entries from its own log (logDiscard) while the core's
#       trail kept them, and kept a term/vote in memory that the disk lacks;
#       later appends landed at the wrong place on disk (the fixture and raft_uv
#       append after whatever they hold), or hit an assertion;
#     - asserted that an asynchronous append or snapshot write only fails while
#       closing (release builds: it dropped the entries and went on);
#     - freed the snapshot install request twice when snapshot_put failed.
#     Moving the free after the I/O calls (our round-1 attempt) is not enough:
#     the core's trail and the legacy log still diverge, and the leader's own
#     entries, term and vote fail the same way. Rolling the core back is not
#     possible from outside raft_step (the trail, uncommitted configuration,
#     leader progress and commit index would all need undoing), so a node whose
#     write fails stops safely instead: it converts to RAFT_UNAVAILABLE (leader
#     state cleared, requests in flight fail with RAFT_LEADERSHIPLOST: their
#     entries may still commit through other servers), ignores ticks and
#     messages from then on (it sends nothing built on a log that differs from
#     its disk), refuses submissions with RAFT_NOTLEADER (an early rejection:
#     the caller keeps its buffer), and must be restarted from its disk: raft_uv
#     marks itself errored after a failed write anyway. The batch is freed once,
#     by the legacy layer, which owns it from raft_step on. A failed *send* is a
#     lost message, which Raft tolerates: the other messages still go out.
fix io-error-stop legacy.c \
  's/(\nstruct legacyPersistEntries\n\{)/\n\/* canonical-raft fix: io-error-stop *\/\n#include "convert.h"\n\nstatic void legacyStopOnIoError(struct raft *r, int status)\n{\n    if (r->legacy.closing || r->state == RAFT_UNAVAILABLE) {\n        return;\n    }\n    ErrMsgPrintf(r->errmsg, "write failed (%s): node stopped, restart it",\n                 errCodeToString(status));\n    convertClear(r);\n    r->state = RAFT_UNAVAILABLE;\n    LegacyFailPendingRequests(r);\n}\n$1/'
fix io-error-stop-append-cb legacy.c \
  's/(\n[ \t]*if \(status != 0\) \{\n)[ \t]*assert\(r->legacy\.closing\);\n[ \t]*assert\(status == RAFT_CANCELED\);\n([ \t]*goto out;)/$1        legacyStopOnIoError(r, status); \/* canonical-raft fix: io-error-stop-append-cb *\/\n$2/'
fix io-error-stop-snapshot-cb legacy.c \
  's/(\n[ \t]*\} else \{\n)[ \t]*assert\(r->legacy\.closing\);\n[ \t]*assert\(status == RAFT_CANCELED\);\n([ \t]*legacyCancelPersistSnapshot\(req\);)/$1        legacyStopOnIoError(r, status); \/* canonical-raft fix: io-error-stop-snapshot-cb *\/\n$2/'
# legacyPersistSnapshotStart frees its request on failure; its caller freed it again.
fix io-error-stop-snapshot-start legacy.c \
  's/(\nerr:\n)[ \t]*raft_free\(req\);\n([ \t]*ErrMsgTransferf\(r->io->errmsg, r->errmsg, "put snapshot at %llu",\n[ \t]*req->metadata\.index\);\n)([ \t]*return rv;\n\}\n\nstatic int legacyHandleUpdateSnapshot)/$1$2    legacyCancelPersistSnapshot(req); \/* canonical-raft fix: io-error-stop-snapshot-start *\/\n    raft_free(req);\n$3/'
fix io-error-stop-snapshot-update legacy.c \
  's/(\n[ \t]*rv = legacyPersistSnapshotStart\(req\);\n[ \t]*if \(rv != 0\) \{\n)[ \t]*goto err;\n(.*?\n    return 0;\n\n)err:\n    raft_free\(req\);\n    ErrMsgTransferf\(r->io->errmsg, r->errmsg, "put snapshot at %llu",\n                    req->metadata\.index\);\n    return rv;\n/$1        return rv; \/* canonical-raft fix: io-error-stop-snapshot-update (freed) *\/\n$2/s'
fix io-error-stop-event legacy.c \
  's/(rv = r->io->set_term\(r->io, raft_current_term\(r\)\);\n[ \t]*if \(rv != 0\) \{\n)[ \t]*return rv;/$1            goto io_failed; \/* canonical-raft fix: io-error-stop-event *\//;
   s/(rv = r->io->set_vote\(r->io, raft_voted_for\(r\)\);\n[ \t]*if \(rv != 0\) \{\n)[ \t]*return rv;/$1            goto io_failed;/;
   s/(\n[ \t]*if \(update\.flags & RAFT_UPDATE_ENTRIES\) \{\n)([ \t]*rv = legacyHandleUpdateEntries\(r, update\.entries\.index,\n[ \t]*update\.entries\.batch, update\.entries\.n\);\n[ \t]*if \(rv != 0\) \{\n)[ \t]*return rv;/$1        update.flags &= ~(unsigned)RAFT_UPDATE_ENTRIES; \/* consumed, even on error *\/\n$2            goto io_failed;/;
   s/(\n[ \t]*if \(update\.flags & RAFT_UPDATE_SNAPSHOT\) \{\n)([ \t]*rv = legacyHandleUpdateSnapshot\(\n(?:.*\n){2}?[ \t]*if \(rv != 0\) \{\n)[ \t]*return rv;/$1        update.flags &= ~(unsigned)RAFT_UPDATE_SNAPSHOT; \/* consumed, even on error *\/\n$2            goto io_failed;/'
fix io-error-stop-label legacy.c \
  's/(\n[ \t]*LegacyLeadershipTransferClose\(r\);\n[ \t]*\}\n[ \t]*\}\n[ \t]*\}\n\n    return 0;\n)\}\n/$1\nio_failed: \/* canonical-raft fix: io-error-stop-label *\/\n    \/* Entries or a snapshot that the failed write came before: ours to free. *\/\n    if (update.flags & RAFT_UPDATE_ENTRIES) {\n        raft_free(update.entries.batch[0].batch);\n    }\n    if (update.flags & RAFT_UPDATE_SNAPSHOT) {\n        raft_configuration_close(&update.snapshot.metadata.configuration);\n        raft_free(update.snapshot.chunk.base);\n    }\n    legacyStopOnIoError(r, rv);\n    return 0; \/* handled: the callers must not free the batch again *\/\n}\n/'
fix io-error-stop-forward legacy.c \
  's/(\n    assert\(r->io != NULL\);\n\n)(    \/\* Initially the set of events contains only the event passed as)/$1    if (r->state == RAFT_UNAVAILABLE) { \/* canonical-raft fix: io-error-stop-forward *\/\n        return RAFT_NOTLEADER; \/* stopped: nothing reaches raft_step *\/\n    }\n\n$2/;
   s/(\n[ \t]*for \(i = 0; i < n_events; i\+\+\) \{\n[ \t]*if \(r->legacy\.closing)\) \{/$1 || r->state == RAFT_UNAVAILABLE) {/'
fix io-error-stop-tick legacy.c \
  's/(\n    r = io->data;\n\n)(    event\.type = RAFT_TIMEOUT;)/$1    if (r->state == RAFT_UNAVAILABLE) { \/* canonical-raft fix: io-error-stop-tick *\/\n        LegacyFailPendingRequests(r); \/* submitted as the write failed *\/\n        return;\n    }\n\n$2/'
fix io-error-stop-recv legacy.c \
  's/(static void recvCb\(struct raft_io \*io, struct raft_message \*message\)\n\{\n(?:.*\n){3}?\n[ \t]*if \(r->legacy\.closing)\) \{/$1 || r->state == RAFT_UNAVAILABLE) { \/* canonical-raft fix: io-error-stop-recv *\//'
fix io-error-stop-send legacy.c \
  's/(\n[ \t]*rv = legacySendMessage\(r, &messages\[i\]\);\n[ \t]*if \(rv != 0\) \{\n)[ \t]*return rv;/$1            continue; \/* canonical-raft fix: io-error-stop-send (a lost message) *\//'
fix io-error-stop-clear convert.c \
  's/(void convertClear\(struct raft \*r\)\n\{\n[ \t]*assert\(r->state == RAFT_FOLLOWER \|\| r->state == RAFT_CANDIDATE \|\|\n[ \t]*r->state == RAFT_LEADER)\);/$1 ||\n           r->state == RAFT_UNAVAILABLE); \/* canonical-raft fix: io-error-stop-clear *\//'
# The substitutions above without a marker of their own: check them too.
[[ $(grep -c 'goto io_failed;' "$SRC/src/legacy.c") == 4 &&
   $(grep -c 'update.flags &= ~(unsigned)RAFT_UPDATE_' "$SRC/src/legacy.c") == 2 &&
   $(grep -c '^        if (r->legacy.closing || r->state == RAFT_UNAVAILABLE) {$' "$SRC/src/legacy.c") == 1 ]] || {
  echo "fix_libraft: could not apply all of 'io-error-stop'" >&2; exit 1; }
# The entries legacyHandleUpdateEntries copied into its log are its own, and the
# node stops on the error: free them (logDiscard leaves them to a caller).
fix io-error-stop-discard legacy.c \
  's/(\nerr:\n)    logDiscard\(r->legacy\.log, index\);\n(    raft_free\(req\);\n    ErrMsgTransferf\(r->io->errmsg, r->errmsg, "append %u entries", n\);)/$1    logTruncate(r->legacy.log, index); \/* canonical-raft fix: io-error-stop-discard *\/\n$2/'
