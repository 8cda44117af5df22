/* Reminders in sqlite, fired by the scheduler thread (scheduler.c). */
#define LOG_SUBSYSTEM "reminders"

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "cleanup.h"
#include "log.h"
#include "reminders.h"
#include "timeutil.h"

/* Statements come from the connection's cache (store_stmt()). */
#define prep(s, sql, st) store_stmt(s, sql, st)

int reminders_check_path(const char *file_path, char **ret)
{
        size_t n = strlen(file_path);
        if (n == 0 || n >= 1024)
                return -EINVAL;
        const char *rel = file_path;
        if (rel[0] == '/') {
                if (strncmp(rel, "/state/", 7) != 0)
                        return -EINVAL;
                rel += 7;
        }
        if (!*rel)
                return -EINVAL;
        /* every component must be a plain name: no "", ".", ".." */
        const char *p = rel;
        while (*p) {
                const char *slash = strchr(p, '/');
                size_t len = slash ? (size_t)(slash - p) : strlen(p);
                if (len == 0 || (len == 1 && p[0] == '.') ||
                    (len == 2 && p[0] == '.' && p[1] == '.'))
                        return -EINVAL;
                for (size_t i = 0; i < len; i++)
                        if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
                                return -EINVAL;
                p += len + (slash ? 1 : 0);
                if (slash && !*p)
                        return -EINVAL;
        }
        char *out = NULL;
        if (asprintf(&out, "/state/%s", rel) < 0)
                return -ENOMEM;
        *ret = out;
        return 0;
}

int reminders_count_pending(Store *s, const char *agent, int64_t *ret)
{
        return store_query_int64(s,
                                 agent ? "SELECT COUNT(*) FROM reminders WHERE sent_at IS NULL AND "
                                         "cancelled_at IS NULL AND agent = ?1"
                                       : "SELECT COUNT(*) FROM reminders WHERE sent_at IS NULL AND "
                                         "cancelled_at IS NULL",
                                 agent, ret);
}

int reminders_add(Store *s, const char *agent, const char *message, const char *file_path,
                  int64_t due_ms, int64_t *ret_id)
{
        int64_t pending = 0;
        int r = reminders_count_pending(s, agent, &pending);
        if (r < 0)
                return r;
        if (pending >= REMINDERS_PENDING_MAX)
                return -EUSERS;
        r = store_batch_write(s, true);
        if (r < 0)
                return r;
        sqlite3_stmt *st = NULL;
        r = prep(s,
                 "INSERT INTO reminders (agent, message, file_path, due_at, created_at) "
                 "VALUES (?1, ?2, ?3, ?4, ?5)",
                 &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, agent, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, message, -1, SQLITE_STATIC);
        if (file_path)
                sqlite3_bind_text(st, 3, file_path, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, due_ms);
        sqlite3_bind_int64(st, 5, store_now_ms());
        int rc = sqlite3_step(st);
        store_stmt_done(st);
        if (rc != SQLITE_DONE)
                return store_sqlite_errno(s, rc, "insert reminder");
        *ret_id = sqlite3_last_insert_rowid(store_db(s));
        return 0;
}

typedef struct Due {
        int64_t id;
        char *agent, *message, *file_path;
        int attempts;
} Due;

int reminders_fire_due(Store *s, int64_t now_ms, json_t *agents)
{
        sqlite3_stmt *st = NULL;
        int r = prep(s,
                     "SELECT id, agent, message, file_path, attempt_count FROM reminders "
                     "WHERE sent_at IS NULL AND cancelled_at IS NULL AND due_at <= ?1 "
                     "ORDER BY due_at LIMIT 100",
                     &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, now_ms);
        Due due[100];
        size_t n = 0;
        int rc;
        while (n < 100 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                const char *fp = (const char *)sqlite3_column_text(st, 3);
                due[n] = (Due){
                        .id = sqlite3_column_int64(st, 0),
                        .agent = strdup((const char *)sqlite3_column_text(st, 1)),
                        .message = strdup((const char *)sqlite3_column_text(st, 2)),
                        .file_path = fp ? strdup(fp) : NULL,
                        .attempts = sqlite3_column_int(st, 4),
                };
                n++;
        }
        store_stmt_done(st);

        int fired = 0;
        for (size_t i = 0; i < n; i++) {
                Due *d = &due[i];
                int k = store_batch_write(s, true);
                _cleanup_free_ char *body = NULL;
                if (k >= 0 && !d->agent)
                        k = -ENOMEM;
                if (k >= 0 &&
                    (d->file_path ? asprintf(&body, "%s\n\n(file: %s)", d->message, d->file_path)
                                  : asprintf(&body, "%s", d->message)) < 0) {
                        body = NULL;
                        k = -ENOMEM;
                }
                int64_t mid = 0;
                if (k >= 0)
                        k = store_op_begin(s);
                if (k >= 0) {
                        k = broker_send(s, REMINDER_SENDER, d->agent, body, 0, &mid);
                        if (k >= 0) {
                                k = prep(s,
                                         "UPDATE reminders SET sent_at = ?2, attempt_count = "
                                         "attempt_count + 1, last_error = NULL WHERE id = ?1",
                                         &st);
                                if (k >= 0) {
                                        sqlite3_bind_int64(st, 1, d->id);
                                        sqlite3_bind_int64(st, 2, now_ms);
                                        rc = sqlite3_step(st);
                                        store_stmt_done(st);
                                        if (rc != SQLITE_DONE)
                                                k = store_sqlite_errno(s, rc, "mark sent");
                                }
                        }
                        k = store_op_end(s, k);
                }
                if (k >= 0) {
                        fired++;
                        json_array_append_new(agents, json_string(d->agent));
                } else {
                        /* Keep the error and try again later, backing off up to a minute. */
                        log_warning_errno(k, "delivering reminder %lld to %s failed: %m",
                                          (long long)d->id, d->agent ? d->agent : "?");
                        int64_t backoff = 1000ll << (d->attempts < 6 ? d->attempts : 6);
                        if (prep(s,
                                 "UPDATE reminders SET attempt_count = attempt_count + 1, "
                                 "last_error = ?2, due_at = ?3 WHERE id = ?1",
                                 &st) >= 0) {
                                sqlite3_bind_int64(st, 1, d->id);
                                sqlite3_bind_text(st, 2, strerror(-k), -1, SQLITE_TRANSIENT);
                                sqlite3_bind_int64(st, 3, now_ms + backoff);
                                (void)sqlite3_step(st);
                                store_stmt_done(st);
                        }
                }
                free(d->agent);
                free(d->message);
                free(d->file_path);
        }
        return fired;
}

int reminders_next_due(Store *s, int64_t *ret_ms)
{
        *ret_ms = 0;
        return store_query_int64(s,
                                 "SELECT MIN(due_at) FROM reminders WHERE sent_at IS NULL AND "
                                 "cancelled_at IS NULL",
                                 NULL, ret_ms);
}

int reminders_list_pending(Store *s, const char *agent, json_t *arr)
{
        sqlite3_stmt *st = NULL;
        int r = prep(s,
                     agent ? "SELECT id, agent, message, file_path, due_at, attempt_count, "
                             "last_error FROM reminders WHERE sent_at IS NULL AND "
                             "cancelled_at IS NULL AND agent = ?1 ORDER BY due_at, id"
                           : "SELECT id, agent, message, file_path, due_at, attempt_count, "
                             "last_error FROM reminders WHERE sent_at IS NULL AND "
                             "cancelled_at IS NULL ORDER BY due_at, id",
                     &st);
        if (r < 0)
                return r;
        if (agent)
                sqlite3_bind_text(st, 1, agent, -1, SQLITE_STATIC);
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                char ts[TIMEUTIL_RFC3339_MAX];
                timeutil_rfc3339(sqlite3_column_int64(st, 4) / 1000, ts);
                json_t *j = json_pack("{s:I, s:s, s:s, s:s, s:I}", "id",
                                      (json_int_t)sqlite3_column_int64(st, 0), "agent",
                                      (const char *)sqlite3_column_text(st, 1), "message",
                                      (const char *)sqlite3_column_text(st, 2), "due_at", ts,
                                      "attempts", (json_int_t)sqlite3_column_int64(st, 5));
                if (j && sqlite3_column_type(st, 3) != SQLITE_NULL)
                        json_object_set_new(j, "file_path",
                                            json_string((const char *)sqlite3_column_text(st, 3)));
                if (j && sqlite3_column_type(st, 6) != SQLITE_NULL)
                        json_object_set_new(j, "last_error",
                                            json_string((const char *)sqlite3_column_text(st, 6)));
                if (json_array_append_new(arr, j) < 0) {
                        store_stmt_done(st);
                        return -ENOMEM;
                }
        }
        store_stmt_done(st);
        return rc == SQLITE_DONE ? 0 : store_sqlite_errno(s, rc, "list reminders");
}

int reminders_cancel(Store *s, int64_t id, const char *agent)
{
        sqlite3_stmt *st = NULL;
        int r = prep(s, "SELECT agent, sent_at, cancelled_at FROM reminders WHERE id = ?1", &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, id);
        int rc = sqlite3_step(st);
        if (rc != SQLITE_ROW) {
                store_stmt_done(st);
                return rc == SQLITE_DONE ? -ENOENT : store_sqlite_errno(s, rc, "reminder");
        }
        bool mine = strcmp((const char *)sqlite3_column_text(st, 0), agent) == 0;
        bool done = sqlite3_column_type(st, 1) != SQLITE_NULL ||
                    sqlite3_column_type(st, 2) != SQLITE_NULL;
        store_stmt_done(st);
        if (!mine)
                return -EPERM;
        if (done)
                return -EALREADY;
        r = store_batch_write(s, true);
        if (r < 0)
                return r;
        r = prep(s, "UPDATE reminders SET cancelled_at = ?2 WHERE id = ?1", &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 1, id);
        sqlite3_bind_int64(st, 2, store_now_ms());
        rc = sqlite3_step(st);
        store_stmt_done(st);
        return rc == SQLITE_DONE ? 0 : store_sqlite_errno(s, rc, "cancel reminder");
}
