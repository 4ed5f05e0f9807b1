/* flink-sim: the Flink JobManager simulator as a standalone server, for the
 * demo, the real-API-server tests and poking at spotd by hand: TaskManagers
 * of two slots (by default flink-taskmanager-1-1 and -1-2) and one job
 * (source -> sink, parallelism 4 by default). Prints its URL once
 * listening, runs until SIGTERM or SIGINT. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flink_sim.h"

#define DEMO_JOB "a1b2c3d4e5f60718293a4b5c6d7e8f90"

static void usage(FILE *f) {
        fputs("Usage: flink-sim [--version 1.18.1|1.19.0|1.20.0|2.0.0|2.3.0] [--port N]\n"
              "                 [--taskmanager ID=IP]... [--parallelism N]\n"
              "  --taskmanager  a TaskManager of 2 slots, its resource id (the pod's name) and\n"
              "                 IP (the pod's IP); repeatable, up to 16; replaces the default two\n"
              "  --parallelism  the job's parallelism and upper bounds (1-64, default 4)\n", f);
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                { "version", required_argument, NULL, 'v' },
                { "port", required_argument, NULL, 'p' },
                { "taskmanager", required_argument, NULL, 't' },
                { "parallelism", required_argument, NULL, 'P' },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        struct flink_sim_options o = { .version = "1.18.1" };
        unsigned long port = 0, parallelism = 4;
        /* ID=IP, split in place in argv */
        struct { const char *id, *ip; } tms[16];
        unsigned ntms = 0;
        char *end;
        int c;

        while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
                switch (c) {
                case 'v': o.version = optarg; break;
                case 'p':
                        errno = 0;
                        port = strtoul(optarg, &end, 10);
                        if (errno || end == optarg || *end || *optarg == '-' || port > 65535) {
                                fprintf(stderr, "flink-sim: bad port '%s'\n", optarg);
                                return 2;
                        }
                        break;
                case 't': {
                        char *eq = strchr(optarg, '=');
                        struct in_addr a;
                        if (ntms >= 16 || !eq || eq == optarg || eq - optarg > 63 || inet_pton(AF_INET, eq + 1, &a) != 1) {
                                fprintf(stderr, "flink-sim: bad --taskmanager '%s' (ID=IPv4, at most 16)\n", optarg);
                                return 2;
                        }
                        *eq = 0;
                        tms[ntms].id = optarg;
                        tms[ntms++].ip = eq + 1;
                        break;
                }
                case 'P':
                        errno = 0;
                        parallelism = strtoul(optarg, &end, 10);
                        if (errno || end == optarg || *end || *optarg == '-' || parallelism < 1 || parallelism > 64) {
                                fprintf(stderr, "flink-sim: bad --parallelism '%s' (1-64)\n", optarg);
                                return 2;
                        }
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

        struct flink_sim *s;
        int r = flink_sim_start_port(&o, (uint16_t)port, &s);
        if (r < 0) {
                fprintf(stderr, "flink-sim: cannot start Flink %s on port %lu: %s\n", o.version, port, strerror(-r));
                return 1;
        }
        if (!ntms) {
                flink_sim_add_taskmanager(s, "flink-taskmanager-1-1", "10.0.0.11", 2);
                flink_sim_add_taskmanager(s, "flink-taskmanager-1-2", "10.0.0.12", 2);
        }
        for (unsigned i = 0; i < ntms; i++)
                flink_sim_add_taskmanager(s, tms[i].id, tms[i].ip, 2);
        flink_sim_add_job(s, DEMO_JOB, "demo: source -> sink");
        flink_sim_add_vertex(s, DEMO_JOB, "bc764cd8ddf7a0cff126f51c16239658", "Source: events", (unsigned) parallelism, 128, NULL);
        flink_sim_add_vertex(s, DEMO_JOB, "0a448493b4782967b150582570326227", "Sink: out", (unsigned) parallelism, 128, NULL);

        char url[64];
        flink_sim_url(s, url, sizeof url);
        printf("listening on %s\n", url);
        fflush(stdout);

        int sig;
        while (sigwait(&set, &sig) != 0)
                ;
        flink_sim_stop(s);
        return 0;
}
