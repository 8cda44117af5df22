/* The environment table of hive-ag3nt and hive-m1nd: every variable the harness reads, with
 * its type, default, range and meaning, in one place. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "settings.h"

typedef enum {
        SET_STRING,
        SET_INT,
} SettingType;

typedef struct SettingSpec {
        const char *name;
        SettingType type;
        size_t offset;
        const char *def; /* NULL: unset */
        int64_t min, max;
        const char *doc;
} SettingSpec;

#define S(n, t, m) .name = n, .type = t, .offset = offsetof(Settings, m)

static const SettingSpec settings_table[] = {
        {S("HIVE_SOCKET", SET_STRING, socket), .def = "/run/hive/mcp.sock",
         .doc = "the agent socket (the manager's socket in hm1nd)"},
        {S("HIVE_LABEL", SET_STRING, label), .doc = "this agent's name, as the daemon knows it"},
        {S("HIVE_PORT", SET_INT, port), .min = 1, .max = 65535,
         .doc = "the port of the agent's web page"},
        {S("HIVE_STATE_DIR", SET_STRING, state_dir), .def = "/state",
         .doc = "the agent's durable state directory (markers, databases)"},
        {S("HIVE_MODEL_BIN", SET_STRING, model_bin), .def = "claude",
         .doc = "the model CLI the turn loop runs"},
        {S("HIVE_OPERATOR_PRONOUNS", SET_STRING, operator_pronouns),
         .doc = "the operator's pronouns, for the prompts"},
        {S("HIVE_RECONNECT_BASE_MS", SET_INT, reconnect_base_ms), .def = "2000", .min = 1,
         .max = 60000,
         .doc = "first delay before reconnecting to the socket; it doubles up to 15 times "
                "this (2-4-8-16-30 s by default)"},
        {S("HIVE_MODEL", SET_STRING, model), .def = "opus",
         .doc = "the model turns use until one is chosen on the page (then "
                "$HIVE_STATE_DIR/hyperhive-model wins)"},
        {S("HIVE_RUN_DIR", SET_STRING, run_dir),
         .doc = "where serve writes the model CLI's settings, MCP config and system prompt "
                "(unset: the directory of HIVE_SOCKET, /run/hive in a container)"},
        {S("HIVE_WEB_BIND", SET_STRING, web_bind), .def = "127.0.0.1",
         .doc = "the IPv4 address the agent page listens on (with HIVE_PORT)"},
        {S("HIVE_RATE_LIMIT_SLEEP_SECS", SET_INT, rate_limit_sleep_s), .def = "300", .min = 1,
         .max = 86400, .doc = "how long the turn loop sleeps after the model hit a rate limit"},
        {S("HIVE_RECV_WAIT_SECS", SET_INT, recv_wait_s), .def = "180", .min = 1, .max = 180,
         .doc = "how long one long-poll recv of the turn loop waits for a message"},
        {S("HIVE_CONTEXT_WINDOW", SET_INT, context_window), .def = "200000", .min = 1000,
         .max = 100000000, .doc = "the model's context window in tokens, for the page's badge"},
        {S("HIVE_EXTRA_MCP", SET_STRING, extra_mcp), .def = "/etc/hyperhive/extra-mcp.json",
         .doc = "extra MCP servers ({\"mcpServers\": {...}}) merged into the model CLI's MCP "
                "config; a missing file means none"},
        {S("HIVE_DASHBOARD_URL", SET_STRING, dashboard_url),
         .doc = "the hive dashboard's address, linked from the agent page"},
};

#define FIELD(s, o, type) ((type *)((char *)(s) + (o)->offset))

static int setting_set(Settings *s, const SettingSpec *o, const char *value, char **ret_error)
{
        if (o->type == SET_STRING) {
                char *v = strdup(value);
                if (!v)
                        return -ENOMEM;
                free(*FIELD(s, o, char *));
                *FIELD(s, o, char *) = v;
                return 0;
        }
        char *end = NULL;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (errno || !end || *end || end == value || v < o->min || v > o->max) {
                if (asprintf(ret_error, "$%s: \"%s\" is not a whole number from %lld to %lld",
                             o->name, value, (long long)o->min, (long long)o->max) < 0)
                        return -ENOMEM;
                return -EINVAL;
        }
        *FIELD(s, o, int64_t) = v;
        return 0;
}

int settings_load(Settings *s, HarnessFlavor flavor, char **ret_error)
{
        Settings t = {.flavor = flavor};
        for (size_t i = 0; i < ELEMENTSOF(settings_table); i++) {
                const SettingSpec *o = &settings_table[i];
                const char *v = getenv(o->name);
                if (!v || !*v)
                        v = o->def;
                if (!v)
                        continue;
                _cleanup_free_ char *err = NULL;
                int r = setting_set(&t, o, v, &err);
                if (r < 0) {
                        settings_done(&t);
                        if (ret_error)
                                *ret_error = TAKE_PTR(err);
                        return r;
                }
        }
        *s = t;
        return 0;
}

void settings_done(Settings *s)
{
        for (size_t i = 0; i < ELEMENTSOF(settings_table); i++)
                if (settings_table[i].type == SET_STRING) {
                        char **p = FIELD(s, &settings_table[i], char *);
                        free(*p);
                        *p = NULL;
                }
}

void settings_print_help(FILE *f)
{
        for (size_t i = 0; i < ELEMENTSOF(settings_table); i++) {
                const SettingSpec *o = &settings_table[i];
                fprintf(f, "  %-27s %s", o->name, o->doc);
                if (o->def)
                        fprintf(f, " (default %s)", o->def);
                else if (o->type == SET_INT)
                        fprintf(f, " (%lld-%lld; unset by default)", (long long)o->min,
                                (long long)o->max);
                fputc('\n', f);
        }
}

char *settings_state_path(const Settings *s, const char *name)
{
        char *p = NULL;
        if (asprintf(&p, "%s/%s", s->state_dir, name) < 0)
                return NULL;
        return p;
}

char *settings_run_dir(const Settings *s)
{
        if (s->run_dir)
                return strdup(s->run_dir);
        const char *slash = strrchr(s->socket, '/');
        if (!slash)
                return strdup(".");
        if (slash == s->socket)
                return strdup("/");
        return strndup(s->socket, (size_t)(slash - s->socket));
}

const char *settings_program(HarnessFlavor flavor)
{
        return flavor == HARNESS_MANAGER ? "hive-m1nd" : "hive-ag3nt";
}
