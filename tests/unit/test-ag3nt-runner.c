/* The model CLI runner, against the fake CLI (tests/fakes/claude, which reproduces the real
 * CLI's flags, stream-json and failures) and small shell stand-ins for the edge cases. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cleanup.h"
#include "runner.h"
#include "testutil.h"

typedef struct Fx {
        char *dir;
        Settings s;
        RunnerFiles files;
        char *script;
} Fx;

static int fx_setup(void **state)
{
        Fx *f = calloc(1, sizeof(*f));
        f->dir = tu_mkdtemp();
        f->s.flavor = HARNESS_AGENT;
        f->s.state_dir = strdup(f->dir);
        assert_true(asprintf(&f->s.socket, "%s/mcp.sock", f->dir) > 0);
        assert_true(asprintf(&f->s.model_bin, "%s/claude", HIVE_FAKES_DIR) > 0);
        f->s.label = strdup("alpha");
        f->s.model = strdup("opus");
        assert_true(asprintf(&f->s.extra_mcp, "%s/extra.json", f->dir) > 0);
        assert_true(asprintf(&f->script, "%s/script.json", f->dir) > 0);
        setenv("HOME", f->dir, 1);
        setenv("FAKE_CLAUDE_SCRIPT", f->script, 1);
        setenv("HIVE_LABEL", "alpha", 1);
        unsetenv("FAKE_CLAUDE_REQUIRE_LOGIN");
        *state = f;
        return 0;
}

static int fx_teardown(void **state)
{
        Fx *f = *state;
        runner_files_done(&f->files);
        free(f->s.state_dir);
        free(f->s.socket);
        free(f->s.model_bin);
        free(f->s.label);
        free(f->s.model);
        free(f->s.extra_mcp);
        tu_rm_rf(f->dir);
        free(f->dir);
        free(f->script);
        free(f);
        return 0;
}

static void write_files(Fx *f)
{
        _cleanup_free_ char *warn = NULL, *err = NULL;
        assert_int_equal(runner_write_files(&f->s, f->dir, "/bin/false", &f->files, &warn, &err),
                         0);
}

typedef struct Seen {
        int lines, stderr_lines;
        int stop_after_lines; /* should_stop says 1 once this many lines were seen; 0 never */
        pid_t pgid;
} Seen;

static void seen_started(void *ud, pid_t pg)
{
        ((Seen *)ud)->pgid = pg;
}

static void seen_line(void *ud, bool is_stderr, const char *line, const json_t *j)
{
        Seen *s = ud;
        if (is_stderr)
                s->stderr_lines++;
        else
                s->lines++;
}

static int seen_stop(void *ud)
{
        Seen *s = ud;
        return s->stop_after_lines && s->lines >= s->stop_after_lines ? 1 : 0;
}

static int run(Fx *f, bool resume, const char *prompt, Seen *seen, RunnerResult *res)
{
        _cleanup_strv_free_ char **argv = runner_argv(&f->s, &f->files, "opus", resume);
        RunnerHooks h = {.userdata = seen,
                         .started = seen_started,
                         .line = seen_line,
                         .should_stop = seen_stop};
        return runner_run(argv, f->dir, NULL, prompt, &h, res);
}

static void test_files_and_argv(void **state)
{
        Fx *f = *state;
        assert_int_equal(tu_write_file(f->s.extra_mcp,
                                       "{\"mcpServers\":{\"forge\":{\"command\":\"/bin/true\"},"
                                       "\"hyperhive\":{\"command\":\"/bin/evil\"},"
                                       "\"bad name\":{}}}"),
                         0);
        _cleanup_free_ char *warn = NULL, *err = NULL;
        assert_int_equal(runner_write_files(&f->s, f->dir, "/opt/hive/bin/hive-ag3nt", &f->files,
                                            &warn, &err),
                         0);
        assert_non_null(warn); /* the two bad entries were skipped */
        json_t *mcp = json_load_file(f->files.mcp_path, 0, NULL);
        json_t *servers = json_object_get(mcp, "mcpServers");
        assert_string_equal(json_string_value(json_object_get(json_object_get(servers, "hyperhive"),
                                                              "command")),
                            "/opt/hive/bin/hive-ag3nt");
        assert_non_null(json_object_get(servers, "forge"));
        assert_null(json_object_get(servers, "bad name"));
        assert_int_equal(json_object_size(servers), 2);
        json_decref(mcp);
        struct stat st;
        assert_int_equal(stat(f->files.mcp_path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
        assert_non_null(strstr(f->files.allowed_tools, "mcp__hyperhive__send"));
        assert_non_null(strstr(f->files.allowed_tools, "mcp__forge"));
        assert_null(strstr(f->files.allowed_tools, "request_spawn")); /* manager only */
        _cleanup_free_ char *prompt = tu_read_file(f->files.prompt_path, NULL);
        assert_non_null(strstr(prompt, "alpha"));
        assert_null(strstr(prompt, "@LABEL@"));

        _cleanup_strv_free_ char **a = runner_argv(&f->s, &f->files, "sonnet", false);
        const char *want[] = {"--print",     "--verbose", "--output-format",
                              "stream-json", "--model",   "sonnet"};
        for (size_t i = 0; i < ELEMENTSOF(want); i++)
                assert_string_equal(a[1 + i], want[i]);
        for (char **p = a; *p; p++)
                assert_string_not_equal(*p, "--continue");
        _cleanup_strv_free_ char **b = runner_argv(&f->s, &f->files, "sonnet", true);
        assert_string_equal(b[7], "--continue");
}

static void test_a_turn_with_the_fake(void **state)
{
        Fx *f = *state;
        write_files(f);
        assert_int_equal(tu_write_file(f->script,
                                       "{\"rules\":[{\"actions\":[{\"text\":\"hello there\"}]}]}"),
                         0);
        Seen seen = {0};
        RunnerResult res;
        assert_int_equal(run(f, false, "Message #1 from operator:\n\nhi\n", &seen, &res), 0);
        assert_int_equal(res.exit_code, 0);
        assert_true(res.got_result);
        assert_false(res.is_error);
        assert_false(res.cancelled);
        assert_string_equal(res.result_text, "hello there");
        assert_true(res.output_tokens > 0);
        assert_true(res.context_tokens > 0);
        assert_true(seen.lines >= 3); /* init, assistant, result */
        assert_true(seen.pgid > 0);
        runner_result_done(&res);

        /* --continue now finds the session */
        assert_int_equal(run(f, true, "again", &seen, &res), 0);
        assert_true(res.got_result && !res.is_error && !res.no_conversation);
        runner_result_done(&res);
}

static void test_continue_without_a_session(void **state)
{
        Fx *f = *state;
        write_files(f);
        Seen seen = {0};
        RunnerResult res;
        assert_int_equal(run(f, true, "hi", &seen, &res), 0);
        assert_true(res.no_conversation);
        assert_false(res.got_result);
        assert_int_equal(res.exit_code, 1);
        assert_non_null(strstr(res.stderr_tail, "No conversation found"));
        runner_result_done(&res);
}

static void test_failures_are_classified(void **state)
{
        Fx *f = *state;
        write_files(f);
        struct {
                const char *script;
                size_t offset; /* the bool in RunnerResult that must be set */
        } cases[] = {
                {"{\"rules\":[{\"actions\":[{\"error\":\"Prompt is too long\"}]}]}",
                 offsetof(RunnerResult, prompt_too_long)},
                {"{\"rules\":[{\"actions\":[{\"rate_limit\":true}]}]}",
                 offsetof(RunnerResult, rate_limited)},
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                assert_int_equal(tu_write_file(f->script, cases[i].script), 0);
                Seen seen = {0};
                RunnerResult res;
                assert_int_equal(run(f, false, "hi", &seen, &res), 0);
                assert_true(res.got_result && res.is_error);
                assert_true(*(bool *)((char *)&res + cases[i].offset));
                runner_result_done(&res);
        }
        setenv("FAKE_CLAUDE_REQUIRE_LOGIN", "1", 1);
        Seen seen = {0};
        RunnerResult res;
        assert_int_equal(run(f, false, "hi", &seen, &res), 0);
        unsetenv("FAKE_CLAUDE_REQUIRE_LOGIN");
        assert_true(res.needs_login);
        assert_false(res.rate_limited || res.prompt_too_long);
        runner_result_done(&res);
}

static void test_cancel_sends_sigint(void **state)
{
        Fx *f = *state;
        write_files(f);
        assert_int_equal(tu_write_file(f->script, "{\"rules\":[{\"actions\":[{\"text\":\"busy\"},"
                                                  "{\"sleep\":30}]}]}"),
                         0);
        Seen seen = {.stop_after_lines = 2}; /* init and the text */
        RunnerResult res;
        assert_int_equal(run(f, false, "hi", &seen, &res), 0);
        assert_true(res.cancelled);
        assert_int_equal(res.exit_code, 130);
        assert_false(res.got_result);
        runner_result_done(&res);
}

static void test_tools_and_status_are_counted(void **state)
{
        Fx *f = *state;
        write_files(f);
        /* A stand-in printing canned stream-json: tool uses the fake would only make against a
         * daemon. */
        _cleanup_free_ char *sh = NULL;
        assert_true(asprintf(&sh, "%s/cli.sh", f->dir) > 0);
        assert_int_equal(
                tu_write_file(
                        sh,
                        "#!/bin/sh\ncat >/dev/null\n"
                        "echo '{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":"
                        "\"tool_use\",\"name\":\"mcp__hyperhive__send\",\"input\":{}},{\"type\":"
                        "\"tool_use\",\"name\":\"mcp__hyperhive__set_status\",\"input\":{\"text\":"
                        "\"busy with x\"}}],\"usage\":{\"input_tokens\":10,"
                        "\"cache_read_input_tokens\":100,\"cache_creation_input_tokens\":5}}}'\n"
                        "echo '{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":"
                        "\"tool_use\",\"name\":\"mcp__hyperhive__send\",\"input\":{}}]}}'\n"
                        "echo 'not json at all'\n"
                        "echo 'a warning' >&2\n"
                        "echo '{\"type\":\"result\",\"is_error\":false,\"result\":\"done\","
                        "\"total_cost_usd\":0.5,\"usage\":{\"input_tokens\":1,\"output_tokens\":2}}"
                        "'\n"),
                0);
        assert_int_equal(chmod(sh, 0755), 0);
        char *argv[] = {sh, NULL};
        Seen seen = {0};
        RunnerHooks h = {.userdata = &seen, .line = seen_line};
        RunnerResult res;
        assert_int_equal(runner_run(argv, f->dir, NULL, "x", &h, &res), 0);
        assert_int_equal(res.tool_calls, 3);
        assert_int_equal(
                json_integer_value(json_object_get(res.tool_counts, "mcp__hyperhive__send")), 2);
        assert_string_equal(res.status_text, "busy with x");
        assert_int_equal(res.context_tokens, 115);
        assert_int_equal(res.output_tokens, 2);
        assert_true(res.cost_usd > 0.49 && res.cost_usd < 0.51);
        assert_int_equal(seen.lines, 4);
        assert_int_equal(seen.stderr_lines, 1);
        runner_result_done(&res);
}

static void test_big_prompt_and_missing_program(void **state)
{
        Fx *f = *state;
        /* 4 MiB through stdin while the child writes: no deadlock */
        size_t n = 4u << 20;
        char *big = malloc(n + 1);
        memset(big, 'x', n);
        big[n] = '\0';
        char *argv[] = {"/bin/sh", "-c", "wc -c", NULL};
        Seen seen = {0};
        RunnerHooks h = {.userdata = &seen, .line = seen_line};
        RunnerResult res;
        assert_int_equal(runner_run(argv, f->dir, NULL, big, &h, &res), 0);
        assert_int_equal(res.exit_code, 0);
        assert_int_equal(seen.lines, 1);
        runner_result_done(&res);
        free(big);

        char *missing[] = {"/nonexistent/claude", NULL};
        assert_int_equal(runner_run(missing, f->dir, NULL, "x", &h, &res), -ENOENT);
        assert_int_equal(res.exit_code, -1);
        runner_result_done(&res);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_files_and_argv, fx_setup, fx_teardown),
                cmocka_unit_test_setup_teardown(test_a_turn_with_the_fake, fx_setup, fx_teardown),
                cmocka_unit_test_setup_teardown(test_continue_without_a_session, fx_setup,
                                                fx_teardown),
                cmocka_unit_test_setup_teardown(test_failures_are_classified, fx_setup,
                                                fx_teardown),
                cmocka_unit_test_setup_teardown(test_cancel_sends_sigint, fx_setup, fx_teardown),
                cmocka_unit_test_setup_teardown(test_tools_and_status_are_counted, fx_setup,
                                                fx_teardown),
                cmocka_unit_test_setup_teardown(test_big_prompt_and_missing_program, fx_setup,
                                                fx_teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
