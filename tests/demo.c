/* The demo: the real spotd binary, on its defaults, against the bundled IMDS
 * simulator on loopback. Prints a timeline of a spot interruption from the
 * moment the notice appears. Exits 0 when every step was seen. */
#include <cjson/cJSON.h>

#include "helpers.h"
#include "imds_sim.h"

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

int main(void) {
        struct imds_sim *sim;
        struct proc p;
        char url[64], ep[128], *body = NULL;
        size_t shown = 0;
        int ok = 1;

        setvbuf(stdout, NULL, _IOLBF, 0);
        curl_global_init(CURL_GLOBAL_DEFAULT);
        printf("spotd demo: the real spotd binary against the bundled EC2 metadata simulator (loopback only)\n\n");
        T0 = now_realtime();
        if (imds_sim_start(&(struct imds_sim_options) { .require_v2 = true }, &sim) < 0) {
                fprintf(stderr, "cannot start the simulator\n");
                return 1;
        }
        imds_sim_url(sim, url, sizeof url);
        say("simulator", "metadata service listening on %s (IMDSv2 required, nothing pending)", url);

        /* Defaults everywhere but where the demo must differ: the endpoint,
         * a node name, a free HTTP port, JSON lines to read back. */
        snprintf(ep, sizeof ep, "--imds-endpoint=%s", url);
        if (proc_spawn(&p, (char *[]) { "spotd", "run", ep, "--node-name=ip-10-0-1-23.ec2.internal",
                                        "--health-addr=127.0.0.1:0", "--log-target=stderr", "--log-format=json",
                                        NULL }, NULL) < 0)
                return 1;
        say("demo", "started: spotd run %s --node-name=ip-10-0-1-23.ec2.internal --health-addr=127.0.0.1:0 "
                    "--log-format=json (poll interval: default 1 s)", ep);
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
        say("demo", "detected %.0f ms after the notice appeared", (double) (now_realtime() - T0) / 1000.0);
        ok &= expect(&p, &shown, "plan: cordon", 1000);

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
                                       "spotd_last_poll_timestamp_seconds", "process_resident_memory_bytes" };
                for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
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

        sleep(2);
        imds_sim_set_spot(sim, NULL, 0, 0);
        say("simulator", "notice withdrawn (the instance was not reclaimed after all)");
        ok &= expect(&p, &shown, "is no longer served", 3000);

        int st = proc_stop(&p, SIGTERM, 5000);
        shown = echo_lines(&p, shown);
        say("demo", "sent SIGTERM: spotd exited with status %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
        ok &= WIFEXITED(st) && WEXITSTATUS(st) == 0;
        printf("\n%s\n", ok ? "demo finished: every step was seen"
                            : "demo FAILED: a step above is missing");
        proc_free(&p);
        imds_sim_stop(sim);
        curl_global_cleanup();
        return ok ? 0 : 1;
}
