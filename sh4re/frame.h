/* JSON-line framing over stream sockets.
 *
 * Bytes go in (framer_push() or framer_read()); complete lines come out (framer_pop()).  A
 * line longer than max_line bytes (without its '\n') is refused with -EMSGSIZE as soon as
 * that is known, before it is buffered whole; the framer then stays failed. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define HIVE_LINE_MAX     (1024u * 1024u) /* protocol limit on one request line */
#define FRAMER_READ_CHUNK (64u * 1024u)

typedef struct LineFramer {
        char *buf;
        size_t start; /* first unconsumed byte */
        size_t len;   /* end of buffered data */
        size_t cap;
        size_t tail;     /* bytes after the last '\n' in the buffer (the pending partial line) */
        size_t max_line; /* longest accepted line, excluding '\n' */
        bool failed;
} LineFramer;

void framer_init(LineFramer *f, size_t max_line);
/* Frees the buffer; the framer may be framer_init()ed again. */
void framer_done(LineFramer *f);

/* Appends n bytes.  0 on success; -EMSGSIZE if a line in them is (or would become) longer
 * than max_line; -ENOMEM. */
int framer_push(LineFramer *f, const void *data, size_t n);

/* Reads once from fd (up to FRAMER_READ_CHUNK bytes).  Returns the number of bytes read, 0
 * at end of file, or a negative errno (-EAGAIN when nothing is available, -EMSGSIZE as in
 * framer_push()). */
ssize_t framer_read(LineFramer *f, int fd);

/* Takes the next complete line.  Returns 1 and points *ret_line at it (NUL-terminated, '\n'
 * removed, owned by the framer and valid until the next call on f), 0 when no complete line
 * is buffered, or -EMSGSIZE if the framer has failed. */
int framer_pop(LineFramer *f, char **ret_line, size_t *ret_len);

/* Bytes of a started but unfinished line.  Non-zero at end of file means EOF mid-line. */
size_t framer_pending(const LineFramer *f);
