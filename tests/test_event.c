#include <criterion/criterion.h>
#include <string.h>

#include "event.h"

Test(event, spot_id_ignores_time) {
        struct imds_instance_action a = { .action = "terminate", .time = 1000 }, b = a;
        struct event e1, e2, e3;
        b.time = 1005; /* the service may recompute the time on every poll */
        event_from_instance_action(&a, "i-0123456789abcdef0", &e1);
        event_from_instance_action(&b, "i-0123456789abcdef0", &e2);
        cr_assert_str_eq(e1.id, e2.id);
        cr_assert_eq(e2.deadline, 1005);
        strcpy(b.action, "stop");
        event_from_instance_action(&b, "i-0123456789abcdef0", &e3);
        cr_assert_str_neq(e1.id, e3.id);
        event_from_instance_action(&a, "i-0fffffffffffffff0", &e3);
        cr_assert_str_neq(e1.id, e3.id, "ids differ across instances");
        cr_assert_eq(e1.kind, EVENT_SPOT_INTERRUPTION);
}

/* EC2 issues one rebalance recommendation per instance; a service that
 * recomputes noticeTime on every answer (AWS's own mock does) must not make
 * every poll a new event. The time stays as data. */
Test(event, rebalance_id_ignores_notice_time) {
        struct event e1, e2, e3;
        event_from_rebalance(1795607813, "i-0123456789abcdef0", &e1);
        event_from_rebalance(1795607814, "i-0123456789abcdef0", &e2);
        cr_assert_str_eq(e1.id, e2.id);
        cr_assert_eq(e1.notice_time, 1795607813);
        cr_assert_eq(e2.notice_time, 1795607814);
        cr_assert_eq(e2.kind, EVENT_REBALANCE);
        cr_assert_eq(e2.deadline, 0);
        event_from_rebalance(1795607813, "i-0fffffffffffffff0", &e3);
        cr_assert_str_neq(e1.id, e3.id, "ids differ across instances");
}

Test(event, scheduled_and_others) {
        struct imds_scheduled_event s = { .code = "instance-stop", .state = "active", .event_id = "instance-event-1",
                                          .not_before = 5000 };
        struct event e;
        event_from_scheduled(&s, "i-1", &e);
        cr_assert_str_eq(e.id, "maintenance-i-1-instance-event-1");
        cr_assert_eq(e.deadline, 5000);
        cr_assert_not(e.canceled);
        strcpy(s.state, "canceled");
        event_from_scheduled(&s, "i-1", &e);
        cr_assert(e.canceled);
        strcpy(s.state, "completed");
        event_from_scheduled(&s, "i-1", &e);
        cr_assert(e.canceled);

        event_from_rebalance(1795607813, "i-1", &e);
        cr_assert_str_eq(e.id, "rebalance-i-1");
        event_from_lifecycle("Terminated", "i-1", 100, 120, &e);
        cr_assert_str_eq(e.id, "asg-i-1-terminated");
        cr_assert_eq(e.deadline, 220);

        cr_assert(event_scheduled_code_is_disruptive("instance-retirement"));
        cr_assert(event_scheduled_code_is_disruptive("system-reboot"));
        cr_assert_not(event_scheduled_code_is_disruptive("system-maintenance"));
}

Test(event, names_round_trip) {
        for (int k = 0; k < _EVENT_KIND_MAX; k++)
                cr_assert_eq(event_kind_from_string(event_kind_to_string(k)), k);
        for (int a = 0; a < _ACTION_MAX; a++)
                cr_assert_eq(event_action_from_string(event_action_to_string(a)), a);
        cr_assert_eq(event_kind_from_string("spot"), -1);
}
