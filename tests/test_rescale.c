/* The Flink side end to end: the real spotd binary against the IMDS,
 * Kubernetes API and Flink JobManager simulators. An eviction accepted by
 * the Kubernetes simulator makes its TaskManager leave the Flink simulator,
 * as SIGTERM does to a real one. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <netinet/in.h>

#include "flink_sim.h"
#include "restarts.h"
#include "helpers.h"
#include "simargs.h"

#define JOB1 "a1b2c3d4e5f60718293a4b5c6d7e8f90"
#define JOB2 "b1b2c3d4e5f60718293a4b5c6d7e8f90"
#define VA "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a"
#define VB "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b"
#define VC "0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c"
#define TM_LABELS "component=taskmanager,type=flink-native-kubernetes,app=orders"

static struct imds_sim *imds;
static struct k8s_sim *kube;
static struct flink_sim *fl;
static struct sim_args simargs;

/* Only the cluster's own namespace holds its TaskManagers: a pod of
 * another namespace that shares a name is not one of them. */
static void on_terminate(void *ud, const char *ns, const char *name, const char *ip) {
        if (strcmp(ns, "flink") == 0)
                flink_sim_pod_terminating(ud, name, ip);
}

static void start_sims(const struct flink_sim_options *fo) {
        cr_assert_eq(imds_sim_start(NULL, &imds), 0);
        cr_assert_eq(k8s_sim_start(&(struct k8s_sim_options) { .grace_ms_per_s = 20 }, &kube), 0);
        sim_args_fill(&simargs, imds, kube);
        cr_assert_eq(flink_sim_start(fo, &fl), 0);
        k8s_sim_set_terminate_hook(kube, on_terminate, fl);
}

static void stop_sims(void) {
        imds = imds_sim_stop(imds);
        if (kube)
                k8s_sim_set_terminate_hook(kube, NULL, NULL);
        kube = k8s_sim_stop(kube);
        fl = flink_sim_stop(fl);
}

TestSuite(rescale, .fini = stop_sims, .timeout = 120);

/* n TaskManagers of cluster "orders" in namespace flink on node, 2 slots each. */
static void add_tms(const char *node, int from, int n) {
        char url[64];
        flink_sim_url(fl, url, sizeof url);
        for (int i = from; i < from + n; i++) {
                char name[64], ip[48];
                snprintf(name, sizeof name, "orders-taskmanager-1-%d", i);
                k8s_sim_add_pod(kube, "flink", name, node, TM_LABELS, 30, "Deployment");
                k8s_sim_set_pod_annotation(kube, "flink", name, "spotd.io/flink-rest-url", url);
                k8s_sim_pod_ip(kube, "flink", name, ip, sizeof ip);
                flink_sim_add_taskmanager(fl, name, ip, 2);
        }
}

/* Nodes node-a and node-b with on_a and on_b TaskManagers of cluster
 * orders, and one job of one vertex at parallelism. */
static void two_nodes_one_job(const struct flink_sim_options *fo, int on_a, int on_b, unsigned parallelism) {
        start_sims(fo);
        k8s_sim_add_node(kube, "node-a", NULL);
        k8s_sim_add_node(kube, "node-b", NULL);
        add_tms("node-a", 1, on_a);
        add_tms("node-b", 1 + on_a, on_b);
        flink_sim_add_job(fl, JOB1, "orders");
        flink_sim_add_vertex(fl, JOB1, VA, "all", parallelism, 128, NULL);
}

#define AGENT(node, imds_arg, ...) (char *[]) { "spotd", "run", imds_arg, simargs.api, simargs.ca, simargs.token, "--node-name=" node, \
        "--poll-interval=50ms", "--log-target=stderr", "--log-format=json", "--health-addr=off",                    \
        "--eviction-margin=10s", "--checkpoint-fresh=0s", "--flink-url-allow=127.0.0.1", ##__VA_ARGS__, NULL }

#define assert_restarts(jid, failovers, rescales) assert_job_restarts(fl, jid, failovers, rescales)

static unsigned upper(const char *jid, const char *vid) {
        unsigned lo = 0, up = 0;
        flink_sim_bounds(fl, jid, vid, &lo, &up);
        return up;
}

/* One job of parallelism 8 on 4 TaskManagers (8 slots), 2 of them on the
 * reclaimed node: checkpoint, evict + lower, run at 4, restore to 8. On
 * 1.18-1.20 the failover restart the evictions cause lasts 3 s, so that
 * the lowering PUT can be seen to land inside it. */
static void one_job(const char *version) {
        struct proc p;
        bool evict_first = version[0] == '1';
        start_sims(&(struct flink_sim_options) { .version = version, .checkpoint_ms = 100,
                                                 .restart_ms = evict_first ? 3000 : 100 });
        k8s_sim_add_node(kube, "node-a", NULL);
        k8s_sim_add_node(kube, "node-b", NULL);
        add_tms("node-a", 1, 2);
        add_tms("node-b", 3, 2);
        k8s_sim_add_pod(kube, "flink", "orders-jobmanager-0", "node-a",
                        "component=jobmanager,type=flink-native-kubernetes,app=orders", 30, "ReplicaSet");
        flink_sim_add_job(fl, JOB1, "orders");
        flink_sim_add_vertex(fl, JOB1, VA, "source", 8, 128, NULL);
        flink_sim_add_vertex(fl, JOB1, VB, "sink", 8, 128, NULL);

        cr_assert_eq(proc_spawn(&p, AGENT("node-a", simargs.imds, "--verify-timeout=20s"), NULL), 0);
        cr_assert(proc_wait_for(&p, "Watching instance", 5000), "%s", p.out);
        imds_sim_set_spot(imds, "terminate", time(NULL) + 120, 0);
        if (evict_first) {
                /* Evict, then PUT while the job is still in the failover
                 * restart the TaskManagers' loss caused: it comes back once,
                 * on the survivors, at the lower bounds. (How soon after the
                 * first eviction: bench_rescale.) */
                cr_assert(eventually(flink_sim_puts(fl, JOB1) >= 1, 30000), "no PUT: %s", p.out);
                cr_assert_str_eq(flink_sim_job_state(fl, JOB1), "RESTARTING",
                                 "the PUT came after the failover restart had ended: %s", p.out);
                cr_assert_eq(flink_sim_restarts(fl, JOB1), 1, "the restart under way is the TaskManagers' failover");
                cr_assert_eq(flink_sim_rescales(fl, JOB1), 0, "no restart of the PUT's own");
        }
        cr_assert(proc_wait_for(&p, "TaskManager pods gone", 30000), "%s\n--- flink:\n%s", p.out, flink_sim_log(fl));

        cr_assert_eq(flink_sim_violations(fl), 0, "every request follows the %s spec:\n%s", version, flink_sim_log(fl));
        cr_assert_eq(flink_sim_checkpoints_completed(fl, JOB1), 1, "a fresh checkpoint");
        uint64_t first_evict, last_evict, put = flink_sim_first_put(fl, JOB1);
        k8s_sim_eviction_window(kube, &first_evict, &last_evict);
        cr_assert_neq(put, 0);
        if (evict_first) {
                cr_assert_gt(put, first_evict, "1.18-1.20: evict first");
                cr_assert_eq(flink_sim_restarts(fl, JOB1) + flink_sim_rescales(fl, JOB1), 1, "one restart in all");
        } else
                cr_assert_lt(put, first_evict, "2.x: PUT first");
        cr_assert(strstr(p.out, "runs on the remaining TaskManagers at the lower parallelism"), "%s", p.out);
        cr_assert_eq(flink_sim_vertex_parallelism(fl, JOB1, VA), 4);
        cr_assert_eq(flink_sim_vertex_parallelism(fl, JOB1, VB), 4);
        cr_assert(strstr(p.out, "Restored the original bounds"), "%s", p.out);
        cr_assert_eq(upper(JOB1, VA), 8, "restored");
        cr_assert_eq(upper(JOB1, VB), 8);
        cr_assert_str_eq(flink_sim_job_state(fl, JOB1), "RUNNING");
        cr_assert_eq(k8s_sim_eviction_attempts(kube, "flink", "orders-jobmanager-0"), 0, "JobManager untouched");
        cr_assert_eq(k8s_sim_eviction_attempts(kube, "flink", "orders-taskmanager-1-3"), 0, "other node untouched");
        char *n = k8s_sim_node_json(kube, "node-a");
        cr_assert_null(strstr(n, "flink.spotd.io/"), "originals annotation cleared after restore: %s", n);
        free(n);
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

Test(rescale, one_job_flink_1_18) { one_job("1.18.1"); }
Test(rescale, one_job_flink_2_0) { one_job("2.0.0"); }

Test(rescale, session_cluster_two_jobs_and_slot_sharing_groups) {
        struct proc p;
        start_sims(&(struct flink_sim_options) { .version = "1.20.0", .checkpoint_ms = 50, .restart_ms = 100 });
        k8s_sim_add_node(kube, "node-a", NULL);
        k8s_sim_add_node(kube, "node-b", NULL);
        add_tms("node-a", 1, 2); /* 4 slots leave */
        add_tms("node-b", 3, 3); /* 6 stay */
        flink_sim_add_job(fl, JOB1, "orders");
        flink_sim_add_vertex(fl, JOB1, VA, "source", 4, 128, "ssg-a");
        flink_sim_add_vertex(fl, JOB1, VB, "agg", 2, 128, "ssg-b");   /* job1 needs 4 + 2 = 6 */
        flink_sim_add_job(fl, JOB2, "clicks");
        flink_sim_add_vertex(fl, JOB2, VC, "all", 4, 128, NULL);       /* job2 needs 4: 10 in all */
        cr_assert_eq(proc_spawn(&p, AGENT("node-a", simargs.imds, "--verify-timeout=10s"), NULL), 0);
        cr_assert(proc_wait_for(&p, "Watching instance", 5000));
        imds_sim_set_spot(imds, "terminate", time(NULL) + 120, 0);
        cr_assert(proc_wait_for(&p, "TaskManager pods gone", 30000), "%s", p.out);
        cr_assert_eq(flink_sim_violations(fl), 0, "%s", flink_sim_log(fl));
        /* 6 slots left for needs 6 and 4: 4 and 2, by weight after one per group */
        unsigned a = flink_sim_vertex_parallelism(fl, JOB1, VA), b = flink_sim_vertex_parallelism(fl, JOB1, VB),
                 c = flink_sim_vertex_parallelism(fl, JOB2, VC);
        cr_assert_leq(a + b + c, 6, "fits the 6 slots left: %u + %u + %u", a, b, c);
        cr_assert(a >= 1 && b >= 1 && c >= 1);
        cr_assert_eq(flink_sim_checkpoints_completed(fl, JOB1), 1);
        cr_assert_eq(flink_sim_checkpoints_completed(fl, JOB2), 1);
        cr_assert_eq(upper(JOB1, VA), 4, "restored");
        cr_assert_eq(upper(JOB2, VC), 4, "restored");
        /* The simulator keeps running jobs on the slots left in the order
         * they were added (it has no slot placement): job1 keeps its 6 and
         * is lowered in place, job2 loses its TaskManagers and fails over,
         * coming back at the lowered bounds in that same restart. On restore
         * job1's bounds go back to 4 and 2, which share its 4 slots
         * differently: a second rescale in place. No failover of job1, no
         * extra restart of job2. */
        assert_restarts(JOB1, 0, 2);
        assert_restarts(JOB2, 1, 0);
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

/* A JobManager that answers 503 is given up on after a few tries: its
 * TaskManagers are evicted long before the Flink steps' time runs out (here
 * the deadline is 10 min away and --checkpoint-timeout is 10 min, so an
 * agent waiting on the JobManager would evict only after some 9 min). How
 * soon they are evicted: bench_rescale. */
Test(rescale, jobmanager_unreachable_still_evicts_in_time) {
        struct proc p;
        start_sims(&(struct flink_sim_options) { .version = "1.18.1" });
        k8s_sim_add_node(kube, "node-a", NULL);
        add_tms("node-a", 1, 2);
        flink_sim_set_down(fl, true);
        cr_assert_eq(proc_spawn(&p, AGENT("node-a", simargs.imds, "--flink-timeout=1s", "--checkpoint-timeout=600s"), NULL), 0);
        cr_assert(proc_wait_for(&p, "Watching instance", 5000));
        imds_sim_set_spot(imds, "terminate", time(NULL) + 600, 0);
        cr_assert(proc_wait_for_n(&p, "Evicted pod", 2, 20000), "no waiting on a dead JobManager: %s", p.out);
        const char *degraded = strstr(p.out, "evicting its TaskManagers without rescaling");
        cr_assert(degraded && degraded < strstr(p.out, "Evicted pod"), "given up on before the evictions: %s", p.out);
        cr_assert(proc_wait_for(&p, "handled: 2 TaskManager pods gone", 10000), "%s", p.out);
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

/* A checkpoint slower than --checkpoint-timeout: waited for until the
 * budget runs out, then abandoned, the evictions going ahead while it is
 * still in progress (it would take 10 min). How long after the budget:
 * bench_rescale. */
Test(rescale, slow_checkpoint_abandoned_evictions_on_time) {
        struct proc p;
        start_sims(&(struct flink_sim_options) { .version = "1.18.1", .checkpoint_ms = 600000 });
        k8s_sim_add_node(kube, "node-a", NULL);
        k8s_sim_add_node(kube, "node-b", NULL);
        add_tms("node-a", 1, 1);
        add_tms("node-b", 2, 1);
        flink_sim_add_job(fl, JOB1, "orders");
        flink_sim_add_vertex(fl, JOB1, VA, "all", 4, 128, NULL);
        cr_assert_eq(proc_spawn(&p, AGENT("node-a", simargs.imds, "--checkpoint-timeout=1s"), NULL), 0);
        cr_assert(proc_wait_for(&p, "Watching instance", 5000));
        imds_sim_set_spot(imds, "terminate", time(NULL) + 120, 0);
        cr_assert(proc_wait_for(&p, "Evicted pod", 20000), "%s", p.out);
        cr_assert_geq(flink_sim_checkpoints_triggered(fl, JOB1), 1, "a checkpoint was asked for");
        cr_assert_eq(flink_sim_checkpoints_completed(fl, JOB1), 0, "evicted before it completed");
        const char *abandoned = strstr(p.out, "not done within its budget");
        cr_assert(abandoned && abandoned < strstr(p.out, "Evicted pod"), "the budget ran out before the evictions: %s", p.out);
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

Test(rescale, default_scheduler_plain_eviction) {
        struct proc p;
        start_sims(&(struct flink_sim_options) { .version = "1.18.1", .default_scheduler = true });
        k8s_sim_add_node(kube, "node-a", NULL);
        add_tms("node-a", 1, 1);
        flink_sim_add_job(fl, JOB1, "orders");
        flink_sim_add_vertex(fl, JOB1, VA, "all", 2, 128, NULL);
        cr_assert_eq(proc_spawn(&p, AGENT("node-a", simargs.imds), NULL), 0);
        cr_assert(proc_wait_for(&p, "Watching instance", 5000));
        imds_sim_set_spot(imds, "terminate", time(NULL) + 120, 0);
        cr_assert(proc_wait_for(&p, "handled: 1 TaskManager pods gone", 10000), "%s", p.out);
        cr_assert(strstr(p.out, "the job runs the default scheduler"), "%s", p.out);
        cr_assert_eq(flink_sim_puts(fl, JOB1), 0, "no PUT to a default scheduler");
        /* Flink's own failover, once; with no slot left the job waits for
         * new TaskManagers in RESTARTING. */
        cr_assert(eventually(flink_sim_restarts(fl, JOB1) == 1, 10000));
        cr_assert_eq(flink_sim_rescales(fl, JOB1), 0);
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

Test(rescale, restart_mid_plan_restores_originals) {
        struct proc p;
        /* The rescale takes 3 s to settle: time to kill the agent in between. */
        start_sims(&(struct flink_sim_options) { .version = "1.18.1", .checkpoint_ms = 50, .restart_ms = 3000 });
        k8s_sim_add_node(kube, "node-a", NULL);
        k8s_sim_add_node(kube, "node-b", NULL);
        add_tms("node-a", 1, 2);
        add_tms("node-b", 3, 2);
        flink_sim_add_job(fl, JOB1, "orders");
        flink_sim_add_vertex(fl, JOB1, VA, "all", 8, 128, NULL);
        imds_sim_set_spot(imds, "terminate", time(NULL) + 600, 0);
        cr_assert_eq(proc_spawn(&p, AGENT("node-a", simargs.imds), NULL), 0);
        cr_assert(proc_wait_for(&p, "Lowered the bounds", 15000), "%s", p.out);
        kill(p.pid, SIGKILL);
        proc_stop(&p, 0, 2000);
        proc_free(&p);
        cr_assert_eq(upper(JOB1, VA), 4, "left lowered by the killed agent");
        char *n = k8s_sim_node_json(kube, "node-a");
        cr_assert(strstr(n, "flink.spotd.io/"), "originals recorded before the change: %s", n);
        free(n);

        cr_assert_eq(proc_spawn(&p, AGENT("node-a", simargs.imds), NULL), 0);
        cr_assert(proc_wait_for(&p, "Restored the original bounds", 20000), "%s", p.out);
        cr_assert_eq(upper(JOB1, VA), 8, "the restarted agent restored the recorded original");
        assert_restarts(JOB1, 1, 0); /* the restarted agent added no restart */
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

Test(rescale, two_agents_two_nodes_converge) {
        struct imds_sim *imds_b;
        struct proc pa, pb;
        char url[64], b_imds[128];
        start_sims(&(struct flink_sim_options) { .version = "1.18.1", .checkpoint_ms = 50, .restart_ms = 100 });
        cr_assert_eq(imds_sim_start(&(struct imds_sim_options) { .instance_id = "i-0bbbbbbbbbbbbbbb0" }, &imds_b), 0);
        imds_sim_url(imds_b, url, sizeof url);
        snprintf(b_imds, sizeof b_imds, "--imds-endpoint=%s", url);
        k8s_sim_add_node(kube, "node-a", NULL);
        k8s_sim_add_node(kube, "node-b", NULL);
        k8s_sim_add_node(kube, "node-c", NULL);
        add_tms("node-a", 1, 2);
        add_tms("node-b", 3, 2);
        add_tms("node-c", 5, 2);
        flink_sim_add_job(fl, JOB1, "orders");
        flink_sim_add_vertex(fl, JOB1, VA, "all", 12, 128, NULL);
        cr_assert_eq(proc_spawn(&pa, AGENT("node-a", simargs.imds, "--verify-timeout=10s"), NULL), 0);
        cr_assert_eq(proc_spawn(&pb, AGENT("node-b", b_imds, "--verify-timeout=10s"), NULL), 0);
        cr_assert(proc_wait_for(&pa, "Watching instance", 5000));
        cr_assert(proc_wait_for(&pb, "Watching instance", 5000));
        imds_sim_set_spot(imds, "terminate", time(NULL) + 120, 0);
        imds_sim_set_spot(imds_b, "terminate", time(NULL) + 120, 0);
        cr_assert(proc_wait_for(&pa, "TaskManager pods gone", 30000), "%s", pa.out);
        cr_assert(proc_wait_for(&pb, "TaskManager pods gone", 30000), "%s", pb.out);
        cr_assert_eq(flink_sim_violations(fl), 0, "%s", flink_sim_log(fl));
        cr_assert_eq(flink_sim_vertex_parallelism(fl, JOB1, VA), 4, "runs on node-c's 4 slots");
        cr_assert_eq(upper(JOB1, VA), 12, "the original is what comes back, not an intermediate bound");
        cr_assert_lt(flink_sim_puts(fl, JOB1), 10, "no 409 livelock: %u PUTs", flink_sim_puts(fl, JOB1));
        for (int i = 1; i <= 4; i++) {
                char name[64];
                snprintf(name, sizeof name, "orders-taskmanager-1-%d", i);
                cr_assert_eq(k8s_sim_evictions(kube, "flink", name), 1, "%s", name);
        }
        cr_assert_eq(k8s_sim_eviction_attempts(kube, "flink", "orders-taskmanager-1-5"), 0);
        cr_assert_eq(proc_stop(&pa, SIGTERM, 5000), 0);
        cr_assert_eq(proc_stop(&pb, SIGTERM, 5000), 0);
        proc_free(&pa);
        proc_free(&pb);
        imds_sim_stop(imds_b);
}

/* A webhook receiver on loopback: keeps the bodies and one header. */
#include <microhttpd.h>
#include <pthread.h>

struct sink {
        struct MHD_Daemon *d;
        pthread_mutex_t lock;
        char *bodies[8];
        char auth[128];
        unsigned n;
};

/* One body per request: a retried delivery may overlap a slow one. */
struct upload {
        size_t len;
        char buf[65536];
};

static enum MHD_Result sink_handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                    const char *version, const char *data, size_t *size, void **state) {
        struct sink *s = cls;
        struct upload *u = *state;
        if (!u) {
                *state = calloc(1, sizeof *u);
                return *state ? MHD_YES : MHD_NO;
        }
        if (*size) {
                size_t n = *size < sizeof u->buf - 1 - u->len ? *size : sizeof u->buf - 1 - u->len;
                memcpy(u->buf + u->len, data, n);
                u->len += n;
                *size = 0;
                return MHD_YES;
        }
        pthread_mutex_lock(&s->lock);
        const char *a = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
        snprintf(s->auth, sizeof s->auth, "%s", a ? a : "");
        u->buf[u->len] = 0;
        if (s->n < 8 && strcmp(method, "POST") == 0)
                s->bodies[s->n++] = strdup(u->buf);
        pthread_mutex_unlock(&s->lock);
        free(u);
        *state = NULL;
        struct MHD_Response *r = MHD_create_response_from_buffer(2, "{}", MHD_RESPMEM_PERSISTENT);
        enum MHD_Result ret = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        return ret;
}

Test(rescale, webhook_signal_at_notice_and_completion) {
        struct proc p;
        static struct sink s = { .lock = PTHREAD_MUTEX_INITIALIZER };
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        s.d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, sink_handler, &s, MHD_OPTION_SOCK_ADDR, &sa,
                               MHD_OPTION_END);
        cr_assert_not_null(s.d);
        char hook[128];
        snprintf(hook, sizeof hook, "--webhook-url=http://127.0.0.1:%u/spot", MHD_get_daemon_info(s.d, MHD_DAEMON_INFO_BIND_PORT)->port);
        start_sims(&(struct flink_sim_options) { .version = "1.18.1", .checkpoint_ms = 50, .restart_ms = 50 });
        k8s_sim_add_node(kube, "node-a", NULL);
        k8s_sim_add_node(kube, "node-b", NULL);
        add_tms("node-a", 1, 1);
        add_tms("node-b", 2, 1);
        flink_sim_add_job(fl, JOB1, "orders");
        flink_sim_add_vertex(fl, JOB1, VA, "all", 4, 128, NULL);
        cr_assert_eq(proc_spawn(&p, AGENT("node-a", simargs.imds, hook, "--webhook-header=Authorization: Bearer hook-secret-42"), NULL), 0);
        cr_assert(proc_wait_for(&p, "Watching instance", 5000));
        imds_sim_set_spot(imds, "terminate", time(NULL) + 120, 0);
        cr_assert(proc_wait_for(&p, "TaskManager pods gone", 30000), "%s", p.out);
        /* A notice delivery that timed out under load is retried: find each by type. */
        cr_assert(eventually(({
                pthread_mutex_lock(&s.lock);
                bool last = s.n >= 2 && strstr(s.bodies[s.n - 1], "\"completed\"");
                pthread_mutex_unlock(&s.lock);
                last;
        }), 5000), "notice and completion, got %u: %s", s.n, p.out);
        cr_assert_str_eq(s.auth, "Bearer hook-secret-42");
        cr_assert_null(strstr(p.out, "hook-secret-42"), "the header never reaches the logs");

        cJSON *n = cJSON_Parse(s.bodies[0]), *c = cJSON_Parse(s.bodies[s.n - 1]);
        cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(n, "type")), "notice");
        cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(n, "node")), "node-a");
        cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(n, "event"), "id")),
                         "spot-i-0123456789abcdef0-terminate");
        cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(c, "type")), "completed");
        cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(c, "pods")), 1);
        cJSON *job = cJSON_GetArrayItem(cJSON_GetObjectItem(c, "jobs"), 0);
        cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(job, "job_id")), JOB1);
        cr_assert_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(job, "old_bounds"), VA), 1)->valueint, 4);
        cr_assert_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(job, "new_bounds"), VA), 1)->valueint, 2);
        cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(job, "outcome")), "verified");
        cJSON *tl = cJSON_GetObjectItem(c, "timeline");
        cr_assert_not_null(cJSON_GetObjectItem(tl, "fenced"));
        cr_assert_not_null(cJSON_GetObjectItem(tl, "bounds_lowered"));
        cr_assert_not_null(cJSON_GetObjectItem(tl, "bounds_restored"));
        cr_assert_not_null(cJSON_GetObjectItem(c, "outcome"));
        cJSON_Delete(n);
        cJSON_Delete(c);
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
        MHD_stop_daemon(s.d);
}

/* As above, but the restarted agent finds its TaskManagers already gone: the
 * cluster is known only from the node annotation, so it is restored without
 * being discovered again (discovering it redid its jobs: valgrind found them
 * leaked). */
Test(rescale, restart_after_taskmanagers_gone_restores_from_annotation) {
        struct proc p;
        start_sims(&(struct flink_sim_options) { .version = "1.18.1", .checkpoint_ms = 50, .restart_ms = 3000 });
        k8s_sim_add_node(kube, "node-a", NULL);
        k8s_sim_add_node(kube, "node-b", NULL);
        add_tms("node-a", 1, 2);
        add_tms("node-b", 3, 2);
        flink_sim_add_job(fl, JOB1, "orders");
        flink_sim_add_vertex(fl, JOB1, VA, "all", 8, 128, NULL);
        imds_sim_set_spot(imds, "terminate", time(NULL) + 600, 0);
        cr_assert_eq(proc_spawn(&p, AGENT("node-a", simargs.imds), NULL), 0);
        cr_assert(proc_wait_for(&p, "Lowered the bounds", 15000), "%s", p.out);
        kill(p.pid, SIGKILL);
        proc_stop(&p, 0, 2000);
        proc_free(&p);
        cr_assert_eq(upper(JOB1, VA), 4, "left lowered by the killed agent");
        cr_assert(eventually(k8s_sim_pod_state(kube, "flink", "orders-taskmanager-1-1") == 2 &&
                             k8s_sim_pod_state(kube, "flink", "orders-taskmanager-1-2") == 2, 5000), "evicted pods gone");

        cr_assert_eq(proc_spawn(&p, AGENT("node-a", simargs.imds), NULL), 0);
        cr_assert(proc_wait_for(&p, "Restoring the bounds an earlier run lowered", 10000), "%s", p.out);
        cr_assert(proc_wait_for(&p, "Restored the original bounds", 20000), "%s", p.out);
        cr_assert_eq(upper(JOB1, VA), 8, "the restarted agent restored the recorded original");
        assert_restarts(JOB1, 1, 0); /* the restarted agent added no restart */
        cr_assert(eventually(({
                                char *n = k8s_sim_node_json(kube, "node-a");
                                bool cleared = n && !strstr(n, "flink.spotd.io/");
                                free(n);
                                cleared;
                        }), 5000), "annotation cleared after the restore");
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0, "%s", p.out);
        proc_free(&p);
}

/* One JobManager answer slower than --flink-timeout (a loaded machine, a
 * GC pause) is asked again within the checkpoint budget, not taken for a
 * dead JobManager: the job is still lowered and restored. The cause of a
 * fault-matrix cell that failed now and then. */
Test(rescale, slow_discovery_answer_is_retried) {
        struct proc p;
        two_nodes_one_job(&(struct flink_sim_options) { .version = "1.18.1", .checkpoint_ms = 50, .restart_ms = 50 }, 2, 2, 8);
        flink_sim_fault(fl, "/jobs/overview", FLINK_SIM_SLOW, 1300, 1);
        cr_assert_eq(proc_spawn(&p, AGENT("node-a", simargs.imds, "--flink-timeout=1s", "--verify-timeout=20s"), NULL), 0);
        cr_assert(proc_wait_for(&p, "Watching instance", 5000));
        imds_sim_set_spot(imds, "terminate", time(NULL) + 120, 0);
        cr_assert(proc_wait_for(&p, "TaskManager pods gone", 30000), "%s", p.out);
        cr_assert_geq(flink_sim_puts(fl, JOB1), 2, "lowered, then restored: %s", p.out);
        cr_assert_eq(flink_sim_violations(fl), 0, "%s", flink_sim_log(fl));
        cr_assert_eq(upper(JOB1, VA), 8, "restored");
        cr_assert_null(strstr(p.out, "without rescaling"), "%s", p.out);
        assert_restarts(JOB1, 1, 0);
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

/* A pod anyone may create, matching the TaskManager selector in another
 * namespace and named like the victim's TaskManager, pointed at the
 * victim's JobManager: the name says nothing across namespaces, so the
 * victim's job is neither checkpointed nor lowered. */
/* A pod on node-a that is none of the cluster's TaskManagers (those run on
 * node-b), annotated with the cluster's JobManager, reclaimed; p is the
 * agent, stopped by the caller. */
static void stray_pod_reclaimed(const char *ns, const char *name, int tms_elsewhere, unsigned parallelism, struct proc *p) {
        char url[64];
        start_sims(&(struct flink_sim_options) { .version = "1.18.1", .checkpoint_ms = 50, .restart_ms = 50 });
        k8s_sim_add_node(kube, "node-a", NULL);
        k8s_sim_add_node(kube, "node-b", NULL);
        add_tms("node-b", 1, tms_elsewhere);
        flink_sim_add_job(fl, JOB1, "orders");
        flink_sim_add_vertex(fl, JOB1, VA, "all", parallelism, 128, NULL);
        flink_sim_url(fl, url, sizeof url);
        k8s_sim_add_pod(kube, ns, name, "node-a", TM_LABELS, 30, "Deployment");
        k8s_sim_set_pod_annotation(kube, ns, name, "spotd.io/flink-rest-url", url);
        cr_assert_eq(proc_spawn(p, AGENT("node-a", simargs.imds), NULL), 0);
        cr_assert(proc_wait_for(p, "Watching instance", 5000));
        imds_sim_set_spot(imds, "terminate", time(NULL) + 120, 0);
        cr_assert(proc_wait_for(p, "TaskManager pods gone", 30000), "%s", p->out);
}

Test(rescale, foreign_namespace_pod_cannot_lower_a_job) {
        struct proc p;
        stray_pod_reclaimed("evil", "orders-taskmanager-1-1", 4, 8, &p);
        cr_assert_eq(flink_sim_checkpoints_triggered(fl, JOB1), 0, "%s", p.out);
        cr_assert_eq(flink_sim_puts(fl, JOB1), 0, "%s", p.out);
        cr_assert_eq(upper(JOB1, VA), 8);
        assert_restarts(JOB1, 0, 0); /* none of its TaskManagers left */
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

/* Without --flink-url-allow a pod's annotation names no JobManager: the
 * one it points at is never contacted. */
Test(rescale, annotation_outside_the_allow_list_is_ignored) {
        struct proc p;
        start_sims(&(struct flink_sim_options) { .version = "1.18.1", .checkpoint_ms = 50, .restart_ms = 50 });
        k8s_sim_add_node(kube, "node-a", NULL);
        add_tms("node-a", 1, 2);
        flink_sim_add_job(fl, JOB1, "orders");
        flink_sim_add_vertex(fl, JOB1, VA, "all", 4, 128, NULL);
        cr_assert_eq(proc_spawn(&p, (char *[]) { "spotd", "run", simargs.imds, simargs.api, simargs.ca, simargs.token, "--node-name=node-a",
                                                 "--poll-interval=50ms", "--log-target=stderr", "--log-format=json",
                                                 "--health-addr=off", "--eviction-margin=10s", "--flink-timeout=1s",
                                                 /* no resolver: the template's JobManager refuses at once */
                                                 "--flink-rest-template=http://127.0.0.1:9/{namespace}/{app}", NULL },
                                NULL), 0);
        cr_assert(proc_wait_for(&p, "Watching instance", 5000));
        imds_sim_set_spot(imds, "terminate", time(NULL) + 120, 0);
        cr_assert(proc_wait_for(&p, "TaskManager pods gone", 30000), "%s", p.out);
        cr_assert(strstr(p.out, "outside --flink-url-allow"), "%s", p.out);
        char *log = flink_sim_log(fl);
        cr_assert_str_eq(log, "", "the JobManager named by the annotation was contacted: %s", log);
        free(log);
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

/* The jobs fit in the slots that remain, so no bound changes; the job
 * still fails over when its TaskManager goes, and it should restart from a
 * checkpoint taken at the notice, not from the last periodic one. */
Test(rescale, jobs_that_fit_get_a_checkpoint_before_the_evictions) {
        struct proc p;
        two_nodes_one_job(&(struct flink_sim_options) { .version = "1.18.1", .checkpoint_ms = 100, .restart_ms = 100 }, 1, 3, 2);
        unsigned before = upper(JOB1, VA);
        cr_assert_eq(proc_spawn(&p, AGENT("node-a", simargs.imds), NULL), 0);
        cr_assert(proc_wait_for(&p, "Watching instance", 5000));
        imds_sim_set_spot(imds, "terminate", time(NULL) + 120, 0);
        cr_assert(proc_wait_for(&p, "TaskManager pods gone", 30000), "%s", p.out);
        cr_assert(strstr(p.out, "no rescale; checkpointing first"), "%s", p.out);
        cr_assert_eq(flink_sim_checkpoints_completed(fl, JOB1), 1, "a checkpoint at the notice: %s", p.out);
        const char *ck = strstr(p.out, "Checkpoint of job " JOB1 " completed");
        cr_assert(ck && ck < strstr(p.out, "Evicted pod"), "checkpointed before the evictions: %s", p.out);
        cr_assert_eq(flink_sim_puts(fl, JOB1), 0, "no bounds to change: %s", p.out);
        cr_assert_eq(upper(JOB1, VA), before);
        char *n = k8s_sim_node_json(kube, "node-a");
        cr_assert_null(strstr(n, "flink.spotd.io/"), "nothing recorded, nothing to restore: %s", n);
        free(n);
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

/* A TaskManager pod whose JobManager lists no TaskManager with its IP (and
 * the JobManager is not known to share its namespace, so names do not
 * count): spotd cannot plan for it and says so by name. */
Test(rescale, pod_matching_no_taskmanager_is_named) {
        struct proc p;
        stray_pod_reclaimed("flink", "orders-taskmanager-1-9", 2, 4, &p);
        cr_assert(strstr(p.out, "Pod flink/orders-taskmanager-1-9 matches none of the 2 TaskManagers of Flink cluster flink/orders"),
                  "%s", p.out);
        cr_assert_eq(flink_sim_puts(fl, JOB1), 0, "%s", p.out);
        cr_assert_eq(flink_sim_checkpoints_triggered(fl, JOB1), 0, "nothing of the job leaves: %s", p.out);
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

/* A 40 s notice, pods with the default 30 s grace period, a 10 s margin:
 * budgeting the whole grace period left the Flink steps nothing (a plain
 * drain). A TaskManager stops in about a second; --tm-stop-time (10 s)
 * is what is kept for it, and the checkpoint and the rescale happen. */
Test(rescale, short_notice_keeps_time_for_flink_not_the_whole_grace_period) {
        struct proc p;
        two_nodes_one_job(&(struct flink_sim_options) { .version = "1.18.1", .checkpoint_ms = 100, .restart_ms = 100 }, 2, 2, 8);
        cr_assert_eq(proc_spawn(&p, AGENT("node-a", simargs.imds), NULL), 0);
        cr_assert(proc_wait_for(&p, "Watching instance", 5000));
        imds_sim_set_spot(imds, "terminate", time(NULL) + 40, 0);
        cr_assert(proc_wait_for(&p, "TaskManager pods gone", 30000), "%s", p.out);
        cr_assert_null(strstr(p.out, "over its time budget"), "%s", p.out);
        cr_assert_eq(flink_sim_checkpoints_completed(fl, JOB1), 1, "%s", p.out);
        cr_assert_geq(flink_sim_puts(fl, JOB1), 1, "%s", p.out);
        cr_assert(proc_wait_for(&p, "Restored the original bounds", 30000), "%s", p.out);
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

/* Flink reads jobmanager.scheduler case-insensitively: "Adaptive" is the
 * adaptive scheduler, not a reason to give up on the rescale. */
Test(rescale, scheduler_written_in_capitals_is_adaptive) {
        struct proc p;
        two_nodes_one_job(&(struct flink_sim_options) { .version = "1.18.1", .scheduler = "Adaptive", .checkpoint_ms = 50,
                                                        .restart_ms = 50 }, 2, 2, 8);
        cr_assert_eq(proc_spawn(&p, AGENT("node-a", simargs.imds, "--verify-timeout=20s"), NULL), 0);
        cr_assert(proc_wait_for(&p, "Watching instance", 5000));
        imds_sim_set_spot(imds, "terminate", time(NULL) + 120, 0);
        cr_assert(proc_wait_for(&p, "Restored the original bounds", 30000), "%s", p.out);
        cr_assert_null(strstr(p.out, "not the adaptive one"), "%s", p.out);
        cr_assert_geq(flink_sim_puts(fl, JOB1), 2, "lowered and restored: %s", p.out);
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

/* A bounded source that has finished (its subtasks FINISHED while the job
 * runs) is done: verification passes with it, it does not wait out
 * --verify-timeout for subtasks that will never run again. */
Test(rescale, finished_subtasks_count_as_done_in_verification) {
        struct proc p;
        two_nodes_one_job(&(struct flink_sim_options) { .version = "1.18.1", .checkpoint_ms = 50, .restart_ms = 50 }, 2, 2, 8);
        flink_sim_add_vertex(fl, JOB1, VB, "bounded source", 2, 128, NULL);
        flink_sim_set_vertex_finished(fl, JOB1, VB);
        cr_assert_eq(proc_spawn(&p, AGENT("node-a", simargs.imds, "--verify-timeout=5s"), NULL), 0);
        cr_assert(proc_wait_for(&p, "Watching instance", 5000));
        imds_sim_set_spot(imds, "terminate", time(NULL) + 120, 0);
        cr_assert(proc_wait_for(&p, "Restored the original bounds", 30000), "%s", p.out);
        cr_assert(strstr(p.out, "runs on the remaining TaskManagers at the lower parallelism"), "%s", p.out);
        cr_assert_null(strstr(p.out, "did not reach the lower parallelism"), "%s", p.out);
        cr_assert_eq(flink_sim_vertex_parallelism(fl, JOB1, VA), 4, "%s", p.out);
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

/* A vertex whose upper bound is -1 (no bound, as an earlier PUT left it):
 * lowered and restored to its max parallelism, which means the same. Not
 * to 32768 (what -1 reads as: Flink answers 400 above the max parallelism)
 * and not to -1 (Flink 1.20.5 accepted it and its JobManager then failed
 * fatally: the simulator counts it as a violation). */
Test(rescale, unbounded_upper_bound_restored_as_max_parallelism) {
        struct proc p;
        two_nodes_one_job(&(struct flink_sim_options) { .version = "1.18.1", .checkpoint_ms = 50, .restart_ms = 50 }, 2, 2, 8);
        flink_sim_set_upper_unbounded(fl, JOB1, VA);
        cr_assert_eq(proc_spawn(&p, AGENT("node-a", simargs.imds, "--verify-timeout=20s"), NULL), 0);
        cr_assert(proc_wait_for(&p, "Watching instance", 5000));
        imds_sim_set_spot(imds, "terminate", time(NULL) + 120, 0);
        cr_assert(proc_wait_for(&p, "Restored the original bounds", 30000), "%s\n--- flink:\n%s", p.out, flink_sim_log(fl));
        cr_assert_eq(upper(JOB1, VA), 128, "%s", p.out);
        cr_assert_eq(flink_sim_violations(fl), 0, "%s", flink_sim_log(fl));
        cr_assert_eq(flink_sim_vertex_parallelism(fl, JOB1, VA), 4, "ran at the lower bound in between");
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

/* The restore meets a JobManager that cannot take it yet (500s, as while
 * it "could not be persisted ... Please retry" or in leader election): it
 * is retried with backoff, not given up on, which left the job lowered
 * until the next event or restart of spotd. */
Test(rescale, restore_retried_after_server_errors) {
        struct proc p;
        two_nodes_one_job(&(struct flink_sim_options) { .version = "1.18.1", .checkpoint_ms = 50, .restart_ms = 2000 }, 2, 2, 8);
        cr_assert_eq(proc_spawn(&p, AGENT("node-a", simargs.imds, "--verify-timeout=20s"), NULL), 0);
        cr_assert(proc_wait_for(&p, "Watching instance", 5000));
        imds_sim_set_spot(imds, "terminate", time(NULL) + 120, 0);
        cr_assert(proc_wait_for(&p, "Lowered the bounds", 20000), "%s", p.out);
        /* Verification takes the 2 s restart: the faults meet the restore. */
        flink_sim_fault(fl, "/jobs/" JOB1 "/resource-requirements", 500, 0, 3);
        cr_assert(proc_wait_for(&p, "Restored the original bounds", 30000), "%s\n--- flink:\n%s", p.out, flink_sim_log(fl));
        cr_assert(strstr(p.out, "Cannot restore the bounds of job " JOB1 " yet"), "%s", p.out);
        cr_assert_eq(upper(JOB1, VA), 8, "%s", p.out);
        cr_assert(eventually(({
                                char *n = k8s_sim_node_json(kube, "node-a");
                                bool cleared = n && !strstr(n, "flink.spotd.io/");
                                free(n);
                                cleared;
                        }), 5000), "annotation cleared once restored");
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}
