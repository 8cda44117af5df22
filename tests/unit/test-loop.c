/* Unit tests of the main loop's idle hook (c0re/loop.c): work that waits until nothing has
 * happened for a while (the daemon's WAL tail checkpoint). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "loop.h"
#include "timeutil.h"

typedef struct Fx {
        Loop *loop;
        int timer_fd;
        LoopSource *timer;
        unsigned ticks, stop_after; /* the timer is disarmed after stop_after ticks */
        unsigned idle_runs;
        unsigned ticks_at_idle;
        uint64_t t_last_tick, t_idle;
        bool quit_on_idle;
} Fx;

static void arm(Fx *fx, long first_ms, long period_ms)
{
        struct itimerspec its = {
                .it_value = {first_ms / 1000, (first_ms % 1000) * 1000000},
                .it_interval = {period_ms / 1000, (period_ms % 1000) * 1000000},
        };
        assert_int_equal(timerfd_settime(fx->timer_fd, 0, &its, NULL), 0);
}

static void on_timer(LoopSource *s, int fd, uint32_t events, void *userdata)
{
        Fx *fx = userdata;
        uint64_t n;
        assert_int_equal(read(fd, &n, sizeof(n)), sizeof(n));
        fx->ticks++;
        fx->t_last_tick = timeutil_mono_usec();
        if (fx->ticks == fx->stop_after)
                arm(fx, 0, 0);
        if (!fx->quit_on_idle && fx->ticks == fx->stop_after)
                loop_quit(fx->loop);
}

static void on_idle(void *userdata)
{
        Fx *fx = userdata;
        fx->idle_runs++;
        fx->ticks_at_idle = fx->ticks;
        fx->t_idle = timeutil_mono_usec();
        if (fx->quit_on_idle)
                loop_quit(fx->loop);
}

static int setup(void **state)
{
        Fx *fx = calloc(1, sizeof(*fx));
        assert_int_equal(loop_new(&fx->loop), 0);
        fx->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
        assert_true(fx->timer_fd >= 0);
        assert_int_equal(loop_add(fx->loop, fx->timer_fd, EPOLLIN, on_timer, fx, &fx->timer), 0);
        loop_set_idle(fx->loop, 20, on_idle, fx);
        *state = fx;
        return 0;
}

static int teardown(void **state)
{
        Fx *fx = *state;
        loop_remove(fx->timer);
        fx->loop = loop_free(fx->loop);
        close(fx->timer_fd);
        free(fx);
        return 0;
}

/* Events every 5 ms keep the idle work waiting; 20 ms after the last one it runs, once. */
static void test_idle_waits_for_quiet(void **state)
{
        Fx *fx = *state;
        fx->stop_after = 10;
        fx->quit_on_idle = true;
        arm(fx, 5, 5);
        loop_want_idle(fx->loop);
        assert_int_equal(loop_run(fx->loop), 0);
        assert_int_equal(fx->idle_runs, 1);
        assert_int_equal(fx->ticks_at_idle, 10);
        assert_true(fx->t_idle - fx->t_last_tick >= 19000);
}

/* Not wanted: never runs, and the loop blocks as before. */
static void test_idle_only_when_wanted(void **state)
{
        Fx *fx = *state;
        fx->stop_after = 6;
        arm(fx, 10, 10);
        assert_int_equal(loop_run(fx->loop), 0);
        assert_int_equal(fx->ticks, 6);
        assert_int_equal(fx->idle_runs, 0);
}

/* Wanted twice before it ran: it still runs once; wanted again afterwards: once more. */
static void test_idle_runs_once_per_want(void **state)
{
        Fx *fx = *state;
        fx->quit_on_idle = true;
        loop_want_idle(fx->loop);
        loop_want_idle(fx->loop);
        assert_int_equal(loop_run(fx->loop), 0);
        assert_int_equal(fx->idle_runs, 1);

        fx->quit_on_idle = false;
        fx->stop_after = 8; /* 80 ms: quits the loop on its last tick */
        arm(fx, 10, 10);
        assert_int_equal(loop_run(fx->loop), 0);
        assert_int_equal(fx->idle_runs, 1); /* not wanted again */
        fx->ticks = 0;
        fx->stop_after = 8;
        loop_want_idle(fx->loop);
        arm(fx, 50, 50); /* quiet gaps of 50 ms: idle runs in one of them, ticks go on */
        assert_int_equal(loop_run(fx->loop), 0);
        assert_int_equal(fx->idle_runs, 2);
        assert_true(fx->ticks_at_idle < 8);
        assert_int_equal(fx->ticks, 8);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        const struct CMUnitTest tests[] = {
                T(test_idle_waits_for_quiet),
                T(test_idle_only_when_wanted),
                T(test_idle_runs_once_per_want),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
