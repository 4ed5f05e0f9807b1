/* Apache Flink REST API (JobManager) payloads: parsers for every answer spotd
 * reads and builders for what it sends (protocols.md §3). No transport and
 * no policy. Parsers return 0, -EBADMSG for malformed JSON, -ENODATA for a
 * missing field, -EINVAL for a bad value, -E2BIG past a bound; outputs are
 * untouched on failure. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FLINK_ID_LEN 32          /* job and vertex ids: 32 hex */
#define FLINK_MAX_JOBS 32
#define FLINK_MAX_VERTICES 128
#define FLINK_MAX_TMS 512

/* The first message of {"errors":[...]} into buf ("" if none). */
void flink_parse_errors(const char *body, size_t len, char *buf, size_t buflen);

struct flink_overview {
        char version[32];
        unsigned taskmanagers, slots_total, slots_available;
};
int flink_parse_overview(const char *body, size_t len, struct flink_overview *ret);
/* "1.18.1" -> 1, 18. 0 or -EINVAL. */
int flink_version_parse(const char *v, unsigned *ret_major, unsigned *ret_minor);

struct flink_job_ref {
        char jid[FLINK_ID_LEN + 1];
        char state[24];
};
int flink_parse_jobs_overview(const char *body, size_t len, struct flink_job_ref *ret, size_t max, size_t *ret_n);

struct flink_vertex {
        char id[FLINK_ID_LEN + 1];
        char ssg[FLINK_ID_LEN + 1];   /* slot-sharing group; "" when the version does not say */
        unsigned parallelism, max_parallelism;
        unsigned tasks_total, tasks_running, tasks_finished;
};
struct flink_job {
        char jid[FLINK_ID_LEN + 1];
        char state[24];
        struct flink_vertex v[FLINK_MAX_VERTICES];
        size_t nv;
};
int flink_parse_job(const char *body, size_t len, struct flink_job *ret);

struct flink_tm {
        char id[256];
        char ip[48];                  /* from "path" (standalone ids); "" if none */
        unsigned slots, free_slots;
};
int flink_parse_taskmanagers(const char *body, size_t len, struct flink_tm *ret, size_t max, size_t *ret_n);

struct flink_bounds {
        char vid[FLINK_ID_LEN + 1];
        unsigned lower, upper;
};
int flink_parse_requirements(const char *body, size_t len, struct flink_bounds *ret, size_t max, size_t *ret_n);
/* {"<vid>":{"parallelism":{"lowerBound":L,"upperBound":U}},...}; *ret malloc'ed. */
int flink_format_requirements(const struct flink_bounds *b, size_t n, char **ret);

/* jobmanager/config: the value of jobmanager.scheduler ("" when unset, which
 * means the default scheduler). */
int flink_parse_scheduler(const char *body, size_t len, char *buf, size_t buflen);

int flink_parse_trigger(const char *body, size_t len, char *ret_request_id, size_t idlen);

enum flink_checkpoint_state { FLINK_CKPT_IN_PROGRESS, FLINK_CKPT_COMPLETED, FLINK_CKPT_FAILED };
int flink_parse_checkpoint_status(const char *body, size_t len, enum flink_checkpoint_state *ret,
                                  uint64_t *ret_id, char *why, size_t whylen);
/* jobs/{jid}/checkpoints: the latest completed checkpoint's time (unix ms),
 * or 0 when there is none. */
int flink_parse_checkpoints(const char *body, size_t len, int64_t *ret_ms);

/* True for [0-9a-f]{32}: safe to put in a URL path. */
bool flink_id_valid(const char *id);
