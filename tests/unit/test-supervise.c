/* Unit tests for c0re/supervise.c: exits reported promptly, signals, the clean signal state of
 * children, log files and their rotation, adoption after a restart, and stale pid files. */
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "proc.h"
#include "supervise.h"
#include "testutil.h"
#include "supervise-util.h"

typedef struct Fx {
        char *dir;
        char *pid_dir;
        Supervisor *s;
        ExitLog exits;
        pid_t orphan; /* a process that is not our child, for adoption */
        unsigned long long orphan_start;
} Fx;

static char *const env[] = {"PATH=/usr/local/bin:/usr/bin:/bin", NULL};

static void on_exit_cb(void *userdata, const char *name, int status)
{
        Fx *fx = userdata;
        exit_log_add(&fx->exits, name, status);
}

static int setup(void **state)
{
        Fx *fx = calloc(1, sizeof(*fx));
        assert_non_null(fx);
        fx->dir = tu_mkdtemp();
        assert_true(asprintf(&fx->pid_dir, "%s/pids", fx->dir) > 0);
        assert_int_equal(mkdir(fx->pid_dir, 0700), 0);
        exit_log_init(&fx->exits);
        assert_int_equal(supervisor_new(fx->pid_dir, on_exit_cb, fx, &fx->s), 0);
        *state = fx;
        return 0;
}

static int teardown(void **state)
{
        Fx *fx = *state;
        tu_kill_recorded(fx->pid_dir);
        tu_kill_tree(fx->orphan, fx->orphan_start);
        fx->s = supervisor_free(fx->s);
        exit_log_done(&fx->exits);
        assert_int_equal(tu_rm_rf(fx->dir), 0);
        free(fx->pid_dir);
        free(fx->dir);
        free(fx);
        return 0;
}

static char *path_in(const Fx *fx, const char *name)
{
        char *p = NULL;
        assert_true(asprintf(&p, "%s/%s", fx->dir, name) > 0);
        return p;
}

static void start_sh(Fx *fx, const char *name, const char *script)
{
        char *const argv[] = {"/bin/sh", "-c", (char *)script, NULL};
        char *log = path_in(fx, "out.log");
        char *err = NULL;
        int r = supervisor_start(fx->s, name, argv, env, fx->dir, log, &err);
        if (r < 0)
                fprintf(stderr, "start: %s\n", err);
        assert_int_equal(r, 0);
        assert_null(err);
        free(log);
}

static void test_exit_reported_within_a_short_time(void **state)
{
        Fx *fx = *state;
        start_sh(fx, "c1", "echo hello; exec sleep 100");
        pid_t pid = 0;
        assert_true(supervisor_running(fx->s, "c1", &pid));
        assert_true(pid > 1);
        assert_int_equal(getsid(pid), pid); /* a session of its own */

        char *pidfile = NULL;
        assert_true(asprintf(&pidfile, "%s/c1.pid", fx->pid_dir) > 0);
        char *text = tu_read_file(pidfile, NULL);
        assert_non_null(text);
        char want[64];
        snprintf(want, sizeof(want), "%d %llu\n", (int)pid, tu_starttime(pid));
        assert_string_equal(text, want);
        free(text);
        int st = 0;
        assert_int_equal(supervisor_last_exit(fx->s, "c1", &st), -ENOENT);

        int64_t t0 = tu_now_ms();
        assert_int_equal(kill(pid, SIGKILL), 0);
        assert_true(exit_log_wait(&fx->exits, 1, 2000));
        assert_true(tu_now_ms() - t0 < 500);
        assert_string_equal(fx->exits.name, "c1");
        assert_int_equal(fx->exits.status, 128 + SIGKILL);
        assert_int_equal(supervisor_wait(fx->s, "c1", 1000), 0);
        assert_false(supervisor_running(fx->s, "c1", NULL));
        assert_int_equal(supervisor_last_exit(fx->s, "c1", &st), 0);
        assert_int_equal(st, 128 + SIGKILL);
        assert_int_equal(access(pidfile, F_OK), -1);
        assert_int_equal(errno, ENOENT);
        assert_int_equal(supervisor_signal(fx->s, "c1", SIGTERM, false), -ESRCH);

        /* an exit code, and the same name started again */
        start_sh(fx, "c1", "exit 3");
        assert_int_equal(supervisor_wait(fx->s, "c1", 2000), 0);
        assert_true(exit_log_wait(&fx->exits, 2, 2000));
        assert_int_equal(fx->exits.status, 3);
        assert_int_equal(supervisor_last_exit(fx->s, "c1", &st), 0);
        assert_int_equal(st, 3);
        free(pidfile);
}

static void test_sigterm_ignored_needs_sigkill(void **state)
{
        Fx *fx = *state;
        char *log = path_in(fx, "out.log");
        start_sh(fx, "term", "trap '' TERM; echo ready; while :; do sleep 0.05; done");
        assert_true(tu_wait_file(log, "ready", 5000));
        assert_int_equal(supervisor_signal(fx->s, "term", SIGTERM, true), 0);
        assert_int_equal(supervisor_wait(fx->s, "term", 500), -ETIMEDOUT);
        assert_true(supervisor_running(fx->s, "term", NULL));
        assert_int_equal(fx->exits.count, 0);
        assert_int_equal(supervisor_signal(fx->s, "term", SIGKILL, true), 0);
        assert_int_equal(supervisor_wait(fx->s, "term", 2000), 0);
        int st = 0;
        assert_int_equal(supervisor_last_exit(fx->s, "term", &st), 0);
        assert_int_equal(st, 128 + SIGKILL);
        free(log);
}

/* A daemon blocks SIGTERM for its signalfd and ignores SIGPIPE; its children must not. */
static void test_child_gets_clean_signal_state(void **state)
{
        Fx *fx = *state;
        sigset_t block, old;
        sigemptyset(&block);
        sigaddset(&block, SIGTERM);
        sigaddset(&block, SIGINT);
        assert_int_equal(pthread_sigmask(SIG_BLOCK, &block, &old), 0);
        struct sigaction sa_ign = {.sa_handler = SIG_IGN}, old_pipe;
        assert_int_equal(sigaction(SIGPIPE, &sa_ign, &old_pipe), 0);
        char *const argv[] = {"/bin/sleep", "100", NULL};
        char *log = path_in(fx, "out.log");
        assert_int_equal(supervisor_start(fx->s, "clean", argv, env, NULL, log, NULL), 0);
        assert_int_equal(pthread_sigmask(SIG_SETMASK, &old, NULL), 0);
        assert_int_equal(sigaction(SIGPIPE, &old_pipe, NULL), 0);

        pid_t pid = 0;
        assert_true(supervisor_running(fx->s, "clean", &pid));
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
        /* wait for the exec (the status of the spawning clone may still show ours) */
        assert_true(tu_wait_file(path, "Name:\tsleep", 2000));
        char *status = tu_read_file(path, NULL);
        assert_non_null(status);
        /* glibc's posix_spawn leaves its internal signals 32 and 33 ignored; the ones a
         * daemon blocks or ignores must be clean */
        unsigned long long blk = 0, ign = 0;
        char *p = strstr(status, "SigBlk:");
        assert_non_null(p);
        blk = strtoull(p + 7, NULL, 16);
        p = strstr(status, "SigIgn:");
        assert_non_null(p);
        ign = strtoull(p + 7, NULL, 16);
        unsigned long long ours = (1ULL << (SIGTERM - 1)) | (1ULL << (SIGINT - 1)) |
                                  (1ULL << (SIGPIPE - 1)) | (1ULL << (SIGHUP - 1));
        assert_int_equal(blk, 0);
        assert_int_equal(ign & ours, 0);
        assert_int_equal(ign & ((1ULL << 31) - 1), 0); /* no classic signal ignored */
        free(status);
        assert_int_equal(supervisor_signal(fx->s, "clean", SIGTERM, false), 0);
        assert_int_equal(supervisor_wait(fx->s, "clean", 2000), 0);
        int st = 0;
        assert_int_equal(supervisor_last_exit(fx->s, "clean", &st), 0);
        assert_int_equal(st, 128 + SIGTERM);
        free(log);
}

static void test_refusals(void **state)
{
        Fx *fx = *state;
        start_sh(fx, "dup", "exec sleep 100");
        char *const argv[] = {"/bin/true", NULL};
        char *log = path_in(fx, "out.log");
        char *err = NULL;
        assert_int_equal(supervisor_start(fx->s, "dup", argv, env, NULL, log, &err), -EALREADY);
        assert_non_null(strstr(err, "already running"));
        free(err);
        err = NULL;
        assert_int_equal(supervisor_start(fx->s, "../x", argv, env, NULL, log, &err), -EINVAL);
        assert_non_null(err);
        free(err);
        err = NULL;
        assert_int_equal(supervisor_start(fx->s, "", argv, env, NULL, log, NULL), -EINVAL);

        char *const missing[] = {"/nonexistent/prog", NULL};
        assert_int_equal(supervisor_start(fx->s, "miss", missing, env, NULL, log, &err), -ENOENT);
        assert_non_null(strstr(err, "/nonexistent/prog"));
        free(err);
        err = NULL;
        assert_false(supervisor_running(fx->s, "miss", NULL));
        char *pidfile = NULL;
        assert_true(asprintf(&pidfile, "%s/miss.pid", fx->pid_dir) > 0);
        assert_int_equal(access(pidfile, F_OK), -1);
        free(pidfile);

        char *badlog = path_in(fx, "no/such/dir/log");
        assert_int_equal(supervisor_start(fx->s, "nolog", argv, env, NULL, badlog, &err), -ENOENT);
        assert_non_null(strstr(err, badlog));
        free(err);
        free(badlog);

        /* unknown names */
        int st = 0;
        assert_false(supervisor_running(fx->s, "nobody", NULL));
        assert_int_equal(supervisor_signal(fx->s, "nobody", SIGTERM, true), -ESRCH);
        assert_int_equal(supervisor_wait(fx->s, "nobody", 10), 0);
        assert_int_equal(supervisor_last_exit(fx->s, "nobody", &st), -ENOENT);
        assert_int_equal(supervisor_wait(fx->s, "dup", 100), -ETIMEDOUT);
        free(log);
}

static void test_log_captures_output_and_rotates(void **state)
{
        Fx *fx = *state;
        umask(022);
        char *log = path_in(fx, "out.log");
        char *old = path_in(fx, "out.log.1");
        start_sh(fx, "log", "readlink /proc/self/fd/0; echo to-stderr >&2");
        assert_int_equal(supervisor_wait(fx->s, "log", 2000), 0);
        char *text = tu_read_file(log, NULL);
        assert_string_equal(text, "/dev/null\nto-stderr\n");
        free(text);
        struct stat st;
        assert_int_equal(stat(log, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0640);

        /* appended while small */
        start_sh(fx, "log", "echo second");
        assert_int_equal(supervisor_wait(fx->s, "log", 2000), 0);
        text = tu_read_file(log, NULL);
        assert_string_equal(text, "/dev/null\nto-stderr\nsecond\n");
        free(text);
        assert_int_equal(access(old, F_OK), -1);

        /* over 1 MiB: moved aside at the next start */
        size_t big = 1024 * 1024 + 1;
        char *blob = malloc(big + 1);
        assert_non_null(blob);
        memset(blob, 'x', big);
        blob[big - 1] = '\n';
        blob[big] = '\0';
        assert_int_equal(tu_write_file(log, blob), 0);
        free(blob);
        start_sh(fx, "log", "echo fresh");
        assert_int_equal(supervisor_wait(fx->s, "log", 2000), 0);
        text = tu_read_file(log, NULL);
        assert_string_equal(text, "fresh\n");
        free(text);
        assert_int_equal(stat(old, &st), 0);
        assert_int_equal(st.st_size, (off_t)big);
        free(log);
        free(old);
}

static void test_adoption_after_restart(void **state)
{
        Fx *fx = *state;
        start_sh(fx, "ad", "exec sleep 100");
        pid_t pid = 0;
        assert_true(supervisor_running(fx->s, "ad", &pid));
        fx->s = supervisor_free(fx->s); /* the daemon goes away; its child does not */
        assert_int_equal(kill(pid, 0), 0);
        assert_int_equal(fx->exits.count, 0);

        assert_int_equal(supervisor_new(fx->pid_dir, on_exit_cb, fx, &fx->s), 0);
        pid_t again = 0;
        assert_true(supervisor_running(fx->s, "ad", &again));
        assert_int_equal(again, pid);
        assert_int_equal(supervisor_start(fx->s, "ad", (char *[]){"/bin/true", NULL}, env, NULL,
                                          "/dev/null", NULL),
                         -EALREADY);
        assert_int_equal(kill(pid, SIGKILL), 0);
        assert_true(exit_log_wait(&fx->exits, 1, 2000));
        assert_string_equal(fx->exits.name, "ad");
        /* still our child (same process), so its status is known */
        assert_int_equal(fx->exits.status, 128 + SIGKILL);
        assert_false(supervisor_running(fx->s, "ad", NULL));
}

/* A recorded process that is not our child: watched through its pidfd, status unknown. */
static void test_adoption_of_a_stranger(void **state)
{
        Fx *fx = *state;
        char *const argv[] = {"/bin/sh", "-c", "sleep 100 >/dev/null 2>&1 & echo $!", NULL};
        BackendRun run = {0};
        assert_int_equal(proc_run(argv, env, NULL, 5000, &run), 0);
        assert_int_equal(run.status, 0);
        fx->orphan = (pid_t)atoi(run.out);
        assert_true(fx->orphan > 1);
        backend_run_done(&run);
        fx->orphan_start = tu_starttime(fx->orphan);
        assert_true(fx->orphan_start > 0);

        char *pidfile = NULL, *content = NULL;
        assert_true(asprintf(&pidfile, "%s/orph.pid", fx->pid_dir) > 0);
        assert_true(asprintf(&content, "%d %llu\n", (int)fx->orphan, fx->orphan_start) > 0);
        assert_int_equal(tu_write_file(pidfile, content), 0);
        fx->s = supervisor_free(fx->s);
        assert_int_equal(supervisor_new(fx->pid_dir, on_exit_cb, fx, &fx->s), 0);
        pid_t pid = 0;
        assert_true(supervisor_running(fx->s, "orph", &pid));
        assert_int_equal(pid, fx->orphan);
        assert_int_equal(supervisor_signal(fx->s, "orph", SIGKILL, false), 0);
        assert_true(exit_log_wait(&fx->exits, 1, 2000));
        assert_string_equal(fx->exits.name, "orph");
        assert_int_equal(fx->exits.status, -1);
        assert_int_equal(access(pidfile, F_OK), -1);
        fx->orphan = 0;
        free(pidfile);
        free(content);
}

static void test_stale_pid_files_removed(void **state)
{
        Fx *fx = *state;
        /* a process that is gone */
        pid_t gone = fork();
        assert_true(gone >= 0);
        if (gone == 0)
                _exit(0);
        assert_int_equal(waitpid(gone, NULL, 0), gone);
        struct {
                const char *file;
                char content[64];
                bool kept;
        } files[] = {
                {"gone.pid", "", false},
                {"reused.pid", "", false}, /* a live pid with another start time */
                {"garbage.pid", "not a pid\n", false},
                {"init.pid", "1 1\n", false},
                {".half.pid.tmp", "123", false},
                {"README", "not ours", true},
        };
        snprintf(files[0].content, sizeof(files[0].content), "%d 12345\n", (int)gone);
        snprintf(files[1].content, sizeof(files[1].content), "%d %llu\n", (int)getpid(),
                 tu_starttime(getpid()) + 1);
        fx->s = supervisor_free(fx->s);
        for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
                char *p = NULL;
                assert_true(asprintf(&p, "%s/%s", fx->pid_dir, files[i].file) > 0);
                assert_int_equal(tu_write_file(p, files[i].content), 0);
                free(p);
        }
        assert_int_equal(supervisor_new(fx->pid_dir, on_exit_cb, fx, &fx->s), 0);
        for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
                char *p = NULL;
                assert_true(asprintf(&p, "%s/%s", fx->pid_dir, files[i].file) > 0);
                assert_int_equal(access(p, F_OK) == 0, files[i].kept);
                free(p);
        }
        assert_false(supervisor_running(fx->s, "gone", NULL));
        assert_false(supervisor_running(fx->s, "reused", NULL));
        assert_false(supervisor_running(fx->s, "init", NULL));
        assert_int_equal(fx->exits.count, 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_exit_reported_within_a_short_time, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_sigterm_ignored_needs_sigkill, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_child_gets_clean_signal_state, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
                cmocka_unit_test_setup_teardown(test_log_captures_output_and_rotates, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_adoption_after_restart, setup, teardown),
                cmocka_unit_test_setup_teardown(test_adoption_of_a_stranger, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stale_pid_files_removed, setup, teardown),
        };
        return cmocka_run_group_tests_name("supervise", tests, NULL, NULL);
}
