/* Scheduler thread.  Sleeps until the next due time, never longer than
 * SCHEDULER_SLEEP_MAX_MS, or until kicked. */
#define LOG_SUBSYSTEM "scheduler"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "broker.h"
#include "cleanup.h"
#include "log.h"
#include "questions.h"
#include "reminders.h"
#include "request_ids.h"
#include "scheduler.h"
#include "store.h"

struct Scheduler {
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool stop;
        bool kicked;
        Store *store;
        int pipe_w;
        int64_t last_vacuum_ms;
        int checkpointed; /* atomic: frames backfilled by our last checkpoint */
        int db_fd;        /* the database file, to write out what the checkpoints copied */
        int written_out;  /* checkpointed as it was at the last write-out */
        int write_outs;   /* atomic: how many write-outs succeeded */
};

/* Starts writing out the database pages the checkpoints copied, once SCHEDULER_WRITE_OUT_FRAMES
 * more frames were copied (or the WAL started over), and waits for those writes (no flush
 * of the disk's cache).  Otherwise they stay dirty in the page cache until the main loop's
 * tail copy, whose flush of the database then writes them all while it holds every writer. */
static void write_out(Scheduler *sch, int done)
{
        if (sch->db_fd < 0 ||
            (done >= sch->written_out && done - sch->written_out < SCHEDULER_WRITE_OUT_FRAMES))
                return;
        sch->written_out = done;
        /* An error is no loss: sqlite's own flush of the database reports it as well. */
        if (sync_file_range(sch->db_fd, 0, 0,
                            SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                    SYNC_FILE_RANGE_WAIT_AFTER) < 0)
                log_debug_errno(errno, "cannot write out the database file: %m");
        else
                __atomic_add_fetch(&sch->write_outs, 1, __ATOMIC_RELEASE);
}

static void notify(Scheduler *sch, json_t *names)
{
        size_t i;
        json_t *v;
        json_array_foreach(names, i, v)
        {
                char line[128];
                int n = snprintf(line, sizeof(line), "%s\n", json_string_value(v));
                /* A full pipe loses only the wake-up: the loop also polls parked inboxes. */
                if (n > 0 && (size_t)n < sizeof(line))
                        (void)!write(sch->pipe_w, line, (size_t)n);
        }
}

/* Runs step in bounded transactions, one at a time so the main loop never waits long, until
 * nothing is left.  Returns the rows deleted. */
static int vacuum_all(Scheduler *sch, int (*step)(Store *, int64_t, unsigned), int64_t cutoff)
{
        int total = 0;
        for (int round = 0; round < 1000; round++) {
                int r = step(sch->store, cutoff, 1000);
                int c = store_batch_commit(sch->store);
                if (r <= 0 || c < 0)
                        break;
                total += r;
        }
        return total;
}

static void vacuum(Scheduler *sch, int64_t now)
{
        if (now - sch->last_vacuum_ms < 3600 * 1000)
                return;
        sch->last_vacuum_ms = now;
        int n = vacuum_all(sch, broker_vacuum, now - VACUUM_AGE_MS);
        if (n > 0)
                log_info("vacuumed %d message(s) acknowledged over 30 days ago", n);
        n = vacuum_all(sch, request_ids_vacuum, now - REQUEST_IDS_KEEP_MS);
        if (n > 0)
                log_debug("forgot %d request id(s) answered over a day ago", n);
}

static void *scheduler_main(void *userdata)
{
        Scheduler *sch = userdata;
        pthread_mutex_lock(&sch->lock);
        while (!sch->stop) {
                sch->kicked = false;
                pthread_mutex_unlock(&sch->lock);

                int64_t now = store_now_ms();
                json_t *names = json_array();
                int r = names ? reminders_fire_due(sch->store, now, names) : -ENOMEM;
                if (r >= 0)
                        r = questions_expire(sch->store, now, names);
                int c = store_batch_commit(sch->store);
                if (r < 0 || c < 0)
                        log_warning_errno(r < 0 ? r : c, "scheduler round failed: %m");
                else
                        notify(sch, names);
                json_decref(names);
                vacuum(sch, now);
                /* The bulk of every checkpoint happens here, off the main loop's hot path. */
                int log_frames = 0, done = 0;
                if (store_checkpoint(sch->store, &log_frames, &done) >= 0) {
                        __atomic_store_n(&sch->checkpointed, done, __ATOMIC_RELEASE);
                        write_out(sch, done);
                }

                int64_t next = now + SCHEDULER_SLEEP_MAX_MS, t = 0;
                if (reminders_next_due(sch->store, &t) >= 0 && t > 0 && t < next)
                        next = t;
                if (questions_next_deadline(sch->store, &t) >= 0 && t > 0 && t < next)
                        next = t;

                pthread_mutex_lock(&sch->lock);
                if (sch->stop || sch->kicked)
                        continue;
                struct timespec ts = {.tv_sec = next / 1000,
                                      .tv_nsec = (long)(next % 1000) * 1000000};
                if (next > store_now_ms())
                        (void)pthread_cond_timedwait(&sch->cond, &sch->lock, &ts);
        }
        pthread_mutex_unlock(&sch->lock);
        return NULL;
}

int scheduler_start(const char *db_path, Scheduler **ret, int *ret_fd)
{
        Scheduler *sch = calloc(1, sizeof(*sch));
        if (!sch)
                return -ENOMEM;
        int fds[2];
        if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0) {
                free(sch);
                return -errno;
        }
        sch->pipe_w = fds[1];
        sch->db_fd = -1;
        sch->last_vacuum_ms = store_now_ms() - 3500 * 1000; /* first vacuum soon after start */
        int r = store_open(db_path, &sch->store);
        if (r < 0)
                goto fail;
        sch->db_fd = open(db_path, O_RDONLY | O_CLOEXEC);
        if (sch->db_fd < 0) /* only slower: the tail copies write it all */
                log_warning_errno(errno, "cannot open %s to write it out: %m", db_path);
        pthread_mutex_init(&sch->lock, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_REALTIME);
        pthread_cond_init(&sch->cond, &ca);
        pthread_condattr_destroy(&ca);
        r = -pthread_create(&sch->thread, NULL, scheduler_main, sch);
        if (r < 0)
                goto fail;
        *ret = sch;
        *ret_fd = fds[0];
        return 0;
fail:
        store_close(sch->store);
        if (sch->db_fd >= 0)
                close(sch->db_fd);
        close(fds[0]);
        close(fds[1]);
        free(sch);
        return r;
}

int scheduler_checkpointed(Scheduler *sch)
{
        return sch ? __atomic_load_n(&sch->checkpointed, __ATOMIC_ACQUIRE) : 0;
}

int scheduler_write_outs(Scheduler *sch)
{
        return sch ? __atomic_load_n(&sch->write_outs, __ATOMIC_ACQUIRE) : 0;
}

void scheduler_wal_restarted(Scheduler *sch)
{
        if (sch)
                __atomic_store_n(&sch->checkpointed, 0, __ATOMIC_RELEASE);
}

void scheduler_kick(Scheduler *sch)
{
        if (!sch)
                return;
        pthread_mutex_lock(&sch->lock);
        sch->kicked = true;
        pthread_cond_signal(&sch->cond);
        pthread_mutex_unlock(&sch->lock);
}

Scheduler *scheduler_stop(Scheduler *sch)
{
        if (!sch)
                return NULL;
        pthread_mutex_lock(&sch->lock);
        sch->stop = true;
        pthread_cond_signal(&sch->cond);
        pthread_mutex_unlock(&sch->lock);
        pthread_join(sch->thread, NULL);
        store_close(sch->store);
        if (sch->db_fd >= 0)
                close(sch->db_fd);
        close(sch->pipe_w);
        pthread_cond_destroy(&sch->cond);
        pthread_mutex_destroy(&sch->lock);
        free(sch);
        return NULL;
}
