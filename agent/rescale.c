#include "rescale.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "flink.h"
#include "http.h"
#include "log.h"
#include "macro.h"
#include "plan.h"

#define MAX_CLUSTERS 16
#define MAX_PODS 128
#define POLL_STEP (200 * USEC_PER_MSEC)
#define VERIFY_STEP (500 * USEC_PER_MSEC)
#define PUT_AFTER_EVICT (500 * USEC_PER_MSEC) /* 1.18-1.20: PUT within a second of the evictions */
#define PUT_ATTEMPTS 5
#define RESTORE_ATTEMPTS 10 /* about 15 s with RETRY_BASE/RETRY_CAP: the job stays lowered until then */
#define RETRY_BASE (200 * USEC_PER_MSEC)
#define RETRY_CAP (2 * USEC_PER_SEC)
#define DISCOVER_ATTEMPTS 5

DEFINE_TRIVIAL_CLEANUP_FUNC(cJSON *, cJSON_Delete)

enum cstate { C_DISCOVER, C_JOBS, C_OTHERS, C_RECORD, C_PREPUT, C_CHECKPOINT, C_GATE, C_VERIFY, C_RESTORE, C_CLEAR, C_DONE };
enum ckpt { CK_NONE, CK_FRESH, CK_RUNNING, CK_DONE, CK_FAILED };

struct fjob {
        struct flink_job *job;
        struct flink_bounds cur[FLINK_MAX_VERTICES], orig[FLINK_MAX_VERTICES], set[FLINK_MAX_VERTICES];
        size_t ncur, norig, nset;
        int64_t last_ckpt_ms;
        char trig[64];
        enum ckpt ck;
        bool put_ok, verified, restored;
        bool put_reread;      /* the retry re-reads first (a 409: someone else changed them) */
        unsigned put_attempts;
        usec_t put_due;       /* monotonic: a failed PUT is retried then (0: none) */
        bool restore_retry;   /* the retry at put_due is the restore's (re-read, then PUT the originals) */
        unsigned restore_attempts;
};

struct cluster {
        struct rescale *r;
        char ns[64], app[64], url[256], ann[80];
        struct { char name[254], ip[48]; } pods[MAX_PODS];
        size_t npods, evicted;
        size_t nlocal;        /* pods[0..nlocal) are on this node, the rest on other fenced nodes */
        unsigned major, minor;
        char scheduler[32];
        struct flink_tm *tms;
        size_t ntms;
        struct flink_job_ref refs[FLINK_MAX_JOBS];
        size_t nrefs;
        struct fjob jobs[FLINK_MAX_JOBS];
        size_t njobs;
        unsigned slots_total, leaving;
        bool discover_failed, restore_only, put_sent, gate_open, v2;
        bool no_rescale;      /* the jobs fit without its slots: checkpoint, then let the pods go */
        bool aborted;         /* the event was canceled: give back what was lowered */
        bool ns_bound;        /* the JobManager is known to be in ns: TaskManagers may match by pod name */
        bool discover_final;  /* a discovery failure that a retry will not mend */
        unsigned discover_attempts;
        enum cstate st;
        unsigned inflight;
        usec_t due, first_evicted, verify_until, gate_at;
        char why[400];       /* degraded: why */
        bool degraded;
        const cJSON *adopted; /* originals from an annotation (own or another fenced node) */
        bool resumed;         /* adopted from our own node: an earlier run of this agent changed the bounds */
        bool keep_annotation; /* a restore failed: the originals stay recorded for a later run */
        struct rescale_timeline tl;
};

struct rq {
        struct rescale *r;
        struct cluster *c;   /* NULL for a request of the whole event (the node list) */
        struct fjob *j;
        void (*fn)(struct cluster *c, struct fjob *j, const struct k8s_response *r);
        void (*rfn)(struct rescale *r, const struct k8s_response *x); /* when c is NULL */
        struct rq *prev, *next;
};

struct rescale {
        const struct config *cfg;
        struct k8s *k;
        struct status *st;
        char event_id[EVENT_ID_MAX];
        usec_t evict_by;
        struct cluster *c[MAX_CLUSTERS];
        size_t nc;
        cJSON *own_node;      /* annotations of an earlier run */
        cJSON *fenced_nodes;  /* NodeList of cordoned nodes */
        bool nodes_listed, nodes_failed, started;
        bool warned_override; /* an annotation outside --flink-url-allow was logged */
        unsigned inflight;
        struct rq *reqs;
};

/* ---- requests ---- */

static void rq_done(void *ud, const struct k8s_response *resp) {
        struct rq *q = ud;
        struct cluster *c = q->c;
        struct rescale *r = q->r;
        r->inflight--;
        if (c)
                c->inflight--;
        if (q->prev)
                q->prev->next = q->next;
        else
                r->reqs = q->next;
        if (q->next)
                q->next->prev = q->prev;
        if (q->rfn)
                q->rfn(r, resp);
        else
                q->fn(c, q->j, resp);
        free(q);
}

/* Flink (url absolute) or Kubernetes (path) request. */
static void rq_send(struct rescale *r, struct cluster *c, struct fjob *j, bool flink, const char *method, const char *url,
                 const char *body, const char *ctype, void (*fn)(struct cluster *, struct fjob *, const struct k8s_response *)) {
        if (r->cfg->dry_run && strcmp(method, "GET") != 0) {
                log_full(LOG_INFO, MSG_PLAN, &(struct log_ctx) { .event_id = r->event_id, .flink_cluster = c ? c->app : NULL,
                                                                 .namespace_ = c ? c->ns : NULL },
                         "dry run: would send %s %s %s", method, url, body ? body : "");
                struct k8s_response ok = { .status = strcmp(method, "POST") == 0 ? 202 : 200, .body = "{}", .len = 2 };
                fn(c, j, &ok);
                return;
        }
        struct rq *q = calloc(1, sizeof *q);
        int e = -ENOMEM;
        if (q) {
                *q = (struct rq) { .r = r, .c = c, .j = j, .fn = fn };
                e = flink ? k8s_request_url(r->k, method, url, body ? ctype : NULL, body, r->cfg->flink_timeout, rq_done, q)
                          : k8s_request(r->k, method, url, body ? ctype : NULL, body, rq_done, q);
        }
        if (e < 0) {
                free(q);
                struct k8s_response fail = { .err = e };
                fn(c, j, &fail);
                return;
        }
        q->next = r->reqs;
        if (r->reqs)
                r->reqs->prev = q;
        r->reqs = q;
        r->inflight++;
        if (c)
                c->inflight++;
}

static void fget(struct cluster *c, struct fjob *j, const char *path, void (*fn)(struct cluster *, struct fjob *, const struct k8s_response *)) {
        char url[600];
        snprintf(url, sizeof url, "%s%s", c->url, path);
        rq_send(c->r, c, j, true, "GET", url, NULL, NULL, fn);
}

static bool ok(const struct k8s_response *x) { return !x->err && x->status >= 200 && x->status < 300; }

static void why_of(const struct k8s_response *x, char *buf, size_t len) {
        char e[200] = "";
        if (x->err) {
                snprintf(buf, len, "%s", http_strerror(x->err));
                return;
        }
        flink_parse_errors(x->body, x->len, e, sizeof e);
        snprintf(buf, len, "HTTP %ld%s%s", x->status, e[0] ? ": " : "", e);
}

static void lctx(const struct cluster *c, const struct fjob *j, struct log_ctx *x) {
        *x = (struct log_ctx) { .event_id = c->r->event_id, .namespace_ = c->ns, .flink_cluster = c->app,
                                .job_id = j ? j->job->jid : NULL, .phase = "rescaling" };
}

/* Gives up on in-place rescaling for this cluster: its pods are evicted
 * plainly and Flink's own failover takes over. Logged once. */
static void degrade(struct cluster *c, const char *fmt, ...) _printf_(2, 3);
static void degrade(struct cluster *c, const char *fmt, ...) {
        struct log_ctx x;
        va_list ap;
        if (c->degraded)
                return;
        char tmp[sizeof c->why];
        va_start(ap, fmt);
        vsnprintf(tmp, sizeof tmp, fmt, ap); /* fmt's arguments may point into c->why */
        va_end(ap);
        memcpy(c->why, tmp, sizeof tmp);
        c->degraded = true;
        c->gate_open = true;
        status_count(c->r->st, COUNT_RESCALE_DEGRADED);
        lctx(c, NULL, &x);
        log_full(LOG_WARNING, MSG_RESCALE, &x, "Flink cluster %s/%s: %s; evicting its TaskManagers without rescaling",
                 c->ns, c->app, c->why);
        c->st = C_DONE;
}

/* ---- discovery ---- */

/* A timeout, a dropped connection, a 5xx or a garbled answer may pass; a
 * refused connection, an unknown host or a 4xx will not. */
static bool transient(const struct k8s_response *x) {
        if (x->err)
                return x->err == -ETIMEDOUT || x->err == -ECONNRESET || x->err == -EIO;
        return x->status == 429 || x->status >= 500 || ok(x);
}

static void discover_failed(struct cluster *c, const struct k8s_response *x) {
        c->discover_failed = true;
        if (!transient(x))
                c->discover_final = true;
}

static void got_overview(struct cluster *c, struct fjob *j, const struct k8s_response *x) {
        struct flink_overview o;
        char w[256];
        if (!ok(x) || flink_parse_overview(x->body, x->len, &o) < 0 || flink_version_parse(o.version, &c->major, &c->minor) < 0) {
                why_of(x, w, sizeof w);
                snprintf(c->why, sizeof c->why, "JobManager %.120s unreachable or answered badly (%.150s)", c->url,
                         ok(x) ? "unparsable /overview" : w);
                discover_failed(c, x);
                return;
        }
        c->slots_total = o.slots_total;
}

static void got_config(struct cluster *c, struct fjob *j, const struct k8s_response *x) {
        if (!ok(x) || flink_parse_scheduler(x->body, x->len, c->scheduler, sizeof c->scheduler) < 0) {
                if (!c->discover_failed)
                        snprintf(c->why, sizeof c->why, "cannot read jobmanager/config");
                discover_failed(c, x);
        }
}

static void got_tms(struct cluster *c, struct fjob *j, const struct k8s_response *x) {
        free(c->tms);
        c->tms = calloc(FLINK_MAX_TMS, sizeof *c->tms);
        if (!c->tms || !ok(x) || flink_parse_taskmanagers(x->body, x->len, c->tms, FLINK_MAX_TMS, &c->ntms) < 0) {
                if (!c->discover_failed)
                        snprintf(c->why, sizeof c->why, "cannot read the TaskManagers");
                discover_failed(c, x);
        }
}

static void got_jobs(struct cluster *c, struct fjob *j, const struct k8s_response *x) {
        if (!ok(x) || flink_parse_jobs_overview(x->body, x->len, c->refs, FLINK_MAX_JOBS, &c->nrefs) < 0) {
                if (!c->discover_failed)
                        snprintf(c->why, sizeof c->why, "cannot read the jobs");
                discover_failed(c, x);
        }
}

static void got_job(struct cluster *c, struct fjob *j, const struct k8s_response *x) {
        if (!ok(x) || flink_parse_job(x->body, x->len, j->job) < 0)
                discover_failed(c, x), snprintf(c->why, sizeof c->why, "cannot read job details");
}

static void got_requirements(struct cluster *c, struct fjob *j, const struct k8s_response *x) {
        if (!ok(x) || flink_parse_requirements(x->body, x->len, j->cur, FLINK_MAX_VERTICES, &j->ncur) < 0)
                discover_failed(c, x), snprintf(c->why, sizeof c->why, "cannot read resource requirements");
}

static void got_checkpoints(struct cluster *c, struct fjob *j, const struct k8s_response *x) {
        /* Not knowing the last checkpoint only means taking a new one. */
        if (!ok(x) || flink_parse_checkpoints(x->body, x->len, &j->last_ckpt_ms) < 0)
                j->last_ckpt_ms = 0;
}

static void discover(struct cluster *c) {
        c->st = C_DISCOVER;
        c->due = UINT64_MAX;
        c->discover_failed = false;
        fget(c, NULL, "/overview", got_overview);
        fget(c, NULL, "/jobmanager/config", got_config);
        fget(c, NULL, "/taskmanagers", got_tms);
        fget(c, NULL, "/jobs/overview", got_jobs);
}

static void forget_jobs(struct cluster *c) {
        for (size_t k = 0; k < c->njobs; k++) {
                free(c->jobs[k].job);
                c->jobs[k] = (struct fjob) {};
        }
        c->njobs = 0;
}

/* A JobManager that answered badly or late is asked again, from the
 * start, while the gate time allows: a slow answer under load must not
 * cost the job its rescale. */
static bool rediscover(struct cluster *c) {
        usec_t now = now_monotonic(), wait = backoff_delay(RETRY_BASE, RETRY_CAP, c->discover_attempts);
        if (c->aborted || c->discover_final || ++c->discover_attempts >= DISCOVER_ATTEMPTS || now + wait >= c->r->evict_by)
                return false;
        if (c->discover_attempts == 1) {
                struct log_ctx lc;
                lctx(c, NULL, &lc);
                log_full(LOG_WARNING, MSG_RESCALE, &lc, "Flink cluster %s/%s: %s; retrying", c->ns, c->app, c->why);
        }
        forget_jobs(c);
        c->discover_failed = false;
        c->st = C_DISCOVER;
        c->due = now + wait;
        return true;
}

static void read_jobs(struct cluster *c) {
        char path[200];
        c->st = C_JOBS;
        forget_jobs(c);
        for (size_t i = 0; i < c->nrefs; i++) {
                /* Every job that holds or will hold slots, a restarting one too
                 * (an earlier run of spotd may have just rescaled it). */
                static const char *const ended[] = { "FINISHED", "CANCELED", "FAILED", "SUSPENDED", "CANCELLING", "FAILING" };
                bool skip = false;
                for (size_t e = 0; e < ELEMENTSOF(ended); e++)
                        skip |= strcmp(c->refs[i].state, ended[e]) == 0;
                if (skip)
                        continue;
                struct fjob *j = &c->jobs[c->njobs++];
                j->job = calloc(1, sizeof *j->job);
                if (!j->job) {
                        c->discover_failed = c->discover_final = true;
                        return;
                }
                snprintf(j->job->jid, sizeof j->job->jid, "%s", c->refs[i].jid);
                snprintf(path, sizeof path, "/jobs/%s", j->job->jid);
                fget(c, j, path, got_job);
                snprintf(path, sizeof path, "/jobs/%s/resource-requirements", j->job->jid);
                fget(c, j, path, got_requirements);
                snprintf(path, sizeof path, "/jobs/%s/checkpoints", j->job->jid);
                fget(c, j, path, got_checkpoints);
        }
}

/* ---- TaskManagers leaving: this node's and those of other fenced nodes ---- */

static bool node_fenced(const struct rescale *r, const char *node) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(r->fenced_nodes, "items")) {
                const cJSON *md = cJSON_GetObjectItemCaseSensitive(it, "metadata");
                const char *n = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(md, "name"));
                const cJSON *ann = cJSON_GetObjectItemCaseSensitive(md, "annotations");
                if (n && strcmp(n, node) == 0 && cJSON_GetObjectItemCaseSensitive(ann, "spotd.io/event-id"))
                        return true;
        }
        return false;
}

/* A TaskManager's resource id is its pod's name, which says nothing of the
 * namespace: it identifies a pod of c->ns only when the JobManager is known
 * to be in c->ns. The IP identifies the pod anywhere. */
static bool tm_is_pod(const struct cluster *c, const struct flink_tm *t, size_t i) {
        return (c->ns_bound && strcmp(t->id, c->pods[i].name) == 0) || (t->ip[0] && strcmp(t->ip, c->pods[i].ip) == 0);
}

static bool tm_leaving(const struct cluster *c, const struct flink_tm *t) {
        for (size_t i = 0; i < c->npods; i++)
                if (tm_is_pod(c, t, i))
                        return true;
        return false;
}

/* A pod of this node that is none of the TaskManagers its JobManager
 * lists: what it runs is unknown to spotd, so the plan cannot count it.
 * Said, not passed over as "nothing leaves". (A TaskManager that has not
 * registered yet holds no slot, and this is all there is to it.) */
static void warn_unmatched(const struct cluster *c) {
        for (size_t i = 0; i < c->nlocal; i++) {
                bool found = false;
                for (size_t k = 0; k < c->ntms && !found; k++)
                        found = tm_is_pod(c, &c->tms[k], i);
                if (found)
                        continue;
                struct log_ctx lc;
                lctx(c, NULL, &lc);
                log_full(LOG_WARNING, MSG_RESCALE, &lc,
                         "Pod %s/%s matches none of the %zu TaskManagers of Flink cluster %s/%s (by IP %s%s): "
                         "if it runs one, its jobs lose it without a rescale",
                         c->ns, c->pods[i].name, c->ntms, c->ns, c->app, c->pods[i].ip[0] ? c->pods[i].ip : "(none)",
                         c->ns_bound ? " or by name" : "; by name only when the JobManager is in the pod's namespace");
        }
}

/* An upper bound of -1 (none) is read as 32768, which Flink refuses above
 * the vertex's max parallelism (400); -1 itself must not go back either: a
 * PUT of it was accepted by Flink 1.20.5 and then its JobManager failed
 * fatally (tests/flink). The max parallelism means the same and is safe. */
static void clamp_to_max(const struct fjob *j, struct flink_bounds *b, size_t n) {
        for (size_t i = 0; i < n; i++)
                for (size_t k = 0; k < j->job->nv; k++)
                        if (strcmp(j->job->v[k].id, b[i].vid) == 0 && j->job->v[k].max_parallelism > 0 &&
                            b[i].upper > j->job->v[k].max_parallelism) {
                                b[i].upper = j->job->v[k].max_parallelism;
                                if (b[i].lower > b[i].upper)
                                        b[i].lower = b[i].upper;
                        }
}

static void plan_and_record(struct cluster *c);

static void got_cluster_pods(struct cluster *c, struct fjob *unused, const struct k8s_response *x) {
        _cleanup_(cJSON_Deletep) cJSON *list = ok(x) ? cJSON_ParseWithLength(x->body, x->len) : NULL;
        const cJSON *it;
        c->nlocal = c->npods;
        /* Pods of this cluster on other nodes spotd fenced leave as well. */
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(list, "items")) {
                const cJSON *md = cJSON_GetObjectItemCaseSensitive(it, "metadata");
                const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(md, "name"));
                const char *node = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(it, "spec"), "nodeName"));
                const char *ip = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(it, "status"), "podIP"));
                if (!name || !node || strcmp(node, c->r->cfg->node_name) == 0 || !node_fenced(c->r, node) || c->npods >= MAX_PODS)
                        continue;
                snprintf(c->pods[c->npods].name, sizeof c->pods[0].name, "%s", name);
                snprintf(c->pods[c->npods].ip, sizeof c->pods[0].ip, "%s", ip ? ip : "");
                c->npods++;
        }
        plan_and_record(c);
}

/* ---- originals ---- */

/* A bound read back from a node annotation: anyone with patch rights on
 * nodes can write there, so it is clamped to what Flink accepts. */
static unsigned ann_bound(const cJSON *v) {
        if (!cJSON_IsNumber(v) || !(v->valuedouble >= 1))
                return 1;
        return v->valuedouble > 32768 ? 32768 : (unsigned) v->valuedouble;
}

/* The originals recorded for a job in an annotation value, if any. */
static const cJSON *adopted_job(const struct cluster *c, const char *jid) {
        return cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c->adopted, "jobs"), jid);
}

static void find_adopted(struct cluster *c) {
        /* Our own node first (a restarted agent), then other fenced nodes:
         * the first agent to lower a job recorded what it really was. */
        const cJSON *nodes[1 + 64];
        size_t n = 0;
        if (c->r->own_node)
                nodes[n++] = c->r->own_node;
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(c->r->fenced_nodes, "items"))
                if (n < ELEMENTSOF(nodes))
                        nodes[n++] = it;
        for (size_t i = 0; i < n && !c->adopted; i++) {
                const cJSON *ann = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(nodes[i], "metadata"), "annotations");
                const char *v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ann, c->ann));
                if (v) {
                        c->adopted = cJSON_Parse(v); /* owned: freed with the cluster */
                        c->resumed = c->adopted && nodes[i] == c->r->own_node;
                }
        }
}

static void recorded(struct cluster *c, struct fjob *unused, const struct k8s_response *x);
static void begin_verify(struct cluster *c);
static void start_checkpoints(struct cluster *c);

static void plan_and_record(struct cluster *c) {
        struct plan_job pj[FLINK_MAX_JOBS];
        struct log_ctx lc;
        char w[256];

        if (c->aborted)
                return; /* cluster_abort() ends it */
        c->leaving = 0;
        for (size_t i = 0; i < c->ntms; i++)
                if (tm_leaving(c, &c->tms[i]))
                        c->leaving += c->tms[i].slots;
        warn_unmatched(c);
        for (size_t i = 0; i < c->njobs; i++) {
                clamp_to_max(&c->jobs[i], c->jobs[i].cur, c->jobs[i].ncur); /* the originals recorded are PUT-able */
                pj[i] = (struct plan_job) { .job = c->jobs[i].job, .cur = c->jobs[i].cur, .ncur = c->jobs[i].ncur };
        }
        if (plan_compute(pj, c->njobs, c->slots_total, c->leaving) < 0) {
                degrade(c, "resource requirements do not cover the job's vertices");
                return;
        }
        find_adopted(c);
        _cleanup_(cJSON_Deletep) cJSON *rec = cJSON_CreateObject();
        cJSON_AddStringToObject(rec, "url", c->url);
        cJSON *jobs = cJSON_AddObjectToObject(rec, "jobs");
        bool any = false;
        for (size_t i = 0; i < c->njobs; i++) {
                struct fjob *j = &c->jobs[i];
                const cJSON *aj = adopted_job(c, j->job->jid);
                cJSON *o = cJSON_AddObjectToObject(jobs, j->job->jid);
                j->nset = pj[i].nout;
                memcpy(j->set, pj[i].out, j->nset * sizeof *j->set);
                j->norig = j->ncur;
                for (size_t k = 0; k < j->ncur; k++) {
                        j->orig[k] = j->cur[k];
                        const cJSON *a = cJSON_GetObjectItemCaseSensitive(aj, j->cur[k].vid);
                        if (cJSON_GetArraySize(a) >= 2) {
                                j->orig[k].lower = ann_bound(cJSON_GetArrayItem(a, 0));
                                j->orig[k].upper = ann_bound(cJSON_GetArrayItem(a, 1));
                        }
                        /* Never raise during a downscale: another agent may have gone lower. */
                        for (size_t m = 0; m < j->nset; m++)
                                if (strcmp(j->set[m].vid, j->cur[k].vid) == 0 && j->set[m].upper > j->cur[k].upper)
                                        j->set[m] = j->cur[k];
                        unsigned set_upper = j->orig[k].upper;
                        for (size_t m = 0; m < j->nset; m++)
                                if (strcmp(j->set[m].vid, j->cur[k].vid) == 0)
                                        set_upper = j->set[m].upper;
                        cJSON *arr = cJSON_CreateArray();
                        cJSON_AddItemToArray(arr, cJSON_CreateNumber(j->orig[k].lower));
                        cJSON_AddItemToArray(arr, cJSON_CreateNumber(j->orig[k].upper));
                        cJSON_AddItemToArray(arr, cJSON_CreateNumber(set_upper));
                        cJSON_AddItemToObject(o, j->cur[k].vid, arr);
                }
                any |= pj[i].change;
        }
        lctx(c, NULL, &lc);
        snprintf(w, sizeof w, "%u of %u slots leave", c->leaving, c->slots_total);
        if (!any && c->resumed) {
                /* An earlier run lowered the bounds and died: what it set is
                 * in the annotation; check the job and restore. */
                for (size_t i = 0; i < c->njobs; i++) {
                        struct fjob *j = &c->jobs[i];
                        const cJSON *aj = adopted_job(c, j->job->jid);
                        for (size_t m = 0; m < j->nset; m++) {
                                const cJSON *a = cJSON_GetObjectItemCaseSensitive(aj, j->set[m].vid);
                                if (cJSON_GetArraySize(a) >= 3)
                                        j->set[m].upper = ann_bound(cJSON_GetArrayItem(a, 2));
                        }
                        j->put_ok = true;
                }
                log_full(LOG_INFO, MSG_RESCALE, &lc, "Flink cluster %s/%s: resuming after a restart; checking the jobs, then restoring",
                         c->ns, c->app);
                c->gate_open = true;
                c->put_sent = true;
                begin_verify(c);
                return;
        }
        if (!any && c->leaving > 0) {
                /* No bound changes, but the jobs on the leaving slots fail
                 * over when they go: from a checkpoint taken now, not from
                 * the last periodic one. */
                log_full(LOG_INFO, MSG_RESCALE, &lc,
                         "Flink cluster %s/%s (Flink %u.%u): %s; the jobs fit in what remains, no rescale; checkpointing first",
                         c->ns, c->app, c->major, c->minor, w);
                c->no_rescale = true;
                start_checkpoints(c);
                return;
        }
        if (!any) {
                log_full(LOG_INFO, MSG_RESCALE, &lc, "Flink cluster %s/%s (Flink %u.%u): %s; the jobs fit in what remains, no rescale",
                         c->ns, c->app, c->major, c->minor, w);
                c->gate_open = true;
                c->st = C_DONE;
                return;
        }
        log_full(LOG_INFO, MSG_RESCALE, &lc, "Flink cluster %s/%s (Flink %u.%u): %s; lowering the bounds of %zu jobs",
                 c->ns, c->app, c->major, c->minor, w, c->njobs);
        _cleanup_free_ char *val = cJSON_PrintUnformatted(rec);
        _cleanup_(cJSON_Deletep) cJSON *patch = cJSON_CreateObject();
        cJSON *ann = cJSON_AddObjectToObject(cJSON_AddObjectToObject(patch, "metadata"), "annotations");
        cJSON_AddStringToObject(ann, c->ann, val ? val : "");
        _cleanup_free_ char *body = cJSON_PrintUnformatted(patch);
        char path[320];
        snprintf(path, sizeof path, "/api/v1/nodes/%s", c->r->cfg->node_name);
        c->st = C_RECORD;
        rq_send(c->r, c, NULL, false, "PATCH", path, body, "application/merge-patch+json", recorded);
}

/* ---- checkpoint ---- */

static void trigger_answered(struct cluster *c, struct fjob *j, const struct k8s_response *x) {
        if (c->r->cfg->dry_run && ok(x)) {
                j->ck = CK_DONE;
                return;
        }
        if (!ok(x) || flink_parse_trigger(x->body, x->len, j->trig, sizeof j->trig) < 0) {
                char w[256];
                struct log_ctx lc;
                why_of(x, w, sizeof w);
                lctx(c, j, &lc);
                log_full(LOG_WARNING, MSG_RESCALE, &lc, "Cannot trigger a checkpoint of job %s: %s", j->job->jid, w);
                status_count(c->r->st, COUNT_CHECKPOINT_FAILED);
                j->ck = CK_FAILED;
                return;
        }
        j->ck = CK_RUNNING;
}

static void status_answered(struct cluster *c, struct fjob *j, const struct k8s_response *x) {
        enum flink_checkpoint_state s;
        uint64_t id = 0;
        char why[128] = "";
        if (!ok(x) || flink_parse_checkpoint_status(x->body, x->len, &s, &id, why, sizeof why) < 0 || s == FLINK_CKPT_IN_PROGRESS)
                return; /* polled again until the budget ends */
        struct log_ctx lc;
        lctx(c, j, &lc);
        j->ck = s == FLINK_CKPT_COMPLETED ? CK_DONE : CK_FAILED;
        status_count(c->r->st, j->ck == CK_DONE ? COUNT_CHECKPOINT_COMPLETED : COUNT_CHECKPOINT_FAILED);
        log_full(j->ck == CK_DONE ? LOG_INFO : LOG_WARNING, MSG_RESCALE, &lc, "Checkpoint of job %s %s%s%s", j->job->jid,
                 j->ck == CK_DONE ? "completed" : "failed", j->ck == CK_DONE ? "" : ": ", why);
}

static void send_puts(struct cluster *c);

static void start_checkpoints(struct cluster *c) {
        int64_t now_ms = (int64_t) (now_realtime() / USEC_PER_MSEC);
        c->st = C_CHECKPOINT;
        for (size_t i = 0; i < c->njobs; i++) {
                struct fjob *j = &c->jobs[i];
                char url[600];
                if (j->last_ckpt_ms && now_ms - j->last_ckpt_ms < (int64_t) (c->r->cfg->checkpoint_fresh / USEC_PER_MSEC)) {
                        j->ck = CK_FRESH;
                        status_count(c->r->st, COUNT_CHECKPOINT_SKIPPED);
                        continue;
                }
                snprintf(url, sizeof url, "%s/jobs/%s/checkpoints", c->url, j->job->jid);
                j->ck = CK_RUNNING;
                rq_send(c->r, c, j, true, "POST", url, "{\"checkpointType\":\"CONFIGURED\"}", "application/json", trigger_answered);
        }
        c->due = now_monotonic() + POLL_STEP;
}

static void recorded(struct cluster *c, struct fjob *unused, const struct k8s_response *x) {
        if (c->aborted) {
                if (!ok(x))
                        c->st = C_DONE; /* nothing recorded, nothing lowered */
                return;                 /* else cluster_abort() clears the record */
        }
        if (!ok(x)) {
                char w[256];
                why_of(x, w, sizeof w);
                /* No durable originals, no change: a bound we could not restore is worse than a failover. */
                degrade(c, "cannot record the original bounds on the node (%s)", w);
                return;
        }
        if (c->v2) {
                /* 2.x rescales on the next completed checkpoint after the
                 * PUT: lower first, then the checkpoint serves both. */
                c->st = C_PREPUT;
                send_puts(c);
                return;
        }
        start_checkpoints(c);
}

/* ---- rescale ---- */

static void put_answered(struct cluster *c, struct fjob *j, const struct k8s_response *x);
static void restore_read(struct cluster *c, struct fjob *j, const struct k8s_response *x);

static void put_bounds(struct cluster *c, struct fjob *j, const struct flink_bounds *b, size_t n,
                       void (*fn)(struct cluster *, struct fjob *, const struct k8s_response *)) {
        _cleanup_free_ char *body = NULL;
        char url[600];
        struct flink_bounds safe[FLINK_MAX_VERTICES];
        n = n < FLINK_MAX_VERTICES ? n : FLINK_MAX_VERTICES;
        memcpy(safe, b, n * sizeof *b);
        clamp_to_max(j, safe, n);
        b = safe;
        if (flink_format_requirements(b, n, &body) < 0) {
                struct k8s_response bad = { .status = 400 };
                fn(c, j, &bad);
                return;
        }
        snprintf(url, sizeof url, "%s/jobs/%s/resource-requirements", c->url, j->job->jid);
        j->put_attempts++;
        rq_send(c->r, c, j, true, "PUT", url, body, "application/json", fn);
}

static void reread_for_put(struct cluster *c, struct fjob *j, const struct k8s_response *x) {
        struct flink_bounds cur[FLINK_MAX_VERTICES];
        size_t n;
        if (ok(x) && flink_parse_requirements(x->body, x->len, cur, FLINK_MAX_VERTICES, &n) >= 0)
                for (size_t i = 0; i < j->nset; i++)
                        for (size_t k = 0; k < n; k++)
                                if (strcmp(cur[k].vid, j->set[i].vid) == 0 && cur[k].upper < j->set[i].upper)
                                        j->set[i] = cur[k]; /* someone went lower: keep theirs */
        put_bounds(c, j, j->set, j->nset, put_answered);
}

static void put_answered(struct cluster *c, struct fjob *j, const struct k8s_response *x) {
        struct log_ctx lc;
        char w[256];
        lctx(c, j, &lc);
        if (ok(x)) {
                j->put_ok = true;
                if (!c->tl.put_accepted)
                        c->tl.put_accepted = now_realtime();
                log_full(LOG_NOTICE, MSG_RESCALE, &lc, "Lowered the bounds of job %s (Flink %u.%u)", j->job->jid, c->major, c->minor);
                return;
        }
        why_of(x, w, sizeof w);
        /* A 409 (someone else changed the bounds: re-read), a timeout, a
         * 429 or a 5xx ("could not be persisted ... Please retry") is
         * retried with backoff; a 400 is final. */
        bool again = x->err || x->status == 409 || x->status == 429 || x->status >= 500;
        if (again && !c->aborted && j->put_attempts < PUT_ATTEMPTS) {
                if (j->put_attempts == 1)
                        log_full(LOG_WARNING, MSG_RESCALE, &lc, "Cannot lower the bounds of job %s yet: %s; retrying", j->job->jid, w);
                j->put_reread = !x->err && x->status == 409;
                j->put_due = now_monotonic() + backoff_delay(RETRY_BASE, RETRY_CAP, j->put_attempts);
                return;
        }
        log_full(LOG_WARNING, MSG_RESCALE, &lc, "Cannot lower the bounds of job %s: %s; Flink's failover takes over", j->job->jid, w);
}

/* Sends the PUT retries that are due; true while any is still to come. */
static bool retry_puts(struct cluster *c, usec_t now) {
        bool pending = false;
        for (size_t i = 0; i < c->njobs; i++) {
                struct fjob *j = &c->jobs[i];
                if (!j->put_due)
                        continue;
                pending = true;
                if (now < j->put_due)
                        continue;
                j->put_due = 0;
                if (j->restore_retry) {
                        char path[200];
                        snprintf(path, sizeof path, "/jobs/%s/resource-requirements", j->job->jid);
                        fget(c, j, path, restore_read);
                } else if (j->put_reread) {
                        char path[200];
                        snprintf(path, sizeof path, "/jobs/%s/resource-requirements", j->job->jid);
                        fget(c, j, path, reread_for_put);
                } else
                        put_bounds(c, j, j->set, j->nset, put_answered);
        }
        return pending;
}

static void send_puts(struct cluster *c) {
        c->put_sent = true;
        for (size_t i = 0; i < c->njobs; i++)
                put_bounds(c, &c->jobs[i], c->jobs[i].set, c->jobs[i].nset, put_answered);
}

static void restore(struct cluster *c);

static void begin_verify(struct cluster *c) {
        if (c->r->cfg->dry_run) {
                restore(c); /* nothing was lowered: nothing to wait for */
                return;
        }
        c->st = C_VERIFY;
        c->verify_until = now_monotonic() + c->r->cfg->verify_timeout;
        c->due = now_monotonic() + VERIFY_STEP;
}

/* ---- verify ---- */

static void verify_answered(struct cluster *c, struct fjob *j, const struct k8s_response *x) {
        struct flink_job *live = calloc(1, sizeof *live);
        if (live && ok(x) && flink_parse_job(x->body, x->len, live) >= 0 && strcmp(live->state, "RUNNING") == 0) {
                bool all = true;
                for (size_t i = 0; i < live->nv && all; i++) {
                        const struct flink_vertex *v = &live->v[i];
                        /* At most our bound: other fenced nodes' agents may have gone lower still. */
                        for (size_t k = 0; k < j->nset; k++)
                                if (strcmp(j->set[k].vid, v->id) == 0 && v->parallelism > j->set[k].upper)
                                        all = false;
                        /* A finished subtask (a bounded source) is done, not missing. */
                        if (v->tasks_running + v->tasks_finished != v->tasks_total || v->tasks_total != v->parallelism)
                                all = false;
                }
                if (all && !j->verified) {
                        struct log_ctx lc;
                        lctx(c, j, &lc);
                        j->verified = true;
                        log_full(LOG_NOTICE, MSG_RESCALE, &lc, "Job %s runs on the remaining TaskManagers at the lower parallelism",
                                 j->job->jid);
                }
        }
        free(live);
}

/* ---- restore ---- */

static void cleared(struct cluster *c, struct fjob *unused, const struct k8s_response *x) {
        c->st = C_DONE;
}

static void clear_annotation(struct cluster *c) {
        char path[320], body[200];
        snprintf(path, sizeof path, "/api/v1/nodes/%s", c->r->cfg->node_name);
        snprintf(body, sizeof body, "{\"metadata\":{\"annotations\":{\"%s\":null}}}", c->ann);
        c->st = C_CLEAR;
        rq_send(c->r, c, NULL, false, "PATCH", path, body, "application/merge-patch+json", cleared);
}

static void restore_put_answered(struct cluster *c, struct fjob *j, const struct k8s_response *x);

static void restore_read(struct cluster *c, struct fjob *j, const struct k8s_response *x) {
        struct flink_bounds cur[FLINK_MAX_VERTICES];
        size_t n;
        bool change = false;
        if (!ok(x) || flink_parse_requirements(x->body, x->len, cur, FLINK_MAX_VERTICES, &n) < 0) {
                struct k8s_response bad = *x;
                if (ok(x))
                        bad.err = -EBADMSG; /* "malformed answer", not a made-up HTTP status */
                restore_put_answered(c, j, &bad);
                return;
        }
        /* Only where the bound is still what spotd set: anything else is
         * someone else's decision (another agent went lower, an operator). */
        for (size_t k = 0; k < n; k++)
                for (size_t m = 0; m < j->nset; m++)
                        if (strcmp(cur[k].vid, j->set[m].vid) == 0 && cur[k].upper == j->set[m].upper)
                                for (size_t o = 0; o < j->norig; o++)
                                        if (strcmp(j->orig[o].vid, cur[k].vid) == 0 &&
                                            (cur[k].upper != j->orig[o].upper || cur[k].lower != j->orig[o].lower)) {
                                                cur[k] = j->orig[o];
                                                change = true;
                                        }
        if (!change) {
                j->restored = true;
                return;
        }
        put_bounds(c, j, cur, n, restore_put_answered);
}

static void restore_put_answered(struct cluster *c, struct fjob *j, const struct k8s_response *x) {
        struct log_ctx lc;
        lctx(c, j, &lc);
        if (ok(x)) {
                j->restored = true;
                status_count(c->r->st, COUNT_RESTORED);
                if (!c->tl.restored)
                        c->tl.restored = now_realtime();
                log_full(LOG_NOTICE, MSG_RESCALE, &lc, "Restored the original bounds of job %s: it grows back as TaskManagers register",
                         j->job->jid);
                return;
        }
        char w[256];
        why_of(x, w, sizeof w);
        /* A 409 (someone changed the bounds meanwhile), a timeout, a 429 or
         * a 5xx ("could not be persisted ... Please retry", a JobManager in
         * leader election) passes: re-read and try again with backoff. A
         * job left lowered waits for the next event or restart of spotd. */
        bool again = x->err || x->status == 409 || x->status == 429 || x->status >= 500;
        if (again && ++j->restore_attempts < RESTORE_ATTEMPTS) {
                if (j->restore_attempts == 1)
                        log_full(LOG_WARNING, MSG_RESCALE, &lc, "Cannot restore the bounds of job %s yet: %s; retrying",
                                 j->job->jid, w);
                j->restore_retry = true;
                j->put_due = now_monotonic() + backoff_delay(RETRY_BASE, RETRY_CAP, j->restore_attempts);
                return;
        }
        j->restored = true; /* given up: the annotation keeps the originals for a later run */
        c->keep_annotation = true;
        c->why[0] = 0;
        log_full(LOG_ERR, MSG_RESCALE, &lc, "Cannot restore the bounds of job %s: %s (originals kept in annotation %s)",
                 j->job->jid, w, c->ann);
        snprintf(c->why, sizeof c->why, "restore failed");
}

static void restore(struct cluster *c) {
        char path[200];
        c->st = C_RESTORE;
        if (c->r->cfg->restore == RESTORE_NEVER) {
                struct log_ctx lc;
                lctx(c, NULL, &lc);
                log_full(LOG_INFO, MSG_RESCALE, &lc, "Not restoring the bounds (--restore=never); originals kept in annotation %s", c->ann);
                c->st = C_DONE;
                return;
        }
        for (size_t i = 0; i < c->njobs; i++) {
                snprintf(path, sizeof path, "/jobs/%s/resource-requirements", c->jobs[i].job->jid);
                fget(c, &c->jobs[i], path, restore_read);
        }
}

/* ---- driver ---- */

/* The event was canceled: what each state gives back, once its answers
 * are in. Nothing is lowered any more; what was is restored. */
static void cluster_abort(struct cluster *c) {
        if (c->inflight)
                return;
        switch (c->st) {
        case C_DISCOVER:
        case C_JOBS:
        case C_OTHERS:
                c->st = C_DONE; /* nothing recorded yet */
                break;
        case C_RECORD:
                clear_annotation(c); /* recorded, nothing lowered */
                break;
        case C_PREPUT:
        case C_CHECKPOINT:
        case C_GATE:
        case C_VERIFY:
                for (size_t i = 0; i < c->njobs; i++)
                        c->jobs[i].put_due = 0;
                if (c->put_sent)
                        restore(c);
                else if (c->no_rescale)
                        c->st = C_DONE; /* nothing recorded */
                else
                        clear_annotation(c);
                break;
        case C_RESTORE:
        case C_CLEAR:
        case C_DONE:
                break;
        }
}

static void cluster_tick(struct cluster *c) {
        usec_t now = now_monotonic();
        char path[200];
        if (c->aborted && c->st < C_RESTORE) {
                cluster_abort(c);
                return;
        }
        if (c->inflight && c->st != C_CHECKPOINT && c->st != C_VERIFY)
                return;
        switch (c->st) {
        case C_PREPUT:
                if (retry_puts(c, now))
                        break;
                start_checkpoints(c); /* every PUT answered (inflight is 0) */
                break;
        case C_DISCOVER:
                if (c->inflight)
                        return;
                if (c->due != UINT64_MAX) {
                        if (now >= c->due)
                                discover(c);
                        return;
                }
                if (c->discover_failed) {
                        if (!rediscover(c))
                                degrade(c, "%s", c->why);
                        return;
                }
                if (c->major < 1 || (c->major == 1 && c->minor < 18)) {
                        degrade(c, "Flink %u.%u cannot rescale in place (1.18 or later needed)", c->major, c->minor);
                        return;
                }
                if (strcasecmp(c->scheduler, "adaptive") != 0) { /* Flink reads enum options case-insensitively */
                        degrade(c, "the job runs the %s scheduler, not the adaptive one", c->scheduler[0] ? c->scheduler : "default");
                        return;
                }
                c->v2 = c->major >= 2;
                read_jobs(c);
                break;
        case C_JOBS: {
                if (c->discover_failed) {
                        if (!rediscover(c))
                                degrade(c, "%s", c->why);
                        return;
                }
                if (!c->r->nodes_listed && !c->r->nodes_failed)
                        return; /* the fenced-node list is still on its way */
                char sel[CONFIG_TM_SELECTOR_ESCAPED_MAX + 80], esc[3 * sizeof sel];
                snprintf(sel, sizeof sel, "%s,app=%s", c->r->cfg->tm_selector, c->app);
                if (k8s_escape(sel, esc, sizeof esc) < 0) {
                        degrade(c, "selector too long");
                        return;
                }
                snprintf(path, sizeof path, "/api/v1/namespaces/%s/pods?labelSelector=", c->ns);
                char full[sizeof esc + 200];
                snprintf(full, sizeof full, "%s%s", path, esc);
                c->st = C_OTHERS;
                rq_send(c->r, c, NULL, false, "GET", full, NULL, NULL, got_cluster_pods);
                break;
        }
        case C_CHECKPOINT: {
                bool pending = false;
                retry_puts(c, now);
                for (size_t i = 0; i < c->njobs; i++)
                        pending |= c->jobs[i].ck == CK_RUNNING;
                if (!pending || now >= c->r->evict_by) {
                        if (pending) {
                                struct log_ctx lc;
                                lctx(c, NULL, &lc);
                                log_full(LOG_WARNING, MSG_RESCALE, &lc, "Checkpoint of %s/%s not done within its budget; evicting anyway",
                                         c->ns, c->app);
                        }
                        if (!c->tl.checkpoint_done)
                                c->tl.checkpoint_done = now_realtime();
                        c->gate_open = true;
                        c->gate_at = now;
                        if (c->no_rescale)
                                c->st = C_DONE;
                        else if (c->v2)
                                begin_verify(c); /* lowered before the checkpoint */
                        else
                                c->st = C_GATE;
                        return;
                }
                if (now >= c->due && !c->inflight) {
                        for (size_t i = 0; i < c->njobs; i++)
                                if (c->jobs[i].ck == CK_RUNNING && c->jobs[i].trig[0]) {
                                        snprintf(path, sizeof path, "/jobs/%s/checkpoints/%s", c->jobs[i].job->jid, c->jobs[i].trig);
                                        fget(c, &c->jobs[i], path, status_answered);
                                }
                        c->due = now + POLL_STEP;
                }
                break;
        }
        case C_GATE:
                retry_puts(c, now);
                /* 1.18-1.20: the doomed TaskManagers go first, the PUT
                 * follows within a second; evictions a PDB holds back do
                 * not hold the PUT for long. */
                if ((c->first_evicted && (c->evicted >= c->npods || now >= c->first_evicted + PUT_AFTER_EVICT)) ||
                    now >= c->gate_at + 5 * USEC_PER_SEC) {
                        send_puts(c);
                        begin_verify(c);
                }
                break;
        case C_VERIFY: {
                bool all = true;
                retry_puts(c, now);
                for (size_t i = 0; i < c->njobs; i++)
                        all &= c->jobs[i].verified || (!c->jobs[i].put_ok && !c->jobs[i].put_due);
                if ((all && !c->inflight) || now >= c->verify_until) {
                        if (c->inflight)
                                return;
                        struct log_ctx lc;
                        lctx(c, NULL, &lc);
                        for (size_t i = 0; i < c->njobs; i++)
                                if (c->jobs[i].put_ok)
                                        status_count(c->r->st, c->jobs[i].verified ? COUNT_RESCALE_VERIFIED : COUNT_RESCALE_NOT_VERIFIED);
                        if (all)
                                c->tl.running_at_new = now_realtime();
                        else
                                log_full(LOG_WARNING, MSG_RESCALE, &lc, "Flink cluster %s/%s did not reach the lower parallelism within %llus",
                                         c->ns, c->app, (unsigned long long) (c->r->cfg->verify_timeout / USEC_PER_SEC));
                        restore(c);
                        return;
                }
                if (now >= c->due && !c->inflight) {
                        for (size_t i = 0; i < c->njobs; i++)
                                if (!c->jobs[i].verified && c->jobs[i].put_ok) {
                                        snprintf(path, sizeof path, "/jobs/%s", c->jobs[i].job->jid);
                                        fget(c, &c->jobs[i], path, verify_answered);
                                }
                        c->due = now + VERIFY_STEP;
                }
                break;
        }
        case C_RESTORE: {
                bool all = true;
                retry_puts(c, now);
                for (size_t i = 0; i < c->njobs; i++)
                        all &= c->jobs[i].restored;
                if (all && !c->inflight) {
                        if (c->keep_annotation)
                                c->st = C_DONE;
                        else
                                clear_annotation(c);
                }
                break;
        }
        default:
                break;
        }
}

static void nodes_listed(struct rescale *r, const struct k8s_response *x) {
        if (ok(x))
                r->fenced_nodes = cJSON_ParseWithLength(x->body, x->len);
        r->nodes_listed = r->fenced_nodes != NULL;
        r->nodes_failed = !r->nodes_listed;
}

static bool url_ok(const char *u);

/* A fence annotation of an earlier run whose TaskManagers are all gone:
 * nothing to discover, only the bounds to give back. */
static void add_restore_only(struct rescale *r, const char *key, const char *value) {
        _cleanup_(cJSON_Deletep) cJSON *v = cJSON_Parse(value);
        const char *url = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(v, "url"));
        const cJSON *jobs = cJSON_GetObjectItemCaseSensitive(v, "jobs"), *jit, *vit;
        if (!url || !url_ok(url) || !cJSON_IsObject(jobs) || r->nc >= MAX_CLUSTERS || strlen(key) >= sizeof r->c[0]->ann)
                return;
        struct cluster *c = calloc(1, sizeof *c);
        if (!c)
                return;
        c->r = r;
        c->restore_only = true;
        c->gate_open = true;
        c->put_sent = true;
        snprintf(c->url, sizeof c->url, "%s", url);
        snprintf(c->ann, sizeof c->ann, "%s", key);
        snprintf(c->app, sizeof c->app, "%s", key + strlen(FLINK_ANN_PREFIX));
        snprintf(c->ns, sizeof c->ns, "?");
        cJSON_ArrayForEach(jit, jobs) {
                if (c->njobs >= FLINK_MAX_JOBS || !jit->string || !flink_id_valid(jit->string))
                        continue;
                struct fjob *j = &c->jobs[c->njobs];
                if (!(j->job = calloc(1, sizeof *j->job)))
                        break;
                strcpy(j->job->jid, jit->string);
                cJSON_ArrayForEach(vit, jit) {
                        if (j->norig >= FLINK_MAX_VERTICES || !vit->string || !flink_id_valid(vit->string) || cJSON_GetArraySize(vit) < 3)
                                continue;
                        struct flink_bounds *o = &j->orig[j->norig++], *st = &j->set[j->nset++];
                        strcpy(o->vid, vit->string);
                        strcpy(st->vid, vit->string);
                        o->lower = ann_bound(cJSON_GetArrayItem(vit, 0));
                        o->upper = ann_bound(cJSON_GetArrayItem(vit, 1));
                        st->lower = 1;
                        st->upper = ann_bound(cJSON_GetArrayItem(vit, 2));
                }
                j->put_ok = true;
                c->njobs++;
        }
        r->c[r->nc++] = c;
        log_full(LOG_INFO, MSG_RESCALE, &(struct log_ctx) { .event_id = r->event_id }, "Restoring the bounds an earlier run lowered (%s)", key);
        restore(c);
}

void rescale_start(struct rescale *r) {
        if (r->started)
                return;
        r->started = true;
        const cJSON *a;
        cJSON_ArrayForEach(a, cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(r->own_node, "metadata"), "annotations")) {
                bool known = false;
                if (!a->string || strncmp(a->string, FLINK_ANN_PREFIX, strlen(FLINK_ANN_PREFIX)) != 0 || !cJSON_IsString(a))
                        continue;
                for (size_t i = 0; i < r->nc && !known; i++)
                        known = strcmp(r->c[i]->ann, a->string) == 0;
                if (!known)
                        add_restore_only(r, a->string, a->valuestring);
        }
        /* Cordoned nodes only: spotd's fences are among them. */
        struct rq *q = calloc(1, sizeof *q);
        if (q) {
                *q = (struct rq) { .r = r, .rfn = nodes_listed };
                if (k8s_request(r->k, "GET", "/api/v1/nodes?fieldSelector=spec.unschedulable%3Dtrue", NULL, NULL, rq_done, q) < 0) {
                        free(q);
                        q = NULL;
                } else {
                        q->next = r->reqs;
                        if (r->reqs)
                                r->reqs->prev = q;
                        r->reqs = q;
                        r->inflight++;
                }
        }
        if (!q)
                r->nodes_failed = true;
        for (size_t i = 0; i < r->nc; i++)
                if (!r->c[i]->restore_only) /* already restoring: discovering it would redo its jobs (and leak them) */
                        discover(r->c[i]);
}

void rescale_tick(struct rescale *r) {
        usec_t now = now_monotonic();
        for (size_t i = 0; i < r->nc; i++) {
                /* A step that ends within a tick (a checkpoint found fresh,
                 * every PUT answered) lets the next one start in the same
                 * tick: no wakeup is scheduled for a state just entered. */
                for (unsigned n = 0; n < 8; n++) {
                        enum cstate before = r->c[i]->st;
                        cluster_tick(r->c[i]);
                        if (r->c[i]->st == before)
                                break;
                }
                /* Past the gate time nothing holds an eviction. */
                if (now >= r->evict_by && !r->c[i]->gate_open && !r->c[i]->aborted) {
                        struct log_ctx lc;
                        lctx(r->c[i], NULL, &lc);
                        log_full(LOG_WARNING, MSG_RESCALE, &lc, "Flink preparation of %s/%s over its time budget; evicting now",
                                 r->c[i]->ns, r->c[i]->app);
                        r->c[i]->gate_open = true;
                }
        }
}

usec_t rescale_next_wakeup(const struct rescale *r) {
        usec_t next = UINT64_MAX;
#define EARLIER(t) do { usec_t _t = (t); if (_t < next) next = _t; } while (0)
        for (size_t i = 0; i < r->nc; i++) {
                const struct cluster *c = r->c[i];
                /* The gate time matters only while a gate is still shut. */
                if (!c->gate_open && !c->aborted)
                        EARLIER(r->evict_by);
                if ((c->st == C_CHECKPOINT || c->st == C_VERIFY || c->st == C_DISCOVER) && !c->inflight)
                        EARLIER(c->due);
                if (c->st == C_GATE && c->first_evicted)
                        EARLIER(c->first_evicted + PUT_AFTER_EVICT);
                if (c->st == C_GATE)
                        EARLIER(c->gate_at + 5 * USEC_PER_SEC);
                if (c->st == C_VERIFY)
                        EARLIER(c->verify_until);
                for (size_t k = 0; k < c->njobs; k++)
                        if (c->jobs[k].put_due)
                                EARLIER(c->jobs[k].put_due);
        }
        /* Answers wake the loop themselves (and it ticks after each), so
         * nothing here asks for a wakeup while requests are in flight. */
#undef EARLIER
        return next;
}

/* The event was canceled: stop lowering, give back what was lowered. */
void rescale_abort(struct rescale *r) {
        for (size_t i = 0; i < r->nc; i++) {
                r->c[i]->aborted = true;
                cluster_abort(r->c[i]);
        }
}

bool rescale_done(const struct rescale *r) {
        for (size_t i = 0; i < r->nc; i++)
                if (r->c[i]->st != C_DONE)
                        return false;
        return r->inflight == 0;
}

bool rescale_may_evict(struct rescale *r, int c) {
        return c < 0 || (size_t) c >= r->nc || r->c[c]->gate_open || now_monotonic() >= r->evict_by;
}

void rescale_evicted(struct rescale *r, int c) {
        if (c < 0 || (size_t) c >= r->nc)
                return;
        r->c[c]->evicted++;
        if (!r->c[c]->first_evicted)
                r->c[c]->first_evicted = now_monotonic();
}

/* "flink.spotd.io/<app>.<ns>" cut to the 63 characters a name part may
 * have, with a hash when cut so two long names cannot collide. */
static void annotation_name(const char *ns, const char *app, char *buf, size_t len) {
        char name[200];
        unsigned h = 2166136261u;
        snprintf(name, sizeof name, "%s.%s", app, ns);
        for (const char *p = name; *p; p++)
                h = (h ^ (unsigned char) *p) * 16777619u;
        if (strlen(name) > 63)
                snprintf(name + 54, sizeof name - 54, ".%08x", h);
        snprintf(buf, len, FLINK_ANN_PREFIX "%s", name);
}

static bool url_ok(const char *u) {
        if (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0)
                return false;
        for (const char *p = u; *p; p++)
                if (!isgraph((unsigned char) *p) || strchr("?#{}", *p))
                        return false;
        return strlen(u) < 200;
}

/* The host of an http(s) URL that url_ok() accepted (IPv6 without brackets). */
static int url_host(const char *u, char *buf, size_t len) {
        const char *h = strstr(u, "://") + 3, *end;
        if (*h == '[') {
                h++;
                end = strchr(h, ']');
        } else
                end = h + strcspn(h, ":/");
        if (!end || end == h || (size_t) (end - h) >= len)
                return -EINVAL;
        memcpy(buf, h, (size_t) (end - h));
        buf[end - h] = 0;
        return 0;
}

/* A Service host "<svc>.<ns>[.svc[.<domain>]]" names its namespace. */
static bool host_in_namespace(const char *host, const char *ns) {
        const char *d = strchr(host, '.');
        size_t n = strlen(ns);
        return d && strncmp(d + 1, ns, n) == 0 && (d[1 + n] == 0 || d[1 + n] == '.');
}

/* --flink-rest-template with {app} and {namespace} filled in. */
static int expand_template(const char *tpl, const char *ns, const char *app, char *buf, size_t len) {
        size_t o = 0;
        for (const char *p = tpl; *p; ) {
                const char *v = NULL;
                if (strncmp(p, "{app}", 5) == 0)
                        v = app, p += 5;
                else if (strncmp(p, "{namespace}", 11) == 0)
                        v = ns, p += 11;
                if (v) {
                        size_t n = strlen(v);
                        if (o + n >= len)
                                return -ENOBUFS;
                        memcpy(buf + o, v, n);
                        o += n;
                        continue;
                }
                if (o + 1 >= len)
                        return -ENOBUFS;
                buf[o++] = *p++;
        }
        buf[o] = 0;
        while (o && buf[o - 1] == '/')
                buf[--o] = 0;
        return 0;
}

int rescale_add_pod(struct rescale *r, const void *pod_json) {
        const cJSON *pod = pod_json, *md = cJSON_GetObjectItemCaseSensitive(pod, "metadata");
        const cJSON *labels = cJSON_GetObjectItemCaseSensitive(md, "labels");
        const char *ns = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(md, "namespace"));
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(md, "name"));
        const char *app = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(labels, "app"));
        const char *ip = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(pod, "status"), "podIP"));
        const char *over = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(md, "annotations"),
                                                                                "spotd.io/flink-rest-url"));
        char url[256], host[256];
        if (!ns || !name || !app || strlen(ns) > 63 || strlen(app) > 63 || strlen(name) > 253)
                return -1;
        for (const char *p = app; *p; p++)
                if (!isalnum((unsigned char) *p) && !strchr("-._", *p))
                        return -1; /* it goes into a host name */
        /* Anyone who may create a pod matching the selector may annotate
         * it: the override is honoured only for hosts the operator allows
         * (--flink-url-allow); the template is the operator's own. */
        bool from_template = true;
        if (over && url_ok(over) && url_host(over, host, sizeof host) >= 0 && config_flink_url_allowed(r->cfg, host)) {
                snprintf(url, sizeof url, "%s", over);
                from_template = false;
        } else if (over && !r->warned_override) {
                r->warned_override = true;
                log_full(LOG_WARNING, MSG_RESCALE, &(struct log_ctx) { .event_id = r->event_id, .namespace_ = ns, .pod = name },
                         "Pod %s/%s names a JobManager URL outside --flink-url-allow; using --flink-rest-template", ns, name);
        }
        if (from_template && (expand_template(r->cfg->flink_rest_template, ns, app, url, sizeof url) < 0 || !url_ok(url)))
                return -1;
        size_t i;
        for (i = 0; i < r->nc; i++)
                if (strcmp(r->c[i]->ns, ns) == 0 && strcmp(r->c[i]->app, app) == 0)
                        break;
        if (i == r->nc) {
                if (r->nc >= MAX_CLUSTERS)
                        return -1;
                struct cluster *c = calloc(1, sizeof *c);
                if (!c)
                        return -1;
                c->r = r;
                snprintf(c->ns, sizeof c->ns, "%s", ns);
                snprintf(c->app, sizeof c->app, "%s", app);
                snprintf(c->url, sizeof c->url, "%s", url);
                /* The template puts the JobManager in the pod's namespace. */
                c->ns_bound = from_template ? strstr(r->cfg->flink_rest_template, "{namespace}") != NULL
                                            : host_in_namespace(host, ns);
                annotation_name(ns, app, c->ann, sizeof c->ann);
                r->c[r->nc++] = c;
        }
        struct cluster *c = r->c[i];
        if (c->npods < MAX_PODS) {
                snprintf(c->pods[c->npods].name, sizeof c->pods[0].name, "%s", name);
                snprintf(c->pods[c->npods].ip, sizeof c->pods[0].ip, "%s", ip ? ip : "");
                c->npods++;
        }
        return (int) i;
}

void rescale_set_evict_by(struct rescale *r, usec_t evict_by) {
        r->evict_by = evict_by;
}

void rescale_set_node(struct rescale *r, const void *node_json) {
        cJSON_Delete(r->own_node);
        r->own_node = node_json ? cJSON_Duplicate(node_json, true) : NULL;
}

int rescale_new(const struct config *cfg, struct k8s *k, struct status *st, const char *event_id, usec_t evict_by,
                struct rescale **ret) {
        struct rescale *r = calloc(1, sizeof *r);
        if (!r)
                return -ENOMEM;
        r->cfg = cfg;
        r->st = st;
        r->k = k;
        r->evict_by = evict_by;
        snprintf(r->event_id, sizeof r->event_id, "%s", event_id);
        *ret = r;
        return 0;
}

struct rescale *rescale_free(struct rescale *r) {
        if (!r)
                return NULL;
        while (r->reqs) { /* only after the client dropped them */
                struct rq *q = r->reqs;
                r->reqs = q->next;
                free(q);
        }
        for (size_t i = 0; i < r->nc; i++) {
                for (size_t k = 0; k < r->c[i]->njobs; k++)
                        free(r->c[i]->jobs[k].job);
                free(r->c[i]->tms);
                cJSON_Delete((cJSON *) r->c[i]->adopted);
                free(r->c[i]);
        }
        cJSON_Delete(r->own_node);
        cJSON_Delete(r->fenced_nodes);
        free(r);
        return NULL;
}

void rescale_summary(const struct rescale *r, char *buf, size_t len) {
        size_t o = 0;
        buf[0] = 0;
        for (size_t i = 0; i < r->nc && o + 1 < len; i++) {
                const struct cluster *c = r->c[i];
                size_t ok_jobs = 0, restored = 0;
                for (size_t k = 0; k < c->njobs; k++) {
                        ok_jobs += c->jobs[k].verified;
                        restored += c->jobs[k].restored;
                }
                int n = snprintf(buf + o, len - o, "%s%s/%s: %s", o ? "; " : "", c->ns, c->app,
                                 c->degraded ? c->why : !c->put_sent ? "no rescale needed" : "");
                if (n > 0)
                        o += (size_t) n;
                if (!c->degraded && c->put_sent && o < len) {
                        n = snprintf(buf + o, len - o, "%zu/%zu jobs at the lower parallelism, %zu restored", ok_jobs, c->njobs, restored);
                        if (n > 0)
                                o += (size_t) n;
                }
        }
        if (o >= len)
                buf[len - 1] = 0;
}

void rescale_timeline(const struct rescale *r, struct rescale_timeline *ret) {
        *ret = (struct rescale_timeline) {};
        for (size_t i = 0; i < r->nc; i++) {
                const struct rescale_timeline *t = &r->c[i]->tl;
#define LATEST(f) if (t->f > ret->f) ret->f = t->f
                LATEST(checkpoint_done);
                LATEST(put_accepted);
                LATEST(running_at_new);
                LATEST(restored);
#undef LATEST
        }
}

void *rescale_jobs_json(const struct rescale *r) {
        cJSON *arr = cJSON_CreateArray();
        for (size_t i = 0; arr && i < r->nc; i++) {
                const struct cluster *c = r->c[i];
                for (size_t k = 0; k < c->njobs; k++) {
                        const struct fjob *j = &c->jobs[k];
                        cJSON *o = cJSON_CreateObject(), *old, *nw;
                        if (!o)
                                break;
                        cJSON_AddItemToArray(arr, o);
                        cJSON_AddStringToObject(o, "namespace", c->ns);
                        cJSON_AddStringToObject(o, "cluster", c->app);
                        cJSON_AddStringToObject(o, "job_id", j->job->jid);
                        char v[16];
                        snprintf(v, sizeof v, "%u.%u", c->major, c->minor);
                        cJSON_AddStringToObject(o, "flink_version", v);
                        old = cJSON_AddObjectToObject(o, "old_bounds");
                        nw = cJSON_AddObjectToObject(o, "new_bounds");
                        for (size_t m = 0; m < j->norig; m++) {
                                cJSON *a = cJSON_AddArrayToObject(old, j->orig[m].vid);
                                cJSON_AddItemToArray(a, cJSON_CreateNumber(j->orig[m].lower));
                                cJSON_AddItemToArray(a, cJSON_CreateNumber(j->orig[m].upper));
                        }
                        for (size_t m = 0; m < j->nset; m++) {
                                cJSON *a = cJSON_AddArrayToObject(nw, j->set[m].vid);
                                cJSON_AddItemToArray(a, cJSON_CreateNumber(j->set[m].lower));
                                cJSON_AddItemToArray(a, cJSON_CreateNumber(j->set[m].upper));
                        }
                        cJSON_AddStringToObject(o, "outcome", c->degraded ? "degraded" : !j->put_ok ? "not_rescaled"
                                                             : j->verified ? "verified" : "not_verified");
                        cJSON_AddBoolToObject(o, "restored", j->restored);
                }
                if (c->degraded && !c->njobs) {
                        cJSON *o = cJSON_CreateObject();
                        cJSON_AddItemToArray(arr, o);
                        cJSON_AddStringToObject(o, "namespace", c->ns);
                        cJSON_AddStringToObject(o, "cluster", c->app);
                        cJSON_AddStringToObject(o, "outcome", "degraded");
                        cJSON_AddStringToObject(o, "reason", c->why);
                }
        }
        return arr;
}

bool rescale_busy(const struct rescale *r) {
        return r && r->inflight > 0;
}
