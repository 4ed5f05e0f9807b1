#include "timeutil.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "macro.h"

static usec_t now_clock(clockid_t id) {
        struct timespec ts;
        clock_gettime(id, &ts);
        return (usec_t) ts.tv_sec * USEC_PER_SEC + (usec_t) ts.tv_nsec / NSEC_PER_USEC;
}

usec_t now_monotonic(void) { return now_clock(CLOCK_MONOTONIC); }
usec_t now_realtime(void) { return now_clock(CLOCK_REALTIME); }

int parse_duration(const char *s, usec_t *ret) {
        static const struct { const char *suffix; usec_t mult; } units[] = {
                /* longest suffix first so "ms" is not read as "m" + "s" */
                { "us", 1 }, { "ms", USEC_PER_MSEC }, { "s", USEC_PER_SEC },
                { "m", 60 * USEC_PER_SEC }, { "h", 3600 * USEC_PER_SEC },
        };
        usec_t total = 0;
        const char *p = s;

        if (!s || !*s || strlen(s) > 64)
                return -EINVAL;
        while (*p) {
                char *end;
                double v;
                size_t i;

                char num[32];
                size_t nl = strspn(p, "0123456789.");
                /* Only digits and a point reach strtod: no sign, space, hex or exponent. */
                if (nl == 0 || nl >= sizeof num)
                        return -EINVAL;
                memcpy(num, p, nl);
                num[nl] = 0;
                errno = 0;
                v = strtod(num, &end);
                if (errno || end != num + nl)
                        return -EINVAL;
                p += nl;
                for (i = 0; i < ELEMENTSOF(units); i++) {
                        size_t n = strlen(units[i].suffix);
                        if (strncmp(p, units[i].suffix, n) == 0) {
                                double add = v * (double) units[i].mult;
                                if (add > (double) (UINT64_MAX / 4) || total + (usec_t) add < total)
                                        return -EINVAL;
                                total += (usec_t) add;
                                p += n;
                                break;
                        }
                }
                if (i == ELEMENTSOF(units))
                        return -EINVAL; /* a unit is required: "5" is ambiguous */
        }
        *ret = total;
        return 0;
}

void format_duration(usec_t d, char *buf, size_t len) {
        if (d > 0 && d % (3600 * USEC_PER_SEC) == 0)
                snprintf(buf, len, "%lluh", (unsigned long long) (d / (3600 * USEC_PER_SEC)));
        else if (d > 0 && d % (60 * USEC_PER_SEC) == 0)
                snprintf(buf, len, "%llum", (unsigned long long) (d / (60 * USEC_PER_SEC)));
        else if (d >= USEC_PER_SEC)
                snprintf(buf, len, "%gs", (double) d / USEC_PER_SEC);
        else if (d % USEC_PER_MSEC == 0)
                snprintf(buf, len, "%llums", (unsigned long long) (d / USEC_PER_MSEC));
        else
                snprintf(buf, len, "%lluus", (unsigned long long) d);
}

static int parse_digits(const char **p, int n, int *ret) {
        int v = 0;
        for (int i = 0; i < n; i++) {
                if ((*p)[i] < '0' || (*p)[i] > '9')
                        return -EINVAL;
                v = v * 10 + ((*p)[i] - '0');
        }
        *p += n;
        *ret = v;
        return 0;
}

static int tm_valid(const struct tm *tm) {
        return tm->tm_mon >= 0 && tm->tm_mon < 12 && tm->tm_mday >= 1 && tm->tm_mday <= 31 &&
               tm->tm_hour >= 0 && tm->tm_hour < 24 && tm->tm_min >= 0 && tm->tm_min < 60 &&
               tm->tm_sec >= 0 && tm->tm_sec <= 60 && tm->tm_year >= 70 && tm->tm_year < 1100;
}

int parse_rfc3339(const char *s, time_t *ret) {
        struct tm tm = {};
        int y, mo, d, h, mi, sec, offset = 0;
        const char *p = s;

        if (!s)
                return -EINVAL;
        if (parse_digits(&p, 4, &y) < 0 || *p++ != '-' || parse_digits(&p, 2, &mo) < 0 ||
            *p++ != '-' || parse_digits(&p, 2, &d) < 0 || (*p != 'T' && *p != 't' && *p != ' '))
                return -EINVAL;
        p++;
        if (parse_digits(&p, 2, &h) < 0 || *p++ != ':' || parse_digits(&p, 2, &mi) < 0 ||
            *p++ != ':' || parse_digits(&p, 2, &sec) < 0)
                return -EINVAL;
        if (*p == '.') { /* fractional seconds: accepted, dropped */
                p++;
                if (*p < '0' || *p > '9')
                        return -EINVAL;
                for (int i = 0; *p >= '0' && *p <= '9'; i++, p++)
                        if (i >= 9)
                                return -EINVAL;
        }
        if (*p == 'Z' || *p == 'z')
                p++;
        else if (*p == '+' || *p == '-') {
                int oh, om, sign = *p == '-' ? -1 : 1;
                p++;
                if (parse_digits(&p, 2, &oh) < 0 || *p++ != ':' || parse_digits(&p, 2, &om) < 0 ||
                    oh > 23 || om > 59)
                        return -EINVAL;
                offset = sign * (oh * 3600 + om * 60);
        } else
                return -EINVAL;
        if (*p)
                return -EINVAL;

        tm.tm_year = y - 1900, tm.tm_mon = mo - 1, tm.tm_mday = d;
        tm.tm_hour = h, tm.tm_min = mi, tm.tm_sec = sec;
        if (!tm_valid(&tm))
                return -EINVAL;
        *ret = timegm(&tm) - offset;
        return 0;
}

int parse_imds_event_time(const char *s, time_t *ret) {
        static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
        struct tm tm = {};
        const char *p = s;
        int d, y, h, mi, sec, mo = -1;

        if (!s)
                return -EINVAL;
        /* Day may be one or two digits: "1 Feb 2019 ..." or "21 Jan 2019 ...". */
        if (p[0] >= '0' && p[0] <= '9' && p[1] == ' ') {
                if (parse_digits(&p, 1, &d) < 0)
                        return -EINVAL;
        } else if (parse_digits(&p, 2, &d) < 0)
                return -EINVAL;
        if (*p++ != ' ')
                return -EINVAL;
        for (int i = 0; i < 12; i++)
                if (strncasecmp(p, months[i], 3) == 0)
                        mo = i;
        if (mo < 0)
                return -EINVAL;
        p += 3;
        if (*p++ != ' ' || parse_digits(&p, 4, &y) < 0 || *p++ != ' ' ||
            parse_digits(&p, 2, &h) < 0 || *p++ != ':' || parse_digits(&p, 2, &mi) < 0 ||
            *p++ != ':' || parse_digits(&p, 2, &sec) < 0)
                return -EINVAL;
        if (strcmp(p, " GMT") != 0 && strcmp(p, " UTC") != 0 && strcmp(p, "") != 0)
                return -EINVAL;
        tm.tm_year = y - 1900, tm.tm_mon = mo, tm.tm_mday = d;
        tm.tm_hour = h, tm.tm_min = mi, tm.tm_sec = sec;
        if (!tm_valid(&tm))
                return -EINVAL;
        *ret = timegm(&tm);
        return 0;
}

void format_rfc3339(time_t t, char *buf, size_t len) {
        struct tm tm;
        if (!gmtime_r(&t, &tm) || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
                if (len)
                        buf[0] = 0;
        }
}

void format_rfc3339_usec(usec_t t, char *buf, size_t len) {
        struct tm tm;
        time_t sec = (time_t) (t / USEC_PER_SEC);
        char tmp[32];
        if (!gmtime_r(&sec, &tm) || strftime(tmp, sizeof tmp, "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
                if (len)
                        buf[0] = 0;
                return;
        }
        snprintf(buf, len, "%s.%03uZ", tmp, (unsigned) ((t % USEC_PER_SEC) / USEC_PER_MSEC));
}

usec_t backoff_delay(usec_t base, usec_t cap, unsigned attempt) {
        usec_t hi = base;
        for (unsigned i = 0; i < attempt && hi < cap; i++)
                hi *= 2;
        if (hi > cap)
                hi = cap;
        usec_t lo = base / 2 < hi ? base / 2 : hi;
        if (hi <= lo)
                return hi;
        /* random(): jitter need not be cryptographic, only decorrelated. */
        return lo + (usec_t) random() % (hi - lo + 1);
}
