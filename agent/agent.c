#include "agent.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <curl/curl.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>

#include "detect.h"
#include "handle.h"
#include "health.h"
#include "http.h"
#include "log.h"
#include "status.h"

#define TRACKED_MAX (IMDS_SCHEDULED_MAX + 8)

struct tracked {
        struct status_event se;
        bool present; /* seen in this round's answer of its source */
};

struct agent {
        const struct config *cfg;
        struct imds *imds;
        struct status *status;
        struct health *health;
        struct k8s *k8s;
        struct handler *handler;
        char instance[64];
        bool have_instance;
        struct tracked ev[TRACKED_MAX];
        size_t nev;
        /* Per source: the error of the current failure streak (0: healthy)
         * and its length, so a failure is logged once, not on every poll. */
        int src_err[_EVENT_KIND_MAX + 1];
        unsigned src_failures[_EVENT_KIND_MAX + 1];
        bool token_mode_known, token_mode;
};

#define SRC_IDENTITY_SLOT _EVENT_KIND_MAX

static const char *const notice_ids[_EVENT_KIND_MAX] = {
        [EVENT_SPOT_INTERRUPTION] = MSG_SPOT_NOTICE,
        [EVENT_REBALANCE] = MSG_REBALANCE,
        [EVENT_SCHEDULED] = MSG_SCHEDULED,
        [EVENT_ASG_TERMINATION] = MSG_ASG_TERMINATION,
};

static void observe(void *userdata, const char *path, int err, long http_status, usec_t duration) {
        struct status *st = userdata;
        status_imds_request(st, imds_source_from_path(path), request_result_from(err, http_status), duration);
}

int agent_imds_new(const struct config *cfg, imds_observe_t obs, void *userdata, struct imds **ret) {
        struct imds_options o;
        imds_options_default(&o);
        o.endpoint = cfg->imds_endpoint;
        o.mode = cfg->imds_mode;
        o.token_ttl = (unsigned) (cfg->imds_token_ttl / USEC_PER_SEC);
        o.timeout = cfg->imds_timeout;
        o.connect_timeout = cfg->imds_timeout < o.connect_timeout ? cfg->imds_timeout : o.connect_timeout;
        o.observe = obs;
        o.userdata = userdata;
        return imds_new(&o, ret);
}

int agent_instance_id(struct imds *imds, char *buf, size_t len) {
        _cleanup_free_ char *body = NULL;
        size_t n;
        int r = imds_get(imds, "meta-data/instance-id", &body, &n);
        if (r < 0)
                return r;
        return imds_parse_token_text(body, n, buf, len, NULL);
}

void agent_describe_plan(const struct config *cfg, const struct event *e, char *buf, size_t len) {
        const char *pre = cfg->dry_run ? "dry run: would " : "plan: ";
        char dl[32] = "no deadline";
        if (e->deadline) {
                format_rfc3339(e->deadline, dl, sizeof dl);
        }
        if (e->canceled) {
                snprintf(buf, len, "%sremove spotd's cordon, taint and annotations from node %s, if any",
                         pre, cfg->node_name);
                return;
        }
        switch (config_action_for(cfg, e)) {
        case ACTION_IGNORE:
                snprintf(buf, len, "%signore it (%s-action=ignore)", pre,
                         e->kind == EVENT_REBALANCE ? "rebalance" : "event");
                break;
        case ACTION_CORDON:
                snprintf(buf, len, "%scordon node %s and taint it spotd.io/interruption=%s:NoSchedule",
                         pre, cfg->node_name, event_kind_to_string(e->kind));
                break;
        default:
                snprintf(buf, len,
                         "%scordon node %s, taint it spotd.io/interruption=%s:NoSchedule, checkpoint and "
                         "rescale the Flink jobs with TaskManagers on it, evict only those TaskManager pods, "
                         "all before %s",
                         pre, cfg->node_name, event_kind_to_string(e->kind), dl);
        }
}

static struct tracked *tracked_find(struct agent *a, const char *id) {
        for (size_t i = 0; i < a->nev; i++)
                if (strcmp(a->ev[i].se.ev.id, id) == 0)
                        return &a->ev[i];
        return NULL;
}

static void event_log_ctx(const struct agent *a, const struct tracked *t, struct log_ctx *c) {
        *c = (struct log_ctx) { .event_id = t->se.ev.id, .kind = event_kind_to_string(t->se.ev.kind),
                                .phase = t->se.phase, .node = a->cfg->node_name };
}

static void log_new_event(struct agent *a, struct tracked *t) {
        const struct event *e = &t->se.ev;
        struct log_ctx c;
        char when[32] = "", plan[512];
        long left = e->deadline ? (long) (e->deadline - time(NULL)) : 0;

        event_log_ctx(a, t, &c);
        if (e->deadline)
                format_rfc3339(e->deadline, when, sizeof when);
        if (e->canceled) {
                log_full(LOG_NOTICE, MSG_EVENT_CANCELED, &c, "Scheduled maintenance %s (%s) is %s",
                         e->id, e->detail, "canceled or completed");
                return;
        }
        switch (e->kind) {
        case EVENT_SPOT_INTERRUPTION:
                log_full(LOG_WARNING, notice_ids[e->kind], &c,
                         "Spot interruption notice: the instance will %s at %s (%lds left)", e->detail, when, left);
                break;
        case EVENT_REBALANCE: {
                char nt[32];
                format_rfc3339(e->notice_time, nt, sizeof nt);
                log_full(LOG_NOTICE, notice_ids[e->kind], &c, "Rebalance recommendation issued at %s", nt);
                break;
        }
        case EVENT_SCHEDULED:
                log_full(LOG_WARNING, notice_ids[e->kind], &c,
                         "Scheduled maintenance %s not before %s (%lds left)", e->detail, when, left);
                break;
        default:
                log_full(LOG_WARNING, notice_ids[e->kind], &c,
                         "Auto Scaling lifecycle state is %s: the instance is being terminated (assumed by %s)",
                         e->detail, when);
        }
        agent_describe_plan(a->cfg, e, plan, sizeof plan);
        log_full(LOG_INFO, MSG_PLAN, &c, "%s", plan);
}

/* Merges one answered source into the tracked set: new events are logged
 * once, known ones updated, vanished ones ended. Only called when the source
 * answered: a timeout never clears an event. */
static void merge_source(struct agent *a, enum event_kind k, const struct detect_result *res) {
        usec_t now = now_realtime();

        for (size_t i = 0; i < a->nev; i++)
                if (a->ev[i].se.ev.kind == k)
                        a->ev[i].present = false;

        for (size_t i = 0; i < res->n; i++) {
                const struct event *e = &res->events[i];
                struct tracked *t = tracked_find(a, e->id);
                char plan[512];
                if (!t) {
                        if (a->nev >= TRACKED_MAX) {
                                log_warning("Too many concurrent events (%d); ignoring %s", TRACKED_MAX, e->id);
                                continue;
                        }
                        t = &a->ev[a->nev++];
                        *t = (struct tracked) { .se = { .ev = *e, .first_seen = now } };
                        if (!t->se.ev.notice_time)
                                t->se.ev.notice_time = (time_t) (now / USEC_PER_SEC);
                        snprintf(t->se.phase, sizeof t->se.phase, "%s", e->canceled ? "canceled" : "detected");
                        if (!e->canceled)
                                status_notice(a->status, k);
                        t->se.last_seen = now;
                        t->present = true;
                        log_new_event(a, t);
                        status_upsert_event(a->status, &t->se);
                        if (e->canceled)
                                handler_cancel(a->handler, e);
                        else
                                handler_event(a->handler, &t->se.ev, config_action_for(a->cfg, e));
                        continue;
                }
                t->present = true;
                t->se.last_seen = now;
                if (e->canceled && !t->se.ev.canceled) {
                        struct log_ctx c;
                        t->se.ev.canceled = true;
                        snprintf(t->se.phase, sizeof t->se.phase, "canceled");
                        event_log_ctx(a, t, &c);
                        log_full(LOG_NOTICE, MSG_EVENT_CANCELED, &c, "Scheduled maintenance %s (%s) was canceled",
                                 e->id, e->detail);
                        agent_describe_plan(a->cfg, &t->se.ev, plan, sizeof plan);
                        log_full(LOG_INFO, MSG_PLAN, &c, "%s", plan);
                        handler_cancel(a->handler, &t->se.ev);
                }
                /* The spot time may be recomputed until final; maintenance may
                 * be rescheduled. An ASG deadline is ours and stays. */
                if (k != EVENT_ASG_TERMINATION && e->deadline != t->se.ev.deadline) {
                        log_debug("Deadline of %s moved by %lds", e->id, (long) (e->deadline - t->se.ev.deadline));
                        t->se.ev.deadline = e->deadline;
                        if (!t->se.ev.canceled)
                                handler_event(a->handler, &t->se.ev, config_action_for(a->cfg, e));
                }
                status_upsert_event(a->status, &t->se);
        }

        for (size_t i = 0; i < a->nev;) {
                struct tracked *t = &a->ev[i];
                if (t->se.ev.kind != k || t->present) {
                        i++;
                        continue;
                }
                struct log_ctx c;
                snprintf(t->se.phase, sizeof t->se.phase, "cleared");
                t->se.ended = now;
                event_log_ctx(a, t, &c);
                log_full(LOG_NOTICE, MSG_EVENT_CLEARED, &c, "%s %s is no longer served by the metadata service",
                         event_kind_to_string(k), t->se.ev.id);
                status_upsert_event(a->status, &t->se);
                a->ev[i] = a->ev[--a->nev];
        }
}

/* Logs the first failure of a streak and the recovery, nothing in between. */
static void source_result(struct agent *a, int slot, const char *what, int err, const char *why,
                          const char *excerpt) {
        if (err >= 0 || err == -ENOENT) {
                if (a->src_err[slot])
                        log_full(LOG_NOTICE, MSG_IMDS_RECOVERED, NULL,
                                 "Metadata %s answers again after %u failed polls", what, a->src_failures[slot]);
                a->src_err[slot] = 0;
                a->src_failures[slot] = 0;
                return;
        }
        a->src_failures[slot]++;
        if (a->src_err[slot] == err)
                return;
        a->src_err[slot] = err;
        if (why)
                log_full(LOG_ERR, MSG_IMDS_ERROR, NULL, "Metadata %s answer rejected: %s (body starts \"%s\")",
                         what, why, excerpt ? excerpt : "");
        else if (err == -EPROTO)
                log_full(LOG_ERR, MSG_IMDS_ERROR, NULL, "Metadata %s request to %s failed: HTTP %ld", what,
                         a->cfg->imds_endpoint, imds_last_status(a->imds));
        else
                log_full(LOG_ERR, MSG_IMDS_ERROR, NULL, "Metadata %s request to %s failed: %s", what,
                         a->cfg->imds_endpoint, http_strerror(err));
}

static void poll_round(struct agent *a) {
        bool reached = false;
        int r;

        if (!a->have_instance) {
                r = agent_instance_id(a->imds, a->instance, sizeof a->instance);
                source_result(a, SRC_IDENTITY_SLOT, "instance-id", r, r == -EINVAL ? "not an instance id" : NULL, "");
                if (r >= 0 || r == -ENOENT || r == -EINVAL) {
                        reached = true;
                        if (r < 0) /* no usable instance id: the node name is unique too */
                                snprintf(a->instance, sizeof a->instance, "%.63s", a->cfg->node_name);
                        a->have_instance = true;
                        status_set_info(a->status, a->cfg->node_name, a->instance, a->cfg->dry_run,
                                        a->cfg->poll_interval);
                        log_full(LOG_INFO, MSG_CONFIG, NULL, "Watching instance %s", a->instance);
                }
        }
        /* Ids need the instance; without it this round only probes. */
        for (int k = 0; a->have_instance && k < _EVENT_KIND_MAX; k++) {
                struct detect_result res;
                if (!a->cfg->watch[k])
                        continue;
                r = detect_source(a->imds, k, a->instance, a->cfg->asg_deadline, &res);
                if (r >= 0 || r == -EBADMSG || r == -EINVAL || r == -ENODATA || r == -E2BIG)
                        reached = true;
                if (r >= 0)
                        merge_source(a, k, &res);
                else if (res.why)
                        status_parse_error(a->status, imds_source_from_path(detect_path(k)));
                source_result(a, k, detect_path(k) + strlen("meta-data/"), r, res.why, res.excerpt);
        }
        bool tok = imds_using_token(a->imds);
        if (!a->token_mode_known || tok != a->token_mode) {
                log_full(tok ? LOG_INFO : LOG_WARNING, MSG_CONFIG, NULL,
                                 tok ? "Using IMDSv2 session tokens" : "IMDSv2 token unavailable; using IMDSv1");
                a->token_mode_known = true;
                a->token_mode = tok;
                status_set_imds_mode(a->status, tok ? "v2" : "v1");
        }
        const char *ids[TRACKED_MAX];
        for (size_t i = 0; i < a->nev; i++)
                ids[i] = a->ev[i].se.ev.id;
        if (reached && a->have_instance)
                handler_round(a->handler, ids, a->nev);
        status_poll_done(a->status, now_realtime(), now_monotonic(), reached);

}

static void signal_mask(sigset_t *mask) {
        sigemptyset(mask);
        sigaddset(mask, SIGTERM);
        sigaddset(mask, SIGINT);
        sigaddset(mask, SIGHUP);
}

static int setup_fds(const struct config *cfg, int *ret_sfd, int *ret_tfd) {
        sigset_t mask;
        signal_mask(&mask);
        int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        if (sfd < 0)
                return -errno;
        int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
        if (tfd < 0) {
                close(sfd);
                return -errno;
        }
        struct itimerspec its = {
                .it_value = { 0, 1 }, /* first round at once */
                .it_interval = { (time_t) (cfg->poll_interval / USEC_PER_SEC),
                                 (long) (cfg->poll_interval % USEC_PER_SEC) * 1000 },
        };
        if (timerfd_settime(tfd, 0, &its, NULL) < 0) {
                close(sfd);
                close(tfd);
                return -errno;
        }
        *ret_sfd = sfd;
        *ret_tfd = tfd;
        return 0;
}

/* The API client from --kube-* or, when --kube-api is unset, from the
 * in-cluster environment. *ret stays NULL when neither is there. */
int agent_k8s_new(const struct config *cfg, struct k8s **ret) {
        char url[300], token[1024] = "", ca[1024] = "", ns[64];
        struct k8s_options o = {
                .token_file = cfg->kube_token_file[0] ? cfg->kube_token_file : NULL,
                .ca_file = cfg->kube_ca_file[0] ? cfg->kube_ca_file : NULL,
                .client_cert = cfg->kube_client_cert[0] ? cfg->kube_client_cert : NULL,
                .client_key = cfg->kube_client_key[0] ? cfg->kube_client_key : NULL,
                .timeout = cfg->kube_timeout,
                .max_connections = cfg->kube_max_connections,
        };
        if (cfg->kube_api[0])
                o.api_url = cfg->kube_api;
        else if (k8s_in_cluster(NULL, NULL, url, sizeof url, token, sizeof token, ca, sizeof ca, ns, sizeof ns) >= 0) {
                o.api_url = url;
                if (!o.token_file)
                        o.token_file = token;
                if (!o.ca_file)
                        o.ca_file = ca;
        } else
                return 0;
        int r = k8s_new(&o, ret);
        if (r < 0)
                log_error("Cannot set up the Kubernetes client for %s: %s (check --kube-token-file, --kube-ca-file, "
                          "--kube-client-cert and --kube-client-key)", o.api_url, strerror(-r));
        else
                log_full(LOG_INFO, MSG_CONFIG, NULL, "Kubernetes API %s%s", o.api_url, cfg->dry_run ? " (dry run: reads only)" : "");
        return r;
}

int agent_run(const struct config *cfg) {
        struct agent a = { .cfg = cfg };
        int sfd = -1, tfd = -1, r, ret = 1;
        uint64_t wd_usec = 0;
        usec_t wd_last = 0;
        char d[32];

        /* Block before any thread starts (the HTTP server's, curl's
         * resolver): threads inherit the mask, so signals reach only the
         * signalfd instead of killing the process from another thread. */
        sigset_t mask;
        signal_mask(&mask);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return 1;
        signal(SIGPIPE, SIG_IGN);

        log_set_node(cfg->node_name);
        r = status_new(&a.status);
        if (r < 0) {
                log_error("Cannot allocate status: %s", strerror(-r));
                return 1;
        }
        status_set_info(a.status, cfg->node_name, "", cfg->dry_run, cfg->poll_interval);
        status_set_state(a.status, "starting");
        r = agent_imds_new(cfg, observe, a.status, &a.imds);
        if (r < 0) {
                log_error("Cannot set up the metadata client for %s: %s", cfg->imds_endpoint, strerror(-r));
                goto finish;
        }
        r = agent_k8s_new(cfg, &a.k8s);
        if (r < 0)
                goto finish;
        if (!a.k8s && !cfg->dry_run) {
                log_error("No Kubernetes API: set --kube-api (or run in a cluster), or use --dry-run");
                goto finish;
        }
        r = handler_new(cfg, a.k8s, a.status, &a.handler);
        if (r < 0)
                goto finish;
        if (cfg->health_addr[0]) {
                r = health_start(cfg->health_addr, a.status, cfg->health_max_connections, &a.health);
                if (r < 0) {
                        log_error("Cannot serve HTTP on %s: %s", cfg->health_addr, strerror(-r));
                        goto finish;
                }
        }
        r = setup_fds(cfg, &sfd, &tfd);
        if (r < 0) {
                log_error("Cannot set up signals and timers: %s", strerror(-r));
                goto finish;
        }
        if (sd_watchdog_enabled(0, &wd_usec) <= 0)
                wd_usec = 0;

        format_duration(cfg->poll_interval, d, sizeof d);
        /* The bound port is logged because --health-addr may ask for port 0. */
        char http[96] = "off";
        if (a.health)
                snprintf(http, sizeof http, "%s (port %u)", cfg->health_addr, health_port(a.health));
        log_full(LOG_INFO, MSG_STARTED, NULL, "spotd %s started: node %s, metadata service %s, poll interval %s, HTTP %s%s",
                 SPOTD_VERSION, cfg->node_name, cfg->imds_endpoint, d, http, cfg->dry_run ? ", dry run" : "");
        sd_notify(0, "READY=1\nSTATUS=watching");
        handler_start(a.handler);

        for (;;) {
                struct pollfd p[2] = { { .fd = sfd, .events = POLLIN }, { .fd = tfd, .events = POLLIN } };
                int timeout = -1;
                usec_t now = now_monotonic(), wake = handler_next_wakeup(a.handler);

                status_heartbeat(a.status, now);
                if (wd_usec) {
                        /* Pet the watchdog from the loop itself: a stuck loop must starve it. */
                        if (now - wd_last >= wd_usec / 2) {
                                sd_notify(0, "WATCHDOG=1");
                                wd_last = now;
                        }
                        timeout = (int) ((wd_last + wd_usec / 2 - now) / USEC_PER_MSEC) + 1;
                }
                if (wake != UINT64_MAX) {
                        int t = wake > now ? (int) ((wake - now) / USEC_PER_MSEC) + 1 : 0;
                        if (timeout < 0 || t < timeout)
                                timeout = t;
                }
                if (a.k8s) {
                        /* API transfers, signals and the poll timer in one wait. */
                        struct curl_waitfd w[2] = { { .fd = sfd, .events = CURL_WAIT_POLLIN },
                                                    { .fd = tfd, .events = CURL_WAIT_POLLIN } };
                        r = k8s_poll(a.k8s, w, 2, timeout < 0 ? 1000 : timeout);
                        p[0].revents = w[0].revents & CURL_WAIT_POLLIN ? POLLIN : 0;
                        p[1].revents = w[1].revents & CURL_WAIT_POLLIN ? POLLIN : 0;
                        if (r < 0) {
                                log_error("Waiting for the Kubernetes API failed: %s", strerror(-r));
                                break;
                        }
                } else if (poll(p, 2, timeout) < 0 && errno != EINTR) {
                        log_error("poll failed: %s", strerror(errno));
                        break;
                }
                if (p[0].revents & POLLIN) {
                        struct signalfd_siginfo si;
                        if (read(sfd, &si, sizeof si) == sizeof si) {
                                if (si.ssi_signo == SIGHUP)
                                        continue; /* no reload: the configuration is fixed at start */
                                log_full(LOG_INFO, MSG_STOPPING, NULL, "Received %s, stopping",
                                         strsignal((int) si.ssi_signo));
                                ret = 0;
                                break;
                        }
                }
                if (p[1].revents & POLLIN) {
                        uint64_t expirations;
                        /* Missed ticks (a slow round) are dropped, not replayed. */
                        if (read(tfd, &expirations, sizeof expirations) == sizeof expirations)
                                poll_round(&a);
                }
                handler_tick(a.handler);
                /* After every step, so /status never lags the handling. */
                status_set_state(a.status, handler_busy(a.handler) ? "handling" : a.nev ? "handled" : "watching");
        }

finish:
        sd_notify(0, "STOPPING=1");
        status_set_state(a.status, "stopping");
        a.health = health_stop(a.health);
        a.k8s = k8s_free(a.k8s); /* before the handler: pending requests die without callbacks */
        a.handler = handler_free(a.handler);
        if (sfd >= 0)
                close(sfd);
        if (tfd >= 0)
                close(tfd);
        a.imds = imds_free(a.imds);
        a.status = status_free(a.status);
        return ret;
}
