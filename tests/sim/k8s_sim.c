/* Kubernetes API server simulator (see k8s_sim.h).
 *
 * One MHD daemon per simulator, TLS, thread per connection, so a SLOW fault
 * or a burst of concurrent evictions does not serialize behind one request.
 * Objects are cJSON documents shaped like the real ones; every request is
 * handled under s->lock (handling is short), only SLOW waits outside it.
 * Pods move running -> terminating -> gone lazily: whoever looks at a pod
 * first after its grace period has run out sees it gone, so no timer thread.
 *
 * Strictness is the point: what the real API server rejects (wrong media
 * type, a failed optimistic lock, an invalid taint, a malformed selector, an
 * Event that would not validate) is rejected here with the same code and
 * Status reason. Where the simulator is simpler than the real thing:
 *  - strategic merge patch is applied as a JSON merge patch (RFC 7386): no
 *    list merge keys; spotd only sends maps, and whole lists together with a
 *    resourceVersion;
 *  - JSON patch (RFC 6902) ops cannot target the whole document ("");
 *  - PDBs are "blocked until a time", not a disruption count;
 *  - Events are kept (last 10000) but cannot be read back over HTTP.
 * Deliberately independent of common/: the simulator must not share the
 * client's bugs. */
#include "k8s_sim.h"
#include "sim_port.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define BODY_MAX        (1024 * 1024)
#define ANNOTATIONS_MAX (256 * 1024)
#define LOG_MAX         2000
#define EVENTS_MAX      10000
#define FAULTS_MAX      16
#define OVERSIZED_DEF   (16 * 1024 * 1024) /* twice spotd's 8 MiB cap */
#define USEC_PER_MSEC   1000ULL
#define USEC_PER_SEC    1000000ULL

enum { POD_RUNNING, POD_TERMINATING, POD_GONE };

struct node {
        char *name;
        cJSON *obj;
        unsigned conflicts; /* forced 409s still to answer */
};

struct pod {
        char *ns, *name;
        cJSON *obj;
        int state;
        uint64_t gone_at; /* monotonic usec, while terminating */
        unsigned evictions, attempts, deletes;
        uint64_t last_attempt, min_gap; /* monotonic usec, of eviction POSTs */
        bool replace_after_list;
};

struct pdb {
        char *ns, *name;
        cJSON *selector;  /* matchLabels as an object */
        uint64_t until;   /* monotonic usec; UINT64_MAX: forever, 0: never blocks */
};

struct fault {
        char *prefix;
        int status;
        unsigned arg, left;
};

struct counter {
        char *method, *path;
        unsigned n;
};

struct k8s_sim {
        struct MHD_Daemon *daemon;
        uint16_t port;
        int hold;              /* while refusing: the port held (sim_port_hold), else -1 */
        char *dir;
        bool own_dir;
        char *ca_file, *token_file, *cert_pem, *key_pem;
        unsigned grace_ms; /* per grace-period second */

        pthread_mutex_t lock;
        pthread_cond_t wake; /* broadcast on stop, to cut SLOW faults short */
        bool stopping;

        char *token;
        uint64_t rv; /* resourceVersion: one counter for every write, as etcd's revision */
        unsigned n_ips;
        struct node *nodes;
        size_t n_nodes;
        struct pod *pods;
        size_t n_pods;
        struct pdb *pdbs;
        size_t n_pdbs;
        cJSON *events[EVENTS_MAX]; /* ring, indexed by n_events % EVENTS_MAX */
        size_t n_events;
        struct fault faults[FAULTS_MAX];
        size_t n_faults;
        struct counter *counters;
        size_t n_counters;
        char *log[LOG_MAX]; /* ring, indexed by n_log % LOG_MAX */
        size_t n_log;
        unsigned n_unauth, n_cluster_lists, n_conn;
        uint64_t evict_first, evict_last;
        k8s_sim_terminate_hook_t hook; /* a pod began terminating */
        void *hook_ud;
        bool ignore_field_selector;
};

/* Per request: the body accumulated over the upload calls. */
struct request {
        char *body;
        size_t len, cap;
        bool too_big;
};

struct answer {
        unsigned status;
        char *body;
        const char *allow; /* Allow header on 405 */
};

/* A validation failure: the field path and what is wrong with it. */
struct verr {
        char field[160], msg[320];
};

/* ---- small helpers ---- */

static uint64_t mono(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000;
}

static char *xstrdup(const char *p) {
        char *r = strdup(p ? p : "");
        if (!r) abort(); /* a test tool: out of memory is not a case to handle */
        return r;
}

static char *xvasprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
static char *xvasprintf(const char *fmt, va_list ap) {
        char *r;
        if (vasprintf(&r, fmt, ap) < 0) abort();
        return r;
}

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        char *r = xvasprintf(fmt, ap);
        va_end(ap);
        return r;
}

static void *xrealloc(void *p, size_t n) {
        p = realloc(p, n);
        if (!p) abort();
        return p;
}

static void fmt_time(time_t t, char buf[static 32]) {
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void new_uid(char buf[static 37]) {
        uint8_t b[16];
        if (getrandom(b, sizeof b, 0) != sizeof b) abort();
        b[6] = (b[6] & 0x0f) | 0x40; /* version 4 */
        b[8] = (b[8] & 0x3f) | 0x80;
        snprintf(buf, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11],
                 b[12], b[13], b[14], b[15]);
}

/* Returns false when the simulator is stopping. */
static bool sim_sleep(struct k8s_sim *s, unsigned ms) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += ms / 1000;
        until.tv_nsec += (long)(ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&s->lock);
        while (!s->stopping)
                if (pthread_cond_timedwait(&s->wake, &s->lock, &until) == ETIMEDOUT) break;
        bool ok = !s->stopping;
        pthread_mutex_unlock(&s->lock);
        return ok;
}

/* ---- cJSON helpers ---- */

/* The item at a path of object keys, or NULL. */
static cJSON *jget_(const cJSON *o, ...) {
        va_list ap;
        const char *k;
        va_start(ap, o);
        while (o && (k = va_arg(ap, const char *)))
                o = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
        va_end(ap);
        return (cJSON *)o;
}
#define jget(...) jget_(__VA_ARGS__, (const char *)NULL)

static const char *jstr(const cJSON *j) { return cJSON_IsString(j) ? j->valuestring : NULL; }

static void jset(cJSON *o, const char *k, cJSON *v) {
        if (cJSON_GetObjectItemCaseSensitive(o, k))
                cJSON_ReplaceItemInObjectCaseSensitive(o, k, v);
        else
                cJSON_AddItemToObject(o, k, v);
}

static cJSON *jobj(cJSON *o, const char *k) {
        cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
        if (cJSON_IsObject(v)) return v;
        v = cJSON_CreateObject();
        jset(o, k, v);
        return v;
}

/* An integral JSON number (Go decodes int64 fields strictly). */
static bool jint(const cJSON *j, long long *ret) {
        if (!cJSON_IsNumber(j) || j->valuedouble < -1e15 || j->valuedouble > 1e15 ||
            j->valuedouble != (double)(long long)j->valuedouble)
                return false;
        *ret = (long long)j->valuedouble;
        return true;
}

/* "k=v,k2=v2" into an object. */
static cJSON *parse_labels(const char *labels) {
        cJSON *o = cJSON_CreateObject();
        char *copy = xstrdup(labels), *save = NULL;
        for (char *kv = strtok_r(copy, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
                char *eq = strchr(kv, '=');
                if (eq) *eq++ = 0;
                jset(o, kv, cJSON_CreateString(eq ? eq : ""));
        }
        free(copy);
        return o;
}

static void set_rv(struct k8s_sim *s, cJSON *obj) {
        char v[24];
        snprintf(v, sizeof v, "%llu", (unsigned long long)++s->rv);
        jset(jobj(obj, "metadata"), "resourceVersion", cJSON_CreateString(v));
}

/* ---- answers ---- */

static void answer_json(struct answer *a, unsigned status, cJSON *j) {
        a->status = status;
        a->body = cJSON_PrintUnformatted(j);
        if (!a->body) abort();
        cJSON_Delete(j);
}

static const char *reason_for(unsigned code) {
        switch (code) {
        case 400: return "BadRequest";
        case 401: return "Unauthorized";
        case 403: return "Forbidden";
        case 404: return "NotFound";
        case 405: return "MethodNotAllowed";
        case 409: return "Conflict";
        case 410: return "Gone";
        case 413: return "RequestEntityTooLarge";
        case 415: return "UnsupportedMediaType";
        case 422: return "Invalid";
        case 429: return "TooManyRequests";
        case 500: return "InternalError";
        case 503: return "ServiceUnavailable";
        case 504: return "Timeout";
        default: return NULL; /* "Unknown": the real server leaves reason out */
        }
}

/* A Status answer, as every error of the real server; details is owned. */
static void fail_reason(struct answer *a, unsigned code, const char *reason, cJSON *details,
                        const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void fail_reason(struct answer *a, unsigned code, const char *reason, cJSON *details,
                        const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        char *msg = xvasprintf(fmt, ap);
        va_end(ap);
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "kind", "Status");
        cJSON_AddStringToObject(j, "apiVersion", "v1");
        cJSON_AddObjectToObject(j, "metadata");
        cJSON_AddStringToObject(j, "status", "Failure");
        cJSON_AddStringToObject(j, "message", msg);
        if (reason) cJSON_AddStringToObject(j, "reason", reason);
        if (details) cJSON_AddItemToObject(j, "details", details);
        cJSON_AddNumberToObject(j, "code", code);
        free(msg);
        answer_json(a, code, j);
}
#define fail(a, code, details, ...) fail_reason(a, code, reason_for(code), details, __VA_ARGS__)

static cJSON *details(const char *name, const char *kind) {
        cJSON *d = cJSON_CreateObject();
        if (name) cJSON_AddStringToObject(d, "name", name);
        if (kind) cJSON_AddStringToObject(d, "kind", kind);
        return d;
}

static void not_found(struct answer *a, const char *resource, const char *name) {
        fail(a, 404, details(name, resource), "%s \"%s\" not found", resource, name);
}

static void invalid(struct answer *a, const char *kind, const char *name, const struct verr *e) {
        cJSON *d = details(name, kind), *cause = cJSON_CreateObject();
        cJSON_AddStringToObject(cause, "reason", "FieldValueInvalid");
        cJSON_AddStringToObject(cause, "message", e->msg);
        cJSON_AddStringToObject(cause, "field", e->field);
        cJSON_AddItemToArray(cJSON_AddArrayToObject(d, "causes"), cause);
        fail(a, 422, d, "%s \"%s\" is invalid: %s: %s", kind, name, e->field, e->msg);
}

static bool verr(struct verr *e, const char *field, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static bool verr(struct verr *e, const char *field, const char *fmt, ...) {
        va_list ap;
        snprintf(e->field, sizeof e->field, "%s", field);
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
        return false;
}

/* ---- names and values (apimachinery validation) ---- */

static bool alnum(char c) { return isascii(c) && isalnum((unsigned char)c); }

/* DNS-1123 subdomain: lowercase alphanumerics, '-' and '.', at most 253. */
static bool dns_subdomain(const char *p, size_t n) {
        if (n == 0 || n > 253 || !alnum(p[0]) || !alnum(p[n - 1])) return false;
        for (size_t i = 0; i < n; i++)
                if (!(islower((unsigned char)p[i]) || isdigit((unsigned char)p[i]) ||
                      p[i] == '-' || p[i] == '.'))
                        return false;
        return true;
}

/* The name part of a qualified name, and a non-empty label value. */
static bool name_part(const char *p, size_t n) {
        if (n == 0 || n > 63 || !alnum(p[0]) || !alnum(p[n - 1])) return false;
        for (size_t i = 0; i < n; i++)
                if (!alnum(p[i]) && !strchr("-_.", p[i])) return false;
        return true;
}

static bool qualified_name(const char *k) {
        const char *slash = strchr(k, '/');
        if (!slash) return name_part(k, strlen(k));
        return dns_subdomain(k, (size_t)(slash - k)) && name_part(slash + 1, strlen(slash + 1));
}

static bool label_value(const char *v) { return !*v || name_part(v, strlen(v)); }

/* "2024-01-02T03:04:05Z", optional fraction, "Z" or "+hh:mm". */
static bool rfc3339(const char *v) {
        static const char pat[] = "dddd-dd-ddTdd:dd:dd";
        for (size_t i = 0; i < sizeof pat - 1; i++)
                if (pat[i] == 'd' ? !isdigit((unsigned char)v[i]) : v[i] != pat[i]) return false;
        v += sizeof pat - 1;
        if (*v == '.') {
                if (!isdigit((unsigned char)*++v)) return false;
                while (isdigit((unsigned char)*v)) v++;
        }
        if (*v == 'Z') return v[1] == 0;
        return (*v == '+' || *v == '-') && isdigit((unsigned char)v[1]) &&
               isdigit((unsigned char)v[2]) && v[3] == ':' && isdigit((unsigned char)v[4]) &&
               isdigit((unsigned char)v[5]) && v[6] == 0;
}

/* metadata.labels and metadata.annotations of any object. */
static bool validate_maps(const cJSON *md, struct verr *e) {
        const cJSON *labels = jget(md, "labels"), *ann = jget(md, "annotations"), *i;
        char f[200];
        if (labels && !cJSON_IsNull(labels)) {
                if (!cJSON_IsObject(labels))
                        return verr(e, "metadata.labels", "must be a map of strings");
                cJSON_ArrayForEach(i, labels) {
                        snprintf(f, sizeof f, "metadata.labels[%s]", i->string);
                        if (!qualified_name(i->string))
                                return verr(e, "metadata.labels", "Invalid value: \"%s\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character", i->string);
                        if (!jstr(i)) return verr(e, f, "must be a string");
                        if (!label_value(i->valuestring))
                                return verr(e, f, "Invalid value: \"%s\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (at most 63)", i->valuestring);
                }
        }
        if (ann && !cJSON_IsNull(ann)) {
                size_t total = 0;
                if (!cJSON_IsObject(ann))
                        return verr(e, "metadata.annotations", "must be a map of strings");
                cJSON_ArrayForEach(i, ann) {
                        snprintf(f, sizeof f, "metadata.annotations[%s]", i->string);
                        if (!qualified_name(i->string))
                                return verr(e, "metadata.annotations", "Invalid value: \"%s\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character", i->string);
                        if (!jstr(i)) return verr(e, f, "must be a string");
                        total += strlen(i->string) + strlen(i->valuestring);
                }
                if (total > ANNOTATIONS_MAX)
                        return verr(e, "metadata.annotations", "Too long: must have at most %d bytes", ANNOTATIONS_MAX);
        }
        return true;
}

/* A node after a patch: identity unchanged, well-formed spec and metadata. */
static bool validate_node(const cJSON *old, const cJSON *n, struct verr *e) {
        const char *name = jstr(jget(n, "metadata", "name")), *uid = jstr(jget(n, "metadata", "uid"));
        if (!name || strcmp(name, jstr(jget(old, "metadata", "name"))) != 0)
                return verr(e, "metadata.name", "Invalid value: field is immutable");
        if (!uid || strcmp(uid, jstr(jget(old, "metadata", "uid"))) != 0)
                return verr(e, "metadata.uid", "Invalid value: field is immutable");
        if (!validate_maps(jget(n, "metadata"), e)) return false;

        const cJSON *spec = jget(n, "spec");
        if (spec && !cJSON_IsObject(spec)) return verr(e, "spec", "must be an object");
        const cJSON *u = jget(spec, "unschedulable");
        if (u && !cJSON_IsBool(u) && !cJSON_IsNull(u))
                return verr(e, "spec.unschedulable", "must be a boolean");
        const cJSON *taints = jget(spec, "taints");
        if (!taints || cJSON_IsNull(taints)) return true;
        if (!cJSON_IsArray(taints)) return verr(e, "spec.taints", "must be a list");
        int idx = 0;
        const cJSON *t;
        cJSON_ArrayForEach(t, taints) {
                char f[64];
                const char *key = jstr(jget(t, "key")), *effect = jstr(jget(t, "effect"));
                const cJSON *value = jget(t, "value");
                snprintf(f, sizeof f, "spec.taints[%d]", idx);
                if (!cJSON_IsObject(t)) return verr(e, f, "must be an object");
                snprintf(f, sizeof f, "spec.taints[%d].key", idx);
                if (!key || !*key) return verr(e, f, "Required value");
                if (!qualified_name(key))
                        return verr(e, f, "Invalid value: \"%s\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character", key);
                snprintf(f, sizeof f, "spec.taints[%d].value", idx);
                if (value && !cJSON_IsNull(value) && (!jstr(value) || !label_value(value->valuestring)))
                        return verr(e, f, "Invalid value: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (at most 63)");
                snprintf(f, sizeof f, "spec.taints[%d].effect", idx);
                if (!effect || !*effect) return verr(e, f, "Required value");
                if (strcmp(effect, "NoSchedule") && strcmp(effect, "PreferNoSchedule") &&
                    strcmp(effect, "NoExecute"))
                        return verr(e, f, "Unsupported value: \"%s\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"", effect);
                const cJSON *t2;
                int idx2 = 0;
                cJSON_ArrayForEach(t2, taints) {
                        if (idx2++ >= idx) break;
                        if (strcmp(jstr(jget(t2, "key")), key) == 0 &&
                            strcmp(jstr(jget(t2, "effect")), effect) == 0) {
                                snprintf(f, sizeof f, "spec.taints[%d]", idx);
                                return verr(e, f, "Duplicate value: taints must be unique by key and effect pair");
                        }
                }
                idx++;
        }
        return true;
}

/* ---- patches ---- */

/* RFC 7386 into target (an object): null deletes, objects merge, anything
 * else replaces. */
static void merge_patch(cJSON *target, const cJSON *patch) {
        const cJSON *p;
        cJSON_ArrayForEach(p, patch) {
                cJSON *cur = cJSON_GetObjectItemCaseSensitive(target, p->string);
                if (cJSON_IsNull(p)) {
                        if (cur) cJSON_DeleteItemFromObjectCaseSensitive(target, p->string);
                } else if (cJSON_IsObject(p)) {
                        if (!cJSON_IsObject(cur)) {
                                cur = cJSON_CreateObject();
                                jset(target, p->string, cur);
                        }
                        merge_patch(cur, p);
                } else {
                        cJSON *v = cJSON_Duplicate(p, true);
                        if (!v) abort();
                        jset(target, p->string, v);
                }
        }
}

/* An RFC 6901 array index; "-" (one past the end) only where allowed. */
static int array_index(const cJSON *arr, const char *tok, bool dash_ok) {
        int size = cJSON_GetArraySize(arr);
        if (dash_ok && strcmp(tok, "-") == 0) return size;
        size_t n = strlen(tok);
        if (n == 0 || n > 6 || strspn(tok, "0123456789") != n || (tok[0] == '0' && n > 1)) return -1;
        return atoi(tok);
}

/* Walks the pointer path to the container of its last token (unescaped into
 * last). NULL if the path is malformed or a step is missing. */
static cJSON *pointer_parent(cJSON *doc, const char *path, char last[static 256]) {
        cJSON *cur = doc;
        if (*path != '/') return NULL;
        for (;;) {
                size_t n = 0;
                for (path++; *path && *path != '/'; path++) {
                        char c = *path;
                        if (c == '~') {
                                c = *++path == '0' ? '~' : *path == '1' ? '/' : 0;
                                if (!c) return NULL;
                        }
                        if (n >= 255) return NULL;
                        last[n++] = c;
                }
                last[n] = 0;
                if (!*path) return cur;
                if (cJSON_IsObject(cur)) cur = cJSON_GetObjectItemCaseSensitive(cur, last);
                else if (cJSON_IsArray(cur)) cur = cJSON_GetArrayItem(cur, array_index(cur, last, false));
                else return NULL;
                if (!cur) return NULL;
        }
}

static cJSON *pointer_get(cJSON *doc, const char *path) {
        char last[256];
        cJSON *parent = pointer_parent(doc, path, last);
        if (cJSON_IsObject(parent)) return cJSON_GetObjectItemCaseSensitive(parent, last);
        if (cJSON_IsArray(parent)) return cJSON_GetArrayItem(parent, array_index(parent, last, false));
        return NULL;
}

/* add: takes v whatever the outcome. */
static bool pointer_add(cJSON *doc, const char *path, cJSON *v) {
        char last[256];
        cJSON *parent = pointer_parent(doc, path, last);
        if (cJSON_IsObject(parent)) {
                jset(parent, last, v);
                return true;
        }
        int i = cJSON_IsArray(parent) ? array_index(parent, last, true) : -1;
        if (i < 0 || i > cJSON_GetArraySize(parent)) {
                cJSON_Delete(v);
                return false;
        }
        if (i == cJSON_GetArraySize(parent)) cJSON_AddItemToArray(parent, v);
        else cJSON_InsertItemInArray(parent, i, v);
        return true;
}

static cJSON *pointer_detach(cJSON *doc, const char *path) {
        char last[256];
        cJSON *parent = pointer_parent(doc, path, last);
        if (cJSON_IsObject(parent)) return cJSON_DetachItemFromObjectCaseSensitive(parent, last);
        if (cJSON_IsArray(parent)) return cJSON_DetachItemFromArray(parent, array_index(parent, last, false));
        return NULL;
}

/* RFC 6902 on doc. Returns 0, or the status to answer (400: not a patch,
 * 422: an op failed, as the real server) with a message in err. */
static unsigned json_patch(cJSON *doc, const cJSON *ops, char *err, size_t errlen) {
        const cJSON *op;
        if (!cJSON_IsArray(ops)) {
                snprintf(err, errlen, "json: cannot unmarshal object into Go value of type jsonpatch.Patch");
                return 400;
        }
        cJSON_ArrayForEach(op, ops) {
                const char *name = jstr(jget(op, "op")), *path = jstr(jget(op, "path"));
                const char *from = jstr(jget(op, "from"));
                const cJSON *value = jget(op, "value");
                if (!cJSON_IsObject(op)) {
                        snprintf(err, errlen, "json: cannot unmarshal into Go value of type jsonpatch.Operation");
                        return 400;
                }
                if (!name || !path) {
                        snprintf(err, errlen, "missing op or path in operation");
                        return 422;
                }
                if (!*path) {
                        snprintf(err, errlen, "the simulator does not patch the whole document");
                        return 422;
                }
                bool ok;
                if (strcmp(name, "add") == 0 || strcmp(name, "replace") == 0) {
                        if (!value) {
                                snprintf(err, errlen, "missing value for %s %s", name, path);
                                return 422;
                        }
                        cJSON *v = cJSON_Duplicate(value, true);
                        if (name[0] == 'r') {
                                cJSON *old = pointer_detach(doc, path);
                                ok = old != NULL;
                                cJSON_Delete(old);
                                ok = ok && pointer_add(doc, path, v);
                                if (!old) cJSON_Delete(v);
                        } else
                                ok = pointer_add(doc, path, v);
                } else if (strcmp(name, "remove") == 0) {
                        cJSON *old = pointer_detach(doc, path);
                        ok = old != NULL;
                        cJSON_Delete(old);
                } else if (strcmp(name, "test") == 0) {
                        const cJSON *cur = pointer_get(doc, path);
                        ok = cur && value && cJSON_Compare(cur, value, true);
                        if (!ok) {
                                snprintf(err, errlen, "testing value %s failed: test failed", path);
                                return 422;
                        }
                } else if (strcmp(name, "copy") == 0 || strcmp(name, "move") == 0) {
                        size_t fl = from ? strlen(from) : 0;
                        if (!from || (name[0] == 'm' && strncmp(path, from, fl) == 0 && path[fl] == '/')) {
                                snprintf(err, errlen, "invalid from for %s %s", name, path);
                                return 422;
                        }
                        cJSON *v = name[0] == 'm' ? pointer_detach(doc, from)
                                                  : cJSON_Duplicate(pointer_get(doc, from), true);
                        ok = v && pointer_add(doc, path, v);
                } else {
                        snprintf(err, errlen, "Unexpected kind: %s", name);
                        return 422;
                }
                if (!ok) {
                        snprintf(err, errlen, "%s operation does not apply: doc is missing path: \"%s\"", name, path);
                        return 422;
                }
        }
        return 0;
}

/* ---- selectors ---- */

enum tok { T_END, T_IDENT, T_NOT, T_EQ, T_NE, T_IN, T_NOTIN, T_OPEN, T_CLOSE, T_COMMA, T_GT, T_LT, T_BAD };

/* The label selector lexer: identifiers run until a space or one of !=(),<>. */
static enum tok lex(const char **pp, char id[static 320]) {
        const char *p = *pp;
        while (isspace((unsigned char)*p)) p++;
        enum tok t;
        size_t n = 0;
        switch (*p) {
        case 0: t = T_END; break;
        case '!': t = p[1] == '=' ? (p++, T_NE) : T_NOT; p++; break;
        case '=': t = T_EQ; p += p[1] == '=' ? 2 : 1; break;
        case '(': t = T_OPEN; p++; break;
        case ')': t = T_CLOSE; p++; break;
        case ',': t = T_COMMA; p++; break;
        case '<': t = T_LT; p++; break;
        case '>': t = T_GT; p++; break;
        default:
                n = strcspn(p, " \t\n\r\f\v!=(),<>");
                if (n >= 320) return T_BAD;
                memcpy(id, p, n);
                id[n] = 0;
                p += n;
                t = strcmp(id, "in") == 0 ? T_IN : strcmp(id, "notin") == 0 ? T_NOTIN : T_IDENT;
        }
        *pp = p;
        return t;
}

/* Parses and evaluates a set-based label selector against labels (NULL:
 * only check the syntax). Returns 1 match, 0 no match, -1 malformed. */
static int label_match(const char *sel, const cJSON *labels, char *err, size_t errlen) {
        const char *p = sel;
        char key[320], val[320];
        bool all = true;
        enum tok t = lex(&p, key);
        if (t == T_END) return 1;
        for (;;) {
                bool neg = t == T_NOT, ok = false;
                if (neg) t = lex(&p, key);
                if (t != T_IDENT) goto bad;
                if (!qualified_name(key)) {
                        snprintf(err, errlen, "unable to parse requested label selector \"%s\": invalid label key \"%s\"", sel, key);
                        return -1;
                }
                const char *have = jstr(jget(labels, key));
                t = lex(&p, val);
                if (neg) {
                        ok = !have;
                } else if (t == T_END || t == T_COMMA) {
                        ok = have != NULL;
                } else if (t == T_EQ || t == T_NE) {
                        bool eq = t == T_EQ;
                        t = lex(&p, val);
                        if (t == T_IDENT) t = lex(&p, key);
                        else if (t == T_END || t == T_COMMA) val[0] = 0;
                        else goto bad;
                        if (!label_value(val)) goto bad_value;
                        ok = eq ? have && strcmp(have, val) == 0 : !have || strcmp(have, val) != 0;
                } else if (t == T_IN || t == T_NOTIN) {
                        bool in = t == T_IN, found = false;
                        if (lex(&p, val) != T_OPEN) goto bad;
                        do {
                                if (lex(&p, val) != T_IDENT) goto bad;
                                if (!label_value(val)) goto bad_value;
                                found = found || (have && strcmp(have, val) == 0);
                        } while ((t = lex(&p, key)) == T_COMMA);
                        if (t != T_CLOSE) goto bad;
                        ok = in ? found : !have || !found;
                        t = lex(&p, key);
                } else if (t == T_GT || t == T_LT) {
                        bool gt = t == T_GT;
                        char *end;
                        if (lex(&p, val) != T_IDENT) goto bad;
                        long long want = strtoll(val, &end, 10);
                        if (*end) goto bad;
                        if (have && *have) {
                                long long v = strtoll(have, &end, 10);
                                ok = !*end && (gt ? v > want : v < want);
                        }
                        t = lex(&p, key);
                } else
                        goto bad;
                all = all && ok;
                if (t == T_END) return labels ? all : 1;
                if (t != T_COMMA) goto bad;
                t = lex(&p, key);
        }
bad:
        snprintf(err, errlen, "unable to parse requested label selector \"%s\": found unexpected token", sel);
        return -1;
bad_value:
        snprintf(err, errlen, "unable to parse requested label selector \"%s\": invalid label value: \"%s\"", sel, val);
        return -1;
}

/* The value of a selectable field of a pod or node, or NULL if the real
 * server does not support selecting on it. */
static const char *field_value(const cJSON *obj, bool is_pod, const char *field, bool *supported) {
        static const char *const pod_fields[][3] = {
                { "metadata.name", "metadata", "name" },
                { "metadata.namespace", "metadata", "namespace" },
                { "spec.nodeName", "spec", "nodeName" },
                { "status.phase", "status", "phase" },
        };
        *supported = true;
        if (!is_pod) {
                if (strcmp(field, "metadata.name") == 0) return jstr(jget(obj, "metadata", "name"));
                if (strcmp(field, "spec.unschedulable") == 0)
                        return cJSON_IsTrue(jget(obj, "spec", "unschedulable")) ? "true" : "false";
        } else
                for (size_t i = 0; i < sizeof pod_fields / sizeof pod_fields[0]; i++)
                        if (strcmp(field, pod_fields[i][0]) == 0) {
                                const char *v = jstr(jget(obj, pod_fields[i][1], pod_fields[i][2]));
                                return v ? v : "";
                        }
        *supported = false;
        return NULL;
}

/* Field selector "f=v,f2!=v2" against obj (NULL: syntax only). by_node is set
 * when it pins spec.nodeName to one value. Returns 1, 0 or -1 (malformed or
 * unsupported field, with the real server's message). */
static int field_match(const char *sel, const cJSON *obj, bool is_pod, bool *by_node,
                       char *err, size_t errlen) {
        char *copy = xstrdup(sel), *save = NULL;
        int r = 1;
        for (char *term = strtok_r(copy, ",", &save); term; term = strtok_r(NULL, ",", &save)) {
                char *op = strpbrk(term, "!=");
                if (!op || op == term || (op[0] == '!' && op[1] != '=')) {
                        snprintf(err, errlen, "invalid selector: '%s'; can't understand '%s'", sel, term);
                        r = -1;
                        break;
                }
                bool ne = op[0] == '!';
                const char *want = op + (ne || op[1] == '=' ? 2 : 1);
                *op = 0;
                bool supported;
                const char *have = field_value(obj, is_pod, term, &supported);
                if (!supported) {
                        snprintf(err, errlen, "field label not supported: %s", term);
                        r = -1;
                        break;
                }
                if (is_pod && !ne && strcmp(term, "spec.nodeName") == 0 && by_node) *by_node = true;
                if (obj && (strcmp(have, want) == 0) == ne) r = 0;
        }
        free(copy);
        return r;
}

/* ---- objects ---- */

static struct node *find_node(struct k8s_sim *s, const char *name) {
        for (size_t i = 0; i < s->n_nodes; i++)
                if (strcmp(s->nodes[i].name, name) == 0) return &s->nodes[i];
        return NULL;
}

/* A terminating pod whose grace period has run out is gone from now on. */
static void pod_refresh(struct k8s_sim *s, struct pod *p) {
        if (p->state == POD_TERMINATING && mono() >= p->gone_at) {
                p->state = POD_GONE;
                s->rv++; /* the deletion is a write */
        }
}

/* Gone pods too: they keep their counters. */
static struct pod *find_pod(struct k8s_sim *s, const char *ns, const char *name) {
        for (size_t i = 0; i < s->n_pods; i++) {
                struct pod *p = &s->pods[i];
                if (strcmp(p->ns, ns) == 0 && strcmp(p->name, name) == 0) {
                        pod_refresh(s, p);
                        return p;
                }
        }
        return NULL;
}

/* Starts (or shortens, never lengthens) a graceful deletion. */
static void pod_terminate(struct k8s_sim *s, struct pod *p, long long grace) {
        uint64_t at = mono() + (uint64_t)grace * s->grace_ms * USEC_PER_MSEC;
        if (p->state == POD_TERMINATING && at >= p->gone_at) return;
        char ts[32];
        /* Like the real server: the time by which the pod should be gone. */
        fmt_time(time(NULL) + (time_t)grace, ts);
        cJSON *md = jobj(p->obj, "metadata");
        jset(md, "deletionTimestamp", cJSON_CreateString(ts));
        jset(md, "deletionGracePeriodSeconds", cJSON_CreateNumber((double)grace));
        set_rv(s, p->obj);
        bool was_running = p->state == POD_RUNNING;
        p->state = grace == 0 ? POD_GONE : POD_TERMINATING;
        p->gone_at = at;
        /* SIGTERM reaches the containers now: a TaskManager disconnects. */
        if (was_running && s->hook)
                s->hook(s->hook_ud, p->ns, p->name, cJSON_GetStringValue(jget(p->obj, "status", "podIP")));
}

static bool namespace_exists(struct k8s_sim *s, const char *ns) {
        if (strcmp(ns, "default") == 0 || strcmp(ns, "kube-system") == 0) return true;
        for (size_t i = 0; i < s->n_pods; i++)
                if (strcmp(s->pods[i].ns, ns) == 0) return true;
        return false;
}

static bool pdb_matches(const struct pdb *b, const struct pod *p) {
        const cJSON *l, *labels = jget(p->obj, "metadata", "labels");
        if (strcmp(b->ns, p->ns) != 0) return false;
        cJSON_ArrayForEach(l, b->selector) {
                const char *v = jstr(jget(labels, l->string));
                if (!v || strcmp(v, l->valuestring) != 0) return false;
        }
        return true; /* policy/v1: an empty selector selects every pod of the namespace */
}

/* A new pod of the same name: new uid, running, no deletion pending. */
static void pod_replace(struct k8s_sim *s, struct pod *p) {
        char uid[37];
        cJSON *md = jobj(p->obj, "metadata");
        new_uid(uid);
        jset(md, "uid", cJSON_CreateString(uid));
        cJSON_DeleteItemFromObjectCaseSensitive(md, "deletionTimestamp");
        cJSON_DeleteItemFromObjectCaseSensitive(md, "deletionGracePeriodSeconds");
        set_rv(s, p->obj);
        p->state = POD_RUNNING;
}

/* ---- handlers (called locked) ---- */

static bool media_is(struct MHD_Connection *c, const char *want) {
        const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
        if (!v) return false;
        while (*v == ' ') v++;
        size_t n = strcspn(v, "; \t");
        return n == strlen(want) && strncasecmp(v, want, n) == 0;
}

/* Strict: trailing bytes after the JSON value are an error, as for Go. The
 * length includes the NUL the buffer always ends with, where cJSON's
 * require_null_terminated check looks. */
static cJSON *parse_body(const struct request *rq) {
        return rq->len ? cJSON_ParseWithLengthOpts(rq->body, rq->len + 1, NULL, true) : NULL;
}

/* A list answer: items without kind and apiVersion, as the real server. */
static void answer_list(struct k8s_sim *s, struct answer *a, const char *kind, cJSON *items) {
        char rv[24];
        cJSON *l = cJSON_CreateObject(), *i;
        cJSON_ArrayForEach(i, items) {
                cJSON_DeleteItemFromObjectCaseSensitive(i, "kind");
                cJSON_DeleteItemFromObjectCaseSensitive(i, "apiVersion");
        }
        snprintf(rv, sizeof rv, "%llu", (unsigned long long)s->rv);
        cJSON_AddStringToObject(l, "kind", kind);
        cJSON_AddStringToObject(l, "apiVersion", "v1");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(l, "metadata"), "resourceVersion", rv);
        cJSON_AddItemToObject(l, "items", items);
        answer_json(a, 200, l);
}

/* GET .../pods and .../nodes with fieldSelector and labelSelector. */
static void list(struct k8s_sim *s, struct MHD_Connection *c, bool pods, const char *ns,
                 struct answer *a) {
        const char *fs = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "fieldSelector");
        const char *ls = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "labelSelector");
        char err[512];
        bool by_node = false;
        if ((fs && field_match(fs, NULL, pods, &by_node, err, sizeof err) < 0) ||
            (ls && label_match(ls, NULL, err, sizeof err) < 0)) {
                fail(a, 400, NULL, "%s", err);
                return;
        }
        if (pods && !ns && !by_node) s->n_cluster_lists++;
        cJSON *items = cJSON_CreateArray();
        size_t n = pods ? s->n_pods : s->n_nodes;
        for (size_t i = 0; i < n; i++) {
                const cJSON *obj = pods ? s->pods[i].obj : s->nodes[i].obj;
                if (pods) {
                        pod_refresh(s, &s->pods[i]);
                        if (s->pods[i].state == POD_GONE || (ns && strcmp(s->pods[i].ns, ns) != 0))
                                continue;
                }
                if ((fs && !(pods && s->ignore_field_selector) && field_match(fs, obj, pods, NULL, err, sizeof err) != 1) ||
                    (ls && label_match(ls, jget(obj, "metadata", "labels"), err, sizeof err) != 1))
                        continue;
                cJSON_AddItemToArray(items, cJSON_Duplicate(obj, true));
        }
        answer_list(s, a, pods ? "PodList" : "NodeList", items);
        for (size_t i = 0; pods && i < s->n_pods; i++)
                if (s->pods[i].replace_after_list) {
                        s->pods[i].replace_after_list = false;
                        pod_replace(s, &s->pods[i]);
                }
}

static void node_patch(struct k8s_sim *s, struct MHD_Connection *c, struct node *n,
                       const struct request *rq, struct answer *a) {
        bool jsonp = media_is(c, "application/json-patch+json");
        if (!jsonp && !media_is(c, "application/merge-patch+json") &&
            !media_is(c, "application/strategic-merge-patch+json")) {
                fail(a, 415, NULL, "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json");
                return;
        }
        cJSON *patch = parse_body(rq), *doc = NULL;
        char err[512];
        struct verr e;
        if (!patch || (!jsonp && !cJSON_IsObject(patch))) {
                fail(a, 400, NULL, "error decoding patch: invalid JSON or not a JSON object");
                goto out;
        }
        doc = cJSON_Duplicate(n->obj, true);
        if (!doc) abort();
        if (!jsonp)
                merge_patch(doc, patch);
        else {
                unsigned code = json_patch(doc, patch, err, sizeof err);
                if (code == 400) {
                        fail(a, 400, NULL, "%s", err);
                        goto out;
                }
                if (code) {
                        cJSON *d = cJSON_CreateObject(), *cause = cJSON_CreateObject();
                        cJSON_AddStringToObject(cause, "reason", "UnexpectedServerResponse");
                        cJSON_AddStringToObject(cause, "message", err);
                        cJSON_AddItemToArray(cJSON_AddArrayToObject(d, "causes"), cause);
                        fail(a, 422, d, "the server rejected our request due to an error in our request");
                        goto out;
                }
        }
        const cJSON *rv = jget(doc, "metadata", "resourceVersion");
        if (rv && !cJSON_IsNull(rv) && !jstr(rv)) {
                fail(a, 400, NULL, "metadata.resourceVersion: must be a string");
                goto out;
        }
        /* Optimistic lock: a resourceVersion in the result must be the current one. */
        if (n->conflicts || (jstr(rv) && strcmp(rv->valuestring, jstr(jget(n->obj, "metadata", "resourceVersion"))) != 0)) {
                if (n->conflicts) n->conflicts--;
                fail(a, 409, details(n->name, "nodes"), "Operation cannot be fulfilled on nodes \"%s\": the object has been modified; please apply your changes to the latest version and try again", n->name);
                goto out;
        }
        if (!validate_node(n->obj, doc, &e)) {
                invalid(a, "Node", n->name, &e);
                goto out;
        }
        /* A patch that changes nothing is no write: resourceVersion stays. */
        if (!cJSON_Compare(doc, n->obj, true)) {
                cJSON_Delete(n->obj);
                n->obj = doc;
                doc = NULL;
                set_rv(s, n->obj);
        }
        answer_json(a, 200, cJSON_Duplicate(n->obj, true));
out:
        cJSON_Delete(patch);
        cJSON_Delete(doc);
}

/* gracePeriodSeconds and preconditions of DeleteOptions (doc may be NULL).
 * Returns false with the answer set. */
static bool delete_options(struct pod *p, const cJSON *o, long long *grace, struct answer *a) {
        const cJSON *g = jget(o, "gracePeriodSeconds");
        if (g && !cJSON_IsNull(g)) {
                if (!jint(g, grace)) {
                        fail(a, 400, NULL, "json: cannot unmarshal into Go struct field DeleteOptions.gracePeriodSeconds of type int64");
                        return false;
                }
                /* kube-apiserver (rest.BeforeDelete): "Negative values will
                 * be treated as the value `1s` on the delete path"
                 * (tests/kube/sim_compare.py: an eviction with -1 is 201). */
                if (*grace < 0)
                        *grace = 1;
        }
        const char *uid = jstr(jget(o, "preconditions", "uid"));
        const char *rv = jstr(jget(o, "preconditions", "resourceVersion"));
        const char *have_uid = jstr(jget(p->obj, "metadata", "uid"));
        const char *have_rv = jstr(jget(p->obj, "metadata", "resourceVersion"));
        if (uid && strcmp(uid, have_uid) != 0) {
                fail(a, 409, details(p->name, "Pod"), "Operation cannot be fulfilled on Pod \"%s\": the UID in the precondition (%s) does not match the UID in record (%s). The object might have been deleted and then recreated", p->name, uid, have_uid);
                return false;
        }
        if (rv && strcmp(rv, have_rv) != 0) {
                fail(a, 409, details(p->name, "Pod"), "Operation cannot be fulfilled on Pod \"%s\": the ResourceVersion in the precondition (%s) does not match the ResourceVersion in record (%s). The object might have been modified", p->name, rv, have_rv);
                return false;
        }
        return true;
}

static void pod_evict(struct k8s_sim *s, struct MHD_Connection *c, const char *ns, const char *name,
                      const struct request *rq, struct answer *a) {
        struct pod *p = find_pod(s, ns, name);
        if (p) {
                uint64_t now = mono();
                if (p->attempts == 1 || (p->attempts && now - p->last_attempt < p->min_gap))
                        p->min_gap = now - p->last_attempt;
                p->last_attempt = now;
                p->attempts++;
        }
        if (!media_is(c, "application/json")) {
                fail(a, 415, NULL, "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf");
                return;
        }
        cJSON *ev = parse_body(rq);
        const char *api = jstr(jget(ev, "apiVersion")), *kind = jstr(jget(ev, "kind"));
        const char *mname = jstr(jget(ev, "metadata", "name")), *mns = jstr(jget(ev, "metadata", "namespace"));
        long long grace = -1;
        if (!cJSON_IsObject(ev) || !api || !kind || strcmp(kind, "Eviction") != 0 ||
            (strcmp(api, "policy/v1") != 0 && strcmp(api, "policy/v1beta1") != 0))
                fail(a, 400, NULL, "the body must be a policy/v1 Eviction");
        else if (!mname || strcmp(mname, name) != 0)
                fail(a, 400, NULL, "name in URL does not match name in Eviction object");
        else if (mns && strcmp(mns, ns) != 0)
                fail(a, 400, NULL, "the namespace of the provided object does not match the namespace sent on the request");
        else if (!p || p->state == POD_GONE)
                not_found(a, "pods", name);
        else if (delete_options(p, jget(ev, "deleteOptions"), &grace, a)) {
                size_t n_match = 0;
                const struct pdb *match = NULL;
                for (size_t i = 0; i < s->n_pdbs; i++)
                        if (pdb_matches(&s->pdbs[i], p)) {
                                match = &s->pdbs[i];
                                n_match++;
                        }
                /* A pod already terminating is deleted again without a PDB check. */
                bool again = p->state == POD_TERMINATING;
                if (!again && n_match > 1) {
                        /* As the real server words it: no reason, no causes. */
                        fail_reason(a, 500, NULL, NULL, "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.");
                } else if (!again && match && mono() < match->until) {
                        cJSON *d = cJSON_CreateObject(), *cause = cJSON_CreateObject();
                        char *m = xasprintf("The disruption budget %s needs 1 healthy pods and has 1 currently", match->name);
                        cJSON_AddStringToObject(cause, "reason", "DisruptionBudget");
                        cJSON_AddStringToObject(cause, "message", m);
                        cJSON_AddItemToArray(cJSON_AddArrayToObject(d, "causes"), cause);
                        free(m);
                        fail(a, 429, d, "Cannot evict pod as it would violate the pod's disruption budget.");
                } else {
                        long long tgp = 30;
                        jint(jget(p->obj, "spec", "terminationGracePeriodSeconds"), &tgp);
                        pod_terminate(s, p, grace >= 0 ? grace : tgp);
                        if (!again) {
                                p->evictions++;
                                s->evict_last = mono();
                                if (!s->evict_first) s->evict_first = s->evict_last;
                        }
                        cJSON *st = cJSON_CreateObject();
                        cJSON_AddStringToObject(st, "kind", "Status");
                        cJSON_AddStringToObject(st, "apiVersion", "v1");
                        cJSON_AddObjectToObject(st, "metadata");
                        cJSON_AddStringToObject(st, "status", "Success");
                        cJSON_AddNumberToObject(st, "code", 201);
                        answer_json(a, 201, st);
                }
        }
        cJSON_Delete(ev);
}

static void pod_delete(struct k8s_sim *s, struct MHD_Connection *c, struct pod *p,
                       const struct request *rq, struct answer *a) {
        cJSON *o = parse_body(rq);
        long long grace = -1;
        const char *q = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "gracePeriodSeconds");
        if (rq->len && !cJSON_IsObject(o))
                fail(a, 400, NULL, "the body of the request could not be decoded as DeleteOptions");
        else if (q && (!*q || strspn(q, "0123456789") != strlen(q) || strlen(q) > 9))
                fail(a, 400, NULL, "gracePeriodSeconds: invalid value \"%s\"", q);
        else if (delete_options(p, o, &grace, a)) {
                long long tgp = 30;
                if (q && grace < 0) grace = atoll(q);
                jint(jget(p->obj, "spec", "terminationGracePeriodSeconds"), &tgp);
                pod_terminate(s, p, grace >= 0 ? grace : tgp);
                p->deletes++;
                answer_json(a, 200, cJSON_Duplicate(p->obj, true));
        }
        cJSON_Delete(o);
}

static void event_create(struct k8s_sim *s, struct MHD_Connection *c, const char *ns,
                         const struct request *rq, struct answer *a) {
        if (!media_is(c, "application/json")) {
                fail(a, 415, NULL, "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf");
                return;
        }
        cJSON *ev = parse_body(rq);
        const char *api = jstr(jget(ev, "apiVersion")), *kind = jstr(jget(ev, "kind"));
        struct verr e = { "", "" };
        if (!cJSON_IsObject(ev) || (jget(ev, "apiVersion") && (!api || strcmp(api, "v1") != 0)) ||
            (jget(ev, "kind") && (!kind || strcmp(kind, "Event") != 0))) {
                fail(a, 400, NULL, "the body must be a core/v1 Event");
                goto out;
        }
        if (!namespace_exists(s, ns)) {
                not_found(a, "namespaces", ns);
                goto out;
        }
        cJSON *md = jobj(ev, "metadata");
        const char *mns = jstr(jget(md, "namespace"));
        if (mns && strcmp(mns, ns) != 0) {
                fail(a, 400, NULL, "the namespace of the provided object does not match the namespace sent on the request");
                goto out;
        }
        const char *first = jstr(jget(ev, "firstTimestamp")), *last = jstr(jget(ev, "lastTimestamp"));
        const cJSON *ft = jget(ev, "firstTimestamp"), *lt = jget(ev, "lastTimestamp"), *cnt = jget(ev, "count");
        long long count;
        if ((ft && !cJSON_IsNull(ft) && (!first || !rfc3339(first))) ||
            (lt && !cJSON_IsNull(lt) && (!last || !rfc3339(last))) || (cnt && !jint(cnt, &count))) {
                fail(a, 400, NULL, "the body could not be decoded: bad firstTimestamp, lastTimestamp or count");
                goto out;
        }
        jset(md, "namespace", cJSON_CreateString(ns));
        const char *gen = jstr(jget(md, "generateName"));
        if (!jstr(jget(md, "name")) && gen && *gen) {
                static const char alpha[] = "bcdfghjklmnpqrstvwxz2456789";
                uint8_t r[5];
                char *name;
                if (getrandom(r, sizeof r, 0) != sizeof r) abort();
                name = xasprintf("%s%c%c%c%c%c", gen, alpha[r[0] % 27], alpha[r[1] % 27],
                                 alpha[r[2] % 27], alpha[r[3] % 27], alpha[r[4] % 27]);
                jset(md, "name", cJSON_CreateString(name));
                free(name);
        }
        const char *name = jstr(jget(md, "name"));
        const char *io_kind = jstr(jget(ev, "involvedObject", "kind"));
        const char *io_name = jstr(jget(ev, "involvedObject", "name"));
        const char *io_ns = jstr(jget(ev, "involvedObject", "namespace"));
        static const char *const strings[] = { "reason", "message", "type", "reportingComponent" };
        for (size_t i = 0; i < sizeof strings / sizeof *strings; i++) {
                const cJSON *v = jget(ev, strings[i]);
                if (v && !cJSON_IsNull(v) && !cJSON_IsString(v)) {
                        fail(a, 400, NULL, "Event in version \"v1\" cannot be handled as a Event: json: cannot unmarshal into Go struct field Event.%s of type string", strings[i]);
                        goto out;
                }
        }
        if (!name || !*name)
                verr(&e, "metadata.name", "Required value: name or generateName is required");
        else if (!dns_subdomain(name, strlen(name)))
                verr(&e, "metadata.name", "Invalid value: \"%s\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'", name);
        else if (!validate_maps(md, &e))
                ;
        else if (!io_kind || !*io_kind)
                verr(&e, "involvedObject.kind", "Required value");
        else if (!io_name || !*io_name)
                verr(&e, "involvedObject.name", "Required value");
        /* A cluster-scoped object (a Node) has its events in "default". */
        else if ((!io_ns || !*io_ns) ? strcmp(ns, "default") != 0 : strcmp(io_ns, ns) != 0)
                verr(&e, "involvedObject.namespace", "Invalid value: \"%s\": does not match event.namespace", io_ns ? io_ns : "");
        /* A core/v1 Event without eventTime gets the legacy validation:
         * names and namespaces only. The real server took an Event of type
         * "Info", with no reason, no source.component and a 2,000-character
         * message (tests/kube/sim_compare.py); so does this one. What spotd
         * writes there is checked by its own tests. */
        if (e.field[0]) {
                invalid(a, "Event", name ? name : "", &e);
                goto out;
        }
        for (size_t i = 0; i < EVENTS_MAX && i < s->n_events; i++)
                if (strcmp(jstr(jget(s->events[i], "metadata", "namespace")), ns) == 0 &&
                    strcmp(jstr(jget(s->events[i], "metadata", "name")), name) == 0) {
                        fail_reason(a, 409, "AlreadyExists", details(name, "events"),
                                    "events \"%s\" already exists", name);
                        goto out;
                }
        char uid[37], ts[32];
        new_uid(uid);
        fmt_time(time(NULL), ts);
        jset(md, "uid", cJSON_CreateString(uid));
        jset(md, "creationTimestamp", cJSON_CreateString(ts));
        set_rv(s, ev);
        size_t slot = s->n_events++ % EVENTS_MAX;
        cJSON_Delete(s->events[slot]);
        s->events[slot] = cJSON_Duplicate(ev, true);
        answer_json(a, 201, ev);
        return;
out:
        cJSON_Delete(ev);
}

static void method_not_allowed(struct answer *a, const char *allow) {
        fail(a, 405, NULL, "the server does not allow this method on the requested resource");
        a->allow = allow;
}

/* Which handler, from the path segments after /api/v1 (empty segments never
 * match, so "//" and a trailing "/" are 404 as on the real server). */
static void route(struct k8s_sim *s, struct MHD_Connection *c, const char *method, const char *url,
                  const struct request *rq, struct answer *a) {
        char buf[512], *seg[8];
        size_t n = 0;
        bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
        bool patch = strcmp(method, "PATCH") == 0, del = strcmp(method, "DELETE") == 0;
        if (strncmp(url, "/api/v1/", 8) != 0 || strlen(url + 8) >= sizeof buf) goto not_found;
        strcpy(buf, url + 8);
        for (char *p = buf; n < 8; p++) {
                seg[n++] = p;
                if (!(p = strchr(p, '/'))) break;
                *p = 0;
        }
        for (size_t i = 0; i < n; i++)
                if (!*seg[i]) goto not_found;

        if (strcmp(seg[0], "nodes") == 0 && n == 1) {
                if (!get) method_not_allowed(a, "GET");
                else list(s, c, false, NULL, a);
        } else if (strcmp(seg[0], "nodes") == 0 && n == 2) {
                struct node *node = find_node(s, seg[1]);
                if (!get && !patch) method_not_allowed(a, "GET, PATCH");
                else if (!node) not_found(a, "nodes", seg[1]);
                else if (patch) node_patch(s, c, node, rq, a);
                else answer_json(a, 200, cJSON_Duplicate(node->obj, true));
        } else if (strcmp(seg[0], "pods") == 0 && n == 1) {
                if (!get) method_not_allowed(a, "GET");
                else list(s, c, true, NULL, a);
        } else if (strcmp(seg[0], "namespaces") != 0 || n < 3) {
                goto not_found;
        } else if (strcmp(seg[2], "events") == 0 && n == 3) {
                if (!post) method_not_allowed(a, "POST");
                else event_create(s, c, seg[1], rq, a);
        } else if (strcmp(seg[2], "pods") != 0 || n > 5) {
                goto not_found;
        } else if (n == 3) {
                if (!get) method_not_allowed(a, "GET");
                else list(s, c, true, seg[1], a);
        } else if (n == 5) {
                if (strcmp(seg[4], "eviction") != 0) goto not_found;
                if (!post) method_not_allowed(a, "POST");
                else pod_evict(s, c, seg[1], seg[3], rq, a);
        } else {
                struct pod *p = find_pod(s, seg[1], seg[3]);
                if (!get && !del) method_not_allowed(a, "GET, DELETE");
                else if (!p || p->state == POD_GONE) not_found(a, "pods", seg[3]);
                else if (del) pod_delete(s, c, p, rq, a);
                else answer_json(a, 200, cJSON_Duplicate(p->obj, true));
        }
        return;
not_found:
        fail(a, 404, NULL, "the server could not find the requested resource");
}

/* ---- MHD glue ---- */

/* The next matching fault, consumed; status 0 if none. Called locked. */
static struct fault take_fault(struct k8s_sim *s, const char *url) {
        for (size_t i = 0; i < s->n_faults; i++) {
                struct fault *f = &s->faults[i];
                if (strncmp(url, f->prefix, strlen(f->prefix)) != 0) continue;
                struct fault r = { .status = f->status, .arg = f->arg };
                if (--f->left == 0) {
                        free(f->prefix);
                        s->faults[i] = s->faults[--s->n_faults];
                }
                return r;
        }
        return (struct fault){ 0 };
}

static enum MHD_Result log_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
        FILE *f = cls;
        (void)kind;
        fprintf(f, "%s%s%s%s", ftell(f) ? "&" : "?", key, value ? "=" : "", value ? value : "");
        return MHD_YES;
}

/* Counts the request and logs it. Called locked. */
static void record(struct k8s_sim *s, struct MHD_Connection *c, const char *method,
                   const char *url, unsigned status) {
        size_t i;
        for (i = 0; i < s->n_counters; i++)
                if (strcmp(s->counters[i].path, url) == 0 && strcmp(s->counters[i].method, method) == 0) break;
        if (i == s->n_counters) {
                s->counters = xrealloc(s->counters, (i + 1) * sizeof *s->counters);
                s->counters[s->n_counters++] = (struct counter){ xstrdup(method), xstrdup(url), 0 };
        }
        s->counters[i].n++;

        char *q = NULL, st[16] = "-";
        size_t qlen = 0;
        FILE *f = open_memstream(&q, &qlen);
        if (!f) abort();
        MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, log_arg, f);
        fclose(f);
        if (status) snprintf(st, sizeof st, "%u", status);
        size_t slot = s->n_log++ % LOG_MAX;
        free(s->log[slot]);
        s->log[slot] = xasprintf("%s %s%s %s", method, url, q, st);
        free(q);
}

static bool authorized(struct k8s_sim *s, struct MHD_Connection *c) {
        const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        return v && strncmp(v, "Bearer ", 7) == 0 && strcmp(v + 7, s->token) == 0;
}

/* A body sent by a callback: one byte every ms (DRIP), or the first cut
 * bytes and then a closed connection (CUT). */
struct drip {
        struct k8s_sim *s;
        char *body;
        unsigned ms;
        size_t cut;
};

static ssize_t drip_read(void *cls, uint64_t pos, char *buf, size_t max) {
        struct drip *d = cls;
        if (d->cut) {
                if (pos >= d->cut) return MHD_CONTENT_READER_END_WITH_ERROR;
                size_t n = d->cut - pos < max ? d->cut - pos : max;
                memcpy(buf, d->body + pos, n);
                return (ssize_t)n;
        }
        if (!sim_sleep(d->s, d->ms)) return MHD_CONTENT_READER_END_WITH_ERROR;
        buf[0] = d->body[pos]; /* MHD stops at the announced length */
        return 1;
}

static void drip_free(void *cls) {
        struct drip *d = cls;
        free(d->body);
        free(d);
}

/* Queues the answer, spoilt as an answer fault (K8S_SIM_MALFORMED ..
 * K8S_SIM_CUT) asks; any other how sends it as it is. */
static enum MHD_Result send_answer(struct k8s_sim *s, struct MHD_Connection *c, struct answer *a,
                                   int how, unsigned arg) {
        size_t len = strlen(a->body);
        struct MHD_Response *r;
        if (how == K8S_SIM_MALFORMED) {
                len /= 2; /* JSON cut in half */
        } else if (how == K8S_SIM_OVERSIZED) {
                len = arg ? arg : OVERSIZED_DEF; /* {"padding":"xxx..."} */
                free(a->body);
                a->body = malloc(len + 1);
                if (!a->body) abort();
                memset(a->body, 'x', len);
                memcpy(a->body, "{\"padding\":\"", 12);
                memcpy(a->body + len - 2, "\"}", 3);
        }
        if (how == K8S_SIM_DRIP || how == K8S_SIM_CUT) {
                struct drip *d = malloc(sizeof *d);
                if (!d) abort();
                *d = (struct drip){ s, a->body, arg ? arg : 100, how == K8S_SIM_CUT ? (len > 1 ? len / 2 : 1) : 0 };
                r = MHD_create_response_from_callback(len, 4096, drip_read, d, drip_free);
                if (!r) drip_free(d);
        } else {
                r = MHD_create_response_from_buffer(len, a->body, MHD_RESPMEM_MUST_FREE);
                if (!r) free(a->body);
        }
        if (!r)
                return MHD_NO;
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache, private");
        if (a->allow) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, a->allow);
        enum MHD_Result ret = MHD_queue_response(c, a->status, r);
        MHD_destroy_response(r);
        return ret;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **req) {
        struct k8s_sim *s = cls;
        struct request *rq = *req;
        (void)version;

        if (!rq) { /* headers are in; the body (if any) follows in later calls */
                *req = rq = calloc(1, sizeof *rq);
                return rq ? MHD_YES : MHD_NO;
        }
        if (*upload_data_size) {
                size_t n = *upload_data_size;
                *upload_data_size = 0;
                if (rq->too_big || rq->len + n > BODY_MAX) {
                        rq->too_big = true; /* read on and discard, answer 413 at the end */
                        return MHD_YES;
                }
                if (rq->len + n + 1 > rq->cap) {
                        rq->cap = rq->len + n + 1 > 2 * rq->cap ? rq->len + n + 1 : 2 * rq->cap;
                        rq->body = xrealloc(rq->body, rq->cap);
                }
                memcpy(rq->body + rq->len, upload_data, n);
                rq->len += n;
                rq->body[rq->len] = 0;
                return MHD_YES;
        }

        pthread_mutex_lock(&s->lock);
        struct fault f = take_fault(s, url);
        pthread_mutex_unlock(&s->lock);
        if (f.status == K8S_SIM_SLOW && !sim_sleep(s, f.arg)) return MHD_NO;

        struct answer a = { 0 };
        pthread_mutex_lock(&s->lock);
        if (f.status == K8S_SIM_DROP) {
                record(s, c, method, url, 0);
                pthread_mutex_unlock(&s->lock);
                return MHD_NO; /* MHD closes the connection without an answer */
        }
        if (f.status >= 100) {
                if (f.status == 401) s->n_unauth++;
                fail(&a, (unsigned)f.status, NULL, "injected fault %d", f.status);
        } else if (!authorized(s, c)) {
                s->n_unauth++;
                fail(&a, 401, NULL, "Unauthorized");
        } else if (rq->too_big)
                fail(&a, 413, NULL, "Request entity too large: limit is %d", BODY_MAX);
        else
                route(s, c, method, url, rq, &a);
        record(s, c, method, url, a.status);
        pthread_mutex_unlock(&s->lock);
        return send_answer(s, c, &a, f.status, f.arg);
}

static void request_done(void *cls, struct MHD_Connection *c, void **req,
                         enum MHD_RequestTerminationCode toe) {
        struct request *rq = *req;
        (void)cls, (void)c, (void)toe;
        if (rq) free(rq->body);
        free(rq);
        *req = NULL;
}

static void notify_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                              enum MHD_ConnectionNotificationCode toe) {
        struct k8s_sim *s = cls;
        (void)c, (void)socket_context;
        if (toe != MHD_CONNECTION_NOTIFY_STARTED) return;
        pthread_mutex_lock(&s->lock);
        s->n_conn++;
        pthread_mutex_unlock(&s->lock);
}

/* ---- TLS material ---- */

static char *path_in(const struct k8s_sim *s, const char *file) { return xasprintf("%s/%s", s->dir, file); }

static int write_file(const char *path, const char *data, mode_t mode) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        if (fd < 0) return -errno;
        size_t n = strlen(data);
        ssize_t w = write(fd, data, n);
        int r = w == (ssize_t)n ? 0 : w < 0 ? -errno : -EIO;
        if (close(fd) < 0 && r == 0) r = -errno;
        return r;
}

static char *read_file(const char *path) {
        FILE *f = fopen(path, "re");
        char *buf = NULL;
        size_t len = 0;
        if (!f) return NULL;
        if (getdelim(&buf, &len, 0, f) < 0) { /* PEM has no NUL: reads it all */
                free(buf);
                buf = NULL;
        }
        fclose(f);
        return buf;
}

/* Runs openssl with argv (no shell, so any path is safe); its chatter goes to
 * a log that is shown only when it fails. */
static int run_openssl(const struct k8s_sim *s, const char *const *argv) {
        char *log = path_in(s, "openssl.log");
        posix_spawn_file_actions_t fa;
        pid_t pid;
        int status, r;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        posix_spawn_file_actions_adddup2(&fa, 1, 2);
        r = posix_spawnp(&pid, "openssl", &fa, NULL, (char *const *)argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        if (r == 0) {
                while (waitpid(pid, &status, 0) < 0)
                        if (errno != EINTR) abort();
                r = WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : EIO;
                if (r) {
                        char *out = read_file(log);
                        fprintf(stderr, "k8s_sim: openssl %s failed:\n%s", argv[1], out ? out : "");
                        free(out);
                }
        }
        unlink(log);
        free(log);
        return -r;
}

/* A CA and a server certificate it signs, for 127.0.0.1 and localhost. */
static int make_certs(struct k8s_sim *s) {
        static const char cnf[] =
                "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = k8s-sim\n"
                "[ca_ext]\nbasicConstraints = critical,CA:TRUE\n"
                "keyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n"
                "[srv_ext]\nbasicConstraints = critical,CA:FALSE\n"
                "keyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth\n"
                "subjectAltName = IP:127.0.0.1,DNS:localhost\nsubjectKeyIdentifier = hash\n"
                "authorityKeyIdentifier = keyid,issuer\n";
        char *conf = path_in(s, "openssl.cnf"), *ca_key = path_in(s, "ca.key");
        char *csr = path_in(s, "server.csr"), *crt = path_in(s, "server.crt");
        char *key = path_in(s, "server.key"), serial[40];
        uint8_t b[8];
        if (getrandom(b, sizeof b, 0) != sizeof b) abort();
        snprintf(serial, sizeof serial, "0x%02x%02x%02x%02x%02x%02x%02x%02x", b[0] & 0x7f, b[1],
                 b[2], b[3], b[4], b[5], b[6], b[7]);
        const char *const ca[] = { "openssl", "req", "-config", conf, "-x509", "-new",
                "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", ca_key, "-out", s->ca_file, "-days", "1",
                "-subj", "/CN=k8s-sim-ca", "-extensions", "ca_ext", NULL };
        const char *const req[] = { "openssl", "req", "-config", conf, "-new",
                "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", key, "-out", csr, "-subj", "/CN=localhost", NULL };
        const char *const sign[] = { "openssl", "x509", "-req", "-in", csr, "-CA", s->ca_file,
                "-CAkey", ca_key, "-set_serial", serial, "-days", "1",
                "-extfile", conf, "-extensions", "srv_ext", "-out", crt, NULL };
        int r = write_file(conf, cnf, 0600);
        if (r == 0) r = run_openssl(s, ca);
        if (r == 0) r = run_openssl(s, req);
        if (r == 0) r = run_openssl(s, sign);
        if (r == 0) {
                s->cert_pem = read_file(crt);
                s->key_pem = read_file(key);
                if (!s->cert_pem || !s->key_pem) r = -EIO;
        }
        /* Only what clients need stays: the CA key is of no further use. */
        unlink(conf);
        unlink(ca_key);
        unlink(csr);
        free(conf);
        free(ca_key);
        free(csr);
        free(crt);
        free(key);
        return r;
}

/* ---- lifecycle ---- */

/* The HTTPS daemon on 127.0.0.1:port (0: ephemeral). */
static struct MHD_Daemon *daemon_start(struct k8s_sim *s, uint16_t port) {
        struct sockaddr_in sa = {
                .sin_family = AF_INET,
                .sin_port = htons(port),
                .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
        };
        return MHD_start_daemon(
                MHD_USE_TLS | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_AUTO,
                0, NULL, NULL, handle, s,
                MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                MHD_OPTION_HTTPS_MEM_KEY, s->key_pem,
                MHD_OPTION_HTTPS_MEM_CERT, s->cert_pem,
                MHD_OPTION_NOTIFY_CONNECTION, notify_connection, s,
                MHD_OPTION_NOTIFY_COMPLETED, request_done, s,
                MHD_OPTION_CONNECTION_TIMEOUT, 30U, /* reap idle keep-alive connections */
                MHD_OPTION_CONNECTION_LIMIT, 512U,
                MHD_OPTION_END);
}

int k8s_sim_set_refusing(struct k8s_sim *s, bool refusing) {
        if (refusing && s->daemon) {
                /* Cut pending SLOW and DRIP answers short, as k8s_sim_stop does. */
                pthread_mutex_lock(&s->lock);
                s->stopping = true;
                pthread_cond_broadcast(&s->wake);
                pthread_mutex_unlock(&s->lock);
                MHD_stop_daemon(s->daemon); /* every connection closed, the port too */
                s->daemon = NULL;
                s->hold = sim_port_hold(s->port); /* refused, and ours still */
                pthread_mutex_lock(&s->lock);
                s->stopping = false;
                pthread_mutex_unlock(&s->lock);
                if (s->hold < 0) return s->hold;
        } else if (!refusing && !s->daemon) {
                if (s->hold >= 0) close(s->hold);
                s->hold = -1;
                errno = 0;
                s->daemon = daemon_start(s, s->port); /* MHD sets SO_REUSEADDR */
                if (!s->daemon) return errno ? -errno : -EIO;
        }
        return 0;
}

int k8s_sim_start(const struct k8s_sim_options *o, struct k8s_sim **ret) {
        struct k8s_sim *s = calloc(1, sizeof *s);
        int r;
        if (!s) return -ENOMEM;
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* sim_sleep deadlines */
        pthread_cond_init(&s->wake, &ca);
        pthread_condattr_destroy(&ca);
        pthread_mutex_init(&s->lock, NULL);
        s->hold = -1;
        s->grace_ms = o && o->grace_ms_per_s ? o->grace_ms_per_s : 10;
        s->token = xstrdup(o && o->token ? o->token : "sim-token-1");
        s->rv = 1000;

        if (o && o->dir) {
                s->dir = xstrdup(o->dir);
        } else {
                s->dir = xstrdup("/tmp/k8s-sim-XXXXXX");
                if (!mkdtemp(s->dir)) {
                        r = -errno;
                        free(s->dir);
                        s->dir = NULL;
                        goto fail;
                }
                s->own_dir = true;
        }
        s->ca_file = path_in(s, "ca.crt");
        s->token_file = path_in(s, "token");
        if ((r = make_certs(s)) < 0 || (r = write_file(s->token_file, s->token, 0600)) < 0) goto fail;

        errno = 0;
        s->daemon = daemon_start(s, 0);
        if (!s->daemon) {
                r = errno ? -errno : -EIO;
                goto fail;
        }
        const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
        s->port = info ? info->port : 0;
        *ret = s;
        return 0;
fail:
        k8s_sim_stop(s);
        return r;
}

struct k8s_sim *k8s_sim_stop(struct k8s_sim *s) {
        if (!s) return NULL;
        pthread_mutex_lock(&s->lock);
        s->stopping = true;
        pthread_cond_broadcast(&s->wake);
        pthread_mutex_unlock(&s->lock);
        if (s->daemon) MHD_stop_daemon(s->daemon); /* joins every connection thread */
        if (s->hold >= 0) close(s->hold);
        pthread_cond_destroy(&s->wake);
        pthread_mutex_destroy(&s->lock);

        if (s->own_dir) {
                static const char *const files[] = { "ca.crt", "server.crt", "server.key", "token", "token.new" };
                for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
                        char *p = path_in(s, files[i]);
                        unlink(p);
                        free(p);
                }
                rmdir(s->dir);
        }
        for (size_t i = 0; i < s->n_nodes; i++) {
                free(s->nodes[i].name);
                cJSON_Delete(s->nodes[i].obj);
        }
        for (size_t i = 0; i < s->n_pods; i++) {
                free(s->pods[i].ns);
                free(s->pods[i].name);
                cJSON_Delete(s->pods[i].obj);
        }
        for (size_t i = 0; i < s->n_pdbs; i++) {
                free(s->pdbs[i].ns);
                free(s->pdbs[i].name);
                cJSON_Delete(s->pdbs[i].selector);
        }
        for (size_t i = 0; i < s->n_faults; i++) free(s->faults[i].prefix);
        for (size_t i = 0; i < s->n_counters; i++) {
                free(s->counters[i].method);
                free(s->counters[i].path);
        }
        for (size_t i = 0; i < EVENTS_MAX; i++) cJSON_Delete(s->events[i]);
        for (size_t i = 0; i < LOG_MAX; i++) free(s->log[i]);
        free(s->nodes);
        free(s->pods);
        free(s->pdbs);
        free(s->counters);
        free(s->dir);
        free(s->ca_file);
        free(s->token_file);
        free(s->cert_pem);
        free(s->key_pem);
        free(s->token);
        free(s);
        return NULL;
}

void k8s_sim_url(const struct k8s_sim *s, char *buf, size_t len) {
        snprintf(buf, len, "https://127.0.0.1:%u", (unsigned)s->port);
}
uint16_t k8s_sim_port(const struct k8s_sim *s) { return s->port; }
const char *k8s_sim_ca_file(const struct k8s_sim *s) { return s->ca_file; }
const char *k8s_sim_token_file(const struct k8s_sim *s) { return s->token_file; }

#define LOCKED(s, ...) do { pthread_mutex_lock(&(s)->lock); __VA_ARGS__; \
                            pthread_mutex_unlock(&(s)->lock); } while (0)

void k8s_sim_rotate_token(struct k8s_sim *s, const char *token) {
        char *tmp = path_in(s, "token.new");
        pthread_mutex_lock(&s->lock);
        free(s->token);
        s->token = xstrdup(token);
        /* Swapped in atomically, as kubelet swaps projected tokens: a reader
         * never sees a half-written file. */
        if (write_file(tmp, token, 0600) == 0) rename(tmp, s->token_file);
        pthread_mutex_unlock(&s->lock);
        free(tmp);
}

/* ---- objects from the test ---- */

void k8s_sim_add_node(struct k8s_sim *s, const char *name, const char *labels) {
        char uid[37], ts[32];
        cJSON *o = cJSON_CreateObject(), *md;
        new_uid(uid);
        fmt_time(time(NULL), ts);
        cJSON_AddStringToObject(o, "apiVersion", "v1");
        cJSON_AddStringToObject(o, "kind", "Node");
        md = cJSON_AddObjectToObject(o, "metadata");
        cJSON_AddStringToObject(md, "name", name);
        cJSON_AddStringToObject(md, "uid", uid);
        cJSON_AddStringToObject(md, "resourceVersion", "");
        cJSON_AddStringToObject(md, "creationTimestamp", ts);
        cJSON_AddItemToObject(md, "labels", parse_labels(labels));
        cJSON_AddObjectToObject(md, "annotations");
        cJSON_AddObjectToObject(o, "spec");
        cJSON_AddObjectToObject(o, "status");
        pthread_mutex_lock(&s->lock);
        set_rv(s, o);
        struct node *n = find_node(s, name);
        if (n) { /* a re-added node replaces the old one */
                cJSON_Delete(n->obj);
                n->obj = o;
        } else {
                s->nodes = xrealloc(s->nodes, (s->n_nodes + 1) * sizeof *s->nodes);
                s->nodes[s->n_nodes++] = (struct node){ .name = xstrdup(name), .obj = o };
        }
        pthread_mutex_unlock(&s->lock);
}

void k8s_sim_add_pod(struct k8s_sim *s, const char *ns, const char *name, const char *node,
                     const char *labels, unsigned grace_seconds, const char *owner_kind) {
        char uid[37], ts[32], ip[24];
        cJSON *o = cJSON_CreateObject(), *md, *spec, *st, *ctr;
        new_uid(uid);
        fmt_time(time(NULL), ts);
        cJSON_AddStringToObject(o, "apiVersion", "v1");
        cJSON_AddStringToObject(o, "kind", "Pod");
        md = cJSON_AddObjectToObject(o, "metadata");
        cJSON_AddStringToObject(md, "name", name);
        cJSON_AddStringToObject(md, "namespace", ns);
        cJSON_AddStringToObject(md, "uid", uid);
        cJSON_AddStringToObject(md, "resourceVersion", "");
        cJSON_AddStringToObject(md, "creationTimestamp", ts);
        cJSON_AddItemToObject(md, "labels", parse_labels(labels));
        if (owner_kind) {
                /* The controller's name: the pod's without its random suffix. */
                const char *dash = strrchr(name, '-');
                char *owner = dash && dash != name ? strndup(name, (size_t)(dash - name)) : xstrdup(name);
                char ouid[37];
                cJSON *ref = cJSON_CreateObject();
                new_uid(ouid);
                cJSON_AddStringToObject(ref, "apiVersion",
                                        strcmp(owner_kind, "Job") == 0 ? "batch/v1" :
                                        strcmp(owner_kind, "ReplicationController") == 0 ? "v1" : "apps/v1");
                cJSON_AddStringToObject(ref, "kind", owner_kind);
                cJSON_AddStringToObject(ref, "name", owner);
                cJSON_AddStringToObject(ref, "uid", ouid);
                cJSON_AddBoolToObject(ref, "controller", true);
                cJSON_AddBoolToObject(ref, "blockOwnerDeletion", true);
                cJSON_AddItemToArray(cJSON_AddArrayToObject(md, "ownerReferences"), ref);
                free(owner);
        }
        spec = cJSON_AddObjectToObject(o, "spec");
        cJSON_AddStringToObject(spec, "nodeName", node);
        cJSON_AddNumberToObject(spec, "terminationGracePeriodSeconds", grace_seconds);
        ctr = cJSON_CreateObject();
        cJSON_AddStringToObject(ctr, "name", "main");
        cJSON_AddStringToObject(ctr, "image", "x");
        cJSON_AddItemToArray(cJSON_AddArrayToObject(spec, "containers"), ctr);
        st = cJSON_AddObjectToObject(o, "status");
        cJSON_AddStringToObject(st, "phase", "Running");

        pthread_mutex_lock(&s->lock);
        unsigned n = s->n_ips++;
        snprintf(ip, sizeof ip, "10.0.%u.%u", (n / 254) % 256, n % 254 + 1);
        cJSON_AddStringToObject(st, "podIP", ip);
        set_rv(s, o);
        struct pod *p = find_pod(s, ns, name);
        if (p) { /* a replacement: new uid, same counters */
                cJSON_Delete(p->obj);
                p->obj = o;
                p->state = POD_RUNNING;
        } else {
                s->pods = xrealloc(s->pods, (s->n_pods + 1) * sizeof *s->pods);
                s->pods[s->n_pods++] = (struct pod){ .ns = xstrdup(ns), .name = xstrdup(name), .obj = o };
        }
        pthread_mutex_unlock(&s->lock);
}

void k8s_sim_add_pdb(struct k8s_sim *s, const char *ns, const char *name, const char *labels,
                     uint32_t blocked_ms) {
        struct pdb b = { .ns = xstrdup(ns), .name = xstrdup(name), .selector = parse_labels(labels) };
        b.until = blocked_ms == 0 ? UINT64_MAX : blocked_ms == UINT32_MAX ? 0
                                                : mono() + blocked_ms * USEC_PER_MSEC;
        pthread_mutex_lock(&s->lock);
        s->pdbs = xrealloc(s->pdbs, (s->n_pdbs + 1) * sizeof *s->pdbs);
        s->pdbs[s->n_pdbs++] = b;
        pthread_mutex_unlock(&s->lock);
}

char *k8s_sim_node_json(struct k8s_sim *s, const char *name) {
        char *r = NULL;
        pthread_mutex_lock(&s->lock);
        struct node *n = find_node(s, name);
        if (n) r = cJSON_PrintUnformatted(n->obj);
        pthread_mutex_unlock(&s->lock);
        return r;
}

void k8s_sim_set_unschedulable(struct k8s_sim *s, const char *node, bool v) {
        pthread_mutex_lock(&s->lock);
        struct node *n = find_node(s, node);
        if (n) {
                cJSON *spec = jobj(n->obj, "spec");
                if (v) /* as kubectl cordon / uncordon: false is a removed field */
                        jset(spec, "unschedulable", cJSON_CreateTrue());
                else
                        cJSON_DeleteItemFromObjectCaseSensitive(spec, "unschedulable");
                set_rv(s, n->obj);
        }
        pthread_mutex_unlock(&s->lock);
}

void k8s_sim_pod_exited(struct k8s_sim *s, const char *ns, const char *name) {
        LOCKED(s, struct pod *p = find_pod(s, ns, name);
               if (p && p->state == POD_TERMINATING) {
                       p->state = POD_GONE;
                       s->rv++; /* the deletion is a write */
               });
}

void k8s_sim_set_pod_ip(struct k8s_sim *s, const char *ns, const char *name, const char *ip) {
        LOCKED(s, struct pod *p = find_pod(s, ns, name);
               if (p) {
                       jset(jobj(p->obj, "status"), "podIP", cJSON_CreateString(ip));
                       set_rv(s, p->obj);
               });
}

/* ---- counters ---- */

int k8s_sim_pod_state(struct k8s_sim *s, const char *ns, const char *name) {
        int r;
        LOCKED(s, struct pod *p = find_pod(s, ns, name); r = p ? p->state : -1);
        return r;
}

#define POD_COUNTER(fn, field)                                                          \
        unsigned fn(struct k8s_sim *s, const char *ns, const char *name) {              \
                unsigned r;                                                             \
                LOCKED(s, struct pod *p = find_pod(s, ns, name); r = p ? p->field : 0); \
                return r;                                                               \
        }
POD_COUNTER(k8s_sim_evictions, evictions)
POD_COUNTER(k8s_sim_eviction_attempts, attempts)
POD_COUNTER(k8s_sim_deletes, deletes)

unsigned k8s_sim_events(struct k8s_sim *s, const char *reason) {
        unsigned n = 0;
        pthread_mutex_lock(&s->lock);
        for (size_t i = 0; i < EVENTS_MAX && i < s->n_events; i++)
                if (!reason || strcmp(jstr(jget(s->events[i], "reason")), reason) == 0) n++;
        pthread_mutex_unlock(&s->lock);
        return n;
}

void k8s_sim_fault(struct k8s_sim *s, const char *prefix, int status, unsigned arg, unsigned count) {
        const char *pre = prefix ? prefix : "";
        pthread_mutex_lock(&s->lock);
        size_t i;
        for (i = 0; i < s->n_faults; i++)
                if (strcmp(s->faults[i].prefix, pre) == 0) break;
        if (i < s->n_faults) { /* replaces the fault on the same prefix */
                free(s->faults[i].prefix);
                s->faults[i] = s->faults[--s->n_faults];
        }
        if (count && s->n_faults < FAULTS_MAX)
                s->faults[s->n_faults++] = (struct fault){ xstrdup(pre), status, arg, count };
        pthread_mutex_unlock(&s->lock);
}

void k8s_sim_conflict(struct k8s_sim *s, const char *node, unsigned count) {
        LOCKED(s, struct node *n = find_node(s, node); if (n) n->conflicts = count);
}

unsigned k8s_sim_requests(struct k8s_sim *s, const char *method, const char *path_prefix) {
        unsigned n = 0;
        pthread_mutex_lock(&s->lock);
        for (size_t i = 0; i < s->n_counters; i++) {
                const struct counter *c = &s->counters[i];
                if ((!method || strcmp(c->method, method) == 0) &&
                    (!path_prefix || strncmp(c->path, path_prefix, strlen(path_prefix)) == 0))
                        n += c->n;
        }
        pthread_mutex_unlock(&s->lock);
        return n;
}

#define COUNTER(fn, field) \
        unsigned fn(struct k8s_sim *s) { unsigned n; LOCKED(s, n = s->field); return n; }
COUNTER(k8s_sim_unauthorized, n_unauth)
COUNTER(k8s_sim_cluster_wide_pod_lists, n_cluster_lists)
COUNTER(k8s_sim_connections, n_conn)

void k8s_sim_eviction_window(struct k8s_sim *s, uint64_t *first, uint64_t *last) {
        LOCKED(s, *first = s->evict_first; *last = s->evict_last);
}

char *k8s_sim_log(struct k8s_sim *s) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        if (!f) abort();
        pthread_mutex_lock(&s->lock);
        size_t n = s->n_log < LOG_MAX ? s->n_log : LOG_MAX;
        for (size_t i = s->n_log - n; i < s->n_log; i++) fprintf(f, "%s\n", s->log[i % LOG_MAX]);
        pthread_mutex_unlock(&s->lock);
        fclose(f);
        return buf;
}

void k8s_sim_set_terminate_hook(struct k8s_sim *s, k8s_sim_terminate_hook_t fn, void *userdata) {
        pthread_mutex_lock(&s->lock);
        s->hook = fn;
        s->hook_ud = userdata;
        pthread_mutex_unlock(&s->lock);
}

void k8s_sim_set_pod_annotation(struct k8s_sim *s, const char *ns, const char *name, const char *key, const char *value) {
        pthread_mutex_lock(&s->lock);
        struct pod *p = find_pod(s, ns, name);
        if (p) {
                cJSON *md = jobj(p->obj, "metadata");
                cJSON *a = cJSON_GetObjectItemCaseSensitive(md, "annotations");
                if (!a)
                        a = cJSON_AddObjectToObject(md, "annotations");
                cJSON_DeleteItemFromObjectCaseSensitive(a, key);
                cJSON_AddStringToObject(a, key, value);
                set_rv(s, p->obj);
        }
        pthread_mutex_unlock(&s->lock);
}

void k8s_sim_pod_ip(struct k8s_sim *s, const char *ns, const char *name, char *buf, size_t len) {
        pthread_mutex_lock(&s->lock);
        struct pod *p = find_pod(s, ns, name);
        const char *ip = p ? cJSON_GetStringValue(jget(p->obj, "status", "podIP")) : NULL;
        snprintf(buf, len, "%s", ip ? ip : "");
        pthread_mutex_unlock(&s->lock);
}

char *k8s_sim_events_json(struct k8s_sim *s) {
        cJSON *arr = cJSON_CreateArray();
        pthread_mutex_lock(&s->lock);
        for (size_t i = 0; arr && i < EVENTS_MAX && i < s->n_events; i++)
                cJSON_AddItemToArray(arr, cJSON_Duplicate(s->events[i], true));
        pthread_mutex_unlock(&s->lock);
        char *text = arr ? cJSON_PrintUnformatted(arr) : NULL;
        cJSON_Delete(arr);
        return text ? text : strdup("[]");
}

/* ---- what spotd must never do ---- */

void k8s_sim_ignore_field_selector(struct k8s_sim *s, bool ignore) {
        LOCKED(s, s->ignore_field_selector = ignore);
}

void k8s_sim_replace_after_list(struct k8s_sim *s, const char *ns, const char *name) {
        LOCKED(s, struct pod *p = find_pod(s, ns, name); if (p) p->replace_after_list = true);
}

void k8s_sim_set_pod_phase(struct k8s_sim *s, const char *ns, const char *name, const char *phase) {
        pthread_mutex_lock(&s->lock);
        struct pod *p = find_pod(s, ns, name);
        if (p) {
                jset(jobj(p->obj, "status"), "phase", cJSON_CreateString(phase));
                set_rv(s, p->obj);
        }
        pthread_mutex_unlock(&s->lock);
}

void k8s_sim_add_node_taint(struct k8s_sim *s, const char *node, const char *key, const char *value, const char *effect) {
        pthread_mutex_lock(&s->lock);
        struct node *n = find_node(s, node);
        if (n) {
                cJSON *spec = jobj(n->obj, "spec"), *taints = cJSON_GetObjectItemCaseSensitive(spec, "taints");
                cJSON *t = cJSON_CreateObject();
                if (!cJSON_IsArray(taints))
                        taints = cJSON_AddArrayToObject(spec, "taints");
                cJSON_AddStringToObject(t, "key", key);
                if (value)
                        cJSON_AddStringToObject(t, "value", value);
                cJSON_AddStringToObject(t, "effect", effect);
                cJSON_AddItemToArray(taints, t);
                set_rv(s, n->obj);
        }
        pthread_mutex_unlock(&s->lock);
}

uint64_t k8s_sim_eviction_min_gap(struct k8s_sim *s, const char *ns, const char *name) {
        uint64_t r;
        LOCKED(s, struct pod *p = find_pod(s, ns, name); r = p && p->attempts > 1 ? p->min_gap : UINT64_MAX);
        return r;
}
