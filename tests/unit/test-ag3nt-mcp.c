/* Unit tests of the harness's MCP side (ag3nt/): the tool table and its JSON Schemas, argument
 * checks, JSON-RPC handling, the environment table, and the reconnecting socket link against a
 * small peer on a real unix socket that answers, stays silent, or drops connections. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "cleanup.h"
#include "hive-config.h"
#include "hivelink.h"
#include "mcp.h"
#include "proto.h"
#include "settings.h"
#include "testutil.h"
#include "timeutil.h"
#include "tools.h"

static const char *const agent_tools[] = {"send",
                                          "recv",
                                          "ask",
                                          "answer",
                                          "remind",
                                          "get_open_threads",
                                          "cancel_loose_end",
                                          "set_status",
                                          "whoami",
                                          "request_next_turn",
                                          NULL};
static const char *const manager_tools[] = {"request_spawn",
                                            "request_apply_commit",
                                            "request_update_meta_inputs",
                                            "kill",
                                            "start",
                                            "restart",
                                            "update",
                                            "get_logs",
                                            NULL};

/* ---- tool table and schemas ---- */

static void check_schema(const json_t *s)
{
        assert_string_equal(json_string_value(json_object_get(s, "type")), "object");
        json_t *props = json_object_get(s, "properties");
        json_t *req = json_object_get(s, "required");
        assert_true(json_is_object(props));
        assert_true(json_is_array(req));
        assert_true(json_is_false(json_object_get(s, "additionalProperties")));
        size_t i;
        json_t *v;
        json_array_foreach(req, i, v)
        {
                assert_true(json_is_string(v));
                assert_non_null(json_object_get(props, json_string_value(v)));
        }
        const char *key;
        json_object_foreach(props, key, v)
        {
                const char *type = json_string_value(json_object_get(v, "type"));
                assert_non_null(type);
                assert_true(strcmp(type, "string") == 0 || strcmp(type, "integer") == 0 ||
                            strcmp(type, "boolean") == 0 || strcmp(type, "array") == 0);
                assert_true(json_is_string(json_object_get(v, "description")));
                if (strcmp(type, "array") == 0)
                        assert_string_equal(json_string_value(json_object_get(
                                                    json_object_get(v, "items"), "type")),
                                            "string");
        }
}

static void check_list(HarnessFlavor flavor, const char *const *want1, const char *const *want2)
{
        _cleanup_json_ json_t *list = tools_list(flavor);
        assert_non_null(list);
        size_t n = 0;
        for (const char *const *w = want1; *w; w++, n++) {
                json_t *t = json_array_get(list, n);
                assert_string_equal(json_string_value(json_object_get(t, "name")), *w);
                assert_true(json_string_length(json_object_get(t, "description")) > 10);
                check_schema(json_object_get(t, "inputSchema"));
        }
        for (const char *const *w = want2; w && *w; w++, n++) {
                json_t *t = json_array_get(list, n);
                assert_string_equal(json_string_value(json_object_get(t, "name")), *w);
                check_schema(json_object_get(t, "inputSchema"));
        }
        assert_int_equal(json_array_size(list), n);
        assert_int_equal(tools_count(flavor), n);
        assert_null(tools_get(flavor, n));
}

static void test_tool_sets(void **state)
{
        check_list(HARNESS_AGENT, agent_tools, NULL);
        check_list(HARNESS_MANAGER, agent_tools, manager_tools);
        assert_null(tools_find(HARNESS_AGENT, "kill"));
        assert_non_null(tools_find(HARNESS_MANAGER, "kill"));
        assert_null(tools_find(HARNESS_MANAGER, "teleport"));
        assert_true(tools_find(HARNESS_AGENT, "request_next_turn")->flags & TOOL_LOCAL);
        assert_true(tools_find(HARNESS_AGENT, "recv")->flags & TOOL_ACK_AFTER);
}

static void test_schema_details(void **state)
{
        _cleanup_json_ json_t *s = tools_input_schema(tools_find(HARNESS_AGENT, "send"));
        _cleanup_json_ json_t *want = json_loads("[\"to\",\"body\"]", 0, NULL);
        assert_true(json_equal(json_object_get(s, "required"), want));
        json_t *irt = json_object_get(json_object_get(s, "properties"), "in_reply_to");
        assert_string_equal(json_string_value(json_object_get(irt, "type")), "integer");
        assert_int_equal(json_integer_value(json_object_get(irt, "minimum")), 1);

        _cleanup_json_ json_t *c =
                tools_input_schema(tools_find(HARNESS_AGENT, "cancel_loose_end"));
        json_t *kind = json_object_get(json_object_get(c, "properties"), "kind");
        _cleanup_json_ json_t *kinds = json_loads("[\"question\",\"reminder\"]", 0, NULL);
        assert_true(json_equal(json_object_get(kind, "enum"), kinds));

        _cleanup_json_ json_t *w = tools_input_schema(tools_find(HARNESS_AGENT, "whoami"));
        assert_int_equal(json_object_size(json_object_get(w, "properties")), 0);
        assert_int_equal(json_array_size(json_object_get(w, "required")), 0);
}

/* ---- argument checks ---- */

static int check(HarnessFlavor flavor, const char *tool, const char *args, char **ret_error)
{
        _cleanup_json_ json_t *a = args ? json_loads(args, JSON_DECODE_ANY, NULL) : NULL;
        assert_true(!args || a);
        *ret_error = NULL;
        return tools_check_args(tools_find(flavor, tool), a, ret_error);
}

static void expect_bad(HarnessFlavor flavor, const char *tool, const char *args, const char *needle)
{
        _cleanup_free_ char *err = NULL;
        assert_int_equal(check(flavor, tool, args, &err), -EINVAL);
        assert_non_null(err);
        if (!strstr(err, needle))
                fail_msg("\"%s\" does not contain \"%s\"", err, needle);
}

static void test_check_args(void **state)
{
        _cleanup_free_ char *err = NULL;
        assert_int_equal(check(HARNESS_AGENT, "send", "{\"to\":\"b2\",\"body\":\"x\"}", &err), 0);
        assert_null(err);
        assert_int_equal(check(HARNESS_AGENT, "send",
                               "{\"to\":\"b2\",\"body\":\"x\",\"in_reply_to\":4}", &err),
                         0);
        assert_int_equal(check(HARNESS_AGENT, "whoami", NULL, &err), 0);
        assert_int_equal(check(HARNESS_AGENT, "whoami", "{}", &err), 0);
        assert_int_equal(check(HARNESS_AGENT, "recv", "{\"wait_seconds\":180,\"max\":32}", &err),
                         0);
        assert_int_equal(check(HARNESS_AGENT, "ask",
                               "{\"question\":\"q\",\"options\":[\"a\",\"b\"],\"multi\":true}",
                               &err),
                         0);
        assert_int_equal(check(HARNESS_MANAGER, "request_update_meta_inputs", "{}", &err), 0);

        expect_bad(HARNESS_AGENT, "send", "{\"to\":\"b2\"}", "send needs \"body\"");
        expect_bad(HARNESS_AGENT, "send", "{\"to\":\"b2\",\"body\":1}",
                   "\"body\" must be a string");
        expect_bad(HARNESS_AGENT, "send", "{\"to\":\"b2\",\"body\":\"x\",\"cmd\":\"ack\"}",
                   "send has no argument \"cmd\"; it takes: to, body, in_reply_to");
        expect_bad(HARNESS_AGENT, "send", "{\"to\":\"b2\",\"body\":\"x\",\"in_reply_to\":1.5}",
                   "whole number");
        expect_bad(HARNESS_AGENT, "send", "[]", "must be a JSON object");
        expect_bad(HARNESS_AGENT, "whoami", "{\"name\":\"x\"}", "whoami takes no arguments");
        expect_bad(HARNESS_AGENT, "recv", "{\"wait_seconds\":181}", "from 0 to 180, not 181");
        expect_bad(HARNESS_AGENT, "recv", "{\"max\":0}", "from 1 to 32, not 0");
        expect_bad(HARNESS_AGENT, "ask", "{\"question\":\"q\",\"multi\":1}", "true or false");
        expect_bad(HARNESS_AGENT, "ask", "{\"question\":\"q\",\"options\":[\"a\",2]}", "element 1");
        expect_bad(HARNESS_AGENT, "ask", "{\"question\":\"q\",\"options\":\"a\"}",
                   "list of strings");
        expect_bad(HARNESS_AGENT, "cancel_loose_end", "{\"kind\":\"approval\",\"id\":1}",
                   "one of \"question\" and \"reminder\"");
        expect_bad(HARNESS_MANAGER, "get_logs", "{\"agent\":\"a1\",\"lines\":501}",
                   "from 1 to 500");
}

static void test_request_and_texts(void **state)
{
        _cleanup_json_ json_t *args = json_loads("{\"to\":\"b2\",\"body\":\"hi\"}", 0, NULL);
        _cleanup_json_ json_t *req = tools_request(tools_find(HARNESS_AGENT, "send"), args);
        _cleanup_free_ char *line = json_dumps(req, JSON_COMPACT);
        assert_string_equal(line, "{\"cmd\":\"send\",\"to\":\"b2\",\"body\":\"hi\"}");
        _cleanup_json_ json_t *bare = tools_request(tools_find(HARNESS_AGENT, "whoami"), NULL);
        _cleanup_free_ char *bare_line = json_dumps(bare, JSON_COMPACT);
        assert_string_equal(bare_line, "{\"cmd\":\"whoami\"}");

        _cleanup_json_ json_t *ok = json_loads("{\"version\":1,\"ok\":true,\"id\":7}", 0, NULL);
        _cleanup_free_ char *t1 = tools_answer_text(ok);
        assert_string_equal(t1, "{\"id\":7}");
        _cleanup_json_ json_t *bare_ok = json_loads("{\"version\":1,\"ok\":true}", 0, NULL);
        _cleanup_free_ char *t2 = tools_answer_text(bare_ok);
        assert_string_equal(t2, "{}");
        _cleanup_json_ json_t *no = json_loads("{\"version\":1,\"ok\":false,\"error\":\"no such "
                                               "agent\",\"error_code\":\"ENOENT\"}",
                                               0, NULL);
        _cleanup_free_ char *t3 = tools_refusal_text(no);
        assert_string_equal(t3, "no such agent (ENOENT)");
        _cleanup_json_ json_t *no2 = json_loads("{\"ok\":false,\"error\":\"nope\"}", 0, NULL);
        _cleanup_free_ char *t4 = tools_refusal_text(no2);
        assert_string_equal(t4, "nope");
}

/* ---- settings ---- */

static void clear_env(void)
{
        const char *vars[] = {"HIVE_SOCKET",           "HIVE_LABEL",     "HIVE_PORT",
                              "HIVE_STATE_DIR",        "HIVE_MODEL_BIN", "HIVE_OPERATOR_PRONOUNS",
                              "HIVE_RECONNECT_BASE_MS"};
        for (size_t i = 0; i < ELEMENTSOF(vars); i++)
                unsetenv(vars[i]);
}

static void test_settings(void **state)
{
        clear_env();
        Settings s;
        char *err = NULL;
        assert_int_equal(settings_load(&s, HARNESS_AGENT, &err), 0);
        assert_string_equal(s.socket, "/run/hive/mcp.sock");
        assert_string_equal(s.state_dir, "/state");
        assert_string_equal(s.model_bin, "claude");
        assert_null(s.label);
        assert_null(s.operator_pronouns);
        assert_int_equal(s.port, 0);
        assert_int_equal(s.reconnect_base_ms, 2000);
        assert_int_equal(s.flavor, HARNESS_AGENT);
        settings_done(&s);

        setenv("HIVE_SOCKET", "/tmp/x.sock", 1);
        setenv("HIVE_LABEL", "a1", 1);
        setenv("HIVE_PORT", "8123", 1);
        setenv("HIVE_STATE_DIR", "", 1); /* empty: the default */
        setenv("HIVE_OPERATOR_PRONOUNS", "she/her", 1);
        setenv("HIVE_RECONNECT_BASE_MS", "25", 1);
        assert_int_equal(settings_load(&s, HARNESS_MANAGER, &err), 0);
        assert_string_equal(s.socket, "/tmp/x.sock");
        assert_string_equal(s.label, "a1");
        assert_int_equal(s.port, 8123);
        assert_string_equal(s.state_dir, "/state");
        assert_string_equal(s.operator_pronouns, "she/her");
        assert_int_equal(s.reconnect_base_ms, 25);
        assert_int_equal(s.flavor, HARNESS_MANAGER);
        _cleanup_free_ char *p = settings_state_path(&s, MARKER_NEXT_TURN);
        assert_string_equal(p, "/state/hyperhive-next-turn");
        settings_done(&s);

        setenv("HIVE_PORT", "70000", 1);
        assert_int_equal(settings_load(&s, HARNESS_AGENT, &err), -EINVAL);
        assert_string_equal(err, "$HIVE_PORT: \"70000\" is not a whole number from 1 to 65535");
        free(err);
        err = NULL;
        setenv("HIVE_PORT", "80x", 1);
        assert_int_equal(settings_load(&s, HARNESS_AGENT, &err), -EINVAL);
        free(err);
        err = NULL;
        clear_env();
        setenv("HIVE_RECONNECT_BASE_MS", "0", 1);
        assert_int_equal(settings_load(&s, HARNESS_AGENT, &err), -EINVAL);
        assert_non_null(strstr(err, "HIVE_RECONNECT_BASE_MS"));
        free(err);
        clear_env();
}

/* ---- JSON-RPC ---- */

typedef struct McpFixture {
        char *dir;
        Settings settings;
        HiveLink *link;
        Mcp mcp;
} McpFixture;

static int mcp_setup_flavor(void **state, HarnessFlavor flavor)
{
        McpFixture *f = calloc(1, sizeof(*f));
        assert_non_null(f);
        f->dir = tu_mkdtemp();
        clear_env();
        setenv("HIVE_STATE_DIR", f->dir, 1);
        _cleanup_free_ char *sock = NULL;
        assert_true(asprintf(&sock, "%s/none.sock", f->dir) > 0);
        setenv("HIVE_SOCKET", sock, 1);
        assert_int_equal(settings_load(&f->settings, flavor, NULL), 0);
        HiveLinkOptions o = {.path = f->settings.socket, .backoff_base_ms = 1, .give_up_ms = 0};
        assert_int_equal(hivelink_new(&o, &f->link), 0);
        mcp_init(&f->mcp, &f->settings, f->link);
        clear_env();
        *state = f;
        return 0;
}

static int mcp_setup(void **state)
{
        return mcp_setup_flavor(state, HARNESS_AGENT);
}

static int mcp_setup_manager(void **state)
{
        return mcp_setup_flavor(state, HARNESS_MANAGER);
}

static int mcp_teardown(void **state)
{
        McpFixture *f = *state;
        mcp_done(&f->mcp);
        hivelink_free(f->link);
        settings_done(&f->settings);
        tu_rm_rf(f->dir);
        free(f->dir);
        free(f);
        return 0;
}

/* Handles line; returns the reply (NULL for none). */
static json_t *handle(McpFixture *f, const char *line)
{
        json_t *reply = (json_t *)1;
        assert_int_equal(mcp_handle_line(&f->mcp, line, strlen(line), &reply), 0);
        return reply;
}

static void expect_error(McpFixture *f, const char *line, const char *id_json, int code)
{
        _cleanup_json_ json_t *r = handle(f, line);
        assert_non_null(r);
        assert_string_equal(json_string_value(json_object_get(r, "jsonrpc")), "2.0");
        _cleanup_json_ json_t *id = json_loads(id_json, JSON_DECODE_ANY, NULL);
        assert_true(json_equal(json_object_get(r, "id"), id));
        assert_null(json_object_get(r, "result"));
        assert_int_equal(json_integer_value(json_object_get(json_object_get(r, "error"), "code")),
                         code);
        assert_true(json_is_string(json_object_get(json_object_get(r, "error"), "message")));
}

static void test_rpc_initialize_ping_list(void **state)
{
        McpFixture *f = *state;
        _cleanup_json_ json_t *r =
                handle(f, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":"
                          "{\"protocolVersion\":\"2025-03-26\",\"capabilities\":{},\"clientInfo\":"
                          "{\"name\":\"t\",\"version\":\"1\"}}}");
        _cleanup_free_ char *line = json_dumps(r, JSON_COMPACT);
        assert_string_equal(
                line, "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"protocolVersion\":"
                      "\"2024-11-05\",\"capabilities\":{\"tools\":{}},"
                      "\"serverInfo\":{\"name\":\"hyperhive\",\"version\":\"" HIVE_VERSION "\"}}}");
        _cleanup_json_ json_t *p =
                handle(f, "{\"jsonrpc\":\"2.0\",\"id\":\"p\",\"method\":\"ping\"}");
        _cleanup_free_ char *pl = json_dumps(p, JSON_COMPACT);
        assert_string_equal(pl, "{\"jsonrpc\":\"2.0\",\"id\":\"p\",\"result\":{}}");
        _cleanup_json_ json_t *l =
                handle(f, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/list\",\"params\":{}}");
        assert_int_equal(json_array_size(json_object_get(json_object_get(l, "result"), "tools")),
                         tools_count(HARNESS_AGENT));
        assert_null(handle(f, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}"));
        assert_null(handle(f, "{\"jsonrpc\":\"2.0\",\"method\":\"made/up\"}"));
        assert_null(handle(f, "   "));
        assert_null(handle(f, "{\"jsonrpc\":\"2.0\",\"id\":5,\"result\":{}}"));
}

static void test_rpc_errors(void **state)
{
        McpFixture *f = *state;
        expect_error(f, "{\"jsonrpc\":", "null", MCP_PARSE_ERROR);
        expect_error(f, "\"text\"", "null", MCP_INVALID_REQUEST);
        expect_error(f, "[]", "null", MCP_INVALID_REQUEST);
        expect_error(f, "{\"jsonrpc\":\"1.0\",\"id\":3,\"method\":\"ping\"}", "3",
                     MCP_INVALID_REQUEST);
        expect_error(f, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":7}", "3", MCP_INVALID_REQUEST);
        expect_error(f, "{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"ping\"}", "null",
                     MCP_INVALID_REQUEST);
        expect_error(f, "{\"jsonrpc\":\"2.0\",\"id\":4}", "4", MCP_INVALID_REQUEST);
        expect_error(f, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"prompts/list\"}", "3",
                     MCP_METHOD_NOT_FOUND);
        expect_error(f, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"initialize\"}", "3",
                     MCP_INVALID_PARAMS);
        expect_error(f, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"ping\",\"params\":5}", "3",
                     MCP_INVALID_PARAMS);
        expect_error(f, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":{}}",
                     "3", MCP_INVALID_PARAMS);
        expect_error(f,
                     "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":"
                     "{\"name\":\"kill\",\"arguments\":{\"name\":\"b2\"}}}",
                     "3", MCP_INVALID_PARAMS);
        expect_error(f,
                     "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":"
                     "{\"name\":\"send\",\"arguments\":{\"to\":\"b2\"}}}",
                     "3", MCP_INVALID_PARAMS);
        expect_error(f,
                     "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":"
                     "{\"name\":\"send\",\"arguments\":\"to b2\"}}",
                     "3", MCP_INVALID_PARAMS);
}

static void test_rpc_batch(void **state)
{
        McpFixture *f = *state;
        _cleanup_json_ json_t *r =
                handle(f, "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"},"
                          "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"},"
                          "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"nope\"}]");
        assert_true(json_is_array(r));
        assert_int_equal(json_array_size(r), 2);
        assert_int_equal(json_integer_value(json_object_get(json_array_get(r, 0), "id")), 1);
        assert_int_equal(json_integer_value(json_object_get(
                                 json_object_get(json_array_get(r, 1), "error"), "code")),
                         MCP_METHOD_NOT_FOUND);
        assert_null(handle(f, "[{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}]"));
}

static void test_rpc_manager_lists_more(void **state)
{
        McpFixture *f = *state;
        _cleanup_json_ json_t *l =
                handle(f, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/list\"}");
        json_t *tools = json_object_get(json_object_get(l, "result"), "tools");
        assert_int_equal(json_array_size(tools), 18);
        assert_string_equal(json_string_value(json_object_get(json_array_get(tools, 17), "name")),
                            "get_logs");
}

static const char *result_text(json_t *r, bool *ret_is_error)
{
        json_t *res = json_object_get(r, "result");
        assert_non_null(res);
        *ret_is_error = json_is_true(json_object_get(res, "isError"));
        json_t *c = json_array_get(json_object_get(res, "content"), 0);
        assert_string_equal(json_string_value(json_object_get(c, "type")), "text");
        return json_string_value(json_object_get(c, "text"));
}

static void test_rpc_next_turn(void **state)
{
        McpFixture *f = *state;
        _cleanup_free_ char *marker = settings_state_path(&f->settings, MARKER_NEXT_TURN);
        struct stat st;
        assert_int_equal(stat(marker, &st), -1);
        _cleanup_json_ json_t *r = handle(f, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":"
                                             "\"tools/call\",\"params\":{\"name\":"
                                             "\"request_next_turn\",\"arguments\":{}}}");
        bool is_error = true;
        result_text(r, &is_error);
        assert_false(is_error);
        assert_int_equal(stat(marker, &st), 0);
        assert_true(S_ISREG(st.st_mode));

        /* Without its state dir: a tool error naming the place. */
        assert_int_equal(tu_rm_rf(f->dir), 0);
        _cleanup_json_ json_t *r2 = handle(f, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":"
                                              "\"tools/call\",\"params\":{\"name\":"
                                              "\"request_next_turn\"}}");
        const char *text = result_text(r2, &is_error);
        assert_true(is_error);
        assert_non_null(strstr(text, f->dir));
        assert_non_null(strstr(text, "No such file or directory"));
}

static void test_rpc_call_without_daemon(void **state)
{
        McpFixture *f = *state;
        /* The fixture's link does not retry: the call fails at once, as a tool error. */
        _cleanup_json_ json_t *r = handle(f, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":"
                                             "\"tools/call\",\"params\":{\"name\":\"whoami\"}}");
        bool is_error = false;
        const char *text = result_text(r, &is_error);
        assert_true(is_error);
        assert_non_null(strstr(text, "could not be reached"));
        assert_non_null(strstr(text, f->settings.socket));
}

/* ---- the link, against a peer on a real socket ---- */

typedef enum {
        PEER_ANSWER,     /* answer every request */
        PEER_DROP_FIRST, /* close the first connection after reading its request */
        PEER_SILENT,     /* read requests, never answer */
        PEER_GARBAGE,    /* answer with a line that is not JSON */
        PEER_REFUSE,     /* answer ok:false */
} PeerMode;

typedef struct Peer {
        char *dir, *path;
        int lfd;
        PeerMode mode;
        pthread_t thread;
        int stop_pipe[2];
        int requests;      /* request lines read */
        int connections;   /* connections accepted */
        char last_cmd[64]; /* the last request's cmd */
        char rids[8][80];  /* the request_id of request i ("" none), the first 8 */
} Peer;

static void peer_reply(int fd, const char *line)
{
        (void)!send(fd, line, strlen(line), MSG_NOSIGNAL);
}

static void *peer_main(void *userdata)
{
        Peer *p = userdata;
        for (;;) {
                struct pollfd pf[2] = {{.fd = p->lfd, .events = POLLIN},
                                       {.fd = p->stop_pipe[0], .events = POLLIN}};
                if (poll(pf, 2, 10000) <= 0 || pf[1].revents)
                        return NULL;
                int fd = accept4(p->lfd, NULL, NULL, SOCK_CLOEXEC);
                if (fd < 0)
                        return NULL;
                int conn = ++p->connections;
                char buf[65536];
                size_t len = 0;
                for (;;) {
                        struct pollfd cf[2] = {{.fd = fd, .events = POLLIN},
                                               {.fd = p->stop_pipe[0], .events = POLLIN}};
                        if (poll(cf, 2, 10000) <= 0 || cf[1].revents) {
                                close(fd);
                                return NULL;
                        }
                        ssize_t k = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
                        if (k <= 0)
                                break;
                        len += (size_t)k;
                        buf[len] = '\0';
                        char *nl;
                        bool closed = false;
                        while ((nl = strchr(buf, '\n'))) {
                                *nl = '\0';
                                p->requests++;
                                json_t *req = json_loads(buf, 0, NULL);
                                snprintf(p->last_cmd, sizeof(p->last_cmd), "%s",
                                         json_string_value(json_object_get(req, "cmd")));
                                const char *rid =
                                        json_string_value(json_object_get(req, "request_id"));
                                if (p->requests <= (int)ELEMENTSOF(p->rids))
                                        snprintf(p->rids[p->requests - 1], sizeof(p->rids[0]), "%s",
                                                 rid ? rid : "");
                                json_decref(req);
                                memmove(buf, nl + 1, len - (size_t)(nl + 1 - buf) + 1);
                                len -= (size_t)(nl + 1 - buf);
                                if (p->mode == PEER_DROP_FIRST && conn == 1) {
                                        closed = true;
                                        break;
                                }
                                if (p->mode == PEER_ANSWER || p->mode == PEER_DROP_FIRST)
                                        peer_reply(fd, "{\"version\":1,\"ok\":true,\"n\":1}\n");
                                else if (p->mode == PEER_GARBAGE)
                                        peer_reply(fd, "this is not json\n");
                                else if (p->mode == PEER_REFUSE)
                                        peer_reply(fd, "{\"version\":1,\"ok\":false,\"error\":"
                                                       "\"no such agent\",\"error_code\":"
                                                       "\"ENOENT\"}\n");
                        }
                        if (closed)
                                break;
                }
                close(fd);
        }
}

static Peer *peer_start(PeerMode mode)
{
        Peer *p = calloc(1, sizeof(*p));
        assert_non_null(p);
        p->mode = mode;
        p->dir = tu_mkdtemp();
        assert_true(asprintf(&p->path, "%s/peer.sock", p->dir) > 0);
        p->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(p->lfd >= 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", p->path);
        assert_int_equal(bind(p->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        assert_int_equal(listen(p->lfd, 8), 0);
        assert_int_equal(pipe2(p->stop_pipe, O_CLOEXEC), 0);
        assert_int_equal(pthread_create(&p->thread, NULL, peer_main, p), 0);
        return p;
}

static void peer_stop(Peer *p)
{
        (void)!write(p->stop_pipe[1], "x", 1);
        pthread_join(p->thread, NULL);
        close(p->stop_pipe[0]);
        close(p->stop_pipe[1]);
        close(p->lfd);
        tu_rm_rf(p->dir);
        free(p->dir);
        free(p->path);
        free(p);
}

static HiveLink *link_to(const char *path, int64_t give_up_ms)
{
        HiveLinkOptions o = {.path = path, .backoff_base_ms = 10, .give_up_ms = give_up_ms};
        HiveLink *l = NULL;
        assert_int_equal(hivelink_new(&o, &l), 0);
        return l;
}

static void test_backoff_sequence(void **state)
{
        const unsigned want[] = {2000, 4000, 8000, 16000, 30000, 30000, 30000};
        for (unsigned i = 0; i < ELEMENTSOF(want); i++)
                assert_int_equal(hivelink_backoff_ms(2000, i), want[i]);
        assert_int_equal(hivelink_backoff_ms(50, 0), 50);
        assert_int_equal(hivelink_backoff_ms(50, 3), 400);
        assert_int_equal(hivelink_backoff_ms(50, 4), 750);
        assert_int_equal(hivelink_backoff_ms(50, 1000), 750);
}

static void test_link_no_socket(void **state)
{
        char *dir = tu_mkdtemp();
        _cleanup_free_ char *path = NULL;
        assert_true(asprintf(&path, "%s/none.sock", dir) > 0);
        _cleanup_json_ json_t *req = json_pack("{s:s}", "cmd", "whoami");
        json_t *resp = NULL;

        HiveLink *l = link_to(path, 0);
        assert_int_equal(hivelink_request(l, req, 1000, &resp), -ENOENT);
        assert_null(resp);
        hivelink_free(l);

        /* Retrying for 150 ms at 10-20-40-80 ms: gives up after about that long. */
        l = link_to(path, 150);
        uint64_t t = timeutil_mono_usec();
        assert_int_equal(hivelink_request(l, req, 1000, &resp), -ENOENT);
        uint64_t took_ms = (timeutil_mono_usec() - t) / 1000;
        assert_true(took_ms >= 140 && took_ms < 2000);
        hivelink_free(l);

        char longpath[200];
        memset(longpath, 'x', sizeof(longpath) - 1);
        longpath[0] = '/';
        longpath[sizeof(longpath) - 1] = '\0';
        l = link_to(longpath, -1);
        assert_int_equal(hivelink_request(l, req, 1000, &resp), -ENAMETOOLONG);
        hivelink_free(l);
        tu_rm_rf(dir);
        free(dir);
}

static void test_link_keeps_one_connection(void **state)
{
        Peer *p = peer_start(PEER_ANSWER);
        HiveLink *l = link_to(p->path, 0);
        _cleanup_json_ json_t *req = json_pack("{s:s}", "cmd", "status");
        for (int i = 0; i < 3; i++) {
                json_t *resp = NULL;
                assert_int_equal(hivelink_request(l, req, 5000, &resp), 0);
                assert_int_equal(json_integer_value(json_object_get(resp, "n")), 1);
                json_decref(resp);
        }
        assert_int_equal(p->connections, 1);
        assert_int_equal(p->requests, 3);
        assert_int_equal(hivelink_reconnects(l), 0);
        hivelink_free(l);
        peer_stop(p);
}

static void test_link_sends_again_after_a_break(void **state)
{
        Peer *p = peer_start(PEER_DROP_FIRST);
        HiveLink *l = link_to(p->path, -1);
        _cleanup_json_ json_t *req = json_pack("{s:s, s:i}", "cmd", "recv", "wait_seconds", 5);
        json_t *resp = NULL;
        assert_int_equal(hivelink_request(l, req, 5000, &resp), 0);
        assert_true(json_is_true(json_object_get(resp, "ok")));
        json_decref(resp);
        /* The request reached the peer twice, on two connections. */
        assert_int_equal(p->requests, 2);
        assert_int_equal(p->connections, 2);
        assert_string_equal(p->last_cmd, "recv");
        assert_int_equal(hivelink_reconnects(l), 1);
        hivelink_free(l);
        peer_stop(p);

        /* Without retries the break is the answer. */
        p = peer_start(PEER_DROP_FIRST);
        l = link_to(p->path, 0);
        assert_int_equal(hivelink_request(l, req, 5000, &resp), -ECONNRESET);
        assert_int_equal(p->requests, 1);
        hivelink_free(l);
        peer_stop(p);
}

static bool hex32(const char *s)
{
        return strlen(s) == 32 && strspn(s, "0123456789abcdef") == 32;
}

/* A verb that a repeat would carry out twice gets a request id, the same in every copy sent,
 * and a new one per call; one the caller gave is kept; other verbs get none. */
static void test_link_request_ids(void **state)
{
        char a[HIVELINK_REQUEST_ID_SIZE], b[HIVELINK_REQUEST_ID_SIZE];
        assert_int_equal(hivelink_request_id_new(a), 0);
        assert_int_equal(hivelink_request_id_new(b), 0);
        assert_true(hex32(a) && hex32(b));
        assert_string_not_equal(a, b);

        Peer *p = peer_start(PEER_DROP_FIRST);
        HiveLink *l = link_to(p->path, -1);
        _cleanup_json_ json_t *send =
                json_pack("{s:s, s:s, s:s}", "cmd", "send", "to", "b2", "body", "x");
        json_t *resp = NULL;
        assert_int_equal(hivelink_request(l, send, 5000, &resp), 0);
        json_decref(resp);
        assert_int_equal(p->requests, 2); /* sent, the connection broke, sent again */
        assert_true(hex32(p->rids[0]));
        assert_string_equal(p->rids[0], p->rids[1]);
        assert_null(json_object_get(send, "request_id")); /* the caller's request is as it was */

        assert_int_equal(hivelink_request(l, send, 5000, &resp), 0); /* a new call, a new id */
        json_decref(resp);
        assert_true(hex32(p->rids[2]));
        assert_string_not_equal(p->rids[2], p->rids[0]);

        _cleanup_json_ json_t *own =
                json_pack("{s:s, s:s}", "cmd", "wake", "request_id", "mine-123");
        assert_int_equal(hivelink_request(l, own, 5000, &resp), 0);
        json_decref(resp);
        assert_string_equal(p->rids[3], "mine-123");

        _cleanup_json_ json_t *recv = json_pack("{s:s}", "cmd", "recv");
        assert_int_equal(hivelink_request(l, recv, 5000, &resp), 0);
        json_decref(resp);
        assert_string_equal(p->rids[4], "");
        assert_int_equal(p->requests, 5);
        hivelink_free(l);
        peer_stop(p);
}

static void test_link_timeout_and_garbage(void **state)
{
        _cleanup_json_ json_t *req = json_pack("{s:s}", "cmd", "status");
        json_t *resp = NULL;
        Peer *p = peer_start(PEER_SILENT);
        HiveLink *l = link_to(p->path, -1);
        assert_int_equal(hivelink_request(l, req, 100, &resp), -ETIMEDOUT);
        assert_int_equal(p->requests, 1); /* not sent again: the daemon has it */
        hivelink_free(l);
        peer_stop(p);

        p = peer_start(PEER_GARBAGE);
        l = link_to(p->path, -1);
        assert_int_equal(hivelink_request(l, req, 5000, &resp), -EBADMSG);
        hivelink_free(l);
        peer_stop(p);
}

static void test_rpc_call_through_peer(void **state)
{
        Peer *p = peer_start(PEER_REFUSE);
        Settings s = {.flavor = HARNESS_AGENT, .socket = p->path, .state_dir = p->dir};
        HiveLink *l = link_to(p->path, 0);
        Mcp m;
        mcp_init(&m, &s, l);
        const char *line = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":"
                           "{\"name\":\"send\",\"arguments\":{\"to\":\"ghost\",\"body\":\"x\"}}}";
        json_t *r = NULL;
        assert_int_equal(mcp_handle_line(&m, line, strlen(line), &r), 0);
        bool is_error = false;
        assert_string_equal(result_text(r, &is_error), "no such agent (ENOENT)");
        assert_true(is_error);
        assert_string_equal(p->last_cmd, "send");
        json_decref(r);
        mcp_done(&m);
        hivelink_free(l);
        peer_stop(p);

        p = peer_start(PEER_ANSWER);
        s.socket = p->path;
        l = link_to(p->path, 0);
        mcp_init(&m, &s, l);
        line = "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":"
               "{\"name\":\"whoami\"}}";
        assert_int_equal(mcp_handle_line(&m, line, strlen(line), &r), 0);
        assert_string_equal(result_text(r, &is_error), "{\"n\":1}");
        assert_false(is_error);
        json_decref(r);
        mcp_done(&m);
        hivelink_free(l);
        peer_stop(p);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_tool_sets),
                cmocka_unit_test(test_schema_details),
                cmocka_unit_test(test_check_args),
                cmocka_unit_test(test_request_and_texts),
                cmocka_unit_test(test_settings),
                cmocka_unit_test_setup_teardown(test_rpc_initialize_ping_list, mcp_setup,
                                                mcp_teardown),
                cmocka_unit_test_setup_teardown(test_rpc_errors, mcp_setup, mcp_teardown),
                cmocka_unit_test_setup_teardown(test_rpc_batch, mcp_setup, mcp_teardown),
                cmocka_unit_test_setup_teardown(test_rpc_manager_lists_more, mcp_setup_manager,
                                                mcp_teardown),
                cmocka_unit_test_setup_teardown(test_rpc_next_turn, mcp_setup, mcp_teardown),
                cmocka_unit_test_setup_teardown(test_rpc_call_without_daemon, mcp_setup,
                                                mcp_teardown),
                cmocka_unit_test(test_backoff_sequence),
                cmocka_unit_test(test_link_no_socket),
                cmocka_unit_test(test_link_keeps_one_connection),
                cmocka_unit_test(test_link_sends_again_after_a_break),
                cmocka_unit_test(test_link_request_ids),
                cmocka_unit_test(test_link_timeout_and_garbage),
                cmocka_unit_test(test_rpc_call_through_peer),
        };
        return cmocka_run_group_tests_name("ag3nt-mcp", tests, NULL, NULL);
}
