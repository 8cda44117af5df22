/* Questions in sqlite.  Delivery of events goes through the broker (sender "hive"); waking
 * parked receivers is the caller's job. */
#define LOG_SUBSYSTEM "questions"

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "cleanup.h"
#include "log.h"
#include "proto.h"
#include "questions.h"
#include "timeutil.h"

#define COLUMNS "id, asker, target, question, options_json, multi, asked_at, deadline_at"
/* Open questions are read through the index of the unanswered ones, not by a scan of every
 * question ever asked (which is what sqlite's planner picks otherwise). */
#define OPEN "INDEXED BY questions_open "

/* Statements come from the connection's cache (store_stmt()). */
#define prep(s, sql, st) store_stmt(s, sql, st)

/* Sends a system event (a JSON object) to recipient's inbox. */
static int send_event(Store *s, const char *recipient, json_t *event)
{
        _cleanup_json_ json_t *e = event;
        if (!e)
                return -ENOMEM;
        _cleanup_free_ char *body = json_dumps(e, JSON_COMPACT);
        if (!body)
                return -ENOMEM;
        int64_t id;
        return broker_send(s, HIVE_SYSTEM_SENDER, recipient, body, 0, &id);
}

static json_t *row_json(sqlite3_stmt *st)
{
        char ts[TIMEUTIL_RFC3339_MAX];
        timeutil_rfc3339(sqlite3_column_int64(st, 6) / 1000, ts);
        json_t *q = json_pack("{s:I, s:s, s:s, s:s, s:b, s:s}", "id",
                              (json_int_t)sqlite3_column_int64(st, 0), "asker",
                              (const char *)sqlite3_column_text(st, 1), "target",
                              (const char *)sqlite3_column_text(st, 2), "question",
                              (const char *)sqlite3_column_text(st, 3), "multi",
                              sqlite3_column_int(st, 5), "asked_at", ts);
        if (!q)
                return NULL;
        const char *opts = (const char *)sqlite3_column_text(st, 4);
        if (opts)
                json_object_set_new(q, "options", json_loads(opts, 0, NULL));
        if (sqlite3_column_type(st, 7) != SQLITE_NULL) {
                timeutil_rfc3339(sqlite3_column_int64(st, 7) / 1000, ts);
                json_object_set_new(q, "deadline_at", json_string(ts));
        }
        return q;
}

int questions_ask(Store *s, const char *asker, const char *target, const char *question,
                  const json_t *options, bool multi, int64_t deadline_ms, int64_t *ret_id)
{
        int r = store_batch_write(s, true);
        if (r < 0)
                return r;
        r = store_op_begin(s);
        if (r < 0)
                return r;
        _cleanup_free_ char *opts = options ? json_dumps(options, JSON_COMPACT) : NULL;
        sqlite3_stmt *st = NULL;
        r = prep(s,
                 "INSERT INTO questions (asker, target, question, options_json, multi, "
                 "asked_at, deadline_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                 &st);
        if (r < 0)
                return store_op_end(s, r);
        sqlite3_bind_text(st, 1, asker, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, target, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, question, -1, SQLITE_STATIC);
        if (opts)
                sqlite3_bind_text(st, 4, opts, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 5, multi);
        sqlite3_bind_int64(st, 6, store_now_ms());
        if (deadline_ms > 0)
                sqlite3_bind_int64(st, 7, deadline_ms);
        int rc = sqlite3_step(st);
        store_stmt_done(st);
        if (rc != SQLITE_DONE)
                return store_op_end(s, store_sqlite_errno(s, rc, "insert question"));
        int64_t id = sqlite3_last_insert_rowid(store_db(s));

        if (strcmp(target, "operator") != 0) {
                json_t *ev = json_pack("{s:s, s:I, s:s, s:s, s:b}", "event", "question_asked", "id",
                                       (json_int_t)id, "asker", asker, "question", question,
                                       "multi", multi);
                if (ev && options)
                        json_object_set(ev, "options", (json_t *)options);
                r = send_event(s, target, ev);
                if (r < 0)
                        return store_op_end(s, r);
        }
        r = store_op_end(s, 0);
        if (r >= 0)
                *ret_id = id;
        return r;
}

/* Marks id answered and tells the asker.  who_check: NULL, or the identity that must be
 * the target (answer) or the asker (cancel). */
static int questions_resolve(Store *s, int64_t id, const char *answerer, const char *answer,
                             const char *must_be_target, const char *must_be_asker,
                             char **ret_asker)
{
        sqlite3_stmt *st = NULL;
        int r = prep(s, "SELECT asker, target, question, answered_at FROM questions WHERE id = ?1",
                     &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, id);
        int rc = sqlite3_step(st);
        if (rc != SQLITE_ROW) {
                store_stmt_done(st);
                return rc == SQLITE_DONE ? -ENOENT : store_sqlite_errno(s, rc, "question");
        }
        _cleanup_free_ char *asker = strdup((const char *)sqlite3_column_text(st, 0));
        _cleanup_free_ char *target = strdup((const char *)sqlite3_column_text(st, 1));
        _cleanup_free_ char *question = strdup((const char *)sqlite3_column_text(st, 2));
        bool answered = sqlite3_column_type(st, 3) != SQLITE_NULL;
        store_stmt_done(st);
        if (!asker || !target || !question)
                return -ENOMEM;
        if (answered)
                return -EALREADY;
        if (must_be_target && strcmp(must_be_target, target) != 0)
                return -EPERM;
        if (must_be_asker && strcmp(must_be_asker, asker) != 0)
                return -EPERM;

        r = store_batch_write(s, true);
        if (r < 0)
                return r;
        r = store_op_begin(s);
        if (r < 0)
                return r;
        r = prep(s,
                 "UPDATE questions SET answered_at = ?2, answer = ?3, answerer = ?4 "
                 "WHERE id = ?1 AND answered_at IS NULL",
                 &st);
        if (r < 0)
                return store_op_end(s, r);
        sqlite3_bind_int64(st, 1, id);
        sqlite3_bind_int64(st, 2, store_now_ms());
        sqlite3_bind_text(st, 3, answer, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, answerer, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        store_stmt_done(st);
        if (rc != SQLITE_DONE)
                return store_op_end(s, store_sqlite_errno(s, rc, "answer"));
        if (strcmp(asker, "operator") != 0) {
                r = send_event(s, asker,
                               json_pack("{s:s, s:I, s:s, s:s, s:s}", "event", "question_answered",
                                         "id", (json_int_t)id, "question", question, "answer",
                                         answer, "answerer", answerer));
                if (r < 0)
                        return store_op_end(s, r);
        }
        r = store_op_end(s, 0);
        if (r >= 0 && ret_asker)
                *ret_asker = TAKE_PTR(asker);
        return r;
}

int questions_answer(Store *s, int64_t id, const char *answerer, const char *answer,
                     bool operator_authority, char **ret_asker)
{
        return questions_resolve(s, id, answerer, answer, operator_authority ? NULL : answerer,
                                 NULL, ret_asker);
}

int questions_cancel(Store *s, int64_t id, const char *who, bool operator_authority)
{
        char answer[96];
        snprintf(answer, sizeof(answer), "[cancelled by %s]", who);
        return questions_resolve(s, id, who, answer, NULL, operator_authority ? NULL : who, NULL);
}

int questions_expire(Store *s, int64_t now_ms, json_t *askers)
{
        sqlite3_stmt *st = NULL;
        int r = prep(s,
                     "SELECT id, asker FROM questions WHERE answered_at IS NULL "
                     "AND deadline_at IS NOT NULL AND deadline_at <= ?1 ORDER BY id LIMIT 100",
                     &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, now_ms);
        int64_t ids[100];
        size_t n = 0;
        while (n < 100 && sqlite3_step(st) == SQLITE_ROW)
                ids[n++] = sqlite3_column_int64(st, 0);
        store_stmt_done(st);
        int count = 0;
        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *asker = NULL;
                r = questions_resolve(s, ids[i], "ttl-watchdog", "[expired]", NULL, NULL, &asker);
                if (r == -EALREADY)
                        continue; /* answered meanwhile */
                if (r < 0)
                        return r;
                count++;
                if (strcmp(asker, "operator") != 0) /* the operator gets no inbox event */
                        json_array_append_new(askers, json_string(asker));
        }
        return count;
}

int questions_next_deadline(Store *s, int64_t *ret_ms)
{
        *ret_ms = 0;
        return store_query_int64(s,
                                 "SELECT MIN(deadline_at) FROM questions WHERE answered_at IS NULL "
                                 "AND deadline_at IS NOT NULL",
                                 NULL, ret_ms);
}

int questions_list_open(Store *s, const char *who, json_t *arr)
{
        sqlite3_stmt *st = NULL;
        int r = prep(s,
                     who ? "SELECT " COLUMNS " FROM questions " OPEN "WHERE answered_at IS NULL "
                           "AND (asker = ?1 OR target = ?1) ORDER BY id"
                         : "SELECT " COLUMNS " FROM questions " OPEN "WHERE answered_at IS NULL "
                           "ORDER BY id",
                     &st);
        if (r < 0)
                return r;
        if (who)
                sqlite3_bind_text(st, 1, who, -1, SQLITE_STATIC);
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
                if (json_array_append_new(arr, row_json(st)) < 0) {
                        store_stmt_done(st);
                        return -ENOMEM;
                }
        store_stmt_done(st);
        return rc == SQLITE_DONE ? 0 : store_sqlite_errno(s, rc, "open questions");
}
