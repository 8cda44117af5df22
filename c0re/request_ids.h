/* Client request ids: the answer the daemon gave to (agent, request_id), kept for a day so
 * that a request the client sends again after a lost answer is answered again instead of
 * being carried out twice.  Rows are written in the same write batch as the request's own
 * writes. */
#pragma once

#include <stdint.h>

#include "store.h"

#define REQUEST_IDS_KEEP_MS (24ll * 3600 * 1000) /* how long an answer is kept */

/* Looks up agent's request_id.  Returns 1 with *ret_cmd and *ret_answer (malloc'ed; the verb
 * and the answer line without its newline), 0 when it is unknown, or a negative errno. */
int request_ids_get(Store *s, const char *agent, const char *request_id, char **ret_cmd,
                    char **ret_answer);

/* Records the answer to agent's request_id (a durable write in the open batch).  Returns 0,
 * -EEXIST when the id is recorded already, or another negative errno. */
int request_ids_put(Store *s, const char *agent, const char *request_id, const char *cmd,
                    const char *answer);

/* Deletes up to batch rows recorded before cutoff_ms.  Returns the count. */
int request_ids_vacuum(Store *s, int64_t cutoff_ms, unsigned batch);
