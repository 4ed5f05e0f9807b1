#include "handle.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "log.h"
#include "macro.h"
#include "rescale.h"
#include "webhook.h"

#define MAX_PODS 256
#define FENCE_ATTEMPTS 20         /* 409s in a row before we evict unfenced */
#define GONE_CHECK_INTERVAL (1 * USEC_PER_SEC)
#define RETRY_BASE (500 * USEC_PER_MSEC)
#define RETRY_CAP (5 * USEC_PER_SEC)

DEFINE_TRIVIAL_CLEANUP_FUNC(cJSON *, cJSON_Delete)

enum phase {
        PH_IDLE,
        PH_FENCE_READ,   /* GET node in flight or due */
        PH_FENCE_WRITE,  /* PATCH in flight */
        PH_LIST,         /* pod list in flight or due */
        PH_EVICT,        /* evictions and gone checks */
        PH_DONE,
        PH_UNDO_READ,
        PH_UNDO_WRITE,
};

enum pod_state { P_PENDING, P_INFLIGHT, P_ACCEPTED, P_GONE, P_GAVE_UP, P_DELETE, P_DELETE_INFLIGHT };

struct pod {
        struct handler *h;
        char ns[64], name[254], uid[40], app[64];
        unsigned grace;
        enum pod_state st;
        bool checking;       /* a gone check is in flight */
        bool final_block;    /* not retryable (several PDBs): force delete or give up at the margin */
        bool warned;         /* the current failure streak was logged */
        int cluster;         /* its Flink cluster in the rescale, or -1 */
        unsigned attempts;
        usec_t due;          /* monotonic: next eviction attempt or gone check */
};

struct timeline {
        usec_t seen, fenced, list, first_evict, last_accept, gone, done;
};

struct handler {
        const struct config *cfg;
        struct k8s *k;
        struct status *st;
        unsigned inflight;    /* our requests in flight */
        bool start_failed;    /* the start-up read of the node failed: retried */
        usec_t start_retry_at;
        struct req *reqs;     /* the same, to free them if the client goes first */
        bool started;

        /* The node as last read. */
        char node_uid[40];
        char rv[32];
        /* A fence left by an earlier run (read at start). */
        char ann_event[EVENT_ID_MAX], ann_phase[24];
        time_t ann_fenced_at;
        bool ann_checked;

        /* The event being handled. */
        bool active;
        struct event ev;
        enum event_action action;
        enum phase phase;
        unsigned attempts;
        bool fence_warned;    /* a fence failure of this event was logged */
        usec_t due;           /* monotonic: next step of the node-level phase */
        usec_t margin_at;     /* monotonic: evictions must be accepted by then */
        usec_t deadline_at;   /* monotonic: the instance goes away */
        struct pod pods[MAX_PODS];
        size_t npods;
        struct timeline tl;
        struct rescale *rs;   /* the Flink side of this event */
        struct webhook *wh;
        char outcome[160];

        /* Queued work while requests of the previous one are in flight. */
        bool queued;
        struct event queued_ev;
        enum event_action queued_action;
        bool undo_queued;
        char undo_id[EVENT_ID_MAX];
};

static const char *phase_name(enum phase p) {
        static const char *const n[] = { "idle", "fencing", "fencing", "listing", "evicting", "done",
                                         "undoing", "undoing" };
        return n[p];
}

static void ctx(const struct handler *h, const struct pod *p, struct log_ctx *c) {
        *c = (struct log_ctx) { .event_id = h->ev.id, .kind = event_kind_to_string(h->ev.kind),
                                .phase = phase_name(h->phase), .node = h->cfg->node_name };
        if (p) {
                c->pod = p->name;
                c->namespace_ = p->ns;
                c->flink_cluster = p->app[0] ? p->app : NULL;
        }
}

static void publish(struct handler *h, const char *phase) {
        struct status_event se = { .ev = h->ev, .first_seen = h->tl.seen, .last_seen = now_realtime() };
        struct rescale_timeline rt = {};
        if (h->rs)
                rescale_timeline(h->rs, &rt);
        se.tl = (struct status_timeline) {
                .fenced = h->tl.fenced, .checkpoint_done = rt.checkpoint_done, .first_eviction = h->tl.first_evict,
                .last_eviction_accepted = h->tl.last_accept, .bounds_lowered = rt.put_accepted,
                .running_at_new = rt.running_at_new, .pods_gone = h->tl.gone, .bounds_restored = rt.restored,
                .done = h->tl.done,
        };
        snprintf(se.phase, sizeof se.phase, "%s", phase);
        snprintf(se.outcome, sizeof se.outcome, "%s", h->outcome);
        status_upsert_event(h->st, &se);
}

/* ---- the webhook's rescale signal ---- */

static void add_usec(cJSON *o, const char *k, usec_t t) {
        char buf[40];
        if (!t)
                return;
        format_rfc3339_usec(t, buf, sizeof buf);
        cJSON_AddStringToObject(o, k, buf);
}

static void signal_webhook(struct handler *h, const char *type) {
        char dl[32] = "";
        if (!h->cfg->webhook_urls.n)
                return;
        _cleanup_(cJSON_Deletep) cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "version", 1);
        cJSON_AddStringToObject(o, "type", type);
        cJSON_AddStringToObject(o, "node", h->cfg->node_name);
        cJSON *ev = cJSON_AddObjectToObject(o, "event");
        cJSON_AddStringToObject(ev, "id", h->ev.id);
        cJSON_AddStringToObject(ev, "kind", event_kind_to_string(h->ev.kind));
        cJSON_AddStringToObject(ev, "detail", h->ev.detail);
        if (h->ev.deadline)
                format_rfc3339(h->ev.deadline, dl, sizeof dl);
        cJSON_AddStringToObject(o, "deadline", dl);
        cJSON_AddBoolToObject(o, "dry_run", h->cfg->dry_run);
        if (strcmp(type, "completed") == 0) {
                cJSON *pods = cJSON_AddArrayToObject(o, "pods");
                for (size_t i = 0; i < h->npods; i++) {
                        static const char *const st[] = { "pending", "evicting", "terminating", "gone", "not_evicted",
                                                          "deleting", "deleting" };
                        cJSON *p = cJSON_CreateObject();
                        cJSON_AddItemToArray(pods, p);
                        cJSON_AddStringToObject(p, "namespace", h->pods[i].ns);
                        cJSON_AddStringToObject(p, "name", h->pods[i].name);
                        cJSON_AddStringToObject(p, "result", st[h->pods[i].st]);
                }
                cJSON_AddItemToObject(o, "jobs", h->rs ? rescale_jobs_json(h->rs) : cJSON_CreateArray());
                struct rescale_timeline rt = {};
                if (h->rs)
                        rescale_timeline(h->rs, &rt);
                cJSON *tl = cJSON_AddObjectToObject(o, "timeline");
                add_usec(tl, "notice_seen", h->tl.seen);
                add_usec(tl, "fenced", h->tl.fenced);
                add_usec(tl, "checkpoint_done", rt.checkpoint_done);
                add_usec(tl, "evictions_sent", h->tl.first_evict);
                add_usec(tl, "bounds_lowered", rt.put_accepted);
                add_usec(tl, "running_at_new_parallelism", rt.running_at_new);
                add_usec(tl, "pods_gone", h->tl.gone);
                add_usec(tl, "bounds_restored", rt.restored);
                add_usec(tl, "done", h->tl.done);
                cJSON_AddStringToObject(o, "outcome", h->outcome);
        }
        _cleanup_free_ char *s = cJSON_PrintUnformatted(o);
        if (s)
                webhook_send(h->wh, h->ev.id, s);
}

/* ---- requests ---- */

struct req {
        struct handler *h;
        struct pod *pod;
        void (*fn)(struct handler *h, struct pod *p, const struct k8s_response *r);
        struct req *prev, *next;
};

static void req_done(void *ud, const struct k8s_response *r) {
        struct req *q = ud;
        struct handler *h = q->h;
        h->inflight--;
        if (q->prev)
                q->prev->next = q->next;
        else
                h->reqs = q->next;
        if (q->next)
                q->next->prev = q->prev;
        q->fn(h, q->pod, r);
        free(q);
}

/* Sends a request, or in a dry run logs a write and answers it with success
 * so the plan runs through without changing anything. */
static void send_req(struct handler *h, struct pod *p, const char *method, const char *path, const char *body,
                     const char *ctype, void (*fn)(struct handler *, struct pod *, const struct k8s_response *)) {
        bool write = strcmp(method, "GET") != 0;
        if (h->cfg->dry_run && write) {
                struct log_ctx c;
                ctx(h, p, &c);
                log_full(LOG_INFO, MSG_PLAN, &c, "dry run: would send %s %s %s", method, path, body ? body : "");
                struct k8s_response r = { .status = strcmp(method, "POST") == 0 ? 201 : 200, .body = "{}", .len = 2 };
                fn(h, p, &r);
                return;
        }
        struct req *q = malloc(sizeof *q);
        if (!q) {
                struct k8s_response r = { .err = -ENOMEM };
                fn(h, p, &r);
                return;
        }
        *q = (struct req) { h, p, fn, NULL, NULL };
        int r = k8s_request(h->k, method, path, body ? ctype : NULL, body, req_done, q);
        if (r < 0) {
                free(q);
                struct k8s_response resp = { .err = r };
                fn(h, p, &resp);
                return;
        }
        q->next = h->reqs;
        if (h->reqs)
                h->reqs->prev = q;
        h->reqs = q;
        h->inflight++;
}

/* buf should hold 400 bytes: reason and message are bounded by the client. */
static void describe(const struct k8s_response *r, char *buf, size_t len) {
        if (r->err)
                snprintf(buf, len, "%s", http_strerror(r->err));
        else if (r->reason[0] || r->message[0])
                snprintf(buf, len, "HTTP %ld %s: %s", r->status, r->reason, r->message);
        else
                snprintf(buf, len, "HTTP %ld", r->status);
}

static bool retryable(const struct k8s_response *r) {
        return r->err || r->status == 429 || r->status >= 500;
}

/* ---- Kubernetes Events ---- */

static void event_posted(struct handler *h, struct pod *p, const struct k8s_response *r) {
        if (r->err || r->status >= 300) {
                char why[400];
                describe(r, why, sizeof why);
                log_debug("Posting a Kubernetes Event failed: %s", why);
        }
}

/* Records a core/v1 Event on the node (p NULL) or on a pod. Best effort. */
static void k8s_event(struct handler *h, struct pod *p, const char *type, const char *reason, const char *fmt, ...)
        _printf_(5, 6);
static void k8s_event(struct handler *h, struct pod *p, const char *type, const char *reason, const char *fmt, ...) {
        char msg[512], ts[32], gen[300], path[128];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        if (!h->k && !h->cfg->dry_run)
                return;
        format_rfc3339(time(NULL), ts, sizeof ts);
        const char *ns = p ? p->ns : h->cfg->event_namespace;
        snprintf(gen, sizeof gen, "%.200s.spotd.", p ? p->name : h->cfg->node_name);

        _cleanup_(cJSON_Deletep) cJSON *e = cJSON_CreateObject();
        cJSON *md = cJSON_AddObjectToObject(e, "metadata"), *io, *src;
        cJSON_AddStringToObject(e, "apiVersion", "v1");
        cJSON_AddStringToObject(e, "kind", "Event");
        cJSON_AddStringToObject(md, "generateName", gen);
        cJSON_AddStringToObject(md, "namespace", ns);
        io = cJSON_AddObjectToObject(e, "involvedObject");
        cJSON_AddStringToObject(io, "apiVersion", "v1");
        cJSON_AddStringToObject(io, "kind", p ? "Pod" : "Node");
        cJSON_AddStringToObject(io, "name", p ? p->name : h->cfg->node_name);
        if (p) {
                cJSON_AddStringToObject(io, "namespace", p->ns);
                cJSON_AddStringToObject(io, "uid", p->uid);
        } else if (h->node_uid[0])
                cJSON_AddStringToObject(io, "uid", h->node_uid);
        cJSON_AddStringToObject(e, "reason", reason);
        cJSON_AddStringToObject(e, "message", msg);
        cJSON_AddStringToObject(e, "type", type);
        src = cJSON_AddObjectToObject(e, "source");
        cJSON_AddStringToObject(src, "component", "spotd");
        cJSON_AddStringToObject(src, "host", h->cfg->node_name);
        cJSON_AddStringToObject(e, "firstTimestamp", ts);
        cJSON_AddStringToObject(e, "lastTimestamp", ts);
        cJSON_AddNumberToObject(e, "count", 1);
        _cleanup_free_ char *body = cJSON_PrintUnformatted(e);
        if (!body)
                return;
        snprintf(path, sizeof path, "/api/v1/namespaces/%s/events", ns);
        send_req(h, NULL, "POST", path, body, "application/json", event_posted);
}

/* ---- node ---- */

static void node_path(const struct handler *h, char *buf, size_t len) {
        snprintf(buf, len, "/api/v1/nodes/%s", h->cfg->node_name);
}

static const char *ann_get(const cJSON *node, const char *key) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(node, "metadata"), "annotations");
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(a, key);
        return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Remembers uid and resourceVersion of a node answer; NULL if it is not one. */
static cJSON *node_parse(struct handler *h, const struct k8s_response *r) {
        cJSON *n = cJSON_ParseWithLength(r->body, r->len);
        const cJSON *md = cJSON_GetObjectItemCaseSensitive(n, "metadata");
        const char *uid = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(md, "uid"));
        const char *rv = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(md, "resourceVersion"));
        if (!uid || !rv || strlen(uid) >= sizeof h->node_uid || strlen(rv) >= sizeof h->rv) {
                cJSON_Delete(n);
                return NULL;
        }
        strcpy(h->node_uid, uid);
        strcpy(h->rv, rv);
        return n;
}

static void patch_annotations(struct handler *h, const char *phase,
                              void (*fn)(struct handler *, struct pod *, const struct k8s_response *));
static void begin_list(struct handler *h);
static void begin_undo_read(struct handler *h);
static void advance(struct handler *h);

static void fence_written(struct handler *h, struct pod *p, const struct k8s_response *r) {
        struct log_ctx c;
        ctx(h, NULL, &c);
        if (!r->err && r->status == 200) {
                h->tl.fenced = now_realtime();
                log_full(LOG_NOTICE, MSG_FENCED, &c, "Node %s cordoned and tainted %s=%s:NoSchedule", h->cfg->node_name,
                         TAINT_KEY, event_kind_to_string(h->ev.kind));
                k8s_event(h, NULL, "Warning", "SpotdFenced", "%s %s: node cordoned and tainted by spotd",
                          event_kind_to_string(h->ev.kind), h->ev.id);
                publish(h, "fenced");
                begin_list(h);
                return;
        }
        if (!r->err && r->status == 409 && ++h->attempts < FENCE_ATTEMPTS) {
                /* Another writer changed the node: read it again and retry. */
                h->phase = PH_FENCE_READ;
                h->due = now_monotonic() + backoff_delay(10 * USEC_PER_MSEC, 200 * USEC_PER_MSEC, h->attempts);
                return;
        }
        char why[400];
        describe(r, why, sizeof why);
        /* A 401 outlived the client's re-read of the token: the kubelet may
         * rotate it any moment, so it is retried like a server fault. */
        if ((retryable(r) || r->status == 401) && ++h->attempts < 5) {
                if (!h->fence_warned) /* once per event, not per retry */
                        log_full(LOG_ERR, MSG_K8S_ERROR, &c, "Cannot fence node %s (%s); retrying", h->cfg->node_name, why);
                h->fence_warned = true;
                h->phase = PH_FENCE_READ;
                h->due = now_monotonic() + backoff_delay(RETRY_BASE, 2 * USEC_PER_SEC, h->attempts);
                return;
        }
        /* Evictions never wait on the fence. */
        log_full(LOG_ERR, MSG_K8S_ERROR, &c, "Cannot fence node %s (%s); evicting TaskManagers anyway",
                 h->cfg->node_name, why);
        begin_list(h);
}

/* Builds the single PATCH that cordons, taints and annotates, guarded by
 * resourceVersion (a merge patch replaces the taint list whole). NULL when
 * the node already carries this event's fence. */
static char *fence_patch(struct handler *h, const cJSON *node) {
        const cJSON *spec = cJSON_GetObjectItemCaseSensitive(node, "spec");
        const cJSON *taints = cJSON_GetObjectItemCaseSensitive(spec, "taints");
        bool unsched = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(spec, "unschedulable"));
        const char *kind = event_kind_to_string(h->ev.kind);
        const char *prev_event = ann_get(node, ANN_EVENT_ID), *prev_cordoned = ann_get(node, ANN_CORDONED);
        bool have_taint = false, same_event = prev_event && strcmp(prev_event, h->ev.id) == 0;
        char ts[32], dl[32] = "";
        const cJSON *t;

        _cleanup_(cJSON_Deletep) cJSON *patch = cJSON_CreateObject();
        cJSON *md = cJSON_AddObjectToObject(patch, "metadata");
        cJSON *ps = cJSON_AddObjectToObject(patch, "spec");
        cJSON *nt = cJSON_AddArrayToObject(ps, "taints");
        cJSON_ArrayForEach(t, taints) {
                const char *key = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(t, "key"));
                const char *val = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(t, "value"));
                if (key && strcmp(key, TAINT_KEY) == 0) {
                        if (val && strcmp(val, kind) == 0)
                                have_taint = true;
                        else
                                continue; /* an older spotd taint of another kind: replaced */
                }
                cJSON_AddItemToArray(nt, cJSON_Duplicate(t, true));
        }
        if (same_event && have_taint && unsched)
                return NULL;
        if (!have_taint) {
                cJSON *o = cJSON_CreateObject();
                cJSON_AddStringToObject(o, "key", TAINT_KEY);
                cJSON_AddStringToObject(o, "value", kind);
                cJSON_AddStringToObject(o, "effect", "NoSchedule");
                cJSON_AddItemToArray(nt, o);
        }
        cJSON_AddTrueToObject(ps, "unschedulable");
        cJSON_AddStringToObject(md, "resourceVersion", h->rv);
        cJSON *a = cJSON_AddObjectToObject(md, "annotations");
        format_rfc3339(time(NULL), ts, sizeof ts);
        if (h->ev.deadline)
                format_rfc3339(h->ev.deadline, dl, sizeof dl);
        cJSON_AddStringToObject(a, ANN_EVENT_ID, h->ev.id);
        cJSON_AddStringToObject(a, ANN_KIND, kind);
        cJSON_AddStringToObject(a, ANN_PHASE, "fenced");
        cJSON_AddStringToObject(a, ANN_DEADLINE, dl);
        if (!same_event || !ann_get(node, ANN_FENCED_AT))
                cJSON_AddStringToObject(a, ANN_FENCED_AT, ts);
        /* Who cordoned: decided once, at the first spotd fence, so an undo
         * never lifts a cordon that an operator set before us. */
        cJSON_AddStringToObject(a, ANN_CORDONED, prev_event && prev_cordoned ? prev_cordoned : unsched ? "false" : "true");
        return cJSON_PrintUnformatted(patch);
}

static void fence_read(struct handler *h, struct pod *p, const struct k8s_response *r) {
        if (h->phase != PH_FENCE_READ)
                return;
        _cleanup_(cJSON_Deletep) cJSON *node = r->err || r->status != 200 ? NULL : node_parse(h, r);
        if (!node) {
                struct k8s_response bad = *r;
                if (!r->err && r->status == 200)
                        bad.err = -EBADMSG; /* not a node: logged as such, retried like a transport failure */
                fence_written(h, NULL, &bad);
                return;
        }
        if (h->rs)
                rescale_set_node(h->rs, node); /* originals of an earlier run */
        const char *prev_phase = ann_get(node, ANN_PHASE), *prev_event = ann_get(node, ANN_EVENT_ID);
        if (prev_event && strcmp(prev_event, h->ev.id) == 0 && prev_phase && strcmp(prev_phase, "done") == 0 &&
            h->action == ACTION_HANDLE) {
                struct log_ctx c;
                ctx(h, NULL, &c);
                log_full(LOG_INFO, MSG_FENCED, &c, "Event %s was handled before this agent started; nothing to do", h->ev.id);
                h->phase = PH_DONE;
                publish(h, "done");
                return;
        }
        _cleanup_free_ char *patch = fence_patch(h, node);
        if (!patch) {
                struct k8s_response ok = { .status = 200 };
                fence_written(h, NULL, &ok); /* resumed: the fence is in place */
                return;
        }
        char path[320];
        node_path(h, path, sizeof path);
        h->phase = PH_FENCE_WRITE;
        send_req(h, NULL, "PATCH", path, patch, "application/merge-patch+json", fence_written);
}

static void phase_written(struct handler *h, struct pod *p, const struct k8s_response *r) {
        if (r->err || r->status >= 300) {
                char why[400];
                describe(r, why, sizeof why);
                log_warning("Cannot record the phase on node %s: %s", h->cfg->node_name, why);
        }
}

/* Annotations merge as a map: no resourceVersion needed. fn NULL: only
 * log a failure. */
static void patch_annotations(struct handler *h, const char *phase,
                              void (*fn)(struct handler *, struct pod *, const struct k8s_response *)) {
        char path[320], body[256];
        node_path(h, path, sizeof path);
        snprintf(body, sizeof body, "{\"metadata\":{\"annotations\":{\"" ANN_PHASE "\":\"%s\"}}}", phase);
        send_req(h, NULL, "PATCH", path, body, "application/merge-patch+json", fn ? fn : phase_written);
}

/* ---- pods ---- */

static bool owned_by_daemonset(const cJSON *md) {
        const cJSON *o;
        cJSON_ArrayForEach(o, cJSON_GetObjectItemCaseSensitive(md, "ownerReferences")) {
                const char *k = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "kind"));
                if (k && strcmp(k, "DaemonSet") == 0)
                        return true;
        }
        return false;
}

static int copy_str(char *dst, size_t len, const cJSON *o, const char *key) {
        const char *v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, key));
        if (!v || !*v || strlen(v) >= len)
                return -EINVAL;
        strcpy(dst, v);
        return 0;
}

static void pods_listed(struct handler *h, struct pod *unused, const struct k8s_response *r) {
        struct log_ctx c;
        ctx(h, NULL, &c);
        _cleanup_(cJSON_Deletep) cJSON *list = r->err || r->status != 200 ? NULL : cJSON_ParseWithLength(r->body, r->len);
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(list, "items");
        if (!cJSON_IsArray(items)) {
                char why[400];
                describe(r, why, sizeof why);
                if (!r->err && r->status == 200)
                        snprintf(why, sizeof why, "the answer is not a PodList");
                if (now_monotonic() + RETRY_BASE < h->margin_at && (retryable(r) || !list)) {
                        if (!h->attempts++)
                                log_full(LOG_ERR, MSG_K8S_ERROR, &c, "Cannot list the pods of node %s: %s; retrying",
                                         h->cfg->node_name, why);
                        h->phase = PH_LIST;
                        h->due = now_monotonic() + backoff_delay(RETRY_BASE, RETRY_CAP, h->attempts);
                        return;
                }
                log_full(LOG_ERR, MSG_K8S_ERROR, &c, "Cannot list the pods of node %s: %s; giving up",
                         h->cfg->node_name, why);
                h->phase = PH_DONE;
                publish(h, "failed");
                return;
        }
        h->tl.list = now_realtime();
        h->npods = 0;
        const cJSON *it;
        size_t skipped = 0, terminating = 0;
        cJSON_ArrayForEach(it, items) {
                const cJSON *md = cJSON_GetObjectItemCaseSensitive(it, "metadata");
                const cJSON *spec = cJSON_GetObjectItemCaseSensitive(it, "spec");
                const cJSON *stat = cJSON_GetObjectItemCaseSensitive(it, "status");
                const char *node = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(spec, "nodeName"));
                const char *phase = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(stat, "phase"));
                /* The selector is the server's job, but a pod of another node
                 * or of a DaemonSet is never ours to evict, whatever it says. */
                if (!node || strcmp(node, h->cfg->node_name) != 0 || owned_by_daemonset(md) ||
                    (phase && (strcmp(phase, "Succeeded") == 0 || strcmp(phase, "Failed") == 0))) {
                        skipped++;
                        continue;
                }
                if (h->npods >= MAX_PODS) {
                        log_full(LOG_ERR, MSG_K8S_ERROR, &c, "More than %d TaskManager pods on the node; the rest are left alone", MAX_PODS);
                        break;
                }
                struct pod *p = &h->pods[h->npods];
                *p = (struct pod) { .h = h, .grace = 30, .cluster = -1 };
                if (copy_str(p->name, sizeof p->name, md, "name") < 0 || copy_str(p->ns, sizeof p->ns, md, "namespace") < 0 ||
                    copy_str(p->uid, sizeof p->uid, md, "uid") < 0) {
                        skipped++;
                        continue;
                }
                (void) copy_str(p->app, sizeof p->app, cJSON_GetObjectItemCaseSensitive(md, "labels"), "app");
                const cJSON *g = cJSON_GetObjectItemCaseSensitive(spec, "terminationGracePeriodSeconds");
                if (cJSON_IsNumber(g) && g->valuedouble >= 0 && g->valuedouble <= 86400)
                        p->grace = (unsigned) g->valuedouble;
                if (h->rs)
                        p->cluster = rescale_add_pod(h->rs, it);
                if (cJSON_GetObjectItemCaseSensitive(md, "deletionTimestamp")) {
                        /* Already terminating (an earlier run evicted it): only wait. */
                        p->st = P_ACCEPTED;
                        p->due = now_monotonic();
                        terminating++;
                }
                h->npods++;
        }
        log_full(LOG_INFO, MSG_EVICTING, &c, "Found %zu TaskManager pods on node %s (%zu already terminating, %zu skipped)",
                 h->npods, h->cfg->node_name, terminating, skipped);
        if (h->rs) {
                /* The Flink steps get until the last moment the evictions can
                 * still finish: the margin minus the longest grace period. */
                unsigned max_grace = 0;
                for (size_t i = 0; i < h->npods; i++)
                        if (h->pods[i].grace > max_grace)
                                max_grace = h->pods[i].grace;
                usec_t now = now_monotonic(), by = now + h->cfg->checkpoint_timeout;
                usec_t latest = h->margin_at > (usec_t) max_grace * USEC_PER_SEC ? h->margin_at - (usec_t) max_grace * USEC_PER_SEC : 0;
                if (latest < by)
                        by = latest > now ? latest : now;
                rescale_set_evict_by(h->rs, by);
                rescale_start(h->rs);
        }
        h->phase = PH_EVICT;
        h->attempts = 0;
        if (h->npods - terminating > 0) {
                patch_annotations(h, "evicting", NULL);
                k8s_event(h, NULL, "Warning", "SpotdEvicting", "Evicting %zu TaskManager pods before %s",
                          h->npods - terminating, h->ev.id);
        }
        publish(h, "evicting");
}

static void pod_path(const struct pod *p, const char *sub, char *buf, size_t len) {
        snprintf(buf, len, "/api/v1/namespaces/%s/pods/%s%s", p->ns, p->name, sub);
}

static long secs_left(const struct handler *h, usec_t until) {
        usec_t now = now_monotonic();
        return until > now ? (long) ((until - now) / USEC_PER_SEC) : 0;
}

static void pod_gone(struct handler *h, struct pod *p, const char *how) {
        struct log_ctx c;
        ctx(h, p, &c);
        p->st = P_GONE;
        log_full(LOG_INFO, MSG_POD_GONE, &c, "Pod %s/%s is gone (%s)", p->ns, p->name, how);
}

static void give_up(struct handler *h, struct pod *p, const char *why) {
        struct log_ctx c;
        ctx(h, p, &c);
        if (h->cfg->force_delete) {
                log_full(LOG_WARNING, MSG_EVICTION_BLOCKED, &c, "Eviction of pod %s/%s not accepted by the margin (%s); deleting it (--force-delete)",
                         p->ns, p->name, why);
                p->st = P_DELETE;
                p->due = now_monotonic();
                return;
        }
        p->st = P_GAVE_UP;
        status_count(h->st, COUNT_EVICTION_BLOCKED);
        log_full(LOG_ERR, MSG_EVICTION_BLOCKED, &c,
                 "Eviction of pod %s/%s not accepted by the margin (%s); leaving it (set --force-delete to delete it)",
                 p->ns, p->name, why);
        k8s_event(h, p, "Warning", "SpotdEvictionBlocked", "Not evicted before the interruption: %s", why);
}

static void evicted(struct handler *h, struct pod *p, const struct k8s_response *r) {
        struct log_ctx c;
        char why[400];
        ctx(h, p, &c);
        p->st = P_PENDING;
        if (!r->err && (r->status == 200 || r->status == 201)) {
                p->st = P_ACCEPTED;
                h->tl.last_accept = now_realtime();
                status_count(h->st, COUNT_EVICTION_ACCEPTED);
                if (h->rs)
                        rescale_evicted(h->rs, p->cluster);
                log_full(LOG_NOTICE, MSG_POD_EVICTED, &c, "Evicted pod %s/%s (grace %us, attempt %u)", p->ns, p->name,
                         p->grace, p->attempts);
                k8s_event(h, p, "Normal", "SpotdEvicted", "Evicted by spotd before %s %s",
                          event_kind_to_string(h->ev.kind), h->ev.id);
                /* In a dry run nothing was evicted, so nothing will go. */
                if (h->cfg->dry_run)
                        p->st = P_GONE;
                p->due = now_monotonic() + GONE_CHECK_INTERVAL;
                return;
        }
        if (!r->err && (r->status == 404 || r->status == 409)) {
                pod_gone(h, p, r->status == 404 ? "not found at eviction" : "replaced by a new pod of that name");
                return;
        }
        describe(r, why, sizeof why);
        bool several_pdbs = !r->err && r->status == 500 && strstr(r->message, "more than one PodDisruptionBudget");
        usec_t next = now_monotonic() + backoff_delay(RETRY_BASE, RETRY_CAP, p->attempts);
        if (several_pdbs || !retryable(r)) {
                /* Not retryable: wait for the margin only if force delete may help. */
                log_full(LOG_ERR, MSG_EVICTION_BLOCKED, &c, "Eviction of pod %s/%s refused: %s", p->ns, p->name, why);
                if (h->cfg->force_delete) {
                        p->final_block = true;
                        p->due = h->margin_at;
                } else {
                        p->st = P_GAVE_UP;
                        k8s_event(h, p, "Warning", "SpotdEvictionBlocked", "Eviction refused: %s", why);
                }
                return;
        }
        if (now_monotonic() >= h->margin_at) {
                give_up(h, p, why);
                return;
        }
        if (next > h->margin_at)
                next = h->margin_at; /* one last try at the margin itself */
        if (!p->warned) {
                p->warned = true;
                log_full(LOG_WARNING, MSG_EVICTION_BLOCKED, &c, "Eviction of pod %s/%s %s (%s); retrying for %lds more",
                         p->ns, p->name, r->status == 429 ? "blocked by a PodDisruptionBudget" : "failed", why,
                         secs_left(h, h->margin_at));
        }
        p->due = next;
}

static void send_eviction(struct handler *h, struct pod *p) {
        char path[400], body[700];
        long left = secs_left(h, h->margin_at);
        unsigned grace = p->grace;
        /* The pod's own grace period, unless the deadline is nearer. */
        if (left < (long) grace)
                grace = left > 1 ? (unsigned) left : 1;
        pod_path(p, "/eviction", path, sizeof path);
        snprintf(body, sizeof body,
                 "{\"apiVersion\":\"policy/v1\",\"kind\":\"Eviction\",\"metadata\":{\"name\":\"%s\",\"namespace\":\"%s\"},"
                 "\"deleteOptions\":{\"gracePeriodSeconds\":%u,\"preconditions\":{\"uid\":\"%s\"}}}",
                 p->name, p->ns, grace, p->uid);
        p->grace = grace;
        p->st = P_INFLIGHT;
        p->attempts++;
        if (!h->tl.first_evict)
                h->tl.first_evict = now_realtime();
        send_req(h, p, "POST", path, body, "application/json", evicted);
}

static void deleted(struct handler *h, struct pod *p, const struct k8s_response *r) {
        struct log_ctx c;
        ctx(h, p, &c);
        if (!r->err && r->status == 200) {
                p->st = P_ACCEPTED;
                p->due = now_monotonic() + GONE_CHECK_INTERVAL;
                status_count(h->st, COUNT_POD_DELETED);
                log_full(LOG_WARNING, MSG_POD_EVICTED, &c, "Deleted pod %s/%s (force, grace %us)", p->ns, p->name, p->grace);
                k8s_event(h, p, "Warning", "SpotdDeleted", "Deleted by spotd (--force-delete) before %s", h->ev.id);
                if (h->cfg->dry_run)
                        p->st = P_GONE;
                return;
        }
        if (!r->err && (r->status == 404 || r->status == 409)) {
                pod_gone(h, p, "not found at delete");
                return;
        }
        char why[400];
        describe(r, why, sizeof why);
        if (retryable(r) && now_monotonic() + RETRY_BASE < h->deadline_at) {
                p->st = P_DELETE;
                p->due = now_monotonic() + RETRY_BASE;
                return;
        }
        p->st = P_GAVE_UP;
        log_full(LOG_ERR, MSG_EVICTION_BLOCKED, &c, "Cannot delete pod %s/%s: %s", p->ns, p->name, why);
}

static void send_delete(struct handler *h, struct pod *p) {
        char path[400], body[200];
        long left = secs_left(h, h->deadline_at);
        if (left < (long) p->grace)
                p->grace = left > 1 ? (unsigned) left : 1;
        pod_path(p, "", path, sizeof path);
        snprintf(body, sizeof body, "{\"gracePeriodSeconds\":%u,\"preconditions\":{\"uid\":\"%s\"}}", p->grace, p->uid);
        p->st = P_DELETE_INFLIGHT;
        send_req(h, p, "DELETE", path, body, "application/json", deleted);
}

static void gone_checked(struct handler *h, struct pod *p, const struct k8s_response *r) {
        p->checking = false;
        p->due = now_monotonic() + GONE_CHECK_INTERVAL;
        if (r->err || (r->status != 200 && r->status != 404))
                return; /* try again next interval */
        if (r->status == 404) {
                pod_gone(h, p, "deleted");
                return;
        }
        _cleanup_(cJSON_Deletep) cJSON *pod = cJSON_ParseWithLength(r->body, r->len);
        const char *uid = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(pod, "metadata"), "uid"));
        if (uid && strcmp(uid, p->uid) != 0)
                pod_gone(h, p, "replaced by a new pod of that name");
}

static void send_list(struct handler *h) {
        char path[1200], f[400], l[700], sel[320];
        snprintf(sel, sizeof sel, "spec.nodeName=%s", h->cfg->node_name);
        if (k8s_escape(sel, f, sizeof f) < 0 || k8s_escape(h->cfg->tm_selector, l, sizeof l) < 0) {
                log_error("TaskManager selector too long to send");
                h->phase = PH_DONE;
                return;
        }
        snprintf(path, sizeof path, "/api/v1/pods?fieldSelector=%s&labelSelector=%s", f, l);
        h->phase = PH_LIST;
        h->due = UINT64_MAX;
        if (!h->k) { /* dry run without an API: nothing to list */
                log_info("dry run: would list pods: GET %s", path);
                h->phase = PH_DONE;
                publish(h, "done");
                return;
        }
        send_req(h, NULL, "GET", path, NULL, NULL, pods_listed);
}

static void begin_list(struct handler *h) {
        if (h->action != ACTION_HANDLE) {
                h->phase = PH_DONE;
                publish(h, "fenced");
                return;
        }
        h->attempts = 0; /* the fence's retries are not the list's */
        send_list(h);
}

/* The summary follows the phase annotation, so whoever reads "done" on the
 * node also finds the summary in the journal. */
static void done_written(struct handler *h, struct pod *unused, const struct k8s_response *r) {
        struct log_ctx c;
        size_t gone = 0, gave_up = 0, left = 0;
        struct rescale_timeline rt = {};
        char flink[1024] = "no Flink cluster";
        if (h->rs) {
                rescale_timeline(h->rs, &rt);
                rescale_summary(h->rs, flink, sizeof flink);
                if (!flink[0])
                        snprintf(flink, sizeof flink, "no Flink cluster recognised");
        }
        phase_written(h, NULL, r);
        for (size_t i = 0; i < h->npods; i++) {
                if (h->pods[i].st == P_GONE)
                        gone++;
                else if (h->pods[i].st == P_GAVE_UP)
                        gave_up++;
                else
                        left++;
        }
        h->tl.done = now_realtime();
        ctx(h, NULL, &c);
        c.phase = "done";
#define REL(t) ((t) ? (double) ((int64_t) (t) - (int64_t) h->tl.seen) / 1e6 : -1.0)
        log_full(gave_up || left ? LOG_WARNING : LOG_NOTICE, MSG_DONE, &c,
                 "Event %s handled: %zu TaskManager pods gone, %zu not evicted, %zu still terminating; timeline "
                 "(s after notice): fenced %.3f, pods listed %.3f, checkpoint done %.3f, first eviction sent %.3f, "
                 "last accepted %.3f, bounds lowered %.3f, jobs running at the lower parallelism %.3f, pods gone %.3f, "
                 "bounds restored %.3f, done %.3f; Flink: %s",
                 h->ev.id, gone, gave_up, left, REL(h->tl.fenced), REL(h->tl.list), REL(rt.checkpoint_done),
                 REL(h->tl.first_evict), REL(h->tl.last_accept), REL(rt.put_accepted), REL(rt.running_at_new),
                 REL(h->tl.gone), REL(rt.restored), REL(h->tl.done), flink);
#undef REL
        snprintf(h->outcome, sizeof h->outcome, "%zu TaskManager pods gone, %zu not evicted; Flink: %.100s", gone,
                 gave_up + left, flink);
        status_count(h->st, COUNT_EVENTS_HANDLED);
        signal_webhook(h, "completed");
        status_handling_seconds(h->st, (double) (h->tl.done - h->tl.seen) / 1e6);
        k8s_event(h, NULL, gave_up || left ? "Warning" : "Normal", "SpotdDone",
                  "%s %s handled: %zu TaskManager pods gone, %zu not evicted", event_kind_to_string(h->ev.kind), h->ev.id,
                  gone, gave_up + left);
        publish(h, "done");
}

static void finish(struct handler *h) {
        if (!h->tl.gone) /* at the deadline, with pods still terminating */
                h->tl.gone = now_realtime();
        h->phase = PH_DONE;
        patch_annotations(h, "done", done_written);
}

static void evict_tick(struct handler *h) {
        usec_t now = now_monotonic();
        bool busy = false;
        for (size_t i = 0; i < h->npods; i++) {
                struct pod *p = &h->pods[i];
                switch (p->st) {
                case P_PENDING:
                        busy = true;
                        if (h->rs && !rescale_may_evict(h->rs, p->cluster))
                                break; /* checkpoint first, within its budget */
                        if (p->final_block && now >= p->due)
                                give_up(h, p, "refused and not retryable");
                        else if (!p->final_block && now >= p->due)
                                send_eviction(h, p);
                        break;
                case P_DELETE:
                        busy = true;
                        if (now >= p->due)
                                send_delete(h, p);
                        break;
                case P_ACCEPTED:
                        busy = true;
                        if (!p->checking && now >= p->due && now < h->deadline_at) {
                                char path[400];
                                p->checking = true;
                                pod_path(p, "", path, sizeof path);
                                send_req(h, p, "GET", path, NULL, NULL, gone_checked);
                        }
                        break;
                case P_INFLIGHT:
                case P_DELETE_INFLIGHT:
                        busy = true;
                        break;
                default:
                        break;
                }
        }
        if (!busy && !h->tl.gone)
                h->tl.gone = now_realtime(); /* the last pod went; the Flink side may take longer */
        if (h->rs)
                rescale_tick(h->rs);
        if ((!busy && (!h->rs || rescale_done(h->rs))) || now >= h->deadline_at)
                finish(h);
}

/* ---- undo ---- */

static void undo_written(struct handler *h, struct pod *p, const struct k8s_response *r) {
        if (!r->err && r->status == 200) {
                log_full(LOG_NOTICE, MSG_UNFENCED, NULL, "Removed spotd's fence from node %s (event %s)", h->cfg->node_name,
                         h->undo_id);
                k8s_event(h, NULL, "Normal", "SpotdUnfenced", "Event %s canceled: spotd's cordon, taint and annotations removed",
                          h->undo_id);
                h->ann_event[0] = 0;
                h->phase = PH_IDLE;
                return;
        }
        if ((!r->err && r->status == 409) || retryable(r)) {
                if (++h->attempts < FENCE_ATTEMPTS) {
                        h->phase = PH_UNDO_READ;
                        h->due = now_monotonic() + backoff_delay(10 * USEC_PER_MSEC, RETRY_CAP, h->attempts);
                        return;
                }
        }
        char why[400];
        describe(r, why, sizeof why);
        log_full(LOG_ERR, MSG_K8S_ERROR, NULL, "Cannot remove spotd's fence from node %s: %s", h->cfg->node_name, why);
        h->phase = PH_IDLE;
}

static void undo_read(struct handler *h, struct pod *p, const struct k8s_response *r) {
        _cleanup_(cJSON_Deletep) cJSON *node = r->err || r->status != 200 ? NULL : node_parse(h, r);
        if (!node) {
                undo_written(h, NULL, !r->err && r->status == 200 ? &(struct k8s_response) { .err = -EBADMSG } : r);
                return;
        }
        const char *ev = ann_get(node, ANN_EVENT_ID), *cordoned = ann_get(node, ANN_CORDONED);
        if (!ev || strcmp(ev, h->undo_id) != 0) {
                /* Not our fence (or another event's since): leave it. */
                log_info("Event %s canceled; node %s carries no fence of it", h->undo_id, h->cfg->node_name);
                h->phase = PH_IDLE;
                return;
        }
        _cleanup_(cJSON_Deletep) cJSON *patch = cJSON_CreateObject();
        cJSON *md = cJSON_AddObjectToObject(patch, "metadata"), *spec = cJSON_AddObjectToObject(patch, "spec");
        cJSON *a = cJSON_AddObjectToObject(md, "annotations");
        cJSON *nt = cJSON_AddArrayToObject(spec, "taints");
        const cJSON *t;
        cJSON_AddStringToObject(md, "resourceVersion", h->rv);
        static const char *const keys[] = { ANN_EVENT_ID, ANN_KIND, ANN_PHASE, ANN_DEADLINE, ANN_FENCED_AT, ANN_CORDONED };
        for (size_t i = 0; i < ELEMENTSOF(keys); i++)
                cJSON_AddNullToObject(a, keys[i]);
        cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(node, "spec"), "taints")) {
                const char *key = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(t, "key"));
                if (!key || strcmp(key, TAINT_KEY) != 0)
                        cJSON_AddItemToArray(nt, cJSON_Duplicate(t, true));
        }
        /* Lift the cordon only if spotd set it. */
        if (cordoned && strcmp(cordoned, "true") == 0)
                cJSON_AddFalseToObject(spec, "unschedulable");
        _cleanup_free_ char *body = cJSON_PrintUnformatted(patch);
        char path[320];
        node_path(h, path, sizeof path);
        h->phase = PH_UNDO_WRITE;
        send_req(h, NULL, "PATCH", path, body, "application/merge-patch+json", undo_written);
}

static void begin_undo_read(struct handler *h) {
        char path[320];
        node_path(h, path, sizeof path);
        h->phase = PH_UNDO_READ;
        h->due = UINT64_MAX;
        if (!h->k) {
                log_info("dry run: would remove spotd's cordon, taint and annotations of %s from node %s", h->undo_id,
                         h->cfg->node_name);
                h->phase = PH_IDLE;
                return;
        }
        send_req(h, NULL, "GET", path, NULL, NULL, undo_read);
}

/* ---- the driver ---- */

static void begin_event(struct handler *h, const struct event *e, enum event_action action) {
        struct log_ctx c;
        usec_t now = now_monotonic();
        time_t wall = time(NULL);

        h->active = true;
        h->rs = rescale_free(h->rs);
        h->ev = *e;
        h->action = action;
        h->attempts = 0;
        h->fence_warned = false;
        h->npods = 0;
        h->tl = (struct timeline) { .seen = now_realtime() };
        /* Deadlines on the monotonic clock: wall-clock jumps cannot stretch them. */
        time_t left = e->deadline ? e->deadline - wall : 120;
        if (left < 0)
                left = 0;
        h->deadline_at = now + (usec_t) left * USEC_PER_SEC;
        usec_t margin = h->cfg->eviction_margin;
        h->margin_at = h->deadline_at > now + margin ? h->deadline_at - margin : now;
        ctx(h, NULL, &c);
        if (!h->k && !h->cfg->dry_run) {
                log_full(LOG_ERR, MSG_K8S_ERROR, &c, "No Kubernetes API configured; cannot handle %s", e->id);
                h->phase = PH_DONE;
                return;
        }
        k8s_event(h, NULL, "Warning", "SpotdNotice", "%s %s (%s), deadline in %lds", event_kind_to_string(e->kind), e->id,
                  e->detail, (long) left);
        signal_webhook(h, "notice");
        if (h->k && action == ACTION_HANDLE && rescale_new(h->cfg, h->k, h->st, e->id, h->margin_at, &h->rs) < 0)
                h->rs = NULL; /* out of memory: plain evictions */
        h->phase = PH_FENCE_READ;
        h->due = now;
        if (!h->k) {
                log_info("dry run: would read node %s and cordon, taint and annotate it", h->cfg->node_name);
                begin_list(h);
        }
}

static void advance(struct handler *h) {
        /* The next step reuses the pod table and frees the rescale: never
         * while a request of theirs can still call back. */
        if (h->inflight || rescale_busy(h->rs))
                return;
        if (h->undo_queued && (h->phase == PH_IDLE || h->phase == PH_DONE)) {
                h->undo_queued = false;
                h->attempts = 0;
                begin_undo_read(h);
                return;
        }
        if (h->queued && (h->phase == PH_IDLE || h->phase == PH_DONE)) {
                h->queued = false;
                begin_event(h, &h->queued_ev, h->queued_action);
        }
}

void handler_tick(struct handler *h) {
        usec_t now = now_monotonic();
        char path[320];

        webhook_tick(h->wh);
        advance(h);
        switch (h->phase) {
        case PH_FENCE_READ:
                if (now >= h->due && !h->inflight) {
                        h->due = UINT64_MAX;
                        node_path(h, path, sizeof path);
                        send_req(h, NULL, "GET", path, NULL, NULL, fence_read);
                }
                break;
        case PH_LIST:
                if (now >= h->due && !h->inflight) {
                        h->due = UINT64_MAX;
                        send_list(h);
                }
                break;
        case PH_EVICT:
                evict_tick(h);
                break;
        case PH_UNDO_READ:
                if (now >= h->due && !h->inflight)
                        begin_undo_read(h);
                break;
        default:
                break;
        }
}

bool handler_busy(const struct handler *h) {
        return h->inflight || h->queued || h->undo_queued || (h->phase != PH_IDLE && h->phase != PH_DONE);
}

usec_t handler_next_wakeup(const struct handler *h) {
        usec_t next = webhook_next_wakeup(h->wh);
#define EARLIER(t) do { usec_t _t = (t); if (_t < next) next = _t; } while (0)
        if (h->phase == PH_FENCE_READ || h->phase == PH_LIST || h->phase == PH_UNDO_READ)
                EARLIER(h->due);
        else if (h->phase == PH_EVICT) {
                EARLIER(h->deadline_at);
                if (h->rs)
                        EARLIER(rescale_next_wakeup(h->rs));
                for (size_t i = 0; i < h->npods; i++) {
                        const struct pod *p = &h->pods[i];
                        if (p->st == P_PENDING || p->st == P_DELETE || (p->st == P_ACCEPTED && !p->checking))
                                EARLIER(p->due);
                }
        }
#undef EARLIER
        return next;
}

void handler_event(struct handler *h, const struct event *e, enum event_action action) {
        if (action == ACTION_IGNORE)
                return;
        if (h->active && strcmp(h->ev.id, e->id) == 0) {
                h->ev.deadline = e->deadline; /* the notice time may move */
                return;
        }
        /* A stronger event replaces a weaker one (a spot notice after a
         * rebalance cordon); an equal one waits its turn. */
        if (h->active && h->phase != PH_DONE && h->phase != PH_IDLE && !(h->action == ACTION_CORDON && action == ACTION_HANDLE))
                return;
        h->queued = true;
        h->queued_ev = *e;
        h->queued_action = action;
        advance(h);
        handler_tick(h);
}

void handler_cancel(struct handler *h, const struct event *e) {
        if (!h->ann_event[0] && (!h->active || strcmp(h->ev.id, e->id) != 0))
                return;
        snprintf(h->undo_id, sizeof h->undo_id, "%s", e->id);
        if (h->active && strcmp(h->ev.id, e->id) == 0)
                h->active = false;
        h->undo_queued = true;
        if (h->phase != PH_IDLE && h->phase != PH_DONE && h->phase != PH_EVICT)
                return; /* after the current step */
        if (h->phase == PH_EVICT)
                h->phase = PH_DONE; /* the instance stays: stop evicting */
        advance(h);
}

static void start_read(struct handler *h, struct pod *p, const struct k8s_response *r) {
        _cleanup_(cJSON_Deletep) cJSON *node = r->err || r->status != 200 ? NULL : node_parse(h, r);
        if (!node) {
                char why[400];
                describe(r, why, sizeof why);
                /* Logged once; read again after the next poll rounds (handler_round),
                 * or an earlier run's fence would stay unknown. */
                if (!h->start_failed)
                        log_full(LOG_ERR, MSG_K8S_ERROR, NULL, "Cannot read node %s from the Kubernetes API: %s; retrying",
                                 h->cfg->node_name, why);
                h->start_failed = true;
                h->start_retry_at = now_monotonic() + 5 * USEC_PER_SEC;
                h->started = false;
                return;
        }
        if (h->start_failed)
                log_full(LOG_NOTICE, MSG_K8S_ERROR, NULL, "Read node %s from the Kubernetes API", h->cfg->node_name);
        h->start_failed = false;
        const char *ev = ann_get(node, ANN_EVENT_ID), *ph = ann_get(node, ANN_PHASE), *at = ann_get(node, ANN_FENCED_AT);
        if (ev && strlen(ev) < sizeof h->ann_event) {
                strcpy(h->ann_event, ev);
                snprintf(h->ann_phase, sizeof h->ann_phase, "%s", ph ? ph : "");
                if (!at || parse_rfc3339(at, &h->ann_fenced_at) < 0)
                        h->ann_fenced_at = 0;
                log_full(LOG_INFO, MSG_FENCED, &(struct log_ctx) { .event_id = ev, .phase = h->ann_phase },
                         "Node %s carries spotd's fence for %s (phase %s) from an earlier run", h->cfg->node_name, ev,
                         h->ann_phase);
        }
}

void handler_start(struct handler *h) {
        char path[320];
        if (!h->k || h->started)
                return;
        h->started = true;
        node_path(h, path, sizeof path);
        send_req(h, NULL, "GET", path, NULL, NULL, start_read);
}

static time_t boot_time(void) {
        double up = 0;
        FILE *f = fopen("/proc/uptime", "re");
        if (!f)
                return 0;
        if (fscanf(f, "%lf", &up) != 1)
                up = 0;
        fclose(f);
        return up > 0 ? time(NULL) - (time_t) up : 0;
}

void handler_round(struct handler *h, const char *const *ids, size_t n) {
        if (!h->started && h->start_failed && now_monotonic() >= h->start_retry_at)
                handler_start(h);
        if (!h->ann_event[0] || h->ann_checked)
                return;
        h->ann_checked = true;
        for (size_t i = 0; i < n; i++)
                if (strcmp(ids[i], h->ann_event) == 0)
                        return; /* still served: handler_event() resumes it */
        /* The fence outlived its notice. After a stop/hibernate or a reboot
         * the instance booted after the fence: it is back, so undo. */
        if (h->ann_fenced_at && boot_time() > h->ann_fenced_at) {
                log_full(LOG_NOTICE, MSG_UNFENCED, &(struct log_ctx) { .event_id = h->ann_event },
                         "The instance booted after %s fenced node %s; removing the fence", h->ann_event, h->cfg->node_name);
                snprintf(h->undo_id, sizeof h->undo_id, "%s", h->ann_event);
                h->undo_queued = true;
                advance(h);
        }
}

int handler_new(const struct config *cfg, struct k8s *k, struct status *st, struct handler **ret) {
        struct handler *h = calloc(1, sizeof *h);
        if (!h)
                return -ENOMEM;
        h->cfg = cfg;
        h->k = k;
        h->st = st;
        h->due = UINT64_MAX;
        if (webhook_new(cfg, k, st, &h->wh) < 0) {
                free(h);
                return -ENOMEM;
        }
        *ret = h;
        return 0;
}

struct handler *handler_free(struct handler *h) {
        if (!h)
                return NULL;
        h->rs = rescale_free(h->rs);
        h->wh = webhook_free(h->wh);
        /* The client was freed first and dropped these without callbacks. */
        while (h->reqs) {
                struct req *q = h->reqs;
                h->reqs = q->next;
                free(q);
        }
        free(h);
        return NULL;
}
