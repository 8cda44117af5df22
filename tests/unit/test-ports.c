/* Unit tests for c0re/ports.c: the hash, sticky port files, probing past taken ports. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "fsutil.h"
#include "ports.h"
#include "testutil.h"

static int setup(void **state)
{
        *state = tu_mkdtemp();
        return 0;
}

static int teardown(void **state)
{
        assert_int_equal(tu_rm_rf(*state), 0);
        free(*state);
        return 0;
}

/* Writes <dir>/agents/<name>/port with content. */
static void put_port(const char *dir, const char *name, const char *content)
{
        char path[4096];
        snprintf(path, sizeof(path), "%s/agents/%s", dir, name);
        assert_int_equal(fsutil_mkdir_p(path, 0750), 0);
        strcat(path, "/port");
        assert_int_equal(tu_write_file(path, content), 0);
}

static uint16_t hashed(const char *name)
{
        return (uint16_t)(PORTS_BASE + ports_fnv1a(name) % PORTS_SPAN);
}

static void test_fnv1a_vectors(void **state)
{
        assert_int_equal(ports_fnv1a(""), 0x811c9dc5u);
        assert_int_equal(ports_fnv1a("a"), 0xe40c292cu);
        assert_int_equal(ports_fnv1a("foobar"), 0xbf9cf968u);
}

static void test_fresh_agent_gets_hashed_port_and_file(void **state)
{
        const char *dir = *state;
        uint16_t p = 0;
        assert_int_equal(ports_assign(dir, "alpha", &p), 0);
        assert_int_equal(p, hashed("alpha"));
        char path[4096];
        snprintf(path, sizeof(path), "%s/agents/alpha/port", dir);
        char *content = tu_read_file(path, NULL);
        char want[16];
        snprintf(want, sizeof(want), "%u\n", (unsigned)p);
        assert_string_equal(content, want);
        free(content);
}

static void test_port_is_sticky(void **state)
{
        const char *dir = *state;
        put_port(dir, "alpha", "8555\n");
        uint16_t p = 0;
        assert_int_equal(ports_assign(dir, "alpha", &p), 0);
        assert_int_equal(p, 8555);
        /* and stays so even when another agent now holds the hashed port */
        assert_int_equal(ports_assign(dir, "alpha", &p), 0);
        assert_int_equal(p, 8555);
}

static void test_collision_probes_forward(void **state)
{
        const char *dir = *state;
        uint16_t h = hashed("beta");
        char buf[16];
        snprintf(buf, sizeof(buf), "%u\n", (unsigned)h);
        put_port(dir, "other", buf); /* a live agent or a tombstone: either way, taken */
        uint16_t p = 0;
        assert_int_equal(ports_assign(dir, "beta", &p), 0);
        assert_int_equal(p, h == PORTS_BASE + PORTS_SPAN - 1 ? PORTS_BASE : h + 1);
}

static void test_probing_wraps_and_exhausts(void **state)
{
        const char *dir = *state;
        uint16_t h = hashed("gamma");
        assert_int_not_equal(h, PORTS_BASE); /* so that wrapping is what is tested */
        /* take every port from the hashed one to the end of the range */
        for (unsigned port = h; port < PORTS_BASE + PORTS_SPAN; port++) {
                char name[16], buf[16];
                snprintf(name, sizeof(name), "t%u", port);
                snprintf(buf, sizeof(buf), "%u", port);
                put_port(dir, name, buf);
        }
        uint16_t p = 0;
        assert_int_equal(ports_assign(dir, "gamma", &p), 0);
        assert_int_equal(p, PORTS_BASE); /* wrapped to the start */
        /* now take the rest as well */
        for (unsigned port = PORTS_BASE; port < h; port++) {
                char name[16], buf[16];
                snprintf(name, sizeof(name), "u%u", port);
                snprintf(buf, sizeof(buf), "%u", port);
                put_port(dir, name, buf);
        }
        uint16_t q = 0;
        assert_int_equal(ports_assign(dir, "delta", &q), -EADDRNOTAVAIL);
        assert_int_equal(q, 0);
}

static void test_bad_port_file_refused(void **state)
{
        const char *dir = *state;
        const char *bad[] = {"", "abc", "8099", "9000", "8100x", "-1"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                put_port(dir, "eps", bad[i]);
                uint16_t p = 1;
                assert_int_equal(ports_assign(dir, "eps", &p), -EBADMSG);
                assert_int_equal(p, 1);
        }
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_fnv1a_vectors),
                cmocka_unit_test_setup_teardown(test_fresh_agent_gets_hashed_port_and_file, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_port_is_sticky, setup, teardown),
                cmocka_unit_test_setup_teardown(test_collision_probes_forward, setup, teardown),
                cmocka_unit_test_setup_teardown(test_probing_wraps_and_exhausts, setup, teardown),
                cmocka_unit_test_setup_teardown(test_bad_port_file_refused, setup, teardown),
        };
        return cmocka_run_group_tests_name("ports", tests, NULL, NULL);
}
