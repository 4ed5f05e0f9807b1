#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "config.h"

struct run {
        int r;
        char *err;
        size_t errlen;
};

static struct run parse(struct config *c, char *const *argv, char *const *envp) {
        struct run out = {};
        FILE *err = open_memstream(&out.err, &out.errlen), *devnull = fopen("/dev/null", "w");
        int argc = 0;
        while (argv[argc])
                argc++;
        out.r = config_parse(c, argc, argv, envp, devnull, err);
        fclose(err);
        fclose(devnull);
        return out;
}

static char *const no_env[] = { NULL };

Test(config, defaults) {
        struct config c;
        char *argv[] = { "run", "--node-name", "node-a", NULL };
        struct run r = parse(&c, argv, no_env);
        cr_assert_eq(r.r, 0, "%s", r.err);
        cr_assert_str_eq(c.node_name, "node-a");
        cr_assert_str_eq(c.imds_endpoint, "http://169.254.169.254");
        cr_assert_eq(c.poll_interval, USEC_PER_SEC);
        cr_assert_eq(c.imds_token_ttl, 21600 * USEC_PER_SEC);
        cr_assert(c.watch[EVENT_SPOT_INTERRUPTION] && c.watch[EVENT_REBALANCE] && c.watch[EVENT_SCHEDULED] &&
                  c.watch[EVENT_ASG_TERMINATION]);
        cr_assert_eq(c.rebalance_action, ACTION_CORDON);
        cr_assert_str_eq(c.health_addr, "127.0.0.1:9808");
        cr_assert_not(c.dry_run);
        free(r.err);
}

Test(config, precedence_flag_env_file) {
        char path[] = "/tmp/spotd-config-XXXXXX";
        int fd = mkstemp(path);
        cr_assert_geq(fd, 0);
        dprintf(fd, "# comment\npoll-interval = 5s\nimds-timeout = 300ms\nlog-format = \"json\"\nwatch-asg = false\n");
        close(fd);

        char cfgenv[128];
        snprintf(cfgenv, sizeof cfgenv, "SPOTD_CONFIG=%s", path);
        char *envp[] = { cfgenv, "SPOTD_POLL_INTERVAL=2s", "SPOTD_IMDS_TIMEOUT=400ms", "HOME=/root", NULL };
        char *argv[] = { "run", "--node-name=node-b", "--poll-interval", "250ms", "--dry-run", NULL };
        struct config c;
        struct run r = parse(&c, argv, envp);
        cr_assert_eq(r.r, 0, "%s", r.err);
        cr_assert_eq(c.poll_interval, 250 * USEC_PER_MSEC, "flag wins over env and file");
        cr_assert_eq(c.imds_timeout, 400 * USEC_PER_MSEC, "env wins over file");
        cr_assert_eq(c.log_format, LOG_FORMAT_JSON, "file wins over default");
        cr_assert_not(c.watch[EVENT_ASG_TERMINATION]);
        cr_assert(c.dry_run);
        cr_assert_str_eq(c.config_file, path);
        free(r.err);
        unlink(path);
}

Test(config, errors_name_option_and_value) {
        static const struct { const char *arg; const char *expect; } bad[] = {
                { "--poll-interval=abc", "invalid value \"abc\" for --poll-interval (flag): expected a duration" },
                { "--poll-interval=0s", "--poll-interval" },
                { "--poll-interval=2h", "between 1ms and 1h" },
                { "--imds-endpoint=ftp://x", "invalid value \"ftp://x\" for --imds-endpoint" },
                { "--imds-endpoint=http://", "--imds-endpoint" },
                { "--imds-endpoint=http://a b", "--imds-endpoint" },
                { "--imds-endpoint=http://h:99999", "--imds-endpoint" },
                { "--health-max-connections=-1", "--health-max-connections" },
                { "--health-max-connections=1x", "whole number" },
                { "--health-addr=localhost:80", "--health-addr" },
                { "--health-addr=127.0.0.1", "--health-addr" },
                { "--log-format=xml", "one of text, json" },
                { "--dry-run=maybe", "true or false" },
                { "--frobnicate", "unknown option --frobnicate" },
                { "--node-name=Bad_Name", "--node-name" },
                { "--rebalance-action=drain", "ignore, cordon, handle" },
                { "--config=/nonexistent/spotd.conf", "cannot read config file \"/nonexistent/spotd.conf\"" },
                { "stray", "unexpected argument \"stray\"" },
                { "--imds-token-ttl=7h", "--imds-token-ttl" },
                { "--log-level=loud", "--log-level" },
                { "--poll-interval=\x01\x02", "\\x01\\x02" },
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                struct config c;
                char *argv[] = { "run", "--node-name=n", (char *) bad[i].arg, NULL };
                struct run r = parse(&c, argv, no_env);
                cr_assert_eq(r.r, -EINVAL, "%s accepted", bad[i].arg);
                cr_assert(r.err && strstr(r.err, bad[i].expect), "%s: got \"%s\"", bad[i].arg, r.err);
                cr_assert_eq(strchr(r.err, '\n'), r.err + strlen(r.err) - 1, "one line: %s", r.err);
                free(r.err);
        }
}

Test(config, env_errors_name_variable) {
        struct config c;
        char *envp[] = { "SPOTD_POLL_INTERVAL=fast", NULL };
        char *argv[] = { "run", "--node-name=n", NULL };
        struct run r = parse(&c, argv, envp);
        cr_assert_eq(r.r, -EINVAL);
        cr_assert(strstr(r.err, "\"fast\" for --poll-interval (SPOTD_POLL_INTERVAL)"), "%s", r.err);
        free(r.err);
}

Test(config, file_errors_name_line) {
        char path[] = "/tmp/spotd-config-XXXXXX";
        int fd = mkstemp(path);
        dprintf(fd, "poll-interval = 1s\nbogus-key = 1\n");
        close(fd);
        struct config c;
        char flag[128];
        snprintf(flag, sizeof flag, "--config=%s", path);
        char *argv[] = { "run", "--node-name=n", flag, NULL };
        struct run r = parse(&c, argv, no_env);
        cr_assert_eq(r.r, -EINVAL);
        cr_assert(strstr(r.err, ":2: unknown option \"bogus-key\""), "%s", r.err);
        free(r.err);

        fd = open(path, O_WRONLY | O_TRUNC);
        dprintf(fd, "imds-timeout = 1d\n");
        close(fd);
        r = parse(&c, argv, no_env);
        cr_assert_eq(r.r, -EINVAL);
        cr_assert(strstr(r.err, "for --imds-timeout (") && strstr(r.err, ":1)"), "%s", r.err);
        free(r.err);
        unlink(path);
}

Test(config, booleans_and_help) {
        struct config c;
        char *argv[] = { "run", "--node-name=n", "--no-watch-spot", "--watch-rebalance=off", "--dry-run", "--no-dry-run", NULL };
        struct run r = parse(&c, argv, no_env);
        cr_assert_eq(r.r, 0, "%s", r.err);
        cr_assert_not(c.watch[EVENT_SPOT_INTERRUPTION]);
        cr_assert_not(c.watch[EVENT_REBALANCE]);
        cr_assert_not(c.dry_run);
        free(r.err);

        char *help[] = { "run", "--help", NULL };
        r = parse(&c, help, no_env);
        cr_assert_eq(r.r, 1);
        free(r.err);
}

/* Found by fuzzing (tests/fuzz/corpus/config/crash-url-bracket-space): the
 * inside of an IPv6 literal was not checked, so a URL with spaces (or a CR)
 * between the brackets passed as valid and failed only later, at every use. */
Test(config, url_ipv6_literal_is_an_address) {
        static const char *const bad[] = {
                "--webhook-url=http://[:--webhook-url = help:]ttp%",
                "--imds-endpoint=http://[fd00::1 x]/",
                "--kube-api=https://[fd00::1\r]:443",
                "--imds-endpoint=http://[]:80",
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                struct config c;
                char *argv[] = { "run", "--node-name=n", (char *) bad[i], NULL };
                struct run r = parse(&c, argv, no_env);
                cr_assert_eq(r.r, -EINVAL, "%s accepted", bad[i]);
                cr_assert(r.err && strstr(r.err, "URL"), "%s: got \"%s\"", bad[i], r.err);
                free(r.err);
        }
        struct config c;
        char *argv[] = { "run", "--node-name=n", "--kube-api=https://[fd00:10:96::1]:443",
                         "--webhook-url=http://[::ffff:10.0.0.1]:8080/hook", NULL };
        struct run r = parse(&c, argv, no_env);
        cr_assert_eq(r.r, 0, "%s", r.err);
        cr_assert_str_eq(c.kube_api, "https://[fd00:10:96::1]:443");
        free(r.err);
}
