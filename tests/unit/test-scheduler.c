/* The scheduler thread's WAL work: its passive checkpoints, and the write-out of the pages
 * they copied every SCHEDULER_WRITE_OUT_FRAMES frames.  (Reminders and questions, which it
 * also fires and expires, have their own tests.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <unistd.h>

#include "scheduler.h"
#include "testutil.h"

/* Kicks the thread until get(sch) is at least `at_least` (bounded, 5 s).  Returns get(sch). */
static int kick_until(Scheduler *sch, int (*get)(Scheduler *), int at_least)
{
        for (int i = 0; i < 500 && get(sch) < at_least; i++) {
                scheduler_kick(sch);
                tu_sleep_ms(10);
        }
        return get(sch);
}

static int wal_hook(void *userdata, sqlite3 *db, const char *name, int frames)
{
        *(int *)userdata = frames;
        return SQLITE_OK;
}

/* Commits transactions of ten rows on db until its WAL holds at least `to` frames.  Returns
 * the frames it holds. */
static int grow_wal(sqlite3 *db, int to)
{
        int frames = 0;
        sqlite3_wal_hook(db, wal_hook, &frames); /* also: db never checkpoints by itself */
        while (frames < to)
                assert_int_equal(sqlite3_exec(db,
                                              "BEGIN;"
                                              "INSERT INTO t(b) SELECT zeroblob(3000) "
                                              "  FROM (SELECT 1 UNION ALL SELECT 2) a, "
                                              "       (SELECT 1 UNION ALL SELECT 2 "
                                              "        UNION ALL SELECT 3 UNION ALL SELECT 4 "
                                              "        UNION ALL SELECT 5) b;"
                                              "COMMIT",
                                              NULL, NULL, NULL),
                                 SQLITE_OK);
        sqlite3_wal_hook(db, NULL, NULL); /* frames is gone after this */
        return frames;
}

static void test_writes_out_what_it_copied(void **state)
{
        StoreFixture *f = *state;
        sqlite3 *w = NULL;
        assert_int_equal(sqlite3_open(f->db, &w), SQLITE_OK);
        assert_int_equal(sqlite3_exec(w, "CREATE TABLE t (b BLOB)", NULL, NULL, NULL), SQLITE_OK);
        Scheduler *sch = NULL;
        int fd = -1;
        assert_int_equal(scheduler_start(f->db, &sch, &fd), 0);

        int frames = grow_wal(w, SCHEDULER_WRITE_OUT_FRAMES / 2);
        assert_true(frames < SCHEDULER_WRITE_OUT_FRAMES);
        assert_true(kick_until(sch, scheduler_checkpointed, frames) >= frames);
        scheduler_kick(sch); /* one round more: still short of a write-out */
        tu_sleep_ms(100);
        assert_int_equal(scheduler_write_outs(sch), 0);

        frames = grow_wal(w, SCHEDULER_WRITE_OUT_FRAMES);
        assert_true(kick_until(sch, scheduler_checkpointed, frames) >= frames);
        assert_int_equal(kick_until(sch, scheduler_write_outs, 1), 1);

        /* The WAL starting over (fewer frames copied than at the last write-out) writes out
         * again: those pages are new. */
        scheduler_wal_restarted(sch);
        assert_int_equal(sqlite3_wal_checkpoint_v2(w, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL),
                         SQLITE_OK);
        frames = grow_wal(w, 100);
        assert_true(kick_until(sch, scheduler_checkpointed, frames) >= frames);
        assert_int_equal(kick_until(sch, scheduler_write_outs, 2), 2);

        scheduler_stop(sch);
        close(fd);
        sqlite3_close(w);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_writes_out_what_it_copied, tu_store_setup,
                                                tu_store_teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
