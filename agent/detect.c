#include "detect.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "macro.h"

static const char *const paths[_EVENT_KIND_MAX] = {
        [EVENT_SPOT_INTERRUPTION] = "meta-data/spot/instance-action",
        [EVENT_REBALANCE] = "meta-data/events/recommendations/rebalance",
        [EVENT_SCHEDULED] = "meta-data/events/maintenance/scheduled",
        [EVENT_ASG_TERMINATION] = "meta-data/autoscaling/target-lifecycle-state",
};

const char *detect_path(enum event_kind k) { return k < _EVENT_KIND_MAX ? paths[k] : NULL; }

static void excerpt(const char *body, size_t len, char *buf, size_t buflen) {
        size_t j = 0;
        for (size_t i = 0; i < len && j + 1 < buflen; i++)
                buf[j++] = isprint((unsigned char) body[i]) ? body[i] : ' ';
        buf[j] = 0;
}

int detect_source(struct imds *imds, enum event_kind k, const char *instance, usec_t asg_grace,
                  struct detect_result *ret) {
        _cleanup_free_ char *body = NULL;
        size_t len = 0;
        int r;

        r = k < _EVENT_KIND_MAX ? imds_get(imds, paths[k], &body, &len) : -EINVAL;
        return detect_answer(k, r, body, len, instance, asg_grace, ret);
}

int detect_answer(enum event_kind k, int r, const char *body, size_t len, const char *instance,
                  usec_t asg_grace, struct detect_result *ret) {
        ret->n = 0;
        ret->state[0] = 0;
        ret->why = NULL;
        ret->excerpt[0] = 0;

        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;

        switch (k) {
        case EVENT_SPOT_INTERRUPTION: {
                struct imds_instance_action a;
                r = imds_parse_instance_action(body, len, &a, &ret->why);
                if (r >= 0) {
                        event_from_instance_action(&a, instance, &ret->events[0]);
                        ret->n = 1;
                }
                break;
        }
        case EVENT_REBALANCE: {
                time_t t;
                r = imds_parse_rebalance(body, len, &t, &ret->why);
                if (r >= 0) {
                        event_from_rebalance(t, instance, &ret->events[0]);
                        ret->n = 1;
                }
                break;
        }
        case EVENT_SCHEDULED: {
                struct imds_scheduled_event s[IMDS_SCHEDULED_MAX];
                size_t n;
                r = imds_parse_scheduled(body, len, s, IMDS_SCHEDULED_MAX, &n, &ret->why);
                if (r >= 0) {
                        for (size_t i = 0; i < n; i++)
                                event_from_scheduled(&s[i], instance, &ret->events[i]);
                        ret->n = n;
                }
                break;
        }
        case EVENT_ASG_TERMINATION:
                r = imds_parse_token_text(body, len, ret->state, sizeof ret->state, &ret->why);
                if (r >= 0 && strcmp(ret->state, "Terminated") == 0) {
                        event_from_lifecycle(ret->state, instance, time(NULL),
                                             (time_t) (asg_grace / USEC_PER_SEC), &ret->events[0]);
                        ret->n = 1;
                }
                break;
        default:
                return -EINVAL;
        }
        if (r < 0)
                excerpt(body, len, ret->excerpt, sizeof ret->excerpt);
        return r;
}
