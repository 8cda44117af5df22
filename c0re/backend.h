/* Container backends: which exist on this machine and which one the daemon uses.  (The
 * backend operations themselves arrive with the containers work.) */
#pragma once

#include <stdbool.h>

/* Whether backend name can run here.  *ret_reason (static string) says why or why not. */
bool backend_available(const char *name, const char **ret_reason);

/* Resolves the --backend choice ("auto" or a name) for this machine.  Returns 0 and the
 * chosen name (static) with the reason for the choice, or -ENODEV when an explicitly named
 * backend cannot run here (with the reason). */
int backend_pick(const char *choice, bool dev, const char **ret_name, const char **ret_reason);

/* NULL-terminated list of every backend name, best first. */
extern const char *const backend_names[];
