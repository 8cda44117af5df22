/* The agents' config repos, through libgit2 (never the git program):
 *
 *   <state>/agents/<n>/config   proposed: the manager edits it; agent.nix is the entry point;
 *                               it has a remote "applied" pointing at the applied repo
 *   <state>/applied/<n>         applied: written by the daemon only; branch main is what is
 *                               deployed; carries the tags proposal/<id>, approved/<id>,
 *                               building/<id>, deployed/<id>, failed/<id>, denied/<id>
 *
 * Both are non-bare with branch main checked out; the applied work tree always equals main.
 * Every function is thread-safe (libgit2 objects are per call), returns 0 or a negative
 * errno, and on failure puts a sentence for the operator in *ret_error (may be NULL). */
#pragma once

#include <stdbool.h>

#include "config.h"

#define REPOS_SHA_HEX 40

/* git_libgit2_init, once per process (idempotent). */
int repos_global_init(void);

/* Creates both repos of agent name from the seed in cfg->templates_dir (agent.nix,
 * flake.nix; the seed's "@NAME@" replaced by name): one commit "seed <name>" on main in the
 * proposed repo, fetched into the applied repo as its main.  An existing repo is kept as it
 * is (revival of a tombstone), so the call is idempotent.  -EEXIST never. */
int repos_create(const HiveConfig *cfg, const char *name, char **ret_error);

/* Resolves ref in the proposed repo of name: ref must be 7 to 40 hex digits (-EINVAL
 * otherwise, so branch names and HEAD~1 are refused) naming exactly one commit there
 * (-ENOENT unknown, -EINVAL ambiguous).  *ret_sha: the full 40-hex sha. */
int repos_resolve_proposed(const HiveConfig *cfg, const char *name, const char *ref,
                           char ret_sha[REPOS_SHA_HEX + 1], char **ret_error);

/* Copies commit sha (and its history) from the proposed repo into the applied repo, without
 * moving any branch there. */
int repos_fetch_proposed(const HiveConfig *cfg, const char *name, const char *sha,
                         char **ret_error);

/* Creates the annotated tag tag (e.g. "failed/12") at sha in the applied repo, message as
 * its annotation (tagger "hive-c0re <hive-c0re@localhost>").  -EEXIST if the tag exists. */
int repos_tag(const HiveConfig *cfg, const char *name, const char *tag, const char *sha,
              const char *message, char **ret_error);

/* The sha a tag or branch of the applied repo points at (peeled to the commit). */
int repos_applied_sha(const HiveConfig *cfg, const char *name, const char *ref,
                      char ret_sha[REPOS_SHA_HEX + 1], char **ret_error);

/* Moves the applied repo's main to sha (which must be in it) and checks it out (forced), so
 * the work tree equals main again. */
int repos_set_main(const HiveConfig *cfg, const char *name, const char *sha, char **ret_error);

/* The unified diff (git's patch format) from commit base to commit sha in the applied repo;
 * base NULL means the empty tree.  *ret_patch malloc'ed ("" when they are equal). */
int repos_diff(const HiveConfig *cfg, const char *name, const char *base, const char *sha,
               char **ret_patch, char **ret_error);

/* Whether commit sha is a descendant of (or equal to) commit base in the applied repo. */
int repos_descends(const HiveConfig *cfg, const char *name, const char *sha, const char *base,
                   bool *ret, char **ret_error);
