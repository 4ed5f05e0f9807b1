/* The Kubernetes API simulator itself, over real HTTPS with verification on:
 * what a real API server rejects, it must reject too, or spotd's tests would
 * pass against a server more forgiving than production. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "k8s_sim.h"

#define NODE "/api/v1/nodes/n1"
#define EVICT(ns, pod) "/api/v1/namespaces/" ns "/pods/" pod "/eviction"
#define EVICTION(ns, pod, extra) \
        "{\"apiVersion\":\"policy/v1\",\"kind\":\"Eviction\",\"metadata\":{\"name\":\"" pod \
        "\",\"namespace\":\"" ns "\"}" extra "}"
#define MERGE "application/merge-patch+json"
#define JSONP "application/json-patch+json"
#define JSON "application/json"

static struct k8s_sim *sim;
static CURL *h;           /* one handle: requests share a kept-alive connection */
static char base[64];
static cJSON *J;          /* the last answer, parsed */
static char *body;        /* the last answer, raw */
static char headers[4096];
static CURLcode last_rc;

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static char *slurp(const char *path) {
        FILE *f = fopen(path, "re");
        char *buf = NULL;
        size_t len = 0;
        cr_assert(f, "%s", path);
        cr_assert(getdelim(&buf, &len, 0, f) >= 0);
        fclose(f);
        return buf;
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
        (void)ud;
        strncat(headers, p, sizeof headers - strlen(headers) - 1 < size * n ? sizeof headers - strlen(headers) - 1 : size * n);
        return size * n;
}

static void setup_handle(CURL *c, struct curl_slist *hdrs) {
        curl_easy_setopt(c, CURLOPT_CAINFO, k8s_sim_ca_file(sim));
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
        curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
}

/* A request with the given token (NULL: no Authorization header); the answer
 * lands in J, body and headers. Returns the status, or -1 without one. */
static long req_tok(const char *token, const char *method, const char *path, const char *ctype,
                    const char *data) {
        char url[512], auth[512], ct[128];
        struct curl_slist *hdrs = NULL;
        long status = -1;
        cJSON_Delete(J);
        J = NULL;
        free(body);
        body = NULL;
        headers[0] = 0;
        if (token) {
                snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
                hdrs = curl_slist_append(hdrs, auth);
        }
        snprintf(ct, sizeof ct, "Content-Type:%s%s", ctype ? " " : "", ctype ? ctype : "");
        hdrs = curl_slist_append(hdrs, ct); /* "Content-Type:" alone removes curl's default */
        hdrs = curl_slist_append(hdrs, "Expect:");
        snprintf(url, sizeof url, "%s%s", base, path);
        curl_easy_reset(h);
        setup_handle(h, hdrs);
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, collect_header);
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
        if (data) {
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, data);
                curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(data));
        }
        last_rc = curl_easy_perform(h);
        if (last_rc == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        curl_slist_free_all(hdrs);
        if (!body) body = strdup("");
        J = cJSON_Parse(body);
        return status;
}

static char *token(void) { return slurp(k8s_sim_token_file(sim)); }

static long req(const char *method, const char *path, const char *ctype, const char *data) {
        char *t = token();
        long r = req_tok(t, method, path, ctype, data);
        free(t);
        return r;
}
#define GET(path) req("GET", path, NULL, NULL)

/* Requests sent at once, one connection each, with the current token; the
 * index of each answer in the order they came in lands in order[], the
 * statuses in status[] by request. The order is what tests of delays and
 * concurrency assert: how long anything took is the machine's business. */
struct concurrent_req {
        const char *method, *path, *data;
};
static void concurrently(size_t n, const struct concurrent_req *rq, size_t *order, long *status) {
        char url[8][256], auth[128], *t = token();
        CURL *e[8];
        CURLM *m = curl_multi_init();
        size_t done = 0;
        cr_assert_leq(n, 8);
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", t);
        free(t);
        struct curl_slist *hdrs = curl_slist_append(curl_slist_append(NULL, auth), "Content-Type: application/json");
        for (size_t i = 0; i < n; i++) {
                snprintf(url[i], sizeof url[i], "%s%s", base, rq[i].path);
                e[i] = curl_easy_init();
                setup_handle(e[i], hdrs);
                curl_easy_setopt(e[i], CURLOPT_TIMEOUT_MS, 30000L);
                curl_easy_setopt(e[i], CURLOPT_URL, url[i]);
                curl_easy_setopt(e[i], CURLOPT_CUSTOMREQUEST, rq[i].method);
                if (rq[i].data)
                        curl_easy_setopt(e[i], CURLOPT_POSTFIELDS, rq[i].data);
                curl_easy_setopt(e[i], CURLOPT_WRITEFUNCTION, collect);
                curl_easy_setopt(e[i], CURLOPT_PRIVATE, (void *)(uintptr_t)i);
                curl_multi_add_handle(m, e[i]);
                status[i] = -1;
        }
        for (int running = 1; running || done < n;) {
                curl_multi_perform(m, &running);
                CURLMsg *msg;
                int left;
                while ((msg = curl_multi_info_read(m, &left)))
                        if (msg->msg == CURLMSG_DONE) {
                                void *priv;
                                curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
                                size_t i = (size_t)(uintptr_t)priv;
                                if (msg->data.result == CURLE_OK)
                                        curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status[i]);
                                order[done++] = i;
                        }
                if (running) curl_multi_poll(m, NULL, 0, 100, NULL);
                else if (done < n) break;
        }
        for (size_t i = 0; i < n; i++) {
                curl_multi_remove_handle(m, e[i]);
                curl_easy_cleanup(e[i]);
        }
        curl_multi_cleanup(m);
        curl_slist_free_all(hdrs);
        cr_assert_eq(done, n);
}

/* "a.b.c" in an object. */
static cJSON *at(const cJSON *o, const char *path) {
        char buf[256], *save = NULL;
        snprintf(buf, sizeof buf, "%s", path);
        for (char *k = strtok_r(buf, ".", &save); k && o; k = strtok_r(NULL, ".", &save))
                o = cJSON_GetObjectItemCaseSensitive(o, k);
        return (cJSON *)o;
}
static const char *str(const char *path) {
        const char *v = cJSON_GetStringValue(at(J, path));
        return v ? v : "(none)";
}

/* The answer is a Status with this code and reason. */
#define EXPECT(call, code, reason)                                                                 \
        do {                                                                                       \
                long st_ = (call);                                                                 \
                cr_assert_eq(st_, code, "%s: got %ld, want %d: %s", #call, st_, code, body);       \
                cr_assert_str_eq(str("kind"), "Status", "%s", body);                               \
                cr_assert_str_eq(str("apiVersion"), "v1", "%s", body);                             \
                cr_assert_str_eq(str("status"), (code) < 300 ? "Success" : "Failure", "%s", body); \
                if (reason) cr_assert_str_eq(str("reason"), (const char *)(reason), "%s", body);   \
                cr_assert_eq(cJSON_GetNumberValue(at(J, "code")), code, "%s", body);               \
        } while (0)

static unsigned long long node_rv(void) {
        char *n = k8s_sim_node_json(sim, "n1");
        cJSON *j = cJSON_Parse(n);
        unsigned long long rv = strtoull(cJSON_GetStringValue(at(j, "metadata.resourceVersion")), NULL, 10);
        cJSON_Delete(j);
        free(n);
        return rv;
}

static const char *ann(const char *key) {
        const char *v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(at(J, "metadata.annotations"), key));
        return v ? v : "(none)";
}

static int items(void) { return cJSON_GetArraySize(at(J, "items")); }

static void start_with(const struct k8s_sim_options *o) {
        cr_assert_eq(k8s_sim_start(o, &sim), 0);
        k8s_sim_url(sim, base, sizeof base);
        h = curl_easy_init();
        k8s_sim_add_node(sim, "n1", "kubernetes.io/hostname=n1,pool=spot");
        k8s_sim_add_node(sim, "n2", "kubernetes.io/hostname=n2");
        k8s_sim_add_pod(sim, "flink", "tm-1", "n1", "app=job,component=taskmanager", 30, "ReplicaSet");
        k8s_sim_add_pod(sim, "flink", "tm-2", "n1", "app=job,component=taskmanager", 30, "ReplicaSet");
        k8s_sim_add_pod(sim, "flink", "tm-3", "n2", "app=job,component=taskmanager", 30, "ReplicaSet");
        k8s_sim_add_pod(sim, "flink", "jm", "n2", "app=job,component=jobmanager", 30, NULL);
        k8s_sim_add_pod(sim, "default", "web-1", "n1", "app=web", 30, "ReplicaSet");
        k8s_sim_add_pod(sim, "kube-system", "ds-1", "n1", "k8s-app=proxy", 30, "DaemonSet");
}
static void start(void) { start_with(NULL); }
static void stop(void) {
        curl_easy_cleanup(h);
        h = NULL;
        cJSON_Delete(J);
        J = NULL;
        free(body);
        body = NULL;
        sim = k8s_sim_stop(sim);
}

TestSuite(k8s_sim, .init = start, .fini = stop, .timeout = 60);

/* ---- TLS and authentication ---- */

Test(k8s_sim, tls_verification_is_strict) {
        char *ca = slurp(k8s_sim_ca_file(sim)), *t = token(), url[128], resolve[128];
        cr_assert(strncmp(ca, "-----BEGIN CERTIFICATE-----", 27) == 0);
        cr_assert_str_eq(t, "sim-token-1", "the token file holds the token, no newline");
        free(ca);
        free(t);
        cr_assert_eq(GET(NODE), 200);

        /* The server certificate is not self-signed: without curl's partial
         * chains, trusting it alone is not enough, the chain ends at the CA.
         * (Another simulator's CA is refused: two_simulators_and_their_files.) */
        char server_crt[512];
        snprintf(server_crt, sizeof server_crt, "%s", k8s_sim_ca_file(sim));
        strcpy(strrchr(server_crt, '/'), "/server.crt");
        CURL *c = curl_easy_init();
        curl_easy_setopt(c, CURLOPT_URL, base);
        curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
        curl_easy_setopt(c, CURLOPT_CAINFO, server_crt);
        curl_easy_setopt(c, CURLOPT_SSL_OPTIONS, (long)CURLSSLOPT_NO_PARTIALCHAIN);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
        CURLcode rc0 = curl_easy_perform(c);
        cr_assert_eq(rc0, CURLE_PEER_FAILED_VERIFICATION, "%s", curl_easy_strerror(rc0));
        curl_easy_cleanup(c);

        /* The name is checked: localhost is in the certificate, another name is not. */
        for (int i = 0; i < 2; i++) {
                const char *host = i ? "kubernetes.invalid" : "localhost";
                struct curl_slist *res;
                snprintf(resolve, sizeof resolve, "%s:%u:127.0.0.1", host, k8s_sim_port(sim));
                snprintf(url, sizeof url, "https://%s:%u/api/v1/nodes/n1", host, k8s_sim_port(sim));
                res = curl_slist_append(NULL, resolve);
                c = curl_easy_init();
                setup_handle(c, NULL);
                curl_easy_setopt(c, CURLOPT_RESOLVE, res);
                curl_easy_setopt(c, CURLOPT_URL, url);
                curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
                CURLcode rc = curl_easy_perform(c);
                cr_assert_eq(rc, i ? CURLE_PEER_FAILED_VERIFICATION : CURLE_OK, "%s: %s", host, curl_easy_strerror(rc));
                curl_easy_cleanup(c);
                curl_slist_free_all(res);
        }
}

Test(k8s_sim, unauthorized_answers_401_status) {
        static const char want[] = "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},"
                "\"status\":\"Failure\",\"message\":\"Unauthorized\",\"reason\":\"Unauthorized\",\"code\":401}";
        EXPECT(req_tok(NULL, "GET", NODE, NULL, NULL), 401, "Unauthorized");
        cr_assert_str_eq(body, want);
        EXPECT(req_tok("sim-token-2", "GET", NODE, NULL, NULL), 401, "Unauthorized");
        EXPECT(req_tok("sim-token-1 ", "GET", NODE, NULL, NULL), 401, "Unauthorized");
        cr_assert_eq(k8s_sim_unauthorized(sim), 3);
        cr_assert_eq(GET(NODE), 200);
}

Test(k8s_sim, rotated_token_makes_the_old_one_401) {
        cr_assert_eq(req_tok("sim-token-1", "GET", NODE, NULL, NULL), 200);
        k8s_sim_rotate_token(sim, "sim-token-2");
        EXPECT(req_tok("sim-token-1", "GET", NODE, NULL, NULL), 401, "Unauthorized");
        char *t = token();
        cr_assert_str_eq(t, "sim-token-2");
        free(t);
        cr_assert_eq(GET(NODE), 200);
        cr_assert_eq(k8s_sim_unauthorized(sim), 1);
}

/* ---- nodes ---- */

Test(k8s_sim, node_is_shaped_like_the_real_one) {
        cr_assert_eq(GET(NODE), 200);
        cr_assert_str_eq(str("kind"), "Node");
        cr_assert_str_eq(str("apiVersion"), "v1");
        cr_assert_str_eq(str("metadata.name"), "n1");
        cr_assert_eq(strlen(str("metadata.uid")), 36);
        cr_assert(cJSON_IsString(at(J, "metadata.resourceVersion")), "resourceVersion is a string");
        cr_assert_str_eq(str("metadata.labels.pool"), "spot");
        cr_assert(cJSON_IsObject(at(J, "metadata.annotations")));
        cr_assert_null(at(J, "spec.unschedulable"));
        cr_assert_null(at(J, "spec.taints"));
        cr_assert_eq(strlen(str("metadata.creationTimestamp")), 20);
}

Test(k8s_sim, unknown_paths_404_and_wrong_methods_405) {
        EXPECT(GET("/api/v1/nodes/nope"), 404, "NotFound");
        cr_assert_str_eq(str("details.kind"), "nodes");
        cr_assert_str_eq(str("message"), "nodes \"nope\" not found");
        EXPECT(GET("/api/v1/nodes/n1/"), 404, "NotFound");
        EXPECT(GET("/api/v1//nodes/n1"), 404, "NotFound");
        EXPECT(GET("/apis/apps/v1/deployments"), 404, "NotFound");
        EXPECT(GET("/api/v1/namespaces/flink/pods/tm-1/log"), 404, "NotFound");
        EXPECT(req("POST", NODE, JSON, "{}"), 405, "MethodNotAllowed");
        cr_assert(strcasestr(headers, "Allow: GET, PATCH"), "%s", headers);
        EXPECT(req("DELETE", NODE, NULL, NULL), 405, "MethodNotAllowed");
        EXPECT(req("GET", EVICT("flink", "tm-1"), NULL, NULL), 405, "MethodNotAllowed");
        EXPECT(req("POST", "/api/v1/pods", JSON, "{}"), 405, "MethodNotAllowed");
        EXPECT(req("GET", "/api/v1/namespaces/default/events", NULL, NULL), 405, "MethodNotAllowed");
}

Test(k8s_sim, patch_needs_a_patch_media_type) {
        unsigned long long rv = node_rv();
        EXPECT(req("PATCH", NODE, JSON, "{\"spec\":{\"unschedulable\":true}}"), 415, "UnsupportedMediaType");
        EXPECT(req("PATCH", NODE, NULL, "{\"spec\":{\"unschedulable\":true}}"), 415, "UnsupportedMediaType");
        EXPECT(req("PATCH", NODE, "text/plain", "{\"spec\":{\"unschedulable\":true}}"), 415, "UnsupportedMediaType");
        EXPECT(req("PATCH", NODE, "application/apply-patch+yaml", "spec: {}"), 415, "UnsupportedMediaType");
        cr_assert_eq(node_rv(), rv, "a rejected patch changes nothing");
}

Test(k8s_sim, merge_patch_cordons_and_annotates) {
        unsigned long long rv = node_rv();
        cr_assert_eq(req("PATCH", NODE, "application/strategic-merge-patch+json",
                         "{\"spec\":{\"unschedulable\":true}}"), 200, "%s", body);
        cr_assert(cJSON_IsTrue(at(J, "spec.unschedulable")));
        cr_assert_str_eq(str("kind"), "Node", "the answer is the whole node");
        cr_assert_gt(node_rv(), rv, "a write bumps resourceVersion");
        cr_assert_eq(req("PATCH", NODE, MERGE "; charset=utf-8",
                         "{\"metadata\":{\"annotations\":{\"spotd.io/event\":\"e1\",\"spotd.io/phase\":\"fence\"}}}"), 200, "%s", body);
        cr_assert_str_eq(ann("spotd.io/phase"), "fence");
        unsigned long long before = node_rv();
        cr_assert_eq(req("PATCH", NODE, MERGE, "{\"spec\":{\"unschedulable\":true}}"), 200);
        cr_assert_eq(node_rv(), before, "a patch that changes nothing is no write");
        cr_assert_eq(req("PATCH", NODE, MERGE, "{\"metadata\":{\"annotations\":{\"spotd.io/phase\":null}}}"), 200);
        cr_assert_str_eq(ann("spotd.io/phase"), "(none)", "null deletes the key");
        cr_assert_str_eq(ann("spotd.io/event"), "e1", "objects merge");
        cr_assert_str_eq(str("metadata.labels.pool"), "spot");
        char *n = k8s_sim_node_json(sim, "n1");
        cr_assert(strstr(n, "\"unschedulable\":true") && strstr(n, "spotd.io/event"), "%s", n);
        free(n);
        k8s_sim_set_unschedulable(sim, "n1", false);
        cr_assert_eq(GET(NODE), 200);
        cr_assert_null(at(J, "spec.unschedulable"));
}

Test(k8s_sim, stale_resource_version_is_a_conflict) {
        char patch[512];
        unsigned long long rv = node_rv();
        snprintf(patch, sizeof patch, "{\"metadata\":{\"resourceVersion\":\"%llu\"},\"spec\":{\"taints\":"
                 "[{\"key\":\"spotd.io/interruption\",\"value\":\"spot\",\"effect\":\"NoSchedule\"}]}}", rv);
        k8s_sim_set_unschedulable(sim, "n1", true); /* another writer wins */
        EXPECT(req("PATCH", NODE, MERGE, patch), 409, "Conflict");
        cr_assert(strstr(str("message"), "the object has been modified"), "%s", body);
        cr_assert_eq(GET(NODE), 200);
        cr_assert_null(at(J, "spec.taints"));
        snprintf(patch, sizeof patch, "{\"metadata\":{\"resourceVersion\":\"%s\"},\"spec\":{\"taints\":"
                 "[{\"key\":\"spotd.io/interruption\",\"value\":\"spot\",\"effect\":\"NoSchedule\"}]}}",
                 str("metadata.resourceVersion"));
        cr_assert_eq(req("PATCH", NODE, MERGE, patch), 200, "%s", body);
        cr_assert_str_eq(str("spec.taints.0.key"), "(none)"); /* at() walks objects only */
        cr_assert_str_eq(cJSON_GetStringValue(at(cJSON_GetArrayItem(at(J, "spec.taints"), 0), "effect")), "NoSchedule");
}

Test(k8s_sim, forced_conflicts_then_success) {
        k8s_sim_conflict(sim, "n1", 2);
        EXPECT(req("PATCH", NODE, MERGE, "{\"spec\":{\"unschedulable\":true}}"), 409, "Conflict");
        EXPECT(req("PATCH", NODE, MERGE, "{\"spec\":{\"unschedulable\":true}}"), 409, "Conflict");
        cr_assert_eq(req("PATCH", NODE, MERGE, "{\"spec\":{\"unschedulable\":true}}"), 200);
        cr_assert_eq(k8s_sim_requests(sim, "PATCH", NODE), 3);
}

Test(k8s_sim, json_patch_with_test_op) {
        char patch[1024];
        cr_assert_eq(GET(NODE), 200);
        char *rv = strdup(str("metadata.resourceVersion"));
        snprintf(patch, sizeof patch,
                 "[{\"op\":\"test\",\"path\":\"/metadata/resourceVersion\",\"value\":\"%s\"},"
                 "{\"op\":\"add\",\"path\":\"/spec/taints\",\"value\":[{\"key\":\"a\",\"effect\":\"NoSchedule\"}]},"
                 "{\"op\":\"add\",\"path\":\"/spec/taints/-\",\"value\":{\"key\":\"b\",\"value\":\"\",\"effect\":\"NoExecute\"}},"
                 "{\"op\":\"add\",\"path\":\"/metadata/annotations/spotd.io~1phase\",\"value\":\"fence\"},"
                 "{\"op\":\"replace\",\"path\":\"/metadata/labels/pool\",\"value\":\"drained\"}]", rv);
        cr_assert_eq(req("PATCH", NODE, JSONP, patch), 200, "%s", body);
        cr_assert_eq(cJSON_GetArraySize(at(J, "spec.taints")), 2);
        cr_assert_str_eq(ann("spotd.io/phase"), "fence", "~1 is a slash");
        cr_assert_str_eq(str("metadata.labels.pool"), "drained");

        /* The same patch again: the test op now fails. */
        unsigned long long after = node_rv();
        EXPECT(req("PATCH", NODE, JSONP, patch), 422, "Invalid");
        EXPECT(req("PATCH", NODE, JSONP, "[{\"op\":\"remove\",\"path\":\"/metadata/annotations/missing\"}]"), 422, "Invalid");
        EXPECT(req("PATCH", NODE, JSONP, "[{\"op\":\"replace\",\"path\":\"/spec/taints/5\",\"value\":{}}]"), 422, "Invalid");
        EXPECT(req("PATCH", NODE, JSONP, "[{\"op\":\"frobnicate\",\"path\":\"/spec\"}]"), 422, "Invalid");
        EXPECT(req("PATCH", NODE, JSONP, "{\"op\":\"add\"}"), 400, "BadRequest");
        EXPECT(req("PATCH", NODE, JSONP, "[{\"op\":\"add\",\"path\":\"/spec/taints/0\",\"value\":{\"key\":\"a\",\"effect\":\"Nope\"}}]"), 422, "Invalid");
        cr_assert_eq(node_rv(), after);
        cr_assert_eq(req("PATCH", NODE, JSONP, "[{\"op\":\"remove\",\"path\":\"/spec/taints/0\"}]"), 200, "%s", body);
        cr_assert_eq(cJSON_GetArraySize(at(J, "spec.taints")), 1);
        free(rv);
}

/* A merge patch that validation must refuse, leaving the node as it was. */
static void patch_invalid(const char *patch, const char *field) {
        unsigned long long rv = node_rv();
        EXPECT(req("PATCH", NODE, MERGE, patch), 422, "Invalid");
        cJSON *cause = cJSON_GetArrayItem(at(J, "details.causes"), 0);
        cr_assert_str_eq(cJSON_GetStringValue(at(cause, "field")), field, "%s", body);
        cr_assert_str_eq(str("details.kind"), "Node");
        cr_assert_eq(node_rv(), rv, "unchanged");
}

Test(k8s_sim, invalid_taint_effect) {
        patch_invalid("{\"spec\":{\"taints\":[{\"key\":\"k\",\"effect\":\"NoEvict\"}]}}", "spec.taints[0].effect");
        patch_invalid("{\"spec\":{\"taints\":[{\"key\":\"k\"}]}}", "spec.taints[0].effect");
}
Test(k8s_sim, invalid_taint_key) {
        patch_invalid("{\"spec\":{\"taints\":[{\"key\":\"spotd.io/\",\"effect\":\"NoSchedule\"}]}}", "spec.taints[0].key");
        patch_invalid("{\"spec\":{\"taints\":[{\"key\":\"Spotd.IO/x\",\"effect\":\"NoSchedule\"}]}}", "spec.taints[0].key");
        patch_invalid("{\"spec\":{\"taints\":[{\"key\":\"-x\",\"effect\":\"NoSchedule\"}]}}", "spec.taints[0].key");
        patch_invalid("{\"spec\":{\"taints\":[{\"effect\":\"NoSchedule\"}]}}", "spec.taints[0].key");
        patch_invalid("{\"spec\":{\"taints\":[{\"key\":\"a/b/c\",\"effect\":\"NoSchedule\"}]}}", "spec.taints[0].key");
}
Test(k8s_sim, invalid_taint_value) {
        patch_invalid("{\"spec\":{\"taints\":[{\"key\":\"k\",\"value\":\"spot:interruption\",\"effect\":\"NoSchedule\"}]}}", "spec.taints[0].value");
        patch_invalid("{\"spec\":{\"taints\":[{\"key\":\"k\",\"value\":\"0123456789012345678901234567890123456789012345678901234567890123\",\"effect\":\"NoSchedule\"}]}}", "spec.taints[0].value");
        patch_invalid("{\"spec\":{\"taints\":[{\"key\":\"k\",\"value\":7,\"effect\":\"NoSchedule\"}]}}", "spec.taints[0].value");
}
Test(k8s_sim, duplicate_taint) {
        patch_invalid("{\"spec\":{\"taints\":[{\"key\":\"k\",\"value\":\"a\",\"effect\":\"NoSchedule\"},"
                      "{\"key\":\"x\",\"effect\":\"NoSchedule\"},{\"key\":\"k\",\"value\":\"b\",\"effect\":\"NoSchedule\"}]}}",
                      "spec.taints[2]");
        /* Same key, another effect: fine. */
        cr_assert_eq(req("PATCH", NODE, MERGE, "{\"spec\":{\"taints\":[{\"key\":\"k\",\"effect\":\"NoSchedule\"},"
                         "{\"key\":\"k\",\"effect\":\"NoExecute\"}]}}"), 200, "%s", body);
}
Test(k8s_sim, taints_must_be_a_list_of_objects) {
        patch_invalid("{\"spec\":{\"taints\":{\"key\":\"k\",\"effect\":\"NoSchedule\"}}}", "spec.taints");
        patch_invalid("{\"spec\":{\"taints\":[\"k:NoSchedule\"]}}", "spec.taints[0]");
}
Test(k8s_sim, unschedulable_must_be_a_bool) {
        patch_invalid("{\"spec\":{\"unschedulable\":\"true\"}}", "spec.unschedulable");
        patch_invalid("{\"spec\":{\"unschedulable\":1}}", "spec.unschedulable");
}
Test(k8s_sim, annotation_values_must_be_strings) {
        patch_invalid("{\"metadata\":{\"annotations\":{\"spotd.io/phase\":3}}}", "metadata.annotations[spotd.io/phase]");
        patch_invalid("{\"metadata\":{\"annotations\":{\"spotd.io/phase\":{\"a\":\"b\"}}}}", "metadata.annotations[spotd.io/phase]");
}
Test(k8s_sim, annotation_keys_must_be_qualified_names) {
        patch_invalid("{\"metadata\":{\"annotations\":{\"spotd.io/phase one\":\"x\"}}}", "metadata.annotations");
        patch_invalid("{\"metadata\":{\"annotations\":{\"_spotd.io/x\":\"x\"}}}", "metadata.annotations");
}
Test(k8s_sim, annotations_are_bounded) {
        size_t n = 256 * 1024;
        char *patch = malloc(n + 128);
        int off = sprintf(patch, "{\"metadata\":{\"annotations\":{\"spotd.io/big\":\"");
        memset(patch + off, 'x', n);
        strcpy(patch + off + n, "\"}}}");
        patch_invalid(patch, "metadata.annotations");
        free(patch);
}
Test(k8s_sim, name_and_uid_are_immutable) {
        patch_invalid("{\"metadata\":{\"name\":\"n3\"}}", "metadata.name");
        patch_invalid("{\"metadata\":{\"uid\":\"00000000-0000-4000-8000-000000000000\"}}", "metadata.uid");
        patch_invalid("{\"metadata\":{\"uid\":null}}", "metadata.uid");
}
Test(k8s_sim, malformed_patch_is_a_bad_request) {
        EXPECT(req("PATCH", NODE, MERGE, "{\"spec\":"), 400, "BadRequest");
        EXPECT(req("PATCH", NODE, MERGE, "[1,2]"), 400, "BadRequest");
        EXPECT(req("PATCH", NODE, MERGE, "{\"spec\":{}} {}"), 400, "BadRequest");
        cr_assert_eq(req("PATCH", NODE, MERGE, "{\"spec\":{}}\n"), 200, "trailing whitespace is fine");
        EXPECT(req("PATCH", NODE, MERGE, ""), 400, "BadRequest");
        EXPECT(req("PATCH", NODE, MERGE, "{\"metadata\":{\"resourceVersion\":12}}"), 400, "BadRequest");
}

/* ---- pod lists ---- */

Test(k8s_sim, pods_by_node_and_labels) {
        cr_assert_eq(GET("/api/v1/pods?fieldSelector=spec.nodeName%3Dn1"), 200, "%s", body);
        cr_assert_str_eq(str("kind"), "PodList");
        cr_assert_str_eq(str("apiVersion"), "v1");
        cr_assert(cJSON_IsString(at(J, "metadata.resourceVersion")));
        cr_assert_eq(items(), 4);
        cJSON *first = cJSON_GetArrayItem(at(J, "items"), 0);
        cr_assert_null(at(first, "kind"), "list items carry no kind, as from the real server");
        cr_assert_str_eq(cJSON_GetStringValue(at(first, "spec.nodeName")), "n1");
        cr_assert_str_eq(cJSON_GetStringValue(at(first, "status.phase")), "Running");
        cr_assert_str_eq(cJSON_GetStringValue(at(first, "status.podIP")), "10.0.0.1");
        cJSON *owner = cJSON_GetArrayItem(at(first, "metadata.ownerReferences"), 0);
        cr_assert_str_eq(cJSON_GetStringValue(at(owner, "kind")), "ReplicaSet");
        cr_assert(cJSON_IsTrue(at(owner, "controller")));

        cr_assert_eq(GET("/api/v1/pods?fieldSelector=spec.nodeName%3D%3Dn1&labelSelector=component%3Dtaskmanager"), 200);
        cr_assert_eq(items(), 2);
        cr_assert_eq(GET("/api/v1/pods?fieldSelector=spec.nodeName%3Dn1%2Cmetadata.namespace%3Dflink"), 200, "%s", body);
        cr_assert_eq(items(), 2);
        cr_assert_eq(GET("/api/v1/namespaces/flink/pods?fieldSelector=spec.nodeName%3Dn2"), 200);
        cr_assert_eq(items(), 2);
        cr_assert_eq(GET("/api/v1/pods?fieldSelector=spec.nodeName%3Dn9"), 200);
        cr_assert_eq(items(), 0);
        cr_assert(cJSON_IsArray(at(J, "items")), "an empty list is [], not null");
        cr_assert_eq(k8s_sim_cluster_wide_pod_lists(sim), 0);
}

static int count(const char *labels) {
        char path[512];
        char *esc = curl_easy_escape(h, labels, 0);
        snprintf(path, sizeof path, "/api/v1/pods?fieldSelector=spec.nodeName%%3Dn1&labelSelector=%s", esc);
        curl_free(esc);
        long st = GET(path);
        return st == 200 ? items() : -(int)st;
}

Test(k8s_sim, label_selector_grammar) {
        cr_assert_eq(count(""), 4);
        cr_assert_eq(count("app=job"), 2);
        cr_assert_eq(count("app==job"), 2);
        cr_assert_eq(count("app!=job"), 2, "pods without the label match !=");
        cr_assert_eq(count("component in (taskmanager, jobmanager)"), 2);
        cr_assert_eq(count("app notin (job)"), 2);
        cr_assert_eq(count("app"), 3);
        cr_assert_eq(count("!app"), 1);
        cr_assert_eq(count("app=job,component=taskmanager"), 2);
        cr_assert_eq(count(" app = job , !k8s-app "), 2);
        cr_assert_eq(count("app=job,component=jobmanager"), 0);
        static const char *const bad[] = { "app in job", "app in ()", "=job", "app job", "app=job,",
                                           "-app=x", "app=a b", "app in (a", "!app=job", "app=-x-" };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                cr_assert_eq(count(bad[i]), -400, "%s accepted", bad[i]);
                cr_assert_str_eq(str("reason"), "BadRequest");
        }
}

Test(k8s_sim, unsupported_field_selector_is_a_bad_request) {
        EXPECT(GET("/api/v1/pods?fieldSelector=spec.host%3Dn1"), 400, "BadRequest");
        cr_assert_str_eq(str("message"), "field label not supported: spec.host");
        EXPECT(GET("/api/v1/pods?fieldSelector=spec.nodeName"), 400, "BadRequest");
        EXPECT(GET("/api/v1/namespaces/flink/pods?fieldSelector=metadata.labels%3Dx"), 400, "BadRequest");
        cr_assert_eq(GET("/api/v1/pods?fieldSelector=status.phase%21%3DSucceeded,spec.nodeName%3Dn2"), 200, "%s", body);
        cr_assert_eq(items(), 2);
}

Test(k8s_sim, cluster_wide_pod_lists_are_counted) {
        cr_assert_eq(GET("/api/v1/pods"), 200);
        cr_assert_eq(items(), 6);
        cr_assert_eq(GET("/api/v1/pods?labelSelector=app%3Djob"), 200);
        cr_assert_eq(GET("/api/v1/pods?fieldSelector=spec.nodeName%21%3Dn1"), 200);
        cr_assert_eq(k8s_sim_cluster_wide_pod_lists(sim), 3);
        cr_assert_eq(GET("/api/v1/pods?fieldSelector=spec.nodeName%3Dn1"), 200);
        cr_assert_eq(GET("/api/v1/namespaces/flink/pods"), 200);
        cr_assert_eq(k8s_sim_cluster_wide_pod_lists(sim), 3);
}

/* ---- evictions ---- */

/* Waits up to ms for a pod to reach a lifecycle state. */
static bool pod_reaches(const char *ns, const char *name, int state, unsigned ms) {
        for (unsigned t = 0; t < ms; t += 10) {
                if (k8s_sim_pod_state(sim, ns, name) == state) return true;
                usleep(10000);
        }
        return k8s_sim_pod_state(sim, ns, name) == state;
}

Test(k8s_sim, eviction_terminates_then_pod_is_gone) {
        /* 50 ms per grace second: tm-2, evicted first with 600 s of grace,
         * terminates for 30 s; tm-1, evicted after it with 20 s, for 1 s.
         * The grace period decides which is gone first, not the order. */
        struct k8s_sim_options o = { .grace_ms_per_s = 50 };
        stop();
        start_with(&o);
        uint64_t t0 = now_usec(), first, last;
        EXPECT(req("POST", EVICT("flink", "tm-2"), JSON,
                   EVICTION("flink", "tm-2", ",\"deleteOptions\":{\"gracePeriodSeconds\":600}")), 201, NULL);
        k8s_sim_eviction_window(sim, &first, &last);
        cr_assert(first >= t0 && first == last, "one eviction: first == last");
        EXPECT(req("POST", EVICT("flink", "tm-1"), JSON,
                   EVICTION("flink", "tm-1", ",\"deleteOptions\":{\"gracePeriodSeconds\":20}")), 201, NULL);
        cr_assert_eq(k8s_sim_pod_state(sim, "flink", "tm-1"), 1);
        cr_assert_eq(GET("/api/v1/namespaces/flink/pods/tm-1"), 200);
        cr_assert_neq(strcmp(str("metadata.deletionTimestamp"), "(none)"), 0, "%s", body);
        cr_assert_eq(cJSON_GetNumberValue(at(J, "metadata.deletionGracePeriodSeconds")), 20);
        /* Terminating pods are still listed. */
        cr_assert_eq(GET("/api/v1/pods?fieldSelector=spec.nodeName%3Dn1"), 200);
        cr_assert_eq(items(), 4);

        cr_assert(pod_reaches("flink", "tm-1", 2, 20000), "tm-1 never gone");
        cr_assert_eq(k8s_sim_pod_state(sim, "flink", "tm-2"), 1, "tm-2, evicted first with a longer grace, still terminating");
        EXPECT(GET("/api/v1/namespaces/flink/pods/tm-1"), 404, "NotFound");
        cr_assert_eq(GET("/api/v1/pods?fieldSelector=spec.nodeName%3Dn1"), 200);
        cr_assert_eq(items(), 3, "gone pods are not listed");
        EXPECT(req("POST", EVICT("flink", "tm-1"), JSON, EVICTION("flink", "tm-1", "")), 404, "NotFound");
        cr_assert_eq(GET("/api/v1/namespaces/flink/pods/tm-2"), 200);
        cr_assert_eq(cJSON_GetNumberValue(at(J, "metadata.deletionGracePeriodSeconds")), 600);
        /* A grace period of 0 ends the termination at once. */
        EXPECT(req("POST", EVICT("flink", "tm-2"), JSON,
                   EVICTION("flink", "tm-2", ",\"deleteOptions\":{\"gracePeriodSeconds\":0}")), 201, NULL);
        cr_assert_eq(k8s_sim_pod_state(sim, "flink", "tm-2"), 2);

        /* Without a grace period in the request: the pod's own (30 s). */
        EXPECT(req("POST", EVICT("flink", "tm-3"), JSON, EVICTION("flink", "tm-3", "")), 201, NULL);
        cr_assert_eq(GET("/api/v1/namespaces/flink/pods/tm-3"), 200);
        cr_assert_eq(cJSON_GetNumberValue(at(J, "metadata.deletionGracePeriodSeconds")), 30);
        k8s_sim_eviction_window(sim, &first, &last);
        cr_assert_gt(last, first);
        cr_assert_eq(k8s_sim_evictions(sim, "flink", "tm-1"), 1);
        cr_assert_eq(k8s_sim_eviction_attempts(sim, "flink", "tm-1"), 2);
}

Test(k8s_sim, evicting_a_terminating_pod_is_accepted_again) {
        EXPECT(req("POST", EVICT("flink", "tm-1"), JSON, EVICTION("flink", "tm-1", "")), 201, NULL);
        EXPECT(req("POST", EVICT("flink", "tm-1"), JSON, EVICTION("flink", "tm-1", "")), 201, NULL);
        cr_assert_eq(k8s_sim_evictions(sim, "flink", "tm-1"), 1);
        cr_assert_eq(k8s_sim_eviction_attempts(sim, "flink", "tm-1"), 2);
        /* A shorter grace period shortens the termination. */
        EXPECT(req("POST", EVICT("flink", "tm-1"), JSON,
                   EVICTION("flink", "tm-1", ",\"deleteOptions\":{\"gracePeriodSeconds\":0}")), 201, NULL);
        cr_assert_eq(k8s_sim_pod_state(sim, "flink", "tm-1"), 2);
}

Test(k8s_sim, eviction_needs_json) {
        EXPECT(req("POST", EVICT("flink", "tm-1"), "application/x-www-form-urlencoded", EVICTION("flink", "tm-1", "")),
               415, "UnsupportedMediaType");
        EXPECT(req("POST", EVICT("flink", "tm-1"), NULL, EVICTION("flink", "tm-1", "")), 415, "UnsupportedMediaType");
        cr_assert_eq(k8s_sim_pod_state(sim, "flink", "tm-1"), 0);
}
Test(k8s_sim, eviction_must_be_an_eviction) {
        EXPECT(req("POST", EVICT("flink", "tm-1"), JSON, "{\"kind\":\"Eviction\",\"metadata\":{\"name\":\"tm-1\"}}"), 400, "BadRequest");
        EXPECT(req("POST", EVICT("flink", "tm-1"), JSON, "{\"apiVersion\":\"v1\",\"kind\":\"Eviction\",\"metadata\":{\"name\":\"tm-1\"}}"), 400, "BadRequest");
        EXPECT(req("POST", EVICT("flink", "tm-1"), JSON, "{\"apiVersion\":\"policy/v1\",\"kind\":\"DeleteOptions\",\"metadata\":{\"name\":\"tm-1\"}}"), 400, "BadRequest");
        EXPECT(req("POST", EVICT("flink", "tm-1"), JSON, "{\"apiVersion\":\"policy/v1\",\"kind\":\"Eviction\""), 400, "BadRequest");
        EXPECT(req("POST", EVICT("flink", "tm-1"), JSON, ""), 400, "BadRequest");
        EXPECT(req("POST", EVICT("flink", "tm-1"), JSON, "{\"apiVersion\":\"policy/v1beta1\",\"kind\":\"Eviction\",\"metadata\":{\"name\":\"tm-1\"}}"), 201, NULL);
}
Test(k8s_sim, eviction_name_must_match) {
        EXPECT(req("POST", EVICT("flink", "tm-1"), JSON, EVICTION("flink", "tm-2", "")), 400, "BadRequest");
        EXPECT(req("POST", EVICT("flink", "tm-1"), JSON, "{\"apiVersion\":\"policy/v1\",\"kind\":\"Eviction\"}"), 400, "BadRequest");
        cr_assert_eq(k8s_sim_pod_state(sim, "flink", "tm-2"), 0);
}
Test(k8s_sim, eviction_namespace_must_match) {
        EXPECT(req("POST", EVICT("flink", "tm-1"), JSON, EVICTION("default", "tm-1", "")), 400, "BadRequest");
        cr_assert_eq(k8s_sim_pod_state(sim, "flink", "tm-1"), 0);
}
/* A grace period that is not an integer is refused; a negative one is
 * taken as 1 s, as kube-apiserver does (tests/kube/sim_compare.py). */
Test(k8s_sim, eviction_grace_negative_is_one_second) {
        EXPECT(req("POST", EVICT("flink", "tm-1"), JSON,
                   EVICTION("flink", "tm-1", ",\"deleteOptions\":{\"gracePeriodSeconds\":1.5}")), 400, "BadRequest");
        EXPECT(req("POST", EVICT("flink", "tm-1"), JSON,
                   EVICTION("flink", "tm-1", ",\"deleteOptions\":{\"gracePeriodSeconds\":\"5\"}")), 400, "BadRequest");
        cr_assert_eq(k8s_sim_pod_state(sim, "flink", "tm-1"), 0);
        EXPECT(req("POST", EVICT("flink", "tm-1"), JSON,
                   EVICTION("flink", "tm-1", ",\"deleteOptions\":{\"gracePeriodSeconds\":-1}")), 201, NULL);
        cr_assert_eq(k8s_sim_pod_state(sim, "flink", "tm-1"), 1);
        cr_assert_eq(GET("/api/v1/namespaces/flink/pods/tm-1"), 200);
        cr_assert_eq(cJSON_GetNumberValue(at(J, "metadata.deletionGracePeriodSeconds")), 1, "%s", body);
}
Test(k8s_sim, eviction_uid_precondition) {
        cr_assert_eq(GET("/api/v1/namespaces/flink/pods/tm-1"), 200);
        char good[512];
        snprintf(good, sizeof good, EVICTION("flink", "tm-1", ",\"deleteOptions\":{\"preconditions\":{\"uid\":\"%s\"}}"),
                 str("metadata.uid"));
        EXPECT(req("POST", EVICT("flink", "tm-1"), JSON,
                   EVICTION("flink", "tm-1", ",\"deleteOptions\":{\"preconditions\":{\"uid\":\"00000000-0000-4000-8000-000000000000\"}}")),
               409, "Conflict");
        cr_assert_eq(k8s_sim_pod_state(sim, "flink", "tm-1"), 0);
        EXPECT(req("POST", EVICT("flink", "tm-1"), JSON, good), 201, NULL);
}
Test(k8s_sim, eviction_of_a_missing_pod_is_404) {
        EXPECT(req("POST", EVICT("flink", "nope"), JSON, EVICTION("flink", "nope", "")), 404, "NotFound");
        cr_assert_str_eq(str("message"), "pods \"nope\" not found");
        cr_assert_str_eq(str("details.kind"), "pods");
        EXPECT(GET("/api/v1/namespaces/flink/pods/nope"), 404, "NotFound");
}

/* A budget blocked for 1 s and one blocked for 10 min: the first lets its
 * pod go while the second still holds its own. */
Test(k8s_sim, pdb_answers_429_until_it_unblocks) {
        cr_assert_eq(GET(NODE), 200); /* the TLS handshake before the budget's clock starts */
        k8s_sim_add_pdb(sim, "flink", "tm-pdb", "component=taskmanager", 1000);
        k8s_sim_add_pdb(sim, "default", "web", "app=web", 600000);
        EXPECT(req("POST", EVICT("flink", "tm-1"), JSON, EVICTION("flink", "tm-1", "")), 429, "TooManyRequests");
        cr_assert_str_eq(str("message"), "Cannot evict pod as it would violate the pod's disruption budget.");
        cJSON *cause = cJSON_GetArrayItem(at(J, "details.causes"), 0);
        cr_assert_str_eq(cJSON_GetStringValue(at(cause, "reason")), "DisruptionBudget", "%s", body);
        cr_assert_eq(k8s_sim_pod_state(sim, "flink", "tm-1"), 0);
        /* Other pods are not covered. */
        EXPECT(req("POST", EVICT("flink", "jm"), JSON, EVICTION("flink", "jm", "")), 201, NULL);
        long st = 429;
        for (int i = 0; i < 1000 && st == 429; i++)
                if ((st = req("POST", EVICT("flink", "tm-1"), JSON, EVICTION("flink", "tm-1", ""))) == 429) usleep(20000);
        cr_assert_eq(st, 201, "%s", body);
        cr_assert_eq(k8s_sim_evictions(sim, "flink", "tm-1"), 1);
        cr_assert_gt(k8s_sim_eviction_attempts(sim, "flink", "tm-1"), 2, "refused for a while first");
        EXPECT(req("POST", EVICT("default", "web-1"), JSON, EVICTION("default", "web-1", "")), 429, "TooManyRequests");
        cr_assert_eq(k8s_sim_pod_state(sim, "default", "web-1"), 0, "the longer budget still holds");
}

Test(k8s_sim, pdb_forever_and_never) {
        k8s_sim_add_pdb(sim, "default", "web", "app=web", 0);
        k8s_sim_add_pdb(sim, "kube-system", "proxy", "k8s-app=proxy", UINT32_MAX);
        usleep(100000);
        EXPECT(req("POST", EVICT("default", "web-1"), JSON, EVICTION("default", "web-1", "")), 429, "TooManyRequests");
        EXPECT(req("POST", EVICT("kube-system", "ds-1"), JSON, EVICTION("kube-system", "ds-1", "")), 201, NULL);
}

/* A 500 with no reason, as the real server answers it. */
Test(k8s_sim, two_pdbs_are_an_internal_error) {
        k8s_sim_add_pdb(sim, "flink", "a", "app=job", UINT32_MAX);
        k8s_sim_add_pdb(sim, "flink", "b", "component=taskmanager", UINT32_MAX);
        cr_assert_eq(req("POST", EVICT("flink", "tm-1"), JSON, EVICTION("flink", "tm-1", "")), 500, "%s", body);
        cr_assert_null(at(J, "reason"), "%s", body);
        cr_assert_str_eq(str("message"), "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.");
        EXPECT(req("POST", EVICT("flink", "jm"), JSON, EVICTION("flink", "jm", "")), 201, NULL);
}

Test(k8s_sim, delete_bypasses_pdbs) {
        k8s_sim_add_pdb(sim, "default", "web", "app=web", 0);
        cr_assert_eq(req("DELETE", "/api/v1/namespaces/default/pods/web-1", JSON, "{\"gracePeriodSeconds\":500}"), 200, "%s", body);
        cr_assert_str_eq(str("kind"), "Pod");
        cr_assert_eq(cJSON_GetNumberValue(at(J, "metadata.deletionGracePeriodSeconds")), 500);
        cr_assert_eq(k8s_sim_pod_state(sim, "default", "web-1"), 1);
        /* Without a body: the pod's own 30 s, which shortens the deletion. */
        cr_assert_eq(req("DELETE", "/api/v1/namespaces/default/pods/web-1", NULL, NULL), 200);
        cr_assert_eq(cJSON_GetNumberValue(at(J, "metadata.deletionGracePeriodSeconds")), 30);
        cr_assert_eq(req("DELETE", "/api/v1/namespaces/default/pods/web-1", JSON, "{\"gracePeriodSeconds\":100}"), 200);
        cr_assert_eq(cJSON_GetNumberValue(at(J, "metadata.deletionGracePeriodSeconds")), 30, "never lengthened");
        cr_assert_eq(req("DELETE", "/api/v1/namespaces/default/pods/web-1?gracePeriodSeconds=0", NULL, NULL), 200);
        cr_assert_eq(k8s_sim_pod_state(sim, "default", "web-1"), 2);
        EXPECT(req("DELETE", "/api/v1/namespaces/default/pods/web-1", NULL, NULL), 404, "NotFound");
        cr_assert_eq(k8s_sim_deletes(sim, "default", "web-1"), 4);
        EXPECT(req("DELETE", "/api/v1/namespaces/flink/pods/tm-1", JSON, "{\"preconditions\":{\"uid\":\"x\"}}"), 409, "Conflict");
        cr_assert(strstr(str("message"), "the UID in the precondition (x) does not match the UID in record"), "%s", body);
        cr_assert_str_eq(str("details.kind"), "Pod");
        EXPECT(req("DELETE", "/api/v1/namespaces/flink/pods/tm-1", JSON, "nope"), 400, "BadRequest");
        cr_assert_eq(k8s_sim_pod_state(sim, "flink", "tm-1"), 0);
        cr_assert_eq(k8s_sim_evictions(sim, "default", "web-1"), 0);
        /* Negative: 1 s, as the real server's delete path takes it. */
        cr_assert_eq(req("DELETE", "/api/v1/namespaces/flink/pods/tm-1", JSON, "{\"gracePeriodSeconds\":-3}"), 200, "%s", body);
        cr_assert_eq(cJSON_GetNumberValue(at(J, "metadata.deletionGracePeriodSeconds")), 1);
}

/* ---- events ---- */

#define EVENTS(ns) "/api/v1/namespaces/" ns "/events"

/* A valid Event on node n1, with the field at path (dotted) set to the JSON
 * value, or removed if value is NULL. Returned in a static buffer. */
static const char *node_event(const char *path, const char *value) {
        static char buf[8192];
        cJSON *ev = cJSON_Parse(
                "{\"apiVersion\":\"v1\",\"kind\":\"Event\",\"metadata\":{\"generateName\":\"n1.\"},"
                "\"involvedObject\":{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"name\":\"n1\",\"uid\":\"u\"},"
                "\"reason\":\"SpotInterruption\",\"message\":\"reclaim at 12:00\",\"type\":\"Warning\","
                "\"source\":{\"component\":\"spotd\",\"host\":\"n1\"},"
                "\"firstTimestamp\":\"2024-01-02T03:04:05Z\",\"lastTimestamp\":\"2024-01-02T03:04:05Z\",\"count\":1}");
        if (path) {
                char parent[128], *dot;
                snprintf(parent, sizeof parent, "%s", path);
                dot = strrchr(parent, '.');
                cJSON *o = ev;
                if (dot) {
                        *dot = 0;
                        o = at(ev, parent);
                }
                const char *key = dot ? dot + 1 : parent;
                cJSON_DeleteItemFromObjectCaseSensitive(o, key);
                if (value) cJSON_AddItemToObject(o, key, cJSON_Parse(value));
        }
        char *p = cJSON_PrintUnformatted(ev);
        snprintf(buf, sizeof buf, "%s", p);
        free(p);
        cJSON_Delete(ev);
        return buf;
}

Test(k8s_sim, events_are_stored) {
        cr_assert_eq(req("POST", EVENTS("default"), JSON, node_event(NULL, NULL)), 201, "%s", body);
        cr_assert_str_eq(str("kind"), "Event");
        cr_assert(strncmp(str("metadata.name"), "n1.", 3) == 0 && strlen(str("metadata.name")) == 8, "%s", body);
        cr_assert_str_eq(str("metadata.namespace"), "default");
        cr_assert_eq(strlen(str("metadata.uid")), 36);
        cr_assert(cJSON_IsString(at(J, "metadata.resourceVersion")));
        cr_assert(cJSON_IsString(at(J, "metadata.creationTimestamp")));
        cr_assert_eq(req("POST", EVENTS("default"), JSON, node_event(NULL, NULL)), 201);
        /* A pod's event goes to the pod's namespace; reportingComponent will do. */
        cr_assert_eq(req("POST", EVENTS("flink"), JSON,
                         "{\"metadata\":{\"name\":\"tm-1.1\",\"namespace\":\"flink\"},\"involvedObject\":"
                         "{\"kind\":\"Pod\",\"name\":\"tm-1\",\"namespace\":\"flink\"},\"reason\":\"Evicted\","
                         "\"message\":\"m\",\"type\":\"Normal\",\"reportingComponent\":\"spotd\"}"), 201, "%s", body);
        EXPECT(req("POST", EVENTS("flink"), JSON,
                   "{\"metadata\":{\"name\":\"tm-1.1\"},\"involvedObject\":{\"kind\":\"Pod\",\"name\":\"tm-1\","
                   "\"namespace\":\"flink\"},\"reason\":\"Evicted\",\"type\":\"Normal\",\"reportingComponent\":\"spotd\"}"),
               409, "AlreadyExists");
        cr_assert_eq(k8s_sim_events(sim, NULL), 3);
        cr_assert_eq(k8s_sim_events(sim, "SpotInterruption"), 2);
        cr_assert_eq(k8s_sim_events(sim, "Evicted"), 1);
}

static void event_invalid(const char *ns, const char *path, const char *value, const char *field) {
        char url[128];
        snprintf(url, sizeof url, "/api/v1/namespaces/%s/events", ns);
        EXPECT(req("POST", url, JSON, node_event(path, value)), 422, "Invalid");
        cJSON *cause = cJSON_GetArrayItem(at(J, "details.causes"), 0);
        cr_assert_str_eq(cJSON_GetStringValue(at(cause, "field")), field, "%s", body);
        cr_assert_eq(k8s_sim_events(sim, NULL), 0);
}

/* The legacy validation a core/v1 Event without eventTime gets: names and
 * namespaces. The real server takes any type, an empty reason, no source,
 * a 2,000-character message (tests/kube/sim_compare.py); a field of the
 * wrong JSON type does not decode. */
Test(k8s_sim, events_validated_as_the_real_server_does) {
        char big[2100];
        const char *url = EVENTS("default");
        snprintf(big, sizeof big, "\"%02000d\"", 0);
        const char *taken[][2] = { { "reason", "\"\"" }, { "reason", NULL }, { "type", "\"Info\"" }, { "type", NULL },
                                   { "source", "{}" }, { "message", big } };
        for (size_t i = 0; i < sizeof taken / sizeof *taken; i++)
                cr_assert_eq(req("POST", url, JSON, node_event(taken[i][0], taken[i][1])), 201, "%s: %s", taken[i][0], body);
        EXPECT(req("POST", url, JSON, node_event("message", "5")), 400, "BadRequest");
        EXPECT(req("POST", url, JSON, node_event("type", "[]")), 400, "BadRequest");
        cr_assert_eq(k8s_sim_events(sim, NULL), 6);
}

Test(k8s_sim, invalid_events_are_422) {
        event_invalid("default", "involvedObject.name", NULL, "involvedObject.name");
        event_invalid("default", "involvedObject.kind", "\"\"", "involvedObject.kind");
        event_invalid("default", "metadata.generateName", NULL, "metadata.name");
        event_invalid("default", "metadata.generateName", "\"Bad_Name.\"", "metadata.name");
        /* A Node is cluster-scoped: its events live in "default". */
        event_invalid("flink", NULL, NULL, "involvedObject.namespace");
        event_invalid("default", "involvedObject.namespace", "\"flink\"", "involvedObject.namespace");
}

Test(k8s_sim, event_namespace_and_format) {
        EXPECT(req("POST", EVENTS("nowhere"), JSON, node_event(NULL, NULL)), 404, "NotFound");
        cr_assert_str_eq(str("message"), "namespaces \"nowhere\" not found");
        EXPECT(req("POST", EVENTS("default"), "text/plain", node_event(NULL, NULL)), 415, "UnsupportedMediaType");
        EXPECT(req("POST", EVENTS("default"), JSON, node_event("metadata.namespace", "\"kube-system\"")), 400, "BadRequest");
        EXPECT(req("POST", EVENTS("default"), JSON, node_event("firstTimestamp", "\"yesterday\"")), 400, "BadRequest");
        EXPECT(req("POST", EVENTS("default"), JSON, node_event("count", "\"1\"")), 400, "BadRequest");
        EXPECT(req("POST", EVENTS("default"), JSON, node_event("kind", "\"Pod\"")), 400, "BadRequest");
        EXPECT(req("POST", EVENTS("default"), JSON, "{\"reason\":"), 400, "BadRequest");
        cr_assert_eq(k8s_sim_events(sim, NULL), 0);
        cr_assert_eq(req("POST", EVENTS("kube-system"), JSON,
                         "{\"metadata\":{\"name\":\"ds-1.1\"},\"involvedObject\":{\"kind\":\"Pod\",\"name\":\"ds-1\","
                         "\"namespace\":\"kube-system\"},\"reason\":\"R\",\"type\":\"Normal\",\"source\":{\"component\":\"spotd\"},"
                         "\"firstTimestamp\":\"2024-01-02T03:04:05.123+02:00\"}"), 201, "%s", body);
}

/* ---- faults, limits, counters ---- */

Test(k8s_sim, status_faults) {
        k8s_sim_fault(sim, "/api/v1/nodes", 503, 0, 2);
        cr_assert_eq(GET("/api/v1/pods?fieldSelector=spec.nodeName%3Dn1"), 200, "another path: no fault");
        EXPECT(GET(NODE), 503, "ServiceUnavailable");
        EXPECT(req_tok(NULL, "GET", NODE, NULL, NULL), 503, "ServiceUnavailable"); /* before auth */
        cr_assert_eq(GET(NODE), 200, "only count requests");
        k8s_sim_fault(sim, NULL, 429, 0, 1);
        EXPECT(GET("/api/v1/pods"), 429, "TooManyRequests");
        k8s_sim_fault(sim, NULL, 500, 0, 5);
        k8s_sim_fault(sim, NULL, 500, 0, 0); /* cleared */
        cr_assert_eq(GET(NODE), 200);
}

Test(k8s_sim, drop_fault_closes_without_an_answer) {
        k8s_sim_fault(sim, EVICT("flink", "tm-1"), K8S_SIM_DROP, 0, 1);
        cr_assert_eq(req("POST", EVICT("flink", "tm-1"), JSON, EVICTION("flink", "tm-1", "")), -1);
        cr_assert(last_rc == CURLE_GOT_NOTHING || last_rc == CURLE_RECV_ERROR, "%s", curl_easy_strerror(last_rc));
        cr_assert_eq(k8s_sim_pod_state(sim, "flink", "tm-1"), 0, "a dropped request does nothing");
        EXPECT(req("POST", EVICT("flink", "tm-1"), JSON, EVICTION("flink", "tm-1", "")), 201, NULL);
        char *log = k8s_sim_log(sim);
        cr_assert(strstr(log, "POST /api/v1/namespaces/flink/pods/tm-1/eviction -\n"), "%s", log);
        free(log);
}

/* Three GETs at once: two of n1 (one of them delayed 2 s by the fault,
 * which is used up by the first to take it) and one of n2 delayed 1 s.
 * One n1 answer comes before n2's, the other after it. */
Test(k8s_sim, slow_fault_delays_the_answer) {
        static const struct concurrent_req rq[] = { { "GET", NODE, NULL }, { "GET", "/api/v1/nodes/n2", NULL },
                                                    { "GET", NODE, NULL } };
        size_t order[3];
        long st[3];
        k8s_sim_fault(sim, NODE, K8S_SIM_SLOW, 2000, 1);
        k8s_sim_fault(sim, "/api/v1/nodes/n2", K8S_SIM_SLOW, 1000, 1);
        concurrently(3, rq, order, st);
        for (size_t i = 0; i < 3; i++) cr_assert_eq(st[i], 200, "request %zu: %ld (delayed, not dropped)", i, st[i]);
        cr_assert_neq(order[0], 1, "n2 (1 s) came first: both n1 answers were delayed");
        cr_assert_eq(order[1], 1, "both n1 answers came before n2 (1 s): the fault delayed neither");
        cr_assert_eq(GET(NODE), 200);
}

/* Thread per connection: four slow evictions on four connections overlap.
 * Each is delayed a second less than the one sent before it, so they are
 * answered in the reverse order only if none waits behind another. */
Test(k8s_sim, concurrent_evictions_do_not_serialize) {
        static const struct concurrent_req rq[] = {
                { "POST", EVICT("flink", "tm-1"), EVICTION("flink", "tm-1", "") },
                { "POST", EVICT("flink", "tm-2"), EVICTION("flink", "tm-2", "") },
                { "POST", EVICT("flink", "tm-3"), EVICTION("flink", "tm-3", "") },
                { "POST", EVICT("flink", "jm"), EVICTION("flink", "jm", "") },
        };
        size_t order[4];
        long st[4];
        for (unsigned i = 0; i < 4; i++) k8s_sim_fault(sim, rq[i].path, K8S_SIM_SLOW, 4000 - 1000 * i, 1);
        concurrently(4, rq, order, st);
        for (size_t i = 0; i < 4; i++) {
                cr_assert_eq(st[i], 201, "%s: %ld", rq[i].path, st[i]);
                cr_assert_eq(order[i], 3 - i, "answer %zu was request %zu's: one waited behind another", i, order[i]);
        }
        cr_assert_geq(k8s_sim_connections(sim), 4);
}

Test(k8s_sim, body_over_1mib_is_413) {
        size_t n = 1024 * 1024 + 1;
        char *big = malloc(n + 1);
        memset(big, ' ', n);
        big[n] = 0;
        big[0] = '{';
        big[n - 1] = '}';
        EXPECT(req("PATCH", NODE, MERGE, big), 413, "RequestEntityTooLarge");
        free(big);
        cr_assert_eq(GET(NODE), 200);
}

Test(k8s_sim, requests_are_counted_and_logged_over_one_connection) {
        for (int i = 0; i < 5; i++) cr_assert_eq(GET(NODE), 200);
        cr_assert_eq(GET("/api/v1/pods?fieldSelector=spec.nodeName%3Dn1&labelSelector=app%20in%20(job)"), 200);
        cr_assert_eq(req("PATCH", NODE, MERGE, "{}"), 200);
        EXPECT(req_tok(NULL, "GET", "/api/v1/nodes/n2", NULL, NULL), 401, "Unauthorized");
        cr_assert_eq(k8s_sim_requests(sim, "GET", NODE), 5);
        cr_assert_eq(k8s_sim_requests(sim, NULL, "/api/v1/nodes/"), 7);
        cr_assert_eq(k8s_sim_requests(sim, "PATCH", NULL), 1);
        cr_assert_eq(k8s_sim_requests(sim, NULL, NULL), 8);
        cr_assert_eq(k8s_sim_requests(sim, "GET", "/api/v1/pods"), 1);
        cr_assert_eq(k8s_sim_connections(sim), 1, "kept alive: %u", k8s_sim_connections(sim));
        char *log = k8s_sim_log(sim);
        cr_assert(strstr(log, "GET /api/v1/nodes/n1 200\n"), "%s", log);
        cr_assert(strstr(log, "GET /api/v1/pods?fieldSelector=spec.nodeName=n1&labelSelector=app in (job) 200\n"), "%s", log);
        cr_assert(strstr(log, "PATCH /api/v1/nodes/n1 200\n"), "%s", log);
        cr_assert(strstr(log, "GET /api/v1/nodes/n2 401\n"), "%s", log);
        free(log);
}

Test(k8s_sim, two_simulators_and_their_files) {
        char dir[] = "/tmp/k8s-sim-test-XXXXXX", path[512];
        struct k8s_sim *other;
        struct stat st;
        cr_assert(mkdtemp(dir));
        struct k8s_sim_options o = { .dir = dir, .token = "other-token", .grace_ms_per_s = 1 };
        cr_assert_eq(k8s_sim_start(&o, &other), 0);
        cr_assert_neq(k8s_sim_port(other), k8s_sim_port(sim));
        snprintf(path, sizeof path, "%s/token", dir);
        cr_assert_str_eq(k8s_sim_token_file(other), path);
        k8s_sim_add_node(other, "n1", "");
        char *n = k8s_sim_node_json(other, "n1"), *m = k8s_sim_node_json(sim, "n1");
        cr_assert(!strstr(n, "pool") && strstr(m, "pool"), "separate state");
        free(n);
        free(m);
        /* Each accepts only its own token, and is trusted only through its
         * own CA. (The global sim stays put, so a failure here still lets
         * fini stop it.) */
        char url[128];
        long status = 0;
        struct curl_slist *auth = curl_slist_append(NULL, "Authorization: Bearer sim-token-1");
        k8s_sim_url(other, url, sizeof url);
        strcat(url, "/api/v1/nodes/n1");
        CURL *c = curl_easy_init();
        setup_handle(c, auth);
        curl_easy_setopt(c, CURLOPT_CAINFO, k8s_sim_ca_file(other));
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
        cr_assert_eq(curl_easy_perform(c), CURLE_OK);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        cr_assert_eq(status, 401, "the other simulator's token is not this one's");
        curl_easy_cleanup(c);
        curl_slist_free_all(auth);
        c = curl_easy_init();
        curl_easy_setopt(c, CURLOPT_URL, base);
        curl_easy_setopt(c, CURLOPT_CAINFO, k8s_sim_ca_file(other));
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
        cr_assert_eq(curl_easy_perform(c), CURLE_PEER_FAILED_VERIFICATION);
        curl_easy_cleanup(c);
        k8s_sim_stop(other);
        /* In a directory it was given, the files stay for the caller. */
        cr_assert_eq(stat(path, &st), 0);
        static const char *const files[] = { "ca.crt", "server.crt", "server.key", "token" };
        for (size_t i = 0; i < 4; i++) {
                snprintf(path, sizeof path, "%s/%s", dir, files[i]);
                cr_assert_eq(unlink(path), 0, "%s", path);
        }
        cr_assert_eq(rmdir(dir), 0, "nothing else was left in %s", dir);

        /* In its own directory, everything goes. */
        snprintf(path, sizeof path, "%s", k8s_sim_ca_file(sim));
        *strrchr(path, '/') = 0;
        cr_assert_eq(stat(path, &st), 0);
        stop();
        cr_assert_neq(stat(path, &st), 0, "%s removed", path);
        start();
}
