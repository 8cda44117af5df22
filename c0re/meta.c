/* The meta flake (see meta.h): <state>/meta, a libgit2 repo whose main branch records the
 * deployed flake.nix and flake.lock, and the nix calls that lock and build it.  flake.nix is
 * generated here, deterministically (inputs and configurations sorted by name); flake.lock
 * is nix's, read back with jansson.  nix and a configured builder run through proc.c with the
 * daemon's environment plus a private HOME (nix keeps its fetcher and eval caches under
 * $XDG_CACHE_HOME, creating it wherever HOME points), flakes enabled and substituters off;
 * NIX_CONFIG lines the daemon already has come after ours, so an operator can still
 * override them.  Nothing here logs: sentences go to *ret_error for the caller.
 *
 * nix 2.8 notes (measured): `git+file:///abs?rev=<sha>` locks any commit the repo holds,
 * reachable from main or not, and records ref "main" next to it; an --override-input for
 * an input the flake does not have is only a warning (so the locked rev is read back); a
 * path with %-escapes is taken for a remote URL (so the state dir must need none); locking
 * or building a dirty git tree runs `git add --intent-to-add flake.lock` in it (so the
 * index is reset, not only the files, on restore). */
#define LOG_SUBSYSTEM "meta"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <git2.h>
#include <jansson.h>

#include "cleanup.h"
#include "errors.h"
#include "fsutil.h"
#include "gitutil.h"
#include "meta.h"
#include "proc.h"
#include "repos.h"

#define SIG_NAME       "hive-c0re"
#define SIG_EMAIL      "hive-c0re@localhost"
#define MAIN_REF       "refs/heads/main"
#define NIX            "nix"
#define NAME_MAX_LEN   63
#define TOPLEVEL_FMT   ".#nixosConfigurations.%s.config.system.build.toplevel"
#define DASHBOARD_PORT "7000"
#define PRONOUNS       "they/them"
#define SYSTEM         "x86_64-linux"
#define EXCERPT_LINES  6
#define EXCERPT_MAX    900
#define NIX_CONFIG_OURS                                                                            \
        "experimental-features = nix-command flakes\nsubstituters =\nwarn-dirty = false\n"

/* The inputs of the meta flake that are not an agent's (meta_update_inputs' whole set).  A
 * hyperhive input (the harness module) is to come; until then the harness is not part of
 * the containers' configuration. */
static const char *const fixed_inputs[] = {"nixpkgs"};

/* Files a daemon killed mid-write leaves in .git; the daemon is the repo's only writer. */
static const char *const stale_locks[] = {"index.lock", "HEAD.lock", "refs/heads/main.lock"};

extern char **environ;

static pthread_mutex_t meta_mutex = PTHREAD_MUTEX_INITIALIZER;

void meta_lock(void)
{
        pthread_mutex_lock(&meta_mutex);
}

void meta_unlock(void)
{
        pthread_mutex_unlock(&meta_mutex);
}

static inline void json_cleanup(json_t **p)
{
        json_decref(*p);
}

static inline void file_cleanup(FILE **f)
{
        if (*f)
                fclose(*f);
}

static inline void run_cleanup(BackendRun *r)
{
        backend_run_done(r);
}

/* Agent names become attribute names, input names and path components: letters, digits,
 * '-' and '_', starting with a letter or digit. */
static int check_name(const char *name, char **ret_error)
{
        size_t n = name ? strlen(name) : 0;
        bool ok = n >= 1 && n <= NAME_MAX_LEN && name[0] != '-' && name[0] != '_';
        for (size_t i = 0; ok && i < n; i++) {
                char c = name[i];
                ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                     c == '-' || c == '_';
        }
        if (!ok)
                return hive_refuse(ret_error, -EINVAL, "\"%.64s\" is not a valid agent name",
                                   name ? name : "");
        return 0;
}

/* nix 2.8 takes a git+file URL whose path needs %-escaping for a remote one, so the state
 * dir must consist of characters a URL path carries as they are. */
static int check_state_dir(const HiveConfig *cfg, char **ret_error)
{
        const char *s = cfg->state_dir;
        if (!s || s[0] != '/')
                return hive_refuse(ret_error, -EINVAL,
                                   "the state directory must be an absolute path");
        if (s[strspn(s,
                     "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+~@,=:")])
                return hive_refuse(ret_error, -EINVAL,
                                   "the state directory %s has characters nix cannot take in a "
                                   "git+file URL (use letters, digits and /._-+~@,=:)",
                                   s);
        return 0;
}

static int check_sha(const char *sha, char **ret_error)
{
        size_t n = sha ? strlen(sha) : 0;
        bool ok = n == REPOS_SHA_HEX && strspn(sha, "0123456789abcdef") == n;
        if (!ok)
                return hive_refuse(ret_error, -EINVAL,
                                   "\"%.64s\" is not a commit sha (40 lowercase hex digits)",
                                   sha ? sha : "");
        return 0;
}

static char *meta_dir(const HiveConfig *cfg)
{
        char *p = NULL;
        return asprintf(&p, "%s/meta", cfg->state_dir) < 0 ? NULL : p;
}

static char *meta_file(const HiveConfig *cfg, const char *file)
{
        char *p = NULL;
        return asprintf(&p, "%s/meta/%s", cfg->state_dir, file) < 0 ? NULL : p;
}

/* ---- flake.nix ---- */

/* Writes s as the body of a Nix string literal (quotes, backslashes and "${" escaped). */
static void put_nix_string(FILE *f, const char *s)
{
        for (const char *p = s; *p; p++) {
                if (*p == '"' || *p == '\\' || (*p == '$' && p[1] == '{'))
                        fputc('\\', f);
                if (*p == '\n')
                        fputs("\\n", f);
                else
                        fputc(*p, f);
        }
}

typedef struct Input {
        char *name;
        char *url; /* already safe inside a Nix string, or NULL for nixpkgs (escaped on output) */
} Input;

static int input_cmp(const void *a, const void *b)
{
        return strcmp(((const Input *)a)->name, ((const Input *)b)->name);
}

static int agent_cmp(const void *a, const void *b)
{
        return strcmp((*(const MetaAgent *const *)a)->name, (*(const MetaAgent *const *)b)->name);
}

/* The text of flake.nix for agents (sorted by name here): malloc'ed, or NULL. */
static char *flake_text(const HiveConfig *cfg, const MetaAgent *const *agents, size_t n)
{
        size_t n_inputs = n + ELEMENTSOF(fixed_inputs);
        Input *inputs = calloc(n_inputs, sizeof(Input));
        if (!inputs)
                return NULL;
        char *text = NULL;
        size_t len = 0;
        FILE *f = NULL;
        bool ok = true;
        for (size_t i = 0; i < n && ok; i++)
                ok = asprintf(&inputs[i].name, "agent-%s", agents[i]->name) >= 0 &&
                     asprintf(&inputs[i].url, "git+file://%s/applied/%s", cfg->state_dir,
                              agents[i]->name) >= 0;
        for (size_t i = 0; i < ELEMENTSOF(fixed_inputs) && ok; i++)
                ok = (inputs[n + i].name = strdup(fixed_inputs[i])) != NULL;
        if (ok)
                f = open_memstream(&text, &len);
        if (f) {
                qsort(inputs, n_inputs, sizeof(Input), input_cmp);
                fputs("# Generated by hive-c0re; do not edit: it is rewritten before every "
                      "deploy.\n"
                      "# One input agent-<name> per agent (its applied config repo, pinned in "
                      "flake.lock to\n"
                      "# the deployed commit) and one nixosConfigurations.<name> each.  The "
                      "branch main of\n"
                      "# this repo only records successful deploys.\n"
                      "# There is no hyperhive input yet: the harness module is not part of the "
                      "containers'\n"
                      "# configuration until there is one.\n"
                      "{\n"
                      "  description = \"hyperhive meta flake\";\n"
                      "\n"
                      "  inputs = {\n",
                      f);
                for (size_t i = 0; i < n_inputs; i++) {
                        fprintf(f, "    %s.url = \"", inputs[i].name);
                        if (inputs[i].url)
                                fputs(inputs[i].url, f);
                        else
                                put_nix_string(f, cfg->nixpkgs);
                        fputs("\";\n", f);
                }
                fputs("  };\n"
                      "\n"
                      "  outputs = { self, nixpkgs, ... }@inputs: {\n"
                      "    nixosConfigurations = {\n",
                      f);
                for (size_t i = 0; i < n; i++) {
                        const MetaAgent *a = agents[i];
                        fprintf(f,
                                "      \"%s\" = nixpkgs.lib.nixosSystem {\n"
                                "        system = \"" SYSTEM "\";\n"
                                "        modules = [\n"
                                "          inputs.agent-%s.nixosModules.default\n"
                                "          ({ ... }: {\n"
                                "            networking.hostName = \"%s%s\";\n"
                                "            boot.isNspawnContainer = true;\n"
                                "            environment.variables = {\n"
                                "              HIVE_LABEL = \"%s\";\n"
                                "              HIVE_PORT = \"%u\";\n"
                                "              HIVE_DASHBOARD_PORT = \"" DASHBOARD_PORT "\";\n"
                                "              HIVE_OPERATOR_PRONOUNS = \"" PRONOUNS "\";\n"
                                "            };\n"
                                "          })\n"
                                "        ];\n"
                                "      };\n",
                                a->name, a->name, a->manager ? "" : "h-",
                                a->manager ? "hm1nd" : a->name, a->name, (unsigned)a->port);
                }
                fputs("    };\n"
                      "  };\n"
                      "}\n",
                      f);
                ok = !ferror(f);
                ok = fclose(f) == 0 && ok;
        }
        for (size_t i = 0; i < n_inputs; i++) {
                free(inputs[i].name);
                free(inputs[i].url);
        }
        free(inputs);
        if (!f || !ok) {
                free(text);
                return NULL;
        }
        return text;
}

/* Writes the flake of agents into the work tree of dir. */
static int write_flake_at(const HiveConfig *cfg, const MetaAgent *agents, size_t n,
                          char **ret_error)
{
        _cleanup_free_ const MetaAgent **sorted = calloc(n ? n : 1, sizeof(MetaAgent *));
        if (!sorted)
                return hive_refuse(ret_error, -ENOMEM, "out of memory");
        for (size_t i = 0; i < n; i++) {
                int r = check_name(agents[i].name, ret_error);
                if (r < 0)
                        return r;
                sorted[i] = &agents[i];
        }
        qsort(sorted, n, sizeof(MetaAgent *), agent_cmp);
        for (size_t i = 1; i < n; i++)
                if (strcmp(sorted[i - 1]->name, sorted[i]->name) == 0)
                        return hive_refuse(ret_error, -EINVAL, "agent \"%s\" is listed twice",
                                           sorted[i]->name);
        _cleanup_free_ char *text = flake_text(cfg, sorted, n);
        _cleanup_free_ char *path = meta_file(cfg, "flake.nix");
        if (!text || !path)
                return hive_refuse(ret_error, -ENOMEM, "out of memory");
        int r = fsutil_write_atomic(path, text, strlen(text), 0644);
        if (r < 0)
                return hive_refuse(ret_error, r, "cannot write %s: %s", path, strerror(-r));
        return 0;
}

/* ---- flake.lock ---- */

/* The locked rev of input in the work tree's flake.lock: *ret_rev NULL when there is no
 * lock file, no such input or no rev. */
static int read_locked_rev(const HiveConfig *cfg, const char *input, char **ret_rev,
                           char **ret_error)
{
        _cleanup_free_ char *path = meta_file(cfg, "flake.lock");
        if (!path)
                return hive_refuse(ret_error, -ENOMEM, "out of memory");
        json_error_t jerr;
        _cleanup_(json_cleanup) json_t *lock = json_load_file(path, 0, &jerr);
        if (!lock) {
                if (access(path, F_OK) < 0 && errno == ENOENT) {
                        *ret_rev = NULL;
                        return 0;
                }
                return hive_refuse(ret_error, -EBADMSG, "cannot read %s: %s (line %d)", path,
                                   jerr.text, jerr.line);
        }
        json_t *nodes = json_object_get(lock, "nodes");
        const char *root = json_string_value(json_object_get(lock, "root"));
        if (!json_is_object(nodes) || !root)
                return hive_refuse(ret_error, -EBADMSG, "%s is not a flake lock file", path);
        /* The root's inputs map an input name to a node key (a list when it follows). */
        json_t *key =
                json_object_get(json_object_get(json_object_get(nodes, root), "inputs"), input);
        const char *rev = NULL;
        if (json_is_string(key))
                rev = json_string_value(json_object_get(
                        json_object_get(json_object_get(nodes, json_string_value(key)), "locked"),
                        "rev"));
        if (!rev) {
                *ret_rev = NULL;
                return 0;
        }
        char *copy = strdup(rev);
        if (!copy)
                return hive_refuse(ret_error, -ENOMEM, "out of memory");
        *ret_rev = copy;
        return 0;
}

/* ---- running nix ---- */

/* The daemon's environment with NIX_CONFIG (ours, then the daemon's), HOME and
 * XDG_CACHE_HOME replaced. */
static int nix_env(const char *home, char ***ret_env)
{
        static const char *const replaced[] = {"NIX_CONFIG", "HOME", "XDG_CACHE_HOME"};
        _cleanup_strv_free_ char **env =
                calloc(strv_length(environ) + ELEMENTSOF(replaced) + 1, sizeof(char *));
        if (!env)
                return -ENOMEM;
        const char *nix_config = NULL;
        size_t k = 0;
        for (char **e = environ; e && *e; e++) {
                bool skip = false;
                for (size_t i = 0; i < ELEMENTSOF(replaced) && !skip; i++) {
                        size_t len = strlen(replaced[i]);
                        if (strncmp(*e, replaced[i], len) == 0 && (*e)[len] == '=') {
                                skip = true;
                                if (i == 0)
                                        nix_config = *e + len + 1;
                        }
                }
                if (!skip && !(env[k++] = strdup(*e)))
                        return -ENOMEM;
        }
        const char *theirs = nix_config ? nix_config : "";
        if (asprintf(&env[k++], "NIX_CONFIG=" NIX_CONFIG_OURS "%s", theirs) < 0 ||
            asprintf(&env[k++], "HOME=%s", home) < 0 ||
            asprintf(&env[k++], "XDG_CACHE_HOME=%s/.cache", home) < 0) {
                env[k - 1] = NULL;
                return -ENOMEM;
        }
        *ret_env = TAKE_PTR(env);
        return 0;
}

/* The output of a run for the log: stdout, then stderr (malloc'ed, or NULL). */
static char *run_output(const BackendRun *run)
{
        const char *out = run->out ? run->out : "", *err = run->err ? run->err : "";
        size_t lo = strlen(out);
        const char *sep = lo > 0 && out[lo - 1] != '\n' && *err ? "\n" : "";
        char *s = NULL;
        if (asprintf(&s, "%s%s%s", out, sep, err) < 0)
                return NULL;
        return s;
}

/* Lines that explain nothing in a sentence: code frames, hints, framing. */
static bool noise_line(const char *line)
{
        static const char *const prefixes[] = {"(use '--show-trace'", "For full logs, run",
                                               "warning:"};
        for (size_t i = 0; i < ELEMENTSOF(prefixes); i++)
                if (strncmp(line, prefixes[i], strlen(prefixes[i])) == 0)
                        return true;
        /* nix's code frame: "  1| text" and "   |   ^" */
        size_t d = strspn(line, "0123456789");
        return line[d] == '|';
}

/* The lines that say what went wrong, joined by blanks (malloc'ed, or NULL): from the first
 * line of the output starting "error:" (nix), else the end of it (a builder), at most
 * EXCERPT_LINES meaningful lines and EXCERPT_MAX bytes, keeping the last ones. */
static char *error_excerpt(const char *output)
{
        _cleanup_free_ char *buf = strdup(output ? output : "");
        if (!buf)
                return NULL;
        const char *lines[EXCERPT_LINES];
        size_t n = 0, start = 0;
        bool seen_error = false;
        char *save = NULL;
        for (char *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
                l += strspn(l, " \t");
                size_t len = strlen(l);
                while (len > 0 && strchr(" \t\r", l[len - 1]))
                        l[--len] = '\0';
                if (!*l || noise_line(l))
                        continue;
                /* a ring of the last EXCERPT_LINES lines since the first "error:" */
                if (strncmp(l, "error:", 6) == 0 && !seen_error) {
                        seen_error = true;
                        n = start = 0;
                }
                if (n < EXCERPT_LINES)
                        lines[n++] = l;
                else {
                        lines[start] = l;
                        start = (start + 1) % EXCERPT_LINES;
                }
        }
        char *s = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&s, &len);
        if (!f)
                return NULL;
        for (size_t i = 0; i < n; i++)
                fprintf(f, "%s%s", i ? " " : "", lines[(start + i) % EXCERPT_LINES]);
        if (fclose(f) != 0) {
                free(s);
                return NULL;
        }
        if (len > EXCERPT_MAX) {
                memmove(s + 3, s + len - (EXCERPT_MAX - 3), EXCERPT_MAX - 3 + 1);
                memcpy(s, "...", 3);
        }
        return s;
}

/* Runs argv in the meta dir with nix's environment and cfg->op_timeout.  *ret_log (when
 * non-NULL) gets the output whenever the program ran, also when it failed.  what names
 * the step in sentences ("nix build of a1").  -EIO when it exits non-zero (the sentence
 * quotes its last error lines), -ETIMEDOUT when it was killed at the deadline, -ENOENT/
 * -EACCES when it cannot be run. */
static int run_in_meta(const HiveConfig *cfg, char *const argv[], const char *what,
                       ProcLineFn on_line, void *userdata, char **ret_log, char **ret_error)
{
        _cleanup_free_ char *dir = meta_dir(cfg);
        _cleanup_free_ char *home = NULL;
        if (!dir || asprintf(&home, "%s/.cache/nix-home", cfg->state_dir) < 0)
                return hive_refuse(ret_error, -ENOMEM, "out of memory");
        int r = fsutil_mkdir_p(home, 0700);
        if (r < 0)
                return hive_refuse(ret_error, r, "cannot make %s: %s", home, strerror(-r));
        _cleanup_strv_free_ char **env = NULL;
        r = nix_env(home, &env);
        if (r < 0)
                return hive_refuse(ret_error, r, "out of memory");
        uint64_t timeout_ms = cfg->op_timeout > 0 ? (uint64_t)cfg->op_timeout * 1000u : 0;
        _cleanup_(run_cleanup) BackendRun run = {0};
        r = proc_run_lines(argv, env, dir, timeout_ms, on_line, userdata, &run);
        if (r == -ENOENT || r == -EACCES)
                return hive_refuse(ret_error, r, "cannot run %s for %s: %s", argv[0], what,
                                   r == -ENOENT ? "it is not installed (not found on PATH)"
                                                : strerror(-r));
        if (r < 0 && r != -ETIMEDOUT)
                return hive_refuse(ret_error, r, "cannot run %s for %s: %s", argv[0], what,
                                   strerror(-r));
        _cleanup_free_ char *output = run_output(&run);
        if (!output)
                return hive_refuse(ret_error, -ENOMEM, "out of memory");
        if (r == -ETIMEDOUT)
                r = hive_refuse(ret_error, -ETIMEDOUT, "%s took longer than %lld s and was stopped",
                                what, (long long)cfg->op_timeout);
        else if (run.status != 0) {
                _cleanup_free_ char *excerpt = error_excerpt(output);
                r = hive_refuse(ret_error, -EIO, "%s failed (exit status %d)%s%s", what, run.status,
                                excerpt && *excerpt ? ": " : "", excerpt ? excerpt : "");
        }
        if (ret_log)
                *ret_log = TAKE_PTR(output);
        return r;
}

/* Fails unless the meta repo's flake.nix is there (meta_init made it). */
static int check_initialised(const HiveConfig *cfg, char **ret_error)
{
        _cleanup_free_ char *path = meta_file(cfg, "flake.nix");
        if (!path)
                return hive_refuse(ret_error, -ENOMEM, "out of memory");
        if (access(path, F_OK) < 0)
                return hive_refuse(ret_error, -errno, "the meta flake %s is missing: %s", path,
                                   strerror(errno));
        return 0;
}

/* ---- git ---- */

/* Opens <state>/meta exactly (no search upwards). */
static int open_meta(const HiveConfig *cfg, git_repository **ret, char **ret_error)
{
        int r = repos_global_init();
        if (r < 0)
                return hive_refuse(ret_error, r, "cannot initialise libgit2");
        _cleanup_free_ char *dir = meta_dir(cfg);
        if (!dir)
                return hive_refuse(ret_error, -ENOMEM, "out of memory");
        int g = git_repository_open_ext(ret, dir, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL);
        if (g == GIT_ENOTFOUND)
                return hive_refuse(ret_error, -ENOENT, "there is no meta repo at %s", dir);
        if (g < 0)
                return gitutil_fail(ret_error, g, "cannot open the meta repo");
        return 0;
}

/* The commit main points at. */
static int main_commit(git_repository *repo, git_commit **ret, char **ret_error)
{
        git_oid oid;
        int g = git_reference_name_to_id(&oid, repo, MAIN_REF);
        if (g == GIT_ENOTFOUND)
                return hive_refuse(ret_error, -ENOENT, "the meta repo has no branch main");
        if (g < 0)
                return gitutil_fail(ret_error, g, "cannot read main of the meta repo");
        g = git_commit_lookup(ret, repo, &oid);
        if (g < 0)
                return gitutil_fail(ret_error, g, "cannot read main of the meta repo");
        return 0;
}

/* Stages flake.nix and flake.lock as the work tree has them (a missing one is removed from
 * the index) and writes the index; *ret_tree: the tree of the index. */
static int stage(git_repository *repo, git_oid *ret_tree, char **ret_error)
{
        _cleanup_(index_cleanup) git_index *index = NULL;
        int g = git_repository_index(&index, repo);
        if (g >= 0)
                g = git_index_read(index, true); /* nix may have written it meanwhile */
        if (g < 0)
                return gitutil_fail(ret_error, g, "cannot read the meta repo's index");
        const char *workdir = git_repository_workdir(repo);
        static const char *const files[] = {"flake.nix", "flake.lock"};
        for (size_t i = 0; i < ELEMENTSOF(files); i++) {
                _cleanup_free_ char *path = NULL;
                if (asprintf(&path, "%s%s", workdir, files[i]) < 0)
                        return hive_refuse(ret_error, -ENOMEM, "out of memory");
                if (access(path, F_OK) == 0)
                        g = git_index_add_bypath(index, files[i]);
                else {
                        g = git_index_remove_bypath(index, files[i]);
                        if (g == GIT_ENOTFOUND)
                                g = 0;
                }
                if (g < 0)
                        return gitutil_fail(ret_error, g, "cannot stage the meta flake");
        }
        g = git_index_write(index);
        if (g >= 0)
                g = git_index_write_tree(ret_tree, index);
        if (g < 0)
                return gitutil_fail(ret_error, g, "cannot write the meta repo's index");
        return 0;
}

/* Commits tree on main (parent: main's commit, if any). */
static int commit_tree(git_repository *repo, const git_oid *tree_id, git_commit *parent,
                       const char *message, char **ret_error)
{
        _cleanup_(tree_cleanup) git_tree *tree = NULL;
        _cleanup_(signature_cleanup) git_signature *sig = NULL;
        _cleanup_free_ char *msg = NULL;
        size_t len = strlen(message);
        if (asprintf(&msg, "%s%s", message, len && message[len - 1] == '\n' ? "" : "\n") < 0)
                return hive_refuse(ret_error, -ENOMEM, "out of memory");
        int g = git_tree_lookup(&tree, repo, tree_id);
        if (g >= 0)
                g = git_signature_now(&sig, SIG_NAME, SIG_EMAIL);
        git_oid oid;
        const git_commit *parents[1] = {parent};
        if (g >= 0)
                g = git_commit_create(&oid, repo, MAIN_REF, sig, sig, NULL, msg, tree,
                                      parent ? 1 : 0, parents);
        if (g < 0)
                return gitutil_fail(ret_error, g, "cannot commit to the meta repo");
        return 0;
}

/* ---- the API ---- */

int meta_init(const HiveConfig *cfg, char **ret_error)
{
        int r = check_state_dir(cfg, ret_error);
        if (r < 0)
                return r;
        r = repos_global_init();
        if (r < 0)
                return hive_refuse(ret_error, r, "cannot initialise libgit2");
        _cleanup_free_ char *dir = meta_dir(cfg);
        if (!dir)
                return hive_refuse(ret_error, -ENOMEM, "out of memory");
        r = fsutil_mkdir_p(dir, 0755);
        if (r < 0)
                return hive_refuse(ret_error, r, "cannot make %s: %s", dir, strerror(-r));
        for (size_t i = 0; i < ELEMENTSOF(stale_locks); i++) {
                _cleanup_free_ char *lock = NULL;
                if (asprintf(&lock, "%s/.git/%s", dir, stale_locks[i]) < 0)
                        return hive_refuse(ret_error, -ENOMEM, "out of memory");
                if (unlink(lock) < 0 && errno != ENOENT)
                        return hive_refuse(ret_error, -errno, "cannot remove the stale %s: %s",
                                           lock, strerror(errno));
        }

        _cleanup_(repository_cleanup) git_repository *repo = NULL;
        int g = git_repository_open_ext(&repo, dir, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL);
        if (g == GIT_ENOTFOUND) {
                git_repository_init_options opts = GIT_REPOSITORY_INIT_OPTIONS_INIT;
                opts.flags = GIT_REPOSITORY_INIT_MKPATH;
                opts.initial_head = "main";
                g = git_repository_init_ext(&repo, dir, &opts);
        }
        if (g < 0)
                return gitutil_fail(ret_error, g, "cannot open or create the meta repo");

        git_oid oid;
        g = git_reference_name_to_id(&oid, repo, MAIN_REF);
        if (g == GIT_ENOTFOUND) {
                /* A new repo (or one whose first commit never happened): an empty flake. */
                r = write_flake_at(cfg, NULL, 0, ret_error);
                if (r < 0)
                        return r;
                _cleanup_(index_cleanup) git_index *index = NULL;
                git_oid tree;
                g = git_repository_index(&index, repo);
                if (g >= 0)
                        g = git_index_clear(index);
                if (g >= 0)
                        g = git_index_add_bypath(index, "flake.nix");
                if (g >= 0)
                        g = git_index_write(index);
                if (g >= 0)
                        g = git_index_write_tree(&tree, index);
                if (g < 0)
                        return gitutil_fail(ret_error, g, "cannot stage the first meta flake");
                r = commit_tree(repo, &tree, NULL, "meta: an empty hive", ret_error);
                if (r < 0)
                        return r;
        } else if (g < 0)
                return gitutil_fail(ret_error, g, "cannot read main of the meta repo");

        /* HEAD stays on main, so nix and `git log` in the repo see what the daemon does. */
        _cleanup_(reference_cleanup) git_reference *head = NULL;
        g = git_reference_lookup(&head, repo, "HEAD");
        if (g < 0 || git_reference_type(head) != GIT_REFERENCE_SYMBOLIC ||
            strcmp(git_reference_symbolic_target(head), MAIN_REF) != 0) {
                g = git_repository_set_head(repo, MAIN_REF);
                if (g < 0)
                        return gitutil_fail(ret_error, g,
                                            "cannot point HEAD of the meta repo at main");
        }
        return meta_restore(cfg, ret_error);
}

int meta_write_flake(const HiveConfig *cfg, const MetaAgent *agents, size_t n, char **ret_error)
{
        int r = check_state_dir(cfg, ret_error);
        if (r < 0)
                return r;
        r = check_initialised(cfg, ret_error);
        if (r < 0)
                return r;
        return write_flake_at(cfg, agents, n, ret_error);
}

int meta_lock_agent(const HiveConfig *cfg, const char *name, const char *sha, char **ret_log,
                    char **ret_error)
{
        int r = check_name(name, ret_error);
        if (r >= 0)
                r = check_sha(sha, ret_error);
        if (r >= 0)
                r = check_state_dir(cfg, ret_error);
        if (r >= 0)
                r = check_initialised(cfg, ret_error);
        if (r < 0)
                return r;
        _cleanup_free_ char *input = NULL, *url = NULL, *what = NULL;
        if (asprintf(&input, "agent-%s", name) < 0 ||
            asprintf(&url, "git+file://%s/applied/%s?rev=%s", cfg->state_dir, name, sha) < 0 ||
            asprintf(&what, "nix flake lock of %s at %.12s", input, sha) < 0)
                return hive_refuse(ret_error, -ENOMEM, "out of memory");
        char *const argv[] = {NIX, "flake", "lock", "--override-input", input, url, NULL};
        r = run_in_meta(cfg, argv, what, NULL, NULL, ret_log, ret_error);
        if (r < 0)
                return r;
        /* nix only warns about an override of an input the flake does not have. */
        _cleanup_free_ char *rev = NULL;
        r = read_locked_rev(cfg, input, &rev, ret_error);
        if (r < 0)
                return r;
        if (!rev)
                return hive_refuse(
                        ret_error, -ENOENT,
                        "the meta flake has no input %s (agent \"%s\" is not in flake.nix)", input,
                        name);
        if (strcmp(rev, sha) != 0)
                return hive_refuse(ret_error, -EIO, "nix locked %s at %s instead of %s", input, rev,
                                   sha);
        return 0;
}

int meta_update_inputs(const HiveConfig *cfg, char *const *inputs, char **ret_log, char **ret_error)
{
        int r = check_state_dir(cfg, ret_error);
        if (r < 0)
                return r;
        size_t n = inputs ? strv_length(inputs) : ELEMENTSOF(fixed_inputs);
        for (size_t i = 0; inputs && i < n; i++) {
                bool known = false;
                for (size_t j = 0; j < ELEMENTSOF(fixed_inputs); j++)
                        known = known || strcmp(inputs[i], fixed_inputs[j]) == 0;
                if (known)
                        continue;
                if (strncmp(inputs[i], "agent-", 6) == 0)
                        return hive_refuse(ret_error, -EINVAL,
                                           "%.64s is an agent's input: it moves only with a deploy",
                                           inputs[i]);
                return hive_refuse(ret_error, -ENOENT, "the meta flake has no input \"%.64s\"",
                                   inputs[i]);
        }
        if (n == 0)
                return 0;
        r = check_initialised(cfg, ret_error);
        if (r < 0)
                return r;
        /* nix flake lock --update-input X --update-input Y ... */
        _cleanup_free_ char **argv = calloc(3 + 2 * n + 1, sizeof(char *));
        if (!argv)
                return hive_refuse(ret_error, -ENOMEM, "out of memory");
        size_t k = 0;
        argv[k++] = NIX;
        argv[k++] = "flake";
        argv[k++] = "lock";
        for (size_t i = 0; i < n; i++) {
                argv[k++] = "--update-input";
                argv[k++] = inputs ? inputs[i] : (char *)fixed_inputs[i];
        }
        return run_in_meta(cfg, argv, "nix flake lock --update-input", NULL, NULL, ret_log,
                           ret_error);
}

int meta_build(const HiveConfig *cfg, const char *name, char **ret_log, char **ret_error)
{
        return meta_build_lines(cfg, name, NULL, NULL, ret_log, ret_error);
}

int meta_build_lines(const HiveConfig *cfg, const char *name, ProcLineFn on_line, void *userdata,
                     char **ret_log, char **ret_error)
{
        int r = check_name(name, ret_error);
        if (r >= 0)
                r = check_state_dir(cfg, ret_error);
        if (r >= 0)
                r = check_initialised(cfg, ret_error);
        if (r < 0)
                return r;
        _cleanup_free_ char *attr = NULL, *what = NULL;
        if (asprintf(&attr, TOPLEVEL_FMT, name) < 0)
                return hive_refuse(ret_error, -ENOMEM, "out of memory");
        if (cfg->builder) {
                /* The operator's command: the attribute as $1, the agent's name as $2. */
                if (asprintf(&what, "the builder (%.200s) for %s", cfg->builder, name) < 0)
                        return hive_refuse(ret_error, -ENOMEM, "out of memory");
                char *const argv[] = {"/bin/sh", "-c",         cfg->builder, "sh",
                                      attr,      (char *)name, NULL};
                return run_in_meta(cfg, argv, what, on_line, userdata, ret_log, ret_error);
        }
        if (asprintf(&what, "nix build of %s", name) < 0)
                return hive_refuse(ret_error, -ENOMEM, "out of memory");
        char *const argv[] = {NIX, "build", "--no-link", "--json", attr, NULL};
        return run_in_meta(cfg, argv, what, on_line, userdata, ret_log, ret_error);
}

int meta_locked_rev(const HiveConfig *cfg, const char *name, char **ret_rev, char **ret_error)
{
        int r = check_name(name, ret_error);
        if (r < 0)
                return r;
        _cleanup_free_ char *input = NULL;
        if (asprintf(&input, "agent-%s", name) < 0)
                return hive_refuse(ret_error, -ENOMEM, "out of memory");
        return read_locked_rev(cfg, input, ret_rev, ret_error);
}

int meta_commit(const HiveConfig *cfg, const char *message, char **ret_error)
{
        if (!message || !*message)
                return hive_refuse(ret_error, -EINVAL, "a meta commit needs a message");
        _cleanup_(repository_cleanup) git_repository *repo = NULL;
        int r = open_meta(cfg, &repo, ret_error);
        if (r < 0)
                return r;
        _cleanup_(commit_cleanup) git_commit *parent = NULL;
        r = main_commit(repo, &parent, ret_error);
        if (r < 0)
                return r;
        git_oid tree;
        r = stage(repo, &tree, ret_error);
        if (r < 0)
                return r;
        if (git_oid_equal(&tree, git_commit_tree_id(parent)))
                return 0; /* nothing changed */
        return commit_tree(repo, &tree, parent, message, ret_error);
}

int meta_restore(const HiveConfig *cfg, char **ret_error)
{
        _cleanup_(repository_cleanup) git_repository *repo = NULL;
        int r = open_meta(cfg, &repo, ret_error);
        if (r < 0)
                return r;
        _cleanup_(commit_cleanup) git_commit *head = NULL;
        r = main_commit(repo, &head, ret_error);
        if (r < 0)
                return r;
        /* Index and work tree as main has them (nix's intent-to-add entries go too). */
        git_checkout_options co = GIT_CHECKOUT_OPTIONS_INIT;
        co.checkout_strategy = GIT_CHECKOUT_FORCE;
        int g = git_reset(repo, (const git_object *)head, GIT_RESET_HARD, &co);
        if (g < 0)
                return gitutil_fail(ret_error, g, "cannot reset the meta repo to main");
        _cleanup_(tree_cleanup) git_tree *tree = NULL;
        _cleanup_(tree_entry_cleanup) git_tree_entry *entry = NULL;
        g = git_commit_tree(&tree, head);
        if (g >= 0)
                g = git_tree_entry_bypath(&entry, tree, "flake.lock");
        if (g == GIT_ENOTFOUND) {
                _cleanup_free_ char *lock = meta_file(cfg, "flake.lock");
                if (!lock)
                        return hive_refuse(ret_error, -ENOMEM, "out of memory");
                if (unlink(lock) < 0 && errno != ENOENT)
                        return hive_refuse(ret_error, -errno, "cannot remove %s: %s", lock,
                                           strerror(errno));
        } else if (g < 0)
                return gitutil_fail(ret_error, g, "cannot read main of the meta repo");
        return 0;
}
