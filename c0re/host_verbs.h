/* The host.sock verb table (hyperhive host protocol v1 plus ours). */
#pragma once

#include "dispatch.h"

extern const VerbTable host_verb_table;
