/* imds-sim: the metadata simulator as a standalone server, for the demo and
 * for poking at spotd by hand. Prints its URL once listening, runs until
 * SIGTERM or SIGINT. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "imds_sim.h"

static void usage(FILE *f) {
        fputs("Usage: imds-sim [--port N] [--require-v2] [--spot ACTION [--spot-after-ms N] [--spot-lead-s N]]\n"
              "                [--rebalance-after-ms N] [--lifecycle STATE] [--drift] [--real-headers]\n"
              "  --drift  recompute the spot notice time and the rebalance noticeTime on\n"
              "           every answer, as AWS's own metadata mock does\n"
              "  --spot-lead-s  the notice's time is this long after it shows up (default 120)\n"
              "  --real-headers  a real instance's headers, Connection: close included\n", f);
}

static int parse_uint(const char *s, unsigned long max, unsigned long *ret) {
        char *end;
        errno = 0;
        unsigned long v = strtoul(s, &end, 10);
        if (errno || end == s || *end || *s == '-' || v > max) return -EINVAL;
        *ret = v;
        return 0;
}

int main(int argc, char **argv) {
        enum { OPT_PORT = 256, OPT_V2, OPT_SPOT, OPT_SPOT_AFTER, OPT_REBALANCE, OPT_LIFECYCLE, OPT_DRIFT, OPT_LEAD, OPT_REAL };
        static const struct option opts[] = {
                { "port", required_argument, NULL, OPT_PORT },
                { "require-v2", no_argument, NULL, OPT_V2 },
                { "spot", required_argument, NULL, OPT_SPOT },
                { "spot-after-ms", required_argument, NULL, OPT_SPOT_AFTER },
                { "rebalance-after-ms", required_argument, NULL, OPT_REBALANCE },
                { "lifecycle", required_argument, NULL, OPT_LIFECYCLE },
                { "drift", no_argument, NULL, OPT_DRIFT },
                { "spot-lead-s", required_argument, NULL, OPT_LEAD },
                { "real-headers", no_argument, NULL, OPT_REAL },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        struct imds_sim_options o = { 0 };
        unsigned long port = 0, spot_after = 0, rebalance_after = 0, lead = 0;
        const char *spot = NULL, *lifecycle = NULL;
        bool rebalance = false, drift = false;
        int c;

        while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
                int r = 0;
                switch (c) {
                case OPT_PORT: r = parse_uint(optarg, 65535, &port); break;
                case OPT_V2: o.require_v2 = true; break;
                case OPT_REAL: o.real_headers = true; break;
                case OPT_SPOT: spot = optarg; break;
                case OPT_SPOT_AFTER: r = parse_uint(optarg, UINT_MAX, &spot_after); break;
                case OPT_REBALANCE:
                        r = parse_uint(optarg, UINT_MAX, &rebalance_after);
                        rebalance = true;
                        break;
                case OPT_LIFECYCLE: lifecycle = optarg; break;
                case OPT_DRIFT: drift = true; break;
                case OPT_LEAD: r = parse_uint(optarg, 86400, &lead); break;
                case 'h': usage(stdout); return 0;
                default: usage(stderr); return 2;
                }
                if (r < 0) {
                        fprintf(stderr, "imds-sim: bad number '%s'\n", optarg);
                        return 2;
                }
        }
        if (optind < argc || ((spot_after || lead) && !spot)) {
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

        struct imds_sim *s;
        int r = imds_sim_start_port(&o, (uint16_t)port, &s);
        if (r < 0) {
                fprintf(stderr, "imds-sim: cannot listen on port %lu: %s\n", port, strerror(-r));
                return 1;
        }
        if (spot) /* notice time: two minutes after it shows up */
                imds_sim_set_spot(s, spot, lead ? time(NULL) + (time_t)(spot_after / 1000 + lead) : 0,
                                  (unsigned)spot_after);
        if (rebalance)
                imds_sim_set_rebalance(s, time(NULL) + (time_t)(rebalance_after / 1000),
                                       (unsigned)rebalance_after);
        if (lifecycle) imds_sim_set_lifecycle(s, lifecycle);
        imds_sim_set_spot_time_drift(s, drift);
        imds_sim_set_rebalance_time_drift(s, drift);

        char url[64];
        imds_sim_url(s, url, sizeof url);
        printf("listening on %s\n", url);
        fflush(stdout);

        int sig;
        while (sigwait(&set, &sig) != 0)
                ;
        imds_sim_stop(s);
        return 0;
}
