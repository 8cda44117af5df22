/* Agent and manager sockets: one Server per identity, the verbs agents call, and the parked
 * long-poll receivers, woken in the same write batch as the message that wakes them. */
#define LOG_SUBSYSTEM "agents"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "actions.h"
#include "agent_server.h"
#include "errors.h"
#include "approvals.h"
#include "broker.h"
#include "cleanup.h"
#include "fsutil.h"
#include "hive-config.h"
#include "host_verbs.h"
#include "log.h"
#include "proto.h"
#include "questions.h"
#include "reminders.h"
#include "timeutil.h"

#define RECV_WAIT_MAX   180 /* seconds a recv may park */
#define ACK_IDS_MAX     256
#define WAKE_FROM_MAX   64
#define STATUS_TEXT_MAX 500
#define MODEL_MAX       100 /* bytes of a model name (set_harness_state) */
#define MODEL_CHARS     "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:@/[]-"

typedef struct AgentEndpoint AgentEndpoint;
typedef struct Waiter Waiter;

struct Waiter {
        AgentEndpoint *ep;
        ServerConn *sc;
        uint64_t deadline; /* CLOCK_MONOTONIC µs */
        unsigned max;
        int acked; /* what the recv's "ack" acked, for the answer; -1: it had none */
        Waiter *prev, *next;
};

/* A parked recv's answer: "acked" as it would have been at once. */
static json_t *waiter_response(Waiter *w)
{
        json_t *resp = proto_response_new();
        if (resp && w->acked >= 0 &&
            json_object_set_new(resp, "acked", json_integer(w->acked)) < 0) {
                json_decref(resp);
                return NULL;
        }
        return resp;
}

struct AgentEndpoint {
        AgentServer *as;
        char *name;
        bool manager;
        Server *srv;
        Waiter *waiters, *waiters_tail;
        AgentEndpoint *next;
        AgentEndpoint *next_in_bucket;
};

#define ENDPOINT_BUCKETS 256 /* a power of two */

struct AgentServer {
        Daemon *d;
        AgentEndpoint *endpoints;
        AgentEndpoint *buckets[ENDPOINT_BUCKETS]; /* by name: every send looks one up twice */
        int timer_fd;
        LoopSource *timer_src;
        unsigned ticks;
};

static AgentEndpoint **endpoint_bucket(AgentServer *as, const char *name)
{
        uint32_t h = 2166136261u; /* FNV-1a */
        for (const unsigned char *p = (const unsigned char *)name; *p; p++)
                h = (h ^ *p) * 16777619u;
        return &as->buckets[h & (ENDPOINT_BUCKETS - 1)];
}

static AgentEndpoint *endpoint_find(AgentServer *as, const char *name)
{
        for (AgentEndpoint *ep = *endpoint_bucket(as, name); ep; ep = ep->next_in_bucket)
                if (strcmp(ep->name, name) == 0)
                        return ep;
        return NULL;
}

static void waiter_unlink(Waiter *w)
{
        AgentEndpoint *ep = w->ep;
        if (w->prev)
                w->prev->next = w->next;
        else
                ep->waiters = w->next;
        if (w->next)
                w->next->prev = w->prev;
        else
                ep->waiters_tail = w->prev;
}

/* Drop callback of a parked recv: the connection went away while it waited. */
static void waiter_dropped(void *data, bool dropped)
{
        Waiter *w = data;
        if (!dropped)
                return; /* answered: whoever answered unlinks and frees it */
        waiter_unlink(w);
        free(w);
}

typedef struct Leased {
        AgentServer *as;
        char *recipient;
        size_t n;
        int64_t ids[];
} Leased;

/* Drop callback of a recv answer: if it never reached the client, offer the messages again. */
static void leased_dropped(void *data, bool dropped)
{
        Leased *l = data;
        if (dropped) {
                log_debug("connection of %s dropped before %zu leased message(s) reached it",
                          l->recipient, l->n);
                if (broker_unlease(l->as->d->store, l->ids, l->n) >= 0)
                        agent_server_wake(l->as, l->recipient);
        }
        free(l->recipient);
        free(l);
}

static json_t *ids_json(const int64_t *ids, size_t n)
{
        json_t *a = json_array();
        for (size_t i = 0; a && i < n; i++)
                if (json_array_append_new(a, json_integer(ids[i])) < 0) {
                        json_decref(a);
                        return NULL;
                }
        return a;
}

/* Leases up to max messages for ep into resp["messages"] and guards them on sc.  Returns the
 * number of messages, or a negative errno. */
static int endpoint_lease_into(AgentEndpoint *ep, ServerConn *sc, unsigned max, json_t *resp)
{
        Daemon *d = ep->as->d;
        json_t *arr = json_array();
        if (!arr || json_object_set_new(resp, "messages", arr) < 0)
                return -ENOMEM;
        _cleanup_free_ int64_t *ids = NULL;
        size_t n = 0;
        int r = broker_lease(d->store, ep->name, max, d->lease_ms, arr, &ids, &n);
        if (r < 0 || n == 0)
                return r;
        json_t *ev = json_object(); /* by hand: json_pack is too slow for the hot path */
        if (json_object_set_new_nocheck(ev, "to", json_string(ep->name)) < 0 ||
            json_object_set_new_nocheck(ev, "ids", ids_json(ids, n)) < 0) {
                json_decref(ev);
                ev = NULL;
        }
        daemon_post_event(d, "message_delivered", ev);
        Leased *l = malloc(sizeof(Leased) + n * sizeof(int64_t));
        if (!l)
                return -ENOMEM;
        l->as = ep->as;
        l->recipient = strdup(ep->name);
        l->n = n;
        memcpy(l->ids, ids, n * sizeof(int64_t));
        server_conn_on_drop(sc, leased_dropped, l);
        return (int)n;
}

void agent_server_wake(AgentServer *as, const char *recipient)
{
        AgentEndpoint *ep = as ? endpoint_find(as, recipient) : NULL;
        if (!ep)
                return;
        while (ep->waiters) {
                Waiter *w = ep->waiters;
                json_t *resp = waiter_response(w);
                if (!resp)
                        return;
                int r = endpoint_lease_into(ep, w->sc, w->max, resp);
                if (r == 0) {
                        json_decref(resp);
                        return; /* nothing (more) for the next waiter */
                }
                waiter_unlink(w);
                ServerConn *sc = w->sc;
                free(w);
                if (r < 0) {
                        json_decref(resp);
                        char msg[160];
                        snprintf(msg, sizeof(msg), "recv failed: %s (see the daemon's log)",
                                 strerror(-r));
                        resp = proto_error_new(msg, "EIO");
                }
                server_conn_reply_unflushed(sc, resp);
        }
}

/* Answers waiters whose time is up, and those whose messages came back (expired leases). */
static void on_tick(LoopSource *src, int fd, uint32_t events, void *userdata)
{
        AgentServer *as = userdata;
        uint64_t ticks;
        (void)!read(fd, &ticks, sizeof(ticks));
        uint64_t now = timeutil_mono_usec();
        bool check_leases = ++as->ticks % 10 == 0;
        for (AgentEndpoint *ep = as->endpoints; ep; ep = ep->next) {
                if (!ep->waiters)
                        continue;
                if (check_leases && broker_available(as->d->store, ep->name) > 0)
                        agent_server_wake(as, ep->name);
                for (Waiter *w = ep->waiters, *next; w; w = next) {
                        next = w->next;
                        if (w->deadline > now)
                                continue;
                        waiter_unlink(w);
                        ServerConn *sc = w->sc;
                        json_t *resp = waiter_response(w);
                        free(w);
                        if (resp)
                                json_object_set_new(resp, "messages", json_array());
                        server_conn_reply_unflushed(sc, resp);
                }
        }
}

/* ---- verbs ---- */

static bool label_ok(const char *s, size_t max)
{
        size_t n = strlen(s);
        if (n == 0 || n > max)
                return false;
        for (const unsigned char *p = (const unsigned char *)s; *p; p++)
                if (*p < 0x20 || *p == 0x7f)
                        return false;
        return true;
}

int agent_server_resolve_to(Daemon *d, DispatchCtx *ctx, const char *from, const char *to,
                            char ***ret)
{
        _cleanup_strv_free_ char **v = NULL;
        if (strcmp(to, "*") == 0) {
                _cleanup_strv_free_ char **names = NULL;
                int r = store_agent_names(d->store, &names);
                if (r < 0)
                        return dispatch_fail(ctx, r, "cannot read the agent registry: %s",
                                             strerror(-r));
                size_t n = 0;
                for (char **p = names; *p; p++)
                        n++;
                v = calloc(n + 2, sizeof(char *));
                if (!v)
                        return -ENOMEM;
                size_t k = 0;
                for (char **p = names; *p; p++)
                        if (strcmp(*p, from) != 0)
                                v[k++] = TAKE_PTR(*p);
                if (strcmp(from, MANAGER_NAME) != 0 && !(v[k++] = strdup(MANAGER_NAME)))
                        return -ENOMEM;
                if (k == 0)
                        return dispatch_fail(ctx, -ENOENT,
                                             "nobody to broadcast to: there are no other agents");
                *ret = TAKE_PTR(v);
                return 0;
        }
        if (strcmp(to, from) == 0)
                return dispatch_fail(ctx, -EINVAL,
                                     "cannot send a message to yourself (use wake to put one in "
                                     "your own inbox)");
        if (strcmp(to, OPERATOR_NAME) != 0 && strcmp(to, MANAGER_NAME) != 0) {
                if (!actions_name_valid(to))
                        return dispatch_fail(ctx, -EINVAL,
                                             "unknown recipient \"%.64s\": send to an agent's "
                                             "name, \"manager\", \"operator\" or \"*\"",
                                             to);
                /* An agent with a socket is in the registry (its socket comes and goes with
                 * its row): only a name without one costs a look at the registry. */
                if (!d->agents || !endpoint_find(d->agents, to)) {
                        AgentRecord a;
                        int r = store_agent_get(d->store, to, &a);
                        if (r == -ENOENT)
                                return dispatch_fail(ctx, r,
                                                     "unknown recipient \"%s\": no such agent "
                                                     "in this hive",
                                                     to);
                        if (r < 0)
                                return dispatch_fail(ctx, r, "cannot read the agent registry: %s",
                                                     strerror(-r));
                        agent_record_done(&a);
                }
        }
        v = calloc(2, sizeof(char *));
        if (!v || !(v[0] = strdup(to)))
                return -ENOMEM;
        *ret = TAKE_PTR(v);
        return 0;
}

int agent_server_send(Daemon *d, DispatchCtx *ctx, const char *from, json_t *req, json_t *resp)
{
        const char *to = json_string_value(json_object_get(req, "to"));
        const char *body = json_string_value(json_object_get(req, "body"));
        json_t *irt = json_object_get(req, "in_reply_to");
        int64_t in_reply_to = irt ? json_integer_value(irt) : 0;
        if (irt && in_reply_to <= 0)
                return dispatch_fail(ctx, -EINVAL, "\"in_reply_to\" must be a message id (> 0)");
        size_t len = strlen(body);
        if (len == 0)
                return dispatch_fail(ctx, -EINVAL, "the message body is empty");
        if (len > BROKER_BODY_MAX)
                return dispatch_fail(ctx, -EMSGSIZE,
                                     "the message body is %zu bytes, over the limit of %d; send "
                                     "a shorter message or point to a file",
                                     len, BROKER_BODY_MAX);
        _cleanup_strv_free_ char **targets = NULL;
        int r = agent_server_resolve_to(d, ctx, from, to, &targets);
        if (r < 0)
                return r;
        json_t *ids = strcmp(to, "*") == 0 ? json_array() : NULL;
        if (ids && json_object_set_new(resp, "ids", ids) < 0)
                return -ENOMEM;
        for (char **t = targets; *t; t++) {
                int64_t id;
                r = broker_send(d->store, from, *t, body, in_reply_to, &id);
                if (r < 0) {
                        log_error_errno(r, "storing a message from %s to %s: %m", from, *t);
                        return dispatch_fail(ctx, r, "could not store the message: %s",
                                             strerror(-r));
                }
                if (ids)
                        json_array_append_new(ids, json_integer(id));
                else
                        json_object_set_new(resp, "id", json_integer(id));
                json_t *ev = json_object();
                if (json_object_set_new_nocheck(ev, "id", json_integer(id)) < 0 ||
                    json_object_set_new_nocheck(ev, "from", json_string(from)) < 0 ||
                    json_object_set_new_nocheck(ev, "to", json_string(*t)) < 0) {
                        json_decref(ev);
                        ev = NULL;
                }
                daemon_post_event(d, "message_sent", ev);
                agent_server_wake(d->agents, *t);
        }
        return 0;
}

static AgentEndpoint *ctx_endpoint(DispatchCtx *ctx)
{
        return ctx->userdata;
}

static int verb_send(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        AgentEndpoint *ep = ctx_endpoint(ctx);
        return agent_server_send(ep->as->d, ctx, ep->name, req, resp);
}

static int verb_recv(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        AgentEndpoint *ep = ctx_endpoint(ctx);
        json_t *jw = json_object_get(req, "wait_seconds");
        json_t *jm = json_object_get(req, "max");
        int64_t wait = jw ? json_integer_value(jw) : 0;
        int64_t max = jm ? json_integer_value(jm) : 1;
        if (wait < 0)
                return dispatch_fail(ctx, -EINVAL,
                                     "\"wait_seconds\" must be from 0 to %d, not %lld",
                                     RECV_WAIT_MAX, (long long)wait);
        if (wait > RECV_WAIT_MAX)
                wait = RECV_WAIT_MAX;
        if (max < 1 || max > BROKER_RECV_MAX)
                return dispatch_fail(ctx, -EINVAL, "\"max\" must be from 1 to %d, not %lld",
                                     BROKER_RECV_MAX, (long long)max);

        /* "ack": the messages of the last recv are done, in the same request (one round
         * trip per message instead of two). */
        int r;
        if (json_object_get(req, "ack")) {
                _cleanup_free_ int64_t *ids = NULL;
                size_t n = 0;
                r = agent_server_ids_of(ctx, req, "ack", &ids, &n);
                if (r < 0)
                        return r;
                r = broker_ack(ep->as->d->store, ep->name, ids, n);
                if (r < 0)
                        return dispatch_fail(ctx, r, "ack failed: %s", strerror(-r));
                if (json_object_set_new(resp, "acked", json_integer(r)) < 0)
                        return -ENOMEM;
        }

        r = endpoint_lease_into(ep, ctx->origin, (unsigned)max, resp);
        if (r < 0)
                return dispatch_fail(ctx, r, "recv failed: %s", strerror(-r));
        if (r > 0 || wait == 0 || !ctx->origin)
                return 0;

        Waiter *w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->ep = ep;
        w->sc = ctx->origin;
        w->max = (unsigned)max;
        json_t *ja = json_object_get(resp, "acked");
        w->acked = ja ? (int)json_integer_value(ja) : -1;
        w->deadline = timeutil_mono_usec() + (uint64_t)wait * 1000000u;
        w->prev = ep->waiters_tail;
        if (ep->waiters_tail)
                ep->waiters_tail->next = w;
        else
                ep->waiters = w;
        ep->waiters_tail = w;
        server_conn_on_drop(ctx->origin, waiter_dropped, w);
        return DISPATCH_PARKED;
}

int agent_server_ids_of(DispatchCtx *ctx, json_t *req, const char *key, int64_t **ret,
                        size_t *ret_n)
{
        json_t *a = json_object_get(req, key);
        size_t n = json_array_size(a);
        if (n == 0 || n > ACK_IDS_MAX)
                return dispatch_fail(ctx, -EINVAL, "\"%s\" must list 1 to %d message ids", key,
                                     ACK_IDS_MAX);
        int64_t *ids = calloc(n, sizeof(int64_t));
        if (!ids)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                json_t *v = json_array_get(a, i);
                if (!json_is_integer(v) || json_integer_value(v) <= 0) {
                        free(ids);
                        return dispatch_fail(ctx, -EINVAL,
                                             "\"%s\" must hold message ids (positive "
                                             "integers); element %zu is not one",
                                             key, i);
                }
                ids[i] = json_integer_value(v);
        }
        *ret = ids;
        *ret_n = n;
        return 0;
}

int agent_server_ids(DispatchCtx *ctx, json_t *req, int64_t **ret, size_t *ret_n)
{
        return agent_server_ids_of(ctx, req, "ids", ret, ret_n);
}

static int verb_ack(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        AgentEndpoint *ep = ctx_endpoint(ctx);
        _cleanup_free_ int64_t *ids = NULL;
        size_t n = 0;
        int r = agent_server_ids(ctx, req, &ids, &n);
        if (r < 0)
                return r;
        r = broker_ack(ep->as->d->store, ep->name, ids, n);
        if (r < 0)
                return dispatch_fail(ctx, r, "ack failed: %s", strerror(-r));
        return json_object_set_new(resp, "acked", json_integer(r)) < 0 ? -ENOMEM : 0;
}

/* Ends the caller's own leases (all, or those in "ids") so its messages are offered again
 * at once: a harness restarted mid-turn, or one that sleeps on a rate limit, hands back what
 * it took.  Ids that are not the caller's, acked or not leased are skipped, as ack skips
 * them. */
static int verb_release(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        AgentEndpoint *ep = ctx_endpoint(ctx);
        _cleanup_free_ int64_t *ids = NULL;
        size_t n = 0;
        int r;
        if (json_object_get(req, "ids")) {
                r = agent_server_ids(ctx, req, &ids, &n);
                if (r < 0)
                        return r;
        }
        r = broker_release(ep->as->d->store, ep->name, ids, n);
        if (r < 0)
                return dispatch_fail(ctx, r, "release failed: %s", strerror(-r));
        if (r > 0)
                agent_server_wake(ep->as, ep->name);
        return json_object_set_new(resp, "released", json_integer(r)) < 0 ? -ENOMEM : 0;
}

static int verb_status(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        AgentEndpoint *ep = ctx_endpoint(ctx);
        int64_t total = 0, leased = 0;
        int r = broker_depth(ep->as->d->store, ep->name, &total, &leased);
        if (r < 0)
                return dispatch_fail(ctx, r, "status failed: %s", strerror(-r));
        json_object_set_new(resp, "pending", json_integer(total));
        json_object_set_new(resp, "leased", json_integer(leased));
        return 0;
}

static int verb_recent(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        AgentEndpoint *ep = ctx_endpoint(ctx);
        json_t *jl = json_object_get(req, "limit");
        int64_t limit = jl ? json_integer_value(jl) : 30;
        if (limit < 1 || limit > BROKER_RECENT_MAX)
                return dispatch_fail(ctx, -EINVAL, "\"limit\" must be from 1 to %d",
                                     BROKER_RECENT_MAX);
        json_t *arr = json_array();
        if (!arr || json_object_set_new(resp, "messages", arr) < 0)
                return -ENOMEM;
        int r = broker_recent(ep->as->d->store, ep->name, (unsigned)limit, arr);
        return r < 0 ? dispatch_fail(ctx, r, "recent failed: %s", strerror(-r)) : 0;
}

static int verb_wake(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        AgentEndpoint *ep = ctx_endpoint(ctx);
        Daemon *d = ep->as->d;
        const char *from = json_string_value(json_object_get(req, "from"));
        const char *body = json_string_value(json_object_get(req, "body"));
        if (!label_ok(from, WAKE_FROM_MAX))
                return dispatch_fail(ctx, -EINVAL,
                                     "\"from\" must be a label of 1 to %d printable characters",
                                     WAKE_FROM_MAX);
        size_t len = strlen(body);
        if (len == 0 || len > BROKER_BODY_MAX)
                return dispatch_fail(ctx, len ? -EMSGSIZE : -EINVAL,
                                     "the body must be 1 to %d bytes", BROKER_BODY_MAX);
        int64_t id;
        int r = broker_send(d->store, from, ep->name, body, 0, &id);
        if (r < 0)
                return dispatch_fail(ctx, r, "could not store the message: %s", strerror(-r));
        agent_server_wake(ep->as, ep->name);
        return json_object_set_new(resp, "id", json_integer(id)) < 0 ? -ENOMEM : 0;
}

static int verb_whoami(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        AgentEndpoint *ep = ctx_endpoint(ctx);
        json_object_set_new(resp, "name", json_string(ep->name));
        json_object_set_new(resp, "role", json_string(ep->manager ? "manager" : "agent"));
        json_object_set_new(resp, "daemon_version", json_string(HIVE_VERSION));
        return 0;
}

static int verb_set_status(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        AgentEndpoint *ep = ctx_endpoint(ctx);
        const char *text = json_string_value(json_object_get(req, "text"));
        size_t n = strlen(text);
        if (n > STATUS_TEXT_MAX)
                return dispatch_fail(ctx, -EINVAL, "the status text is %zu bytes, over %d", n,
                                     STATUS_TEXT_MAX);
        if (ep->manager)
                return dispatch_fail(ctx, -EOPNOTSUPP,
                                     "the manager has no status row; set_status is for agents");
        int r = store_agent_set_status(ep->as->d->store, ep->name, n ? text : NULL);
        if (r < 0)
                return dispatch_fail(ctx, r, "could not record the status: %s", strerror(-r));
        daemon_agent_changed(ep->as->d, ep->name);
        return 0;
}

static bool model_ok(const char *m)
{
        size_t n = strlen(m);
        return n > 0 && n <= MODEL_MAX && strspn(m, MODEL_CHARS) == n;
}

/* The harness reports whether the model CLI has a valid session and which model it runs;
 * a change shows in agent_status and is pushed to subscribers. */
static int verb_set_harness_state(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        AgentEndpoint *ep = ctx_endpoint(ctx);
        Daemon *d = ep->as->d;
        json_t *jlogin = json_object_get(req, "needs_login");
        json_t *jmodel = json_object_get(req, "model");
        if (!jlogin && !jmodel)
                return dispatch_fail(ctx, -EINVAL,
                                     "set_harness_state needs \"needs_login\" (a boolean), "
                                     "\"model\" (a string), or both");
        const char *model = jmodel ? json_string_value(jmodel) : NULL;
        if (model && !model_ok(model))
                return dispatch_fail(ctx, -EINVAL,
                                     "\"model\" must be 1 to %d characters from A-Z, a-z, 0-9 "
                                     "and . _ : @ / [ ] -",
                                     MODEL_MAX);
        const char *row = ep->manager ? MANAGER_AGENT : ep->name;
        int r = store_agent_set_harness(d->store, row, jlogin ? json_is_true(jlogin) : -1, model);
        if (r == -ENOENT)
                return dispatch_fail(ctx, r, "\"%s\" has no row in the agent registry", row);
        if (r < 0)
                return dispatch_fail(ctx, r, "could not record the harness state: %s",
                                     strerror(-r));
        if (r > 0)
                daemon_agent_changed(d, row);
        return 0;
}

/* Checks a question's target: the operator, the manager, or a live agent; not oneself. */
int agent_server_check_target(Daemon *d, DispatchCtx *ctx, const char *from, const char *to)
{
        if (strcmp(to, from) == 0)
                return dispatch_fail(ctx, -EINVAL, "cannot ask yourself a question");
        if (strcmp(to, "*") == 0)
                return dispatch_fail(ctx, -EINVAL, "a question goes to one target, not \"*\"");
        _cleanup_strv_free_ char **v = NULL;
        return agent_server_resolve_to(d, ctx, from, to, &v);
}

static int verb_ask(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        AgentEndpoint *ep = ctx_endpoint(ctx);
        Daemon *d = ep->as->d;
        const char *question = json_string_value(json_object_get(req, "question"));
        json_t *options = json_object_get(req, "options");
        json_t *jto = json_object_get(req, "to");
        json_t *jttl = json_object_get(req, "ttl_seconds");
        const char *to = jto ? json_string_value(jto) : OPERATOR_NAME;
        size_t n = strlen(question);
        if (n == 0 || n > QUESTIONS_TEXT_MAX)
                return dispatch_fail(ctx, -EINVAL, "the question must be 1 to %d bytes",
                                     QUESTIONS_TEXT_MAX);
        if (options) {
                size_t i;
                json_t *o;
                if (json_array_size(options) > QUESTIONS_OPTIONS_MAX)
                        return dispatch_fail(ctx, -EINVAL, "at most %d options",
                                             QUESTIONS_OPTIONS_MAX);
                json_array_foreach(
                        options, i,
                        o) if (!json_is_string(o) ||
                               !*json_string_value(
                                       o)) return dispatch_fail(ctx, -EINVAL,
                                                                "\"options\" must be a list of "
                                                                "non-empty strings");
        }
        int64_t deadline = 0;
        if (jttl) {
                int64_t ttl = json_integer_value(jttl);
                if (ttl <= 0)
                        return dispatch_fail(ctx, -EINVAL,
                                             "\"ttl_seconds\" must be positive (at most %d)",
                                             QUESTIONS_TTL_MAX);
                if (ttl > QUESTIONS_TTL_MAX)
                        ttl = QUESTIONS_TTL_MAX;
                deadline = store_now_ms() + ttl * 1000;
        }
        int r = agent_server_check_target(d, ctx, ep->name, to);
        if (r < 0)
                return r;
        int64_t id;
        r = questions_ask(d->store, ep->name, to, question, options,
                          json_is_true(json_object_get(req, "multi")), deadline, &id);
        if (r < 0)
                return dispatch_fail(ctx, r, "could not store the question: %s", strerror(-r));
        agent_server_wake(ep->as, to);
        daemon_post_event(d, "question_asked",
                          json_pack("{s:I, s:s, s:s}", "id", (json_int_t)id, "asker", ep->name,
                                    "target", to));
        if (deadline)
                d->scheduler_dirty = true;
        return json_object_set_new(resp, "id", json_integer(id)) < 0 ? -ENOMEM : 0;
}

int agent_server_answer(Daemon *d, DispatchCtx *ctx, const char *who, bool operator_authority,
                        json_t *req)
{
        int64_t id = json_integer_value(json_object_get(req, "id"));
        const char *answer = json_string_value(json_object_get(req, "answer"));
        size_t n = strlen(answer);
        if (n == 0 || n > QUESTIONS_TEXT_MAX)
                return dispatch_fail(ctx, -EINVAL, "the answer must be 1 to %d bytes",
                                     QUESTIONS_TEXT_MAX);
        _cleanup_free_ char *asker = NULL;
        int r = questions_answer(d->store, id, who, answer, operator_authority, &asker);
        if (r == -ENOENT)
                return dispatch_fail(ctx, r, "there is no question %lld", (long long)id);
        if (r == -EPERM)
                return dispatch_fail(ctx, r, "question %lld was not asked of you", (long long)id);
        if (r == -EALREADY)
                return dispatch_fail(ctx, r, "question %lld is already answered", (long long)id);
        if (r < 0)
                return dispatch_fail(ctx, r, "could not record the answer: %s", strerror(-r));
        agent_server_wake(d->agents, asker);
        daemon_post_event(d, "question_answered",
                          json_pack("{s:I, s:s}", "id", (json_int_t)id, "answerer", who));
        return 0;
}

static int verb_answer(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        AgentEndpoint *ep = ctx_endpoint(ctx);
        return agent_server_answer(ep->as->d, ctx, ep->name, false, req);
}

static int verb_remind(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        AgentEndpoint *ep = ctx_endpoint(ctx);
        Daemon *d = ep->as->d;
        const char *message = json_string_value(json_object_get(req, "message"));
        json_t *jdelay = json_object_get(req, "delay_seconds");
        json_t *jat = json_object_get(req, "at_unix_timestamp");
        json_t *jpath = json_object_get(req, "file_path");
        if (ep->manager)
                return dispatch_fail(ctx, -EOPNOTSUPP, "reminders are for agents");
        size_t n = strlen(message);
        if (n == 0 || n > REMINDERS_TEXT_MAX)
                return dispatch_fail(ctx, -EINVAL, "the reminder message must be 1 to %d bytes",
                                     REMINDERS_TEXT_MAX);
        if (!!jdelay == !!jat)
                return dispatch_fail(ctx, -EINVAL,
                                     "give exactly one of \"delay_seconds\" and "
                                     "\"at_unix_timestamp\"");
        int64_t now = store_now_ms(), due;
        if (jdelay) {
                int64_t delay = json_integer_value(jdelay);
                if (delay < 0 || delay > 366ll * 24 * 3600)
                        return dispatch_fail(ctx, -EINVAL,
                                             "\"delay_seconds\" must be from 0 to one year, "
                                             "not %lld",
                                             (long long)delay);
                due = now + delay * 1000;
        } else {
                int64_t at = json_integer_value(jat);
                if (at <= 0 || at > now / 1000 + 366ll * 24 * 3600)
                        return dispatch_fail(ctx, -EINVAL,
                                             "\"at_unix_timestamp\" must be a time within the "
                                             "next year (seconds since 1970)");
                due = at * 1000;
        }
        _cleanup_free_ char *path = NULL;
        if (jpath && reminders_check_path(json_string_value(jpath), &path) < 0)
                return dispatch_fail(ctx, -EINVAL,
                                     "\"file_path\" must name a file inside your state "
                                     "directory (/state/…, no \"..\")");
        int64_t id;
        int r = reminders_add(d->store, ep->name, message, path, due, &id);
        if (r == -EUSERS)
                return dispatch_fail(ctx, r,
                                     "you already have %d pending reminders; cancel one first",
                                     REMINDERS_PENDING_MAX);
        if (r < 0)
                return dispatch_fail(ctx, r, "could not store the reminder: %s", strerror(-r));
        d->scheduler_dirty = true;
        daemon_agent_changed(d, ep->name);
        char ts[TIMEUTIL_RFC3339_MAX];
        timeutil_rfc3339(due / 1000, ts);
        json_object_set_new(resp, "id", json_integer(id));
        json_object_set_new(resp, "due_at", json_string(ts));
        return 0;
}

static int verb_cancel_loose_end(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        AgentEndpoint *ep = ctx_endpoint(ctx);
        Daemon *d = ep->as->d;
        const char *kind = json_string_value(json_object_get(req, "kind"));
        int64_t id = json_integer_value(json_object_get(req, "id"));
        int r;
        if (strcmp(kind, "question") == 0)
                r = questions_cancel(d->store, id, ep->name, false);
        else if (strcmp(kind, "reminder") == 0)
                r = reminders_cancel(d->store, id, ep->name);
        else
                return dispatch_fail(ctx, -EINVAL, "\"kind\" must be \"question\" or \"reminder\"");
        if (r == -ENOENT)
                return dispatch_fail(ctx, r, "there is no %s %lld", kind, (long long)id);
        if (r == -EPERM)
                return dispatch_fail(ctx, r, "%s %lld is not yours", kind, (long long)id);
        if (r == -EALREADY)
                return dispatch_fail(ctx, r, "%s %lld is already closed", kind, (long long)id);
        if (r < 0)
                return dispatch_fail(ctx, r, "could not cancel: %s", strerror(-r));
        if (strcmp(kind, "reminder") == 0)
                daemon_agent_changed(d, ep->name);
        else
                daemon_post_event(
                        d, "question_answered",
                        json_pack("{s:I, s:s}", "id", (json_int_t)id, "answerer", ep->name));
        return 0;
}

static int verb_get_open_threads(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        AgentEndpoint *ep = ctx_endpoint(ctx);
        Daemon *d = ep->as->d;
        const char *who = ep->manager ? NULL : ep->name; /* the manager sees the whole hive */
        json_t *q = json_array(), *rm = json_array();
        if (!q || !rm || json_object_set_new(resp, "questions", q) < 0 ||
            json_object_set_new(resp, "reminders", rm) < 0)
                return -ENOMEM;
        int r = questions_list_open(d->store, who, q);
        if (r >= 0)
                r = reminders_list_pending(d->store, who, rm);
        if (r < 0)
                return dispatch_fail(ctx, r, "could not read open threads: %s", strerror(-r));
        return 0;
}

static int verb_count_pending_reminders(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        AgentEndpoint *ep = ctx_endpoint(ctx);
        int64_t n = 0;
        int r = reminders_count_pending(ep->as->d->store, ep->manager ? NULL : ep->name, &n);
        if (r < 0)
                return dispatch_fail(ctx, r, "could not count reminders: %s", strerror(-r));
        return json_object_set_new(resp, "count", json_integer(n)) < 0 ? -ENOMEM : 0;
}

/* Manager-only verbs refuse everyone else. */
static int manager_only(DispatchCtx *ctx, AgentEndpoint *ep, const char *verb)
{
        if (ep->manager)
                return 0;
        return dispatch_fail(ctx, -EACCES, "%s is for the manager only", verb);
}

static int verb_request_apply_commit(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        AgentEndpoint *ep = ctx_endpoint(ctx);
        int r = manager_only(ctx, ep, "request_apply_commit");
        if (r < 0)
                return r;
        _cleanup_free_ char *err = NULL;
        int64_t id = 0;
        r = approvals_request_apply_commit(
                ep->as->d, json_string_value(json_object_get(req, "agent")),
                json_string_value(json_object_get(req, "commit_ref")),
                json_string_value(json_object_get(req, "description")), &id, &err);
        if (r < 0)
                return dispatch_fail(ctx, r, "%s", err ? err : strerror(-r));
        return json_object_set_new(resp, "id", json_integer(id)) < 0 ? -ENOMEM : 0;
}

static int verb_request_spawn(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        AgentEndpoint *ep = ctx_endpoint(ctx);
        int r = manager_only(ctx, ep, "request_spawn");
        if (r < 0)
                return r;
        _cleanup_free_ char *err = NULL;
        int64_t id = 0;
        r = approvals_request_spawn(ep->as->d, json_string_value(json_object_get(req, "name")),
                                    json_string_value(json_object_get(req, "description")), &id,
                                    &err);
        if (r < 0)
                return dispatch_fail(ctx, r, "%s", err ? err : strerror(-r));
        return json_object_set_new(resp, "id", json_integer(id)) < 0 ? -ENOMEM : 0;
}

static int verb_request_update_meta_inputs(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        AgentEndpoint *ep = ctx_endpoint(ctx);
        int r = manager_only(ctx, ep, "request_update_meta_inputs");
        if (r < 0)
                return r;
        _cleanup_free_ char *err = NULL;
        int64_t id = 0;
        r = approvals_request_update_meta_inputs(
                ep->as->d, json_object_get(req, "inputs"),
                json_string_value(json_object_get(req, "description")), &id, &err);
        if (r < 0)
                return dispatch_fail(ctx, r, "%s", err ? err : strerror(-r));
        return json_object_set_new(resp, "id", json_integer(id)) < 0 ? -ENOMEM : 0;
}

/* ---- the manager's container verbs: answered when the operation ended ---- */

static void manager_action_done(void *userdata, int r, const char *error, const char *output)
{
        json_t *resp = r < 0 ? proto_error_new(error ? error : strerror(-r), hive_errno_name(r))
                             : proto_response_new();
        if (resp && r >= 0 && output)
                json_object_set_new(resp, "logs", json_string(output));
        server_waiter_reply(userdata, resp);
}

typedef enum { MGR_KILL, MGR_START, MGR_RESTART, MGR_UPDATE, MGR_LOGS } ManagerOp;

static int manager_op(DispatchCtx *ctx, json_t *req, ManagerOp op, const char *verb)
{
        AgentEndpoint *ep = ctx_endpoint(ctx);
        int r = manager_only(ctx, ep, verb);
        if (r < 0)
                return r;
        Daemon *d = ep->as->d;
        const char *name =
                json_string_value(json_object_get(req, op == MGR_LOGS ? "agent" : "name"));
        if (op != MGR_LOGS && (strcmp(name, MANAGER_AGENT) == 0 || strcmp(name, MANAGER_NAME) == 0))
                return dispatch_fail(ctx, -EPERM, "the manager cannot %s itself", verb);
        json_t *jl = json_object_get(req, "lines");
        int64_t lines = jl ? json_integer_value(jl) : 50;
        if (lines < 1 || lines > 500)
                return dispatch_fail(ctx, -EINVAL, "\"lines\" must be from 1 to 500");
        if (!ctx->origin)
                return dispatch_fail(ctx, -EOPNOTSUPP, "this verb needs a connection");
        ServerWaiter *w = server_waiter_new(ctx->origin);
        if (!w)
                return -ENOMEM;
        _cleanup_free_ char *err = NULL;
        char *one[] = {(char *)name, NULL};
        switch (op) {
        case MGR_KILL:
                r = actions_stop(d->actions, one, true, manager_action_done, w, &err);
                break;
        case MGR_START:
                r = actions_start(d->actions, one, manager_action_done, w, &err);
                break;
        case MGR_RESTART:
                r = actions_restart(d->actions, name, manager_action_done, w, &err);
                break;
        case MGR_UPDATE:
                r = actions_update(d->actions, name, manager_action_done, w, &err);
                break;
        case MGR_LOGS:
                r = actions_logs(d->actions, name, (unsigned)lines, manager_action_done, w, &err);
                break;
        }
        if (r >= 0)
                return DISPATCH_PARKED;
        server_waiter_cancel(w);
        return dispatch_fail(ctx, r, "%s", err ? err : strerror(-r));
}

static int verb_kill(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        return manager_op(ctx, req, MGR_KILL, "kill");
}

static int verb_start(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        return manager_op(ctx, req, MGR_START, "start");
}

static int verb_restart(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        return manager_op(ctx, req, MGR_RESTART, "restart");
}

static int verb_update(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        return manager_op(ctx, req, MGR_UPDATE, "update");
}

static int verb_get_logs(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        return manager_op(ctx, req, MGR_LOGS, "get_logs");
}

static const FieldSpec manager_name_fields[] = {
        {"name", FT_STRING, true},
        {NULL, 0, false},
};

static const FieldSpec get_logs_fields[] = {
        {"agent", FT_STRING, true},
        {"lines", FT_INT, false},
        {NULL, 0, false},
};

static const FieldSpec request_update_meta_inputs_fields[] = {
        {"inputs", FT_ARRAY, false},
        {"description", FT_STRING, false},
        {NULL, 0, false},
};

static const FieldSpec request_apply_commit_fields[] = {
        {"agent", FT_STRING, true},
        {"commit_ref", FT_STRING, true},
        {"description", FT_STRING, false},
        {NULL, 0, false},
};

const FieldSpec agent_request_spawn_fields[] = {
        {"name", FT_STRING, true},
        {"description", FT_STRING, false},
        {NULL, 0, false},
};

static const FieldSpec ask_fields[] = {
        {"question", FT_STRING, true},  {"options", FT_ARRAY, false}, {"multi", FT_BOOL, false},
        {"ttl_seconds", FT_INT, false}, {"to", FT_STRING, false},     {NULL, 0, false},
};
const FieldSpec agent_answer_fields[] = {
        {"id", FT_INT, true},
        {"answer", FT_STRING, true},
        {NULL, 0, false},
};
static const FieldSpec remind_fields[] = {
        {"message", FT_STRING, true},
        {"delay_seconds", FT_INT, false},
        {"at_unix_timestamp", FT_INT, false},
        {"file_path", FT_STRING, false},
        {NULL, 0, false},
};
static const FieldSpec cancel_fields[] = {
        {"kind", FT_STRING, true},
        {"id", FT_INT, true},
        {NULL, 0, false},
};

const FieldSpec agent_send_fields[] = {
        {"to", FT_STRING, true},
        {"body", FT_STRING, true},
        {"in_reply_to", FT_INT, false},
        {NULL, 0, false},
};
static const FieldSpec recv_fields[] = {
        {"wait_seconds", FT_INT, false},
        {"max", FT_INT, false},
        {"ack", FT_ARRAY, false},
        {NULL, 0, false},
};
const FieldSpec agent_ack_fields[] = {
        {"ids", FT_ARRAY, true},
        {NULL, 0, false},
};
const FieldSpec agent_limit_fields[] = {
        {"limit", FT_INT, false},
        {NULL, 0, false},
};
static const FieldSpec wake_fields[] = {
        {"from", FT_STRING, true},
        {"body", FT_STRING, true},
        {NULL, 0, false},
};
static const FieldSpec release_fields[] = {
        {"ids", FT_ARRAY, false},
        {NULL, 0, false},
};
static const FieldSpec set_harness_state_fields[] = {
        {"needs_login", FT_BOOL, false},
        {"model", FT_STRING, false},
        {NULL, 0, false},
};
static const FieldSpec set_status_fields[] = {
        {"text", FT_STRING, true},
        {NULL, 0, false},
};

static const VerbSpec agent_verbs[] = {
        {"send", verb_send, agent_send_fields, VERB_DEDUPE, "send a message"},
        {"recv", verb_recv, recv_fields, 0, "receive messages (long-poll with wait_seconds)"},
        {"ack", verb_ack, agent_ack_fields, 0, "acknowledge received messages"},
        {"release", verb_release, release_fields, 0,
         "offer your leased messages again at once (all, or those in ids)"},
        {"status", verb_status, NULL, 0, "inbox depth"},
        {"recent", verb_recent, agent_limit_fields, 0, "the last messages to and from you"},
        {"wake", verb_wake, wake_fields, VERB_DEDUPE, "put a message in your own inbox"},
        {"whoami", verb_whoami, NULL, 0, "your name and role"},
        {"set_status", verb_set_status, set_status_fields, 0, "set your status text"},
        {"set_harness_state", verb_set_harness_state, set_harness_state_fields, 0,
         "harness: report needs_login and the model it runs"},
        {"ask", verb_ask, ask_fields, VERB_DEDUPE, "ask the operator or a peer a question"},
        {"answer", verb_answer, agent_answer_fields, 0, "answer a question asked of you"},
        {"remind", verb_remind, remind_fields, VERB_DEDUPE, "schedule a reminder to yourself"},
        {"cancel_loose_end", verb_cancel_loose_end, cancel_fields, 0,
         "withdraw your question or reminder"},
        {"get_open_threads", verb_get_open_threads, NULL, 0,
         "unanswered questions and unfired reminders"},
        {"request_apply_commit", verb_request_apply_commit, request_apply_commit_fields,
         VERB_DEDUPE, "manager: propose a commit of an agent's config for approval"},
        {"request_spawn", verb_request_spawn, agent_request_spawn_fields, VERB_DEDUPE,
         "manager: propose a new agent for approval"},
        {"kill", verb_kill, manager_name_fields, 0, "manager: stop an agent's container"},
        {"start", verb_start, manager_name_fields, 0, "manager: start an agent's container"},
        {"restart", verb_restart, manager_name_fields, 0,
         "manager: stop and start an agent's container"},
        {"update", verb_update, manager_name_fields, 0,
         "manager: rebuild an agent's container from the meta flake"},
        {"get_logs", verb_get_logs, get_logs_fields, 0,
         "manager: the last lines of an agent's console or journal"},
        {"request_update_meta_inputs", verb_request_update_meta_inputs,
         request_update_meta_inputs_fields, VERB_DEDUPE,
         "manager: propose updating the meta flake's non-agent inputs"},
        {"count_pending_reminders", verb_count_pending_reminders, NULL, 0,
         "how many reminders are pending"},
};

static Store *endpoint_store(void *userdata)
{
        AgentEndpoint *ep = userdata;
        return ep->as->d->store;
}

static const char *endpoint_identity(void *userdata)
{
        AgentEndpoint *ep = userdata;
        return ep->name;
}

const VerbTable agent_verb_table = {
        .socket = "the agent socket",
        .verbs = agent_verbs,
        .n_verbs = ELEMENTSOF(agent_verbs),
        .dedupe_store = endpoint_store,
        .dedupe_identity = endpoint_identity,
};

/* ---- endpoints ---- */

static int endpoint_new(AgentServer *as, const char *name, bool manager)
{
        Daemon *d = as->d;
        _cleanup_free_ char *dir = NULL, *sock = NULL;
        if ((manager ? asprintf(&dir, "%s/manager", d->cfg->run_dir)
                     : asprintf(&dir, "%s/agents/%s", d->cfg->run_dir, name)) < 0 ||
            asprintf(&sock, "%s/mcp.sock", dir) < 0)
                return -ENOMEM;
        int r = fsutil_mkdir_p(dir, 0700);
        if (r < 0 || chmod(dir, 0700) < 0)
                return log_error_errno(r < 0 ? r : -errno, "cannot create %s: %m", dir);
        if (unlink(sock) < 0 && errno != ENOENT)
                return log_error_errno(-errno, "cannot remove the old %s: %m", sock);

        AgentEndpoint *ep = calloc(1, sizeof(*ep));
        if (!ep || !(ep->name = strdup(name))) {
                free(ep);
                return -ENOMEM;
        }
        ep->as = as;
        ep->manager = manager;
        ServerOptions so = {
                .table = &agent_verb_table,
                .userdata = ep,
                .one_shot = false,
                .mode = 0600,
                .gid = (gid_t)-1,
                .max_clients = 64,
                .idle_timeout_sec = 0,
                .gate = d->gate,
        };
        r = server_new(d->loop, sock, &so, &ep->srv);
        if (r < 0) {
                free(ep->name);
                free(ep);
                return r;
        }
        ep->next = as->endpoints;
        as->endpoints = ep;
        AgentEndpoint **b = endpoint_bucket(as, name);
        ep->next_in_bucket = *b;
        *b = ep;
        log_debug("serving %s", sock);
        return 0;
}

static void endpoint_free(AgentEndpoint *ep)
{
        for (AgentEndpoint **p = endpoint_bucket(ep->as, ep->name); *p; p = &(*p)->next_in_bucket)
                if (*p == ep) {
                        *p = ep->next_in_bucket;
                        break;
                }
        ep->srv = server_free(ep->srv); /* drops parked waiters through their callbacks */
        free(ep->name);
        free(ep);
}

int agent_server_register(AgentServer *as, const char *name)
{
        if (endpoint_find(as, name))
                return 0;
        return endpoint_new(as, name, false);
}

void agent_server_unregister(AgentServer *as, const char *name)
{
        for (AgentEndpoint **p = &as->endpoints; *p; p = &(*p)->next)
                if (strcmp((*p)->name, name) == 0 && !(*p)->manager) {
                        AgentEndpoint *ep = *p;
                        *p = ep->next;
                        _cleanup_free_ char *dir = NULL;
                        if (asprintf(&dir, "%s/agents/%s", as->d->cfg->run_dir, name) >= 0) {
                                endpoint_free(ep);
                                (void)rmdir(dir);
                        } else
                                endpoint_free(ep);
                        return;
                }
}

int agent_server_new(Daemon *d, AgentServer **ret)
{
        _cleanup_strv_free_ char **names = NULL;
        AgentServer *as = calloc(1, sizeof(*as));
        if (!as)
                return -ENOMEM;
        as->d = d;
        as->timer_fd = -1;
        int r = endpoint_new(as, MANAGER_NAME, true);
        if (r < 0)
                goto fail;
        r = store_agent_names(d->store, &names);
        if (r < 0)
                goto fail;
        for (char **n = names; *n; n++) {
                if (!actions_name_valid(*n) || actions_name_reserved(*n)) {
                        log_warning("the registry holds an agent named \"%s\", which is not a "
                                    "valid agent name; it gets no socket",
                                    *n);
                        continue;
                }
                r = endpoint_new(as, *n, false);
                if (r < 0)
                        goto fail;
        }
        as->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
        if (as->timer_fd < 0) {
                r = -errno;
                goto fail;
        }
        struct itimerspec its = {.it_interval = {0, 100000000}, .it_value = {0, 100000000}};
        timerfd_settime(as->timer_fd, 0, &its, NULL);
        r = loop_add(d->loop, as->timer_fd, EPOLLIN, on_tick, as, &as->timer_src);
        if (r < 0)
                goto fail;
        *ret = as;
        return 0;
fail:
        agent_server_free(as);
        return r;
}

AgentServer *agent_server_free(AgentServer *as)
{
        if (!as)
                return NULL;
        while (as->endpoints) {
                AgentEndpoint *ep = as->endpoints;
                as->endpoints = ep->next;
                endpoint_free(ep);
        }
        loop_remove(as->timer_src);
        if (as->timer_fd >= 0)
                close(as->timer_fd);
        free(as);
        return NULL;
}
