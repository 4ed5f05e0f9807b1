/* Benchmark: a Flink session cluster with 2 jobs, 2 of its 4 TaskManagers on
 * the reclaimed node, the last checkpoint fresh (so none is taken). From
 * detection to the last eviction sent/accepted and to the lowered bounds
 * accepted by the JobManager, per Flink version.
 *
 * Then the timing tests/test_rescale.c leaves to this benchmark (it only
 * checks the order of events there): on 1.18 the PUT after the first
 * eviction, a JobManager that answers 503 to everything (--flink-timeout=1s),
 * and a checkpoint that would take 10 min against --checkpoint-timeout=1s.
 * Those three have targets: the benchmark exits 1 when one is missed.
 *
 *   bench_rescale [--runs N] */
#include <stdint.h>

#include "flink_sim.h"
#include "helpers.h"
#include "imds_sim.h"
#include "k8s_sim.h"

#define JOB_A "a1b2c3d4e5f60718293a4b5c6d7e8f90"
#define JOB_B "b1b2c3d4e5f60718293a4b5c6d7e8f90"

static void on_terminate(void *ud, const char *ns, const char *name, const char *ip) {
        flink_sim_pod_terminating(ud, name, ip);
}

static double field(const char *out, const char *key) {
        const char *s = strstr(out, key);
        return s ? atof(s + strlen(key)) * 1000 : -1;
}

static int cmp_d(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;
        return x < y ? -1 : x > y;
}

/* The plain run, the JobManager down, the checkpoint over its budget. */
enum scenario { PLAIN, JM_DOWN, SLOW_CHECKPOINT };

/* 0, 1 when a target was missed, -1 when a run could not be made. */
static int run(const char *version, enum scenario sc, unsigned runs) {
        double *evict = calloc(runs, sizeof *evict), *accepted = calloc(runs, sizeof *accepted),
               *put = calloc(runs, sizeof *put), *gap = calloc(runs, sizeof *gap);
        bool evict_first = version[0] == '1';
        int missed = 0;
        for (unsigned r = 0; r < runs; r++) {
                struct imds_sim *imds;
                struct k8s_sim *kube;
                struct flink_sim *fl;
                struct proc p;
                char url[64], furl[64], a_imds[128], a_api[128], a_ca[1100], a_tok[1100];
                if (imds_sim_start(NULL, &imds) < 0 ||
                    k8s_sim_start(&(struct k8s_sim_options) { .grace_ms_per_s = 10 }, &kube) < 0 ||
                    flink_sim_start(&(struct flink_sim_options) { .version = version,
                                                                  .checkpoint_ms = sc == SLOW_CHECKPOINT ? 600000 : 50,
                                                                  .restart_ms = 50 }, &fl) < 0)
                        return -1;
                k8s_sim_set_terminate_hook(kube, on_terminate, fl);
                imds_sim_url(imds, url, sizeof url);
                snprintf(a_imds, sizeof a_imds, "--imds-endpoint=%s", url);
                k8s_sim_url(kube, url, sizeof url);
                snprintf(a_api, sizeof a_api, "--kube-api=%s", url);
                snprintf(a_ca, sizeof a_ca, "--kube-ca-file=%s", k8s_sim_ca_file(kube));
                snprintf(a_tok, sizeof a_tok, "--kube-token-file=%s", k8s_sim_token_file(kube));
                flink_sim_url(fl, furl, sizeof furl);
                k8s_sim_add_node(kube, "node-a", NULL);
                k8s_sim_add_node(kube, "node-b", NULL);
                for (int i = 1; i <= 4; i++) {
                        char name[64], ip[48];
                        snprintf(name, sizeof name, "session-taskmanager-1-%d", i);
                        k8s_sim_add_pod(kube, "flink", name, i <= 2 ? "node-a" : "node-b",
                                        "component=taskmanager,type=flink-native-kubernetes,app=session", 30, "Deployment");
                        k8s_sim_set_pod_annotation(kube, "flink", name, "spotd.io/flink-rest-url", furl);
                        k8s_sim_pod_ip(kube, "flink", name, ip, sizeof ip);
                        flink_sim_add_taskmanager(fl, name, ip, 2);
                }
                flink_sim_add_job(fl, JOB_A, "orders");
                flink_sim_add_vertex(fl, JOB_A, "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a", "all", 4, 128, NULL);
                flink_sim_add_job(fl, JOB_B, "clicks");
                flink_sim_add_vertex(fl, JOB_B, "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "all", 4, 128, NULL);
                if (sc != SLOW_CHECKPOINT) {
                        flink_sim_set_last_checkpoint_age(fl, JOB_A, 1000);
                        flink_sim_set_last_checkpoint_age(fl, JOB_B, 1000);
                }
                if (sc == JM_DOWN)
                        flink_sim_set_down(fl, true);
                if (proc_spawn(&p, (char *[]) { "spotd", "run", a_imds, a_api, a_ca, a_tok, "--node-name=node-a",
                                                "--log-target=stderr", "--health-addr=off", "--verify-timeout=5s", "--flink-url-allow=127.0.0.1",
                                                sc == JM_DOWN ? "--flink-timeout=1s" : sc == SLOW_CHECKPOINT ? "--checkpoint-timeout=1s" : NULL,
                                                NULL }, NULL) < 0 ||
                    !proc_wait_for(&p, "Watching instance", 10000))
                        return -1;
                usleep(200 * 1000);
                imds_sim_set_spot(imds, "terminate", time(NULL) + 120, 0);
                if (!proc_wait_for(&p, "TaskManager pods gone", 30000)) {
                        fprintf(stderr, "run did not finish: %s\n", p.out);
                        return -1;
                }
                /* spotd's own timeline runs from detection. */
                evict[r] = field(p.out, "first eviction sent ");
                accepted[r] = field(p.out, "last accepted ");
                put[r] = field(p.out, "bounds lowered ");
                /* The simulators' clocks: first eviction accepted -> first PUT accepted. */
                uint64_t first, last, pa = flink_sim_first_put(fl, JOB_A), pb = flink_sim_first_put(fl, JOB_B);
                uint64_t first_put = pa && (!pb || pa < pb) ? pa : pb;
                k8s_sim_eviction_window(kube, &first, &last);
                gap[r] = first && first_put ? ((double) first_put - (double) first) / 1000 : -1;
                if (sc == PLAIN)
                        printf("  %s run %u: detection -> evictions sent %.1f ms, -> last eviction accepted %.1f ms, "
                               "-> lowered bounds accepted %.1f ms, first eviction accepted -> PUT accepted %.1f ms, "
                               "checkpoints triggered %u\n",
                               version, r + 1, evict[r], accepted[r], put[r], gap[r],
                               flink_sim_checkpoints_triggered(fl, JOB_A) + flink_sim_checkpoints_triggered(fl, JOB_B));
                else
                        printf("  %s run %u (%s): detection -> evictions sent %.1f ms\n", version, r + 1,
                               sc == JM_DOWN ? "JobManager down" : "checkpoint over its 1 s budget", evict[r]);
                proc_stop(&p, SIGTERM, 5000);
                proc_free(&p);
                k8s_sim_set_terminate_hook(kube, NULL, NULL);
                imds_sim_stop(imds);
                k8s_sim_stop(kube);
                flink_sim_stop(fl);
        }
        qsort(evict, runs, sizeof *evict, cmp_d);
        qsort(accepted, runs, sizeof *accepted, cmp_d);
        qsort(put, runs, sizeof *put, cmp_d);
        qsort(gap, runs, sizeof *gap, cmp_d);
        if (sc == PLAIN) {
                printf("Flink %s median: detection -> evictions sent %.1f ms, -> last accepted %.1f ms, -> PUT accepted %.1f ms "
                       "(max %.1f ms; target both within 150 ms)\n",
                       version, evict[runs / 2], accepted[runs / 2], put[runs / 2], put[runs - 1]);
                if (evict_first) {
                        /* Was test_rescale's "then PUT within a second". */
                        bool ok = gap[0] > 0 && gap[runs - 1] <= 1000;
                        printf("Flink %s: first eviction accepted -> PUT accepted median %.1f ms, max %.1f ms "
                               "(target: after the eviction, within 1000 ms) %s\n",
                               version, gap[runs / 2], gap[runs - 1], ok ? "ok" : "MISSED");
                        missed |= !ok;
                }
        } else {
                /* Was test_rescale's "no waiting on a dead JobManager" (under 3 s)
                 * and "evicted after the 1 s budget" (0.9 to 3 s). */
                double lo = sc == SLOW_CHECKPOINT ? 1000 : 0, hi = 3000;
                bool ok = evict[0] >= lo && evict[runs / 2] <= hi;
                printf("Flink %s, %s: detection -> evictions sent median %.1f ms (min %.1f, max %.1f; target: median "
                       "within %.0f ms%s) %s\n",
                       version, sc == JM_DOWN ? "JobManager down" : "checkpoint over its 1 s budget", evict[runs / 2], evict[0],
                       evict[runs - 1], hi, sc == SLOW_CHECKPOINT ? ", none before the 1 s budget" : "", ok ? "ok" : "MISSED");
                missed |= !ok;
        }
        free(evict);
        free(accepted);
        free(put);
        free(gap);
        return missed;
}

int main(int argc, char **argv) {
        unsigned runs = 5;
        if (argc == 3 && strcmp(argv[1], "--runs") == 0)
                runs = (unsigned) strtoul(argv[2], NULL, 10);
        else if (argc != 1) {
                fprintf(stderr, "usage: %s [--runs N]\n", argv[0]);
                return 2;
        }
        if (runs < 1 || runs > 50)
                return 2;
        setvbuf(stdout, NULL, _IOLBF, 0);
        curl_global_init(CURL_GLOBAL_DEFAULT);
        printf("2-job Flink session cluster, 2 of 4 TaskManagers on the node, checkpoint fresh, %u runs per version\n", runs);
        int missed = 0, r = 0;
        static const struct { const char *version; enum scenario sc; } plan[] = {
                { "1.18.1", PLAIN }, { "2.0.0", PLAIN }, { "1.18.1", JM_DOWN }, { "1.18.1", SLOW_CHECKPOINT },
        };
        for (size_t i = 0; i < ELEMENTSOF(plan) && r >= 0; i++) {
                r = run(plan[i].version, plan[i].sc, runs);
                missed |= r > 0;
        }
        curl_global_cleanup();
        return r < 0 || missed;
}
