#include "k8s.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http.h"
#include "macro.h"

extern char **environ;

#define DEFAULT_SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"
#define URL_MAX 1024             /* the API server URL, without the request path */
#define PATH_MAX_LEN 4096        /* request path and query */
#define METHOD_MAX 16
#define CONTENT_TYPE_MAX 128
#define TOKEN_MAX (16 * 1024)    /* service-account JWTs are ~1 KiB; far more is not a token */
#define NS_MAX 63                /* a namespace is a DNS label */
#define CONNECTIONS_MAX 256
#define AUTH_PREFIX "Authorization: Bearer "

struct k8s_req {
        struct k8s *k;
        struct k8s_req *prev, *next; /* k->pending */
        struct k8s_req *done_next;   /* finished, waiting for its callback */
        CURL *easy;
        struct curl_slist *headers;  /* one holds the token: wiped when freed */
        char *body;         /* owned copy: curl reads it while sending, a 401 retry sends it again */
        char *content_type;
        k8s_done_t done;
        void *userdata;
        struct http_body resp;
        CURLcode result;
        usec_t queued;      /* monotonic */
        usec_t token_at;    /* k->token_read_at when its header was built */
        bool retried;
        bool plain;         /* another service (Flink, webhooks): no token, system CAs */
        usec_t timeout;
        const char *const *extra; /* plain only: more "Name: value" headers, borrowed until queued */
};

struct k8s {
        CURLM *multi;
        char *api_url;      /* without trailing '/' */
        char *token_file, *ca_file, *client_cert, *client_key;
        usec_t token_reread, timeout, connect_timeout;
        size_t max_body;
        unsigned max_connections;

        char *token;        /* NUL-terminated; wiped when replaced or freed */
        size_t token_len;
        usec_t token_read_at; /* monotonic, last successful read */

        struct k8s_req *pending;
        unsigned n_pending;
        unsigned long connections;
};

DEFINE_TRIVIAL_CLEANUP_FUNC(cJSON *, cJSON_Delete)
DEFINE_TRIVIAL_CLEANUP_FUNC(struct k8s *, k8s_free)

static void closep(int *fd) {
        if (*fd >= 0)
                close(*fd);
}

static bool is_set(const char *s) { return s && *s; }

/* ---- pure helpers ---- */

/* RFC 3986 unreserved, in ASCII whatever the locale says. */
static bool unreserved(unsigned char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
               c == '.' || c == '_' || c == '~';
}

int k8s_escape(const char *in, char *buf, size_t len) {
        static const char hex[] = "0123456789ABCDEF";
        size_t need = 1;

        if (!in || !buf)
                return -EINVAL;
        /* Size first, so buf is untouched when it is too small. */
        for (const char *p = in; *p; p++)
                need += unreserved((unsigned char) *p) ? 1 : 3;
        if (need > len)
                return -ENOBUFS;
        for (const unsigned char *p = (const unsigned char *) in; *p; p++) {
                if (unreserved(*p))
                        *buf++ = (char) *p;
                else {
                        *buf++ = '%';
                        *buf++ = hex[*p >> 4];
                        *buf++ = hex[*p & 15];
                }
        }
        *buf = 0;
        return 0;
}

/* Copies text from the server into a fixed buffer for logs: control
 * characters become spaces (a message must not forge log lines) and a cut
 * never splits a UTF-8 sequence. */
static void copy_text(char *dst, size_t len, const char *src) {
        size_t n = strlen(src);

        if (len == 0)
                return;
        if (n >= len) {
                n = len - 1;
                while (n > 0 && ((unsigned char) src[n] & 0xC0) == 0x80)
                        n--;
        }
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char) src[i];
                dst[i] = c < 0x20 || c == 0x7f ? ' ' : (char) c;
        }
        dst[n] = 0;
}

void k8s_parse_status(const char *body, size_t len, char *reason, size_t rlen, char *message, size_t mlen) {
        const cJSON *v;

        if (reason && rlen)
                reason[0] = 0;
        if (message && mlen)
                message[0] = 0;
        if (!body || len == 0)
                return;
        /* Anything else (an HTML page from a proxy, a truncated body) leaves
         * them empty: the status code is what callers act on. */
        _cleanup_(cJSON_Deletep) cJSON *j = cJSON_ParseWithLength(body, len);
        v = cJSON_GetObjectItemCaseSensitive(j, "kind");
        if (!cJSON_IsString(v) || !streq(v->valuestring, "Status"))
                return;
        v = cJSON_GetObjectItemCaseSensitive(j, "reason");
        if (reason && cJSON_IsString(v))
                copy_text(reason, rlen, v->valuestring);
        v = cJSON_GetObjectItemCaseSensitive(j, "message");
        if (message && cJSON_IsString(v))
                copy_text(message, mlen, v->valuestring);
}

static const char *env_get(char *const *envp, const char *name) {
        size_t n = strlen(name);
        for (; envp && *envp; envp++)
                if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=')
                        return *envp + n + 1;
        return NULL;
}

/* Reads a small text file, trimmed, into buf. */
static int read_trimmed(const char *path, char *buf, size_t len) {
        _cleanup_(closep) int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        char tmp[256];
        ssize_t n;

        if (fd < 0)
                return -errno;
        n = read(fd, tmp, sizeof tmp);
        if (n < 0)
                return -errno;
        if ((size_t) n == sizeof tmp)
                return -ENOBUFS; /* longer than anything we expect */
        size_t a = 0, b = (size_t) n;
        while (a < b && isspace((unsigned char) tmp[a]))
                a++;
        while (b > a && isspace((unsigned char) tmp[b - 1]))
                b--;
        if (b - a >= len)
                return -ENOBUFS;
        memcpy(buf, tmp + a, b - a);
        buf[b - a] = 0;
        return 0;
}

static bool ns_valid(const char *s) {
        if (!*s || strlen(s) > NS_MAX)
                return false;
        for (const char *p = s; *p; p++)
                if (!(islower((unsigned char) *p) || isdigit((unsigned char) *p) || *p == '-'))
                        return false;
        return true;
}

int k8s_in_cluster(char *const *envp, const char *sa_dir, char *url, size_t urllen, char *token_file,
                   size_t tflen, char *ca_file, size_t calen, char *ns, size_t nslen) {
        const char *host, *port;
        bool v6 = false;
        char u[URL_MAX], t[PATH_MAX], c[PATH_MAX], p[PATH_MAX], n[NS_MAX + 1] = "";

        if (!envp)
                envp = environ;
        if (!sa_dir)
                sa_dir = DEFAULT_SA_DIR;
        host = env_get(envp, "KUBERNETES_SERVICE_HOST");
        port = env_get(envp, "KUBERNETES_SERVICE_PORT");
        if (!is_set(host) || !is_set(port))
                return -ENOENT;

        /* The values end up in a URL: a name, an IPv4 or an IPv6 address. */
        if (strlen(host) > 253 || strlen(port) > 5)
                return -EINVAL;
        v6 = strchr(host, ':');
        for (const char *h = host; *h; h++)
                if (v6 ? !isxdigit((unsigned char) *h) && *h != ':' && *h != '.'
                       : !isalnum((unsigned char) *h) && *h != '.' && *h != '-')
                        return -EINVAL;
        for (const char *d = port; *d; d++)
                if (!isdigit((unsigned char) *d))
                        return -EINVAL;
        long pn = strtol(port, NULL, 10);
        if (pn < 1 || pn > 65535)
                return -EINVAL;

        if ((size_t) snprintf(u, sizeof u, v6 ? "https://[%s]:%ld" : "https://%s:%ld", host, pn) >= sizeof u ||
            (size_t) snprintf(t, sizeof t, "%s/token", sa_dir) >= sizeof t ||
            (size_t) snprintf(c, sizeof c, "%s/ca.crt", sa_dir) >= sizeof c ||
            (size_t) snprintf(p, sizeof p, "%s/namespace", sa_dir) >= sizeof p)
                return -ENOBUFS;
        if (strlen(u) >= urllen || strlen(t) >= tflen || strlen(c) >= calen || nslen == 0)
                return -ENOBUFS;
        if (read_trimmed(p, n, sizeof n) < 0 || !ns_valid(n) || strlen(n) >= nslen)
                n[0] = 0;

        strcpy(url, u);
        strcpy(token_file, t);
        strcpy(ca_file, c);
        strcpy(ns, n);
        return 0;
}

/* ---- token ---- */

/* Reads and checks a bearer token. It goes into a header line, so only
 * printable ASCII without spaces (RFC 6750 b64token is narrower still). */
static int token_read(const char *path, char **ret, size_t *ret_len) {
        _cleanup_(closep) int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        char buf[TOKEN_MAX + 1];
        size_t n = 0;
        int r = 0;

        if (fd < 0)
                return -errno;
        while (n < sizeof buf) {
                ssize_t l = read(fd, buf + n, sizeof buf - n);
                if (l < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        goto finish;
                }
                if (l == 0)
                        break;
                n += (size_t) l;
        }
        if (n > TOKEN_MAX) {
                r = -EINVAL;
                goto finish;
        }
        while (n > 0 && isspace((unsigned char) buf[n - 1]))
                n--;
        if (n == 0) {
                r = -EINVAL;
                goto finish;
        }
        for (size_t i = 0; i < n; i++)
                if ((unsigned char) buf[i] <= 0x20 || (unsigned char) buf[i] >= 0x7f) {
                        r = -EINVAL;
                        goto finish;
                }
        char *t = malloc(n + 1);
        if (!t) {
                r = -ENOMEM;
                goto finish;
        }
        memcpy(t, buf, n);
        t[n] = 0;
        *ret = t;
        *ret_len = n;
finish:
        explicit_bzero(buf, sizeof buf);
        return r;
}

static void token_drop(struct k8s *k) {
        if (k->token) {
                explicit_bzero(k->token, k->token_len);
                free(k->token);
        }
        k->token = NULL;
        k->token_len = 0;
}

/* Re-reads the token file when due (or when forced, after a 401). A file
 * that cannot be read right now keeps the token we hold: the kubelet swaps
 * projected tokens atomically, so this is a transient state, and the old
 * token is still valid for a while; the next request tries again. */
static int token_refresh(struct k8s *k, bool force) {
        char *t;
        size_t n;
        int r;

        if (!k->token_file)
                return 0;
        if (!force && k->token && now_monotonic() - k->token_read_at < k->token_reread)
                return 0;
        r = token_read(k->token_file, &t, &n);
        if (r < 0)
                return r;
        token_drop(k);
        k->token = t;
        k->token_len = n;
        k->token_read_at = now_monotonic();
        return 0;
}

static void headers_free(struct curl_slist *l) {
        for (struct curl_slist *i = l; i; i = i->next)
                explicit_bzero(i->data, strlen(i->data));
        curl_slist_free_all(l);
}

static int headers_build(struct k8s *k, struct k8s_req *q, struct curl_slist **ret) {
        struct curl_slist *l = NULL, *n;
        char ct[CONTENT_TYPE_MAX + 32];

        l = curl_slist_append(NULL, "Accept: application/json");
        if (!l)
                return -ENOMEM;
        /* curl would send "Expect: 100-continue" for large bodies and wait
         * for an answer the API server does not need. */
        if (!(n = curl_slist_append(l, "Expect:")))
                goto oom;
        l = n;
        if (q->content_type) {
                snprintf(ct, sizeof ct, "Content-Type: %s", q->content_type);
                if (!(n = curl_slist_append(l, ct)))
                        goto oom;
                l = n;
        }
        for (const char *const *e = q->extra; e && *e; e++) {
                if (!(n = curl_slist_append(l, *e)))
                        goto oom;
                l = n;
        }
        if (k->token && !q->plain) {
                size_t sz = sizeof AUTH_PREFIX + k->token_len;
                char *a = malloc(sz);
                if (!a)
                        goto oom;
                snprintf(a, sz, AUTH_PREFIX "%s", k->token);
                n = curl_slist_append(l, a);
                explicit_bzero(a, sz);
                free(a);
                if (!n)
                        goto oom;
                l = n;
        }
        *ret = l;
        return 0;
oom:
        headers_free(l);
        return -ENOMEM;
}

/* ---- client ---- */

static long usec_to_ms(usec_t u) {
        usec_t ms = u / USEC_PER_MSEC;
        return ms < 1 ? 1 : ms > LONG_MAX ? LONG_MAX : (long) ms;
}

static bool api_url_valid(const char *u) {
        if (!u || strlen(u) >= URL_MAX || strncasecmp(u, "https://", 8) != 0)
                return false;
        if (!u[8] || u[8] == '/')
                return false;
        for (const char *p = u; *p; p++)
                if (!isgraph((unsigned char) *p) || *p == '?' || *p == '#')
                        return false;
        return true;
}

/* Fails early, with a clear errno, rather than on the first request with a
 * TLS error that names no file. */
static int file_readable(const char *path) {
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        close(fd);
        return 0;
}

static int dup_opt(const char *s, char **ret) {
        if (!is_set(s))
                return 0; /* "" means unset, as NULL does */
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

int k8s_new(const struct k8s_options *o, struct k8s **ret) {
        _cleanup_(k8s_freep) struct k8s *k = NULL;
        int r;

        if (!o || !ret || !api_url_valid(o->api_url))
                return -EINVAL;
        if (is_set(o->client_cert) != is_set(o->client_key) || o->max_connections > CONNECTIONS_MAX)
                return -EINVAL;
        const char *files[] = { o->ca_file, o->client_cert, o->client_key };
        for (size_t i = 0; i < ELEMENTSOF(files); i++)
                if (is_set(files[i]) && (r = file_readable(files[i])) < 0)
                        return r;

        k = calloc(1, sizeof *k);
        if (!k)
                return -ENOMEM;
        k->api_url = strdup(o->api_url);
        if (!k->api_url)
                return -ENOMEM;
        size_t n = strlen(k->api_url);
        while (n > 0 && k->api_url[n - 1] == '/')
                k->api_url[--n] = 0; /* paths start with "/" */
        if ((r = dup_opt(o->token_file, &k->token_file)) < 0 || (r = dup_opt(o->ca_file, &k->ca_file)) < 0 ||
            (r = dup_opt(o->client_cert, &k->client_cert)) < 0 ||
            (r = dup_opt(o->client_key, &k->client_key)) < 0)
                return r;
        k->token_reread = o->token_reread ? o->token_reread : 60 * USEC_PER_SEC;
        k->timeout = o->timeout ? o->timeout : 10 * USEC_PER_SEC;
        k->connect_timeout = o->connect_timeout ? o->connect_timeout : 3 * USEC_PER_SEC;
        k->max_body = o->max_body ? o->max_body : 8 * 1024 * 1024;
        k->max_connections = o->max_connections ? o->max_connections : 8;
        if (k->token_file && (r = token_refresh(k, true)) < 0)
                return r;

        k->multi = curl_multi_init();
        if (!k->multi)
                return -ENOMEM;
        /* HTTP/2 lets one connection carry every concurrent eviction; the
         * limits keep a burst from opening a connection per request on
         * HTTP/1.1 (the rest wait in curl's queue). */
        curl_multi_setopt(k->multi, CURLMOPT_PIPELINING, (long) CURLPIPE_MULTIPLEX);
        curl_multi_setopt(k->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long) k->max_connections);
        /* Twice the per-host limit: plain requests to the JobManagers share
         * the pool and must not starve the API server, nor it them. */
        curl_multi_setopt(k->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, 2L * k->max_connections);
        curl_multi_setopt(k->multi, CURLMOPT_MAXCONNECTS, 2L * k->max_connections);

        *ret = TAKE_PTR(k);
        return 0;
}

static void req_free(struct k8s_req *q) {
        /* Never reused (connections are, in the multi handle): libcurl before
         * 8.1.0 (Debian 12 ships 7.88) frees a used handle's stored headers,
         * then reads and reallocates them, even after curl_easy_reset, when
         * the next answer starts with a folded header line (curl issue 11101):
         * any JobManager or webhook receiver could crash us. */
        if (q->easy)
                curl_easy_cleanup(q->easy);
        headers_free(q->headers);
        http_body_done(&q->resp);
        free(q->body);
        free(q->content_type);
        free(q);
}

static void pending_unlink(struct k8s *k, struct k8s_req *q) {
        if (q->prev)
                q->prev->next = q->next;
        else
                k->pending = q->next;
        if (q->next)
                q->next->prev = q->prev;
        q->prev = q->next = NULL;
        k->n_pending--;
}

struct k8s *k8s_free(struct k8s *k) {
        if (!k)
                return NULL;
        while (k->pending) {
                struct k8s_req *q = k->pending;
                pending_unlink(k, q);
                curl_multi_remove_handle(k->multi, q->easy);
                curl_easy_cleanup(TAKE_PTR(q->easy));
                req_free(q);
        }
        if (k->multi)
                curl_multi_cleanup(k->multi);
        token_drop(k);
        free(k->api_url);
        free(k->token_file);
        free(k->ca_file);
        free(k->client_cert);
        free(k->client_key);
        free(k);
        return NULL;
}

/* Counts connections, and opens them close-on-exec so a child process never
 * inherits a socket that carries the token. */
static curl_socket_t open_socket(void *userdata, curlsocktype purpose, struct curl_sockaddr *a) {
        struct k8s *k = userdata;
        int fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
        if (fd >= 0 && purpose == CURLSOCKTYPE_IPCXN)
                k->connections++;
        return fd >= 0 ? fd : CURL_SOCKET_BAD;
}

static bool method_valid(const char *m) {
        size_t n = m ? strlen(m) : 0;
        if (n == 0 || n > METHOD_MAX)
                return false;
        for (; *m; m++)
                if (!isupper((unsigned char) *m))
                        return false;
        return true;
}

static bool path_valid(const char *p) {
        if (!p || p[0] != '/' || strlen(p) > PATH_MAX_LEN)
                return false;
        for (; *p; p++)
                if (!isgraph((unsigned char) *p) || *p == '#')
                        return false;
        return true;
}

static bool content_type_valid(const char *c) {
        if (!c || !*c || strlen(c) > CONTENT_TYPE_MAX)
                return false;
        for (; *c; c++)
                if (!isprint((unsigned char) *c))
                        return false;
        return true;
}

static int easy_setup(struct k8s *k, struct k8s_req *q, const char *method, const char *url) {
        CURL *h = q->easy;

        if (curl_easy_setopt(h, CURLOPT_URL, url) != CURLE_OK)
                return -EINVAL;
        curl_easy_setopt(h, CURLOPT_PRIVATE, q);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, q->plain ? "http,https" : "https");
        curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "https");
        curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_2TLS);
        /* Wait for the first connection to tell whether it multiplexes
         * instead of opening one per queued request. */
        curl_easy_setopt(h, CURLOPT_PIPEWAIT, 1L);
        /* No proxy from the environment: the API server is a cluster service
         * address (or a control-plane endpoint reached directly); an
         * HTTPS_PROXY set for cloud egress would add a hop that can fail
         * during the two-minute notice, and a proxy is never needed to reach
         * the in-cluster service. */
        curl_easy_setopt(h, CURLOPT_PROXY, "");
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
        curl_easy_setopt(h, CURLOPT_SSLVERSION, (long) CURL_SSLVERSION_TLSv1_2);
        if (k->ca_file && !q->plain) {
                curl_easy_setopt(h, CURLOPT_CAINFO, k->ca_file);
                /* Only the cluster CA: Debian's libcurl also searches
                 * /etc/ssl/certs by default, which would trust any public CA. */
                curl_easy_setopt(h, CURLOPT_CAPATH, (char *) NULL);
        }
        /* The cluster CA rotates rarely; re-read it at least hourly. */
        curl_easy_setopt(h, CURLOPT_CA_CACHE_TIMEOUT, 3600L);
        if (k->client_cert && !q->plain) {
                curl_easy_setopt(h, CURLOPT_SSLCERT, k->client_cert);
                curl_easy_setopt(h, CURLOPT_SSLKEY, k->client_key);
        }
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, usec_to_ms(q->timeout ? q->timeout : k->timeout));
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, usec_to_ms(k->connect_timeout));
        /* A kept-alive connection to an API server that went away (control
         * plane failover, NAT timeout) is noticed in about a minute instead of
         * the kernel's two hours: with HTTP/2 every request would ride it. */
        curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
        curl_easy_setopt(h, CURLOPT_TCP_KEEPIDLE, 30L);
        curl_easy_setopt(h, CURLOPT_TCP_KEEPINTVL, 10L);
        curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, open_socket);
        curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, k);
        curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) k->max_body);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, http_body_write);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &q->resp);
        curl_easy_setopt(h, CURLOPT_USERAGENT, "spotd");
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, q->headers);
        if (q->body) {
                /* POSTFIELDS makes it a POST; CUSTOMREQUEST renames it. */
                curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) strlen(q->body));
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, q->body);
                if (!streq(method, "POST"))
                        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
        } else if (streq(method, "HEAD"))
                curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
        else if (!streq(method, "GET"))
                curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
        return 0;
}

static bool plain_url_valid(const char *u) {
        size_t skip = strncasecmp(u, "http://", 7) == 0 ? 7 : strncasecmp(u, "https://", 8) == 0 ? 8 : 0;
        if (!skip || strlen(u) >= URL_MAX + PATH_MAX_LEN || !u[skip] || u[skip] == '/')
                return false;
        for (const char *p = u; *p; p++)
                if (!isgraph((unsigned char) *p) || *p == '#')
                        return false;
        return true;
}

/* path is relative to the API server, or, for plain requests, a whole URL. */
static int req_queue(struct k8s *k, const char *method, const char *path, const char *content_type,
                     const char *body, bool plain, usec_t timeout, const char *const *extra, k8s_done_t done,
                     void *userdata, struct k8s_req **ret) {
        _cleanup_free_ char *url = NULL;
        struct k8s_req *q;
        CURLMcode mc;
        int r;

        if (!k || !done || !method_valid(method) || !(plain ? plain_url_valid(path) : path_valid(path)))
                return -EINVAL;
        if (body && !content_type)
                return -EINVAL;
        if (content_type && !content_type_valid(content_type))
                return -EINVAL;
        if (asprintf(&url, "%s%s", plain ? "" : k->api_url, path) < 0) {
                url = NULL;
                return -ENOMEM;
        }

        /* A failed re-read keeps the token we hold (see token_refresh). */
        (void) token_refresh(k, false);

        q = calloc(1, sizeof *q);
        if (!q)
                return -ENOMEM;
        q->k = k;
        q->plain = plain;
        q->timeout = timeout;
        q->extra = plain ? extra : NULL;
        q->done = done;
        q->userdata = userdata;
        q->resp.limit = k->max_body;
        q->queued = now_monotonic();
        q->token_at = k->token_read_at;
        if ((body && !(q->body = strdup(body))) || (content_type && !(q->content_type = strdup(content_type)))) {
                r = -ENOMEM;
                goto fail;
        }
        r = headers_build(k, q, &q->headers);
        q->extra = NULL; /* copied into the header list; the caller's may go */
        if (r < 0)
                goto fail;
        q->easy = curl_easy_init();
        if (!q->easy) {
                r = -ENOMEM;
                goto fail;
        }
        if ((r = easy_setup(k, q, method, url)) < 0)
                goto fail;
        mc = curl_multi_add_handle(k->multi, q->easy);
        if (mc != CURLM_OK) {
                r = mc == CURLM_OUT_OF_MEMORY ? -ENOMEM : -EIO;
                goto fail;
        }
        q->next = k->pending;
        if (k->pending)
                k->pending->prev = q;
        k->pending = q;
        k->n_pending++;
        if (ret)
                *ret = q;
        return 0;
fail:
        req_free(q);
        return r;
}

int k8s_request(struct k8s *k, const char *method, const char *path, const char *content_type,
                const char *body, k8s_done_t done, void *userdata) {
        return req_queue(k, method, path, content_type, body, false, 0, NULL, done, userdata, NULL);
}

int k8s_request_url(struct k8s *k, const char *method, const char *url, const char *content_type,
                    const char *body, usec_t timeout, k8s_done_t done, void *userdata) {
        return req_queue(k, method, url, content_type, body, true, timeout, NULL, done, userdata, NULL);
}

int k8s_request_url_headers(struct k8s *k, const char *method, const char *url, const char *const *headers,
                            const char *content_type, const char *body, usec_t timeout, k8s_done_t done,
                            void *userdata) {
        for (const char *const *h = headers; h && *h; h++)
                for (const char *c = *h; *c; c++)
                        if (*c == '\r' || *c == '\n')
                                return -EINVAL; /* no header injection */
        return req_queue(k, method, url, content_type, body, true, timeout, headers, done, userdata, NULL);
}

/* After a 401: a fresh token (unless another answer already made us read
 * one since this request's header was built) and the same request again.
 * Returns true when the request is back in flight. */
static bool retry_unauthorized(struct k8s *k, struct k8s_req *q) {
        struct curl_slist *h;

        if (q->retried || !k->token_file || q->plain)
                return false;
        q->retried = true;
        if (k->token_read_at <= q->token_at)
                (void) token_refresh(k, true);
        q->token_at = k->token_read_at;
        if (headers_build(k, q, &h) < 0)
                return false;
        curl_easy_setopt(q->easy, CURLOPT_HTTPHEADER, h);
        headers_free(q->headers);
        q->headers = h;
        http_body_reset(&q->resp);
        return curl_multi_add_handle(k->multi, q->easy) == CURLM_OK;
}

static void req_finish(struct k8s_req *q) {
        struct k8s_response r = {};

        r.err = http_curl_errno(q->result, &q->resp);
        if (r.err == 0) {
                curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &r.status);
                r.body = q->resp.data ? q->resp.data : "";
                r.len = q->resp.len;
                if (r.status < 200 || r.status > 299)
                        k8s_parse_status(r.body, r.len, r.reason, sizeof r.reason, r.message, sizeof r.message);
        } else
                r.body = ""; /* a partial body is no answer */
        r.duration = now_monotonic() - q->queued;
        q->done(q->userdata, &r);
}

int k8s_poll(struct k8s *k, struct curl_waitfd *extra, unsigned nextra, int timeout_ms) {
        struct k8s_req *done = NULL, **tail = &done;
        CURLMsg *m;
        int running, left;

        if (curl_multi_poll(k->multi, extra, nextra, timeout_ms, NULL) != CURLM_OK)
                return -EIO;
        if (curl_multi_perform(k->multi, &running) != CURLM_OK)
                return -EIO;

        /* Collect first, call back after: a callback may queue requests (or
         * run one synchronously, polling again) while curl's message queue
         * and our pending list are in a consistent state. */
        while ((m = curl_multi_info_read(k->multi, &left))) {
                if (m->msg != CURLMSG_DONE)
                        continue;
                CURL *h = m->easy_handle;
                CURLcode result = m->data.result; /* m is gone after remove_handle */
                struct k8s_req *q;
                char *priv = NULL;
                long status = 0;

                curl_easy_getinfo(h, CURLINFO_PRIVATE, &priv);
                q = (struct k8s_req *) priv;
                curl_multi_remove_handle(k->multi, h);
                q->result = result;
                if (result == CURLE_OK)
                        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
                if (status == 401 && retry_unauthorized(k, q))
                        continue;
                pending_unlink(k, q);
                *tail = q;
                tail = &q->done_next;
        }
        while (done) {
                struct k8s_req *q = done;
                done = q->done_next;
                req_finish(q);
                req_free(q);
        }
        return 0;
}

unsigned k8s_pending(const struct k8s *k) { return k->n_pending; }
unsigned long k8s_connections(const struct k8s *k) { return k->connections; }

struct sync_state {
        bool done;
        int err;
        struct k8s_response r;
        char *body;
};

static void sync_done(void *userdata, const struct k8s_response *r) {
        struct sync_state *s = userdata;

        s->done = true;
        s->r = *r;
        s->r.body = NULL;
        s->body = malloc(r->len + 1);
        if (!s->body) {
                s->err = -ENOMEM;
                return;
        }
        memcpy(s->body, r->body, r->len);
        s->body[r->len] = 0;
}

int k8s_request_sync(struct k8s *k, const char *method, const char *path, const char *content_type,
                     const char *body, struct k8s_response *ret, char **ret_body) {
        struct sync_state s = {};
        struct k8s_req *q;
        int r;

        if (!ret)
                return -EINVAL;
        r = req_queue(k, method, path, content_type, body, false, 0, NULL, sync_done, &s, &q);
        if (r < 0)
                return r;
        /* curl enforces the timeout per attempt; a 401 retry makes two, and
         * requests queued behind the connection limit wait their turn. */
        usec_t deadline = now_monotonic() + 2 * k->timeout + k->connect_timeout + USEC_PER_SEC;
        while (!s.done) {
                usec_t now = now_monotonic();
                if (now >= deadline) {
                        pending_unlink(k, q);
                        curl_multi_remove_handle(k->multi, q->easy);
                        req_free(q);
                        return -ETIMEDOUT;
                }
                usec_t left = (deadline - now) / USEC_PER_MSEC + 1;
                r = k8s_poll(k, NULL, 0, left > 1000 ? 1000 : (int) left);
                if (r < 0 && !s.done) {
                        pending_unlink(k, q);
                        curl_multi_remove_handle(k->multi, q->easy);
                        req_free(q);
                        return r;
                }
        }
        if (s.err < 0) {
                free(s.body);
                return s.err;
        }
        s.r.body = ret_body ? s.body : NULL;
        *ret = s.r;
        if (ret_body)
                *ret_body = s.body;
        else
                free(s.body);
        return 0;
}
