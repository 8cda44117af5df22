/* What the operator sees of an agent: a registry row turned into an AgentStatusRow. */
#pragma once

#include "config.h"
#include "proto.h"
#include "store.h"

/* Builds the wire row for a (live) agent.  Returns 0 or -ENOMEM; free with
 * agent_status_row_done(). */
int container_view_row(const HiveConfig *cfg, const AgentRecord *a, AgentStatusRow *ret);
