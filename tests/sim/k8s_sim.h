/* A strict Kubernetes API server simulator for tests, the demo and
 * benchmarks: HTTPS (libmicrohttpd + GnuTLS) on 127.0.0.1, port 0, with a
 * CA and server certificate generated at start, bearer-token auth, and just
 * enough of core/v1 and policy/v1 for spotd (protocols.md §2). A request the
 * real API server would reject is rejected here too, with a Status body.
 * Every setter is thread-safe. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct k8s_sim;

struct k8s_sim_options {
        const char *dir;          /* where ca.crt, server.crt/key and token go (mkdtemp if NULL) */
        const char *token;        /* accepted bearer token (default "sim-token-1") */
        unsigned grace_ms_per_s;  /* how long a grace-period second lasts (default 10 ms) */
};

int k8s_sim_start(const struct k8s_sim_options *o, struct k8s_sim **ret);
struct k8s_sim *k8s_sim_stop(struct k8s_sim *s);
/* "https://127.0.0.1:PORT" */
void k8s_sim_url(const struct k8s_sim *s, char *buf, size_t len);
uint16_t k8s_sim_port(const struct k8s_sim *s);
/* Paths of the generated CA bundle and of a token file holding the current token. */
const char *k8s_sim_ca_file(const struct k8s_sim *s);
const char *k8s_sim_token_file(const struct k8s_sim *s);
/* Replaces the accepted token and rewrites the token file (old token: 401). */
void k8s_sim_rotate_token(struct k8s_sim *s, const char *token);

/* Objects. labels: "k=v,k2=v2". */
void k8s_sim_add_node(struct k8s_sim *s, const char *name, const char *labels);
void k8s_sim_add_pod(struct k8s_sim *s, const char *ns, const char *name, const char *node,
                     const char *labels, unsigned grace_seconds, const char *owner_kind /* NULL, "DaemonSet", "ReplicaSet", ... */);
/* A PodDisruptionBudget over pods matching labels in ns: evictions answer
 * 429 until blocked_ms have passed (0: forever, UINT32_MAX: never blocks). */
void k8s_sim_add_pdb(struct k8s_sim *s, const char *ns, const char *name, const char *labels, uint32_t blocked_ms);

/* Called (under the simulator's lock: do not call back into it) when a
 * running pod starts terminating after an eviction or delete. ip may be NULL. */
typedef void (*k8s_sim_terminate_hook_t)(void *userdata, const char *ns, const char *name, const char *ip);
void k8s_sim_set_terminate_hook(struct k8s_sim *s, k8s_sim_terminate_hook_t fn, void *userdata);
/* The pod's containers have exited, as a kubelet reports: a terminating pod
 * is gone from now on (without waiting for the end of its grace period). */
void k8s_sim_pod_exited(struct k8s_sim *s, const char *ns, const char *name);
/* Sets metadata.annotations[key] of a pod. */
void k8s_sim_set_pod_annotation(struct k8s_sim *s, const char *ns, const char *name, const char *key, const char *value);
/* Sets status.podIP (by default 10.0.x.y, in the order pods are added). */
void k8s_sim_set_pod_ip(struct k8s_sim *s, const char *ns, const char *name, const char *ip);
/* Pod IP as served (status.podIP), copied into buf ("" if unknown). */
void k8s_sim_pod_ip(struct k8s_sim *s, const char *ns, const char *name, char *buf, size_t len);

/* Node state as JSON (the full object, as GET returns it); caller frees. */
char *k8s_sim_node_json(struct k8s_sim *s, const char *name);
/* Sets spec.unschedulable as another writer would (bumps resourceVersion). */
void k8s_sim_set_unschedulable(struct k8s_sim *s, const char *node, bool v);
/* Pod lifecycle: 0 running, 1 terminating, 2 gone (deleted); -1 if never
 * added. Adding a pod again replaces it (new uid) and keeps its counters. */
int k8s_sim_pod_state(struct k8s_sim *s, const char *ns, const char *name);
unsigned k8s_sim_evictions(struct k8s_sim *s, const char *ns, const char *name);   /* accepted (201) */
/* Every authenticated eviction POST for an added pod, whatever the answer. */
unsigned k8s_sim_eviction_attempts(struct k8s_sim *s, const char *ns, const char *name);
unsigned k8s_sim_deletes(struct k8s_sim *s, const char *ns, const char *name);
/* Events posted (201), and how many have reason; over the last 10000 kept. */
unsigned k8s_sim_events(struct k8s_sim *s, const char *reason /* NULL: all */);
/* Those Events as posted, a JSON array, malloc'ed. */
char *k8s_sim_events_json(struct k8s_sim *s);

/* Faults. The next count requests (whose path starts with prefix; NULL:
 * any) answer status (500, 503, ...) with a Status body; or, for the two
 * special values below, are delayed / dropped. */
#define K8S_SIM_DROP  1   /* close the connection without an answer */
#define K8S_SIM_SLOW  2   /* answer after arg ms */
/* Answer faults: the request is served (and its change made) as usual, the
 * answer is spoilt on its way back, as a broken proxy or link would. */
#define K8S_SIM_MALFORMED 3 /* the body cut in half (JSON that does not parse) */
#define K8S_SIM_OVERSIZED 4 /* the body replaced by arg bytes of JSON (default 16 MiB) */
#define K8S_SIM_DRIP      5 /* the body sent one byte every arg ms (default 100) */
#define K8S_SIM_CUT       6 /* whole length announced, the connection closed after half the body */
/* A new fault on the same prefix replaces the old one; count 0 removes it.
 * Faults come before authentication, as a failing server's answers would. */
void k8s_sim_fault(struct k8s_sim *s, const char *prefix, int status, unsigned arg, unsigned count);
/* true: the server goes away (every connection closed, connects refused);
 * false: it comes back on the same port with its state. Not concurrently
 * with itself. 0 or -errno (the port was taken meanwhile). */
int k8s_sim_set_refusing(struct k8s_sim *s, bool refusing);
/* The next count writes (PATCH) to node answer 409 as if another writer won. */
void k8s_sim_conflict(struct k8s_sim *s, const char *node, unsigned count);

/* Counters. */
unsigned k8s_sim_requests(struct k8s_sim *s, const char *method /* NULL: any */, const char *path_prefix /* NULL: any */);
unsigned k8s_sim_unauthorized(struct k8s_sim *s);
unsigned k8s_sim_cluster_wide_pod_lists(struct k8s_sim *s); /* GET /api/v1/pods without a nodeName field selector */
unsigned k8s_sim_connections(struct k8s_sim *s);
/* Monotonic usec of the first and the last accepted eviction (0 if none). */
void k8s_sim_eviction_window(struct k8s_sim *s, uint64_t *first, uint64_t *last);
/* Writes a request log line per request ("METHOD path status") into a
 * malloc'ed string; for failure messages. */
char *k8s_sim_log(struct k8s_sim *s);

/* For tests of what spotd must never do (tests/test_guarantees.c). */
/* true: pod lists ignore fieldSelector (spec.nodeName), as a broken or
 * older API server might: every pod matching the label selector comes back. */
void k8s_sim_ignore_field_selector(struct k8s_sim *s, bool ignore);
/* Right after the next pod list is answered, the pod is replaced by a new
 * one of the same name (new uid, running), as a StatefulSet recreates it:
 * the list's answer still holds the old one. */
void k8s_sim_replace_after_list(struct k8s_sim *s, const char *ns, const char *name);
/* Sets status.phase of a pod ("Succeeded", "Failed", ...). */
void k8s_sim_set_pod_phase(struct k8s_sim *s, const char *ns, const char *name, const char *phase);
/* Appends a taint to a node, as an operator's kubectl taint would. */
void k8s_sim_add_node_taint(struct k8s_sim *s, const char *node, const char *key, const char *value, const char *effect);
/* The shortest time (usec) between two eviction POSTs for the pod, whatever
 * their answers; UINT64_MAX with fewer than two. */
uint64_t k8s_sim_eviction_min_gap(struct k8s_sim *s, const char *ns, const char *name);
