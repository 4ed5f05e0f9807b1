/* The Flink JobManager simulator itself, over real HTTP: it must reject what
 * the spec of the simulated version (and Flink's own checks) reject, and
 * rescale the way each version's adaptive scheduler does, or spotd's tests
 * would pass against a server more forgiving than production. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "flink_sim.h"

#define JOB  "a1b2c3d4e5f60718293a4b5c6d7e8f90"
#define JOB2 "b1b2c3d4e5f60718293a4b5c6d7e8f90"
#define SRC  "bc764cd8ddf7a0cff126f51c16239658"
#define SINK "0a448493b4782967b150582570326227"
#define OTHER "ffffffffffffffffffffffffffffffff"
#define TM1  "flink-taskmanager-1-1"
#define TM2  "flink-taskmanager-1-2"
#define RR   "/jobs/" JOB "/resource-requirements"
#define CP   "/jobs/" JOB "/checkpoints"

/* A PUT body for both vertices. */
#define BOUNDS(l1, u1, l2, u2)                                                           \
        "{\"" SRC "\":{\"parallelism\":{\"lowerBound\":" #l1 ",\"upperBound\":" #u1 "}}," \
        "\"" SINK "\":{\"parallelism\":{\"lowerBound\":" #l2 ",\"upperBound\":" #u2 "}}}"

static const char *const versions[] = { "1.18.1", "1.19.0", "1.20.0", "2.0.0", "2.3.0" };

static struct flink_sim *sim;
static CURL *h;
static char base[64];
static cJSON *J;       /* the last answer, parsed */
static char *body;     /* the last answer, raw */
static char headers[4096];

static void msleep(unsigned ms) {
        struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
        nanosleep(&ts, NULL);
}

static size_t collect(char *p, size_t size, size_t n, void *ud) {
        size_t old = body ? strlen(body) : 0;
        (void)ud;
        body = realloc(body, old + size * n + 1);
        memcpy(body + old, p, size * n);
        body[old + size * n] = 0;
        return size * n;
}

static size_t collect_header(char *p, size_t size, size_t n, void *ud) {
        size_t room = sizeof headers - strlen(headers) - 1;
        (void)ud;
        strncat(headers, p, room < size * n ? room : size * n);
        return size * n;
}

/* The answer lands in J, body and headers. Returns the status, -1 without one. */
static long req(const char *method, const char *path, const char *data) {
        char url[512];
        long status = -1;
        struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
        hdrs = curl_slist_append(hdrs, "Expect:");
        cJSON_Delete(J);
        J = NULL;
        free(body);
        body = NULL;
        headers[0] = 0;
        snprintf(url, sizeof url, "%s%s", base, path);
        curl_easy_reset(h);
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 5000L);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, collect_header);
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
        if (data) {
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, data);
                curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(data));
        }
        if (curl_easy_perform(h) == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        curl_slist_free_all(hdrs);
        if (!body) body = strdup("");
        J = cJSON_Parse(body);
        return status;
}
#define GET(path) req("GET", path, NULL)
#define PUT(path, data) req("PUT", path, data)
#define POST(path, data) req("POST", path, data)

/* The item at a path of object keys (or "#n" array indexes) in J. */
static cJSON *jat(const char *first, ...) {
        va_list ap;
        cJSON *o = J;
        va_start(ap, first);
        for (const char *k = first; o && k; k = va_arg(ap, const char *))
                o = k[0] == '#' ? cJSON_GetArrayItem(o, atoi(k + 1)) : cJSON_GetObjectItemCaseSensitive(o, k);
        va_end(ap);
        return o;
}
#define JAT(...) jat(__VA_ARGS__, (const char *)NULL)
static double jnum(const cJSON *x) {
        cr_assert(cJSON_IsNumber(x), "not a number in %s", body);
        return x->valuedouble;
}
static const char *jstr(const cJSON *x) {
        cr_assert(cJSON_IsString(x), "not a string in %s", body);
        return x->valuestring;
}
#define JNUM(...) jnum(JAT(__VA_ARGS__))
#define JSTR(...) jstr(JAT(__VA_ARGS__))

/* Flink's error shape: {"errors":["..."]}. */
static void assert_errors(const char *needle) {
        cr_assert(cJSON_IsString(JAT("errors", "#0")), "no errors[]: %s", body);
        if (needle) cr_assert(strstr(JAT("errors", "#0")->valuestring, needle), "%s", body);
}

/* Two TaskManagers of 2 slots, one job: SRC (4, max 128) -> SINK (4, max 8). */
static void start(struct flink_sim_options o) {
        if (!o.restart_ms) o.restart_ms = 60;
        if (!o.checkpoint_ms) o.checkpoint_ms = 60;
        cr_assert_eq(flink_sim_start(&o, &sim), 0, "start %s", o.version ? o.version : "default");
        flink_sim_url(sim, base, sizeof base);
        h = curl_easy_init();
        flink_sim_add_taskmanager(sim, TM1, "10.0.0.1", 2);
        flink_sim_add_taskmanager(sim, TM2, "10.0.0.2", 2);
        flink_sim_add_job(sim, JOB, "orders");
        flink_sim_add_vertex(sim, JOB, SRC, "Source: orders", 4, 128, NULL);
        flink_sim_add_vertex(sim, JOB, SINK, "Sink: totals", 4, 8, NULL);
}

static void stop(void) {
        cJSON_Delete(J);
        J = NULL;
        free(body);
        body = NULL;
        if (h) curl_easy_cleanup(h);
        h = NULL;
        sim = flink_sim_stop(sim);
}

static void teardown(void) {
        if (sim) cr_expect_eq(flink_sim_bad_answers(sim), 0, "the simulator's own answers broke the spec");
        stop();
}

static bool wait_state(const char *jid, const char *state, unsigned timeout_ms) {
        for (unsigned t = 0; t < timeout_ms; t += 5) {
                if (strcmp(flink_sim_job_state(sim, jid), state) == 0) return true;
                msleep(5);
        }
        return false;
}

static void wait_running(const char *jid) { cr_assert(wait_state(jid, "RUNNING", 3000), "%s never RUNNING", jid); }

/* Waits up to 10 s for a checkpoint trigger (its status path) to report
 * COMPLETED; the answer is left in J. */
static void wait_trigger_done(const char *path) {
        for (int t = 0; t < 2000; t++) {
                cr_assert_eq(GET(path), 200, "%s", body);
                if (strcmp(JSTR("status", "id"), "COMPLETED") == 0) return;
                msleep(5);
        }
        cr_assert_fail("%s never COMPLETED: %s", path, body);
}

Test(flink_sim, unknown_path_and_method_are_violations, .fini = teardown) {
        start((struct flink_sim_options){ 0 });
        cr_assert_eq(GET("/nope"), 404);
        assert_errors("Not found");
        cr_assert_eq(GET("/jobs/overview/extra"), 404);
        cr_assert_eq(GET("/jobs/" JOB "/"), 404); /* a trailing slash is another path */
        cr_assert_eq(req("DELETE", "/overview", NULL), 405);
        assert_errors("not allowed");
        cr_assert(strstr(headers, "Allow: GET"), "%s", headers);
        cr_assert_eq(req("PATCH", CP, "{}"), 405);
        cr_assert_eq(flink_sim_violations(sim), 5);

        cr_assert_eq(GET("/jobs/orders"), 400); /* a JobID is 32 hex chars */
        assert_errors("jobid");
        cr_assert_eq(GET("/overview?verbose=1"), 400); /* unknown query parameter */
        cr_assert_eq(GET("/jobs/overview?jobs=" JOB), 400); /* known elsewhere, not here */
        cr_assert_eq(req("GET", "/overview", "{\"x\":1}"), 400); /* a GET takes no body */
        cr_assert_eq(flink_sim_violations(sim), 9);

        char *log = flink_sim_log(sim);
        cr_assert(strstr(log, "GET /nope 404 violation: Not found: /nope"), "%s", log);
        cr_assert(strstr(log, "DELETE /overview 405 violation"), "%s", log);
        free(log);
        cr_assert_eq(GET("/overview"), 200);
        cr_assert_eq(flink_sim_violations(sim), 9);
}

Test(flink_sim, every_path_is_also_served_under_v1, .fini = teardown) {
        static const char *const paths[] = { "/overview", "/jobs", "/jobs/overview", "/jobs/" JOB,
                                             "/jobs/" JOB "/status", RR, CP, "/taskmanagers",
                                             "/taskmanagers/" TM1, "/jobmanager/config" };
        start((struct flink_sim_options){ 0 });
        for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
                char v1[256];
                cr_assert_eq(GET(paths[i]), 200, "%s: %s", paths[i], body);
                snprintf(v1, sizeof v1, "/v1%s", paths[i]);
                cr_assert_eq(GET(v1), 200, "%s: %s", v1, body);
        }
        cr_assert_eq(PUT("/v1" RR, BOUNDS(1, 4, 1, 4)), 200, "%s", body);
        cr_assert_eq(POST("/v1" CP, NULL), 202, "%s", body);
        cr_assert_eq(GET("/v1/nope"), 404);
        cr_assert_eq(GET("/v2/overview"), 404);
        cr_assert_eq(flink_sim_violations(sim), 2);
}

/* The answers of each version, checked here for what spotd reads and by the
 * simulator itself against the whole response schema (bad_answers). */
Test(flink_sim, answers_per_version, .fini = teardown) {
        for (size_t i = 0; i < sizeof versions / sizeof *versions; i++) {
                const char *v = versions[i];
                bool v120 = strcmp(v, "1.20") >= 0;
                start((struct flink_sim_options){ .version = v });

                cr_assert_eq(GET("/overview"), 200);
                cr_assert_str_eq(JSTR("flink-version"), v);
                cr_assert_eq(JNUM("taskmanagers"), 2);
                cr_assert_eq(JNUM("slots-total"), 4);
                cr_assert_eq(JNUM("slots-available"), 0);
                cr_assert_eq(JNUM("jobs-running"), 1);

                cr_assert_eq(GET("/taskmanagers"), 200);
                cr_assert_str_eq(JSTR("taskmanagers", "#0", "id"), TM1);
                cr_assert_str_eq(JSTR("taskmanagers", "#1", "path"),
                                 strcmp(v, "1.19") < 0 ? "akka.tcp://flink@10.0.0.2:6122/user/rpc/taskmanager_0"
                                                        : "pekko.tcp://flink@10.0.0.2:6122/user/rpc/taskmanager_0");
                cr_assert_eq(JNUM("taskmanagers", "#0", "slotsNumber"), 2);
                cr_assert_eq(JNUM("taskmanagers", "#0", "freeSlots"), 0);
                cr_assert(cJSON_IsObject(JAT("taskmanagers", "#0", "memoryConfiguration")));

                cr_assert_eq(GET("/jobs/overview"), 200);
                cr_assert_str_eq(JSTR("jobs", "#0", "jid"), JOB);
                cr_assert_str_eq(JSTR("jobs", "#0", "state"), "RUNNING");
                cr_assert_eq(JNUM("jobs", "#0", "tasks", "running"), 8);
                cr_assert_eq(JNUM("jobs", "#0", "tasks", "total"), 8);

                cr_assert_eq(GET("/jobs/" JOB), 200);
                cr_assert_str_eq(JSTR("state"), "RUNNING");
                cr_assert_eq(JNUM("end-time"), -1);
                cr_assert_str_eq(JSTR("vertices", "#1", "id"), SINK);
                cr_assert_eq(JNUM("vertices", "#1", "parallelism"), 4);
                cr_assert_eq(JNUM("vertices", "#1", "maxParallelism"), 8);
                cr_assert_eq(JNUM("vertices", "#1", "tasks", "RUNNING"), 4);
                cr_assert_eq(JNUM("vertices", "#1", "tasks", "DEPLOYING"), 0);
                cr_assert_eq(JAT("vertices", "#0", "slotSharingGroupId") != NULL, v120, "%s", v);
                if (v120)
                        cr_assert_str_eq(JSTR("vertices", "#0", "slotSharingGroupId"),
                                         JSTR("vertices", "#1", "slotSharingGroupId"));
                cr_assert_str_eq(JSTR("plan", "type"), "STREAMING");

                cr_assert_eq(GET("/jobmanager/config"), 200);
                bool adaptive = false;
                cJSON *e;
                cJSON_ArrayForEach(e, J)
                        adaptive |= !strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(e, "key")), "jobmanager.scheduler") &&
                                    !strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(e, "value")), "adaptive");
                cr_assert(adaptive, "%s", body);

                cr_assert_eq(GET(RR), 200);
                cr_assert_eq(JNUM(SRC, "parallelism", "lowerBound"), 1);
                cr_assert_eq(JNUM(SRC, "parallelism", "upperBound"), 4);
                cr_assert_eq(GET(CP), 200);
                cr_assert(cJSON_IsNull(JAT("latest", "completed")), "%s", body);
                cr_assert_eq(GET("/jobs/" OTHER), 404);
                assert_errors("Job " OTHER " not found");

                cr_assert_eq(flink_sim_violations(sim), 0, "%s", v);
                cr_assert_eq(flink_sim_bad_answers(sim), 0, "%s", v);
                stop();
        }
}

Test(flink_sim, put_rejections, .fini = teardown) {
        start((struct flink_sim_options){ 0 });
        /* Flink's own checks: 400, but within the spec. */
        cr_assert_eq(PUT(RR, "{\"" SRC "\":{\"parallelism\":{\"lowerBound\":1,\"upperBound\":2}}}"), 400);
        assert_errors("every vertex");
        cr_assert_eq(PUT(RR, "{}"), 400);
        cr_assert_eq(PUT(RR, BOUNDS(0, 2, 1, 2)), 400);
        assert_errors("positive");
        cr_assert_eq(PUT(RR, BOUNDS(3, 2, 1, 2)), 400);
        assert_errors("greater than");
        cr_assert_eq(PUT(RR, BOUNDS(1, 2, 1, 9)), 400); /* SINK's max parallelism is 8 */
        assert_errors("max parallelism");
        cr_assert_eq(PUT(RR, "{\"" SRC "\":{\"parallelism\":{\"upperBound\":2}},"
                              "\"" SINK "\":{\"parallelism\":{\"lowerBound\":1,\"upperBound\":2}}}"), 400);
        cr_assert_eq(PUT(RR, BOUNDS(1, 2, 1, 2) ",\"" OTHER "\":{\"parallelism\":{\"lowerBound\":1,\"upperBound\":1}}}"),
                     400); /* not valid JSON: counted below */
        cr_assert_eq(PUT(RR, "{\"" OTHER "\":{\"parallelism\":{\"lowerBound\":1,\"upperBound\":1}},"
                              "\"" SRC "\":{\"parallelism\":{\"lowerBound\":1,\"upperBound\":2}},"
                              "\"" SINK "\":{\"parallelism\":{\"lowerBound\":1,\"upperBound\":2}}}"), 400);
        assert_errors("not part of job");
        cr_assert_eq(flink_sim_violations(sim), 1);

        /* Spec violations: 400 and counted. */
        cr_assert_eq(PUT(RR, BOUNDS(1, "2", 1, 2)), 400);
        assert_errors("upperBound: expected an integer");
        cr_assert_eq(PUT(RR, BOUNDS(1, 2.5, 1, 2)), 400);
        cr_assert_eq(PUT(RR, BOUNDS(1, null, 1, 2)), 400);
        cr_assert_eq(PUT(RR, BOUNDS(1, 3000000000, 1, 2)), 400); /* int32 */
        cr_assert_eq(PUT(RR, BOUNDS(true, 2, 1, 2)), 400);
        cr_assert_eq(PUT(RR, "{\"" SRC "\":{\"parallelism\":{\"lowerBound\":1,\"upperBound\":2,\"max\":3}},"
                              "\"" SINK "\":{\"parallelism\":{\"lowerBound\":1,\"upperBound\":2}}}"), 400);
        assert_errors("unknown field \"max\"");
        cr_assert_eq(PUT(RR, "{\"" SRC "\":{\"parallelism\":[1,2]},"
                              "\"" SINK "\":{\"parallelism\":{\"lowerBound\":1,\"upperBound\":2}}}"), 400);
        cr_assert_eq(PUT(RR, "[]"), 400);
        cr_assert_eq(PUT(RR, "{\"" SRC "\":"), 400);
        assert_errors("not valid JSON");
        cr_assert_eq(flink_sim_violations(sim), 10);

        unsigned lo, hi;
        flink_sim_bounds(sim, JOB, SRC, &lo, &hi);
        cr_assert_eq(lo, 1);
        cr_assert_eq(hi, 4);
        cr_assert_eq(flink_sim_puts(sim, JOB), 0);
        cr_assert_eq(flink_sim_first_put(sim, JOB), 0);
        cr_assert_eq(PUT("/jobs/" OTHER "/resource-requirements", BOUNDS(1, 2, 1, 2)), 404);
        cr_assert_eq(PUT(RR, BOUNDS(2, 4, 1, 8)), 200, "%s", body);
        cr_assert_str_eq(body, "{}");
        flink_sim_bounds(sim, JOB, SINK, &lo, &hi);
        cr_assert_eq(lo, 1);
        cr_assert_eq(hi, 8);
        cr_assert_eq(flink_sim_puts(sim, JOB), 1);
        cr_assert_neq(flink_sim_first_put(sim, JOB), 0);

        /* -1, no upper bound: Flink 1.20.5 answers 200 and its JobManager
         * then fails fatally (tests/flink): accepted, read back as -1, and
         * counted, so no client test passes sending it. */
        cr_assert_eq(PUT(RR, BOUNDS(1, -1, 1, 2)), 200);
        cr_assert_eq(GET(RR), 200);
        cr_assert(strstr(body, "\"upperBound\":-1"), "%s", body);
        cr_assert_eq(flink_sim_violations(sim), 11);
}

Test(flink_sim, default_scheduler_refuses_the_put, .fini = teardown) {
        start((struct flink_sim_options){ .version = "1.19.1", .default_scheduler = true });
        cr_assert_eq(GET("/jobmanager/config"), 200);
        cr_assert(strstr(body, "{\"key\":\"jobmanager.scheduler\",\"value\":\"default\"}"), "%s", body);
        cr_assert_eq(PUT(RR, BOUNDS(1, 2, 1, 2)), 500);
        assert_errors("adaptive scheduler");
        cr_assert_eq(flink_sim_puts(sim, JOB), 0);
        cr_assert_eq(flink_sim_violations(sim), 0);
        cr_assert_eq(flink_sim_vertex_parallelism(sim, JOB, SRC), 4);
}

Test(flink_sim, conflict_injection, .fini = teardown) {
        start((struct flink_sim_options){ 0 });
        flink_sim_put_conflicts(sim, 2);
        cr_assert_eq(PUT(RR, BOUNDS(1, 4, 1, 4)), 409);
        assert_errors("in progress");
        cr_assert_eq(PUT(RR, BOUNDS(1, 4, 1, 4)), 409);
        cr_assert_eq(PUT(RR, BOUNDS(1, 4, 1, 4)), 200);
        cr_assert_eq(flink_sim_puts(sim, JOB), 1);
        cr_assert_eq(flink_sim_rescales(sim, JOB), 0); /* same parallelism: nothing to do */
}

Test(flink_sim, down_answers_503, .fini = teardown) {
        start((struct flink_sim_options){ 0 });
        flink_sim_set_down(sim, true);
        cr_assert_eq(GET("/overview"), 503);
        assert_errors(NULL);
        cr_assert_eq(PUT(RR, BOUNDS(1, 2, 1, 2)), 503);
        cr_assert_eq(GET("/nope"), 503);
        cr_assert_eq(flink_sim_violations(sim), 0);
        cr_assert_eq(flink_sim_puts(sim, JOB), 0);
        flink_sim_set_down(sim, false);
        cr_assert_eq(GET("/overview"), 200);
}

Test(flink_sim, checkpoint_trigger_and_status, .fini = teardown) {
        char path[128], id[40];
        start((struct flink_sim_options){ .checkpoint_ms = 1000 });
        cr_assert_eq(POST(CP, "{\"checkpointType\":\"CONFIGURED\"}"), 202, "%s", body);
        snprintf(id, sizeof id, "%s", JSTR("request-id"));
        cr_assert_eq(strlen(id), 32);
        snprintf(path, sizeof path, CP "/%s", id);
        cr_assert_eq(GET(path), 200);
        cr_assert_str_eq(JSTR("status", "id"), "IN_PROGRESS");
        cr_assert_null(JAT("operation"));
        cr_assert_eq(GET(CP), 200);
        cr_assert_eq(JNUM("counts", "in_progress"), 1);
        wait_trigger_done(path);
        cr_assert_eq(JNUM("operation", "checkpointId"), 1);
        cr_assert_eq(flink_sim_checkpoints_completed(sim, JOB), 1);
        cr_assert_eq(GET(CP), 200);
        cr_assert_eq(JNUM("counts", "completed"), 1);
        cr_assert_eq(JNUM("latest", "completed", "id"), 1);
        cr_assert_str_eq(JSTR("latest", "completed", "status"), "COMPLETED");
        double ack = JNUM("latest", "completed", "latest_ack_timestamp");
        cr_assert_geq(ack, JNUM("latest", "completed", "trigger_timestamp"));

        /* The body is optional; FULL is fine; INCREMENTAL is Flink's own 400. */
        cr_assert_eq(POST(CP, NULL), 202, "%s", body);
        cr_assert_eq(POST(CP, "{\"checkpointType\":\"FULL\"}"), 202, "%s", body);
        cr_assert_eq(POST(CP, "{\"checkpointType\":\"INCREMENTAL\"}"), 400);
        assert_errors("incremental");
        cr_assert_eq(flink_sim_violations(sim), 0);
        cr_assert_eq(POST(CP, "{\"checkpointType\":\"SAVEPOINT\"}"), 400); /* not in the enum */
        cr_assert_eq(POST(CP, "{\"type\":\"FULL\"}"), 400);
        cr_assert_eq(POST(CP, "{\"checkpointType\":1}"), 400);
        cr_assert_eq(flink_sim_violations(sim), 3);
        cr_assert_eq(flink_sim_checkpoints_triggered(sim, JOB), 3);

        cr_assert_eq(GET(CP "/" OTHER), 404);
        assert_errors(NULL);
        cr_assert_eq(GET(CP "/12345"), 400); /* a TriggerId is 32 hex chars */

        /* 60 s before the moment of the call: between the simulator's
         * clock read just before it and just after it, 60 s back. */
        cr_assert_eq(GET("/jobs/" JOB), 200);
        double before = JNUM("now");
        flink_sim_set_last_checkpoint_age(sim, JOB, 60000);
        cr_assert_eq(GET("/jobs/" JOB), 200);
        double after = JNUM("now");
        cr_assert_eq(GET(CP), 200);
        ack = JNUM("latest", "completed", "latest_ack_timestamp");
        cr_assert(ack >= before - 60000 && ack <= after - 60000, "%f not 60 s before [%f, %f]", ack, before, after);
        cr_assert_eq(flink_sim_bad_answers(sim), 0);
}

Test(flink_sim, checkpoint_fails_unless_running, .fini = teardown) {
        char path[128];
        start((struct flink_sim_options){ .restart_ms = 2000, .checkpoint_ms = 400 });
        cr_assert_eq(POST(CP, NULL), 202); /* in flight when the job restarts */
        snprintf(path, sizeof path, CP "/%s", JSTR("request-id"));
        flink_sim_disconnect_taskmanager(sim, TM2);
        cr_assert_str_eq(flink_sim_job_state(sim, JOB), "RESTARTING");
        cr_assert_eq(POST(CP, "{\"checkpointType\":\"CONFIGURED\"}"), 202);
        char path2[128];
        snprintf(path2, sizeof path2, CP "/%s", JSTR("request-id"));
        cr_assert_eq(GET(path2), 200);
        cr_assert_str_eq(JSTR("status", "id"), "COMPLETED");
        cr_assert_str_eq(JSTR("operation", "failureCause", "class"),
                         "org.apache.flink.runtime.checkpoint.CheckpointException");
        cr_assert_null(JAT("operation", "checkpointId"));
        wait_trigger_done(path);
        cr_assert(cJSON_IsObject(JAT("operation", "failureCause")), "%s", body);
        cr_assert_eq(flink_sim_checkpoints_completed(sim, JOB), 0);
        cr_assert_eq(GET(CP), 200);
        cr_assert_eq(JNUM("counts", "failed"), 2);
        cr_assert(cJSON_IsNull(JAT("latest", "completed")));
}

Test(flink_sim, rescale_at_once_on_1_18, .fini = teardown) {
        start((struct flink_sim_options){ .version = "1.18.1", .restart_ms = 500 });
        cr_assert_eq(PUT(RR, BOUNDS(1, 2, 1, 2)), 200);
        cr_assert_eq(flink_sim_rescales(sim, JOB), 1);
        cr_assert_eq(GET("/jobs/" JOB), 200);
        cr_assert_str_eq(JSTR("state"), "RESTARTING");
        wait_running(JOB);
        cr_assert_eq(flink_sim_vertex_parallelism(sim, JOB, SRC), 2);
        cr_assert_eq(flink_sim_vertex_parallelism(sim, JOB, SINK), 2);
        cr_assert_eq(flink_sim_rescales(sim, JOB), 1);
        cr_assert_eq(flink_sim_restarts(sim, JOB), 0);
        cr_assert_eq(GET("/jobs/" JOB), 200);
        cr_assert_eq(JNUM("vertices", "#0", "parallelism"), 2);
        cr_assert_eq(GET("/overview"), 200);
        cr_assert_eq(JNUM("slots-available"), 2);
        cr_assert_eq(GET(RR), 200);
        cr_assert_eq(JNUM(SINK, "parallelism", "upperBound"), 2);

        /* Raising the bound back: the free slots are used at once. */
        cr_assert_eq(PUT(RR, BOUNDS(1, 4, 1, 4)), 200);
        wait_running(JOB);
        cr_assert_eq(flink_sim_vertex_parallelism(sim, JOB, SRC), 4);
        cr_assert_eq(flink_sim_rescales(sim, JOB), 2);
}

/* 1.19/1.20: at once, unless the last rescale was within the cooldown.
 * With a 10 min cooldown a second PUT is not acted on, even after a
 * checkpoint that completes later; with a short one it is, once it ends. */
Test(flink_sim, cooldown_on_1_19_and_1_20, .fini = teardown) {
        for (int i = 0; i < 4; i++) {
                bool long_cooldown = i < 2;
                start((struct flink_sim_options){ .version = i % 2 ? "1.20.0" : "1.19.0", .restart_ms = 40,
                                                  .cooldown_ms = long_cooldown ? 600000 : 200 });
                cr_assert_eq(PUT(RR, BOUNDS(1, 3, 1, 3)), 200);
                cr_assert_eq(flink_sim_rescales(sim, JOB), 1); /* no rescale before: at once */
                wait_running(JOB);
                cr_assert_eq(flink_sim_vertex_parallelism(sim, JOB, SRC), 3);
                cr_assert_eq(PUT(RR, BOUNDS(1, 2, 1, 2)), 200);
                if (long_cooldown) {
                        char path[128];
                        cr_assert_eq(POST(CP, NULL), 202);
                        snprintf(path, sizeof path, CP "/%s", JSTR("request-id"));
                        wait_trigger_done(path);
                        cr_assert(cJSON_IsNumber(JAT("operation", "checkpointId")), "%s", body);
                        cr_assert_str_eq(flink_sim_job_state(sim, JOB), "RUNNING");
                        cr_assert_eq(flink_sim_vertex_parallelism(sim, JOB, SRC), 3, "rescaled within the cooldown");
                        cr_assert_eq(flink_sim_rescales(sim, JOB), 1);
                } else {
                        for (int t = 0; t < 2000 && flink_sim_rescales(sim, JOB) < 2; t++) msleep(5);
                        cr_assert_eq(flink_sim_rescales(sim, JOB), 2, "not rescaled after the cooldown");
                        wait_running(JOB);
                        cr_assert_eq(flink_sim_vertex_parallelism(sim, JOB, SRC), 2);
                }
                stop();
        }
}

/* 2.x: a PUT alone does not rescale; the next completed checkpoint does.
 * Never the other way round: whenever the job is seen rescaled, the
 * checkpoint is seen completed (read in that order, so a rescale before
 * the checkpoint cannot hide). */
Test(flink_sim, rescale_on_checkpoint_on_2_x, .fini = teardown) {
        for (int i = 0; i < 2; i++) {
                start((struct flink_sim_options){ .version = i ? "2.3.0" : "2.0.0", .restart_ms = 40,
                                                  .checkpoint_ms = 300 });
                cr_assert_eq(PUT(RR, BOUNDS(1, 2, 1, 2)), 200);
                cr_assert_str_eq(flink_sim_job_state(sim, JOB), "RUNNING");
                cr_assert_eq(flink_sim_vertex_parallelism(sim, JOB, SRC), 4);
                cr_assert_eq(flink_sim_rescales(sim, JOB), 0);
                cr_assert_eq(POST(CP, NULL), 202);
                cr_assert_str_eq(flink_sim_job_state(sim, JOB), "RUNNING"); /* checkpoint in flight */
                unsigned rescales = 0, completed = 0;
                for (int t = 0; t < 2000 && !(rescales && completed); t++) {
                        rescales = flink_sim_rescales(sim, JOB);
                        completed = flink_sim_checkpoints_completed(sim, JOB);
                        cr_assert(!rescales || completed, "rescaled before the checkpoint completed");
                        msleep(5);
                }
                cr_assert_eq(flink_sim_rescales(sim, JOB), 1, "no rescale after the checkpoint");
                wait_running(JOB);
                cr_assert_eq(flink_sim_vertex_parallelism(sim, JOB, SRC), 2);
                cr_assert_eq(flink_sim_rescales(sim, JOB), 1);
                cr_assert_eq(flink_sim_checkpoints_completed(sim, JOB), 1);
                stop();
        }
}

/* A TaskManager disconnect: a failover (not a rescale) onto the survivors,
 * at min(upper bound, slots); new slots scale the job back up. */
Test(flink_sim, disconnect_restarts_at_lower_parallelism, .fini = teardown) {
        start((struct flink_sim_options){ .version = "1.18.1", .restart_ms = 60 });
        flink_sim_disconnect_taskmanager(sim, TM2);
        cr_assert_str_eq(flink_sim_job_state(sim, JOB), "RESTARTING");
        cr_assert_eq(flink_sim_restarts(sim, JOB), 1);
        wait_running(JOB);
        cr_assert_eq(flink_sim_vertex_parallelism(sim, JOB, SRC), 2);
        cr_assert_eq(flink_sim_vertex_parallelism(sim, JOB, SINK), 2);
        cr_assert_eq(flink_sim_rescales(sim, JOB), 0);
        cr_assert_eq(GET("/overview"), 200);
        cr_assert_eq(JNUM("taskmanagers"), 1);
        cr_assert_eq(JNUM("slots-total"), 2);
        cr_assert_eq(GET("/jobs/" JOB), 200);
        cr_assert_eq(JNUM("vertices", "#0", "tasks", "RUNNING"), 2);

        flink_sim_disconnect_taskmanager(sim, "flink-taskmanager-9-9"); /* unknown: nothing happens */
        cr_assert_eq(flink_sim_restarts(sim, JOB), 1);

        /* Standalone ids carry the IP; the pod hook matches by IP. */
        flink_sim_add_taskmanager(sim, "10.0.0.7:6122-a1b2c3", "10.0.0.7", 2);
        cr_assert_eq(flink_sim_rescales(sim, JOB), 1); /* 1.18: scales up to the bound at once */
        wait_running(JOB);
        cr_assert_eq(flink_sim_vertex_parallelism(sim, JOB, SRC), 4);
        cr_assert_eq(GET("/taskmanagers/10.0.0.7:6122-a1b2c3"), 200, "%s", body);
        flink_sim_pod_terminating(sim, "flink-taskmanager-1-3", "10.0.0.7");
        cr_assert_eq(flink_sim_restarts(sim, JOB), 2);
        wait_running(JOB);
        cr_assert_eq(flink_sim_vertex_parallelism(sim, JOB, SRC), 2);

        /* Bounds lowered, then the eviction: the job ends on the survivors at the bound. */
        flink_sim_add_taskmanager(sim, TM2, "10.0.0.2", 2);
        wait_running(JOB);
        cr_assert_eq(flink_sim_vertex_parallelism(sim, JOB, SRC), 4);
        cr_assert_eq(PUT(RR, BOUNDS(1, 2, 1, 2)), 200);
        flink_sim_pod_terminating(sim, TM2, "10.0.0.2");
        wait_running(JOB);
        cr_assert_eq(flink_sim_vertex_parallelism(sim, JOB, SRC), 2);
        cr_assert_eq(flink_sim_violations(sim), 0);
}

/* Slots a job needs: per slot-sharing group, its widest vertex; jobs of a
 * session cluster fit in order of addition. */
Test(flink_sim, slot_sharing_groups_and_sessions, .fini = teardown) {
        struct flink_sim_options o = { .version = "1.20.0", .restart_ms = 40, .checkpoint_ms = 100 };
        cr_assert_eq(flink_sim_start(&o, &sim), 0);
        flink_sim_url(sim, base, sizeof base);
        h = curl_easy_init();
        for (int i = 0; i < 3; i++) {
                char id[32], ip[32];
                snprintf(id, sizeof id, "tm-%d", i);
                snprintf(ip, sizeof ip, "10.0.1.%d", i);
                flink_sim_add_taskmanager(sim, id, ip, 2);
        }
        flink_sim_add_job(sim, JOB, "two groups");
        flink_sim_add_vertex(sim, JOB, SRC, "Source", 4, 128, "a");
        flink_sim_add_vertex(sim, JOB, SINK, "Sink", 2, 128, "b");
        flink_sim_add_job(sim, JOB2, "small");
        flink_sim_add_vertex(sim, JOB2, OTHER, "Map", 1, 128, NULL);
        cr_assert_eq(GET("/overview"), 200);
        cr_assert_eq(JNUM("slots-available"), 0); /* 4 + 2 + 1 > 6: over-committed by setup */
        cr_assert_eq(GET("/jobs/" JOB), 200);
        cr_assert_str_neq(JSTR("vertices", "#0", "slotSharingGroupId"), JSTR("vertices", "#1", "slotSharingGroupId"));

        /* 4 slots left: JOB (holding 6) no longer fits and fails over; JOB2
         * keeps its slot, so JOB fits the other 3 in proportion: a 4*3/6, b 2*3/6. */
        flink_sim_disconnect_taskmanager(sim, "tm-2");
        cr_assert_eq(flink_sim_restarts(sim, JOB), 1);
        cr_assert_eq(flink_sim_restarts(sim, JOB2), 0);
        wait_running(JOB);
        cr_assert_eq(flink_sim_vertex_parallelism(sim, JOB, SRC), 2);
        cr_assert_eq(flink_sim_vertex_parallelism(sim, JOB, SINK), 1);
        cr_assert_eq(GET("/overview"), 200);
        cr_assert_eq(JNUM("slots-available"), 0);

        /* 2 slots: JOB fails over again and finds 1 free slot for 2 groups:
         * it waits, RESTARTING, until a TaskManager registers; still so
         * after a checkpoint of JOB2 that ends after its restart would. */
        flink_sim_disconnect_taskmanager(sim, "tm-1");
        cr_assert_eq(flink_sim_restarts(sim, JOB), 2);
        cr_assert_eq(flink_sim_restarts(sim, JOB2), 0);
        char path[128];
        cr_assert_eq(POST("/jobs/" JOB2 "/checkpoints", NULL), 202, "%s", body);
        snprintf(path, sizeof path, "/jobs/" JOB2 "/checkpoints/%s", JSTR("request-id"));
        wait_trigger_done(path);
        cr_assert(cJSON_IsNumber(JAT("operation", "checkpointId")), "%s", body);
        cr_assert_str_eq(flink_sim_job_state(sim, JOB), "RESTARTING");
        cr_assert_str_eq(flink_sim_job_state(sim, JOB2), "RUNNING");
        flink_sim_add_taskmanager(sim, "tm-3", "10.0.1.3", 1);
        wait_running(JOB);
        cr_assert_eq(flink_sim_vertex_parallelism(sim, JOB, SRC), 1);
        cr_assert_eq(flink_sim_vertex_parallelism(sim, JOB, SINK), 1);
        cr_assert_eq(flink_sim_violations(sim), 0);
}

Test(flink_sim, taskmanager_ids_may_be_pod_names, .fini = teardown) {
        start((struct flink_sim_options){ .version = "2.0.0" });
        cr_assert_eq(GET("/taskmanagers/" TM1), 200, "%s", body); /* the spec says 32 hex: a known flaw */
        cr_assert_str_eq(JSTR("id"), TM1);
        cr_assert(cJSON_IsArray(JAT("allocatedSlots")));
        cr_assert_eq(GET("/taskmanagers/flink-taskmanager-7-7"), 404);
        cr_assert_eq(GET("/taskmanagers/" TM1 "/logs"), 501); /* in the spec, not simulated */
        char *log = flink_sim_log(sim);
        cr_assert(strstr(log, "501 unsimulated"), "%s", log);
        free(log);
        cr_assert_eq(flink_sim_violations(sim), 0);
}

Test(flink_sim, versions_without_a_spec_are_refused) {
        struct flink_sim_options o = { .version = "1.17.2" };
        cr_assert_eq(flink_sim_start(&o, &sim), -ENOENT);
        o.version = "latest";
        cr_assert_eq(flink_sim_start(&o, &sim), -EINVAL);
        o = (struct flink_sim_options){ .spec_dir = "/nonexistent" };
        cr_assert_eq(flink_sim_start(&o, &sim), -ENOENT);
}
