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
        cJSON_AddBoolToObject(root, "ok", ok);
        if (json) {
                _cleanup_free_ char *s = cJSON_Print(root);
                if (s)
                        fprintf(out, "%s\n", s);
        }
        imds_free(imds);
        return ok ? 0 : 1;
}
