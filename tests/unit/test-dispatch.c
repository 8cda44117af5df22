/* Unit tests of request dispatch (c0re/dispatch.c) with the host.sock verbs
 * (c0re/host_verbs.c), against a real Daemon with a temp state dir and a temp sqlite store. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "actions.h"
#include "agent_server.h"
#include "broker.h"
#include "cleanup.h"
#include "daemon.h"
#include "dispatch.h"
#include "errors.h"
#include "hive-config.h"
#include "host_verbs.h"
#include "log.h"
#include "proto.h"
#include "request_ids.h"
#include "store.h"
#include "testutil.h"

#define ENVELOPE_PREFIX "{\"version\":1,\"ok\":"

typedef struct Fixture {
        char *dir;
        HiveConfig cfg;
        Daemon d;
} Fixture;

static int setup(void **state)
{
        Fixture *fx = calloc(1, sizeof(*fx));
        assert_non_null(fx);
        fx->dir = tu_mkdtemp();
        assert_true(asprintf(&fx->cfg.state_dir, "%s/state", fx->dir) > 0);
        assert_int_equal(mkdir(fx->cfg.state_dir, 0700), 0);
        char *db = NULL;
        assert_true(asprintf(&db, "%s/hive.sqlite", fx->cfg.state_dir) > 0);
        fx->d = (Daemon){
                .cfg = &fx->cfg,
                .backend = "process",
                .backend_reason = "unit test",
                .admin_gid = (gid_t)-1,
                .lock_fd = -1,
                .signal_fd = -1,
        };
        fx->cfg.nixos_container = (char *)"nixos-container";
        assert_int_equal(store_open(db, &fx->d.store), 0);
        assert_int_equal(actions_new(&fx->d, &fx->d.actions), 0);
        free(db);
        *state = fx;
        return 0;
}

static int teardown(void **state)
{
        Fixture *fx = *state;
        fx->d.actions = actions_free(fx->d.actions);
        fx->d.store = store_close(fx->d.store);
        assert_int_equal(tu_rm_rf(fx->dir), 0);
        free(fx->cfg.state_dir);
        free(fx->dir);
        free(fx);
        return 0;
}

/* Dispatches line (len bytes) and checks what every response must be: one line starting with
 * the v1 envelope, "ok" agreeing with the return value, the verb reported only on success, a
 * refusal carrying an error sentence and a known error code.  Returns the raw line. */
static char *dispatch_raw(Fixture *fx, const char *line, size_t len, int want_r)
{
        char *out = NULL;
        size_t out_len = 0;
        const VerbSpec *verb = (const VerbSpec *)0x1;
        int r = dispatch_line(&host_verb_table, &fx->d, NULL, line, len, &out, &out_len, &verb);
        assert_int_equal(r, want_r);
        assert_non_null(out);
        assert_int_equal(out_len, strlen(out));
        assert_true(out_len >= 2);
        assert_int_equal(strncmp(out, ENVELOPE_PREFIX, strlen(ENVELOPE_PREFIX)), 0);
        assert_int_equal(out[out_len - 1], '\n');
        assert_null(memchr(out, '\n', out_len - 1));

        json_error_t err;
        json_t *j = json_loadb(out, out_len - 1, JSON_REJECT_DUPLICATES, &err);
        if (!j)
                fail_msg("response is not JSON: %s: %s", err.text, out);
        assert_true(json_is_object(j));
        assert_int_equal(json_integer_value(json_object_get(j, "version")), 1);
        assert_true(json_is_boolean(json_object_get(j, "ok")));
        assert_int_equal(json_is_true(json_object_get(j, "ok")), r == 1);
        if (r == 1) {
                assert_non_null(verb);
                assert_ptr_not_equal(verb, (const VerbSpec *)0x1);
                json_t *req = json_loadb(line, len, 0, NULL);
                assert_string_equal(verb->cmd, json_string_value(json_object_get(req, "cmd")));
                json_decref(req);
                assert_null(json_object_get(j, "error"));
                assert_null(json_object_get(j, "error_code"));
        } else {
                assert_null(verb);
                assert_true(json_is_string(json_object_get(j, "error")));
                assert_true(strlen(json_string_value(json_object_get(j, "error"))) > 0);
                const char *code = json_string_value(json_object_get(j, "error_code"));
                assert_non_null(code);
                assert_true(hive_errno_from_name(code) > 0);
        }
        json_decref(j);
        return out;
}

static json_t *call(Fixture *fx, const char *line, int want_r)
{
        char *out = dispatch_raw(fx, line, strlen(line), want_r);
        json_t *j = json_loads(out, 0, NULL);
        free(out);
        assert_non_null(j);
        return j;
}

/* The request is refused with error code want_code and an error containing each of the
 * NULL-terminated substrings. */
static void expect_refused(Fixture *fx, const char *line, const char *want_code, ...)
{
        json_t *j = call(fx, line, 0);
        const char *error = json_string_value(json_object_get(j, "error"));
        const char *code = json_string_value(json_object_get(j, "error_code"));
        if (strcmp(code, want_code) != 0)
                fail_msg("%s: error_code %s, wanted %s (%s)", line, code, want_code, error);
        va_list ap;
        va_start(ap, want_code);
        const char *sub;
        while ((sub = va_arg(ap, const char *)))
                if (!strstr(error, sub))
                        fail_msg("%s: error \"%s\" does not mention %s", line, error, sub);
        va_end(ap);
        json_decref(j);
}

#define REFUSED(fx, line, code, ...)                                                               \
        expect_refused(fx, line, code, ##__VA_ARGS__, (const char *)NULL)

static void expect_exact(Fixture *fx, const char *line, int want_r, const char *want)
{
        char *out = dispatch_raw(fx, line, strlen(line), want_r);
        assert_string_equal(out, want);
        free(out);
}

static void insert(Fixture *fx, const AgentRecord *a)
{
        assert_int_equal(store_agent_insert(fx->d.store, a), 0);
}

static char *marker_path(Fixture *fx, const char *name)
{
        char *p = NULL;
        assert_true(asprintf(&p, "%s/agents/%s/state/hyperhive-paused", fx->cfg.state_dir, name) >
                    0);
        return p;
}

static bool exists(const char *path)
{
        struct stat st;
        return lstat(path, &st) == 0;
}

/* ---- generic checks ---- */

static void test_invalid_json(void **state)
{
        Fixture *fx = *state;
        REFUSED(fx, "{", "EBADMSG", "not valid JSON");
        REFUSED(fx, "", "EBADMSG", "not valid JSON");
        REFUSED(fx, "{\"cmd\":\"list\"", "EBADMSG");
        REFUSED(fx, "{\"cmd\":\"list\"} trailing", "EBADMSG");
        REFUSED(fx, "{\"cmd\":\"list\",\"cmd\":\"list\"}", "EBADMSG"); /* duplicate key */
        REFUSED(fx, "{\"cmd\":\"li\xff\"}", "EBADMSG");                /* not UTF-8 */
        /* An embedded NUL byte ends nothing early: the whole length is parsed. */
        char *out = dispatch_raw(fx, "{\"cmd\":\"list\"}\0x", 16, 0);
        assert_non_null(strstr(out, "\"error_code\":\"EBADMSG\""));
        free(out);
}

static void test_not_an_object(void **state)
{
        Fixture *fx = *state;
        REFUSED(fx, "[{\"cmd\":\"list\"}]", "EBADMSG", "JSON object", "an array");
        REFUSED(fx, "[]", "EBADMSG");
        REFUSED(fx, "\"list\"", "EBADMSG");
        REFUSED(fx, "42", "EBADMSG");
        REFUSED(fx, "null", "EBADMSG");
}

static void test_missing_cmd(void **state)
{
        Fixture *fx = *state;
        REFUSED(fx, "{}", "EINVAL", "\"cmd\"", "list");
        REFUSED(fx, "{\"name\":\"x\",\"paused\":true}", "EINVAL", "\"cmd\"");
}

static void test_cmd_not_string(void **state)
{
        Fixture *fx = *state;
        REFUSED(fx, "{\"cmd\":5}", "EINVAL", "\"cmd\" must be a string", "an integer");
        REFUSED(fx, "{\"cmd\":null}", "EINVAL", "\"cmd\" must be a string", "null");
        REFUSED(fx, "{\"cmd\":[\"list\"]}", "EINVAL", "an array");
        REFUSED(fx, "{\"cmd\":{}}", "EINVAL", "an object");
        REFUSED(fx, "{\"cmd\":true}", "EINVAL", "a boolean");
}

static void test_unknown_cmd(void **state)
{
        Fixture *fx = *state;
        REFUSED(fx, "{\"cmd\":\"frobnicate\"}", "EOPNOTSUPP", "frobnicate", "host.sock", "list",
                "agent_status", "set_paused");
        REFUSED(fx, "{\"cmd\":\"\"}", "EOPNOTSUPP", "unknown command");
        REFUSED(fx, "{\"cmd\":\"LIST\"}", "EOPNOTSUPP", "LIST");
        /* A very long verb name is cut, and the reply stays one line. */
        char line[5000];
        int n = snprintf(line, sizeof(line), "{\"cmd\":\"");
        memset(line + n, 'v', 4000);
        snprintf(line + n + 4000, sizeof(line) - (size_t)n - 4000, "\\n\"}");
        json_t *j = call(fx, line, 0);
        assert_string_equal(json_string_value(json_object_get(j, "error_code")), "EOPNOTSUPP");
        assert_true(strlen(json_string_value(json_object_get(j, "error"))) < 1024);
        json_decref(j);
}

static void test_version(void **state)
{
        Fixture *fx = *state;
        REFUSED(fx, "{\"cmd\":\"list\",\"version\":2}", "EPROTONOSUPPORT", "2", "version 1");
        REFUSED(fx, "{\"version\":0,\"cmd\":\"list\"}", "EPROTONOSUPPORT");
        REFUSED(fx, "{\"cmd\":\"list\",\"version\":\"1\"}", "EPROTONOSUPPORT");
        REFUSED(fx, "{\"cmd\":\"list\",\"version\":1.0}", "EPROTONOSUPPORT");
        /* Checked before the verb: an unknown verb at version 2 is a version problem. */
        REFUSED(fx, "{\"cmd\":\"nope\",\"version\":2}", "EPROTONOSUPPORT");
        expect_exact(fx, "{\"cmd\":\"list\",\"version\":1}", 1,
                     "{\"version\":1,\"ok\":true,\"agents\":[]}\n");
}

static void test_unknown_keys_ignored(void **state)
{
        Fixture *fx = *state;
        expect_exact(fx, "{\"cmd\":\"list\",\"future\":{\"x\":[1,2]},\"scope\":null}", 1,
                     "{\"version\":1,\"ok\":true,\"agents\":[]}\n");
}

static void test_set_paused_missing_fields(void **state)
{
        Fixture *fx = *state;
        REFUSED(fx, "{\"cmd\":\"set_paused\",\"paused\":true}", "EINVAL", "set_paused", "\"name\"",
                "a string");
        REFUSED(fx, "{\"cmd\":\"set_paused\",\"name\":\"a\"}", "EINVAL", "set_paused", "\"paused\"",
                "a boolean");
        REFUSED(fx, "{\"cmd\":\"set_paused\"}", "EINVAL", "\"name\"");
}

static void test_set_paused_wrong_types(void **state)
{
        Fixture *fx = *state;
        REFUSED(fx, "{\"cmd\":\"set_paused\",\"name\":5,\"paused\":true}", "EINVAL", "\"name\"",
                "must be a string", "an integer");
        REFUSED(fx, "{\"cmd\":\"set_paused\",\"name\":null,\"paused\":true}", "EINVAL", "\"name\"",
                "null");
        REFUSED(fx, "{\"cmd\":\"set_paused\",\"name\":\"a\",\"paused\":\"yes\"}", "EINVAL",
                "\"paused\"", "must be a boolean", "a string");
        REFUSED(fx, "{\"cmd\":\"set_paused\",\"name\":\"a\",\"paused\":1}", "EINVAL", "\"paused\"",
                "an integer");
        REFUSED(fx, "{\"cmd\":\"set_paused\",\"name\":\"a\",\"paused\":0.5}", "EINVAL",
                "\"paused\"", "fraction");
}

static void test_set_paused_invalid_name(void **state)
{
        Fixture *fx = *state;
        const char *names[] = {"",    "Bad",        "-ab", "ab-",      "a_b",  "a b",
                               "a/b", "abcdefghij", "..",  "\\u00e9t", "%s%n", "a\\nb"};
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
                char line[128];
                snprintf(line, sizeof(line),
                         "{\"cmd\":\"set_paused\",\"name\":\"%s\",\"paused\":true}", names[i]);
                REFUSED(fx, line, "EINVAL", "not a valid agent name");
        }
        char *agents = NULL;
        assert_true(asprintf(&agents, "%s/agents", fx->cfg.state_dir) > 0);
        assert_false(exists(agents));
        free(agents);
}

static void test_set_paused_unknown_agent(void **state)
{
        Fixture *fx = *state;
        expect_exact(fx, "{\"cmd\":\"set_paused\",\"name\":\"ghost\",\"paused\":true}", 0,
                     "{\"version\":1,\"ok\":false,"
                     "\"error\":\"agent \\\"ghost\\\" is not managed by this hive\","
                     "\"error_code\":\"ENOENT\"}\n");
        REFUSED(fx, "{\"cmd\":\"set_paused\",\"name\":\"abcdefghi\",\"paused\":false}", "ENOENT",
                "agent \"abcdefghi\" is not managed by this hive");

        /* Nothing was created for the unknown agent. */
        char *agents = NULL;
        assert_true(asprintf(&agents, "%s/agents", fx->cfg.state_dir) > 0);
        assert_false(exists(agents));
        free(agents);
}

/* The refusal for an unknown agent is the recorded hyperhive error plus our error_code. */
static void test_unknown_agent_matches_fixture(void **state)
{
        Fixture *fx = *state;
        char *path = tu_fixture_path("error.json");
        char *want = tu_read_file(path, NULL);
        assert_non_null(want);
        json_t *fixture = json_loads(want, 0, NULL);
        assert_non_null(fixture);

        json_t *got = call(fx, "{\"cmd\":\"set_paused\",\"name\":\"ghost\",\"paused\":true}", 0);
        assert_string_equal(json_string_value(json_object_get(got, "error_code")), "ENOENT");
        assert_int_equal(json_object_del(got, "error_code"), 0);
        assert_true(json_equal(got, fixture));
        char *line = proto_dump_line(got, NULL);
        assert_string_equal(line, want);

        free(line);
        json_decref(got);
        json_decref(fixture);
        free(want);
        free(path);
}

/* ---- verbs ---- */

static void test_list(void **state)
{
        Fixture *fx = *state;
        expect_exact(fx, "{\"cmd\":\"list\"}", 1, "{\"version\":1,\"ok\":true,\"agents\":[]}\n");
        insert(fx, &(AgentRecord){.name = "zeta", .status = "running"});
        insert(fx, &(AgentRecord){.name = "alpha"});
        expect_exact(fx, "{\"cmd\":\"list\"}", 1,
                     "{\"version\":1,\"ok\":true,\"agents\":[\"alpha\",\"zeta\"]}\n");
}

static void insert_status_agents(Fixture *fx)
{
        insert(fx, &(AgentRecord){
                           .name = "off",
                           .status = "stopped",
                           .status_text = "stale text",
                           .status_set_at = 1788778800,
                           .deployed_sha = "cafebabe0001ffffffffffffffffffffffffffff",
                   });
        insert(fx, &(AgentRecord){
                           .name = "busy",
                           .status = "running",
                           .parent = "boss",
                           .active_model = "claude-opus-4-6",
                           .status_text = "running the P1 gate",
                           .status_set_at = 1788784800,
                           .deployed_sha = "1bfaf24abcde0123456789abcdef0123456789ab",
                   });
        insert(fx, &(AgentRecord){.name = "wedged", .status = "failed", .deployed_sha = "abc"});
        insert(fx, &(AgentRecord){.name = "idle", .status = "running"});
}

static const char status_busy[] =
        "{\"name\":\"busy\",\"running\":true,\"failed\":false,\"needs_update\":false,"
        "\"needs_login\":false,\"deployed_sha\":\"1bfaf24abcde\",\"pending_reminders\":0,"
        "\"paused\":false,\"parent\":\"boss\",\"active_model\":\"claude-opus-4-6\","
        "\"status_text\":\"running the P1 gate\",\"status_set_at\":\"2026-09-07T12:40:00Z\"";
static const char status_idle[] =
        "{\"name\":\"idle\",\"running\":true,\"failed\":false,\"needs_update\":false,"
        "\"needs_login\":false,\"pending_reminders\":0,\"paused\":false";
static const char status_off[] =
        "{\"name\":\"off\",\"running\":false,\"failed\":false,\"needs_update\":false,"
        "\"needs_login\":false,\"deployed_sha\":\"cafebabe0001\",\"pending_reminders\":0,"
        "\"paused\":false";
static const char status_wedged[] =
        "{\"name\":\"wedged\",\"running\":false,\"failed\":true,\"needs_update\":false,"
        "\"needs_login\":false,\"deployed_sha\":\"abc\",\"pending_reminders\":0,"
        "\"paused\":false";

static void expect_keys(const json_t *row, const char *const *keys)
{
        size_t n = 0;
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)row, key, v)
        {
                assert_non_null(keys[n]);
                assert_string_equal(key, keys[n]);
                n++;
        }
        assert_null(keys[n]);
}

static void test_agent_status(void **state)
{
        Fixture *fx = *state;
        expect_exact(fx, "{\"cmd\":\"agent_status\"}", 1,
                     "{\"version\":1,\"ok\":true,\"agent_statuses\":[]}\n");
        insert_status_agents(fx);

        char want[2048];
        snprintf(want, sizeof(want),
                 "{\"version\":1,\"ok\":true,\"agent_statuses\":[%s},%s},%s},%s}]}\n", status_busy,
                 status_idle, status_off, status_wedged);
        expect_exact(fx, "{\"cmd\":\"agent_status\"}", 1, want);

        json_t *j = call(fx, "{\"cmd\":\"agent_status\"}", 1);
        json_t *rows = json_object_get(j, "agent_statuses");
        assert_int_equal(json_array_size(rows), 4);
        /* Running with status text: text and time shown. */
        const char *busy_keys[] = {
                "name",         "running",           "failed", "needs_update", "needs_login",
                "deployed_sha", "pending_reminders", "paused", "parent",       "active_model",
                "status_text",  "status_set_at",     NULL};
        expect_keys(json_array_get(rows, 0), busy_keys);
        /* Stopped with stale status text: hidden. */
        const char *off_keys[] = {"name",
                                  "running",
                                  "failed",
                                  "needs_update",
                                  "needs_login",
                                  "deployed_sha",
                                  "pending_reminders",
                                  "paused",
                                  NULL};
        expect_keys(json_array_get(rows, 2), off_keys);
        json_decref(j);
}

static void test_agent_status_url_with_domain(void **state)
{
        Fixture *fx = *state;
        insert_status_agents(fx);
        fx->cfg.domain = "hive.local";
        char want[2048];
        snprintf(want, sizeof(want),
                 "{\"version\":1,\"ok\":true,\"agent_statuses\":["
                 "%s,\"url\":\"https://hive.local/agent/busy/\"},"
                 "%s,\"url\":\"https://hive.local/agent/idle/\"},"
                 "%s,\"url\":\"https://hive.local/agent/off/\"},"
                 "%s,\"url\":\"https://hive.local/agent/wedged/\"}]}\n",
                 status_busy, status_idle, status_off, status_wedged);
        expect_exact(fx, "{\"cmd\":\"agent_status\"}", 1, want);
        fx->cfg.domain = NULL;
}

static void test_urls(void **state)
{
        Fixture *fx = *state;
        expect_exact(fx, "{\"cmd\":\"urls\"}", 1, "{\"version\":1,\"ok\":true,\"urls\":{}}\n");

        /* Configured like the recorded hive, the answer is the fixture byte for byte. */
        fx->cfg.domain = "hive.local";
        fx->cfg.home_url = "https://hive.local/";
        fx->cfg.forge_url = "https://forge.hive.local/";
        fx->cfg.matrix_url = "https://matrix.hive.local/";
        char *path = tu_fixture_path("urls.json");
        char *want = tu_read_file(path, NULL);
        assert_non_null(want);
        expect_exact(fx, "{\"cmd\":\"urls\"}", 1, want);
        free(want);
        free(path);
        fx->cfg.domain = fx->cfg.home_url = fx->cfg.forge_url = fx->cfg.matrix_url = NULL;
}

static void test_version_verb(void **state)
{
        Fixture *fx = *state;
        json_t *j = call(fx, "{\"cmd\":\"version\"}", 1);
        assert_string_equal(json_string_value(json_object_get(j, "daemon_version")), HIVE_VERSION);
        assert_int_equal(json_integer_value(json_object_get(j, "protocol_version")), 1);
        assert_string_equal(json_string_value(json_object_get(j, "backend")), "process");
        json_t *backends = json_object_get(j, "backends");
        assert_true(json_is_array(backends));
        bool process = false;
        size_t i;
        json_t *v;
        json_array_foreach(backends, i, v) process =
                process || strcmp(json_string_value(v), "process") == 0;
        assert_true(process);
        json_decref(j);
}

static bool status_paused(Fixture *fx, const char *name)
{
        json_t *j = call(fx, "{\"cmd\":\"agent_status\"}", 1);
        size_t i;
        json_t *row;
        int paused = -1;
        json_array_foreach(json_object_get(j, "agent_statuses"), i,
                           row) if (strcmp(json_string_value(json_object_get(row, "name")), name) ==
                                    0) paused = json_is_true(json_object_get(row, "paused"));
        json_decref(j);
        assert_true(paused >= 0);
        return paused;
}

static void test_set_paused(void **state)
{
        Fixture *fx = *state;
        insert(fx, &(AgentRecord){.name = "p-1"});
        insert(fx, &(AgentRecord){.name = "other"});
        char *marker = marker_path(fx, "p-1");
        const char *pause = "{\"cmd\":\"set_paused\",\"name\":\"p-1\",\"paused\":true}";
        const char *resume = "{\"cmd\":\"set_paused\",\"name\":\"p-1\",\"paused\":false}";
        const char *ok = "{\"version\":1,\"ok\":true}\n";

        /* Un-pausing an agent that never was paused is fine and creates nothing. */
        expect_exact(fx, resume, 1, ok);
        assert_false(exists(marker));
        assert_false(status_paused(fx, "p-1"));

        for (int i = 0; i < 2; i++) {
                expect_exact(fx, pause, 1, ok);
                assert_true(exists(marker));
                assert_true(status_paused(fx, "p-1"));
                assert_false(status_paused(fx, "other"));
        }
        struct stat st;
        assert_int_equal(lstat(marker, &st), 0);
        assert_true(S_ISREG(st.st_mode));

        for (int i = 0; i < 2; i++) {
                expect_exact(fx, resume, 1, ok);
                assert_false(exists(marker));
                assert_false(status_paused(fx, "p-1"));
        }
        free(marker);
}

/* ---- request ids (VERB_DEDUPE) ---- */

/* A socket of identity `dd_who` over the fixture's daemon: "send" stores messages as the agent
 * sockets do; "wake" is another deduplicated verb; "half" writes a message and then refuses;
 * "park" parks; "plain" is not deduplicated. */
static const char *dd_who = "a1";

static Store *dd_store(void *userdata)
{
        Daemon *d = userdata;
        return d->store;
}

static const char *dd_identity(void *userdata)
{
        return dd_who;
}

static int dd_send(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        return agent_server_send(ctx->userdata, ctx, dd_who, req, resp);
}

static int dd_wake(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        return json_object_set_new(resp, "woke", json_true());
}

static int dd_half(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        Daemon *d = ctx->userdata;
        int64_t id;
        assert_int_equal(broker_send(d->store, dd_who, "b2", "half", 0, &id), 0);
        return dispatch_fail(ctx, -EIO, "half done");
}

static int dd_park(DispatchCtx *ctx, json_t *req, json_t *resp)
{
        return DISPATCH_PARKED;
}

static const VerbSpec dd_verbs[] = {
        {"send", dd_send, agent_send_fields, VERB_DEDUPE, "send"},
        {"wake", dd_wake, NULL, VERB_DEDUPE, "wake"},
        {"half", dd_half, NULL, VERB_DEDUPE, "half"},
        {"park", dd_park, NULL, VERB_DEDUPE, "park"},
        {"plain", dd_wake, NULL, 0, "plain"},
};

static const VerbTable dd_table = {
        .socket = "the test socket",
        .verbs = dd_verbs,
        .n_verbs = ELEMENTSOF(dd_verbs),
        .dedupe_store = dd_store,
        .dedupe_identity = dd_identity,
};

static const VerbTable dd_table_without_store = {
        .socket = "the test socket",
        .verbs = dd_verbs,
        .n_verbs = ELEMENTSOF(dd_verbs),
};

/* Dispatches line on t; returns the answer line (malloc'ed) and checks the return value. */
static char *dd_on(Fixture *fx, const VerbTable *t, const char *line, int want_r)
{
        char *out = NULL;
        size_t len = 0;
        int r = dispatch_line(t, &fx->d, NULL, line, strlen(line), &out, &len, NULL);
        assert_int_equal(r, want_r);
        return out;
}

static char *dd(Fixture *fx, const char *line, int want_r)
{
        return dd_on(fx, &dd_table, line, want_r);
}

static void dd_refused(Fixture *fx, const char *line, const char *code, const char *needle)
{
        _cleanup_free_ char *out = dd(fx, line, 0);
        json_t *j = json_loads(out, 0, NULL);
        assert_non_null(j);
        const char *error = json_string_value(json_object_get(j, "error"));
        if (strcmp(json_string_value(json_object_get(j, "error_code")), code) != 0 ||
            !strstr(error, needle))
                fail_msg("%s: %s", line, out);
        json_decref(j);
}

static int64_t dd_count(Fixture *fx, const char *sql)
{
        return tu_sql_int(fx->d.store, sql, 0);
}

#define DD_SEND "{\"cmd\":\"send\",\"to\":\"b2\",\"body\":\"hi\",\"request_id\":\"req-0001\"}"

static void dd_agents(Fixture *fx)
{
        insert(fx, &(AgentRecord){.name = "a1"});
        insert(fx, &(AgentRecord){.name = "b2"});
        dd_who = "a1";
}

static void test_request_id_repeat_is_answered_as_the_first(void **state)
{
        Fixture *fx = *state;
        dd_agents(fx);
        _cleanup_free_ char *first = dd(fx, DD_SEND, 1);
        assert_true(store_batch_open(fx->d.store)); /* the answer waits for this commit */
        assert_int_equal(dd_count(fx, "SELECT COUNT(*) FROM messages"), 1);
        int64_t id = dd_count(fx, "SELECT id FROM messages");
        char want[128];
        snprintf(want, sizeof(want), "{\"version\":1,\"ok\":true,\"id\":%lld}\n", (long long)id);
        assert_string_equal(first, want);
        _cleanup_free_ char *cmd = NULL, *answer = NULL;
        assert_int_equal(request_ids_get(fx->d.store, "a1", "req-0001", &cmd, &answer), 1);
        assert_string_equal(cmd, "send");
        assert_int_equal(strlen(answer), strlen(want) - 1);
        assert_int_equal(strncmp(answer, want, strlen(answer)), 0);

        /* In the same round (the record is not committed yet) and after the commit. */
        _cleanup_free_ char *again = dd(fx, DD_SEND, 1);
        assert_string_equal(again, first);
        assert_int_equal(store_batch_commit(fx->d.store), 0);
        _cleanup_free_ char *later = dd(fx, DD_SEND, 1);
        assert_string_equal(later, first);
        assert_false(store_batch_open(fx->d.store)); /* a repeat writes nothing */
        /* Also after a restart: the record is durable. */
        char *db = strdup(sqlite3_db_filename(store_db(fx->d.store), "main"));
        fx->d.store = store_close(fx->d.store);
        assert_int_equal(store_open(db, &fx->d.store), 0);
        free(db);
        _cleanup_free_ char *restarted = dd(fx, DD_SEND, 1);
        assert_string_equal(restarted, first);
        assert_int_equal(dd_count(fx, "SELECT COUNT(*) FROM messages"), 1);

        /* Another body under the same id is still the first request: only the id counts. */
        _cleanup_free_ char *other = dd(
                fx, "{\"cmd\":\"send\",\"to\":\"b2\",\"body\":\"x\",\"request_id\":\"req-0001\"}",
                1);
        assert_string_equal(other, first);
        /* A new id is a new message; so is the same id from another identity. */
        _cleanup_free_ char *fresh = dd(
                fx, "{\"cmd\":\"send\",\"to\":\"b2\",\"body\":\"hi\",\"request_id\":\"req-0002\"}",
                1);
        assert_string_not_equal(fresh, first);
        dd_who = "b2";
        _cleanup_free_ char *theirs = dd(
                fx, "{\"cmd\":\"send\",\"to\":\"a1\",\"body\":\"hi\",\"request_id\":\"req-0001\"}",
                1);
        assert_string_not_equal(theirs, first);
        assert_int_equal(dd_count(fx, "SELECT COUNT(*) FROM messages"), 3);
        assert_int_equal(dd_count(fx, "SELECT COUNT(*) FROM request_ids"), 3);
}

/* The message and the record are written in one transaction: another connection sees
 * neither before the commit, both after it. */
static void test_request_id_commits_with_the_verb(void **state)
{
        Fixture *fx = *state;
        dd_agents(fx);
        assert_int_equal(store_batch_commit(fx->d.store), 0);
        free(dd(fx, DD_SEND, 1));
        sqlite3 *h = NULL;
        assert_int_equal(sqlite3_open_v2(sqlite3_db_filename(store_db(fx->d.store), "main"), &h,
                                         SQLITE_OPEN_READONLY, NULL),
                         SQLITE_OK);
        const char *q = "SELECT (SELECT COUNT(*) FROM messages) * 10 + "
                        "(SELECT COUNT(*) FROM request_ids)";
        sqlite3_stmt *st = NULL;
        assert_int_equal(sqlite3_prepare_v2(h, q, -1, &st, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int(st, 0), 0);
        sqlite3_reset(st);
        assert_int_equal(store_batch_commit(fx->d.store), 0);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int(st, 0), 11);
        sqlite3_finalize(st);
        sqlite3_close(h);
}

static void test_request_id_for_another_verb(void **state)
{
        Fixture *fx = *state;
        dd_agents(fx);
        free(dd(fx, DD_SEND, 1));
        dd_refused(fx, "{\"cmd\":\"wake\",\"request_id\":\"req-0001\"}", "EINVAL",
                   "request_id req-0001 was already used for send");
        assert_int_equal(dd_count(fx, "SELECT COUNT(*) FROM request_ids"), 1);
}

static void test_request_id_malformed(void **state)
{
        Fixture *fx = *state;
        dd_agents(fx);
        char long_id[80];
        memset(long_id, 'a', 65);
        long_id[65] = '\0';
        char line[256];
        const char *bad[] = {"\"short\"",           "\"\"",     "\"has space\"", "\"dots.are.out\"",
                             "\"caf\\u00e9-1234\"", "12345678", "null",          "[\"abcdefgh\"]"};
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                snprintf(line, sizeof(line), "{\"cmd\":\"wake\",\"request_id\":%s}", bad[i]);
                dd_refused(fx, line, "EINVAL", "\"request_id\" must be a string of 8 to 64");
        }
        snprintf(line, sizeof(line), "{\"cmd\":\"wake\",\"request_id\":\"%s\"}", long_id);
        dd_refused(fx, line, "EINVAL", "8 to 64 characters");
        long_id[64] = '\0';
        snprintf(line, sizeof(line), "{\"cmd\":\"wake\",\"request_id\":\"%s\"}", long_id);
        free(dd(fx, line, 1));
        free(dd(fx, "{\"cmd\":\"wake\",\"request_id\":\"AZaz09_-\"}", 1));
        assert_int_equal(dd_count(fx, "SELECT COUNT(*) FROM request_ids"), 2);
        /* A verb without the flag, or a table without a store, ignores the key. */
        free(dd(fx, "{\"cmd\":\"plain\",\"request_id\":\"x\"}", 1));
        free(dd_on(fx, &dd_table_without_store, "{\"cmd\":\"wake\",\"request_id\":\"x\"}", 1));
        free(dd_on(fx, &dd_table_without_store, DD_SEND, 1));
        free(dd_on(fx, &dd_table_without_store, DD_SEND, 1));
        assert_int_equal(dd_count(fx, "SELECT COUNT(*) FROM request_ids"), 2);
        assert_int_equal(dd_count(fx, "SELECT COUNT(*) FROM messages"), 2);
}

static void test_request_id_refusals_are_not_recorded(void **state)
{
        Fixture *fx = *state;
        dd_agents(fx);
        dd_refused(fx,
                   "{\"cmd\":\"send\",\"to\":\"c3\",\"body\":\"hi\",\"request_id\":\"req-0001\"}",
                   "ENOENT", "unknown recipient");
        /* A refusal rolls back what the handler wrote before it refused. */
        dd_refused(fx, "{\"cmd\":\"half\",\"request_id\":\"req-0002\"}", "EIO", "half done");
        assert_int_equal(dd_count(fx, "SELECT COUNT(*) FROM messages"), 0);
        /* A parked request is answered later: nothing to record. */
        assert_null(dd(fx, "{\"cmd\":\"park\",\"request_id\":\"req-0003\"}", 2));
        assert_int_equal(dd_count(fx, "SELECT COUNT(*) FROM request_ids"), 0);
        /* Without a request id nothing changes: two sends are two messages. */
        free(dd(fx, "{\"cmd\":\"send\",\"to\":\"b2\",\"body\":\"hi\"}", 1));
        free(dd(fx, "{\"cmd\":\"send\",\"to\":\"b2\",\"body\":\"hi\"}", 1));
        assert_int_equal(dd_count(fx, "SELECT COUNT(*) FROM messages"), 2);
        /* The refused id is free: sent again once it can succeed, it runs. */
        insert(fx, &(AgentRecord){.name = "c3"});
        free(dd(fx, "{\"cmd\":\"send\",\"to\":\"c3\",\"body\":\"hi\",\"request_id\":\"req-0001\"}",
                1));
        assert_int_equal(dd_count(fx, "SELECT COUNT(*) FROM messages"), 3);
        assert_int_equal(dd_count(fx, "SELECT COUNT(*) FROM request_ids"), 1);
}

/* The agent sockets flag exactly the verbs the client (hivelink) gives request ids. */
static void test_agent_verbs_dedupe_what_the_client_ids(void **state)
{
        assert_non_null(agent_verb_table.dedupe_store);
        assert_non_null(agent_verb_table.dedupe_identity);
        size_t n = 0;
        for (size_t i = 0; i < agent_verb_table.n_verbs; i++) {
                const VerbSpec *v = &agent_verb_table.verbs[i];
                bool flagged = (v->flags & VERB_DEDUPE) != 0;
                if (flagged != proto_verb_takes_request_id(v->cmd))
                        fail_msg("%s: VERB_DEDUPE %d, proto_verb_takes_request_id %d", v->cmd,
                                 flagged, !flagged);
                n += flagged;
        }
        assert_int_equal(n, 7);
        assert_false(proto_verb_takes_request_id("recv"));
        assert_false(proto_verb_takes_request_id("restart"));
        assert_false(proto_verb_takes_request_id(NULL));
}

int main(void)
{
        /* set_paused logs each change at info level; keep the test output to cmocka's. */
        log_set_max_level(LOG_WARNING);
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        const struct CMUnitTest tests[] = {
                T(test_invalid_json),
                T(test_not_an_object),
                T(test_missing_cmd),
                T(test_cmd_not_string),
                T(test_unknown_cmd),
                T(test_version),
                T(test_unknown_keys_ignored),
                T(test_set_paused_missing_fields),
                T(test_set_paused_wrong_types),
                T(test_set_paused_invalid_name),
                T(test_set_paused_unknown_agent),
                T(test_unknown_agent_matches_fixture),
                T(test_list),
                T(test_agent_status),
                T(test_agent_status_url_with_domain),
                T(test_urls),
                T(test_version_verb),
                T(test_set_paused),
                T(test_request_id_repeat_is_answered_as_the_first),
                T(test_request_id_commits_with_the_verb),
                T(test_request_id_for_another_verb),
                T(test_request_id_malformed),
                T(test_request_id_refusals_are_not_recorded),
                T(test_agent_verbs_dedupe_what_the_client_ids),
        };
        return cmocka_run_group_tests_name("dispatch", tests, NULL, NULL);
}
