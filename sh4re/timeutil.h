/* Clock and timestamp helpers. */
#pragma once

#include <stdint.h>

#define TIMEUTIL_RFC3339_MAX 32

/* Formats unix seconds as RFC 3339 UTC ("2026-09-07T12:34:56Z") into out. */
void timeutil_rfc3339(int64_t unix_seconds, char out[TIMEUTIL_RFC3339_MAX]);
/* CLOCK_REALTIME in seconds. */
int64_t timeutil_now(void);
/* CLOCK_MONOTONIC in microseconds. */
uint64_t timeutil_mono_usec(void);

struct timespec;
/* The CLOCK_MONOTONIC time timeout_ms from now (now itself for a negative one), for
 * pthread_cond_timedwait on a condition variable set to CLOCK_MONOTONIC. */
void timeutil_mono_deadline(int timeout_ms, struct timespec *ret);
