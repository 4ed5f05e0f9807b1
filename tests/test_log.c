#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* Points stderr at a temp file, runs fn, returns what was written. */
static char *capture(void (*fn)(void)) {
        char path[] = "/tmp/spotd-log-XXXXXX";
        int fd = mkstemp(path), saved = dup(2);
        cr_assert_geq(fd, 0);
        dup2(fd, 2);
        fn();
        dup2(saved, 2);
        close(saved);
        FILE *f = fdopen(fd, "r");
        fseek(f, 0, SEEK_SET);
        char *buf = calloc(1, 65536);
        fread(buf, 1, 65535, f);
        fclose(f);
        unlink(path);
        return buf;
}

static void emit_json(void) {
        log_setup(LOG_TARGET_AUTO, LOG_FORMAT_JSON, LOG_INFO, "/nonexistent/socket");
        log_set_node("node-a");
        struct log_ctx c = { .event_id = "spot-i-1-terminate", .kind = "spot-interruption", .phase = "detected" };
        log_full(LOG_WARNING, MSG_SPOT_NOTICE, &c, "line one\nline \"two\"\t\\");
        log_debug("filtered out by level");
        log_info("plain");
}

Test(log, json_lines) {
        char *out = capture(emit_json);
        char *nl = strchr(out, '\n');
        cr_assert_not_null(nl, "%s", out);
        *nl = 0;
        cJSON *j = cJSON_Parse(out);
        cr_assert_not_null(j, "not JSON: %s", out);
        cr_assert_str_eq(cJSON_GetObjectItem(j, "msg")->valuestring, "line one\nline \"two\"\t\\");
        cr_assert_str_eq(cJSON_GetObjectItem(j, "level")->valuestring, "warning");
        cr_assert_str_eq(cJSON_GetObjectItem(j, "message_id")->valuestring, MSG_SPOT_NOTICE);
        cr_assert_str_eq(cJSON_GetObjectItem(j, "event_id")->valuestring, "spot-i-1-terminate");
        cr_assert_str_eq(cJSON_GetObjectItem(j, "node")->valuestring, "node-a");
        cr_assert_str_eq(cJSON_GetObjectItem(j, "phase")->valuestring, "detected");
        cJSON_Delete(j);
        char *second = nl + 1;
        cr_assert(strstr(second, "\"msg\":\"plain\""), "%s", second);
        cr_assert_null(strstr(second, "filtered out"));
        cr_assert_eq(strchr(second, '\n')[1], 0, "exactly two lines");
        free(out);
}

static void emit_text(void) {
        log_setup(LOG_TARGET_STDERR, LOG_FORMAT_TEXT, LOG_DEBUG, NULL);
        log_set_node("node-b");
        struct log_ctx c = { .event_id = "e1", .pod = "tm-1", .namespace_ = "flink" };
        log_full(LOG_ERR, NULL, &c, "multi\nline\rmessage");
        char big[8192];
        memset(big, 'x', sizeof big - 1);
        big[sizeof big - 1] = 0;
        log_info("%s", big);
}

Test(log, text_one_line_per_entry) {
        char *out = capture(emit_text);
        char *first = out, *nl = strchr(out, '\n');
        cr_assert_not_null(nl);
        *nl = 0;
        cr_assert(strstr(first, " err ") && strstr(first, "multi line message"), "%s", first);
        cr_assert(strstr(first, "event_id=e1") && strstr(first, "pod=tm-1") && strstr(first, "namespace=flink") &&
                  strstr(first, "node=node-b"), "%s", first);
        char *second = nl + 1, *nl2 = strchr(second, '\n');
        cr_assert_not_null(nl2, "an oversized message is cut, not split");
        cr_assert_eq(nl2[1], 0);
        cr_assert_lt(strlen(second), 4096);
        free(out);
}

static void emit_journal_missing(void) {
        log_setup(LOG_TARGET_JOURNAL, LOG_FORMAT_TEXT, LOG_INFO, "/nonexistent/socket");
        log_info("after fallback");
}

Test(log, journal_without_socket_falls_back) {
        char *out = capture(emit_journal_missing);
        cr_assert_not(log_is_journal());
        cr_assert(strstr(out, "/nonexistent/socket is not a socket"), "%s", out);
        cr_assert(strstr(out, "after fallback"), "%s", out);
        free(out);
}

Test(log, levels) {
        cr_assert_eq(log_level_from_string("debug"), LOG_DEBUG);
        cr_assert_eq(log_level_from_string("warning"), LOG_WARNING);
        cr_assert_eq(log_level_from_string("error"), LOG_ERR);
        cr_assert_eq(log_level_from_string("verbose"), -1);
}
