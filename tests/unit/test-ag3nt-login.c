/* Unit tests of the harness's login flow (ag3nt/login.c), run against the fake model CLI
 * (tests/fakes/claude setup-token) and a small shell script that ignores SIGTERM: the token
 * saved 0600 and never published, a wrong code, cancel and free killing the process group,
 * a missing binary or state directory, and the argument checks of login_code(). */
#include <dirent.h>
#include <errno.h>
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

#include "cleanup.h"
#include "evbus.h"
#include "login.h"
#include "proto.h"
#include "settings.h"
#include "testutil.h"
#include "timeutil.h"

#define FAKE_CLAUDE HIVE_FAKES_DIR "/claude"
#define WAIT_MS     15000

typedef struct Fixture {
        char *dir;
        char *log;
        Settings s;
        EvBus *bus;
        Login *l;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        int done_calls;
        bool done_ok;
} Fixture;

static void on_done(void *userdata, bool ok)
{
        Fixture *fx = userdata;
        pthread_mutex_lock(&fx->lock);
        fx->done_calls++;
        fx->done_ok = ok;
        pthread_cond_broadcast(&fx->cond);
        pthread_mutex_unlock(&fx->lock);
}

static int setup(void **state)
{
        Fixture *fx = calloc(1, sizeof(*fx));
        assert_non_null(fx);
        fx->dir = tu_mkdtemp();
        assert_true(asprintf(&fx->log, "%s/fake-claude.log", fx->dir) > 0);
        /* The fake keeps its state under $HOME/.claude: the state dir, as in a container. */
        setenv("HOME", fx->dir, 1);
        setenv("FAKE_CLAUDE_LOG", fx->log, 1);
        unsetenv("FAKE_CLAUDE_LOGIN_CODE");
        unsetenv("CLAUDE_CONFIG_DIR");
        fx->s = (Settings){.flavor = HARNESS_AGENT,
                           .state_dir = strdup(fx->dir),
                           .model_bin = strdup(FAKE_CLAUDE)};
        pthread_mutex_init(&fx->lock, NULL);
        pthread_cond_init(&fx->cond, NULL);
        assert_int_equal(evbus_open(NULL, &fx->bus), 0);
        assert_int_equal(login_new(&fx->s, fx->bus, on_done, fx, &fx->l), 0);
        *state = fx;
        return 0;
}

static int teardown(void **state)
{
        Fixture *fx = *state;
        login_free(fx->l);
        evbus_free(fx->bus);
        tu_rm_rf(fx->dir);
        free(fx->dir);
        free(fx->log);
        free(fx->s.state_dir);
        free(fx->s.model_bin);
        pthread_cond_destroy(&fx->cond);
        pthread_mutex_destroy(&fx->lock);
        free(fx);
        return 0;
}

/* Waits (bounded) until the done callback was called want times; returns how often it was. */
static int wait_done(Fixture *fx, int want)
{
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += WAIT_MS / 1000;
        pthread_mutex_lock(&fx->lock);
        while (fx->done_calls < want)
                if (pthread_cond_timedwait(&fx->cond, &fx->lock, &until) == ETIMEDOUT)
                        break;
        int n = fx->done_calls;
        pthread_mutex_unlock(&fx->lock);
        return n;
}

/* Polls login_state() until one of its output lines contains needle (bounded). */
static void wait_line(Fixture *fx, const char *needle)
{
        uint64_t end = timeutil_mono_usec() + WAIT_MS * 1000ull;
        while (timeutil_mono_usec() < end) {
                _cleanup_json_ json_t *st = login_state(fx->l);
                assert_non_null(st);
                size_t i;
                json_t *v;
                json_array_foreach(json_object_get(st, "lines"), i, v)
                {
                        if (strstr(json_string_value(v), needle))
                                return;
                }
                usleep(10000);
        }
        fail_msg("no login line with \"%s\"", needle);
}

/* The pid of the fake's newest invocation, from its FAKE_CLAUDE_LOG. */
static pid_t fake_pid(Fixture *fx)
{
        _cleanup_free_ char *text = tu_read_file(fx->log, NULL);
        assert_non_null(text);
        char *last = text, *nl;
        while ((nl = strchr(last, '\n')) && nl[1])
                last = nl + 1;
        _cleanup_json_ json_t *rec = json_loads(last, JSON_DISABLE_EOF_CHECK, NULL);
        assert_non_null(rec);
        return (pid_t)json_integer_value(json_object_get(rec, "pid"));
}

static bool process_gone(pid_t pid)
{
        return kill(pid, 0) < 0 && errno == ESRCH;
}

/* The login events' payloads with payload.state == state. */
static size_t count_state(Fixture *fx, const char *state)
{
        _cleanup_json_ json_t *h = evbus_history(fx->bus, 0, EVBUS_KEEP);
        size_t i, n = 0;
        json_t *ev;
        json_array_foreach(h, i, ev)
        {
                assert_string_equal(json_string_value(json_object_get(ev, "kind")), "login");
                const char *s =
                        json_string_value(json_object_get(json_object_get(ev, "payload"), "state"));
                if (s && strcmp(s, state) == 0)
                        n++;
        }
        return n;
}

static char *token_path(Fixture *fx)
{
        char *p = settings_state_path(&fx->s, LOGIN_TOKEN_FILE);
        assert_non_null(p);
        return p;
}

static void test_right_code_saves_the_token(void **state)
{
        Fixture *fx = *state;
        char *error = NULL;
        assert_int_equal(login_start(fx->l, &error), 0);
        assert_null(error);
        assert_int_equal(login_start(fx->l, &error), -EBUSY);
        free(error);
        error = NULL;
        /* The prompt has no newline; it is shown all the same. */
        wait_line(fx, "Paste code here if prompted >");
        {
                _cleanup_json_ json_t *st = login_state(fx->l);
                assert_true(json_is_true(json_object_get(st, "active")));
                const char *url = json_string_value(json_object_get(st, "url"));
                assert_non_null(url);
                assert_true(strncmp(url, "https://claude.ai/oauth/authorize?code=true&", 44) == 0);
                assert_null(strchr(url, ' '));
        }
        assert_int_equal(login_code(fx->l, "hive-test-code", &error), 0);
        assert_int_equal(wait_done(fx, 1), 1);
        assert_true(fx->done_ok);

        _cleanup_free_ char *path = token_path(fx);
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0600);
        _cleanup_free_ char *content = tu_read_file(path, NULL);
        assert_non_null(content);
        assert_true(strncmp(content, "sk-ant-oat01-", 13) == 0);
        assert_int_equal(strlen(content), 108 + 1); /* the token and a newline */
        _cleanup_free_ char *tok = login_token(&fx->s);
        assert_non_null(tok);
        assert_int_equal(strncmp(tok, content, 108), 0);
        assert_int_equal(strlen(tok), 108);
        /* The fake issued exactly this token. */
        _cleanup_free_ char *issued_path = NULL;
        assert_true(asprintf(&issued_path, "%s/.claude/fake-issued-tokens", fx->dir) > 0);
        _cleanup_free_ char *issued = tu_read_file(issued_path, NULL);
        assert_string_equal(issued, content);
        /* No temp file is left behind. */
        DIR *d = opendir(fx->dir);
        assert_non_null(d);
        struct dirent *e;
        while ((e = readdir(d)))
                assert_null(strstr(e->d_name, ".hyperhive-oauth-token."));
        closedir(d);

        /* Events: started, the url, lines, ok; the token is in none of them. */
        assert_int_equal(count_state(fx, "started"), 1);
        assert_int_equal(count_state(fx, "url"), 1);
        assert_int_equal(count_state(fx, "ok"), 1);
        _cleanup_json_ json_t *h = evbus_history(fx->bus, 0, EVBUS_KEEP);
        _cleanup_free_ char *dump = json_dumps(h, 0);
        assert_null(strstr(dump, tok));
        assert_non_null(strstr(dump, "\"line\": \"Your OAuth token (valid for 1 year):\""));
        assert_non_null(strstr(dump, "\"line\": \"sk-ant-oat01-… (saved, not shown)\""));

        _cleanup_json_ json_t *s = login_state(fx->l);
        assert_true(json_is_false(json_object_get(s, "active")));
        assert_string_equal(json_string_value(json_object_get(s, "result")), "ok");
        assert_true(json_is_null(json_object_get(s, "error")));
        assert_true(json_array_size(json_object_get(s, "lines")) > 5);
        _cleanup_free_ char *sdump = json_dumps(s, 0);
        assert_null(strstr(sdump, tok));
        assert_true(process_gone(fake_pid(fx)));
        /* No flow runs any more. */
        assert_int_equal(login_code(fx->l, "again", NULL), -ESRCH);
        assert_int_equal(login_cancel(fx->l), -ESRCH);
}

static void test_wrong_code_fails(void **state)
{
        Fixture *fx = *state;
        assert_int_equal(login_start(fx->l, NULL), 0);
        wait_line(fx, "Paste code here");
        assert_int_equal(login_code(fx->l, "not-the-code", NULL), 0);
        assert_int_equal(wait_done(fx, 1), 1);
        assert_false(fx->done_ok);
        _cleanup_free_ char *path = token_path(fx);
        assert_int_equal(access(path, F_OK), -1);
        assert_null(login_token(&fx->s));
        _cleanup_json_ json_t *s = login_state(fx->l);
        assert_string_equal(json_string_value(json_object_get(s, "result")), "failed");
        const char *err = json_string_value(json_object_get(s, "error"));
        assert_non_null(err);
        assert_non_null(strstr(err, "exited with status 1"));
        assert_non_null(strstr(err, "Invalid code"));
        assert_int_equal(count_state(fx, "failed"), 1);

        /* A new flow can start after a failed one, and starts afresh. */
        assert_int_equal(login_start(fx->l, NULL), 0);
        _cleanup_json_ json_t *s2 = login_state(fx->l);
        assert_true(json_is_null(json_object_get(s2, "result")));
        wait_line(fx, "Paste code here");
        assert_int_equal(login_cancel(fx->l), 0);
        assert_int_equal(wait_done(fx, 2), 2);
}

static void test_cancel_kills_the_process(void **state)
{
        Fixture *fx = *state;
        assert_int_equal(login_start(fx->l, NULL), 0);
        wait_line(fx, "Paste code here");
        pid_t pid = fake_pid(fx);
        assert_false(process_gone(pid));
        assert_int_equal(login_cancel(fx->l), 0);
        assert_int_equal(wait_done(fx, 1), 1);
        assert_false(fx->done_ok);
        assert_true(process_gone(pid));
        _cleanup_json_ json_t *s = login_state(fx->l);
        assert_string_equal(json_string_value(json_object_get(s, "result")), "cancelled");
        assert_true(json_is_false(json_object_get(s, "active")));
        assert_int_equal(count_state(fx, "cancelled"), 1);
        assert_int_equal(login_cancel(fx->l), -ESRCH);
        assert_null(login_token(&fx->s));
}

/* A CLI that ignores SIGTERM (and whose children do too) is killed with SIGKILL. */
static void test_cancel_escalates_to_sigkill(void **state)
{
        Fixture *fx = *state;
        _cleanup_free_ char *script = NULL, *pidfile = NULL, *body = NULL;
        assert_true(asprintf(&script, "%s/stubborn-cli", fx->dir) > 0);
        assert_true(asprintf(&pidfile, "%s/stubborn.pid", fx->dir) > 0);
        assert_true(asprintf(&body,
                             "#!/bin/sh\ntrap '' TERM\necho $$ > '%s'\n"
                             "echo 'Visit https://example.com/sign-in?x=1 to log in'\n"
                             "while :; do sleep 0.05; done\n",
                             pidfile) > 0);
        assert_int_equal(tu_write_file(script, body), 0);
        assert_int_equal(chmod(script, 0755), 0);
        free(fx->s.model_bin);
        fx->s.model_bin = strdup(script);

        assert_int_equal(login_start(fx->l, NULL), 0);
        wait_line(fx, "to log in");
        _cleanup_json_ json_t *s0 = login_state(fx->l);
        assert_string_equal(json_string_value(json_object_get(s0, "url")),
                            "https://example.com/sign-in?x=1");
        _cleanup_free_ char *pidtext = tu_read_file(pidfile, NULL);
        pid_t pid = (pid_t)atoi(pidtext);
        uint64_t t0 = timeutil_mono_usec();
        assert_int_equal(login_cancel(fx->l), 0);
        assert_int_equal(login_cancel(fx->l), 0); /* still ending: fine */
        assert_int_equal(wait_done(fx, 1), 1);
        uint64_t took = timeutil_mono_usec() - t0;
        assert_true(took >= 1500000u && took < 10000000u);
        assert_true(process_gone(pid));
        _cleanup_json_ json_t *s = login_state(fx->l);
        assert_string_equal(json_string_value(json_object_get(s, "result")), "cancelled");
}

static void test_free_kills_a_running_flow(void **state)
{
        Fixture *fx = *state;
        assert_int_equal(login_start(fx->l, NULL), 0);
        wait_line(fx, "Paste code here");
        pid_t pid = fake_pid(fx);
        fx->l = login_free(fx->l);
        assert_null(fx->l);
        assert_true(process_gone(pid));
        assert_int_equal(fx->done_calls, 0); /* the owner is tearing down: no callback */
}

static void test_missing_binary(void **state)
{
        Fixture *fx = *state;
        const char *bins[] = {"/nonexistent/claude", "hive-no-such-model-cli"};
        for (size_t i = 0; i < ELEMENTSOF(bins); i++) {
                free(fx->s.model_bin);
                fx->s.model_bin = strdup(bins[i]);
                char *error = NULL;
                assert_int_equal(login_start(fx->l, &error), -ENOENT);
                assert_non_null(error);
                assert_non_null(strstr(error, bins[i]));
                assert_non_null(strstr(error, "not found"));
                free(error);
                _cleanup_json_ json_t *s = login_state(fx->l);
                assert_true(json_is_false(json_object_get(s, "active")));
        }
        assert_int_equal(fx->done_calls, 0);

        /* A state directory that is not there is named as such. */
        free(fx->s.model_bin);
        fx->s.model_bin = strdup(FAKE_CLAUDE);
        free(fx->s.state_dir);
        assert_true(asprintf(&fx->s.state_dir, "%s/gone", fx->dir) > 0);
        char *error = NULL;
        assert_int_equal(login_start(fx->l, &error), -ENOENT);
        assert_non_null(strstr(error, "state directory"));
        free(error);
}

static void test_code_checks(void **state)
{
        Fixture *fx = *state;
        char *error = NULL;
        assert_int_equal(login_code(fx->l, "hive-test-code", &error), -ESRCH);
        assert_non_null(error);
        free(error);
        assert_int_equal(login_cancel(fx->l), -ESRCH);

        assert_int_equal(login_start(fx->l, NULL), 0);
        wait_line(fx, "Paste code here");
        const char *bad[] = {"", "two\nlines", "tab\there", "esc\x1b[0m", "cr\r", "del\x7f"};
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                error = NULL;
                assert_int_equal(login_code(fx->l, bad[i], &error), -EINVAL);
                assert_non_null(error);
                free(error);
        }
        _cleanup_free_ char *huge = malloc(5000);
        memset(huge, 'a', 4999);
        huge[4999] = '\0';
        assert_int_equal(login_code(fx->l, huge, NULL), -EINVAL);
        assert_int_equal(login_code(fx->l, NULL, NULL), -EINVAL);
        /* Nothing reached the CLI: it still waits, and takes the right code now. */
        assert_int_equal(login_code(fx->l, "hive-test-code", NULL), 0);
        assert_int_equal(wait_done(fx, 1), 1);
        assert_true(fx->done_ok);
}

/* login_token() reads what is there, and refuses what is no token. */
static void test_token_file(void **state)
{
        Fixture *fx = *state;
        assert_null(login_token(&fx->s));
        _cleanup_free_ char *path = token_path(fx);
        assert_int_equal(tu_write_file(path, "  sk-ant-oat01-abc_DEF-123\n"), 0);
        _cleanup_free_ char *t = login_token(&fx->s);
        assert_string_equal(t, "sk-ant-oat01-abc_DEF-123");
        assert_int_equal(tu_write_file(path, "two words\n"), 0);
        assert_null(login_token(&fx->s));
        assert_int_equal(tu_write_file(path, ""), 0);
        assert_null(login_token(&fx->s));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_right_code_saves_the_token, setup, teardown),
                cmocka_unit_test_setup_teardown(test_wrong_code_fails, setup, teardown),
                cmocka_unit_test_setup_teardown(test_cancel_kills_the_process, setup, teardown),
                cmocka_unit_test_setup_teardown(test_cancel_escalates_to_sigkill, setup, teardown),
                cmocka_unit_test_setup_teardown(test_free_kills_a_running_flow, setup, teardown),
                cmocka_unit_test_setup_teardown(test_missing_binary, setup, teardown),
                cmocka_unit_test_setup_teardown(test_code_checks, setup, teardown),
                cmocka_unit_test_setup_teardown(test_token_file, setup, teardown),
        };
        return cmocka_run_group_tests_name("ag3nt-login", tests, NULL, NULL);
}
