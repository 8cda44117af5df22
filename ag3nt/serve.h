/* `hive-ag3nt serve` / `hive-m1nd serve`: the turn loop and the agent page. */
#pragma once

#include "settings.h"

/* Runs until SIGTERM, SIGINT or SIGHUP.  Returns the exit code (0 after a stop signal; 1 when
 * it cannot start, with a message on stderr). */
int serve_main(Settings *s);
