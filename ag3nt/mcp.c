/* JSON-RPC over stdio for the model CLI: framing, the method table, and turning tool calls
 * into agent-socket requests and their answers into tool results. */
#define LOG_SUBSYSTEM "mcp"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "frame.h"
#include "hive-config.h"
#include "log.h"
#include "mcp.h"
#include "proto.h"
#include "tools.h"

typedef struct RpcError {
        int code;
        char *message;
} RpcError;

static json_t *rpc_fail(RpcError *e, int code, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* Records a JSON-RPC error for the reply; returns NULL so handlers can `return rpc_fail(…)`. */
static json_t *rpc_fail(RpcError *e, int code, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(&e->message, fmt, ap) < 0)
                e->message = NULL;
        va_end(ap);
        e->code = code;
        return NULL;
}

static json_t *rpc_error_reply(const json_t *id, int code, const char *message)
{
        return json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", id ? id : json_null(),
                         "error", "code", code, "message", message ? message : "Internal error");
}

void mcp_init(Mcp *m, const Settings *s, HiveLink *link)
{
        *m = (Mcp){.settings = s, .link = link};
}

void mcp_done(Mcp *m)
{
        json_decref(m->ack_ids);
        m->ack_ids = NULL;
}

static json_t *m_initialize(Mcp *m, json_t *params, RpcError *e)
{
        if (!json_is_string(json_object_get(params, "protocolVersion")))
                return rpc_fail(e, MCP_INVALID_PARAMS,
                                "initialize needs params.protocolVersion (a string)");
        /* We speak one version; a client asking for another decides whether that will do. */
        return json_pack("{s:s, s:{s:{}}, s:{s:s, s:s}}", "protocolVersion", MCP_PROTOCOL_VERSION,
                         "capabilities", "tools", "serverInfo", "name", MCP_SERVER_NAME, "version",
                         HIVE_VERSION);
}

static json_t *m_ping(Mcp *m, json_t *params, RpcError *e)
{
        return json_object();
}

static json_t *m_tools_list(Mcp *m, json_t *params, RpcError *e)
{
        return json_pack("{s:o}", "tools", tools_list(m->settings->flavor));
}

/* {content:[{type:"text", text}], isError?}. */
static json_t *tool_result(const char *text, bool is_error)
{
        _cleanup_json_ json_t *r =
                json_pack("{s:[{s:s, s:s}]}", "content", "type", "text", "text", text ? text : "");
        if (r && is_error && json_object_set_new(r, "isError", json_true()) < 0)
                return NULL;
        return TAKE_PTR(r);
}

static json_t *tool_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static json_t *tool_error(const char *fmt, ...)
{
        _cleanup_free_ char *text = NULL;
        va_list ap;
        va_start(ap, fmt);
        int r = vasprintf(&text, fmt, ap);
        va_end(ap);
        return r < 0 ? NULL : tool_result(text, true);
}

static json_t *call_next_turn(Mcp *m)
{
        _cleanup_free_ char *path = NULL;
        int r = tools_request_next_turn(m->settings, &path);
        if (r < 0)
                return tool_error("cannot record the request for another turn in %s/%s: %s",
                                  m->settings->state_dir, MARKER_NEXT_TURN, strerror(-r));
        return tool_result("{\"requested\":true}", false);
}

/* Remembers the ids of the messages a recv answer hands out, to ack them after the reply. */
static void remember_acks(Mcp *m, const json_t *resp)
{
        size_t i;
        json_t *msg;
        json_array_foreach(json_object_get(resp, "messages"), i, msg)
        {
                json_t *id = json_object_get(msg, "id");
                if (!json_is_integer(id))
                        continue;
                if (!m->ack_ids)
                        m->ack_ids = json_array();
                if (m->ack_ids)
                        json_array_append(m->ack_ids, id);
        }
}

static json_t *call_daemon(Mcp *m, const ToolSpec *t, json_t *args)
{
        _cleanup_json_ json_t *req = tools_request(t, args);
        if (!req)
                return NULL;
        _cleanup_json_ json_t *resp = NULL;
        log_debug("tools/call %s", t->name);
        int r = hivelink_request(m->link, req, -1, &resp);
        if (r == -EBADMSG || r == -EMSGSIZE)
                return tool_error("the hive daemon at %s answered with something that is not a "
                                  "JSON object line",
                                  m->settings->socket);
        if (r < 0)
                return tool_error("the hive daemon at %s could not be reached: %s",
                                  m->settings->socket, strerror(-r));
        r = proto_response_check(resp, NULL, NULL);
        if (r == -EPROTONOSUPPORT)
                return tool_error("the hive daemon speaks another protocol version than this "
                                  "harness (%d)",
                                  HIVE_PROTOCOL_VERSION);
        if (r < 0)
                return tool_error("the hive daemon's answer has no valid \"ok\" key");
        if (r == 0) {
                _cleanup_free_ char *text = tools_refusal_text(resp);
                return text ? tool_result(text, true) : NULL;
        }
        if (t->flags & TOOL_ACK_AFTER)
                remember_acks(m, resp);
        _cleanup_free_ char *text = tools_answer_text(resp);
        return text ? tool_result(text, false) : NULL;
}

static json_t *m_tools_call(Mcp *m, json_t *params, RpcError *e)
{
        json_t *jname = json_object_get(params, "name");
        if (!json_is_string(jname))
                return rpc_fail(e, MCP_INVALID_PARAMS,
                                "tools/call needs params.name (a string) and params.arguments "
                                "(an object)");
        const char *name = json_string_value(jname);
        const ToolSpec *t = tools_find(m->settings->flavor, name);
        if (!t) {
                char known[1024] = "";
                size_t n = 0;
                for (size_t i = 0; n < sizeof(known); i++) {
                        const ToolSpec *k = tools_get(m->settings->flavor, i);
                        if (!k)
                                break;
                        n += (size_t)snprintf(known + n, sizeof(known) - n, "%s%s", n ? ", " : "",
                                              k->name);
                }
                return rpc_fail(e, MCP_INVALID_PARAMS, "unknown tool \"%.100s\"; %s has: %s", name,
                                settings_program(m->settings->flavor), known);
        }
        json_t *args = json_object_get(params, "arguments");
        if (json_is_null(args))
                args = NULL;
        _cleanup_free_ char *err = NULL;
        int r = tools_check_args(t, args, &err);
        if (r < 0)
                return rpc_fail(e, r == -EINVAL ? MCP_INVALID_PARAMS : MCP_INTERNAL_ERROR, "%s",
                                err ? err : "out of memory");
        if (t->flags & TOOL_LOCAL)
                return call_next_turn(m);
        return call_daemon(m, t, args);
}

typedef struct McpMethod {
        const char *name;
        json_t *(*run)(Mcp *m, json_t *params, RpcError *e);
} McpMethod;

static const McpMethod methods[] = {
        {"initialize", m_initialize},
        {"ping", m_ping},
        {"tools/list", m_tools_list},
        {"tools/call", m_tools_call},
};

static json_t *handle_message(Mcp *m, json_t *msg)
{
        if (!json_is_object(msg))
                return rpc_error_reply(NULL, MCP_INVALID_REQUEST,
                                       "Invalid Request: a message must be a JSON object");
        json_t *id = json_object_get(msg, "id");
        json_t *method = json_object_get(msg, "method");
        if (id && !json_is_string(id) && !json_is_integer(id))
                return rpc_error_reply(NULL, MCP_INVALID_REQUEST,
                                       "Invalid Request: \"id\" must be a string or an integer");
        if (!method) {
                if (json_object_get(msg, "result") || json_object_get(msg, "error"))
                        return NULL; /* a response: we send no requests, so nothing waits */
                return rpc_error_reply(id, MCP_INVALID_REQUEST, "Invalid Request: no \"method\"");
        }
        if (!json_is_string(json_object_get(msg, "jsonrpc")) ||
            strcmp(json_string_value(json_object_get(msg, "jsonrpc")), "2.0") != 0)
                return id ? rpc_error_reply(id, MCP_INVALID_REQUEST,
                                            "Invalid Request: \"jsonrpc\" must be \"2.0\"")
                          : NULL;
        if (!json_is_string(method))
                return id ? rpc_error_reply(id, MCP_INVALID_REQUEST,
                                            "Invalid Request: \"method\" must be a string")
                          : NULL;
        const char *name = json_string_value(method);
        if (!id) {
                /* Notifications (initialized, cancelled, ...) are never answered. */
                log_debug("notification %s", name);
                return NULL;
        }
        json_t *params = json_object_get(msg, "params");
        if (params && !json_is_object(params))
                return rpc_error_reply(id, MCP_INVALID_PARAMS, "\"params\" must be an object");
        for (size_t i = 0; i < ELEMENTSOF(methods); i++) {
                if (strcmp(methods[i].name, name) != 0)
                        continue;
                RpcError e = {0};
                json_t *result = methods[i].run(m, params, &e);
                if (!result) {
                        json_t *reply = rpc_error_reply(id, e.code ? e.code : MCP_INTERNAL_ERROR,
                                                        e.message);
                        free(e.message);
                        return reply;
                }
                return json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id, "result", result);
        }
        _cleanup_free_ char *text = NULL;
        if (asprintf(&text, "Method not found: \"%.100s\"", name) < 0)
                return NULL;
        return rpc_error_reply(id, MCP_METHOD_NOT_FOUND, text);
}

static bool blank(const char *s, size_t len)
{
        for (size_t i = 0; i < len; i++)
                if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
                        return false;
        return true;
}

int mcp_handle_line(Mcp *m, const char *line, size_t len, json_t **ret_reply)
{
        if (blank(line, len)) {
                *ret_reply = NULL;
                return 0;
        }
        json_error_t jerr;
        _cleanup_json_ json_t *msg = json_loadb(line, len, JSON_DECODE_ANY, &jerr);
        if (!msg) {
                _cleanup_free_ char *text = NULL;
                if (asprintf(&text, "Parse error: %s (column %d)", jerr.text, jerr.column) < 0)
                        return -ENOMEM;
                *ret_reply = rpc_error_reply(NULL, MCP_PARSE_ERROR, text);
                return *ret_reply ? 0 : -ENOMEM;
        }
        if (!json_is_array(msg)) {
                *ret_reply = handle_message(m, msg);
                return 0;
        }
        /* A batch: the replies in one array, none at all if it held only notifications. */
        if (json_array_size(msg) == 0) {
                *ret_reply = rpc_error_reply(NULL, MCP_INVALID_REQUEST,
                                             "Invalid Request: an empty batch");
                return *ret_reply ? 0 : -ENOMEM;
        }
        _cleanup_json_ json_t *replies = json_array();
        if (!replies)
                return -ENOMEM;
        size_t i;
        json_t *v;
        json_array_foreach(msg, i, v)
        {
                json_t *reply = handle_message(m, v);
                if (reply && json_array_append_new(replies, reply) < 0)
                        return -ENOMEM;
        }
        *ret_reply = json_array_size(replies) ? TAKE_PTR(replies) : NULL;
        return 0;
}

void mcp_after_reply(Mcp *m)
{
        if (!m->ack_ids)
                return;
        _cleanup_json_ json_t *ids = TAKE_PTR(m->ack_ids);
        _cleanup_json_ json_t *req = json_pack("{s:s, s:O}", "cmd", "ack", "ids", ids);
        _cleanup_json_ json_t *resp = NULL;
        int r = req ? hivelink_request(m->link, req, -1, &resp) : -ENOMEM;
        if (r < 0)
                log_warning_errno(r,
                                  "cannot acknowledge %zu received message(s): %m; they "
                                  "will be offered again when their lease ends",
                                  json_array_size(ids));
        else if (proto_response_check(resp, NULL, NULL) != 1)
                log_warning("the daemon refused to acknowledge %zu received message(s): %s",
                            json_array_size(ids),
                            json_string_value(json_object_get(resp, "error")));
}

static int write_all(int fd, const char *buf, size_t len)
{
        while (len > 0) {
                ssize_t k = write(fd, buf, len);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN) {
                                struct pollfd p = {.fd = fd, .events = POLLOUT};
                                (void)poll(&p, 1, -1);
                                continue;
                        }
                        return -errno;
                }
                buf += k;
                len -= (size_t)k;
        }
        return 0;
}

static int write_reply(int out_fd, const json_t *reply)
{
        size_t len;
        _cleanup_free_ char *line = proto_dump_line(reply, &len);
        if (!line)
                return -ENOMEM;
        return write_all(out_fd, line, len);
}

int mcp_serve(Mcp *m, int in_fd, int out_fd)
{
        LineFramer f;
        framer_init(&f, MCP_LINE_MAX);
        int r = 0;
        for (;;) {
                char *line = NULL;
                size_t len = 0;
                r = framer_pop(&f, &line, &len);
                if (r > 0) {
                        _cleanup_json_ json_t *reply = NULL;
                        r = mcp_handle_line(m, line, len, &reply);
                        if (r < 0)
                                break;
                        if (reply) {
                                r = write_reply(out_fd, reply);
                                if (r < 0) {
                                        log_error_errno(r, "cannot write to the client: %m");
                                        break;
                                }
                        }
                        mcp_after_reply(m);
                        continue;
                }
                ssize_t k = r < 0 ? r : framer_read(&f, in_fd);
                if (k == -EAGAIN) {
                        struct pollfd p = {.fd = in_fd, .events = POLLIN};
                        (void)poll(&p, 1, -1);
                        continue;
                }
                if (k == -EINTR)
                        continue;
                if (k == -EMSGSIZE) {
                        _cleanup_json_ json_t *reply =
                                rpc_error_reply(NULL, MCP_INVALID_REQUEST,
                                                "Invalid Request: a message over 16 MiB; the "
                                                "server stops");
                        if (reply)
                                (void)write_reply(out_fd, reply);
                        r = log_error_errno(-EMSGSIZE,
                                            "a message over %u bytes on stdin; "
                                            "stopping",
                                            MCP_LINE_MAX);
                        break;
                }
                if (k < 0) {
                        r = log_error_errno((int)k, "cannot read stdin: %m");
                        break;
                }
                if (k == 0) {
                        if (framer_pending(&f) > 0)
                                log_warning("the input ended in the middle of a message; "
                                            "ignoring its %zu bytes",
                                            framer_pending(&f));
                        r = 0;
                        break;
                }
        }
        framer_done(&f);
        return r;
}
