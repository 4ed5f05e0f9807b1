/* spotd's entries read back from a private systemd-journald with
 * `journalctl -o json`. The journald runs in a mount namespace of this test
 * process, on tmpfs, so it never touches the machine's journal (and works as
 * root without systemd as PID 1). */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include "helpers.h"
#include "journald.h"
#include "imds_sim.h"



/* All spotd entries as JSON objects, newest last. */
static cJSON *journal_read(void) {
        cJSON *arr = cJSON_CreateArray();
        FILE *f = popen("journalctl -D /run/log/journal -o json --no-pager SYSLOG_IDENTIFIER=spotd 2>/dev/null", "r");
        char line[65536];
        cr_assert_not_null(f);
        while (fgets(line, sizeof line, f)) {
                cJSON *j = cJSON_Parse(line);
                if (j)
                        cJSON_AddItemToArray(arr, j);
        }
        pclose(f);
        return arr;
}

static const char *field(const cJSON *e, const char *k) {
        const cJSON *v = cJSON_GetObjectItem(e, k);
        return cJSON_IsString(v) ? v->valuestring : NULL;
}

Test(journal, structured_fields_reach_journald, .timeout = 60) {
        pid_t jd = journald_start();
        struct imds_sim *sim;
        char url[64], ep[128];
        struct proc p;

        cr_assert_eq(imds_sim_start(NULL, &sim), 0);
        imds_sim_url(sim, url, sizeof url);
        snprintf(ep, sizeof ep, "--imds-endpoint=%s", url);
        cr_assert_eq(proc_spawn(&p, (char *[]) { "spotd", "run", ep, "--node-name=node-j", "--poll-interval=50ms",
                                                 "--health-addr=off", "--dry-run", NULL }, NULL), 0);
        usleep(300 * 1000);
        imds_sim_set_spot(sim, "terminate", time(NULL) + 120, 0);

        const cJSON *notice = NULL, *plan = NULL;
        cJSON *entries = NULL;
        for (int i = 0; i < 100 && !(notice && plan); i++) {
                usleep(100 * 1000);
                cJSON_Delete(entries);
                entries = journal_read();
                notice = plan = NULL;
                const cJSON *e;
                cJSON_ArrayForEach(e, entries) {
                        if (streq_ptr(field(e, "MESSAGE_ID"), "e4c9da6bf184496cb8c964249990883f"))
                                notice = e;
                        if (streq_ptr(field(e, "MESSAGE_ID"), "5647fa6b18df4ca69477b56a4a0d50b6") &&
                            strstr(field(e, "MESSAGE"), "dry run: would cordon node node-j"))
                                plan = e;
                }
        }
        cr_assert_eq(proc_stop(&p, SIGTERM, 5000), 0);
        cr_assert_not_null(notice, "no notice entry in the journal; spotd said: %s", p.out);
        cr_assert_str_eq(field(notice, "SPOTD_EVENT_ID"), "spot-i-0123456789abcdef0-terminate");
        cr_assert_str_eq(field(notice, "SPOTD_KIND"), "spot-interruption");
        cr_assert_str_eq(field(notice, "SPOTD_PHASE"), "detected");
        cr_assert_str_eq(field(notice, "SPOTD_NODE"), "node-j");
        cr_assert_str_eq(field(notice, "PRIORITY"), "4");
        cr_assert(strstr(field(notice, "MESSAGE"), "Spot interruption notice"));
        cr_assert_not_null(plan);
        cr_assert(strstr(field(plan, "MESSAGE"), "dry run: would cordon node node-j"));

        /* Nothing went to stderr while the journal was there. */
        cr_assert_null(strstr(p.out ? p.out : "", "Spot interruption notice"), "%s", p.out);
        /* The start and stop entries carry their own ids. */
        int started = 0, stopping = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, entries) {
                started += streq_ptr(field(e, "MESSAGE_ID"), "10b0765f550541968a02e8b9f755bb63");
        }
        cJSON_Delete(entries);
        entries = journal_read();
        cJSON_ArrayForEach(e, entries) {
                stopping += streq_ptr(field(e, "MESSAGE_ID"), "552c0adb7bee40e78a79cbe62b8cf3f7");
        }
        cr_assert_eq(started, 1);
        cr_assert_eq(stopping, 1);
        cJSON_Delete(entries);
        proc_free(&p);
        imds_sim_stop(sim);
        kill(jd, SIGTERM);
        waitpid(jd, NULL, 0);
}
