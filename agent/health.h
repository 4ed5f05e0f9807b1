/* The HTTP endpoints (libmicrohttpd, own thread): /healthz, /readyz,
 * /metrics, /status. GET and HEAD only. Reads nothing but the status. */
#pragma once
#include <stdint.h>

#include "status.h"

struct health;

/* addr is "HOST:PORT" ("127.0.0.1:9808", "[::1]:0", "0.0.0.0:9808"); port 0
 * picks a free one. max_connections (0: 32) bounds the connections held; a
 * quarter of them (one at least, from 2 up) only clients on this host get:
 * 127.0.0.1, ::1, the bound address, the interfaces' addresses (the
 * kubelet probes a hostNetwork pod from the node's). Returns 0, -EINVAL for
 * a bad address, -EADDRINUSE or another -errno when the socket cannot be
 * bound. */
int health_start(const char *addr, struct status *st, unsigned max_connections,
                 struct health **ret);
uint16_t health_port(const struct health *h);
struct health *health_stop(struct health *h);

/* Validates and splits "HOST:PORT" (IPv6 in brackets). 0 or -EINVAL. */
int health_parse_addr(const char *addr, char *host, size_t hostlen, uint16_t *ret_port);
