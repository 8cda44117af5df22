/* The MCP tools: one table gives each tool its description, its argument fields (from which
 * the JSON Schema and the argument check are both derived), the flavor that offers it, and
 * how it runs (a request on the agent socket, or locally). */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "settings.h"

typedef enum {
        TF_STRING,
        TF_INTEGER,
        TF_BOOLEAN,
        TF_STRING_ARRAY,
} ToolFieldType;

typedef struct ToolField {
        const char *name;
        ToolFieldType type;
        bool required;
        const char *doc;
        bool has_min, has_max; /* TF_INTEGER bounds */
        int64_t min, max;
        const char *const *choices; /* TF_STRING: the allowed values (NULL-terminated) */
} ToolField;

enum {
        TOOL_MANAGER = 1u << 0,   /* offered by hive-m1nd only */
        TOOL_LOCAL = 1u << 1,     /* runs in the harness, not on the socket */
        TOOL_ACK_AFTER = 1u << 2, /* the answer's messages are acknowledged once delivered */
};

typedef struct ToolSpec {
        const char *name; /* also the daemon verb */
        const char *description;
        const ToolField *fields; /* terminated by {NULL} */
        unsigned flags;
} ToolSpec;

/* The tool called name if flavor offers it, else NULL. */
const ToolSpec *tools_find(HarnessFlavor flavor, const char *name);

/* The tools flavor offers, in table order: how many, and the i-th (NULL past the end). */
size_t tools_count(HarnessFlavor flavor);
const ToolSpec *tools_get(HarnessFlavor flavor, size_t i);

/* The tool's inputSchema: {type:"object", properties, required, additionalProperties:false}.
 * A new reference, or NULL on allocation failure. */
json_t *tools_input_schema(const ToolSpec *t);

/* The tools/list entries of flavor: [{name, description, inputSchema}]. */
json_t *tools_list(HarnessFlavor flavor);

/* Checks args (a JSON object, or NULL for none) against the tool's fields: no unknown keys,
 * the required ones present, each of its type, within its range or choices.  Returns 0, or
 * -EINVAL with *ret_error (malloc'ed) a sentence naming the field and what it accepts. */
int tools_check_args(const ToolSpec *t, const json_t *args, char **ret_error);

/* The socket request of a checked call: {"cmd": name, ...args}.  NULL on allocation failure. */
json_t *tools_request(const ToolSpec *t, const json_t *args);

/* The text a tool result shows for a successful daemon answer: the answer without "version"
 * and "ok", as compact JSON.  Malloc'ed, or NULL on allocation failure. */
char *tools_answer_text(const json_t *resp);

/* The text shown for a refusal: "<error> (<error_code>)".  Malloc'ed, or NULL. */
char *tools_refusal_text(const json_t *resp);

/* request_next_turn: creates <state_dir>/hyperhive-next-turn (kept if it exists).  Returns 0
 * and *ret_path (malloc'ed), or a negative errno. */
int tools_request_next_turn(const Settings *s, char **ret_path);
