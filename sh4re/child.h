/* Starting a child process the same way everywhere: posix_spawn (safe in threaded programs:
 * nothing runs between fork and exec), a session of its own (so its whole group can be
 * signalled), an empty signal mask and default dispositions. */
#pragma once

#include <sys/types.h>

/* Starts path (NULL: argv[0], looked up on PATH unless it holds a '/') with argv and envp (NULL:
 * our environment), stdin from in_fd (-1: /dev/null), stdout and stderr on out_fd and err_fd,
 * in the directory cwd_fd (-1: ours).  The fds are dup'ed into the child; the caller keeps and
 * closes its own.  Returns 0 and *ret_pid, or a negative errno (-ENOENT: no such program). */
int child_spawn(const char *path, char *const argv[], char *const envp[], int cwd_fd, int in_fd,
                int out_fd, int err_fd, pid_t *ret_pid);
