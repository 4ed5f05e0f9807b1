/* Clocks, durations and the time formats the metadata service uses. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

typedef uint64_t usec_t;
#define USEC_PER_SEC  1000000ULL
#define USEC_PER_MSEC 1000ULL
#define NSEC_PER_USEC 1000ULL

usec_t now_monotonic(void);
usec_t now_realtime(void);

/* Parses "250ms", "1s", "1.5s", "2m", "1h", "100us" (units required, several
 * parts like "1m30s" allowed). Returns 0, or -EINVAL on anything else or on
 * overflow; *ret untouched on failure. */
int parse_duration(const char *s, usec_t *ret);

/* Formats a duration the way parse_duration reads it ("1.5s", "250ms"). */
void format_duration(usec_t d, char *buf, size_t len);

/* RFC 3339 / ISO 8601 UTC as the metadata service writes it:
 * "2026-11-25T11:58:53Z" (fractional seconds and +00:00 also accepted).
 * Returns 0 or -EINVAL. */
int parse_rfc3339(const char *s, time_t *ret);

/* The scheduled-events time format: "21 Jan 2019 09:00:43 GMT".
 * Returns 0 or -EINVAL. */
int parse_imds_event_time(const char *s, time_t *ret);

/* "2026-11-25T11:58:53Z" (len >= 21), or with milliseconds
 * "2026-11-25T11:58:53.123Z" for format_rfc3339_usec (len >= 25). */
void format_rfc3339(time_t t, char *buf, size_t len);
void format_rfc3339_usec(usec_t t, char *buf, size_t len);

/* Exponential backoff with full jitter: a random delay in
 * [base/2, min(cap, base * 2^attempt)]. */
usec_t backoff_delay(usec_t base, usec_t cap, unsigned attempt);
