/* Unit tests for c0re/backend_nspawn.c with the real systemd-nspawn (as root; skipped
 * otherwise): the root skeleton, isolation of the payload, its environment, run inside the
 * container, stop of payloads that trap or ignore SIGTERM, exit callbacks, the manager's
 * extra mounts. */
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

static bool nspawn_usable(void)
{
        const char *why = NULL;
        HiveConfig cfg = {0};
        return backend_available(&cfg, "nspawn", &why);
}

static int setup(void **state)
{
        Fx *fx = calloc(1, sizeof(*fx));
        assert_non_null(fx);
        fx->dir = tu_mkdtemp();
        fx->cfg.state_dir = path_in(fx->dir, "state");
        fx->cfg.run_dir = path_in(fx->dir, "run");
        fx->cfg.op_timeout = 10;
        fx->cfg.stop_grace = 1;
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
        assert_int_equal(backend_new("nspawn", &fx->cfg, on_exit_cb, fx, &fx->b), 0);
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

static void create_and_start(Fx *fx, const char *command)
{
        fx->cfg.agent_command = strdup(command);
        char *err = NULL;
        expect_ok(fx->b->ops->create(fx->b, &fx->a, &err), err);
        expect_ok(fx->b->ops->start(fx->b, &fx->a, &err), err);
        assert_int_equal(state_of(fx), CONTAINER_UP);
}

/* The host pid of the container's PID 1: the child of nspawn (recorded in the pid file)
 * whose innermost pid is 1. */
static pid_t payload_host_pid(Fx *fx)
{
        char *pidfile = path_in(fx->pid_dir, "a1.pid");
        char *text = tu_read_file(pidfile, NULL);
        assert_non_null(text);
        int nspawn = atoi(text);
        free(text);
        free(pidfile);
        char path[96];
        snprintf(path, sizeof(path), "/proc/%d/task/%d/children", nspawn, nspawn);
        char *kids = tu_read_file(path, NULL);
        assert_non_null(kids);
        pid_t found = 0;
        for (char *t = strtok(kids, " \n"); t && !found; t = strtok(NULL, " \n")) {
                snprintf(path, sizeof(path), "/proc/%s/status", t);
                char *status = tu_read_file(path, NULL);
                char *ns = status ? strstr(status, "NSpid:") : NULL;
                char *eol = ns ? strchr(ns, '\n') : NULL;
                if (eol && eol - ns > 3 && strncmp(eol - 2, "\t1", 2) == 0)
                        found = (pid_t)atoi(t);
                free(status);
        }
        free(kids);
        assert_true(found > 1);
        return found;
}

static void test_create_builds_root_and_refuses(void **state)
{
        if (!nspawn_usable())
                skip();
        Fx *fx = *state;
        const Backend *b = fx->b;
        assert_true(b->ops->isolated);
        assert_true(b->ops->supervised);
        fx->cfg.agent_command = strdup("exec sleep 100");
        char *err = NULL;
        expect_ok(b->ops->create(fx->b, &fx->a, &err), err);
        assert_int_equal(state_of(fx), CONTAINER_DOWN);
        char *root = path_in(fx->cfg.state_dir, "containers/h-a1/root");
        struct {
                const char *path;
                mode_t type;
                mode_t mode; /* 0: any */
        } entries[] = {
                {"usr", S_IFDIR, 0755},        {"bin", S_IFLNK, 0},
                {"lib", S_IFLNK, 0},           {"sbin", S_IFLNK, 0},
                {"etc/passwd", S_IFREG, 0644}, {"etc/group", S_IFREG, 0644},
                {"etc/hosts", S_IFREG, 0644},  {"state", S_IFDIR, 0755},
                {"run/hive", S_IFDIR, 0755},   {"opt/hive/bin", S_IFDIR, 0755},
                {"tmp", S_IFDIR, 01777},
        };
        for (size_t i = 0; i < sizeof(entries) / sizeof(entries[0]); i++) {
                char *p = path_in(root, entries[i].path);
                struct stat st;
                assert_int_equal(lstat(p, &st), 0);
                assert_int_equal(st.st_mode & S_IFMT, entries[i].type);
                if (entries[i].mode)
                        assert_int_equal(st.st_mode & 07777, entries[i].mode);
                free(p);
        }
        char *p = path_in(root, "bin");
        char target[64] = "";
        assert_true(readlink(p, target, sizeof(target) - 1) > 0);
        assert_string_equal(target, "usr/bin");
        free(p);
        p = path_in(root, "lib64");
        struct stat st;
        assert_int_equal(lstat(p, &st) == 0, access("/usr/lib64", F_OK) == 0);
        free(p);
        p = path_in(root, "etc/hostname");
        char *text = tu_read_file(p, NULL);
        assert_string_equal(text, "h-a1\n");
        free(text);
        free(p);
        p = path_in(root, "etc/passwd");
        text = tu_read_file(p, NULL);
        assert_non_null(strstr(text, "root:x:0:0:"));
        assert_non_null(strstr(text, "nobody:x:65534:"));
        free(text);
        free(p);
        free(root);

        assert_int_equal(b->ops->create(fx->b, &fx->a, &err), -EEXIST);
        assert_non_null(strstr(err, "h-a1"));
        free(err);
        err = NULL;
        expect_ok(b->ops->destroy(fx->b, &fx->a, &err), err);
        assert_int_equal(state_of(fx), CONTAINER_GONE);
        char *rec = path_in(fx->cfg.state_dir, "containers/h-a1");
        assert_int_equal(access(rec, F_OK), -1);

        /* no payload: -ENOEXEC and nothing left behind */
        free(fx->cfg.agent_command);
        fx->cfg.agent_command = NULL;
        char *old = strdup(getenv("PATH"));
        assert_int_equal(setenv("PATH", fx->dir, 1), 0);
        int r = b->ops->create(fx->b, &fx->a, &err);
        assert_int_equal(setenv("PATH", old, 1), 0);
        free(old);
        assert_int_equal(r, -ENOEXEC);
        assert_non_null(strstr(err, "hive-ag3nt"));
        free(err);
        assert_int_equal(access(rec, F_OK), -1);
        assert_int_equal(errno, ENOENT);
        free(rec);
}

static void test_isolation_environment_run_and_graceful_stop(void **state)
{
        if (!nspawn_usable())
                skip();
        Fx *fx = *state;
        char *cmd = NULL;
        assert_true(asprintf(&cmd,
                             "trap 'sleep 0.3; echo done > /state/term; exit 0' TERM; "
                             "echo payload-up; echo $$ > /state/pid; "
                             "touch /usr/hive-probe 2>/dev/null && echo rw > /state/usr || "
                             "echo ro > /state/usr; "
                             "for p in /work /root/.bashrc %s /etc/shadow; do "
                             "[ -e $p ] && echo $p; done > /state/seen; "
                             "env > /state/env.tmp; mv /state/env.tmp /state/env; "
                             "sleep 1000 & wait",
                             fx->dir) > 0);
        create_and_start(fx, cmd);
        free(cmd);
        const BackendAgent *a = &fx->a;
        char *env_path = path_in(a->state_dir, "env");
        assert_true(tu_wait_file(env_path, "HIVE_LABEL", 5000));
        char *text = path_in(a->state_dir, "pid");
        char *pid = tu_read_file(text, NULL);
        free(text);
        assert_string_equal(pid, "1\n"); /* PID 1 of its own namespace */
        free(pid);
        text = path_in(a->state_dir, "usr");
        char *usr = tu_read_file(text, NULL);
        free(text);
        assert_string_equal(usr, "ro\n");
        free(usr);
        text = path_in(a->state_dir, "seen");
        char *seen = tu_read_file(text, NULL);
        free(text);
        assert_string_equal(seen, ""); /* no host path is visible */
        free(seen);
        char *env = tu_read_file(env_path, NULL);
        free(env_path);
        const char *want[] = {"\nHIVE_LABEL=a1\n", "\nHIVE_SOCKET=/run/hive/mcp.sock\n",
                              "\nHIVE_PORT=8123\n", "\nHIVE_STATE_DIR=/state\n", "\nHOME=/state\n"};
        for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
                if (!strstr(env, want[i])) {
                        fprintf(stderr, "missing %s in:\n%s", want[i], env);
                        fail();
                }
        free(env);

        /* run enters the container: its files, its PID namespace, its environment */
        BackendRun run = {0};
        char *err = NULL;
        char *const argv[] = {"/bin/sh", "-c",
                              "cat /state/pid; echo $HIVE_LABEL; hostname; "
                              "[ -e /work ] && echo host-visible; echo oops >&2; exit 4",
                              NULL};
        expect_ok(fx->b->ops->run(fx->b, a, argv, &run, &err), err);
        assert_int_equal(run.status, 4);
        assert_string_equal(run.out, "1\na1\nh-a1\n");
        assert_string_equal(run.err, "oops\n");
        backend_run_done(&run);

        char *logs = NULL;
        assert_int_equal(fx->b->ops->logs(fx->b, a, 50, &logs), 0);
        assert_non_null(strstr(logs, "payload-up\n"));
        free(logs);

        /* the payload traps SIGTERM: it gets to finish, and the stop does not wait for the
         * grace period */
        int64_t t0 = tu_now_ms();
        expect_ok(fx->b->ops->stop(fx->b, a, 10, &err), err);
        int64_t took = tu_now_ms() - t0;
        assert_true(took < 5000);
        char *term = path_in(a->state_dir, "term");
        char *done = tu_read_file(term, NULL);
        assert_string_equal(done, "done\n");
        free(done);
        free(term);
        assert_int_equal(state_of(fx), CONTAINER_DOWN);
        assert_true(exit_log_wait(&fx->exits, 1, 2000));
        assert_string_equal(fx->exits.name, "a1");

        assert_int_equal(fx->b->ops->run(fx->b, a, argv, &run, &err), -ESRCH);
        assert_non_null(strstr(err, "not running"));
        free(err);
        err = NULL;
        expect_ok(fx->b->ops->destroy(fx->b, a, &err), err);
        assert_int_equal(state_of(fx), CONTAINER_GONE);
}

static void test_stop_of_payload_ignoring_sigterm(void **state)
{
        if (!nspawn_usable())
                skip();
        Fx *fx = *state;
        create_and_start(fx, "trap '' TERM; echo ready; exec sleep 1000");
        assert_true(tu_wait_file(fx->a.log_path, "ready", 5000));
        int64_t t0 = tu_now_ms();
        char *err = NULL;
        expect_ok(fx->b->ops->stop(fx->b, &fx->a, 1, &err), err);
        int64_t took = tu_now_ms() - t0;
        assert_true(took >= 1000); /* the grace was given */
        assert_true(took < 4000);  /* then the second SIGTERM ended it at once */
        assert_int_equal(state_of(fx), CONTAINER_DOWN);
}

static void test_exit_callback_on_kill9_of_payload(void **state)
{
        if (!nspawn_usable())
                skip();
        Fx *fx = *state;
        create_and_start(fx, "echo ready; exec sleep 1000");
        assert_true(tu_wait_file(fx->a.log_path, "ready", 5000));
        pid_t pid = payload_host_pid(fx);
        int64_t t0 = tu_now_ms();
        assert_int_equal(kill(pid, SIGKILL), 0);
        assert_true(exit_log_wait(&fx->exits, 1, 3000));
        assert_true(tu_now_ms() - t0 < 2000);
        assert_string_equal(fx->exits.name, "a1");
        assert_int_equal(state_of(fx), CONTAINER_DOWN);
}

static void test_payload_exiting_at_once_fails_start(void **state)
{
        if (!nspawn_usable())
                skip();
        Fx *fx = *state;
        fx->cfg.agent_command = strdup("echo boom-line-1; echo boom-line-2 >&2; exit 7");
        char *err = NULL;
        expect_ok(fx->b->ops->create(fx->b, &fx->a, &err), err);
        assert_int_equal(fx->b->ops->start(fx->b, &fx->a, &err), -EIO);
        assert_non_null(err);
        assert_non_null(strstr(err, "h-a1"));
        assert_non_null(strstr(err, "status 7"));
        assert_non_null(strstr(err, "boom-line-2"));
        free(err);
        assert_int_equal(state_of(fx), CONTAINER_DOWN);
}

/* What a payload sees of the manager's mounts, as "/agents=rw /applied=EROFS ...": rw when a
 * file could be created there, the errno's name when not, missing when the path is not there.
 * Also copies /meta/flake.nix (when there) to /state/flake. */
#define MOUNTS_PROBE                                                                               \
        "exec /usr/bin/python3 -c '\n"                                                             \
        "import errno, os, signal, time\n"                                                         \
        "signal.signal(signal.SIGTERM, lambda *_: os._exit(0))\n"                                  \
        "def probe(d):\n"                                                                          \
        "    if not os.path.lexists(d):\n"                                                         \
        "        return \"missing\"\n"                                                             \
        "    try:\n"                                                                               \
        "        open(d + \"/written-by-\" + os.environ[\"HIVE_LABEL\"], \"w\").close()\n"         \
        "        return \"rw\"\n"                                                                  \
        "    except OSError as e:\n"                                                               \
        "        return errno.errorcode.get(e.errno, str(e.errno))\n"                              \
        "seen = \" \".join(d + \"=\" + probe(d) for d in (\"/agents\", \"/applied\", "             \
        "\"/meta\"))\n"                                                                            \
        "if os.path.exists(\"/meta/flake.nix\"):\n"                                                \
        "    open(\"/state/flake\", \"w\").write(open(\"/meta/flake.nix\").read())\n"              \
        "open(\"/state/mounts.tmp\", \"w\").write(seen + \"\\n\")\n"                               \
        "os.rename(\"/state/mounts.tmp\", \"/state/mounts\")\n"                                    \
        "time.sleep(1000)\n"                                                                       \
        "'"

static void test_manager_sees_config_repos(void **state)
{
        if (!nspawn_usable())
                skip();
        Fx *fx = *state;
        fx->cfg.agent_command = strdup(MOUNTS_PROBE);
        BackendAgent m = {
                .name = "hm1nd",
                .machine = "hm1nd",
                .manager = true,
                .port = 8000,
                .state_dir = path_in(fx->cfg.state_dir, "agents/hm1nd/state"),
                .sock_dir = path_in(fx->cfg.run_dir, "manager"),
                .log_path = path_in(fx->cfg.state_dir, "agents/hm1nd/console.log"),
        };
        /* the meta flake exists already; applied/ and agents/ are created by start */
        char *meta = path_in(fx->cfg.state_dir, "meta");
        char *flake = path_in(meta, "flake.nix");
        assert_int_equal(mkdir(fx->cfg.state_dir, 0755), 0);
        assert_int_equal(mkdir(meta, 0755), 0);
        assert_int_equal(tu_write_file(flake, "{ outputs = _: { }; }\n"), 0);

        char *err = NULL;
        expect_ok(fx->b->ops->create(fx->b, &m, &err), err);
        expect_ok(fx->b->ops->create(fx->b, &fx->a, &err), err);
        expect_ok(fx->b->ops->start(fx->b, &m, &err), err);
        expect_ok(fx->b->ops->start(fx->b, &fx->a, &err), err);

        const char *host_dirs[] = {"agents", "applied", "meta"};
        for (size_t i = 0; i < sizeof(host_dirs) / sizeof(host_dirs[0]); i++) {
                char *p = path_in(fx->cfg.state_dir, host_dirs[i]);
                struct stat st;
                assert_int_equal(stat(p, &st), 0);
                assert_true(S_ISDIR(st.st_mode));
                assert_int_equal(st.st_mode & 07777, 0755);
                free(p);
        }

        /* the manager writes /agents (seen on the host), cannot write /applied or /meta */
        char *mounts = path_in(m.state_dir, "mounts");
        if (!tu_wait_file(mounts, "\n", 5000)) {
                char *log = tu_read_file(m.log_path, NULL);
                fprintf(stderr, "no %s; the manager's log:\n%s", mounts, log ? log : "");
                free(log);
                fail();
        }
        char *text = tu_read_file(mounts, NULL);
        assert_string_equal(text, "/agents=rw /applied=EROFS /meta=EROFS\n");
        free(text);
        free(mounts);
        char *written = path_in(fx->cfg.state_dir, "agents/written-by-hm1nd");
        assert_int_equal(access(written, F_OK), 0);
        free(written);
        char *copy = path_in(m.state_dir, "flake");
        text = tu_read_file(copy, NULL);
        assert_string_equal(text, "{ outputs = _: { }; }\n");
        free(text);
        free(copy);
        written = path_in(meta, "written-by-hm1nd");
        assert_int_equal(access(written, F_OK), -1);
        free(written);

        /* a sub-agent sees none of them, and its root has no mount points for them */
        mounts = path_in(fx->a.state_dir, "mounts");
        assert_true(tu_wait_file(mounts, "\n", 5000));
        text = tu_read_file(mounts, NULL);
        assert_string_equal(text, "/agents=missing /applied=missing /meta=missing\n");
        free(text);
        free(mounts);
        char *root = path_in(fx->cfg.state_dir, "containers/h-a1/root/agents");
        assert_int_equal(access(root, F_OK), -1);
        free(root);

        expect_ok(fx->b->ops->stop(fx->b, &m, 5, &err), err);
        expect_ok(fx->b->ops->destroy(fx->b, &m, &err), err);
        expect_ok(fx->b->ops->destroy(fx->b, &fx->a, &err), err);
        /* destroy never touches the repos */
        assert_int_equal(access(flake, F_OK), 0);
        free((char *)m.state_dir);
        free((char *)m.sock_dir);
        free((char *)m.log_path);
        free(flake);
        free(meta);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_create_builds_root_and_refuses, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_isolation_environment_run_and_graceful_stop,
                                                setup, teardown),
                cmocka_unit_test_setup_teardown(test_stop_of_payload_ignoring_sigterm, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_exit_callback_on_kill9_of_payload, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_payload_exiting_at_once_fails_start, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_manager_sees_config_repos, setup, teardown),
        };
        int r = cmocka_run_group_tests_name("backend-nspawn", tests, NULL, NULL);
        if (r == 0 && !nspawn_usable()) {
                const char *why = NULL;
                HiveConfig cfg = {0};
                (void)backend_available(&cfg, "nspawn", &why);
                fprintf(stderr, "skipped: %s\n", why);
                return 77; /* meson: skipped */
        }
        return r;
}
