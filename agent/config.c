#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "health.h"
#include "k8s.h"

extern char **environ;

enum opt_type { T_STRING, T_NODE, T_URL, T_DURATION, T_UINT, T_BOOL, T_ENUM, T_ADDR, T_LEVEL, T_SELECTOR, T_DNS_LABEL,
                T_URL_LIST, T_HEADER_LIST, T_URL_TEMPLATE, T_HOST_LIST };

struct option_def {
        const char *name;      /* flag without "--"; env is SPOTD_ + upper(name) */
        enum opt_type type;
        size_t offset;
        size_t size;           /* for strings */
        const char *def;       /* default, parsed like any other value */
        unsigned long long min, max; /* durations (usec) and numbers */
        const char *const *choices; /* enums: index is the stored value */
        const char *help;
};

static const char *const imds_modes[] = { "auto", "v2", "v1", NULL };
static const char *const actions[] = { "ignore", "cordon", "handle", NULL };
static const char *const targets[] = { "auto", "journal", "stderr", NULL };
static const char *const formats[] = { "text", "json", NULL };
static const char *const restores[] = { "after-rescale", "never", NULL };

#define OFF(m) offsetof(struct config, m), sizeof(((struct config *) 0)->m)
#define S 1000000ULL

static const struct option_def options[] = {
        { "config", T_STRING, OFF(config_file), "", 0, 0, NULL, "read options from FILE (key = value lines)" },
        { "node-name", T_NODE, OFF(node_name), "", 0, 0, NULL, "this node's Kubernetes name (default: the host name)" },
        { "imds-endpoint", T_URL, OFF(imds_endpoint), "http://169.254.169.254", 0, 0, NULL, "instance metadata service base URL (http://: the service has no TLS)" },
        { "imds-version", T_ENUM, OFF(imds_mode), "auto", 0, 0, imds_modes, "auto (v2, v1 fallback), v2 or v1" },
        { "imds-token-ttl", T_DURATION, OFF(imds_token_ttl), "6h", S, 21600 * S, NULL, "IMDSv2 session token lifetime (1s..6h)" },
        { "imds-timeout", T_DURATION, OFF(imds_timeout), "1s", 10000, 30 * S, NULL, "timeout of one metadata request (10ms..30s)" },
        { "poll-interval", T_DURATION, OFF(poll_interval), "1s", 1000, 3600 * S, NULL, "metadata poll interval (1ms..1h)" },
        { "watch-spot", T_BOOL, OFF(watch[EVENT_SPOT_INTERRUPTION]), "true", 0, 0, NULL, "watch spot/instance-action" },
        { "watch-rebalance", T_BOOL, OFF(watch[EVENT_REBALANCE]), "true", 0, 0, NULL, "watch events/recommendations/rebalance" },
        { "watch-scheduled", T_BOOL, OFF(watch[EVENT_SCHEDULED]), "true", 0, 0, NULL, "watch events/maintenance/scheduled" },
        { "watch-asg", T_BOOL, OFF(watch[EVENT_ASG_TERMINATION]), "true", 0, 0, NULL, "watch autoscaling/target-lifecycle-state" },
        { "rebalance-action", T_ENUM, OFF(rebalance_action), "cordon", 0, 0, actions, "ignore, cordon or handle a rebalance recommendation" },
        { "asg-deadline", T_DURATION, OFF(asg_deadline), "2m", S, 3600 * S, NULL, "time assumed left after the ASG state turns Terminated" },
        { "health-addr", T_ADDR, OFF(health_addr), "127.0.0.1:9808", 0, 0, NULL, "HOST:PORT of /healthz, /readyz, /metrics, /status (off: none)" },
        { "health-max-connections", T_UINT, OFF(health_max_connections), "32", 1, 1024, NULL, "concurrent connections the HTTP server accepts" },
        { "dry-run", T_BOOL, OFF(dry_run), "false", 0, 0, NULL, "detect and log, change nothing" },
        { "log-target", T_ENUM, OFF(log_target), "auto", 0, 0, targets, "auto (journal if its socket exists), journal or stderr" },
        { "log-format", T_ENUM, OFF(log_format), "text", 0, 0, formats, "stderr format: text or json" },
        { "log-level", T_LEVEL, OFF(log_level), "info", 0, 0, NULL, "debug, info, notice, warning or err" },
        { "output", T_ENUM, OFF(output), "text", 0, 0, formats, "check and history: text or json" },
        { "kube-api", T_URL, OFF(kube_api), "", 0, 0, NULL, "Kubernetes API URL (https; default: in-cluster configuration)" },
        { "kube-token-file", T_STRING, OFF(kube_token_file), "", 0, 0, NULL, "bearer token file, re-read periodically and on 401" },
        { "kube-ca-file", T_STRING, OFF(kube_ca_file), "", 0, 0, NULL, "CA bundle that verifies the API server (TLS is always verified)" },
        { "kube-client-cert", T_STRING, OFF(kube_client_cert), "", 0, 0, NULL, "client certificate (PEM), with --kube-client-key" },
        { "kube-client-key", T_STRING, OFF(kube_client_key), "", 0, 0, NULL, "client key (PEM)" },
        { "kube-max-connections", T_UINT, OFF(kube_max_connections), "8", 1, 64, NULL, "connections to the API server" },
        { "kube-timeout", T_DURATION, OFF(kube_timeout), "10s", 100000, 120 * S, NULL, "timeout of one API request" },
        { "tm-selector", T_SELECTOR, OFF(tm_selector), "component=taskmanager,type in (flink-native-kubernetes,flink-standalone-kubernetes)", 0, 0, NULL, "label selector of the TaskManager pods" },
        { "eviction-margin", T_DURATION, OFF(eviction_margin), "15s", 0, 600 * S, NULL, "evictions must be accepted this long before the deadline" },
        { "force-delete", T_BOOL, OFF(force_delete), "false", 0, 0, NULL, "delete a TaskManager pod whose eviction is still blocked at the margin" },
        { "event-namespace", T_DNS_LABEL, OFF(event_namespace), "default", 0, 0, NULL, "namespace of the Kubernetes Events about the node" },
        { "flink-rest-template", T_URL_TEMPLATE, OFF(flink_rest_template), "http://{app}-rest.{namespace}:8081", 0, 0, NULL, "JobManager REST URL from a TaskManager's app label and namespace (a pod annotation spotd.io/flink-rest-url overrides it for hosts in --flink-url-allow)" },
        { "flink-url-allow", T_HOST_LIST, OFF(flink_url_allow), "", 0, 0, NULL, "hosts (flink.example.com) or .suffixes (.svc.cluster.local), comma-separated, that a spotd.io/flink-rest-url annotation may name (default: none, annotations ignored)" },
        { "flink-timeout", T_DURATION, OFF(flink_timeout), "3s", 100000, 60 * S, NULL, "timeout of one JobManager request" },
        { "checkpoint-fresh", T_DURATION, OFF(checkpoint_fresh), "1s", 0, 3600 * S, NULL, "skip the checkpoint when one completed this recently" },
        { "checkpoint-timeout", T_DURATION, OFF(checkpoint_timeout), "30s", 0, 600 * S, NULL, "longest wait for the checkpoint before evicting (also bounded by the deadline)" },
        { "tm-stop-time", T_DURATION, OFF(tm_stop_time), "10s", 0, 600 * S, NULL, "time kept for an evicted TaskManager to stop (at most its pod's grace period): the Flink steps end this long before the eviction margin" },
        { "verify-timeout", T_DURATION, OFF(verify_timeout), "60s", S, 1800 * S, NULL, "longest wait for the job to run at the lower parallelism" },
        { "restore", T_ENUM, OFF(restore), "after-rescale", 0, 0, restores, "after-rescale (raise the bounds back) or never" },
        { "webhook-url", T_URL_LIST, OFF(webhook_urls), "", 0, 0, NULL, "POST a JSON rescale signal here at notice and at completion (repeatable)" },
        { "webhook-header", T_HEADER_LIST, OFF(webhook_headers), "", 0, 0, NULL, "extra webhook request header \"Name: value\" (repeatable; never logged)" },
        { "webhook-timeout", T_DURATION, OFF(webhook_timeout), "5s", 100000, 60 * S, NULL, "timeout of one webhook delivery attempt" },
        { "directory", T_STRING, OFF(history_directory), "", 0, 0, NULL, "history: read the journal files in DIR (e.g. one copied off a node)" },
        { "file", T_STRING, OFF(history_file), "", 0, 0, NULL, "history: read this journal file" },
        { "since", T_STRING, OFF(history_since), "", 0, 0, NULL, "history: entries from this RFC 3339 time or this long ago (2h)" },
        { "node", T_STRING, OFF(history_node), "", 0, 0, NULL, "history: only entries of this node (SPOTD_NODE)" },
};

static void env_name(const struct option_def *o, char *buf, size_t len) {
        size_t i = 0;
        i += (size_t) snprintf(buf, len, "SPOTD_");
        for (const char *p = o->name; *p && i + 1 < len; p++)
                buf[i++] = *p == '-' ? '_' : (char) toupper((unsigned char) *p);
        buf[i] = 0;
}

/* webhook: the URL may carry user:password@ and a ?query (secrets both:
 * sent, never logged nor echoed). */
static bool url_valid(const char *v, bool webhook) {
        const char *host;
        /* No control character, space, DEL or raw non-ASCII byte anywhere: a
         * URL goes into request lines and log lines, and the parts below
         * (strtoul above all) would skip or keep them. */
        for (const char *p = v; *p; p++)
                if (!isgraph((unsigned char) *p))
                        return false;
        if (strncmp(v, "http://", 7) == 0)
                host = v + 7;
        else if (strncmp(v, "https://", 8) == 0)
                host = v + 8;
        else
                return false;
        if (webhook) {
                const char *at = strchr(host, '@'), *slash = strchr(host, '/');
                if (at && (!slash || at < slash))
                        host = at + 1;
        }
        size_t hl = strcspn(host, webhook ? ":/?" : ":/");
        if (hl == 0)
                return false;
        for (size_t i = 0; i < hl; i++)
                if (!isalnum((unsigned char) host[i]) && !strchr(".-[]", host[i]))
                        return false;
        if (host[0] == '[') { /* IPv6 literal: let the bracket run to ']' */
                const char *rb = strchr(host, ']');
                if (!rb || rb == host + 1)
                        return false;
                for (const char *a = host + 1; a < rb; a++) /* an address: no space, CR or LF gets through */
                        if (!isxdigit((unsigned char) *a) && *a != ':' && *a != '.')
                                return false;
                hl = (size_t) (rb - host) + 1;
        }
        const char *p = host + hl;
        if (*p == ':') {
                char *end;
                if (!isdigit((unsigned char) p[1]))
                        return false; /* strtoul would take a sign */
                errno = 0;
                unsigned long port = strtoul(p + 1, &end, 10);
                if (errno || end == p + 1 || port == 0 || port > 65535 || (*end && *end != '/' && !(webhook && *end == '?')))
                        return false;
                p = end;
        }
        for (; *p; p++)
                if ((*p == '?' && !webhook) || *p == '#')
                        return false;
        return true;
}

static bool node_name_valid(const char *v) {
        /* RFC 1123 subdomain, as Kubernetes requires of node names. */
        size_t n = strlen(v);
        if (n == 0 || n > 253 || !isalnum((unsigned char) v[0]) || !isalnum((unsigned char) v[n - 1]))
                return false;
        for (const char *p = v; *p; p++)
                if (!(islower((unsigned char) *p) || isdigit((unsigned char) *p) || *p == '-' || *p == '.'))
                        return false;
        return true;
}

/* A DNS name, or with a leading dot a suffix of one: labels of letters,
 * digits and inner hyphens. No scheme, port, path, space or wildcard: an
 * entry means one host or everything below one domain, nothing else. */
static bool host_pattern_valid(const char *v) {
        const char *p = v + (v[0] == '.');
        size_t label = 0;

        if (strlen(p) > 253)
                return false;
        for (const char *q = p;; q++) {
                if (*q == '.' || !*q) {
                        if (label == 0 || label > 63 || q[-1] == '-' || q[-(ptrdiff_t) label] == '-')
                                return false;
                        if (!*q)
                                return true;
                        label = 0;
                } else if (isalnum((unsigned char) *q) || *q == '-')
                        label++;
                else
                        return false;
        }
}

/* --flink-rest-template: checked as the URL it becomes, with sample values
 * in the placeholders; anything still in braces is not a placeholder. */
static bool url_template_valid(const char *v) {
        char sample[1024];
        size_t o = 0;

        for (const char *p = v; *p;) {
                const char *with = NULL;
                if (strncmp(p, "{app}", 5) == 0)
                        with = "app", p += 5;
                else if (strncmp(p, "{namespace}", 11) == 0)
                        with = "namespace", p += 11;
                size_t n = with ? strlen(with) : 1;
                if (o + n >= sizeof sample)
                        return false;
                if (with) {
                        memcpy(sample + o, with, n);
                        o += n;
                } else
                        sample[o++] = *p++;
        }
        sample[o] = 0;
        return !strpbrk(sample, "{}") && url_valid(sample, false);
}

bool config_flink_url_allowed(const struct config *c, const char *host) {
        size_t hl;

        /* Only a plain host name can match: "a.svc.cluster.local@evil" or
         * "evil?.svc.cluster.local" must not pass as a suffix match. */
        if (!c || !host || host[0] == '.' || !host_pattern_valid(host))
                return false;
        hl = strlen(host);
        for (unsigned i = 0; i < c->flink_url_allow.n; i++) {
                const char *a = c->flink_url_allow.v[i];
                size_t al = strlen(a);
                if (a[0] == '.' ? hl > al && strcasecmp(host + hl - al, a) == 0 : strcasecmp(host, a) == 0)
                        return true;
        }
        return false;
}

static bool option_is_list(const struct option_def *o) {
        return o->type == T_URL_LIST || o->type == T_HEADER_LIST || o->type == T_HOST_LIST;
}

static int parse_bool(const char *v) {
        static const char *const yes[] = { "1", "true", "yes", "on" }, *const no[] = { "0", "false", "no", "off" };
        for (size_t i = 0; i < 4; i++) {
                if (strcmp(v, yes[i]) == 0)
                        return 1;
                if (strcmp(v, no[i]) == 0)
                        return 0;
        }
        return -1;
}

static char *strip(char *s) {
        while (isspace((unsigned char) *s))
                s++;
        size_t n = strlen(s);
        while (n && isspace((unsigned char) s[n - 1]))
                s[--n] = 0;
        return s;
}

/* Sets one option from text. On failure writes one line naming the option,
 * where the value came from, the value and what was expected. */
static int option_set(struct config *c, const struct option_def *o, const char *v,
                      const char *origin, FILE *err) {
        void *dst = (char *) c + o->offset;
        char expect[160] = "";

        if (strlen(v) > 1000) {
                fprintf(err, "spotd: value for --%s (%s) is too long (%zu bytes)\n", o->name, origin, strlen(v));
                return -EINVAL;
        }
        switch (o->type) {
        case T_STRING:
                if (strlen(v) >= o->size)
                        snprintf(expect, sizeof expect, "at most %zu characters", o->size - 1);
                else
                        strcpy(dst, v);
                break;
        case T_NODE:
                if (*v && !node_name_valid(v))
                        snprintf(expect, sizeof expect, "a Kubernetes node name (lowercase RFC 1123 subdomain)");
                else
                        strcpy(dst, v);
                break;
        case T_URL:
                if (!*v && o->def && !*o->def)
                        ((char *) dst)[0] = 0; /* optional URL left unset */
                else if (strlen(v) >= o->size || !url_valid(v, false))
                        snprintf(expect, sizeof expect, "an http:// or https:// URL with a host");
                else
                        strcpy(dst, v);
                break;
        case T_ADDR: {
                char host[64];
                uint16_t port;
                if (strcmp(v, "off") == 0 || !*v)
                        ((char *) dst)[0] = 0;
                else if (strlen(v) >= o->size || health_parse_addr(v, host, sizeof host, &port) < 0)
                        snprintf(expect, sizeof expect, "HOST:PORT with a numeric address (127.0.0.1:9808, [::1]:9808) or off");
                else
                        strcpy(dst, v);
                break;
        }
        case T_DURATION: {
                usec_t d;
                char lo[32], hi[32];
                if (parse_duration(v, &d) < 0 || d < o->min || d > o->max) {
                        format_duration(o->min, lo, sizeof lo);
                        format_duration(o->max, hi, sizeof hi);
                        snprintf(expect, sizeof expect, "a duration between %s and %s, such as 500ms, 1s or 2m", lo, hi);
                } else
                        *(usec_t *) dst = d;
                break;
        }
        case T_UINT: {
                char *end;
                errno = 0;
                unsigned long long n = strtoull(v, &end, 10);
                if (!isdigit((unsigned char) v[0]) || errno || *end || n < o->min || n > o->max)
                        snprintf(expect, sizeof expect, "a whole number between %llu and %llu", o->min, o->max);
                else
                        *(unsigned *) dst = (unsigned) n;
                break;
        }
        case T_BOOL: {
                int b = parse_bool(v);
                if (b < 0)
                        snprintf(expect, sizeof expect, "true or false");
                else
                        *(bool *) dst = b;
                break;
        }
        case T_ENUM: {
                size_t i, l = 0;
                for (i = 0; o->choices[i]; i++)
                        if (strcmp(v, o->choices[i]) == 0)
                                break;
                if (o->choices[i]) {
                        *(int *) dst = (int) i;
                        break;
                }
                l = (size_t) snprintf(expect, sizeof expect, "one of");
                for (i = 0; o->choices[i] && l < sizeof expect; i++)
                        l += (size_t) snprintf(expect + l, sizeof expect - l, "%s %s", i ? "," : "", o->choices[i]);
                break;
        }
        case T_SELECTOR: {
                /* The API server parses it; here only what could break the
                 * request: length and characters outside the grammar. */
                bool ok = strlen(v) > 0 && strlen(v) < o->size;
                for (const char *p = v; *p && ok; p++)
                        ok = isalnum((unsigned char) *p) || strchr("=!,()._-/ ", *p);
                char esc[CONFIG_TM_SELECTOR_ESCAPED_MAX];
                if (!ok)
                        snprintf(expect, sizeof expect, "a Kubernetes label selector such as component=taskmanager");
                else if (k8s_escape(v, esc, sizeof esc) < 0)
                        /* The pod list sends it URL-escaped from a fixed buffer:
                         * refuse here what would fail only at interruption time. */
                        snprintf(expect, sizeof expect, "a label selector of at most %d bytes once URL-escaped "
                                 "(each character other than letters, digits, - . _ ~ takes 3)",
                                 CONFIG_TM_SELECTOR_ESCAPED_MAX - 1);
                else
                        strcpy(dst, v);
                break;
        }
        case T_DNS_LABEL: {
                bool ok = strlen(v) > 0 && strlen(v) <= 63 && isalnum((unsigned char) v[0]) &&
                          isalnum((unsigned char) v[strlen(v) - 1]);
                for (const char *p = v; *p && ok; p++)
                        ok = islower((unsigned char) *p) || isdigit((unsigned char) *p) || *p == '-';
                if (!ok)
                        snprintf(expect, sizeof expect, "a Kubernetes namespace name");
                else
                        strcpy(dst, v);
                break;
        }
        case T_URL_TEMPLATE:
                if (strlen(v) >= o->size || !url_template_valid(v))
                        snprintf(expect, sizeof expect, "an http:// or https:// URL in which {app} and {namespace} are filled in");
                else
                        strcpy(dst, v);
                break;
        case T_URL_LIST:
        case T_HEADER_LIST:
        case T_HOST_LIST: {
                /* Each source replaces the list; repeated flags add to it (see config_parse). */
                struct strlist *l = dst;
                char item[600];
                const char *p = v;
                l->n = 0;
                while (*p && !expect[0]) {
                        size_t n = strcspn(p, o->type == T_HOST_LIST ? ",\n" : "\n");
                        if (n >= sizeof l->v[0] || l->n >= STRLIST_MAX) {
                                snprintf(expect, sizeof expect, "at most %d items of at most %zu characters", STRLIST_MAX,
                                         sizeof l->v[0] - 1);
                                break;
                        }
                        memcpy(item, p, n);
                        item[n] = 0;
                        p += n + (p[n] != 0);
                        /* White space around a header is not part of it; in a URL
                         * or a host it is an error, not something to trim. */
                        char *it = o->type == T_HEADER_LIST ? strip(item) : item;
                        bool good;
                        if (!*it && o->type != T_HOST_LIST)
                                continue; /* an empty line */
                        if (o->type == T_URL_LIST)
                                good = url_valid(it, true);
                        else if (o->type == T_HOST_LIST)
                                good = host_pattern_valid(it) && (*p || (p[-1] != ',' && p[-1] != '\n')); /* no empty last item */
                        else {
                                const char *colon = strchr(it, ':');
                                good = colon && colon > it;
                                for (const char *q = it; good && q < colon; q++)
                                        good = isalnum((unsigned char) *q) || strchr("!#$%&'*+-.^_`|~", *q);
                                for (const char *q = colon ? colon + 1 : it; good && *q; q++)
                                        good = isprint((unsigned char) *q) || *q == '\t';
                        }
                        if (!good) {
                                snprintf(expect, sizeof expect, "%s",
                                         o->type == T_URL_LIST    ? "http:// or https:// URLs, one per line"
                                         : o->type == T_HOST_LIST ? "host names (flink.example.com) or .suffixes "
                                                                    "(.svc.cluster.local), comma-separated, without "
                                                                    "scheme, port or path"
                                                                  : "\"Name: value\" headers, one per line");
                                break;
                        }
                        strcpy(l->v[l->n++], it);
                }
                break;
        }
        case T_LEVEL: {
                int lvl = log_level_from_string(v);
                if (lvl < 0)
                        snprintf(expect, sizeof expect, "debug, info, notice, warning or err");
                else
                        *(int *) dst = lvl;
                break;
        }
        }
        if (expect[0]) {
                /* Quote the value printably: it may hold anything. */
                char shown[64];
                size_t j = 0;
                for (const char *p = v; *p && j + 5 < sizeof shown; p++)
                        j += (size_t) (isprint((unsigned char) *p) ? snprintf(shown + j, sizeof shown - j, "%c", *p)
                                                                   : snprintf(shown + j, sizeof shown - j, "\\x%02x", (unsigned char) *p));
                shown[j] = 0;
                /* Webhook URLs (user:password@, ?token=) and headers (Authorization)
                 * may carry secrets: their values are never echoed. */
                if (o->type == T_URL_LIST || o->type == T_HEADER_LIST)
                        fprintf(err, "spotd: invalid value (not shown: it may hold a secret) for --%s (%s): expected %s\n",
                                o->name, origin, expect);
                else
                        fprintf(err, "spotd: invalid value \"%s%s\" for --%s (%s): expected %s\n", shown,
                                strlen(v) > j ? "..." : "", o->name, origin, expect);
                return -EINVAL;
        }
        return 0;
}

static const struct option_def *option_find(const char *name, size_t len) {
        for (size_t i = 0; i < ELEMENTSOF(options); i++)
                if (strlen(options[i].name) == len && strncmp(options[i].name, name, len) == 0)
                        return &options[i];
        return NULL;
}


static int config_file_load(struct config *c, const char *path, FILE *err) {
        _cleanup_(fclosep_) FILE *f = fopen(path, "re");
        char line[2048], origin[1100];
        unsigned lineno = 0;

        if (!f) {
                fprintf(err, "spotd: cannot read config file \"%s\" (--config): %s\n", path, strerror(errno));
                return -EINVAL;
        }
        while (fgets(line, sizeof line, f)) {
                lineno++;
                if (!strchr(line, '\n') && !feof(f)) {
                        fprintf(err, "spotd: %s:%u: line too long\n", path, lineno);
                        return -EINVAL;
                }
                char *s = strip(line);
                if (!*s || *s == '#' || *s == ';')
                        continue;
                char *eq = strchr(s, '=');
                if (!eq) {
                        fprintf(err, "spotd: %s:%u: expected key = value\n", path, lineno);
                        return -EINVAL;
                }
                *eq = 0;
                char *key = strip(s), *val = strip(eq + 1);
                size_t vl = strlen(val);
                if (vl >= 2 && (val[0] == '"' || val[0] == '\'') && val[vl - 1] == val[0]) {
                        val[vl - 1] = 0;
                        val++;
                }
                const struct option_def *o = option_find(key, strlen(key));
                if (!o || o->offset == offsetof(struct config, config_file)) {
                        fprintf(err, "spotd: %s:%u: unknown option \"%s\"\n", path, lineno, key);
                        return -EINVAL;
                }
                snprintf(origin, sizeof origin, "%s:%u", path, lineno);
                if (option_is_list(o)) {
                        /* A list key may repeat: each line adds an item. */
                        struct strlist *l = (struct strlist *) ((char *) c + o->offset), keep = *l;
                        if (option_set(c, o, val, origin, err) < 0)
                                return -EINVAL;
                        if (keep.n + l->n > STRLIST_MAX) {
                                fprintf(err, "spotd: %s: too many %s (at most %d)\n", origin, o->name, STRLIST_MAX);
                                return -EINVAL;
                        }
                        for (unsigned k = 0; k < l->n; k++)
                                strcpy(keep.v[keep.n++], l->v[k]);
                        *l = keep;
                        continue;
                }
                if (option_set(c, o, val, origin, err) < 0)
                        return -EINVAL;
        }
        if (ferror(f)) {
                fprintf(err, "spotd: cannot read config file \"%s\" (--config): %s\n", path, strerror(errno));
                return -EINVAL;
        }
        return 0;
}

void config_usage(FILE *f) {
        fprintf(f, "Usage: spotd [run|check|history|version] [OPTIONS]\n\n"
                   "Options (each also an SPOTD_* environment variable and a config file key):\n");
        for (size_t i = 0; i < ELEMENTSOF(options); i++) {
                char env[64];
                env_name(&options[i], env, sizeof env);
                fprintf(f, "  --%-24s %s\n  %-26s env %s, default \"%s\"\n", options[i].name,
                        options[i].help, "", env, options[i].def);
        }
}

/* Scans flags for one option; used to find --config before anything else. */
static int flag_value(int argc, char *const *argv, const struct option_def *o, const char **ret) {
        size_t nl = strlen(o->name);
        for (int i = 1; i < argc; i++) {
                const char *a = argv[i];
                if (strcmp(a, "--") == 0)
                        break;
                if (strncmp(a, "--", 2) != 0 || strncmp(a + 2, o->name, nl) != 0)
                        continue;
                if (a[2 + nl] == '=')
                        *ret = a + 3 + nl;
                else if (a[2 + nl] == 0 && i + 1 < argc)
                        *ret = argv[i + 1];
                else
                        continue;
        }
        return 0;
}

int config_parse(struct config *c, int argc, char *const *argv, char *const *envp, FILE *out, FILE *err) {
        const struct option_def *cfg = &options[0];
        const char *file = NULL;
        char env[64];
        bool list_flagged[ELEMENTSOF(options)] = {};

        if (!envp)
                envp = environ;
        *c = (struct config) {};
        for (size_t i = 0; i < ELEMENTSOF(options); i++)
                if (option_set(c, &options[i], options[i].def, "default", err) < 0)
                        return -EINVAL; /* a broken default is a bug; say so rather than crash */

        /* File first (lowest precedence after defaults), wherever it is named. */
        env_name(cfg, env, sizeof env);
        for (char *const *e = envp; *e; e++)
                if (strncmp(*e, env, strlen(env)) == 0 && (*e)[strlen(env)] == '=')
                        file = *e + strlen(env) + 1;
        flag_value(argc, argv, cfg, &file);
        if (file && *file) {
                if (config_file_load(c, file, err) < 0)
                        return -EINVAL;
                snprintf(c->config_file, sizeof c->config_file, "%s", file);
        }

        for (char *const *e = envp; *e; e++) {
                if (strncmp(*e, "SPOTD_", 6) != 0)
                        continue;
                const char *eq = strchr(*e, '=');
                if (!eq)
                        continue;
                const struct option_def *o = NULL;
                for (size_t i = 0; i < ELEMENTSOF(options) && !o; i++) {
                        env_name(&options[i], env, sizeof env);
                        if (strlen(env) == (size_t) (eq - *e) && strncmp(*e, env, (size_t) (eq - *e)) == 0)
                                o = &options[i];
                }
                if (!o) {
                        fprintf(err, "spotd: warning: ignoring unknown environment variable %.*s\n",
                                (int) (eq - *e > 64 ? 64 : eq - *e), *e);
                        continue;
                }
                if (o == cfg)
                        continue;
                env_name(o, env, sizeof env);
                if (option_set(c, o, eq + 1, env, err) < 0)
                        return -EINVAL;
        }

        for (int i = 1; i < argc; i++) {
                const char *a = argv[i], *val = NULL;
                if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
                        config_usage(out);
                        return 1;
                }
                if (strncmp(a, "--", 2) != 0 || !a[2]) {
                        fprintf(err, "spotd: unexpected argument \"%.64s\"\n", a);
                        return -EINVAL;
                }
                const char *name = a + 2, *eq = strchr(name, '=');
                size_t nl = eq ? (size_t) (eq - name) : strlen(name);
                const struct option_def *o = option_find(name, nl);
                bool negated = false;
                if (!o && nl > 3 && strncmp(name, "no-", 3) == 0 && !eq) {
                        o = option_find(name + 3, nl - 3);
                        negated = o && o->type == T_BOOL;
                        if (!negated)
                                o = NULL;
                }
                if (!o) {
                        fprintf(err, "spotd: unknown option --%.*s (see spotd --help)\n", (int) (nl > 64 ? 64 : nl), name);
                        return -EINVAL;
                }
                if (eq)
                        val = eq + 1;
                else if (o->type == T_BOOL)
                        val = negated ? "false" : "true"; /* a bare boolean flag turns it on */
                else if (i + 1 < argc)
                        val = argv[++i];
                else {
                        fprintf(err, "spotd: option --%s needs a value\n", o->name);
                        return -EINVAL;
                }
                if (o == cfg)
                        continue; /* already loaded */
                if (option_is_list(o)) {
                        /* The first such flag replaces env and file; later ones add. */
                        struct strlist *l = (struct strlist *) ((char *) c + o->offset), keep = *l;
                        bool first = !list_flagged[o - options];
                        list_flagged[o - options] = true;
                        if (option_set(c, o, val, "flag", err) < 0)
                                return -EINVAL;
                        if (!first) {
                                if (keep.n + l->n > STRLIST_MAX) {
                                        fprintf(err, "spotd: too many --%s (at most %d)\n", o->name, STRLIST_MAX);
                                        return -EINVAL;
                                }
                                for (unsigned k = 0; k < l->n; k++)
                                        strcpy(keep.v[keep.n++], l->v[k]);
                                *l = keep;
                        }
                        continue;
                }
                if (option_set(c, o, val, "flag", err) < 0)
                        return -EINVAL;
        }

        if (c->kube_api[0] && strncmp(c->kube_api, "https://", 8) != 0) {
                fprintf(err, "spotd: invalid value \"%.64s\" for --kube-api: expected an https:// URL (TLS is always verified)\n",
                        c->kube_api);
                return -EINVAL;
        }
        if (!c->kube_client_cert[0] != !c->kube_client_key[0]) {
                fprintf(err, "spotd: --kube-client-cert and --kube-client-key go together\n");
                return -EINVAL;
        }
        if (!c->node_name[0]) {
                char host[256] = "";
                (void) gethostname(host, sizeof host - 1);
                /* Host names may have capitals that Kubernetes lowercases. */
                for (char *p = host; *p; p++)
                        *p = (char) tolower((unsigned char) *p);
                if (!node_name_valid(host)) {
                        fprintf(err, "spotd: --node-name is not set and the host name \"%.64s\" is not a valid node name\n", host);
                        return -EINVAL;
                }
                strcpy(c->node_name, host); /* valid names fit: at most 253 */
        }
        /* The metadata client speaks plain HTTP only: the service has no TLS. */
        if (strncmp(c->imds_endpoint, "http://", 7) != 0) {
                fprintf(err, "spotd: --imds-endpoint \"%.64s\" must be an http:// URL (the metadata service has no TLS)\n",
                        c->imds_endpoint);
                return -EINVAL;
        }
        /* The pod list's field selector is sent from a fixed buffer too; a valid
         * node name always fits, this keeps it so should the rules change. */
        char field[CONFIG_FIELD_SELECTOR_ESCAPED_MAX + 32], esc[CONFIG_FIELD_SELECTOR_ESCAPED_MAX];
        if ((size_t) snprintf(field, sizeof field, "spec.nodeName=%s", c->node_name) >= sizeof field ||
            k8s_escape(field, esc, sizeof esc) < 0) {
                fprintf(err, "spotd: --node-name \"%.64s\" is too long for the pod list's field selector\n", c->node_name);
                return -EINVAL;
        }
        return 0;
}

enum event_action config_action_for(const struct config *c, const struct event *e) {
        switch (e->kind) {
        case EVENT_REBALANCE:
                return c->rebalance_action;
        case EVENT_SCHEDULED:
                return event_scheduled_code_is_disruptive(e->detail) ? ACTION_HANDLE : ACTION_CORDON;
        default:
                return ACTION_HANDLE;
        }
}
