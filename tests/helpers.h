/* Test helpers: run the real spotd binary with its output captured, wait for
 * lines, and talk HTTP to it. Header-only: each test binary includes it once. */
#pragma once
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "macro.h"
#include "timeutil.h"

struct proc {
        pid_t pid;
        int fd;       /* read end: the child's stdout and stderr */
        char *out;    /* everything read so far, NUL-terminated */
        size_t len, cap;
};

/* SPOTD_TEST_TIME_SCALE (default 1; 4 in tests/valgrind-run.sh) stretches every
 * wait of these helpers and the time bounds the tests assert with test_ms(). */
static inline double test_time_scale(void) {
        static double scale;
        if (scale == 0) {
                const char *s = getenv("SPOTD_TEST_TIME_SCALE");
                double v = s ? strtod(s, NULL) : 1;
                scale = v > 1 ? v : 1;
        }
        return scale;
}
static inline int test_ms(int ms) {
        return (int) ((double) ms * test_time_scale());
}

/* argv[0] is ignored and replaced by SPOTD_BINARY. envp NULL: a minimal
 * environment (no SPOTD_* from the test runner's). The sanitizers' options
 * of the test runner are passed on either way. SPOTD_TEST_WRAPPER, when set,
 * is a command put in front of spotd's, split at spaces and looked up in
 * PATH, e.g. "valgrind --error-exitcode=99 -q". */
static inline int proc_spawn(struct proc *p, char *const *argv, char *const *envp) {
        static char *const minimal_env[] = { "PATH=/usr/bin:/bin", NULL };
        static const char *const forwarded[] = { "ASAN_OPTIONS=", "UBSAN_OPTIONS=", "LSAN_OPTIONS=" };
        extern char **environ;
        char *env[128], *args[128], wrapper[512], *save = NULL;
        size_t ne = 0, na = 0;
        int fds[2];
        *p = (struct proc) { .fd = -1, .pid = -1 };
        /* Everything the child needs is made before fork: the test process has threads. */
        for (char *const *e = envp ? envp : minimal_env; *e && ne < ELEMENTSOF(env) - ELEMENTSOF(forwarded) - 1; e++)
                env[ne++] = *e;
        for (size_t i = 0; i < ELEMENTSOF(forwarded); i++)
                for (char **e = environ; e && *e; e++)
                        if (strncmp(*e, forwarded[i], strlen(forwarded[i])) == 0) {
                                env[ne++] = *e;
                                break;
                        }
        env[ne] = NULL;
        const char *w = getenv("SPOTD_TEST_WRAPPER");
        if (w && *w) {
                snprintf(wrapper, sizeof wrapper, "%s", w);
                for (char *t = strtok_r(wrapper, " ", &save); t && na < 32; t = strtok_r(NULL, " ", &save))
                        args[na++] = t;
                args[na++] = (char *) SPOTD_BINARY;
                for (size_t i = 1; argv[0] && argv[i] && na < ELEMENTSOF(args) - 1; i++)
                        args[na++] = argv[i];
                args[na] = NULL;
        }
        if (pipe2(fds, O_CLOEXEC) < 0)
                return -errno;
        p->fd = fds[0];
        p->pid = fork();
        if (p->pid < 0)
                return -errno;
        if (p->pid == 0) {
                /* A failed assertion ends the test process: take spotd with it. */
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                dup2(fds[1], 1);
                dup2(fds[1], 2);
                if (na)
                        execvpe(args[0], args, env);
                else
                        execve(SPOTD_BINARY, argv, env);
                _exit(127);
        }
        close(fds[1]);
        fcntl(p->fd, F_SETFL, O_NONBLOCK);
        return 0;
}

/* Reads what is available, waiting at most timeout_ms for more. */
static inline void proc_pump(struct proc *p, int timeout_ms) {
        struct pollfd pfd = { .fd = p->fd, .events = POLLIN };
        if (p->fd < 0 || poll(&pfd, 1, timeout_ms) <= 0)
                return;
        for (;;) {
                if (p->cap - p->len < 4097) {
                        p->cap = p->cap ? p->cap * 2 : 65536;
                        p->out = realloc(p->out, p->cap);
                }
                ssize_t n = read(p->fd, p->out + p->len, p->cap - p->len - 1);
                if (n <= 0) {
                        if (n == 0) {
                                close(p->fd);
                                p->fd = -1;
                        }
                        break;
                }
                p->len += (size_t) n;
                p->out[p->len] = 0;
        }
}

/* Waits until needle has appeared at least times times in the output. */
static inline bool proc_wait_for_n(struct proc *p, const char *needle, int times, int timeout_ms) {
        usec_t end = now_monotonic() + (usec_t) test_ms(timeout_ms) * USEC_PER_MSEC;
        for (;;) {
                int n = 0;
                for (const char *s = p->out; s && (s = strstr(s, needle)); s += strlen(needle))
                        n++;
                if (n >= times)
                        return true;
                usec_t now = now_monotonic();
                if (now >= end || (p->fd < 0))
                        return false;
                proc_pump(p, (int) ((end - now) / USEC_PER_MSEC) + 1);
        }
}
#define proc_wait_for(p, needle, ms) proc_wait_for_n((p), (needle), 1, (ms))

static inline int proc_count(const struct proc *p, const char *needle) {
        int n = 0;
        for (const char *s = p->out; s && (s = strstr(s, needle)); s += strlen(needle))
                n++;
        return n;
}

/* Where a sanitizer or valgrind memcheck report starts in the child's
 * output, or NULL. */
static inline const char *proc_error_report(const struct proc *p) {
        static const char *const markers[] = {
                "ERROR: AddressSanitizer", "ERROR: LeakSanitizer", ": runtime error: ",
                "== Invalid ", "== Conditional jump", "== Use of uninitialised", "== Syscall param",
                "== Mismatched free", "== Source and destination overlap", " are definitely lost in ",
        };
        const char *first = NULL;
        for (size_t i = 0; p->out && i < ELEMENTSOF(markers); i++) {
                const char *m = strstr(p->out, markers[i]);
                if (m && (!first || m < first))
                        first = m;
        }
        return first;
}

/* Sends sig (0: none) and waits up to timeout_ms; kills with SIGKILL after
 * that. Returns the wait status, or -1 if it had to be killed. A sanitizer
 * or valgrind report in the output is printed to stderr (the sanitized
 * ctest run fails on it) and, should spotd have exited 0 all the same, the
 * status becomes exit code 99. */
static inline int proc_stop(struct proc *p, int sig, int timeout_ms) {
        int status = 0;
        if (sig)
                kill(p->pid, sig);
        usec_t end = now_monotonic() + (usec_t) test_ms(timeout_ms) * USEC_PER_MSEC;
        for (;;) {
                proc_pump(p, 10);
                pid_t r = waitpid(p->pid, &status, WNOHANG);
                if (r == p->pid)
                        break;
                if (now_monotonic() > end) {
                        kill(p->pid, SIGKILL);
                        waitpid(p->pid, &status, 0);
                        status = -1;
                        break;
                }
        }
        proc_pump(p, 0);
        if (p->fd >= 0)
                close(p->fd);
        p->fd = -1;
        const char *report = proc_error_report(p);
        if (report) {
                const char *from = report;
                while (from > p->out && from[-1] != '\n')
                        from--;
                fprintf(stderr, "SPOTD-MEMORY-ERROR: spotd (pid %d) reported a memory error:\n%.8000s\n", (int) p->pid, from);
                if (status == 0)
                        status = 99 << 8;
        }
        return status;
}

static inline void proc_free(struct proc *p) {
        free(p->out);
        p->out = NULL;
}

/* The HTTP port spotd logged at start ("(port N)"). */
static inline unsigned proc_health_port(struct proc *p) {
        if (!proc_wait_for(p, "(port ", 5000))
                return 0;
        return (unsigned) atoi(strstr(p->out, "(port ") + 6);
}

static size_t http_collect(char *ptr, size_t size, size_t nmemb, void *ud) {
        char **buf = ud;
        size_t old = *buf ? strlen(*buf) : 0, n = size * nmemb;
        char *nb = realloc(*buf, old + n + 1);
        if (!nb)
                return 0;
        memcpy(nb + old, ptr, n);
        nb[old + n] = 0;
        *buf = nb;
        return n;
}

/* A request to loopback; returns the status (or -1) and the body, malloc'ed. */
static inline long http_request(const char *method, const char *url, char **ret_body) {
        CURL *c = curl_easy_init();
        char *body = NULL;
        long status = -1;
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, http_collect);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
        if (strcmp(method, "HEAD") == 0)
                curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
        else if (strcmp(method, "GET") != 0)
                curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        if (curl_easy_perform(c) == CURLE_OK)
                curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_cleanup(c);
        if (ret_body)
                *ret_body = body ? body : strdup("");
        else
                free(body);
        return status;
}

static inline long http_get_port(unsigned port, const char *path, char **ret_body) {
        char url[128];
        snprintf(url, sizeof url, "http://127.0.0.1:%u%s", port, path);
        return http_request("GET", url, ret_body);
}

/* Waits up to ms for an expression to hold (for effects that trail a log
 * line, such as a best-effort Kubernetes Event). */
#define eventually(expr, ms) ({                                                 \
        usec_t _end = now_monotonic() + (usec_t) test_ms(ms) * USEC_PER_MSEC;   \
        bool _ok;                                                               \
        while (!(_ok = (expr)) && now_monotonic() < _end)                       \
                usleep(10 * 1000);                                              \
        _ok;                                                                    \
})
