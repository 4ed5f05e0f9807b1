/* The Kubernetes API client: escaping, Status parsing, in-cluster discovery
 * and option checks on their own; then requests against the API simulator
 * (TLS trust, token rotation, concurrency under a connection limit, faults,
 * size caps, callbacks that queue more work). */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "k8s.h"
#include "k8s_sim.h"
#include "sim_port.h"

#define P(s) (s), strlen(s)

/* ---- scratch files ---- */

static char tmpdir[64];

static void tmp_up(void) {
        strcpy(tmpdir, "/tmp/test-k8s-XXXXXX");
        cr_assert_not_null(mkdtemp(tmpdir));
}

static void tmp_down(void) {
        char cmd[128];
        if (!tmpdir[0])
                return;
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        cr_assert_eq(system(cmd), 0);
}

/* Writes data into tmpdir/name; returns the path (static buffer, one per slot). */
static const char *tmp_file(unsigned slot, const char *name, const char *data, size_t len) {
        static char paths[4][256];
        cr_assert_lt(slot, 4);
        snprintf(paths[slot], sizeof paths[slot], "%s/%s", tmpdir, name);
        FILE *f = fopen(paths[slot], "w");
        cr_assert_not_null(f);
        cr_assert_eq(fwrite(data, 1, len, f), len);
        cr_assert_eq(fclose(f), 0);
        return paths[slot];
}

/* ---- k8s_escape ---- */

Test(k8s, escape_unreserved_kept_rest_encoded) {
        char buf[128];
        cr_assert_eq(k8s_escape("spec.nodeName=ip-10-0-1-2.ec2.internal", buf, sizeof buf), 0);
        cr_assert_str_eq(buf, "spec.nodeName%3Dip-10-0-1-2.ec2.internal");
        cr_assert_eq(k8s_escape("app in (a,b),tier!=x", buf, sizeof buf), 0);
        cr_assert_str_eq(buf, "app%20in%20%28a%2Cb%29%2Ctier%21%3Dx");
        cr_assert_eq(k8s_escape("A-Z_a.z~09", buf, sizeof buf), 0);
        cr_assert_str_eq(buf, "A-Z_a.z~09");
        cr_assert_eq(k8s_escape("/?#&+%\xc3\xa9", buf, sizeof buf), 0);
        cr_assert_str_eq(buf, "%2F%3F%23%26%2B%25%C3%A9");
        cr_assert_eq(k8s_escape("", buf, sizeof buf), 0);
        cr_assert_str_eq(buf, "");
}

Test(k8s, escape_buffer_bounds) {
        char buf[8];
        memset(buf, 'x', sizeof buf);
        cr_assert_eq(k8s_escape("a=b", buf, 5), -ENOBUFS, "needs 6 bytes with the NUL");
        cr_assert_eq(buf[0], 'x', "untouched on failure");
        cr_assert_eq(k8s_escape("a=b", buf, 6), 0);
        cr_assert_str_eq(buf, "a%3Db");
        cr_assert_eq(k8s_escape("", buf, 0), -ENOBUFS);
        cr_assert_eq(k8s_escape("abcdefg", buf, 8), 0);
        cr_assert_eq(k8s_escape("abcdefgh", buf, 8), -ENOBUFS);
}

/* ---- k8s_parse_status ---- */

Test(k8s, parse_status_body) {
        char reason[64], message[256];
        const char *b = "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\","
                        "\"message\":\"Cannot evict pod as it would violate the pod's disruption budget.\","
                        "\"reason\":\"TooManyRequests\",\"details\":{\"causes\":[{\"reason\":\"DisruptionBudget\"}]},"
                        "\"code\":429}";
        k8s_parse_status(P(b), reason, sizeof reason, message, sizeof message);
        cr_assert_str_eq(reason, "TooManyRequests");
        cr_assert_str_eq(message, "Cannot evict pod as it would violate the pod's disruption budget.");

        /* No reason: the message alone. */
        k8s_parse_status(P("{\"kind\":\"Status\",\"message\":\"boom\"}"), reason, sizeof reason, message, sizeof message);
        cr_assert_str_eq(reason, "");
        cr_assert_str_eq(message, "boom");
}

Test(k8s, parse_status_other_bodies_leave_empty) {
        static const char *bodies[] = {
                "{\"kind\":\"Pod\",\"reason\":\"Evicted\",\"message\":\"not a Status\"}",
                "{\"reason\":\"NoKind\",\"message\":\"x\"}",
                "{\"kind\":\"Status\",\"reason\":",
                "<html><body>502 Bad Gateway</body></html>",
                "[\"Status\"]",
                "\"Status\"",
                "\x01\x02\xff garbage",
                "",
        };
        for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
                char reason[64] = "stale", message[256] = "stale";
                k8s_parse_status(P(bodies[i]), reason, sizeof reason, message, sizeof message);
                cr_assert_str_eq(reason, "", "%s", bodies[i]);
                cr_assert_str_eq(message, "", "%s", bodies[i]);
        }
        char reason[8] = "stale", message[8] = "stale";
        k8s_parse_status(NULL, 0, reason, sizeof reason, message, sizeof message);
        cr_assert_str_eq(reason, "");
        cr_assert_str_eq(message, "");
        /* Only len bytes are read: the valid Status after them is not seen. */
        const char *b = "{}{\"kind\":\"Status\",\"reason\":\"X\"}";
        k8s_parse_status(b, 2, reason, sizeof reason, message, sizeof message);
        cr_assert_str_eq(reason, "");
}

Test(k8s, parse_status_truncates_and_sanitizes) {
        char reason[8], message[12];
        /* Control characters become spaces; a cut never splits a UTF-8 character. */
        k8s_parse_status(P("{\"kind\":\"Status\",\"reason\":\"VeryLongReason\","
                           "\"message\":\"line1\\nl\\u00e9\\u00f6x\"}"),
                         reason, sizeof reason, message, sizeof message);
        cr_assert_str_eq(reason, "VeryLon");
        /* "line1 l" (7) + é (2) = 9; ö (2) would make 11 = the limit: fits. */
        cr_assert_str_eq(message, "line1 l\xc3\xa9\xc3\xb6");
        char m2[11];
        k8s_parse_status(P("{\"kind\":\"Status\",\"message\":\"line1\\nl\\u00e9\\u00f6x\"}"), reason, sizeof reason,
                         m2, sizeof m2);
        cr_assert_str_eq(m2, "line1 l\xc3\xa9", "no half character: %s", m2);
}

/* ---- k8s_in_cluster ---- */

struct ic {
        char url[128], token[256], ca[256], ns[64];
};

static int in_cluster(char *const *env, const char *dir, struct ic *o) {
        return k8s_in_cluster(env, dir, o->url, sizeof o->url, o->token, sizeof o->token, o->ca, sizeof o->ca,
                              o->ns, sizeof o->ns);
}

Test(k8s, in_cluster_ipv4_and_namespace, .init = tmp_up, .fini = tmp_down) {
        char *env[] = { "PATH=/bin", "KUBERNETES_SERVICE_HOST=10.100.0.1", "KUBERNETES_SERVICE_PORT=443", NULL };
        struct ic o = {};
        char want[256];

        tmp_file(0, "namespace", P("  spot-system\n"));
        cr_assert_eq(in_cluster(env, tmpdir, &o), 0);
        cr_assert_str_eq(o.url, "https://10.100.0.1:443");
        snprintf(want, sizeof want, "%s/token", tmpdir);
        cr_assert_str_eq(o.token, want);
        snprintf(want, sizeof want, "%s/ca.crt", tmpdir);
        cr_assert_str_eq(o.ca, want);
        cr_assert_str_eq(o.ns, "spot-system");
}

Test(k8s, in_cluster_ipv6_bracketed, .init = tmp_up, .fini = tmp_down) {
        char *env[] = { "KUBERNETES_SERVICE_PORT=6443", "KUBERNETES_SERVICE_HOST=fd00:10:96::1", NULL };
        struct ic o = {};
        cr_assert_eq(in_cluster(env, tmpdir, &o), 0);
        cr_assert_str_eq(o.url, "https://[fd00:10:96::1]:6443");
        cr_assert_str_eq(o.ns, "", "no namespace file: empty");
}

Test(k8s, in_cluster_hostname_and_bad_namespace, .init = tmp_up, .fini = tmp_down) {
        char *env[] = { "KUBERNETES_SERVICE_HOST=api.cluster.local", "KUBERNETES_SERVICE_PORT=443", NULL };
        struct ic o = {};
        tmp_file(0, "namespace", P("Bad_NS\n"));
        cr_assert_eq(in_cluster(env, tmpdir, &o), 0);
        cr_assert_str_eq(o.url, "https://api.cluster.local:443");
        cr_assert_str_eq(o.ns, "", "not a DNS label: empty");
        char longns[80];
        memset(longns, 'a', 64);
        longns[64] = 0;
        tmp_file(0, "namespace", P(longns));
        cr_assert_eq(in_cluster(env, tmpdir, &o), 0);
        cr_assert_str_eq(o.ns, "", "over 63 characters: empty");
}

Test(k8s, in_cluster_missing_env) {
        char *none[] = { "PATH=/bin", NULL };
        char *no_port[] = { "KUBERNETES_SERVICE_HOST=10.0.0.1", NULL };
        char *no_host[] = { "KUBERNETES_SERVICE_PORT=443", NULL };
        char *empty[] = { "KUBERNETES_SERVICE_HOST=", "KUBERNETES_SERVICE_PORT=443", NULL };
        char *prefix[] = { "KUBERNETES_SERVICE_HOSTX=10.0.0.1", "KUBERNETES_SERVICE_PORT=443", NULL };
        struct ic o = { .url = "untouched" };
        cr_assert_eq(in_cluster(none, "/nonexistent", &o), -ENOENT);
        cr_assert_eq(in_cluster(no_port, "/nonexistent", &o), -ENOENT);
        cr_assert_eq(in_cluster(no_host, "/nonexistent", &o), -ENOENT);
        cr_assert_eq(in_cluster(empty, "/nonexistent", &o), -ENOENT);
        cr_assert_eq(in_cluster(prefix, "/nonexistent", &o), -ENOENT);
        cr_assert_str_eq(o.url, "untouched");
}

Test(k8s, in_cluster_rejects_bad_values) {
        static const char *bad[][2] = {
                { "10.0.0.1", "44a" }, { "10.0.0.1", "0" }, { "10.0.0.1", "65536" }, { "10.0.0.1", "-1" },
                { "10.0.0.1", "123456" }, { "10.0.0.1/x", "443" }, { "evil.com@10.0.0.1", "443" },
                { "[fd00::1]", "443" }, { "fd00::g1", "443" }, { "10.0.0.1 ", "443" },
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                char h[128], p[64];
                snprintf(h, sizeof h, "KUBERNETES_SERVICE_HOST=%s", bad[i][0]);
                snprintf(p, sizeof p, "KUBERNETES_SERVICE_PORT=%s", bad[i][1]);
                char *env[] = { h, p, NULL };
                struct ic o = { .url = "untouched" };
                cr_assert_eq(in_cluster(env, "/nonexistent", &o), -EINVAL, "%s %s", bad[i][0], bad[i][1]);
                cr_assert_str_eq(o.url, "untouched");
        }
}

Test(k8s, in_cluster_small_buffers) {
        char *env[] = { "KUBERNETES_SERVICE_HOST=10.100.0.1", "KUBERNETES_SERVICE_PORT=443", NULL };
        char url[10] = "untouched", token[256], ca[256], ns[64];
        cr_assert_eq(k8s_in_cluster(env, "/nonexistent", url, sizeof url, token, sizeof token, ca, sizeof ca,
                                    ns, sizeof ns), -ENOBUFS);
        cr_assert_str_eq(url, "untouched");
}

Test(k8s, in_cluster_default_environ_and_dir) {
        char url[128] = "untouched", token[256], ca[256], ns[64];
        unsetenv("KUBERNETES_SERVICE_HOST");
        cr_assert_eq(k8s_in_cluster(NULL, NULL, url, sizeof url, token, sizeof token, ca, sizeof ca, ns, sizeof ns),
                     -ENOENT);
        setenv("KUBERNETES_SERVICE_HOST", "10.9.8.7", 1);
        setenv("KUBERNETES_SERVICE_PORT", "8443", 1);
        cr_assert_eq(k8s_in_cluster(NULL, NULL, url, sizeof url, token, sizeof token, ca, sizeof ca, ns, sizeof ns), 0);
        cr_assert_str_eq(url, "https://10.9.8.7:8443");
        cr_assert_str_eq(token, "/var/run/secrets/kubernetes.io/serviceaccount/token");
        cr_assert_str_eq(ca, "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt");
}

/* ---- k8s_new ---- */

static int new_with(const struct k8s_options *o) {
        struct k8s *k = (struct k8s *) 0x1;
        int r = k8s_new(o, &k);
        if (r == 0)
                k8s_free(k);
        else
                cr_assert_eq(k, (struct k8s *) 0x1, "ret untouched on failure");
        return r;
}

Test(k8s, new_validates_url) {
        static const char *bad[] = {
                "http://10.0.0.1:443", "10.0.0.1:443", "https://", "https:///x", "ftp://x",
                "https://10.0.0.1/ x", "https://10.0.0.1/?a=b", "https://10.0.0.1/#f", "",
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
                cr_assert_eq(new_with(&(struct k8s_options) { .api_url = bad[i] }), -EINVAL, "%s", bad[i]);
        cr_assert_eq(new_with(&(struct k8s_options) { .api_url = NULL }), -EINVAL);
        char longurl[2100] = "https://";
        memset(longurl + 8, 'a', 2000);
        longurl[2008] = 0;
        cr_assert_eq(new_with(&(struct k8s_options) { .api_url = longurl }), -EINVAL);

        cr_assert_eq(new_with(&(struct k8s_options) { .api_url = "https://10.0.0.1:443" }), 0);
        cr_assert_eq(new_with(&(struct k8s_options) { .api_url = "https://[fd00::1]:6443/" }), 0);
        cr_assert_eq(new_with(&(struct k8s_options) { .api_url = "https://rancher.example/k8s/clusters/c-1" }), 0);
        cr_assert_eq(new_with(&(struct k8s_options) { .api_url = "https://x", .max_connections = 100000 }), -EINVAL);
}

Test(k8s, new_checks_files, .init = tmp_up, .fini = tmp_down) {
        const char *token = tmp_file(0, "token", P("abc.def-ghi_jkl\n"));
        const char *pem = tmp_file(1, "some.pem", P("not checked until TLS\n"));
        struct k8s_options o = { .api_url = "https://10.0.0.1" };

        o.token_file = "/nonexistent/token";
        cr_assert_eq(new_with(&o), -ENOENT, "missing token file");
        o.token_file = token;
        cr_assert_eq(new_with(&o), 0);

        o.ca_file = "/nonexistent/ca.crt";
        cr_assert_eq(new_with(&o), -ENOENT, "missing CA");
        o.ca_file = pem;
        cr_assert_eq(new_with(&o), 0);

        o.client_cert = pem;
        cr_assert_eq(new_with(&o), -EINVAL, "cert without key");
        o.client_cert = NULL;
        o.client_key = pem;
        cr_assert_eq(new_with(&o), -EINVAL, "key without cert");
        o.client_cert = "/nonexistent/client.crt";
        cr_assert_eq(new_with(&o), -ENOENT);
        o.client_cert = pem;
        o.client_key = "/nonexistent/client.key";
        cr_assert_eq(new_with(&o), -ENOENT);
        o.client_key = pem;
        cr_assert_eq(new_with(&o), 0);
}

Test(k8s, new_unreadable_token_is_eacces, .fini = tmp_down) {
        if (geteuid() == 0)
                cr_skip_test("root reads any file");
        tmp_up(); /* after the skip, which bypasses .fini */
        const char *token = tmp_file(0, "token", P("abc"));
        cr_assert_eq(chmod(token, 0), 0);
        cr_assert_eq(new_with(&(struct k8s_options) { .api_url = "https://x", .token_file = token }), -EACCES);
}

Test(k8s, new_validates_token_text, .init = tmp_up, .fini = tmp_down) {
        struct k8s_options o = { .api_url = "https://10.0.0.1" };
        static char big[17 * 1024];

        o.token_file = tmp_file(0, "t", P("eyJhbGciOi.eyJpc3Mi.sig \r\n\t "));
        cr_assert_eq(new_with(&o), 0, "trailing whitespace is stripped");
        o.token_file = tmp_file(0, "t", P(""));
        cr_assert_eq(new_with(&o), -EINVAL, "empty");
        o.token_file = tmp_file(0, "t", P("\n\n"));
        cr_assert_eq(new_with(&o), -EINVAL, "only whitespace");
        o.token_file = tmp_file(0, "t", P("abc\r\nX-Injected: 1"));
        cr_assert_eq(new_with(&o), -EINVAL, "header injection");
        o.token_file = tmp_file(0, "t", P("ab\x01" "c"));
        cr_assert_eq(new_with(&o), -EINVAL, "control character");
        o.token_file = tmp_file(0, "t", P("two words"));
        cr_assert_eq(new_with(&o), -EINVAL, "inner space");
        o.token_file = tmp_file(0, "t", "ab\0c", 4);
        cr_assert_eq(new_with(&o), -EINVAL, "NUL byte");
        memset(big, 'a', sizeof big);
        o.token_file = tmp_file(0, "t", big, 16 * 1024);
        cr_assert_eq(new_with(&o), 0, "16 KiB is the limit");
        o.token_file = tmp_file(0, "t", big, 16 * 1024 + 1);
        cr_assert_eq(new_with(&o), -EINVAL, "over 16 KiB");
        o.token_file = tmpdir;
        cr_assert_lt(new_with(&o), 0, "a directory");
}

static unsigned called;
static struct k8s_response last;
static void count_done(void *ud, const struct k8s_response *r) {
        called++;
        last = *r;
        last.body = NULL;
}

Test(k8s, request_validates_arguments) {
        struct k8s *k;
        cr_assert_eq(k8s_new(&(struct k8s_options) { .api_url = "https://127.0.0.1:1" }, &k), 0);
        cr_assert_eq(k8s_request(k, "get", "/api", NULL, NULL, count_done, NULL), -EINVAL);
        cr_assert_eq(k8s_request(k, "", "/api", NULL, NULL, count_done, NULL), -EINVAL);
        cr_assert_eq(k8s_request(k, "GET\r\nX", "/api", NULL, NULL, count_done, NULL), -EINVAL);
        cr_assert_eq(k8s_request(k, "GET", "api", NULL, NULL, count_done, NULL), -EINVAL);
        cr_assert_eq(k8s_request(k, "GET", "/a b", NULL, NULL, count_done, NULL), -EINVAL);
        cr_assert_eq(k8s_request(k, "GET", "/a\r\nHost: x", NULL, NULL, count_done, NULL), -EINVAL);
        cr_assert_eq(k8s_request(k, "GET", NULL, NULL, NULL, count_done, NULL), -EINVAL);
        cr_assert_eq(k8s_request(k, "POST", "/api", NULL, "{}", count_done, NULL), -EINVAL, "body needs a type");
        cr_assert_eq(k8s_request(k, "POST", "/api", "text/x\r\nX: y", "{}", count_done, NULL), -EINVAL);
        cr_assert_eq(k8s_request(k, "GET", "/api", NULL, NULL, NULL, NULL), -EINVAL, "no callback");
        cr_assert_eq(k8s_pending(k), 0);
        k8s_free(k);
        cr_assert_eq(called, 0);
}

Test(k8s, connection_refused_is_transport_error) {
        char url[64];
        struct k8s *k;
        struct k8s_response r;
        char *body = (char *) 0x1;
        int hold;
        unsigned port = sim_port_closed(&hold); /* held: no other test's server takes it */
        cr_assert_neq(port, 0);
        snprintf(url, sizeof url, "https://127.0.0.1:%u", port);
        cr_assert_eq(k8s_new(&(struct k8s_options) { .api_url = url, .timeout = 2 * USEC_PER_SEC }, &k), 0);
        cr_assert_eq(k8s_request_sync(k, "GET", "/version", NULL, NULL, &r, &body), 0);
        cr_assert_eq(r.err, -ECONNREFUSED, "%d", r.err);
        cr_assert_eq(r.status, 0);
        cr_assert_str_eq(body, "");
        cr_assert_eq(k8s_connections(k), 1);
        free(body);
        k8s_free(k);
        close(hold);
}

/* A server that accepts TCP but never speaks TLS: requests stay in flight. */
Test(k8s, free_cancels_pending_without_callbacks) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t l = sizeof a;
        char url[64];
        struct k8s *k;
        cr_assert_eq(bind(fd, (struct sockaddr *) &a, sizeof a), 0);
        cr_assert_eq(listen(fd, 16), 0);
        cr_assert_eq(getsockname(fd, (struct sockaddr *) &a, &l), 0);
        snprintf(url, sizeof url, "https://127.0.0.1:%u", ntohs(a.sin_port));

        called = 0;
        cr_assert_eq(k8s_new(&(struct k8s_options) { .api_url = url, .max_connections = 2 }, &k), 0);
        for (int i = 0; i < 5; i++)
                cr_assert_eq(k8s_request(k, "POST", "/api/v1/namespaces/d/events", "application/json", "{}",
                                         count_done, NULL), 0);
        cr_assert_eq(k8s_pending(k), 5);
        for (int i = 0; i < 5; i++)
                cr_assert_eq(k8s_poll(k, NULL, 0, 20), 0);
        cr_assert_eq(k8s_pending(k), 5);
        cr_assert_leq(k8s_connections(k), 2);
        k8s_free(k);
        cr_assert_eq(called, 0);
        close(fd);
}

static void *write_later(void *arg) {
        usleep(200 * 1000);
        if (write(*(int *) arg, "x", 1) != 1)
                abort();
        return NULL;
}

/* An extra fd that is not ready: the poll ends on its timeout with no
 * event. One that becomes ready while the poll waits (its timeout 60 s):
 * it returns with the event. */
Test(k8s, poll_reports_extra_fds) {
        struct k8s *k;
        int p[2];
        pthread_t th;
        cr_assert_eq(pipe(p), 0);
        cr_assert_eq(k8s_new(&(struct k8s_options) { .api_url = "https://127.0.0.1:1" }, &k), 0);
        struct curl_waitfd w = { .fd = p[0], .events = CURL_WAIT_POLLIN };
        cr_assert_eq(k8s_poll(k, &w, 1, 50), 0);
        cr_assert_eq(w.revents, 0);
        cr_assert_eq(pthread_create(&th, NULL, write_later, &p[1]), 0);
        cr_assert_eq(k8s_poll(k, &w, 1, 60000), 0);
        cr_assert(w.revents & CURL_WAIT_POLLIN, "woke for the fd");
        pthread_join(th, NULL);
        k8s_free(k);
        close(p[0]);
        close(p[1]);
}

/* ---- against the API simulator ---- */

#define NODE "ip-10-0-1-2.ec2.internal"
#define NODE_PATH "/api/v1/nodes/" NODE

static struct k8s_sim *sim;

static void sim_up(void) {
        tmp_up();
        cr_assert_eq(k8s_sim_start(&(struct k8s_sim_options) {}, &sim), 0);
        k8s_sim_add_node(sim, NODE, "node.kubernetes.io/instance-type=m5.large,spot=true");
}

static void sim_down(void) {
        sim = k8s_sim_stop(sim);
        tmp_down();
}

static struct k8s *sim_client(struct k8s_options o) {
        char url[64];
        struct k8s *k;
        k8s_sim_url(sim, url, sizeof url);
        o.api_url = url;
        if (!o.ca_file)
                o.ca_file = k8s_sim_ca_file(sim);
        if (!o.token_file)
                o.token_file = k8s_sim_token_file(sim);
        if (!o.timeout)
                o.timeout = 5 * USEC_PER_SEC;
        cr_assert_eq(k8s_new(&o, &k), 0);
        return k;
}

static void sim_log_dump(void) {
        char *l = k8s_sim_log(sim);
        cr_log_info("simulator log:\n%s", l ? l : "(none)");
        free(l);
}

static void poll_until_idle(struct k8s *k, unsigned ms) {
        usec_t end = now_monotonic() + ms * USEC_PER_MSEC;
        while (k8s_pending(k) > 0 && now_monotonic() < end)
                cr_assert_eq(k8s_poll(k, NULL, 0, 100), 0);
        if (k8s_pending(k) > 0)
                sim_log_dump();
        cr_assert_eq(k8s_pending(k), 0, "requests still pending");
}

Test(k8s, sim_get_node, .init = sim_up, .fini = sim_down) {
        struct k8s *k = sim_client((struct k8s_options) {});
        struct k8s_response r;
        char *body = NULL;

        cr_assert_eq(k8s_request_sync(k, "GET", NODE_PATH, NULL, NULL, &r, &body), 0);
        cr_assert_eq(r.err, 0, "%d", r.err);
        cr_assert_eq(r.status, 200, "%ld %s", r.status, body);
        cr_assert_eq(r.body, body);
        cr_assert_eq(r.len, strlen(body));
        cr_assert_not_null(strstr(body, "\"" NODE "\""), "%s", body);
        cr_assert_str_eq(r.reason, "");
        cr_assert_gt(r.duration, 0);
        free(body);

        /* Without ret_body the copy is not kept. */
        cr_assert_eq(k8s_request_sync(k, "GET", NODE_PATH, NULL, NULL, &r, NULL), 0);
        cr_assert_eq(r.status, 200);
        cr_assert_null(r.body);
        cr_assert_gt(r.len, 0);

        cr_assert_eq(k8s_sim_unauthorized(sim), 0);
        cr_assert_eq(k8s_sim_requests(sim, "GET", "/api/v1/nodes/"), 2);
        cr_assert_eq(k8s_connections(k), 1, "kept alive");
        k8s_free(k);
}

Test(k8s, sim_not_found_has_status, .init = sim_up, .fini = sim_down) {
        struct k8s *k = sim_client((struct k8s_options) {});
        struct k8s_response r;
        cr_assert_eq(k8s_request_sync(k, "GET", "/api/v1/nodes/nope", NULL, NULL, &r, NULL), 0);
        cr_assert_eq(r.err, 0);
        cr_assert_eq(r.status, 404);
        cr_assert_str_eq(r.reason, "NotFound");
        cr_assert_neq(r.message[0], 0);
        k8s_free(k);
}

Test(k8s, sim_write_methods_carry_body, .init = sim_up, .fini = sim_down) {
        struct k8s *k = sim_client((struct k8s_options) {});
        struct k8s_response r;
        char *body = NULL;

        cr_assert_eq(k8s_request_sync(k, "PATCH", NODE_PATH, "application/strategic-merge-patch+json",
                                      "{\"spec\":{\"unschedulable\":true}}", &r, &body), 0);
        cr_assert_eq(r.status, 200, "%ld %s", r.status, body);
        free(body);
        char *node = k8s_sim_node_json(sim, NODE);
        cr_assert_not_null(strstr(node, "\"unschedulable\":true"), "%s", node);
        free(node);

        k8s_sim_add_pod(sim, "team-a", "web-1", NODE, "app=web", 30, "ReplicaSet");
        cr_assert_eq(k8s_request_sync(k, "POST", "/api/v1/namespaces/team-a/pods/web-1/eviction", "application/json",
                                      "{\"apiVersion\":\"policy/v1\",\"kind\":\"Eviction\",\"metadata\":{\"name\":"
                                      "\"web-1\",\"namespace\":\"team-a\"},\"deleteOptions\":{\"gracePeriodSeconds\":1}}",
                                      &r, NULL), 0);
        cr_assert(r.status == 201 || r.status == 200, "%ld %s", r.status, r.message);
        cr_assert_eq(k8s_sim_evictions(sim, "team-a", "web-1"), 1);
        k8s_free(k);
}

static void gen_self_signed(const char *dir, const char *name) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd,
                 "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 "
                 "-subj /CN=untrusted -addext subjectAltName=IP:127.0.0.1 "
                 "-keyout '%s/%s.key' -out '%s/%s.crt' >/dev/null 2>&1",
                 dir, name, dir, name);
        cr_assert_eq(system(cmd), 0, "openssl failed");
}

Test(k8s, sim_untrusted_server_refused, .init = sim_up, .fini = sim_down) {
        char ca[300];
        gen_self_signed(tmpdir, "other");
        snprintf(ca, sizeof ca, "%s/other.crt", tmpdir);
        struct k8s *k = sim_client((struct k8s_options) { .ca_file = ca });
        struct k8s_response r;
        char *body = NULL;
        cr_assert_eq(k8s_request_sync(k, "GET", NODE_PATH, NULL, NULL, &r, &body), 0);
        cr_assert_eq(r.err, -EPERM, "%d", r.err);
        cr_assert_eq(r.status, 0);
        free(body);
        cr_assert_eq(k8s_sim_requests(sim, NULL, NULL), 0, "no request reached the server");
        k8s_free(k);
}

Test(k8s, sim_client_cert_accepted, .init = sim_up, .fini = sim_down) {
        char crt[300], key[300];
        gen_self_signed(tmpdir, "client");
        snprintf(crt, sizeof crt, "%s/client.crt", tmpdir);
        snprintf(key, sizeof key, "%s/client.key", tmpdir);
        struct k8s *k = sim_client((struct k8s_options) { .client_cert = crt, .client_key = key });
        struct k8s_response r;
        cr_assert_eq(k8s_request_sync(k, "GET", NODE_PATH, NULL, NULL, &r, NULL), 0);
        cr_assert_eq(r.err, 0, "%d", r.err);
        cr_assert_eq(r.status, 200);
        k8s_free(k);
}

Test(k8s, sim_token_rotation_one_401, .init = sim_up, .fini = sim_down) {
        struct k8s *k = sim_client((struct k8s_options) {});
        struct k8s_response r;
        char *body = NULL;

        cr_assert_eq(k8s_request_sync(k, "GET", NODE_PATH, NULL, NULL, &r, NULL), 0);
        cr_assert_eq(r.status, 200);
        k8s_sim_rotate_token(sim, "sim-token-rotated-2");
        cr_assert_eq(k8s_request_sync(k, "PATCH", NODE_PATH, "application/merge-patch+json",
                                      "{\"metadata\":{\"annotations\":{\"spotd/x\":\"1\"}}}", &r, &body), 0);
        cr_assert_eq(r.err, 0);
        cr_assert_eq(r.status, 200, "%ld %s", r.status, body);
        free(body);
        cr_assert_eq(k8s_sim_unauthorized(sim), 1, "exactly one 401 before the re-read token");
        cr_assert_eq(k8s_sim_requests(sim, "PATCH", NULL), 2, "the PATCH (and its body) was sent again");
        char *node = k8s_sim_node_json(sim, NODE);
        cr_assert_not_null(strstr(node, "spotd/x"), "%s", node);
        free(node);

        /* A token the server never accepts: one retry, then the 401 is handed on. */
        k8s_sim_rotate_token(sim, "sim-token-3");
        tmp_file(0, "stale-token", P("not-the-token"));
        k8s_free(k);
        char stale[300];
        snprintf(stale, sizeof stale, "%s/stale-token", tmpdir);
        k = sim_client((struct k8s_options) { .token_file = stale });
        cr_assert_eq(k8s_request_sync(k, "GET", NODE_PATH, NULL, NULL, &r, NULL), 0);
        cr_assert_eq(r.status, 401);
        cr_assert_eq(k8s_sim_unauthorized(sim), 3, "one retry only");
        k8s_free(k);
}

Test(k8s, sim_token_reread_periodically, .init = sim_up, .fini = sim_down) {
        struct k8s *k = sim_client((struct k8s_options) { .token_reread = 50 * USEC_PER_MSEC });
        struct k8s_response r;
        cr_assert_eq(k8s_request_sync(k, "GET", NODE_PATH, NULL, NULL, &r, NULL), 0);
        cr_assert_eq(r.status, 200);
        k8s_sim_rotate_token(sim, "sim-token-periodic");
        usleep(100 * 1000);
        cr_assert_eq(k8s_request_sync(k, "GET", NODE_PATH, NULL, NULL, &r, NULL), 0);
        cr_assert_eq(r.status, 200);
        cr_assert_eq(k8s_sim_unauthorized(sim), 0, "the file was re-read before the request");
        k8s_free(k);
}

static unsigned ok_count, fail_count;
static void tally(void *ud, const struct k8s_response *r) {
        if (r->err == 0 && r->status == 200 && r->len > 0 && r->body[r->len] == 0)
                ok_count++;
        else
                fail_count++;
}

Test(k8s, sim_64_concurrent_within_connection_limit, .init = sim_up, .fini = sim_down) {
        struct k8s *k = sim_client((struct k8s_options) { .max_connections = 4 });
        ok_count = fail_count = 0;
        for (int i = 0; i < 64; i++)
                cr_assert_eq(k8s_request(k, "GET", NODE_PATH, NULL, NULL, tally, NULL), 0);
        cr_assert_eq(k8s_pending(k), 64);
        poll_until_idle(k, 20000);
        cr_assert_eq(ok_count, 64, "ok %u failed %u", ok_count, fail_count);
        cr_assert_leq(k8s_connections(k), 4, "%lu connections", k8s_connections(k));
        cr_assert_leq(k8s_sim_connections(sim), 4, "%u connections at the server", k8s_sim_connections(sim));
        cr_assert_eq(k8s_sim_requests(sim, "GET", NODE_PATH), 64);
        k8s_free(k);
}

Test(k8s, sim_concurrent_rotation_each_retried_once, .init = sim_up, .fini = sim_down) {
        struct k8s *k = sim_client((struct k8s_options) { .max_connections = 2 });
        ok_count = fail_count = 0;
        k8s_sim_rotate_token(sim, "sim-token-burst");
        for (int i = 0; i < 16; i++)
                cr_assert_eq(k8s_request(k, "GET", NODE_PATH, NULL, NULL, tally, NULL), 0);
        poll_until_idle(k, 20000);
        cr_assert_eq(ok_count, 16, "ok %u failed %u", ok_count, fail_count);
        cr_assert_leq(k8s_sim_unauthorized(sim), 16);
        cr_assert_eq(k8s_sim_requests(sim, "GET", NODE_PATH), 16 + k8s_sim_unauthorized(sim));
        k8s_free(k);
}

struct status_seen {
        unsigned n;
        long status[8];
        char reason[8][64];
};
static void record(void *ud, const struct k8s_response *r) {
        struct status_seen *s = ud;
        if (s->n < 8) {
                s->status[s->n] = r->err ? r->err : r->status;
                strcpy(s->reason[s->n], r->reason);
        }
        s->n++;
}

Test(k8s, sim_500_burst_reported, .init = sim_up, .fini = sim_down) {
        struct k8s *k = sim_client((struct k8s_options) {});
        struct status_seen s = {};
        k8s_sim_fault(sim, "/api/v1/nodes", 500, 0, 3);
        for (int i = 0; i < 4; i++) {
                cr_assert_eq(k8s_request(k, "GET", NODE_PATH, NULL, NULL, record, &s), 0);
                poll_until_idle(k, 5000); /* one at a time: the fault order is the request order */
        }
        cr_assert_eq(s.n, 4);
        for (int i = 0; i < 3; i++) {
                cr_assert_eq(s.status[i], 500, "#%d: %ld", i, s.status[i]);
                cr_assert_str_eq(s.reason[i], "InternalError");
        }
        cr_assert_eq(s.status[3], 200, "the burst is over");
        k8s_free(k);
}

Test(k8s, sim_oversized_answer_efbig, .init = sim_up, .fini = sim_down) {
        char *node = k8s_sim_node_json(sim, NODE);
        size_t cap = strlen(node) / 2;
        free(node);
        cr_assert_gt(cap, 16);
        struct k8s *k = sim_client((struct k8s_options) { .max_body = cap });
        struct k8s_response r;
        char *body = NULL;
        cr_assert_eq(k8s_request_sync(k, "GET", NODE_PATH, NULL, NULL, &r, &body), 0);
        cr_assert_eq(r.err, -EFBIG, "%d", r.err);
        cr_assert_eq(r.status, 0);
        cr_assert_eq(r.len, 0);
        cr_assert_str_eq(body, "", "no partial body");
        free(body);
        /* A small answer still fits. */
        cr_assert_eq(k8s_request_sync(k, "GET", "/api/v1/nodes/nope", NULL, NULL, &r, NULL), 0);
        cr_assert(r.err == 0 || r.err == -EFBIG);
        k8s_free(k);
}

Test(k8s, sim_drop_is_transport_error, .init = sim_up, .fini = sim_down) {
        struct k8s *k = sim_client((struct k8s_options) {});
        struct k8s_response r;
        k8s_sim_fault(sim, NULL, K8S_SIM_DROP, 0, 1);
        cr_assert_eq(k8s_request_sync(k, "GET", NODE_PATH, NULL, NULL, &r, NULL), 0);
        cr_assert_lt(r.err, 0, "status %ld", r.status);
        cr_assert_eq(r.status, 0);
        cr_assert_eq(k8s_request_sync(k, "GET", NODE_PATH, NULL, NULL, &r, NULL), 0);
        cr_assert_eq(r.err, 0, "%d", r.err);
        cr_assert_eq(r.status, 200);
        k8s_free(k);
}

/* The answer would come after a minute: the request times out before,
 * while the server still holds it (it records a request when it answers;
 * without the timeout the answer would come, a 200). */
Test(k8s, sim_slow_answer_times_out, .init = sim_up, .fini = sim_down) {
        struct k8s *k = sim_client((struct k8s_options) { .timeout = 300 * USEC_PER_MSEC });
        struct k8s_response r;
        k8s_sim_fault(sim, NULL, K8S_SIM_SLOW, 60000, 1);
        cr_assert_eq(k8s_request_sync(k, "GET", NODE_PATH, NULL, NULL, &r, NULL), 0);
        cr_assert_eq(r.err, -ETIMEDOUT, "%d", r.err);
        cr_assert_eq(k8s_sim_requests(sim, NULL, NULL), 0, "not answered yet");
        cr_assert_gt(r.duration, 0);
        k8s_free(k);
}

struct chain {
        struct k8s *k;
        unsigned n;
        long status[2];
};
static void chain_done(void *ud, const struct k8s_response *r) {
        struct chain *c = ud;
        if (c->n < 2)
                c->status[c->n] = r->status;
        if (c->n++ == 0)
                cr_assert_eq(k8s_request(c->k, "GET", "/api/v1/nodes/nope", NULL, NULL, chain_done, c), 0);
}

Test(k8s, sim_callback_queues_request, .init = sim_up, .fini = sim_down) {
        struct chain c = { .k = sim_client((struct k8s_options) {}) };
        cr_assert_eq(k8s_request(c.k, "GET", NODE_PATH, NULL, NULL, chain_done, &c), 0);
        poll_until_idle(c.k, 10000);
        cr_assert_eq(c.n, 2);
        cr_assert_eq(c.status[0], 200);
        cr_assert_eq(c.status[1], 404);
        k8s_free(c.k);
}

struct nested {
        struct k8s *k;
        long inner_status;
        bool done;
};
static void nested_done(void *ud, const struct k8s_response *r) {
        struct nested *n = ud;
        struct k8s_response ir;
        cr_assert_eq(k8s_request_sync(n->k, "GET", "/api/v1/nodes/nope", NULL, NULL, &ir, NULL), 0);
        n->inner_status = ir.status;
        n->done = true;
}

Test(k8s, sim_callback_runs_sync_request, .init = sim_up, .fini = sim_down) {
        struct nested n = { .k = sim_client((struct k8s_options) {}) };
        ok_count = fail_count = 0;
        cr_assert_eq(k8s_request(n.k, "GET", NODE_PATH, NULL, NULL, nested_done, &n), 0);
        for (int i = 0; i < 4; i++)
                cr_assert_eq(k8s_request(n.k, "GET", NODE_PATH, NULL, NULL, tally, NULL), 0);
        poll_until_idle(n.k, 10000);
        cr_assert(n.done);
        cr_assert_eq(n.inner_status, 404);
        cr_assert_eq(ok_count, 4);
        k8s_free(n.k);
}

Test(k8s, sim_free_with_requests_in_flight, .init = sim_up, .fini = sim_down) {
        struct k8s *k = sim_client((struct k8s_options) {});
        called = 0;
        k8s_sim_fault(sim, NULL, K8S_SIM_SLOW, 500, 3);
        for (int i = 0; i < 3; i++)
                cr_assert_eq(k8s_request(k, "GET", NODE_PATH, NULL, NULL, count_done, NULL), 0);
        for (int i = 0; i < 3; i++)
                cr_assert_eq(k8s_poll(k, NULL, 0, 20), 0);
        cr_assert_eq(k8s_pending(k), 3);
        k8s_free(k);
        cr_assert_eq(called, 0);
}

/* ---- answers no server library would send: a raw server ---- */

/* Answers the i-th request with answers[i], over as many connections as the
 * client opens, then stops. */
struct raw_server {
        int fd;
        unsigned port;
        const char *const *answers;
        size_t n;
        pthread_t thread;
};

static void *raw_serve(void *arg) {
        struct raw_server *s = arg;
        size_t next = 0;
        while (next < s->n) {
                int c = accept(s->fd, NULL, NULL);
                char buf[4096];
                size_t got = 0;
                if (c < 0)
                        break;
                while (next < s->n) {
                        ssize_t r = recv(c, buf + got, sizeof buf - 1 - got, 0);
                        if (r <= 0)
                                break;
                        got += (size_t) r;
                        buf[got] = 0;
                        if (!strstr(buf, "\r\n\r\n"))
                                continue;
                        got = 0;
                        (void) !send(c, s->answers[next], strlen(s->answers[next]), MSG_NOSIGNAL);
                        next++;
                }
                close(c);
        }
        return NULL;
}

static void raw_start(struct raw_server *s, const char *const *answers, size_t n) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t l = sizeof a;
        *s = (struct raw_server) { .answers = answers, .n = n };
        s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert_geq(s->fd, 0);
        cr_assert_eq(bind(s->fd, (struct sockaddr *) &a, sizeof a), 0);
        cr_assert_eq(listen(s->fd, 8), 0);
        cr_assert_eq(getsockname(s->fd, (struct sockaddr *) &a, &l), 0);
        s->port = ntohs(a.sin_port);
        cr_assert_eq(pthread_create(&s->thread, NULL, raw_serve, s), 0);
}

static void raw_stop(struct raw_server *s) {
        shutdown(s->fd, SHUT_RDWR); /* wakes accept() */
        pthread_join(s->thread, NULL);
        close(s->fd);
}

/* Found by fuzzing the IMDS client (tests/fuzz/corpus/imds_client/
 * crash-curl-folded-header); the same libcurl bug hit this client's reused
 * handles: before 8.1.0 (Debian 12: 7.88) a handle kept a pointer to the
 * previous answer's freed headers, even after curl_easy_reset, and appended
 * a folded first header line to it (use after free, then a double free that
 * aborted). Any JobManager or webhook receiver could send one. */
Test(k8s, folded_first_header_on_a_later_request) {
        static const char *const answers[] = {
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nok",
                "HTTP/1.1 200 OK\r\n\tX-Folded: y\r\nContent-Length: 2\r\n\r\nok",
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        };
        struct raw_server s;
        struct k8s *k;
        char url[64];

        raw_start(&s, answers, 3);
        snprintf(url, sizeof url, "http://127.0.0.1:%u/overview", s.port);
        cr_assert_eq(k8s_new(&(struct k8s_options) { .api_url = "https://127.0.0.1:1" }, &k), 0);
        called = 0;
        for (unsigned i = 1; i <= 3; i++) {
                /* One after the other: each request gets the handle the one before used. */
                cr_assert_eq(k8s_request_url(k, "GET", url, NULL, NULL, 0, count_done, NULL), 0);
                for (int t = 0; t < 200 && called < i; t++)
                        cr_assert_eq(k8s_poll(k, NULL, 0, 50), 0);
                cr_assert_eq(called, i);
                if (i == 2)
                        cr_assert(last.err == -EIO || (last.err == 0 && last.status == 200),
                                  "a folded first header is taken or refused, got %d/%ld", last.err, last.status);
                else
                        cr_assert(last.err == 0 && last.status == 200, "%d/%ld", last.err, last.status);
        }
        k8s_free(k);
        raw_stop(&s);
}
