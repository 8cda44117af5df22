/* The table of errno values that may cross a socket as "error_code". */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cleanup.h"
#include "errors.h"

static const struct {
        int value;
        const char *name;
} errno_table[] = {
        {EPERM, "EPERM"},
        {ENOENT, "ENOENT"},
        {ESRCH, "ESRCH"},
        {EINTR, "EINTR"},
        {EIO, "EIO"},
        {E2BIG, "E2BIG"},
        {EBADF, "EBADF"},
        {EAGAIN, "EAGAIN"},
        {ENOMEM, "ENOMEM"},
        {EACCES, "EACCES"},
        {EBUSY, "EBUSY"},
        {EEXIST, "EEXIST"},
        {ENOTDIR, "ENOTDIR"},
        {EISDIR, "EISDIR"},
        {EINVAL, "EINVAL"},
        {EMFILE, "EMFILE"},
        {ENOSPC, "ENOSPC"},
        {EROFS, "EROFS"},
        {EPIPE, "EPIPE"},
        {ERANGE, "ERANGE"},
        {EDEADLK, "EDEADLK"},
        {ENAMETOOLONG, "ENAMETOOLONG"},
        {ENOSYS, "ENOSYS"},
        {ENOTEMPTY, "ENOTEMPTY"},
        {ENODATA, "ENODATA"},
        {ETIME, "ETIME"},
        {EPROTO, "EPROTO"},
        {EBADMSG, "EBADMSG"},
        {EOVERFLOW, "EOVERFLOW"},
        {EUSERS, "EUSERS"},
        {ENOEXEC, "ENOEXEC"},
        {ENODEV, "ENODEV"},
        {ESHUTDOWN, "ESHUTDOWN"},
        {EADDRNOTAVAIL, "EADDRNOTAVAIL"},
        {EXDEV, "EXDEV"},
        {EMSGSIZE, "EMSGSIZE"},
        {EPROTONOSUPPORT, "EPROTONOSUPPORT"},
        {EOPNOTSUPP, "EOPNOTSUPP"},
        {EADDRINUSE, "EADDRINUSE"},
        {ECONNRESET, "ECONNRESET"},
        {ENOTCONN, "ENOTCONN"},
        {ETIMEDOUT, "ETIMEDOUT"},
        {ECONNREFUSED, "ECONNREFUSED"},
        {EALREADY, "EALREADY"},
        {EINPROGRESS, "EINPROGRESS"},
        {EDQUOT, "EDQUOT"},
        {ECANCELED, "ECANCELED"},
        {ESTALE, "ESTALE"},
};

const char *hive_errno_name(int e)
{
        if (e < 0)
                e = -e;
        for (size_t i = 0; i < ELEMENTSOF(errno_table); i++)
                if (errno_table[i].value == e)
                        return errno_table[i].name;
        return "EIO";
}

int hive_errno_from_name(const char *name)
{
        if (!name)
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(errno_table); i++)
                if (strcmp(errno_table[i].name, name) == 0)
                        return errno_table[i].value;
        return -EINVAL;
}

int hive_refuse(char **ret_error, int r, const char *fmt, ...)
{
        if (!ret_error)
                return r;
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(ret_error, fmt, ap) < 0)
                *ret_error = NULL;
        va_end(ap);
        return r;
}
