/* Line framer: a growable buffer that never holds a line longer than its limit. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frame.h"

void framer_init(LineFramer *f, size_t max_line)
{
        *f = (LineFramer){.max_line = max_line};
}

void framer_done(LineFramer *f)
{
        free(f->buf);
        framer_init(f, f->max_line);
}

/* Makes room for n more bytes after len, compacting consumed bytes first. */
static int framer_reserve(LineFramer *f, size_t n)
{
        if (f->start > 0 && (f->start == f->len || f->cap - f->len < n)) {
                memmove(f->buf, f->buf + f->start, f->len - f->start);
                f->len -= f->start;
                f->start = 0;
        }
        if (f->cap - f->len >= n)
                return 0;
        size_t want = f->cap ? f->cap : 4096;
        while (want - f->len < n)
                want *= 2;
        char *p = realloc(f->buf, want);
        if (!p)
                return -ENOMEM;
        f->buf = p;
        f->cap = want;
        return 0;
}

/* Checks n bytes at p, which are to follow the buffered data, against the line limit.  Returns
 * 0 and the new partial-line length in *ret_tail, or -EMSGSIZE (and the framer fails). */
static int framer_check(LineFramer *f, const char *p, size_t n, size_t *ret_tail)
{
        size_t left = n;
        size_t tail = f->tail;

        for (;;) {
                const char *nl = memchr(p, '\n', left);
                size_t seg = nl ? (size_t)(nl - p) : left;
                if (tail + seg > f->max_line) {
                        f->failed = true;
                        return -EMSGSIZE;
                }
                if (!nl) {
                        tail += seg;
                        break;
                }
                tail = 0;
                p = nl + 1;
                left -= seg + 1;
        }
        *ret_tail = tail;
        return 0;
}

/* Validates n bytes just written at buf+len and accepts them. */
static int framer_commit(LineFramer *f, size_t n)
{
        size_t tail;
        int r = framer_check(f, f->buf + f->len, n, &tail);
        if (r < 0)
                return r;
        f->tail = tail;
        f->len += n;
        return 0;
}

int framer_push(LineFramer *f, const void *data, size_t n)
{
        if (f->failed)
                return -EMSGSIZE;
        if (n == 0)
                return 0;
        /* Check before growing the buffer, so that an oversize push allocates nothing. */
        size_t tail;
        int r = framer_check(f, data, n, &tail);
        if (r < 0)
                return r;
        r = framer_reserve(f, n);
        if (r < 0)
                return r;
        memcpy(f->buf + f->len, data, n);
        f->tail = tail;
        f->len += n;
        return 0;
}

ssize_t framer_read(LineFramer *f, int fd)
{
        if (f->failed)
                return -EMSGSIZE;
        int r = framer_reserve(f, FRAMER_READ_CHUNK);
        if (r < 0)
                return r;
        ssize_t k = read(fd, f->buf + f->len, FRAMER_READ_CHUNK);
        if (k < 0)
                return -errno;
        if (k == 0)
                return 0;
        r = framer_commit(f, (size_t)k);
        if (r < 0)
                return r;
        return k;
}

int framer_pop(LineFramer *f, char **ret_line, size_t *ret_len)
{
        if (f->failed)
                return -EMSGSIZE;
        size_t avail = f->len - f->start;
        if (avail <= f->tail)
                return 0; /* only the partial line, if any */
        char *line = f->buf + f->start;
        char *nl = memchr(line, '\n', avail);
        /* avail > tail guarantees a newline */
        *nl = '\0';
        *ret_line = line;
        *ret_len = (size_t)(nl - line);
        f->start += (size_t)(nl - line) + 1;
        return 1;
}

size_t framer_pending(const LineFramer *f)
{
        return f->tail;
}
