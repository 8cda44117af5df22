/* Unit tests of the operations workers (c0re/worker.c) and loop_post (c0re/loop.c): jobs
 * with one key run one at a time and in order, other keys in parallel, done callbacks on
 * the loop thread. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "loop.h"
#include "worker.h"

typedef struct Shared {
        pthread_mutex_t lock;
        int running[4]; /* jobs running now, per key index */
        int max_running[4];
        int total_running, max_total;
        int order[64];
        int n_order;
        int done;
        int want_done;
        pthread_t loop_thread;
        bool done_off_loop;
        Loop *loop;
} Shared;

typedef struct Job {
        Shared *s;
        int key;
        int seq;
        unsigned sleep_ms;
} Job;

static void job_run(void *data)
{
        Job *j = data;
        Shared *s = j->s;
        pthread_mutex_lock(&s->lock);
        s->running[j->key]++;
        s->total_running++;
        if (s->running[j->key] > s->max_running[j->key])
                s->max_running[j->key] = s->running[j->key];
        if (s->total_running > s->max_total)
                s->max_total = s->total_running;
        s->order[s->n_order++] = j->seq;
        pthread_mutex_unlock(&s->lock);
        usleep(j->sleep_ms * 1000);
        pthread_mutex_lock(&s->lock);
        s->running[j->key]--;
        s->total_running--;
        pthread_mutex_unlock(&s->lock);
}

static void job_done(void *data)
{
        Job *j = data;
        Shared *s = j->s;
        if (!pthread_equal(pthread_self(), s->loop_thread))
                s->done_off_loop = true;
        if (++s->done == s->want_done)
                loop_quit(s->loop);
        free(j);
}

static const char *const keys[] = {"a1", "b2", "c3", "d4"};

static void submit(Worker *w, Shared *s, int key, int seq, unsigned sleep_ms)
{
        Job *j = calloc(1, sizeof(*j));
        assert_non_null(j);
        *j = (Job){s, key, seq, sleep_ms};
        assert_int_equal(worker_submit(w, keys[key], job_run, job_done, j), 0);
}

static void setup_shared(Shared *s, Loop **l)
{
        memset(s, 0, sizeof(*s));
        pthread_mutex_init(&s->lock, NULL);
        assert_int_equal(loop_new(l), 0);
        s->loop = *l;
        s->loop_thread = pthread_self();
}

static void test_same_key_serial_in_order(void **state)
{
        Shared s;
        Loop *l = NULL;
        setup_shared(&s, &l);
        Worker *w = NULL;
        assert_int_equal(worker_new(l, 4, &w), 0);
        for (int i = 0; i < 8; i++)
                submit(w, &s, 0, i, 5);
        s.want_done = 8;
        assert_true(worker_pending(w, "a1") > 0);
        assert_int_equal(worker_pending(w, "zz"), 0);
        assert_int_equal(loop_run(l), 0);
        assert_int_equal(s.done, 8);
        assert_int_equal(s.max_running[0], 1);
        for (int i = 0; i < 8; i++)
                assert_int_equal(s.order[i], i);
        assert_false(s.done_off_loop);
        assert_int_equal(worker_pending(w, "a1"), 0);
        worker_free(w);
        loop_free(l);
}

static void test_other_keys_in_parallel(void **state)
{
        Shared s;
        Loop *l = NULL;
        setup_shared(&s, &l);
        Worker *w = NULL;
        assert_int_equal(worker_new(l, 4, &w), 0);
        for (int k = 0; k < 4; k++)
                submit(w, &s, k, k, 100);
        s.want_done = 4;
        assert_int_equal(loop_run(l), 0);
        assert_int_equal(s.max_total, 4); /* all four ran at once */
        worker_free(w);
        loop_free(l);
}

static void test_drain_and_free(void **state)
{
        Shared s;
        Loop *l = NULL;
        setup_shared(&s, &l);
        Worker *w = NULL;
        assert_int_equal(worker_new(l, 2, &w), 0);
        for (int i = 0; i < 6; i++)
                submit(w, &s, i % 2, i, 2);
        worker_drain(w);
        assert_int_equal(worker_pending(w, "a1") + worker_pending(w, "b2"), 0);
        assert_int_equal(s.n_order, 6);
        /* their done callbacks are posted: one loop round runs them */
        s.want_done = 6;
        assert_int_equal(loop_run(l), 0);
        assert_int_equal(s.done, 6);
        worker_free(w);
        loop_free(l);
}

static void post_cb(void *userdata)
{
        Shared *s = userdata;
        if (!pthread_equal(pthread_self(), s->loop_thread))
                s->done_off_loop = true;
        if (++s->done == s->want_done)
                loop_quit(s->loop);
}

static void *poster(void *userdata)
{
        Shared *s = userdata;
        for (int i = 0; i < 500; i++)
                assert_int_equal(loop_post(s->loop, post_cb, s), 0);
        return NULL;
}

static void test_loop_post_from_threads(void **state)
{
        Shared s;
        Loop *l = NULL;
        setup_shared(&s, &l);
        s.want_done = 1000;
        pthread_t a, b;
        pthread_create(&a, NULL, poster, &s);
        pthread_create(&b, NULL, poster, &s);
        assert_int_equal(loop_run(l), 0);
        pthread_join(a, NULL);
        pthread_join(b, NULL);
        assert_int_equal(s.done, 1000);
        assert_false(s.done_off_loop);
        loop_free(l);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_same_key_serial_in_order),
                cmocka_unit_test(test_other_keys_in_parallel),
                cmocka_unit_test(test_drain_and_free),
                cmocka_unit_test(test_loop_post_from_threads),
        };
        return cmocka_run_group_tests_name("worker", tests, NULL, NULL);
}
