/* The real spotd binary against the metadata simulator on loopback. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>

#include <sys/socket.h>
#include <sys/un.h>

#include "helpers.h"
#include "imds_sim.h"

static struct imds_sim *sim;
static char endpoint[128];

static void start(void) {
        cr_assert_eq(imds_sim_start(NULL, &sim), 0);
        char url[64];
        imds_sim_url(sim, url, sizeof url);
        snprintf(endpoint, sizeof endpoint, "--imds-endpoint=%s", url);
}
static void stop(void) { sim = imds_sim_stop(sim); }

TestSuite(integration, .init = start, .fini = stop, .timeout = 60);

#define SPOT_PATH "/latest/meta-data/spot/instance-action"
#define REBALANCE_PATH "/latest/meta-data/events/recommendations/rebalance"

/* Waits for n more requests to path: "nothing more is logged" is checked
 * over a number of polls, not over a stretch of time. */
static bool more_polls(const char *path, unsigned n) {
        uint64_t n0 = imds_sim_requests(sim, path);
        return eventually(imds_sim_requests(sim, path) >= n0 + n, 10000);
}

#define AGENT_ARGS(...) (char *[]) { "spotd", "run", endpoint, "--node-name=node-a", "--poll-interval=50ms", \
                                     "--log-target=stderr", "--log-format=json", "--health-addr=127.0.0.1:0", \
                                     __VA_ARGS__, NULL }

/* Each kind is detected once and logged once, in v2-only and in v1 mode. */
static void detect_all_kinds(bool v2_only) {
        struct proc p;
        imds_sim_set_require_v2(sim, v2_only);
        if (!v2_only)
                imds_sim_set_token_mode(sim, SIM_TOKEN_403);
        cr_assert_eq(proc_spawn(&p, AGENT_ARGS("--dry-run"), NULL), 0);
        cr_assert(proc_wait_for(&p, "Watching instance i-0123456789abcdef0", 5000), "%s", p.out);

        imds_sim_set_spot(sim, "terminate", time(NULL) + 120, 0);
        cr_assert(proc_wait_for(&p, "Spot interruption notice", 3000), "%s", p.out);
        imds_sim_set_rebalance(sim, time(NULL), 0);
        cr_assert(proc_wait_for(&p, "Rebalance recommendation", 3000), "%s", p.out);
        imds_sim_add_scheduled(sim, "instance-retirement", "active", "instance-event-0123456789abcdef0",
                               time(NULL) + 3600, time(NULL) + 7200);
        cr_assert(proc_wait_for(&p, "Scheduled maintenance instance-retirement", 3000), "%s", p.out);
        imds_sim_set_lifecycle(sim, "Terminated");
        cr_assert(proc_wait_for(&p, "Auto Scaling lifecycle state is Terminated", 3000), "%s", p.out);

        cr_assert(more_polls(SPOT_PATH, 10), "10 more polls: nothing is logged twice");
        proc_pump(&p, 0);
        cr_assert_eq(proc_count(&p, "\"message_id\":\"e4c9da6bf184496cb8c964249990883f\""), 1, "%s", p.out);
        cr_assert_eq(proc_count(&p, "\"message_id\":\"81027988cdfa409e8e14c74a364930bc\""), 1);
        cr_assert_eq(proc_count(&p, "\"message_id\":\"7bd8e1dc92e3470781b215968b88de30\""), 1);
        cr_assert_eq(proc_count(&p, "\"message_id\":\"f79f308f398b49c5bd2bd5e1e0c27efa\""), 1);
        cr_assert_eq(proc_count(&p, "Spot interruption notice"), 1);
        /* Without an API a dry run still says which requests it would send. */
        cr_assert(strstr(p.out, "dry run: would read node node-a"), "%s", p.out);
        cr_assert_eq(proc_count(&p, "dry run: would cordon node node-a"), 4, "%s", p.out);
        cr_assert(strstr(p.out, v2_only ? "Using IMDSv2" : "using IMDSv1"), "%s", p.out);
        cr_assert_eq(proc_count(&p, "\"level\":\"err\""), 0, "%s", p.out);

        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0, "clean exit 0 on SIGTERM: %s", p.out);
        cr_assert(strstr(p.out, "stopping"));
        proc_free(&p);
}

Test(integration, detects_every_kind_once_v2_only) { detect_all_kinds(true); }
Test(integration, detects_every_kind_once_v1) { detect_all_kinds(false); }

Test(integration, endpoints_reflect_the_event) {
        struct proc p;
        char *body;
        cr_assert_eq(proc_spawn(&p, AGENT_ARGS("--dry-run"), NULL), 0);
        unsigned port = proc_health_port(&p);
        cr_assert_gt(port, 0, "%s", p.out);
        cr_assert(proc_wait_for(&p, "Watching instance", 5000));
        cr_assert(eventually(http_get_port(port, "/readyz", NULL) == 200, 5000), "ready after a poll: %s", p.out);
        cr_assert_eq(http_get_port(port, "/healthz", NULL), 200);

        time_t deadline = time(NULL) + 120;
        imds_sim_set_spot(sim, "terminate", deadline, 0);
        cr_assert(proc_wait_for(&p, "Spot interruption notice", 3000));
        /* The notice line comes first, the plan's end just after it (later
         * still under a sanitizer or valgrind). */
        body = NULL;
        eventually((free(body), http_get_port(port, "/status", &body) == 200 && strstr(body, "\"phase\":\"done\"")), 3000);
        cJSON *j = cJSON_Parse(body);
        cr_assert_not_null(j, "%s", body);
        cJSON *ev = cJSON_GetObjectItem(j, "current_event");
        cr_assert(cJSON_IsObject(ev), "%s", body);
        cr_assert_str_eq(cJSON_GetObjectItem(ev, "id")->valuestring, "spot-i-0123456789abcdef0-terminate");
        cr_assert_str_eq(cJSON_GetObjectItem(ev, "kind")->valuestring, "spot-interruption");
        /* A dry run without an API walks the plan to its end at once. */
        cr_assert_str_eq(cJSON_GetObjectItem(j, "phase")->valuestring, "done");
        cr_assert_str_eq(cJSON_GetObjectItem(j, "node")->valuestring, "node-a");
        cJSON_Delete(j);
        free(body);

        cr_assert_eq(http_get_port(port, "/metrics", &body), 200);
        cr_assert(strstr(body, "spotd_notices_total{kind=\"spot-interruption\"} 1\n"), "%s", body);
        cr_assert(strstr(body, "spotd_build_info{"));
        /* One count per HTTP request: compare with what the simulator saw. */
        const char *m = strstr(body, "spotd_imds_requests_total{source=\"spot\",result=\"not_found\"} ");
        cr_assert_not_null(m, "%s", body);
        free(body);

        /* Later polls of the same notice keep the handler's phase. */
        cr_assert(more_polls(SPOT_PATH, 5));
        cr_assert_eq(http_get_port(port, "/status", &body), 200);
        cr_assert(strstr(body, "\"phase\":\"done\""), "%s", body);
        free(body);

        imds_sim_set_spot(sim, NULL, 0, 0);
        cr_assert(proc_wait_for(&p, "is no longer served", 3000), "%s", p.out);
        /* /status follows the log line. */
        body = NULL;
        eventually((free(body), http_get_port(port, "/status", &body) == 200 && strstr(body, "\"current_event\":null")), 3000);
        j = cJSON_Parse(body);
        cr_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "current_event")), "%s", body);
        cJSON_Delete(j);
        free(body);
        cr_assert_eq(proc_stop(&p, SIGINT, 5000), 0);
        proc_free(&p);
}

/* The value of a sample line (not of a # HELP line naming the same metric). */
static long metric(const char *body, const char *series) {
        char needle[256];
        snprintf(needle, sizeof needle, "\n%s", series);
        const char *m = strstr(body, needle);
        return m ? atol(m + strlen(needle)) : -1;
}

Test(integration, request_counter_matches_simulator) {
        struct proc p;
        char *body;
        /* A 1 h interval: exactly one round, so both sides can be compared. */
        cr_assert_eq(proc_spawn(&p, (char *[]) { "spotd", endpoint, "--node-name=node-a", "--poll-interval=1h",
                                                 "--log-target=stderr", "--health-addr=127.0.0.1:0", "--dry-run", NULL },
                                NULL), 0);
        unsigned port = proc_health_port(&p);
        cr_assert(proc_wait_for(&p, "Using IMDSv2", 5000), "%s", p.out);
        /* The round's end is published just after its last log line. */
        for (int i = 0; i < 100; i++) {
                cr_assert_eq(http_get_port(port, "/metrics", &body), 200);
                if (metric(body, "spotd_polls_total ") == 1)
                        break;
                free(body);
                usleep(20 * 1000);
        }
        cr_assert_eq(metric(body, "spotd_imds_requests_total{source=\"spot\",result=\"not_found\"} "),
                     (long) imds_sim_requests(sim, "/latest/meta-data/spot/instance-action"), "%s", body);
        cr_assert_eq(metric(body, "spotd_imds_requests_total{source=\"token\",result=\"ok\"} "),
                     (long) imds_sim_token_requests(sim));
        cr_assert_eq(metric(body, "spotd_imds_requests_total{source=\"identity\",result=\"ok\"} "), 1);
        cr_assert_eq(metric(body, "spotd_imds_request_duration_seconds_count "),
                     (long) (imds_sim_requests(sim, NULL) + imds_sim_token_requests(sim)));
        cr_assert_eq(metric(body, "spotd_polls_total "), 1);
        free(body);
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

Test(integration, same_event_id_across_restarts) {
        char ids[2][128];
        imds_sim_set_spot_time_drift(sim, true);
        imds_sim_set_spot(sim, "terminate", time(NULL) + 120, 0);
        for (int i = 0; i < 2; i++) {
                struct proc p;
                cr_assert_eq(proc_spawn(&p, AGENT_ARGS("--dry-run"), NULL), 0);
                cr_assert(proc_wait_for(&p, "Spot interruption notice", 5000), "%s", p.out);
                /* The time drifts on every poll: still one event. */
                cr_assert(more_polls(SPOT_PATH, 5));
                proc_pump(&p, 0);
                cr_assert_eq(proc_count(&p, "Spot interruption notice"), 1, "%s", p.out);
                const char *e = strstr(strstr(p.out, "Spot interruption notice"), "\"event_id\":\"");
                cr_assert_not_null(e);
                snprintf(ids[i], sizeof ids[i], "%.*s", (int) strcspn(e + 12, "\""), e + 12);
                cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
                proc_free(&p);
        }
        cr_assert_str_eq(ids[0], ids[1]);
}

/* A service that recomputes noticeTime on every answer (AWS's own mock
 * does): one recommendation, one notice, one plan, never "no longer served";
 * /status keeps the first noticeTime seen. */
Test(integration, rebalance_notice_time_drift_is_one_event) {
        struct proc p;
        char url[96], *first = NULL, *later = NULL, *body = NULL;
        imds_sim_url(sim, url, sizeof url);
        strcat(url, REBALANCE_PATH);
        imds_sim_set_rebalance_time_drift(sim, true);
        imds_sim_set_rebalance(sim, time(NULL) - 60, 0);
        cr_assert_eq(proc_spawn(&p, AGENT_ARGS("--dry-run"), NULL), 0);
        unsigned port = proc_health_port(&p);
        cr_assert(proc_wait_for(&p, "Rebalance recommendation issued at", 5000), "%s", p.out);
        cr_assert_eq(http_request("GET", url, &first), 200);
        /* Polls on while the served noticeTime changes under them. */
        cr_assert(eventually((free(later), later = NULL, http_request("GET", url, &later) == 200 && strcmp(first, later) != 0),
                             10000), "the simulator recomputes noticeTime: %s", first);
        cr_assert(more_polls(REBALANCE_PATH, 5));
        proc_pump(&p, 0);
        cr_assert_eq(proc_count(&p, "\"message_id\":\"81027988cdfa409e8e14c74a364930bc\""), 1, "%s", p.out);
        cr_assert_eq(proc_count(&p, "dry run: would cordon node node-a"), 1, "%s", p.out);
        cr_assert_eq(proc_count(&p, "is no longer served"), 0, "%s", p.out);
        cr_assert_eq(http_get_port(port, "/metrics", &body), 200);
        cr_assert(strstr(body, "spotd_notices_total{kind=\"rebalance-recommendation\"} 1\n"), "%s", body);
        free(body);

        /* The logged noticeTime is the first one served, and /status agrees. */
        const char *at = strstr(p.out, "Rebalance recommendation issued at ") + strlen("Rebalance recommendation issued at ");
        char logged[32];
        snprintf(logged, sizeof logged, "%.20s", at);
        cr_assert_eq(http_get_port(port, "/status", &body), 200);
        cJSON *j = cJSON_Parse(body);
        cJSON *ev = cJSON_GetObjectItem(j, "current_event");
        cr_assert(cJSON_IsObject(ev), "%s", body);
        cr_assert_str_eq(cJSON_GetObjectItem(ev, "id")->valuestring, "rebalance-i-0123456789abcdef0");
        cr_assert_str_eq(cJSON_GetObjectItem(ev, "notice_time")->valuestring, logged, "%s", body);
        cJSON_Delete(j);
        free(body);
        free(first);
        free(later);
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

Test(integration, canceled_maintenance_is_logged) {
        struct proc p;
        imds_sim_add_scheduled(sim, "system-reboot", "active", "instance-event-0aaa", time(NULL) + 600, 0);
        cr_assert_eq(proc_spawn(&p, AGENT_ARGS("--dry-run"), NULL), 0);
        cr_assert(proc_wait_for(&p, "Scheduled maintenance system-reboot", 5000), "%s", p.out);
        imds_sim_clear_scheduled(sim);
        imds_sim_add_scheduled(sim, "system-reboot", "canceled", "instance-event-0aaa", time(NULL) + 600, 0);
        cr_assert(proc_wait_for(&p, "was canceled", 3000), "%s", p.out);
        cr_assert(proc_wait_for(&p, "dry run: would remove spotd's cordon, taint and annotations", 3000), "%s", p.out);
        cr_assert_eq(proc_count(&p, "was canceled"), 1);
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

/* Broken answers: one error per failure streak, the agent keeps running and
 * healthy, and it detects the notice once the service answers well again. */
Test(integration, faults_logged_once_and_survived) {
        struct proc p;
        cr_assert_eq(proc_spawn(&p, AGENT_ARGS("--dry-run", "--imds-timeout=200ms"), NULL), 0);
        unsigned port = proc_health_port(&p);
        cr_assert(proc_wait_for(&p, "Watching instance", 5000));
        static const enum imds_sim_fault faults[] = { SIM_FAULT_MALFORMED, SIM_FAULT_500, SIM_FAULT_OVERSIZED,
                                                      SIM_FAULT_RESET, SIM_FAULT_SLOW, SIM_FAULT_401 };
        static const char *const words[] = { "answer rejected", "HTTP 500", "size limit", "reset", "timed out",
                                             "unauthorized" };
        /* Errors of the faulted source: on a slow machine (a sanitizer) the
         * oversized answer can make another source's request time out too. */
        static const char spot_err[] = "\"level\":\"err\",\"msg\":\"Metadata spot/instance-action ";
        for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++) {
                int before = proc_count(&p, spot_err);
                imds_sim_set_fault(sim, "meta-data/spot", faults[i], faults[i] == SIM_FAULT_SLOW ? 400 : 0, 0);
                cr_assert(proc_wait_for(&p, words[i], 3000), "fault %zu: %s", i, p.out);
                cr_assert(more_polls(SPOT_PATH, 4), "several more failing polls");
                proc_pump(&p, 0);
                cr_assert_eq(proc_count(&p, spot_err), before + 1, "fault %zu logged once: %s", i, p.out);
                cr_assert_eq(http_get_port(port, "/healthz", NULL), 200);
                imds_sim_clear_fault(sim);
                cr_assert(proc_wait_for_n(&p, "answers again", (int) i + 1, 3000), "%s", p.out);
        }
        imds_sim_set_spot(sim, "terminate", time(NULL) + 120, 0);
        cr_assert(proc_wait_for(&p, "Spot interruption notice", 3000), "%s", p.out);
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

Test(integration, unreachable_imds_not_ready_but_alive) {
        struct proc p;
        cr_assert_eq(proc_spawn(&p, (char *[]) { "spotd", "--imds-endpoint=http://127.0.0.1:1", "--node-name=node-a",
                                                 "--poll-interval=50ms", "--log-target=stderr",
                                                 "--health-addr=127.0.0.1:0", "--dry-run", NULL }, NULL), 0);
        unsigned port = proc_health_port(&p);
        cr_assert(proc_wait_for(&p, "connection refused", 3000), "%s", p.out);
        /* Several more failing polls, counted by spotd itself. */
        char *body = NULL;
        cr_assert(eventually((free(body), body = NULL, http_get_port(port, "/metrics", &body) == 200 &&
                              metric(body, "spotd_polls_total ") >= 5), 5000), "%s", body);
        free(body);
        cr_assert_eq(http_get_port(port, "/readyz", &body), 503);
        cr_assert(strstr(body, "metadata"), "%s", body);
        free(body);
        cr_assert_eq(http_get_port(port, "/healthz", NULL), 200);
        proc_pump(&p, 0);
        cr_assert_eq(proc_count(&p, "connection refused"), 1, "%s", p.out);
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);
}

Test(integration, invalid_input_exits_2_with_one_line) {
        static const char *const bad[] = { "--poll-interval=abc", "--imds-endpoint=gopher://x", "--nope",
                                           "--config=/nonexistent", "--health-addr=1.2.3.4:99999" };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                struct proc p;
                cr_assert_eq(proc_spawn(&p, (char *[]) { "spotd", "run", "--node-name=n", (char *) bad[i], NULL }, NULL), 0);
                int st = proc_stop(&p, 0, 5000);
                cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2, "%s: status %d", bad[i], st);
                cr_assert_eq(proc_count(&p, "\n"), 1, "%s: %s", bad[i], p.out);
                cr_assert(strstr(p.out, "--"), "names the option: %s", p.out);
                proc_free(&p);
        }
        struct proc p;
        cr_assert_eq(proc_spawn(&p, (char *[]) { "spotd", "frobnicate", NULL }, NULL), 0);
        int st = proc_stop(&p, 0, 5000);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2);
        proc_free(&p);
        cr_assert_eq(proc_spawn(&p, (char *[]) { "spotd", "run", NULL },
                                (char *[]) { "SPOTD_POLL_INTERVAL=1", "SPOTD_NODE_NAME=n", NULL }), 0);
        st = proc_stop(&p, 0, 5000);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2);
        cr_assert(strstr(p.out, "SPOTD_POLL_INTERVAL"), "%s", p.out);
        proc_free(&p);
}

Test(integration, check_text_and_json) {
        struct proc p;
        imds_sim_set_spot(sim, "stop", time(NULL) + 100, 0);
        imds_sim_set_lifecycle(sim, "InService");
        cr_assert_eq(proc_spawn(&p, (char *[]) { "spotd", "check", endpoint, "--node-name=node-a", NULL }, NULL), 0);
        int st = proc_stop(&p, 0, 5000);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s", p.out);
        cr_assert(strstr(p.out, "spot-interruption") && strstr(p.out, "stop spot-i-0123456789abcdef0-stop"), "%s", p.out);
        cr_assert(strstr(p.out, "state InService"), "%s", p.out);
        proc_free(&p);

        cr_assert_eq(proc_spawn(&p, (char *[]) { "spotd", "check", endpoint, "--node-name=node-a", "--output=json", NULL },
                                NULL), 0);
        st = proc_stop(&p, 0, 5000);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        cJSON *j = cJSON_Parse(p.out);
        cr_assert_not_null(j, "%s", p.out);
        cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "ok")));
        cr_assert_str_eq(cJSON_GetObjectItem(j, "instance_id")->valuestring, "i-0123456789abcdef0");
        cJSON *spot = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "sources"), "spot-interruption");
        cr_assert_str_eq(cJSON_GetObjectItem(spot, "status")->valuestring, "pending");
        cJSON *e0 = cJSON_GetArrayItem(cJSON_GetObjectItem(spot, "events"), 0);
        cr_assert_str_eq(cJSON_GetObjectItem(e0, "action")->valuestring, "handle");
        cJSON_Delete(j);
        proc_free(&p);

        /* Unreachable: exit 1 and the reason. */
        cr_assert_eq(proc_spawn(&p, (char *[]) { "spotd", "check", "--imds-endpoint=http://127.0.0.1:1",
                                                 "--node-name=node-a", NULL }, NULL), 0);
        st = proc_stop(&p, 0, 5000);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1);
        cr_assert(strstr(p.out, "connection refused"), "%s", p.out);
        proc_free(&p);
}

Test(integration, version) {
        struct proc p;
        cr_assert_eq(proc_spawn(&p, (char *[]) { "spotd", "version", NULL }, NULL), 0);
        int st = proc_stop(&p, 0, 5000);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        cr_assert(strncmp(p.out, "spotd " SPOTD_VERSION, 6 + strlen(SPOTD_VERSION)) == 0, "%s", p.out);
        proc_free(&p);
}

/* Under systemd: READY=1 once started, WATCHDOG=1 while the loop runs,
 * STOPPING=1 on SIGTERM. The test plays systemd's notify socket. */
Test(integration, sd_notify_ready_and_watchdog) {
        char sock[64], env_sock[96];
        snprintf(sock, sizeof sock, "/tmp/spotd-notify-%d", (int) getpid());
        unlink(sock);
        int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        strcpy(sa.sun_path, sock);
        cr_assert_eq(bind(fd, (struct sockaddr *) &sa, sizeof sa), 0);
        snprintf(env_sock, sizeof env_sock, "NOTIFY_SOCKET=%s", sock);

        struct proc p;
        cr_assert_eq(proc_spawn(&p, AGENT_ARGS("--dry-run"),
                                (char *[]) { env_sock, "WATCHDOG_USEC=200000", NULL }), 0);
        /* READY=1, then the watchdog keeps being pinged (how often:
         * half of WATCHDOG_USEC, left to the machine's timing). */
        int ready = 0, watchdog = 0, stopping = 0;
        usec_t end = now_monotonic() + (usec_t) test_ms(10000) * USEC_PER_MSEC;
        while ((!ready || watchdog < 5) && now_monotonic() < end) {
                char buf[256];
                ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
                if (n <= 0) {
                        usleep(10 * 1000);
                        continue;
                }
                buf[n] = 0;
                ready += strstr(buf, "READY=1") != NULL;
                watchdog += strstr(buf, "WATCHDOG=1") != NULL;
        }
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        char buf[256];
        ssize_t n;
        while ((n = recv(fd, buf, sizeof buf - 1, 0)) > 0) {
                buf[n] = 0;
                ready += strstr(buf, "READY=1") != NULL;
                stopping += strstr(buf, "STOPPING=1") != NULL;
        }
        cr_assert_eq(ready, 1, "READY=1 once");
        cr_assert_geq(watchdog, 5, "watchdog pinged %d times", watchdog);
        cr_assert_eq(stopping, 1);
        close(fd);
        unlink(sock);
        proc_free(&p);
}
