/*
 * main.c: refundsync's entry point.  Everything else lives in the
 * internal library; see core/cli.c for the commands.
 */
#include "core/cli.h"

int
main(int argc, char *argv[])
{
	return cli_main(argc, argv);
}
