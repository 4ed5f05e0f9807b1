/* The outcome a Flink user cares about, asserted the same way everywhere. */
#pragma once

#include <string.h>

#include <criterion/criterion.h>

#include "flink_sim.h"
#include "helpers.h"

/* The restarts a reclaim cost job jid, as the JobManager counted them:
 * failovers (TaskManagers lost: a restart from the last checkpoint) and
 * rescales in place. Waited for (up to 15 s, scaled), since a restart may
 * still be under way; the job must be RUNNING again. */
#define assert_job_restarts(fl, jid, failovers, rescales)                                                                 \
        cr_assert(eventually(flink_sim_restarts((fl), (jid)) == (failovers) &&                                               \
                                     flink_sim_rescales((fl), (jid)) == (rescales) &&                                        \
                                     strcmp(flink_sim_job_state((fl), (jid)), "RUNNING") == 0,                               \
                             15000),                                                                                      \
                  "%s: %u failovers, %u rescales (expected %u and %u), %s", (jid), flink_sim_restarts((fl), (jid)),      \
                  flink_sim_rescales((fl), (jid)), (unsigned) (failovers), (unsigned) (rescales),                          \
                  flink_sim_job_state((fl), (jid)))
