/* The request_ids table.  Library-level: logs at debug only. */
#define LOG_SUBSYSTEM "store"

#include <errno.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "request_ids.h"

int request_ids_get(Store *s, const char *agent, const char *request_id, char **ret_cmd,
                    char **ret_answer)
{
        sqlite3_stmt *st = NULL;
        int r = store_stmt(s,
                           "SELECT cmd, answer FROM request_ids "
                           "WHERE agent = ?1 AND request_id = ?2",
                           &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, agent, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, request_id, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc != SQLITE_ROW) {
                store_stmt_done(st);
                return rc == SQLITE_DONE ? 0 : store_sqlite_errno(s, rc, "look up request id");
        }
        _cleanup_free_ char *cmd = strdup((const char *)sqlite3_column_text(st, 0));
        _cleanup_free_ char *answer = strdup((const char *)sqlite3_column_text(st, 1));
        store_stmt_done(st);
        if (!cmd || !answer)
                return -ENOMEM;
        *ret_cmd = TAKE_PTR(cmd);
        *ret_answer = TAKE_PTR(answer);
        return 1;
}

int request_ids_put(Store *s, const char *agent, const char *request_id, const char *cmd,
                    const char *answer)
{
        int r = store_batch_write(s, true);
        if (r < 0)
                return r;
        sqlite3_stmt *st = NULL;
        r = store_stmt(s,
                       "INSERT INTO request_ids (agent, request_id, cmd, answer, at) "
                       "VALUES (?1, ?2, ?3, ?4, ?5)",
                       &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, agent, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, request_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, cmd, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, answer, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, store_now_ms());
        int rc = sqlite3_step(st);
        store_stmt_done(st);
        return rc == SQLITE_DONE ? 0 : store_sqlite_errno(s, rc, "record request id");
}

int request_ids_vacuum(Store *s, int64_t cutoff_ms, unsigned batch)
{
        return store_vacuum_step(s,
                                 "DELETE FROM request_ids WHERE (agent, request_id) IN ("
                                 "SELECT agent, request_id FROM request_ids WHERE at < ?1 "
                                 "LIMIT ?2)",
                                 cutoff_ms, batch, "vacuum request ids");
}
