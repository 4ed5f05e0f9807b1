/* Soak of the handling: the real spotd against the IMDS and Kubernetes API
 * simulators through --cycles notice/cancel cycles (default 1,000). Each
 * cycle posts a scheduled instance-reboot (full handling), waits until the
 * node carries its fence, cancels it and waits until spotd has removed the
 * fence. Every 100 cycles it samples spotd's RssAnon (private memory) and its
 * open file descriptors. spotd keeps one API connection (so the pool cannot
 * grow and shrink between samples). The first half is warm-up: after it
 * private memory must stay within 64 KiB of the highest warm-up sample past
 * the first 10 % (allocator arenas settle first), and the descriptors equal
 * to the last warm-up sample.
 * A bounded leak check, not a timing assertion: how long it takes is only
 * printed. spotd must also stop cleanly.
 *
 *   soak_handling [--cycles N] [--no-memory-check] */
#include <cjson/cJSON.h>
#include <dirent.h>

#include "helpers.h"
#include "procstat.h"
#include "simargs.h"

#define RSS_ANON_SLACK_KB 64

/* The node's spotd.io/event-id, "" when none. */
static void fence_of(struct k8s_sim *kube, char *buf, size_t len) {
        char *s = k8s_sim_node_json(kube, "node-a");
        cJSON *n = cJSON_Parse(s);
        const char *id = cJSON_GetStringValue(
                cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(n, "metadata"), "annotations"), "spotd.io/event-id"));
        snprintf(buf, len, "%s", id ? id : "");
        cJSON_Delete(n);
        free(s);
}

static bool wait_fence(struct proc *p, struct k8s_sim *kube, const char *want) {
        usec_t end = now_monotonic() + (usec_t) test_ms(20000) * USEC_PER_MSEC;
        char id[128];
        for (;;) {
                fence_of(kube, id, sizeof id);
                if (want ? strstr(id, want) != NULL : id[0] == 0)
                        return true;
                if (now_monotonic() > end || p->fd < 0)
                        return false;
                proc_pump(p, 2);
        }
}

int main(int argc, char **argv) {
        unsigned long cycles = 1000;
        bool memory_check = true;
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--cycles") == 0 && i + 1 < argc)
                        cycles = strtoul(argv[++i], NULL, 10);
                else if (strcmp(argv[i], "--no-memory-check") == 0)
                        memory_check = false;
                else {
                        fprintf(stderr, "usage: %s [--cycles N] [--no-memory-check]\n", argv[0]);
                        return 2;
                }
        }
        if (cycles < 20 || cycles > 100000)
                return 2;
        setvbuf(stdout, NULL, _IOLBF, 0);
        curl_global_init(CURL_GLOBAL_DEFAULT);
        struct imds_sim *imds;
        struct k8s_sim *kube;
        struct sim_args a;
        struct proc p;
        if (imds_sim_start(NULL, &imds) < 0 || k8s_sim_start(&(struct k8s_sim_options) { .grace_ms_per_s = 10 }, &kube) < 0)
                return 1;
        sim_args_fill(&a, imds, kube);
        k8s_sim_add_node(kube, "node-a", NULL);
        /* Log only what goes wrong: a thousand cycles of info lines would
         * only fill the pipe. */
        if (proc_spawn(&p, (char *[]) { "spotd", "run", a.imds, a.api, a.ca, a.token, "--node-name=node-a",
                                        "--poll-interval=5ms", "--log-target=stderr", "--log-level=warning",
                                        "--health-addr=off", "--no-watch-spot", "--no-watch-rebalance", "--no-watch-asg",
                                        "--kube-max-connections=1",
                                        NULL }, NULL) < 0)
                return 1;
        unsigned long settle = cycles / 10, warmup = cycles / 2;
        long base_anon = -1, max_anon = -1, max_warm_fds = -1, last_fds = -1;
        int failures = 0;
        usec_t t0 = now_monotonic();
        printf("soak_handling: %lu notice/cancel cycles (scheduled instance-reboot, canceled once fenced), "
               "polling every 5 ms\n", cycles);
        printf("%8s %9s %5s\n", "cycles", "Anon_kB", "fds");
        for (unsigned long c = 1; c <= cycles; c++) {
                char ev[64];
                snprintf(ev, sizeof ev, "instance-event-%08lx", c);
                imds_sim_clear_scheduled(imds);
                imds_sim_add_scheduled(imds, "instance-reboot", "active", ev, time(NULL) + 3600, 0);
                if (!wait_fence(&p, kube, ev)) {
                        fprintf(stderr, "cycle %lu: no fence for %s:\n%s\n%s\n", c, ev, p.out ? p.out : "", k8s_sim_log(kube));
                        failures++;
                        break;
                }
                imds_sim_clear_scheduled(imds);
                imds_sim_add_scheduled(imds, "instance-reboot", "canceled", ev, time(NULL) + 3600, 0);
                if (!wait_fence(&p, kube, NULL)) {
                        fprintf(stderr, "cycle %lu: fence of %s not removed:\n%s\n", c, ev, p.out ? p.out : "");
                        failures++;
                        break;
                }
                if (c % 100 && c != warmup && c != settle)
                        continue;
                long anon = proc_status_kb(p.pid, "RssAnon"), fds = proc_open_fds(p.pid);
                printf("%8lu %9ld %5ld%s\n", c, anon, fds, c == warmup ? "  <- warm-up done: reference" : "");
                if (c <= warmup) {
                        max_warm_fds = fds;
                        if (c >= settle && anon > base_anon)
                                base_anon = max_anon = anon;
                        continue;
                }
                if (anon > max_anon)
                        max_anon = anon;
                if (fds != max_warm_fds) {
                        fprintf(stderr, "soak_handling: %ld open fds after %lu cycles, %ld after warm-up\n", fds, c,
                                max_warm_fds);
                        failures++;
                }
                last_fds = fds;
        }
        double secs = (double) (now_monotonic() - t0) / 1e6;
        if (memory_check && base_anon >= 0 && max_anon - base_anon > RSS_ANON_SLACK_KB) {
                fprintf(stderr, "soak_handling: RssAnon grew by %ld KiB after warm-up (at most %d allowed)\n",
                        max_anon - base_anon, RSS_ANON_SLACK_KB);
                failures++;
        }
        unsigned patches = k8s_sim_requests(kube, "PATCH", "/api/v1/nodes/node-a"), lists = k8s_sim_requests(kube, "GET", "/api/v1/pods");
        int st = proc_stop(&p, SIGTERM, 10000);
        if (st != 0) {
                fprintf(stderr, "soak_handling: spotd did not exit cleanly (status %d):\n%s\n", st, p.out ? p.out : "");
                failures++;
        }
        if (!failures) {
                printf("soak_handling figures:\n");
                printf("  cycles              %lu in %.1f s (%.1f ms a cycle)\n", cycles, secs, secs * 1000 / (double) cycles);
                printf("  node PATCHes        %u (fence and undo), pod lists %u\n", patches, lists);
                printf("  RssAnon             %ld KiB at most during warm-up, at most %+ld KiB later%s\n", base_anon,
                       max_anon - base_anon, memory_check ? "" : " (not checked: sanitizer build)");
                printf("  open fds            %ld after warm-up, %ld at the end\n", max_warm_fds, last_fds);
        }
        proc_free(&p);
        imds_sim_stop(imds);
        k8s_sim_stop(kube);
        curl_global_cleanup();
        printf("soak_handling: %s\n", failures ? "FAILED" : "passed");
        return failures ? 1 : 0;
}
