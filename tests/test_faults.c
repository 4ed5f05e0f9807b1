/* The fault matrix: the real spotd binary against the IMDS, Kubernetes API
 * and Flink JobManager simulators and a webhook sink, with one peer failing
 * in one way per cell.
 *
 * Every cell is its own world (its own simulators, node-a with 2 of the 4
 * TaskManagers of a Flink 1.18 job at parallelism 8, a spot notice with a
 * 20 s deadline) and its own spotd, so the 9 cells of a peer run in
 * parallel threads; only the main thread asserts, afterwards. For each cell:
 * spotd is alive at the end and exits 0 on SIGTERM, /healthz answered 200 to
 * every probe (every 200 ms), the failure is logged once (warning and error
 * lines counted, by their message and in all), and every step that does not
 * depend on the failed peer is done before the deadline:
 *  - IMDS (fails 3 s, then clears; the notice is up all along): the notice
 *    is detected once it clears, then the whole handling;
 *  - Kubernetes API (fails for 3 s from the notice, then clears): the
 *    evictions and, unless a 4xx told spotd to give up on it, the fence;
 *  - Flink JobManager (fails throughout): fence and evictions, the cluster
 *    degraded to plain evictions;
 *  - webhook (fails throughout): the whole handling, and each of the two
 *    deliveries (notice, completed) ends in one line.
 * A row per peer is printed to stderr in the README's table format. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>

#include "flink_sim.h"
#include "helpers.h"
#include "imds_sim.h"
#include "k8s_sim.h"
#include "sim_port.h"

#define JOB1 "a1b2c3d4e5f60718293a4b5c6d7e8f90"
#define VA "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a"
#define TM_LABELS "component=taskmanager,type=flink-native-kubernetes,app=orders"
#define MSG_IMDS_ERROR "27df904c9f0144128c07f70e3611eb54"
#define MSG_K8S_ERROR "8bf2152474aa488c9cf3c630e8295d2c"
#define MSG_EVICTION_BLOCKED "567186181dea491c99e53721f78d827c"
#define MSG_RESCALE "2d6f4e8a1c3b4f5e9a7d8c6b5e4f3a21"
#define MSG_WEBHOOK "9c1e7b3d5f2a4c6e8b0d1f3a5c7e9b2d"
#define MSG_DONE "a11e73ecf1174841a611800b7f13bf1a"
#define MSG_SPOT_NOTICE "e4c9da6bf184496cb8c964249990883f"

#define DEADLINE_S 20  /* notice to interruption */
#define FAULT_MS 3000  /* how long a fault that clears lasts */

enum peer { PEER_IMDS, PEER_IMDS_LATE, PEER_K8S, PEER_FLINK, PEER_WEBHOOK, _PEER_MAX };
enum fault { F_REFUSED, F_TIMEOUT, F_5XX, F_4XX, F_MALFORMED, F_OVERSIZED, F_DRIP, F_RESET, F_401, _F_MAX };

/* As the README's fault matrix names the rows: its rows are these lines as printed. */
static const char *const peer_names[] = { "IMDS (fails 3 s, notice up all along, then clears)",
                                          "IMDS (fails from detection to the end)",
                                          "Kubernetes API (fails 3 s from the notice, then clears)",
                                          "Flink JobManager (fails throughout)", "webhook (fails throughout)" };
static const char *const fault_names[] = { "refused", "timeout", "5xx", "4xx", "malformed body", "oversized body",
                                           "slow drip", "reset mid-body", "401 / expired token" };

/* ---- the webhook sink: a tiny libmicrohttpd server on loopback ---- */

struct sink {
        struct MHD_Daemon *d;
        uint16_t port;
        enum fault fault;
        bool faulty;
        atomic_uint requests, notices, completions;
        atomic_bool stopping;
};

struct sink_req {
        bool notice, completed;
};

static bool sink_sleep(struct sink *k, unsigned ms) {
        for (unsigned t = 0; t < ms; t += 20) {
                if (atomic_load(&k->stopping))
                        return false;
                usleep(20 * 1000);
        }
        return true;
}

struct body_gen {
        struct sink *k;
        int mode; /* 0: a byte every 200 ms, 1: 16 MiB at once, 2: 100 bytes then a close */
};

static ssize_t body_read(void *cls, uint64_t pos, char *buf, size_t max) {
        struct body_gen *g = cls;
        if (g->mode == 0) {
                if (!sink_sleep(g->k, 200))
                        return MHD_CONTENT_READER_END_WITH_ERROR;
                buf[0] = ' ';
                return 1;
        }
        if (g->mode == 2 && pos >= 100)
                return MHD_CONTENT_READER_END_WITH_ERROR;
        size_t n = g->mode == 2 && 100 - pos < max ? 100 - pos : max;
        memset(buf, ' ', n);
        return (ssize_t) n;
}

static enum MHD_Result sink_handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                   const char *version, const char *upload, size_t *upload_size, void **req) {
        struct sink *k = cls;
        struct sink_req *q = *req;
        if (!q) {
                *req = q = calloc(1, sizeof *q);
                return q ? MHD_YES : MHD_NO;
        }
        if (*upload_size) {
                /* Small bodies arrive in one piece; a type split across calls is not counted. */
                if (memmem(upload, *upload_size, "\"type\":\"notice\"", 15))
                        q->notice = true;
                if (memmem(upload, *upload_size, "\"type\":\"completed\"", 18))
                        q->completed = true;
                *upload_size = 0;
                return MHD_YES;
        }
        atomic_fetch_add(&k->requests, 1);
        if (q->notice)
                atomic_fetch_add(&k->notices, 1);
        if (q->completed)
                atomic_fetch_add(&k->completions, 1);

        static char ok_body[] = "{\"ok\":true}", bad_json[] = "{\"ok\": tru";
        unsigned status = 200;
        struct MHD_Response *r = NULL;
        struct body_gen *g = NULL;
        switch (k->faulty ? k->fault : _F_MAX) {
        case F_TIMEOUT:
                sink_sleep(k, 3000);
                return MHD_NO;
        case F_5XX:
                status = 503;
                break;
        case F_4XX:
                status = 400;
                break;
        case F_401:
                status = 401;
                break;
        case F_MALFORMED:
                r = MHD_create_response_from_buffer(strlen(bad_json), bad_json, MHD_RESPMEM_PERSISTENT);
                break;
        case F_OVERSIZED:
        case F_DRIP:
        case F_RESET:
                g = calloc(1, sizeof *g);
                if (!g)
                        return MHD_NO;
                *g = (struct body_gen) { k, k->fault == F_DRIP ? 0 : k->fault == F_OVERSIZED ? 1 : 2 };
                r = MHD_create_response_from_callback(k->fault == F_DRIP ? 100 : k->fault == F_OVERSIZED ? 16 << 20 : 1000,
                                                      64 * 1024, body_read, g, free);
                break;
        default:
                break;
        }
        if (!r)
                r = MHD_create_response_from_buffer(strlen(ok_body), ok_body, MHD_RESPMEM_PERSISTENT);
        if (!r)
                return MHD_NO;
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
        enum MHD_Result ret = MHD_queue_response(c, status, r);
        MHD_destroy_response(r);
        return ret;
}

static void sink_done(void *cls, struct MHD_Connection *c, void **req, enum MHD_RequestTerminationCode toe) {
        free(*req);
        *req = NULL;
}

static int sink_start(struct sink *k) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        k->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_AUTO, 0, NULL,
                                NULL, sink_handle, k, MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &sa,
                                MHD_OPTION_NOTIFY_COMPLETED, sink_done, k, MHD_OPTION_END);
        if (!k->d)
                return -EIO;
        k->port = MHD_get_daemon_info(k->d, MHD_DAEMON_INFO_BIND_PORT)->port;
        return 0;
}

static void sink_stop(struct sink *k) {
        atomic_store(&k->stopping, true);
        if (k->d)
                MHD_stop_daemon(k->d);
        k->d = NULL;
}

/* A loopback port with nothing listening (bound once, then closed). */
/* A loopback port where nothing listens, held for the cell (*hold, closed
 * with it) so that no other test's server is given it meanwhile. */
static uint16_t closed_port(int *hold) {
        uint16_t port = sim_port_closed(hold);
        return port ? port : 1; /* tcpmux: nothing listens there either */
}

/* ---- a cell ---- */

struct cell {
        enum peer peer;
        enum fault fault;
        pthread_t thread;

        struct imds_sim *imds;
        int hold;              /* the refused peer's port, held (sim_port_hold), else -1 */
        struct k8s_sim *kube;
        struct flink_sim *fl;
        struct sink sink;
        struct proc p;
        bool spawned;
        unsigned health_port;
        usec_t next_probe;
        time_t deadline;      /* of the notice, wall clock */
        usec_t notice_at;     /* monotonic: the notice was served from then */

        /* Results. */
        unsigned probes, probes_bad;
        bool alive, exit0, handled, detected, fenced, restored, degraded;
        unsigned gone, evictions, errors, warnings, peer_lines, put_count, deliveries_failed, deliveries_ok;
        unsigned sink_requests;                  /* attempts as spotd logs them */
        unsigned sink_seen, sink_notices, sink_completions; /* what the sink itself received */
        double handling_s;
        char summary[200];    /* the README cell */
        char fail[4096];      /* what went wrong; empty: the cell passed */
        char *out;            /* spotd's output, kept for failure messages */
};

static void cell_fail(struct cell *c, const char *fmt, ...) _printf_(2, 3);
static void cell_fail(struct cell *c, const char *fmt, ...) {
        size_t n = strlen(c->fail);
        va_list ap;
        if (n + 2 >= sizeof c->fail)
                return;
        if (n)
                c->fail[n++] = ';', c->fail[n++] = ' ', c->fail[n] = 0;
        va_start(ap, fmt);
        vsnprintf(c->fail + n, sizeof c->fail - n, fmt, ap);
        va_end(ap);
}

/* Reads spotd's output for a while and probes /healthz every 200 ms. */
static void cell_pump(struct cell *c, int ms) {
        proc_pump(&c->p, ms);
        usec_t now = now_monotonic();
        if (c->health_port && now >= c->next_probe && c->p.fd >= 0) {
                c->probes++;
                if (http_get_port(c->health_port, "/healthz", NULL) != 200)
                        c->probes_bad++;
                c->next_probe = now + 200 * USEC_PER_MSEC;
        }
}

#define CELL_WAIT(c, expr, ms) ({                                                       \
        usec_t _end = now_monotonic() + (usec_t) test_ms(ms) * USEC_PER_MSEC;          \
        bool _ok;                                                                       \
        while (!(_ok = (expr)) && now_monotonic() < _end && (c)->p.fd >= 0)             \
                cell_pump((c), 50);                                                     \
        _ok;                                                                            \
})

static void cell_sleep(struct cell *c, int ms) {
        usec_t end = now_monotonic() + (usec_t) ms * USEC_PER_MSEC;
        while (now_monotonic() < end)
                cell_pump(c, 50);
}

/* Lines of the output at level (NULL: any) holding every needle (NULL-terminated). */
static unsigned count_lines(const char *out, const char *level, ...) {
        char lv[40];
        unsigned n = 0;
        if (level)
                snprintf(lv, sizeof lv, "\"level\":\"%s\"", level);
        for (const char *l = out; l && *l;) {
                const char *e = strchr(l, '\n');
                size_t len = e ? (size_t) (e - l) : strlen(l);
                bool match = !level || memmem(l, len, lv, strlen(lv));
                va_list ap;
                va_start(ap, level);
                for (const char *needle; match && (needle = va_arg(ap, const char *));)
                        match = memmem(l, len, needle, strlen(needle)) != NULL;
                va_end(ap);
                n += match;
                l = e ? e + 1 : NULL;
        }
        return n;
}

static void on_terminate(void *ud, const char *ns, const char *name, const char *ip) {
        struct cell *c = ud;
        if (c->fl)
                flink_sim_pod_terminating(c->fl, name, ip);
}

static int world(struct cell *c) {
        char url[64];
        int r;
        if ((r = imds_sim_start(NULL, &c->imds)) < 0 ||
            (r = k8s_sim_start(&(struct k8s_sim_options) { .grace_ms_per_s = 20 }, &c->kube)) < 0 ||
            (r = flink_sim_start(&(struct flink_sim_options) { .version = "1.18.1", .checkpoint_ms = 50, .restart_ms = 100 },
                                 &c->fl)) < 0)
                return r;
        k8s_sim_set_terminate_hook(c->kube, on_terminate, c);
        k8s_sim_add_node(c->kube, "node-a", NULL);
        k8s_sim_add_node(c->kube, "node-b", NULL);
        if (c->peer == PEER_FLINK && c->fault == F_REFUSED)
                snprintf(url, sizeof url, "http://127.0.0.1:%u", closed_port(&c->hold));
        else
                flink_sim_url(c->fl, url, sizeof url);
        for (int i = 1; i <= 4; i++) {
                char name[64], ip[48];
                snprintf(name, sizeof name, "orders-taskmanager-1-%d", i);
                /* Grace 5 s (100 ms here): the Flink steps may use the time up to margin - 5 s. */
                k8s_sim_add_pod(c->kube, "flink", name, i <= 2 ? "node-a" : "node-b", TM_LABELS, 5, "Deployment");
                k8s_sim_set_pod_annotation(c->kube, "flink", name, "spotd.io/flink-rest-url", url);
                k8s_sim_pod_ip(c->kube, "flink", name, ip, sizeof ip);
                flink_sim_add_taskmanager(c->fl, name, ip, 2);
        }
        flink_sim_add_job(c->fl, JOB1, "orders");
        flink_sim_add_vertex(c->fl, JOB1, VA, "all", 8, 128, NULL);
        c->sink.fault = c->fault;
        c->sink.faulty = c->peer == PEER_WEBHOOK;
        return sink_start(&c->sink);
}

static int spawn(struct cell *c) {
        char a_imds[96], a_api[96], a_ca[1100], a_token[1100], a_hook[96], url[64];
        imds_sim_url(c->imds, url, sizeof url);
        snprintf(a_imds, sizeof a_imds, "--imds-endpoint=%s", url);
        k8s_sim_url(c->kube, url, sizeof url);
        snprintf(a_api, sizeof a_api, "--kube-api=%s", url);
        snprintf(a_ca, sizeof a_ca, "--kube-ca-file=%s", k8s_sim_ca_file(c->kube));
        snprintf(a_token, sizeof a_token, "--kube-token-file=%s", k8s_sim_token_file(c->kube));
        snprintf(a_hook, sizeof a_hook, "--webhook-url=http://127.0.0.1:%u/spotd",
                 c->peer == PEER_WEBHOOK && c->fault == F_REFUSED ? closed_port(&c->hold) : c->sink.port);
        /* Timeouts scaled to a 20 s deadline (the defaults suit 2 minutes). */
        char *argv[] = { "spotd", "run", a_imds, a_api, a_ca, a_token, a_hook, "--node-name=node-a",
                         "--poll-interval=50ms", "--log-target=stderr", "--log-format=json",
                         "--health-addr=127.0.0.1:0", "--eviction-margin=8s", "--checkpoint-fresh=0s",
                         "--verify-timeout=6s", "--imds-timeout=1s", "--kube-timeout=2s", "--flink-timeout=1s",
                         "--webhook-timeout=1s", "--flink-url-allow=127.0.0.1", NULL };
        int r = proc_spawn(&c->p, argv, NULL);
        if (r < 0)
                return r;
        c->spawned = true;
        c->health_port = proc_health_port(&c->p);
        if (!c->health_port)
                return -EIO;
        return CELL_WAIT(c, strstr(c->p.out, "Watching instance"), 5000) ? 0 : -ETIMEDOUT;
}

static void post_notice(struct cell *c) {
        c->deadline = time(NULL) + DEADLINE_S;
        c->notice_at = now_monotonic();
        if (c->imds) /* NULL while refused: set when it comes back */
                imds_sim_set_spot(c->imds, "terminate", c->deadline, 0);
}

#define FOREVER 1000000u /* count of a fault that is removed by hand */

/* IMDS: the fault for FAULT_MS with the notice up all along, then clear. */
static void run_imds(struct cell *c) {
        static const enum imds_sim_fault kinds[] = {
                [F_TIMEOUT] = SIM_FAULT_SLOW, [F_5XX] = SIM_FAULT_500, [F_4XX] = SIM_FAULT_403,
                [F_MALFORMED] = SIM_FAULT_MALFORMED, [F_OVERSIZED] = SIM_FAULT_OVERSIZED,
                [F_DRIP] = SIM_FAULT_SLOW_DRIP, [F_RESET] = SIM_FAULT_RESET_BODY, [F_401] = SIM_FAULT_401,
        };
        static const unsigned args[_F_MAX] = { [F_TIMEOUT] = 3000, [F_DRIP] = 100 };
        if (c->peer == PEER_IMDS_LATE) {
                /* Seen, then the metadata service fails for the rest of the cell. */
                post_notice(c);
                if (!CELL_WAIT(c, count_lines(c->p.out, NULL, MSG_SPOT_NOTICE, NULL) > 0, 2000))
                        cell_fail(c, "notice not detected");
                if (c->fault == F_REFUSED) {
                        uint16_t port = imds_sim_port(c->imds);
                        c->imds = imds_sim_stop(c->imds);
                        c->hold = sim_port_hold(port); /* refused to the end of the cell */
                } else
                        imds_sim_set_fault(c->imds, NULL, kinds[c->fault], args[c->fault], 0);
                return;
        }
        if (c->fault == F_REFUSED) {
                uint16_t port = imds_sim_port(c->imds);
                c->imds = imds_sim_stop(c->imds); /* the port closes with it */
                c->hold = sim_port_hold(port);
                post_notice(c);
                cell_sleep(c, FAULT_MS);
                if (c->hold >= 0)
                        close(c->hold);
                c->hold = -1;
                for (int i = 0; i < 20 && imds_sim_start_port(NULL, port, &c->imds) < 0; i++)
                        cell_sleep(c, 100);
                if (!c->imds) {
                        cell_fail(c, "cannot restart the IMDS simulator on port %u", port);
                        return;
                }
                imds_sim_set_spot(c->imds, "terminate", c->deadline, 0);
        } else {
                if (c->fault == F_401)
                        imds_sim_expire_tokens(c->imds); /* the held token expired, and every GET gets 401 */
                imds_sim_set_fault(c->imds, NULL, kinds[c->fault], args[c->fault], 0);
                post_notice(c);
                cell_sleep(c, FAULT_MS);
                c->detected = count_lines(c->p.out, NULL, MSG_SPOT_NOTICE, NULL) > 0; /* too early? */
                if (c->detected)
                        cell_fail(c, "notice detected while the metadata service was failing");
                imds_sim_clear_fault(c->imds);
        }
}

/* Kubernetes API: the fault from the notice for FAULT_MS, then clear. */
static void run_k8s(struct cell *c) {
        static const int kinds[] = {
                [F_TIMEOUT] = K8S_SIM_SLOW, [F_5XX] = 503, [F_4XX] = 403, [F_MALFORMED] = K8S_SIM_MALFORMED,
                [F_OVERSIZED] = K8S_SIM_OVERSIZED, [F_DRIP] = K8S_SIM_DRIP, [F_RESET] = K8S_SIM_CUT, [F_401] = 401,
        };
        static const unsigned args[_F_MAX] = { [F_TIMEOUT] = 4000, [F_DRIP] = 200 };
        usleep(300 * 1000); /* the start-up read of the node is done */
        if (c->fault == F_REFUSED) {
                if (k8s_sim_set_refusing(c->kube, true) < 0)
                        cell_fail(c, "cannot stop the Kubernetes API simulator");
        } else
                k8s_sim_fault(c->kube, NULL, kinds[c->fault], args[c->fault], FOREVER);
        post_notice(c);
        cell_sleep(c, FAULT_MS);
        if (c->fault == F_REFUSED) {
                int r = -1;
                for (int i = 0; i < 20 && (r = k8s_sim_set_refusing(c->kube, false)) < 0; i++)
                        cell_sleep(c, 100);
                if (r < 0)
                        cell_fail(c, "cannot restart the Kubernetes API simulator on its port");
        } else
                k8s_sim_fault(c->kube, NULL, 0, 0, 0);
        if (c->fault == F_401)
                k8s_sim_rotate_token(c->kube, "sim-token-rotated"); /* the kubelet wrote the new token */
}

/* Flink: the JobManager fails throughout. */
static void run_flink(struct cell *c) {
        static const int kinds[] = {
                [F_TIMEOUT] = FLINK_SIM_SLOW, [F_5XX] = 503, [F_4XX] = 400, [F_MALFORMED] = FLINK_SIM_MALFORMED,
                [F_OVERSIZED] = FLINK_SIM_OVERSIZED, [F_DRIP] = FLINK_SIM_DRIP, [F_RESET] = FLINK_SIM_CUT, [F_401] = 401,
        };
        static const unsigned args[_F_MAX] = { [F_TIMEOUT] = 3000, [F_DRIP] = 200 };
        if (c->fault != F_REFUSED)
                flink_sim_fault(c->fl, NULL, kinds[c->fault], args[c->fault], FOREVER);
        post_notice(c);
}

static unsigned webhook_lines(struct cell *c, const char *level) {
        return count_lines(c->p.out, level, MSG_WEBHOOK, NULL);
}

static void *cell_main(void *ud) {
        struct cell *c = ud;
        int r = world(c);
        if (r < 0) {
                cell_fail(c, "cannot start the simulators: %s", strerror(-r));
                goto out;
        }
        if ((r = spawn(c)) < 0) {
                cell_fail(c, "spotd did not start watching: %s", strerror(-r));
                goto stop;
        }
        switch (c->peer) {
        case PEER_IMDS:
        case PEER_IMDS_LATE: run_imds(c); break;
        case PEER_K8S: run_k8s(c); break;
        case PEER_FLINK: run_flink(c); break;
        default: post_notice(c); break;
        }
        if (!c->notice_at)
                goto stop;

        /* The summary follows the "done" annotation. How long it took is
         * printed, not asserted (no timed assertions): that spotd gives up
         * or forces at the margin, before the deadline, is the margin tests'
         * business (test_guarantees, test_handle). */
        c->handled = CELL_WAIT(c, count_lines(c->p.out, NULL, MSG_DONE, NULL) > 0, (DEADLINE_S + 10) * 1000);
        usec_t took = now_monotonic() - c->notice_at;
        c->handling_s = (double) took / 1e6;
        if (!c->handled)
                cell_fail(c, "no summary within %d s of the notice", DEADLINE_S + 10);

        if (c->peer == PEER_WEBHOOK) {
                /* Each delivery ends in one line: accepted, or failed after its attempts. */
                CELL_WAIT(c, webhook_lines(c, NULL) >= 2, 40000);
                cell_sleep(c, 1500); /* nothing more may follow */
        } else if (c->peer == PEER_IMDS_LATE) {
                /* A hanging round takes up to 4 timeouts: let it end and be logged. */
                CELL_WAIT(c, count_lines(c->p.out, "err", MSG_IMDS_ERROR, NULL) >= (c->fault == F_MALFORMED ? 4 : 1), 8000);
                cell_sleep(c, 500);
        } else
                cell_sleep(c, 500);

        /* Alive, healthy, stops cleanly. */
        c->alive = c->p.fd >= 0 && waitpid(c->p.pid, NULL, WNOHANG) == 0;
        cell_pump(c, 0);
        int st = proc_stop(&c->p, SIGTERM, 5000);
        c->spawned = false;
        c->exit0 = st == 0;
        if (!c->alive)
                cell_fail(c, "spotd is gone");
        if (!c->exit0)
                cell_fail(c, "SIGTERM: wait status %d", st);
        if (c->probes_bad || c->probes < 3)
                cell_fail(c, "/healthz: %u of %u probes not 200", c->probes_bad, c->probes);

        /* What got done. */
        const char *out = c->p.out ? c->p.out : "";
        c->detected = count_lines(out, NULL, MSG_SPOT_NOTICE, NULL) == 1;
        if (!c->detected)
                cell_fail(c, "%u notice lines", count_lines(out, NULL, MSG_SPOT_NOTICE, NULL));
        char *n = k8s_sim_node_json(c->kube, "node-a");
        c->fenced = n && strstr(n, "\"unschedulable\":true") && strstr(n, "\"spotd.io/interruption\"");
        free(n);
        for (int i = 1; i <= 4; i++) {
                char name[64];
                snprintf(name, sizeof name, "orders-taskmanager-1-%d", i);
                if (i <= 2) {
                        c->gone += k8s_sim_pod_state(c->kube, "flink", name) == 2;
                        c->evictions += k8s_sim_evictions(c->kube, "flink", name);
                } else if (k8s_sim_eviction_attempts(c->kube, "flink", name))
                        cell_fail(c, "%s on node-b touched", name);
        }
        if (c->gone != 2)
                cell_fail(c, "%u of 2 TaskManagers gone", c->gone);
        if (!strstr(out, "handled: 2 TaskManager pods gone, 0 not evicted"))
                cell_fail(c, "the summary does not count 2 pods gone");
        c->restored = strstr(out, "Restored the original bounds") != NULL;
        c->degraded = strstr(out, "evicting its TaskManagers without rescaling") != NULL;
        c->put_count = c->fl ? flink_sim_puts(c->fl, JOB1) : 0;
        unsigned lo = 0, up = 0;
        if (c->fl)
                flink_sim_bounds(c->fl, JOB1, VA, &lo, &up);
        if (up != 8)
                cell_fail(c, "the job's upper bound is %u, not the original 8", up);
        /* One reclaim, one restart, whatever failed: 1.18 fails over when
         * the TaskManagers go and takes the lowered bounds (if any) in that
         * restart; the restore, with no new slots, changes nothing. */
        if (c->fl) {
                unsigned fo = flink_sim_restarts(c->fl, JOB1), rs = flink_sim_rescales(c->fl, JOB1);
                if (fo != 1 || rs != 0)
                        cell_fail(c, "the job restarted %u times by failover and %u by rescale, not 1 and 0", fo, rs);
        }

        c->errors = count_lines(out, "err", NULL);
        c->warnings = count_lines(out, "warning", NULL);
        switch (c->peer) {
        case PEER_IMDS:
        case PEER_IMDS_LATE:
                c->peer_lines = count_lines(out, "err", MSG_IMDS_ERROR, NULL);
                break;
        case PEER_K8S:
                c->peer_lines = count_lines(out, "err", MSG_K8S_ERROR, NULL) + count_lines(out, "err", MSG_EVICTION_BLOCKED, NULL) +
                                count_lines(out, "warning", MSG_K8S_ERROR, NULL) + count_lines(out, "warning", MSG_EVICTION_BLOCKED, NULL);
                break;
        case PEER_FLINK:
                c->peer_lines = count_lines(out, "err", MSG_RESCALE, NULL) + count_lines(out, "warning", MSG_RESCALE, NULL);
                break;
        default:
                c->deliveries_failed = webhook_lines(c, "err");
                c->deliveries_ok = count_lines(out, "info", MSG_WEBHOOK, "accepted the signal", NULL);
                c->peer_lines = c->deliveries_failed;
                /* Attempts as spotd counts them (a refused one never reaches the sink). */
                for (const char *l = strstr(out, "failed after "); l; l = strstr(l + 1, "failed after "))
                        c->sink_requests += (unsigned) atoi(l + strlen("failed after "));
                break;
        }
        goto stop;
stop:
        if (c->spawned)
                proc_stop(&c->p, SIGKILL, 2000);
        c->out = c->p.out;
        c->p.out = NULL;
        c->sink_seen = atomic_load(&c->sink.requests);
        c->sink_notices = atomic_load(&c->sink.notices);
        c->sink_completions = atomic_load(&c->sink.completions);
        sink_stop(&c->sink);
        if (c->kube)
                k8s_sim_set_terminate_hook(c->kube, NULL, NULL);
        c->imds = imds_sim_stop(c->imds);
        c->kube = k8s_sim_stop(c->kube);
        c->fl = flink_sim_stop(c->fl);
out:
        if (c->hold >= 0)
                close(c->hold);
        c->hold = -1;
        return NULL;
}

/* ---- the matrix ---- */

static void describe(struct cell *c) {
        char lines[64];
        const char *lvl = c->peer == PEER_FLINK ? "warning" : "error";
        snprintf(lines, sizeof lines, "%u %s%s", c->peer_lines, lvl, c->peer_lines == 1 ? "" : "s");
        const char *state = c->fail[0] ? "FAILED" : "survived";
        switch (c->peer) {
        case PEER_IMDS:
                snprintf(c->summary, sizeof c->summary, "%s; %s%s; notice seen once it cleared, all steps done in %.1f s", state,
                         lines, c->fault == F_MALFORMED ? " (1 per rejected source)" : "", c->handling_s);
                break;
        case PEER_IMDS_LATE:
                snprintf(c->summary, sizeof c->summary, "%s; %s%s; all steps done in %.1f s", state, lines,
                         c->fault == F_MALFORMED ? " (1 per rejected source)" : "", c->handling_s);
                break;
        case PEER_K8S:
                snprintf(c->summary, sizeof c->summary, "%s; %s; %s, evictions done, %s in %.1f s", state, lines,
                         c->fenced ? "fenced" : "fence given up (a 403 is final)",
                         c->degraded ? "Flink degraded" : "rescaled + restored", c->handling_s);
                break;
        case PEER_FLINK:
                snprintf(c->summary, sizeof c->summary, "%s; %s (degraded to plain evictions); fenced, evictions done in %.1f s",
                         state, lines, c->handling_s);
                break;
        default:
                if (c->deliveries_failed)
                        snprintf(c->summary, sizeof c->summary, "%s; %u errors (1 per delivery, %u attempts in all, %u reached "
                                 "the receiver); all steps done in %.1f s", state, c->deliveries_failed, c->sink_requests,
                                 c->sink_seen, c->handling_s);
                else
                        snprintf(c->summary, sizeof c->summary, "%s; 0 errors (a 2xx: delivered); all steps done in %.1f s", state,
                                 c->handling_s);
        }
}

static struct cell cells[_F_MAX];

static void run_peer(enum peer peer) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        for (int f = 0; f < _F_MAX; f++) {
                free(cells[f].out);
                cells[f] = (struct cell) { .peer = peer, .fault = f, .hold = -1 };
                cr_assert_eq(pthread_create(&cells[f].thread, NULL, cell_main, &cells[f]), 0);
                usleep(50 * 1000); /* spread the start-ups a little */
        }
        char row[4096];
        size_t o = (size_t) snprintf(row, sizeof row, "| %s |", peer_names[peer]);
        for (int f = 0; f < _F_MAX; f++) {
                pthread_join(cells[f].thread, NULL);
                describe(&cells[f]);
                o += (size_t) snprintf(row + o, o < sizeof row ? sizeof row - o : 0, " %s |", cells[f].summary);
        }
        fprintf(stderr, "fault matrix row: %s\n", row);
        for (int f = 0; f < _F_MAX; f++) {
                struct cell *c = &cells[f];
                if (getenv("SPOTD_FAULTS_VERBOSE")) /* the warning and error lines of every cell */
                        for (const char *l = c->out; l && *l;) {
                                const char *e = strchr(l, '\n');
                                int len = e ? (int) (e - l) : (int) strlen(l);
                                if (memmem(l, (size_t) len, "\"level\":\"err\"", 13) || memmem(l, (size_t) len, "\"level\":\"warning\"", 17))
                                        fprintf(stderr, "%s / %s: %.*s\n", peer_names[peer], fault_names[f], len, l);
                                l = e ? e + 1 : NULL;
                        }
                cr_expect(!c->fail[0], "%s / %s: %s\n--- spotd:\n%s", peer_names[peer], fault_names[f], c->fail,
                          c->out ? c->out : "");
        }
}

TestSuite(faults, .timeout = 120);

/* No source logs twice in a streak. */
static void once_per_source(struct cell *c) {
        static const char *const paths[] = { "spot/instance-action", "events/recommendations/rebalance",
                                             "events/maintenance/scheduled", "autoscaling/target-lifecycle-state" };
        for (size_t i = 0; i < ELEMENTSOF(paths); i++)
                cr_expect_leq(count_lines(c->out ? c->out : "", "err", MSG_IMDS_ERROR, paths[i], NULL), 1, "%s / %s: %s logged twice",
                              peer_names[c->peer], fault_names[c->fault], paths[i]);
}

Test(faults, imds) {
        run_peer(PEER_IMDS);
        for (int f = 0; f < _F_MAX; f++) {
                struct cell *c = &cells[f];
                once_per_source(c);
                /* One line for the outage, not one per poll or per source; a rejected answer is each source's own. */
                cr_expect_eq(c->peer_lines, f == F_MALFORMED ? 4 : 1, "IMDS / %s: %u error lines", fault_names[f], c->peer_lines);
                cr_expect(c->restored, "IMDS / %s: the whole handling, restore included", fault_names[f]);
                cr_expect(c->fenced, "IMDS / %s: fenced", fault_names[f]);
        }
}

Test(faults, imds_during_handling) {
        run_peer(PEER_IMDS_LATE);
        for (int f = 0; f < _F_MAX; f++) {
                struct cell *c = &cells[f];
                once_per_source(c);
                cr_expect_eq(c->peer_lines, f == F_MALFORMED ? 4 : 1, "IMDS late / %s: %u error lines", fault_names[f], c->peer_lines);
                cr_expect(c->restored && c->fenced, "IMDS late / %s: the whole handling, restore included", fault_names[f]);
        }
}

Test(faults, kubernetes) {
        run_peer(PEER_K8S);
        for (int f = 0; f < _F_MAX; f++) {
                struct cell *c = &cells[f];
                cr_expect(c->peer_lines >= 1 && c->peer_lines <= 3, "Kubernetes API / %s: %u error lines", fault_names[f],
                          c->peer_lines);
                cr_expect(c->fenced || f == F_4XX, "Kubernetes API / %s: fenced once it cleared", fault_names[f]);
        }
}

Test(faults, flink) {
        run_peer(PEER_FLINK);
        for (int f = 0; f < _F_MAX; f++) {
                struct cell *c = &cells[f];
                /* A fault that may pass (timeout, 5xx, garbled or cut answer) is
                 * retried within the checkpoint budget: one line for the retry,
                 * one for giving up; a final one (refused, 4xx, oversized,
                 * 401) degrades at once. */
                bool transient = f == F_TIMEOUT || f == F_5XX || f == F_MALFORMED || f == F_DRIP || f == F_RESET;
                cr_expect_eq(c->peer_lines, transient ? 2 : 1, "Flink / %s: %u warning lines", fault_names[f], c->peer_lines);
                cr_expect(c->degraded, "Flink / %s: degraded to plain evictions", fault_names[f]);
                cr_expect(c->fenced, "Flink / %s: fenced", fault_names[f]);
                cr_expect_eq(c->put_count, 0, "Flink / %s: no PUT accepted", fault_names[f]);
        }
}

Test(faults, webhook) {
        run_peer(PEER_WEBHOOK);
        for (int f = 0; f < _F_MAX; f++) {
                struct cell *c = &cells[f];
                cr_expect_eq(c->deliveries_failed + c->deliveries_ok, 2, "webhook / %s: each delivery ends in one line (%u + %u)",
                             fault_names[f], c->deliveries_failed, c->deliveries_ok);
                cr_expect(c->restored && c->fenced, "webhook / %s: the whole handling", fault_names[f]);
                cr_expect_leq(c->sink_requests, 12, "webhook / %s: at most 6 attempts per delivery", fault_names[f]);
                /* The sink's own counts: what reached the receiver, not what spotd says. */
                if (f == F_REFUSED) {
                        cr_expect_eq(c->sink_seen, 0, "webhook / refused: the sink got %u requests", c->sink_seen);
                        continue;
                }
                cr_expect_leq(c->sink_seen, 12, "webhook / %s: %u requests at the sink", fault_names[f], c->sink_seen);
                cr_expect(c->sink_notices >= 1 && c->sink_completions >= 1, "webhook / %s: notice %u, completion %u at the sink",
                          fault_names[f], c->sink_notices, c->sink_completions);
                bool final = f == F_4XX || f == F_401 || f == F_MALFORMED; /* a 4xx is final; a 2xx with a bad body delivered */
                if (final)
                        cr_expect(c->sink_notices == 1 && c->sink_completions == 1 && c->sink_seen == 2,
                                  "webhook / %s: one attempt per delivery, the sink got %u (%u notices, %u completions)",
                                  fault_names[f], c->sink_seen, c->sink_notices, c->sink_completions);
                else
                        cr_expect(c->sink_notices >= 2 && c->sink_completions >= 2,
                                  "webhook / %s: retried, the sink got %u notices and %u completions", fault_names[f],
                                  c->sink_notices, c->sink_completions);
        }
}
