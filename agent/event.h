/* Interruption events: what the metadata service told us, with a stable id. */
#pragma once
#include <stdbool.h>
#include <time.h>

#include "imds.h"
#include "timeutil.h"

enum event_kind {
        EVENT_SPOT_INTERRUPTION,
        EVENT_REBALANCE,
        EVENT_SCHEDULED,
        EVENT_ASG_TERMINATION,
        _EVENT_KIND_MAX,
};

/* What the agent does about an event kind (design.md: handle, cordon only, ignore). */
enum event_action { ACTION_IGNORE, ACTION_CORDON, ACTION_HANDLE, _ACTION_MAX };

#define EVENT_ID_MAX 96

struct event {
        char id[EVENT_ID_MAX];  /* stable: kind + identity, never the poll time */
        enum event_kind kind;
        char detail[32];        /* spot action, maintenance code, lifecycle state */
        bool canceled;          /* scheduled event canceled or completed */
        time_t notice_time;     /* when AWS issued it, if known, else first seen; the agent keeps the first value */
        time_t deadline;        /* when the instance goes away (0: none) */
};

/* "spot-interruption", "rebalance-recommendation", "scheduled-maintenance",
 * "asg-termination" — used as SPOTD_KIND, metric label and taint value. */
const char *event_kind_to_string(enum event_kind k);
int event_kind_from_string(const char *s);
const char *event_action_to_string(enum event_action a);
int event_action_from_string(const char *s);

/* Builders from parsed payloads. instance is the instance id (or, when it is
 * unknown, the node name) that makes ids unique across nodes. now is used for
 * kinds whose payload carries no time. */
void event_from_instance_action(const struct imds_instance_action *a, const char *instance, struct event *ret);
void event_from_rebalance(time_t notice, const char *instance, struct event *ret);
void event_from_scheduled(const struct imds_scheduled_event *s, const char *instance, struct event *ret);
void event_from_lifecycle(const char *state, const char *instance, time_t now, time_t grace, struct event *ret);

/* Whether a maintenance code ends with the instance gone or rebooted (full
 * handling) rather than nothing the node notices. */
bool event_scheduled_code_is_disruptive(const char *code);
