/* The daemon's epoll main loop: fd sources with callbacks, and a periodic tick. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

typedef struct Loop Loop;
typedef struct LoopSource LoopSource;

/* Called with the epoll events of the source's fd.  The callback may remove any source,
 * including its own, with loop_remove(). */
typedef void (*LoopHandler)(LoopSource *s, int fd, uint32_t events, void *userdata);

int loop_new(Loop **ret);
/* Frees the loop and every remaining source (their fds are not closed).  Returns NULL. */
Loop *loop_free(Loop *l);

/* Watches fd for events.  Returns 0 and, if ret is non-NULL, the source. */
int loop_add(Loop *l, int fd, uint32_t events, LoopHandler h, void *userdata, LoopSource **ret);
int loop_set_events(LoopSource *s, uint32_t events);
/* Stops watching; the source is freed after the current dispatch round.  Accepts NULL. */
void loop_remove(LoopSource *s);

/* Runs fn(userdata) after the current dispatch round (or the next one), outside any
 * handler.  Returns 0 or -ENOMEM. */
int loop_defer(Loop *l, void (*fn)(void *userdata), void *userdata);
/* Thread-safe: runs fn(userdata) on the loop thread, during its next round.  The only loop
 * function other threads may call.  Returns 0 or -ENOMEM. */
int loop_post(Loop *l, void (*fn)(void *userdata), void *userdata);
/* Sets the hook run after every round, after the deferred callbacks (the daemon commits its
 * write batch there). */
void loop_set_post(Loop *l, void (*fn)(void *userdata), void *userdata);
/* Sets the hook for work that should wait for a quiet moment (the daemon's WAL checkpoint):
 * after loop_want_idle(), it runs once, as soon as nothing happened for quiet_ms. */
void loop_set_idle(Loop *l, int quiet_ms, void (*fn)(void *userdata), void *userdata);
void loop_want_idle(Loop *l);

/* Runs until loop_quit().  Returns 0, or a negative errno if epoll fails. */
int loop_run(Loop *l);
void loop_quit(Loop *l);
