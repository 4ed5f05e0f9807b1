/* Benchmark: a reclaim storm. N agents (default 20) on one machine, each
 * with its own node and IMDS simulator, all reclaimed at the same moment,
 * against one Kubernetes API simulator and one Flink 1.18 JobManager
 * simulator. One job whose TaskManagers are spread over the N nodes (2 per
 * node, 2 slots each) and over surviving nodes (10 TaskManagers). Checks
 * that every TaskManager is evicted before its deadline, that the job ends
 * at the surviving slots with its bounds restored, and that the PUTs do not
 * livelock on 409; prints API requests per event and the handling times
 * (notice seen -> done, from each agent's summary). Not run by ctest.
 *
 *   bench_storm [--agents N] [--survivors M] [--poll-interval D] [--put-conflicts C]
 *
 * --put-conflicts: the JobManager answers the first C PUTs 409, as if
 * another writer had won, to drive the re-read-and-retry path. */
#include <stdint.h>

#include "flink_sim.h"
#include "helpers.h"
#include "imds_sim.h"
#include "k8s_sim.h"

#define JOB "5707a5707a5707a5707a5707a5707a57"
#define VA "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a"
#define VB "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b"
#define TM_LABELS "component=taskmanager,type=flink-native-kubernetes,app=storm"
#define MAX_AGENTS 64
#define DEADLINE_S 120
#define MARGIN_S 15

static void on_terminate(void *ud, const char *ns, const char *name, const char *ip) {
        flink_sim_pod_terminating(ud, name, ip);
}

/* A number of the summary's timeline ("done 1.234"), in seconds; -1 if absent. */
static double field(const char *line, const char *key) {
        const char *s = strstr(line, key);
        return s ? atof(s + strlen(key)) : -1;
}

static int cmp_d(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;
        return x < y ? -1 : x > y;
}

/* The value at percentile q of n sorted values (nearest rank). */
static double pct(const double *v, unsigned n, double q) {
        unsigned rank = (unsigned) (q * n + 0.999999);
        return v[(rank ? rank : 1) - 1];
}

static unsigned count_lines_with(const char *text, const char *a, const char *b) {
        unsigned n = 0;
        for (const char *l = text; l && *l;) {
                const char *e = strchr(l, '\n');
                size_t len = e ? (size_t) (e - l) : strlen(l);
                n += memmem(l, len, a, strlen(a)) && memmem(l, len, b, strlen(b));
                l = e ? e + 1 : NULL;
        }
        return n;
}

int main(int argc, char **argv) {
        unsigned agents = 20, survivors = 10, conflicts = 0;
        const char *poll = "1s";
        for (int i = 1; i + 1 < argc; i += 2) {
                if (strcmp(argv[i], "--agents") == 0)
                        agents = (unsigned) strtoul(argv[i + 1], NULL, 10);
                else if (strcmp(argv[i], "--survivors") == 0)
                        survivors = (unsigned) strtoul(argv[i + 1], NULL, 10);
                else if (strcmp(argv[i], "--poll-interval") == 0)
                        poll = argv[i + 1];
                else if (strcmp(argv[i], "--put-conflicts") == 0)
                        conflicts = (unsigned) strtoul(argv[i + 1], NULL, 10);
                else
                        argc = -1;
        }
        if (argc < 0 || argc % 2 == 0 || agents < 1 || agents > MAX_AGENTS || survivors < 1 || survivors > 200) {
                fprintf(stderr, "usage: %s [--agents N (1..%d)] [--survivors M] [--poll-interval D] [--put-conflicts C]\n",
                        argv[0], MAX_AGENTS);
                return 2;
        }
        setvbuf(stdout, NULL, _IOLBF, 0);
        curl_global_init(CURL_GLOBAL_DEFAULT);

        struct k8s_sim *kube;
        struct flink_sim *fl;
        struct imds_sim *imds[MAX_AGENTS];
        struct proc p[MAX_AGENTS];
        char furl[64], kurl[64], a_api[128], a_ca[1100], a_tok[1100], a_poll[64];
        unsigned slots_total = 2 * 2 * agents + 2 * survivors, slots_left = 2 * survivors;
        if (k8s_sim_start(&(struct k8s_sim_options) { .grace_ms_per_s = 10 }, &kube) < 0 ||
            flink_sim_start(&(struct flink_sim_options) { .version = "1.18.1", .checkpoint_ms = 100, .restart_ms = 200 }, &fl) < 0) {
                fprintf(stderr, "cannot start the simulators\n");
                return 1;
        }
        k8s_sim_set_terminate_hook(kube, on_terminate, fl);
        flink_sim_url(fl, furl, sizeof furl);
        k8s_sim_url(kube, kurl, sizeof kurl);
        snprintf(a_api, sizeof a_api, "--kube-api=%s", kurl);
        snprintf(a_ca, sizeof a_ca, "--kube-ca-file=%s", k8s_sim_ca_file(kube));
        snprintf(a_tok, sizeof a_tok, "--kube-token-file=%s", k8s_sim_token_file(kube));
        snprintf(a_poll, sizeof a_poll, "--poll-interval=%s", poll);

        /* The cluster: 2 TaskManagers on each reclaimed node, survivors 2 per surviving node. */
        for (unsigned n = 0; n < agents + (survivors + 1) / 2; n++) {
                char node[32];
                bool reclaimed = n < agents;
                snprintf(node, sizeof node, reclaimed ? "spot-%02u" : "stay-%02u", reclaimed ? n + 1 : n - agents + 1);
                k8s_sim_add_node(kube, node, "eks.amazonaws.com/capacityType=SPOT");
                for (unsigned t = 0; t < 2 && (reclaimed || 2 * (n - agents) + t < survivors); t++) {
                        char name[64], ip[48];
                        snprintf(name, sizeof name, "storm-taskmanager-1-%s-%u", node, t + 1);
                        k8s_sim_add_pod(kube, "flink", name, node, TM_LABELS, 30, "Deployment");
                        k8s_sim_set_pod_annotation(kube, "flink", name, "spotd.io/flink-rest-url", furl);
                        k8s_sim_pod_ip(kube, "flink", name, ip, sizeof ip);
                        flink_sim_add_taskmanager(fl, name, ip, 2);
                }
        }
        flink_sim_add_job(fl, JOB, "storm");
        flink_sim_add_vertex(fl, JOB, VA, "source", slots_total, 128, NULL);
        flink_sim_add_vertex(fl, JOB, VB, "sink", slots_total, 128, NULL);
        flink_sim_put_conflicts(fl, conflicts);

        for (unsigned i = 0; i < agents; i++) {
                char id[32], url[64], a_imds[128], a_node[64];
                snprintf(id, sizeof id, "i-0%016x", i + 1);
                if (imds_sim_start(&(struct imds_sim_options) { .instance_id = id }, &imds[i]) < 0)
                        return 1;
                imds_sim_url(imds[i], url, sizeof url);
                snprintf(a_imds, sizeof a_imds, "--imds-endpoint=%s", url);
                snprintf(a_node, sizeof a_node, "--node-name=spot-%02u", i + 1);
                if (proc_spawn(&p[i], (char *[]) { "spotd", "run", a_imds, a_api, a_ca, a_tok, a_node, a_poll, "--log-target=stderr",
                                                   "--log-format=json", "--health-addr=off", "--flink-url-allow=127.0.0.1", NULL }, NULL) < 0)
                        return 1;
        }
        for (unsigned i = 0; i < agents; i++)
                if (!proc_wait_for(&p[i], "Watching instance", 10000)) {
                        fprintf(stderr, "agent %u did not start: %s\n", i + 1, p[i].out);
                        return 1;
                }
        usleep(500 * 1000); /* start-up reads done */
        unsigned before = k8s_sim_requests(kube, NULL, NULL), gets_before = k8s_sim_requests(kube, "GET", NULL);

        printf("Reclaim storm: %u agents (one node and IMDS simulator each), one Kubernetes API and one Flink 1.18 "
               "JobManager simulator;\none job at parallelism %u over %u TaskManagers of 2 slots (2 on each reclaimed node, "
               "%u on surviving nodes); spotd defaults, poll interval %s; %u PUTs answered 409 on purpose\n",
               agents, slots_total, 2 * agents + survivors, survivors, poll, conflicts);
        time_t deadline = time(NULL) + DEADLINE_S;
        usec_t t0 = now_monotonic();
        for (unsigned i = 0; i < agents; i++)
                imds_sim_set_spot(imds[i], "terminate", deadline, 0);

        /* Every agent's summary line. */
        double done[MAX_AGENTS], last_accept[MAX_AGENTS], gone_at[MAX_AGENTS];
        unsigned ok = 0, not_verified = 0, lowered = 0, not_lowered = 0, restored = 0;
        for (unsigned i = 0; i < agents; i++) {
                if (!proc_wait_for(&p[i], "TaskManager pods gone", (DEADLINE_S + 30) * 1000)) {
                        fprintf(stderr, "agent %u did not finish:\n%s\n", i + 1, p[i].out);
                        return 1;
                }
                const char *line = strstr(p[i].out, " handled: ");
                done[i] = field(line, ", done ");
                last_accept[i] = field(line, "last accepted ");
                gone_at[i] = field(line, "pods gone ");
                ok += strstr(line, "handled: 2 TaskManager pods gone, 0 not evicted") != NULL;
                not_verified += count_lines_with(p[i].out, "did not reach the lower parallelism", "");
                lowered += count_lines_with(p[i].out, "Lowered the bounds of job", "");
                not_lowered += count_lines_with(p[i].out, "Cannot lower the bounds", "");
                restored += count_lines_with(p[i].out, "Restored the original bounds", "");
        }
        double wall = (double) (now_monotonic() - t0) / 1e6;
        usleep(1000 * 1000); /* trailing Events and annotation writes */
        unsigned requests = k8s_sim_requests(kube, NULL, NULL) - before;

        /* What the cluster looks like now. */
        unsigned evicted = 0, evicted_twice = 0, gone = 0, survivors_touched = 0;
        for (unsigned n = 0; n < agents + (survivors + 1) / 2; n++)
                for (unsigned t = 0; t < 2; t++) {
                        char name[64];
                        snprintf(name, sizeof name, "storm-taskmanager-1-%s%02u-%u", n < agents ? "spot-" : "stay-",
                                 n < agents ? n + 1 : n - agents + 1, t + 1);
                        if (k8s_sim_pod_state(kube, "flink", name) < 0)
                                continue;
                        if (n < agents) {
                                unsigned e = k8s_sim_evictions(kube, "flink", name);
                                evicted += e >= 1;
                                evicted_twice += e > 1;
                                gone += k8s_sim_pod_state(kube, "flink", name) == 2;
                        } else
                                survivors_touched += k8s_sim_eviction_attempts(kube, "flink", name) > 0;
                }
        unsigned lo_a = 0, up_a = 0, lo_b = 0, up_b = 0;
        flink_sim_bounds(fl, JOB, VA, &lo_a, &up_a);
        flink_sim_bounds(fl, JOB, VB, &lo_b, &up_b);
        unsigned par_a = flink_sim_vertex_parallelism(fl, JOB, VA), par_b = flink_sim_vertex_parallelism(fl, JOB, VB);
        unsigned put_409 = flink_sim_answers(fl, "PUT", 409), put_all = flink_sim_answers(fl, "PUT", 0);
        unsigned flink_requests = flink_sim_answers(fl, NULL, 0);

        qsort(done, agents, sizeof *done, cmp_d);
        qsort(last_accept, agents, sizeof *last_accept, cmp_d);
        qsort(gone_at, agents, sizeof *gone_at, cmp_d);
        printf("agents handled with 2 pods gone, 0 not evicted: %u of %u (%u did not verify the lower parallelism in time)\n",
               ok, agents, not_verified);
        printf("TaskManagers evicted: %u of %u reclaimed (%u evicted twice, %u gone), surviving TaskManagers touched: %u\n",
               evicted, 2 * agents, evicted_twice, gone, survivors_touched);
        printf("last eviction accepted, worst agent: %.3f s after its notice (margin: %d s before a %d s deadline); "
               "pods gone, worst: %.3f s\n", last_accept[agents - 1], MARGIN_S, DEADLINE_S, gone_at[agents - 1]);
        printf("final parallelism: %u and %u (surviving slots: %u of %u); bounds now [%u,%u] and [%u,%u] (original [1,%u])\n",
               par_a, par_b, slots_left, slots_total, lo_a, up_a, lo_b, up_b, slots_total);
        printf("agents that lowered the bounds: %u, could not: %u, restored them: %u (the others found another agent's "
               "lower bound in place)\n", lowered, not_lowered, restored);
        printf("resource-requirements PUTs: %u sent, %u accepted, %u answered 409; JobManager requests: %u in all, "
               "%.1f per event, %u breaking the spec\n",
               put_all, flink_sim_puts(fl, JOB), put_409, flink_requests, (double) flink_requests / agents,
               flink_sim_violations(fl));
        printf("Kubernetes API requests: %u for %u events = %.1f per event (GET %u, PATCH %u, POST %u, DELETE %u)\n", requests,
               agents, (double) requests / agents, k8s_sim_requests(kube, "GET", NULL) - gets_before,
               k8s_sim_requests(kube, "PATCH", NULL), k8s_sim_requests(kube, "POST", NULL), k8s_sim_requests(kube, "DELETE", NULL));
        printf("handling time, notice seen -> done: p50 %.3f s, p99 %.3f s, max %.3f s; all done %.1f s after the notices\n",
               pct(done, agents, 0.5), pct(done, agents, 0.99), done[agents - 1], wall);

        int ret = 0;
        if (ok != agents || evicted != 2 * agents || gone != 2 * agents || evicted_twice || survivors_touched ||
            last_accept[agents - 1] > DEADLINE_S - MARGIN_S || gone_at[agents - 1] > DEADLINE_S)
                ret = 1, printf("FAILED: not every TaskManager was evicted once, before its deadline\n");
        if (par_a != slots_left || par_b != slots_left || up_a != slots_total || up_b != slots_total || lo_a != 1 || lo_b != 1)
                ret = 1, printf("FAILED: the job did not converge on the surviving slots with its bounds restored\n");
        for (unsigned i = 0; i < agents; i++) {
                proc_stop(&p[i], SIGTERM, 5000);
                proc_free(&p[i]);
                imds_sim_stop(imds[i]);
        }
        k8s_sim_set_terminate_hook(kube, NULL, NULL);
        k8s_sim_stop(kube);
        flink_sim_stop(fl);
        curl_global_cleanup();
        return ret;
}
