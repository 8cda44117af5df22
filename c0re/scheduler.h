/* The scheduler timer thread: fires due reminders, expires questions past their TTL (as
 * "ttl-watchdog"), checkpoints the WAL (passively, every round, writing out the pages it
 * copied every SCHEDULER_WRITE_OUT_FRAMES frames) and vacuums old delivered
 * messages hourly.  It has its own database
 * connection and tells the main loop which inboxes got mail through a pipe. */
#pragma once

#include <stdint.h>

typedef struct Scheduler Scheduler;

#define SCHEDULER_SLEEP_MAX_MS 1000
#define VACUUM_AGE_MS          (30ll * 24 * 3600 * 1000)
/* Frames copied by the checkpoints between two write-outs of the database file. */
#define SCHEDULER_WRITE_OUT_FRAMES 2048

/* Starts the thread on the database at db_path.  *ret_fd is the read end of the pipe on
 * which it writes one recipient name per line. */
int scheduler_start(const char *db_path, Scheduler **ret, int *ret_fd);
/* Makes the thread look at the database again now (a reminder or deadline was added). */
void scheduler_kick(Scheduler *sch);
/* Frames of the current WAL the thread's last checkpoint copied into the database file. */
int scheduler_checkpointed(Scheduler *sch);
/* How many times the thread has written out the pages its checkpoints copied. */
int scheduler_write_outs(Scheduler *sch);
/* The main loop finished a checkpoint itself, so the WAL starts over: forget the count. */
void scheduler_wal_restarted(Scheduler *sch);

/* Stops and joins the thread.  Returns NULL. */
Scheduler *scheduler_stop(Scheduler *sch);
