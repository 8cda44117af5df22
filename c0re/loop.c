/* epoll main loop.  Sources removed while a round is being dispatched are kept until the
 * round ends, so a handler never sees a freed source. */
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "cleanup.h"
#include "loop.h"

struct LoopSource {
        Loop *loop;
        int fd;
        LoopHandler handler;
        void *userdata;
        bool dead;
        LoopSource *next_dead;
        LoopSource *prev, *next; /* every live or dead source, for loop_free */
};

struct Loop {
        int epfd;
        bool quit;
        LoopSource *dead;
        LoopSource *sources;
};

int loop_new(Loop **ret)
{
        _cleanup_free_ Loop *l = calloc(1, sizeof(Loop));
        if (!l)
                return -ENOMEM;
        l->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (l->epfd < 0)
                return -errno;
        *ret = TAKE_PTR(l);
        return 0;
}

static void loop_reap(Loop *l)
{
        while (l->dead) {
                LoopSource *s = l->dead;
                l->dead = s->next_dead;
                if (s->prev)
                        s->prev->next = s->next;
                else
                        l->sources = s->next;
                if (s->next)
                        s->next->prev = s->prev;
                free(s);
        }
}

Loop *loop_free(Loop *l)
{
        if (!l)
                return NULL;
        loop_reap(l);
        while (l->sources) {
                LoopSource *s = l->sources;
                l->sources = s->next;
                free(s);
        }
        close(l->epfd);
        free(l);
        return NULL;
}

int loop_add(Loop *l, int fd, uint32_t events, LoopHandler h, void *userdata, LoopSource **ret)
{
        LoopSource *s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        *s = (LoopSource){.loop = l, .fd = fd, .handler = h, .userdata = userdata};
        struct epoll_event ev = {.events = events, .data.ptr = s};
        if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
                int r = -errno;
                free(s);
                return r;
        }
        s->next = l->sources;
        if (l->sources)
                l->sources->prev = s;
        l->sources = s;
        if (ret)
                *ret = s;
        return 0;
}

int loop_set_events(LoopSource *s, uint32_t events)
{
        struct epoll_event ev = {.events = events, .data.ptr = s};
        if (epoll_ctl(s->loop->epfd, EPOLL_CTL_MOD, s->fd, &ev) < 0)
                return -errno;
        return 0;
}

void loop_remove(LoopSource *s)
{
        if (!s || s->dead)
                return;
        (void)epoll_ctl(s->loop->epfd, EPOLL_CTL_DEL, s->fd, NULL);
        s->dead = true;
        s->next_dead = s->loop->dead;
        s->loop->dead = s;
}

int loop_run(Loop *l)
{
        struct epoll_event evs[64];
        l->quit = false;
        while (!l->quit) {
                int n = epoll_wait(l->epfd, evs, (int)ELEMENTSOF(evs), -1);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                for (int i = 0; i < n; i++) {
                        LoopSource *s = evs[i].data.ptr;
                        if (!s->dead)
                                s->handler(s, s->fd, evs[i].events, s->userdata);
                }
                loop_reap(l);
        }
        return 0;
}

void loop_quit(Loop *l)
{
        l->quit = true;
}
