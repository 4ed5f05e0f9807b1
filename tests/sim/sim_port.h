/* Holding a simulator's loopback port while its server is down. */
#pragma once
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

/* A socket bound to 127.0.0.1:port that never listens: a connection to the
 * port is refused (RST) as by a closed port, yet no other socket can take
 * it meanwhile. Without it, a server of another test that binds port 0
 * under ctest -j2 may be given the freed port, and the client under test
 * then talks to that server (seen once: "TLS verification failed" where
 * "connection refused" was meant, then the simulator could not restart on
 * its port). SO_REUSEADDR lets it bind over the connections the server left
 * in TIME_WAIT; a port-0 bind still skips a port held so. Returns the fd to
 * close() just before the server starts again, or -errno. */
static inline int sim_port_hold(uint16_t port) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, (const struct sockaddr *) &sa, sizeof sa) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        return fd;
}

/* A loopback port where nothing listens, held the same way (*hold, to
 * close() when the test is done with it). Returns the port, or 0 with *hold
 * -1 when no socket could be had. */
static inline uint16_t sim_port_closed(int *hold) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof sa;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        *hold = -1;
        if (fd < 0 || bind(fd, (struct sockaddr *) &sa, sizeof sa) < 0 || getsockname(fd, (struct sockaddr *) &sa, &len) < 0) {
                if (fd >= 0)
                        close(fd);
                return 0;
        }
        *hold = fd;
        return ntohs(sa.sin_port);
}
