/* Unit tests for c0re/backend_nixos_container.c, driving the fake nixos-container in
 * tests/fakes (a faithful copy of the real tool's interface, output and failure modes).
 * Each case has its own temp dir holding the fake's root, a flake and the daemon's run dir. */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "backend.h"
#include "config.h"
#include "testutil.h"

#ifndef HIVE_FAKES_DIR
#error "HIVE_FAKES_DIR must name tests/fakes in the source tree"
#endif
#define FAKE HIVE_FAKES_DIR "/nixos-container"

/* The fault switches of the fake (tests/fakes/README.md); cleared around every case. */
static const char *const fake_vars[] = {
        "FAKE_NIXOS_CONTAINER_FAIL_BUILD",
        "FAKE_NIXOS_CONTAINER_HANG_BUILD",
        "FAKE_NIXOS_CONTAINER_FAIL_START",
        "FAKE_NIXOS_CONTAINER_TIMEOUT_START",
        "FAKE_NIXOS_CONTAINER_HANG_START",
        "FAKE_NIXOS_CONTAINER_FAIL_STOP",
        "FAKE_NIXOS_CONTAINER_FAIL_RELOAD",
        "FAKE_NIXOS_CONTAINER_FAIL_NIX_ENV",
        "FAKE_NIXOS_CONTAINER_START_DELAY",
        "FAKE_NIXOS_CONTAINER_SKIP_FLAKE_CHECK",
        "NIX_CONFIG",
};

typedef struct Fx {
        char *dir;
        char fake_root[1024];
        char run_dir[1024];
        char flake[1024];
        char flake_b[1024];
        HiveConfig cfg;
        Backend *b;
        BackendAgent a;  /* h-a1 */
        BackendAgent a2; /* h-b2 */
} Fx;

static void clear_faults(void)
{
        for (size_t i = 0; i < sizeof(fake_vars) / sizeof(fake_vars[0]); i++)
                unsetenv(fake_vars[i]);
}

static int setup(void **state)
{
        Fx *fx = calloc(1, sizeof(*fx));
        assert_non_null(fx);
        fx->dir = tu_mkdtemp();
        clear_faults();
        snprintf(fx->fake_root, sizeof(fx->fake_root), "%s/fake", fx->dir);
        snprintf(fx->run_dir, sizeof(fx->run_dir), "%s/run", fx->dir);
        assert_int_equal(mkdir(fx->run_dir, 0751), 0);
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/meta", fx->dir);
        assert_int_equal(mkdir(path, 0755), 0);
        snprintf(path, sizeof(path), "%s/meta/flake.nix", fx->dir);
        assert_int_equal(tu_write_file(path, "{ outputs = { self }: { }; }\n"), 0);
        snprintf(fx->flake, sizeof(fx->flake), "%s/meta#a1", fx->dir);
        snprintf(fx->flake_b, sizeof(fx->flake_b), "%s/meta#b2", fx->dir);
        assert_int_equal(setenv("FAKE_NIXOS_CONTAINER_ROOT", fx->fake_root, 1), 0);

        fx->cfg = (HiveConfig){.nixos_container = FAKE,
                               .op_timeout = 30,
                               .state_dir = fx->dir,
                               .run_dir = fx->run_dir,
                               .backend = "nixos-container"};
        assert_int_equal(backend_new("nixos-container", &fx->cfg, NULL, NULL, &fx->b), 0);
        fx->a = (BackendAgent){.name = "a1", .machine = "h-a1", .flake = fx->flake};
        fx->a2 = (BackendAgent){.name = "b2", .machine = "h-b2", .flake = fx->flake_b};
        *state = fx;
        return 0;
}

static int teardown(void **state)
{
        Fx *fx = *state;
        backend_free(fx->b);
        clear_faults();
        unsetenv("FAKE_NIXOS_CONTAINER_ROOT");
        assert_int_equal(tu_rm_rf(fx->dir), 0);
        free(fx->dir);
        free(fx);
        return 0;
}

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool conf_exists(const Fx *fx, const char *machine)
{
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/etc/nixos-containers/%s.conf", fx->fake_root, machine);
        struct stat st;
        return stat(path, &st) == 0;
}

static ContainerState status_of(Fx *fx, const BackendAgent *a)
{
        ContainerState st = (ContainerState)-1;
        char *error = NULL;
        assert_int_equal(fx->b->ops->status(fx->b, a, &st, &error), 0);
        assert_null(error);
        return st;
}

/* Every line of invocations.log, parsed (a JSON array; the caller decrefs). */
static json_t *invocations(const Fx *fx)
{
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/invocations.log", fx->fake_root);
        char *text = tu_read_file(path, NULL);
        json_t *all = json_array();
        if (!text)
                return all;
        char *save = NULL;
        for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                json_error_t e;
                json_t *rec = json_loads(line, 0, &e);
                assert_non_null(rec);
                json_array_append_new(all, rec);
        }
        free(text);
        return all;
}

static const char *argv_at(json_t *rec, size_t i)
{
        return json_string_value(json_array_get(json_object_get(rec, "argv"), i));
}

/* How many invocations had action as argv[1]. */
static size_t count_calls(const Fx *fx, const char *action)
{
        json_t *all = invocations(fx);
        size_t n = 0, i;
        json_t *rec;
        json_array_foreach(all, i, rec)
        {
                const char *a = argv_at(rec, 1);
                n += a && strcmp(a, action) == 0;
        }
        json_decref(all);
        return n;
}

static void test_lifecycle(void **state)
{
        Fx *fx = *state;
        Backend *b = fx->b;
        assert_true(b->ops->isolated);
        assert_false(b->ops->supervised);
        char *error = NULL;

        assert_int_equal(b->ops->create(b, &fx->a, &error), 0);
        assert_null(error);
        assert_true(conf_exists(fx, "h-a1"));
        assert_int_equal(status_of(fx, &fx->a), CONTAINER_DOWN); /* create never starts */
        assert_int_equal(b->ops->start(b, &fx->a, &error), 0);
        assert_int_equal(status_of(fx, &fx->a), CONTAINER_UP);
        assert_int_equal(b->ops->start(b, &fx->a, &error), 0); /* already running: no-op */
        assert_int_equal(b->ops->stop(b, &fx->a, 5, &error), 0);
        assert_int_equal(status_of(fx, &fx->a), CONTAINER_DOWN);
        assert_int_equal(b->ops->stop(b, &fx->a, 5, &error), 0); /* stopped already: fine */
        assert_int_equal(b->ops->start(b, &fx->a, &error), 0);
        assert_int_equal(status_of(fx, &fx->a), CONTAINER_UP);
        assert_int_equal(b->ops->destroy(b, &fx->a, &error), 0); /* while running */
        assert_null(error);
        assert_false(conf_exists(fx, "h-a1"));
        assert_int_equal(status_of(fx, &fx->a), CONTAINER_GONE);
        assert_int_equal(b->ops->destroy(b, &fx->a, &error), 0); /* missing: 0 */
        assert_null(error);
}

static void test_list(void **state)
{
        Fx *fx = *state;
        Backend *b = fx->b;
        char **names = NULL;
        assert_int_equal(b->ops->list(b, &names, NULL), 0);
        assert_non_null(names);
        assert_null(names[0]);
        free(names);

        assert_int_equal(b->ops->create(b, &fx->a2, NULL), 0);
        assert_int_equal(b->ops->create(b, &fx->a, NULL), 0);
        assert_int_equal(b->ops->list(b, &names, NULL), 0);
        assert_string_equal(names[0], "h-a1"); /* glob order */
        assert_string_equal(names[1], "h-b2");
        assert_null(names[2]);
        for (char **n = names; *n; n++)
                free(*n);
        free(names);
}

static void test_create_existing_is_eexist_and_keeps_it(void **state)
{
        Fx *fx = *state;
        Backend *b = fx->b;
        char *error = NULL;
        assert_int_equal(b->ops->create(b, &fx->a, &error), 0);
        assert_int_equal(b->ops->start(b, &fx->a, &error), 0);
        assert_int_equal(b->ops->create(b, &fx->a, &error), -EEXIST);
        assert_string_equal(error, "creating h-a1 failed: container \xe2\x80\x98h-a1\xe2\x80\x99 "
                                   "already exists");
        free(error);
        /* The existing container is someone's: no cleanup ran. */
        assert_int_equal(count_calls(fx, "destroy"), 0);
        assert_true(conf_exists(fx, "h-a1"));
        assert_int_equal(status_of(fx, &fx->a), CONTAINER_UP);
}

static void test_failed_build_is_cleaned_up(void **state)
{
        Fx *fx = *state;
        Backend *b = fx->b;
        char *error = NULL;
        assert_int_equal(setenv("FAKE_NIXOS_CONTAINER_FAIL_BUILD", "h-a1", 1), 0);
        assert_int_equal(b->ops->create(b, &fx->a, &error), -EIO);
        char want[PATH_MAX * 2];
        snprintf(want, sizeof(want),
                 "creating h-a1 failed: failed to build container from flake '%s/meta' (error: "
                 "build failure injected by FAKE_NIXOS_CONTAINER_FAIL_BUILD)",
                 fx->dir);
        assert_string_equal(error, want);
        free(error);
        error = NULL;
        /* The tool left its .conf; the backend destroyed it. */
        assert_int_equal(count_calls(fx, "destroy"), 1);
        assert_false(conf_exists(fx, "h-a1"));
        assert_int_equal(status_of(fx, &fx->a), CONTAINER_GONE);

        /* Other containers are unaffected, and the name works once the flake builds. */
        assert_int_equal(b->ops->create(b, &fx->a2, &error), 0);
        unsetenv("FAKE_NIXOS_CONTAINER_FAIL_BUILD");
        assert_int_equal(b->ops->create(b, &fx->a, &error), 0);
        assert_null(error);
}

static void test_failed_nix_env_reports_the_tool(void **state)
{
        Fx *fx = *state;
        char *error = NULL;
        assert_int_equal(setenv("FAKE_NIXOS_CONTAINER_FAIL_NIX_ENV", "1", 1), 0);
        assert_int_equal(fx->b->ops->create(fx->b, &fx->a, &error), -EIO);
        assert_non_null(strstr(error, "creating h-a1 failed: failed to set initial container "
                                      "configuration"));
        free(error);
        assert_false(conf_exists(fx, "h-a1"));
}

/* A start that never returns: killed at op_timeout, with the whole process group. */
static void test_hung_start_times_out(void **state)
{
        Fx *fx = *state;
        Backend *b = fx->b;
        char *error = NULL;
        assert_int_equal(b->ops->create(b, &fx->a, &error), 0);
        fx->cfg.op_timeout = 2;
        assert_int_equal(setenv("FAKE_NIXOS_CONTAINER_HANG_START", "h-a1", 1), 0);
        double t0 = now_s();
        assert_int_equal(b->ops->start(b, &fx->a, &error), -ETIMEDOUT);
        double took = now_s() - t0;
        assert_true(took >= 1.9);
        assert_true(took < 6);
        assert_string_equal(error, "starting h-a1 timed out after 2 s (nixos-container was "
                                   "killed)");
        free(error);

        /* The fake that hung is gone (killed, not left to run on). */
        json_t *all = invocations(fx);
        json_t *last = json_array_get(all, json_array_size(all) - 1);
        assert_string_equal(argv_at(last, 1), "start");
        pid_t pid = (pid_t)json_integer_value(json_object_get(last, "pid"));
        json_decref(all);
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
        char *cmdline = tu_read_file(path, NULL); /* a reused pid would not be the fake */
        assert_true(!cmdline || !strstr(cmdline, "nixos-container"));
        free(cmdline);
}

static void test_systemd_start_timeout(void **state)
{
        Fx *fx = *state;
        Backend *b = fx->b;
        char *error = NULL;
        assert_int_equal(b->ops->create(b, &fx->a, &error), 0);
        assert_int_equal(setenv("FAKE_NIXOS_CONTAINER_TIMEOUT_START", "h-a1", 1), 0);
        assert_int_equal(b->ops->start(b, &fx->a, &error), -ETIMEDOUT);
        assert_string_equal(error, "starting h-a1 timed out: failed to start container (Job for "
                                   "container@h-a1.service failed because a timeout was "
                                   "exceeded.)");
        free(error);
        assert_int_equal(status_of(fx, &fx->a), CONTAINER_DOWN);
}

static void test_failed_start_quotes_the_tool(void **state)
{
        Fx *fx = *state;
        Backend *b = fx->b;
        char *error = NULL;
        assert_int_equal(b->ops->create(b, &fx->a, &error), 0);
        assert_int_equal(setenv("FAKE_NIXOS_CONTAINER_FAIL_START", "h-a1", 1), 0);
        assert_int_equal(b->ops->start(b, &fx->a, &error), -EIO);
        assert_string_equal(error, "starting h-a1 failed: failed to start container (Job for "
                                   "container@h-a1.service failed because the control process "
                                   "exited with error code.)");
        free(error);
        assert_int_equal(b->ops->start(b, &fx->a, NULL), -EIO); /* NULL ret_error is fine */
}

static void test_failed_stop_and_reload(void **state)
{
        Fx *fx = *state;
        Backend *b = fx->b;
        char *error = NULL;
        assert_int_equal(b->ops->create(b, &fx->a, &error), 0);
        assert_int_equal(b->ops->start(b, &fx->a, &error), 0);
        assert_int_equal(setenv("FAKE_NIXOS_CONTAINER_FAIL_STOP", "h-a1", 1), 0);
        assert_int_equal(b->ops->stop(b, &fx->a, 5, &error), -EIO);
        assert_string_equal(error, "stopping h-a1 failed: failed to stop container");
        free(error);
        error = NULL;
        assert_int_equal(setenv("FAKE_NIXOS_CONTAINER_FAIL_RELOAD", "h-a1", 1), 0);
        assert_int_equal(b->ops->update(b, &fx->a, &error), -EIO);
        assert_string_equal(error, "updating h-a1 failed: failed to reload container (Job for "
                                   "container@h-a1.service failed because the control process "
                                   "exited with error code.)");
        free(error);
}

static void test_missing_container(void **state)
{
        Fx *fx = *state;
        Backend *b = fx->b;
        char *error = NULL;
        assert_int_equal(b->ops->start(b, &fx->a, &error), -ENOENT);
        assert_string_equal(error, "starting h-a1 failed: container \xe2\x80\x98h-a1\xe2\x80\x99 "
                                   "does not exist");
        free(error);
        error = NULL;
        assert_int_equal(b->ops->stop(b, &fx->a, 5, &error), -ENOENT);
        free(error);
        error = NULL;
        assert_int_equal(b->ops->update(b, &fx->a, &error), -ENOENT);
        assert_non_null(strstr(error, "updating h-a1 failed: "));
        free(error);
        error = NULL;
        char *const argv[] = {"true", NULL};
        BackendRun run = {.status = 99};
        assert_int_equal(b->ops->run(b, &fx->a, argv, &run, &error), -ENOENT);
        assert_non_null(strstr(error, "running a command in h-a1 failed: "));
        assert_int_equal(run.status, 99);
        free(error);
        error = NULL;
        assert_int_equal(b->ops->destroy(b, &fx->a, &error), 0);
        assert_int_equal(status_of(fx, &fx->a), CONTAINER_GONE);
}

static void test_update_and_invocations(void **state)
{
        Fx *fx = *state;
        Backend *b = fx->b;
        /* A stale call directory of a daemon that died mid-call, with its ./.tmp link. */
        char stale[2048], link[PATH_MAX];
        snprintf(stale, sizeof(stale), "%s/nixos-container/hive-stale", fx->run_dir);
        assert_int_equal(mkdir(stale, 0700), 0);
        snprintf(link, sizeof(link), "%s/.tmp", stale);
        assert_int_equal(symlink(fx->dir, link), 0);
        backend_free(fx->b);
        assert_int_equal(setenv("NIX_CONFIG", "substituters = https://x.invalid", 1), 0);
        assert_int_equal(backend_new("nixos-container", &fx->cfg, NULL, NULL, &fx->b), 0);
        b = fx->b;
        struct stat st;
        assert_int_equal(lstat(stale, &st), -1);
        assert_int_equal(lstat(fx->dir, &st), 0);

        char *error = NULL;
        assert_int_equal(b->ops->create(b, &fx->a, &error), 0);
        assert_int_equal(b->ops->start(b, &fx->a, &error), 0);
        assert_int_equal(b->ops->update(b, &fx->a, &error), 0);
        assert_int_equal(status_of(fx, &fx->a), CONTAINER_UP);
        char **names = NULL;
        assert_int_equal(b->ops->list(b, &names, &error), 0);
        for (char **n = names; *n; n++)
                free(*n);
        free(names);
        assert_int_equal(b->ops->stop(b, &fx->a, 5, &error), 0);
        assert_int_equal(b->ops->destroy(b, &fx->a, &error), 0);
        assert_null(error);

        json_t *all = invocations(fx);
        assert_int_equal(json_array_size(all), 7);
        const char *want_actions[] = {"create", "start", "update", "status",
                                      "list",   "stop",  "destroy"};
        size_t i;
        json_t *rec;
        json_array_foreach(all, i, rec)
        {
                assert_string_equal(argv_at(rec, 0), FAKE);
                assert_string_equal(argv_at(rec, 1), want_actions[i]);
                const char *cwd = json_string_value(json_object_get(rec, "cwd"));
                /* A fresh directory under the run dir, gone afterwards. */
                assert_non_null(cwd);
                assert_int_equal(strncmp(cwd, fx->run_dir, strlen(fx->run_dir)), 0);
                assert_int_equal(lstat(cwd, &st), -1);
                for (size_t j = 0; j < i; j++)
                        assert_string_not_equal(cwd, json_string_value(json_object_get(
                                                             json_array_get(all, j), "cwd")));
                json_t *env = json_object_get(rec, "env");
                assert_string_equal(json_string_value(json_object_get(env, "HOME")), cwd);
                assert_string_equal(json_string_value(json_object_get(env, "XDG_CACHE_HOME")), cwd);
                assert_string_equal(json_string_value(json_object_get(env, "NIX_CONFIG")),
                                    "substituters = https://x.invalid\n"
                                    "experimental-features = nix-command flakes");
                assert_string_equal(
                        json_string_value(json_object_get(env, "FAKE_NIXOS_CONTAINER_ROOT")),
                        fx->fake_root);
                if (strcmp(want_actions[i], "create") == 0 ||
                    strcmp(want_actions[i], "update") == 0) {
                        assert_int_equal(json_array_size(json_object_get(rec, "argv")), 5);
                        assert_string_equal(argv_at(rec, 2), "h-a1");
                        assert_string_equal(argv_at(rec, 3), "--flake");
                        assert_string_equal(argv_at(rec, 4), fx->flake);
                }
        }
        json_decref(all);

        /* Nothing is left in the directory of call directories. */
        char parent[PATH_MAX];
        snprintf(parent, sizeof(parent), "%s/nixos-container", fx->run_dir);
        assert_int_equal(rmdir(parent), 0);
}

static void test_run_passes_exit_codes_and_args(void **state)
{
        Fx *fx = *state;
        Backend *b = fx->b;
        char *error = NULL;
        assert_int_equal(b->ops->create(b, &fx->a, &error), 0);
        assert_int_equal(b->ops->start(b, &fx->a, &error), 0);

        char *const fail[] = {"sh", "-c", "echo out; echo err >&2; exit 7", NULL};
        BackendRun run = {0};
        assert_int_equal(b->ops->run(b, &fx->a, fail, &run, &error), 0);
        assert_int_equal(run.status, 7);
        assert_string_equal(run.out, "out\n");
        assert_string_equal(run.err, "err\n");
        backend_run_done(&run);

        /* Arguments arrive unsplit, and the command's own flags are not the tool's. */
        char *const args[] = {"printf", "%s|", "a b", "it's", "-l", NULL};
        assert_int_equal(b->ops->run(b, &fx->a, args, &run, &error), 0);
        assert_int_equal(run.status, 0);
        assert_string_equal(run.out, "a b|it's|-l|");
        backend_run_done(&run);

        char *const none[] = {NULL};
        assert_int_equal(b->ops->run(b, &fx->a, none, &run, &error), -EINVAL);
        free(error);
        error = NULL;

        /* Not running: the tool's failure, not the command's exit code. */
        assert_int_equal(b->ops->stop(b, &fx->a, 5, &error), 0);
        run = (BackendRun){.status = 99};
        assert_int_equal(b->ops->run(b, &fx->a, fail, &run, &error), -EIO);
        assert_string_equal(error, "running a command in h-a1 failed: unable to get container's "
                                   "main PID (Could not get path to machine: No machine 'h-a1' "
                                   "known)");
        assert_int_equal(run.status, 99);
        assert_null(run.out);
        free(error);
}

static void test_missing_program(void **state)
{
        Fx *fx = *state;
        char prog[PATH_MAX];
        snprintf(prog, sizeof(prog), "%s/no-such-nixos-container", fx->dir);
        fx->cfg.nixos_container = prog;
        backend_free(fx->b);
        assert_int_equal(backend_new("nixos-container", &fx->cfg, NULL, NULL, &fx->b), 0);
        char *error = NULL;
        assert_int_equal(fx->b->ops->create(fx->b, &fx->a, &error), -ENOENT);
        char want[PATH_MAX * 2];
        snprintf(want, sizeof(want),
                 "creating h-a1 failed: cannot run %s: No such file or directory (is "
                 "nixos-container installed? --nixos-container names the program)",
                 prog);
        assert_string_equal(error, want);
        free(error);
        error = NULL;
        ContainerState st = CONTAINER_UP;
        assert_int_equal(fx->b->ops->status(fx->b, &fx->a, &st, &error), -ENOENT);
        assert_non_null(strstr(error, "querying the status of h-a1 failed: cannot run "));
        assert_int_equal(st, CONTAINER_UP);
        free(error);
        error = NULL;
        char **names = NULL;
        assert_int_equal(fx->b->ops->list(fx->b, &names, &error), -ENOENT);
        assert_null(names);
        free(error);

        /* On PATH by name: the same. */
        fx->cfg.nixos_container = "hive-no-such-nixos-container";
        backend_free(fx->b);
        assert_int_equal(backend_new("nixos-container", &fx->cfg, NULL, NULL, &fx->b), 0);
        error = NULL;
        assert_int_equal(fx->b->ops->start(fx->b, &fx->a, &error), -ENOENT);
        assert_non_null(strstr(error, "cannot run hive-no-such-nixos-container: "));
        free(error);
        fx->cfg.nixos_container = FAKE;
}

static void test_flake_must_be_absolute_with_attr(void **state)
{
        Fx *fx = *state;
        const char *bad[] = {"meta#a1", "./meta#a1", "/abs/meta", "/abs/meta#", NULL, ""};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                BackendAgent a = fx->a;
                a.flake = bad[i];
                char *error = NULL;
                assert_int_equal(fx->b->ops->create(fx->b, &a, &error), -EINVAL);
                assert_non_null(strstr(error, "creating h-a1 failed: the flake reference"));
                free(error);
                error = NULL;
                assert_int_equal(fx->b->ops->update(fx->b, &a, &error), -EINVAL);
                free(error);
        }
        assert_int_equal(count_calls(fx, "create") + count_calls(fx, "update"), 0);
        BackendAgent a = fx->a;
        a.flake = "path:/nonexistent/meta#a1"; /* a URL-like ref is absolute */
        assert_int_equal(setenv("FAKE_NIXOS_CONTAINER_SKIP_FLAKE_CHECK", "1", 1), 0);
        assert_int_equal(fx->b->ops->create(fx->b, &a, NULL), 0);
}

static void test_logs(void **state)
{
        Fx *fx = *state;
        char bin[1024], script[PATH_MAX], empty[1024];
        snprintf(bin, sizeof(bin), "%s/bin", fx->dir);
        snprintf(empty, sizeof(empty), "%s/empty", fx->dir);
        assert_int_equal(mkdir(bin, 0755), 0);
        assert_int_equal(mkdir(empty, 0755), 0);
        snprintf(script, sizeof(script), "%s/journalctl", bin);
        assert_int_equal(tu_write_file(script, "#!/bin/sh\nprintf '%s\\n' \"$@\"\n"
                                               "[ -z \"$JFAIL\" ] || exit 1\n"),
                         0);
        assert_int_equal(chmod(script, 0755), 0);
        const char *old = getenv("PATH");
        char *saved = strdup(old ? old : "/usr/bin:/bin");

        assert_int_equal(setenv("PATH", bin, 1), 0);
        char *text = NULL;
        assert_int_equal(fx->b->ops->logs(fx->b, &fx->a, 5, &text), 0);
        assert_string_equal(text, "-u\ncontainer@h-a1.service\n-n\n5\n-o\ncat\n--no-pager\n");
        free(text);

        assert_int_equal(setenv("JFAIL", "1", 1), 0); /* a failing journalctl: "" */
        text = NULL;
        assert_int_equal(fx->b->ops->logs(fx->b, &fx->a, 5, &text), 0);
        assert_string_equal(text, "");
        free(text);
        unsetenv("JFAIL");

        assert_int_equal(setenv("PATH", empty, 1), 0); /* no journalctl: "" */
        text = NULL;
        assert_int_equal(fx->b->ops->logs(fx->b, &fx->a, 5, &text), 0);
        assert_string_equal(text, "");
        free(text);

        assert_int_equal(setenv("PATH", saved, 1), 0);
        free(saved);
}

typedef struct Job {
        Fx *fx;
        const BackendAgent *a;
        int r;
} Job;

static void *create_and_start(void *p)
{
        Job *j = p;
        Backend *b = j->fx->b;
        j->r = b->ops->create(b, j->a, NULL);
        if (j->r == 0)
                j->r = b->ops->start(b, j->a, NULL);
        return NULL;
}

/* Different containers from different threads at once (the caller serializes per name). */
static void test_two_containers_at_once(void **state)
{
        Fx *fx = *state;
        pthread_t t[2];
        Job j[2] = {{.fx = fx, .a = &fx->a}, {.fx = fx, .a = &fx->a2}};
        for (int i = 0; i < 2; i++)
                assert_int_equal(pthread_create(&t[i], NULL, create_and_start, &j[i]), 0);
        for (int i = 0; i < 2; i++) {
                assert_int_equal(pthread_join(t[i], NULL), 0);
                assert_int_equal(j[i].r, 0);
        }
        assert_int_equal(status_of(fx, &fx->a), CONTAINER_UP);
        assert_int_equal(status_of(fx, &fx->a2), CONTAINER_UP);
        /* Each booted its own attribute (no ./.tmp shared between the two builds). */
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/run/units/container@h-a1.service", fx->fake_root);
        char *unit = tu_read_file(path, NULL);
        assert_non_null(strstr(unit, "nixos-system-a1-"));
        free(unit);
        snprintf(path, sizeof(path), "%s/run/units/container@h-b2.service", fx->fake_root);
        unit = tu_read_file(path, NULL);
        assert_non_null(strstr(unit, "nixos-system-b2-"));
        free(unit);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
                T(test_lifecycle),
                T(test_list),
                T(test_create_existing_is_eexist_and_keeps_it),
                T(test_failed_build_is_cleaned_up),
                T(test_failed_nix_env_reports_the_tool),
                T(test_hung_start_times_out),
                T(test_systemd_start_timeout),
                T(test_failed_start_quotes_the_tool),
                T(test_failed_stop_and_reload),
                T(test_missing_container),
                T(test_update_and_invocations),
                T(test_run_passes_exit_codes_and_args),
                T(test_missing_program),
                T(test_flake_must_be_absolute_with_attr),
                T(test_logs),
                T(test_two_containers_at_once),
#undef T
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
