/* libgit2 error translation, shared by repos.c and meta.c. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "cleanup.h"
#include "errors.h"
#include "gitutil.h"

int gitutil_errno(int gerr)
{
        switch (gerr) {
        case GIT_ENOTFOUND:
                return -ENOENT;
        case GIT_EEXISTS:
                return -EEXIST;
        case GIT_EAMBIGUOUS:
        case GIT_EINVALIDSPEC:
                return -EINVAL;
        case GIT_ELOCKED:
                return -EBUSY;
        case GIT_EOWNER:
                return -EACCES;
        default:
                return -EIO;
        }
}

int gitutil_fail(char **ret_error, int gerr, const char *fmt, ...)
{
        int r = gitutil_errno(gerr);
        if (!ret_error)
                return r;
        const git_error *e = git_error_last();
        _cleanup_free_ char *what = NULL;
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(&what, fmt, ap) < 0)
                what = NULL;
        va_end(ap);
        if (!what) {
                *ret_error = NULL;
                return r;
        }
        return hive_refuse(ret_error, r, "%s: %s", what,
                           e && e->message ? e->message : "libgit2 error");
}
