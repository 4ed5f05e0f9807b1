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
        CURL *curl;              /* options only: each request runs on a copy (request()) */
        CURLSH *share;           /* the kept-alive connection, shared by the copies */
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
        struct http_body body;
        struct http_header_capture ttl_header;
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
        c->share = curl_share_init();
        if (!c->endpoint || !c->curl || !c->share ||
            curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT) != CURLSHE_OK) {
                imds_free(c);
                return -ENOMEM;
        }
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
        c->body.limit = o->max_body;
        c->ttl_header.name = "X-Aws-Ec2-Metadata-Token-Ttl-Seconds";

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
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &c->body);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, http_header_capture_cb);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, &c->ttl_header);
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
        if (c->share)
                curl_share_cleanup(c->share);
        http_body_done(&c->body);
        free(c->endpoint);
        free(c);
        return NULL;
}

long imds_last_status(const struct imds *c) { return c->last_status; }
bool imds_using_token(const struct imds *c) { return c->have_token; }

/* One HTTP exchange. Returns 0 with the status in *ret_status, or a transport
 * -errno. The observer sees every request, whatever its outcome. */
static int request(struct imds *c, const char *path, bool put, struct curl_slist *headers,
                   long *ret_status) {
        char url[512];
        long status = 0;
        int r;

        if ((size_t) snprintf(url, sizeof url, "%s/latest/%s", c->endpoint, path) >= sizeof url)
                return -EINVAL;
        /* Never a handle that already ran: libcurl before 8.1.0 (Debian 12
         * ships 7.88) frees a reused handle's stored headers, then reads and
         * reallocates them when the next answer starts with a folded header
         * line (curl issue 11101): any server answering could crash us. */
        _cleanup_(curl_easy_cleanupp) CURL *h = curl_easy_duphandle(c->curl);
        if (!h)
                return -ENOMEM;
        curl_easy_setopt(h, CURLOPT_SHARE, c->share);
        http_body_reset(&c->body);
        c->ttl_header.found = false;
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, put ? "PUT" : NULL);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);

        usec_t start = now_monotonic();
        r = http_curl_errno(curl_easy_perform(h), &c->body);
        if (r == 0)
                curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        c->last_status = status;
        if (c->observe)
                c->observe(c->userdata, path, r < 0 ? r : status == 200 ? 0 : status == 404 ? -ENOENT
                                                      : status == 401 ? -EACCES : -EPROTO,
                           status, now_monotonic() - start);
        if (r < 0)
                return r;
        *ret_status = status;
        return 0;
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
        char ttl[64];
        long status;
        int r;

        snprintf(ttl, sizeof ttl, "X-aws-ec2-metadata-token-ttl-seconds: %u", c->token_ttl);
        struct curl_slist *hdr = curl_slist_append(NULL, ttl);
        if (!hdr)
                return -ENOMEM;
        usec_t start = now_monotonic();
        r = request(c, TOKEN_PATH, true, hdr, &status);
        curl_slist_free_all(hdr);
        if (r < 0)
                return r;
        if (status != 200)
                return status == 404 ? -ENOENT : -EPROTO;
        if (!token_text_valid(c->body.data, c->body.len))
                return -EBADMSG;

        /* The service may grant less than we asked for. */
        unsigned granted = c->token_ttl;
        if (c->ttl_header.found) {
                char *end;
                unsigned long v = strtoul(c->ttl_header.value, &end, 10);
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
        snprintf(hline, sizeof hline, "X-aws-ec2-metadata-token: %.*s", (int) c->body.len, c->body.data);
        c->token_header = curl_slist_append(NULL, hline);
        explicit_bzero(hline, sizeof hline);
        if (!c->token_header)
                return -ENOMEM;
        memcpy(c->token, c->body.data, c->body.len);
        c->token[c->body.len] = 0;
        explicit_bzero(c->body.data, c->body.len);
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

int imds_get(struct imds *c, const char *path, char **ret_body, size_t *ret_len) {
        long status = 0;
        int r;

        for (const char *p = path; *p; p++)
                if (!isalnum((unsigned char) *p) && !strchr("/-_.", *p))
                        return -EINVAL;

        r = token_ensure(c, false);
        if (r < 0)
                return r;
        r = request(c, path, false, c->token_header, &status);
        if (r == 0 && status == 401 && c->mode != IMDS_MODE_V1_ONLY) {
                /* Expired/unknown token, or v1 refused: one fresh token, one retry. */
                token_forget(c);
                r = token_ensure(c, true);
                if (r < 0)
                        return r;
                if (c->have_token)
                        r = request(c, path, false, c->token_header, &status);
        }
        if (r < 0)
                return r;
        switch (status) {
        case 200:
                break;
        case 404:
                return -ENOENT;
        case 401:
                return -EACCES;
        default:
                return -EPROTO;
        }
        char *b = malloc(c->body.len + 1);
        if (!b)
                return -ENOMEM;
        memcpy(b, c->body.data ? c->body.data : "", c->body.len);
        b[c->body.len] = 0;
        *ret_body = b;
        if (ret_len)
                *ret_len = c->body.len;
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
