/* The harness's configuration: the environment its container sets, read through one typed
 * table (name, type, default, range, documentation) that also generates the help text and
 * docs/turn-loop.md's table. */
#pragma once

#include <stdint.h>
#include <stdio.h>

/* Which binary runs: hive-ag3nt (a sub-agent) or hive-m1nd (the manager). */
typedef enum {
        HARNESS_AGENT,
        HARNESS_MANAGER,
} HarnessFlavor;

typedef struct Settings {
        HarnessFlavor flavor;
        char *socket;              /* HIVE_SOCKET: the agent socket */
        char *label;               /* HIVE_LABEL: this agent's name; NULL when unset */
        int64_t port;              /* HIVE_PORT: the agent page's port; 0 when unset */
        char *state_dir;           /* HIVE_STATE_DIR */
        char *model_bin;           /* HIVE_MODEL_BIN */
        char *operator_pronouns;   /* HIVE_OPERATOR_PRONOUNS; NULL when unset */
        int64_t reconnect_base_ms; /* HIVE_RECONNECT_BASE_MS: the first reconnect delay */
} Settings;

/* Name of the marker file request_next_turn creates in the state directory. */
#define SETTINGS_NEXT_TURN_FILE "hyperhive-next-turn"

/* Fills *s from the environment (an empty variable counts as unset).  Returns 0, or -EINVAL
 * with *ret_error (malloc'ed) naming the variable and what it accepts; -ENOMEM.  *s needs
 * settings_done() only after success.  Does not log. */
int settings_load(Settings *s, HarnessFlavor flavor, char **ret_error);

void settings_done(Settings *s);

/* Prints one line per variable: name, default and meaning. */
void settings_print_help(FILE *f);

/* "<state_dir>/<name>", malloc'ed, or NULL on allocation failure. */
char *settings_state_path(const Settings *s, const char *name);

/* "hive-ag3nt" or "hive-m1nd". */
const char *settings_program(HarnessFlavor flavor);
