/* Container operations over a backend, run on the operations workers. */
#define LOG_SUBSYSTEM "lifecycle"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "fsutil.h"
#include "lifecycle.h"
#include "log.h"
#include "markers.h"
#include "repos.h"

#define LOG_TAIL_LINES 20

static const char *const op_names[] = {
        [LIFECYCLE_CHECK] = "check",     [LIFECYCLE_BOOT] = "boot",
        [LIFECYCLE_SPAWN] = "spawn",     [LIFECYCLE_START] = "start",
        [LIFECYCLE_STOP] = "stop",       [LIFECYCLE_RESTART] = "restart",
        [LIFECYCLE_DESTROY] = "destroy", [LIFECYCLE_PURGE] = "purge",
        [LIFECYCLE_UPDATE] = "update",   [LIFECYCLE_LOGS] = "logs",
};

static const char *const op_transients[] = {
        [LIFECYCLE_CHECK] = "checking",     [LIFECYCLE_BOOT] = "starting",
        [LIFECYCLE_SPAWN] = "spawning",     [LIFECYCLE_START] = "starting",
        [LIFECYCLE_STOP] = "stopping",      [LIFECYCLE_RESTART] = "restarting",
        [LIFECYCLE_DESTROY] = "destroying", [LIFECYCLE_PURGE] = "purging",
        [LIFECYCLE_UPDATE] = "updating",    [LIFECYCLE_LOGS] = "reading logs",
};

const char *lifecycle_op_to_string(LifecycleOp op)
{
        return op_names[op];
}

const char *lifecycle_op_transient(LifecycleOp op)
{
        return op_transients[op];
}

LifecycleJob *lifecycle_job_new(LifecycleOp op, Backend *b, const HiveConfig *cfg, const char *name,
                                bool manager, uint16_t port)
{
        LifecycleJob *j = calloc(1, sizeof(*j));
        if (!j)
                return NULL;
        j->op = op;
        j->backend = b;
        j->cfg = cfg;
        j->seen = CONTAINER_GONE;
        BackendAgent *a = &j->agent;
        a->manager = manager;
        a->port = port;
        char *s = NULL;
        bool ok =
                (a->name = strdup(name)) &&
                asprintf((char **)&a->machine, manager ? "%s" : "h-%s", name) >= 0 &&
                asprintf((char **)&a->state_dir, "%s/agents/%s/state", cfg->state_dir, name) >= 0 &&
                (manager ? asprintf(&s, "%s/manager", cfg->run_dir)
                         : asprintf(&s, "%s/agents/%s", cfg->run_dir, name)) >= 0 &&
                (a->sock_dir = s) &&
                asprintf((char **)&a->log_path, "%s/agents/%s/console.log", cfg->state_dir, name) >=
                        0 &&
                asprintf((char **)&a->flake, "%s/meta#%s", cfg->state_dir, name) >= 0;
        if (!ok)
                return lifecycle_job_free(j);
        return j;
}

LifecycleJob *lifecycle_job_free(LifecycleJob *j)
{
        if (!j)
                return NULL;
        free((char *)j->agent.name);
        free((char *)j->agent.machine);
        free((char *)j->agent.state_dir);
        free((char *)j->agent.sock_dir);
        free((char *)j->agent.log_path);
        free((char *)j->agent.flake);
        strv_free(j->purge_dirs);
        free(j->meta_agents);
        strv_free(j->meta_names);
        free(j->deployed_sha);
        free(j->error);
        free(j->log_tail);
        free(j);
        return NULL;
}

/* Creates the container if the backend has none, then starts it. */
static char *marker_path(const LifecycleJob *j, const char *name)
{
        char *p = NULL;
        return asprintf(&p, "%s/%s", j->agent.state_dir, name) < 0 ? NULL : p;
}

static void markers_remove(const LifecycleJob *j)
{
        const char *names[] = {MARKER_STOP_REQUESTED, MARKER_QUIESCED};
        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                _cleanup_free_ char *p = marker_path(j, names[i]);
                if (p && unlink(p) < 0 && errno != ENOENT)
                        log_warning("cannot remove %s: %m", p);
        }
}

/* A graceful stop's first half: asks the harness to finish its turn and take no new one
 * (the stop marker), and waits until it says so (the quiesced marker) or quiesce_sec passed.
 * Only the harness knows the markers: a --agent-command payload is stopped at once. */
static void quiesce(LifecycleJob *j)
{
        Backend *b = j->backend;
        ContainerState st = CONTAINER_GONE;
        _cleanup_free_ char *ignored = NULL;
        if (j->cfg->agent_command || b->ops->status(b, &j->agent, &st, &ignored) < 0 ||
            st != CONTAINER_UP)
                return;
        _cleanup_free_ char *stop = marker_path(j, MARKER_STOP_REQUESTED);
        _cleanup_free_ char *done = marker_path(j, MARKER_QUIESCED);
        if (!stop || !done || fsutil_write_atomic(stop, "", 0, 0644) < 0) {
                log_warning("cannot ask %s to finish its turn; stopping it now", j->agent.machine);
                return;
        }
        log_info("waiting up to %u s for %s to finish its turn", j->quiesce_sec, j->agent.machine);
        for (unsigned i = 0; i < j->quiesce_sec * 10u; i++) {
                if (access(done, F_OK) == 0) {
                        log_debug("%s finished its turn", j->agent.machine);
                        return;
                }
                struct timespec ts = {.tv_nsec = 100000000L};
                nanosleep(&ts, NULL);
        }
        log_warning("%s did not finish its turn within %u s; stopping it anyway", j->agent.machine,
                    j->quiesce_sec);
}

static int ensure_started(LifecycleJob *j)
{
        Backend *b = j->backend;
        markers_remove(j);
        ContainerState st = CONTAINER_GONE;
        int r = b->ops->status(b, &j->agent, &st, &j->error);
        if (r < 0)
                return r;
        if (st == CONTAINER_UP)
                return 0;
        if (st == CONTAINER_GONE) {
                r = b->ops->create(b, &j->agent, &j->error);
                if (r < 0)
                        return r;
        }
        return b->ops->start(b, &j->agent, &j->error);
}

/* Spawn: adds the agent to the meta flake, pinned to its seed commit, and commits meta
 * ("spawn <n> <sha12>").  Only the nixos-container backend builds from meta; elsewhere a
 * host without nix skips this (the first approval adds the agent). */
static int spawn_into_meta(LifecycleJob *j)
{
        char sha[REPOS_SHA_HEX + 1];
        char *err = NULL;
        int r = repos_applied_sha(j->cfg, j->agent.name, "main", sha, &err);
        if (r < 0) {
                free(j->error);
                j->error = err;
                return r;
        }
        meta_lock();
        r = meta_write_flake(j->cfg, j->meta_agents, j->n_meta_agents, &err);
        if (r >= 0) {
                _cleanup_free_ char *log = NULL;
                r = meta_lock_agent(j->cfg, j->agent.name, sha, &log, &err);
        }
        _cleanup_free_ char *msg = NULL;
        if (r >= 0 && asprintf(&msg, "spawn %s %.12s", j->agent.name, sha) < 0)
                r = -ENOMEM;
        if (r >= 0)
                r = meta_commit(j->cfg, msg, &err);
        if (r < 0) {
                _cleanup_free_ char *ignored = NULL;
                (void)meta_restore(j->cfg, &ignored);
        }
        meta_unlock();
        if (r < 0) {
                bool needed = strcmp(j->backend->ops->name, "nixos-container") == 0;
                if (needed) {
                        free(j->error);
                        j->error = err;
                        return r;
                }
                log_warning("%s is not in the meta flake yet (its first approved change adds "
                            "it): %s",
                            j->agent.name, err ? err : strerror(-r));
                free(err);
                return 0;
        }
        j->deployed_sha = strdup(sha);
        return 0;
}

static int purge(LifecycleJob *j)
{
        for (char **d = j->purge_dirs; d && *d; d++) {
                int r = fsutil_rm_rf(*d);
                if (r < 0) {
                        free(j->error);
                        if (asprintf(&j->error, "cannot remove %s: %s", *d, strerror(-r)) < 0)
                                j->error = NULL;
                        return r;
                }
        }
        return 0;
}

static int run_op(LifecycleJob *j)
{
        Backend *b = j->backend;
        const BackendAgent *a = &j->agent;
        int r;
        switch (j->op) {
        case LIFECYCLE_CHECK:
                return 0;
        case LIFECYCLE_BOOT:
        case LIFECYCLE_START:
                return ensure_started(j);
        case LIFECYCLE_SPAWN:
                /* Its config repos first (kept from a tombstone if there is one). */
                r = repos_create(j->cfg, a->name, &j->error);
                if (r >= 0 && j->meta_agents)
                        r = spawn_into_meta(j);
                if (r < 0)
                        return r;
                r = b->ops->create(b, a, &j->error);
                if (r < 0)
                        return r;
                r = b->ops->start(b, a, &j->error);
                if (r < 0) {
                        _cleanup_free_ char *ignored = NULL;
                        int k = b->ops->destroy(b, a, &ignored);
                        if (k < 0)
                                log_warning("cleaning up %s after a failed start: %s", a->machine,
                                            ignored ? ignored : strerror(-k));
                }
                return r;
        case LIFECYCLE_STOP:
                if (j->quiesce_sec)
                        quiesce(j);
                r = b->ops->stop(b, a, j->grace_sec, &j->error);
                markers_remove(j);
                return r;
        case LIFECYCLE_RESTART:
                r = b->ops->stop(b, a, j->grace_sec, &j->error);
                if (r < 0)
                        return r;
                return ensure_started(j);
        case LIFECYCLE_DESTROY:
                r = b->ops->destroy(b, a, &j->error);
                if (r < 0 || !j->purge)
                        return r;
                return purge(j);
        case LIFECYCLE_PURGE:
                return purge(j);
        case LIFECYCLE_LOGS:
                return b->ops->logs ? b->ops->logs(b, a, j->lines, &j->log_tail) : -EOPNOTSUPP;
        case LIFECYCLE_UPDATE: {
                ContainerState st = CONTAINER_GONE;
                r = b->ops->status(b, a, &st, &j->error);
                if (r < 0 || st == CONTAINER_GONE)
                        return r; /* nothing to update: the next start builds it */
                r = b->ops->update(b, a, &j->error);
                if (r < 0 || st != CONTAINER_UP)
                        return r;
                r = b->ops->stop(b, a, j->grace_sec, &j->error);
                return r < 0 ? r : ensure_started(j);
        }
        }
        return -EINVAL;
}

void lifecycle_run(LifecycleJob *j)
{
        Backend *b = j->backend;
        log_debug("%s %s", lifecycle_op_to_string(j->op), j->agent.machine);
        j->result = run_op(j);
        if (j->result < 0 && !j->error &&
            asprintf(&j->error, "%s of %s failed: %s", lifecycle_op_to_string(j->op),
                     j->agent.machine, strerror(-j->result)) < 0)
                j->error = NULL;
        if (j->op == LIFECYCLE_PURGE || j->op == LIFECYCLE_LOGS)
                return;
        _cleanup_free_ char *ignored = NULL;
        ContainerState st = CONTAINER_GONE;
        if (b->ops->status(b, &j->agent, &st, &ignored) >= 0)
                j->seen = st;
        else
                j->seen = CONTAINER_DOWN; /* unknown: not running as far as we can tell */
        if (j->seen != CONTAINER_UP && b->ops->logs)
                (void)b->ops->logs(b, &j->agent, LOG_TAIL_LINES, &j->log_tail);
}
