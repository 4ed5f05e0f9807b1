#include "plan.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct group {
        const char *id;
        unsigned need;   /* largest vertex parallelism in the group */
        unsigned share;
};

static size_t groups_of(const struct flink_job *job, struct group *g) {
        size_t n = 0;
        for (size_t i = 0; i < job->nv; i++) {
                const struct flink_vertex *v = &job->v[i];
                size_t k;
                for (k = 0; k < n; k++)
                        if (strcmp(g[k].id, v->ssg) == 0)
                                break;
                if (k == n)
                        g[n++] = (struct group) { .id = v->ssg };
                if (v->parallelism > g[k].need)
                        g[k].need = v->parallelism;
        }
        return n;
}

unsigned plan_slots_needed(const struct flink_job *job) {
        struct group g[FLINK_MAX_VERTICES];
        size_t n = groups_of(job, g);
        unsigned s = 0;
        for (size_t i = 0; i < n; i++)
                s += g[i].need;
        return s;
}

/* Splits total across weights: each gets at least min_each, the rest in
 * proportion to its weight, remainders to the largest fractions (ties to the
 * first), so the result is deterministic. */
static void apportion(const unsigned *weight, const unsigned *min_each, unsigned *out, size_t n, unsigned total) {
        unsigned long long wsum = 0;
        unsigned base = 0;
        for (size_t i = 0; i < n; i++) {
                wsum += weight[i];
                base += min_each[i];
        }
        unsigned extra = total > base ? total - base : 0;
        unsigned given = 0;
        unsigned long long *rem = calloc(n ? n : 1, sizeof *rem);
        for (size_t i = 0; i < n; i++) {
                unsigned long long num = (unsigned long long) extra * weight[i];
                unsigned q = wsum ? (unsigned) (num / wsum) : 0;
                out[i] = min_each[i] + q;
                given += q;
                if (rem)
                        rem[i] = wsum ? num % wsum : 0;
        }
        /* At most n rounds: the remainders add up to what is left. Without
         * weights there is nothing to share in proportion (and one slot per
         * round would take as many rounds as the JobManager claims slots). */
        while (rem && wsum && given < extra) {
                size_t best = 0;
                for (size_t i = 1; i < n; i++)
                        if (rem[i] > rem[best])
                                best = i;
                out[best]++;
                rem[best] = 0;
                given++;
        }
        free(rem);
}

static int cmp_job(const void *a, const void *b) {
        const struct plan_job *x = *(struct plan_job *const *) a, *y = *(struct plan_job *const *) b;
        return strcmp(x->job->jid, y->job->jid);
}

static const struct flink_bounds *bounds_of(const struct plan_job *j, const char *vid) {
        for (size_t i = 0; i < j->ncur; i++)
                if (strcmp(j->cur[i].vid, vid) == 0)
                        return &j->cur[i];
        return NULL;
}

int plan_compute(struct plan_job *jobs, size_t n, unsigned slots_total, unsigned slots_leaving) {
        unsigned left = slots_total > slots_leaving ? slots_total - slots_leaving : 0, need_all = 0;
        struct plan_job **order = calloc(n ? n : 1, sizeof *order);
        unsigned *need = calloc(n ? n : 1, sizeof *need), *ngroups = calloc(n ? n : 1, sizeof *ngroups),
                 *share = calloc(n ? n : 1, sizeof *share);
        int r = 0;

        if (!order || !need || !ngroups || !share) {
                r = -ENOMEM;
                goto out;
        }
        for (size_t i = 0; i < n; i++) {
                order[i] = &jobs[i];
                for (size_t k = 0; k < jobs[i].job->nv; k++)
                        if (!bounds_of(&jobs[i], jobs[i].job->v[k].id)) {
                                r = -EINVAL;
                                goto out;
                        }
        }
        /* jid order: every agent shares out the same way. */
        qsort(order, n, sizeof *order, cmp_job);
        for (size_t i = 0; i < n; i++) {
                struct group g[FLINK_MAX_VERTICES];
                ngroups[i] = (unsigned) groups_of(order[i]->job, g);
                need[i] = plan_slots_needed(order[i]->job);
                need_all += need[i];
        }
        apportion(need, ngroups, share, n, left);

        for (size_t i = 0; i < n; i++) {
                struct plan_job *j = order[i];
                struct group g[FLINK_MAX_VERTICES];
                unsigned w[FLINK_MAX_VERTICES], mins[FLINK_MAX_VERTICES], s[FLINK_MAX_VERTICES];
                size_t ng = groups_of(j->job, g);
                bool fits = need_all <= left;

                for (size_t k = 0; k < ng; k++) {
                        w[k] = g[k].need;
                        mins[k] = 1;
                }
                apportion(w, mins, s, ng, share[i]);
                j->nout = 0;
                j->change = false;
                for (size_t k = 0; k < j->job->nv; k++) {
                        const struct flink_vertex *v = &j->job->v[k];
                        const struct flink_bounds *b = bounds_of(j, v->id);
                        struct flink_bounds *o = &j->out[j->nout++];
                        *o = *b;
                        if (!fits) {
                                size_t gi = 0;
                                while (gi < ng && strcmp(g[gi].id, v->ssg) != 0)
                                        gi++;
                                unsigned cap = s[gi] ? s[gi] : 1;
                                if (o->upper > cap)
                                        o->upper = cap;
                                if (o->lower > o->upper)
                                        o->lower = o->upper;
                        }
                        if (o->upper != b->upper || o->lower != b->lower)
                                j->change = true;
                }
                /* Bounds of vertices the job no longer lists are kept as they are. */
                for (size_t k = 0; k < j->ncur; k++) {
                        bool listed = false;
                        for (size_t m = 0; m < j->job->nv && !listed; m++)
                                listed = strcmp(j->job->v[m].id, j->cur[k].vid) == 0;
                        if (!listed && j->nout < FLINK_MAX_VERTICES)
                                j->out[j->nout++] = j->cur[k];
                }
        }
out:
        free(order);
        free(need);
        free(ngroups);
        free(share);
        return r;
}
