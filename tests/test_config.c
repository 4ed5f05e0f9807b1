#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "config.h"
#include "k8s.h"

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

/* A config file holding text; path is a "/tmp/spotd-config-XXXXXX" buffer. */
static void config_file(char *path, const char *text) {
        int fd = mkstemp(path);
        cr_assert_geq(fd, 0);
        cr_assert_eq(write(fd, text, strlen(text)), (ssize_t) strlen(text));
        close(fd);
}

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
        config_file(path, "# comment\npoll-interval = 5s\nimds-timeout = 300ms\nlog-format = \"json\"\nwatch-asg = false\n");

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
                { "--imds-endpoint=https://169.254.169.254", "must be an http:// URL (the metadata service has no TLS)" },
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

/* Issue 9, found by fuzzing: "--webhook-url=http://a.ee:\r8443/y" passed
 * (strtoul skips white space before the port). Every URL option refuses a
 * control character, a space or DEL wherever it is, from every origin, with
 * one line naming the option and its origin. */
Test(config, url_options_refuse_control_characters_and_spaces) {
        static const struct { const char *name, *env, *pre, *post; } opts[] = {
                { "imds-endpoint", "SPOTD_IMDS_ENDPOINT", "http://", "169.254.169.254:80/latest" },
                { "kube-api", "SPOTD_KUBE_API", "https://", "kube.example:6443/base" },
                { "webhook-url", "SPOTD_WEBHOOK_URL", "https://", "u:p@hooks.example:8443/services/T0?x=1" },
                { "flink-rest-template", "SPOTD_FLINK_REST_TEMPLATE", "http://", "{app}-rest.{namespace}:8081/x" },
        };
        static const char bad[] = { '\r', '\n', '\t', ' ', 0x7f, 0x01, 0x1b };
        for (size_t o = 0; o < sizeof opts / sizeof opts[0]; o++) {
                const char *url = opts[o].post;
                size_t ul = strlen(url);
                /* Every position of the part after the scheme, and the end. */
                for (size_t pos = 0; pos <= ul; pos++)
                        for (size_t b = 0; b < sizeof bad; b++) {
                                /* A newline at the very end of a list is an empty item, not part of a URL. */
                                if (bad[b] == '\n' && pos == ul && strcmp(opts[o].name, "webhook-url") == 0)
                                        continue;
                                char val[256], flag[300], env[300];
                                snprintf(val, sizeof val, "%s%.*s%c%s", opts[o].pre, (int) pos, url, bad[b], url + pos);
                                snprintf(flag, sizeof flag, "--%s=%s", opts[o].name, val);
                                snprintf(env, sizeof env, "%s=%s", opts[o].env, val);
                                char *argv[] = { "run", "--node-name=n", flag, NULL };
                                char *argv_env[] = { "run", "--node-name=n", NULL };
                                char *envp[] = { env, NULL };
                                struct { char *const *argv, *const *envp; const char *origin; } runs[] = {
                                        { argv, no_env, "(flag)" }, { argv_env, envp, opts[o].env },
                                };
                                for (size_t k = 0; k < 2; k++) {
                                        struct config c;
                                        struct run r = parse(&c, runs[k].argv, runs[k].envp);
                                        cr_assert_eq(r.r, -EINVAL, "--%s with 0x%02x at %zu accepted (%s)", opts[o].name,
                                                     (unsigned char) bad[b], pos, runs[k].origin);
                                        char want[64];
                                        snprintf(want, sizeof want, "for --%s ", opts[o].name);
                                        cr_assert(r.err && strstr(r.err, want) && strstr(r.err, runs[k].origin),
                                                  "names option and origin: %s", r.err);
                                        cr_assert_eq(strchr(r.err, '\n'), r.err + strlen(r.err) - 1, "one line: %s", r.err);
                                        cr_assert_null(strchr(r.err, '\r'), "no raw CR: %s", r.err);
                                        cr_assert_null(strchr(r.err, 0x7f), "no raw DEL: %s", r.err);
                                        free(r.err);
                                }
                        }
                /* The URL itself is fine. */
                char flag[300];
                snprintf(flag, sizeof flag, "--%s=%s%s", opts[o].name, opts[o].pre, url);
                struct config c;
                struct run r = parse(&c, (char *[]) { "run", "--node-name=n", flag, NULL }, no_env);
                cr_assert_eq(r.r, 0, "%s: %s", flag, r.err);
                free(r.err);
        }
        /* The value is shown escaped, so the line stays one line. */
        struct config c;
        struct run r = parse(&c, (char *[]) { "run", "--node-name=n", "--imds-endpoint=http://a\r\n.b/", NULL }, no_env);
        cr_assert_eq(r.r, -EINVAL);
        cr_assert(strstr(r.err, "\"http://a\\x0d\\x0a.b/\" for --imds-endpoint (flag)"), "%s", r.err);
        free(r.err);
        /* The finding itself, and a signed port strtoul would also take. */
        static const char *const found[] = { "--webhook-url=http://a.ee:\r8443/y", "--webhook-url=http://a.ee:+8443/y",
                                             "--imds-endpoint=http://a.ee: 80/", "--kube-api=https://a.ee:-0/" };
        for (size_t i = 0; i < sizeof found / sizeof found[0]; i++) {
                r = parse(&c, (char *[]) { "run", "--node-name=n", (char *) found[i], NULL }, no_env);
                cr_assert_eq(r.r, -EINVAL, "%s accepted", found[i]);
                free(r.err);
        }
}

/* Issue 9: a --tm-selector the grammar accepts could still fail at
 * interruption time: the pod list sends it URL-escaped from a buffer of
 * CONFIG_TM_SELECTOR_ESCAPED_MAX bytes. Refused at start instead. */
Test(config, tm_selector_must_fit_escaped) {
        /* "k in (v0, v1, ...)": ", " and the parentheses take 3 bytes each. */
        char sel[512];
        size_t n = (size_t) snprintf(sel, sizeof sel, "component in (");
        for (int i = 0; n + 8 < 400; i++)
                n += (size_t) snprintf(sel + n, sizeof sel - n, "%sv%d", i ? ", " : "", i);
        snprintf(sel + n, sizeof sel - n, ")");
        char esc[2048];
        cr_assert_eq(k8s_escape(sel, esc, sizeof esc), 0);
        cr_assert_gt(strlen(esc), CONFIG_TM_SELECTOR_ESCAPED_MAX - 1, "the sample is too long once escaped");
        cr_assert_lt(strlen(sel), sizeof(((struct config *) 0)->tm_selector), "but short enough as typed");

        char flag[600];
        snprintf(flag, sizeof flag, "--tm-selector=%s", sel);
        struct config c;
        struct run r = parse(&c, (char *[]) { "run", "--node-name=n", flag, NULL }, no_env);
        cr_assert_eq(r.r, -EINVAL, "accepted a selector of %zu bytes escaped", strlen(esc));
        cr_assert(strstr(r.err, "for --tm-selector (flag)") && strstr(r.err, "699"), "%s", r.err);
        cr_assert_eq(strchr(r.err, '\n'), r.err + strlen(r.err) - 1, "one line: %s", r.err);
        free(r.err);

        /* The boundary: 699 escaped bytes pass, 700 do not. "a=" is 4 escaped. */
        char fit[CONFIG_TM_SELECTOR_ESCAPED_MAX];
        for (size_t want = CONFIG_TM_SELECTOR_ESCAPED_MAX - 1; want <= CONFIG_TM_SELECTOR_ESCAPED_MAX; want++) {
                memset(fit, 0, sizeof fit);
                /* "k=" (4 escaped) then "(" until 3 short, then letters */
                size_t raw = 0, escaped = 4;
                fit[raw++] = 'k', fit[raw++] = '=';
                while (escaped + 3 <= want && raw < 400)
                        fit[raw++] = ',', escaped += 3;
                while (escaped < want)
                        fit[raw++] = 'x', escaped++;
                fit[raw] = 0;
                cr_assert_lt(raw, sizeof(((struct config *) 0)->tm_selector));
                snprintf(flag, sizeof flag, "--tm-selector=%s", fit);
                r = parse(&c, (char *[]) { "run", "--node-name=n", flag, NULL }, no_env);
                if (want < CONFIG_TM_SELECTOR_ESCAPED_MAX) {
                        cr_assert_eq(r.r, 0, "%zu escaped bytes refused: %s", want, r.err);
                        cr_assert_str_eq(c.tm_selector, fit);
                } else
                        cr_assert_eq(r.r, -EINVAL, "%zu escaped bytes accepted", want);
                free(r.err);
        }

        /* Environment and file are checked alike. */
        char env[600];
        snprintf(env, sizeof env, "SPOTD_TM_SELECTOR=%s", sel);
        r = parse(&c, (char *[]) { "run", "--node-name=n", NULL }, (char *[]) { env, NULL });
        cr_assert_eq(r.r, -EINVAL);
        cr_assert(strstr(r.err, "(SPOTD_TM_SELECTOR)"), "%s", r.err);
        free(r.err);
}

/* The field selector spec.nodeName=<node> goes out from a buffer of
 * CONFIG_FIELD_SELECTOR_ESCAPED_MAX bytes: the longest valid node name fits. */
Test(config, node_name_fits_field_selector) {
        char name[300], flag[320];
        memset(name, 0, sizeof name);
        for (size_t i = 0; i < 253; i++)
                name[i] = i % 64 == 63 ? '.' : 'a';
        snprintf(flag, sizeof flag, "--node-name=%s", name);
        struct config c;
        struct run r = parse(&c, (char *[]) { "run", flag, NULL }, no_env);
        cr_assert_eq(r.r, 0, "%s", r.err);
        char field[300], esc[CONFIG_FIELD_SELECTOR_ESCAPED_MAX];
        snprintf(field, sizeof field, "spec.nodeName=%s", c.node_name);
        cr_assert_eq(k8s_escape(field, esc, sizeof esc), 0);
        free(r.err);
        name[253] = 'a';
        snprintf(flag, sizeof flag, "--node-name=%s", name);
        r = parse(&c, (char *[]) { "run", flag, NULL }, no_env);
        cr_assert_eq(r.r, -EINVAL);
        cr_assert(strstr(r.err, "--node-name"), "%s", r.err);
        free(r.err);
}

/* Issue 9: --flink-url-allow, the hosts a per-pod spotd.io/flink-rest-url
 * annotation may name. Empty by default. */
Test(config, flink_url_allow_parsed) {
        struct config c;
        struct run r = parse(&c, (char *[]) { "run", "--node-name=n", NULL }, no_env);
        cr_assert_eq(r.r, 0, "%s", r.err);
        cr_assert_eq(c.flink_url_allow.n, 0, "empty by default");
        free(r.err);

        r = parse(&c, (char *[]) { "run", "--node-name=n", "--flink-url-allow=.svc.cluster.local,Flink.Example.com", NULL },
                  no_env);
        cr_assert_eq(r.r, 0, "%s", r.err);
        cr_assert_eq(c.flink_url_allow.n, 2);
        cr_assert_str_eq(c.flink_url_allow.v[0], ".svc.cluster.local");
        cr_assert_str_eq(c.flink_url_allow.v[1], "Flink.Example.com");
        free(r.err);

        /* Environment (commas or one per line, as the chart renders a list), file, repeated flags. */
        r = parse(&c, (char *[]) { "run", "--node-name=n", NULL },
                  (char *[]) { "SPOTD_FLINK_URL_ALLOW=a.example,.b.example\n10.0.0.7", NULL });
        cr_assert_eq(r.r, 0, "%s", r.err);
        cr_assert_eq(c.flink_url_allow.n, 3);
        cr_assert_str_eq(c.flink_url_allow.v[2], "10.0.0.7");
        free(r.err);
        char path[] = "/tmp/spotd-config-XXXXXX";
        config_file(path, "flink-url-allow = .svc.cluster.local\n");
        char cfg[64];
        snprintf(cfg, sizeof cfg, "--config=%s", path);
        r = parse(&c, (char *[]) { "run", "--node-name=n", cfg, NULL }, no_env);
        cr_assert_eq(r.r, 0, "%s", r.err);
        cr_assert_eq(c.flink_url_allow.n, 1);
        free(r.err);
        unlink(path);
        r = parse(&c, (char *[]) { "run", "--node-name=n", "--flink-url-allow=a.example", "--flink-url-allow=.b.example", NULL },
                  (char *[]) { "SPOTD_FLINK_URL_ALLOW=c.example", NULL });
        cr_assert_eq(r.r, 0, "%s", r.err);
        cr_assert_eq(c.flink_url_allow.n, 2, "flags replace the environment, repeated flags add");
        free(r.err);

        static const char *const bad[] = {
                "", ",a.example", "a.example,", "a.example,,b.example", "a.example\n", ".", "..svc", "a..b",
                "a example", "a.example ", " a.example", "a.ex\tample", "a.ex\rample", "a.ex\x7fmple",
                "http://a.example", "a.example:8081", "a.example/x", "*.svc.cluster.local", "a.example.",
                "-a.example", "a-.example", "a_b.example", "[fd00::1]", "a.example?x", "user@a.example",
                "a.example,b.example,c.example,d.example,e.example,f.example,g.example,h.example,i.example",
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                char flag[600];
                snprintf(flag, sizeof flag, "--flink-url-allow=%s", bad[i]);
                r = parse(&c, (char *[]) { "run", "--node-name=n", flag, NULL }, no_env);
                if (!*bad[i]) { /* empty: the default, nothing allowed */
                        cr_assert_eq(r.r, 0, "%s", r.err);
                        cr_assert_eq(c.flink_url_allow.n, 0);
                        free(r.err);
                        continue;
                }
                cr_assert_eq(r.r, -EINVAL, "\"%s\" accepted", bad[i]);
                cr_assert(strstr(r.err, "for --flink-url-allow (flag)"), "%s: %s", bad[i], r.err);
                cr_assert_eq(strchr(r.err, '\n'), r.err + strlen(r.err) - 1, "one line: %s", r.err);
                free(r.err);
        }
        /* Labels of 63, names of 253 characters at most. */
        char name[300] = "", flag[320];
        memset(name, 'a', 64);
        snprintf(flag, sizeof flag, "--flink-url-allow=%s.example", name);
        r = parse(&c, (char *[]) { "run", "--node-name=n", flag, NULL }, no_env);
        cr_assert_eq(r.r, -EINVAL, "a 64-character label accepted");
        free(r.err);
        name[63] = 0;
        snprintf(flag, sizeof flag, "--flink-url-allow=.%s.example", name);
        r = parse(&c, (char *[]) { "run", "--node-name=n", flag, NULL }, no_env);
        cr_assert_eq(r.r, 0, "%s", r.err);
        free(r.err);
}

Test(config, flink_url_allowed_matches_hosts_and_suffixes) {
        static const struct {
                const char *host;
                bool allowed;
        } cases[] = {
                { "orders-rest.flink.svc.cluster.local", true },
                { "Orders-Rest.Flink.SVC.Cluster.Local", true }, /* case-insensitive */
                { "x.svc.cluster.local", true },
                { "flink.example.com", true },
                { "FLINK.example.COM", true },
                { "10.0.0.7", true },
                /* A suffix matches on a label boundary and only below itself. */
                { "svc.cluster.local", false },
                { "evilsvc.cluster.local", false },
                { "x.svc.cluster.local.evil.example", false },
                /* An exact host is exact. */
                { "a.flink.example.com", false },
                { "flink.example.com.evil", false },
                { "xflink.example.com", false },
                { "10.0.0.70", false },
                { "110.0.0.7", false },
                /* Not a host name: never allowed, whatever it ends with. */
                { "", false },
                { ".svc.cluster.local", false },
                { "evil@x.svc.cluster.local", false },
                { "evil?.svc.cluster.local", false },
                { "evil/.svc.cluster.local", false },
                { "x.svc.cluster.local:8081", false },
                { "x.svc.cluster.local.", false },
                { "x .svc.cluster.local", false },
                { "x\r.svc.cluster.local", false },
                { "[::1]", false },
        };
        struct config c;
        struct run r = parse(&c, (char *[]) { "run", "--node-name=n", "--flink-url-allow=.svc.cluster.local,flink.example.com,10.0.0.7",
                                              NULL }, no_env);
        cr_assert_eq(r.r, 0, "%s", r.err);
        free(r.err);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
                cr_assert_eq(config_flink_url_allowed(&c, cases[i].host), cases[i].allowed, "\"%s\"", cases[i].host);
        cr_assert_not(config_flink_url_allowed(&c, NULL));

        /* The default: nothing. */
        r = parse(&c, (char *[]) { "run", "--node-name=n", NULL }, no_env);
        cr_assert_eq(r.r, 0);
        free(r.err);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
                cr_assert_not(config_flink_url_allowed(&c, cases[i].host), "\"%s\"", cases[i].host);
}
