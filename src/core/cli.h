/*
 * cli.h: the command line (SPEC §1): one table of commands, each with its
 * own options, dispatched from main().
 *
 * Exit statuses: 0 success; 1 a runtime failure (the message says what);
 * 2 a usage or config error; 3 reserved for `refund create`.
 */
#ifndef RS_CLI_H
#define RS_CLI_H

#define CLI_EXIT_OK		0
#define CLI_EXIT_FAILURE	1
#define CLI_EXIT_USAGE		2

/* Run the command line; returns the exit status. */
int	cli_main(int argc, char *argv[]);

#endif
