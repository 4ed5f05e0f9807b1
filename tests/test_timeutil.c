#include <criterion/criterion.h>
#include <errno.h>

#include "timeutil.h"

Test(timeutil, durations) {
        static const struct { const char *s; usec_t v; } ok[] = {
                { "1s", USEC_PER_SEC }, { "250ms", 250 * USEC_PER_MSEC }, { "1.5s", 1500 * USEC_PER_MSEC },
                { "2m", 120 * USEC_PER_SEC }, { "1h", 3600 * USEC_PER_SEC }, { "100us", 100 },
                { "1m30s", 90 * USEC_PER_SEC }, { "0s", 0 },
        };
        static const char *const bad[] = { "", "5", "s", "-1s", "1x", "1 s", "abc", "1s2", "0x10s", " 1s", "1e999s" };
        for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
                usec_t v = 42;
                cr_assert_eq(parse_duration(ok[i].s, &v), 0, "%s", ok[i].s);
                cr_assert_eq(v, ok[i].v, "%s -> %llu", ok[i].s, (unsigned long long) v);
        }
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                usec_t v = 42;
                cr_assert_eq(parse_duration(bad[i], &v), -EINVAL, "%s", bad[i]);
                cr_assert_eq(v, 42, "output touched on failure for %s", bad[i]);
        }
}

Test(timeutil, duration_round_trip) {
        static const usec_t vals[] = { 1000, 250000, 1000000, 1500000, 120000000, 7 };
        for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
                char buf[32];
                usec_t back;
                format_duration(vals[i], buf, sizeof buf);
                cr_assert_eq(parse_duration(buf, &back), 0, "%s", buf);
                cr_assert_eq(back, vals[i], "%s", buf);
        }
}

Test(timeutil, rfc3339) {
        time_t t = 0;
        cr_assert_eq(parse_rfc3339("2026-11-25T11:58:53Z", &t), 0);
        cr_assert_eq(t, 1795607933);
        cr_assert_eq(parse_rfc3339("2026-11-25T11:58:53.123Z", &t), 0);
        cr_assert_eq(t, 1795607933);
        cr_assert_eq(parse_rfc3339("2026-11-25T12:58:53+01:00", &t), 0);
        cr_assert_eq(t, 1795607933);
        static const char *const bad[] = { "2026-11-25 11:58", "2026-13-25T11:58:53Z", "2026-11-25T11:58:53",
                                           "2026-11-25T11:58:53Zjunk", "", "21 Jan 2019 09:00:43 GMT",
                                           "2026-11-25T25:00:00Z", "2026-11-25T11:58:53.Z" };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                time_t v = 7;
                cr_assert_eq(parse_rfc3339(bad[i], &v), -EINVAL, "%s", bad[i]);
                cr_assert_eq(v, 7);
        }
        char buf[32];
        format_rfc3339(1795607933, buf, sizeof buf);
        cr_assert_str_eq(buf, "2026-11-25T11:58:53Z");
        format_rfc3339_usec(1795607933123456ULL, buf, sizeof buf);
        cr_assert_str_eq(buf, "2026-11-25T11:58:53.123Z");
}

Test(timeutil, imds_event_time) {
        time_t t = 0;
        cr_assert_eq(parse_imds_event_time("21 Jan 2019 09:00:43 GMT", &t), 0);
        cr_assert_eq(t, 1548061243);
        cr_assert_eq(parse_imds_event_time("1 Feb 2019 00:00:00 GMT", &t), 0);
        cr_assert_eq(t, 1548979200);
        static const char *const bad[] = { "21 Foo 2019 09:00:43 GMT", "2019-01-21T09:00:43Z", "21 Jan 2019",
                                           "21 Jan 2019 09:00:43 PST", "" };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
                cr_assert_eq(parse_imds_event_time(bad[i], &t), -EINVAL, "%s", bad[i]);
}

Test(timeutil, backoff_bounds) {
        usec_t base = 1000, cap = 64000;
        for (unsigned attempt = 0; attempt < 20; attempt++)
                for (int i = 0; i < 100; i++) {
                        usec_t d = backoff_delay(base, cap, attempt);
                        cr_assert_geq(d, base / 2);
                        cr_assert_leq(d, cap);
                        if (attempt == 0)
                                cr_assert_leq(d, base);
                }
}
