/* Unit tests of sh4re/fsutil.c: mkdir_p, rm_rf (never following a symlink), find_program. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "fsutil.h"
#include "testutil.h"

static void test_mkdir_p(void **state)
{
        char *dir = tu_mkdtemp();
        char *deep = NULL, *file = NULL;
        assert_true(asprintf(&deep, "%s/a/b/c", dir) > 0);
        assert_int_equal(fsutil_mkdir_p(deep, 0700), 0);
        assert_int_equal(fsutil_mkdir_p(deep, 0700), 0); /* existing is fine */
        struct stat st;
        assert_int_equal(stat(deep, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0700);
        assert_true(asprintf(&file, "%s/f", dir) > 0);
        assert_int_equal(tu_write_file(file, "x"), 0);
        assert_int_equal(fsutil_mkdir_p(file, 0700), -ENOTDIR);
        assert_int_equal(fsutil_rm_rf(dir), 0);
        free(deep);
        free(file);
        free(dir);
}

static void test_rm_rf_keeps_symlink_targets(void **state)
{
        char *outside = tu_mkdtemp(), *dir = tu_mkdtemp();
        char *keep = NULL, *link = NULL, *sub = NULL;
        assert_true(asprintf(&keep, "%s/keep", outside) > 0);
        assert_int_equal(tu_write_file(keep, "precious"), 0);
        assert_true(asprintf(&sub, "%s/sub", dir) > 0);
        assert_int_equal(fsutil_mkdir_p(sub, 0755), 0);
        assert_true(asprintf(&link, "%s/sub/.tmp", dir) > 0);
        assert_int_equal(symlink(outside, link), 0);
        assert_int_equal(fsutil_rm_rf(dir), 0);
        assert_int_equal(access(dir, F_OK), -1);
        assert_int_equal(access(keep, F_OK), 0);
        assert_int_equal(fsutil_rm_rf(dir), 0); /* missing is fine */
        assert_int_equal(fsutil_rm_rf(outside), 0);
        free(keep);
        free(link);
        free(sub);
        free(outside);
        free(dir);
}

static void test_write_atomic(void **state)
{
        char *dir = tu_mkdtemp();
        char *path = NULL;
        assert_true(asprintf(&path, "%s/file", dir) > 0);
        assert_int_equal(fsutil_write_atomic(path, "first\n", 6, 0600), 0);
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
        char *text = tu_read_file(path, NULL);
        assert_string_equal(text, "first\n");
        free(text);
        /* replaced whole, with the new mode, and no temp file left behind */
        assert_int_equal(fsutil_write_atomic(path, "second", 6, 0644), 0);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0644);
        text = tu_read_file(path, NULL);
        assert_string_equal(text, "second");
        free(text);
        assert_int_equal(fsutil_write_atomic(path, "", 0, 0644), 0);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_size, 0);
        char *ls = NULL;
        assert_true(asprintf(&ls, "test \"$(ls -A '%s')\" = file", dir) > 0);
        assert_int_equal(system(ls), 0);
        free(ls);
        /* a directory that is not there */
        char *missing = NULL;
        assert_true(asprintf(&missing, "%s/no/file", dir) > 0);
        assert_int_equal(fsutil_write_atomic(missing, "x", 1, 0644), -ENOENT);
        free(missing);
        free(path);
        tu_rm_rf(dir);
        free(dir);
}

static void test_find_program(void **state)
{
        char *sh = fsutil_find_program("sh");
        assert_non_null(sh);
        assert_true(sh[0] == '/');
        free(sh);
        assert_null(fsutil_find_program("surely-no-such-program-here"));
        char *abs = fsutil_find_program("/bin/sh");
        assert_string_equal(abs, "/bin/sh");
        free(abs);
        assert_null(fsutil_find_program("/nonexistent/sh"));
        /* only what $PATH names */
        char *old = strdup(getenv("PATH"));
        char *dir = tu_mkdtemp(), *prog = NULL;
        assert_true(asprintf(&prog, "%s/hive-test-prog", dir) > 0);
        assert_int_equal(tu_write_file(prog, "#!/bin/sh\n"), 0);
        assert_null(fsutil_find_program("hive-test-prog")); /* not executable, not on PATH */
        assert_int_equal(chmod(prog, 0755), 0);
        setenv("PATH", dir, 1);
        char *found = fsutil_find_program("hive-test-prog");
        assert_string_equal(found, prog);
        setenv("PATH", old, 1);
        assert_null(fsutil_find_program("hive-test-prog"));
        assert_int_equal(fsutil_rm_rf(dir), 0);
        free(found);
        free(prog);
        free(dir);
        free(old);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_mkdir_p),
                cmocka_unit_test(test_rm_rf_keeps_symlink_targets),
                cmocka_unit_test(test_write_atomic),
                cmocka_unit_test(test_find_program),
        };
        return cmocka_run_group_tests_name("fsutil", tests, NULL, NULL);
}
