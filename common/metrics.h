/* Prometheus text exposition helpers and process statistics. No registry and
 * no globals: the caller owns its counters and writes them out. */
#pragma once
#include <stddef.h>
#include <stdint.h>

/* A growable text buffer; on allocation failure it latches failed and drops
 * further writes, so renderers need not check every call. */
struct metrics_buf {
        char *data;
        size_t len, cap;
        int failed;
};
void metrics_buf_printf(struct metrics_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void metrics_buf_free(struct metrics_buf *b);

/* "# HELP name help\n# TYPE name type\n" */
void metrics_header(struct metrics_buf *b, const char *name, const char *type, const char *help);
/* name{labels} value — labels is preformatted `a="x",b="y"` or NULL; values
 * are printed exactly for integers, %.9g otherwise. */
void metrics_sample(struct metrics_buf *b, const char *name, const char *labels, double value);
/* Escapes a label value (\\, \", \n) into out; truncates to outlen-1. */
void metrics_escape_label(const char *in, char *out, size_t outlen);

#define METRICS_HISTOGRAM_MAX_BUCKETS 16
struct metrics_histogram {
        const double *bounds; /* ascending upper bounds, +Inf implied */
        size_t nbounds;       /* <= METRICS_HISTOGRAM_MAX_BUCKETS */
        uint64_t buckets[METRICS_HISTOGRAM_MAX_BUCKETS]; /* non-cumulative */
        uint64_t count;
        double sum;
};
void metrics_histogram_observe(struct metrics_histogram *h, double v);
/* Writes _bucket (cumulative, with le), _sum and _count lines. */
void metrics_histogram_write(struct metrics_buf *b, const char *name, const char *labels,
                             const struct metrics_histogram *h);

struct metrics_process {
        double cpu_seconds;      /* user + system */
        uint64_t resident_bytes;
        uint64_t virtual_bytes;
        uint64_t open_fds;
        uint64_t max_fds;
        double start_time;       /* unix seconds */
};
/* Reads /proc/self. Returns 0 or -errno. */
int metrics_process_read(struct metrics_process *ret);
