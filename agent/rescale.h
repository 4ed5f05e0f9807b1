/* The Flink side of one interruption (design.md steps 4-8): per Flink
 * cluster with TaskManagers on the node, read the JobManager, plan lower
 * bounds, record the originals on the node, take a fresh checkpoint, lower
 * the bounds around the evictions in the order the version needs, verify the
 * job runs on the survivors and restore the bounds. Driven by the main loop
 * like the handler; it never holds an eviction past its gate time: every
 * failure degrades to a plain graceful eviction. */
#pragma once
#include <stdbool.h>

#include "config.h"
#include "k8s.h"
#include "status.h"

struct rescale;

/* Annotations: one per Flink cluster, "flink.spotd.io/<name>", holding the
 * REST URL and, per job and vertex, the original bounds and the ones spotd
 * set: {"url":"...","jobs":{"<jid>":{"<vid>":[lower,upper,set_upper]}}}. */
#define FLINK_ANN_PREFIX "flink.spotd.io/"

int rescale_new(const struct config *cfg, struct k8s *k, struct status *st, const char *event_id, usec_t evict_by,
                struct rescale **ret);
struct rescale *rescale_free(struct rescale *r);

/* A TaskManager pod on this node (from the pod list); pod is the Kubernetes
 * object (for labels, annotations and IP). Returns the cluster index the pod
 * belongs to, or -1 when it is not recognisably Flink's. */
int rescale_add_pod(struct rescale *r, const void *pod_json);
/* The node as read at the start of the event (annotations of an earlier
 * run), and the other nodes spotd fenced (their TaskManagers leave too). */
void rescale_set_node(struct rescale *r, const void *node_json);
/* Until when evictions may wait for the Flink steps (monotonic). */
void rescale_set_evict_by(struct rescale *r, usec_t evict_by);
/* Starts discovery of every cluster added. */
void rescale_start(struct rescale *r);

/* May the pods of cluster c be evicted now? (Checkpoint done or over its
 * budget, and on 2.x the lowered bounds PUT first.) */
bool rescale_may_evict(struct rescale *r, int c);
/* An eviction of a pod of cluster c was accepted (1.18-1.20 PUT follows). */
void rescale_evicted(struct rescale *r, int c);

/* The event was canceled: nothing more is lowered, and bounds already
 * lowered are restored (recorded originals cleared). Keep ticking it
 * until rescale_done(). */
void rescale_abort(struct rescale *r);

void rescale_tick(struct rescale *r);
usec_t rescale_next_wakeup(const struct rescale *r);
bool rescale_done(const struct rescale *r);
/* Requests in flight: the rescale must not be freed before they end. */
bool rescale_busy(const struct rescale *r);
/* One line per cluster for the summary: outcome and timeline. */
void rescale_summary(const struct rescale *r, char *buf, size_t len);
/* The jobs for the webhook: a cJSON array (caller deletes) of
 * {namespace, cluster, job_id, flink_version, old_bounds, new_bounds, outcome, restored}. */
void *rescale_jobs_json(const struct rescale *r);
/* Realtime usec of the timeline points (0: not reached). */
struct rescale_timeline { usec_t checkpoint_done, put_accepted, running_at_new, restored; };
void rescale_timeline(const struct rescale *r, struct rescale_timeline *ret);
