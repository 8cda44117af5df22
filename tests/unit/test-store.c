/* Unit tests of the sqlite store (c0re/store.c), each on a fresh temp database file. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "store.h"
#include "testutil.h"

typedef struct Fixture {
        char *dir;
        char *db;
        Store *store;
} Fixture;

static int setup(void **state)
{
        Fixture *fx = calloc(1, sizeof(*fx));
        assert_non_null(fx);
        fx->dir = tu_mkdtemp();
        assert_true(asprintf(&fx->db, "%s/hive.sqlite", fx->dir) > 0);
        *state = fx;
        return 0;
}

static int teardown(void **state)
{
        Fixture *fx = *state;
        fx->store = store_close(fx->store);
        assert_int_equal(tu_rm_rf(fx->dir), 0);
        free(fx->db);
        free(fx->dir);
        free(fx);
        return 0;
}

static void open_store(Fixture *fx)
{
        assert_null(fx->store);
        assert_int_equal(store_open(fx->db, &fx->store), 0);
        assert_non_null(fx->store);
}

/* Opens the store and checks it was brought to the newest schema, at least version min. */
static void open_store_migrated(Fixture *fx, int min)
{
        open_store(fx);
        int v = -1;
        assert_int_equal(store_get_version(fx->store, &v), 0);
        assert_int_equal(v, store_schema_version());
        assert_true(v >= min);
}

static void insert(Store *s, const char *name, const char *status)
{
        AgentRecord a = {.name = (char *)name, .status = (char *)status};
        assert_int_equal(store_agent_insert(s, &a), 0);
}

/* Runs a one-value query on the database file with sqlite directly. */
static char *sql_value(const char *db, const char *sql)
{
        sqlite3 *h = NULL;
        assert_int_equal(sqlite3_open_v2(db, &h, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
        sqlite3_stmt *st = NULL;
        assert_int_equal(sqlite3_prepare_v2(h, sql, -1, &st, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        const unsigned char *t = sqlite3_column_text(st, 0);
        char *v = strdup(t ? (const char *)t : "(null)");
        sqlite3_finalize(st);
        sqlite3_close(h);
        return v;
}

static void sql_exec(const char *db, const char *sql)
{
        sqlite3 *h = NULL;
        assert_int_equal(sqlite3_open_v2(db, &h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL),
                         SQLITE_OK);
        assert_int_equal(sqlite3_exec(h, sql, NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(h);
}

static void test_fresh_migrates(void **state)
{
        Fixture *fx = *state;
        assert_true(store_schema_version() >= 1);
        open_store(fx);
        int v = -1;
        assert_int_equal(store_get_version(fx->store, &v), 0);
        assert_int_equal(v, store_schema_version());
        char **names = NULL;
        assert_int_equal(store_agent_names(fx->store, &names), 0);
        assert_null(names[0]);
        free(names);

        char *uv = sql_value(fx->db, "PRAGMA user_version");
        char want[16];
        snprintf(want, sizeof(want), "%d", store_schema_version());
        assert_string_equal(uv, want);
        free(uv);
}

static void test_journal_mode_wal(void **state)
{
        Fixture *fx = *state;
        open_store(fx);
        char *mode = sql_value(fx->db, "PRAGMA journal_mode");
        assert_string_equal(mode, "wal");
        free(mode);
}

static void test_reopen_keeps_data(void **state)
{
        Fixture *fx = *state;
        open_store(fx);
        AgentRecord a = {
                .name = "keep",
                .role = "manager",
                .created_at = 1788784496,
                .paused = true,
                .parent = "root",
                .status = "running",
                .status_text = "thinking",
                .status_set_at = 1788784500,
                .active_model = "m1",
                .port = 8101,
                .deployed_sha = "0123456789abcdef0123456789abcdef01234567",
        };
        assert_int_equal(store_agent_insert(fx->store, &a), 0);
        fx->store = store_close(fx->store);

        open_store(fx);
        int v = -1;
        assert_int_equal(store_get_version(fx->store, &v), 0);
        assert_int_equal(v, store_schema_version());
        AgentRecord got;
        assert_int_equal(store_agent_get(fx->store, "keep", &got), 0);
        assert_string_equal(got.name, "keep");
        assert_string_equal(got.role, "manager");
        assert_int_equal(got.created_at, 1788784496);
        assert_int_equal(got.destroyed_at, 0);
        assert_true(got.paused);
        assert_string_equal(got.parent, "root");
        assert_string_equal(got.status, "running");
        assert_string_equal(got.status_text, "thinking");
        assert_int_equal(got.status_set_at, 1788784500);
        assert_string_equal(got.active_model, "m1");
        assert_int_equal(got.port, 8101);
        assert_string_equal(got.deployed_sha, a.deployed_sha);
        agent_record_done(&got);
        assert_null(got.name);
}

static void test_insert_defaults(void **state)
{
        Fixture *fx = *state;
        open_store(fx);
        AgentRecord a = {.name = "plain"};
        assert_int_equal(store_agent_insert(fx->store, &a), 0);
        AgentRecord got;
        assert_int_equal(store_agent_get(fx->store, "plain", &got), 0);
        assert_string_equal(got.role, "agent");
        assert_string_equal(got.status, "stopped");
        assert_true(got.created_at > 0);
        assert_false(got.paused);
        assert_null(got.parent);
        assert_null(got.status_text);
        assert_int_equal(got.status_set_at, 0);
        assert_null(got.active_model);
        assert_int_equal(got.port, 0);
        assert_null(got.deployed_sha);
        agent_record_done(&got);
}

static void test_newer_schema_refused(void **state)
{
        Fixture *fx = *state;
        char sql[64];
        snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", store_schema_version() + 1);
        sql_exec(fx->db, sql);

        Store *s = (Store *)0x1;
        int saved = log_get_max_level();
        log_set_max_level(LOG_CRIT); /* the refusal is logged at error level */
        int r = store_open(fx->db, &s);
        log_set_max_level(saved);
        assert_int_equal(r, -EPROTONOSUPPORT);
        assert_ptr_equal(s, (Store *)0x1);

        /* The schema version was left alone. */
        char *uv = sql_value(fx->db, "PRAGMA user_version");
        char want[16];
        snprintf(want, sizeof(want), "%d", store_schema_version() + 1);
        assert_string_equal(uv, want);
        free(uv);
}

static void test_open_missing_dir(void **state)
{
        Fixture *fx = *state;
        char *path = NULL;
        assert_true(asprintf(&path, "%s/no/such/dir/hive.sqlite", fx->dir) > 0);
        Store *s = (Store *)0x1;
        assert_int_equal(store_open(path, &s), -EACCES);
        assert_ptr_equal(s, (Store *)0x1);
        free(path);
}

static void test_memory(void **state)
{
        Store *s = NULL;
        assert_int_equal(store_open(":memory:", &s), 0);
        insert(s, "mem", NULL);
        AgentRecord got;
        assert_int_equal(store_agent_get(s, "mem", &got), 0);
        agent_record_done(&got);
        store_close(s);
        assert_null(store_close(NULL));
}

static void test_insert_duplicate(void **state)
{
        Fixture *fx = *state;
        open_store(fx);
        insert(fx->store, "dup", "running");
        AgentRecord a = {.name = "dup", .status = "stopped"};
        assert_int_equal(store_agent_insert(fx->store, &a), -EEXIST);
        AgentRecord *list = NULL;
        size_t n = 0;
        assert_int_equal(store_agent_list(fx->store, &list, &n), 0);
        assert_int_equal(n, 1);
        assert_string_equal(list[0].status, "running");
        agent_records_free(list, n);
}

static void test_get_unknown(void **state)
{
        Fixture *fx = *state;
        open_store(fx);
        insert(fx->store, "known", NULL);
        AgentRecord got;
        memset(&got, 0xa5, sizeof(got));
        AgentRecord saved = got;
        assert_int_equal(store_agent_get(fx->store, "ghost", &got), -ENOENT);
        assert_memory_equal(&got, &saved, sizeof(got));
        assert_int_equal(store_agent_get(fx->store, "", &got), -ENOENT);
        assert_int_equal(store_agent_get(fx->store, "KNOWN", &got), -ENOENT);
}

static void test_set_paused(void **state)
{
        Fixture *fx = *state;
        open_store(fx);
        insert(fx->store, "p", NULL);
        assert_int_equal(store_agent_set_paused(fx->store, "ghost", true), -ENOENT);
        assert_int_equal(store_agent_set_paused(fx->store, "ghost", false), -ENOENT);

        for (int i = 0; i < 2; i++) {
                assert_int_equal(store_agent_set_paused(fx->store, "p", true), 0);
                AgentRecord got;
                assert_int_equal(store_agent_get(fx->store, "p", &got), 0);
                assert_true(got.paused);
                agent_record_done(&got);
        }
        for (int i = 0; i < 2; i++) {
                assert_int_equal(store_agent_set_paused(fx->store, "p", false), 0);
                AgentRecord got;
                assert_int_equal(store_agent_get(fx->store, "p", &got), 0);
                assert_false(got.paused);
                agent_record_done(&got);
        }
}

/* Turn a database of the newest schema back into one of schema 8 or 7 (for the tests of
 * older versions, which undo the later steps too). */
#define UNDO_9                                                                                     \
        "DROP INDEX messages_to; DROP INDEX messages_from; "                                       \
        "CREATE INDEX messages_to ON messages(recipient); "                                        \
        "CREATE INDEX messages_from ON messages(sender); "
#define UNDO_8                                                                                     \
        "DROP INDEX messages_to; DROP INDEX messages_from; "                                       \
        "CREATE INDEX messages_recent_to ON messages(recipient, sent_at); "                        \
        "CREATE INDEX messages_recent_from ON messages(sender, sent_at); "

/* Schema 5 → 6 adds needs_login to a database that has agents, defaulting to false. */
static void test_migrate_adds_needs_login(void **state)
{
        Fixture *fx = *state;
        open_store(fx);
        insert(fx->store, "old", "running");
        fx->store = store_close(fx->store);
        sql_exec(fx->db, UNDO_8 "DROP TABLE request_ids; ALTER TABLE agents DROP COLUMN "
                                "needs_login; PRAGMA user_version = 5;");

        open_store_migrated(fx, 6);
        AgentRecord got;
        assert_int_equal(store_agent_get(fx->store, "old", &got), 0);
        assert_false(got.needs_login);
        agent_record_done(&got);
        fx->store = store_close(fx->store);
        char *dflt = sql_value(fx->db, "SELECT needs_login FROM agents WHERE name = 'old'");
        assert_string_equal(dflt, "0");
        free(dflt);
}

/* Schema 6 → 7 adds the request_ids table (WITHOUT ROWID, indexed by time), keeping the
 * agents. */
static void test_migrate_adds_request_ids(void **state)
{
        Fixture *fx = *state;
        open_store(fx);
        insert(fx->store, "old", "running");
        fx->store = store_close(fx->store);
        sql_exec(fx->db, UNDO_8 "DROP TABLE request_ids; PRAGMA user_version = 6;");

        open_store_migrated(fx, 7);
        fx->store = store_close(fx->store);
        char *n = sql_value(fx->db, "SELECT COUNT(*) FROM sqlite_master WHERE "
                                    "(name = 'request_ids' AND sql LIKE '%WITHOUT ROWID') OR "
                                    "name = 'request_ids_at'");
        assert_string_equal(n, "2");
        free(n);
        n = sql_value(fx->db, "SELECT COUNT(*) FROM agents WHERE name = 'old'");
        assert_string_equal(n, "1");
        free(n);
}

/* Schema 7 → 8 → 9: the (party, sent_at) message indexes become (party) ones, then (block,
 * party) ones, keeping the messages; a database of schema 8 takes the last step alone. */
static void test_migrate_indexes_messages_by_block(void **state)
{
        Fixture *fx = *state;
        for (int from = 7; from <= 8; from++) {
                open_store(fx);
                fx->store = store_close(fx->store);
                char sql[512];
                snprintf(sql, sizeof(sql),
                         "%s INSERT INTO messages (sender, recipient, body, sent_at) "
                         "VALUES ('a', 'b', 'kept', 1); PRAGMA user_version = %d;",
                         from == 7 ? UNDO_8 : UNDO_9, from);
                sql_exec(fx->db, sql);

                open_store_migrated(fx, 9);
                fx->store = store_close(fx->store);
                char *n = sql_value(fx->db, "SELECT group_concat(name || ':' || sql, ' | ') FROM "
                                            "(SELECT name, sql FROM sqlite_master WHERE type = "
                                            "'index' AND name LIKE 'messages\\_%' ESCAPE '\\' "
                                            "ORDER BY name)");
                assert_string_equal(
                        n, "messages_acked:CREATE INDEX messages_acked ON messages(acked_at) WHERE "
                           "acked_at IS NOT NULL | messages_from:CREATE INDEX messages_from ON "
                           "messages(id >> 10, sender) | messages_inbox:CREATE INDEX "
                           "messages_inbox ON messages(recipient, id) WHERE acked_at IS NULL | "
                           "messages_to:CREATE INDEX messages_to ON messages(id >> 10, recipient)");
                free(n);
                n = sql_value(fx->db, "SELECT group_concat(body) FROM messages WHERE sender = 'a'");
                assert_string_equal(n, from == 7 ? "kept" : "kept,kept");
                free(n);
        }
}

static void test_set_harness(void **state)
{
        Fixture *fx = *state;
        open_store(fx);
        insert(fx->store, "h", NULL);
        assert_int_equal(store_agent_set_harness(fx->store, "ghost", 1, NULL), -ENOENT);
        assert_int_equal(store_agent_set_harness(fx->store, "ghost", -1, "m"), -ENOENT);

        /* Changes answer 1, repeats 0; an unset field is kept. */
        assert_int_equal(store_agent_set_harness(fx->store, "h", 1, NULL), 1);
        assert_int_equal(store_agent_set_harness(fx->store, "h", 1, NULL), 0);
        assert_int_equal(store_agent_set_harness(fx->store, "h", -1, "claude-opus-4-6"), 1);
        assert_int_equal(store_agent_set_harness(fx->store, "h", 1, "claude-opus-4-6"), 0);
        AgentRecord got;
        assert_int_equal(store_agent_get(fx->store, "h", &got), 0);
        assert_true(got.needs_login);
        assert_string_equal(got.active_model, "claude-opus-4-6");
        agent_record_done(&got);

        assert_int_equal(store_agent_set_harness(fx->store, "h", 0, "m2"), 1);
        assert_int_equal(store_agent_set_harness(fx->store, "h", -1, NULL), 0);
        assert_int_equal(store_agent_get(fx->store, "h", &got), 0);
        assert_false(got.needs_login);
        assert_string_equal(got.active_model, "m2");
        agent_record_done(&got);

        /* A destroyed agent has no live row. */
        assert_int_equal(store_agent_destroy(fx->store, "h", false), 0);
        assert_int_equal(store_agent_set_harness(fx->store, "h", 1, NULL), -ENOENT);
}

static void test_list_sorted(void **state)
{
        Fixture *fx = *state;
        open_store(fx);
        const char *in[] = {"zeta", "alpha", "mid-1", "beta", "a0", "0a"};
        const char *sorted[] = {"0a", "a0", "alpha", "beta", "mid-1", "zeta"};
        for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++)
                insert(fx->store, in[i], NULL);

        AgentRecord *list = NULL;
        size_t n = 0;
        assert_int_equal(store_agent_list(fx->store, &list, &n), 0);
        assert_int_equal(n, sizeof(sorted) / sizeof(sorted[0]));
        for (size_t i = 0; i < n; i++)
                assert_string_equal(list[i].name, sorted[i]);
        agent_records_free(list, n);

        char **names = NULL;
        assert_int_equal(store_agent_names(fx->store, &names), 0);
        size_t i = 0;
        for (; names[i]; i++) {
                assert_true(i < n);
                assert_string_equal(names[i], sorted[i]);
                free(names[i]);
        }
        assert_int_equal(i, n);
        free(names);
}

static void test_list_empty(void **state)
{
        Fixture *fx = *state;
        open_store(fx);
        AgentRecord *list = (AgentRecord *)0x1;
        size_t n = 99;
        assert_int_equal(store_agent_list(fx->store, &list, &n), 0);
        assert_int_equal(n, 0);
        agent_records_free(list, n);
}

static char *agent_col(Store *s, const char *col, const char *name)
{
        char sql[128];
        snprintf(sql, sizeof(sql), "SELECT %s FROM agents WHERE name = ?1 ORDER BY id DESC", col);
        sqlite3_stmt *st = NULL;
        assert_int_equal(sqlite3_prepare_v2(store_db(s), sql, -1, &st, NULL), SQLITE_OK);
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        char *v = NULL;
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
                v = strdup((const char *)sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
        return v;
}

static void assert_col(Store *s, const char *col, const char *name, const char *want)
{
        char *v = agent_col(s, col, name);
        if (!want)
                assert_null(v);
        else
                assert_string_equal(v, want);
        free(v);
}

static void test_state_and_wanted(void **state)
{
        Fixture *fx = *state;
        open_store(fx);
        insert(fx->store, "a1", NULL);
        assert_col(fx->store, "wanted", "a1", "stopped");
        assert_int_equal(store_agent_set_state(fx->store, "a1", "running", "running"), 0);
        assert_col(fx->store, "status", "a1", "running");
        assert_col(fx->store, "wanted", "a1", "running");
        assert_int_equal(store_agent_set_state(fx->store, "a1", "stopped", NULL), 0);
        assert_col(fx->store, "wanted", "a1", "running"); /* NULL keeps it */
        assert_int_equal(store_agent_set_state(fx->store, "ghost", "running", NULL), -ENOENT);
        /* failed keeps its log only while failed */
        assert_int_equal(store_agent_set_failed(fx->store, "a1", "boom\n"), 0);
        AgentRecord a;
        assert_int_equal(store_agent_get(fx->store, "a1", &a), 0);
        assert_string_equal(a.status, "failed");
        assert_string_equal(a.failed_log, "boom\n");
        agent_record_done(&a);
        assert_int_equal(store_agent_set_state(fx->store, "a1", "failed", NULL), 0);
        assert_col(fx->store, "failed_log", "a1", "boom\n");
        assert_int_equal(store_agent_set_state(fx->store, "a1", "running", NULL), 0);
        assert_col(fx->store, "failed_log", "a1", NULL);
        assert_int_equal(store_agent_set_failed(fx->store, "ghost", "x"), -ENOENT);
}

static void test_destroy_tombstone_purge(void **state)
{
        Fixture *fx = *state;
        open_store(fx);
        insert(fx->store, "a1", NULL);
        bool tomb = true;
        assert_int_equal(store_agent_tombstoned(fx->store, "a1", &tomb), 0);
        assert_false(tomb);
        assert_int_equal(store_agent_purge(fx->store, "a1"), -ENOENT); /* live, no tombstone */
        assert_int_equal(store_agent_destroy(fx->store, "a1", false), 0);
        assert_int_equal(store_agent_destroy(fx->store, "a1", false), -ENOENT);
        AgentRecord a;
        assert_int_equal(store_agent_get(fx->store, "a1", &a), -ENOENT);
        assert_int_equal(store_agent_tombstoned(fx->store, "a1", &tomb), 0);
        assert_true(tomb);
        /* the name can live again beside its tombstone */
        insert(fx->store, "a1", NULL);
        assert_int_equal(store_agent_purge(fx->store, "a1"), 0);
        assert_int_equal(store_agent_tombstoned(fx->store, "a1", &tomb), 0);
        assert_false(tomb);
        assert_int_equal(store_agent_purge(fx->store, "a1"), -ENOENT);
        /* destroy with purge leaves no tombstone; delete removes a live row */
        assert_int_equal(store_agent_destroy(fx->store, "a1", true), 0);
        assert_int_equal(store_agent_tombstoned(fx->store, "a1", &tomb), 0);
        assert_false(tomb);
        insert(fx->store, "b2", NULL);
        assert_int_equal(store_agent_delete(fx->store, "b2"), 0);
        assert_int_equal(store_agent_delete(fx->store, "b2"), -ENOENT);
}

static void test_crash_counts(void **state)
{
        Fixture *fx = *state;
        open_store(fx);
        int64_t n = -1;
        assert_int_equal(store_crash_count(fx->store, "a1", 0, &n), 0);
        assert_int_equal(n, 0);
        int64_t before = store_now_ms();
        assert_int_equal(store_crash_add(fx->store, "a1", "h-a1 stopped", "restarted"), 0);
        assert_int_equal(store_crash_add(fx->store, "a1", "h-a1 stopped", "failed"), 0);
        assert_int_equal(store_crash_add(fx->store, "b2", "h-b2 stopped", "restarted"), 0);
        assert_int_equal(store_crash_count(fx->store, "a1", before, &n), 0);
        assert_int_equal(n, 2);
        assert_int_equal(store_crash_count(fx->store, "a1", store_now_ms() + 1000, &n), 0);
        assert_int_equal(n, 0);
}

static int64_t file_size(const char *path)
{
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        return st.st_size;
}

static void insert_agents(Store *s, const char *prefix, int n)
{
        for (int i = 0; i < n; i++) {
                char name[32];
                snprintf(name, sizeof(name), "%s%03d", prefix, i);
                insert(s, name, "stopped");
        }
        assert_int_equal(store_batch_commit(s), 0);
}

static void copy_file(const char *from, const char *to)
{
        size_t len = 0;
        char *data = tu_read_file(from, &len);
        assert_non_null(data);
        FILE *f = fopen(to, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(data, 1, len, f), len);
        assert_int_equal(fclose(f), 0);
        free(data);
}

/* The agents a database holds as a crash would leave it: the file and its WAL are copied
 * without the -shm, so sqlite rebuilds the WAL index by reading the WAL file, frame by frame,
 * as far as the first one that is not valid. */
static int64_t agents_after_crash(Fixture *fx, const char *name)
{
        char *db = NULL, *wal = NULL;
        assert_true(asprintf(&db, "%s/%s.sqlite", fx->dir, name) > 0);
        assert_true(asprintf(&wal, "%s-wal", db) > 0);
        copy_file(fx->db, db);
        copy_file(store_wal_path(fx->store), wal);
        char *v = sql_value(db, "SELECT count(*) FROM agents");
        int64_t n = strtoll(v, NULL, 10);
        free(v);
        free(db);
        free(wal);
        return n;
}

static void test_prewrite_wal(void **state)
{
        Fixture *fx = *state;
        open_store(fx);
        insert_agents(fx->store, "a", 20);
        const char *wal = store_wal_path(fx->store);
        size_t before_len = 0;
        char *before = tu_read_file(wal, &before_len);
        assert_non_null(before);
        assert_true(before_len > 32);

        int64_t added = -1;
        assert_int_equal(store_prewrite_wal(fx->store, 1000, &added), 0);
        int64_t want = 32 + 1000 * (1024 + 24);
        assert_int_equal(file_size(wal), want);
        assert_int_equal(added, want - (int64_t)before_len);
        size_t after_len = 0;
        char *after = tu_read_file(wal, &after_len);
        assert_int_equal(after_len, want);
        assert_memory_equal(after, before, before_len); /* the frames are left alone */
        for (size_t i = before_len; i < after_len; i++)
                if (after[i] != 0)
                        fail_msg("byte %zu of the pre-written WAL is %d", i, after[i]);
        free(before);
        free(after);

        /* Frames written over the zeros, and the zeros after them, read back whole. */
        assert_int_equal(agents_after_crash(fx, "crash1"), 20);
        insert_agents(fx->store, "b", 20);
        assert_int_equal(file_size(wal), want);
        assert_int_equal(agents_after_crash(fx, "crash2"), 40);

        /* Long enough already: nothing to add.  Longer than the cap: up to the cap. */
        assert_int_equal(store_prewrite_wal(fx->store, 10, &added), 0);
        assert_int_equal(added, 0);
        assert_int_equal(file_size(wal), want);
        assert_int_equal(store_prewrite_wal(fx->store, 1000000, &added), 0);
        assert_int_equal(file_size(wal), STORE_WAL_PREWRITE_MAX);
        assert_int_equal(added, STORE_WAL_PREWRITE_MAX - want);
        insert_agents(fx->store, "c", 5);
        assert_int_equal(agents_after_crash(fx, "crash3"), 45);
}

/* A write that fails (here over the file size limit, as on a full disk) cuts the file back to
 * where it was and lets the write lock go. */
static void test_prewrite_wal_failure_cuts_back(void **state)
{
        Fixture *fx = *state;
        open_store(fx);
        insert_agents(fx->store, "a", 5);
        const char *wal = store_wal_path(fx->store);
        int64_t before = file_size(wal);

        struct rlimit old, lim;
        assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
        lim = (struct rlimit){.rlim_cur = (rlim_t)before + 100000, .rlim_max = old.rlim_max};
        void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
        assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
        int64_t added = -1;
        int r = store_prewrite_wal(fx->store, 1000, &added);
        assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
        signal(SIGXFSZ, prev);

        assert_int_equal(r, -EFBIG);
        assert_int_equal(added, 0);
        assert_int_equal(file_size(wal), before);
        sql_exec(fx->db, "CREATE TABLE probe (x); DROP TABLE probe;"); /* not locked */
        insert_agents(fx->store, "b", 5);
        assert_int_equal(agents_after_crash(fx, "crash"), 10);

        /* Inside an open batch it would commit the batch's writes: refused. */
        assert_int_equal(store_batch_write(fx->store, true), 0);
        assert_int_equal(store_prewrite_wal(fx->store, 1000, &added), -EBUSY);
        assert_int_equal(store_batch_commit(fx->store), 0);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        const struct CMUnitTest tests[] = {
                T(test_fresh_migrates),
                T(test_journal_mode_wal),
                T(test_reopen_keeps_data),
                T(test_insert_defaults),
                T(test_newer_schema_refused),
                T(test_open_missing_dir),
                T(test_memory),
                T(test_insert_duplicate),
                T(test_get_unknown),
                T(test_set_paused),
                T(test_migrate_adds_needs_login),
                T(test_migrate_adds_request_ids),
                T(test_migrate_indexes_messages_by_block),
                T(test_set_harness),
                T(test_list_sorted),
                T(test_list_empty),
                T(test_state_and_wanted),
                T(test_destroy_tombstone_purge),
                T(test_crash_counts),
                T(test_prewrite_wal),
                T(test_prewrite_wal_failure_cuts_back),
        };
        return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
