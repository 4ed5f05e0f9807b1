/* EC2 instance metadata service simulator (see imds_sim.h).
 *
 * One MHD daemon per simulator, thread per connection, so a SLOW or HANG
 * answer only stalls its own connection. All state sits behind s->lock; the
 * handler copies what it needs under the lock and does any waiting without it.
 * Waits go through sim_sleep(), which imds_sim_stop() cuts short, so stopping
 * never waits for a pending fault. Deliberately independent of common/: the
 * simulator must not share the client's bugs (time formats, JSON). */
#include "imds_sim.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <microhttpd.h>

#define TOKEN_LEN       44
#define TOKEN_SLOTS     64
#define TOKEN_TTL_MAX   21600
#define PATH_SLOTS      64
#define HANG_MS         3000
#define DRIP_LEN        200
#define OVERSIZED_DEF   (1024 * 1024)
#define USEC_PER_MSEC   1000ULL
#define USEC_PER_SEC    1000000ULL

struct token {
        char text[TOKEN_LEN + 1];
        uint64_t expires; /* monotonic usec */
};

struct path_count {
        char path[128];
        uint64_t n;
};

struct sched_event {
        char code[32], state[16], event_id[64];
        time_t not_before, not_after;
};

struct imds_sim {
        struct MHD_Daemon *daemon;
        uint16_t port;
        time_t started; /* pendingTime of the identity document */

        pthread_mutex_t lock;
        pthread_cond_t wake; /* broadcast on stop, to cut sim_sleep() short */
        bool stopping;

        bool require_v2, real_headers;
        enum imds_sim_token_mode token_mode;
        unsigned max_ttl;
        char *instance_id;

        struct token tokens[TOKEN_SLOTS];
        unsigned token_next; /* ring: the oldest token is overwritten */

        /* Notices: *_vis is the monotonic usec from which they are served. */
        bool spot_set, spot_drift;
        char spot_action[16];
        time_t spot_time;
        uint64_t spot_vis, spot_vis_real;
        time_t rebalance_time; /* 0: none */
        bool rebalance_drift;
        uint64_t rebalance_vis;
        char *sched_json;      /* NULL: 404 */
        uint64_t sched_vis;
        struct sched_event *sched;
        size_t n_sched;
        char *lifecycle;

        enum imds_sim_fault fault;
        char fault_prefix[128];
        unsigned fault_arg, fault_left; /* fault_left 0: unlimited */

        uint64_t n_gets, n_token, n_unauth, n_conn;
        struct path_count paths[PATH_SLOTS];
};

/* What the handler sends; body is malloc'ed (or NULL for an empty body). */
struct answer {
        unsigned status;
        const char *ctype;
        char *body;
        size_t len;
        unsigned ttl;      /* X-Aws-Ec2-Metadata-Token-Ttl-Seconds, 0: none */
        const char *allow; /* Allow header on 405 */
        bool hang;         /* sleep HANG_MS, then close without an answer */
        size_t cut;        /* RESET_BODY: close the connection after this many body bytes */
};

/* Marks the first call of the access handler for a request (address only). */
static const char first_call;

static uint64_t clock_usec(clockid_t id) {
        struct timespec ts;
        clock_gettime(id, &ts);
        return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000;
}
static uint64_t mono(void) { return clock_usec(CLOCK_MONOTONIC); }
static uint64_t real(void) { return clock_usec(CLOCK_REALTIME); }

static char *xstrdup(const char *p) {
        if (!p) return NULL;
        char *r = strdup(p);
        if (!r) abort(); /* a test tool: out of memory is not a case to handle */
        return r;
}

static char *xasprintf(size_t *len, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *xasprintf(size_t *len, const char *fmt, ...) {
        va_list ap;
        char *r;
        va_start(ap, fmt);
        int n = vasprintf(&r, fmt, ap);
        va_end(ap);
        if (n < 0) abort();
        if (len) *len = (size_t)n;
        return r;
}

static void fmt_rfc3339(time_t t, char buf[static 32]) {
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* "21 Jan 2019 09:00:43 GMT", spelled out by hand so the locale cannot
 * change the month names. */
static void fmt_event_time(time_t t, char buf[static 40]) {
        static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
        struct tm tm;
        gmtime_r(&t, &tm);
        snprintf(buf, 40, "%d %s %d %02d:%02d:%02d GMT", tm.tm_mday, months[tm.tm_mon],
                 tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* "Wed, 17 Jul 2019 21:02:29 GMT" (RFC 9110), locale-proof like fmt_event_time(). */
static void fmt_http_date(time_t t, char buf[static 40]) {
        static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
        static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
        struct tm tm;
        gmtime_r(&t, &tm);
        snprintf(buf, 40, "%s, %02d %s %d %02d:%02d:%02d GMT", days[tm.tm_wday], tm.tm_mday,
                 months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* Returns false when the simulator is stopping. */
static bool sim_sleep(struct imds_sim *s, unsigned ms) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += ms / 1000;
        until.tv_nsec += (long)(ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&s->lock);
        while (!s->stopping)
                if (pthread_cond_timedwait(&s->wake, &s->lock, &until) == ETIMEDOUT)
                        break;
        bool ok = !s->stopping;
        pthread_mutex_unlock(&s->lock);
        return ok;
}

/* ---- answers ---- */

/* The XHTML error page the real service sends with 4xx/5xx answers. */
static void xhtml(struct answer *a, unsigned status, const char *reason) {
        *a = (struct answer){ .status = status, .ctype = "text/plain; charset=utf-8" };
        a->body = xasprintf(&a->len,
                "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n"
                "<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\"\n"
                "\t\"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">\n"
                "<html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">\n"
                " <head>\n  <title>%u - %s</title>\n </head>\n"
                " <body>\n  <h1>%u - %s</h1>\n </body>\n</html>\n",
                status, reason, status, reason);
}

static void answer_ok(struct answer *a, const char *ctype, char *body, size_t len) {
        *a = (struct answer){ .status = 200, .ctype = ctype, .body = body, .len = len };
}

static void ok_text(struct answer *a, const char *text) {
        answer_ok(a, "text/plain", xstrdup(text), strlen(text));
}

/* PUT /latest/api/token and other methods on that path. Called locked. */
static void answer_token(struct imds_sim *s, struct MHD_Connection *c, const char *method,
                         struct answer *a) {
        if (strcmp(method, "PUT") != 0) {
                xhtml(a, 405, "Method Not Allowed");
                a->allow = "PUT";
                return;
        }
        switch (s->token_mode) {
        case SIM_TOKEN_403: xhtml(a, 403, "Forbidden"); return;
        case SIM_TOKEN_405: xhtml(a, 405, "Method Not Allowed"); return;
        case SIM_TOKEN_HANG: *a = (struct answer){ .hang = true }; return;
        case SIM_TOKEN_OK: break;
        }
        /* The real service refuses tokens to requests that went through a proxy. */
        if (MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Forwarded-For")) {
                xhtml(a, 403, "Forbidden");
                return;
        }

        /* Strict: digits only, 1..21600 (no sign, no spaces, no "60s"). */
        const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                    "X-aws-ec2-metadata-token-ttl-seconds");
        unsigned long ttl = 0;
        size_t n = v ? strlen(v) : 0;
        if (n == 0 || n > 6 || strspn(v, "0123456789") != n ||
            (ttl = strtoul(v, NULL, 10)) < 1 || ttl > TOKEN_TTL_MAX) {
                xhtml(a, 400, "Bad Request");
                return;
        }
        unsigned granted = ttl < s->max_ttl ? (unsigned)ttl : s->max_ttl;

        /* Base64 alphabet with "==" padding, like the real tokens. */
        static const char b64[] =
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        unsigned char rnd[TOKEN_LEN - 2];
        if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) abort();
        struct token *t = &s->tokens[s->token_next++ % TOKEN_SLOTS];
        for (size_t i = 0; i < sizeof rnd; i++) t->text[i] = b64[rnd[i] % 64];
        memcpy(t->text + sizeof rnd, "==", 3);
        t->expires = mono() + granted * USEC_PER_SEC;

        answer_ok(a, "text/plain", xstrdup(t->text), TOKEN_LEN);
        a->ttl = granted;
}

/* 0 when invalid or expired, else the seconds the token has left (at least 1). */
static unsigned token_left(struct imds_sim *s, const char *tok) {
        uint64_t now = mono();
        for (size_t i = 0; i < TOKEN_SLOTS; i++)
                if (s->tokens[i].text[0] && now < s->tokens[i].expires &&
                    strcmp(s->tokens[i].text, tok) == 0)
                        return (unsigned)((s->tokens[i].expires - now) / USEC_PER_SEC) + 1;
        return 0;
}

static void identity_document(struct imds_sim *s, struct answer *a) {
        char pending[32];
        fmt_rfc3339(s->started, pending);
        /* The real document's layout: two spaces, " : ", nulls included. */
        char *b = xasprintf(&a->len,
                "{\n"
                "  \"accountId\" : \"123456789012\",\n"
                "  \"architecture\" : \"x86_64\",\n"
                "  \"availabilityZone\" : \"us-east-1a\",\n"
                "  \"billingProducts\" : null,\n"
                "  \"devpayProductCodes\" : null,\n"
                "  \"marketplaceProductCodes\" : null,\n"
                "  \"imageId\" : \"ami-0123456789abcdef0\",\n"
                "  \"instanceId\" : \"%s\",\n"
                "  \"instanceType\" : \"m6i.large\",\n"
                "  \"kernelId\" : null,\n"
                "  \"pendingTime\" : \"%s\",\n"
                "  \"privateIp\" : \"10.0.0.1\",\n"
                "  \"ramdiskId\" : null,\n"
                "  \"region\" : \"us-east-1\",\n"
                "  \"version\" : \"2017-09-30\"\n"
                "}", s->instance_id, pending);
        answer_ok(a, "text/plain", b, a->len); /* the real service labels it text/plain */
}

/* GET/HEAD on everything but the token path. Called locked. */
static void answer_get(struct imds_sim *s, struct MHD_Connection *c, const char *method,
                       const char *url, struct answer *a) {
        if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
                xhtml(a, 405, "Method Not Allowed");
                a->allow = "GET, HEAD";
                return;
        }
        /* A token that is present is always checked, v2 required or not. */
        const char *tok = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-aws-ec2-metadata-token");
        unsigned left = tok ? token_left(s, tok) : 0;
        if (tok ? !left : s->require_v2) {
                s->n_unauth++;
                xhtml(a, 401, "Unauthorized");
                return;
        }

        uint64_t now = mono();
        bool spot = s->spot_set && now >= s->spot_vis;
        char t[40];
        time_t spot_time = s->spot_drift ? time(NULL) + 120 : s->spot_time;

        if (spot && strcmp(url, "/latest/meta-data/spot/instance-action") == 0) {
                fmt_rfc3339(spot_time, t);
                char *b = xasprintf(&a->len, "{\n\t\"action\": \"%s\",\n\t\"time\": \"%s\"\n}",
                                    s->spot_action, t);
                answer_ok(a, "application/json", b, a->len);
        } else if (spot && strcmp(url, "/latest/meta-data/spot/termination-time") == 0) {
                fmt_rfc3339(spot_time, t);
                ok_text(a, t);
        } else if (s->rebalance_time && now >= s->rebalance_vis &&
                   strcmp(url, "/latest/meta-data/events/recommendations/rebalance") == 0) {
                fmt_rfc3339(s->rebalance_drift ? time(NULL) : s->rebalance_time, t);
                char *b = xasprintf(&a->len, "{\n\t\"noticeTime\": \"%s\"\n}", t);
                answer_ok(a, "application/json", b, a->len);
        } else if (s->sched_json && now >= s->sched_vis &&
                   strcmp(url, "/latest/meta-data/events/maintenance/scheduled") == 0) {
                answer_ok(a, "application/json", xstrdup(s->sched_json), strlen(s->sched_json));
        } else if (s->lifecycle &&
                   strcmp(url, "/latest/meta-data/autoscaling/target-lifecycle-state") == 0) {
                ok_text(a, s->lifecycle);
        } else if (strcmp(url, "/latest/meta-data/instance-id") == 0) {
                ok_text(a, s->instance_id);
        } else if (strcmp(url, "/latest/dynamic/instance-identity/document") == 0) {
                identity_document(s, a);
        } else if (strcmp(url, "/latest/meta-data/") == 0) {
                ok_text(a, "autoscaling/\nevents/\ninstance-id\nspot/");
        } else
                xhtml(a, 404, "Not Found");
        if (s->real_headers)
                a->ttl = left;
}

/* ---- faults ---- */

/* Takes one hit of the active fault if it applies to url. Called locked. */
static enum imds_sim_fault take_fault(struct imds_sim *s, const char *url, unsigned *arg) {
        if (s->fault == SIM_FAULT_NONE) return SIM_FAULT_NONE;
        bool latest = strncmp(url, "/latest/", 8) == 0;
        if (s->fault_prefix[0] &&
            !(latest && strncmp(url + 8, s->fault_prefix, strlen(s->fault_prefix)) == 0))
                return SIM_FAULT_NONE;
        enum imds_sim_fault f = s->fault;
        *arg = s->fault_arg;
        if (s->fault_left && --s->fault_left == 0) s->fault = SIM_FAULT_NONE;
        return f;
}

/* Replaces a would-be answer by a 200 whose body is valid-looking JSON of
 * exactly len bytes. */
static void padded_json(struct answer *a, size_t len) {
        free(a->body);
        char *b = malloc(len + 1);
        if (!b) abort();
        memset(b, 'x', len);
        if (len >= 14) { /* {"padding":"xxxx"} */
                memcpy(b, "{\"padding\":\"", 12);
                memcpy(b + len - 2, "\"}", 2);
        }
        b[len] = 0;
        answer_ok(a, "application/json", b, len);
}

struct drip {
        struct imds_sim *s;
        char *body;
        unsigned ms;
        size_t cut; /* 0, or: the connection closes after this many bytes */
};

static ssize_t drip_read(void *cls, uint64_t pos, char *buf, size_t max) {
        struct drip *d = cls;
        if (d->cut) { /* RESET_BODY: the first part at once, then the close */
                if (pos >= d->cut) return MHD_CONTENT_READER_END_WITH_ERROR;
                size_t n = d->cut - pos < max ? d->cut - pos : max;
                memcpy(buf, d->body + pos, n);
                return (ssize_t)n;
        }
        if (!sim_sleep(d->s, d->ms)) return MHD_CONTENT_READER_END_WITH_ERROR;
        buf[0] = d->body[pos]; /* MHD stops at the announced length */
        return 1;
}

static void drip_free(void *cls) {
        struct drip *d = cls;
        free(d->body);
        free(d);
}

/* ---- MHD glue ---- */

static enum MHD_Result send_answer(struct imds_sim *s, struct MHD_Connection *c,
                                   struct answer *a, unsigned drip_ms) {
        struct MHD_Response *r;
        if (drip_ms || a->cut) {
                struct drip *d = malloc(sizeof *d);
                if (!d) abort();
                *d = (struct drip){ .s = s, .body = a->body, .ms = drip_ms, .cut = a->cut };
                r = MHD_create_response_from_callback(a->len, 1, drip_read, d, drip_free);
                if (!r) drip_free(d);
        } else {
                r = MHD_create_response_from_buffer(a->len, a->body, MHD_RESPMEM_MUST_FREE);
                if (!r) free(a->body);
        }
        if (!r) return MHD_NO;
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, a->ctype);
        MHD_add_response_header(r, MHD_HTTP_HEADER_SERVER, "EC2ws");
        if (s->real_headers) {
                char lm[40];
                fmt_http_date(s->started, lm);
                MHD_add_response_header(r, MHD_HTTP_HEADER_ACCEPT_RANGES, "none");
                MHD_add_response_header(r, MHD_HTTP_HEADER_LAST_MODIFIED, lm);
                MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
        }
        if (a->allow) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, a->allow);
        if (a->ttl) {
                char v[16];
                snprintf(v, sizeof v, "%u", a->ttl);
                MHD_add_response_header(r, "X-Aws-Ec2-Metadata-Token-Ttl-Seconds", v);
        }
        enum MHD_Result ret = MHD_queue_response(c, a->status, r);
        MHD_destroy_response(r);
        return ret;
}

static void count_get(struct imds_sim *s, const char *url) {
        s->n_gets++;
        for (size_t i = 0; i < PATH_SLOTS; i++) {
                struct path_count *p = &s->paths[i];
                if (!p->path[0]) {
                        if (strlen(url) >= sizeof p->path) return; /* only in the total */
                        strcpy(p->path, url);
                }
                if (strcmp(p->path, url) == 0) {
                        p->n++;
                        return;
                }
        }
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **req) {
        struct imds_sim *s = cls;

        /* Answer only once the whole request (and any body, discarded) is in. */
        if (!*req) {
                *req = (void *)&first_call;
                return MHD_YES;
        }
        if (*upload_data_size) {
                *upload_data_size = 0;
                return MHD_YES;
        }

        bool token_path = strcmp(url, "/latest/api/token") == 0;
        unsigned arg = 0;
        pthread_mutex_lock(&s->lock);
        if (token_path && strcmp(method, "PUT") == 0) s->n_token++;
        if (strcmp(method, "GET") == 0) count_get(s, url);
        enum imds_sim_fault f = take_fault(s, url, &arg);
        if (f == SIM_FAULT_401) s->n_unauth++;
        pthread_mutex_unlock(&s->lock);

        struct answer a;
        switch (f) {
        case SIM_FAULT_RESET:
                return MHD_NO; /* MHD closes the connection without an answer */
        case SIM_FAULT_500:
                xhtml(&a, 500, "Internal Server Error");
                return send_answer(s, c, &a, 0);
        case SIM_FAULT_401:
                xhtml(&a, 401, "Unauthorized");
                return send_answer(s, c, &a, 0);
        case SIM_FAULT_403:
                xhtml(&a, 403, "Forbidden");
                return send_answer(s, c, &a, 0);
        case SIM_FAULT_SLOW:
                if (!sim_sleep(s, arg)) return MHD_NO;
                break;
        default:
                break;
        }

        pthread_mutex_lock(&s->lock);
        if (token_path)
                answer_token(s, c, method, &a);
        else
                answer_get(s, c, method, url, &a);
        pthread_mutex_unlock(&s->lock);

        if (a.hang) {
                sim_sleep(s, HANG_MS);
                return MHD_NO;
        }
        switch (f) {
        case SIM_FAULT_MALFORMED:
                /* Cut the real body in half; without one, a cut instance-action. */
                if (a.status == 200 && a.len >= 2) {
                        a.len /= 2;
                        a.body[a.len] = 0;
                } else {
                        free(a.body);
                        a = (struct answer){ .status = 200, .body = xstrdup("{\n\t\"action\": \"termi") };
                        a.len = strlen(a.body);
                }
                a.ctype = "application/json";
                break;
        case SIM_FAULT_OVERSIZED:
                padded_json(&a, arg ? arg : OVERSIZED_DEF);
                break;
        case SIM_FAULT_SLOW_DRIP:
                if (a.status != 200) padded_json(&a, DRIP_LEN);
                return send_answer(s, c, &a, arg ? arg : 1);
        case SIM_FAULT_RESET_BODY:
                if (a.status != 200 || a.len < 2) padded_json(&a, DRIP_LEN);
                a.cut = a.len / 2;
                return send_answer(s, c, &a, 0);
        default:
                break;
        }
        return send_answer(s, c, &a, 0);
}

static void notify_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                              enum MHD_ConnectionNotificationCode toe) {
        struct imds_sim *s = cls;
        if (toe != MHD_CONNECTION_NOTIFY_STARTED) return;
        pthread_mutex_lock(&s->lock);
        s->n_conn++;
        pthread_mutex_unlock(&s->lock);
}

/* ---- lifecycle ---- */

int imds_sim_start_port(const struct imds_sim_options *o, uint16_t port, struct imds_sim **ret) {
        struct imds_sim *s = calloc(1, sizeof *s);
        if (!s) return -ENOMEM;
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* sim_sleep deadlines */
        pthread_cond_init(&s->wake, &ca);
        pthread_condattr_destroy(&ca);
        pthread_mutex_init(&s->lock, NULL);

        s->started = time(NULL);
        s->require_v2 = o && o->require_v2;
        s->real_headers = o && o->real_headers;
        s->token_mode = o ? o->token_mode : SIM_TOKEN_OK;
        s->max_ttl = o && o->max_token_ttl && o->max_token_ttl < TOKEN_TTL_MAX
                             ? o->max_token_ttl : TOKEN_TTL_MAX;
        s->instance_id = xstrdup(o && o->instance_id ? o->instance_id : "i-0123456789abcdef0");

        struct sockaddr_in sa = {
                .sin_family = AF_INET,
                .sin_port = htons(port),
                .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
        };
        errno = 0; /* MHD leaves errno set on some failures only */
        s->daemon = MHD_start_daemon(
                MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_AUTO,
                0, NULL, NULL, handle, s,
                MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                MHD_OPTION_NOTIFY_CONNECTION, notify_connection, s,
                MHD_OPTION_CONNECTION_TIMEOUT, 30U, /* reap idle keep-alive connections */
                MHD_OPTION_CONNECTION_LIMIT, 256U,
                MHD_OPTION_END);
        if (!s->daemon) {
                int r = errno ? -errno : -EIO;
                imds_sim_stop(s);
                return r;
        }
        const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
        s->port = info ? info->port : port;
        *ret = s;
        return 0;
}

int imds_sim_start(const struct imds_sim_options *o, struct imds_sim **ret) {
        return imds_sim_start_port(o, 0, ret);
}

struct imds_sim *imds_sim_stop(struct imds_sim *s) {
        if (!s) return NULL;
        pthread_mutex_lock(&s->lock);
        s->stopping = true;
        pthread_cond_broadcast(&s->wake);
        pthread_mutex_unlock(&s->lock);
        if (s->daemon) MHD_stop_daemon(s->daemon); /* joins every connection thread */
        pthread_cond_destroy(&s->wake);
        pthread_mutex_destroy(&s->lock);
        free(s->instance_id);
        free(s->sched_json);
        free(s->sched);
        free(s->lifecycle);
        free(s);
        return NULL;
}

uint16_t imds_sim_port(const struct imds_sim *s) { return s->port; }

void imds_sim_url(const struct imds_sim *s, char *buf, size_t len) {
        snprintf(buf, len, "http://127.0.0.1:%u", (unsigned)s->port);
}

/* ---- setters and counters: each one a short critical section ---- */

#define LOCKED(s, ...) do { pthread_mutex_lock(&(s)->lock); __VA_ARGS__; \
                            pthread_mutex_unlock(&(s)->lock); } while (0)

void imds_sim_set_require_v2(struct imds_sim *s, bool require) { LOCKED(s, s->require_v2 = require); }
void imds_sim_set_token_mode(struct imds_sim *s, enum imds_sim_token_mode m) { LOCKED(s, s->token_mode = m); }
void imds_sim_expire_tokens(struct imds_sim *s) { LOCKED(s, memset(s->tokens, 0, sizeof s->tokens)); }
void imds_sim_set_spot_time_drift(struct imds_sim *s, bool drift) { LOCKED(s, s->spot_drift = drift); }
void imds_sim_set_rebalance_time_drift(struct imds_sim *s, bool drift) { LOCKED(s, s->rebalance_drift = drift); }

void imds_sim_set_spot(struct imds_sim *s, const char *action, time_t when, unsigned delay_ms) {
        uint64_t vis = mono() + delay_ms * USEC_PER_MSEC;
        uint64_t vis_real = real() + delay_ms * USEC_PER_MSEC;
        pthread_mutex_lock(&s->lock);
        s->spot_set = action && *action;
        if (s->spot_set) {
                snprintf(s->spot_action, sizeof s->spot_action, "%s", action);
                /* when 0: two minutes after the notice shows up. */
                s->spot_time = when ? when : (time_t)(vis_real / USEC_PER_SEC) + 120;
                s->spot_vis = vis;
                s->spot_vis_real = vis_real;
        }
        pthread_mutex_unlock(&s->lock);
}

void imds_sim_set_rebalance(struct imds_sim *s, time_t notice_time, unsigned delay_ms) {
        uint64_t vis = mono() + delay_ms * USEC_PER_MSEC;
        LOCKED(s, s->rebalance_time = notice_time; s->rebalance_vis = vis);
}

void imds_sim_set_scheduled_json(struct imds_sim *s, const char *json, unsigned delay_ms) {
        uint64_t vis = mono() + delay_ms * USEC_PER_MSEC;
        char *copy = xstrdup(json);
        pthread_mutex_lock(&s->lock);
        free(s->sched_json);
        s->sched_json = copy;
        s->sched_vis = vis;
        free(s->sched); /* the raw text replaces any added events */
        s->sched = NULL;
        s->n_sched = 0;
        pthread_mutex_unlock(&s->lock);
}

static void json_string(FILE *f, const char *v) {
        fputc('"', f);
        for (; *v; v++) {
                if (*v == '"' || *v == '\\') fprintf(f, "\\%c", *v);
                else if ((unsigned char)*v < 0x20) fprintf(f, "\\u%04x", *v);
                else fputc(*v, f);
        }
        fputc('"', f);
}

/* Serializes s->sched the way the service does (TAB-indented). Called locked. */
static char *scheduled_to_json(const struct imds_sim *s) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        if (!f) abort();
        fputs("[", f);
        for (size_t i = 0; i < s->n_sched; i++) {
                const struct sched_event *e = &s->sched[i];
                const char *what = strchr(e->code, '-') ? strchr(e->code, '-') + 1 : e->code;
                char desc[96], nb[40], na[40];
                /* Descriptions as the service words them, marked once no longer active. */
                snprintf(desc, sizeof desc, "%sscheduled %s",
                         strcmp(e->state, "canceled") == 0 ? "[Canceled] " :
                         strcmp(e->state, "completed") == 0 ? "[Completed] " : "", what);
                fmt_event_time(e->not_before, nb);
                fmt_event_time(e->not_after, na);
                fputs(i ? ",\n\t{\n\t\t\"Code\": " : "\n\t{\n\t\t\"Code\": ", f);
                json_string(f, e->code);
                fputs(",\n\t\t\"Description\": ", f);
                json_string(f, desc);
                fputs(",\n\t\t\"State\": ", f);
                json_string(f, e->state);
                fputs(",\n\t\t\"EventId\": ", f);
                json_string(f, e->event_id);
                fprintf(f, ",\n\t\t\"NotBefore\": \"%s\"", nb);
                if (e->not_after) fprintf(f, ",\n\t\t\"NotAfter\": \"%s\"", na);
                fputs("\n\t}", f);
        }
        fputs(s->n_sched ? "\n]" : "]", f);
        fclose(f);
        return buf;
}

void imds_sim_add_scheduled(struct imds_sim *s, const char *code, const char *state,
                            const char *event_id, time_t not_before, time_t not_after) {
        struct sched_event e = { .not_before = not_before, .not_after = not_after };
        snprintf(e.code, sizeof e.code, "%s", code ? code : "system-reboot");
        snprintf(e.state, sizeof e.state, "%s", state ? state : "active");
        snprintf(e.event_id, sizeof e.event_id, "%s",
                 event_id ? event_id : "instance-event-0123456789abcdef0");
        pthread_mutex_lock(&s->lock);
        struct sched_event *n = realloc(s->sched, (s->n_sched + 1) * sizeof *n);
        if (!n) abort();
        s->sched = n;
        s->sched[s->n_sched++] = e;
        free(s->sched_json);
        s->sched_json = scheduled_to_json(s);
        s->sched_vis = 0; /* at once */
        pthread_mutex_unlock(&s->lock);
}

void imds_sim_clear_scheduled(struct imds_sim *s) { imds_sim_set_scheduled_json(s, NULL, 0); }

void imds_sim_set_lifecycle(struct imds_sim *s, const char *state) {
        char *copy = xstrdup(state);
        LOCKED(s, free(s->lifecycle); s->lifecycle = copy);
}

void imds_sim_set_fault(struct imds_sim *s, const char *prefix, enum imds_sim_fault f,
                        unsigned arg, unsigned count) {
        pthread_mutex_lock(&s->lock);
        snprintf(s->fault_prefix, sizeof s->fault_prefix, "%s", prefix ? prefix : "");
        s->fault = f;
        s->fault_arg = arg;
        s->fault_left = count;
        pthread_mutex_unlock(&s->lock);
}

void imds_sim_clear_fault(struct imds_sim *s) { imds_sim_set_fault(s, NULL, SIM_FAULT_NONE, 0, 0); }

uint64_t imds_sim_requests(struct imds_sim *s, const char *path) {
        uint64_t n = 0;
        pthread_mutex_lock(&s->lock);
        if (!path)
                n = s->n_gets;
        else
                for (size_t i = 0; i < PATH_SLOTS && s->paths[i].path[0]; i++)
                        if (strcmp(s->paths[i].path, path) == 0) n = s->paths[i].n;
        pthread_mutex_unlock(&s->lock);
        return n;
}

#define COUNTER(name, field) \
        uint64_t name(struct imds_sim *s) { uint64_t n; LOCKED(s, n = s->field); return n; }
COUNTER(imds_sim_token_requests, n_token)
COUNTER(imds_sim_unauthorized, n_unauth)
COUNTER(imds_sim_connections, n_conn)

uint64_t imds_sim_spot_visible_since(struct imds_sim *s) {
        uint64_t n;
        LOCKED(s, n = s->spot_set ? s->spot_vis_real : 0);
        return n;
}

char *imds_sim_tokens(struct imds_sim *s) {
        char *buf = calloc(TOKEN_SLOTS, TOKEN_LEN + 1);
        size_t o = 0;
        if (!buf)
                return NULL;
        pthread_mutex_lock(&s->lock);
        for (size_t i = 0; i < TOKEN_SLOTS; i++)
                if (s->tokens[i].text[0]) {
                        memcpy(buf + o, s->tokens[i].text, strlen(s->tokens[i].text));
                        o += strlen(s->tokens[i].text);
                        buf[o++] = '\n';
                }
        pthread_mutex_unlock(&s->lock);
        if (o)
                buf[o - 1] = 0;
        return buf;
}
