/* A strict EC2 instance metadata service simulator for tests, the demo and
 * benchmarks: a real HTTP server (libmicrohttpd, own thread) on 127.0.0.1,
 * port 0. Every setter is thread-safe and takes effect on the next request.
 *
 * Behaviour follows ../shared/docs/protocols.md §1 and AWS's own metadata
 * mock: JSON pretty-printed with TABs and no trailing newline, 404/401 bodies
 * are XHTML with Content-Type "text/plain; charset=utf-8". */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct imds_sim;

enum imds_sim_token_mode {
        SIM_TOKEN_OK,       /* PUT /latest/api/token works */
        SIM_TOKEN_403,      /* PUT answers 403 (IMDSv2 disabled by policy) */
        SIM_TOKEN_405,      /* PUT answers 405 */
        SIM_TOKEN_HANG,     /* PUT never answers within the client's timeout (sleeps 3 s) */
};

enum imds_sim_fault {
        SIM_FAULT_NONE,
        SIM_FAULT_500,        /* 500 with an XHTML body */
        SIM_FAULT_SLOW,       /* answer normally after fault_arg milliseconds */
        SIM_FAULT_RESET,      /* close the connection without an answer */
        SIM_FAULT_MALFORMED,  /* 200 with a JSON body cut in half */
        SIM_FAULT_OVERSIZED,  /* 200 with a body of fault_arg bytes (default 1 MiB) */
        SIM_FAULT_401,        /* 401 even with a valid token */
        SIM_FAULT_SLOW_DRIP,  /* 200 body sent one byte every fault_arg ms */
        SIM_FAULT_403,        /* 403 with an XHTML body (metadata access turned off) */
        SIM_FAULT_RESET_BODY, /* 200, whole length announced, the connection closed after half the body */
};

struct imds_sim_options {
        bool require_v2;         /* GET without a valid token -> 401 */
        enum imds_sim_token_mode token_mode;
        unsigned max_token_ttl;  /* cap on the TTL granted (0: 21600) */
        const char *instance_id; /* default "i-0123456789abcdef0" */
        /* Answer with the headers a real instance sends: Accept-Ranges,
         * Last-Modified, Date, Server, the token's remaining TTL on answers to
         * a request that carried one, and Connection: close (a real instance
         * closes the connection after every answer, keep-alive asked or not). */
        bool real_headers;
};

/* Starts on 127.0.0.1 with an ephemeral port. 0 or -errno. NULL options:
 * defaults (v1 and v2 both allowed, tokens work). */
int imds_sim_start(const struct imds_sim_options *o, struct imds_sim **ret);
/* The same on a fixed port (0: ephemeral), for the standalone imds-sim. */
int imds_sim_start_port(const struct imds_sim_options *o, uint16_t port, struct imds_sim **ret);
struct imds_sim *imds_sim_stop(struct imds_sim *s);
uint16_t imds_sim_port(const struct imds_sim *s);
/* "http://127.0.0.1:PORT" into buf. */
void imds_sim_url(const struct imds_sim *s, char *buf, size_t len);

void imds_sim_set_require_v2(struct imds_sim *s, bool require);
void imds_sim_set_token_mode(struct imds_sim *s, enum imds_sim_token_mode m);
/* Invalidates every token handed out so far (as if they expired). */
void imds_sim_expire_tokens(struct imds_sim *s);

/* Pending notices. delay_ms: the notice appears that many ms from now
 * (0: at once). A NULL / 0 value clears it at once.
 * spot: action "terminate"/"stop"/"hibernate", time = notice time; the
 * simulator serves both spot/instance-action and spot/termination-time.
 * when 0 (with an action): 120 s after the notice becomes visible. */
void imds_sim_set_spot(struct imds_sim *s, const char *action, time_t when, unsigned delay_ms);
/* When true, the instance-action "time" is recomputed as now+120s on every
 * request, as the real service may do until the notice is final. */
void imds_sim_set_spot_time_drift(struct imds_sim *s, bool drift);
void imds_sim_set_rebalance(struct imds_sim *s, time_t notice_time, unsigned delay_ms);
/* When true, the rebalance "noticeTime" is recomputed as now on every
 * request, as AWS's own metadata mock does. */
void imds_sim_set_rebalance_time_drift(struct imds_sim *s, bool drift);
/* The raw JSON served at events/maintenance/scheduled (served pretty-printed
 * as given; NULL: 404; "[]" allowed). */
void imds_sim_set_scheduled_json(struct imds_sim *s, const char *json, unsigned delay_ms);
/* Appends one scheduled event; times are unix seconds, formatted as
 * "21 Jan 2019 09:00:43 GMT". */
void imds_sim_add_scheduled(struct imds_sim *s, const char *code, const char *state,
                            const char *event_id, time_t not_before, time_t not_after);
void imds_sim_clear_scheduled(struct imds_sim *s);
/* autoscaling/target-lifecycle-state: NULL -> 404, else "InService", "Terminated", ... */
void imds_sim_set_lifecycle(struct imds_sim *s, const char *state);

/* Fault for requests whose path (after /latest/) starts with prefix (NULL or
 * "": every path, token PUT included). count: how many requests it hits
 * (0: until cleared). Only one fault is active at a time. */
void imds_sim_set_fault(struct imds_sim *s, const char *prefix, enum imds_sim_fault f,
                        unsigned arg, unsigned count);
void imds_sim_clear_fault(struct imds_sim *s);

/* Counters since start. path NULL: all GETs. */
uint64_t imds_sim_requests(struct imds_sim *s, const char *path);
uint64_t imds_sim_token_requests(struct imds_sim *s);
uint64_t imds_sim_unauthorized(struct imds_sim *s);
/* TCP connections accepted, to check keep-alive reuse. */
uint64_t imds_sim_connections(struct imds_sim *s);
/* The IMDSv2 session tokens handed out and still kept (the last 64), one a
 * line, malloc'ed: to check that none reaches spotd's output. */
char *imds_sim_tokens(struct imds_sim *s);
/* Realtime (usec) at which the current spot notice became visible, 0 if none. */
uint64_t imds_sim_spot_visible_since(struct imds_sim *s);
