/* The crash watcher: a timer thread that, every --crash-interval seconds and at once when a
 * supervised child exits, asks the loop to compare the containers with what the daemon
 * expects (actions_sweep).  It never touches loop-owned state itself. */
#pragma once

#include "daemon.h"

int crash_watch_start(Daemon *d, unsigned interval_sec, CrashWatch **ret);
CrashWatch *crash_watch_stop(CrashWatch *cw);

/* Thread-safe: name's container may have stopped; check it now. */
void crash_watch_kick(CrashWatch *cw, const char *name);
