/* Unit tests of the message broker (c0re/broker.c) and the write batches it relies on
 * (c0re/store.c), each case on a fresh temp sqlite database. */
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
#include "store.h"
#include "testutil.h"

#define LONG_LEASE_MS  (60 * 1000) /* outlives any case */
#define SHORT_LEASE_MS 50
#define POLL_LIMIT_MS  5000 /* bound of every wait for a lease to run out */
#define POLL_STEP_MS   5

typedef StoreFixture Fixture;
#define setup    tu_store_setup
#define teardown tu_store_teardown

static void reopen(Fixture *fx)
{
        fx->store = store_close(fx->store);
        assert_null(fx->store);
        assert_int_equal(store_open(fx->db, &fx->store), 0);
        assert_non_null(fx->store);
}

/* Waits (bounded) until broker_available(recipient) says 1.  Returns whether it did. */
static bool wait_available(Store *s, const char *recipient)
{
        for (int waited = 0; waited <= POLL_LIMIT_MS; waited += POLL_STEP_MS) {
                int r = broker_available(s, recipient);
                assert_true(r == 0 || r == 1);
                if (r == 1)
                        return true;
                tu_sleep_ms(POLL_STEP_MS);
        }
        return false;
}

/* Spins (bounded) until store_now_ms() is past t. */
static void wait_past(int64_t t)
{
        for (int waited = 0; store_now_ms() <= t; waited++) {
                assert_true(waited <= POLL_LIMIT_MS);
                tu_sleep_ms(1);
        }
}

static int64_t send_msg(Store *s, const char *from, const char *to, const char *body)
{
        int64_t id = -1;
        assert_int_equal(broker_send(s, from, to, body, 0, &id), 0);
        assert_true(id > 0);
        return id;
}

static sqlite3 *open_other(const char *db)
{
        sqlite3 *h = NULL;
        assert_int_equal(sqlite3_open_v2(db, &h, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
        return h;
}

static int64_t deliveries(Store *s, int64_t id)
{
        return tu_sql_int(s, "SELECT deliveries FROM messages WHERE id = ?1", id);
}

static int64_t count_messages(Store *s)
{
        return tu_sql_int(s, "SELECT COUNT(*) FROM messages", 0);
}

static int64_t msg_id(json_t *arr, size_t i)
{
        json_t *id = json_object_get(json_array_get(arr, i), "id");
        assert_true(json_is_integer(id));
        return (int64_t)json_integer_value(id);
}

/* Leases for recipient and checks the answer: 0, as many ids as JSON objects, matching and
 * ascending, all to recipient.  Returns the count; the first cap ids go to out (if non-NULL). */
static size_t lease(Store *s, const char *recipient, unsigned max, int64_t lease_ms, int64_t *out,
                    size_t cap)
{
        json_t *arr = json_array();
        assert_non_null(arr);
        int64_t *ids = (int64_t *)0x1;
        size_t n = 12345;
        assert_int_equal(broker_lease(s, recipient, max, lease_ms, arr, &ids, &n), 0);
        assert_int_equal(json_array_size(arr), n);
        assert_true(n <= max);
        if (n == 0)
                assert_null(ids);
        for (size_t i = 0; i < n; i++) {
                assert_int_equal(msg_id(arr, i), ids[i]);
                assert_string_equal(
                        json_string_value(json_object_get(json_array_get(arr, i), "to")),
                        recipient);
                if (i > 0)
                        assert_true(ids[i] > ids[i - 1]);
                if (out && i < cap)
                        out[i] = ids[i];
        }
        free(ids);
        json_decref(arr);
        return n;
}

/* Checks one message object: exactly the documented keys, values as sent. */
static void check_message(json_t *m, int64_t id, const char *from, const char *to, const char *body,
                          int64_t in_reply_to, int64_t sent_lo_ms, int64_t sent_hi_ms)
{
        assert_true(json_is_object(m));
        assert_int_equal(json_object_size(m), in_reply_to > 0 ? 6 : 5);
        assert_true(json_is_integer(json_object_get(m, "id")));
        assert_int_equal(json_integer_value(json_object_get(m, "id")), id);
        assert_string_equal(json_string_value(json_object_get(m, "from")), from);
        assert_string_equal(json_string_value(json_object_get(m, "to")), to);
        assert_string_equal(json_string_value(json_object_get(m, "body")), body);
        json_t *irt = json_object_get(m, "in_reply_to");
        if (in_reply_to > 0) {
                assert_true(json_is_integer(irt));
                assert_int_equal(json_integer_value(irt), in_reply_to);
        } else {
                assert_null(irt);
        }

        const char *ts = json_string_value(json_object_get(m, "sent_at"));
        assert_non_null(ts);
        assert_int_equal(strlen(ts), 20); /* 2026-09-07T12:34:56Z */
        struct tm tm = {0};
        const char *end = strptime(ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
        assert_non_null(end);
        assert_int_equal(*end, '\0');
        int64_t secs = (int64_t)timegm(&tm);
        assert_true(secs >= sent_lo_ms / 1000);
        assert_true(secs <= sent_hi_ms / 1000);
}

/* ---- send ---- */

static void test_send_ids_increase(void **state)
{
        Fixture *fx = *state;
        int64_t prev = 0;
        for (int i = 0; i < 5; i++) {
                int64_t id = send_msg(fx->store, "alice", i % 2 ? "bob" : "carol", "hi");
                assert_true(id > prev);
                prev = id;
        }
        assert_int_equal(count_messages(fx->store), 5);
}

static void test_send_in_reply_to(void **state)
{
        Fixture *fx = *state;
        int64_t first = send_msg(fx->store, "alice", "bob", "question");
        int64_t reply = -1;
        assert_int_equal(broker_send(fx->store, "bob", "alice", "answer", first, &reply), 0);
        assert_true(reply > first);
        assert_int_equal(
                tu_sql_int(fx->store, "SELECT in_reply_to FROM messages WHERE id = ?1", reply),
                first);
        /* 0 means none: stored as NULL. */
        assert_int_equal(tu_sql_int(fx->store,
                                    "SELECT in_reply_to IS NULL FROM messages WHERE id = ?1",
                                    first),
                         1);
}

/* A write refused because another connection holds the write lock comes back as -EBUSY and
 * leaves nothing behind: no id, no batch, no row. */
static void test_writes_busy(void **state)
{
        Fixture *fx = *state;
        int64_t mine = send_msg(fx->store, "bob", "alice", "before");
        assert_int_equal(lease(fx->store, "alice", 1, LONG_LEASE_MS, NULL, 0), 1);
        assert_int_equal(store_batch_commit(fx->store), 0);
        int64_t other = send_msg(fx->store, "bob", "carol", "before");
        assert_int_equal(store_batch_commit(fx->store), 0);

        sqlite3 *h = open_other(fx->db);
        assert_int_equal(sqlite3_exec(h, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
        sqlite3_busy_timeout(store_db(fx->store), 0);

        int64_t id = 777;
        assert_int_equal(broker_send(fx->store, "bob", "alice", "blocked", 0, &id), -EBUSY);
        assert_int_equal(id, 777);
        assert_false(store_batch_open(fx->store));
        assert_int_equal(broker_ack(fx->store, "alice", &mine, 1), -EBUSY);
        assert_int_equal(broker_unlease(fx->store, &mine, 1), -EBUSY);
        assert_int_equal(broker_clear_leases(fx->store), -EBUSY);
        assert_int_equal(broker_vacuum(fx->store, INT64_MAX, 10), -EBUSY);

        json_t *arr = json_array();
        int64_t *ids = NULL;
        size_t n = 0;
        assert_int_equal(broker_lease(fx->store, "carol", 10, LONG_LEASE_MS, arr, &ids, &n),
                         -EBUSY);
        assert_null(ids);
        json_decref(arr);
        assert_false(store_batch_open(fx->store));

        /* Reads still work while another connection writes. */
        assert_int_equal(broker_available(fx->store, "carol"), 1);
        assert_int_equal(broker_available(fx->store, "alice"), 0);

        assert_int_equal(sqlite3_exec(h, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(h);

        assert_int_equal(count_messages(fx->store), 2);
        assert_int_equal(deliveries(fx->store, other), 0);
        assert_int_equal(
                tu_sql_int(fx->store, "SELECT acked_at IS NULL FROM messages WHERE id = ?1", mine),
                1);
        assert_int_equal(broker_ack(fx->store, "alice", &mine, 1), 1);
        assert_int_equal(broker_send(fx->store, "bob", "alice", "after", 0, &id), 0);
        assert_true(id > other);
}

/* ---- lease ---- */

static void test_lease_message_json(void **state)
{
        Fixture *fx = *state;
        const char *body = "line 1\nline 2 \"quoted\" \\ tab\t ünïcødé ✓ {\"json\": [1]}";
        int64_t lo = store_now_ms();
        int64_t q = send_msg(fx->store, "alice", "bob", body);
        int64_t a = -1;
        assert_int_equal(broker_send(fx->store, "carol", "bob", "re", q, &a), 0);
        int64_t e = send_msg(fx->store, "dave", "bob", "");
        int64_t hi = store_now_ms();

        json_t *arr = json_array();
        int64_t *ids = NULL;
        size_t n = 0;
        assert_int_equal(broker_lease(fx->store, "bob", 10, LONG_LEASE_MS, arr, &ids, &n), 0);
        assert_int_equal(n, 3);
        assert_int_equal(json_array_size(arr), 3);
        assert_int_equal(ids[0], q);
        assert_int_equal(ids[1], a);
        assert_int_equal(ids[2], e);
        check_message(json_array_get(arr, 0), q, "alice", "bob", body, 0, lo, hi);
        check_message(json_array_get(arr, 1), a, "carol", "bob", "re", q, lo, hi);
        check_message(json_array_get(arr, 2), e, "dave", "bob", "", 0, lo, hi);
        free(ids);
        json_decref(arr);
}

static void test_lease_oldest_first_at_most_max(void **state)
{
        Fixture *fx = *state;
        int64_t sent[5];
        for (int i = 0; i < 5; i++)
                sent[i] = send_msg(fx->store, "alice", "bob", "m");

        int64_t got[5];
        assert_int_equal(lease(fx->store, "bob", 2, LONG_LEASE_MS, got, 5), 2);
        assert_int_equal(got[0], sent[0]);
        assert_int_equal(got[1], sent[1]);

        /* A second lease does not return what is leased. */
        assert_int_equal(lease(fx->store, "bob", 10, LONG_LEASE_MS, got, 5), 3);
        assert_int_equal(got[0], sent[2]);
        assert_int_equal(got[1], sent[3]);
        assert_int_equal(got[2], sent[4]);

        assert_int_equal(lease(fx->store, "bob", 10, LONG_LEASE_MS, NULL, 0), 0);
        for (int i = 0; i < 5; i++)
                assert_int_equal(deliveries(fx->store, sent[i]), 1);
}

static void test_lease_appends_to_arr(void **state)
{
        Fixture *fx = *state;
        int64_t id = send_msg(fx->store, "alice", "bob", "m");
        json_t *arr = json_pack("[s]", "already there");
        assert_non_null(arr);
        int64_t *ids = NULL;
        size_t n = 0;
        assert_int_equal(broker_lease(fx->store, "bob", 5, LONG_LEASE_MS, arr, &ids, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(ids[0], id);
        assert_int_equal(json_array_size(arr), 2);
        assert_string_equal(json_string_value(json_array_get(arr, 0)), "already there");
        assert_int_equal(msg_id(arr, 1), id);
        free(ids);
        json_decref(arr);
}

static void test_lease_only_recipient(void **state)
{
        Fixture *fx = *state;
        int64_t to_bob[3], to_carol[3];
        for (int i = 0; i < 3; i++) {
                to_bob[i] = send_msg(fx->store, "alice", "bob", "for bob");
                to_carol[i] = send_msg(fx->store, "bob", "carol", "for carol");
        }
        (void)send_msg(fx->store, "bob", "bobby", "prefix is not a match");
        (void)send_msg(fx->store, "bob", "Bob", "case matters");

        int64_t got[8];
        assert_int_equal(lease(fx->store, "bob", 8, LONG_LEASE_MS, got, 8), 3);
        for (int i = 0; i < 3; i++)
                assert_int_equal(got[i], to_bob[i]);
        assert_int_equal(lease(fx->store, "carol", 8, LONG_LEASE_MS, got, 8), 3);
        for (int i = 0; i < 3; i++)
                assert_int_equal(got[i], to_carol[i]);
        assert_int_equal(lease(fx->store, "alice", 8, LONG_LEASE_MS, NULL, 0), 0);
        assert_int_equal(lease(fx->store, "nobody", 8, LONG_LEASE_MS, NULL, 0), 0);
}

/* Finding nothing writes nothing: no ids, and no write batch is opened. */
static void test_lease_nothing(void **state)
{
        Fixture *fx = *state;
        json_t *arr = json_array();
        int64_t *ids = (int64_t *)0x1;
        size_t n = 99;
        assert_int_equal(broker_lease(fx->store, "bob", 5, LONG_LEASE_MS, arr, &ids, &n), 0);
        assert_null(ids);
        assert_int_equal(n, 0);
        assert_int_equal(json_array_size(arr), 0);
        assert_false(store_batch_open(fx->store));

        /* max 0 leases nothing even when something waits. */
        int64_t id = send_msg(fx->store, "alice", "bob", "m");
        assert_int_equal(store_batch_commit(fx->store), 0);
        ids = (int64_t *)0x1;
        n = 99;
        assert_int_equal(broker_lease(fx->store, "bob", 0, LONG_LEASE_MS, arr, &ids, &n), 0);
        assert_null(ids);
        assert_int_equal(n, 0);
        assert_int_equal(json_array_size(arr), 0);
        assert_false(store_batch_open(fx->store));
        assert_int_equal(deliveries(fx->store, id), 0);
        assert_int_equal(broker_available(fx->store, "bob"), 1);
        json_decref(arr);
}

static void test_lease_expiry_redelivers(void **state)
{
        Fixture *fx = *state;
        int64_t id = send_msg(fx->store, "alice", "bob", "m");
        assert_int_equal(deliveries(fx->store, id), 0);
        assert_int_equal(tu_sql_int(fx->store,
                                    "SELECT delivered_at IS NULL FROM messages WHERE id = ?1", id),
                         1);

        int64_t t0 = store_now_ms();
        int64_t got = 0;
        assert_int_equal(lease(fx->store, "bob", 1, SHORT_LEASE_MS, &got, 1), 1);
        assert_int_equal(got, id);
        int avail = broker_available(fx->store, "bob");
        if (store_now_ms() < t0 + SHORT_LEASE_MS)
                assert_int_equal(avail, 0); /* still under the lease */
        assert_int_equal(deliveries(fx->store, id), 1);
        int64_t delivered_at =
                tu_sql_int(fx->store, "SELECT delivered_at FROM messages WHERE id = ?1", id);
        assert_true(delivered_at >= t0);

        assert_true(wait_available(fx->store, "bob"));
        assert_true(store_now_ms() >= t0 + SHORT_LEASE_MS);
        got = 0;
        assert_int_equal(lease(fx->store, "bob", 1, LONG_LEASE_MS, &got, 1), 1);
        assert_int_equal(got, id);
        assert_int_equal(deliveries(fx->store, id), 2);
        /* delivered_at keeps the first delivery. */
        assert_int_equal(
                tu_sql_int(fx->store, "SELECT delivered_at FROM messages WHERE id = ?1", id),
                delivered_at);
        assert_int_equal(broker_available(fx->store, "bob"), 0);
        assert_int_equal(lease(fx->store, "bob", 1, LONG_LEASE_MS, NULL, 0), 0);
}

/* A message whose lease ran out is offered again in its place: oldest first still holds. */
static void test_lease_expired_comes_first(void **state)
{
        Fixture *fx = *state;
        int64_t first = send_msg(fx->store, "alice", "bob", "1");
        int64_t got[2] = {0};
        assert_int_equal(lease(fx->store, "bob", 1, SHORT_LEASE_MS, got, 2), 1);
        assert_int_equal(got[0], first);
        int64_t second = send_msg(fx->store, "alice", "bob", "2");
        /* Wait (bounded) until the first one's lease has run out. */
        wait_past(tu_sql_int(fx->store, "SELECT leased_until FROM messages WHERE id = ?1", first) -
                  1);
        assert_int_equal(lease(fx->store, "bob", 2, LONG_LEASE_MS, got, 2), 2);
        assert_int_equal(got[0], first);
        assert_int_equal(got[1], second);
        assert_int_equal(deliveries(fx->store, first), 2);
        assert_int_equal(deliveries(fx->store, second), 1);
}

/* ---- unlease, clear ---- */

static void test_unlease(void **state)
{
        Fixture *fx = *state;
        int64_t a = send_msg(fx->store, "alice", "bob", "a");
        int64_t b = send_msg(fx->store, "alice", "bob", "b");
        int64_t c = send_msg(fx->store, "alice", "bob", "c");
        int64_t got[3];
        assert_int_equal(lease(fx->store, "bob", 3, LONG_LEASE_MS, got, 3), 3);
        assert_int_equal(broker_available(fx->store, "bob"), 0);

        assert_int_equal(broker_unlease(fx->store, NULL, 0), 0);
        assert_int_equal(broker_available(fx->store, "bob"), 0);

        int64_t some[] = {c, a, 999999};
        assert_int_equal(broker_unlease(fx->store, some, 3), 0);
        assert_int_equal(broker_available(fx->store, "bob"), 1);
        assert_int_equal(lease(fx->store, "bob", 3, LONG_LEASE_MS, got, 3), 2);
        assert_int_equal(got[0], a);
        assert_int_equal(got[1], c);
        assert_int_equal(deliveries(fx->store, a), 2);
        assert_int_equal(deliveries(fx->store, b), 1);
        assert_int_equal(deliveries(fx->store, c), 2);

        /* Unleasing an acked message does not bring it back. */
        assert_int_equal(broker_ack(fx->store, "bob", &b, 1), 1);
        assert_int_equal(broker_unlease(fx->store, &b, 1), 0);
        assert_int_equal(broker_available(fx->store, "bob"), 0);
        assert_int_equal(lease(fx->store, "bob", 3, LONG_LEASE_MS, NULL, 0), 0);
}

static void test_release(void **state)
{
        Fixture *fx = *state;
        int64_t a = send_msg(fx->store, "alice", "bob", "a");
        int64_t b = send_msg(fx->store, "alice", "bob", "b");
        int64_t c = send_msg(fx->store, "alice", "bob", "c");
        int64_t idle = send_msg(fx->store, "alice", "bob", "never leased");
        int64_t carol = send_msg(fx->store, "alice", "carol", "not bob's");
        int64_t got[3];
        assert_int_equal(lease(fx->store, "bob", 3, LONG_LEASE_MS, got, 3), 3);
        assert_int_equal(lease(fx->store, "carol", 1, LONG_LEASE_MS, got, 1), 1);
        assert_int_equal(broker_release(fx->store, "bob", got, 0), 0); /* no ids given */

        /* By ids: only bob's own leased ones count; carol's, unleased and unknown are
         * skipped, and carol's lease stays. */
        int64_t some[] = {c, carol, idle, 999999, c};
        assert_int_equal(broker_release(fx->store, "bob", some, 5), 1);
        assert_true(tu_sql_int(fx->store, "SELECT leased_until FROM messages WHERE id = ?1",
                               carol) > 0);
        assert_int_equal(lease(fx->store, "bob", 3, LONG_LEASE_MS, got, 3), 2);
        assert_int_equal(got[0], c);
        assert_int_equal(got[1], idle);
        assert_int_equal(deliveries(fx->store, c), 2);

        /* All of bob's: a, b, c, idle; an acked one is not brought back. */
        assert_int_equal(broker_ack(fx->store, "bob", &b, 1), 1);
        assert_int_equal(broker_release(fx->store, "bob", NULL, 0), 3);
        assert_int_equal(broker_release(fx->store, "bob", NULL, 0), 0);
        assert_int_equal(lease(fx->store, "bob", 10, LONG_LEASE_MS, got, 3), 3);
        assert_int_equal(got[0], a);
        assert_int_equal(got[1], c);
        assert_int_equal(got[2], idle);
        assert_true(tu_sql_int(fx->store, "SELECT leased_until FROM messages WHERE id = ?1",
                               carol) > 0);

        /* An expired lease is no lease: nothing to release. */
        assert_int_equal(broker_release(fx->store, "bob", NULL, 0), 3);
        assert_int_equal(lease(fx->store, "bob", 1, SHORT_LEASE_MS, got, 1), 1);
        wait_past(store_now_ms() + SHORT_LEASE_MS);
        assert_int_equal(broker_release(fx->store, "bob", got, 1), 0);
}

static void test_clear_leases(void **state)
{
        Fixture *fx = *state;
        assert_int_equal(broker_clear_leases(fx->store), 0);

        int64_t bob[3];
        for (int i = 0; i < 3; i++)
                bob[i] = send_msg(fx->store, "alice", "bob", "b");
        int64_t carol = send_msg(fx->store, "alice", "carol", "c");
        int64_t idle = send_msg(fx->store, "alice", "dave", "never leased");
        (void)idle;
        assert_int_equal(lease(fx->store, "bob", 3, LONG_LEASE_MS, NULL, 0), 3);
        assert_int_equal(lease(fx->store, "carol", 3, LONG_LEASE_MS, NULL, 0), 1);
        assert_int_equal(broker_ack(fx->store, "bob", &bob[1], 1), 1);
        assert_int_equal(broker_available(fx->store, "bob"), 0);
        assert_int_equal(broker_available(fx->store, "carol"), 0);

        assert_int_equal(broker_clear_leases(fx->store), 3);
        assert_int_equal(broker_available(fx->store, "bob"), 1);
        assert_int_equal(broker_available(fx->store, "carol"), 1);
        int64_t got[3];
        assert_int_equal(lease(fx->store, "bob", 3, LONG_LEASE_MS, got, 3), 2);
        assert_int_equal(got[0], bob[0]);
        assert_int_equal(got[1], bob[2]);
        assert_int_equal(lease(fx->store, "carol", 3, LONG_LEASE_MS, got, 3), 1);
        assert_int_equal(got[0], carol);

        assert_int_equal(broker_clear_leases(fx->store), 3);
        assert_int_equal(broker_clear_leases(fx->store), 0);
}

/* At start-up: leases committed before a restart survive it until cleared. */
static void test_clear_leases_after_reopen(void **state)
{
        Fixture *fx = *state;
        int64_t id = send_msg(fx->store, "alice", "bob", "m");
        assert_int_equal(lease(fx->store, "bob", 1, LONG_LEASE_MS, NULL, 0), 1);
        assert_int_equal(store_batch_commit(fx->store), 0);
        reopen(fx);
        assert_int_equal(broker_available(fx->store, "bob"), 0);
        assert_int_equal(broker_clear_leases(fx->store), 1);
        int64_t got = 0;
        assert_int_equal(lease(fx->store, "bob", 1, LONG_LEASE_MS, &got, 1), 1);
        assert_int_equal(got, id);
        assert_int_equal(deliveries(fx->store, id), 2);
}

/* ---- ack ---- */

static void test_ack(void **state)
{
        Fixture *fx = *state;
        int64_t b1 = send_msg(fx->store, "alice", "bob", "1");
        int64_t c1 = send_msg(fx->store, "alice", "carol", "c");
        int64_t b2 = send_msg(fx->store, "alice", "bob", "2");
        int64_t b3 = send_msg(fx->store, "alice", "bob", "3");
        int64_t from_bob = send_msg(fx->store, "bob", "alice", "mine, not to me");
        assert_int_equal(lease(fx->store, "bob", 10, LONG_LEASE_MS, NULL, 0), 3);

        assert_int_equal(broker_ack(fx->store, "bob", NULL, 0), 0);

        /* carol's message, one bob sent, an unknown id and a duplicate are skipped. */
        int64_t ids[] = {b1, c1, from_bob, 424242, b2, b1};
        assert_int_equal(broker_ack(fx->store, "bob", ids, 6), 2);
        assert_int_equal(broker_ack(fx->store, "bob", ids, 6), 0);
        assert_int_equal(
                tu_sql_int(fx->store, "SELECT acked_at IS NULL FROM messages WHERE id = ?1", c1),
                1);
        assert_int_equal(tu_sql_int(fx->store,
                                    "SELECT acked_at IS NULL FROM messages WHERE id = ?1",
                                    from_bob),
                         1);
        assert_true(tu_sql_int(fx->store, "SELECT acked_at FROM messages WHERE id = ?1", b1) > 0);

        /* Acked messages are never leased again, unacked ones are. */
        assert_int_equal(broker_clear_leases(fx->store), 1);
        int64_t got[3];
        assert_int_equal(lease(fx->store, "bob", 10, LONG_LEASE_MS, got, 3), 1);
        assert_int_equal(got[0], b3);
        assert_int_equal(lease(fx->store, "carol", 10, LONG_LEASE_MS, got, 3), 1);
        assert_int_equal(got[0], c1);
        assert_int_equal(lease(fx->store, "alice", 10, LONG_LEASE_MS, got, 3), 1);
        assert_int_equal(got[0], from_bob);

        assert_int_equal(broker_ack(fx->store, "bob", &b3, 1), 1);
        assert_int_equal(broker_clear_leases(fx->store), 2);
        assert_int_equal(broker_available(fx->store, "bob"), 0);
        assert_int_equal(lease(fx->store, "bob", 10, LONG_LEASE_MS, NULL, 0), 0);
}

/* An ack needs no lease, and an acked message stays acked after its lease would have run
 * out. */
static void test_ack_without_lease(void **state)
{
        Fixture *fx = *state;
        int64_t a = send_msg(fx->store, "alice", "bob", "a");
        int64_t b = send_msg(fx->store, "alice", "bob", "b");
        assert_int_equal(broker_ack(fx->store, "bob", &a, 1), 1);
        assert_int_equal(deliveries(fx->store, a), 0);

        assert_int_equal(lease(fx->store, "bob", 10, SHORT_LEASE_MS, NULL, 0), 1);
        int64_t t1 = store_now_ms();
        assert_int_equal(broker_ack(fx->store, "bob", &b, 1), 1);
        assert_int_equal(
                tu_sql_int(fx->store, "SELECT leased_until IS NULL FROM messages WHERE id = ?1", b),
                1);
        wait_past(t1 + SHORT_LEASE_MS); /* past where the lease would have ended */
        assert_int_equal(broker_available(fx->store, "bob"), 0);
        assert_int_equal(lease(fx->store, "bob", 10, LONG_LEASE_MS, NULL, 0), 0);
}

/* ---- available, depth ---- */

static void test_available(void **state)
{
        Fixture *fx = *state;
        assert_int_equal(broker_available(fx->store, "bob"), 0);
        int64_t a = send_msg(fx->store, "alice", "bob", "a");
        assert_int_equal(broker_available(fx->store, "bob"), 1);
        assert_int_equal(broker_available(fx->store, "alice"), 0);
        assert_int_equal(broker_available(fx->store, "carol"), 0);

        assert_int_equal(lease(fx->store, "bob", 1, LONG_LEASE_MS, NULL, 0), 1);
        assert_int_equal(broker_available(fx->store, "bob"), 0);

        int64_t b = send_msg(fx->store, "alice", "bob", "b");
        assert_int_equal(broker_available(fx->store, "bob"), 1);
        assert_int_equal(broker_ack(fx->store, "bob", &b, 1), 1);
        assert_int_equal(broker_available(fx->store, "bob"), 0);

        assert_int_equal(broker_unlease(fx->store, &a, 1), 0);
        assert_int_equal(broker_available(fx->store, "bob"), 1);
        assert_int_equal(broker_ack(fx->store, "bob", &a, 1), 1);
        assert_int_equal(broker_available(fx->store, "bob"), 0);
}

static void test_depth(void **state)
{
        Fixture *fx = *state;
        int64_t total = -1, leased = -1;
        assert_int_equal(broker_depth(fx->store, "bob", &total, &leased), 0);
        assert_int_equal(total, 0);
        assert_int_equal(leased, 0);

        int64_t ids[4];
        for (int i = 0; i < 4; i++)
                ids[i] = send_msg(fx->store, "alice", "bob", "m");
        (void)send_msg(fx->store, "bob", "carol", "not bob's inbox");
        assert_int_equal(broker_depth(fx->store, "bob", &total, &leased), 0);
        assert_int_equal(total, 4);
        assert_int_equal(leased, 0);

        assert_int_equal(lease(fx->store, "bob", 2, LONG_LEASE_MS, NULL, 0), 2);
        assert_int_equal(broker_depth(fx->store, "bob", &total, &leased), 0);
        assert_int_equal(total, 4);
        assert_int_equal(leased, 2);

        /* Acking one leased and one unleased message. */
        int64_t done[] = {ids[0], ids[3]};
        assert_int_equal(broker_ack(fx->store, "bob", done, 2), 2);
        assert_int_equal(broker_depth(fx->store, "bob", &total, &leased), 0);
        assert_int_equal(total, 2);
        assert_int_equal(leased, 1);

        assert_int_equal(broker_depth(fx->store, "carol", &total, &leased), 0);
        assert_int_equal(total, 1);
        assert_int_equal(leased, 0);

        /* An expired lease no longer counts as leased. */
        assert_int_equal(broker_clear_leases(fx->store), 1);
        assert_int_equal(lease(fx->store, "bob", 5, SHORT_LEASE_MS, NULL, 0), 2);
        assert_int_equal(broker_depth(fx->store, "bob", &total, &leased), 0);
        assert_int_equal(total, 2);
        assert_true(wait_available(fx->store, "bob"));
        assert_int_equal(broker_depth(fx->store, "bob", &total, &leased), 0);
        assert_int_equal(total, 2);
        assert_int_equal(leased, 0);
}

/* ---- recent, unacked ---- */

static void test_recent(void **state)
{
        Fixture *fx = *state;
        int64_t r[6];
        r[0] = send_msg(fx->store, "alice", "bob", "to 0");
        (void)send_msg(fx->store, "carol", "dave", "unrelated");
        r[1] = send_msg(fx->store, "bob", "carol", "from 1");
        r[2] = send_msg(fx->store, "carol", "bob", "to 2");
        (void)send_msg(fx->store, "dave", "carol", "unrelated");
        r[3] = send_msg(fx->store, "bob", "bob", "self 3");
        r[4] = send_msg(fx->store, "bob", "alice", "from 4");
        (void)send_msg(fx->store, "bobby", "bobb", "unrelated");
        int64_t irt = -1;
        assert_int_equal(broker_send(fx->store, "dave", "bob", "to 5", r[4], &irt), 0);
        r[5] = irt;
        /* Acked messages are history too. */
        assert_int_equal(broker_ack(fx->store, "bob", &r[0], 1), 1);

        json_t *arr = json_array();
        assert_int_equal(broker_recent(fx->store, "bob", 100, arr), 0);
        assert_int_equal(json_array_size(arr), 6);
        for (size_t i = 0; i < 6; i++)
                assert_int_equal(msg_id(arr, i), r[i]);
        check_message(json_array_get(arr, 5), r[5], "dave", "bob", "to 5", r[4], 0, INT64_MAX);
        check_message(json_array_get(arr, 3), r[3], "bob", "bob", "self 3", 0, 0, INT64_MAX);
        json_decref(arr);

        /* The last limit, still newest last, appended after what arr held. */
        arr = json_pack("[i]", 7);
        assert_int_equal(broker_recent(fx->store, "bob", 3, arr), 0);
        assert_int_equal(json_array_size(arr), 4);
        assert_int_equal(json_integer_value(json_array_get(arr, 0)), 7);
        assert_int_equal(msg_id(arr, 1), r[3]);
        assert_int_equal(msg_id(arr, 2), r[4]);
        assert_int_equal(msg_id(arr, 3), r[5]);
        json_decref(arr);

        /* Limits that cut inside one direction only. */
        arr = json_array();
        assert_int_equal(broker_recent(fx->store, "bob", 1, arr), 0);
        assert_int_equal(json_array_size(arr), 1);
        assert_int_equal(msg_id(arr, 0), r[5]);
        json_decref(arr);
        arr = json_array();
        assert_int_equal(broker_recent(fx->store, "alice", 2, arr), 0);
        assert_int_equal(json_array_size(arr), 2);
        assert_int_equal(msg_id(arr, 0), r[0]);
        assert_int_equal(msg_id(arr, 1), r[4]);
        json_decref(arr);

        arr = json_array();
        assert_int_equal(broker_recent(fx->store, "nobody", 10, arr), 0);
        assert_int_equal(json_array_size(arr), 0);
        assert_int_equal(broker_recent(fx->store, "bob", 0, arr), 0);
        assert_int_equal(json_array_size(arr), 0);
        json_decref(arr);
}

/* Many messages one way, few the other: the limit applies to the merged history. */
static void test_recent_merges_directions(void **state)
{
        Fixture *fx = *state;
        int64_t out = send_msg(fx->store, "bob", "alice", "early out");
        int64_t in[10];
        for (int i = 0; i < 10; i++)
                in[i] = send_msg(fx->store, "alice", "bob", "in");
        int64_t late = send_msg(fx->store, "bob", "carol", "late out");

        json_t *arr = json_array();
        assert_int_equal(broker_recent(fx->store, "bob", 4, arr), 0);
        assert_int_equal(json_array_size(arr), 4);
        assert_int_equal(msg_id(arr, 0), in[7]);
        assert_int_equal(msg_id(arr, 1), in[8]);
        assert_int_equal(msg_id(arr, 2), in[9]);
        assert_int_equal(msg_id(arr, 3), late);
        json_decref(arr);

        arr = json_array();
        assert_int_equal(broker_recent(fx->store, "bob", 12, arr), 0);
        assert_int_equal(json_array_size(arr), 12);
        assert_int_equal(msg_id(arr, 0), out);
        assert_int_equal(msg_id(arr, 11), late);
        for (size_t i = 1; i < 12; i++)
                assert_true(msg_id(arr, i) > msg_id(arr, i - 1));
        json_decref(arr);
}

/* What a brute-force scan of every message says the last limit messages of who are, newest
 * last, against broker_recent. */
static void check_recent_matches(Store *s, const char *who, unsigned limit)
{
        sqlite3_stmt *st = NULL;
        assert_int_equal(sqlite3_prepare_v2(store_db(s),
                                            "SELECT id FROM (SELECT id FROM messages NOT INDEXED "
                                            "WHERE sender = ?1 OR recipient = ?1 ORDER BY id DESC "
                                            "LIMIT ?2) ORDER BY id",
                                            -1, &st, NULL),
                         SQLITE_OK);
        sqlite3_bind_text(st, 1, who, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, (int)limit);
        json_t *arr = json_array();
        assert_int_equal(broker_recent(s, who, limit, arr), 0);
        size_t i = 0;
        while (sqlite3_step(st) == SQLITE_ROW) {
                assert_true(i < json_array_size(arr));
                assert_int_equal(msg_id(arr, i), sqlite3_column_int64(st, 0));
                i++;
        }
        assert_int_equal(json_array_size(arr), i);
        sqlite3_finalize(st);
        json_decref(arr);
}

/* recent reads a party's messages block by block (1 024 ids each), newest first: across
 * blocks, with blocks where the party has nothing, and after a vacuum removed the first. */
static void test_recent_across_blocks(void **state)
{
        Fixture *fx = *state;
        Store *s = fx->store;
        (void)send_msg(s, "bob", "alice", "first");
        int64_t early[300];
        for (int i = 0; i < 5000; i++) {
                int64_t id = send_msg(s, i % 2 ? "carol" : "dave", i % 2 ? "dave" : "carol", "x");
                if (i < 300)
                        early[i] = id;
                if (i == 1500 || i == 1501 || i == 4100)
                        (void)send_msg(s, "dave", "bob", "to bob");
                if (i == 2600)
                        (void)send_msg(s, "bob", "carol", "from bob");
        }
        static const unsigned limits[] = {1, 2, 3, 4, 5, 6, 200};
        for (size_t k = 0; k < sizeof(limits) / sizeof(limits[0]); k++) {
                check_recent_matches(s, "bob", limits[k]);
                check_recent_matches(s, "alice", limits[k]);
                check_recent_matches(s, "carol", limits[k]);
        }

        /* The oldest messages go: the first block now starts inside. */
        assert_int_equal(broker_ack(s, "carol", early, 300), 150);
        assert_int_equal(broker_ack(s, "dave", early, 300), 150);
        assert_int_equal(broker_vacuum(s, store_now_ms() + 1, 1000), 300);
        for (size_t k = 0; k < sizeof(limits) / sizeof(limits[0]); k++) {
                check_recent_matches(s, "bob", limits[k]);
                check_recent_matches(s, "alice", limits[k]);
                check_recent_matches(s, "dave", limits[k]);
        }
}

/* A commit of sends to many recipients writes the few index pages of the newest block, not a
 * page per party in each index by party (each written to the WAL, flushed and copied back,
 * which was most of what a send cost at 64 pairs).  Counted in WAL frames: one send from each
 * of 100 senders to each of 100 recipients, each party with a page or so of history, wrote
 * 306 frames with indexes keyed by party, 34 with the block first and 10 with neither. */
static void test_sends_share_index_pages(void **state)
{
        Fixture *fx = *state;
        Store *s = fx->store;
        enum { PARTIES = 100, HISTORY = 200, MAX_FRAMES = PARTIES / 2 };
        assert_int_equal(store_manual_checkpoints(s), 0);
        char from[16], to[16];
        for (int h = 0; h < HISTORY; h++)
                for (int p = 0; p < PARTIES; p++) {
                        snprintf(from, sizeof(from), "s%03d", p);
                        snprintf(to, sizeof(to), "r%03d", p);
                        int64_t id = send_msg(s, from, to, "history");
                        assert_int_equal(broker_ack(s, to, &id, 1), 1);
                }
        assert_int_equal(store_batch_commit(s), 0);
        int before = store_wal_frames(s);
        for (int p = 0; p < PARTIES; p++) {
                snprintf(from, sizeof(from), "s%03d", p);
                snprintf(to, sizeof(to), "r%03d", p);
                (void)send_msg(s, from, to, "now");
        }
        assert_int_equal(store_batch_commit(s), 0);
        int frames = store_wal_frames(s) - before;
        print_message("one commit of %d sends wrote %d WAL frames\n", PARTIES, frames);
        assert_in_range(frames, 1, MAX_FRAMES);
}

static void test_unacked(void **state)
{
        Fixture *fx = *state;
        int64_t ids[5];
        int64_t lo = store_now_ms();
        for (int i = 0; i < 5; i++) {
                ids[i] = send_msg(fx->store, "alice", "operator", "m");
                (void)send_msg(fx->store, "operator", "alice", "not to operator");
        }
        int64_t hi = store_now_ms();
        int64_t done[] = {ids[0], ids[2]};
        assert_int_equal(broker_ack(fx->store, "operator", done, 2), 2);
        /* A leased message is still unacked. */
        assert_int_equal(lease(fx->store, "operator", 1, LONG_LEASE_MS, NULL, 0), 1);

        json_t *arr = json_array();
        assert_int_equal(broker_unacked(fx->store, "operator", 10, arr), 0);
        assert_int_equal(json_array_size(arr), 3);
        check_message(json_array_get(arr, 0), ids[1], "alice", "operator", "m", 0, lo, hi);
        assert_int_equal(msg_id(arr, 1), ids[3]);
        assert_int_equal(msg_id(arr, 2), ids[4]);
        json_decref(arr);

        arr = json_array();
        assert_int_equal(broker_unacked(fx->store, "operator", 2, arr), 0);
        assert_int_equal(json_array_size(arr), 2);
        assert_int_equal(msg_id(arr, 0), ids[1]);
        assert_int_equal(msg_id(arr, 1), ids[3]);
        json_decref(arr);

        /* No lease was taken. */
        assert_int_equal(deliveries(fx->store, ids[1]), 1);
        assert_int_equal(deliveries(fx->store, ids[3]), 0);
        assert_int_equal(deliveries(fx->store, ids[4]), 0);
        int64_t total = -1, leased = -1;
        assert_int_equal(broker_depth(fx->store, "operator", &total, &leased), 0);
        assert_int_equal(total, 3);
        assert_int_equal(leased, 1);
        int64_t got[3];
        assert_int_equal(lease(fx->store, "operator", 10, LONG_LEASE_MS, got, 3), 2);
        assert_int_equal(got[0], ids[3]);
        assert_int_equal(got[1], ids[4]);

        arr = json_array();
        assert_int_equal(broker_unacked(fx->store, "nobody", 10, arr), 0);
        assert_int_equal(json_array_size(arr), 0);
        json_decref(arr);
}

/* An inbox costs as much to read with a long history as with none: what is still to be
 * acked is read through the inbox index, and `recent` reads only the newest rows.  Counted in
 * sqlite's VM steps (five or more per row read), against a history of 2 × HISTORY acked messages
 * from and to the agent. */
static void test_queries_do_not_read_the_history(void **state)
{
        Fixture *fx = *state;
        Store *s = fx->store;
        enum { HISTORY = 1000, MAX_STEPS = 1000 };
        for (int i = 0; i < HISTORY; i++) {
                int64_t in = send_msg(s, "bob", "alice", "old");
                int64_t out = send_msg(s, "alice", "bob", "old");
                assert_int_equal(broker_ack(s, "alice", &in, 1), 1);
                assert_int_equal(broker_ack(s, "bob", &out, 1), 1);
        }
        int64_t fresh = send_msg(s, "bob", "alice", "fresh");
        assert_int_equal(store_batch_commit(s), 0);
        (void)tu_vm_steps(s);

        assert_int_equal(broker_available(s, "alice"), 1);
        assert_in_range(tu_vm_steps(s), 1, MAX_STEPS);

        int64_t total = -1, leased = -1;
        assert_int_equal(broker_depth(s, "alice", &total, &leased), 0);
        assert_int_equal(total, 1);
        assert_in_range(tu_vm_steps(s), 1, MAX_STEPS);

        json_t *arr = json_array();
        assert_int_equal(broker_unacked(s, "alice", 10, arr), 0);
        assert_int_equal(json_array_size(arr), 1);
        assert_int_equal(msg_id(arr, 0), fresh);
        json_decref(arr);
        assert_in_range(tu_vm_steps(s), 1, MAX_STEPS);

        arr = json_array();
        assert_int_equal(broker_recent(s, "alice", 5, arr), 0);
        assert_int_equal(json_array_size(arr), 5);
        assert_int_equal(msg_id(arr, 4), fresh); /* oldest first, ending with the newest */
        json_decref(arr);
        assert_in_range(tu_vm_steps(s), 1, MAX_STEPS);

        int64_t got = -1;
        assert_int_equal(lease(s, "alice", 5, LONG_LEASE_MS, &got, 1), 1);
        assert_int_equal(got, fresh);
        assert_in_range(tu_vm_steps(s), 1, MAX_STEPS);

        assert_int_equal(broker_release(s, "alice", NULL, 0), 1);
        assert_in_range(tu_vm_steps(s), 1, MAX_STEPS);
}

/* ---- vacuum ---- */

static void test_vacuum_cutoff(void **state)
{
        Fixture *fx = *state;
        int64_t old = send_msg(fx->store, "alice", "bob", "old");
        int64_t young = send_msg(fx->store, "alice", "bob", "young");
        int64_t open = send_msg(fx->store, "alice", "bob", "unacked");
        assert_int_equal(broker_ack(fx->store, "bob", &old, 1), 1);
        int64_t old_acked =
                tu_sql_int(fx->store, "SELECT acked_at FROM messages WHERE id = ?1", old);
        wait_past(old_acked);
        assert_int_equal(broker_ack(fx->store, "bob", &young, 1), 1);
        int64_t young_acked =
                tu_sql_int(fx->store, "SELECT acked_at FROM messages WHERE id = ?1", young);
        assert_true(young_acked > old_acked);

        /* The cutoff is exclusive. */
        assert_int_equal(broker_vacuum(fx->store, old_acked, 100), 0);
        assert_int_equal(count_messages(fx->store), 3);
        assert_int_equal(broker_vacuum(fx->store, old_acked + 1, 100), 1);
        assert_int_equal(count_messages(fx->store), 2);
        assert_int_equal(tu_sql_int(fx->store, "SELECT COUNT(*) FROM messages WHERE id = ?1", old),
                         0);
        assert_int_equal(broker_vacuum(fx->store, old_acked + 1, 100), 0);
        assert_int_equal(broker_vacuum(fx->store, young_acked + 1, 100), 1);
        assert_int_equal(count_messages(fx->store), 1);
        assert_int_equal(tu_sql_int(fx->store, "SELECT COUNT(*) FROM messages WHERE id = ?1", open),
                         1);
}

static void test_vacuum_batch(void **state)
{
        Fixture *fx = *state;
        int64_t ids[5];
        for (int i = 0; i < 5; i++)
                ids[i] = send_msg(fx->store, "alice", "bob", "m");
        assert_int_equal(broker_ack(fx->store, "bob", ids, 5), 5);
        int64_t cutoff = store_now_ms() + 1;

        assert_int_equal(broker_vacuum(fx->store, cutoff, 0), 0);
        assert_int_equal(count_messages(fx->store), 5);
        assert_int_equal(broker_vacuum(fx->store, cutoff, 2), 2);
        assert_int_equal(count_messages(fx->store), 3);
        assert_int_equal(broker_vacuum(fx->store, cutoff, 2), 2);
        assert_int_equal(broker_vacuum(fx->store, cutoff, 2), 1);
        assert_int_equal(broker_vacuum(fx->store, cutoff, 2), 0);
        assert_int_equal(count_messages(fx->store), 0);
}

/* Ids stay increasing even when vacuum removed the newest messages: an id names one message
 * for good (acks, in_reply_to and the operator's notes refer to it). */
static void test_send_ids_not_reused_after_vacuum(void **state)
{
        Fixture *fx = *state;
        int64_t keep = send_msg(fx->store, "alice", "bob", "unacked, kept");
        int64_t gone[3];
        for (int i = 0; i < 3; i++)
                gone[i] = send_msg(fx->store, "alice", "bob", "acked, vacuumed");
        assert_int_equal(broker_ack(fx->store, "bob", gone, 3), 3);
        assert_int_equal(broker_vacuum(fx->store, store_now_ms() + 1, 100), 3);
        int64_t next = send_msg(fx->store, "carol", "bob", "new");
        assert_true(next > keep);
        assert_true(next > gone[2]);
}

static void test_vacuum_never_unacked(void **state)
{
        Fixture *fx = *state;
        int64_t waiting = send_msg(fx->store, "alice", "bob", "waiting");
        int64_t leased = send_msg(fx->store, "alice", "carol", "leased");
        assert_int_equal(lease(fx->store, "carol", 1, LONG_LEASE_MS, NULL, 0), 1);
        assert_int_equal(broker_vacuum(fx->store, INT64_MAX, 100), 0);
        assert_int_equal(count_messages(fx->store), 2);
        int64_t got = 0;
        assert_int_equal(lease(fx->store, "bob", 1, LONG_LEASE_MS, &got, 1), 1);
        assert_int_equal(got, waiting);
        assert_int_equal(broker_unlease(fx->store, &leased, 1), 0);
        assert_int_equal(lease(fx->store, "carol", 1, LONG_LEASE_MS, &got, 1), 1);
        assert_int_equal(got, leased);
}

/* ---- durability and batches ---- */

static void test_reopen_committed(void **state)
{
        Fixture *fx = *state;
        int64_t lo = store_now_ms();
        int64_t q = send_msg(fx->store, "alice", "bob", "kept");
        int64_t a = -1;
        assert_int_equal(broker_send(fx->store, "bob", "alice", "reply", q, &a), 0);
        int64_t hi = store_now_ms();
        assert_true(store_batch_open(fx->store));
        assert_int_equal(store_batch_commit(fx->store), 0);
        assert_false(store_batch_open(fx->store));
        reopen(fx);

        assert_false(store_batch_open(fx->store));
        assert_int_equal(broker_available(fx->store, "bob"), 1);
        json_t *arr = json_array();
        int64_t *ids = NULL;
        size_t n = 0;
        assert_int_equal(broker_lease(fx->store, "bob", 5, LONG_LEASE_MS, arr, &ids, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(ids[0], q);
        check_message(json_array_get(arr, 0), q, "alice", "bob", "kept", 0, lo, hi);
        free(ids);
        json_decref(arr);
        arr = json_array();
        assert_int_equal(broker_lease(fx->store, "alice", 5, LONG_LEASE_MS, arr, &ids, &n), 0);
        assert_int_equal(n, 1);
        check_message(json_array_get(arr, 0), a, "bob", "alice", "reply", q, lo, hi);
        free(ids);
        json_decref(arr);

        /* Ids keep growing across the reopen. */
        assert_true(send_msg(fx->store, "alice", "bob", "next") > a);
}

/* store_close commits the open batch: a send never committed by hand survives, and so do
 * the lease and ack (non-durable writes) of the same round. */
static void test_close_commits_open_batch(void **state)
{
        Fixture *fx = *state;
        int64_t acked = send_msg(fx->store, "alice", "bob", "acked");
        int64_t leased = send_msg(fx->store, "alice", "bob", "leased");
        assert_int_equal(store_batch_commit(fx->store), 0);
        assert_int_equal(lease(fx->store, "bob", 2, LONG_LEASE_MS, NULL, 0), 2);
        assert_int_equal(broker_ack(fx->store, "bob", &acked, 1), 1);
        int64_t fresh = send_msg(fx->store, "carol", "dave", "uncommitted");
        assert_true(store_batch_open(fx->store));
        reopen(fx);

        assert_int_equal(count_messages(fx->store), 3);
        int64_t got = 0;
        assert_int_equal(lease(fx->store, "dave", 5, LONG_LEASE_MS, &got, 1), 1);
        assert_int_equal(got, fresh);
        assert_int_equal(deliveries(fx->store, leased), 1);
        assert_int_equal(broker_available(fx->store, "bob"), 0);
        assert_int_equal(broker_clear_leases(fx->store), 2); /* leased and fresh */
        assert_int_equal(lease(fx->store, "bob", 5, LONG_LEASE_MS, &got, 1), 1);
        assert_int_equal(got, leased);
}

/* Reads on the store's connection see the open batch; other connections see it only once
 * it is committed. */
static void test_uncommitted_visibility(void **state)
{
        Fixture *fx = *state;
        sqlite3 *h = open_other(fx->db);
        int64_t id = send_msg(fx->store, "alice", "bob", "m");
        assert_true(store_batch_open(fx->store));
        assert_int_equal(count_messages(fx->store), 1);
        assert_int_equal(broker_available(fx->store, "bob"), 1);
        assert_int_equal(tu_db_int(h, "SELECT COUNT(*) FROM messages", 0), 0);

        int64_t got = 0;
        assert_int_equal(lease(fx->store, "bob", 1, LONG_LEASE_MS, &got, 1), 1);
        assert_int_equal(got, id);
        assert_true(store_batch_open(fx->store));
        assert_int_equal(tu_db_int(h, "SELECT COUNT(*) FROM messages", 0), 0);

        assert_int_equal(store_batch_commit(fx->store), 0);
        assert_false(store_batch_open(fx->store));
        assert_int_equal(tu_db_int(h, "SELECT COUNT(*) FROM messages", 0), 1);
        assert_int_equal(tu_db_int(h, "SELECT deliveries FROM messages", 0), 1);
        sqlite3_close(h);
}

/* A durable write joining a non-durable batch commits that batch first and opens a durable
 * one. */
static void test_batch_upgrade(void **state)
{
        Fixture *fx = *state;
        int64_t id = send_msg(fx->store, "alice", "bob", "m");
        assert_int_equal(store_batch_commit(fx->store), 0);
        sqlite3 *h = open_other(fx->db);

        assert_int_equal(store_batch_write(fx->store, false), 0);
        assert_true(store_batch_open(fx->store));
        assert_int_equal(tu_sql_int(fx->store, "PRAGMA synchronous", 0), 1); /* NORMAL */
        assert_int_equal(broker_ack(fx->store, "bob", &id, 1), 1);
        assert_int_equal(tu_db_int(h, "SELECT acked_at IS NULL FROM messages", 0), 1);

        assert_int_equal(store_batch_write(fx->store, true), 0);
        assert_true(store_batch_open(fx->store));
        assert_int_equal(tu_sql_int(fx->store, "PRAGMA synchronous", 0), 2); /* FULL */
        /* The non-durable batch was committed... */
        assert_int_equal(tu_db_int(h, "SELECT acked_at IS NULL FROM messages", 0), 0);
        /* ...and what follows is in a new, still open one. */
        int64_t next = send_msg(fx->store, "alice", "bob", "n");
        assert_int_equal(tu_db_int(h, "SELECT COUNT(*) FROM messages", 0), 1);
        assert_int_equal(store_batch_commit(fx->store), 0);
        assert_false(store_batch_open(fx->store));
        assert_int_equal(tu_db_int(h, "SELECT MAX(id) FROM messages", 0), next);
        sqlite3_close(h);
}

/* A non-durable write joins an open durable batch (no commit in between), and so does a
 * second durable one. */
static void test_batch_join(void **state)
{
        Fixture *fx = *state;
        sqlite3 *h = open_other(fx->db);
        assert_int_equal(store_batch_write(fx->store, true), 0);
        assert_int_equal(tu_sql_int(fx->store, "PRAGMA synchronous", 0), 2);
        int64_t id = send_msg(fx->store, "alice", "bob", "m");
        assert_int_equal(store_batch_write(fx->store, false), 0);
        assert_true(store_batch_open(fx->store));
        assert_int_equal(tu_sql_int(fx->store, "PRAGMA synchronous", 0), 2);
        assert_int_equal(lease(fx->store, "bob", 1, LONG_LEASE_MS, NULL, 0), 1);
        assert_int_equal(store_batch_write(fx->store, true), 0);
        assert_int_equal(tu_db_int(h, "SELECT COUNT(*) FROM messages", 0), 0);
        assert_int_equal(store_batch_commit(fx->store), 0);
        assert_int_equal(tu_db_int(h, "SELECT COUNT(*) FROM messages", 0), 1);
        assert_int_equal(tu_db_int(h, "SELECT deliveries FROM messages", 0), 1);
        assert_int_equal(deliveries(fx->store, id), 1);
        sqlite3_close(h);
}

static void test_batch_commit_none(void **state)
{
        Fixture *fx = *state;
        assert_false(store_batch_open(fx->store));
        assert_int_equal(store_batch_commit(fx->store), 0);
        assert_false(store_batch_open(fx->store));

        assert_int_equal(store_batch_write(fx->store, false), 0);
        assert_true(store_batch_open(fx->store));
        assert_int_equal(store_batch_commit(fx->store), 0);
        assert_false(store_batch_open(fx->store));
        assert_int_equal(store_batch_commit(fx->store), 0);

        /* Reads open no batch. */
        (void)send_msg(fx->store, "alice", "bob", "m");
        assert_int_equal(store_batch_commit(fx->store), 0);
        int64_t total, leased;
        assert_int_equal(broker_available(fx->store, "bob"), 1);
        assert_int_equal(broker_depth(fx->store, "bob", &total, &leased), 0);
        json_t *arr = json_array();
        assert_int_equal(broker_recent(fx->store, "bob", 5, arr), 0);
        assert_int_equal(broker_unacked(fx->store, "bob", 5, arr), 0);
        json_decref(arr);
        assert_false(store_batch_open(fx->store));
}

int main(void)
{
        log_set_max_level(LOG_CRIT); /* commit failures are logged at error level */
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        const struct CMUnitTest tests[] = {
                T(test_send_ids_increase),
                T(test_send_in_reply_to),
                T(test_writes_busy),
                T(test_lease_message_json),
                T(test_lease_oldest_first_at_most_max),
                T(test_lease_appends_to_arr),
                T(test_lease_only_recipient),
                T(test_lease_nothing),
                T(test_lease_expiry_redelivers),
                T(test_lease_expired_comes_first),
                T(test_unlease),
                T(test_release),
                T(test_clear_leases),
                T(test_clear_leases_after_reopen),
                T(test_ack),
                T(test_ack_without_lease),
                T(test_available),
                T(test_depth),
                T(test_recent),
                T(test_recent_merges_directions),
                T(test_recent_across_blocks),
                T(test_sends_share_index_pages),
                T(test_unacked),
                T(test_queries_do_not_read_the_history),
                T(test_vacuum_cutoff),
                T(test_vacuum_batch),
                T(test_vacuum_never_unacked),
                T(test_send_ids_not_reused_after_vacuum),
                T(test_reopen_committed),
                T(test_close_commits_open_batch),
                T(test_uncommitted_visibility),
                T(test_batch_upgrade),
                T(test_batch_join),
                T(test_batch_commit_none),
        };
        return cmocka_run_group_tests_name("broker", tests, NULL, NULL);
}
