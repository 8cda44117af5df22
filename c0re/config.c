/* Option table for `hive-c0re serve`.  Every option, its type, default (normal and --dev),
 * range and documentation live in one row; parsing, help and --check-config read the table. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "cleanup.h"
#include "config.h"
#include "hive-config.h"
#include "log.h"

typedef enum {
        OPT_FLAG,
        OPT_STRING,
        OPT_CHOICE,
        OPT_INT,
        OPT_LIST, /* repeatable: every value is kept, in order (a NULL-terminated char **) */
} OptType;

typedef struct OptSpec {
        const char *name;
        OptType type;
        size_t offset;
        const char *def;     /* default; NULL = unset */
        const char *dev_def; /* default under --dev, when different */
        const char *const *choices;
        int64_t min, max;
        const char *metavar;
        const char *doc;
} OptSpec;

static const char *const backend_choices[] = {"auto", "nixos-container", "nspawn", "process", NULL};
static const char *const level_choices[] = {"error", "warning", "info", "debug", NULL};

#define O(n, t, m) .name = n, .type = t, .offset = offsetof(HiveConfig, m)

static const OptSpec options[] = {
        {O("dev", OPT_FLAG, dev),
         .doc = "development mode: state in ./.hive, run dir ./.hive/run, a "
                "backend that works on this machine"},
        {O("state-dir", OPT_STRING, state_dir), .def = "/var/lib/hyperhive", .dev_def = "./.hive",
         .metavar = "DIR", .doc = "where hive.sqlite, repos and agent state live"},
        {O("run-dir", OPT_STRING, run_dir), .def = "/run/hyperhive", .dev_def = "<state-dir>/run",
         .metavar = "DIR", .doc = "where host.sock and the agent sockets live (created 0751)"},
        {O("backend", OPT_CHOICE, backend), .def = "auto", .choices = backend_choices,
         .metavar = "NAME", .doc = "container backend; auto picks the best one available"},
        {O("dashboard", OPT_STRING, dashboard), .def = "127.0.0.1:7000", .metavar = "HOST:PORT",
         .doc = "dashboard listen address"},
        {O("log-level", OPT_CHOICE, log_level), .def = "info", .choices = level_choices,
         .metavar = "LEVEL", .doc = "least severe level that is logged"},
        {O("domain", OPT_STRING, domain), .metavar = "NAME",
         .doc = "the hive's domain; sets the home URL https://NAME/ and agent page URLs"},
        {O("home-url", OPT_STRING, home_url), .metavar = "URL",
         .doc = "operator dashboard URL reported by `urls` (default from --domain)"},
        {O("forge-url", OPT_STRING, forge_url), .metavar = "URL",
         .doc = "forge URL reported by `urls`"},
        {O("matrix-url", OPT_STRING, matrix_url), .metavar = "URL",
         .doc = "matrix URL reported by `urls`"},
        {O("max-clients", OPT_INT, max_clients), .def = "512", .min = 1, .max = 65536,
         .metavar = "N", .doc = "concurrent host.sock connections; more are refused"},
        {O("idle-timeout", OPT_INT, idle_timeout), .def = "30", .min = 1, .max = 3600,
         .metavar = "SECONDS", .doc = "close a host.sock connection that sends nothing this long"},
        {O("lease-seconds", OPT_INT, lease_seconds), .def = "600", .min = 1, .max = 86400,
         .metavar = "SECONDS", .doc = "a received message not acked this long is offered again"},
        {O("no-manager", OPT_FLAG, no_manager),
         .doc = "do not create and run the manager agent (hm1nd) at start-up"},
        {O("agent-command", OPT_STRING, agent_command), .metavar = "CMD",
         .doc = "run CMD (with /bin/sh -c) as every agent's payload instead of the harness "
                "(nspawn and process backends); it sees HIVE_LABEL, HIVE_SOCKET, HIVE_PORT, "
                "HIVE_STATE_DIR"},
        {O("nixos-container", OPT_STRING, nixos_container), .def = "nixos-container",
         .metavar = "PROGRAM", .doc = "the nixos-container program the backend of that name runs"},
        {O("op-timeout", OPT_INT, op_timeout), .def = "300", .min = 1, .max = 86400,
         .metavar = "SECONDS",
         .doc = "longest one container operation (create, start, ...) may take"},
        {O("stop-grace", OPT_INT, stop_grace), .def = "10", .min = 0, .max = 3600,
         .metavar = "SECONDS",
         .doc = "on stop, how long a container has after SIGTERM before it is killed"},
        {O("crash-interval", OPT_INT, crash_interval), .def = "10", .min = 1, .max = 3600,
         .metavar = "SECONDS",
         .doc = "how often the crash watcher compares containers with "
                "what the daemon expects"},
        {O("templates-dir", OPT_STRING, templates_dir), .def = HIVE_DATADIR "/templates",
         .dev_def = "./templates", .metavar = "DIR",
         .doc = "the seed of a new agent's config repo (agent.nix, flake.nix)"},
        {O("nixpkgs", OPT_STRING, nixpkgs), .def = "flake:nixpkgs",
         .dev_def = "./tests/fixtures/nixpkgs-standin", .metavar = "FLAKEREF",
         .doc = "the meta flake's nixpkgs input (a directory is taken as path:DIR)"},
        {O("builder", OPT_STRING, builder), .metavar = "CMD",
         .doc = "build an approved config with CMD (run by /bin/sh -c, the flake attribute "
                "as $1, in the meta repo) instead of nix build"},
        {O("payload-env", OPT_LIST, payload_env), .metavar = "NAME=VALUE",
         .doc = "add NAME=VALUE to the environment of every payload the nspawn and process "
                "backends start (repeatable; a later NAME wins; not PATH, HOME or HIVE_LABEL, "
                "HIVE_SOCKET, HIVE_PORT, HIVE_STATE_DIR)"},
        {O("check-config", OPT_FLAG, check_config),
         .doc = "print the resolved configuration, check it, and exit"},
};

#define FIELD(c, o, type) ((type *)((char *)(c) + (o)->offset))

static int opt_set(HiveConfig *c, const OptSpec *o, const char *value)
{
        switch (o->type) {
        case OPT_FLAG:
                *FIELD(c, o, bool) = true;
                return 0;
        case OPT_CHOICE: {
                bool found = false;
                for (const char *const *ch = o->choices; *ch; ch++)
                        found = found || strcmp(*ch, value) == 0;
                if (!found) {
                        fprintf(stderr, "hive-c0re: --%s: \"%s\" is not one of:", o->name, value);
                        for (const char *const *ch = o->choices; *ch; ch++)
                                fprintf(stderr, " %s", *ch);
                        fputc('\n', stderr);
                        return -EINVAL;
                }
                __attribute__((fallthrough));
        }
        case OPT_STRING: {
                char *s = strdup(value);
                if (!s)
                        return -ENOMEM;
                free(*FIELD(c, o, char *));
                *FIELD(c, o, char *) = s;
                return 0;
        }
        case OPT_INT: {
                char *end = NULL;
                errno = 0;
                long long v = strtoll(value, &end, 10);
                if (errno || !end || *end || end == value || v < o->min || v > o->max) {
                        fprintf(stderr,
                                "hive-c0re: --%s: \"%s\" is not a whole number from %lld to "
                                "%lld\n",
                                o->name, value, (long long)o->min, (long long)o->max);
                        return -EINVAL;
                }
                *FIELD(c, o, int64_t) = v;
                return 0;
        }
        case OPT_LIST: {
                char ***list = FIELD(c, o, char **);
                size_t n = strv_length(*list);
                char **nl = realloc(*list, (n + 2) * sizeof(char *));
                if (!nl)
                        return -ENOMEM;
                *list = nl;
                nl[n] = NULL;
                if (!(nl[n] = strdup(value)))
                        return -ENOMEM;
                nl[n + 1] = NULL;
                return 0;
        }
        }
        return -EINVAL;
}

int config_parse(HiveConfig *c, int argc, char **argv)
{
        *c = (HiveConfig){0};
        bool dev = false;
        for (int i = 1; i < argc; i++)
                if (strcmp(argv[i], "--dev") == 0)
                        dev = true;

        for (size_t i = 0; i < ELEMENTSOF(options); i++) {
                const OptSpec *o = &options[i];
                const char *d = dev && o->dev_def ? o->dev_def : o->def;
                if (d && o->type != OPT_FLAG && opt_set(c, o, d) < 0)
                        return -EINVAL;
        }

        struct option longopts[ELEMENTSOF(options) + 2];
        for (size_t i = 0; i < ELEMENTSOF(options); i++)
                longopts[i] = (struct option){options[i].name,
                                              options[i].type == OPT_FLAG ? no_argument
                                                                          : required_argument,
                                              NULL, 1000 + (int)i};
        longopts[ELEMENTSOF(options)] = (struct option){"help", no_argument, NULL, 'h'};
        longopts[ELEMENTSOF(options) + 1] = (struct option){0};

        optind = 0;
        opterr = 0;
        int ch;
        while ((ch = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
                if (ch == 'h') {
                        config_print_help(stdout);
                        return 1;
                }
                if (ch == '?' || ch == ':') {
                        const char *bad = argv[optind - 1];
                        bool known = optopt >= 1000 && optopt < 1000 + (int)ELEMENTSOF(options);
                        if (known && options[optopt - 1000].type == OPT_FLAG)
                                fprintf(stderr, "hive-c0re serve: option --%s takes no value\n",
                                        options[optopt - 1000].name);
                        else if (ch == ':' || known)
                                fprintf(stderr, "hive-c0re serve: option %s needs a value\n", bad);
                        else
                                fprintf(stderr,
                                        "hive-c0re serve: unknown option %s (see hive-c0re serve "
                                        "--help)\n",
                                        bad);
                        return -EINVAL;
                }
                int r = opt_set(c, &options[ch - 1000], optarg);
                if (r < 0)
                        return r;
        }
        if (optind < argc) {
                fprintf(stderr, "hive-c0re serve: unexpected argument \"%s\"\n", argv[optind]);
                return -EINVAL;
        }
        return 0;
}

static int make_absolute(char **p)
{
        if ((*p)[0] == '/')
                return 0;
        _cleanup_free_ char *cwd = getcwd(NULL, 0);
        if (!cwd)
                return -errno;
        const char *rel = (*p)[0] == '.' && (*p)[1] == '/' ? *p + 2 : *p;
        char *abs = NULL;
        if (asprintf(&abs, "%s/%s", cwd, rel) < 0)
                return -ENOMEM;
        free(*p);
        *p = abs;
        return 0;
}

static bool url_ok(const char *u)
{
        return strncmp(u, "http://", 7) == 0 || strncmp(u, "https://", 8) == 0;
}

/* Checks every --payload-env NAME=VALUE and drops the earlier of two with one NAME, so the
 * later one wins.  0, or -EINVAL after printing why. */
static int config_check_payload_env(HiveConfig *c)
{
        char **v = c->payload_env;
        size_t n = strv_length(v);
        for (size_t i = 0; i < n; i++) {
                const char *e = v[i], *eq = strchr(e, '=');
                size_t len = eq ? (size_t)(eq - e) : strlen(e);
                bool ok = len > 0 && !(e[0] >= '0' && e[0] <= '9') &&
                          strspn(e, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                    "0123456789_") == len;
                if (!eq || !ok) {
                        fprintf(stderr,
                                "hive-c0re: --payload-env \"%s\" is not NAME=VALUE with a NAME "
                                "of letters, digits and '_' that does not start with a digit\n",
                                e);
                        return -EINVAL;
                }
                _cleanup_free_ char *name = strndup(e, len);
                if (!name)
                        return -ENOMEM;
                if (backend_payload_env_fixed(name)) {
                        fprintf(stderr,
                                "hive-c0re: --payload-env cannot set %s: the daemon sets it for "
                                "every payload (PATH, HOME, HIVE_LABEL, HIVE_SOCKET, HIVE_PORT "
                                "and HIVE_STATE_DIR are fixed)\n",
                                name);
                        return -EINVAL;
                }
        }
        /* A later NAME overrides an earlier one: keep only the last of each. */
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
                size_t len = (size_t)(strchr(v[i], '=') - v[i]) + 1;
                bool later = false;
                for (size_t j = i + 1; j < n && !later; j++)
                        later = strncmp(v[i], v[j], len) == 0;
                if (later)
                        free(v[i]);
                else
                        v[k++] = v[i];
        }
        if (v)
                v[k] = NULL;
        return 0;
}

int config_finalize(HiveConfig *c)
{
        if (strcmp(c->run_dir, "<state-dir>/run") == 0) {
                free(c->run_dir);
                if (asprintf(&c->run_dir, "%s/run", c->state_dir) < 0)
                        return -ENOMEM;
        }
        if (make_absolute(&c->state_dir) < 0 || make_absolute(&c->run_dir) < 0 ||
            make_absolute(&c->templates_dir) < 0)
                return log_error_errno(-ENOMEM, "cannot resolve the working directory: %m");
        /* A local directory as nixpkgs is a path: flake ref (the stand-in of the tests). */
        if (c->nixpkgs[0] == '/' || c->nixpkgs[0] == '.') {
                if (make_absolute(&c->nixpkgs) < 0)
                        return -ENOMEM;
                char *ref = NULL;
                if (asprintf(&ref, "path:%s", c->nixpkgs) < 0)
                        return -ENOMEM;
                free(c->nixpkgs);
                c->nixpkgs = ref;
        }

        _cleanup_free_ char *sock = config_host_socket(c);
        if (!sock)
                return -ENOMEM;
        if (strlen(sock) >= 108) {
                fprintf(stderr,
                        "hive-c0re: the socket path %s is %zu bytes, over the 107 a unix socket "
                        "allows; choose a shorter --run-dir\n",
                        sock, strlen(sock));
                return -EINVAL;
        }

        if (c->agent_command && !c->agent_command[strspn(c->agent_command, " \t")]) {
                fprintf(stderr, "hive-c0re: --agent-command is empty; give a command, or leave "
                                "the option out to run the harness\n");
                return -EINVAL;
        }

        int r = config_check_payload_env(c);
        if (r < 0)
                return r;

        const char *colon = strrchr(c->dashboard, ':');
        char *end = NULL;
        long port = colon ? strtol(colon + 1, &end, 10) : 0;
        if (!colon || colon == c->dashboard || !end || *end || port < 1 || port > 65535) {
                fprintf(stderr,
                        "hive-c0re: --dashboard \"%s\" is not HOST:PORT with a port from 1 to "
                        "65535\n",
                        c->dashboard);
                return -EINVAL;
        }

        if (c->domain) {
                for (const char *p = c->domain; *p; p++)
                        if (!strchr("abcdefghijklmnopqrstuvwxyz0123456789.-", *p)) {
                                fprintf(stderr,
                                        "hive-c0re: --domain \"%s\" may hold only lowercase "
                                        "letters, digits, '.' and '-'\n",
                                        c->domain);
                                return -EINVAL;
                        }
                if (!c->home_url && asprintf(&c->home_url, "https://%s/", c->domain) < 0)
                        return -ENOMEM;
        }
        const struct {
                const char *opt, *val;
        } urls[] = {{"home-url", c->home_url},
                    {"forge-url", c->forge_url},
                    {"matrix-url", c->matrix_url}};
        for (size_t i = 0; i < ELEMENTSOF(urls); i++)
                if (urls[i].val && !url_ok(urls[i].val)) {
                        fprintf(stderr,
                                "hive-c0re: --%s \"%s\" must start with http:// or https://\n",
                                urls[i].opt, urls[i].val);
                        return -EINVAL;
                }
        return 0;
}

void config_done(HiveConfig *c)
{
        for (size_t i = 0; i < ELEMENTSOF(options); i++)
                if (options[i].type == OPT_STRING || options[i].type == OPT_CHOICE) {
                        free(*FIELD(c, &options[i], char *));
                        *FIELD(c, &options[i], char *) = NULL;
                } else if (options[i].type == OPT_LIST)
                        *FIELD(c, &options[i], char **) =
                                strv_free(*FIELD(c, &options[i], char **));
}

void config_print_help(FILE *f)
{
        fprintf(f, "Usage: hive-c0re serve [OPTION]...\n\nRun the hyperhive host daemon.\n\n"
                   "Options:\n");
        for (size_t i = 0; i < ELEMENTSOF(options); i++) {
                const OptSpec *o = &options[i];
                char left[64];
                snprintf(left, sizeof(left), "--%s%s%s", o->name, o->metavar ? " " : "",
                         o->metavar ? o->metavar : "");
                fprintf(f, "  %-26s %s", left, o->doc);
                if (o->choices) {
                        fputs(" (", f);
                        for (const char *const *ch = o->choices; *ch; ch++)
                                fprintf(f, "%s%s", ch == o->choices ? "" : ", ", *ch);
                        fputc(')', f);
                }
                if (o->def)
                        fprintf(f, " [default: %s", o->def);
                if (o->def && o->dev_def)
                        fprintf(f, "; with --dev: %s", o->dev_def);
                if (o->def)
                        fputc(']', f);
                if (o->type == OPT_LIST)
                        fputs(" [repeatable]", f);
                fputc('\n', f);
        }
        fprintf(f, "  %-26s %s\n", "--help", "show this help");
}

void config_dump(const HiveConfig *c, FILE *f)
{
        for (size_t i = 0; i < ELEMENTSOF(options); i++) {
                const OptSpec *o = &options[i];
                if (o->type == OPT_FLAG && strcmp(o->name, "check-config") == 0)
                        continue;
                switch (o->type) {
                case OPT_FLAG:
                        fprintf(f, "%s = %s\n", o->name,
                                *FIELD((HiveConfig *)c, o, bool) ? "true" : "false");
                        break;
                case OPT_STRING:
                case OPT_CHOICE: {
                        const char *v = *FIELD((HiveConfig *)c, o, char *);
                        fprintf(f, "%s = %s\n", o->name, v ? v : "(unset)");
                        break;
                }
                case OPT_INT:
                        fprintf(f, "%s = %lld\n", o->name,
                                (long long)*FIELD((HiveConfig *)c, o, int64_t));
                        break;
                case OPT_LIST: {
                        char **v = *FIELD((HiveConfig *)c, o, char **);
                        if (!v || !*v)
                                fprintf(f, "%s = (unset)\n", o->name);
                        for (; v && *v; v++)
                                fprintf(f, "%s = %s\n", o->name, *v);
                        break;
                }
                }
        }
}

char *config_host_socket(const HiveConfig *c)
{
        char *s = NULL;
        if (asprintf(&s, "%s/host.sock", c->run_dir) < 0)
                return NULL;
        return s;
}
