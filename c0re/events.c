/* Event ring and subscriber list. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events.h"

typedef struct Subscriber {
        int handle;
        EventsFn fn;
        void *userdata;
} Subscriber;

/* One stored event: kept as published; events_since() builds {seq, kind, ...payload}. */
typedef struct Event {
        char kind[EVENTS_KIND_MAX + 1];
        json_t *payload;
} Event;

struct Events {
        Event ring[EVENTS_RING_SIZE];
        uint64_t seq; /* of the newest event; 0 = none yet */
        Subscriber *subs;
        size_t n_subs, cap_subs;
        int next_handle;
};

int events_new(Events **ret)
{
        Events *e = calloc(1, sizeof(*e));
        if (!e)
                return -ENOMEM;
        e->next_handle = 1;
        *ret = e;
        return 0;
}

Events *events_free(Events *e)
{
        if (!e)
                return NULL;
        for (size_t i = 0; i < EVENTS_RING_SIZE; i++)
                json_decref(e->ring[i].payload);
        free(e->subs);
        free(e);
        return NULL;
}

uint64_t events_publish(Events *e, const char *kind, json_t *payload)
{
        if (!payload && !(payload = json_object()))
                return 0;
        e->seq++;
        Event *ev = &e->ring[e->seq % EVENTS_RING_SIZE];
        json_decref(ev->payload);
        snprintf(ev->kind, sizeof(ev->kind), "%s", kind);
        ev->payload = payload;
        /* Subscribers may unsubscribe themselves while we iterate: walk by index, backwards. */
        for (size_t i = e->n_subs; i-- > 0;)
                if (i < e->n_subs)
                        e->subs[i].fn(kind, payload, e->seq, e->subs[i].userdata);
        return e->seq;
}

uint64_t events_last_seq(const Events *e)
{
        return e->seq;
}

int events_since(const Events *e, uint64_t after, json_t *arr)
{
        uint64_t first = e->seq >= EVENTS_RING_SIZE ? e->seq - EVENTS_RING_SIZE + 1 : 1;
        if (after + 1 > first)
                first = after + 1;
        int n = 0;
        for (uint64_t s = first; s <= e->seq; s++) {
                const Event *ev = &e->ring[s % EVENTS_RING_SIZE];
                json_t *o = json_pack("{s:I, s:s}", "seq", (json_int_t)s, "kind", ev->kind);
                const char *key;
                json_t *v;
                if (o) {
                        json_object_foreach(ev->payload, key, v)
                        {
                                if (strcmp(key, "seq") != 0 && strcmp(key, "kind") != 0)
                                        json_object_set(o, key, v); /* seq and kind stay ours */
                        }
                }
                if (o && json_array_append_new(arr, o) == 0)
                        n++;
        }
        return n;
}

int events_subscribe(Events *e, EventsFn fn, void *userdata)
{
        if (e->n_subs == e->cap_subs) {
                size_t cap = e->cap_subs ? e->cap_subs * 2 : 8;
                Subscriber *s = realloc(e->subs, cap * sizeof(*s));
                if (!s)
                        return -ENOMEM;
                e->subs = s;
                e->cap_subs = cap;
        }
        int h = e->next_handle++;
        e->subs[e->n_subs++] = (Subscriber){h, fn, userdata};
        return h;
}

void events_unsubscribe(Events *e, int handle)
{
        for (size_t i = 0; i < e->n_subs; i++)
                if (e->subs[i].handle == handle) {
                        e->subs[i] = e->subs[--e->n_subs];
                        return;
                }
}
