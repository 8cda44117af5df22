/* The tool table of the MCP server and what each tool does with its arguments.  The field
 * tables follow docs/protocol.md ("Agent sockets"): a tool is the daemon verb of the same
 * name with the same fields, except request_next_turn, which the harness keeps. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "proto.h"
#include "tools.h"

static const char *const loose_end_kinds[] = {"question", "reminder", NULL};

#define NAME_DOC "the agent's name (1-9 characters: a-z, 0-9 and -, not starting or ending with -)"

static const ToolField send_fields[] = {
        {"to", TF_STRING, true,
         "the recipient: an agent's name, \"manager\", \"operator\" (the person on the "
         "dashboard) or \"*\" (every agent and the manager)"},
        {"body", TF_STRING, true, "the message (1 byte to 256 KiB)"},
        {"in_reply_to", TF_INTEGER, false, "the id of the message this one answers",
         .has_min = true, .min = 1},
        {NULL},
};

static const ToolField recv_fields[] = {
        {"wait_seconds", TF_INTEGER, false,
         "wait up to this many seconds for a message (0 or absent: answer at once)",
         .has_min = true, .min = 0, .has_max = true, .max = 180},
        {"max", TF_INTEGER, false, "take at most this many messages (default 1)", .has_min = true,
         .min = 1, .has_max = true, .max = 32},
        {NULL},
};

static const ToolField ask_fields[] = {
        {"question", TF_STRING, true, "the question"},
        {"options", TF_STRING_ARRAY, false, "answers to offer (at most 32, each non-empty)"},
        {"multi", TF_BOOLEAN, false, "whether more than one option may be chosen"},
        {"ttl_seconds", TF_INTEGER, false,
         "answer it \"[expired]\" after this many seconds (capped at 6 hours)", .has_min = true,
         .min = 1},
        {"to", TF_STRING, false,
         "who should answer: \"operator\" (the default), \"manager\", or an agent's name"},
        {NULL},
};

static const ToolField answer_fields[] = {
        {"id", TF_INTEGER, true, "the question's id (from its question_asked event)",
         .has_min = true, .min = 1},
        {"answer", TF_STRING, true, "your answer"},
        {NULL},
};

static const ToolField remind_fields[] = {
        {"message", TF_STRING, true, "what the reminder should tell you"},
        {"delay_seconds", TF_INTEGER, false,
         "fire this many seconds from now (give this or at_unix_timestamp)", .has_min = true,
         .min = 0, .has_max = true, .max = 366ll * 24 * 3600},
        {"at_unix_timestamp", TF_INTEGER, false,
         "fire at this time, in seconds since 1970 (give this or delay_seconds)", .has_min = true,
         .min = 1},
        {"file_path", TF_STRING, false,
         "a file in your state directory the reminder points to (notes/x.md or "
         "/state/notes/x.md)"},
        {NULL},
};

static const ToolField cancel_fields[] = {
        {"kind", TF_STRING, true, "what to cancel: \"question\" or \"reminder\"",
         .choices = loose_end_kinds},
        {"id", TF_INTEGER, true, "its id (see get_open_threads)", .has_min = true, .min = 1},
        {NULL},
};

static const ToolField set_status_fields[] = {
        {"text", TF_STRING, true, "the status (at most 500 bytes; \"\" clears it)"},
        {NULL},
};

static const ToolField no_fields[] = {
        {NULL},
};

static const ToolField request_spawn_fields[] = {
        {"name", TF_STRING, true, "the new " NAME_DOC},
        {"description", TF_STRING, false, "what the agent is for, shown to the operator"},
        {NULL},
};

static const ToolField request_apply_commit_fields[] = {
        {"agent", TF_STRING, true, "the agent whose config the commit changes"},
        {"commit_ref", TF_STRING, true,
         "the commit in /agents/<agent>/config: its sha, 7 to 40 hex characters (not a branch "
         "or tag name)"},
        {"description", TF_STRING, false, "what the change does, shown to the operator"},
        {NULL},
};

static const ToolField request_update_meta_inputs_fields[] = {
        {"inputs", TF_STRING_ARRAY, false,
         "the meta flake inputs to update (absent: every input that is not an agent's)"},
        {"description", TF_STRING, false, "why, shown to the operator"},
        {NULL},
};

static const ToolField name_fields[] = {
        {"name", TF_STRING, true, NAME_DOC},
        {NULL},
};

static const ToolField get_logs_fields[] = {
        {"agent", TF_STRING, true, NAME_DOC},
        {"lines", TF_INTEGER, false, "how many of the last lines (default 50)", .has_min = true,
         .min = 1, .has_max = true, .max = 500},
        {NULL},
};

static const ToolSpec tools[] = {
        {"send",
         "Send a message to another agent, the manager, the operator or everyone (\"*\"). It is "
         "stored before this answers, with its id (ids for \"*\").",
         send_fields},
        {"recv",
         "Take messages from your inbox: {\"messages\":[{id, from, to, body, sent_at, "
         "in_reply_to?}]}. Without wait_seconds it answers at once (possibly with none); with "
         "it, it waits for a message. Messages handed to you here are acknowledged.",
         recv_fields, TOOL_ACK_AFTER},
        {"ask",
         "Ask the operator (default) or a peer a question. Answers at once with the question's "
         "id; the answer arrives later in your inbox, from \"hive\", as {\"event\":"
         "\"question_answered\", id, question, answer, answerer}.",
         ask_fields},
        {"answer", "Answer a question that was asked of you (a question_asked event).",
         answer_fields},
        {"remind",
         "Schedule a reminder to yourself: at its time it arrives in your inbox from "
         "\"reminder\". Give exactly one of delay_seconds and at_unix_timestamp.",
         remind_fields},
        {"get_open_threads",
         "Your loose ends: open questions you asked or were asked, and reminders that have not "
         "fired (the manager sees those of the whole hive).",
         no_fields},
        {"cancel_loose_end",
         "Withdraw a question you asked (it is answered \"[cancelled by <you>]\") or a "
         "reminder you set.",
         cancel_fields},
        {"set_status", "Set the short status text the dashboard shows for you.", set_status_fields},
        {"whoami", "Your name and role in the hive, and the daemon's version.", no_fields},
        {"request_next_turn",
         "Ask for another turn right after this one ends, so you can go on without waiting "
         "for a message; it starts with a message from \"self\" saying \"continue\".",
         no_fields, TOOL_LOCAL},
        {"request_spawn",
         "Propose a new agent. The operator approves or denies it; answers with the "
         "approval's id.",
         request_spawn_fields, TOOL_MANAGER},
        {"request_apply_commit",
         "Propose deploying a commit of an agent's config repo. The operator approves or "
         "denies it; once approved it is built and deployed. Answers with the approval's id.",
         request_apply_commit_fields, TOOL_MANAGER},
        {"request_update_meta_inputs",
         "Propose updating the meta flake's inputs (nixpkgs and the like). The operator "
         "approves or denies it; it rebuilds nothing by itself. Answers with the approval's id.",
         request_update_meta_inputs_fields, TOOL_MANAGER},
        {"kill", "Stop an agent's container (gracefully); answers once it has stopped.",
         name_fields, TOOL_MANAGER},
        {"start", "Start an agent's container; answers once it runs.", name_fields, TOOL_MANAGER},
        {"restart", "Stop and start an agent's container; answers once it runs again.", name_fields,
         TOOL_MANAGER},
        {"update",
         "Rebuild an agent's container from the meta flake (no approval needed); use it when a "
         "needs_update event arrives.",
         name_fields, TOOL_MANAGER},
        {"get_logs", "The last lines of an agent's console or journal: {\"logs\": text}.",
         get_logs_fields, TOOL_MANAGER},
};

static bool offered(const ToolSpec *t, HarnessFlavor flavor)
{
        return !(t->flags & TOOL_MANAGER) || flavor == HARNESS_MANAGER;
}

size_t tools_count(HarnessFlavor flavor)
{
        size_t n = 0;
        for (size_t i = 0; i < ELEMENTSOF(tools); i++)
                n += offered(&tools[i], flavor);
        return n;
}

const ToolSpec *tools_get(HarnessFlavor flavor, size_t i)
{
        for (size_t k = 0; k < ELEMENTSOF(tools); k++)
                if (offered(&tools[k], flavor) && i-- == 0)
                        return &tools[k];
        return NULL;
}

const ToolSpec *tools_find(HarnessFlavor flavor, const char *name)
{
        for (size_t i = 0; i < ELEMENTSOF(tools); i++)
                if (offered(&tools[i], flavor) && strcmp(tools[i].name, name) == 0)
                        return &tools[i];
        return NULL;
}

static const char *type_name(ToolFieldType t)
{
        switch (t) {
        case TF_STRING:
                return "string";
        case TF_INTEGER:
                return "integer";
        case TF_BOOLEAN:
                return "boolean";
        case TF_STRING_ARRAY:
                return "array";
        }
        return "string";
}

static json_t *field_schema(const ToolField *f)
{
        _cleanup_json_ json_t *p =
                json_pack("{s:s, s:s}", "type", type_name(f->type), "description", f->doc);
        if (!p)
                return NULL;
        if (f->type == TF_STRING_ARRAY &&
            json_object_set_new(p, "items", json_pack("{s:s}", "type", "string")) < 0)
                return NULL;
        if (f->has_min && json_object_set_new(p, "minimum", json_integer(f->min)) < 0)
                return NULL;
        if (f->has_max && json_object_set_new(p, "maximum", json_integer(f->max)) < 0)
                return NULL;
        if (f->choices) {
                json_t *e = json_array();
                if (!e || json_object_set_new(p, "enum", e) < 0)
                        return NULL;
                for (const char *const *c = f->choices; *c; c++)
                        if (json_array_append_new(e, json_string(*c)) < 0)
                                return NULL;
        }
        return TAKE_PTR(p);
}

json_t *tools_input_schema(const ToolSpec *t)
{
        json_t *props = json_object(), *req = json_array();
        _cleanup_json_ json_t *s = json_pack("{s:s, s:o, s:o, s:b}", "type", "object", "properties",
                                             props, "required", req, "additionalProperties", 0);
        if (!s)
                return NULL;
        for (const ToolField *f = t->fields; f->name; f++) {
                if (json_object_set_new(props, f->name, field_schema(f)) < 0)
                        return NULL;
                if (f->required && json_array_append_new(req, json_string(f->name)) < 0)
                        return NULL;
        }
        return TAKE_PTR(s);
}

json_t *tools_list(HarnessFlavor flavor)
{
        _cleanup_json_ json_t *a = json_array();
        if (!a)
                return NULL;
        for (size_t i = 0; i < ELEMENTSOF(tools); i++) {
                const ToolSpec *t = &tools[i];
                if (!offered(t, flavor))
                        continue;
                if (json_array_append_new(a, json_pack("{s:s, s:s, s:o}", "name", t->name,
                                                       "description", t->description, "inputSchema",
                                                       tools_input_schema(t))) < 0)
                        return NULL;
        }
        return TAKE_PTR(a);
}

static const ToolField *field_find(const ToolSpec *t, const char *name)
{
        for (const ToolField *f = t->fields; f->name; f++)
                if (strcmp(f->name, name) == 0)
                        return f;
        return NULL;
}

static int fail(char **ret_error, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(char **ret_error, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        int r = vasprintf(ret_error, fmt, ap);
        va_end(ap);
        if (r < 0) {
                *ret_error = NULL;
                return -ENOMEM;
        }
        return -EINVAL;
}

/* Checks one value against its field. */
static int field_check(const ToolSpec *t, const ToolField *f, const json_t *v, char **ret_error)
{
        switch (f->type) {
        case TF_STRING:
                if (!json_is_string(v))
                        return fail(ret_error, "%s: \"%s\" must be a string", t->name, f->name);
                if (f->choices) {
                        for (const char *const *c = f->choices; *c; c++)
                                if (strcmp(*c, json_string_value(v)) == 0)
                                        return 0;
                        return fail(ret_error, "%s: \"%s\" must be one of \"%s\" and \"%s\"",
                                    t->name, f->name, f->choices[0], f->choices[1]);
                }
                return 0;
        case TF_BOOLEAN:
                if (!json_is_boolean(v))
                        return fail(ret_error, "%s: \"%s\" must be true or false", t->name,
                                    f->name);
                return 0;
        case TF_STRING_ARRAY: {
                if (!json_is_array(v))
                        return fail(ret_error, "%s: \"%s\" must be a list of strings", t->name,
                                    f->name);
                size_t i;
                json_t *e;
                json_array_foreach(v, i, e)
                {
                        if (!json_is_string(e))
                                return fail(ret_error,
                                            "%s: \"%s\" must be a list of strings; element %zu "
                                            "is not one",
                                            t->name, f->name, i);
                }
                return 0;
        }
        case TF_INTEGER: {
                if (!json_is_integer(v))
                        return fail(ret_error, "%s: \"%s\" must be a whole number", t->name,
                                    f->name);
                int64_t n = json_integer_value(v);
                if ((f->has_min && n < f->min) || (f->has_max && n > f->max)) {
                        if (f->has_max)
                                return fail(ret_error,
                                            "%s: \"%s\" must be from %lld to %lld, not %lld",
                                            t->name, f->name, (long long)f->min, (long long)f->max,
                                            (long long)n);
                        return fail(ret_error, "%s: \"%s\" must be at least %lld, not %lld",
                                    t->name, f->name, (long long)f->min, (long long)n);
                }
                return 0;
        }
        }
        return -EINVAL;
}

int tools_check_args(const ToolSpec *t, const json_t *args, char **ret_error)
{
        if (args && !json_is_object(args))
                return fail(ret_error, "%s: the arguments must be a JSON object", t->name);
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)args, key, v)
        {
                const ToolField *f = field_find(t, key);
                if (!f) {
                        if (!t->fields[0].name)
                                return fail(ret_error, "%s takes no arguments, not \"%s\"", t->name,
                                            key);
                        char known[512] = "";
                        size_t n = 0;
                        for (const ToolField *k = t->fields; k->name && n < sizeof(known); k++)
                                n += (size_t)snprintf(known + n, sizeof(known) - n, "%s%s",
                                                      n ? ", " : "", k->name);
                        return fail(ret_error, "%s has no argument \"%s\"; it takes: %s", t->name,
                                    key, known);
                }
                int r = field_check(t, f, v, ret_error);
                if (r < 0)
                        return r;
        }
        for (const ToolField *f = t->fields; f->name; f++)
                if (f->required && !json_object_get(args, f->name))
                        return fail(ret_error, "%s needs \"%s\": %s", t->name, f->name, f->doc);
        return 0;
}

json_t *tools_request(const ToolSpec *t, const json_t *args)
{
        _cleanup_json_ json_t *req = json_pack("{s:s}", "cmd", t->name);
        if (!req || (args && json_object_update(req, (json_t *)args) < 0))
                return NULL;
        return TAKE_PTR(req);
}

char *tools_answer_text(const json_t *resp)
{
        _cleanup_json_ json_t *c = json_copy((json_t *)resp);
        if (!c)
                return NULL;
        json_object_del(c, "version");
        json_object_del(c, "ok");
        return json_dumps(c, JSON_COMPACT);
}

char *tools_refusal_text(const json_t *resp)
{
        const char *error = json_string_value(json_object_get(resp, "error"));
        const char *code = json_string_value(json_object_get(resp, "error_code"));
        char *s = NULL;
        if (asprintf(&s, "%s%s%s%s", error ? error : "the daemon refused without a reason",
                     code ? " (" : "", code ? code : "", code ? ")" : "") < 0)
                return NULL;
        return s;
}

int tools_request_next_turn(const Settings *s, char **ret_path)
{
        _cleanup_free_ char *path = settings_state_path(s, MARKER_NEXT_TURN);
        if (!path)
                return -ENOMEM;
        int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
        if (fd < 0)
                return -errno;
        close(fd);
        *ret_path = TAKE_PTR(path);
        return 0;
}
