#include "metrics.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "macro.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(FILE *, fclose)

void metrics_buf_printf(struct metrics_buf *b, const char *fmt, ...) {
        va_list ap;
        int n;

        if (b->failed)
                return;
        for (;;) {
                size_t avail = b->cap - b->len;

                va_start(ap, fmt);
                n = vsnprintf(b->data ? b->data + b->len : NULL, avail, fmt, ap);
                va_end(ap);
                if (n < 0) {
                        b->failed = 1;
                        return;
                }
                if ((size_t) n < avail) {
                        b->len += (size_t) n;
                        return;
                }
                /* Grow geometrically so a scrape costs a handful of reallocs. */
                size_t want = b->len + (size_t) n + 1, cap = b->cap ? b->cap : 1024;
                while (cap < want)
                        cap *= 2;
                char *p = realloc(b->data, cap);
                if (!p) {
                        b->failed = 1;
                        return;
                }
                b->data = p;
                b->cap = cap;
        }
}

void metrics_buf_free(struct metrics_buf *b) {
        free(b->data);
        *b = (struct metrics_buf) {};
}

void metrics_header(struct metrics_buf *b, const char *name, const char *type, const char *help) {
        metrics_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Integers exactly; otherwise the shortest of %.9g/%.15g/%.17g that reads back
 * to the same double, because unix timestamps need more than 9 digits. */
static void format_value(double v, char *buf, size_t len) {
        if (isnan(v))
                snprintf(buf, len, "NaN");
        else if (isinf(v))
                snprintf(buf, len, v > 0 ? "+Inf" : "-Inf");
        else if (v == floor(v) && fabs(v) < 9007199254740992.0)
                snprintf(buf, len, "%.0f", v);
        else {
                static const int prec[] = { 9, 15, 17 };
                for (size_t i = 0; i < ELEMENTSOF(prec); i++) {
                        snprintf(buf, len, "%.*g", prec[i], v);
                        if (strtod(buf, NULL) == v)
                                break;
                }
        }
}

void metrics_sample(struct metrics_buf *b, const char *name, const char *labels, double value) {
        char v[32];

        format_value(value, v, sizeof(v));
        if (labels && *labels)
                metrics_buf_printf(b, "%s{%s} %s\n", name, labels, v);
        else
                metrics_buf_printf(b, "%s %s\n", name, v);
}

void metrics_escape_label(const char *in, char *out, size_t outlen) {
        size_t o = 0;

        if (outlen == 0)
                return;
        for (; in && *in; in++) {
                char c = *in, esc = c == '\\' ? '\\' : c == '"' ? '"' : c == '\n' ? 'n' : 0;
                size_t need = esc ? 2 : 1;

                /* Never split an escape: a lone backslash would eat the quote. */
                if (o + need > outlen - 1)
                        break;
                if (esc) {
                        out[o++] = '\\';
                        out[o++] = esc;
                } else
                        out[o++] = c;
        }
        out[o] = 0;
}

void metrics_histogram_observe(struct metrics_histogram *h, double v) {
        for (size_t i = 0; i < h->nbounds && i < METRICS_HISTOGRAM_MAX_BUCKETS; i++)
                if (v <= h->bounds[i]) {
                        h->buckets[i]++;
                        break;
                }
        h->count++;
        h->sum += v;
}

void metrics_histogram_write(struct metrics_buf *b, const char *name, const char *labels,
                             const struct metrics_histogram *h) {
        const char *sep = labels && *labels ? "," : "";
        char le[32];
        uint64_t cum = 0;

        if (!labels)
                labels = "";
        for (size_t i = 0; i < h->nbounds && i < METRICS_HISTOGRAM_MAX_BUCKETS; i++) {
                cum += h->buckets[i];
                format_value(h->bounds[i], le, sizeof(le));
                metrics_buf_printf(b, "%s_bucket{%s%sle=\"%s\"} %llu\n", name, labels, sep, le,
                                   (unsigned long long) cum);
        }
        metrics_buf_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
                           (unsigned long long) h->count);

        char n[128];
        snprintf(n, sizeof(n), "%s_sum", name);
        metrics_sample(b, n, labels, h->sum);
        snprintf(n, sizeof(n), "%s_count", name);
        metrics_sample(b, n, labels, (double) h->count);
}

/* Small /proc files fit one read; a short read is fine, they are generated whole. */
static int read_small(const char *path, char *buf, size_t len) {
        _cleanup_(fclosep) FILE *f = fopen(path, "re");
        if (!f)
                return -errno;
        size_t n = fread(buf, 1, len - 1, f);
        if (ferror(f))
                return -EIO;
        buf[n] = 0;
        return 0;
}

static int read_btime(unsigned long long *ret) {
        _cleanup_(fclosep) FILE *f = fopen("/proc/stat", "re");
        _cleanup_free_ char *line = NULL;
        size_t cap = 0;

        if (!f)
                return -errno;
        /* Line by line: the intr line alone can be many kilobytes. */
        while (getline(&line, &cap, f) >= 0)
                if (sscanf(line, "btime %llu", ret) == 1)
                        return 0;
        return -ENODATA;
}

static int count_fds(uint64_t *ret) {
        DIR *d = opendir("/proc/self/fd");
        struct dirent *de;
        uint64_t n = 0;

        if (!d)
                return -errno;
        while ((de = readdir(d)))
                /* Skip the directory's own descriptor: it is ours, not the agent's. */
                if (de->d_name[0] != '.' && atoi(de->d_name) != dirfd(d))
                        n++;
        closedir(d);
        *ret = n;
        return 0;
}

int metrics_process_read(struct metrics_process *ret) {
        struct metrics_process p = {};
        unsigned long long utime, stime, starttime, btime, size, resident;
        char buf[1024];
        struct rlimit rl;
        long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
        int r;

        if (tck <= 0 || page <= 0)
                return -EINVAL;

        r = read_small("/proc/self/stat", buf, sizeof(buf));
        if (r < 0)
                return r;
        /* comm may contain spaces and parentheses; fields resume after the last ')'. */
        const char *s = strrchr(buf, ')');
        if (!s || sscanf(s + 1,
                         " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d %llu",
                         &utime, &stime, &starttime) != 3)
                return -EBADMSG;

        r = read_small("/proc/self/statm", buf, sizeof(buf));
        if (r < 0)
                return r;
        if (sscanf(buf, "%llu %llu", &size, &resident) != 2)
                return -EBADMSG;

        r = read_btime(&btime);
        if (r < 0)
                return r;
        r = count_fds(&p.open_fds);
        if (r < 0)
                return r;
        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return -errno;

        p.cpu_seconds = (double) (utime + stime) / (double) tck;
        p.resident_bytes = (uint64_t) resident * (uint64_t) page;
        p.virtual_bytes = (uint64_t) size * (uint64_t) page;
        p.max_fds = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t) rl.rlim_cur;
        p.start_time = (double) btime + (double) starttime / (double) tck;
        *ret = p;
        return 0;
}
