#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "health.h"
#include "macro.h"
#include "status.h"

struct reply {
        long code;
        CURLcode err;
        char body[65536];
        size_t len;
        char headers[4096];
        size_t hlen;
};

static size_t append(char *dst, size_t cap, size_t *len, const char *p, size_t n) {
        size_t take = n < cap - 1 - *len ? n : cap - 1 - *len;
        memcpy(dst + *len, p, take);
        *len += take;
        dst[*len] = 0;
        return n;
}
static size_t on_body(char *p, size_t sz, size_t n, void *u) {
        struct reply *r = u;
        return append(r->body, sizeof(r->body), &r->len, p, sz * n);
}
static size_t on_header(char *p, size_t sz, size_t n, void *u) {
        struct reply *r = u;
        return append(r->headers, sizeof(r->headers), &r->hlen, p, sz * n);
}

/* method NULL: GET; "HEAD": a real HEAD; others via CUSTOMREQUEST. */
static void http(uint16_t port, const char *method, const char *path, const char *body,
                 struct curl_slist *hdrs, struct reply *r) {
        char url[256];
        CURL *c = curl_easy_init();

        cr_assert_not_null(c);
        memset(r, 0, sizeof(*r));
        snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", port, path);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 4000L);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        if (method && streq(method, "HEAD"))
                curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
        else if (method)
                curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        if (body)
                curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        if (hdrs)
                curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
        r->err = curl_easy_perform(c);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->code);
        curl_easy_cleanup(c);
}

static struct status *st;
static struct health *srv;
static uint16_t port;

static void start(unsigned max_connections) {
        cr_assert_eq(status_new(&st), 0);
        status_set_info(st, "node-a", "i-0123456789abcdef0", false, USEC_PER_SEC);
        cr_assert_eq(health_start("127.0.0.1:0", st, max_connections, &srv), 0);
        port = health_port(srv);
        cr_assert_neq(port, 0);
}
static void setup(void) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        start(0);
}
static void teardown(void) {
        srv = health_stop(srv);
        st = status_free(st);
        curl_global_cleanup();
}

static void expect(const char *path, long code, const char *body) {
        struct reply r;
        http(port, NULL, path, NULL, NULL, &r);
        cr_assert_eq(r.err, CURLE_OK, "%s: %s", path, curl_easy_strerror(r.err));
        cr_assert_eq(r.code, code, "%s: got %ld %s", path, r.code, r.body);
        if (body)
                cr_assert_str_eq(r.body, body, "%s", path);
}

Test(health, healthz_follows_heartbeat, .init = setup, .fini = teardown) {
        usec_t now = now_monotonic();

        /* Before the first heartbeat the agent is starting: alive. */
        expect("/healthz", 200, "ok\n");
        status_heartbeat(st, now);
        expect("/healthz", 200, "ok\n");
        expect("/healthz?verbose=1", 200, "ok\n");

        if (now < 60 * USEC_PER_SEC)
                cr_skip("monotonic clock too young to fake a stall");
        status_heartbeat(st, now_monotonic() - 20 * USEC_PER_SEC);
        struct reply r;
        http(port, NULL, "/healthz", NULL, NULL, &r);
        cr_assert_eq(r.code, 503);
        /* At least the 20 s faked; more if this test was slow to ask. */
        const char *why = strstr(r.body, "main loop stalled for ");
        cr_assert(why && strtod(why + strlen("main loop stalled for "), NULL) >= 20.0, "%s", r.body);
        cr_assert_eq(r.body[r.len - 1], '\n');

        /* The window is max(10 s, 5 poll intervals): 20 s is fine at 5 s polls. */
        status_set_info(st, "node-a", NULL, false, 5 * USEC_PER_SEC);
        expect("/healthz", 200, "ok\n");
        status_set_info(st, "node-a", NULL, false, USEC_PER_SEC);
        status_heartbeat(st, now_monotonic());
        expect("/healthz", 200, "ok\n");
}

Test(health, readyz_follows_polls, .init = setup, .fini = teardown) {
        expect("/readyz", 503, "no poll completed yet\n");
        status_heartbeat(st, now_monotonic());
        status_poll_done(st, now_realtime(), now_monotonic(), false);
        expect("/readyz", 503, "metadata service unreachable in last poll\n");
        status_poll_done(st, now_realtime(), now_monotonic(), true);
        expect("/readyz", 200, "ready\n");
        /* A stalled loop is not ready either, whatever the last poll said. */
        if (now_monotonic() > 60 * USEC_PER_SEC) {
                status_heartbeat(st, now_monotonic() - 30 * USEC_PER_SEC);
                struct reply r;
                http(port, NULL, "/readyz", NULL, NULL, &r);
                cr_assert_eq(r.code, 503);
                cr_assert(strstr(r.body, "main loop stalled"), "%s", r.body);
        }
        status_heartbeat(st, now_monotonic());
        status_poll_done(st, now_realtime(), now_monotonic(), false);
        expect("/readyz", 503, "metadata service unreachable in last poll\n");
}

Test(health, metrics_content, .init = setup, .fini = teardown) {
        static const char *const names[] = {
                "spotd_build_info", "spotd_imds_requests_total", "spotd_imds_request_duration_seconds",
                "spotd_imds_parse_errors_total", "spotd_notices_total", "spotd_last_poll_timestamp_seconds",
                "spotd_polls_total", "spotd_imds_up", "spotd_active_events", "spotd_dry_run",
                "process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes",
                "process_open_fds", "process_max_fds", "process_start_time_seconds",
        };
        struct reply r;
        char line[256];

        for (int i = 0; i < 3; i++)
                status_imds_request(st, SOURCE_SPOT, RESULT_OK, 1500);
        for (int i = 0; i < 2; i++)
                status_imds_request(st, imds_source_from_path("api/token"),
                                    request_result_from(-ETIMEDOUT, 0), USEC_PER_SEC);
        status_parse_error(st, SOURCE_SCHEDULED);
        status_notice(st, EVENT_REBALANCE);
        status_poll_done(st, 1764071933 * USEC_PER_SEC + 250000, now_monotonic(), true);

        http(port, NULL, "/metrics", NULL, NULL, &r);
        cr_assert_eq(r.code, 200);
        cr_assert(strcasestr(r.headers, "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"), "%s", r.headers);
        cr_assert(strcasestr(r.headers, "Cache-Control: no-store\r\n"));
        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                snprintf(line, sizeof(line), "# TYPE %s ", names[i]);
                cr_assert(strstr(r.body, line), "missing %s", names[i]);
                snprintf(line, sizeof(line), "# HELP %s ", names[i]);
                cr_assert(strstr(r.body, line), "missing HELP %s", names[i]);
        }
        cr_assert(strstr(r.body, "\nspotd_imds_requests_total{source=\"spot\",result=\"ok\"} 3\n"), "%s", r.body);
        cr_assert(strstr(r.body, "\nspotd_imds_requests_total{source=\"token\",result=\"timeout\"} 2\n"));
        /* ok series exist from the start for the interruption sources, not for the rest */
        cr_assert(strstr(r.body, "\nspotd_imds_requests_total{source=\"rebalance\",result=\"ok\"} 0\n"));
        cr_assert(strstr(r.body, "\nspotd_imds_requests_total{source=\"asg\",result=\"ok\"} 0\n"));
        cr_assert_null(strstr(r.body, "source=\"identity\",result=\"ok\""));
        cr_assert_null(strstr(r.body, "source=\"spot\",result=\"timeout\""));
        cr_assert(strstr(r.body, "\nspotd_imds_request_duration_seconds_bucket{le=\"0.001\"} 0\n"));
        cr_assert(strstr(r.body, "\nspotd_imds_request_duration_seconds_bucket{le=\"0.0025\"} 3\n"));
        cr_assert(strstr(r.body, "\nspotd_imds_request_duration_seconds_bucket{le=\"1\"} 5\n"));
        cr_assert(strstr(r.body, "\nspotd_imds_request_duration_seconds_bucket{le=\"+Inf\"} 5\n"));
        cr_assert(strstr(r.body, "\nspotd_imds_request_duration_seconds_count 5\n"));
        cr_assert(strstr(r.body, "\nspotd_imds_parse_errors_total{source=\"scheduled\"} 1\n"));
        cr_assert(strstr(r.body, "\nspotd_notices_total{kind=\"rebalance-recommendation\"} 1\n"));
        cr_assert(strstr(r.body, "\nspotd_notices_total{kind=\"spot-interruption\"} 0\n"));
        cr_assert(strstr(r.body, "\nspotd_notices_total{kind=\"asg-termination\"} 0\n"));
        cr_assert(strstr(r.body, "\nspotd_last_poll_timestamp_seconds 1764071933.25\n"));
        cr_assert(strstr(r.body, "\nspotd_polls_total 1\n"));
        cr_assert(strstr(r.body, "\nspotd_imds_up 1\n"));
        cr_assert(strstr(r.body, "\nspotd_dry_run 0\n"));
        cr_assert(strstr(r.body, "spotd_build_info{version=\""));

        /* Every non-comment line is "name{labels} value" with a number. */
        char *save = NULL;
        for (char *l = strtok_r(r.body, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
                if (l[0] == '#')
                        continue;
                char *sp = strrchr(l, ' '), *end;
                cr_assert_not_null(sp, "%s", l);
                strtod(sp + 1, &end);
                cr_assert(end != sp + 1 && *end == 0, "bad value in %s", l);
        }
}

Test(health, status_json, .init = setup, .fini = teardown) {
        struct reply r;
        cJSON *j, *cur, *ev;
        time_t now = time(NULL);

        http(port, NULL, "/status", NULL, NULL, &r);
        cr_assert_eq(r.code, 200);
        cr_assert(strcasestr(r.headers, "Content-Type: application/json\r\n"));
        j = cJSON_Parse(r.body);
        cr_assert_not_null(j, "%s", r.body);
        cr_assert_str_eq(cJSON_GetObjectItem(j, "state")->valuestring, "starting");
        cr_assert_str_eq(cJSON_GetObjectItem(j, "node")->valuestring, "node-a");
        cr_assert_str_eq(cJSON_GetObjectItem(j, "instance_id")->valuestring, "i-0123456789abcdef0");
        cr_assert(cJSON_IsFalse(cJSON_GetObjectItem(j, "dry_run")));
        cr_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "imds_mode")));
        cr_assert_eq(cJSON_GetObjectItem(j, "poll_interval_seconds")->valuedouble, 1.0);
        cr_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "last_poll")));
        cr_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "last_poll_age_seconds")));
        cr_assert(cJSON_IsFalse(cJSON_GetObjectItem(j, "imds_up")));
        cr_assert_eq(cJSON_GetObjectItem(j, "polls")->valueint, 0);
        cr_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "current_event")));
        cr_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "phase")));
        cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "events")), 0);
        cJSON_Delete(j);

        status_set_state(st, "handling");
        status_set_imds_mode(st, "v2");
        usec_t polled = now_monotonic();
        status_poll_done(st, 1764071933 * USEC_PER_SEC + 123000, polled - 2 * USEC_PER_SEC, true);
        struct status_event old = {
                .ev = { .id = "rebalance-i-0123", .kind = EVENT_REBALANCE, .notice_time = now - 600 },
                .phase = "cleared", .first_seen = now_realtime() - 600 * USEC_PER_SEC,
                .last_seen = now_realtime() - 300 * USEC_PER_SEC, .ended = now_realtime() - 300 * USEC_PER_SEC,
        };
        struct status_event spot = {
                .ev = { .id = "spot-i-0123-terminate", .kind = EVENT_SPOT_INTERRUPTION, .detail = "terminate",
                        .notice_time = 1764071933, .deadline = now + 100 },
                .phase = "detected", .first_seen = now_realtime(), .last_seen = now_realtime(),
        };
        status_upsert_event(st, &old);
        status_upsert_event(st, &spot);
        strcpy(spot.phase, "draining");
        status_upsert_event(st, &spot); /* same id: updated, not added */

        http(port, NULL, "/status", NULL, NULL, &r);
        usec_t answered = now_monotonic();
        time_t answered_at = time(NULL);
        cr_assert_eq(r.code, 200);
        j = cJSON_Parse(r.body);
        cr_assert_not_null(j, "%s", r.body);
        cr_assert_str_eq(cJSON_GetObjectItem(j, "state")->valuestring, "handling");
        cr_assert_str_eq(cJSON_GetObjectItem(j, "imds_mode")->valuestring, "v2");
        cr_assert_str_eq(cJSON_GetObjectItem(j, "last_poll")->valuestring, "2025-11-25T11:58:53.123Z");
        /* The age and the time left as they were when the answer was made:
         * between their values when they were set and when it was in. */
        double age = cJSON_GetObjectItem(j, "last_poll_age_seconds")->valuedouble;
        cr_assert(age >= 2.0 && age <= 2.0 + (double) (answered - polled) / USEC_PER_SEC, "age %f", age);
        cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "imds_up")));
        cr_assert_eq(cJSON_GetObjectItem(j, "polls")->valueint, 1);
        cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "events")), 2);
        cr_assert_str_eq(cJSON_GetObjectItem(j, "phase")->valuestring, "draining");
        cur = cJSON_GetObjectItem(j, "current_event");
        cr_assert(cJSON_IsObject(cur));
        cr_assert_str_eq(cJSON_GetObjectItem(cur, "id")->valuestring, "spot-i-0123-terminate");
        cr_assert_str_eq(cJSON_GetObjectItem(cur, "kind")->valuestring, "spot-interruption");
        cr_assert_str_eq(cJSON_GetObjectItem(cur, "detail")->valuestring, "terminate");
        cr_assert(cJSON_IsFalse(cJSON_GetObjectItem(cur, "canceled")));
        cr_assert_str_eq(cJSON_GetObjectItem(cur, "notice_time")->valuestring, "2025-11-25T11:58:53Z");
        cr_assert(cJSON_IsString(cJSON_GetObjectItem(cur, "deadline")));
        double left = cJSON_GetObjectItem(cur, "seconds_left")->valuedouble;
        cr_assert(left <= 100 && left >= (double) (now + 100 - answered_at), "left %f", left);
        cr_assert(cJSON_IsString(cJSON_GetObjectItem(cur, "first_seen")));
        cr_assert(cJSON_IsString(cJSON_GetObjectItem(cur, "last_seen")));
        cr_assert(cJSON_IsNull(cJSON_GetObjectItem(cur, "ended")));
        ev = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "events"), 0);
        cr_assert_str_eq(cJSON_GetObjectItem(ev, "id")->valuestring, "rebalance-i-0123");
        cr_assert(cJSON_IsString(cJSON_GetObjectItem(ev, "ended")));
        cr_assert(cJSON_IsNull(cJSON_GetObjectItem(ev, "deadline")));
        cr_assert(cJSON_IsNull(cJSON_GetObjectItem(ev, "seconds_left")));
        cJSON_Delete(j);

        /* Active-event gauge agrees. */
        http(port, NULL, "/metrics", NULL, NULL, &r);
        cr_assert(strstr(r.body, "\nspotd_active_events 1\n"));
}

Test(health, recent_events_drop_oldest_ended, .init = setup, .fini = teardown) {
        struct reply r;
        usec_t t = now_realtime();

        for (int i = 0; i < STATUS_RECENT_EVENTS + 3; i++) {
                struct status_event e = { .ev.kind = EVENT_SCHEDULED, .first_seen = t + i, .last_seen = t + i };
                snprintf(e.ev.id, sizeof(e.ev.id), "ev-%d", i);
                /* ev-0 stays active; the rest end */
                e.ended = i == 0 ? 0 : t + i;
                status_upsert_event(st, &e);
        }
        http(port, NULL, "/status", NULL, NULL, &r);
        cJSON *j = cJSON_Parse(r.body), *arr = cJSON_GetObjectItem(j, "events");
        cr_assert_eq(cJSON_GetArraySize(arr), STATUS_RECENT_EVENTS);
        cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, 0), "id")->valuestring, "ev-0");
        cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, 1), "id")->valuestring, "ev-4");
        char last[16];
        snprintf(last, sizeof(last), "ev-%d", STATUS_RECENT_EVENTS + 2);
        cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, STATUS_RECENT_EVENTS - 1), "id")->valuestring, last);
        cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "current_event"), "id")->valuestring, "ev-0");
        cJSON_Delete(j);

        /* With two active events the newer one is current. */
        struct status_event e = { .ev = { .id = "ev-new", .kind = EVENT_SPOT_INTERRUPTION },
                                  .phase = "cordoned", .first_seen = t + 100, .last_seen = t + 100 };
        status_upsert_event(st, &e);
        http(port, NULL, "/status", NULL, NULL, &r);
        j = cJSON_Parse(r.body);
        cr_assert_not_null(j);
        cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "current_event"), "id")->valuestring, "ev-new");
        cr_assert_str_eq(cJSON_GetObjectItem(j, "phase")->valuestring, "cordoned");
        /* The one it displaced was the oldest ended (ev-4), not an active one. */
        arr = cJSON_GetObjectItem(j, "events");
        cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, 0), "id")->valuestring, "ev-0");
        cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, 1), "id")->valuestring, "ev-5");
        cJSON_Delete(j);
}

Test(health, other_methods_405, .init = setup, .fini = teardown) {
        static const char *const methods[] = { "POST", "PUT", "DELETE", "OPTIONS", "PATCH" };
        struct reply r;

        for (size_t i = 0; i < ELEMENTSOF(methods); i++) {
                http(port, methods[i], "/healthz", i < 2 ? "x=1" : NULL, NULL, &r);
                cr_assert_eq(r.err, CURLE_OK, "%s: %s", methods[i], curl_easy_strerror(r.err));
                cr_assert_eq(r.code, 405, "%s: %ld", methods[i], r.code);
                cr_assert(strcasestr(r.headers, "\r\nAllow: GET, HEAD\r\n"), "%s: %s", methods[i], r.headers);
        }
        /* Unknown paths too: the method is checked first. */
        http(port, "POST", "/nope", "x", NULL, &r);
        cr_assert_eq(r.code, 405);
        expect("/healthz", 200, "ok\n");
}

Test(health, unknown_path_404, .init = setup, .fini = teardown) {
        expect("/nope", 404, "not found\n");
        expect("/healthz/", 404, "not found\n");
        expect("/", 404, "not found\n");
}

Test(health, head_has_no_body, .init = setup, .fini = teardown) {
        struct reply r;

        http(port, "HEAD", "/metrics", NULL, NULL, &r);
        cr_assert_eq(r.err, CURLE_OK, "%s", curl_easy_strerror(r.err));
        cr_assert_eq(r.code, 200);
        cr_assert_eq(r.len, 0);
        cr_assert(strcasestr(r.headers, "Content-Type: text/plain; version=0.0.4"));
        http(port, "HEAD", "/readyz", NULL, NULL, &r);
        cr_assert_eq(r.code, 503);
        cr_assert_eq(r.len, 0);
}

Test(health, get_with_body_refused, .init = setup, .fini = teardown) {
        struct reply r;

        http(port, "GET", "/healthz", "some body", NULL, &r);
        cr_assert(r.code == 413 || r.code == 400, "got %ld", r.code);
        expect("/healthz", 200, "ok\n");
}

Test(health, huge_header_refused, .init = setup, .fini = teardown) {
        static char h[64 * 1024 + 16];
        struct curl_slist *hdrs;
        struct reply r;

        strcpy(h, "X-Big: ");
        memset(h + 7, 'a', 64 * 1024);
        h[7 + 64 * 1024] = 0;
        hdrs = curl_slist_append(NULL, h);
        http(port, NULL, "/healthz", NULL, hdrs, &r);
        curl_slist_free_all(hdrs);
        cr_assert(r.err != CURLE_OK || r.code >= 400, "err %d code %ld", r.err, r.code);
        cr_assert_null(strstr(r.body, "ok\n"));
        expect("/healthz", 200, "ok\n");
}

Test(health, parse_addr) {
        static const struct {
                const char *in;
                int r;
                const char *host;
                uint16_t port;
        } t[] = {
                { "127.0.0.1:9808", 0, "127.0.0.1", 9808 },
                { "0.0.0.0:0", 0, "0.0.0.0", 0 },
                { "[::1]:0", 0, "::1", 0 },
                { "[::]:65535", 0, "::", 65535 },
                { "[2001:db8::1]:80", 0, "2001:db8::1", 80 },
                { "10.1.2.3:000080", -EINVAL, NULL, 0 }, /* more than 5 digits */
                { "10.1.2.3:080", 0, "10.1.2.3", 80 },
                { "127.0.0.1:65536", -EINVAL, NULL, 0 },
                { "127.0.0.1:", -EINVAL, NULL, 0 },
                { "127.0.0.1", -EINVAL, NULL, 0 },
                { ":9808", -EINVAL, NULL, 0 },
                { "localhost:9808", -EINVAL, NULL, 0 },
                { "127.0.0.1:-1", -EINVAL, NULL, 0 },
                { "127.0.0.1:+80", -EINVAL, NULL, 0 },
                { "127.0.0.1:80 ", -EINVAL, NULL, 0 },
                { " 127.0.0.1:80", -EINVAL, NULL, 0 },
                { "127.0.0.1:0x50", -EINVAL, NULL, 0 },
                { "256.0.0.1:80", -EINVAL, NULL, 0 },
                { "1.2.3:80", -EINVAL, NULL, 0 },
                { "::1:80", -EINVAL, NULL, 0 },
                { "[::1]", -EINVAL, NULL, 0 },
                { "[::1]80", -EINVAL, NULL, 0 },
                { "[127.0.0.1]:80", -EINVAL, NULL, 0 },
                { "[fe80::1%eth0]:80", -EINVAL, NULL, 0 },
                { "[]:80", -EINVAL, NULL, 0 },
                { "", -EINVAL, NULL, 0 },
        };
        for (size_t i = 0; i < ELEMENTSOF(t); i++) {
                char host[64] = "untouched";
                uint16_t p = 4242;
                int r = health_parse_addr(t[i].in, host, sizeof(host), &p);
                cr_assert_eq(r, t[i].r, "'%s': %d", t[i].in, r);
                if (r == 0) {
                        cr_assert_str_eq(host, t[i].host, "'%s'", t[i].in);
                        cr_assert_eq(p, t[i].port, "'%s'", t[i].in);
                } else {
                        cr_assert_str_eq(host, "untouched", "'%s'", t[i].in);
                        cr_assert_eq(p, 4242, "'%s'", t[i].in);
                }
        }
        uint16_t p;
        char small[4];
        cr_assert_eq(health_parse_addr(NULL, NULL, 0, &p), -EINVAL);
        cr_assert_eq(health_parse_addr("127.0.0.1:1", small, sizeof(small), &p), -EINVAL);
}

Test(health, start_errors) {
        struct status *s;
        struct health *a = NULL, *b = NULL;
        char addr[64];

        cr_assert_eq(status_new(&s), 0);
        cr_assert_eq(health_start("localhost:0", s, 0, &a), -EINVAL);
        cr_assert_null(a);
        cr_assert_eq(health_start("127.0.0.1:0", s, 0, &a), 0);
        snprintf(addr, sizeof(addr), "127.0.0.1:%u", health_port(a));
        cr_assert_eq(health_start(addr, s, 0, &b), -EADDRINUSE);
        cr_assert_null(b);
        cr_assert_null(health_stop(a));
        cr_assert_null(health_stop(NULL));
        /* The port is free again once stopped. */
        cr_assert_eq(health_start(addr, s, 0, &b), 0);
        health_stop(b);
        status_free(s);
}

Test(health, ipv6_loopback) {
        struct status *s;
        struct health *h;
        struct reply r;
        int fd = socket(AF_INET6, SOCK_STREAM, 0);
        struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };

        if (fd < 0 || bind(fd, (struct sockaddr *) &a, sizeof(a)) < 0) {
                if (fd >= 0)
                        close(fd);
                cr_skip("no IPv6 loopback here");
        }
        close(fd);
        cr_assert_eq(status_new(&s), 0);
        cr_assert_eq(health_start("[::1]:0", s, 0, &h), 0);
        CURL *c = curl_easy_init();
        char url[64];
        snprintf(url, sizeof(url), "http://[::1]:%u/healthz", health_port(h));
        memset(&r, 0, sizeof(r));
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
        cr_assert_eq(curl_easy_perform(c), CURLE_OK);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.code);
        curl_easy_cleanup(c);
        cr_assert_eq(r.code, 200);
        cr_assert_str_eq(r.body, "ok\n");
        health_stop(h);
        status_free(s);
}

Test(health, dual_stack_any) {
        struct status *s;
        struct health *h;

        cr_assert_eq(status_new(&s), 0);
        int r = health_start("[::]:0", s, 0, &h);
        if (r == -EAFNOSUPPORT || r == -EADDRNOTAVAIL)
                cr_skip("no IPv6 here");
        cr_assert_eq(r, 0);
        /* "[::]" takes IPv4 clients too. */
        port = health_port(h);
        expect("/healthz", 200, "ok\n");
        health_stop(h);
        status_free(s);
}

/* The server hangs up on silent clients, not we on them: our own receive
 * timeout (60 s) is far longer than the server's idle timeout (5 s). One
 * never says anything; the other is slow to send its request, is answered
 * all the same, and then goes quiet. */
Test(health, idle_connection_times_out, .init = setup, .fini = teardown) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        struct timeval tv = { .tv_sec = 60 };
        int quiet = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        static const char rq[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        char buf[1024];
        size_t got = 0;

        cr_assert(quiet >= 0 && fd >= 0);
        cr_assert_eq(setsockopt(quiet, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
        cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
        cr_assert_eq(connect(quiet, (struct sockaddr *) &a, sizeof(a)), 0);
        cr_assert_eq(connect(fd, (struct sockaddr *) &a, sizeof(a)), 0);
        /* Another client is served meanwhile; then fd asks. */
        expect("/healthz", 200, "ok\n");
        cr_assert_eq(write(fd, rq, sizeof(rq) - 1), (ssize_t) sizeof(rq) - 1);
        while (got < sizeof(buf) - 1 && !(got >= 3 && memmem(buf, got, "\r\n\r\nok\n", 7))) {
                ssize_t n = read(fd, buf + got, sizeof(buf) - 1 - got);
                cr_assert_gt(n, 0, "no answer: %s", n < 0 ? strerror(errno) : "closed");
                got += (size_t) n;
        }
        buf[got] = 0;
        cr_assert(strncmp(buf, "HTTP/1.1 200", 12) == 0, "%s", buf);
        /* Then silence: the server closes both (EOF), our timeout does not fire. */
        ssize_t n = read(quiet, buf, 1);
        cr_assert_eq(n, 0, "the silent client: %s", n < 0 ? strerror(errno) : "data");
        n = read(fd, buf, 1);
        cr_assert_eq(n, 0, "the answered client: %s", n < 0 ? strerror(errno) : "more data");
        close(quiet);
        close(fd);
}

static void idle_setup(void) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        start(4);
}

Test(health, idle_sockets_do_not_wedge, .init = idle_setup, .fini = teardown) {
        int fds[12];
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

        for (size_t i = 0; i < ELEMENTSOF(fds); i++) {
                fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                cr_assert_geq(fds[i], 0);
                cr_assert_eq(connect(fds[i], (struct sockaddr *) &a, sizeof(a)), 0, "%s", strerror(errno));
        }
        /* One of them sends half a request and stops, a slowloris in miniature. */
        cr_assert_eq(write(fds[0], "GET /healthz HTTP/1.1\r\n", 23), 23);
        usleep(200 * 1000);
        for (size_t i = 0; i < ELEMENTSOF(fds); i++)
                close(fds[i]);

        /* Closed sockets are noticed on the next poll; give it a moment. */
        struct reply r = {};
        for (int tries = 0; tries < 20; tries++) {
                http(port, NULL, "/healthz", NULL, NULL, &r);
                if (r.err == CURLE_OK && r.code == 200)
                        break;
                usleep(100 * 1000);
        }
        cr_assert_eq(r.err, CURLE_OK, "%s", curl_easy_strerror(r.err));
        cr_assert_eq(r.code, 200);
        cr_assert_str_eq(r.body, "ok\n");
        /* And it keeps answering. */
        for (int i = 0; i < 10; i++)
                expect("/healthz", 200, "ok\n");
}

/* The poll loop refreshes an event every round: that must not wipe what the
 * handler published (phase, timeline, outcome) until the event turns
 * canceled or ends. */
Test(health, poll_refresh_keeps_handler_phase, .init = setup, .fini = teardown) {
        struct reply r;
        usec_t t = now_realtime();
        struct status_event polled = { .ev = { .id = "spot-x", .kind = EVENT_SPOT_INTERRUPTION },
                                       .phase = "detected", .first_seen = t, .last_seen = t };
        status_upsert_event(st, &polled);
        struct status_event handled = polled;
        strcpy(handled.phase, "done");
        strcpy(handled.outcome, "1 TaskManager pods gone");
        handled.tl.fenced = t + 1000;
        handled.tl.done = t + 2000;
        status_upsert_event(st, &handled);
        polled.last_seen = t + 5 * USEC_PER_SEC;
        status_refresh_event(st, &polled);

        http(port, NULL, "/status", NULL, NULL, &r);
        cJSON *j = cJSON_Parse(r.body), *cur = cJSON_GetObjectItem(j, "current_event");
        cr_assert_not_null(cur, "%s", r.body);
        cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(cur, "phase")), "done", "%s", r.body);
        cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(cur, "outcome")), "1 TaskManager pods gone");
        cr_assert_not_null(cJSON_GetObjectItem(cJSON_GetObjectItem(cur, "timeline"), "done"), "%s", r.body);
        cJSON_Delete(j);

        strcpy(polled.phase, "cleared");
        polled.ended = t + 6 * USEC_PER_SEC;
        status_refresh_event(st, &polled);
        http(port, NULL, "/status", NULL, NULL, &r);
        j = cJSON_Parse(r.body);
        cJSON *ev = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "events"), 0);
        cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(ev, "phase")), "cleared", "%s", r.body);
        cr_assert_not_null(cJSON_GetObjectItem(cJSON_GetObjectItem(ev, "timeline"), "done"), "timeline kept");
        cJSON_Delete(j);
}

/* ---- foreign clients cannot take the last connections (issue 9) ---- */

/* Server-side sockets of this process on the health port that the server
 * has accepted and holds (connections still in the kernel's accept queue
 * have no file yet): ours from /proc/self/fd, their ports from
 * /proc/net/tcp and /proc/net/tcp6. */
static long held_connections(uint16_t server_port) {
        unsigned long inodes[1024];
        size_t n = 0;
        long held = 0;
        char link[64], line[512];
        DIR *d = opendir("/proc/self/fd");
        cr_assert_not_null(d);
        for (struct dirent *e; (e = readdir(d)) && n < ELEMENTSOF(inodes);) {
                ssize_t l = readlinkat(dirfd(d), e->d_name, link, sizeof(link) - 1);
                if (l > 0) {
                        link[l] = 0;
                        if (sscanf(link, "socket:[%lu]", &inodes[n]) == 1)
                                n++;
                }
        }
        closedir(d);
        static const char *const tables[] = { "/proc/net/tcp", "/proc/net/tcp6" };
        for (size_t t = 0; t < ELEMENTSOF(tables); t++) {
                FILE *f = fopen(tables[t], "re");
                if (!f)
                        continue;
                while (fgets(line, sizeof(line), f)) {
                        unsigned lport, state;
                        unsigned long inode;
                        if (sscanf(line, " %*d: %*[0-9A-Fa-f]:%x %*[0-9A-Fa-f]:%*x %x %*s %*s %*s %*d %*d %lu", &lport, &state,
                                   &inode) != 3 || lport != server_port || state == 0x0A /* LISTEN */)
                                continue;
                        for (size_t i = 0; i < n; i++)
                                held += inodes[i] == inode;
                }
                fclose(f);
        }
        return held;
}

/* Whether the server has closed a client socket (EOF or reset), without
 * waiting. */
static bool closed_by_server(int fd) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        return poll(&p, 1, 0) == 1 && (p.revents & (POLLIN | POLLHUP | POLLERR));
}

/* Whether each client socket is held by the server or was closed by it;
 * the held count in *ret_held. Closed ones are counted first: one closing
 * meanwhile is then counted in neither, never in both. */
static bool settled(const int *fds, size_t n, uint16_t server_port, long *ret_held) {
        size_t closed = 0;
        for (size_t i = 0; i < n; i++)
                closed += closed_by_server(fds[i]);
        *ret_held = held_connections(server_port);
        return (size_t) *ret_held + closed == n;
}

/* Keeps the foreign connections busy (one byte of a header every 200 ms), so
 * that no idle timeout frees a slot while the probe waits. */
struct trickle {
        int *fds;
        size_t n;
        volatile bool stop;
};

static void *trickle_run(void *arg) {
        struct trickle *t = arg;
        while (!t->stop) {
                for (size_t i = 0; i < t->n; i++)
                        (void) send(t->fds[i], "a", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
                usleep(200 * 1000);
        }
        return NULL;
}

/* Two hosts (127.0.0.2 and 127.0.0.3: loopback, but not an address of any
 * interface, so foreign to the server) open 16 connections each, the
 * per-address limit; with the default limit of 32 they held every slot and
 * the kubelet's probe, which comes from the node's own address, failed. A
 * quarter of the slots is kept for the node's own addresses: the foreign
 * ones get at most 24, and 127.0.0.1 is answered. */
static void foreign_clients_leave_room(const char *addr) {
        struct status *s;
        struct health *h;
        int fds[32];
        cr_assert_eq(status_new(&s), 0);
        int r = health_start(addr, s, 0, &h);
        if (r == -EAFNOSUPPORT || r == -EADDRNOTAVAIL)
                cr_skip("no IPv6 here");
        cr_assert_eq(r, 0);
        uint16_t p = health_port(h);

        for (size_t i = 0; i < ELEMENTSOF(fds); i++) {
                struct sockaddr_in src = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(i < 16 ? 0x7f000002 : 0x7f000003) };
                struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons(p), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
                fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                cr_assert_geq(fds[i], 0);
                cr_assert_eq(bind(fds[i], (struct sockaddr *) &src, sizeof(src)), 0, "%s", strerror(errno));
                cr_assert_eq(connect(fds[i], (struct sockaddr *) &dst, sizeof(dst)), 0, "%s", strerror(errno));
                cr_assert_eq(send(fds[i], "GET /healthz HTTP/1.1\r\nX-Pad: ", 30, MSG_NOSIGNAL), 30);
        }
        struct trickle t = { .fds = fds, .n = ELEMENTSOF(fds) };
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, trickle_run, &t), 0);
        /* Settled: every foreign connection is held or was turned away. */
        long held = 0;
        bool done = false;
        for (int i = 0; i < 1000 && !(done = settled(fds, ELEMENTSOF(fds), p, &held)); i++)
                usleep(10 * 1000);
        cr_assert(done, "held %ld of %zu, the others not turned away", held, ELEMENTSOF(fds));

        /* The probe, from the node itself. */
        struct reply rep;
        http(p, NULL, "/healthz", NULL, NULL, &rep);
        t.stop = true;
        pthread_join(th, NULL);
        cr_assert_eq(rep.err, CURLE_OK, "the probe got no answer (%s) with %ld foreign connections held",
                     curl_easy_strerror(rep.err), held);
        cr_assert_eq(rep.code, 200);
        cr_assert_leq(held, 24, "foreign clients held %ld of 32 connections", held);
        cr_assert_geq(held, 16, "a foreign client still gets its share: %ld", held);

        for (size_t i = 0; i < ELEMENTSOF(fds); i++)
                close(fds[i]);
        /* Freed slots go to foreign clients again. */
        for (int i = 0; i < 1000 && held_connections(p) > 0; i++)
                usleep(10 * 1000);
        struct sockaddr_in src = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000002) };
        struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons(p), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert_eq(bind(fd, (struct sockaddr *) &src, sizeof(src)), 0);
        cr_assert_eq(connect(fd, (struct sockaddr *) &dst, sizeof(dst)), 0);
        static const char req[] = "GET /healthz HTTP/1.0\r\n\r\n";
        cr_assert_eq(send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL), (ssize_t) sizeof(req) - 1);
        char buf[64] = "";
        struct timeval tv = { .tv_sec = 5 };
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        cr_assert_gt(recv(fd, buf, sizeof(buf) - 1, 0), 0);
        cr_assert(strncmp(buf, "HTTP/1.1 200", 12) == 0, "%s", buf);
        close(fd);
        health_stop(h);
        status_free(s);
}

Test(health, foreign_clients_leave_room_for_probes) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        foreign_clients_leave_room("127.0.0.1:0");
        curl_global_cleanup();
}

/* On "[::]" IPv4 clients arrive as ::ffff:a.b.c.d. */
Test(health, foreign_clients_leave_room_for_probes_dual_stack) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        foreign_clients_leave_room("[::]:0");
        curl_global_cleanup();
}
