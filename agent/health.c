#include "health.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macro.h"

#define HEALTH_MAX_CONNECTIONS_DEFAULT 32
#define HEALTH_PER_IP_LIMIT 16
#define HEALTH_BACKLOG 16
#define HEALTH_CONNECTION_TIMEOUT 5 /* seconds */
/* Small enough that an oversized request line or header is refused by MHD
 * itself, before the handler runs. */
#define HEALTH_CONNECTION_MEMORY (16 * 1024)

struct health {
        struct MHD_Daemon *daemon;
        struct status *status;
        uint16_t port;
};

int health_parse_addr(const char *addr, char *host, size_t hostlen, uint16_t *ret_port) {
        char h[INET6_ADDRSTRLEN];
        const char *p, *colon;
        unsigned char buf[sizeof(struct in6_addr)];
        unsigned long port = 0;
        size_t n;
        int family;

        if (!addr)
                return -EINVAL;
        if (addr[0] == '[') {
                const char *end = strchr(addr, ']');
                if (!end || end[1] != ':')
                        return -EINVAL;
                p = addr + 1;
                n = (size_t) (end - p);
                colon = end + 1;
                family = AF_INET6;
        } else {
                colon = strchr(addr, ':');
                /* A second colon is an unbracketed IPv6 address: ambiguous, refused. */
                if (!colon || strchr(colon + 1, ':'))
                        return -EINVAL;
                p = addr;
                n = (size_t) (colon - p);
                family = AF_INET;
        }
        if (n == 0 || n >= sizeof(h))
                return -EINVAL;
        memcpy(h, p, n);
        h[n] = 0;
        /* Numeric literals only: resolving a name here would block and could
         * bind somewhere else than the operator meant. */
        if (inet_pton(family, h, buf) != 1)
                return -EINVAL;

        const char *d = colon + 1;
        if (!*d || strlen(d) > 5)
                return -EINVAL;
        for (; *d; d++) {
                if (*d < '0' || *d > '9')
                        return -EINVAL;
                port = port * 10 + (unsigned long) (*d - '0');
        }
        if (port > 65535)
                return -EINVAL;

        if (host) {
                if (hostlen <= n)
                        return -EINVAL;
                memcpy(host, h, n + 1);
        }
        *ret_port = (uint16_t) port;
        return 0;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned code, const char *type, void *body,
                             size_t len, enum MHD_ResponseMemoryMode mode) {
        struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
        enum MHD_Result ret;

        if (!r) {
                if (mode == MHD_RESPMEM_MUST_FREE)
                        free(body);
                return MHD_NO; /* MHD closes the connection */
        }
        if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type) != MHD_YES ||
            MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES ||
            (code == MHD_HTTP_METHOD_NOT_ALLOWED &&
             MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD") != MHD_YES))
                ret = MHD_NO;
        else
                ret = MHD_queue_response(c, code, r);
        MHD_destroy_response(r);
        return ret;
}

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned code, const char *text) {
        return reply(c, code, "text/plain; charset=utf-8", (void *) text, strlen(text),
                     MHD_RESPMEM_MUST_COPY);
}

static bool has_body(struct MHD_Connection *c) {
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        const char *te = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);

        return te || (cl && !streq(cl, "0"));
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              _unused_ const char *version, _unused_ const char *upload_data,
                              size_t *upload_data_size, void **con_cls) {
        /* Per-request state needs no allocation: the address says what we saw. */
        static int seen_headers, seen_body;
        struct health *h = cls;
        char why[160], text[200];
        char *body = NULL;
        size_t len = 0;
        bool ok;

        if (!*con_cls) {
                *con_cls = &seen_headers;
                /* Answered before any body is read; MHD then closes the connection. */
                if (!streq(method, MHD_HTTP_METHOD_GET) && !streq(method, MHD_HTTP_METHOD_HEAD))
                        return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
                if (has_body(c))
                        return reply_text(c, MHD_HTTP_CONTENT_TOO_LARGE, "request body not allowed\n");
                return MHD_YES;
        }
        if (*upload_data_size) {
                /* Unreachable without a length or chunked header, but never trust that. */
                *upload_data_size = 0;
                *con_cls = &seen_body;
                return MHD_YES;
        }
        if (*con_cls == &seen_body)
                return reply_text(c, MHD_HTTP_CONTENT_TOO_LARGE, "request body not allowed\n");

        if (streq(url, "/healthz") || streq(url, "/readyz")) {
                bool live = url[1] == 'h';
                ok = live ? status_live(h->status, now_monotonic(), why, sizeof(why))
                          : status_ready(h->status, now_monotonic(), why, sizeof(why));
                snprintf(text, sizeof(text), "%s\n", ok ? (live ? "ok" : "ready") : why);
                return reply_text(c, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, text);
        }
        if (streq(url, "/metrics")) {
                if (status_render_metrics(h->status, &body, &len) < 0)
                        return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
                return reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body, len,
                             MHD_RESPMEM_MUST_FREE);
        }
        if (streq(url, "/status")) {
                if (status_render_json(h->status, &body, &len) < 0)
                        return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
                return reply(c, MHD_HTTP_OK, "application/json", body, len, MHD_RESPMEM_MUST_FREE);
        }
        return reply_text(c, MHD_HTTP_NOT_FOUND, "not found\n");
}

/* Our own socket rather than MHD_OPTION_SOCK_ADDR, so bind failures come
 * back as an errno (MHD only says NULL). */
static int open_listener(const char *host, uint16_t port, int *ret_family) {
        union {
                struct sockaddr sa;
                struct sockaddr_in in;
                struct sockaddr_in6 in6;
        } a = {};
        socklen_t alen;
        int fd, one = 1, zero = 0;

        if (inet_pton(AF_INET, host, &a.in.sin_addr) == 1) {
                a.in.sin_family = AF_INET;
                a.in.sin_port = htons(port);
                alen = sizeof(a.in);
        } else if (inet_pton(AF_INET6, host, &a.in6.sin6_addr) == 1) {
                a.in6.sin6_family = AF_INET6;
                a.in6.sin6_port = htons(port);
                alen = sizeof(a.in6);
        } else
                return -EINVAL;

        fd = socket(a.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
            /* "[::]" should take IPv4 too, whatever net.ipv6.bindv6only says. */
            (a.sa.sa_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) < 0) ||
            bind(fd, &a.sa, alen) < 0 || listen(fd, HEALTH_BACKLOG) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        *ret_family = a.sa.sa_family;
        return fd;
}

int health_start(const char *addr, struct status *st, unsigned max_connections, struct health **ret) {
        char host[INET6_ADDRSTRLEN];
        uint16_t port;
        int r, fd, family = AF_UNSPEC;
        struct stat before;

        r = health_parse_addr(addr, host, sizeof(host), &port);
        if (r < 0)
                return r;
        if (!st)
                return -EINVAL;
        _cleanup_free_ struct health *h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        h->status = st;

        fd = open_listener(host, port, &family);
        if (fd < 0)
                return fd;
        if (fstat(fd, &before) < 0) {
                r = -errno;
                close(fd);
                return r;
        }

        /* No MHD_USE_ERROR_LOG: this module never logs, the caller does. */
        h->daemon = MHD_start_daemon(
                MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | (family == AF_INET6 ? MHD_USE_DUAL_STACK : 0),
                port, NULL, NULL, handle, h,
                MHD_OPTION_LISTEN_SOCKET, fd,
                MHD_OPTION_CONNECTION_LIMIT, (unsigned) (max_connections ?: HEALTH_MAX_CONNECTIONS_DEFAULT),
                MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned) HEALTH_PER_IP_LIMIT,
                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) HEALTH_CONNECTION_TIMEOUT,
                MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) HEALTH_CONNECTION_MEMORY,
                MHD_OPTION_END);
        if (!h->daemon) {
                /* Whether MHD closed a socket it was handed on failure differs
                 * between versions: close it only if fd is still that socket. */
                struct stat after;
                if (fstat(fd, &after) == 0 && after.st_ino == before.st_ino && after.st_dev == before.st_dev)
                        close(fd);
                return -EIO;
        }

        const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
        if (info && info->port)
                h->port = info->port;
        else {
                union {
                        struct sockaddr_in in;
                        struct sockaddr_in6 in6;
                } a = {};
                socklen_t alen = sizeof(a);
                if (getsockname(fd, (struct sockaddr *) &a, &alen) == 0)
                        h->port = ntohs(family == AF_INET ? a.in.sin_port : a.in6.sin6_port);
        }
        *ret = TAKE_PTR(h);
        return 0;
}

uint16_t health_port(const struct health *h) {
        return h ? h->port : 0;
}

struct health *health_stop(struct health *h) {
        if (!h)
                return NULL;
        /* Joins the server thread; it closes the listening socket too. */
        MHD_stop_daemon(h->daemon);
        free(h);
        return NULL;
}
