/* The durable message broker: messages between agents, the manager and the operator, handed
 * out under leases (at-least-once) and acknowledged by id. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "store.h"

#define BROKER_BODY_MAX   (256 * 1024) /* bytes of one message body */
#define BROKER_RECV_MAX   32           /* messages per recv */
#define BROKER_RECENT_MAX 200

/* Stores a message (a durable write in the open batch).  Returns 0 and *ret_id. */
int broker_send(Store *s, const char *from, const char *to, const char *body, int64_t in_reply_to,
                int64_t *ret_id);

/* Leases up to max available messages of recipient for lease_ms: appends them to arr as
 * {id, from, to, body, sent_at, in_reply_to?} and their ids to ids (malloc'ed, *ret_n).
 * Returns 0. */
int broker_lease(Store *s, const char *recipient, unsigned max, int64_t lease_ms, json_t *arr,
                 int64_t **ret_ids, size_t *ret_n);

/* Whether recipient has a message available now (not acked, not under a live lease).
 * Returns 1, 0, or a negative errno. */
int broker_available(Store *s, const char *recipient);

/* Acknowledges ids of recipient's messages.  Returns the number newly acked (ids that are
 * not the recipient's, or already acked, are skipped). */
int broker_ack(Store *s, const char *recipient, const int64_t *ids, size_t n);

/* Ends the leases of ids (not acked) so they are offered again.  Returns 0. */
int broker_unlease(Store *s, const int64_t *ids, size_t n);

/* Ends recipient's own live leases, on ids (ids NULL: all of them), so the messages are
 * offered again at once.  Returns how many leases ended (ids that are not recipient's,
 * acked, or not leased are skipped, as broker_ack skips them), or a negative errno. */
int broker_release(Store *s, const char *recipient, const int64_t *ids, size_t n);

/* Ends every lease (at start-up: no connection survived the restart).  Returns the count. */
int broker_clear_leases(Store *s);

/* Messages waiting for recipient (not acked): total and currently leased. */
int broker_depth(Store *s, const char *recipient, int64_t *ret_total, int64_t *ret_leased);

/* The last limit messages to or from who, newest last, into arr. */
int broker_recent(Store *s, const char *who, unsigned limit, json_t *arr);

/* Up to limit unacked messages of recipient, oldest first, into arr (no lease taken). */
int broker_unacked(Store *s, const char *recipient, unsigned limit, json_t *arr);

/* Deletes up to batch acked messages acked before cutoff_ms.  Returns the count. */
int broker_vacuum(Store *s, int64_t cutoff_ms, unsigned batch);
