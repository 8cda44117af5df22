/* `hive-c0re serve`: the daemon's state and its run. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "config.h"
#include "loop.h"
#include "server.h"
#include "store.h"
#include "walflush.h"

typedef struct AgentServer AgentServer;
typedef struct Scheduler Scheduler;
typedef struct Events Events;
typedef struct Actions Actions;
typedef struct Backend Backend;
typedef struct CrashWatch CrashWatch;
typedef struct Worker Worker;

/* An event waiting for its round's commit (daemon_post_event). */
typedef struct DaemonEvent {
        const char *kind; /* a string literal */
        json_t *payload;
} DaemonEvent;

typedef struct Daemon {
        HiveConfig *cfg;
        Loop *loop;
        Store *store;
        WalFlush *walflush; /* the WAL flusher thread; NULL until serving */
        ServerGate *gate;   /* every socket's answers wait here for commit and flush */
        Server *host;
        AgentServer *agents;
        Events *events;
        DaemonEvent *pending_events; /* published once the round's batch commits */
        size_t n_pending_events, cap_pending_events;
        Scheduler *scheduler;
        int scheduler_fd; /* recipients the scheduler delivered to, one per line */
        LoopSource *scheduler_src;
        bool scheduler_dirty; /* kick the scheduler after the next commit */
        int wal_kick_frames;  /* WAL length when the scheduler was last asked to checkpoint */
        int64_t lease_ms;    /* how long a recv'd message stays leased before it is offered again */
        const char *backend; /* the chosen backend's name */
        Backend *containers; /* the chosen backend */
        Worker *worker;      /* operations workers */
        Actions *actions;
        CrashWatch *crash_watch;
        const char *backend_reason; /* why it was chosen */
        gid_t admin_gid;            /* hive-admin, or (gid_t)-1 when the group does not exist */
        int lock_fd;
        int signal_fd;
        LoopSource *signal_src;
} Daemon;

/* Queues an event for the bus; it is published after the current write batch commits (and
 * dropped if the commit fails).  kind must be a string literal (it is kept by pointer until
 * then).  Takes payload.  A no-op without a bus (unit tests). */
void daemon_post_event(Daemon *d, const char *kind, json_t *payload);
/* An agent's status row changed (agent_status_changed {name}, once per round). */
void daemon_agent_changed(Daemon *d, const char *name);

/* Runs the daemon until SIGTERM/SIGINT.  Returns 0 after a clean shutdown, or a negative
 * errno after logging why it could not start. */
int daemon_run(HiveConfig *cfg);
