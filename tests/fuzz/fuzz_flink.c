/* libFuzzer target: every Flink JobManager answer spotd reads, the
 * resource-requirements builder, and the slot planner on parsed input.
 *
 * First byte (modulo 11) picks the parser; the rest is the body as the
 * JobManager would send it. For the planner (10) the next 6 bytes are
 * slots-total and slots leaving (24 bits each, slots-total capped as
 * flink_parse_overview caps it), then up to 8 pairs of sections "job
 * details" and "resource requirements" separated by lines "%%".
 * Properties checked besides the sanitizers: outputs untouched on failure,
 * requirements survive format -> parse, the plan never raises a bound and
 * does not depend on the order the jobs come in. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "flink.h"
#include "fuzz.h"
#include "macro.h"
#include "plan.h"

enum { F_OVERVIEW, F_JOBS, F_JOB, F_TMS, F_REQ, F_SCHEDULER, F_TRIGGER, F_CKPT_STATUS, F_CKPTS, F_ERRORS, F_PLAN, F_MAX };

static bool bounds_sendable(const struct flink_bounds *b, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (b[i].lower < 1 || b[i].lower > b[i].upper)
                        return false;
        return true;
}

/* What spotd PUTs must read back as what it meant. */
static void check_format_round_trip(const struct flink_bounds *b, size_t n) {
        _cleanup_free_ char *out = NULL;
        int r = flink_format_requirements(b, n, &out);
        if (!bounds_sendable(b, n)) {
                FUZZ_CHECK(r == -EINVAL && out == NULL);
                return;
        }
        FUZZ_CHECK(r == 0 && out);
        struct flink_bounds back[FLINK_MAX_VERTICES];
        size_t nb = 0;
        r = flink_parse_requirements(out, strlen(out), back, FLINK_MAX_VERTICES, &nb);
        FUZZ_CHECK(r == 0);
        /* Duplicate vertex ids collapse into one JSON key; otherwise all come back. */
        FUZZ_CHECK(nb <= n);
        for (size_t i = 0; i < nb; i++) {
                bool found = false;
                for (size_t k = 0; k < n && !found; k++)
                        found = strcmp(b[k].vid, back[i].vid) == 0 && b[k].lower == back[i].lower &&
                                b[k].upper == back[i].upper;
                FUZZ_CHECK(found);
        }
}

static void fuzz_plan(const uint8_t *data, size_t size) {
        if (size < 6)
                return;
        unsigned total = (unsigned) data[0] << 16 | (unsigned) data[1] << 8 | data[2];
        unsigned leaving = (unsigned) data[3] << 16 | (unsigned) data[4] << 8 | data[5];
        if (total > 10000000)
                total = 10000000;
        struct fuzz_part parts[16];
        size_t np = fuzz_split(data + 6, size - 6, "\n%%\n", parts, 16);

        struct flink_job *jobs = calloc(8, sizeof *jobs);
        struct flink_bounds(*cur)[FLINK_MAX_VERTICES] = calloc(8, sizeof *cur);
        struct plan_job *pj = calloc(8, sizeof *pj), *pj2 = calloc(8, sizeof *pj2);
        size_t ncur[8] = {}, n = 0;
        if (!jobs || !cur || !pj || !pj2)
                goto out;
        for (size_t i = 0; i + 1 < np && n < 8; i += 2) {
                if (flink_parse_job((const char *) parts[i].p, parts[i].n, &jobs[n]) < 0 ||
                    flink_parse_requirements((const char *) parts[i + 1].p, parts[i + 1].n, cur[n], FLINK_MAX_VERTICES,
                                             &ncur[n]) < 0)
                        continue;
                n++;
        }
        bool distinct = true;
        for (size_t i = 0; i < n; i++) {
                pj[i] = (struct plan_job) { .job = &jobs[i], .cur = cur[i], .ncur = ncur[i] };
                pj2[n - 1 - i] = pj[i];
                for (size_t k = 0; k < i; k++)
                        distinct &= strcmp(jobs[i].jid, jobs[k].jid) != 0;
        }
        int r = plan_compute(pj, n, total, leaving);
        if (r < 0) {
                FUZZ_CHECK(r == -EINVAL);
                goto out;
        }
        for (size_t i = 0; i < n; i++) {
                const struct plan_job *p = &pj[i];
                bool change = false;
                FUZZ_CHECK(p->nout >= p->job->nv && p->nout <= FLINK_MAX_VERTICES);
                for (size_t k = 0; k < p->nout; k++) {
                        const struct flink_bounds *o = &p->out[k], *b = NULL;
                        /* The job's vertices first, against their (first) current bounds;
                         * then bounds of vertices the job does not list, kept as they are. */
                        for (size_t m = 0; m < p->ncur && !b; m++)
                                if (k < p->job->nv ? strcmp(p->cur[m].vid, o->vid) == 0
                                                   : strcmp(p->cur[m].vid, o->vid) == 0 &&
                                                             p->cur[m].lower == o->lower && p->cur[m].upper == o->upper)
                                        b = &p->cur[m];
                        FUZZ_CHECK(b);
                        FUZZ_CHECK(o->upper <= b->upper && o->lower <= b->lower); /* never raised */
                        if (b->lower <= b->upper)
                                FUZZ_CHECK(o->lower <= o->upper);
                        if (b->upper >= 1)
                                FUZZ_CHECK(o->upper >= 1); /* every vertex keeps a slot */
                        change |= o->upper != b->upper || o->lower != b->lower;
                }
                FUZZ_CHECK(change == p->change);
                if (bounds_sendable(p->out, p->nout))
                        check_format_round_trip(p->out, p->nout);
        }
        /* Same cluster state, jobs listed in another order: the same bounds. */
        if (distinct) {
                FUZZ_CHECK(plan_compute(pj2, n, total, leaving) == 0);
                for (size_t i = 0; i < n; i++) {
                        const struct plan_job *a = &pj[i], *b = &pj2[n - 1 - i];
                        FUZZ_CHECK(a->nout == b->nout && a->change == b->change);
                        for (size_t k = 0; k < a->nout; k++)
                                FUZZ_CHECK(strcmp(a->out[k].vid, b->out[k].vid) == 0 &&
                                           a->out[k].lower == b->out[k].lower && a->out[k].upper == b->out[k].upper);
                }
        }
out:
        free(jobs);
        free(cur);
        free(pj);
        free(pj2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size < 1)
                return 0;
        unsigned which = data[0] % F_MAX;
        const char *body = (const char *) data + 1;
        size_t len = size - 1;
        int r;

        switch (which) {
        case F_OVERVIEW: {
                struct flink_overview o;
                memset(&o, 0x5a, sizeof o);
                r = flink_parse_overview(body, len, &o);
                if (r < 0) {
                        FUZZ_CHECK((uint8_t) o.version[0] == 0x5a);
                        break;
                }
                unsigned ma, mi;
                FUZZ_CHECK(flink_version_parse(o.version, &ma, &mi) == 0);
                FUZZ_CHECK(o.slots_total <= 10000000 && o.taskmanagers <= 100000);
                break;
        }
        case F_JOBS: {
                struct flink_job_ref refs[FLINK_MAX_JOBS];
                size_t n = 4242;
                r = flink_parse_jobs_overview(body, len, refs, FLINK_MAX_JOBS, &n);
                if (r < 0) {
                        FUZZ_CHECK(n == 4242);
                        break;
                }
                FUZZ_CHECK(n <= FLINK_MAX_JOBS);
                for (size_t i = 0; i < n; i++)
                        FUZZ_CHECK(flink_id_valid(refs[i].jid) && strlen(refs[i].state) < sizeof refs[i].state);
                size_t m = 0;
                r = flink_parse_jobs_overview(body, len, refs, 1, &m);
                FUZZ_CHECK(n > 1 ? r == -E2BIG : (r == 0 && m == n));
                break;
        }
        case F_JOB: {
                struct flink_job *j = malloc(sizeof *j);
                if (!j)
                        return 0;
                memset(j, 0x5a, sizeof *j);
                r = flink_parse_job(body, len, j);
                if (r < 0)
                        FUZZ_CHECK((uint8_t) j->jid[0] == 0x5a);
                else {
                        FUZZ_CHECK(flink_id_valid(j->jid) && j->nv <= FLINK_MAX_VERTICES);
                        for (size_t i = 0; i < j->nv; i++)
                                FUZZ_CHECK(flink_id_valid(j->v[i].id) && j->v[i].parallelism <= 1 << 15);
                        (void) plan_slots_needed(j);
                }
                free(j);
                break;
        }
        case F_TMS: {
                static const size_t maxes[] = { 0, 1, 4, FLINK_MAX_TMS };
                for (size_t i = 0; i < ELEMENTSOF(maxes); i++) {
                        _cleanup_free_ struct flink_tm *tms = calloc(FLINK_MAX_TMS, sizeof *tms);
                        size_t n = 4242;
                        if (!tms)
                                return 0;
                        r = flink_parse_taskmanagers(body, len, tms, maxes[i], &n);
                        if (r < 0) {
                                FUZZ_CHECK(n == 4242);
                                continue;
                        }
                        FUZZ_CHECK(n <= maxes[i]);
                        for (size_t k = 0; k < n; k++) {
                                FUZZ_CHECK(strlen(tms[k].id) < sizeof tms[k].id && strlen(tms[k].ip) < sizeof tms[k].ip);
                                for (const char *p = tms[k].ip; *p; p++) /* only an address is matched against pod IPs */
                                        FUZZ_CHECK(strchr("0123456789abcdefABCDEF.:", *p));
                        }
                }
                break;
        }
        case F_REQ: {
                struct flink_bounds b[FLINK_MAX_VERTICES];
                size_t n = 4242;
                r = flink_parse_requirements(body, len, b, FLINK_MAX_VERTICES, &n);
                if (r < 0) {
                        FUZZ_CHECK(n == 4242);
                        break;
                }
                for (size_t i = 0; i < n; i++)
                        FUZZ_CHECK(flink_id_valid(b[i].vid) && b[i].lower <= 1 << 15 && b[i].upper <= 1 << 15);
                check_format_round_trip(b, n);
                break;
        }
        case F_SCHEDULER: {
                char buf[32];
                memset(buf, 0x5a, sizeof buf);
                r = flink_parse_scheduler(body, len, buf, sizeof buf);
                if (r == 0)
                        FUZZ_CHECK(memchr(buf, 0, sizeof buf));
                else
                        FUZZ_CHECK((uint8_t) buf[0] == 0x5a);
                char none[1];
                (void) flink_parse_scheduler(body, len, none, 0);
                break;
        }
        case F_TRIGGER: {
                char id[64];
                memset(id, 0x5a, sizeof id);
                r = flink_parse_trigger(body, len, id, sizeof id);
                if (r == 0) {
                        FUZZ_CHECK(id[0] && strlen(id) < sizeof id);
                        for (const char *p = id; *p; p++) /* it goes into a URL path */
                                FUZZ_CHECK((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
                                           (*p >= 'A' && *p <= 'Z') || *p == '-');
                } else
                        FUZZ_CHECK((uint8_t) id[0] == 0x5a);
                break;
        }
        case F_CKPT_STATUS: {
                enum flink_checkpoint_state s = 42;
                uint64_t id = 4242;
                char why[64];
                r = flink_parse_checkpoint_status(body, len, &s, &id, why, sizeof why);
                if (r < 0)
                        FUZZ_CHECK((int) s == 42 && id == 4242);
                (void) flink_parse_checkpoint_status(body, len, &s, NULL, why, 0);
                break;
        }
        case F_CKPTS: {
                int64_t ms = 4242;
                r = flink_parse_checkpoints(body, len, &ms);
                if (r < 0)
                        FUZZ_CHECK(ms == 4242);
                else
                        FUZZ_CHECK(ms >= 0);
                break;
        }
        case F_ERRORS: {
                char buf[128];
                flink_parse_errors(body, len, buf, sizeof buf);
                FUZZ_CHECK(strlen(buf) < sizeof buf && !strchr(buf, '\n'));
                flink_parse_errors(body, len, buf, 1);
                FUZZ_CHECK(buf[0] == 0);
                flink_parse_errors(body, len, buf, 0);
                break;
        }
        case F_PLAN:
                fuzz_plan((const uint8_t *) body, len);
                break;
        }
        return 0;
}
