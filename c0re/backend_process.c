/* The process backend: the payload as a plain supervised child of the daemon, no isolation
 * (development only).  A container "exists" while its record dir
 * <state>/containers/<machine>/ does; it runs while the supervisor has its child.
 *
 * The nspawn backend keeps the same record dirs and the same kind of priv (a Supervisor
 * named after the agents' logical names), and reuses init, done, destroy, status, list,
 * run and logs from backend_process_ops. */
#define LOG_SUBSYSTEM "backend-process"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "cleanup.h"
#include "fsutil.h"
#include "log.h"
#include "proc.h"
#include "supervise.h"

#define SETTLE_MS       300   /* a payload that is gone this soon after start failed */
#define KILL_WAIT_MS    10000 /* how long a SIGKILLed child may take to be reaped */
#define FAIL_TAIL_LINES 5
#define LOGS_MAX_BYTES  (1024 * 1024)

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

/* <state>/containers[/<machine>], malloc'ed (NULL on ENOMEM). */
static char *record_dir(const Backend *b, const char *machine)
{
        char *p = NULL;
        if (asprintf(&p, "%s/containers%s%s", b->cfg->state_dir, machine ? "/" : "",
                     machine ? machine : "") < 0)
                return NULL;
        return p;
}

/* 1 when the record dir of a exists, 0 when not, or a negative errno. */
static int record_exists(const Backend *b, const BackendAgent *a)
{
        _cleanup_free_ char *dir = record_dir(b, a->machine);
        if (!dir)
                return -ENOMEM;
        struct stat st;
        if (stat(dir, &st) < 0)
                return errno == ENOENT ? 0 : -errno;
        return S_ISDIR(st.st_mode) ? 1 : -ENOTDIR;
}

static void on_child_exit(void *userdata, const char *name, int status)
{
        Backend *b = userdata;
        log_debug("%s exited (status %d)", name, status);
        if (b->on_exit)
                b->on_exit(b->on_exit_userdata, name);
}

static int process_init(Backend *b)
{
        _cleanup_free_ char *pid_dir = NULL;
        if (asprintf(&pid_dir, "%s/supervise", b->cfg->run_dir) < 0)
                return -ENOMEM;
        int r = fsutil_mkdir_p(pid_dir, 0700);
        if (r < 0)
                return log_error_errno(r, "cannot create %s: %m", pid_dir);
        Supervisor *s = NULL;
        r = supervisor_new(pid_dir, on_child_exit, b, &s);
        if (r < 0)
                return log_error_errno(r, "cannot supervise children in %s: %m", pid_dir);
        b->priv = s;
        return 0;
}

static void process_done(Backend *b)
{
        b->priv = supervisor_free(b->priv);
}

static int process_create(Backend *b, const BackendAgent *a, char **ret_error)
{
        int r = record_exists(b, a);
        if (r < 0) {
                set_error(ret_error, "cannot create %s: %s", a->machine, strerror(-r));
                return r;
        }
        if (r > 0) {
                set_error(ret_error, "cannot create %s: it exists already", a->machine);
                return -EEXIST;
        }
        _cleanup_strv_free_ char **argv = NULL;
        _cleanup_free_ char *dir = NULL;
        r = backend_payload_argv(b, a, &argv, &dir, ret_error);
        if (r < 0)
                return r;
        _cleanup_free_ char *rec = record_dir(b, a->machine);
        if (!rec)
                return -ENOMEM;
        r = fsutil_mkdir_p(rec, 0750);
        if (r < 0) {
                set_error(ret_error, "cannot create %s: %s: %s", a->machine, rec, strerror(-r));
                return r;
        }
        return 0;
}

static int process_update(Backend *b, const BackendAgent *a, char **ret_error)
{
        return 0;
}

/* The last `lines` lines of path ("" when it is missing), at most LOGS_MAX_BYTES from its
 * end. */
static int tail_file(const char *path, unsigned lines, char **ret_text)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0 && errno != ENOENT)
                return -errno;
        struct stat st = {0};
        if (fd >= 0 && fstat(fd, &st) < 0)
                return -errno;
        off_t from = st.st_size > LOGS_MAX_BYTES ? st.st_size - LOGS_MAX_BYTES : 0;
        size_t len = (size_t)(st.st_size - from);
        _cleanup_free_ char *buf = malloc(len + 1);
        if (!buf)
                return -ENOMEM;
        size_t got = 0;
        while (got < len) {
                ssize_t k = pread(fd, buf + got, len - got, from + (off_t)got);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return -errno;
                if (k == 0)
                        break;
                got += (size_t)k;
        }
        buf[got] = '\0';
        /* walk back over `lines` newlines, not counting the one that ends the file */
        size_t start = got;
        unsigned seen = 0;
        if (start > 0 && buf[start - 1] == '\n')
                start--;
        while (start > 0 && lines > 0) {
                if (buf[start - 1] == '\n' && ++seen == lines)
                        break;
                start--;
        }
        if (lines == 0)
                start = got;
        char *text = strdup(buf + start);
        if (!text)
                return -ENOMEM;
        *ret_text = text;
        return 0;
}

static int process_logs(Backend *b, const BackendAgent *a, unsigned lines, char **ret_text)
{
        return tail_file(a->log_path, lines, ret_text);
}

/* After a start: 0 when child a->name still runs SETTLE_MS later, else -EIO with a sentence
 * quoting the end of its log.  Shared in spirit with backend_nspawn.c. */
static int settle(Backend *b, const BackendAgent *a, char **ret_error)
{
        if (supervisor_wait(b->priv, a->name, SETTLE_MS) == -ETIMEDOUT)
                return 0;
        int status = -1;
        (void)supervisor_last_exit(b->priv, a->name, &status);
        _cleanup_free_ char *tail = NULL;
        (void)tail_file(a->log_path, FAIL_TAIL_LINES, &tail);
        set_error(ret_error,
                  "%s exited right after its start (status %d); its log %s ends with:\n%s",
                  a->machine, status, a->log_path, tail && *tail ? tail : "(nothing)");
        return -EIO;
}

/* Creates the directories a payload needs: its state dir and the dir of its log. */
static int make_dirs(const BackendAgent *a, char **ret_error)
{
        _cleanup_free_ char *log_dir = strdup(a->log_path);
        if (!log_dir)
                return -ENOMEM;
        char *slash = strrchr(log_dir, '/');
        if (slash && slash != log_dir)
                *slash = '\0';
        const char *dirs[] = {a->state_dir, slash ? log_dir : NULL};
        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                if (!dirs[i])
                        continue;
                int r = fsutil_mkdir_p(dirs[i], 0700);
                if (r < 0) {
                        set_error(ret_error, "cannot start %s: cannot create %s: %s", a->machine,
                                  dirs[i], strerror(-r));
                        return r;
                }
        }
        return 0;
}

static int process_start(Backend *b, const BackendAgent *a, char **ret_error)
{
        int r = record_exists(b, a);
        if (r <= 0) {
                set_error(ret_error, "cannot start %s: it does not exist", a->machine);
                return r < 0 ? r : -ENOENT;
        }
        if (supervisor_running(b->priv, a->name, NULL))
                return 0;
        _cleanup_strv_free_ char **argv = NULL;
        _cleanup_strv_free_ char **env = NULL;
        _cleanup_free_ char *dir = NULL;
        r = backend_payload_argv(b, a, &argv, &dir, ret_error);
        if (r < 0)
                return r;
        r = backend_payload_env(b, a, false, &env);
        if (r < 0)
                return r;
        r = make_dirs(a, ret_error);
        if (r < 0)
                return r;
        r = supervisor_start(b->priv, a->name, argv, env, a->state_dir, a->log_path, ret_error);
        if (r == -EALREADY)
                return 0;
        if (r < 0)
                return r == -ENOMEM ? r : -EIO;
        return settle(b, a, ret_error);
}

/* Waits for the reap after the last signal of a stop. */
static int wait_killed(Backend *b, const BackendAgent *a, char **ret_error)
{
        if (supervisor_wait(b->priv, a->name, KILL_WAIT_MS) == 0)
                return 0;
        set_error(ret_error, "%s did not exit %d s after SIGKILL", a->machine, KILL_WAIT_MS / 1000);
        return -ETIMEDOUT;
}

static int process_stop(Backend *b, const BackendAgent *a, unsigned grace_sec, char **ret_error)
{
        if (!supervisor_running(b->priv, a->name, NULL)) {
                int r = record_exists(b, a);
                if (r > 0)
                        return 0;
                set_error(ret_error, "cannot stop %s: it does not exist", a->machine);
                return r < 0 ? r : -ENOENT;
        }
        if (supervisor_signal(b->priv, a->name, SIGTERM, true) == -ESRCH)
                return 0;
        if (supervisor_wait(b->priv, a->name, (int)grace_sec * 1000) == 0)
                return 0;
        log_debug("%s ignored SIGTERM for %u s, killing it", a->machine, grace_sec);
        if (supervisor_signal(b->priv, a->name, SIGKILL, true) == -ESRCH)
                return 0;
        return wait_killed(b, a, ret_error);
}

static int process_destroy(Backend *b, const BackendAgent *a, char **ret_error)
{
        unsigned grace = b->cfg->stop_grace > 0 ? (unsigned)b->cfg->stop_grace : 0;
        int r = record_exists(b, a);
        if (r < 0) {
                set_error(ret_error, "cannot destroy %s: %s", a->machine, strerror(-r));
                return r;
        }
        if (r == 0 && !supervisor_running(b->priv, a->name, NULL))
                return 0;
        r = b->ops->stop(b, a, grace, ret_error);
        if (r < 0 && r != -ENOENT)
                return r;
        _cleanup_free_ char *rec = record_dir(b, a->machine);
        if (!rec)
                return -ENOMEM;
        r = fsutil_rm_rf(rec);
        if (r < 0) {
                set_error(ret_error, "cannot destroy %s: cannot remove %s: %s", a->machine, rec,
                          strerror(-r));
                return r;
        }
        return 0;
}

static int process_status(Backend *b, const BackendAgent *a, ContainerState *ret, char **ret_error)
{
        int r = record_exists(b, a);
        if (r < 0) {
                set_error(ret_error, "cannot tell the state of %s: %s", a->machine, strerror(-r));
                return r;
        }
        *ret = r == 0                                       ? CONTAINER_GONE
               : supervisor_running(b->priv, a->name, NULL) ? CONTAINER_UP
                                                            : CONTAINER_DOWN;
        return 0;
}

static int process_list(Backend *b, char ***ret, char **ret_error)
{
        _cleanup_free_ char *top = record_dir(b, NULL);
        if (!top)
                return -ENOMEM;
        size_t n = 0, cap = 8;
        _cleanup_strv_free_ char **v = calloc(cap + 1, sizeof(char *));
        if (!v)
                return -ENOMEM;
        DIR *d = opendir(top);
        if (!d && errno != ENOENT) {
                int r = -errno;
                set_error(ret_error, "cannot list containers in %s: %s", top, strerror(-r));
                return r;
        }
        struct dirent *e;
        while (d && (e = readdir(d))) {
                if (e->d_name[0] == '.')
                        continue;
                struct stat st;
                if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
                    !S_ISDIR(st.st_mode))
                        continue;
                if (n == cap) {
                        char **p = realloc(v, (cap * 2 + 1) * sizeof(char *));
                        if (!p) {
                                closedir(d);
                                return -ENOMEM;
                        }
                        v = p;
                        cap *= 2;
                }
                v[n] = strdup(e->d_name);
                if (!v[n]) {
                        closedir(d);
                        return -ENOMEM;
                }
                v[++n] = NULL;
        }
        if (d)
                closedir(d);
        *ret = TAKE_PTR(v);
        return 0;
}

static int process_run(Backend *b, const BackendAgent *a, char *const argv[], BackendRun *ret,
                       char **ret_error)
{
        if (!argv || !argv[0]) {
                set_error(ret_error, "nothing to run in %s", a->machine);
                return -EINVAL;
        }
        int r = record_exists(b, a);
        if (r <= 0) {
                set_error(ret_error, "cannot run %s in %s: it does not exist", argv[0], a->machine);
                return r < 0 ? r : -ENOENT;
        }
        _cleanup_strv_free_ char **env = NULL;
        r = backend_payload_env(b, a, false, &env);
        if (r < 0)
                return r;
        uint64_t timeout_ms = b->cfg->op_timeout > 0 ? (uint64_t)b->cfg->op_timeout * 1000u : 0;
        _cleanup_(backend_run_done) BackendRun run = {};
        /* each stream keeps its last PROC_OUTPUT_MAX bytes (the end says what went wrong) */
        r = proc_run(argv, env, a->state_dir, timeout_ms, &run);
        if (r == -ENOENT || r == -EACCES || r == -ENOEXEC) {
                /* what a shell would say: the command ran and could not be executed */
                if (asprintf(&run.err, "%s: %s\n", argv[0], strerror(-r)) < 0) {
                        run.err = NULL;
                        return -ENOMEM;
                }
                run.out = strdup("");
                if (!run.out)
                        return -ENOMEM;
                run.status = r == -ENOENT ? 127 : 126;
        } else if (r == -ETIMEDOUT) {
                set_error(ret_error, "%s in %s took longer than %lld s and was killed", argv[0],
                          a->machine, (long long)b->cfg->op_timeout);
                return r;
        } else if (r < 0) {
                set_error(ret_error, "cannot run %s in %s: %s", argv[0], a->machine, strerror(-r));
                return r == -ENOMEM ? r : -EIO;
        }
        *ret = run;
        run = (BackendRun){};
        return 0;
}

const BackendOps backend_process_ops = {
        .name = "process",
        .isolated = false,
        .supervised = true,
        .init = process_init,
        .done = process_done,
        .create = process_create,
        .update = process_update,
        .start = process_start,
        .stop = process_stop,
        .destroy = process_destroy,
        .status = process_status,
        .list = process_list,
        .run = process_run,
        .logs = process_logs,
};
