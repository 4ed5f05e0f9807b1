/* libcurl plumbing with no policy: a capped body buffer, capture of one
 * response header, and translation of curl failures to -errno. */
#pragma once
#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>

#include "macro.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(CURL *, curl_easy_cleanup)
DEFINE_TRIVIAL_CLEANUP_FUNC(struct curl_slist *, curl_slist_free_all)

/* A response body with a hard size limit. Bytes past the limit abort the
 * transfer (curl then reports CURLE_WRITE_ERROR) and set overflow. */
struct http_body {
        char *data;      /* NUL-terminated, owned */
        size_t len;
        size_t limit;
        bool overflow;
};

/* CURLOPT_WRITEFUNCTION for a struct http_body passed as CURLOPT_WRITEDATA. */
size_t http_body_write(char *ptr, size_t size, size_t nmemb, void *userdata);
void http_body_reset(struct http_body *b);
void http_body_done(struct http_body *b);

/* Captures the value of one response header (case-insensitive name) into a
 * fixed buffer; longer values are truncated, which callers treat as invalid. */
struct http_header_capture {
        const char *name;
        char value[128];
        bool found;
};
size_t http_header_capture_cb(char *buf, size_t size, size_t nitems, void *userdata);

/* curl result to -errno: timeouts -ETIMEDOUT, refused -ECONNREFUSED, name
 * resolution -EHOSTUNREACH, size cap -EFBIG, TLS -EPERM, the rest -EIO. */
int http_curl_errno(CURLcode c, const struct http_body *b);

/* Short human words for an -errno returned by this library ("timeout",
 * "connection refused", ...). Never NULL. */
const char *http_strerror(int err);
