/* Agent configuration: every option is a --flag, an SPOTD_* environment
 * variable and a key of the optional config file. Precedence: flag >
 * environment > file > default. */
#pragma once
#include <stdbool.h>
#include <stdio.h>

#include "event.h"
#include "imds.h"
#include "log.h"
#include "timeutil.h"

enum output_format { OUTPUT_TEXT, OUTPUT_JSON };

/* A repeatable option: flags repeat; in the environment and the config file
 * the items are one per line. */
#define STRLIST_MAX 8
struct strlist {
        unsigned n;
        char v[STRLIST_MAX][512];
};

/* The pod list sends the TaskManager label selector and the field selector
 * spec.nodeName=<node> URL-escaped (k8s_escape()) from buffers of these
 * sizes (terminating NUL included); config_parse() refuses a --tm-selector
 * or --node-name that would not fit, so the list cannot fail on it at
 * interruption time. */
#define CONFIG_TM_SELECTOR_ESCAPED_MAX 700
#define CONFIG_FIELD_SELECTOR_ESCAPED_MAX 400

struct config {
        char config_file[1024];
        char node_name[254];
        char imds_endpoint[257];
        enum imds_mode imds_mode;
        usec_t imds_token_ttl;
        usec_t imds_timeout;
        usec_t poll_interval;
        bool watch[_EVENT_KIND_MAX];
        enum event_action rebalance_action;
        usec_t asg_deadline;
        char health_addr[64];       /* "" when disabled */
        unsigned health_max_connections;
        bool dry_run;
        enum log_target log_target;
        enum log_format log_format;
        int log_level;
        enum output_format output;
        /* Kubernetes (empty kube_api: in-cluster configuration, if any) */
        char kube_api[257];
        char kube_token_file[1024];
        char kube_ca_file[1024];
        char kube_client_cert[1024];
        char kube_client_key[1024];
        unsigned kube_max_connections;
        usec_t kube_timeout;
        char tm_selector[512];
        usec_t eviction_margin;
        bool force_delete;
        char event_namespace[64];
        /* Flink */
        char flink_rest_template[256];
        /* Hosts a spotd.io/flink-rest-url annotation may name: "host" exactly,
         * ".suffix" for the hosts below it; empty: annotations are ignored. */
        struct strlist flink_url_allow;
        usec_t flink_timeout;
        usec_t checkpoint_fresh;
        usec_t checkpoint_timeout;
        usec_t tm_stop_time;
        usec_t verify_timeout;
        enum { RESTORE_AFTER_RESCALE, RESTORE_NEVER } restore;
        /* Webhooks (rescale signal for other controllers) */
        struct strlist webhook_urls;
        struct strlist webhook_headers;  /* "Name: value" */
        usec_t webhook_timeout;
        /* spotd history (history.c validates since) */
        char history_directory[1024];
        char history_file[1024];
        char history_since[64];
        char history_node[254];
};

/* Parses argv (argv[0] is the subcommand or program name and is skipped),
 * the environment (NULL: environ) and the config file named by --config /
 * SPOTD_CONFIG. Returns 0; 1 when --help was printed to out; -EINVAL after
 * printing one line to err naming the option, the value and what was wanted. */
int config_parse(struct config *c, int argc, char *const *argv, char *const *envp,
                 FILE *out, FILE *err);

/* Whether --flink-url-allow lets a spotd.io/flink-rest-url annotation point
 * at host (already taken out of the URL: no scheme, userinfo, port or
 * brackets). Case-insensitive; a ".suffix" entry matches the hosts below
 * it on a label boundary, not the suffix itself. false for anything that is
 * not a plain DNS name or IPv4 address, and when the list is empty. */
bool config_flink_url_allowed(const struct config *c, const char *host);

/* Prints the options with their environment names and defaults. */
void config_usage(FILE *f);

/* The lifecycle of a scheduled event or lifecycle state to action mapping
 * follows design.md; this tells what to do about an event kind. */
enum event_action config_action_for(const struct config *c, const struct event *e);
