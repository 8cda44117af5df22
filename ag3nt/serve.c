/* `serve`: the turn loop.  Long-polls recv on the agent socket; for each message runs the
 * model CLI with a wake prompt, pumps what it writes onto the event bus, acknowledges the
 * message once the turn ended, records the turn's stats; honours the pause marker, the
 * next-turn marker, rate limits, lost logins and the operator's controls from the page. */
#define LOG_SUBSYSTEM "ag3nt"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "errors.h"
#include "fsutil.h"
#include "harness.h"
#include "hivelink.h"
#include "log.h"
#include "proto.h"
#include "runner.h"
#include "serve.h"
#include "timeutil.h"
#include "turnstats.h"
#include "web.h"

#include "hive-config.h"

#define SESSION_MARKER "hyperhive-session" /* a session exists to --continue */
#define MODEL_MAX      100
#define FAILED_TRIES   3 /* a message whose turns crash this often is acknowledged anyway */

struct Harness {
        Settings *s;
        EvBus *bus;
        Login *login;
        TurnStats *stats;
        RunnerFiles files;
        char *run_dir;

        pthread_mutex_t lock; /* everything below */
        TurnState state;
        char *detail;
        char *model;
        char *status_text;
        int64_t status_set_at;
        int64_t context_tokens;
        double cost_usd;
        json_t *turn; /* {from, body, unread, started_at} while a turn runs */
        pid_t turn_pgid;
        bool cancel_requested;
        bool compact_requested;
        bool new_session_requested;
        bool needs_login;
        bool login_finished; /* a login flow ended with a token since needs_login was set */

        HiveLink *link; /* the loop's own connection (long-poll recv) */
        pthread_mutex_t side_lock;
        HiveLink *side; /* reports and the page's requests */
        int wake_fd;    /* eventfd: the page's requests and stop signals */
        int ino_fd;     /* inotify on the state dir: markers come and go */
        int intr_fd;    /* epoll of both: wakes the loop out of recv and its sleeps */
};

static volatile sig_atomic_t stop_signal;
static int stop_intr_fd = -1;

static void on_stop_signal(int sig)
{
        stop_signal = sig;
        if (stop_intr_fd >= 0) {
                uint64_t one = 1;
                (void)!write(stop_intr_fd, &one, sizeof(one));
        }
}

static void wake_loop(Harness *h)
{
        uint64_t one = 1;
        (void)!write(h->wake_fd, &one, sizeof(one));
}

static void drain_intr(Harness *h)
{
        uint64_t v;
        if (!stop_signal)
                (void)!read(h->wake_fd, &v, sizeof(v));
        char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
        while (h->ino_fd >= 0 && read(h->ino_fd, buf, sizeof(buf)) > 0)
                ;
}

const char *turn_state_name(TurnState s)
{
        static const char *const names[] = {
                [TURN_STARTING] = "starting",         [TURN_IDLE] = "idle",
                [TURN_RUNNING] = "running",           [TURN_COMPACTING] = "compacting",
                [TURN_RATE_LIMITED] = "rate_limited", [TURN_PAUSED] = "paused",
                [TURN_NEEDS_LOGIN] = "needs_login",   [TURN_STOPPING] = "stopping",
        };
        return (unsigned)s < ELEMENTSOF(names) ? names[s] : "unknown";
}

static int64_t now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_state(Harness *h, TurnState st, const char *detail)
{
        pthread_mutex_lock(&h->lock);
        bool same = h->state == st && ((!detail && !h->detail) ||
                                       (detail && h->detail && strcmp(detail, h->detail) == 0));
        h->state = st;
        free(h->detail);
        h->detail = detail ? strdup(detail) : NULL;
        pthread_mutex_unlock(&h->lock);
        if (same)
                return;
        json_t *p = json_pack("{s:s, s:s?}", "state", turn_state_name(st), "detail", detail);
        evbus_publish(h->bus, "turn_state_changed", p);
        json_decref(p);
        log_debug("turn state: %s%s%s", turn_state_name(st), detail ? ": " : "",
                  detail ? detail : "");
}

static void note(Harness *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(Harness *h, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        _cleanup_free_ char *text = NULL;
        if (vasprintf(&text, fmt, ap) < 0)
                text = NULL;
        va_end(ap);
        if (!text)
                return;
        log_info("%s", text);
        json_t *p = json_pack("{s:s, s:s}", "text", text, "source", "harness");
        evbus_publish(h->bus, "note", p);
        json_decref(p);
}

/* ---- requests on the socket ---- */

/* One request on the side link.  Returns 0 with *ret (may be a refusal), or a negative errno. */
static int side_request(Harness *h, json_t *req, json_t **ret)
{
        pthread_mutex_lock(&h->side_lock);
        int r = hivelink_request(h->side, req, 30000, ret);
        pthread_mutex_unlock(&h->side_lock);
        return r;
}

/* Sends req (stolen) on the side link; logs a failure.  Returns the answer or NULL. */
static json_t *side_call(Harness *h, json_t *req)
{
        if (!req)
                return NULL;
        const char *cmd = json_string_value(json_object_get(req, "cmd"));
        _cleanup_free_ char *verb = strdup(cmd ? cmd : "?");
        json_t *resp = NULL;
        int r = side_request(h, req, &resp);
        json_decref(req);
        if (r < 0) {
                log_warning("%s: the daemon did not answer: %s", verb ? verb : "?", strerror(-r));
                return NULL;
        }
        if (!json_is_true(json_object_get(resp, "ok"))) {
                log_warning("%s refused: %s (%s)", verb ? verb : "?",
                            json_string_value(json_object_get(resp, "error")),
                            json_string_value(json_object_get(resp, "error_code")));
                json_decref(resp);
                return NULL;
        }
        return resp;
}

static json_t *request(const char *cmd)
{
        return json_pack("{s:s}", "cmd", cmd);
}

static void ack_ids(Harness *h, const json_t *ids)
{
        if (json_array_size(ids) == 0)
                return;
        json_decref(side_call(h, json_pack("{s:s, s:O}", "cmd", "ack", "ids", ids)));
}

/* Offers messages again now instead of when their lease ends; ids NULL: all of ours. */
static void release_ids(Harness *h, const json_t *ids)
{
        if (ids && json_array_size(ids) == 0)
                return;
        json_t *req = request("release");
        if (ids)
                json_object_set(req, "ids", (json_t *)ids);
        json_t *resp = side_call(h, req);
        if (resp)
                log_debug("released %lld message(s)",
                          (long long)json_integer_value(json_object_get(resp, "released")));
        json_decref(resp);
}

static void report_harness_state(Harness *h)
{
        pthread_mutex_lock(&h->lock);
        json_t *req = json_pack("{s:s, s:b, s:s}", "cmd", "set_harness_state", "needs_login",
                                h->needs_login, "model", h->model);
        pthread_mutex_unlock(&h->lock);
        json_decref(side_call(h, req));
}

/* ---- the page's side ---- */

json_t *harness_state(Harness *h)
{
        pthread_mutex_lock(&h->lock);
        /* The seq is read under the same lock every publish of ours takes after changing the
         * state, so an event with seq <= this one is already reflected here. */
        uint64_t seq = evbus_seq(h->bus);
        char set_at[TIMEUTIL_RFC3339_MAX] = "";
        if (h->status_set_at)
                timeutil_rfc3339(h->status_set_at, set_at);
        json_t *st = json_pack(
                "{s:I, s:s?, s:s, s:s, s:s, s:s, s:s?, s:s?, s:s?, s:I, s:I, s:f, s:b, s:b, "
                "s:O?, s:s?}",
                "seq", (json_int_t)seq, "label", h->s->label, "flavor",
                h->s->flavor == HARNESS_MANAGER ? "manager" : "agent", "version", HIVE_VERSION,
                "model", h->model, "turn_state", turn_state_name(h->state), "turn_detail",
                h->detail, "status_text", h->status_text, "status_set_at", *set_at ? set_at : NULL,
                "context_tokens", (json_int_t)h->context_tokens, "context_window_tokens",
                (json_int_t)h->s->context_window, "cost_usd", h->cost_usd, "paused",
                h->state == TURN_PAUSED, "needs_login", h->needs_login, "turn", h->turn,
                "dashboard_url", h->s->dashboard_url);
        pthread_mutex_unlock(&h->lock);
        if (st) {
                json_t *l = login_state(h->login);
                json_object_set_new(st, "login", l ? l : json_null());
        }
        return st;
}

EvBus *harness_bus(Harness *h)
{
        return h->bus;
}

const Settings *harness_settings(Harness *h)
{
        return h->s;
}

Login *harness_login(Harness *h)
{
        return h->login;
}

int harness_send_operator(Harness *h, const char *body, int64_t *ret_id, char **ret_error)
{
        _cleanup_json_ json_t *req =
                json_pack("{s:s, s:s, s:s}", "cmd", "wake", "from", "operator", "body", body);
        if (!req)
                return -ENOMEM;
        _cleanup_json_ json_t *resp = NULL;
        int r = side_request(h, req, &resp);
        if (r < 0) {
                if (asprintf(ret_error, "the daemon did not answer: %s", strerror(-r)) < 0)
                        *ret_error = NULL;
                return r;
        }
        if (!json_is_true(json_object_get(resp, "ok"))) {
                const char *e = json_string_value(json_object_get(resp, "error"));
                *ret_error = strdup(e ? e : "refused by the daemon");
                const char *code = json_string_value(json_object_get(resp, "error_code"));
                int err = code ? hive_errno_from_name(code) : 0;
                return err > 0 ? -err : -EINVAL;
        }
        *ret_id = json_integer_value(json_object_get(resp, "id"));
        return 0;
}

int harness_cancel_turn(Harness *h)
{
        pthread_mutex_lock(&h->lock);
        pid_t pg = h->turn_pgid;
        if (pg > 0 && !h->cancel_requested) {
                h->cancel_requested = true;
                (void)kill(-pg, SIGINT);
        }
        pthread_mutex_unlock(&h->lock);
        if (pg <= 0)
                return -ESRCH;
        note(h, "the operator cancelled the turn");
        return 0;
}

int harness_request_compact(Harness *h)
{
        pthread_mutex_lock(&h->lock);
        h->compact_requested = true;
        pthread_mutex_unlock(&h->lock);
        wake_loop(h);
        return 0;
}

int harness_request_new_session(Harness *h)
{
        pthread_mutex_lock(&h->lock);
        h->new_session_requested = true;
        pthread_mutex_unlock(&h->lock);
        note(h, "the next turn starts a new session");
        return 0;
}

static bool model_ok(const char *m)
{
        size_t n = strlen(m);
        if (n == 0 || n > MODEL_MAX)
                return false;
        for (const char *c = m; *c; c++)
                if (!(('a' <= *c && *c <= 'z') || ('A' <= *c && *c <= 'Z') ||
                      ('0' <= *c && *c <= '9') || strchr("._:@/[]-", *c)))
                        return false;
        return true;
}

int harness_set_model(Harness *h, const char *model, char **ret_error)
{
        if (!model_ok(model)) {
                if (asprintf(ret_error,
                             "a model name is 1 to %d characters of letters, digits and ._:@/[]-",
                             MODEL_MAX) < 0)
                        *ret_error = NULL;
                return -EINVAL;
        }
        _cleanup_free_ char *path = settings_state_path(h->s, SETTINGS_MODEL_FILE);
        _cleanup_free_ char *line = NULL;
        if (!path || asprintf(&line, "%s\n", model) < 0)
                return -ENOMEM;
        int r = fsutil_write_atomic(path, line, strlen(line), 0644);
        if (r < 0)
                return hive_refuse(ret_error, r, "cannot save the model in %s: %s", path,
                                   strerror(-r));
        char *m = strdup(model);
        if (!m)
                return -ENOMEM;
        pthread_mutex_lock(&h->lock);
        free(h->model);
        h->model = m;
        pthread_mutex_unlock(&h->lock);
        json_t *p = json_pack("{s:s}", "model", model);
        evbus_publish(h->bus, "model_changed", p);
        json_decref(p);
        report_harness_state(h);
        return 0;
}

/* ---- markers ---- */

static bool marker_exists(Harness *h, const char *name)
{
        _cleanup_free_ char *p = settings_state_path(h->s, name);
        return p && access(p, F_OK) == 0;
}

static void marker_remove(Harness *h, const char *name)
{
        _cleanup_free_ char *p = settings_state_path(h->s, name);
        if (p && unlink(p) < 0 && errno != ENOENT)
                log_warning("cannot remove %s: %m", p);
}

static void marker_create(Harness *h, const char *name)
{
        _cleanup_free_ char *p = settings_state_path(h->s, name);
        int fd = p ? open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600) : -1;
        if (fd >= 0)
                close(fd);
}

/* The model chosen on the page, or HIVE_MODEL. */
static char *load_model(const Settings *s)
{
        _cleanup_free_ char *path = settings_state_path(s, SETTINGS_MODEL_FILE);
        FILE *f = path ? fopen(path, "re") : NULL;
        char buf[MODEL_MAX + 2] = "";
        if (f) {
                if (!fgets(buf, sizeof(buf), f))
                        buf[0] = '\0';
                fclose(f);
                buf[strcspn(buf, "\r\n")] = '\0';
                if (*buf && !model_ok(buf)) {
                        log_warning("%s holds no valid model name; using %s", path, s->model);
                        buf[0] = '\0';
                }
        }
        return strdup(*buf ? buf : s->model);
}

/* Waits up to ms for the interrupt fd.  Returns true when it fired (or a stop signal came). */
static bool wait_intr(Harness *h, int ms)
{
        struct pollfd p = {.fd = h->intr_fd, .events = POLLIN};
        int k = poll(&p, 1, ms);
        if (k > 0)
                drain_intr(h);
        return k > 0 || stop_signal;
}

/* ---- running the model ---- */

typedef struct RunCtx {
        Harness *h;
} RunCtx;

/* <run_dir>/model.pgid names the running model CLI's process group, so a harness that was
 * killed mid-turn can end the orphan at its next start (in a container the orphan dies with
 * it; with the process backend it would run on). */
static char *pgid_path(Harness *h)
{
        char *p = NULL;
        return asprintf(&p, "%s/model.pgid", h->run_dir) < 0 ? NULL : p;
}

static void hook_started(void *ud, pid_t pg)
{
        Harness *h = ud;
        pthread_mutex_lock(&h->lock);
        h->turn_pgid = pg;
        pthread_mutex_unlock(&h->lock);
        _cleanup_free_ char *path = pgid_path(h);
        FILE *f = path ? fopen(path, "we") : NULL;
        if (f) {
                fprintf(f, "%d\n", (int)pg);
                fclose(f);
        }
}

/* Whether pid's command line has an argument whose last component is name's. */
static bool runs_program(pid_t pid, const char *name)
{
        const char *base = strrchr(name, '/') ? strrchr(name, '/') + 1 : name;
        char path[64], buf[4096];
        snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return false;
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n <= 0)
                return false;
        buf[n] = '\0';
        for (char *a = buf; a < buf + n; a += strlen(a) + 1) {
                const char *b = strrchr(a, '/') ? strrchr(a, '/') + 1 : a;
                if (strcmp(b, base) == 0)
                        return true;
        }
        return false;
}

static void end_orphan_model(Harness *h)
{
        _cleanup_free_ char *path = pgid_path(h);
        FILE *f = path ? fopen(path, "re") : NULL;
        int pg = 0;
        if (!f)
                return;
        if (fscanf(f, "%d", &pg) != 1)
                pg = 0;
        fclose(f);
        (void)unlink(path);
        if (pg > 1 && runs_program(pg, h->s->model_bin)) {
                log_warning("ending the model CLI (process group %d) a previous harness left "
                            "running",
                            pg);
                (void)kill(-pg, SIGTERM);
        }
}

static void hook_line(void *ud, bool is_stderr, const char *line, const json_t *j)
{
        Harness *h = ud;
        if (is_stderr) {
                if (!*line)
                        return;
                json_t *p = json_pack("{s:s, s:s}", "text", line, "source", "stderr");
                evbus_publish(h->bus, "note", p);
                json_decref(p);
                return;
        }
        if (j) {
                evbus_publish(h->bus, "stream", j);
                return;
        }
        if (!*line)
                return;
        json_t *p = json_pack("{s:s}", "raw", line);
        evbus_publish(h->bus, "stream", p);
        json_decref(p);
}

static int hook_should_stop(void *ud)
{
        Harness *h = ud;
        if (stop_signal)
                return 2;
        pthread_mutex_lock(&h->lock);
        bool c = h->cancel_requested;
        pthread_mutex_unlock(&h->lock);
        return c ? 1 : 0;
}

/* The environment of the model CLI: ours, plus the token a login on the page saved. */
static char **model_env(Harness *h)
{
        extern char **environ;
        size_t n = 0;
        while (environ[n])
                n++;
        char **env = calloc(n + 2, sizeof(char *));
        if (!env)
                return NULL;
        _cleanup_free_ char *token = login_token(h->s);
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
                if (token && strncmp(environ[i], "CLAUDE_CODE_OAUTH_TOKEN=", 24) == 0)
                        continue;
                env[k] = strdup(environ[i]);
                if (!env[k])
                        return strv_free(env);
                k++;
        }
        if (token && asprintf(&env[k], "CLAUDE_CODE_OAUTH_TOKEN=%s", token) < 0)
                return strv_free(env);
        return env;
}

/* Runs the model once.  Returns 0 (see *res), or a negative errno when it could not start
 * (a note says why). */
static int run_model(Harness *h, const char *prompt, bool resume, RunnerResult *res)
{
        pthread_mutex_lock(&h->lock);
        _cleanup_free_ char *model = strdup(h->model);
        h->cancel_requested = false;
        pthread_mutex_unlock(&h->lock);
        _cleanup_strv_free_ char **argv =
                model ? runner_argv(h->s, &h->files, model, resume) : NULL;
        _cleanup_strv_free_ char **env = model_env(h);
        if (!argv || !env)
                return -ENOMEM;
        RunnerHooks hooks = {.userdata = h,
                             .started = hook_started,
                             .line = hook_line,
                             .should_stop = hook_should_stop};
        int r = runner_run(argv, h->s->state_dir, env, prompt, &hooks, res);
        pthread_mutex_lock(&h->lock);
        h->turn_pgid = 0;
        /* The page's SIGINT may end the CLI before the runner asked should_stop. */
        if (h->cancel_requested && r == 0)
                res->cancelled = true;
        pthread_mutex_unlock(&h->lock);
        _cleanup_free_ char *pgf = pgid_path(h);
        if (pgf)
                (void)unlink(pgf);
        if (r < 0)
                note(h, "cannot run the model CLI %s: %s%s", h->s->model_bin, strerror(-r),
                     r == -ENOENT ? " (is it installed? HIVE_MODEL_BIN names it)" : "");
        return r;
}

/* Outcome of a turn, for the loop. */
typedef enum {
        OUT_OK,           /* ended (also failed or cancelled): the messages are done */
        OUT_RETRY,        /* did not run or crashed: offer the messages again, back off */
        OUT_RATE_LIMITED, /* sleep, then offer again */
        OUT_NEEDS_LOGIN,  /* wait for a login, then offer again */
        OUT_STOPPED,      /* shutting down: offer again */
} Outcome;

static void publish_usage(Harness *h, const RunnerResult *res)
{
        if (res->exit_code < 0)
                return; /* the CLI never ran: nothing changed */
        pthread_mutex_lock(&h->lock);
        if (res->context_tokens)
                h->context_tokens = res->context_tokens;
        h->cost_usd += res->cost_usd;
        json_t *p = json_pack("{s:I, s:I, s:f, s:f}", "ctx", (json_int_t)h->context_tokens,
                              "context_window", (json_int_t)h->s->context_window, "cost",
                              res->cost_usd, "total_cost", h->cost_usd);
        pthread_mutex_unlock(&h->lock);
        evbus_publish(h->bus, "token_usage_changed", p);
        json_decref(p);
        if (res->status_text) {
                pthread_mutex_lock(&h->lock);
                free(h->status_text);
                h->status_text = strdup(res->status_text);
                h->status_set_at = timeutil_now();
                pthread_mutex_unlock(&h->lock);
                p = json_pack("{s:s}", "text", res->status_text);
                evbus_publish(h->bus, "status_changed", p);
                json_decref(p);
        }
}

/* Counts after a turn, for the stats: entries of get_open_threads, count_pending_reminders. */
static void open_counts(Harness *h, int64_t *threads, int64_t *reminders)
{
        *threads = *reminders = -1;
        json_t *r = side_call(h, request("get_open_threads"));
        if (r)
                *threads = (int64_t)(json_array_size(json_object_get(r, "questions")) +
                                     json_array_size(json_object_get(r, "reminders")));
        json_decref(r);
        r = side_call(h, request("count_pending_reminders"));
        if (r)
                *reminders = json_integer_value(json_object_get(r, "count"));
        json_decref(r);
}

static void record(Harness *h, const char *kind, const char *from, const char *result,
                   int64_t started, const RunnerResult *res, const char *why)
{
        TurnRow row = {.kind = kind,
                       .wake_from = from,
                       .result = result,
                       .started_ms = started,
                       .ended_ms = now_ms(),
                       .input_tokens = res->input_tokens,
                       .output_tokens = res->output_tokens,
                       .cache_read_tokens = res->cache_read_tokens,
                       .cache_creation_tokens = res->cache_creation_tokens,
                       .context_tokens = res->context_tokens,
                       .cost_usd = res->cost_usd,
                       .tool_calls = res->tool_calls,
                       .tool_counts = res->tool_counts,
                       .note = why};
        pthread_mutex_lock(&h->lock);
        _cleanup_free_ char *model = strdup(h->model);
        pthread_mutex_unlock(&h->lock);
        row.model = model;
        open_counts(h, &row.open_threads, &row.pending_reminders);
        turnstats_add(h->stats, &row);
}

/* The compaction: `/compact` on the current session. */
static bool compact(Harness *h, const char *why)
{
        set_state(h, TURN_COMPACTING, why);
        json_t *p = json_pack("{s:s, s:s, s:i, s:s}", "from", "self", "body", "/compact", "unread",
                              0, "kind", "compact");
        evbus_publish(h->bus, "turn_start", p);
        json_decref(p);
        int64_t started = now_ms();
        RunnerResult res = {0};
        int r = run_model(h, "/compact", true, &res);
        bool ok = r == 0 && res.got_result && !res.is_error && !res.cancelled;
        const char *result = r < 0 ? "failed" : res.cancelled ? "cancelled" : ok ? "ok" : "failed";
        const char *why_not = r < 0 ? "the model CLI did not start"
                              : ok  ? NULL
                                    : (res.result_text ? res.result_text : "no result");
        if (ok) {
                pthread_mutex_lock(&h->lock);
                h->context_tokens = res.context_tokens;
                pthread_mutex_unlock(&h->lock);
        }
        p = json_pack("{s:b, s:s, s:s?, s:s}", "ok", ok, "result", result, "note", why_not, "kind",
                      "compact");
        evbus_publish(h->bus, "turn_end", p);
        json_decref(p);
        publish_usage(h, &res);
        record(h, "compact", "self", result, started, &res, why_not);
        runner_result_done(&res);
        return ok;
}

static Outcome run_turn(Harness *h, const char *from, const char *body, int64_t unread,
                        const char *prompt)
{
        pthread_mutex_lock(&h->lock);
        bool fresh = h->new_session_requested;
        h->new_session_requested = false;
        char started_at[TIMEUTIL_RFC3339_MAX];
        timeutil_rfc3339(timeutil_now(), started_at);
        json_decref(h->turn);
        h->turn = json_pack("{s:s, s:s, s:I, s:s}", "from", from, "body", body, "unread",
                            (json_int_t)unread, "started_at", started_at);
        pthread_mutex_unlock(&h->lock);

        json_t *p = json_pack("{s:s, s:s, s:I, s:s}", "from", from, "body", body, "unread",
                              (json_int_t)unread, "kind", "turn");
        evbus_publish(h->bus, "turn_start", p);
        json_decref(p);
        set_state(h, TURN_RUNNING, NULL);

        bool resume = !fresh && marker_exists(h, SESSION_MARKER);
        bool compacted = false;
        int64_t started = now_ms();
        RunnerResult res = {0};
        int r;
        for (;;) {
                r = run_model(h, prompt, resume, &res);
                if (r < 0 || res.cancelled)
                        break;
                if (res.no_conversation && resume && !res.got_result) {
                        note(h, "no session to continue; starting a new one");
                        resume = false;
                        runner_result_done(&res);
                        continue;
                }
                if (res.prompt_too_long && !compacted) {
                        note(h, "the prompt is too long; compacting the session and trying "
                                "again");
                        runner_result_done(&res);
                        compacted = true;
                        bool ok = compact(h, "the prompt was too long");
                        set_state(h, TURN_RUNNING, NULL);
                        if (!ok) {
                                note(h, "the compaction failed; the turn is given up");
                                res = (RunnerResult){.exit_code = 1,
                                                     .got_result = true,
                                                     .is_error = true,
                                                     .prompt_too_long = true};
                                break;
                        }
                        resume = true;
                        continue;
                }
                break;
        }

        Outcome out;
        const char *result;
        _cleanup_free_ char *why = NULL;
        if (r < 0) {
                out = stop_signal ? OUT_STOPPED : OUT_RETRY;
                result = "failed";
                why = strdup("the model CLI did not start");
        } else if (stop_signal) {
                out = OUT_STOPPED;
                result = "cancelled";
                why = strdup("the harness is stopping");
        } else if (res.cancelled) {
                out = OUT_OK;
                result = "cancelled";
                why = strdup("cancelled by the operator");
        } else if (res.rate_limited) {
                out = OUT_RATE_LIMITED;
                result = "rate_limited";
                why = strdup(res.result_text ? res.result_text : "rate limited");
        } else if (res.needs_login) {
                out = OUT_NEEDS_LOGIN;
                result = "needs_login";
                why = strdup(res.result_text ? res.result_text : "the model CLI is not logged in");
        } else if (res.prompt_too_long) {
                out = OUT_OK;
                result = "prompt_too_long";
                why = strdup("the prompt is too long even after compacting");
        } else if (res.got_result && !res.is_error) {
                out = OUT_OK;
                result = "ok";
        } else if (res.got_result) {
                out = OUT_OK;
                result = "failed";
                why = strdup(res.result_text ? res.result_text : "the model reported an error");
        } else {
                out = OUT_RETRY;
                result = "failed";
                if (asprintf(&why, "the model CLI exited with %d without a result%s%s",
                             res.exit_code, res.stderr_tail ? ": " : "",
                             res.stderr_tail ? res.stderr_tail : "") < 0)
                        why = NULL;
        }
        if (why) {
                size_t n = strlen(why);
                while (n && why[n - 1] == '\n')
                        why[--n] = '\0';
        }
        if (strcmp(result, "ok") == 0 || strcmp(result, "failed") == 0)
                if (res.got_result)
                        marker_create(h, SESSION_MARKER);

        /* A turn that ended normally leaves the harness idle: say so before its turn_end, so
         * a page that sees the end never reads "running" after it. */
        if (out == OUT_OK)
                set_state(h, TURN_IDLE, NULL);
        int64_t dur = now_ms() - started;
        p = json_pack("{s:b, s:s, s:s?, s:I, s:I, s:s}", "ok", strcmp(result, "ok") == 0, "result",
                      result, "note", why, "duration_ms", (json_int_t)dur, "tool_calls",
                      (json_int_t)res.tool_calls, "kind", "turn");
        evbus_publish(h->bus, "turn_end", p);
        json_decref(p);
        publish_usage(h, &res);
        record(h, "turn", from, result, started, &res, why);
        pthread_mutex_lock(&h->lock);
        json_decref(h->turn);
        h->turn = NULL;
        pthread_mutex_unlock(&h->lock);
        log_info("turn (woken by %s) ended: %s%s%s", from, result, why ? ": " : "", why ? why : "");
        runner_result_done(&res);
        return out;
}

/* The prompt of a turn woken by msg. */
static char *wake_prompt(const json_t *msg, int64_t unread)
{
        const char *from = json_string_value(json_object_get(msg, "from"));
        const char *body = json_string_value(json_object_get(msg, "body"));
        const char *sent = json_string_value(json_object_get(msg, "sent_at"));
        int64_t id = json_integer_value(json_object_get(msg, "id"));
        int64_t reply = json_integer_value(json_object_get(msg, "in_reply_to"));
        char replytxt[64] = "";
        if (reply > 0)
                snprintf(replytxt, sizeof(replytxt), ", in reply to #%lld", (long long)reply);
        char more[160];
        if (unread > 0)
                snprintf(more, sizeof(more),
                         "%lld more message%s waiting: read %s with the hyperhive recv tool.",
                         (long long)unread, unread == 1 ? " is" : "s are",
                         unread == 1 ? "it" : "them");
        else
                snprintf(more, sizeof(more), "No other messages are waiting.");
        char *p = NULL;
        if (asprintf(&p, "Message #%lld from %s (sent %s%s):\n\n%s\n\n%s\n", (long long)id,
                     from ? from : "?", sent ? sent : "?", replytxt, body ? body : "", more) < 0)
                return NULL;
        return p;
}

/* The message ids in msgs. */
static json_t *ids_of(const json_t *msgs)
{
        json_t *ids = json_array();
        size_t i;
        json_t *m;
        json_array_foreach(msgs, i, m) json_array_append_new(
                ids, json_integer(json_integer_value(json_object_get(m, "id"))));
        return ids;
}

static void set_needs_login(Harness *h, bool v)
{
        pthread_mutex_lock(&h->lock);
        bool changed = h->needs_login != v;
        h->needs_login = v;
        if (v)
                h->login_finished = false;
        pthread_mutex_unlock(&h->lock);
        if (changed)
                report_harness_state(h);
}

static void login_done(void *ud, bool ok)
{
        Harness *h = ud;
        if (!ok)
                return;
        pthread_mutex_lock(&h->lock);
        h->login_finished = true;
        pthread_mutex_unlock(&h->lock);
        wake_loop(h);
}

/* Sleeps s seconds in state st, or until stop.  Returns false when stopping. */
static bool sleep_state(Harness *h, int64_t s)
{
        uint64_t end = timeutil_mono_usec() + (uint64_t)s * 1000000u;
        while (!stop_signal) {
                uint64_t now = timeutil_mono_usec();
                if (now >= end)
                        return true;
                uint64_t left = (end - now) / 1000u;
                (void)wait_intr(h, left > 1000 ? 1000 : (int)left + 1);
        }
        return false;
}

/* The loop.  Returns when a stop signal came. */
static void loop(Harness *h)
{
        unsigned failures = 0;    /* turns in a row that did not run */
        int64_t failed_first = 0; /* the message those were about */
        while (!stop_signal) {
                /* A graceful stop: no new turn; say so, and wait for the SIGTERM. */
                if (marker_exists(h, MARKER_STOP_REQUESTED)) {
                        if (!marker_exists(h, MARKER_QUIESCED)) {
                                note(h, "asked to stop: no new turns");
                                marker_create(h, MARKER_QUIESCED);
                        }
                        set_state(h, TURN_STOPPING, "waiting to be stopped");
                        (void)wait_intr(h, 1000);
                        continue;
                }
                pthread_mutex_lock(&h->lock);
                bool want_compact = h->compact_requested;
                h->compact_requested = false;
                bool nl = h->needs_login, lf = h->login_finished;
                pthread_mutex_unlock(&h->lock);

                if (nl) {
                        if (!lf) {
                                set_state(h, TURN_NEEDS_LOGIN, "log in on the agent page");
                                (void)wait_intr(h, 2000);
                                continue;
                        }
                        note(h, "logged in; taking turns again");
                        set_needs_login(h, false);
                }
                if (want_compact) {
                        compact(h, "requested on the page");
                        continue;
                }
                if (marker_exists(h, MARKER_PAUSED)) {
                        set_state(h, TURN_PAUSED, NULL);
                        (void)wait_intr(h, 1000);
                        continue;
                }
                if (marker_exists(h, MARKER_NEXT_TURN)) {
                        marker_remove(h, MARKER_NEXT_TURN);
                        const char *body = "continue";
                        _cleanup_free_ char *prompt = NULL;
                        if (asprintf(&prompt,
                                     "Message from self: %s\n\n(You asked for another turn "
                                     "with request_next_turn.)\n",
                                     body) < 0)
                                continue;
                        (void)run_turn(h, "self", body, 0, prompt);
                        continue;
                }

                set_state(h, TURN_IDLE, NULL);
                _cleanup_json_ json_t *req =
                        json_pack("{s:s, s:I, s:i}", "cmd", "recv", "wait_seconds",
                                  (json_int_t)h->s->recv_wait_s, "max", 1);
                _cleanup_json_ json_t *resp = NULL;
                int r = hivelink_request(h->link, req, (int)(h->s->recv_wait_s + 30) * 1000, &resp);
                if (r == -EINTR) {
                        drain_intr(h);
                        continue;
                }
                if (r < 0) {
                        log_warning("recv failed: %s", strerror(-r));
                        (void)sleep_state(h, 2);
                        continue;
                }
                if (!json_is_true(json_object_get(resp, "ok"))) {
                        log_error("recv refused: %s",
                                  json_string_value(json_object_get(resp, "error")));
                        (void)sleep_state(h, 5);
                        continue;
                }
                json_t *msgs = json_object_get(resp, "messages");
                if (json_array_size(msgs) == 0)
                        continue;
                _cleanup_json_ json_t *ids = ids_of(msgs);
                if (marker_exists(h, MARKER_PAUSED)) {
                        release_ids(h, ids);
                        continue;
                }
                json_t *msg = json_array_get(msgs, 0);
                int64_t unread = 0;
                json_t *st = side_call(h, request("status"));
                if (st)
                        unread = json_integer_value(json_object_get(st, "pending")) -
                                 (int64_t)json_array_size(msgs);
                json_decref(st);
                if (unread < 0)
                        unread = 0;
                _cleanup_free_ char *prompt = wake_prompt(msg, unread);
                if (!prompt) {
                        release_ids(h, ids);
                        continue;
                }
                const char *from = json_string_value(json_object_get(msg, "from"));
                const char *body = json_string_value(json_object_get(msg, "body"));
                Outcome out = run_turn(h, from ? from : "?", body ? body : "", unread, prompt);
                int64_t first = json_integer_value(json_array_get(ids, 0));
                switch (out) {
                case OUT_OK:
                        ack_ids(h, ids);
                        failures = 0;
                        break;
                case OUT_STOPPED:
                        release_ids(h, ids);
                        break;
                case OUT_RETRY:
                        failures = first == failed_first ? failures + 1 : 1;
                        failed_first = first;
                        if (failures >= FAILED_TRIES) {
                                note(h,
                                     "message #%lld: %u turns in a row did not run; it is "
                                     "acknowledged so it cannot block the inbox",
                                     (long long)first, failures);
                                ack_ids(h, ids);
                                failures = 0;
                                break;
                        }
                        release_ids(h, ids);
                        (void)sleep_state(h, 5LL << (failures - 1));
                        break;
                case OUT_RATE_LIMITED: {
                        release_ids(h, ids);
                        char detail[64];
                        snprintf(detail, sizeof(detail), "sleeping %lld s",
                                 (long long)h->s->rate_limit_sleep_s);
                        set_state(h, TURN_RATE_LIMITED, detail);
                        note(h, "rate limited; sleeping %lld s before the next turn",
                             (long long)h->s->rate_limit_sleep_s);
                        (void)sleep_state(h, h->s->rate_limit_sleep_s);
                        break;
                }
                case OUT_NEEDS_LOGIN:
                        release_ids(h, ids);
                        note(h, "the model CLI is not logged in; waiting for a login on the "
                                "agent page");
                        set_needs_login(h, true);
                        break;
                }
        }
}

static char *self_exe(void)
{
        char buf[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
        if (n <= 0)
                return NULL;
        buf[n] = '\0';
        return strdup(buf);
}

static int harness_new(Settings *s, Harness **ret)
{
        Harness *h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        h->s = s;
        h->intr_fd = h->wake_fd = h->ino_fd = -1;
        pthread_mutex_init(&h->lock, NULL);
        pthread_mutex_init(&h->side_lock, NULL);
        *ret = h;
        h->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        h->intr_fd = epoll_create1(EPOLL_CLOEXEC);
        if (h->wake_fd < 0 || h->intr_fd < 0)
                return -errno;
        struct epoll_event ev = {.events = EPOLLIN};
        if (epoll_ctl(h->intr_fd, EPOLL_CTL_ADD, h->wake_fd, &ev) < 0)
                return -errno;
        /* The pause marker appears while the loop waits in recv: a change in the state dir
         * ends the wait, and the loop looks at its markers again. */
        h->ino_fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
        if (h->ino_fd < 0 ||
            inotify_add_watch(h->ino_fd, s->state_dir,
                              IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM) < 0 ||
            epoll_ctl(h->intr_fd, EPOLL_CTL_ADD, h->ino_fd, &ev) < 0) {
                log_warning("cannot watch %s (%m); the pause marker is seen only between "
                            "messages",
                            s->state_dir);
                if (h->ino_fd >= 0)
                        close(h->ino_fd);
                h->ino_fd = -1;
        }
        h->model = load_model(s);
        h->run_dir = settings_run_dir(s);
        if (!h->model || !h->run_dir)
                return -ENOMEM;
        _cleanup_free_ char *events = settings_state_path(s, "hyperhive-events.sqlite");
        _cleanup_free_ char *stats = settings_state_path(s, "hyperhive-turn-stats.sqlite");
        if (!events || !stats)
                return -ENOMEM;
        int r = evbus_open(events, &h->bus);
        if (r < 0)
                return r;
        r = turnstats_open(stats, &h->stats);
        if (r < 0)
                return r;
        HiveLinkOptions lo = {.path = s->socket,
                              .backoff_base_ms = (unsigned)s->reconnect_base_ms,
                              .give_up_ms = -1};
        if ((r = hivelink_new(&lo, &h->link)) < 0 || (r = hivelink_new(&lo, &h->side)) < 0)
                return r;
        hivelink_set_interrupt(h->link, h->intr_fd);
        return login_new(s, h->bus, login_done, h, &h->login);
}

static Harness *harness_free(Harness *h)
{
        if (!h)
                return NULL;
        login_free(h->login);
        hivelink_free(h->link);
        hivelink_free(h->side);
        turnstats_free(h->stats);
        evbus_free(h->bus);
        runner_files_done(&h->files);
        free(h->run_dir);
        free(h->detail);
        free(h->model);
        free(h->status_text);
        json_decref(h->turn);
        if (h->intr_fd >= 0)
                close(h->intr_fd);
        if (h->wake_fd >= 0)
                close(h->wake_fd);
        if (h->ino_fd >= 0)
                close(h->ino_fd);
        pthread_mutex_destroy(&h->lock);
        pthread_mutex_destroy(&h->side_lock);
        free(h);
        return NULL;
}

int serve_main(Settings *s)
{
        const char *prog = settings_program(s->flavor);
        Harness *h = NULL;
        int r = harness_new(s, &h);
        if (r < 0) {
                fprintf(stderr, "%s serve: cannot start: %s\n", prog, strerror(-r));
                harness_free(h);
                return 1;
        }
        _cleanup_free_ char *exe = self_exe();
        _cleanup_free_ char *warn = NULL, *err = NULL;
        if (!exe) {
                fprintf(stderr, "%s serve: cannot find my own executable: %m\n", prog);
                harness_free(h);
                return 1;
        }
        r = runner_write_files(s, h->run_dir, exe, &h->files, &warn, &err);
        if (r < 0) {
                fprintf(stderr, "%s serve: %s\n", prog, err ? err : strerror(-r));
                harness_free(h);
                return 1;
        }
        if (warn)
                note(h, "%s", warn);

        stop_intr_fd = h->wake_fd;
        struct sigaction sa = {.sa_handler = on_stop_signal};
        sigemptyset(&sa.sa_mask);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);

        Web *web = NULL;
        if (s->port > 0) {
                r = web_start(h, s->web_bind, (uint16_t)s->port, &web);
                if (r < 0)
                        note(h,
                             "the agent page could not listen on %s:%lld: %s; turns go on "
                             "without it",
                             s->web_bind, (long long)s->port, strerror(-r));
        }
        log_info("%s serve: %s, model %s, socket %s%s", prog, s->label ? s->label : "(no label)",
                 h->model, s->socket, web ? ", page up" : "");
        set_state(h, TURN_STARTING, NULL);
        /* Left from a stop that ended before we saw it: this start is not being stopped. */
        marker_remove(h, MARKER_STOP_REQUESTED);
        marker_remove(h, MARKER_QUIESCED);
        end_orphan_model(h);
        /* A harness killed mid-turn left that turn's message leased: offer it again now. */
        release_ids(h, NULL);
        report_harness_state(h);

        loop(h);

        log_info("stopping (signal %d)", (int)stop_signal);
        set_state(h, TURN_STOPPING, NULL);
        evbus_close(h->bus);
        web_stop(web);
        stop_intr_fd = -1;
        harness_free(h);
        return 0;
}
