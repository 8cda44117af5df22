/* epoll main loop.  Sources removed while a round is being dispatched are kept until the
 * round ends, so a handler never sees a freed source. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
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

typedef struct Deferred {
        void (*fn)(void *userdata);
        void *userdata;
} Deferred;

struct Loop {
        int epfd;
        bool quit;
        Deferred *deferred;
        size_t n_deferred, cap_deferred;
        void (*post)(void *userdata);
        void *post_userdata;
        void (*idle)(void *userdata);
        void *idle_userdata;
        int idle_quiet_ms;
        bool want_idle;
        LoopSource *dead;
        LoopSource *sources;
        /* Callbacks posted by other threads (loop_post), run on the loop thread. */
        pthread_mutex_t post_lock;
        Deferred *posted;
        size_t n_posted, cap_posted;
        int post_fd; /* eventfd, readable while something is posted */
        LoopSource *post_src;
};

static void on_posted(LoopSource *s, int fd, uint32_t events, void *userdata)
{
        Loop *l = userdata;
        uint64_t v;
        (void)!read(fd, &v, sizeof(v));
        pthread_mutex_lock(&l->post_lock);
        Deferred *list = l->posted;
        size_t n = l->n_posted;
        l->posted = NULL;
        l->n_posted = l->cap_posted = 0;
        pthread_mutex_unlock(&l->post_lock);
        for (size_t i = 0; i < n; i++)
                list[i].fn(list[i].userdata);
        free(list);
}

int loop_new(Loop **ret)
{
        _cleanup_free_ Loop *l = calloc(1, sizeof(Loop));
        if (!l)
                return -ENOMEM;
        l->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (l->epfd < 0)
                return -errno;
        l->post_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (l->post_fd < 0) {
                int r = -errno;
                close(l->epfd);
                return r;
        }
        pthread_mutex_init(&l->post_lock, NULL);
        int r = loop_add(l, l->post_fd, EPOLLIN, on_posted, l, &l->post_src);
        if (r < 0) {
                close(l->post_fd);
                close(l->epfd);
                return r;
        }
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
        close(l->post_fd);
        free(l->deferred);
        free(l->posted); /* callbacks posted after the loop stopped are dropped */
        pthread_mutex_destroy(&l->post_lock);
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

int loop_defer(Loop *l, void (*fn)(void *userdata), void *userdata)
{
        if (l->n_deferred == l->cap_deferred) {
                size_t cap = l->cap_deferred ? l->cap_deferred * 2 : 16;
                Deferred *d = realloc(l->deferred, cap * sizeof(*d));
                if (!d)
                        return -ENOMEM;
                l->deferred = d;
                l->cap_deferred = cap;
        }
        l->deferred[l->n_deferred++] = (Deferred){fn, userdata};
        return 0;
}

int loop_post(Loop *l, void (*fn)(void *userdata), void *userdata)
{
        int r = 0;
        pthread_mutex_lock(&l->post_lock);
        if (l->n_posted == l->cap_posted) {
                size_t cap = l->cap_posted ? l->cap_posted * 2 : 16;
                Deferred *d = realloc(l->posted, cap * sizeof(*d));
                if (!d)
                        r = -ENOMEM;
                else {
                        l->posted = d;
                        l->cap_posted = cap;
                }
        }
        if (r == 0)
                l->posted[l->n_posted++] = (Deferred){fn, userdata};
        pthread_mutex_unlock(&l->post_lock);
        if (r == 0) {
                uint64_t one = 1;
                (void)!write(l->post_fd, &one, sizeof(one));
        }
        return r;
}

void loop_set_post(Loop *l, void (*fn)(void *userdata), void *userdata)
{
        l->post = fn;
        l->post_userdata = userdata;
}

void loop_set_idle(Loop *l, int quiet_ms, void (*fn)(void *userdata), void *userdata)
{
        l->idle_quiet_ms = quiet_ms;
        l->idle = fn;
        l->idle_userdata = userdata;
}

void loop_want_idle(Loop *l)
{
        l->want_idle = true;
}

/* Runs the callbacks deferred so far; ones they defer in turn wait for the next round. */
static void loop_run_deferred(Loop *l)
{
        size_t n = l->n_deferred;
        for (size_t i = 0; i < n; i++)
                l->deferred[i].fn(l->deferred[i].userdata);
        if (n == 0)
                return;
        memmove(l->deferred, l->deferred + n, (l->n_deferred - n) * sizeof(Deferred));
        l->n_deferred -= n;
}

int loop_run(Loop *l)
{
        struct epoll_event evs[64];
        l->quit = false;
        while (!l->quit) {
                bool idle_wanted = l->want_idle && l->idle && !l->n_deferred;
                int n = epoll_wait(l->epfd, evs, (int)ELEMENTSOF(evs),
                                   l->n_deferred ? 0
                                   : idle_wanted ? l->idle_quiet_ms
                                                 : -1);
                if (n == 0 && idle_wanted) {
                        l->want_idle = false;
                        l->idle(l->idle_userdata);
                        if (l->post)
                                l->post(l->post_userdata);
                        continue;
                }
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
                loop_run_deferred(l);
                if (l->post)
                        l->post(l->post_userdata);
                loop_reap(l);
        }
        return 0;
}

void loop_quit(Loop *l)
{
        l->quit = true;
}
