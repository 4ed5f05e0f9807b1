/* spotd: protects Flink jobs on spot nodes from interruption notices. */
#include <curl/curl.h>
#include <stdio.h>
#include <string.h>

#include "agent.h"
#include "check.h"
#include "config.h"
#include "log.h"

static const char *const subcommands[] = { "run", "check", "version", NULL };

int main(int argc, char **argv) {
        const char *cmd = "run";
        struct config cfg;
        int r, shift = 0;

        if (argc > 1 && argv[1][0] != '-') {
                for (size_t i = 0; subcommands[i]; i++)
                        if (strcmp(argv[1], subcommands[i]) == 0)
                                cmd = subcommands[i];
                if (strcmp(cmd, argv[1]) != 0) {
                        fprintf(stderr, "spotd: unknown command \"%.64s\" (run, check, version)\n", argv[1]);
                        return 2;
                }
                shift = 1;
        }
        if (strcmp(cmd, "version") == 0) {
                printf("spotd %s (%s)\n", SPOTD_VERSION, SPOTD_GIT);
                return 0;
        }
        r = config_parse(&cfg, argc - shift, argv + shift, NULL, stdout, stderr);
        if (r < 0)
                return 2;
        if (r > 0)
                return 0;

        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
                fprintf(stderr, "spotd: cannot initialize libcurl\n");
                return 1;
        }
        if (strcmp(cmd, "check") == 0)
                r = check_run(&cfg, stdout);
        else {
                log_setup(cfg.log_target, cfg.log_format, cfg.log_level, NULL);
                r = agent_run(&cfg);
        }
        curl_global_cleanup();
        return r;
}
