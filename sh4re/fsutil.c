/* Directory creation and removal, atomic file writes, program lookup. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "fsutil.h"

int fsutil_mkdir_p(const char *path, mode_t mode)
{
        _cleanup_free_ char *p = strdup(path);
        if (!p)
                return -ENOMEM;
        for (char *s = p + 1; *s; s++) {
                if (*s != '/')
                        continue;
                *s = '\0';
                if (mkdir(p, 0755) < 0 && errno != EEXIST)
                        return -errno;
                *s = '/';
        }
        if (mkdir(p, mode) < 0) {
                if (errno != EEXIST)
                        return -errno;
                struct stat st;
                if (stat(p, &st) < 0)
                        return -errno;
                if (!S_ISDIR(st.st_mode))
                        return -ENOTDIR;
        }
        return 0;
}

/* Empties the directory open as dfd (which it closes), on device dev only. */
static int rm_children(int dfd, dev_t dev)
{
        DIR *d = fdopendir(dfd);
        if (!d) {
                int r = -errno;
                close(dfd);
                return r;
        }
        int r = 0;
        struct dirent *e;
        while ((e = readdir(d))) {
                if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                        continue;
                struct stat st;
                if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                        if (errno != ENOENT && r == 0)
                                r = -errno;
                        continue;
                }
                if (S_ISDIR(st.st_mode)) {
                        if (st.st_dev != dev) {
                                r = r ? r : -EXDEV; /* a mount point: leave it alone */
                                continue;
                        }
                        int sub = openat(dirfd(d), e->d_name,
                                         O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        if (sub < 0) {
                                r = r ? r : -errno;
                                continue;
                        }
                        int k = rm_children(sub, dev);
                        if (k < 0 && r == 0)
                                r = k;
                        if (unlinkat(dirfd(d), e->d_name, AT_REMOVEDIR) < 0 && errno != ENOENT &&
                            r == 0)
                                r = -errno;
                } else if (unlinkat(dirfd(d), e->d_name, 0) < 0 && errno != ENOENT && r == 0)
                        r = -errno;
        }
        closedir(d);
        return r;
}

int fsutil_rm_rf(const char *path)
{
        struct stat st;
        if (lstat(path, &st) < 0)
                return errno == ENOENT ? 0 : -errno;
        if (!S_ISDIR(st.st_mode))
                return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
        int dfd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dfd < 0)
                return -errno;
        int r = rm_children(dfd, st.st_dev);
        if (r < 0)
                return r;
        return rmdir(path) < 0 && errno != ENOENT ? -errno : 0;
}

char *fsutil_find_program(const char *prog)
{
        if (strchr(prog, '/'))
                return access(prog, X_OK) == 0 ? strdup(prog) : NULL;
        const char *path = getenv("PATH");
        if (!path || !*path)
                path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        _cleanup_free_ char *copy = strdup(path);
        if (!copy)
                return NULL;
        char *save = NULL;
        for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
                char *full = NULL;
                if (asprintf(&full, "%s/%s", dir, prog) < 0)
                        return NULL;
                if (access(full, X_OK) == 0)
                        return full;
                free(full);
        }
        return NULL;
}

int fsutil_write_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
        const char *slash = strrchr(path, '/');
        _cleanup_free_ char *tmp = NULL;
        int k = slash ? asprintf(&tmp, "%.*s/.%s.XXXXXX", (int)(slash - path), path, slash + 1)
                      : asprintf(&tmp, ".%s.XXXXXX", path);
        if (k < 0)
                return -ENOMEM;
        _cleanup_close_ int fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return -errno;
        int r = 0;
        if (fchmod(fd, mode) < 0)
                r = -errno;
        for (size_t off = 0; r == 0 && off < len;) {
                ssize_t n = write(fd, (const char *)data + off, len - off);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        r = -errno;
                else if (n == 0)
                        r = -EIO;
                else
                        off += (size_t)n;
        }
        if (r == 0 && fsync(fd) < 0)
                r = -errno;
        if (r == 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0)
                (void)unlink(tmp);
        return r;
}
