#include "status.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "metrics.h"

#ifndef SPOTD_VERSION
#define SPOTD_VERSION "0.0.0"
#endif
#ifndef SPOTD_GIT
#define SPOTD_GIT "unknown"
#endif

DEFINE_TRIVIAL_CLEANUP_FUNC(cJSON *, cJSON_Delete)

static const char *const source_names[_SOURCE_MAX] = {
        [SOURCE_SPOT] = "spot",         [SOURCE_REBALANCE] = "rebalance",
        [SOURCE_SCHEDULED] = "scheduled", [SOURCE_ASG] = "asg",
        [SOURCE_TOKEN] = "token",       [SOURCE_IDENTITY] = "identity",
        [SOURCE_OTHER] = "other",
};

static const char *const result_names[_RESULT_MAX] = {
        [RESULT_OK] = "ok",
        [RESULT_NOT_FOUND] = "not_found",
        [RESULT_UNAUTHORIZED] = "unauthorized",
        [RESULT_HTTP_ERROR] = "http_error",
        [RESULT_TIMEOUT] = "timeout",
        [RESULT_CONNECT_ERROR] = "connect_error",
        [RESULT_TOO_LARGE] = "too_large",
        [RESULT_ERROR] = "error",
};

const char *imds_source_to_string(enum imds_source s) {
        return (unsigned) s < _SOURCE_MAX ? source_names[s] : "other";
}

static int has_prefix(const char *s, const char *prefix) {
        return strncmp(s, prefix, strlen(prefix)) == 0;
}

enum imds_source imds_source_from_path(const char *path) {
        if (!path)
                return SOURCE_OTHER;
        if (has_prefix(path, "meta-data/spot/"))
                return SOURCE_SPOT;
        if (streq(path, "meta-data/events/recommendations/rebalance"))
                return SOURCE_REBALANCE;
        if (has_prefix(path, "meta-data/events/maintenance/"))
                return SOURCE_SCHEDULED;
        if (has_prefix(path, "meta-data/autoscaling/"))
                return SOURCE_ASG;
        if (streq(path, "api/token"))
                return SOURCE_TOKEN;
        if (streq(path, "meta-data/instance-id") || streq(path, "dynamic/instance-identity/document"))
                return SOURCE_IDENTITY;
        return SOURCE_OTHER;
}

const char *request_result_to_string(enum request_result r) {
        return (unsigned) r < _RESULT_MAX ? result_names[r] : "error";
}

enum request_result request_result_from(int err, _unused_ long status) {
        switch (err) {
        case 0:             return RESULT_OK;
        case -ENOENT:       return RESULT_NOT_FOUND;
        case -EACCES:       return RESULT_UNAUTHORIZED;
        case -EPROTO:       return RESULT_HTTP_ERROR;
        case -ETIMEDOUT:    return RESULT_TIMEOUT;
        case -ECONNREFUSED:
        case -EHOSTUNREACH:
        case -ECONNRESET:   return RESULT_CONNECT_ERROR;
        case -EFBIG:        return RESULT_TOO_LARGE;
        default:            return RESULT_ERROR;
        }
}

static const double duration_bounds[] = {
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
};

/* Everything the renderers read, kept apart from the lock so a snapshot is one
 * struct copy and rendering (allocations, /proc reads) happens unlocked. */
struct status_data {
        char node[256], instance_id[64], state[16], imds_mode[8];
        bool dry_run;
        usec_t poll_interval;

        uint64_t requests[_SOURCE_MAX][_RESULT_MAX];
        struct metrics_histogram duration;
        uint64_t parse_errors[_SOURCE_MAX];
        uint64_t notices[_EVENT_KIND_MAX];

        uint64_t polls;
        usec_t last_poll_realtime, last_poll_monotonic;
        bool imds_up;
        usec_t heartbeat; /* 0: none yet */

        struct status_event events[STATUS_RECENT_EVENTS]; /* oldest first */
        size_t n_events;
        uint64_t counters[_COUNT_MAX];
        double last_handling;
};

struct status {
        pthread_mutex_t lock;
        struct status_data d;
};

int status_new(struct status **ret) {
        struct status *s = calloc(1, sizeof(*s));

        if (!s)
                return -ENOMEM;
        pthread_mutex_init(&s->lock, NULL);
        snprintf(s->d.state, sizeof(s->d.state), "starting");
        s->d.duration.bounds = duration_bounds;
        s->d.duration.nbounds = ELEMENTSOF(duration_bounds);
        *ret = s;
        return 0;
}

struct status *status_free(struct status *s) {
        if (!s)
                return NULL;
        pthread_mutex_destroy(&s->lock);
        free(s);
        return NULL;
}

static pthread_mutex_t *lock(struct status *s) {
        pthread_mutex_lock(&s->lock);
        return &s->lock;
}
static void unlockp(pthread_mutex_t **m) {
        if (*m)
                pthread_mutex_unlock(*m);
}
/* Holds the lock until the end of the enclosing scope, early returns included. */
#define LOCK_GUARD(s) _cleanup_(unlockp) _unused_ pthread_mutex_t *_guard_ = lock(s)

void status_set_info(struct status *s, const char *node, const char *instance_id, bool dry_run,
                     usec_t poll_interval) {
        LOCK_GUARD(s);
        snprintf(s->d.node, sizeof(s->d.node), "%s", node ?: "");
        snprintf(s->d.instance_id, sizeof(s->d.instance_id), "%s", instance_id ?: "");
        s->d.dry_run = dry_run;
        s->d.poll_interval = poll_interval;
}

void status_set_state(struct status *s, const char *state) {
        LOCK_GUARD(s);
        snprintf(s->d.state, sizeof(s->d.state), "%s", state ?: "");
}

void status_set_imds_mode(struct status *s, const char *mode) {
        LOCK_GUARD(s);
        snprintf(s->d.imds_mode, sizeof(s->d.imds_mode), "%s", mode ?: "");
}

void status_imds_request(struct status *s, enum imds_source src, enum request_result r, usec_t duration) {
        if ((unsigned) src >= _SOURCE_MAX)
                src = SOURCE_OTHER;
        if ((unsigned) r >= _RESULT_MAX)
                r = RESULT_ERROR;
        LOCK_GUARD(s);
        s->d.requests[src][r]++;
        metrics_histogram_observe(&s->d.duration, (double) duration / USEC_PER_SEC);
}

void status_parse_error(struct status *s, enum imds_source src) {
        if ((unsigned) src >= _SOURCE_MAX)
                src = SOURCE_OTHER;
        LOCK_GUARD(s);
        s->d.parse_errors[src]++;
}

void status_notice(struct status *s, enum event_kind k) {
        if ((unsigned) k >= _EVENT_KIND_MAX)
                return;
        LOCK_GUARD(s);
        s->d.notices[k]++;
}

void status_poll_done(struct status *s, usec_t realtime, usec_t monotonic, bool imds_ok) {
        LOCK_GUARD(s);
        s->d.polls++;
        s->d.last_poll_realtime = realtime;
        s->d.last_poll_monotonic = monotonic;
        s->d.imds_up = imds_ok;
}

void status_count(struct status *s, enum status_counter c) {
        _cleanup_(unlockp) pthread_mutex_t *m = lock(s);
        if (c < _COUNT_MAX)
                s->d.counters[c]++;
}

void status_handling_seconds(struct status *s, double seconds) {
        _cleanup_(unlockp) pthread_mutex_t *m = lock(s);
        s->d.last_handling = seconds;
}

void status_heartbeat(struct status *s, usec_t monotonic) {
        /* 0 means "never"; a heartbeat at boot time 0 still counts. */
        LOCK_GUARD(s);
        s->d.heartbeat = monotonic ?: 1;
}

void status_upsert_event(struct status *s, const struct status_event *e) {
        LOCK_GUARD(s);
        struct status_data *d = &s->d;
        size_t i, victim = 0;

        for (i = 0; i < d->n_events; i++)
                if (strncmp(d->events[i].ev.id, e->ev.id, EVENT_ID_MAX) == 0)
                        break;
        if (i == STATUS_RECENT_EVENTS) {
                /* Oldest ended event goes first; only when all are active, the oldest. */
                bool found = false;
                for (size_t j = 0; j < d->n_events; j++)
                        if (d->events[j].ended && (!found || d->events[j].ended < d->events[victim].ended)) {
                                victim = j;
                                found = true;
                        }
                memmove(&d->events[victim], &d->events[victim + 1],
                        (d->n_events - victim - 1) * sizeof(d->events[0]));
                i = --d->n_events;
        }
        if (i == d->n_events)
                d->n_events++;
        d->events[i] = *e;
        d->events[i].ev.id[EVENT_ID_MAX - 1] = 0;
}

void status_refresh_event(struct status *s, const struct status_event *e) {
        {
                LOCK_GUARD(s);
                struct status_data *d = &s->d;
                for (size_t i = 0; i < d->n_events; i++) {
                        struct status_event *o = &d->events[i], keep;
                        if (strncmp(o->ev.id, e->ev.id, EVENT_ID_MAX) != 0)
                                continue;
                        keep = *o;
                        *o = *e;
                        o->ev.id[EVENT_ID_MAX - 1] = 0;
                        o->tl = keep.tl;
                        memcpy(o->outcome, keep.outcome, sizeof o->outcome);
                        /* The agent's phase is news only when it turns canceled or ended. */
                        if (!(e->ev.canceled && !keep.ev.canceled) && !(e->ended && !keep.ended))
                                memcpy(o->phase, keep.phase, sizeof o->phase);
                        return;
                }
        }
        status_upsert_event(s, e);
}

static void snapshot(struct status *s, struct status_data *ret) {
        LOCK_GUARD(s);
        *ret = s->d;
}

static void write_counter(struct metrics_buf *b, const char *name, const char *help, double v) {
        metrics_header(b, name, "counter", help);
        metrics_sample(b, name, NULL, v);
}

static void write_gauge(struct metrics_buf *b, const char *name, const char *help, double v) {
        metrics_header(b, name, "gauge", help);
        metrics_sample(b, name, NULL, v);
}

int status_render_metrics(struct status *s, char **ret, size_t *ret_len) {
        struct status_data snap, *d = &snap;
        struct metrics_buf b = {};
        struct metrics_process p;
        char labels[320], esc[2][128];
        int r;

        snapshot(s, d);

        metrics_escape_label(SPOTD_VERSION, esc[0], sizeof(esc[0]));
        metrics_escape_label(SPOTD_GIT, esc[1], sizeof(esc[1]));
        snprintf(labels, sizeof(labels), "version=\"%s\",git=\"%s\"", esc[0], esc[1]);
        metrics_header(&b, "spotd_build_info", "gauge", "Build version of the running agent.");
        metrics_sample(&b, "spotd_build_info", labels, 1);

        metrics_header(&b, "spotd_imds_requests_total", "counter",
                       "Requests sent to the instance metadata service, by source and result.");
        for (int src = 0; src < _SOURCE_MAX; src++)
                for (int res = 0; res < _RESULT_MAX; res++) {
                        /* The interruption sources' ok series exist from the start so rate() works. */
                        bool always = res == RESULT_OK && src <= SOURCE_TOKEN;
                        if (!d->requests[src][res] && !always)
                                continue;
                        snprintf(labels, sizeof(labels), "source=\"%s\",result=\"%s\"",
                                 source_names[src], result_names[res]);
                        metrics_sample(&b, "spotd_imds_requests_total", labels, (double) d->requests[src][res]);
                }

        metrics_header(&b, "spotd_imds_request_duration_seconds", "histogram",
                       "Duration of instance metadata service requests.");
        metrics_histogram_write(&b, "spotd_imds_request_duration_seconds", NULL, &d->duration);

        metrics_header(&b, "spotd_imds_parse_errors_total", "counter",
                       "Metadata answers that could not be parsed, by source.");
        for (int src = 0; src < _SOURCE_MAX; src++) {
                snprintf(labels, sizeof(labels), "source=\"%s\"", source_names[src]);
                metrics_sample(&b, "spotd_imds_parse_errors_total", labels, (double) d->parse_errors[src]);
        }

        metrics_header(&b, "spotd_notices_total", "counter", "Interruption notices first seen, by kind.");
        for (int k = 0; k < _EVENT_KIND_MAX; k++) {
                metrics_escape_label(event_kind_to_string(k), esc[0], sizeof(esc[0]));
                snprintf(labels, sizeof(labels), "kind=\"%s\"", esc[0]);
                metrics_sample(&b, "spotd_notices_total", labels, (double) d->notices[k]);
        }

        size_t active = 0;
        for (size_t i = 0; i < d->n_events; i++)
                active += d->events[i].ended == 0;

        write_gauge(&b, "spotd_last_poll_timestamp_seconds", "Unix time the last poll round ended.",
                    (double) d->last_poll_realtime / USEC_PER_SEC);
        write_counter(&b, "spotd_polls_total", "Poll rounds completed.", (double) d->polls);
        write_gauge(&b, "spotd_imds_up", "Whether the last poll round reached the metadata service.",
                    d->imds_up);
        write_gauge(&b, "spotd_active_events", "Interruption events currently active.", (double) active);
        write_gauge(&b, "spotd_dry_run", "Whether the agent only reports what it would do.", d->dry_run);

        /* Handling outcomes: one family per step, the result as a label. */
        static const struct { const char *name, *help; int first, n; const char *const results[3]; } families[] = {
                { "spotd_evictions_total", "TaskManager evictions by result.", COUNT_EVICTION_ACCEPTED, 3,
                  { "accepted", "blocked", "deleted" } },
                { "spotd_checkpoints_total", "Checkpoints before evictions by result.", COUNT_CHECKPOINT_COMPLETED, 3,
                  { "completed", "failed", "skipped_fresh" } },
                { "spotd_rescales_total", "In-place rescales by outcome.", COUNT_RESCALE_VERIFIED, 3,
                  { "verified", "not_verified", "degraded" } },
                { "spotd_webhook_deliveries_total", "Webhook deliveries by result.", COUNT_WEBHOOK_OK, 2, { "ok", "failed" } },
        };
        for (size_t f = 0; f < ELEMENTSOF(families); f++) {
                metrics_header(&b, families[f].name, "counter", families[f].help);
                for (int i = 0; i < families[f].n; i++) {
                        snprintf(labels, sizeof(labels), "result=\"%s\"", families[f].results[i]);
                        metrics_sample(&b, families[f].name, labels, (double) d->counters[families[f].first + i]);
                }
        }
        write_counter(&b, "spotd_restores_total", "Jobs whose original bounds were restored.", (double) d->counters[COUNT_RESTORED]);
        write_counter(&b, "spotd_events_handled_total", "Events handled to the end.", (double) d->counters[COUNT_EVENTS_HANDLED]);
        write_gauge(&b, "spotd_last_handling_seconds", "Seconds from notice to done of the last handled event.", d->last_handling);

        r = metrics_process_read(&p);
        if (r >= 0) {
                write_counter(&b, "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
                              p.cpu_seconds);
                write_gauge(&b, "process_resident_memory_bytes", "Resident memory size in bytes.",
                            (double) p.resident_bytes);
                write_gauge(&b, "process_virtual_memory_bytes", "Virtual memory size in bytes.",
                            (double) p.virtual_bytes);
                write_gauge(&b, "process_open_fds", "Number of open file descriptors.", (double) p.open_fds);
                write_gauge(&b, "process_max_fds", "Maximum number of open file descriptors.", (double) p.max_fds);
                write_gauge(&b, "process_start_time_seconds",
                            "Start time of the process since unix epoch in seconds.", p.start_time);
        }

        if (b.failed || !b.data) {
                metrics_buf_free(&b);
                return -ENOMEM;
        }
        *ret_len = b.len;
        *ret = b.data;
        return 0;
}

/* Adds a string, or null when empty. NULL on allocation failure. */
static cJSON *add_str(cJSON *o, const char *k, const char *v) {
        return v && *v ? cJSON_AddStringToObject(o, k, v) : cJSON_AddNullToObject(o, k);
}

static cJSON *add_time(cJSON *o, const char *k, time_t t) {
        char buf[32];

        if (!t)
                return cJSON_AddNullToObject(o, k);
        format_rfc3339(t, buf, sizeof(buf));
        return cJSON_AddStringToObject(o, k, buf);
}

static cJSON *add_time_usec(cJSON *o, const char *k, usec_t t) {
        char buf[32];

        if (!t)
                return cJSON_AddNullToObject(o, k);
        format_rfc3339_usec(t, buf, sizeof(buf));
        return cJSON_AddStringToObject(o, k, buf);
}

static cJSON *event_json(const struct status_event *e, usec_t now_real) {
        _cleanup_(cJSON_Deletep) cJSON *o = cJSON_CreateObject();
        time_t now = (time_t) (now_real / USEC_PER_SEC);
        bool ok;

        if (!o)
                return NULL;
        ok = add_str(o, "id", e->ev.id) &&
             cJSON_AddStringToObject(o, "kind", event_kind_to_string(e->ev.kind)) &&
             add_str(o, "detail", e->ev.detail) &&
             cJSON_AddBoolToObject(o, "canceled", e->ev.canceled) &&
             add_time(o, "notice_time", e->ev.notice_time) &&
             add_time(o, "deadline", e->ev.deadline) &&
             (e->ev.deadline ? cJSON_AddNumberToObject(o, "seconds_left",
                                                       e->ev.deadline > now ? (double) (e->ev.deadline - now) : 0)
                             : cJSON_AddNullToObject(o, "seconds_left")) &&
             add_str(o, "phase", e->phase) &&
             add_time_usec(o, "first_seen", e->first_seen) &&
             add_time_usec(o, "last_seen", e->last_seen) &&
             add_time_usec(o, "ended", e->ended) &&
             add_str(o, "outcome", e->outcome);
        cJSON *tl = ok ? cJSON_AddObjectToObject(o, "timeline") : NULL;
        static const char *const names[] = { "fenced", "checkpoint_done", "first_eviction", "last_eviction_accepted",
                                             "bounds_lowered", "running_at_new_parallelism", "pods_gone",
                                             "bounds_restored", "done" };
        const usec_t *t = &e->tl.fenced;
        for (size_t i = 0; tl && i < ELEMENTSOF(names); i++)
                if (t[i] && !add_time_usec(tl, names[i], t[i]))
                        ok = false;
        return ok && tl ? TAKE_PTR(o) : NULL;
}

int status_render_json(struct status *s, char **ret, size_t *ret_len) {
        struct status_data snap, *d = &snap;
        _cleanup_(cJSON_Deletep) cJSON *o = NULL;
        usec_t now_mono = now_monotonic(), now_real = now_realtime();
        const struct status_event *cur = NULL;
        cJSON *arr;
        bool ok;

        snapshot(s, d);

        /* Current: the newest still-active event (later entries win ties). */
        for (size_t i = 0; i < d->n_events; i++)
                if (!d->events[i].ended && (!cur || d->events[i].first_seen >= cur->first_seen))
                        cur = &d->events[i];

        o = cJSON_CreateObject();
        if (!o)
                return -ENOMEM;
        ok = add_str(o, "state", d->state) &&
             add_str(o, "node", d->node) &&
             add_str(o, "instance_id", d->instance_id) &&
             cJSON_AddBoolToObject(o, "dry_run", d->dry_run) &&
             add_str(o, "imds_mode", d->imds_mode) &&
             cJSON_AddNumberToObject(o, "poll_interval_seconds", (double) d->poll_interval / USEC_PER_SEC) &&
             add_time_usec(o, "last_poll", d->last_poll_realtime) &&
             (d->polls ? cJSON_AddNumberToObject(o, "last_poll_age_seconds",
                                                 now_mono > d->last_poll_monotonic
                                                         ? (double) ((now_mono - d->last_poll_monotonic) / USEC_PER_MSEC) / 1000
                                                         : 0)
                       : cJSON_AddNullToObject(o, "last_poll_age_seconds")) &&
             cJSON_AddBoolToObject(o, "imds_up", d->imds_up) &&
             cJSON_AddNumberToObject(o, "polls", (double) d->polls);
        if (!ok)
                return -ENOMEM;

        if (cur) {
                cJSON *e = event_json(cur, now_real);
                if (!e)
                        return -ENOMEM;
                cJSON_AddItemToObject(o, "current_event", e);
                ok = add_str(o, "phase", cur->phase);
        } else
                ok = cJSON_AddNullToObject(o, "current_event") && cJSON_AddNullToObject(o, "phase");
        if (!ok)
                return -ENOMEM;

        arr = cJSON_AddArrayToObject(o, "events");
        if (!arr)
                return -ENOMEM;
        for (size_t i = 0; i < d->n_events; i++) {
                cJSON *e = event_json(&d->events[i], now_real);
                if (!e)
                        return -ENOMEM;
                cJSON_AddItemToArray(arr, e);
        }

        char *text = cJSON_PrintUnformatted(o);
        if (!text)
                return -ENOMEM;
        *ret_len = strlen(text);
        *ret = text;
        return 0;
}

static usec_t live_window(usec_t poll_interval) {
        usec_t w = 5 * poll_interval;
        return w > 10 * USEC_PER_SEC ? w : 10 * USEC_PER_SEC;
}

static void set_why(char *why, size_t whylen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_why(char *why, size_t whylen, const char *fmt, ...) {
        va_list ap;

        if (!why || whylen == 0)
                return;
        va_start(ap, fmt);
        vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
}

static bool live_locked(const struct status_data *d, usec_t now, char *why, size_t whylen) {
        /* Before the first heartbeat the agent is starting, which is alive. */
        if (d->heartbeat && now > d->heartbeat && now - d->heartbeat >= live_window(d->poll_interval)) {
                set_why(why, whylen, "main loop stalled for %.1f s",
                        (double) (now - d->heartbeat) / USEC_PER_SEC);
                return false;
        }
        set_why(why, whylen, "ok");
        return true;
}

bool status_live(struct status *s, usec_t now, char *why, size_t whylen) {
        LOCK_GUARD(s);
        return live_locked(&s->d, now, why, whylen);
}

bool status_ready(struct status *s, usec_t now, char *why, size_t whylen) {
        LOCK_GUARD(s);
        if (!live_locked(&s->d, now, why, whylen))
                return false;
        if (!s->d.polls) {
                set_why(why, whylen, "no poll completed yet");
                return false;
        }
        if (!s->d.imds_up) {
                set_why(why, whylen, "metadata service unreachable in last poll");
                return false;
        }
        set_why(why, whylen, "ready");
        return true;
}
