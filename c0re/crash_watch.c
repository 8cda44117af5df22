/* Crash watch timer thread.  Sweeps are posted to the loop, which queues one status check
 * per container on the operations workers (actions.c decides what a stopped one means). */
#define LOG_SUBSYSTEM "crash-watch"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "actions.h"
#include "cleanup.h"
#include "crash_watch.h"
#include "log.h"

struct CrashWatch {
        Daemon *d;
        unsigned interval_sec;
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool stopping;
};

typedef struct Sweep {
        Daemon *d;
        char **names; /* NULL = all */
} Sweep;

static void on_sweep(void *userdata)
{
        Sweep *s = userdata;
        if (s->d->actions) {
                if (!s->names)
                        actions_sweep(s->d->actions, NULL);
                for (char **n = s->names; n && *n; n++)
                        actions_sweep(s->d->actions, *n);
        }
        strv_free(s->names);
        free(s);
}

static void post_sweep(Daemon *d, char **names)
{
        Sweep *s = malloc(sizeof(*s));
        if (s)
                *s = (Sweep){d, names};
        if (!s || loop_post(d->loop, on_sweep, s) < 0) {
                free(s);
                strv_free(names);
        }
}

static void *crash_watch_thread(void *userdata)
{
        CrashWatch *cw = userdata;
        struct timespec next;
        clock_gettime(CLOCK_MONOTONIC, &next);
        next.tv_sec += cw->interval_sec;
        pthread_mutex_lock(&cw->lock);
        while (!cw->stopping) {
                int r = pthread_cond_timedwait(&cw->cond, &cw->lock, &next);
                if (r == ETIMEDOUT) {
                        pthread_mutex_unlock(&cw->lock);
                        post_sweep(cw->d, NULL);
                        pthread_mutex_lock(&cw->lock);
                        clock_gettime(CLOCK_MONOTONIC, &next);
                        next.tv_sec += cw->interval_sec;
                }
        }
        pthread_mutex_unlock(&cw->lock);
        return NULL;
}

int crash_watch_start(Daemon *d, unsigned interval_sec, CrashWatch **ret)
{
        CrashWatch *cw = calloc(1, sizeof(*cw));
        if (!cw)
                return -ENOMEM;
        cw->d = d;
        cw->interval_sec = interval_sec;
        pthread_mutex_init(&cw->lock, NULL);
        pthread_condattr_t attr;
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&cw->cond, &attr);
        pthread_condattr_destroy(&attr);
        int r = pthread_create(&cw->thread, NULL, crash_watch_thread, cw);
        if (r != 0) {
                pthread_cond_destroy(&cw->cond);
                pthread_mutex_destroy(&cw->lock);
                free(cw);
                return -r;
        }
        *ret = cw;
        return 0;
}

CrashWatch *crash_watch_stop(CrashWatch *cw)
{
        if (!cw)
                return NULL;
        pthread_mutex_lock(&cw->lock);
        cw->stopping = true;
        pthread_cond_signal(&cw->cond);
        pthread_mutex_unlock(&cw->lock);
        pthread_join(cw->thread, NULL);
        pthread_cond_destroy(&cw->cond);
        pthread_mutex_destroy(&cw->lock);
        free(cw);
        return NULL;
}

void crash_watch_check_now(Daemon *d, const char *name)
{
        char **names = calloc(2, sizeof(char *));
        if (!names || !(names[0] = strdup(name))) {
                free(names);
                return; /* out of memory: the next sweep finds it */
        }
        log_debug("%s exited; checking it now", name);
        post_sweep(d, names);
}
