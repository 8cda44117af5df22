/* Unit tests for c0re/backend_process.c: the container life cycle with a real payload (an
 * --agent-command shell line), its environment, failed starts, stop escalation, exit
 * callbacks, run (its timeout and output bound too) and logs. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "backend.h"
#include "cleanup.h"
#include "fsutil.h"
#include "proc.h"
#include "testutil.h"
#include "supervise-util.h"

typedef struct Fx {
        char *dir;
        HiveConfig cfg;
        Backend *b;
        BackendAgent a;
        char *pid_dir;
        ExitLog exits;
} Fx;

static void on_exit_cb(void *userdata, const char *name)
{
        Fx *fx = userdata;
        exit_log_add(&fx->exits, name, 0);
}

static char *path_in(const char *dir, const char *name)
{
        char *p = NULL;
        assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
        return p;
}

static int setup(void **state)
{
        Fx *fx = calloc(1, sizeof(*fx));
        assert_non_null(fx);
        fx->dir = tu_mkdtemp();
        fx->cfg.state_dir = path_in(fx->dir, "state");
        fx->cfg.run_dir = path_in(fx->dir, "run");
        fx->cfg.op_timeout = 10;
        fx->cfg.stop_grace = 2;
        fx->pid_dir = path_in(fx->cfg.run_dir, "supervise");
        exit_log_init(&fx->exits);
        fx->a = (BackendAgent){
                .name = "a1",
                .machine = "h-a1",
                .port = 8123,
                .state_dir = path_in(fx->cfg.state_dir, "agents/a1/state"),
                .sock_dir = path_in(fx->cfg.run_dir, "agents/a1"),
                .log_path = path_in(fx->cfg.state_dir, "agents/a1/console.log"),
        };
        assert_int_equal(backend_new("process", &fx->cfg, on_exit_cb, fx, &fx->b), 0);
        struct stat st;
        assert_int_equal(stat(fx->pid_dir, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0700);
        *state = fx;
        return 0;
}

static int teardown(void **state)
{
        Fx *fx = *state;
        tu_kill_recorded(fx->pid_dir);
        fx->b = backend_free(fx->b);
        exit_log_done(&fx->exits);
        assert_int_equal(tu_rm_rf(fx->dir), 0);
        free((char *)fx->a.state_dir);
        free((char *)fx->a.sock_dir);
        free((char *)fx->a.log_path);
        free(fx->cfg.state_dir);
        free(fx->cfg.run_dir);
        free(fx->cfg.agent_command);
        free(fx->pid_dir);
        free(fx->dir);
        free(fx);
        return 0;
}

static ContainerState state_of(Fx *fx)
{
        ContainerState st = CONTAINER_GONE;
        char *err = NULL;
        assert_int_equal(fx->b->ops->status(fx->b, &fx->a, &st, &err), 0);
        assert_null(err);
        return st;
}

static pid_t payload_pid(Fx *fx)
{
        char *pidfile = path_in(fx->pid_dir, "a1.pid");
        char *text = tu_read_file(pidfile, NULL);
        assert_non_null(text);
        pid_t pid = (pid_t)atoi(text);
        free(text);
        free(pidfile);
        return pid;
}

/* Asserts success, printing the sentence (and the caller's line) when there is none. */
#define expect_ok(call, err)                                                                       \
        do {                                                                                       \
                int r_ = (call);                                                                   \
                if (r_ < 0)                                                                        \
                        fprintf(stderr, "line %d: unexpected failure %d: %s\n", __LINE__, r_,      \
                                (err) ? (err) : "(no sentence)");                                  \
                assert_int_equal(r_, 0);                                                           \
                assert_null(err);                                                                  \
        } while (0)

static void test_life_cycle_and_environment(void **state)
{
        Fx *fx = *state;
        const Backend *b = fx->b;
        assert_false(b->ops->isolated);
        assert_true(b->ops->supervised);
        fx->cfg.agent_command = strdup("echo started; echo \"$HIVE_LABEL $HIVE_SOCKET $HIVE_PORT "
                                       "$HIVE_STATE_DIR\" > env.txt; pwd >> env.txt; "
                                       "exec sleep 100");
        char *err = NULL;
        assert_int_equal(state_of(fx), CONTAINER_GONE);
        expect_ok(b->ops->create(fx->b, &fx->a, &err), err);
        assert_int_equal(state_of(fx), CONTAINER_DOWN);
        assert_int_equal(b->ops->create(fx->b, &fx->a, &err), -EEXIST);
        assert_non_null(strstr(err, "h-a1"));
        free(err);
        err = NULL;
        char **names = NULL;
        expect_ok(b->ops->list(fx->b, &names, &err), err);
        assert_non_null(names);
        assert_string_equal(names[0], "h-a1");
        assert_null(names[1]);
        strv_free(names);

        expect_ok(b->ops->start(fx->b, &fx->a, &err), err);
        assert_int_equal(state_of(fx), CONTAINER_UP);
        expect_ok(b->ops->start(fx->b, &fx->a, &err), err); /* already up */
        char *env_txt = path_in(fx->a.state_dir, "env.txt");
        char *want = NULL;
        assert_true(asprintf(&want, "a1 %s/mcp.sock 8123 %s\n%s\n", fx->a.sock_dir, fx->a.state_dir,
                             fx->a.state_dir) > 0);
        assert_true(tu_wait_file(env_txt, want, 5000));
        char *text = tu_read_file(env_txt, NULL);
        assert_string_equal(text, want);
        free(text);
        free(want);
        free(env_txt);

        char *logs = NULL;
        assert_int_equal(b->ops->logs(fx->b, &fx->a, 5, &logs), 0);
        assert_string_equal(logs, "started\n");
        free(logs);

        BackendRun run = {0};
        char *const argv[] = {"/bin/sh", "-c", "echo out; echo err >&2; echo $HIVE_LABEL; exit 3",
                              NULL};
        expect_ok(b->ops->run(fx->b, &fx->a, argv, &run, &err), err);
        assert_int_equal(run.status, 3);
        assert_string_equal(run.out, "out\na1\n");
        assert_string_equal(run.err, "err\n");
        backend_run_done(&run);
        char *const missing[] = {"no-such-program-here", NULL};
        expect_ok(b->ops->run(fx->b, &fx->a, missing, &run, &err), err);
        assert_int_equal(run.status, 127);
        assert_non_null(strstr(run.err, "no-such-program-here"));
        backend_run_done(&run);

        int64_t t0 = tu_now_ms();
        expect_ok(b->ops->stop(fx->b, &fx->a, 5, &err), err);
        assert_true(tu_now_ms() - t0 < 2000); /* sleep dies of SIGTERM: no escalation */
        assert_int_equal(state_of(fx), CONTAINER_DOWN);
        assert_true(exit_log_wait(&fx->exits, 1, 2000));
        assert_string_equal(fx->exits.name, "a1");
        expect_ok(b->ops->stop(fx->b, &fx->a, 5, &err), err); /* stopped already */

        expect_ok(b->ops->start(fx->b, &fx->a, &err), err);
        assert_int_equal(state_of(fx), CONTAINER_UP);
        expect_ok(b->ops->destroy(fx->b, &fx->a, &err), err);
        assert_int_equal(state_of(fx), CONTAINER_GONE);
        assert_true(exit_log_wait(&fx->exits, 2, 2000));
        struct stat st;
        assert_int_equal(stat(fx->a.state_dir, &st), 0); /* agent state is the caller's */
        expect_ok(b->ops->destroy(fx->b, &fx->a, &err), err);
        expect_ok(b->ops->list(fx->b, &names, &err), err);
        assert_null(names[0]);
        strv_free(names);

        assert_int_equal(b->ops->stop(fx->b, &fx->a, 1, &err), -ENOENT);
        free(err);
        err = NULL;
        assert_int_equal(b->ops->start(fx->b, &fx->a, &err), -ENOENT);
        assert_non_null(strstr(err, "does not exist"));
        free(err);
        err = NULL;
        assert_int_equal(b->ops->run(fx->b, &fx->a, argv, &run, &err), -ENOENT);
        free(err);
}

/* --payload-env: after the fixed variables, in order; LANG and TERM replaced, not doubled. */
static void test_payload_env_extra(void **state)
{
        Fx *fx = *state;
        char *extra[] = {"HIVE_MODEL_BIN=/x/fake-claude", "LANG=C.UTF-8", "EMPTY=", NULL};
        fx->cfg.payload_env = extra;
        const char *old = getenv("LANG");
        char *saved = old ? strdup(old) : NULL;
        setenv("LANG", "de_DE.UTF-8", 1);
        char **env = NULL;
        assert_int_equal(backend_payload_env(fx->b, &fx->a, false, &env), 0);
        fx->cfg.payload_env = NULL;
        if (saved)
                setenv("LANG", saved, 1);
        else
                unsetenv("LANG");
        free(saved);
        size_t n = strv_length(env), lang = 0, label_at = n, model_at = n;
        for (size_t i = 0; i < n; i++) {
                if (strncmp(env[i], "LANG=", 5) == 0) {
                        lang++;
                        assert_string_equal(env[i], "LANG=C.UTF-8");
                }
                if (strcmp(env[i], "HIVE_LABEL=a1") == 0)
                        label_at = i;
                if (strcmp(env[i], "HIVE_MODEL_BIN=/x/fake-claude") == 0)
                        model_at = i;
        }
        assert_int_equal(lang, 1);
        assert_true(label_at < model_at && model_at < n);
        assert_string_equal(env[n - 1], "EMPTY=");
        strv_free(env);
}

static void test_payload_exiting_at_once_fails_start(void **state)
{
        Fx *fx = *state;
        fx->cfg.agent_command = strdup("echo boom-line-1; echo boom-line-2 >&2; exit 7");
        char *err = NULL;
        expect_ok(fx->b->ops->create(fx->b, &fx->a, &err), err);
        assert_int_equal(fx->b->ops->start(fx->b, &fx->a, &err), -EIO);
        assert_non_null(err);
        assert_non_null(strstr(err, "h-a1"));
        assert_non_null(strstr(err, "status 7"));
        assert_non_null(strstr(err, "boom-line-1\nboom-line-2"));
        free(err);
        assert_int_equal(state_of(fx), CONTAINER_DOWN);
        assert_true(exit_log_wait(&fx->exits, 1, 2000));
}

static void test_missing_harness(void **state)
{
        Fx *fx = *state;
        char *old = strdup(getenv("PATH"));
        assert_int_equal(setenv("PATH", fx->dir, 1), 0); /* no hive-ag3nt there */
        char *err = NULL;
        int r = fx->b->ops->create(fx->b, &fx->a, &err);
        assert_int_equal(setenv("PATH", old, 1), 0);
        free(old);
        assert_int_equal(r, -ENOEXEC);
        assert_non_null(strstr(err, "hive-ag3nt"));
        free(err);
        char *rec = path_in(fx->cfg.state_dir, "containers/h-a1");
        assert_int_equal(access(rec, F_OK), -1);
        assert_int_equal(errno, ENOENT);
        free(rec);
        assert_int_equal(state_of(fx), CONTAINER_GONE);
}

static void test_exit_callback_on_kill9(void **state)
{
        Fx *fx = *state;
        fx->cfg.agent_command = strdup("exec sleep 100");
        char *err = NULL;
        expect_ok(fx->b->ops->create(fx->b, &fx->a, &err), err);
        expect_ok(fx->b->ops->start(fx->b, &fx->a, &err), err);
        pid_t pid = payload_pid(fx);
        int64_t t0 = tu_now_ms();
        assert_int_equal(kill(pid, SIGKILL), 0);
        assert_true(exit_log_wait(&fx->exits, 1, 2000));
        assert_true(tu_now_ms() - t0 < 500);
        assert_string_equal(fx->exits.name, "a1");
        assert_int_equal(state_of(fx), CONTAINER_DOWN);
}

static void test_stop_escalates_to_sigkill(void **state)
{
        Fx *fx = *state;
        fx->cfg.agent_command = strdup("trap '' TERM; echo ready; while :; do sleep 0.05; done");
        char *err = NULL;
        expect_ok(fx->b->ops->create(fx->b, &fx->a, &err), err);
        expect_ok(fx->b->ops->start(fx->b, &fx->a, &err), err);
        assert_true(tu_wait_file(fx->a.log_path, "ready", 5000));
        int64_t t0 = tu_now_ms();
        expect_ok(fx->b->ops->stop(fx->b, &fx->a, 1, &err), err);
        int64_t took = tu_now_ms() - t0;
        assert_true(took >= 1000);
        assert_true(took < 4000);
        assert_int_equal(state_of(fx), CONTAINER_DOWN);
}

static void test_logs_tail(void **state)
{
        Fx *fx = *state;
        char *text = NULL;
        assert_int_equal(fx->b->ops->logs(fx->b, &fx->a, 10, &text), 0);
        assert_string_equal(text, ""); /* no log yet */
        free(text);
        char *dir = path_in(fx->cfg.state_dir, "agents/a1");
        assert_int_equal(fsutil_mkdir_p(dir, 0700), 0);
        free(dir);
        assert_int_equal(tu_write_file(fx->a.log_path, "1\n2\n3\n"), 0);
        struct {
                unsigned lines;
                const char *want;
        } cases[] = {{2, "2\n3\n"}, {3, "1\n2\n3\n"}, {10, "1\n2\n3\n"}, {0, ""}};
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                assert_int_equal(fx->b->ops->logs(fx->b, &fx->a, cases[i].lines, &text), 0);
                assert_string_equal(text, cases[i].want);
                free(text);
        }
        assert_int_equal(tu_write_file(fx->a.log_path, "1\n2\n3"), 0);
        assert_int_equal(fx->b->ops->logs(fx->b, &fx->a, 2, &text), 0);
        assert_string_equal(text, "2\n3");
        free(text);
}

/* run: past --op-timeout the command is killed (with what it started) and reported as
 * ETIMEDOUT; a long output keeps its end. */
static void test_run_timeout_and_output_bound(void **state)
{
        Fx *fx = *state;
        fx->cfg.agent_command = strdup("exec sleep 100");
        fx->cfg.op_timeout = 1;
        char *err = NULL;
        expect_ok(fx->b->ops->create(fx->b, &fx->a, &err), err);
        assert_int_equal(fsutil_mkdir_p(fx->a.state_dir, 0700), 0); /* run's cwd */

        BackendRun run = {.status = 42};
        char *const slow[] = {"/bin/sh", "-c", "sleep 30 & echo started; sleep 30", NULL};
        int64_t t0 = tu_now_ms();
        assert_int_equal(fx->b->ops->run(fx->b, &fx->a, slow, &run, &err), -ETIMEDOUT);
        int64_t took = tu_now_ms() - t0;
        assert_true(took >= 900);
        assert_true(took < 4000); /* the background sleep holding the pipes died too */
        assert_non_null(err);
        assert_non_null(strstr(err, "h-a1 took longer than 1 s"));
        free(err);
        err = NULL;
        assert_int_equal(run.status, 42); /* untouched */
        assert_null(run.out);
        assert_null(run.err);

        fx->cfg.op_timeout = 20;
        char *const big[] = {"/bin/sh", "-c", "seq 1 200000; echo END; echo oops >&2", NULL};
        expect_ok(fx->b->ops->run(fx->b, &fx->a, big, &run, &err), err);
        assert_int_equal(run.status, 0);
        size_t n = strlen(run.out);
        assert_int_equal(n, PROC_OUTPUT_MAX);
        assert_string_equal(run.out + n - strlen("199999\n200000\nEND\n"), "199999\n200000\nEND\n");
        assert_string_equal(run.err, "oops\n");
        backend_run_done(&run);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_life_cycle_and_environment, setup, teardown),
                cmocka_unit_test_setup_teardown(test_payload_exiting_at_once_fails_start, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_payload_env_extra, setup, teardown),
                cmocka_unit_test_setup_teardown(test_missing_harness, setup, teardown),
                cmocka_unit_test_setup_teardown(test_exit_callback_on_kill9, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stop_escalates_to_sigkill, setup, teardown),
                cmocka_unit_test_setup_teardown(test_logs_tail, setup, teardown),
                cmocka_unit_test_setup_teardown(test_run_timeout_and_output_bound, setup, teardown),
        };
        return cmocka_run_group_tests_name("backend-process", tests, NULL, NULL);
}
