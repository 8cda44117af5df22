/* The command line of hive-ag3nt and hive-m1nd: `mcp` runs the stdio MCP server, `send`,
 * `recv`, `wake` and `call` are clients of the agent socket. */
#pragma once

#include "settings.h"

enum {
        AG3NT_EXIT_OK = 0,
        AG3NT_EXIT_REFUSED = 1,     /* the daemon answered ok:false */
        AG3NT_EXIT_USAGE = 2,       /* bad command line or environment */
        AG3NT_EXIT_UNREACHABLE = 3, /* no daemon at the socket, or no answer in time */
        AG3NT_EXIT_DENIED = 4,      /* permission denied on the socket */
        AG3NT_EXIT_PROTOCOL = 5,    /* the answer was not what the protocol promises */
};

/* Runs the command line of the flavor's binary.  Returns the exit code. */
int ag3nt_cli_main(HarnessFlavor flavor, int argc, char **argv);
