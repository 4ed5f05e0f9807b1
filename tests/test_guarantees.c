/* What spotd must never do, read from the simulators as a user would see
 * it, not from spotd's log: a pod that is not a TaskManager of this node
 * (another node's, a DaemonSet's, a finished one) or that was replaced
 * since the list is never evicted; a PodDisruptionBudget is not hammered;
 * an operator's Flink bound, cordon and taints are never overwritten; a
 * failed restore keeps the originals; a dry run writes nothing; no piece of
 * a secret reaches any output; an answer of unannounced length stops at the
 * cap. Each kills mutants of tests/mutants/ (README: Mutants). */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>

#include "flink_sim.h"
#include "restarts.h"
#include "helpers.h"
#include "imds.h"
#include "simargs.h"

#define TM(app) "component=taskmanager,type=flink-native-kubernetes,app=" app
#define JOB1 "a1b2c3d4e5f60718293a4b5c6d7e8f90"
#define VA "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a"

/* Secrets with no 8-character piece in common with anything spotd says. */
#define KUBE_TOKEN "tQ7vXk2mZp9Rw4LyB8nC3hDfJ6sG"
#define KUBE_TOKEN_ROTATED "Hn4Rb8WqTz3Kc6Vm2Xp9Ls5Jd7Fy"
#define HOOK_USER "uV3kQ9wZe5"
#define HOOK_PASS "pE6nR2tY8mK4"
#define HOOK_QUERY "qJ5bW7cX3vN9"
#define HOOK_HEADER "hT4gL8sD2fA6zM"

static struct imds_sim *imds;
static struct k8s_sim *kube;
static struct flink_sim *fl;
static struct sim_args sa;

/* ---- a webhook receiver: counts the POSTs, keeps their bodies ---- */

struct hook {
        struct MHD_Daemon *d;
        pthread_mutex_t lock;
        unsigned posts;
        char *bodies; /* one a line */
        size_t len;
};

struct upload {
        FILE *f;
        char *buf;
        size_t len;
};

static enum MHD_Result hook_answer(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                   const char *version, const char *data, size_t *size, void **state) {
        struct hook *h = cls;
        struct upload *u = *state;
        if (!u) {
                u = calloc(1, sizeof *u);
                if (!u || !(u->f = open_memstream(&u->buf, &u->len))) {
                        free(u);
                        return MHD_NO;
                }
                *state = u;
                return MHD_YES;
        }
        if (*size) {
                fwrite(data, 1, *size, u->f);
                *size = 0;
                return MHD_YES;
        }
        fflush(u->f);
        pthread_mutex_lock(&h->lock);
        h->posts += strcmp(method, "POST") == 0;
        h->bodies = realloc(h->bodies, h->len + u->len + 2);
        memcpy(h->bodies + h->len, u->buf, u->len);
        h->len += u->len;
        memcpy(h->bodies + h->len++, "\n", 2);
        pthread_mutex_unlock(&h->lock);
        struct MHD_Response *r = MHD_create_response_from_buffer(2, "{}", MHD_RESPMEM_PERSISTENT);
        enum MHD_Result ret = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        return ret;
}

static void upload_done(void *cls, struct MHD_Connection *c, void **state, enum MHD_RequestTerminationCode t) {
        struct upload *u = *state;
        if (u) {
                fclose(u->f);
                free(u->buf);
                free(u);
        }
        *state = NULL;
}

static struct hook hook = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* --webhook-url with credentials in the userinfo and the query. */
static void hook_start(char *arg, size_t len) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        hook.d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, hook_answer, &hook, MHD_OPTION_SOCK_ADDR, &a,
                                  MHD_OPTION_NOTIFY_COMPLETED, upload_done, NULL, MHD_OPTION_END);
        cr_assert_not_null(hook.d);
        snprintf(arg, len, "--webhook-url=http://" HOOK_USER ":" HOOK_PASS "@127.0.0.1:%u/spot?token=" HOOK_QUERY,
                 MHD_get_daemon_info(hook.d, MHD_DAEMON_INFO_BIND_PORT)->port);
}

static unsigned hook_posts(void) {
        pthread_mutex_lock(&hook.lock);
        unsigned n = hook.posts;
        pthread_mutex_unlock(&hook.lock);
        return n;
}

/* ---- the simulators ---- */

static void start(void) {
        cr_assert_eq(imds_sim_start(NULL, &imds), 0);
        cr_assert_eq(k8s_sim_start(&(struct k8s_sim_options) { .grace_ms_per_s = 20, .token = KUBE_TOKEN }, &kube), 0);
        sim_args_fill(&sa, imds, kube);
        k8s_sim_add_node(kube, "node-a", NULL);
}

static void stop(void) {
        if (hook.d)
                MHD_stop_daemon(hook.d);
        free(hook.bodies);
        hook = (struct hook) { .lock = PTHREAD_MUTEX_INITIALIZER };
        if (kube) /* the hook calls into the Flink simulator */
                k8s_sim_set_terminate_hook(kube, NULL, NULL);
        fl = flink_sim_stop(fl);
        kube = k8s_sim_stop(kube);
        imds = imds_sim_stop(imds);
}

TestSuite(guarantees, .init = start, .fini = stop, .timeout = 120);

#define AGENT(...) (char *[]) { "spotd", "run", sa.imds, sa.api, sa.ca, sa.token, "--node-name=node-a",      \
                                "--poll-interval=50ms", "--log-target=stderr", "--log-format=json",       \
                                "--health-addr=off", "--eviction-margin=10s", "--checkpoint-fresh=0s",   \
                                "--flink-url-allow=127.0.0.1", "--verify-timeout=20s", __VA_ARGS__, NULL }

static void on_terminate(void *ud, const char *ns, const char *name, const char *ip) {
        flink_sim_pod_terminating(ud, name, ip);
}

/* Flink cluster "orders" (1.18): job JOB1 at parallelism 8 over four
 * TaskManagers of 2 slots, two on node-a (reclaimed), two on node-b. */
static void flink_cluster(unsigned restart_ms) {
        char url[64];
        cr_assert_eq(flink_sim_start(&(struct flink_sim_options) { .version = "1.18.1", .checkpoint_ms = 50,
                                                                   .restart_ms = restart_ms }, &fl), 0);
        k8s_sim_set_terminate_hook(kube, on_terminate, fl);
        flink_sim_url(fl, url, sizeof url);
        k8s_sim_add_node(kube, "node-b", NULL);
        for (int i = 1; i <= 4; i++) {
                char tm[64], ip[48];
                snprintf(tm, sizeof tm, "orders-taskmanager-1-%d", i);
                k8s_sim_add_pod(kube, "flink", tm, i <= 2 ? "node-a" : "node-b", TM("orders"), 30, "Deployment");
                k8s_sim_set_pod_annotation(kube, "flink", tm, "spotd.io/flink-rest-url", url);
                k8s_sim_pod_ip(kube, "flink", tm, ip, sizeof ip);
                flink_sim_add_taskmanager(fl, tm, ip, 2);
        }
        flink_sim_add_job(fl, JOB1, "orders");
        flink_sim_add_vertex(fl, JOB1, VA, "all", 8, 128, NULL);
}

#define assert_restarts(failovers, rescales) assert_job_restarts(fl, JOB1, failovers, rescales)

static unsigned upper(void) {
        unsigned up = 0;
        flink_sim_bounds(fl, JOB1, VA, NULL, &up);
        return up;
}

/* An operator's PUT of the job's resource requirements. */
static long operator_sets_upper(unsigned up) {
        char url[160], body[160];
        long status = -1;
        flink_sim_url(fl, url, sizeof url);
        strcat(url, "/jobs/" JOB1 "/resource-requirements");
        snprintf(body, sizeof body, "{\"" VA "\":{\"parallelism\":{\"lowerBound\":1,\"upperBound\":%u}}}", up);
        CURL *c = curl_easy_init();
        struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "PUT");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, http_collect);
        char *answer = NULL;
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &answer);
        if (curl_easy_perform(c) == CURLE_OK)
                curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        free(answer);
        curl_slist_free_all(hdr);
        curl_easy_cleanup(c);
        return status;
}

/* ---- node-a as the API server holds it ---- */

/* node-a's section.key (a copy, to free), NULL if it has none. */
static cJSON *node_at(const char *section, const char *key) {
        char *s = k8s_sim_node_json(kube, "node-a");
        cJSON *n = cJSON_Parse(s);
        free(s);
        cr_assert_not_null(n);
        cJSON *v = cJSON_DetachItemFromObject(cJSON_GetObjectItem(n, section), key);
        cJSON_Delete(n);
        return v;
}

static bool phase_is(const char *phase) {
        cJSON *a = node_at("metadata", "annotations");
        bool r = streq_ptr(cJSON_GetStringValue(cJSON_GetObjectItem(a, "spotd.io/phase")), phase);
        cJSON_Delete(a);
        return r;
}

/* Whether node-a has a taint of key with value (NULL: any). */
static bool tainted(const char *key, const char *value) {
        cJSON *taints = node_at("spec", "taints"), *t;
        bool r = false;
        cJSON_ArrayForEach(t, taints)
                r |= streq_ptr(cJSON_GetStringValue(cJSON_GetObjectItem(t, "key")), key) &&
                     (!value || streq_ptr(cJSON_GetStringValue(cJSON_GetObjectItem(t, "value")), value));
        cJSON_Delete(taints);
        return r;
}

static bool cordoned(void) {
        cJSON *u = node_at("spec", "unschedulable");
        bool r = cJSON_IsTrue(u);
        cJSON_Delete(u);
        return r;
}

static void untouched(const char *ns, const char *pod) {
        cr_assert_eq(k8s_sim_eviction_attempts(kube, ns, pod), 0, "%s/%s was evicted:\n%s", ns, pod, k8s_sim_log(kube));
        cr_assert_eq(k8s_sim_deletes(kube, ns, pod), 0, "%s/%s was deleted", ns, pod);
        cr_assert_eq(k8s_sim_pod_state(kube, ns, pod), 0, "%s/%s is not running", ns, pod);
}

static void stop_agent(struct proc *p) {
        cr_assert_eq(proc_stop(p, SIGTERM, 5000), 0, "%s", p->out);
        proc_free(p);
}

/* ---- pods: only this node's TaskManagers, as listed ---- */

/* An API server that ignores the field selector (broken, or older) lists
 * another node's TaskManager; a DaemonSet pod with the TaskManager labels
 * and finished TaskManager pods match any selector. None is evicted, nor
 * the node's other pods. */
Test(guarantees, foreign_pods_never_evicted) {
        struct proc p;
        k8s_sim_ignore_field_selector(kube, true);
        k8s_sim_add_node(kube, "node-b", NULL);
        k8s_sim_add_pod(kube, "flink", "orders-taskmanager-1-1", "node-a", TM("orders"), 30, "Deployment");
        k8s_sim_add_pod(kube, "flink", "orders-taskmanager-1-9", "node-b", TM("orders"), 30, "Deployment");
        k8s_sim_add_pod(kube, "monitoring", "tm-agent-x1", "node-a", TM("tm-agent"), 30, "DaemonSet");
        k8s_sim_add_pod(kube, "flink", "orders-taskmanager-1-7", "node-a", TM("orders"), 30, "ReplicaSet");
        k8s_sim_set_pod_phase(kube, "flink", "orders-taskmanager-1-7", "Succeeded");
        k8s_sim_add_pod(kube, "flink", "orders-taskmanager-1-8", "node-a", TM("orders"), 30, "ReplicaSet");
        k8s_sim_set_pod_phase(kube, "flink", "orders-taskmanager-1-8", "Failed");
        k8s_sim_add_pod(kube, "web", "frontend-abc", "node-a", "app=frontend", 30, "ReplicaSet");
        imds_sim_set_spot(imds, "terminate", time(NULL) + 120, 0);
        cr_assert_eq(proc_spawn(&p, AGENT("--log-level=info"), NULL), 0);
        cr_assert(eventually(phase_is("done"), 20000), "%s\n%s", p.out, k8s_sim_log(kube));
        cr_assert_eq(k8s_sim_evictions(kube, "flink", "orders-taskmanager-1-1"), 1, "the node's TaskManager is evicted");
        untouched("flink", "orders-taskmanager-1-9");
        untouched("monitoring", "tm-agent-x1");
        untouched("flink", "orders-taskmanager-1-7");
        untouched("flink", "orders-taskmanager-1-8");
        untouched("web", "frontend-abc");
        stop_agent(&p);
}

/* The pod is replaced (same name, new uid) between the list and the
 * eviction: the new pod is not the one spotd decided to evict. */
Test(guarantees, replaced_pod_never_evicted) {
        struct proc p;
        k8s_sim_add_pod(kube, "flink", "orders-taskmanager-1-1", "node-a", TM("orders"), 30, "StatefulSet");
        k8s_sim_add_pod(kube, "flink", "orders-taskmanager-1-2", "node-a", TM("orders"), 30, "StatefulSet");
        k8s_sim_replace_after_list(kube, "flink", "orders-taskmanager-1-2");
        imds_sim_set_spot(imds, "terminate", time(NULL) + 120, 0);
        cr_assert_eq(proc_spawn(&p, AGENT("--log-level=info"), NULL), 0);
        cr_assert(eventually(phase_is("done"), 20000), "%s\n%s", p.out, k8s_sim_log(kube));
        cr_assert_eq(k8s_sim_evictions(kube, "flink", "orders-taskmanager-1-1"), 1);
        cr_assert_geq(k8s_sim_eviction_attempts(kube, "flink", "orders-taskmanager-1-2"), 1,
                      "spotd asked to evict the pod it had listed");
        cr_assert_eq(k8s_sim_evictions(kube, "flink", "orders-taskmanager-1-2"), 0, "the replacement was evicted:\n%s",
                     k8s_sim_log(kube));
        cr_assert_eq(k8s_sim_deletes(kube, "flink", "orders-taskmanager-1-2"), 0);
        cr_assert_eq(k8s_sim_pod_state(kube, "flink", "orders-taskmanager-1-2"), 0, "the replacement runs on");
        stop_agent(&p);
}

/* A PDB that refuses for a while: each retry waits its backoff (at least
 * half the 500 ms base), however fast the API answers. */
Test(guarantees, pdb_not_hammered) {
        struct proc p;
        k8s_sim_add_pod(kube, "flink", "orders-taskmanager-1-1", "node-a", TM("orders"), 30, "Deployment");
        k8s_sim_add_pdb(kube, "flink", "orders-tm", "app=orders", 3000);
        imds_sim_set_spot(imds, "terminate", time(NULL) + 120, 0);
        cr_assert_eq(proc_spawn(&p, AGENT("--log-level=info"), NULL), 0);
        cr_assert(eventually(k8s_sim_evictions(kube, "flink", "orders-taskmanager-1-1") == 1, 20000), "%s", p.out);
        unsigned attempts = k8s_sim_eviction_attempts(kube, "flink", "orders-taskmanager-1-1");
        uint64_t gap = k8s_sim_eviction_min_gap(kube, "flink", "orders-taskmanager-1-1");
        cr_assert_geq(attempts, 2, "refused at first, then retried");
        /* A count, not a clock: backoff from 0.5 s, doubling, fits at most a
         * handful of tries into the PDB's 3 s (a slow machine makes fewer);
         * retrying at once makes thousands. */
        cr_assert_leq(attempts, 8, "%u attempts in the PDB's 3 s, two of them %llu us apart", attempts,
                      (unsigned long long) gap);
        stop_agent(&p);
}

/* A PDB that never gives way: the pod is deleted (--force-delete) at the
 * deadline minus the margin, 17 s before the instance goes, not at the
 * deadline. */
Test(guarantees, pdb_blocked_pod_forced_at_the_margin) {
        struct proc p;
        k8s_sim_add_pod(kube, "flink", "orders-taskmanager-1-1", "node-a", TM("orders"), 30, "Deployment");
        k8s_sim_add_pdb(kube, "flink", "orders-tm", "app=orders", 0);
        imds_sim_set_spot(imds, "terminate", time(NULL) + 20, 0);
        cr_assert_eq(proc_spawn(&p, AGENT("--log-level=info", "--eviction-margin=17s", "--force-delete"), NULL), 0);
        cr_assert(eventually(k8s_sim_deletes(kube, "flink", "orders-taskmanager-1-1") == 1, 12000),
                  "not deleted by the margin:\n%s", k8s_sim_log(kube));
        cr_assert_eq(k8s_sim_evictions(kube, "flink", "orders-taskmanager-1-1"), 0);
        stop_agent(&p);
}

/* ---- Flink: what is restored, and what is kept ---- */

/* An operator raises the bound spotd lowered, while the job moves: the
 * restore leaves the operator's value, not the original. */
Test(guarantees, operator_bound_kept) {
        struct proc p;
        flink_cluster(3000); /* the lowered job takes 3 s to run again: time for the operator */
        imds_sim_set_spot(imds, "terminate", time(NULL) + 120, 0);
        cr_assert_eq(proc_spawn(&p, AGENT("--log-level=info"), NULL), 0);
        cr_assert(eventually(upper() == 4, 20000), "spotd lowered the bound: %u\n%s", upper(), p.out);
        cr_assert_eq(operator_sets_upper(6), 200, "%s", flink_sim_log(fl));
        cr_assert(eventually(phase_is("done"), 30000), "%s", p.out);
        cr_assert_eq(upper(), 6, "the operator's bound was overwritten:\n%s", flink_sim_log(fl));
        cr_assert_eq(flink_sim_violations(fl), 0, "%s", flink_sim_log(fl));
        /* 1.18 fails over when the TaskManagers go; the bounds (spotd's 4,
         * the operator's 6: 4 slots either way) land in that one restart. */
        assert_restarts(1, 0);
        stop_agent(&p);
}

/* The JobManager refuses the restore: the originals stay recorded on the
 * node for a later run, not cleared as if restored. */
Test(guarantees, failed_restore_keeps_the_originals) {
        struct proc p;
        flink_cluster(3000);
        imds_sim_set_spot(imds, "terminate", time(NULL) + 120, 0);
        cr_assert_eq(proc_spawn(&p, AGENT("--log-level=info"), NULL), 0);
        cr_assert(eventually(upper() == 4, 20000), "%s", p.out);
        flink_sim_fault(fl, "/jobs/" JOB1 "/resource-requirements", 503, 0, 1000);
        cr_assert(eventually(phase_is("done"), 30000), "%s", p.out);
        char *n = k8s_sim_node_json(kube, "node-a");
        cr_assert(strstr(n, "flink.spotd.io/") && strstr(n, "[1,8,4]"), "the originals [1,8] are gone: %s", n);
        free(n);
        cr_assert_eq(upper(), 4);
        assert_restarts(1, 0);
        stop_agent(&p);
}

/* ---- the node: spotd takes back its own fence, nothing else ---- */

static void undo(bool operator_cordon) {
        struct proc p;
        k8s_sim_add_node_taint(kube, "node-a", "dedicated", "flink", "NoSchedule");
        if (operator_cordon)
                k8s_sim_set_unschedulable(kube, "node-a", true);
        imds_sim_add_scheduled(imds, "system-maintenance", "active", "instance-event-0d01", time(NULL) + 3600, 0);
        cr_assert_eq(proc_spawn(&p, AGENT("--log-level=info"), NULL), 0);
        cr_assert(eventually(tainted("spotd.io/interruption", NULL), 10000), "%s", p.out);
        cr_assert(cordoned());
        cr_assert(tainted("dedicated", "flink"), "the fence dropped the operator's taint");

        imds_sim_clear_scheduled(imds);
        imds_sim_add_scheduled(imds, "system-maintenance", "canceled", "instance-event-0d01", time(NULL) + 3600, 0);
        cr_assert(eventually(!tainted("spotd.io/interruption", NULL), 10000), "spotd's taint stays: %s", p.out);
        cr_assert(tainted("dedicated", "flink"), "the undo dropped the operator's taint");
        cr_assert_eq(cordoned(), operator_cordon, "the node ends %s", cordoned() ? "cordoned" : "schedulable");
        char *n = k8s_sim_node_json(kube, "node-a");
        cr_assert_null(strstr(n, "spotd.io/event-id"), "%s", n);
        free(n);
        stop_agent(&p);
}

Test(guarantees, undo_keeps_the_operators_cordon_and_taint) { undo(true); }
Test(guarantees, undo_lifts_its_own_cordon_only) { undo(false); }

/* ---- a dry run ---- */

/* Reads everything it needs, writes nothing: no Kubernetes write (fence,
 * eviction, Event), no Flink write (checkpoint, bounds), no webhook. */
Test(guarantees, dry_run_writes_nothing) {
        struct proc p;
        char url[256], *body = NULL;
        flink_cluster(100);
        hook_start(url, sizeof url);
        imds_sim_set_spot(imds, "terminate", time(NULL) + 120, 0);
        cr_assert_eq(proc_spawn(&p, AGENT("--log-level=info", "--dry-run", "--health-addr=127.0.0.1:0", url), NULL), 0);
        unsigned port = proc_health_port(&p);
        cr_assert_neq(port, 0, "%s", p.out);
        cr_assert(eventually((free(body), body = NULL, http_get_port(port, "/status", &body) == 200 &&
                              strstr(body, "\"phase\":\"done\"")), 20000), "%s\n%s", body, p.out);
        free(body);
        cr_assert_geq(k8s_sim_requests(kube, "GET", "/api/v1/pods"), 1, "the pods were listed");
        cr_assert_geq(flink_sim_answers(fl, "GET", 0), 1, "the JobManager was read");
        cr_assert_eq(k8s_sim_requests(kube, "PATCH", NULL) + k8s_sim_requests(kube, "POST", NULL) +
                     k8s_sim_requests(kube, "DELETE", NULL), 0, "Kubernetes writes:\n%s", k8s_sim_log(kube));
        cr_assert_eq(flink_sim_answers(fl, "POST", 0) + flink_sim_answers(fl, "PUT", 0) + flink_sim_answers(fl, "PATCH", 0),
                     0, "Flink writes:\n%s", flink_sim_log(fl));
        cr_assert_eq(upper(), 8);
        for (int i = 1; i <= 2; i++) {
                char tm[64];
                snprintf(tm, sizeof tm, "orders-taskmanager-1-%d", i);
                cr_assert_eq(k8s_sim_pod_state(kube, "flink", tm), 0, "%s", tm);
        }
        cr_assert_eq(hook_posts(), 0, "webhook signals were sent");
        assert_restarts(0, 0); /* nothing left, nothing lowered */
        stop_agent(&p);
}

/* ---- secrets: not even a piece ---- */

/* The first 8-character piece of secret that text holds, or NULL. */
static const char *piece_in(const char *text, const char *secret, char piece[static 9]) {
        for (size_t i = 0; i + 8 <= strlen(secret); i++) {
                memcpy(piece, secret + i, 8);
                piece[8] = 0;
                if (strstr(text, piece))
                        return piece;
        }
        return NULL;
}

/* A whole event at debug level with Flink, a rotated API token, IMDSv2
 * session tokens and a webhook with credentials in its URL and a header:
 * no 8 characters of any secret in the log, /status, /metrics, the
 * Kubernetes Events, the node, the JobManager's requests or the webhook
 * payloads. */
static void no_secret_piece(const char *format) {
        struct proc p;
        char url[256];
        flink_cluster(100);
        hook_start(url, sizeof url);
        cr_assert_eq(proc_spawn(&p, AGENT("--log-level=debug", (char *) format, "--health-addr=127.0.0.1:0", url,
                                          "--webhook-header=Authorization: Bearer " HOOK_HEADER), NULL), 0);
        unsigned port = proc_health_port(&p);
        cr_assert_neq(port, 0, "%s", p.out);
        /* The start-up read used the first token; the next request gets a 401 and re-reads. */
        cr_assert(eventually(k8s_sim_requests(kube, "GET", "/api/v1/nodes/node-a") >= 1, 10000));
        k8s_sim_rotate_token(kube, KUBE_TOKEN_ROTATED);
        imds_sim_set_spot(imds, "terminate", time(NULL) + 120, 0);
        cr_assert(eventually(phase_is("done") && hook_posts() >= 2, 30000), "%s", p.out);
        cr_assert_geq(k8s_sim_unauthorized(kube), 1, "the rotated token was read");
        assert_restarts(1, 0); /* the failover the evictions cause, the lowering inside it */

        struct { const char *what; char *text; } out[8] = {
                { "/status", NULL }, { "/metrics", NULL },
                { "Kubernetes Events", k8s_sim_events_json(kube) },
                { "node-a", k8s_sim_node_json(kube, "node-a") },
                { "requests to the JobManager", flink_sim_log(fl) },
                { "webhook payloads", strdup(hook.bodies ? hook.bodies : "") },
        };
        cr_assert_eq(http_get_port(port, "/status", &out[0].text), 200);
        cr_assert_eq(http_get_port(port, "/metrics", &out[1].text), 200);
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0, "%s", p.out);
        out[6] = (typeof(out[0])) { "spotd's output", strdup(p.out) };
        cr_assert(strstr(out[5].text, "\"completed\""), "%s", out[5].text);

        const char *secrets[64] = { KUBE_TOKEN, KUBE_TOKEN_ROTATED, HOOK_USER, HOOK_PASS, HOOK_QUERY, HOOK_HEADER };
        size_t ns = 6;
        char *imds_tokens = imds_sim_tokens(imds);
        for (char *save = NULL, *t = strtok_r(imds_tokens, "\n", &save); t && ns < ELEMENTSOF(secrets);
             t = strtok_r(NULL, "\n", &save))
                secrets[ns++] = t;
        cr_assert_gt(ns, 6, "IMDSv2 session tokens were handed out");
        for (size_t i = 0; out[i].what; i++) {
                char piece[9];
                for (size_t k = 0; k < ns; k++) {
                        const char *hit = piece_in(out[i].text, secrets[k], piece);
                        cr_expect_null(hit, "\"%s\" of secret \"%s\" in %s: ...%.300s", hit, secrets[k], out[i].what,
                                       hit ? strstr(out[i].text, hit) : "");
                }
                free(out[i].text);
        }
        free(imds_tokens);
        proc_free(&p);
}

Test(guarantees, no_secret_piece_json) { no_secret_piece("--log-format=json"); }
Test(guarantees, no_secret_piece_text) { no_secret_piece("--log-format=text"); }

/* ---- size caps ---- */

static ssize_t one_mib_of_spaces(void *cls, uint64_t pos, char *buf, size_t max) {
        if (pos >= 1024 * 1024)
                return MHD_CONTENT_READER_END_OF_STREAM;
        memset(buf, ' ', max);
        return (ssize_t) max;
}

static enum MHD_Result chunked_answer(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                      const char *version, const char *data, size_t *size, void **state) {
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, one_mib_of_spaces, NULL, NULL);
        enum MHD_Result ret = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        return ret;
}

/* An answer that announces no length (chunked) stops at the cap: curl
 * checks an announced one, only spotd can stop this one. */
Test(guarantees, unannounced_oversized_answer_refused) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        struct MHD_Daemon *d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, chunked_answer, NULL,
                                                MHD_OPTION_SOCK_ADDR, &a, MHD_OPTION_END);
        cr_assert_not_null(d);
        char url[64];
        snprintf(url, sizeof url, "http://127.0.0.1:%u", MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT)->port);
        struct imds_options o;
        struct imds *c;
        imds_options_default(&o);
        o.endpoint = url;
        o.mode = IMDS_MODE_V1_ONLY;
        o.timeout = 10 * USEC_PER_SEC;
        cr_assert_eq(imds_new(&o, &c), 0);
        char *body = NULL;
        size_t len = 0;
        int r = imds_get(c, "meta-data/spot/instance-action", &body, &len);
        cr_assert_eq(r, -EFBIG, "got %d with %zu bytes (cap %zu)", r, len, o.max_body);
        cr_assert_null(body);
        imds_free(c);
        MHD_stop_daemon(d);
}
