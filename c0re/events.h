/* The event bus: an in-memory ring of recent events, each with a monotonic seq, and the
 * subscribers that want to hear of new ones (subscribe_agent_status now, the dashboard's
 * SSE later).  Main-loop only. */
#pragma once

#include <jansson.h>
#include <stdint.h>

typedef struct Events Events;

#define EVENTS_RING_SIZE 4096
#define EVENTS_KIND_MAX  31 /* a longer kind is cut */

/* A subscriber is called for every published event; it must not publish. */
typedef void (*EventsFn)(const char *kind, const json_t *payload, uint64_t seq, void *userdata);

int events_new(Events **ret);
Events *events_free(Events *e);

/* Appends {seq, kind, ...payload} to the ring and tells every subscriber (with payload; an
 * empty object when NULL).  Takes payload.  Returns the event's seq, or 0 when out of
 * memory. */
uint64_t events_publish(Events *e, const char *kind, json_t *payload);
uint64_t events_last_seq(const Events *e);

/* Events with seq > after, oldest first, into arr (as stored: {seq, kind, …}).  Returns the
 * count; events older than the ring are gone. */
int events_since(const Events *e, uint64_t after, json_t *arr);

/* Returns a subscription handle (> 0) or a negative errno. */
int events_subscribe(Events *e, EventsFn fn, void *userdata);
void events_unsubscribe(Events *e, int handle);
