/* Unit tests of the request_ids table (c0re/request_ids.c), each case on a fresh temp sqlite
 * database.  The dedupe logic that uses it is tested in test-dispatch.c. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "cleanup.h"
#include "request_ids.h"
#include "store.h"
#include "testutil.h"

typedef StoreFixture Fixture;
#define setup    tu_store_setup
#define teardown tu_store_teardown

static void test_put_and_get(void **state)
{
        Fixture *fx = *state;
        char *cmd = (char *)1, *answer = (char *)1;
        assert_int_equal(request_ids_get(fx->store, "a1", "req-0001", &cmd, &answer), 0);
        assert_ptr_equal(cmd, (char *)1); /* untouched when not found */

        assert_int_equal(request_ids_put(fx->store, "a1", "req-0001", "send",
                                         "{\"version\":1,\"ok\":true,\"id\":7}"),
                         0);
        assert_true(store_batch_open(fx->store));
        assert_int_equal(request_ids_get(fx->store, "a1", "req-0001", &cmd, &answer), 1);
        assert_string_equal(cmd, "send");
        assert_string_equal(answer, "{\"version\":1,\"ok\":true,\"id\":7}");
        free(cmd);
        free(answer);

        /* The key is (agent, request_id): another agent's id is its own. */
        assert_int_equal(request_ids_get(fx->store, "b2", "req-0001", &cmd, &answer), 0);
        assert_int_equal(request_ids_put(fx->store, "b2", "req-0001", "wake", "{}"), 0);
        assert_int_equal(request_ids_put(fx->store, "a1", "req-0001", "wake", "{}"), -EEXIST);
        assert_int_equal(store_batch_commit(fx->store), 0);

        /* Durable: there after a reopen. */
        fx->store = store_close(fx->store);
        assert_int_equal(store_open(fx->db, &fx->store), 0);
        assert_int_equal(request_ids_get(fx->store, "b2", "req-0001", &cmd, &answer), 1);
        assert_string_equal(cmd, "wake");
        free(cmd);
        free(answer);
        assert_int_equal(tu_sql_int(fx->store, "SELECT COUNT(*) FROM request_ids", 0), 2);
}

static void test_vacuum_forgets_old_rows_in_batches(void **state)
{
        Fixture *fx = *state;
        char id[16];
        for (int i = 0; i < 5; i++) {
                snprintf(id, sizeof(id), "req-%04d", i);
                assert_int_equal(request_ids_put(fx->store, "a1", id, "send", "{}"), 0);
        }
        /* Three of them were answered two days ago. */
        int64_t old = store_now_ms() - 2 * REQUEST_IDS_KEEP_MS;
        char sql[160];
        snprintf(sql, sizeof(sql),
                 "UPDATE request_ids SET at = %lld WHERE request_id <= 'req-0002'", (long long)old);
        assert_int_equal(sqlite3_exec(store_db(fx->store), sql, NULL, NULL, NULL), SQLITE_OK);
        assert_int_equal(store_batch_commit(fx->store), 0);
        int64_t cutoff = store_now_ms() - REQUEST_IDS_KEEP_MS;
        assert_int_equal(request_ids_vacuum(fx->store, cutoff, 2), 2);
        assert_int_equal(store_batch_commit(fx->store), 0);
        assert_int_equal(request_ids_vacuum(fx->store, cutoff, 2), 1);
        assert_int_equal(request_ids_vacuum(fx->store, cutoff, 2), 0);
        assert_int_equal(store_batch_commit(fx->store), 0);
        assert_int_equal(tu_sql_int(fx->store, "SELECT COUNT(*) FROM request_ids", 0), 2);
        char *cmd = NULL, *answer = NULL;
        assert_int_equal(request_ids_get(fx->store, "a1", "req-0000", &cmd, &answer), 0);
        assert_int_equal(request_ids_get(fx->store, "a1", "req-0004", &cmd, &answer), 1);
        free(cmd);
        free(answer);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        const struct CMUnitTest tests[] = {
                T(test_put_and_get),
                T(test_vacuum_forgets_old_rows_in_batches),
        };
        return cmocka_run_group_tests_name("request_ids", tests, NULL, NULL);
}
