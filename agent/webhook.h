/* The rescale signal for other controllers: a JSON POST to every
 * --webhook-url at notice and at completion. Asynchronous, retried with
 * backoff, never blocking the handling; URLs are logged as scheme://host:port
 * only and headers never. */
#pragma once
#include "config.h"
#include "k8s.h"
#include "status.h"

struct webhook;

/* k NULL or no URL configured: deliveries are logged (dry run) or skipped. */
int webhook_new(const struct config *cfg, struct k8s *k, struct status *st, struct webhook **ret);
struct webhook *webhook_free(struct webhook *w);
/* Queues json (copied) for every URL. */
void webhook_send(struct webhook *w, const char *event_id, const char *json);
void webhook_tick(struct webhook *w);
usec_t webhook_next_wakeup(const struct webhook *w);

/* scheme://host:port of url (the scheme's port when it has none): no
 * userinfo, path, query or fragment. The path is a secret too: Slack, Teams
 * and Discord webhooks carry their credential in it. */
void webhook_redact(const char *url, char *buf, size_t len);
