/* Helpers shared by the unit tests. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <cmocka.h>
#include <sqlite3.h>

#include "fsutil.h"
#include "testutil.h"

char *tu_mkdtemp(void)
{
        const char *tmp = getenv("TMPDIR");
        char *path = NULL;
        if (asprintf(&path, "%s/hive-unit-XXXXXX", tmp && *tmp ? tmp : "/tmp") < 0)
                abort();
        if (!mkdtemp(path)) {
                perror("mkdtemp");
                abort();
        }
        return path;
}

int tu_rm_rf(const char *path)
{
        return fsutil_rm_rf(path);
}

char *tu_read_file(const char *path, size_t *ret_len)
{
        FILE *f = fopen(path, "re");
        if (!f)
                return NULL;
        char *buf = NULL;
        size_t len = 0, cap = 0;
        for (;;) {
                if (cap - len < 4096) {
                        char *p = realloc(buf, cap + 65536);
                        if (!p) {
                                free(buf);
                                fclose(f);
                                errno = ENOMEM;
                                return NULL;
                        }
                        buf = p;
                        cap += 65536;
                }
                size_t k = fread(buf + len, 1, cap - len - 1, f);
                len += k;
                if (k == 0)
                        break;
        }
        int err = ferror(f);
        fclose(f);
        if (err) {
                free(buf);
                errno = EIO;
                return NULL;
        }
        buf[len] = '\0';
        if (ret_len)
                *ret_len = len;
        return buf;
}

char *tu_fixture_path(const char *name)
{
        const char *dir = getenv("FIXTURES");
        char *path = NULL;
        if (asprintf(&path, "%s/%s", dir && *dir ? dir : HIVE_FIXTURES_DIR, name) < 0)
                abort();
        return path;
}

int tu_write_file(const char *path, const char *content)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        size_t n = strlen(content);
        ssize_t k = write(fd, content, n);
        int r = k < 0 ? -errno : (size_t)k != n ? -EIO : 0;
        close(fd);
        return r;
}

int tu_store_setup(void **state)
{
        StoreFixture *fx = calloc(1, sizeof(*fx));
        assert_non_null(fx);
        fx->dir = tu_mkdtemp();
        assert_true(asprintf(&fx->db, "%s/hive.sqlite", fx->dir) > 0);
        assert_int_equal(store_open(fx->db, &fx->store), 0);
        assert_non_null(fx->store);
        *state = fx;
        return 0;
}

int tu_store_teardown(void **state)
{
        StoreFixture *fx = *state;
        fx->store = store_close(fx->store);
        assert_int_equal(tu_rm_rf(fx->dir), 0);
        free(fx->db);
        free(fx->dir);
        free(fx);
        return 0;
}

int64_t tu_db_int(sqlite3 *db, const char *sql, int64_t arg)
{
        sqlite3_stmt *st = NULL;
        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
        if (sqlite3_bind_parameter_count(st) > 0)
                assert_int_equal(sqlite3_bind_int64(st, 1, arg), SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        int64_t v = sqlite3_column_type(st, 0) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        return v;
}

int64_t tu_sql_int(Store *s, const char *sql, int64_t arg)
{
        return tu_db_int(store_db(s), sql, arg);
}

char *tu_sql_text(Store *s, const char *sql, int64_t arg)
{
        sqlite3_stmt *st = NULL;
        assert_int_equal(sqlite3_prepare_v2(store_db(s), sql, -1, &st, NULL), SQLITE_OK);
        if (sqlite3_bind_parameter_count(st) > 0)
                assert_int_equal(sqlite3_bind_int64(st, 1, arg), SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        const char *t = (const char *)sqlite3_column_text(st, 0);
        char *v = t ? strdup(t) : NULL;
        if (t)
                assert_non_null(v);
        sqlite3_finalize(st);
        return v;
}

void tu_sleep_ms(long ms)
{
        struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

long tu_vm_steps(Store *s)
{
        long n = 0;
        for (sqlite3_stmt *st = sqlite3_next_stmt(store_db(s), NULL); st;
             st = sqlite3_next_stmt(store_db(s), st))
                n += sqlite3_stmt_status(st, SQLITE_STMTSTATUS_VM_STEP, 1);
        return n;
}
