/* craft_ceiling: the C ceiling of canonical-raft's benchmark suite.
 *
 * One process is one node. It drives the same bundled libraft (0.22.1, raft_uv:
 * segmented log on disk, TCP transport) directly, with no Python and no
 * threads, so its numbers are what libraft itself can do on this machine.
 *
 * Every node gets the same arguments. The first node to become leader (once per
 * process) runs the load: for each in-flight value, keep that many commands
 * outstanding for --seconds, then --latency-seconds of one command at a time.
 * It prints one line "RESULT {json}" on stdout. Commands travel in canonical-
 * raft's entry envelope (16-byte header, then per command a 16-byte header and
 * the payload padded to 8), --batch commands per entry, one raft_malloc'd
 * buffer per raft_apply (LIBRAFT_NOTES rules 4 and 5).
 *
 * Every node's FSM counts the commands it applies. On SIGTERM a node reads the
 * expected count from --expect-file (if it exists), waits up to 10 s for its
 * FSM to reach it, prints "COUNT <n>" and exits after closing raft cleanly.
 *
 *   craft_ceiling --id 1 --dir DIR --cluster 1=127.0.0.1:9001,2=...,3=...
 *                 [--batch 64] [--size 64] [--inflight 1,10,1000] [--seconds 5]
 *                 [--latency-seconds 5] [--expect-file PATH] [--nodelay 1]
 *
 * --nodelay 1 is a diagnostic, not the ceiling: raft_uv's TCP transport leaves
 * Nagle's algorithm on; this wraps the transport to set TCP_NODELAY on every
 * connection, to show what that costs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

#define MAX_SERVERS 16
#define MAX_PHASES 16
#define ENVELOPE_MAGIC 0x31465243u /* "CRF1", as cpp/codec.h */
#define ENVELOPE_HEADER 16
#define COMMAND_HEADER 16

static size_t pad8(size_t n) { return (n + 7) & ~(size_t)7; }

/* ------------------------------------------------------------------ options */

static struct {
    raft_id id;
    const char *dir;
    const char *expect_file;
    raft_id ids[MAX_SERVERS];
    char addresses[MAX_SERVERS][64];
    unsigned n_servers;
    unsigned batch;
    size_t size;
    unsigned inflight[MAX_PHASES];
    unsigned n_phases;
    double seconds;
    double latency_seconds;
    double warmup_seconds;
    int nodelay;
} opt = {.batch = 1, .size = 64, .seconds = 5.0, .latency_seconds = 5.0,
         .warmup_seconds = 0.5};

static void usage(const char *msg) {
    fprintf(stderr, "craft_ceiling: %s\n"
            "usage: craft_ceiling --id N --dir DIR --cluster ID=HOST:PORT,... "
            "[--batch K] [--size B] [--inflight N,N,...] [--seconds S] "
            "[--latency-seconds S] [--expect-file PATH] [--nodelay 0|1]\n", msg);
    exit(2);
}

static void parse_cluster(char *spec) {
    for (char *tok = strtok(spec, ","); tok != NULL; tok = strtok(NULL, ",")) {
        char *eq = strchr(tok, '=');
        if (eq == NULL || opt.n_servers == MAX_SERVERS) usage("bad --cluster");
        *eq = '\0';
        opt.ids[opt.n_servers] = strtoull(tok, NULL, 10);
        snprintf(opt.addresses[opt.n_servers], sizeof opt.addresses[0], "%s", eq + 1);
        opt.n_servers++;
    }
}

static void parse_inflight(char *spec) {
    opt.n_phases = 0;
    for (char *tok = strtok(spec, ","); tok != NULL; tok = strtok(NULL, ",")) {
        if (opt.n_phases == MAX_PHASES) usage("too many --inflight values");
        opt.inflight[opt.n_phases++] = (unsigned)strtoul(tok, NULL, 10);
    }
}

static void parse_args(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL) usage("missing value");
        if (!strcmp(a, "--id")) opt.id = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--dir")) opt.dir = v;
        else if (!strcmp(a, "--cluster")) parse_cluster(v);
        else if (!strcmp(a, "--batch")) opt.batch = (unsigned)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--size")) opt.size = strtoul(v, NULL, 10);
        else if (!strcmp(a, "--inflight")) parse_inflight(v);
        else if (!strcmp(a, "--seconds")) opt.seconds = strtod(v, NULL);
        else if (!strcmp(a, "--latency-seconds")) opt.latency_seconds = strtod(v, NULL);
        else if (!strcmp(a, "--warmup-seconds")) opt.warmup_seconds = strtod(v, NULL);
        else if (!strcmp(a, "--expect-file")) opt.expect_file = v;
        else if (!strcmp(a, "--nodelay")) opt.nodelay = atoi(v);
        else usage("unknown option");
        i++;
    }
    if (opt.id == 0 || opt.dir == NULL || opt.n_servers == 0)
        usage("--id, --dir and --cluster are required");
    if (opt.batch == 0) usage("--batch must be >= 1");
}

static const char *my_address(void) {
    for (unsigned i = 0; i < opt.n_servers; i++)
        if (opt.ids[i] == opt.id) return opt.addresses[i];
    usage("--cluster does not list --id");
    return NULL;
}

/* ------------------------------------------------------------------ the FSM */

static uint64_t applied_commands; /* every node: commands its FSM applied */
static uint64_t malformed_entries;

static uint32_t get32(const char *p) { uint32_t v; memcpy(&v, p, 4); return v; }

/* Walk the envelope as canonical-raft's applier does and count its commands. */
static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result) {
    (void)fsm;
    *result = NULL;
    const char *p = buf->base;
    size_t len = buf->len;
    if (len < ENVELOPE_HEADER || get32(p) != ENVELOPE_MAGIC) {
        malformed_entries++;
        return 0; /* never non-zero: that is fatal in libraft (LIBRAFT_NOTES rule 6) */
    }
    uint32_t count = get32(p + 4);
    size_t off = ENVELOPE_HEADER;
    for (uint32_t i = 0; i < count; i++) {
        if (len - off < COMMAND_HEADER) { malformed_entries++; return 0; }
        size_t n = pad8(get32(p + off + 8));
        off += COMMAND_HEADER;
        if (n > len - off) { malformed_entries++; return 0; }
        off += n;
    }
    applied_commands += count;
    return 0;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n) {
    (void)fsm;
    *bufs = raft_malloc(sizeof **bufs);
    if (*bufs == NULL) return RAFT_NOMEM;
    (*bufs)[0].len = 8;
    (*bufs)[0].base = raft_malloc(8);
    if ((*bufs)[0].base == NULL) { raft_free(*bufs); return RAFT_NOMEM; }
    memcpy((*bufs)[0].base, &applied_commands, 8);
    *n = 1;
    return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf) {
    (void)fsm;
    if (buf->len != 8) return RAFT_MALFORMED;
    memcpy(&applied_commands, buf->base, 8);
    raft_free(buf->base);
    return 0;
}

/* ------------------------------------------------------------------ the node */

static uv_loop_t loop;
static struct raft raft;
static struct raft_io io;
static struct raft_uv_transport transport;
static struct raft_fsm fsm = {.version = 1, .apply = fsm_apply, .snapshot = fsm_snapshot,
                              .restore = fsm_restore};
static uv_signal_t sigterm;
static uv_timer_t tick;   /* leader check, then drain check */
static uv_timer_t refill; /* 0 ms timer: submits outside raft callbacks */
static int refill_pending;

/* ------------------------------------------------------------------ the load */

enum { IDLE, WARMUP, THROUGHPUT, DRAIN, LATENCY, DONE } phase = IDLE;
static int load_ran;
static unsigned cur;                      /* index into opt.inflight */
static unsigned target_entries;           /* entries kept in flight this phase */
static unsigned outstanding;              /* entries in flight */
static uint64_t phase_start, phase_end, last_done;
static uint64_t phase_acked, phase_failed, acked_total, failed_total;
static double *samples;
static size_t n_samples, cap_samples;
static char error_msg[256];
static char results[MAX_PHASES][256];

struct request {
    struct raft_apply req;
    uint64_t t0;
};

static double now_s(void) { return (double)uv_hrtime() / 1e9; }

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
           ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
}
static double phase_cpu;

static void schedule_refill(void);

static void apply_cb(struct raft_apply *r, int status, void *result) {
    (void)result;
    struct request *req = r->data;
    uint64_t t = uv_hrtime();
    outstanding--;
    if (status == 0) {
        phase_acked += opt.batch;
        acked_total += opt.batch;
    } else {
        phase_failed += opt.batch;
        failed_total += opt.batch;
        if (error_msg[0] == '\0')
            snprintf(error_msg, sizeof error_msg, "apply failed: %s", raft_strerror(status));
    }
    if (phase == LATENCY && status == 0) {
        if (n_samples == cap_samples) {
            cap_samples = cap_samples ? 2 * cap_samples : 4096;
            samples = realloc(samples, cap_samples * sizeof *samples);
        }
        samples[n_samples++] = (double)(t - req->t0) / 1e6;
    }
    last_done = t;
    free(req);
    schedule_refill(); /* never re-enter raft from its own callback (rule 2) */
}

static int submit(void) {
    size_t len = ENVELOPE_HEADER + (size_t)opt.batch * (COMMAND_HEADER + pad8(opt.size));
    struct raft_buffer buf = {.base = raft_malloc(len), .len = len};
    if (buf.base == NULL) return RAFT_NOMEM;
    char *p = buf.base;
    uint32_t magic = ENVELOPE_MAGIC, count = opt.batch, zero = 0;
    uint64_t nonce = opt.id;
    memcpy(p, &magic, 4);
    memcpy(p + 4, &count, 4);
    memcpy(p + 8, &nonce, 8);
    p += ENVELOPE_HEADER;
    for (unsigned i = 0; i < opt.batch; i++) {
        uint64_t rid = acked_total + i;
        uint32_t n = (uint32_t)opt.size;
        memcpy(p, &rid, 8);
        memcpy(p + 8, &n, 4);
        memcpy(p + 12, &zero, 4);
        memset(p + COMMAND_HEADER, 'x', opt.size);
        memset(p + COMMAND_HEADER + opt.size, 0, pad8(opt.size) - opt.size);
        p += COMMAND_HEADER + pad8(opt.size);
    }
    struct request *req = malloc(sizeof *req);
    req->req.data = req;
    req->t0 = uv_hrtime();
    int rv = raft_apply(&raft, &req->req, &buf, 1, apply_cb);
    if (rv != 0) {
        /* Early rejections leave the buffer ours; any other failure has freed it. */
        if (rv == RAFT_NOTLEADER || rv == RAFT_NOSPACE || rv == RAFT_MALFORMED ||
            rv == RAFT_CANTCHANGE)
            raft_free(buf.base);
        free(req);
        return rv;
    }
    outstanding++;
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double p) {
    if (n_samples == 0) return 0;
    size_t i = (size_t)(p * (double)n_samples);
    if (i >= n_samples) i = n_samples - 1;
    return samples[i];
}

static void finish_load(void) {
    phase = DONE;
    qsort(samples, n_samples, sizeof *samples, cmp_double);
    double sum = 0;
    for (size_t i = 0; i < n_samples; i++) sum += samples[i];
    printf("RESULT {\"id\": %llu, \"batch\": %u, \"size\": %zu, \"phases\": [",
           (unsigned long long)opt.id, opt.batch, opt.size);
    for (unsigned i = 0; i < cur && i < opt.n_phases; i++)
        printf("%s%s", i ? ", " : "", results[i]);
    printf("], \"latency\": {\"acked\": %zu, \"p50_ms\": %.4f, \"p99_ms\": %.4f, "
           "\"p999_ms\": %.4f, \"mean_ms\": %.4f}, \"acked_total\": %llu, "
           "\"failed_total\": %llu, \"last_applied\": %llu, \"error\": ",
           n_samples, pct(0.50), pct(0.99), pct(0.999), n_samples ? sum / n_samples : 0.0,
           (unsigned long long)acked_total, (unsigned long long)failed_total,
           (unsigned long long)raft_last_applied(&raft));
    if (error_msg[0]) printf("\"%s\"}\n", error_msg);
    else printf("null}\n");
    fflush(stdout);
}

static void start_phase(void) {
    uint64_t t = uv_hrtime();
    phase_start = t;
    phase_cpu = cpu_s();
    phase_acked = phase_failed = 0;
    if (cur < opt.n_phases) {
        phase = THROUGHPUT;
        /* In-flight counts commands: round up to whole entries. */
        target_entries = (opt.inflight[cur] + opt.batch - 1) / opt.batch;
        if (target_entries == 0) target_entries = 1;
        phase_end = t + (uint64_t)(opt.seconds * 1e9);
    } else if (opt.latency_seconds > 0) {
        phase = LATENCY;
        phase_end = t + (uint64_t)(opt.latency_seconds * 1e9);
    } else {
        finish_load();
        return;
    }
    schedule_refill();
}

static void refill_cb(uv_timer_t *h) {
    (void)h;
    refill_pending = 0;
    if (raft_state(&raft) != RAFT_LEADER && phase != DONE && phase != IDLE) {
        if (error_msg[0] == '\0') snprintf(error_msg, sizeof error_msg, "lost leadership");
        if (outstanding == 0) finish_load();
        return;
    }
    uint64_t t = uv_hrtime();
    switch (phase) {
    case THROUGHPUT:
        if (t < phase_end) {
            while (outstanding < target_entries) {
                int rv = submit();
                if (rv != 0) {
                    snprintf(error_msg, sizeof error_msg, "raft_apply: %s", raft_strerror(rv));
                    phase = DRAIN;
                    break;
                }
            }
            if (phase == THROUGHPUT) break;
        }
        phase = DRAIN;
        /* fall through */
    case DRAIN:
        if (outstanding == 0) {
            double secs = (double)(last_done - phase_start) / 1e9;
            snprintf(results[cur], sizeof results[cur],
                     "{\"inflight\": %u, \"inflight_commands\": %u, \"acked\": %llu, "
                     "\"failed\": %llu, \"seconds\": %.4f, \"applies_per_s\": %.1f, "
                     "\"leader_cpu_s\": %.4f}",
                     opt.inflight[cur], target_entries * opt.batch,
                     (unsigned long long)phase_acked, (unsigned long long)phase_failed, secs,
                     secs > 0 ? (double)phase_acked / secs : 0.0, cpu_s() - phase_cpu);
            cur++;
            if (error_msg[0]) finish_load();
            else start_phase();
        }
        break;
    case LATENCY:
        if (outstanding == 0) {
            if (t < phase_end && error_msg[0] == '\0') {
                int rv = submit();
                if (rv != 0) {
                    snprintf(error_msg, sizeof error_msg, "raft_apply: %s", raft_strerror(rv));
                    finish_load();
                }
            } else {
                cur = opt.n_phases;
                finish_load();
            }
        }
        break;
    default:
        break;
    }
}

static void schedule_refill(void) {
    if (!refill_pending) {
        refill_pending = 1;
        uv_timer_start(&refill, refill_cb, 0, 0);
    }
}

/* ------------------------------------------------------------------ TCP_NODELAY */

static raft_uv_accept_cb accept_cb;
static raft_uv_connect_cb connect_cb;
static int (*tcp_listen)(struct raft_uv_transport *, raft_uv_accept_cb);
static int (*tcp_connect)(struct raft_uv_transport *, struct raft_uv_connect *, raft_id,
                          const char *, raft_uv_connect_cb);

static void set_nodelay(struct uv_stream_s *stream) {
    if (stream != NULL && stream->type == UV_TCP) uv_tcp_nodelay((uv_tcp_t *)stream, 1);
}

static void nodelay_accept_cb(struct raft_uv_transport *t, raft_id id, const char *address,
                              struct uv_stream_s *stream) {
    set_nodelay(stream);
    accept_cb(t, id, address, stream);
}

static void nodelay_connect_cb(struct raft_uv_connect *req, struct uv_stream_s *stream,
                               int status) {
    if (status == 0) set_nodelay(stream);
    connect_cb(req, stream, status);
}

static int nodelay_listen(struct raft_uv_transport *t, raft_uv_accept_cb cb) {
    accept_cb = cb;
    return tcp_listen(t, nodelay_accept_cb);
}

static int nodelay_connect(struct raft_uv_transport *t, struct raft_uv_connect *req, raft_id id,
                           const char *address, raft_uv_connect_cb cb) {
    connect_cb = cb; /* raft_uv passes the same callback for every connection */
    return tcp_connect(t, req, id, address, nodelay_connect_cb);
}

/* ------------------------------------------------------------------ lifecycle */

static int draining;
static uint64_t expected = UINT64_MAX;
static double drain_deadline;

static void close_cb(struct raft *r) {
    (void)r;
    raft_uv_close(&io);
    raft_uv_tcp_close(&transport);
    uv_close((uv_handle_t *)&sigterm, NULL);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_close((uv_handle_t *)&refill, NULL);
}

static void tick_cb(uv_timer_t *h) {
    (void)h;
    if (draining) {
        if (applied_commands >= expected || expected == UINT64_MAX || now_s() > drain_deadline) {
            printf("COUNT %llu\n", (unsigned long long)applied_commands);
            if (malformed_entries)
                printf("MALFORMED %llu\n", (unsigned long long)malformed_entries);
            fflush(stdout);
            uv_timer_stop(&tick);
            uv_timer_stop(&refill);
            raft_close(&raft, close_cb);
        }
        return;
    }
    if (phase == IDLE && !load_ran && (opt.n_phases > 0 || opt.latency_seconds > 0) &&
        raft_state(&raft) == RAFT_LEADER) {
        load_ran = 1;
        phase = WARMUP;
        phase_end = uv_hrtime() + (uint64_t)(opt.warmup_seconds * 1e9);
    } else if (phase == WARMUP && uv_hrtime() >= phase_end) {
        start_phase();
    }
}

static void sigterm_cb(uv_signal_t *h, int signum) {
    (void)h;
    (void)signum;
    if (draining) return;
    draining = 1;
    drain_deadline = now_s() + 10.0;
    if (opt.expect_file != NULL) {
        FILE *f = fopen(opt.expect_file, "r");
        unsigned long long v;
        if (f != NULL) {
            if (fscanf(f, "%llu", &v) == 1) expected = v;
            fclose(f);
        }
    }
    /* The watcher stays on (a repeat is ignored above); uv_close() stops it. */
    uv_timer_start(&tick, tick_cb, 0, 10);
}

static void die(const char *what, int rv, const char *msg) {
    fprintf(stderr, "craft_ceiling: %s: %s (%s)\n", what, raft_strerror(rv), msg);
    exit(1);
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN); /* a peer closing its socket must not kill us (rule 12) */
    uv_loop_init(&loop);

    transport.version = 1; /* 0.22 rejects anything else (rule 10) */
    transport.data = NULL;
    int rv = raft_uv_tcp_init(&transport, &loop);
    if (rv != 0) die("raft_uv_tcp_init", rv, transport.errmsg);
    if (opt.nodelay) {
        tcp_listen = transport.listen;
        tcp_connect = transport.connect;
        transport.listen = nodelay_listen;
        transport.connect = nodelay_connect;
    }
    rv = raft_uv_init(&io, &loop, opt.dir, &transport);
    if (rv != 0) die("raft_uv_init", rv, io.errmsg);
    raft_uv_set_auto_recovery(&io, false);
    raft_uv_set_connect_retry_delay(&io, 200);
    rv = raft_init(&raft, &io, &fsm, opt.id, my_address());
    if (rv != 0) die("raft_init", rv, raft_errmsg(&raft));
    raft.tracer = NULL; /* as canonical-raft: no stderr tracer formatting */
    /* The same settings as canonical_raft.Config's defaults. */
    raft_set_election_timeout(&raft, 1000);
    raft_set_heartbeat_timeout(&raft, 100);
    raft_set_snapshot_threshold(&raft, 8192);
    raft_set_snapshot_trailing(&raft, 8192);
    raft_set_pre_vote(&raft, true);
    raft_set_max_inflight_entries(&raft, 32);

    struct raft_configuration conf;
    raft_configuration_init(&conf);
    for (unsigned i = 0; i < opt.n_servers; i++) {
        rv = raft_configuration_add(&conf, opt.ids[i], opt.addresses[i], RAFT_VOTER);
        if (rv != 0) die("raft_configuration_add", rv, "");
    }
    rv = raft_bootstrap(&raft, &conf);
    if (rv != 0 && rv != RAFT_CANTBOOTSTRAP) die("raft_bootstrap", rv, raft_errmsg(&raft));
    raft_configuration_close(&conf);
    rv = raft_start(&raft);
    if (rv != 0) die("raft_start", rv, raft_errmsg(&raft));

    uv_timer_init(&loop, &tick);
    uv_timer_init(&loop, &refill);
    uv_signal_init(&loop, &sigterm);
    uv_signal_start(&sigterm, sigterm_cb, SIGTERM);
    uv_timer_start(&tick, tick_cb, 20, 20);
    uv_run(&loop, UV_RUN_DEFAULT);
    rv = uv_loop_close(&loop);
    free(samples);
    if (rv != 0) {
        fprintf(stderr, "craft_ceiling: uv_loop_close: %s\n", uv_strerror(rv));
        return 1;
    }
    return 0;
}
