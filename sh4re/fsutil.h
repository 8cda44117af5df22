/* Filesystem helpers: directory creation and removal, atomic file writes, program lookup. */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/* Creates path and its missing parents (parents with 0755, path itself with mode).  An
 * existing directory is fine.  Returns 0 or a negative errno. */
int fsutil_mkdir_p(const char *path, mode_t mode);

/* Removes path and, if it is a directory, everything below it, never following a symlink
 * (a symlink is removed, not its target) and never leaving the file system of path.  A
 * missing path is fine.  Returns 0 or a negative errno. */
int fsutil_rm_rf(const char *path);

/* The executable prog: itself when it holds a '/', else the first match on $PATH (a default
 * PATH when unset).  Returns it malloc'ed, or NULL when there is none (or out of memory). */
char *fsutil_find_program(const char *prog);

/* Replaces path with len bytes of data, atomically: a temp file in the same directory
 * (".<name>.XXXXXX") gets the data and mode, is fsync'd and renamed over path, so a reader or a
 * crash sees the old file or the new one, never a part.  Returns 0 or a negative errno (the
 * temp file is removed then). */
int fsutil_write_atomic(const char *path, const void *data, size_t len, mode_t mode);
