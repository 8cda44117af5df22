/* JSON-line socket server: accept, bound the clients, check the peer, sweep idle
 * connections, dispatch each line through the verb table. */
#define LOG_SUBSYSTEM "server"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include "cleanup.h"
#include "conn.h"
#include "errors.h"
#include "frame.h"
#include "log.h"
#include "proto.h"
#include "server.h"
#include "timeutil.h"

typedef struct ServerConn ServerConn;

struct ServerConn {
        Server *server;
        Conn *conn;
        ServerConn *prev, *next;
        bool parked;   /* a handler will answer later */
        uint64_t mark; /* the durable-write mark when the request came in */
        char *held;    /* answer waiting at the gate */
        size_t held_len;
        uint64_t need; /* the flush mark the held answer waits for; 0: none */
        bool flushing; /* held on the gate's flush list, else on its commit list */
        ServerConn *next_held;
        ServerDropFn drop;
        void *drop_data;
        bool stream;
        ServerDropFn stream_closed;
        void *stream_data;
};

struct Server {
        Loop *loop;
        char *path;
        int fd;
        LoopSource *src;
        int timer_fd;
        LoopSource *timer_src;
        ServerOptions opts;
        dev_t dev;
        ino_t ino;
        ServerConn *conns;
        unsigned n_conns;
};

struct ServerGate {
        ServerGateOps ops;
        void *userdata;
        ServerConn *committing; /* answers waiting for the open batch to commit */
        ServerConn *flushing;   /* answers waiting for a flush, oldest first */
        ServerConn **flushing_tail;
};

static void send_error(Conn *c, int error, const char *msg)
{
        _cleanup_json_ json_t *j = proto_error_new(msg, hive_errno_name(error));
        size_t len;
        _cleanup_free_ char *line = j ? proto_dump_line(j, &len) : NULL;
        if (line)
                (void)conn_send(c, line, len);
}

static void drop_finish(ServerConn *sc, bool dropped)
{
        ServerDropFn fn = sc->drop;
        void *data = sc->drop_data;
        sc->drop = NULL;
        sc->drop_data = NULL;
        if (fn)
                fn(data, dropped);
}

/* Writes an answer and gets the connection ready for the next request (or closes it). */
static void reply_write(ServerConn *sc, const char *line, size_t len)
{
        Conn *c = sc->conn;
        if (conn_send(c, line, len) < 0)
                return; /* closed: on_close ran the drop callback */
        if (conn_output_pending(c) == 0)
                drop_finish(sc, false);
        if (sc->stream)
                return; /* stays open for pushes */
        if (sc->server->opts.one_shot)
                conn_close_after_flush(c);
        else
                conn_resume(c);
}

void server_conn_set_stream(ServerConn *sc, ServerDropFn fn, void *data)
{
        sc->stream = true;
        sc->stream_closed = fn;
        sc->stream_data = data;
}

int server_conn_push(ServerConn *sc, const char *line, size_t len)
{
        if (conn_output_pending(sc->conn) > SERVER_PUSH_BACKLOG_MAX)
                return -EAGAIN;
        return conn_send(sc->conn, line, len);
}

ServerGate *server_gate_new(const ServerGateOps *ops, void *userdata)
{
        ServerGate *g = calloc(1, sizeof(*g));
        if (!g)
                return NULL;
        g->ops = *ops;
        g->userdata = userdata;
        g->flushing_tail = &g->flushing;
        return g;
}

ServerGate *server_gate_free(ServerGate *g)
{
        free(g); /* connections still held are freed with their servers */
        return NULL;
}

static void gate_hold(ServerGate *g, ServerConn *sc, char *line, size_t len, uint64_t need,
                      bool flushing)
{
        free(sc->held);
        sc->held = line;
        sc->held_len = len;
        sc->need = need;
        sc->flushing = flushing;
        sc->next_held = NULL;
        if (flushing) {
                *g->flushing_tail = sc;
                g->flushing_tail = &sc->next_held;
        } else {
                sc->next_held = g->committing;
                g->committing = sc;
        }
}

static void gate_unlink(ServerGate *g, ServerConn *sc)
{
        ServerConn **head = sc->flushing ? &g->flushing : &g->committing;
        ServerConn *prev = NULL;
        for (ServerConn **p = head; *p; prev = *p, p = &(*p)->next_held)
                if (*p == sc) {
                        *p = sc->next_held;
                        if (sc->flushing && g->flushing_tail == &sc->next_held)
                                g->flushing_tail = prev ? &prev->next_held : &g->flushing;
                        break;
                }
        sc->next_held = NULL;
}

/* Answers now, or holds the answer at the gate: until the open write batch commits, and when
 * durable writes were made since the request came in, until they are flushed too. */
static void reply_line(ServerConn *sc, char *line, size_t len, bool unflushed)
{
        ServerGate *g = sc->server->opts.gate;
        if (g) {
                uint64_t mark = g->ops.durable_mark(g->userdata);
                uint64_t need = !unflushed && mark != sc->mark ? mark : 0;
                if (g->ops.batch_open(g->userdata)) {
                        gate_hold(g, sc, line, len, need, false);
                        return;
                }
                if (need > g->ops.flushed_mark(g->userdata)) {
                        gate_hold(g, sc, line, len, need, true);
                        return;
                }
        }
        reply_write(sc, line, len);
        free(line);
}

static void conn_reply(ServerConn *sc, json_t *resp, bool unflushed)
{
        size_t len = 0;
        char *line = resp ? proto_dump_line(resp, &len) : NULL;
        json_decref(resp);
        sc->parked = false;
        if (!line) {
                conn_close(sc->conn);
                return;
        }
        reply_line(sc, line, len, unflushed);
}

void server_conn_reply(ServerConn *sc, json_t *resp)
{
        conn_reply(sc, resp, false);
}

void server_conn_reply_unflushed(ServerConn *sc, json_t *resp)
{
        conn_reply(sc, resp, true);
}

struct ServerWaiter {
        ServerConn *sc; /* NULL once the client left or the answer went out */
        unsigned refs;  /* the handler's side and the connection's drop callback */
};

static void waiter_unref(ServerWaiter *w)
{
        if (--w->refs == 0)
                free(w);
}

static void waiter_dropped(void *data, bool dropped)
{
        ServerWaiter *w = data;
        w->sc = NULL;
        waiter_unref(w);
}

ServerWaiter *server_waiter_new(ServerConn *sc)
{
        if (!sc)
                return NULL;
        ServerWaiter *w = calloc(1, sizeof(*w));
        if (!w)
                return NULL;
        *w = (ServerWaiter){.sc = sc, .refs = 2};
        server_conn_on_drop(sc, waiter_dropped, w);
        return w;
}

void server_waiter_reply(ServerWaiter *w, json_t *resp)
{
        ServerConn *sc = w->sc;
        if (sc) {
                w->sc = NULL;
                server_conn_reply(sc, resp);
        } else
                json_decref(resp);
        waiter_unref(w);
}

void server_waiter_cancel(ServerWaiter *w)
{
        waiter_unref(w);
}

void server_conn_on_drop(ServerConn *sc, ServerDropFn fn, void *data)
{
        drop_finish(sc, false);
        sc->drop = fn;
        sc->drop_data = data;
}

void *server_conn_userdata(ServerConn *sc)
{
        return sc->server->opts.userdata;
}

/* Writes a held answer, or in its place a refusal naming what failed (error < 0). */
static void gate_write(ServerConn *sc, int error, const char *what)
{
        char *line = TAKE_PTR(sc->held);
        size_t len = sc->held_len;
        if (error < 0) {
                free(line);
                drop_finish(sc, true);
                char msg[320];
                snprintf(msg, sizeof(msg), "%s (%s); try again", what, strerror(-error));
                _cleanup_json_ json_t *j = proto_error_new(msg, hive_errno_name(error));
                line = j ? proto_dump_line(j, &len) : NULL;
                if (!line) {
                        conn_close(sc->conn);
                        return;
                }
        }
        reply_write(sc, line, len);
        free(line);
}

void server_gate_committed(ServerGate *g, int commit_result)
{
        uint64_t flushed = g->ops.flushed_mark(g->userdata);
        while (g->committing) {
                ServerConn *sc = g->committing;
                g->committing = sc->next_held;
                sc->next_held = NULL;
                if (commit_result >= 0 && sc->need > flushed) {
                        char *line = TAKE_PTR(sc->held);
                        gate_hold(g, sc, line, sc->held_len, sc->need, true);
                        continue;
                }
                gate_write(sc, commit_result, "the database could not commit; nothing was changed");
        }
}

void server_gate_flushed(ServerGate *g, int flush_result)
{
        uint64_t flushed = g->ops.flushed_mark(g->userdata);
        ServerConn **p = &g->flushing;
        ServerConn *prev = NULL;
        while (*p) {
                ServerConn *sc = *p;
                if (sc->need > flushed) {
                        prev = sc;
                        p = &sc->next_held;
                        continue;
                }
                *p = sc->next_held;
                if (g->flushing_tail == &sc->next_held)
                        g->flushing_tail = prev ? &prev->next_held : &g->flushing;
                sc->next_held = NULL;
                gate_write(sc, flush_result,
                           "the database could not be flushed to disk, so the change may be "
                           "lost in a power cut");
        }
}

static void on_line(Conn *c, char *line, size_t len, void *userdata)
{
        ServerConn *sc = userdata;
        Server *s = sc->server;
        if (s->opts.one_shot)
                conn_stop_reading(c);
        else
                conn_pause(c);  /* one request at a time, answers in order */
        drop_finish(sc, false); /* a new request: the previous answer arrived */
        if (s->opts.gate)
                sc->mark = s->opts.gate->ops.durable_mark(s->opts.gate->userdata);

        char *out = NULL;
        size_t out_len = 0;
        int r = dispatch_line(s->opts.table, s->opts.userdata, sc, line, len, &out, &out_len, NULL);
        if (r < 0) {
                log_error_errno(r, "cannot build a response: %m");
                conn_close(c);
                return;
        }
        if (r == 2) {
                sc->parked = true;
                return;
        }
        reply_line(sc, out, out_len, false);
}

static void on_error(Conn *c, int error, void *userdata)
{
        if (error == -EMSGSIZE) {
                log_warning("refused a request line over %u bytes; closing the connection",
                            HIVE_LINE_MAX);
                send_error(c, error,
                           "the request line is longer than 1 MiB (1048576 bytes); the "
                           "connection is closed");
        } else {
                send_error(c, error,
                           "the connection ended in the middle of a request (every request "
                           "ends with a newline)");
        }
}

static void on_close(Conn *c, void *userdata)
{
        ServerConn *sc = userdata;
        Server *s = sc->server;
        if (sc->held) {
                gate_unlink(s->opts.gate, sc);
                free(sc->held);
        }
        drop_finish(sc, true);
        if (sc->stream_closed)
                sc->stream_closed(sc->stream_data, true);
        if (sc->prev)
                sc->prev->next = sc->next;
        else
                s->conns = sc->next;
        if (sc->next)
                sc->next->prev = sc->prev;
        s->n_conns--;
        free(sc);
}

static const ConnOps server_conn_ops = {
        .on_line = on_line,
        .on_error = on_error,
        .on_close = on_close,
};

/* Answers a connection we will not serve with one error line, best effort, and closes it. */
static void refuse(int fd, int error, const char *msg)
{
        _cleanup_close_ int cfd = fd;
        _cleanup_json_ json_t *j = proto_error_new(msg, hive_errno_name(error));
        size_t len;
        _cleanup_free_ char *line = j ? proto_dump_line(j, &len) : NULL;
        if (line)
                (void)send(cfd, line, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        /* Read what the client already sent: closing with unread input would reset the
         * connection and the client could lose our answer. */
        char buf[4096];
        for (int i = 0; i < 16 && recv(cfd, buf, sizeof(buf), MSG_DONTWAIT) > 0; i++)
                ;
}

static void on_accept(LoopSource *src, int fd, uint32_t events, void *userdata)
{
        Server *s = userdata;
        for (int i = 0; i < 64; i++) {
                int cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                if (cfd < 0) {
                        if (errno != EAGAIN && errno != EINTR)
                                log_warning_errno(-errno, "accept on %s failed: %m", s->path);
                        return;
                }
                if (s->opts.peer_allowed) {
                        struct ucred cred;
                        socklen_t sl = sizeof(cred);
                        if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cred, &sl) < 0 ||
                            !s->opts.peer_allowed(cred.uid, cred.gid, s->opts.userdata)) {
                                log_warning("refused a connection from uid %u on %s",
                                            (unsigned)cred.uid, s->path);
                                refuse(cfd, -EACCES,
                                       "permission denied: this socket is for root and the "
                                       "hive-admin group");
                                continue;
                        }
                }
                if (s->n_conns >= s->opts.max_clients) {
                        log_warning("refused a connection on %s: %u clients already", s->path,
                                    s->n_conns);
                        refuse(cfd, -EUSERS, "too many connections to the daemon; try again");
                        continue;
                }
                ServerConn *sc = calloc(1, sizeof(*sc));
                if (!sc) {
                        close(cfd);
                        return;
                }
                sc->server = s;
                int r = conn_new(s->loop, cfd, HIVE_LINE_MAX, &server_conn_ops, sc, &sc->conn);
                if (r < 0) {
                        free(sc);
                        log_warning_errno(r, "cannot set up a connection: %m");
                        continue;
                }
                sc->next = s->conns;
                if (s->conns)
                        s->conns->prev = sc;
                s->conns = sc;
                s->n_conns++;
        }
}

static void on_timer(LoopSource *src, int fd, uint32_t events, void *userdata)
{
        Server *s = userdata;
        uint64_t ticks;
        (void)!read(fd, &ticks, sizeof(ticks));
        uint64_t now = timeutil_mono_usec();
        uint64_t limit = (uint64_t)s->opts.idle_timeout_sec * 1000000u;
        for (ServerConn *sc = s->conns, *next; sc; sc = next) {
                next = sc->next;
                if (!sc->parked && !sc->stream && now - conn_last_activity(sc->conn) > limit) {
                        log_debug("closing a connection idle for over %u s",
                                  s->opts.idle_timeout_sec);
                        conn_close(sc->conn);
                }
        }
}

int server_new(Loop *l, const char *path, const ServerOptions *opts, Server **ret)
{
        Server *s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->loop = l;
        s->opts = *opts;
        s->fd = s->timer_fd = -1;
        int r;
        s->path = strdup(path);
        if (!s->path) {
                r = -ENOMEM;
                goto fail;
        }

        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(path) >= sizeof(sa.sun_path)) {
                r = log_error_errno(-ENAMETOOLONG, "socket path %s is too long", path);
                goto fail;
        }
        strcpy(sa.sun_path, path);
        s->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (s->fd < 0) {
                r = log_error_errno(-errno, "socket(): %m");
                goto fail;
        }
        mode_t old = umask(0777 & ~opts->mode);
        int b = bind(s->fd, (struct sockaddr *)&sa, sizeof(sa));
        int saved = errno;
        umask(old);
        if (b < 0) {
                r = log_error_errno(-saved, "cannot bind %s: %m", path);
                goto fail;
        }
        struct stat st;
        if (chmod(path, opts->mode) < 0 || stat(path, &st) < 0) {
                r = log_error_errno(-errno, "cannot set the mode of %s: %m", path);
                goto fail;
        }
        s->dev = st.st_dev;
        s->ino = st.st_ino;
        if (opts->gid != (gid_t)-1 && chown(path, (uid_t)-1, opts->gid) < 0)
                log_warning_errno(-errno, "cannot give %s to group %u: %m", path,
                                  (unsigned)opts->gid);
        if (listen(s->fd, 512) < 0) {
                r = log_error_errno(-errno, "cannot listen on %s: %m", path);
                goto fail;
        }
        r = loop_add(l, s->fd, EPOLLIN, on_accept, s, &s->src);
        if (r < 0)
                goto fail;

        if (opts->idle_timeout_sec == 0)
                goto done;
        s->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
        if (s->timer_fd < 0) {
                r = -errno;
                goto fail;
        }
        unsigned every = opts->idle_timeout_sec < 5 ? 1 : 5;
        struct itimerspec its = {.it_interval = {every, 0}, .it_value = {every, 0}};
        timerfd_settime(s->timer_fd, 0, &its, NULL);
        r = loop_add(l, s->timer_fd, EPOLLIN, on_timer, s, &s->timer_src);
        if (r < 0)
                goto fail;
done:
        *ret = s;
        return 0;
fail:
        server_free(s);
        return r;
}

Server *server_free(Server *s)
{
        if (!s)
                return NULL;
        while (s->conns)
                conn_close(s->conns->conn); /* on_close unlinks it */
        loop_remove(s->src);
        loop_remove(s->timer_src);
        if (s->timer_fd >= 0)
                close(s->timer_fd);
        if (s->fd >= 0) {
                close(s->fd);
                struct stat st;
                if (s->ino && stat(s->path, &st) == 0 && st.st_dev == s->dev && st.st_ino == s->ino)
                        unlink(s->path);
        }
        free(s->path);
        free(s);
        return NULL;
}

unsigned server_n_connections(const Server *s)
{
        return s->n_conns;
}
