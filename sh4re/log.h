/* Logging: lines "LEVEL subsystem: message" on stderr, with "<N>" priority prefixes when
 * stderr is connected to the journal.  log_*_errno(r, ...) logs and returns r (a negative
 * errno), and sets errno so that "%m" prints it. */
#pragma once

#include <syslog.h>

#ifndef LOG_SUBSYSTEM
#define LOG_SUBSYSTEM "hive"
#endif

void log_set_max_level(int level);
int log_get_max_level(void);
/* "error", "warning", "info", "debug" → LOG_ERR…LOG_DEBUG; -EINVAL otherwise. */
int log_level_from_string(const char *s);
const char *log_level_to_string(int level);

int log_internal(int level, int error, const char *subsystem, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

#define log_full_errno(level, error, ...) log_internal(level, error, LOG_SUBSYSTEM, __VA_ARGS__)
#define log_error_errno(error, ...)       log_full_errno(LOG_ERR, error, __VA_ARGS__)
#define log_warning_errno(error, ...)     log_full_errno(LOG_WARNING, error, __VA_ARGS__)
#define log_info_errno(error, ...)        log_full_errno(LOG_INFO, error, __VA_ARGS__)
#define log_debug_errno(error, ...)       log_full_errno(LOG_DEBUG, error, __VA_ARGS__)
#define log_error(...)                    (void)log_full_errno(LOG_ERR, 0, __VA_ARGS__)
#define log_warning(...)                  (void)log_full_errno(LOG_WARNING, 0, __VA_ARGS__)
#define log_info(...)                     (void)log_full_errno(LOG_INFO, 0, __VA_ARGS__)
#define log_debug(...)                    (void)log_full_errno(LOG_DEBUG, 0, __VA_ARGS__)
