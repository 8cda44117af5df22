/* broker-bench backend for mosquitto (MQTT 3.1.1, QoS 1, TCP loopback with TCP_NODELAY).
 *
 * Every endpoint is one libmosquitto client driven by mosquitto_loop() from the endpoint's own
 * thread (no mosquitto_loop_start network thread), so the thread layout is the same as for the
 * other backends.  A receiver is a persistent session (clean_session=false, client id = its
 * name) subscribed to bench/<name> at QoS 1; a sender (client id <name>-tx) publishes QoS 1 and
 * its send returns when the PUBACK arrived.  The receiver's ack is the PUBACK that libmosquitto
 * sends by itself, before the message callback runs, so ack() has nothing left to do. */
#include <errno.h>
#include <mosquitto.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

typedef struct Mosq {
        struct mosquitto *m;
        BenchEndpoint *e;
        int connected; /* 1 accepted, -1 refused */
        int subscribed;
        int pub_mid;
        int pub_done;
        int got;
        char topic[64];
} Mosq;

static void on_connect(struct mosquitto *m, void *obj, int rc)
{
        Mosq *q = obj;
        if (rc != 0)
                fprintf(stderr, "broker-bench: mosquitto: %s: connection refused: %s\n", q->e->self,
                        mosquitto_connack_string(rc));
        q->connected = rc == 0 ? 1 : -1;
}

static void on_subscribe(struct mosquitto *m, void *obj, int mid, int n, const int *granted)
{
        Mosq *q = obj;
        q->subscribed = n == 1 && granted[0] == 1 ? 1 : -1;
}

static void on_publish(struct mosquitto *m, void *obj, int mid)
{
        Mosq *q = obj;
        if (mid == q->pub_mid)
                q->pub_done = 1;
}

static void on_message(struct mosquitto *m, void *obj, const struct mosquitto_message *msg)
{
        Mosq *q = obj;
        BenchEndpoint *e = q->e;
        e->t_wake = bench_now_ns();
        size_t n =
                (size_t)msg->payloadlen < BENCH_BODY_MAX ? (size_t)msg->payloadlen : BENCH_BODY_MAX;
        memcpy(e->buf, msg->payload, n);
        e->buf[n] = '\0';
        e->len = n;
        q->got = 1;
}

/* Runs the client's loop until *flag is non-zero; returns it, or a negative errno. */
static int mq_loop_until(Mosq *q, int *flag, int timeout_ms)
{
        uint64_t deadline = bench_now_ns() + (uint64_t)timeout_ms * 1000000u;
        while (!*flag) {
                int rc = mosquitto_loop(q->m, 100, 1);
                if (rc != MOSQ_ERR_SUCCESS) {
                        fprintf(stderr, "broker-bench: mosquitto: %s: %s\n", q->e->self,
                                mosquitto_strerror(rc));
                        return -EIO;
                }
                if (bench_now_ns() > deadline)
                        return -ETIMEDOUT;
        }
        return *flag > 0 ? 0 : -EPROTO;
}

static int mq_connect(const BenchTarget *t, BenchEndpoint *e, const char *id, bool clean)
{
        Mosq *q = calloc(1, sizeof(Mosq));
        if (!q)
                return -ENOMEM;
        q->e = e;
        q->m = mosquitto_new(id, clean, q);
        if (!q->m) {
                free(q);
                return -ENOMEM;
        }
        e->impl = q;
        mosquitto_int_option(q->m, MOSQ_OPT_TCP_NODELAY, 1);
        mosquitto_connect_callback_set(q->m, on_connect);
        mosquitto_subscribe_callback_set(q->m, on_subscribe);
        mosquitto_publish_callback_set(q->m, on_publish);
        mosquitto_message_callback_set(q->m, on_message);
        int rc = mosquitto_connect(q->m, t->host, t->port, 60);
        if (rc != MOSQ_ERR_SUCCESS) {
                fprintf(stderr, "broker-bench: mosquitto: connect %s:%d: %s\n", t->host, t->port,
                        mosquitto_strerror(rc));
                return -ECONNREFUSED;
        }
        return mq_loop_until(q, &q->connected, 10000);
}

static int mq_setup(const BenchTarget *t)
{
        return mosquitto_lib_init() == MOSQ_ERR_SUCCESS ? 0 : -EIO;
}

static void mq_teardown(void)
{
        mosquitto_lib_cleanup();
}

static int mq_open_sender(const BenchTarget *t, BenchEndpoint *e)
{
        char id[32];
        snprintf(id, sizeof(id), "%s-tx", e->self);
        int r = mq_connect(t, e, id, true);
        if (r < 0)
                return r;
        Mosq *q = e->impl;
        snprintf(q->topic, sizeof(q->topic), "bench/%s", e->peer);
        return 0;
}

static int mq_open_receiver(const BenchTarget *t, BenchEndpoint *e)
{
        int r = mq_connect(t, e, e->self, false);
        if (r < 0)
                return r;
        Mosq *q = e->impl;
        snprintf(q->topic, sizeof(q->topic), "bench/%s", e->self);
        int rc = mosquitto_subscribe(q->m, NULL, q->topic, 1);
        if (rc != MOSQ_ERR_SUCCESS) {
                fprintf(stderr, "broker-bench: mosquitto: subscribe: %s\n", mosquitto_strerror(rc));
                return -EIO;
        }
        return mq_loop_until(q, &q->subscribed, 10000);
}

static void mq_close(BenchEndpoint *e)
{
        Mosq *q = e->impl;
        if (!q)
                return;
        mosquitto_disconnect(q->m);
        mosquitto_loop(q->m, 10, 1);
        mosquitto_destroy(q->m);
        free(q);
        e->impl = NULL;
}

static int mq_register_idle_receiver(const BenchTarget *t, BenchEndpoint *e)
{
        /* a persistent session with a QoS 1 subscription and nobody connected: the broker queues */
        int r = mq_open_receiver(t, e);
        mq_close(e);
        return r;
}

static int mq_send(BenchEndpoint *e, const char *body, size_t len)
{
        Mosq *q = e->impl;
        q->pub_done = 0;
        int rc = mosquitto_publish(q->m, &q->pub_mid, q->topic, (int)len, body, 1, false);
        if (rc != MOSQ_ERR_SUCCESS) {
                fprintf(stderr, "broker-bench: mosquitto: publish: %s\n", mosquitto_strerror(rc));
                return -EIO;
        }
        return mq_loop_until(q, &q->pub_done, 30000);
}

static int mq_recv_arm(BenchEndpoint *e)
{
        return 0; /* the subscription is always live */
}

static int mq_recv_wait(BenchEndpoint *e, int timeout_ms)
{
        Mosq *q = e->impl;
        int r = mq_loop_until(q, &q->got, timeout_ms);
        q->got = 0;
        return r;
}

static int mq_ack(BenchEndpoint *e)
{
        return 0; /* libmosquitto sent the PUBACK before on_message ran */
}

const BenchBackend bench_backend_mosquitto = {
        .name = "mosquitto",
        .setup = mq_setup,
        .teardown = mq_teardown,
        .open_sender = mq_open_sender,
        .open_receiver = mq_open_receiver,
        .register_idle_receiver = mq_register_idle_receiver,
        .send = mq_send,
        .recv_arm = mq_recv_arm,
        .recv_wait = mq_recv_wait,
        .ack = mq_ack,
        .close = mq_close,
};
