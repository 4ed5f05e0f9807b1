/* The daemon: the poll loop, event tracking, signals and sd_notify. */
#pragma once
#include "config.h"
#include "k8s.h"

/* Runs until SIGTERM or SIGINT. Returns the process exit status: 0 after a
 * clean stop, 1 when start-up failed (logged). */
int agent_run(const struct config *cfg);

/* Sets up the metadata client from the configuration. observe may be NULL.
 * Returns 0 or -errno. */
int agent_imds_new(const struct config *cfg, imds_observe_t observe, void *userdata,
                   struct imds **ret);

/* The Kubernetes client from --kube-* or the in-cluster environment; *ret
 * stays NULL when neither is configured. Logs and returns -errno on a bad
 * configuration. */
int agent_k8s_new(const struct config *cfg, struct k8s **ret);

/* Reads the instance id into buf. 0, -ENOENT when the service has none
 * (then callers use the node name), or another -errno. */
int agent_instance_id(struct imds *imds, char *buf, size_t len);

/* One line describing what the agent does (or, in a dry run, would do)
 * about an event. */
void agent_describe_plan(const struct config *cfg, const struct event *e, char *buf, size_t len);
