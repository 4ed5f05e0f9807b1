#include "check.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "detect.h"
#include "http.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(cJSON *, cJSON_Delete)

static void add_time(cJSON *o, const char *key, time_t t) {
        char buf[32];
        if (!t) {
                cJSON_AddNullToObject(o, key);
                return;
        }
        format_rfc3339(t, buf, sizeof buf);
        cJSON_AddStringToObject(o, key, buf);
}

static const char *error_text(int r, const struct detect_result *res, char *buf, size_t len) {
        if (res && res->why)
                snprintf(buf, len, "%s (body starts \"%s\")", res->why, res->excerpt);
        else
                snprintf(buf, len, "%s", http_strerror(r));
        return buf;
}

/* Whether the user asked for a Kubernetes API: a URL, one of its files, or
 * the in-cluster environment. Asked for and unusable is an error; not asked
 * for at all leaves check to the metadata service ("not configured"). */
static bool kube_wanted(const struct config *cfg) {
        const char *h = getenv("KUBERNETES_SERVICE_HOST"), *p = getenv("KUBERNETES_SERVICE_PORT");
        return cfg->kube_api[0] || cfg->kube_token_file[0] || cfg->kube_ca_file[0] || cfg->kube_client_cert[0] ||
               cfg->kube_client_key[0] || (h && *h) || (p && *p);
}

/* Why no client came out of agent_k8s_new(), which says only -errno (0
 * with no client: no API URL). Names the file that cannot be opened, as
 * the user gave it or as the in-cluster configuration has it. */
static void kube_setup_error(const struct config *cfg, int r, char *buf, size_t len) {
        char url[300], token[1024] = "", ca[1024] = "", ns[64];
        int ic = -ENOENT;

        if (!cfg->kube_api[0]) {
                ic = k8s_in_cluster(NULL, NULL, url, sizeof url, token, sizeof token, ca, sizeof ca, ns, sizeof ns);
                if (ic == -ENOENT) {
                        const char *h = getenv("KUBERNETES_SERVICE_HOST"), *p = getenv("KUBERNETES_SERVICE_PORT");
                        bool host = h && *h, port = p && *p;
                        snprintf(buf, len, "%s",
                                 host && !port   ? "in-cluster configuration: KUBERNETES_SERVICE_PORT is not set"
                                 : port && !host ? "in-cluster configuration: KUBERNETES_SERVICE_HOST is not set"
                                                 : "no API URL: set --kube-api (or run in a cluster)");
                        return;
                }
                if (ic < 0) {
                        /* The values are not echoed: they are what is wrong with them. */
                        snprintf(buf, len, "in-cluster configuration: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT "
                                           "are not a host name or address and a port");
                        return;
                }
        }
        const struct {
                const char *what, *path;
        } files[] = {
                { cfg->kube_token_file[0] ? "--kube-token-file" : "service account token",
                  cfg->kube_token_file[0] ? cfg->kube_token_file : token },
                { cfg->kube_ca_file[0] ? "--kube-ca-file" : "service account CA", cfg->kube_ca_file[0] ? cfg->kube_ca_file : ca },
                { "--kube-client-cert", cfg->kube_client_cert },
                { "--kube-client-key", cfg->kube_client_key },
        };
        for (size_t i = 0; i < ELEMENTSOF(files); i++) {
                if (!files[i].path[0])
                        continue;
                int fd = open(files[i].path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
                if (fd < 0) {
                        snprintf(buf, len, "%s %s: %s", files[i].what, files[i].path, strerror(errno));
                        return;
                }
                close(fd);
        }
        snprintf(buf, len, "cannot set up the client for %s: %s%s", cfg->kube_api[0] ? cfg->kube_api : url,
                 strerror(-r), r == -EINVAL ? " (is the token file one printable token?)" : "");
}

/* What went wrong with a request: it could not run (q < 0, ret untouched),
 * the transport failed, or the server said no. */
static void request_error(const char *what, int q, const struct k8s_response *r, char *buf, size_t len) {
        if (q < 0)
                snprintf(buf, len, "%s: %s", what, http_strerror(q));
        else if (r->err)
                snprintf(buf, len, "%s: %s", what, http_strerror(r->err));
        else
                snprintf(buf, len, "%s: HTTP %ld %s%s%s", what, r->status, r->reason, r->message[0] ? ": " : "", r->message);
}

/* Output of a path or a server's words goes on one line. */
static void one_line(char *s) {
        for (; *s; s++)
                if ((unsigned char) *s < 0x20 || *s == 0x7f)
                        *s = ' ';
}

/* Reads the node and the TaskManager pods spotd would evict. 0 when the API
 * answered or none is configured; -errno, with the reason printed and in
 * kubernetes.error, when one is configured and cannot be used. text: where
 * to print, NULL for JSON only. */
static int check_kube(const struct config *cfg, cJSON *root, FILE *text) {
        struct k8s *k = NULL;
        struct k8s_response r = {};
        char path[1200], f[CONFIG_FIELD_SELECTOR_ESCAPED_MAX], l[CONFIG_TM_SELECTOR_ESCAPED_MAX], sel[400], why[1400];
        _cleanup_free_ char *node = NULL, *pods = NULL;
        _cleanup_(cJSON_Deletep) cJSON *n = NULL, *list = NULL;
        int q, ret = 0;

        cJSON *o = cJSON_AddObjectToObject(root, "kubernetes");
        q = agent_k8s_new(cfg, &k);
        if (q < 0 || !k) {
                if (q == 0 && !kube_wanted(cfg)) {
                        cJSON_AddStringToObject(o, "status", "not configured");
                        if (text)
                                fprintf(text, "%-26s %s\n", "kubernetes", "not configured (--kube-api, or run in a cluster)");
                        return 0;
                }
                k8s_free(k);
                kube_setup_error(cfg, q, why, sizeof why);
                ret = -EINVAL;
                goto finish;
        }

        snprintf(path, sizeof path, "/api/v1/nodes/%s", cfg->node_name);
        q = k8s_request_sync(k, "GET", path, NULL, NULL, &r, &node);
        if (q < 0 || r.err || r.status != 200) {
                snprintf(sel, sizeof sel, "cannot read node %s", cfg->node_name);
                request_error(sel, q, &r, why, sizeof why);
                ret = -EIO;
                goto finish;
        }
        n = cJSON_Parse(node);
        if (!n) {
                snprintf(why, sizeof why, "cannot read node %s: the answer is not JSON", cfg->node_name);
                ret = -EBADMSG;
                goto finish;
        }
        cJSON *spec = cJSON_GetObjectItem(n, "spec");
        cJSON *ann = cJSON_GetObjectItem(cJSON_GetObjectItem(n, "metadata"), "annotations");
        const char *fence = cJSON_GetStringValue(cJSON_GetObjectItem(ann, "spotd.io/event-id"));
        const char *phase = cJSON_GetStringValue(cJSON_GetObjectItem(ann, "spotd.io/phase"));
        cJSON_AddBoolToObject(o, "unschedulable", cJSON_IsTrue(cJSON_GetObjectItem(spec, "unschedulable")));
        if (fence) {
                cJSON_AddStringToObject(o, "fence_event", fence);
                cJSON_AddStringToObject(o, "fence_phase", phase ? phase : "");
        }
        if (text)
                fprintf(text, "%-26s node %s%s%s%.80s%s%.40s\n", "kubernetes", cfg->node_name,
                        cJSON_IsTrue(cJSON_GetObjectItem(spec, "unschedulable")) ? ", cordoned" : "",
                        fence ? ", spotd fence of " : "", fence ? fence : "", fence ? ", phase " : "",
                        fence && phase ? phase : "");

        /* config_parse() made sure both fit. */
        snprintf(sel, sizeof sel, "spec.nodeName=%s", cfg->node_name);
        if (k8s_escape(sel, f, sizeof f) < 0 || k8s_escape(cfg->tm_selector, l, sizeof l) < 0) {
                snprintf(why, sizeof why, "the pod list's selectors are too long");
                ret = -ENOBUFS;
                goto finish;
        }
        snprintf(path, sizeof path, "/api/v1/pods?fieldSelector=%s&labelSelector=%s", f, l);
        cJSON *arr = cJSON_AddArrayToObject(o, "taskmanagers");
        q = k8s_request_sync(k, "GET", path, NULL, NULL, &r, &pods);
        if (q < 0 || r.err || r.status != 200) {
                request_error("cannot list pods", q, &r, why, sizeof why);
                ret = -EIO;
                goto finish;
        }
        list = cJSON_Parse(pods);
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItem(list, "items")) {
                cJSON *md = cJSON_GetObjectItem(it, "metadata");
                const char *ns = cJSON_GetStringValue(cJSON_GetObjectItem(md, "namespace"));
                const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(md, "name"));
                if (!ns || !name)
                        continue;
                snprintf(sel, sizeof sel, "%.60s/%.250s", ns, name);
                cJSON_AddItemToArray(arr, cJSON_CreateString(sel));
                if (text)
                        fprintf(text, "%-26s would evict TaskManager %s%s\n", "", sel,
                                cJSON_GetObjectItem(md, "deletionTimestamp") ? " (already terminating)" : "");
        }
        if (text && !cJSON_GetArraySize(arr))
                fprintf(text, "%-26s no TaskManager pods on this node (selector %s)\n", "", cfg->tm_selector);

finish:
        k8s_free(k);
        cJSON_AddStringToObject(o, "status", ret < 0 ? "error" : "ok");
        if (ret < 0) {
                one_line(why);
                cJSON_AddStringToObject(o, "error", why);
                if (text)
                        fprintf(text, "%-26s error: %s\n", "kubernetes", why);
        }
        return ret;
}

int check_run(const struct config *cfg, FILE *out) {
        _cleanup_(cJSON_Deletep) cJSON *root = cJSON_CreateObject();
        struct imds *imds = NULL;
        char instance[64], err[256];
        bool json = cfg->output == OUTPUT_JSON, ok = true;
        int r;

        if (!root)
                return 1;
        r = agent_imds_new(cfg, NULL, NULL, &imds);
        if (r < 0) {
                fprintf(stderr, "spotd: cannot set up the metadata client: %s\n", strerror(-r));
                return 1;
        }
        cJSON_AddStringToObject(root, "imds_endpoint", cfg->imds_endpoint);
        cJSON_AddStringToObject(root, "node", cfg->node_name);
        cJSON_AddBoolToObject(root, "dry_run", cfg->dry_run);

        r = agent_instance_id(imds, instance, sizeof instance);
        if (r < 0) {
                if (r != -ENOENT)
                        ok = false;
                cJSON_AddNullToObject(root, "instance_id");
                cJSON_AddStringToObject(root, "instance_id_error", error_text(r, NULL, err, sizeof err));
                snprintf(instance, sizeof instance, "%.63s", cfg->node_name);
        } else
                cJSON_AddStringToObject(root, "instance_id", instance);
        cJSON_AddStringToObject(root, "imds_version", imds_using_token(imds) ? "v2" : "v1");
        if (!json) {
                fprintf(out, "%-14s %s (%s)\n", "metadata", cfg->imds_endpoint,
                        imds_using_token(imds) ? "IMDSv2 token" : "IMDSv1, no token");
                fprintf(out, "%-14s %s\n", "node", cfg->node_name);
                fprintf(out, "%-14s %s\n", "instance", r < 0 ? err : instance);
        }

        cJSON *sources = cJSON_AddObjectToObject(root, "sources");
        for (int k = 0; k < _EVENT_KIND_MAX; k++) {
                const char *name = event_kind_to_string(k);
                cJSON *s = cJSON_AddObjectToObject(sources, name);
                struct detect_result res;

                cJSON_AddStringToObject(s, "path", detect_path(k));
                if (!cfg->watch[k]) {
                        cJSON_AddStringToObject(s, "status", "disabled");
                        if (!json)
                                fprintf(out, "%-26s disabled\n", name);
                        continue;
                }
                r = detect_source(imds, k, instance, cfg->asg_deadline, &res);
                if (r < 0) {
                        ok = false;
                        cJSON_AddStringToObject(s, "status", "error");
                        cJSON_AddStringToObject(s, "error", error_text(r, &res, err, sizeof err));
                        if (!json)
                                fprintf(out, "%-26s error: %s\n", name, err);
                        continue;
                }
                cJSON_AddStringToObject(s, "status", res.n ? "pending" : "none");
                if (res.state[0])
                        cJSON_AddStringToObject(s, "state", res.state);
                cJSON *evs = cJSON_AddArrayToObject(s, "events");
                if (!json && !res.n)
                        fprintf(out, "%-26s none%s%s\n", name, res.state[0] ? ", state " : "", res.state);
                for (size_t i = 0; i < res.n; i++) {
                        const struct event *e = &res.events[i];
                        char plan[512], dl[32] = "-";
                        cJSON *o = cJSON_CreateObject();
                        if (!o || !cJSON_AddItemToArray(evs, o)) {
                                cJSON_Delete(o);
                                break;
                        }
                        agent_describe_plan(cfg, e, plan, sizeof plan);
                        cJSON_AddStringToObject(o, "id", e->id);
                        cJSON_AddStringToObject(o, "detail", e->detail);
                        cJSON_AddBoolToObject(o, "canceled", e->canceled);
                        add_time(o, "notice_time", e->notice_time);
                        add_time(o, "deadline", e->deadline);
                        cJSON_AddStringToObject(o, "action", e->canceled ? "undo"
                                                : event_action_to_string(config_action_for(cfg, e)));
                        cJSON_AddStringToObject(o, "plan", plan);
                        if (!json) {
                                if (e->deadline)
                                        format_rfc3339(e->deadline, dl, sizeof dl);
                                fprintf(out, "%-26s %s %s, deadline %s (%lds left)\n%-26s %s\n", name, e->detail,
                                        e->id, dl, e->deadline ? (long) (e->deadline - time(NULL)) : 0L, "", plan);
                        }
                }
        }
        if (check_kube(cfg, root, json ? NULL : out) < 0)
                ok = false;
        cJSON_AddBoolToObject(root, "ok", ok);
        if (json) {
                _cleanup_free_ char *s = cJSON_Print(root);
                if (s)
                        fprintf(out, "%s\n", s);
        }
        imds_free(imds);
        return ok ? 0 : 1;
}
