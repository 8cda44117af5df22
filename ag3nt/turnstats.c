/* The turn-stats database. */
#define LOG_SUBSYSTEM "ag3nt"

#include <errno.h>
#include <sqlite3.h>
#include <stdlib.h>

#include "cleanup.h"
#include "log.h"
#include "turnstats.h"

struct TurnStats {
        sqlite3 *db; /* NULL: disabled */
        sqlite3_stmt *insert;
};

static const char schema[] = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                             "CREATE TABLE IF NOT EXISTS turns ("
                             "  id INTEGER PRIMARY KEY,"
                             "  kind TEXT NOT NULL DEFAULT 'turn',"
                             "  model TEXT,"
                             "  wake_from TEXT,"
                             "  result TEXT NOT NULL,"
                             "  started_at INTEGER NOT NULL," /* unix ms */
                             "  ended_at INTEGER NOT NULL,"
                             "  duration_ms INTEGER NOT NULL,"
                             "  input_tokens INTEGER NOT NULL DEFAULT 0,"
                             "  output_tokens INTEGER NOT NULL DEFAULT 0,"
                             "  cache_read_tokens INTEGER NOT NULL DEFAULT 0,"
                             "  cache_creation_tokens INTEGER NOT NULL DEFAULT 0,"
                             "  context_tokens INTEGER NOT NULL DEFAULT 0,"
                             "  cost_usd REAL NOT NULL DEFAULT 0,"
                             "  tool_calls INTEGER NOT NULL DEFAULT 0,"
                             "  tool_counts_json TEXT NOT NULL DEFAULT '{}',"
                             "  open_threads INTEGER," /* NULL: unknown */
                             "  pending_reminders INTEGER,"
                             "  note TEXT);";

static void stats_drop(TurnStats *t, const char *what)
{
        log_warning("turn-stats database: %s: %s; turn stats are not recorded", what,
                    t->db ? sqlite3_errmsg(t->db) : "cannot open");
        sqlite3_finalize(t->insert);
        t->insert = NULL;
        sqlite3_close(t->db);
        t->db = NULL;
}

int turnstats_open(const char *path, TurnStats **ret)
{
        TurnStats *t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        *ret = t;
        if (sqlite3_open_v2(path, &t->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
            SQLITE_OK) {
                stats_drop(t, path);
                return 0;
        }
        sqlite3_busy_timeout(t->db, 2000);
        if (sqlite3_exec(t->db, schema, NULL, NULL, NULL) != SQLITE_OK) {
                stats_drop(t, "cannot set up the turns table");
                return 0;
        }
        if (sqlite3_prepare_v2(t->db,
                               "INSERT INTO turns (kind, model, wake_from, result, started_at, "
                               "ended_at, duration_ms, input_tokens, output_tokens, "
                               "cache_read_tokens, cache_creation_tokens, context_tokens, "
                               "cost_usd, tool_calls, tool_counts_json, open_threads, "
                               "pending_reminders, note) "
                               "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                               -1, &t->insert, NULL) != SQLITE_OK)
                stats_drop(t, "cannot prepare the insert");
        return 0;
}

TurnStats *turnstats_free(TurnStats *t)
{
        if (!t)
                return NULL;
        sqlite3_finalize(t->insert);
        sqlite3_close(t->db);
        free(t);
        return NULL;
}

static void bind_count(sqlite3_stmt *st, int i, int64_t v)
{
        if (v < 0)
                sqlite3_bind_null(st, i);
        else
                sqlite3_bind_int64(st, i, v);
}

int64_t turnstats_add(TurnStats *t, const TurnRow *row)
{
        if (!t->insert)
                return 0;
        _cleanup_free_ char *counts =
                row->tool_counts ? json_dumps(row->tool_counts, JSON_COMPACT | JSON_SORT_KEYS)
                                 : NULL;
        sqlite3_stmt *st = t->insert;
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        sqlite3_bind_text(st, 1, row->kind ? row->kind : "turn", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, row->model, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, row->wake_from, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, row->result ? row->result : "failed", -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, row->started_ms);
        sqlite3_bind_int64(st, 6, row->ended_ms);
        sqlite3_bind_int64(st, 7, row->ended_ms - row->started_ms);
        sqlite3_bind_int64(st, 8, row->input_tokens);
        sqlite3_bind_int64(st, 9, row->output_tokens);
        sqlite3_bind_int64(st, 10, row->cache_read_tokens);
        sqlite3_bind_int64(st, 11, row->cache_creation_tokens);
        sqlite3_bind_int64(st, 12, row->context_tokens);
        sqlite3_bind_double(st, 13, row->cost_usd);
        sqlite3_bind_int64(st, 14, row->tool_calls);
        sqlite3_bind_text(st, 15, counts ? counts : "{}", -1, SQLITE_STATIC);
        bind_count(st, 16, row->open_threads);
        bind_count(st, 17, row->pending_reminders);
        sqlite3_bind_text(st, 18, row->note, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) {
                log_warning("turn-stats database: cannot record the turn: %s",
                            sqlite3_errmsg(t->db));
                return 0;
        }
        return (int64_t)sqlite3_last_insert_rowid(t->db);
}
