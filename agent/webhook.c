#include "webhook.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "log.h"
#include "macro.h"

#define MAX_QUEUED 32
#define ATTEMPTS 6

struct delivery {
        struct webhook *w;
        unsigned url;          /* index into cfg->webhook_urls */
        char *body;
        char event_id[EVENT_ID_MAX];
        unsigned attempts;
        usec_t due;            /* monotonic: next attempt */
        bool inflight;
        struct delivery *next;
};

struct webhook {
        const struct config *cfg;
        struct k8s *k;
        struct status *st;
        struct delivery *queue;
        unsigned n;
        const char *headers[STRLIST_MAX + 2];
};

void webhook_redact(const char *url, char *buf, size_t len) {
        const char *sep = strstr(url, "://"), *host, *port = NULL;
        size_t hl, pl = 0;

        if (!sep) {
                snprintf(buf, len, "(invalid URL)");
                return;
        }
        /* Userinfo as config.c reads it: an '@' before the first '/'. */
        host = sep + 3;
        const char *at = strchr(host, '@'), *slash = strchr(host, '/');
        if (at && (!slash || at < slash))
                host = at + 1;
        hl = strcspn(host, "/?#");
        const char *rb = host[0] == '[' ? memchr(host, ']', hl) : NULL;
        const char *colon = memchr(rb ? rb : host, ':', hl - (size_t) ((rb ? rb : host) - host));
        if (colon) {
                port = colon + 1;
                pl = hl - (size_t) (port - host);
                hl = (size_t) (colon - host);
        } else {
                /* Shown anyway, so every webhook reads the same way. */
                port = strncmp(url, "https", 5) == 0 ? "443" : "80";
                pl = strlen(port);
        }
        snprintf(buf, len, "%.*s://%.*s:%.*s", (int) (sep - url), url, (int) hl, host, (int) pl, port);
}

static void free_delivery(struct delivery *d) {
        if (d->body)
                explicit_bzero(d->body, strlen(d->body));
        free(d->body);
        free(d);
}

static void unlink_delivery(struct webhook *w, struct delivery *d) {
        for (struct delivery **p = &w->queue; *p; p = &(*p)->next)
                if (*p == d) {
                        *p = d->next;
                        w->n--;
                        return;
                }
}

static void delivered(void *ud, const struct k8s_response *r) {
        struct delivery *d = ud;
        struct webhook *w = d->w;
        char where[300];
        d->inflight = false;
        webhook_redact(w->cfg->webhook_urls.v[d->url], where, sizeof where);
        if (!r->err && r->status >= 200 && r->status < 300) {
                log_full(LOG_INFO, MSG_WEBHOOK, &(struct log_ctx) { .event_id = d->event_id }, "Webhook %s accepted the signal (HTTP %ld)",
                         where, r->status);
                status_count(w->st, COUNT_WEBHOOK_OK);
                unlink_delivery(w, d);
                free_delivery(d);
                return;
        }
        bool retry = r->err || r->status == 408 || r->status == 429 || r->status >= 500;
        if (retry && d->attempts < ATTEMPTS) {
                d->due = now_monotonic() + backoff_delay(500 * USEC_PER_MSEC, 8 * USEC_PER_SEC, d->attempts);
                return;
        }
        /* One line per delivery that failed for good, not one per attempt. */
        char why[64];
        if (r->err)
                snprintf(why, sizeof why, "%s", http_strerror(r->err));
        else
                snprintf(why, sizeof why, "HTTP %ld", r->status);
        log_full(LOG_ERR, MSG_WEBHOOK, &(struct log_ctx) { .event_id = d->event_id },
                 "Webhook %s failed after %u attempts: %s", where, d->attempts, why);
        status_count(w->st, COUNT_WEBHOOK_FAILED);
        unlink_delivery(w, d);
        free_delivery(d);
}

void webhook_send(struct webhook *w, const char *event_id, const char *json) {
        if (!w || !w->cfg->webhook_urls.n)
                return;
        if (w->cfg->dry_run || !w->k) {
                log_full(LOG_INFO, MSG_PLAN, &(struct log_ctx) { .event_id = event_id }, "dry run: would POST to %u webhook(s): %s",
                         w->cfg->webhook_urls.n, json);
                return;
        }
        for (unsigned i = 0; i < w->cfg->webhook_urls.n; i++) {
                if (w->n >= MAX_QUEUED) {
                        log_warning("Webhook queue full (%d); dropping a signal for %s", MAX_QUEUED, event_id);
                        return;
                }
                struct delivery *d = calloc(1, sizeof *d);
                if (!d || !(d->body = strdup(json))) {
                        free(d);
                        return;
                }
                d->w = w;
                d->url = i;
                snprintf(d->event_id, sizeof d->event_id, "%s", event_id);
                d->due = now_monotonic();
                d->next = w->queue;
                w->queue = d;
                w->n++;
        }
        webhook_tick(w);
}

void webhook_tick(struct webhook *w) {
        usec_t now = now_monotonic();
        if (!w)
                return;
        for (struct delivery *d = w->queue; d; d = d->next) {
                if (d->inflight || now < d->due)
                        continue;
                d->attempts++;
                d->inflight = true;
                int r = k8s_request_url_headers(w->k, "POST", w->cfg->webhook_urls.v[d->url], w->headers, "application/json",
                                                d->body, w->cfg->webhook_timeout, delivered, d);
                if (r < 0) {
                        d->inflight = false;
                        d->due = now + backoff_delay(500 * USEC_PER_MSEC, 8 * USEC_PER_SEC, d->attempts);
                }
        }
}

usec_t webhook_next_wakeup(const struct webhook *w) {
        usec_t next = UINT64_MAX;
        for (const struct delivery *d = w ? w->queue : NULL; d; d = d->next)
                if (!d->inflight && d->due < next)
                        next = d->due;
        return next;
}

int webhook_new(const struct config *cfg, struct k8s *k, struct status *st, struct webhook **ret) {
        struct webhook *w = calloc(1, sizeof *w);
        if (!w)
                return -ENOMEM;
        w->cfg = cfg;
        w->k = k;
        w->st = st;
        unsigned n = 0;
        w->headers[n++] = "User-Agent: spotd";
        for (unsigned i = 0; i < cfg->webhook_headers.n; i++)
                w->headers[n++] = cfg->webhook_headers.v[i];
        w->headers[n] = NULL;
        *ret = w;
        return 0;
}

struct webhook *webhook_free(struct webhook *w) {
        if (!w)
                return NULL;
        /* The client went first and dropped what was in flight. */
        while (w->queue) {
                struct delivery *d = w->queue;
                w->queue = d->next;
                free_delivery(d);
        }
        free(w);
        return NULL;
}
