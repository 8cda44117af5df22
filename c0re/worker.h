/* The operations workers: a few threads that run slow work (container operations, later the
 * approval pipeline) off the main loop.  Jobs carry a key (a container name); jobs with the
 * same key run one at a time, in the order they were queued, so one container never sees two
 * operations at once, while different containers proceed in parallel. */
#pragma once

#include <stdbool.h>

#include "loop.h"

typedef struct Worker Worker;

/* run(data) runs on a worker thread; done(data) then runs on the loop thread and owns data.
 * Jobs still queued when the pool shuts down never run; their done callbacks are posted
 * (they run only if the loop turns again, which at shutdown it does not). */
typedef void (*WorkerFn)(void *data);

/* Starts n threads.  done callbacks are posted to l. */
int worker_new(Loop *l, unsigned n, Worker **ret);
/* Finishes the jobs that are running, drops the queued ones, joins the threads.  NULL. */
Worker *worker_free(Worker *w);

/* Waits until no job is queued or running (jobs submitted meanwhile included). */
void worker_drain(Worker *w);
/* Queues a job under key (copied).  0, -ENOMEM, or -ESHUTDOWN after worker_free began. */
int worker_submit(Worker *w, const char *key, WorkerFn run, WorkerFn done, void *data);
/* Jobs queued or running under key (loop thread or any thread). */
unsigned worker_pending(Worker *w, const char *key);
