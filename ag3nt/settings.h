/* The harness's configuration: the environment its container sets, read through one typed
 * table (name, type, default, range, documentation) that also generates the help text and
 * docs/turn-loop.md's table. */
#pragma once

#include <stdint.h>
#include <stdio.h>

#include "markers.h"

/* Which binary runs: hive-ag3nt (a sub-agent) or hive-m1nd (the manager). */
typedef enum {
        HARNESS_AGENT,
        HARNESS_MANAGER,
} HarnessFlavor;

typedef struct Settings {
        HarnessFlavor flavor;
        char *socket;               /* HIVE_SOCKET: the agent socket */
        char *label;                /* HIVE_LABEL: this agent's name; NULL when unset */
        int64_t port;               /* HIVE_PORT: the agent page's port; 0 when unset */
        char *state_dir;            /* HIVE_STATE_DIR */
        char *model_bin;            /* HIVE_MODEL_BIN */
        char *operator_pronouns;    /* HIVE_OPERATOR_PRONOUNS; NULL when unset */
        int64_t reconnect_base_ms;  /* HIVE_RECONNECT_BASE_MS: the first reconnect delay */
        char *model;                /* HIVE_MODEL: the model when none was chosen on the page */
        char *run_dir;              /* HIVE_RUN_DIR: where serve writes the CLI's files; NULL: the
                                     * socket's directory */
        char *web_bind;             /* HIVE_WEB_BIND: the page's listening address */
        int64_t rate_limit_sleep_s; /* HIVE_RATE_LIMIT_SLEEP_SECS */
        int64_t recv_wait_s;        /* HIVE_RECV_WAIT_SECS: the long-poll of the turn loop */
        int64_t context_window;     /* HIVE_CONTEXT_WINDOW: tokens, for the page's badge */
        char *extra_mcp;            /* HIVE_EXTRA_MCP: extra MCP servers to merge */
        char *dashboard_url;        /* HIVE_DASHBOARD_URL: linked from the page; NULL unset */
} Settings;

/* The model chosen on the page, kept across restarts. */
#define SETTINGS_MODEL_FILE "hyperhive-model"

/* Fills *s from the environment (an empty variable counts as unset).  Returns 0, or -EINVAL
 * with *ret_error (malloc'ed) naming the variable and what it accepts; -ENOMEM.  *s needs
 * settings_done() only after success.  Does not log. */
int settings_load(Settings *s, HarnessFlavor flavor, char **ret_error);

void settings_done(Settings *s);

/* Prints one line per variable: name, default and meaning. */
void settings_print_help(FILE *f);

/* "<state_dir>/<name>", malloc'ed, or NULL on allocation failure. */
char *settings_state_path(const Settings *s, const char *name);

/* The directory serve writes the model CLI's files into: HIVE_RUN_DIR, else the directory of
 * HIVE_SOCKET.  Malloc'ed, or NULL on allocation failure. */
char *settings_run_dir(const Settings *s);

/* "hive-ag3nt" or "hive-m1nd". */
const char *settings_program(HarnessFlavor flavor);
