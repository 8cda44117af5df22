/* Supervisor of long-running children (the nspawn and process containers).
 *
 * One thread poll()s the pidfds of all children plus an eventfd, reaps a child when it
 * exits, remembers its exit status and calls the exit callback.  Every child is recorded in
 * <pid_dir>/<name>.pid ("PID STARTTIME"), removed when it is reaped, so that a daemon
 * restarted after a crash adopts the children it left running (supervisor_new).  All
 * functions are thread-safe. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

typedef struct Supervisor Supervisor;

/* Called on the supervisor's thread after a child was reaped: status is its exit code,
 * 128 + signal when a signal killed it, or -1 when unknown (an adopted child that is not
 * ours).  Must be quick; may call back into the supervisor. */
typedef void (*SupervisorExitFn)(void *userdata, const char *name, int status);

/* Creates a supervisor keeping its pid files in pid_dir (which must exist) and starts its
 * thread.  Adopts every child listed in pid_dir that still lives with the recorded start
 * time and removes the other pid files.  on_exit may be NULL.  Returns 0 or a negative
 * errno; does not log. */
int supervisor_new(const char *pid_dir, SupervisorExitFn on_exit, void *userdata, Supervisor **ret);

/* Stops the thread and frees everything.  Children keep running and keep their pid files
 * (a later supervisor_new adopts them).  Accepts NULL; returns NULL. */
Supervisor *supervisor_free(Supervisor *s);

/* Starts argv (argv[0] a path, or a name looked up on the daemon's PATH) as child name
 * ([A-Za-z0-9_.-], not starting with '.'): environment envp, working directory cwd (NULL:
 * ours), in a new session with default signal dispositions and an empty signal mask, stdin
 * /dev/null, stdout and stderr appended to log_path (created 0640; moved to log_path.1
 * first when it is over 1 MiB).  Returns 0 once the child was spawned and recorded, or
 * -EALREADY when name runs, -EINVAL for a bad name, or the errno of the failed open, spawn
 * or exec; on failure *ret_error (when non-NULL) is a malloc'ed sentence. */
int supervisor_start(Supervisor *s, const char *name, char *const argv[], char *const envp[],
                     const char *cwd, const char *log_path, char **ret_error);

/* Whether child name runs (has not been reaped); its pid in *ret_pid when it does. */
bool supervisor_running(Supervisor *s, const char *name, pid_t *ret_pid);

/* Sends sig to child name, or to its process group (its session leader's group) when group
 * is true.  Returns 0, or -ESRCH when name does not run. */
int supervisor_signal(Supervisor *s, const char *name, int sig, bool group);

/* Waits until child name is reaped (returns at once when it does not run).  Returns 0, or
 * -ETIMEDOUT after timeout_ms (negative: no limit). */
int supervisor_wait(Supervisor *s, const char *name, int timeout_ms);

/* The status of the last reaped run of name (as passed to the exit callback).  Returns 0,
 * or -ENOENT when name has not exited since this supervisor knows it. */
int supervisor_last_exit(Supervisor *s, const char *name, int *ret_status);
