/* hive-c0re: the host daemon (`serve`) and its admin CLI (every other verb). */
#include "cli.h"

int main(int argc, char **argv)
{
        return cli_main(argc, argv);
}
