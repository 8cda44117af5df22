/* broker-bench: the workloads, their timing and the one-line JSON report.
 *
 * pairs mode: N pairs run concurrently, each with its own sender thread and receiver thread.
 * Each pair is a closed loop with one message in flight: the receiver is parked (recv_arm +
 * recv_wait); the sender takes a timestamp, sends, and waits until its send is confirmed and
 * the receiver has received and acked that message (and re-armed); then the next message.
 * Per message we record
 *   cycle      send call -> (send confirmed and receiver's ack returned), whichever is later
 *   wake       send call -> the receiver has the message (backend timestamp, before parsing)
 *   confirm    send call -> the send call returned (the broker's confirmation)
 * Warm-up messages are not recorded; all pairs start the timed part together (barrier).
 *
 * fill mode: N agents each send COUNT messages, one at a time and all agents concurrently,
 * to the next agent (a ring).  Nobody reads, so the broker ends up storing N*COUNT messages;
 * the driver then reads the server's RSS.
 *
 * The report is one JSON object on stdout; any failure prints why on stderr and exits 1. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

typedef struct Options {
        const BenchBackend *backend;
        BenchTarget target;
        const char *mode;
        int pairs;
        int agents;
        long count;
        long warmup;
        int body_bytes;
        int server_pid;
        int timeout_s;
} Options;

static Options opt = {
        .target = {.host = "127.0.0.1"},
        .mode = "pairs",
        .pairs = 1,
        .agents = 100,
        .count = 1000,
        .warmup = 100,
        .body_bytes = 200,
        .timeout_s = 600,
};

static pthread_barrier_t start_barrier;

uint64_t bench_now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void fail(const char *who, const char *what, int r)
{
        fprintf(stderr, "broker-bench: %s: %s failed: %s\n", who, what, strerror(r < 0 ? -r : r));
        fflush(stderr);
        _exit(1);
}

static void *xcalloc(size_t n, size_t size)
{
        void *p = calloc(n ? n : 1, size);
        if (!p) {
                fprintf(stderr, "broker-bench: out of memory\n");
                _exit(1);
        }
        return p;
}

/* Writes the body of message `seq` (exactly opt.body_bytes long, no JSON escapes needed). */
static size_t make_body(char *out, long seq, int who)
{
        int n = snprintf(out, BENCH_BODY_MAX, "seq=%010ld from=%04d ", seq, who);
        size_t len = (size_t)opt.body_bytes;
        if ((size_t)n < len)
                memset(out + n, 'x', len - (size_t)n);
        else
                len = (size_t)n;
        out[len] = '\0';
        return len;
}

static long body_seq(const BenchEndpoint *e)
{
        if (e->len < 14 || memcmp(e->buf, "seq=", 4) != 0)
                return -1;
        return strtol(e->buf + 4, NULL, 10);
}

/* The server's CPU time (user + system, all threads) in seconds, or -1. */
static double server_cpu_s(void)
{
        char path[64], buf[1024];
        if (opt.server_pid <= 0)
                return -1;
        snprintf(path, sizeof(path), "/proc/%d/stat", opt.server_pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return -1;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        char *p = strrchr(buf, ')'); /* comm may contain spaces */
        if (!p)
                return -1;
        unsigned long long ut = 0, st = 0;
        /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime
         * stime */
        if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
                return -1;
        return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_s(void)
{
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
               ru.ru_stime.tv_usec / 1e6;
}

static int cmp_u64(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
        return x < y ? -1 : x > y;
}

/* Percentile p (0..100) of v[0..n) in microseconds; sorts v in place. */
static double pct_us(uint64_t *v, size_t n, double p, int sorted)
{
        if (n == 0)
                return -1;
        if (!sorted)
                qsort(v, n, sizeof(*v), cmp_u64);
        size_t i = (size_t)(p / 100.0 * (double)n);
        if (i >= n)
                i = n - 1;
        return (double)v[i] / 1000.0;
}

static void print_lat(const char *name, uint64_t *v, size_t n, int with_over_5ms)
{
        printf(",\"%s_p50_us\":%.1f", name, pct_us(v, n, 50, 0));
        printf(",\"%s_p99_us\":%.1f", name, pct_us(v, n, 99, 1));
        printf(",\"%s_p999_us\":%.1f", name, pct_us(v, n, 99.9, 1));
        printf(",\"%s_max_us\":%.1f", name, n ? (double)v[n - 1] / 1000.0 : -1.0);
        if (with_over_5ms) {
                size_t over = 0;
                for (size_t i = 0; i < n; i++)
                        over += v[i] > 5000000u;
                printf(",\"%s_over_5ms\":%zu", name, over);
        }
}

/* ---- pairs mode ---- */

typedef struct Pair {
        int idx;
        BenchEndpoint tx, rx;
        pthread_t ttx, trx;
        pthread_mutex_t mu;
        pthread_cond_t cv;
        long acked; /* last seq the receiver acked and re-armed after; -1: armed for seq 0 */
        uint64_t t_acked;
        uint64_t t_send; /* written by the sender before each send, read by the receiver */
        uint64_t *cycle; /* opt.count samples each */
        uint64_t *wake;
        uint64_t *confirm;
} Pair;

static void *pair_sender(void *arg)
{
        Pair *p = arg;
        const BenchBackend *b = opt.backend;
        long total = opt.warmup + opt.count;
        char body[BENCH_BODY_MAX + 1];

        for (long i = 0; i < total; i++) {
                if (i == opt.warmup)
                        pthread_barrier_wait(&start_barrier);
                size_t len = make_body(body, i, p->idx);

                pthread_mutex_lock(&p->mu);
                while (p->acked < i - 1)
                        pthread_cond_wait(&p->cv, &p->mu);
                pthread_mutex_unlock(&p->mu);

                uint64_t t0 = bench_now_ns();
                __atomic_store_n(&p->t_send, t0, __ATOMIC_RELEASE);
                int r = b->send(&p->tx, body, len);
                if (r < 0)
                        fail(p->tx.self, "send", r);
                uint64_t t1 = bench_now_ns();

                pthread_mutex_lock(&p->mu);
                while (p->acked < i)
                        pthread_cond_wait(&p->cv, &p->mu);
                uint64_t t2 = p->t_acked;
                pthread_mutex_unlock(&p->mu);

                if (i >= opt.warmup) {
                        long j = i - opt.warmup;
                        p->cycle[j] = (t1 > t2 ? t1 : t2) - t0;
                        p->confirm[j] = t1 - t0;
                }
        }
        return NULL;
}

static void *pair_receiver(void *arg)
{
        Pair *p = arg;
        const BenchBackend *b = opt.backend;
        long total = opt.warmup + opt.count;
        int r;

        if ((r = b->recv_arm(&p->rx)) < 0)
                fail(p->rx.self, "recv (arm)", r);
        pthread_mutex_lock(&p->mu);
        p->acked = -1;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);

        for (long i = 0; i < total; i++) {
                if ((r = b->recv_wait(&p->rx, 30000)) < 0)
                        fail(p->rx.self, "recv", r);
                uint64_t t_send = __atomic_load_n(&p->t_send, __ATOMIC_ACQUIRE);
                long seq = body_seq(&p->rx);
                if (seq != i) {
                        fprintf(stderr, "broker-bench: %s: expected message %ld, got %ld\n",
                                p->rx.self, i, seq);
                        _exit(1);
                }
                uint64_t wake = p->rx.t_wake - t_send;
                if ((r = b->ack(&p->rx)) < 0)
                        fail(p->rx.self, "ack", r);
                uint64_t t = bench_now_ns();
                if (i + 1 < total && (r = b->recv_arm(&p->rx)) < 0)
                        fail(p->rx.self, "recv (arm)", r);

                pthread_mutex_lock(&p->mu);
                p->acked = i;
                p->t_acked = t;
                pthread_cond_broadcast(&p->cv);
                pthread_mutex_unlock(&p->mu);

                if (i >= opt.warmup)
                        p->wake[i - opt.warmup] = wake;
        }
        return NULL;
}

static int run_pairs(void)
{
        const BenchBackend *b = opt.backend;
        int n = opt.pairs;
        Pair *pairs = xcalloc((size_t)n, sizeof(Pair));
        int r;

        for (int i = 0; i < n; i++) {
                Pair *p = &pairs[i];
                p->idx = i + 1;
                p->acked = -2;
                pthread_mutex_init(&p->mu, NULL);
                pthread_cond_init(&p->cv, NULL);
                snprintf(p->tx.self, sizeof(p->tx.self), "s%03d", i + 1);
                snprintf(p->tx.peer, sizeof(p->tx.peer), "r%03d", i + 1);
                snprintf(p->rx.self, sizeof(p->rx.self), "r%03d", i + 1);
                p->rx.buf = xcalloc(1, BENCH_BODY_MAX + 1);
                p->tx.buf = xcalloc(1, BENCH_BODY_MAX + 1);
                p->cycle = xcalloc((size_t)opt.count, sizeof(uint64_t));
                p->wake = xcalloc((size_t)opt.count, sizeof(uint64_t));
                p->confirm = xcalloc((size_t)opt.count, sizeof(uint64_t));
                if ((r = b->open_receiver(&opt.target, &p->rx)) < 0)
                        fail(p->rx.self, "connect/subscribe", r);
                if ((r = b->open_sender(&opt.target, &p->tx)) < 0)
                        fail(p->tx.self, "connect", r);
        }

        pthread_barrier_init(&start_barrier, NULL, (unsigned)n + 1);
        for (int i = 0; i < n; i++) {
                if ((r = pthread_create(&pairs[i].trx, NULL, pair_receiver, &pairs[i])) != 0)
                        fail("main", "pthread_create", r);
                if ((r = pthread_create(&pairs[i].ttx, NULL, pair_sender, &pairs[i])) != 0)
                        fail("main", "pthread_create", r);
        }
        pthread_barrier_wait(&start_barrier);
        uint64_t t0 = bench_now_ns();
        double cpu0 = self_cpu_s(), scpu0 = server_cpu_s();
        for (int i = 0; i < n; i++)
                pthread_join(pairs[i].ttx, NULL);
        uint64_t t1 = bench_now_ns();
        double cpu1 = self_cpu_s(), scpu1 = server_cpu_s();
        for (int i = 0; i < n; i++)
                pthread_join(pairs[i].trx, NULL);

        size_t total = (size_t)n * (size_t)opt.count;
        uint64_t *cycle = xcalloc(total, sizeof(uint64_t));
        uint64_t *wake = xcalloc(total, sizeof(uint64_t));
        uint64_t *confirm = xcalloc(total, sizeof(uint64_t));
        for (int i = 0; i < n; i++) {
                size_t off = (size_t)i * (size_t)opt.count;
                memcpy(cycle + off, pairs[i].cycle, (size_t)opt.count * sizeof(uint64_t));
                memcpy(wake + off, pairs[i].wake, (size_t)opt.count * sizeof(uint64_t));
                memcpy(confirm + off, pairs[i].confirm, (size_t)opt.count * sizeof(uint64_t));
                b->close(&pairs[i].tx);
                b->close(&pairs[i].rx);
        }

        double secs = (double)(t1 - t0) / 1e9;
        printf("{\"system\":\"%s\",\"mode\":\"pairs\",\"pairs\":%d,\"count_per_pair\":%ld,"
               "\"warmup_per_pair\":%ld,\"body_bytes\":%d,\"msgs\":%zu,\"seconds\":%.4f,"
               "\"msgs_per_s\":%.1f",
               b->name, n, opt.count, opt.warmup, opt.body_bytes, total, secs,
               secs > 0 ? (double)total / secs : 0.0);
        print_lat("cycle", cycle, total, 0);
        print_lat("wake", wake, total, 0);
        print_lat("confirm", confirm, total, 1);
        printf(",\"client_cpu_s\":%.3f,\"client_cpu_us_per_msg\":%.1f", cpu1 - cpu0,
               total ? (cpu1 - cpu0) * 1e6 / (double)total : 0.0);
        if (scpu0 >= 0 && scpu1 >= 0)
                printf(",\"server_cpu_s\":%.3f,\"server_cpu_us_per_msg\":%.1f", scpu1 - scpu0,
                       total ? (scpu1 - scpu0) * 1e6 / (double)total : 0.0);
        printf("}\n");
        fflush(stdout);
        return 0;
}

/* ---- fill mode ---- */

typedef struct Agent {
        BenchEndpoint e;
        pthread_t t;
        int idx;
        uint64_t *confirm;
} Agent;

static void *fill_agent(void *arg)
{
        Agent *a = arg;
        char body[BENCH_BODY_MAX + 1];
        pthread_barrier_wait(&start_barrier);
        for (long i = 0; i < opt.count; i++) {
                size_t len = make_body(body, i, a->idx);
                uint64_t t0 = bench_now_ns();
                int r = opt.backend->send(&a->e, body, len);
                if (r < 0)
                        fail(a->e.self, "send", r);
                a->confirm[i] = bench_now_ns() - t0;
        }
        return NULL;
}

static int run_fill(void)
{
        const BenchBackend *b = opt.backend;
        int n = opt.agents;
        Agent *agents = xcalloc((size_t)n, sizeof(Agent));
        int r;

        for (int i = 0; i < n; i++) {
                BenchEndpoint idle = {0};
                snprintf(idle.self, sizeof(idle.self), "a%03d", i + 1);
                if ((r = b->register_idle_receiver(&opt.target, &idle)) < 0)
                        fail(idle.self, "register receiver", r);
        }
        for (int i = 0; i < n; i++) {
                Agent *a = &agents[i];
                a->idx = i + 1;
                snprintf(a->e.self, sizeof(a->e.self), "a%03d", i + 1);
                snprintf(a->e.peer, sizeof(a->e.peer), "a%03d", (i + 1) % n + 1);
                a->e.buf = xcalloc(1, BENCH_BODY_MAX + 1);
                a->confirm = xcalloc((size_t)opt.count, sizeof(uint64_t));
                if ((r = b->open_sender(&opt.target, &a->e)) < 0)
                        fail(a->e.self, "connect", r);
        }
        pthread_barrier_init(&start_barrier, NULL, (unsigned)n + 1);
        for (int i = 0; i < n; i++)
                if ((r = pthread_create(&agents[i].t, NULL, fill_agent, &agents[i])) != 0)
                        fail("main", "pthread_create", r);
        pthread_barrier_wait(&start_barrier);
        uint64_t t0 = bench_now_ns();
        double cpu0 = self_cpu_s(), scpu0 = server_cpu_s();
        for (int i = 0; i < n; i++)
                pthread_join(agents[i].t, NULL);
        uint64_t t1 = bench_now_ns();
        double cpu1 = self_cpu_s(), scpu1 = server_cpu_s();

        size_t total = (size_t)n * (size_t)opt.count;
        uint64_t *confirm = xcalloc(total, sizeof(uint64_t));
        for (int i = 0; i < n; i++) {
                memcpy(confirm + (size_t)i * (size_t)opt.count, agents[i].confirm,
                       (size_t)opt.count * sizeof(uint64_t));
                b->close(&agents[i].e);
        }
        double secs = (double)(t1 - t0) / 1e9;
        printf("{\"system\":\"%s\",\"mode\":\"fill\",\"agents\":%d,\"count_per_agent\":%ld,"
               "\"body_bytes\":%d,\"msgs\":%zu,\"seconds\":%.4f,\"msgs_per_s\":%.1f",
               b->name, n, opt.count, opt.body_bytes, total, secs,
               secs > 0 ? (double)total / secs : 0.0);
        print_lat("confirm", confirm, total, 1);
        printf(",\"client_cpu_s\":%.3f", cpu1 - cpu0);
        if (scpu0 >= 0 && scpu1 >= 0)
                printf(",\"server_cpu_s\":%.3f", scpu1 - scpu0);
        printf("}\n");
        fflush(stdout);
        return 0;
}

/* ---- command line ---- */

static void usage(FILE *f)
{
        fprintf(f,
                "Usage: broker-bench --system hive|mosquitto|nats [OPTION]...\n"
                "\n"
                "  --mode pairs|fill     workload (default pairs)\n"
                "  --pairs N             pairs mode: concurrent sender/receiver pairs (default 1)\n"
                "  --agents N            fill mode: agents, each sends to the next (default 100)\n"
                "  --count N             timed messages per pair / per agent (default 1000)\n"
                "  --warmup N            untimed messages per pair first (default 100)\n"
                "  --body-bytes N        message body size (default 200)\n"
                "  --hive-run-dir DIR    hive: the daemon's run dir (agents/<name>/mcp.sock)\n"
                "  --host HOST           mosquitto, nats: server host (default 127.0.0.1)\n"
                "  --port PORT           mosquitto, nats: server port\n"
                "  --server-pid PID      read the server's CPU time from /proc\n"
                "  --timeout SECONDS     give up after this long (default 600)\n"
                "\n"
                "Prints one JSON object with the figures; exits 1 on any failure.\n");
}

int main(int argc, char **argv)
{
        enum {
                O_SYSTEM = 256,
                O_MODE,
                O_PAIRS,
                O_AGENTS,
                O_COUNT,
                O_WARMUP,
                O_BODY,
                O_RUNDIR,
                O_HOST,
                O_PORT,
                O_PID,
                O_TIMEOUT
        };
        static const struct option lo[] = {
                {"system", required_argument, NULL, O_SYSTEM},
                {"mode", required_argument, NULL, O_MODE},
                {"pairs", required_argument, NULL, O_PAIRS},
                {"agents", required_argument, NULL, O_AGENTS},
                {"count", required_argument, NULL, O_COUNT},
                {"warmup", required_argument, NULL, O_WARMUP},
                {"body-bytes", required_argument, NULL, O_BODY},
                {"hive-run-dir", required_argument, NULL, O_RUNDIR},
                {"host", required_argument, NULL, O_HOST},
                {"port", required_argument, NULL, O_PORT},
                {"server-pid", required_argument, NULL, O_PID},
                {"timeout", required_argument, NULL, O_TIMEOUT},
                {"help", no_argument, NULL, 'h'},
                {},
        };
        int c;
        while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
                switch (c) {
                case O_SYSTEM:
                        if (strcmp(optarg, "hive") == 0)
                                opt.backend = &bench_backend_hive;
                        else if (strcmp(optarg, "mosquitto") == 0)
                                opt.backend = &bench_backend_mosquitto;
                        else if (strcmp(optarg, "nats") == 0)
                                opt.backend = &bench_backend_nats;
                        else {
                                fprintf(stderr, "broker-bench: unknown system '%s'\n", optarg);
                                return 2;
                        }
                        break;
                case O_MODE:
                        opt.mode = optarg;
                        break;
                case O_PAIRS:
                        opt.pairs = atoi(optarg);
                        break;
                case O_AGENTS:
                        opt.agents = atoi(optarg);
                        break;
                case O_COUNT:
                        opt.count = atol(optarg);
                        break;
                case O_WARMUP:
                        opt.warmup = atol(optarg);
                        break;
                case O_BODY:
                        opt.body_bytes = atoi(optarg);
                        break;
                case O_RUNDIR:
                        opt.target.hive_run_dir = optarg;
                        break;
                case O_HOST:
                        opt.target.host = optarg;
                        break;
                case O_PORT:
                        opt.target.port = atoi(optarg);
                        break;
                case O_PID:
                        opt.server_pid = atoi(optarg);
                        break;
                case O_TIMEOUT:
                        opt.timeout_s = atoi(optarg);
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                default:
                        usage(stderr);
                        return 2;
                }
        }
        if (!opt.backend || opt.pairs < 1 || opt.pairs > 999 || opt.agents < 2 ||
            opt.agents > 999 || opt.count < 1 || opt.warmup < 0 || opt.body_bytes < 32 ||
            opt.body_bytes > BENCH_BODY_MAX || optind != argc) {
                usage(stderr);
                return 2;
        }
        signal(SIGPIPE, SIG_IGN);
        alarm((unsigned)opt.timeout_s); /* SIGALRM's default action ends a stuck run */

        int r = opt.backend->setup(&opt.target);
        if (r < 0)
                fail(opt.backend->name, "setup", r);
        if (strcmp(opt.mode, "pairs") == 0)
                r = run_pairs();
        else if (strcmp(opt.mode, "fill") == 0)
                r = run_fill();
        else {
                usage(stderr);
                return 2;
        }
        opt.backend->teardown();
        return r < 0 ? 1 : 0;
}
