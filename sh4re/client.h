/* Client side of the JSON-line sockets: connect, send one request, read response lines. */
#pragma once

#include <jansson.h>

#include "frame.h"

#define CLIENT_RESPONSE_MAX (64u * 1024u * 1024u)

/* Connects a SOCK_STREAM|SOCK_CLOEXEC socket to the unix socket at path.  Returns 0 and *ret_fd,
 * -ENOENT (no socket file), -ECONNREFUSED (a file but nobody listening), -EACCES,
 * -ENAMETOOLONG, or another negative errno. */
int client_connect(const char *path, int *ret_fd);

/* Writes j as one line to fd (MSG_NOSIGNAL). */
int client_send(int fd, const json_t *j);

/* Reads the next line from fd through f, waiting at most timeout_ms (-1: forever) and parses
 * it.  Returns 0 and *ret (a new reference), -ETIMEDOUT, -ECONNRESET (closed before a full
 * line), -EBADMSG (not a JSON object), -EMSGSIZE, or another negative errno. */
int client_recv(int fd, LineFramer *f, int timeout_ms, json_t **ret);

/* One request, one response: connect, send, read, close. */
int client_request(const char *path, const json_t *req, int timeout_ms, json_t **ret_resp);
