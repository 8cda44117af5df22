/* The harness's connection to its agent socket: one connection for many requests (JSON
 * lines, answered in order), re-established with backoff when the daemon goes away, and a
 * request whose answer the broken connection swallowed is sent again. */
#pragma once

#include <jansson.h>
#include <stdint.h>

typedef struct HiveLink HiveLink;

typedef struct HiveLinkOptions {
        const char *path;         /* the socket */
        unsigned backoff_base_ms; /* first delay; 2000 in production (2-4-8-16-30 s) */
        /* How long to keep trying without reaching the daemon: < 0 forever, 0 not at all (the
         * first failure is returned), > 0 that many milliseconds. */
        int64_t give_up_ms;
} HiveLinkOptions;

/* Creates an unconnected link (the first request connects).  Returns 0 or -ENOMEM. */
int hivelink_new(const HiveLinkOptions *o, HiveLink **ret);
HiveLink *hivelink_free(HiveLink *l);

/* Sends req and waits for its answer line, at most answer_timeout_ms (-1: no limit) per
 * attempt.  Connects or reconnects as needed, waiting hivelink_backoff_ms() between failed
 * attempts and logging each retry (warning); if the connection breaks before the answer
 * arrives, the request is sent again on a new connection, so the daemon may see it twice.
 * A verb that a repeat would carry out twice (proto_verb_takes_request_id()) gets a fresh
 * "request_id" unless req has one, the same for every copy sent, so that the daemon answers
 * a copy as it answered the first.
 * Returns 0 and *ret_resp (a new reference; ok may be false: that is the daemon's refusal), or:
 * the last connect error (-ENOENT no socket, -ECONNREFUSED nobody listening, -EACCES, ...)
 * or -ECONNRESET once the link gives up; -ENAMETOOLONG; -ETIMEDOUT (no answer in time; the
 * connection is dropped); -EINTR (interrupted, see hivelink_set_interrupt); -EBADMSG / -EMSGSIZE
 * (the answer is not a JSON object line). */
int hivelink_request(HiveLink *l, const json_t *req, int answer_timeout_ms, json_t **ret_resp);

/* A fresh random request id: 16 bytes from getrandom() as 32 lowercase hex characters and
 * a NUL.  Returns 0, or a negative errno. */
#define HIVELINK_REQUEST_ID_SIZE 33
int hivelink_request_id_new(char ret[static HIVELINK_REQUEST_ID_SIZE]);

/* fd (an eventfd, say; -1 none) interrupts requests: while it is readable, a request returns
 * -EINTR at once, also one waiting for its answer (the connection is then dropped, so the
 * daemon ends a parked recv) or sleeping before a reconnect.  The caller drains it. */
void hivelink_set_interrupt(HiveLink *l, int fd);

/* How many times the link connected after its first connection (for logs and tests). */
unsigned hivelink_reconnects(const HiveLink *l);

/* The delay before retry number attempt (0-based): base, 2 base, 4 base, 8 base, then 15 base
 * (with base 2000: 2-4-8-16-30 s, then 30 s for ever). */
unsigned hivelink_backoff_ms(unsigned base_ms, unsigned attempt);
