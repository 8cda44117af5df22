/* stall-probe: does this machine stop now and then, and does flushing to disk make it?
 *
 *   ninja -C build && build/tests/bench/stall-probe [SECONDS] [DIR]   (defaults: 3 s, ./build)
 *
 * Runs twice for SECONDS each: first a thread that only reads the clock in a loop, then the
 * same thread beside another that writes 10 KB into a file in DIR and fdatasyncs it, over and
 * over (what a durable broker does per message).  Prints every gap over 1 ms the clock thread
 * saw (up to 12 per run) and how much time such gaps took in all, and the flusher's slowest
 * fdatasync.  On a machine that does not stall, both runs show next to nothing.  See
 * docs/performance.md ("Where the time goes") for what it showed on ours. */
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void)
{
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static volatile bool stop;
static const char *dir = "build";

static void *flusher(void *arg)
{
        double *slowest = arg;
        char path[4096], buf[10000];
        snprintf(path, sizeof(path), "%s/stall-probe.%d", dir, (int)getpid());
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0) {
                perror(path);
                exit(1);
        }
        memset(buf, 'x', sizeof(buf));
        for (long i = 0; !stop; i++) {
                if (pwrite(fd, buf, sizeof(buf), (off_t)(i % 2000) * (off_t)sizeof(buf)) < 0) {
                        perror("pwrite");
                        exit(1);
                }
                double t = now_ms();
                if (fdatasync(fd) < 0) {
                        perror("fdatasync");
                        exit(1);
                }
                if (now_ms() - t > *slowest)
                        *slowest = now_ms() - t;
        }
        close(fd);
        unlink(path);
        return NULL;
}

static void run(double seconds, bool flush)
{
        pthread_t t;
        double slowest = 0;
        stop = false;
        if (flush && pthread_create(&t, NULL, flusher, &slowest) != 0) {
                fprintf(stderr, "stall-probe: cannot start the flusher thread\n");
                exit(1);
        }
        printf("clock loop%s, %.0f s:\n", flush ? " beside a write+fdatasync loop" : " alone",
               seconds);
        double t0 = now_ms(), last = t0, total = 0;
        int n = 0;
        while (last - t0 < seconds * 1e3) {
                double tick = now_ms();
                if (tick - last > 1.0) {
                        if (++n <= 12)
                                printf("  gap of %.1f ms at %.0f ms\n", tick - last, last - t0);
                        total += tick - last;
                }
                last = tick;
        }
        stop = true;
        if (flush)
                pthread_join(t, NULL);
        printf("  %d gaps over 1 ms, %.0f ms in all (%.1f %% of the time)", n, total,
               100.0 * total / (seconds * 1e3));
        if (flush)
                printf("; slowest fdatasync %.1f ms", slowest);
        printf("\n");
}

int main(int argc, char **argv)
{
        double seconds = argc > 1 ? atof(argv[1]) : 3;
        if (argc > 2)
                dir = argv[2];
        if (seconds <= 0) {
                fprintf(stderr, "usage: stall-probe [SECONDS] [DIR]\n");
                return 2;
        }
        run(seconds, false);
        run(seconds, true);
        return 0;
}
