/* The WAL flusher thread (see walflush.h). */
#define LOG_SUBSYSTEM "walflush"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "log.h"
#include "walflush.h"

struct WalFlush {
        char *path;
        int fd;
        void (*notify)(void *userdata);
        void *userdata;
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        uint64_t requested, flushed; /* under lock */
        int error;                   /* under lock */
        bool stop;                   /* under lock */
        /* Gathering (under lock, and all but gather_usec only touched by the flusher): how
         * many durable writes to wait for, until when, and whether waiting pays off. */
        uint64_t gather_usec, expect;
        struct timespec gather_until;
        bool gathering;
        int gather_score;
        unsigned gather_skipped;
};

/* Gathering.  Every writer a flush releases has one request in flight at a time (an agent's
 * send waits for its answer), so most of them write again right after its answer: the flush
 * after a wave should cover the whole next wave, not split it in two halves that each wait
 * for a flush and a half.  So the next flush waits until as many writes are asked for as the
 * last one covered plus those that came in while it ran, or until gather_usec after it ended.
 * Where a busy loop turns the wave around more slowly than that (many writers), waiting only
 * idles the disk: the flusher stops gathering while at least a quarter of its waits run out,
 * and tries one wait again every GATHER_PROBE flushes. */
#define GATHER_USEC         500
#define GATHER_SCORE_MAX    8
#define GATHER_TIMEOUT_COST 3
#define GATHER_PROBE        32

static void timespec_add_usec(struct timespec *t, uint64_t usec)
{
        t->tv_sec += (time_t)(usec / 1000000);
        t->tv_nsec += (long)(usec % 1000000) * 1000;
        if (t->tv_nsec >= 1000000000) {
                t->tv_sec++;
                t->tv_nsec -= 1000000000;
        }
}

/* Whether the flusher should wait (under lock) before flushing what was asked for.  Waits on
 * the condition variable and returns true if so: the caller looks again. */
static bool gather_wait(WalFlush *f)
{
        if (!f->gathering || f->stop || f->requested - f->flushed >= f->expect)
                return false;
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > f->gather_until.tv_sec ||
            (now.tv_sec == f->gather_until.tv_sec && now.tv_nsec >= f->gather_until.tv_nsec)) {
                /* ran out: flush what there is, and count it against gathering */
                f->gather_score -= GATHER_TIMEOUT_COST;
                if (f->gather_score < -GATHER_SCORE_MAX)
                        f->gather_score = -GATHER_SCORE_MAX;
                f->gathering = false;
                return false;
        }
        pthread_cond_timedwait(&f->cond, &f->lock, &f->gather_until);
        if (f->requested - f->flushed >= f->expect && f->gather_score < GATHER_SCORE_MAX)
                f->gather_score++;
        return true;
}

/* Flushes the directory entry once, when the file is first opened: sqlite's FULL mode does
 * the same after it creates the WAL. */
static int sync_dir(const char *path)
{
        _cleanup_free_ char *copy = strdup(path);
        if (!copy)
                return -ENOMEM;
        _cleanup_close_ int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fsync(dfd) < 0)
                return -errno;
        return 0;
}

/* One fdatasync of the WAL.  The file is reopened when sqlite has replaced it (unlinked, as
 * when the last connection closes): the frames to flush are in the new one. */
static int flush_once(WalFlush *f)
{
        struct stat st;
        if (f->fd >= 0 && (fstat(f->fd, &st) < 0 || st.st_nlink == 0)) {
                close(f->fd);
                f->fd = -1;
        }
        if (f->fd < 0) {
                f->fd = open(f->path, O_RDONLY | O_CLOEXEC);
                if (f->fd < 0)
                        return -errno;
                int r = sync_dir(f->path);
                if (r < 0)
                        return r;
        }
        return fdatasync(f->fd) < 0 ? -errno : 0;
}

static void *flusher(void *userdata)
{
        WalFlush *f = userdata;
        pthread_mutex_lock(&f->lock);
        for (;;) {
                while (f->requested <= f->flushed && !f->stop)
                        pthread_cond_wait(&f->cond, &f->lock);
                if (f->requested <= f->flushed)
                        break; /* stopping, nothing left */
                if (gather_wait(f))
                        continue;
                uint64_t target = f->requested;
                pthread_mutex_unlock(&f->lock);
                int r = flush_once(f);
                if (r < 0)
                        log_error_errno(r, "cannot flush %s to disk: %m", f->path);
                pthread_mutex_lock(&f->lock);
                f->expect = f->requested - f->flushed; /* this flush's writes and the newer */
                clock_gettime(CLOCK_MONOTONIC, &f->gather_until);
                timespec_add_usec(&f->gather_until, f->gather_usec);
                f->gathering = f->gather_usec > 0 &&
                               (f->gather_score >= 0 || ++f->gather_skipped % GATHER_PROBE == 0);
                f->flushed = target;
                if (r < 0)
                        f->error = r;
                pthread_mutex_unlock(&f->lock);
                f->notify(f->userdata);
                pthread_mutex_lock(&f->lock);
        }
        pthread_mutex_unlock(&f->lock);
        return NULL;
}

int walflush_new(const char *wal_path, void (*notify)(void *userdata), void *userdata,
                 WalFlush **ret)
{
        WalFlush *f = calloc(1, sizeof(*f));
        if (!f)
                return -ENOMEM;
        f->path = strdup(wal_path);
        if (!f->path) {
                free(f);
                return -ENOMEM;
        }
        f->fd = -1;
        f->notify = notify;
        f->userdata = userdata;
        f->gather_usec = GATHER_USEC;
        pthread_mutex_init(&f->lock, NULL);
        pthread_condattr_t attr;
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&f->cond, &attr);
        pthread_condattr_destroy(&attr);
        int r = -pthread_create(&f->thread, NULL, flusher, f);
        if (r < 0) {
                pthread_cond_destroy(&f->cond);
                pthread_mutex_destroy(&f->lock);
                free(f->path);
                free(f);
                return r;
        }
        *ret = f;
        return 0;
}

void walflush_set_gather(WalFlush *f, uint64_t usec)
{
        pthread_mutex_lock(&f->lock);
        f->gather_usec = usec;
        pthread_mutex_unlock(&f->lock);
}

void walflush_request(WalFlush *f, uint64_t mark)
{
        pthread_mutex_lock(&f->lock);
        if (mark > f->requested) {
                f->requested = mark;
                pthread_cond_signal(&f->cond);
        }
        pthread_mutex_unlock(&f->lock);
}

uint64_t walflush_flushed(WalFlush *f)
{
        pthread_mutex_lock(&f->lock);
        uint64_t m = f->flushed;
        pthread_mutex_unlock(&f->lock);
        return m;
}

uint64_t walflush_done(WalFlush *f, int *ret_error)
{
        pthread_mutex_lock(&f->lock);
        uint64_t m = f->flushed;
        *ret_error = f->error;
        f->error = 0;
        pthread_mutex_unlock(&f->lock);
        return m;
}

WalFlush *walflush_free(WalFlush *f, int *ret_error)
{
        if (ret_error)
                *ret_error = 0;
        if (!f)
                return NULL;
        pthread_mutex_lock(&f->lock);
        f->stop = true;
        pthread_cond_signal(&f->cond);
        pthread_mutex_unlock(&f->lock);
        pthread_join(f->thread, NULL);
        if (ret_error)
                *ret_error = f->error; /* of flushes nobody asked about yet, the last one too */
        if (f->fd >= 0)
                close(f->fd);
        pthread_cond_destroy(&f->cond);
        pthread_mutex_destroy(&f->lock);
        free(f->path);
        free(f);
        return NULL;
}
