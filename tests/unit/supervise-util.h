/* Helpers for the tests of supervised children (test-supervise, test-backend-*): an exit
 * callback that records what it saw, bounded polls, and a teardown that kills every child
 * still recorded in a pid dir so that no test leaves strays on the machine. */
#pragma once

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "timeutil.h"

typedef struct ExitLog {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        int count;
        char name[80];
        int status;
} ExitLog;

static inline void exit_log_init(ExitLog *l)
{
        pthread_mutex_init(&l->lock, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&l->cond, &ca);
        pthread_condattr_destroy(&ca);
        l->count = 0;
        l->status = -2;
        l->name[0] = '\0';
}

static inline void exit_log_done(ExitLog *l)
{
        pthread_cond_destroy(&l->cond);
        pthread_mutex_destroy(&l->lock);
}

static inline void exit_log_add(ExitLog *l, const char *name, int status)
{
        pthread_mutex_lock(&l->lock);
        l->count++;
        snprintf(l->name, sizeof(l->name), "%s", name);
        l->status = status;
        pthread_cond_broadcast(&l->cond);
        pthread_mutex_unlock(&l->lock);
}

static inline int64_t tu_now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until at least n exits were logged.  True when they were within timeout_ms. */
static inline bool exit_log_wait(ExitLog *l, int n, int timeout_ms)
{
        struct timespec deadline;
        timeutil_mono_deadline(timeout_ms, &deadline);
        pthread_mutex_lock(&l->lock);
        while (l->count < n)
                if (pthread_cond_timedwait(&l->cond, &l->lock, &deadline) == ETIMEDOUT)
                        break;
        bool ok = l->count >= n;
        pthread_mutex_unlock(&l->lock);
        return ok;
}

/* Polls (every 20 ms, up to timeout_ms) until path exists and contains needle (NULL: any
 * content).  True when it did. */
static inline bool tu_wait_file(const char *path, const char *needle, int timeout_ms)
{
        int64_t end = tu_now_ms() + timeout_ms;
        for (;;) {
                char *text = tu_read_file(path, NULL);
                bool ok = text && (!needle || strstr(text, needle));
                free(text);
                if (ok)
                        return true;
                if (tu_now_ms() > end)
                        return false;
                struct timespec ts = {0, 20 * 1000000L};
                nanosleep(&ts, NULL);
        }
}

/* Field 22 of /proc/PID/stat, or 0. */
static inline unsigned long long tu_starttime(pid_t pid)
{
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        char *text = tu_read_file(path, NULL);
        if (!text)
                return 0;
        unsigned long long v = 0;
        char *p = strrchr(text, ')');
        for (int field = 2; p && field < 22; field++)
                p = strchr(p + 1, ' ');
        if (p)
                v = strtoull(p + 1, NULL, 10);
        free(text);
        return v;
}

/* Kills pid (and its children: nspawn's payload has a session of its own), with SIGKILL to
 * its group as well, if it still is the process started at start. */
static inline void tu_kill_tree(pid_t pid, unsigned long long start)
{
        if (pid <= 1 || tu_starttime(pid) != start)
                return;
        char path[96];
        snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)pid, (int)pid);
        char *kids = tu_read_file(path, NULL);
        for (char *t = kids ? strtok(kids, " \n") : NULL; t; t = strtok(NULL, " \n"))
                (void)kill((pid_t)atoi(t), SIGKILL);
        free(kids);
        (void)kill(-pid, SIGKILL);
        (void)kill(pid, SIGKILL);
}

/* Kills every child recorded in pid_dir (NAME.pid files of c0re/supervise.c). */
static inline void tu_kill_recorded(const char *pid_dir)
{
        DIR *d = opendir(pid_dir);
        if (!d)
                return;
        struct dirent *e;
        while ((e = readdir(d))) {
                size_t n = strlen(e->d_name);
                if (n < 5 || strcmp(e->d_name + n - 4, ".pid") != 0)
                        continue;
                char path[4096];
                snprintf(path, sizeof(path), "%s/%s", pid_dir, e->d_name);
                char *text = tu_read_file(path, NULL);
                int pid = 0;
                unsigned long long start = 0;
                if (text && sscanf(text, "%d %llu", &pid, &start) == 2)
                        tu_kill_tree(pid, start);
                free(text);
        }
        closedir(d);
}
