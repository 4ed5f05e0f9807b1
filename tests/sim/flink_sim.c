/* Flink JobManager REST simulator (see flink_sim.h).
 *
 * One MHD daemon per simulator, thread per connection; every request is
 * handled under s->lock (handling is short). Time is lazy: no timer thread,
 * whoever looks first (a request or an observation) runs advance(), which
 * replays each job's due events (checkpoint completions, restart ends,
 * delayed rescales) at their own timestamps, so a late look sees the same
 * history as a timely one.
 *
 * Strictness is the point. At start the OpenAPI spec of the simulated
 * major.minor is loaded with libyaml into a small model (path templates,
 * methods, parameters, request and response schemas with $refs resolved by
 * pointer, so recursive schemas cost nothing), and each request is checked
 * against it before any behaviour runs: unknown path 404, method 405, a bad
 * path or query parameter, a body that is not JSON or does not match the
 * schema (types, integers integral, enums, required fields, unknown fields:
 * Flink's Jackson mapper fails on those) 400. Those are the violations
 * counted by flink_sim_violations(). Flink's own semantic checks (every
 * vertex listed, bounds, INCREMENTAL) follow as plain 400s. Our own 2xx
 * answers are checked against the response schema too (flink_sim_bad_answers)
 * so the simulator cannot drift from the version it claims to be.
 *
 * Where the simulator is simpler than Flink:
 *  - stricter than Jackson on scalars: "2" or 2.5 for an int is rejected
 *    (Jackson coerces), so spotd cannot come to rely on coercion;
 *  - no slot placement: a job restarts after a TaskManager loss when the
 *    slots left no longer cover what the running jobs hold (in order of
 *    addition); jobs fit in that order, each slot-sharing group scaled in
 *    proportion to its want;
 *  - a restarting job holds no slots; its parallelism is decided when the
 *    restart ends, from the slots free then; with too few it stays
 *    RESTARTING until a TaskManager registers (Flink: waiting for resources);
 *  - the cooldown (1.19+) counts from the end of the last rescale; 2.x also
 *    waits for a checkpoint that completes after the PUT and the cooldown
 *    (no rescale-trigger.max-delay);
 *  - checkpoints only happen when triggered over REST; the plan has no nodes. */
#include "flink_sim.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <yaml.h>

#ifndef FLINK_SPEC_DIR
#define FLINK_SPEC_DIR "tests/sim/flink-specs"
#endif

#define BODY_MAX      (1024 * 1024)
#define LOG_MAX       2000
#define SEGS_MAX      16
#define FAULTS_MAX    16
#define OVERSIZED_DEF (16 * 1024 * 1024) /* twice spotd's 8 MiB cap */
#define USEC_PER_MSEC 1000ULL
#define USEC_PER_SEC  1000000ULL

/* ---- small helpers ---- */

static uint64_t clock_usec(clockid_t id) {
        struct timespec ts;
        clock_gettime(id, &ts);
        return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000;
}
static uint64_t mono(void) { return clock_usec(CLOCK_MONOTONIC); }

static void *xcalloc(size_t n, size_t size) {
        void *p = calloc(n ? n : 1, size ? size : 1);
        if (!p) abort(); /* a test tool: out of memory is not a case to handle */
        return p;
}

static void *xrealloc(void *p, size_t n) {
        p = realloc(p, n);
        if (!p) abort();
        return p;
}

static char *xstrdup(const char *p) {
        char *r = strdup(p ? p : "");
        if (!r) abort();
        return r;
}

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...) {
        va_list ap;
        char *r;
        va_start(ap, fmt);
        int n = vasprintf(&r, fmt, ap);
        va_end(ap);
        if (n < 0) abort();
        return r;
}

static bool is_hex32(const char *p) { return strlen(p) == 32 && strspn(p, "0123456789abcdef") == 32; }

/* ---- the spec model ---- */

enum stype { T_ANY, T_OBJECT, T_ARRAY, T_STRING, T_INTEGER, T_NUMBER, T_BOOLEAN };

struct prop {
        const char *name;
        struct schema *s;
};

/* Strings point into the YAML document, which lives as long as the model. */
struct schema {
        const char *name; /* components/schemas key; NULL when inline */
        const char *format, *pattern;
        enum stype type;
        struct prop *props;
        size_t n_props;
        const char **required, **enums;
        size_t n_required, n_enums;
        struct schema *items, *additional; /* additional: additionalProperties as a schema */
        bool closed;                       /* additionalProperties: false */
        struct schema **any_of, **all_of;  /* any_of: oneOf or anyOf, at least one must hold */
        size_t n_any_of, n_all_of;
};

struct param {
        const char *name, *in; /* in: "path", "query" ("header" is not checked) */
        bool required;
        struct schema *s;
};

struct op {
        const char *method; /* "GET" */
        struct param *params;
        size_t n_params;
        bool has_body, body_json, body_required;
        struct schema *body, *resp; /* resp: of the first 2xx answer */
};

struct route {
        const char *tmpl; /* "/jobs/{jobid}/checkpoints" */
        char **segs;      /* "jobs", "{jobid}", "checkpoints" */
        size_t n_segs;
        struct op ops[8];
        size_t n_ops;
};

struct spec {
        yaml_document_t doc;
        bool loaded, broken;
        struct route *routes;
        size_t n_routes;
        struct schema **named;
        size_t n_named;
        void **blocks; /* every allocation of the model, freed together */
        size_t n_blocks, cap_blocks;
};

static void *arena(struct spec *sp, size_t n) {
        if (sp->n_blocks == sp->cap_blocks) {
                sp->cap_blocks = sp->cap_blocks ? 2 * sp->cap_blocks : 256;
                sp->blocks = xrealloc(sp->blocks, sp->cap_blocks * sizeof *sp->blocks);
        }
        return sp->blocks[sp->n_blocks++] = xcalloc(1, n);
}

static yaml_node_t *ynode(struct spec *sp, int i) { return yaml_document_get_node(&sp->doc, i); }

static const char *yscalar(const yaml_node_t *n) {
        return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static size_t ycount(const yaml_node_t *n, yaml_node_type_t type) {
        if (!n || n->type != type) return 0;
        if (type == YAML_MAPPING_NODE) return (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
        return (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
}

/* The i-th key and value of a mapping. */
static yaml_node_t *ypair(struct spec *sp, const yaml_node_t *n, size_t i, const char **key) {
        yaml_node_pair_t *p = &n->data.mapping.pairs.start[i];
        *key = yscalar(ynode(sp, p->key));
        return ynode(sp, p->value);
}

static yaml_node_t *yitem(struct spec *sp, const yaml_node_t *n, size_t i) {
        return ynode(sp, n->data.sequence.items.start[i]);
}

static yaml_node_t *yget(struct spec *sp, const yaml_node_t *n, const char *key) {
        const char *k;
        for (size_t i = 0; i < ycount(n, YAML_MAPPING_NODE); i++) {
                yaml_node_t *v = ypair(sp, n, i, &k);
                if (k && strcmp(k, key) == 0) return v;
        }
        return NULL;
}

static bool ytrue(const yaml_node_t *n) { return yscalar(n) && strcmp(yscalar(n), "true") == 0; }

static struct schema *schema_named(const struct spec *sp, const char *name) {
        for (size_t i = 0; i < sp->n_named; i++)
                if (strcmp(sp->named[i]->name, name) == 0) return sp->named[i];
        return NULL;
}

static struct schema *schema_ref(struct spec *sp, const char *ref) {
        static const char prefix[] = "#/components/schemas/";
        struct schema *r = strncmp(ref, prefix, sizeof prefix - 1) == 0 ? schema_named(sp, ref + sizeof prefix - 1)
                                                                       : NULL;
        if (!r) {
                fprintf(stderr, "flink-sim: unresolved $ref %s\n", ref);
                sp->broken = true;
        }
        return r;
}

static struct schema *schema_of(struct spec *sp, const yaml_node_t *n);

static const char **scalar_list(struct spec *sp, const yaml_node_t *seq, size_t *ret_n) {
        *ret_n = ycount(seq, YAML_SEQUENCE_NODE);
        const char **r = arena(sp, *ret_n * sizeof *r);
        for (size_t i = 0; i < *ret_n; i++) r[i] = yscalar(yitem(sp, seq, i));
        return r;
}

static struct schema **schema_list(struct spec *sp, const yaml_node_t *seq, size_t *ret_n) {
        *ret_n = ycount(seq, YAML_SEQUENCE_NODE);
        struct schema **r = arena(sp, *ret_n * sizeof *r);
        for (size_t i = 0; i < *ret_n; i++) r[i] = schema_of(sp, yitem(sp, seq, i));
        return r;
}

static void schema_fill(struct spec *sp, struct schema *sc, const yaml_node_t *n) {
        static const char *const types[] = { [T_OBJECT] = "object", [T_ARRAY] = "array",
                                             [T_STRING] = "string", [T_INTEGER] = "integer",
                                             [T_NUMBER] = "number", [T_BOOLEAN] = "boolean" };
        const char *t = yscalar(yget(sp, n, "type")), *ref = yscalar(yget(sp, n, "$ref"));
        yaml_node_t *x;
        for (size_t i = T_OBJECT; t && i < sizeof types / sizeof *types; i++)
                if (strcmp(t, types[i]) == 0) sc->type = (enum stype)i;
        sc->format = yscalar(yget(sp, n, "format"));
        sc->pattern = yscalar(yget(sp, n, "pattern"));
        sc->enums = scalar_list(sp, yget(sp, n, "enum"), &sc->n_enums);
        sc->required = scalar_list(sp, yget(sp, n, "required"), &sc->n_required);
        x = yget(sp, n, "properties");
        sc->n_props = ycount(x, YAML_MAPPING_NODE);
        sc->props = arena(sp, sc->n_props * sizeof *sc->props);
        for (size_t i = 0; i < sc->n_props; i++)
                sc->props[i].s = schema_of(sp, ypair(sp, x, i, &sc->props[i].name));
        sc->items = schema_of(sp, yget(sp, n, "items"));
        if ((x = yget(sp, n, "additionalProperties")) && x->type == YAML_SCALAR_NODE)
                sc->closed = strcmp(yscalar(x), "false") == 0;
        else
                sc->additional = schema_of(sp, x);
        if (!(x = yget(sp, n, "oneOf"))) x = yget(sp, n, "anyOf");
        sc->any_of = schema_list(sp, x, &sc->n_any_of);
        sc->all_of = schema_list(sp, yget(sp, n, "allOf"), &sc->n_all_of);
        if (ref && !sc->n_all_of) { /* a named schema that is only an alias */
                sc->all_of = arena(sp, sizeof *sc->all_of);
                sc->all_of[sc->n_all_of++] = schema_ref(sp, ref);
        }
}

/* A $ref resolves to the named schema itself (filled or not yet). */
static struct schema *schema_of(struct spec *sp, const yaml_node_t *n) {
        const char *ref = yscalar(yget(sp, n, "$ref"));
        if (ref) return schema_ref(sp, ref);
        if (!n || n->type != YAML_MAPPING_NODE) return NULL;
        struct schema *sc = arena(sp, sizeof *sc);
        schema_fill(sp, sc, n);
        return sc;
}

static void op_load(struct spec *sp, struct op *op, const yaml_node_t *n) {
        const yaml_node_t *ps = yget(sp, n, "parameters"), *x;
        op->n_params = ycount(ps, YAML_SEQUENCE_NODE);
        op->params = arena(sp, op->n_params * sizeof *op->params);
        for (size_t i = 0; i < op->n_params; i++) {
                const yaml_node_t *p = yitem(sp, ps, i);
                op->params[i] = (struct param){ .name = yscalar(yget(sp, p, "name")),
                                                .in = yscalar(yget(sp, p, "in")),
                                                .required = ytrue(yget(sp, p, "required")),
                                                .s = schema_of(sp, yget(sp, p, "schema")) };
                if (!op->params[i].name || !op->params[i].in) sp->broken = true;
        }
        if ((x = yget(sp, n, "requestBody"))) {
                const yaml_node_t *json = yget(sp, yget(sp, x, "content"), "application/json");
                op->has_body = true;
                op->body_required = ytrue(yget(sp, x, "required"));
                op->body_json = json; /* multipart uploads are not checked */
                op->body = schema_of(sp, yget(sp, json, "schema"));
        }
        x = yget(sp, n, "responses");
        for (size_t i = 0; i < ycount(x, YAML_MAPPING_NODE); i++) {
                const char *code;
                const yaml_node_t *r = ypair(sp, x, i, &code);
                if (code && code[0] == '2') {
                        r = yget(sp, yget(sp, yget(sp, r, "content"), "application/json"), "schema");
                        op->resp = schema_of(sp, r);
                        break;
                }
        }
}

static int spec_load(struct spec *sp, const char *file) {
        static const char *const methods[] = { "get", "put", "post", "delete", "patch", "head", "options" };
        static const char *const METHODS[] = { "GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS" };
        FILE *f = fopen(file, "re");
        if (!f) return -errno;
        yaml_parser_t p;
        yaml_parser_initialize(&p);
        yaml_parser_set_input_file(&p, f);
        sp->loaded = yaml_parser_load(&p, &sp->doc);
        if (!sp->loaded)
                fprintf(stderr, "flink-sim: %s:%zu: %s\n", file, p.problem_mark.line + 1,
                        p.problem ? p.problem : "cannot parse");
        yaml_parser_delete(&p);
        fclose(f);
        if (!sp->loaded) return -EINVAL;

        const yaml_node_t *root = yaml_document_get_root_node(&sp->doc);
        const yaml_node_t *schemas = yget(sp, yget(sp, root, "components"), "schemas");
        const yaml_node_t *paths = yget(sp, root, "paths");
        /* All names first, so a $ref can point at a schema not filled yet. */
        sp->n_named = ycount(schemas, YAML_MAPPING_NODE);
        sp->named = arena(sp, sp->n_named * sizeof *sp->named);
        for (size_t i = 0; i < sp->n_named; i++) {
                sp->named[i] = arena(sp, sizeof **sp->named);
                ypair(sp, schemas, i, &sp->named[i]->name);
                if (!sp->named[i]->name) return -EINVAL;
        }
        for (size_t i = 0; i < sp->n_named; i++) {
                const char *name;
                schema_fill(sp, sp->named[i], ypair(sp, schemas, i, &name));
        }

        sp->n_routes = ycount(paths, YAML_MAPPING_NODE);
        if (!sp->n_routes) return -EINVAL;
        sp->routes = arena(sp, sp->n_routes * sizeof *sp->routes);
        for (size_t i = 0; i < sp->n_routes; i++) {
                struct route *r = &sp->routes[i];
                const yaml_node_t *item = ypair(sp, paths, i, &r->tmpl);
                if (!r->tmpl || r->tmpl[0] != '/') return -EINVAL;
                char *copy = strcpy(arena(sp, strlen(r->tmpl) + 1), r->tmpl), *save = NULL;
                r->segs = arena(sp, (strlen(copy) / 2 + 1) * sizeof *r->segs); /* at most that many */
                for (char *seg = strtok_r(copy, "/", &save); seg; seg = strtok_r(NULL, "/", &save))
                        r->segs[r->n_segs++] = seg;
                for (size_t k = 0; k < ycount(item, YAML_MAPPING_NODE); k++) {
                        const char *m;
                        const yaml_node_t *opn = ypair(sp, item, k, &m);
                        for (size_t x = 0; m && x < sizeof methods / sizeof *methods; x++)
                                if (strcmp(m, methods[x]) == 0 && r->n_ops < sizeof r->ops / sizeof *r->ops) {
                                        r->ops[r->n_ops].method = METHODS[x];
                                        op_load(sp, &r->ops[r->n_ops++], opn);
                                }
                }
        }
        return sp->broken ? -EINVAL : 0;
}

static void spec_free(struct spec *sp) {
        if (sp->loaded) yaml_document_delete(&sp->doc);
        for (size_t i = 0; i < sp->n_blocks; i++) free(sp->blocks[i]);
        free(sp->blocks);
}

/* A literal segment beats a {parameter}, as in Flink's router: /jobs/overview
 * is not the job "overview". */
static const struct route *route_find(const struct spec *sp, char **segs, size_t n) {
        const struct route *best = NULL;
        size_t best_lit = 0;
        for (size_t i = 0; i < sp->n_routes; i++) {
                const struct route *r = &sp->routes[i];
                size_t lit = 0, k;
                if (r->n_segs != n) continue;
                for (k = 0; k < n; k++) {
                        if (r->segs[k][0] == '{') {
                                if (!segs[k][0]) break; /* a parameter is never empty */
                                continue;
                        }
                        if (strcmp(r->segs[k], segs[k]) != 0) break;
                        lit++;
                }
                if (k == n && (!best || lit > best_lit)) best = r, best_lit = lit;
        }
        return best;
}

/* ---- validation ---- */

struct vctx {
        char path[192]; /* where we are: "body.ab12...parallelism.lowerBound" */
        char err[512];
};

static bool verr(struct vctx *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool verr(struct vctx *v, const char *fmt, ...) {
        char msg[256];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        snprintf(v->err, sizeof v->err, "%s: %s", v->path, msg);
        return false;
}

static bool named_(const struct schema *sc, const char *name) { return sc->name && strcmp(sc->name, name) == 0; }

static bool in_enum(const struct schema *sc, const char *v) {
        for (size_t i = 0; i < sc->n_enums; i++)
                if (sc->enums[i] && strcmp(sc->enums[i], v) == 0) return true;
        return !sc->n_enums;
}

/* Every pattern in Flink's specs is "[class]{n}" (ids): matched whole, since
 * Flink parses the whole id. Anything else is not checked. */
static bool pattern_ok(const char *pat, const char *v) {
        const char *close = strchr(pat, ']');
        unsigned n;
        if (pat[0] != '[' || !close || sscanf(close + 1, "{%u}", &n) != 1) return true;
        if (strlen(v) != n) return false;
        for (; *v; v++) {
                bool in = false;
                for (const char *c = pat + 1; c < close; c++)
                        if (c + 2 < close && c[1] == '-') {
                                in |= *v >= c[0] && *v <= c[2];
                                c += 2;
                        } else
                                in |= *v == *c;
                if (!in) return false;
        }
        return true;
}

/* The known flaw of the specs (protocols.md): a TaskManager id is described
 * as 32 hex chars, but in native Kubernetes mode it is the pod name. */
static bool pattern_checked(const struct schema *sc) { return sc->pattern && !named_(sc, "ResourceID"); }

static bool string_ok(struct vctx *v, const struct schema *sc, const char *s) {
        if (!in_enum(sc, s)) return verr(v, "\"%s\" is not one of the allowed values", s);
        if (pattern_checked(sc) && !pattern_ok(sc->pattern, s))
                return verr(v, "\"%s\" does not match %s", s, sc->pattern);
        return true;
}

/* A path or query parameter value. */
static bool text_ok(struct vctx *v, const struct schema *sc, const char *s) {
        char *end;
        if (!sc) return true;
        errno = 0;
        switch (sc->type) {
        case T_INTEGER:
                (void)strtoll(s, &end, 10);
                if (!*s || *end || errno) return verr(v, "\"%s\" is not an integer", s);
                return true;
        case T_NUMBER:
                (void)strtod(s, &end);
                if (!*s || *end || errno) return verr(v, "\"%s\" is not a number", s);
                return true;
        case T_BOOLEAN:
                if (strcmp(s, "true") != 0 && strcmp(s, "false") != 0) return verr(v, "\"%s\" is not a boolean", s);
                return true;
        default:
                return string_ok(v, sc, s);
        }
}

static const struct prop *own_prop(const struct schema *sc, const char *key) {
        for (size_t i = 0; i < sc->n_props; i++)
                if (strcmp(sc->props[i].name, key) == 0) return &sc->props[i];
        return NULL;
}

static bool knows(const struct schema *sc, const char *key) {
        if (own_prop(sc, key)) return true;
        for (size_t i = 0; i < sc->n_all_of; i++)
                if (sc->all_of[i] && knows(sc->all_of[i], key)) return true;
        return false;
}

static bool has_props(const struct schema *sc) {
        if (sc->n_props) return true;
        for (size_t i = 0; i < sc->n_all_of; i++)
                if (sc->all_of[i] && has_props(sc->all_of[i])) return true;
        return false;
}

static bool validate(struct vctx *v, bool response, const struct schema *sc, const cJSON *j, bool open);

static bool validate_child(struct vctx *v, bool response, const struct schema *sc, const cJSON *j,
                           const char *key, int idx) {
        size_t len = strlen(v->path);
        if (key)
                snprintf(v->path + len, sizeof v->path - len, ".%s", key);
        else
                snprintf(v->path + len, sizeof v->path - len, "[%d]", idx);
        bool ok = validate(v, response, sc, j, false);
        v->path[len] = 0;
        return ok;
}

/* open: checked as a member of an allOf, whose owner knows the other fields.
 * response: our own answer, where Flink writes nulls (latest.completed). */
static bool validate(struct vctx *v, bool response, const struct schema *sc, const cJSON *j, bool open) {
        if (!sc) return true;
        if (cJSON_IsNull(j)) return response || verr(v, "null is not allowed");
        /* Spec flaw: Flink writes a slot sharing group id as a hex string. */
        if (named_(sc, "SlotSharingGroupId") && cJSON_IsString(j)) return true;
        for (size_t i = 0; i < sc->n_all_of; i++)
                if (!validate(v, response, sc->all_of[i], j, true)) return false;
        if (sc->n_any_of) {
                struct vctx first = *v, t;
                size_t i;
                for (i = 0; i < sc->n_any_of; i++) {
                        t = *v;
                        if (validate(&t, response, sc->any_of[i], j, false)) break;
                        if (i == 0) first = t;
                }
                if (i == sc->n_any_of) {
                        *v = first;
                        return false;
                }
        }

        switch (sc->type) {
        case T_OBJECT:
                if (!cJSON_IsObject(j)) return verr(v, "expected an object");
                break;
        case T_ARRAY:
                if (!cJSON_IsArray(j)) return verr(v, "expected an array");
                break;
        case T_STRING:
                if (!cJSON_IsString(j)) return verr(v, "expected a string");
                break;
        case T_BOOLEAN:
                if (!cJSON_IsBool(j)) return verr(v, "expected a boolean");
                break;
        case T_NUMBER:
                if (!cJSON_IsNumber(j)) return verr(v, "expected a number");
                break;
        case T_INTEGER: {
                bool i32 = sc->format && strcmp(sc->format, "int32") == 0;
                double lim = i32 ? 2147483647.0 : 9007199254740991.0, d = j->valuedouble;
                if (!cJSON_IsNumber(j) || d < -lim - 1 || d > lim || d != (double)(long long)d)
                        return verr(v, "expected an integer%s", i32 ? " (int32)" : "");
                break;
        }
        case T_ANY:
                break;
        }

        if (cJSON_IsString(j) && !string_ok(v, sc, j->valuestring)) return false;
        if (cJSON_IsArray(j) && sc->items) {
                const cJSON *c;
                int i = 0;
                cJSON_ArrayForEach(c, j)
                        if (!validate_child(v, response, sc->items, c, NULL, i++)) return false;
        }
        if (!cJSON_IsObject(j)) return true;
        for (size_t i = 0; i < sc->n_required; i++)
                if (sc->required[i] && !cJSON_GetObjectItemCaseSensitive(j, sc->required[i]))
                        return verr(v, "missing required field \"%s\"", sc->required[i]);
        /* Flink's mapper fails on unknown properties. Spec flaw: a serialized
         * throwable also carries "class" and "stack-trace". */
        bool strict = !open && (has_props(sc) || sc->closed) && !named_(sc, "SerializedThrowable");
        const cJSON *c;
        cJSON_ArrayForEach(c, j) {
                const struct prop *pr = own_prop(sc, c->string);
                if (pr || sc->additional) {
                        if (!validate_child(v, response, pr ? pr->s : sc->additional, c, c->string, 0)) return false;
                } else if (strict && !knows(sc, c->string))
                        return verr(v, "unknown field \"%s\"", c->string);
        }
        return true;
}

/* ---- the cluster ---- */

struct tmgr {
        char *id, *ip;
        unsigned slots;
};

struct vertex {
        char *id, *name, *ssg; /* ssg NULL: the "default" group */
        unsigned par, max_par, lower, upper;
        bool finished; /* every subtask FINISHED */
        bool unbounded; /* upperBound -1: up to max_par (upper holds max_par) */
};

struct trigger {
        char id[33];
        uint64_t done_at; /* monotonic usec when it completes (or fails) */
        uint64_t at_ms;   /* epoch ms of the trigger */
        unsigned ckpt_id;
        bool failed, done;
};

enum jstate { J_RUNNING, J_RESTARTING };

struct job {
        char *jid, *name;
        uint64_t start_ms; /* epoch */
        struct vertex *v;
        size_t n_v;
        enum jstate state;
        uint64_t restart_until;  /* monotonic usec; UINT64_MAX: waiting for slots */
        bool restart_is_rescale;
        uint64_t changed;        /* monotonic usec of the last state change */
        uint64_t restarted;      /* of the last restart start, 0: none */
        bool want_rescale;       /* bounds or slots changed since the last (re)start */
        uint64_t rescale_at;     /* not before */
        uint64_t last_rescale;   /* end of the last rescale, 0: none */
        struct trigger *tr;
        size_t n_tr;
        unsigned next_ckpt, n_completed, n_failed;
        bool has_ckpt;           /* the latest completed checkpoint: */
        unsigned ckpt_id;
        uint64_t ckpt_trigger_ms, ckpt_ack_ms;
        unsigned puts, restarts, rescales;
        uint64_t first_put;
};

struct flink_sim {
        struct MHD_Daemon *daemon;
        uint16_t port;
        pthread_mutex_t lock;

        struct spec spec;
        const struct schema *exec_states, *job_states; /* the spec's enums */
        char version[32];
        unsigned ver; /* major * 100 + minor */
        bool default_scheduler;
        char scheduler[32]; /* jobmanager.scheduler as configured */
        unsigned checkpoint_ms, restart_ms, cooldown_ms;
        uint64_t epoch_off; /* realtime - monotonic, usec */

        bool down;
        unsigned conflicts;
        struct fault { char *prefix; int status; unsigned arg, left; } faults[FAULTS_MAX];
        size_t n_faults;
        pthread_cond_t wake; /* broadcast on stop, to cut SLOW and DRIP faults short */
        bool stopping;
        struct tmgr *tms;
        size_t n_tms;
        struct job *jobs;
        size_t n_jobs;
        char *log[LOG_MAX]; /* ring, indexed by n_log % LOG_MAX */
        size_t n_log;
        unsigned violations, bad_answers;
        struct { char method[8]; unsigned status, n; } answers[64]; /* counted by method and status */
        size_t n_answers;
};

static uint64_t epoch_ms(const struct flink_sim *s, uint64_t t) { return (t + s->epoch_off) / 1000; }

static struct job *job_find(struct flink_sim *s, const char *jid) {
        for (size_t i = 0; jid && i < s->n_jobs; i++)
                if (strcmp(s->jobs[i].jid, jid) == 0) return &s->jobs[i];
        return NULL;
}

static struct vertex *vertex_find(struct job *j, const char *vid) {
        for (size_t i = 0; j && vid && i < j->n_v; i++)
                if (strcmp(j->v[i].id, vid) == 0) return &j->v[i];
        return NULL;
}

static const char *ssg(const struct vertex *v) { return v->ssg ? v->ssg : "default"; }

/* lead[i]: the first vertex of i's slot-sharing group. */
static void groups(const struct job *j, size_t *lead) {
        for (size_t a = 0; a < j->n_v; a++) {
                lead[a] = a;
                for (size_t b = 0; b < a; b++)
                        if (strcmp(ssg(&j->v[a]), ssg(&j->v[b])) == 0) {
                                lead[a] = lead[b];
                                break;
                        }
        }
}

/* Slots a running job holds: per slot-sharing group, its widest vertex. */
static unsigned held(const struct job *j) {
        if (j->state != J_RUNNING) return 0;
        size_t *lead = xcalloc(j->n_v, sizeof *lead);
        unsigned *max = xcalloc(j->n_v, sizeof *max), sum = 0;
        groups(j, lead);
        for (size_t a = 0; a < j->n_v; a++)
                if (j->v[a].par > max[lead[a]]) max[lead[a]] = j->v[a].par;
        for (size_t a = 0; a < j->n_v; a++) sum += max[a];
        free(lead);
        free(max);
        return sum;
}

static unsigned slots_total(const struct flink_sim *s) {
        unsigned n = 0;
        for (size_t i = 0; i < s->n_tms; i++) n += s->tms[i].slots;
        return n;
}

/* Slots not held by running jobs other than except. */
static unsigned slots_free(const struct flink_sim *s, const struct job *except) {
        unsigned total = slots_total(s), used = 0;
        for (size_t i = 0; i < s->n_jobs; i++)
                if (&s->jobs[i] != except) used += held(&s->jobs[i]);
        return used < total ? total - used : 0;
}

/* The parallelism the adaptive scheduler gives j with avail slots: every
 * vertex at its upper bound if that fits, else each slot-sharing group cut in
 * proportion to what it wants (at least 1). False: not one slot per group. */
static bool fit(const struct job *j, unsigned avail, unsigned *par) {
        size_t n = j->n_v, *lead = xcalloc(n, sizeof *lead);
        unsigned *want = xcalloc(n, sizeof *want), *share = xcalloc(n, sizeof *share);
        unsigned need = 0, n_groups = 0, used = 0;
        groups(j, lead);
        for (size_t a = 0; a < n; a++) {
                n_groups += lead[a] == a;
                if (j->v[a].upper > want[lead[a]]) want[lead[a]] = j->v[a].upper;
        }
        for (size_t a = 0; a < n; a++) need += want[a];
        bool ok = avail >= n_groups;
        if (ok) {
                for (size_t a = 0; a < n; a++) {
                        if (lead[a] != a) continue;
                        share[a] = need <= avail ? want[a] : (unsigned)((uint64_t)want[a] * avail / need);
                        if (!share[a]) share[a] = 1;
                        used += share[a];
                }
                /* "At least 1" can overshoot, flooring undershoots: settle on avail. */
                while (used > avail) {
                        size_t big = 0;
                        for (size_t a = 0; a < n; a++)
                                if (share[a] > share[big]) big = a;
                        share[big]--, used--;
                }
                for (size_t a = 0; a < n && used < avail; a++)
                        while (lead[a] == a && share[a] < want[a] && used < avail) share[a]++, used++;
                for (size_t a = 0; a < n; a++)
                        par[a] = j->v[a].upper < share[lead[a]] ? j->v[a].upper : share[lead[a]];
        }
        free(lead);
        free(want);
        free(share);
        return ok;
}

static void start_restart(struct flink_sim *s, struct job *j, uint64_t t, bool rescale) {
        j->state = J_RESTARTING;
        j->restart_until = t + s->restart_ms * USEC_PER_MSEC;
        j->restart_is_rescale = rescale;
        j->changed = j->restarted = t;
        if (rescale)
                j->rescales++;
        else
                j->restarts++;
        /* The tasks go away: checkpoints in flight cannot complete. */
        for (size_t i = 0; i < j->n_tr; i++)
                if (!j->tr[i].done && j->tr[i].done_at > t) j->tr[i].failed = true;
}

static void finish_restart(struct flink_sim *s, struct job *j, uint64_t t) {
        unsigned *par = xcalloc(j->n_v, sizeof *par);
        if (fit(j, slots_free(s, j), par)) {
                for (size_t i = 0; i < j->n_v; i++) j->v[i].par = par[i];
                j->state = J_RUNNING;
                j->changed = t;
                if (j->restart_is_rescale) j->last_rescale = t;
                j->want_rescale = false; /* the new execution graph has the current bounds */
        } else
                j->restart_until = UINT64_MAX; /* until a TaskManager registers */
        free(par);
}

/* A due rescale: only restarts if the slots and bounds give another parallelism. */
static void try_rescale(struct flink_sim *s, struct job *j, uint64_t t) {
        unsigned *par = xcalloc(j->n_v, sizeof *par);
        bool change = false;
        if (fit(j, slots_free(s, j), par))
                for (size_t i = 0; i < j->n_v; i++) change |= par[i] != j->v[i].par;
        j->want_rescale = false;
        if (change) start_restart(s, j, t, true);
        free(par);
}

/* When a rescale asked for at now may start: 1.18 at once, later versions
 * not within the cooldown after the last rescale (2.x then also waits for a
 * checkpoint, see advance()). */
static uint64_t rescale_due(const struct flink_sim *s, const struct job *j, uint64_t now) {
        uint64_t end = j->last_rescale + s->cooldown_ms * USEC_PER_MSEC;
        return s->ver >= 119 && j->last_rescale && end > now ? end : now;
}

static void want_rescale(struct flink_sim *s, struct job *j, uint64_t now, bool renew) {
        if (!j->want_rescale || renew) j->rescale_at = rescale_due(s, j, now);
        j->want_rescale = true;
}

/* Replays each job's events due by now, earliest first. */
static void advance(struct flink_sim *s, uint64_t now) {
        enum { NONE, CHECKPOINT, RESTART_END, RESCALE };
        for (size_t i = 0; i < s->n_jobs; i++) {
                struct job *j = &s->jobs[i];
                for (;;) {
                        uint64_t t = UINT64_MAX;
                        int kind = NONE;
                        struct trigger *tr = NULL;
                        for (size_t k = 0; k < j->n_tr; k++)
                                if (!j->tr[k].done && j->tr[k].done_at < t)
                                        t = j->tr[k].done_at, kind = CHECKPOINT, tr = &j->tr[k];
                        if (j->state == J_RESTARTING && j->restart_until < t)
                                t = j->restart_until, kind = RESTART_END;
                        if (j->state == J_RUNNING && j->want_rescale && s->ver < 200 && j->rescale_at < t)
                                t = j->rescale_at, kind = RESCALE;
                        if (kind == NONE || t > now) break;
                        if (kind == RESTART_END)
                                finish_restart(s, j, t);
                        else if (kind == RESCALE)
                                try_rescale(s, j, t);
                        else if (tr->failed) {
                                tr->done = true;
                                j->n_failed++;
                        } else {
                                tr->done = true;
                                j->n_completed++;
                                j->has_ckpt = true;
                                j->ckpt_id = tr->ckpt_id;
                                j->ckpt_trigger_ms = tr->at_ms;
                                j->ckpt_ack_ms = epoch_ms(s, t);
                                if (s->ver >= 200 && j->state == J_RUNNING && j->want_rescale && t >= j->rescale_at)
                                        try_rescale(s, j, t);
                        }
                }
        }
}

/* After TaskManagers left: running jobs keep their slots in order of
 * addition while they last; a job that no longer fits fails over. */
static void check_capacity(struct flink_sim *s, uint64_t now) {
        unsigned avail = slots_total(s);
        for (size_t i = 0; i < s->n_jobs; i++) {
                struct job *j = &s->jobs[i];
                unsigned h = held(j);
                if (j->state != J_RUNNING) continue;
                if (h <= avail)
                        avail -= h;
                else
                        start_restart(s, j, now, false);
        }
}

/* ---- answers ---- */

struct request {
        char *body;
        size_t len, cap;
        bool too_big;
};

struct answer {
        unsigned status;
        cJSON *json;
        char allow[64];      /* Allow header on 405 */
        char violation[512]; /* non-empty: the request broke the spec */
        bool unsimulated;
};

/* One request, once it passed the spec checks. */
struct call {
        const struct route *r;
        char **segs;
        const cJSON *body;
        struct job *job; /* from {jobid} */
        uint64_t now;
};

static void fail(struct answer *a, unsigned status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(struct answer *a, unsigned status, const char *fmt, ...) {
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        cJSON_Delete(a->json);
        a->status = status;
        a->json = cJSON_CreateObject();
        cJSON_AddItemToArray(cJSON_AddArrayToObject(a->json, "errors"), cJSON_CreateString(msg));
}

/* Always false: a request that broke the spec. */
static bool violation(struct answer *a, unsigned status, const char *msg) {
        snprintf(a->violation, sizeof a->violation, "%s", msg);
        fail(a, status, "%s", msg);
        return false;
}

static cJSON *ok(struct answer *a, unsigned status, cJSON *json) {
        a->status = status;
        return a->json = json;
}

static const char *pparam(const struct call *c, const char *name) {
        size_t len = strlen(name);
        for (size_t k = 0; k < c->r->n_segs; k++)
                if (c->r->segs[k][0] == '{' && strncmp(c->r->segs[k] + 1, name, len) == 0 &&
                    c->r->segs[k][len + 1] == '}')
                        return c->segs[k];
        return NULL;
}

static void num(cJSON *o, const char *k, double v) { cJSON_AddNumberToObject(o, k, v); }

static bool spec_has(const struct flink_sim *s, const char *schema, const char *prop) {
        const struct schema *sc = schema_named(&s->spec, schema);
        return sc && knows(sc, prop);
}

static const char *state_name(const struct job *j) { return j->state == J_RUNNING ? "RUNNING" : "RESTARTING"; }

/* Task counts per ExecutionState of the spec, of one vertex or the job:
 * UPPER-case keys in job details, lower-case plus "total" in the overview. */
static cJSON *task_counts(const struct flink_sim *s, const struct job *j, const struct vertex *only, bool lower) {
        cJSON *o = cJSON_CreateObject();
        unsigned n = 0, done = 0;
        for (size_t i = 0; i < j->n_v; i++)
                if (!only || only == &j->v[i]) {
                        n += j->v[i].par;
                        if (j->v[i].finished && j->state == J_RUNNING) done += j->v[i].par;
                }
        const char *cur = j->state == J_RUNNING ? "RUNNING" : "CANCELED";
        if (lower) num(o, "total", n);
        for (size_t i = 0; i < s->exec_states->n_enums; i++) {
                char key[32];
                const char *st = s->exec_states->enums[i];
                snprintf(key, sizeof key, "%s", st);
                for (char *p = key; lower && *p; p++)
                        if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
                num(o, key, strcmp(st, "FINISHED") == 0 ? done : strcmp(st, cur) == 0 ? n - done : 0);
        }
        return o;
}

static void version_fields(const struct flink_sim *s, cJSON *o, const char *schema) {
        if (spec_has(s, schema, "pending-operators")) num(o, "pending-operators", 0);
        if (spec_has(s, schema, "job-type")) cJSON_AddStringToObject(o, "job-type", "STREAMING");
        if (spec_has(s, schema, "jobType")) cJSON_AddStringToObject(o, "jobType", "STREAMING");
        if (spec_has(s, schema, "schedulerType"))
                cJSON_AddStringToObject(o, "schedulerType", s->default_scheduler ? "Default" : "Adaptive");
}

static cJSON *job_common(const struct flink_sim *s, const struct job *j, uint64_t now) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "jid", j->jid);
        cJSON_AddStringToObject(o, "name", j->name);
        cJSON_AddStringToObject(o, "state", state_name(j));
        num(o, "start-time", (double)j->start_ms);
        num(o, "end-time", -1);
        num(o, "duration", (double)(epoch_ms(s, now) - j->start_ms));
        return o;
}

static void h_overview(struct flink_sim *s, const struct call *c, struct answer *a) {
        cJSON *o = ok(a, 200, cJSON_CreateObject());
        (void)c;
        num(o, "taskmanagers", (double)s->n_tms);
        num(o, "slots-total", slots_total(s));
        num(o, "slots-available", slots_free(s, NULL));
        if (spec_has(s, "ClusterOverviewWithVersion", "slots-free-and-blocked")) num(o, "slots-free-and-blocked", 0);
        if (spec_has(s, "ClusterOverviewWithVersion", "taskmanagers-blocked")) num(o, "taskmanagers-blocked", 0);
        num(o, "jobs-running", (double)s->n_jobs);
        num(o, "jobs-finished", 0);
        num(o, "jobs-cancelled", 0);
        num(o, "jobs-failed", 0);
        cJSON_AddStringToObject(o, "flink-version", s->version);
        cJSON_AddStringToObject(o, "flink-commit", "abc1234");
}

static void h_jobs(struct flink_sim *s, const struct call *c, struct answer *a) {
        cJSON *list = cJSON_AddArrayToObject(ok(a, 200, cJSON_CreateObject()), "jobs");
        (void)c;
        for (size_t i = 0; i < s->n_jobs; i++) {
                cJSON *o = cJSON_CreateObject();
                cJSON_AddStringToObject(o, "id", s->jobs[i].jid);
                cJSON_AddStringToObject(o, "status", state_name(&s->jobs[i]));
                cJSON_AddItemToArray(list, o);
        }
}

static void h_jobs_overview(struct flink_sim *s, const struct call *c, struct answer *a) {
        cJSON *list = cJSON_AddArrayToObject(ok(a, 200, cJSON_CreateObject()), "jobs");
        for (size_t i = 0; i < s->n_jobs; i++) {
                const struct job *j = &s->jobs[i];
                cJSON *o = job_common(s, j, c->now);
                num(o, "last-modification", (double)epoch_ms(s, j->changed));
                cJSON_AddItemToObject(o, "tasks", task_counts(s, j, NULL, true));
                version_fields(s, o, "JobDetails");
                cJSON_AddItemToArray(list, o);
        }
}

/* Flink's SlotSharingGroupId is a 32-hex AbstractID: derive one from the name. */
static void ssg_hex(const char *name, char out[static 33]) {
        uint64_t h[2] = { 14695981039346656037ULL, 1099511628211ULL * 31 };
        for (int k = 0; k < 2; k++)
                for (const char *p = name; *p; p++) h[k] = (h[k] ^ (unsigned char)*p) * 1099511628211ULL;
        snprintf(out, 33, "%016llx%016llx", (unsigned long long)h[0], (unsigned long long)h[1]);
}

static void h_job(struct flink_sim *s, const struct call *c, struct answer *a) {
        const struct job *j = c->job;
        cJSON *o = ok(a, 200, job_common(s, j, c->now));
        cJSON_AddBoolToObject(o, "isStoppable", false);
        num(o, "maxParallelism", -1);
        num(o, "now", (double)epoch_ms(s, c->now));
        cJSON *ts = cJSON_AddObjectToObject(o, "timestamps");
        for (size_t i = 0; i < s->job_states->n_enums; i++) {
                const char *st = s->job_states->enums[i];
                uint64_t v = 0;
                if (!strcmp(st, "INITIALIZING") || !strcmp(st, "CREATED")) v = j->start_ms;
                if (!strcmp(st, "RUNNING")) v = j->state == J_RUNNING ? epoch_ms(s, j->changed) : j->start_ms;
                if (!strcmp(st, "RESTARTING") && j->restarted) v = epoch_ms(s, j->restarted);
                num(ts, st, (double)v);
        }
        cJSON *vs = cJSON_AddArrayToObject(o, "vertices");
        for (size_t i = 0; i < j->n_v; i++) {
                const struct vertex *v = &j->v[i];
                cJSON *x = cJSON_CreateObject();
                cJSON_AddStringToObject(x, "id", v->id);
                cJSON_AddStringToObject(x, "name", v->name);
                num(x, "maxParallelism", v->max_par);
                num(x, "parallelism", v->par);
                if (spec_has(s, "JobDetailsVertexInfo", "slotSharingGroupId")) {
                        char hex[33];
                        ssg_hex(ssg(v), hex);
                        cJSON_AddStringToObject(x, "slotSharingGroupId", hex);
                }
                cJSON_AddStringToObject(x, "status",
                                        j->state != J_RUNNING ? "CANCELED" : v->finished ? "FINISHED" : "RUNNING");
                num(x, "start-time", (double)j->start_ms);
                num(x, "end-time", -1);
                num(x, "duration", (double)(epoch_ms(s, c->now) - j->start_ms));
                cJSON_AddItemToObject(x, "tasks", task_counts(s, j, v, false));
                cJSON *m = cJSON_AddObjectToObject(x, "metrics");
                static const char *const io[] = { "read-bytes", "write-bytes", "read-records", "write-records" };
                for (size_t k = 0; k < sizeof io / sizeof *io; k++) {
                        char key[40];
                        num(m, io[k], 0);
                        snprintf(key, sizeof key, "%s-complete", io[k]);
                        cJSON_AddBoolToObject(m, key, true);
                }
                num(m, "accumulated-backpressured-time", 0);
                num(m, "accumulated-idle-time", 0);
                num(m, "accumulated-busy-time", 0);
                cJSON_AddItemToArray(vs, x);
        }
        cJSON *sc = cJSON_AddObjectToObject(o, "status-counts");
        for (size_t i = 0; i < s->exec_states->n_enums; i++)
                num(sc, s->exec_states->enums[i],
                    strcmp(s->exec_states->enums[i], j->state == J_RUNNING ? "RUNNING" : "CANCELED") ? 0 : (double)j->n_v);
        cJSON *plan = cJSON_AddObjectToObject(o, "plan");
        cJSON_AddStringToObject(plan, "jid", j->jid);
        cJSON_AddStringToObject(plan, "name", j->name);
        cJSON_AddStringToObject(plan, "type", "STREAMING");
        cJSON_AddArrayToObject(plan, "nodes");
        version_fields(s, o, "JobDetailsInfo");
}

static void h_job_status(struct flink_sim *s, const struct call *c, struct answer *a) {
        (void)s;
        cJSON_AddStringToObject(ok(a, 200, cJSON_CreateObject()), "status", state_name(c->job));
}

static cJSON *resources(unsigned slots) {
        cJSON *o = cJSON_CreateObject();
        num(o, "cpuCores", slots);
        num(o, "taskHeapMemory", 384.0 * slots); /* MiB */
        num(o, "taskOffHeapMemory", 0);
        num(o, "managedMemory", 512.0 * slots);
        num(o, "networkMemory", 128.0 * slots);
        cJSON_AddObjectToObject(o, "extendedResources");
        return o;
}

static cJSON *tm_json(const struct flink_sim *s, const struct tmgr *tm, unsigned used, uint64_t now, bool details) {
        static const struct { const char *k; double v; } mem[] = {
                { "frameworkHeap", 134217728 }, { "taskHeap", 402653184 }, { "frameworkOffHeap", 134217728 },
                { "taskOffHeap", 0 }, { "networkMemory", 134217728 }, { "managedMemory", 536870912 },
                { "jvmMetaspace", 268435456 }, { "jvmOverhead", 214748364 },
                { "totalFlinkMemory", 1342177280 }, { "totalProcessMemory", 1825361100 },
        };
        const char *schema = details ? "TaskManagerDetailsInfo" : "TaskManagerInfo";
        cJSON *o = cJSON_CreateObject(), *x;
        char path[160];
        /* 1.19 moved from Akka to Pekko. */
        snprintf(path, sizeof path, "%s.tcp://flink@%s:6122/user/rpc/taskmanager_0",
                 s->ver >= 119 ? "pekko" : "akka", tm->ip);
        cJSON_AddStringToObject(o, "id", tm->id);
        cJSON_AddStringToObject(o, "path", path);
        num(o, "dataPort", 6121);
        num(o, "jmxPort", -1);
        num(o, "timeSinceLastHeartbeat", (double)epoch_ms(s, now)); /* a timestamp, despite the name */
        num(o, "slotsNumber", tm->slots);
        num(o, "freeSlots", tm->slots - used);
        cJSON_AddItemToObject(o, "totalResource", resources(tm->slots));
        cJSON_AddItemToObject(o, "freeResource", resources(tm->slots - used));
        x = cJSON_AddObjectToObject(o, "hardware");
        num(x, "cpuCores", tm->slots);
        num(x, "physicalMemory", 8589934592.0);
        num(x, "freeMemory", 402653184);
        num(x, "managedMemory", 536870912);
        x = cJSON_AddObjectToObject(o, "memoryConfiguration");
        for (size_t i = 0; i < sizeof mem / sizeof *mem; i++) num(x, mem[i].k, mem[i].v);
        if (spec_has(s, schema, "blocked")) cJSON_AddBoolToObject(o, "blocked", false);
        if (spec_has(s, schema, "assignedTasks")) num(o, "assignedTasks", used);
        if (details) cJSON_AddArrayToObject(o, "allocatedSlots");
        return o;
}

/* The slots the running jobs hold, filled onto the TaskManagers in order. */
static void tm_list(struct flink_sim *s, const struct call *c, struct answer *a, const char *only) {
        unsigned used = 0;
        for (size_t i = 0; i < s->n_jobs; i++) used += held(&s->jobs[i]);
        cJSON *list = only ? NULL : cJSON_AddArrayToObject(ok(a, 200, cJSON_CreateObject()), "taskmanagers");
        for (size_t i = 0; i < s->n_tms; i++) {
                const struct tmgr *tm = &s->tms[i];
                unsigned u = used < tm->slots ? used : tm->slots;
                used -= u;
                if (!only)
                        cJSON_AddItemToArray(list, tm_json(s, tm, u, c->now, false));
                else if (strcmp(tm->id, only) == 0) {
                        ok(a, 200, tm_json(s, tm, u, c->now, true));
                        return;
                }
        }
        if (only) fail(a, 404, "Could not find TaskExecutor %s.", only);
}

static void h_taskmanagers(struct flink_sim *s, const struct call *c, struct answer *a) { tm_list(s, c, a, NULL); }
static void h_taskmanager(struct flink_sim *s, const struct call *c, struct answer *a) {
        tm_list(s, c, a, pparam(c, "taskmanagerid"));
}

static void h_jm_config(struct flink_sim *s, const struct call *c, struct answer *a) {
        char cooldown[32], slots[16];
        snprintf(cooldown, sizeof cooldown, "%u ms", s->cooldown_ms);
        snprintf(slots, sizeof slots, "%u", s->n_tms ? s->tms[0].slots : 1);
        const char *kv[][2] = {
                { "jobmanager.scheduler", s->scheduler },
                { "jobmanager.rpc.address", "flink-jobmanager" },
                { "rest.port", "8081" },
                { "taskmanager.numberOfTaskSlots", slots },
                { "parallelism.default", "1" },
                { "execution.checkpointing.interval", "0 ms" },
                { s->ver >= 200 ? "jobmanager.adaptive-scheduler.executing.cooldown-after-rescaling"
                                : "jobmanager.adaptive-scheduler.scaling-interval.min", cooldown },
        };
        cJSON *list = ok(a, 200, cJSON_CreateArray());
        (void)c;
        for (size_t i = 0; i < sizeof kv / sizeof *kv; i++) {
                cJSON *o = cJSON_CreateObject();
                cJSON_AddStringToObject(o, "key", kv[i][0]);
                cJSON_AddStringToObject(o, "value", kv[i][1]);
                cJSON_AddItemToArray(list, o);
        }
}

static void h_get_requirements(struct flink_sim *s, const struct call *c, struct answer *a) {
        cJSON *o = ok(a, 200, cJSON_CreateObject());
        (void)s;
        for (size_t i = 0; i < c->job->n_v; i++) {
                cJSON *p = cJSON_AddObjectToObject(cJSON_AddObjectToObject(o, c->job->v[i].id), "parallelism");
                num(p, "lowerBound", c->job->v[i].lower);
                num(p, "upperBound", c->job->v[i].unbounded ? -1 : (int)c->job->v[i].upper);
        }
}

/* Flink's own checks, once the body matched the schema. A missing bound is 0
 * (Jackson leaves the int at 0): "not positive". Returns false with err set. */
static bool requirements_ok(struct job *j, const cJSON *body, char *err, size_t len) {
        const cJSON *e;
        cJSON_ArrayForEach(e, body)
                if (!vertex_find(j, e->string)) {
                        snprintf(err, len, "Vertex %s is not part of job %s.", e->string, j->jid);
                        return false;
                }
        for (size_t i = 0; i < j->n_v; i++) {
                const struct vertex *v = &j->v[i];
                const cJSON *p = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(body, v->id),
                                                                  "parallelism");
                const cJSON *lo = cJSON_GetObjectItemCaseSensitive(p, "lowerBound");
                const cJSON *hi = cJSON_GetObjectItemCaseSensitive(p, "upperBound");
                int l = lo ? lo->valueint : 0, u = hi ? hi->valueint : 0;
                /* -1, no upper bound: accepted (measured on 1.20.5), i.e. up
                 * to the max parallelism. */
                if (u == -1) u = (int)v->max_par;
                if (!cJSON_GetObjectItemCaseSensitive(body, v->id))
                        snprintf(err, len, "The resource requirements must list every vertex: %s (%s) is missing.",
                                 v->id, v->name);
                else if (!p)
                        snprintf(err, len, "No parallelism given for vertex %s.", v->id);
                else if (l < 1 || u < 1)
                        snprintf(err, len, "The parallelism bounds of vertex %s must be positive, got [%d, %d].",
                                 v->id, l, u);
                else if (l > u)
                        snprintf(err, len, "The lower bound %d of vertex %s is greater than its upper bound %d.", l,
                                 v->id, u);
                else if ((unsigned)u > v->max_par)
                        snprintf(err, len, "The upper bound %d of vertex %s exceeds its max parallelism %u.", u,
                                 v->id, v->max_par);
                else
                        continue;
                return false;
        }
        return true;
}

static void h_put_requirements(struct flink_sim *s, const struct call *c, struct answer *a) {
        struct job *j = c->job;
        char err[384];
        if (!requirements_ok(j, c->body, err, sizeof err))
                fail(a, 400, "%s", err);
        else if (s->default_scheduler)
                fail(a, 500, "Changing the resource requirements of job %s needs the adaptive scheduler "
                     "(jobmanager.scheduler: adaptive).", j->jid);
        else if (s->conflicts) {
                s->conflicts--;
                fail(a, 409, "Another update of the resource requirements of job %s is in progress.", j->jid);
        } else {
                for (size_t i = 0; i < j->n_v; i++) {
                        const cJSON *p = cJSON_GetObjectItemCaseSensitive(
                                cJSON_GetObjectItemCaseSensitive(c->body, j->v[i].id), "parallelism");
                        int u = cJSON_GetObjectItemCaseSensitive(p, "upperBound")->valueint;
                        j->v[i].lower = (unsigned)cJSON_GetObjectItemCaseSensitive(p, "lowerBound")->valueint;
                        j->v[i].unbounded = u == -1;
                        j->v[i].upper = u == -1 ? j->v[i].max_par : (unsigned)u;
                        /* Flink 1.20.5 answers 200, then its JobManager dies
                         * (NullPointerException in ReservedSlots.getSlotFor,
                         * "Fatal error occurred in the cluster entrypoint")
                         * when the job restarts wanting more slots than there
                         * are: measured with tests/flink's cluster. */
                        if (u == -1 && !a->violation[0])
                                snprintf(a->violation, sizeof a->violation,
                                         "upperBound -1 for vertex %s: Flink 1.20.5's JobManager failed fatally after "
                                         "accepting it", j->v[i].id);
                }
                j->puts++;
                if (!j->first_put) j->first_put = c->now;
                want_rescale(s, j, c->now, true);
                ok(a, 200, cJSON_CreateObject());
        }
}

static struct trigger *trigger_find(struct job *j, const char *id) {
        for (size_t i = 0; id && i < j->n_tr; i++)
                if (strcmp(j->tr[i].id, id) == 0) return &j->tr[i];
        return NULL;
}

static void h_trigger(struct flink_sim *s, const struct call *c, struct answer *a) {
        struct job *j = c->job;
        const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c->body, "checkpointType"));
        const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c->body, "triggerId"));
        if (type && strcmp(type, "INCREMENTAL") == 0) {
                fail(a, 400, "Flink does not support triggering incremental checkpoints explicitly. "
                     "See FLINK-33723.");
                return;
        }
        if (!trigger_find(j, id)) { /* a known triggerId: the same operation again */
                j->tr = xrealloc(j->tr, (j->n_tr + 1) * sizeof *j->tr);
                struct trigger *t = &j->tr[j->n_tr++];
                *t = (struct trigger){ .at_ms = epoch_ms(s, c->now) };
                if (id)
                        snprintf(t->id, sizeof t->id, "%s", id);
                else {
                        uint8_t b[16];
                        if (getrandom(b, sizeof b, 0) != sizeof b) abort();
                        for (size_t i = 0; i < sizeof b; i++) snprintf(t->id + 2 * i, 3, "%02x", b[i]);
                }
                if (j->state != J_RUNNING) { /* nothing to checkpoint: fails at once */
                        t->done = t->failed = true;
                        t->done_at = c->now;
                        j->n_failed++;
                } else {
                        t->done_at = c->now + s->checkpoint_ms * USEC_PER_MSEC;
                        t->ckpt_id = ++j->next_ckpt;
                }
                id = t->id;
        }
        cJSON_AddStringToObject(ok(a, 202, cJSON_CreateObject()), "request-id", id);
}

static void h_trigger_status(struct flink_sim *s, const struct call *c, struct answer *a) {
        const struct trigger *t = trigger_find(c->job, pparam(c, "triggerid"));
        (void)s;
        if (!t) {
                fail(a, 404, "Operation not found under key: %s", pparam(c, "triggerid"));
                return;
        }
        cJSON *o = ok(a, 200, cJSON_CreateObject());
        cJSON_AddStringToObject(cJSON_AddObjectToObject(o, "status"), "id", t->done ? "COMPLETED" : "IN_PROGRESS");
        if (!t->done) return;
        cJSON *op = cJSON_AddObjectToObject(o, "operation");
        if (!t->failed) {
                num(op, "checkpointId", t->ckpt_id);
                return;
        }
        cJSON *fc = cJSON_AddObjectToObject(op, "failureCause");
        cJSON_AddStringToObject(fc, "class", "org.apache.flink.runtime.checkpoint.CheckpointException");
        cJSON_AddStringToObject(fc, "stack-trace",
                                "org.apache.flink.runtime.checkpoint.CheckpointException: Checkpoint triggering task "
                                "is not being executed at the moment. Failure reason: Not all required tasks are "
                                "currently running.\n");
        cJSON_AddStringToObject(fc, "serialized-throwable", "rO0ABXNyADRvcmcuYXBhY2hlLmZsaW5r");
}

static void h_checkpoint_stats(struct flink_sim *s, const struct call *c, struct answer *a) {
        const struct job *j = c->job;
        (void)s;
        unsigned in_progress = 0, subtasks = 0;
        for (size_t i = 0; i < j->n_tr; i++) in_progress += !j->tr[i].done;
        for (size_t i = 0; i < j->n_v; i++) subtasks += j->v[i].par;
        cJSON *o = ok(a, 200, cJSON_CreateObject()), *x;
        x = cJSON_AddObjectToObject(o, "counts");
        num(x, "restored", 0);
        num(x, "total", j->n_completed + j->n_failed + in_progress + (j->has_ckpt && !j->n_completed));
        num(x, "in_progress", in_progress);
        num(x, "completed", j->n_completed + (j->has_ckpt && !j->n_completed));
        num(x, "failed", j->n_failed);
        x = cJSON_AddObjectToObject(o, "summary");
        static const char *const sums[] = { "checkpointed_size", "state_size", "end_to_end_duration",
                                            "alignment_buffered", "processed_data", "persisted_data" };
        static const char *const stats[] = { "min", "max", "avg", "p50", "p90", "p95", "p99", "p999" };
        for (size_t i = 0; i < sizeof sums / sizeof *sums; i++) {
                cJSON *y = cJSON_AddObjectToObject(x, sums[i]);
                for (size_t k = 0; k < sizeof stats / sizeof *stats; k++) num(y, stats[k], 0);
        }
        x = cJSON_AddObjectToObject(o, "latest");
        if (j->has_ckpt) {
                cJSON *y = cJSON_AddObjectToObject(x, "completed");
                cJSON_AddStringToObject(y, "className", "completed");
                num(y, "id", j->ckpt_id);
                cJSON_AddStringToObject(y, "status", "COMPLETED");
                cJSON_AddBoolToObject(y, "is_savepoint", false);
                num(y, "trigger_timestamp", (double)j->ckpt_trigger_ms);
                num(y, "latest_ack_timestamp", (double)j->ckpt_ack_ms);
                num(y, "end_to_end_duration", (double)(j->ckpt_ack_ms - j->ckpt_trigger_ms));
                static const char *const zero[] = { "checkpointed_size", "state_size", "alignment_buffered",
                                                     "processed_data", "persisted_data" };
                for (size_t k = 0; k < sizeof zero / sizeof *zero; k++) num(y, zero[k], 0);
                num(y, "num_subtasks", subtasks);
                num(y, "num_acknowledged_subtasks", subtasks);
                cJSON_AddStringToObject(y, "checkpoint_type", "CHECKPOINT");
                cJSON_AddObjectToObject(y, "tasks");
                cJSON_AddStringToObject(y, "external_path", "<checkpoint-not-externally-addressable>");
                cJSON_AddBoolToObject(y, "discarded", false);
        } else
                cJSON_AddNullToObject(x, "completed");
        cJSON_AddNullToObject(x, "savepoint");
        cJSON_AddNullToObject(x, "failed");
        cJSON_AddNullToObject(x, "restored");
        cJSON_AddArrayToObject(o, "history");
}

static const struct handler {
        const char *tmpl, *method;
        void (*fn)(struct flink_sim *, const struct call *, struct answer *);
} handlers[] = {
        { "/overview", "GET", h_overview },
        { "/jobs", "GET", h_jobs },
        { "/jobs/overview", "GET", h_jobs_overview },
        { "/jobs/{jobid}", "GET", h_job },
        { "/jobs/{jobid}/status", "GET", h_job_status },
        { "/jobs/{jobid}/resource-requirements", "GET", h_get_requirements },
        { "/jobs/{jobid}/resource-requirements", "PUT", h_put_requirements },
        { "/jobs/{jobid}/checkpoints", "GET", h_checkpoint_stats },
        { "/jobs/{jobid}/checkpoints", "POST", h_trigger },
        { "/jobs/{jobid}/checkpoints/{triggerid}", "GET", h_trigger_status },
        { "/taskmanagers", "GET", h_taskmanagers },
        { "/taskmanagers/{taskmanagerid}", "GET", h_taskmanager },
        { "/jobmanager/config", "GET", h_jm_config },
};

/* ---- request checks and dispatch ---- */

struct qctx {
        const struct op *op;
        struct vctx v;
        bool bad;
};

/* Query values may be comma-separated lists (?jobs=a,b): each item is checked. */
static enum MHD_Result query_check(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
        struct qctx *q = cls;
        const struct param *p = NULL;
        (void)kind;
        for (size_t i = 0; i < q->op->n_params; i++)
                if (strcmp(q->op->params[i].in, "query") == 0 && strcmp(q->op->params[i].name, key) == 0)
                        p = &q->op->params[i];
        snprintf(q->v.path, sizeof q->v.path, "query parameter %s", key);
        if (!p) {
                verr(&q->v, "unknown");
                q->bad = true;
                return MHD_NO;
        }
        char *copy = xstrdup(value), *save = NULL;
        for (char *item = strtok_r(copy, ",", &save); item && !q->bad; item = strtok_r(NULL, ",", &save))
                q->bad = !text_ok(&q->v, p->s, item);
        if (!value || !*value) q->bad = !text_ok(&q->v, p->s, "");
        free(copy);
        return q->bad ? MHD_NO : MHD_YES;
}

static bool blank(const struct request *rq) {
        return !rq->body || strspn(rq->body, " \t\r\n") == rq->len;
}

/* Checks a request against the spec: false with a violation answered, else
 * the route, operation and parsed body (an empty one reads as {}, as Flink does). */
static bool check_request(struct flink_sim *s, struct MHD_Connection *conn, const char *method, const char *url,
                          const struct request *rq, struct answer *a, char **segs, const struct route **ret_r,
                          const struct op **ret_op, cJSON **ret_body) {
        char *p = segs[0] + 1; /* segs[0]: the path without /v1 and with its leading / */
        size_t n = 0;
        struct vctx v = { 0 };
        /* Empty segments kept: "/jobs//x" and a trailing "/" match nothing. */
        for (char *seg; n < SEGS_MAX && (seg = strsep(&p, "/"));) segs[n++] = seg;
        const struct route *r = p ? NULL : route_find(&s->spec, segs, n);
        if (!r) {
                snprintf(v.err, sizeof v.err, "Not found: %s", url);
                return violation(a, 404, v.err);
        }
        const struct op *op = NULL;
        for (size_t i = 0; i < r->n_ops; i++) {
                if (strcmp(r->ops[i].method, method) == 0) op = &r->ops[i];
                snprintf(a->allow + strlen(a->allow), sizeof a->allow - strlen(a->allow), "%s%s",
                         i ? ", " : "", r->ops[i].method);
        }
        if (!op) {
                snprintf(v.err, sizeof v.err, "Request method %s not allowed for %s.", method, r->tmpl);
                return violation(a, 405, v.err);
        }
        a->allow[0] = 0;

        for (size_t k = 0; k < n; k++) {
                size_t len = strlen(r->segs[k]) - 2;
                for (size_t i = 0; r->segs[k][0] == '{' && i < op->n_params; i++)
                        if (strcmp(op->params[i].in, "path") == 0 && strlen(op->params[i].name) == len &&
                            strncmp(op->params[i].name, r->segs[k] + 1, len) == 0) {
                                snprintf(v.path, sizeof v.path, "path parameter %s", op->params[i].name);
                                if (!text_ok(&v, op->params[i].s, segs[k])) return violation(a, 400, v.err);
                        }
        }
        struct qctx q = { .op = op };
        MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, query_check, &q);
        if (q.bad) return violation(a, 400, q.v.err);
        for (size_t i = 0; i < op->n_params; i++)
                if (op->params[i].required && strcmp(op->params[i].in, "query") == 0 &&
                    !MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, op->params[i].name)) {
                        snprintf(v.err, sizeof v.err, "missing required query parameter %s", op->params[i].name);
                        return violation(a, 400, v.err);
                }

        *ret_r = r, *ret_op = op, *ret_body = NULL;
        if (!op->has_body || !op->body_json) {
                if (op->has_body || blank(rq) || strcmp(rq->body, "{}") == 0) return true;
                snprintf(v.err, sizeof v.err, "body: %s %s takes no request body", method, r->tmpl);
                return violation(a, 400, v.err);
        }
        if (blank(rq) && op->body_required) return violation(a, 400, "body: required");
        /* Trailing bytes are refused (Jackson would ignore them): the length
         * given to cJSON must cover the NUL it checks for. */
        cJSON *body = blank(rq) ? cJSON_CreateObject() : cJSON_ParseWithLengthOpts(rq->body, rq->len + 1, NULL, true);
        if (!body) return violation(a, 400, "body: not valid JSON");
        snprintf(v.path, sizeof v.path, "body");
        if (!validate(&v, false, op->body, body, false)) {
                cJSON_Delete(body);
                return violation(a, 400, v.err);
        }
        *ret_body = body;
        return true;
}

/* Runs the behaviour of a request that passed the spec checks. Called locked. */
static void dispatch(struct flink_sim *s, struct MHD_Connection *conn, const char *method, const char *url,
                     const struct request *rq, struct answer *a, uint64_t now) {
        char buf[1024], *segs[SEGS_MAX] = { buf };
        const struct route *r;
        const struct op *op;
        cJSON *body;
        snprintf(buf, sizeof buf, "%s", strncmp(url, "/v1/", 4) == 0 ? url + 3 : url); /* Flink serves both */
        if (url[0] != '/' || strlen(url) >= sizeof buf) {
                violation(a, 404, "Not found: (a long or odd path)");
                return;
        }
        if (!check_request(s, conn, method, url, rq, a, segs, &r, &op, &body)) return;

        struct call c = { .r = r, .segs = segs, .body = body, .now = now };
        const struct handler *h = NULL;
        for (size_t i = 0; i < sizeof handlers / sizeof *handlers; i++)
                if (strcmp(handlers[i].tmpl, r->tmpl) == 0 && strcmp(handlers[i].method, method) == 0)
                        h = &handlers[i];
        if (!h) {
                a->unsimulated = true; /* Flink would answer; the simulator does not know how */
                fail(a, 501, "%s %s is in the spec but not simulated.", method, r->tmpl);
        } else if (pparam(&c, "jobid") && !(c.job = job_find(s, pparam(&c, "jobid"))))
                fail(a, 404, "Job %s not found", pparam(&c, "jobid"));
        else {
                h->fn(s, &c, a);
                /* Our own answer must match the version we claim to be. */
                struct vctx v = { .path = "answer" };
                if (a->status / 100 == 2 && op->resp && !validate(&v, true, op->resp, a->json, false)) {
                        s->bad_answers++;
                        fprintf(stderr, "flink-sim: %s %s: the answer breaks the %s spec: %s\n", method, url,
                                s->version, v.err);
                }
        }
        cJSON_Delete(body);
}

static void record(struct flink_sim *s, const char *method, const char *url, const struct answer *a) {
        char *line = xasprintf("%s %s %u%s%s%s", method, url, a->status, a->violation[0] ? " violation: " : "",
                               a->violation, a->unsimulated ? " unsimulated" : "");
        free(s->log[s->n_log % LOG_MAX]);
        s->log[s->n_log++ % LOG_MAX] = line;
        size_t i;
        for (i = 0; i < s->n_answers; i++)
                if (s->answers[i].status == a->status && strcmp(s->answers[i].method, method) == 0) break;
        if (i == s->n_answers && i < sizeof s->answers / sizeof *s->answers) {
                snprintf(s->answers[i].method, sizeof s->answers[i].method, "%s", method);
                s->answers[i].status = a->status;
                s->n_answers++;
        }
        if (i < s->n_answers) s->answers[i].n++;
}

/* ---- faults ---- */

/* The next fault whose prefix the path starts with, consumed; status 0 if
 * none. Called locked. */
static struct fault take_fault(struct flink_sim *s, const char *url) {
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

/* Returns false when the simulator is stopping. */
static bool sim_sleep(struct flink_sim *s, unsigned ms) {
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

/* A body sent by a callback: one byte every ms (DRIP), or the first cut
 * bytes and then a closed connection (CUT). */
struct drip {
        struct flink_sim *s;
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

/* The response for text (taken), spoilt as an answer fault asks. */
static struct MHD_Response *spoilt_response(struct flink_sim *s, char *text, int how, unsigned arg) {
        size_t len = strlen(text);
        struct MHD_Response *r;
        if (how == FLINK_SIM_MALFORMED) {
                len /= 2; /* JSON cut in half */
        } else if (how == FLINK_SIM_OVERSIZED) {
                len = arg ? arg : OVERSIZED_DEF; /* {"padding":"xxx..."} */
                free(text);
                text = malloc(len + 1);
                if (!text) abort();
                memset(text, 'x', len);
                memcpy(text, "{\"padding\":\"", 12);
                memcpy(text + len - 2, "\"}", 3);
        }
        if (how == FLINK_SIM_DRIP || how == FLINK_SIM_CUT) {
                struct drip *d = xcalloc(1, sizeof *d);
                *d = (struct drip){ s, text, arg ? arg : 100, how == FLINK_SIM_CUT ? (len > 1 ? len / 2 : 1) : 0 };
                r = MHD_create_response_from_callback(len, 4096, drip_read, d, drip_free);
                if (!r) drip_free(d);
        } else {
                r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
                if (!r) free(text);
        }
        return r;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *upload_data, size_t *upload_data_size,
                              void **req) {
        struct flink_sim *s = cls;
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
        if (f.status == FLINK_SIM_SLOW && !sim_sleep(s, f.arg)) return MHD_NO;

        struct answer a = { 0 };
        pthread_mutex_lock(&s->lock);
        if (f.status == FLINK_SIM_DROP) {
                record(s, method, url, &a);
                pthread_mutex_unlock(&s->lock);
                return MHD_NO; /* MHD closes the connection without an answer */
        }
        uint64_t now = mono();
        advance(s, now);
        if (f.status >= 100)
                fail(&a, (unsigned)f.status, "injected fault %d", f.status);
        else if (s->down)
                fail(&a, 503, "Service temporarily unavailable due to an ongoing leader election. Please refresh.");
        else if (rq->too_big)
                fail(&a, 413, "Request entity too large: limit is %d bytes", BODY_MAX);
        else
                dispatch(s, c, method, url, rq, &a, now);
        if (a.violation[0]) s->violations++;
        record(s, method, url, &a);
        pthread_mutex_unlock(&s->lock);

        char *text = cJSON_PrintUnformatted(a.json);
        cJSON_Delete(a.json);
        if (!text) abort();
        struct MHD_Response *r = spoilt_response(s, text, f.status, f.arg);
        if (!r)
                return MHD_NO;
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json; charset=UTF-8");
        if (a.allow[0]) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, a.allow);
        enum MHD_Result ret = MHD_queue_response(c, a.status, r);
        MHD_destroy_response(r);
        return ret;
}

static void request_done(void *cls, struct MHD_Connection *c, void **req, enum MHD_RequestTerminationCode toe) {
        struct request *rq = *req;
        (void)cls, (void)c, (void)toe;
        if (rq) free(rq->body);
        free(rq);
        *req = NULL;
}

/* ---- lifecycle ---- */

int flink_sim_start_port(const struct flink_sim_options *o, uint16_t port, struct flink_sim **ret) {
        struct flink_sim *s = calloc(1, sizeof *s);
        unsigned major, minor;
        int r;
        if (!s) return -ENOMEM;
        pthread_mutex_init(&s->lock, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* sim_sleep deadlines */
        pthread_cond_init(&s->wake, &ca);
        pthread_condattr_destroy(&ca);
        snprintf(s->version, sizeof s->version, "%s", o && o->version ? o->version : "1.18.1");
        if (sscanf(s->version, "%u.%u", &major, &minor) != 2 || minor >= 100) {
                r = -EINVAL;
                goto fail;
        }
        s->ver = major * 100 + minor;
        s->default_scheduler = o && o->default_scheduler;
        snprintf(s->scheduler, sizeof s->scheduler, "%s",
                 o && o->scheduler ? o->scheduler : s->default_scheduler ? "default" : "adaptive");
        s->checkpoint_ms = o && o->checkpoint_ms ? o->checkpoint_ms : 50;
        s->restart_ms = o && o->restart_ms ? o->restart_ms : 100;
        s->cooldown_ms = o ? o->cooldown_ms : 0;
        s->epoch_off = clock_usec(CLOCK_REALTIME) - mono();

        char *file = xasprintf("%s/rest_v1_dispatcher.%u.%u.yml", o && o->spec_dir ? o->spec_dir : FLINK_SPEC_DIR,
                               major, minor);
        r = spec_load(&s->spec, file);
        if (r < 0) fprintf(stderr, "flink-sim: cannot load the spec %s: %s\n", file, strerror(-r));
        free(file);
        if (r < 0) goto fail;
        s->exec_states = schema_named(&s->spec, "ExecutionState");
        s->job_states = schema_named(&s->spec, "JobStatus");
        if (!s->exec_states || !s->job_states) {
                r = -EINVAL;
                goto fail;
        }

        struct sockaddr_in sa = {
                .sin_family = AF_INET,
                .sin_port = htons(port),
                .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
        };
        errno = 0;
        s->daemon = MHD_start_daemon(
                MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_AUTO,
                0, NULL, NULL, handle, s,
                MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                MHD_OPTION_NOTIFY_COMPLETED, request_done, s,
                MHD_OPTION_CONNECTION_TIMEOUT, 30U, /* reap idle keep-alive connections */
                MHD_OPTION_CONNECTION_LIMIT, 256U,
                MHD_OPTION_END);
        if (!s->daemon) {
                r = errno ? -errno : -EIO;
                goto fail;
        }
        const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
        s->port = info ? info->port : port;
        *ret = s;
        return 0;
fail:
        flink_sim_stop(s);
        return r;
}

int flink_sim_start(const struct flink_sim_options *o, struct flink_sim **ret) {
        return flink_sim_start_port(o, 0, ret);
}

struct flink_sim *flink_sim_stop(struct flink_sim *s) {
        if (!s) return NULL;
        pthread_mutex_lock(&s->lock);
        s->stopping = true;
        pthread_cond_broadcast(&s->wake);
        pthread_mutex_unlock(&s->lock);
        if (s->daemon) MHD_stop_daemon(s->daemon); /* joins every connection thread */
        pthread_cond_destroy(&s->wake);
        pthread_mutex_destroy(&s->lock);
        for (size_t i = 0; i < s->n_faults; i++) free(s->faults[i].prefix);
        spec_free(&s->spec);
        for (size_t i = 0; i < s->n_tms; i++) {
                free(s->tms[i].id);
                free(s->tms[i].ip);
        }
        for (size_t i = 0; i < s->n_jobs; i++) {
                struct job *j = &s->jobs[i];
                for (size_t k = 0; k < j->n_v; k++) {
                        free(j->v[k].id);
                        free(j->v[k].name);
                        free(j->v[k].ssg);
                }
                free(j->v);
                free(j->tr);
                free(j->jid);
                free(j->name);
        }
        for (size_t i = 0; i < LOG_MAX; i++) free(s->log[i]);
        free(s->tms);
        free(s->jobs);
        free(s);
        return NULL;
}

uint16_t flink_sim_port(const struct flink_sim *s) { return s->port; }

void flink_sim_url(const struct flink_sim *s, char *buf, size_t len) {
        snprintf(buf, len, "http://127.0.0.1:%u", (unsigned)s->port);
}

/* ---- setters ---- */

#define LOCKED(s, ...) do { pthread_mutex_lock(&(s)->lock); advance((s), mono()); __VA_ARGS__; \
                            pthread_mutex_unlock(&(s)->lock); } while (0)

static void warn_id(const char *what, const char *id) {
        if (!is_hex32(id))
                fprintf(stderr, "flink-sim: %s id \"%s\" is not 32 lower-case hex chars: Flink would reject "
                        "it, and so does the spec check\n", what, id);
}

void flink_sim_add_taskmanager(struct flink_sim *s, const char *id, const char *ip, unsigned slots) {
        uint64_t now = mono();
        pthread_mutex_lock(&s->lock);
        advance(s, now);
        s->tms = xrealloc(s->tms, (s->n_tms + 1) * sizeof *s->tms);
        s->tms[s->n_tms++] = (struct tmgr){ .id = xstrdup(id), .ip = xstrdup(ip), .slots = slots };
        /* New slots: the scheduler may scale jobs up; starved ones start now. */
        for (size_t i = 0; i < s->n_jobs; i++) {
                struct job *j = &s->jobs[i];
                bool below = false;
                for (size_t k = 0; k < j->n_v; k++) below |= j->v[k].par < j->v[k].upper;
                if (j->state == J_RUNNING && below)
                        want_rescale(s, j, now, false);
                else if (j->restart_until == UINT64_MAX)
                        j->restart_until = now;
        }
        advance(s, now);
        pthread_mutex_unlock(&s->lock);
}

void flink_sim_add_job(struct flink_sim *s, const char *jid, const char *name) {
        uint64_t now = mono();
        warn_id("job", jid);
        pthread_mutex_lock(&s->lock);
        if (!job_find(s, jid)) {
                s->jobs = xrealloc(s->jobs, (s->n_jobs + 1) * sizeof *s->jobs);
                s->jobs[s->n_jobs++] = (struct job){ .jid = xstrdup(jid), .name = xstrdup(name),
                                                     .start_ms = epoch_ms(s, now), .changed = now };
        }
        pthread_mutex_unlock(&s->lock);
}

void flink_sim_add_vertex(struct flink_sim *s, const char *jid, const char *vid, const char *name,
                          unsigned parallelism, unsigned max_parallelism, const char *slot_sharing_group) {
        warn_id("vertex", vid);
        pthread_mutex_lock(&s->lock);
        struct job *j = job_find(s, jid);
        if (!j)
                fprintf(stderr, "flink-sim: no job %s for vertex %s\n", jid, vid);
        else if (!vertex_find(j, vid)) {
                unsigned par = parallelism ? parallelism : 1;
                unsigned max = max_parallelism ? max_parallelism : 128; /* Flink's floor for the default */
                j->v = xrealloc(j->v, (j->n_v + 1) * sizeof *j->v);
                j->v[j->n_v++] = (struct vertex){
                        .id = xstrdup(vid), .name = xstrdup(name),
                        .ssg = slot_sharing_group ? xstrdup(slot_sharing_group) : NULL,
                        .par = par, .max_par = max < par ? par : max, .lower = 1, .upper = par,
                };
        }
        pthread_mutex_unlock(&s->lock);
}

/* A standalone TaskManager id is "<ip>:<port>-<hex>": matched by its IP too. */
static bool tm_matches(const struct tmgr *tm, const char *name, const char *ip) {
        size_t n = ip ? strlen(ip) : 0;
        return (name && strcmp(tm->id, name) == 0) ||
               (ip && *ip && (strcmp(tm->ip, ip) == 0 || (strncmp(tm->id, ip, n) == 0 && tm->id[n] == ':')));
}

static void remove_tms(struct flink_sim *s, const char *name, const char *ip) {
        uint64_t now = mono();
        pthread_mutex_lock(&s->lock);
        advance(s, now);
        size_t kept = 0;
        for (size_t i = 0; i < s->n_tms; i++)
                if (tm_matches(&s->tms[i], name, ip)) {
                        free(s->tms[i].id);
                        free(s->tms[i].ip);
                } else
                        s->tms[kept++] = s->tms[i];
        if (kept != s->n_tms) {
                s->n_tms = kept;
                check_capacity(s, now);
        }
        pthread_mutex_unlock(&s->lock);
}

void flink_sim_disconnect_taskmanager(struct flink_sim *s, const char *id_or_ip) {
        remove_tms(s, id_or_ip, id_or_ip);
}

void flink_sim_set_upper_unbounded(struct flink_sim *s, const char *jid, const char *vid) {
        pthread_mutex_lock(&s->lock);
        struct job *j = job_find(s, jid);
        struct vertex *v = j ? vertex_find(j, vid) : NULL;
        if (v) {
                v->unbounded = true;
                v->upper = v->max_par;
        }
        pthread_mutex_unlock(&s->lock);
}

void flink_sim_set_vertex_finished(struct flink_sim *s, const char *jid, const char *vid) {
        pthread_mutex_lock(&s->lock);
        struct job *j = job_find(s, jid);
        struct vertex *v = j ? vertex_find(j, vid) : NULL;
        if (v) v->finished = true;
        pthread_mutex_unlock(&s->lock);
}

void flink_sim_pod_terminating(struct flink_sim *s, const char *pod_name, const char *pod_ip) {
        remove_tms(s, pod_name, pod_ip);
}

void flink_sim_set_down(struct flink_sim *s, bool down) { LOCKED(s, s->down = down); }
void flink_sim_put_conflicts(struct flink_sim *s, unsigned count) { LOCKED(s, s->conflicts = count); }

void flink_sim_fault(struct flink_sim *s, const char *prefix, int status, unsigned arg, unsigned count) {
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

void flink_sim_set_last_checkpoint_age(struct flink_sim *s, const char *jid, unsigned age_ms) {
        uint64_t now = mono();
        pthread_mutex_lock(&s->lock);
        advance(s, now);
        struct job *j = job_find(s, jid);
        if (j) {
                if (!j->has_ckpt) j->ckpt_id = ++j->next_ckpt;
                j->has_ckpt = true;
                j->ckpt_ack_ms = epoch_ms(s, now) - age_ms;
                j->ckpt_trigger_ms = j->ckpt_ack_ms - 20;
        }
        pthread_mutex_unlock(&s->lock);
}

/* ---- observations ---- */

const char *flink_sim_job_state(struct flink_sim *s, const char *jid) {
        const char *r = NULL;
        LOCKED(s, const struct job *j = job_find(s, jid); r = j ? state_name(j) : NULL);
        return r;
}

unsigned flink_sim_vertex_parallelism(struct flink_sim *s, const char *jid, const char *vid) {
        unsigned r = 0;
        LOCKED(s, const struct vertex *v = vertex_find(job_find(s, jid), vid); r = v ? v->par : 0);
        return r;
}

void flink_sim_bounds(struct flink_sim *s, const char *jid, const char *vid, unsigned *lower, unsigned *upper) {
        LOCKED(s, const struct vertex *v = vertex_find(job_find(s, jid), vid);
               if (lower) *lower = v ? v->lower : 0;
               if (upper) *upper = v ? v->upper : 0);
}

#define JOB_COUNTER(fn, type, expr)                                         \
        type fn(struct flink_sim *s, const char *jid) {                     \
                type r = 0;                                                 \
                LOCKED(s, const struct job *j = job_find(s, jid); if (j) r = (expr)); \
                return r;                                                   \
        }
JOB_COUNTER(flink_sim_checkpoints_triggered, unsigned, (unsigned)j->n_tr)
JOB_COUNTER(flink_sim_checkpoints_completed, unsigned, j->n_completed)
JOB_COUNTER(flink_sim_puts, unsigned, j->puts)
JOB_COUNTER(flink_sim_restarts, unsigned, j->restarts)
JOB_COUNTER(flink_sim_rescales, unsigned, j->rescales)
JOB_COUNTER(flink_sim_first_put, uint64_t, j->first_put)

unsigned flink_sim_answers(struct flink_sim *s, const char *method, unsigned status) {
        unsigned n = 0;
        pthread_mutex_lock(&s->lock);
        for (size_t i = 0; i < s->n_answers; i++)
                if ((!method || strcmp(s->answers[i].method, method) == 0) && (!status || s->answers[i].status == status))
                        n += s->answers[i].n;
        pthread_mutex_unlock(&s->lock);
        return n;
}

unsigned flink_sim_violations(struct flink_sim *s) {
        unsigned r;
        LOCKED(s, r = s->violations);
        return r;
}

unsigned flink_sim_bad_answers(struct flink_sim *s) {
        unsigned r;
        LOCKED(s, r = s->bad_answers);
        return r;
}

char *flink_sim_log(struct flink_sim *s) {
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
