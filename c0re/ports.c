/* Port files.  Other agents' files are read to find the ports already taken, tombstones
 * included (a destroyed agent that comes back keeps its port). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "fsutil.h"
#include "ports.h"

uint32_t ports_fnv1a(const char *s)
{
        uint32_t h = 2166136261u;
        for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
                h ^= *p;
                h *= 16777619u;
        }
        return h;
}

/* Reads a port file: 0 and *ret, -ENOENT, or -EBADMSG when it holds no port in range. */
static int port_read(const char *path, uint16_t *ret)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        char buf[16];
        ssize_t k = read(fd, buf, sizeof(buf) - 1);
        if (k < 0)
                return -errno;
        buf[k] = '\0';
        char *end = NULL;
        long v = strtol(buf, &end, 10);
        if (end == buf || (*end && *end != '\n') || v < PORTS_BASE || v >= PORTS_BASE + PORTS_SPAN)
                return -EBADMSG;
        *ret = (uint16_t)v;
        return 0;
}

int ports_assign(const char *state_dir, const char *name, uint16_t *ret)
{
        _cleanup_free_ char *agents = NULL, *dir = NULL, *file = NULL;
        if (asprintf(&agents, "%s/agents", state_dir) < 0 ||
            asprintf(&dir, "%s/%s", agents, name) < 0 || asprintf(&file, "%s/port", dir) < 0)
                return -ENOMEM;
        uint16_t port;
        int r = port_read(file, &port);
        if (r == 0) {
                *ret = port;
                return 0;
        }
        if (r != -ENOENT)
                return r;

        bool taken[PORTS_SPAN] = {false};
        DIR *d = opendir(agents);
        if (d) {
                struct dirent *de;
                while ((de = readdir(d))) {
                        if (de->d_name[0] == '.' || strcmp(de->d_name, name) == 0)
                                continue;
                        char other[4096];
                        snprintf(other, sizeof(other), "%s/%s/port", agents, de->d_name);
                        uint16_t p;
                        if (port_read(other, &p) == 0)
                                taken[p - PORTS_BASE] = true;
                }
                closedir(d);
        } else if (errno != ENOENT)
                return -errno;

        uint32_t start = ports_fnv1a(name) % PORTS_SPAN;
        for (uint32_t i = 0; i < PORTS_SPAN; i++) {
                uint32_t slot = (start + i) % PORTS_SPAN;
                if (taken[slot])
                        continue;
                port = (uint16_t)(PORTS_BASE + slot);
                r = fsutil_mkdir_p(dir, 0750);
                if (r < 0)
                        return r;
                /* write then rename, so a crash never leaves a half-written port file */
                char buf[16];
                int n = snprintf(buf, sizeof(buf), "%u\n", (unsigned)port);
                r = fsutil_write_atomic(file, buf, (size_t)n, 0644);
                if (r < 0)
                        return r;
                *ret = port;
                return 0;
        }
        return -EADDRNOTAVAIL;
}
