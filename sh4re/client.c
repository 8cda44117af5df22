/* Blocking client for the daemon's sockets, shared by the CLI and the harness. */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "cleanup.h"
#include "client.h"
#include "proto.h"
#include "timeutil.h"

int client_connect(const char *path, int *ret_fd)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);

        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                return -errno;
        *ret_fd = TAKE_FD(fd);
        return 0;
}

int client_send(int fd, const json_t *j)
{
        size_t len;
        _cleanup_free_ char *line = proto_dump_line(j, &len);
        if (!line)
                return -ENOMEM;
        size_t off = 0;
        while (off < len) {
                ssize_t k = send(fd, line + off, len - off, MSG_NOSIGNAL);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                off += (size_t)k;
        }
        return 0;
}

int client_recv(int fd, LineFramer *f, int timeout_ms, json_t **ret)
{
        uint64_t deadline =
                timeout_ms < 0 ? 0 : timeutil_mono_usec() + (uint64_t)timeout_ms * 1000u;
        for (;;) {
                char *line;
                size_t len;
                int r = framer_pop(f, &line, &len);
                if (r < 0)
                        return r;
                if (r > 0) {
                        json_t *j = json_loadb(line, len, 0, NULL);
                        if (!json_is_object(j)) {
                                json_decref(j);
                                return -EBADMSG;
                        }
                        *ret = j;
                        return 0;
                }

                int wait = -1;
                if (timeout_ms >= 0) {
                        uint64_t now = timeutil_mono_usec();
                        if (now >= deadline)
                                return -ETIMEDOUT;
                        wait = (int)((deadline - now + 999) / 1000);
                }
                struct pollfd p = {.fd = fd, .events = POLLIN};
                r = poll(&p, 1, wait);
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (r == 0)
                        return -ETIMEDOUT;
                ssize_t k = framer_read(f, fd);
                if (k == -EAGAIN || k == -EINTR)
                        continue;
                if (k < 0)
                        return (int)k;
                if (k == 0)
                        return -ECONNRESET;
        }
}

int client_request(const char *path, const json_t *req, int timeout_ms, json_t **ret_resp)
{
        _cleanup_close_ int fd = -1;
        int r = client_connect(path, &fd);
        if (r < 0)
                return r;
        int sent = client_send(fd, req);
        if (sent < 0 && sent != -EPIPE && sent != -ECONNRESET)
                return sent;
        /* Even when the send failed because the daemon closed, its refusal (say, EACCES or
         * EUSERS) may be waiting to be read. */
        LineFramer f;
        framer_init(&f, CLIENT_RESPONSE_MAX);
        r = client_recv(fd, &f, timeout_ms, ret_resp);
        framer_done(&f);
        if (r < 0 && sent < 0)
                return sent;
        return r;
}
