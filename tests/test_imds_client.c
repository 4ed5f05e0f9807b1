/* The metadata client against the simulator: tokens, fallback, keep-alive,
 * caps and faults. */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "imds.h"
#include "imds_sim.h"

#define SPOT "meta-data/spot/instance-action"

static struct imds_sim *sim;
static unsigned observed;

static void count(void *ud, const char *path, int err, long status, usec_t d) { observed++; }

static struct imds *client(enum imds_mode mode, usec_t timeout) {
        struct imds_options o;
        char url[64];
        struct imds *c;
        imds_sim_url(sim, url, sizeof url);
        imds_options_default(&o);
        o.endpoint = url;
        o.mode = mode;
        o.timeout = timeout;
        o.observe = count;
        o.v2_retry_min = 200 * USEC_PER_MSEC;
        o.v2_retry_max = 400 * USEC_PER_MSEC;
        cr_assert_eq(imds_new(&o, &c), 0);
        return c;
}

static void start(void) {
        observed = 0;
        cr_assert_eq(imds_sim_start(NULL, &sim), 0);
}
static void stop(void) { sim = imds_sim_stop(sim); }

TestSuite(imds_client, .init = start, .fini = stop);

Test(imds_client, v2_token_reused_over_one_connection) {
        struct imds *c = client(IMDS_MODE_AUTO, USEC_PER_SEC);
        char *body = NULL;
        size_t len;
        for (int i = 0; i < 20; i++)
                cr_assert_eq(imds_get(c, SPOT, &body, &len), -ENOENT);
        imds_sim_set_spot(sim, "terminate", time(NULL) + 120, 0);
        cr_assert_eq(imds_get(c, SPOT, &body, &len), 0);
        struct imds_instance_action a;
        cr_assert_eq(imds_parse_instance_action(body, len, &a, NULL), 0, "%s", body);
        cr_assert_str_eq(a.action, "terminate");
        cr_assert_neq(body[len - 1], '\n', "served without a trailing newline");
        free(body);
        cr_assert(imds_using_token(c));
        cr_assert_eq(imds_sim_token_requests(sim), 1);
        cr_assert_eq(imds_sim_connections(sim), 1, "one kept-alive connection, got %llu",
                     (unsigned long long) imds_sim_connections(sim));
        cr_assert_eq(observed, 22, "one observation per request (token included)");
        imds_free(c);
}

Test(imds_client, v1_fallback_backs_off_then_returns_to_v2) {
        imds_sim_set_token_mode(sim, SIM_TOKEN_403);
        struct imds *c = client(IMDS_MODE_AUTO, USEC_PER_SEC);
        char *body;
        size_t len;
        for (int i = 0; i < 10; i++)
                cr_assert_eq(imds_get(c, SPOT, &body, &len), -ENOENT);
        cr_assert_not(imds_using_token(c));
        cr_assert_eq(imds_sim_token_requests(sim), 1, "no PUT on every request during backoff");
        imds_sim_set_token_mode(sim, SIM_TOKEN_OK);
        usleep(450 * 1000); /* past v2_retry_max */
        cr_assert_eq(imds_get(c, SPOT, &body, &len), -ENOENT);
        cr_assert(imds_using_token(c));
        cr_assert_eq(imds_sim_token_requests(sim), 2);
        imds_free(c);
}

Test(imds_client, v2_only_never_sends_v1) {
        imds_sim_set_token_mode(sim, SIM_TOKEN_405);
        struct imds *c = client(IMDS_MODE_V2_ONLY, USEC_PER_SEC);
        char *body;
        size_t len;
        cr_assert_eq(imds_get(c, SPOT, &body, &len), -EPROTO);
        cr_assert_eq(imds_last_status(c), 405);
        cr_assert_eq(imds_sim_requests(sim, NULL), 0, "no GET without a token");
        imds_free(c);
}

Test(imds_client, expired_token_refreshed_once_on_401) {
        imds_sim_set_require_v2(sim, true);
        struct imds *c = client(IMDS_MODE_AUTO, USEC_PER_SEC);
        char *body;
        size_t len;
        cr_assert_eq(imds_get(c, SPOT, &body, &len), -ENOENT);
        imds_sim_expire_tokens(sim);
        cr_assert_eq(imds_get(c, SPOT, &body, &len), -ENOENT);
        cr_assert_eq(imds_sim_token_requests(sim), 2);
        cr_assert_eq(imds_sim_unauthorized(sim), 1);
        imds_free(c);
}

Test(imds_client, repeated_401_retries_only_once) {
        struct imds *c = client(IMDS_MODE_AUTO, USEC_PER_SEC);
        char *body;
        size_t len;
        imds_sim_set_fault(sim, "meta-data/spot", SIM_FAULT_401, 0, 0);
        cr_assert_eq(imds_get(c, SPOT, &body, &len), -EACCES);
        cr_assert_eq(imds_sim_requests(sim, "/latest/" SPOT), 2);
        cr_assert_eq(imds_sim_token_requests(sim), 2);
        imds_free(c);
}

Test(imds_client, v1_client_against_v2_only_instance) {
        imds_sim_set_require_v2(sim, true);
        struct imds *c = client(IMDS_MODE_V1_ONLY, USEC_PER_SEC);
        char *body;
        size_t len;
        cr_assert_eq(imds_get(c, SPOT, &body, &len), -EACCES);
        cr_assert_eq(imds_sim_token_requests(sim), 0);
        imds_free(c);
        /* auto mode in v1 fallback meets a 401: asks for a token at once */
        imds_sim_set_token_mode(sim, SIM_TOKEN_403);
        c = client(IMDS_MODE_AUTO, USEC_PER_SEC);
        cr_assert_eq(imds_get(c, SPOT, &body, &len), -EACCES);
        imds_sim_set_token_mode(sim, SIM_TOKEN_OK);
        cr_assert_eq(imds_get(c, SPOT, &body, &len), -ENOENT, "401 forces a token attempt despite backoff");
        imds_free(c);
}

Test(imds_client, token_refreshed_before_expiry) {
        imds_sim_stop(sim);
        struct imds_sim_options so = { .require_v2 = true, .max_token_ttl = 2 };
        cr_assert_eq(imds_sim_start(&so, &sim), 0);
        struct imds *c = client(IMDS_MODE_V2_ONLY, USEC_PER_SEC);
        char *body;
        size_t len;
        cr_assert_eq(imds_get(c, SPOT, &body, &len), -ENOENT);
        usleep(1600 * 1000); /* past 3/4 of the granted 2 s */
        cr_assert_eq(imds_get(c, SPOT, &body, &len), -ENOENT);
        cr_assert_eq(imds_sim_token_requests(sim), 2, "refreshed on granted TTL, not the 6 h asked");
        cr_assert_eq(imds_sim_unauthorized(sim), 0, "never used an expired token");
        imds_free(c);
}

Test(imds_client, faults_map_to_errors) {
        struct imds *c = client(IMDS_MODE_AUTO, 300 * USEC_PER_MSEC);
        char *body;
        size_t len;
        cr_assert_eq(imds_get(c, SPOT, &body, &len), -ENOENT);

        imds_sim_set_fault(sim, "meta-data/spot", SIM_FAULT_500, 0, 1);
        cr_assert_eq(imds_get(c, SPOT, &body, &len), -EPROTO);
        cr_assert_eq(imds_last_status(c), 500);

        /* An answer a minute away: the 300 ms timeout ends the wait (without
         * it, the answer would come and read as -ENOENT). */
        imds_sim_set_fault(sim, "meta-data/spot", SIM_FAULT_SLOW, 60000, 1);
        cr_assert_eq(imds_get(c, SPOT, &body, &len), -ETIMEDOUT, "the timeout bounds the wait");

        imds_sim_set_fault(sim, "meta-data/spot", SIM_FAULT_RESET, 0, 1);
        int r = imds_get(c, SPOT, &body, &len);
        cr_assert(r == -ECONNRESET || r == -EIO, "reset -> %d", r);

        imds_sim_set_fault(sim, "meta-data/spot", SIM_FAULT_OVERSIZED, 1 << 20, 1);
        cr_assert_eq(imds_get(c, SPOT, &body, &len), -EFBIG);

        imds_sim_set_fault(sim, "meta-data/spot", SIM_FAULT_SLOW_DRIP, 50, 1);
        cr_assert_eq(imds_get(c, SPOT, &body, &len), -ETIMEDOUT);

        imds_sim_set_fault(sim, "meta-data/spot", SIM_FAULT_MALFORMED, 0, 1);
        cr_assert_eq(imds_get(c, SPOT, &body, &len), 0);
        struct imds_instance_action a;
        cr_assert_eq(imds_parse_instance_action(body, len, &a, NULL), -EBADMSG);
        free(body);

        imds_sim_clear_fault(sim);
        cr_assert_eq(imds_get(c, SPOT, &body, &len), -ENOENT, "client recovers after every fault");
        imds_free(c);
}

Test(imds_client, refused_and_bad_options) {
        struct imds_options o;
        struct imds *c = NULL;
        char *body;
        size_t len;
        imds_options_default(&o);
        o.endpoint = "http://127.0.0.1:1";
        cr_assert_eq(imds_new(&o, &c), 0);
        cr_assert_eq(imds_get(c, SPOT, &body, &len), -ECONNREFUSED);
        cr_assert_eq(imds_get(c, "meta-data/../../etc?x", &body, &len), -EINVAL);
        imds_free(c);
        c = NULL;
        o.endpoint = "file:///etc/passwd";
        cr_assert_eq(imds_new(&o, &c), -EINVAL);
        o.endpoint = "http://169.254.169.254";
        o.token_ttl = 21601;
        cr_assert_eq(imds_new(&o, &c), -EINVAL);
        cr_assert_null(c);
}

Test(imds_client, all_payload_paths) {
        struct imds *c = client(IMDS_MODE_AUTO, USEC_PER_SEC);
        char *body;
        size_t len;
        time_t t;
        imds_sim_set_rebalance(sim, 1795607813, 0);
        cr_assert_eq(imds_get(c, "meta-data/events/recommendations/rebalance", &body, &len), 0);
        cr_assert_eq(imds_parse_rebalance(body, len, &t, NULL), 0);
        cr_assert_eq(t, 1795607813);
        free(body);

        imds_sim_add_scheduled(sim, "instance-retirement", "active", "instance-event-0abc", 1795607933, 1795611533);
        cr_assert_eq(imds_get(c, "meta-data/events/maintenance/scheduled", &body, &len), 0);
        struct imds_scheduled_event ev[4];
        size_t n;
        cr_assert_eq(imds_parse_scheduled(body, len, ev, 4, &n, NULL), 0, "%s", body);
        cr_assert_eq(n, 1);
        cr_assert_eq(ev[0].not_before, 1795607933);
        free(body);

        imds_sim_set_lifecycle(sim, "Terminated");
        cr_assert_eq(imds_get(c, "meta-data/autoscaling/target-lifecycle-state", &body, &len), 0);
        char st[32];
        cr_assert_eq(imds_parse_token_text(body, len, st, sizeof st, NULL), 0);
        cr_assert_str_eq(st, "Terminated");
        free(body);

        imds_sim_set_spot(sim, "stop", 1795607933, 0);
        cr_assert_eq(imds_get(c, "meta-data/spot/termination-time", &body, &len), 0);
        cr_assert_eq(imds_parse_termination_time(body, len, &t, NULL), 0);
        cr_assert_eq(t, 1795607933);
        free(body);

        cr_assert_eq(imds_get(c, "dynamic/instance-identity/document", &body, &len), 0);
        struct imds_identity id;
        cr_assert_eq(imds_parse_identity(body, len, &id, NULL), 0);
        cr_assert_str_eq(id.instance_id, "i-0123456789abcdef0");
        free(body);
        imds_free(c);
}

/* A poll round's requests go out at once, each on a connection of its own,
 * and each answer stands alone: a bad path fails alone, a 404 is a 404. */
Test(imds_client, get_many_answers_each_path_at_once) {
        struct imds *c = client(IMDS_MODE_AUTO, USEC_PER_SEC);
        imds_sim_set_spot(sim, "stop", 1795607933, 0);
        imds_sim_set_lifecycle(sim, "InService");
        /* Every GET answered 300 ms late: none can free its connection for
         * another, so only GETs in flight together make three connections. */
        imds_sim_set_fault(sim, "meta-data/", SIM_FAULT_SLOW, 300, 0);
        struct imds_answer a[] = {
                { .path = SPOT },
                { .path = "meta-data/events/recommendations/rebalance" },
                { .path = "meta-data/autoscaling/target-lifecycle-state" },
                { .path = "meta-data/../x?y" },
        };
        cr_assert_eq(imds_get_many(c, a, 4), 0);
        struct imds_instance_action act;
        cr_assert_eq(a[0].r, 0);
        cr_assert_eq(a[0].status, 200);
        cr_assert_eq(imds_parse_instance_action(a[0].body, a[0].len, &act, NULL), 0, "%s", a[0].body);
        cr_assert_str_eq(act.action, "stop");
        cr_assert_eq(a[1].r, -ENOENT);
        cr_assert_eq(a[1].status, 404);
        cr_assert_null(a[1].body);
        cr_assert_eq(a[2].r, 0);
        cr_assert_str_eq(a[2].body, "InService");
        cr_assert_eq(a[3].r, -EINVAL, "never sent");
        cr_assert_eq(imds_sim_requests(sim, NULL), 3);
        cr_assert_eq(imds_sim_token_requests(sim), 1);
        /* The token's connection and two more: the three GETs were in flight together. */
        cr_assert_eq(imds_sim_connections(sim), 3, "got %llu", (unsigned long long) imds_sim_connections(sim));
        cr_assert_eq(observed, 4, "one observation per request sent");
        for (size_t i = 0; i < 4; i++)
                free(a[i].body);
        struct imds_answer many[IMDS_GET_MANY_MAX + 1] = {};
        cr_assert_eq(imds_get_many(c, many, IMDS_GET_MANY_MAX + 1), -EINVAL);
        imds_free(c);
}

Test(imds_client, get_many_refreshes_the_token_once_on_401) {
        imds_sim_set_require_v2(sim, true);
        struct imds *c = client(IMDS_MODE_AUTO, USEC_PER_SEC);
        struct imds_answer a[] = { { .path = SPOT }, { .path = "meta-data/instance-id" },
                                   { .path = "meta-data/autoscaling/target-lifecycle-state" } };
        cr_assert_eq(imds_get_many(c, a, 3), 0);
        cr_assert_eq(a[1].r, 0);
        free(a[1].body);
        imds_sim_expire_tokens(sim);
        cr_assert_eq(imds_get_many(c, a, 3), 0);
        cr_assert_eq(a[0].r, -ENOENT);
        cr_assert_eq(a[1].r, 0);
        cr_assert_str_eq(a[1].body, "i-0123456789abcdef0");
        free(a[1].body);
        cr_assert_eq(a[2].r, -ENOENT);
        cr_assert_eq(imds_sim_unauthorized(sim), 3);
        cr_assert_eq(imds_sim_token_requests(sim), 2, "one refresh for the three 401s");
        imds_free(c);
}

/* A real instance answers with its own headers (the token's remaining TTL
 * on every answer, Last-Modified, ...) and closes the connection after each
 * answer: every request then has a connection of its own. */
Test(imds_client, real_instance_closes_every_connection) {
        sim = imds_sim_stop(sim);
        cr_assert_eq(imds_sim_start(&(struct imds_sim_options) { .require_v2 = true, .real_headers = true }, &sim), 0);
        imds_sim_set_spot(sim, "terminate", 1795607933, 0);
        struct imds *c = client(IMDS_MODE_V2_ONLY, USEC_PER_SEC);
        char *body;
        size_t len;
        for (int i = 0; i < 5; i++) {
                cr_assert_eq(imds_get(c, SPOT, &body, &len), 0);
                cr_assert(strstr(body, "\"terminate\""), "%s", body);
                free(body);
                cr_assert_eq(imds_get(c, "meta-data/events/recommendations/rebalance", &body, &len), -ENOENT);
        }
        struct imds_answer a[] = { { .path = SPOT }, { .path = "meta-data/instance-id" } };
        cr_assert_eq(imds_get_many(c, a, 2), 0);
        cr_assert(a[0].r == 0 && a[1].r == 0);
        free(a[0].body);
        free(a[1].body);
        cr_assert_eq(imds_sim_token_requests(sim), 1);
        cr_assert_eq(imds_sim_unauthorized(sim), 0);
        cr_assert_eq(imds_sim_connections(sim), 13, "one per request, token included: %llu",
                     (unsigned long long) imds_sim_connections(sim));
        imds_free(c);
}

/* ---- answers no server library would send: a raw server ---- */

/* Answers the i-th request with answers[i], over as many connections as the
 * client opens, then stops. An answer starting with '!' is sent without it,
 * and the connection closed after it. */
struct raw_server {
        int fd;
        unsigned port;
        const char *const *answers;
        size_t n;
        pthread_t thread;
};

static void *raw_serve(void *arg) {
        struct raw_server *s = arg;
        size_t next = 0;
        while (next < s->n) {
                int c = accept(s->fd, NULL, NULL);
                char buf[4096];
                size_t got = 0;
                if (c < 0)
                        break;
                while (next < s->n) {
                        ssize_t r = recv(c, buf + got, sizeof buf - 1 - got, 0);
                        if (r <= 0)
                                break;
                        got += (size_t) r;
                        buf[got] = 0;
                        if (!strstr(buf, "\r\n\r\n"))
                                continue;
                        got = 0;
                        /* "!answer": send it, then close (the answer ends with the connection) */
                        const char *a = s->answers[next++];
                        bool close_after = *a == '!';
                        a += close_after;
                        (void) !send(c, a, strlen(a), MSG_NOSIGNAL);
                        if (close_after)
                                break;
                }
                close(c);
        }
        return NULL;
}

static void raw_start(struct raw_server *s, const char *const *answers, size_t n) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t l = sizeof a;
        *s = (struct raw_server) { .answers = answers, .n = n };
        s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert_geq(s->fd, 0);
        cr_assert_eq(bind(s->fd, (struct sockaddr *) &a, sizeof a), 0);
        cr_assert_eq(listen(s->fd, 8), 0);
        cr_assert_eq(getsockname(s->fd, (struct sockaddr *) &a, &l), 0);
        s->port = ntohs(a.sin_port);
        cr_assert_eq(pthread_create(&s->thread, NULL, raw_serve, s), 0);
}

static void raw_stop(struct raw_server *s) {
        shutdown(s->fd, SHUT_RDWR); /* wakes accept() */
        pthread_join(s->thread, NULL);
        close(s->fd);
}

/* A v1 client of the raw server; max_body 0: the default. */
static struct imds *raw_client(const struct raw_server *s, size_t max_body) {
        struct imds_options o;
        struct imds *c;
        char url[64];
        snprintf(url, sizeof url, "http://127.0.0.1:%u", s->port);
        imds_options_default(&o);
        o.endpoint = url;
        o.mode = IMDS_MODE_V1_ONLY;
        if (max_body)
                o.max_body = max_body;
        cr_assert_eq(imds_new(&o, &c), 0);
        return c;
}

/* Found by fuzzing (tests/fuzz/corpus/imds_client/crash-curl-folded-header):
 * libcurl before 8.1.0 (Debian 12: 7.88) kept a pointer to the previous
 * answer's freed headers in a reused handle and appended a folded first
 * header line to it: use after free, then a double free that aborted. */
Test(imds_client, folded_first_header_after_an_answer) {
        static const char *const answers[] = {
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nok",
                "HTTP/1.1 200 OK\r\n\tX-Folded: y\r\nContent-Length: 2\r\n\r\nok",
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        };
        struct raw_server s;
        char *body = NULL;
        size_t len;
        int r;

        raw_start(&s, answers, 3);
        struct imds *c = raw_client(&s, 0);
        cr_assert_eq(imds_get(c, SPOT, &body, &len), 0);
        cr_assert_str_eq(body, "ok");
        free(body);
        body = NULL;
        r = imds_get(c, SPOT, &body, &len);
        cr_assert(r == 0 || r == -EIO, "a folded first header is taken or refused, got %d", r);
        free(body);
        cr_assert_eq(imds_get(c, SPOT, &body, &len), 0, "and the client keeps working");
        free(body);
        imds_free(c);
        raw_stop(&s);
}

/* The client's own HTTP/1.1 framing (common/imds.c, "transport"): every way
 * an answer may be delimited, and the ones it must refuse, each answered by
 * a raw server and followed by a good answer the client must still read. */
static int raw_get(const char *answer, char **body, size_t *len) {
        const char *const answers[] = { answer, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood" };
        struct raw_server s;
        char *b2 = NULL;
        size_t l2;
        raw_start(&s, answers, 2);
        struct imds *c = raw_client(&s, 64);
        *body = NULL;
        int r = imds_get(c, SPOT, body, len);
        cr_assert_eq(imds_get(c, SPOT, &b2, &l2), 0, "after %s", answer);
        cr_assert_str_eq(b2, "good");
        free(b2);
        imds_free(c);
        raw_stop(&s);
        return r;
}

Test(imds_client, every_framing_read_and_bad_ones_refused) {
        static const struct { const char *answer, *body; int r; } cases[] = {
                { "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "hello", 0 },
                { "HTTP/1.1 200\r\ncontent-length:5\r\n\r\nhello", "hello", 0 },
                { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\nT: 1\r\n\r\n", "hello", 0 },
                { "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "ok", 0 },
                { "!HTTP/1.0 200 OK\r\n\r\nto the end", "to the end", 0 },
                { "!HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nto the end", "to the end", 0 },
                { "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "", 0 },
                /* kept alive by its framing, closed by the server right after:
                 * the next request finds it closed and goes on a new one */
                { "!HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "ok", 0 },
                { "HTTP/1.1 204 No Content\r\n\r\n", NULL, -EPROTO },
                { "HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno!", NULL, -ENOENT },
                /* refused */
                /* max_body is 64 */
                { "HTTP/1.1 200 OK\r\nContent-Length: 65\r\n\r\naaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", NULL, -EFBIG },
                { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40\r\naaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n1\r\na\r\n0\r\n\r\n", NULL, -EFBIG },
                { "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", NULL, -EIO },
                { "HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok", NULL, -EIO },
                { "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok", NULL, -EIO },
                { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", NULL, -EIO },
                { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n", NULL, -EIO },
                { "HTTP/2 200\r\n\r\n", NULL, -EIO },
                { "HTTP/1.1 2x0 OK\r\n\r\n", NULL, -EIO },
                { "HTTP/1.1 101 Switching Protocols\r\n\r\n", NULL, -EIO },
                { "HTTP/1.1 200 OK\r\n folded: x\r\nContent-Length: 2\r\n\r\nok", NULL, -EIO },
                { "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", NULL, -EIO },
                { "HTTP/1.1 200 OK\r\nX: a\nContent-Length: 2\r\n\r\nok", NULL, -EIO },
                { "!HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", NULL, -ECONNRESET },
                { "!HTTP/1.1 200 OK\r\nX: 1\r\n", NULL, -ECONNRESET },
                { "!HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", NULL, -ECONNRESET },
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                char *body;
                size_t len;
                int r = raw_get(cases[i].answer, &body, &len);
                cr_assert_eq(r, cases[i].r, "case %zu (%s): %d, not %d", i, cases[i].answer, r, cases[i].r);
                if (cases[i].body) {
                        cr_assert_str_eq(body, cases[i].body, "case %zu", i);
                        cr_assert_eq(len, strlen(cases[i].body));
                }
                free(body);
        }
}

/* A header block past the 8 KiB bound is refused, not buffered on. */
Test(imds_client, oversized_header_block_refused) {
        static char big[12000];
        int n = snprintf(big, sizeof big, "HTTP/1.1 200 OK\r\nX-Big: ");
        memset(big + n, 'a', 10000);
        strcpy(big + n + 10000, "\r\nContent-Length: 2\r\n\r\nok");
        char *body;
        size_t len;
        cr_assert_eq(raw_get(big, &body, &len), -EIO);
        free(body);
}
