/* Reminders: a message an agent schedules for itself, delivered from "reminder" when due. */
#pragma once

#include <jansson.h>
#include <stdint.h>

#include "store.h"

#define REMINDERS_PENDING_MAX 50
#define REMINDERS_TEXT_MAX    (64 * 1024)
#define REMINDER_SENDER       "reminder"

/* Checks file_path (relative to the agent's /state, or absolute under /state) and returns
 * its normalised form "/state/…" (malloc'ed).  -EINVAL (with no ".." or empty components,
 * no NUL, under 1024 bytes) when it would leave the agent's state dir. */
int reminders_check_path(const char *file_path, char **ret);

/* Schedules a reminder for agent at due_ms.  -EUSERS when the agent already has
 * REMINDERS_PENDING_MAX pending.  Returns 0 and *ret_id. */
int reminders_add(Store *s, const char *agent, const char *message, const char *file_path,
                  int64_t due_ms, int64_t *ret_id);

/* Delivers every reminder due at now_ms as a message; a delivery that fails is retried
 * later with its error kept.  Appends the recipients to agents.  Returns the count. */
int reminders_fire_due(Store *s, int64_t now_ms, json_t *agents);

/* The earliest due time of a pending reminder, or 0. */
int reminders_next_due(Store *s, int64_t *ret_ms);

/* Pending reminders of agent (NULL: every agent). */
int reminders_count_pending(Store *s, const char *agent, int64_t *ret);
int reminders_list_pending(Store *s, const char *agent, json_t *arr);

/* The owner cancels a pending reminder: 0, -ENOENT, -EPERM (not the owner), -EALREADY. */
int reminders_cancel(Store *s, int64_t id, const char *agent);
