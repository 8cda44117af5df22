/* Unit tests of the option table (c0re/config.c).  Each case runs in a fresh temp dir as its
 * working directory, so that --dev paths are predictable. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "testutil.h"

typedef struct Fixture {
        char *old_cwd;
        char *dir; /* the temp dir, as getcwd() spells it */
        HiveConfig cfg;
} Fixture;

static int setup(void **state)
{
        Fixture *fx = calloc(1, sizeof(*fx));
        assert_non_null(fx);
        fx->old_cwd = getcwd(NULL, 0);
        assert_non_null(fx->old_cwd);
        char *tmp = tu_mkdtemp();
        assert_int_equal(chdir(tmp), 0);
        free(tmp);
        fx->dir = getcwd(NULL, 0);
        assert_non_null(fx->dir);
        *state = fx;
        return 0;
}

static int teardown(void **state)
{
        Fixture *fx = *state;
        config_done(&fx->cfg);
        assert_int_equal(chdir(fx->old_cwd), 0);
        assert_int_equal(tu_rm_rf(fx->dir), 0);
        free(fx->old_cwd);
        free(fx->dir);
        free(fx);
        return 0;
}

/* Runs config_parse() on "serve" followed by the NULL-terminated arguments.  The previous
 * configuration of the fixture is released first. */
static int parse_args(Fixture *fx, ...)
{
        char *argv[32] = {"serve"};
        int argc = 1;
        va_list ap;
        va_start(ap, fx);
        const char *a;
        while ((a = va_arg(ap, const char *))) {
                assert_true(argc < 31);
                argv[argc++] = (char *)a;
        }
        va_end(ap);
        config_done(&fx->cfg);
        return config_parse(&fx->cfg, argc, argv);
}

#define PARSE(fx, ...) parse_args(fx, ##__VA_ARGS__, (const char *)NULL)

static char *path_in(const Fixture *fx, const char *rel)
{
        char *p = NULL;
        if (asprintf(&p, "%s/%s", fx->dir, rel) < 0)
                abort();
        return p;
}

static void test_defaults(void **state)
{
        Fixture *fx = *state;
        HiveConfig *c = &fx->cfg;
        assert_int_equal(PARSE(fx), 0);
        assert_false(c->dev);
        assert_false(c->check_config);
        assert_string_equal(c->state_dir, "/var/lib/hyperhive");
        assert_string_equal(c->run_dir, "/run/hyperhive");
        assert_string_equal(c->backend, "auto");
        assert_string_equal(c->dashboard, "127.0.0.1:7000");
        assert_string_equal(c->log_level, "info");
        assert_null(c->domain);
        assert_null(c->home_url);
        assert_null(c->forge_url);
        assert_null(c->matrix_url);
        assert_int_equal(c->max_clients, 512);
        assert_int_equal(c->idle_timeout, 30);

        assert_int_equal(config_finalize(c), 0);
        assert_string_equal(c->state_dir, "/var/lib/hyperhive");
        assert_string_equal(c->run_dir, "/run/hyperhive");
        assert_null(c->home_url);
        char *sock = config_host_socket(c);
        assert_string_equal(sock, "/run/hyperhive/host.sock");
        free(sock);
}

static void test_dev_defaults(void **state)
{
        Fixture *fx = *state;
        HiveConfig *c = &fx->cfg;
        assert_int_equal(PARSE(fx, "--dev"), 0);
        assert_true(c->dev);
        assert_string_equal(c->state_dir, "./.hive");
        assert_string_equal(c->run_dir, "<state-dir>/run");
        assert_int_equal(config_finalize(c), 0);
        char *sdir = path_in(fx, ".hive"), *run = path_in(fx, ".hive/run");
        assert_string_equal(c->state_dir, sdir);
        assert_string_equal(c->run_dir, run);
        free(sdir);
        free(run);
}

/* --dev changes the defaults wherever it stands on the command line. */
static void test_dev_anywhere(void **state)
{
        Fixture *fx = *state;
        HiveConfig *c = &fx->cfg;
        assert_int_equal(PARSE(fx, "--log-level", "debug", "--backend=process", "--dev"), 0);
        assert_true(c->dev);
        assert_string_equal(c->log_level, "debug");
        assert_string_equal(c->backend, "process");
        assert_string_equal(c->state_dir, "./.hive");
}

static void test_dev_state_dir(void **state)
{
        Fixture *fx = *state;
        HiveConfig *c = &fx->cfg;
        assert_int_equal(PARSE(fx, "--dev", "--state-dir", "/srv/hive"), 0);
        assert_int_equal(config_finalize(c), 0);
        assert_string_equal(c->state_dir, "/srv/hive");
        assert_string_equal(c->run_dir, "/srv/hive/run");

        assert_int_equal(PARSE(fx, "--dev", "--state-dir", "rel/dir"), 0);
        assert_int_equal(config_finalize(c), 0);
        char *want = path_in(fx, "rel/dir"), *want_run = path_in(fx, "rel/dir/run");
        assert_string_equal(c->state_dir, want);
        assert_string_equal(c->run_dir, want_run);
        free(want);
        free(want_run);

        assert_int_equal(PARSE(fx, "--dev", "--run-dir", "/run/x"), 0);
        assert_int_equal(config_finalize(c), 0);
        assert_string_equal(c->run_dir, "/run/x");
}

static void test_backend_values(void **state)
{
        Fixture *fx = *state;
        const char *ok[] = {"auto", "nixos-container", "nspawn", "process"};
        for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
                assert_int_equal(PARSE(fx, "--backend", ok[i]), 0);
                assert_string_equal(fx->cfg.backend, ok[i]);
        }
        assert_int_equal(PARSE(fx, "--backend", "docker"), -EINVAL);
        assert_int_equal(PARSE(fx, "--backend", ""), -EINVAL);
        assert_int_equal(PARSE(fx, "--backend", "Process"), -EINVAL);
}

static void test_log_level_values(void **state)
{
        Fixture *fx = *state;
        const char *ok[] = {"error", "warning", "info", "debug"};
        for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
                assert_int_equal(PARSE(fx, "--log-level", ok[i]), 0);
                assert_string_equal(fx->cfg.log_level, ok[i]);
        }
        assert_int_equal(PARSE(fx, "--log-level", "loud"), -EINVAL);
        assert_int_equal(PARSE(fx, "--log-level", "warn"), -EINVAL);
}

static void test_int_ranges(void **state)
{
        Fixture *fx = *state;
        assert_int_equal(PARSE(fx, "--max-clients", "1"), 0);
        assert_int_equal(fx->cfg.max_clients, 1);
        assert_int_equal(PARSE(fx, "--max-clients", "65536"), 0);
        assert_int_equal(fx->cfg.max_clients, 65536);
        const char *bad[] = {"0", "65537", "-1", "abc", "12x", "", "5 ", "99999999999999999999"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                assert_int_equal(PARSE(fx, "--max-clients", bad[i]), -EINVAL);

        assert_int_equal(PARSE(fx, "--idle-timeout", "3600"), 0);
        assert_int_equal(fx->cfg.idle_timeout, 3600);
        assert_int_equal(PARSE(fx, "--idle-timeout", "0"), -EINVAL);
        assert_int_equal(PARSE(fx, "--idle-timeout", "3601"), -EINVAL);
}

static void test_bad_arguments(void **state)
{
        Fixture *fx = *state;
        assert_int_equal(PARSE(fx, "--frobnicate"), -EINVAL);
        assert_int_equal(PARSE(fx, "--frobnicate=1"), -EINVAL);
        assert_int_equal(PARSE(fx, "-x"), -EINVAL);
        assert_int_equal(PARSE(fx, "--backend"), -EINVAL);      /* needs a value */
        assert_int_equal(PARSE(fx, "--dev=yes"), -EINVAL);      /* a flag takes none */
        assert_int_equal(PARSE(fx, "--dev", "extra"), -EINVAL); /* positional */
        assert_int_equal(PARSE(fx, "--state-dir", "/a", "b"), -EINVAL);
}

/* A repeated option: the last one wins (and the earlier value is not leaked). */
static void test_repeated_option(void **state)
{
        Fixture *fx = *state;
        assert_int_equal(PARSE(fx, "--state-dir", "/a", "--state-dir", "/b", "--check-config"), 0);
        assert_string_equal(fx->cfg.state_dir, "/b");
        assert_true(fx->cfg.check_config);
}

static void test_domain(void **state)
{
        Fixture *fx = *state;
        HiveConfig *c = &fx->cfg;
        assert_int_equal(PARSE(fx, "--domain", "hive.local"), 0);
        assert_null(c->home_url);
        assert_int_equal(config_finalize(c), 0);
        assert_string_equal(c->domain, "hive.local");
        assert_string_equal(c->home_url, "https://hive.local/");

        /* An explicit --home-url is kept. */
        assert_int_equal(PARSE(fx, "--home-url", "http://x:8/", "--domain", "hive.local"), 0);
        assert_int_equal(config_finalize(c), 0);
        assert_string_equal(c->home_url, "http://x:8/");

        assert_int_equal(PARSE(fx, "--domain", "Hive.Local"), 0);
        assert_int_equal(config_finalize(c), -EINVAL);
        assert_int_equal(PARSE(fx, "--domain", "hive/local"), 0);
        assert_int_equal(config_finalize(c), -EINVAL);
}

static void test_urls(void **state)
{
        Fixture *fx = *state;
        HiveConfig *c = &fx->cfg;
        assert_int_equal(
                PARSE(fx, "--forge-url", "https://forge/", "--matrix-url", "http://matrix/"), 0);
        assert_int_equal(config_finalize(c), 0);
        assert_string_equal(c->forge_url, "https://forge/");
        assert_string_equal(c->matrix_url, "http://matrix/");

        assert_int_equal(PARSE(fx, "--forge-url", "ftp://forge/"), 0);
        assert_int_equal(config_finalize(c), -EINVAL);
        assert_int_equal(PARSE(fx, "--matrix-url", "matrix.local"), 0);
        assert_int_equal(config_finalize(c), -EINVAL);
        assert_int_equal(PARSE(fx, "--home-url", "https:/x"), 0);
        assert_int_equal(config_finalize(c), -EINVAL);
}

static void test_dashboard(void **state)
{
        Fixture *fx = *state;
        const char *ok[] = {"localhost:1", "0.0.0.0:65535", "[::1]:7000"};
        for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
                assert_int_equal(PARSE(fx, "--dashboard", ok[i]), 0);
                assert_int_equal(config_finalize(&fx->cfg), 0);
        }
        const char *bad[] = {"7000",       ":7000",   "host:",   "host:0",
                             "host:65536", "host:1x", "host:-1", "host"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                assert_int_equal(PARSE(fx, "--dashboard", bad[i]), 0);
                assert_int_equal(config_finalize(&fx->cfg), -EINVAL);
        }
}

static void test_socket_path_too_long(void **state)
{
        Fixture *fx = *state;
        char dir[200];
        dir[0] = '/';
        memset(dir + 1, 'r', sizeof(dir) - 2);
        dir[sizeof(dir) - 1] = '\0';
        assert_int_equal(PARSE(fx, "--run-dir", dir), 0);
        assert_int_equal(config_finalize(&fx->cfg), -EINVAL);
}

static void test_payload_env(void **state)
{
        Fixture *fx = *state;
        HiveConfig *c = &fx->cfg;
        assert_int_equal(PARSE(fx), 0);
        assert_null(c->payload_env);
        assert_int_equal(config_finalize(c), 0);
        assert_null(c->payload_env);

        /* Repeatable, in order; a later NAME wins; values may hold '=' or be empty. */
        assert_int_equal(PARSE(fx, "--payload-env", "A=1", "--payload-env=HTTPS_PROXY=http://p:3",
                               "--payload-env", "_x9=a=b", "--payload-env", "A=2", "--payload-env",
                               "EMPTY=", "--payload-env", "AB=3"),
                         0);
        assert_int_equal(config_finalize(c), 0);
        const char *want[] = {"HTTPS_PROXY=http://p:3", "_x9=a=b", "A=2", "EMPTY=", "AB=3", NULL};
        for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
                if (want[i])
                        assert_string_equal(c->payload_env[i], want[i]);
                else
                        assert_null(c->payload_env[i]);
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        assert_non_null(f);
        config_dump(c, f);
        fclose(f);
        assert_non_null(strstr(text, "payload-env = HTTPS_PROXY=http://p:3\npayload-env = "
                                     "_x9=a=b\n"));
        free(text);

        /* Bad names and the fixed variables are refused at the check. */
        const char *bad[] = {"NOVALUE",        "=x",          "9A=1",
                             "A-B=1",          "A B=1",       "Ä=1",
                             "PATH=/x",        "HOME=/h",     "HIVE_LABEL=x",
                             "HIVE_SOCKET=/s", "HIVE_PORT=1", "HIVE_STATE_DIR=/s"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                assert_int_equal(PARSE(fx, "--payload-env", "OK=1", "--payload-env", bad[i]), 0);
                assert_int_equal(config_finalize(c), -EINVAL);
        }
        assert_int_equal(PARSE(fx, "--payload-env"), -EINVAL); /* needs a value */
        /* LANG and TERM, which the daemon passes on from its own environment, may be set */
        assert_int_equal(PARSE(fx, "--payload-env", "LANG=C.UTF-8", "--payload-env", "TERM=dumb"),
                         0);
        assert_int_equal(config_finalize(c), 0);
}

/* config_parse() prints --help on stdout, which carries the test's TAP stream: send it to
 * /dev/null. */
static int parse_quiet(Fixture *fx, const char *a, const char *b, const char *c, const char *d)
{
        fflush(stdout);
        int saved = dup(STDOUT_FILENO);
        assert_true(saved >= 0);
        int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
        assert_true(null >= 0);
        assert_int_equal(dup2(null, STDOUT_FILENO), STDOUT_FILENO);
        close(null);
        int r = PARSE(fx, a, b, c, d);
        fflush(stdout);
        assert_int_equal(dup2(saved, STDOUT_FILENO), STDOUT_FILENO);
        close(saved);
        return r;
}

static void test_help(void **state)
{
        Fixture *fx = *state;
        assert_int_equal(parse_quiet(fx, "--help", NULL, NULL, NULL), 1);
        assert_int_equal(parse_quiet(fx, "-h", NULL, NULL, NULL), 1);
        assert_int_equal(parse_quiet(fx, "--dev", "--help", "--backend", "docker"), 1);

        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        assert_non_null(f);
        config_print_help(f);
        fclose(f);
        assert_non_null(strstr(text, "--state-dir DIR"));
        assert_non_null(strstr(text, "[default: /var/lib/hyperhive; with --dev: ./.hive]"));
        assert_non_null(strstr(text, "(auto, nixos-container, nspawn, process)"));
        assert_non_null(strstr(text, "--help"));
        assert_non_null(strstr(text, "--payload-env NAME=VALUE"));
        assert_non_null(strstr(text, "[repeatable]"));
        free(text);
}

static void test_dump(void **state)
{
        Fixture *fx = *state;
        assert_int_equal(PARSE(fx, "--domain", "hive.local"), 0);
        assert_int_equal(config_finalize(&fx->cfg), 0);
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        assert_non_null(f);
        config_dump(&fx->cfg, f);
        fclose(f);
        assert_non_null(strstr(text, "dev = false\n"));
        assert_non_null(strstr(text, "state-dir = /var/lib/hyperhive\n"));
        assert_non_null(strstr(text, "home-url = https://hive.local/\n"));
        assert_non_null(strstr(text, "forge-url = (unset)\n"));
        assert_non_null(strstr(text, "payload-env = (unset)\n"));
        assert_non_null(strstr(text, "max-clients = 512\n"));
        assert_null(strstr(text, "check-config"));
        free(text);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        const struct CMUnitTest tests[] = {
                T(test_defaults),
                T(test_dev_defaults),
                T(test_dev_anywhere),
                T(test_dev_state_dir),
                T(test_backend_values),
                T(test_log_level_values),
                T(test_int_ranges),
                T(test_bad_arguments),
                T(test_repeated_option),
                T(test_domain),
                T(test_urls),
                T(test_dashboard),
                T(test_socket_path_too_long),
                T(test_payload_env),
                T(test_help),
                T(test_dump),
        };
        return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
