/* Wall-clock and monotonic time, and the one timestamp format on the wire. */
#include <stdio.h>
#include <time.h>

#include "timeutil.h"

void timeutil_rfc3339(int64_t unix_seconds, char out[TIMEUTIL_RFC3339_MAX])
{
        time_t t = (time_t)unix_seconds;
        struct tm tm;
        if (!gmtime_r(&t, &tm)) {
                snprintf(out, TIMEUTIL_RFC3339_MAX, "1970-01-01T00:00:00Z");
                return;
        }
        strftime(out, TIMEUTIL_RFC3339_MAX, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int64_t timeutil_now(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec;
}

uint64_t timeutil_mono_usec(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void timeutil_mono_deadline(int timeout_ms, struct timespec *ret)
{
        clock_gettime(CLOCK_MONOTONIC, ret);
        if (timeout_ms <= 0)
                return;
        ret->tv_sec += timeout_ms / 1000;
        ret->tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (ret->tv_nsec >= 1000000000L) {
                ret->tv_sec++;
                ret->tv_nsec -= 1000000000L;
        }
}
