/* Payload parsers, fed the shapes the real service serves (protocols.md §1):
 * tab-indented JSON without a trailing newline, compact JSON, and junk. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "imds.h"

#define P(s) (s), strlen(s)

Test(imds_parse, instance_action_shapes) {
        struct imds_instance_action a;
        const char *why = NULL;
        cr_assert_eq(imds_parse_instance_action(P("{\n\t\"action\": \"terminate\",\n\t\"time\": \"2026-11-25T11:58:53Z\"\n}"), &a, &why), 0);
        cr_assert_str_eq(a.action, "terminate");
        cr_assert_eq(a.time, 1795607933);
        cr_assert_eq(imds_parse_instance_action(P("{\"action\":\"stop\",\"time\":\"2026-11-25T11:58:53Z\"}\n"), &a, &why), 0);
        cr_assert_str_eq(a.action, "stop");
        cr_assert_eq(imds_parse_instance_action(P("  {\"time\":\"2026-11-25T11:58:53Z\",\"action\":\"hibernate\"}  "), &a, &why), 0);
        cr_assert_str_eq(a.action, "hibernate");
}

Test(imds_parse, instance_action_rejects) {
        static const struct { const char *body; int err; const char *why; } bad[] = {
                { "{\n\t\"action\": \"termi", -EBADMSG, "not a JSON object" },
                { "[]", -EBADMSG, "not a JSON object" },
                { "{\"time\":\"2026-11-25T11:58:53Z\"}", -ENODATA, "no \"action\"" },
                { "{\"action\":\"terminate\"}", -ENODATA, "no \"time\"" },
                { "{\"action\":\"terminate\",\"time\":\"soon\"}", -EINVAL, "RFC 3339" },
                { "{\"action\":1,\"time\":\"2026-11-25T11:58:53Z\"}", -EINVAL, "short string" },
                { "{\"action\":\"Terminate;rm\",\"time\":\"2026-11-25T11:58:53Z\"}", -EINVAL, "lowercase" },
                { "{\"action\":\"terminatexxxxxxxxxxxxx\",\"time\":\"2026-11-25T11:58:53Z\"}", -EINVAL, "short string" },
                { "{\"action\":\"stop\",\"time\":\"2026-11-25T11:58:53Z\"} trailing", -EBADMSG, "not a JSON object" },
                { "<?xml version=\"1.0\"?><html></html>", -EBADMSG, "not a JSON object" },
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                struct imds_instance_action a = { .action = "untouched" };
                const char *why = NULL;
                cr_assert_eq(imds_parse_instance_action(P(bad[i].body), &a, &why), bad[i].err, "%s", bad[i].body);
                cr_assert_not_null(why);
                cr_assert(strstr(why, bad[i].why), "why \"%s\" for %s", why, bad[i].body);
                cr_assert_str_eq(a.action, "untouched");
        }
        /* An embedded NUL is never JSON. */
        struct imds_instance_action a;
        cr_assert_eq(imds_parse_instance_action("{\"a\":1}\0{", 9, &a, NULL), -EBADMSG);
}

Test(imds_parse, termination_time_and_rebalance) {
        time_t t;
        const char *why;
        cr_assert_eq(imds_parse_termination_time(P("2026-11-25T11:58:53Z"), &t, &why), 0);
        cr_assert_eq(t, 1795607933);
        cr_assert_eq(imds_parse_termination_time(P("2026-11-25T11:58:53Z\n"), &t, &why), 0);
        cr_assert_eq(imds_parse_termination_time(P("tomorrow"), &t, &why), -EINVAL);
        cr_assert_eq(imds_parse_rebalance(P("{\n\t\"noticeTime\": \"2026-11-25T11:56:53Z\"\n}"), &t, &why), 0);
        cr_assert_eq(t, 1795607813);
        cr_assert_eq(imds_parse_rebalance(P("{\"noticetime\": \"2026-11-25T11:56:53Z\"}"), &t, &why), -ENODATA);
        cr_assert_eq(imds_parse_rebalance(P("{\"noticeTime\": 5}"), &t, &why), -EINVAL);
}

Test(imds_parse, scheduled_events) {
        struct imds_scheduled_event ev[IMDS_SCHEDULED_MAX];
        size_t n = 99;
        const char *why = NULL;
        const char *body =
                "[\n\t{\n\t\t\"NotBefore\": \"21 Jan 2019 09:00:43 GMT\",\n\t\t\"Code\": \"system-reboot\",\n"
                "\t\t\"Description\": \"scheduled reboot\",\n\t\t\"EventId\": \"instance-event-0d59937288b749b32\",\n"
                "\t\t\"NotAfter\": \"21 Jan 2019 09:17:23 GMT\",\n\t\t\"State\": \"active\"\n\t},\n"
                "\t{\n\t\t\"NotBefore\": \"1 Feb 2019 00:00:00 GMT\",\n\t\t\"Code\": \"instance-stop\",\n"
                "\t\t\"EventId\": \"instance-event-1\",\n\t\t\"State\": \"canceled\",\n"
                "\t\t\"NotBeforeDeadline\": \"5 Feb 2019 00:00:00 GMT\"\n\t}\n]";
        cr_assert_eq(imds_parse_scheduled(P(body), ev, IMDS_SCHEDULED_MAX, &n, &why), 0, "%s", why);
        cr_assert_eq(n, 2);
        cr_assert_str_eq(ev[0].code, "system-reboot");
        cr_assert_str_eq(ev[0].state, "active");
        cr_assert_str_eq(ev[0].event_id, "instance-event-0d59937288b749b32");
        cr_assert_eq(ev[0].not_before, 1548061243);
        cr_assert_eq(ev[0].not_after, 1548062243);
        cr_assert_str_eq(ev[1].state, "canceled");
        cr_assert_eq(ev[1].not_after, 0);
        cr_assert_eq(ev[1].not_before_deadline, 1549324800);

        cr_assert_eq(imds_parse_scheduled(P("[]"), ev, IMDS_SCHEDULED_MAX, &n, &why), 0);
        cr_assert_eq(n, 0);
        n = 99;
        cr_assert_eq(imds_parse_scheduled(P("{}"), ev, IMDS_SCHEDULED_MAX, &n, &why), -EBADMSG);
        cr_assert_eq(n, 99);
        cr_assert_eq(imds_parse_scheduled(P("[{\"Code\":\"x\",\"State\":\"active\",\"EventId\":\"e\"}]"), ev,
                                          IMDS_SCHEDULED_MAX, &n, &why), -ENODATA);
        cr_assert(strstr(why, "NotBefore"));
        cr_assert_eq(imds_parse_scheduled(P("[{\"Code\":\"x\",\"State\":\"active\",\"EventId\":\"e\",\"NotBefore\":\"2019-01-21\"}]"),
                                          ev, IMDS_SCHEDULED_MAX, &n, &why), -EINVAL);
        cr_assert_eq(imds_parse_scheduled(P("[{\"Code\":\"x\",\"State\":\"active\",\"EventId\":\"../x\",\"NotBefore\":\"1 Feb 2019 00:00:00 GMT\"}]"),
                                          ev, IMDS_SCHEDULED_MAX, &n, &why), -EINVAL);
        cr_assert(strstr(why, "EventId"));
        cr_assert_eq(imds_parse_scheduled(P("[1,2,3]"), ev, 2, &n, &why), -E2BIG);
}

Test(imds_parse, text_values_and_identity) {
        char buf[32];
        const char *why;
        cr_assert_eq(imds_parse_token_text(P("Terminated"), buf, sizeof buf, &why), 0);
        cr_assert_str_eq(buf, "Terminated");
        cr_assert_eq(imds_parse_token_text(P("  Warmed:Running\n"), buf, sizeof buf, &why), 0);
        cr_assert_str_eq(buf, "Warmed:Running");
        cr_assert_eq(imds_parse_token_text(P(""), buf, sizeof buf, &why), -EINVAL);
        cr_assert_eq(imds_parse_token_text(P("in service"), buf, sizeof buf, &why), -EINVAL);
        cr_assert_eq(imds_parse_token_text(P("0123456789012345678901234567890123456789"), buf, sizeof buf, &why), -EINVAL);

        struct imds_identity id;
        cr_assert_eq(imds_parse_identity(P("{\n\t\"instanceId\" : \"i-0123456789abcdef0\",\n\t\"instanceType\" : \"m6i.large\",\n"
                                           "\t\"availabilityZone\" : \"us-east-1a\",\n\t\"region\" : \"us-east-1\"\n}"), &id, &why), 0);
        cr_assert_str_eq(id.instance_id, "i-0123456789abcdef0");
        cr_assert_str_eq(id.region, "us-east-1");
        cr_assert_eq(imds_parse_identity(P("{\"region\":\"x\"}"), &id, &why), -ENODATA);
}
