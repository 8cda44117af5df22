/* The nspawn backend: each agent runs as the payload (PID 1) of a systemd-nspawn container
 * that is a supervised child of the daemon.  The container's root is a skeleton in
 * <state>/containers/<machine>/root/ (empty usr/ with the host's /usr bound read-only over
 * it, the host's bin/lib symlinks, a minimal etc/); /state and /run/hive are bound from the
 * agent's dirs, the harness (when not --agent-command) read-only at /opt/hive/bin.  The
 * manager also gets the agents' config repos: <state>/agents at /agents (read-write, it edits
 * the proposed repos), <state>/applied and <state>/meta read-only at /applied and /meta.
 *
 * Record dirs, priv (a Supervisor) and the operations that do not differ (init, done,
 * destroy, status, list, logs) come from backend_process_ops; run enters the running
 * container's namespaces with nsenter through the process backend's run. */
#define LOG_SUBSYSTEM "backend-nspawn"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "backend.h"
#include "cleanup.h"
#include "fsutil.h"
#include "log.h"
#include "supervise.h"

#define SETTLE_MS       300   /* a payload that is gone this soon after start failed */
#define SECOND_TERM_MS  5000  /* after the second SIGTERM, before SIGKILL */
#define KILL_WAIT_MS    10000 /* how long a SIGKILLed container may take to be reaped */
#define FAIL_TAIL_LINES 5
#define ARGV_MAX        128

/* Top-level host paths replicated in the root: symlinks copied as they are (merged /usr),
 * real directories bound read-only at start. */
static const char *const host_tops[] = {"bin", "sbin", "lib", "lib32", "lib64", "libx32"};

/* What only the manager sees: <state>/<dir> bound at /<dir>. */
static const struct {
        const char *dir;
        bool read_only;
} manager_binds[] = {
        {"agents", false}, /* the proposed config repos, which it edits */
        {"applied", true}, /* the applied repos with the daemon's tags */
        {"meta", true},    /* the meta flake */
};

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

static char *root_dir(const Backend *b, const char *machine)
{
        char *p = NULL;
        if (asprintf(&p, "%s/containers/%s/root", b->cfg->state_dir, machine) < 0)
                return NULL;
        return p;
}

static int write_at(int dfd, const char *name, const char *content)
{
        _cleanup_close_ int fd =
                openat(dfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0)
                return -errno;
        size_t n = strlen(content);
        ssize_t k = write(fd, content, n);
        if (k < 0)
                return -errno;
        return (size_t)k == n ? 0 : -EIO;
}

static int mkdir_at(int dfd, const char *path, mode_t mode)
{
        if (mkdirat(dfd, path, mode) < 0 && errno != EEXIST)
                return -errno;
        /* mkdir's mode is cut by the umask; tmp must really be 1777 */
        if (fchmodat(dfd, path, mode, 0) < 0)
                return -errno;
        return 0;
}

/* Builds the root skeleton in root (which must not exist).  On failure *ret_what names the
 * entry that failed. */
static int build_root(const char *root, const char *machine, const char **ret_what)
{
        static const char *const dirs[] = {"usr", "etc",      "state",        "run",  "run/hive",
                                           "opt", "opt/hive", "opt/hive/bin", "root", "var"};
        *ret_what = root;
        if (mkdir(root, 0755) < 0)
                return -errno;
        _cleanup_close_ int dfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (dfd < 0)
                return -errno;
        int r;
        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                *ret_what = dirs[i];
                if ((r = mkdir_at(dfd, dirs[i], strcmp(dirs[i], "root") == 0 ? 0700 : 0755)) < 0)
                        return r;
        }
        *ret_what = "tmp";
        if ((r = mkdir_at(dfd, "tmp", 01777)) < 0)
                return r;
        for (size_t i = 0; i < ELEMENTSOF(host_tops); i++) {
                char host[64], target[256];
                snprintf(host, sizeof(host), "/%s", host_tops[i]);
                *ret_what = host_tops[i];
                struct stat st;
                if (lstat(host, &st) < 0)
                        continue; /* e.g. no /lib64 on this host */
                if (S_ISLNK(st.st_mode)) {
                        ssize_t k = readlink(host, target, sizeof(target) - 1);
                        if (k < 0)
                                return -errno;
                        target[k] = '\0';
                        if (symlinkat(target, dfd, host_tops[i]) < 0)
                                return -errno;
                } else if (S_ISDIR(st.st_mode) && (r = mkdir_at(dfd, host_tops[i], 0755)) < 0)
                        return r;
        }
        _cleanup_free_ char *hostname = NULL, *hosts = NULL;
        if (asprintf(&hostname, "%s\n", machine) < 0 ||
            asprintf(&hosts, "127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t%s\n", machine) < 0)
                return -ENOMEM;
        const struct {
                const char *name, *content;
        } files[] = {
                {"etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"
                               "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"},
                {"etc/group", "root:x:0:\nnogroup:x:65534:\n"},
                {"etc/hostname", hostname},
                {"etc/hosts", hosts},
        };
        for (size_t i = 0; i < ELEMENTSOF(files); i++) {
                *ret_what = files[i].name;
                if ((r = write_at(dfd, files[i].name, files[i].content)) < 0)
                        return r;
        }
        return 0;
}

static int nspawn_create(Backend *b, const BackendAgent *a, char **ret_error)
{
        int r = backend_process_ops.create(b, a, ret_error);
        if (r < 0)
                return r;
        _cleanup_free_ char *root = root_dir(b, a->machine);
        const char *what = NULL;
        r = root ? build_root(root, a->machine, &what) : -ENOMEM;
        if (r < 0) {
                set_error(ret_error, "cannot create %s: building its root in %s failed at %s: %s",
                          a->machine, root ? root : "?", what ? what : "?", strerror(-r));
                char *rec = root ? strrchr(root, '/') : NULL;
                if (rec) {
                        *rec = '\0'; /* the record dir */
                        (void)fsutil_rm_rf(root);
                }
                return r;
        }
        return 0;
}

/* The host path of manager_binds[i], malloc'ed (NULL: out of memory). */
static char *manager_bind_path(const Backend *b, size_t i)
{
        char *p = NULL;
        if (asprintf(&p, "%s/%s", b->cfg->state_dir, manager_binds[i].dir) < 0)
                return NULL;
        return p;
}

/* For the manager: creates the host dirs of manager_binds (0755 when missing) and their
 * mount points in root.  0 or a negative errno, with a sentence. */
static int manager_prepare(const Backend *b, const BackendAgent *a, const char *root,
                           char **ret_error)
{
        _cleanup_close_ int dfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (dfd < 0) {
                int r = -errno;
                set_error(ret_error, "cannot start %s: cannot open its root %s: %s", a->machine,
                          root, strerror(-r));
                return r;
        }
        for (size_t i = 0; i < ELEMENTSOF(manager_binds); i++) {
                _cleanup_free_ char *host = manager_bind_path(b, i);
                if (!host)
                        return -ENOMEM;
                int r = fsutil_mkdir_p(host, 0755);
                if (r < 0) {
                        set_error(ret_error, "cannot start %s: cannot create %s: %s", a->machine,
                                  host, strerror(-r));
                        return r;
                }
                r = mkdir_at(dfd, manager_binds[i].dir, 0755);
                if (r < 0) {
                        set_error(ret_error, "cannot start %s: cannot create %s/%s: %s", a->machine,
                                  root, manager_binds[i].dir, strerror(-r));
                        return r;
                }
        }
        return 0;
}

static int nspawn_update(Backend *b, const BackendAgent *a, char **ret_error)
{
        return 0;
}

/* Whether nspawn should register with machined: only on a systemd-booted host with machined's
 * state dir present (never the case in our tests). */
static bool use_machined(void)
{
        return sd_booted() > 0 && access("/run/systemd/machines", F_OK) == 0;
}

typedef struct Argv {
        char *v[ARGV_MAX + 1];
        size_t n;
        bool full;
} Argv;

static void argv_done(Argv *v)
{
        for (size_t i = 0; i < v->n; i++)
                free(v->v[i]);
}

static void argv_addf(Argv *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void argv_addf(Argv *v, const char *fmt, ...)
{
        if (v->n >= ARGV_MAX) {
                v->full = true;
                return;
        }
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(&v->v[v->n], fmt, ap) < 0)
                v->full = true;
        else
                v->n++;
        va_end(ap);
}

/* The systemd-nspawn command line for a (in *v).  0, -EINVAL (a path nspawn cannot bind,
 * with a sentence), -ENOEXEC (no payload), -E2BIG or -ENOMEM. */
static int nspawn_argv(Backend *b, const BackendAgent *a, Argv *v, char **ret_error)
{
        _cleanup_strv_free_ char **payload = NULL;
        _cleanup_strv_free_ char **env = NULL;
        _cleanup_free_ char *harness_dir = NULL;
        _cleanup_free_ char *root = root_dir(b, a->machine);
        if (!root)
                return -ENOMEM;
        int r = backend_payload_argv(b, a, &payload, &harness_dir, ret_error);
        if (r < 0)
                return r;
        r = backend_payload_env(b, a, true, &env);
        if (r < 0)
                return r;
        /* --bind=SRC:DST splits at ':' */
        const char *binds[] = {a->state_dir, a->sock_dir, harness_dir};
        for (size_t i = 0; i < ELEMENTSOF(binds); i++)
                if (binds[i] && strchr(binds[i], ':')) {
                        set_error(ret_error,
                                  "cannot start %s: systemd-nspawn cannot bind %s (it holds a ':')",
                                  a->machine, binds[i]);
                        return -EINVAL;
                }
        if (a->manager && strchr(b->cfg->state_dir, ':')) {
                set_error(ret_error,
                          "cannot start %s: systemd-nspawn cannot bind %s/agents (it holds a ':')",
                          a->machine, b->cfg->state_dir);
                return -EINVAL;
        }

        argv_addf(v, "systemd-nspawn");
        argv_addf(v, "--quiet");
        /* the payload writes straight into the log (no pty: no CR LF, nothing relayed) */
        argv_addf(v, "--console=pipe");
        if (use_machined())
                argv_addf(v, "--register=yes");
        else {
                argv_addf(v, "--register=no");
                argv_addf(v, "--keep-unit");
        }
        argv_addf(v, "--directory=%s", root);
        argv_addf(v, "--machine=%s", a->machine);
        argv_addf(v, "--bind-ro=/usr");
        for (size_t i = 0; i < ELEMENTSOF(host_tops); i++) {
                char path[4096];
                struct stat st;
                snprintf(path, sizeof(path), "%s/%s", root, host_tops[i]);
                if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode))
                        argv_addf(v, "--bind-ro=/%s", host_tops[i]); /* not merged-/usr */
        }
        argv_addf(v, "--bind=%s:/state", a->state_dir);
        argv_addf(v, "--bind=%s:/run/hive", a->sock_dir);
        if (harness_dir)
                argv_addf(v, "--bind-ro=%s:/opt/hive/bin", harness_dir);
        for (size_t i = 0; a->manager && i < ELEMENTSOF(manager_binds); i++)
                argv_addf(v, "--bind%s=%s/%s:/%s", manager_binds[i].read_only ? "-ro" : "",
                          b->cfg->state_dir, manager_binds[i].dir, manager_binds[i].dir);
        argv_addf(v, "--kill-signal=SIGTERM");
        argv_addf(v, "--chdir=/state");
        for (char **e = env; *e; e++)
                argv_addf(v, "--setenv=%s", *e);
        argv_addf(v, "--");
        for (char **p = payload; *p; p++) {
                if (p == payload && harness_dir) {
                        const char *prog = strrchr(*p, '/');
                        argv_addf(v, "/opt/hive/bin/%s", prog ? prog + 1 : *p);
                } else
                        argv_addf(v, "%s", *p);
        }
        if (v->full)
                return v->n >= ARGV_MAX ? -E2BIG : -ENOMEM;
        return 0;
}

static int nspawn_start(Backend *b, const BackendAgent *a, char **ret_error)
{
        ContainerState st = CONTAINER_GONE;
        int r = backend_process_ops.status(b, a, &st, ret_error);
        if (r < 0)
                return r;
        if (st == CONTAINER_GONE) {
                set_error(ret_error, "cannot start %s: it does not exist", a->machine);
                return -ENOENT;
        }
        if (st == CONTAINER_UP)
                return 0;
        _cleanup_(argv_done) Argv v = {.n = 0};
        r = nspawn_argv(b, a, &v, ret_error);
        if (r < 0)
                return r;
        _cleanup_free_ char *log_dir = strdup(a->log_path);
        if (!log_dir)
                return -ENOMEM;
        char *slash = strrchr(log_dir, '/');
        if (slash && slash != log_dir)
                *slash = '\0';
        const char *dirs[] = {a->state_dir, a->sock_dir, slash ? log_dir : NULL};
        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                if (!dirs[i])
                        continue;
                r = fsutil_mkdir_p(dirs[i], 0700);
                if (r < 0) {
                        set_error(ret_error, "cannot start %s: cannot create %s: %s", a->machine,
                                  dirs[i], strerror(-r));
                        return r;
                }
        }
        if (a->manager) {
                _cleanup_free_ char *root = root_dir(b, a->machine);
                if (!root)
                        return -ENOMEM;
                r = manager_prepare(b, a, root, ret_error);
                if (r < 0)
                        return r;
        }
        /* nspawn itself needs little: the payload's environment goes in by --setenv */
        const char *path = getenv("PATH");
        _cleanup_free_ char *path_env = NULL;
        if (asprintf(&path_env, "PATH=%s",
                     path && *path ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin") <
            0)
                return -ENOMEM;
        char *env[] = {path_env, NULL};
        r = supervisor_start(b->priv, a->name, v.v, env, "/", a->log_path, ret_error);
        if (r == -EALREADY)
                return 0;
        if (r < 0)
                return r == -ENOMEM ? r : -EIO;
        if (supervisor_wait(b->priv, a->name, SETTLE_MS) == -ETIMEDOUT)
                return 0;
        int status = -1;
        (void)supervisor_last_exit(b->priv, a->name, &status);
        _cleanup_free_ char *tail = NULL;
        (void)backend_process_ops.logs(b, a, FAIL_TAIL_LINES, &tail);
        set_error(ret_error,
                  "%s exited right after its start (systemd-nspawn status %d); its log %s ends "
                  "with:\n%s",
                  a->machine, status, a->log_path, tail && *tail ? tail : "(nothing)");
        return -EIO;
}

/* The host pid of the payload (the container's PID 1): the child of nspawn (pid) whose
 * innermost pid is 1.  0 when there is none (yet), or a negative errno. */
static pid_t payload_pid(pid_t nspawn)
{
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)nspawn, (int)nspawn);
        _cleanup_free_ char *kids = NULL;
        size_t cap = 0;
        FILE *f = fopen(path, "re");
        if (!f)
                return errno == ENOENT ? 0 : -errno;
        ssize_t k = getline(&kids, &cap, f);
        fclose(f);
        if (k <= 0)
                return 0;
        char *save = NULL;
        for (char *t = strtok_r(kids, " \n", &save); t; t = strtok_r(NULL, " \n", &save)) {
                int child = atoi(t);
                char status[64], line[256];
                snprintf(status, sizeof(status), "/proc/%d/status", child);
                FILE *s = fopen(status, "re");
                if (!s)
                        continue;
                bool init = false;
                while (fgets(line, sizeof(line), s))
                        if (strncmp(line, "NSpid:", 6) == 0) {
                                char *last = strrchr(line, '\t');
                                int inner = last ? atoi(last + 1) : 0;
                                init = inner == 1 && strchr(line + 6, '\t') != last;
                                break;
                        }
                fclose(s);
                if (init)
                        return child;
        }
        return 0;
}

static int nspawn_stop(Backend *b, const BackendAgent *a, unsigned grace_sec, char **ret_error)
{
        Supervisor *s = b->priv;
        pid_t pid = 0;
        if (!supervisor_running(s, a->name, &pid)) {
                ContainerState st = CONTAINER_GONE;
                int r = backend_process_ops.status(b, a, &st, ret_error);
                if (r < 0 || st != CONTAINER_GONE)
                        return r;
                set_error(ret_error, "cannot stop %s: it does not exist", a->machine);
                return -ENOENT;
        }
        /* nspawn passes the first SIGTERM to the payload (--kill-signal) and lets it finish;
         * a second one ends the container at once. */
        if (supervisor_signal(s, a->name, SIGTERM, false) == -ESRCH ||
            supervisor_wait(s, a->name, (int)grace_sec * 1000) == 0)
                return 0;
        log_debug("%s did not stop %u s after SIGTERM, terminating it", a->machine, grace_sec);
        if (supervisor_signal(s, a->name, SIGTERM, false) == -ESRCH ||
            supervisor_wait(s, a->name, SECOND_TERM_MS) == 0)
                return 0;
        log_debug("%s did not terminate, killing it", a->machine);
        /* The payload has a session of its own: killing nspawn's group would leave it
         * running, so kill it first (that ends its PID namespace). */
        pid_t inner = payload_pid(pid);
        if (supervisor_running(s, a->name, NULL) && inner > 0)
                (void)kill(inner, SIGKILL);
        if (supervisor_signal(s, a->name, SIGKILL, true) == -ESRCH)
                return 0;
        if (supervisor_wait(s, a->name, KILL_WAIT_MS) == 0)
                return 0;
        set_error(ret_error, "%s did not exit %d s after SIGKILL", a->machine, KILL_WAIT_MS / 1000);
        return -ETIMEDOUT;
}

static int nspawn_run(Backend *b, const BackendAgent *a, char *const argv[], BackendRun *ret,
                      char **ret_error)
{
        if (!argv || !argv[0] || strchr(argv[0], '=')) {
                set_error(ret_error, "nothing runnable to run in %s", a->machine);
                return -EINVAL;
        }
        pid_t pid = 0;
        if (!supervisor_running(b->priv, a->name, &pid)) {
                ContainerState st = CONTAINER_GONE;
                int r = backend_process_ops.status(b, a, &st, ret_error);
                if (r < 0)
                        return r;
                set_error(ret_error, "cannot run %s in %s: it %s", argv[0], a->machine,
                          st == CONTAINER_GONE ? "does not exist" : "is not running");
                return st == CONTAINER_GONE ? -ENOENT : -ESRCH;
        }
        pid_t inner = payload_pid(pid);
        if (inner <= 0) {
                set_error(ret_error, "cannot run %s in %s: its payload process is not there",
                          argv[0], a->machine);
                return -ESRCH;
        }
        _cleanup_strv_free_ char **env = NULL;
        int r = backend_payload_env(b, a, true, &env);
        if (r < 0)
                return r;
        /* nsenter enters every namespace and the root and working directory of the payload;
         * env then replaces the host environment with the container's. */
        _cleanup_(argv_done) Argv v = {.n = 0};
        argv_addf(&v, "nsenter");
        argv_addf(&v, "--target=%d", (int)inner);
        argv_addf(&v, "--all");
        argv_addf(&v, "--root");
        argv_addf(&v, "--wd");
        argv_addf(&v, "--");
        argv_addf(&v, "/usr/bin/env");
        argv_addf(&v, "-i");
        argv_addf(&v, "--");
        for (char **e = env; *e; e++)
                argv_addf(&v, "%s", *e);
        for (char *const *p = argv; *p; p++)
                argv_addf(&v, "%s", *p);
        if (v.full)
                return v.n >= ARGV_MAX ? -E2BIG : -ENOMEM;
        return backend_process_ops.run(b, a, v.v, ret, ret_error);
}

/* The operations shared with the process backend (same record dirs, same priv). */
static int nspawn_init(Backend *b)
{
        return backend_process_ops.init(b);
}

static void nspawn_done(Backend *b)
{
        backend_process_ops.done(b);
}

static int nspawn_destroy(Backend *b, const BackendAgent *a, char **ret_error)
{
        return backend_process_ops.destroy(b, a, ret_error); /* stops through b->ops->stop */
}

static int nspawn_status(Backend *b, const BackendAgent *a, ContainerState *ret, char **ret_error)
{
        return backend_process_ops.status(b, a, ret, ret_error);
}

static int nspawn_list(Backend *b, char ***ret, char **ret_error)
{
        return backend_process_ops.list(b, ret, ret_error);
}

static int nspawn_logs(Backend *b, const BackendAgent *a, unsigned lines, char **ret_text)
{
        return backend_process_ops.logs(b, a, lines, ret_text);
}

const BackendOps backend_nspawn_ops = {
        .name = "nspawn",
        .isolated = true,
        .supervised = true,
        .init = nspawn_init,
        .done = nspawn_done,
        .destroy = nspawn_destroy,
        .status = nspawn_status,
        .list = nspawn_list,
        .logs = nspawn_logs,
        .create = nspawn_create,
        .update = nspawn_update,
        .start = nspawn_start,
        .stop = nspawn_stop,
        .run = nspawn_run,
};
