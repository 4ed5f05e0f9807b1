/* Benchmark of the idle path and of detection, printed as figures (no
 * assertions: these machines are noisy). Runs the real spotd binary against
 * the IMDS simulator on loopback.
 *
 *   bench_imds [--requests N] [--trials-default N] [--trials-100ms N]
 *
 * 1. CPU (user+sys of the spotd process) per metadata request over at least
 *    N requests, all four sources enabled, polling every 1 ms; private memory
 *    (RssAnon) after warm-up and at the end, and peak RSS (VmHWM).
 * 2. Notice-to-detection latency (p50/p99/max) at the default 1 s interval
 *    and at 100 ms: the notice is posted at a random phase of the poll cycle;
 *    detection is the moment the notice line is read from spotd's output. */
#include <math.h>
#include <stdint.h>

#include "helpers.h"
#include "imds_sim.h"

static long proc_status_kb(pid_t pid, const char *key) {
        char path[64], line[256];
        long v = -1;
        snprintf(path, sizeof path, "/proc/%d/status", (int) pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return -1;
        while (fgets(line, sizeof line, f))
                if (strncmp(line, key, strlen(key)) == 0 && line[strlen(key)] == ':')
                        v = atol(line + strlen(key) + 1);
        fclose(f);
        return v;
}

static double proc_cpu_seconds(pid_t pid) {
        char path[64], buf[2048];
        snprintf(path, sizeof path, "/proc/%d/stat", (int) pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return -1;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        const char *p = strrchr(buf, ')'); /* comm may hold spaces */
        unsigned long ut = 0, st = 0;
        if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
                return -1;
        return (double) (ut + st) / (double) sysconf(_SC_CLK_TCK);
}

static uint64_t sim_total(struct imds_sim *sim) {
        return imds_sim_requests(sim, NULL) + imds_sim_token_requests(sim);
}

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;
        return x < y ? -1 : x > y;
}

static double pct(const double *v, size_t n, double p) {
        size_t i = (size_t) ceil(p * (double) n) - 1;
        return v[i < n ? i : n - 1];
}

static int bench_cpu(unsigned long requests) {
        struct imds_sim *sim;
        struct proc p;
        char url[64], ep[128];

        if (imds_sim_start(&(struct imds_sim_options) { .require_v2 = true }, &sim) < 0)
                return 1;
        imds_sim_url(sim, url, sizeof url);
        snprintf(ep, sizeof ep, "--imds-endpoint=%s", url);
        if (proc_spawn(&p, (char *[]) { "spotd", "run", ep, "--node-name=bench", "--poll-interval=1ms",
                                        "--log-target=stderr", "--health-addr=127.0.0.1:0", "--dry-run", NULL },
                       NULL) < 0)
                return 1;
        /* Warm-up: the first thousand requests (connection, token, page faults). */
        while (sim_total(sim) < 1000)
                proc_pump(&p, 10);
        double cpu0 = proc_cpu_seconds(p.pid);
        uint64_t req0 = sim_total(sim);
        long anon0 = proc_status_kb(p.pid, "RssAnon"), rss0 = proc_status_kb(p.pid, "VmRSS");
        usec_t t0 = now_monotonic();
        while (sim_total(sim) - req0 < requests)
                proc_pump(&p, 10);
        double cpu1 = proc_cpu_seconds(p.pid);
        uint64_t req1 = sim_total(sim);
        usec_t t1 = now_monotonic();
        long anon1 = proc_status_kb(p.pid, "RssAnon"), hwm = proc_status_kb(p.pid, "VmHWM");
        uint64_t conns = imds_sim_connections(sim);
        proc_stop(&p, SIGTERM, 5000);

        double per = (cpu1 - cpu0) / (double) (req1 - req0) * 1e6;
        printf("idle polling, all 4 sources, 1 ms interval, IMDSv2 required\n");
        printf("  requests measured        %llu in %.2f s (%llu TCP connections in all)\n",
               (unsigned long long) (req1 - req0), (double) (t1 - t0) / 1e6, (unsigned long long) conns);
        printf("  CPU per request          %.1f us (user+sys %.3f s)\n", per, cpu1 - cpu0);
        printf("  private memory RssAnon   %ld KiB after warm-up, %ld KiB at end (%+ld KiB)\n", anon0, anon1,
               anon1 - anon0);
        printf("  resident set             %ld KiB after warm-up, peak VmHWM %ld KiB\n", rss0, hwm);
        proc_free(&p);
        imds_sim_stop(sim);
        return 0;
}

static int bench_latency(const char *interval, usec_t interval_us, unsigned trials) {
        struct imds_sim *sim;
        struct proc p;
        char url[64], ep[128], iv[64];
        double *lat = calloc(trials, sizeof *lat);

        if (!lat || imds_sim_start(NULL, &sim) < 0)
                return 1;
        imds_sim_url(sim, url, sizeof url);
        snprintf(ep, sizeof ep, "--imds-endpoint=%s", url);
        snprintf(iv, sizeof iv, "--poll-interval=%s", interval);
        if (proc_spawn(&p, (char *[]) { "spotd", "run", ep, "--node-name=bench", iv, "--log-target=stderr",
                                        "--health-addr=off", "--dry-run", NULL }, NULL) < 0)
                return 1;
        if (!proc_wait_for(&p, "Watching instance", 10000))
                return 1;
        srandom((unsigned) now_monotonic());
        for (unsigned i = 0; i < trials; i++) {
                usleep((useconds_t) ((unsigned long) random() % interval_us));
                imds_sim_set_spot(sim, "terminate", time(NULL) + 120, 0);
                usec_t t0 = now_monotonic();
                if (!proc_wait_for_n(&p, "Spot interruption notice", (int) i + 1, (int) (interval_us / 1000) * 3 + 1000)) {
                        fprintf(stderr, "trial %u: notice not detected\n", i);
                        return 1;
                }
                lat[i] = (double) (now_monotonic() - t0) / 1000.0;
                imds_sim_set_spot(sim, NULL, 0, 0);
                if (!proc_wait_for_n(&p, "is no longer served", (int) i + 1, (int) (interval_us / 1000) * 3 + 1000))
                        return 1;
        }
        proc_stop(&p, SIGTERM, 5000);
        qsort(lat, trials, sizeof *lat, cmp_double);
        printf("notice-to-detection latency, poll interval %s, %u trials\n", interval, trials);
        printf("  p50 %.1f ms   p99 %.1f ms   max %.1f ms   (target p99 <= %.0f ms)\n", pct(lat, trials, 0.5),
               pct(lat, trials, 0.99), lat[trials - 1], (double) interval_us / 1000 + 5);
        free(lat);
        proc_free(&p);
        imds_sim_stop(sim);
        return 0;
}

int main(int argc, char **argv) {
        unsigned long requests = 20000;
        unsigned trials_default = 60, trials_fast = 300;
        for (int i = 1; i + 1 < argc; i += 2) {
                if (strcmp(argv[i], "--requests") == 0)
                        requests = strtoul(argv[i + 1], NULL, 10);
                else if (strcmp(argv[i], "--trials-default") == 0)
                        trials_default = (unsigned) strtoul(argv[i + 1], NULL, 10);
                else if (strcmp(argv[i], "--trials-100ms") == 0)
                        trials_fast = (unsigned) strtoul(argv[i + 1], NULL, 10);
                else {
                        fprintf(stderr, "usage: %s [--requests N] [--trials-default N] [--trials-100ms N]\n", argv[0]);
                        return 2;
                }
        }
        if (requests < 10000 || trials_default < 1 || trials_fast < 1) {
                fprintf(stderr, "need at least 10000 requests and 1 trial\n");
                return 2;
        }
        setvbuf(stdout, NULL, _IOLBF, 0);
        curl_global_init(CURL_GLOBAL_DEFAULT);
        int r = bench_cpu(requests);
        if (r == 0 && trials_default)
                r = bench_latency("1s", USEC_PER_SEC, trials_default);
        if (r == 0 && trials_fast)
                r = bench_latency("100ms", 100 * USEC_PER_MSEC, trials_fast);
        curl_global_cleanup();
        return r;
}
