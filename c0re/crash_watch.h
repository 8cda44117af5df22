/* The crash watcher: a timer thread that every --crash-interval seconds asks the loop to
 * compare the containers with what the daemon expects (actions_sweep), plus an immediate
 * check of one container when its supervised child exits.  Neither touches loop-owned state
 * itself: both post to the loop. */
#pragma once

#include "daemon.h"

int crash_watch_start(Daemon *d, unsigned interval_sec, CrashWatch **ret);
CrashWatch *crash_watch_stop(CrashWatch *cw);

/* Thread-safe (any thread, while the loop exists): name's container may have stopped; the
 * loop checks it in its next round. */
void crash_watch_check_now(Daemon *d, const char *name);
