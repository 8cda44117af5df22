/* The hive-c0re command line: `serve` runs the daemon, every other verb is a client of
 * host.sock. */
#pragma once

enum {
        CLI_EXIT_OK = 0,
        CLI_EXIT_REFUSED = 1,     /* the daemon answered ok:false */
        CLI_EXIT_USAGE = 2,       /* bad command line */
        CLI_EXIT_UNREACHABLE = 3, /* no daemon at the socket */
        CLI_EXIT_DENIED = 4,      /* permission denied on the socket */
        CLI_EXIT_PROTOCOL = 5,    /* the answer was not what the protocol promises */
};

int cli_main(int argc, char **argv);
