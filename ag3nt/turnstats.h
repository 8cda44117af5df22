/* One row per turn in <state>/hyperhive-turn-stats.sqlite: what woke the turn, how it ended,
 * what it cost and which tools it called.  Best effort: a database that cannot be opened or
 * written is logged and skipped; it never stops a turn. */
#pragma once

#include <jansson.h>
#include <stdint.h>

typedef struct TurnStats TurnStats;

typedef struct TurnRow {
        const char *model;
        const char *wake_from;        /* who woke the turn: an agent, "operator", "self", ... */
        const char *kind;             /* "turn" or "compact" */
        const char *result;           /* "ok", "failed", "cancelled", "rate_limited", "needs_login",
                                         "prompt_too_long" */
        int64_t started_ms, ended_ms; /* unix milliseconds */
        int64_t input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens;
        int64_t context_tokens;
        double cost_usd;
        int64_t tool_calls;
        const json_t *tool_counts; /* {"mcp__hyperhive__send": 2, ...}; NULL: {} */
        int64_t open_threads;      /* after the turn; -1: unknown */
        int64_t pending_reminders; /* after the turn; -1: unknown */
        const char *note;          /* why it failed, or NULL */
} TurnRow;

/* Opens (creating the table).  Never fails for a database problem (logged, then rows are
 * dropped); returns 0 or -ENOMEM. */
int turnstats_open(const char *path, TurnStats **ret);
TurnStats *turnstats_free(TurnStats *t);

/* Appends a row.  Returns its id, or 0 when it could not be written (logged). */
int64_t turnstats_add(TurnStats *t, const TurnRow *row);
