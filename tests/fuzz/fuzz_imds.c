/* libFuzzer target: every IMDS payload parser and the time parsers.
 *
 * The first byte picks the parser (modulo their number), the rest is the
 * body exactly as the metadata service would serve it. What parses is then
 * taken the way the agent takes it (detect.c): into an event, into /status.
 * Besides the sanitizers, it checks what the headers promise: outputs
 * untouched on failure, a reason on failure, strings that fit. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "event.h"
#include "fuzz.h"
#include "imds.h"
#include "status.h"
#include "timeutil.h"

enum { F_ACTION, F_TERMINATION, F_REBALANCE, F_SCHEDULED, F_TEXT, F_IDENTITY, F_RFC3339, F_EVENT_TIME, F_DURATION, F_MAX };

static struct status *st;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        if (status_new(&st) < 0)
                abort();
        status_set_info(st, "ip-10-0-1-2.ec2.internal", "i-0123456789abcdef0", false, USEC_PER_SEC);
        return 0;
}

/* The way agent.c publishes an event it detected. */
static void publish(const struct event *e) {
        struct status_event se = { .ev = *e, .first_seen = now_realtime(), .last_seen = now_realtime() };
        snprintf(se.phase, sizeof se.phase, "detected");
        status_upsert_event(st, &se);
}

static void render(void) {
        char *out = NULL;
        size_t n = 0;
        if (status_render_json(st, &out, &n) == 0)
                FUZZ_CHECK(out && strlen(out) == n);
        free(out);
}

/* 1970..2999, away from the edges an offset can push past: there a time
 * formats and parses back to itself. */
static void check_time_round_trip(time_t t) {
        if (t < 2 * 86400 || t > 32503680000LL - 2 * 86400)
                return;
        char buf[32];
        time_t back = 0;
        format_rfc3339(t, buf, sizeof buf);
        FUZZ_CHECK(parse_rfc3339(buf, &back) == 0 && back == t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size < 1)
                return 0;
        unsigned which = data[0] % F_MAX;
        const char *body = (const char *) data + 1;
        size_t len = size - 1;
        const char *why = NULL;
        struct event ev;
        int r;

        switch (which) {
        case F_ACTION: {
                struct imds_instance_action a = { .action = "untouched", .time = 42 };
                r = imds_parse_instance_action(body, len, &a, &why);
                if (r < 0) {
                        FUZZ_CHECK(why && strcmp(a.action, "untouched") == 0 && a.time == 42);
                        FUZZ_CHECK(r == -EBADMSG || r == -ENODATA || r == -EINVAL);
                        break;
                }
                FUZZ_CHECK(a.action[0] && strlen(a.action) < sizeof a.action);
                check_time_round_trip(a.time);
                event_from_instance_action(&a, "i-0123456789abcdef0", &ev);
                publish(&ev);
                render();
                break;
        }
        case F_TERMINATION: {
                time_t t = 42;
                r = imds_parse_termination_time(body, len, &t, &why);
                if (r < 0)
                        FUZZ_CHECK(why && t == 42 && r == -EINVAL);
                else
                        check_time_round_trip(t);
                break;
        }
        case F_REBALANCE: {
                time_t t = 42;
                r = imds_parse_rebalance(body, len, &t, &why);
                if (r < 0) {
                        FUZZ_CHECK(why && t == 42);
                        break;
                }
                check_time_round_trip(t);
                event_from_rebalance(t, "i-0123456789abcdef0", &ev);
                publish(&ev);
                render();
                break;
        }
        case F_SCHEDULED: {
                struct imds_scheduled_event s[IMDS_SCHEDULED_MAX];
                size_t n = 4242;
                memset(s, 0x5a, sizeof s);
                r = imds_parse_scheduled(body, len, s, IMDS_SCHEDULED_MAX, &n, &why);
                if (r < 0) {
                        FUZZ_CHECK(why && n == 4242 && ((const uint8_t *) s)[0] == 0x5a);
                        break;
                }
                FUZZ_CHECK(n <= IMDS_SCHEDULED_MAX);
                for (size_t i = 0; i < n; i++) {
                        FUZZ_CHECK(s[i].code[0] && strlen(s[i].code) < sizeof s[i].code);
                        FUZZ_CHECK(s[i].event_id[0] && strlen(s[i].event_id) < sizeof s[i].event_id);
                        FUZZ_CHECK(strlen(s[i].description) < sizeof s[i].description);
                        event_from_scheduled(&s[i], "i-0123456789abcdef0", &ev);
                        (void) event_scheduled_code_is_disruptive(s[i].code);
                        publish(&ev);
                }
                render();
                /* A smaller caller limit is enforced too. */
                size_t m = 0;
                r = imds_parse_scheduled(body, len, s, 2, &m, &why);
                FUZZ_CHECK(n > 2 ? r == -E2BIG : (r == 0 && m == n));
                break;
        }
        case F_TEXT: {
                /* The sizes the agent uses: lifecycle state (32), instance id (32), and edges. */
                static const size_t lens[] = { 0, 1, 2, 16, 32, 64, 256, 1024 };
                for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
                        char out[1024];
                        memset(out, 0x5a, sizeof out);
                        r = imds_parse_token_text(body, len, out, lens[i], &why);
                        if (r < 0) {
                                FUZZ_CHECK(why && (uint8_t) out[0] == 0x5a);
                                continue;
                        }
                        FUZZ_CHECK(out[0] && strlen(out) < lens[i] && strlen(out) < 256);
                        if (strcmp(out, "Terminated") == 0) {
                                event_from_lifecycle(out, "i-0123456789abcdef0", time(NULL), 120, &ev);
                                publish(&ev);
                        }
                }
                break;
        }
        case F_IDENTITY: {
                struct imds_identity id;
                memset(&id, 0x5a, sizeof id);
                r = imds_parse_identity(body, len, &id, &why);
                if (r < 0) {
                        FUZZ_CHECK(why && (uint8_t) id.instance_id[0] == 0x5a);
                        break;
                }
                FUZZ_CHECK(id.instance_id[0] && strlen(id.instance_id) < sizeof id.instance_id);
                FUZZ_CHECK(strlen(id.region) < sizeof id.region && strlen(id.instance_type) < sizeof id.instance_type &&
                           strlen(id.availability_zone) < sizeof id.availability_zone);
                break;
        }
        case F_RFC3339:
        case F_EVENT_TIME:
        case F_DURATION: {
                char *s = fuzz_strndup((const uint8_t *) body, len);
                if (!s)
                        return 0;
                if (which == F_RFC3339) {
                        time_t t = 42;
                        r = parse_rfc3339(s, &t);
                        if (r == 0)
                                check_time_round_trip(t);
                        else
                                FUZZ_CHECK(r == -EINVAL && t == 42);
                } else if (which == F_EVENT_TIME) {
                        time_t t = 42;
                        r = parse_imds_event_time(s, &t);
                        if (r == 0)
                                check_time_round_trip(t);
                        else
                                FUZZ_CHECK(r == -EINVAL && t == 42);
                } else {
                        usec_t d = 42;
                        char buf[64];
                        r = parse_duration(s, &d);
                        if (r == 0)
                                format_duration(d, buf, sizeof buf);
                        else
                                FUZZ_CHECK(r == -EINVAL && d == 42);
                }
                free(s);
                break;
        }
        }
        return 0;
}
