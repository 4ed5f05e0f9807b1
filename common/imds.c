#include "imds.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http.h"

#define TOKEN_PATH "api/token"
#define TOKEN_MAX 512 /* real tokens are ~56 bytes; anything far longer is not a token */

struct imds {
        char *endpoint;
        char authority[300];     /* host[:port] as given: the Host header */
        char prefix[256];        /* a path before /latest, if the endpoint has one */
        char host[256];
        uint16_t port;
        struct sockaddr_storage addr; /* when host is an address */
        socklen_t addr_len;           /* 0: host is a name */
        int idle[IMDS_GET_MANY_MAX];  /* kept-alive connections */
        size_t nidle;
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
        char token_header[TOKEN_MAX + 64]; /* "X-aws-ec2-metadata-token: ..." */
        usec_t v2_next_try;      /* monotonic: no PUT before (v1 fallback) */
        unsigned v2_failures;

        long last_status;
};

struct wire;

/* One request: what it asks, what came back. */
struct xfer {
        const char *path;
        struct wire *w;      /* its connection and buffers while it runs */
        bool pending;        /* put by xfer_add(), not yet run */
        struct http_body body;
        struct http_header_capture *capture; /* NULL: no header is wanted */
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

static int endpoint_parse(struct imds *c);
static void idle_close_all(struct imds *c);

int imds_new(const struct imds_options *o, struct imds **ret) {
        if (!o->endpoint || !endpoint_valid(o->endpoint) || o->token_ttl < 1 ||
            o->token_ttl > 21600 || o->timeout == 0 || o->max_body == 0 ||
            o->mode > IMDS_MODE_V1_ONLY)
                return -EINVAL;

        struct imds *c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->endpoint = strdup(o->endpoint);
        if (!c->endpoint) {
                imds_free(c);
                return -ENOMEM;
        }
        /* One trailing slash at most, so URLs are endpoint + "/latest/...". */
        size_t n = strlen(c->endpoint);
        while (n > 0 && c->endpoint[n - 1] == '/')
                c->endpoint[--n] = 0;
        if (endpoint_parse(c) < 0) {
                imds_free(c);
                return -EINVAL;
        }

        c->mode = o->mode;
        c->token_ttl = o->token_ttl;
        c->timeout = o->timeout;
        c->connect_timeout = o->connect_timeout ? o->connect_timeout : o->timeout;
        c->max_body = o->max_body;
        c->v2_retry_min = o->v2_retry_min ? o->v2_retry_min : 5 * USEC_PER_SEC;
        c->v2_retry_max = o->v2_retry_max > c->v2_retry_min ? o->v2_retry_max : c->v2_retry_min;
        c->observe = o->observe;
        c->userdata = o->userdata;

        *ret = c;
        return 0;
}

static void token_forget(struct imds *c) {
        explicit_bzero(c->token, sizeof c->token);
        explicit_bzero(c->token_header, sizeof c->token_header);
        c->have_token = false;
}

struct imds *imds_free(struct imds *c) {
        if (!c)
                return NULL;
        token_forget(c);
        idle_close_all(c);
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

/* ---- transport: HTTP/1.1 on plain sockets ----
 *
 * The metadata service speaks plain HTTP on a link-local address and a real
 * instance closes every connection after its answer, so each request pays a
 * connection. libcurl's multi interface cost about 90 us of CPU per request
 * above what the requests themselves cost (bench_imds: 19 system calls per
 * request against 8), nearly all of it the generic machinery around a new
 * connection. What the service needs is small: one GET or PUT, one answer
 * framed by Content-Length (chunked and read-to-close are taken too), a
 * kept-alive connection when the server keeps it. Everything read is
 * bounded: the header block (IMDS_HEAD_MAX), the body (max_body), a chunk
 * size line, the time (timeout, connect_timeout). */

#define IMDS_HEAD_MAX 8192  /* a real answer's headers are ~300 bytes */
#define IMDS_REQ_MAX (512 + TOKEN_MAX + 256)

enum xstate { X_IDLE, X_CONNECTING, X_SENDING, X_HEAD, X_BODY, X_CLOSE_BODY, X_CHUNK_SIZE, X_CHUNK_DATA, X_CHUNK_CRLF, X_TRAILER, X_DONE };

struct wire {
        enum xstate st;
        int fd;
        bool reused;          /* a kept-alive connection: may have been closed under us */
        bool got_any;         /* a byte of the answer arrived */
        bool keep;            /* the connection may carry the next request */
        usec_t start, deadline, connect_deadline;
        size_t req_len, sent;
        uint64_t left;        /* body or chunk bytes still to come */
        size_t head_len;
        char req[IMDS_REQ_MAX];
        char head[IMDS_HEAD_MAX + 1]; /* the header block, then a chunk size or trailer line */
};

static int errno_of(int e) {
        switch (e) {
        case ETIMEDOUT: return -ETIMEDOUT;
        case ECONNREFUSED: return -ECONNREFUSED;
        case EHOSTUNREACH: case ENETUNREACH: case EADDRNOTAVAIL: return -EHOSTUNREACH;
        case ECONNRESET: case EPIPE: case ECONNABORTED: return -ECONNRESET;
        case ENOMEM: case ENOBUFS: return -ENOMEM;
        default: return -EIO;
        }
}

/* The endpoint split once, at imds_new(): "http://" authority [path]. */
static int endpoint_parse(struct imds *c) {
        const char *a = c->endpoint + strlen("http://");
        size_t alen = strcspn(a, "/");
        char host[256];
        const char *port = NULL;

        if (strncmp(c->endpoint, "http://", 7) != 0 || alen == 0 || alen >= sizeof c->authority || memchr(a, '@', alen))
                return -EINVAL; /* the metadata service has no TLS; no user info */
        memcpy(c->authority, a, alen);
        c->authority[alen] = 0;
        snprintf(c->prefix, sizeof c->prefix, "%s", a + alen);
        if (c->authority[0] == '[') {
                const char *e = strchr(c->authority, ']');
                if (!e || (size_t) (e - c->authority - 1) >= sizeof host)
                        return -EINVAL;
                memcpy(host, c->authority + 1, (size_t) (e - c->authority - 1));
                host[e - c->authority - 1] = 0;
                if (e[1] == ':')
                        port = e + 2;
                else if (e[1])
                        return -EINVAL;
        } else {
                const char *colon = strchr(c->authority, ':');
                size_t hl = colon ? (size_t) (colon - c->authority) : alen;
                if (hl == 0 || hl >= sizeof host)
                        return -EINVAL;
                memcpy(host, c->authority, hl);
                host[hl] = 0;
                if (colon)
                        port = colon + 1;
        }
        unsigned long p = 80;
        if (port) {
                char *end;
                if (!isdigit((unsigned char) *port))
                        return -EINVAL;
                p = strtoul(port, &end, 10);
                if (*end || p == 0 || p > 65535)
                        return -EINVAL;
        }
        snprintf(c->host, sizeof c->host, "%s", host);
        c->port = (uint16_t) p;
        struct sockaddr_in *in = (struct sockaddr_in *) &c->addr;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &c->addr;
        if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
                in->sin_family = AF_INET;
                in->sin_port = htons(c->port);
                c->addr_len = sizeof *in;
        } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
                in6->sin6_family = AF_INET6;
                in6->sin6_port = htons(c->port);
                c->addr_len = sizeof *in6;
        } else
                c->addr_len = 0; /* a name: resolved when a connection is made */
        return 0;
}

/* The address to connect to. A name (never the real service's, which is an
 * address) is resolved each time, as libcurl did without its DNS cache. */
static int endpoint_addr(struct imds *c, struct sockaddr_storage *sa, socklen_t *len) {
        if (c->addr_len) {
                *sa = c->addr;
                *len = c->addr_len;
                return 0;
        }
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG }, *res = NULL;
        char port[8];
        snprintf(port, sizeof port, "%u", c->port);
        if (getaddrinfo(c->host, port, &hints, &res) != 0 || !res)
                return -EHOSTUNREACH;
        memcpy(sa, res->ai_addr, res->ai_addrlen);
        *len = res->ai_addrlen;
        freeaddrinfo(res);
        return 0;
}

static void idle_close_all(struct imds *c) {
        for (size_t i = 0; i < c->nidle; i++)
                close(c->idle[i]);
        c->nidle = 0;
}

static void wire_close(struct wire *w) {
        if (w->fd >= 0)
                close(w->fd);
        w->fd = -1;
}

static int wire_connect(struct imds *c, struct wire *w) {
        struct sockaddr_storage sa;
        socklen_t len;
        int r;

        if (c->nidle > 0) {
                w->fd = c->idle[--c->nidle];
                w->reused = true;
                w->st = X_SENDING;
                return 0;
        }
        w->reused = false;
        r = endpoint_addr(c, &sa, &len);
        if (r < 0)
                return r;
        w->fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (w->fd < 0)
                return errno_of(errno);
        /* No TCP_NODELAY: each request is one write on a connection with
         * nothing unacknowledged (new, or past its last answer), which
         * Nagle's algorithm never holds back; a system call saved each. */
        if (connect(w->fd, (struct sockaddr *) &sa, len) < 0 && errno != EINPROGRESS) {
                r = errno_of(errno);
                wire_close(w);
                return r;
        }
        /* Sending is tried at once: on a fast path (loopback, the Nitro
         * card) the connection is up by now, and a write that finds it
         * still connecting says EAGAIN and waits for POLLOUT. */
        w->st = X_CONNECTING;
        return 0;
}

/* Parses the header block in w->head (NUL-terminated, ending in an empty
 * line): status, framing, whether the connection stays, the captured
 * header. 0, 1 for an interim 1xx answer (skip it), or -EIO. */
static int head_parse(struct xfer *x, struct wire *w) {
        char *p = w->head, *eol;
        bool http10, chunked = false, have_len = false, close_ = false, keepalive = false;
        uint64_t len = 0;

        if (strncmp(p, "HTTP/1.1 ", 9) == 0)
                http10 = false;
        else if (strncmp(p, "HTTP/1.0 ", 9) == 0)
                http10 = true;
        else
                return -EIO;
        p += 9;
        if (!isdigit((unsigned char) p[0]) || !isdigit((unsigned char) p[1]) || !isdigit((unsigned char) p[2]) ||
            (p[3] != ' ' && p[3] != '\r'))
                return -EIO;
        long status = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
        if (status < 100)
                return -EIO;
        eol = strstr(p, "\r\n");
        for (p = eol + 2; *p != '\r'; p = eol + 2) {
                eol = strstr(p, "\r\n");
                if (!eol)
                        return -EIO;
                *eol = 0;
                if (strpbrk(p, "\r\n"))
                        return -EIO; /* a bare CR or LF: no line to trust */
                char *colon = strchr(p, ':');
                /* A folded line (obsolete) or no name: refused, as RFC 9112
                 * lets a client do; the real service sends neither. */
                if (!colon || colon == p || *p == ' ' || *p == '\t')
                        return -EIO;
                for (char *q = p; q < colon; q++)
                        if (!isgraph((unsigned char) *q))
                                return -EIO;
                char *v = colon + 1, *ve = eol;
                while (*v == ' ' || *v == '\t')
                        v++;
                while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                        *--ve = 0;
                size_t nl = (size_t) (colon - p);
                if (nl == 14 && strncasecmp(p, "Content-Length", 14) == 0) {
                        char *end;
                        if (!isdigit((unsigned char) *v))
                                return -EIO;
                        errno = 0;
                        unsigned long long n = strtoull(v, &end, 10);
                        if (errno || *end || (have_len && n != len))
                                return -EIO; /* two different lengths: no framing to trust */
                        len = n;
                        have_len = true;
                } else if (nl == 17 && strncasecmp(p, "Transfer-Encoding", 17) == 0) {
                        if (strcasecmp(v, "chunked") != 0)
                                return -EIO; /* gzip and the like were never asked for */
                        chunked = true;
                } else if (nl == 10 && strncasecmp(p, "Connection", 10) == 0) {
                        close_ = close_ || strcasestr(v, "close");
                        keepalive = keepalive || strcasestr(v, "keep-alive");
                }
                if (x->capture && strlen(x->capture->name) == nl && strncasecmp(p, x->capture->name, nl) == 0) {
                        size_t vl = strlen(v);
                        x->capture->found = vl < sizeof x->capture->value;
                        if (x->capture->found)
                                memcpy(x->capture->value, v, vl + 1);
                }
        }
        if (status < 200 && status != 101)
                return 1;
        if (status == 101)
                return -EIO; /* no upgrade was asked for */
        x->status = status;
        w->keep = !close_ && (!http10 || keepalive);
        if (status == 204 || status == 304) {
                w->st = X_DONE;
        } else if (chunked) {
                w->st = X_CHUNK_SIZE;
                w->keep = w->keep && !have_len; /* both: RFC 9112 says close after */
        } else if (have_len) {
                /* the cap is http_body_write()'s, as for every answer: an
                 * oversized one fails at the byte past it */
                w->left = len;
                w->st = len ? X_BODY : X_DONE;
        } else {
                w->st = X_CLOSE_BODY;
                w->keep = false;
        }
        w->head_len = 0;
        return 0;
}

static int body_add(struct xfer *x, const char *p, size_t n) {
        if (n == 0)
                return 0;
        return http_body_write((char *) p, 1, n, &x->body) == n ? 0 : x->body.overflow ? -EFBIG : -ENOMEM;
}

/* Up to w->left bytes of body; then the state is next. */
static int left_take(struct xfer *x, struct wire *w, const char **p, const char *end, enum xstate next) {
        size_t take = (size_t) (end - *p) < w->left ? (size_t) (end - *p) : (size_t) w->left;
        int r = body_add(x, *p, take);
        if (r < 0)
                return r;
        *p += take;
        w->left -= take;
        if (!w->left)
                w->st = next;
        return 0;
}

/* A line (chunk size, trailer) into w->head, bounded. 1 when whole. */
static int line_take(struct wire *w, const char **p, const char *end, size_t max) {
        while (*p < end) {
                char ch = *(*p)++;
                if (w->head_len >= max)
                        return -EIO;
                w->head[w->head_len++] = ch;
                if (ch == '\n') {
                        w->head[w->head_len] = 0;
                        return 1;
                }
        }
        return 0;
}

/* Feeds bytes of the answer through the state machine. 0 or -errno. */
static int wire_feed(struct xfer *x, struct wire *w, const char *p, size_t n) {
        const char *end = p + n;
        int r;

        while (p < end && w->st != X_DONE) {
                switch (w->st) {
                case X_HEAD: {
                        size_t room = IMDS_HEAD_MAX - w->head_len, take = (size_t) (end - p);
                        if (take > room)
                                take = room;
                        /* Search from where a new "\r\n\r\n" could start. */
                        size_t from = w->head_len > 3 ? w->head_len - 3 : 0;
                        memcpy(w->head + w->head_len, p, take);
                        w->head_len += take;
                        w->head[w->head_len] = 0;
                        char *e = memmem(w->head + from, w->head_len - from, "\r\n\r\n", 4);
                        if (!e) {
                                if (w->head_len >= IMDS_HEAD_MAX)
                                        return -EIO;
                                p += take;
                                break;
                        }
                        size_t used = (size_t) (e + 4 - w->head) - (w->head_len - take);
                        w->head_len = (size_t) (e + 4 - w->head);
                        w->head[w->head_len] = 0; /* the block, its empty line last */
                        p += used;
                        if (memchr(w->head, 0, w->head_len))
                                return -EIO;
                        r = head_parse(x, w);
                        if (r < 0)
                                return r;
                        if (r == 1)
                                w->head_len = 0; /* an interim answer: the real one follows */
                        break;
                }
                case X_BODY:
                        if ((r = left_take(x, w, &p, end, X_DONE)) < 0)
                                return r;
                        break;
                case X_CLOSE_BODY:
                        if ((r = body_add(x, p, (size_t) (end - p))) < 0)
                                return r;
                        p = end;
                        break;
                case X_CHUNK_SIZE: {
                        r = line_take(w, &p, end, 80);
                        if (r <= 0)
                                return r;
                        char *q = w->head, *e;
                        if (!isxdigit((unsigned char) *q) || strspn(q, "0123456789abcdefABCDEF") > 15)
                                return -EIO;
                        unsigned long long sz = strtoull(q, &e, 16);
                        if (*e != ';' && *e != '\r')
                                return -EIO;
                        w->head_len = 0;
                        w->left = sz;
                        w->st = sz ? X_CHUNK_DATA : X_TRAILER;
                        break;
                }
                case X_CHUNK_DATA:
                        if ((r = left_take(x, w, &p, end, X_CHUNK_CRLF)) < 0)
                                return r;
                        break;
                case X_CHUNK_CRLF:
                        r = line_take(w, &p, end, 2);
                        if (r <= 0)
                                return r;
                        if (strcmp(w->head, "\r\n") != 0)
                                return -EIO;
                        w->head_len = 0;
                        w->st = X_CHUNK_SIZE;
                        break;
                case X_TRAILER:
                        r = line_take(w, &p, end, 1024);
                        if (r <= 0)
                                return r;
                        if (strcmp(w->head, "\r\n") == 0)
                                w->st = X_DONE;
                        w->head_len = 0;
                        break;
                default:
                        return -EIO;
                }
        }
        if (p < end)
                w->keep = false; /* bytes past the answer: the framing is off */
        return 0;
}

/* The answer ended with the connection (EOF): done if its framing allows. */
static int wire_eof(struct wire *w) {
        w->keep = false;
        if (w->st == X_CLOSE_BODY) {
                w->st = X_DONE;
                return 0;
        }
        return -ECONNRESET;
}

/* One step of one request on readiness (or at once when ev is 0). Returns
 * 0 while it goes on (w->st says what it waits for), or 1 when it ended
 * (x->r set). */
static int wire_step(struct imds *c, struct xfer *x, struct wire *w, short ev) {
        char buf[16384];
        int r;

        if (w->st == X_CONNECTING || w->st == X_SENDING) {
                if (w->st == X_CONNECTING && (ev & (POLLERR | POLLHUP))) {
                        int e = 0;
                        socklen_t l = sizeof e;
                        getsockopt(w->fd, SOL_SOCKET, SO_ERROR, &e, &l);
                        r = errno_of(e ? e : ECONNREFUSED);
                        goto fail;
                }
                while (w->sent < w->req_len) {
                        ssize_t n = send(w->fd, w->req + w->sent, w->req_len - w->sent, MSG_NOSIGNAL);
                        if (n < 0) {
                                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOTCONN)
                                        return 0; /* still connecting, or the buffer is full */
                                r = errno_of(errno);
                                goto fail;
                        }
                        w->sent += (size_t) n;
                }
                w->st = X_HEAD;
                w->head_len = 0;
                return 0;
        }
        for (;;) {
                ssize_t n = recv(w->fd, buf, sizeof buf, 0);
                if (n < 0) {
                        if (errno == EAGAIN || errno == EWOULDBLOCK)
                                return 0;
                        if (errno == EINTR)
                                continue;
                        r = errno_of(errno);
                        goto fail;
                }
                if (n == 0) {
                        r = wire_eof(w);
                        if (r < 0)
                                goto fail;
                        break;
                }
                w->got_any = true;
                if ((r = wire_feed(x, w, buf, (size_t) n)) < 0)
                        goto fail;
                if (w->st == X_DONE)
                        break;
        }
        x->r = 0;
        if (w->keep && c->nidle < IMDS_GET_MANY_MAX)
                c->idle[c->nidle++] = w->fd;
        else
                close(w->fd);
        w->fd = -1;
        w->st = X_IDLE;
        return 1;
fail:
        wire_close(w);
        /* A kept-alive connection the server had closed before our request
         * reached it: the request never ran, send it once on a new one. */
        if (w->reused && !w->got_any && r == -ECONNRESET) {
                x->status = 0;
                w->sent = 0;
                http_body_reset(&x->body);
                if ((r = wire_connect(c, w)) >= 0)
                        return wire_step(c, x, w, 0);
        }
        x->r = r;
        x->status = 0;
        w->st = X_IDLE;
        return 1;
}

/* Puts a request in x: the request line, Host, the fixed headers and
 * header (a token or TTL line, or NULL), sent by xfer_run(). */
static int xfer_add(struct imds *c, struct xfer *x, bool put, const char *header) {
        if (!x->w && !(x->w = malloc(sizeof *x->w)))
                return -ENOMEM;
        struct wire *w = x->w;
        int n = snprintf(w->req, sizeof w->req,
                         "%s %s/latest/%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: spotd\r\nAccept: */*\r\n%s%s\r\n",
                         put ? "PUT" : "GET", c->prefix, x->path, c->authority, header ? header : "", header ? "\r\n" : "");
        if (n < 0 || (size_t) n >= sizeof w->req)
                return -EINVAL;
        w->req_len = (size_t) n;
        w->sent = 0;
        w->fd = -1;
        w->st = X_IDLE;
        w->got_any = w->keep = w->reused = false;
        w->head_len = 0;
        x->body = (struct http_body) { .limit = c->max_body };
        if (x->capture)
                x->capture->found = false;
        x->pending = true;
        return 0;
}

static void xfer_free(struct xfer *x) {
        if (x->w) {
                wire_close(x->w);
                explicit_bzero(x->w->req, sizeof x->w->req); /* the token */
                free(x->w);
                x->w = NULL;
        }
}

/* Runs the requests put by xfer_add() to their end, all at once, each
 * bounded by the timeout (and the connect timeout until it is connected).
 * Then tells the observer of each one (which sees every request, whatever
 * its outcome); the bodies stay. */
static void xfer_run(struct imds *c, struct xfer *x, size_t n) {
        struct pollfd p[IMDS_GET_MANY_MAX];
        size_t idx[IMDS_GET_MANY_MAX];
        usec_t now = now_monotonic();
        int r;

        for (size_t i = 0; i < n; i++) {
                if (!x[i].pending)
                        continue;
                struct wire *w = x[i].w;
                w->start = now;
                w->deadline = now + c->timeout;
                w->connect_deadline = now + c->connect_timeout;
                x[i].status = 0;
                r = wire_connect(c, w);
                if (r < 0) {
                        x[i].r = r;
                        w->st = X_IDLE;
                } else
                        wire_step(c, &x[i], w, 0);
        }
        for (;;) {
                size_t m = 0;
                usec_t next = UINT64_MAX;
                now = now_monotonic();
                for (size_t i = 0; i < n; i++) {
                        struct wire *w = x[i].w;
                        if (!x[i].pending || !w || w->st == X_IDLE)
                                continue;
                        usec_t dl = w->st == X_CONNECTING && w->connect_deadline < w->deadline ? w->connect_deadline : w->deadline;
                        if (now >= dl) {
                                wire_close(w);
                                w->st = X_IDLE;
                                x[i].r = -ETIMEDOUT;
                                x[i].status = 0;
                                continue;
                        }
                        if (dl < next)
                                next = dl;
                        p[m] = (struct pollfd) { .fd = w->fd, .events = w->st == X_CONNECTING || w->st == X_SENDING ? POLLOUT : POLLIN };
                        idx[m++] = i;
                }
                if (m == 0)
                        break;
                usec_t wait = next - now;
                r = poll(p, m, (int) ((wait + USEC_PER_MSEC - 1) / USEC_PER_MSEC));
                if (r < 0 && errno != EINTR)
                        break;
                for (size_t k = 0; r > 0 && k < m; k++)
                        if (p[k].revents)
                                wire_step(c, &x[idx[k]], x[idx[k]].w, p[k].revents);
        }
        now = now_monotonic();
        for (size_t i = 0; i < n; i++) {
                if (!x[i].pending)
                        continue;
                x[i].pending = false;
                if (x[i].w && x[i].w->st != X_IDLE) { /* poll() failed */
                        wire_close(x[i].w);
                        x[i].w->st = X_IDLE;
                        x[i].r = -EIO;
                }
                c->last_status = x[i].status;
                if (c->observe)
                        c->observe(c->userdata, x[i].path, outcome(x[i].r, x[i].status), x[i].status,
                                   x[i].w ? now - x[i].w->start : 0);
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
        usec_t start = now_monotonic();
        r = xfer_add(c, &x, true, ttl);
        if (r >= 0) {
                xfer_run(c, &x, 1);
                r = x.r;
        }
        xfer_free(&x);
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

        token_forget(c);
        snprintf(c->token_header, sizeof c->token_header, "X-aws-ec2-metadata-token: %.*s", (int) x.body.len, x.body.data);
        memcpy(c->token, x.body.data, x.body.len);
        c->token[x.body.len] = 0;
        explicit_bzero(x.body.data, x.body.len);
        http_body_done(&x.body);
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
                x[i].r = xfer_add(c, &x[i], false, c->have_token ? c->token_header : NULL);
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
                xfer_free(&x[i]);
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
