#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

#include "timeutil.h"

#define LINE_MAX_BYTES 4096

/* The logger is process state by nature (one stderr, one journal). */
static struct {
        enum log_format format;
        bool journal;
        int max_priority;
        char node[254];
} L = { .max_priority = LOG_INFO };

static const char *const prio_names[] = { "emerg", "alert", "crit", "err", "warning",
                                          "notice", "info", "debug" };

int log_level_from_string(const char *s) {
        for (int i = 0; i < 8; i++)
                if (strcmp(s, prio_names[i]) == 0)
                        return i;
        if (strcmp(s, "error") == 0)
                return LOG_ERR;
        if (strcmp(s, "warn") == 0)
                return LOG_WARNING;
        return -1;
}

static bool is_socket(const char *p) {
        struct stat st;
        return stat(p, &st) == 0 && S_ISSOCK(st.st_mode);
}

void log_setup(enum log_target t, enum log_format f, int max_priority, const char *socket_path) {
        const char *sock = socket_path ? socket_path : "/run/systemd/journal/socket";
        L.format = f;
        L.max_priority = max_priority;
        /* sd_journal_send() reports success even with no journald listening,
         * so the socket is checked up front. */
        L.journal = t != LOG_TARGET_STDERR && is_socket(sock);
        if (t == LOG_TARGET_JOURNAL && !L.journal)
                log_warning("log target journal requested but %s is not a socket; logging to stderr", sock);
}

bool log_is_journal(void) { return L.journal; }

void log_set_node(const char *node) {
        snprintf(L.node, sizeof L.node, "%s", node ? node : "");
}

/* Appends s to buf as JSON string content, or, for text, with control
 * characters replaced so an entry never spans lines. */
static size_t append_escaped(char *buf, size_t pos, size_t cap, const char *s, bool json) {
        for (; *s && pos + 7 < cap; s++) {
                unsigned char c = (unsigned char) *s;
                if (json && (c == '"' || c == '\\')) {
                        buf[pos++] = '\\';
                        buf[pos++] = (char) c;
                } else if (c < 0x20 || c == 0x7f) {
                        if (json)
                                pos += (size_t) snprintf(buf + pos, cap - pos, "\\u%04x", c);
                        else
                                buf[pos++] = ' ';
                } else
                        buf[pos++] = (char) c;
        }
        buf[pos] = 0;
        return pos;
}

static size_t append_raw(char *buf, size_t pos, size_t cap, const char *s) {
        size_t n = strlen(s);
        if (pos + 1 >= cap)
                return pos;
        if (pos + n >= cap)
                n = cap - pos - 1;
        memcpy(buf + pos, s, n);
        buf[pos + n] = 0;
        return pos + n;
}

struct field { const char *journal, *key, *value; };

static void write_stderr(int priority, const char *message_id, const struct field *fields,
                         size_t nfields, const char *msg) {
        char line[LINE_MAX_BYTES], ts[40];
        size_t p = 0, cap = sizeof line - 1; /* room for the newline */
        bool json = L.format == LOG_FORMAT_JSON;

        format_rfc3339_usec(now_realtime(), ts, sizeof ts);
        if (json) {
                p = append_raw(line, p, cap, "{\"ts\":\"");
                p = append_raw(line, p, cap, ts);
                p = append_raw(line, p, cap, "\",\"level\":\"");
                p = append_raw(line, p, cap, prio_names[priority & 7]);
                p = append_raw(line, p, cap, "\",\"msg\":\"");
                p = append_escaped(line, p, cap, msg, true);
                p = append_raw(line, p, cap, "\"");
                if (message_id) {
                        p = append_raw(line, p, cap, ",\"message_id\":\"");
                        p = append_raw(line, p, cap, message_id);
                        p = append_raw(line, p, cap, "\"");
                }
                for (size_t i = 0; i < nfields; i++) {
                        p = append_raw(line, p, cap, ",\"");
                        p = append_raw(line, p, cap, fields[i].key);
                        p = append_raw(line, p, cap, "\":\"");
                        p = append_escaped(line, p, cap, fields[i].value, true);
                        p = append_raw(line, p, cap, "\"");
                }
                p = append_raw(line, p, cap, "}");
        } else {
                p += (size_t) snprintf(line, cap, "%s %-7s ", ts, prio_names[priority & 7]);
                p = append_escaped(line, p, cap, msg, false);
                for (size_t i = 0; i < nfields; i++) {
                        p = append_raw(line, p, cap, " ");
                        p = append_raw(line, p, cap, fields[i].key);
                        p = append_raw(line, p, cap, "=");
                        p = append_escaped(line, p, cap, fields[i].value, false);
                }
        }
        if (p > cap)
                p = cap;
        line[p++] = '\n';
        /* One write per entry: lines from one process never interleave. */
        while (write(STDERR_FILENO, line, p) < 0 && errno == EINTR)
                ;
}

static int write_journal(int priority, const char *message_id, const struct field *fields,
                         size_t nfields, const char *msg) {
        char mbuf[LINE_MAX_BYTES / 2 + 16], bufs[16][LINE_MAX_BYTES / 4 + 32];
        struct iovec iov[17];
        size_t n = 0;

        snprintf(mbuf, sizeof mbuf, "MESSAGE=%s", msg);
        iov[0] = (struct iovec) { .iov_base = mbuf, .iov_len = strlen(mbuf) };
        snprintf(bufs[n++], sizeof bufs[0], "PRIORITY=%d", priority & 7);
        snprintf(bufs[n++], sizeof bufs[0], "SYSLOG_IDENTIFIER=spotd");
        if (message_id)
                snprintf(bufs[n++], sizeof bufs[0], "MESSAGE_ID=%s", message_id);
        for (size_t i = 0; i < nfields && n < ELEMENTSOF(bufs); i++)
                snprintf(bufs[n++], sizeof bufs[0], "%s=%s", fields[i].journal, fields[i].value);
        for (size_t i = 0; i < n; i++)
                iov[i + 1] = (struct iovec) { .iov_base = bufs[i], .iov_len = strlen(bufs[i]) };
        return sd_journal_sendv(iov, (int) n + 1);
}

void log_full(int priority, const char *message_id, const struct log_ctx *ctx, const char *fmt, ...) {
        char msg[LINE_MAX_BYTES / 2];
        struct field fields[8];
        size_t nf = 0;
        va_list ap;
        int saved = errno;

        if ((priority & 7) > L.max_priority)
                return;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);

        struct log_ctx c = ctx ? *ctx : (struct log_ctx) {};
        if (!c.node && L.node[0])
                c.node = L.node;
#define F(member, jname, kname) if (c.member && c.member[0]) fields[nf++] = (struct field) { jname, kname, c.member }
        F(event_id, "SPOTD_EVENT_ID", "event_id");
        F(kind, "SPOTD_KIND", "kind");
        F(phase, "SPOTD_PHASE", "phase");
        F(node, "SPOTD_NODE", "node");
        F(pod, "SPOTD_POD", "pod");
        F(namespace_, "SPOTD_NAMESPACE", "namespace");
        F(flink_cluster, "SPOTD_FLINK_CLUSTER", "flink_cluster");
        F(job_id, "SPOTD_JOB_ID", "job_id");
#undef F
        if (!L.journal || write_journal(priority, message_id, fields, nf, msg) < 0)
                write_stderr(priority, message_id, fields, nf, msg);
        errno = saved;
}
