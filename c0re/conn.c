/* Connections: reading lines through the framer, writing with MSG_NOSIGNAL, closing without
 * use-after-free when a callback closes its own connection. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cleanup.h"
#include "conn.h"
#include "frame.h"
#include "timeutil.h"

struct Conn {
        Loop *loop;
        LoopSource *src;
        int fd;
        LineFramer in;
        char *out;
        size_t out_len, out_off, out_cap;
        const ConnOps *ops;
        void *userdata;
        uint64_t last_activity;
        uint32_t armed; /* the events epoll watches now */
        bool reading;
        bool paused;    /* epoll may still watch EPOLLIN: it is dropped when input comes */
        bool input_off; /* paused, and input came: EPOLLIN dropped until resumed */
        bool pump_scheduled;
        bool eof; /* the peer finished sending */
        bool close_after_flush;
        bool closed;
        unsigned busy; /* > 0 while a callback runs: defer the free */
};

static void conn_handler(LoopSource *s, int fd, uint32_t events, void *userdata);
static void conn_check_eof(Conn *c);

/* Re-arms epoll, with a system call only when the events change. */
static void conn_update_events(Conn *c)
{
        uint32_t ev = 0;
        if (c->reading && !c->input_off)
                ev |= EPOLLIN;
        if (c->out_len > c->out_off)
                ev |= EPOLLOUT;
        if (ev != c->armed && loop_set_events(c->src, ev) >= 0)
                c->armed = ev;
}

int conn_new(Loop *l, int fd, size_t max_line, const ConnOps *ops, void *userdata, Conn **ret)
{
        int flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        Conn *c = calloc(1, sizeof(*c));
        if (!c) {
                close(fd);
                return -ENOMEM;
        }
        c->loop = l;
        c->fd = fd;
        c->ops = ops;
        c->userdata = userdata;
        c->reading = true;
        c->last_activity = timeutil_mono_usec();
        framer_init(&c->in, max_line);
        c->armed = EPOLLIN;
        int r = loop_add(l, fd, c->armed, conn_handler, c, &c->src);
        if (r < 0) {
                close(fd);
                free(c);
                return r;
        }
        *ret = c;
        return 0;
}

static void conn_free(Conn *c)
{
        framer_done(&c->in);
        free(c->out);
        free(c);
}

void conn_close(Conn *c)
{
        if (c->closed)
                return;
        c->closed = true;
        loop_remove(c->src);
        /* Drain a little unread input first: closing with unread data resets the connection
         * and the peer could lose the answer we just wrote. */
        char buf[4096];
        for (int i = 0; i < 16 && recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT) > 0; i++)
                ;
        close(c->fd);
        c->busy++;
        if (c->ops->on_close)
                c->ops->on_close(c, c->userdata);
        c->busy--;
        if (c->busy == 0)
                conn_free(c);
}

/* Writes queued output.  Returns 0 (maybe with output left) or a negative errno. */
static int conn_flush(Conn *c)
{
        while (c->out_off < c->out_len) {
                ssize_t k = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                                 MSG_NOSIGNAL | MSG_DONTWAIT);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                return 0;
                        return -errno;
                }
                c->out_off += (size_t)k;
                c->last_activity = timeutil_mono_usec();
        }
        c->out_off = c->out_len = 0;
        return 0;
}

/* After output progress: close if asked to, else re-arm epoll. */
static void conn_settle(Conn *c)
{
        if (c->closed)
                return;
        if (c->close_after_flush && c->out_len == c->out_off) {
                conn_close(c);
                return;
        }
        conn_update_events(c);
}

int conn_send(Conn *c, const char *data, size_t len)
{
        if (c->closed)
                return -ENOTCONN;
        if (c->out_off > 0 && c->out_off == c->out_len)
                c->out_off = c->out_len = 0;
        if (c->out_cap - c->out_len < len) {
                size_t cap = c->out_cap ? c->out_cap : 4096;
                while (cap - c->out_len < len)
                        cap *= 2;
                char *p = realloc(c->out, cap);
                if (!p) {
                        conn_close(c);
                        return -ENOMEM;
                }
                c->out = p;
                c->out_cap = cap;
        }
        memcpy(c->out + c->out_len, data, len);
        c->out_len += len;
        int r = conn_flush(c);
        if (r < 0) {
                conn_close(c);
                return r;
        }
        conn_settle(c);
        return 0;
}

void conn_stop_reading(Conn *c)
{
        if (c->closed || !c->reading)
                return;
        c->reading = false;
        conn_update_events(c);
}

/* Lazily: a client waits for its answer before it sends more, so epoll is told only if input
 * does come while paused (conn_handler), and answering costs no epoll_ctl. */
void conn_pause(Conn *c)
{
        if (c->closed || c->paused)
                return;
        c->paused = true;
}

/* Deferred: hands out the lines that were buffered while the connection was paused. */
static void conn_pump(void *userdata)
{
        Conn *c = userdata;
        c->pump_scheduled = false;
        for (;;) {
                char *line;
                size_t len;
                if (c->closed || !c->reading || c->paused)
                        break;
                if (framer_pop(&c->in, &line, &len) <= 0)
                        break;
                c->ops->on_line(c, line, len, c->userdata);
        }
        conn_check_eof(c);
        c->busy--;
        if (c->closed && c->busy == 0)
                conn_free(c);
}

void conn_resume(Conn *c)
{
        if (c->closed || !c->paused)
                return;
        c->paused = false;
        c->input_off = false;
        conn_update_events(c);
        bool lines = c->in.len - c->in.start > c->in.tail; /* complete lines buffered */
        if ((lines || c->eof) && !c->pump_scheduled && loop_defer(c->loop, conn_pump, c) >= 0) {
                c->pump_scheduled = true;
                c->busy++; /* keeps c allocated until the pump ran */
        }
}

void conn_close_after_flush(Conn *c)
{
        if (c->closed)
                return;
        c->close_after_flush = true;
        c->reading = false;
        conn_settle(c);
}

size_t conn_output_pending(const Conn *c)
{
        return c->out_len - c->out_off;
}

uint64_t conn_last_activity(const Conn *c)
{
        return c->last_activity;
}

int conn_fd(const Conn *c)
{
        return c->fd;
}

static void conn_fail(Conn *c, int error)
{
        c->reading = false;
        if (c->ops->on_error)
                c->ops->on_error(c, error, c->userdata);
        conn_close_after_flush(c);
}

/* After the peer's end of file, once every complete line was handed out: a partial line is
 * an error; otherwise finish what is queued and close. */
static void conn_check_eof(Conn *c)
{
        if (!c->eof || c->closed || c->paused || !c->reading)
                return;
        if (c->in.len - c->in.start > c->in.tail)
                return; /* complete lines still buffered */
        if (framer_pending(&c->in) > 0)
                conn_fail(c, -EBADMSG);
        else
                conn_close_after_flush(c);
}

static void conn_read(Conn *c)
{
        ssize_t k = framer_read(&c->in, c->fd);
        if (k == -EAGAIN || k == -EINTR)
                return;
        if (k == -EMSGSIZE) {
                conn_fail(c, -EMSGSIZE);
                return;
        }
        if (k < 0) {
                conn_close(c);
                return;
        }
        c->last_activity = timeutil_mono_usec();

        for (;;) {
                char *line;
                size_t len;
                if (c->closed || !c->reading || c->paused)
                        return;
                int r = framer_pop(&c->in, &line, &len);
                if (r <= 0)
                        break;
                c->ops->on_line(c, line, len, c->userdata);
        }
        if (k == 0)
                c->eof = true;
        conn_check_eof(c);
}

static void conn_handler(LoopSource *s, int fd, uint32_t events, void *userdata)
{
        Conn *c = userdata;
        c->busy++;
        if ((events & EPOLLOUT) && !c->closed) {
                if (conn_flush(c) < 0)
                        conn_close(c);
                else
                        conn_settle(c);
        }
        if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !c->closed) {
                if (c->reading && !c->paused)
                        conn_read(c);
                else if (events & (EPOLLHUP | EPOLLERR))
                        conn_close(c); /* the peer is gone; nobody will read what is left */
                else if (c->paused) {
                        c->input_off = true; /* stop watching until resumed */
                        conn_update_events(c);
                }
        }
        c->busy--;
        if (c->closed && c->busy == 0)
                conn_free(c);
}
