/* errno ↔ wire error codes ("EINVAL") and message helpers. */
#pragma once

/* The symbolic name of errno value e (positive or negative), e.g. "ENOENT".  Values without a
 * name in our table map to "EIO".  Never returns NULL. */
const char *hive_errno_name(int e);

/* The positive errno value for a symbolic name, or -EINVAL if the name is unknown. */
int hive_errno_from_name(const char *name);
