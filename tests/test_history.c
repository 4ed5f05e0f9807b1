/* spotd history: entries written by the real spotd through a private
 * systemd-journald (in a mount namespace of this test process, on tmpfs, as
 * in test_journal.c) are read back by `spotd history` into one timeline per
 * event, as text and JSON, with the --node, --since, --directory and --file
 * options. Needs root. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <glob.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include "helpers.h"
#include "journald.h"
#include "history.h"
#include "imds_sim.h"
#include "k8s_sim.h"

#define MSG_FENCED "6147413d8d83401b946c0f997aff043d"
#define MSG_DONE "a11e73ecf1174841a611800b7f13bf1a"
#define MSG_SPOT_NOTICE "e4c9da6bf184496cb8c964249990883f"
#define MSG_REBALANCE "81027988cdfa409e8e14c74a364930bc"
#define TM "component=taskmanager,type=flink-native-kubernetes,app=job-a"


/* How many spotd entries with this MESSAGE_ID (and event id prefix) the
 * journal holds, read with journalctl as an independent reader. */
static int journal_count(const char *message_id, const char *event_prefix) {
        char cmd[256], line[65536];
        int n = 0;
        snprintf(cmd, sizeof cmd,
                 "journalctl -D /run/log/journal -o json --no-pager SYSLOG_IDENTIFIER=spotd MESSAGE_ID=%s 2>/dev/null",
                 message_id);
        FILE *f = popen(cmd, "r");
        cr_assert_not_null(f);
        while (fgets(line, sizeof line, f)) {
                cJSON *j = cJSON_Parse(line);
                const char *id = cJSON_GetStringValue(cJSON_GetObjectItem(j, "SPOTD_EVENT_ID"));
                n += id && strncmp(id, event_prefix, strlen(event_prefix)) == 0;
                cJSON_Delete(j);
        }
        pclose(f);
        return n;
}

/* Runs `spotd history ARGS...`; returns its exit status and output. */
static int history(char **ret_out, ...) {
        char *argv[16] = { "spotd", "history" };
        size_t n = 2;
        va_list ap;
        va_start(ap, ret_out);
        for (const char *a; (a = va_arg(ap, const char *)) && n < ELEMENTSOF(argv) - 1;)
                argv[n++] = (char *) a;
        va_end(ap);
        argv[n] = NULL;
        struct proc p;
        cr_assert_eq(proc_spawn(&p, argv, NULL), 0);
        int status = proc_stop(&p, 0, 10000);
        *ret_out = p.out ? p.out : strdup("");
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static cJSON *history_json(const char *a1, const char *a2, const char *a3) {
        char *out;
        int rc = history(&out, "--directory", "/run/log/journal", "--output", "json", a1, a2, a3, NULL);
        cr_assert_eq(rc, 0, "spotd history failed (%d): %s", rc, out);
        cJSON *j = cJSON_Parse(out);
        cr_assert_not_null(j, "not JSON: %s", out);
        free(out);
        return j;
}

static const cJSON *find_event(const cJSON *root, const char *id, const char *node) {
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItem(root, "events")) {
                if (streq_ptr(cJSON_GetStringValue(cJSON_GetObjectItem(e, "event_id")), id) &&
                    streq_ptr(cJSON_GetStringValue(cJSON_GetObjectItem(e, "node")), node))
                        return e;
        }
        return NULL;
}

static const char *str(const cJSON *o, const char *k) {
        return cJSON_GetStringValue(cJSON_GetObjectItem(o, k));
}

/* The position of the first entry in phase, -1 if none. */
static int phase_at(const cJSON *ev, const char *phase) {
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItem(ev, "entries")) {
                if (streq_ptr(str(e, "phase"), phase))
                        return i;
                i++;
        }
        return -1;
}

static int count_messages(const cJSON *ev, const char *needle) {
        int n = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItem(ev, "entries")) {
                n += str(e, "message") && strstr(str(e, "message"), needle) != NULL;
        }
        return n;
}

/* Entries chronological, offsets from the event's first entry, all of the
 * event's node. */
static void check_timeline(const cJSON *ev, const char *node) {
        double last = -1;
        const cJSON *e;
        cr_assert_not_null(ev);
        cJSON_ArrayForEach(e, cJSON_GetObjectItem(ev, "entries")) {
                double off = cJSON_GetNumberValue(cJSON_GetObjectItem(e, "offset_seconds"));
                cr_assert(off >= last, "entries out of order");
                if (last < 0)
                        cr_assert_float_eq(off, 0, 1e-9);
                last = off;
                cr_assert_str_eq(str(e, "node"), node);
        }
        cr_assert(last >= 0, "an empty timeline");
}

static void spawn_agent(struct proc *p, const char *imds_url, struct k8s_sim *kube, const char *node) {
        static char a_imds[128], a_api[128], a_ca[1100], a_token[1100], a_node[64];
        char url[64];
        snprintf(a_imds, sizeof a_imds, "--imds-endpoint=%s", imds_url);
        k8s_sim_url(kube, url, sizeof url);
        snprintf(a_api, sizeof a_api, "--kube-api=%s", url);
        snprintf(a_ca, sizeof a_ca, "--kube-ca-file=%s", k8s_sim_ca_file(kube));
        snprintf(a_token, sizeof a_token, "--kube-token-file=%s", k8s_sim_token_file(kube));
        snprintf(a_node, sizeof a_node, "--node-name=%s", node);
        cr_assert_eq(proc_spawn(p, (char *[]) { "spotd", "run", a_imds, a_api, a_ca, a_token, a_node,
                                                "--poll-interval=50ms", "--health-addr=off", "--eviction-margin=10s",
                                                "--flink-timeout=200ms", NULL }, NULL), 0);
}

Test(history, timelines_from_a_private_journald, .timeout = 120) {
        pid_t jd = journald_start();
        struct imds_sim *imds_a, *imds_b;
        struct k8s_sim *kube;
        struct proc p;
        char url[64];

        cr_assert_eq(imds_sim_start(NULL, &imds_a), 0);
        cr_assert_eq(imds_sim_start(&(struct imds_sim_options) { .instance_id = "i-0bbbbbbbbbbbbbbbb" }, &imds_b), 0);
        cr_assert_eq(k8s_sim_start(&(struct k8s_sim_options) { .grace_ms_per_s = 10 }, &kube), 0);
        k8s_sim_add_node(kube, "node-a", "karpenter.sh/capacity-type=spot");
        k8s_sim_add_node(kube, "node-b", "karpenter.sh/capacity-type=spot");
        k8s_sim_add_pod(kube, "flink", "job-a-taskmanager-1-1", "node-a", TM, 30, "Deployment");
        k8s_sim_add_pod(kube, "flink", "job-a-taskmanager-1-2", "node-a", TM, 30, "Deployment");
        k8s_sim_add_pod(kube, "flink", "job-a-taskmanager-1-3", "node-b", TM, 30, "Deployment");

        /* Node A: a rebalance recommendation (cordon), then a spot notice. */
        imds_sim_url(imds_a, url, sizeof url);
        spawn_agent(&p, url, kube, "node-a");
        usleep(300 * 1000);
        imds_sim_set_rebalance(imds_a, time(NULL), 0);
        cr_assert(eventually(journal_count(MSG_FENCED, "rebalance-") >= 1, 20000), "no fence for the rebalance: %s", p.out);
        imds_sim_set_spot(imds_a, "terminate", 0, 0);
        cr_assert(eventually(journal_count(MSG_DONE, "spot-i-0123456789abcdef0") >= 1, 30000), "spot event not handled");
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);

        /* A second between the nodes, for --since. */
        usleep(1200 * 1000);
        time_t mid = time(NULL);
        char since[32];
        format_rfc3339(mid, since, sizeof since);
        usleep(1200 * 1000);

        /* Node B: a spot notice. */
        imds_sim_url(imds_b, url, sizeof url);
        spawn_agent(&p, url, kube, "node-b");
        usleep(300 * 1000);
        imds_sim_set_spot(imds_b, "terminate", 0, 0);
        cr_assert(eventually(journal_count(MSG_DONE, "spot-i-0bbbbbbbbbbbbbbbb") >= 1, 30000), "node-b event not handled");
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        proc_free(&p);

        /* All of it, as JSON: three timelines. */
        cJSON *all = history_json(NULL, NULL, NULL);
        cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(all, "events")), 3, "%s", cJSON_Print(all));
        cr_assert_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(all, "dropped_entries")), 0);
        cr_assert_gt(cJSON_GetNumberValue(cJSON_GetObjectItem(all, "entries_without_event")), 0); /* start, stop, ... */

        const cJSON *spot_a = find_event(all, "spot-i-0123456789abcdef0-terminate", "node-a");
        check_timeline(spot_a, "node-a");
        cr_assert_str_eq(str(spot_a, "kind"), "spot-interruption");
        cr_assert_str_eq(str(spot_a, "last_phase"), "done");
        const cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItem(spot_a, "entries"), 0);
        cr_assert_str_eq(str(first, "message_id"), MSG_SPOT_NOTICE);
        cr_assert_str_eq(str(first, "phase"), "detected");
        cr_assert_str_eq(str(first, "level"), "warning");
        int detected = phase_at(spot_a, "detected"), fencing = phase_at(spot_a, "fencing"),
            evicting = phase_at(spot_a, "evicting"), done = phase_at(spot_a, "done");
        cr_assert(detected == 0 && fencing > detected && evicting > fencing && done > evicting,
                  "phases out of order: detected %d fencing %d evicting %d done %d", detected, fencing, evicting, done);
        cr_assert_eq(count_messages(spot_a, "Evicted pod flink/job-a-taskmanager-1-"), 2);
        cr_assert_eq(count_messages(spot_a, "job-a-taskmanager-1-3"), 0, "node-b's pod in node-a's timeline");
        const cJSON *e;
        int pods = 0;
        cJSON_ArrayForEach(e, cJSON_GetObjectItem(spot_a, "entries")) {
                if (str(e, "pod")) {
                        cr_assert_str_eq(str(e, "namespace"), "flink");
                        pods++;
                }
        }
        cr_assert_geq(pods, 4); /* evicted and gone, for each of the two */

        const cJSON *reb = NULL;
        cJSON_ArrayForEach(e, cJSON_GetObjectItem(all, "events")) {
                if (streq_ptr(str(e, "event_id"), "rebalance-i-0123456789abcdef0")) /* one per instance */
                        reb = e;
        }
        check_timeline(reb, "node-a");
        cr_assert_str_eq(str(reb, "kind"), "rebalance-recommendation");
        cr_assert_str_eq(str(cJSON_GetArrayItem(cJSON_GetObjectItem(reb, "entries"), 0), "message_id"), MSG_REBALANCE);
        cr_assert_geq(phase_at(reb, "fencing"), 1);
        cr_assert_eq(count_messages(reb, "Evicted pod"), 0, "evictions in the rebalance timeline");

        const cJSON *spot_b = find_event(all, "spot-i-0bbbbbbbbbbbbbbbb-terminate", "node-b");
        check_timeline(spot_b, "node-b");
        cr_assert_eq(count_messages(spot_b, "Evicted pod flink/job-a-taskmanager-1-3"), 1);
        cr_assert_str_eq(str(spot_b, "last_phase"), "done");

        /* Timelines in the order their events began. */
        cr_assert_str_eq(str(cJSON_GetArrayItem(cJSON_GetObjectItem(all, "events"), 0), "event_id"), str(reb, "event_id"));
        cr_assert_str_eq(str(cJSON_GetArrayItem(cJSON_GetObjectItem(all, "events"), 2), "node"), "node-b");

        /* --node */
        cJSON *b = history_json("--node", "node-b", NULL);
        cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(b, "events")), 1);
        cr_assert_not_null(find_event(b, "spot-i-0bbbbbbbbbbbbbbbb-terminate", "node-b"));
        cJSON_Delete(b);
        cJSON *none = history_json("--node", "node-z", NULL);
        cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(none, "events")), 0);
        cJSON_Delete(none);

        /* --since: an RFC 3339 time between the two runs, and durations. */
        cJSON *late = history_json("--since", since, NULL);
        cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(late, "events")), 1, "since %s: %s", since, cJSON_Print(late));
        cr_assert_not_null(find_event(late, "spot-i-0bbbbbbbbbbbbbbbb-terminate", "node-b"));
        cJSON_Delete(late);
        cJSON *hour = history_json("--since", "1h", NULL);
        cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(hour, "events")), 3);
        cJSON_Delete(hour);
        cJSON *future = history_json("--since", "2099-01-01T00:00:00Z", NULL);
        cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(future, "events")), 0);
        cJSON_Delete(future);

        /* The human table. */
        char *out;
        cr_assert_eq(history(&out, "--directory", "/run/log/journal", NULL), 0, "%s", out);
        cr_assert(strstr(out, "spot-i-0123456789abcdef0-terminate (spot-interruption) on node node-a: "), "%s", out);
        cr_assert(strstr(out, "spot-i-0bbbbbbbbbbbbbbbb-terminate (spot-interruption) on node node-b: "), "%s", out);
        cr_assert(strstr(out, "(rebalance-recommendation) on node node-a: "), "%s", out);
        cr_assert(strstr(out, "last phase done"), "%s", out);
        cr_assert(strstr(out, "  TIME  "), "%s", out);
        cr_assert(strstr(out, "Evicted pod flink/job-a-taskmanager-1-1"), "%s", out);
        free(out);

        /* A journal file copied off a node: --file. */
        glob_t g;
        cr_assert_eq(glob("/run/log/journal/*/system.journal", 0, NULL, &g), 0);
        cr_assert_eq(history(&out, "--file", g.gl_pathv[0], "--output", "json", NULL), 0, "%s", out);
        cJSON *file = cJSON_Parse(out);
        cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(file, "events")), 3, "%s", out);
        cJSON_Delete(file);
        free(out);
        globfree(&g);

        /* Invalid input: exit status 2 and one line saying why. */
        cr_assert_eq(history(&out, "--directory", "/run/log/journal", "--since", "yesterday", NULL), 2);
        cr_assert(strstr(out, "invalid value \"yesterday\" for --since"), "%s", out);
        free(out);
        cr_assert_eq(history(&out, "--directory", "/run/log/journal", "--file", "/x", NULL), 2);
        free(out);
        cr_assert_eq(history(&out, "--directory", "/nonexistent/journal", NULL), 1);
        cr_assert(strstr(out, "cannot open journal directory"), "%s", out);
        free(out);

        cJSON_Delete(all);
        imds_sim_stop(imds_a);
        imds_sim_stop(imds_b);
        k8s_sim_stop(kube);
        kill(jd, SIGTERM);
        waitpid(jd, NULL, 0);
}

Test(history, parse_since) {
        usec_t now = 1800000000ULL * USEC_PER_SEC, t = 42;
        cr_assert_eq(history_parse_since("2026-11-25T12:00:00Z", now, &t), 0);
        cr_assert_eq(t, 1795608000ULL * USEC_PER_SEC);
        cr_assert_eq(history_parse_since("2026-11-25T14:00:00.250+02:00", now, &t), 0);
        cr_assert_eq(t, 1795608000ULL * USEC_PER_SEC);
        cr_assert_eq(history_parse_since("2h", now, &t), 0);
        cr_assert_eq(t, now - 7200 * USEC_PER_SEC);
        cr_assert_eq(history_parse_since("1h30m ago", now, &t), 0);
        cr_assert_eq(t, now - 5400 * USEC_PER_SEC);
        t = 42;
        const char *bad[] = { "", "2", "yesterday", "2h ago ago", "-2h", "2026-13-01T00:00:00Z", "2026-11-25", " 2h",
                              "99999999h" };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                cr_assert_eq(history_parse_since(bad[i], now, &t), -EINVAL, "%s accepted", bad[i]);
                cr_assert_eq(t, 42);
        }
}
