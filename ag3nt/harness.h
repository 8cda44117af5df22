/* What `serve` shares between its turn loop and the agent page: the live state (turn state,
 * model, token usage, status text) and the operator's controls.  The turn loop (serve.c) owns
 * it; the web server (web.c) reads it and calls the controls from its own threads.  Every
 * function here is thread-safe. */
#pragma once

#include <jansson.h>
#include <stdbool.h>

#include "evbus.h"
#include "login.h"
#include "settings.h"

typedef struct Harness Harness;

/* The turn loop's state, shown as a badge and sent as turn_state_changed {state, detail?}. */
typedef enum {
        TURN_STARTING,     /* "starting": before the first recv */
        TURN_IDLE,         /* "idle": waiting for a message */
        TURN_RUNNING,      /* "running": the model CLI runs a turn */
        TURN_COMPACTING,   /* "compacting": the model CLI compacts the session */
        TURN_RATE_LIMITED, /* "rate_limited": sleeping after a rate limit */
        TURN_PAUSED,       /* "paused": the pause marker is there; no new turns */
        TURN_NEEDS_LOGIN,  /* "needs_login": the model CLI has no valid session */
        TURN_STOPPING,     /* "stopping": shutting down */
} TurnState;

const char *turn_state_name(TurnState s);

/* The snapshot GET /api/state returns, taken under one lock with the bus's seq, so a page
 * that drops stream events with seq <= snapshot.seq shows nothing twice and loses nothing:
 * {seq, label, flavor ("agent"|"manager"), version, model, turn_state, turn_detail,
 *  status_text, status_set_at, context_tokens, context_window_tokens, cost_usd, paused,
 *  needs_login, login (login_state()), turn ({from, body, unread, started_at} or null),
 *  dashboard_url (or null)}.  A new reference, or NULL on allocation failure. */
json_t *harness_state(Harness *h);

EvBus *harness_bus(Harness *h);
const Settings *harness_settings(Harness *h);
Login *harness_login(Harness *h);

/* POST /send: puts body into this agent's inbox as a message from "operator" (the socket
 * verb wake), on a connection of its own.  Returns 0 and *ret_id, or a negative errno with
 * *ret_error (malloc'ed) the daemon's sentence or what went wrong. */
int harness_send_operator(Harness *h, const char *body, int64_t *ret_id, char **ret_error);

/* POST /api/cancel: SIGINT to the running turn's process group.  Returns 0, or -ESRCH when
 * no turn runs. */
int harness_cancel_turn(Harness *h);

/* POST /api/compact: compacts the session now when idle, else right after the current
 * turn.  Returns 0. */
int harness_request_compact(Harness *h);

/* POST /api/new-session: the next turn starts a new session (no --continue).  Returns 0. */
int harness_request_new_session(Harness *h);

/* POST /api/model: the model later turns use, persisted in <state>/hyperhive-model and
 * published as model_changed {model}.  Returns 0, or -EINVAL with *ret_error for a name that
 * is empty, longer than 100 bytes or has characters outside [A-Za-z0-9._:@/[]-]. */
int harness_set_model(Harness *h, const char *model, char **ret_error);
