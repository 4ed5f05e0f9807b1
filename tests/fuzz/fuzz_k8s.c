/* libFuzzer target: what spotd reads from the Kubernetes side.
 *
 * First byte (modulo 4) picks:
 *   0  a Status body (k8s_parse_status), buffer sizes from the next byte;
 *   1  k8s_escape of the rest as a C string: exact and short buffers, and the
 *      escaped text must decode back to the input;
 *   2  a pod, or a PodList's items, handed to rescale_add_pod the way the
 *      handler does (rescale without an API client: add_pod, summary, jobs
 *      JSON and free never send a request);
 *   3  k8s_in_cluster: "NAME=value" lines, then a line "%%" and the contents
 *      of the service-account namespace file.
 * The next byte picks a --flink-rest-template for 2. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "fuzz.h"
#include "k8s.h"
#include "macro.h"
#include "rescale.h"

static char sa_dir[64];
static char ns_path[128];

static void remove_sa_dir(void) {
        unlink(ns_path);
        rmdir(sa_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        strcpy(sa_dir, "/tmp/fuzz-k8s-XXXXXX");
        if (!mkdtemp(sa_dir))
                abort();
        snprintf(ns_path, sizeof ns_path, "%s/namespace", sa_dir);
        atexit(remove_sa_dir);
        return 0;
}

static int unhex(char c) {
        return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static void fuzz_status(const uint8_t *data, size_t size) {
        static const size_t sizes[] = { 0, 1, 2, 3, 4, 8, 64, 256 };
        if (size < 1)
                return;
        size_t rlen = sizes[data[0] & 7], mlen = sizes[(data[0] >> 3) & 7];
        char reason[257], message[257];
        /* Without a NUL terminator: the client passes (body, len) of what it received. */
        const char *body = (const char *) data + 1;
        size_t len = size - 1;
        char *copy = malloc(len ? len : 1);
        if (!copy)
                return;
        memcpy(copy, body, len);
        memset(reason, 0x5a, sizeof reason);
        memset(message, 0x5a, sizeof message);
        k8s_parse_status(copy, len, reason, rlen, message, mlen);
        if (rlen) {
                FUZZ_CHECK(memchr(reason, 0, rlen));
                for (const char *p = reason; *p; p++)
                        FUZZ_CHECK((unsigned char) *p >= 0x20 && *p != 0x7f); /* no forged log lines */
        }
        if (mlen) {
                FUZZ_CHECK(memchr(message, 0, mlen));
                for (const char *p = message; *p; p++)
                        FUZZ_CHECK((unsigned char) *p >= 0x20 && *p != 0x7f);
        }
        FUZZ_CHECK((uint8_t) reason[rlen] == 0x5a && (uint8_t) message[mlen] == 0x5a);
        k8s_parse_status(copy, len, NULL, 0, NULL, 0);
        free(copy);
}

static void fuzz_escape(const uint8_t *data, size_t size) {
        _cleanup_free_ char *in = fuzz_strndup(data, size);
        if (!in)
                return;
        size_t need = 1;
        for (const char *p = in; *p; p++)
                need += strchr("-._~", *p) || (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                                        (*p >= '0' && *p <= '9') ? 1 : 3;
        _cleanup_free_ char *buf = malloc(need + 1);
        if (!buf)
                return;
        memset(buf, 0x5a, need + 1);
        FUZZ_CHECK(k8s_escape(in, buf, need - 1) == -ENOBUFS);
        FUZZ_CHECK((uint8_t) buf[0] == 0x5a);
        FUZZ_CHECK(k8s_escape(in, buf, need) == 0);
        FUZZ_CHECK(strlen(buf) == need - 1 && (uint8_t) buf[need] == 0x5a);
        /* Decodes back to the input, and is safe in a query: nothing but unreserved and %XX. */
        size_t o = 0;
        for (const char *p = buf; *p; o++) {
                if (*p == '%') {
                        int hi = unhex(p[1]), lo = hi < 0 ? -1 : unhex(p[2]);
                        FUZZ_CHECK(hi >= 0 && lo >= 0);
                        FUZZ_CHECK(in[o] == (char) (hi << 4 | lo));
                        p += 3;
                } else {
                        FUZZ_CHECK(strchr("&=+#?/% ", *p) == NULL);
                        FUZZ_CHECK(in[o] == *p);
                        p++;
                }
        }
        FUZZ_CHECK(in[o] == 0);
}

static void fuzz_pods(const uint8_t *data, size_t size) {
        static const char *const templates[] = {
                "http://{app}-rest.{namespace}:8081",      /* the default */
                "https://{namespace}.example/{app}/",      /* trailing slashes trimmed */
                "http://flink-{app}-{app}-{app}-{app}.{namespace}.{namespace}.svc.cluster.local:8081/v1",
                "http://jobmanager:8081",                  /* no placeholders */
        };
        if (size < 1)
                return;
        struct config *cfg = calloc(1, sizeof *cfg);
        if (!cfg)
                return;
        snprintf(cfg->flink_rest_template, sizeof cfg->flink_rest_template, "%s", templates[data[0] & 3]);
        snprintf(cfg->node_name, sizeof cfg->node_name, "ip-10-0-1-2.ec2.internal");

        cJSON *j = cJSON_ParseWithLength((const char *) data + 1, size - 1);
        struct rescale *r = NULL;
        if (rescale_new(cfg, NULL, NULL, "ev", 0, &r) < 0) {
                cJSON_Delete(j);
                free(cfg);
                return;
        }
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(j, "items"), *it;
        int max_index = -1;
        if (cJSON_IsArray(items)) {
                /* A PodList: every item, as pods_listed() hands them on. */
                cJSON_ArrayForEach(it, items) {
                        int c = rescale_add_pod(r, it);
                        FUZZ_CHECK(c >= -1 && c < 16);
                        if (c > max_index)
                                max_index = c;
                }
        } else {
                int c = rescale_add_pod(r, j);
                FUZZ_CHECK(c >= -1 && c < 16);
                /* The same pod again goes to the same cluster. */
                FUZZ_CHECK(rescale_add_pod(r, j) == c);
        }
        char summary[512];
        rescale_summary(r, summary, sizeof summary);
        FUZZ_CHECK(strlen(summary) < sizeof summary);
        char tiny[2];
        rescale_summary(r, tiny, sizeof tiny);
        cJSON *jobs = rescale_jobs_json(r);
        cJSON_Delete(jobs);
        (void) rescale_may_evict(r, max_index);
        rescale_evicted(r, max_index);
        rescale_free(r);
        cJSON_Delete(j);
        free(cfg);
}

static void fuzz_in_cluster(const uint8_t *data, size_t size) {
        struct fuzz_part parts[2], lines[34];
        size_t np = fuzz_split(data, size, "\n%%\n", parts, 2);
        size_t nl = fuzz_split(parts[0].p, parts[0].n, "\n", lines, 33);
        char *env[34] = {};
        for (size_t i = 0; i < nl; i++)
                env[i] = fuzz_strndup(lines[i].p, lines[i].n);

        unlink(ns_path);
        if (np == 2) {
                int fd = open(ns_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
                if (fd >= 0) {
                        (void) !write(fd, parts[1].p, parts[1].n);
                        close(fd);
                }
        }
        static const size_t sizes[] = { 1, 16, 40, 64, 128, 1100 };
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
                char url[1100], token[1100], ca[1100], ns[1100];
                size_t s = sizes[i];
                strcpy(url, "untouched");
                int r = k8s_in_cluster(env, sa_dir, url, s, token, sizeof token, ca, sizeof ca, ns,
                                       i == 0 ? 1 : sizeof ns);
                if (r < 0) {
                        FUZZ_CHECK(r == -ENOENT || r == -EINVAL || r == -ENOBUFS);
                        FUZZ_CHECK(strcmp(url, "untouched") == 0);
                        continue;
                }
                FUZZ_CHECK(strlen(url) < s && strncmp(url, "https://", 8) == 0);
                /* What goes into the URL: no user info, path, query or space. */
                FUZZ_CHECK(strpbrk(url + 8, "@/?# ") == NULL);
                FUZZ_CHECK(strlen(ns) < 64);
                for (const char *p = ns; *p; p++)
                        FUZZ_CHECK((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-');
        }
        for (size_t i = 0; i < nl; i++)
                free(env[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size < 1)
                return 0;
        switch (data[0] & 3) {
        case 0:
                fuzz_status(data + 1, size - 1);
                break;
        case 1:
                fuzz_escape(data + 1, size - 1);
                break;
        case 2:
                fuzz_pods(data + 1, size - 1);
                break;
        case 3:
                fuzz_in_cluster(data + 1, size - 1);
                break;
        }
        return 0;
}
