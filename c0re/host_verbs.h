/* The host.sock verb table (hyperhive host protocol v1 plus ours). */
#pragma once

#include "dispatch.h"

extern const VerbTable host_verb_table;

/* Agent names: ^[a-z0-9]([a-z0-9-]{0,7}[a-z0-9])?$ (the container name h-<n> must fit in 11
 * characters). */
bool host_verbs_name_valid(const char *name);

/* Names that are identities of their own in the broker and can never name an agent:
 * manager, operator, hive, reminder, hm1nd, self. */
bool host_verbs_name_reserved(const char *name);
