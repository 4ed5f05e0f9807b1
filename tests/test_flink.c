/* Flink REST payload parsers and builders (common/flink.c). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "flink.h"

#define P(s) (s), strlen(s)
#define JID "0123456789abcdef0123456789abcdef"
#define VID "fedcba9876543210fedcba9876543210"

Test(flink, overview_and_version) {
        struct flink_overview o;
        cr_assert_eq(flink_parse_overview(P("{\"taskmanagers\":3,\"slots-total\":12,\"slots-available\":2,\"flink-version\":\"1.18.1\",\"flink-commit\":\"x\"}"), &o), 0);
        cr_assert_str_eq(o.version, "1.18.1");
        cr_assert_eq(o.slots_total, 12);
        unsigned ma, mi;
        cr_assert_eq(flink_version_parse("2.0.0", &ma, &mi), 0);
        cr_assert(ma == 2 && mi == 0);
        cr_assert_eq(flink_version_parse("x.y", &ma, &mi), -EINVAL);
        cr_assert_eq(flink_parse_overview(P("{\"taskmanagers\":-1,\"slots-total\":1,\"slots-available\":1,\"flink-version\":\"1.18.1\"}"), &o), -EINVAL);
        cr_assert_eq(flink_parse_overview(P("{\"taskmanagers\":1}"), &o), -ENODATA);
        cr_assert_eq(flink_parse_overview(P("<html>"), &o), -EBADMSG);
}

Test(flink, job_details) {
        struct flink_job *j = calloc(1, sizeof *j);
        const char *body = "{\"jid\":\"" JID "\",\"name\":\"orders\",\"state\":\"RUNNING\",\"vertices\":[{\"id\":\"" VID
                           "\",\"name\":\"src\",\"parallelism\":4,\"maxParallelism\":128,\"slotSharingGroupId\":\"" JID
                           "\",\"tasks\":{\"RUNNING\":3,\"DEPLOYING\":1,\"FAILED\":0}}]}";
        cr_assert_eq(flink_parse_job(P(body), j), 0);
        cr_assert_str_eq(j->state, "RUNNING");
        cr_assert_eq(j->nv, 1);
        cr_assert_eq(j->v[0].parallelism, 4);
        cr_assert_eq(j->v[0].tasks_running, 3);
        cr_assert_eq(j->v[0].tasks_total, 4);
        cr_assert_str_eq(j->v[0].ssg, JID);
        cr_assert_eq(flink_parse_job(P("{\"jid\":\"../etc\",\"state\":\"RUNNING\",\"vertices\":[]}"), j), -EINVAL,
                     "ids go into URLs: only 32 hex");
        cr_assert_eq(flink_parse_job(P("{\"jid\":\"" JID "\",\"state\":\"RUNNING\"}"), j), -ENODATA);
        free(j);
}

Test(flink, taskmanagers_native_and_standalone) {
        struct flink_tm tm[4];
        size_t n;
        const char *body = "{\"taskmanagers\":[{\"id\":\"orders-taskmanager-1-1\",\"path\":\"pekko.tcp://flink@10.0.0.5:6122/user/rpc/taskmanager_0\","
                           "\"slotsNumber\":2,\"freeSlots\":0},{\"id\":\"10.0.0.7:6122-abc123\",\"path\":\"akka.tcp://flink@10.0.0.7:6122/user/rpc/taskmanager_0\","
                           "\"slotsNumber\":4,\"freeSlots\":1}]}";
        cr_assert_eq(flink_parse_taskmanagers(P(body), tm, 4, &n), 0);
        cr_assert_eq(n, 2);
        cr_assert_str_eq(tm[0].id, "orders-taskmanager-1-1");
        cr_assert_str_eq(tm[1].ip, "10.0.0.7");
        cr_assert_eq(tm[1].slots, 4);
        cr_assert_eq(flink_parse_taskmanagers(P(body), tm, 1, &n), -E2BIG);
}

Test(flink, requirements_round_trip) {
        struct flink_bounds b[4];
        size_t n;
        const char *body = "{\"" VID "\":{\"parallelism\":{\"lowerBound\":1,\"upperBound\":8}}}";
        cr_assert_eq(flink_parse_requirements(P(body), b, 4, &n), 0);
        cr_assert_eq(n, 1);
        cr_assert_eq(b[0].upper, 8);
        char *out;
        b[0].upper = 5;
        cr_assert_eq(flink_format_requirements(b, n, &out), 0);
        cr_assert_str_eq(out, "{\"" VID "\":{\"parallelism\":{\"lowerBound\":1,\"upperBound\":5}}}");
        free(out);
        b[0].lower = 6;
        cr_assert_eq(flink_format_requirements(b, n, &out), -EINVAL, "lower > upper is never sent");
        cr_assert_eq(flink_parse_requirements(P("{\"" VID "\":{\"parallelism\":{\"lowerBound\":1.5,\"upperBound\":8}}}"), b, 4, &n), -EINVAL);
}

Test(flink, config_checkpoints_errors) {
        char buf[32], id[64];
        cr_assert_eq(flink_parse_scheduler(P("[{\"key\":\"jobmanager.scheduler\",\"value\":\"adaptive\"}]"), buf, sizeof buf), 0);
        cr_assert_str_eq(buf, "adaptive");
        cr_assert_eq(flink_parse_scheduler(P("[{\"key\":\"x\",\"value\":\"y\"}]"), buf, sizeof buf), 0);
        cr_assert_str_eq(buf, "");
        cr_assert_eq(flink_parse_trigger(P("{\"request-id\":\"9a8b7c\"}"), id, sizeof id), 0);
        cr_assert_eq(flink_parse_trigger(P("{\"request-id\":\"../../x\"}"), id, sizeof id), -EINVAL);
        enum flink_checkpoint_state st;
        uint64_t cid = 0;
        char why[64];
        cr_assert_eq(flink_parse_checkpoint_status(P("{\"status\":{\"id\":\"IN_PROGRESS\"}}"), &st, &cid, why, sizeof why), 0);
        cr_assert_eq(st, FLINK_CKPT_IN_PROGRESS);
        cr_assert_eq(flink_parse_checkpoint_status(P("{\"status\":{\"id\":\"COMPLETED\"},\"operation\":{\"checkpointId\":42}}"), &st, &cid, why, sizeof why), 0);
        cr_assert(st == FLINK_CKPT_COMPLETED && cid == 42);
        cr_assert_eq(flink_parse_checkpoint_status(P("{\"status\":{\"id\":\"COMPLETED\"},\"operation\":{\"failureCause\":{\"class\":\"CheckpointException\"}}}"), &st, &cid, why, sizeof why), 0);
        cr_assert_eq(st, FLINK_CKPT_FAILED);
        cr_assert_str_eq(why, "CheckpointException");
        int64_t ms;
        cr_assert_eq(flink_parse_checkpoints(P("{\"latest\":{\"completed\":{\"id\":3,\"latest_ack_timestamp\":1700000000000}}}"), &ms), 0);
        cr_assert_eq(ms, 1700000000000LL);
        cr_assert_eq(flink_parse_checkpoints(P("{\"latest\":{\"completed\":null}}"), &ms), 0);
        cr_assert_eq(ms, 0);
        flink_parse_errors(P("{\"errors\":[\"Job not found.\\nat org.apache...\"]}"), buf, sizeof buf);
        cr_assert_str_eq(buf, "Job not found.");
}

/* Found by fuzzing (tests/fuzz/corpus/flink/crash-checkpoints-inf): a number
 * past what the C type holds (1e300, or 1e400, which parses as inf) was
 * converted anyway, which is undefined (UBSan: float-cast-overflow). */
Test(flink, checkpoint_numbers_out_of_range) {
        int64_t ms = 7;
        cr_assert_eq(flink_parse_checkpoints(P("{\"latest\":{\"completed\":{\"latest_ack_timestamp\":1e400}}}"), &ms), -EINVAL);
        cr_assert_eq(flink_parse_checkpoints(P("{\"latest\":{\"completed\":{\"trigger_timestamp\":9223372036854775808}}}"), &ms),
                     -EINVAL, "2^63 does not fit an int64_t");
        cr_assert_eq(ms, 7, "untouched on failure");
        cr_assert_eq(flink_parse_checkpoints(P("{\"latest\":{\"completed\":{\"latest_ack_timestamp\":9007199254740992}}}"), &ms), 0);
        cr_assert_eq(ms, 9007199254740992LL);

        enum flink_checkpoint_state st = FLINK_CKPT_IN_PROGRESS;
        uint64_t id = 7;
        char why[16];
        cr_assert_eq(flink_parse_checkpoint_status(P("{\"status\":{\"id\":\"COMPLETED\"},\"operation\":{\"checkpointId\":1e300}}"),
                                                   &st, &id, why, sizeof why), -EINVAL);
        cr_assert_eq(flink_parse_checkpoint_status(P("{\"status\":{\"id\":\"COMPLETED\"},\"operation\":{\"checkpointId\":18446744073709551616}}"),
                                                   &st, &id, why, sizeof why), -EINVAL, "2^64 does not fit a uint64_t");
        cr_assert(st == FLINK_CKPT_IN_PROGRESS && id == 7, "untouched on failure");
}
