/* Backend discovery: probes PATH and privileges; never runs anything. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "cleanup.h"

const char *const backend_names[] = {"nixos-container", "nspawn", "process", NULL};

static bool on_path(const char *prog)
{
        const char *path = getenv("PATH");
        if (!path || !*path)
                path = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";
        _cleanup_free_ char *copy = strdup(path);
        if (!copy)
                return false;
        char *save = NULL;
        for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
                char full[4096];
                snprintf(full, sizeof(full), "%s/%s", dir, prog);
                if (access(full, X_OK) == 0)
                        return true;
        }
        return false;
}

bool backend_available(const char *name, const char **ret_reason)
{
        const char *why = "unknown backend";
        bool ok = false;
        if (strcmp(name, "nixos-container") == 0) {
                ok = on_path("nixos-container");
                why = ok ? "nixos-container is on PATH" : "nixos-container is not on PATH";
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

int backend_pick(const char *choice, bool dev, const char **ret_name, const char **ret_reason)
{
        if (strcmp(choice, "auto") != 0) {
                for (const char *const *n = backend_names; *n; n++)
                        if (strcmp(*n, choice) == 0) {
                                const char *why;
                                bool ok = backend_available(*n, &why);
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
                if (backend_available(*n, &why)) {
                        *ret_name = *n;
                        *ret_reason = why;
                        return 0;
                }
        }
        *ret_name = "process";
        *ret_reason = "nothing better is available";
        return 0;
}
