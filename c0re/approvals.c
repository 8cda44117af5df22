/* Approvals: requests, decisions, and the two-phase deploy pipeline (see approvals.h). */
#define LOG_SUBSYSTEM "approvals"

#include <errno.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actions.h"
#include "agent_server.h"
#include "approvals.h"
#include "broker.h"
#include "cleanup.h"
#include "errors.h"
#include "lifecycle.h"
#include "log.h"
#include "meta.h"
#include "proto.h"
#include "questions.h"
#include "repos.h"
#include "store.h"
#include "timeutil.h"
#include "worker.h"

#define BUILD_LOG_TAIL  (16u * 1024u) /* kept in the row and in failed/<id> */
#define DIFF_MAX        (1024u * 1024u)
#define META_WORKER_KEY "\x01meta" /* no agent can be called that */

/* Passes a repos/meta error sentence on (taking it), or formats one. */
static int pass(char **ret_error, int r, char *err, const char *what)
{
        if (ret_error) {
                if (err)
                        *ret_error = err;
                else if (asprintf(ret_error, "%s: %s", what, strerror(-r)) < 0)
                        *ret_error = NULL;
        } else
                free(err);
        return r;
}

/* The last max bytes of s, starting at a line. */
static const char *tail_of(const char *s, size_t max)
{
        size_t n = strlen(s);
        if (n <= max)
                return s;
        const char *t = s + n - max;
        const char *nl = strchr(t, '\n');
        return nl ? nl + 1 : t;
}

/* ---- rows ---- */

typedef struct Row {
        int64_t id;
        char *agent, *kind, *status, *commit_ref, *fetched_sha, *base_sha, *note, *description,
                *diff, *phase, *build_log;
        int64_t requested_at, resolved_at;
} Row;

static void row_done(Row *r)
{
        free(r->agent);
        free(r->kind);
        free(r->status);
        free(r->commit_ref);
        free(r->fetched_sha);
        free(r->base_sha);
        free(r->note);
        free(r->description);
        free(r->diff);
        free(r->phase);
        free(r->build_log);
        *r = (Row){0};
}

static char *col(sqlite3_stmt *st, int i)
{
        const unsigned char *t = sqlite3_column_text(st, i);
        return t ? strdup((const char *)t) : NULL;
}

#define ROW_COLUMNS                                                                                \
        "id, agent, kind, status, commit_ref, fetched_sha, base_sha, note, description, diff, "    \
        "phase, build_log, requested_at, COALESCE(resolved_at, 0)"

static void row_read(sqlite3_stmt *st, Row *r)
{
        *r = (Row){
                .id = sqlite3_column_int64(st, 0),
                .agent = col(st, 1),
                .kind = col(st, 2),
                .status = col(st, 3),
                .commit_ref = col(st, 4),
                .fetched_sha = col(st, 5),
                .base_sha = col(st, 6),
                .note = col(st, 7),
                .description = col(st, 8),
                .diff = col(st, 9),
                .phase = col(st, 10),
                .build_log = col(st, 11),
                .requested_at = sqlite3_column_int64(st, 12),
                .resolved_at = sqlite3_column_int64(st, 13),
        };
}

static int row_get(Daemon *d, int64_t id, Row *ret)
{
        sqlite3_stmt *st = NULL;
        int r = store_stmt(d->store, "SELECT " ROW_COLUMNS " FROM approvals WHERE id = ?1", &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, id);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
                row_read(st, ret);
        store_stmt_done(st);
        if (rc == SQLITE_DONE)
                return -ENOENT;
        return rc == SQLITE_ROW ? 0 : store_sqlite_errno(d->store, rc, "read approval");
}

static json_t *row_json(const Row *r)
{
        char req[TIMEUTIL_RFC3339_MAX], res[TIMEUTIL_RFC3339_MAX];
        timeutil_rfc3339(r->requested_at, req);
        timeutil_rfc3339(r->resolved_at, res);
        _cleanup_free_ char *sha12 = r->fetched_sha ? strndup(r->fetched_sha, 12) : NULL;
        Approval a = {
                .id = r->id,
                .agent = r->agent,
                .kind = r->kind,
                .commit_ref = r->commit_ref,
                .fetched_sha = sha12,
                .requested_at = req,
                .status = r->status,
                .resolved_at = r->resolved_at ? res : NULL,
                .note = r->note,
                .description = r->description,
        };
        return proto_approval_encode(&a);
}

/* Runs sql with the approval id as ?1, text ?2 and ?3 (either may be NULL) and now as ?4; a
 * statement that does not use a parameter ignores it. */
static int row_update(Daemon *d, const char *sql, int64_t id, const char *t2, const char *t3)
{
        int r = store_batch_write(d->store, true);
        if (r < 0)
                return r;
        sqlite3_stmt *st = NULL;
        r = store_stmt(d->store, sql, &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, id);
        if (t2)
                sqlite3_bind_text(st, 2, t2, -1, SQLITE_TRANSIENT);
        else
                sqlite3_bind_null(st, 2);
        if (t3)
                sqlite3_bind_text(st, 3, t3, -1, SQLITE_TRANSIENT);
        else
                sqlite3_bind_null(st, 3);
        sqlite3_bind_int64(st, 4, timeutil_now());
        int rc = sqlite3_step(st);
        store_stmt_done(st);
        return rc == SQLITE_DONE ? 0 : store_sqlite_errno(d->store, rc, "update approval");
}

static int row_insert(Daemon *d, const char *agent, const char *kind, const char *commit_ref,
                      const char *sha, const char *base, const char *description, const char *diff,
                      int64_t *ret_id)
{
        int r = store_batch_write(d->store, true);
        if (r < 0)
                return r;
        sqlite3_stmt *st = NULL;
        r = store_stmt(d->store,
                       "INSERT INTO approvals (agent, kind, commit_ref, fetched_sha, base_sha, "
                       "description, diff, requested_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                       &st);
        if (r < 0)
                return r;
        const char *t[] = {agent, kind, commit_ref, sha, base, description, diff};
        for (int i = 0; i < 7; i++)
                if (t[i])
                        sqlite3_bind_text(st, i + 1, t[i], -1, SQLITE_TRANSIENT);
                else
                        sqlite3_bind_null(st, i + 1);
        sqlite3_bind_int64(st, 8, timeutil_now());
        int rc = sqlite3_step(st);
        store_stmt_done(st);
        if (rc != SQLITE_DONE)
                return store_sqlite_errno(d->store, rc, "insert approval");
        *ret_id = sqlite3_last_insert_rowid(store_db(d->store));
        return 0;
}

/* ---- telling people ---- */

/* approval_resolved to the manager's inbox and the bus. */
static void resolved(Daemon *d, const Row *r, const char *status, const char *sha, const char *tag)
{
        json_t *ev =
                json_pack("{s:s, s:I, s:s, s:s, s:s}", "event", "approval_resolved", "id",
                          (json_int_t)r->id, "agent", r->agent, "kind", r->kind, "status", status);
        if (!ev)
                return;
        if (sha)
                json_object_set_new(ev, "sha", json_string(sha));
        if (tag)
                json_object_set_new(ev, "tag", json_string(tag));
        daemon_post_event(d, "approval_resolved", json_deep_copy(ev));
        _cleanup_free_ char *body = json_dumps(ev, JSON_COMPACT);
        json_decref(ev);
        int64_t mid = 0;
        if (!body || broker_send(d->store, HIVE_SYSTEM_SENDER, MANAGER_NAME, body, 0, &mid) < 0)
                log_error("cannot tell the manager that approval %lld was resolved",
                          (long long)r->id);
        else
                agent_server_wake(d->agents, MANAGER_NAME);
}

/* ---- requests ---- */

static int live_agent(Daemon *d, const char *name, AgentRecord *ret, char **ret_error)
{
        if (!actions_name_valid(name))
                return hive_refuse(ret_error, -EINVAL, "\"%.64s\" is not a valid agent name", name);
        int r = store_agent_get(d->store, name, ret);
        if (r == -ENOENT)
                return hive_refuse(ret_error, r, "agent \"%s\" is not managed by this hive", name);
        return r < 0 ? hive_refuse(ret_error, r, "cannot look up \"%s\": %s", name, strerror(-r))
                     : 0;
}

int approvals_request_apply_commit(Daemon *d, const char *agent, const char *commit_ref,
                                   const char *description, int64_t *ret_id, char **ret_error)
{
        AgentRecord a = {0};
        int r = live_agent(d, agent, &a, ret_error);
        agent_record_done(&a);
        if (r < 0)
                return r;
        char sha[REPOS_SHA_HEX + 1], base[REPOS_SHA_HEX + 1];
        char *err = NULL;
        r = repos_resolve_proposed(d->cfg, agent, commit_ref, sha, &err);
        if (r < 0)
                return pass(ret_error, r, err, "cannot resolve the commit");
        r = repos_fetch_proposed(d->cfg, agent, sha, &err);
        if (r >= 0)
                r = repos_applied_sha(d->cfg, agent, "main", base, &err);
        if (r < 0)
                return pass(ret_error, r, err, "cannot fetch the commit into the applied repo");
        if (strcmp(sha, base) == 0)
                return hive_refuse(ret_error, -EALREADY, "%.12s is already deployed for %s", sha,
                                   agent);
        _cleanup_free_ char *diff = NULL;
        r = repos_diff(d->cfg, agent, base, sha, &diff, &err);
        if (r < 0)
                return pass(ret_error, r, err, "cannot diff the commit");
        if (strlen(diff) > DIFF_MAX)
                diff[DIFF_MAX] = '\0';

        int64_t id = 0;
        r = row_insert(d, agent, "apply_commit", commit_ref, sha, base, description, diff, &id);
        if (r < 0)
                return hive_refuse(ret_error, r, "cannot record the request: %s", strerror(-r));
        _cleanup_free_ char *tag = NULL, *msg = NULL;
        if (asprintf(&tag, "proposal/%lld", (long long)id) < 0 ||
            asprintf(&msg, "proposal %lld for %s%s%s\n", (long long)id, agent,
                     description ? ": " : "", description ? description : "") < 0)
                return -ENOMEM;
        r = repos_tag(d->cfg, agent, tag, sha, msg, &err);
        if (r < 0) {
                (void)row_update(d, "DELETE FROM approvals WHERE id = ?1", id, NULL, NULL);
                return pass(ret_error, r, err, "cannot tag the proposal");
        }
        log_info("approval %lld: apply %.12s to %s, waiting for the operator", (long long)id, sha,
                 agent);
        daemon_post_event(d, "approval_added",
                          json_pack("{s:I, s:s, s:s}", "id", (json_int_t)id, "agent", agent, "kind",
                                    "apply_commit"));
        *ret_id = id;
        return 0;
}

int approvals_request_spawn(Daemon *d, const char *name, const char *description, int64_t *ret_id,
                            char **ret_error)
{
        if (!actions_name_valid(name))
                return hive_refuse(ret_error, -EINVAL,
                                   "\"%.64s\" is not a valid agent name: 1 to 9 characters of a-z, "
                                   "0-9 and '-', not starting or ending with '-'",
                                   name);
        if (actions_name_reserved(name))
                return hive_refuse(ret_error, -EINVAL,
                                   "\"%s\" is reserved and cannot name an agent", name);
        AgentRecord a = {0};
        int r = store_agent_get(d->store, name, &a);
        agent_record_done(&a);
        if (r == 0)
                return hive_refuse(ret_error, -EEXIST, "an agent named \"%s\" already exists",
                                   name);
        int64_t pending = 0;
        r = store_query_int64(d->store,
                              "SELECT COUNT(*) FROM approvals WHERE kind = 'spawn' AND "
                              "status = 'pending' AND agent = ?1",
                              name, &pending);
        if (r >= 0 && pending > 0)
                return hive_refuse(ret_error, -EEXIST, "a spawn of \"%s\" is already waiting",
                                   name);
        int64_t id = 0;
        r = row_insert(d, name, "spawn", "", NULL, NULL, description, NULL, &id);
        if (r < 0)
                return hive_refuse(ret_error, r, "cannot record the request: %s", strerror(-r));
        log_info("approval %lld: spawn %s, waiting for the operator", (long long)id, name);
        daemon_post_event(
                d, "approval_added",
                json_pack("{s:I, s:s, s:s}", "id", (json_int_t)id, "agent", name, "kind", "spawn"));
        *ret_id = id;
        return 0;
}

/* Input names as nix spells them, and never an agent's (those move only by deploys). */
static bool input_name_ok(const char *s)
{
        size_t n = strlen(s);
        if (n < 1 || n > 64 || strncmp(s, "agent-", 6) == 0)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
                      (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_'))
                        return false;
        return true;
}

int approvals_request_update_meta_inputs(Daemon *d, json_t *inputs, const char *description,
                                         int64_t *ret_id, char **ret_error)
{
        if (inputs && !json_is_array(inputs))
                return hive_refuse(ret_error, -EINVAL, "\"inputs\" must be a list of input names");
        size_t i;
        json_t *v;
        json_array_foreach(inputs, i, v)
        {
                const char *name = json_string_value(v);
                if (!name || !input_name_ok(name))
                        return hive_refuse(
                                ret_error, -EINVAL,
                                "\"%.64s\" is not an input of the meta flake that can be "
                                "updated (agent-<n> inputs move only by deploys)",
                                name ? name : "(not a string)");
        }
        _cleanup_free_ char *ref = json_dumps(inputs ? inputs : json_array(), JSON_COMPACT);
        if (!ref)
                return -ENOMEM;
        int64_t id = 0;
        int r = row_insert(d, MANAGER_AGENT, "update_meta_inputs", ref, NULL, NULL, description,
                           NULL, &id);
        if (r < 0)
                return hive_refuse(ret_error, r, "cannot record the request: %s", strerror(-r));
        log_info("approval %lld: update meta inputs %s, waiting for the operator", (long long)id,
                 ref);
        daemon_post_event(d, "approval_added",
                          json_pack("{s:I, s:s, s:s}", "id", (json_int_t)id, "agent", MANAGER_AGENT,
                                    "kind", "update_meta_inputs"));
        *ret_id = id;
        return 0;
}

/* ---- reading ---- */

int approvals_list(Daemon *d, json_t *arr)
{
        sqlite3_stmt *st = NULL;
        int r = store_stmt(d->store, "SELECT " ROW_COLUMNS " FROM approvals ORDER BY id DESC", &st);
        if (r < 0)
                return r;
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                Row row;
                row_read(st, &row);
                json_t *j = row_json(&row);
                row_done(&row);
                if (!j || json_array_append_new(arr, j) < 0) {
                        store_stmt_done(st);
                        return -ENOMEM;
                }
        }
        store_stmt_done(st);
        return rc == SQLITE_DONE ? 0 : store_sqlite_errno(d->store, rc, "list approvals");
}

int approvals_show(Daemon *d, int64_t id, json_t *resp, char **ret_error)
{
        Row row;
        int r = row_get(d, id, &row);
        if (r == -ENOENT)
                return hive_refuse(ret_error, r, "there is no approval %lld", (long long)id);
        if (r < 0)
                return hive_refuse(ret_error, r, "cannot read approval %lld: %s", (long long)id,
                                   strerror(-r));
        json_t *j = row_json(&row);
        int k = j ? json_object_set_new(resp, "approval", j) : -1;
        if (k == 0 && row.fetched_sha)
                k = json_object_set_new(resp, "sha", json_string(row.fetched_sha));
        if (k == 0 && row.phase)
                k = json_object_set_new(resp, "phase", json_string(row.phase));
        if (k == 0 && row.diff)
                k = json_object_set_new(resp, "diff", json_string(row.diff));
        if (k == 0 && row.build_log)
                k = json_object_set_new(resp, "build_log", json_string(row.build_log));
        row_done(&row);
        return k == 0 ? 0 : -ENOMEM;
}

/* ---- the pipeline ---- */

typedef struct Deploy {
        Daemon *d;
        int64_t id;
        char *agent;
        char sha[REPOS_SHA_HEX + 1];
        MetaAgent *agents; /* every live agent, for the flake */
        size_t n_agents;
        char **agent_names; /* owns the names in agents */
        /* results */
        int result;
        char *error;
        char *log;
        char *tag; /* deployed/<id> or failed/<id> */
} Deploy;

static void deploy_free(Deploy *x)
{
        free(x->agent);
        free(x->agents);
        strv_free(x->agent_names);
        free(x->error);
        free(x->log);
        free(x->tag);
        free(x);
}

typedef struct Phase {
        Daemon *d;
        int64_t id;
        const char *phase;
} Phase;

static void on_phase(void *userdata)
{
        Phase *p = userdata;
        (void)row_update(p->d, "UPDATE approvals SET phase = ?2 WHERE id = ?1", p->id, p->phase,
                         NULL);
        daemon_post_event(p->d, "approval_progress",
                          json_pack("{s:I, s:s}", "id", (json_int_t)p->id, "phase", p->phase));
        free(p);
}

typedef struct LogLine {
        Daemon *d;
        int64_t id;
        char *line;
} LogLine;

static void on_log_line(void *userdata)
{
        LogLine *l = userdata;
        daemon_post_event(l->d, "approval_build_log",
                          json_pack("{s:I, s:s}", "id", (json_int_t)l->id, "line", l->line));
        free(l->line);
        free(l);
}

/* A line of build output (worker thread): published on the event bus as it comes. */
static void build_line(void *userdata, int stream, const char *line, size_t len)
{
        Deploy *x = userdata;
        LogLine *l = malloc(sizeof(*l));
        char *copy = strndup(line, len < 4096 ? len : 4096);
        if (!l || !copy) {
                free(l);
                free(copy);
                return;
        }
        /* a build's output is not always UTF-8; the bus carries JSON strings */
        for (char *p = copy; *p; p++)
                if ((unsigned char)*p >= 0x80 || (unsigned char)*p < 0x20)
                        *p = (*p == '\t') ? '\t' : '?';
        *l = (LogLine){x->d, x->id, copy};
        if (loop_post(x->d->loop, on_log_line, l) < 0) {
                free(copy);
                free(l);
        }
}

/* Tells the loop the pipeline reached phase (worker thread). */
static void post_phase(Deploy *x, const char *phase)
{
        Phase *p = malloc(sizeof(*p));
        if (!p)
                return;
        *p = (Phase){x->d, x->id, phase};
        if (loop_post(x->d->loop, on_phase, p) < 0)
                free(p);
}

static char *deploy_tag(const char *what, int64_t id)
{
        char *t = NULL;
        return asprintf(&t, "%s/%lld", what, (long long)id) < 0 ? NULL : t;
}

/* Worker thread, meta lock held: prepare, build, then finalize or abort. */
static void deploy_run(void *data)
{
        Deploy *x = data;
        const HiveConfig *cfg = x->d->cfg;
        char *err = NULL;
        _cleanup_free_ char *approved = deploy_tag("approved", x->id);
        _cleanup_free_ char *building = deploy_tag("building", x->id);
        _cleanup_free_ char *msg = NULL;
        if (!approved || !building || asprintf(&msg, "approval %lld\n", (long long)x->id) < 0) {
                x->result = -ENOMEM;
                return;
        }
        meta_lock();
        post_phase(x, "prepare");
        int r = repos_tag(cfg, x->agent, approved, x->sha, msg, &err);
        if (r >= 0)
                r = repos_tag(cfg, x->agent, building, x->sha, msg, &err);
        if (r >= 0)
                r = meta_write_flake(cfg, x->agents, x->n_agents, &err);
        if (r >= 0)
                r = meta_lock_agent(cfg, x->agent, x->sha, &x->log, &err);
        if (r >= 0) {
                post_phase(x, "build");
                free(x->log);
                x->log = NULL;
                r = meta_build_lines(cfg, x->agent, build_line, x, &x->log, &err);
        }
        if (r >= 0) {
                post_phase(x, "finalize");
                x->tag = deploy_tag("deployed", x->id);
                _cleanup_free_ char *commit = NULL;
                if (!x->tag ||
                    asprintf(&commit, "deploy %s %s %.12s", x->agent, x->tag, x->sha) < 0)
                        r = -ENOMEM;
                if (r >= 0)
                        r = repos_tag(cfg, x->agent, x->tag, x->sha, msg, &err);
                if (r >= 0)
                        r = repos_set_main(cfg, x->agent, x->sha, &err);
                if (r >= 0)
                        r = meta_commit(cfg, commit, &err);
        }
        if (r < 0) {
                post_phase(x, "abort");
                x->result = r;
                x->error = err;
                err = NULL;
                _cleanup_free_ char *ignored = NULL;
                (void)meta_restore(cfg, &ignored);
                free(x->tag);
                x->tag = deploy_tag("failed", x->id);
                _cleanup_free_ char *note = NULL;
                const char *logtail = x->log ? tail_of(x->log, BUILD_LOG_TAIL) : "";
                if (x->tag && asprintf(&note, "approval %lld failed: %s\n\n%s", (long long)x->id,
                                       x->error ? x->error : strerror(-r), logtail) >= 0) {
                        free(ignored);
                        ignored = NULL;
                        if (repos_tag(cfg, x->agent, x->tag, x->sha, note, &ignored) < 0)
                                log_error("cannot tag %s: %s", x->tag, ignored ? ignored : "?");
                }
        }
        meta_unlock();
        free(err);
}

static void deploy_done(void *data)
{
        Deploy *x = data;
        Daemon *d = x->d;
        Row row;
        if (row_get(d, x->id, &row) < 0) {
                deploy_free(x);
                return;
        }
        const char *logtail = x->log ? tail_of(x->log, BUILD_LOG_TAIL) : NULL;
        if (x->result >= 0) {
                (void)row_update(d,
                                 "UPDATE approvals SET phase = NULL, build_log = ?2 WHERE id = ?1",
                                 x->id, logtail, NULL);
                (void)store_agent_set_deployed(d->store, x->agent, x->sha);
                log_info("approval %lld: deployed %.12s to %s (%s)", (long long)x->id, x->sha,
                         x->agent, x->tag);
                resolved(d, &row, "approved", x->sha, x->tag);
                daemon_agent_changed(d, x->agent);
                /* Update the container and restart it on the new config. */
                _cleanup_free_ char *err = NULL;
                if (actions_update(d->actions, x->agent, NULL, NULL, &err) < 0)
                        log_error("cannot update %s to its new config: %s", x->agent,
                                  err ? err : "?");
        } else {
                (void)row_update(d,
                                 "UPDATE approvals SET status = 'failed', phase = NULL, note = ?2, "
                                 "build_log = ?3, resolved_at = ?4 WHERE id = ?1",
                                 x->id, x->error, logtail);
                log_error("approval %lld: deploying %.12s to %s failed: %s", (long long)x->id,
                          x->sha, x->agent, x->error ? x->error : strerror(-x->result));
                resolved(d, &row, "failed", x->sha, x->tag);
        }
        row_done(&row);
        deploy_free(x);
}

/* Every live agent, for the meta flake. */
static int snapshot_agents(Daemon *d, Deploy *x)
{
        AgentRecord *v = NULL;
        size_t n = 0;
        int r = store_agent_list(d->store, &v, &n);
        if (r < 0)
                return r;
        x->agents = calloc(n ? n : 1, sizeof(MetaAgent));
        x->agent_names = calloc(n + 1, sizeof(char *));
        if (!x->agents || !x->agent_names) {
                agent_records_free(v, n);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
                x->agent_names[i] = TAKE_PTR(v[i].name);
                x->agents[i] = (MetaAgent){.name = x->agent_names[i],
                                           .port = (uint16_t)v[i].port,
                                           .manager = strcmp(v[i].role, "manager") == 0};
        }
        x->n_agents = n;
        agent_records_free(v, n);
        return 0;
}

/* ---- updating meta inputs ---- */

typedef struct Inputs {
        Daemon *d;
        int64_t id;
        char **names; /* NULL: every non-agent input */
        int result;
        bool changed;
        char *error;
        char *log;
} Inputs;

/* The locked node of each named input (or of every non-agent one) in the meta work tree's
 * flake.lock, as one JSON object; NULL when there is no lock. */
static json_t *locked_inputs(const HiveConfig *cfg, char *const *names)
{
        _cleanup_free_ char *path = NULL;
        if (asprintf(&path, "%s/meta/flake.lock", cfg->state_dir) < 0)
                return NULL;
        json_t *lock = json_load_file(path, 0, NULL);
        json_t *nodes = json_object_get(lock, "nodes");
        json_t *out = json_object();
        const char *key;
        json_t *node;
        json_object_foreach(nodes, key, node)
        {
                bool wanted =
                        !names ? strncmp(key, "agent-", 6) != 0 && strcmp(key, "root") != 0 : false;
                for (char *const *n = names; n && *n; n++)
                        wanted = wanted || strcmp(*n, key) == 0;
                if (wanted && out)
                        json_object_set(out, key, json_object_get(node, "locked"));
        }
        json_decref(lock);
        return out;
}

static void inputs_run(void *data)
{
        Inputs *x = data;
        const HiveConfig *cfg = x->d->cfg;
        meta_lock();
        json_t *before = locked_inputs(cfg, x->names);
        int r = meta_update_inputs(cfg, x->names, &x->log, &x->error);
        json_t *after = r >= 0 ? locked_inputs(cfg, x->names) : NULL;
        x->changed = r >= 0 && !json_equal(before, after);
        if (r >= 0 && x->changed) {
                _cleanup_free_ char *msg = NULL;
                _cleanup_free_ char *list = x->names ? NULL : strdup("all inputs");
                if (x->names) {
                        size_t len = 1;
                        for (char **n = x->names; *n; n++)
                                len += strlen(*n) + 1;
                        list = calloc(1, len);
                        for (char **n = x->names; list && *n; n++) {
                                if (n != x->names)
                                        strcat(list, " ");
                                strcat(list, *n);
                        }
                }
                if (!list ||
                    asprintf(&msg, "update inputs %s (approval %lld)", list, (long long)x->id) < 0)
                        r = -ENOMEM;
                else
                        r = meta_commit(cfg, msg, &x->error);
        }
        if (r < 0) {
                _cleanup_free_ char *ignored = NULL;
                (void)meta_restore(cfg, &ignored);
        }
        meta_unlock();
        json_decref(before);
        json_decref(after);
        x->result = r;
}

static void inputs_done(void *data)
{
        Inputs *x = data;
        Daemon *d = x->d;
        Row row;
        if (row_get(d, x->id, &row) == 0) {
                const char *logtail = x->log ? tail_of(x->log, BUILD_LOG_TAIL) : NULL;
                if (x->result >= 0) {
                        (void)row_update(d,
                                         "UPDATE approvals SET phase = NULL, build_log = ?2 "
                                         "WHERE id = ?1",
                                         x->id, logtail, NULL);
                        if (x->changed)
                                (void)store_agent_set_needs_update(d->store, NULL, true);
                        log_info("approval %lld: meta inputs %s", (long long)x->id,
                                 x->changed ? "updated; every agent needs an update"
                                            : "already up to date");
                        resolved(d, &row, "approved", NULL, NULL);
                        _cleanup_strv_free_ char **names = NULL;
                        if (x->changed && store_agent_names(d->store, &names) >= 0)
                                for (char **n = names; *n; n++)
                                        daemon_agent_changed(d, *n);
                } else {
                        (void)row_update(
                                d,
                                "UPDATE approvals SET status = 'failed', phase = NULL, "
                                "note = ?2, build_log = ?3, resolved_at = ?4 WHERE id = ?1",
                                x->id, x->error, logtail);
                        log_error("approval %lld: updating the meta inputs failed: %s",
                                  (long long)x->id, x->error ? x->error : strerror(-x->result));
                        resolved(d, &row, "failed", NULL, NULL);
                }
                row_done(&row);
        }
        strv_free(x->names);
        free(x->error);
        free(x->log);
        free(x);
}

static int approve_inputs(Daemon *d, const Row *row, char **ret_error)
{
        Inputs *x = calloc(1, sizeof(*x));
        if (!x)
                return -ENOMEM;
        x->d = d;
        x->id = row->id;
        json_t *list = json_loads(row->commit_ref, 0, NULL);
        size_t n = json_array_size(list);
        if (n > 0) {
                x->names = calloc(n + 1, sizeof(char *));
                for (size_t i = 0; x->names && i < n; i++)
                        x->names[i] = strdup(json_string_value(json_array_get(list, i)));
        }
        json_decref(list);
        int r = n > 0 && !x->names ? -ENOMEM : 0;
        if (r >= 0)
                r = row_update(d,
                               "UPDATE approvals SET status = 'approved', phase = 'prepare', "
                               "resolved_at = ?4 WHERE id = ?1",
                               row->id, NULL, NULL);
        if (r >= 0)
                r = worker_submit(d->worker, META_WORKER_KEY, inputs_run, inputs_done, x);
        if (r < 0) {
                strv_free(x->names);
                free(x);
                return hive_refuse(ret_error, r, "cannot start the update: %s", strerror(-r));
        }
        return 0;
}

/* ---- decisions ---- */

static int pending_row(Daemon *d, int64_t id, Row *ret, char **ret_error)
{
        int r = row_get(d, id, ret);
        if (r == -ENOENT)
                return hive_refuse(ret_error, r, "there is no approval %lld", (long long)id);
        if (r < 0)
                return hive_refuse(ret_error, r, "cannot read approval %lld: %s", (long long)id,
                                   strerror(-r));
        if (strcmp(ret->status, "pending") != 0) {
                r = hive_refuse(ret_error, -EALREADY, "approval %lld is already %s", (long long)id,
                                ret->status);
                row_done(ret);
        }
        return r;
}

typedef struct SpawnWait {
        Daemon *d;
        int64_t id;
} SpawnWait;

static void spawn_done(void *userdata, int r, const char *error, const char *output)
{
        SpawnWait *w = userdata;
        Row row;
        if (row_get(w->d, w->id, &row) == 0) {
                if (r < 0)
                        (void)row_update(w->d,
                                         "UPDATE approvals SET status = 'failed', note = ?2, "
                                         "resolved_at = ?4 WHERE id = ?1",
                                         w->id, error, NULL);
                resolved(w->d, &row, r < 0 ? "failed" : "approved", NULL, NULL);
                row_done(&row);
        }
        free(w);
}

int approvals_approve(Daemon *d, int64_t id, char **ret_error)
{
        if (!d->worker || !d->actions)
                return hive_refuse(ret_error, -ESHUTDOWN, "the daemon is shutting down");
        Row row;
        int r = pending_row(d, id, &row, ret_error);
        if (r < 0)
                return r;
        if (strcmp(row.kind, "spawn") == 0) {
                SpawnWait *w = calloc(1, sizeof(*w));
                if (!w) {
                        row_done(&row);
                        return -ENOMEM;
                }
                *w = (SpawnWait){d, id};
                r = actions_spawn(d->actions, row.agent, NULL, spawn_done, w, ret_error);
                if (r < 0) {
                        free(w);
                        row_done(&row);
                        return r;
                }
                (void)row_update(d,
                                 "UPDATE approvals SET status = 'approved', resolved_at = ?4 "
                                 "WHERE id = ?1",
                                 id, NULL, NULL);
                row_done(&row);
                return 0;
        }
        if (strcmp(row.kind, "update_meta_inputs") == 0) {
                r = approve_inputs(d, &row, ret_error);
                row_done(&row);
                return r;
        }
        if (strcmp(row.kind, "apply_commit") != 0 || !row.fetched_sha) {
                r = hive_refuse(ret_error, -EOPNOTSUPP,
                                "approvals of kind %s cannot be carried out yet", row.kind);
                row_done(&row);
                return r;
        }
        AgentRecord a = {0};
        r = live_agent(d, row.agent, &a, ret_error);
        agent_record_done(&a);
        if (r < 0) {
                row_done(&row);
                return r;
        }
        Deploy *x = calloc(1, sizeof(*x));
        if (!x) {
                row_done(&row);
                return -ENOMEM;
        }
        x->d = d;
        x->id = id;
        x->agent = strdup(row.agent);
        snprintf(x->sha, sizeof(x->sha), "%s", row.fetched_sha);
        row_done(&row);
        r = x->agent ? snapshot_agents(d, x) : -ENOMEM;
        if (r >= 0)
                r = row_update(d,
                               "UPDATE approvals SET status = 'approved', phase = 'approved', "
                               "resolved_at = ?4 WHERE id = ?1",
                               id, NULL, NULL);
        if (r >= 0)
                r = worker_submit(d->worker, META_WORKER_KEY, deploy_run, deploy_done, x);
        if (r < 0) {
                deploy_free(x);
                return hive_refuse(ret_error, r, "cannot start the deploy: %s", strerror(-r));
        }
        log_info("approval %lld approved: deploying %.12s to %s", (long long)id, x->sha, x->agent);
        return 0;
}

int approvals_deny(Daemon *d, int64_t id, const char *note, char **ret_error)
{
        Row row;
        int r = pending_row(d, id, &row, ret_error);
        if (r < 0)
                return r;
        _cleanup_free_ char *tag = NULL;
        if (strcmp(row.kind, "apply_commit") == 0 && row.fetched_sha) {
                _cleanup_free_ char *msg = NULL;
                tag = deploy_tag("denied", id);
                if (!tag || asprintf(&msg, "denied by the operator%s%s\n", note ? ": " : "",
                                     note ? note : "") < 0) {
                        row_done(&row);
                        return -ENOMEM;
                }
                char *err = NULL;
                r = repos_tag(d->cfg, row.agent, tag, row.fetched_sha, msg, &err);
                if (r < 0) {
                        row_done(&row);
                        return pass(ret_error, r, err, "cannot tag the denial");
                }
        }
        r = row_update(d,
                       "UPDATE approvals SET status = 'denied', note = ?2, resolved_at = ?4 "
                       "WHERE id = ?1",
                       id, note, NULL);
        if (r >= 0) {
                log_info("approval %lld denied%s%s", (long long)id, note ? ": " : "",
                         note ? note : "");
                resolved(d, &row, "denied", row.fetched_sha, tag);
        }
        row_done(&row);
        return r < 0 ? hive_refuse(ret_error, r, "cannot record the denial: %s", strerror(-r)) : 0;
}

/* ---- recovery ---- */

int approvals_recover(Daemon *d)
{
        char *err = NULL;
        meta_lock();
        int r = meta_init(d->cfg, &err); /* also throws away anything staged */
        meta_unlock();
        if (r < 0) {
                log_error("cannot prepare the meta repo: %s", err ? err : strerror(-r));
                free(err);
                return r;
        }
        sqlite3_stmt *st = NULL;
        r = store_stmt(d->store,
                       "SELECT " ROW_COLUMNS " FROM approvals WHERE phase IS NOT NULL ORDER BY id",
                       &st);
        if (r < 0)
                return r;
        Row rows[64];
        size_t n = 0;
        while (n < ELEMENTSOF(rows) && sqlite3_step(st) == SQLITE_ROW)
                row_read(st, &rows[n++]);
        store_stmt_done(st);
        for (size_t i = 0; i < n; i++) {
                Row *row = &rows[i];
                _cleanup_free_ char *deployed = deploy_tag("deployed", row->id);
                char sha[REPOS_SHA_HEX + 1];
                free(err);
                err = NULL;
                /* Killed after the deploy was recorded in git: it happened. */
                if (deployed && repos_applied_sha(d->cfg, row->agent, deployed, sha, &err) >= 0) {
                        (void)row_update(d, "UPDATE approvals SET phase = NULL WHERE id = ?1",
                                         row->id, NULL, NULL);
                        (void)store_agent_set_deployed(d->store, row->agent, sha);
                        log_info("approval %lld had been deployed before the restart",
                                 (long long)row->id);
                        resolved(d, row, "approved", sha, deployed);
                        row_done(row);
                        continue;
                }
                _cleanup_free_ char *failed = deploy_tag("failed", row->id);
                _cleanup_free_ char *note = NULL;
                if (asprintf(&note, "the daemon stopped during the %s phase; aborted at start-up",
                             row->phase) < 0)
                        note = NULL;
                if (failed && row->fetched_sha) {
                        free(err);
                        err = NULL;
                        _cleanup_free_ char *msg = NULL;
                        if (asprintf(&msg, "approval %lld failed: %s\n", (long long)row->id,
                                     note ? note : "aborted") >= 0 &&
                            repos_tag(d->cfg, row->agent, failed, row->fetched_sha, msg, &err) <
                                    0 &&
                            !err)
                                log_error("cannot tag %s", failed);
                }
                (void)row_update(d,
                                 "UPDATE approvals SET status = 'failed', phase = NULL, note = ?2, "
                                 "resolved_at = ?4 WHERE id = ?1",
                                 row->id, note, NULL);
                log_warning("approval %lld: %s", (long long)row->id, note ? note : "aborted");
                resolved(d, row, "failed", row->fetched_sha, failed);
                row_done(row);
        }
        free(err);
        return store_batch_commit(d->store);
}
