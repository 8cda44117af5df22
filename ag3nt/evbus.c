/* The harness's event bus: a ring of the last EVBUS_KEEP events in memory, a condition
 * variable for the SSE readers, and a best-effort copy of every event in sqlite. */
#define LOG_SUBSYSTEM "ag3nt"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cleanup.h"
#include "evbus.h"
#include "log.h"
#include "timeutil.h"

#define EVBUS_DISK_KEEP 20000 /* rows kept in the database; older ones are trimmed */

struct EvBus {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        json_t *ring[EVBUS_KEEP]; /* ring[seq % EVBUS_KEEP] */
        uint64_t seq;             /* newest */
        uint64_t first;           /* oldest kept (0: none) */
        sqlite3 *db;              /* NULL: memory only */
        sqlite3_stmt *insert;
        bool closed;
        bool disk_warned;
};

static void now_rfc3339_ms(char out[40])
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        size_t n = strftime(out, 40, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(out + n, 40 - n, ".%03ldZ", ts.tv_nsec / 1000000L);
}

static void ring_put(EvBus *b, uint64_t seq, json_t *ev)
{
        json_t **slot = &b->ring[seq % EVBUS_KEEP];
        json_decref(*slot);
        *slot = ev;
        if (!b->first)
                b->first = seq;
        else if (seq - b->first >= EVBUS_KEEP)
                b->first = seq - EVBUS_KEEP + 1;
}

static void db_drop(EvBus *b, const char *what)
{
        log_warning("events database: %s: %s; events are kept in memory only from now on", what,
                    b->db ? sqlite3_errmsg(b->db) : "cannot open");
        sqlite3_finalize(b->insert);
        b->insert = NULL;
        sqlite3_close(b->db);
        b->db = NULL;
}

/* Opens the database and loads its newest events into the ring. */
static void db_open(EvBus *b, const char *path)
{
        if (sqlite3_open_v2(path, &b->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
            SQLITE_OK) {
                db_drop(b, path);
                return;
        }
        sqlite3_busy_timeout(b->db, 2000);
        if (sqlite3_exec(b->db,
                         "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                         "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, ts TEXT NOT "
                         "NULL, kind TEXT NOT NULL, payload_json TEXT NOT NULL);",
                         NULL, NULL, NULL) != SQLITE_OK) {
                db_drop(b, "cannot set up the events table");
                return;
        }
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(b->db,
                               "SELECT id, ts, kind, payload_json FROM (SELECT * FROM events "
                               "ORDER BY id DESC LIMIT ?) ORDER BY id",
                               -1, &st, NULL) != SQLITE_OK) {
                db_drop(b, "cannot read the events");
                return;
        }
        sqlite3_bind_int(st, 1, EVBUS_KEEP);
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                uint64_t id = (uint64_t)sqlite3_column_int64(st, 0);
                const char *ts = (const char *)sqlite3_column_text(st, 1);
                const char *kind = (const char *)sqlite3_column_text(st, 2);
                const char *payload = (const char *)sqlite3_column_text(st, 3);
                json_t *p = payload ? json_loads(payload, JSON_DECODE_ANY, NULL) : NULL;
                json_t *ev =
                        json_pack("{s:I, s:s, s:s, s:o}", "seq", (json_int_t)id, "ts", ts ? ts : "",
                                  "kind", kind ? kind : "note", "payload", p ? p : json_null());
                if (!ev)
                        continue;
                ring_put(b, id, ev);
                b->seq = id;
        }
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE) {
                db_drop(b, "cannot read the events");
                return;
        }
        if (sqlite3_prepare_v2(b->db,
                               "INSERT INTO events (id, ts, kind, payload_json) VALUES (?,?,?,?)",
                               -1, &b->insert, NULL) != SQLITE_OK)
                db_drop(b, "cannot prepare the insert");
}

int evbus_open(const char *db_path, EvBus **ret)
{
        EvBus *b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        pthread_mutex_init(&b->lock, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&b->cond, &ca);
        pthread_condattr_destroy(&ca);
        if (db_path)
                db_open(b, db_path);
        *ret = b;
        return 0;
}

EvBus *evbus_free(EvBus *b)
{
        if (!b)
                return NULL;
        for (size_t i = 0; i < EVBUS_KEEP; i++)
                json_decref(b->ring[i]);
        sqlite3_finalize(b->insert);
        sqlite3_close(b->db);
        pthread_cond_destroy(&b->cond);
        pthread_mutex_destroy(&b->lock);
        free(b);
        return NULL;
}

static void db_insert(EvBus *b, uint64_t seq, const char *ts, const char *kind, const char *payload)
{
        if (!b->insert)
                return;
        sqlite3_reset(b->insert);
        sqlite3_bind_int64(b->insert, 1, (sqlite3_int64)seq);
        sqlite3_bind_text(b->insert, 2, ts, -1, SQLITE_STATIC);
        sqlite3_bind_text(b->insert, 3, kind, -1, SQLITE_STATIC);
        sqlite3_bind_text(b->insert, 4, payload, -1, SQLITE_STATIC);
        int rc = sqlite3_step(b->insert);
        sqlite3_reset(b->insert);
        if (rc != SQLITE_DONE) {
                /* Best effort: a full disk or a locked file never stops a turn.  Warn once per
                 * run of failures. */
                if (!b->disk_warned)
                        log_warning("events database: cannot store event %llu: %s",
                                    (unsigned long long)seq, sqlite3_errmsg(b->db));
                b->disk_warned = true;
                return;
        }
        b->disk_warned = false;
        if (seq % 1000 == 0 && seq > EVBUS_DISK_KEEP) {
                sqlite3_stmt *st = NULL;
                if (sqlite3_prepare_v2(b->db, "DELETE FROM events WHERE id <= ?", -1, &st, NULL) ==
                    SQLITE_OK) {
                        sqlite3_bind_int64(st, 1, (sqlite3_int64)(seq - EVBUS_DISK_KEEP));
                        (void)sqlite3_step(st);
                }
                sqlite3_finalize(st);
        }
}

uint64_t evbus_publish(EvBus *b, const char *kind, const json_t *payload)
{
        char ts[40];
        now_rfc3339_ms(ts);
        json_t *p = payload ? json_deep_copy(payload) : json_null();
        if (!p)
                return 0;
        _cleanup_free_ char *text = json_dumps(p, JSON_COMPACT | JSON_ENCODE_ANY);
        pthread_mutex_lock(&b->lock);
        uint64_t seq = b->seq + 1;
        json_t *ev = json_pack("{s:I, s:s, s:s, s:o}", "seq", (json_int_t)seq, "ts", ts, "kind",
                               kind, "payload", p);
        if (!ev || !text) {
                pthread_mutex_unlock(&b->lock);
                json_decref(ev);
                return 0;
        }
        b->seq = seq;
        ring_put(b, seq, ev);
        db_insert(b, seq, ts, kind, text);
        pthread_cond_broadcast(&b->cond);
        pthread_mutex_unlock(&b->lock);
        return seq;
}

uint64_t evbus_seq(EvBus *b)
{
        pthread_mutex_lock(&b->lock);
        uint64_t s = b->seq;
        pthread_mutex_unlock(&b->lock);
        return s;
}

json_t *evbus_history(EvBus *b, uint64_t after, size_t max)
{
        json_t *arr = json_array();
        if (!arr)
                return NULL;
        pthread_mutex_lock(&b->lock);
        uint64_t from = b->first;
        if (from && from <= after)
                from = after + 1;
        if (from && b->seq >= from && max && b->seq - from + 1 > max)
                from = b->seq - max + 1;
        for (uint64_t s = from; from && s <= b->seq && max; s++) {
                json_t *ev = b->ring[s % EVBUS_KEEP];
                if (ev && json_array_append(arr, ev) < 0) {
                        json_decref(arr);
                        arr = NULL;
                        break;
                }
        }
        pthread_mutex_unlock(&b->lock);
        return arr;
}

uint64_t evbus_wait(EvBus *b, uint64_t after, int timeout_ms)
{
        struct timespec deadline;
        timeutil_mono_deadline(timeout_ms, &deadline);
        pthread_mutex_lock(&b->lock);
        while (b->seq <= after && !b->closed && timeout_ms != 0) {
                int r = timeout_ms < 0 ? pthread_cond_wait(&b->cond, &b->lock)
                                       : pthread_cond_timedwait(&b->cond, &b->lock, &deadline);
                if (r == ETIMEDOUT)
                        break;
        }
        uint64_t s = b->seq;
        pthread_mutex_unlock(&b->lock);
        return s;
}

void evbus_close(EvBus *b)
{
        pthread_mutex_lock(&b->lock);
        b->closed = true;
        pthread_cond_broadcast(&b->cond);
        pthread_mutex_unlock(&b->lock);
}

int evbus_closed(EvBus *b)
{
        pthread_mutex_lock(&b->lock);
        bool c = b->closed;
        pthread_mutex_unlock(&b->lock);
        return c;
}
