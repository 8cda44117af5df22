/* sqlite storage.  Library codes are translated to negative errnos here and nowhere else;
 * sqlite's message is logged at debug level, the caller decides what to tell a person. */
#define LOG_SUBSYSTEM "store"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"
#include "store.h"
#include "timeutil.h"
#include "walbuf.h"

#define STMT_CACHE_SIZE 64

struct Store {
        sqlite3 *db;
        struct {
                const char *sql;
                sqlite3_stmt *st;
        } stmts[STMT_CACHE_SIZE];
        bool batch_open;
        bool batch_durable;
        int sync_mode; /* the synchronous pragma in force: 1 NORMAL, 2 FULL */
        int wal_frames;
        /* Deferred flushing (store_defer_flush): durable writes made, those committed, and
         * whether a flush of the committed ones is owed. */
        bool defer_flush;
        uint64_t durable_seq, committed_seq;
        bool flush_owed;
};

/* Forward-only migrations: entry i moves the schema from version i to i+1.  Never edit a
 * migration that has shipped; append a new one. */
static const char *const migrations[] = {
        /* 0 → 1: the agent registry. */
        "CREATE TABLE agents ("
        "  id INTEGER PRIMARY KEY,"
        "  name TEXT NOT NULL,"
        "  role TEXT NOT NULL DEFAULT 'agent' CHECK (role IN ('agent','manager')),"
        "  created_at INTEGER NOT NULL,"
        "  destroyed_at INTEGER,"
        "  paused INTEGER NOT NULL DEFAULT 0,"
        "  parent TEXT,"
        "  status TEXT NOT NULL DEFAULT 'stopped',"
        "  status_text TEXT,"
        "  status_set_at INTEGER,"
        "  active_model TEXT,"
        "  port INTEGER,"
        "  deployed_sha TEXT"
        ");"
        "CREATE UNIQUE INDEX agents_live_name ON agents(name) WHERE destroyed_at IS NULL;",
        /* 1 → 2: the broker's messages.  Times are unix milliseconds. */
        "CREATE TABLE messages ("
        "  id INTEGER PRIMARY KEY AUTOINCREMENT," /* ids are never reused after a vacuum */
        "  sender TEXT NOT NULL,"
        "  recipient TEXT NOT NULL,"
        "  body TEXT NOT NULL,"
        "  in_reply_to INTEGER,"
        "  sent_at INTEGER NOT NULL,"
        "  leased_until INTEGER,"
        "  delivered_at INTEGER,"
        "  deliveries INTEGER NOT NULL DEFAULT 0,"
        "  acked_at INTEGER"
        ");"
        "CREATE INDEX messages_inbox ON messages(recipient, id) WHERE acked_at IS NULL;"
        "CREATE INDEX messages_recent_to ON messages(recipient, sent_at);"
        "CREATE INDEX messages_recent_from ON messages(sender, sent_at);"
        "CREATE INDEX messages_acked ON messages(acked_at) WHERE acked_at IS NOT NULL;",
        /* 2 → 3: questions and reminders.  Times are unix milliseconds. */
        "CREATE TABLE questions ("
        "  id INTEGER PRIMARY KEY,"
        "  asker TEXT NOT NULL,"
        "  target TEXT NOT NULL,"
        "  question TEXT NOT NULL,"
        "  options_json TEXT,"
        "  multi INTEGER NOT NULL DEFAULT 0,"
        "  asked_at INTEGER NOT NULL,"
        "  deadline_at INTEGER,"
        "  answered_at INTEGER,"
        "  answer TEXT,"
        "  answerer TEXT"
        ");"
        "CREATE INDEX questions_open ON questions(deadline_at) WHERE answered_at IS NULL;"
        "CREATE TABLE reminders ("
        "  id INTEGER PRIMARY KEY,"
        "  agent TEXT NOT NULL,"
        "  message TEXT NOT NULL,"
        "  file_path TEXT,"
        "  due_at INTEGER NOT NULL,"
        "  created_at INTEGER NOT NULL,"
        "  sent_at INTEGER,"
        "  cancelled_at INTEGER,"
        "  attempt_count INTEGER NOT NULL DEFAULT 0,"
        "  last_error TEXT"
        ");"
        "CREATE INDEX reminders_due ON reminders(due_at) "
        "  WHERE sent_at IS NULL AND cancelled_at IS NULL;",
        /* 3 → 4: containers.  status is what the daemon last saw (stopped, running,
         * failed), wanted what it keeps them at; crashes feed the restart budget. */
        "ALTER TABLE agents ADD COLUMN wanted TEXT NOT NULL DEFAULT 'stopped' "
        "  CHECK (wanted IN ('stopped','running'));"
        "ALTER TABLE agents ADD COLUMN failed_log TEXT;"
        "ALTER TABLE agents ADD COLUMN purged_at INTEGER;"
        "CREATE TABLE crashes ("
        "  id INTEGER PRIMARY KEY,"
        "  agent TEXT NOT NULL,"
        "  at INTEGER NOT NULL,"
        "  detail TEXT NOT NULL,"
        "  outcome TEXT NOT NULL" /* restarted, failed */
        ");"
        "CREATE INDEX crashes_agent ON crashes(agent, at);",
        /* 4 → 5: approvals.  phase is set while the pipeline of an approved request runs
         * (prepare, build, finalize, abort), so start-up finds one a killed daemon left. */
        "CREATE TABLE approvals ("
        "  id INTEGER PRIMARY KEY AUTOINCREMENT," /* tags name ids: never reuse one */
        "  agent TEXT NOT NULL,"
        "  kind TEXT NOT NULL CHECK (kind IN ('apply_commit','spawn','update_meta_inputs')),"
        "  status TEXT NOT NULL DEFAULT 'pending' "
        "    CHECK (status IN ('pending','approved','denied','failed','cancelled')),"
        "  commit_ref TEXT NOT NULL DEFAULT '',"
        "  fetched_sha TEXT,"
        "  base_sha TEXT,"
        "  requested_at INTEGER NOT NULL,"
        "  resolved_at INTEGER,"
        "  note TEXT,"
        "  description TEXT,"
        "  diff TEXT,"
        "  phase TEXT,"
        "  build_log TEXT"
        ");"
        "CREATE INDEX approvals_open ON approvals(status) WHERE status = 'pending' "
        "  OR phase IS NOT NULL;"
        /* a rebuild would change what the container runs (meta inputs were updated) */
        "ALTER TABLE agents ADD COLUMN needs_update INTEGER NOT NULL DEFAULT 0;",
        /* 5 → 6: the harness reports that the model CLI has no valid session
         * (set_harness_state); active_model, which it also reports, exists since 1. */
        "ALTER TABLE agents ADD COLUMN needs_login INTEGER NOT NULL DEFAULT 0;",
        /* 6 → 7: the answers to client request ids (request_ids.c), so that a request sent
         * again after a lost answer is answered, not carried out twice.  at is unix
         * milliseconds; rows are vacuumed after a day. */
        "CREATE TABLE request_ids ("
        "  agent TEXT NOT NULL,"
        "  request_id TEXT NOT NULL,"
        "  cmd TEXT NOT NULL,"
        "  answer TEXT NOT NULL,"
        "  at INTEGER NOT NULL,"
        "  PRIMARY KEY (agent, request_id)"
        ") WITHOUT ROWID;"
        "CREATE INDEX request_ids_at ON request_ids(at);",
        /* 7 → 8: the indexes behind `recent` become (recipient) and (sender).  With the row
         * id as their last column they give a party's newest messages without reading and
         * sorting its whole history; sent_at in them served no query. */
        "DROP INDEX messages_recent_to;"
        "DROP INDEX messages_recent_from;"
        "CREATE INDEX messages_to ON messages(recipient);"
        "CREATE INDEX messages_from ON messages(sender);",
        /* 8 → 9: the indexes behind `recent` key a message by its block of 1 024 ids first,
         * then by party.  Keyed by party alone, every send changed an index page of its own
         * for its recipient and one for its sender, each written to the WAL, flushed and
         * copied back; now the sends of a moment share the few pages of the newest block.
         * broker_recent looks a party up block by block, newest first. */
        "DROP INDEX messages_to;"
        "DROP INDEX messages_from;"
        "CREATE INDEX messages_to ON messages(id >> 10, recipient);"
        "CREATE INDEX messages_from ON messages(id >> 10, sender);",
};

int store_sqlite_errno(Store *s, int rc, const char *what)
{
        int r;
        switch (rc & 0xff) {
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                r = -EBUSY;
                break;
        case SQLITE_CONSTRAINT:
                r = -EEXIST;
                break;
        case SQLITE_NOMEM:
                r = -ENOMEM;
                break;
        case SQLITE_FULL:
                r = -ENOSPC;
                break;
        case SQLITE_READONLY:
                r = -EROFS;
                break;
        case SQLITE_CANTOPEN:
        case SQLITE_PERM:
                r = -EACCES;
                break;
        case SQLITE_NOTFOUND:
                r = -ENOENT;
                break;
        default:
                r = -EIO;
        }
        return log_debug_errno(r, "%s: %s", what, s && s->db ? sqlite3_errmsg(s->db) : "?");
}

static int store_exec(Store *s, const char *sql)
{
        char *err = NULL;
        int rc = sqlite3_exec(s->db, sql, NULL, NULL, &err);
        if (rc != SQLITE_OK) {
                log_debug("exec failed: %s", err ? err : "?");
                sqlite3_free(err);
                return store_sqlite_errno(s, rc, "exec");
        }
        return 0;
}

int store_schema_version(void)
{
        return (int)ELEMENTSOF(migrations);
}

int store_get_version(Store *s, int *ret)
{
        sqlite3_stmt *st = NULL;
        int rc = sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL);
        if (rc != SQLITE_OK)
                return store_sqlite_errno(s, rc, "user_version");
        rc = sqlite3_step(st);
        int v = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
        if (rc != SQLITE_ROW)
                return store_sqlite_errno(s, rc, "user_version");
        *ret = v;
        return 0;
}

static int store_migrate(Store *s)
{
        int v, r = store_get_version(s, &v);
        if (r < 0)
                return r;
        if (v > store_schema_version())
                return log_error_errno(-EPROTONOSUPPORT,
                                       "database schema version %d is newer than this hive-c0re "
                                       "understands (%d); run a newer hive-c0re",
                                       v, store_schema_version());
        if (v > 0 && v < store_schema_version())
                log_info("upgrading the database from schema version %d to %d (a large one "
                         "may take a few seconds)",
                         v, store_schema_version());
        for (; v < store_schema_version(); v++) {
                r = store_exec(s, "BEGIN IMMEDIATE");
                if (r < 0)
                        return r;
                r = store_exec(s, migrations[v]);
                if (r >= 0) {
                        char sql[64];
                        snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", v + 1);
                        r = store_exec(s, sql);
                }
                if (r >= 0)
                        r = store_exec(s, "COMMIT");
                if (r < 0) {
                        (void)store_exec(s, "ROLLBACK");
                        return log_error_errno(r, "migrating the database to version %d failed",
                                               v + 1);
                }
                log_debug("migrated database to schema version %d", v + 1);
        }
        return 0;
}

/* The VFS every store opens with: sqlite's default, with each transaction's WAL writes
 * coalesced into one write (walbuf.h); NULL (the default itself) if it could not be set up. */
static const char *store_vfs;

/* sqlite counts every allocation under a global mutex unless told not to; nothing here reads
 * those counts.  Has to run before sqlite initialises (else it is refused, harmlessly). */
static void store_configure_sqlite(void)
{
        (void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
        int r = walbuf_register("hive-walbuf", NULL);
        if (r < 0)
                log_warning_errno(r, "cannot set up WAL write coalescing, writing unbuffered: %m");
        else
                store_vfs = "hive-walbuf";
}

int store_open(const char *path, Store **ret)
{
        static pthread_once_t once = PTHREAD_ONCE_INIT;
        pthread_once(&once, store_configure_sqlite);
        Store *s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        int rc = sqlite3_open_v2(path, &s->db,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                 store_vfs);
        int r;
        if (rc != SQLITE_OK) {
                r = store_sqlite_errno(s, rc, "open");
                goto fail;
        }
        sqlite3_busy_timeout(s->db, 5000);
        /* Small pages: every commit writes its dirty pages whole into the WAL, and the
         * broker's rows are small.  Only takes effect when the file is created. */
        r = store_exec(s, "PRAGMA page_size=1024; PRAGMA journal_mode=WAL; "
                          "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;");
        s->sync_mode = 2;
        if (r < 0)
                goto fail;
        r = store_migrate(s);
        if (r < 0)
                goto fail;
        *ret = s;
        return 0;
fail:
        store_close(s);
        return r;
}

Store *store_close(Store *s)
{
        if (!s)
                return NULL;
        if (s->batch_open)
                (void)store_batch_commit(s);
        for (size_t i = 0; i < STMT_CACHE_SIZE; i++)
                sqlite3_finalize(s->stmts[i].st);
        sqlite3_close_v2(s->db);
        free(s);
        return NULL;
}

static char *col_strdup(sqlite3_stmt *st, int i)
{
        const unsigned char *t = sqlite3_column_text(st, i);
        return t ? strdup((const char *)t) : NULL;
}

void agent_record_done(AgentRecord *a)
{
        free(a->name);
        free(a->role);
        free(a->parent);
        free(a->status);
        free(a->status_text);
        free(a->active_model);
        free(a->deployed_sha);
        free(a->wanted);
        free(a->failed_log);
        *a = (AgentRecord){0};
}

void agent_records_free(AgentRecord *a, size_t n)
{
        for (size_t i = 0; i < n; i++)
                agent_record_done(&a[i]);
        free(a);
}

#define AGENT_COLUMNS                                                                              \
        "name, role, created_at, COALESCE(destroyed_at, 0), paused, parent, status, "              \
        "status_text, COALESCE(status_set_at, 0), active_model, COALESCE(port, 0), deployed_sha, " \
        "wanted, failed_log, needs_update, needs_login"

static int agent_from_row(sqlite3_stmt *st, AgentRecord *a)
{
        *a = (AgentRecord){
                .name = col_strdup(st, 0),
                .role = col_strdup(st, 1),
                .created_at = sqlite3_column_int64(st, 2),
                .destroyed_at = sqlite3_column_int64(st, 3),
                .paused = sqlite3_column_int(st, 4) != 0,
                .parent = col_strdup(st, 5),
                .status = col_strdup(st, 6),
                .status_text = col_strdup(st, 7),
                .status_set_at = sqlite3_column_int64(st, 8),
                .active_model = col_strdup(st, 9),
                .port = sqlite3_column_int64(st, 10),
                .deployed_sha = col_strdup(st, 11),
                .wanted = col_strdup(st, 12),
                .failed_log = col_strdup(st, 13),
                .needs_update = sqlite3_column_int(st, 14) != 0,
                .needs_login = sqlite3_column_int(st, 15) != 0,
        };
        if (!a->name || !a->role || !a->status || !a->wanted) {
                agent_record_done(a);
                return -ENOMEM;
        }
        return 0;
}

int store_agent_list(Store *s, AgentRecord **ret, size_t *ret_n)
{
        sqlite3_stmt *st = NULL;
        int rc = sqlite3_prepare_v2(s->db,
                                    "SELECT " AGENT_COLUMNS " FROM agents "
                                    "WHERE destroyed_at IS NULL ORDER BY name",
                                    -1, &st, NULL);
        if (rc != SQLITE_OK)
                return store_sqlite_errno(s, rc, "list agents");

        AgentRecord *v = NULL;
        size_t n = 0, cap = 0;
        int r = 0;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                if (n == cap) {
                        size_t ncap = cap ? cap * 2 : 16;
                        AgentRecord *nv = realloc(v, ncap * sizeof(*nv));
                        if (!nv) {
                                r = -ENOMEM;
                                break;
                        }
                        v = nv;
                        cap = ncap;
                }
                r = agent_from_row(st, &v[n]);
                if (r < 0)
                        break;
                n++;
        }
        if (r == 0 && rc != SQLITE_DONE)
                r = store_sqlite_errno(s, rc, "list agents");
        sqlite3_finalize(st);
        if (r < 0) {
                agent_records_free(v, n);
                return r;
        }
        *ret = v;
        *ret_n = n;
        return 0;
}

int store_agent_names(Store *s, char ***ret)
{
        AgentRecord *a = NULL;
        size_t n = 0;
        int r = store_agent_list(s, &a, &n);
        if (r < 0)
                return r;
        char **names = calloc(n + 1, sizeof(char *));
        if (!names) {
                agent_records_free(a, n);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++)
                names[i] = TAKE_PTR(a[i].name);
        agent_records_free(a, n);
        *ret = names;
        return 0;
}

int store_agent_get(Store *s, const char *name, AgentRecord *ret)
{
        sqlite3_stmt *st = NULL;
        /* From the statement cache: every send looks its recipient up. */
        int r = store_stmt(s,
                           "SELECT " AGENT_COLUMNS " FROM agents "
                           "WHERE destroyed_at IS NULL AND name = ?1",
                           &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
                r = agent_from_row(st, ret);
        else if (rc == SQLITE_DONE)
                r = -ENOENT;
        else
                r = store_sqlite_errno(s, rc, "get agent");
        store_stmt_done(st);
        return r;
}

static void bind_text_or_null(sqlite3_stmt *st, int i, const char *v)
{
        if (v)
                sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
        else
                sqlite3_bind_null(st, i);
}

static void bind_int_or_null(sqlite3_stmt *st, int i, int64_t v)
{
        if (v)
                sqlite3_bind_int64(st, i, v);
        else
                sqlite3_bind_null(st, i);
}

int store_agent_insert(Store *s, const AgentRecord *a)
{
        int w = store_batch_write(s, true);
        if (w < 0)
                return w;
        sqlite3_stmt *st = NULL;
        int rc = sqlite3_prepare_v2(
                s->db,
                "INSERT INTO agents (name, role, created_at, paused, parent, status, "
                "status_text, status_set_at, active_model, port, deployed_sha, wanted) "
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                -1, &st, NULL);
        if (rc != SQLITE_OK)
                return store_sqlite_errno(s, rc, "insert agent");
        sqlite3_bind_text(st, 1, a->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, a->role ? a->role : "agent", -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, a->created_at ? a->created_at : timeutil_now());
        sqlite3_bind_int(st, 4, a->paused);
        bind_text_or_null(st, 5, a->parent);
        sqlite3_bind_text(st, 6, a->status ? a->status : "stopped", -1, SQLITE_STATIC);
        bind_text_or_null(st, 7, a->status_text);
        bind_int_or_null(st, 8, a->status_set_at);
        bind_text_or_null(st, 9, a->active_model);
        bind_int_or_null(st, 10, a->port);
        bind_text_or_null(st, 11, a->deployed_sha);
        sqlite3_bind_text(st, 12, a->wanted ? a->wanted : "stopped", -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
                return store_sqlite_errno(s, rc, "insert agent");
        return 0;
}

int store_agent_set_paused(Store *s, const char *name, bool paused)
{
        int w = store_batch_write(s, true);
        if (w < 0)
                return w;
        sqlite3_stmt *st = NULL;
        int rc = sqlite3_prepare_v2(s->db,
                                    "UPDATE agents SET paused = ?2 "
                                    "WHERE destroyed_at IS NULL AND name = ?1",
                                    -1, &st, NULL);
        if (rc != SQLITE_OK)
                return store_sqlite_errno(s, rc, "set paused");
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, paused);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
                return store_sqlite_errno(s, rc, "set paused");
        return sqlite3_changes(s->db) > 0 ? 0 : -ENOENT;
}

struct sqlite3 *store_db(Store *s)
{
        return s->db;
}

int64_t store_now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int store_set_sync(Store *s, int mode)
{
        if (s->sync_mode == mode)
                return 0;
        int r = store_exec(s, mode == 2 ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
        if (r >= 0)
                s->sync_mode = mode;
        return r;
}

/* BEGIN, COMMIT and the savepoints come from the statement cache: parsed once, not on every
 * batch. */
static const char sql_begin[] = "BEGIN IMMEDIATE";
static const char sql_commit[] = "COMMIT";

static int store_step_cached(Store *s, const char *sql)
{
        sqlite3_stmt *st = NULL;
        int r = store_stmt(s, sql, &st);
        if (r < 0)
                return r;
        int rc = sqlite3_step(st);
        store_stmt_done(st);
        return rc == SQLITE_DONE ? 0 : store_sqlite_errno(s, rc, sql);
}

int store_batch_write(Store *s, bool durable)
{
        if (durable)
                s->durable_seq++;
        if (s->batch_open && durable && !s->batch_durable) {
                if (s->defer_flush) {
                        s->batch_durable = true; /* one pragma for all: the commit never flushes */
                        return 0;
                }
                /* synchronous cannot change inside a transaction: close this one unflushed */
                int r = store_batch_commit(s);
                if (r < 0)
                        return r;
        }
        if (s->batch_open)
                return 0;
        int r = store_set_sync(s, durable && !s->defer_flush ? 2 : 1);
        if (r < 0)
                return r;
        r = store_step_cached(s, sql_begin);
        if (r < 0)
                return r;
        s->batch_open = true;
        s->batch_durable = durable;
        return 0;
}

bool store_batch_open(Store *s)
{
        return s->batch_open;
}

int store_batch_commit(Store *s)
{
        if (!s->batch_open)
                return 0;
        s->batch_open = false;
        int r = store_step_cached(s, sql_commit);
        if (r < 0) {
                log_error_errno(r, "commit failed: %m");
                (void)store_exec(s, "ROLLBACK");
        }
        if (s->batch_durable && s->defer_flush) {
                /* After a rollback too: whoever waits on these writes is answered after the
                 * (then empty) flush, with the commit's error. */
                s->committed_seq = s->durable_seq;
                s->flush_owed = true;
        }
        return r;
}

void store_defer_flush(Store *s)
{
        s->defer_flush = true;
}

uint64_t store_durable_mark(Store *s)
{
        return s->durable_seq;
}

void store_need_flush(Store *s)
{
        s->durable_seq++;
        if (s->batch_open)
                s->batch_durable = true;
        else if (s->defer_flush) {
                s->committed_seq = s->durable_seq;
                s->flush_owed = true;
        }
}

bool store_take_flush(Store *s, uint64_t *ret_mark)
{
        if (!s->flush_owed)
                return false;
        s->flush_owed = false;
        *ret_mark = s->committed_seq;
        return true;
}

const char *store_wal_path(Store *s)
{
        const char *db = sqlite3_db_filename(s->db, "main");
        return db && *db ? sqlite3_filename_wal(db) : NULL;
}

static const char sql_savepoint[] = "SAVEPOINT op";
static const char sql_release[] = "RELEASE op";

int store_op_begin(Store *s)
{
        return store_step_cached(s, sql_savepoint);
}

int store_op_end(Store *s, int r)
{
        if (r < 0) {
                (void)store_exec(s, "ROLLBACK TO op");
                (void)store_exec(s, "RELEASE op");
                return r;
        }
        int k = store_step_cached(s, sql_release);
        return k < 0 ? k : r;
}

int store_agent_set_status(Store *s, const char *name, const char *text)
{
        int w = store_batch_write(s, true);
        if (w < 0)
                return w;
        sqlite3_stmt *st = NULL;
        int rc = sqlite3_prepare_v2(s->db,
                                    "UPDATE agents SET status_text = ?2, status_set_at = ?3 "
                                    "WHERE destroyed_at IS NULL AND name = ?1",
                                    -1, &st, NULL);
        if (rc != SQLITE_OK)
                return store_sqlite_errno(s, rc, "set status");
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        if (text) {
                sqlite3_bind_text(st, 2, text, -1, SQLITE_STATIC);
                sqlite3_bind_int64(st, 3, timeutil_now());
        }
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
                return store_sqlite_errno(s, rc, "set status");
        return sqlite3_changes(s->db) > 0 ? 0 : -ENOENT;
}

static int store_wal_hook(void *userdata, sqlite3 *db, const char *name, int frames)
{
        Store *s = userdata;
        s->wal_frames = frames;
        return SQLITE_OK;
}

int store_manual_checkpoints(Store *s)
{
        sqlite3_wal_hook(s->db, store_wal_hook, s); /* also turns the automatic one off */
        return 0;
}

int store_wal_frames(Store *s)
{
        return s->wal_frames;
}

int store_checkpoint(Store *s, int *ret_log, int *ret_done)
{
        int log = 0, done = 0;
        int rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY)
                return store_sqlite_errno(s, rc, "checkpoint");
        *ret_log = log;
        *ret_done = done;
        s->wal_frames = log;
        return 0;
}

/* Flushing a write that extends a file also writes its new size and block map: on an ext4
 * disk, an append flushed with fdatasync took 150-190 us against 90 us for the same write
 * over blocks the file had.  sqlite writes a WAL from its start again after every checkpoint
 * that copied it all, so once the file is long enough nothing is appended any more; writing
 * that length at the start brings this forward.  The zeros are safe: sqlite reads a WAL only
 * as far as its first frame without the header's salt and a valid checksum.  The write lock
 * (BEGIN IMMEDIATE) keeps every writer, in this process or another, from appending while the
 * zeros go in past the end. */
#define WAL_HEADER_BYTES       32
#define WAL_FRAME_HEADER_BYTES 24

static int prewrite_zeros(int fd, off_t from, off_t to)
{
        static char zeros[64 * 1024];
        for (off_t off = from; off < to;) {
                size_t n = (size_t)(to - off) < sizeof(zeros) ? (size_t)(to - off) : sizeof(zeros);
                ssize_t k = pwrite(fd, zeros, n, off);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return -errno;
                if (k == 0)
                        return -ENOSPC;
                off += k;
        }
        return fdatasync(fd) < 0 ? -errno : 0;
}

int store_prewrite_wal(Store *s, int frames, int64_t *ret_added)
{
        *ret_added = 0;
        const char *wal = store_wal_path(s);
        if (!wal || frames <= 0)
                return 0;
        if (s->batch_open)
                return -EBUSY;
        int64_t page = 0;
        int r = store_query_int64(s, "PRAGMA page_size", NULL, &page);
        if (r < 0)
                return r;
        int64_t want = WAL_HEADER_BYTES + (int64_t)frames * (page + WAL_FRAME_HEADER_BYTES);
        if (want > STORE_WAL_PREWRITE_MAX)
                want = STORE_WAL_PREWRITE_MAX;
        r = store_exec(s, "BEGIN IMMEDIATE");
        if (r < 0)
                return r;
        /* Its own descriptor is safe: sqlite keeps no locks on the WAL file itself. */
        _cleanup_close_ int fd = open(wal, O_WRONLY | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0)
                r = -errno;
        else if (st.st_size < want) {
                r = prewrite_zeros(fd, st.st_size, want);
                if (r < 0 && ftruncate(fd, st.st_size) < 0)
                        log_warning_errno(-errno, "cannot cut %s back to %lld bytes: %m", wal,
                                          (long long)st.st_size);
                else if (r == 0)
                        *ret_added = want - st.st_size;
        }
        int c = store_exec(s, "COMMIT"); /* nothing was written: only ends the lock */
        return r < 0 ? r : c;
}

int store_stmt(Store *s, const char *sql, sqlite3_stmt **ret)
{
        size_t i = 0;
        for (; i < STMT_CACHE_SIZE && s->stmts[i].sql; i++)
                if (s->stmts[i].sql == sql) {
                        *ret = s->stmts[i].st;
                        return 0;
                }
        sqlite3_stmt *st = NULL;
        int rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
        if (rc != SQLITE_OK)
                return store_sqlite_errno(s, rc, "prepare");
        if (i == STMT_CACHE_SIZE) {
                /* full: should not happen with our fixed set of statements; evict slot 0 */
                sqlite3_finalize(s->stmts[0].st);
                i = 0;
        }
        s->stmts[i].sql = sql;
        s->stmts[i].st = st;
        *ret = st;
        return 0;
}

void store_stmt_done(sqlite3_stmt *st)
{
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
}

int store_step_each_id(Store *s, sqlite3_stmt *st, const int64_t *ids, size_t n, const char *what)
{
        int changes = 0;
        for (size_t i = 0; i < n; i++) {
                sqlite3_bind_int64(st, 1, ids[i]);
                int rc = sqlite3_step(st);
                sqlite3_reset(st);
                if (rc != SQLITE_DONE)
                        return store_sqlite_errno(s, rc, what);
                changes += sqlite3_changes(s->db);
        }
        return changes;
}

int store_query_int64(Store *s, const char *sql, const char *text, int64_t *ret)
{
        sqlite3_stmt *st = NULL;
        int r = store_stmt(s, sql, &st);
        if (r < 0)
                return r;
        if (text)
                sqlite3_bind_text(st, 1, text, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
                *ret = sqlite3_column_int64(st, 0);
        store_stmt_done(st);
        return rc == SQLITE_ROW ? 0 : store_sqlite_errno(s, rc, "query");
}

/* Runs one durable UPDATE/INSERT/DELETE with text ?1, optional text ?2 and integer ?3.
 * Returns the number of rows changed or a negative errno. */
static int store_exec3(Store *s, const char *sql, const char *t1, const char *t2, int64_t i3,
                       const char *what)
{
        int w = store_batch_write(s, true);
        if (w < 0)
                return w;
        sqlite3_stmt *st = NULL;
        int r = store_stmt(s, sql, &st);
        if (r < 0)
                return r;
        bind_text_or_null(st, 1, t1);
        bind_text_or_null(st, 2, t2);
        sqlite3_bind_int64(st, 3, i3);
        int rc = sqlite3_step(st);
        store_stmt_done(st);
        if (rc != SQLITE_DONE)
                return store_sqlite_errno(s, rc, what);
        return sqlite3_changes(s->db);
}

int store_agent_set_state(Store *s, const char *name, const char *status, const char *wanted)
{
        int r = store_exec3(s,
                            "UPDATE agents SET status = ?2, "
                            "  failed_log = CASE WHEN ?2 = 'failed' THEN failed_log END "
                            "WHERE destroyed_at IS NULL AND name = ?1",
                            name, status, 0, "set agent state");
        if (r >= 0 && wanted)
                r = store_exec3(s,
                                "UPDATE agents SET wanted = ?2 "
                                "WHERE destroyed_at IS NULL AND name = ?1",
                                name, wanted, 0, "set wanted state");
        if (r < 0)
                return r;
        return r > 0 ? 0 : -ENOENT;
}

int store_agent_set_failed(Store *s, const char *name, const char *log)
{
        int r = store_exec3(s,
                            "UPDATE agents SET status = 'failed', failed_log = ?2 "
                            "WHERE destroyed_at IS NULL AND name = ?1",
                            name, log, 0, "mark agent failed");
        return r < 0 ? r : r > 0 ? 0 : -ENOENT;
}

int store_agent_set_deployed(Store *s, const char *name, const char *sha)
{
        int r = store_exec3(s,
                            "UPDATE agents SET deployed_sha = ?2 "
                            "WHERE destroyed_at IS NULL AND name = ?1",
                            name, sha, 0, "set deployed sha");
        return r < 0 ? r : r > 0 ? 0 : -ENOENT;
}

int store_agent_set_needs_update(Store *s, const char *name, bool needs)
{
        int r = store_exec3(s,
                            "UPDATE agents SET needs_update = ?3 "
                            "WHERE destroyed_at IS NULL AND (?1 IS NULL OR name = ?1)",
                            name, NULL, needs, "set needs_update");
        return r < 0 ? r : 0;
}

int store_agent_set_harness(Store *s, const char *name, int needs_login, const char *model)
{
        int w = store_batch_write(s, true);
        if (w < 0)
                return w;
        sqlite3_stmt *st = NULL;
        /* Only a row that would change is written: an unchanged report is not published. */
        int r = store_stmt(s,
                           "UPDATE agents SET needs_login = COALESCE(?2, needs_login), "
                           "  active_model = COALESCE(?3, active_model) "
                           "WHERE destroyed_at IS NULL AND name = ?1 "
                           "  AND (needs_login IS NOT COALESCE(?2, needs_login) "
                           "    OR active_model IS NOT COALESCE(?3, active_model))",
                           &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        if (needs_login >= 0)
                sqlite3_bind_int(st, 2, needs_login > 0);
        bind_text_or_null(st, 3, model);
        int rc = sqlite3_step(st);
        store_stmt_done(st);
        if (rc != SQLITE_DONE)
                return store_sqlite_errno(s, rc, "set harness state");
        if (sqlite3_changes(s->db) > 0)
                return 1;
        int64_t n = 0;
        r = store_query_int64(
                s, "SELECT COUNT(*) FROM agents WHERE destroyed_at IS NULL AND name = ?1", name,
                &n);
        if (r < 0)
                return r;
        return n > 0 ? 0 : -ENOENT;
}

int store_agent_destroy(Store *s, const char *name, bool purged)
{
        int64_t now = timeutil_now();
        int r = store_exec3(s,
                            "UPDATE agents SET destroyed_at = ?3, status = 'stopped', "
                            "  wanted = 'stopped', "
                            "  purged_at = CASE WHEN ?2 IS NOT NULL THEN ?3 END "
                            "WHERE destroyed_at IS NULL AND name = ?1",
                            name, purged ? "purged" : NULL, now, "destroy agent");
        return r < 0 ? r : r > 0 ? 0 : -ENOENT;
}

int store_agent_delete(Store *s, const char *name)
{
        int r = store_exec3(s, "DELETE FROM agents WHERE destroyed_at IS NULL AND name = ?1", name,
                            NULL, 0, "delete agent");
        return r < 0 ? r : r > 0 ? 0 : -ENOENT;
}

int store_agent_tombstoned(Store *s, const char *name, bool *ret)
{
        int64_t n = 0;
        int r = store_query_int64(s,
                                  "SELECT COUNT(*) FROM agents WHERE name = ?1 AND "
                                  "destroyed_at IS NOT NULL AND purged_at IS NULL",
                                  name, &n);
        if (r < 0)
                return r;
        *ret = n > 0;
        return 0;
}

int store_agent_purge(Store *s, const char *name)
{
        int r = store_exec3(s,
                            "UPDATE agents SET purged_at = ?3 WHERE name = ?1 AND "
                            "destroyed_at IS NOT NULL AND purged_at IS NULL",
                            name, NULL, timeutil_now(), "purge tombstone");
        return r < 0 ? r : r > 0 ? 0 : -ENOENT;
}

int store_crash_add(Store *s, const char *name, const char *detail, const char *outcome)
{
        int w = store_batch_write(s, true);
        if (w < 0)
                return w;
        sqlite3_stmt *st = NULL;
        int r = store_stmt(s,
                           "INSERT INTO crashes (agent, at, detail, outcome) "
                           "VALUES (?1, ?2, ?3, ?4)",
                           &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, store_now_ms());
        sqlite3_bind_text(st, 3, detail, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, outcome, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        store_stmt_done(st);
        return rc == SQLITE_DONE ? 0 : store_sqlite_errno(s, rc, "record crash");
}

int store_crash_count(Store *s, const char *name, int64_t since_ms, int64_t *ret)
{
        sqlite3_stmt *st = NULL;
        int r = store_stmt(s, "SELECT COUNT(*) FROM crashes WHERE agent = ?1 AND at >= ?2", &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, since_ms);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
                *ret = sqlite3_column_int64(st, 0);
        store_stmt_done(st);
        return rc == SQLITE_ROW ? 0 : store_sqlite_errno(s, rc, "count crashes");
}

int store_vacuum_step(Store *s, const char *sql, int64_t cutoff_ms, unsigned batch,
                      const char *what)
{
        int r = store_batch_write(s, false);
        if (r < 0)
                return r;
        sqlite3_stmt *st = NULL;
        r = store_stmt(s, sql, &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, cutoff_ms);
        sqlite3_bind_int(st, 2, (int)batch);
        int rc = sqlite3_step(st);
        store_stmt_done(st);
        if (rc != SQLITE_DONE)
                return store_sqlite_errno(s, rc, what);
        return sqlite3_changes(s->db);
}
