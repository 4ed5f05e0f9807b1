/* k8s-sim: the Kubernetes API simulator as a standalone server, for the demo
 * and for poking at spotd by hand. Prints its URL, CA and token file once
 * listening, runs until SIGTERM or SIGINT. Without --node or --pod it serves
 * a small fixed layout: a spot node with two Flink TaskManagers and pods that
 * spotd must leave alone, and a second node with the JobManager. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k8s_sim.h"

static void usage(FILE *f) {
        fputs("Usage: k8s-sim [--dir DIR] [--token TOKEN] [--grace-ms-per-s N]\n"
              "               [--node NAME[:LABELS]]... [--pod NS/NAME:NODE[:LABELS[:GRACE[:OWNER]]]]...\n"
              "               [--pdb NS/NAME:LABELS[:BLOCKED_MS]]...\n"
              "LABELS is k=v,k2=v2. Without --node and --pod: a demo layout.\n", f);
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
        enum { OPT_DIR = 256, OPT_TOKEN, OPT_GRACE, OPT_NODE, OPT_POD, OPT_PDB };
        static const struct option opts[] = {
                { "dir", required_argument, NULL, OPT_DIR },
                { "token", required_argument, NULL, OPT_TOKEN },
                { "grace-ms-per-s", required_argument, NULL, OPT_GRACE },
                { "node", required_argument, NULL, OPT_NODE },
                { "pod", required_argument, NULL, OPT_POD },
                { "pdb", required_argument, NULL, OPT_PDB },
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
                        kinds[n_objs] = c;
                        objs[n_objs++] = optarg;
                        break;
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
                }
                if (r < 0) {
                        fprintf(stderr, "k8s-sim: bad object '%s'\n", objs[i]);
                        k8s_sim_stop(s);
                        return 2;
                }
        }
        if (!layout) demo_layout(s);

        char url[64];
        k8s_sim_url(s, url, sizeof url);
        printf("listening on %s ca=%s token-file=%s\n", url, k8s_sim_ca_file(s), k8s_sim_token_file(s));
        fflush(stdout);

        int sig;
        while (sigwait(&set, &sig) != 0)
                ;
        k8s_sim_stop(s);
        return 0;
}
