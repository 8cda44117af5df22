/* The verb table of hive-ag3nt / hive-m1nd, option parsing, and the output of the client
 * verbs.  Everything that talks to the daemon goes through hivelink.c. */
#define LOG_SUBSYSTEM "ag3nt"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ag3nt_cli.h"
#include "cleanup.h"
#include "hive-config.h"
#include "hivelink.h"
#include "log.h"
#include "mcp.h"
#include "serve.h"
#include "proto.h"

#define RETRY_FOR_DEFAULT_S 60
#define ANSWER_TIMEOUT_S    30          /* send, wake; recv adds its wait */
#define CALL_TIMEOUT_S      3600        /* call may run a container operation */
#define STDIN_MAX           (16u << 20) /* the daemon refuses far less; this only bounds us */

typedef struct CliCtx {
        const char *prog;
        Settings *settings;
        const char *socket;
        bool json;
        int timeout_s;       /* 0: the verb's default */
        int64_t retry_for_s; /* -1: the verb's default */
        const char *body;
        const char *from;
        int64_t in_reply_to; /* 0: none */
        int64_t wait_s;      /* -1: none */
        int64_t max;         /* 0: the daemon's default */
        bool no_ack;
        HiveLink *link;
} CliCtx;

/* Options a verb accepts besides the global ones. */
enum {
        OPT_BODY = 1u << 0,        /* --body TEXT */
        OPT_FROM = 1u << 1,        /* --from LABEL */
        OPT_IN_REPLY_TO = 1u << 2, /* --in-reply-to ID */
        OPT_WAIT = 1u << 3,        /* --wait SECONDS */
        OPT_MAX = 1u << 4,         /* --max N */
        OPT_NO_ACK = 1u << 5,      /* --no-ack */
};

typedef struct CliVerb {
        const char *name;
        int min_args, max_args;
        const char *args;
        const char *help;
        int (*run)(CliCtx *ctx, int argc, char **argv);
        unsigned flags;
} CliVerb;

static int cli_help(CliCtx *ctx, int argc, char **argv);

/* Reads all of stdin (at most STDIN_MAX bytes).  Malloc'ed, or NULL after printing why. */
static char *read_stdin(const char *prog)
{
        size_t cap = 4096, len = 0;
        _cleanup_free_ char *buf = malloc(cap);
        while (buf) {
                size_t k = fread(buf + len, 1, cap - len - 1, stdin);
                len += k;
                if (k == 0)
                        break;
                if (len > STDIN_MAX) {
                        fprintf(stderr, "%s: the input is over %u bytes\n", prog, STDIN_MAX);
                        return NULL;
                }
                if (cap - len < 2) {
                        char *nb = realloc(buf, cap * 2);
                        if (!nb)
                                break;
                        buf = nb;
                        cap *= 2;
                }
        }
        if (!buf || ferror(stdin)) {
                fprintf(stderr, "%s: cannot read stdin\n", prog);
                return NULL;
        }
        buf[len] = '\0';
        return TAKE_PTR(buf);
}

static int link_open(CliCtx *ctx, int64_t default_retry_s)
{
        int64_t retry = ctx->retry_for_s >= 0 ? ctx->retry_for_s : default_retry_s;
        HiveLinkOptions o = {
                .path = ctx->socket,
                .backoff_base_ms = (unsigned)ctx->settings->reconnect_base_ms,
                .give_up_ms = retry < 0 ? -1 : retry * 1000,
        };
        int r = hivelink_new(&o, &ctx->link);
        if (r < 0) {
                fprintf(stderr, "%s: out of memory\n", ctx->prog);
                return AG3NT_EXIT_UNREACHABLE;
        }
        return AG3NT_EXIT_OK;
}

/* Prints why the daemon could not be reached and returns the exit code. */
static int link_failure(CliCtx *ctx, int r, int timeout_s, int64_t retry_s)
{
        char gave_up[96] = "";
        if (retry_s > 0 && r != -ETIMEDOUT && r != -ENAMETOOLONG && r != -EBADMSG && r != -EMSGSIZE)
                snprintf(gave_up, sizeof(gave_up), " (gave up after retrying for %lld s)",
                         (long long)retry_s);
        switch (r) {
        case -ENOENT:
                fprintf(stderr,
                        "%s: cannot reach the hive daemon: there is no socket at %s%s.\n"
                        "Is the daemon running, and does $HIVE_SOCKET (or --socket) name this "
                        "agent's socket?\n",
                        ctx->prog, ctx->socket, gave_up);
                return AG3NT_EXIT_UNREACHABLE;
        case -ECONNREFUSED:
                fprintf(stderr,
                        "%s: cannot reach the hive daemon: nothing is listening on %s (a stale "
                        "socket: the daemon stopped or crashed)%s.\n",
                        ctx->prog, ctx->socket, gave_up);
                return AG3NT_EXIT_UNREACHABLE;
        case -EACCES:
        case -EPERM:
                fprintf(stderr,
                        "%s: permission denied on %s%s: an agent socket is for the agent "
                        "itself.\n",
                        ctx->prog, ctx->socket, gave_up);
                return AG3NT_EXIT_DENIED;
        case -ECONNRESET:
                fprintf(stderr, "%s: the daemon at %s closed the connection before answering%s.\n",
                        ctx->prog, ctx->socket, gave_up);
                return AG3NT_EXIT_UNREACHABLE;
        case -ETIMEDOUT:
                fprintf(stderr,
                        "%s: the daemon at %s did not answer within %d s (see --timeout).\n",
                        ctx->prog, ctx->socket, timeout_s);
                return AG3NT_EXIT_UNREACHABLE;
        case -ENAMETOOLONG:
                fprintf(stderr, "%s: the socket path %s is too long for a unix socket.\n",
                        ctx->prog, ctx->socket);
                return AG3NT_EXIT_USAGE;
        case -EBADMSG:
        case -EMSGSIZE:
                fprintf(stderr,
                        "%s: the daemon at %s sent an answer that is not a JSON object line.\n",
                        ctx->prog, ctx->socket);
                return AG3NT_EXIT_PROTOCOL;
        default:
                fprintf(stderr, "%s: talking to %s failed: %s%s\n", ctx->prog, ctx->socket,
                        strerror(-r), gave_up);
                return AG3NT_EXIT_UNREACHABLE;
        }
}

/* Sends req and checks the envelope.  On success hands the answer to *ret; prints the raw
 * line first when raw (or --json).  Returns an exit code. */
static int cli_call(CliCtx *ctx, json_t *req, int default_timeout_s, bool raw, json_t **ret)
{
        if (!req) {
                fprintf(stderr, "%s: out of memory\n", ctx->prog);
                return AG3NT_EXIT_UNREACHABLE;
        }
        int ex = link_open(ctx, RETRY_FOR_DEFAULT_S);
        if (ex != AG3NT_EXIT_OK)
                return ex;
        int timeout_s = ctx->timeout_s ? ctx->timeout_s : default_timeout_s;
        json_t *resp = NULL;
        int r = hivelink_request(ctx->link, req, timeout_s * 1000, &resp);
        if (r < 0)
                return link_failure(ctx, r, timeout_s,
                                    ctx->retry_for_s >= 0 ? ctx->retry_for_s : RETRY_FOR_DEFAULT_S);
        if (raw || ctx->json) {
                _cleanup_free_ char *line = proto_dump_line(resp, NULL);
                fputs(line ? line : "", stdout);
        }
        const char *error = NULL, *code = NULL;
        r = proto_response_check(resp, &error, &code);
        if (r == -EPROTONOSUPPORT) {
                fprintf(stderr,
                        "%s: the daemon speaks another protocol version than this client (%d).\n",
                        ctx->prog, HIVE_PROTOCOL_VERSION);
                json_decref(resp);
                return AG3NT_EXIT_PROTOCOL;
        }
        if (r < 0) {
                fprintf(stderr, "%s: the daemon's answer has no valid \"ok\" key.\n", ctx->prog);
                json_decref(resp);
                return AG3NT_EXIT_PROTOCOL;
        }
        if (r == 0) {
                fprintf(stderr, "%s: %s%s%s%s\n", ctx->prog, error, code ? " (" : "",
                        code ? code : "", code ? ")" : "");
                json_decref(resp);
                return AG3NT_EXIT_REFUSED;
        }
        *ret = resp;
        return AG3NT_EXIT_OK;
}

/* The body of send / wake: the positional argument or --body, "-" reading stdin. */
static int resolve_body(CliCtx *ctx, const char *verb, const char *positional, char **ret_buf,
                        const char **ret_body)
{
        if (positional && ctx->body) {
                fprintf(stderr, "%s %s: give the body once, as an argument or with --body\n",
                        ctx->prog, verb);
                return AG3NT_EXIT_USAGE;
        }
        const char *body = positional ? positional : ctx->body;
        if (!body) {
                fprintf(stderr,
                        "%s %s: the message body is missing (give BODY, --body TEXT, "
                        "or - to read stdin)\n",
                        ctx->prog, verb);
                return AG3NT_EXIT_USAGE;
        }
        *ret_buf = NULL;
        if (strcmp(body, "-") == 0) {
                *ret_buf = read_stdin(ctx->prog);
                if (!*ret_buf)
                        return AG3NT_EXIT_USAGE;
                body = *ret_buf;
        }
        *ret_body = body;
        return AG3NT_EXIT_OK;
}

static int cli_send(CliCtx *ctx, int argc, char **argv)
{
        _cleanup_free_ char *buf = NULL;
        const char *body = NULL;
        int ex = resolve_body(ctx, "send", argc > 2 ? argv[2] : NULL, &buf, &body);
        if (ex != AG3NT_EXIT_OK)
                return ex;
        _cleanup_json_ json_t *req =
                json_pack("{s:s, s:s, s:s}", "cmd", "send", "to", argv[1], "body", body);
        if (req && ctx->in_reply_to > 0)
                json_object_set_new(req, "in_reply_to", json_integer(ctx->in_reply_to));
        _cleanup_json_ json_t *resp = NULL;
        ex = cli_call(ctx, req, ANSWER_TIMEOUT_S, false, &resp);
        if (ex != AG3NT_EXIT_OK || ctx->json)
                return ex;
        json_t *ids = json_object_get(resp, "ids");
        if (ids)
                printf("sent to %zu recipients\n", json_array_size(ids));
        else
                printf("sent as message %lld\n",
                       (long long)json_integer_value(json_object_get(resp, "id")));
        return AG3NT_EXIT_OK;
}

static int cli_wake(CliCtx *ctx, int argc, char **argv)
{
        if (!ctx->from) {
                fprintf(stderr, "%s wake: --from LABEL is missing (who the message is from)\n",
                        ctx->prog);
                return AG3NT_EXIT_USAGE;
        }
        _cleanup_free_ char *buf = NULL;
        const char *body = NULL;
        int ex = resolve_body(ctx, "wake", argc > 1 ? argv[1] : NULL, &buf, &body);
        if (ex != AG3NT_EXIT_OK)
                return ex;
        _cleanup_json_ json_t *req =
                json_pack("{s:s, s:s, s:s}", "cmd", "wake", "from", ctx->from, "body", body);
        _cleanup_json_ json_t *resp = NULL;
        ex = cli_call(ctx, req, ANSWER_TIMEOUT_S, false, &resp);
        if (ex == AG3NT_EXIT_OK && !ctx->json)
                printf("woke as message %lld\n",
                       (long long)json_integer_value(json_object_get(resp, "id")));
        return ex;
}

static int cli_recv(CliCtx *ctx, int argc, char **argv)
{
        _cleanup_json_ json_t *req = json_pack("{s:s}", "cmd", "recv");
        if (req && ctx->wait_s >= 0)
                json_object_set_new(req, "wait_seconds", json_integer(ctx->wait_s));
        if (req && ctx->max > 0)
                json_object_set_new(req, "max", json_integer(ctx->max));
        int64_t wait = ctx->wait_s > 180 ? 180 : ctx->wait_s;
        _cleanup_json_ json_t *resp = NULL;
        int ex = cli_call(ctx, req, ANSWER_TIMEOUT_S + (int)(wait > 0 ? wait : 0), false, &resp);
        if (ex != AG3NT_EXIT_OK)
                return ex;
        json_t *msgs = json_object_get(resp, "messages");
        if (!json_is_array(msgs)) {
                fprintf(stderr, "%s: the answer has no \"messages\" list.\n", ctx->prog);
                return AG3NT_EXIT_PROTOCOL;
        }
        _cleanup_json_ json_t *ids = json_array();
        size_t i;
        json_t *m;
        json_array_foreach(msgs, i, m)
        {
                json_t *id = json_object_get(m, "id");
                if (ids && json_is_integer(id))
                        json_array_append(ids, id);
                if (ctx->json)
                        continue;
                printf("#%lld %s %s: %s\n", (long long)json_integer_value(id),
                       json_string_value(json_object_get(m, "sent_at")),
                       json_string_value(json_object_get(m, "from")),
                       json_string_value(json_object_get(m, "body")));
        }
        if (json_array_size(msgs) == 0 && !ctx->json)
                fprintf(stderr, "no messages\n");
        if (fflush(stdout) != 0) {
                fprintf(stderr, "%s: cannot write the messages; they stay unacknowledged\n",
                        ctx->prog);
                return AG3NT_EXIT_UNREACHABLE;
        }
        if (ctx->no_ack || json_array_size(ids) == 0)
                return AG3NT_EXIT_OK;
        /* Printed: now they are ours.  A failed ack only means they come back later. */
        _cleanup_json_ json_t *ack = json_pack("{s:s, s:O}", "cmd", "ack", "ids", ids);
        _cleanup_json_ json_t *ack_resp = NULL;
        int r = ack ? hivelink_request(ctx->link, ack, ANSWER_TIMEOUT_S * 1000, &ack_resp)
                    : -ENOMEM;
        if (r < 0 || proto_response_check(ack_resp, NULL, NULL) != 1)
                fprintf(stderr,
                        "%s: warning: could not acknowledge the messages (%s); they will be "
                        "offered again when their lease ends\n",
                        ctx->prog,
                        r < 0 ? strerror(-r)
                              : json_string_value(json_object_get(ack_resp, "error")));
        return AG3NT_EXIT_OK;
}

static int cli_call_verb(CliCtx *ctx, int argc, char **argv)
{
        const char *tool = argv[1];
        _cleanup_free_ char *buf = NULL;
        const char *text = argc > 2 ? argv[2] : "{}";
        if (strcmp(text, "-") == 0) {
                buf = read_stdin(ctx->prog);
                if (!buf)
                        return AG3NT_EXIT_USAGE;
                text = buf;
        }
        json_error_t jerr;
        _cleanup_json_ json_t *args = json_loads(text, 0, &jerr);
        if (!json_is_object(args)) {
                fprintf(stderr, "%s call: the arguments must be a JSON object%s%s\n", ctx->prog,
                        args ? "" : ": ", args ? "" : jerr.text);
                return AG3NT_EXIT_USAGE;
        }
        if (json_object_get(args, "cmd")) {
                fprintf(stderr, "%s call: the arguments must not hold \"cmd\"; the verb is %s\n",
                        ctx->prog, tool);
                return AG3NT_EXIT_USAGE;
        }
        _cleanup_json_ json_t *req = json_pack("{s:s}", "cmd", tool);
        if (req && json_object_update(req, args) < 0) {
                json_decref(req);
                req = NULL;
        }
        _cleanup_json_ json_t *resp = NULL;
        return cli_call(ctx, req, CALL_TIMEOUT_S, true, &resp);
}

static int cli_mcp(CliCtx *ctx, int argc, char **argv)
{
        /* The model CLI's tool calls wait for the daemon as long as it takes to come back. */
        int ex = link_open(ctx, -1);
        if (ex != AG3NT_EXIT_OK)
                return ex;
        Mcp m;
        mcp_init(&m, ctx->settings, ctx->link);
        int r = mcp_serve(&m, 0, 1);
        mcp_done(&m);
        return r < 0 ? (r == -EMSGSIZE ? AG3NT_EXIT_PROTOCOL : AG3NT_EXIT_REFUSED) : AG3NT_EXIT_OK;
}

static int cli_serve(CliCtx *ctx, int argc, char **argv)
{
        return serve_main(ctx->settings);
}

static const CliVerb verbs[] = {
        {"serve", 0, 0, "", "run the turn loop and the agent page (the container runs this)",
         cli_serve},
        {"mcp", 0, 0, "", "serve MCP over stdin/stdout (the model CLI launches this)", cli_mcp},
        {"send", 1, 2, "TO BODY", "send a message (BODY or --body TEXT; - reads stdin)", cli_send,
         OPT_BODY | OPT_IN_REPLY_TO},
        {"recv", 0, 0, "[--wait SECONDS] [--max N] [--no-ack]",
         "take messages from the inbox and acknowledge them", cli_recv,
         OPT_WAIT | OPT_MAX | OPT_NO_ACK},
        {"wake", 0, 1, "--from LABEL BODY",
         "put a message from LABEL in this agent's own inbox (- reads stdin)", cli_wake,
         OPT_BODY | OPT_FROM},
        {"call", 1, 2, "VERB [JSON]",
         "send {\"cmd\":VERB, ...JSON} on the socket and print the answer line (- reads stdin)",
         cli_call_verb},
        {"help", 0, 1, "[VERB]", "show this help, or one verb's", cli_help},
};

static const CliVerb *find_verb(const char *name)
{
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (strcmp(verbs[i].name, name) == 0)
                        return &verbs[i];
        return NULL;
}

static void usage(const char *prog, FILE *f)
{
        fprintf(f, "Usage: %s [OPTION]... VERB [ARG]...\n\nVerbs:\n", prog);
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++) {
                char left[64];
                snprintf(left, sizeof(left), "%s %s", verbs[i].name, verbs[i].args);
                fprintf(f, "  %-44s %s\n", left, verbs[i].help);
        }
        fprintf(f,
                "\nOptions:\n"
                "  --socket PATH          the agent socket (default $HIVE_SOCKET, else "
                "/run/hive/mcp.sock)\n"
                "  --json                 print the daemon's raw JSON answer\n"
                "  --timeout SECONDS      longest wait for an answer (default 30; recv adds its "
                "wait; call 3600)\n"
                "  --retry-for SECONDS    keep reconnecting this long before giving up (default "
                "%d; mcp: for ever)\n"
                "  --no-retry             fail at once when the daemon cannot be reached\n"
                "\nEnvironment:\n",
                RETRY_FOR_DEFAULT_S);
        settings_print_help(f);
        fprintf(f, "\nExit codes: 0 ok, 1 refused by the daemon, 2 usage, 3 daemon unreachable or "
                   "no answer in time, 4 permission denied, 5 protocol error.\n");
}

static int cli_help(CliCtx *ctx, int argc, char **argv)
{
        if (argc > 1) {
                const CliVerb *v = find_verb(argv[1]);
                if (!v) {
                        fprintf(stderr, "%s: unknown verb \"%s\"\n", ctx->prog, argv[1]);
                        return AG3NT_EXIT_USAGE;
                }
                printf("Usage: %s %s %s\n\n%s\n", ctx->prog, v->name, v->args, v->help);
                return AG3NT_EXIT_OK;
        }
        usage(ctx->prog, stdout);
        return AG3NT_EXIT_OK;
}

static int parse_int(const char *prog, const char *opt, const char *s, int64_t min, int64_t max,
                     int64_t *ret)
{
        char *end = NULL;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (errno || !end || *end || end == s || v < min || v > max) {
                fprintf(stderr, "%s: %s \"%s\" is not a whole number from %lld to %lld\n", prog,
                        opt, s, (long long)min, (long long)max);
                return AG3NT_EXIT_USAGE;
        }
        *ret = v;
        return AG3NT_EXIT_OK;
}

/* One option at argv[*k] (its value, if any, at argv[*k + 1]).  flags: the verb's options
 * (0 before the verb).  Returns an exit code; 2 after printing why. */
static int parse_option(CliCtx *ctx, unsigned flags, int argc, char **argv, int *k,
                        const char *verb)
{
        const char *a = argv[*k];
        static const struct {
                const char *name;
                unsigned flag; /* 0: global */
                bool value;
        } opts[] = {
                {"--json", 0, false},
                {"--socket", 0, true},
                {"--timeout", 0, true},
                {"--retry-for", 0, true},
                {"--no-retry", 0, false},
                {"--body", OPT_BODY, true},
                {"--from", OPT_FROM, true},
                {"--in-reply-to", OPT_IN_REPLY_TO, true},
                {"--wait", OPT_WAIT, true},
                {"--max", OPT_MAX, true},
                {"--no-ack", OPT_NO_ACK, false},
        };
        size_t i = 0;
        while (i < ELEMENTSOF(opts) &&
               (strcmp(opts[i].name, a) != 0 || (opts[i].flag && !(flags & opts[i].flag))))
                i++;
        if (i == ELEMENTSOF(opts)) {
                fprintf(stderr, "%s%s%s: unknown option %s (see %s --help)\n", ctx->prog,
                        verb ? " " : "", verb ? verb : "", a, ctx->prog);
                return AG3NT_EXIT_USAGE;
        }
        const char *val = NULL;
        if (opts[i].value) {
                if (*k + 1 >= argc) {
                        fprintf(stderr, "%s: %s needs a value\n", ctx->prog, a);
                        return AG3NT_EXIT_USAGE;
                }
                val = argv[++*k];
        }
        int64_t n = 0;
        int ex = AG3NT_EXIT_OK;
        if (strcmp(a, "--json") == 0)
                ctx->json = true;
        else if (strcmp(a, "--socket") == 0)
                ctx->socket = val;
        else if (strcmp(a, "--timeout") == 0) {
                ex = parse_int(ctx->prog, a, val, 1, 86400, &n);
                ctx->timeout_s = (int)n;
        } else if (strcmp(a, "--retry-for") == 0)
                ex = parse_int(ctx->prog, a, val, 0, 86400 * 365, &ctx->retry_for_s);
        else if (strcmp(a, "--no-retry") == 0)
                ctx->retry_for_s = 0;
        else if (strcmp(a, "--body") == 0)
                ctx->body = val;
        else if (strcmp(a, "--from") == 0)
                ctx->from = val;
        else if (strcmp(a, "--in-reply-to") == 0)
                ex = parse_int(ctx->prog, a, val, 1, INT64_MAX, &ctx->in_reply_to);
        else if (strcmp(a, "--wait") == 0)
                ex = parse_int(ctx->prog, a, val, 0, 180, &ctx->wait_s);
        else if (strcmp(a, "--max") == 0)
                ex = parse_int(ctx->prog, a, val, 1, 32, &ctx->max);
        else if (strcmp(a, "--no-ack") == 0)
                ctx->no_ack = true;
        return ex;
}

static bool is_option(const char *a)
{
        return a[0] == '-' && a[1] != '\0';
}

int ag3nt_cli_main(HarnessFlavor flavor, int argc, char **argv)
{
        /* A closed stdout must not kill the MCP server; writes report EPIPE instead. */
        signal(SIGPIPE, SIG_IGN);
        CliCtx ctx = {.prog = settings_program(flavor), .retry_for_s = -1, .wait_s = -1};

        int i = 1;
        for (; i < argc && is_option(argv[i]); i++) {
                if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
                        usage(ctx.prog, stdout);
                        return AG3NT_EXIT_OK;
                }
                if (strcmp(argv[i], "--version") == 0) {
                        printf("%s %s (protocol %d)\n", ctx.prog, HIVE_VERSION,
                               HIVE_PROTOCOL_VERSION);
                        return AG3NT_EXIT_OK;
                }
                int ex = parse_option(&ctx, 0, argc, argv, &i, NULL);
                if (ex != AG3NT_EXIT_OK)
                        return ex;
        }
        if (i >= argc) {
                usage(ctx.prog, stderr);
                return AG3NT_EXIT_USAGE;
        }
        const CliVerb *v = find_verb(argv[i]);
        if (!v) {
                fprintf(stderr, "%s: unknown verb \"%s\" (see %s --help)\n", ctx.prog, argv[i],
                        ctx.prog);
                return AG3NT_EXIT_USAGE;
        }

        /* Options may follow the verb too; "--" ends them. */
        int vargc = 1;
        _cleanup_free_ char **vargv = calloc((size_t)(argc - i) + 1, sizeof(char *));
        if (!vargv)
                return AG3NT_EXIT_UNREACHABLE;
        vargv[0] = argv[i];
        bool options_done = false;
        for (int k = i + 1; k < argc; k++) {
                if (!options_done && strcmp(argv[k], "--") == 0) {
                        options_done = true;
                        continue;
                }
                if (!options_done && is_option(argv[k])) {
                        int ex = parse_option(&ctx, v->flags, argc, argv, &k, v->name);
                        if (ex != AG3NT_EXIT_OK)
                                return ex;
                        continue;
                }
                vargv[vargc++] = argv[k];
        }
        int nargs = vargc - 1;
        if (nargs < v->min_args || nargs > v->max_args) {
                fprintf(stderr, "%s: usage: %s %s %s\n", ctx.prog, ctx.prog, v->name, v->args);
                return AG3NT_EXIT_USAGE;
        }

        Settings settings;
        _cleanup_free_ char *err = NULL;
        int r = settings_load(&settings, flavor, &err);
        if (r < 0) {
                fprintf(stderr, "%s: %s\n", ctx.prog, err ? err : strerror(-r));
                return AG3NT_EXIT_USAGE;
        }
        ctx.settings = &settings;
        if (!ctx.socket)
                ctx.socket = settings.socket;
        int ex = v->run(&ctx, vargc, vargv);
        hivelink_free(ctx.link);
        settings_done(&settings);
        return ex;
}
