/* Unit tests for c0re/proc.c: exit codes and signals, separate bounded capture, the timeout
 * killing a whole process group, exec failures, env/cwd, signal state of the child, several
 * threads at once, and the temporary working directory (made by proc_tmpdir_new, removed by
 * sh4re's fsutil_rm_rf, which has no test binary of its own). */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "fsutil.h"
#include "proc.h"
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

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs /bin/sh -c script; returns proc_run's result. */
static int sh(const char *script, char *const envp[], const char *cwd, uint64_t timeout_ms,
              BackendRun *ret)
{
        char *const argv[] = {"/bin/sh", "-c", (char *)script, NULL};
        return proc_run(argv, envp, cwd, timeout_ms, ret);
}

/* Whether pid is gone or a zombie, waiting up to 3 s for it. */
static int wait_dead(pid_t pid)
{
        for (int i = 0; i < 300; i++) {
                char path[64];
                snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
                char *stat = tu_read_file(path, NULL);
                if (!stat)
                        return 1;
                char *paren = strrchr(stat, ')');
                int zombie = paren && paren[1] == ' ' && paren[2] == 'Z';
                free(stat);
                if (zombie)
                        return 1;
                usleep(10000);
        }
        return 0;
}

static void test_exit_codes(void **state)
{
        BackendRun run = {0};
        assert_int_equal(sh("exit 0", NULL, NULL, 5000, &run), 0);
        assert_int_equal(run.status, 0);
        assert_string_equal(run.out, "");
        assert_string_equal(run.err, "");
        backend_run_done(&run);
        assert_int_equal(sh("exit 7", NULL, NULL, 5000, &run), 0);
        assert_int_equal(run.status, 7);
        backend_run_done(&run);
        assert_int_equal(sh("exit 255", NULL, NULL, 0, &run), 0);
        assert_int_equal(run.status, 255);
        backend_run_done(&run);
}

static void test_signal_is_128_plus_n(void **state)
{
        BackendRun run = {0};
        assert_int_equal(sh("kill -KILL $$", NULL, NULL, 5000, &run), 0);
        assert_int_equal(run.status, 128 + SIGKILL);
        backend_run_done(&run);
        assert_int_equal(sh("kill -SEGV $$", NULL, NULL, 5000, &run), 0);
        assert_int_equal(run.status, 128 + SIGSEGV);
        backend_run_done(&run);
}

/* The daemon blocks SIGTERM/SIGINT (signalfd) and may ignore SIGPIPE; none of that may reach
 * the child, or its own children could not be stopped. */
static void test_child_gets_clean_signal_state(void **state)
{
        sigset_t block, old;
        sigemptyset(&block);
        sigaddset(&block, SIGTERM);
        sigaddset(&block, SIGINT);
        assert_int_equal(pthread_sigmask(SIG_BLOCK, &block, &old), 0);
        struct sigaction ign = {.sa_handler = SIG_IGN}, old_pipe, old_int;
        assert_int_equal(sigaction(SIGPIPE, &ign, &old_pipe), 0);
        assert_int_equal(sigaction(SIGINT, &ign, &old_int), 0);

        BackendRun run = {0};
        assert_int_equal(sh("kill -TERM $$; exit 3", NULL, NULL, 5000, &run), 0);
        assert_int_equal(run.status, 128 + SIGTERM);
        backend_run_done(&run);
        /* A shell cannot un-ignore a signal ignored on entry, so this shows SETSIGDEF. */
        assert_int_equal(sh("kill -PIPE $$; exit 3", NULL, NULL, 5000, &run), 0);
        assert_int_equal(run.status, 128 + SIGPIPE);
        backend_run_done(&run);
        assert_int_equal(sh("kill -INT $$; exit 3", NULL, NULL, 5000, &run), 0);
        assert_int_equal(run.status, 128 + SIGINT);
        backend_run_done(&run);
        /* The mask as the kernel shows it: nothing blocked. */
        assert_int_equal(sh("grep SigBlk /proc/self/status", NULL, NULL, 5000, &run), 0);
        assert_string_equal(run.out, "SigBlk:\t0000000000000000\n");
        backend_run_done(&run);

        assert_int_equal(sigaction(SIGPIPE, &old_pipe, NULL), 0);
        assert_int_equal(sigaction(SIGINT, &old_int, NULL), 0);
        assert_int_equal(pthread_sigmask(SIG_SETMASK, &old, NULL), 0);
}

static void test_stdout_and_stderr_are_separate(void **state)
{
        BackendRun run = {0};
        assert_int_equal(sh("echo out1; echo err1 >&2; echo out2; echo err2 >&2; exit 2", NULL,
                            NULL, 5000, &run),
                         0);
        assert_int_equal(run.status, 2);
        assert_string_equal(run.out, "out1\nout2\n");
        assert_string_equal(run.err, "err1\nerr2\n");
        backend_run_done(&run);
}

static void test_stdin_is_dev_null(void **state)
{
        BackendRun run = {0};
        double t0 = now_s();
        assert_int_equal(sh("cat; echo done", NULL, NULL, 10000, &run), 0);
        assert_true(now_s() - t0 < 5);
        assert_string_equal(run.out, "done\n");
        backend_run_done(&run);
}

/* The last PROC_OUTPUT_MAX bytes of each stream are kept, NUL-terminated. */
static void test_output_is_bounded_to_its_end(void **state)
{
        BackendRun run = {0};
        /* About 1.3 MB on stdout, 2.6 MB on stderr, interleaved. */
        assert_int_equal(sh("seq 1 200000; seq 1 400000 >&2; echo END", NULL, NULL, 30000, &run),
                         0);
        assert_int_equal(run.status, 0);
        size_t n = strlen(run.out);
        assert_int_equal(n, PROC_OUTPUT_MAX);
        const char *tail = "199999\n200000\nEND\n";
        assert_string_equal(run.out + n - strlen(tail), tail);
        n = strlen(run.err);
        assert_int_equal(n, PROC_OUTPUT_MAX);
        assert_string_equal(run.err + n - strlen("399999\n400000\n"), "399999\n400000\n");
        backend_run_done(&run);

        /* A short output is kept whole. */
        assert_int_equal(sh("seq 1 1000", NULL, NULL, 5000, &run), 0);
        assert_int_equal(strlen(run.out), 3893);
        backend_run_done(&run);
}

/* A child that spawned a grandchild which holds the pipes open: on the deadline the whole
 * group dies, at once, and what came before is kept. */
static void test_timeout_kills_the_group(void **state)
{
        BackendRun run = {0};
        double t0 = now_s();
        assert_int_equal(sh("sleep 60 & echo $!; echo before >&2; sleep 60", NULL, NULL, 500, &run),
                         -ETIMEDOUT);
        double took = now_s() - t0;
        assert_true(took >= 0.45);
        assert_true(took < 3);
        assert_int_equal(run.status, 128 + SIGKILL);
        assert_string_equal(run.err, "before\n");
        pid_t grandchild = (pid_t)atoi(run.out);
        assert_true(grandchild > 1);
        assert_true(wait_dead(grandchild));
        backend_run_done(&run);
}

/* The child is done even though something it left behind still holds its stdout. */
static void test_exit_with_leftover_holding_pipe(void **state)
{
        BackendRun run = {0};
        double t0 = now_s();
        assert_int_equal(sh("sleep 30 & echo $!; echo done; exit 4", NULL, NULL, 20000, &run), 0);
        assert_true(now_s() - t0 < 3);
        assert_int_equal(run.status, 4);
        pid_t leftover = (pid_t)atoi(run.out);
        assert_true(leftover > 1);
        assert_non_null(strstr(run.out, "\ndone\n"));
        assert_int_equal(kill(leftover, SIGKILL), 0); /* not ours to kill: proc_run left it */
        backend_run_done(&run);
}

static void test_exec_failures(void **state)
{
        const char *dir = *state;
        BackendRun run = {.status = 42};
        char *const missing[] = {"/nonexistent/hive-no-such-program", NULL};
        assert_int_equal(proc_run(missing, NULL, NULL, 5000, &run), -ENOENT);
        char *const on_path[] = {"hive-no-such-program-on-path", NULL};
        assert_int_equal(proc_run(on_path, NULL, NULL, 5000, &run), -ENOENT);
        assert_int_equal(run.status, 42); /* untouched */
        assert_null(run.out);

        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/not-executable", dir);
        assert_int_equal(tu_write_file(path, "#!/bin/sh\nexit 0\n"), 0);
        char *const noexec[] = {path, NULL};
        /* No x bit at all: EACCES even for root. */
        assert_int_equal(proc_run(noexec, NULL, NULL, 5000, &run), -EACCES);
        assert_int_equal(run.status, 42);

        char *const sh_argv[] = {"/bin/sh", "-c", "exit 0", NULL};
        snprintf(path, sizeof(path), "%s/no-such-dir", dir);
        assert_int_equal(proc_run(sh_argv, NULL, path, 5000, &run), -ENOENT);
        assert_int_equal(run.status, 42);
}

static void test_env_and_cwd(void **state)
{
        const char *dir = *state;
        char *const envp[] = {"HIVE_T=one two", "PATH=/usr/bin:/bin", NULL};
        BackendRun run = {0};
        assert_int_equal(sh("echo \"$HIVE_T\"; pwd; env | grep -c . ; echo \"${HOME-unset}\"", envp,
                            dir, 5000, &run),
                         0);
        char real[PATH_MAX];
        assert_non_null(realpath(dir, real));
        char want[PATH_MAX * 2];
        /* env shows HIVE_T, PATH, and what sh itself adds (PWD, maybe SHLVL/_) */
        assert_int_equal(strncmp(run.out, "one two\n", 8), 0);
        snprintf(want, sizeof(want), "one two\n%s\n", real);
        assert_int_equal(strncmp(run.out, want, strlen(want)), 0);
        assert_non_null(strstr(run.out, "\nunset\n"));
        backend_run_done(&run);

        /* NULL envp: the caller's environment. */
        assert_int_equal(setenv("HIVE_PROC_TEST", "inherited", 1), 0);
        assert_int_equal(sh("echo \"$HIVE_PROC_TEST\"", NULL, NULL, 5000, &run), 0);
        assert_string_equal(run.out, "inherited\n");
        backend_run_done(&run);
        unsetenv("HIVE_PROC_TEST");
}

/* The child runs in a session of its own (so its group is its pid). */
static void test_child_leads_its_session(void **state)
{
        BackendRun run = {0};
        /* fields 5 and 6 of /proc/PID/stat: process group, session */
        assert_int_equal(sh("echo $$; cut -d' ' -f5,6 /proc/$$/stat", NULL, NULL, 5000, &run), 0);
        int pid = 0, pgrp = -1, sid = -1;
        assert_int_equal(sscanf(run.out, "%d %d %d", &pid, &pgrp, &sid), 3);
        assert_true(pid > 1);
        assert_int_equal(pgrp, pid);
        assert_int_equal(sid, pid);
        backend_run_done(&run);
}

typedef struct Worker {
        int i;
        int r;
        int ok;
} Worker;

static void *worker(void *p)
{
        Worker *w = p;
        char script[128];
        snprintf(script, sizeof(script),
                 "for n in 1 2 3 4 5; do echo %d; done; echo e%d >&2; "
                 "exit %d",
                 w->i, w->i, w->i);
        for (int k = 0; k < 5; k++) {
                BackendRun run = {0};
                w->r = sh(script, NULL, NULL, 20000, &run);
                char want[64];
                snprintf(want, sizeof(want), "%d\n%d\n%d\n%d\n%d\n", w->i, w->i, w->i, w->i, w->i);
                char want_err[16];
                snprintf(want_err, sizeof(want_err), "e%d\n", w->i);
                w->ok += w->r == 0 && run.status == w->i && strcmp(run.out, want) == 0 &&
                         strcmp(run.err, want_err) == 0;
                backend_run_done(&run);
        }
        return NULL;
}

static void test_threads_at_once(void **state)
{
        pthread_t t[8];
        Worker w[8];
        for (int i = 0; i < 8; i++) {
                w[i] = (Worker){.i = i + 1};
                assert_int_equal(pthread_create(&t[i], NULL, worker, &w[i]), 0);
        }
        for (int i = 0; i < 8; i++) {
                assert_int_equal(pthread_join(t[i], NULL), 0);
                assert_int_equal(w[i].r, 0);
                assert_int_equal(w[i].ok, 5);
        }
}

static void test_tmpdir_is_private_and_removal_does_not_follow_links(void **state)
{
        const char *dir = *state;
        char outside[PATH_MAX], keep[PATH_MAX], link[PATH_MAX], sub[PATH_MAX];
        snprintf(outside, sizeof(outside), "%s/outside", dir);
        assert_int_equal(mkdir(outside, 0755), 0);
        snprintf(keep, sizeof(keep), "%s/outside/keep", dir);
        assert_int_equal(tu_write_file(keep, "precious\n"), 0);

        char *tmp = NULL;
        assert_int_equal(proc_tmpdir_new(dir, &tmp), 0);
        assert_int_equal(strncmp(tmp, dir, strlen(dir)), 0);
        struct stat st;
        assert_int_equal(lstat(tmp, &st), 0);
        assert_true(S_ISDIR(st.st_mode));
        assert_int_equal(st.st_mode & 07777, 0700);
        char *tmp2 = NULL;
        assert_int_equal(proc_tmpdir_new(dir, &tmp2), 0);
        assert_string_not_equal(tmp, tmp2);

        /* What a flake build leaves: ./.tmp pointing into the store, and some more. */
        snprintf(link, sizeof(link), "%s/.tmp", tmp);
        assert_int_equal(symlink(outside, link), 0);
        snprintf(sub, sizeof(sub), "%s/a", tmp);
        assert_int_equal(mkdir(sub, 0700), 0);
        snprintf(sub, sizeof(sub), "%s/a/link-to-keep", tmp);
        assert_int_equal(symlink(keep, sub), 0);

        assert_int_equal(fsutil_rm_rf(tmp), 0);
        assert_int_equal(lstat(tmp, &st), -1);
        assert_int_equal(errno, ENOENT);
        char *content = tu_read_file(keep, NULL);
        assert_non_null(content);
        assert_string_equal(content, "precious\n");
        free(content);
        assert_int_equal(fsutil_rm_rf(tmp), 0); /* gone already: fine */
        assert_int_equal(fsutil_rm_rf(tmp2), 0);
        free(tmp);
        free(tmp2);

        /* NULL parent: $TMPDIR. */
        const char *old = getenv("TMPDIR");
        char *saved = old ? strdup(old) : NULL;
        assert_int_equal(setenv("TMPDIR", dir, 1), 0);
        assert_int_equal(proc_tmpdir_new(NULL, &tmp), 0);
        assert_int_equal(strncmp(tmp, dir, strlen(dir)), 0);
        assert_int_equal(fsutil_rm_rf(tmp), 0);
        free(tmp);
        if (saved)
                setenv("TMPDIR", saved, 1);
        else
                unsetenv("TMPDIR");
        free(saved);

        snprintf(sub, sizeof(sub), "%s/missing-parent", dir);
        tmp = NULL;
        assert_int_equal(proc_tmpdir_new(sub, &tmp), -ENOENT);
        assert_null(tmp);
}

typedef struct Lines {
        char text[4096];
        size_t len;
        unsigned calls;
} Lines;

static void collect(void *userdata, int stream, const char *line, size_t len)
{
        Lines *l = userdata;
        l->len += (size_t)snprintf(l->text + l->len, sizeof(l->text) - l->len, "%d:%.*s|", stream,
                                   (int)len, line);
        l->calls++;
}

/* Lines reach the callback one by one, per stream, an unterminated last one included; the
 * capture is the same as without a callback. */
static void test_lines_are_handed_out(void **state)
{
        char *const argv[] = {"/bin/sh", "-c",
                              "echo one; echo err1 >&2; printf 'two\nthree'; sleep 0.1; "
                              "printf 'err2\n' >&2",
                              NULL};
        Lines l = {0};
        BackendRun run = {0};
        assert_int_equal(proc_run_lines(argv, NULL, NULL, 5000, collect, &l, &run), 0);
        assert_int_equal(run.status, 0);
        assert_string_equal(run.out, "one\ntwo\nthree");
        assert_string_equal(run.err, "err1\nerr2\n");
        assert_int_equal(l.calls, 5);
        /* per stream in order; the two streams interleave as the child wrote them */
        assert_non_null(strstr(l.text, "1:one|"));
        assert_true(strstr(l.text, "1:two|") < strstr(l.text, "1:three|"));
        assert_true(strstr(l.text, "2:err1|") < strstr(l.text, "2:err2|"));
        backend_run_done(&run);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_exit_codes),
                cmocka_unit_test(test_signal_is_128_plus_n),
                cmocka_unit_test(test_child_gets_clean_signal_state),
                cmocka_unit_test(test_stdout_and_stderr_are_separate),
                cmocka_unit_test(test_stdin_is_dev_null),
                cmocka_unit_test(test_output_is_bounded_to_its_end),
                cmocka_unit_test(test_timeout_kills_the_group),
                cmocka_unit_test(test_exit_with_leftover_holding_pipe),
                cmocka_unit_test_setup_teardown(test_exec_failures, setup, teardown),
                cmocka_unit_test_setup_teardown(test_env_and_cwd, setup, teardown),
                cmocka_unit_test(test_child_leads_its_session),
                cmocka_unit_test(test_threads_at_once),
                cmocka_unit_test(test_lines_are_handed_out),
                cmocka_unit_test_setup_teardown(
                        test_tmpdir_is_private_and_removal_does_not_follow_links, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
