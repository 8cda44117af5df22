/* Unit tests for c0re/meta.c: the meta repo (libgit2), the generated flake.nix, and real nix
 * 2.x locking and building against the nixpkgs stand-in in tests/fixtures.  Each case gets a
 * fresh state dir with applied repos made through libgit2.  Skipped (77) without nix. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <git2.h>
#include <jansson.h>

#include "fsutil.h"
#include "meta.h"
#include "repos.h"
#include "testutil.h"

#define AGENT_FLAKE "{ outputs = { self }: { nixosModules.default = import ./agent.nix; }; }\n"
#define AGENT_NIX_1                                                                                \
        "{ config, lib, pkgs, ... }:\n"                                                            \
        "{\n"                                                                                      \
        "  environment.systemPackages = [ pkgs.jq ];\n"                                            \
        "  services.greeter.enable = lib.mkDefault true;\n"                                        \
        "}\n"
#define AGENT_NIX_2   "{ ... }: { services.greeter.enable = false; }\n"
#define AGENT_NIX_BAD "{ ... }: { services.greeter.enable = ; }\n"

typedef struct Fixture {
        char *dir;
        HiveConfig cfg;
} Fixture;

static int setup(void **state)
{
        Fixture *f = calloc(1, sizeof(*f));
        assert_non_null(f);
        f->dir = tu_mkdtemp();
        f->cfg.state_dir = f->dir;
        f->cfg.nixpkgs = (char *)"path:" HIVE_NIXPKGS_STANDIN;
        f->cfg.op_timeout = 60;
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        Fixture *f = *state;
        assert_int_equal(tu_rm_rf(f->dir), 0);
        free(f->dir);
        free(f);
        return 0;
}

static char *path_of(const Fixture *f, const char *rel)
{
        char *p = NULL;
        assert_true(asprintf(&p, "%s/%s", f->dir, rel) >= 0);
        return p;
}

/* Commits flake.nix and agent.nix (content) in <state>/applied/<name> (created on first
 * use) on main, or on a detached commit whose parent is main when on_main is false (a
 * proposal fetched but not deployed).  *ret_sha: the commit. */
static void applied_commit(const Fixture *f, const char *name, const char *agent_nix, bool on_main,
                           char ret_sha[41])
{
        char rel[256];
        snprintf(rel, sizeof(rel), "applied/%s", name);
        char *dir = path_of(f, rel);
        git_repository *repo = NULL;
        if (git_repository_open_ext(&repo, dir, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL) < 0) {
                git_repository_init_options o = GIT_REPOSITORY_INIT_OPTIONS_INIT;
                o.flags = GIT_REPOSITORY_INIT_MKPATH;
                o.initial_head = "main";
                assert_int_equal(git_repository_init_ext(&repo, dir, &o), 0);
        }
        char *p = NULL;
        assert_true(asprintf(&p, "%s/flake.nix", dir) >= 0);
        assert_int_equal(tu_write_file(p, AGENT_FLAKE), 0);
        free(p);
        assert_true(asprintf(&p, "%s/agent.nix", dir) >= 0);
        assert_int_equal(tu_write_file(p, agent_nix), 0);
        free(p);

        git_index *index = NULL;
        git_oid tree_id, oid, parent_id;
        git_tree *tree = NULL;
        git_signature *sig = NULL;
        git_commit *parent = NULL;
        assert_int_equal(git_repository_index(&index, repo), 0);
        assert_int_equal(git_index_add_bypath(index, "flake.nix"), 0);
        assert_int_equal(git_index_add_bypath(index, "agent.nix"), 0);
        assert_int_equal(git_index_write(index), 0);
        assert_int_equal(git_index_write_tree(&tree_id, index), 0);
        assert_int_equal(git_tree_lookup(&tree, repo, &tree_id), 0);
        assert_int_equal(git_signature_now(&sig, "test", "test@localhost"), 0);
        if (git_reference_name_to_id(&parent_id, repo, "refs/heads/main") == 0)
                assert_int_equal(git_commit_lookup(&parent, repo, &parent_id), 0);
        const git_commit *parents[1] = {parent};
        assert_int_equal(git_commit_create(&oid, repo, on_main ? "refs/heads/main" : NULL, sig, sig,
                                           NULL, "change\n", tree, parent ? 1 : 0, parents),
                         0);
        git_oid_tostr(ret_sha, 41, &oid);
        git_commit_free(parent);
        git_signature_free(sig);
        git_tree_free(tree);
        git_index_free(index);
        git_repository_free(repo);
        free(dir);
}

static git_repository *open_meta(const Fixture *f)
{
        char *dir = path_of(f, "meta");
        git_repository *repo = NULL;
        assert_int_equal(git_repository_open_ext(&repo, dir, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL),
                         0);
        free(dir);
        return repo;
}

/* The commits on meta's main, newest first: count, and the newest one's oid and message. */
static size_t meta_history(const Fixture *f, git_oid *ret_head, char **ret_message)
{
        git_repository *repo = open_meta(f);
        git_revwalk *walk = NULL;
        assert_int_equal(git_revwalk_new(&walk, repo), 0);
        assert_int_equal(git_revwalk_push_ref(walk, "refs/heads/main"), 0);
        git_oid oid;
        size_t n = 0;
        while (git_revwalk_next(&oid, walk) == 0) {
                if (n == 0) {
                        if (ret_head)
                                *ret_head = oid;
                        if (ret_message) {
                                git_commit *c = NULL;
                                assert_int_equal(git_commit_lookup(&c, repo, &oid), 0);
                                assert_string_equal(git_commit_committer(c)->name, "hive-c0re");
                                assert_string_equal(git_commit_committer(c)->email,
                                                    "hive-c0re@localhost");
                                *ret_message = strdup(git_commit_message(c));
                                git_commit_free(c);
                        }
                }
                n++;
        }
        git_revwalk_free(walk);
        git_repository_free(repo);
        return n;
}

/* Entries git status reports in the meta repo (work tree and index against main). */
static size_t meta_status_count(const Fixture *f)
{
        git_repository *repo = open_meta(f);
        git_status_options o = GIT_STATUS_OPTIONS_INIT;
        o.flags = GIT_STATUS_OPT_INCLUDE_UNTRACKED;
        git_status_list *list = NULL;
        assert_int_equal(git_status_list_new(&list, repo, &o), 0);
        size_t n = git_status_list_entrycount(list);
        git_status_list_free(list);
        git_repository_free(repo);
        return n;
}

static char *read_meta(const Fixture *f, const char *file)
{
        char rel[64];
        snprintf(rel, sizeof(rel), "meta/%s", file);
        char *p = path_of(f, rel);
        char *s = tu_read_file(p, NULL);
        free(p);
        return s;
}

static bool meta_has(const Fixture *f, const char *file)
{
        char rel[64];
        snprintf(rel, sizeof(rel), "meta/%s", file);
        char *p = path_of(f, rel);
        bool r = access(p, F_OK) == 0;
        free(p);
        return r;
}

static const MetaAgent agent_a1 = {.name = "a1", .port = 8123};

/* init + flake with a1 + a1 locked at a fresh commit of agent_nix; *ret_sha: that commit. */
static void prepare_a1(Fixture *f, const char *agent_nix, char ret_sha[41])
{
        applied_commit(f, "a1", agent_nix, true, ret_sha);
        char *err = NULL, *log = NULL;
        assert_int_equal(meta_init(&f->cfg, &err), 0);
        assert_int_equal(meta_write_flake(&f->cfg, &agent_a1, 1, &err), 0);
        int r = meta_lock_agent(&f->cfg, "a1", ret_sha, &log, &err);
        if (r < 0)
                fail_msg("lock: %s\n%s", err, log);
        free(log);
}

/* nodes[agent-<name>].locked.rev of the work tree's flake.lock, read here independently. */
static char *lock_rev_json(const Fixture *f, const char *name)
{
        char *p = path_of(f, "meta/flake.lock");
        json_t *j = json_load_file(p, 0, NULL);
        free(p);
        assert_non_null(j);
        char node[64];
        snprintf(node, sizeof(node), "agent-%s", name);
        const char *rev = json_string_value(json_object_get(
                json_object_get(json_object_get(json_object_get(j, "nodes"), node), "locked"),
                "rev"));
        char *copy = rev ? strdup(rev) : NULL;
        json_decref(j);
        return copy;
}

static void test_init_creates_repo_once(void **state)
{
        Fixture *f = *state;
        char *err = NULL;
        assert_int_equal(meta_init(&f->cfg, &err), 0);
        char *message = NULL;
        git_oid first, again;
        assert_int_equal(meta_history(f, &first, &message), 1);
        free(message);
        char *flake = read_meta(f, "flake.nix");
        assert_non_null(strstr(flake, "nixpkgs.url = \"path:" HIVE_NIXPKGS_STANDIN "\";"));
        assert_non_null(strstr(flake, "nixosConfigurations = {\n    };"));
        assert_null(strstr(flake, "git+file"));
        free(flake);
        assert_false(meta_has(f, "flake.lock"));
        assert_int_equal(meta_status_count(f), 0);

        git_repository *repo = open_meta(f);
        git_reference *head = NULL;
        assert_int_equal(git_reference_lookup(&head, repo, "HEAD"), 0);
        assert_string_equal(git_reference_symbolic_target(head), "refs/heads/main");
        git_reference_free(head);
        git_repository_free(repo);

        assert_int_equal(meta_init(&f->cfg, &err), 0);
        assert_int_equal(meta_history(f, &again, NULL), 1);
        assert_true(git_oid_equal(&first, &again));
}

static void test_init_clears_stale_lock_and_work_tree(void **state)
{
        Fixture *f = *state;
        char *err = NULL;
        assert_int_equal(meta_init(&f->cfg, &err), 0);
        char *committed = read_meta(f, "flake.nix");
        char *p = path_of(f, "meta/.git/index.lock");
        assert_int_equal(tu_write_file(p, ""), 0);
        char *nix = path_of(f, "meta/flake.nix"), *lock = path_of(f, "meta/flake.lock");
        assert_int_equal(tu_write_file(nix, "{ half = \"written\"; }\n"), 0);
        assert_int_equal(tu_write_file(lock, "{}\n"), 0);
        /* a staged change too */
        git_repository *repo = open_meta(f);
        git_index *index = NULL;
        assert_int_equal(git_repository_index(&index, repo), 0);
        assert_int_equal(unlink(p), 0); /* libgit2 itself refuses a locked index */
        assert_int_equal(git_index_add_bypath(index, "flake.lock"), 0);
        assert_int_equal(git_index_write(index), 0);
        git_index_free(index);
        git_repository_free(repo);
        assert_int_equal(tu_write_file(p, ""), 0);

        assert_int_equal(meta_init(&f->cfg, &err), 0);
        assert_int_equal(access(p, F_OK), -1);
        assert_int_equal(errno, ENOENT);
        char *now = read_meta(f, "flake.nix");
        assert_string_equal(now, committed);
        assert_false(meta_has(f, "flake.lock"));
        assert_int_equal(meta_status_count(f), 0);
        assert_int_equal(meta_history(f, NULL, NULL), 1);
        free(now);
        free(committed);
        free(p);
        free(nix);
        free(lock);
}

static void test_flake_text_sorted_and_deterministic(void **state)
{
        Fixture *f = *state;
        char *err = NULL;
        assert_int_equal(meta_init(&f->cfg, &err), 0);
        const MetaAgent two[] = {{.name = "zed", .port = 8200},
                                 {.name = "hm1nd", .port = 8100, .manager = true}};
        const MetaAgent rev[] = {two[1], two[0]};
        assert_int_equal(meta_write_flake(&f->cfg, two, 2, &err), 0);
        char *first = read_meta(f, "flake.nix");
        assert_int_equal(meta_write_flake(&f->cfg, rev, 2, &err), 0);
        char *second = read_meta(f, "flake.nix");
        assert_string_equal(first, second);

        char url[4096];
        snprintf(url, sizeof(url), "    agent-hm1nd.url = \"git+file://%s/applied/hm1nd\";\n",
                 f->dir);
        const char *in_h = strstr(first, url);
        snprintf(url, sizeof(url), "    agent-zed.url = \"git+file://%s/applied/zed\";\n", f->dir);
        const char *in_z = strstr(first, url);
        const char *in_n = strstr(first, "    nixpkgs.url = ");
        assert_non_null(in_h);
        assert_non_null(in_z);
        assert_non_null(in_n);
        assert_true(in_h < in_z && in_z < in_n);
        const char *cfg_h = strstr(first, "      \"hm1nd\" = nixpkgs.lib.nixosSystem {\n");
        const char *cfg_z = strstr(first, "      \"zed\" = nixpkgs.lib.nixosSystem {\n");
        assert_non_null(cfg_h);
        assert_non_null(cfg_z);
        assert_true(cfg_h < cfg_z);
        assert_non_null(strstr(cfg_h, "networking.hostName = \"hm1nd\";"));
        assert_non_null(strstr(cfg_z, "networking.hostName = \"h-zed\";"));
        assert_non_null(strstr(cfg_z, "HIVE_PORT = \"8200\";"));
        assert_non_null(strstr(cfg_z, "HIVE_LABEL = \"zed\";"));
        assert_non_null(strstr(first, "no hyperhive input yet"));
        free(first);
        free(second);

        const MetaAgent dup[] = {{.name = "a1"}, {.name = "a1"}};
        assert_int_equal(meta_write_flake(&f->cfg, dup, 2, &err), -EINVAL);
        assert_non_null(strstr(err, "twice"));
        free(err);
        err = NULL;
        const MetaAgent bad[] = {{.name = "a\"b"}};
        assert_int_equal(meta_write_flake(&f->cfg, bad, 1, &err), -EINVAL);
        free(err);
}

static void test_lock_agent_records_rev(void **state)
{
        Fixture *f = *state;
        char sha1[41], sha2[41];
        prepare_a1(f, AGENT_NIX_1, sha1);
        char *rev = lock_rev_json(f, "a1");
        assert_string_equal(rev, sha1);
        free(rev);

        /* a proposal: in the applied repo, but main has not moved to it */
        applied_commit(f, "a1", AGENT_NIX_2, false, sha2);
        char *err = NULL, *log = NULL;
        assert_int_equal(meta_lock_agent(&f->cfg, "a1", sha2, &log, &err), 0);
        assert_non_null(log);
        free(log);
        log = NULL;
        rev = lock_rev_json(f, "a1");
        assert_string_equal(rev, sha2);
        free(rev);
        assert_int_equal(meta_locked_rev(&f->cfg, "a1", &rev, &err), 0);
        assert_string_equal(rev, sha2);
        free(rev);

        assert_int_equal(meta_lock_agent(&f->cfg, "a1", "abc", &log, &err), -EINVAL);
        assert_null(log);
        free(err);
        err = NULL;
        /* not an input of the flake: nix only warns, meta notices */
        assert_int_equal(meta_lock_agent(&f->cfg, "zz", sha2, &log, &err), -ENOENT);
        assert_non_null(strstr(err, "agent-zz"));
        free(err);
        free(log);
        err = log = NULL;
        /* a commit the applied repo does not have */
        assert_int_equal(meta_lock_agent(&f->cfg, "a1", "1111111111111111111111111111111111111111",
                                         &log, &err),
                         -EIO);
        assert_non_null(strstr(err, "nix flake lock of agent-a1 at 111111111111 failed"));
        assert_non_null(strstr(err, "error: "));
        assert_non_null(log);
        free(err);
        free(log);
}

static void test_build_succeeds(void **state)
{
        Fixture *f = *state;
        char sha[41];
        prepare_a1(f, AGENT_NIX_1, sha);
        char *err = NULL, *log = NULL;
        int r = meta_build(&f->cfg, "a1", &log, &err);
        if (r < 0)
                fail_msg("build: %s\n%s", err, log);
        /* stdout first: nix build --json */
        json_error_t jerr;
        json_t *j = json_loads(log, JSON_DISABLE_EOF_CHECK, &jerr);
        assert_non_null(j);
        const char *out = json_string_value(
                json_object_get(json_object_get(json_array_get(j, 0), "outputs"), "out"));
        assert_non_null(out);
        assert_non_null(strstr(out, "-nixos-system-h-a1"));
        char *system = tu_read_file(out, NULL);
        assert_non_null(system);
        assert_non_null(strstr(system, "\"HIVE_PORT\":\"8123\""));
        assert_non_null(strstr(system, "\"hostName\":\"h-a1\""));
        assert_non_null(strstr(system, "-jq\""));
        assert_non_null(strstr(system, "\"greeter\":{\"enable\":true}"));
        free(system);

        /* a changed module gives another system */
        char sha2[41];
        applied_commit(f, "a1", AGENT_NIX_2, false, sha2);
        char *log2 = NULL;
        assert_int_equal(meta_lock_agent(&f->cfg, "a1", sha2, &log2, &err), 0);
        free(log2);
        log2 = NULL;
        assert_int_equal(meta_build(&f->cfg, "a1", &log2, &err), 0);
        assert_null(strstr(log2, out));
        assert_non_null(strstr(log2, "-nixos-system-h-a1"));
        json_decref(j);
        free(log);
        free(log2);
}

static void test_build_syntax_error_fails(void **state)
{
        Fixture *f = *state;
        char sha[41];
        prepare_a1(f, AGENT_NIX_BAD, sha);
        char *err = NULL, *log = NULL;
        assert_int_equal(meta_build(&f->cfg, "a1", &log, &err), -EIO);
        assert_non_null(err);
        assert_non_null(strstr(err, "nix build of a1 failed (exit status 1): error: syntax error"));
        assert_non_null(strstr(err, "agent.nix:1:"));
        assert_null(strstr(err, "--show-trace"));
        assert_non_null(log);
        assert_non_null(strstr(log, "agent.nix"));
        free(err);
        free(log);
}

static void test_restore_puts_lock_back(void **state)
{
        Fixture *f = *state;
        char sha1[41], sha2[41];
        char *err = NULL, *log = NULL;
        prepare_a1(f, AGENT_NIX_1, sha1);
        /* main has no flake.lock yet: restore removes the work tree's */
        assert_true(meta_has(f, "flake.lock"));
        assert_int_equal(meta_restore(&f->cfg, &err), 0);
        assert_false(meta_has(f, "flake.lock"));
        assert_int_equal(meta_status_count(f), 0);

        assert_int_equal(meta_write_flake(&f->cfg, &agent_a1, 1, &err), 0);
        assert_int_equal(meta_lock_agent(&f->cfg, "a1", sha1, &log, &err), 0);
        free(log);
        log = NULL;
        assert_int_equal(meta_commit(&f->cfg, "deploy a1 deployed/1 x", &err), 0);
        char *lock = read_meta(f, "flake.lock"), *flake = read_meta(f, "flake.nix");

        /* the next deploy adds agent b2 and moves a1, then fails */
        char sha_b2[41];
        applied_commit(f, "b2", AGENT_NIX_2, true, sha_b2);
        const MetaAgent two[] = {agent_a1, {.name = "b2", .port = 8124}};
        assert_int_equal(meta_write_flake(&f->cfg, two, 2, &err), 0);
        applied_commit(f, "a1", AGENT_NIX_2, false, sha2);
        assert_int_equal(meta_lock_agent(&f->cfg, "a1", sha2, &log, &err), 0);
        free(log);
        char *changed = read_meta(f, "flake.lock");
        assert_string_not_equal(changed, lock);
        free(changed);

        assert_int_equal(meta_restore(&f->cfg, &err), 0);
        char *lock2 = read_meta(f, "flake.lock"), *flake2 = read_meta(f, "flake.nix");
        assert_string_equal(lock2, lock);
        assert_string_equal(flake2, flake);
        assert_int_equal(meta_status_count(f), 0);
        char *rev = NULL;
        assert_int_equal(meta_locked_rev(&f->cfg, "a1", &rev, &err), 0);
        assert_string_equal(rev, sha1);
        free(rev);
        free(lock);
        free(lock2);
        free(flake);
        free(flake2);
}

static void test_commit(void **state)
{
        Fixture *f = *state;
        char sha[41];
        char *err = NULL, *message = NULL;
        prepare_a1(f, AGENT_NIX_1, sha);
        assert_int_equal(meta_commit(&f->cfg, "deploy a1 deployed/4 0123456789ab", &err), 0);
        git_oid head, again;
        assert_int_equal(meta_history(f, &head, &message), 2);
        assert_string_equal(message, "deploy a1 deployed/4 0123456789ab\n");
        free(message);
        assert_int_equal(meta_status_count(f), 0);

        /* what was committed is what nix locked */
        git_repository *repo = open_meta(f);
        git_commit *c = NULL;
        git_tree *tree = NULL;
        git_tree_entry *e = NULL;
        assert_int_equal(git_commit_lookup(&c, repo, &head), 0);
        assert_int_equal(git_commit_tree(&tree, c), 0);
        assert_int_equal(git_tree_entry_bypath(&e, tree, "flake.lock"), 0);
        git_tree_entry_free(e);
        git_tree_free(tree);
        git_commit_free(c);
        git_repository_free(repo);

        assert_int_equal(meta_commit(&f->cfg, "nothing new", &err), 0);
        assert_int_equal(meta_history(f, &again, NULL), 2);
        assert_true(git_oid_equal(&head, &again));

        assert_int_equal(meta_commit(&f->cfg, "", &err), -EINVAL);
        free(err);
}

static void test_locked_rev(void **state)
{
        Fixture *f = *state;
        char *err = NULL, *rev = (char *)"untouched";
        assert_int_equal(meta_init(&f->cfg, &err), 0);
        assert_int_equal(meta_locked_rev(&f->cfg, "a1", &rev, &err), 0);
        assert_null(rev);

        char sha[41];
        prepare_a1(f, AGENT_NIX_1, sha);
        assert_int_equal(meta_locked_rev(&f->cfg, "a1", &rev, &err), 0);
        assert_string_equal(rev, sha);
        free(rev);
        assert_int_equal(meta_locked_rev(&f->cfg, "b2", &rev, &err), 0);
        assert_null(rev);
        assert_int_equal(meta_locked_rev(&f->cfg, "../x", &rev, &err), -EINVAL);
        free(err);
        err = NULL;

        char *p = path_of(f, "meta/flake.lock");
        assert_int_equal(tu_write_file(p, "{ not json"), 0);
        free(p);
        assert_int_equal(meta_locked_rev(&f->cfg, "a1", &rev, &err), -EBADMSG);
        assert_non_null(strstr(err, "flake.lock"));
        free(err);
}

static void test_update_inputs(void **state)
{
        Fixture *f = *state;
        char sha[41], sha2[41];
        prepare_a1(f, AGENT_NIX_1, sha);
        /* main of the applied repo moves on: updating nixpkgs must not move the pin */
        applied_commit(f, "a1", AGENT_NIX_2, true, sha2);
        char *err = NULL, *log = NULL;
        int r = meta_update_inputs(&f->cfg, NULL, &log, &err);
        if (r < 0)
                fail_msg("update: %s\n%s", err, log);
        free(log);
        log = NULL;
        char *nixpkgs[] = {(char *)"nixpkgs", NULL};
        assert_int_equal(meta_update_inputs(&f->cfg, nixpkgs, &log, &err), 0);
        free(log);
        log = NULL;
        char *rev = NULL;
        assert_int_equal(meta_locked_rev(&f->cfg, "a1", &rev, &err), 0);
        assert_string_equal(rev, sha);
        free(rev);

        char *p = path_of(f, "meta/flake.lock");
        json_t *j = json_load_file(p, 0, NULL);
        free(p);
        assert_non_null(j);
        json_t *locked =
                json_object_get(json_object_get(json_object_get(j, "nodes"), "nixpkgs"), "locked");
        assert_string_equal(json_string_value(json_object_get(locked, "type")), "path");
        assert_non_null(json_string_value(json_object_get(locked, "narHash")));
        json_decref(j);

        char *agent[] = {(char *)"agent-a1", NULL};
        assert_int_equal(meta_update_inputs(&f->cfg, agent, &log, &err), -EINVAL);
        free(err);
        err = NULL;
        char *bogus[] = {(char *)"nixpkgs", (char *)"bogus", NULL};
        assert_int_equal(meta_update_inputs(&f->cfg, bogus, &log, &err), -ENOENT);
        assert_non_null(strstr(err, "\"bogus\""));
        assert_null(log);
        free(err);
}

static void test_builder_command(void **state)
{
        Fixture *f = *state;
        char sha[41];
        prepare_a1(f, AGENT_NIX_1, sha);
        char *err = NULL, *log = NULL;

        f->cfg.builder = (char *)"echo oops >&2; exit 3";
        assert_int_equal(meta_build(&f->cfg, "a1", &log, &err), -EIO);
        assert_non_null(strstr(err, "failed (exit status 3): oops"));
        assert_non_null(strstr(log, "oops"));
        free(err);
        free(log);
        err = log = NULL;

        f->cfg.builder = (char *)"true";
        assert_int_equal(meta_build(&f->cfg, "a1", &log, &err), 0);
        free(log);
        log = NULL;

        f->cfg.builder = (char *)"echo \"$1 $2\"; pwd";
        assert_int_equal(meta_build(&f->cfg, "a1", &log, &err), 0);
        char want[4096];
        snprintf(want, sizeof(want),
                 ".#nixosConfigurations.a1.config.system.build.toplevel a1\n%s/meta\n", f->dir);
        assert_string_equal(log, want);
        free(log);
        log = NULL;

        /* nix's environment: flakes on, substituters off, the daemon's NIX_CONFIG after ours,
         * a private HOME */
        f->cfg.builder = (char *)"printf '%s|%s|%s' \"$NIX_CONFIG\" \"$HOME\" \"$XDG_CACHE_HOME\"";
        assert_int_equal(setenv("NIX_CONFIG", "max-jobs = 1", 1), 0);
        int r = meta_build(&f->cfg, "a1", &log, &err);
        assert_int_equal(unsetenv("NIX_CONFIG"), 0);
        assert_int_equal(r, 0);
        snprintf(want, sizeof(want),
                 "experimental-features = nix-command flakes\nsubstituters =\nwarn-dirty = false\n"
                 "max-jobs = 1|%s/.cache/nix-home|%s/.cache/nix-home/.cache",
                 f->dir, f->dir);
        assert_string_equal(log, want);
        free(log);
        log = NULL;
        struct stat st;
        char *home = path_of(f, ".cache/nix-home");
        assert_int_equal(stat(home, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0700);
        free(home);

        f->cfg.builder = (char *)"sleep 30";
        f->cfg.op_timeout = 1;
        time_t t0 = time(NULL);
        assert_int_equal(meta_build(&f->cfg, "a1", &log, &err), -ETIMEDOUT);
        assert_true(time(NULL) - t0 < 10);
        assert_non_null(strstr(err, "took longer than 1 s"));
        free(err);
        free(log);
}

static void test_errors_without_repo_or_nix(void **state)
{
        Fixture *f = *state;
        char *err = NULL, *log = NULL;
        assert_int_equal(meta_restore(&f->cfg, &err), -ENOENT);
        free(err);
        err = NULL;
        assert_int_equal(meta_commit(&f->cfg, "x", &err), -ENOENT);
        free(err);
        err = NULL;
        assert_int_equal(meta_write_flake(&f->cfg, &agent_a1, 1, &err), -ENOENT);
        free(err);
        err = NULL;
        assert_int_equal(meta_build(&f->cfg, "a1", &log, &err), -ENOENT);
        free(err);
        err = NULL;

        assert_int_equal(meta_init(&f->cfg, &err), 0);
        char *path = strdup(getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin");
        assert_int_equal(setenv("PATH", f->dir, 1), 0);
        int r = meta_build(&f->cfg, "a1", &log, &err);
        assert_int_equal(setenv("PATH", path, 1), 0);
        free(path);
        assert_int_equal(r, -ENOENT);
        assert_non_null(strstr(err, "cannot run nix"));
        assert_null(log);
        free(err);
        err = NULL;

        /* nix would take a %-escaped path for a remote URL */
        char *odd = path_of(f, "with space");
        f->cfg.state_dir = odd;
        assert_int_equal(meta_init(&f->cfg, &err), -EINVAL);
        f->cfg.state_dir = f->dir;
        free(odd);
        free(err);
}

static bool have_nix(void)
{
        const char *path = getenv("PATH");
        char *copy = strdup(path ? path : "/usr/bin:/bin"), *save = NULL;
        bool found = false;
        for (char *d = strtok_r(copy, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
                char p[4096];
                snprintf(p, sizeof(p), "%s/nix", d);
                found = access(p, X_OK) == 0;
        }
        free(copy);
        return found;
}

int main(void)
{
        if (!have_nix()) {
                fprintf(stderr, "test-meta: skipped: nix is not on PATH\n");
                return 77;
        }
        assert_int_equal(repos_global_init(), 0);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_init_creates_repo_once, setup, teardown),
                cmocka_unit_test_setup_teardown(test_init_clears_stale_lock_and_work_tree, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_flake_text_sorted_and_deterministic, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_lock_agent_records_rev, setup, teardown),
                cmocka_unit_test_setup_teardown(test_build_succeeds, setup, teardown),
                cmocka_unit_test_setup_teardown(test_build_syntax_error_fails, setup, teardown),
                cmocka_unit_test_setup_teardown(test_restore_puts_lock_back, setup, teardown),
                cmocka_unit_test_setup_teardown(test_commit, setup, teardown),
                cmocka_unit_test_setup_teardown(test_locked_rev, setup, teardown),
                cmocka_unit_test_setup_teardown(test_update_inputs, setup, teardown),
                cmocka_unit_test_setup_teardown(test_builder_command, setup, teardown),
                cmocka_unit_test_setup_teardown(test_errors_without_repo_or_nix, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
