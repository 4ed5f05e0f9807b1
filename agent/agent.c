#include "agent.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
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

/* One poll round's answers. The metadata client blocks (up to
 * --imds-timeout a request), so rounds run on a thread of their own: the
 * loop that drives the API, Flink and webhook transfers never waits on the
 * metadata service. */
struct round {
        bool have_instance;   /* in: the instance id is known */
        char instance[64];    /* in; out when it was not known */
        bool known;           /* out: the instance id is known now */
        int id_r;             /* out: the instance-id lookup, when it was not known */
        int r[_EVENT_KIND_MAX];
        struct detect_result res[_EVENT_KIND_MAX];
        long status[_EVENT_KIND_MAX + 1]; /* out: HTTP status of each source's last request, the instance id's last */
        bool tok;
        /* The round thread's own: each source's last answer (200 only), so
         * one unchanged since the last round is not parsed again; r[] and
         * res[] still hold its result (the main thread only reads them). */
        char *body[_EVENT_KIND_MAX];
        size_t len[_EVENT_KIND_MAX];
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
        /* The streak's HTTP status (-EPROTO), whether its answer was rejected
         * (a parse error), and whether it went unlogged because another
         * source had logged the same failure: one outage, one line. */
        long src_status[_EVENT_KIND_MAX + 1];
        bool src_rejected[_EVENT_KIND_MAX + 1], src_quiet[_EVENT_KIND_MAX + 1];
        bool token_mode_known, token_mode;
        /* The round thread: it alone uses imds while a round is out. */
        pthread_t round_thread;
        bool round_thread_started, round_busy; /* round_busy: main thread only */
        pthread_mutex_t round_lock;
        pthread_cond_t round_cond;
        bool round_go, round_done, round_quit; /* under round_lock */
        int round_fd;                          /* eventfd: a round is done */
        struct round round;
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
                /* The notice time stays the first one seen: EC2 issues one
                 * rebalance recommendation per instance, at one time; a service
                 * that recomputes noticeTime on every answer only tells the poll
                 * time, and the journal, /status and the Kubernetes Event must
                 * keep agreeing. The spot time may be recomputed until final;
                 * maintenance may be rescheduled. An ASG deadline is ours and
                 * stays. */
                if (k != EVENT_ASG_TERMINATION && e->deadline != t->se.ev.deadline) {
                        log_debug("Deadline of %s moved by %lds", e->id, (long) (e->deadline - t->se.ev.deadline));
                        t->se.ev.deadline = e->deadline;
                        if (!t->se.ev.canceled)
                                handler_event(a->handler, &t->se.ev, config_action_for(a->cfg, e));
                }
                status_refresh_event(a->status, &t->se); /* keeps the handler's phase and timeline */
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
                status_refresh_event(a->status, &t->se);
                a->ev[i] = a->ev[--a->nev];
        }
}

/* Logs the first failure of a streak and the recovery, nothing in between. */
static void source_result(struct agent *a, int slot, const char *what, int err, const char *why,
                          const char *excerpt) {
        if (err >= 0 || err == -ENOENT) {
                if (a->src_err[slot] && !a->src_quiet[slot])
                        log_full(LOG_NOTICE, MSG_IMDS_RECOVERED, NULL,
                                 "Metadata %s answers again after %u failed polls", what, a->src_failures[slot]);
                a->src_err[slot] = 0;
                a->src_failures[slot] = 0;
                a->src_quiet[slot] = false;
                return;
        }
        a->src_failures[slot]++;
        if (a->src_err[slot] == err)
                return;
        a->src_err[slot] = err;
        a->src_status[slot] = err == -EPROTO ? a->round.status[slot] : 0;
        a->src_rejected[slot] = why != NULL;
        a->src_quiet[slot] = false;
        /* A service failing for every source the same way (down, timing
         * out, 5xx) is one failure: the first source logs it. A rejected
         * answer is the source's own. */
        for (int s = 0; !why && s <= _EVENT_KIND_MAX; s++)
                if (s != slot && a->src_err[s] == err && a->src_status[s] == a->src_status[slot] && !a->src_rejected[s] &&
                    !a->src_quiet[s]) {
                        a->src_quiet[slot] = true;
                        return;
                }
        if (why)
                log_full(LOG_ERR, MSG_IMDS_ERROR, NULL, "Metadata %s answer rejected: %s (body starts \"%s\")",
                         what, why, excerpt ? excerpt : "");
        else if (err == -EPROTO)
                log_full(LOG_ERR, MSG_IMDS_ERROR, NULL, "Metadata %s request to %s failed: HTTP %ld", what,
                         a->cfg->imds_endpoint, a->round.status[slot]);
        else
                log_full(LOG_ERR, MSG_IMDS_ERROR, NULL, "Metadata %s request to %s failed: %s", what,
                         a->cfg->imds_endpoint, http_strerror(err));
}

static bool round_quitting(struct agent *a) {
        pthread_mutex_lock(&a->round_lock);
        bool q = a->round_quit;
        pthread_mutex_unlock(&a->round_lock);
        return q;
}

/* A source not asked this round (or about to be parsed afresh). */
static void round_forget(struct round *rd, enum event_kind k) {
        rd->r[k] = -ECANCELED;
        rd->res[k] = (struct detect_result) {};
        free(rd->body[k]);
        rd->body[k] = NULL;
        rd->len[k] = 0;
}

/* The round thread's half of a poll round: the requests, nothing else of
 * the agent. The sources are asked at once (one wait per round, and on a
 * real instance, which closes every connection, the connections are set up
 * side by side). A stop is honoured between the instance id and the rest. */
static void fetch_round(struct agent *a, struct round *rd) {
        struct imds_answer ans[_EVENT_KIND_MAX];
        enum event_kind kind[_EVENT_KIND_MAX];
        size_t n = 0;

        rd->known = rd->have_instance;
        if (!rd->have_instance) {
                rd->id_r = agent_instance_id(a->imds, rd->instance, sizeof rd->instance);
                rd->status[_EVENT_KIND_MAX] = imds_last_status(a->imds);
                if (rd->id_r == -ENOENT || rd->id_r == -EINVAL) /* no usable instance id: the node name is unique too */
                        snprintf(rd->instance, sizeof rd->instance, "%.63s", a->cfg->node_name);
                rd->known = rd->id_r >= 0 || rd->id_r == -ENOENT || rd->id_r == -EINVAL;
        }
        /* Ids need the instance; without it this round only probes. The
         * instance never changes once known, so neither do the events an
         * unchanged answer makes. */
        bool go = rd->known && !round_quitting(a);
        for (int k = 0; k < _EVENT_KIND_MAX; k++)
                if (go && a->cfg->watch[k]) {
                        ans[n] = (struct imds_answer) { .path = detect_path(k) };
                        kind[n++] = k;
                } else
                        round_forget(rd, k);
        int r = n > 0 ? imds_get_many(a->imds, ans, n) : 0;
        for (size_t i = 0; i < n; i++) {
                enum event_kind k = kind[i];
                if (r < 0) {
                        round_forget(rd, k);
                        continue;
                }
                _cleanup_free_ char *body = ans[i].body;
                rd->status[k] = ans[i].status;
                if (ans[i].r == 0 && rd->body[k] && ans[i].len == rd->len[k] &&
                    memcmp(body, rd->body[k], ans[i].len) == 0)
                        continue;
                round_forget(rd, k);
                rd->r[k] = detect_answer(k, ans[i].r, body, ans[i].len, rd->instance, a->cfg->asg_deadline,
                                         &rd->res[k]);
                if (ans[i].r == 0) {
                        rd->body[k] = TAKE_PTR(body);
                        rd->len[k] = ans[i].len;
                }
        }
        rd->tok = imds_using_token(a->imds);
}

static void *round_thread(void *userdata) {
        struct agent *a = userdata;
        pthread_mutex_lock(&a->round_lock);
        for (;;) {
                while (!a->round_go && !a->round_quit)
                        pthread_cond_wait(&a->round_cond, &a->round_lock);
                if (a->round_quit)
                        break;
                a->round_go = false;
                pthread_mutex_unlock(&a->round_lock);
                fetch_round(a, &a->round);
                pthread_mutex_lock(&a->round_lock);
                a->round_done = true;
                pthread_mutex_unlock(&a->round_lock);
                /* Signalled with the lock free: the main thread, woken on the
                 * other core, must not wake into a held lock and sleep again. */
                uint64_t one = 1;
                if (write(a->round_fd, &one, sizeof one) < 0) {
                        /* a full eventfd is signalled all the same */
                }
                pthread_mutex_lock(&a->round_lock);
        }
        pthread_mutex_unlock(&a->round_lock);
        for (int k = 0; k < _EVENT_KIND_MAX; k++)
                round_forget(&a->round, k);
        return NULL;
}

/* On the poll timer: hands a round to the thread, unless one is still out
 * (a slow metadata service): then this tick is dropped. */
static void round_start(struct agent *a) {
        if (a->round_busy)
                return;
        a->round.have_instance = a->have_instance;
        snprintf(a->round.instance, sizeof a->round.instance, "%s", a->instance);
        pthread_mutex_lock(&a->round_lock);
        a->round_go = true;
        pthread_cond_signal(&a->round_cond);
        pthread_mutex_unlock(&a->round_lock);
        a->round_busy = true;
}

/* The main thread's half: merges the answers of a round that is done. */
static void poll_round(struct agent *a) {
        struct round *rd = &a->round;
        bool reached = false;
        int r;

        if (!a->have_instance) {
                r = rd->id_r;
                source_result(a, SRC_IDENTITY_SLOT, "instance-id", r, r == -EINVAL ? "not an instance id" : NULL, "");
                if (rd->known) {
                        reached = true;
                        snprintf(a->instance, sizeof a->instance, "%s", rd->instance);
                        a->have_instance = true;
                        status_set_info(a->status, a->cfg->node_name, a->instance, a->cfg->dry_run,
                                        a->cfg->poll_interval);
                        log_full(LOG_INFO, MSG_CONFIG, NULL, "Watching instance %s", a->instance);
                }
        }
        for (int k = 0; a->have_instance && k < _EVENT_KIND_MAX; k++) {
                const struct detect_result *res = &rd->res[k];
                r = rd->r[k];
                if (!a->cfg->watch[k] || r == -ECANCELED)
                        continue;
                if (r >= 0 || r == -EBADMSG || r == -EINVAL || r == -ENODATA || r == -E2BIG)
                        reached = true;
                if (r >= 0)
                        merge_source(a, k, res);
                else if (res->why)
                        status_parse_error(a->status, imds_source_from_path(detect_path(k)));
                source_result(a, k, detect_path(k) + strlen("meta-data/"), r, res->why, res->excerpt);
        }
        bool tok = rd->tok;
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
        pthread_mutex_init(&a.round_lock, NULL);
        pthread_cond_init(&a.round_cond, NULL);
        a.round_fd = -1;
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
        a.round_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        r = a.round_fd < 0 ? -errno : -pthread_create(&a.round_thread, NULL, round_thread, &a);
        if (r < 0) {
                log_error("Cannot start the metadata thread: %s", strerror(-r));
                goto finish;
        }
        a.round_thread_started = true;
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
                struct pollfd p[3] = { { .fd = sfd, .events = POLLIN }, { .fd = tfd, .events = POLLIN },
                                       { .fd = a.round_fd, .events = POLLIN } };
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
                        /* API transfers, signals, the poll timer and metadata rounds in one wait. */
                        struct curl_waitfd w[3] = { { .fd = sfd, .events = CURL_WAIT_POLLIN },
                                                    { .fd = tfd, .events = CURL_WAIT_POLLIN },
                                                    { .fd = a.round_fd, .events = CURL_WAIT_POLLIN } };
                        r = k8s_poll(a.k8s, w, 3, timeout < 0 ? 1000 : timeout);
                        for (int i = 0; i < 3; i++)
                                p[i].revents = w[i].revents & CURL_WAIT_POLLIN ? POLLIN : 0;
                        if (r < 0) {
                                log_error("Waiting for the Kubernetes API failed: %s", strerror(-r));
                                break;
                        }
                } else if (poll(p, 3, timeout) < 0 && errno != EINTR) {
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
                                round_start(&a);
                }
                if (p[2].revents & POLLIN) {
                        uint64_t n;
                        bool done = false;
                        if (read(a.round_fd, &n, sizeof n) == sizeof n) {
                                pthread_mutex_lock(&a.round_lock);
                                done = a.round_done;
                                a.round_done = false;
                                pthread_mutex_unlock(&a.round_lock);
                        }
                        if (done) {
                                a.round_busy = false;
                                poll_round(&a);
                        }
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
        if (a.round_thread_started) {
                /* It ends after the request in flight (at most --imds-timeout). */
                pthread_mutex_lock(&a.round_lock);
                a.round_quit = true;
                pthread_cond_signal(&a.round_cond);
                pthread_mutex_unlock(&a.round_lock);
                pthread_join(a.round_thread, NULL);
        }
        if (a.round_fd >= 0)
                close(a.round_fd);
        pthread_cond_destroy(&a.round_cond);
        pthread_mutex_destroy(&a.round_lock);
        a.imds = imds_free(a.imds);
        a.status = status_free(a.status);
        return ret;
}
