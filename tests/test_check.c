/* `spotd check` against the simulators: the real binary, its exit status,
 * its text and JSON. A Kubernetes API that was configured but cannot be
 * used (a file missing, a malformed in-cluster environment, a request that
 * fails) is an error with its reason and exit status 1, never "not
 * configured" with "ok": true (issue 9). Not configuring one at all stays
 * "not configured": check then reports on the metadata service only. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <sys/stat.h>

#include "helpers.h"
#include "imds_sim.h"
#include "k8s_sim.h"

static struct imds_sim *imds;
static struct k8s_sim *kube;
static char a_imds[128], a_api[128], a_ca[1100], a_token[1100], port_env[64];

static void start(void) {
        char url[64];
        cr_assert_eq(imds_sim_start(NULL, &imds), 0);
        imds_sim_url(imds, url, sizeof url);
        snprintf(a_imds, sizeof a_imds, "--imds-endpoint=%s", url);
        cr_assert_eq(k8s_sim_start(NULL, &kube), 0);
        k8s_sim_url(kube, url, sizeof url);
        snprintf(a_api, sizeof a_api, "--kube-api=%s", url);
        snprintf(a_ca, sizeof a_ca, "--kube-ca-file=%s", k8s_sim_ca_file(kube));
        snprintf(a_token, sizeof a_token, "--kube-token-file=%s", k8s_sim_token_file(kube));
        snprintf(port_env, sizeof port_env, "KUBERNETES_SERVICE_PORT=%u", (unsigned) k8s_sim_port(kube));
        k8s_sim_add_node(kube, "node-a", NULL);
        k8s_sim_add_pod(kube, "flink", "orders-taskmanager-1-1", "node-a",
                        "component=taskmanager,type=flink-native-kubernetes,app=orders", 30, "Deployment");
}
static void stop(void) {
        imds = imds_sim_stop(imds);
        kube = k8s_sim_stop(kube);
}

TestSuite(check, .init = start, .fini = stop, .timeout = 60);

struct result {
        int status;    /* exit status, -1 if it did not exit by itself */
        char *out;     /* stdout and stderr */
        cJSON *json;   /* with json: the document printed */
};

/* Runs spotd check with the metadata simulator, the given arguments and
 * environment (NULL: a minimal one), in text or JSON. */
static struct result run_check(bool json, char *const *args, char *const *envp) {
        char *argv[32] = { "spotd", "check", a_imds, "--node-name=node-a", "--log-target=stderr" };
        size_t n = 5;
        for (; args && *args && n < ELEMENTSOF(argv) - 2; args++)
                argv[n++] = *args;
        if (json)
                argv[n++] = "--output=json";
        argv[n] = NULL;
        struct proc p;
        cr_assert_eq(proc_spawn(&p, argv, envp), 0);
        int st = proc_stop(&p, 0, 20000);
        struct result r = { .status = WIFEXITED(st) ? WEXITSTATUS(st) : -1, .out = p.out ? p.out : strdup("") };
        if (json) {
                /* Log lines (stderr) may come first: the document starts a line with "{". */
                const char *doc = r.out[0] == '{' ? r.out : strstr(r.out, "\n{");
                r.json = doc ? cJSON_Parse(doc + (doc[0] == '\n')) : NULL;
                cr_assert_not_null(r.json, "no JSON in: %s", r.out);
        }
        return r;
}

static void result_free(struct result *r) {
        free(r->out);
        cJSON_Delete(r->json);
}

static const char *kube_field(const struct result *r, const char *key) {
        return cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(r->json, "kubernetes"), key));
}

/* A broken configuration: exit 1, the reason in the text, and in JSON
 * "ok": false, kubernetes.status "error" and kubernetes.error holding want. */
static void expect_error(char *const *args, char *const *envp, const char *want, const char *want2) {
        struct result r = run_check(false, args, envp);
        cr_assert_eq(r.status, 1, "exit %d: %s", r.status, r.out);
        const char *line = strstr(r.out, "\nkubernetes ");
        cr_assert_not_null(line, "%s", r.out);
        cr_assert(strstr(line, "error") && strstr(line, want) && (!want2 || strstr(line, want2)),
                  "no reason (%s) on the kubernetes line: %s", want, r.out);
        cr_assert_null(strstr(r.out, "not configured"), "%s", r.out);
        result_free(&r);

        r = run_check(true, args, envp);
        cr_assert_eq(r.status, 1, "exit %d: %s", r.status, r.out);
        cr_assert(cJSON_IsFalse(cJSON_GetObjectItem(r.json, "ok")), "%s", r.out);
        cr_assert_str_eq(kube_field(&r, "status"), "error", "%s", r.out);
        const char *e = kube_field(&r, "error");
        cr_assert(e && strstr(e, want) && (!want2 || strstr(e, want2)), "kubernetes.error: %s", r.out);
        result_free(&r);
}

Test(check, kube_token_file_missing_is_an_error) {
        expect_error((char *[]) { a_api, a_ca, "--kube-token-file=/nonexistent/token", NULL }, NULL,
                     "--kube-token-file /nonexistent/token", "No such file or directory");
}

Test(check, kube_ca_file_missing_is_an_error) {
        expect_error((char *[]) { a_api, a_token, "--kube-ca-file=/nonexistent/ca.crt", NULL }, NULL,
                     "--kube-ca-file /nonexistent/ca.crt", "No such file or directory");
}

/* In a pod without its service account (automountServiceAccountToken:
 * false), the environment says "in a cluster" and the token is missing. */
Test(check, in_cluster_without_service_account_is_an_error) {
        struct stat st;
        if (stat("/var/run/secrets/kubernetes.io/serviceaccount/token", &st) == 0)
                cr_skip("this machine has a service account token");
        expect_error(NULL, (char *[]) { "PATH=/usr/bin:/bin", "KUBERNETES_SERVICE_HOST=127.0.0.1", port_env, NULL },
                     "/var/run/secrets/kubernetes.io/serviceaccount/token", "No such file or directory");
}

Test(check, in_cluster_environment_malformed_is_an_error) {
        expect_error(NULL, (char *[]) { "PATH=/usr/bin:/bin", "KUBERNETES_SERVICE_HOST=10.0.0.1 x", port_env, NULL },
                     "KUBERNETES_SERVICE_HOST", NULL);
        expect_error(NULL, (char *[]) { "PATH=/usr/bin:/bin", "KUBERNETES_SERVICE_HOST=127.0.0.1", NULL },
                     "KUBERNETES_SERVICE_PORT", NULL);
}

Test(check, kube_files_without_api_is_an_error) {
        expect_error((char *[]) { a_token, a_ca, NULL }, NULL, "--kube-api", NULL);
}

Test(check, kube_request_failure_is_an_error) {
        /* Nothing listens on port 1. */
        expect_error((char *[]) { "--kube-api=https://127.0.0.1:1", a_ca, a_token, NULL }, NULL, "connection refused", NULL);
        /* The API answers, but not to us. */
        char bad_token[] = "/tmp/spotd-check-token-XXXXXX";
        int fd = mkstemp(bad_token);
        cr_assert_geq(fd, 0);
        cr_assert_eq(write(fd, "not-the-token\n", 14), 14);
        close(fd);
        char a_bad[64];
        snprintf(a_bad, sizeof a_bad, "--kube-token-file=%s", bad_token);
        expect_error((char *[]) { a_api, a_ca, a_bad, NULL }, NULL, "401", "cannot read node node-a");
        unlink(bad_token);
}

Test(check, kube_working_and_not_configured) {
        struct result r = run_check(true, (char *[]) { a_api, a_ca, a_token, NULL }, NULL);
        cr_assert_eq(r.status, 0, "%s", r.out);
        cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(r.json, "ok")), "%s", r.out);
        cr_assert_str_eq(kube_field(&r, "status"), "ok", "%s", r.out);
        cJSON *tms = cJSON_GetObjectItem(cJSON_GetObjectItem(r.json, "kubernetes"), "taskmanagers");
        cr_assert_eq(cJSON_GetArraySize(tms), 1, "%s", r.out);
        cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetArrayItem(tms, 0)), "flink/orders-taskmanager-1-1");
        result_free(&r);

        /* Nothing about Kubernetes configured: the metadata side alone. */
        r = run_check(true, NULL, NULL);
        cr_assert_eq(r.status, 0, "%s", r.out);
        cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(r.json, "ok")), "%s", r.out);
        cr_assert_str_eq(kube_field(&r, "status"), "not configured", "%s", r.out);
        result_free(&r);
}
