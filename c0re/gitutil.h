/* What repos.c and meta.c share about libgit2: cleanup helpers for its objects and the one
 * translation of its error codes. */
#pragma once

#include <git2.h>

/* Cleanup helpers (libgit2's _free functions accept NULL): _cleanup_(repository_cleanup)…. */
#define GITUTIL_CLEANUP(type)                                                                      \
        static inline void type##_cleanup(git_##type **p)                                          \
        {                                                                                          \
                git_##type##_free(*p);                                                             \
        }
GITUTIL_CLEANUP(repository)
GITUTIL_CLEANUP(object)
GITUTIL_CLEANUP(commit)
GITUTIL_CLEANUP(tree)
GITUTIL_CLEANUP(tree_entry)
GITUTIL_CLEANUP(index)
GITUTIL_CLEANUP(remote)
GITUTIL_CLEANUP(reference)
GITUTIL_CLEANUP(signature)
GITUTIL_CLEANUP(diff)
GITUTIL_CLEANUP(config)

static inline void buf_cleanup(git_buf *b)
{
        git_buf_dispose(b);
}

/* The negative errno of libgit2 code gerr (< 0): GIT_ENOTFOUND → -ENOENT, GIT_EEXISTS →
 * -EEXIST, GIT_EAMBIGUOUS and GIT_EINVALIDSPEC → -EINVAL, GIT_ELOCKED → -EBUSY (another
 * writer), GIT_EOWNER → -EACCES (a repo owned by someone else), anything else -EIO. */
int gitutil_errno(int gerr);

/* Fails with the translation of gerr; *ret_error (when non-NULL) = "<what>: <libgit2's
 * message>", what formatted from fmt. */
int gitutil_fail(char **ret_error, int gerr, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
