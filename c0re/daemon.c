/* Daemon start-up and shutdown: directories, the single-instance lock, the store, host.sock,
 * signals and readiness. */
#define LOG_SUBSYSTEM "daemon"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "actions.h"
#include "agent_server.h"
#include "approvals.h"
#include "backend.h"
#include "broker.h"
#include "cleanup.h"
#include "client.h"
#include "crash_watch.h"
#include "daemon.h"
#include "events.h"
#include "fsutil.h"
#include "hive-config.h"
#include "host_verbs.h"
#include "log.h"
#include "repos.h"
#include "scheduler.h"
#include "timeutil.h"
#include "worker.h"

#define ADMIN_GROUP       "hive-admin"
#define OPERATION_WORKERS 4

static bool host_peer_allowed(uid_t uid, gid_t gid, void *userdata)
{
        Daemon *d = userdata;
        if (uid == 0 || uid == geteuid())
                return true;
        if (d->admin_gid == (gid_t)-1)
                return false;
        if (gid == d->admin_gid)
                return true;
        struct passwd *pw = getpwuid(uid);
        if (!pw)
                return false;
        gid_t groups[256];
        int n = (int)ELEMENTSOF(groups);
        if (getgrouplist(pw->pw_name, pw->pw_gid, groups, &n) < 0)
                return false;
        for (int i = 0; i < n; i++)
                if (groups[i] == d->admin_gid)
                        return true;
        return false;
}

static bool gate_batch_open(void *userdata)
{
        Daemon *d = userdata;
        return store_batch_open(d->store);
}

static uint64_t gate_durable_mark(void *userdata)
{
        Daemon *d = userdata;
        return store_durable_mark(d->store);
}

/* Until the flusher runs, commits flush themselves (synchronous=FULL). */
static uint64_t gate_flushed_mark(void *userdata)
{
        Daemon *d = userdata;
        return d->walflush ? walflush_flushed(d->walflush) : UINT64_MAX;
}

static const ServerGateOps gate_ops = {
        .batch_open = gate_batch_open,
        .durable_mark = gate_durable_mark,
        .flushed_mark = gate_flushed_mark,
};

void daemon_post_event(Daemon *d, const char *kind, json_t *payload)
{
        if (!d->events) {
                json_decref(payload);
                return;
        }
        if (d->n_pending_events == d->cap_pending_events) {
                size_t cap = d->cap_pending_events ? d->cap_pending_events * 2 : 64;
                DaemonEvent *v = realloc(d->pending_events, cap * sizeof(*v));
                if (!v) {
                        log_error("out of memory: event %s not published", kind);
                        json_decref(payload);
                        return;
                }
                d->pending_events = v;
                d->cap_pending_events = cap;
        }
        d->pending_events[d->n_pending_events++] = (DaemonEvent){kind, payload};
}

void daemon_agent_changed(Daemon *d, const char *name)
{
        for (size_t i = 0; i < d->n_pending_events; i++) {
                const DaemonEvent *e = &d->pending_events[i];
                const char *n = json_string_value(json_object_get(e->payload, "name"));
                if (n && strcmp(n, name) == 0 && strcmp(e->kind, "agent_status_changed") == 0)
                        return;
        }
        daemon_post_event(d, "agent_status_changed", json_pack("{s:s}", "name", name));
}

/* Publishes (after a good commit) or drops (after a failed one) the round's events.  Any a
 * subscriber posts meanwhile wait for the next round. */
static void publish_pending(Daemon *d, int commit_result)
{
        size_t n = d->n_pending_events;
        if (n == 0)
                return;
        for (size_t i = 0; i < n; i++) {
                DaemonEvent e = d->pending_events[i]; /* a subscriber may grow the list */
                if (commit_result >= 0)
                        events_publish(d->events, e.kind, e.payload);
                else
                        json_decref(e.payload);
        }
        memmove(d->pending_events, d->pending_events + n,
                (d->n_pending_events - n) * sizeof(DaemonEvent));
        d->n_pending_events -= n;
}

/* WAL upkeep after a commit.  A checkpointer that runs beside a busy writer never lets the
 * WAL start over (it restarts only when a write begins with every frame already copied),
 * so the WAL would grow without end and every flush would extend the file.  The scheduler
 * thread copies the bulk; once it is nearly done, the loop copies the short tail itself
 * (a small write and two flushes; the thread has already written out the pages it copied,
 * so the database's flush has only the tail's to write), and the next write restarts the
 * WAL.  That copy stops the loop for a millisecond or two, so it waits until the loop has
 * had nothing to do for WAL_QUIET_MS, unless the WAL has grown past WAL_FORCE_FRAMES (a
 * load that never pauses). */
#define WAL_CHECKPOINT_FRAMES 1000
#define WAL_TAIL_FRAMES       256
#define WAL_FORCE_FRAMES      16384
#define WAL_FORCE_TAIL_FRAMES 2048
#define WAL_QUIET_MS          20 /* "nothing to do": no request for this long */

/* Whether the scheduler has copied all but the last `tail` frames. */
static bool wal_tail_ready(Daemon *d, int frames, int tail)
{
        int done = scheduler_checkpointed(d->scheduler);
        return done > 0 && done <= frames && frames - done <= tail;
}

/* Its debug line is what the benchmark (tests/bench/broker_bench.py) reads to check that a
 * checkpoint never holds the loop, and so every send of that moment, for over 5 ms. */
static void wal_copy_tail(Daemon *d)
{
        int log_frames = 0, copied = 0;
        uint64_t t0 = timeutil_mono_usec();
        bool done = store_checkpoint(d->store, &log_frames, &copied) >= 0 && copied == log_frames;
        if (done)
                scheduler_wal_restarted(d->scheduler);
        log_debug("copying the WAL's last frames held the main loop %.2f ms (%s)",
                  (double)(timeutil_mono_usec() - t0) / 1000.0,
                  done ? "the WAL starts over" : "not all copied: the WAL goes on");
}

static void daemon_wal_upkeep(Daemon *d)
{
        int frames = store_wal_frames(d->store);
        if (frames < WAL_CHECKPOINT_FRAMES)
                return;
        /* Past WAL_FORCE_FRAMES a longer tail is copied at once: under a load that never
         * pauses, the scheduler never gets within WAL_TAIL_FRAMES of a busy writer. */
        if (frames >= WAL_FORCE_FRAMES && wal_tail_ready(d, frames, WAL_FORCE_TAIL_FRAMES)) {
                wal_copy_tail(d);
                return;
        }
        if (wal_tail_ready(d, frames, WAL_TAIL_FRAMES)) {
                loop_want_idle(d->loop);
                return;
        }
        if (frames < d->wal_kick_frames || frames - d->wal_kick_frames >= WAL_TAIL_FRAMES) {
                d->wal_kick_frames = frames;
                d->scheduler_dirty = true; /* ask the thread for the bulk, now and then */
        }
}

/* The WAL grows to about WAL_FORCE_FRAMES under a load that never pauses, and keeps that
 * length (sqlite writes it from its start again after a restart); until then every flush
 * also writes the file's new size.  Pre-writing that length at start-up (about 20 MiB, 30-45 ms
 * on the benchmark's disk) makes those flushes the cheaper kind from the first send. */
static void daemon_prewrite_wal(Daemon *d)
{
        int64_t added = 0;
        uint64_t t0 = timeutil_mono_usec();
        int r = store_prewrite_wal(d->store, WAL_FORCE_FRAMES + WAL_FORCE_FRAMES / 4, &added);
        if (r < 0)
                log_warning_errno(r, "cannot pre-write the WAL file, its first flushes will be "
                                     "slower: %m");
        else if (added > 0)
                log_debug("pre-wrote %.1f MiB of the WAL file in %.0f ms",
                          (double)added / (1024.0 * 1024.0),
                          (double)(timeutil_mono_usec() - t0) / 1000.0);
}

/* The loop is idle: copy the tail if it is (still) ready. */
static void on_idle(void *userdata)
{
        Daemon *d = userdata;
        int frames = store_wal_frames(d->store);
        if (frames >= WAL_CHECKPOINT_FRAMES && wal_tail_ready(d, frames, WAL_TAIL_FRAMES))
                wal_copy_tail(d);
}

/* After every loop round: commit the write batch once, hand the durable writes to the
 * flusher, and release the answers that waited for the commit (group commit). */
static void daemon_commit(void *userdata)
{
        Daemon *d = userdata;
        for (int round = 0; round < 2; round++) {
                /* Answers released in the first round may have written (a lease dropped on a
                 * closed connection): commit that too. */
                if (round > 0 && !store_batch_open(d->store))
                        break;
                int r = store_batch_commit(d->store);
                publish_pending(d, r);
                uint64_t mark;
                if (d->walflush && store_take_flush(d->store, &mark))
                        walflush_request(d->walflush, mark);
                server_gate_committed(d->gate, r);
                if (round == 0)
                        daemon_wal_upkeep(d);
        }
        if (d->scheduler_dirty) {
                d->scheduler_dirty = false;
                scheduler_kick(d->scheduler);
        }
}

/* The flusher finished a flush (posted from its thread): release what it covered. */
static void on_flushed(void *userdata)
{
        Daemon *d = userdata;
        int error = 0;
        (void)walflush_done(d->walflush, &error);
        server_gate_flushed(d->gate, error);
}

/* Runs on the flusher thread. */
static void flush_notify(void *userdata)
{
        Daemon *d = userdata;
        if (loop_post(d->loop, on_flushed, d) < 0)
                log_error("cannot wake the main loop after a flush: answers may be late");
}

/* The scheduler delivered messages: wake the receivers parked on those inboxes. */
static void on_scheduler(LoopSource *s, int fd, uint32_t events, void *userdata)
{
        Daemon *d = userdata;
        char buf[4096];
        ssize_t k = read(fd, buf, sizeof(buf) - 1);
        if (k <= 0)
                return;
        buf[k] = '\0';
        char *save = NULL;
        for (char *name = strtok_r(buf, "\n", &save); name; name = strtok_r(NULL, "\n", &save)) {
                agent_server_wake(d->agents, name);
                daemon_agent_changed(d, name); /* a reminder fired or a question expired */
        }
}

/* A supervised child exited (called on the backend's thread). */
static void on_container_exit(void *userdata, const char *name)
{
        Daemon *d = userdata;
        crash_watch_check_now(d, name);
}

static void on_signal(LoopSource *s, int fd, uint32_t events, void *userdata)
{
        Daemon *d = userdata;
        struct signalfd_siginfo si;
        if (read(fd, &si, sizeof(si)) != sizeof(si))
                return;
        log_info("received %s, shutting down", strsignal((int)si.ssi_signo));
        loop_quit(d->loop);
}

/* Takes <run>/hive-c0re.lock.  -EADDRINUSE (logged) when another daemon holds it. */
static int take_lock(Daemon *d)
{
        _cleanup_free_ char *path = NULL;
        if (asprintf(&path, "%s/hive-c0re.lock", d->cfg->run_dir) < 0)
                return -ENOMEM;
        _cleanup_close_ int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0)
                return log_error_errno(-errno, "cannot open %s: %m", path);
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                char buf[32] = "";
                ssize_t k = pread(fd, buf, sizeof(buf) - 1, 0);
                long pid = k > 0 ? strtol(buf, NULL, 10) : 0;
                _cleanup_free_ char *sock = config_host_socket(d->cfg);
                if (pid > 0)
                        return log_error_errno(-EADDRINUSE,
                                               "another hive-c0re (pid %ld) is already serving "
                                               "%s; stop it first",
                                               pid, sock ? sock : d->cfg->run_dir);
                return log_error_errno(-EADDRINUSE,
                                       "another hive-c0re is already serving %s; stop it first",
                                       sock ? sock : d->cfg->run_dir);
        }
        char buf[32];
        int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
        if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)n, 0) != n)
                log_warning_errno(-errno, "cannot write the pid to %s: %m", path);
        d->lock_fd = TAKE_FD(fd);
        return 0;
}

/* The socket path must be free: refuse if something answers there, remove a stale file. */
static int clear_socket_path(const char *path)
{
        int fd = -1;
        int r = client_connect(path, &fd);
        if (r == 0) {
                close(fd);
                return log_error_errno(-EADDRINUSE,
                                       "something is already listening on %s; stop it first", path);
        }
        if (r == -ENOENT)
                return 0;
        if (r == -ECONNREFUSED) {
                log_info("removing stale socket %s", path);
                if (unlink(path) < 0 && errno != ENOENT)
                        return log_error_errno(-errno, "cannot remove stale socket %s: %m", path);
                return 0;
        }
        return log_error_errno(r, "cannot check %s: %m", path);
}

static int daemon_start(Daemon *d)
{
        HiveConfig *c = d->cfg;
        int r = backend_pick(c, &d->backend, &d->backend_reason);
        if (r < 0)
                return log_error_errno(r, "backend %s cannot run here: %s", c->backend,
                                       d->backend_reason);
        log_info("backend %s: %s", d->backend, d->backend_reason);
        /* A NixOS container's payload is started by its own configuration, not by us. */
        if (c->payload_env && c->payload_env[0] && strcmp(d->backend, "nixos-container") == 0)
                log_warning("--payload-env does not reach nixos-container payloads (their NixOS "
                            "configuration starts them); set the variables in the agent's config "
                            "instead");

        r = fsutil_mkdir_p(c->state_dir, 0750);
        if (r < 0)
                return log_error_errno(r, "cannot create the state directory %s: %m", c->state_dir);
        r = fsutil_mkdir_p(c->run_dir, 0751);
        if (r < 0 || chmod(c->run_dir, 0751) < 0)
                return log_error_errno(r < 0 ? r : -errno, "cannot create the run directory %s: %m",
                                       c->run_dir);

        r = take_lock(d);
        if (r < 0)
                return r;
        _cleanup_free_ char *sock = config_host_socket(c);
        if (!sock)
                return -ENOMEM;
        r = clear_socket_path(sock);
        if (r < 0)
                return r;

        _cleanup_free_ char *db = NULL;
        if (asprintf(&db, "%s/hive.sqlite", c->state_dir) < 0)
                return -ENOMEM;
        r = store_open(db, &d->store);
        if (r < 0)
                return log_error_errno(r, "cannot open the database %s: %m", db);
        r = store_manual_checkpoints(d->store);
        if (r < 0)
                return log_error_errno(r, "cannot configure the database: %m");
        daemon_prewrite_wal(d);

        r = events_new(&d->events);
        if (r < 0)
                return r;

        r = loop_new(&d->loop);
        if (r < 0)
                return log_error_errno(r, "cannot create the main loop: %m");

        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);
        d->signal_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        if (d->signal_fd < 0)
                return log_error_errno(-errno, "signalfd: %m");
        r = loop_add(d->loop, d->signal_fd, EPOLLIN, on_signal, d, &d->signal_src);
        if (r < 0)
                return r;

        r = broker_clear_leases(d->store);
        if (r > 0)
                log_info("offering %d message(s) leased before the restart again", r);
        r = store_batch_commit(d->store);
        if (r < 0)
                return log_error_errno(r, "cannot clear old leases: %m");
        /* From here on commits do not wait for the disk: the flusher thread does. */
        const char *wal = store_wal_path(d->store);
        if (wal) {
                r = walflush_new(wal, flush_notify, d, &d->walflush);
                if (r < 0)
                        return log_error_errno(r, "cannot start the WAL flusher thread: %m");
                store_defer_flush(d->store);
        }
        d->gate = server_gate_new(&gate_ops, d);
        if (!d->gate)
                return -ENOMEM;
        r = agent_server_new(d, &d->agents);
        if (r < 0)
                return log_error_errno(r, "cannot create the agent sockets: %m");
        loop_set_post(d->loop, daemon_commit, d);
        loop_set_idle(d->loop, WAL_QUIET_MS, on_idle, d);

        r = worker_new(d->loop, OPERATION_WORKERS, &d->worker);
        if (r < 0)
                return log_error_errno(r, "cannot start the operations workers: %m");
        r = crash_watch_start(d, (unsigned)c->crash_interval, &d->crash_watch);
        if (r < 0)
                return log_error_errno(r, "cannot start the crash watcher: %m");
        r = backend_new(d->backend, c, on_container_exit, d, &d->containers);
        if (r < 0)
                return log_error_errno(r, "cannot set up the %s backend: %m", d->backend);
        r = actions_new(d, &d->actions);
        if (r < 0)
                return r;
        r = repos_global_init();
        if (r < 0)
                return log_error_errno(r, "cannot initialise libgit2: %m");
        r = approvals_recover(d);
        if (r < 0)
                return log_error_errno(r, "cannot recover the approvals: %m");
        _cleanup_free_ char *nix = fsutil_find_program("nix");
        if (!nix)
                log_warning("nix is not installed: approved config changes cannot be built, so "
                            "they fail (Debian: apt-get install nix-bin)");

        r = scheduler_start(db, &d->scheduler, &d->scheduler_fd);
        if (r < 0)
                return log_error_errno(r, "cannot start the scheduler thread: %m");
        r = loop_add(d->loop, d->scheduler_fd, EPOLLIN, on_scheduler, d, &d->scheduler_src);
        if (r < 0)
                return r;

        /* host.sock last: once it answers, everything else is up. */
        struct group *g = getgrnam(ADMIN_GROUP);
        d->admin_gid = g ? g->gr_gid : (gid_t)-1;
        ServerOptions so = {
                .table = &host_verb_table,
                .userdata = d,
                .one_shot = true,
                .mode = 0660,
                .gid = d->admin_gid,
                .max_clients = (unsigned)c->max_clients,
                .idle_timeout_sec = (unsigned)c->idle_timeout,
                .peer_allowed = host_peer_allowed,
                .gate = d->gate,
        };
        r = server_new(d->loop, sock, &so, &d->host);
        if (r < 0)
                return r;

        log_info("hive-c0re %s serving %s (state %s%s)", HIVE_VERSION, sock, c->state_dir,
                 c->dev ? ", development mode" : "");
        if (!d->containers->ops->isolated)
                log_warning("the %s backend does not isolate agents: they run as plain processes "
                            "of this user (development only)",
                            d->backend);
        return actions_boot(d->actions);
}

static void daemon_stop(Daemon *d)
{
        d->crash_watch = crash_watch_stop(d->crash_watch);
        if (d->actions)
                actions_shutdown(d->actions);
        d->worker = worker_free(d->worker);
        d->actions = actions_free(d->actions);
        d->containers = backend_free(d->containers);
        d->scheduler = scheduler_stop(d->scheduler);
        loop_remove(d->scheduler_src);
        if (d->scheduler_fd >= 0)
                close(d->scheduler_fd);
        /* Commit and flush what the last round wrote, and answer who waited for it. */
        if (d->store && d->gate)
                daemon_commit(d);
        int flush_error;
        d->walflush = walflush_free(d->walflush, &flush_error);
        if (d->gate)
                server_gate_flushed(d->gate, flush_error);
        d->agents = agent_server_free(d->agents);
        d->host = server_free(d->host);
        d->gate = server_gate_free(d->gate);
        if (d->store && store_batch_open(d->store))
                (void)store_batch_commit(d->store); /* leases dropped by the closes */
        loop_remove(d->signal_src);
        if (d->signal_fd >= 0)
                close(d->signal_fd);
        d->loop = loop_free(d->loop);
        d->store = store_close(d->store);
        d->events = events_free(d->events);
        for (size_t i = 0; i < d->n_pending_events; i++)
                json_decref(d->pending_events[i].payload);
        free(d->pending_events);
        d->pending_events = NULL;
        d->n_pending_events = d->cap_pending_events = 0;
        if (d->lock_fd >= 0)
                close(d->lock_fd);
}

int daemon_run(HiveConfig *cfg)
{
        Daemon d = {.cfg = cfg,
                    .lock_fd = -1,
                    .signal_fd = -1,
                    .scheduler_fd = -1,
                    .admin_gid = (gid_t)-1,
                    .lease_ms = cfg->lease_seconds * 1000};
        log_set_max_level(log_level_from_string(cfg->log_level));

        int r = daemon_start(&d);
        if (r >= 0) {
                (void)sd_notify(0, "READY=1\nSTATUS=serving host.sock");
                r = loop_run(d.loop);
                if (r < 0)
                        log_error_errno(r, "main loop failed: %m");
                (void)sd_notify(0, "STOPPING=1");
        }
        daemon_stop(&d);
        if (r >= 0)
                log_info("stopped");
        return r;
}
