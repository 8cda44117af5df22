/* Reconnecting client of the agent socket, shared by the CLI verbs and the MCP server. */
#define LOG_SUBSYSTEM "ag3nt"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#include "cleanup.h"
#include "client.h"
#include "hivelink.h"
#include "log.h"
#include "proto.h"
#include "timeutil.h"

/* How long to look for a refusal the daemon may have written before it closed on us. */
#define LINK_LINGER_MS 200

struct HiveLink {
        char *path;
        unsigned base_ms;
        int64_t give_up_ms;
        int fd;
        LineFramer framer;
        bool ever_connected;
        unsigned reconnects;
        int intr_fd; /* readable: give up the request at once (-EINTR); -1 none */
};

int hivelink_new(const HiveLinkOptions *o, HiveLink **ret)
{
        HiveLink *l = calloc(1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        l->path = strdup(o->path);
        if (!l->path) {
                free(l);
                return -ENOMEM;
        }
        l->base_ms = o->backoff_base_ms ? o->backoff_base_ms : 1;
        l->give_up_ms = o->give_up_ms;
        l->fd = -1;
        l->intr_fd = -1;
        framer_init(&l->framer, CLIENT_RESPONSE_MAX);
        *ret = l;
        return 0;
}

static void link_drop(HiveLink *l)
{
        if (l->fd >= 0)
                close(l->fd);
        l->fd = -1;
        framer_done(&l->framer);
        framer_init(&l->framer, CLIENT_RESPONSE_MAX);
}

HiveLink *hivelink_free(HiveLink *l)
{
        if (!l)
                return NULL;
        link_drop(l);
        framer_done(&l->framer);
        free(l->path);
        free(l);
        return NULL;
}

unsigned hivelink_reconnects(const HiveLink *l)
{
        return l->reconnects;
}

unsigned hivelink_backoff_ms(unsigned base_ms, unsigned attempt)
{
        uint64_t cap = (uint64_t)base_ms * 15u;
        uint64_t d = attempt >= 4 ? cap : (uint64_t)base_ms << attempt;
        return (unsigned)(d < cap ? d : cap);
}

void hivelink_set_interrupt(HiveLink *l, int fd)
{
        l->intr_fd = fd;
}

static bool interrupted(const HiveLink *l)
{
        if (l->intr_fd < 0)
                return false;
        struct pollfd p = {.fd = l->intr_fd, .events = POLLIN};
        return poll(&p, 1, 0) > 0;
}

/* Sleeps ms, or less when the interrupt fd becomes readable.  Returns -EINTR then. */
static int sleep_ms(HiveLink *l, unsigned ms)
{
        uint64_t end = timeutil_mono_usec() + (uint64_t)ms * 1000u;
        for (;;) {
                uint64_t now = timeutil_mono_usec();
                if (now >= end)
                        return 0;
                struct pollfd p = {.fd = l->intr_fd, .events = POLLIN};
                int k = poll(&p, l->intr_fd >= 0 ? 1 : 0, (int)((end - now + 999) / 1000));
                if (k > 0)
                        return -EINTR;
        }
}

/* client_recv(), but also ends (with -EINTR) when the interrupt fd becomes readable. */
static int link_recv(HiveLink *l, int timeout_ms, json_t **ret)
{
        if (l->intr_fd < 0)
                return client_recv(l->fd, &l->framer, timeout_ms, ret);
        uint64_t deadline =
                timeout_ms < 0 ? 0 : timeutil_mono_usec() + (uint64_t)timeout_ms * 1000u;
        for (;;) {
                if (framer_pending(&l->framer) > 0) {
                        int r = client_recv(l->fd, &l->framer, 1, ret);
                        if (r != -ETIMEDOUT)
                                return r;
                }
                int wait = -1;
                if (timeout_ms >= 0) {
                        uint64_t now = timeutil_mono_usec();
                        if (now >= deadline)
                                return -ETIMEDOUT;
                        wait = (int)((deadline - now + 999) / 1000);
                }
                struct pollfd p[2] = {{.fd = l->fd, .events = POLLIN},
                                      {.fd = l->intr_fd, .events = POLLIN}};
                int k = poll(p, 2, wait);
                if (k < 0 && errno != EINTR)
                        return -errno;
                if (k > 0 && p[1].revents)
                        return -EINTR;
                if (k > 0 && p[0].revents) {
                        int r = client_recv(l->fd, &l->framer, 1, ret);
                        if (r != -ETIMEDOUT)
                                return r;
                }
        }
}

/* An idle connection the daemon closed (or that holds a stray line) is of no use: a request
 * written into it would be lost or answered out of turn. */
static bool link_stale(HiveLink *l)
{
        struct pollfd p = {.fd = l->fd, .events = POLLIN};
        return poll(&p, 1, 0) != 0 || framer_pending(&l->framer) > 0;
}

static bool connection_broke(int r)
{
        return r == -ECONNRESET || r == -EPIPE || r == -ENOTCONN || r == -ECONNABORTED ||
               r == -ESHUTDOWN;
}

static const char *verb_of(const json_t *req)
{
        const char *cmd = json_string_value(json_object_get(req, "cmd"));
        return cmd ? cmd : "?";
}

int hivelink_request_id_new(char ret[static HIVELINK_REQUEST_ID_SIZE])
{
        static const char hex[] = "0123456789abcdef";
        uint8_t b[(HIVELINK_REQUEST_ID_SIZE - 1) / 2];
        size_t got = 0;
        while (got < sizeof(b)) {
                ssize_t k = getrandom(b + got, sizeof(b) - got, 0);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                got += (size_t)k;
        }
        for (size_t i = 0; i < sizeof(b); i++) {
                ret[2 * i] = hex[b[i] >> 4];
                ret[2 * i + 1] = hex[b[i] & 0xf];
        }
        ret[2 * sizeof(b)] = '\0';
        return 0;
}

int hivelink_request(HiveLink *l, const json_t *req, int answer_timeout_ms, json_t **ret_resp)
{
        /* One id for every copy of this request the loop below may send: the daemon answers
         * a copy from its record of the first instead of carrying it out again. */
        _cleanup_json_ json_t *with_id = NULL;
        if (proto_verb_takes_request_id(verb_of(req)) && !json_object_get(req, "request_id")) {
                char id[HIVELINK_REQUEST_ID_SIZE];
                int k = hivelink_request_id_new(id);
                if (k < 0)
                        log_warning_errno(k,
                                          "cannot make a request id (%m); \"%s\" goes without "
                                          "one, so a resend would be carried out twice",
                                          verb_of(req));
                else {
                        with_id = json_copy((json_t *)req);
                        if (!with_id ||
                            json_object_set_new(with_id, "request_id", json_string(id)) < 0)
                                return -ENOMEM;
                        req = with_id;
                }
        }

        bool wait_first = false; /* sleep before the next connect */
        bool broke = false;      /* a connection broke during this request already */
        unsigned attempt = 0;    /* index into the backoff sequence */
        uint64_t since = 0;      /* when this outage began (monotonic µs), 0: none yet */
        int last = 0;            /* the last failure */

        for (;;) {
                if (interrupted(l))
                        return -EINTR;
                if (l->fd >= 0 && link_stale(l)) {
                        log_debug("the idle connection to %s was closed; reconnecting", l->path);
                        link_drop(l);
                }
                if (l->fd < 0) {
                        if (wait_first) {
                                uint64_t now = timeutil_mono_usec();
                                int64_t elapsed = (int64_t)((now - since) / 1000u);
                                if (l->give_up_ms > 0 && elapsed >= l->give_up_ms) {
                                        log_debug("giving up on %s after %lld ms", l->path,
                                                  (long long)elapsed);
                                        return last;
                                }
                                unsigned delay = hivelink_backoff_ms(l->base_ms, attempt++);
                                if (l->give_up_ms > 0 && delay > l->give_up_ms - elapsed)
                                        delay = (unsigned)(l->give_up_ms - elapsed);
                                log_warning("cannot reach the daemon at %s (%s); retrying in "
                                            "%u.%03u s (retry %u)",
                                            l->path, strerror(-last), delay / 1000, delay % 1000,
                                            attempt);
                                if (sleep_ms(l, delay) < 0)
                                        return -EINTR;
                        }
                        wait_first = true;
                        int fd = -1;
                        int r = client_connect(l->path, &fd);
                        if (r < 0) {
                                if (l->give_up_ms == 0 || r == -ENAMETOOLONG)
                                        return r;
                                if (!since)
                                        since = timeutil_mono_usec();
                                last = r;
                                continue;
                        }
                        l->fd = fd;
                        if (since)
                                log_info("connected to %s%s", l->path,
                                         l->ever_connected ? " again" : "");
                        if (l->ever_connected)
                                l->reconnects++;
                        l->ever_connected = true;
                }

                int sent = client_send(l->fd, req);
                if (sent < 0 && !connection_broke(sent)) {
                        link_drop(l);
                        return sent;
                }
                json_t *resp = NULL;
                int r = link_recv(l, sent < 0 ? LINK_LINGER_MS : answer_timeout_ms, &resp);
                if (r == 0) {
                        *ret_resp = resp;
                        return 0;
                }
                link_drop(l);
                if (r == -EINTR)
                        return r; /* the daemon sees the close; a parked recv ends there */
                if (r == -ETIMEDOUT && sent == 0)
                        return r;
                if (sent == 0 && !connection_broke(r))
                        return r; /* -EBADMSG, -EMSGSIZE, ... */
                last = -ECONNRESET;
                if (l->give_up_ms == 0)
                        return last;
                if (!since)
                        since = timeutil_mono_usec();
                log_warning("the connection to %s broke before the answer to \"%s\" arrived; "
                            "sending it again after reconnecting",
                            l->path, verb_of(req));
                /* The first reconnect after a break is immediate; a daemon that keeps closing
                 * on us is retried with backoff like one that is not there. */
                wait_first = broke;
                broke = true;
        }
}
