/* Container actions and the crash policy (see actions.h).  The loop side of every container
 * operation: validation, the registry, sockets, transients and events live here; the backend
 * calls run on the operations workers (lifecycle.c). */
#define LOG_SUBSYSTEM "actions"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "actions.h"
#include "agent_server.h"
#include "backend.h"
#include "broker.h"
#include "cleanup.h"
#include "errors.h"
#include "fsutil.h"
#include "lifecycle.h"
#include "log.h"
#include "markers.h"
#include "ports.h"
#include "proto.h"
#include "questions.h"
#include "repos.h"
#include "worker.h"

#define SHUTDOWN_GRACE_SEC 5

/* One operation in flight on one container. */
typedef struct Transient {
        uint64_t id;
        char *name;
        LifecycleOp op;
        int64_t since_ms;
        struct Transient *next;
} Transient;

/* One request (possibly over several containers): done runs when the last job finished. */
typedef struct Action {
        ActionDoneFn done;
        void *userdata;
        unsigned outstanding;
        int r;
        char *errors; /* "; "-joined sentences of the jobs that failed */
        char *output; /* logs */
        Loop *loop;
} Action;

typedef struct JobCtx {
        Actions *actions;
        Action *action;        /* NULL for the daemon's own jobs (checks, crash restarts) */
        uint64_t transient_id; /* 0 when the job has none (checks) */
        bool fresh;            /* spawn: its directories were created for it */
        bool crash_restart;    /* a restart after a crash: a failure keeps it wanted */
        LifecycleJob *job;
} JobCtx;

struct Actions {
        Daemon *d;
        unsigned next_lines;   /* the logs op's line count, passed through submit() */
        unsigned next_quiesce; /* a graceful stop's wait for the turn, passed through submit() */
        Transient *transients;
        uint64_t next_transient;
};

static const char *const reserved_names[] = {"manager", "operator", "hive", "reminder",
                                             "hm1nd",   "self",     NULL};

bool actions_name_reserved(const char *name)
{
        for (const char *const *r = reserved_names; *r; r++)
                if (strcmp(*r, name) == 0)
                        return true;
        return false;
}

bool actions_name_valid(const char *name)
{
        size_t n = strlen(name);
        if (n < 1 || n > 9)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = name[i];
                bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
                if (!alnum && !(c == '-' && i > 0 && i < n - 1))
                        return false;
        }
        return true;
}

#define NAME_RULE "1 to 9 characters of a-z, 0-9 and '-', not starting or ending with '-'"

/* A name the operator may give for a new agent. */
static int check_new_name(const char *name, char **ret_error)
{
        if (!actions_name_valid(name))
                return hive_refuse(ret_error, -EINVAL,
                                   "\"%.64s\" is not a valid agent name: " NAME_RULE, name);
        if (actions_name_reserved(name))
                return hive_refuse(ret_error, -EINVAL,
                                   "\"%s\" is reserved (manager, operator, hive, reminder, hm1nd, "
                                   "self) and cannot name an agent",
                                   name);
        return 0;
}

/* Looks up a live agent (or the manager, hm1nd) an action targets. */
static int lookup(Actions *a, const char *name, AgentRecord *ret, char **ret_error)
{
        if (!actions_name_valid(name))
                return hive_refuse(ret_error, -EINVAL,
                                   "\"%.64s\" is not a valid agent name: " NAME_RULE, name);
        int r = store_agent_get(a->d->store, name, ret);
        if (r == -ENOENT)
                /* hyperhive's words: desktop clients show them as they are */
                return hive_refuse(ret_error, -ENOENT, "agent \"%s\" is not managed by this hive",
                                   name);
        if (r < 0)
                return hive_refuse(ret_error, r, "cannot look up \"%s\": %s (see the daemon's log)",
                                   name, strerror(-r));
        return 0;
}

static char *agent_path(Actions *a, const char *name, const char *sub)
{
        char *p = NULL;
        if (asprintf(&p, "%s/agents/%s%s%s", a->d->cfg->state_dir, name, sub ? "/" : "",
                     sub ? sub : "") < 0)
                return NULL;
        return p;
}

/* ---- transients ---- */

static uint64_t transient_add(Actions *a, const char *name, LifecycleOp op)
{
        Transient *t = calloc(1, sizeof(*t));
        if (!t || !(t->name = strdup(name))) {
                free(t);
                return 0;
        }
        t->id = ++a->next_transient;
        t->op = op;
        t->since_ms = store_now_ms();
        t->next = a->transients;
        a->transients = t;
        daemon_post_event(a->d, "transient_set",
                          json_pack("{s:s, s:s}", "name", name, "op", lifecycle_op_transient(op)));
        return t->id;
}

static void transient_clear(Actions *a, uint64_t id)
{
        for (Transient **p = &a->transients; *p; p = &(*p)->next)
                if ((*p)->id == id) {
                        Transient *t = *p;
                        *p = t->next;
                        daemon_post_event(a->d, "transient_cleared",
                                          json_pack("{s:s, s:s}", "name", t->name, "op",
                                                    lifecycle_op_transient(t->op)));
                        free(t->name);
                        free(t);
                        return;
                }
}

static bool transient_for(Actions *a, const char *name)
{
        for (Transient *t = a->transients; t; t = t->next)
                if (strcmp(t->name, name) == 0)
                        return true;
        return false;
}

json_t *actions_transients(Actions *a)
{
        json_t *list = json_array();
        for (Transient *t = a->transients; list && t; t = t->next) {
                json_array_append_new(list, json_pack("{s:s, s:s, s:I}", "name", t->name, "op",
                                                      lifecycle_op_transient(t->op), "since",
                                                      (json_int_t)(t->since_ms / 1000)));
        }
        return list;
}

/* ---- actions and jobs ---- */

static Action *action_new(Actions *a, ActionDoneFn done, void *userdata)
{
        Action *x = calloc(1, sizeof(*x));
        if (x) {
                x->loop = a->d->loop;
                x->done = done;
                x->userdata = userdata;
        }
        return x;
}

static void action_complete(void *userdata)
{
        Action *x = userdata;
        x->done(x->userdata, x->r, x->errors, x->output);
        free(x->errors);
        free(x->output);
        free(x);
}

static void action_job_finished(Action *x, int r, const char *error)
{
        if (!x)
                return;
        if (r < 0) {
                if (x->r == 0)
                        x->r = r;
                char *joined = NULL;
                if (asprintf(&joined, "%s%s%s", x->errors ? x->errors : "", x->errors ? "; " : "",
                             error ? error : strerror(-r)) >= 0) {
                        free(x->errors);
                        x->errors = joined;
                }
        }
        if (--x->outstanding > 0)
                return;
        /* Never from inside the call that started the action (an empty scope finishes at
         * once): the caller has not parked its request yet. */
        if (loop_defer(x->loop, action_complete, x) < 0)
                action_complete(x);
}

static void on_job_done(void *data);
static int snapshot_meta_agents(Actions *a, LifecycleJob *j);
static void on_job_run(void *data)
{
        JobCtx *c = data;
        lifecycle_run(c->job);
}

/* Queues op for the agent rec; on failure to queue the action hears about it at once. */
static int submit(Actions *a, Action *x, LifecycleOp op, const char *name, bool manager,
                  int64_t port, unsigned grace, bool purge, char **purge_dirs, bool fresh,
                  bool crash_restart)
{
        Daemon *d = a->d;
        if (!d->worker) { /* shutting down (or a harness without workers) */
                strv_free(purge_dirs);
                return -ESHUTDOWN;
        }
        JobCtx *c = calloc(1, sizeof(*c));
        LifecycleJob *j =
                c ? lifecycle_job_new(op, d->containers, d->cfg, name, manager, (uint16_t)port)
                  : NULL;
        if (!j) {
                free(c);
                strv_free(purge_dirs);
                return -ENOMEM;
        }
        j->grace_sec = grace;
        j->lines = a->next_lines;
        j->quiesce_sec = a->next_quiesce;
        j->purge = purge;
        j->purge_dirs = purge_dirs;
        if (op == LIFECYCLE_SPAWN && snapshot_meta_agents(a, j) < 0) {
                lifecycle_job_free(j);
                free(c);
                return -ENOMEM;
        }
        *c = (JobCtx){.actions = a,
                      .action = x,
                      .fresh = fresh,
                      .crash_restart = crash_restart,
                      .job = j};
        if (op != LIFECYCLE_CHECK && op != LIFECYCLE_LOGS)
                c->transient_id = transient_add(a, name, op);
        if (x)
                x->outstanding++;
        int r = worker_submit(d->worker, name, on_job_run, on_job_done, c);
        if (r < 0) {
                if (x)
                        x->outstanding--;
                transient_clear(a, c->transient_id);
                lifecycle_job_free(j);
                free(c);
        }
        return r;
}

/* The live agents, for the meta flake a spawn writes. */
static int snapshot_meta_agents(Actions *a, LifecycleJob *j)
{
        AgentRecord *v = NULL;
        size_t n = 0;
        int r = store_agent_list(a->d->store, &v, &n);
        if (r < 0)
                return r;
        j->meta_agents = calloc(n ? n : 1, sizeof(MetaAgent));
        j->meta_names = calloc(n + 1, sizeof(char *));
        if (!j->meta_agents || !j->meta_names) {
                agent_records_free(v, n);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
                j->meta_names[i] = TAKE_PTR(v[i].name);
                j->meta_agents[i] = (MetaAgent){.name = j->meta_names[i],
                                                .port = (uint16_t)v[i].port,
                                                .manager = strcmp(v[i].role, "manager") == 0};
        }
        j->n_meta_agents = n;
        agent_records_free(v, n);
        return 0;
}

/* submit() for one agent with a line count (logs). */
static int submit_lines(Actions *a, Action *x, LifecycleOp op, const char *name, bool manager,
                        int64_t port, unsigned grace, unsigned lines)
{
        a->next_lines = lines;
        int r = submit(a, x, op, name, manager, port, grace, false, NULL, false, false);
        a->next_lines = 0;
        return r;
}

/* Sends a system event to the manager's inbox and wakes it. */
static void tell_manager(Actions *a, json_t *event)
{
        _cleanup_json_ json_t *e = event;
        _cleanup_free_ char *body = e ? json_dumps(e, JSON_COMPACT) : NULL;
        int64_t id = 0;
        if (!body || broker_send(a->d->store, HIVE_SYSTEM_SENDER, MANAGER_NAME, body, 0, &id) < 0) {
                log_error("cannot tell the manager: %s", body ? body : "out of memory");
                return;
        }
        agent_server_wake(a->d->agents, MANAGER_NAME);
}

static const char *seen_status(const LifecycleJob *j)
{
        return j->seen == CONTAINER_UP ? "running" : "stopped";
}

/* A container that should run was found not running, and nothing the operator asked for
 * explains it. */
static void crashed(Actions *a, const AgentRecord *rec, LifecycleJob *j)
{
        Daemon *d = a->d;
        int64_t recent = 0;
        (void)store_crash_count(d->store, rec->name, store_now_ms() - CRASH_WINDOW_SEC * 1000LL,
                                &recent);
        bool restart = recent < CRASH_MAX_RESTARTS;
        const char *outcome = restart ? "restarted" : "failed";
        _cleanup_free_ char *detail = NULL;
        if (asprintf(&detail, "%s %s unasked", j->agent.machine,
                     j->seen == CONTAINER_GONE ? "disappeared" : "stopped") < 0)
                detail = NULL;
        const char *tail = j->log_tail ? j->log_tail : "";
        (void)store_crash_add(d->store, rec->name, detail ? detail : "crash", outcome);
        json_t *ev = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:s}", "event", "container_crash",
                               "name", rec->name, "detail", detail ? detail : "crash", "outcome",
                               outcome, "crashes_in_window", (json_int_t)(recent + 1),
                               "max_restarts", (json_int_t)CRASH_MAX_RESTARTS, "log_tail", tail);
        if (ev)
                daemon_post_event(d, "container_crash", json_deep_copy(ev));
        tell_manager(a, ev);
        if (restart) {
                log_warning("%s crashed (%lld in the last %d minutes); restarting it",
                            j->agent.machine, (long long)(recent + 1), CRASH_WINDOW_SEC / 60);
                (void)store_agent_set_state(d->store, rec->name, "stopped", NULL);
                int r = submit(a, NULL, LIFECYCLE_RESTART, rec->name,
                               strcmp(rec->role, "manager") == 0, rec->port, 0, false, NULL, false,
                               true);
                if (r < 0)
                        log_error_errno(r, "cannot queue the restart of %s: %m", rec->name);
        } else {
                log_error("%s crashed %lld times in %d minutes; marking it failed",
                          j->agent.machine, (long long)(recent + 1), CRASH_WINDOW_SEC / 60);
                (void)store_agent_set_failed(d->store, rec->name, tail);
        }
}

/* A check (or boot) result: record what was seen; a crash when it should run.  Returns
 * whether the agent's row changed, so a sweep that finds everything as it was pushes nothing
 * to subscribe_agent_status. */
static bool checked(Actions *a, const AgentRecord *rec, LifecycleJob *j)
{
        Daemon *d = a->d;
        bool wanted = strcmp(rec->wanted, "running") == 0;
        bool failed = strcmp(rec->status, "failed") == 0;
        if (j->seen == CONTAINER_UP) {
                if (strcmp(rec->status, "running") == 0)
                        return false;
                (void)store_agent_set_state(d->store, rec->name, "running", NULL);
                return true;
        }
        if (!wanted || failed || transient_for(a, rec->name) ||
            worker_pending(d->worker, rec->name) > 0) {
                if (failed || strcmp(rec->status, "stopped") == 0)
                        return false;
                (void)store_agent_set_state(d->store, rec->name, "stopped", NULL);
                return true;
        }
        crashed(a, rec, j);
        return true;
}

static void on_job_done(void *data)
{
        _cleanup_free_ JobCtx *c = data;
        Actions *a = c->actions;
        Daemon *d = a->d;
        LifecycleJob *j = c->job;
        const char *name = j->agent.name;
        if (c->transient_id)
                transient_clear(a, c->transient_id);

        AgentRecord rec = {0};
        bool live = store_agent_get(d->store, name, &rec) == 0;
        int r = j->result;
        bool changed = true; /* whether to push the agent's row to subscribers */
        switch (j->op) {
        case LIFECYCLE_CHECK:
                changed = live && checked(a, &rec, j);
                break;
        case LIFECYCLE_BOOT:
                if (live && r < 0)
                        log_error("cannot start %s: %s", j->agent.machine, j->error);
                if (live && r == -ENOEXEC) /* no payload to run: retrying cannot help */
                        (void)store_agent_set_failed(d->store, name, j->error);
                else
                        changed = live && checked(a, &rec, j);
                break;
        case LIFECYCLE_SPAWN:
                if (r >= 0) {
                        log_info("spawned %s", j->agent.machine);
                        (void)store_agent_set_state(d->store, name, seen_status(j), "running");
                        if (j->deployed_sha)
                                (void)store_agent_set_deployed(d->store, name, j->deployed_sha);
                        daemon_post_event(d, "agent_spawned", json_pack("{s:s}", "name", name));
                        break;
                }
                log_error("spawning %s failed: %s", j->agent.machine, j->error);
                /* Nothing of a failed spawn stays: not the row, the socket, or (unless they
                 * belong to a tombstone being revived) the directories. */
                (void)store_agent_delete(d->store, name);
                agent_server_unregister(d->agents, name);
                if (c->fresh) {
                        _cleanup_free_ char *dir = agent_path(a, name, NULL);
                        if (dir)
                                (void)fsutil_rm_rf(dir);
                }
                break;
        case LIFECYCLE_START:
        case LIFECYCLE_RESTART:
                if (!live)
                        break;
                if (r >= 0) {
                        log_info("%s %s", j->op == LIFECYCLE_START ? "started" : "restarted",
                                 j->agent.machine);
                        (void)store_agent_set_state(d->store, name, seen_status(j), "running");
                } else {
                        log_error("%s: %s", j->agent.machine, j->error);
                        /* An operator's start that failed is not retried behind their back;
                         * a crash restart that failed stays wanted, so the watcher counts it
                         * (unless there is no payload to run at all). */
                        if (c->crash_restart && r == -ENOEXEC)
                                (void)store_agent_set_failed(d->store, name, j->error);
                        else
                                (void)store_agent_set_state(d->store, name, seen_status(j),
                                                            c->crash_restart ? NULL : "stopped");
                }
                break;
        case LIFECYCLE_STOP:
                if (live)
                        (void)store_agent_set_state(d->store, name, seen_status(j), "stopped");
                if (r >= 0)
                        log_info("stopped %s", j->agent.machine);
                break;
        case LIFECYCLE_DESTROY:
                if (r < 0 || !live) {
                        if (live)
                                (void)store_agent_set_state(d->store, name, seen_status(j), NULL);
                        break;
                }
                log_info("destroyed %s%s", j->agent.machine,
                         j->purge ? " and purged its state" : " (state kept as a tombstone)");
                (void)store_agent_destroy(d->store, name, j->purge);
                agent_server_unregister(d->agents, name);
                daemon_post_event(d, "agent_destroyed",
                                  json_pack("{s:s, s:b}", "name", name, "purged", j->purge));
                break;
        case LIFECYCLE_LOGS:
                break;
        case LIFECYCLE_UPDATE:
                if (live && r >= 0) {
                        log_info("updated %s to its deployed config", j->agent.machine);
                        (void)store_agent_set_needs_update(d->store, name, false);
                } else if (live)
                        log_error("updating %s: %s", j->agent.machine, j->error);
                if (live)
                        (void)store_agent_set_state(d->store, name, seen_status(j), NULL);
                break;
        case LIFECYCLE_PURGE:
                if (r >= 0) {
                        (void)store_agent_purge(d->store, name);
                        log_info("purged the tombstone of %s", name);
                }
                break;
        }
        if (j->op != LIFECYCLE_LOGS && changed)
                daemon_agent_changed(d, name);
        if (j->op != LIFECYCLE_CHECK && j->op != LIFECYCLE_LOGS)
                daemon_post_event(d, "container_op",
                                  r < 0 ? json_pack("{s:s, s:s, s:b, s:s}", "name", name, "op",
                                                    lifecycle_op_to_string(j->op), "ok", 0, "error",
                                                    j->error ? j->error : "")
                                        : json_pack("{s:s, s:s, s:b}", "name", name, "op",
                                                    lifecycle_op_to_string(j->op), "ok", 1));
        agent_record_done(&rec);
        if (j->op == LIFECYCLE_LOGS && c->action && j->log_tail)
                c->action->output = TAKE_PTR(j->log_tail);
        action_job_finished(c->action, r, j->error);
        lifecycle_job_free(j);
}

/* ---- the actions ---- */

/* Creates <state>/agents/<name>/state and assigns the sticky port.  *ret_fresh tells whether
 * the agent directory did not exist before. */
static int prepare_dirs(Actions *a, const char *name, bool manager, uint16_t *ret_port,
                        bool *ret_fresh, char **ret_error)
{
        _cleanup_free_ char *dir = agent_path(a, name, NULL);
        _cleanup_free_ char *state = agent_path(a, name, "state");
        if (!dir || !state)
                return -ENOMEM;
        if (ret_fresh)
                *ret_fresh = access(dir, F_OK) < 0;
        int r = fsutil_mkdir_p(state, 0700);
        if (r < 0)
                return hive_refuse(ret_error, r, "cannot create %s: %s", state, strerror(-r));
        if (manager) {
                *ret_port = PORTS_MANAGER;
                return 0;
        }
        r = ports_assign(a->d->cfg->state_dir, name, ret_port);
        if (r < 0)
                return hive_refuse(ret_error, r, "cannot assign a web port to \"%s\": %s", name,
                                   r == -EADDRNOTAVAIL ? "all 900 agent ports are taken"
                                                       : strerror(-r));
        return 0;
}

int actions_spawn(Actions *a, const char *name, const char *parent, ActionDoneFn done,
                  void *userdata, char **ret_error)
{
        Daemon *d = a->d;
        int r = check_new_name(name, ret_error);
        if (r < 0)
                return r;
        AgentRecord rec = {0};
        r = store_agent_get(d->store, name, &rec);
        agent_record_done(&rec);
        if (r == 0)
                return hive_refuse(ret_error, -EEXIST, "an agent named \"%s\" already exists",
                                   name);
        if (r != -ENOENT)
                return hive_refuse(ret_error, r, "cannot look up \"%s\": %s", name, strerror(-r));
        if (transient_for(a, name))
                return hive_refuse(ret_error, -EBUSY,
                                   "\"%s\" is still being %s; try again when that is done", name,
                                   "destroyed or purged");
        if (parent && strcmp(parent, MANAGER_AGENT) != 0) {
                r = lookup(a, parent, &rec, ret_error);
                agent_record_done(&rec);
                if (r < 0)
                        return r;
        }

        if (!d->worker)
                return hive_refuse(ret_error, -ESHUTDOWN, "the daemon is shutting down");
        bool fresh = false;
        uint16_t port = 0;
        r = prepare_dirs(a, name, false, &port, &fresh, ret_error);
        if (r < 0)
                return r;
        AgentRecord row = {.name = (char *)name,
                           .role = (char *)"agent",
                           .parent = (char *)parent,
                           .port = port,
                           .wanted = (char *)"running"};
        r = store_agent_insert(d->store, &row);
        if (r >= 0)
                r = agent_server_register(d->agents, name);
        Action *x = r >= 0 ? action_new(a, done, userdata) : NULL;
        if (r >= 0 && !x)
                r = -ENOMEM;
        if (r >= 0)
                r = submit(a, x, LIFECYCLE_SPAWN, name, false, port, 0, false, NULL, fresh, false);
        if (r < 0) {
                free(x);
                (void)store_agent_delete(d->store, name);
                agent_server_unregister(d->agents, name);
                if (fresh) {
                        _cleanup_free_ char *dir = agent_path(a, name, NULL);
                        if (dir)
                                (void)fsutil_rm_rf(dir);
                }
                return hive_refuse(ret_error, r, "cannot spawn \"%s\": %s", name, strerror(-r));
        }
        log_info("spawning %s (port %u)%s", name, port, fresh ? "" : ", reviving its kept state");
        return 0;
}

/* Resolves names (NULL = the whole hive) into live records; refuses unknown ones. */
static int resolve(Actions *a, char **names, AgentRecord **ret, size_t *ret_n, char **ret_error)
{
        if (!names) {
                int r = store_agent_list(a->d->store, ret, ret_n);
                return r < 0 ? hive_refuse(ret_error, r, "cannot list agents: %s", strerror(-r))
                             : 0;
        }
        size_t n = strv_length(names);
        AgentRecord *v = calloc(n ? n : 1, sizeof(*v));
        if (!v)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                int r = lookup(a, names[i], &v[i], ret_error);
                if (r < 0) {
                        agent_records_free(v, i);
                        return r;
                }
        }
        *ret = v;
        *ret_n = n;
        return 0;
}

/* Runs op on every record (which it frees); done once all finished. */
static int run_on(Actions *a, AgentRecord *v, size_t n, LifecycleOp op, unsigned grace,
                  ActionDoneFn done, void *userdata, char **ret_error)
{
        _cleanup_free_ uint16_t *ports = calloc(n ? n : 1, sizeof(uint16_t));
        int r = ports ? 0 : -ENOMEM;
        for (size_t i = 0; i < n && r >= 0; i++) {
                ports[i] = (uint16_t)v[i].port;
                if (op == LIFECYCLE_START || op == LIFECYCLE_RESTART)
                        r = prepare_dirs(a, v[i].name, strcmp(v[i].role, "manager") == 0, &ports[i],
                                         NULL, ret_error);
        }
        Action *x = r >= 0 ? action_new(a, done, userdata) : NULL;
        if (!x) {
                agent_records_free(v, n);
                return r < 0 ? r : -ENOMEM;
        }
        x->outstanding = 1; /* held until every job is queued */
        for (size_t i = 0; i < n; i++) {
                int k = submit(a, x, op, v[i].name, strcmp(v[i].role, "manager") == 0, ports[i],
                               grace, false, NULL, false, false);
                if (k < 0) {
                        _cleanup_free_ char *msg = NULL;
                        if (asprintf(&msg, "cannot queue the %s of %s: %s",
                                     lifecycle_op_to_string(op), v[i].name, strerror(-k)) < 0)
                                msg = NULL;
                        x->outstanding++;
                        action_job_finished(x, k, msg);
                }
        }
        agent_records_free(v, n);
        action_job_finished(x, 0, NULL);
        return 0;
}

int actions_start(Actions *a, char **names, ActionDoneFn done, void *userdata, char **ret_error)
{
        AgentRecord *v = NULL;
        size_t n = 0;
        int r = resolve(a, names, &v, &n, ret_error);
        if (r < 0)
                return r;
        return run_on(a, v, n, LIFECYCLE_START, 0, done, userdata, ret_error);
}

int actions_stop(Actions *a, char **names, bool graceful, ActionDoneFn done, void *userdata,
                 char **ret_error)
{
        AgentRecord *v = NULL;
        size_t n = 0;
        int r = resolve(a, names, &v, &n, ret_error);
        if (r < 0)
                return r;
        unsigned grace = (unsigned)a->d->cfg->stop_grace * (graceful ? 6 : 1);
        /* Graceful: the harness finishes its turn first (up to the same long grace). */
        a->next_quiesce = graceful ? grace : 0;
        r = run_on(a, v, n, LIFECYCLE_STOP, grace, done, userdata, ret_error);
        a->next_quiesce = 0;
        return r;
}

int actions_restart(Actions *a, const char *name, ActionDoneFn done, void *userdata,
                    char **ret_error)
{
        AgentRecord *v = calloc(1, sizeof(*v));
        if (!v)
                return -ENOMEM;
        int r = lookup(a, name, v, ret_error);
        if (r < 0) {
                free(v);
                return r;
        }
        return run_on(a, v, 1, LIFECYCLE_RESTART, (unsigned)a->d->cfg->stop_grace, done, userdata,
                      ret_error);
}

/* The directories a purge removes: <state>/agents/<name> and <state>/applied/<name>. */
static char **purge_dirs(Actions *a, const char *name)
{
        char **v = calloc(3, sizeof(char *));
        if (!v)
                return NULL;
        v[0] = agent_path(a, name, NULL);
        if (asprintf(&v[1], "%s/applied/%s", a->d->cfg->state_dir, name) < 0)
                v[1] = NULL;
        if (!v[0] || !v[1]) {
                strv_free(v);
                return NULL;
        }
        return v;
}

int actions_destroy(Actions *a, const char *name, bool purge, ActionDoneFn done, void *userdata,
                    char **ret_error)
{
        if (strcmp(name, MANAGER_AGENT) == 0 || strcmp(name, MANAGER_NAME) == 0)
                return hive_refuse(ret_error, -EPERM, "the manager (%s) cannot be destroyed",
                                   MANAGER_AGENT);
        AgentRecord rec = {0};
        int r = lookup(a, name, &rec, ret_error);
        if (r < 0)
                return r;
        bool manager = strcmp(rec.role, "manager") == 0;
        int64_t port = rec.port;
        agent_record_done(&rec);
        if (manager)
                return hive_refuse(ret_error, -EPERM, "the manager (%s) cannot be destroyed", name);
        char **dirs = purge ? purge_dirs(a, name) : NULL;
        if (purge && !dirs)
                return -ENOMEM;
        Action *x = action_new(a, done, userdata);
        if (!x) {
                strv_free(dirs);
                return -ENOMEM;
        }
        r = submit(a, x, LIFECYCLE_DESTROY, name, false, port, (unsigned)a->d->cfg->stop_grace,
                   purge, dirs, false, false);
        if (r < 0) {
                free(x);
                return hive_refuse(ret_error, r, "cannot queue the destroy of \"%s\": %s", name,
                                   strerror(-r));
        }
        return 0;
}

int actions_purge_tombstone(Actions *a, const char *name, ActionDoneFn done, void *userdata,
                            char **ret_error)
{
        int r = check_new_name(name, ret_error);
        if (r < 0)
                return r;
        AgentRecord rec = {0};
        r = store_agent_get(a->d->store, name, &rec);
        agent_record_done(&rec);
        if (r == 0)
                return hive_refuse(ret_error, -EBUSY,
                                   "\"%s\" is a live agent, not a tombstone; destroy it first",
                                   name);
        bool tomb = false;
        r = store_agent_tombstoned(a->d->store, name, &tomb);
        if (r < 0)
                return hive_refuse(ret_error, r, "cannot look up \"%s\": %s", name, strerror(-r));
        if (!tomb)
                return hive_refuse(ret_error, -ENOENT, "there is no kept state of \"%s\" to purge",
                                   name);
        char **dirs = purge_dirs(a, name);
        Action *x = dirs ? action_new(a, done, userdata) : NULL;
        if (!x) {
                strv_free(dirs);
                return -ENOMEM;
        }
        r = submit(a, x, LIFECYCLE_PURGE, name, false, 0, 0, true, dirs, false, false);
        if (r < 0) {
                free(x);
                return hive_refuse(ret_error, r, "cannot queue the purge of \"%s\": %s", name,
                                   strerror(-r));
        }
        return 0;
}

/* Runs op on one agent; done (may be NULL) when it ended. */
static int run_one(Actions *a, LifecycleOp op, const char *name, unsigned lines, ActionDoneFn done,
                   void *userdata, char **ret_error)
{
        AgentRecord rec = {0};
        int r = lookup(a, name, &rec, ret_error);
        if (r < 0)
                return r;
        Action *x = done ? action_new(a, done, userdata) : NULL;
        if (done && !x) {
                agent_record_done(&rec);
                return -ENOMEM;
        }
        r = submit_lines(a, x, op, rec.name, strcmp(rec.role, "manager") == 0, rec.port,
                         (unsigned)a->d->cfg->stop_grace, lines);
        agent_record_done(&rec);
        if (r < 0) {
                free(x);
                return hive_refuse(ret_error, r, "cannot queue the %s of \"%s\": %s",
                                   lifecycle_op_to_string(op), name, strerror(-r));
        }
        return 0;
}

int actions_update(Actions *a, const char *name, ActionDoneFn done, void *userdata,
                   char **ret_error)
{
        return run_one(a, LIFECYCLE_UPDATE, name, 0, done, userdata, ret_error);
}

int actions_logs(Actions *a, const char *name, unsigned lines, ActionDoneFn done, void *userdata,
                 char **ret_error)
{
        return run_one(a, LIFECYCLE_LOGS, name, lines, done, userdata, ret_error);
}

/* Writes or removes <state>/agents/<n>/state/hyperhive-paused, the marker the harness reads. */
static int paused_marker_set(Actions *a, const char *name, bool paused)
{
        _cleanup_free_ char *dir = agent_path(a, name, "state");
        _cleanup_free_ char *marker = NULL;
        if (!dir || asprintf(&marker, "%s/" MARKER_PAUSED, dir) < 0)
                return -ENOMEM;
        if (!paused)
                return unlink(marker) < 0 && errno != ENOENT ? -errno : 0;
        int r = fsutil_mkdir_p(dir, 0700);
        if (r < 0)
                return r;
        _cleanup_close_ int fd = open(marker, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
        return fd < 0 ? -errno : 0;
}

int actions_set_paused(Actions *a, const char *name, bool paused, char **ret_error)
{
        AgentRecord rec = {0};
        if (actions_name_valid(name) && actions_name_reserved(name) &&
            strcmp(name, MANAGER_AGENT) != 0)
                return check_new_name(name, ret_error);
        int r = lookup(a, name, &rec, ret_error);
        agent_record_done(&rec);
        if (r < 0)
                return r;
        r = paused_marker_set(a, name, paused);
        if (r < 0)
                return hive_refuse(ret_error,
                                   log_error_errno(r, "cannot %s the pause marker of %s: %m",
                                                   paused ? "write" : "remove", name),
                                   "cannot %s the pause marker of \"%s\": %s",
                                   paused ? "write" : "remove", name, strerror(-r));
        r = store_agent_set_paused(a->d->store, name, paused);
        if (r < 0)
                return hive_refuse(ret_error, r, "recording the pause failed: %s", strerror(-r));
        daemon_agent_changed(a->d, name);
        log_info("%s %s", paused ? "paused" : "unpaused", name);
        return 0;
}

/* ---- start-up, sweeps, shutdown ---- */

static int ensure_manager(Actions *a)
{
        Daemon *d = a->d;
        /* Its config repos, like every agent's: the meta flake has an input for each agent,
         * the manager included, and cannot lock or build without it. */
        _cleanup_free_ char *err = NULL;
        int r = repos_create(d->cfg, MANAGER_AGENT, &err);
        if (r < 0) /* the daemon still serves; spawns into meta will say what is missing */
                log_warning("cannot create the manager's config repos: %s; the meta flake "
                            "cannot be locked until they exist",
                            err ? err : strerror(-r));
        free(TAKE_PTR(err));
        AgentRecord rec = {0};
        r = store_agent_get(d->store, MANAGER_AGENT, &rec);
        agent_record_done(&rec);
        if (r == 0)
                return 0;
        if (r != -ENOENT)
                return r;
        uint16_t port = 0;
        r = prepare_dirs(a, MANAGER_AGENT, true, &port, NULL, &err);
        if (r < 0)
                return log_error_errno(r, "%s", err ? err : "cannot prepare the manager");
        AgentRecord row = {.name = (char *)MANAGER_AGENT,
                           .role = (char *)"manager",
                           .port = port,
                           .wanted = (char *)"running"};
        r = store_agent_insert(d->store, &row);
        if (r < 0)
                return log_error_errno(r, "cannot register the manager: %m");
        log_info("created the manager %s", MANAGER_AGENT);
        return 0;
}

int actions_boot(Actions *a)
{
        Daemon *d = a->d;
        if (!d->cfg->no_manager) {
                int r = ensure_manager(a);
                if (r < 0)
                        return r;
        }
        AgentRecord *v = NULL;
        size_t n = 0;
        int r = store_agent_list(d->store, &v, &n);
        if (r < 0)
                return log_error_errno(r, "cannot list agents: %m");
        for (size_t i = 0; i < n; i++) {
                bool manager = strcmp(v[i].role, "manager") == 0;
                bool wanted =
                        strcmp(v[i].wanted, "running") == 0 && strcmp(v[i].status, "failed") != 0;
                uint16_t port = (uint16_t)v[i].port;
                _cleanup_free_ char *err = NULL;
                if (wanted && prepare_dirs(a, v[i].name, manager, &port, NULL, &err) < 0) {
                        log_error("cannot start %s: %s", v[i].name, err ? err : "out of memory");
                        continue;
                }
                r = submit(a, NULL, wanted ? LIFECYCLE_BOOT : LIFECYCLE_CHECK, v[i].name, manager,
                           port, 0, false, NULL, false, false);
                if (r < 0)
                        log_error_errno(r, "cannot queue the start-up check of %s: %m", v[i].name);
        }
        agent_records_free(v, n);
        return 0;
}

void actions_sweep(Actions *a, const char *name)
{
        Daemon *d = a->d;
        AgentRecord *v = NULL;
        size_t n = 0;
        if (store_agent_list(d->store, &v, &n) < 0)
                return;
        for (size_t i = 0; i < n; i++) {
                if (name && strcmp(v[i].name, name) != 0)
                        continue;
                /* Something queued or running on it reports its state anyway. */
                if (worker_pending(d->worker, v[i].name) > 0)
                        continue;
                if (strcmp(v[i].status, "failed") == 0)
                        continue;
                (void)submit(a, NULL, LIFECYCLE_CHECK, v[i].name, strcmp(v[i].role, "manager") == 0,
                             v[i].port, 0, false, NULL, false, false);
        }
        agent_records_free(v, n);
}

static void on_shutdown_stop(void *data)
{
        LifecycleJob *j = data;
        lifecycle_run(j);
        if (j->result < 0 && j->result != -ENOENT) /* ENOENT: never created */
                log_warning("stopping %s at shutdown: %s", j->agent.machine, j->error);
        lifecycle_job_free(j);
}

void actions_shutdown(Actions *a)
{
        Daemon *d = a->d;
        if (!d->containers || !d->containers->ops->supervised || !d->worker)
                return;
        AgentRecord *v = NULL;
        size_t n = 0;
        if (store_agent_list(d->store, &v, &n) < 0)
                return;
        for (size_t i = 0; i < n; i++) {
                LifecycleJob *j =
                        lifecycle_job_new(LIFECYCLE_STOP, d->containers, d->cfg, v[i].name,
                                          strcmp(v[i].role, "manager") == 0, (uint16_t)v[i].port);
                if (!j)
                        continue;
                j->grace_sec = SHUTDOWN_GRACE_SEC;
                if (worker_submit(d->worker, v[i].name, on_shutdown_stop, NULL, j) < 0)
                        lifecycle_job_free(j);
        }
        agent_records_free(v, n);
        worker_drain(d->worker);
}

int actions_new(Daemon *d, Actions **ret)
{
        Actions *a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        a->d = d;
        *ret = a;
        return 0;
}

Actions *actions_free(Actions *a)
{
        if (!a)
                return NULL;
        while (a->transients) {
                Transient *t = a->transients;
                a->transients = t->next;
                free(t->name);
                free(t);
        }
        free(a);
        return NULL;
}
