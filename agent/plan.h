/* How far to lower the jobs of one Flink cluster when slots leave
 * (design.md step 4). Pure: no I/O, so two agents given the same cluster
 * state compute the same bounds. */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include "flink.h"

struct plan_job {
        const struct flink_job *job;       /* live vertices (parallelism, slot-sharing group) */
        const struct flink_bounds *cur;    /* current resource requirements */
        size_t ncur;
        struct flink_bounds out[FLINK_MAX_VERTICES]; /* the bounds to PUT (every vertex) */
        size_t nout;
        bool change;                       /* out differs from cur */
};

/* Slots a job needs: over its slot-sharing groups, the largest vertex
 * parallelism of each (vertices without a group share one). */
unsigned plan_slots_needed(const struct flink_job *job);

/* Fits the jobs into slots_total - slots_leaving slots: when they need more,
 * the slots left are shared across jobs in proportion to their needs (in jid
 * order, largest remainder), within a job across its groups likewise, every
 * group keeping at least one; a vertex's upper bound becomes min(its bound,
 * its group's share) and the lower bound never exceeds it. Bounds are never
 * raised. Returns 0, or -EINVAL when a job's bounds do not cover its
 * vertices. */
int plan_compute(struct plan_job *jobs, size_t n, unsigned slots_total, unsigned slots_leaving);
