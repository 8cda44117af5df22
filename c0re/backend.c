/* Container backends: discovery (which can run here), construction, and the payload every
 * nspawn or process agent runs.  The operations live in backend_*.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "cleanup.h"
#include "fsutil.h"

const char *const backend_names[] = {"nixos-container", "nspawn", "process", NULL};

static bool on_path(const char *prog)
{
        _cleanup_free_ char *p = fsutil_find_program(prog);
        return p != NULL;
}

bool backend_available(const HiveConfig *cfg, const char *name, const char **ret_reason)
{
        const char *why = "unknown backend";
        bool ok = false;
        if (strcmp(name, "nixos-container") == 0) {
                ok = on_path(cfg->nixos_container);
                why = ok ? "nixos-container is installed" : "nixos-container is not installed";
        } else if (strcmp(name, "nspawn") == 0) {
                bool root = geteuid() == 0;
                bool bin = on_path("systemd-nspawn");
                ok = root && bin;
                why = ok     ? "running as root and systemd-nspawn is on PATH"
                      : !bin ? "systemd-nspawn is not on PATH (Debian: apt-get install "
                               "systemd-container)"
                             : "systemd-nspawn needs root";
        } else if (strcmp(name, "process") == 0) {
                ok = true;
                why = "plain child processes work everywhere (no isolation)";
        }
        if (ret_reason)
                *ret_reason = why;
        return ok;
}

int backend_pick(const HiveConfig *cfg, const char **ret_name, const char **ret_reason)
{
        const char *choice = cfg->backend;
        bool dev = cfg->dev;
        if (strcmp(choice, "auto") != 0) {
                for (const char *const *n = backend_names; *n; n++)
                        if (strcmp(*n, choice) == 0) {
                                const char *why;
                                bool ok = backend_available(cfg, *n, &why);
                                *ret_name = *n;
                                *ret_reason = why;
                                return ok ? 0 : -ENODEV;
                        }
                *ret_reason = "unknown backend";
                return -EINVAL;
        }
        /* --dev never picks nixos-container: a newcomer's machine is not a NixOS host. */
        for (const char *const *n = dev ? backend_names + 1 : backend_names; *n; n++) {
                const char *why;
                if (backend_available(cfg, *n, &why)) {
                        *ret_name = *n;
                        *ret_reason = why;
                        return 0;
                }
        }
        *ret_name = "process";
        *ret_reason = "nothing better is available";
        return 0;
}

const char *container_state_to_string(ContainerState s)
{
        switch (s) {
        case CONTAINER_GONE:
                return "gone";
        case CONTAINER_DOWN:
                return "down";
        case CONTAINER_UP:
                return "up";
        }
        return "unknown";
}

void backend_run_done(BackendRun *r)
{
        free(r->out);
        free(r->err);
        r->out = r->err = NULL;
}

int backend_new(const char *name, const HiveConfig *cfg, BackendExitFn on_exit, void *userdata,
                Backend **ret)
{
        static const BackendOps *const all[] = {&backend_nixos_container_ops, &backend_nspawn_ops,
                                                &backend_process_ops};
        const BackendOps *ops = NULL;
        for (size_t i = 0; i < ELEMENTSOF(all); i++)
                if (strcmp(all[i]->name, name) == 0)
                        ops = all[i];
        if (!ops)
                return -EINVAL;
        _cleanup_free_ Backend *b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        *b = (Backend){.ops = ops, .cfg = cfg, .on_exit = on_exit, .on_exit_userdata = userdata};
        if (ops->init) {
                int r = ops->init(b);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(b);
        return 0;
}

Backend *backend_free(Backend *b)
{
        if (!b)
                return NULL;
        if (b->ops->done)
                b->ops->done(b);
        free(b);
        return NULL;
}

/* dir/prog if it is executable: malloc'ed path, or NULL. */
static char *exec_in(const char *dir, const char *prog)
{
        char *p = NULL;
        if (asprintf(&p, "%s/%s", dir, prog) < 0)
                return NULL;
        if (access(p, X_OK) == 0)
                return p;
        free(p);
        return NULL;
}

static char *find_harness(const char *prog)
{
        char self[4096];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n > 0) {
                self[n] = '\0';
                char *slash = strrchr(self, '/');
                if (slash) {
                        *slash = '\0';
                        char *p = exec_in(self, prog);
                        if (p)
                                return p;
                        _cleanup_free_ char *build = NULL;
                        if (asprintf(&build, "%s/../ag3nt", self) >= 0 &&
                            (p = exec_in(build, prog)))
                                return p;
                }
        }
        return fsutil_find_program(prog);
}

int backend_payload_argv(const Backend *b, const BackendAgent *a, char ***ret_argv, char **ret_dir,
                         char **ret_error)
{
        _cleanup_strv_free_ char **argv = calloc(4, sizeof(char *));
        if (!argv)
                return -ENOMEM;
        *ret_dir = NULL;
        if (b->cfg->agent_command) {
                argv[0] = strdup("/bin/sh");
                argv[1] = strdup("-c");
                argv[2] = strdup(b->cfg->agent_command);
                if (!argv[0] || !argv[1] || !argv[2])
                        return -ENOMEM;
                *ret_argv = TAKE_PTR(argv);
                return 0;
        }
        const char *prog = a->manager ? "hive-m1nd" : "hive-ag3nt";
        char *path = find_harness(prog);
        if (!path) {
                if (ret_error &&
                    asprintf(ret_error,
                             "cannot start %s: the harness %s was found neither next to "
                             "hive-c0re nor on PATH (build ag3nt/, or run the daemon with "
                             "--agent-command CMD)",
                             a->machine, prog) < 0)
                        *ret_error = NULL;
                return -ENOEXEC;
        }
        argv[0] = path;
        argv[1] = strdup("serve");
        if (!argv[1])
                return -ENOMEM;
        char *slash = strrchr(path, '/');
        *ret_dir = strndup(path, (size_t)(slash - path));
        if (!*ret_dir)
                return -ENOMEM;
        *ret_argv = TAKE_PTR(argv);
        return 0;
}

/* Variables backend_payload_env() sets itself, which --payload-env may not replace. */
static const char *const payload_env_fixed[] = {"PATH",        "HOME",      "HIVE_LABEL",
                                                "HIVE_SOCKET", "HIVE_PORT", "HIVE_STATE_DIR"};

bool backend_payload_env_fixed(const char *name)
{
        for (size_t i = 0; i < ELEMENTSOF(payload_env_fixed); i++)
                if (strcmp(payload_env_fixed[i], name) == 0)
                        return true;
        return false;
}

/* Sets key=value in env (n entries, room for one more), replacing an entry of that key. */
static int env_add(char **env, size_t *n, const char *key, const char *value)
{
        if (!value)
                return 0;
        char *e = NULL;
        if (asprintf(&e, "%s=%s", key, value) < 0)
                return -ENOMEM;
        size_t len = strlen(key);
        for (size_t i = 0; i < *n; i++)
                if (strncmp(env[i], key, len) == 0 && env[i][len] == '=') {
                        free(env[i]);
                        env[i] = e;
                        return 0;
                }
        env[(*n)++] = e;
        return 0;
}

int backend_payload_env(const Backend *b, const BackendAgent *a, bool in_container, char ***ret_env)
{
        size_t extra = strv_length(b->cfg->payload_env);
        _cleanup_strv_free_ char **env = calloc(9 + extra, sizeof(char *));
        if (!env)
                return -ENOMEM;
        size_t n = 0;
        char port[16];
        snprintf(port, sizeof(port), "%u", (unsigned)a->port);
        _cleanup_free_ char *sock = NULL;
        if (asprintf(&sock, "%s/mcp.sock", in_container ? "/run/hive" : a->sock_dir) < 0)
                return -ENOMEM;
        const char *path = getenv("PATH");
        if (in_container || !path)
                path = "/opt/hive/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        if (env_add(env, &n, "PATH", path) < 0 || env_add(env, &n, "LANG", getenv("LANG")) < 0 ||
            env_add(env, &n, "TERM", getenv("TERM")) < 0 ||
            env_add(env, &n, "HOME", in_container ? "/state" : a->state_dir) < 0 ||
            env_add(env, &n, "HIVE_LABEL", a->name) < 0 ||
            env_add(env, &n, "HIVE_SOCKET", sock) < 0 || env_add(env, &n, "HIVE_PORT", port) < 0 ||
            env_add(env, &n, "HIVE_STATE_DIR", in_container ? "/state" : a->state_dir) < 0)
                return -ENOMEM;
        /* --payload-env, checked by config_finalize: never a fixed name; LANG and TERM may be
         * replaced */
        for (size_t i = 0; i < extra; i++) {
                const char *e = b->cfg->payload_env[i], *eq = strchr(e, '=');
                if (!eq)
                        continue;
                _cleanup_free_ char *key = strndup(e, (size_t)(eq - e));
                if (!key)
                        return -ENOMEM;
                if (backend_payload_env_fixed(key))
                        continue;
                if (env_add(env, &n, key, eq + 1) < 0)
                        return -ENOMEM;
        }
        *ret_env = TAKE_PTR(env);
        return 0;
}
