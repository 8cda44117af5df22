/* Logging to stderr (journal-aware).  Owns the process-wide maximum level. */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

static int max_level = LOG_INFO;
static int journal_state = -1; /* -1 unknown, 0 no, 1 yes */

static const char *const level_names[] = {
        [LOG_ERR] = "error",
        [LOG_WARNING] = "warning",
        [LOG_INFO] = "info",
        [LOG_DEBUG] = "debug",
};

void log_set_max_level(int level)
{
        max_level = level;
}

int log_get_max_level(void)
{
        return max_level;
}

int log_level_from_string(const char *s)
{
        if (!s)
                return -EINVAL;
        for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
                if (level_names[i] && strcmp(level_names[i], s) == 0)
                        return (int)i;
        return -EINVAL;
}

const char *log_level_to_string(int level)
{
        if (level < 0 || (size_t)level >= sizeof(level_names) / sizeof(level_names[0]) ||
            !level_names[level])
                return "unknown";
        return level_names[level];
}

/* stderr is the journal when $JOURNAL_STREAM names its device and inode. */
static bool stderr_is_journal(void)
{
        if (journal_state >= 0)
                return journal_state;
        journal_state = 0;
        const char *e = getenv("JOURNAL_STREAM");
        struct stat st;
        unsigned long long dev, ino;
        if (e && sscanf(e, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
            (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino)
                journal_state = 1;
        return journal_state;
}

int log_internal(int level, int error, const char *subsystem, const char *fmt, ...)
{
        int saved = errno;
        if (error < 0)
                error = -error;
        if (level > max_level) {
                errno = error ? error : saved;
                return -error;
        }

        char msg[2048];
        va_list ap;
        va_start(ap, fmt);
        errno = error ? error : saved;
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);

        static const char *const upper[] = {[LOG_ERR] = "ERROR",
                                            [LOG_WARNING] = "WARNING",
                                            [LOG_INFO] = "INFO",
                                            [LOG_DEBUG] = "DEBUG"};
        const char *tag = (level >= 0 && level <= LOG_DEBUG && upper[level]) ? upper[level] : "LOG";
        if (stderr_is_journal())
                fprintf(stderr, "<%d>%s %s: %s\n", level, tag, subsystem, msg);
        else
                fprintf(stderr, "%s %s: %s\n", tag, subsystem, msg);

        errno = error ? error : saved;
        return -error;
}
