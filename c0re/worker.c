/* Operations workers: a fixed pool of threads and one queue; a job is taken by the first idle
 * thread whose key is not busy. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "worker.h"

typedef struct Job {
        char *key;
        WorkerFn run, done;
        void *data;
        bool running;
        struct Job *next;
} Job;

struct Worker {
        Loop *loop;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool stopping;
        Job *head, *tail; /* queued and running jobs, in submission order */
        pthread_t *threads;
        unsigned n_threads;
};

/* Whether a job before j holds the same key (so j must wait). */
static bool key_blocked(Worker *w, Job *j)
{
        for (Job *k = w->head; k && k != j; k = k->next)
                if (strcmp(k->key, j->key) == 0)
                        return true;
        return false;
}

static Job *take_runnable(Worker *w)
{
        for (Job *j = w->head; j; j = j->next)
                if (!j->running && !key_blocked(w, j)) {
                        j->running = true;
                        return j;
                }
        return NULL;
}

static void unlink_job(Worker *w, Job *j)
{
        Job *prev = NULL;
        for (Job *k = w->head; k; prev = k, k = k->next)
                if (k == j) {
                        if (prev)
                                prev->next = j->next;
                        else
                                w->head = j->next;
                        if (w->tail == j)
                                w->tail = prev;
                        return;
                }
}

typedef struct Done {
        WorkerFn done;
        void *data;
} Done;

static void run_done(void *userdata)
{
        Done *d = userdata;
        d->done(d->data);
        free(d);
}

static void post_done(Worker *w, Job *j)
{
        if (!j->done)
                return;
        Done *d = malloc(sizeof(*d));
        if (!d)
                return; /* out of memory: the job's data leaks rather than corrupts */
        *d = (Done){j->done, j->data};
        if (loop_post(w->loop, run_done, d) < 0)
                free(d);
}

static void *worker_thread(void *userdata)
{
        Worker *w = userdata;
        pthread_mutex_lock(&w->lock);
        for (;;) {
                Job *j = w->stopping ? NULL : take_runnable(w);
                if (!j) {
                        if (w->stopping)
                                break;
                        pthread_cond_wait(&w->cond, &w->lock);
                        continue;
                }
                pthread_mutex_unlock(&w->lock);
                j->run(j->data);
                pthread_mutex_lock(&w->lock);
                unlink_job(w, j);
                post_done(w, j);
                free(j->key);
                free(j);
                pthread_cond_broadcast(&w->cond); /* its key may unblock another job */
        }
        pthread_mutex_unlock(&w->lock);
        return NULL;
}

int worker_new(Loop *l, unsigned n, Worker **ret)
{
        _cleanup_free_ Worker *w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->loop = l;
        w->threads = calloc(n, sizeof(pthread_t));
        if (!w->threads)
                return -ENOMEM;
        pthread_mutex_init(&w->lock, NULL);
        pthread_cond_init(&w->cond, NULL);
        for (; w->n_threads < n; w->n_threads++) {
                int r = pthread_create(&w->threads[w->n_threads], NULL, worker_thread, w);
                if (r != 0) {
                        Worker *partial = TAKE_PTR(w);
                        worker_free(partial);
                        return -r;
                }
        }
        *ret = TAKE_PTR(w);
        return 0;
}

Worker *worker_free(Worker *w)
{
        if (!w)
                return NULL;
        pthread_mutex_lock(&w->lock);
        w->stopping = true;
        pthread_cond_broadcast(&w->cond);
        pthread_mutex_unlock(&w->lock);
        for (unsigned i = 0; i < w->n_threads; i++)
                pthread_join(w->threads[i], NULL);
        /* Queued jobs never ran: hand them to their done callbacks (if the loop still runs
         * they see it; their data is freed there). */
        while (w->head) {
                Job *j = w->head;
                w->head = j->next;
                post_done(w, j);
                free(j->key);
                free(j);
        }
        pthread_mutex_destroy(&w->lock);
        pthread_cond_destroy(&w->cond);
        free(w->threads);
        free(w);
        return NULL;
}

int worker_submit(Worker *w, const char *key, WorkerFn run, WorkerFn done, void *data)
{
        Job *j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        j->key = strdup(key);
        if (!j->key) {
                free(j);
                return -ENOMEM;
        }
        j->run = run;
        j->done = done;
        j->data = data;
        pthread_mutex_lock(&w->lock);
        if (w->stopping) {
                pthread_mutex_unlock(&w->lock);
                free(j->key);
                free(j);
                return -ESHUTDOWN;
        }
        if (w->tail)
                w->tail->next = j;
        else
                w->head = j;
        w->tail = j;
        pthread_cond_broadcast(&w->cond);
        pthread_mutex_unlock(&w->lock);
        return 0;
}

void worker_drain(Worker *w)
{
        pthread_mutex_lock(&w->lock);
        while (w->head && !w->stopping)
                pthread_cond_wait(&w->cond, &w->lock);
        pthread_mutex_unlock(&w->lock);
}

unsigned worker_pending(Worker *w, const char *key)
{
        unsigned n = 0;
        pthread_mutex_lock(&w->lock);
        for (Job *j = w->head; j; j = j->next)
                n += strcmp(j->key, key) == 0;
        pthread_mutex_unlock(&w->lock);
        return n;
}
