/* The WAL flusher: one thread that fdatasyncs the daemon's WAL file, so the main loop never
 * waits on the disk.  The loop commits with synchronous=NORMAL, asks for a flush up to a
 * mark (store_take_flush), and goes on serving; answers that need those writes on disk wait
 * at the server gate until the flush is done.  Flushes coalesce: one fdatasync covers every
 * mark asked for before it started (group commit across loop rounds).  A mark counts the
 * durable writes made so far, and after a flush the next one may wait a moment (at most
 * 500 µs) for as many writes as the last one covered and saw arrive, so that the writers a
 * flush released share the next one (see "Gathering" in walflush.c). */
#pragma once

#include <stdint.h>

typedef struct WalFlush WalFlush;

/* Starts the thread for wal_path.  notify(userdata) runs on the flusher thread after every
 * flush (it should post to the loop).  Returns 0 and *ret, or a negative errno. */
int walflush_new(const char *wal_path, void (*notify)(void *userdata), void *userdata,
                 WalFlush **ret);
/* How long a flush may wait for the writers the last one released (default 500 µs; 0: never
 * waits).  For tests. */
void walflush_set_gather(WalFlush *f, uint64_t usec);
/* Asks for the WAL to be flushed up to mark (marks only grow). */
void walflush_request(WalFlush *f, uint64_t mark);
/* The mark the last finished flush reached. */
uint64_t walflush_flushed(WalFlush *f);
/* The same; *ret_error gets the error of any flush that
 * failed since the last call (0 if none), and is cleared. */
uint64_t walflush_done(WalFlush *f, int *ret_error);
/* Flushes what was asked for, stops the thread.  *ret_error (if not NULL) gets the error of
 * any flush not yet reported by walflush_done(), 0 if none.  Returns NULL. */
WalFlush *walflush_free(WalFlush *f, int *ret_error);
