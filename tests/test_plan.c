#include <criterion/criterion.h>
#include <stdio.h>
#include <errno.h>
#include <limits.h>
#include <string.h>

#include "plan.h"

static void vertex(struct flink_job *j, const char *id, unsigned p, unsigned maxp, const char *ssg) {
        struct flink_vertex *v = &j->v[j->nv++];
        memset(v->id, 0, sizeof v->id);
        snprintf(v->id, sizeof v->id, "%s", id);
        snprintf(v->ssg, sizeof v->ssg, "%s", ssg);
        v->parallelism = p;
        v->max_parallelism = maxp;
}

static void bounds(struct flink_bounds *b, size_t *n, const char *vid, unsigned lo, unsigned hi) {
        snprintf(b[*n].vid, sizeof b[*n].vid, "%s", vid);
        b[*n].lower = lo;
        b[*n].upper = hi;
        (*n)++;
}

#define V(c) c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c /* 32 chars */

static const struct flink_bounds *out_of(const struct plan_job *p, const char *vid) {
        for (size_t i = 0; i < p->nout; i++)
                if (strcmp(p->out[i].vid, vid) == 0)
                        return &p->out[i];
        return NULL;
}

Test(plan, one_group_fits_the_survivors) {
        static struct flink_job j = { .jid = V("a") };
        struct flink_bounds cur[4];
        size_t n = 0;
        j.nv = 0;
        vertex(&j, V("1"), 8, 128, "");
        vertex(&j, V("2"), 8, 128, "");
        bounds(cur, &n, V("1"), 1, 8);
        bounds(cur, &n, V("2"), 1, 8);
        struct plan_job p = { .job = &j, .cur = cur, .ncur = n };
        cr_assert_eq(plan_slots_needed(&j), 8, "one slot-sharing group: the largest parallelism");
        cr_assert_eq(plan_compute(&p, 1, 8, 3), 0);
        cr_assert(p.change);
        cr_assert_eq(out_of(&p, V("1"))->upper, 5);
        cr_assert_eq(out_of(&p, V("2"))->upper, 5);
        cr_assert_eq(out_of(&p, V("1"))->lower, 1);
}

Test(plan, nothing_changes_when_free_slots_absorb_the_loss) {
        static struct flink_job j = { .jid = V("a") };
        struct flink_bounds cur[2];
        size_t n = 0;
        j.nv = 0;
        vertex(&j, V("1"), 4, 128, "");
        bounds(cur, &n, V("1"), 2, 4);
        struct plan_job p = { .job = &j, .cur = cur, .ncur = n };
        cr_assert_eq(plan_compute(&p, 1, 10, 4), 0);
        cr_assert_not(p.change);
        cr_assert_eq(out_of(&p, V("1"))->upper, 4);
}

Test(plan, several_slot_sharing_groups) {
        static struct flink_job j = { .jid = V("a") };
        struct flink_bounds cur[3];
        size_t n = 0;
        j.nv = 0;
        vertex(&j, V("1"), 6, 128, V("g"));
        vertex(&j, V("2"), 6, 128, V("g"));
        vertex(&j, V("3"), 2, 128, V("h"));
        bounds(cur, &n, V("1"), 1, 6);
        bounds(cur, &n, V("2"), 6, 6);
        bounds(cur, &n, V("3"), 1, 2);
        struct plan_job p = { .job = &j, .cur = cur, .ncur = n };
        cr_assert_eq(plan_slots_needed(&j), 8);
        cr_assert_eq(plan_compute(&p, 1, 8, 4), 0);
        /* 4 slots: 1 each, then 2 more by weight 6:2 -> g gets 3, h gets 1 */
        cr_assert_eq(out_of(&p, V("1"))->upper, 3);
        cr_assert_eq(out_of(&p, V("2"))->upper, 3);
        cr_assert_eq(out_of(&p, V("2"))->lower, 3, "lower never above upper");
        cr_assert_eq(out_of(&p, V("3"))->upper, 1);
}

Test(plan, session_cluster_shares_in_proportion_and_converges) {
        static struct flink_job a = { .jid = V("a") }, b = { .jid = V("b") };
        struct flink_bounds ca[1], cb[1];
        size_t na = 0, nb = 0;
        a.nv = b.nv = 0;
        vertex(&a, V("1"), 6, 128, "");
        vertex(&b, V("2"), 2, 128, "");
        bounds(ca, &na, V("1"), 1, 6);
        bounds(cb, &nb, V("2"), 1, 2);
        struct plan_job p1[2] = { { .job = &a, .cur = ca, .ncur = 1 }, { .job = &b, .cur = cb, .ncur = 1 } };
        struct plan_job p2[2] = { { .job = &b, .cur = cb, .ncur = 1 }, { .job = &a, .cur = ca, .ncur = 1 } };
        cr_assert_eq(plan_compute(p1, 2, 8, 4), 0);
        cr_assert_eq(plan_compute(p2, 2, 8, 4), 0);
        cr_assert_eq(p1[0].out[0].upper + p1[1].out[0].upper, 4, "uses exactly the slots left");
        cr_assert_eq(p1[0].out[0].upper, 3);
        cr_assert_eq(p1[1].out[0].upper, 1);
        /* the order the jobs come in does not matter: two agents agree */
        cr_assert_eq(p2[1].out[0].upper, p1[0].out[0].upper);
        cr_assert_eq(p2[0].out[0].upper, p1[1].out[0].upper);
}

Test(plan, never_raises_and_keeps_at_least_one) {
        static struct flink_job j = { .jid = V("a") };
        struct flink_bounds cur[1];
        size_t n = 0;
        j.nv = 0;
        vertex(&j, V("1"), 2, 128, "");
        bounds(cur, &n, V("1"), 1, 2);
        struct plan_job p = { .job = &j, .cur = cur, .ncur = n };
        cr_assert_eq(plan_compute(&p, 1, 2, 5), 0, "more leaving than there is");
        cr_assert_eq(out_of(&p, V("1"))->upper, 1);
        struct flink_bounds missing[1];
        size_t m = 0;
        bounds(missing, &m, V("9"), 1, 2);
        struct plan_job bad = { .job = &j, .cur = missing, .ncur = 1 };
        cr_assert_eq(plan_compute(&bad, 1, 2, 1), -EINVAL);
}

/* Found by fuzzing (tests/fuzz/corpus/flink/slow-plan-no-weights): with
 * nothing to weigh (no running job, or vertices reporting parallelism 0) the
 * slots left were handed out one per round, as many rounds as the
 * JobManager claims slots: seconds of CPU for a large slots-total. The
 * bounds are the same either way; it must just not take the rounds. */
Test(plan, no_weights_take_no_rounds, .timeout = 10) {
        static struct flink_job j = { .jid = V("a") };
        struct flink_bounds cur[1];
        size_t n = 0;
        j.nv = 0;
        vertex(&j, V("1"), 0, 128, "");
        bounds(cur, &n, V("1"), 1, 4);
        for (int i = 0; i < 3; i++) {
                struct plan_job p = { .job = &j, .cur = cur, .ncur = n };
                cr_assert_eq(plan_compute(NULL, 0, UINT_MAX, 0), 0);
                cr_assert_eq(plan_compute(&p, 1, UINT_MAX, 0), 0);
                cr_assert_eq(p.nout, 1);
                cr_assert(out_of(&p, V("1"))->lower == 1 && out_of(&p, V("1"))->upper == 4);
                cr_assert_not(p.change);
        }
}
