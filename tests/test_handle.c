/* The real spotd binary against the IMDS and Kubernetes API simulators:
 * fence, TaskManager discovery, eviction, PDBs, restarts, undo, TLS, tokens. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>

#include "helpers.h"
#include "simargs.h"

static struct imds_sim *imds;
static struct k8s_sim *kube;
static struct sim_args sa;

#define TM_NATIVE(app) "component=taskmanager,type=flink-native-kubernetes,app=" app
#define TM_STANDALONE(app) "component=taskmanager,type=flink-standalone-kubernetes,app=" app

static void start(void) {
        cr_assert_eq(imds_sim_start(NULL, &imds), 0);
        cr_assert_eq(k8s_sim_start(&(struct k8s_sim_options) { .grace_ms_per_s = 20 }, &kube), 0);
        sim_args_fill(&sa, imds, kube);
}
static void stop(void) {
        imds = imds_sim_stop(imds);
        kube = k8s_sim_stop(kube);
}

TestSuite(handle, .init = start, .fini = stop, .timeout = 90);

#define AGENT(...) (char *[]) { "spotd", "run", sa.imds, sa.api, sa.ca, sa.token, "--node-name=node-a", \
                                "--poll-interval=50ms", "--log-target=stderr", "--log-format=json",  \
                                "--health-addr=off", __VA_ARGS__, NULL }

/* The node of the issue: 6 TaskManagers of 2 Flink clusters, a JobManager,
 * DaemonSet pods, a Deployment pod and a PDB-guarded pod; plus a TaskManager
 * on another node. */
static void populate(void) {
        k8s_sim_add_node(kube, "node-a", "eks.amazonaws.com/capacityType=SPOT");
        k8s_sim_add_node(kube, "node-b", "eks.amazonaws.com/capacityType=SPOT");
        for (int i = 1; i <= 3; i++) {
                char n[64];
                snprintf(n, sizeof n, "orders-taskmanager-1-%d", i);
                k8s_sim_add_pod(kube, "flink", n, "node-a", TM_NATIVE("orders"), 30, "Deployment");
                snprintf(n, sizeof n, "clicks-taskmanager-%d", i);
                k8s_sim_add_pod(kube, "analytics", n, "node-a", TM_STANDALONE("clicks"), 60, "Deployment");
        }
        k8s_sim_add_pod(kube, "flink", "orders-jobmanager-0", "node-a",
                        "component=jobmanager,type=flink-native-kubernetes,app=orders", 30, "ReplicaSet");
        k8s_sim_add_pod(kube, "kube-system", "aws-node-x1", "node-a", "k8s-app=aws-node", 30, "DaemonSet");
        k8s_sim_add_pod(kube, "kube-system", "fluent-bit-x1", "node-a", "app=fluent-bit,component=taskmanager", 30, "DaemonSet");
        k8s_sim_add_pod(kube, "web", "frontend-abc", "node-a", "app=frontend", 30, "ReplicaSet");
        k8s_sim_add_pod(kube, "web", "checkout-abc", "node-a", "app=checkout", 30, "ReplicaSet");
        k8s_sim_add_pdb(kube, "web", "checkout", "app=checkout", 0);
        k8s_sim_add_pod(kube, "flink", "orders-taskmanager-1-9", "node-b", TM_NATIVE("orders"), 30, "Deployment");
}

static const char *const tms[][2] = {
        { "flink", "orders-taskmanager-1-1" }, { "flink", "orders-taskmanager-1-2" }, { "flink", "orders-taskmanager-1-3" },
        { "analytics", "clicks-taskmanager-1" }, { "analytics", "clicks-taskmanager-2" }, { "analytics", "clicks-taskmanager-3" },
};
static const char *const others[][2] = {
        { "flink", "orders-jobmanager-0" }, { "kube-system", "aws-node-x1" }, { "kube-system", "fluent-bit-x1" },
        { "web", "frontend-abc" }, { "web", "checkout-abc" }, { "flink", "orders-taskmanager-1-9" },
};

static cJSON *node_json(const char *name) {
        char *s = k8s_sim_node_json(kube, name);
        cJSON *j = cJSON_Parse(s);
        free(s);
        cr_assert_not_null(j);
        return j;
}

static const char *annotation(cJSON *node, const char *key) {
        return cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(node, "metadata"), "annotations"), key));
}

static bool has_spotd_taint(cJSON *node, const char *value) {
        cJSON *t;
        cJSON_ArrayForEach(t, cJSON_GetObjectItem(cJSON_GetObjectItem(node, "spec"), "taints")) {
                if (streq_ptr(cJSON_GetStringValue(cJSON_GetObjectItem(t, "key")), "spotd.io/interruption") &&
                    streq_ptr(cJSON_GetStringValue(cJSON_GetObjectItem(t, "effect")), "NoSchedule") &&
                    (!value || streq_ptr(cJSON_GetStringValue(cJSON_GetObjectItem(t, "value")), value)))
                        return true;
        }
        return false;
}

/* The simulator takes any Event the real server takes (any type, no
 * reason, no source): what spotd writes is held here to what kubectl and
 * event exporters expect of one. */
static void assert_events_well_formed(void) {
        char *text = k8s_sim_events_json(kube);
        cJSON *list = cJSON_Parse(text), *ev;
        cr_assert(cJSON_GetArraySize(list) > 0, "%s", text);
        cJSON_ArrayForEach(ev, list) {
                const char *type = cJSON_GetStringValue(cJSON_GetObjectItem(ev, "type"));
                const char *reason = cJSON_GetStringValue(cJSON_GetObjectItem(ev, "reason"));
                const char *msg = cJSON_GetStringValue(cJSON_GetObjectItem(ev, "message"));
                const char *comp = cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(ev, "source"), "component"));
                cr_assert(type && (strcmp(type, "Normal") == 0 || strcmp(type, "Warning") == 0), "type: %s", text);
                cr_assert(reason && *reason && strlen(reason) <= 128 && strspn(reason, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                          "abcdefghijklmnopqrstuvwxyz0123456789") == strlen(reason), "reason: %s", text);
                cr_assert(msg && *msg && strlen(msg) <= 1024, "message: %s", text);
                cr_assert(comp && strcmp(comp, "spotd") == 0, "source.component: %s", text);
        }
        cJSON_Delete(list);
        free(text);
}

static bool unschedulable(cJSON *node) {
        return cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(node, "spec"), "unschedulable"));
}

Test(handle, evicts_exactly_the_taskmanagers) {
        struct proc p;
        populate();
        cr_assert_eq(proc_spawn(&p, AGENT("--eviction-margin=10s"), NULL), 0);
        cr_assert(proc_wait_for(&p, "Watching instance", 5000), "%s", p.out);
        imds_sim_set_spot(imds, "terminate", time(NULL) + 120, 0);
        cr_assert(proc_wait_for(&p, "handled: 6 TaskManager pods gone, 0 not evicted", 20000), "%s\n%s", p.out,
                  k8s_sim_log(kube));

        for (size_t i = 0; i < ELEMENTSOF(tms); i++) {
                cr_assert_eq(k8s_sim_evictions(kube, tms[i][0], tms[i][1]), 1, "%s", tms[i][1]);
                cr_assert_eq(k8s_sim_pod_state(kube, tms[i][0], tms[i][1]), 2, "%s gone", tms[i][1]);
        }
        for (size_t i = 0; i < ELEMENTSOF(others); i++) {
                cr_assert_eq(k8s_sim_eviction_attempts(kube, others[i][0], others[i][1]), 0, "%s touched", others[i][1]);
                cr_assert_eq(k8s_sim_deletes(kube, others[i][0], others[i][1]), 0);
                cr_assert_eq(k8s_sim_pod_state(kube, others[i][0], others[i][1]), 0);
        }
        cr_assert_eq(k8s_sim_cluster_wide_pod_lists(kube), 0, "never a cluster-wide pod list");
        cr_assert_eq(k8s_sim_requests(kube, "GET", "/api/v1/pods"), 1, "one pod list per event");

        cJSON *n = node_json("node-a");
        cr_assert(unschedulable(n));
        cr_assert(has_spotd_taint(n, "spot-interruption"));
        cr_assert_str_eq(annotation(n, "spotd.io/event-id"), "spot-i-0123456789abcdef0-terminate");
        cr_assert_str_eq(annotation(n, "spotd.io/phase"), "done");
        cr_assert_str_eq(annotation(n, "spotd.io/cordoned"), "true");
        cJSON_Delete(n);
        n = node_json("node-b");
        cr_assert_not(unschedulable(n), "other nodes untouched");
        cJSON_Delete(n);

        cr_assert_geq(k8s_sim_events(kube, "SpotdFenced"), 1);
        cr_assert(eventually(k8s_sim_events(kube, "SpotdEvicted") == 6, 2000));
        cr_assert(eventually(k8s_sim_events(kube, "SpotdDone") == 1, 2000));
        assert_events_well_formed();
        cr_assert_eq(proc_count(&p, "\"message_id\":\"e843f7d32eb742f2ad85405532a2100d\""), 6, "a journal entry per pod");
        cr_assert(strstr(p.out, "\"pod\":\"clicks-taskmanager-2\",\"namespace\":\"analytics\",\"flink_cluster\":\"clicks\""), "%s", p.out);
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

Test(handle, pdb_blocking_for_a_while_is_waited_out) {
        struct proc p;
        k8s_sim_add_node(kube, "node-a", NULL);
        k8s_sim_add_pod(kube, "flink", "orders-taskmanager-1-1", "node-a", TM_NATIVE("orders"), 30, "Deployment");
        k8s_sim_add_pod(kube, "flink", "orders-taskmanager-1-2", "node-a", TM_NATIVE("orders"), 30, "Deployment");
        k8s_sim_add_pdb(kube, "flink", "orders-tm", "app=orders", (uint32_t) test_ms(1500));
        cr_assert_eq(proc_spawn(&p, AGENT("--eviction-margin=10s"), NULL), 0);
        cr_assert(proc_wait_for(&p, "Watching instance", 5000));
        imds_sim_set_spot(imds, "terminate", time(NULL) + 120, 0);
        cr_assert(proc_wait_for(&p, "handled: 2 TaskManager pods gone, 0 not evicted", 20000), "%s", p.out);
        cr_assert_gt(k8s_sim_eviction_attempts(kube, "flink", "orders-taskmanager-1-1"), 1, "retried after 429");
        cr_assert_eq(k8s_sim_evictions(kube, "flink", "orders-taskmanager-1-1"), 1);
        cr_assert_eq(proc_count(&p, "blocked by a PodDisruptionBudget"), 2, "logged once per pod: %s", p.out);
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

/* The time of spotd's first JSON log line that holds needle ("ts", whole
 * seconds), or -1. */
static time_t logged_at(const struct proc *p, const char *needle) {
        const char *m = p->out ? strstr(p->out, needle) : NULL, *line = m;
        time_t t;
        while (line && line > p->out && line[-1] != '\n')
                line--;
        if (!line || strncmp(line, "{\"ts\":\"", 7) != 0)
                return -1;
        char ts[40];
        snprintf(ts, sizeof ts, "%.*s", (int) strcspn(line + 7, "\""), line + 7);
        return parse_rfc3339(ts, &t) < 0 ? -1 : t;
}

static void pdb_forever(bool force) {
        struct proc p;
        k8s_sim_add_node(kube, "node-a", NULL);
        k8s_sim_add_pod(kube, "flink", "orders-taskmanager-1-1", "node-a", TM_NATIVE("orders"), 30, "Deployment");
        k8s_sim_add_pdb(kube, "flink", "orders-tm", "app=orders", 0);
        /* Deadline in 20 s, margin 17 s: the margin comes 3 s after the notice
         * (longer under SPOTD_TEST_TIME_SCALE: the last retry before the margin
         * may come up to a backoff step early, and valgrind slows the retries). */
        cr_assert_eq(proc_spawn(&p, AGENT("--eviction-margin=17s", force ? "--force-delete" : "--no-force-delete"), NULL), 0);
        cr_assert(proc_wait_for(&p, "Watching instance", 5000));
        time_t deadline = time(NULL) + 17 + test_ms(3000) / 1000;
        imds_sim_set_spot(imds, "terminate", deadline, 0);
        cr_assert(proc_wait_for(&p, "not accepted by the margin", 20000), "%s", p.out);
        /* Given up at the margin: retried until then, not before it, and
         * not as late as the deadline (the log line's own time). */
        time_t gave_up = logged_at(&p, "not accepted by the margin");
        cr_assert(gave_up >= deadline - 17 && gave_up < deadline, "gave up at %lld, margin at %lld, deadline %lld: %s",
                  (long long) gave_up, (long long) deadline - 17, (long long) deadline, p.out);
        cr_assert_gt(k8s_sim_eviction_attempts(kube, "flink", "orders-taskmanager-1-1"), 1, "retried after 429");
        if (force) {
                cr_assert(proc_wait_for(&p, "handled: 1 TaskManager pods gone", 10000), "%s", p.out);
                cr_assert_eq(k8s_sim_deletes(kube, "flink", "orders-taskmanager-1-1"), 1);
                cr_assert(strstr(p.out, "deleting it (--force-delete)"));
        } else {
                cr_assert(proc_wait_for(&p, "handled: 0 TaskManager pods gone, 1 not evicted", 5000), "%s", p.out);
                cr_assert(strstr(p.out, "leaving it (set --force-delete to delete it)"), "%s", p.out);
                cr_assert_eq(k8s_sim_deletes(kube, "flink", "orders-taskmanager-1-1"), 0);
                cr_assert_eq(k8s_sim_pod_state(kube, "flink", "orders-taskmanager-1-1"), 0);
                cr_assert(eventually(k8s_sim_events(kube, "SpotdEvictionBlocked") == 1, 2000));
                assert_events_well_formed();
        }
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

Test(handle, pdb_forever_ends_at_the_margin) { pdb_forever(false); }
Test(handle, pdb_forever_force_delete) { pdb_forever(true); }

Test(handle, restart_mid_drain_never_evicts_twice) {
        struct proc p;
        k8s_sim_add_node(kube, "node-a", NULL);
        /* Grace 400 s at 20 ms a second: 8 s of terminating (32 s under
         * valgrind's time scale), for the restarted agent to find them
         * still terminating however slowly it starts. */
        for (int i = 1; i <= 4; i++) {
                char n[64];
                snprintf(n, sizeof n, "orders-taskmanager-1-%d", i);
                k8s_sim_add_pod(kube, "flink", n, "node-a", TM_NATIVE("orders"), (unsigned) test_ms(400), "Deployment");
        }
        imds_sim_set_spot(imds, "terminate", time(NULL) + 3600, 0);
        cr_assert_eq(proc_spawn(&p, AGENT("--eviction-margin=10s"), NULL), 0);
        cr_assert(proc_wait_for_n(&p, "Evicted pod", 4, 10000), "%s", p.out);
        kill(p.pid, SIGKILL); /* as an OOM kill would */
        proc_stop(&p, 0, 2000);
        proc_free(&p);
        cr_assert_eq(k8s_sim_pod_state(kube, "flink", "orders-taskmanager-1-1"), 1, "still terminating");

        cr_assert_eq(proc_spawn(&p, AGENT("--eviction-margin=10s"), NULL), 0);
        cr_assert(proc_wait_for(&p, "handled: 4 TaskManager pods gone", 20000), "%s", p.out);
        cr_assert(strstr(p.out, "4 already terminating"), "%s", p.out);
        for (int i = 1; i <= 4; i++) {
                char n[64];
                snprintf(n, sizeof n, "orders-taskmanager-1-%d", i);
                cr_assert_eq(k8s_sim_eviction_attempts(kube, "flink", n), 1, "%s evicted once", n);
        }
        cr_assert_eq(k8s_sim_requests(kube, "PATCH", "/api/v1/nodes/node-a") , 3,
                     "fence once, evicting once, done once: %s", k8s_sim_log(kube));
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

Test(handle, conflicts_and_500_bursts_survived) {
        struct proc p;
        k8s_sim_add_node(kube, "node-a", NULL);
        k8s_sim_add_pod(kube, "flink", "orders-taskmanager-1-1", "node-a", TM_NATIVE("orders"), 30, "Deployment");
        k8s_sim_conflict(kube, "node-a", 3);
        k8s_sim_fault(kube, "/api/v1/pods", 500, 0, 3);
        cr_assert_eq(proc_spawn(&p, AGENT("--eviction-margin=10s"), NULL), 0);
        cr_assert(proc_wait_for(&p, "Watching instance", 5000));
        imds_sim_set_spot(imds, "terminate", time(NULL) + 120, 0);
        cr_assert(proc_wait_for(&p, "handled: 1 TaskManager pods gone, 0 not evicted", 20000), "%s", p.out);
        cJSON *n = node_json("node-a");
        cr_assert(unschedulable(n) && has_spotd_taint(n, "spot-interruption"));
        cJSON_Delete(n);
        cr_assert_eq(proc_count(&p, "Cannot list the pods"), 1, "one error for the burst: %s", p.out);
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

Test(handle, rotated_token_is_picked_up) {
        struct proc p;
        k8s_sim_add_node(kube, "node-a", NULL);
        k8s_sim_add_pod(kube, "flink", "orders-taskmanager-1-1", "node-a", TM_NATIVE("orders"), 30, "Deployment");
        cr_assert_eq(proc_spawn(&p, AGENT("--eviction-margin=10s"), NULL), 0);
        cr_assert(proc_wait_for(&p, "Watching instance", 5000));
        /* The start-up read of the node used the old token. */
        cr_assert(eventually(k8s_sim_requests(kube, "GET", "/api/v1/nodes/node-a") >= 1, 5000), "%s", p.out);
        k8s_sim_rotate_token(kube, "sim-token-rotated");
        imds_sim_set_spot(imds, "terminate", time(NULL) + 120, 0);
        cr_assert(proc_wait_for(&p, "handled: 1 TaskManager pods gone, 0 not evicted", 20000), "%s", p.out);
        cr_assert_geq(k8s_sim_unauthorized(kube), 1);
        cr_assert_null(strstr(p.out, "sim-token"), "no token in the logs");
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

Test(handle, untrusted_certificate_refused) {
        struct proc p;
        char other[1100];
        k8s_sim_add_node(kube, "node-a", NULL);
        /* The IMDS simulator's port is no TLS server; any CA but the
         * simulator's will do: the system bundle cannot know it. */
        snprintf(other, sizeof other, "--kube-ca-file=/etc/ssl/certs/ca-certificates.crt");
        cr_assert_eq(proc_spawn(&p, (char *[]) { "spotd", "run", sa.imds, sa.api, other, sa.token, "--node-name=node-a",
                                                 "--poll-interval=50ms", "--log-target=stderr", "--health-addr=off", NULL },
                                NULL), 0);
        cr_assert(proc_wait_for(&p, "Cannot read node node-a", 5000), "%s", p.out);
        cr_assert(strstr(p.out, "TLS verification failed"), "%s", p.out);
        cr_assert_eq(k8s_sim_requests(kube, NULL, NULL), 0, "no request got through");
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

Test(handle, canceled_maintenance_undoes_only_its_fence) {
        struct proc p;
        k8s_sim_add_node(kube, "node-a", NULL);
        k8s_sim_add_pod(kube, "flink", "orders-taskmanager-1-1", "node-a", TM_NATIVE("orders"), 30, "Deployment");
        imds_sim_add_scheduled(imds, "system-maintenance", "active", "instance-event-0aaa", time(NULL) + 3600, 0);
        cr_assert_eq(proc_spawn(&p, AGENT("--eviction-margin=10s"), NULL), 0);
        cr_assert(proc_wait_for(&p, "cordoned and tainted", 10000), "%s", p.out);
        cJSON *n = node_json("node-a");
        cr_assert(unschedulable(n) && has_spotd_taint(n, "scheduled-maintenance"));
        cJSON_Delete(n);
        cr_assert_eq(k8s_sim_eviction_attempts(kube, "flink", "orders-taskmanager-1-1"), 0, "system-maintenance: cordon only");

        imds_sim_clear_scheduled(imds);
        imds_sim_add_scheduled(imds, "system-maintenance", "canceled", "instance-event-0aaa", time(NULL) + 3600, 0);
        cr_assert(proc_wait_for(&p, "Removed spotd's fence", 10000), "%s", p.out);
        n = node_json("node-a");
        cr_assert_not(unschedulable(n));
        cr_assert_not(has_spotd_taint(n, NULL));
        cr_assert_null(annotation(n, "spotd.io/event-id"));
        cJSON_Delete(n);
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

Test(handle, undo_keeps_an_operator_cordon) {
        struct proc p;
        k8s_sim_add_node(kube, "node-a", NULL);
        k8s_sim_set_unschedulable(kube, "node-a", true);
        imds_sim_add_scheduled(imds, "system-maintenance", "active", "instance-event-0bbb", time(NULL) + 3600, 0);
        cr_assert_eq(proc_spawn(&p, AGENT("--eviction-margin=10s"), NULL), 0);
        cr_assert(proc_wait_for(&p, "cordoned and tainted", 10000), "%s", p.out);
        cJSON *n = node_json("node-a");
        cr_assert_str_eq(annotation(n, "spotd.io/cordoned"), "false");
        cJSON_Delete(n);
        imds_sim_clear_scheduled(imds);
        imds_sim_add_scheduled(imds, "system-maintenance", "canceled", "instance-event-0bbb", time(NULL) + 3600, 0);
        cr_assert(proc_wait_for(&p, "Removed spotd's fence", 10000), "%s", p.out);
        n = node_json("node-a");
        cr_assert(unschedulable(n), "the operator's cordon stays");
        cr_assert_not(has_spotd_taint(n, NULL));
        cJSON_Delete(n);
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

Test(handle, dry_run_sends_no_writes) {
        struct proc p;
        populate();
        cr_assert_eq(proc_spawn(&p, AGENT("--eviction-margin=10s", "--dry-run"), NULL), 0);
        cr_assert(proc_wait_for(&p, "Watching instance", 5000));
        imds_sim_set_spot(imds, "terminate", time(NULL) + 120, 0);
        cr_assert(proc_wait_for(&p, "handled: 6 TaskManager pods gone", 10000), "%s", p.out);
        cr_assert_eq(k8s_sim_requests(kube, "PATCH", NULL), 0);
        cr_assert_eq(k8s_sim_requests(kube, "POST", NULL), 0);
        cr_assert_eq(k8s_sim_requests(kube, "DELETE", NULL), 0);
        cr_assert_geq(k8s_sim_requests(kube, "GET", "/api/v1/pods"), 1);
        cr_assert(strstr(p.out, "dry run: would send PATCH /api/v1/nodes/node-a {"), "%s", p.out);
        cr_assert_eq(proc_count(&p, "dry run: would send POST /api/v1/namespaces/"), 6 + 6 + 0 + 0 +
                     proc_count(&p, "would send POST /api/v1/namespaces/default/events"), "%s", p.out);
        cJSON *n = node_json("node-a");
        cr_assert_not(unschedulable(n));
        cJSON_Delete(n);
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}
