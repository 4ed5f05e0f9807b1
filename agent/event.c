#include "event.h"

#include <stdio.h>
#include <string.h>

static const char *const kind_names[_EVENT_KIND_MAX] = {
        [EVENT_SPOT_INTERRUPTION] = "spot-interruption",
        [EVENT_REBALANCE] = "rebalance-recommendation",
        [EVENT_SCHEDULED] = "scheduled-maintenance",
        [EVENT_ASG_TERMINATION] = "asg-termination",
};

static const char *const action_names[_ACTION_MAX] = {
        [ACTION_IGNORE] = "ignore",
        [ACTION_CORDON] = "cordon",
        [ACTION_HANDLE] = "handle",
};

const char *event_kind_to_string(enum event_kind k) {
        return k < _EVENT_KIND_MAX ? kind_names[k] : "unknown";
}

int event_kind_from_string(const char *s) {
        for (int i = 0; i < _EVENT_KIND_MAX; i++)
                if (strcmp(s, kind_names[i]) == 0)
                        return i;
        return -1;
}

const char *event_action_to_string(enum event_action a) {
        return a < _ACTION_MAX ? action_names[a] : "unknown";
}

int event_action_from_string(const char *s) {
        for (int i = 0; i < _ACTION_MAX; i++)
                if (strcmp(s, action_names[i]) == 0)
                        return i;
        return -1;
}

/* Ids are built from the kind and what identifies the notice to AWS: the
 * instance and the action (spot: the time may be recomputed on every poll
 * until the notice is final, so it is not part of the id), the maintenance
 * EventId; the instance alone for a rebalance recommendation, of which EC2
 * issues one per instance (a service may recompute its noticeTime on every
 * answer, as AWS's own mock does). A restarted agent computes the same id. */
void event_from_instance_action(const struct imds_instance_action *a, const char *instance,
                                struct event *ret) {
        *ret = (struct event) { .kind = EVENT_SPOT_INTERRUPTION, .deadline = a->time,
                                .notice_time = 0 /* payload carries none: first seen */ };
        snprintf(ret->id, sizeof ret->id, "spot-%s-%s", instance, a->action);
        snprintf(ret->detail, sizeof ret->detail, "%s", a->action);
}

void event_from_rebalance(time_t notice, const char *instance, struct event *ret) {
        *ret = (struct event) { .kind = EVENT_REBALANCE, .notice_time = notice };
        snprintf(ret->id, sizeof ret->id, "rebalance-%s", instance);
        snprintf(ret->detail, sizeof ret->detail, "rebalance");
}

void event_from_scheduled(const struct imds_scheduled_event *s, const char *instance,
                          struct event *ret) {
        *ret = (struct event) {
                .kind = EVENT_SCHEDULED,
                .deadline = s->not_before,
                .notice_time = 0,
                .canceled = strcmp(s->state, "canceled") == 0 || strcmp(s->state, "completed") == 0,
        };
        /* EventIds are unique per instance already; the instance makes them
         * unique across the cluster in logs that mix nodes. */
        snprintf(ret->id, sizeof ret->id, "maintenance-%s-%s", instance, s->event_id);
        snprintf(ret->detail, sizeof ret->detail, "%s", s->code);
}

void event_from_lifecycle(const char *state, const char *instance, time_t now, time_t grace,
                          struct event *ret) {
        *ret = (struct event) { .kind = EVENT_ASG_TERMINATION, .notice_time = now,
                                .deadline = now + grace };
        snprintf(ret->id, sizeof ret->id, "asg-%s-terminated", instance);
        snprintf(ret->detail, sizeof ret->detail, "%s", state);
}

bool event_scheduled_code_is_disruptive(const char *code) {
        /* system-maintenance is network/power work the instance survives. */
        return strcmp(code, "instance-stop") == 0 || strcmp(code, "instance-retirement") == 0 ||
               strcmp(code, "instance-reboot") == 0 || strcmp(code, "system-reboot") == 0;
}
