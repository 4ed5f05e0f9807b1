/* The life of an event in the handler, with the real spotd binary against
 * the IMDS and Kubernetes API simulators: what a cancel, a newer event or a
 * moved deadline does to each state, and that no best-effort request gates
 * a step. The outcome is read from the simulators (evictions, deletes, the
 * node's fence, Events), not from spotd's log. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>

#include "helpers.h"
#include "flink_sim.h"
#include "restarts.h"
#include "simargs.h"

static struct imds_sim *imds;
static struct k8s_sim *kube;
static struct sim_args a;

#define TM(app) "component=taskmanager,type=flink-native-kubernetes,app=" app

static void start(void) {
        cr_assert_eq(imds_sim_start(NULL, &imds), 0);
        cr_assert_eq(k8s_sim_start(&(struct k8s_sim_options) { .grace_ms_per_s = 20 }, &kube), 0);
        sim_args_fill(&a, imds, kube);
        k8s_sim_add_node(kube, "node-a", NULL);
        for (int i = 1; i <= 2; i++) {
                char n[64];
                snprintf(n, sizeof n, "orders-taskmanager-1-%d", i);
                k8s_sim_add_pod(kube, "flink", n, "node-a", TM("orders"), 30, "Deployment");
        }
}
static void stop(void) {
        imds = imds_sim_stop(imds);
        kube = k8s_sim_stop(kube);
}

TestSuite(lifecycle, .init = start, .fini = stop, .timeout = 120);

#define AGENT(...) (char *[]) { "spotd", "run", a.imds, a.api, a.ca, a.token, "--node-name=node-a", \
                                "--poll-interval=50ms", "--log-target=stderr", "--log-format=json",  \
                                "--health-addr=off", __VA_ARGS__, NULL }

static cJSON *node(void) {
        char *s = k8s_sim_node_json(kube, "node-a");
        cJSON *j = cJSON_Parse(s);
        free(s);
        cr_assert_not_null(j);
        return j;
}

static const char *annotation(cJSON *n, const char *key) {
        return cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(n, "metadata"), "annotations"), key));
}

static const char *spotd_taint(cJSON *n) {
        cJSON *t;
        cJSON_ArrayForEach(t, cJSON_GetObjectItem(cJSON_GetObjectItem(n, "spec"), "taints"))
                if (streq_ptr(cJSON_GetStringValue(cJSON_GetObjectItem(t, "key")), "spotd.io/interruption"))
                        return cJSON_GetStringValue(cJSON_GetObjectItem(t, "value"));
        return NULL;
}

static bool unschedulable(cJSON *n) {
        return cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(n, "spec"), "unschedulable"));
}

static unsigned tm_eviction_attempts(void) {
        return k8s_sim_eviction_attempts(kube, "flink", "orders-taskmanager-1-1") +
               k8s_sim_eviction_attempts(kube, "flink", "orders-taskmanager-1-2");
}

static bool node_clean(void) {
        cJSON *n = node();
        bool clean = !unschedulable(n) && !spotd_taint(n) && !annotation(n, "spotd.io/event-id");
        cJSON_Delete(n);
        return clean;
}

/* Item 1: canceled while the fence is retried (the API answers 503): no
 * fence, no pod list, no eviction; the node ends as it was. */
Test(lifecycle, canceled_while_fencing_is_never_drained) {
        struct proc p;
        k8s_sim_fault(kube, "/api/v1/nodes/node-a", 503, 0, 1000);
        cr_assert_eq(proc_spawn(&p, AGENT("--eviction-margin=10s"), NULL), 0);
        cr_assert(proc_wait_for(&p, "Watching instance", 5000), "%s", p.out);
        imds_sim_add_scheduled(imds, "instance-reboot", "active", "instance-event-0c01", time(NULL) + 3600, 0);
        cr_assert(proc_wait_for(&p, "Cannot fence node node-a", 10000), "%s", p.out);
        imds_sim_clear_scheduled(imds);
        imds_sim_add_scheduled(imds, "instance-reboot", "canceled", "instance-event-0c01", time(NULL) + 3600, 0);
        cr_assert(proc_wait_for(&p, "was canceled", 10000), "%s", p.out);
        k8s_sim_fault(kube, "/api/v1/nodes/node-a", 503, 0, 0);
        /* The undo reads the node and finds nothing of the event's. */
        cr_assert(proc_wait_for(&p, "carries no fence of it", 15000), "%s\n%s", p.out, k8s_sim_log(kube));
        cr_assert_eq(tm_eviction_attempts(), 0, "%s", k8s_sim_log(kube));
        cr_assert_eq(k8s_sim_requests(kube, "GET", "/api/v1/pods"), 0, "never listed");
        cr_assert(node_clean());
        cr_assert_eq(k8s_sim_requests(kube, "PATCH", NULL), 0, "%s", k8s_sim_log(kube));
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

/* Item 1: an event canceled before its turn is never handled; the cordon it
 * had replaced comes back. Here a rebalance cordon (fence failing with 503s)
 * is replaced by a reboot notice, which is canceled. */
Test(lifecycle, canceled_before_its_turn_is_never_handled) {
        struct proc p;
        k8s_sim_fault(kube, "/api/v1/nodes/node-a", 503, 0, 1000);
        cr_assert_eq(proc_spawn(&p, AGENT("--eviction-margin=10s"), NULL), 0);
        cr_assert(proc_wait_for(&p, "Watching instance", 5000), "%s", p.out);
        imds_sim_set_rebalance(imds, time(NULL), 0);
        cr_assert(proc_wait_for(&p, "Cannot fence node node-a", 10000), "%s", p.out);
        imds_sim_add_scheduled(imds, "instance-stop", "active", "instance-event-0c02", time(NULL) + 3600, 0);
        cr_assert(proc_wait_for(&p, "instance-event-0c02", 10000), "%s", p.out);
        imds_sim_clear_scheduled(imds);
        imds_sim_add_scheduled(imds, "instance-stop", "canceled", "instance-event-0c02", time(NULL) + 3600, 0);
        cr_assert(proc_wait_for(&p, "was canceled", 10000), "%s", p.out);
        k8s_sim_fault(kube, "/api/v1/nodes/node-a", 503, 0, 0);
        /* The rebalance recommendation is still served: its cordon returns. */
        cr_assert(eventually(({
                cJSON *n = node();
                bool ok = unschedulable(n) && streq_ptr(spotd_taint(n), "rebalance-recommendation");
                cJSON_Delete(n);
                ok;
        }), 15000), "%s\n%s", p.out, k8s_sim_log(kube));
        /* Polls go on; the canceled stop is never handled. */
        uint64_t polls = imds_sim_requests(imds, "/latest/meta-data/events/maintenance/scheduled");
        cr_assert(eventually(imds_sim_requests(imds, "/latest/meta-data/events/maintenance/scheduled") >= polls + 20, 10000));
        cr_assert_eq(tm_eviction_attempts(), 0, "%s", k8s_sim_log(kube));
        cr_assert_eq(k8s_sim_requests(kube, "GET", "/api/v1/pods"), 0);
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

/* Item 2: after a restart with a rebalance fence on the node, a spot drain
 * blocked by a PDB is not ended by an unrelated canceled maintenance entry:
 * the pod is force deleted at the margin and the event completes. */
Test(lifecycle, unrelated_cancel_never_ends_a_drain) {
        struct proc p;
        imds_sim_set_rebalance(imds, time(NULL), 0);
        cr_assert_eq(proc_spawn(&p, AGENT("--eviction-margin=17s", "--force-delete"), NULL), 0);
        cr_assert(proc_wait_for(&p, "cordoned and tainted", 10000), "%s", p.out);
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);

        k8s_sim_add_pdb(kube, "flink", "orders-tm", "app=orders", 0);
        cr_assert_eq(proc_spawn(&p, AGENT("--eviction-margin=17s", "--force-delete"), NULL), 0);
        cr_assert(proc_wait_for(&p, "from an earlier run", 10000), "%s", p.out);
        imds_sim_set_spot(imds, "terminate", time(NULL) + 17 + test_ms(6000) / 1000, 0);
        cr_assert(proc_wait_for(&p, "blocked by a PodDisruptionBudget", 10000), "%s", p.out);
        imds_sim_add_scheduled(imds, "system-reboot", "canceled", "instance-event-0c03", time(NULL) + 3600, 0);
        cr_assert(proc_wait_for(&p, "instance-event-0c03", 10000), "%s", p.out);
        cr_assert(eventually(k8s_sim_deletes(kube, "flink", "orders-taskmanager-1-1") == 1, 20000), "%s", p.out);
        cr_assert(eventually(k8s_sim_events(kube, "SpotdDone") == 1, 20000), "%s", p.out);
        cJSON *n = node();
        cr_assert_str_eq(annotation(n, "spotd.io/phase"), "done");
        cr_assert(unschedulable(n) && streq_ptr(spotd_taint(n), "spot-interruption"));
        cJSON_Delete(n);
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

/* Item 3: a maintenance drain retried toward a NotBefore days away meets a
 * spot notice: the notice is announced and its margin binds the drain (force
 * delete at the spot margin); then it gets its own turn. */
Test(lifecycle, equal_event_brings_its_earlier_deadline) {
        struct proc p;
        k8s_sim_add_pdb(kube, "flink", "orders-tm", "app=orders", 0);
        cr_assert_eq(proc_spawn(&p, AGENT("--eviction-margin=17s", "--force-delete"), NULL), 0);
        cr_assert(proc_wait_for(&p, "Watching instance", 5000), "%s", p.out);
        imds_sim_add_scheduled(imds, "instance-retirement", "active", "instance-event-0c04", time(NULL) + 3 * 86400, 0);
        cr_assert(proc_wait_for(&p, "blocked by a PodDisruptionBudget", 10000), "%s", p.out);
        cr_assert(eventually(k8s_sim_events(kube, "SpotdNotice") == 1, 5000));
        imds_sim_set_spot(imds, "terminate", time(NULL) + 17 + test_ms(4000) / 1000, 0);
        cr_assert(eventually(k8s_sim_events(kube, "SpotdNotice") == 2, 10000), "the spot notice is announced: %s", p.out);
        cr_assert(eventually(k8s_sim_deletes(kube, "flink", "orders-taskmanager-1-1") == 1, 20000), "%s", p.out);
        cr_assert(eventually(k8s_sim_deletes(kube, "flink", "orders-taskmanager-1-2") == 1, 5000), "%s", p.out);
        /* Then the spot notice's own turn: its fence, its summary. */
        cr_assert(eventually(k8s_sim_events(kube, "SpotdDone") == 2, 20000), "%s", p.out);
        cJSON *n = node();
        cr_assert(streq_ptr(spotd_taint(n), "spot-interruption"), "%s", p.out);
        cr_assert_str_eq(annotation(n, "spotd.io/phase"), "done");
        cJSON_Delete(n);
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

/* Item 3: the same notice whose deadline moves earlier moves the margin. */
Test(lifecycle, moved_deadline_moves_the_margin) {
        struct proc p;
        k8s_sim_add_pdb(kube, "flink", "orders-tm", "app=orders", 0);
        cr_assert_eq(proc_spawn(&p, AGENT("--eviction-margin=17s", "--force-delete"), NULL), 0);
        cr_assert(proc_wait_for(&p, "Watching instance", 5000), "%s", p.out);
        imds_sim_set_spot(imds, "terminate", time(NULL) + 3600, 0);
        cr_assert(proc_wait_for(&p, "blocked by a PodDisruptionBudget", 10000), "%s", p.out);
        imds_sim_set_spot(imds, "terminate", time(NULL) + 17 + test_ms(4000) / 1000, 0);
        cr_assert(eventually(k8s_sim_deletes(kube, "flink", "orders-taskmanager-1-1") == 1, 20000), "%s", p.out);
        cr_assert(eventually(k8s_sim_events(kube, "SpotdDone") == 1, 20000), "%s", p.out);
        cr_assert_eq(k8s_sim_events(kube, "SpotdNotice"), 1, "one notice, announced once");
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

/* Item 5: the fence never waits on a best-effort Event POST: with every
 * Event answer held for 30 s, the node is fenced and the pods evicted while
 * the first SpotdNotice is still unanswered. */
Test(lifecycle, fence_never_waits_for_an_event) {
        struct proc p;
        k8s_sim_fault(kube, "/api/v1/namespaces/default/events", K8S_SIM_SLOW, 30000, 100);
        k8s_sim_fault(kube, "/api/v1/namespaces/flink/events", K8S_SIM_SLOW, 30000, 100);
        cr_assert_eq(proc_spawn(&p, AGENT("--eviction-margin=10s", "--kube-timeout=40s"), NULL), 0);
        cr_assert(proc_wait_for(&p, "Watching instance", 5000), "%s", p.out);
        imds_sim_set_spot(imds, "terminate", time(NULL) + 120, 0);
        cr_assert(eventually(tm_eviction_attempts() == 2, 15000), "%s\n%s", p.out, k8s_sim_log(kube));
        cJSON *n = node();
        cr_assert(unschedulable(n) && streq_ptr(spotd_taint(n), "spot-interruption"));
        cJSON_Delete(n);
        cr_assert_eq(k8s_sim_events(kube, NULL), 0, "the Events are still held back");
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

static void on_terminate(void *ud, const char *ns, const char *name, const char *ip) {
        flink_sim_pod_terminating(ud, name, ip);
}

/* A cancel after the bounds were lowered gives them back: the job's upper
 * bound returns to its original, the record of it leaves the node, and so
 * does the fence. The instance stays, so the job may grow back at once. */
Test(lifecycle, cancel_after_lowering_restores_the_bounds) {
        struct proc p;
        struct flink_sim *fl;
        char url[64];
        cr_assert_eq(flink_sim_start(&(struct flink_sim_options) { .version = "1.18.1", .checkpoint_ms = 50, .restart_ms = 50 },
                                     &fl), 0);
        k8s_sim_set_terminate_hook(kube, on_terminate, fl);
        flink_sim_url(fl, url, sizeof url);
        k8s_sim_add_node(kube, "node-b", NULL);
        k8s_sim_add_pod(kube, "flink", "orders-taskmanager-1-3", "node-b", TM("orders"), 30, "Deployment");
        k8s_sim_add_pod(kube, "flink", "orders-taskmanager-1-4", "node-b", TM("orders"), 30, "Deployment");
        for (int i = 1; i <= 4; i++) {
                char name[64], ip[48];
                snprintf(name, sizeof name, "orders-taskmanager-1-%d", i);
                k8s_sim_set_pod_annotation(kube, "flink", name, "spotd.io/flink-rest-url", url);
                k8s_sim_pod_ip(kube, "flink", name, ip, sizeof ip);
                flink_sim_add_taskmanager(fl, name, ip, 2);
        }
        /* A PDB holds the evictions back, so the event is still running when canceled. */
        k8s_sim_add_pdb(kube, "flink", "orders-tm", "app=orders", 0);
        flink_sim_add_job(fl, "a1b2c3d4e5f60718293a4b5c6d7e8f90", "orders");
        flink_sim_add_vertex(fl, "a1b2c3d4e5f60718293a4b5c6d7e8f90", "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a", "all", 8, 128, NULL);
        cr_assert_eq(proc_spawn(&p, AGENT("--eviction-margin=10s", "--checkpoint-fresh=0s", "--flink-url-allow=127.0.0.1"), NULL), 0);
        cr_assert(proc_wait_for(&p, "Watching instance", 5000), "%s", p.out);
        imds_sim_add_scheduled(imds, "instance-reboot", "active", "instance-event-0c05", time(NULL) + 3600, 0);
        unsigned lo = 0, up = 0;
        /* 1.18: the PUT follows the first eviction attempt's gate within 5 s even when a PDB blocks. */
        cr_assert(eventually((flink_sim_bounds(fl, "a1b2c3d4e5f60718293a4b5c6d7e8f90", "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a", &lo, &up), up == 4),
                             20000), "not lowered: %s", p.out);
        /* Running at the lowered parallelism before the cancel, so that the
         * restore is a restart of its own. */
        cr_assert(eventually(flink_sim_vertex_parallelism(fl, "a1b2c3d4e5f60718293a4b5c6d7e8f90", "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a") == 4 &&
                                     strcmp(flink_sim_job_state(fl, "a1b2c3d4e5f60718293a4b5c6d7e8f90"), "RUNNING") == 0,
                             10000), "not rescaled to 4");
        imds_sim_clear_scheduled(imds);
        imds_sim_add_scheduled(imds, "instance-reboot", "canceled", "instance-event-0c05", time(NULL) + 3600, 0);
        cr_assert(eventually(node_clean(), 20000), "%s", p.out);
        cr_assert(eventually((flink_sim_bounds(fl, "a1b2c3d4e5f60718293a4b5c6d7e8f90", "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a", &lo, &up), up == 8),
                             20000), "not restored (upper %u): %s", up, p.out);
        cr_assert(eventually(({
                char *n = k8s_sim_node_json(kube, "node-a");
                bool none = !strstr(n, "flink.spotd.io/");
                free(n);
                none;
        }), 10000), "the record of the originals stays on the node");
        cr_assert_eq(k8s_sim_evictions(kube, "flink", "orders-taskmanager-1-1") + k8s_sim_evictions(kube, "flink", "orders-taskmanager-1-2"),
                     0, "blocked by the PDB, never accepted");
        /* No TaskManager left: the job was lowered in place and grew back in
         * place, two rescales and no failover. */
        assert_job_restarts(fl, "a1b2c3d4e5f60718293a4b5c6d7e8f90", 0, 2);
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
        k8s_sim_set_terminate_hook(kube, NULL, NULL);
        flink_sim_stop(fl);
}
