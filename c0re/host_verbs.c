/* Handlers of the host.sock verbs.  Generic checks already ran (dispatch.c); ctx->userdata
 * is the Daemon. */
#define LOG_SUBSYSTEM "host"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "actions.h"
#include "agent_server.h"
#include "approvals.h"
#include "backend.h"
#include "broker.h"
#include "cleanup.h"
#include "container_view.h"
#include "events.h"
#include "daemon.h"
#include "errors.h"
#include "hive-config.h"
#include "host_verbs.h"
#include "log.h"
#include "proto.h"
#include "questions.h"
#include "reminders.h"

static int store_failure(DispatchCtx *ctx, int r, const char *what)
{
        log_error_errno(r, "%s: %m", what);
        return dispatch_fail(ctx, r, "%s failed: %s (see the daemon's log)", what, strerror(-r));
}

static int verb_list(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        Daemon *d = ctx->userdata;
        _cleanup_strv_free_ char **names = NULL;
        int r = store_agent_names(d->store, &names);
        if (r < 0)
                return store_failure(ctx, r, "listing agents");
        json_t *a = json_array();
        if (!a || json_object_set_new(resp, "agents", a) < 0)
                return -ENOMEM;
        for (char **n = names; *n; n++)
                if (json_array_append_new(a, json_string(*n)) < 0)
                        return -ENOMEM;
        return 0;
}

/* The wire row of one agent, with its pending reminders.  New reference or NULL. */
static json_t *status_row_json(Daemon *d, const AgentRecord *a)
{
        AgentStatusRow row;
        if (container_view_row(d->cfg, a, &row) < 0)
                return NULL;
        (void)reminders_count_pending(d->store, a->name, &row.pending_reminders);
        json_t *j = proto_agent_status_row_encode(&row);
        agent_status_row_done(&row);
        return j;
}

static int verb_agent_status(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        Daemon *d = ctx->userdata;
        AgentRecord *agents = NULL;
        size_t n = 0;
        int r = store_agent_list(d->store, &agents, &n);
        if (r < 0)
                return store_failure(ctx, r, "reading agent status");
        json_t *a = json_array();
        r = a && json_object_set_new(resp, "agent_statuses", a) == 0 ? 0 : -ENOMEM;
        for (size_t i = 0; r >= 0 && i < n; i++)
                if (json_array_append_new(a, status_row_json(d, &agents[i])) < 0)
                        r = -ENOMEM;
        agent_records_free(agents, n);
        return r;
}

typedef struct Subscription {
        Daemon *d;
        ServerConn *sc;
        int handle;
        uint64_t dropped;
} Subscription;

/* One single-row response per changed agent; a reader too far behind loses updates. */
static void subscription_event(const char *kind, const json_t *payload, uint64_t seq,
                               void *userdata)
{
        Subscription *sub = userdata;
        if (strcmp(kind, "agent_status_changed") != 0)
                return;
        const char *name = json_string_value(json_object_get(payload, "name"));
        AgentRecord a;
        if (!name || store_agent_get(sub->d->store, name, &a) < 0)
                return;
        _cleanup_json_ json_t *resp = proto_response_new();
        json_t *row = status_row_json(sub->d, &a);
        agent_record_done(&a);
        if (!resp || !row || json_object_set_new(resp, "agent_statuses", json_array()) < 0 ||
            json_array_append_new(json_object_get(resp, "agent_statuses"), row) < 0)
                return;
        size_t len;
        _cleanup_free_ char *line = proto_dump_line(resp, &len);
        if (line && server_conn_push(sub->sc, line, len) == -EAGAIN && sub->dropped++ == 0)
                log_warning("a subscribe_agent_status reader is too slow; dropping updates");
}

static void subscription_closed(void *data, bool dropped)
{
        Subscription *sub = data;
        events_unsubscribe(sub->d->events, sub->handle);
        free(sub);
}

static int verb_subscribe_agent_status(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        Daemon *d = ctx->userdata;
        if (!ctx->origin || !d->events)
                return dispatch_fail(ctx, -EOPNOTSUPP, "subscribe_agent_status needs a stream");
        Subscription *sub = calloc(1, sizeof(*sub));
        if (!sub)
                return -ENOMEM;
        sub->d = d;
        sub->sc = ctx->origin;
        sub->handle = events_subscribe(d->events, subscription_event, sub);
        if (sub->handle < 0) {
                free(sub);
                return -ENOMEM;
        }
        server_conn_set_stream(ctx->origin, subscription_closed, sub);
        return 0; /* the bare ack */
}

static int verb_urls(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        Daemon *d = ctx->userdata;
        HiveUrls u = {
                .domain = d->cfg->domain,
                .home = d->cfg->home_url,
                .forge = d->cfg->forge_url,
                .matrix = d->cfg->matrix_url,
        };
        json_t *j = proto_urls_encode(&u);
        if (!j || json_object_set_new(resp, "urls", j) < 0)
                return -ENOMEM;
        return 0;
}

static int verb_version(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        Daemon *d = ctx->userdata;
        json_t *avail = json_array();
        if (!avail)
                return -ENOMEM;
        for (const char *const *n = backend_names; *n; n++)
                if (backend_available(d->cfg, *n, NULL))
                        json_array_append_new(avail, json_string(*n));
        if (json_object_set_new(resp, "daemon_version", json_string(HIVE_VERSION)) < 0 ||
            json_object_set_new(resp, "protocol_version", json_integer(HIVE_PROTOCOL_VERSION)) <
                    0 ||
            json_object_set_new(resp, "backend", json_string(d->backend)) < 0 ||
            json_object_set_new(resp, "isolated",
                                json_boolean(d->containers && d->containers->ops->isolated)) < 0 ||
            json_object_set_new(resp, "backends", avail) < 0)
                return -ENOMEM;
        return 0;
}

/* ---- container lifecycle: answered when the operation finished ---- */

/* An action's outcome, answered on the parked request. */
static void waiter_done(void *userdata, int r, const char *error, const char *output)
{
        server_waiter_reply(
                userdata, r < 0 ? proto_error_new(error ? error : strerror(-r), hive_errno_name(r))
                                : proto_response_new());
}

/* Finishes a handler that started an action: parked, or the refusal with its sentence. */
static int action_started(DispatchCtx *ctx, ServerWaiter *w, int r, char *error)
{
        _cleanup_free_ char *e = error;
        if (r >= 0)
                return DISPATCH_PARKED;
        server_waiter_cancel(w); /* refused before anything happened: answer now */
        return dispatch_fail(ctx, r, "%s", e ? e : strerror(-r));
}

/* A verb that answers when its operation ends needs a connection to answer on. */
#define WAITER_OR_FAIL(ctx, w)                                                                     \
        if (!(ctx)->origin)                                                                        \
                return dispatch_fail(ctx, -EOPNOTSUPP, "this verb needs a connection");            \
        ServerWaiter *w = server_waiter_new((ctx)->origin);                                        \
        if (!w)                                                                                    \
                return -ENOMEM;

static const char *req_name(json_t *req)
{
        return json_string_value(json_object_get(req, "name"));
}

static int verb_spawn(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        Daemon *d = ctx->userdata;
        WAITER_OR_FAIL(ctx, w);
        char *err = NULL;
        int r = actions_spawn(d->actions, req_name(req),
                              json_string_value(json_object_get(req, "parent")), waiter_done, w,
                              &err);
        return action_started(ctx, w, r, err);
}

/* The scope of start/stop: {agent_names: [...]} or, all flags false and no names, the whole
 * hive.  *ret_names NULL means everything. */
static int scope_names(DispatchCtx *ctx, json_t *req, char ***ret_names)
{
        json_t *scope = json_object_get(req, "scope");
        json_t *names = json_object_get(scope, "agent_names");
        if (names && !json_is_array(names))
                return dispatch_fail(ctx, -EINVAL, "scope.agent_names must be a list of names");
        *ret_names = NULL;
        size_t n = json_array_size(names);
        if (n == 0) {
                /* hyperhive's class flags: we only have agents (the manager included) */
                return 0;
        }
        char **v = calloc(n + 1, sizeof(char *));
        if (!v)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                const char *name = json_string_value(json_array_get(names, i));
                if (!name) {
                        strv_free(v);
                        return dispatch_fail(ctx, -EINVAL,
                                             "scope.agent_names must be a list of names");
                }
                v[i] = strdup(name);
                if (!v[i]) {
                        strv_free(v);
                        return -ENOMEM;
                }
        }
        *ret_names = v;
        return 0;
}

static int verb_start(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        Daemon *d = ctx->userdata;
        _cleanup_strv_free_ char **names = NULL;
        int r = scope_names(ctx, req, &names);
        if (r < 0)
                return r;
        WAITER_OR_FAIL(ctx, w);
        char *err = NULL;
        r = actions_start(d->actions, names, waiter_done, w, &err);
        return action_started(ctx, w, r, err);
}

static int verb_stop(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        Daemon *d = ctx->userdata;
        _cleanup_strv_free_ char **names = NULL;
        int r = scope_names(ctx, req, &names);
        if (r < 0)
                return r;
        WAITER_OR_FAIL(ctx, w);
        char *err = NULL;
        r = actions_stop(d->actions, names, json_is_true(json_object_get(req, "graceful")),
                         waiter_done, w, &err);
        return action_started(ctx, w, r, err);
}

static int verb_kill(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        Daemon *d = ctx->userdata;
        char *one[] = {(char *)req_name(req), NULL};
        WAITER_OR_FAIL(ctx, w);
        char *err = NULL;
        int r = actions_stop(d->actions, one, true, waiter_done, w, &err);
        return action_started(ctx, w, r, err);
}

static int verb_restart(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        Daemon *d = ctx->userdata;
        WAITER_OR_FAIL(ctx, w);
        char *err = NULL;
        int r = actions_restart(d->actions, req_name(req), waiter_done, w, &err);
        return action_started(ctx, w, r, err);
}

static int verb_destroy(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        Daemon *d = ctx->userdata;
        WAITER_OR_FAIL(ctx, w);
        char *err = NULL;
        int r = actions_destroy(d->actions, req_name(req),
                                json_is_true(json_object_get(req, "purge")), waiter_done, w, &err);
        return action_started(ctx, w, r, err);
}

static int verb_purge_tombstone(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        Daemon *d = ctx->userdata;
        WAITER_OR_FAIL(ctx, w);
        char *err = NULL;
        int r = actions_purge_tombstone(d->actions, req_name(req), waiter_done, w, &err);
        return action_started(ctx, w, r, err);
}

static int verb_operations(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        Daemon *d = ctx->userdata;
        json_t *list = actions_transients(d->actions);
        if (!list || json_object_set_new(resp, "operations", list) < 0)
                return -ENOMEM;
        return 0;
}

/* ---- approvals ---- */

static int verb_pending(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        Daemon *d = ctx->userdata;
        json_t *arr = json_array();
        if (!arr || json_object_set_new(resp, "approvals", arr) < 0)
                return -ENOMEM;
        int r = approvals_list(d, arr);
        return r < 0 ? store_failure(ctx, r, "reading approvals") : 0;
}

static int64_t req_id(json_t *req)
{
        return json_integer_value(json_object_get(req, "id"));
}

static int verb_approval_status(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        Daemon *d = ctx->userdata;
        _cleanup_free_ char *err = NULL;
        int r = approvals_show(d, req_id(req), resp, &err);
        return r < 0 ? dispatch_fail(ctx, r, "%s", err ? err : strerror(-r)) : 0;
}

static int verb_approve(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        Daemon *d = ctx->userdata;
        _cleanup_free_ char *err = NULL;
        int r = approvals_approve(d, req_id(req), &err);
        return r < 0 ? dispatch_fail(ctx, r, "%s", err ? err : strerror(-r)) : 0;
}

static int verb_deny(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        Daemon *d = ctx->userdata;
        _cleanup_free_ char *err = NULL;
        int r = approvals_deny(d, req_id(req), json_string_value(json_object_get(req, "note")),
                               &err);
        return r < 0 ? dispatch_fail(ctx, r, "%s", err ? err : strerror(-r)) : 0;
}

static int verb_request_spawn(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        Daemon *d = ctx->userdata;
        _cleanup_free_ char *err = NULL;
        int64_t id = 0;
        int r = approvals_request_spawn(d, req_name(req),
                                        json_string_value(json_object_get(req, "description")), &id,
                                        &err);
        if (r < 0)
                return dispatch_fail(ctx, r, "%s", err ? err : strerror(-r));
        return json_object_set_new(resp, "id", json_integer(id)) < 0 ? -ENOMEM : 0;
}

static int verb_set_paused(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        Daemon *d = ctx->userdata;
        _cleanup_free_ char *err = NULL;
        int r = actions_set_paused(d->actions, req_name(req),
                                   json_is_true(json_object_get(req, "paused")), &err);
        return r < 0 ? dispatch_fail(ctx, r, "%s", err ? err : strerror(-r)) : 0;
}

static int verb_send(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        Daemon *d = ctx->userdata;
        return agent_server_send(d, ctx, OPERATOR_NAME, req, resp);
}

static int verb_operator_inbox(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        Daemon *d = ctx->userdata;
        json_t *jl = json_object_get(req, "limit");
        int64_t limit = jl ? json_integer_value(jl) : 50;
        if (limit < 1 || limit > BROKER_RECENT_MAX)
                return dispatch_fail(ctx, -EINVAL, "\"limit\" must be from 1 to %d",
                                     BROKER_RECENT_MAX);
        json_t *arr = json_array();
        if (!arr || json_object_set_new(resp, "messages", arr) < 0)
                return -ENOMEM;
        int r = broker_unacked(d->store, OPERATOR_NAME, (unsigned)limit, arr);
        return r < 0 ? store_failure(ctx, r, "reading the operator inbox") : 0;
}

static int verb_operator_ack(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        Daemon *d = ctx->userdata;
        _cleanup_free_ int64_t *ids = NULL;
        size_t n = 0;
        int r = agent_server_ids(ctx, req, &ids, &n);
        if (r < 0)
                return r;
        r = broker_ack(d->store, OPERATOR_NAME, ids, n);
        if (r < 0)
                return store_failure(ctx, r, "acknowledging");
        return json_object_set_new(resp, "acked", json_integer(r)) < 0 ? -ENOMEM : 0;
}

static int verb_questions(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        Daemon *d = ctx->userdata;
        json_t *arr = json_array();
        if (!arr || json_object_set_new(resp, "questions", arr) < 0)
                return -ENOMEM;
        int r = questions_list_open(d->store, NULL, arr);
        return r < 0 ? store_failure(ctx, r, "reading questions") : 0;
}

static int verb_answer(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        Daemon *d = ctx->userdata;
        return agent_server_answer(d, ctx, OPERATOR_NAME, true, req);
}

static int verb_cancel_question(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        Daemon *d = ctx->userdata;
        int64_t id = json_integer_value(json_object_get(req, "id"));
        int r = questions_cancel(d->store, id, OPERATOR_NAME, true);
        if (r == -ENOENT)
                return dispatch_fail(ctx, r, "there is no question %lld", (long long)id);
        if (r == -EALREADY)
                return dispatch_fail(ctx, r, "question %lld is already answered", (long long)id);
        return r < 0 ? store_failure(ctx, r, "cancelling the question") : 0;
}

static int verb_reminders(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        Daemon *d = ctx->userdata;
        json_t *arr = json_array();
        if (!arr || json_object_set_new(resp, "reminders", arr) < 0)
                return -ENOMEM;
        int r = reminders_list_pending(d->store, NULL, arr);
        return r < 0 ? store_failure(ctx, r, "reading reminders") : 0;
}

static const FieldSpec id_fields[] = {
        {"id", FT_INT, true},
        {NULL, 0, false},
};

static const FieldSpec name_fields[] = {
        {"name", FT_STRING, true},
        {NULL, 0, false},
};

static const FieldSpec spawn_fields[] = {
        {"name", FT_STRING, true},
        {"parent", FT_STRING, false},
        {NULL, 0, false},
};

static const FieldSpec scope_fields[] = {
        {"scope", FT_OBJECT, true},
        {"graceful", FT_BOOL, false},
        {NULL, 0, false},
};

static const FieldSpec destroy_fields[] = {
        {"name", FT_STRING, true},
        {"purge", FT_BOOL, false},
        {NULL, 0, false},
};

static const FieldSpec deny_fields[] = {
        {"id", FT_INT, true},
        {"note", FT_STRING, false},
        {NULL, 0, false},
};

static const FieldSpec set_paused_fields[] = {
        {"name", FT_STRING, true},
        {"paused", FT_BOOL, true},
        {NULL, 0, false},
};

static const VerbSpec host_verbs[] = {
        {"list", verb_list, NULL, 0, "names of the managed agents"},
        {"agent_status", verb_agent_status, NULL, 0, "one status row per agent"},
        {"subscribe_agent_status", verb_subscribe_agent_status, NULL, VERB_STREAM,
         "push a status row whenever an agent changes"},
        {"urls", verb_urls, NULL, 0, "the hive's domain and browser URLs"},
        {"version", verb_version, NULL, 0, "daemon and protocol version, backends"},
        {"set_paused", verb_set_paused, set_paused_fields, 0,
         "park or un-park an agent's turn loop"},
        {"spawn", verb_spawn, spawn_fields, 0, "create and start a new agent"},
        {"start", verb_start, scope_fields, 0, "start containers (scope; empty = whole hive)"},
        {"stop", verb_stop, scope_fields, 0, "stop containers (scope; empty = whole hive)"},
        {"kill", verb_kill, name_fields, 0, "stop one container (graceful)"},
        {"restart", verb_restart, name_fields, 0, "stop and start one container"},
        {"destroy", verb_destroy, destroy_fields, 0,
         "remove an agent (state kept as a tombstone unless purge)"},
        {"purge_tombstone", verb_purge_tombstone, name_fields, 0,
         "delete the kept state of a destroyed agent"},
        {"operations", verb_operations, NULL, 0, "container operations in flight"},
        {"pending", verb_pending, NULL, 0, "the approval queue (every approval, newest first)"},
        {"approval_status", verb_approval_status, id_fields, 0,
         "one approval with its diff, phase and build log"},
        {"approve", verb_approve, id_fields, 0, "approve a request; the deploy runs after"},
        {"deny", verb_deny, deny_fields, 0, "deny a request, with an optional note"},
        {"request_spawn", verb_request_spawn, agent_request_spawn_fields, 0,
         "queue the spawn of a new agent for approval"},
        {"send", verb_send, agent_send_fields, 0, "send a message as the operator"},
        {"operator_inbox", verb_operator_inbox, agent_limit_fields, 0,
         "unacknowledged messages to the operator"},
        {"operator_ack", verb_operator_ack, agent_ack_fields, 0, "acknowledge operator messages"},
        {"questions", verb_questions, NULL, 0, "open questions, hive-wide"},
        {"answer", verb_answer, agent_answer_fields, 0, "answer any question as the operator"},
        {"cancel_question", verb_cancel_question, id_fields, 0, "withdraw a question"},
        {"reminders", verb_reminders, NULL, 0, "pending reminders, hive-wide"},
};

const VerbTable host_verb_table = {
        .socket = "host.sock",
        .verbs = host_verbs,
        .n_verbs = ELEMENTSOF(host_verbs),
};
