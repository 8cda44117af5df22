/* Unit tests of the event bus (c0re/events.c): seq numbers, the ring of recent events and its
 * wraparound, and subscribers (including ones that unsubscribe from their own callback). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <jansson.h>

#include "events.h"

static int setup(void **state)
{
        Events *e = NULL;
        assert_int_equal(events_new(&e), 0);
        assert_non_null(e);
        *state = e;
        return 0;
}

static int teardown(void **state)
{
        assert_null(events_free(*state));
        return 0;
}

#define MAX_SEEN 64

/* What one subscriber heard. */
typedef struct Seen {
        size_t n;
        char kind[MAX_SEEN][32];
        json_t *payload[MAX_SEEN]; /* copies */
        uint64_t seq[MAX_SEEN];
        /* self-unsubscribe after this many calls (0: never) */
        size_t unsubscribe_after;
        Events *events;
        int handle;
} Seen;

static void seen_done(Seen *s)
{
        for (size_t i = 0; i < s->n && i < MAX_SEEN; i++)
                json_decref(s->payload[i]);
        s->n = 0;
}

static void on_event(const char *kind, const json_t *payload, uint64_t seq, void *userdata)
{
        Seen *s = userdata;
        if (s->n < MAX_SEEN) {
                snprintf(s->kind[s->n], sizeof(s->kind[s->n]), "%s", kind);
                s->payload[s->n] = payload ? json_deep_copy(payload) : NULL;
                s->seq[s->n] = seq;
        }
        s->n++;
        if (s->unsubscribe_after && s->n == s->unsubscribe_after)
                events_unsubscribe(s->events, s->handle);
}

static int subscribe(Events *e, Seen *s)
{
        s->events = e;
        s->handle = events_subscribe(e, on_event, s);
        assert_true(s->handle > 0);
        return s->handle;
}

/* The stored event must be exactly {seq, kind, ...extra keys}. */
static void check_event(json_t *ev, uint64_t seq, const char *kind, size_t extra_keys)
{
        assert_true(json_is_object(ev));
        assert_int_equal(json_object_size(ev), 2 + extra_keys);
        assert_true(json_is_integer(json_object_get(ev, "seq")));
        assert_int_equal(json_integer_value(json_object_get(ev, "seq")), seq);
        assert_string_equal(json_string_value(json_object_get(ev, "kind")), kind);
}

static uint64_t publish_n(Events *e, const char *kind, int n)
{
        uint64_t last = 0;
        for (int i = 0; i < n; i++) {
                last = events_publish(e, kind, json_pack("{s:i}", "i", i));
                assert_true(last > 0);
        }
        return last;
}

/* ---- seq ---- */

static void test_seq_starts_at_one(void **state)
{
        Events *e = *state;
        assert_int_equal(events_last_seq(e), 0);
        json_t *arr = json_array();
        assert_int_equal(events_since(e, 0, arr), 0);
        assert_int_equal(json_array_size(arr), 0);
        json_decref(arr);

        assert_int_equal(events_publish(e, "a", json_object()), 1);
        assert_int_equal(events_last_seq(e), 1);
        assert_int_equal(events_publish(e, "b", json_object()), 2);
        assert_int_equal(events_publish(e, "a", json_object()), 3);
        assert_int_equal(events_last_seq(e), 3);
}

/* Each Events has its own seq. */
static void test_seq_per_bus(void **state)
{
        Events *e = *state;
        Events *other = NULL;
        assert_int_equal(events_new(&other), 0);
        assert_int_equal(events_publish(e, "a", NULL), 1);
        assert_int_equal(events_publish(e, "a", NULL), 2);
        assert_int_equal(events_publish(other, "a", NULL), 1);
        assert_int_equal(events_last_seq(other), 1);
        assert_int_equal(events_last_seq(e), 2);
        assert_null(events_free(other));
        assert_null(events_free(NULL));
}

/* ---- since ---- */

static void test_since(void **state)
{
        Events *e = *state;
        assert_int_equal(events_publish(e, "agent_status_changed",
                                        json_pack("{s:s, s:i}", "name", "alice", "n", 7)),
                         1);
        assert_int_equal(events_publish(e, "question", json_pack("{s:[i, i]}", "ids", 1, 2)), 2);
        assert_int_equal(events_publish(e, "bare", json_object()), 3);

        json_t *arr = json_pack("[s]", "kept");
        assert_int_equal(events_since(e, 0, arr), 3);
        assert_int_equal(json_array_size(arr), 4);
        assert_string_equal(json_string_value(json_array_get(arr, 0)), "kept");
        json_t *ev = json_array_get(arr, 1);
        check_event(ev, 1, "agent_status_changed", 2);
        assert_string_equal(json_string_value(json_object_get(ev, "name")), "alice");
        assert_int_equal(json_integer_value(json_object_get(ev, "n")), 7);
        ev = json_array_get(arr, 2);
        check_event(ev, 2, "question", 1);
        json_t *want = json_pack("[i, i]", 1, 2);
        assert_true(json_equal(json_object_get(ev, "ids"), want));
        json_decref(want);
        check_event(json_array_get(arr, 3), 3, "bare", 0);
        json_decref(arr);

        arr = json_array();
        assert_int_equal(events_since(e, 1, arr), 2);
        check_event(json_array_get(arr, 0), 2, "question", 1);
        check_event(json_array_get(arr, 1), 3, "bare", 0);
        json_decref(arr);

        arr = json_array();
        assert_int_equal(events_since(e, 2, arr), 1);
        check_event(json_array_get(arr, 0), 3, "bare", 0);
        json_decref(arr);

        /* Nothing after the newest, nor after a seq from the future. */
        arr = json_array();
        assert_int_equal(events_since(e, 3, arr), 0);
        assert_int_equal(events_since(e, 1000, arr), 0);
        assert_int_equal(events_since(e, UINT64_MAX - 1, arr), 0);
        assert_int_equal(json_array_size(arr), 0);
        json_decref(arr);
}

static void test_ring_wraparound(void **state)
{
        Events *e = *state;
        const int extra = 10;
        uint64_t last = publish_n(e, "tick", EVENTS_RING_SIZE + extra);
        assert_int_equal(last, EVENTS_RING_SIZE + extra);
        assert_int_equal(events_last_seq(e), last);

        json_t *arr = json_array();
        assert_int_equal(events_since(e, 0, arr), EVENTS_RING_SIZE);
        assert_int_equal(json_array_size(arr), EVENTS_RING_SIZE);
        for (size_t i = 0; i < EVENTS_RING_SIZE; i++) {
                json_t *ev = json_array_get(arr, i);
                check_event(ev, extra + 1 + i, "tick", 1);
                assert_int_equal(json_integer_value(json_object_get(ev, "i")), extra + i);
        }
        json_decref(arr);

        /* An after inside the lost range gives the whole ring; one inside it, the rest. */
        arr = json_array();
        assert_int_equal(events_since(e, extra - 1, arr), EVENTS_RING_SIZE);
        json_decref(arr);
        arr = json_array();
        assert_int_equal(events_since(e, last - 5, arr), 5);
        check_event(json_array_get(arr, 0), last - 4, "tick", 1);
        check_event(json_array_get(arr, 4), last, "tick", 1);
        json_decref(arr);

        /* Exactly one ring's worth is kept whole. */
        Events *f = NULL;
        assert_int_equal(events_new(&f), 0);
        publish_n(f, "tock", EVENTS_RING_SIZE);
        arr = json_array();
        assert_int_equal(events_since(f, 0, arr), EVENTS_RING_SIZE);
        check_event(json_array_get(arr, 0), 1, "tock", 1);
        check_event(json_array_get(arr, EVENTS_RING_SIZE - 1), EVENTS_RING_SIZE, "tock", 1);
        json_decref(arr);
        assert_null(events_free(f));
}

/* ---- subscribers ---- */

static void test_subscribers(void **state)
{
        Events *e = *state;
        assert_int_equal(events_publish(e, "before", json_object()), 1);
        Seen a = {0}, b = {0};
        int ha = subscribe(e, &a);
        int hb = subscribe(e, &b);
        assert_true(ha != hb);

        json_t *payload = json_pack("{s:s}", "name", "alice");
        json_t *want = json_deep_copy(payload);
        assert_int_equal(events_publish(e, "agent_status_changed", payload), 2);
        assert_int_equal(events_publish(e, "other", json_pack("{s:i}", "x", 1)), 3);
        for (int k = 0; k < 2; k++) {
                Seen *s = k ? &b : &a;
                assert_int_equal(s->n, 2); /* nothing from before subscribing */
                assert_string_equal(s->kind[0], "agent_status_changed");
                assert_int_equal(s->seq[0], 2);
                assert_true(json_equal(s->payload[0], want));
                assert_string_equal(s->kind[1], "other");
                assert_int_equal(s->seq[1], 3);
                assert_int_equal(json_integer_value(json_object_get(s->payload[1], "x")), 1);
        }
        json_decref(want);

        events_unsubscribe(e, ha);
        assert_int_equal(events_publish(e, "third", NULL), 4);
        assert_int_equal(a.n, 2);
        assert_int_equal(b.n, 3);
        assert_string_equal(b.kind[2], "third");
        assert_int_equal(b.seq[2], 4);

        /* Unknown and repeated handles are ignored. */
        events_unsubscribe(e, ha);
        events_unsubscribe(e, 12345);
        events_unsubscribe(e, -1);
        assert_int_equal(events_publish(e, "fourth", json_object()), 5);
        assert_int_equal(b.n, 4);

        events_unsubscribe(e, hb);
        assert_int_equal(events_publish(e, "fifth", json_object()), 6);
        assert_int_equal(a.n, 2);
        assert_int_equal(b.n, 4);
        seen_done(&a);
        seen_done(&b);

        /* Handles are not reused. */
        Seen c = {0};
        int hc = subscribe(e, &c);
        assert_true(hc != ha && hc != hb);
        events_unsubscribe(e, hc);
}

/* Many subscribers (beyond the initial capacity), every one called once per event. */
static void test_many_subscribers(void **state)
{
        Events *e = *state;
        enum { N = 20 };
        Seen s[N];
        memset(s, 0, sizeof(s));
        for (int i = 0; i < N; i++)
                (void)subscribe(e, &s[i]);
        assert_int_equal(events_publish(e, "k", json_object()), 1);
        for (int i = 0; i < N; i++)
                assert_int_equal(s[i].n, 1);
        for (int i = 0; i < N; i += 2)
                events_unsubscribe(e, s[i].handle);
        assert_int_equal(events_publish(e, "k", json_object()), 2);
        for (int i = 0; i < N; i++) {
                assert_int_equal(s[i].n, i % 2 ? 2 : 1);
                seen_done(&s[i]);
        }
}

/* A subscriber that unsubscribes itself from its callback: it hears that event and no more,
 * and the others (before and after it in the list) still hear every event once. */
static void test_unsubscribe_in_callback(void **state)
{
        Events *e = *state;
        for (int pos = 0; pos < 3; pos++) {
                Seen s[3];
                memset(s, 0, sizeof(s));
                s[pos].unsubscribe_after = 1;
                for (int i = 0; i < 3; i++)
                        (void)subscribe(e, &s[i]);
                uint64_t seq = events_publish(e, "first", json_pack("{s:i}", "pos", pos));
                assert_true(seq > 0);
                for (int i = 0; i < 3; i++) {
                        assert_int_equal(s[i].n, 1);
                        assert_string_equal(s[i].kind[0], "first");
                        assert_int_equal(s[i].seq[0], seq);
                }
                assert_int_equal(events_publish(e, "second", json_object()), seq + 1);
                assert_int_equal(events_publish(e, "third", json_object()), seq + 2);
                for (int i = 0; i < 3; i++) {
                        assert_int_equal(s[i].n, i == pos ? 1 : 3);
                        if (i != pos) {
                                assert_string_equal(s[i].kind[1], "second");
                                assert_string_equal(s[i].kind[2], "third");
                        }
                        events_unsubscribe(e, s[i].handle);
                        seen_done(&s[i]);
                }
        }

        /* Every subscriber leaves during the same event. */
        Seen s[4];
        memset(s, 0, sizeof(s));
        for (int i = 0; i < 4; i++) {
                s[i].unsubscribe_after = 1;
                (void)subscribe(e, &s[i]);
        }
        uint64_t seq = events_publish(e, "last", NULL);
        assert_true(seq > 0);
        assert_int_equal(events_publish(e, "after", NULL), seq + 1);
        for (int i = 0; i < 4; i++) {
                assert_int_equal(s[i].n, 1);
                assert_int_equal(s[i].seq[0], seq);
                seen_done(&s[i]);
        }
}

static void test_publish_null_payload(void **state)
{
        Events *e = *state;
        Seen s = {0};
        (void)subscribe(e, &s);
        assert_int_equal(events_publish(e, "ping", NULL), 1);
        assert_int_equal(events_last_seq(e), 1);
        assert_int_equal(s.n, 1);
        assert_string_equal(s.kind[0], "ping");
        assert_int_equal(s.seq[0], 1);
        /* What a subscriber sees for no payload is an object it may read keys from. */
        assert_true(s.payload[0] == NULL || json_is_object(s.payload[0]));

        json_t *arr = json_array();
        assert_int_equal(events_since(e, 0, arr), 1);
        check_event(json_array_get(arr, 0), 1, "ping", 0);
        json_decref(arr);
        seen_done(&s);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        const struct CMUnitTest tests[] = {
                T(test_seq_starts_at_one),
                T(test_seq_per_bus),
                T(test_since),
                T(test_ring_wraparound),
                T(test_subscribers),
                T(test_many_subscribers),
                T(test_unsubscribe_in_callback),
                T(test_publish_null_payload),
        };
        return cmocka_run_group_tests_name("events", tests, NULL, NULL);
}
