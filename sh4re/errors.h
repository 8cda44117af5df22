/* errno ↔ wire error codes ("EINVAL") and message helpers. */
#pragma once

/* The symbolic name of errno value e (positive or negative), e.g. "ENOENT".  Values without a
 * name in our table map to "EIO".  Never returns NULL. */
const char *hive_errno_name(int e);

/* The positive errno value for a symbolic name, or -EINVAL if the name is unknown. */
int hive_errno_from_name(const char *name);

/* Sets *ret_error (when ret_error is non-NULL) to a malloc'ed sentence formatted from fmt (NULL
 * when out of memory) and returns r: the "refuse with a reason" of functions that hand their
 * caller a sentence for a person. */
int hive_refuse(char **ret_error, int r, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
