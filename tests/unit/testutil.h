/* Helpers shared by the unit tests: temp dirs, recursive removal, fixture files. */
#pragma once

#include <stddef.h>

/* Creates a fresh directory under $TMPDIR (or /tmp).  Returns it malloc'ed; aborts on failure. */
char *tu_mkdtemp(void);

/* Removes path and everything below it (symlinks are not followed).  Returns 0 or a negative
 * errno. */
int tu_rm_rf(const char *path);

/* Reads a whole file.  Returns it malloc'ed and NUL-terminated (length in *ret_len when
 * non-NULL), or NULL with errno set. */
char *tu_read_file(const char *path, size_t *ret_len);

/* The path of fixture file name in tests/fixtures/host-sock ($FIXTURES, or the source tree's
 * copy when run by hand).  Returns it malloc'ed; aborts on failure. */
char *tu_fixture_path(const char *name);

/* Writes a file (mode 0644).  Returns 0 or a negative errno. */
int tu_write_file(const char *path, const char *content);
