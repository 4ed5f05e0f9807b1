/* A Flink JobManager REST simulator (adaptive scheduler model) for tests,
 * the demo and benchmarks: a real HTTP server (libmicrohttpd) on 127.0.0.1,
 * port 0. Every request is checked against the OpenAPI spec of the simulated
 * version (tests/sim/flink-specs/rest_v1_dispatcher.<major.minor>.yml): an
 * unknown path or method, a missing or mistyped body field is answered 400
 * (or 404/405 as Flink does) and counted as a violation. Behaviour follows
 * ../shared/docs/protocols.md §3. All setters are thread-safe. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct flink_sim;

struct flink_sim_options {
        const char *version;       /* "1.18.1", "1.20.0", "2.0.0" (default 1.18.1) */
        bool default_scheduler;    /* jobmanager.scheduler: default (PUT resource-requirements -> 500) */
        const char *scheduler;     /* jobmanager.scheduler as written in the configuration (default "adaptive"
                                    * or "default"); Flink reads it case-insensitively */
        unsigned checkpoint_ms;    /* how long a triggered checkpoint takes (default 50) */
        unsigned restart_ms;       /* RESTARTING -> RUNNING after a restart or rescale (default 100) */
        unsigned cooldown_ms;      /* 1.19+/2.x: scaling-interval.min / cooldown (default 0) */
        const char *spec_dir;      /* default: the folder of this file's flink-specs (compiled in) */
};

/* Loads the spec of the version's major.minor (-ENOENT: none vendored,
 * -EINVAL: unparsable version or spec) and listens on 127.0.0.1, port 0. */
int flink_sim_start(const struct flink_sim_options *o, struct flink_sim **ret);
/* Same on a given port (0: any), for the standalone flink-sim. */
int flink_sim_start_port(const struct flink_sim_options *o, uint16_t port, struct flink_sim **ret);
struct flink_sim *flink_sim_stop(struct flink_sim *s);
uint16_t flink_sim_port(const struct flink_sim *s);
void flink_sim_url(const struct flink_sim *s, char *buf, size_t len); /* "http://127.0.0.1:PORT" */

/* The cluster. A TaskManager id is the pod name (native mode) or
 * "<ip>:<port>-<6 hex>" (standalone); ip is the pod IP ("10.0.0.5"). Job and
 * vertex ids must be 32 lower-case hex chars, as Flink's (the spec check
 * rejects others in paths); a vertex starts with bounds [1, parallelism],
 * max_parallelism 0 means 128, slot_sharing_group NULL means "default". */
void flink_sim_add_taskmanager(struct flink_sim *s, const char *id, const char *ip, unsigned slots);
/* A running job; its vertices are added next. */
void flink_sim_add_job(struct flink_sim *s, const char *jid, const char *name);
void flink_sim_add_vertex(struct flink_sim *s, const char *jid, const char *vid, const char *name,
                          unsigned parallelism, unsigned max_parallelism, const char *slot_sharing_group);

/* The vertex's upper bound is -1 (no bound: up to its max parallelism),
 * as someone's earlier PUT left it; flink_sim_bounds() reports the max. */
void flink_sim_set_upper_unbounded(struct flink_sim *s, const char *jid, const char *vid);
/* A vertex whose subtasks have all finished (a bounded source in a
 * streaming job): while the job runs they count as FINISHED, not RUNNING. */
void flink_sim_set_vertex_finished(struct flink_sim *s, const char *jid, const char *vid);

/* A TaskManager left (its pod got SIGTERM: graceful disconnect). Jobs using
 * its slots restart on what remains, at min(upper bound, slots). */
void flink_sim_disconnect_taskmanager(struct flink_sim *s, const char *id_or_ip);
/* Same, matched by pod IP or name: convenience for an eviction hook. */
void flink_sim_pod_terminating(struct flink_sim *s, const char *pod_name, const char *pod_ip);

/* Faults: every request answers 503 (JobManager down: use flink_sim_stop
 * for refused); the next count PUTs of resource requirements answer 409. */
void flink_sim_set_down(struct flink_sim *s, bool down);
void flink_sim_put_conflicts(struct flink_sim *s, unsigned count);
/* Per-path faults: the next count requests whose path starts with prefix
 * (NULL or "": any) answer status (>= 100, with a Flink error body), or, for
 * the special values below, are dropped, delayed or get a spoilt answer (the
 * request itself is served). A new fault on the same prefix replaces the old
 * one; count 0 removes it. */
#define FLINK_SIM_DROP      1 /* close the connection without an answer */
#define FLINK_SIM_SLOW      2 /* answer after arg ms */
#define FLINK_SIM_MALFORMED 3 /* the body cut in half (JSON that does not parse) */
#define FLINK_SIM_OVERSIZED 4 /* the body replaced by arg bytes of JSON (default 16 MiB) */
#define FLINK_SIM_DRIP      5 /* the body sent one byte every arg ms (default 100) */
#define FLINK_SIM_CUT       6 /* whole length announced, the connection closed after half the body */
void flink_sim_fault(struct flink_sim *s, const char *prefix, int status, unsigned arg, unsigned count);
/* Makes a completed checkpoint look fresh (timestamp now) or old. */
void flink_sim_set_last_checkpoint_age(struct flink_sim *s, const char *jid, unsigned age_ms);

/* Observations. */
const char *flink_sim_job_state(struct flink_sim *s, const char *jid);   /* "RUNNING", "RESTARTING" (static); NULL: no such job */
unsigned flink_sim_vertex_parallelism(struct flink_sim *s, const char *jid, const char *vid);
void flink_sim_bounds(struct flink_sim *s, const char *jid, const char *vid, unsigned *lower, unsigned *upper);
unsigned flink_sim_checkpoints_triggered(struct flink_sim *s, const char *jid);
unsigned flink_sim_checkpoints_completed(struct flink_sim *s, const char *jid);
unsigned flink_sim_puts(struct flink_sim *s, const char *jid);       /* accepted PUTs of resource requirements */
unsigned flink_sim_restarts(struct flink_sim *s, const char *jid);   /* failovers (TaskManager loss), not rescales */
unsigned flink_sim_rescales(struct flink_sim *s, const char *jid);
/* Monotonic usec of the first accepted PUT for the job (0: none). */
uint64_t flink_sim_first_put(struct flink_sim *s, const char *jid);
unsigned flink_sim_violations(struct flink_sim *s);                  /* requests that broke the spec */
/* Answers given, by method (NULL: any) and status (0: any; a dropped request counts as 0). */
unsigned flink_sim_answers(struct flink_sim *s, const char *method, unsigned status);
/* 2xx answers of the simulator itself that do not match the spec's response
 * schema (minus its known flaws): a simulator bug, also told on stderr. */
unsigned flink_sim_bad_answers(struct flink_sim *s);
/* "METHOD path status" lines, the last 2000, with " violation: <what>" or
 * " unsimulated" (a spec path the simulator answers 501); free(). */
char *flink_sim_log(struct flink_sim *s);
