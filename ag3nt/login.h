/* The model CLI's login flow, driven over pipes for the agent page: `<model_bin> setup-token`
 * runs with its stdin, stdout and stderr on pipes; its output lines are published as `login`
 * events (and the sign-in URL picked out of them); the code the operator pastes on the page is
 * written to its stdin; the OAuth token it prints at the end is kept in
 * <state>/hyperhive-oauth-token (0600) and handed to later turns as CLAUDE_CODE_OAUTH_TOKEN.
 * Thread-safe. */
#pragma once

#include <jansson.h>
#include <stdbool.h>

#include "evbus.h"
#include "settings.h"

#define LOGIN_TOKEN_FILE "hyperhive-oauth-token"

typedef struct Login Login;

/* Called (from the login's reader thread) when a flow ends: ok says whether a token was
 * saved. */
typedef void (*LoginDoneFn)(void *userdata, bool ok);

int login_new(const Settings *s, EvBus *bus, LoginDoneFn done, void *userdata, Login **ret);
/* Cancels a running flow (its process is killed and reaped) and frees. */
Login *login_free(Login *l);

/* Starts a flow.  Returns 0, -EBUSY when one runs, or a negative errno with *ret_error. */
int login_start(Login *l, char **ret_error);
/* Writes code and a newline to the flow's stdin.  -ESRCH when no flow runs, -EINVAL for an
 * empty code or one with control characters. */
int login_code(Login *l, const char *code, char **ret_error);
/* Ends a running flow.  -ESRCH when none runs. */
int login_cancel(Login *l);

/* {active, url (or null), lines (the last 50 output lines), result (null, "ok", "failed",
 * "cancelled"), error (or null)}.  A new reference, or NULL on allocation failure. */
json_t *login_state(Login *l);

/* The saved token (malloc'ed), or NULL when there is none (or on allocation failure). */
char *login_token(const Settings *s);
