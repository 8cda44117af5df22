/* A connection on one of the daemon's JSON-line sockets: framed reads, buffered writes,
 * deferred close.  Used by host.sock now and by the agent sockets later. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loop.h"

typedef struct Conn Conn;

typedef struct ConnOps {
        /* One complete line (NUL-terminated, without '\n'; valid during the call). */
        void (*on_line)(Conn *c, char *line, size_t len, void *userdata);
        /* A framing error: -EMSGSIZE (line over the limit) or -EBADMSG (end of file in the
         * middle of a line).  The handler may queue a reply; the connection is then closed
         * once the reply is written.  May be NULL. */
        void (*on_error)(Conn *c, int error, void *userdata);
        /* The connection is gone; called exactly once.  May be NULL. */
        void (*on_close)(Conn *c, void *userdata);
} ConnOps;

/* Takes ownership of fd (made non-blocking) and starts reading.  Returns 0 and *ret. */
int conn_new(Loop *l, int fd, size_t max_line, const ConnOps *ops, void *userdata, Conn **ret);

/* Queues data and writes what the socket takes now.  Returns 0 or a negative errno (the
 * connection is then closing). */
int conn_send(Conn *c, const char *data, size_t len);
/* Stops reading requests; lines already buffered are dropped. */
void conn_stop_reading(Conn *c);
/* Holds further lines (buffered ones included) until conn_resume(). */
void conn_pause(Conn *c);
/* Delivers held lines again: buffered ones from a deferred callback, then new input. */
void conn_resume(Conn *c);
/* Closes once every queued byte is written (at once if none is). */
void conn_close_after_flush(Conn *c);
/* Closes now, dropping queued output. */
void conn_close(Conn *c);

size_t conn_output_pending(const Conn *c);
uint64_t conn_last_activity(const Conn *c); /* CLOCK_MONOTONIC µs */
int conn_fd(const Conn *c);
