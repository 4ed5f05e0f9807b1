/* Soak: the real spotd against the IMDS simulator, all four sources watched,
 * IMDSv2 with a short token lifetime (so the token is renewed all along),
 * polling every 1 ms, for at least --rounds poll rounds (default 300,000),
 * counted by spotd itself (spotd_polls_total on /metrics). Every ~10 s it
 * samples spotd's VmRSS, VmHWM (peak RSS), RssAnon (private memory) and its
 * open file descriptors (/proc/PID/fd), and reads /status and /metrics.
 *
 * After warm-up (the first 10 % of the rounds) the figures must stay flat:
 * the same number of file descriptors at every sample, and RssAnon at most
 * 64 KiB above the warm-up sample. This is a bounded leak check, not a timing
 * assertion: how long the rounds take is only printed. spotd must also stop
 * cleanly (exit 0) at the end.
 *
 *   soak [--rounds N] [--interval-ms MS] [--max-seconds S] [--no-memory-check]
 *
 * --no-memory-check is for sanitizer builds, whose allocators keep freed
 * memory in quarantine by design: the fd and exit checks still apply. */
#include <dirent.h>
#include <stdint.h>

#include "helpers.h"
#include "procstat.h"
#include "imds_sim.h"

#define MAX_SAMPLES 512
#define RSS_ANON_SLACK_KB 64

struct sample {
        double t;     /* seconds since spotd started watching */
        long polls;
        long rss, hwm, anon; /* KiB */
        long fds;
};

static long metric(const char *body, const char *series) {
        char needle[256];
        snprintf(needle, sizeof needle, "\n%s ", series);
        const char *m = body ? strstr(body, needle) : NULL;
        return m ? atol(m + strlen(needle)) : -1;
}

static long read_polls(unsigned port) {
        char *body = NULL;
        long polls = -1;
        if (http_get_port(port, "/metrics", &body) == 200)
                polls = metric(body, "spotd_polls_total");
        free(body);
        return polls;
}

/* fds first: the /status and /metrics requests that follow use a socket of
 * spotd's own for a moment, and the server closes its end of the last one
 * shortly after the client: a count that differs from ref is taken again for
 * up to a second (a leaked fd stays). */
static bool take_sample(struct proc *p, unsigned port, usec_t t0, long ref, struct sample *s) {
        char *body = NULL;
        s->fds = proc_open_fds(p->pid);
        for (int i = 0; ref > 0 && s->fds != ref && i < 20; i++) {
                usleep(50 * 1000);
                s->fds = proc_open_fds(p->pid);
        }
        s->rss = proc_status_kb(p->pid, "VmRSS");
        s->hwm = proc_status_kb(p->pid, "VmHWM");
        s->anon = proc_status_kb(p->pid, "RssAnon");
        s->t = (double) (now_monotonic() - t0) / 1e6;
        bool ok = http_get_port(port, "/status", &body) == 200 && strstr(body, "\"state\":");
        free(body);
        s->polls = read_polls(port);
        return ok && s->polls >= 0 && s->fds > 0 && s->anon > 0;
}

static void print_sample(const struct sample *s, const char *note) {
        printf("%8.1f %10ld %9ld %9ld %9ld %5ld  %s\n", s->t, s->polls, s->rss, s->hwm, s->anon, s->fds, note);
}

int main(int argc, char **argv) {
        unsigned long rounds = 300000, interval_ms = 1, max_seconds = 1200;
        bool memory_check = true;
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--no-memory-check") == 0)
                        memory_check = false;
                else if (i + 1 < argc && strcmp(argv[i], "--rounds") == 0)
                        rounds = strtoul(argv[++i], NULL, 10);
                else if (i + 1 < argc && strcmp(argv[i], "--interval-ms") == 0)
                        interval_ms = strtoul(argv[++i], NULL, 10);
                else if (i + 1 < argc && strcmp(argv[i], "--max-seconds") == 0)
                        max_seconds = strtoul(argv[++i], NULL, 10);
                else {
                        fprintf(stderr, "usage: %s [--rounds N] [--interval-ms MS] [--max-seconds S] [--no-memory-check]\n",
                                argv[0]);
                        return 2;
                }
        }
        if (rounds < 1000 || interval_ms < 1 || max_seconds < 10) {
                fprintf(stderr, "need at least 1000 rounds, 1 ms and 10 s\n");
                return 2;
        }
        setvbuf(stdout, NULL, _IOLBF, 0);
        curl_global_init(CURL_GLOBAL_DEFAULT);

        struct imds_sim *sim;
        struct proc p;
        char url[64], ep[128], iv[64];
        if (imds_sim_start(&(struct imds_sim_options) { .require_v2 = true }, &sim) < 0) {
                fprintf(stderr, "cannot start the IMDS simulator\n");
                return 1;
        }
        /* Answers with bodies on two sources, so every round parses JSON and
         * refreshes a known event, and 404s on the two others. */
        imds_sim_set_lifecycle(sim, "InService");
        imds_sim_add_scheduled(sim, "system-maintenance", "active", "instance-event-0soak", time(NULL) + 86400,
                               time(NULL) + 90000);
        imds_sim_url(sim, url, sizeof url);
        snprintf(ep, sizeof ep, "--imds-endpoint=%s", url);
        snprintf(iv, sizeof iv, "--poll-interval=%lums", interval_ms);
        if (proc_spawn(&p, (char *[]) { "spotd", "run", ep, "--node-name=soak", iv, "--imds-token-ttl=5s",
                                        "--log-target=stderr", "--health-addr=127.0.0.1:0", "--dry-run", NULL },
                       NULL) < 0) {
                fprintf(stderr, "cannot start spotd\n");
                return 1;
        }
        unsigned port = proc_health_port(&p);
        if (!port || !proc_wait_for(&p, "Watching instance", 10000)) {
                fprintf(stderr, "spotd did not start:\n%s\n", p.out ? p.out : "");
                proc_stop(&p, SIGKILL, 1000);
                return 1;
        }

        static struct sample samples[MAX_SAMPLES];
        size_t n = 0, base = SIZE_MAX;
        unsigned long warmup = rounds / 10;
        usec_t t0 = now_monotonic(), next = t0;
        int failures = 0;
        printf("soak: spotd polling all 4 sources every %lu ms, IMDSv2 (token renewed every 5 s), until %lu rounds\n",
               interval_ms, rounds);
        printf("  warm-up: the first %lu rounds; then fds must stay equal and RssAnon within %d KiB%s\n", warmup,
               RSS_ANON_SLACK_KB, memory_check ? "" : " (memory not checked: sanitizer build)");
        printf("%8s %10s %9s %9s %9s %5s\n", "time_s", "polls", "VmRSS_kB", "VmHWM_kB", "Anon_kB", "fds");
        for (;;) {
                proc_pump(&p, 100);
                if (p.fd < 0) {
                        fprintf(stderr, "spotd exited early:\n%s\n", p.out ? p.out : "");
                        return 1;
                }
                usec_t now = now_monotonic();
                long polls = -1;
                bool last = false;
                if (now < next) {
                        /* Between samples, only look for the end. */
                        if ((now - t0) / USEC_PER_MSEC % 1000 < 100) {
                                polls = read_polls(port);
                                last = polls >= (long) rounds;
                        }
                        if (!last)
                                continue;
                }
                if (n == MAX_SAMPLES || now - t0 > max_seconds * USEC_PER_SEC) {
                        fprintf(stderr, "soak: %lu rounds not reached within %lu s\n", rounds, max_seconds);
                        failures++;
                        break;
                }
                struct sample *s = &samples[n];
                if (!take_sample(&p, port, t0, base == SIZE_MAX ? 0 : samples[base].fds, s)) {
                        fprintf(stderr, "soak: cannot sample spotd (pid %d)\n", (int) p.pid);
                        failures++;
                        break;
                }
                const char *note = "";
                if (base == SIZE_MAX && s->polls >= (long) warmup) {
                        base = n;
                        note = "<- warm-up done: reference";
                }
                n++;
                next = now + 10 * USEC_PER_SEC;
                last = s->polls >= (long) rounds;
                if (last)
                        note = "<- end";
                print_sample(s, note);
                if (last)
                        break;
        }

        uint64_t requests = imds_sim_requests(sim, NULL), tokens = imds_sim_token_requests(sim),
                 conns = imds_sim_connections(sim);
        int st = proc_stop(&p, SIGTERM, 10000);
        if (st != 0) {
                fprintf(stderr, "soak: spotd did not exit cleanly (status %d):\n%s\n", st, p.out ? p.out : "");
                failures++;
        }
        if (base == SIZE_MAX || n < 2) {
                fprintf(stderr, "soak: no sample after warm-up\n");
                failures++;
        } else {
                const struct sample *b = &samples[base], *e = &samples[n - 1];
                long max_anon = b->anon;
                for (size_t i = base; i < n; i++) {
                        if (samples[i].fds != b->fds) {
                                fprintf(stderr, "soak: %ld open fds at %.0f s, %ld after warm-up\n", samples[i].fds,
                                        samples[i].t, b->fds);
                                failures++;
                        }
                        if (samples[i].anon > max_anon)
                                max_anon = samples[i].anon;
                }
                if (memory_check && max_anon - b->anon > RSS_ANON_SLACK_KB) {
                        fprintf(stderr, "soak: RssAnon grew by %ld KiB after warm-up (at most %d allowed)\n",
                                max_anon - b->anon, RSS_ANON_SLACK_KB);
                        failures++;
                }
                double secs = e->t, rate = (double) e->polls / (secs > 0 ? secs : 1);
                printf("soak figures:\n");
                printf("  poll rounds         %ld in %.1f s (%.0f rounds/s, %.3f ms a round)\n", e->polls, secs, rate,
                       1000.0 / rate);
                printf("  metadata requests   %llu GETs + %llu token PUTs over %llu TCP connections\n",
                       (unsigned long long) requests, (unsigned long long) tokens, (unsigned long long) conns);
                printf("  VmRSS               %ld KiB after warm-up -> %ld KiB at end (%+ld)\n", b->rss, e->rss,
                       e->rss - b->rss);
                printf("  VmHWM (peak RSS)    %ld KiB after warm-up -> %ld KiB at end (%+ld)\n", b->hwm, e->hwm,
                       e->hwm - b->hwm);
                printf("  RssAnon             %ld KiB after warm-up -> %ld KiB at end (max %+ld)\n", b->anon, e->anon,
                       max_anon - b->anon);
                printf("  open fds            %ld after warm-up -> %ld at end\n", b->fds, e->fds);
        }
        proc_free(&p);
        imds_sim_stop(sim);
        curl_global_cleanup();
        printf("soak: %s\n", failures ? "FAILED" : "passed");
        return failures ? 1 : 0;
}
