/* Filesystem helpers. */
#pragma once

#include <sys/types.h>

/* Creates path and its missing parents (parents with 0755, path itself with mode).  An
 * existing directory is fine.  Returns 0 or a negative errno. */
int fsutil_mkdir_p(const char *path, mode_t mode);
