/* Unit tests of structured questions (c0re/questions.c): asking the operator or a peer, answers,
 * cancels, deadlines, and the question_asked / question_answered events they put in inboxes
 * through the broker.  Each case on a fresh temp sqlite database. */
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
#include "questions.h"
#include "store.h"
#include "testutil.h"

typedef StoreFixture Fixture;
#define setup    tu_store_setup
#define teardown tu_store_teardown

static int64_t count_messages(Store *s)
{
        return tu_sql_int(s, "SELECT COUNT(*) FROM messages", 0);
}

static int64_t ask(Store *s, const char *asker, const char *target, const char *question,
                   const json_t *options, bool multi, int64_t deadline_ms)
{
        int64_t id = -1;
        assert_int_equal(
                questions_ask(s, asker, target, question, options, multi, deadline_ms, &id), 0);
        assert_true(id > 0);
        return id;
}

/* recipient's unacked messages (oldest first), as a JSON array. */
static json_t *inbox(Store *s, const char *recipient)
{
        json_t *arr = json_array();
        assert_non_null(arr);
        assert_int_equal(broker_unacked(s, recipient, 100, arr), 0);
        return arr;
}

/* Message i of arr must come from "hive" to recipient; returns its body parsed (caller
 * decrefs). */
static json_t *event_body(json_t *arr, size_t i, const char *recipient)
{
        json_t *m = json_array_get(arr, i);
        assert_non_null(m);
        assert_string_equal(json_string_value(json_object_get(m, "from")), HIVE_SYSTEM_SENDER);
        assert_string_equal(json_string_value(json_object_get(m, "to")), recipient);
        const char *body = json_string_value(json_object_get(m, "body"));
        assert_non_null(body);
        json_error_t err;
        json_t *ev = json_loads(body, 0, &err);
        assert_non_null(ev);
        assert_true(json_is_object(ev));
        return ev;
}

static void check_str(json_t *obj, const char *key, const char *want)
{
        json_t *v = json_object_get(obj, key);
        assert_true(json_is_string(v));
        assert_string_equal(json_string_value(v), want);
}

static void check_int(json_t *obj, const char *key, int64_t want)
{
        json_t *v = json_object_get(obj, key);
        assert_true(json_is_integer(v));
        assert_int_equal(json_integer_value(v), want);
}

/* The one question_answered event expected in asker's inbox. */
static void check_answered(Store *s, const char *asker, int64_t id, const char *question,
                           const char *answer, const char *answerer)
{
        json_t *arr = inbox(s, asker);
        assert_int_equal(json_array_size(arr), 1);
        json_t *ev = event_body(arr, 0, asker);
        assert_int_equal(json_object_size(ev), 5);
        check_str(ev, "event", "question_answered");
        check_int(ev, "id", id);
        check_str(ev, "question", question);
        check_str(ev, "answer", answer);
        check_str(ev, "answerer", answerer);
        json_decref(ev);
        json_decref(arr);
}

/* The stored answer row of id. */
static void check_row(Store *s, int64_t id, const char *answer, const char *answerer)
{
        char *a = tu_sql_text(s, "SELECT answer FROM questions WHERE id = ?1", id);
        char *w = tu_sql_text(s, "SELECT answerer FROM questions WHERE id = ?1", id);
        if (answer) {
                assert_non_null(a);
                assert_string_equal(a, answer);
                assert_non_null(w);
                assert_string_equal(w, answerer);
                assert_true(tu_sql_int(s, "SELECT answered_at FROM questions WHERE id = ?1", id) >
                            0);
        } else {
                assert_null(a);
                assert_null(w);
                assert_int_equal(
                        tu_sql_int(s, "SELECT answered_at FROM questions WHERE id = ?1", id), -1);
        }
        free(a);
        free(w);
}

static size_t open_count(Store *s, const char *who)
{
        json_t *arr = json_array();
        assert_non_null(arr);
        assert_int_equal(questions_list_open(s, who, arr), 0);
        size_t n = json_array_size(arr);
        json_decref(arr);
        return n;
}

/* ---- ask ---- */

static void test_ask_operator_no_event(void **state)
{
        Fixture *fx = *state;
        int64_t a = ask(fx->store, "alice", "operator", "may I deploy?", NULL, false, 0);
        int64_t b = ask(fx->store, "bob", "operator", "and I?", NULL, false, 0);
        assert_true(b > a);
        assert_true(store_batch_open(fx->store));
        assert_int_equal(count_messages(fx->store), 0);
        json_t *arr = inbox(fx->store, "operator");
        assert_int_equal(json_array_size(arr), 0);
        json_decref(arr);
        check_row(fx->store, a, NULL, NULL);
        assert_int_equal(tu_sql_int(fx->store, "SELECT COUNT(*) FROM questions", 0), 2);
}

static void test_ask_peer_event(void **state)
{
        Fixture *fx = *state;
        json_t *opts = json_pack("[s, s, s]", "yes", "no", "maybe");
        assert_non_null(opts);
        int64_t id = ask(fx->store, "alice", "bob", "ship it?\n\"now\"", opts, true, 0);

        json_t *arr = inbox(fx->store, "bob");
        assert_int_equal(json_array_size(arr), 1);
        json_t *ev = event_body(arr, 0, "bob");
        assert_int_equal(json_object_size(ev), 6);
        check_str(ev, "event", "question_asked");
        check_int(ev, "id", id);
        check_str(ev, "asker", "alice");
        check_str(ev, "question", "ship it?\n\"now\"");
        assert_true(json_is_true(json_object_get(ev, "multi")));
        assert_true(json_equal(json_object_get(ev, "options"), opts));
        json_decref(ev);
        json_decref(arr);

        /* Without options: no options key, multi false. */
        int64_t id2 = ask(fx->store, "carol", "bob", "lunch?", NULL, false, 0);
        arr = inbox(fx->store, "bob");
        assert_int_equal(json_array_size(arr), 2);
        ev = event_body(arr, 1, "bob");
        assert_int_equal(json_object_size(ev), 5);
        check_str(ev, "event", "question_asked");
        check_int(ev, "id", id2);
        check_str(ev, "asker", "carol");
        check_str(ev, "question", "lunch?");
        assert_true(json_is_false(json_object_get(ev, "multi")));
        assert_null(json_object_get(ev, "options"));
        json_decref(ev);
        json_decref(arr);

        /* Nothing for the askers; the caller's options are not taken. */
        assert_int_equal(count_messages(fx->store), 2);
        assert_int_equal(opts->refcount, 1);
        json_decref(opts);
}

/* The event is a durable write in the open batch; other connections see it after commit. */
static void test_ask_commit(void **state)
{
        Fixture *fx = *state;
        int64_t id = ask(fx->store, "alice", "bob", "q", NULL, false, 0);
        assert_true(store_batch_open(fx->store));
        assert_int_equal(tu_sql_int(fx->store, "PRAGMA synchronous", 0), 2); /* FULL */
        assert_int_equal(store_batch_commit(fx->store), 0);
        sqlite3 *h = NULL;
        assert_int_equal(sqlite3_open_v2(fx->db, &h, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
        sqlite3_stmt *st = NULL;
        assert_int_equal(sqlite3_prepare_v2(h,
                                            "SELECT (SELECT COUNT(*) FROM messages), "
                                            "(SELECT MAX(id) FROM questions)",
                                            -1, &st, NULL),
                         SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int64(st, 0), 1);
        assert_int_equal(sqlite3_column_int64(st, 1), id);
        sqlite3_finalize(st);
        sqlite3_close(h);
}

/* ---- answer ---- */

static void test_answer_by_target(void **state)
{
        Fixture *fx = *state;
        int64_t id = ask(fx->store, "alice", "bob", "ship it?", NULL, false, 0);
        char *asker = NULL;
        assert_int_equal(questions_answer(fx->store, id, "bob", "yes", false, &asker), 0);
        assert_non_null(asker);
        assert_string_equal(asker, "alice");
        free(asker);
        check_answered(fx->store, "alice", id, "ship it?", "yes", "bob");
        check_row(fx->store, id, "yes", "bob");
        assert_int_equal(open_count(fx->store, NULL), 0);
        /* bob's inbox holds only the question_asked event. */
        json_t *arr = inbox(fx->store, "bob");
        assert_int_equal(json_array_size(arr), 1);
        json_decref(arr);

        /* ret_asker may be NULL. */
        int64_t id2 = ask(fx->store, "carol", "bob", "tea?", NULL, false, 0);
        assert_int_equal(questions_answer(fx->store, id2, "bob", "no", false, NULL), 0);
        check_answered(fx->store, "carol", id2, "tea?", "no", "bob");
}

static void test_answer_to_operator_question(void **state)
{
        Fixture *fx = *state;
        int64_t id = ask(fx->store, "alice", "operator", "may I?", NULL, false, 0);
        char *asker = NULL;
        assert_int_equal(questions_answer(fx->store, id, "operator", "go ahead", false, &asker), 0);
        assert_string_equal(asker, "alice");
        free(asker);
        check_answered(fx->store, "alice", id, "may I?", "go ahead", "operator");
}

static void test_answer_by_non_target(void **state)
{
        Fixture *fx = *state;
        int64_t id = ask(fx->store, "alice", "bob", "ship it?", NULL, false, 0);
        char *asker = (char *)0x1;
        assert_int_equal(questions_answer(fx->store, id, "carol", "yes", false, &asker), -EPERM);
        assert_ptr_equal(asker, (char *)0x1);
        /* The asker may not answer her own question either, nor the operator without its
         * authority. */
        assert_int_equal(questions_answer(fx->store, id, "alice", "yes", false, &asker), -EPERM);
        assert_int_equal(questions_answer(fx->store, id, "operator", "yes", false, &asker), -EPERM);
        assert_ptr_equal(asker, (char *)0x1);
        check_row(fx->store, id, NULL, NULL);
        json_t *arr = inbox(fx->store, "alice");
        assert_int_equal(json_array_size(arr), 0);
        json_decref(arr);
        assert_int_equal(open_count(fx->store, NULL), 1);

        asker = NULL;
        assert_int_equal(questions_answer(fx->store, id, "operator", "no", true, &asker), 0);
        assert_string_equal(asker, "alice");
        free(asker);
        check_answered(fx->store, "alice", id, "ship it?", "no", "operator");
        check_row(fx->store, id, "no", "operator");
}

static void test_answer_unknown(void **state)
{
        Fixture *fx = *state;
        char *asker = (char *)0x1;
        assert_int_equal(questions_answer(fx->store, 1, "bob", "yes", false, &asker), -ENOENT);
        assert_int_equal(questions_answer(fx->store, 1, "operator", "yes", true, &asker), -ENOENT);
        int64_t id = ask(fx->store, "alice", "bob", "q", NULL, false, 0);
        assert_int_equal(questions_answer(fx->store, id + 1, "bob", "yes", false, &asker), -ENOENT);
        assert_int_equal(questions_answer(fx->store, 0, "bob", "yes", false, &asker), -ENOENT);
        assert_int_equal(questions_answer(fx->store, -1, "bob", "yes", false, &asker), -ENOENT);
        assert_ptr_equal(asker, (char *)0x1);
        assert_int_equal(questions_cancel(fx->store, id + 1, "alice", false), -ENOENT);
        assert_int_equal(questions_cancel(fx->store, id + 1, "operator", true), -ENOENT);
        check_row(fx->store, id, NULL, NULL);
}

static void test_answer_twice(void **state)
{
        Fixture *fx = *state;
        int64_t id = ask(fx->store, "alice", "bob", "ship it?", NULL, false, 0);
        assert_int_equal(questions_answer(fx->store, id, "bob", "yes", false, NULL), 0);
        char *asker = (char *)0x1;
        assert_int_equal(questions_answer(fx->store, id, "bob", "no", false, &asker), -EALREADY);
        assert_int_equal(questions_answer(fx->store, id, "operator", "no", true, &asker),
                         -EALREADY);
        assert_ptr_equal(asker, (char *)0x1);
        assert_int_equal(questions_cancel(fx->store, id, "alice", false), -EALREADY);
        assert_int_equal(questions_cancel(fx->store, id, "operator", true), -EALREADY);
        check_row(fx->store, id, "yes", "bob");
        check_answered(fx->store, "alice", id, "ship it?", "yes", "bob");

        /* Still answered after a commit and reopen. */
        assert_int_equal(store_batch_commit(fx->store), 0);
        fx->store = store_close(fx->store);
        assert_int_equal(store_open(fx->db, &fx->store), 0);
        assert_int_equal(questions_answer(fx->store, id, "bob", "no", false, NULL), -EALREADY);
        check_row(fx->store, id, "yes", "bob");
}

/* ---- cancel ---- */

static void test_cancel_by_asker(void **state)
{
        Fixture *fx = *state;
        int64_t id = ask(fx->store, "alice", "bob", "ship it?", NULL, false, 0);
        assert_int_equal(questions_cancel(fx->store, id, "alice", false), 0);
        check_row(fx->store, id, "[cancelled by alice]", "alice");
        check_answered(fx->store, "alice", id, "ship it?", "[cancelled by alice]", "alice");
        assert_int_equal(open_count(fx->store, NULL), 0);
        assert_int_equal(questions_answer(fx->store, id, "bob", "yes", false, NULL), -EALREADY);
}

static void test_cancel_by_other(void **state)
{
        Fixture *fx = *state;
        int64_t id = ask(fx->store, "alice", "bob", "ship it?", NULL, false, 0);
        assert_int_equal(questions_cancel(fx->store, id, "bob", false), -EPERM);
        assert_int_equal(questions_cancel(fx->store, id, "carol", false), -EPERM);
        assert_int_equal(questions_cancel(fx->store, id, "operator", false), -EPERM);
        check_row(fx->store, id, NULL, NULL);
        json_t *arr = inbox(fx->store, "alice");
        assert_int_equal(json_array_size(arr), 0);
        json_decref(arr);
        assert_int_equal(open_count(fx->store, NULL), 1);
}

static void test_cancel_by_operator(void **state)
{
        Fixture *fx = *state;
        int64_t id = ask(fx->store, "alice", "bob", "ship it?", NULL, false, 0);
        assert_int_equal(questions_cancel(fx->store, id, "operator", true), 0);
        check_row(fx->store, id, "[cancelled by operator]", "operator");
        check_answered(fx->store, "alice", id, "ship it?", "[cancelled by operator]", "operator");
        assert_int_equal(open_count(fx->store, NULL), 0);
}

/* ---- operator as asker ---- */

static void test_operator_asker_no_inbox(void **state)
{
        Fixture *fx = *state;
        int64_t id = ask(fx->store, "operator", "bob", "status?", NULL, false, 0);
        assert_int_equal(count_messages(fx->store), 1); /* bob's question_asked */
        char *asker = NULL;
        assert_int_equal(questions_answer(fx->store, id, "bob", "fine", false, &asker), 0);
        assert_string_equal(asker, "operator");
        free(asker);
        assert_int_equal(count_messages(fx->store), 1);
        json_t *arr = inbox(fx->store, "operator");
        assert_int_equal(json_array_size(arr), 0);
        json_decref(arr);
        check_row(fx->store, id, "fine", "bob");

        int64_t id2 = ask(fx->store, "operator", "bob", "again?", NULL, false, 0);
        assert_int_equal(questions_cancel(fx->store, id2, "operator", true), 0);
        int64_t id3 = ask(fx->store, "operator", "bob", "and?", NULL, false, 1000);
        json_t *askers = json_array();
        assert_int_equal(questions_expire(fx->store, 1000, askers), 1);
        json_decref(askers);
        check_row(fx->store, id3, "[expired]", "ttl-watchdog");
        assert_int_equal(count_messages(fx->store), 3); /* three question_asked, no answers */
        arr = inbox(fx->store, "operator");
        assert_int_equal(json_array_size(arr), 0);
        json_decref(arr);
}

/* ---- deadlines ---- */

static void test_expire(void **state)
{
        Fixture *fx = *state;
        int64_t early = ask(fx->store, "alice", "bob", "early", NULL, false, 1000);
        int64_t late = ask(fx->store, "carol", "bob", "late", NULL, false, 2000);
        int64_t none = ask(fx->store, "dave", "bob", "none", NULL, false, 0);
        int64_t edge = ask(fx->store, "erin", "operator", "edge", NULL, false, 1500);
        int64_t done = ask(fx->store, "frank", "bob", "done", NULL, false, 500);
        assert_int_equal(questions_answer(fx->store, done, "bob", "ok", false, NULL), 0);

        json_t *askers = json_pack("[s]", "already here");
        assert_non_null(askers);
        assert_int_equal(questions_expire(fx->store, 999, askers), 0);
        assert_int_equal(json_array_size(askers), 1);

        /* A deadline equal to now has passed. */
        assert_int_equal(questions_expire(fx->store, 1500, askers), 2);
        assert_int_equal(json_array_size(askers), 3);
        assert_string_equal(json_string_value(json_array_get(askers, 0)), "already here");
        assert_string_equal(json_string_value(json_array_get(askers, 1)), "alice");
        assert_string_equal(json_string_value(json_array_get(askers, 2)), "erin");
        check_row(fx->store, early, "[expired]", "ttl-watchdog");
        check_row(fx->store, edge, "[expired]", "ttl-watchdog");
        check_row(fx->store, late, NULL, NULL);
        check_row(fx->store, none, NULL, NULL);
        check_row(fx->store, done, "ok", "bob");
        check_answered(fx->store, "alice", early, "early", "[expired]", "ttl-watchdog");
        check_answered(fx->store, "erin", edge, "edge", "[expired]", "ttl-watchdog");
        check_answered(fx->store, "frank", done, "done", "ok", "bob");
        json_t *arr = inbox(fx->store, "carol");
        assert_int_equal(json_array_size(arr), 0);
        json_decref(arr);

        /* Expired questions are not expired again. */
        assert_int_equal(questions_expire(fx->store, 1500, askers), 0);
        assert_int_equal(json_array_size(askers), 3);

        assert_int_equal(questions_expire(fx->store, INT64_MAX, askers), 1);
        assert_int_equal(json_array_size(askers), 4);
        assert_string_equal(json_string_value(json_array_get(askers, 3)), "carol");
        check_row(fx->store, late, "[expired]", "ttl-watchdog");
        check_answered(fx->store, "carol", late, "late", "[expired]", "ttl-watchdog");
        check_row(fx->store, none, NULL, NULL);
        assert_int_equal(open_count(fx->store, NULL), 1);
        json_decref(askers);
}

/* The header promises that askers receives "the askers that got an event"; the operator gets
 * no event, so an expired question of the operator's must not name it. */
static void test_expire_operator_asker_not_listed(void **state)
{
        Fixture *fx = *state;
        int64_t id = ask(fx->store, "operator", "bob", "status?", NULL, false, 1000);
        int64_t peer = ask(fx->store, "alice", "bob", "and you?", NULL, false, 1000);
        json_t *askers = json_array();
        assert_non_null(askers);
        assert_int_equal(questions_expire(fx->store, 1000, askers), 2);
        check_row(fx->store, id, "[expired]", "ttl-watchdog");
        check_row(fx->store, peer, "[expired]", "ttl-watchdog");
        json_t *arr = inbox(fx->store, "operator");
        assert_int_equal(json_array_size(arr), 0);
        json_decref(arr);
        /* Checked after the decref so that the failure leaks nothing under valgrind. */
        size_t n = json_array_size(askers), operators = 0, alices = 0;
        for (size_t i = 0; i < n; i++) {
                const char *a = json_string_value(json_array_get(askers, i));
                operators += strcmp(a, "operator") == 0;
                alices += strcmp(a, "alice") == 0;
        }
        json_decref(askers);
        assert_int_equal(alices, 1);
        assert_int_equal(operators, 0); /* fails: askers is ["operator", "alice"] */
        assert_int_equal(n, 1);
}

static void test_next_deadline(void **state)
{
        Fixture *fx = *state;
        int64_t t = -1;
        assert_int_equal(questions_next_deadline(fx->store, &t), 0);
        assert_int_equal(t, 0);

        (void)ask(fx->store, "alice", "bob", "no deadline", NULL, false, 0);
        t = -1;
        assert_int_equal(questions_next_deadline(fx->store, &t), 0);
        assert_int_equal(t, 0);

        int64_t base = store_now_ms();
        (void)ask(fx->store, "alice", "bob", "b", NULL, false, base + 3000);
        int64_t first = ask(fx->store, "carol", "bob", "a", NULL, false, base + 1000);
        (void)ask(fx->store, "dave", "operator", "c", NULL, false, base + 2000);
        assert_int_equal(questions_next_deadline(fx->store, &t), 0);
        assert_int_equal(t, base + 1000);

        /* Answered questions do not count. */
        assert_int_equal(questions_answer(fx->store, first, "bob", "x", false, NULL), 0);
        assert_int_equal(questions_next_deadline(fx->store, &t), 0);
        assert_int_equal(t, base + 2000);
        json_t *askers = json_array();
        assert_int_equal(questions_expire(fx->store, base + 2500, askers), 1);
        json_decref(askers);
        assert_int_equal(questions_next_deadline(fx->store, &t), 0);
        assert_int_equal(t, base + 3000);
        askers = json_array();
        assert_int_equal(questions_expire(fx->store, base + 3000, askers), 1);
        json_decref(askers);
        t = -1;
        assert_int_equal(questions_next_deadline(fx->store, &t), 0);
        assert_int_equal(t, 0);
}

/* ---- listing ---- */

static void check_listed(json_t *q, int64_t id, const char *asker, const char *target,
                         const char *question, bool multi, const json_t *options,
                         int64_t deadline_ms, int64_t lo_ms, int64_t hi_ms)
{
        assert_true(json_is_object(q));
        assert_int_equal(json_object_size(q), 6 + (options != NULL) + (deadline_ms > 0));
        check_int(q, "id", id);
        check_str(q, "asker", asker);
        check_str(q, "target", target);
        check_str(q, "question", question);
        assert_true(json_is_boolean(json_object_get(q, "multi")));
        assert_int_equal(json_is_true(json_object_get(q, "multi")), multi);
        if (options)
                assert_true(json_equal(json_object_get(q, "options"), (json_t *)options));
        else
                assert_null(json_object_get(q, "options"));

        const char *ts = json_string_value(json_object_get(q, "asked_at"));
        assert_non_null(ts);
        struct tm tm = {0};
        const char *end = strptime(ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
        assert_non_null(end);
        assert_int_equal(*end, '\0');
        int64_t secs = (int64_t)timegm(&tm);
        assert_true(secs >= lo_ms / 1000);
        assert_true(secs <= hi_ms / 1000);

        const char *dl = json_string_value(json_object_get(q, "deadline_at"));
        if (deadline_ms > 0) {
                assert_non_null(dl);
                memset(&tm, 0, sizeof(tm));
                end = strptime(dl, "%Y-%m-%dT%H:%M:%SZ", &tm);
                assert_non_null(end);
                assert_int_equal(*end, '\0');
                assert_int_equal((int64_t)timegm(&tm), deadline_ms / 1000);
        } else {
                assert_null(json_object_get(q, "deadline_at"));
        }
}

static void test_list_open(void **state)
{
        Fixture *fx = *state;
        json_t *opts = json_pack("[s, s]", "red", "blue");
        assert_non_null(opts);
        int64_t lo = store_now_ms();
        int64_t dl = 1800000000000; /* 2027-01-15T08:00:00Z */
        int64_t q1 = ask(fx->store, "alice", "bob", "colour?", opts, true, dl);
        int64_t q2 = ask(fx->store, "bob", "operator", "deploy?", NULL, false, 0);
        int64_t q3 = ask(fx->store, "carol", "dave", "lunch?", NULL, false, 0);
        int64_t q4 = ask(fx->store, "dave", "alice", "answered", NULL, false, 0);
        int64_t hi = store_now_ms();
        assert_int_equal(questions_answer(fx->store, q4, "alice", "yes", false, NULL), 0);

        json_t *arr = json_pack("[s]", "kept");
        assert_int_equal(questions_list_open(fx->store, NULL, arr), 0);
        assert_int_equal(json_array_size(arr), 4);
        assert_string_equal(json_string_value(json_array_get(arr, 0)), "kept");
        check_listed(json_array_get(arr, 1), q1, "alice", "bob", "colour?", true, opts, dl, lo, hi);
        check_listed(json_array_get(arr, 2), q2, "bob", "operator", "deploy?", false, NULL, 0, lo,
                     hi);
        check_listed(json_array_get(arr, 3), q3, "carol", "dave", "lunch?", false, NULL, 0, lo, hi);
        json_decref(arr);

        /* bob asked q2 and is the target of q1. */
        arr = json_array();
        assert_int_equal(questions_list_open(fx->store, "bob", arr), 0);
        assert_int_equal(json_array_size(arr), 2);
        check_int(json_array_get(arr, 0), "id", q1);
        check_int(json_array_get(arr, 1), "id", q2);
        json_decref(arr);

        /* alice asked q1; q4 to her is answered. */
        arr = json_array();
        assert_int_equal(questions_list_open(fx->store, "alice", arr), 0);
        assert_int_equal(json_array_size(arr), 1);
        check_int(json_array_get(arr, 0), "id", q1);
        json_decref(arr);

        arr = json_array();
        assert_int_equal(questions_list_open(fx->store, "operator", arr), 0);
        assert_int_equal(json_array_size(arr), 1);
        check_int(json_array_get(arr, 0), "id", q2);
        json_decref(arr);

        arr = json_array();
        assert_int_equal(questions_list_open(fx->store, "dave", arr), 0);
        assert_int_equal(json_array_size(arr), 1);
        check_int(json_array_get(arr, 0), "id", q3);
        json_decref(arr);

        assert_int_equal(open_count(fx->store, "nobody"), 0);
        json_decref(opts);
}

/* Listing open questions costs as much with a long history of answered ones as with none. */
static void test_list_open_does_not_read_the_answered(void **state)
{
        Fixture *fx = *state;
        Store *s = fx->store;
        enum { ANSWERED = 500, MAX_STEPS = 300 };
        for (int i = 0; i < ANSWERED; i++) {
                int64_t q = ask(s, "alice", "bob", "old", NULL, false, 0);
                assert_int_equal(questions_answer(s, q, "bob", "done", false, NULL), 0);
        }
        int64_t open = ask(s, "alice", "bob", "open", NULL, false, 0);
        (void)tu_vm_steps(s);

        json_t *arr = json_array();
        assert_int_equal(questions_list_open(s, "alice", arr), 0);
        assert_int_equal(json_array_size(arr), 1);
        assert_int_equal(json_integer_value(json_object_get(json_array_get(arr, 0), "id")), open);
        json_decref(arr);
        assert_in_range(tu_vm_steps(s), 1, MAX_STEPS);

        arr = json_array();
        assert_int_equal(questions_list_open(s, NULL, arr), 0);
        assert_int_equal(json_array_size(arr), 1);
        json_decref(arr);
        assert_in_range(tu_vm_steps(s), 1, MAX_STEPS);
}

int main(void)
{
        log_set_max_level(LOG_CRIT);
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        const struct CMUnitTest tests[] = {
                T(test_ask_operator_no_event),
                T(test_ask_peer_event),
                T(test_ask_commit),
                T(test_answer_by_target),
                T(test_answer_to_operator_question),
                T(test_answer_by_non_target),
                T(test_answer_unknown),
                T(test_answer_twice),
                T(test_cancel_by_asker),
                T(test_cancel_by_other),
                T(test_cancel_by_operator),
                T(test_operator_asker_no_inbox),
                T(test_expire),
                T(test_expire_operator_asker_not_listed),
                T(test_next_deadline),
                T(test_list_open),
                T(test_list_open_does_not_read_the_answered),
        };
        return cmocka_run_group_tests_name("questions", tests, NULL, NULL);
}
