/* Regression tests for our fixes to libraft 0.22.1 (third_party/fix_libraft.sh),
 * compiled with the patched source under AddressSanitizer + LeakSanitizer by
 * tests/libraft/build.sh and run one case per process by
 * tests/test_libraft_suite.py. Each case exercises the path its fix changes:
 * without the fix it is an ASan/LSan report or a failed check (exit 1); with it,
 * exit 0 and "ok NAME" on stdout.
 *
 * Usage: regress CASE   (regress --list prints the cases)
 */
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "../../third_party/libraft-0.22.1/include/raft.h"
#include "../../third_party/libraft-0.22.1/include/raft/fixture.h"
#include "../../third_party/libraft-0.22.1/include/raft/uv.h"
#include "../../third_party/libraft-0.22.1/src/configuration.h"
#include "../../third_party/libraft-0.22.1/src/trail.h"
#include "../../third_party/libraft-0.22.1/src/uv_encoding.h"

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                \
            exit(1);                                                       \
        }                                                                  \
    } while (0)

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

/* A buffer of exactly len bytes on the heap, so ASan sees any over-read. */
static uint8_t *exact(const uint8_t *bytes, size_t len)
{
    uint8_t *p = malloc(len);
    CHECK(p != NULL);
    memcpy(p, bytes, len);
    return p;
}

/* request-vote-flags: a 32-byte RequestVote of version 1 (and of version 0)
 * passes the header-length check and has no flags field. */
static int caseRequestVoteFlags(void)
{
    for (uint8_t version = 0; version <= 1; version++) {
        uint8_t raw[32];
        put64(raw, 5);       /* term */
        put64(raw + 8, 2);   /* candidate id */
        put64(raw + 16, 10); /* last log index */
        put64(raw + 24, 4);  /* last log term */
        uv_buf_t header = {.base = (char *)exact(raw, sizeof raw), .len = 32};
        struct raft_message message;
        size_t payload_len;
        int rv = uvDecodeMessage(RAFT_REQUEST_VOTE, version, &header, &message,
                                 &payload_len);
        CHECK(rv == 0);
        CHECK(message.request_vote.term == 5);
        CHECK(message.request_vote.last_log_term == 4);
        CHECK(!message.request_vote.pre_vote);
        CHECK(!message.request_vote.disrupt_leader);
        free(header.base);
    }
    return 0;
}

/* 29 bytes: format 1, 2 servers, server 1 = id 1 + "127.0.0.1:1\0" (12 bytes),
 * and nothing for its role byte or the second server. */
static size_t shortConfiguration(uint8_t *raw)
{
    raw[0] = 1;
    put64(raw + 1, 2);
    put64(raw + 9, 1);
    memcpy(raw + 17, "127.0.0.1:1", 12);
    return 29;
}

/* configuration-bounds: configurationDecode on its own... */
static int caseConfigurationBounds(void)
{
    uint8_t raw[64];
    size_t len = shortConfiguration(raw);
    struct raft_buffer buf = {.base = exact(raw, len), .len = len};
    struct raft_configuration conf;
    CHECK(configurationDecode(&buf, &conf) == RAFT_MALFORMED);
    free(buf.base);

    /* ...a well-formed one still decodes... */
    struct raft_configuration good;
    struct raft_buffer enc;
    configurationInit(&good);
    CHECK(configurationAdd(&good, 1, "127.0.0.1:1", RAFT_VOTER) == 0);
    CHECK(configurationAdd(&good, 2, "127.0.0.1:2", RAFT_STANDBY) == 0);
    CHECK(configurationEncode(&good, &enc) == 0);
    for (size_t cut = 0; cut < enc.len; cut++) { /* ...and every truncation fails */
        uint8_t *p = exact(enc.base, enc.len);
        struct raft_buffer part = {.base = p, .len = cut};
        int rv = cut == 0 ? RAFT_MALFORMED : configurationDecode(&part, &conf);
        /* The encoding is padded to 8 bytes: cuts in the padding still decode. */
        if (rv == 0) {
            CHECK(conf.n == 2);
            configurationClose(&conf);
        } else {
            CHECK(rv == RAFT_MALFORMED);
        }
        free(p);
    }
    struct raft_buffer whole = {.base = exact(enc.base, enc.len), .len = enc.len};
    CHECK(configurationDecode(&whole, &conf) == 0);
    CHECK(conf.n == 2 && conf.servers[1].role == RAFT_STANDBY);
    configurationClose(&conf);
    free(whole.base);
    raft_free(enc.base);
    configurationClose(&good);
    return 0;
}

/* configuration-bounds, reached from the network: an InstallSnapshot header
 * whose configuration is the 29-byte one above (header-length lets it pass). */
static int caseInstallSnapshotConfiguration(void)
{
    uint8_t full[48 + 29];
    memset(full, 0, sizeof full);
    put64(full, 3);       /* term */
    put64(full + 8, 10);  /* last index */
    put64(full + 16, 2);  /* last term */
    put64(full + 24, 1);  /* configuration index */
    put64(full + 32, 29); /* configuration length */
    shortConfiguration(full + 40);
    put64(full + 40 + 29, 0); /* data length */
    uv_buf_t header = {.base = (char *)exact(full, sizeof full), .len = sizeof full};
    struct raft_message message;
    size_t payload_len;
    int rv = uvDecodeMessage(RAFT_INSTALL_SNAPSHOT, 0, &header, &message,
                             &payload_len);
    CHECK(rv == RAFT_MALFORMED);
    free(header.base);
    return 0;
}

/* message-length: a peer connects to raft_uv, sends a valid handshake and a
 * preamble declaring a 1 GiB header, then a few bytes. Count what raft_uv asks
 * the heap for. */
static size_t largest;
static void *hMalloc(void *d, size_t n)
{
    (void)d;
    if (n > largest) {
        largest = n;
    }
    return malloc(n);
}
static void hFree(void *d, void *p) { (void)d; free(p); }
static void *hCalloc(void *d, size_t a, size_t b)
{
    (void)d;
    if (a * b > largest) {
        largest = a * b;
    }
    return calloc(a, b);
}
static void *hRealloc(void *d, void *p, size_t n)
{
    (void)d;
    if (n > largest) {
        largest = n;
    }
    return realloc(p, n);
}
static void *hAligned(void *d, size_t a, size_t n)
{
    (void)d;
    return aligned_alloc(a, n);
}
static void hAlignedFree(void *d, size_t a, void *p) { (void)d; (void)a; free(p); }

static void recvCb(struct raft_io *io, struct raft_message *m) { (void)io; (void)m; }
static void tickCb(struct raft_io *io) { (void)io; }
static int closed;
static void ioCloseCb(struct raft_io *io) { (void)io; closed++; }

static int caseMessageLength(void)
{
    struct raft_heap heap = {NULL, hMalloc, hFree, hCalloc, hRealloc, hAligned,
                             hAlignedFree};
    char dir[] = "/tmp/craft-regress-XXXXXX";
    uv_loop_t loop;
    struct raft_uv_transport transport = {0};
    struct raft_io io = {0};
    int port = 0;

    CHECK(mkdtemp(dir) != NULL);
    raft_heap_set(&heap);
    CHECK(uv_loop_init(&loop) == 0);
    transport.version = 1;
    CHECK(raft_uv_tcp_init(&transport, &loop) == 0);
    CHECK(raft_uv_init(&io, &loop, dir, &transport) == 0);
    static char address[64];
    for (int attempt = 0; attempt < 50; attempt++) {
        port = 20000 + (int)((unsigned)getpid() * 7919u + (unsigned)attempt * 131u) % 12000;
        snprintf(address, sizeof address, "127.0.0.1:%d", port);
        if (io.init(&io, 1, address) == 0) {
            break;
        }
        port = 0;
    }
    CHECK(port != 0);
    CHECK(io.start(&io, 1000, tickCb, recvCb) == 0);

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    uint8_t hello[24 + 16 + 16 + 8];
    memset(hello, 0, sizeof hello);
    put64(hello, 1);        /* protocol */
    put64(hello + 8, 7);    /* server id */
    put64(hello + 16, 16);  /* address length */
    memcpy(hello + 24, "127.0.0.1:1", 11);
    put64(hello + 40, RAFT_APPEND_ENTRIES); /* message type */
    put64(hello + 48, (uint64_t)1 << 30);   /* header length: 1 GiB */
    memcpy(hello + 56, "abcdefgh", 8);
    CHECK(write(fd, hello, sizeof hello) == (ssize_t)sizeof hello);
    for (int i = 0; i < 50; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(2000);
    }
    close(fd);
    for (int i = 0; i < 20; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    io.close(&io, ioCloseCb);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(closed == 1);
    raft_uv_close(&io);
    raft_uv_tcp_close(&transport);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
    raft_heap_set_default();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    fprintf(stderr, "largest allocation: %zu bytes\n", largest);
    CHECK(largest <= 8 * 1024 * 1024);
    return 0;
}

/* A counter FSM for the fixture: 8-byte commands, 8-byte snapshots. */
struct counter
{
    uint64_t n;
};
static int fsmApply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    (void)buf;
    ((struct counter *)fsm->data)->n++;
    *result = NULL;
    return 0;
}
static int fsmSnapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n)
{
    *bufs = raft_malloc(sizeof **bufs);
    (*bufs)[0].len = 256 * 1024; /* large enough to notice when leaked */
    (*bufs)[0].base = raft_calloc(1, (*bufs)[0].len);
    memcpy((*bufs)[0].base, &((struct counter *)fsm->data)->n, 8);
    *n = 1;
    return 0;
}
static int fsmRestore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    memcpy(&((struct counter *)fsm->data)->n, buf->base, 8);
    raft_free(buf->base);
    return 0;
}

#define N_SERVERS 3
struct cluster
{
    struct raft_fixture f;
    struct raft_fsm fsms[N_SERVERS];
    struct counter counters[N_SERVERS];
};

static void clusterStart(struct cluster *c, unsigned threshold, unsigned trailing)
{
    struct raft_configuration conf;
    CHECK(raft_fixture_initialize(&c->f) == 0);
    for (unsigned i = 0; i < N_SERVERS; i++) {
        c->counters[i].n = 0;
        memset(&c->fsms[i], 0, sizeof c->fsms[i]);
        c->fsms[i].version = 1;
        c->fsms[i].data = &c->counters[i];
        c->fsms[i].apply = fsmApply;
        c->fsms[i].snapshot = fsmSnapshot;
        c->fsms[i].restore = fsmRestore;
        CHECK(raft_fixture_grow(&c->f, &c->fsms[i]) == 0);
        raft_set_snapshot_threshold(raft_fixture_get(&c->f, i), threshold);
        raft_set_snapshot_trailing(raft_fixture_get(&c->f, i), trailing);
    }
    CHECK(raft_fixture_configuration(&c->f, N_SERVERS, &conf) == 0);
    CHECK(raft_fixture_bootstrap(&c->f, &conf) == 0);
    raft_configuration_close(&conf);
    CHECK(raft_fixture_start(&c->f) == 0);
}

static void applyCb(struct raft_apply *req, int status, void *result)
{
    (void)status;
    (void)result;
    raft_free(req);
}

static void applyOne(struct raft *r)
{
    struct raft_apply *req = raft_malloc(sizeof *req);
    struct raft_buffer buf = {.base = raft_calloc(1, 8), .len = 8};
    CHECK(req != NULL && buf.base != NULL);
    CHECK(raft_apply(r, req, &buf, 1, applyCb) == 0);
}

static void isolate(struct raft_fixture *f, unsigned i, bool on)
{
    for (unsigned j = 0; j < raft_fixture_n(f); j++) {
        if (j == i) {
            continue;
        }
        if (on) {
            raft_fixture_disconnect(f, i, j);
            raft_fixture_disconnect(f, j, i);
        } else {
            raft_fixture_reconnect(f, i, j);
            raft_fixture_reconnect(f, j, i);
        }
    }
}

static void applyN(struct cluster *c, unsigned leader, unsigned n, bool wait)
{
    struct raft *r = raft_fixture_get(&c->f, leader);
    for (unsigned k = 0; k < n; k++) {
        applyOne(r);
    }
    if (wait) {
        raft_index want = raft_last_index(r);
        CHECK(raft_fixture_step_until_applied(&c->f, leader, want, 10000));
    }
}

/* install-snapshot-leak: server 2 is behind the leader's compacted log and is
 * installing a snapshot that takes its slow disk 5 s to persist; the leader
 * re-sends InstallSnapshot every 200 ms meanwhile. LSan checks each copy was
 * freed (exit with a leak report otherwise). */
static int caseInstallSnapshotLeak(void)
{
    static struct cluster c;
    clusterStart(&c, 4, 2);
    raft_fixture_elect(&c.f, 0);
    raft_set_install_snapshot_timeout(raft_fixture_get(&c.f, 0), 200);
    isolate(&c.f, 2, true);
    applyN(&c, 0, 20, true);
    raft_fixture_step_until_elapsed(&c.f, 500); /* the leader compacts */
    raft_fixture_set_disk_latency(&c.f, 2, 5000);
    isolate(&c.f, 2, false);
    raft_fixture_step_until_elapsed(&c.f, 3000);
    CHECK(raft_fixture_get(&c.f, 2)->snapshot.installing);
    raft_fixture_set_disk_latency(&c.f, 2, 10);
    CHECK(raft_fixture_step_until_applied(&c.f, 2, raft_last_index(raft_fixture_get(&c.f, 0)), 20000));
    raft_fixture_close(&c.f);
    return 0;
}

static bool otherLeader(struct raft_fixture *f, void *arg)
{
    (void)arg;
    return raft_state(raft_fixture_get(f, 0)) == RAFT_LEADER ||
           raft_state(raft_fixture_get(f, 1)) == RAFT_LEADER;
}

/* fixture-truncate: server 2 installs a snapshot (its fixture log then starts
 * past index 1), is elected, appends entries alone, and is then overruled by a
 * new leader: the conflicting suffix is truncated from the fixture's log. */
static int caseFixtureTruncate(void)
{
    static struct cluster c;
    clusterStart(&c, 4, 2);
    raft_fixture_elect(&c.f, 0);
    isolate(&c.f, 2, true);
    applyN(&c, 0, 20, true);
    raft_fixture_step_until_elapsed(&c.f, 500); /* the leader compacts */
    isolate(&c.f, 2, false);
    raft_index last = raft_last_index(raft_fixture_get(&c.f, 0));
    CHECK(raft_fixture_step_until_applied(&c.f, 2, last, 10000));
    raft_fixture_depose(&c.f);
    raft_fixture_elect(&c.f, 2);
    isolate(&c.f, 2, true);
    applyN(&c, 2, 3, false); /* never committed */
    CHECK(raft_fixture_step_until(&c.f, otherLeader, NULL, 10000));
    unsigned leader = raft_state(raft_fixture_get(&c.f, 0)) == RAFT_LEADER ? 0 : 1;
    applyN(&c, leader, 5, true);
    isolate(&c.f, 2, false);
    last = raft_last_index(raft_fixture_get(&c.f, leader));
    CHECK(raft_fixture_step_until_applied(&c.f, 2, last, 20000));
    CHECK(c.counters[2].n == c.counters[leader].n);
    raft_fixture_close(&c.f);
    return 0;
}

/* snapshot-load-term: leader 1 (term 3) holds a snapshot of term 2 and starts
 * loading it for server 2 on a slow disk; meanwhile its disk gets fast and it
 * takes a snapshot of term 3. The load returns the new snapshot: the message must
 * carry its term, not the old one's. */
static int caseSnapshotLoadTerm(void)
{
    static struct cluster c;
    clusterStart(&c, 4, 2);
    raft_fixture_elect(&c.f, 0);
    raft_fixture_kill(&c.f, 2);
    applyN(&c, 0, 20, true);
    raft_fixture_step_until_elapsed(&c.f, 500); /* servers 0 and 1 compact */
    raft_fixture_depose(&c.f);
    raft_fixture_elect(&c.f, 1);
    struct raft *leader = raft_fixture_get(&c.f, 1);
    CHECK(raft_current_term(leader) > 2);
    raft_fixture_set_disk_latency(&c.f, 1, 1000);
    raft_fixture_revive(&c.f, 2);
    raft_fixture_step_until_elapsed(&c.f, 300); /* the snapshot load is in flight */
    raft_fixture_set_disk_latency(&c.f, 1, 10);
    applyN(&c, 1, 6, true); /* a new snapshot, of the new term, before it ends */
    raft_index last = raft_last_index(leader);
    CHECK(raft_fixture_step_until_applied(&c.f, 2, last - 3, 10000));
    struct raft *follower = raft_fixture_get(&c.f, 2);
    raft_index installed = TrailSnapshotIndex(&follower->trail);
    CHECK(installed > 21);
    CHECK(TrailTermOf(&follower->trail, installed) == raft_current_term(leader));
    raft_fixture_close(&c.f);
    return 0;
}

/* io-error-stop: a write that fails after raft_step took the change. */
static int applied_status[64];
static unsigned n_applied_status;
static void applyStatusCb(struct raft_apply *req, int status, void *result)
{
    (void)result;
    if (n_applied_status < 64) {
        applied_status[n_applied_status++] = status;
    }
    raft_free(req);
}
static int applyWithStatus(struct raft *r)
{
    struct raft_apply *req = raft_malloc(sizeof *req);
    struct raft_buffer buf = {.base = raft_calloc(1, 8), .len = 8};
    CHECK(req != NULL && buf.base != NULL);
    int rv = raft_apply(r, req, &buf, 1, applyStatusCb);
    if (rv != 0) { /* an early rejection: both stay ours */
        raft_free(buf.base);
        raft_free(req);
    }
    return rv;
}

/* The remaining servers still commit; the failed one stopped safely. */
static void checkStoppedAndOthersCommit(struct cluster *c, unsigned failed)
{
    struct raft *stopped = raft_fixture_get(&c->f, failed);
    CHECK(raft_state(stopped) == RAFT_UNAVAILABLE);
    CHECK(strstr(raft_errmsg(stopped), "node stopped") != NULL);
    CHECK(applyWithStatus(stopped) == RAFT_NOTLEADER); /* refused, buffer kept */
    raft_fixture_step_until_elapsed(&c->f, 3000);
    /* Not raft_fixture_leader_index: its stable leader needs every live server
     * to know it, and the stopped one does not. */
    unsigned leader = N_SERVERS;
    for (unsigned i = 0; i < N_SERVERS; i++) {
        if (raft_state(raft_fixture_get(&c->f, i)) == RAFT_LEADER) {
            leader = i;
        }
    }
    CHECK(leader < N_SERVERS && leader != failed);
    applyN(c, leader, 5, true);
    for (unsigned i = 0; i < N_SERVERS; i++) {
        if (i != failed) {
            CHECK(raft_fixture_step_until_applied(&c->f, i,
                                                  raft_last_index(raft_fixture_get(&c->f, leader)),
                                                  10000));
        }
    }
}

/* A follower's append of an AppendEntries batch fails: libraft freed the batch
 * before the append, returned the error, and recvCb freed it again (ASan:
 * double free). */
static int caseIoErrorFollower(void)
{
    static struct cluster c;
    clusterStart(&c, 1000, 10);
    raft_fixture_elect(&c.f, 0);
    applyN(&c, 0, 3, true);
    raft_fixture_io_fault(&c.f, 1, 0, 1); /* its next write fails */
    applyN(&c, 0, 1, true);
    checkStoppedAndOthersCommit(&c, 1);
    raft_fixture_close(&c.f);
    return 0;
}

/* The leader's append of its own entry fails inside raft_apply: libraft freed
 * the entry and returned the error, which tells the caller the buffer is still
 * its own (ASan: double free); or, returning success, left the core's log ahead
 * of both the legacy log and the disk. Now raft_apply succeeds, the request
 * fails with RAFT_LEADERSHIPLOST, and the others elect a new leader. */
static int caseIoErrorLeader(void)
{
    static struct cluster c;
    clusterStart(&c, 1000, 10);
    raft_fixture_elect(&c.f, 0);
    applyN(&c, 0, 3, true);
    raft_fixture_io_fault(&c.f, 0, 0, 1);
    n_applied_status = 0;
    CHECK(applyWithStatus(raft_fixture_get(&c.f, 0)) == 0);
    raft_fixture_step_until_elapsed(&c.f, 200);
    CHECK(n_applied_status == 1 && applied_status[0] == RAFT_LEADERSHIPLOST);
    checkStoppedAndOthersCommit(&c, 0);
    raft_fixture_close(&c.f);
    return 0;
}

/* Server 2 led alone and holds 3 entries nobody else has; the new leader's
 * AppendEntries makes it save the new term, truncate them and append. Fail its
 * I/O request after k more, for each k: 0..4 hit a write (the term, the
 * truncate or the append: it stops), 5 only a send (a lost message: it catches
 * up). Without the fix: recvCb's assertion on the error (a double free of the
 * batch with assertions off), or a log that differs from its disk. */
static int caseIoErrorTruncate(void)
{
    for (int k = 0; k < 6; k++) { /* 0..4 hit a write, 5 only sends */
        static struct cluster c;
        clusterStart(&c, 1000, 10);
        raft_fixture_elect(&c.f, 0);
        applyN(&c, 0, 3, true);
        raft_fixture_depose(&c.f);
        raft_fixture_elect(&c.f, 2);
        isolate(&c.f, 2, true);
        applyN(&c, 2, 3, false); /* never committed */
        raft_fixture_step_until_elapsed(&c.f, 100);
        CHECK(raft_fixture_step_until(&c.f, otherLeader, NULL, 10000));
        unsigned leader = raft_state(raft_fixture_get(&c.f, 0)) == RAFT_LEADER ? 0 : 1;
        applyN(&c, leader, 2, true);
        raft_fixture_io_fault(&c.f, 2, k, 1);
        isolate(&c.f, 2, false);
        raft_fixture_step_until_elapsed(&c.f, 3000);
        struct raft *r2 = raft_fixture_get(&c.f, 2);
        fprintf(stderr, "io-error-truncate: fault after %d requests: %s\n", k,
                raft_state(r2) == RAFT_UNAVAILABLE ? "stopped" : "a lost message");
        if (raft_state(r2) == RAFT_UNAVAILABLE) {
            checkStoppedAndOthersCommit(&c, 2);
        } else { /* the fault hit a send: a lost message */
            leader = raft_fixture_leader_index(&c.f);
            CHECK(leader < N_SERVERS);
            raft_index last = raft_last_index(raft_fixture_get(&c.f, leader));
            CHECK(raft_fixture_step_until_applied(&c.f, 2, last, 10000));
            CHECK(c.counters[2].n == c.counters[leader].n);
        }
        raft_fixture_close(&c.f);
    }
    return 0;
}

/* A follower's snapshot_put for an InstallSnapshot fails (the fixture cannot
 * inject that: a stub replaces the method). legacyPersistSnapshotStart freed
 * its request and legacyHandleUpdateSnapshot freed it again (ASan: double free,
 * after reading it freed). Now the follower stops; LSan checks that the
 * snapshot's data and configuration were freed. */
static int failingSnapshotPut(struct raft_io *io,
                              unsigned trailing,
                              struct raft_io_snapshot_put *req,
                              const struct raft_snapshot *snapshot,
                              raft_io_snapshot_put_cb cb)
{
    (void)io;
    (void)trailing;
    (void)req;
    (void)snapshot;
    (void)cb;
    return RAFT_IOERR;
}
static int caseIoErrorInstallSnapshot(void)
{
    static struct cluster c;
    clusterStart(&c, 4, 2);
    raft_set_snapshot_threshold(raft_fixture_get(&c.f, 2), 1000); /* its own: none */
    raft_fixture_elect(&c.f, 0);
    isolate(&c.f, 2, true);
    applyN(&c, 0, 20, true);
    raft_fixture_step_until_elapsed(&c.f, 500); /* the leader compacts */
    struct raft *follower = raft_fixture_get(&c.f, 2);
    follower->io->snapshot_put = failingSnapshotPut;
    isolate(&c.f, 2, false);
    raft_fixture_step_until_elapsed(&c.f, 3000);
    checkStoppedAndOthersCommit(&c, 2);
    raft_fixture_close(&c.f);
    return 0;
}

static const struct
{
    const char *name;
    int (*run)(void);
} cases[] = {
    {"request-vote-flags", caseRequestVoteFlags},
    {"configuration-bounds", caseConfigurationBounds},
    {"install-snapshot-configuration", caseInstallSnapshotConfiguration},
    {"message-length", caseMessageLength},
    {"install-snapshot-leak", caseInstallSnapshotLeak},
    {"fixture-truncate", caseFixtureTruncate},
    {"snapshot-load-term", caseSnapshotLoadTerm},
    {"io-error-follower", caseIoErrorFollower},
    {"io-error-leader", caseIoErrorLeader},
    {"io-error-truncate", caseIoErrorTruncate},
    {"io-error-install-snapshot", caseIoErrorInstallSnapshot},
};

int main(int argc, char *argv[])
{
    signal(SIGPIPE, SIG_IGN);
    if (argc != 2) {
        fprintf(stderr, "usage: %s CASE | --list\n", argv[0]);
        return 2;
    }
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (strcmp(argv[1], "--list") == 0) {
            printf("%s\n", cases[i].name);
        } else if (strcmp(argv[1], cases[i].name) == 0) {
            int rv = cases[i].run();
            if (rv == 0) {
                printf("ok %s\n", cases[i].name);
            }
            return rv;
        }
    }
    if (strcmp(argv[1], "--list") == 0) {
        return 0;
    }
    fprintf(stderr, "no case %s\n", argv[1]);
    return 2;
}
