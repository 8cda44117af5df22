/* Unit tests for c0re/repos.c: the proposed and applied repos of an agent, resolving and
 * fetching proposals, annotated tags, moving main, diffs and ancestry.  Every case works on
 * a fresh temp state dir and inspects the repos with the real git program. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "backend.h"
#include "cleanup.h"
#include "config.h"
#include "proc.h"
#include "repos.h"
#include "testutil.h"

/* Two blobs whose shas share the 7-digit prefix AMBIGUOUS_PREFIX (found by a search). */
#define AMBIGUOUS_A      "ambiguous 4523\n"
#define AMBIGUOUS_B      "ambiguous 14795\n"
#define AMBIGUOUS_PREFIX "c67420a"

typedef struct Fixture {
        char *dir;
        HiveConfig cfg;
        char p[4096]; /* the proposed repo of alpha */
        char a[4096]; /* the applied repo of alpha */
} Fixture;

static int setup(void **state)
{
        Fixture *fx = calloc(1, sizeof(*fx));
        assert_non_null(fx);
        fx->dir = tu_mkdtemp();
        fx->cfg.state_dir = fx->dir;
        fx->cfg.templates_dir = (char *)HIVE_TEMPLATES_DIR;
        snprintf(fx->p, sizeof(fx->p), "%s/agents/alpha/config", fx->dir);
        snprintf(fx->a, sizeof(fx->a), "%s/applied/alpha", fx->dir);
        *state = fx;
        return 0;
}

static int teardown(void **state)
{
        Fixture *fx = *state;
        assert_int_equal(tu_rm_rf(fx->dir), 0);
        free(fx->dir);
        free(fx);
        return 0;
}

/* Runs git -C dir args... (NULL-terminated), isolated from the user's and the system's git
 * config; asserts that it succeeds and returns its stdout (malloc'ed). */
static char *run_git(const char *dir, ...)
{
        char *argv[32] = {
                "git", "-c",       "user.name=tester", "-c", "user.email=tester@example.org",
                "-C",  (char *)dir};
        size_t n = 7;
        va_list ap;
        va_start(ap, dir);
        for (char *a; (a = va_arg(ap, char *));) {
                assert_true(n < ELEMENTSOF(argv) - 1);
                argv[n++] = a;
        }
        va_end(ap);
        argv[n] = NULL;
        BackendRun run = {0};
        assert_int_equal(proc_run(argv, NULL, NULL, 30000, &run), 0);
        if (run.status != 0)
                fail_msg("git %s failed (%d): %s", argv[7], run.status, run.err);
        char *out = run.out;
        run.out = NULL;
        backend_run_done(&run);
        return out;
}

/* run_git(...) with its output's trailing newline removed. */
#define run_git_line(dir, ...)                                                                     \
        ({                                                                                         \
                char *_o = run_git(dir, __VA_ARGS__, NULL);                                        \
                size_t _l = strlen(_o);                                                            \
                if (_l > 0 && _o[_l - 1] == '\n')                                                  \
                        _o[_l - 1] = '\0';                                                         \
                _o;                                                                                \
        })

/* dir/file (malloc'ed). */
static char *path_in(const char *dir, const char *file)
{
        char *path = NULL;
        assert_true(asprintf(&path, "%s/%s", dir, file) > 0);
        return path;
}

static char *read_in(const char *dir, const char *file)
{
        _cleanup_free_ char *path = path_in(dir, file);
        return tu_read_file(path, NULL);
}

static void write_in(const char *dir, const char *file, const char *content)
{
        _cleanup_free_ char *path = path_in(dir, file);
        assert_int_equal(tu_write_file(path, content), 0);
}

static bool exists_in(const char *dir, const char *file)
{
        _cleanup_free_ char *path = path_in(dir, file);
        struct stat st;
        return stat(path, &st) == 0;
}

static void create(Fixture *fx, const char *name)
{
        char *err = NULL;
        assert_int_equal(repos_create(&fx->cfg, name, &err), 0);
        assert_null(err);
}

/* Commits a change in the proposed repo of name: agent.nix gets a package and notes.txt
 * appears.  Returns the new commit's sha (malloc'ed). */
static char *propose_change(Fixture *fx, const char *name)
{
        _cleanup_free_ char *p = NULL;
        assert_true(asprintf(&p, "%s/agents/%s/config", fx->dir, name) > 0);
        char *text = read_in(p, "agent.nix");
        assert_non_null(text);
        char *at = strstr(text, "environment.systemPackages = [ ];");
        assert_non_null(at);
        char *changed = NULL;
        assert_true(asprintf(&changed, "%.*senvironment.systemPackages = [ pkgs.jq ];%s",
                             (int)(at - text), text,
                             at + strlen("environment.systemPackages = [ ];")) > 0);
        write_in(p, "agent.nix", changed);
        write_in(p, "notes.txt", "hello\n");
        free(run_git(p, "add", "agent.nix", "notes.txt", NULL));
        free(run_git(p, "commit", "-q", "-m", "add jq", NULL));
        free(text);
        free(changed);
        return run_git_line(p, "rev-parse", "HEAD");
}

/* Commits file with content in the repo at dir; returns the new commit's sha (malloc'ed). */
static char *commit_file(const char *dir, const char *file, const char *content)
{
        write_in(dir, file, content);
        free(run_git(dir, "add", file, NULL));
        free(run_git(dir, "commit", "-q", "-m", file, NULL));
        return run_git_line(dir, "rev-parse", "HEAD");
}

static void test_create_makes_both_repos(void **state)
{
        Fixture *fx = *state;
        create(fx, "alpha");
        const char *p = fx->p;
        const char *ap = fx->a;

        char *subjects = run_git(p, "log", "--format=%s|%an <%ae>|%cn <%ce>", "main", NULL);
        assert_string_equal(subjects, "seed alpha|hive-c0re <hive-c0re@localhost>|hive-c0re "
                                      "<hive-c0re@localhost>\n");
        char *head = run_git_line(p, "symbolic-ref", "HEAD");
        assert_string_equal(head, "refs/heads/main");
        char *files = run_git(p, "ls-files", NULL);
        assert_string_equal(files, "agent.nix\nflake.nix\n");

        /* @NAME@ replaced everywhere, the rest of the template intact */
        char *agent = read_in(p, "agent.nix");
        assert_non_null(strstr(agent, "agent alpha"));
        assert_non_null(strstr(agent, "agents/alpha/config"));
        assert_null(strstr(agent, "@NAME@"));
        assert_non_null(strstr(agent, "{ config, lib, pkgs, ... }:"));
        char *flake = read_in(p, "flake.nix");
        assert_non_null(strstr(flake, "nixosModules.default = import ./agent.nix;"));

        /* the remote "applied" of the proposed repo */
        char *url = run_git_line(p, "remote", "get-url", "applied");
        assert_string_equal(url, ap);

        /* the applied repo: main = the seed, checked out, clean */
        char *pmain = run_git_line(p, "rev-parse", "main");
        char *amain = run_git_line(ap, "rev-parse", "main");
        assert_string_equal(amain, pmain);
        char *ahead = run_git_line(ap, "symbolic-ref", "HEAD");
        assert_string_equal(ahead, "refs/heads/main");
        char *astatus = run_git(ap, "status", "--porcelain", "--untracked-files=all", NULL);
        assert_string_equal(astatus, "");
        char *aagent = read_in(ap, "agent.nix");
        assert_string_equal(aagent, agent);
        char *bare = run_git_line(ap, "rev-parse", "--is-bare-repository");
        assert_string_equal(bare, "false");
        char *aurl = run_git_line(ap, "remote", "get-url", "proposed");
        assert_string_equal(aurl, p);
        char *aspec = run_git_line(ap, "config", "remote.proposed.fetch");
        assert_string_equal(aspec, "+refs/heads/*:refs/remotes/proposed/*");
        char *pspec = run_git_line(p, "config", "remote.applied.fetch");
        assert_string_equal(pspec, "+refs/heads/*:refs/remotes/applied/*");

        /* idempotent: a second call changes nothing */
        create(fx, "alpha");
        char *count = run_git_line(p, "rev-list", "--count", "main");
        assert_string_equal(count, "1");
        char *amain2 = run_git_line(ap, "rev-parse", "main");
        assert_string_equal(amain2, pmain);

        free(subjects), free(head), free(files), free(agent), free(flake), free(url);
        free(pmain), free(amain), free(ahead), free(astatus), free(aagent), free(bare);
        free(aurl), free(aspec), free(pspec), free(count), free(amain2);
}

static void test_create_keeps_existing_repos(void **state)
{
        Fixture *fx = *state;
        create(fx, "alpha");
        char *seed = run_git_line(fx->p, "rev-parse", "main");
        char *change = propose_change(fx, "alpha");

        /* a revival keeps the manager's work and the applied main */
        create(fx, "alpha");
        char *pmain = run_git_line(fx->p, "rev-parse", "main");
        assert_string_equal(pmain, change);
        char *amain = run_git_line(fx->a, "rev-parse", "main");
        assert_string_equal(amain, seed);

        /* a lost applied repo is recreated at the seed, never at unapproved work */
        assert_int_equal(tu_rm_rf(fx->a), 0);
        create(fx, "alpha");
        char *amain2 = run_git_line(fx->a, "rev-parse", "main");
        assert_string_equal(amain2, seed);
        assert_false(exists_in(fx->a, "notes.txt"));

        free(seed), free(change), free(pmain), free(amain), free(amain2);
}

static void test_create_without_templates(void **state)
{
        Fixture *fx = *state;
        char missing[4096];
        snprintf(missing, sizeof(missing), "%s/no-templates", fx->dir);
        fx->cfg.templates_dir = missing;
        char *err = NULL;
        assert_int_equal(repos_create(&fx->cfg, "alpha", &err), -ENOENT);
        assert_non_null(err);
        assert_non_null(strstr(err, "no-templates/agent.nix"));
        free(err);
        err = NULL;
        assert_int_equal(repos_create(&fx->cfg, "../x", &err), -EINVAL);
        assert_non_null(err);
        free(err);
}

static void test_resolve(void **state)
{
        Fixture *fx = *state;
        create(fx, "alpha");
        const char *p = fx->p;
        char *seed = run_git_line(p, "rev-parse", "main");
        char sha[REPOS_SHA_HEX + 1] = "";
        char *err = NULL;

        assert_int_equal(repos_resolve_proposed(&fx->cfg, "alpha", seed, sha, &err), 0);
        assert_string_equal(sha, seed);
        memset(sha, 0, sizeof(sha));
        char prefix[8];
        snprintf(prefix, sizeof(prefix), "%.7s", seed);
        assert_int_equal(repos_resolve_proposed(&fx->cfg, "alpha", prefix, sha, &err), 0);
        assert_string_equal(sha, seed);
        char upper[REPOS_SHA_HEX + 1];
        for (size_t i = 0; i <= REPOS_SHA_HEX; i++)
                upper[i] = (char)(seed[i] >= 'a' && seed[i] <= 'f' ? seed[i] - 32 : seed[i]);
        memset(sha, 0, sizeof(sha));
        assert_int_equal(repos_resolve_proposed(&fx->cfg, "alpha", upper, sha, &err), 0);
        assert_string_equal(sha, seed);
        assert_null(err);

        /* not 7 to 40 hex digits: refused before any lookup */
        char six[7], long41[42];
        snprintf(six, sizeof(six), "%.6s", seed);
        snprintf(long41, sizeof(long41), "%s0", seed);
        const char *bad[] = {"main", "HEAD~1", "HEAD", six, long41, "", "abcdefg"};
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                memset(sha, 'x', sizeof(sha));
                assert_int_equal(repos_resolve_proposed(&fx->cfg, "alpha", bad[i], sha, &err),
                                 -EINVAL);
                assert_non_null(err);
                assert_non_null(strstr(err, "must be 7 to 40 hex digits of a commit"));
                assert_int_equal(sha[0], 'x'); /* untouched on failure */
                free(err);
                err = NULL;
        }

        /* unknown, and known only to another agent */
        assert_int_equal(repos_resolve_proposed(&fx->cfg, "alpha",
                                                "0123456789abcdef0123456789abcdef01234567", sha,
                                                &err),
                         -ENOENT);
        free(err);
        err = NULL;
        create(fx, "beta");
        char *other = propose_change(fx, "beta");
        assert_int_equal(repos_resolve_proposed(&fx->cfg, "alpha", other, sha, &err), -ENOENT);
        assert_non_null(err);
        free(err);
        err = NULL;
        assert_int_equal(repos_resolve_proposed(&fx->cfg, "beta", other, sha, &err), 0);
        assert_string_equal(sha, other);

        /* a tree is not a commit */
        char *tree = run_git_line(p, "rev-parse", "main^{tree}");
        assert_int_equal(repos_resolve_proposed(&fx->cfg, "alpha", tree, sha, &err), -EINVAL);
        assert_non_null(strstr(err, "not a commit"));
        free(err);
        err = NULL;

        /* an ambiguous prefix */
        write_in(p, "a.txt", AMBIGUOUS_A);
        write_in(p, "b.txt", AMBIGUOUS_B);
        char *blobs = run_git(p, "hash-object", "-w", "a.txt", "b.txt", NULL);
        assert_int_equal(strncmp(blobs, AMBIGUOUS_PREFIX, 7), 0);
        assert_int_equal(strncmp(blobs + REPOS_SHA_HEX + 1, AMBIGUOUS_PREFIX, 7), 0);
        assert_int_equal(repos_resolve_proposed(&fx->cfg, "alpha", AMBIGUOUS_PREFIX, sha, &err),
                         -EINVAL);
        assert_non_null(strstr(err, "more than one object"));
        free(err);
        err = NULL;

        /* an agent without repos */
        assert_int_equal(repos_resolve_proposed(&fx->cfg, "nobody", seed, sha, &err), -ENOENT);
        free(err);

        free(seed), free(other), free(tree), free(blobs);
}

static void test_fetch_and_tag(void **state)
{
        Fixture *fx = *state;
        create(fx, "alpha");
        const char *ap = fx->a;
        char *seed = run_git_line(ap, "rev-parse", "main");
        char *change = propose_change(fx, "alpha");
        char *err = NULL;

        /* not in the applied repo until fetched */
        assert_int_equal(repos_tag(&fx->cfg, "alpha", "proposal/1", change, "x", &err), -ENOENT);
        free(err);
        err = NULL;
        assert_int_equal(repos_fetch_proposed(&fx->cfg, "alpha", change, &err), 0);
        assert_null(err);
        char *type = run_git_line(ap, "cat-file", "-t", change);
        assert_string_equal(type, "commit");
        char *amain = run_git_line(ap, "rev-parse", "main");
        assert_string_equal(amain, seed); /* no branch moved */

        assert_int_equal(repos_tag(&fx->cfg, "alpha", "proposal/1", change, "add jq", &err), 0);
        assert_int_equal(repos_tag(&fx->cfg, "alpha", "failed/1", change,
                                   "build failed\n\nerror: attribute 'jq' missing\nat line 7",
                                   &err),
                         0);
        assert_null(err);
        char *listed = run_git(ap, "tag", "-n99", "-l", "failed/1", NULL);
        assert_non_null(strstr(listed, "failed/1"));
        assert_non_null(strstr(listed, "build failed"));
        assert_non_null(strstr(listed, "error: attribute 'jq' missing"));
        assert_non_null(strstr(listed, "at line 7"));
        char *raw = run_git(ap, "cat-file", "-p", "failed/1", NULL);
        char want[128];
        snprintf(want, sizeof(want), "object %s\ntype commit\ntag failed/1\n", change);
        assert_int_equal(strncmp(raw, want, strlen(want)), 0);
        assert_non_null(strstr(raw, "\ntagger hive-c0re <hive-c0re@localhost> "));
        assert_non_null(strstr(raw, "\n\nbuild failed\n\nerror: attribute 'jq' missing\nat "
                                    "line 7\n"));
        char *kind = run_git_line(ap, "cat-file", "-t", "failed/1");
        assert_string_equal(kind, "tag"); /* annotated */

        /* tags are never overwritten */
        assert_int_equal(repos_tag(&fx->cfg, "alpha", "failed/1", seed, "again", &err), -EEXIST);
        assert_non_null(err);
        free(err);
        err = NULL;
        char *still = run_git_line(ap, "rev-parse", "failed/1^{commit}");
        assert_string_equal(still, change);
        assert_int_equal(repos_tag(&fx->cfg, "alpha", "bad..name", seed, "x", &err), -EINVAL);
        free(err);
        err = NULL;
        assert_int_equal(repos_tag(&fx->cfg, "alpha", "denied/1", "zz", "x", &err), -EINVAL);
        free(err);
        err = NULL;

        /* a commit on no branch cannot be fetched; a malformed sha is refused */
        const char *p = fx->p;
        char *tree = run_git_line(p, "rev-parse", "HEAD^{tree}");
        char *dangling = run_git_line(p, "commit-tree", tree, "-p", "HEAD", "-m", "dangling");
        assert_int_equal(repos_fetch_proposed(&fx->cfg, "alpha", dangling, &err), -ENOENT);
        assert_non_null(strstr(err, "not on any branch"));
        free(err);
        err = NULL;
        assert_int_equal(repos_fetch_proposed(&fx->cfg, "alpha", "abc", &err), -EINVAL);
        free(err);
        err = NULL;

        /* the manager reads the tags through the remote "applied" of the proposed repo */
        free(run_git(p, "fetch", "-q", "--tags", "applied", NULL));
        char *seen = run_git_line(p, "rev-parse", "failed/1^{commit}");
        assert_string_equal(seen, change);

        /* the manager's tags never reach the applied repo */
        free(run_git(p, "tag", "deployed/99", NULL));
        char *newer = commit_file(p, "more.txt", "more\n");
        assert_int_equal(repos_fetch_proposed(&fx->cfg, "alpha", newer, &err), 0);
        char *forged = run_git(ap, "tag", "-l", "deployed/*", NULL);
        assert_string_equal(forged, "");

        free(seed), free(change), free(type), free(amain), free(listed), free(raw);
        free(kind), free(still), free(tree), free(dangling), free(newer), free(forged), free(seen);
}

static void test_applied_sha_and_set_main(void **state)
{
        Fixture *fx = *state;
        create(fx, "alpha");
        const char *ap = fx->a;
        char *seed = run_git_line(ap, "rev-parse", "main");
        char *seed_agent = read_in(ap, "agent.nix");
        char *change = propose_change(fx, "alpha");
        char *err = NULL;
        char sha[REPOS_SHA_HEX + 1] = "";

        assert_int_equal(repos_applied_sha(&fx->cfg, "alpha", "main", sha, &err), 0);
        assert_string_equal(sha, seed);
        assert_int_equal(repos_fetch_proposed(&fx->cfg, "alpha", change, &err), 0);
        assert_int_equal(repos_tag(&fx->cfg, "alpha", "proposal/1", change, "add jq", &err), 0);
        memset(sha, 0, sizeof(sha));
        assert_int_equal(repos_applied_sha(&fx->cfg, "alpha", "proposal/1", sha, &err), 0);
        assert_string_equal(sha, change); /* peeled: the commit, not the tag object */
        memset(sha, 0, sizeof(sha));
        assert_int_equal(repos_applied_sha(&fx->cfg, "alpha", "refs/tags/proposal/1", sha, &err),
                         0);
        assert_string_equal(sha, change);
        assert_null(err);
        memset(sha, 'x', sizeof(sha));
        assert_int_equal(repos_applied_sha(&fx->cfg, "alpha", "proposal/2", sha, &err), -ENOENT);
        assert_non_null(err);
        assert_int_equal(sha[0], 'x');
        free(err);
        err = NULL;

        /* main moves and the work tree follows */
        assert_int_equal(repos_set_main(&fx->cfg, "alpha", change, &err), 0);
        assert_null(err);
        assert_int_equal(repos_applied_sha(&fx->cfg, "alpha", "main", sha, &err), 0);
        assert_string_equal(sha, change);
        char *agent = read_in(ap, "agent.nix");
        assert_non_null(strstr(agent, "environment.systemPackages = [ pkgs.jq ];"));
        char *notes = read_in(ap, "notes.txt");
        assert_string_equal(notes, "hello\n");
        char *status = run_git(ap, "status", "--porcelain", "--untracked-files=all", NULL);
        assert_string_equal(status, "");
        char *head = run_git_line(ap, "rev-parse", "HEAD");
        assert_string_equal(head, change);

        /* and back (a rollback): the added file goes, stray files too */
        write_in(ap, "stray.txt", "left behind\n");
        write_in(ap, "agent.nix", "scribbled\n");
        assert_int_equal(repos_set_main(&fx->cfg, "alpha", seed, &err), 0);
        assert_false(exists_in(ap, "notes.txt"));
        assert_false(exists_in(ap, "stray.txt"));
        char *agent2 = read_in(ap, "agent.nix");
        assert_string_equal(agent2, seed_agent);
        char *status2 = run_git(ap, "status", "--porcelain", "--untracked-files=all", NULL);
        assert_string_equal(status2, "");

        /* an unknown commit leaves main where it is */
        assert_int_equal(
                repos_set_main(&fx->cfg, "alpha", "0123456789abcdef0123456789abcdef01234567", &err),
                -ENOENT);
        free(err);
        err = NULL;
        assert_int_equal(repos_applied_sha(&fx->cfg, "alpha", "main", sha, &err), 0);
        assert_string_equal(sha, seed);

        free(seed), free(seed_agent), free(change), free(agent), free(notes);
        free(status), free(head), free(agent2), free(status2);
}

static void test_diff(void **state)
{
        Fixture *fx = *state;
        create(fx, "alpha");
        char *seed = run_git_line(fx->a, "rev-parse", "main");
        char *change = propose_change(fx, "alpha");
        char *err = NULL, *patch = NULL;
        assert_int_equal(repos_fetch_proposed(&fx->cfg, "alpha", change, &err), 0);

        assert_int_equal(repos_diff(&fx->cfg, "alpha", seed, change, &patch, &err), 0);
        assert_non_null(strstr(patch, "diff --git a/agent.nix b/agent.nix\n"));
        assert_non_null(strstr(patch, "\n-  environment.systemPackages = [ ];\n"));
        assert_non_null(strstr(patch, "\n+  environment.systemPackages = [ pkgs.jq ];\n"));
        assert_non_null(strstr(patch, "diff --git a/notes.txt b/notes.txt\nnew file mode"));
        assert_non_null(strstr(patch, "\n+hello\n"));
        assert_null(strstr(patch, "flake.nix")); /* unchanged */
        free(patch);

        assert_int_equal(repos_diff(&fx->cfg, "alpha", NULL, seed, &patch, &err), 0);
        assert_non_null(strstr(patch, "--- /dev/null\n+++ b/flake.nix\n"));
        assert_non_null(strstr(patch, "--- /dev/null\n+++ b/agent.nix\n"));
        assert_non_null(strstr(patch, "\n+# The NixOS configuration of agent alpha"));
        free(patch);

        assert_int_equal(repos_diff(&fx->cfg, "alpha", seed, seed, &patch, &err), 0);
        assert_string_equal(patch, "");
        free(patch);
        assert_null(err);

        patch = NULL;
        assert_int_equal(repos_diff(&fx->cfg, "alpha", "0123456789abcdef0123456789abcdef01234567",
                                    change, &patch, &err),
                         -ENOENT);
        assert_null(patch);
        free(err);
        free(seed), free(change);
}

static void test_descends(void **state)
{
        Fixture *fx = *state;
        create(fx, "alpha");
        const char *p = fx->p;
        char *seed = run_git_line(p, "rev-parse", "main");
        char *change = propose_change(fx, "alpha");
        /* a sibling of change on another branch */
        free(run_git(p, "checkout", "-q", "-b", "other", seed, NULL));
        char *sibling = commit_file(p, "other.txt", "x\n");
        char *err = NULL;
        assert_int_equal(repos_fetch_proposed(&fx->cfg, "alpha", change, &err), 0);
        assert_int_equal(repos_fetch_proposed(&fx->cfg, "alpha", sibling, &err), 0);

        bool d = false;
        assert_int_equal(repos_descends(&fx->cfg, "alpha", change, seed, &d, &err), 0);
        assert_true(d);
        assert_int_equal(repos_descends(&fx->cfg, "alpha", seed, seed, &d, &err), 0);
        assert_true(d);
        assert_int_equal(repos_descends(&fx->cfg, "alpha", seed, change, &d, &err), 0);
        assert_false(d);
        d = true;
        assert_int_equal(repos_descends(&fx->cfg, "alpha", sibling, change, &d, &err), 0);
        assert_false(d);
        assert_null(err);
        d = true;
        assert_int_equal(repos_descends(&fx->cfg, "alpha",
                                        "0123456789abcdef0123456789abcdef01234567", seed, &d, &err),
                         -ENOENT);
        assert_true(d);
        free(err);
        free(seed), free(change), free(sibling);
}

int main(void)
{
        /* the git program must not see the user's or the system's configuration */
        setenv("GIT_CONFIG_GLOBAL", "/dev/null", 1);
        setenv("GIT_CONFIG_NOSYSTEM", "1", 1);
        assert_int_equal(repos_global_init(), 0);
        assert_int_equal(repos_global_init(), 0);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_create_makes_both_repos, setup, teardown),
                cmocka_unit_test_setup_teardown(test_create_keeps_existing_repos, setup, teardown),
                cmocka_unit_test_setup_teardown(test_create_without_templates, setup, teardown),
                cmocka_unit_test_setup_teardown(test_resolve, setup, teardown),
                cmocka_unit_test_setup_teardown(test_fetch_and_tag, setup, teardown),
                cmocka_unit_test_setup_teardown(test_applied_sha_and_set_main, setup, teardown),
                cmocka_unit_test_setup_teardown(test_diff, setup, teardown),
                cmocka_unit_test_setup_teardown(test_descends, setup, teardown),
        };
        return cmocka_run_group_tests_name("repos", tests, NULL, NULL);
}
