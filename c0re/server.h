/* A listening JSON-line unix socket with its connections: host.sock now, the agent and
 * manager sockets later.  Requests go through a verb table (dispatch.c). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "dispatch.h"
#include "loop.h"

typedef struct Server Server;
typedef struct ServerConn ServerConn;

/* The gate every answer of the daemon's sockets passes (group commit): an answer made while a
 * write batch is open waits for its commit, and one that follows durable writes (made since
 * its request came in) waits until they are flushed to disk as well. */
typedef struct ServerGate ServerGate;
typedef struct ServerGateOps {
        bool (*batch_open)(void *userdata);
        uint64_t (*durable_mark)(void *userdata); /* durable writes made so far */
        uint64_t (*flushed_mark)(void *userdata); /* of those, how many are on disk */
} ServerGateOps;
ServerGate *server_gate_new(const ServerGateOps *ops, void *userdata);
/* Frees the gate; the servers that use it must be freed first.  Returns NULL. */
ServerGate *server_gate_free(ServerGate *g);
/* The batch committed (or failed, commit_result < 0: the waiting answers become a refusal
 * saying nothing was changed). */
void server_gate_committed(ServerGate *g, int commit_result);
/* A flush finished: writes the answers it covered (as a refusal if flush_result < 0). */
void server_gate_flushed(ServerGate *g, int flush_result);

/* Called exactly once per registration: dropped is true when the connection closed before
 * the answer it guards was written, false when it was written (or replaced).  Frees data. */
typedef void (*ServerDropFn)(void *data, bool dropped);

typedef struct ServerOptions {
        const VerbTable *table;
        void *userdata; /* passed to the handlers as ctx->userdata */
        bool one_shot;  /* one request per connection (host.sock) */
        mode_t mode;    /* socket file mode */
        gid_t gid;      /* group of the socket file; (gid_t)-1 = leave it */
        unsigned max_clients;
        unsigned idle_timeout_sec; /* 0: never */
        ServerGate *gate;          /* NULL: answers go out at once */
        /* Decides whether a peer may talk to this socket (SO_PEERCRED); NULL = everyone
         * who can open the file. */
        bool (*peer_allowed)(uid_t uid, gid_t gid, void *userdata);
} ServerOptions;

/* Binds path (which must not exist: the caller removes a stale file) and starts accepting.
 * Returns 0 and *ret, or a negative errno after logging. */
int server_new(Loop *l, const char *path, const ServerOptions *opts, Server **ret);
/* Closes every connection and the socket, and removes the socket file if it is still ours.
 * Returns NULL. */
Server *server_free(Server *s);

unsigned server_n_connections(const Server *s);

/* Answers the request that a handler parked on sc (ctx->origin); takes resp. */
void server_conn_reply(ServerConn *sc, json_t *resp);
/* The same for an answer that only reads (a recv woken by a send): it waits for the commit
 * but not for the flush of durable writes others made meanwhile. */
void server_conn_reply_unflushed(ServerConn *sc, json_t *resp);
/* The answer slot of a request a handler parked, which outlives the client going away: the
 * handler makes one before returning DISPATCH_PARKED, and later replies through it (the
 * answer is dropped if the client left).  NULL for a NULL sc (no connection to answer on). */
typedef struct ServerWaiter ServerWaiter;
ServerWaiter *server_waiter_new(ServerConn *sc);
/* Answers (taking resp) and frees w. */
void server_waiter_reply(ServerWaiter *w, json_t *resp);
/* The handler answered at once after all (a refusal): frees w's half. */
void server_waiter_cancel(ServerWaiter *w);

/* Guards the answer now being produced on sc (see ServerDropFn). */
void server_conn_on_drop(ServerConn *sc, ServerDropFn fn, void *data);
/* Turns sc into a push stream after its answer: it stays open, reads nothing more, and
 * fn(data, true) runs when it closes. */
void server_conn_set_stream(ServerConn *sc, ServerDropFn fn, void *data);
/* Pushes one line on a stream.  -EAGAIN (dropped) when the reader is too far behind. */
int server_conn_push(ServerConn *sc, const char *line, size_t len);
#define SERVER_PUSH_BACKLOG_MAX (256u * 1024u)

/* The endpoint's userdata of the connection's server. */
void *server_conn_userdata(ServerConn *sc);
