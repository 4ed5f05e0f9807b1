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

/* The handler's states (systemd's service.c is the model): set_state()
 * records every transition, one enter_*() per state starts it, and each
 * stimulus (an answer, a timer, a newer event, a cancel) is a switch over
 * the current state, so each state says in one place what happens to it. */
enum state {
        H_IDLE,       /* no event: watching */
        H_FENCING,    /* node GET (due or in flight), then the fence PATCH */
        H_LISTING,    /* the pod list, due or in flight */
        H_EVICTING,   /* evictions, gone checks and the Flink side */
        H_FINISHING,  /* the "done" annotation in flight: then the summary */
        H_DONE,       /* handled; the fence stays until the instance goes or the event is canceled */
        H_UNDOING,    /* waits for older writes to settle, then reads the node and removes the fence */
        _H_MAX,
};

enum pod_state { P_PENDING, P_INFLIGHT, P_ACCEPTED, P_GONE, P_GAVE_UP, P_DELETE, P_DELETE_INFLIGHT };

struct pod {
        struct handler *h;
        char ns[64], name[254], uid[40], app[64];
        unsigned grace;
        enum pod_state st;
        bool checking;       /* a gone check is in flight */
        bool final_block;    /* not retryable (several PDBs): force delete or give up at the margin */
        int warned_as;       /* the failure last logged: HTTP status or -errno, 0 none; a
                              * streak of one kind is logged once, a new kind again
                              * (a PDB's 429, then the API server refusing) */
        int cluster;         /* its Flink cluster in the rescale, or -1 */
        unsigned attempts;
        usec_t due;          /* monotonic: next eviction attempt or gone check */
};

struct timeline {
        usec_t seen, fenced, list, first_evict, last_accept, gone, done;
};

#define QUEUE_MAX 8

struct queued {
        struct event ev;
        enum event_action action;
};

struct handler {
        const struct config *cfg;
        struct k8s *k;
        struct status *st;
        unsigned inflight;    /* requests that gate a step, of any generation */
        unsigned besteffort;  /* Events and phase annotations: they never gate a step */
        unsigned gen;         /* bumped when an event is abandoned: older answers are dropped */
        bool start_failed;    /* the start-up read of the node failed: retried */
        usec_t start_retry_at;
        struct req *reqs;     /* all of them, to free them if the client goes first */
        bool started;

        /* The node as last read. */
        char node_uid[40];
        char rv[32];
        /* The event whose fence is on the node: an earlier run's (read at
         * start) or ours. Only its cancel may remove the fence. */
        char fence_id[EVENT_ID_MAX];
        time_t ann_fenced_at;
        bool ann_checked;

        /* The event being handled (or last handled, in H_DONE). */
        enum state state;
        struct event ev;
        enum event_action action;
        unsigned attempts;
        bool fence_warned;    /* a fence failure of this event was logged */
        usec_t due;           /* monotonic: next request of a node-level step (UINT64_MAX: none due) */
        usec_t margin_at;     /* monotonic: evictions must be accepted by then */
        usec_t deadline_at;   /* monotonic: the instance goes away */
        struct pod pods[MAX_PODS];
        size_t npods;
        struct timeline tl;
        struct rescale *rs;   /* the Flink side of this event */
        struct rescale **retired; /* of abandoned events: restoring, freed when idle */
        size_t nretired;
        struct webhook *wh;
        time_t merged_deadline; /* an equal event waiting its turn has the earlier deadline (0: none) */
        char outcome[160];
        char undo_id[EVENT_ID_MAX];

        /* Events that wait their turn, in arrival order. */
        struct queued queue[QUEUE_MAX];
        size_t nqueue;
};

static const char *state_name(enum state s) {
        static const char *const n[_H_MAX] = { "idle", "fencing", "listing", "evicting", "finishing", "done", "undoing" };
        return n[s];
}

static void set_state(struct handler *h, enum state s) {
        if (h->state != s)
                log_debug("Handling of %s: %s -> %s", h->ev.id[0] ? h->ev.id : "no event", state_name(h->state), state_name(s));
        h->state = s;
}

static void ctx(const struct handler *h, const struct pod *p, struct log_ctx *c) {
        *c = (struct log_ctx) { .event_id = h->ev.id, .kind = event_kind_to_string(h->ev.kind),
                                .phase = state_name(h->state), .node = h->cfg->node_name };
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

static void signal_webhook(struct handler *h, const struct event *e, const char *type) {
        char dl[32] = "";
        if (!h->cfg->webhook_urls.n)
                return;
        _cleanup_(cJSON_Deletep) cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "version", 1);
        cJSON_AddStringToObject(o, "type", type);
        cJSON_AddStringToObject(o, "node", h->cfg->node_name);
        cJSON *ev = cJSON_AddObjectToObject(o, "event");
        cJSON_AddStringToObject(ev, "id", e->id);
        cJSON_AddStringToObject(ev, "kind", event_kind_to_string(e->kind));
        cJSON_AddStringToObject(ev, "detail", e->detail);
        if (e->deadline)
                format_rfc3339(e->deadline, dl, sizeof dl);
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
                webhook_send(h->wh, e->id, s);
}

/* ---- requests ---- */

struct req {
        struct handler *h;
        struct pod *pod;
        void (*fn)(struct handler *h, struct pod *p, const struct k8s_response *r);
        unsigned gen;
        bool gating;
        struct req *prev, *next;
};

/* An answer to a step of an abandoned event is dropped: the event it
 * belonged to is gone, and its pod table may already be another's. */
static void req_done(void *ud, const struct k8s_response *r) {
        struct req *q = ud;
        struct handler *h = q->h;
        if (q->gating)
                h->inflight--;
        else
                h->besteffort--;
        if (q->prev)
                q->prev->next = q->next;
        else
                h->reqs = q->next;
        if (q->next)
                q->next->prev = q->prev;
        if (!q->gating || q->gen == h->gen)
                q->fn(h, q->pod, r);
        free(q);
}

/* Sends a request, or in a dry run logs a write and answers it with success
 * so the plan runs through without changing anything. gating: a step waits
 * for its answer; otherwise (Events, phase annotations) fn must not touch
 * the pod or the state. */
static void send_any(struct handler *h, struct pod *p, bool gating, const char *method, const char *path, const char *body,
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
        *q = (struct req) { h, p, fn, h->gen, gating, NULL, NULL };
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
        if (gating)
                h->inflight++;
        else
                h->besteffort++;
}

static void send_req(struct handler *h, struct pod *p, const char *method, const char *path, const char *body,
                     const char *ctype, void (*fn)(struct handler *, struct pod *, const struct k8s_response *)) {
        send_any(h, p, true, method, path, body, ctype, fn);
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
        send_any(h, NULL, false, "POST", path, body, "application/json", event_posted);
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
static void enter_done(struct handler *h);
static void enter_idle(struct handler *h);
static void set_evict_by(struct handler *h);

static void fence_written(struct handler *h, struct pod *p, const struct k8s_response *r) {
        struct log_ctx c;
        ctx(h, NULL, &c);
        if (!r->err && r->status == 200) {
                h->tl.fenced = now_realtime();
                snprintf(h->fence_id, sizeof h->fence_id, "%s", h->ev.id);
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
                h->state = H_FENCING;
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
                h->state = H_FENCING;
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
        if (h->state != H_FENCING)
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
                publish(h, "done");
                enter_done(h);
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
        h->state = H_FENCING;
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
        send_any(h, NULL, !!fn, "PATCH", path, body, "application/merge-patch+json", fn ? fn : phase_written);
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
                        h->state = H_LISTING;
                        h->due = now_monotonic() + backoff_delay(RETRY_BASE, RETRY_CAP, h->attempts);
                        return;
                }
                log_full(LOG_ERR, MSG_K8S_ERROR, &c, "Cannot list the pods of node %s: %s; giving up",
                         h->cfg->node_name, why);
                publish(h, "failed");
                enter_done(h);
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
        set_state(h, H_EVICTING);
        if (h->rs) {
                set_evict_by(h);
                rescale_start(h->rs);
        }
        h->attempts = 0;
        if (h->npods - terminating > 0) {
                patch_annotations(h, "evicting", NULL);
                k8s_event(h, NULL, "Warning", "SpotdEvicting", "Evicting %zu TaskManager pods before %s",
                          h->npods - terminating, h->ev.id);
        }
        publish(h, "evicting");
}

/* The Flink steps get until the last moment the evictions can still
 * finish: the margin minus the time a TaskManager takes to stop. That is
 * --tm-stop-time, or the longest grace period when shorter: the grace
 * period is only the kubelet's upper bound (30 s by default), and a
 * TaskManager stops about a second after SIGTERM. */
static void set_evict_by(struct handler *h) {
        unsigned max_grace = 0;
        for (size_t i = 0; i < h->npods; i++)
                if (h->pods[i].grace > max_grace)
                        max_grace = h->pods[i].grace;
        usec_t stop = (usec_t) max_grace * USEC_PER_SEC;
        if (stop > h->cfg->tm_stop_time)
                stop = h->cfg->tm_stop_time;
        usec_t now = now_monotonic(), by = now + h->cfg->checkpoint_timeout;
        usec_t latest = h->margin_at > stop ? h->margin_at - stop : 0;
        if (latest < by)
                by = latest > now ? latest : now;
        rescale_set_evict_by(h->rs, by);
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
        if (p->warned_as != (r->err ? r->err : (int) r->status)) {
                p->warned_as = r->err ? r->err : (int) r->status;
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
        char path[1200], f[CONFIG_FIELD_SELECTOR_ESCAPED_MAX], l[CONFIG_TM_SELECTOR_ESCAPED_MAX], sel[320];
        snprintf(sel, sizeof sel, "spec.nodeName=%s", h->cfg->node_name);
        if (k8s_escape(sel, f, sizeof f) < 0 || k8s_escape(h->cfg->tm_selector, l, sizeof l) < 0) {
                log_error("TaskManager selector too long to send");
                enter_done(h);
                return;
        }
        snprintf(path, sizeof path, "/api/v1/pods?fieldSelector=%s&labelSelector=%s", f, l);
        set_state(h, H_LISTING);
        h->due = UINT64_MAX;
        if (!h->k) { /* dry run without an API: nothing to list */
                log_info("dry run: would list pods: GET %s", path);
                publish(h, "done");
                enter_done(h);
                return;
        }
        send_req(h, NULL, "GET", path, NULL, NULL, pods_listed);
}

static void begin_list(struct handler *h) {
        if (h->action != ACTION_HANDLE) {
                publish(h, "fenced");
                enter_done(h);
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
        signal_webhook(h, &h->ev, "completed");
        status_handling_seconds(h->st, (double) (h->tl.done - h->tl.seen) / 1e6);
        k8s_event(h, NULL, gave_up || left ? "Warning" : "Normal", "SpotdDone",
                  "%s %s handled: %zu TaskManager pods gone, %zu not evicted", event_kind_to_string(h->ev.kind), h->ev.id,
                  gone, gave_up + left);
        publish(h, "done");
        enter_done(h);
}

static void finish(struct handler *h) {
        if (!h->tl.gone) /* at the deadline, with pods still terminating */
                h->tl.gone = now_realtime();
        set_state(h, H_FINISHING);
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
                if (strcmp(h->fence_id, h->undo_id) == 0)
                        h->fence_id[0] = 0;
                enter_idle(h);
                return;
        }
        if ((!r->err && r->status == 409) || retryable(r)) {
                if (++h->attempts < FENCE_ATTEMPTS) {
                        h->due = now_monotonic() + backoff_delay(10 * USEC_PER_MSEC, RETRY_CAP, h->attempts);
                        return;
                }
        }
        char why[400];
        describe(r, why, sizeof why);
        log_full(LOG_ERR, MSG_K8S_ERROR, NULL, "Cannot remove spotd's fence from node %s: %s", h->cfg->node_name, why);
        enter_idle(h);
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
                if (strcmp(h->fence_id, h->undo_id) == 0)
                        h->fence_id[0] = 0;
                enter_idle(h);
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
        send_req(h, NULL, "PATCH", path, body, "application/merge-patch+json", undo_written);
}

/* ---- the driver ---- */

/* Deadline and margin on the monotonic clock (wall-clock jumps cannot
 * stretch them), from the earliest deadline of the events this handling
 * serves. */
static void set_times(struct handler *h) {
        time_t dl = h->ev.deadline, wall = time(NULL);
        if (h->merged_deadline && (!dl || h->merged_deadline < dl))
                dl = h->merged_deadline;
        time_t left = dl ? dl - wall : 120;
        if (left < 0)
                left = 0;
        usec_t now = now_monotonic(), margin = h->cfg->eviction_margin;
        h->deadline_at = now + (usec_t) left * USEC_PER_SEC;
        h->margin_at = h->deadline_at > now + margin ? h->deadline_at - margin : now;
        if (h->rs && h->state == H_EVICTING)
                set_evict_by(h);
}

/* The rescale of an abandoned event may have lowered bounds: it gives them
 * back on its own (rescale_abort) and is freed once its answers are in. */
static void retire_rescale(struct handler *h) {
        if (!h->rs)
                return;
        if (!rescale_busy(h->rs) && rescale_done(h->rs)) {
                h->rs = rescale_free(h->rs);
                return;
        }
        rescale_abort(h->rs);
        struct rescale **n = reallocarray(h->retired, h->nretired + 1, sizeof *n);
        if (!n) {
                /* Its requests still point at it: leaking it is the safe choice. */
                log_error("Out of memory retiring the Flink side of %s", h->ev.id);
                h->rs = NULL;
                return;
        }
        h->retired = n;
        h->retired[h->nretired++] = h->rs;
        h->rs = NULL;
}

/* Drops every answer still due to the current event's steps. */
static void abandon(struct handler *h) {
        h->gen++;
        h->due = UINT64_MAX;
        retire_rescale(h);
}

static void announce(struct handler *h, const struct event *e) {
        long left = e->deadline ? (long) (e->deadline - time(NULL)) : 120;
        k8s_event(h, NULL, "Warning", "SpotdNotice", "%s %s (%s), deadline in %lds", event_kind_to_string(e->kind), e->id,
                  e->detail, left < 0 ? 0 : left);
        signal_webhook(h, e, "notice");
}

static void enter_fencing(struct handler *h) {
        set_state(h, H_FENCING);
        h->attempts = 0;
        h->due = now_monotonic(); /* the GET goes out once older writes have settled */
        if (!h->k) {
                log_info("dry run: would read node %s and cordon, taint and annotate it", h->cfg->node_name);
                begin_list(h);
        }
}

static void start_event(struct handler *h, const struct event *e, enum event_action action, bool announced) {
        struct log_ctx c;

        abandon(h); /* whatever ran before: its answers are not this event's */
        h->ev = *e;
        h->action = action;
        h->merged_deadline = 0;
        h->attempts = 0;
        h->fence_warned = false;
        h->npods = 0;
        h->outcome[0] = 0;
        h->tl = (struct timeline) { .seen = now_realtime() };
        set_state(h, H_FENCING);
        set_times(h);
        ctx(h, NULL, &c);
        if (!h->k && !h->cfg->dry_run) {
                log_full(LOG_ERR, MSG_K8S_ERROR, &c, "No Kubernetes API configured; cannot handle %s", e->id);
                enter_done(h);
                return;
        }
        if (!announced)
                announce(h, e);
        if (h->k && action == ACTION_HANDLE && rescale_new(h->cfg, h->k, h->st, e->id, h->margin_at, &h->rs) < 0)
                h->rs = NULL; /* out of memory: plain evictions */
        enter_fencing(h);
}

static int action_rank(enum event_action a) {
        return a == ACTION_HANDLE ? 2 : a == ACTION_CORDON ? 1 : 0;
}

/* The next queued event: the strongest action, then the earliest deadline.
 * Events weaker than min_rank are dropped: the fence in place covers them. */
static void start_next(struct handler *h, int min_rank) {
        size_t best = SIZE_MAX;
        for (size_t i = 0; i < h->nqueue;) {
                if (action_rank(h->queue[i].action) < min_rank) {
                        log_debug("%s needs no handling of its own after %s", h->queue[i].ev.id, h->ev.id);
                        h->queue[i] = h->queue[--h->nqueue];
                        continue;
                }
                i++;
        }
        for (size_t i = 0; i < h->nqueue; i++) {
                const struct queued *q = &h->queue[i], *b = best == SIZE_MAX ? NULL : &h->queue[best];
                if (!b || action_rank(q->action) > action_rank(b->action) ||
                    (q->action == b->action && q->ev.deadline && (!b->ev.deadline || q->ev.deadline < b->ev.deadline)))
                        best = i;
        }
        if (best == SIZE_MAX)
                return;
        struct queued q = h->queue[best];
        memmove(&h->queue[best], &h->queue[best + 1], (h->nqueue - best - 1) * sizeof q);
        h->nqueue--;
        start_event(h, &q.ev, q.action, true);
}

static void enter_idle(struct handler *h) {
        set_state(h, H_IDLE);
        start_next(h, 0);
}

static void enter_done(struct handler *h) {
        set_state(h, H_DONE);
        start_next(h, action_rank(h->action));
}

static void enter_undoing(struct handler *h, const char *id) {
        snprintf(h->undo_id, sizeof h->undo_id, "%s", id);
        set_state(h, H_UNDOING);
        h->attempts = 0;
        h->due = now_monotonic(); /* the read waits for older writes: a fence PATCH must not land after the undo */
        if (!h->k) {
                log_info("dry run: would remove spotd's cordon, taint and annotations of %s from node %s", id,
                         h->cfg->node_name);
                enter_idle(h);
        }
}

static struct queued *queue_find(struct handler *h, const char *id) {
        for (size_t i = 0; i < h->nqueue; i++)
                if (strcmp(h->queue[i].ev.id, id) == 0)
                        return &h->queue[i];
        return NULL;
}

static bool queue_push(struct handler *h, const struct event *e, enum event_action action) {
        if (h->nqueue >= QUEUE_MAX) {
                log_warning("%zu events already wait their turn; %s is not handled", h->nqueue, e->id);
                return false;
        }
        h->queue[h->nqueue++] = (struct queued) { *e, action };
        return true;
}

static void enqueue(struct handler *h, const struct event *e, enum event_action action) {
        announce(h, e);
        if (queue_push(h, e, action))
                log_full(LOG_INFO, MSG_PLAN, NULL, "Event %s waits until %s is handled", e->id, h->ev.id);
}

void handler_tick(struct handler *h) {
        usec_t now = now_monotonic();
        char path[320];

        webhook_tick(h->wh);
        for (size_t i = 0; i < h->nretired;) {
                rescale_tick(h->retired[i]);
                if (!rescale_busy(h->retired[i]) && rescale_done(h->retired[i])) {
                        rescale_free(h->retired[i]);
                        h->retired[i] = h->retired[--h->nretired];
                } else
                        i++;
        }
        /* A step's request goes out when it is due and no older write of
         * the node is still on its way. */
        bool send = h->due != UINT64_MAX && now >= h->due && !h->inflight;
        switch (h->state) {
        case H_FENCING:
                if (send) {
                        h->due = UINT64_MAX;
                        node_path(h, path, sizeof path);
                        send_req(h, NULL, "GET", path, NULL, NULL, fence_read);
                }
                break;
        case H_LISTING:
                if (send) {
                        h->due = UINT64_MAX;
                        send_list(h);
                }
                break;
        case H_EVICTING:
                evict_tick(h);
                break;
        case H_UNDOING:
                if (send) {
                        h->due = UINT64_MAX;
                        node_path(h, path, sizeof path);
                        send_req(h, NULL, "GET", path, NULL, NULL, undo_read);
                }
                break;
        case H_IDLE:
        case H_FINISHING:
        case H_DONE:
        case _H_MAX:
                break;
        }
}

bool handler_busy(const struct handler *h) {
        return h->inflight || h->nqueue || h->nretired || (h->state != H_IDLE && h->state != H_DONE);
}

usec_t handler_next_wakeup(const struct handler *h) {
        usec_t next = webhook_next_wakeup(h->wh);
#define EARLIER(t) do { usec_t _t = (t); if (_t < next) next = _t; } while (0)
        for (size_t i = 0; i < h->nretired; i++)
                EARLIER(rescale_next_wakeup(h->retired[i]));
        switch (h->state) {
        case H_FENCING:
        case H_LISTING:
        case H_UNDOING:
                if (!h->inflight) /* else an answer wakes the loop */
                        EARLIER(h->due);
                break;
        case H_EVICTING:
                EARLIER(h->deadline_at);
                if (h->rs)
                        EARLIER(rescale_next_wakeup(h->rs));
                for (size_t i = 0; i < h->npods; i++) {
                        const struct pod *p = &h->pods[i];
                        /* A pod held at the Flink gate waits for the rescale's
                         * own wakeups, not its stale due time. */
                        if (p->st == P_PENDING && h->rs && !p->final_block && !rescale_may_evict(h->rs, p->cluster))
                                continue;
                        if (p->st == P_PENDING || p->st == P_DELETE || (p->st == P_ACCEPTED && !p->checking))
                                EARLIER(p->due);
                }
                break;
        case H_IDLE:
        case H_FINISHING:
        case H_DONE:
        case _H_MAX:
                break;
        }
#undef EARLIER
        return next;
}

void handler_event(struct handler *h, const struct event *e, enum event_action action) {
        struct queued *q;
        if (action == ACTION_IGNORE)
                return;
        if ((q = queue_find(h, e->id))) {
                q->ev.deadline = e->deadline;
                return;
        }
        bool current = h->state != H_IDLE && h->state != H_UNDOING && strcmp(h->ev.id, e->id) == 0;
        switch (h->state) {
        case H_IDLE:
                start_event(h, e, action, false);
                break;
        case H_DONE:
                if (current) {
                        h->ev.deadline = e->deadline; /* handled already */
                        break;
                }
                start_event(h, e, action, false);
                break;
        case H_UNDOING:
                enqueue(h, e, action);
                break;
        case H_FENCING:
        case H_LISTING:
        case H_EVICTING:
        case H_FINISHING:
                if (current) {
                        /* The notice time may move until final; maintenance may be rescheduled. */
                        if (e->deadline != h->ev.deadline) {
                                h->ev.deadline = e->deadline;
                                set_times(h);
                        }
                        break;
                }
                if (action_rank(action) > action_rank(h->action)) {
                        /* A stronger event replaces a weaker one (a spot notice
                         * after a rebalance cordon): its fence overwrites, and
                         * the weaker one comes back should it be canceled. */
                        struct event weaker = h->ev;
                        enum event_action wa = h->action;
                        start_event(h, e, action, false);
                        queue_push(h, &weaker, wa);
                        break;
                }
                /* An equal one waits its turn, but its deadline binds now:
                 * the running drain must be over by the earlier one. */
                enqueue(h, e, action);
                if (action == ACTION_HANDLE && e->deadline &&
                    (!h->merged_deadline || e->deadline < h->merged_deadline) &&
                    (!h->ev.deadline || e->deadline < h->ev.deadline)) {
                        char dl[32];
                        h->merged_deadline = e->deadline;
                        set_times(h);
                        format_rfc3339(e->deadline, dl, sizeof dl);
                        struct log_ctx c;
                        ctx(h, NULL, &c);
                        log_full(LOG_NOTICE, MSG_PLAN, &c, "Event %s moves the deadline of the handling of %s to %s", e->id,
                                 h->ev.id, dl);
                }
                break;
        case _H_MAX:
                break;
        }
}

void handler_cancel(struct handler *h, const struct event *e) {
        struct queued *q = queue_find(h, e->id);
        struct log_ctx c;
        if (q) {
                log_info("Event %s was canceled before its turn; it is not handled", e->id);
                memmove(q, q + 1, (size_t) (&h->queue[h->nqueue] - (q + 1)) * sizeof *q);
                h->nqueue--;
                return;
        }
        bool current = strcmp(h->ev.id, e->id) == 0;
        switch (h->state) {
        case H_FENCING:
        case H_LISTING:
        case H_EVICTING:
        case H_FINISHING:
                /* Only this event's own cancel stops it: an unrelated
                 * maintenance entry never ends a drain. */
                if (!current)
                        break;
                ctx(h, NULL, &c);
                log_full(LOG_NOTICE, MSG_UNFENCED, &c, "Event %s was canceled while %s: stopping and removing its fence", e->id,
                         state_name(h->state));
                abandon(h);
                publish(h, "canceled");
                enter_undoing(h, e->id);
                break;
        case H_IDLE:
        case H_DONE:
                /* The fence on the node is this event's (from this run or an earlier one). */
                if (strcmp(h->fence_id, e->id) == 0 || (h->state == H_DONE && current))
                        enter_undoing(h, e->id);
                break;
        case H_UNDOING:
        case _H_MAX:
                break;
        }
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
        if (ev && strlen(ev) < sizeof h->fence_id) {
                log_full(LOG_INFO, MSG_FENCED, &(struct log_ctx) { .event_id = ev, .phase = ph },
                         "Node %s carries spotd's fence for %s (phase %s) from an earlier run", h->cfg->node_name, ev,
                         ph ? ph : "");
                /* Once an event is being handled, its own fence is what counts. */
                if (h->state != H_IDLE)
                        return;
                strcpy(h->fence_id, ev);
                if (!at || parse_rfc3339(at, &h->ann_fenced_at) < 0)
                        h->ann_fenced_at = 0;
        }
}

void handler_start(struct handler *h) {
        char path[320];
        if (!h->k || h->started)
                return;
        h->started = true;
        node_path(h, path, sizeof path);
        send_any(h, NULL, false, "GET", path, NULL, NULL, start_read); /* no step waits for it */
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
        if (!h->fence_id[0] || h->ann_checked)
                return;
        h->ann_checked = true;
        for (size_t i = 0; i < n; i++)
                if (strcmp(ids[i], h->fence_id) == 0)
                        return; /* still served: handler_event() resumes it */
        /* The fence outlived its notice. After a stop/hibernate or a reboot
         * the instance booted after the fence: it is back, so undo; unless
         * another event is being handled, whose fence replaces it anyway. */
        if (h->ann_fenced_at && boot_time() > h->ann_fenced_at && h->state == H_IDLE) {
                log_full(LOG_NOTICE, MSG_UNFENCED, &(struct log_ctx) { .event_id = h->fence_id },
                         "The instance booted after %s fenced node %s; removing the fence", h->fence_id, h->cfg->node_name);
                enter_undoing(h, h->fence_id);
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
        for (size_t i = 0; i < h->nretired; i++)
                rescale_free(h->retired[i]);
        free(h->retired);
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
