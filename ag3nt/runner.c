/* The model CLI, run once per turn. */
#define LOG_SUBSYSTEM "ag3nt"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child.h"
#include "cleanup.h"
#include "errors.h"
#include "fsutil.h"
#include "log.h"
#include "prompts.h"
#include "proto.h"
#include "runner.h"
#include "timeutil.h"
#include "tools.h"

#define LINE_MAX_BYTES (8u * 1024u * 1024u) /* a longer stdout line is cut (and not parsed) */
#define STDERR_TAIL    4096u

/* Claude Code's own tools an agent may use in its container. */
static const char *const builtin_tools[] = {
        "Bash",         "Edit",     "Write",     "Read",      "Glob", "Grep",
        "NotebookEdit", "WebFetch", "WebSearch", "TodoWrite", "Task",
};

static int write_file_atomic(const char *dir, const char *name, const char *text, char **ret_path,
                             char **ret_error)
{
        _cleanup_free_ char *path = NULL;
        if (asprintf(&path, "%s/%s", dir, name) < 0)
                return -ENOMEM;
        int r = fsutil_write_atomic(path, text, strlen(text), 0600);
        if (r < 0)
                return hive_refuse(ret_error, r, "cannot write %s: %s", path, strerror(-r));
        *ret_path = TAKE_PTR(path);
        return 0;
}

/* Replaces every @KEY@ of the table in text.  Malloc'ed, or NULL. */
static char *fill_prompt(const char *text, const char *const *kv)
{
        size_t cap = strlen(text) + 1;
        for (size_t i = 0; kv[i]; i += 2)
                cap += 8 * strlen(kv[i + 1]);
        char *out = malloc(cap + 1);
        if (!out)
                return NULL;
        size_t n = 0;
        for (const char *p = text; *p;) {
                bool done = false;
                for (size_t i = 0; *p == '@' && kv[i]; i += 2) {
                        size_t kl = strlen(kv[i]);
                        if (strncmp(p + 1, kv[i], kl) == 0 && p[1 + kl] == '@') {
                                size_t vl = strlen(kv[i + 1]);
                                if (n + vl >= cap)
                                        break;
                                memcpy(out + n, kv[i + 1], vl);
                                n += vl;
                                p += kl + 2;
                                done = true;
                                break;
                        }
                }
                if (!done && n < cap)
                        out[n++] = *p++;
                else if (!done)
                        p++;
        }
        out[n] = '\0';
        return out;
}

/* The extra MCP servers file: {"mcpServers": {name: {...}}}.  Copies the valid entries into
 * servers and their names into allowed; problems go to *warn. */
static int merge_extra(const char *path, json_t *servers, json_t *allowed, char **warn)
{
        if (!path || access(path, F_OK) < 0)
                return 0;
        json_error_t e;
        _cleanup_json_ json_t *j = json_load_file(path, 0, &e);
        json_t *extra = json_object_get(j, "mcpServers");
        if (!json_is_object(extra)) {
                if (asprintf(warn, "%s: %s; no extra MCP servers", path,
                             j ? "no \"mcpServers\" object" : e.text) < 0)
                        return -ENOMEM;
                return 0;
        }
        const char *name;
        json_t *v;
        json_object_foreach(extra, name, v)
        {
                bool ok_name = *name && strlen(name) <= 64;
                for (const char *c = name; *c; c++)
                        if (!(('a' <= *c && *c <= 'z') || ('A' <= *c && *c <= 'Z') ||
                              ('0' <= *c && *c <= '9') || *c == '_' || *c == '-'))
                                ok_name = false;
                if (!ok_name || strcmp(name, "hyperhive") == 0 || !json_is_object(v)) {
                        free(*warn);
                        if (asprintf(warn, "%s: extra MCP server \"%s\" skipped (%s)", path, name,
                                     !json_is_object(v) ? "not an object"
                                     : ok_name          ? "the name is ours"
                                                        : "names are [A-Za-z0-9_-], 1-64") < 0)
                                return -ENOMEM;
                        continue;
                }
                if (json_object_set(servers, name, v) < 0)
                        return -ENOMEM;
                char tool[80];
                snprintf(tool, sizeof(tool), "mcp__%s", name);
                if (json_array_append_new(allowed, json_string(tool)) < 0)
                        return -ENOMEM;
        }
        return 0;
}

int runner_write_files(const Settings *s, const char *run_dir, const char *self_exe,
                       RunnerFiles *ret, char **ret_warning, char **ret_error)
{
        RunnerFiles f = {0};
        _cleanup_json_ json_t *allowed = json_array();
        _cleanup_json_ json_t *servers = json_object();
        if (!allowed || !servers)
                return -ENOMEM;
        for (size_t i = 0; i < ELEMENTSOF(builtin_tools); i++)
                json_array_append_new(allowed, json_string(builtin_tools[i]));
        for (size_t i = 0; i < tools_count(s->flavor); i++) {
                char tool[96];
                snprintf(tool, sizeof(tool), "mcp__hyperhive__%s", tools_get(s->flavor, i)->name);
                json_array_append_new(allowed, json_string(tool));
        }

        json_t *env =
                json_pack("{s:s, s:s}", "HIVE_SOCKET", s->socket, "HIVE_STATE_DIR", s->state_dir);
        if (env && s->label)
                json_object_set_new(env, "HIVE_LABEL", json_string(s->label));
        json_t *ours = json_pack("{s:s, s:s, s:[s], s:o*}", "type", "stdio", "command", self_exe,
                                 "args", "mcp", "env", env);
        if (!ours || json_object_set_new(servers, "hyperhive", ours) < 0)
                return -ENOMEM;
        int r = merge_extra(s->extra_mcp, servers, allowed, ret_warning);
        if (r < 0)
                return r;

        _cleanup_free_ char *mcp = NULL, *settings = NULL, *prompt = NULL;
        json_t *mcpj = json_pack("{s:O}", "mcpServers", servers);
        json_t *setj = json_pack("{s:{s:O}, s:b}", "permissions", "allow", allowed,
                                 "includeCoAuthoredBy", 0);
        if (mcpj)
                mcp = json_dumps(mcpj, JSON_INDENT(2) | JSON_SORT_KEYS);
        if (setj)
                settings = json_dumps(setj, JSON_INDENT(2) | JSON_SORT_KEYS);
        json_decref(mcpj);
        json_decref(setj);
        const char *kv[] = {"LABEL",
                            s->label ? s->label : "this agent",
                            "OPERATOR_PRONOUNS",
                            s->operator_pronouns ? s->operator_pronouns : "they/them",
                            "STATE_DIR",
                            s->state_dir,
                            NULL};
        prompt = fill_prompt(prompts_system(s->flavor), kv);
        if (!mcp || !settings || !prompt)
                return -ENOMEM;

        size_t cap = 1;
        for (size_t i = 0; i < json_array_size(allowed); i++)
                cap += strlen(json_string_value(json_array_get(allowed, i))) + 1;
        f.allowed_tools = calloc(1, cap);
        if (!f.allowed_tools)
                return -ENOMEM;
        for (size_t i = 0; i < json_array_size(allowed); i++) {
                if (i)
                        strcat(f.allowed_tools, ",");
                strcat(f.allowed_tools, json_string_value(json_array_get(allowed, i)));
        }
        if ((r = write_file_atomic(run_dir, RUNNER_SETTINGS_FILE, settings, &f.settings_path,
                                   ret_error)) < 0 ||
            (r = write_file_atomic(run_dir, RUNNER_MCP_FILE, mcp, &f.mcp_path, ret_error)) < 0 ||
            (r = write_file_atomic(run_dir, RUNNER_PROMPT_FILE, prompt, &f.prompt_path,
                                   ret_error)) < 0) {
                runner_files_done(&f);
                return r;
        }
        *ret = f;
        return 0;
}

void runner_files_done(RunnerFiles *f)
{
        free(f->settings_path);
        free(f->mcp_path);
        free(f->prompt_path);
        free(f->allowed_tools);
        *f = (RunnerFiles){0};
}

char **runner_argv(const Settings *s, const RunnerFiles *f, const char *model, bool resume)
{
        const char *args[] = {
                s->model_bin,
                "--print",
                "--verbose",
                "--output-format",
                "stream-json",
                "--model",
                model,
                resume ? "--continue" : NULL, /* skipped below */
                "--settings",
                f->settings_path,
                "--system-prompt-file",
                f->prompt_path,
                "--mcp-config",
                f->mcp_path,
                "--strict-mcp-config",
                "--allowedTools",
                f->allowed_tools,
        };
        char **argv = calloc(ELEMENTSOF(args) + 1, sizeof(char *));
        if (!argv)
                return NULL;
        size_t n = 0;
        for (size_t i = 0; i < ELEMENTSOF(args); i++) {
                if (!args[i])
                        continue;
                argv[n] = strdup(args[i]);
                if (!argv[n]) {
                        strv_free(argv);
                        return NULL;
                }
                n++;
        }
        return argv;
}

/* ---- reading the stream ---- */

static bool contains_ci(const char *s, const char *needle)
{
        return s && strcasestr(s, needle) != NULL;
}

/* What a result text or an error line says about the session. */
static void classify_text(RunnerResult *res, const char *text)
{
        if (!text)
                return;
        if (contains_ci(text, "prompt is too long"))
                res->prompt_too_long = true;
        if (contains_ci(text, "usage limit reached") || contains_ci(text, "hit your limit") ||
            contains_ci(text, "rate limit reached") || contains_ci(text, "rate_limit_error"))
                res->rate_limited = true;
        if (contains_ci(text, "invalid api key") || contains_ci(text, "please run /login") ||
            contains_ci(text, "not logged in") || contains_ci(text, "oauth token has expired") ||
            contains_ci(text, "authentication_error"))
                res->needs_login = true;
}

static int64_t usage_int(const json_t *u, const char *key)
{
        return json_integer_value(json_object_get(u, key));
}

static void read_stream_json(RunnerResult *res, const json_t *j)
{
        const char *type = json_string_value(json_object_get(j, "type"));
        if (!type)
                return;
        if (strcmp(type, "assistant") == 0) {
                const json_t *msg = json_object_get(j, "message");
                const json_t *u = json_object_get(msg, "usage");
                if (json_is_object(u))
                        res->context_tokens = usage_int(u, "input_tokens") +
                                              usage_int(u, "cache_read_input_tokens") +
                                              usage_int(u, "cache_creation_input_tokens");
                size_t i;
                json_t *c;
                json_array_foreach(json_object_get(msg, "content"), i, c)
                {
                        const char *ct = json_string_value(json_object_get(c, "type"));
                        if (ct && strcmp(ct, "tool_use") == 0) {
                                const char *name = json_string_value(json_object_get(c, "name"));
                                if (!name)
                                        continue;
                                res->tool_calls++;
                                json_t *cnt = json_object_get(res->tool_counts, name);
                                json_object_set_new(res->tool_counts, name,
                                                    json_integer(json_integer_value(cnt) + 1));
                                const char *st = json_string_value(
                                        json_object_get(json_object_get(c, "input"), "text"));
                                if (strcmp(name, "mcp__hyperhive__set_status") == 0 && st) {
                                        free(res->status_text);
                                        res->status_text = strdup(st);
                                }
                        } else if (ct && strcmp(ct, "text") == 0) {
                                const char *t = json_string_value(json_object_get(c, "text"));
                                if (contains_ci(t, "prompt is too long"))
                                        res->prompt_too_long = true;
                        }
                }
        } else if (strcmp(type, "result") == 0) {
                res->got_result = true;
                res->is_error = json_is_true(json_object_get(j, "is_error"));
                const char *t = json_string_value(json_object_get(j, "result"));
                free(res->result_text);
                res->result_text = t ? strdup(t) : NULL;
                if (res->is_error)
                        classify_text(res, t);
                const json_t *u = json_object_get(j, "usage");
                res->input_tokens = usage_int(u, "input_tokens");
                res->output_tokens = usage_int(u, "output_tokens");
                res->cache_read_tokens = usage_int(u, "cache_read_input_tokens");
                res->cache_creation_tokens = usage_int(u, "cache_creation_input_tokens");
                res->cost_usd = json_number_value(json_object_get(j, "total_cost_usd"));
        } else if (strcmp(type, "rate_limit_event") == 0) {
                const char *st = json_string_value(
                        json_object_get(json_object_get(j, "rate_limit_info"), "status"));
                if (st && strcmp(st, "rejected") == 0)
                        res->rate_limited = true;
        }
}

typedef struct LineBuf {
        char *buf;
        size_t len, cap;
        bool overflow;
} LineBuf;

static void stderr_tail_add(RunnerResult *res, const char *line)
{
        size_t old = res->stderr_tail ? strlen(res->stderr_tail) : 0, add = strlen(line) + 1;
        char *t = realloc(res->stderr_tail, old + add + 1);
        if (!t)
                return;
        memcpy(t + old, line, add - 1);
        t[old + add - 1] = '\n';
        t[old + add] = '\0';
        if (old + add > STDERR_TAIL) {
                size_t cut = old + add - STDERR_TAIL;
                memmove(t, t + cut, old + add - cut + 1);
        }
        res->stderr_tail = t;
}

static void emit_line(const RunnerHooks *h, RunnerResult *res, bool is_stderr, char *line)
{
        json_t *j = NULL;
        if (is_stderr) {
                stderr_tail_add(res, line);
                if (strstr(line, "No conversation found"))
                        res->no_conversation = true;
                classify_text(res, line);
        } else {
                j = json_loads(line, 0, NULL);
                if (json_is_object(j))
                        read_stream_json(res, j);
        }
        if (h->line)
                h->line(h->userdata, is_stderr, line, json_is_object(j) ? j : NULL);
        json_decref(j);
}

/* Reads what fd has; hands out complete lines.  Returns 0, or 1 at end of file. */
static int pump(int fd, LineBuf *b, const RunnerHooks *h, RunnerResult *res, bool is_stderr)
{
        char chunk[65536];
        ssize_t k = read(fd, chunk, sizeof(chunk));
        if (k < 0)
                return errno == EINTR || errno == EAGAIN ? 0 : 1;
        if (k == 0) {
                if (b->len) {
                        b->buf[b->len] = '\0';
                        emit_line(h, res, is_stderr, b->buf);
                        b->len = 0;
                }
                return 1;
        }
        for (ssize_t i = 0; i < k; i++) {
                if (chunk[i] == '\n') {
                        if (b->buf) {
                                b->buf[b->len] = '\0';
                                if (!b->overflow)
                                        emit_line(h, res, is_stderr, b->buf);
                        } else if (!b->overflow) {
                                char empty[] = "";
                                emit_line(h, res, is_stderr, empty);
                        }
                        b->len = 0;
                        b->overflow = false;
                        continue;
                }
                if (b->overflow)
                        continue;
                if (b->len + 2 > b->cap) {
                        size_t ncap = b->cap ? b->cap * 2 : 4096;
                        char *nb = ncap > LINE_MAX_BYTES ? NULL : realloc(b->buf, ncap);
                        if (!nb) {
                                log_warning("the model CLI wrote a line over %u bytes; dropped",
                                            LINE_MAX_BYTES);
                                b->overflow = true;
                                b->len = 0;
                                continue;
                        }
                        b->buf = nb;
                        b->cap = ncap;
                }
                b->buf[b->len++] = chunk[i];
        }
        return 0;
}

int runner_run(char *const *argv, const char *cwd, char *const *env, const char *prompt,
               const RunnerHooks *hooks, RunnerResult *res)
{
        *res = (RunnerResult){.exit_code = -1, .tool_counts = json_object()};
        if (!res->tool_counts)
                return -ENOMEM;
        int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
        if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) {
                int r = -errno;
                for (int i = 0; i < 2; i++) {
                        if (in[i] >= 0)
                                close(in[i]);
                        if (out[i] >= 0)
                                close(out[i]);
                }
                return r;
        }
        int cwd_fd = cwd ? open(cwd, O_PATH | O_DIRECTORY | O_CLOEXEC) : -1;
        pid_t pid = -1;
        int r = cwd && cwd_fd < 0
                        ? -errno
                        : child_spawn(NULL, argv, env, cwd_fd, in[0], out[1], err[1], &pid);
        if (cwd_fd >= 0)
                close(cwd_fd);
        close(in[0]);
        close(out[1]);
        close(err[1]);
        if (r < 0) {
                close(in[1]);
                close(out[0]);
                close(err[0]);
                return r;
        }
        if (hooks->started)
                hooks->started(hooks->userdata, pid);

        (void)fcntl(in[1], F_SETFL, O_NONBLOCK);
        size_t plen = prompt ? strlen(prompt) : 0, poff = 0;
        if (plen == 0) {
                close(in[1]);
                in[1] = -1;
        }
        LineBuf ob = {0}, eb = {0};
        int ofd = out[0], efd = err[0];
        int stop_level = 0;       /* 0 none, 1 SIGINT sent, 2 SIGTERM sent, 3 SIGKILL sent */
        uint64_t escalate_at = 0; /* monotonic µs of the next escalation */
        int status = 0;
        bool reaped = false;
        while (ofd >= 0 || efd >= 0 || !reaped) {
                struct pollfd p[3];
                int np = 0;
                if (ofd >= 0)
                        p[np++] = (struct pollfd){.fd = ofd, .events = POLLIN};
                if (efd >= 0)
                        p[np++] = (struct pollfd){.fd = efd, .events = POLLIN};
                if (in[1] >= 0)
                        p[np++] = (struct pollfd){.fd = in[1], .events = POLLOUT};
                int k = poll(p, (nfds_t)np, 200);
                for (int i = 0; k > 0 && i < np; i++) {
                        if (!p[i].revents)
                                continue;
                        if (p[i].fd == in[1]) {
                                ssize_t w = (p[i].revents & POLLOUT)
                                                    ? write(in[1], prompt + poff, plen - poff)
                                                    : -1;
                                if (w > 0)
                                        poff += (size_t)w;
                                if ((w < 0 && errno != EAGAIN && errno != EINTR) || poff == plen) {
                                        close(in[1]);
                                        in[1] = -1;
                                }
                        } else if (p[i].fd == ofd) {
                                if (pump(ofd, &ob, hooks, res, false)) {
                                        close(ofd);
                                        ofd = -1;
                                }
                        } else if (p[i].fd == efd) {
                                if (pump(efd, &eb, hooks, res, true)) {
                                        close(efd);
                                        efd = -1;
                                }
                        }
                }
                if (!reaped) {
                        pid_t w = waitpid(pid, &status, WNOHANG);
                        if (w == pid) {
                                reaped = true;
                                /* Whatever still holds the pipes (a grandchild) must not keep
                                 * the turn open for ever: give it 2 s to finish writing. */
                                escalate_at = timeutil_mono_usec() + 2000000u;
                        }
                } else if (timeutil_mono_usec() >= escalate_at) {
                        if (ofd >= 0)
                                close(ofd);
                        if (efd >= 0)
                                close(efd);
                        ofd = efd = -1;
                }
                if (reaped)
                        continue;
                int want = hooks->should_stop ? hooks->should_stop(hooks->userdata) : 0;
                uint64_t now = timeutil_mono_usec();
                if (want == 1 && stop_level == 0) {
                        res->cancelled = true;
                        (void)kill(-pid, SIGINT);
                        stop_level = 1;
                        escalate_at = now + 10000000u;
                } else if (want == 2 && stop_level < 2) {
                        res->cancelled = true;
                        (void)kill(-pid, SIGTERM);
                        stop_level = 2;
                        escalate_at = now + 5000000u;
                } else if (stop_level && now >= escalate_at && stop_level < 3) {
                        stop_level++;
                        log_warning("the model CLI (pid %d) did not stop; sending %s", (int)pid,
                                    stop_level == 2 ? "SIGTERM" : "SIGKILL");
                        (void)kill(-pid, stop_level == 2 ? SIGTERM : SIGKILL);
                        escalate_at = now + 5000000u;
                }
        }
        if (in[1] >= 0)
                close(in[1]);
        /* The group may hold MCP servers the CLI started; they end with their stdin, but do
         * not leave them behind. */
        (void)kill(-pid, SIGTERM);
        free(ob.buf);
        free(eb.buf);
        res->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        return 0;
}

void runner_result_done(RunnerResult *r)
{
        free(r->result_text);
        free(r->status_text);
        free(r->stderr_tail);
        json_decref(r->tool_counts);
        *r = (RunnerResult){0};
}
