/* The meta flake: one git repo, <state>/meta, owned by the daemon.  Its flake.nix has one
 * input agent-<n> = git+file://<state>/applied/<n> per agent and one
 * nixosConfigurations.<n> each (the agent's nixosModules.default wrapped with its identity
 * and HIVE_* settings), plus the nixpkgs input (cfg->nixpkgs); no hyperhive input yet.  Its
 * main branch only ever records successful deploys: work is staged in the work tree and
 * either committed (meta_commit) or thrown away (meta_restore).
 *
 * All meta work is serialized behind one mutex: callers hold it with meta_lock()/
 * meta_unlock() around a whole prepare/build/finalize or abort.  nix runs through proc.c
 * (argv, timeout cfg->op_timeout, captured output), offline (no substituters), with
 * NIX_CONFIG enabling flakes.  Functions return 0 or a negative errno with a sentence in
 * *ret_error (may be NULL); *ret_log gets nix's output when asked for, also when the step
 * fails (the failed/<id> tag quotes it); it stays NULL only when nix could not be run. */
#pragma once

#include <stdint.h>

#include "config.h"
#include "proc.h"

typedef struct MetaAgent {
        const char *name;
        uint16_t port;
        bool manager;
} MetaAgent;

void meta_lock(void);
void meta_unlock(void);

/* Makes sure <state>/meta is a git repo with a commit on main (creating it with an empty
 * agent set), removes a stale .git/index.lock (the daemon holds the only writer), and
 * throws away anything staged or changed in the work tree (a half-done deploy of a killed
 * daemon).  Call at start-up, with the lock held. */
int meta_init(const HiveConfig *cfg, char **ret_error);

/* Regenerates flake.nix for these agents (in the work tree, not committed). */
int meta_write_flake(const HiveConfig *cfg, const MetaAgent *agents, size_t n, char **ret_error);

/* Pins input agent-<name> to commit sha of the applied repo in flake.lock (nix flake lock
 * --override-input agent-<name> git+file://…?rev=<sha>); creates the lock when missing. */
int meta_lock_agent(const HiveConfig *cfg, const char *name, const char *sha, char **ret_log,
                    char **ret_error);

/* Updates the named non-agent inputs (NULL: every non-agent input) in flake.lock. */
int meta_update_inputs(const HiveConfig *cfg, char *const *inputs, char **ret_log,
                       char **ret_error);

/* Builds nixosConfigurations.<name>.config.system.build.toplevel of the work tree (the
 * default builder: nix build --no-link); *ret_log: nix's output. -EIO when the build
 * fails. */
int meta_build(const HiveConfig *cfg, const char *name, char **ret_log, char **ret_error);
/* meta_build(), handing each output line to on_line while the build runs (progress). */
int meta_build_lines(const HiveConfig *cfg, const char *name, ProcLineFn on_line, void *userdata,
                     char **ret_log, char **ret_error);

/* The locked rev of input agent-<name> in the work tree's flake.lock (NULL when none). */
int meta_locked_rev(const HiveConfig *cfg, const char *name, char **ret_rev, char **ret_error);

/* Commits flake.nix and flake.lock of the work tree to main with message. */
int meta_commit(const HiveConfig *cfg, const char *message, char **ret_error);

/* Puts flake.nix and flake.lock back as main has them (abort). */
int meta_restore(const HiveConfig *cfg, char **ret_error);
