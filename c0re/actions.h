/* Operator and manager actions on containers, shared by host.sock, the CLI and (later) the
 * dashboard: spawn, start, stop, kill, restart, destroy, purge_tombstone, set_paused.  Each
 * validates everything before its first side effect, records the operation as a transient
 * (so the crash watcher never mistakes it for a crash), hands the slow part to the
 * operations workers, and on completion records what the container looks like, publishes
 * events and reports back.  Also owns the crash policy: a container that stopped unasked is
 * reported to the manager and restarted at most CRASH_MAX_RESTARTS times in
 * CRASH_WINDOW_SEC, then marked failed.  Loop thread only. */
#pragma once

#include <jansson.h>
#include <stdbool.h>

#include "daemon.h"

#define MANAGER_AGENT      "hm1nd" /* the manager's name in the registry and its container */
#define CRASH_MAX_RESTARTS 3
#define CRASH_WINDOW_SEC   600

typedef struct Actions Actions;

/* Called once per action on the loop thread: r is 0 or a negative errno, error a sentence
 * when r < 0, output what the action produced (logs), else NULL (valid during the call
 * only). */
typedef void (*ActionDoneFn)(void *userdata, int r, const char *error, const char *output);

int actions_new(Daemon *d, Actions **ret);
/* Stops (SIGTERM, short grace) the containers the daemon supervises itself, so none outlives
 * a clean shutdown; call before the workers are freed.  Their wanted state is kept: the next
 * start-up starts them again. */
void actions_shutdown(Actions *a);
Actions *actions_free(Actions *a);

/* Each of these either refuses at once (a negative errno, a sentence in *ret_error, nothing
 * changed on disk or in the database) or returns 0 and calls done later, exactly once. */
int actions_spawn(Actions *a, const char *name, const char *parent, ActionDoneFn done,
                  void *userdata, char **ret_error);
/* names: NULL-terminated; NULL means the whole hive (every live agent and the manager). */
int actions_start(Actions *a, char **names, ActionDoneFn done, void *userdata, char **ret_error);
int actions_stop(Actions *a, char **names, bool graceful, ActionDoneFn done, void *userdata,
                 char **ret_error);
int actions_restart(Actions *a, const char *name, ActionDoneFn done, void *userdata,
                    char **ret_error);
int actions_destroy(Actions *a, const char *name, bool purge, ActionDoneFn done, void *userdata,
                    char **ret_error);
int actions_purge_tombstone(Actions *a, const char *name, ActionDoneFn done, void *userdata,
                            char **ret_error);
/* Rebuilds name's container from the meta flake and restarts it if it runs (after a deploy,
 * or the manager's `update`).  A transient "updating"; done may be NULL (the outcome is
 * logged and published either way). */
int actions_update(Actions *a, const char *name, ActionDoneFn done, void *userdata,
                   char **ret_error);
/* The last lines (1..500) of name's console or journal, as done's output. */
int actions_logs(Actions *a, const char *name, unsigned lines, ActionDoneFn done, void *userdata,
                 char **ret_error);
/* Writes or removes the pause marker (<state>/agents/<n>/state/hyperhive-paused) and records
 * it; immediate, idempotent, works on a stopped container. */
int actions_set_paused(Actions *a, const char *name, bool paused, char **ret_error);

/* Start-up: makes sure the manager exists (unless --no-manager), starts every container the
 * daemon should keep running, and learns the state of the others. */
int actions_boot(Actions *a);
/* Checks the containers that should run (name, or all when NULL) against the backend; a
 * stopped one is a crash.  Called by the crash watcher. */
void actions_sweep(Actions *a, const char *name);

/* In-flight operations: [{name, op, since}] (new reference). */
json_t *actions_transients(Actions *a);

/* Agent names: ^[a-z0-9]([a-z0-9-]{0,7}[a-z0-9])?$ (the container name h-<n> must fit in 11
 * characters). */
bool actions_name_valid(const char *name);
/* Names that are identities of their own and can never name an agent: manager, operator,
 * hive, reminder, hm1nd, self. */
bool actions_name_reserved(const char *name);
