/* Container backends: one small interface (create, update, start, stop, destroy, status,
 * list, run, logs) and three implementations, picked once at start-up:
 *
 *   nixos-container  NixOS: shells out to the real tool (backend_nixos_container.c)
 *   nspawn           any Linux with systemd-nspawn, as root (backend_nspawn.c)
 *   process          the payload as a plain child, no isolation (backend_process.c)
 *
 * Operations are blocking and slow; they run on the operations workers (worker.c), never on
 * the main loop.  The caller serializes operations per container (one at a time for one
 * name); different containers may be operated on from different threads at once, so a
 * backend guards any state it shares between containers. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"

typedef enum ContainerState {
        CONTAINER_GONE, /* the backend has no such container */
        CONTAINER_DOWN, /* it exists and is not running */
        CONTAINER_UP,   /* it is running */
} ContainerState;

const char *container_state_to_string(ContainerState s);

/* What a backend is told about one agent.  All strings are owned by the caller. */
typedef struct BackendAgent {
        const char *name;      /* logical name, e.g. "a1"; the manager's is "hm1nd" */
        const char *machine;   /* container name: "h-<name>", or "hm1nd" for the manager */
        bool manager;          /* the manager gets the manager socket and harness */
        uint16_t port;         /* its web page port: HIVE_PORT */
        const char *state_dir; /* host path of its /state: <state>/agents/<name>/state */
        const char *sock_dir;  /* host dir holding its mcp.sock (bound at /run/hive) */
        const char *log_path;  /* host path of its console log (nspawn, process) */
        const char *flake;     /* "<state>/meta#<name>" for nixos-container create/update */
} BackendAgent;

/* A finished child: exit code (or 128+signal), captured output. */
typedef struct BackendRun {
        int status; /* exit code, or 128 + signal number */
        char *out;  /* stdout, NUL-terminated */
        char *err;  /* stderr, NUL-terminated */
} BackendRun;
void backend_run_done(BackendRun *r);

typedef struct Backend Backend;

/* Called from a backend's own thread when a child it supervises exits (name is the agent's
 * logical name).  Must be quick and thread-safe (the daemon posts to its loop). */
typedef void (*BackendExitFn)(void *userdata, const char *name);

/* Every operation returns 0 on success or a negative errno; on failure *ret_error (when
 * ret_error is non-NULL) is a malloc'ed sentence for the operator that names the container
 * and, when a tool failed, quotes the tool's own message.  Common errors:
 *   -ETIMEDOUT   the operation took longer than cfg->op_timeout (the child was killed)
 *   -EEXIST      create: the container exists
 *   -ENOENT      the container does not exist (status reports CONTAINER_GONE instead)
 *   -EIO         the tool or payload failed; the sentence says how
 *   -ENOEXEC     the payload cannot be run (harness or --agent-command missing) */
typedef struct BackendOps {
        const char *name;
        bool isolated;   /* false only for process: agent_status and the CLI say so */
        bool supervised; /* containers are the daemon's own children (nspawn, process) */
        int (*init)(Backend *b);
        void (*done)(Backend *b);
        /* Creates the container (never starts it).  nixos-container: create <machine>
         * --flake <flake>; on a failed create, destroy before reporting. */
        int (*create)(Backend *b, const BackendAgent *a, char **ret_error);
        /* Rebuilds it from a->flake (nixos-container update --flake); a no-op elsewhere. */
        int (*update)(Backend *b, const BackendAgent *a, char **ret_error);
        /* Starts it; returns once it runs (a payload that exits at once is a failure). */
        int (*start)(Backend *b, const BackendAgent *a, char **ret_error);
        /* Stops it: SIGTERM, then SIGKILL after grace_sec.  Stopping a stopped one is 0. */
        int (*stop)(Backend *b, const BackendAgent *a, unsigned grace_sec, char **ret_error);
        /* Removes the container (stops it first).  Destroying a missing one is 0.  Never
         * touches a->state_dir: the caller keeps or purges agent state. */
        int (*destroy)(Backend *b, const BackendAgent *a, char **ret_error);
        int (*status)(Backend *b, const BackendAgent *a, ContainerState *ret, char **ret_error);
        /* Machine names the backend knows (NULL-terminated, malloc'ed). */
        int (*list)(Backend *b, char ***ret, char **ret_error);
        /* Runs argv inside the running container; exit status and output in *ret. */
        int (*run)(Backend *b, const BackendAgent *a, char *const argv[], BackendRun *ret,
                   char **ret_error);
        /* The last `lines` lines of its console or journal, malloc'ed ("" when none). */
        int (*logs)(Backend *b, const BackendAgent *a, unsigned lines, char **ret_text);
} BackendOps;

struct Backend {
        const BackendOps *ops;
        const HiveConfig *cfg;
        BackendExitFn on_exit; /* may be NULL */
        void *on_exit_userdata;
        void *priv; /* the implementation's state */
};

extern const BackendOps backend_nixos_container_ops;
extern const BackendOps backend_nspawn_ops;
extern const BackendOps backend_process_ops;

/* Creates the backend called name ("nixos-container", "nspawn", "process") and runs its
 * init.  Returns 0, -EINVAL for an unknown name, or init's error. */
int backend_new(const char *name, const HiveConfig *cfg, BackendExitFn on_exit, void *userdata,
                Backend **ret);
Backend *backend_free(Backend *b);

/* Whether backend name can run here.  *ret_reason (static string) says why or why not. */
bool backend_available(const HiveConfig *cfg, const char *name, const char **ret_reason);

/* Resolves cfg's --backend choice ("auto" or a name) for this machine (--dev never picks
 * nixos-container).  Returns 0 and the
 * chosen name (static) with the reason for the choice, or -ENODEV when an explicitly named
 * backend cannot run here (with the reason). */
int backend_pick(const HiveConfig *cfg, const char **ret_name, const char **ret_reason);

/* Whether name is one of the variables backend_payload_env() always sets itself (PATH,
 * HOME, HIVE_LABEL, HIVE_SOCKET, HIVE_PORT, HIVE_STATE_DIR), which --payload-env may not
 * set. */
bool backend_payload_env_fixed(const char *name);

/* NULL-terminated list of every backend name, best first. */
extern const char *const backend_names[];

/* The payload argv for a (nspawn, process) agent: `/bin/sh -c CMD` for --agent-command,
 * otherwise the harness `<dir>/hive-ag3nt serve` (`hive-m1nd serve` for the manager), looked
 * up next to the running hive-c0re, in ../ag3nt/ beside it (the build tree), then on PATH.
 * *ret_dir is the harness's directory (NULL with --agent-command).  -ENOEXEC with a
 * sentence in *ret_error when the harness is nowhere. */
int backend_payload_argv(const Backend *b, const BackendAgent *a, char ***ret_argv, char **ret_dir,
                         char **ret_error);
/* The payload environment: the daemon's PATH, LANG, TERM, plus HOME, HIVE_LABEL,
 * HIVE_SOCKET, HIVE_PORT, HIVE_STATE_DIR (container paths for nspawn: /run/hive/mcp.sock and
 * /state; host paths for process), then cfg->payload_env (--payload-env NAME=VALUE), which
 * replaces LANG or TERM but never a fixed variable.  NULL-terminated, malloc'ed. */
int backend_payload_env(const Backend *b, const BackendAgent *a, bool in_container,
                        char ***ret_env);
