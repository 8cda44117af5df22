/* The harness's live event bus: every event gets the next seq, is kept in memory (the last
 * EVBUS_KEEP) for the page's history and SSE stream, and is written best-effort to
 * <state>/hyperhive-events.sqlite (events(id, ts, kind, payload_json), id = seq), so the
 * history and the seq survive a restart.  Thread-safe: the turn loop publishes, the web
 * server's threads read and wait. */
#pragma once

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define EVBUS_KEEP 2000u /* events kept in memory; /events/history serves these */

typedef struct EvBus EvBus;

/* Opens the bus.  db_path NULL: memory only.  A database that cannot be opened or read is
 * logged and the bus runs memory-only (events are never lost for the live stream because a
 * disk is full).  Returns 0 or -ENOMEM. */
int evbus_open(const char *db_path, EvBus **ret);
EvBus *evbus_free(EvBus *b);

/* Publishes one event: kind (turn_start, stream, note, turn_end, status_changed,
 * model_changed, token_usage_changed, turn_state_changed, login, ...) and payload (borrowed;
 * any JSON value, NULL for null).  The event is the object {seq, ts, kind, payload} with ts
 * RFC 3339 UTC with milliseconds.  Returns its seq (> 0), or 0 on allocation failure. */
uint64_t evbus_publish(EvBus *b, const char *kind, const json_t *payload);

/* The seq of the newest event (0: none yet). */
uint64_t evbus_seq(EvBus *b);

/* The kept events with seq > after, oldest first, at most max (the newest max): a new JSON
 * array of event objects, or NULL on allocation failure. */
json_t *evbus_history(EvBus *b, uint64_t after, size_t max);

/* Waits until an event with seq > after exists, the bus is closed, or timeout_ms passed
 * (-1: no limit).  Returns the newest seq (== after on timeout or close). */
uint64_t evbus_wait(EvBus *b, uint64_t after, int timeout_ms);

/* Wakes every waiter for good (shutdown): later evbus_wait() calls return at once. */
void evbus_close(EvBus *b);

/* Whether evbus_close() was called. */
int evbus_closed(EvBus *b);
