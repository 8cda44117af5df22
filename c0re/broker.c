/* Broker storage.  A message is never deleted before it is acked; a lease only hides it from
 * other recv calls until it expires, the connection that took it drops, or the daemon
 * restarts. */
#define LOG_SUBSYSTEM "broker"

#include <errno.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "cleanup.h"
#include "log.h"
#include "timeutil.h"

/* Statements come from the connection's cache: the hot path prepares nothing. */
#define prep(s, sql, st) store_stmt(s, sql, st)

/* What is still to be acked is read through the inbox index, never through the indexes over
 * a party's whole history (which sqlite's planner would otherwise pick for some of these). */
#define INBOX "INDEXED BY messages_inbox "

int broker_send(Store *s, const char *from, const char *to, const char *body, int64_t in_reply_to,
                int64_t *ret_id)
{
        int r = store_batch_write(s, true);
        if (r < 0)
                return r;
        sqlite3_stmt *st = NULL;
        r = prep(s,
                 "INSERT INTO messages (sender, recipient, body, in_reply_to, sent_at) "
                 "VALUES (?1, ?2, ?3, ?4, ?5)",
                 &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, from, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, to, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, body, -1, SQLITE_STATIC);
        if (in_reply_to > 0)
                sqlite3_bind_int64(st, 4, in_reply_to);
        else
                sqlite3_bind_null(st, 4);
        sqlite3_bind_int64(st, 5, store_now_ms());
        int rc = sqlite3_step(st);
        store_stmt_done(st);
        if (rc != SQLITE_DONE)
                return store_sqlite_errno(s, rc, "insert message");
        *ret_id = sqlite3_last_insert_rowid(store_db(s));
        return 0;
}

static int set_text(json_t *m, const char *key, sqlite3_stmt *st, int col)
{
        const char *text = (const char *)sqlite3_column_text(st, col); /* before its bytes */
        return json_object_set_new_nocheck(
                m, key, json_stringn(text, (size_t)sqlite3_column_bytes(st, col)));
}

/* A message row as a JSON object, built by hand: json_pack parses its format and checks every
 * key on every call, and this runs for every message delivered. */
static json_t *message_json(sqlite3_stmt *st)
{
        char ts[TIMEUTIL_RFC3339_MAX];
        timeutil_rfc3339(sqlite3_column_int64(st, 5) / 1000, ts);
        json_t *m = json_object();
        if (json_object_set_new_nocheck(m, "id", json_integer(sqlite3_column_int64(st, 0))) < 0 ||
            set_text(m, "from", st, 1) < 0 || set_text(m, "to", st, 2) < 0 ||
            set_text(m, "body", st, 3) < 0 ||
            json_object_set_new_nocheck(m, "sent_at", json_string(ts)) < 0 ||
            (sqlite3_column_type(st, 4) != SQLITE_NULL &&
             json_object_set_new_nocheck(m, "in_reply_to",
                                         json_integer(sqlite3_column_int64(st, 4))) < 0)) {
                json_decref(m);
                return NULL;
        }
        return m;
}

int broker_lease(Store *s, const char *recipient, unsigned max, int64_t lease_ms, json_t *arr,
                 int64_t **ret_ids, size_t *ret_n)
{
        *ret_ids = NULL;
        *ret_n = 0;
        int64_t now = store_now_ms();
        sqlite3_stmt *st = NULL;
        int r = prep(s,
                     "SELECT id, sender, recipient, body, in_reply_to, sent_at FROM messages " INBOX
                     "WHERE recipient = ?1 AND acked_at IS NULL "
                     "AND (leased_until IS NULL OR leased_until <= ?2) ORDER BY id LIMIT ?3",
                     &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, recipient, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, now);
        sqlite3_bind_int(st, 3, (int)max);
        _cleanup_free_ int64_t *ids = calloc(max ? max : 1, sizeof(int64_t));
        if (!ids) {
                store_stmt_done(st);
                return -ENOMEM;
        }
        size_t n = 0;
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                json_t *m = message_json(st);
                if (!m || json_array_append_new(arr, m) < 0) {
                        store_stmt_done(st);
                        return -ENOMEM;
                }
                ids[n++] = sqlite3_column_int64(st, 0);
        }
        store_stmt_done(st);
        if (rc != SQLITE_DONE)
                return store_sqlite_errno(s, rc, "select inbox");
        if (n == 0)
                return 0;

        /* Marking the lease need not be flushed: losing it only offers the message again. */
        r = store_batch_write(s, false);
        if (r < 0)
                return r;
        r = prep(s,
                 "UPDATE messages SET leased_until = ?2, delivered_at = COALESCE(delivered_at, "
                 "?3), deliveries = deliveries + 1 WHERE id = ?1",
                 &st);
        if (r < 0)
                return r;
        sqlite3_bind_int64(st, 2, now + lease_ms);
        sqlite3_bind_int64(st, 3, now);
        r = store_step_each_id(s, st, ids, n, "lease");
        store_stmt_done(st);
        if (r < 0)
                return r;
        *ret_ids = TAKE_PTR(ids);
        *ret_n = n;
        return 0;
}

int broker_available(Store *s, const char *recipient)
{
        sqlite3_stmt *st = NULL;
        int r = prep(s,
                     "SELECT 1 FROM messages " INBOX "WHERE recipient = ?1 AND acked_at IS NULL "
                     "AND (leased_until IS NULL OR leased_until <= ?2) LIMIT 1",
                     &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, recipient, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, store_now_ms());
        int rc = sqlite3_step(st);
        store_stmt_done(st);
        if (rc == SQLITE_ROW)
                return 1;
        if (rc == SQLITE_DONE)
                return 0;
        return store_sqlite_errno(s, rc, "available");
}

int broker_ack(Store *s, const char *recipient, const int64_t *ids, size_t n)
{
        if (n == 0)
                return 0;
        /* An ack need not be flushed either: losing it only delivers the message again. */
        int r = store_batch_write(s, false);
        if (r < 0)
                return r;
        sqlite3_stmt *st = NULL;
        r = prep(s,
                 "UPDATE messages SET acked_at = ?3, leased_until = NULL "
                 "WHERE id = ?1 AND recipient = ?2 AND acked_at IS NULL",
                 &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 2, recipient, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, store_now_ms());
        r = store_step_each_id(s, st, ids, n, "ack");
        store_stmt_done(st);
        return r;
}

int broker_unlease(Store *s, const int64_t *ids, size_t n)
{
        if (n == 0)
                return 0;
        int r = store_batch_write(s, false);
        if (r < 0)
                return r;
        sqlite3_stmt *st = NULL;
        r = prep(s, "UPDATE messages SET leased_until = NULL WHERE id = ?1 AND acked_at IS NULL",
                 &st);
        if (r < 0)
                return r;
        r = store_step_each_id(s, st, ids, n, "unlease");
        store_stmt_done(st);
        return r < 0 ? r : 0;
}

int broker_release(Store *s, const char *recipient, const int64_t *ids, size_t n)
{
        int r = store_batch_write(s, false);
        if (r < 0)
                return r;
        sqlite3_stmt *st = NULL;
        if (!ids) {
                r = prep(s,
                         "UPDATE messages " INBOX "SET leased_until = NULL WHERE recipient = ?1 "
                         "AND acked_at IS NULL AND leased_until > ?2",
                         &st);
                if (r < 0)
                        return r;
                sqlite3_bind_text(st, 1, recipient, -1, SQLITE_STATIC);
                sqlite3_bind_int64(st, 2, store_now_ms());
                int rc = sqlite3_step(st);
                store_stmt_done(st);
                if (rc != SQLITE_DONE)
                        return store_sqlite_errno(s, rc, "release");
                return sqlite3_changes(store_db(s));
        }
        if (n == 0)
                return 0;
        r = prep(s,
                 "UPDATE messages SET leased_until = NULL WHERE id = ?1 AND recipient = ?2 "
                 "AND acked_at IS NULL AND leased_until > ?3",
                 &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 2, recipient, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, store_now_ms());
        r = store_step_each_id(s, st, ids, n, "release");
        store_stmt_done(st);
        return r;
}

int broker_clear_leases(Store *s)
{
        int r = store_batch_write(s, false);
        if (r < 0)
                return r;
        char *err = NULL;
        int rc = sqlite3_exec(store_db(s),
                              "UPDATE messages " INBOX "SET leased_until = NULL "
                              "WHERE leased_until IS NOT NULL AND acked_at IS NULL",
                              NULL, NULL, &err);
        sqlite3_free(err);
        if (rc != SQLITE_OK)
                return store_sqlite_errno(s, rc, "clear leases");
        return sqlite3_changes(store_db(s));
}

int broker_depth(Store *s, const char *recipient, int64_t *ret_total, int64_t *ret_leased)
{
        sqlite3_stmt *st = NULL;
        int r = prep(s,
                     "SELECT COUNT(*), COALESCE(SUM(leased_until > ?2), 0) FROM messages " INBOX
                     "WHERE recipient = ?1 AND acked_at IS NULL",
                     &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, recipient, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, store_now_ms());
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                *ret_total = sqlite3_column_int64(st, 0);
                *ret_leased = sqlite3_column_int64(st, 1);
        }
        store_stmt_done(st);
        return rc == SQLITE_ROW ? 0 : store_sqlite_errno(s, rc, "depth");
}

/* The indexes by party (schema 9) are keyed by block first: (id >> BLOCK_SHIFT, party).  The
 * expression must be written as in those indexes for sqlite to use them. */
#define BLOCK_SHIFT 10
#define BLOCK       "id >> 10"

/* Looks a party up block by block, newest first, and stops after the block that completes
 * the limit.  A party with fewer messages than that reads one index entry per block of the
 * whole history: about 2 000 for a million stored messages. */
int broker_recent(Store *s, const char *who, unsigned limit, json_t *arr)
{
        int64_t lo = 0, hi = 0;
        int r = store_query_int64(s, "SELECT min(id) FROM messages", NULL, &lo);
        if (r >= 0)
                r = store_query_int64(s, "SELECT max(id) FROM messages", NULL, &hi);
        if (r < 0)
                return r;
        if (hi <= 0)
                return 0; /* no message at all */
        sqlite3_stmt *st = NULL;
        r = prep(s,
                 "SELECT id, sender, recipient, body, in_reply_to, sent_at "
                 "FROM messages INDEXED BY messages_to WHERE " BLOCK " = ?1 AND recipient = ?2 "
                 "UNION SELECT id, sender, recipient, body, in_reply_to, sent_at "
                 "FROM messages INDEXED BY messages_from WHERE " BLOCK " = ?1 AND sender = ?2 "
                 "ORDER BY id DESC",
                 &st);
        if (r < 0)
                return r;
        json_t *tmp = json_array();
        if (!tmp) {
                store_stmt_done(st);
                return -ENOMEM;
        }
        int rc = SQLITE_DONE;
        size_t n = 0;
        for (int64_t b = hi >> BLOCK_SHIFT; b >= lo >> BLOCK_SHIFT && n < limit; b--) {
                sqlite3_reset(st);
                sqlite3_bind_int64(st, 1, b);
                sqlite3_bind_text(st, 2, who, -1, SQLITE_STATIC);
                while (n < limit && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                        json_t *m = message_json(st);
                        if (!m || json_array_insert_new(tmp, 0, m) < 0) {
                                rc = SQLITE_NOMEM;
                                break;
                        }
                        n++;
                }
                if (rc != SQLITE_ROW && rc != SQLITE_DONE)
                        break;
        }
        store_stmt_done(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
                json_decref(tmp);
                return rc == SQLITE_NOMEM ? -ENOMEM : store_sqlite_errno(s, rc, "recent");
        }
        json_array_extend(arr, tmp);
        json_decref(tmp);
        return 0;
}

int broker_unacked(Store *s, const char *recipient, unsigned limit, json_t *arr)
{
        sqlite3_stmt *st = NULL;
        int r = prep(s,
                     "SELECT id, sender, recipient, body, in_reply_to, sent_at FROM messages " INBOX
                     "WHERE recipient = ?1 AND acked_at IS NULL ORDER BY id LIMIT ?2",
                     &st);
        if (r < 0)
                return r;
        sqlite3_bind_text(st, 1, recipient, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, (int)limit);
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
                if (json_array_append_new(arr, message_json(st)) < 0) {
                        store_stmt_done(st);
                        return -ENOMEM;
                }
        store_stmt_done(st);
        return rc == SQLITE_DONE ? 0 : store_sqlite_errno(s, rc, "unacked");
}

int broker_vacuum(Store *s, int64_t cutoff_ms, unsigned batch)
{
        return store_vacuum_step(s,
                                 "DELETE FROM messages WHERE id IN (SELECT id FROM messages "
                                 "WHERE acked_at IS NOT NULL AND acked_at < ?1 LIMIT ?2)",
                                 cutoff_ms, batch, "vacuum");
}
