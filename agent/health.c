#include "health.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
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

/* The node's own addresses (and loopback) keep a quarter of the connection
 * slots: on a hostNetwork pod the kubelet probes the node's address, so its
 * probes come from there, and a probe that cannot connect gets the agent
 * restarted, mid-event if need be. Other clients (Prometheus, anyone who
 * can reach the port) share the rest; two of them at the per-address limit
 * used to hold every slot. */
#define HEALTH_OWN_ADDRS_MAX 64
#define HEALTH_OWN_REFRESH (10 * USEC_PER_SEC)

struct health {
        struct MHD_Daemon *daemon;
        struct status *status;
        uint16_t port;
        /* Touched only by MHD's one thread once it runs (the accept policy and
         * the connection notifications run there), so unlocked. */
        unsigned foreign, foreign_max;
        struct in6_addr own[HEALTH_OWN_ADDRS_MAX]; /* IPv4 as ::ffff:a.b.c.d */
        size_t n_own, n_bound;                     /* own[0..n_bound): the bound address, kept on refresh */
        usec_t own_read;
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

/* IPv4 as IPv4-mapped IPv6, so one comparison serves both. */
static bool addr_key(const struct sockaddr *sa, struct in6_addr *ret) {
        if (!sa)
                return false;
        if (sa->sa_family == AF_INET6) {
                *ret = ((const struct sockaddr_in6 *) sa)->sin6_addr;
                return true;
        }
        if (sa->sa_family == AF_INET) {
                *ret = (struct in6_addr) { .s6_addr = { [10] = 0xff, [11] = 0xff } };
                memcpy(&ret->s6_addr[12], &((const struct sockaddr_in *) sa)->sin_addr, 4);
                return true;
        }
        return false;
}

static bool addr_is_any(const struct in6_addr *a) {
        static const struct in6_addr any4 = { .s6_addr = { [10] = 0xff, [11] = 0xff } };
        return IN6_IS_ADDR_UNSPECIFIED(a) || IN6_ARE_ADDR_EQUAL(a, &any4);
}

/* The interfaces' addresses as they are now; a node may gain one. */
static void own_refresh(struct health *h) {
        struct ifaddrs *ifs = NULL;

        h->own_read = now_monotonic();
        h->n_own = h->n_bound;
        if (getifaddrs(&ifs) < 0)
                return;
        for (struct ifaddrs *i = ifs; i && h->n_own < HEALTH_OWN_ADDRS_MAX; i = i->ifa_next)
                if (addr_key(i->ifa_addr, &h->own[h->n_own]))
                        h->n_own++;
        freeifaddrs(ifs);
}

/* 127.0.0.1, ::1 or one of the node's addresses. Not the rest of
 * 127.0.0.0/8: a client on the node can always use 127.0.0.1. */
static bool peer_reserved(const struct health *h, const struct sockaddr *peer) {
        static const struct in6_addr lo4 = { .s6_addr = { [10] = 0xff, [11] = 0xff, [12] = 127, [15] = 1 } };
        struct in6_addr a;

        if (!addr_key(peer, &a))
                return false;
        if (IN6_IS_ADDR_LOOPBACK(&a) || IN6_ARE_ADDR_EQUAL(&a, &lo4))
                return true;
        for (size_t i = 0; i < h->n_own; i++)
                if (IN6_ARE_ADDR_EQUAL(&a, &h->own[i]))
                        return true;
        return false;
}

/* MHD's accept policy: a foreign client only while foreign ones hold fewer
 * than foreign_max; MHD's own limits (total, per address) apply after. */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, _unused_ socklen_t addrlen) {
        struct health *h = cls;

        if (h->foreign < h->foreign_max || peer_reserved(h, addr))
                return MHD_YES;
        /* About to turn one away: make sure it is not the node's new address. */
        if (now_monotonic() - h->own_read >= HEALTH_OWN_REFRESH) {
                own_refresh(h);
                if (peer_reserved(h, addr))
                        return MHD_YES;
        }
        return MHD_NO;
}

/* Counts foreign connections from their start to their close; the socket
 * context marks the ones counted. */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
        struct health *h = cls;

        if (code == MHD_CONNECTION_NOTIFY_STARTED) {
                const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
                if (ci && !peer_reserved(h, ci->client_addr)) {
                        h->foreign++;
                        *socket_context = &h->foreign;
                }
        } else if (code == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context == &h->foreign) {
                h->foreign--;
                *socket_context = NULL;
        }
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
        unsigned limit = max_connections ?: HEALTH_MAX_CONNECTIONS_DEFAULT, reserve = limit / 4;
        if (reserve == 0 && limit > 1)
                reserve = 1; /* but a single slot stays open to all: reserved, it would shut every other client out */
        h->foreign_max = limit - reserve;

        fd = open_listener(host, port, &family);
        if (fd < 0)
                return fd;
        if (fstat(fd, &before) < 0) {
                r = -errno;
                close(fd);
                return r;
        }

        /* Bound to one address: clients from it are the node's own too. */
        union {
                struct sockaddr sa;
                struct sockaddr_in in;
                struct sockaddr_in6 in6;
        } b = {};
        socklen_t blen = sizeof(b);
        if (getsockname(fd, &b.sa, &blen) == 0 && addr_key(&b.sa, &h->own[0]) && !addr_is_any(&h->own[0]))
                h->n_bound = 1;
        own_refresh(h);

        /* No MHD_USE_ERROR_LOG: this module never logs, the caller does.
         * No thread pool: the accept policy and the notifications must run
         * on one thread (struct health's counters are not locked). */
        h->daemon = MHD_start_daemon(
                MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | (family == AF_INET6 ? MHD_USE_DUAL_STACK : 0),
                port, on_accept, h, handle, h,
                MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
                MHD_OPTION_LISTEN_SOCKET, fd,
                MHD_OPTION_CONNECTION_LIMIT, limit,
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
