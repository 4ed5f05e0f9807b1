#include "http.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

size_t http_body_write(char *ptr, size_t size, size_t nmemb, void *userdata) {
        struct http_body *b = userdata;
        size_t n = size * nmemb;

        if (n > b->limit || b->len > b->limit - n) {
                b->overflow = true;
                return 0; /* aborts the transfer: never buffer past the cap */
        }
        char *p = realloc(b->data, b->len + n + 1);
        if (!p)
                return 0;
        memcpy(p + b->len, ptr, n);
        b->data = p;
        b->len += n;
        b->data[b->len] = 0;
        return n;
}

void http_body_reset(struct http_body *b) {
        if (b->data)
                b->data[0] = 0;
        b->len = 0;
        b->overflow = false;
}

void http_body_done(struct http_body *b) {
        free(b->data);
        b->data = NULL;
        b->len = 0;
}

size_t http_header_capture_cb(char *buf, size_t size, size_t nitems, void *userdata) {
        struct http_header_capture *h = userdata;
        size_t n = size * nitems, nl = strlen(h->name);

        if (n > nl + 1 && strncasecmp(buf, h->name, nl) == 0 && buf[nl] == ':') {
                const char *v = buf + nl + 1, *end = buf + n;
                while (v < end && (*v == ' ' || *v == '\t'))
                        v++;
                while (end > v && isspace((unsigned char) end[-1]))
                        end--;
                size_t vl = (size_t) (end - v);
                if (vl >= sizeof h->value) {
                        h->found = false; /* too long to be what we expect */
                        return n;
                }
                memcpy(h->value, v, vl);
                h->value[vl] = 0;
                h->found = true;
        }
        return n;
}

int http_curl_errno(CURLcode c, const struct http_body *b) {
        switch (c) {
        case CURLE_OK:
                return 0;
        case CURLE_OPERATION_TIMEDOUT:
                return -ETIMEDOUT;
        case CURLE_COULDNT_CONNECT:
                return -ECONNREFUSED;
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
                return -EHOSTUNREACH;
        case CURLE_WRITE_ERROR:
                return b && b->overflow ? -EFBIG : -EIO;
        case CURLE_FILESIZE_EXCEEDED:
                return -EFBIG;
        case CURLE_GOT_NOTHING:
        case CURLE_RECV_ERROR:
        case CURLE_SEND_ERROR:
        case CURLE_PARTIAL_FILE:
                return -ECONNRESET;
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_CACERT_BADFILE:
                return -EPERM;
        case CURLE_OUT_OF_MEMORY:
                return -ENOMEM;
        default:
                return -EIO;
        }
}

const char *http_strerror(int err) {
        switch (-err) {
        case 0: return "ok";
        case ETIMEDOUT: return "timed out";
        case ECONNREFUSED: return "connection refused";
        case EHOSTUNREACH: return "host unreachable";
        case ECONNRESET: return "connection reset or closed without an answer";
        case EFBIG: return "answer larger than the size limit";
        case EPERM: return "TLS verification failed";
        case ENOENT: return "not found (404)";
        case EACCES: return "unauthorized (401)";
        case EPROTO: return "unexpected HTTP status";
        case EBADMSG: return "malformed answer";
        case ENODATA: return "missing field";
        case EINVAL: return "invalid value";
        case ENOMEM: return "out of memory";
        default: return "I/O error";
        }
}
