/* k8s-sim: the Kubernetes API simulator as a standalone server, for the demo
 * and for poking at spotd by hand. Prints its URL, CA and token file once
 * listening, runs until SIGTERM or SIGINT. Without --node or --pod it serves
 * a small fixed layout: a spot node with two Flink TaskManagers and pods that
 * spotd must leave alone, and a second node with the JobManager.
 *
 * --pod-pidfile NS/NAME=PATH makes it the kubelet of that pod, whose
 * container is the process whose pid PATH holds (a real Flink TaskManager in
 * tests/flink): when the pod starts terminating (an accepted eviction or a
 * delete) the process gets SIGTERM, the pod is gone once the process has
 * exited, and a process still alive at the end of the grace period gets
 * SIGKILL (use --grace-ms-per-s 1000 for real seconds). */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "k8s_sim.h"

static void usage(FILE *f) {
        fputs("Usage: k8s-sim [--dir DIR] [--token TOKEN] [--grace-ms-per-s N]\n"
              "               [--node NAME[:LABELS]]... [--pod NS/NAME:NODE[:LABELS[:GRACE[:OWNER]]]]...\n"
              "               [--pdb NS/NAME:LABELS[:BLOCKED_MS]]...\n"
              "               [--pod-annotation NS/NAME=KEY=VALUE]... [--pod-ip NS/NAME=IP]...\n"
              "               [--pod-pidfile NS/NAME=PATH]...\n"
              "LABELS is k=v,k2=v2. Without --node and --pod: a demo layout.\n"
              "--pod-pidfile: act as the pod's kubelet, its container being the process\n"
              "whose pid PATH holds (SIGTERM when it starts terminating, gone when the\n"
              "process has exited, SIGKILL at the end of the grace period).\n", f);
}

static int parse_uint(const char *s, unsigned long max, unsigned long *ret) {
        char *end;
        errno = 0;
        unsigned long v = strtoul(s, &end, 10);
        if (errno || end == s || *end || *s == '-' || v > max) return -EINVAL;
        *ret = v;
        return 0;
}

/* Splits "a:b:c" in place into at most n fields (missing ones NULL). */
static void split(char *s, char **f, size_t n) {
        for (size_t i = 0; i < n; i++) {
                f[i] = s;
                if (s && (s = strchr(s, ':'))) *s++ = 0;
        }
}

/* "NS/NAME" in place. */
static int ns_name(char *s, char **ns, char **name) {
        char *slash = s ? strchr(s, '/') : NULL;
        if (!slash || slash == s || !slash[1]) return -EINVAL;
        *slash = 0;
        *ns = s;
        *name = slash + 1;
        return 0;
}

static int add_pod(struct k8s_sim *s, char *spec) {
        char *f[5], *ns, *name;
        unsigned long grace = 30;
        split(spec, f, 5);
        if (ns_name(f[0], &ns, &name) < 0 || !f[1] || !*f[1] ||
            (f[3] && parse_uint(f[3], UINT_MAX, &grace) < 0))
                return -EINVAL;
        k8s_sim_add_pod(s, ns, name, f[1], f[2] ? f[2] : "", (unsigned)grace, f[4] && *f[4] ? f[4] : NULL);
        return 0;
}

static int add_pdb(struct k8s_sim *s, char *spec) {
        char *f[3], *ns, *name;
        unsigned long blocked = 0;
        split(spec, f, 3);
        if (ns_name(f[0], &ns, &name) < 0 || !f[1] || (f[2] && parse_uint(f[2], UINT32_MAX, &blocked) < 0))
                return -EINVAL;
        k8s_sim_add_pdb(s, ns, name, f[1], (uint32_t)blocked);
        return 0;
}

/* ---- --pod-pidfile: a kubelet whose containers are local processes ---- */

struct kubelet_pod {
        char *ns, *name, *pidfile;
        pid_t pid;
        bool stopping; /* SIGTERM sent, not yet seen exited */
        bool killed;
};
static struct kubelet_pod *kpods;
static size_t n_kpods;
static pthread_mutex_t klock = PTHREAD_MUTEX_INITIALIZER;

static void klog(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void klog(const char *fmt, ...) {
        va_list ap;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        char when[32];
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
        fprintf(stderr, "%s.%03ldZ k8s-sim: kubelet: ", when, ts.tv_nsec / 1000000);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}

static pid_t read_pid(const char *path) {
        FILE *f = fopen(path, "re");
        long pid = 0;
        if (!f) return 0;
        if (fscanf(f, "%ld", &pid) != 1) pid = 0;
        fclose(f);
        return pid > 0 ? (pid_t)pid : 0;
}

/* Not running any more: gone, or a zombie nobody has reaped yet. */
static bool proc_exited(pid_t pid) {
        char path[64], buf[512];
        snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
        FILE *f = fopen(path, "re");
        if (!f) return true;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        const char *paren = strrchr(buf, ')');
        return !paren || paren[1] != ' ' || paren[2] == 'Z' || paren[2] == 'X';
}

/* Called under the simulator's lock when a running pod starts terminating. */
static void kubelet_terminate(void *userdata, const char *ns, const char *name, const char *ip) {
        (void)userdata;
        (void)ip;
        pthread_mutex_lock(&klock);
        for (size_t i = 0; i < n_kpods; i++) {
                struct kubelet_pod *k = &kpods[i];
                if (strcmp(k->ns, ns) != 0 || strcmp(k->name, name) != 0 || k->stopping) continue;
                k->pid = read_pid(k->pidfile);
                if (k->pid > 0 && kill(k->pid, SIGTERM) == 0) {
                        k->stopping = true;
                        klog("SIGTERM to %s/%s (pid %ld)", ns, name, (long)k->pid);
                } else
                        klog("no process for %s/%s (pid %ld)", ns, name, (long)k->pid);
        }
        pthread_mutex_unlock(&klock);
}

/* From the main thread, every 100 ms. */
static void kubelet_tick(struct k8s_sim *s) {
        for (size_t i = 0; i < n_kpods; i++) {
                pthread_mutex_lock(&klock);
                struct kubelet_pod k = kpods[i];
                pthread_mutex_unlock(&klock);
                if (!k.stopping) continue;
                if (proc_exited(k.pid)) {
                        k8s_sim_pod_exited(s, k.ns, k.name);
                        klog("%s/%s: process %ld exited, pod gone", k.ns, k.name, (long)k.pid);
                        pthread_mutex_lock(&klock);
                        kpods[i].stopping = false;
                        kpods[i].pid = -1; /* done: never signalled again */
                        pthread_mutex_unlock(&klock);
                } else if (!k.killed && k8s_sim_pod_state(s, k.ns, k.name) == 2) {
                        kill(k.pid, SIGKILL);
                        klog("%s/%s: grace period over, SIGKILL to %ld", k.ns, k.name, (long)k.pid);
                        pthread_mutex_lock(&klock);
                        kpods[i].killed = true;
                        pthread_mutex_unlock(&klock);
                }
        }
}

/* "NS/NAME=REST" in place. */
static int ns_name_rest(char *s, char **ns, char **name, char **rest) {
        char *eq = strchr(s, '=');
        if (!eq || !eq[1]) return -EINVAL;
        *eq = 0;
        *rest = eq + 1;
        return ns_name(s, ns, name);
}

static void demo_layout(struct k8s_sim *s) {
        k8s_sim_add_node(s, "spot-node-1", "kubernetes.io/hostname=spot-node-1,"
                                           "node.kubernetes.io/instance-type=m6i.xlarge,"
                                           "karpenter.sh/capacity-type=spot");
        k8s_sim_add_node(s, "node-2", "kubernetes.io/hostname=node-2,karpenter.sh/capacity-type=on-demand");
        k8s_sim_add_pod(s, "flink", "job-a-taskmanager-1-1", "spot-node-1",
                        "app=job-a,component=taskmanager,type=flink-native-kubernetes", 30, "ReplicaSet");
        k8s_sim_add_pod(s, "flink", "job-a-taskmanager-1-2", "spot-node-1",
                        "app=job-a,component=taskmanager,type=flink-native-kubernetes", 30, "ReplicaSet");
        k8s_sim_add_pod(s, "flink", "job-a-taskmanager-1-3", "node-2",
                        "app=job-a,component=taskmanager,type=flink-native-kubernetes", 30, "ReplicaSet");
        k8s_sim_add_pod(s, "flink", "job-a-7d9f8c6b5-x2k4p", "node-2",
                        "app=job-a,component=jobmanager,type=flink-native-kubernetes", 30, "ReplicaSet");
        k8s_sim_add_pod(s, "kube-system", "kube-proxy-q8z7t", "spot-node-1", "k8s-app=kube-proxy", 30, "DaemonSet");
        k8s_sim_add_pod(s, "default", "web-5c7d8f9b4-abcde", "spot-node-1", "app=web", 30, "ReplicaSet");
        k8s_sim_add_pdb(s, "default", "web", "app=web", 0);
}

int main(int argc, char **argv) {
        enum { OPT_DIR = 256, OPT_TOKEN, OPT_GRACE, OPT_NODE, OPT_POD, OPT_PDB, OPT_ANNOTATION, OPT_PIDFILE, OPT_IP };
        static const struct option opts[] = {
                { "dir", required_argument, NULL, OPT_DIR },
                { "token", required_argument, NULL, OPT_TOKEN },
                { "grace-ms-per-s", required_argument, NULL, OPT_GRACE },
                { "node", required_argument, NULL, OPT_NODE },
                { "pod", required_argument, NULL, OPT_POD },
                { "pdb", required_argument, NULL, OPT_PDB },
                { "pod-annotation", required_argument, NULL, OPT_ANNOTATION },
                { "pod-pidfile", required_argument, NULL, OPT_PIDFILE },
                { "pod-ip", required_argument, NULL, OPT_IP },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        struct k8s_sim_options o = { 0 };
        unsigned long grace_ms = 0;
        int c;

        /* The objects come after the start: collect the specs first. */
        char *objs[argc];
        int kinds[argc];
        size_t n_objs = 0;
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
                switch (c) {
                case OPT_DIR: o.dir = optarg; break;
                case OPT_TOKEN: o.token = optarg; break;
                case OPT_GRACE:
                        if (parse_uint(optarg, 60000, &grace_ms) < 0) {
                                fprintf(stderr, "k8s-sim: bad number '%s'\n", optarg);
                                return 2;
                        }
                        o.grace_ms_per_s = (unsigned)grace_ms;
                        break;
                case OPT_NODE:
                case OPT_POD:
                case OPT_PDB:
                case OPT_ANNOTATION:
                case OPT_IP:
                        kinds[n_objs] = c;
                        objs[n_objs++] = optarg;
                        break;
                case OPT_PIDFILE: {
                        char *ns, *name, *path;
                        if (ns_name_rest(optarg, &ns, &name, &path) < 0) {
                                fprintf(stderr, "k8s-sim: bad --pod-pidfile '%s'\n", optarg);
                                return 2;
                        }
                        kpods = realloc(kpods, (n_kpods + 1) * sizeof *kpods);
                        if (!kpods) return 1;
                        kpods[n_kpods++] = (struct kubelet_pod) { .ns = ns, .name = name, .pidfile = path };
                        break;
                }
                case 'h': usage(stdout); return 0;
                default: usage(stderr); return 2;
                }
        }
        if (optind < argc) {
                usage(stderr);
                return 2;
        }

        /* Block the signals before the server threads start, so they inherit
         * the mask and only sigwait() below sees them. A shell starts
         * background jobs with SIGINT ignored, and an ignored signal is
         * dropped even when blocked: restore the default first. */
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGINT);
        pthread_sigmask(SIG_BLOCK, &set, NULL);
        signal(SIGPIPE, SIG_IGN);

        struct k8s_sim *s;
        int r = k8s_sim_start(&o, &s);
        if (r < 0) {
                fprintf(stderr, "k8s-sim: cannot start: %s\n", strerror(-r));
                return 1;
        }
        bool layout = false;
        for (size_t i = 0; i < n_objs; i++) {
                char *f[2];
                r = 0;
                switch (kinds[i]) {
                case OPT_NODE:
                        split(objs[i], f, 2);
                        k8s_sim_add_node(s, f[0], f[1] ? f[1] : "");
                        layout = true;
                        break;
                case OPT_POD: r = add_pod(s, objs[i]); layout = true; break;
                case OPT_PDB: r = add_pdb(s, objs[i]); break;
                case OPT_IP: {
                        char *ns, *name, *ip;
                        r = ns_name_rest(objs[i], &ns, &name, &ip);
                        if (r == 0) k8s_sim_set_pod_ip(s, ns, name, ip);
                        break;
                }
                case OPT_ANNOTATION: {
                        char *ns, *name, *kv, *eq;
                        r = ns_name_rest(objs[i], &ns, &name, &kv);
                        if (r == 0 && (eq = strchr(kv, '=')) && eq != kv) {
                                *eq = 0;
                                k8s_sim_set_pod_annotation(s, ns, name, kv, eq + 1);
                        } else
                                r = -EINVAL;
                        break;
                }
                }
                if (r < 0) {
                        fprintf(stderr, "k8s-sim: bad object '%s'\n", objs[i]);
                        k8s_sim_stop(s);
                        return 2;
                }
        }
        if (!layout) demo_layout(s);
        if (n_kpods) k8s_sim_set_terminate_hook(s, kubelet_terminate, NULL);

        char url[64];
        k8s_sim_url(s, url, sizeof url);
        printf("listening on %s ca=%s token-file=%s\n", url, k8s_sim_ca_file(s), k8s_sim_token_file(s));
        fflush(stdout);

        if (!n_kpods) {
                int sig;
                while (sigwait(&set, &sig) != 0)
                        ;
        } else
                for (;;) {
                        const struct timespec tick = { 0, 100 * 1000 * 1000 };
                        if (sigtimedwait(&set, NULL, &tick) > 0) break;
                        kubelet_tick(s);
                }
        k8s_sim_set_terminate_hook(s, NULL, NULL);
        k8s_sim_stop(s);
        free(kpods);
        return 0;
}
