/* Helpers shared by the unit tests. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

char *tu_mkdtemp(void)
{
        const char *tmp = getenv("TMPDIR");
        char *path = NULL;
        if (asprintf(&path, "%s/hive-unit-XXXXXX", tmp && *tmp ? tmp : "/tmp") < 0)
                abort();
        if (!mkdtemp(path)) {
                perror("mkdtemp");
                abort();
        }
        return path;
}

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
        int r = type == FTW_DP ? rmdir(path) : unlink(path);
        return r < 0 && errno != ENOENT ? -errno : 0;
}

int tu_rm_rf(const char *path)
{
        int r = nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        if (r < 0)
                return -errno;
        return r;
}

char *tu_read_file(const char *path, size_t *ret_len)
{
        FILE *f = fopen(path, "re");
        if (!f)
                return NULL;
        char *buf = NULL;
        size_t len = 0, cap = 0;
        for (;;) {
                if (cap - len < 4096) {
                        char *p = realloc(buf, cap + 65536);
                        if (!p) {
                                free(buf);
                                fclose(f);
                                errno = ENOMEM;
                                return NULL;
                        }
                        buf = p;
                        cap += 65536;
                }
                size_t k = fread(buf + len, 1, cap - len - 1, f);
                len += k;
                if (k == 0)
                        break;
        }
        int err = ferror(f);
        fclose(f);
        if (err) {
                free(buf);
                errno = EIO;
                return NULL;
        }
        buf[len] = '\0';
        if (ret_len)
                *ret_len = len;
        return buf;
}

char *tu_fixture_path(const char *name)
{
        const char *dir = getenv("FIXTURES");
        char *path = NULL;
        if (asprintf(&path, "%s/%s", dir && *dir ? dir : HIVE_FIXTURES_DIR, name) < 0)
                abort();
        return path;
}

int tu_write_file(const char *path, const char *content)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        size_t n = strlen(content);
        ssize_t k = write(fd, content, n);
        int r = k < 0 ? -errno : (size_t)k != n ? -EIO : 0;
        close(fd);
        return r;
}
