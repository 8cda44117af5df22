/* The model CLI's login flow (see login.h): one `<model_bin> setup-token` child at a time, in
 * its own session and process group, with pipes for stdin, stdout and stderr, and one reader
 * thread per flow that owns the read ends, publishes the output lines, picks the sign-in URL
 * and the token out of them, enforces the cancel and the deadline (SIGTERM to the group, then
 * SIGKILL), reaps the child and saves the token.
 *
 * The harness is multi-threaded, so the child is started with posix_spawn, with an empty
 * signal mask and default dispositions (the harness blocks signals for its own handling).
 * The token never reaches the event bus: the line that carries it is published with the token
 * cut out, since events are kept on disk and shown on the page. */
#define LOG_SUBSYSTEM "ag3nt"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child.h"
#include "cleanup.h"
#include "errors.h"
#include "fsutil.h"
#include "log.h"
#include "login.h"
#include "timeutil.h"

#define LOGIN_LINES_KEEP    50u                      /* lines login_state() shows */
#define LOGIN_LINE_MAX      4096u                    /* longer output lines are split */
#define LOGIN_PUBLISH_MAX   1000u                    /* lines published per flow, at most */
#define LOGIN_CODE_MAX      4096u                    /* longest code login_code() passes on */
#define LOGIN_TIMEOUT_USEC  (15ull * 60u * 1000000u) /* a flow nobody finishes is ended */
#define LOGIN_KILL_GRACE_US (2ull * 1000000u)        /* SIGTERM → SIGKILL */
#define LOGIN_PARTIAL_US    (300ull * 1000u)         /* an unterminated line (the prompt) */
#define LOGIN_TOKEN_PREFIX  "sk-ant-oat01-"

/* One output stream of the child. */
typedef struct Stream {
        int fd; /* non-blocking read end; -1 at EOF */
        const char *name;
        char buf[LOGIN_LINE_MAX];
        size_t len;
        uint64_t last_data; /* monotonic µs of the last byte read */
} Stream;

/* What the reader thread of one flow owns. */
typedef struct Flow {
        Login *l;
        pid_t pid;
        Stream out, err;
        uint64_t started;
        unsigned published;
        char *token;     /* the token seen in the output */
        char *last_err;  /* the last non-empty stderr line */
        char *last_line; /* the last non-empty line */
        bool timed_out;
} Flow;

struct Login {
        pthread_mutex_t lock;
        pthread_cond_t idle; /* signalled when threads drops */
        const Settings *s;   /* borrowed */
        EvBus *bus;          /* borrowed; NULL: nothing is published */
        LoginDoneFn done;
        void *userdata;

        unsigned threads; /* reader threads still running (at most one flow is active) */
        pthread_t thread; /* the newest reader thread, when joinable */
        bool joinable;
        bool freeing; /* login_free() runs: the done callback is not called */
        bool active;
        pid_t pid;        /* the running child, 0 once it is reaped */
        int in_fd;        /* write end of the child's stdin; -1 */
        bool cancelled;   /* login_cancel() or login_free() asked */
        uint64_t kill_at; /* monotonic µs at which SIGKILL follows a SIGTERM; 0 none */

        char *url;
        char *lines[LOGIN_LINES_KEEP]; /* ring: lines[(first + i) % KEEP] */
        size_t first, nlines;
        const char *result; /* static: "ok", "failed", "cancelled"; NULL */
        char *error;
};

static void publish(Login *l, json_t *payload)
{
        if (payload && l->bus)
                (void)evbus_publish(l->bus, "login", payload);
        json_decref(payload);
}

static void publish_state(Login *l, const char *state, const char *key, const char *value)
{
        json_t *p = json_pack("{ss}", "state", state);
        if (p && key)
                json_object_set_new(p, key, value ? json_string(value) : json_null());
        publish(l, p);
}

int login_new(const Settings *s, EvBus *bus, LoginDoneFn done, void *userdata, Login **ret)
{
        assert(s && ret);
        Login *l = calloc(1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        pthread_mutex_init(&l->lock, NULL);
        pthread_cond_init(&l->idle, NULL);
        l->s = s;
        l->bus = bus;
        l->done = done;
        l->userdata = userdata;
        l->in_fd = -1;
        *ret = l;
        return 0;
}

static void lines_clear(Login *l)
{
        for (size_t i = 0; i < l->nlines; i++) {
                free(l->lines[(l->first + i) % LOGIN_LINES_KEEP]);
                l->lines[(l->first + i) % LOGIN_LINES_KEEP] = NULL;
        }
        l->first = l->nlines = 0;
}

/* Asks the running flow to end (under the lock): SIGTERM to its group now, SIGKILL later. */
static void cancel_locked(Login *l)
{
        l->cancelled = true;
        if (l->in_fd >= 0) {
                close(l->in_fd);
                l->in_fd = -1;
        }
        if (l->pid > 0 && !l->kill_at) {
                (void)kill(-l->pid, SIGTERM);
                l->kill_at = timeutil_mono_usec() + LOGIN_KILL_GRACE_US;
        }
}

Login *login_free(Login *l)
{
        if (!l)
                return NULL;
        pthread_mutex_lock(&l->lock);
        l->freeing = true;
        if (l->active)
                cancel_locked(l);
        while (l->threads > 0)
                pthread_cond_wait(&l->idle, &l->lock);
        bool join = l->joinable;
        l->joinable = false;
        pthread_mutex_unlock(&l->lock);
        /* The thread is past its last touch of l; joined, it is past the unlock too. */
        if (join)
                (void)pthread_join(l->thread, NULL);
        lines_clear(l);
        free(l->url);
        free(l->error);
        pthread_cond_destroy(&l->idle);
        pthread_mutex_destroy(&l->lock);
        free(l);
        return NULL;
}

/* ---- output lines ---- */

/* Copies s[0..n) without terminal escapes (CSI, OSC and two-byte ones), carriage returns and
 * other control characters (a tab becomes a space), with invalid UTF-8 replaced by '?', and
 * without surrounding blanks.  Returns it malloc'ed, or NULL when out of memory. */
static char *clean_line(const char *s, size_t n)
{
        char *o = malloc(n + 1);
        if (!o)
                return NULL;
        size_t k = 0;
        for (size_t i = 0; i < n;) {
                unsigned char c = (unsigned char)s[i];
                if (c == 0x1b) {
                        i++;
                        if (i < n && s[i] == '[') { /* CSI: parameters, then a final byte */
                                for (i++; i < n && !((unsigned char)s[i] >= 0x40 &&
                                                     (unsigned char)s[i] <= 0x7e);
                                     i++)
                                        ;
                                i++;
                        } else if (i < n && s[i] == ']') { /* OSC: up to BEL or ESC \ */
                                for (i++; i < n && s[i] != '\a' && s[i] != 0x1b; i++)
                                        ;
                                i += (i < n && s[i] == 0x1b) ? 2 : 1;
                        } else {
                                i++;
                        }
                        continue;
                }
                if (c == '\t') {
                        o[k++] = ' ';
                        i++;
                        continue;
                }
                if (c < 0x20 || c == 0x7f) {
                        i++;
                        continue;
                }
                if (c < 0x80) {
                        o[k++] = (char)c;
                        i++;
                        continue;
                }
                /* a UTF-8 sequence: copied whole when well-formed, else one '?' */
                size_t len = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
                bool ok = len > 0 && c < 0xf5 && i + len <= n;
                for (size_t j = 1; ok && j < len; j++)
                        ok = ((unsigned char)s[i + j] & 0xc0) == 0x80;
                if (ok && len == 3) {
                        unsigned char c1 = (unsigned char)s[i + 1];
                        ok = !(c == 0xe0 && c1 < 0xa0) && !(c == 0xed && c1 >= 0xa0);
                } else if (ok && len == 4) {
                        unsigned char c1 = (unsigned char)s[i + 1];
                        ok = !(c == 0xf0 && c1 < 0x90) && !(c == 0xf4 && c1 >= 0x90);
                }
                if (!ok) {
                        o[k++] = '?';
                        i++;
                        continue;
                }
                memcpy(o + k, s + i, len);
                k += len;
                i += len;
        }
        while (k > 0 && o[k - 1] == ' ')
                k--;
        size_t start = 0;
        while (start < k && o[start] == ' ')
                start++;
        memmove(o, o + start, k - start);
        o[k - start] = '\0';
        return o;
}

static bool token_char(char c)
{
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '-';
}

/* Takes the first token out of line (kept in f->token) and cuts it out of the line. */
static void take_token(Flow *f, char *line)
{
        char *p = strstr(line, LOGIN_TOKEN_PREFIX);
        if (!p)
                return;
        size_t n = strlen(LOGIN_TOKEN_PREFIX);
        while (token_char(p[n]))
                n++;
        if (n == strlen(LOGIN_TOKEN_PREFIX))
                return;
        if (!f->token)
                f->token = strndup(p, n);
        static const char shown[] = LOGIN_TOKEN_PREFIX "… (saved, not shown)";
        size_t tail = strlen(p + n);
        if (strlen(shown) <= n) {
                memcpy(p, shown, strlen(shown));
                memmove(p + strlen(shown), p + n, tail + 1);
        } else {
                /* the token is shorter than the notice: just cut it */
                memmove(p + strlen(LOGIN_TOKEN_PREFIX), p + n, tail + 1);
        }
}

/* The first https URL in line, malloc'ed, or NULL. */
static char *find_url(const char *line)
{
        const char *p = strstr(line, "https://");
        if (!p)
                return NULL;
        size_t n = 0;
        while (p[n] && p[n] != ' ' && p[n] != '"' && p[n] != '\'' && p[n] != '<' && p[n] != '>')
                n++;
        return n > strlen("https://") ? strndup(p, n) : NULL;
}

static void handle_line(Flow *f, Stream *st, const char *s, size_t n)
{
        Login *l = f->l;
        _cleanup_free_ char *line = clean_line(s, n);
        if (!line || !*line)
                return;
        take_token(f, line);
        _cleanup_free_ char *url = find_url(line);

        char *copy = strdup(line);
        if (st == &f->err) {
                free(f->last_err);
                f->last_err = strdup(line);
        }
        free(f->last_line);
        f->last_line = strdup(line);

        bool new_url = false;
        pthread_mutex_lock(&l->lock);
        if (copy) {
                if (l->nlines == LOGIN_LINES_KEEP) {
                        free(l->lines[l->first]);
                        l->lines[l->first] = NULL;
                        l->first = (l->first + 1) % LOGIN_LINES_KEEP;
                        l->nlines--;
                }
                l->lines[(l->first + l->nlines) % LOGIN_LINES_KEEP] = copy;
                l->nlines++;
        }
        if (url && !l->url) {
                l->url = strdup(url);
                new_url = l->url != NULL;
        }
        pthread_mutex_unlock(&l->lock);

        if (f->published < LOGIN_PUBLISH_MAX) {
                f->published++;
                publish(l, json_pack("{ssss}", "line", line, "stream", st->name));
        }
        if (new_url)
                publish_state(l, "url", "url", url);
}

/* Hands the complete lines in st's buffer to handle_line; with all, also the rest. */
static void stream_lines(Flow *f, Stream *st, bool all)
{
        size_t start = 0;
        for (;;) {
                char *nl = memchr(st->buf + start, '\n', st->len - start);
                if (!nl)
                        break;
                handle_line(f, st, st->buf + start, (size_t)(nl - (st->buf + start)));
                start = (size_t)(nl - st->buf) + 1;
        }
        if ((all || st->len - start == sizeof(st->buf)) && start < st->len) {
                handle_line(f, st, st->buf + start, st->len - start);
                start = st->len;
        }
        memmove(st->buf, st->buf + start, st->len - start);
        st->len -= start;
}

/* Reads what st's pipe holds now.  At EOF (or a read error) the fd is closed. */
static void stream_read(Flow *f, Stream *st)
{
        while (st->fd >= 0) {
                ssize_t n = read(st->fd, st->buf + st->len, sizeof(st->buf) - st->len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN)
                        return;
                if (n <= 0) {
                        close(st->fd);
                        st->fd = -1;
                        stream_lines(f, st, true);
                        return;
                }
                st->len += (size_t)n;
                st->last_data = timeutil_mono_usec();
                stream_lines(f, st, false);
        }
}

/* ---- the token file ---- */

/* Writes token to <state>/hyperhive-oauth-token (0600) through a temp file and a rename.
 * Returns 0 or a negative errno. */
static int token_save(const Settings *s, const char *token)
{
        _cleanup_free_ char *path = settings_state_path(s, LOGIN_TOKEN_FILE);
        _cleanup_free_ char *line = NULL;
        if (!path || asprintf(&line, "%s\n", token) < 0)
                return -ENOMEM;
        return fsutil_write_atomic(path, line, strlen(line), 0600);
}

char *login_token(const Settings *s)
{
        _cleanup_free_ char *path = settings_state_path(s, LOGIN_TOKEN_FILE);
        if (!path)
                return NULL;
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return NULL;
        char buf[1024];
        size_t len = 0;
        for (;;) {
                ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return NULL;
                if (n == 0)
                        break;
                len += (size_t)n;
                if (len == sizeof(buf) - 1)
                        return NULL; /* no token is that long */
        }
        buf[len] = '\0';
        size_t start = strspn(buf, " \t\r\n");
        size_t n = 0;
        while (token_char(buf[start + n]))
                n++;
        if (n == 0 || buf[start + n + strspn(buf + start + n, " \t\r\n")] != '\0')
                return NULL;
        return strndup(buf + start, n);
}

/* ---- the reader thread ---- */

/* Whether the child has exited, without reaping it (its pid, and with it the group id, stays
 * ours while we may still signal the group). */
static bool child_exited(pid_t pid)
{
        siginfo_t si = {0};
        if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0)
                return errno != EINTR;
        return si.si_pid == pid;
}

/* Watches the child until it has exited and its output is read; enforces the cancel's
 * SIGKILL and the flow's deadline. */
static void flow_watch(Flow *f)
{
        Login *l = f->l;
        bool exited = false;
        while (!exited || f->out.fd >= 0 || f->err.fd >= 0) {
                if (exited) {
                        /* Something the child left behind may hold the pipes: take what is
                         * in them and stop. */
                        stream_read(f, &f->out);
                        stream_read(f, &f->err);
                        break;
                }
                struct pollfd pfd[2];
                Stream *who[2];
                nfds_t n = 0;
                if (f->out.fd >= 0) {
                        who[n] = &f->out;
                        pfd[n++] = (struct pollfd){.fd = f->out.fd, .events = POLLIN};
                }
                if (f->err.fd >= 0) {
                        who[n] = &f->err;
                        pfd[n++] = (struct pollfd){.fd = f->err.fd, .events = POLLIN};
                }
                /* The exit is looked for on a tick: often while the pipes are open (a child
                 * that exits closes them, so EOF comes first), fast once they are closed. */
                int k = poll(pfd, n, n ? 200 : 20);
                if (k < 0 && errno != EINTR)
                        break;
                for (nfds_t i = 0; k > 0 && i < n; i++)
                        if (pfd[i].revents)
                                stream_read(f, who[i]);

                uint64_t now = timeutil_mono_usec();
                /* An unterminated line that stays so (the "paste the code" prompt) is shown. */
                for (Stream *st = &f->out; st; st = st == &f->out ? &f->err : NULL)
                        if (st->len > 0 && now - st->last_data >= LOGIN_PARTIAL_US)
                                stream_lines(f, st, true);

                pthread_mutex_lock(&l->lock);
                if (!l->kill_at && now - f->started >= LOGIN_TIMEOUT_USEC) {
                        f->timed_out = true;
                        cancel_locked(l);
                        l->cancelled = false; /* not the operator's doing */
                } else if (l->kill_at && now >= l->kill_at) {
                        (void)kill(-f->pid, SIGKILL);
                        l->kill_at = UINT64_MAX; /* sent */
                }
                pthread_mutex_unlock(&l->lock);
                exited = child_exited(f->pid);
        }
}

static void *flow_thread(void *arg)
{
        Flow *f = arg;
        Login *l = f->l;
        flow_watch(f);

        /* The leader has exited (or will, after the SIGKILL below); nothing of the group may
         * outlive the flow.  Only then is the pid given up and the child reaped. */
        (void)kill(-f->pid, SIGKILL);
        pthread_mutex_lock(&l->lock);
        l->pid = 0;
        bool cancelled = l->cancelled;
        pthread_mutex_unlock(&l->lock);
        int st = 0;
        while (waitpid(f->pid, &st, 0) < 0 && errno == EINTR)
                ;
        if (f->out.fd >= 0)
                close(f->out.fd);
        if (f->err.fd >= 0)
                close(f->err.fd);

        const char *result;
        _cleanup_free_ char *error = NULL;
        int r;
        if (f->token && (r = token_save(l->s, f->token)) < 0) {
                result = "failed";
                if (asprintf(&error, "the token could not be saved in %s: %s", l->s->state_dir,
                             strerror(-r)) < 0)
                        error = NULL;
        } else if (f->token) {
                result = "ok";
        } else if (cancelled) {
                result = "cancelled";
        } else if (f->timed_out) {
                result = "failed";
                if (asprintf(&error, "the login was not finished within %llu minutes",
                             LOGIN_TIMEOUT_USEC / 60000000ull) < 0)
                        error = NULL;
        } else {
                result = "failed";
                const char *why = f->last_err ? f->last_err : f->last_line;
                int rc = 0;
                if (WIFSIGNALED(st))
                        rc = asprintf(&error, "%s setup-token was killed by signal %d%s%s",
                                      l->s->model_bin, WTERMSIG(st), why ? ": " : "",
                                      why ? why : "");
                else
                        rc = asprintf(&error, "%s setup-token exited with status %d%s%s",
                                      l->s->model_bin, WEXITSTATUS(st), why ? ": " : "",
                                      why ? why : "");
                if (rc < 0)
                        error = NULL;
        }
        log_debug("login: %s setup-token (pid %d) ended: %s%s%s", l->s->model_bin, (int)f->pid,
                  result, error ? ": " : "", error ? error : "");

        json_t *p = json_pack("{ssss}", "state", result, "result", result);
        if (p && error)
                json_object_set_new(p, "error", json_string(error));
        publish(l, p);

        pthread_mutex_lock(&l->lock);
        l->active = false;
        l->result = result;
        free(l->error);
        l->error = TAKE_PTR(error);
        if (l->in_fd >= 0) {
                close(l->in_fd);
                l->in_fd = -1;
        }
        l->kill_at = 0;
        bool call = !l->freeing && l->done;
        pthread_mutex_unlock(&l->lock);

        if (call)
                l->done(l->userdata, strcmp(result, "ok") == 0);

        free(f->token);
        free(f->last_err);
        free(f->last_line);
        free(f);

        /* Last touch of l: login_free() may free it as soon as threads is 0. */
        pthread_mutex_lock(&l->lock);
        l->threads--;
        pthread_cond_broadcast(&l->idle);
        pthread_mutex_unlock(&l->lock);
        return NULL;
}

/* ---- starting a flow ---- */

/* A pipe with both ends O_CLOEXEC, moved above the stdio fds (so the dup2s in the child
 * cannot clobber one another when the harness runs with a standard fd closed). */
static int make_pipe(int p[2])
{
        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        for (int i = 0; i < 2; i++)
                if (p[i] <= STDERR_FILENO) {
                        int n = fcntl(p[i], F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
                        int e = errno;
                        close(p[i]);
                        p[i] = n;
                        if (n < 0) {
                                if (i == 0)
                                        close(p[1]);
                                else
                                        close(p[0]);
                                return -e;
                        }
                }
        return 0;
}

static void close_pipe(int p[2])
{
        for (int i = 0; i < 2; i++)
                if (p[i] >= 0) {
                        close(p[i]);
                        p[i] = -1;
                }
}

static int spawn_setup_token(const Settings *s, const char *path, int cwd_fd, int in, int out,
                             int err, pid_t *ret_pid)
{
        char *argv[] = {s->model_bin, (char *)"setup-token", NULL};
        return child_spawn(path, argv, NULL, cwd_fd, in, out, err, ret_pid);
}

int login_start(Login *l, char **ret_error)
{
        const Settings *s = l->s;
        pthread_mutex_lock(&l->lock);
        if (l->active || l->freeing) {
                pthread_mutex_unlock(&l->lock);
                return hive_refuse(ret_error, -EBUSY, "a login is already running");
        }
        /* Claimed now, so a second start cannot race this one, and counted as a thread, so
         * login_free() waits for it; both given back on failure. */
        l->active = true;
        l->cancelled = false;
        l->kill_at = 0;
        l->threads++;
        bool join = l->joinable;
        l->joinable = false;
        pthread_mutex_unlock(&l->lock);
        /* The previous flow's thread has ended the flow; it may still be in its tail. */
        if (join && pthread_equal(l->thread, pthread_self()))
                (void)pthread_detach(l->thread); /* called from the done callback */
        else if (join)
                (void)pthread_join(l->thread, NULL);

        int r;
        _cleanup_close_ int cwd_fd = open(s->state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
        Flow *f = NULL;
        pid_t pid = 0;
        _cleanup_free_ char *path = NULL;
        if (cwd_fd < 0) {
                r = -errno;
                hive_refuse(ret_error, r, "cannot open the state directory %s: %s", s->state_dir,
                            strerror(-r));
                goto undo;
        }
        if ((r = make_pipe(in)) < 0 || (r = make_pipe(out)) < 0 || (r = make_pipe(err)) < 0) {
                hive_refuse(ret_error, r, "cannot make pipes for the login: %s", strerror(-r));
                goto undo;
        }
        f = calloc(1, sizeof(*f));
        if (!f) {
                r = hive_refuse(ret_error, -ENOMEM, "out of memory");
                goto undo;
        }
        /* Looked up first: a failed exec is not reported by every posix_spawn (valgrind's). */
        path = fsutil_find_program(s->model_bin);
        r = path ? spawn_setup_token(s, path, cwd_fd, in[0], out[1], err[1], &pid) : -ENOENT;
        if (r == -ENOENT) {
                hive_refuse(ret_error, r, "the model CLI \"%s\" was not found (HIVE_MODEL_BIN)",
                            s->model_bin);
                goto undo;
        }
        if (r < 0) {
                hive_refuse(ret_error, r, "cannot run %s setup-token: %s", s->model_bin,
                            strerror(-r));
                goto undo;
        }
        /* Only the child may hold its ends, or EOF never comes. */
        close(in[0]);
        close(out[1]);
        close(err[1]);
        in[0] = out[1] = err[1] = -1;
        (void)fcntl(out[0], F_SETFL, O_NONBLOCK);
        (void)fcntl(err[0], F_SETFL, O_NONBLOCK);

        *f = (Flow){.l = l,
                    .pid = pid,
                    .out = {.fd = out[0], .name = "stdout"},
                    .err = {.fd = err[0], .name = "stderr"},
                    .started = timeutil_mono_usec()};
        out[0] = err[0] = -1;

        pthread_mutex_lock(&l->lock);
        l->pid = pid;
        l->in_fd = in[1];
        in[1] = -1;
        if (l->cancelled) /* login_cancel() or login_free() came while we were starting */
                cancel_locked(l);
        free(l->url);
        l->url = NULL;
        lines_clear(l);
        l->result = NULL;
        free(l->error);
        l->error = NULL;
        pthread_mutex_unlock(&l->lock);
        log_debug("login: started %s setup-token (pid %d)", s->model_bin, (int)pid);
        publish_state(l, "started", NULL, NULL);

        /* Created under the lock, so the thread id is kept before the thread can end. */
        pthread_mutex_lock(&l->lock);
        int k = pthread_create(&l->thread, NULL, flow_thread, f);
        l->joinable = k == 0;
        pthread_mutex_unlock(&l->lock);
        if (k != 0) {
                /* Nobody watches the child: end it here, the way the thread would have. */
                pthread_mutex_lock(&l->lock);
                cancel_locked(l);
                l->pid = 0;
                pthread_mutex_unlock(&l->lock);
                (void)kill(-pid, SIGKILL);
                while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                        ;
                close(f->out.fd);
                close(f->err.fd);
                free(f);
                pthread_mutex_lock(&l->lock);
                l->active = false;
                l->result = "failed";
                l->threads--;
                pthread_cond_broadcast(&l->idle);
                pthread_mutex_unlock(&l->lock);
                publish_state(l, "failed", "result", "failed");
                return hive_refuse(ret_error, -k, "cannot start the login's reader thread: %s",
                                   strerror(k));
        }
        return 0;

undo:
        close_pipe(in);
        close_pipe(out);
        close_pipe(err);
        free(f);
        pthread_mutex_lock(&l->lock);
        l->active = false;
        l->threads--;
        pthread_cond_broadcast(&l->idle);
        pthread_mutex_unlock(&l->lock);
        return r;
}

/* write() that cannot raise SIGPIPE (the child may have closed its stdin): the signal is
 * blocked in this thread meanwhile and a pending one of ours taken back. */
static int write_all_nosigpipe(int fd, const char *p, size_t n)
{
        sigset_t pipe_set, old;
        sigemptyset(&pipe_set);
        sigaddset(&pipe_set, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
        int r = 0;
        while (n > 0) {
                ssize_t k = write(fd, p, n);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0) {
                        r = -errno;
                        break;
                }
                p += k;
                n -= (size_t)k;
        }
        if (r == -EPIPE && !sigismember(&old, SIGPIPE)) {
                const struct timespec zero = {0, 0};
                (void)sigtimedwait(&pipe_set, NULL, &zero);
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        return r;
}

int login_code(Login *l, const char *code, char **ret_error)
{
        if (!code || !*code)
                return hive_refuse(ret_error, -EINVAL, "the code is empty");
        size_t n = strlen(code);
        if (n > LOGIN_CODE_MAX)
                return hive_refuse(ret_error, -EINVAL, "the code is longer than %u bytes",
                                   LOGIN_CODE_MAX);
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)code[i];
                if (c < 0x20 || c == 0x7f)
                        return hive_refuse(
                                ret_error, -EINVAL,
                                "the code has a control character (a line break?) at byte "
                                "%zu",
                                i + 1);
        }
        _cleanup_free_ char *line = NULL;
        if (asprintf(&line, "%s\n", code) < 0)
                return hive_refuse(ret_error, -ENOMEM, "out of memory");

        pthread_mutex_lock(&l->lock);
        if (!l->active || l->in_fd < 0) {
                pthread_mutex_unlock(&l->lock);
                return hive_refuse(ret_error, -ESRCH, "no login is running");
        }
        /* A pipe takes this much without blocking unless the child stopped reading and let
         * 64 KiB of earlier codes pile up; the write is under the lock so a cancel cannot
         * close the fd beneath it. */
        int r = write_all_nosigpipe(l->in_fd, line, n + 1);
        pthread_mutex_unlock(&l->lock);
        if (r < 0)
                return hive_refuse(
                        ret_error, r, "the code could not be passed to %s setup-token: %s",
                        l->s->model_bin, r == -EPIPE ? "it is not reading any more" : strerror(-r));
        return 0;
}

int login_cancel(Login *l)
{
        pthread_mutex_lock(&l->lock);
        if (!l->active) {
                pthread_mutex_unlock(&l->lock);
                return -ESRCH;
        }
        cancel_locked(l);
        pthread_mutex_unlock(&l->lock);
        return 0;
}

json_t *login_state(Login *l)
{
        pthread_mutex_lock(&l->lock);
        json_t *lines = json_array();
        for (size_t i = 0; lines && i < l->nlines; i++)
                if (json_array_append_new(
                            lines, json_string(l->lines[(l->first + i) % LOGIN_LINES_KEEP])) < 0) {
                        json_decref(lines);
                        lines = NULL;
                }
        json_t *st = lines ? json_pack("{sbss?sOss?ss?}", "active", l->active, "url", l->url,
                                       "lines", lines, "result", l->result, "error", l->error)
                           : NULL;
        pthread_mutex_unlock(&l->lock);
        json_decref(lines);
        return st;
}
