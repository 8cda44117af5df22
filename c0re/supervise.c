/* Supervisor of long-running children: spawning them into their log files, one thread that
 * reaps them through their pidfds, pid files for adoption after a daemon crash.
 *
 * Only the supervisor's thread reaps, with the mutex held, so a pid stays reserved (alive or a
 * zombie) for as long as the child is marked running and signals never reach a stranger.  An
 * adopted child may not be ours (the daemon that spawned it is gone): its pidfd still says
 * when it exits, but its status is then unknown (-1) and init reaps it. */
#define LOG_SUBSYSTEM "supervise"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "child.h"
#include "cleanup.h"
#include "fsutil.h"
#include "log.h"
#include "timeutil.h"
#include "supervise.h"

#define LOG_ROTATE_SIZE (1024 * 1024)
#define NAME_MAX_LEN    64

typedef struct Child {
        struct Child *next;
        char *name;
        pid_t pid;    /* 0 when not running */
        int pidfd;    /* -1 when not running */
        uint64_t gen; /* bumped by every start, so a waiter knows its run ended */
        bool exited;  /* status holds the last run's exit */
        int status;
} Child;

struct Supervisor {
        pthread_mutex_t lock;
        pthread_cond_t cond; /* broadcast whenever a child is reaped */
        pthread_t thread;
        bool thread_started;
        bool quit;
        int efd; /* wakes the thread: a new child, or quit */
        char *pid_dir;
        SupervisorExitFn on_exit;
        void *userdata;
        Child *children;
};

static int pidfd_open_fd(pid_t pid)
{
        return (int)syscall(SYS_pidfd_open, pid, 0);
}

static int pidfd_signal(int pidfd, int sig)
{
        return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

static bool name_valid(const char *name)
{
        size_t n = strlen(name);
        if (n == 0 || n > NAME_MAX_LEN || name[0] == '.')
                return false;
        for (const char *p = name; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                      (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.'))
                        return false;
        return true;
}

/* Field 22 of /proc/PID/stat (start time in clock ticks since boot).  0 or a negative errno. */
static int proc_starttime(pid_t pid, unsigned long long *ret)
{
        char path[64], buf[1024];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        ssize_t k = read(fd, buf, sizeof(buf) - 1);
        if (k < 0)
                return -errno;
        buf[k] = '\0';
        char *p = strrchr(buf, ')'); /* comm may hold spaces and parentheses */
        if (!p)
                return -EBADMSG;
        p++;
        /* fields 3..21 precede it */
        for (int field = 3; field <= 22; field++) {
                while (*p == ' ')
                        p++;
                if (!*p)
                        return -EBADMSG;
                if (field == 22) {
                        char *end = NULL;
                        errno = 0;
                        unsigned long long v = strtoull(p, &end, 10);
                        if (errno || end == p)
                                return -EBADMSG;
                        *ret = v;
                        return 0;
                }
                while (*p && *p != ' ')
                        p++;
        }
        return -EBADMSG;
}

static char *pid_path(const Supervisor *s, const char *name)
{
        char *p = NULL;
        if (asprintf(&p, "%s/%s.pid", s->pid_dir, name) < 0)
                return NULL;
        return p;
}

/* Writes <pid_dir>/<name>.pid atomically.  0 or a negative errno. */
static int pid_file_write(const Supervisor *s, const char *name, pid_t pid,
                          unsigned long long start)
{
        _cleanup_free_ char *path = pid_path(s, name);
        if (!path)
                return -ENOMEM;
        char buf[64];
        int n = snprintf(buf, sizeof(buf), "%d %llu\n", (int)pid, start);
        return fsutil_write_atomic(path, buf, (size_t)n, 0600);
}

static void pid_file_remove(const Supervisor *s, const char *name)
{
        _cleanup_free_ char *path = pid_path(s, name);
        if (path && unlink(path) < 0 && errno != ENOENT)
                log_debug("cannot remove %s: %m", path);
}

static Child *child_find(Supervisor *s, const char *name)
{
        for (Child *c = s->children; c; c = c->next)
                if (strcmp(c->name, name) == 0)
                        return c;
        return NULL;
}

/* The entry for name, created when missing (not running).  NULL on ENOMEM. */
static Child *child_get(Supervisor *s, const char *name)
{
        Child *c = child_find(s, name);
        if (c)
                return c;
        c = calloc(1, sizeof(*c));
        if (!c)
                return NULL;
        c->name = strdup(name);
        if (!c->name) {
                free(c);
                return NULL;
        }
        c->pidfd = -1;
        c->next = s->children;
        s->children = c;
        return c;
}

static void wake(Supervisor *s)
{
        uint64_t one = 1;
        if (write(s->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
                log_debug("cannot wake the supervisor thread: %m");
}

/* Reaps c if it exited (mutex held).  Returns true when it did, with the status in
 * *ret_status. */
static bool child_reap(Supervisor *s, Child *c, int *ret_status)
{
        siginfo_t si = {0};
        int status = -1;
        if (waitid((idtype_t)P_PIDFD, (id_t)c->pidfd, &si, WEXITED | WNOHANG) < 0) {
                if (errno != ECHILD)
                        return false;
                /* not our child (adopted): the pidfd said it exited, its status is lost */
        } else {
                if (si.si_pid == 0)
                        return false; /* not exited yet */
                status = si.si_code == CLD_EXITED ? si.si_status : 128 + si.si_status;
        }
        close(c->pidfd);
        c->pidfd = -1;
        c->pid = 0;
        c->exited = true;
        c->status = status;
        pid_file_remove(s, c->name);
        pthread_cond_broadcast(&s->cond);
        *ret_status = status;
        return true;
}

static void *supervisor_thread(void *userdata)
{
        Supervisor *s = userdata;
        _cleanup_free_ struct pollfd *fds = NULL;
        size_t cap = 0;
        for (;;) {
                pthread_mutex_lock(&s->lock);
                if (s->quit) {
                        pthread_mutex_unlock(&s->lock);
                        break;
                }
                size_t n = 1;
                for (Child *c = s->children; c; c = c->next)
                        n += c->pidfd >= 0;
                if (n > cap) {
                        struct pollfd *p = realloc(fds, n * sizeof(*fds));
                        if (!p) {
                                pthread_mutex_unlock(&s->lock);
                                log_error("out of memory watching children; retrying");
                                sleep(1);
                                continue;
                        }
                        fds = p;
                        cap = n;
                }
                fds[0] = (struct pollfd){.fd = s->efd, .events = POLLIN};
                n = 1;
                for (Child *c = s->children; c; c = c->next)
                        if (c->pidfd >= 0)
                                fds[n++] = (struct pollfd){.fd = c->pidfd, .events = POLLIN};
                pthread_mutex_unlock(&s->lock);

                /* Only this thread closes pidfds, so the numbers stay valid while it polls. */
                if (poll(fds, n, -1) < 0) {
                        if (errno != EINTR)
                                log_error("poll: %m");
                        continue;
                }
                if (fds[0].revents) {
                        uint64_t v;
                        (void)!read(s->efd, &v, sizeof(v));
                }
                for (size_t i = 1; i < n; i++) {
                        if (!fds[i].revents)
                                continue;
                        char name[NAME_MAX_LEN + 1] = "";
                        int status = -1;
                        bool reaped = false;
                        pthread_mutex_lock(&s->lock);
                        for (Child *c = s->children; c; c = c->next)
                                if (c->pidfd == fds[i].fd) {
                                        reaped = child_reap(s, c, &status);
                                        if (reaped)
                                                snprintf(name, sizeof(name), "%s", c->name);
                                        break;
                                }
                        pthread_mutex_unlock(&s->lock);
                        if (reaped) {
                                log_debug("%s exited with status %d", name, status);
                                if (s->on_exit)
                                        s->on_exit(s->userdata, name, status);
                        }
                }
        }
        return NULL;
}

/* Reads pid file path: the pid and start time it records.  0 or a negative errno. */
static int pid_file_read(const char *path, int *ret_pid, unsigned long long *ret_start)
{
        char buf[128];
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        ssize_t k = read(fd, buf, sizeof(buf) - 1);
        if (k < 0)
                return -errno;
        buf[k] = '\0';
        if (sscanf(buf, "%d %llu", ret_pid, ret_start) != 2 || *ret_pid <= 1)
                return -EBADMSG;
        return 0;
}

/* Adopts the child recorded in pid file `file` (NAME.pid) if it still lives.  Returns false
 * when the file is stale (its process is gone, or it is no pid file of ours). */
static bool adopt_one(Supervisor *s, const char *path, const char *file)
{
        size_t len = strlen(file);
        char name[NAME_MAX_LEN + 1];
        if (len - 4 > NAME_MAX_LEN)
                return false;
        memcpy(name, file, len - 4);
        name[len - 4] = '\0';
        if (!name_valid(name))
                return false;
        int pid = 0;
        unsigned long long start = 0, now = 0;
        if (pid_file_read(path, &pid, &start) < 0)
                return false;
        /* Open the pidfd first: it pins the pid, so the start time checked after it belongs
         * to the process the pidfd refers to. */
        _cleanup_close_ int pidfd = pidfd_open_fd(pid);
        if (pidfd < 0 || proc_starttime(pid, &now) < 0 || now != start)
                return false;
        Child *c = child_get(s, name);
        if (!c)
                return true; /* out of memory: keep the file for the next try */
        c->pid = pid;
        c->pidfd = TAKE_FD(pidfd);
        c->gen++;
        log_debug("adopted %s (pid %d)", name, pid);
        return true;
}

static void adopt_all(Supervisor *s, DIR *d)
{
        struct dirent *e;
        while ((e = readdir(d))) {
                const char *f = e->d_name;
                size_t len = strlen(f);
                if (e->d_type != DT_REG && e->d_type != DT_UNKNOWN)
                        continue;
                bool tmp = f[0] == '.' && len > 4 && strcmp(f + len - 4, ".tmp") == 0;
                bool pid = f[0] != '.' && len > 4 && strcmp(f + len - 4, ".pid") == 0;
                if (!tmp && !pid)
                        continue;
                _cleanup_free_ char *path = NULL;
                if (asprintf(&path, "%s/%s", s->pid_dir, f) < 0)
                        return;
                /* a temp file is a write interrupted by a crash */
                if (tmp || !adopt_one(s, path, f)) {
                        log_debug("removing stale pid file %s", path);
                        (void)unlink(path);
                }
        }
}

int supervisor_new(const char *pid_dir, SupervisorExitFn on_exit, void *userdata, Supervisor **ret)
{
        Supervisor *s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->efd = -1;
        pthread_mutex_init(&s->lock, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&s->cond, &ca);
        pthread_condattr_destroy(&ca);
        s->on_exit = on_exit;
        s->userdata = userdata;
        int r = -ENOMEM;
        s->pid_dir = strdup(pid_dir);
        if (!s->pid_dir)
                goto fail;
        s->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (s->efd < 0) {
                r = -errno;
                goto fail;
        }
        DIR *d = opendir(pid_dir);
        if (!d) {
                r = -errno;
                goto fail;
        }
        adopt_all(s, d);
        closedir(d);
        r = -pthread_create(&s->thread, NULL, supervisor_thread, s);
        if (r < 0)
                goto fail;
        s->thread_started = true;
        *ret = s;
        return 0;
fail:
        supervisor_free(s);
        return r;
}

Supervisor *supervisor_free(Supervisor *s)
{
        if (!s)
                return NULL;
        if (s->thread_started) {
                pthread_mutex_lock(&s->lock);
                s->quit = true;
                pthread_mutex_unlock(&s->lock);
                wake(s);
                pthread_join(s->thread, NULL);
        }
        while (s->children) {
                Child *c = s->children;
                s->children = c->next;
                if (c->pidfd >= 0)
                        close(c->pidfd);
                free(c->name);
                free(c);
        }
        if (s->efd >= 0)
                close(s->efd);
        pthread_cond_destroy(&s->cond);
        pthread_mutex_destroy(&s->lock);
        free(s->pid_dir);
        free(s);
        return NULL;
}

static void set_error(char **ret_error, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(char **ret_error, const char *fmt, ...)
{
        if (!ret_error)
                return;
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(ret_error, fmt, ap) < 0)
                *ret_error = NULL;
        va_end(ap);
}

/* Opens log_path for appending, first moving it to log_path.1 when it is over 1 MiB. */
static int log_open(const char *log_path)
{
        struct stat st;
        if (stat(log_path, &st) == 0 && st.st_size > LOG_ROTATE_SIZE) {
                _cleanup_free_ char *old = NULL;
                if (asprintf(&old, "%s.1", log_path) < 0)
                        return -ENOMEM;
                if (rename(log_path, old) < 0)
                        return -errno;
        }
        int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0640);
        return fd < 0 ? -errno : fd;
}

/* The child in its own session with a clean signal state (the daemon blocks SIGTERM/SIGINT
 * for its signalfd and may ignore SIGPIPE: the child must start with neither), in cwd. */
static int spawn_child(char *const argv[], char *const envp[], const char *cwd, int in_fd,
                       int out_fd, int err_fd, pid_t *ret_pid)
{
        _cleanup_close_ int cwd_fd = cwd ? open(cwd, O_PATH | O_DIRECTORY | O_CLOEXEC) : -1;
        if (cwd && cwd_fd < 0)
                return -errno;
        return child_spawn(NULL, argv, envp, cwd_fd, in_fd, out_fd, err_fd, ret_pid);
}

/* The body of supervisor_start, with the mutex held. */
static int start_locked(Supervisor *s, const char *name, char *const argv[], char *const envp[],
                        const char *cwd, const char *log_path, char **ret_error)
{
        Child *c = child_find(s, name);
        if (c && c->pidfd >= 0) {
                set_error(ret_error, "%s is already running (pid %d)", name, (int)c->pid);
                return -EALREADY;
        }
        c = child_get(s, name);
        if (!c)
                return -ENOMEM;
        _cleanup_close_ int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (null_fd < 0) {
                int r = -errno;
                set_error(ret_error, "cannot start %s: /dev/null: %s", name, strerror(-r));
                return r;
        }
        _cleanup_close_ int log_fd = log_open(log_path);
        if (log_fd < 0) {
                set_error(ret_error, "cannot start %s: cannot open its log %s: %s", name, log_path,
                          strerror(-log_fd));
                return log_fd;
        }
        pid_t pid = 0;
        int r = spawn_child(argv, envp, cwd, null_fd, log_fd, log_fd, &pid);
        if (r < 0) {
                set_error(ret_error, "cannot start %s: %s%s%s: %s", name, argv[0],
                          cwd ? " in " : "", cwd ? cwd : "", strerror(-r));
                return r;
        }
        unsigned long long start = 0;
        _cleanup_close_ int pidfd = pidfd_open_fd(pid);
        r = pidfd < 0 ? -errno : proc_starttime(pid, &start);
        if (r >= 0)
                r = pid_file_write(s, name, pid, start);
        if (r < 0) {
                /* Unrecorded, it could not be adopted after a crash: do not keep it. */
                set_error(ret_error, "cannot start %s: cannot record its pid in %s: %s", name,
                          s->pid_dir, strerror(-r));
                (void)kill(pid, SIGKILL);
                (void)waitpid(pid, NULL, 0);
                return r;
        }
        c->pid = pid;
        c->pidfd = TAKE_FD(pidfd);
        c->gen++;
        wake(s);
        log_debug("started %s (pid %d): %s", name, (int)pid, argv[0]);
        return 0;
}

int supervisor_start(Supervisor *s, const char *name, char *const argv[], char *const envp[],
                     const char *cwd, const char *log_path, char **ret_error)
{
        if (!name_valid(name)) {
                set_error(ret_error, "cannot start \"%s\": not a valid child name", name);
                return -EINVAL;
        }
        if (!argv || !argv[0]) {
                set_error(ret_error, "cannot start %s: no command", name);
                return -EINVAL;
        }
        pthread_mutex_lock(&s->lock);
        int r = start_locked(s, name, argv, envp, cwd, log_path, ret_error);
        pthread_mutex_unlock(&s->lock);
        return r;
}

bool supervisor_running(Supervisor *s, const char *name, pid_t *ret_pid)
{
        pthread_mutex_lock(&s->lock);
        Child *c = child_find(s, name);
        bool running = c && c->pidfd >= 0;
        if (running && ret_pid)
                *ret_pid = c->pid;
        pthread_mutex_unlock(&s->lock);
        return running;
}

int supervisor_signal(Supervisor *s, const char *name, int sig, bool group)
{
        pthread_mutex_lock(&s->lock);
        int r = -ESRCH;
        Child *c = child_find(s, name);
        if (!c || c->pidfd < 0)
                goto out;
        /* The pidfd reaches exactly our process; an adopted one may have been reaped by init
         * already, and then its pid (and group id) may belong to someone else. */
        if (pidfd_signal(c->pidfd, group ? 0 : sig) < 0) {
                r = -errno;
                goto out;
        }
        r = 0;
        if (group && kill(-c->pid, sig) < 0) {
                /* no group of that id: the child left its session; signal it alone */
                if (errno != ESRCH || pidfd_signal(c->pidfd, sig) < 0)
                        r = -errno;
        }
out:
        pthread_mutex_unlock(&s->lock);
        return r;
}

int supervisor_wait(Supervisor *s, const char *name, int timeout_ms)
{
        struct timespec deadline;
        timeutil_mono_deadline(timeout_ms, &deadline);
        pthread_mutex_lock(&s->lock);
        int r = 0;
        Child *c = child_find(s, name);
        uint64_t gen = c ? c->gen : 0;
        while (c && c->pidfd >= 0 && c->gen == gen) {
                int k = timeout_ms >= 0 ? pthread_cond_timedwait(&s->cond, &s->lock, &deadline)
                                        : pthread_cond_wait(&s->cond, &s->lock);
                if (k == ETIMEDOUT) {
                        if (c->pidfd >= 0 && c->gen == gen)
                                r = -ETIMEDOUT;
                        break;
                }
        }
        pthread_mutex_unlock(&s->lock);
        return r;
}

int supervisor_last_exit(Supervisor *s, const char *name, int *ret_status)
{
        pthread_mutex_lock(&s->lock);
        Child *c = child_find(s, name);
        int r = c && c->exited ? 0 : -ENOENT;
        if (r == 0)
                *ret_status = c->status;
        pthread_mutex_unlock(&s->lock);
        return r;
}
