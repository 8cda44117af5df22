/* CLI verb table, socket path resolution, and human output. */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "cli.h"
#include "client.h"
#include "config.h"
#include "daemon.h"
#include "hive-config.h"
#include "proto.h"
#include "timeutil.h"

#define DEFAULT_SOCKET "/run/hyperhive/host.sock"
#define DEV_SOCKET     "./.hive/run/host.sock"

typedef struct CliCtx {
        const char *socket;
        bool json;
        int timeout_ms;
        bool timeout_set; /* --timeout given */
        bool all, graceful, purge;
        const char *parent;
        const char *note;
} CliCtx;

/* Options a verb accepts after its name (besides --json, --dev, --socket). */
enum {
        CLI_OPT_ALL = 1u << 0,      /* --all */
        CLI_OPT_GRACEFUL = 1u << 1, /* --graceful */
        CLI_OPT_PURGE = 1u << 2,    /* --purge */
        CLI_OPT_PARENT = 1u << 3,   /* --parent NAME */
        CLI_OPT_NOTE = 1u << 4,     /* --note TEXT */
        CLI_SLOW = 1u << 8,         /* answers when a container operation ends: long timeout */
};

/* Default wait for verbs that run container operations (builds can take long). */
#define CLI_SLOW_TIMEOUT_MS (3600 * 1000)

typedef struct CliVerb {
        const char *name;
        int min_args, max_args;
        const char *args;
        const char *help;
        int (*run)(CliCtx *ctx, int argc, char **argv);
        unsigned flags;
} CliVerb;

static int cli_help(CliCtx *ctx, int argc, char **argv);

/* Sends req, prints errors, and hands a successful response to *ret.  Returns an exit code. */
static int cli_call(CliCtx *ctx, json_t *req, json_t **ret)
{
        json_t *resp = NULL;
        int r = client_request(ctx->socket, req, ctx->timeout_ms, &resp);
        switch (r) {
        case 0:
                break;
        case -ENOENT:
                fprintf(stderr,
                        "hive-c0re: the daemon is not running: there is no socket at %s.\n"
                        "Start it with `hive-c0re serve` (or `hive-c0re serve --dev`), or point "
                        "--socket or $HIVE_SOCKET at the right path.\n",
                        ctx->socket);
                return CLI_EXIT_UNREACHABLE;
        case -ECONNREFUSED:
                fprintf(stderr,
                        "hive-c0re: nothing is listening on %s (a stale socket file: the daemon "
                        "stopped or crashed). Start it with `hive-c0re serve`.\n",
                        ctx->socket);
                return CLI_EXIT_UNREACHABLE;
        case -EACCES:
        case -EPERM:
                fprintf(stderr,
                        "hive-c0re: permission denied on %s. host.sock is for root and the "
                        "hive-admin group: add your user to hive-admin (then log in again) or "
                        "run as root.\n",
                        ctx->socket);
                return CLI_EXIT_DENIED;
        case -ETIMEDOUT:
                fprintf(stderr, "hive-c0re: the daemon at %s did not answer within %d s.\n",
                        ctx->socket, ctx->timeout_ms / 1000);
                return CLI_EXIT_UNREACHABLE;
        case -ENAMETOOLONG:
                fprintf(stderr, "hive-c0re: the socket path %s is too long for a unix socket.\n",
                        ctx->socket);
                return CLI_EXIT_USAGE;
        case -ECONNRESET:
                fprintf(stderr,
                        "hive-c0re: the daemon at %s closed the connection without an "
                        "answer.\n",
                        ctx->socket);
                return CLI_EXIT_PROTOCOL;
        case -EBADMSG:
        case -EMSGSIZE:
                fprintf(stderr,
                        "hive-c0re: the daemon at %s sent an answer that is not a JSON "
                        "object line.\n",
                        ctx->socket);
                return CLI_EXIT_PROTOCOL;
        default:
                fprintf(stderr, "hive-c0re: talking to %s failed: %s\n", ctx->socket, strerror(-r));
                return CLI_EXIT_UNREACHABLE;
        }

        if (ctx->json) {
                _cleanup_free_ char *line = proto_dump_line(resp, NULL);
                fputs(line ? line : "", stdout);
        }
        const char *error = NULL, *code = NULL;
        r = proto_response_check(resp, &error, &code);
        if (r == -EPROTONOSUPPORT) {
                fprintf(stderr,
                        "hive-c0re: the daemon speaks another protocol version than "
                        "this client (%d); use matching versions.\n",
                        HIVE_PROTOCOL_VERSION);
                json_decref(resp);
                return CLI_EXIT_PROTOCOL;
        }
        if (r < 0) {
                fprintf(stderr, "hive-c0re: the daemon's answer has no valid \"ok\" key.\n");
                json_decref(resp);
                return CLI_EXIT_PROTOCOL;
        }
        if (r == 0) {
                if (!ctx->json)
                        fprintf(stderr, "hive-c0re: %s%s%s%s\n", error, code ? " (" : "",
                                code ? code : "", code ? ")" : "");
                bool denied = code && strcmp(code, "EACCES") == 0;
                json_decref(resp);
                return denied ? CLI_EXIT_DENIED : CLI_EXIT_REFUSED;
        }
        *ret = resp;
        return CLI_EXIT_OK;
}

/* Runs a verb whose request is just {"cmd": cmd}; hands the response to print. */
static int cli_simple(CliCtx *ctx, const char *cmd, int (*print)(json_t *resp))
{
        _cleanup_json_ json_t *req = json_pack("{s:s}", "cmd", cmd);
        _cleanup_json_ json_t *resp = NULL;
        int ex = cli_call(ctx, req, &resp);
        if (ex != CLI_EXIT_OK || ctx->json)
                return ex;
        return print(resp);
}

static int print_list(json_t *resp)
{
        json_t *a = json_object_get(resp, "agents");
        if (!json_is_array(a)) {
                fprintf(stderr, "hive-c0re: the answer has no \"agents\" list.\n");
                return CLI_EXIT_PROTOCOL;
        }
        if (json_array_size(a) == 0)
                fprintf(stderr, "no agents\n");
        size_t i;
        json_t *v;
        json_array_foreach(a, i, v) if (json_is_string(v)) puts(json_string_value(v));
        return CLI_EXIT_OK;
}

static int cli_list(CliCtx *ctx, int argc, char **argv)
{
        return cli_simple(ctx, "list", print_list);
}

static const char *row_state(const AgentStatusRow *r)
{
        /* The display precedence desktop clients use: failed > login > paused > stopped. */
        if (r->failed)
                return "failed";
        if (r->needs_login)
                return "needs-login";
        if (r->paused)
                return "paused";
        return r->running ? "running" : "stopped";
}

static int print_status(json_t *resp)
{
        json_t *a = json_object_get(resp, "agent_statuses");
        if (!json_is_array(a)) {
                fprintf(stderr, "hive-c0re: the answer has no \"agent_statuses\" list.\n");
                return CLI_EXIT_PROTOCOL;
        }
        if (json_array_size(a) == 0) {
                fprintf(stderr, "no agents\n");
                return CLI_EXIT_OK;
        }
        printf("%-10s %-12s %-12s %-18s %s\n", "NAME", "STATE", "DEPLOYED", "MODEL", "STATUS");
        size_t i;
        json_t *v;
        json_array_foreach(a, i, v)
        {
                AgentStatusRow r;
                if (proto_agent_status_row_decode(v, &r) < 0) {
                        fprintf(stderr, "hive-c0re: skipping a malformed status row.\n");
                        continue;
                }
                char state[64];
                snprintf(state, sizeof(state), "%s%s", row_state(&r),
                         r.needs_update ? "+update" : "");
                printf("%-10s %-12s %-12s %-18s %s\n", r.name, state,
                       r.deployed_sha ? r.deployed_sha : "-", r.active_model ? r.active_model : "-",
                       r.status_text ? r.status_text : "");
                agent_status_row_done(&r);
        }
        return CLI_EXIT_OK;
}

static int cli_status(CliCtx *ctx, int argc, char **argv)
{
        int ex = cli_simple(ctx, "agent_status", print_status);
        if (ex != CLI_EXIT_OK || ctx->json)
                return ex;
        /* Say so when the agents run without isolation (the process backend). */
        _cleanup_json_ json_t *req = json_pack("{s:s}", "cmd", "version");
        _cleanup_json_ json_t *resp = NULL;
        if (req && client_request(ctx->socket, req, ctx->timeout_ms, &resp) == 0 &&
            json_is_false(json_object_get(resp, "isolated")))
                fprintf(stderr,
                        "note: backend %s: agents run as plain processes, without isolation "
                        "(development only)\n",
                        json_string_value(json_object_get(resp, "backend")));
        return ex;
}

static int print_urls(json_t *resp)
{
        HiveUrls u;
        if (proto_urls_decode(json_object_get(resp, "urls"), &u) < 0) {
                fprintf(stderr, "hive-c0re: the answer has no valid \"urls\" object.\n");
                return CLI_EXIT_PROTOCOL;
        }
        const struct {
                const char *k, *v;
        } rows[] = {
                {"domain", u.domain}, {"home", u.home}, {"forge", u.forge}, {"matrix", u.matrix}};
        bool any = false;
        for (size_t i = 0; i < ELEMENTSOF(rows); i++)
                if (rows[i].v) {
                        printf("%-7s %s\n", rows[i].k, rows[i].v);
                        any = true;
                }
        if (!any)
                fprintf(stderr, "no URLs configured (see hive-c0re serve --domain, --home-url, "
                                "--forge-url, --matrix-url)\n");
        hive_urls_done(&u);
        return CLI_EXIT_OK;
}

static int cli_urls(CliCtx *ctx, int argc, char **argv)
{
        return cli_simple(ctx, "urls", print_urls);
}

static int print_version(json_t *resp)
{
        const char *dv = json_string_value(json_object_get(resp, "daemon_version"));
        const char *be = json_string_value(json_object_get(resp, "backend"));
        printf("daemon: hive-c0re %s, protocol %lld, backend %s%s\n", dv ? dv : "?",
               (long long)json_integer_value(json_object_get(resp, "protocol_version")),
               be ? be : "?",
               json_is_false(json_object_get(resp, "isolated")) ? " (no isolation)" : "");
        json_t *a = json_object_get(resp, "backends");
        printf("available backends:");
        size_t i;
        json_t *v;
        json_array_foreach(a, i, v) printf(" %s", json_string_value(v));
        putchar('\n');
        return CLI_EXIT_OK;
}

static int cli_version(CliCtx *ctx, int argc, char **argv)
{
        if (!ctx->json)
                printf("client: hive-c0re %s, protocol %d\n", HIVE_VERSION, HIVE_PROTOCOL_VERSION);
        return cli_simple(ctx, "version", print_version);
}

static int cli_set_paused(CliCtx *ctx, const char *name, bool paused)
{
        _cleanup_json_ json_t *req =
                json_pack("{s:s, s:s, s:b}", "cmd", "set_paused", "name", name, "paused", paused);
        _cleanup_json_ json_t *resp = NULL;
        int ex = cli_call(ctx, req, &resp);
        if (ex == CLI_EXIT_OK && !ctx->json)
                printf("%s %s\n", name, paused ? "paused" : "unpaused");
        return ex;
}

static int cli_pause(CliCtx *ctx, int argc, char **argv)
{
        return cli_set_paused(ctx, argv[1], true);
}

static int cli_unpause(CliCtx *ctx, int argc, char **argv)
{
        return cli_set_paused(ctx, argv[1], false);
}

/* Reads all of stdin for `send TO -`. */
static char *read_stdin(void)
{
        size_t cap = 4096, len = 0;
        char *buf = malloc(cap);
        while (buf) {
                size_t k = fread(buf + len, 1, cap - len - 1, stdin);
                len += k;
                if (k == 0)
                        break;
                if (cap - len < 2) {
                        char *nb = realloc(buf, cap * 2);
                        if (!nb) {
                                free(buf);
                                return NULL;
                        }
                        buf = nb;
                        cap *= 2;
                }
        }
        if (buf)
                buf[len] = '\0';
        return buf;
}

static int cli_send(CliCtx *ctx, int argc, char **argv)
{
        _cleanup_free_ char *in = NULL;
        const char *body = argv[2];
        if (strcmp(body, "-") == 0) {
                in = read_stdin();
                if (!in) {
                        fprintf(stderr, "hive-c0re: cannot read the message from stdin\n");
                        return CLI_EXIT_USAGE;
                }
                body = in;
        }
        _cleanup_json_ json_t *req =
                json_pack("{s:s, s:s, s:s}", "cmd", "send", "to", argv[1], "body", body);
        _cleanup_json_ json_t *resp = NULL;
        int ex = cli_call(ctx, req, &resp);
        if (ex == CLI_EXIT_OK && !ctx->json) {
                json_t *ids = json_object_get(resp, "ids");
                if (ids)
                        printf("sent to %zu recipients\n", json_array_size(ids));
                else
                        printf("sent as message %lld\n",
                               (long long)json_integer_value(json_object_get(resp, "id")));
        }
        return ex;
}

static int print_inbox(json_t *resp)
{
        json_t *a = json_object_get(resp, "messages");
        if (!json_is_array(a)) {
                fprintf(stderr, "hive-c0re: the answer has no \"messages\" list.\n");
                return CLI_EXIT_PROTOCOL;
        }
        if (json_array_size(a) == 0)
                fprintf(stderr, "no messages\n");
        size_t i;
        json_t *m;
        json_array_foreach(a, i, m)
        {
                printf("#%lld %s %s: %s\n", (long long)json_integer_value(json_object_get(m, "id")),
                       json_string_value(json_object_get(m, "sent_at")),
                       json_string_value(json_object_get(m, "from")),
                       json_string_value(json_object_get(m, "body")));
        }
        return CLI_EXIT_OK;
}

static int cli_inbox(CliCtx *ctx, int argc, char **argv)
{
        return cli_simple(ctx, "operator_inbox", print_inbox);
}

static int cli_ack(CliCtx *ctx, int argc, char **argv)
{
        _cleanup_json_ json_t *ids = json_array();
        for (int i = 1; i < argc; i++) {
                char *end = NULL;
                long long v = strtoll(argv[i], &end, 10);
                if (!end || *end || v <= 0) {
                        fprintf(stderr, "hive-c0re: \"%s\" is not a message id\n", argv[i]);
                        return CLI_EXIT_USAGE;
                }
                json_array_append_new(ids, json_integer(v));
        }
        _cleanup_json_ json_t *req = json_pack("{s:s, s:O}", "cmd", "operator_ack", "ids", ids);
        _cleanup_json_ json_t *resp = NULL;
        int ex = cli_call(ctx, req, &resp);
        if (ex == CLI_EXIT_OK && !ctx->json)
                printf("acknowledged %lld\n",
                       (long long)json_integer_value(json_object_get(resp, "acked")));
        return ex;
}

static int print_questions(json_t *resp)
{
        json_t *a = json_object_get(resp, "questions");
        if (json_array_size(a) == 0)
                fprintf(stderr, "no open questions\n");
        size_t i;
        json_t *q;
        json_array_foreach(a, i, q)
        {
                printf("#%lld %s -> %s: %s",
                       (long long)json_integer_value(json_object_get(q, "id")),
                       json_string_value(json_object_get(q, "asker")),
                       json_string_value(json_object_get(q, "target")),
                       json_string_value(json_object_get(q, "question")));
                json_t *opts = json_object_get(q, "options");
                size_t k;
                json_t *o;
                json_array_foreach(opts, k, o)
                        printf("%s%s", k ? " / " : " [", json_string_value(o));
                printf("%s\n", json_array_size(opts) ? "]" : "");
        }
        return CLI_EXIT_OK;
}

static int cli_questions(CliCtx *ctx, int argc, char **argv)
{
        return cli_simple(ctx, "questions", print_questions);
}

static int cli_answer(CliCtx *ctx, int argc, char **argv)
{
        char *end = NULL;
        long long id = strtoll(argv[1], &end, 10);
        if (!end || *end || id <= 0) {
                fprintf(stderr, "hive-c0re: \"%s\" is not a question id\n", argv[1]);
                return CLI_EXIT_USAGE;
        }
        _cleanup_json_ json_t *req = json_pack("{s:s, s:I, s:s}", "cmd", "answer", "id",
                                               (json_int_t)id, "answer", argv[2]);
        _cleanup_json_ json_t *resp = NULL;
        int ex = cli_call(ctx, req, &resp);
        if (ex == CLI_EXIT_OK && !ctx->json)
                printf("answered question %lld\n", id);
        return ex;
}

static int print_reminders(json_t *resp)
{
        json_t *a = json_object_get(resp, "reminders");
        if (json_array_size(a) == 0)
                fprintf(stderr, "no pending reminders\n");
        size_t i;
        json_t *r;
        json_array_foreach(a, i, r)
        {
                const char *err = json_string_value(json_object_get(r, "last_error"));
                printf("#%lld %s %s: %s%s%s%s\n",
                       (long long)json_integer_value(json_object_get(r, "id")),
                       json_string_value(json_object_get(r, "due_at")),
                       json_string_value(json_object_get(r, "agent")),
                       json_string_value(json_object_get(r, "message")),
                       err ? " (last error: " : "", err ? err : "", err ? ")" : "");
        }
        return CLI_EXIT_OK;
}

static int cli_reminders(CliCtx *ctx, int argc, char **argv)
{
        return cli_simple(ctx, "reminders", print_reminders);
}

/* Sends a lifecycle request, telling the operator what it waits for. */
static int cli_lifecycle(CliCtx *ctx, json_t *req, const char *doing, const char *done)
{
        if (!ctx->json)
                fprintf(stderr, "%s...\n", doing);
        _cleanup_json_ json_t *resp = NULL;
        int ex = cli_call(ctx, req, &resp);
        if (ex == CLI_EXIT_OK && !ctx->json)
                printf("%s\n", done);
        return ex;
}

/* "a1 b2" from argv[1..]. */
static char *join_args(int argc, char **argv)
{
        size_t len = 1;
        for (int i = 1; i < argc; i++)
                len += strlen(argv[i]) + 1;
        char *s = calloc(1, len);
        for (int i = 1; s && i < argc; i++) {
                if (i > 1)
                        strcat(s, " ");
                strcat(s, argv[i]);
        }
        return s;
}

static int cli_spawn(CliCtx *ctx, int argc, char **argv)
{
        _cleanup_json_ json_t *req = json_pack("{s:s, s:s}", "cmd", "spawn", "name", argv[1]);
        if (req && ctx->parent)
                json_object_set_new(req, "parent", json_string(ctx->parent));
        char doing[128], done[128];
        snprintf(doing, sizeof(doing), "spawning %s", argv[1]);
        snprintf(done, sizeof(done), "spawned %s", argv[1]);
        return cli_lifecycle(ctx, req, doing, done);
}

/* start/stop: names, or --all for the whole hive (never an empty scope by accident). */
static int cli_scoped(CliCtx *ctx, int argc, char **argv, const char *cmd, const char *ing,
                      const char *ed)
{
        if (ctx->all == (argc > 1)) {
                fprintf(stderr,
                        "hive-c0re: %s needs agent names, or --all for the whole hive (not "
                        "both)\n",
                        cmd);
                return CLI_EXIT_USAGE;
        }
        json_t *names = json_array();
        for (int i = 1; names && i < argc; i++)
                json_array_append_new(names, json_string(argv[i]));
        _cleanup_json_ json_t *req =
                json_pack("{s:s, s:{s:o}}", "cmd", cmd, "scope", "agent_names", names);
        if (req && ctx->graceful)
                json_object_set_new(req, "graceful", json_true());
        _cleanup_free_ char *who = ctx->all ? strdup("the whole hive") : join_args(argc, argv);
        char doing[256], done[256];
        snprintf(doing, sizeof(doing), "%s %s", ing, who ? who : "");
        snprintf(done, sizeof(done), "%s %s", ed, who ? who : "");
        return cli_lifecycle(ctx, req, doing, done);
}

static int cli_start(CliCtx *ctx, int argc, char **argv)
{
        return cli_scoped(ctx, argc, argv, "start", "starting", "started");
}

static int cli_stop(CliCtx *ctx, int argc, char **argv)
{
        return cli_scoped(ctx, argc, argv, "stop", "stopping", "stopped");
}

/* A verb whose request is {cmd, name}. */
static int cli_named(CliCtx *ctx, const char *cmd, const char *name, const char *ing,
                     const char *ed)
{
        _cleanup_json_ json_t *req = json_pack("{s:s, s:s}", "cmd", cmd, "name", name);
        if (req && ctx->purge)
                json_object_set_new(req, "purge", json_true());
        char doing[128], done[128];
        snprintf(doing, sizeof(doing), "%s %s", ing, name);
        snprintf(done, sizeof(done), "%s %s", ed, name);
        return cli_lifecycle(ctx, req, doing, done);
}

static int cli_kill(CliCtx *ctx, int argc, char **argv)
{
        return cli_named(ctx, "kill", argv[1], "stopping", "stopped");
}

static int cli_restart(CliCtx *ctx, int argc, char **argv)
{
        return cli_named(ctx, "restart", argv[1], "restarting", "restarted");
}

static int cli_destroy(CliCtx *ctx, int argc, char **argv)
{
        if (ctx->purge)
                return cli_named(ctx, "destroy", argv[1], "destroying", "destroyed and purged");
        _cleanup_free_ char *done = NULL;
        if (asprintf(&done,
                     "destroyed %s (its state is kept; `hive-c0re purge-tombstone %s` "
                     "deletes it)",
                     argv[1], argv[1]) < 0)
                return CLI_EXIT_UNREACHABLE;
        _cleanup_json_ json_t *req = json_pack("{s:s, s:s}", "cmd", "destroy", "name", argv[1]);
        char doing[128];
        snprintf(doing, sizeof(doing), "destroying %s", argv[1]);
        return cli_lifecycle(ctx, req, doing, done);
}

static int cli_purge_tombstone(CliCtx *ctx, int argc, char **argv)
{
        return cli_named(ctx, "purge_tombstone", argv[1], "purging the kept state of",
                         "purged the kept state of");
}

static int print_operations(json_t *resp)
{
        json_t *a = json_object_get(resp, "operations");
        if (json_array_size(a) == 0)
                fprintf(stderr, "no container operations in flight\n");
        size_t i;
        json_t *o;
        json_array_foreach(a, i, o)
        {
                char ts[TIMEUTIL_RFC3339_MAX];
                timeutil_rfc3339(json_integer_value(json_object_get(o, "since")), ts);
                printf("%-10s %-12s since %s\n", json_string_value(json_object_get(o, "name")),
                       json_string_value(json_object_get(o, "op")), ts);
        }
        return CLI_EXIT_OK;
}

static int cli_operations(CliCtx *ctx, int argc, char **argv)
{
        return cli_simple(ctx, "operations", print_operations);
}

static int print_pending(json_t *resp)
{
        json_t *a = json_object_get(resp, "approvals");
        if (!json_is_array(a)) {
                fprintf(stderr, "hive-c0re: the answer has no \"approvals\" list.\n");
                return CLI_EXIT_PROTOCOL;
        }
        if (json_array_size(a) == 0)
                fprintf(stderr, "no approvals\n");
        size_t i;
        json_t *v;
        json_array_foreach(a, i, v)
        {
                Approval ap;
                if (proto_approval_decode(v, &ap) < 0) {
                        fprintf(stderr, "hive-c0re: skipping a malformed approval.\n");
                        continue;
                }
                printf("#%-5lld %-9s %-13s %-10s %-12s %s%s%s\n", (long long)ap.id, ap.status,
                       ap.kind, ap.agent, ap.fetched_sha ? ap.fetched_sha : "-", ap.requested_at,
                       ap.description ? "  " : "", ap.description ? ap.description : "");
                approval_done(&ap);
        }
        return CLI_EXIT_OK;
}

static int cli_pending(CliCtx *ctx, int argc, char **argv)
{
        return cli_simple(ctx, "pending", print_pending);
}

/* An approval id argument: a positive integer, or a usage error. */
static int parse_id(const char *s, long long *ret)
{
        char *end = NULL;
        long long id = strtoll(s, &end, 10);
        if (!end || *end || id <= 0) {
                fprintf(stderr, "hive-c0re: \"%s\" is not an approval id\n", s);
                return CLI_EXIT_USAGE;
        }
        *ret = id;
        return CLI_EXIT_OK;
}

static int cli_show(CliCtx *ctx, int argc, char **argv)
{
        long long id;
        int ex = parse_id(argv[1], &id);
        if (ex != CLI_EXIT_OK)
                return ex;
        _cleanup_json_ json_t *req =
                json_pack("{s:s, s:I}", "cmd", "approval_status", "id", (json_int_t)id);
        _cleanup_json_ json_t *resp = NULL;
        ex = cli_call(ctx, req, &resp);
        if (ex != CLI_EXIT_OK || ctx->json)
                return ex;
        json_t *ap = json_object_get(resp, "approval");
        const char *desc = json_string_value(json_object_get(ap, "description"));
        const char *note = json_string_value(json_object_get(ap, "note"));
        const char *sha = json_string_value(json_object_get(resp, "sha"));
        const char *phase = json_string_value(json_object_get(resp, "phase"));
        printf("approval %lld: %s of %s, %s%s%s\n", id,
               json_string_value(json_object_get(ap, "kind")),
               json_string_value(json_object_get(ap, "agent")),
               json_string_value(json_object_get(ap, "status")), phase ? ", now: " : "",
               phase ? phase : "");
        if (sha)
                printf("commit: %s\n", sha);
        if (desc)
                printf("description: %s\n", desc);
        if (note)
                printf("note: %s\n", note);
        const char *diff = json_string_value(json_object_get(resp, "diff"));
        if (diff)
                printf("\n%s", diff);
        const char *log = json_string_value(json_object_get(resp, "build_log"));
        if (log && *log)
                printf("\nbuild log (end):\n%s", log);
        return CLI_EXIT_OK;
}

static int cli_decide(CliCtx *ctx, const char *cmd, const char *arg, const char *done)
{
        long long id;
        int ex = parse_id(arg, &id);
        if (ex != CLI_EXIT_OK)
                return ex;
        _cleanup_json_ json_t *req = json_pack("{s:s, s:I}", "cmd", cmd, "id", (json_int_t)id);
        if (req && ctx->note)
                json_object_set_new(req, "note", json_string(ctx->note));
        _cleanup_json_ json_t *resp = NULL;
        ex = cli_call(ctx, req, &resp);
        if (ex == CLI_EXIT_OK && !ctx->json)
                printf("%s %lld\n", done, id);
        return ex;
}

static int cli_approve(CliCtx *ctx, int argc, char **argv)
{
        return cli_decide(ctx, "approve", argv[1],
                          "approved (the deploy runs now; `hive-c0re show ID` follows it)");
}

static int cli_deny(CliCtx *ctx, int argc, char **argv)
{
        return cli_decide(ctx, "deny", argv[1], "denied");
}

static int cli_request_spawn(CliCtx *ctx, int argc, char **argv)
{
        _cleanup_json_ json_t *req =
                json_pack("{s:s, s:s}", "cmd", "request_spawn", "name", argv[1]);
        _cleanup_json_ json_t *resp = NULL;
        int ex = cli_call(ctx, req, &resp);
        if (ex == CLI_EXIT_OK && !ctx->json)
                printf("spawn of %s queued as approval %lld\n", argv[1],
                       (long long)json_integer_value(json_object_get(resp, "id")));
        return ex;
}

static int cli_serve(CliCtx *ctx, int argc, char **argv)
{
        HiveConfig cfg;
        int r = config_parse(&cfg, argc, argv);
        if (r == 0)
                r = config_finalize(&cfg);
        if (r > 0) {
                config_done(&cfg);
                return CLI_EXIT_OK;
        }
        if (r < 0) {
                config_done(&cfg);
                return CLI_EXIT_USAGE;
        }
        if (cfg.check_config) {
                config_dump(&cfg, stdout);
                config_done(&cfg);
                return CLI_EXIT_OK;
        }
        r = daemon_run(&cfg);
        config_done(&cfg);
        return r < 0 ? 1 : 0;
}

static const CliVerb verbs[] = {
        {"serve", 0, -1, "[OPTION]...", "run the daemon (see hive-c0re serve --help)", cli_serve},
        {"list", 0, 0, "", "list the managed agents", cli_list},
        {"status", 0, 0, "", "show every agent's state (agent_status)", cli_status},
        {"urls", 0, 0, "", "show the hive's domain and browser URLs", cli_urls},
        {"version", 0, 0, "", "show client and daemon versions and backends", cli_version},
        {"pause", 1, 1, "NAME", "park an agent's turn loop", cli_pause},
        {"unpause", 1, 1, "NAME", "let a paused agent take turns again", cli_unpause},
        {"send", 2, 2, "TO BODY", "send a message as the operator (BODY - reads stdin)", cli_send},
        {"inbox", 0, 0, "", "show unacknowledged messages to the operator", cli_inbox},
        {"ack", 1, 256, "ID...", "acknowledge operator messages", cli_ack},
        {"questions", 0, 0, "", "show open questions", cli_questions},
        {"answer", 2, 2, "ID ANSWER", "answer a question as the operator", cli_answer},
        {"reminders", 0, 0, "", "show pending reminders", cli_reminders},
        {"spawn", 1, 1, "NAME [--parent P]", "create and start a new agent", cli_spawn,
         CLI_OPT_PARENT | CLI_SLOW},
        {"start", 0, -1, "NAME...|--all", "start agents' containers", cli_start,
         CLI_OPT_ALL | CLI_SLOW},
        {"stop", 0, -1, "NAME...|--all [--graceful]", "stop agents' containers", cli_stop,
         CLI_OPT_ALL | CLI_OPT_GRACEFUL | CLI_SLOW},
        {"kill", 1, 1, "NAME", "stop one agent's container (graceful)", cli_kill, CLI_SLOW},
        {"restart", 1, 1, "NAME", "stop and start one agent's container", cli_restart, CLI_SLOW},
        {"destroy", 1, 1, "NAME [--purge]", "remove an agent (state kept unless --purge)",
         cli_destroy, CLI_OPT_PURGE | CLI_SLOW},
        {"purge-tombstone", 1, 1, "NAME", "delete the state a destroyed agent left",
         cli_purge_tombstone, CLI_SLOW},
        {"operations", 0, 0, "", "show container operations in flight", cli_operations},
        {"pending", 0, 0, "", "show the approval queue", cli_pending},
        {"show", 1, 1, "ID", "show one approval with its diff and build log", cli_show},
        {"approve", 1, 1, "ID", "approve a request (a config change is then built and deployed)",
         cli_approve},
        {"deny", 1, 1, "ID [--note TEXT]", "deny a request", cli_deny, CLI_OPT_NOTE},
        {"request-spawn", 1, 1, "NAME", "queue the spawn of a new agent for approval",
         cli_request_spawn},
        {"help", 0, 1, "[VERB]", "show this help, or one verb's", cli_help},
};

static const CliVerb *find_verb(const char *name)
{
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (strcmp(verbs[i].name, name) == 0)
                        return &verbs[i];
        return NULL;
}

static void usage(FILE *f)
{
        fprintf(f, "Usage: hive-c0re [--socket PATH] [--json] [--dev] [--timeout SECONDS] VERB "
                   "[ARG]...\n\nVerbs:\n");
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++) {
                char left[64];
                snprintf(left, sizeof(left), "%s %s", verbs[i].name, verbs[i].args);
                fprintf(f, "  %-22s %s\n", left, verbs[i].help);
        }
        fprintf(f, "\nOptions:\n"
                   "  --socket PATH          host.sock to talk to (default: $HIVE_SOCKET, "
                   "else " DEV_SOCKET " with --dev, else " DEFAULT_SOCKET ")\n"
                   "  --json                 print the daemon's raw JSON answer\n"
                   "  --dev                  talk to the development daemon in ./.hive\n"
                   "  --timeout SECONDS      how long to wait for an answer (default 30; an "
                   "hour for verbs that run container operations)\n"
                   "\nExit codes: 0 ok, 1 refused by the daemon, 2 usage, 3 daemon not running, "
                   "4 permission denied, 5 protocol error.\n");
}

static int cli_help(CliCtx *ctx, int argc, char **argv)
{
        if (argc > 1) {
                const CliVerb *v = find_verb(argv[1]);
                if (!v) {
                        fprintf(stderr, "hive-c0re: unknown verb \"%s\"\n", argv[1]);
                        return CLI_EXIT_USAGE;
                }
                if (strcmp(v->name, "serve") == 0) {
                        config_print_help(stdout);
                        return CLI_EXIT_OK;
                }
                printf("Usage: hive-c0re %s %s\n\n%s\n", v->name, v->args, v->help);
                return CLI_EXIT_OK;
        }
        usage(stdout);
        return CLI_EXIT_OK;
}

int cli_main(int argc, char **argv)
{
        CliCtx ctx = {.timeout_ms = 30000};
        const char *socket = NULL;
        bool dev = false;

        /* Global options stand before the verb; `serve` parses its own. */
        int i = 1;
        for (; i < argc && argv[i][0] == '-'; i++) {
                const char *a = argv[i];
                if (strcmp(a, "--json") == 0)
                        ctx.json = true;
                else if (strcmp(a, "--dev") == 0)
                        dev = true;
                else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
                        usage(stdout);
                        return CLI_EXIT_OK;
                } else if (strcmp(a, "--version") == 0) {
                        printf("hive-c0re %s (protocol %d)\n", HIVE_VERSION, HIVE_PROTOCOL_VERSION);
                        return CLI_EXIT_OK;
                } else if (strcmp(a, "--socket") == 0 || strcmp(a, "--timeout") == 0) {
                        if (i + 1 >= argc) {
                                fprintf(stderr, "hive-c0re: %s needs a value\n", a);
                                return CLI_EXIT_USAGE;
                        }
                        const char *val = argv[++i];
                        if (strcmp(a, "--socket") == 0)
                                socket = val;
                        else {
                                char *end = NULL;
                                long t = strtol(val, &end, 10);
                                if (!end || *end || t < 1 || t > 86400) {
                                        fprintf(stderr,
                                                "hive-c0re: --timeout \"%s\" is not a number of "
                                                "seconds from 1 to 86400\n",
                                                val);
                                        return CLI_EXIT_USAGE;
                                }
                                ctx.timeout_ms = (int)t * 1000;
                                ctx.timeout_set = true;
                        }
                } else {
                        fprintf(stderr, "hive-c0re: unknown option %s (see hive-c0re --help)\n", a);
                        return CLI_EXIT_USAGE;
                }
        }
        if (i >= argc) {
                usage(stderr);
                return CLI_EXIT_USAGE;
        }
        const CliVerb *v = find_verb(argv[i]);
        if (!v) {
                fprintf(stderr, "hive-c0re: unknown verb \"%s\" (see hive-c0re --help)\n", argv[i]);
                return CLI_EXIT_USAGE;
        }
        int vargc = argc - i;
        char **vargv = argv + i;

        if (strcmp(v->name, "serve") != 0) {
                /* Options may also follow the verb for client verbs. */
                int out = 1;
                for (int k = 1; k < vargc; k++) {
                        if (strcmp(vargv[k], "--json") == 0)
                                ctx.json = true;
                        else if (strcmp(vargv[k], "--dev") == 0)
                                dev = true;
                        else if (strcmp(vargv[k], "--socket") == 0 && k + 1 < vargc)
                                socket = vargv[++k];
                        else if ((v->flags & CLI_OPT_ALL) && strcmp(vargv[k], "--all") == 0)
                                ctx.all = true;
                        else if ((v->flags & CLI_OPT_GRACEFUL) &&
                                 strcmp(vargv[k], "--graceful") == 0)
                                ctx.graceful = true;
                        else if ((v->flags & CLI_OPT_PURGE) && strcmp(vargv[k], "--purge") == 0)
                                ctx.purge = true;
                        else if ((v->flags & CLI_OPT_NOTE) && strcmp(vargv[k], "--note") == 0) {
                                if (k + 1 >= vargc) {
                                        fprintf(stderr, "hive-c0re %s: --note needs a text\n",
                                                v->name);
                                        return CLI_EXIT_USAGE;
                                }
                                ctx.note = vargv[++k];
                        } else if ((v->flags & CLI_OPT_PARENT) &&
                                   strcmp(vargv[k], "--parent") == 0) {
                                if (k + 1 >= vargc) {
                                        fprintf(stderr, "hive-c0re %s: --parent needs a name\n",
                                                v->name);
                                        return CLI_EXIT_USAGE;
                                }
                                ctx.parent = vargv[++k];
                        } else if (vargv[k][0] == '-' && vargv[k][1]) {
                                fprintf(stderr, "hive-c0re %s: unknown option %s\n", v->name,
                                        vargv[k]);
                                return CLI_EXIT_USAGE;
                        } else
                                vargv[out++] = vargv[k];
                }
                vargc = out;
                int nargs = vargc - 1;
                if (nargs < v->min_args || (v->max_args >= 0 && nargs > v->max_args)) {
                        fprintf(stderr, "hive-c0re: usage: hive-c0re %s %s\n", v->name, v->args);
                        return CLI_EXIT_USAGE;
                }
        }

        if (!socket)
                socket = getenv("HIVE_SOCKET");
        if (!socket || !*socket)
                socket = dev ? DEV_SOCKET : DEFAULT_SOCKET;
        ctx.socket = socket;
        if ((v->flags & CLI_SLOW) && !ctx.timeout_set)
                ctx.timeout_ms = CLI_SLOW_TIMEOUT_MS;
        return v->run(&ctx, vargc, vargv);
}
