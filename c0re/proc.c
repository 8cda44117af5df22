/* Helper programs run to completion for the backends (see proc.h).
 *
 * The daemon is multi-threaded, so children are started with posix_spawn: between fork and
 * exec only the spawn machinery runs, which is async-signal-safe.  The daemon blocks SIGTERM
 * and SIGINT for its signalfd and may ignore SIGPIPE; the child gets an empty mask and
 * default dispositions, else a tool run from it could not be interrupted.  Each child leads
 * a new session (and so its own process group), so a timeout kills everything it started
 * that did not leave the group on purpose.  Pipes are created O_CLOEXEC, so children that
 * other threads spawn at the same moment do not inherit them and hold them open. */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "child.h"
#include "cleanup.h"
#include "proc.h"

#define READ_CHUNK (16u * 1024u)
/* A buffer is trimmed back to PROC_OUTPUT_MAX only once it holds twice that, so every byte
 * is moved at most once however much a child writes. */
#define CAPTURE_CAP (2u * PROC_OUTPUT_MAX + READ_CHUNK + 1u)
/* Without a pidfd (kernels before 5.3) the child's exit is looked for this often. */
#define EXIT_POLL_MS 100

typedef struct Capture {
        int fd; /* read end, O_NONBLOCK; -1 once at EOF */
        char *data;
        size_t len, cap;
        size_t line_start; /* where the line not yet handed to on_line begins */
        int stream;        /* 1 stdout, 2 stderr */
        ProcLineFn on_line;
        void *userdata;
} Capture;

static uint64_t now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Keeps the last PROC_OUTPUT_MAX bytes. */
static void capture_trim(Capture *c)
{
        if (c->len <= PROC_OUTPUT_MAX)
                return;
        size_t shift = c->len - PROC_OUTPUT_MAX;
        memmove(c->data, c->data + shift, PROC_OUTPUT_MAX);
        c->len = PROC_OUTPUT_MAX;
        c->line_start = c->line_start > shift ? c->line_start - shift : 0;
}

/* Hands the complete lines read so far to on_line; at EOF also an unterminated last one. */
static void capture_lines(Capture *c, bool eof)
{
        if (!c->on_line)
                return;
        for (;;) {
                char *nl = memchr(c->data + c->line_start, '\n', c->len - c->line_start);
                if (!nl)
                        break;
                c->on_line(c->userdata, c->stream, c->data + c->line_start,
                           (size_t)(nl - (c->data + c->line_start)));
                c->line_start = (size_t)(nl - c->data) + 1;
        }
        if (eof && c->line_start < c->len) {
                c->on_line(c->userdata, c->stream, c->data + c->line_start, c->len - c->line_start);
                c->line_start = c->len;
        }
}

/* Makes room for one more READ_CHUNK and a NUL.  Returns 0 or -ENOMEM. */
static int capture_reserve(Capture *c)
{
        if (c->cap - c->len > READ_CHUNK)
                return 0;
        if (c->len >= 2u * PROC_OUTPUT_MAX) {
                capture_trim(c);
                return 0;
        }
        size_t cap = c->cap ? c->cap * 2 : 4u * READ_CHUNK;
        if (cap > CAPTURE_CAP)
                cap = CAPTURE_CAP;
        char *p = realloc(c->data, cap);
        if (!p)
                return -ENOMEM;
        c->data = p;
        c->cap = cap;
        return 0;
}

/* Reads what the pipe holds now, at most a bounded amount (so a child writing without pause
 * cannot keep the caller from its deadline).  Returns 1 at EOF (and closes the fd), 0 when
 * more may come, or a negative errno. */
static int capture_read(Capture *c)
{
        for (size_t total = 0; total < 2u * PROC_OUTPUT_MAX;) {
                int r = capture_reserve(c);
                if (r < 0)
                        return r;
                ssize_t n = read(c->fd, c->data + c->len, READ_CHUNK);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                return 0;
                        return -errno;
                }
                if (n == 0) {
                        close(c->fd);
                        c->fd = -1;
                        capture_lines(c, true);
                        return 1;
                }
                c->len += (size_t)n;
                total += (size_t)n;
                capture_lines(c, false);
        }
        return 0;
}

/* Hands out the captured bytes, NUL-terminated.  Returns NULL only when out of memory. */
static char *capture_take(Capture *c)
{
        capture_trim(c);
        if (!c->data) {
                c->data = malloc(1);
                if (!c->data)
                        return NULL;
                c->cap = 1;
        }
        c->data[c->len] = '\0';
        c->len = c->cap = 0;
        return TAKE_PTR(c->data);
}

static void capture_done(Capture *c)
{
        if (c->fd >= 0)
                close(c->fd);
        c->fd = -1;
        free(c->data);
        c->data = NULL;
}

/* Moves fd to a number >= 3, so that dup2 onto 1 and 2 in the child cannot clobber the other
 * pipe when the daemon runs with a standard fd closed.  Returns the new fd or -errno. */
static int fd_above_stdio(int fd)
{
        if (fd > STDERR_FILENO)
                return fd;
        int nfd = fcntl(fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
        int r = nfd < 0 ? -errno : nfd;
        close(fd);
        return r;
}

/* A pipe whose read end is non-blocking; both ends O_CLOEXEC and above the stdio fds. */
static int make_pipe(int *ret_read, int *ret_write)
{
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        int rd = fd_above_stdio(p[0]);
        int wr = fd_above_stdio(p[1]);
        if (rd < 0 || wr < 0) {
                if (rd >= 0)
                        close(rd);
                if (wr >= 0)
                        close(wr);
                return rd < 0 ? rd : wr;
        }
        if (fcntl(rd, F_SETFL, O_NONBLOCK) < 0) {
                int r = -errno;
                close(rd);
                close(wr);
                return r;
        }
        *ret_read = rd;
        *ret_write = wr;
        return 0;
}

/* Whether the child has exited, without reaping it (so its pid, and with it the process group
 * id, cannot be reused while we may still signal the group). */
static bool child_exited(pid_t pid)
{
        siginfo_t si = {0};
        if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0)
                return errno != EINTR; /* ECHILD: someone else reaped it; stop waiting */
        return si.si_pid == pid;
}

static int reap(pid_t pid, int *ret_status)
{
        int st;
        while (waitpid(pid, &st, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        *ret_status = WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : 255;
        return 0;
}

int proc_run(char *const argv[], char *const envp[], const char *cwd, uint64_t timeout_ms,
             BackendRun *ret)
{
        return proc_run_lines(argv, envp, cwd, timeout_ms, NULL, NULL, ret);
}

int proc_run_lines(char *const argv[], char *const envp[], const char *cwd, uint64_t timeout_ms,
                   ProcLineFn on_line, void *userdata, BackendRun *ret)
{
        assert(argv && argv[0] && ret);

        _cleanup_close_ int cwd_fd = -1;
        if (cwd) {
                cwd_fd = open(cwd, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (cwd_fd < 0)
                        return -errno;
        }
        Capture cap[2] = {
                {.fd = -1, .stream = 1, .on_line = on_line, .userdata = userdata},
                {.fd = -1, .stream = 2, .on_line = on_line, .userdata = userdata},
        };
        _cleanup_close_ int out_w = -1, err_w = -1;
        int r = make_pipe(&cap[0].fd, &out_w);
        if (r < 0)
                return r;
        r = make_pipe(&cap[1].fd, &err_w);
        if (r < 0) {
                capture_done(&cap[0]);
                return r;
        }

        pid_t pid = 0;
        r = child_spawn(NULL, argv, envp, cwd_fd, -1, out_w, err_w, &pid);
        /* Only the child may hold the write ends, or EOF never comes. */
        closep(&out_w);
        closep(&err_w);
        out_w = err_w = -1;
        if (r < 0) {
                capture_done(&cap[0]);
                capture_done(&cap[1]);
                return r;
        }

        _cleanup_close_ int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
        uint64_t deadline = timeout_ms ? now_ms() + timeout_ms : 0;
        bool timed_out = false;
        int error = 0;
        while (cap[0].fd >= 0 || cap[1].fd >= 0) {
                int wait_ms = -1;
                if (deadline) {
                        uint64_t now = now_ms();
                        if (now >= deadline) {
                                timed_out = true;
                                break;
                        }
                        wait_ms = deadline - now > INT_MAX ? INT_MAX : (int)(deadline - now);
                }
                if (pidfd < 0 && (wait_ms < 0 || wait_ms > EXIT_POLL_MS))
                        wait_ms = EXIT_POLL_MS;

                struct pollfd pfd[3];
                Capture *who[3] = {NULL, NULL, NULL};
                nfds_t n = 0;
                for (size_t i = 0; i < ELEMENTSOF(cap); i++)
                        if (cap[i].fd >= 0) {
                                who[n] = &cap[i];
                                pfd[n++] = (struct pollfd){.fd = cap[i].fd, .events = POLLIN};
                        }
                if (pidfd >= 0)
                        pfd[n++] = (struct pollfd){.fd = pidfd, .events = POLLIN};
                if (poll(pfd, n, wait_ms) < 0) {
                        if (errno == EINTR)
                                continue;
                        error = -errno;
                        break;
                }
                for (nfds_t i = 0; i < n && error == 0; i++)
                        if (who[i] && pfd[i].revents) {
                                r = capture_read(who[i]);
                                if (r < 0)
                                        error = r;
                        }
                if (error < 0)
                        break;
                /* Something the child left behind may hold the pipes open after it exited:
                 * stop at the child's exit and take what is already in them (below). */
                if ((cap[0].fd >= 0 || cap[1].fd >= 0) && child_exited(pid))
                        break;
        }

        if (timed_out || error < 0) {
                (void)kill(-pid, SIGKILL);
                (void)kill(pid, SIGKILL); /* in case it left its process group */
        }
        for (size_t i = 0; i < ELEMENTSOF(cap) && error == 0; i++)
                if (cap[i].fd >= 0) {
                        r = capture_read(&cap[i]);
                        if (r < 0)
                                error = r;
                }
        int status = 0;
        r = reap(pid, &status);
        if (error == 0)
                error = r;

        char *out = NULL, *err = NULL;
        if (error == 0) {
                out = capture_take(&cap[0]);
                err = capture_take(&cap[1]);
                if (!out || !err)
                        error = -ENOMEM;
        }
        capture_done(&cap[0]);
        capture_done(&cap[1]);
        if (error < 0) {
                free(out);
                free(err);
                return error;
        }
        *ret = (BackendRun){.status = status, .out = out, .err = err};
        return timed_out ? -ETIMEDOUT : 0;
}

int proc_tmpdir_new(const char *parent, char **ret_path)
{
        if (!parent) {
                parent = getenv("TMPDIR");
                if (!parent || !*parent)
                        parent = "/tmp";
        }
        _cleanup_free_ char *p = NULL;
        if (asprintf(&p, "%s/hive-XXXXXX", parent) < 0)
                return -ENOMEM;
        if (!mkdtemp(p))
                return -errno;
        *ret_path = TAKE_PTR(p);
        return 0;
}
