/* The daemon's sqlite database (hive.sqlite): WAL, synchronous=FULL, schema versioned with
 * PRAGMA user_version and forward-only migrations.  One Store per thread. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct Store Store;
struct sqlite3;
struct sqlite3_stmt;

/* One row of the agents table. */
typedef struct AgentRecord {
        char *name;
        char *role; /* "agent" or "manager" */
        int64_t created_at;
        int64_t destroyed_at; /* 0 = live */
        bool paused;
        char *parent;      /* NULL = root */
        char *status;      /* "stopped", "running", "failed" */
        char *status_text; /* NULL = unset */
        int64_t status_set_at;
        char *active_model; /* NULL = unset */
        int64_t port;       /* 0 = none yet */
        char *deployed_sha; /* full sha or NULL */
        char *wanted;       /* "stopped" or "running": what the daemon keeps it at */
        char *failed_log;   /* the last log lines kept when it was marked failed */
        bool needs_update;  /* the meta inputs changed since it was last built */
        bool needs_login;   /* the harness reported that the model CLI has no valid session */
} AgentRecord;

void agent_record_done(AgentRecord *a);
void agent_records_free(AgentRecord *a, size_t n);

/* Opens (creating if needed) the database at path and migrates it to the current schema.
 * path ":memory:" gives a private in-memory database.  Returns 0 and *ret, -EIO (with a log
 * line at debug level naming the sqlite error), -EPROTONOSUPPORT if the file's schema is
 * newer than this binary's. */
int store_open(const char *path, Store **ret);
/* Commits an open write batch, then closes.  Returns NULL. */
Store *store_close(Store *s);

/* The schema version this binary migrates to. */
int store_schema_version(void);
/* The database's user_version. */
int store_get_version(Store *s, int *ret);

/* Live agents (not destroyed), sorted by name.  *ret is a NULL-terminated vector. */
int store_agent_names(Store *s, char ***ret);
/* Live agents, sorted by name. */
int store_agent_list(Store *s, AgentRecord **ret, size_t *ret_n);
/* A live agent: 0, or -ENOENT. */
int store_agent_get(Store *s, const char *name, AgentRecord *ret);
/* Inserts a live agent: 0, or -EEXIST when a live agent has that name. */
int store_agent_insert(Store *s, const AgentRecord *a);
/* Sets (text) or clears (NULL) a live agent's status text, stamped now: 0, or -ENOENT. */
int store_agent_set_status(Store *s, const char *name, const char *text);
/* Sets the paused flag of a live agent: 0, or -ENOENT. */
int store_agent_set_paused(Store *s, const char *name, bool paused);

/* Records what was seen of a live agent's container (status "stopped", "running" or
 * "failed"; leaving "failed" drops the kept log) and, when wanted is non-NULL, what the daemon
 * keeps it at.  0 or -ENOENT. */
int store_agent_set_state(Store *s, const char *name, const char *status, const char *wanted);
/* Marks a live agent failed (restarts exhausted), keeping its last log lines. */
int store_agent_set_failed(Store *s, const char *name, const char *log);
/* Records the commit a live agent's container was last deployed from.  0 or -ENOENT. */
int store_agent_set_deployed(Store *s, const char *name, const char *sha);
/* Sets or clears needs_update of a live agent (every live agent when name is NULL). */
int store_agent_set_needs_update(Store *s, const char *name, bool needs);
/* Records what a live agent's harness reported: needs_login (1 or 0; -1 keeps it) and
 * active_model (NULL keeps it).  Returns 1 when the row changed, 0 when it already held
 * those values, or -ENOENT. */
int store_agent_set_harness(Store *s, const char *name, int needs_login, const char *model);
/* Ends a live agent: its row stays as a tombstone (state kept) unless purged.  -ENOENT. */
int store_agent_destroy(Store *s, const char *name, bool purged);
/* Removes a live agent's row entirely (a spawn that failed).  -ENOENT. */
int store_agent_delete(Store *s, const char *name);
/* Whether a destroyed, unpurged agent of that name left its state behind. */
int store_agent_tombstoned(Store *s, const char *name, bool *ret);
/* Marks the tombstones of name purged: 0, or -ENOENT when there is none. */
int store_agent_purge(Store *s, const char *name);
/* Crash history: one row per container that stopped unasked, outcome "restarted" or
 * "failed"; the count of those at or after since_ms. */
int store_crash_add(Store *s, const char *name, const char *detail, const char *outcome);
int store_crash_count(Store *s, const char *name, int64_t since_ms, int64_t *ret);

/* The connection, for subsystems that keep their own SQL (broker.c, …). */
struct sqlite3 *store_db(Store *s);
/* Translates a sqlite result code to a negative errno (logged at debug with what). */
int store_sqlite_errno(Store *s, int rc, const char *what);

/* A prepared statement for sql, cached on the connection (keyed by the string's address, so
 * sql must be a string literal).  Hand it back with store_stmt_done(), never finalize it. */
int store_stmt(Store *s, const char *sql, struct sqlite3_stmt **ret);
void store_stmt_done(struct sqlite3_stmt *st);

/* One bounded step of a vacuum: runs sql (a DELETE of at most ?2 rows older than ?1, a string
 * literal) in a write batch that is not flushed.  Returns the number of rows deleted, or a
 * negative errno (what names it in the log).  The caller commits. */
int store_vacuum_step(Store *s, const char *sql, int64_t cutoff_ms, unsigned batch,
                      const char *what);

/* Runs st once per id, with the id bound to ?1 (other parameters stay as bound).  Returns the
 * number of rows changed in all, or a negative errno (what names the step in the log). */
int store_step_each_id(Store *s, struct sqlite3_stmt *st, const int64_t *ids, size_t n,
                       const char *what);
/* A one-row, one-integer query (text bound to ?1 when non-NULL); SQL NULL reads as 0. */
int store_query_int64(Store *s, const char *sql, const char *text, int64_t *ret);

/* Write batches (group commit).  Every write made during one main-loop round joins one
 * transaction, committed once at the end of the round; answers to requests that wrote wait
 * for that commit.  store_batch_write() opens the batch if needed; durable writes make the
 * commit flush to disk (synchronous=FULL), others commit without a flush (NORMAL).  A
 * durable write joining a non-durable batch commits that batch first. */
int store_batch_write(Store *s, bool durable);
bool store_batch_open(Store *s);
/* Commits the open batch (no-op if none).  On failure the batch is rolled back. */
int store_batch_commit(Store *s);

/* Deferred flushing (the daemon's connection): from now on every commit is synchronous=NORMAL,
 * so it returns once the WAL frames are written but not flushed, and a durable write no longer
 * splits the batch.  The owner flushes the WAL itself (walflush.c), off the loop thread:
 * after a commit, store_take_flush() tells whether durable writes were committed and the
 * mark to flush up to; an answer that follows durable writes waits until the flush has
 * passed store_durable_mark() as it was when the answer was made.  A commit and an fdatasync
 * of the WAL file is exactly what synchronous=FULL does, only the wait moves elsewhere. */
void store_defer_flush(Store *s);
/* Durable writes made so far (a counter that only grows). */
uint64_t store_durable_mark(Store *s);
/* Counts as a durable write without writing: an answer built from what is stored (a repeated
 * request_id) waits for the flush like the first answer did. */
void store_need_flush(Store *s);
/* True once per commit of durable writes, with the mark a flush must reach to cover them. */
bool store_take_flush(Store *s, uint64_t *ret_mark);
/* The WAL file of the database, or NULL (in memory). */
const char *store_wal_path(Store *s);

/* Savepoints around one multi-statement operation inside a batch. */
int store_op_begin(Store *s);
int store_op_end(Store *s, int r); /* releases if r >= 0, rolls back otherwise; returns r */

/* Replaces sqlite's automatic WAL checkpoint (run by whichever commit crosses 1000 pages, on
 * the hot path) by manual ones: after this, store_wal_frames() tells how long the WAL is. */
int store_manual_checkpoints(Store *s);
/* Frames in the WAL after this connection's last commit (with manual checkpoints). */
int store_wal_frames(Store *s);
/* A passive checkpoint (never blocks writers).  Returns 0 with the WAL's frames and how many
 * of them are now in the database file, or a negative errno. */
int store_checkpoint(Store *s, int *ret_log, int *ret_done);

/* Writes zeros from the WAL file's end until it can hold `frames` frames (at most
 * STORE_WAL_PREWRITE_MAX bytes) and flushes them, so that commits up to that length overwrite
 * blocks the file already has instead of appending.  Holds the database's write lock
 * meanwhile.  Returns 0 with the bytes added (0 when the file was that long already), or a
 * negative errno, with the file cut back to its length before. */
#define STORE_WAL_PREWRITE_MAX (32 * 1024 * 1024)
int store_prewrite_wal(Store *s, int frames, int64_t *ret_added);

/* Milliseconds since the epoch (CLOCK_REALTIME). */
int64_t store_now_ms(void);
