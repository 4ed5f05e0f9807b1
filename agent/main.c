/* spotd: protects Flink jobs on spot nodes from interruption notices. */
#include <curl/curl.h>
#include <stdio.h>
#include <string.h>

#include "agent.h"
#include "check.h"
#include "config.h"
#include "history.h"
#include "log.h"

static const char *const subcommands[] = { "run", "check", "history", "version", NULL };

/* /proc/PID/cmdline is readable by every local user, and journald copies it
 * into every entry (_CMDLINE): once parsed, the values of the flags that may
 * carry secrets (webhook URLs with user:password@ or ?token=, headers such as
 * Authorization) are overwritten in place, as curl does with -u. */
static void mask_secret_flags(int argc, char **argv) {
        static const char *const secret[] = { "--webhook-url", "--webhook-header" };
        for (int i = 1; i < argc; i++)
                for (size_t k = 0; k < sizeof secret / sizeof secret[0]; k++) {
                        size_t n = strlen(secret[k]);
                        char *v = NULL;
                        if (strncmp(argv[i], secret[k], n) != 0)
                                continue;
                        if (argv[i][n] == '=')
                                v = argv[i] + n + 1;
                        else if (!argv[i][n] && i + 1 < argc)
                                v = argv[++i];
                        if (v)
                                memset(v, '*', strlen(v));
                }
}

int main(int argc, char **argv) {
        const char *cmd = "run";
        struct config cfg;
        int r, shift = 0;

        if (argc > 1 && argv[1][0] != '-') {
                for (size_t i = 0; subcommands[i]; i++)
                        if (strcmp(argv[1], subcommands[i]) == 0)
                                cmd = subcommands[i];
                if (strcmp(cmd, argv[1]) != 0) {
                        fprintf(stderr, "spotd: unknown command \"%.64s\" (run, check, history, version)\n", argv[1]);
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
        mask_secret_flags(argc, argv);
        if (strcmp(cmd, "history") == 0)
                return history_run(&cfg, stdout, stderr); /* the journal only: no curl */

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
