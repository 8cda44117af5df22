/* The harness's event bus: seq, history, waiting, the sqlite copy across a reopen, and a
 * database that cannot be used. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "evbus.h"
#include "testutil.h"

static json_t *payload(int i)
{
        return json_pack("{s:i}", "i", i);
}

static void test_publish_history_seq(void **state)
{
        EvBus *b = NULL;
        assert_int_equal(evbus_open(NULL, &b), 0);
        assert_int_equal(evbus_seq(b), 0);
        json_t *h = evbus_history(b, 0, 10);
        assert_int_equal(json_array_size(h), 0);
        json_decref(h);
        for (int i = 1; i <= 5; i++) {
                json_t *p = payload(i);
                assert_int_equal(evbus_publish(b, "note", p), (uint64_t)i);
                json_decref(p);
        }
        assert_int_equal(evbus_publish(b, "turn_end", NULL), 6);
        h = evbus_history(b, 0, 100);
        assert_int_equal(json_array_size(h), 6);
        json_t *e = json_array_get(h, 0);
        assert_int_equal(json_integer_value(json_object_get(e, "seq")), 1);
        assert_string_equal(json_string_value(json_object_get(e, "kind")), "note");
        assert_int_equal(json_integer_value(json_object_get(json_object_get(e, "payload"), "i")),
                         1);
        const char *ts = json_string_value(json_object_get(e, "ts"));
        assert_non_null(ts);
        assert_int_equal(strlen(ts), strlen("2026-11-23T16:00:00.000Z"));
        assert_true(json_is_null(json_object_get(json_array_get(h, 5), "payload")));
        json_decref(h);
        /* after and max: the newest max of those after */
        h = evbus_history(b, 2, 2);
        assert_int_equal(json_array_size(h), 2);
        assert_int_equal(json_integer_value(json_object_get(json_array_get(h, 0), "seq")), 5);
        json_decref(h);
        h = evbus_history(b, 6, 10);
        assert_int_equal(json_array_size(h), 0);
        json_decref(h);
        evbus_free(b);
}

static void test_ring_keeps_the_newest(void **state)
{
        EvBus *b = NULL;
        assert_int_equal(evbus_open(NULL, &b), 0);
        for (unsigned i = 1; i <= EVBUS_KEEP + 10; i++)
                evbus_publish(b, "stream", NULL);
        json_t *h = evbus_history(b, 0, EVBUS_KEEP * 2);
        assert_int_equal(json_array_size(h), EVBUS_KEEP);
        assert_int_equal(json_integer_value(json_object_get(json_array_get(h, 0), "seq")), 11);
        json_decref(h);
        evbus_free(b);
}

typedef struct Waiter {
        EvBus *b;
        uint64_t got;
} Waiter;

static void *waiter(void *arg)
{
        Waiter *w = arg;
        w->got = evbus_wait(w->b, 0, 10000);
        return NULL;
}

static void test_wait_wakes_on_publish_and_close(void **state)
{
        EvBus *b = NULL;
        assert_int_equal(evbus_open(NULL, &b), 0);
        assert_int_equal(evbus_wait(b, 0, 50), 0); /* times out */
        Waiter w = {.b = b};
        pthread_t t;
        pthread_create(&t, NULL, waiter, &w);
        usleep(50000);
        evbus_publish(b, "note", NULL);
        pthread_join(t, NULL);
        assert_int_equal(w.got, 1);
        assert_int_equal(evbus_wait(b, 0, -1), 1); /* already newer: at once */

        w.got = 99;
        pthread_create(&t, NULL, waiter, &w);
        usleep(50000);
        /* waits for seq > 0 which exists: returns 1 at once; now one that must be closed */
        pthread_join(t, NULL);
        assert_int_equal(w.got, 1);
        assert_false(evbus_closed(b));
        evbus_close(b);
        assert_true(evbus_closed(b));
        assert_int_equal(evbus_wait(b, 1, -1), 1); /* closed: no blocking */
        evbus_free(b);
}

static void test_database_survives_a_reopen(void **state)
{
        char *dir = tu_mkdtemp();
        char *db = NULL;
        assert_true(asprintf(&db, "%s/events.sqlite", dir) > 0);
        EvBus *b = NULL;
        assert_int_equal(evbus_open(db, &b), 0);
        for (int i = 1; i <= 3; i++) {
                json_t *p = payload(i);
                evbus_publish(b, "turn_start", p);
                json_decref(p);
        }
        evbus_free(b);
        assert_int_equal(evbus_open(db, &b), 0);
        assert_int_equal(evbus_seq(b), 3);
        json_t *h = evbus_history(b, 0, 10);
        assert_int_equal(json_array_size(h), 3);
        json_t *e = json_array_get(h, 2);
        assert_string_equal(json_string_value(json_object_get(e, "kind")), "turn_start");
        assert_int_equal(json_integer_value(json_object_get(json_object_get(e, "payload"), "i")),
                         3);
        json_decref(h);
        assert_int_equal(evbus_publish(b, "note", NULL), 4); /* the seq goes on */
        evbus_free(b);
        free(db);
        tu_rm_rf(dir);
        free(dir);
}

static void test_unusable_database_runs_in_memory(void **state)
{
        char *dir = tu_mkdtemp();
        char *db = NULL;
        assert_true(asprintf(&db, "%s/not-a-db.sqlite", dir) > 0);
        assert_int_equal(tu_write_file(db, "this is not an sqlite database, not at all.........."
                                           "............................................\n"),
                         0);
        EvBus *b = NULL;
        assert_int_equal(evbus_open(db, &b), 0);
        assert_int_equal(evbus_publish(b, "note", NULL), 1);
        json_t *h = evbus_history(b, 0, 10);
        assert_int_equal(json_array_size(h), 1);
        json_decref(h);
        evbus_free(b);
        /* a directory that does not exist */
        char *missing = NULL;
        assert_true(asprintf(&missing, "%s/no/such/dir/e.sqlite", dir) > 0);
        assert_int_equal(evbus_open(missing, &b), 0);
        assert_int_equal(evbus_publish(b, "note", NULL), 1);
        evbus_free(b);
        free(missing);
        free(db);
        tu_rm_rf(dir);
        free(dir);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_publish_history_seq),
                cmocka_unit_test(test_ring_keeps_the_newest),
                cmocka_unit_test(test_wait_wakes_on_publish_and_close),
                cmocka_unit_test(test_database_survives_a_reopen),
                cmocka_unit_test(test_unusable_database_runs_in_memory),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
