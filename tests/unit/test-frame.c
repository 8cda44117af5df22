/* Unit tests of the line framer (sh4re/frame.c). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "frame.h"
#include "testutil.h"

static int push_str(LineFramer *f, const char *s)
{
        return framer_push(f, s, strlen(s));
}

/* Pops one line and checks it equals want. */
static void expect_line(LineFramer *f, const char *want)
{
        char *line = NULL;
        size_t len = 0;
        assert_int_equal(framer_pop(f, &line, &len), 1);
        assert_int_equal(len, strlen(want));
        assert_memory_equal(line, want, len);
        assert_int_equal(line[len], '\0');
}

static void expect_no_line(LineFramer *f)
{
        char *line = NULL;
        size_t len = 0;
        assert_int_equal(framer_pop(f, &line, &len), 0);
        assert_null(line);
}

static void test_split_across_pushes(void **state)
{
        LineFramer f;
        framer_init(&f, 64);
        assert_int_equal(push_str(&f, "{\"cmd\""), 0);
        expect_no_line(&f);
        assert_int_equal(framer_pending(&f), 6);
        assert_int_equal(push_str(&f, ":\"li"), 0);
        expect_no_line(&f);
        assert_int_equal(push_str(&f, "st\"}"), 0);
        expect_no_line(&f);
        assert_int_equal(framer_pending(&f), 14);
        assert_int_equal(push_str(&f, "\n{\"cmd\":"), 0);
        expect_line(&f, "{\"cmd\":\"list\"}");
        expect_no_line(&f);
        assert_int_equal(framer_pending(&f), 7);
        assert_int_equal(push_str(&f, "\"urls\"}\n"), 0);
        expect_line(&f, "{\"cmd\":\"urls\"}");
        expect_no_line(&f);
        assert_int_equal(framer_pending(&f), 0);
        framer_done(&f);
}

static void test_byte_at_a_time(void **state)
{
        const char *in = "alpha\nbeta\n\ngamma\n";
        LineFramer f;
        framer_init(&f, 8);
        for (const char *p = in; *p; p++)
                assert_int_equal(framer_push(&f, p, 1), 0);
        expect_line(&f, "alpha");
        expect_line(&f, "beta");
        expect_line(&f, "");
        expect_line(&f, "gamma");
        expect_no_line(&f);
        framer_done(&f);
}

static void test_many_lines_one_push(void **state)
{
        LineFramer f;
        framer_init(&f, 64);
        assert_int_equal(push_str(&f, "a\nbb\n\nccc\n{\"cmd\":\"list\"}\ntail"), 0);
        expect_line(&f, "a");
        expect_line(&f, "bb");
        expect_line(&f, "");
        expect_line(&f, "ccc");
        expect_line(&f, "{\"cmd\":\"list\"}");
        expect_no_line(&f);
        assert_int_equal(framer_pending(&f), 4);
        framer_done(&f);
}

static void test_empty_lines(void **state)
{
        LineFramer f;
        framer_init(&f, 1);
        assert_int_equal(push_str(&f, "\n\n\n"), 0);
        for (int i = 0; i < 3; i++)
                expect_line(&f, "");
        expect_no_line(&f);
        assert_int_equal(framer_pending(&f), 0);
        framer_done(&f);
}

static void test_zero_length_push(void **state)
{
        LineFramer f;
        framer_init(&f, 4);
        assert_int_equal(framer_push(&f, NULL, 0), 0);
        expect_no_line(&f);
        assert_int_equal(framer_pending(&f), 0);
        framer_done(&f);
}

static void test_exactly_at_limit(void **state)
{
        char line[18];
        memset(line, 'x', 16);
        line[16] = '\n';
        line[17] = '\0';

        LineFramer f;
        framer_init(&f, 16);
        assert_int_equal(push_str(&f, line), 0);
        line[16] = '\0';
        expect_line(&f, line);

        /* At the limit without its newline is still fine; the newline completes it. */
        assert_int_equal(push_str(&f, line), 0);
        assert_int_equal(framer_pending(&f), 16);
        assert_int_equal(push_str(&f, "\n"), 0);
        expect_line(&f, line);
        framer_done(&f);
}

static void test_one_over_limit(void **state)
{
        char line[19];
        memset(line, 'x', 17);
        line[17] = '\n';
        line[18] = '\0';

        /* With its newline in the same push. */
        LineFramer f;
        framer_init(&f, 16);
        assert_int_equal(push_str(&f, line), -EMSGSIZE);
        assert_true(f.failed);
        framer_done(&f);

        /* Without a newline: refused as soon as the 17th byte arrives. */
        framer_init(&f, 16);
        line[16] = '\0';
        assert_int_equal(push_str(&f, line), 0);
        assert_int_equal(push_str(&f, "y"), -EMSGSIZE);
        framer_done(&f);
}

/* A 1 MiB+ line arriving in 64 KiB pieces is refused at the piece that crosses the limit,
 * and the buffer never grows to hold the whole line. */
static void test_oversize_refused_before_buffered(void **state)
{
        const size_t chunk = 64 * 1024;
        char *buf = malloc(chunk);
        assert_non_null(buf);
        memset(buf, 'x', chunk);

        LineFramer f;
        framer_init(&f, HIVE_LINE_MAX);
        size_t pushed = 0;
        int r = 0;
        unsigned i;
        for (i = 1; i <= 64; i++) {
                r = framer_push(&f, buf, chunk);
                if (r < 0)
                        break;
                pushed += chunk;
                assert_true(pushed <= HIVE_LINE_MAX);
                assert_true(f.cap < 2 * HIVE_LINE_MAX);
        }
        assert_int_equal(r, -EMSGSIZE);
        assert_int_equal(i, HIVE_LINE_MAX / chunk + 1);
        assert_true(f.cap < 2 * HIVE_LINE_MAX);
        assert_int_equal(framer_pending(&f), HIVE_LINE_MAX);
        framer_done(&f);
        free(buf);
}

/* A single push far over the limit allocates nothing. */
static void test_oversize_single_push(void **state)
{
        const size_t n = 4 * HIVE_LINE_MAX;
        char *buf = malloc(n);
        assert_non_null(buf);
        memset(buf, 'x', n);
        buf[10] = '\n';

        LineFramer f;
        framer_init(&f, HIVE_LINE_MAX);
        assert_int_equal(framer_push(&f, buf, n), -EMSGSIZE);
        assert_true(f.cap < 2 * HIVE_LINE_MAX);
        /* The short line before the oversize one came in the same refused push. */
        assert_int_equal(framer_pop(&f, &(char *){NULL}, &(size_t){0}), -EMSGSIZE);
        framer_done(&f);
        free(buf);
}

static void test_stays_failed(void **state)
{
        LineFramer f;
        framer_init(&f, 8);
        assert_int_equal(push_str(&f, "first\n"), 0);
        assert_int_equal(push_str(&f, "0123456789\n"), -EMSGSIZE);
        assert_int_equal(push_str(&f, "after\n"), -EMSGSIZE);
        assert_int_equal(push_str(&f, ""), -EMSGSIZE);
        char *line = NULL;
        size_t len = 0;
        assert_int_equal(framer_pop(&f, &line, &len), -EMSGSIZE);
        assert_null(line);

        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        assert_int_equal(write(sv[1], "ok\n", 3), 3);
        assert_int_equal(framer_read(&f, sv[0]), -EMSGSIZE);
        close(sv[0]);
        close(sv[1]);

        /* framer_done() resets the framer for reuse. */
        framer_done(&f);
        assert_false(f.failed);
        assert_int_equal(f.max_line, 8);
        assert_int_equal(push_str(&f, "again\n"), 0);
        expect_line(&f, "again");
        framer_done(&f);
}

static void test_lines_after_oversize_never_returned(void **state)
{
        LineFramer f;
        framer_init(&f, 8);
        assert_int_equal(push_str(&f, "good\n0123456789abcdef\nafter\n"), -EMSGSIZE);
        char *line = NULL;
        size_t len = 0;
        for (int i = 0; i < 3; i++)
                assert_int_equal(framer_pop(&f, &line, &len), -EMSGSIZE);
        assert_null(line);
        framer_done(&f);

        /* The same, with the oversize line arriving in pieces. */
        framer_init(&f, 8);
        assert_int_equal(push_str(&f, "good\n0123"), 0);
        expect_line(&f, "good");
        assert_int_equal(push_str(&f, "4567"), 0);
        assert_int_equal(framer_pending(&f), 8);
        assert_int_equal(push_str(&f, "8\nafter\n"), -EMSGSIZE);
        assert_int_equal(framer_pop(&f, &line, &len), -EMSGSIZE);
        assert_null(line);
        framer_done(&f);
}

static void test_eof_mid_line(void **state)
{
        LineFramer f;
        framer_init(&f, 64);
        assert_int_equal(push_str(&f, "abc\nde"), 0);
        expect_line(&f, "abc");
        expect_no_line(&f);
        assert_int_equal(framer_pending(&f), 2);
        assert_int_equal(push_str(&f, "f\n"), 0);
        expect_line(&f, "def");
        assert_int_equal(framer_pending(&f), 0);
        framer_done(&f);
}

/* Interleaved pushes and pops reuse the buffer instead of growing it. */
static void test_buffer_compacts(void **state)
{
        LineFramer f;
        framer_init(&f, 64);
        char line[32];
        for (int i = 0; i < 20000; i++) {
                snprintf(line, sizeof(line), "line %d\n", i);
                assert_int_equal(push_str(&f, line), 0);
                line[strlen(line) - 1] = '\0';
                expect_line(&f, line);
        }
        assert_true(f.cap <= 4096);
        framer_done(&f);
}

static void test_read_socketpair(void **state)
{
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        LineFramer f;
        framer_init(&f, HIVE_LINE_MAX);

        assert_int_equal(write(sv[1], "one\ntw", 6), 6);
        assert_int_equal(framer_read(&f, sv[0]), 6);
        expect_line(&f, "one");
        expect_no_line(&f);
        assert_int_equal(framer_pending(&f), 2);

        assert_int_equal(write(sv[1], "o\n\nthree\n", 9), 9);
        assert_int_equal(framer_read(&f, sv[0]), 9);
        expect_line(&f, "two");
        expect_line(&f, "");
        expect_line(&f, "three");
        expect_no_line(&f);

        close(sv[1]);
        assert_int_equal(framer_read(&f, sv[0]), 0);
        assert_int_equal(framer_pending(&f), 0);
        expect_no_line(&f);
        close(sv[0]);
        framer_done(&f);
}

static void test_read_eof_mid_line(void **state)
{
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        LineFramer f;
        framer_init(&f, 64);
        assert_int_equal(write(sv[1], "{\"cmd\":\"li", 10), 10);
        close(sv[1]);
        assert_int_equal(framer_read(&f, sv[0]), 10);
        assert_int_equal(framer_read(&f, sv[0]), 0);
        expect_no_line(&f);
        assert_int_equal(framer_pending(&f), 10);
        close(sv[0]);
        framer_done(&f);
}

static void test_read_nonblocking_empty(void **state)
{
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), 0);
        LineFramer f;
        framer_init(&f, 64);
        assert_int_equal(framer_read(&f, sv[0]), -EAGAIN);
        assert_false(f.failed);
        assert_int_equal(framer_read(&f, -1), -EBADF);
        close(sv[0]);
        close(sv[1]);
        framer_done(&f);
}

static void test_read_oversize(void **state)
{
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        LineFramer f;
        framer_init(&f, 16);
        assert_int_equal(write(sv[1], "0123456789", 10), 10);
        assert_int_equal(framer_read(&f, sv[0]), 10);
        assert_int_equal(write(sv[1], "0123456789\n", 11), 11);
        assert_int_equal(framer_read(&f, sv[0]), -EMSGSIZE);
        assert_int_equal(framer_read(&f, sv[0]), -EMSGSIZE);
        assert_int_equal(framer_pop(&f, &(char *){NULL}, &(size_t){0}), -EMSGSIZE);
        close(sv[0]);
        close(sv[1]);
        framer_done(&f);
}

/* A 1 MiB+ line written to a socket is refused by framer_read() with the buffer bounded. */
static void test_read_oversize_bounded(void **state)
{
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        const size_t total = HIVE_LINE_MAX + 2 * FRAMER_READ_CHUNK;
        char *buf = malloc(total);
        assert_non_null(buf);
        memset(buf, 'x', total);

        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                close(sv[0]);
                signal(SIGPIPE, SIG_IGN);
                size_t off = 0;
                while (off < total) {
                        ssize_t k = write(sv[1], buf + off, total - off);
                        if (k <= 0)
                                break; /* the reader stopped reading */
                        off += (size_t)k;
                }
                free(buf);
                close(sv[1]);
                _exit(0);
        }
        close(sv[1]);

        LineFramer f;
        framer_init(&f, HIVE_LINE_MAX);
        size_t got = 0;
        ssize_t k;
        while ((k = framer_read(&f, sv[0])) > 0) {
                got += (size_t)k;
                assert_true(got <= HIVE_LINE_MAX);
                assert_true(f.cap <= 2 * HIVE_LINE_MAX);
        }
        assert_int_equal(k, -EMSGSIZE);
        assert_true(f.cap <= 2 * HIVE_LINE_MAX);
        close(sv[0]);
        framer_done(&f);
        free(buf);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_split_across_pushes),
                cmocka_unit_test(test_byte_at_a_time),
                cmocka_unit_test(test_many_lines_one_push),
                cmocka_unit_test(test_empty_lines),
                cmocka_unit_test(test_zero_length_push),
                cmocka_unit_test(test_exactly_at_limit),
                cmocka_unit_test(test_one_over_limit),
                cmocka_unit_test(test_oversize_refused_before_buffered),
                cmocka_unit_test(test_oversize_single_push),
                cmocka_unit_test(test_stays_failed),
                cmocka_unit_test(test_lines_after_oversize_never_returned),
                cmocka_unit_test(test_eof_mid_line),
                cmocka_unit_test(test_buffer_compacts),
                cmocka_unit_test(test_read_socketpair),
                cmocka_unit_test(test_read_eof_mid_line),
                cmocka_unit_test(test_read_nonblocking_empty),
                cmocka_unit_test(test_read_oversize),
                cmocka_unit_test(test_read_oversize_bounded),
        };
        return cmocka_run_group_tests_name("frame", tests, NULL, NULL);
}
