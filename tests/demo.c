/* The demo: the real spotd binary, defaults but for the flags it names, against the bundled
 * simulators on loopback. Prints a timeline of a spot interruption from the
 * moment the notice appears. Exits 0 when every step was seen. */
#include <cjson/cJSON.h>

#include "helpers.h"
#include "imds_sim.h"
#include "flink_sim.h"
#include "k8s_sim.h"

static usec_t T0;

static void say(const char *who, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const char *who, const char *fmt, ...) {
        va_list ap;
        double t = (double) ((int64_t) now_realtime() - (int64_t) T0) / 1e6;
        printf("  %+8.3fs  %-10s ", t, who);
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        putchar('\n');
        fflush(stdout);
}

/* Prints every complete JSON log line not printed yet. */
static size_t echo_lines(struct proc *p, size_t from) {
        while (p->out && from < p->len) {
                char *nl = strchr(p->out + from, '\n');
                if (!nl)
                        break;
                *nl = 0;
                cJSON *j = cJSON_Parse(p->out + from);
                if (j) {
                        const char *msg = cJSON_GetStringValue(cJSON_GetObjectItem(j, "msg"));
                        const char *lvl = cJSON_GetStringValue(cJSON_GetObjectItem(j, "level"));
                        const char *ev = cJSON_GetStringValue(cJSON_GetObjectItem(j, "event_id"));
                        const char *ts = cJSON_GetStringValue(cJSON_GetObjectItem(j, "ts"));
                        time_t sec;
                        char when[16] = "";
                        /* spotd's own timestamp, on the timeline's clock */
                        if (ts && strlen(ts) == 24 && parse_rfc3339(ts, &sec) == 0) {
                                int64_t us = (int64_t) sec * 1000000 + atoi(ts + 20) * 1000 - (int64_t) T0;
                                snprintf(when, sizeof when, "%+8.3fs", (double) us / 1e6);
                        }
                        printf("  %9s  %-10s [%s] %s%s%s%s\n", when, "spotd", lvl ? lvl : "?", msg ? msg : "",
                               ev ? " {event " : "", ev ? ev : "", ev ? "}" : "");
                        cJSON_Delete(j);
                } else
                        printf("  %9s  %-10s %s\n", "", "spotd", p->out + from);
                *nl = '\n';
                from = (size_t) (nl - p->out) + 1;
        }
        fflush(stdout);
        return from;
}

static bool expect(struct proc *p, size_t *shown, const char *needle, int ms) {
        bool ok = proc_wait_for(p, needle, ms);
        *shown = echo_lines(p, *shown);
        if (!ok)
                say("demo", "FAILED: spotd did not log \"%s\" within %d ms", needle, ms);
        return ok;
}

static void show_node(struct k8s_sim *kube) {
        char *s = k8s_sim_node_json(kube, "ip-10-0-1-23.ec2.internal");
        cJSON *n = cJSON_Parse(s), *t, *a;
        cJSON *spec = cJSON_GetObjectItem(n, "spec");
        say("node", "spec.unschedulable: %s", cJSON_IsTrue(cJSON_GetObjectItem(spec, "unschedulable")) ? "true" : "false");
        cJSON_ArrayForEach(t, cJSON_GetObjectItem(spec, "taints"))
                say("node", "taint %s=%s:%s", cJSON_GetStringValue(cJSON_GetObjectItem(t, "key")),
                    cJSON_GetStringValue(cJSON_GetObjectItem(t, "value")), cJSON_GetStringValue(cJSON_GetObjectItem(t, "effect")));
        cJSON_ArrayForEach(a, cJSON_GetObjectItem(cJSON_GetObjectItem(n, "metadata"), "annotations"))
                say("node", "annotation %s: %s", a->string, cJSON_GetStringValue(a));
        cJSON_Delete(n);
        free(s);
}

static void on_terminate(void *ud, const char *ns, const char *name, const char *ip) {
        flink_sim_pod_terminating(strcmp(ns, "flink") == 0 ? ((struct flink_sim **) ud)[0] : ((struct flink_sim **) ud)[1],
                                  name, ip);
}

#define ORDERS_JOB "a1b2c3d4e5f60718293a4b5c6d7e8f90"
#define CLICKS_JOB "c1c2c3d4e5f60718293a4b5c6d7e8f90"
#define V_SRC "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a"
#define V_SINK "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b"
#define V_ALL "0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c"

static void show_job(struct flink_sim *fl, const char *cluster, const char *jid, const char *vid) {
        unsigned lo, up;
        flink_sim_bounds(fl, jid, vid, &lo, &up);
        say("flink", "%-16s job %.8s...: %-10s parallelism %u, bounds [%u, %u], checkpoints %u, failovers %u, rescales %u",
            cluster, jid, flink_sim_job_state(fl, jid), flink_sim_vertex_parallelism(fl, jid, vid), lo, up,
            flink_sim_checkpoints_completed(fl, jid), flink_sim_restarts(fl, jid), flink_sim_rescales(fl, jid));
}

static const char *const pods[][4] = {
        /* namespace, name, labels, owner */
        { "flink", "orders-taskmanager-1-1", "component=taskmanager,type=flink-native-kubernetes,app=orders", "Deployment" },
        { "flink", "orders-taskmanager-1-2", "component=taskmanager,type=flink-native-kubernetes,app=orders", "Deployment" },
        { "flink", "orders-taskmanager-1-3", "component=taskmanager,type=flink-native-kubernetes,app=orders", "Deployment" },
        { "analytics", "clicks-taskmanager-0", "component=taskmanager,type=flink-standalone-kubernetes,app=clicks", "Deployment" },
        { "analytics", "clicks-taskmanager-1", "component=taskmanager,type=flink-standalone-kubernetes,app=clicks", "Deployment" },
        { "analytics", "clicks-taskmanager-2", "component=taskmanager,type=flink-standalone-kubernetes,app=clicks", "Deployment" },
        { "flink", "orders-jobmanager-7d9f", "component=jobmanager,type=flink-native-kubernetes,app=orders", "ReplicaSet" },
        { "kube-system", "aws-node-x7k2p", "k8s-app=aws-node", "DaemonSet" },
        { "kube-system", "spotd-q8w4n", "app.kubernetes.io/name=spotd", "DaemonSet" },
        { "web", "frontend-5c8d-x2", "app=frontend", "ReplicaSet" },
        { "web", "checkout-77f-k1", "app=checkout", "ReplicaSet" },
};

int main(void) {
        struct imds_sim *sim;
        struct k8s_sim *kube;
        struct flink_sim *fls[2];
        struct proc p;
        char url[64], kurl[64], ep[128], api[128], ca[1100], tok[1100], *body = NULL;
        size_t shown = 0;
        int ok = 1;

        setvbuf(stdout, NULL, _IOLBF, 0);
        curl_global_init(CURL_GLOBAL_DEFAULT);
        printf("spotd demo: the real spotd binary against the bundled EC2 metadata, Kubernetes API and Flink\n"
               "JobManager simulators (loopback only)\n\n");
        T0 = now_realtime();
        if (imds_sim_start(&(struct imds_sim_options) { .require_v2 = true }, &sim) < 0 ||
            k8s_sim_start(&(struct k8s_sim_options) { .grace_ms_per_s = 50 }, &kube) < 0) {
                fprintf(stderr, "cannot start the simulators\n");
                return 1;
        }
        imds_sim_url(sim, url, sizeof url);
        snprintf(ep, sizeof ep, "--imds-endpoint=%s", url);
        say("simulator", "metadata service on %s (IMDSv2 required, nothing pending)", url);
        k8s_sim_url(kube, kurl, sizeof kurl);
        snprintf(api, sizeof api, "--kube-api=%s", kurl);
        snprintf(ca, sizeof ca, "--kube-ca-file=%s", k8s_sim_ca_file(kube));
        snprintf(tok, sizeof tok, "--kube-token-file=%s", k8s_sim_token_file(kube));
        k8s_sim_add_node(kube, "ip-10-0-1-23.ec2.internal", "eks.amazonaws.com/capacityType=SPOT");
        for (size_t i = 0; i < ELEMENTSOF(pods); i++)
                k8s_sim_add_pod(kube, pods[i][0], pods[i][1], "ip-10-0-1-23.ec2.internal", pods[i][2],
                                30, pods[i][3]);
        k8s_sim_add_pdb(kube, "web", "checkout", "app=checkout", 0);
        /* Two Flink clusters: orders (native, Flink 1.18) and clicks
         * (operator standalone, Flink 2.0), each with 3 TaskManagers on this
         * node and 3 on another, 2 slots each. */
        if (flink_sim_start(&(struct flink_sim_options) { .version = "1.18.1", .checkpoint_ms = 300, .restart_ms = 400 }, &fls[0]) < 0 ||
            flink_sim_start(&(struct flink_sim_options) { .version = "2.0.0", .checkpoint_ms = 300, .restart_ms = 400 }, &fls[1]) < 0) {
                fprintf(stderr, "cannot start the Flink simulators\n");
                return 1;
        }
        k8s_sim_add_node(kube, "ip-10-0-2-77.ec2.internal", "eks.amazonaws.com/capacityType=SPOT");
        for (int c = 0; c < 2; c++) {
                char furl[64];
                flink_sim_url(fls[c], furl, sizeof furl);
                for (int i = 0; i < 6; i++) {
                        char name[64], ip[48];
                        const char *ns = c ? "analytics" : "flink";
                        if (i < 3)
                                snprintf(name, sizeof name, "%s", pods[c * 3 + i][1]);
                        else {
                                snprintf(name, sizeof name, c ? "clicks-taskmanager-%d" : "orders-taskmanager-1-%d", i + 1);
                                k8s_sim_add_pod(kube, ns, name, "ip-10-0-2-77.ec2.internal", pods[c * 3][2], 30, "Deployment");
                        }
                        k8s_sim_set_pod_annotation(kube, ns, name, "spotd.io/flink-rest-url", furl);
                        k8s_sim_pod_ip(kube, ns, name, ip, sizeof ip);
                        if (c) { /* standalone ids carry the IP, not the pod name */
                                char id[96];
                                snprintf(id, sizeof id, "%s:6122-%06x", ip, i + 0xa1b2c0);
                                flink_sim_add_taskmanager(fls[c], id, ip, 2);
                        } else
                                flink_sim_add_taskmanager(fls[c], name, ip, 2);
                }
        }
        flink_sim_add_job(fls[0], ORDERS_JOB, "orders");
        flink_sim_add_vertex(fls[0], ORDERS_JOB, V_SRC, "kafka-source", 12, 128, NULL);
        flink_sim_add_vertex(fls[0], ORDERS_JOB, V_SINK, "sink", 12, 128, NULL);
        flink_sim_add_job(fls[1], CLICKS_JOB, "clicks");
        flink_sim_add_vertex(fls[1], CLICKS_JOB, V_ALL, "sessionize", 12, 128, NULL);
        k8s_sim_set_terminate_hook(kube, on_terminate, fls);
        flink_sim_url(fls[0], url, sizeof url);
        say("simulator", "Flink 1.18 JobManager of flink/orders on %s: 6 TaskManagers (12 slots), job at parallelism 12", url);
        flink_sim_url(fls[1], url, sizeof url);
        say("simulator", "Flink 2.0 JobManager of analytics/clicks on %s: 6 TaskManagers (12 slots), job at parallelism 12", url);
        show_job(fls[0], "flink/orders", ORDERS_JOB, V_SRC);
        show_job(fls[1], "analytics/clicks", CLICKS_JOB, V_ALL);
        say("simulator", "Kubernetes API on %s (TLS, bearer token): node ip-10-0-1-23.ec2.internal with %zu pods: "
                         "6 TaskManagers of 2 Flink clusters, a JobManager, 2 DaemonSet pods, 2 web pods (one PDB-guarded)",
            kurl, ELEMENTSOF(pods));

        /* Defaults everywhere but where the demo must differ: the endpoints,
         * a node name, a free HTTP port, JSON lines to read back. */
        if (proc_spawn(&p, (char *[]) { "spotd", "run", ep, api, ca, tok, "--node-name=ip-10-0-1-23.ec2.internal",
                                        "--health-addr=127.0.0.1:0", "--log-target=stderr", "--log-format=json",
                                        "--flink-url-allow=127.0.0.1", NULL }, NULL) < 0)
                return 1;
        say("demo", "started spotd run with --imds-endpoint, --kube-api, --kube-ca-file, --kube-token-file, "
                    "--node-name, --health-addr=127.0.0.1:0, --log-target=stderr --log-format=json and "
                    "--flink-url-allow=127.0.0.1 (the simulated JobManagers listen on loopback, named by pod "
                    "annotations); everything else on its defaults");
        unsigned port = proc_health_port(&p);
        ok &= expect(&p, &shown, "Using IMDSv2", 5000);
        sleep(2);
        shown = echo_lines(&p, shown);

        time_t deadline = time(NULL) + 120;
        char when[32];
        format_rfc3339(deadline, when, sizeof when);
        printf("\n");
        T0 = now_realtime(); /* the timeline runs from the notice */
        imds_sim_set_spot(sim, "terminate", deadline, 0);
        say("simulator", "SPOT INTERRUPTION NOTICE posted: {\"action\": \"terminate\", \"time\": \"%s\"}", when);
        ok &= expect(&p, &shown, "Spot interruption notice", 3000);
        ok &= expect(&p, &shown, "cordoned and tainted", 3000);
        ok &= expect(&p, &shown, "TaskManager pods gone", 30000);
        printf("\n");

        if (http_get_port(port, "/status", &body) == 200) {
                cJSON *j = cJSON_Parse(body);
                cJSON *ev = cJSON_GetObjectItem(j, "current_event");
                say("GET", "/status   -> state %s, event %s, phase %s, deadline %s (%.0f s left)",
                    cJSON_GetStringValue(cJSON_GetObjectItem(j, "state")),
                    cJSON_GetStringValue(cJSON_GetObjectItem(ev, "id")),
                    cJSON_GetStringValue(cJSON_GetObjectItem(j, "phase")),
                    cJSON_GetStringValue(cJSON_GetObjectItem(ev, "deadline")),
                    cJSON_GetNumberValue(cJSON_GetObjectItem(ev, "seconds_left")));
                ok &= ev != NULL;
                cJSON_Delete(j);
        } else
                ok = 0;
        free(body);
        if (http_get_port(port, "/metrics", &body) == 200) {
                const char *want[] = { "spotd_notices_total{kind=\"spot-interruption\"}",
                                       "spotd_imds_requests_total{source=\"spot\",result=\"ok\"}",
                                       "spotd_imds_requests_total{source=\"spot\",result=\"not_found\"}",
                                       "process_resident_memory_bytes" };
                for (size_t i = 0; i < ELEMENTSOF(want); i++) {
                        char needle[128];
                        snprintf(needle, sizeof needle, "\n%s", want[i]); /* a sample, not its # HELP */
                        const char *m = strstr(body, needle);
                        m = m ? m + 1 : NULL;
                        say("GET", "/metrics  -> %.*s", m ? (int) strcspn(m, "\n") : 7, m ? m : "MISSING");
                        ok &= m != NULL;
                }
        } else
                ok = 0;
        free(body);
        long h = http_get_port(port, "/healthz", NULL), r = http_get_port(port, "/readyz", NULL);
        say("GET", "/healthz -> %ld, /readyz -> %ld", h, r);
        ok &= h == 200 && r == 200;

        printf("\n");
        show_job(fls[0], "flink/orders", ORDERS_JOB, V_SRC);
        show_job(fls[1], "analytics/clicks", CLICKS_JOB, V_ALL);
        /* What the JobManagers saw, said as seen: a failover is a restart
         * from a checkpoint, not the in-place rescale spotd aims for. */
        for (int c = 0; c < 2; c++) {
                const char *jid = c ? CLICKS_JOB : ORDERS_JOB, *vid = c ? V_ALL : V_SRC, *name = c ? "analytics/clicks" : "flink/orders";
                const char *state = flink_sim_job_state(fls[c], jid);
                unsigned lo, up, par = flink_sim_vertex_parallelism(fls[c], jid, vid), fo = flink_sim_restarts(fls[c], jid),
                             rs = flink_sim_rescales(fls[c], jid);
                flink_sim_bounds(fls[c], jid, vid, &lo, &up);
                say("flink", "%s: %s at parallelism %u on the 6 surviving slots, upper bound %u%s; restarts: %u rescale%s in place, "
                             "%u failover%s%s",
                    name, state, par, up, up == 12 ? " (restored: it grows back when new TaskManagers register)" : "",
                    rs, rs == 1 ? "" : "s", fo, fo == 1 ? "" : "s", fo ? " (a restart from the checkpoint)" : "");
                ok &= strcmp(state, "RUNNING") == 0 && par == 6 && up == 12 && flink_sim_checkpoints_completed(fls[c], jid) >= 1 &&
                      flink_sim_violations(fls[c]) == 0;
        }
        say("flink", "requests off the OpenAPI spec: %u", flink_sim_violations(fls[0]) + flink_sim_violations(fls[1]));
        show_node(kube);
        for (size_t i = 0; i < ELEMENTSOF(pods); i++) {
                static const char *const states[] = { "running", "terminating", "gone" };
                int st = k8s_sim_pod_state(kube, pods[i][0], pods[i][1]);
                unsigned tries = k8s_sim_eviction_attempts(kube, pods[i][0], pods[i][1]),
                         accepted = k8s_sim_evictions(kube, pods[i][0], pods[i][1]),
                         deletes = k8s_sim_deletes(kube, pods[i][0], pods[i][1]);
                bool tm = strstr(pods[i][2], "component=taskmanager") && strcmp(pods[i][3], "DaemonSet") != 0;
                say("pods", "%-11s %-24s %-11s (%s; eviction requests %u, accepted %u, deletes %u)", pods[i][0], pods[i][1],
                    st >= 0 && st <= 2 ? states[st] : "?", tm ? "TaskManager" : "not a TaskManager", tries, accepted, deletes);
                ok &= tm ? st == 2 && accepted == 1 : (st == 0 && tries == 0 && deletes == 0);
        }

        int st = proc_stop(&p, SIGTERM, 5000);
        shown = echo_lines(&p, shown);
        say("demo", "sent SIGTERM: spotd exited with status %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
        ok &= WIFEXITED(st) && WEXITSTATUS(st) == 0;
        printf("\n%s\n", ok ? "demo finished: every step was seen"
                            : "demo FAILED: a step above is missing");
        proc_free(&p);
        imds_sim_stop(sim);
        k8s_sim_set_terminate_hook(kube, NULL, NULL);
        k8s_sim_stop(kube);
        flink_sim_stop(fls[0]);
        flink_sim_stop(fls[1]);
        curl_global_cleanup();
        return ok ? 0 : 1;
}
