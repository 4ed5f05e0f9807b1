/* Client for the EC2 instance metadata service (IMDS) and parsers for the
 * payloads it serves. No policy: callers decide what a notice means.
 *
 * The client speaks HTTP/1.1 itself on plain sockets (http:// endpoints
 * only: the service has no TLS), not through libcurl, whose per-request
 * cost was most of spotd's idle CPU. Requests reuse kept-alive connections
 * (a real instance closes each one after its answer), and imds_get_many()
 * sends a poll round's requests at once. It speaks IMDSv2
 * (session token, refreshed before expiry and on 401) and falls back to
 * IMDSv1 when the token PUT fails, retrying v2 with backoff rather than on
 * every request. Not thread-safe. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "timeutil.h"

enum imds_mode {
        IMDS_MODE_AUTO,    /* v2, fall back to v1 when the token PUT fails */
        IMDS_MODE_V2_ONLY, /* never send a request without a token */
        IMDS_MODE_V1_ONLY, /* never ask for a token */
};

/* Called once per HTTP request sent (token PUTs included). path is relative to
 * /latest/ ("api/token", "meta-data/spot/instance-action"); err is 0 or the
 * -errno the request ended with; status is the HTTP status or 0. */
typedef void (*imds_observe_t)(void *userdata, const char *path, int err,
                               long status, usec_t duration);

struct imds_options {
        const char *endpoint;     /* "http://169.254.169.254"; copied */
        enum imds_mode mode;
        unsigned token_ttl;       /* seconds, 1..21600 */
        usec_t timeout;           /* total, per request */
        usec_t connect_timeout;
        size_t max_body;          /* larger answers fail with -EFBIG */
        usec_t v2_retry_min;      /* first wait before retrying v2 after a failed PUT */
        usec_t v2_retry_max;
        imds_observe_t observe;   /* may be NULL */
        void *userdata;
};

/* Fills in the defaults (endpoint, auto, 21600 s, 1 s, 250 ms, 64 KiB, 5 s, 5 min). */
void imds_options_default(struct imds_options *o);

struct imds;

/* Returns 0, -EINVAL for a bad option, -ENOMEM. */
int imds_new(const struct imds_options *o, struct imds **ret);
struct imds *imds_free(struct imds *c);

/* GETs /latest/<path>. On 200 returns 0 and a NUL-terminated body the caller
 * frees. 404 -> -ENOENT; 401 that survives one token refresh -> -EACCES;
 * other statuses -> -EPROTO (see imds_last_status()); oversized -> -EFBIG;
 * transport errors: -ETIMEDOUT, -ECONNREFUSED, -EHOSTUNREACH, -ECONNRESET
 * (closed before a whole answer), -EIO (an answer that is not HTTP/1.x or
 * whose framing is broken), -ENOMEM. */
int imds_get(struct imds *c, const char *path, char **ret_body, size_t *ret_len);

/* One request of imds_get_many(). */
struct imds_answer {
        const char *path; /* in: relative to /latest/ */
        int r;            /* out: what imds_get() would return for it */
        long status;      /* out: HTTP status of its last request (or of a failed token PUT), 0 if none */
        char *body;       /* out when r == 0: NUL-terminated, the caller frees */
        size_t len;
};
#define IMDS_GET_MANY_MAX 8

/* imds_get() for up to IMDS_GET_MANY_MAX paths at once, each on a connection
 * of its own: one wait for all the answers instead of one per request, and
 * one token refresh for all those answered 401. Returns 0 with every
 * answer's outcome set, or -EINVAL when n is too large. */
int imds_get_many(struct imds *c, struct imds_answer *a, size_t n);

long imds_last_status(const struct imds *c);
/* True while requests carry a session token. */
bool imds_using_token(const struct imds *c);

/* ---- payload parsers. Each takes the body as served (pretty-printed or
 * compact JSON, with or without a trailing newline), returns 0, -EBADMSG for
 * malformed input or -ENODATA / -EINVAL for a missing or bad field, and on
 * failure sets *ret_why (if non-NULL) to a static text naming what was wrong.
 * Outputs are untouched on failure. */

struct imds_instance_action {
        char action[16]; /* "terminate", "stop", "hibernate" (others kept as given) */
        time_t time;
};
int imds_parse_instance_action(const char *body, size_t len,
                               struct imds_instance_action *ret, const char **ret_why);

/* spot/termination-time: a bare RFC 3339 time (older path). */
int imds_parse_termination_time(const char *body, size_t len, time_t *ret, const char **ret_why);

/* events/recommendations/rebalance: {"noticeTime": "..."}. */
int imds_parse_rebalance(const char *body, size_t len, time_t *ret, const char **ret_why);

struct imds_scheduled_event {
        char code[32];        /* instance-reboot, system-reboot, system-maintenance, instance-retirement, instance-stop */
        char state[16];       /* active, canceled, completed */
        char event_id[64];    /* instance-event-0123456789abcdef0 */
        char description[128];/* truncated */
        time_t not_before;
        time_t not_after;     /* 0 if absent */
        time_t not_before_deadline; /* 0 if absent */
};
#define IMDS_SCHEDULED_MAX 16
/* events/maintenance/scheduled: a JSON array (possibly empty). At most max
 * entries are returned; more is -E2BIG. */
int imds_parse_scheduled(const char *body, size_t len, struct imds_scheduled_event *ret,
                         size_t max, size_t *ret_n, const char **ret_why);

/* Plain-text values (autoscaling/target-lifecycle-state, instance-id): trims
 * surrounding whitespace, requires [A-Za-z0-9._:-]{1,len-1}. */
int imds_parse_token_text(const char *body, size_t len, char *ret, size_t retlen, const char **ret_why);

struct imds_identity {
        char instance_id[32];
        char instance_type[32];
        char availability_zone[32];
        char region[32];
};
/* dynamic/instance-identity/document. */
int imds_parse_identity(const char *body, size_t len, struct imds_identity *ret, const char **ret_why);
