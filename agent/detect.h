/* Reads one event source from the metadata service and turns its answer
 * into events. Shared by the daemon's poll loop and `spotd check`. */
#pragma once
#include <stddef.h>

#include "event.h"
#include "imds.h"

struct detect_result {
        struct event events[IMDS_SCHEDULED_MAX];
        size_t n;
        char state[32];      /* asg: the lifecycle state as served ("" if 404) */
        const char *why;     /* on a parse error: what was wrong */
        char excerpt[80];    /* on a parse error: the start of the body, printable */
};

/* The IMDS path (relative to /latest/) of a source. */
const char *detect_path(enum event_kind k);

/* 0 when the source answered (404 included: no events); the imds_get()
 * -errno for transport and HTTP failures; -EBADMSG/-EINVAL/-ENODATA/-E2BIG
 * for a body that does not parse (ret->why says why). asg_grace is the
 * deadline assumed for an ASG termination. */
int detect_source(struct imds *imds, enum event_kind k, const char *instance, usec_t asg_grace,
                  struct detect_result *ret);

/* The second half of detect_source(), for an answer fetched already (with
 * imds_get_many()): r, body and len as imds_get() returned them. */
int detect_answer(enum event_kind k, int r, const char *body, size_t len, const char *instance,
                  usec_t asg_grace, struct detect_result *ret);
