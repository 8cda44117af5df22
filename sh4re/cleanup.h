/* Scope-bound cleanup helpers (after systemd's alloc-util.h / cleanup-fundamental.h).
 *
 * Every variable declared with one of these attributes must be initialised at its
 * declaration.  Build results under cleanup and publish with TAKE_PTR()/TAKE_FD(). */
#pragma once

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))

static inline void freep(void *p)
{
        free(*(void **)p);
}
#define _cleanup_free_ _cleanup_(freep)

static inline void closep(int *fd)
{
        if (*fd >= 0) {
                int saved = errno;
                close(*fd);
                errno = saved;
        }
}
#define _cleanup_close_ _cleanup_(closep)

/* Defines fooP(Foo **p) calling foo_free(*p) (which must accept NULL). */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)                                                    \
        static inline void func##p(type *p)                                                        \
        {                                                                                          \
                if (*p)                                                                            \
                        func(*p);                                                                  \
        }

#define TAKE_PTR(p)                                                                                \
        ({                                                                                         \
                __typeof__(p) _tp_ = (p);                                                          \
                (p) = NULL;                                                                        \
                _tp_;                                                                              \
        })

#define TAKE_FD(fd)                                                                                \
        ({                                                                                         \
                int _tf_ = (fd);                                                                   \
                (fd) = -1;                                                                         \
                _tf_;                                                                              \
        })

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

/* Free a NULL-terminated string vector; returns NULL. */
static inline char **strv_free(char **v)
{
        if (v) {
                for (char **i = v; *i; i++)
                        free(*i);
                free(v);
        }
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(char **, strv_free)
#define _cleanup_strv_free_ _cleanup_(strv_freep)

/* Entries of a NULL-terminated string vector (0 for NULL). */
static inline size_t strv_length(char *const *v)
{
        size_t n = 0;
        while (v && v[n])
                n++;
        return n;
}
