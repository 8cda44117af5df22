/* One run of the model CLI: the files it reads (settings, MCP config, system prompt), its
 * argv, and the run itself: prompt on stdin, stdout and stderr pumped line by line, the
 * stream-json read for what the turn did (tools, usage, how it ended), SIGINT to cancel. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "settings.h"

/* The files serve writes into the run directory, named in the argv. */
#define RUNNER_SETTINGS_FILE "claude-settings.json"
#define RUNNER_MCP_FILE      "mcp-config.json"
#define RUNNER_PROMPT_FILE   "system-prompt.md"

typedef struct RunnerFiles {
        char *settings_path, *mcp_path, *prompt_path;
        char *allowed_tools; /* comma list for --allowedTools */
} RunnerFiles;

/* Writes the three files into run_dir (atomically, 0600): the settings, the MCP config (our
 * own server — self_exe with "mcp" — plus the servers of settings->extra_mcp, whose problems
 * are reported in *ret_warning, malloc'ed, and skipped), and the system prompt of the flavor.
 * Returns 0, or a negative errno with *ret_error. */
int runner_write_files(const Settings *s, const char *run_dir, const char *self_exe,
                       RunnerFiles *ret, char **ret_warning, char **ret_error);
void runner_files_done(RunnerFiles *f);

/* The model CLI's argv for one run (NULL-terminated, malloc'ed strings). */
char **runner_argv(const Settings *s, const RunnerFiles *f, const char *model, bool resume);

typedef struct RunnerHooks {
        void *userdata;
        /* The process started (its group id, to signal it) / ended. */
        void (*started)(void *userdata, pid_t pgid);
        /* One line of stdout (is_stderr false) or stderr, without its newline; json is the
         * parsed stdout line (NULL when it is not JSON or for stderr). */
        void (*line)(void *userdata, bool is_stderr, const char *line, const json_t *json);
        /* Polled every 200 ms and after every line: 0 go on, 1 cancel (SIGINT to the group,
         * then SIGTERM after 10 s, SIGKILL after 5 more), 2 stop now (SIGTERM, SIGKILL after
         * 5 s). */
        int (*should_stop)(void *userdata);
} RunnerHooks;

typedef struct RunnerResult {
        int exit_code;  /* exit status, 128+N when killed by signal N, -1 not started */
        bool cancelled; /* should_stop asked for it */
        bool got_result;
        bool is_error;
        char *result_text; /* the result line's "result", or NULL */
        bool prompt_too_long, rate_limited, needs_login, no_conversation;
        int64_t input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens;
        int64_t context_tokens; /* of the last assistant message: input + cache read + created */
        double cost_usd;
        int64_t tool_calls;
        json_t *tool_counts; /* {"mcp__hyperhive__send": 1} */
        char *status_text;   /* the last set_status the turn called, or NULL */
        char *stderr_tail;   /* the last stderr lines (4 KiB) */
} RunnerResult;

/* Runs argv with prompt on stdin in cwd, env (NULL: ours) — blocking until it exited.
 * Returns 0 (whatever the CLI did: see *res), or a negative errno when it could not start
 * (-ENOENT: no such program) with res->exit_code -1. */
int runner_run(char *const *argv, const char *cwd, char *const *env, const char *prompt,
               const RunnerHooks *hooks, RunnerResult *res);
void runner_result_done(RunnerResult *r);
