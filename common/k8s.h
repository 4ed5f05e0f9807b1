/* A small asynchronous Kubernetes API client with no policy: requests go
 * through one curl multi handle (bounded connections, HTTP/2 when the server
 * offers it), TLS is always verified, the bearer token is re-read from its
 * file periodically and on every 401 (one retry), answers are size-capped and
 * failures are parsed from the Status body. Not thread-safe: one loop drives
 * it. Never logs, never exits. */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include "timeutil.h"

struct k8s_options {
        const char *api_url;      /* "https://10.100.0.1:443": https only */
        const char *token_file;   /* bearer token, re-read; NULL: none */
        const char *ca_file;      /* PEM bundle to verify the server; NULL: the system bundle */
        const char *client_cert;  /* PEM, with client_key; both or neither */
        const char *client_key;
        usec_t token_reread;      /* re-read the token file at least this often (default 60 s) */
        usec_t timeout;           /* total, per request (default 10 s) */
        usec_t connect_timeout;   /* default 3 s */
        size_t max_body;          /* default 8 MiB */
        unsigned max_connections; /* to the API server (default 8) */
};

/* In-cluster configuration: KUBERNETES_SERVICE_HOST/PORT from envp (NULL:
 * environ) and the service-account folder sa_dir (NULL:
 * /var/run/secrets/kubernetes.io/serviceaccount). Fills url (bracketing IPv6
 * hosts), token and CA paths and the pod's namespace (empty if unreadable).
 * Only the environment decides: the files are not checked (k8s_new does).
 * Returns 0, or -ENOENT when not running in a cluster, -EINVAL for a
 * malformed host or port, -ENOBUFS when a buffer is too small; the outputs
 * are untouched on failure. */
int k8s_in_cluster(char *const *envp, const char *sa_dir, char *url, size_t urllen, char *token_file,
                   size_t tflen, char *ca_file, size_t calen, char *ns, size_t nslen);

struct k8s;

/* Returns 0; -EINVAL for a bad option (URL not https://, cert without key);
 * -ENOENT / -EACCES when the token, CA or client files cannot be read. */
int k8s_new(const struct k8s_options *o, struct k8s **ret);
/* Cancels pending requests without calling their callbacks. */
struct k8s *k8s_free(struct k8s *k);

struct k8s_response {
        int err;            /* 0, or a transport -errno (http_curl_errno()) */
        long status;        /* HTTP status, 0 on transport failure */
        const char *body;   /* NUL-terminated; valid during the callback only */
        size_t len;
        /* From a Status body (kind "Status"), when there is one: */
        char reason[64];    /* "Conflict", "TooManyRequests", "NotFound", ... */
        char message[256];
        usec_t duration;
};

typedef void (*k8s_done_t)(void *userdata, const struct k8s_response *r);

/* Queues a request. path starts with "/" and is used as given (the caller
 * escapes query values with k8s_escape()). body may be NULL; content_type is
 * required with a body. done is called exactly once from k8s_poll(),
 * unless the client is freed first. done may queue requests (or run one with
 * k8s_request_sync) but must not free the client. A 401 is retried once with a re-read
 * token before done sees it. Returns 0, -EINVAL, -ENOMEM. */
int k8s_request(struct k8s *k, const char *method, const char *path, const char *content_type,
                const char *body, k8s_done_t done, void *userdata);

/* A request to another HTTP service (the Flink JobManagers) through the same
 * connection pool and loop: url is absolute (http:// or https://, verified
 * with the system CAs), no Authorization header, no 401 retry, its own
 * timeout (0: the client's). Otherwise as k8s_request(). */
int k8s_request_url(struct k8s *k, const char *method, const char *url, const char *content_type,
                    const char *body, usec_t timeout, k8s_done_t done, void *userdata);

/* As k8s_request_url() with more request headers ("Name: value", NULL
 * terminated; copied, and wiped when the request is freed: they may carry
 * secrets). -EINVAL for a header with CR or LF. */
int k8s_request_url_headers(struct k8s *k, const char *method, const char *url, const char *const *headers,
                            const char *content_type, const char *body, usec_t timeout, k8s_done_t done,
                            void *userdata);

/* Waits for network activity on the API connections or on the extra fds (as
 * curl_multi_poll: extra[i].revents is set), at most timeout_ms, then runs
 * transfers and calls the callbacks of finished requests. Returns 0 or -EIO. */
struct curl_waitfd;
int k8s_poll(struct k8s *k, struct curl_waitfd *extra, unsigned nextra, int timeout_ms);

/* Requests in flight (queued or running). */
unsigned k8s_pending(const struct k8s *k);
/* Connections opened so far (for benchmarks). */
unsigned long k8s_connections(const struct k8s *k);

/* Runs one request to completion (for `spotd check` and tests): copies the
 * response into *ret, the body malloc'ed in *ret_body (may be NULL; then
 * ret->body is NULL, else it points to *ret_body). Other requests' callbacks
 * run meanwhile. Returns 0 when the request ran, whatever its outcome (a
 * transport failure is in ret->err); -EINVAL / -ENOMEM when it could not be
 * queued; -ETIMEDOUT when it did not finish in twice its timeout (it is
 * cancelled). Outputs untouched on failure. */
int k8s_request_sync(struct k8s *k, const char *method, const char *path, const char *content_type,
                     const char *body, struct k8s_response *ret, char **ret_body);

/* URL-escapes a query value into buf. Returns 0 or -ENOBUFS. */
int k8s_escape(const char *in, char *buf, size_t len);

/* Parses a Status body into reason/message (for callers that hold a body). */
void k8s_parse_status(const char *body, size_t len, char *reason, size_t rlen, char *message, size_t mlen);
