/* The stdio MCP server (`hive-ag3nt mcp`, `hive-m1nd mcp`): JSON-RPC 2.0, one message per
 * line on stdin and stdout (MCP's stdio transport, protocol version 2024-11-05), with the
 * tools of tools.h; each tool call becomes one request on the agent socket. */
#pragma once

#include <jansson.h>
#include <stddef.h>

#include "hivelink.h"
#include "settings.h"

#define MCP_PROTOCOL_VERSION "2024-11-05"
#define MCP_SERVER_NAME      "hyperhive"
#define MCP_LINE_MAX         (16u * 1024u * 1024u) /* longest message accepted on stdin */

/* JSON-RPC error codes. */
enum {
        MCP_PARSE_ERROR = -32700,
        MCP_INVALID_REQUEST = -32600,
        MCP_METHOD_NOT_FOUND = -32601,
        MCP_INVALID_PARAMS = -32602,
        MCP_INTERNAL_ERROR = -32603,
};

typedef struct Mcp {
        const Settings *settings; /* borrowed; settings->flavor picks the tool set */
        HiveLink *link;           /* borrowed */
        json_t *ack_ids;          /* messages to acknowledge once the reply is out */
} Mcp;

void mcp_init(Mcp *m, const Settings *s, HiveLink *link);
void mcp_done(Mcp *m);

/* Handles one input line (without its '\n').  Returns 0 with *ret_reply the reply to write (a
 * new reference), or NULL when there is none (a notification, a response, a blank line);
 * -ENOMEM.  Tool calls block on the socket. */
int mcp_handle_line(Mcp *m, const char *line, size_t len, json_t **ret_reply);

/* To be called once the reply of the last mcp_handle_line() is written: acknowledges the
 * messages a recv handed to the client.  Logs a failure (the lease then redelivers). */
void mcp_after_reply(Mcp *m);

/* Serves in_fd/out_fd until the input ends.  Returns 0 at end of input, -EMSGSIZE after
 * answering a message over MCP_LINE_MAX, or another negative errno (say, -EPIPE when the
 * output is closed).  Logs. */
int mcp_serve(Mcp *m, int in_fd, int out_fd);
