/* Unit tests of the WAL write-coalescing VFS (c0re/walbuf.c): a commit reaches the WAL file
 * in one write and is readable by another connection at once; transactions larger than the
 * buffer and frames spilled mid-transaction come through whole; a failed write fails the
 * commit and loses nothing committed.  Write failures are made by replacing the pwrite of
 * sqlite's unix VFS (xSetSystemCall), the real file system below. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "cleanup.h"
#include "log.h"
#include "testutil.h"
#include "walbuf.h"

#define VFS "walbuf-test"

typedef struct Fixture {
        char *dir;
        char *db;
        sqlite3 *w; /* over the shim */
        sqlite3 *r; /* sqlite's own VFS: sees only what reached the file */
} Fixture;

static void exec_ok(sqlite3 *h, const char *sql)
{
        char *err = NULL;
        int rc = sqlite3_exec(h, sql, NULL, NULL, &err);
        if (rc != SQLITE_OK)
                fail_msg("%s: %s", sql, err ? err : sqlite3_errstr(rc));
}

static void open_w(Fixture *f)
{
        assert_int_equal(
                sqlite3_open_v2(f->db, &f->w, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, VFS),
                SQLITE_OK);
        exec_ok(f->w, "PRAGMA page_size=1024; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL");
}

static int setup(void **state)
{
        Fixture *f = calloc(1, sizeof(*f));
        assert_non_null(f);
        assert_int_equal(walbuf_register(VFS, NULL), 0);
        f->dir = tu_mkdtemp();
        assert_true(asprintf(&f->db, "%s/t.sqlite", f->dir) > 0);
        open_w(f);
        exec_ok(f->w, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL);"
                      "CREATE INDEX t_v ON t(v);");
        assert_int_equal(sqlite3_open_v2(f->db, &f->r, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        Fixture *f = *state;
        sqlite3_close(f->r);
        sqlite3_close(f->w);
        assert_int_equal(tu_rm_rf(f->dir), 0);
        free(f->db);
        free(f->dir);
        free(f);
        return 0;
}

/* Inserts n rows of `bytes` bytes each, ids from first, in the current transaction. */
static void insert_rows(sqlite3 *h, int first, int n, int bytes)
{
        sqlite3_stmt *st = NULL;
        assert_int_equal(
                sqlite3_prepare_v2(h, "INSERT INTO t (id, v) VALUES (?1, printf('%0*d', ?2, ?1))",
                                   -1, &st, NULL),
                SQLITE_OK);
        for (int i = first; i < first + n; i++) {
                sqlite3_bind_int(st, 1, i);
                sqlite3_bind_int(st, 2, bytes);
                assert_int_equal(sqlite3_step(st), SQLITE_DONE);
                sqlite3_reset(st);
        }
        sqlite3_finalize(st);
}

/* Closes both connections and opens the reader alone, so that whatever it reads comes from
 * the files (recovering from the WAL if one is left).  The writer comes back with open_w(). */
static void reopen_reader_alone(Fixture *f)
{
        sqlite3_close(f->r);
        sqlite3_close(f->w);
        f->w = NULL;
        assert_int_equal(sqlite3_open_v2(f->db, &f->r, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
}

static void test_a_commit_is_one_write_and_visible_at_once(void **state)
{
        Fixture *f = *state;
        for (int round = 0; round < 50; round++) {
                uint64_t w0, fw0, w1, fw1;
                walbuf_stats(&w0, &fw0);
                exec_ok(f->w, "BEGIN");
                /* rows spread over the table and its index: many pages per commit */
                insert_rows(f->w, round * 1000 + 1, 8, 300);
                exec_ok(f->w, "COMMIT");
                walbuf_stats(&w1, &fw1);
                /* sqlite wrote two pieces per frame (and the WAL header once) ... */
                assert_true(w1 - w0 >= 8);
                /* ... and the file got them in one write */
                assert_int_equal(fw1 - fw0, 1);
                /* another connection, on sqlite's own VFS, reads the commit at once */
                assert_int_equal(tu_db_int(f->r, "SELECT COUNT(*) FROM t", 0), (round + 1) * 8);
        }
        char *err = NULL;
        assert_int_equal(sqlite3_exec(f->r, "PRAGMA integrity_check", NULL, NULL, &err), SQLITE_OK);
}

static void test_a_commit_over_the_buffer_is_written_whole(void **state)
{
        Fixture *f = *state;
        /* about 1.2 MiB of frames appended in one commit, no spill: the buffer fills many
         * times over (sqlite's unix VFS writes at most 128 KiB per call) */
        for (int round = 0; round < 3; round++) {
                exec_ok(f->w, "BEGIN");
                insert_rows(f->w, round * 10000 + 1, 1500, 700);
                exec_ok(f->w, "COMMIT");
                assert_int_equal(tu_db_int(f->r, "SELECT COUNT(*) FROM t WHERE length(v) = 700", 0),
                                 (round + 1) * 1500);
        }
        char *err = NULL;
        assert_int_equal(sqlite3_exec(f->r, "PRAGMA integrity_check", NULL, NULL, &err), SQLITE_OK);
}

static void test_large_and_spilled_transactions_come_through_whole(void **state)
{
        Fixture *f = *state;
        /* a tiny cache: the transaction spills frames into the WAL before its commit */
        exec_ok(f->w, "PRAGMA cache_size=8");
        exec_ok(f->w, "BEGIN");
        insert_rows(f->w, 1, 1500, 700); /* over 1 MiB: more than the buffer holds */
        /* a reader in between sees nothing of it (its barrier may write out spilled frames) */
        assert_int_equal(tu_db_int(f->r, "SELECT COUNT(*) FROM t", 0), 0);
        insert_rows(f->w, 1501, 500, 700);
        /* the writer reads its own spilled pages back through the WAL */
        assert_int_equal(tu_db_int(f->w, "SELECT COUNT(*) FROM t WHERE length(v) = 700", 0), 2000);
        exec_ok(f->w, "COMMIT");
        assert_int_equal(tu_db_int(f->r, "SELECT COUNT(*) FROM t", 0), 2000);
        assert_int_equal(tu_db_int(f->r, "SELECT SUM(id) FROM t", 0), 2000 * 2001 / 2);

        /* a checkpoint copies what the WAL holds; the database alone has it all */
        exec_ok(f->w, "PRAGMA wal_checkpoint(TRUNCATE)");
        reopen_reader_alone(f);
        assert_int_equal(tu_db_int(f->r, "SELECT COUNT(*) FROM t WHERE length(v) = 700", 0), 2000);
        open_w(f);
}

/* ---- write failures ---- */

static sqlite3_syscall_ptr real_pwrite, real_pwrite64;
static int fail_wal_writes; /* fail this many more writes to a -wal file */

static bool is_wal_fd(int fd)
{
        char link[64], target[4096];
        snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, target, sizeof(target) - 1);
        if (n < 4)
                return false;
        target[n] = '\0';
        return strcmp(target + n - 4, "-wal") == 0;
}

/* Whether this write to fd is to fail (with EIO). */
static bool fail_now(int fd)
{
        if (fail_wal_writes <= 0 || !is_wal_fd(fd))
                return false;
        fail_wal_writes--;
        errno = EIO;
        return true;
}

typedef ssize_t (*PwriteFn)(int, const void *, size_t, off_t);

static ssize_t failing_pwrite(int fd, const void *buf, size_t n, off_t off)
{
        return fail_now(fd) ? -1 : ((PwriteFn)real_pwrite)(fd, buf, n, off);
}

static ssize_t failing_pwrite64(int fd, const void *buf, size_t n, off_t off)
{
        return fail_now(fd) ? -1 : ((PwriteFn)real_pwrite64)(fd, buf, n, off);
}

/* Puts these pwrite and pwrite64 into sqlite's unix VFS (those of the two it has).  Returns
 * SQLITE_OK or the first error. */
static int set_pwrites(sqlite3_vfs *v, sqlite3_syscall_ptr pw, sqlite3_syscall_ptr pw64)
{
        int rc = real_pwrite ? v->xSetSystemCall(v, "pwrite", pw) : SQLITE_OK;
        if (rc == SQLITE_OK && real_pwrite64)
                rc = v->xSetSystemCall(v, "pwrite64", pw64);
        return rc;
}

static void test_a_failed_write_fails_the_commit_and_loses_nothing(void **state)
{
        Fixture *f = *state;
        exec_ok(f->w, "BEGIN");
        insert_rows(f->w, 1, 10, 300);
        exec_ok(f->w, "COMMIT");

        sqlite3_vfs *unix_vfs = sqlite3_vfs_find("unix");
        assert_non_null(unix_vfs);
        real_pwrite = unix_vfs->xGetSystemCall(unix_vfs, "pwrite");
        real_pwrite64 = unix_vfs->xGetSystemCall(unix_vfs, "pwrite64");
        assert_true(real_pwrite || real_pwrite64);
        assert_int_equal(set_pwrites(unix_vfs, (sqlite3_syscall_ptr)failing_pwrite,
                                     (sqlite3_syscall_ptr)failing_pwrite64),
                         SQLITE_OK);

        fail_wal_writes = 1;
        exec_ok(f->w, "BEGIN");
        insert_rows(f->w, 11, 10, 300);
        int rc = sqlite3_exec(f->w, "COMMIT", NULL, NULL, NULL);
        assert_int_equal(rc & 0xff, SQLITE_IOERR);
        assert_int_equal(fail_wal_writes, 0); /* the commit's write was the one that failed */
        if (!sqlite3_get_autocommit(f->w))
                exec_ok(f->w, "ROLLBACK");
        /* nothing of the failed transaction is visible; what was committed is */
        assert_int_equal(tu_db_int(f->r, "SELECT COUNT(*) FROM t", 0), 10);

        /* the connection goes on: the next commit lands */
        exec_ok(f->w, "BEGIN");
        insert_rows(f->w, 21, 10, 300);
        exec_ok(f->w, "COMMIT");

        (void)set_pwrites(unix_vfs, real_pwrite, real_pwrite64);
        assert_int_equal(tu_db_int(f->r, "SELECT COUNT(*) FROM t", 0), 20);
        assert_int_equal(tu_db_int(f->r, "SELECT COUNT(*) FROM t WHERE id BETWEEN 11 AND 20", 0),
                         0);

        /* and after closing everything, recovery from the WAL finds the same */
        reopen_reader_alone(f);
        assert_int_equal(tu_db_int(f->r, "SELECT COUNT(*) FROM t", 0), 20);
        open_w(f);
}

static void test_register_twice_and_unknown_base(void **state)
{
        (void)state;
        assert_int_equal(walbuf_register(VFS, NULL), 0);
        assert_int_equal(walbuf_register("walbuf-test-2", "no-such-vfs"), -ENOENT);
        assert_null(sqlite3_vfs_find("walbuf-test-2"));
}

int main(void)
{
        log_set_max_level(LOG_CRIT);
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        const struct CMUnitTest tests[] = {
                T(test_a_commit_is_one_write_and_visible_at_once),
                T(test_a_commit_over_the_buffer_is_written_whole),
                T(test_large_and_spilled_transactions_come_through_whole),
                T(test_a_failed_write_fails_the_commit_and_loses_nothing),
                T(test_register_twice_and_unknown_base),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
