/* Unit tests of the errno ↔ wire name table (sh4re/errors.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "errors.h"

static void test_known_names(void **state)
{
        assert_string_equal(hive_errno_name(ENOENT), "ENOENT");
        assert_string_equal(hive_errno_name(-ENOENT), "ENOENT");
        assert_string_equal(hive_errno_name(EINVAL), "EINVAL");
        assert_string_equal(hive_errno_name(-EPROTONOSUPPORT), "EPROTONOSUPPORT");
        assert_string_equal(hive_errno_name(EOPNOTSUPP), "EOPNOTSUPP");
        assert_string_equal(hive_errno_name(-EBADMSG), "EBADMSG");
        assert_string_equal(hive_errno_name(EMSGSIZE), "EMSGSIZE");
        assert_string_equal(hive_errno_name(EIO), "EIO");
        assert_int_equal(hive_errno_from_name("ENOENT"), ENOENT);
        assert_int_equal(hive_errno_from_name("EOPNOTSUPP"), EOPNOTSUPP);
        assert_int_equal(hive_errno_from_name("EIO"), EIO);
}

/* Every value with a name maps back to itself, and positive and negative agree. */
static void test_round_trip(void **state)
{
        int named = 0;
        for (int e = 1; e < 4096; e++) {
                const char *n = hive_errno_name(e);
                assert_non_null(n);
                assert_string_equal(hive_errno_name(-e), n);
                if (strcmp(n, "EIO") == 0 && e != EIO)
                        continue;
                named++;
                assert_int_equal(hive_errno_from_name(n), e);
        }
        assert_true(named >= 30);
}

static void test_unknown(void **state)
{
        assert_string_equal(hive_errno_name(0), "EIO");
        assert_string_equal(hive_errno_name(9999), "EIO");
        assert_string_equal(hive_errno_name(-9999), "EIO");
        assert_string_equal(hive_errno_name(EHWPOISON), "EIO");
        assert_int_equal(hive_errno_from_name("EBOGUS"), -EINVAL);
        assert_int_equal(hive_errno_from_name(""), -EINVAL);
        assert_int_equal(hive_errno_from_name("enoent"), -EINVAL);
        assert_int_equal(hive_errno_from_name("ENOENT "), -EINVAL);
        assert_int_equal(hive_errno_from_name(NULL), -EINVAL);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_known_names),
                cmocka_unit_test(test_round_trip),
                cmocka_unit_test(test_unknown),
        };
        return cmocka_run_group_tests_name("errors", tests, NULL, NULL);
}
