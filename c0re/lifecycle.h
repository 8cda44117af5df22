/* Container operations as the operations workers run them: each is a short sequence of
 * backend calls (spawn = create + start, cleaned up on failure; start creates a container that
 * is missing; restart = stop + start; destroy; purge of kept state) followed by a status
 * check, so the loop learns what the container looks like afterwards.  Runs on a worker
 * thread; touches no loop-owned state and no database. */
#pragma once

#include "backend.h"
#include "meta.h"

typedef enum LifecycleOp {
        LIFECYCLE_CHECK,   /* status only (the crash watcher) */
        LIFECYCLE_BOOT,    /* start-up: start it if it should run and does not */
        LIFECYCLE_SPAWN,   /* create + start; destroy again if either fails */
        LIFECYCLE_START,   /* create if missing, then start */
        LIFECYCLE_STOP,    /* stop (graceful: after the harness finished its turn) */
        LIFECYCLE_RESTART, /* stop, then start */
        LIFECYCLE_DESTROY, /* destroy the container; with purge also its kept state */
        LIFECYCLE_PURGE,   /* remove the kept state of a destroyed agent */
        LIFECYCLE_UPDATE,  /* rebuild from the meta flake; restart it if it runs */
        LIFECYCLE_LOGS,    /* the last `lines` lines of its log, into log_tail */
} LifecycleOp;

const char *lifecycle_op_to_string(LifecycleOp op);
/* The transient name the dashboard shows while op runs ("starting", …). */
const char *lifecycle_op_transient(LifecycleOp op);

typedef struct LifecycleJob {
        LifecycleOp op;
        Backend *backend;
        const HiveConfig *cfg;
        BackendAgent agent;   /* strings owned by the job */
        unsigned grace_sec;   /* stop, restart */
        unsigned quiesce_sec; /* stop: first let the harness finish its turn, this long at most */
        unsigned lines;       /* logs */
        bool purge;           /* destroy */
        char **purge_dirs;    /* destroy with purge, purge: directories removed (NULL-terminated) */
        /* spawn: every live agent (the new one included), for the meta flake */
        MetaAgent *meta_agents;
        size_t n_meta_agents;
        char **meta_names; /* owns the names in meta_agents */
        /* results */
        int result;          /* 0 or a negative errno */
        char *error;         /* sentence when result < 0 */
        ContainerState seen; /* what the container looked like afterwards */
        char *log_tail;      /* last log lines, when it was found not running */
        char *deployed_sha;  /* spawn: the seed commit it was deployed from */
        void *userdata;      /* the loop side's */
} LifecycleJob;

/* Builds a job for agent name (the manager is "hm1nd") with every path derived from cfg:
 * machine h-<name> (or hm1nd), state <state>/agents/<name>/state, socket dir
 * <run>/agents/<name> (or <run>/manager), console log <state>/agents/<name>/console.log, flake
 * <state>/meta#<name>.  Returns NULL when out of memory. */
LifecycleJob *lifecycle_job_new(LifecycleOp op, Backend *b, const HiveConfig *cfg, const char *name,
                                bool manager, uint16_t port);
LifecycleJob *lifecycle_job_free(LifecycleJob *j);

/* Runs the job (worker thread).  Sets result, error, seen and log_tail. */
void lifecycle_run(LifecycleJob *j);
