/* The agents' config repos (see repos.h): the proposed repo the manager edits, the applied
 * repo only the daemon writes, and the annotated tags that record what became of each
 * proposal.  libgit2 only; every call opens its own repository objects, so calls on
 * different agents run in parallel and libgit2's per-thread error state stays per call.
 * Two writers on the same repo at once are the caller's business (a ref lock held by the
 * other comes back as -EBUSY).  Nothing here logs: the sentence in *ret_error is for the
 * caller to log or to put into a reply. */

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <git2.h>

#include "cleanup.h"
#include "errors.h"
#include "fsutil.h"
#include "gitutil.h"
#include "repos.h"

#define SIG_NAME         "hive-c0re"
#define SIG_EMAIL        "hive-c0re@localhost"
#define MAIN_REF         "refs/heads/main"
#define PROPOSED_REFSPEC "+refs/heads/*:refs/remotes/proposed/*"
/* The largest template file we read: the seed is a few lines of Nix. */
#define TEMPLATE_MAX (1024 * 1024)

/* The seed files, copied from cfg->templates_dir in this order. */
static const char *const seed_files[] = {"agent.nix", "flake.nix"};

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_result;

static void init_libgit2(void)
{
        init_result = git_libgit2_init() < 0 ? -EIO : 0;
}

int repos_global_init(void)
{
        pthread_once(&init_once, init_libgit2);
        return init_result;
}

/* Names reach us validated, but they become path components here: refuse what would
 * leave the agent's own directory. */
static int check_name(const char *name, char **ret_error)
{
        if (!name || !*name || strchr(name, '/') || strcmp(name, ".") == 0 ||
            strcmp(name, "..") == 0)
                return hive_refuse(ret_error, -EINVAL, "\"%.64s\" is not a valid agent name",
                                   name ? name : "");
        return 0;
}

static char *proposed_path(const HiveConfig *cfg, const char *name)
{
        char *p = NULL;
        return asprintf(&p, "%s/agents/%s/config", cfg->state_dir, name) < 0 ? NULL : p;
}

static char *applied_path(const HiveConfig *cfg, const char *name)
{
        char *p = NULL;
        return asprintf(&p, "%s/applied/%s", cfg->state_dir, name) < 0 ? NULL : p;
}

/* Opens the repo at path exactly (no search upwards: the state dir may lie inside another
 * work tree).  -ENOENT when there is none; what names the repo in the sentence. */
static int open_repo(const char *path, const char *what, const char *name, git_repository **ret,
                     char **ret_error)
{
        int g = git_repository_open_ext(ret, path, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL);
        if (g == GIT_ENOTFOUND)
                return hive_refuse(ret_error, -ENOENT, "agent \"%s\" has no %s repo (%s)", name,
                                   what, path);
        if (g < 0)
                return gitutil_fail(ret_error, g, "cannot open the %s repo of \"%s\" (%s)", what,
                                    name, path);
        return 0;
}

/* Opens the proposed or the applied repo of name. */
static int open_agent_repo(const HiveConfig *cfg, const char *name, bool proposed,
                           git_repository **ret, char **ret_error)
{
        int r = repos_global_init();
        if (r < 0)
                return hive_refuse(ret_error, r, "cannot initialise libgit2");
        r = check_name(name, ret_error);
        if (r < 0)
                return r;
        _cleanup_free_ char *path = proposed ? proposed_path(cfg, name) : applied_path(cfg, name);
        if (!path)
                return hive_refuse(ret_error, -ENOMEM, "out of memory");
        return open_repo(path, proposed ? "proposed" : "applied", name, ret, ret_error);
}

/* Parses a full 40-hex sha (either case). */
static int parse_sha(const char *sha, git_oid *ret, char **ret_error)
{
        size_t n = sha ? strlen(sha) : 0;
        bool hex = n == REPOS_SHA_HEX;
        for (size_t i = 0; hex && i < n; i++)
                hex = isxdigit((unsigned char)sha[i]);
        if (!hex || git_oid_fromstr(ret, sha) < 0)
                return hive_refuse(ret_error, -EINVAL,
                                   "\"%.64s\" is not a commit sha (40 hex digits)", sha ? sha : "");
        return 0;
}

/* Looks up commit sha in repo: -EINVAL when sha is not 40 hex digits, -ENOENT when repo
 * has no such commit. */
static int lookup_commit(git_repository *repo, const char *what, const char *name, const char *sha,
                         git_commit **ret, char **ret_error)
{
        git_oid oid;
        int r = parse_sha(sha, &oid, ret_error);
        if (r < 0)
                return r;
        int g = git_commit_lookup(ret, repo, &oid);
        if (g == GIT_ENOTFOUND)
                return hive_refuse(ret_error, -ENOENT, "the %s repo of \"%s\" has no commit %s",
                                   what, name, sha);
        if (g < 0)
                return gitutil_fail(ret_error, g, "cannot read commit %s in the %s repo of \"%s\"",
                                    sha, what, name);
        return 0;
}

static void oid_to_sha(const git_oid *oid, char ret_sha[REPOS_SHA_HEX + 1])
{
        git_oid_tostr(ret_sha, REPOS_SHA_HEX + 1, oid);
}

/* Reads a template file (at most TEMPLATE_MAX bytes) into *ret (malloc'ed, NUL-terminated). */
static int read_template(const char *path, char **ret)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        _cleanup_free_ char *buf = malloc(TEMPLATE_MAX + 1);
        if (!buf)
                return -ENOMEM;
        size_t len = 0;
        for (;;) {
                ssize_t k = read(fd, buf + len, TEMPLATE_MAX + 1 - len);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        break;
                len += (size_t)k;
                if (len > TEMPLATE_MAX)
                        return -EFBIG;
        }
        buf[len] = '\0';
        *ret = TAKE_PTR(buf);
        return 0;
}

/* s with every "@NAME@" replaced by name (malloc'ed), or NULL when out of memory. */
static char *replace_name(const char *s, const char *name)
{
        static const char pat[] = "@NAME@";
        size_t pl = sizeof(pat) - 1, nl = strlen(name), count = 0;
        for (const char *p = strstr(s, pat); p; p = strstr(p + pl, pat))
                count++;
        size_t len = strlen(s) + count * nl - count * pl;
        char *out = malloc(len + 1), *o = out;
        if (!out)
                return NULL;
        for (const char *p = s, *q; p; p = q ? q + pl : NULL) {
                q = strstr(p, pat);
                size_t n = q ? (size_t)(q - p) : strlen(p);
                memcpy(o, p, n);
                o += n;
                if (q) {
                        memcpy(o, name, nl);
                        o += nl;
                }
        }
        *o = '\0';
        return out;
}

static int write_file(const char *path, const char *content)
{
        _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        size_t n = strlen(content);
        while (n > 0) {
                ssize_t k = write(fd, content, n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                content += k;
                n -= (size_t)k;
        }
        return 0;
}

/* Writes the seed into the work tree of repo (at workdir), stages it and commits
 * "seed <name>" on HEAD (main). */
static int commit_seed(const HiveConfig *cfg, const char *name, git_repository *repo,
                       const char *workdir, char **ret_error)
{
        _cleanup_(index_cleanup) git_index *index = NULL;
        int g = git_repository_index(&index, repo);
        if (g < 0)
                return gitutil_fail(ret_error, g,
                                    "cannot open the index of the proposed repo of \"%s\"", name);
        for (size_t i = 0; i < ELEMENTSOF(seed_files); i++) {
                _cleanup_free_ char *src = NULL, *dst = NULL, *text = NULL, *seeded = NULL;
                if (asprintf(&src, "%s/%s", cfg->templates_dir, seed_files[i]) < 0 ||
                    asprintf(&dst, "%s/%s", workdir, seed_files[i]) < 0)
                        return hive_refuse(ret_error, -ENOMEM, "out of memory");
                int r = read_template(src, &text);
                if (r < 0)
                        return hive_refuse(ret_error, r, "cannot read the seed template %s: %s",
                                           src, strerror(-r));
                seeded = replace_name(text, name);
                if (!seeded)
                        return hive_refuse(ret_error, -ENOMEM, "out of memory");
                r = write_file(dst, seeded);
                if (r < 0)
                        return hive_refuse(ret_error, r, "cannot write %s: %s", dst, strerror(-r));
                g = git_index_add_bypath(index, seed_files[i]);
                if (g < 0)
                        return gitutil_fail(ret_error, g,
                                            "cannot stage %s in the proposed repo of \"%s\"",
                                            seed_files[i], name);
        }
        git_oid tree_oid, commit_oid;
        g = git_index_write(index);
        if (g >= 0)
                g = git_index_write_tree(&tree_oid, index);
        if (g < 0)
                return gitutil_fail(ret_error, g, "cannot write the seed of \"%s\"", name);
        _cleanup_(tree_cleanup) git_tree *tree = NULL;
        _cleanup_(signature_cleanup) git_signature *sig = NULL;
        _cleanup_free_ char *message = NULL;
        if (asprintf(&message, "seed %s\n", name) < 0)
                return hive_refuse(ret_error, -ENOMEM, "out of memory");
        g = git_tree_lookup(&tree, repo, &tree_oid);
        if (g >= 0)
                g = git_signature_now(&sig, SIG_NAME, SIG_EMAIL);
        if (g >= 0)
                g = git_commit_create(&commit_oid, repo, "HEAD", sig, sig, NULL, message, tree, 0,
                                      NULL);
        if (g < 0)
                return gitutil_fail(ret_error, g, "cannot commit the seed of \"%s\"", name);
        return 0;
}

/* A remote of repo pointing at url with refspec (NULL: git's default one), configured as
 * remote_name (NULL: in memory only).  Never through git_remote_lookup() nor url.*.insteadOf
 * rewriting: with Debian's libgit2 1.5.1 and pcre2 10.42 those leak about 20 KiB of pcre2
 * match data per config entry they scan (valgrind; upstream's regexp.c now frees it on
 * every path), and the daemon fetches for every proposal. */
static int make_remote(git_repository *repo, const char *remote_name, const char *url,
                       const char *refspec, git_remote **ret)
{
        git_remote_create_options opts = GIT_REMOTE_CREATE_OPTIONS_INIT;
        opts.repository = repo;
        opts.name = remote_name;
        opts.fetchspec = refspec;
        opts.flags = GIT_REMOTE_CREATE_SKIP_INSTEADOF;
        return git_remote_create_with_opts(ret, url, &opts);
}

/* Configures the remote remote_name of repo (see make_remote) unless it exists. */
static int ensure_remote(git_repository *repo, const char *remote_name, const char *url,
                         const char *refspec, char **ret_error)
{
        _cleanup_free_ char *key = NULL;
        if (asprintf(&key, "remote.%s.url", remote_name) < 0)
                return hive_refuse(ret_error, -ENOMEM, "out of memory");
        _cleanup_(config_cleanup) git_config *config = NULL;
        git_config_entry *entry = NULL;
        int g = git_repository_config_snapshot(&config, repo);
        if (g >= 0)
                g = git_config_get_entry(&entry, config, key);
        git_config_entry_free(entry);
        if (g == GIT_ENOTFOUND) {
                _cleanup_(remote_cleanup) git_remote *remote = NULL;
                g = make_remote(repo, remote_name, url, refspec, &remote);
        }
        if (g < 0)
                return gitutil_fail(ret_error, g, "cannot set up the remote \"%s\" (%s)",
                                    remote_name, url);
        return 0;
}

/* Fetches the branches of the proposed repo into refs/remotes/proposed/ of the applied
 * repo (as the configured remote "proposed" would), never its tags: the applied repo's
 * tags are the daemon's record. */
static int fetch_proposed(git_repository *applied, const HiveConfig *cfg, const char *name,
                          char **ret_error)
{
        _cleanup_free_ char *url = proposed_path(cfg, name);
        if (!url)
                return hive_refuse(ret_error, -ENOMEM, "out of memory");
        _cleanup_(remote_cleanup) git_remote *remote = NULL;
        git_fetch_options opts = GIT_FETCH_OPTIONS_INIT;
        opts.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_NONE;
        int g = make_remote(applied, NULL, url, PROPOSED_REFSPEC, &remote);
        if (g >= 0)
                g = git_remote_fetch(remote, NULL, &opts, "hive-c0re: fetch proposed");
        if (g < 0)
                return gitutil_fail(
                        ret_error, g,
                        "cannot fetch the proposed repo of \"%s\" into its applied repo", name);
        return 0;
}

/* Checks commit out into the applied work tree (forced: the work tree is the daemon's
 * alone, so anything else there goes) and then points main, and HEAD, at it.  In this order,
 * so that files the old main had and commit has not are removed as well. */
static int move_main(git_repository *repo, const char *name, git_commit *commit, char **ret_error)
{
        git_checkout_options opts = GIT_CHECKOUT_OPTIONS_INIT;
        opts.checkout_strategy = GIT_CHECKOUT_FORCE | GIT_CHECKOUT_REMOVE_UNTRACKED;
        char sha[REPOS_SHA_HEX + 1];
        oid_to_sha(git_commit_id(commit), sha);
        int g = git_checkout_tree(repo, (const git_object *)commit, &opts);
        if (g < 0)
                return gitutil_fail(ret_error, g,
                                    "cannot check out %s in the applied repo of \"%s\"", sha, name);
        _cleanup_(reference_cleanup) git_reference *ref = NULL;
        g = git_reference_create(&ref, repo, MAIN_REF, git_commit_id(commit), 1, "hive-c0re: main");
        if (g >= 0)
                g = git_repository_set_head(repo, MAIN_REF);
        if (g < 0)
                return gitutil_fail(ret_error, g,
                                    "cannot move main of the applied repo of \"%s\" to %s", name,
                                    sha);
        return 0;
}

/* The root commit of HEAD's first-parent line in repo: the seed. */
static int find_seed(git_repository *repo, const char *name, git_oid *ret, char **ret_error)
{
        _cleanup_(commit_cleanup) git_commit *c = NULL;
        git_oid head;
        int g = git_reference_name_to_id(&head, repo, "HEAD");
        if (g >= 0)
                g = git_commit_lookup(&c, repo, &head);
        while (g >= 0 && git_commit_parentcount(c) > 0) {
                git_commit *parent = NULL;
                g = git_commit_parent(&parent, c, 0);
                if (g >= 0) {
                        git_commit_free(c);
                        c = parent;
                }
        }
        if (g < 0)
                return gitutil_fail(ret_error, g, "cannot find the seed commit of \"%s\"", name);
        git_oid_cpy(ret, git_commit_id(c));
        return 0;
}

/* Opens the repo at path, or initialises it (non-bare, HEAD on an unborn main) when there
 * is none.  *ret_fresh: whether HEAD is unborn (the repo still needs its first commit). */
static int open_or_init(const char *path, const char *what, const char *name, git_repository **ret,
                        bool *ret_fresh, char **ret_error)
{
        _cleanup_(repository_cleanup) git_repository *repo = NULL;
        int g = git_repository_open_ext(&repo, path, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL);
        if (g == GIT_ENOTFOUND) {
                git_repository_init_options opts = GIT_REPOSITORY_INIT_OPTIONS_INIT;
                opts.flags = GIT_REPOSITORY_INIT_MKDIR | GIT_REPOSITORY_INIT_NO_REINIT;
                opts.initial_head = "main";
                g = git_repository_init_ext(&repo, path, &opts);
        }
        if (g < 0)
                return gitutil_fail(ret_error, g, "cannot create the %s repo of \"%s\" (%s)", what,
                                    name, path);
        g = git_repository_head_unborn(repo);
        if (g < 0)
                return gitutil_fail(ret_error, g, "cannot read HEAD of the %s repo of \"%s\"", what,
                                    name);
        *ret_fresh = g == 1;
        *ret = TAKE_PTR(repo);
        return 0;
}

int repos_create(const HiveConfig *cfg, const char *name, char **ret_error)
{
        int r = repos_global_init();
        if (r < 0)
                return hive_refuse(ret_error, r, "cannot initialise libgit2");
        r = check_name(name, ret_error);
        if (r < 0)
                return r;
        _cleanup_free_ char *agent_dir = NULL, *applied_dir = NULL;
        _cleanup_free_ char *ppath = proposed_path(cfg, name), *apath = applied_path(cfg, name);
        if (!ppath || !apath || asprintf(&agent_dir, "%s/agents/%s", cfg->state_dir, name) < 0 ||
            asprintf(&applied_dir, "%s/applied", cfg->state_dir) < 0)
                return hive_refuse(ret_error, -ENOMEM, "out of memory");
        const char *dirs[] = {agent_dir, applied_dir};
        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                r = fsutil_mkdir_p(dirs[i], 0755);
                if (r < 0)
                        return hive_refuse(ret_error, r, "cannot create %s: %s", dirs[i],
                                           strerror(-r));
        }

        /* Each step is skipped when already done, so a create interrupted anywhere is
         * finished by the next call, and a revived agent keeps both repos as they are. */
        _cleanup_(repository_cleanup) git_repository *proposed = NULL;
        bool fresh = false;
        r = open_or_init(ppath, "proposed", name, &proposed, &fresh, ret_error);
        if (r < 0)
                return r;
        if (fresh) {
                r = commit_seed(cfg, name, proposed, ppath, ret_error);
                if (r < 0)
                        return r;
        }
        r = ensure_remote(proposed, "applied", apath, NULL, ret_error);
        if (r < 0)
                return r;

        _cleanup_(repository_cleanup) git_repository *applied = NULL;
        r = open_or_init(apath, "applied", name, &applied, &fresh, ret_error);
        if (r < 0)
                return r;
        r = ensure_remote(applied, "proposed", ppath, PROPOSED_REFSPEC, ret_error);
        if (r < 0 || !fresh)
                return r;
        r = fetch_proposed(applied, cfg, name, ret_error);
        if (r < 0)
                return r;
        /* The applied main starts at the seed, never at later (unapproved) proposed work. */
        git_oid seed;
        r = find_seed(proposed, name, &seed, ret_error);
        if (r < 0)
                return r;
        _cleanup_(commit_cleanup) git_commit *commit = NULL;
        int g = git_commit_lookup(&commit, applied, &seed);
        if (g < 0)
                return gitutil_fail(ret_error, g,
                                    "the seed of \"%s\" did not reach its applied repo", name);
        return move_main(applied, name, commit, ret_error);
}

int repos_resolve_proposed(const HiveConfig *cfg, const char *name, const char *ref,
                           char ret_sha[REPOS_SHA_HEX + 1], char **ret_error)
{
        size_t n = ref ? strlen(ref) : 0;
        bool hex = n >= 7 && n <= REPOS_SHA_HEX;
        for (size_t i = 0; hex && i < n; i++)
                hex = isxdigit((unsigned char)ref[i]);
        if (!hex)
                return hive_refuse(
                        ret_error, -EINVAL,
                        "\"%.64s\" is not a commit: it must be 7 to 40 hex digits of a "
                        "commit of the proposed repo (branch names and expressions such as "
                        "HEAD~1 are not accepted)",
                        ref ? ref : "");
        _cleanup_(repository_cleanup) git_repository *repo = NULL;
        int r = open_agent_repo(cfg, name, true, &repo, ret_error);
        if (r < 0)
                return r;
        git_oid prefix;
        int g = git_oid_fromstrn(&prefix, ref, n);
        _cleanup_(object_cleanup) git_object *obj = NULL;
        if (g >= 0)
                g = git_object_lookup_prefix(&obj, repo, &prefix, n, GIT_OBJECT_ANY);
        if (g == GIT_ENOTFOUND)
                return hive_refuse(
                        ret_error, -ENOENT,
                        "the proposed repo of \"%s\" has no commit %s (commit first, then "
                        "ask with its sha)",
                        name, ref);
        if (g == GIT_EAMBIGUOUS)
                return hive_refuse(
                        ret_error, -EINVAL,
                        "%s names more than one object in the proposed repo of \"%s\": give "
                        "more hex digits",
                        ref, name);
        if (g < 0)
                return gitutil_fail(ret_error, g,
                                    "cannot look up %s in the proposed repo of \"%s\"", ref, name);
        if (git_object_type(obj) != GIT_OBJECT_COMMIT)
                return hive_refuse(ret_error, -EINVAL,
                                   "%s is a %s in the proposed repo of \"%s\", not a commit", ref,
                                   git_object_type2string(git_object_type(obj)), name);
        oid_to_sha(git_object_id(obj), ret_sha);
        return 0;
}

int repos_fetch_proposed(const HiveConfig *cfg, const char *name, const char *sha, char **ret_error)
{
        git_oid oid;
        int r = parse_sha(sha, &oid, ret_error);
        if (r < 0)
                return r;
        _cleanup_(repository_cleanup) git_repository *repo = NULL;
        r = open_agent_repo(cfg, name, false, &repo, ret_error);
        if (r < 0)
                return r;
        r = fetch_proposed(repo, cfg, name, ret_error);
        if (r < 0)
                return r;
        _cleanup_(commit_cleanup) git_commit *commit = NULL;
        int g = git_commit_lookup(&commit, repo, &oid);
        if (g == GIT_ENOTFOUND)
                return hive_refuse(
                        ret_error, -ENOENT,
                        "commit %s is not on any branch of the proposed repo of \"%s\", so "
                        "it cannot be fetched (commit it on main)",
                        sha, name);
        if (g < 0)
                return gitutil_fail(ret_error, g, "cannot read the fetched commit %s of \"%s\"",
                                    sha, name);
        return 0;
}

int repos_tag(const HiveConfig *cfg, const char *name, const char *tag, const char *sha,
              const char *message, char **ret_error)
{
        _cleanup_(repository_cleanup) git_repository *repo = NULL;
        int r = open_agent_repo(cfg, name, false, &repo, ret_error);
        if (r < 0)
                return r;
        _cleanup_(commit_cleanup) git_commit *commit = NULL;
        r = lookup_commit(repo, "applied", name, sha, &commit, ret_error);
        if (r < 0)
                return r;
        /* git's convention: an annotation ends with a newline. */
        _cleanup_free_ char *text = NULL;
        const char *m = message && *message ? message : tag;
        size_t ml = strlen(m);
        if (asprintf(&text, "%s%s", m, ml > 0 && m[ml - 1] == '\n' ? "" : "\n") < 0)
                return hive_refuse(ret_error, -ENOMEM, "out of memory");
        _cleanup_(signature_cleanup) git_signature *sig = NULL;
        int g = git_signature_now(&sig, SIG_NAME, SIG_EMAIL);
        if (g < 0)
                return gitutil_fail(ret_error, g, "cannot make the tagger signature");
        git_oid tag_oid;
        g = git_tag_create(&tag_oid, repo, tag, (const git_object *)commit, sig, text, 0);
        if (g == GIT_EEXISTS)
                return hive_refuse(ret_error, -EEXIST,
                                   "the applied repo of \"%s\" already has tag %s", name, tag);
        if (g < 0)
                return gitutil_fail(ret_error, g,
                                    "cannot tag %s as %s in the applied repo of \"%s\"", sha, tag,
                                    name);
        return 0;
}

int repos_applied_sha(const HiveConfig *cfg, const char *name, const char *ref,
                      char ret_sha[REPOS_SHA_HEX + 1], char **ret_error)
{
        if (!ref || !*ref)
                return hive_refuse(ret_error, -EINVAL, "no tag or branch given");
        _cleanup_(repository_cleanup) git_repository *repo = NULL;
        int r = open_agent_repo(cfg, name, false, &repo, ret_error);
        if (r < 0)
                return r;
        /* dwim: "main" → refs/heads/main, "failed/3" → refs/tags/failed/3; no expressions. */
        _cleanup_(reference_cleanup) git_reference *reference = NULL;
        _cleanup_(object_cleanup) git_object *obj = NULL;
        int g = git_reference_dwim(&reference, repo, ref);
        if (g == GIT_ENOTFOUND)
                return hive_refuse(ret_error, -ENOENT,
                                   "the applied repo of \"%s\" has no tag or branch %s", name, ref);
        if (g >= 0)
                g = git_reference_peel(&obj, reference, GIT_OBJECT_COMMIT);
        if (g < 0)
                return gitutil_fail(ret_error, g, "cannot resolve %s in the applied repo of \"%s\"",
                                    ref, name);
        oid_to_sha(git_object_id(obj), ret_sha);
        return 0;
}

int repos_set_main(const HiveConfig *cfg, const char *name, const char *sha, char **ret_error)
{
        _cleanup_(repository_cleanup) git_repository *repo = NULL;
        int r = open_agent_repo(cfg, name, false, &repo, ret_error);
        if (r < 0)
                return r;
        _cleanup_(commit_cleanup) git_commit *commit = NULL;
        r = lookup_commit(repo, "applied", name, sha, &commit, ret_error);
        if (r < 0)
                return r;
        return move_main(repo, name, commit, ret_error);
}

int repos_diff(const HiveConfig *cfg, const char *name, const char *base, const char *sha,
               char **ret_patch, char **ret_error)
{
        _cleanup_(repository_cleanup) git_repository *repo = NULL;
        int r = open_agent_repo(cfg, name, false, &repo, ret_error);
        if (r < 0)
                return r;
        _cleanup_(commit_cleanup) git_commit *base_commit = NULL, *commit = NULL;
        _cleanup_(tree_cleanup) git_tree *base_tree = NULL, *tree = NULL;
        if (base) {
                r = lookup_commit(repo, "applied", name, base, &base_commit, ret_error);
                if (r < 0)
                        return r;
        }
        r = lookup_commit(repo, "applied", name, sha, &commit, ret_error);
        if (r < 0)
                return r;
        int g = base_commit ? git_commit_tree(&base_tree, base_commit) : 0;
        if (g >= 0)
                g = git_commit_tree(&tree, commit);
        _cleanup_(diff_cleanup) git_diff *diff = NULL;
        _cleanup_(buf_cleanup) git_buf buf = GIT_BUF_INIT;
        if (g >= 0)
                g = git_diff_tree_to_tree(&diff, repo, base_tree, tree, NULL);
        if (g >= 0)
                g = git_diff_to_buf(&buf, diff, GIT_DIFF_FORMAT_PATCH);
        if (g < 0)
                return gitutil_fail(ret_error, g,
                                    "cannot diff %s against %s in the applied repo of "
                                    "\"%s\"",
                                    sha, base ? base : "the empty tree", name);
        char *patch = malloc(buf.size + 1);
        if (!patch)
                return hive_refuse(ret_error, -ENOMEM, "out of memory");
        if (buf.size > 0)
                memcpy(patch, buf.ptr, buf.size);
        patch[buf.size] = '\0';
        *ret_patch = patch;
        return 0;
}

int repos_descends(const HiveConfig *cfg, const char *name, const char *sha, const char *base,
                   bool *ret, char **ret_error)
{
        _cleanup_(repository_cleanup) git_repository *repo = NULL;
        int r = open_agent_repo(cfg, name, false, &repo, ret_error);
        if (r < 0)
                return r;
        _cleanup_(commit_cleanup) git_commit *c = NULL, *b = NULL;
        r = lookup_commit(repo, "applied", name, sha, &c, ret_error);
        if (r < 0)
                return r;
        r = lookup_commit(repo, "applied", name, base, &b, ret_error);
        if (r < 0)
                return r;
        if (git_oid_equal(git_commit_id(c), git_commit_id(b))) {
                *ret = true;
                return 0;
        }
        int g = git_graph_descendant_of(repo, git_commit_id(c), git_commit_id(b));
        if (g < 0)
                return gitutil_fail(ret_error, g,
                                    "cannot compare %s with %s in the applied repo of "
                                    "\"%s\"",
                                    sha, base, name);
        *ret = g == 1;
        return 0;
}
