/* broker-bench backend for nats-server with JetStream (file storage), through libnats.
 *
 * One stream BENCH on subjects bench.>, file storage, created fresh by setup().  Every endpoint
 * is its own connection with natsOptions_SetSendAsap(true) (without it libnats holds small
 * writes for its flusher thread and adds about 1 ms per hop).  A receiver is a durable push
 * consumer named after it, filtered to bench.<name>, AckExplicit, read with a synchronous
 * subscription (natsSubscription_NextMsg, so the endpoint's own thread waits, like the other
 * backends); ack() is natsMsg_Ack.  A sender uses js_Publish, which returns when the PubAck
 * arrived.  nats-server 2.9 does not fsync per message: a PubAck means "in the page cache". */
#include <errno.h>
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define STREAM "BENCH"

typedef struct Nats {
        natsConnection *nc;
        jsCtx *js;
        natsSubscription *sub;
        natsMsg *msg;
        char subj[48];
} Nats;

static Nats admin; /* setup()'s connection, kept for register_idle_receiver */

static int nats_fail(const char *who, const char *what, natsStatus s, jsErrCode jerr)
{
        fprintf(stderr, "broker-bench: nats: %s: %s: %s (jetstream error %d; %s)\n", who, what,
                natsStatus_GetText(s), (int)jerr, nats_GetLastError(NULL));
        return s == NATS_TIMEOUT ? -ETIMEDOUT : -EIO;
}

static int nats_conn(const BenchTarget *t, Nats *n, const char *who)
{
        natsOptions *o = NULL;
        char url[128];
        snprintf(url, sizeof(url), "nats://%s:%d", t->host, t->port);
        natsStatus s = natsOptions_Create(&o);
        if (s == NATS_OK)
                s = natsOptions_SetURL(o, url);
        if (s == NATS_OK)
                s = natsOptions_SetSendAsap(o, true);
        if (s == NATS_OK)
                s = natsOptions_SetName(o, who);
        if (s == NATS_OK)
                s = natsConnection_Connect(&n->nc, o);
        natsOptions_Destroy(o);
        if (s == NATS_OK)
                s = natsConnection_JetStream(&n->js, n->nc, NULL);
        return s == NATS_OK ? 0 : nats_fail(who, "connect", s, 0);
}

static void nats_disconnect(Nats *n)
{
        if (n->msg)
                natsMsg_Destroy(n->msg);
        if (n->sub)
                natsSubscription_Destroy(n->sub);
        if (n->js)
                jsCtx_Destroy(n->js);
        if (n->nc)
                natsConnection_Destroy(n->nc);
        memset(n, 0, sizeof(*n));
}

static int nats_setup(const BenchTarget *t)
{
        natsStatus s = nats_Open(-1);
        if (s != NATS_OK)
                return nats_fail("setup", "nats_Open", s, 0);
        int r = nats_conn(t, &admin, "bench-admin");
        if (r < 0)
                return r;
        jsStreamConfig cfg;
        jsStreamConfig_Init(&cfg);
        const char *subjects[] = {"bench.>"};
        cfg.Name = STREAM;
        cfg.Subjects = subjects;
        cfg.SubjectsLen = 1;
        cfg.Storage = js_FileStorage;
        jsStreamInfo *si = NULL;
        jsErrCode jerr = 0;
        s = js_AddStream(&si, admin.js, &cfg, NULL, &jerr);
        if (s != NATS_OK)
                return nats_fail("setup", "add stream " STREAM, s, jerr);
        jsStreamInfo_Destroy(si);
        return 0;
}

static void nats_teardown(void)
{
        nats_disconnect(&admin);
        nats_Close();
}

static int nats_open_sender(const BenchTarget *t, BenchEndpoint *e)
{
        Nats *n = calloc(1, sizeof(Nats));
        if (!n)
                return -ENOMEM;
        e->impl = n;
        snprintf(n->subj, sizeof(n->subj), "bench.%s", e->peer);
        return nats_conn(t, n, e->self);
}

static int nats_open_receiver(const BenchTarget *t, BenchEndpoint *e)
{
        Nats *n = calloc(1, sizeof(Nats));
        if (!n)
                return -ENOMEM;
        e->impl = n;
        snprintf(n->subj, sizeof(n->subj), "bench.%s", e->self);
        int r = nats_conn(t, n, e->self);
        if (r < 0)
                return r;
        jsSubOptions so;
        jsSubOptions_Init(&so);
        so.Stream = STREAM;
        so.Config.Durable = e->self;
        so.Config.AckPolicy = js_AckExplicit;
        so.Config.DeliverPolicy = js_DeliverAll;
        jsErrCode jerr = 0;
        natsStatus s = js_SubscribeSync(&n->sub, n->js, n->subj, NULL, &so, &jerr);
        if (s != NATS_OK)
                return nats_fail(e->self, "subscribe (durable push consumer)", s, jerr);
        return 0;
}

static int nats_register_idle_receiver(const BenchTarget *t, BenchEndpoint *e)
{
        /* a durable consumer nobody reads: the stream keeps every message for it */
        char subj[48];
        snprintf(subj, sizeof(subj), "bench.%s", e->self);
        jsConsumerConfig cc;
        jsConsumerConfig_Init(&cc);
        cc.Durable = e->self;
        cc.AckPolicy = js_AckExplicit;
        cc.FilterSubject = subj;
        jsConsumerInfo *ci = NULL;
        jsErrCode jerr = 0;
        natsStatus s = js_AddConsumer(&ci, admin.js, STREAM, &cc, NULL, &jerr);
        if (s != NATS_OK)
                return nats_fail(e->self, "add consumer", s, jerr);
        jsConsumerInfo_Destroy(ci);
        return 0;
}

static int nats_send(BenchEndpoint *e, const char *body, size_t len)
{
        Nats *n = e->impl;
        jsPubAck *pa = NULL;
        jsErrCode jerr = 0;
        natsStatus s = js_Publish(&pa, n->js, n->subj, body, (int)len, NULL, &jerr);
        if (s != NATS_OK)
                return nats_fail(e->self, "publish", s, jerr);
        jsPubAck_Destroy(pa);
        return 0;
}

static int nats_recv_arm(BenchEndpoint *e)
{
        return 0; /* the push consumer delivers as soon as a message is stored */
}

static int nats_recv_wait(BenchEndpoint *e, int timeout_ms)
{
        Nats *n = e->impl;
        natsMsg *msg = NULL;
        natsStatus s = natsSubscription_NextMsg(&msg, n->sub, timeout_ms);
        e->t_wake = bench_now_ns();
        if (s != NATS_OK)
                return nats_fail(e->self, "next message", s, 0);
        int len = natsMsg_GetDataLength(msg);
        size_t m = len < BENCH_BODY_MAX ? (size_t)len : BENCH_BODY_MAX;
        memcpy(e->buf, natsMsg_GetData(msg), m);
        e->buf[m] = '\0';
        e->len = m;
        if (n->msg)
                natsMsg_Destroy(n->msg);
        n->msg = msg;
        return 0;
}

static int nats_ack(BenchEndpoint *e)
{
        Nats *n = e->impl;
        natsStatus s = natsMsg_Ack(n->msg, NULL);
        natsMsg_Destroy(n->msg);
        n->msg = NULL;
        return s == NATS_OK ? 0 : nats_fail(e->self, "ack", s, 0);
}

static void nats_close(BenchEndpoint *e)
{
        Nats *n = e->impl;
        if (!n)
                return;
        nats_disconnect(n);
        free(n);
        e->impl = NULL;
}

const BenchBackend bench_backend_nats = {
        .name = "nats",
        .setup = nats_setup,
        .teardown = nats_teardown,
        .open_sender = nats_open_sender,
        .open_receiver = nats_open_receiver,
        .register_idle_receiver = nats_register_idle_receiver,
        .send = nats_send,
        .recv_arm = nats_recv_arm,
        .recv_wait = nats_recv_wait,
        .ack = nats_ack,
        .close = nats_close,
};
