/* Unit tests of deferred flushing: the WAL flusher thread (c0re/walflush.c), the store's
 * deferred-flush mode (store_defer_flush and friends), and the server gate that holds an
 * answer until its commit and its flush (c0re/server.c), driven through a real socket. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "broker.h"
#include "cleanup.h"
#include "dispatch.h"
#include "log.h"
#include "loop.h"
#include "server.h"
#include "store.h"
#include "testutil.h"
#include "timeutil.h"
#include "walflush.h"

typedef StoreFixture Fixture;
#define setup    tu_store_setup
#define teardown tu_store_teardown

/* ---- the flusher thread ---- */

static void notify_efd(void *userdata)
{
        uint64_t one = 1;
        assert_int_equal(write(*(int *)userdata, &one, sizeof(one)), sizeof(one));
}

/* Waits for the next notification (up to 5 s). */
static void wait_notified(int efd)
{
        struct pollfd p = {.fd = efd, .events = POLLIN};
        assert_int_equal(poll(&p, 1, 5000), 1);
        uint64_t v;
        assert_int_equal(read(efd, &v, sizeof(v)), sizeof(v));
}

/* A flusher for a file of some frames in the fixture's dir, notifying *efd (made here). */
static WalFlush *start_flusher(Fixture *fx, int *efd)
{
        _cleanup_free_ char *path = NULL;
        assert_true(asprintf(&path, "%s/file-wal", fx->dir) > 0);
        assert_int_equal(tu_write_file(path, "frames"), 0);
        *efd = eventfd(0, EFD_CLOEXEC);
        WalFlush *f = NULL;
        assert_int_equal(walflush_new(path, notify_efd, efd, &f), 0);
        return f;
}

static void test_flusher_flushes_up_to_the_mark(void **state)
{
        int efd;
        WalFlush *f = start_flusher(*state, &efd);
        assert_int_equal(walflush_flushed(f), 0);

        walflush_request(f, 3);
        wait_notified(efd);
        int err = -1;
        assert_int_equal(walflush_done(f, &err), 3);
        assert_int_equal(err, 0);

        /* An older mark asks for nothing. */
        walflush_request(f, 2);
        walflush_request(f, 5);
        wait_notified(efd);
        assert_int_equal(walflush_flushed(f), 5);

        /* Freeing flushes what was asked for first. */
        walflush_request(f, 9);
        err = -1;
        f = walflush_free(f, &err);
        assert_null(f);
        assert_int_equal(err, 0);
        wait_notified(efd); /* it did flush */
        close(efd);
}

/* A flush that fails still moves the mark (the waiting answers are released, as errors), and
 * its error is reported once. */
static void test_flusher_reports_errors(void **state)
{
        Fixture *fx = *state;
        _cleanup_free_ char *path = NULL;
        assert_true(asprintf(&path, "%s/missing-wal", fx->dir) > 0);
        int efd = eventfd(0, EFD_CLOEXEC);
        WalFlush *f = NULL;
        assert_int_equal(walflush_new(path, notify_efd, &efd, &f), 0);
        walflush_request(f, 1);
        wait_notified(efd);
        int err = 0;
        assert_int_equal(walflush_done(f, &err), 1);
        assert_int_equal(err, -ENOENT);
        assert_int_equal(walflush_done(f, &err), 1);
        assert_int_equal(err, 0);

        /* The file appears: the next flush opens it and succeeds. */
        assert_int_equal(tu_write_file(path, "frames"), 0);
        walflush_request(f, 2);
        wait_notified(efd);
        assert_int_equal(walflush_done(f, &err), 2);
        assert_int_equal(err, 0);

        /* The last flush, at free, fails: free reports it. */
        assert_int_equal(unlink(path), 0);
        walflush_request(f, 3);
        f = walflush_free(f, &err);
        assert_int_equal(err, -ENOENT);
        close(efd);
}

/* After a flush, the next one waits for as many writes as the last covered and saw arrive
 * (the writers it released usually write again), until the gather time runs out; and once its
 * waits run out, it stops waiting. */
static void test_flusher_gathers_the_next_wave(void **state)
{
        const uint64_t gather = 3 * 1000 * 1000; /* far beyond any scheduling delay */
        int efd;
        WalFlush *f = start_flusher(*state, &efd);
        walflush_set_gather(f, gather);

        /* The first flush waits for nothing. */
        walflush_request(f, 3);
        wait_notified(efd);
        assert_int_equal(walflush_flushed(f), 3);

        /* It covered three writes: the next flush waits for three. */
        walflush_request(f, 4);
        walflush_request(f, 5);
        tu_sleep_ms(100);
        assert_int_equal(walflush_flushed(f), 3);
        walflush_request(f, 6);
        wait_notified(efd);
        assert_int_equal(walflush_flushed(f), 6);

        /* The next wave does not come: what came is flushed when the gather time runs out. */
        uint64_t t0 = timeutil_mono_usec();
        walflush_request(f, 7);
        wait_notified(efd);
        assert_int_equal(walflush_flushed(f), 7);
        assert_true(timeutil_mono_usec() - t0 >= gather / 3);

        /* That wait ran out, so the flusher stops waiting: after a flush of three writes
         * (which waits for nothing, it expected one), a single write is flushed at once. */
        walflush_request(f, 10);
        wait_notified(efd);
        t0 = timeutil_mono_usec();
        walflush_request(f, 11);
        wait_notified(efd);
        assert_int_equal(walflush_flushed(f), 11);
        assert_true(timeutil_mono_usec() - t0 < gather / 2);

        f = walflush_free(f, NULL);
        close(efd);
}

/* ---- the store in deferred-flush mode ---- */

static sqlite3 *open_other(const char *db)
{
        sqlite3 *h = NULL;
        assert_int_equal(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        return h;
}

static int64_t count_other(sqlite3 *h)
{
        return tu_db_int(h, "SELECT COUNT(*) FROM messages", 0);
}

static void test_store_durable_commit_owes_a_flush(void **state)
{
        Fixture *fx = *state;
        store_defer_flush(fx->store);
        uint64_t mark = 99;
        assert_false(store_take_flush(fx->store, &mark));
        uint64_t before = store_durable_mark(fx->store);

        int64_t id = 0;
        assert_int_equal(broker_send(fx->store, "alice", "bob", "m", 0, &id), 0);
        assert_true(store_durable_mark(fx->store) > before);
        /* Never flushed by sqlite itself: the commit is synchronous=NORMAL. */
        assert_int_equal(tu_sql_int(fx->store, "PRAGMA synchronous", 0), 1);
        assert_false(store_take_flush(fx->store, &mark)); /* not committed yet */
        assert_int_equal(store_batch_commit(fx->store), 0);
        assert_true(store_take_flush(fx->store, &mark));
        assert_int_equal(mark, store_durable_mark(fx->store));
        assert_false(store_take_flush(fx->store, &mark)); /* once per commit */

        const char *wal = store_wal_path(fx->store);
        assert_non_null(wal);
        assert_int_equal(access(wal, F_OK), 0);
        assert_string_equal(wal + strlen(wal) - 4, "-wal");

        /* Only non-durable writes: nothing to flush. */
        assert_int_equal(broker_ack(fx->store, "bob", &id, 1), 1);
        assert_int_equal(store_batch_commit(fx->store), 0);
        assert_false(store_take_flush(fx->store, &mark));
}

/* A durable write joining a non-durable batch no longer commits it first: one batch, one
 * commit, and the flush owed covers it. */
static void test_store_durable_joins_one_batch(void **state)
{
        Fixture *fx = *state;
        store_defer_flush(fx->store);
        sqlite3 *h = open_other(fx->db);
        int64_t id = 0;
        assert_int_equal(broker_send(fx->store, "alice", "bob", "m", 0, &id), 0);
        assert_int_equal(store_batch_commit(fx->store), 0);
        uint64_t mark;
        assert_true(store_take_flush(fx->store, &mark));

        assert_int_equal(broker_ack(fx->store, "bob", &id, 1), 1);
        assert_int_equal(broker_send(fx->store, "alice", "bob", "n", 0, &id), 0);
        assert_true(store_batch_open(fx->store));
        assert_int_equal(count_other(h), 1); /* nothing of the batch is visible yet */
        assert_int_equal(store_batch_commit(fx->store), 0);
        assert_int_equal(count_other(h), 2);
        assert_true(store_take_flush(fx->store, &mark));
        assert_int_equal(mark, store_durable_mark(fx->store));
        sqlite3_close(h);
}

/* store_need_flush: outside a batch it owes a flush at once; inside, the batch's commit does. */
static void test_store_need_flush(void **state)
{
        Fixture *fx = *state;
        store_defer_flush(fx->store);
        uint64_t mark;
        store_need_flush(fx->store);
        assert_true(store_take_flush(fx->store, &mark));
        assert_int_equal(mark, store_durable_mark(fx->store));

        assert_int_equal(store_batch_write(fx->store, false), 0);
        store_need_flush(fx->store);
        assert_false(store_take_flush(fx->store, &mark));
        assert_int_equal(store_batch_commit(fx->store), 0);
        assert_true(store_take_flush(fx->store, &mark));
        assert_int_equal(mark, store_durable_mark(fx->store));
}

/* Without deferred flushing nothing is ever owed: commits flush themselves. */
static void test_store_default_flushes_itself(void **state)
{
        Fixture *fx = *state;
        int64_t id = 0;
        assert_int_equal(broker_send(fx->store, "alice", "bob", "m", 0, &id), 0);
        assert_int_equal(tu_sql_int(fx->store, "PRAGMA synchronous", 0), 2);
        assert_int_equal(store_batch_commit(fx->store), 0);
        uint64_t mark;
        assert_false(store_take_flush(fx->store, &mark));
}

/* ---- the gate, through a real socket ---- */

typedef struct Gate {
        Fixture *fx;
        Loop *loop;
        Server *srv;
        ServerGate *gate;
        pthread_t thread;
        /* What the fake store and flusher report; touched on the loop thread only. */
        bool batch_open;
        uint64_t durable, flushed;
        int result; /* of the next flush or commit a test lets happen */
        int client;
} Gate;

static bool g_batch_open(void *userdata)
{
        return ((Gate *)userdata)->batch_open;
}

static uint64_t g_durable(void *userdata)
{
        return ((Gate *)userdata)->durable;
}

static uint64_t g_flushed(void *userdata)
{
        return ((Gate *)userdata)->flushed;
}

static const ServerGateOps g_ops = {g_batch_open, g_durable, g_flushed};

/* "write": a durable write.  "read": none.  "open": opens the batch, then answers. */
static int verb_write(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        ((Gate *)ctx->userdata)->durable++;
        return 0;
}

static int verb_read(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        return 0;
}

static int verb_open(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        ((Gate *)ctx->userdata)->batch_open = true;
        return 0;
}

static const VerbSpec g_verbs[] = {
        {"write", verb_write, NULL, 0, "a durable write"},
        {"read", verb_read, NULL, 0, "no write"},
        {"open", verb_open, NULL, 0, "opens the batch"},
};
static const VerbTable g_table = {"test.sock", g_verbs, ELEMENTSOF(g_verbs), NULL, NULL};

static void *loop_thread(void *userdata)
{
        Gate *g = userdata;
        assert_int_equal(loop_run(g->loop), 0);
        return NULL;
}

static int gate_setup(void **state)
{
        assert_int_equal(tu_store_setup(state), 0);
        Gate *g = calloc(1, sizeof(*g));
        g->fx = *state;
        assert_int_equal(loop_new(&g->loop), 0);
        g->gate = server_gate_new(&g_ops, g);
        assert_non_null(g->gate);
        _cleanup_free_ char *path = NULL;
        assert_true(asprintf(&path, "%s/test.sock", g->fx->dir) > 0);
        ServerOptions so = {.table = &g_table,
                            .userdata = g,
                            .mode = 0600,
                            .gid = (gid_t)-1,
                            .max_clients = 4,
                            .gate = g->gate};
        assert_int_equal(server_new(g->loop, path, &so, &g->srv), 0);
        g->client = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        strcpy(sa.sun_path, path);
        assert_int_equal(connect(g->client, (struct sockaddr *)&sa, sizeof(sa)), 0);
        assert_int_equal(pthread_create(&g->thread, NULL, loop_thread, g), 0);
        *state = g;
        return 0;
}

static void quit_loop(void *userdata)
{
        loop_quit(((Gate *)userdata)->loop);
}

static int gate_teardown(void **state)
{
        Gate *g = *state;
        assert_int_equal(loop_post(g->loop, quit_loop, g), 0);
        pthread_join(g->thread, NULL);
        close(g->client);
        g->srv = server_free(g->srv);
        g->gate = server_gate_free(g->gate);
        g->loop = loop_free(g->loop);
        void *fx = g->fx;
        free(g);
        return tu_store_teardown(&fx);
}

static void request(Gate *g, const char *cmd)
{
        char line[64];
        int n = snprintf(line, sizeof(line), "{\"cmd\":\"%s\"}\n", cmd);
        assert_int_equal(write(g->client, line, (size_t)n), n);
}

/* The answer line, or NULL if none came within ms. */
static char *answer_within(Gate *g, int ms)
{
        struct pollfd p = {.fd = g->client, .events = POLLIN};
        if (poll(&p, 1, ms) != 1)
                return NULL;
        char buf[1024];
        ssize_t k = read(g->client, buf, sizeof(buf) - 1);
        assert_true(k > 0);
        buf[k] = '\0';
        return strdup(buf);
}

/* What the tests do on the loop thread, through loop_post: the flush or the commit ends,
 * with g->result. */
static void do_flush(void *userdata)
{
        Gate *g = userdata;
        g->flushed = g->durable;
        server_gate_flushed(g->gate, g->result);
}

static void do_commit(void *userdata)
{
        Gate *g = userdata;
        g->batch_open = false;
        server_gate_committed(g->gate, g->result);
}

/* Sends cmd, checks that no answer comes while nothing happens, then lets fn happen (with
 * result) and returns the answer it released. */
static char *answer_after(Gate *g, const char *cmd, void (*fn)(void *), int result)
{
        request(g, cmd);
        assert_null(answer_within(g, 200));
        g->result = result;
        assert_int_equal(loop_post(g->loop, fn, g), 0);
        char *a = answer_within(g, 5000);
        assert_non_null(a);
        return a;
}

static void test_gate_answer_waits_for_the_flush(void **state)
{
        Gate *g = *state;
        _cleanup_free_ char *a = answer_after(g, "write", do_flush, 0);
        assert_non_null(strstr(a, "\"ok\":true"));

        /* No durable write since the request came in: answered at once. */
        request(g, "read");
        _cleanup_free_ char *b = answer_within(g, 5000);
        assert_non_null(b);
        assert_non_null(strstr(b, "\"ok\":true"));
}

static void test_gate_failed_flush_refuses(void **state)
{
        Gate *g = *state;
        _cleanup_free_ char *a = answer_after(g, "write", do_flush, -EIO);
        assert_non_null(strstr(a, "\"ok\":false"));
        assert_non_null(strstr(a, "could not be flushed to disk"));
        assert_non_null(strstr(a, "\"error_code\":\"EIO\""));
}

static void test_gate_answer_waits_for_the_commit(void **state)
{
        Gate *g = *state;
        _cleanup_free_ char *a = answer_after(g, "open", do_commit, 0);
        assert_non_null(strstr(a, "\"ok\":true"));

        _cleanup_free_ char *b = answer_after(g, "open", do_commit, -EBUSY);
        assert_non_null(strstr(b, "\"ok\":false"));
        assert_non_null(strstr(b, "could not commit; nothing was changed"));
}

int main(void)
{
        log_set_max_level(LOG_CRIT);
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
#define G(f) cmocka_unit_test_setup_teardown(f, gate_setup, gate_teardown)
        const struct CMUnitTest tests[] = {
                T(test_flusher_flushes_up_to_the_mark), T(test_flusher_reports_errors),
                T(test_flusher_gathers_the_next_wave),  T(test_store_durable_commit_owes_a_flush),
                T(test_store_durable_joins_one_batch),  T(test_store_need_flush),
                T(test_store_default_flushes_itself),   G(test_gate_answer_waits_for_the_flush),
                G(test_gate_failed_flush_refuses),      G(test_gate_answer_waits_for_the_commit),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
