/* libFuzzer target: config_parse over flags, environment and config file.
 *
 * Input: three sections separated by lines "%%": the arguments, the
 * environment ("NAME=value"), the config file. Arguments and environment
 * entries are one per line; a 0x1f byte inside one stands for a newline (list
 * options take one item per line). The file goes into a memfd named by
 * --config (or SPOTD_CONFIG when the first argument is "-e"); --config and
 * SPOTD_CONFIG from the input are dropped, so the parser never reads a
 * file the fuzzer names (a FIFO or a terminal would block it). Output goes
 * to /dev/null. */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "k8s.h"
#include "fuzz.h"

#define MAX_ITEMS 64

static int memfd = -1;
static FILE *devnull;
static char file_path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        memfd = memfd_create("spotd-fuzz-config", MFD_CLOEXEC);
        devnull = fopen("/dev/null", "we");
        if (memfd < 0 || !devnull)
                abort();
        snprintf(file_path, sizeof file_path, "/proc/self/fd/%d", memfd);
        return 0;
}

static size_t items(const struct fuzz_part *section, char **out, size_t max) {
        struct fuzz_part lines[MAX_ITEMS];
        size_t n = 0, nl;
        if (!section->n)
                return 0;
        nl = fuzz_split(section->p, section->n, "\n", lines, MAX_ITEMS);
        for (size_t i = 0; i < nl && n < max; i++) {
                char *s = fuzz_strndup(lines[i].p, lines[i].n);
                if (!s)
                        break;
                for (char *p = s; *p; p++)
                        if (*p == 0x1f)
                                *p = '\n';
                if (strncmp(s, "--config", 8) == 0 || strncmp(s, "SPOTD_CONFIG=", 13) == 0) {
                        free(s);
                        continue;
                }
                out[n++] = s;
        }
        return n;
}

static bool all_graphic(const char *s) {
        for (; *s; s++)
                if (!isgraph((unsigned char) *s))
                        return false;
        return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct fuzz_part sec[3] = {};
        size_t ns = fuzz_split(data, size, "\n%%\n", sec, 3);
        char *argv[MAX_ITEMS + 3] = {}, *envp[MAX_ITEMS + 2] = {};
        char flag[96], env[96];
        size_t argc = 1, envc = 0;
        bool via_env = false;

        argv[0] = "run";
        argc += items(&sec[0], argv + 1, MAX_ITEMS);
        envc += items(&sec[1], envp, MAX_ITEMS);
        if (argc > 1 && strcmp(argv[1], "-e") == 0) {
                via_env = true;
                free(argv[1]);
                memmove(argv + 1, argv + 2, (argc - 2) * sizeof *argv);
                argv[--argc] = NULL;
        }
        if (ns == 3) {
                if (ftruncate(memfd, 0) < 0 || pwrite(memfd, sec[2].p, sec[2].n, 0) != (ssize_t) sec[2].n)
                        abort();
                if (via_env) {
                        snprintf(env, sizeof env, "SPOTD_CONFIG=%s", file_path);
                        envp[envc++] = env;
                } else {
                        snprintf(flag, sizeof flag, "--config=%s", file_path);
                        argv[argc++] = flag;
                }
        }

        struct config *c = malloc(sizeof *c);
        if (c) {
                int r = config_parse(c, (int) argc, argv, envp, devnull, devnull);
                FUZZ_CHECK(r == 0 || r == 1 || r == -EINVAL);
                if (r == 0) {
                        /* What the rest of the agent relies on. */
                        FUZZ_CHECK(memchr(c->node_name, 0, sizeof c->node_name) && c->node_name[0]);
                        FUZZ_CHECK(memchr(c->health_addr, 0, sizeof c->health_addr));
                        FUZZ_CHECK(c->webhook_urls.n <= STRLIST_MAX && c->webhook_headers.n <= STRLIST_MAX);
                        for (unsigned i = 0; i < c->webhook_headers.n; i++)
                                FUZZ_CHECK(!strpbrk(c->webhook_headers.v[i], "\r\n")); /* no header injection */
                        /* No control character, space or DEL in any URL option (issue 9:
                         * "http://a.ee:\r8443/y" passed), nor in an allowed Flink host. */
                        FUZZ_CHECK(all_graphic(c->imds_endpoint) && all_graphic(c->kube_api) &&
                                   all_graphic(c->flink_rest_template));
                        for (unsigned i = 0; i < c->webhook_urls.n; i++)
                                FUZZ_CHECK(c->webhook_urls.v[i][0] && all_graphic(c->webhook_urls.v[i]));
                        FUZZ_CHECK(c->flink_url_allow.n <= STRLIST_MAX);
                        for (unsigned i = 0; i < c->flink_url_allow.n; i++)
                                FUZZ_CHECK(c->flink_url_allow.v[i][0] && all_graphic(c->flink_url_allow.v[i]) &&
                                           !strpbrk(c->flink_url_allow.v[i], ":/@?#[]*"));
                        /* The pod list's selectors fit their buffers (checked at start, not at interruption). */
                        char esc[CONFIG_TM_SELECTOR_ESCAPED_MAX], field[300];
                        FUZZ_CHECK(k8s_escape(c->tm_selector, esc, sizeof esc) == 0);
                        snprintf(field, sizeof field, "spec.nodeName=%s", c->node_name);
                        FUZZ_CHECK(k8s_escape(field, esc, CONFIG_FIELD_SELECTOR_ESCAPED_MAX) == 0);
                        FUZZ_CHECK(!c->kube_api[0] || strncmp(c->kube_api, "https://", 8) == 0);
                        FUZZ_CHECK(c->poll_interval >= 1000 && c->poll_interval <= 3600 * USEC_PER_SEC);
                        FUZZ_CHECK(c->health_max_connections >= 1 && c->health_max_connections <= 1024);
                }
                free(c);
        }
        for (size_t i = 1; i < argc; i++)
                if (argv[i] != flag)
                        free(argv[i]);
        for (size_t i = 0; i < envc; i++)
                if (envp[i] != env)
                        free(envp[i]);
        return 0;
}
