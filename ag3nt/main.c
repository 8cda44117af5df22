/* hive-ag3nt and hive-m1nd: the same program, built twice; AG3NT_FLAVOR (set per binary by
 * meson) says whether it is a sub-agent's harness or the manager's. */
#include "ag3nt_cli.h"

#ifndef AG3NT_FLAVOR
#error "AG3NT_FLAVOR must be HARNESS_AGENT or HARNESS_MANAGER"
#endif

int main(int argc, char **argv)
{
        return ag3nt_cli_main(AG3NT_FLAVOR, argc, argv);
}
