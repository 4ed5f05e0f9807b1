/* Security checks of the real spotd binary against the simulators:
 *   - the HTTP server refuses oversized request lines and headers and holds a
 *     bounded number of connections (the unit tests in test_health.c cover
 *     the handler; these cover the daemon as shipped, its connections
 *     counted in /proc);
 *   - no secret (Kubernetes bearer tokens, the client key, the IMDSv2 session
 *     token, the webhook's user:password@, ?token= and Authorization header)
 *     ever reaches stderr (text and JSON, at debug level), the journal (every
 *     field), /status, /metrics, Kubernetes Events, the node's annotations,
 *     the Flink JobManager or the webhook payloads, over a full event with a
 *     token rotation and a webhook that refuses;
 *   - TLS verification cannot be turned off. That a wrong CA is refused by
 *     the Kubernetes client is handle::untrusted_certificate_refused. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <ctype.h>
#include <dirent.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "flink_sim.h"
#include "restarts.h"
#include "helpers.h"
#include "imds_sim.h"
#include "k8s_sim.h"
#include "webhook.h"

#include <limits.h>

#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#endif

#define JOB1 "a1b2c3d4e5f60718293a4b5c6d7e8f90"
#define VA "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a"
#define TM_LABELS "component=taskmanager,type=flink-native-kubernetes,app=orders"

#define KUBE_TOKEN "kube-tok-S3CR3T-5d41402abc4b2a76"
#define KUBE_TOKEN_ROTATED "kube-tok-R0TATED-7e2b9c1d44aa"
#define HOOK_USER "hookuser-S3CR3T"
#define HOOK_PASS "hookpass-S3CR3T-77a1"
#define HOOK_QUERY "qtok-S3CR3T-99f0e1"
#define HOOK_HEADER "hdr-S3CR3T-42c7d3"

/* ---- small tools ---- */

/* TCP connections spotd holds on its HTTP port: its sockets (/proc/PID/fd)
 * that /proc/net/tcp shows bound to that port and not listening. Other
 * sockets of spotd (metadata service, API) do not count. */
static long health_conns(pid_t pid, unsigned port) {
        char path[64], link[64], line[512];
        unsigned long inodes[1024];
        size_t n = 0;
        long held = 0;
        snprintf(path, sizeof path, "/proc/%d/fd", (int) pid);
        DIR *d = opendir(path);
        if (!d)
                return -1;
        for (struct dirent *e; (e = readdir(d)) && n < ELEMENTSOF(inodes);) {
                ssize_t l = readlinkat(dirfd(d), e->d_name, link, sizeof link - 1);
                if (l > 0) {
                        link[l] = 0;
                        if (sscanf(link, "socket:[%lu]", &inodes[n]) == 1)
                                n++;
                }
        }
        closedir(d);
        FILE *f = fopen("/proc/net/tcp", "re");
        if (!f)
                return -1;
        while (fgets(line, sizeof line, f)) {
                unsigned lport, st;
                unsigned long inode;
                if (sscanf(line, " %*d: %*x:%x %*x:%*x %x %*s %*s %*s %*d %*d %lu", &lport, &st, &inode) != 3 ||
                    lport != port || st == 0x0A /* LISTEN */)
                        continue;
                for (size_t i = 0; i < n; i++)
                        held += inodes[i] == inode;
        }
        fclose(f);
        return held;
}

static int tcp_connect(unsigned port, bool nonblock) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t) port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
        cr_assert_geq(fd, 0);
        int r = connect(fd, (struct sockaddr *) &a, sizeof a);
        cr_assert(r == 0 || (nonblock && errno == EINPROGRESS), "connect: %s", strerror(errno));
        return fd;
}

/* Sends a raw request (ignoring a reset while sending: the server may answer
 * and close before it has read it all) and returns the status line. */
static void raw_request(unsigned port, const char *req, size_t len, char *status, size_t slen) {
        int fd = tcp_connect(port, false);
        struct timeval tv = { .tv_sec = 5 };
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        for (size_t off = 0; off < len;) {
                ssize_t n = send(fd, req + off, len - off, MSG_NOSIGNAL);
                if (n <= 0)
                        break;
                off += (size_t) n;
        }
        char buf[512];
        ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
        buf[n > 0 ? n : 0] = 0;
        snprintf(status, slen, "%.*s", (int) strcspn(buf, "\r\n"), buf);
        close(fd);
}

static unsigned free_port(void) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t alen = sizeof a;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert_eq(bind(fd, (struct sockaddr *) &a, sizeof a), 0);
        cr_assert_eq(getsockname(fd, (struct sockaddr *) &a, &alen), 0);
        close(fd);
        return ntohs(a.sin_port);
}

/* ---- the HTTP server's limits ---- */

static struct imds_sim *imds;
static char a_imds[128];

static void start_imds(void) {
        char url[64];
        cr_assert_eq(imds_sim_start(&(struct imds_sim_options) { .require_v2 = true }, &imds), 0);
        imds_sim_url(imds, url, sizeof url);
        snprintf(a_imds, sizeof a_imds, "--imds-endpoint=%s", url);
}

static void stop_all(void);
TestSuite(security, .init = start_imds, .fini = stop_all, .timeout = 120);

Test(security, oversized_request_line_and_headers_refused) {
        struct proc p;
        char st[128];
        cr_assert_eq(proc_spawn(&p, (char *[]) { "spotd", "run", a_imds, "--node-name=node-a", "--poll-interval=50ms",
                                                 "--log-target=stderr", "--health-addr=127.0.0.1:0", "--dry-run", NULL },
                                NULL), 0);
        unsigned port = proc_health_port(&p);
        cr_assert_gt(port, 0, "%s", p.out);
        cr_assert(proc_wait_for(&p, "Watching instance", 5000), "%s", p.out);

        static char req[80 * 1024];
        /* A 32 KiB request line. */
        int n = snprintf(req, sizeof req, "GET /healthz?");
        memset(req + n, 'a', 32 * 1024);
        n += 32 * 1024;
        n += snprintf(req + n, sizeof req - (size_t) n, " HTTP/1.1\r\nHost: x\r\n\r\n");
        raw_request(port, req, (size_t) n, st, sizeof st);
        cr_assert_str_eq(st, "HTTP/1.1 414 URI Too Long");
        /* One 32 KiB header. */
        n = snprintf(req, sizeof req, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ");
        memset(req + n, 'a', 32 * 1024);
        n += 32 * 1024;
        n += snprintf(req + n, sizeof req - (size_t) n, "\r\n\r\n");
        raw_request(port, req, (size_t) n, st, sizeof st);
        cr_assert_str_eq(st, "HTTP/1.1 431 Request Header Fields Too Large");
        /* 3000 small headers. */
        n = snprintf(req, sizeof req, "GET /healthz HTTP/1.1\r\nHost: x\r\n");
        for (int i = 0; i < 3000; i++)
                n += snprintf(req + n, sizeof req - (size_t) n, "X-H%d: v\r\n", i);
        n += snprintf(req + n, sizeof req - (size_t) n, "\r\n");
        raw_request(port, req, (size_t) n, st, sizeof st);
        cr_assert_str_eq(st, "HTTP/1.1 431 Request Header Fields Too Large");
        /* A normal request still works, nothing was kept. */
        n = snprintf(req, sizeof req, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        raw_request(port, req, (size_t) n, st, sizeof st);
        cr_assert_str_eq(st, "HTTP/1.1 200 OK");
        cr_assert(eventually(health_conns(p.pid, port) == 0, 2000), "%ld connections kept", health_conns(p.pid, port));
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0, "%s", p.out);
        proc_free(&p);
}

/* 40 idle connections: spotd holds at most --health-max-connections of them
 * (and at most 16 of one client address), the rest wait in the kernel's
 * backlog or are closed; once they go, it answers again. */
static void bounded_connections(const char *limit_arg, long limit) {
        struct proc p;
        int fds[40];
        cr_assert_eq(proc_spawn(&p, (char *[]) { "spotd", "run", a_imds, "--node-name=node-a", "--poll-interval=50ms",
                                                 "--log-target=stderr", "--health-addr=127.0.0.1:0", "--dry-run",
                                                 (char *) limit_arg, NULL }, NULL), 0);
        unsigned port = proc_health_port(&p);
        cr_assert_gt(port, 0, "%s", p.out);
        cr_assert(proc_wait_for(&p, "Watching instance", 5000), "%s", p.out);
        usleep(200 * 1000);
        long most = 0, steady = LONG_MAX;
        cr_assert_eq(health_conns(p.pid, port), 0);
        for (size_t i = 0; i < ELEMENTSOF(fds); i++)
                fds[i] = tcp_connect(port, true);
        /* Over the connections refused per address MHD accepts and closes at
         * once: those show for a moment. What stays is what it holds: the
         * limit itself, read 20 times in a row. */
        int in_a_row = 0;
        for (int i = 0; i < 1000 && in_a_row < 20; i++) {
                steady = health_conns(p.pid, port);
                most = MAX(most, steady);
                in_a_row = steady == limit ? in_a_row + 1 : 0;
                usleep(20 * 1000);
        }
        cr_assert_eq(in_a_row, 20, "spotd held %ld connections (limit %ld)", steady, limit);
        cr_assert_leq(most, limit + 4, "at most a few more for a moment: %ld", most);
        for (size_t i = 0; i < ELEMENTSOF(fds); i++)
                close(fds[i]);
        cr_assert(eventually(http_get_port(port, "/healthz", NULL) == 200, 3000), "answers again");
        cr_assert(eventually(health_conns(p.pid, port) == 0, 3000), "%ld connections kept", health_conns(p.pid, port));
        cr_assert_eq(http_get_port(port, "/healthz", NULL), 200);
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0, "%s", p.out);
        proc_free(&p);
}

Test(security, connections_bounded_by_max_connections) { bounded_connections("--health-max-connections=4", 4); }
Test(security, connections_bounded_per_client_address) { bounded_connections("--health-max-connections=32", 16); }

/* ---- TLS verification cannot be turned off ---- */

Test(security, tls_verification_cannot_be_disabled) {
        struct proc p;
        cr_assert_eq(proc_spawn(&p, (char *[]) { "spotd", "--help", NULL }, NULL), 0);
        int st = proc_stop(&p, 0, 5000);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s", p.out);
        cr_assert(strstr(p.out, "--kube-ca-file"), "%s", p.out);
        for (char *c = p.out; *c; c++)
                *c = (char) tolower((unsigned char) *c);
        static const char *const words[] = { "insecure", "skip-verify", "skip-tls", "no-verify", "noverify",
                                             "verify-peer", "verify-host", "tls-verify", "ssl-verify", "verify=false",
                                             "unverified", "unsafe" };
        for (size_t i = 0; i < ELEMENTSOF(words); i++)
                cr_assert_null(strstr(p.out, words[i]), "an option mentions \"%s\":\n%s", words[i], p.out);
        proc_free(&p);

        /* The usual spellings are unknown options, and plain http to the API is refused. */
        static const char *const bad[] = { "--insecure", "--kube-insecure-skip-tls-verify", "--insecure-skip-tls-verify",
                                           "--kube-api=http://127.0.0.1:6443" };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                cr_assert_eq(proc_spawn(&p, (char *[]) { "spotd", "run", "--node-name=n", (char *) bad[i], NULL }, NULL), 0);
                st = proc_stop(&p, 0, 5000);
                cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2, "%s: status %d: %s", bad[i], st, p.out);
                proc_free(&p);
        }
        /* An invalid webhook URL or header is refused without echoing it. */
        static const char *const secret_bad[] = { "--webhook-url=ftp://u:" HOOK_PASS "@h/x?token=" HOOK_QUERY,
                                                  "--webhook-header=Authorization Bearer " HOOK_HEADER };
        for (size_t i = 0; i < ELEMENTSOF(secret_bad); i++) {
                cr_assert_eq(proc_spawn(&p, (char *[]) { "spotd", "run", "--node-name=n", (char *) secret_bad[i], NULL },
                                        NULL), 0);
                st = proc_stop(&p, 0, 5000);
                cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2, "%s: status %d", secret_bad[i], st);
                cr_assert(strstr(p.out, "--webhook-"), "names the option: %s", p.out);
                cr_assert_null(strstr(p.out, "S3CR3T"), "the value is not echoed: %s", p.out);
                proc_free(&p);
        }
}

/* ---- no secret in any output ---- */

struct sink {
        struct MHD_Daemon *d;
        pthread_mutex_t lock;
        unsigned n_ok, n_refused;
        char auth[160], query[160];
        char *bodies[8];
        unsigned n_bodies;
};

struct sink_req {
        char buf[65536];
        size_t len;
};

static enum MHD_Result sink_handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                    const char *version, const char *data, size_t *size, void **state) {
        struct sink *s = cls;
        struct sink_req *r = *state;
        if (!r) {
                *state = calloc(1, sizeof *r);
                return *state ? MHD_YES : MHD_NO;
        }
        if (*size) {
                size_t n = *size < sizeof r->buf - 1 - r->len ? *size : sizeof r->buf - 1 - r->len;
                memcpy(r->buf + r->len, data, n);
                r->len += n;
                *size = 0;
                return MHD_YES;
        }
        bool refuse = strcmp(url, "/refuse") == 0;
        pthread_mutex_lock(&s->lock);
        if (refuse)
                s->n_refused++;
        else {
                const char *a = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
                const char *q = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "token");
                snprintf(s->auth, sizeof s->auth, "%s", a ? a : "");
                snprintf(s->query, sizeof s->query, "%s", q ? q : "");
                s->n_ok++;
        }
        if (s->n_bodies < ELEMENTSOF(s->bodies))
                s->bodies[s->n_bodies++] = strndup(r->buf, r->len);
        pthread_mutex_unlock(&s->lock);
        /* The refusing hook answers 400: not retried, logged at once. */
        struct MHD_Response *resp = MHD_create_response_from_buffer(2, "{}", MHD_RESPMEM_PERSISTENT);
        enum MHD_Result ret = MHD_queue_response(c, refuse ? 400 : 200, resp);
        MHD_destroy_response(resp);
        return ret;
}

static void sink_done(void *cls, struct MHD_Connection *c, void **state, enum MHD_RequestTerminationCode t) {
        free(*state);
        *state = NULL;
}

static unsigned sink_count(struct sink *s, bool refused) {
        pthread_mutex_lock(&s->lock);
        unsigned n = refused ? s->n_refused : s->n_ok;
        pthread_mutex_unlock(&s->lock);
        return n;
}

static struct k8s_sim *kube;
static struct flink_sim *fl;
static struct sink sink = { .lock = PTHREAD_MUTEX_INITIALIZER };
static char tmpdir[64];
static pid_t journald = -1;

static void stop_all(void) {
        imds = imds_sim_stop(imds);
        if (kube)
                k8s_sim_set_terminate_hook(kube, NULL, NULL);
        kube = k8s_sim_stop(kube);
        fl = flink_sim_stop(fl);
        if (sink.d)
                MHD_stop_daemon(sink.d);
        sink.d = NULL;
        for (unsigned i = 0; i < sink.n_bodies; i++)
                free(sink.bodies[i]);
        sink.n_bodies = 0;
        if (journald > 0) {
                kill(journald, SIGTERM);
                waitpid(journald, NULL, 0);
                journald = -1;
        }
        if (tmpdir[0]) {
                char cmd[128];
                snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
                cr_expect_eq(system(cmd), 0);
                tmpdir[0] = 0;
        }
}

static void on_terminate(void *ud, const char *ns, const char *name, const char *ip) {
        flink_sim_pod_terminating(ud, name, ip);
}

/* A private journald in a mount namespace of this test process, on tmpfs, as
 * test_journal.c does. */
static void journald_start(void) {
        cr_assert_eq(unshare(CLONE_NEWNS), 0, "unshare: %s (the test needs root)", strerror(errno));
        cr_assert_eq(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), 0);
        mkdir("/run/systemd", 0755);
        mkdir("/run/systemd/journal", 0755);
        mkdir("/run/log", 0755);
        mkdir("/run/log/journal", 0755);
        cr_assert_eq(mount("tmpfs", "/run/systemd/journal", "tmpfs", 0, "mode=0755"), 0);
        cr_assert_eq(mount("tmpfs", "/run/log/journal", "tmpfs", 0, "mode=0755"), 0);
        journald = fork();
        if (journald == 0) {
                int null = open("/dev/null", O_RDWR);
                dup2(null, 0), dup2(null, 1), dup2(null, 2);
                execl("/lib/systemd/systemd-journald", "systemd-journald", NULL);
                _exit(127);
        }
        struct stat st;
        for (int i = 0; i < 100 && stat("/run/systemd/journal/socket", &st) < 0; i++)
                usleep(50 * 1000);
        cr_assert_eq(stat("/run/systemd/journal/socket", &st), 0, "journald did not create its socket");
}

/* Every field of every spotd entry, as journalctl -o json prints them. */
static char *journal_dump(void) {
        FILE *f = popen("journalctl -D /run/log/journal -o json --no-pager SYSLOG_IDENTIFIER=spotd 2>&1", "r");
        char *buf = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&buf, &len);
        char chunk[65536];
        size_t n;
        cr_assert(f && m);
        while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
                fwrite(chunk, 1, n, m);
        pclose(f);
        fclose(m);
        return buf;
}

static char *slurp(const char *path) {
        FILE *f = fopen(path, "re");
        cr_assert_not_null(f, "%s", path);
        char *buf = calloc(1, 65536);
        size_t n = fread(buf, 1, 65535, f);
        buf[n] = 0;
        fclose(f);
        return buf;
}

enum target { T_JOURNAL, T_STDERR_TEXT, T_STDERR_JSON };

static void no_secret_anywhere(enum target target) {
        char url[64], a_api[128], a_ca[1100], a_token[1100], a_cert[160], a_key[160], a_health[64];
        char hook[256], hook_refuse[256], hook_tls[256], path[128];

        if (target == T_JOURNAL)
                journald_start();
        /* The Kubernetes API with a token of ours, a client certificate and key. */
        cr_assert_eq(k8s_sim_start(&(struct k8s_sim_options) { .token = KUBE_TOKEN, .grace_ms_per_s = 20 }, &kube), 0);
        k8s_sim_url(kube, url, sizeof url);
        snprintf(a_api, sizeof a_api, "--kube-api=%s", url);
        snprintf(a_ca, sizeof a_ca, "--kube-ca-file=%s", k8s_sim_ca_file(kube));
        snprintf(a_token, sizeof a_token, "--kube-token-file=%s", k8s_sim_token_file(kube));
        snprintf(tmpdir, sizeof tmpdir, "/tmp/spotd-security-XXXXXX");
        cr_assert_not_null(mkdtemp(tmpdir));
        char cmd[512];
        snprintf(cmd, sizeof cmd, "openssl req -x509 -newkey rsa:2048 -nodes -keyout %s/client.key -out %s/client.crt "
                                  "-subj /CN=system:node:node-a -days 1 >/dev/null 2>&1", tmpdir, tmpdir);
        cr_assert_eq(system(cmd), 0, "openssl");
        snprintf(a_cert, sizeof a_cert, "--kube-client-cert=%s/client.crt", tmpdir);
        snprintf(a_key, sizeof a_key, "--kube-client-key=%s/client.key", tmpdir);
        snprintf(path, sizeof path, "%s/client.key", tmpdir);
        char *key_pem = slurp(path);

        /* Flink: one job, a TaskManager on the node and one elsewhere. */
        cr_assert_eq(flink_sim_start(&(struct flink_sim_options) { .version = "1.18.1", .checkpoint_ms = 50,
                                                                   .restart_ms = 50 }, &fl), 0);
        k8s_sim_set_terminate_hook(kube, on_terminate, fl);
        k8s_sim_add_node(kube, "node-a", NULL);
        k8s_sim_add_node(kube, "node-b", NULL);
        flink_sim_url(fl, url, sizeof url);
        for (int i = 1; i <= 2; i++) {
                char name[64], ip[48];
                snprintf(name, sizeof name, "orders-taskmanager-1-%d", i);
                k8s_sim_add_pod(kube, "flink", name, i == 1 ? "node-a" : "node-b", TM_LABELS, 30, "Deployment");
                k8s_sim_set_pod_annotation(kube, "flink", name, "spotd.io/flink-rest-url", url);
                k8s_sim_pod_ip(kube, "flink", name, ip, sizeof ip);
                flink_sim_add_taskmanager(fl, name, ip, 2);
        }
        flink_sim_add_job(fl, JOB1, "orders");
        flink_sim_add_vertex(fl, JOB1, VA, "all", 4, 128, NULL);

        /* The webhooks: one that takes the signal, one that refuses it (400,
         * logged at once), one over TLS to a server the system CAs cannot know
         * (the API simulator). */
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        sink.d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, sink_handler, &sink,
                                  MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_NOTIFY_COMPLETED, sink_done, NULL, MHD_OPTION_END);
        cr_assert_not_null(sink.d);
        unsigned sport = MHD_get_daemon_info(sink.d, MHD_DAEMON_INFO_BIND_PORT)->port;
        snprintf(hook, sizeof hook, "--webhook-url=http://" HOOK_USER ":" HOOK_PASS "@127.0.0.1:%u/hook?token=" HOOK_QUERY, sport);
        snprintf(hook_refuse, sizeof hook_refuse, "--webhook-url=http://" HOOK_USER ":" HOOK_PASS "@127.0.0.1:%u/refuse?token=" HOOK_QUERY,
                 sport);
        snprintf(hook_tls, sizeof hook_tls, "--webhook-url=https://" HOOK_USER ":" HOOK_PASS "@127.0.0.1:%u/tls-hook?token=" HOOK_QUERY,
                 (unsigned) k8s_sim_port(kube));

        unsigned hport = free_port();
        snprintf(a_health, sizeof a_health, "--health-addr=127.0.0.1:%u", hport);
        const char *tgt = target == T_JOURNAL ? "--log-target=journal" : "--log-target=stderr";
        const char *fmt = target == T_STDERR_JSON ? "--log-format=json" : "--log-format=text";
        struct proc p;
        cr_assert_eq(proc_spawn(&p, (char *[]) { "spotd", "run", a_imds, a_api, a_ca, a_token, a_cert, a_key,
                                                 "--node-name=node-a", "--poll-interval=50ms", (char *) tgt, (char *) fmt,
                                                 "--log-level=debug", a_health, "--eviction-margin=10s",
                                                 "--checkpoint-fresh=0s", "--verify-timeout=20s", hook, hook_refuse,
                                                 hook_tls, "--webhook-header=Authorization: Bearer " HOOK_HEADER,
                                                 "--flink-url-allow=127.0.0.1", NULL },
                                NULL), 0);
        char *body = NULL;
        cr_assert(eventually((proc_pump(&p, 0), free(body), body = NULL, http_get_port(hport, "/status", &body) == 200 &&
                              strstr(body, "\"state\":\"watching\"")), 10000), "%s\n%s", body, p.out);
        free(body);
        body = NULL;
        /* The start-up read used the first token: the next request gets a 401 and re-reads it. */
        cr_assert(eventually(k8s_sim_requests(kube, "GET", "/api/v1/nodes/node-a") >= 1, 5000), "%s", p.out);
        k8s_sim_rotate_token(kube, KUBE_TOKEN_ROTATED);
        imds_sim_set_spot(imds, "terminate", time(NULL) + 120, 0);

        /* Done: the completion signal arrived and the refusing hook was told twice. */
        cr_assert(eventually(sink_count(&sink, false) == 2 && sink_count(&sink, true) == 2, 30000),
                  "signals %u, refused %u: %s", sink_count(&sink, false), sink_count(&sink, true), p.out);
        cr_assert(eventually((free(body), body = NULL, http_get_port(hport, "/status", &body) == 200 &&
                              strstr(body, "\"phase\":\"done\"")), 10000), "%s", body);
        free(body);
        body = NULL;
        cr_assert_eq(k8s_sim_evictions(kube, "flink", "orders-taskmanager-1-1"), 1);
        /* One restart for the reclaim: 1.18 fails over when the TaskManager
         * goes, the lowered bound lands in that restart. */
        assert_job_restarts(fl, JOB1, 1, 0);
        cr_assert_geq(k8s_sim_unauthorized(kube), 1, "the rotated token was picked up after a 401");
        cr_assert_str_eq(sink.auth, "Bearer " HOOK_HEADER, "the header was sent");
        cr_assert_str_eq(sink.query, HOOK_QUERY, "the URL was used as given");
        cr_assert_eq(k8s_sim_requests(kube, NULL, "/tls-hook"), 0, "no webhook request got through unverified TLS");

        /* Everything spotd wrote or served. */
        struct { const char *what; char *text; } out[12];
        size_t nout = 0;
        char *status_body = NULL, *metrics_body = NULL;
        cr_assert_eq(http_get_port(hport, "/status", &status_body), 200);
        cr_assert_eq(http_get_port(hport, "/metrics", &metrics_body), 200);
        int st = proc_stop(&p, SIGTERM, 5000);
        cr_assert_eq(st, 0, "%s", p.out);
        out[nout++] = (typeof(out[0])) { "stdout/stderr", strdup(p.out ? p.out : "") };
        if (target == T_JOURNAL) {
                char *j = journal_dump();
                cr_assert(strstr(j, "Webhook http://127.0.0.1:"), "the journal has spotd's entries: %.2000s", j);
                cr_assert(strstr(j, "\"SPOTD_EVENT_ID\""), "with their fields");
                out[nout++] = (typeof(out[0])) { "journal (json, every field)", j };
        } else
                cr_assert(strstr(p.out, "Webhook http://127.0.0.1:"), "%s", p.out);
        out[nout++] = (typeof(out[0])) { "/status", status_body };
        out[nout++] = (typeof(out[0])) { "/metrics", metrics_body };
        out[nout++] = (typeof(out[0])) { "Kubernetes Events", k8s_sim_events_json(kube) };
        out[nout++] = (typeof(out[0])) { "Kubernetes request log", k8s_sim_log(kube) };
        out[nout++] = (typeof(out[0])) { "node-a", k8s_sim_node_json(kube, "node-a") };
        out[nout++] = (typeof(out[0])) { "Flink request log", flink_sim_log(fl) };
        char *bodies = NULL;
        size_t blen = 0;
        FILE *m = open_memstream(&bodies, &blen);
        for (unsigned i = 0; i < sink.n_bodies; i++)
                fprintf(m, "%s\n", sink.bodies[i]);
        fclose(m);
        out[nout++] = (typeof(out[0])) { "webhook payloads", bodies };
        cr_assert_geq(k8s_sim_events(kube, NULL), 3, "Events were posted");
        cr_assert(strstr(bodies, "\"completed\""), "%s", bodies);

        /* The secrets: tokens, key material (every base64 line of the PEM),
         * the IMDSv2 session tokens, the webhook's credentials. */
        const char *secrets[64];
        size_t ns = 0;
        secrets[ns++] = KUBE_TOKEN;
        secrets[ns++] = KUBE_TOKEN_ROTATED;
        secrets[ns++] = HOOK_PASS;
        secrets[ns++] = HOOK_USER;
        secrets[ns++] = HOOK_QUERY;
        secrets[ns++] = HOOK_HEADER;
        char *imds_tokens = imds_sim_tokens(imds);
        cr_assert(imds_tokens && imds_tokens[0], "IMDSv2 tokens were handed out");
        for (char *save = NULL, *t = strtok_r(imds_tokens, "\n", &save); t && ns < 40; t = strtok_r(NULL, "\n", &save))
                secrets[ns++] = t;
        for (char *save = NULL, *l = strtok_r(key_pem, "\n", &save); l && ns < ELEMENTSOF(secrets);
             l = strtok_r(NULL, "\n", &save))
                if (strncmp(l, "-----", 5) != 0 && strlen(l) >= 32)
                        secrets[ns++] = l;
        cr_assert_gt(ns, 10);
        for (size_t i = 0; i < nout; i++) {
                cr_assert_not_null(out[i].text, "%s", out[i].what);
                for (size_t k = 0; k < ns; k++) {
                        const char *hit = strstr(out[i].text, secrets[k]);
                        if (hit)
                                hit = hit - out[i].text > 100 ? hit - 100 : out[i].text;
                        cr_expect_null(hit, "secret \"%s\" found in %s: ...%.200s...", secrets[k], out[i].what,
                                       hit ? hit : "");
                }
                cr_expect_null(strstr(out[i].text, "S3CR3T"), "a secret found in %s", out[i].what);
                free(out[i].text);
        }
        free(imds_tokens);
        free(key_pem);
        proc_free(&p);
}

Test(security, no_secret_in_logs_stderr_text) { no_secret_anywhere(T_STDERR_TEXT); }
Test(security, no_secret_in_logs_stderr_json) { no_secret_anywhere(T_STDERR_JSON); }
Test(security, no_secret_in_logs_journal) { no_secret_anywhere(T_JOURNAL); }

/* ---- a webhook's path is a secret too ---- */

/* Slack, Teams and Discord put the credential in the path
 * (/services/T000/B000/XXXX): spotd shows a webhook as scheme://host:port
 * only, in every log line (delivered, retried, refused), /status and
 * /metrics (issue 9). The sink answers 503 twice (retried) then 200 on one
 * path, 400 (failed for good, logged at once) on the other. */
#define HOOK_PATH_SECRET "SECRETPATH-4f1d9c"

struct path_sink {
        pthread_mutex_t lock;
        unsigned ok, unavailable, refused;
};

static enum MHD_Result path_sink_handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                         const char *version, const char *data, size_t *size, void **state) {
        struct path_sink *s = cls;
        if (!*state) {
                *state = calloc(1, sizeof(struct sink_req));
                return *state ? MHD_YES : MHD_NO;
        }
        if (*size) {
                *size = 0; /* the payload is not what this test is about */
                return MHD_YES;
        }
        unsigned code;
        pthread_mutex_lock(&s->lock);
        if (strstr(url, "/refuse-"))
                code = 400, s->refused++;
        else if (s->unavailable < 2)
                code = 503, s->unavailable++;
        else
                code = 200, s->ok++;
        pthread_mutex_unlock(&s->lock);
        struct MHD_Response *resp = MHD_create_response_from_buffer(2, "{}", MHD_RESPMEM_PERSISTENT);
        enum MHD_Result ret = MHD_queue_response(c, code, resp);
        MHD_destroy_response(resp);
        return ret;
}

static bool path_sink_reached(struct path_sink *s, unsigned ok, unsigned refused) {
        pthread_mutex_lock(&s->lock);
        bool done = s->ok >= ok && s->refused >= refused;
        pthread_mutex_unlock(&s->lock);
        return done;
}

static void webhook_path_not_shown(const char *format) {
        char url[64], a_api[128], a_ca[1100], a_token[1100], a_health[64], hook[200], hook_refuse[200], shown[64];
        struct path_sink s = { .lock = PTHREAD_MUTEX_INITIALIZER };

        cr_assert_eq(k8s_sim_start(NULL, &kube), 0);
        k8s_sim_url(kube, url, sizeof url);
        snprintf(a_api, sizeof a_api, "--kube-api=%s", url);
        snprintf(a_ca, sizeof a_ca, "--kube-ca-file=%s", k8s_sim_ca_file(kube));
        snprintf(a_token, sizeof a_token, "--kube-token-file=%s", k8s_sim_token_file(kube));
        k8s_sim_add_node(kube, "node-a", NULL);

        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        sink.d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, path_sink_handler, &s,
                                  MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_NOTIFY_COMPLETED, sink_done, NULL, MHD_OPTION_END);
        cr_assert_not_null(sink.d);
        unsigned sport = MHD_get_daemon_info(sink.d, MHD_DAEMON_INFO_BIND_PORT)->port;
        snprintf(hook, sizeof hook, "--webhook-url=http://127.0.0.1:%u/services/T0/B0/" HOOK_PATH_SECRET, sport);
        snprintf(hook_refuse, sizeof hook_refuse, "--webhook-url=http://127.0.0.1:%u/refuse-" HOOK_PATH_SECRET "/x", sport);
        snprintf(shown, sizeof shown, "Webhook http://127.0.0.1:%u ", sport);
        unsigned hport = free_port();
        snprintf(a_health, sizeof a_health, "--health-addr=127.0.0.1:%u", hport);

        struct proc p;
        cr_assert_eq(proc_spawn(&p, (char *[]) { "spotd", "run", a_imds, a_api, a_ca, a_token, "--node-name=node-a",
                                                 "--poll-interval=50ms", "--log-target=stderr", (char *) format,
                                                 "--log-level=debug", a_health, hook, hook_refuse, NULL }, NULL), 0);
        cr_assert(proc_wait_for(&p, "Watching instance", 10000), "%s", p.out);
        imds_sim_set_spot(imds, "terminate", time(NULL) + 120, 0);

        /* Notice and completion: each accepted by one hook (the first after two
         * retries) and refused by the other; each outcome logged. */
        cr_assert(eventually((proc_pump(&p, 0), path_sink_reached(&s, 2, 2) && proc_count(&p, "accepted the signal") >= 2 &&
                              proc_count(&p, "failed after") >= 2), 30000),
                  "ok %u, 503 %u, refused %u: %s", s.ok, s.unavailable, s.refused, p.out);
        cr_assert_eq(s.unavailable, 2, "the first delivery was retried");
        cr_assert_geq(proc_count(&p, shown), 4, "the webhook shown as scheme://host:port (\"%s\"): %s", shown, p.out);

        char *status_body = NULL, *metrics_body = NULL;
        cr_assert_eq(http_get_port(hport, "/status", &status_body), 200);
        cr_assert_eq(http_get_port(hport, "/metrics", &metrics_body), 200);
        cr_assert(strstr(metrics_body, "spotd_webhook_deliveries_total"), "%s", metrics_body);
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0, "%s", p.out);
        const struct { const char *what, *text; } out[] = {
                { "stdout/stderr", p.out }, { "/status", status_body }, { "/metrics", metrics_body },
        };
        for (size_t i = 0; i < ELEMENTSOF(out); i++) {
                const char *hit = strstr(out[i].text, HOOK_PATH_SECRET);
                cr_expect_null(hit, "the webhook's path found in %s: ...%.200s...", out[i].what,
                               hit ? (hit - out[i].text > 100 ? hit - 100 : out[i].text) : "");
                cr_expect_null(strstr(out[i].text, "/services/T0"), "a webhook path in %s", out[i].what);
        }
        free(status_body);
        free(metrics_body);
        proc_free(&p);
}

Test(security, webhook_path_not_shown_text) { webhook_path_not_shown("--log-format=text"); }
Test(security, webhook_path_not_shown_json) { webhook_path_not_shown("--log-format=json"); }

Test(security, webhook_redact_shows_scheme_host_port) {
        static const struct { const char *url, *shown; } cases[] = {
                { "https://hooks.slack.com/services/T000/B000/XXXX", "https://hooks.slack.com:443" },
                { "http://127.0.0.1:8080/services/T0/B0/SECRET?token=x", "http://127.0.0.1:8080" },
                { "http://user:pa?ss@hooks.example/x", "http://hooks.example:80" },
                { "https://user:pass@hooks.example:8443?token=x", "https://hooks.example:8443" },
                { "http://[fd00::1]:9000/api/webhooks/1/SECRET", "http://[fd00::1]:9000" },
                { "https://[fd00::1]/api/webhooks/1/SECRET", "https://[fd00::1]:443" },
                { "https://discord.com/api/webhooks/123/SECRET", "https://discord.com:443" },
                { "not a url", "(invalid URL)" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char buf[300];
                webhook_redact(cases[i].url, buf, sizeof buf);
                cr_assert_str_eq(buf, cases[i].shown, "%s", cases[i].url);
        }
        char small[12];
        webhook_redact("https://hooks.example/SECRET", small, sizeof small);
        cr_assert_str_eq(small, "https://hoo", "cut, not overrun");
}
