/* broker-bench: one load generator for three brokers (hive-c0re, mosquitto, nats-server with
 * JetStream).  bench.c owns the workloads, the timing and the report; each bench-<system>.c
 * implements the same small set of blocking operations behind a BenchBackend, so the
 * workload code, the thread layout and the per-message work of the load generator are the
 * same for every system. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Where the servers are; filled from the command line. */
typedef struct BenchTarget {
        const char *hive_run_dir; /* hive: the daemon's --run-dir */
        const char *host;         /* mosquitto, nats: TCP host (loopback) */
        int port;                 /* mosquitto, nats: TCP port */
} BenchTarget;

/* One client connection: a pair's sender or receiver, or a fill-mode agent. */
typedef struct BenchEndpoint {
        char self[16];   /* agent name of this endpoint: s001, r001, a001 */
        char peer[16];   /* a sender's receiver (send target); unused for a receiver */
        uint64_t t_wake; /* set by recv_wait as soon as a message reached the receiver */
        char *buf;       /* recv_wait copies the body here (BENCH_BODY_MAX bytes) */
        size_t len;      /* length of the body in buf */
        void *impl;      /* the backend's connection state */
} BenchEndpoint;

#define BENCH_BODY_MAX 4096

/* Every operation returns >= 0 on success, a negative errno on failure (and prints why on
 * stderr).  Every call is blocking; a backend never starts threads of its own beyond what its
 * client library always starts. */
typedef struct BenchBackend {
        const char *name;
        /* once per run, before any endpoint: e.g. create the JetStream stream */
        int (*setup)(const BenchTarget *t);
        void (*teardown)(void);
        /* connect as a sender (its identity is e->self, it sends to e->peer) */
        int (*open_sender)(const BenchTarget *t, BenchEndpoint *e);
        /* connect as a receiver and subscribe; returns once the subscription is live */
        int (*open_receiver)(const BenchTarget *t, BenchEndpoint *e);
        /* fill mode: make e->self a durable destination that nobody reads, then disconnect */
        int (*register_idle_receiver)(const BenchTarget *t, BenchEndpoint *e);
        /* send one message to e->peer; returns once the broker confirmed it */
        int (*send)(BenchEndpoint *e, const char *body, size_t len);
        /* tell the broker this receiver waits for the next message (a long-poll request);
         * may be a no-op for subscription-based brokers */
        int (*recv_arm)(BenchEndpoint *e);
        /* wait (at most timeout_ms) for the next message; sets e->t_wake, e->buf, e->len */
        int (*recv_wait)(BenchEndpoint *e, int timeout_ms);
        /* acknowledge the message recv_wait returned last */
        int (*ack)(BenchEndpoint *e);
        void (*close)(BenchEndpoint *e);
} BenchBackend;

extern const BenchBackend bench_backend_hive;
extern const BenchBackend bench_backend_mosquitto;
extern const BenchBackend bench_backend_nats;

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t bench_now_ns(void);
