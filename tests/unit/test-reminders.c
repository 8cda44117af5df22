/* Unit tests of reminders (c0re/reminders.c): file path checks, the per-agent limit, firing due
 * reminders as messages from "reminder" (and retrying failed deliveries), listing and
 * cancelling.  Each case on a fresh temp sqlite database. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sqlite3.h>

#include <cmocka.h>

#include <jansson.h>

#include "broker.h"
#include "log.h"
#include "reminders.h"
#include "store.h"
#include "testutil.h"

typedef StoreFixture Fixture;
#define setup    tu_store_setup
#define teardown tu_store_teardown

static int64_t count_messages(Store *s)
{
        return tu_sql_int(s, "SELECT COUNT(*) FROM messages", 0);
}

static int64_t add(Store *s, const char *agent, const char *message, const char *file_path,
                   int64_t due_ms)
{
        int64_t id = -1;
        assert_int_equal(reminders_add(s, agent, message, file_path, due_ms, &id), 0);
        assert_true(id > 0);
        return id;
}

static int64_t pending(Store *s, const char *agent)
{
        int64_t n = -1;
        assert_int_equal(reminders_count_pending(s, agent, &n), 0);
        return n;
}

static int64_t next_due(Store *s)
{
        int64_t t = -1;
        assert_int_equal(reminders_next_due(s, &t), 0);
        return t;
}

static int fire(Store *s, int64_t now_ms, json_t *agents)
{
        json_t *own = agents ? NULL : json_array();
        int r = reminders_fire_due(s, now_ms, agents ? agents : own);
        json_decref(own);
        return r;
}

/* recipient's unacked messages (oldest first), as a JSON array. */
static json_t *inbox(Store *s, const char *recipient)
{
        json_t *arr = json_array();
        assert_non_null(arr);
        assert_int_equal(broker_unacked(s, recipient, 100, arr), 0);
        return arr;
}

static void check_msg(json_t *arr, size_t i, const char *to, const char *body)
{
        json_t *m = json_array_get(arr, i);
        assert_non_null(m);
        assert_string_equal(json_string_value(json_object_get(m, "from")), REMINDER_SENDER);
        assert_string_equal(json_string_value(json_object_get(m, "to")), to);
        assert_string_equal(json_string_value(json_object_get(m, "body")), body);
}

/* ---- file paths ---- */

static void accept_path(const char *in, const char *want)
{
        char *out = NULL;
        assert_int_equal(reminders_check_path(in, &out), 0);
        assert_non_null(out);
        assert_string_equal(out, want);
        free(out);
}

static void refuse_path(const char *in)
{
        char *out = (char *)0x1;
        int r = reminders_check_path(in, &out);
        if (r != -EINVAL)
                fail_msg("reminders_check_path(\"%s\") = %d, want -EINVAL", in, r);
        assert_ptr_equal(out, (char *)0x1);
}

static void test_check_path_accepts(void **state)
{
        accept_path("notes/a.md", "/state/notes/a.md");
        accept_path("/state/x/y", "/state/x/y");
        accept_path("a", "/state/a");
        accept_path("/state/a", "/state/a");
        accept_path("state/a", "/state/state/a");
}

/* Names that merely start with dots are plain names. */
static void test_check_path_accepts_dots(void **state)
{
        accept_path(".hidden", "/state/.hidden");
        accept_path("...", "/state/...");
        accept_path("a/..b/.c", "/state/a/..b/.c");
        accept_path("über/ü.md", "/state/über/ü.md");
}

static void test_check_path_refuses(void **state)
{
        static const char *const bad[] = {
                "",           "/",         "/etc/passwd", "/stat/a",   "/statex/a",
                "//state/a",  "/state",    "/state/",     "/state//a", "/state/../etc/passwd",
                "/state/./a", "/state/a/", "../x",        "..",        ".",
                "./a",        "a/.",       "a/..",        "a/../b",    "a/./b",
                "a//b",       "a/",        "a\001b",      "a\nb",      "notes/\tx",
                "\037",       "a/b\r",
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                refuse_path(bad[i]);
}

static void test_check_path_length(void **state)
{
        char buf[1025];
        /* 1023 bytes is the longest accepted, 1024 is refused. */
        memset(buf, 'a', 1023);
        buf[1023] = '\0';
        char *out = NULL;
        assert_int_equal(reminders_check_path(buf, &out), 0);
        assert_int_equal(strlen(out), 7 + 1023);
        assert_memory_equal(out, "/state/", 7);
        free(out);
        memset(buf, 'a', 1024);
        buf[1024] = '\0';
        refuse_path(buf);
        memcpy(buf, "/state/", 7);
        refuse_path(buf);
        buf[1023] = '\0';
        accept_path(buf, buf);
}

/* ---- add and the limit ---- */

static void test_add(void **state)
{
        Fixture *fx = *state;
        int64_t lo = store_now_ms();
        int64_t a = add(fx->store, "alice", "first", NULL, 5000);
        int64_t b = add(fx->store, "alice", "second", "/state/notes/a.md", 4000);
        int64_t hi = store_now_ms();
        assert_true(b > a);
        assert_true(store_batch_open(fx->store));
        assert_int_equal(tu_sql_int(fx->store, "PRAGMA synchronous", 0), 2); /* FULL */
        assert_int_equal(tu_sql_int(fx->store, "SELECT due_at FROM reminders WHERE id = ?1", a),
                         5000);
        int64_t created =
                tu_sql_int(fx->store, "SELECT created_at FROM reminders WHERE id = ?1", a);
        assert_true(created >= lo && created <= hi);
        assert_int_equal(
                tu_sql_int(
                        fx->store,
                        "SELECT (sent_at IS NULL) + (cancelled_at IS NULL) + (file_path IS NULL) + "
                        "(last_error IS NULL) FROM reminders WHERE id = ?1",
                        a),
                4);
        assert_int_equal(
                tu_sql_int(fx->store, "SELECT attempt_count FROM reminders WHERE id = ?1", a), 0);
        char *fp = tu_sql_text(fx->store, "SELECT file_path FROM reminders WHERE id = ?1", b);
        assert_string_equal(fp, "/state/notes/a.md");
        free(fp);
        assert_int_equal(count_messages(fx->store), 0);
        assert_int_equal(pending(fx->store, "alice"), 2);
}

static void test_add_limit(void **state)
{
        Fixture *fx = *state;
        int64_t ids[REMINDERS_PENDING_MAX];
        for (int i = 0; i < REMINDERS_PENDING_MAX; i++)
                ids[i] = add(fx->store, "alice", "m", NULL, 1000 + i);
        assert_int_equal(pending(fx->store, "alice"), REMINDERS_PENDING_MAX);

        int64_t id = 777;
        assert_int_equal(reminders_add(fx->store, "alice", "m", NULL, 1, &id), -EUSERS);
        assert_int_equal(id, 777);
        assert_int_equal(pending(fx->store, "alice"), REMINDERS_PENDING_MAX);
        assert_int_equal(tu_sql_int(fx->store, "SELECT COUNT(*) FROM reminders", 0),
                         REMINDERS_PENDING_MAX);

        /* The limit is per agent. */
        (void)add(fx->store, "bob", "m", NULL, 1000);

        /* A cancelled reminder does not count... */
        assert_int_equal(reminders_cancel(fx->store, ids[10], "alice"), 0);
        (void)add(fx->store, "alice", "m", NULL, 5000);
        assert_int_equal(reminders_add(fx->store, "alice", "m", NULL, 1, &id), -EUSERS);

        /* ...nor does a sent one. */
        assert_int_equal(fire(fx->store, 1000, NULL), 2); /* ids[0] and bob's */
        (void)add(fx->store, "alice", "m", NULL, 5000);
        assert_int_equal(reminders_add(fx->store, "alice", "m", NULL, 1, &id), -EUSERS);
        assert_int_equal(id, 777);
        assert_int_equal(pending(fx->store, "alice"), REMINDERS_PENDING_MAX);
        assert_int_equal(pending(fx->store, "bob"), 0);
}

/* ---- firing ---- */

static void test_fire_due(void **state)
{
        Fixture *fx = *state;
        int64_t r1 = add(fx->store, "alice", "stand up", NULL, 1000);
        int64_t r2 = add(fx->store, "bob", "read this", "/state/notes/a.md", 2000);
        int64_t r3 = add(fx->store, "alice", "later", NULL, 3000);
        int64_t r4 = add(fx->store, "carol", "cancelled", NULL, 500);
        assert_int_equal(reminders_cancel(fx->store, r4, "carol"), 0);

        json_t *agents = json_pack("[s]", "already here");
        assert_non_null(agents);
        assert_int_equal(fire(fx->store, 999, agents), 0);
        assert_int_equal(json_array_size(agents), 1);
        assert_int_equal(count_messages(fx->store), 0);

        /* due_at == now is due. */
        assert_int_equal(fire(fx->store, 2000, agents), 2);
        assert_int_equal(json_array_size(agents), 3);
        assert_string_equal(json_string_value(json_array_get(agents, 0)), "already here");
        assert_string_equal(json_string_value(json_array_get(agents, 1)), "alice");
        assert_string_equal(json_string_value(json_array_get(agents, 2)), "bob");
        assert_int_equal(count_messages(fx->store), 2);

        json_t *arr = inbox(fx->store, "alice");
        assert_int_equal(json_array_size(arr), 1);
        check_msg(arr, 0, "alice", "stand up");
        json_decref(arr);
        arr = inbox(fx->store, "bob");
        assert_int_equal(json_array_size(arr), 1);
        check_msg(arr, 0, "bob", "read this\n\n(file: /state/notes/a.md)");
        json_decref(arr);
        arr = inbox(fx->store, "carol");
        assert_int_equal(json_array_size(arr), 0);
        json_decref(arr);

        for (int i = 0; i < 2; i++) {
                int64_t id = i == 0 ? r1 : r2;
                assert_int_equal(
                        tu_sql_int(fx->store, "SELECT sent_at FROM reminders WHERE id = ?1", id),
                        2000);
                assert_int_equal(tu_sql_int(fx->store,
                                            "SELECT attempt_count FROM reminders WHERE id = ?1",
                                            id),
                                 1);
                assert_int_equal(
                        tu_sql_int(fx->store,
                                   "SELECT last_error IS NULL FROM reminders WHERE id = ?1", id),
                        1);
        }
        assert_int_equal(tu_sql_int(fx->store, "SELECT sent_at FROM reminders WHERE id = ?1", r3),
                         -1);
        assert_int_equal(tu_sql_int(fx->store, "SELECT sent_at FROM reminders WHERE id = ?1", r4),
                         -1);

        /* Not fired again. */
        assert_int_equal(fire(fx->store, 2000, agents), 0);
        assert_int_equal(fire(fx->store, 2500, agents), 0);
        assert_int_equal(json_array_size(agents), 3);
        assert_int_equal(count_messages(fx->store), 2);

        assert_int_equal(fire(fx->store, INT64_MAX, agents), 1);
        assert_int_equal(json_array_size(agents), 4);
        assert_string_equal(json_string_value(json_array_get(agents, 3)), "alice");
        arr = inbox(fx->store, "alice");
        assert_int_equal(json_array_size(arr), 2);
        check_msg(arr, 1, "alice", "later");
        json_decref(arr);
        assert_int_equal(fire(fx->store, INT64_MAX, agents), 0);
        assert_int_equal(count_messages(fx->store), 3);
        assert_int_equal(pending(fx->store, NULL), 0);
        json_decref(agents);
}

/* Fired reminders survive a commit and reopen as sent. */
static void test_fire_commit(void **state)
{
        Fixture *fx = *state;
        (void)add(fx->store, "alice", "m", NULL, 1000);
        assert_int_equal(store_batch_commit(fx->store), 0);
        assert_int_equal(fire(fx->store, 1000, NULL), 1);
        assert_true(store_batch_open(fx->store));
        assert_int_equal(store_batch_commit(fx->store), 0);
        fx->store = store_close(fx->store);
        assert_int_equal(store_open(fx->db, &fx->store), 0);
        assert_int_equal(fire(fx->store, INT64_MAX, NULL), 0);
        assert_int_equal(count_messages(fx->store), 1);
        assert_int_equal(pending(fx->store, NULL), 0);
}

/* A delivery that fails (here: the messages table is gone) leaves the reminder pending with
 * the error kept, one more attempt counted and due_at pushed back; once delivery works again
 * it fires. */
static void delivery_failure(Fixture *fx, bool warm)
{
        int64_t sent = 0;
        if (warm) /* the broker's INSERT is prepared and cached before the table goes */
                assert_int_equal(broker_send(fx->store, "bob", "carol", "warm", 0, &sent), 0);
        int64_t id = add(fx->store, "alice", "stand up", "/state/notes/x", 1000);
        assert_int_equal(store_batch_commit(fx->store), 0);
        /* the table and its indexes, to put back once delivery is to work again */
        char *schema = tu_sql_text(fx->store,
                                   "SELECT group_concat(sql, ';') FROM (SELECT sql FROM "
                                   "sqlite_master WHERE tbl_name = 'messages' AND sql IS NOT "
                                   "NULL ORDER BY type = 'index')",
                                   0);
        assert_non_null(schema);
        assert_int_equal(sqlite3_exec(store_db(fx->store), "DROP TABLE messages", NULL, NULL, NULL),
                         SQLITE_OK);

        int64_t now = store_now_ms();
        json_t *agents = json_array();
        assert_int_equal(reminders_fire_due(fx->store, now, agents), 0);
        assert_int_equal(json_array_size(agents), 0);
        assert_int_equal(tu_sql_int(fx->store, "SELECT sent_at FROM reminders WHERE id = ?1", id),
                         -1);
        assert_int_equal(
                tu_sql_int(fx->store, "SELECT attempt_count FROM reminders WHERE id = ?1", id), 1);
        char *err = tu_sql_text(fx->store, "SELECT last_error FROM reminders WHERE id = ?1", id);
        assert_non_null(err);
        assert_string_equal(err, strerror(EIO)); /* sqlite's "no such table" maps to -EIO */
        free(err);
        int64_t due = tu_sql_int(fx->store, "SELECT due_at FROM reminders WHERE id = ?1", id);
        assert_true(due > now);
        assert_int_equal(due, now + 1000); /* first back-off: one second */
        assert_int_equal(next_due(fx->store), due);
        assert_int_equal(pending(fx->store, "alice"), 1);

        /* Not due again before the back-off ends. */
        assert_int_equal(reminders_fire_due(fx->store, due - 1, agents), 0);
        assert_int_equal(
                tu_sql_int(fx->store, "SELECT attempt_count FROM reminders WHERE id = ?1", id), 1);

        /* The listing shows the attempts and the error. */
        json_t *arr = json_array();
        assert_int_equal(reminders_list_pending(fx->store, "alice", arr), 0);
        assert_int_equal(json_array_size(arr), 1);
        json_t *j = json_array_get(arr, 0);
        assert_int_equal(json_integer_value(json_object_get(j, "attempts")), 1);
        assert_string_equal(json_string_value(json_object_get(j, "last_error")), strerror(EIO));
        json_decref(arr);

        /* A second failure doubles the back-off. */
        assert_int_equal(reminders_fire_due(fx->store, due, agents), 0);
        assert_int_equal(
                tu_sql_int(fx->store, "SELECT attempt_count FROM reminders WHERE id = ?1", id), 2);
        assert_int_equal(tu_sql_int(fx->store, "SELECT due_at FROM reminders WHERE id = ?1", id),
                         due + 2000);
        due += 2000;

        /* Delivery works again: the reminder fires and the error is cleared. */
        assert_int_equal(sqlite3_exec(store_db(fx->store), schema, NULL, NULL, NULL), SQLITE_OK);
        free(schema);
        assert_int_equal(reminders_fire_due(fx->store, due, agents), 1);
        assert_int_equal(json_array_size(agents), 1);
        assert_string_equal(json_string_value(json_array_get(agents, 0)), "alice");
        assert_int_equal(tu_sql_int(fx->store, "SELECT sent_at FROM reminders WHERE id = ?1", id),
                         due);
        assert_int_equal(
                tu_sql_int(fx->store, "SELECT attempt_count FROM reminders WHERE id = ?1", id), 3);
        assert_int_equal(
                tu_sql_int(fx->store, "SELECT last_error IS NULL FROM reminders WHERE id = ?1", id),
                1);
        arr = inbox(fx->store, "alice");
        assert_int_equal(json_array_size(arr), 1);
        check_msg(arr, 0, "alice", "stand up\n\n(file: /state/notes/x)");
        json_decref(arr);
        json_decref(agents);
        assert_int_equal(store_batch_commit(fx->store), 0);
        assert_int_equal(count_messages(fx->store), 1);
}

static void test_fire_delivery_failure(void **state)
{
        delivery_failure(*state, false);
}

static void test_fire_delivery_failure_cached(void **state)
{
        delivery_failure(*state, true);
}

static void test_next_due(void **state)
{
        Fixture *fx = *state;
        assert_int_equal(next_due(fx->store), 0);
        int64_t a = add(fx->store, "alice", "a", NULL, 3000);
        assert_int_equal(next_due(fx->store), 3000);
        int64_t b = add(fx->store, "bob", "b", NULL, 2000);
        int64_t c = add(fx->store, "carol", "c", NULL, 1000);
        assert_int_equal(next_due(fx->store), 1000);
        /* Cancelled and sent reminders do not count. */
        assert_int_equal(reminders_cancel(fx->store, c, "carol"), 0);
        assert_int_equal(next_due(fx->store), 2000);
        assert_int_equal(fire(fx->store, 2000, NULL), 1);
        assert_int_equal(
                tu_sql_int(fx->store, "SELECT sent_at IS NOT NULL FROM reminders WHERE id = ?1", b),
                1);
        assert_int_equal(next_due(fx->store), 3000);
        assert_int_equal(reminders_cancel(fx->store, a, "alice"), 0);
        assert_int_equal(next_due(fx->store), 0);
}

/* ---- count and list ---- */

static void check_listed(json_t *j, int64_t id, const char *agent, const char *message,
                         const char *due_at, int64_t attempts, const char *file_path,
                         const char *last_error)
{
        assert_true(json_is_object(j));
        assert_int_equal(json_object_size(j), 5 + (file_path != NULL) + (last_error != NULL));
        assert_true(json_is_integer(json_object_get(j, "id")));
        assert_int_equal(json_integer_value(json_object_get(j, "id")), id);
        assert_string_equal(json_string_value(json_object_get(j, "agent")), agent);
        assert_string_equal(json_string_value(json_object_get(j, "message")), message);
        assert_string_equal(json_string_value(json_object_get(j, "due_at")), due_at);
        assert_true(json_is_integer(json_object_get(j, "attempts")));
        assert_int_equal(json_integer_value(json_object_get(j, "attempts")), attempts);
        if (file_path)
                assert_string_equal(json_string_value(json_object_get(j, "file_path")), file_path);
        else
                assert_null(json_object_get(j, "file_path"));
        if (last_error)
                assert_string_equal(json_string_value(json_object_get(j, "last_error")),
                                    last_error);
        else
                assert_null(json_object_get(j, "last_error"));
}

static void test_count_list_pending(void **state)
{
        Fixture *fx = *state;
        assert_int_equal(pending(fx->store, NULL), 0);
        assert_int_equal(pending(fx->store, "alice"), 0);
        json_t *arr = json_array();
        assert_int_equal(reminders_list_pending(fx->store, NULL, arr), 0);
        assert_int_equal(json_array_size(arr), 0);
        json_decref(arr);

        const int64_t t0 = 1800000000000; /* 2027-01-15T08:00:00Z */
        int64_t a1 = add(fx->store, "alice", "a1", NULL, t0 + 60500);
        int64_t b1 = add(fx->store, "bob", "b1", "/state/notes/b.md", t0);
        int64_t a2 = add(fx->store, "alice", "a2", "/state/x", t0 + 60000);
        int64_t a3 = add(fx->store, "alice", "a3", NULL, t0 + 60000); /* same due: by id */
        int64_t gone = add(fx->store, "alice", "cancelled", NULL, t0);
        int64_t sent = add(fx->store, "bob", "sent", NULL, 1000);
        assert_int_equal(reminders_cancel(fx->store, gone, "alice"), 0);
        assert_int_equal(fire(fx->store, 1000, NULL), 1);
        assert_int_equal(tu_sql_int(fx->store, "SELECT sent_at FROM reminders WHERE id = ?1", sent),
                         1000);
        sqlite3_stmt *st = NULL;
        assert_int_equal(sqlite3_prepare_v2(store_db(fx->store),
                                            "UPDATE reminders SET attempt_count = 3, last_error = "
                                            "'boom' WHERE id = ?1",
                                            -1, &st, NULL),
                         SQLITE_OK);
        sqlite3_bind_int64(st, 1, a2);
        assert_int_equal(sqlite3_step(st), SQLITE_DONE);
        sqlite3_finalize(st);

        assert_int_equal(pending(fx->store, NULL), 4);
        assert_int_equal(pending(fx->store, "alice"), 3);
        assert_int_equal(pending(fx->store, "bob"), 1);
        assert_int_equal(pending(fx->store, "carol"), 0);

        arr = json_pack("[s]", "kept");
        assert_int_equal(reminders_list_pending(fx->store, NULL, arr), 0);
        assert_int_equal(json_array_size(arr), 5);
        assert_string_equal(json_string_value(json_array_get(arr, 0)), "kept");
        check_listed(json_array_get(arr, 1), b1, "bob", "b1", "2027-01-15T08:00:00Z", 0,
                     "/state/notes/b.md", NULL);
        check_listed(json_array_get(arr, 2), a2, "alice", "a2", "2027-01-15T08:01:00Z", 3,
                     "/state/x", "boom");
        check_listed(json_array_get(arr, 3), a3, "alice", "a3", "2027-01-15T08:01:00Z", 0, NULL,
                     NULL);
        check_listed(json_array_get(arr, 4), a1, "alice", "a1", "2027-01-15T08:01:00Z", 0, NULL,
                     NULL);
        json_decref(arr);

        arr = json_array();
        assert_int_equal(reminders_list_pending(fx->store, "alice", arr), 0);
        assert_int_equal(json_array_size(arr), 3);
        check_listed(json_array_get(arr, 0), a2, "alice", "a2", "2027-01-15T08:01:00Z", 3,
                     "/state/x", "boom");
        check_listed(json_array_get(arr, 1), a3, "alice", "a3", "2027-01-15T08:01:00Z", 0, NULL,
                     NULL);
        check_listed(json_array_get(arr, 2), a1, "alice", "a1", "2027-01-15T08:01:00Z", 0, NULL,
                     NULL);
        json_decref(arr);

        arr = json_array();
        assert_int_equal(reminders_list_pending(fx->store, "bob", arr), 0);
        assert_int_equal(json_array_size(arr), 1);
        check_listed(json_array_get(arr, 0), b1, "bob", "b1", "2027-01-15T08:00:00Z", 0,
                     "/state/notes/b.md", NULL);
        json_decref(arr);

        arr = json_array();
        assert_int_equal(reminders_list_pending(fx->store, "carol", arr), 0);
        assert_int_equal(json_array_size(arr), 0);
        json_decref(arr);
}

/* ---- cancel ---- */

static void test_cancel(void **state)
{
        Fixture *fx = *state;
        int64_t a = add(fx->store, "alice", "a", NULL, 5000);
        int64_t s = add(fx->store, "alice", "s", NULL, 1000);

        assert_int_equal(reminders_cancel(fx->store, a + 100, "alice"), -ENOENT);
        assert_int_equal(reminders_cancel(fx->store, 0, "alice"), -ENOENT);
        assert_int_equal(reminders_cancel(fx->store, a, "bob"), -EPERM);
        assert_int_equal(reminders_cancel(fx->store, a, "operator"), -EPERM);
        assert_int_equal(
                tu_sql_int(fx->store, "SELECT cancelled_at FROM reminders WHERE id = ?1", a), -1);
        assert_int_equal(pending(fx->store, "alice"), 2);

        int64_t lo = store_now_ms();
        assert_int_equal(reminders_cancel(fx->store, a, "alice"), 0);
        int64_t hi = store_now_ms();
        int64_t at = tu_sql_int(fx->store, "SELECT cancelled_at FROM reminders WHERE id = ?1", a);
        assert_true(at >= lo && at <= hi);
        assert_int_equal(pending(fx->store, "alice"), 1);
        assert_int_equal(reminders_cancel(fx->store, a, "alice"), -EALREADY);
        /* Someone else's finished reminder is still not theirs. */
        assert_int_equal(reminders_cancel(fx->store, a, "bob"), -EPERM);

        assert_int_equal(fire(fx->store, 1000, NULL), 1);
        assert_int_equal(reminders_cancel(fx->store, s, "alice"), -EALREADY);
        assert_int_equal(
                tu_sql_int(fx->store, "SELECT cancelled_at FROM reminders WHERE id = ?1", s), -1);
        assert_int_equal(pending(fx->store, "alice"), 0);

        /* A cancelled reminder never fires. */
        assert_int_equal(fire(fx->store, INT64_MAX, NULL), 0);
        assert_int_equal(count_messages(fx->store), 1);
}

int main(void)
{
        log_set_max_level(LOG_CRIT); /* the failed delivery is logged at warning level */
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_check_path_accepts),
                cmocka_unit_test(test_check_path_accepts_dots),
                cmocka_unit_test(test_check_path_refuses),
                cmocka_unit_test(test_check_path_length),
                T(test_add),
                T(test_add_limit),
                T(test_fire_due),
                T(test_fire_commit),
                T(test_fire_delivery_failure),
                T(test_fire_delivery_failure_cached),
                T(test_next_due),
                T(test_count_list_pending),
                T(test_cancel),
        };
        return cmocka_run_group_tests_name("reminders", tests, NULL, NULL);
}
