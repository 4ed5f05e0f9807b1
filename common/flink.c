#include "flink.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(cJSON *, cJSON_Delete)

static cJSON *parse(const char *body, size_t len) {
        if (!body || !len || memchr(body, 0, len))
                return NULL;
        return cJSON_ParseWithLength(body, len);
}

static const cJSON *get(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }

/* A whole number in [0, max]. */
static int get_uint(const cJSON *o, const char *k, unsigned max, unsigned *ret) {
        const cJSON *v = get(o, k);
        if (!v)
                return -ENODATA;
        if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > max || floor(v->valuedouble) != v->valuedouble)
                return -EINVAL;
        *ret = (unsigned) v->valuedouble;
        return 0;
}

static int get_str(const cJSON *o, const char *k, char *buf, size_t len) {
        const char *v = cJSON_GetStringValue(get(o, k));
        if (!v)
                return get(o, k) ? -EINVAL : -ENODATA;
        if (strlen(v) >= len)
                return -EINVAL;
        strcpy(buf, v);
        return 0;
}

bool flink_id_valid(const char *id) {
        size_t n = 0;
        for (; id[n]; n++)
                if (!isxdigit((unsigned char) id[n]) || isupper((unsigned char) id[n]))
                        return false;
        return n == FLINK_ID_LEN;
}

void flink_parse_errors(const char *body, size_t len, char *buf, size_t buflen) {
        _cleanup_(cJSON_Deletep) cJSON *j = parse(body, len);
        const char *e = cJSON_GetStringValue(cJSON_GetArrayItem(get(j, "errors"), 0));
        size_t n = 0;
        if (!buflen)
                return;
        /* First line only: Flink appends whole stack traces. */
        for (; e && e[n] && e[n] != '\n' && n + 1 < buflen; n++)
                buf[n] = isprint((unsigned char) e[n]) ? e[n] : ' ';
        buf[n] = 0;
}

int flink_version_parse(const char *v, unsigned *ret_major, unsigned *ret_minor) {
        unsigned ma, mi;
        int n = 0;
        if (!v || sscanf(v, "%3u.%3u%n", &ma, &mi, &n) != 2 || n == 0)
                return -EINVAL;
        *ret_major = ma;
        *ret_minor = mi;
        return 0;
}

int flink_parse_overview(const char *body, size_t len, struct flink_overview *ret) {
        _cleanup_(cJSON_Deletep) cJSON *j = parse(body, len);
        struct flink_overview o = {};
        unsigned ma, mi;
        int r;
        if (!cJSON_IsObject(j))
                return -EBADMSG;
        if ((r = get_str(j, "flink-version", o.version, sizeof o.version)) < 0)
                return r;
        if (flink_version_parse(o.version, &ma, &mi) < 0)
                return -EINVAL;
        if ((r = get_uint(j, "taskmanagers", 100000, &o.taskmanagers)) < 0 ||
            (r = get_uint(j, "slots-total", 10000000, &o.slots_total)) < 0 ||
            (r = get_uint(j, "slots-available", 10000000, &o.slots_available)) < 0)
                return r;
        *ret = o;
        return 0;
}

int flink_parse_jobs_overview(const char *body, size_t len, struct flink_job_ref *ret, size_t max, size_t *ret_n) {
        _cleanup_(cJSON_Deletep) cJSON *j = parse(body, len);
        const cJSON *jobs = get(j, "jobs"), *it;
        size_t n = 0;
        if (!cJSON_IsArray(jobs))
                return j ? -ENODATA : -EBADMSG;
        if ((size_t) cJSON_GetArraySize(jobs) > max)
                return -E2BIG;
        struct flink_job_ref tmp[FLINK_MAX_JOBS];
        if (max > FLINK_MAX_JOBS)
                max = FLINK_MAX_JOBS;
        cJSON_ArrayForEach(it, jobs) {
                if (n >= max)
                        return -E2BIG;
                if (get_str(it, "jid", tmp[n].jid, sizeof tmp[n].jid) < 0 || !flink_id_valid(tmp[n].jid) ||
                    get_str(it, "state", tmp[n].state, sizeof tmp[n].state) < 0)
                        return -EINVAL;
                n++;
        }
        memcpy(ret, tmp, n * sizeof *tmp);
        *ret_n = n;
        return 0;
}

int flink_parse_job(const char *body, size_t len, struct flink_job *ret) {
        _cleanup_(cJSON_Deletep) cJSON *j = parse(body, len);
        _cleanup_free_ struct flink_job *o = calloc(1, sizeof *o);
        const cJSON *it;
        int r;
        if (!o)
                return -ENOMEM;
        if (!cJSON_IsObject(j))
                return -EBADMSG;
        if ((r = get_str(j, "jid", o->jid, sizeof o->jid)) < 0 || (r = get_str(j, "state", o->state, sizeof o->state)) < 0)
                return r;
        if (!flink_id_valid(o->jid))
                return -EINVAL;
        const cJSON *vs = get(j, "vertices");
        if (!cJSON_IsArray(vs))
                return -ENODATA;
        cJSON_ArrayForEach(it, vs) {
                struct flink_vertex *v = &o->v[o->nv];
                if (o->nv >= FLINK_MAX_VERTICES)
                        return -E2BIG;
                if ((r = get_str(it, "id", v->id, sizeof v->id)) < 0 || !flink_id_valid(v->id))
                        return r < 0 ? r : -EINVAL;
                if ((r = get_uint(it, "parallelism", 1 << 15, &v->parallelism)) < 0 ||
                    (r = get_uint(it, "maxParallelism", 1 << 15, &v->max_parallelism)) < 0)
                        return r;
                if (get(it, "slotSharingGroupId") && get_str(it, "slotSharingGroupId", v->ssg, sizeof v->ssg) < 0)
                        return -EINVAL;
                const cJSON *t, *tasks = get(it, "tasks");
                cJSON_ArrayForEach(t, tasks) {
                        if (!cJSON_IsNumber(t) || t->valuedouble < 0 || t->valuedouble > 1 << 20)
                                return -EINVAL;
                        v->tasks_total += (unsigned) t->valuedouble;
                        if (t->string && strcmp(t->string, "RUNNING") == 0)
                                v->tasks_running = (unsigned) t->valuedouble;
                        else if (t->string && strcmp(t->string, "FINISHED") == 0)
                                v->tasks_finished = (unsigned) t->valuedouble;
                }
                o->nv++;
        }
        memcpy(ret, o, sizeof *o);
        return 0;
}

/* "akka.tcp://flink@10.0.0.5:6122/user/rpc/taskmanager_0" -> "10.0.0.5" */
static void ip_from_path(const char *path, char *buf, size_t len) {
        const char *at = path ? strchr(path, '@') : NULL;
        size_t n = 0;
        buf[0] = 0;
        if (!at)
                return;
        at++;
        if (*at == '[') { /* IPv6 */
                at++;
                while (at[n] && at[n] != ']' && n + 1 < len)
                        n++;
        } else
                while (at[n] && at[n] != ':' && at[n] != '/' && n + 1 < len)
                        n++;
        for (size_t i = 0; i < n; i++)
                if (!isxdigit((unsigned char) at[i]) && at[i] != '.' && at[i] != ':')
                        return; /* a host name, not an address: no IP match */
        memcpy(buf, at, n);
        buf[n] = 0;
}

int flink_parse_taskmanagers(const char *body, size_t len, struct flink_tm *ret, size_t max, size_t *ret_n) {
        _cleanup_(cJSON_Deletep) cJSON *j = parse(body, len);
        const cJSON *tms = get(j, "taskmanagers"), *it;
        size_t n = 0;
        int r;
        if (!cJSON_IsArray(tms))
                return j ? -ENODATA : -EBADMSG;
        if ((size_t) cJSON_GetArraySize(tms) > max)
                return -E2BIG;
        _cleanup_free_ struct flink_tm *tmp = calloc(max ? max : 1, sizeof *tmp);
        if (!tmp)
                return -ENOMEM;
        cJSON_ArrayForEach(it, tms) {
                struct flink_tm *t = &tmp[n];
                if ((r = get_str(it, "id", t->id, sizeof t->id)) < 0 ||
                    (r = get_uint(it, "slotsNumber", 100000, &t->slots)) < 0 ||
                    (r = get_uint(it, "freeSlots", 100000, &t->free_slots)) < 0)
                        return r;
                ip_from_path(cJSON_GetStringValue(get(it, "path")), t->ip, sizeof t->ip);
                n++;
        }
        memcpy(ret, tmp, n * sizeof *tmp);
        *ret_n = n;
        return 0;
}

int flink_parse_requirements(const char *body, size_t len, struct flink_bounds *ret, size_t max, size_t *ret_n) {
        _cleanup_(cJSON_Deletep) cJSON *j = parse(body, len);
        const cJSON *it;
        size_t n = 0;
        if (!cJSON_IsObject(j))
                return -EBADMSG;
        if ((size_t) cJSON_GetArraySize(j) > max)
                return -E2BIG;
        _cleanup_free_ struct flink_bounds *tmp = calloc(max ? max : 1, sizeof *tmp);
        if (!tmp)
                return -ENOMEM;
        cJSON_ArrayForEach(it, j) {
                struct flink_bounds *b = &tmp[n];
                const cJSON *p = get(it, "parallelism");
                if (!it->string || !flink_id_valid(it->string) || !cJSON_IsObject(p))
                        return -EINVAL;
                strcpy(b->vid, it->string);
                if (get_uint(p, "lowerBound", 1 << 15, &b->lower) < 0)
                        return -EINVAL;
                /* -1 (no upper bound) is legal in Flink: treat as the max. */
                const cJSON *u = get(p, "upperBound");
                if (cJSON_IsNumber(u) && u->valuedouble == -1)
                        b->upper = 1 << 15;
                else if (get_uint(p, "upperBound", 1 << 15, &b->upper) < 0)
                        return -EINVAL;
                n++;
        }
        memcpy(ret, tmp, n * sizeof *tmp);
        *ret_n = n;
        return 0;
}

int flink_format_requirements(const struct flink_bounds *b, size_t n, char **ret) {
        _cleanup_(cJSON_Deletep) cJSON *j = cJSON_CreateObject();
        if (!j)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                if (!flink_id_valid(b[i].vid) || b[i].lower < 1 || b[i].lower > b[i].upper)
                        return -EINVAL;
                cJSON *v = cJSON_AddObjectToObject(j, b[i].vid), *p = v ? cJSON_AddObjectToObject(v, "parallelism") : NULL;
                if (!p || !cJSON_AddNumberToObject(p, "lowerBound", b[i].lower) ||
                    !cJSON_AddNumberToObject(p, "upperBound", b[i].upper))
                        return -ENOMEM;
        }
        char *s = cJSON_PrintUnformatted(j);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

int flink_parse_scheduler(const char *body, size_t len, char *buf, size_t buflen) {
        _cleanup_(cJSON_Deletep) cJSON *j = parse(body, len);
        const cJSON *it;
        if (!cJSON_IsArray(j))
                return -EBADMSG;
        cJSON_ArrayForEach(it, j) {
                const char *k = cJSON_GetStringValue(get(it, "key")), *v = cJSON_GetStringValue(get(it, "value"));
                if (k && v && strcmp(k, "jobmanager.scheduler") == 0) {
                        if (strlen(v) >= buflen)
                                return -EINVAL;
                        strcpy(buf, v);
                        return 0;
                }
        }
        if (buflen)
                buf[0] = 0;
        return 0;
}

int flink_parse_trigger(const char *body, size_t len, char *ret_request_id, size_t idlen) {
        _cleanup_(cJSON_Deletep) cJSON *j = parse(body, len);
        char id[128];
        int r = get_str(j, "request-id", id, sizeof id);
        if (!j)
                return -EBADMSG;
        if (r < 0)
                return r;
        for (const char *p = id; *p; p++)
                if (!isalnum((unsigned char) *p) && *p != '-')
                        return -EINVAL; /* it goes into a URL path */
        if (strlen(id) >= idlen || !id[0])
                return -EINVAL;
        strcpy(ret_request_id, id);
        return 0;
}

int flink_parse_checkpoint_status(const char *body, size_t len, enum flink_checkpoint_state *ret, uint64_t *ret_id,
                                  char *why, size_t whylen) {
        _cleanup_(cJSON_Deletep) cJSON *j = parse(body, len);
        char st[32];
        if (!cJSON_IsObject(j))
                return -EBADMSG;
        if (get_str(get(j, "status"), "id", st, sizeof st) < 0)
                return -ENODATA;
        if (strcmp(st, "IN_PROGRESS") == 0) {
                *ret = FLINK_CKPT_IN_PROGRESS;
                return 0;
        }
        if (strcmp(st, "COMPLETED") != 0)
                return -EINVAL;
        const cJSON *op = get(j, "operation"), *fc = get(op, "failureCause");
        if (fc) {
                const char *c = cJSON_GetStringValue(get(fc, "class"));
                if (whylen)
                        snprintf(why, whylen, "%s", c ? c : "checkpoint failed");
                *ret = FLINK_CKPT_FAILED;
                return 0;
        }
        const cJSON *id = get(op, "checkpointId");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0)
                return -ENODATA;
        if (id->valuedouble >= 0x1p64) /* 1e300, inf: converting it is undefined */
                return -EINVAL;
        if (ret_id)
                *ret_id = (uint64_t) id->valuedouble;
        *ret = FLINK_CKPT_COMPLETED;
        return 0;
}

int flink_parse_checkpoints(const char *body, size_t len, int64_t *ret_ms) {
        _cleanup_(cJSON_Deletep) cJSON *j = parse(body, len);
        if (!cJSON_IsObject(j))
                return -EBADMSG;
        const cJSON *c = get(get(j, "latest"), "completed");
        if (!c || cJSON_IsNull(c)) {
                *ret_ms = 0;
                return 0;
        }
        const cJSON *t = get(c, "latest_ack_timestamp");
        if (!cJSON_IsNumber(t))
                t = get(c, "trigger_timestamp");
        if (!cJSON_IsNumber(t) || t->valuedouble < 0)
                return -ENODATA;
        if (t->valuedouble >= 0x1p63) /* 1e300, inf: converting it is undefined */
                return -EINVAL;
        *ret_ms = (int64_t) t->valuedouble;
        return 0;
}
