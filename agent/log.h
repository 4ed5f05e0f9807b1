/* Logging: journald with structured fields when its socket exists, stderr
 * otherwise (text or JSON lines). One entry per line, whatever the message. */
#pragma once
#include <stdbool.h>
#include <syslog.h>

#include "macro.h"

enum log_target { LOG_TARGET_AUTO, LOG_TARGET_JOURNAL, LOG_TARGET_STDERR };
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

/* MESSAGE_IDs, one per kind of entry; systemd/spotd.catalog explains each. */
#define MSG_STARTED          "10b0765f550541968a02e8b9f755bb63"
#define MSG_STOPPING         "552c0adb7bee40e78a79cbe62b8cf3f7"
#define MSG_SPOT_NOTICE      "e4c9da6bf184496cb8c964249990883f"
#define MSG_REBALANCE        "81027988cdfa409e8e14c74a364930bc"
#define MSG_SCHEDULED        "7bd8e1dc92e3470781b215968b88de30"
#define MSG_ASG_TERMINATION  "f79f308f398b49c5bd2bd5e1e0c27efa"
#define MSG_EVENT_CANCELED   "0f49d366eae24f13b0c767b50974dad2"
#define MSG_EVENT_CLEARED    "82a5cf2625a34a65bdfb85881f567e11"
#define MSG_IMDS_ERROR       "27df904c9f0144128c07f70e3611eb54"
#define MSG_IMDS_RECOVERED   "ee8996abbe1a44169a6ff5c5ebada16a"
#define MSG_PLAN             "5647fa6b18df4ca69477b56a4a0d50b6"
#define MSG_CONFIG           "fd28811d9ed44613861aa6e77bb9d6ce"
#define MSG_FENCED           "6147413d8d83401b946c0f997aff043d"
#define MSG_K8S_ERROR        "8bf2152474aa488c9cf3c630e8295d2c"
#define MSG_EVICTING         "94b80aac712c438b80a75283a910264a"
#define MSG_POD_EVICTED      "e843f7d32eb742f2ad85405532a2100d"
#define MSG_POD_GONE         "79e125323b2c4c50a3d607fccf80237d"
#define MSG_EVICTION_BLOCKED "567186181dea491c99e53721f78d827c"
#define MSG_DONE             "a11e73ecf1174841a611800b7f13bf1a"
#define MSG_UNFENCED         "3cc8dd08269a42b8b2a3ee0176cc6d91"
#define MSG_RESCALE          "2d6f4e8a1c3b4f5e9a7d8c6b5e4f3a21"
#define MSG_WEBHOOK          "9c1e7b3d5f2a4c6e8b0d1f3a5c7e9b2d"

/* The structured context of an entry; NULL members are left out. Field names
 * in the journal: SPOTD_EVENT_ID, SPOTD_KIND, ... (design.md). */
struct log_ctx {
        const char *event_id, *kind, *phase, *node, *pod, *namespace_, *flink_cluster, *job_id;
};

/* Picks the target (auto: journal iff the socket exists; an explicit journal
 * without a socket falls back to stderr with a warning). socket_path NULL:
 * /run/systemd/journal/socket. */
void log_setup(enum log_target t, enum log_format f, int max_priority, const char *socket_path);
bool log_is_journal(void);
/* Applied to every entry (SPOTD_NODE) unless the entry names its own node. */
void log_set_node(const char *node);

void log_full(int priority, const char *message_id, const struct log_ctx *ctx,
              const char *fmt, ...) _printf_(4, 5);

#define log_debug(...)   log_full(LOG_DEBUG, NULL, NULL, __VA_ARGS__)
#define log_info(...)    log_full(LOG_INFO, NULL, NULL, __VA_ARGS__)
#define log_notice(...)  log_full(LOG_NOTICE, NULL, NULL, __VA_ARGS__)
#define log_warning(...) log_full(LOG_WARNING, NULL, NULL, __VA_ARGS__)
#define log_error(...)   log_full(LOG_ERR, NULL, NULL, __VA_ARGS__)

int log_level_from_string(const char *s);
