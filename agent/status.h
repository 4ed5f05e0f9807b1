/* The agent's published state: counters for /metrics and a snapshot for
 * /status, /healthz and /readyz. Written by the main loop, read by the HTTP
 * server thread; every function takes the internal mutex, so both sides may
 * call them freely. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "event.h"
#include "timeutil.h"

enum imds_source {
        SOURCE_SPOT, SOURCE_REBALANCE, SOURCE_SCHEDULED, SOURCE_ASG,
        SOURCE_TOKEN, SOURCE_IDENTITY, SOURCE_OTHER,
        _SOURCE_MAX,
};
/* "spot", "rebalance", "scheduled", "asg", "token", "identity", "other" */
const char *imds_source_to_string(enum imds_source s);
/* Maps a path relative to /latest/ to its source. */
enum imds_source imds_source_from_path(const char *path);

enum request_result {
        RESULT_OK, RESULT_NOT_FOUND, RESULT_UNAUTHORIZED, RESULT_HTTP_ERROR,
        RESULT_TIMEOUT, RESULT_CONNECT_ERROR, RESULT_TOO_LARGE, RESULT_ERROR,
        _RESULT_MAX,
};
/* "ok", "not_found", "unauthorized", "http_error", "timeout", "connect_error", "too_large", "error" */
const char *request_result_to_string(enum request_result r);
/* From the (err, status) pair an imds_observe_t receives. */
enum request_result request_result_from(int err, long status);

#define STATUS_RECENT_EVENTS 8

/* The handling of an event, as it happened (realtime usec, 0: not reached). */
struct status_timeline {
        usec_t fenced, checkpoint_done, first_eviction, last_eviction_accepted, bounds_lowered, running_at_new,
                pods_gone, bounds_restored, done;
};

struct status_event {
        struct event ev;
        struct status_timeline tl;
        char outcome[160]; /* summary once done */
        char phase[24];    /* "detected", "canceled", "cleared", later handling phases */
        usec_t first_seen; /* realtime */
        usec_t last_seen;  /* realtime */
        usec_t ended;      /* realtime; 0 while active */
};

struct status;

int status_new(struct status **ret);
struct status *status_free(struct status *s);

/* Static facts, set once at start. Strings are copied. */
void status_set_info(struct status *s, const char *node, const char *instance_id, bool dry_run,
                     usec_t poll_interval);
/* "starting", "watching", "handling", "handled" (fenced, nothing pending), "stopping" */
void status_set_state(struct status *s, const char *state);
void status_set_imds_mode(struct status *s, const char *mode); /* "v2", "v1" */

void status_imds_request(struct status *s, enum imds_source src, enum request_result r, usec_t duration);
void status_parse_error(struct status *s, enum imds_source src);
void status_notice(struct status *s, enum event_kind k);
/* End of a poll round. imds_ok: at least one answer came from the metadata
 * service this round (404 counts: the service is there). */
void status_poll_done(struct status *s, usec_t realtime, usec_t monotonic, bool imds_ok);
/* Main loop liveness, called on every loop iteration. */
void status_heartbeat(struct status *s, usec_t monotonic);
/* Inserts or updates (by ev.id) one of the recent events; the oldest ended
 * event is dropped when full. */
void status_upsert_event(struct status *s, const struct status_event *e);
/* The poll loop's update of an event already listed: what the metadata
 * service says (deadline, canceled, last seen, ended) is taken, the
 * handler's timeline and outcome are kept, and so is its phase unless the
 * event has just turned canceled or ended. Inserts like status_upsert_event
 * if absent. */
void status_refresh_event(struct status *s, const struct status_event *e);

enum status_counter {
        COUNT_EVICTION_ACCEPTED, COUNT_EVICTION_BLOCKED, COUNT_POD_DELETED,
        COUNT_CHECKPOINT_COMPLETED, COUNT_CHECKPOINT_FAILED, COUNT_CHECKPOINT_SKIPPED,
        COUNT_RESCALE_VERIFIED, COUNT_RESCALE_NOT_VERIFIED, COUNT_RESCALE_DEGRADED, COUNT_RESTORED,
        COUNT_EVENTS_HANDLED, COUNT_WEBHOOK_OK, COUNT_WEBHOOK_FAILED,
        _COUNT_MAX,
};
void status_count(struct status *s, enum status_counter c);
/* Seconds from notice to done of the last handled event. */
void status_handling_seconds(struct status *s, double seconds);

/* Renderers for the HTTP thread; *ret is malloc'ed. 0 or -ENOMEM. */
int status_render_metrics(struct status *s, char **ret, size_t *ret_len);
int status_render_json(struct status *s, char **ret, size_t *ret_len);
/* Liveness: the loop has iterated within max(10 s, 5 poll intervals).
 * Readiness: live, and the last poll round reached the metadata service.
 * why (may be NULL) receives a one-line reason. */
bool status_live(struct status *s, usec_t now_monotonic, char *why, size_t whylen);
bool status_ready(struct status *s, usec_t now_monotonic, char *why, size_t whylen);
