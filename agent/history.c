#include "history.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include "macro.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(cJSON *, cJSON_Delete)

/* Field values longer than this are cut (pod names and the like are at most
 * 253 bytes; event ids are far shorter). */
#define FIELD_MAX 256

/* One journal entry of an event. Strings are malloc'ed, NULL when absent. */
struct entry {
        usec_t realtime;
        int priority;
        char *event_id, *message_id, *message, *kind, *phase, *node, *pod, *namespace_, *flink_cluster, *job_id;
        long event;   /* index into the timelines, -1 while unassigned */
};

struct timeline {
        const char *id, *key_node, *kind, *node, *last_phase;
        usec_t first, last;
        size_t n;
        long index;   /* what the entries' event field holds */
};

/* The entries read so far: a ring holding the newest HISTORY_ENTRIES_MAX. */
struct history {
        struct entry *ring;
        size_t start, n;
        size_t dropped;        /* older entries pushed out of the ring */
        size_t without_event;  /* spotd entries that belong to no event */
};

static const char *const level_names[] = { "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug" };

static void entry_clear(struct entry *e) {
        free(e->event_id);
        free(e->message_id);
        free(e->message);
        free(e->kind);
        free(e->phase);
        free(e->node);
        free(e->pod);
        free(e->namespace_);
        free(e->flink_cluster);
        free(e->job_id);
        *e = (struct entry) { .event = -1 };
}

static struct entry *history_at(struct history *h, size_t i) {
        return &h->ring[(h->start + i) % HISTORY_ENTRIES_MAX];
}

static void history_clear(struct history *h) {
        if (!h->ring)
                return;
        for (size_t i = 0; i < h->n; i++)
                entry_clear(history_at(h, i));
        free(h->ring);
        h->ring = NULL;
}

int history_parse_since(const char *s, usec_t now, usec_t *ret_usec) {
        char buf[80];
        time_t t;
        usec_t d;

        if (!s || !*s || strlen(s) >= sizeof buf)
                return -EINVAL;
        if (parse_rfc3339(s, &t) == 0) {
                if (t < 0)
                        return -EINVAL;
                *ret_usec = (usec_t) t * USEC_PER_SEC;
                return 0;
        }
        snprintf(buf, sizeof buf, "%s", s);
        size_t n = strlen(buf);
        if (n > 4 && strcmp(buf + n - 4, " ago") == 0)
                buf[n - 4] = 0;
        if (parse_duration(buf, &d) < 0 || d > now)
                return -EINVAL;
        *ret_usec = now - d;
        return 0;
}

/* A copy of the field's value, cut at max bytes (on a character boundary,
 * marked with "...") and with control characters blanked, so that a table
 * row stays one line. NULL when the entry lacks the field. */
static char *field_dup(sd_journal *j, const char *field, size_t max) {
        const void *data;
        size_t len, fl = strlen(field);

        if (sd_journal_get_data(j, field, &data, &len) < 0 || len <= fl || ((const char *) data)[fl] != '=')
                return NULL;
        const char *v = (const char *) data + fl + 1;
        len -= fl + 1;
        bool cut = len > max;
        if (cut) {
                len = max;
                while (len > 0 && ((unsigned char) v[len] & 0xC0) == 0x80)
                        len--; /* do not split a UTF-8 sequence */
        }
        char *s = malloc(len + 4);
        if (!s)
                return NULL;
        for (size_t i = 0; i < len; i++)
                s[i] = (unsigned char) v[i] < 0x20 || v[i] == 0x7f ? ' ' : v[i];
        strcpy(s + len, cut ? "..." : "");
        return s;
}

/* Reads the current entry into the ring; entries without an event id are
 * only counted. */
static int history_add(struct history *h, sd_journal *j, usec_t realtime) {
        char *id = field_dup(j, "SPOTD_EVENT_ID", FIELD_MAX);
        if (!id) {
                h->without_event++;
                return 0;
        }
        struct entry *e;
        if (h->n == HISTORY_ENTRIES_MAX) {
                e = history_at(h, 0);
                entry_clear(e);
                h->start = (h->start + 1) % HISTORY_ENTRIES_MAX;
                h->dropped++;
        } else
                e = history_at(h, h->n++);
        *e = (struct entry) {
                .realtime = realtime, .priority = LOG_INFO, .event = -1, .event_id = id,
                .message_id = field_dup(j, "MESSAGE_ID", 32),
                .message = field_dup(j, "MESSAGE", HISTORY_MESSAGE_MAX),
                .kind = field_dup(j, "SPOTD_KIND", FIELD_MAX),
                .phase = field_dup(j, "SPOTD_PHASE", FIELD_MAX),
                .node = field_dup(j, "SPOTD_NODE", FIELD_MAX),
                .pod = field_dup(j, "SPOTD_POD", FIELD_MAX),
                .namespace_ = field_dup(j, "SPOTD_NAMESPACE", FIELD_MAX),
                .flink_cluster = field_dup(j, "SPOTD_FLINK_CLUSTER", FIELD_MAX),
                .job_id = field_dup(j, "SPOTD_JOB_ID", FIELD_MAX),
        };
        _cleanup_free_ char *prio = field_dup(j, "PRIORITY", 2);
        if (prio && prio[0] >= '0' && prio[0] <= '7' && !prio[1])
                e->priority = prio[0] - '0';
        return 0;
}

static int history_open(const struct config *cfg, sd_journal **ret, FILE *err) {
        sd_journal *j = NULL;
        int r;

        if (cfg->history_file[0]) {
                const char *files[] = { cfg->history_file, NULL };
                if (access(cfg->history_file, R_OK) < 0)
                        r = -errno;
                else
                        r = sd_journal_open_files(&j, files, 0);
                if (r < 0)
                        fprintf(err, "spotd: cannot open journal file \"%s\" (--file): %s\n", cfg->history_file, strerror(-r));
        } else if (cfg->history_directory[0]) {
                r = sd_journal_open_directory(&j, cfg->history_directory, 0);
                if (r < 0)
                        fprintf(err, "spotd: cannot open journal directory \"%s\" (--directory): %s\n",
                                cfg->history_directory, strerror(-r));
        } else {
                r = sd_journal_open(&j, SD_JOURNAL_LOCAL_ONLY);
                if (r < 0)
                        fprintf(err, "spotd: cannot open the journal: %s\n", strerror(-r));
        }
        if (r < 0)
                return r;
        *ret = j;
        return 0;
}

static int history_read(const struct config *cfg, sd_journal *j, usec_t since, struct history *h, FILE *err) {
        char match[300];
        int r;

        r = sd_journal_add_match(j, "SYSLOG_IDENTIFIER=spotd", 0);
        if (r >= 0 && cfg->history_node[0]) {
                snprintf(match, sizeof match, "SPOTD_NODE=%s", cfg->history_node);
                r = sd_journal_add_match(j, match, 0);
        }
        if (r >= 0)
                r = since ? sd_journal_seek_realtime_usec(j, since) : sd_journal_seek_head(j);
        while (r >= 0 && (r = sd_journal_next(j)) > 0) {
                uint64_t t;
                r = sd_journal_get_realtime_usec(j, &t);
                if (r < 0)
                        break;
                if (t < since) /* the seek lands near, not exactly at, the time */
                        continue;
                r = history_add(h, j, t);
        }
        if (r < 0) {
                fprintf(err, "spotd: cannot read the journal: %s\n", strerror(-r));
                return r;
        }
        return 0;
}

/* Assigns the entries to timelines, newest events first so that the cap on
 * timelines drops the oldest; returns how many timelines there are. Entries
 * of dropped timelines keep event -1 and are counted. */
static size_t history_group(struct history *h, struct timeline *tl, size_t *ret_dropped) {
        size_t n = 0, dropped = 0;

        for (size_t i = h->n; i-- > 0;) {
                struct entry *e = history_at(h, i);
                size_t k;
                /* An event is one node's: ids name the instance, but a
                 * journal gathered from many nodes may hold look-alikes. */
                for (k = 0; k < n; k++)
                        if (strcmp(tl[k].id, e->event_id) == 0 && streq_ptr(tl[k].key_node, e->node))
                                break;
                if (k == n) {
                        if (n == HISTORY_EVENTS_MAX) {
                                dropped++;
                                continue;
                        }
                        tl[n++] = (struct timeline) { .id = e->event_id, .key_node = e->node, .last = e->realtime,
                                                      .last_phase = e->phase, .index = (long) k };
                }
                e->event = (long) k;
                tl[k].first = e->realtime;
                tl[k].n++;
                /* Walking backwards: the earliest kind and node win. */
                if (e->kind)
                        tl[k].kind = e->kind;
                if (e->node)
                        tl[k].node = e->node;
                if (!tl[k].last_phase)
                        tl[k].last_phase = e->phase;
        }
        *ret_dropped = dropped;
        return n;
}

static int timeline_cmp(const void *a, const void *b) {
        const struct timeline *x = a, *y = b;
        return x->first < y->first ? -1 : x->first > y->first ? 1 : strcmp(x->id, y->id);
}

static void print_text(FILE *out, struct history *h, const struct timeline *tl, size_t n) {
        char ts[40], first[40], last[40];

        for (size_t k = 0; k < n; k++) {
                const struct timeline *t = &tl[k];
                format_rfc3339_usec(t->first, first, sizeof first);
                format_rfc3339_usec(t->last, last, sizeof last);
                fprintf(out, "%s%s (%s) on node %s: %zu entries, %s to %s (%.3fs), last phase %s\n", k ? "\n" : "",
                        t->id, t->kind ? t->kind : "unknown kind", t->node ? t->node : "?", t->n, first, last,
                        (double) (t->last - t->first) / USEC_PER_SEC, t->last_phase ? t->last_phase : "-");
                fprintf(out, "  %-24s  %9s  %-7s  %-12s  %s\n", "TIME", "+SECONDS", "LEVEL", "PHASE", "MESSAGE");
                for (size_t i = 0; i < h->n; i++) {
                        const struct entry *e = history_at(h, i);
                        if (e->event != t->index)
                                continue;
                        format_rfc3339_usec(e->realtime, ts, sizeof ts);
                        fprintf(out, "  %-24s  %9.3f  %-7s  %-12s  %s\n", ts, (double) (e->realtime - t->first) / USEC_PER_SEC,
                                level_names[e->priority & 7], e->phase ? e->phase : "-", e->message ? e->message : "");
                }
        }
}

static void add_str(cJSON *o, const char *k, const char *v) {
        if (v)
                cJSON_AddStringToObject(o, k, v);
}

static int print_json(FILE *out, struct history *h, const struct timeline *tl, size_t n, size_t dropped_events) {
        char ts[40];
        _cleanup_(cJSON_Deletep) cJSON *root = cJSON_CreateObject();
        cJSON *events = cJSON_AddArrayToObject(root, "events");

        for (size_t k = 0; k < n; k++) {
                const struct timeline *t = &tl[k];
                cJSON *ev = cJSON_CreateObject();
                cJSON_AddItemToArray(events, ev);
                add_str(ev, "event_id", t->id);
                add_str(ev, "kind", t->kind);
                add_str(ev, "node", t->node);
                format_rfc3339_usec(t->first, ts, sizeof ts);
                cJSON_AddStringToObject(ev, "first", ts);
                format_rfc3339_usec(t->last, ts, sizeof ts);
                cJSON_AddStringToObject(ev, "last", ts);
                cJSON_AddNumberToObject(ev, "seconds", (double) (t->last - t->first) / USEC_PER_SEC);
                add_str(ev, "last_phase", t->last_phase);
                cJSON *entries = cJSON_AddArrayToObject(ev, "entries");
                for (size_t i = 0; i < h->n; i++) {
                        const struct entry *e = history_at(h, i);
                        if (e->event != t->index)
                                continue;
                        cJSON *o = cJSON_CreateObject();
                        cJSON_AddItemToArray(entries, o);
                        format_rfc3339_usec(e->realtime, ts, sizeof ts);
                        cJSON_AddStringToObject(o, "time", ts);
                        cJSON_AddNumberToObject(o, "realtime_usec", (double) e->realtime);
                        cJSON_AddNumberToObject(o, "offset_seconds", (double) (e->realtime - t->first) / USEC_PER_SEC);
                        cJSON_AddNumberToObject(o, "priority", e->priority);
                        cJSON_AddStringToObject(o, "level", level_names[e->priority & 7]);
                        add_str(o, "phase", e->phase);
                        add_str(o, "message_id", e->message_id);
                        add_str(o, "message", e->message);
                        add_str(o, "kind", e->kind);
                        add_str(o, "node", e->node);
                        add_str(o, "pod", e->pod);
                        add_str(o, "namespace", e->namespace_);
                        add_str(o, "flink_cluster", e->flink_cluster);
                        add_str(o, "job_id", e->job_id);
                }
        }
        cJSON_AddNumberToObject(root, "entries", (double) h->n);
        cJSON_AddNumberToObject(root, "dropped_entries", (double) h->dropped);
        cJSON_AddNumberToObject(root, "dropped_event_entries", (double) dropped_events);
        cJSON_AddNumberToObject(root, "entries_without_event", (double) h->without_event);
        _cleanup_free_ char *s = cJSON_Print(root);
        if (!s)
                return -ENOMEM;
        fprintf(out, "%s\n", s);
        return 0;
}

int history_run(const struct config *cfg, FILE *out, FILE *err) {
        _cleanup_(sd_journal_closep) sd_journal *j = NULL;
        _cleanup_free_ struct timeline *tl = NULL;
        struct history h = {};
        usec_t since = 0;
        size_t n, dropped_events;
        int ret = 1;

        if (cfg->history_file[0] && cfg->history_directory[0]) {
                fprintf(err, "spotd: --file and --directory exclude each other\n");
                return 2;
        }
        if (cfg->history_since[0] && history_parse_since(cfg->history_since, now_realtime(), &since) < 0) {
                fprintf(err, "spotd: invalid value \"%.64s\" for --since: expected an RFC 3339 time such as "
                             "2026-11-25T12:00:00Z or a duration before now such as 2h or 30m\n",
                        cfg->history_since);
                return 2;
        }
        if (history_open(cfg, &j, err) < 0)
                return 1;
        h.ring = calloc(HISTORY_ENTRIES_MAX, sizeof *h.ring);
        tl = calloc(HISTORY_EVENTS_MAX, sizeof *tl);
        if (!h.ring || !tl) {
                fprintf(err, "spotd: out of memory\n");
                goto finish;
        }
        if (history_read(cfg, j, since, &h, err) < 0)
                goto finish;

        n = history_group(&h, tl, &dropped_events);
        /* Timelines in the order their events began. */
        qsort(tl, n, sizeof *tl, timeline_cmp);

        if (cfg->output == OUTPUT_JSON) {
                if (print_json(out, &h, tl, n, dropped_events) < 0) {
                        fprintf(err, "spotd: out of memory\n");
                        goto finish;
                }
        } else {
                if (n == 0) {
                        fprintf(out, "No spotd events in the journal%s%s.\n", cfg->history_node[0] ? " for node " : "",
                                cfg->history_node);
                        if (!cfg->history_file[0] && !cfg->history_directory[0] && geteuid() != 0)
                                fprintf(out, "(Reading the system journal needs root or the systemd-journal group.)\n");
                } else
                        print_text(out, &h, tl, n);
                if (h.dropped)
                        fprintf(out, "\n%zu older entries left out: at most the newest %d are held (narrow with --since "
                                     "or --node).\n", h.dropped, HISTORY_ENTRIES_MAX);
                if (dropped_events)
                        fprintf(out, "%s%zu entries of older events left out: at most the newest %d events are shown.\n",
                                h.dropped ? "" : "\n", dropped_events, HISTORY_EVENTS_MAX);
        }
        ret = 0;
finish:
        history_clear(&h);
        return ret;
}
