/* Running a helper program to completion: argv (never a shell), its own session and process
 * group, stdin from /dev/null, stdout and stderr captured separately into bounded buffers,
 * and a deadline after which the whole process group is killed.  Plus the private temporary
 * working directory each such call gets.  Everything here is thread-safe and logs nothing. */
#pragma once

#include <stdint.h>

#include "backend.h"

/* At most this many bytes of each stream are kept: the last ones (the end of a tool's output
 * is where it says what went wrong). */
#define PROC_OUTPUT_MAX (256u * 1024u)

/* Runs argv[0] (looked up on the daemon's PATH when it holds no '/') with envp (NULL: the
 * daemon's environment) in cwd (NULL: the daemon's), with all signals unblocked and at their
 * default disposition, in a new session.  timeout_ms 0 means no deadline.
 *
 * Returns 0 when the child ran to completion, whatever its exit code, and fills *ret
 * (status = exit code or 128 + signal; out/err malloc'ed, NUL-terminated).  Returns
 * -ETIMEDOUT when the deadline passed: the child's process group was killed with SIGKILL and
 * *ret is filled with what was captured (status 128 + SIGKILL).  Returns -ENOENT or -EACCES
 * when argv[0] cannot be executed, another negative errno otherwise (cwd that cannot be
 * opened, pipes, memory); *ret is untouched then.
 *
 * When the child exits while something it left behind still holds a pipe open, what is
 * already in the pipes is kept and the leftovers are not waited for (nor killed). */
int proc_run(char *const argv[], char *const envp[], const char *cwd, uint64_t timeout_ms,
             BackendRun *ret);

/* Called with each complete line (without its '\n') as the child writes it; stream is 1 for
 * stdout, 2 for stderr.  Runs on the caller's thread, inside proc_run_lines(). */
typedef void (*ProcLineFn)(void *userdata, int stream, const char *line, size_t len);

/* proc_run(), also handing every output line to on_line (NULL: none) while the child runs,
 * for progress; the capture in *ret is the same. */
int proc_run_lines(char *const argv[], char *const envp[], const char *cwd, uint64_t timeout_ms,
                   ProcLineFn on_line, void *userdata, BackendRun *ret);

/* Makes a fresh private (0700) directory under parent (NULL: $TMPDIR, else /tmp).  Returns 0
 * and its malloc'ed path, or a negative errno.  Remove it with fsutil_rm_rf, which follows no
 * symlink (tools leave `./.tmp` links into the store in their cwd). */
int proc_tmpdir_new(const char *parent, char **ret_path);
