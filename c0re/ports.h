/* Sticky web ports: an agent's page listens on 8100 + fnv1a(name) % 900, probing forward
 * past ports other agents hold; the choice is written to <state>/agents/<name>/port and never
 * changes afterwards.  The manager's page is on 8000. */
#pragma once

#include <stdint.h>

#define PORTS_BASE    8100
#define PORTS_SPAN    900
#define PORTS_MANAGER 8000

/* 32-bit FNV-1a of s. */
uint32_t ports_fnv1a(const char *s);

/* The port of agent name under state_dir: the one in its port file if there is one,
 * otherwise a new one (hash, then the next free one, wrapping within the range), which is
 * written to the file.  Returns 0 and *ret, -EADDRNOTAVAIL when all 900 are taken, -EBADMSG
 * when an existing port file does not hold a port in the range, or another negative errno. */
int ports_assign(const char *state_dir, const char *name, uint16_t *ret);
