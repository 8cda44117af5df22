/* The nixos-container backend: every operation is one call of the real tool
 * (cfg->nixos_container), run with proc_run: an argv (never a shell), a fresh private
 * working directory per call (removed afterwards: the tool leaves its `./.tmp` flake
 * out-link there, and two flake builds sharing a cwd swap their results, research §6.2), a
 * private HOME/XDG_CACHE_HOME in that directory, flakes enabled through NIX_CONFIG, and
 * cfg->op_timeout.
 *
 * The tool's exit codes are leftover errno values (research §1.2), so only zero vs non-zero
 * counts; what went wrong is read from the end of its stderr, after the `<argv0>: ` prefix
 * it puts on its own messages.  Calls for different containers may run at once from several
 * threads: nothing here is shared but the read-only priv. */
#define LOG_SUBSYSTEM "backend-nixos-container"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "cleanup.h"
#include "fsutil.h"
#include "log.h"
#include "proc.h"

extern char **environ;

#define QUOTE_MAX    300 /* bytes of one tool line quoted in an error sentence */
#define NIX_FEATURES "experimental-features = nix-command flakes"
#define DEFAULT_PATH "/run/wrappers/bin:/run/current-system/sw/bin:/usr/local/bin:/usr/bin:/bin"

typedef struct NcBackend {
        char *prog;       /* the tool, made absolute when given as a relative path */
        const char *base; /* its basename, inside prog */
        char *tmp_parent; /* where the per-call directories go; NULL: $TMPDIR */
} NcBackend;

static void set_error(char **ret_error, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(char **ret_error, const char *fmt, ...)
{
        if (!ret_error)
                return;
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(ret_error, fmt, ap) < 0)
                *ret_error = NULL;
        va_end(ap);
}

static int nc_init(Backend *b)
{
        const char *prog = b->cfg->nixos_container && *b->cfg->nixos_container
                                   ? b->cfg->nixos_container
                                   : "nixos-container";
        _cleanup_free_ NcBackend *nc = calloc(1, sizeof(*nc));
        if (!nc)
                return -ENOMEM;
        /* Every call runs in another directory, so a relative path must be resolved now. */
        if (strchr(prog, '/') && prog[0] != '/') {
                _cleanup_free_ char *cwd = getcwd(NULL, 0);
                if (!cwd)
                        return -errno;
                if (asprintf(&nc->prog, "%s/%s", cwd, prog) < 0)
                        nc->prog = NULL;
        } else
                nc->prog = strdup(prog);
        if (!nc->prog)
                return -ENOMEM;
        const char *slash = strrchr(nc->prog, '/');
        nc->base = slash ? slash + 1 : nc->prog;

        if (b->cfg->run_dir) {
                if (asprintf(&nc->tmp_parent, "%s/nixos-container", b->cfg->run_dir) < 0) {
                        free(nc->prog);
                        return -ENOMEM;
                }
                /* Directories left by a daemon that died mid-call would pin their ./.tmp
                 * closures as GC roots. */
                int r = fsutil_rm_rf(nc->tmp_parent);
                if (r >= 0)
                        r = fsutil_mkdir_p(nc->tmp_parent, 0700);
                if (r < 0) {
                        log_debug_errno(r, "cannot prepare %s: %m", nc->tmp_parent);
                        free(nc->tmp_parent);
                        free(nc->prog);
                        return r;
                }
        }
        b->priv = TAKE_PTR(nc);
        return 0;
}

static void nc_done(Backend *b)
{
        NcBackend *nc = b->priv;
        if (!nc)
                return;
        free(nc->prog);
        free(nc->tmp_parent);
        free(nc);
        b->priv = NULL;
}

/* Variables the tool gets from us instead of from the daemon's environment. */
static const char *const env_replaced[] = {"HOME", "XDG_CACHE_HOME", "NIX_CONFIG", "PWD", "LC_ALL"};

/* The daemon's environment with HOME, XDG_CACHE_HOME and PWD at dir, flakes enabled (after
 * whatever NIX_CONFIG the daemon has) and LC_ALL=C (systemctl's words are matched below). */
static int nc_env(const char *dir, char ***ret_env)
{
        size_t n = strv_length(environ);
        _cleanup_strv_free_ char **env = calloc(n + ELEMENTSOF(env_replaced) + 2, sizeof(char *));
        if (!env)
                return -ENOMEM;
        const char *nix_config = NULL;
        bool have_path = false;
        size_t k = 0;
        for (char **e = environ; e && *e; e++) {
                bool replaced = false;
                for (size_t i = 0; i < ELEMENTSOF(env_replaced); i++) {
                        size_t len = strlen(env_replaced[i]);
                        if (strncmp(*e, env_replaced[i], len) == 0 && (*e)[len] == '=') {
                                replaced = true;
                                if (strcmp(env_replaced[i], "NIX_CONFIG") == 0 && (*e)[len + 1])
                                        nix_config = *e + len + 1;
                        }
                }
                if (replaced)
                        continue;
                have_path = have_path || strncmp(*e, "PATH=", 5) == 0;
                if (!(env[k++] = strdup(*e)))
                        return -ENOMEM;
        }
        if (asprintf(&env[k++], "HOME=%s", dir) < 0 ||
            asprintf(&env[k++], "XDG_CACHE_HOME=%s", dir) < 0 ||
            asprintf(&env[k++], "PWD=%s", dir) < 0 || !(env[k++] = strdup("LC_ALL=C")) ||
            asprintf(&env[k++], "NIX_CONFIG=%s%s" NIX_FEATURES, nix_config ? nix_config : "",
                     nix_config ? "\n" : "") < 0 ||
            (!have_path && !(env[k++] = strdup("PATH=" DEFAULT_PATH)))) {
                env[k - 1] = NULL;
                return -ENOMEM;
        }
        *ret_env = TAKE_PTR(env);
        return 0;
}

/* One call of the tool with args (NULL-terminated, after argv[0]) in a fresh directory.
 * Returns what proc_run returns: 0 or -ETIMEDOUT with *ret filled, else a negative errno
 * (-ENOENT/-EACCES: the tool cannot be run) with *ret untouched. */
static int nc_call(Backend *b, char *const args[], BackendRun *ret)
{
        NcBackend *nc = b->priv;
        size_t n = strv_length(args);
        _cleanup_free_ char **argv = calloc(n + 2, sizeof(char *));
        if (!argv)
                return -ENOMEM;
        argv[0] = nc->prog;
        memcpy(argv + 1, args, n * sizeof(char *));

        _cleanup_free_ char *dir = NULL;
        int r = proc_tmpdir_new(nc->tmp_parent, &dir);
        if (r < 0)
                return log_debug_errno(r, "cannot make a working directory: %m");
        _cleanup_strv_free_ char **env = NULL;
        r = nc_env(dir, &env);
        if (r >= 0) {
                log_debug("running %s %s%s%s in %s", nc->prog, args[0], args[1] ? " " : "",
                          args[1] ? args[1] : "", dir);
                uint64_t timeout_ms =
                        b->cfg->op_timeout > 0 ? (uint64_t)b->cfg->op_timeout * 1000u : 0;
                r = proc_run(argv, env, dir, timeout_ms, ret);
        }
        int k = fsutil_rm_rf(dir);
        if (k < 0)
                log_debug_errno(k, "cannot remove %s: %m", dir);
        return r;
}

/* Lines of the tool's stderr that explain nothing: hints, progress, nix's framing. */
static const char *const noise_prefixes[] = {
        "See \"",
        "For full logs, run ",
        "host IP is ",
        "reloading container...",
};

/* What the tool said, read from the end of its stderr. */
typedef struct Said {
        char *buf;            /* a copy of stderr, cut into lines */
        const char *primary;  /* the last meaningful line, the tool's prefix stripped */
        const char *detail;   /* the meaningful line before it, or NULL */
        bool primary_is_tool; /* primary carried the tool's "<argv0>: " prefix */
        bool timeout;         /* systemd said "a timeout was exceeded" */
} Said;

static void said_done(Said *s)
{
        free(s->buf);
}

/* The text after "<argv0>: " when line is one of the tool's own messages, else NULL.  argv0
 * is the path the tool was executed by (research §1.1), so the prefix is recognized by its
 * shape: no blanks, and the tool's name as basename. */
static const char *tool_message(const NcBackend *nc, const char *line)
{
        const char *colon = strstr(line, ": ");
        if (!colon || colon == line || strcspn(line, " \t") < (size_t)(colon - line))
                return NULL;
        size_t len = (size_t)(colon - line);
        const char *base = line;
        for (const char *p = line; p < colon; p++)
                if (*p == '/')
                        base = p + 1;
        size_t blen = (size_t)(colon - base);
        bool ours = (strlen(nc->prog) == len && strncmp(line, nc->prog, len) == 0) ||
                    (strlen(nc->base) == blen && strncmp(base, nc->base, blen) == 0) ||
                    memmem(base, blen, "nixos-container", strlen("nixos-container"));
        return ours ? colon + 2 : NULL;
}

static int said_parse(const NcBackend *nc, const char *err, Said *ret)
{
        Said s = {.buf = strdup(err ? err : "")};
        if (!s.buf)
                return -ENOMEM;
        char *save = NULL;
        for (char *line = strtok_r(s.buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                size_t len = strlen(line);
                while (len > 0 && strchr(" \t\r", line[len - 1]))
                        line[--len] = '\0';
                line += strspn(line, " \t");
                if (line[0] == '>' && line[1] == ' ') /* a builder's log line, as nix quotes it */
                        line += 2;
                if (!*line)
                        continue;
                if (strstr(line, "a timeout was exceeded"))
                        s.timeout = true;
                bool noise =
                        strlen(line) > 10 && strcmp(line + strlen(line) - 10, "log lines:") == 0;
                for (size_t i = 0; i < ELEMENTSOF(noise_prefixes) && !noise; i++)
                        noise = strncmp(line, noise_prefixes[i], strlen(noise_prefixes[i])) == 0;
                if (noise)
                        continue;
                const char *msg = tool_message(nc, line);
                s.detail = s.primary;
                s.primary = msg ? msg : line;
                s.primary_is_tool = msg != NULL;
        }
        *ret = s;
        return 0;
}

/* How the tool's own last message maps to an errno (research §1.1, §1.3). */
static const struct {
        const char *suffix;
        int error;
} tool_errors[] = {
        {"already exists", -EEXIST},
        {"does not exist", -ENOENT},
};

/* Turns a failed call into an errno and a sentence ("creating h-a1 failed: <the tool's
 * words> (<the line before>)").  r and run are what nc_call gave; doing + machine says what
 * was attempted. */
static int nc_fail(Backend *b, const char *doing, const char *machine, int r, const BackendRun *run,
                   char **ret_error)
{
        const NcBackend *nc = b->priv;
        _cleanup_free_ char *what = NULL;
        if (asprintf(&what, "%s%s%s", doing, machine ? " " : "", machine ? machine : "") < 0)
                return -ENOMEM;
        if (r < 0 && r != -ETIMEDOUT) {
                errno = -r;
                if (r == -ENOENT || r == -EACCES)
                        set_error(ret_error,
                                  "%s failed: cannot run %s: %m (is nixos-container installed? "
                                  "--nixos-container names the program)",
                                  what, nc->prog);
                else
                        set_error(ret_error, "%s failed: cannot run %s: %m", what, nc->prog);
                return r;
        }

        _cleanup_(said_done) Said s = {};
        int k = said_parse(nc, run->err, &s);
        if (k < 0)
                return k;
        if (r == -ETIMEDOUT) {
                if (s.primary)
                        set_error(ret_error,
                                  "%s timed out after %lld s (%s was killed; it last said: %.*s)",
                                  what, (long long)b->cfg->op_timeout, nc->base, QUOTE_MAX,
                                  s.primary);
                else
                        set_error(ret_error, "%s timed out after %lld s (%s was killed)", what,
                                  (long long)b->cfg->op_timeout, nc->base);
                return -ETIMEDOUT;
        }

        int error = -EIO;
        if (s.primary_is_tool) {
                size_t plen = strlen(s.primary);
                for (size_t i = 0; i < ELEMENTSOF(tool_errors); i++) {
                        size_t slen = strlen(tool_errors[i].suffix);
                        if (plen >= slen &&
                            strcmp(s.primary + plen - slen, tool_errors[i].suffix) == 0)
                                error = tool_errors[i].error;
                }
        }
        if (error == -EIO && s.timeout)
                error = -ETIMEDOUT;
        const char *outcome = error == -ETIMEDOUT ? "timed out" : "failed";
        if (!s.primary)
                set_error(ret_error, "%s %s: %s exited with status %d and printed nothing", what,
                          outcome, nc->base, run->status);
        else if (s.detail)
                set_error(ret_error, "%s %s: %.*s (%.*s)", what, outcome, QUOTE_MAX, s.primary,
                          QUOTE_MAX, s.detail);
        else
                set_error(ret_error, "%s %s: %.*s", what, outcome, QUOTE_MAX, s.primary);
        return error;
}

/* Runs the tool with args; 0 when it succeeded, else nc_fail's verdict. */
static int nc_simple(Backend *b, const char *doing, const char *machine, char *const args[],
                     char **ret_error)
{
        _cleanup_(backend_run_done) BackendRun run = {};
        int r = nc_call(b, args, &run);
        if (r == 0 && run.status == 0)
                return 0;
        return nc_fail(b, doing, machine, r, &run, ret_error);
}

/* Every call runs in a throw-away directory, so the flake must be absolute; and update
 * without "#attr" would build attribute "container" (research §6.5). */
static int check_flake(const BackendAgent *a, const char *doing, char **ret_error)
{
        const char *f = a->flake;
        const char *hash = f ? strrchr(f, '#') : NULL;
        const char *colon = f ? strchr(f, ':') : NULL;
        if (f && hash && hash[1] && (f[0] == '/' || (colon && colon < hash)))
                return 0;
        set_error(ret_error,
                  "%s %s failed: the flake reference '%s' must be absolute and name an "
                  "attribute (/abs/path#attr)",
                  doing, a->machine, f ? f : "");
        return -EINVAL;
}

static int nc_destroy(Backend *b, const BackendAgent *a, char **ret_error)
{
        char *const args[] = {"destroy", (char *)a->machine, NULL};
        return nc_simple(b, "destroying", a->machine, args, ret_error);
}

static int nc_create(Backend *b, const BackendAgent *a, char **ret_error)
{
        int r = check_flake(a, "creating", ret_error);
        if (r < 0)
                return r;
        char *const args[] = {"create", (char *)a->machine, "--flake", (char *)a->flake, NULL};
        _cleanup_(backend_run_done) BackendRun run = {};
        r = nc_call(b, args, &run);
        if (r == 0 && run.status == 0)
                return 0;
        _cleanup_free_ char *why = NULL;
        int error = nc_fail(b, "creating", a->machine, r, &run, &why);
        /* A failed flake create leaves its .conf (and the next create says "already
         * exists", research §6.3): destroy, which is idempotent.  Not when the container
         * already existed (it is someone's) or the tool never ran. */
        if (error != -EEXIST && (r == 0 || r == -ETIMEDOUT)) {
                _cleanup_free_ char *cleanup_error = NULL;
                int k = nc_destroy(b, a, &cleanup_error);
                if (k < 0) {
                        log_debug_errno(k, "cleaning up after the failed create of %s: %s",
                                        a->machine, cleanup_error ? cleanup_error : "");
                        char *both = NULL;
                        if (asprintf(&both, "%s; removing what it left behind failed too: %s",
                                     why ? why : "", cleanup_error ? cleanup_error : "") >= 0) {
                                free(why);
                                why = both;
                        }
                }
        }
        if (ret_error)
                *ret_error = TAKE_PTR(why);
        return error;
}

static int nc_update(Backend *b, const BackendAgent *a, char **ret_error)
{
        int r = check_flake(a, "updating", ret_error);
        if (r < 0)
                return r;
        char *const args[] = {"update", (char *)a->machine, "--flake", (char *)a->flake, NULL};
        return nc_simple(b, "updating", a->machine, args, ret_error);
}

static int nc_start(Backend *b, const BackendAgent *a, char **ret_error)
{
        char *const args[] = {"start", (char *)a->machine, NULL};
        return nc_simple(b, "starting", a->machine, args, ret_error);
}

/* grace_sec is not used: the tool stops through systemctl stop, whose own timeout applies. */
static int nc_stop(Backend *b, const BackendAgent *a, unsigned grace_sec, char **ret_error)
{
        char *const args[] = {"stop", (char *)a->machine, NULL};
        return nc_simple(b, "stopping", a->machine, args, ret_error);
}

/* What `status` prints on stdout (research §1.3): the last is printed with a failure. */
static const struct {
        const char *word;
        ContainerState state;
        bool fails;
} status_words[] = {
        {"up", CONTAINER_UP, false},
        {"down", CONTAINER_DOWN, false},
        {"gone", CONTAINER_GONE, true},
};

static int nc_status(Backend *b, const BackendAgent *a, ContainerState *ret, char **ret_error)
{
        char *const args[] = {"status", (char *)a->machine, NULL};
        _cleanup_(backend_run_done) BackendRun run = {};
        int r = nc_call(b, args, &run);
        if (r == 0) {
                const char *out = run.out + strspn(run.out, " \t\r\n");
                size_t len = strcspn(out, " \t\r\n");
                for (size_t i = 0; i < ELEMENTSOF(status_words); i++)
                        if (strlen(status_words[i].word) == len &&
                            strncmp(out, status_words[i].word, len) == 0 &&
                            (run.status != 0) == status_words[i].fails) {
                                *ret = status_words[i].state;
                                return 0;
                        }
                if (run.status == 0) {
                        set_error(ret_error,
                                  "querying the status of %s failed: %s printed '%.*s' instead "
                                  "of up or down",
                                  a->machine, ((NcBackend *)b->priv)->base, QUOTE_MAX, run.out);
                        return -EIO;
                }
        }
        return nc_fail(b, "querying the status of", a->machine, r, &run, ret_error);
}

static int nc_list(Backend *b, char ***ret, char **ret_error)
{
        char *const args[] = {"list", NULL};
        _cleanup_(backend_run_done) BackendRun run = {};
        int r = nc_call(b, args, &run);
        if (r < 0 || run.status != 0)
                return nc_fail(b, "listing containers", NULL, r, &run, ret_error);
        size_t n = 1;
        for (const char *p = run.out; *p; p++)
                n += *p == '\n';
        _cleanup_strv_free_ char **names = calloc(n + 1, sizeof(char *));
        if (!names)
                return -ENOMEM;
        size_t k = 0;
        char *save = NULL;
        for (char *line = strtok_r(run.out, "\n", &save); line;
             line = strtok_r(NULL, "\n", &save)) {
                line[strcspn(line, " \t\r")] = '\0';
                if (!*line)
                        continue;
                if (!(names[k++] = strdup(line)))
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(names);
        return 0;
}

/* Messages of the tool that carry no "<argv0>: " prefix (research §7); the command run
 * inside the container never gets to print after them. */
static const char *const run_failures[] = {
        "unable to get container's main PID",
        "cannot run \xe2\x80\x98nsenter\xe2\x80\x99: ",
};

static int nc_run(Backend *b, const BackendAgent *a, char *const argv[], BackendRun *ret,
                  char **ret_error)
{
        size_t n = strv_length(argv);
        if (n == 0) {
                set_error(ret_error, "running a command in %s failed: no command given",
                          a->machine);
                return -EINVAL;
        }
        _cleanup_free_ char **args = calloc(n + 4, sizeof(char *));
        if (!args)
                return -ENOMEM;
        args[0] = "run";
        args[1] = (char *)a->machine;
        args[2] = "--"; /* the command's own flags are not the tool's (research §1.1) */
        memcpy(args + 3, argv, n * sizeof(char *));

        _cleanup_(backend_run_done) BackendRun run = {};
        int r = nc_call(b, args, &run);
        if (r == 0 && run.status != 0) {
                /* A non-zero status is the command's, unless the tool said it could not run
                 * it: then its message is the last thing on stderr. */
                _cleanup_(said_done) Said s = {};
                int k = said_parse(b->priv, run.err, &s);
                if (k < 0)
                        return k;
                bool tool = s.primary_is_tool;
                for (size_t i = 0; i < ELEMENTSOF(run_failures) && s.primary && !tool; i++)
                        tool = strncmp(s.primary, run_failures[i], strlen(run_failures[i])) == 0;
                if (tool)
                        return nc_fail(b, "running a command in", a->machine, r, &run, ret_error);
        }
        if (r < 0)
                return nc_fail(b, "running a command in", a->machine, r, &run, ret_error);
        *ret = run;
        run = (BackendRun){};
        return 0;
}

/* The host journal of the container's unit (research §4.3).  No journal, no journalctl or a
 * failing one all give "": logs are a courtesy, not an operation that can fail. */
static int nc_logs(Backend *b, const BackendAgent *a, unsigned lines, char **ret_text)
{
        _cleanup_free_ char *unit = NULL;
        char count[16];
        snprintf(count, sizeof(count), "%u", lines);
        if (asprintf(&unit, "container@%s.service", a->machine) < 0)
                return -ENOMEM;
        char *const argv[] = {"journalctl", "-u",  unit,         "-n", count,
                              "-o",         "cat", "--no-pager", NULL};
        uint64_t timeout_ms = b->cfg->op_timeout > 0 ? (uint64_t)b->cfg->op_timeout * 1000u : 0;
        _cleanup_(backend_run_done) BackendRun run = {};
        int r = proc_run(argv, NULL, "/", timeout_ms, &run);
        if (r == -ENOMEM)
                return r;
        if (r < 0 || run.status != 0) {
                log_debug("journalctl for %s gave nothing (%d, status %d)", a->machine, r,
                          run.status);
                char *empty = strdup("");
                if (!empty)
                        return -ENOMEM;
                *ret_text = empty;
                return 0;
        }
        *ret_text = TAKE_PTR(run.out);
        return 0;
}

const BackendOps backend_nixos_container_ops = {
        .name = "nixos-container",
        .isolated = true,
        .supervised = false,
        .init = nc_init,
        .done = nc_done,
        .create = nc_create,
        .update = nc_update,
        .start = nc_start,
        .stop = nc_stop,
        .destroy = nc_destroy,
        .status = nc_status,
        .list = nc_list,
        .run = nc_run,
        .logs = nc_logs,
};
