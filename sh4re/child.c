/* posix_spawn with our defaults (child.h). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <unistd.h>

#include "child.h"

extern char **environ;

int child_spawn(const char *path, char *const argv[], char *const envp[], int cwd_fd, int in_fd,
                int out_fd, int err_fd, pid_t *ret_pid)
{
        posix_spawn_file_actions_t fa;
        posix_spawnattr_t attr;
        int r = posix_spawn_file_actions_init(&fa);
        if (r != 0)
                return -r;
        r = posix_spawnattr_init(&attr);
        if (r != 0) {
                posix_spawn_file_actions_destroy(&fa);
                return -r;
        }
        sigset_t none, all;
        sigemptyset(&none);
        sigfillset(&all);
        sigdelset(&all, SIGKILL);
        sigdelset(&all, SIGSTOP);
        short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSID;
        if ((r = in_fd < 0 ? posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null",
                                                              O_RDONLY, 0)
                           : posix_spawn_file_actions_adddup2(&fa, in_fd, STDIN_FILENO)) == 0 &&
            (r = posix_spawn_file_actions_adddup2(&fa, out_fd, STDOUT_FILENO)) == 0 &&
            (r = posix_spawn_file_actions_adddup2(&fa, err_fd, STDERR_FILENO)) == 0 &&
            (cwd_fd < 0 || (r = posix_spawn_file_actions_addfchdir_np(&fa, cwd_fd)) == 0) &&
            (r = posix_spawnattr_setflags(&attr, flags)) == 0 &&
            (r = posix_spawnattr_setsigmask(&attr, &none)) == 0 &&
            (r = posix_spawnattr_setsigdefault(&attr, &all)) == 0)
                r = path ? posix_spawn(ret_pid, path, &fa, &attr, argv, envp ? envp : environ)
                         : posix_spawnp(ret_pid, argv[0], &fa, &attr, argv, envp ? envp : environ);
        posix_spawnattr_destroy(&attr);
        posix_spawn_file_actions_destroy(&fa);
        return -r;
}
