#include "check.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <string.h>

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

/* Reads the node and the TaskManager pods spotd would evict. 0 when the API
 * answered or none is configured. text: where to print, NULL for JSON only. */
static int check_kube(const struct config *cfg, cJSON *root, FILE *text) {
        struct k8s *k = NULL;
        struct k8s_response r;
        char path[1200], f[400], l[700], sel[400];
        int ret = 0;

        cJSON *o = cJSON_AddObjectToObject(root, "kubernetes");
        if (agent_k8s_new(cfg, &k) < 0 || !k) {
                cJSON_AddStringToObject(o, "status", k ? "error" : "not configured");
                if (text)
                        fprintf(text, "%-26s %s\n", "kubernetes", "not configured (--kube-api, or run in a cluster)");
                return k ? -EINVAL : 0;
        }
        _cleanup_free_ char *node = NULL, *pods = NULL;
        snprintf(path, sizeof path, "/api/v1/nodes/%s", cfg->node_name);
        if (k8s_request_sync(k, "GET", path, NULL, NULL, &r, &node) < 0 || r.err || r.status != 200) {
                snprintf(sel, sizeof sel, "%s%s%s", r.err ? http_strerror(r.err) : r.reason, r.message[0] ? ": " : "", r.message);
                cJSON_AddStringToObject(o, "status", "error");
                cJSON_AddStringToObject(o, "error", sel);
                if (text)
                        fprintf(text, "%-26s cannot read node %s: HTTP %ld %s\n", "kubernetes", cfg->node_name, r.status, sel);
                k8s_free(k);
                return -EIO;
        }
        _cleanup_(cJSON_Deletep) cJSON *n = cJSON_Parse(node);
        cJSON *spec = cJSON_GetObjectItem(n, "spec");
        cJSON *ann = cJSON_GetObjectItem(cJSON_GetObjectItem(n, "metadata"), "annotations");
        const char *fence = cJSON_GetStringValue(cJSON_GetObjectItem(ann, "spotd.io/event-id"));
        const char *phase = cJSON_GetStringValue(cJSON_GetObjectItem(ann, "spotd.io/phase"));
        cJSON_AddStringToObject(o, "status", "ok");
        cJSON_AddBoolToObject(o, "unschedulable", cJSON_IsTrue(cJSON_GetObjectItem(spec, "unschedulable")));
        if (fence) {
                cJSON_AddStringToObject(o, "fence_event", fence);
                cJSON_AddStringToObject(o, "fence_phase", phase ? phase : "");
        }
        if (text)
                fprintf(text, "%-26s node %s%s%s%s%s%s\n", "kubernetes", cfg->node_name,
                        cJSON_IsTrue(cJSON_GetObjectItem(spec, "unschedulable")) ? ", cordoned" : "",
                        fence ? ", spotd fence of " : "", fence ? fence : "", fence ? ", phase " : "",
                        fence && phase ? phase : "");

        snprintf(sel, sizeof sel, "spec.nodeName=%s", cfg->node_name);
        if (k8s_escape(sel, f, sizeof f) < 0 || k8s_escape(cfg->tm_selector, l, sizeof l) < 0) {
                k8s_free(k);
                return -EINVAL;
        }
        snprintf(path, sizeof path, "/api/v1/pods?fieldSelector=%s&labelSelector=%s", f, l);
        cJSON *arr = cJSON_AddArrayToObject(o, "taskmanagers");
        if (k8s_request_sync(k, "GET", path, NULL, NULL, &r, &pods) < 0 || r.err || r.status != 200) {
                if (text)
                        fprintf(text, "%-26s cannot list pods: HTTP %ld %s\n", "", r.status, r.err ? http_strerror(r.err) : r.reason);
                ret = -EIO;
        } else {
                _cleanup_(cJSON_Deletep) cJSON *list = cJSON_Parse(pods);
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
        }
        k8s_free(k);
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
