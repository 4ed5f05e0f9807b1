/* libFuzzer target: the IMDS client end to end (token PUT and its answer,
 * the TTL header, 401 retry, v1 fallback, size cap, keep-alive) and the
 * detection on top of it (detect_source: request, parse, events).
 *
 * A plain-socket server on 127.0.0.1 answers every request with the next
 * raw HTTP response of the input: first byte = mode (auto, v2, v1) and
 * source (spot, rebalance, scheduled, asg); then responses separated by
 * lines "%%". After the last one the connection is closed; a connection
 * with no new request within 3 ms is closed too, so a response shorter
 * than it claims ends the transfer then instead of at the timeout. Each
 * input runs two polls on a fresh client, as the agent's loop would. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "detect.h"
#include "fuzz.h"
#include "imds.h"

#define MAX_PARTS 8

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct fuzz_part parts[MAX_PARTS];
static size_t nparts, next_part;
static uint16_t port;

static bool read_request(int fd) {
        char buf[8192];
        size_t got = 0;
        for (;;) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                if (poll(&p, 1, 3) <= 0)
                        return false;
                ssize_t r = recv(fd, buf + got, sizeof buf - 1 - got, 0);
                if (r <= 0)
                        return false;
                got += (size_t) r;
                buf[got] = 0;
                if (strstr(buf, "\r\n\r\n"))
                        return true; /* the client sends no request bodies */
                if (got == sizeof buf - 1)
                        return false;
        }
}

static void *serve(void *arg) {
        int lfd = *(int *) arg;
        for (;;) {
                int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
                if (fd < 0)
                        continue;
                while (read_request(fd)) {
                        /* A copy: the input is gone once the client gave up on it. */
                        char *answer = NULL;
                        size_t n = 0;
                        pthread_mutex_lock(&lock);
                        if (next_part < nparts) {
                                n = parts[next_part].n;
                                answer = malloc(n ? n : 1);
                                if (answer)
                                        memcpy(answer, parts[next_part].p, n);
                                next_part++;
                        }
                        pthread_mutex_unlock(&lock);
                        if (!answer)
                                break;
                        for (size_t off = 0; off < n;) {
                                ssize_t w = send(fd, answer + off, n - off, MSG_NOSIGNAL);
                                if (w <= 0)
                                        break;
                                off += (size_t) w;
                        }
                        free(answer);
                        pthread_mutex_lock(&lock);
                        bool last = next_part >= nparts;
                        pthread_mutex_unlock(&lock);
                        if (last)
                                break; /* nothing more to say: the client sees the end at once */
                }
                close(fd);
        }
        return NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        static int lfd;
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t alen = sizeof a;
        pthread_t t;

        lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (lfd < 0 || bind(lfd, (struct sockaddr *) &a, sizeof a) < 0 || listen(lfd, 16) < 0 ||
            getsockname(lfd, (struct sockaddr *) &a, &alen) < 0 || pthread_create(&t, NULL, serve, &lfd) != 0)
                abort();
        port = ntohs(a.sin_port);
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const enum imds_mode modes[] = { IMDS_MODE_AUTO, IMDS_MODE_V2_ONLY, IMDS_MODE_V1_ONLY, IMDS_MODE_AUTO };
        struct imds_options o;
        struct imds *c = NULL;
        char endpoint[64];

        if (size < 1)
                return 0;
        pthread_mutex_lock(&lock);
        nparts = fuzz_split(data + 1, size - 1, "\n%%\n", parts, MAX_PARTS);
        next_part = 0;
        pthread_mutex_unlock(&lock);

        snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%u/", port);
        imds_options_default(&o);
        o.endpoint = endpoint;
        o.mode = modes[data[0] & 3];
        o.timeout = 2 * USEC_PER_SEC;
        o.max_body = 2048; /* small, so the size cap is within reach */
        o.v2_retry_min = 1; /* retry v2 on the second poll already */
        o.v2_retry_max = 1;
        if (imds_new(&o, &c) < 0)
                abort();
        enum event_kind k = (enum event_kind) ((data[0] >> 2) % _EVENT_KIND_MAX);
        for (int poll_round = 0; poll_round < 2; poll_round++) {
                struct detect_result res;
                int r = detect_source(c, k, "i-0123456789abcdef0", 120 * USEC_PER_SEC, &res);
                FUZZ_CHECK(r <= 0 && res.n <= IMDS_SCHEDULED_MAX);
                /* A reason only for a body that does not parse (a bad token answer
                 * in v2-only mode is -EBADMSG too, without one). */
                if (res.why)
                        FUZZ_CHECK(r == -EBADMSG || r == -EINVAL || r == -ENODATA || r == -E2BIG);
                for (size_t i = 0; i < res.n; i++)
                        FUZZ_CHECK(res.events[i].id[0] && memchr(res.events[i].id, 0, sizeof res.events[i].id));
                if (r == 0 && imds_using_token(c))
                        FUZZ_CHECK(o.mode != IMDS_MODE_V1_ONLY);
        }
        imds_free(c);
        /* Nothing of this input may reach the next one. */
        pthread_mutex_lock(&lock);
        nparts = next_part = 0;
        pthread_mutex_unlock(&lock);
        return 0;
}
