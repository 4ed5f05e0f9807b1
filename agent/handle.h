/* Handling one interruption on the Kubernetes side (design.md steps 1-3, 6
 * and 9): fence the node, find its TaskManager pods, evict them concurrently
 * and wait until they are gone; undo the fence when an event is canceled. A
 * state machine driven by the main loop: no call blocks. Every step is
 * recorded in node annotations, so a restarted agent resumes. */
#pragma once
#include <stdbool.h>

#include "config.h"
#include "event.h"
#include "k8s.h"
#include "status.h"

/* Node annotations and taint (the contract with operators and restarts). */
#define ANN_PREFIX     "spotd.io/"
#define ANN_EVENT_ID   "spotd.io/event-id"
#define ANN_KIND       "spotd.io/kind"
#define ANN_PHASE      "spotd.io/phase"
#define ANN_DEADLINE   "spotd.io/deadline"
#define ANN_FENCED_AT  "spotd.io/fenced-at"
#define ANN_CORDONED   "spotd.io/cordoned"   /* "true": spotd set spec.unschedulable */
#define TAINT_KEY      "spotd.io/interruption"

struct handler;

/* k8s may be NULL (no API configured): then the handler only logs what it
 * would do. Returns 0 or -ENOMEM. */
int handler_new(const struct config *cfg, struct k8s *k, struct status *st, struct handler **ret);
struct handler *handler_free(struct handler *h);

/* Reads the node once at start: remembers a fence left by an earlier run
 * (resume, or undo when the instance came back). Asynchronous. */
void handler_start(struct handler *h);

/* A new or updated event the agent should act on (action from the config). */
void handler_event(struct handler *h, const struct event *e, enum event_action action);
/* The event was canceled or the notice is gone for good: undo spotd's fence
 * if that event set it. */
void handler_cancel(struct handler *h, const struct event *e);
/* After a poll round: the ids of every event IMDS serves right now, so an
 * annotated event that is no longer served after a reboot can be undone. */
void handler_round(struct handler *h, const char *const *ids, size_t n);

/* True while an event is being worked on (requests or steps pending). */
bool handler_busy(const struct handler *h);

/* Advances timers (retries, deadlines, pod-gone checks). */
void handler_tick(struct handler *h);
/* Monotonic time at which handler_tick() is next needed (UINT64_MAX: none). */
usec_t handler_next_wakeup(const struct handler *h);
