/* libFuzzer target: the health server's request handling, and
 * health_parse_addr.
 *
 * The server runs once, on 127.0.0.1 port 0, over a status with events in
 * it. Each input is written raw to a fresh loopback connection, the write
 * side is shut, and the answer read until the server closes or 2 s pass:
 * whatever the bytes, the server must answer with HTTP or close, and never
 * crash (its thread is instrumented like the rest). Source addresses rotate
 * over 127.0.0.1-250 so the per-client connection limit never refuses one.
 * An input starting with '@' is an address for health_parse_addr instead. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fuzz.h"
#include "health.h"
#include "macro.h"
#include "status.h"

#define IO_TIMEOUT_MS 2000

static struct status *st;
static struct health *srv;
static uint16_t port;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        if (status_new(&st) < 0)
                abort();
        usec_t now = now_realtime();
        status_set_info(st, "ip-10-0-1-2.ec2.internal", "i-0123456789abcdef0", false, USEC_PER_SEC);
        status_set_state(st, "handling");
        status_set_imds_mode(st, "v2");
        status_heartbeat(st, now_monotonic());
        status_poll_done(st, now, now_monotonic(), true);
        status_imds_request(st, SOURCE_SPOT, RESULT_OK, 1200);
        status_notice(st, EVENT_SPOT_INTERRUPTION);
        struct status_event e = {
                .ev = { .id = "spot-i-0123456789abcdef0-terminate", .kind = EVENT_SPOT_INTERRUPTION,
                        .detail = "terminate", .deadline = (time_t) (now / USEC_PER_SEC) + 120 },
                .phase = "evicting", .first_seen = now, .last_seen = now,
                .tl = { .fenced = now, .first_eviction = now },
        };
        status_upsert_event(st, &e);
        if (health_start("127.0.0.1:0", st, 32, &srv) < 0)
                abort();
        port = health_port(srv);
        return 0;
}

static void fuzz_addr(const uint8_t *data, size_t size) {
        _cleanup_free_ char *a = fuzz_strndup(data, size);
        static const size_t lens[] = { 0, 1, 8, 16, 46, 64 };
        if (!a)
                return;
        for (size_t i = 0; i < ELEMENTSOF(lens); i++) {
                char host[64];
                unsigned char bin[16];
                uint16_t p = 4242;
                memset(host, 0x5a, sizeof host);
                int r = health_parse_addr(a, lens[i] ? host : NULL, lens[i], &p);
                if (r < 0) {
                        FUZZ_CHECK(r == -EINVAL && p == 4242);
                        continue;
                }
                if (lens[i]) {
                        FUZZ_CHECK(strlen(host) < lens[i]);
                        /* Numeric only: what health_start binds is what was written. */
                        FUZZ_CHECK(inet_pton(AF_INET, host, bin) == 1 || inet_pton(AF_INET6, host, bin) == 1);
                }
        }
}

static int remaining_ms(const struct timespec *deadline) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long ms = (deadline->tv_sec - now.tv_sec) * 1000 + (deadline->tv_nsec - now.tv_nsec) / 1000000;
        return ms < 0 ? 0 : (int) ms;
}

static void fuzz_http(const uint8_t *data, size_t size) {
        static unsigned n;
        struct sockaddr_in src = { .sin_family = AF_INET }, dst = { .sin_family = AF_INET, .sin_port = htons(port) };
        struct timespec deadline;
        char answer[65536];
        size_t got = 0;
        bool checked = false;
        int fd;

        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += IO_TIMEOUT_MS / 1000;
        src.sin_addr.s_addr = htonl(0x7f000001u + n++ % 250);
        dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                abort();
        if (bind(fd, (struct sockaddr *) &src, sizeof src) < 0 ||
            (connect(fd, (struct sockaddr *) &dst, sizeof dst) < 0 && errno != EINPROGRESS)) {
                close(fd);
                return;
        }
        /* Write what the server takes (it may answer and close early: oversized
         * lines), then end the request stream. */
        size_t off = 0;
        while (off < size && remaining_ms(&deadline) > 0) {
                struct pollfd p = { .fd = fd, .events = POLLOUT };
                if (poll(&p, 1, remaining_ms(&deadline)) <= 0)
                        break;
                ssize_t w = send(fd, data + off, size - off, MSG_NOSIGNAL);
                if (w < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                continue;
                        break;
                }
                off += (size_t) w;
        }
        (void) shutdown(fd, SHUT_WR);
        while (remaining_ms(&deadline) > 0) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                if (poll(&p, 1, remaining_ms(&deadline)) <= 0)
                        break;
                ssize_t r = recv(fd, answer + got, sizeof answer - 1 - got, 0);
                if (r < 0 && (errno == EAGAIN || errno == EINTR))
                        continue;
                if (r <= 0)
                        break;
                got += (size_t) r;
                if (!checked && got >= 7) {
                        /* Whatever came in, what goes out is HTTP (MHD's own 4xx included). */
                        FUZZ_CHECK(memcmp(answer, "HTTP/1.", 7) == 0);
                        checked = true;
                }
                if (got == sizeof answer - 1)
                        got = 0; /* only the start matters; keep draining */
        }
        close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size >= 1 && data[0] == '@')
                fuzz_addr(data + 1, size - 1);
        else
                fuzz_http(data, size);
        return 0;
}
