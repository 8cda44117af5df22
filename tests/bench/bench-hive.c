/* broker-bench backend for our daemon: one unix-socket connection per endpoint to
 * <run-dir>/agents/<name>/mcp.sock, JSON lines, one request at a time.
 *
 * send   {"cmd":"send","to":…,"body":…}        → {"version":1,"ok":true,"id":N}
 * recv   {"cmd":"recv","wait_seconds":30,"max":1,"ack":[N]} → {…,"acked":1,"messages":[{"id":N,…}]}
 *
 * The receiver acks a message with the "ack" field of its next recv, which it sends at once
 * (as a libnats client's natsMsg_Ack and libmosquitto's PUBACK go out without waiting for an
 * answer); ack() only notes the id.  The last message of a run is acked with a plain
 * {"cmd":"ack","ids":[N]} when the connection closes.
 *
 * A reply is waited for with poll() and read without blocking, as libmosquitto's
 * mosquitto_loop() does (see hive_read_line).
 *
 * Replies are scanned, not parsed into a tree: the load generator should cost about what the
 * libmosquitto and libnats clients cost, and the bench controls every body (no quotes, no
 * escapes).  A reply that is not "ok":true is printed and fails the run. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "bench.h"

typedef struct Hive {
        int fd;
        size_t start, end; /* unread bytes are rbuf[start..end) */
        unsigned long long last_id;
        unsigned long long ack_id; /* to ack with the next recv; 0: none */
        int armed;                 /* a recv request is outstanding */
        char rbuf[65536];
} Hive;

static int hive_write_all(Hive *h, const char *buf, size_t len)
{
        while (len > 0) {
                ssize_t n = send(h->fd, buf, len, MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                buf += n;
                len -= (size_t)n;
        }
        return 0;
}

/* Reads one reply line; *ret_line points into the buffer (NUL-terminated, valid until the next
 * read) and *ret_t is when the line was complete. */
static int hive_read_line(Hive *h, char **ret_line, uint64_t *ret_t)
{
        for (;;) {
                char *nl = memchr(h->rbuf + h->start, '\n', h->end - h->start);
                if (nl) {
                        uint64_t t = bench_now_ns();
                        *nl = '\0';
                        *ret_line = h->rbuf + h->start;
                        h->start = (size_t)(nl - h->rbuf) + 1;
                        if (ret_t)
                                *ret_t = t;
                        return 0;
                }
                if (h->start > 0) {
                        memmove(h->rbuf, h->rbuf + h->start, h->end - h->start);
                        h->end -= h->start;
                        h->start = 0;
                }
                if (h->end == sizeof(h->rbuf))
                        return -EMSGSIZE;
                /* Wait in poll(), as mosquitto_loop() does, not in a blocking read(): the
                 * kernel wakes a reader blocked in read() for nothing every time the server
                 * consumes one of its requests (the write-space wake-up), and that costs the
                 * server a cross-CPU wake-up per request. */
                ssize_t n = recv(h->fd, h->rbuf + h->end, sizeof(h->rbuf) - h->end, MSG_DONTWAIT);
                if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                        struct pollfd p = {.fd = h->fd, .events = POLLIN};
                        if (poll(&p, 1, -1) < 0 && errno != EINTR)
                                return -errno;
                        continue;
                }
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0) {
                        fprintf(stderr, "broker-bench: hive: the daemon closed the connection\n");
                        return -ECONNRESET;
                }
                h->end += (size_t)n;
        }
}

/* The value of "key" in s (pointer to its first character), or NULL. */
static const char *json_field(const char *s, const char *key)
{
        size_t kl = strlen(key);
        for (const char *p = s; (p = strchr(p, '"')); p++) {
                if (strncmp(p + 1, key, kl) != 0 || p[1 + kl] != '"')
                        continue;
                const char *q = p + 2 + kl;
                while (*q == ' ')
                        q++;
                if (*q != ':')
                        continue;
                q++;
                while (*q == ' ')
                        q++;
                return q;
        }
        return NULL;
}

static int hive_check_ok(const BenchEndpoint *e, const char *what, const char *line)
{
        const char *ok = json_field(line, "ok");
        if (ok && strncmp(ok, "true", 4) == 0)
                return 0;
        fprintf(stderr, "broker-bench: hive: %s: %s refused: %s\n", e->self, what, line);
        return -EPROTO;
}

static int hive_connect(const BenchTarget *t, BenchEndpoint *e)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (!t->hive_run_dir) {
                fprintf(stderr, "broker-bench: hive needs --hive-run-dir\n");
                return -EINVAL;
        }
        int n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/agents/%s/mcp.sock", t->hive_run_dir,
                         e->self);
        if (n < 0 || (size_t)n >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        Hive *h = calloc(1, sizeof(Hive));
        if (!h)
                return -ENOMEM;
        h->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (h->fd < 0 || connect(h->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                int r = -errno;
                fprintf(stderr, "broker-bench: hive: connect %s: %s\n", sa.sun_path,
                        strerror(errno));
                if (h->fd >= 0)
                        close(h->fd);
                free(h);
                return r;
        }
        e->impl = h;
        return 0;
}

static int hive_setup(const BenchTarget *t)
{
        return 0;
}

static void hive_teardown(void)
{
}

static int hive_register_idle_receiver(const BenchTarget *t, BenchEndpoint *e)
{
        return 0; /* the driver registered every agent before starting the daemon */
}

static int hive_send(BenchEndpoint *e, const char *body, size_t len)
{
        Hive *h = e->impl;
        char req[BENCH_BODY_MAX + 128];
        int n = snprintf(req, sizeof(req), "{\"cmd\":\"send\",\"to\":\"%s\",\"body\":\"%.*s\"}\n",
                         e->peer, (int)len, body);
        if (n < 0 || (size_t)n >= sizeof(req))
                return -EMSGSIZE;
        int r = hive_write_all(h, req, (size_t)n);
        if (r < 0)
                return r;
        char *line;
        if ((r = hive_read_line(h, &line, NULL)) < 0)
                return r;
        return hive_check_ok(e, "send", line);
}

static int hive_recv_arm(BenchEndpoint *e)
{
        Hive *h = e->impl;
        if (h->armed)
                return 0;
        char req[128];
        int n = h->ack_id ? snprintf(req, sizeof(req),
                                     "{\"cmd\":\"recv\",\"wait_seconds\":30,\"max\":1,"
                                     "\"ack\":[%llu]}\n",
                                     h->ack_id)
                          : snprintf(req, sizeof(req),
                                     "{\"cmd\":\"recv\",\"wait_seconds\":30,\"max\":1}\n");
        int r = hive_write_all(h, req, (size_t)n);
        if (r < 0)
                return r;
        h->ack_id = 0;
        h->armed = 1;
        return 0;
}

static int hive_recv_wait(BenchEndpoint *e, int timeout_ms)
{
        Hive *h = e->impl;
        uint64_t deadline = bench_now_ns() + (uint64_t)timeout_ms * 1000000u;
        for (;;) {
                int r = hive_recv_arm(e);
                if (r < 0)
                        return r;
                char *line;
                uint64_t t;
                if ((r = hive_read_line(h, &line, &t)) < 0)
                        return r;
                h->armed = 0;
                if ((r = hive_check_ok(e, "recv", line)) < 0)
                        return r;
                const char *m = json_field(line, "messages");
                if (!m || *m != '[') {
                        fprintf(stderr, "broker-bench: hive: recv reply without messages: %s\n",
                                line);
                        return -EPROTO;
                }
                m++;
                while (*m == ' ')
                        m++;
                if (*m == ']') { /* the wait expired */
                        if (bench_now_ns() > deadline)
                                return -ETIMEDOUT;
                        continue;
                }
                const char *id = json_field(m, "id");
                const char *body = json_field(m, "body");
                if (!id || !body || *body != '"') {
                        fprintf(stderr, "broker-bench: hive: cannot read the message: %s\n", line);
                        return -EPROTO;
                }
                h->last_id = strtoull(id, NULL, 10);
                size_t n = 0;
                for (body++; *body && *body != '"' && n < BENCH_BODY_MAX; body++) {
                        if (*body == '\\' && body[1])
                                body++;
                        e->buf[n++] = *body;
                }
                e->buf[n] = '\0';
                e->len = n;
                e->t_wake = t;
                return 0;
        }
}

static int hive_ack(BenchEndpoint *e)
{
        Hive *h = e->impl;
        h->ack_id = h->last_id;
        return 0;
}

/* A plain ack of what is still to be acked, for the end of a run. */
static int hive_ack_now(const BenchEndpoint *e, Hive *h)
{
        char req[96];
        int n = snprintf(req, sizeof(req), "{\"cmd\":\"ack\",\"ids\":[%llu]}\n", h->ack_id);
        int r = hive_write_all(h, req, (size_t)n);
        if (r < 0)
                return r;
        h->ack_id = 0;
        char *line;
        if ((r = hive_read_line(h, &line, NULL)) < 0)
                return r;
        return hive_check_ok(e, "ack", line);
}

static void hive_close(BenchEndpoint *e)
{
        Hive *h = e->impl;
        if (!h)
                return;
        if (h->ack_id && !h->armed && hive_ack_now(e, h) < 0)
                fprintf(stderr, "broker-bench: hive: %s: the last ack failed\n", e->self);
        close(h->fd);
        free(h);
        e->impl = NULL;
}

const BenchBackend bench_backend_hive = {
        .name = "hive",
        .setup = hive_setup,
        .teardown = hive_teardown,
        .open_sender = hive_connect,
        .open_receiver = hive_connect,
        .register_idle_receiver = hive_register_idle_receiver,
        .send = hive_send,
        .recv_arm = hive_recv_arm,
        .recv_wait = hive_recv_wait,
        .ack = hive_ack,
        .close = hive_close,
};
