#include "imds.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

#define TOKEN_PATH "api/token"
#define TOKEN_MAX 512 /* real tokens are ~56 bytes; anything far longer is not a token */

struct imds {
        CURL *curl;              /* options only: each request runs on a copy (xfer_add()) */
        CURLM *multi;            /* runs the copies, several at once; its connection
                                  * cache keeps connections alive across them */
        char *endpoint;
        enum imds_mode mode;
        unsigned token_ttl;
        usec_t timeout, connect_timeout;
        size_t max_body;
        usec_t v2_retry_min, v2_retry_max;
        imds_observe_t observe;
        void *userdata;

        char token[TOKEN_MAX];
        bool have_token;
        usec_t token_refresh_at; /* monotonic: fetch a new token from then on */
        struct curl_slist *token_header;
        usec_t v2_next_try;      /* monotonic: no PUT before (v1 fallback) */
        unsigned v2_failures;

        long last_status;
};

/* One request in flight on a copy of the option handle. */
struct xfer {
        const char *path;
        CURL *h;
        struct http_body body;
        struct http_header_capture *capture; /* NULL: no header is wanted */
        CURLcode result;
        bool done;
        int r;       /* 0 with status set, or a transport -errno */
        long status; /* HTTP status, 0 if none */
};

void imds_options_default(struct imds_options *o) {
        *o = (struct imds_options) {
                .endpoint = "http://169.254.169.254",
                .mode = IMDS_MODE_AUTO,
                .token_ttl = 21600,
                .timeout = 1 * USEC_PER_SEC,
                .connect_timeout = 250 * USEC_PER_MSEC,
                .max_body = 64 * 1024,
                .v2_retry_min = 5 * USEC_PER_SEC,
                .v2_retry_max = 300 * USEC_PER_SEC,
        };
}

static bool endpoint_valid(const char *e) {
        size_t n = strlen(e);
        if (n > 256)
                return false;
        if (strncmp(e, "http://", 7) != 0 && strncmp(e, "https://", 8) != 0)
                return false;
        const char *host = strstr(e, "://") + 3;
        if (!*host || *host == '/')
                return false;
        for (const char *p = e; *p; p++)
                if (!isgraph((unsigned char) *p) || *p == '?' || *p == '#')
                        return false;
        return true;
}

int imds_new(const struct imds_options *o, struct imds **ret) {
        if (!o->endpoint || !endpoint_valid(o->endpoint) || o->token_ttl < 1 ||
            o->token_ttl > 21600 || o->timeout == 0 || o->max_body == 0 ||
            o->mode > IMDS_MODE_V1_ONLY)
                return -EINVAL;

        struct imds *c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->endpoint = strdup(o->endpoint);
        c->curl = curl_easy_init();
        c->multi = curl_multi_init();
        if (!c->endpoint || !c->curl || !c->multi) {
                imds_free(c);
                return -ENOMEM;
        }
        curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long) IMDS_GET_MANY_MAX);
        /* One trailing slash at most, so URLs are endpoint + "/latest/...". */
        size_t n = strlen(c->endpoint);
        while (n > 0 && c->endpoint[n - 1] == '/')
                c->endpoint[--n] = 0;

        c->mode = o->mode;
        c->token_ttl = o->token_ttl;
        c->timeout = o->timeout;
        c->connect_timeout = o->connect_timeout ? o->connect_timeout : o->timeout;
        c->max_body = o->max_body;
        c->v2_retry_min = o->v2_retry_min ? o->v2_retry_min : 5 * USEC_PER_SEC;
        c->v2_retry_max = o->v2_retry_max > c->v2_retry_min ? o->v2_retry_max : c->v2_retry_min;
        c->observe = o->observe;
        c->userdata = o->userdata;

        CURL *h = c->curl;
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
        /* The metadata service is link-local: an HTTP(S)_PROXY from the
         * environment must never see these requests (or the token). */
        curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long) (c->timeout / USEC_PER_MSEC));
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long) (c->connect_timeout / USEC_PER_MSEC));
        curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) c->max_body);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, http_body_write);
        curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
        curl_easy_setopt(h, CURLOPT_USERAGENT, "spotd");

        *ret = c;
        return 0;
}

static void token_forget(struct imds *c) {
        explicit_bzero(c->token, sizeof c->token);
        c->have_token = false;
        curl_slist_free_all(c->token_header);
        c->token_header = NULL;
}

struct imds *imds_free(struct imds *c) {
        if (!c)
                return NULL;
        token_forget(c);
        if (c->curl)
                curl_easy_cleanup(c->curl);
        if (c->multi)
                curl_multi_cleanup(c->multi);
        free(c->endpoint);
        free(c);
        return NULL;
}

long imds_last_status(const struct imds *c) { return c->last_status; }
bool imds_using_token(const struct imds *c) { return c->have_token; }

/* What imds_get() returns for a request that ended with r (0 or a
 * transport -errno) and HTTP status st. */
static int outcome(int r, long st) {
        if (r < 0)
                return r;
        switch (st) {
        case 200: return 0;
        case 404: return -ENOENT;
        case 401: return -EACCES;
        default:  return -EPROTO;
        }
}

static bool path_valid(const char *path) {
        for (const char *p = path; *p; p++)
                if (!isalnum((unsigned char) *p) && !strchr("/-_.", *p))
                        return false;
        return true;
}

/* Puts a request on the multi handle. */
static int xfer_add(struct imds *c, struct xfer *x, bool put, struct curl_slist *headers) {
        char url[512];

        if ((size_t) snprintf(url, sizeof url, "%s/latest/%s", c->endpoint, x->path) >= sizeof url)
                return -EINVAL;
        /* Never a handle that already ran: libcurl before 8.1.0 (Debian 12
         * ships 7.88) frees a reused handle's stored headers, then reads and
         * reallocates them when the next answer starts with a folded header
         * line (curl issue 11101): any server answering could crash us. */
        x->h = curl_easy_duphandle(c->curl);
        if (!x->h)
                return -ENOMEM;
        x->body = (struct http_body) { .limit = c->max_body };
        curl_easy_setopt(x->h, CURLOPT_PRIVATE, x);
        curl_easy_setopt(x->h, CURLOPT_WRITEDATA, &x->body);
        if (x->capture) {
                x->capture->found = false;
                curl_easy_setopt(x->h, CURLOPT_HEADERFUNCTION, http_header_capture_cb);
                curl_easy_setopt(x->h, CURLOPT_HEADERDATA, x->capture);
        }
        curl_easy_setopt(x->h, CURLOPT_URL, url);
        curl_easy_setopt(x->h, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(x->h, CURLOPT_CUSTOMREQUEST, put ? "PUT" : NULL);
        curl_easy_setopt(x->h, CURLOPT_HTTPHEADER, headers);
        if (curl_multi_add_handle(c->multi, x->h) != CURLM_OK) {
                curl_easy_cleanup(x->h);
                x->h = NULL;
                return -ENOMEM;
        }
        return 0;
}

/* Runs the requests put on the multi handle to their end (each bounded by
 * its CURLOPT_TIMEOUT_MS): all at once, so a round costs one wait, not one
 * per request. Then fills in each one's outcome, tells the observer (which
 * sees every request, whatever its outcome) and frees the handle; the
 * bodies stay. */
static void xfer_run(struct imds *c, struct xfer *x, size_t n) {
        int running = 1, left;
        CURLMsg *m;

        while (running) {
                if (curl_multi_perform(c->multi, &running) != CURLM_OK)
                        break;
                /* Waits at most until the multi handle's next timeout. */
                if (running && curl_multi_poll(c->multi, NULL, 0, 1000, NULL) != CURLM_OK)
                        break;
        }
        while ((m = curl_multi_info_read(c->multi, &left))) {
                struct xfer *d = NULL;
                if (m->msg != CURLMSG_DONE || curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &d) != CURLE_OK || !d)
                        continue;
                d->result = m->data.result;
                d->done = true;
        }
        for (size_t i = 0; i < n; i++) {
                curl_off_t us = 0;
                if (!x[i].h)
                        continue;
                x[i].status = 0;
                x[i].r = x[i].done ? http_curl_errno(x[i].result, &x[i].body) : -EIO;
                if (x[i].r == 0)
                        curl_easy_getinfo(x[i].h, CURLINFO_RESPONSE_CODE, &x[i].status);
                curl_easy_getinfo(x[i].h, CURLINFO_TOTAL_TIME_T, &us);
                curl_multi_remove_handle(c->multi, x[i].h);
                curl_easy_cleanup(x[i].h);
                x[i].h = NULL;
                x[i].done = false;
                c->last_status = x[i].status;
                if (c->observe)
                        c->observe(c->userdata, x[i].path, outcome(x[i].r, x[i].status), x[i].status, (usec_t) us);
        }
}

static bool token_text_valid(const char *t, size_t n) {
        if (n == 0 || n >= TOKEN_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!isgraph((unsigned char) t[i]))
                        return false; /* it goes into a header line */
        return true;
}

static int token_fetch(struct imds *c) {
        struct http_header_capture ttl_header = { .name = "X-Aws-Ec2-Metadata-Token-Ttl-Seconds" };
        struct xfer x = { .path = TOKEN_PATH, .capture = &ttl_header };
        char ttl[64];
        int r;

        snprintf(ttl, sizeof ttl, "X-aws-ec2-metadata-token-ttl-seconds: %u", c->token_ttl);
        _cleanup_(curl_slist_free_allp) struct curl_slist *hdr = curl_slist_append(NULL, ttl);
        if (!hdr)
                return -ENOMEM;
        usec_t start = now_monotonic();
        r = xfer_add(c, &x, true, hdr);
        if (r >= 0) {
                xfer_run(c, &x, 1);
                r = x.r;
        }
        if (r >= 0 && x.status != 200)
                r = x.status == 404 ? -ENOENT : -EPROTO;
        if (r >= 0 && !token_text_valid(x.body.data, x.body.len))
                r = -EBADMSG;
        if (r < 0) {
                http_body_done(&x.body);
                return r;
        }

        /* The service may grant less than we asked for. */
        unsigned granted = c->token_ttl;
        if (ttl_header.found) {
                char *end;
                unsigned long v = strtoul(ttl_header.value, &end, 10);
                if (*end == 0 && v >= 1 && v <= 21600)
                        granted = (unsigned) v;
        }
        /* Refresh with a quarter of the lifetime (at most a minute) to spare,
         * so a token never expires between our check and the request. */
        usec_t life = (usec_t) granted * USEC_PER_SEC, margin = life / 4;
        if (margin > 60 * USEC_PER_SEC)
                margin = 60 * USEC_PER_SEC;

        char hline[TOKEN_MAX + 64];
        token_forget(c);
        snprintf(hline, sizeof hline, "X-aws-ec2-metadata-token: %.*s", (int) x.body.len, x.body.data);
        c->token_header = curl_slist_append(NULL, hline);
        explicit_bzero(hline, sizeof hline);
        if (c->token_header) {
                memcpy(c->token, x.body.data, x.body.len);
                c->token[x.body.len] = 0;
        }
        explicit_bzero(x.body.data, x.body.len);
        http_body_done(&x.body);
        if (!c->token_header)
                return -ENOMEM;
        c->have_token = true;
        c->token_refresh_at = start + life - margin;
        c->v2_failures = 0;
        c->v2_next_try = 0;
        return 0;
}

/* Makes sure a token is held when one should be. force: ignore the v1
 * fallback backoff (the service just told us it wants v2). Returns 0 when the
 * request may go out (with or without a token), or the PUT's -errno in v2-only
 * mode. */
static int token_ensure(struct imds *c, bool force) {
        usec_t now = now_monotonic();
        int r;

        if (c->mode == IMDS_MODE_V1_ONLY)
                return 0;
        if (c->have_token && now < c->token_refresh_at && !force)
                return 0;
        if (c->mode == IMDS_MODE_AUTO && !force && !c->have_token && now < c->v2_next_try)
                return 0; /* in v1 fallback; not yet time to try v2 again */

        r = token_fetch(c);
        if (r >= 0)
                return 0;
        token_forget(c);
        if (c->mode == IMDS_MODE_V2_ONLY)
                return r;
        c->v2_next_try = now_monotonic() + backoff_delay(c->v2_retry_min, c->v2_retry_max, c->v2_failures);
        if (c->v2_failures < 32)
                c->v2_failures++;
        return 0;
}

/* Sends the GETs marked in want[], all at once, with the current token;
 * what an earlier send of the same ones brought is dropped. */
static void send_gets(struct imds *c, struct xfer *x, const bool *want, size_t n) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
                if (!want[i])
                        continue;
                http_body_done(&x[i].body);
                x[i].status = 0;
                x[i].r = xfer_add(c, &x[i], false, c->token_header);
                m += x[i].r == 0;
        }
        if (m)
                xfer_run(c, x, n);
}

/* The token could not be had: the requests marked in want[] end with its
 * error and the PUT's status, as imds_get() reports them. */
static void fail_gets(struct imds *c, struct xfer *x, const bool *want, size_t n, int r) {
        for (size_t i = 0; i < n; i++)
                if (want[i]) {
                        http_body_done(&x[i].body);
                        x[i].r = r;
                        x[i].status = c->last_status;
                }
}

int imds_get_many(struct imds *c, struct imds_answer *a, size_t n) {
        struct xfer x[IMDS_GET_MANY_MAX];
        bool want[IMDS_GET_MANY_MAX] = {}, retry = false;
        int r;

        if (n > IMDS_GET_MANY_MAX)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                x[i] = (struct xfer) { .path = a[i].path, .r = path_valid(a[i].path) ? 0 : -EINVAL };
                want[i] = x[i].r == 0;
        }
        r = token_ensure(c, false);
        if (r < 0)
                fail_gets(c, x, want, n, r);
        else {
                send_gets(c, x, want, n);
                for (size_t i = 0; i < n; i++) {
                        want[i] = want[i] && x[i].r == 0 && x[i].status == 401 && c->mode != IMDS_MODE_V1_ONLY;
                        retry = retry || want[i];
                }
        }
        if (retry) {
                /* Expired/unknown token, or v1 refused: one fresh token, one retry. */
                token_forget(c);
                r = token_ensure(c, true);
                if (r < 0)
                        fail_gets(c, x, want, n, r);
                else if (c->have_token)
                        send_gets(c, x, want, n);
        }
        for (size_t i = 0; i < n; i++) {
                a[i].r = outcome(x[i].r, x[i].status);
                a[i].status = x[i].status;
                a[i].body = NULL;
                a[i].len = 0;
                if (a[i].r < 0) {
                        http_body_done(&x[i].body);
                        continue;
                }
                a[i].body = x[i].body.data ? TAKE_PTR(x[i].body.data) : strdup("");
                a[i].len = x[i].body.len;
                if (!a[i].body)
                        a[i].r = -ENOMEM;
        }
        return 0;
}

int imds_get(struct imds *c, const char *path, char **ret_body, size_t *ret_len) {
        struct imds_answer a = { .path = path };
        int r = imds_get_many(c, &a, 1);
        if (r < 0)
                return r;
        if (a.r < 0)
                return a.r;
        *ret_body = a.body;
        if (ret_len)
                *ret_len = a.len;
        return 0;
}

/* ---- parsers ---- */

DEFINE_TRIVIAL_CLEANUP_FUNC(cJSON *, cJSON_Delete)

#define WHY(msg) ({ if (ret_why) *ret_why = (msg); })

/* Parses exactly one JSON value, allowing surrounding whitespace only. */
static cJSON *json_parse(const char *body, size_t len) {
        const char *end = NULL;
        if (!body || len == 0 || memchr(body, 0, len))
                return NULL;
        cJSON *j = cJSON_ParseWithLengthOpts(body, len, &end, false);
        if (!j)
                return NULL;
        for (; end && end < body + len; end++)
                if (!isspace((unsigned char) *end)) {
                        cJSON_Delete(j);
                        return NULL;
                }
        return j;
}

/* Copies a string member that must be present, non-empty and fit. */
static int json_string(const cJSON *o, const char *key, char *buf, size_t len, bool required) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
        if (!v)
                return required ? -ENODATA : 0;
        if (!cJSON_IsString(v) || !v->valuestring[0] || strlen(v->valuestring) >= len)
                return -EINVAL;
        strcpy(buf, v->valuestring);
        return 0;
}

int imds_parse_instance_action(const char *body, size_t len, struct imds_instance_action *ret,
                               const char **ret_why) {
        _cleanup_(cJSON_Deletep) cJSON *j = json_parse(body, len);
        struct imds_instance_action a = {};
        char t[64];
        int r;

        if (!cJSON_IsObject(j))
                return WHY("instance-action is not a JSON object"), -EBADMSG;
        r = json_string(j, "action", a.action, sizeof a.action, true);
        if (r < 0)
                return WHY(r == -ENODATA ? "instance-action has no \"action\""
                                         : "instance-action \"action\" is not a short string"), r;
        for (const char *p = a.action; *p; p++)
                if (!islower((unsigned char) *p))
                        return WHY("instance-action \"action\" is not a lowercase word"), -EINVAL;
        r = json_string(j, "time", t, sizeof t, true);
        if (r < 0)
                return WHY(r == -ENODATA ? "instance-action has no \"time\""
                                         : "instance-action \"time\" is not a string"), r;
        if (parse_rfc3339(t, &a.time) < 0)
                return WHY("instance-action \"time\" is not an RFC 3339 time"), -EINVAL;
        *ret = a;
        return 0;
}

/* Trims whitespace into buf; -EINVAL if empty or too long. */
static int trim_copy(const char *body, size_t len, char *buf, size_t buflen) {
        if (!body || memchr(body, 0, len))
                return -EINVAL;
        while (len && isspace((unsigned char) *body))
                body++, len--;
        while (len && isspace((unsigned char) body[len - 1]))
                len--;
        if (len == 0 || len >= buflen)
                return -EINVAL;
        memcpy(buf, body, len);
        buf[len] = 0;
        return 0;
}

int imds_parse_termination_time(const char *body, size_t len, time_t *ret, const char **ret_why) {
        char t[64];
        if (trim_copy(body, len, t, sizeof t) < 0 || parse_rfc3339(t, ret) < 0)
                return WHY("termination-time is not an RFC 3339 time"), -EINVAL;
        return 0;
}

int imds_parse_rebalance(const char *body, size_t len, time_t *ret, const char **ret_why) {
        _cleanup_(cJSON_Deletep) cJSON *j = json_parse(body, len);
        char t[64];
        int r;
        time_t v;

        if (!cJSON_IsObject(j))
                return WHY("rebalance recommendation is not a JSON object"), -EBADMSG;
        r = json_string(j, "noticeTime", t, sizeof t, true);
        if (r < 0)
                return WHY(r == -ENODATA ? "rebalance recommendation has no \"noticeTime\""
                                         : "rebalance \"noticeTime\" is not a string"), r;
        if (parse_rfc3339(t, &v) < 0)
                return WHY("rebalance \"noticeTime\" is not an RFC 3339 time"), -EINVAL;
        *ret = v;
        return 0;
}

static int scheduled_time(const cJSON *o, const char *key, bool required, time_t *ret) {
        char t[64] = "";
        int r = json_string(o, key, t, sizeof t, required);
        if (r < 0)
                return r;
        if (!t[0]) {
                *ret = 0;
                return 0;
        }
        return parse_imds_event_time(t, ret);
}

int imds_parse_scheduled(const char *body, size_t len, struct imds_scheduled_event *ret,
                         size_t max, size_t *ret_n, const char **ret_why) {
        _cleanup_(cJSON_Deletep) cJSON *j = json_parse(body, len);
        const cJSON *o;
        size_t n = 0;

        if (!cJSON_IsArray(j))
                return WHY("scheduled events is not a JSON array"), -EBADMSG;
        if ((size_t) cJSON_GetArraySize(j) > max)
                return WHY("too many scheduled events"), -E2BIG;

        /* Parse into a scratch array first: outputs stay untouched on failure. */
        struct imds_scheduled_event tmp[IMDS_SCHEDULED_MAX];
        if (max > IMDS_SCHEDULED_MAX)
                max = IMDS_SCHEDULED_MAX;
        cJSON_ArrayForEach(o, j) {
                struct imds_scheduled_event *e = &tmp[n];
                const cJSON *d;
                int r;

                if (n >= max)
                        return WHY("too many scheduled events"), -E2BIG;
                *e = (struct imds_scheduled_event) {};
                if (!cJSON_IsObject(o))
                        return WHY("scheduled event is not a JSON object"), -EBADMSG;
                if ((r = json_string(o, "Code", e->code, sizeof e->code, true)) < 0)
                        return WHY("scheduled event has a missing or bad \"Code\""), r;
                if ((r = json_string(o, "State", e->state, sizeof e->state, true)) < 0)
                        return WHY("scheduled event has a missing or bad \"State\""), r;
                if ((r = json_string(o, "EventId", e->event_id, sizeof e->event_id, true)) < 0)
                        return WHY("scheduled event has a missing or bad \"EventId\""), r;
                for (const char *p = e->event_id; *p; p++)
                        if (!isalnum((unsigned char) *p) && *p != '-')
                                return WHY("scheduled event \"EventId\" has unexpected characters"), -EINVAL;
                for (const char *p = e->code; *p; p++)
                        if (!isalnum((unsigned char) *p) && *p != '-')
                                return WHY("scheduled event \"Code\" has unexpected characters"), -EINVAL;
                if ((r = scheduled_time(o, "NotBefore", true, &e->not_before)) < 0)
                        return WHY("scheduled event has a missing or bad \"NotBefore\""), r;
                if ((r = scheduled_time(o, "NotAfter", false, &e->not_after)) < 0)
                        return WHY("scheduled event has a bad \"NotAfter\""), r;
                if ((r = scheduled_time(o, "NotBeforeDeadline", false, &e->not_before_deadline)) < 0)
                        return WHY("scheduled event has a bad \"NotBeforeDeadline\""), r;
                d = cJSON_GetObjectItemCaseSensitive(o, "Description");
                if (cJSON_IsString(d))
                        snprintf(e->description, sizeof e->description, "%s", d->valuestring);
                n++;
        }
        memcpy(ret, tmp, n * sizeof *tmp);
        *ret_n = n;
        return 0;
}

int imds_parse_token_text(const char *body, size_t len, char *ret, size_t retlen,
                          const char **ret_why) {
        char buf[256];
        if (retlen > sizeof buf)
                retlen = sizeof buf;
        if (trim_copy(body, len, buf, retlen) < 0)
                return WHY("value is empty or too long"), -EINVAL;
        for (const char *p = buf; *p; p++)
                if (!isalnum((unsigned char) *p) && !strchr("._:-", *p))
                        return WHY("value has unexpected characters"), -EINVAL;
        strcpy(ret, buf);
        return 0;
}

int imds_parse_identity(const char *body, size_t len, struct imds_identity *ret, const char **ret_why) {
        _cleanup_(cJSON_Deletep) cJSON *j = json_parse(body, len);
        struct imds_identity id = {};

        if (!cJSON_IsObject(j))
                return WHY("identity document is not a JSON object"), -EBADMSG;
        if (json_string(j, "instanceId", id.instance_id, sizeof id.instance_id, true) < 0)
                return WHY("identity document has a missing or bad \"instanceId\""), -ENODATA;
        /* The rest is informational: keep what fits. */
        (void) json_string(j, "instanceType", id.instance_type, sizeof id.instance_type, false);
        (void) json_string(j, "availabilityZone", id.availability_zone, sizeof id.availability_zone, false);
        (void) json_string(j, "region", id.region, sizeof id.region, false);
        *ret = id;
        return 0;
}
